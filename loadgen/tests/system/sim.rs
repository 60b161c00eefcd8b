//! `loadgen sim` as a user runs it: a small sweep that also reruns every
//! seed in a fresh process and must find the traces equal, and one seed's
//! run directory that the reports render like a live run's.

use std::process::Command;

fn loadgen() -> Command {
    Command::new(env!("CARGO_BIN_EXE_loadgen"))
}

#[test]
fn a_sweep_passes_and_every_seed_replays_in_a_fresh_process() {
    let out = loadgen()
        .args([
            "sim",
            "--seeds",
            "3",
            "--from",
            "40",
            "--jobs",
            "2",
            "--check-determinism",
        ])
        .output()
        .unwrap();
    let stdout = crate::helpers::stdout_of(&out, 0);
    assert!(
        stdout.contains("determinism: 0 mismatches in 3 seeds"),
        "{stdout}"
    );
    assert!(
        stdout.contains("VERDICT: no violation in 3 seeds"),
        "{stdout}"
    );
    assert!(stdout.contains("seeds/s"), "{stdout}");
}

#[test]
fn one_seed_writes_a_run_directory_the_reports_render() {
    let scratch = tempfile::tempdir().unwrap();
    let out = loadgen()
        .args(["sim", "--seed", "7", "--out-dir"])
        .arg(scratch.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let dir = scratch.path().join("sim-seed7");
    for file in [
        "ops.jsonl",
        "chaos.jsonl",
        "checker.json",
        "trace.jsonl",
        "summary.json",
        "latency.hlog",
        "timeline.json",
    ] {
        assert!(dir.join(file).is_file(), "{file} missing");
    }
    let trace = std::fs::read_to_string(dir.join("trace.jsonl")).unwrap();
    assert!(
        trace.lines().count() > 10_000,
        "the trace holds every event"
    );
    let html = reports::render_run(&dir).expect("the reports render a simulated run");
    assert!(html.contains("PASSED"), "verdict shown");
    assert!(html.contains("POST /wallets/{id}/transfer"));
}

#[test]
fn user_mistakes_are_named() {
    let out = loadgen().args(["sim"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--seed N"));
    let out = loadgen()
        .args(["sim", "--seeds", "1", "--canary", "nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
