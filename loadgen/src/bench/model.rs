//! The SQL-only model of a transfer: the database work one transfer does,
//! driven by `pgbench` with no service in between. Same schema (the wallet
//! service's own migrations), same server and durability, same number of
//! clients and wallets, the same uniform choice of two distinct wallets.
//!
//! One transaction per transfer, one statement per step the service takes
//! (8 round trips): BEGIN; claim the idempotency key; lock both wallets in
//! id order; update both balances and sequence numbers; insert both ledger
//! entries; insert both outbox rows (an event payload of a real event's
//! size); store the response under the key; COMMIT. The schema is the
//! service's own, migrations included, so the model pays for whatever the
//! service's tables carry (indexes, foreign keys, triggers).

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context, bail, ensure};
use chrono::Utc;
use rust_decimal::Decimal;
use uuid::Uuid;
use wallet_events::{EventKind, SCHEMA_VERSION, WalletEvent};

use run_log::bench::LoadFigures;

/// Fills a fresh database with the wallet schema and `wallets` wallets,
/// the n-th with id `00000000-0000-0000-0000-<n in hex>` so the script can
/// name it without a lookup. The bench's settle step vacuums and analyses
/// it before the first phase.
pub async fn prepare(database_url: &str, wallets: u32) -> anyhow::Result<()> {
    let pool = sqlx::PgPool::connect(database_url)
        .await
        .with_context(|| format!("connecting to {database_url}"))?;
    wallet::MIGRATOR
        .run(&pool)
        .await
        .context("applying the wallet migrations to the model's database")?;
    sqlx::query(
        "INSERT INTO wallets (id, user_id, balance, last_seq, created_at, updated_at)
         SELECT lpad(to_hex(n), 32, '0')::uuid, 'model-user-' || n, 1000000, 1, now(), now()
         FROM generate_series(1, $1) AS n",
    )
    .bind(i64::from(wallets))
    .execute(&pool)
    .await
    .context("creating the model's wallets")?;
    pool.close().await;
    Ok(())
}

/// Checks that the model did a transfer's work for each transaction it
/// counted: two ledger entries and two outbox rows per transfer so far,
/// and not a cent created or lost.
pub async fn verify(database_url: &str, wallets: u32, transfers: u64) -> anyhow::Result<()> {
    let pool = sqlx::PgPool::connect(database_url).await?;
    let (ledger, outbox, total): (i64, i64, Decimal) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM ledger_entries), (SELECT count(*) FROM outbox),
                (SELECT sum(balance) FROM wallets)",
    )
    .fetch_one(&pool)
    .await
    .context("reading the model's database")?;
    pool.close().await;
    let expected = i64::try_from(2 * transfers)?;
    ensure!(
        ledger == expected && outbox == expected,
        "the model's {transfers} transfers left {ledger} ledger entries and {outbox} outbox rows, not {expected} of each"
    );
    ensure!(
        total == Decimal::from(wallets) * Decimal::from(1_000_000),
        "the model's transfers changed the total balance to {total}"
    );
    Ok(())
}

/// The pgbench script of one transfer (see the module docs).
pub fn script() -> String {
    let (payload, response) = sample_texts();
    // Prepared statements bind variables untyped: each use says its type.
    let wallet = |var: &str| format!("lpad(to_hex(:{var}::bigint), 32, '0')::uuid");
    let (a, b) = (wallet("a"), wallet("b"));
    format!(
        r#"\set a random(1, :wallets)
\set b random(1, :wallets - 1)
\set b case when :b >= :a then :b + 1 else :b end
\set cents random(1, 5000)
\set key random(1, 9223372036854775806)
BEGIN;
INSERT INTO idempotency_keys (key, fingerprint) VALUES ('model-' || :key::bigint, 'transfer') ON CONFLICT (key) DO NOTHING RETURNING key;
SELECT id, user_id, balance, last_seq, created_at FROM wallets WHERE id IN ({a}, {b}) ORDER BY id FOR UPDATE;
UPDATE wallets SET balance = balance + CASE WHEN id = {a} THEN -:cents::numeric ELSE :cents::numeric END / 100, last_seq = last_seq + 1, updated_at = clock_timestamp() WHERE id IN ({a}, {b}) RETURNING updated_at;
INSERT INTO ledger_entries (id, wallet_id, seq, kind, amount, balance_after, transfer_id, counterparty_wallet_id, created_at, request_key) SELECT gen_random_uuid(), id, last_seq, CASE WHEN id = {a} THEN 'transfer_out' ELSE 'transfer_in' END, :cents::numeric / 100, balance, md5('model-' || :key::bigint)::uuid, CASE WHEN id = {a} THEN {b} ELSE {a} END, updated_at, 'model-' || :key::bigint FROM wallets WHERE id IN ({a}, {b});
INSERT INTO outbox (event_id, wallet_id, payload) SELECT id, wallet_id, '{payload}' FROM ledger_entries WHERE request_key = 'model-' || :key::bigint;
UPDATE idempotency_keys SET response = '{response}'::jsonb WHERE key = 'model-' || :key::bigint;
COMMIT;
"#
    )
}

/// A real transfer leg's event payload and a transfer response of the
/// service's shape, as SQL string literals' contents.
fn sample_texts() -> (String, String) {
    let leg = |kind| WalletEvent {
        schema_version: SCHEMA_VERSION,
        event_id: Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0001),
        wallet_id: Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0002),
        user_id: "user-0042".into(),
        seq: 1234,
        kind,
        amount: Decimal::new(123_456, 4),
        balance_after: Decimal::new(987_654_321, 4),
        transfer_id: Some(Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0003)),
        counterparty_wallet_id: Some(Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0004)),
        committed_at: Utc::now(),
    };
    let (debit, credit) = (leg(EventKind::TransferOut), leg(EventKind::TransferIn));
    let response = serde_json::json!({
        "transfer_id": debit.transfer_id,
        "debit": debit,
        "credit": credit,
    });
    let quote = |text: String| text.replace('\'', "''");
    (quote(debit.to_json_text()), quote(response.to_string()))
}

/// One pgbench run: `clients` connections for `duration`, as fast as they
/// go or at `rate` transactions/s (Poisson arrivals, latency from each
/// one's scheduled start). Per-transaction logs go under `dir`.
pub async fn run(
    database_url: &str,
    dir: &Path,
    clients: u32,
    wallets: u32,
    duration: Duration,
    rate: Option<u32>,
) -> anyhow::Result<LoadFigures> {
    let url = url::Url::parse(database_url).context("the model's database URL")?;
    let script_path = dir.join("model-transfer.sql");
    std::fs::write(&script_path, script())
        .with_context(|| format!("writing {}", script_path.display()))?;
    let label = rate.map_or("full".to_owned(), |r| format!("rate{r}"));
    let prefix = dir.join(format!("pgbench-{label}-log"));
    let mut command = tokio::process::Command::new(pgbench()?);
    command
        .args(["-n", "-M", "prepared", "--no-vacuum"])
        .arg(format!("--client={clients}"))
        .arg(format!("--jobs={}", clients.clamp(1, 2)))
        .arg(format!("--time={}", duration.as_secs().max(1)))
        .arg(format!("--define=wallets={wallets}"))
        .arg(format!("--file={}", script_path.display()))
        .arg("--log")
        .arg(format!("--log-prefix={}", prefix.display()))
        .arg(format!("--host={}", url.host_str().unwrap_or("127.0.0.1")))
        .arg(format!("--port={}", url.port().unwrap_or(5432)))
        .arg(format!("--username={}", url.username()))
        .arg(url.path().trim_start_matches('/'))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(rate) = rate {
        command.arg(format!("--rate={rate}"));
    }
    let output = command.output().await.context("running pgbench")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    std::fs::write(dir.join(format!("pgbench-{label}.txt")), stdout.as_bytes())?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(12).collect();
        bail!(
            "pgbench failed ({}); the last lines it wrote:\n{}",
            output.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    let failed = stdout
        .lines()
        .find_map(|l| l.strip_prefix("number of failed transactions: "))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0);
    if failed > 0 {
        bail!("pgbench: {failed} model transactions failed:\n{stdout}");
    }
    let latencies = read_logs(dir, &format!("pgbench-{label}-log"))?;
    Ok(LoadFigures::from_latencies_us(
        latencies,
        duration.as_secs_f64(),
        rate.unwrap_or(0),
    ))
}

/// Each transaction's latency in microseconds from pgbench's
/// per-transaction logs (`client_id transaction_no time ...`; with a rate,
/// `time` already counts from the scheduled start).
fn read_logs(dir: &Path, prefix: &str) -> anyhow::Result<Vec<u64>> {
    let mut latencies = Vec::new();
    let logs: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{prefix}.")))
        })
        .collect();
    if logs.is_empty() {
        bail!(
            "pgbench wrote no transaction log {prefix}.* in {}",
            dir.display()
        );
    }
    for log in logs {
        let text = std::fs::read_to_string(&log)?;
        for line in text.lines() {
            let latency = line
                .split_whitespace()
                .nth(2)
                .and_then(|t| t.parse::<u64>().ok())
                .with_context(|| format!("a line of {}: {line:?}", log.display()))?;
            latencies.push(latency);
        }
    }
    Ok(latencies)
}

/// pgbench from the same PostgreSQL installation as the server.
fn pgbench() -> anyhow::Result<PathBuf> {
    let bin = harness::postgres::server_bindir()?.join("pgbench");
    if bin.exists() {
        Ok(bin)
    } else {
        bail!(
            "{} not found: pgbench comes with the PostgreSQL server packages \
             (scripts/prerequisites installs them)",
            bin.display()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_quotes_its_literals_and_names_every_step() {
        let script = script();
        for step in [
            "INSERT INTO idempotency_keys",
            "FOR UPDATE",
            "UPDATE wallets",
            "INSERT INTO ledger_entries",
            "INSERT INTO outbox",
            "UPDATE idempotency_keys",
            "COMMIT;",
        ] {
            assert!(script.contains(step), "{step} missing");
        }
        let (payload, response) = sample_texts();
        assert!(WalletEvent::decode(payload.replace("''", "'").as_bytes()).is_ok());
        assert!(serde_json::from_str::<serde_json::Value>(&response).is_ok());
        // Eight statements: the service's round trips.
        let statements = script.lines().filter(|l| !l.starts_with('\\')).count();
        assert_eq!(statements, 8, "{script}");
    }
}
