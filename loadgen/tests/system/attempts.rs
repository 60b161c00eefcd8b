//! The wallet SIGKILLed again and again while mutating requests are in
//! flight: every operation the load generator logs as refused must be
//! absent from the ledger (a request that reached the service before a kill
//! may have committed, so it must not be logged as refused), and the run's
//! checker must pass. This is the false alarm of a gate that logged only an
//! operation's last attempt.

use std::{collections::HashSet, fmt::Write as _, path::Path, process::Command};

use run_log::{ChaosEvent, FaultKind, FaultPhase, OpRecord, Outcome};

/// Short kills of the wallet in one run; each one catches requests
/// mid-flight, and the wallet is back before their retries give up.
const SHORT_KILLS: u32 = 20;
/// Seconds between short kills: a killed wallet is back in about 2 s.
const KILL_EVERY_S: u32 = 3;
/// Kills that keep the wallet down (10 s) past the load generator's retry
/// window (about 9 s of retries): operations cut off by them end with a
/// refused connection, and only the fold over attempts keeps them open.
const LONG_KILLS_AT_S: [u32; 3] = [64, 77, 90];

fn scenario(path: &Path) {
    let mut text = String::from(
        r#"
name = "wallet-kills"
wallets = 24
users = 32
rate = 800
duration = "102s"
initial_balance_min = "5000.00"
initial_balance_max = "9000.00"
amount_max = "20.00"
[mix]
transfer = 70
fund = 30
get_wallet = 0
get_history = 0
[faults]
enabled = true
"#,
    );
    let short = (0..SHORT_KILLS).map(|kill| (4 + kill * KILL_EVERY_S, "300ms"));
    let long = LONG_KILLS_AT_S.iter().map(|&at| (at, "10s"));
    for (at, hold) in short.chain(long) {
        let _ = write!(
            text,
            "[[faults.schedule]]\nat = \"{at}s\"\nkind = \"wallet_kill\"\nhold = \"{hold}\"\n"
        );
    }
    std::fs::write(path, text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_logged_as_refused_are_never_in_the_ledger_across_wallet_kills() {
    let server = harness::test_server().await.expect("test PostgreSQL");
    let scratch = tempfile::tempdir().unwrap();
    let scenario_file = scratch.path().join("wallet-kills.toml");
    scenario(&scenario_file);
    let out_dir = scratch.path().join("runs");
    // The run's databases live on the test server, so they outlive the run
    // and the ledger can be read here, apart from the run's own checker.
    let status = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["run", "--seed", "8", "--scenario-file"])
        .arg(&scenario_file)
        .arg("--out-dir")
        .arg(&out_dir)
        .args(["--database-url", server.admin_url()])
        .status()
        .unwrap();
    let run = std::fs::read_dir(&out_dir)
        .unwrap()
        .next()
        .expect("a run directory")
        .unwrap()
        .path();
    let checker = std::fs::read_to_string(run.join("checker.json")).unwrap_or_default();
    assert_eq!(
        status.code(),
        Some(0),
        "the run's checker must pass; evidence in {}: {checker}",
        run.display()
    );

    let chaos: Vec<ChaosEvent> = run_log::read_jsonl(&run.join("chaos.jsonl")).unwrap();
    let kills = chaos
        .iter()
        .filter(|e| e.kind == FaultKind::WalletKill && e.phase == FaultPhase::Injected)
        .count();
    assert!(kills >= 23, "only {kills} wallet kills were injected");

    let ops: Vec<OpRecord> = run_log::read_jsonl(&run.join("ops.jsonl")).unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    let wallet_db = config["system"]["wallet_db"].as_str().unwrap();
    let mut db = <sqlx::PgConnection as sqlx::Connection>::connect(wallet_db)
        .await
        .unwrap();
    let in_ledger: HashSet<String> = sqlx::query_scalar::<_, String>(
        "SELECT DISTINCT request_key FROM ledger_entries WHERE request_key IS NOT NULL",
    )
    .fetch_all(&mut db)
    .await
    .unwrap()
    .into_iter()
    .collect();

    let refused_yet_applied: Vec<&OpRecord> = ops
        .iter()
        .filter(|op| op.outcome == Outcome::Failed)
        .filter(|op| {
            op.idempotency_key
                .as_ref()
                .is_some_and(|key| in_ledger.contains(key))
        })
        .collect();
    assert!(
        refused_yet_applied.is_empty(),
        "{} operations logged as refused are in the ledger, e.g. {:?}",
        refused_yet_applied.len(),
        refused_yet_applied.first()
    );

    // The kills did catch requests in flight; retries settled most, and
    // the long outages left some open.
    let cut_off = ops
        .iter()
        .filter(|op| {
            op.attempts
                .iter()
                .any(|a| a.outcome == Outcome::Indeterminate)
        })
        .count();
    let resolved = ops.iter().filter(|op| op.resolved_by_retry()).count();
    let failed = ops
        .iter()
        .filter(|op| op.outcome == Outcome::Failed)
        .count();
    let open = ops
        .iter()
        .filter(|op| op.outcome == Outcome::Indeterminate)
        .count();
    println!(
        "{} ops, {failed} refused, {cut_off} with a cut-off attempt, {resolved} resolved by a retry, \
         {open} left indeterminate, {} keys in the ledger",
        ops.len(),
        in_ledger.len()
    );
    assert!(cut_off > 0, "no kill caught a request in flight");
    assert!(resolved > 0, "no retry reached the restarted wallet");
    assert!(open > 0, "no operation outlasted its retries");
}
