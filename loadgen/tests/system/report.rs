//! The report of a real run, opened in headless Chromium: it loads with no
//! request leaving the page and no console message, every section is
//! there, every chart drew, and the broker and consumer kills are bands on
//! the time charts. The comparison page of that run with itself loads as
//! cleanly.

use std::process::Command;

#[test]
fn the_report_of_a_real_run_opens_offline_with_every_chart_and_fault_band() {
    let scratch = tempfile::tempdir().unwrap();
    let scenario = scratch.path().join("faulty.toml");
    std::fs::write(
        &scenario,
        r#"
name = "faulty"
wallets = 12
users = 4
rate = 60
duration = "24s"
[faults]
enabled = true
schedule = [
  { at = "5s", kind = "broker_kill", hold = "3s" },
  { at = "13s", kind = "history_kill", hold = "2s" },
]
"#,
    )
    .unwrap();
    let out_dir = scratch.path().join("runs");
    let status = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["run", "--scenario-file"])
        .arg(&scenario)
        .args(["--seed", "7", "--out-dir"])
        .arg(&out_dir)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(0), "the run must pass its checks");
    let run = std::fs::read_dir(&out_dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let report = run.join("report.html");
    let size = std::fs::metadata(&report)
        .expect("loadgen run writes report.html")
        .len();
    assert!(size < 3 * 1024 * 1024, "report.html is {size} bytes");
    assert!(run.join("lag.json").is_file());
    // The services' own figures, scraped through the faults: the killed
    // history was seen down, and both services answered with their gauges.
    let scraped: Vec<run_log::service_metrics::MetricsSample> =
        run_log::read_jsonl(&run.join("metrics.jsonl")).unwrap();
    let answered = |instance: &'static str| {
        scraped
            .iter()
            .filter(move |s| s.instance == instance && s.up)
    };
    assert!(answered("wallet").count() >= 20, "{scraped:?}");
    assert!(answered("wallet").all(|s| s.outbox_backlog.is_some()));
    assert!(answered("history").any(|s| s.consumer_lag.is_some()));
    assert!(
        scraped.iter().any(|s| s.instance == "history" && !s.up),
        "the history kill should leave scrapes unanswered"
    );

    let load = harness::browser::load_page(&report, &scratch.path().join("chromium")).unwrap();
    assert!(
        load.page_requests.is_empty(),
        "the page fetched {:?}",
        load.page_requests
    );
    assert!(load.console.is_empty(), "console: {:?}", load.console);

    let dom = &load.dom;
    for (id, _) in reports::page::SECTIONS {
        assert!(
            dom.contains(&format!(r#"id="{id}""#)),
            "section {id} missing"
        );
    }
    assert!(
        dom.contains("PASSED: all 16 invariants held"),
        "verdict banner"
    );
    for series in [
        reports::charts::OUTBOX_BACKLOG_SERIES,
        reports::charts::CONSUMER_LAG_SERIES,
    ] {
        assert!(dom.contains(series), "the lag chart lacks {series}");
    }
    assert!(dom.contains("By the services' own figures: largest outbox backlog"));
    // Every chart element holds an SVG the script drew into, and the body
    // says how many it drew.
    let charts = dom.matches(r#"class="chart"#).count();
    assert!(charts >= 5, "{charts} charts");
    assert!(
        dom.contains(&format!(r#"data-charts-rendered="{charts}""#)),
        "not every chart was drawn"
    );
    assert_eq!(dom.matches("<svg").count(), charts, "one SVG per chart");
    assert!(
        dom.matches("<path").count() > 20 * charts,
        "charts hold drawn series"
    );
    // The fault bands are labelled in the drawn latency and throughput charts.
    let drawn_labels = |label: &str| dom.matches(&format!(">{label}</text>")).count();
    // Latency charts (one per endpoint, at least 3), throughput, lag.
    assert!(
        drawn_labels("#1 broker_kill") >= 5,
        "{}",
        drawn_labels("#1 broker_kill")
    );
    assert!(
        drawn_labels("#2 history_kill") >= 5,
        "{}",
        drawn_labels("#2 history_kill")
    );

    // The comparison page: one overlaid distribution per endpoint.
    let compare =
        reports::write_comparison(&run, &run, Some(&scratch.path().join("compare.html"))).unwrap();
    let load = harness::browser::load_page(&compare.path, &scratch.path().join("chromium-compare"))
        .unwrap();
    assert!(
        load.page_requests.is_empty(),
        "the page fetched {:?}",
        load.page_requests
    );
    assert!(load.console.is_empty(), "console: {:?}", load.console);
    let charts = load.dom.matches(r#"class="chart"#).count();
    assert!(charts >= 3, "{charts} charts");
    assert!(
        load.dom
            .contains(&format!(r#"data-charts-rendered="{charts}""#))
    );
    assert!(
        load.dom.contains("No regressions."),
        "a run compared with itself"
    );
}
