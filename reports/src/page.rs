//! The run report's HTML: one self-contained page (style, ECharts, the
//! charts' data and the script that draws them all inline; no request
//! leaves the page). Sections, top to bottom: verdict, run facts, latency
//! over time, throughput, history lag, percentile distribution, endpoint
//! table, errors, recovery after each fault.

use maud::{DOCTYPE, Markup, PreEscaped, html};
use run_log::checker::{Facts, Report, Status};
use serde_json::Value;

use crate::{
    charts, faults,
    model::RunModel,
    recovery::{self, RecoveryTime},
};
use run_log::{FaultKind, summary::RunSummary};

const ECHARTS: &str = include_str!("../vendor/echarts/echarts.common.min.js");
const SCRIPT: &str = include_str!("../assets/report.js");
const STYLE: &str = include_str!("../assets/report.css");

/// Charts of one page: each gets an element and a JSON script.
#[derive(Default)]
pub struct Charts {
    next: usize,
}

impl Charts {
    /// A chart element whose option lives in a JSON script beside it.
    pub fn chart(&mut self, option: &Value, class: &str) -> Markup {
        self.next += 1;
        let id = format!("chart-{}", self.next);
        let class = if class.is_empty() {
            "chart".to_owned()
        } else {
            format!("chart {class}")
        };
        html! {
            div class=(class) data-chart=(id) {}
            script type="application/json" id=(id) { (PreEscaped(charts::script_json(option))) }
        }
    }
}

/// The report's sections, top to bottom: each section's element id (the
/// page's anchors, which tests look for) and its name in the navigation.
pub const SECTIONS: [(&str, &str); 9] = [
    ("verdict", "Verdict"),
    ("facts", "Run"),
    ("latency", "Latency"),
    ("throughput", "Throughput"),
    ("lag", "History lag"),
    ("distribution", "Distribution"),
    ("endpoints", "Endpoints"),
    ("errors", "Errors"),
    ("recovery", "Recovery"),
];

/// The page frame: head with inline style, a sticky section index, the
/// body, then ECharts and the drawing script.
pub fn layout(title: &str, subtitle: Markup, nav: &[(&str, &str)], body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                main {
                    header.page { h1 { (title) } div.sub { (subtitle) } }
                    nav { @for (id, label) in nav { a href=(format!("#{id}")) { (label) } } }
                    (body)
                    footer { "Rendered by the wallet-system reports crate from the run directory alone. Charts: Apache ECharts 6.1.0 (inline)." }
                }
                script { (PreEscaped(ECHARTS)) }
                script { (PreEscaped(SCRIPT)) }
            }
        }
    }
}

pub fn run_page(model: &RunModel) -> Markup {
    let summary = &model.data.summary;
    let mut charts = Charts::default();
    let title = format!(
        "{} · seed {} · {}",
        summary.scenario,
        summary.seed,
        verdict_word(model.data.checker.as_ref(), summary)
    );
    let subtitle = html! { (model.data.name()) };
    let nav = SECTIONS;
    let body = html! {
        (verdict_section(model.data.checker.as_ref(), summary))
        (facts_section(model))
        (latency_section(model, &mut charts))
        (throughput_section(model, &mut charts))
        (lag_section(model, &mut charts))
        (distribution_section(model, &mut charts))
        (endpoints_section(summary))
        (errors_section(summary))
        (recovery_section(model))
    };
    layout(&title, subtitle, &nav, body)
}

fn verdict_word(checker: Option<&Report>, summary: &RunSummary) -> &'static str {
    match checker {
        Some(report) if !report.passed => "FAILED",
        Some(_) if !summary.thresholds.missed.is_empty() => "thresholds missed",
        Some(_) => "passed",
        None if summary.verdict.passed => "passed (no checker.json)",
        None => "FAILED",
    }
}

pub fn verdict_section(checker: Option<&Report>, summary: &RunSummary) -> Markup {
    let (class, headline) = match checker {
        Some(report) if report.passed => ("passed", passed_headline(report)),
        Some(report) => (
            "failed",
            format!(
                "FAILED: {} of {} invariants violated ({})",
                report.violated().len(),
                report.checks.len(),
                report
                    .violated()
                    .iter()
                    .map(|i| i.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        None => (
            "unknown",
            "No checker.json in this run directory: the verdict below is summary.json's".to_owned(),
        ),
    };
    html! {
        section.verdict.(class) id="verdict" {
            div.headline { (headline) }
            @if !summary.thresholds.missed.is_empty() {
                p.fail { "Thresholds missed: " (summary.thresholds.missed.join("; ")) }
            } @else if !summary.thresholds.checked.is_empty() {
                p.pass { "Thresholds met: " (summary.thresholds.checked.join("; ")) }
            }
            @if let Some(report) = checker {
                (checks_table(report))
                (facts_note(&report.facts))
            } @else {
                p { "Violated: " (if summary.verdict.violated.is_empty() { "none".to_owned() } else { summary.verdict.violated.join(", ") }) }
            }
        }
    }
}

/// One row per invariant, its stored violations listed under it.
fn checks_table(report: &Report) -> Markup {
    html! {
            table {
                tr { th { "" } th { "invariant" } th.num { "examined" } th.num { "violations" } }
                @for check in &report.checks {
                    tr {
                        td { @match check.status {
                            Status::Passed => span.pass { "✔" },
                            Status::Violated => span.fail { "✘" },
                            Status::NotEvaluated => span.skip { "–" },
                        } }
                        td { code { (check.invariant.as_str()) }
                            @if check.status == Status::NotEvaluated { span.skip { " not evaluated" } }
                            @if !check.violations.is_empty() {
                                ul.violations {
                                    @for v in &check.violations {
                                        li {
                                            (v.message)
                                            @if v.expected.is_some() || v.actual.is_some() {
                                                " — expected " (money(v.expected)) ", actual " (money(v.actual))
                                            }
                                        }
                                    }
                                    @if check.violations_total > check.violations.len() as u64 {
                                        li { "… and " (check.violations_total - check.violations.len() as u64) " more (checker.json stores the first " (check.violations.len()) ")" }
                                    }
                                }
                            }
                        }
                        td.num { (check.examined) }
                        td.num { @if check.violations_total > 0 { span.fail { (check.violations_total) } } @else { "0" } }
                    }
                }
            }
    }
}

fn facts_note(f: &Facts) -> Markup {
    html! {
    p.note {
        (f.wallets) " wallets, " (f.ledger_entries) " ledger entries, " (f.history_entries) " history entries, "
        (f.outbox_unpublished) " of " (f.outbox_rows) " outbox rows unpublished, " (f.parked_events) " parked, "
        (f.dead_letters) " dead letters. Balances total " (wallet_events::format_money(f.total_balance))
        ", funded total " (wallet_events::format_money(f.total_funded)) ". Operations: " (f.ops) " (" (f.ops_ok) " ok, "
        (f.ops_failed) " failed, " (f.ops_indeterminate) " indeterminate), in " (f.attempts) " attempts: "
        (f.ops_retried) " retried with the same idempotency key, " (f.ops_resolved_by_retry)
        " of them resolved to acknowledged by a retry."
    }
    }
}

/// "PASSED: all 16 invariants held", naming those that could not be
/// evaluated (no operation log, no convergence measurement) if any.
fn passed_headline(report: &Report) -> String {
    let count = |status: Status| report.checks.iter().filter(|c| c.status == status).count();
    let skipped = count(Status::NotEvaluated);
    let mut headline = format!("PASSED: all {} invariants held", count(Status::Passed));
    if skipped > 0 {
        headline.push_str(&format!(" ({skipped} not evaluated)"));
    }
    headline
}

fn money(amount: Option<rust_decimal::Decimal>) -> String {
    amount
        .map(wallet_events::format_money)
        .unwrap_or_else(|| "–".to_owned())
}

fn facts_section(model: &RunModel) -> Markup {
    let s = &model.data.summary;
    let v = &s.versions;
    let c = &s.convergence;
    html! {
        section id="facts" {
            h2 { "Run" }
            table.facts {
                tr { th { "command" } td { code { (s.command) } } }
                tr { th { "scenario" } td { (s.scenario) ", seed " (s.seed) } }
                tr { th { "load" } td {
                    (format!("{:.1}", s.duration_s)) " s, " (s.users) " users, "
                    @if s.wallets > 0 { (s.wallets) " wallets, " }
                    @if s.rate > 0 { "paced at " (s.rate) " ops/s" } @else { "closed loop" }
                } }
                @if let Some(started) = s.started_at { tr { th { "started" } td { (started.format("%Y-%m-%d %H:%M:%S UTC")) } } }
                tr { th { "requests" } td { (s.totals.requests) " (" (format!("{:.1}", s.totals.rps)) " req/s)" } }
                tr { th { "faults" } td {
                    @if model.spans.is_empty() { "none" }
                    @for span in &model.spans {
                        (span.label()) " on " (span.target) " at " (format!("{:.1}", span.injected_s)) " s; "
                    }
                } }
                @if !model.skipped.is_empty() {
                    tr { th { "faults skipped" } td {
                        @for fault in &model.skipped {
                            "#" (fault.fault_id) " " (fault.kind) " on " (fault.target) ": " (fault.reason) "; "
                        }
                    } }
                }
                tr { th { "convergence" } td {
                    @if c.converged { "history caught up " (format!("{:.1}", c.took_ms as f64 / 1000.0)) " s after healing" }
                    @else { span.fail { "history did not catch up within " (c.bound_ms / 1000) " s" } }
                } }
                tr { th { "version" } td { "loadgen " (v.loadgen) ", commit " code { (v.commit) } } }
                tr { th { "machine" } td {
                    @if let Some(host) = &v.hostname { (host) ": " }
                    (v.os) "/" (v.arch) ", " (v.cpus) " CPUs"
                    @if let Some(mib) = v.memory_mib { ", " (format!("{:.1}", mib as f64 / 1024.0)) " GiB" }
                    @if let Some(kernel) = &v.kernel { ", kernel " (kernel) }
                } }
                tr { th { "run directory" } td { code { (model.data.dir.display()) } } }
                @if !model.data.missing.is_empty() {
                    tr { th { "missing files" } td.fail { (model.data.missing.join(", ")) } }
                }
            }
        }
    }
}

fn fault_legend(model: &RunModel) -> Markup {
    let mut kinds: Vec<FaultKind> = model.spans.iter().map(|s| s.kind).collect();
    kinds.sort();
    kinds.dedup();
    html! {
        @if !kinds.is_empty() {
            p.legend-faults {
                "Bands: fault from injection to recovery. "
                @for kind in kinds { span { i style=(format!("background:{}", faults::colour(kind))) {} (kind) } }
            }
        }
    }
}

/// A section: its anchor, heading, a note on how to read it, its body.
fn section(id: &str, title: &str, note: &str, body: Markup) -> Markup {
    html! {
        section id=(id) {
            h2 { (title) }
            @if !note.is_empty() { p.note { (note) } }
            (body)
        }
    }
}

fn latency_section(model: &RunModel, charts: &mut Charts) -> Markup {
    section(
        "latency",
        "Latency over time",
        "Per endpoint and second: p50, p90, p99 and max, measured from each operation's intended start \
         (so a stall shows as latency, not as missing requests). Log scale. Shift + scroll zooms, drag \
         pans; the toolbox zooms to a box and restores.",
        html! {
            (fault_legend(model))
            @if model.latency.is_empty() { p.fail { "No latency.hlog in this run directory." } }
            @for (endpoint, seconds) in &model.latency {
                (charts.chart(&charts::latency_over_time(endpoint, seconds, &model.spans, model.axis), ""))
            }
        },
    )
}

fn throughput_section(model: &RunModel, charts: &mut Charts) -> Markup {
    section(
        "throughput",
        "Throughput over time",
        "Responses completed per second over every endpoint: ok, failed (refused with a 4xx, or never \
         reached the service) and indeterminate (timeout or 5xx: may have applied).",
        html! {
            (fault_legend(model))
            @if model.throughput.is_empty() { p.fail { "No timeline.json in this run directory." } }
            @else { (charts.chart(&charts::throughput(&model.throughput, &model.spans, model.axis), "")) }
        },
    )
}

fn lag_section(model: &RunModel, charts: &mut Charts) -> Markup {
    section(
        "lag",
        "History lag",
        "For the events that became visible in history in each second: how long after their commit in \
         the wallet database (both times from the database servers' clocks). The grey area is the \
         backlog: committed, not yet visible. The dashed lines are the services' own figures for it, \
         scraped from their /metrics every second: the wallet's outbox backlog (committed, not yet \
         published) and the history consumers' lag (published, not yet consumed). The green line \
         marks when history had caught up after the faults were healed.",
        html! {
            @match &model.data.lag {
                None => p.fail { "No lag.json in this run directory." },
                Some(lag) => {
                    @let worst = lag.iter().filter_map(|s| s.max_ms).fold(0.0, f64::max);
                    @let backlog = lag.iter().map(|s| s.backlog).max().unwrap_or(0);
                    p { "Worst lag " strong { (format!("{:.1}", worst / 1000.0)) " s" } ", largest backlog " strong { (backlog) } " events"
                        @if let Some(at) = model.converged_at_s { ", converged at " strong { (format!("{at:.1}")) " s" } }
                        "."
                        @if let Some((backlog, lag)) = largest_own(&model.service_seconds) {
                            " By the services' own figures: largest outbox backlog " strong { (backlog) }
                            ", largest consumer lag " strong { (lag) } " events."
                        } }
                    (charts.chart(&charts::history_lag(lag, &model.service_seconds, &model.spans, model.axis, model.load_end_s, model.converged_at_s), "tall"))
                }
            }
        },
    )
}

/// The largest outbox backlog and consumer lag the services reported
/// (`-` for one never reported); `None` when the run scraped nothing.
fn largest_own(seconds: &[run_log::service_metrics::ServiceSecond]) -> Option<(String, String)> {
    let largest = |pick: fn(&run_log::service_metrics::ServiceSecond) -> Option<f64>| {
        seconds
            .iter()
            .filter_map(pick)
            .reduce(f64::max)
            .map_or("-".to_owned(), |v| format!("{v:.0}"))
    };
    (!seconds.is_empty()).then(|| (largest(|s| s.outbox_backlog), largest(|s| s.consumer_lag)))
}

fn distribution_section(model: &RunModel, charts: &mut Charts) -> Markup {
    section(
        "distribution",
        "Percentile distribution",
        "The whole load's latency per endpoint against percentile, HdrHistogram style: the x axis is \
         log(1 / (1 − percentile)), so 90 %, 99 %, 99.9 % … are evenly spaced and the tail gets the room.",
        html! {
            @if model.distributions.is_empty() { p.fail { "No latency.hlog in this run directory." } }
            @else { (charts.chart(&charts::distribution("Latency by percentile", &model.distributions), "tall")) }
        },
    )
}

pub fn endpoints_table(summary: &RunSummary) -> Markup {
    html! {
        table {
            tr {
                th { "endpoint" }
                @for h in ["count", "ok", "failed", "indet.", "dropped", "req/s", "min", "p50", "p75", "p90", "p99", "p99.9", "max", "mean"] { th.num { (h) } }
            }
            @for e in &summary.endpoints {
                tr {
                    td { code { (e.endpoint) } }
                    td.num { (e.count) } td.num { (e.ok) }
                    td.num { @if e.failed > 0 { span.fail { (e.failed) } } @else { "0" } }
                    td.num { @if e.indeterminate > 0 { span.fail { (e.indeterminate) } } @else { "0" } }
                    td.num { @if e.dropped > 0 { span.fail { (e.dropped) } } @else { "0" } }
                    td.num { (format!("{:.1}", e.rps)) }
                    @for v in [e.min_ms, e.p50_ms, e.p75_ms, e.p90_ms, e.p99_ms, e.p999_ms, e.max_ms, e.mean_ms] { td.num { (ms_cell(v)) } }
                }
            }
        }
    }
}

fn endpoints_section(summary: &RunSummary) -> Markup {
    section(
        "endpoints",
        "Endpoints",
        "Latency in milliseconds from the intended start, over the whole load.",
        endpoints_table(summary),
    )
}

fn errors_section(summary: &RunSummary) -> Markup {
    let mut errors = summary.errors.clone();
    errors.sort_by(|a, b| b.count.cmp(&a.count).then(a.endpoint.cmp(&b.endpoint)));
    section(
        "errors",
        "Errors by code",
        "",
        html! {
            @if errors.is_empty() { p.pass { "No request failed." } }
            @else {
                table {
                    tr { th { "endpoint" } th { "code" } th.num { "count" } }
                    @for e in &errors { tr { td { code { (e.endpoint) } } td { code { (e.code) } } td.num { (e.count) } } }
                }
            }
        },
    )
}

fn recovery_word(time: RecoveryTime) -> Markup {
    match time {
        RecoveryTime::Unaffected => html! { span.pass { "unaffected" } },
        RecoveryTime::After(seconds) => html! { (format!("{seconds:.1} s")) },
        RecoveryTime::NotWithinRun => html! { span.fail { "not before the load ended" } },
        RecoveryTime::NotBeforeNextFault => html! { span.fail { "not before the next fault" } },
        RecoveryTime::NoBaseline => html! { span.skip { "no baseline" } },
    }
}

fn recovery_section(model: &RunModel) -> Markup {
    html! {
        section id="recovery" {
            h2 { "Recovery after each fault" }
            p.note {
                "Times from the injection until the system's p99 and its ok responses per second were back at their level before the fault, for "
                (recovery::RECOVERY_HOLD_S) " seconds in a row. Baseline: the " (recovery::BASELINE_WINDOW_S)
                " s before the fault outside other faults; p99 counts as back within ×" (recovery::P99_TOLERANCE_FACTOR)
                " (or +" (recovery::P99_TOLERANCE_MS) " ms), throughput at ≥ " (recovery::THROUGHPUT_TOLERANCE * 100.0) " % of it. "
                "A fault is blamed only for slow seconds that begin before its recovery + " (recovery::ATTRIBUTION_GRACE_S)
                " s, and only until the next fault."
            }
            @if model.recoveries.is_empty() { p { "No faults were injected in this run." } }
            @else {
                table {
                    tr {
                        th { "fault" } th { "target" } th.num { "injected" } th.num { "healed after" } th.num { "healthy after" }
                        th.num { "baseline p99" } th.num { "p99 back after" } th.num { "baseline ok/s" } th.num { "throughput back after" }
                    }
                    @for r in &model.recoveries {
                        @let s = &r.span;
                        tr {
                            td { (s.label()) } td { (s.target) }
                            td.num { (format!("{:.1} s", s.injected_s)) }
                            td.num { (s.healed_s.map(|h| format!("{:.1} s", h - s.injected_s)).unwrap_or("never".into())) }
                            td.num { (s.recovered_s.map(|h| format!("{:.1} s", h - s.injected_s)).unwrap_or("–".into())) }
                            td.num { (r.baseline_p99_ms.map(ms_cell).unwrap_or("–".into())) }
                            td.num { (recovery_word(r.p99)) }
                            td.num { (r.baseline_ok_per_s.map(|t| format!("{t:.0}")).unwrap_or("–".into())) }
                            td.num { (recovery_word(r.throughput)) }
                        }
                    }
                }
            }
        }
    }
}

/// Milliseconds for a table cell.
pub fn ms_cell(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}
