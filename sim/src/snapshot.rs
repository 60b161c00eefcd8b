//! The checker's picture of the simulated databases: the same `Snapshot`
//! a live run's loader reads from PostgreSQL, in the same orders.

use consistency_checker::Snapshot;

use crate::cluster::Cluster;

/// Every table, as the checker wants it. The run is over: the rows move
/// out of the model rather than being copied, and the model is left empty.
pub fn take(cluster: &Cluster) -> Snapshot {
    let mut state = cluster.pg.lock_state();
    let wallet = std::mem::take(&mut state.wallet);
    let history = std::mem::take(&mut state.history);
    drop(state);
    let mut rows: Vec<_> = history.entries.into_values().collect();
    // Applied order: the commit that applied a row, then its seq.
    rows.sort_unstable_by_key(|(commit, row)| (*commit, row.wallet_id, row.seq));
    let mut parked: Vec<_> = history.parked.into_values().map(|p| p.view).collect();
    parked.sort_by_key(|p| (p.wallet_id, p.seq));
    let mut dead_letters: Vec<_> = history.dead_letters.into_values().collect();
    dead_letters.sort_by_key(|d| d.id);
    Snapshot {
        wallets: wallet.wallets.into_values().collect(),
        ledger: wallet.ledger.into_values().map(|row| *row).collect(),
        outbox: wallet.outbox.into_values().map(|r| r.view).collect(),
        history: rows.into_iter().map(|(_, row)| *row).collect(),
        parked,
        dead_letters,
        ops: Vec::new(),
        faults: Vec::new(),
        convergence: None,
        walk: None,
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
