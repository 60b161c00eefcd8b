//! Two runs side by side: per-endpoint deltas of p50, p99 and throughput
//! taken straight from the two `summary.json` files, regressions
//! highlighted, both verdicts, and the percentile distributions overlaid.

use maud::{Markup, html};

use crate::{
    charts, latency,
    page::{self, Charts},
    run_dir::RunData,
};
use run_log::summary::{EndpointSummary, RunSummary};

/// A latency more than this much higher (relative) is a regression, a
/// throughput this much lower too; the mirror image is an improvement.
pub const REGRESSION_RELATIVE: f64 = 0.10;
/// Latency changes smaller than this (ms) are noise whatever their ratio.
pub const REGRESSION_MIN_MS: f64 = 1.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Regression,
    Improvement,
    Same,
}

/// One figure of one endpoint in both runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Delta {
    pub base: f64,
    pub new: f64,
    pub change: Change,
}

impl Delta {
    fn latency(base: f64, new: f64) -> Self {
        let diff = new - base;
        let change = if diff.abs() < REGRESSION_MIN_MS || diff.abs() <= base * REGRESSION_RELATIVE {
            Change::Same
        } else if diff > 0.0 {
            Change::Regression
        } else {
            Change::Improvement
        };
        Self { base, new, change }
    }

    fn throughput(base: f64, new: f64) -> Self {
        let diff = new - base;
        let change = if diff.abs() <= base * REGRESSION_RELATIVE {
            Change::Same
        } else if diff < 0.0 {
            Change::Regression
        } else {
            Change::Improvement
        };
        Self { base, new, change }
    }

    pub fn absolute(&self) -> f64 {
        self.new - self.base
    }

    /// Relative change in percent; `None` from a zero base.
    pub fn relative_percent(&self) -> Option<f64> {
        (self.base != 0.0).then(|| (self.new - self.base) / self.base * 100.0)
    }
}

/// The deltas of one endpoint; `None` where only one run has it.
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointDelta {
    pub endpoint: String,
    pub p50_ms: Option<Delta>,
    pub p99_ms: Option<Delta>,
    pub rps: Option<Delta>,
}

/// Per endpoint of either run (base order, then the new run's extras),
/// plus the totals' throughput as the last row.
pub fn deltas(base: &RunSummary, new: &RunSummary) -> Vec<EndpointDelta> {
    let find = |summary: &RunSummary, endpoint: &str| -> Option<EndpointSummary> {
        summary
            .endpoints
            .iter()
            .find(|e| e.endpoint == endpoint)
            .cloned()
    };
    let mut names: Vec<String> = base.endpoints.iter().map(|e| e.endpoint.clone()).collect();
    for e in &new.endpoints {
        if !names.contains(&e.endpoint) {
            names.push(e.endpoint.clone());
        }
    }
    let mut rows: Vec<EndpointDelta> = names
        .into_iter()
        .map(|name| {
            let (b, n) = (find(base, &name), find(new, &name));
            let pair = |pick: fn(&EndpointSummary) -> f64, make: fn(f64, f64) -> Delta| {
                Some(make(pick(b.as_ref()?), pick(n.as_ref()?)))
            };
            EndpointDelta {
                p50_ms: pair(|e| e.p50_ms, Delta::latency),
                p99_ms: pair(|e| e.p99_ms, Delta::latency),
                rps: pair(|e| e.rps, Delta::throughput),
                endpoint: name,
            }
        })
        .collect();
    rows.push(EndpointDelta {
        endpoint: "all endpoints".to_owned(),
        p50_ms: None,
        p99_ms: None,
        rps: Some(Delta::throughput(base.totals.rps, new.totals.rps)),
    });
    rows
}

fn delta_cells(delta: Option<Delta>) -> Markup {
    match delta {
        None => html! { td.num { "–" } td.num { "–" } td.num { "–" } },
        Some(d) => {
            let class = match d.change {
                Change::Regression => "num regression",
                Change::Improvement => "num improvement",
                Change::Same => "num",
            };
            html! {
                td.num { (format!("{:.1}", d.base)) }
                td.num { (format!("{:.1}", d.new)) }
                td class=(class) {
                    (format!("{:+.1}", d.absolute()))
                    @if let Some(pct) = d.relative_percent() { " (" (format!("{pct:+.1}")) " %)" }
                }
            }
        }
    }
}

fn run_facts(label: &str, data: &RunData) -> Markup {
    let s = &data.summary;
    html! {
        tr {
            th { (label) }
            td { code { (data.name()) } }
            td { (s.scenario) ", seed " (s.seed) ", " (s.users) " users, " (format!("{:.1}", s.duration_s)) " s, " (s.faults.len()) " faults" }
            td { @if s.verdict.passed { span.pass { "passed" } } @else { span.fail { "FAILED: " (s.verdict.violated.join(", ")) } } }
            td { code { (s.command) } }
        }
    }
}

pub fn compare_page(base: &RunData, new: &RunData) -> Markup {
    let rows = deltas(&base.summary, &new.summary);
    let mut charts = Charts::default();
    let regressions = rows
        .iter()
        .flat_map(|r| [r.p50_ms, r.p99_ms, r.rps])
        .flatten()
        .filter(|d| d.change == Change::Regression)
        .count();
    let title = format!(
        "Comparison: {} vs {}",
        base.summary.scenario, new.summary.scenario
    );
    let subtitle = html! { "base " (base.name()) " → new " (new.name()) };
    let nav = [
        ("runs", "Runs"),
        ("deltas", "Deltas"),
        ("distributions", "Distributions"),
    ];
    let body = html! {
        section id="runs" {
            h2 { "Runs and verdicts" }
            table {
                tr { th { "" } th { "run" } th { "load" } th { "verdict" } th { "command" } }
                (run_facts("base", base))
                (run_facts("new", new))
            }
        }
        section id="deltas" {
            h2 { "Per-endpoint deltas (new − base)" }
            p.note {
                "From the two summary.json files. Highlighted as a regression: latency up by more than "
                (REGRESSION_RELATIVE * 100.0) " % (and at least " (REGRESSION_MIN_MS) " ms), throughput down by more than "
                (REGRESSION_RELATIVE * 100.0) " %; the mirror image as an improvement."
            }
            p { @if regressions == 0 { span.pass { "No regressions." } } @else { span.fail { (regressions) " regression" @if regressions != 1 { "s" } "." } } }
            table {
                tr {
                    th { "endpoint" }
                    th.num { "p50 base" } th.num { "p50 new" } th.num { "Δ ms" }
                    th.num { "p99 base" } th.num { "p99 new" } th.num { "Δ ms" }
                    th.num { "req/s base" } th.num { "req/s new" } th.num { "Δ req/s" }
                }
                @for row in &rows {
                    tr { td { code { (row.endpoint) } } (delta_cells(row.p50_ms)) (delta_cells(row.p99_ms)) (delta_cells(row.rps)) }
                }
            }
        }
        section id="distributions" {
            h2 { "Percentile distributions, overlaid" }
            p.note { "Per endpoint, the whole load's latency against percentile (log axis of 1 / (1 − percentile))." }
            div.grid2 {
                @for row in rows.iter().filter(|r| r.p50_ms.is_some()) {
                    @let lines: Vec<_> = [("base", base), ("new", new)].iter().filter_map(|(label, run)| {
                        let histogram = run.latency_of(&row.endpoint)?.total();
                        Some(((*label).to_owned(), latency::distribution(&histogram)))
                    }).collect();
                    @if !lines.is_empty() { (charts.chart(&charts::distribution(&row.endpoint, &lines), "tall")) }
                }
            }
        }
        section {
            h2 { "Endpoints: base" } (page::endpoints_table(&base.summary))
            h2 { "Endpoints: new" } (page::endpoints_table(&new.summary))
        }
    };
    page::layout(&title, subtitle, &nav, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_regressions_need_ten_percent_and_a_millisecond() {
        assert_eq!(Delta::latency(100.0, 111.0).change, Change::Regression);
        assert_eq!(Delta::latency(100.0, 109.0).change, Change::Same);
        assert_eq!(Delta::latency(100.0, 80.0).change, Change::Improvement);
        // 2 ms → 2.5 ms is +25 % but under a millisecond: noise.
        assert_eq!(Delta::latency(2.0, 2.5).change, Change::Same);
        assert_eq!(Delta::throughput(500.0, 400.0).change, Change::Regression);
        assert_eq!(Delta::throughput(500.0, 600.0).change, Change::Improvement);
        let d = Delta::latency(50.0, 75.0);
        assert_eq!(d.absolute(), 25.0);
        assert_eq!(d.relative_percent(), Some(50.0));
        assert_eq!(Delta::throughput(0.0, 5.0).relative_percent(), None);
    }
}
