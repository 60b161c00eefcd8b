//! The reports crate against synthetic run directories with known figures
//! (`reports::synthetic`): every section is rendered, fault bands land
//! where chaos.jsonl put them, recovery is measured from the latency log,
//! violations appear in money terms, comparison deltas are the summaries'
//! own numbers, and the CLI fails clearly on a wrong directory.

use std::{path::Path, process::Command};

use reports::{
    compare::{Change, deltas},
    recovery::RecoveryTime,
    synthetic::{Fault, SyntheticRun, endpoint_summary},
};
use run_log::FaultKind;
use serde_json::json;

const TRANSFER: &str = "POST /wallets/{id}/transfer";
const BALANCE: &str = "GET /wallets/{id}";

/// 30 s, two endpoints at 10..19 ms; the broker held down 6..10 s, the
/// history process 16..18 s; both stall every endpoint while held.
fn faulty_run(users: u32) -> SyntheticRun {
    SyntheticRun::new(
        30,
        &[(BALANCE, 10), (TRANSFER, 10)],
        vec![
            Fault {
                kind: FaultKind::BrokerKill,
                at_s: 6,
                hold_s: 4,
            },
            Fault {
                kind: FaultKind::HistoryKill,
                at_s: 16,
                hold_s: 2,
            },
        ],
        users,
    )
}

/// The page with the bodies of its script elements left out.
fn outside_scripts(html: &str) -> String {
    let mut markup = String::new();
    let mut rest = html;
    while let Some(start) = rest.find("<script") {
        let open_end = start + rest[start..].find('>').unwrap() + 1;
        markup.push_str(&rest[..open_end]);
        let close = open_end + rest[open_end..].find("</script>").unwrap();
        rest = &rest[close..];
    }
    markup.push_str(rest);
    markup
}

fn write(run: &SyntheticRun, dir: &Path) {
    run.write(dir).unwrap();
}

#[test]
fn a_run_renders_every_section_with_its_fault_bands_and_nothing_external() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("run");
    write(&faulty_run(8), &dir);
    let html = reports::render_run(&dir).unwrap();

    for (id, _) in reports::page::SECTIONS {
        assert!(
            html.contains(&format!(r#"id="{id}""#)),
            "section {id} missing"
        );
    }
    // Two latency charts, throughput, lag, distribution.
    assert_eq!(html.matches("data-chart=").count(), 5);
    // The bands: injection to recovery, labelled.
    assert!(
        html.contains(r##""name":"#1 broker_kill","xAxis":6.0"##),
        "broker band"
    );
    assert!(html.contains(r#"{"xAxis":10.4}"#), "broker band end");
    assert!(
        html.contains(r##""name":"#2 history_kill","xAxis":16.0"##),
        "history band"
    );
    // The convergence point: 31 s + 1.5 s.
    assert!(html.contains("converged at 32.5 s"));
    // Self-contained: no external script, style or image (the headless
    // browser test proves no request leaves; this catches markup early).
    let markup = outside_scripts(&html);
    assert!(!markup.contains("<script src"), "external script");
    assert!(!markup.contains("<link"), "external stylesheet");
    assert!(!markup.contains("<img"), "image");
    assert_eq!(
        markup.matches("<script").count(),
        7,
        "5 chart data, ECharts, the drawing script"
    );
    assert!(
        html.contains("echarts.init"),
        "the drawing script is inline"
    );
    // Facts, endpoint table and errors.
    assert!(html.contains("loadgen run transfers --users 8 --seed 42"));
    assert!(html.contains("abc1234") && html.contains("ci-box"));
    assert!(html.contains("connect_refused"));
    // No checker.json: said so, not hidden.
    assert!(html.contains("No checker.json"));
    assert!(html.contains("missing files"));
}

#[test]
fn recovery_is_measured_from_the_latency_log() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("run");
    write(&faulty_run(8), &dir);
    let data = reports::RunData::load(&dir).unwrap();
    let model = reports::model::RunModel::new(&data);
    assert_eq!(model.recoveries.len(), 2);
    let broker = &model.recoveries[0];
    // Baseline 2..6 s: the p99 of 10..=19 ms is 19 ms; stalled 6..10 s.
    assert!(
        (broker.baseline_p99_ms.unwrap() - 19.0).abs() < 0.2,
        "{broker:?}"
    );
    assert_eq!(broker.p99, RecoveryTime::After(4.0));
    // Throughput never dropped (the fixture completes 20 ok per second).
    assert_eq!(broker.throughput, RecoveryTime::Unaffected);
    // Baseline of #2 leaves out #1's seconds (6..=10); stalled 16..18 s.
    let history = &model.recoveries[1];
    assert!(
        (history.baseline_p99_ms.unwrap() - 19.0).abs() < 0.2,
        "{history:?}"
    );
    assert_eq!(history.p99, RecoveryTime::After(2.0));
}

#[test]
fn violations_are_shown_in_money_terms_with_their_fault_window() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("run");
    let mut run = faulty_run(8);
    run.summary.verdict.passed = false;
    run.summary.verdict.violated = vec!["history-no-missing".into()];
    run.checker = Some(json!({
        "passed": false,
        "checks": [
            { "invariant": "balance-matches-ledger", "status": "passed", "examined": 100, "violations": [], "violations_total": 0 },
            { "invariant": "history-no-missing", "status": "violated", "examined": 4000, "violations_total": 2, "violations": [{
                "wallet_id": "01a21773-0000-7000-8000-000000000001",
                "event_id": "01a21774-0000-7000-8000-000000000002",
                "op_id": null, "transfer_id": null,
                "expected": "14.8398", "actual": "0.0000",
                "at": "2023-11-14T22:13:27Z",
                "fault_windows": ["fault #1 broker_kill (broker)"],
                "message": "wallet 01a21773-…: transfer_in 14.8398 (seq 29) is in the ledger but not in history [during fault #1 broker_kill (broker)]"
            }]}
        ],
        "facts": {
            "wallets": 100, "ledger_entries": 4000, "outbox_rows": 4000, "outbox_unpublished": 0,
            "history_entries": 3998, "parked_events": 0, "dead_letters": 0, "ops": 3000, "ops_ok": 2990,
            "ops_failed": 9, "ops_indeterminate": 1, "ops_unverifiable": 0, "fault_windows": 2,
            "total_balance": "100000.0000", "total_funded": "100000.0000",
            "convergence": { "converged": true, "took_ms": 1500, "bound_ms": 60000 }
        }
    }));
    write(&run, &dir);
    let html = reports::render_run(&dir).unwrap();
    assert!(html.contains("FAILED: 1 of 2 invariants violated (history-no-missing)"));
    assert!(html.contains(
        "transfer_in 14.8398 (seq 29) is in the ledger but not in history [during fault #1 broker_kill (broker)]"
    ));
    assert!(html.contains("expected 14.8398, actual 0.0000"));
    assert!(html.contains("… and 1 more"));
    assert!(html.contains(r#"class="verdict failed""#));
}

#[test]
fn comparison_deltas_are_the_two_summaries_numbers() {
    let scratch = tempfile::tempdir().unwrap();
    let (base_dir, new_dir) = (scratch.path().join("base"), scratch.path().join("new"));
    let base = faulty_run(8).with_endpoint_figures(vec![
        endpoint_summary(BALANCE, 12.0, 19.0, 100.0),
        endpoint_summary(TRANSFER, 20.0, 40.0, 300.0),
    ]);
    let new = faulty_run(32).with_endpoint_figures(vec![
        endpoint_summary(BALANCE, 12.5, 19.5, 101.0),
        endpoint_summary(TRANSFER, 60.0, 130.0, 400.0),
    ]);
    write(&base, &base_dir);
    write(&new, &new_dir);

    let rows = deltas(&base.summary, &new.summary);
    let transfer = rows.iter().find(|r| r.endpoint == TRANSFER).unwrap();
    let p99 = transfer.p99_ms.unwrap();
    assert_eq!((p99.base, p99.new, p99.absolute()), (40.0, 130.0, 90.0));
    assert_eq!(p99.change, Change::Regression);
    let rps = transfer.rps.unwrap();
    assert_eq!((rps.base, rps.new), (300.0, 400.0));
    assert_eq!(rps.change, Change::Improvement);
    let balance = rows.iter().find(|r| r.endpoint == BALANCE).unwrap();
    assert_eq!(balance.p50_ms.unwrap().change, Change::Same);
    let total = rows.last().unwrap();
    assert_eq!(
        (total.rps.unwrap().base, total.rps.unwrap().new),
        (400.0, 501.0)
    );

    let written = reports::write_comparison(&base_dir, &new_dir, None).unwrap();
    assert_eq!(written.path, new_dir.join("compare-base.html"));
    let html = std::fs::read_to_string(&written.path).unwrap();
    // The p99 cells of the transfer row, and its highlighted delta.
    assert!(html.contains(
        r#"<td class="num">40.0</td><td class="num">130.0</td><td class="num regression">+90.0 (+225.0 %)</td>"#
    ));
    // Transfer p50 and p99 up; nothing else beyond 10 %.
    assert!(html.contains("2 regressions."));
    // Overlaid distributions: one chart per common endpoint, two lines each.
    assert_eq!(html.matches("data-chart=").count(), 2);
    assert_eq!(html.matches(r#""name":"base""#).count(), 2);
    assert_eq!(html.matches(r#""name":"new""#).count(), 2);
    assert!(html.contains("loadgen run transfers --users 32 --seed 42"));
}

#[test]
fn the_cli_renders_and_refuses_a_directory_that_is_not_a_run() {
    let scratch = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_reports"))
        .args(["render"])
        .arg(scratch.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is not a run directory: it has no summary.json"),
        "{stderr}"
    );
    assert!(!scratch.path().join("report.html").exists());

    let dir = scratch.path().join("run");
    write(&faulty_run(8), &dir);
    let out = Command::new(env!("CARGO_BIN_EXE_reports"))
        .args(["render"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("wrote "));
    assert!(dir.join("report.html").is_file());
}
