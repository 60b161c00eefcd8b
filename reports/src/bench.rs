//! `bench.html`: the bench's `summary.json` as a page. The model and the
//! service side by side at full and half load, history's lag and catch-up,
//! CPU per transfer for each process, the load generator beside bare
//! goose, and every target with what was measured.

use maud::{Markup, html};
use run_log::bench::{BenchSummary, LoadFigures};

use crate::page;

fn load_row(label: &str, model: &LoadFigures, service: &LoadFigures) -> Markup {
    let rate = |f: &LoadFigures| {
        if f.rate == 0 {
            "closed loop".to_owned()
        } else {
            format!("{} /s arriving", f.rate)
        }
    };
    html! {
        tr {
            td { (label) } td { "model (pgbench)" } td { (rate(model)) }
            td.num { (model.transfers) } td.num { (format!("{:.1}", model.per_s)) }
            td.num { (page::ms_cell(model.p50_ms)) } td.num { (page::ms_cell(model.p99_ms)) } td.num { (page::ms_cell(model.max_ms)) }
        }
        tr {
            td { (label) } td { "service" } td { (rate(service)) }
            td.num { (service.transfers) } td.num { (format!("{:.1}", service.per_s)) }
            td.num { (page::ms_cell(service.p50_ms)) } td.num { (page::ms_cell(service.p99_ms)) } td.num { (page::ms_cell(service.max_ms)) }
        }
    }
}

pub fn bench_page(bench: &BenchSummary) -> Markup {
    let met = bench.checks.iter().filter(|c| c.passed).count();
    let title = "Bench: the wallet system against a SQL-only model";
    let subtitle = html! {
        (bench.clients) " clients, " (bench.wallets) " wallets, "
        (format!("{:.0}", bench.duration_s)) " s per phase, seed " (bench.seed)
        " · " (bench.versions.commit) " · " (bench.versions.cpus) " CPUs"
    };
    let nav = [
        ("targets", "Targets"),
        ("load", "Throughput and latency"),
        ("history", "History"),
        ("cpu", "CPU"),
        ("runs", "Runs"),
    ];
    let body = html! {
        section id="targets" {
            h2 { "Targets" }
            p { @if met == bench.checks.len() { span.pass { "Every target met." } } @else { span.fail { (bench.checks.len() - met) " of " (bench.checks.len()) " targets missed." } } }
            table {
                tr { th { "target" } th { "asked" } th { "measured" } th { "" } }
                @for check in &bench.checks {
                    tr {
                        td { (check.name) } td { (check.target) } td { (check.measured) }
                        td { @if check.passed { span.pass { "met" } } @else { span.fail { "missed" } } }
                    }
                }
            }
        }
        section id="load" {
            h2 { "Throughput and latency" }
            p.note {
                "Transfers per second and latency from each transfer's intended start. The model is pgbench running the same database work as a transfer (same schema, server, durability, clients and wallet choice) with no service in between. Service over model at full load: "
                strong { (format!("{:.2}x", bench.throughput_ratio)) } "."
            }
            table {
                tr { th { "load" } th { "who" } th { "arrivals" } th.num { "transfers" } th.num { "per s" } th.num { "p50 ms" } th.num { "p99 ms" } th.num { "max ms" } }
                (load_row("full", &bench.model.full, &bench.service.full))
                (load_row("half", &bench.model.half, &bench.service.half))
            }
        }
        section id="history" {
            h2 { "History" }
            table {
                tr { th { "figure" } th.num { "value" } }
                @if let Some(lag) = &bench.history_lag {
                    tr { td { "lag at half load, commit to visible: events" } td.num { (lag.events) } }
                    tr { td { "lag p50" } td.num { (page::ms_cell(lag.p50_ms)) " ms" } }
                    tr { td { "lag p99" } td.num { (page::ms_cell(lag.p99_ms)) " ms" } }
                    tr { td { "lag max" } td.num { (page::ms_cell(lag.max_ms)) " ms" } }
                }
                @if let Some(stages) = &bench.lag_stages {
                    tr { td { "of which commit to published (relay): p50 / p99" } td.num { (page::ms_cell(stages.relay.p50_ms)) " / " (page::ms_cell(stages.relay.p99_ms)) " ms" } }
                    tr { td { "published to visible (consumer): p50 / p99" } td.num { (page::ms_cell(stages.consumer.p50_ms)) " / " (page::ms_cell(stages.consumer.p99_ms)) " ms" } }
                }
                tr { td { "broker outage" } td.num { (format!("{:.1}", bench.outage_s)) " s" } }
                @match &bench.catch_up {
                    Some(c) => {
                        tr { td { "backlog at the broker's restart" } td.num { (c.backlog) " events" } }
                        tr { td { "caught up after the restart" } td.num { (format!("{:.2}", c.caught_up_s)) " s" } }
                        tr { td { "applied while catching up" } td.num { (format!("{:.0}", c.applied_per_s)) " events/s" } }
                        tr { td { "produced over the load" } td.num { (format!("{:.0}", c.produced_per_s)) " events/s" } }
                        tr { td { "catch-up rate" } td.num { (format!("{:.1}x", c.multiple)) " production" } }
                    }
                    None => { tr { td { "catch-up" } td.num { "no backlog measured" } } }
                }
            }
        }
        section id="cpu" {
            h2 { "CPU at full load" }
            p.note { "User + system CPU of each process while the full load ran, from /proc; PostgreSQL with all its backends." }
            table {
                tr { th { "process" } th.num { "CPU s" } th.num { "ms per transfer" } }
                @for p in &bench.cpu {
                    tr { td { (p.process.process) } td.num { (format!("{:.2}", p.process.cpu_s)) } td.num { (format!("{:.3}", p.ms_per_transfer)) } }
                }
            }
            h3 { "Load generator" }
            table {
                tr { th { "" } th.num { "CPU µs per request" } }
                tr { td { "loadgen (the transfer load)" } td.num { (format!("{:.1}", bench.loadgen.us_per_request)) } }
                tr { td { "bare goose, transfer-shaped requests answered after " (format!("{:.1}", bench.loadgen.matched_delay_ms)) " ms (" (bench.loadgen.matched_requests) " requests)" } td.num { (format!("{:.1}", bench.loadgen.matched_us_per_request)) } }
                tr { td { "bare goose, trivial endpoint answered at once (" (bench.loadgen.goose_requests) " requests)" } td.num { (format!("{:.1}", bench.loadgen.goose_us_per_request)) } }
                tr { td { "ratio (loadgen over the matched floor)" } td.num { (format!("{:.2}x", bench.loadgen.ratio)) } }
            }
        }
        section id="runs" {
            h2 { "Runs" }
            p.note { "Each service phase is a full run, checked by the consistency checker; its report is in its directory." }
            ul { @for run in &bench.runs { li { a href=(format!("{run}/report.html")) { (run) } } } }
            p { "Command: " code { (bench.command) } }
        }
    };
    page::layout(title, subtitle, &nav, body)
}
