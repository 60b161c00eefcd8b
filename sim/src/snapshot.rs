//! The checker's picture of the simulated databases: the same `Snapshot`
//! a live run's loader reads from PostgreSQL, in the same orders.

use consistency_checker::Snapshot;

use crate::cluster::Cluster;

/// Every table, as the checker wants it.
pub fn take(cluster: &Cluster) -> Snapshot {
    let state = cluster.pg.lock_state();
    let wallet = &state.wallet;
    let history = &state.history;
    let mut rows: Vec<_> = history.entries.values().cloned().collect();
    // Applied order: the commit that applied a row, then its seq.
    rows.sort_by_key(|(commit, row)| (*commit, row.wallet_id, row.seq));
    let mut parked: Vec<_> = history.parked.values().map(|p| p.view.clone()).collect();
    parked.sort_by_key(|p| (p.wallet_id, p.seq));
    let mut dead_letters: Vec<_> = history.dead_letters.values().cloned().collect();
    dead_letters.sort_by_key(|d| d.id);
    Snapshot {
        wallets: wallet.wallets.values().cloned().collect(),
        ledger: wallet.ledger.values().cloned().collect(),
        outbox: wallet.outbox.values().map(|r| r.view.clone()).collect(),
        history: rows.into_iter().map(|(_, row)| row).collect(),
        parked,
        dead_letters,
        ops: Vec::new(),
        faults: Vec::new(),
        convergence: None,
    }
}

/// The liveness condition: the outbox is drained, history holds an entry
/// for every ledger entry, nothing is parked.
pub fn converged(cluster: &Cluster) -> bool {
    let state = cluster.pg.lock_state();
    state.wallet.unpublished.is_empty()
        && state.history.parked.is_empty()
        && state.history.entries.len() >= state.wallet.ledger.len()
}
