//! Reading a [`Snapshot`]: the rows of both databases, the operation log
//! and the fault timeline.
//!
//! Each database is read in one `REPEATABLE READ, READ ONLY` transaction, so
//! every table of it comes from the same instant and the checker can never
//! write. The two databases are separate servers' worth of state, so no
//! transaction spans both; the checker runs after convergence, when neither
//! should be moving. Rows are streamed rather than collected first, since a
//! run can leave a few hundred thousand of them.

use std::{path::Path, time::Duration};

use anyhow::{Context, Result};
use futures::TryStreamExt;
use run_log::{ChaosEvent, FaultWindow, OpRecord};
use sqlx::{Connection, PgConnection, Postgres, Row, Transaction, postgres::PgRow};

use crate::snapshot::{
    DeadLetterRow, HistoryRow, LedgerRow, OutboxRow, ParkedRow, Snapshot, WalletRow,
};

/// How long to wait for a database connection before calling it
/// unreachable: long enough for a loaded server, short enough that a CI
/// gate with a wrong URL fails promptly.
const CONNECT_TIMEOUT_MS: u64 = 10_000;

/// Reads both databases into a snapshot; `ops`, `faults` and `convergence`
/// are left empty for the caller to attach.
pub async fn load(wallet_db_url: &str, history_db_url: &str) -> Result<Snapshot> {
    let (wallet, history) = tokio::try_join!(
        async {
            load_wallet_db(wallet_db_url)
                .await
                .context("reading the wallet database")
        },
        async {
            load_history_db(history_db_url)
                .await
                .context("reading the history database")
        },
    )?;
    Ok(Snapshot {
        wallets: wallet.wallets,
        ledger: wallet.ledger,
        outbox: wallet.outbox,
        history: history.history,
        parked: history.parked,
        dead_letters: history.dead_letters,
        ..Snapshot::default()
    })
}

/// Reads `ops.jsonl` into the snapshot.
pub fn attach_ops(snapshot: &mut Snapshot, path: &Path) -> Result<()> {
    snapshot.ops = read_ops(path)?;
    Ok(())
}

/// Reads `walk.json` into the snapshot.
pub fn attach_walk(snapshot: &mut Snapshot, path: &Path) -> Result<()> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let walk = serde_json::from_slice(&text)
        .with_context(|| format!("{} is not a history walk", path.display()))?;
    snapshot.walk = Some(walk);
    Ok(())
}

/// Reads `chaos.jsonl` and folds it into the snapshot's fault windows.
pub fn attach_chaos(snapshot: &mut Snapshot, path: &Path) -> Result<()> {
    snapshot.faults = read_fault_windows(path)?;
    Ok(())
}

/// The operation log at `path`.
pub fn read_ops(path: &Path) -> Result<Vec<OpRecord>> {
    run_log::read_jsonl(path).context("reading the operation log")
}

/// The fault windows of the chaos timeline at `path`.
pub fn read_fault_windows(path: &Path) -> Result<Vec<FaultWindow>> {
    let events: Vec<ChaosEvent> =
        run_log::read_jsonl(path).context("reading the chaos timeline")?;
    Ok(run_log::fault_windows(&events))
}

struct WalletDb {
    wallets: Vec<WalletRow>,
    ledger: Vec<LedgerRow>,
    outbox: Vec<OutboxRow>,
}

struct HistoryDb {
    history: Vec<HistoryRow>,
    parked: Vec<ParkedRow>,
    dead_letters: Vec<DeadLetterRow>,
}

async fn connect(url: &str) -> Result<PgConnection> {
    tokio::time::timeout(
        Duration::from_millis(CONNECT_TIMEOUT_MS),
        PgConnection::connect(url),
    )
    .await
    .map_err(|_| anyhow::anyhow!("no connection within {CONNECT_TIMEOUT_MS} ms"))?
    .context("connecting")
}

/// Starts the one consistent, read-only view of a database.
async fn begin_snapshot(conn: &mut PgConnection) -> Result<Transaction<'_, Postgres>> {
    let mut tx = conn.begin().await.context("beginning a transaction")?;
    // Must be the first statement of the transaction to take effect.
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await
        .context("making the transaction read-only and repeatable-read")?;
    Ok(tx)
}

async fn fetch<T>(
    tx: &mut Transaction<'_, Postgres>,
    table: &str,
    sql: &str,
    decode: fn(&PgRow) -> Result<T, sqlx::Error>,
) -> Result<Vec<T>> {
    let mut out = Vec::new();
    let mut rows = sqlx::query(sql).fetch(&mut **tx);
    while let Some(row) = rows
        .try_next()
        .await
        .with_context(|| format!("reading {table}"))?
    {
        out.push(decode(&row).with_context(|| format!("decoding a row of {table}"))?);
    }
    Ok(out)
}

async fn load_wallet_db(url: &str) -> Result<WalletDb> {
    let mut conn = connect(url).await?;
    let mut tx = begin_snapshot(&mut conn).await?;
    let wallets = fetch(
        &mut tx,
        "wallets",
        "SELECT id, user_id, balance, last_seq, created_at, updated_at FROM wallets ORDER BY id",
        wallet_row,
    )
    .await?;
    let ledger = fetch(
        &mut tx,
        "ledger_entries",
        "SELECT id, wallet_id, seq, kind, amount, balance_after, transfer_id,
                counterparty_wallet_id, created_at, request_key
         FROM ledger_entries ORDER BY wallet_id, seq, id",
        ledger_row,
    )
    .await?;
    let outbox = fetch(
        &mut tx,
        "outbox",
        "SELECT id, event_id, wallet_id, created_at, published_at FROM outbox ORDER BY id",
        outbox_row,
    )
    .await?;
    // Read-only: there is nothing to commit.
    tx.rollback().await.context("ending the transaction")?;
    let _ = conn.close().await;
    Ok(WalletDb {
        wallets,
        ledger,
        outbox,
    })
}

async fn load_history_db(url: &str) -> Result<HistoryDb> {
    let mut conn = connect(url).await?;
    let mut tx = begin_snapshot(&mut conn).await?;
    let history = fetch(
        &mut tx,
        "history_entries",
        // Applied order; seq and event_id only break ties so the order is
        // total and the report deterministic.
        "SELECT event_id, wallet_id, user_id, seq, kind, amount, balance_after, transfer_id,
                counterparty_wallet_id, committed_at, applied_at, source_partition, source_offset
         FROM history_entries ORDER BY applied_at, seq, event_id",
        history_row,
    )
    .await?;
    let parked = fetch(
        &mut tx,
        "parked_events",
        "SELECT event_id, wallet_id, seq, source_partition, source_offset, parked_at
         FROM parked_events ORDER BY wallet_id, seq, event_id",
        parked_row,
    )
    .await?;
    let dead_letters = fetch(
        &mut tx,
        "dead_letters",
        "SELECT id, topic, partition, \"offset\", error, received_at, payload FROM dead_letters ORDER BY id",
        dead_letter_row,
    )
    .await?;
    tx.rollback().await.context("ending the transaction")?;
    let _ = conn.close().await;
    Ok(HistoryDb {
        history,
        parked,
        dead_letters,
    })
}

fn wallet_row(row: &PgRow) -> Result<WalletRow, sqlx::Error> {
    Ok(WalletRow {
        id: row.try_get("id")?,
        user_id: row.try_get("user_id")?,
        balance: row.try_get("balance")?,
        last_seq: row.try_get("last_seq")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn ledger_row(row: &PgRow) -> Result<LedgerRow, sqlx::Error> {
    let kind: String = row.try_get("kind")?;
    Ok(LedgerRow {
        event_id: row.try_get("id")?,
        wallet_id: row.try_get("wallet_id")?,
        seq: row.try_get("seq")?,
        kind: kind.parse().map_err(|err| sqlx::Error::ColumnDecode {
            index: "kind".into(),
            source: Box::new(err),
        })?,
        amount: row.try_get("amount")?,
        balance_after: row.try_get("balance_after")?,
        transfer_id: row.try_get("transfer_id")?,
        counterparty_wallet_id: row.try_get("counterparty_wallet_id")?,
        created_at: row.try_get("created_at")?,
        request_key: row.try_get("request_key")?,
    })
}

fn outbox_row(row: &PgRow) -> Result<OutboxRow, sqlx::Error> {
    Ok(OutboxRow {
        id: row.try_get("id")?,
        event_id: row.try_get("event_id")?,
        wallet_id: row.try_get("wallet_id")?,
        created_at: row.try_get("created_at")?,
        published_at: row.try_get("published_at")?,
    })
}

fn history_row(row: &PgRow) -> Result<HistoryRow, sqlx::Error> {
    Ok(HistoryRow {
        event_id: row.try_get("event_id")?,
        wallet_id: row.try_get("wallet_id")?,
        user_id: row.try_get("user_id")?,
        seq: row.try_get("seq")?,
        kind: row.try_get("kind")?,
        amount: row.try_get("amount")?,
        balance_after: row.try_get("balance_after")?,
        transfer_id: row.try_get("transfer_id")?,
        counterparty_wallet_id: row.try_get("counterparty_wallet_id")?,
        committed_at: row.try_get("committed_at")?,
        applied_at: row.try_get("applied_at")?,
        source_partition: row.try_get("source_partition")?,
        source_offset: row.try_get("source_offset")?,
    })
}

fn parked_row(row: &PgRow) -> Result<ParkedRow, sqlx::Error> {
    Ok(ParkedRow {
        event_id: row.try_get("event_id")?,
        wallet_id: row.try_get("wallet_id")?,
        seq: row.try_get("seq")?,
        source_partition: row.try_get("source_partition")?,
        source_offset: row.try_get("source_offset")?,
        parked_at: row.try_get("parked_at")?,
    })
}

fn dead_letter_row(row: &PgRow) -> Result<DeadLetterRow, sqlx::Error> {
    Ok(DeadLetterRow {
        id: row.try_get("id")?,
        topic: row.try_get("topic")?,
        partition: row.try_get("partition")?,
        offset: row.try_get("offset")?,
        error: row.try_get("error")?,
        received_at: row.try_get("received_at")?,
        event_id: row
            .try_get::<Option<Vec<u8>>, _>("payload")?
            .and_then(|payload| wallet_events::WalletEvent::decode(&payload).ok())
            .map(|event| event.event_id),
    })
}
