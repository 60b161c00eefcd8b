//! The reports crate against run directories written here with known
//! figures: every section is rendered, fault bands land where chaos.jsonl
//! put them, violations appear in money terms, comparison deltas are the
//! summaries' own numbers, and the CLI fails clearly on a wrong directory.

use std::{
    path::Path,
    process::Command,
    time::{Duration, SystemTime},
};

use chrono::{DateTime, Utc};
use hdrhistogram::{
    Histogram,
    serialization::{
        V2DeflateSerializer,
        interval_log::{IntervalLogWriterBuilder, Tag},
    },
};
use reports::compare::{Change, deltas};
use run_log::{
    ChaosEvent, FaultKind, FaultPhase,
    summary::{
        ConvergenceSummary, EndpointSummary, ErrorCount, LagSecond, RunSummary, ThresholdsSummary,
        TimelinePoint, Totals, Verdict, Versions,
    },
};
use serde_json::json;

const TRANSFER: &str = "POST /wallets/{id}/transfer";
const BALANCE: &str = "GET /wallets/{id}";
const LOAD_S: u64 = 30;

fn start() -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000, 0).unwrap()
}

fn endpoint(name: &str, p50_ms: f64, p99_ms: f64, rps: f64) -> EndpointSummary {
    EndpointSummary {
        endpoint: name.to_owned(),
        count: (rps * LOAD_S as f64) as u64,
        ok: (rps * LOAD_S as f64) as u64 - 3,
        failed: 2,
        indeterminate: 1,
        rps,
        min_ms: 1.0,
        mean_ms: p50_ms * 1.1,
        p50_ms,
        p75_ms: p50_ms * 1.3,
        p90_ms: p50_ms * 1.8,
        p99_ms,
        p999_ms: p99_ms * 2.0,
        max_ms: p99_ms * 3.0,
    }
}

fn summary(users: u32, endpoints: Vec<EndpointSummary>) -> RunSummary {
    RunSummary {
        scenario: "transfers".into(),
        seed: 42,
        command: format!("loadgen run transfers --users {users} --seed 42"),
        users,
        wallets: 100,
        rate: 0,
        started_at: Some(start()),
        duration_s: LOAD_S as f64,
        totals: Totals {
            requests: endpoints.iter().map(|e| e.count).sum(),
            rps: endpoints.iter().map(|e| e.rps).sum(),
        },
        endpoints,
        errors: vec![ErrorCount {
            endpoint: TRANSFER.into(),
            code: "connection_refused".into(),
            count: 2,
        }],
        convergence: ConvergenceSummary {
            converged: true,
            took_ms: 1_500,
            bound_ms: 60_000,
            started_offset_ms: Some(31_000),
        },
        faults: Vec::new(),
        verdict: Verdict {
            passed: true,
            violated: Vec::new(),
        },
        thresholds: ThresholdsSummary {
            checked: Vec::new(),
            missed: Vec::new(),
        },
        versions: Versions {
            loadgen: "0.1.0".into(),
            commit: "abc1234".into(),
            os: "linux".into(),
            arch: "x86_64".into(),
            cpus: 2,
            hostname: Some("ci-box".into()),
            memory_mib: Some(24_000),
            kernel: Some("6.1.0".into()),
        },
    }
}

fn chaos_event(fault_id: u32, kind: FaultKind, phase: FaultPhase, offset_ms: u64) -> ChaosEvent {
    ChaosEvent {
        fault_id,
        kind,
        phase,
        at: start() + chrono::Duration::milliseconds(offset_ms as i64),
        offset_ms,
        target: if kind == FaultKind::BrokerKill {
            "broker"
        } else {
            "history"
        }
        .into(),
        pid: Some(100 + fault_id),
        detail: String::new(),
    }
}

/// A run directory: `latency_scale` multiplies every latency.
fn write_run(
    dir: &Path,
    summary: &RunSummary,
    latency_scale: u64,
    checker: Option<serde_json::Value>,
) {
    std::fs::create_dir_all(dir).unwrap();
    let write = |name: &str, value: serde_json::Value| {
        std::fs::write(
            dir.join(name),
            serde_json::to_string_pretty(&value).unwrap(),
        )
        .unwrap()
    };
    write("summary.json", json!(summary));
    if let Some(checker) = checker {
        write("checker.json", checker);
    }
    // The broker is down from 6 to 10 s (recovered 10.4 s); history from 16 to 18 s.
    let events = [
        chaos_event(1, FaultKind::BrokerKill, FaultPhase::Injected, 6_000),
        chaos_event(1, FaultKind::BrokerKill, FaultPhase::Healed, 10_000),
        chaos_event(1, FaultKind::BrokerKill, FaultPhase::Recovered, 10_400),
        chaos_event(2, FaultKind::HistoryKill, FaultPhase::Injected, 16_000),
        chaos_event(2, FaultKind::HistoryKill, FaultPhase::Healed, 18_000),
        chaos_event(2, FaultKind::HistoryKill, FaultPhase::Recovered, 21_000),
    ];
    let mut chaos = Vec::new();
    run_log::write_jsonl(&mut chaos, &events).unwrap();
    std::fs::write(dir.join("chaos.jsonl"), chaos).unwrap();

    let mut timeline = Vec::new();
    let mut log = Vec::new();
    {
        let mut serializer = V2DeflateSerializer::new();
        let origin = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut writer = IntervalLogWriterBuilder::new()
            .with_start_time(origin)
            .with_base_time(origin)
            .begin_log_with(&mut log, &mut serializer)
            .unwrap();
        for second in 0..LOAD_S {
            for name in [TRANSFER, BALANCE] {
                let mut h = Histogram::<u64>::new_with_bounds(1, 600_000_000, 2).unwrap();
                // 10..=19 ms, and 2 s while the broker is down (6..10 s).
                let base_us = if (6..10).contains(&second) {
                    2_000_000
                } else {
                    10_000
                };
                for i in 0..10 {
                    h.record((base_us + i * 1_000) * latency_scale).unwrap();
                }
                writer
                    .write_histogram(
                        &h,
                        Duration::from_secs(second),
                        Duration::from_secs(1),
                        Tag::new(&name.replace(' ', "_")),
                    )
                    .unwrap();
                timeline.push(TimelinePoint {
                    second,
                    endpoint: name.into(),
                    ok: 10,
                    failed: 0,
                    indeterminate: 0,
                    p50_ms: 0.0,
                    p90_ms: 0.0,
                    p99_ms: 0.0,
                    max_ms: 0.0,
                });
            }
        }
    }
    std::fs::write(dir.join("latency.hlog"), log).unwrap();
    write("timeline.json", json!(timeline));
    let lag: Vec<LagSecond> = (0..33)
        .map(|second| LagSecond {
            second,
            committed: 20,
            applied: 20,
            backlog: if (6..10).contains(&second) { 80 } else { 0 },
            p50_ms: Some(5.0),
            p99_ms: Some(if second == 10 { 4_000.0 } else { 9.0 }),
            max_ms: Some(if second == 10 { 4_100.0 } else { 12.0 }),
        })
        .collect();
    write("lag.json", json!(lag));
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

fn violated_checker() -> serde_json::Value {
    json!({
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
    })
}

#[test]
fn a_run_renders_every_section_with_its_fault_bands_and_nothing_external() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("run");
    write_run(
        &dir,
        &summary(
            8,
            vec![
                endpoint(BALANCE, 12.0, 19.0, 20.0),
                endpoint(TRANSFER, 14.0, 2_000.0, 20.0),
            ],
        ),
        1,
        None,
    );
    let html = reports::render_run(&dir).unwrap();

    for id in [
        "verdict",
        "facts",
        "latency",
        "throughput",
        "lag",
        "distribution",
        "endpoints",
        "errors",
        "recovery",
    ] {
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
    assert!(html.contains("connection_refused"));
    // No checker.json: said so, not hidden.
    assert!(html.contains("No checker.json"));
    assert!(html.contains("checker.json") && html.contains("missing files"));
}

#[test]
fn recovery_is_measured_from_the_latency_log() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("run");
    write_run(
        &dir,
        &summary(
            8,
            vec![
                endpoint(BALANCE, 12.0, 19.0, 20.0),
                endpoint(TRANSFER, 14.0, 2_000.0, 20.0),
            ],
        ),
        1,
        None,
    );
    let data = reports::RunData::load(&dir).unwrap();
    let model = reports::model::RunModel::new(&data);
    assert_eq!(model.recoveries.len(), 2);
    let broker = &model.recoveries[0];
    // Baseline 2..6 s: p99 of 10..=19 ms is 19 ms. Slow 6..10 s; good from 10 s.
    assert!(
        (broker.baseline_p99_ms.unwrap() - 19.0).abs() < 0.2,
        "{broker:?}"
    );
    assert_eq!(broker.p99, reports::recovery::RecoveryTime::After(4.0));
    // Throughput never dropped (the fixture completes 20 ok per second).
    assert_eq!(
        broker.throughput,
        reports::recovery::RecoveryTime::Unaffected
    );
    assert_eq!(
        model.recoveries[1].p99,
        reports::recovery::RecoveryTime::Unaffected
    );
}

#[test]
fn violations_are_shown_in_money_terms_with_their_fault_window() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path().join("run");
    let mut failed = summary(8, vec![endpoint(TRANSFER, 14.0, 20.0, 20.0)]);
    failed.verdict = Verdict {
        passed: false,
        violated: vec!["history-no-missing".into()],
    };
    write_run(&dir, &failed, 1, Some(violated_checker()));
    let html = reports::render_run(&dir).unwrap();
    assert!(html.contains("FAILED: 1 of 2 invariants violated (history-no-missing)"));
    assert!(html.contains("transfer_in 14.8398 (seq 29) is in the ledger but not in history [during fault #1 broker_kill (broker)]"));
    assert!(html.contains("expected 14.8398, actual 0.0000"));
    assert!(html.contains("… and 1 more"));
    assert!(html.contains(r#"class="verdict failed""#));
}

#[test]
fn comparison_deltas_are_the_two_summaries_numbers() {
    let scratch = tempfile::tempdir().unwrap();
    let (base_dir, new_dir) = (scratch.path().join("base"), scratch.path().join("new"));
    let base = summary(
        8,
        vec![
            endpoint(BALANCE, 12.0, 19.0, 100.0),
            endpoint(TRANSFER, 20.0, 40.0, 300.0),
        ],
    );
    let new = summary(
        32,
        vec![
            endpoint(BALANCE, 12.5, 19.5, 101.0),
            endpoint(TRANSFER, 60.0, 130.0, 400.0),
        ],
    );
    write_run(&base_dir, &base, 1, None);
    write_run(&new_dir, &new, 3, None);

    let rows = deltas(&base, &new);
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
    assert_eq!(total.rps.unwrap().base, 400.0);
    assert_eq!(total.rps.unwrap().new, 501.0);

    let written = reports::write_comparison(&base_dir, &new_dir, None).unwrap();
    assert_eq!(written.path, new_dir.join("compare-base.html"));
    let html = std::fs::read_to_string(&written.path).unwrap();
    // The p99 cells of the transfer row, and its highlighted delta.
    assert!(html.contains(r#"<td class="num">40.0</td><td class="num">130.0</td><td class="num regression">+90.0 (+225.0 %)</td>"#));
    assert!(html.contains("2 regressions."));
    // Overlaid distributions: one chart per common endpoint, two lines each.
    assert_eq!(html.matches("data-chart=").count(), 2);
    assert!(html.contains(r#""name":"base: base""#) && html.contains(r#""name":"new: new""#));
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
    write_run(
        &dir,
        &summary(8, vec![endpoint(TRANSFER, 14.0, 20.0, 20.0)]),
        1,
        None,
    );
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
