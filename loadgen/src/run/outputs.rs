//! What a run leaves in its directory besides the operation log and the
//! fault timeline: `command.txt` and `config.json` before the load;
//! `latency.hlog`, `timeline.json`, `lag.json`, `summary.json` and, for CI
//! systems, `junit.xml` and `summary.md` after the checks; then
//! `report.html`, rendered from the directory alone.

use std::{
    io::{BufWriter, Write},
    path::Path,
};

use anyhow::Context;
use harness::system::System;
use run_log::{
    checker::Report,
    summary::{
        Convergence, EndpointSummary, RunSummary, ThresholdsSummary, Totals, Verdict, Versions,
    },
};
use serde_json::json;

use super::{liveness::connect, plan::Plan, safety::Load};
use crate::{cli::RunArgs, thresholds};

/// `command.txt` and `config.json`: what runs, before it runs.
pub fn write_config(plan: &Plan, system: &System, versions: &Versions) -> anyhow::Result<()> {
    write_json(
        &plan.run_dir.join("config.json"),
        &json!({
            "command": plan.command,
            "seed": plan.seed,
            "scenario": plan.scenario,
            "faults": plan.faults,
            "system": {
                "wallet_url": system.wallet_url,
                "history_url": system.history_url,
                "wallet_urls": system.wallet_urls(),
                "history_urls": system.history_urls(),
                "kafka_brokers": system.kafka_brokers,
                "topic": system.options.topic,
                "partitions": system.options.partitions,
                "session_timeout_ms": system.options.session_timeout_ms,
                "wallet_db": system.wallet_db,
                "history_db": system.history_db,
            },
            "versions": versions,
        }),
    )?;
    let path = plan.run_dir.join("command.txt");
    std::fs::write(&path, format!("{}\n", plan.command))
        .with_context(|| format!("writing {}", path.display()))
}

/// The figures of the run; returns the thresholds it missed.
pub async fn write_results(
    args: &RunArgs,
    plan: &Plan,
    system: &System,
    load: &Load,
    convergence: Convergence,
    report: &Report,
    versions: Versions,
) -> anyhow::Result<Vec<String>> {
    let dir = &plan.run_dir;
    let summaries = load.recorder.summaries(load.seconds);
    let missed = thresholds::missed(&super::parse_thresholds(args)?, &summaries);
    let mut hlog = BufWriter::new(std::fs::File::create(dir.join("latency.hlog"))?);
    load.recorder.write_interval_log(&mut hlog)?;
    hlog.flush()?;
    write_json(&dir.join("timeline.json"), &json!(load.recorder.timeline()))?;
    let (lag, history_lag) = history_lag(system, load.started_wall).await?;
    write_json(&dir.join("lag.json"), &json!(lag))?;
    let scenario = &plan.scenario;
    let summary = RunSummary {
        scenario: scenario.name.clone(),
        seed: plan.seed,
        command: plan.command.clone(),
        users: scenario.users,
        wallets: scenario.wallets,
        rate: scenario.rate,
        started_at: Some(load.started_wall),
        duration_s: load.seconds,
        totals: Totals {
            requests: summaries.iter().map(|s| s.count).sum(),
            rps: summaries.iter().map(|s| s.rps).sum(),
        },
        endpoints: summaries,
        errors: load.recorder.errors(),
        convergence,
        faults: run_log::fault_windows(load.chaos_log.events()),
        verdict: Verdict {
            passed: report.passed,
            violated: report
                .violated()
                .iter()
                .map(|i| i.as_str().to_owned())
                .collect(),
        },
        thresholds: ThresholdsSummary {
            checked: args.thresholds.clone(),
            missed: missed.clone(),
        },
        versions,
        cpu: load.cpu.clone(),
        history_lag,
    };
    write_json(&dir.join("summary.json"), &json!(summary))?;
    write_text(
        &dir.join("junit.xml"),
        &run_log::ci::junit_xml(&summary, report)?,
    )?;
    write_text(
        &dir.join("summary.md"),
        &run_log::ci::markdown(&summary, report),
    )?;
    print_summary(&summary.endpoints, load.seconds);
    if !summary.cpu.is_empty() {
        let parts: Vec<String> = summary
            .cpu
            .iter()
            .map(|p| format!("{} {:.1} s", p.process, p.cpu_s))
            .collect();
        println!("CPU while the load ran: {}", parts.join(", "));
    }
    if let Some(lag) = &summary.history_lag {
        println!(
            "history lag (commit to visible) over {} events: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            lag.events, lag.p50_ms, lag.p99_ms, lag.max_ms
        );
    }
    println!("run directory: {}", dir.display());
    Ok(missed)
}

/// The report shows the verdict; it does not decide it, so a rendering
/// failure is reported but leaves the exit code to the checks.
pub fn render_report(run_dir: &Path) {
    match reports::write_run_report(run_dir, None) {
        Ok(written) => println!(
            "report: {} ({:.0} KiB)",
            written.path.display(),
            written.bytes as f64 / 1024.0
        ),
        Err(err) => eprintln!("warning: could not render report.html: {err:#}"),
    }
}

fn print_summary(summaries: &[EndpointSummary], seconds: f64) {
    println!(
        "{:<30} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9}",
        "endpoint",
        "count",
        "ok",
        "failed",
        "indet.",
        "dropped",
        "req/s",
        "p50 ms",
        "p99 ms",
        "max ms"
    );
    for s in summaries {
        println!(
            "{:<30} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8.1} {:>9.1} {:>9.1} {:>9.1}",
            s.endpoint,
            s.count,
            s.ok,
            s.failed,
            s.indeterminate,
            s.dropped,
            s.rps,
            s.p50_ms,
            s.p99_ms,
            s.max_ms
        );
    }
    let total: u64 = summaries.iter().map(|s| s.count).sum();
    println!(
        "{total} requests in {seconds:.1} s: {:.1} req/s",
        total as f64 / seconds.max(0.001)
    );
}

fn write_json(path: &Path, value: &serde_json::Value) -> anyhow::Result<()> {
    write_text(path, &(serde_json::to_string_pretty(value)? + "\n"))
}

fn write_text(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// What ran, and where: the source tree's commit (see [`source_commit`])
/// and the machine.
pub fn versions() -> Versions {
    let commit = std::env::current_dir()
        .ok()
        .and_then(|dir| source_commit(&dir, Path::new(env!("CARGO_MANIFEST_DIR"))))
        .unwrap_or_else(|| "unknown".to_owned());
    let memory_mib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            let kib: u64 = info
                .lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()?;
            Some(kib / 1024)
        });
    Versions {
        loadgen: env!("CARGO_PKG_VERSION").to_owned(),
        commit,
        os: std::env::consts::OS.to_owned(),
        arch: std::env::consts::ARCH.to_owned(),
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        hostname: std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned()),
        memory_mib,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()
            .map(|k| k.trim().to_owned()),
    }
}

/// `git describe --always --dirty` of the checkout the command runs in
/// (`cwd`, as `cargo run` leaves it) when that is this project's; of the
/// one the binary was compiled in (`compiled_in`) only when it is not. The
/// build cache judges sources by content, so one binary serves every clone
/// of the same sources, and the clone it was compiled in may hold another
/// commit by now (a CI run of one commit recorded the commit of the clone
/// before it).
fn source_commit(cwd: &Path, compiled_in: &Path) -> Option<String> {
    let git = |dir: &Path, args: &[&str]| -> Option<String> {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()?;
        let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
        (out.status.success() && !text.is_empty()).then_some(text)
    };
    let this_project = |dir: &Path| -> Option<std::path::PathBuf> {
        let top = std::path::PathBuf::from(git(dir, &["rev-parse", "--show-toplevel"])?);
        top.join("loadgen/src/run/outputs.rs")
            .is_file()
            .then_some(top)
    };
    let top = this_project(cwd).or_else(|| this_project(compiled_in))?;
    git(&top, &["describe", "--always", "--dirty"])
}

/// How long each event took from its commit in the wallet database to
/// being visible in history, folded per second (`lag.json`), and over the
/// load's events as a whole. Both times come from the database servers'
/// clocks.
async fn history_lag(
    system: &System,
    load_started: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<(
    Vec<run_log::summary::LagSecond>,
    Option<run_log::summary::LagStats>,
)> {
    let origin = load_started.timestamp_micros() as f64 / 1e6;
    let relative: Vec<(f64, f64)> = history_event_times(&system.history_db)
        .await?
        .into_iter()
        .map(|e| (e.committed - origin, e.applied - origin))
        .collect();
    Ok((
        run_log::summary::lag_series(&relative),
        run_log::summary::lag_stats(&relative, 0.0),
    ))
}

/// An applied event's commit time (the wallet's) and the time it became
/// visible in history, in seconds since the epoch; both stamps come from
/// the one server's clock when both databases share it.
pub struct EventTimes {
    pub event_id: uuid::Uuid,
    pub committed: f64,
    pub applied: f64,
}

/// Every applied event's times: the one reader of history lag, for a
/// run's `lag.json` and summary and for the bench's catch-up and stages.
pub async fn history_event_times(history_db: &str) -> anyhow::Result<Vec<EventTimes>> {
    let mut connection = connect(history_db).await?;
    let rows: Vec<(uuid::Uuid, f64, f64)> = sqlx::query_as(
        "SELECT event_id, EXTRACT(EPOCH FROM committed_at)::float8,
                EXTRACT(EPOCH FROM applied_at)::float8
         FROM history_entries",
    )
    .fetch_all(&mut connection)
    .await
    .context("reading each event's commit and visible times from history")?;
    Ok(rows
        .into_iter()
        .map(|(event_id, committed, applied)| EventTimes {
            event_id,
            committed,
            applied,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// A repository with one commit holding `files`.
    fn repo(files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for file in files {
            let path = dir.path().join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, "x").unwrap();
        }
        git(dir.path(), &["init", "-q"]);
        git(dir.path(), &["add", "-A"]);
        git(
            dir.path(),
            &[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "commit",
                "-q",
                "-m",
                "one",
            ],
        );
        dir
    }

    #[test]
    fn the_commit_is_the_checkout_the_command_runs_in_when_it_is_this_project() {
        let clone = repo(&["loadgen/src/run/outputs.rs", "README.md"]);
        let compiled_in = repo(&["loadgen/src/run/outputs.rs"]);
        let head = git(clone.path(), &["rev-parse", "--short", "HEAD"]);
        assert_ne!(
            head,
            git(compiled_in.path(), &["rev-parse", "--short", "HEAD"])
        );
        // From a subdirectory too, as `cargo run` may be.
        let sub = clone.path().join("loadgen");
        assert_eq!(source_commit(&sub, compiled_in.path()), Some(head.clone()));
        std::fs::write(clone.path().join("README.md"), "changed").unwrap();
        assert_eq!(
            source_commit(clone.path(), compiled_in.path()),
            Some(format!("{head}-dirty"))
        );
    }

    #[test]
    fn another_repository_or_none_falls_back_to_where_the_binary_was_compiled() {
        let other = repo(&["src/main.rs"]);
        let compiled_in = repo(&["loadgen/src/run/outputs.rs"]);
        let built = git(compiled_in.path(), &["rev-parse", "--short", "HEAD"]);
        assert_eq!(
            source_commit(other.path(), compiled_in.path()),
            Some(built.clone())
        );
        let plain = tempfile::tempdir().unwrap();
        assert_eq!(source_commit(plain.path(), compiled_in.path()), Some(built));
        assert_eq!(source_commit(plain.path(), plain.path()), None);
    }
}
