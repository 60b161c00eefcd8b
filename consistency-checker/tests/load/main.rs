//! The checker against real PostgreSQL: fresh wallet and history databases
//! migrated by the services' own migrations, a small consistent dataset
//! written with plain SQL, then one defect. Covers `load` + `check` in
//! process and the binary's exit codes.

use std::path::Path;
use std::process::{Command, Output};

use chrono::{DateTime, Utc};
use consistency_checker::{Args, Invariant, Report, Snapshot, Status, check, load};
use run_log::{ChaosEvent, FaultKind, FaultPhase, OpKind, OpRecord, Outcome};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use sqlx::PgPool;
use uuid::Uuid;
use wallet_events::{EventKind, SCHEMA_VERSION, WalletEvent};

const ALICE: Uuid = Uuid::from_u128(0xA1);
const BOB: Uuid = Uuid::from_u128(0xB0);
const CAROL: Uuid = Uuid::from_u128(0xCA);
const TRANSFER: Uuid = Uuid::from_u128(0x7001);
/// Carol's credit from alice: the row the defect deletes from history.
const CAROL_CREDIT: Uuid = Uuid::from_u128(0xE7);

/// Two fresh, migrated databases.
struct Databases {
    wallet_url: String,
    history_url: String,
    wallet: PgPool,
    history: PgPool,
}

async fn databases() -> Databases {
    let wallet_url = harness::postgres::fresh_database("checker")
        .await
        .expect("wallet database");
    let history_url = harness::postgres::fresh_database("checker")
        .await
        .expect("history database");
    let wallet = PgPool::connect(&wallet_url)
        .await
        .expect("connect to the wallet database");
    let history = PgPool::connect(&history_url)
        .await
        .expect("connect to the history database");
    wallet::MIGRATOR
        .run(&wallet)
        .await
        .expect("migrate the wallet database");
    history::MIGRATOR
        .run(&history)
        .await
        .expect("migrate the history database");
    Databases {
        wallet_url,
        history_url,
        wallet,
        history,
    }
}

fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000 + seconds, 0).expect("in range")
}

/// One ledger entry and everything that derives from it.
struct Entry {
    event_id: Uuid,
    wallet_id: Uuid,
    seq: i64,
    kind: EventKind,
    amount: Decimal,
    balance_after: Decimal,
    transfer_id: Option<Uuid>,
    counterparty: Option<Uuid>,
    key: Option<&'static str>,
    at: DateTime<Utc>,
}

fn entry(
    event: u128,
    wallet_id: Uuid,
    seq: i64,
    kind: EventKind,
    amount: Decimal,
    balance_after: Decimal,
) -> Entry {
    Entry {
        event_id: Uuid::from_u128(event),
        wallet_id,
        seq,
        kind,
        amount,
        balance_after,
        transfer_id: None,
        counterparty: None,
        key: None,
        at: at(0),
    }
}

impl Entry {
    fn key(self, key: &'static str) -> Self {
        Self {
            key: Some(key),
            ..self
        }
    }

    fn at(self, seconds: i64) -> Self {
        Self {
            at: at(seconds),
            ..self
        }
    }

    fn leg(self, counterparty: Uuid) -> Self {
        Self {
            transfer_id: Some(TRANSFER),
            counterparty: Some(counterparty),
            ..self
        }
    }
}

/// A wallet row: id, user, balance, last seq.
type WalletSeed = (Uuid, &'static str, Decimal, i64);

/// Alice and bob are funded (100, 50), alice sends carol 30 (key k-3); a
/// refused transfer (k-4) and an indeterminate one that never applied
/// (k-5) are in the log only.
fn dataset() -> (Vec<WalletSeed>, Vec<Entry>, Vec<OpRecord>) {
    let wallets = vec![
        (ALICE, "alice", dec!(70), 3),
        (BOB, "bob", dec!(50), 2),
        (CAROL, "carol", dec!(30), 2),
    ];
    let entries = vec![
        entry(0xE1, ALICE, 1, EventKind::Created, dec!(0), dec!(0)).at(1),
        entry(0xE2, BOB, 1, EventKind::Created, dec!(0), dec!(0)).at(2),
        entry(0xE3, CAROL, 1, EventKind::Created, dec!(0), dec!(0)).at(3),
        entry(0xE4, ALICE, 2, EventKind::Funded, dec!(100), dec!(100))
            .key("k-1")
            .at(4),
        entry(0xE5, BOB, 2, EventKind::Funded, dec!(50), dec!(50))
            .key("k-2")
            .at(5),
        entry(0xE6, ALICE, 3, EventKind::TransferOut, dec!(30), dec!(70))
            .key("k-3")
            .at(6)
            .leg(CAROL),
        entry(0xE7, CAROL, 2, EventKind::TransferIn, dec!(30), dec!(30))
            .key("k-3")
            .at(6)
            .leg(ALICE),
    ];
    let op = |op_id: u64, kind, from, to, amount, outcome, seconds| OpRecord {
        op_id,
        kind,
        wallet_index: None,
        to_wallet_index: None,
        wallet_id: Some(from),
        to_wallet_id: to,
        amount,
        idempotency_key: Some(format!("k-{op_id}")),
        outcome,
        status: None,
        error_code: None,
        intended_at: at(seconds),
        latency_us: 500,
        attempts: Vec::new(),
    };
    let ops = vec![
        OpRecord {
            idempotency_key: None,
            ..op(10, OpKind::CreateWallet, ALICE, None, None, Outcome::Ok, 1)
        },
        OpRecord {
            idempotency_key: None,
            ..op(11, OpKind::CreateWallet, BOB, None, None, Outcome::Ok, 2)
        },
        OpRecord {
            idempotency_key: None,
            ..op(12, OpKind::CreateWallet, CAROL, None, None, Outcome::Ok, 3)
        },
        op(
            1,
            OpKind::Fund,
            ALICE,
            None,
            Some(dec!(100)),
            Outcome::Ok,
            4,
        ),
        op(2, OpKind::Fund, BOB, None, Some(dec!(50)), Outcome::Ok, 5),
        op(
            3,
            OpKind::Transfer,
            ALICE,
            Some(CAROL),
            Some(dec!(30)),
            Outcome::Ok,
            6,
        ),
        op(
            4,
            OpKind::Transfer,
            BOB,
            Some(CAROL),
            Some(dec!(500)),
            Outcome::Failed,
            7,
        ),
        op(
            5,
            OpKind::Transfer,
            CAROL,
            Some(BOB),
            Some(dec!(1)),
            Outcome::Indeterminate,
            8,
        ),
    ];
    (wallets, entries, ops)
}

/// Writes the dataset as the wallet and a healthy consumer would have.
async fn seed(dbs: &Databases) -> Vec<OpRecord> {
    let (wallets, entries, ops) = dataset();
    for (id, user, balance, last_seq) in &wallets {
        sqlx::query(
            "INSERT INTO wallets (id, user_id, balance, last_seq, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $5)",
        )
        .bind(id)
        .bind(user)
        .bind(balance)
        .bind(last_seq)
        .bind(at(0))
        .execute(&dbs.wallet)
        .await
        .expect("insert wallet");
    }
    for (offset, e) in entries.iter().enumerate() {
        let user = wallets
            .iter()
            .find(|w| w.0 == e.wallet_id)
            .expect("wallet")
            .1;
        sqlx::query(
            "INSERT INTO ledger_entries (id, wallet_id, seq, kind, amount, balance_after,
                                         transfer_id, counterparty_wallet_id, created_at, request_key)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(e.event_id)
        .bind(e.wallet_id)
        .bind(e.seq)
        .bind(e.kind.as_str())
        .bind(e.amount)
        .bind(e.balance_after)
        .bind(e.transfer_id)
        .bind(e.counterparty)
        .bind(e.at)
        .bind(e.key)
        .execute(&dbs.wallet)
        .await
        .expect("insert ledger entry");
        let event = WalletEvent {
            schema_version: SCHEMA_VERSION,
            event_id: e.event_id,
            wallet_id: e.wallet_id,
            user_id: user.to_owned(),
            seq: e.seq,
            kind: e.kind,
            amount: e.amount,
            balance_after: e.balance_after,
            transfer_id: e.transfer_id,
            counterparty_wallet_id: e.counterparty,
            committed_at: e.at,
        };
        sqlx::query(
            "INSERT INTO outbox (event_id, wallet_id, payload, created_at, published_at)
             VALUES ($1, $2, $3, $4, $4 + interval '10 milliseconds')",
        )
        .bind(e.event_id)
        .bind(e.wallet_id)
        .bind(String::from_utf8(event.to_json()).expect("utf-8"))
        .bind(e.at)
        .execute(&dbs.wallet)
        .await
        .expect("insert outbox row");
        // applied_at defaults to clock_timestamp(): insertion order is the
        // applied order, per wallet in seq order as the consumer applies.
        sqlx::query(
            "INSERT INTO history_entries (event_id, wallet_id, user_id, seq, kind, amount, balance_after,
                                          transfer_id, counterparty_wallet_id, committed_at,
                                          source_partition, source_offset)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 0, $11)",
        )
        .bind(e.event_id)
        .bind(e.wallet_id)
        .bind(user)
        .bind(e.seq)
        .bind(e.kind.as_str())
        .bind(e.amount)
        .bind(e.balance_after)
        .bind(e.transfer_id)
        .bind(e.counterparty)
        .bind(e.at)
        .bind(offset as i64)
        .execute(&dbs.history)
        .await
        .expect("insert history entry");
    }
    for (id, _, balance, last_seq) in &wallets {
        sqlx::query("INSERT INTO wallet_heads (wallet_id, last_seq, balance) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(last_seq)
            .bind(balance)
            .execute(&dbs.history)
            .await
            .expect("insert wallet head");
    }
    ops
}

/// The defect: the consumer lost carol's credit.
async fn delete_carol_credit(dbs: &Databases) {
    let deleted = sqlx::query("DELETE FROM history_entries WHERE event_id = $1")
        .bind(CAROL_CREDIT)
        .execute(&dbs.history)
        .await
        .expect("delete history row");
    assert_eq!(deleted.rows_affected(), 1);
}

/// A broker kill from second 5 to 7 of the dataset's clock.
fn chaos() -> Vec<ChaosEvent> {
    let event = |phase, seconds| ChaosEvent {
        fault_id: 1,
        kind: FaultKind::BrokerKill,
        phase,
        at: at(seconds),
        offset_ms: 0,
        target: "broker".into(),
        pid: Some(4242),
        detail: String::new(),
    };
    vec![event(FaultPhase::Injected, 5), event(FaultPhase::Healed, 7)]
}

fn write_jsonl<T: serde::Serialize>(path: &Path, records: &[T]) {
    let mut file = std::fs::File::create(path).expect("create jsonl");
    run_log::write_jsonl(&mut file, records).expect("write jsonl");
}

fn status(report: &Report, invariant: Invariant) -> Status {
    report.check(invariant).expect("checked").status
}

#[tokio::test]
async fn loads_a_consistent_pair_and_names_a_deleted_history_row() {
    let dbs = databases().await;
    let ops = seed(&dbs).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let (ops_path, chaos_path) = (dir.path().join("ops.jsonl"), dir.path().join("chaos.jsonl"));
    write_jsonl(&ops_path, &ops);
    write_jsonl(&chaos_path, &chaos());

    let mut snapshot: Snapshot = load(&dbs.wallet_url, &dbs.history_url).await.expect("load");
    assert_eq!(
        (
            snapshot.wallets.len(),
            snapshot.ledger.len(),
            snapshot.outbox.len(),
            snapshot.history.len()
        ),
        (3, 7, 7, 7)
    );
    assert!(snapshot.ops.is_empty() && snapshot.faults.is_empty());
    let transfer_out = snapshot
        .ledger
        .iter()
        .find(|e| e.event_id == Uuid::from_u128(0xE6))
        .unwrap();
    assert_eq!(transfer_out.kind, EventKind::TransferOut);
    assert_eq!(transfer_out.amount, dec!(30));
    assert_eq!(transfer_out.request_key.as_deref(), Some("k-3"));
    assert_eq!(transfer_out.transfer_id, Some(TRANSFER));
    // History comes in applied order.
    assert!(
        snapshot
            .history
            .windows(2)
            .all(|w| w[0].applied_at <= w[1].applied_at)
    );
    consistency_checker::attach_ops(&mut snapshot, &ops_path).expect("attach ops");
    consistency_checker::attach_chaos(&mut snapshot, &chaos_path).expect("attach chaos");
    assert_eq!(snapshot.ops.len(), 8);
    assert_eq!(snapshot.faults.len(), 1);

    let report = check(&snapshot);
    assert!(
        report.passed,
        "{}",
        consistency_checker::render_text(&report)
    );
    assert_eq!(
        status(&report, Invariant::AckedWriteDurable),
        Status::Passed
    );
    assert_eq!(report.facts.total_balance, dec!(150));
    assert_eq!(report.facts.total_funded, dec!(150));

    delete_carol_credit(&dbs).await;
    let mut snapshot = load(&dbs.wallet_url, &dbs.history_url)
        .await
        .expect("load again");
    consistency_checker::attach_chaos(&mut snapshot, &chaos_path).expect("attach chaos");
    let report = check(&snapshot);
    assert!(!report.passed);
    let missing = report.check(Invariant::HistoryNoMissing).unwrap();
    assert_eq!(missing.status, Status::Violated);
    assert_eq!(missing.violations_total, 1);
    let v = &missing.violations[0];
    assert_eq!(v.event_id, Some(CAROL_CREDIT));
    assert_eq!(v.wallet_id, Some(CAROL));
    assert_eq!(v.transfer_id, Some(TRANSFER));
    assert_eq!(v.expected, Some(dec!(30)));
    assert_eq!(v.at, Some(at(6)));
    assert_eq!(v.fault_windows, ["fault #1 broker_kill (broker)"]);
    assert!(
        v.message.contains(&CAROL_CREDIT.to_string()),
        "{}",
        v.message
    );
    assert!(v.message.contains("transfer_in 30.0000"), "{}", v.message);
    assert!(
        v.message
            .ends_with("[during fault #1 broker_kill (broker)]"),
        "{}",
        v.message
    );
    // Carol's history now sums to nothing; the ledger side still holds.
    assert_eq!(
        status(&report, Invariant::HistoryBalanceMatches),
        Status::Violated
    );
    assert_eq!(
        status(&report, Invariant::BalanceMatchesLedger),
        Status::Passed
    );
    assert_eq!(status(&report, Invariant::MoneyConserved), Status::Passed);
}

#[tokio::test]
async fn run_writes_the_report_it_returns() {
    let dbs = databases().await;
    seed(&dbs).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("checker.json");
    let args = Args {
        wallet_db: dbs.wallet_url.clone(),
        history_db: dbs.history_url.clone(),
        ops: None,
        chaos: None,
        walk: None,
        json: false,
        out: Some(out.clone()),
        convergence: Some(consistency_checker::Convergence {
            converged: true,
            took_ms: 40,
            bound_ms: 30_000,
            started_offset_ms: None,
        }),
    };
    let report = consistency_checker::run(&args).await.expect("run");
    assert!(report.passed);
    assert_eq!(status(&report, Invariant::ConvergedInTime), Status::Passed);
    // No log given: durability cannot be judged, which is not a failure.
    assert_eq!(
        status(&report, Invariant::AckedWriteDurable),
        Status::NotEvaluated
    );
    let written: Report = serde_json::from_slice(&std::fs::read(&out).expect("checker.json"))
        .expect("parse checker.json");
    assert_eq!(written, report);
}

/// A database that is not what the checker expects is an error that says
/// which database and which table, not a panic or an empty snapshot.
#[tokio::test]
async fn load_fails_cleanly_on_a_database_without_the_tables() {
    let dbs = databases().await;
    let empty = harness::postgres::fresh_database("checker_empty")
        .await
        .expect("database");
    let err = load(&dbs.wallet_url, &empty)
        .await
        .expect_err("no history tables");
    let text = format!("{err:#}");
    assert!(text.contains("reading the history database"), "{text}");
    assert!(text.contains("history_entries"), "{text}");
}

fn checker(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_consistency-checker"))
        .args(args)
        .env_remove("WALLET_DB")
        .env_remove("HISTORY_DB")
        .output()
        .expect("run the checker binary")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn cli_exit_codes_say_held_violated_or_could_not_check() {
    let dbs = databases().await;
    let ops = seed(&dbs).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let ops_path = dir.path().join("ops.jsonl");
    write_jsonl(&ops_path, &ops);
    let out = dir.path().join("checker.json");
    let (w, h) = (dbs.wallet_url.as_str(), dbs.history_url.as_str());
    let ops_arg = ops_path.to_str().expect("utf-8 path");

    let clean = checker(&["--wallet-db", w, "--history-db", h, "--ops", ops_arg]);
    assert_eq!(
        clean.status.code(),
        Some(0),
        "{}{}",
        text(&clean.stdout),
        text(&clean.stderr)
    );
    let stdout = text(&clean.stdout);
    assert!(stdout.contains("✔ acked-write-durable"), "{stdout}");
    assert!(stdout.contains("PASSED"), "{stdout}");

    delete_carol_credit(&dbs).await;
    let out_arg = out.to_str().expect("utf-8 path");
    let broken = checker(&[
        "--wallet-db",
        w,
        "--history-db",
        h,
        "--json",
        "--out",
        out_arg,
    ]);
    assert_eq!(broken.status.code(), Some(1), "{}", text(&broken.stderr));
    let printed: Report = serde_json::from_slice(&broken.stdout).expect("--json prints the report");
    let written: Report =
        serde_json::from_slice(&std::fs::read(&out).expect("--out")).expect("parse");
    assert_eq!(printed, written);
    let missing = printed.check(Invariant::HistoryNoMissing).unwrap();
    assert_eq!(missing.violations[0].event_id, Some(CAROL_CREDIT));

    // Nothing listens on a port that was free a moment ago.
    let port = harness::net::free_port().expect("free port");
    let nowhere = format!("postgres://postgres@127.0.0.1:{port}/nowhere");
    let unreachable = checker(&["--wallet-db", &nowhere, "--history-db", h]);
    assert_eq!(unreachable.status.code(), Some(2));
    let stderr = text(&unreachable.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("reading the wallet database"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let unreadable = checker(&[
        "--wallet-db",
        w,
        "--history-db",
        h,
        "--ops",
        "/nonexistent/ops.jsonl",
    ]);
    assert_eq!(unreadable.status.code(), Some(2));
    assert!(text(&unreadable.stderr).contains("reading the operation log"));

    let bad_args = checker(&["--wallet-db", w]);
    assert_eq!(bad_args.status.code(), Some(2));
    let stderr = text(&bad_args.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    // clap's own words, which name what is missing.
    assert!(
        stderr.starts_with("consistency-checker: error: the following required arguments were not provided: --history-db"),
        "{stderr}"
    );

    // Asking for help is not a failure to check.
    let help = checker(&["--help"]);
    assert_eq!(help.status.code(), Some(0), "{}", text(&help.stderr));
    assert!(text(&help.stdout).contains("--wallet-db"));
}

/// Parked events, dead letters (a genuine event's payload decodes to its
/// id, a poison message's to none) and the end-of-run walk all reach the
/// snapshot.
#[tokio::test]
async fn loads_parked_events_dead_letters_and_the_walk() {
    let dbs = databases().await;
    seed(&dbs).await;
    let payload: String = sqlx::query_scalar("SELECT payload FROM outbox WHERE event_id = $1")
        .bind(CAROL_CREDIT)
        .fetch_one(&dbs.wallet)
        .await
        .expect("carol's credit in the outbox");
    sqlx::query(
        "INSERT INTO parked_events (event_id, wallet_id, seq, payload, source_partition, source_offset, parked_at)
         VALUES ($1, $2, 9, $3, 4, 17, $4)",
    )
    .bind(CAROL_CREDIT)
    .bind(CAROL)
    .bind(&payload)
    .bind(at(8))
    .execute(&dbs.history)
    .await
    .expect("park");
    for (partition, offset, payload, error, seconds) in [
        (2, 40, payload.as_bytes(), "refused by the database", 9),
        (3, 41, b"not json".as_slice(), "undecodable", 10),
    ] {
        sqlx::query(
            "INSERT INTO dead_letters (topic, partition, \"offset\", payload, error, received_at)
             VALUES ('wallet-events', $1, $2, $3, $4, $5)",
        )
        .bind(partition)
        .bind(offset)
        .bind(payload)
        .bind(error)
        .bind(at(seconds))
        .execute(&dbs.history)
        .await
        .expect("dead letter");
    }
    let mut snapshot = load(&dbs.wallet_url, &dbs.history_url).await.expect("load");
    let parked: Vec<_> = snapshot
        .parked
        .iter()
        .map(|p| {
            (
                p.event_id,
                p.wallet_id,
                p.seq,
                p.source_partition,
                p.source_offset,
                p.parked_at,
            )
        })
        .collect();
    assert_eq!(parked, [(CAROL_CREDIT, CAROL, 9, 4, 17, at(8))]);
    let dead: Vec<_> = snapshot
        .dead_letters
        .iter()
        .map(|d| {
            (
                d.partition,
                d.offset,
                d.event_id,
                d.error.as_str(),
                d.received_at,
            )
        })
        .collect();
    assert_eq!(
        dead,
        [
            (2, 40, Some(CAROL_CREDIT), "refused by the database", at(9)),
            (3, 41, None, "undecodable", at(10)),
        ]
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let walk_path = dir.path().join("walk.json");
    let walk = run_log::Walk {
        wallets: vec![run_log::WalkedList {
            id: CAROL.to_string(),
            pages: 1,
            entries: Vec::new(),
            error: Some("a cursor led nowhere".into()),
        }],
        users: Vec::new(),
    };
    std::fs::write(&walk_path, serde_json::to_vec(&walk).expect("json")).expect("write walk");
    consistency_checker::attach_walk(&mut snapshot, &walk_path).expect("attach walk");
    assert_eq!(snapshot.walk, Some(walk));
    std::fs::write(&walk_path, b"[]").expect("write a non-walk");
    let err = consistency_checker::attach_walk(&mut snapshot, &walk_path).unwrap_err();
    assert!(
        err.to_string().ends_with("walk.json is not a history walk"),
        "{err}"
    );
}
