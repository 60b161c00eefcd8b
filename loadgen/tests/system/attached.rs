//! `run --wallet-url ...` against a system `loadgen up` started in another
//! process: the load runs with tokens minted from that system's secret,
//! the checker holds every invariant, a fault on the link the harness can
//! reach is injected, and one on a process it did not start is skipped,
//! which the report says.

use std::{collections::BTreeMap, path::Path, process::Command, time::Duration};

use harness::{ManagedProcess, ProcessSpec, net::free_port};
use nix::sys::signal::Signal;
use run_log::{ChaosEvent, FaultKind, FaultPhase, OpKind, OpRecord, Outcome};

/// `KEY=value` lines, once `path` exists (`up --env-file` writes it when
/// the system answers).
fn read_env_file(path: &Path, up: &mut ManagedProcess) -> BTreeMap<String, String> {
    for _ in 0..240 {
        if let Ok(text) = std::fs::read_to_string(path)
            && text.contains("HISTORY_DB=")
        {
            return text
                .lines()
                .filter_map(|line| line.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
        }
        assert!(up.is_running(), "loadgen up exited: see its log");
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("loadgen up wrote no {} within 120 s", path.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_loads_and_checks_a_system_it_did_not_start() {
    let scratch = tempfile::tempdir().unwrap();
    let server = harness::test_server().await.expect("test PostgreSQL");
    let env_file = scratch.path().join("system.env");
    let port = || free_port().unwrap().to_string();
    let mut up = ManagedProcess::start(
        ProcessSpec::new(
            "up",
            env!("CARGO_BIN_EXE_loadgen"),
            scratch.path().join("up.log"),
        )
        .args(["up", "--wallet-port", &port(), "--history-port", &port()])
        .args([
            "--broker-port",
            &port(),
            "--database-url",
            server.admin_url(),
        ])
        .arg("--dir")
        .arg(scratch.path().join("up"))
        .arg("--env-file")
        .arg(&env_file),
    )
    .unwrap();
    let env = read_env_file(&env_file, &mut up);

    let scenario = scratch.path().join("attached.toml");
    std::fs::write(
        &scenario,
        r#"
name = "attached"
wallets = 12
users = 4
rate = 40
duration = "20s"
[faults]
enabled = true
[[faults.schedule]]
at = "4s"
kind = "broker_kill"
hold = "3s"
[[faults.schedule]]
at = "10s"
kind = "lost_response"
hold = "3s"
"#,
    )
    .unwrap();
    let runs = scratch.path().join("runs");
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["run", "--seed", "7", "--scenario-file"])
        .arg(&scenario)
        .arg("--out-dir")
        .arg(&runs)
        .args(["--wallet-url", &env["WALLET_URL"]])
        .args(["--history-url", &env["HISTORY_URL"]])
        .args(["--wallet-db", &env["WALLET_DB"]])
        .args(["--history-db", &env["HISTORY_DB"]])
        .env("AUTH_SECRET", &env["AUTH_SECRET"])
        .output()
        .unwrap();
    let stdout = crate::helpers::stdout_of(&out, 0);
    assert!(stdout.contains("attaching to the system at"), "{stdout}");

    // The system `up` started still runs: the run signalled none of it.
    assert!(up.is_running());
    let dir = std::fs::read_dir(&runs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let ops: Vec<OpRecord> = run_log::read_jsonl(&dir.join("ops.jsonl")).unwrap();
    let transfers_ok = ops
        .iter()
        .filter(|op| op.kind == OpKind::Transfer && op.outcome == Outcome::Ok)
        .count();
    assert!(transfers_ok > 100, "{transfers_ok} transfers applied");
    let refused_auth = ops.iter().filter(|op| {
        matches!(
            op.error_code.as_deref(),
            Some("missing_token" | "invalid_token" | "token_expired" | "forbidden")
        )
    });
    assert_eq!(refused_auth.count(), 0, "every token was accepted");

    let chaos: Vec<ChaosEvent> = run_log::read_jsonl(&dir.join("chaos.jsonl")).unwrap();
    let injected = |kind: FaultKind| {
        chaos
            .iter()
            .find(|e| e.kind == kind && e.phase == FaultPhase::Injected)
            .map(|e| e.detail.clone())
            .unwrap()
    };
    assert!(injected(FaultKind::BrokerKill).starts_with("skipped"));
    assert!(!injected(FaultKind::LostResponse).starts_with("skipped"));
    let report = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(
        report.contains("faults skipped") && report.contains("not started by this run"),
        "the report lists the skipped fault"
    );

    up.signal(Signal::SIGINT).unwrap();
    let status = up.wait_exit_blocking(Duration::from_secs(60));
    assert!(
        status.is_some_and(|s| s.success()),
        "up stopped: {status:?}"
    );
}
