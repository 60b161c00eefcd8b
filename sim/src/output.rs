//! A simulated run's directory, in the live run's formats (run-log owns
//! them all), so `reports render` draws it like a live run, in simulated
//! time: `ops.jsonl`, `chaos.jsonl`, `checker.json`, `summary.json`,
//! `latency.hlog`, `timeline.json`, plus `trace.jsonl` (every event of the
//! run) and `config.json` (the configuration and the fault plan).

use std::{
    io::{BufWriter, Write},
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use anyhow::Context;
use run_log::{
    OpKind,
    recorder::Recorder,
    summary::{RunSummary, ThresholdsSummary, Totals, Verdict, Versions},
};
use serde_json::json;

use crate::run::{SeedOutcome, SimConfig};

const TRANSFER: &str = "POST /wallets/{id}/transfer";
const FUND: &str = "POST /wallets/{id}/fund";
const GET_WALLET: &str = "GET /wallets/{id}";

/// Writes `outcome`'s run directory under `out_dir`; returns its path.
pub fn write_run(
    out_dir: &Path,
    config: &SimConfig,
    outcome: &SeedOutcome,
    real: Duration,
) -> anyhow::Result<PathBuf> {
    let dir = out_dir.join(format!("sim-seed{}", outcome.seed));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let command: Vec<String> = std::env::args().collect();
    std::fs::write(dir.join("command.txt"), command.join(" ") + "\n")?;
    write_json(
        &dir.join("config.json"),
        &json!({
            "seed": outcome.seed,
            "simulated": true,
            "scenario": config.scenario,
            "wallet_instances": config.wallet_instances,
            "history_instances": config.history_instances,
            "swarm": config.swarm,
            "fault_plan": outcome.plan,
            "trace_hash": format!("{:016x}", outcome.trace_hash),
            "real_ms": real.as_millis() as u64,
        }),
    )?;
    run_log::write_jsonl_file(&dir.join("ops.jsonl"), &outcome.ops)?;
    run_log::write_jsonl_file(&dir.join("chaos.jsonl"), &outcome.chaos)?;
    std::fs::write(
        dir.join("trace.jsonl"),
        outcome.trace_lines.join("\n") + "\n",
    )?;
    if let Some(report) = &outcome.report {
        write_json(&dir.join("checker.json"), &serde_json::to_value(report)?)?;
    }
    write_figures(&dir, config, outcome)?;
    Ok(dir)
}

/// latency.hlog, timeline.json and summary.json from the operation log.
fn write_figures(dir: &Path, config: &SimConfig, outcome: &SeedOutcome) -> anyhow::Result<()> {
    let op_id_base = 2 * u64::from(config.scenario.wallets);
    let load: Vec<_> = outcome
        .ops
        .iter()
        .filter(|op| op.op_id >= op_id_base)
        .collect();
    let started_at = load.iter().map(|op| op.intended_at).min();
    let origin = started_at.unwrap_or_default();
    let recorder = Recorder::new(SystemTime::from(origin));
    for op in &load {
        let endpoint = match op.kind {
            OpKind::Transfer => TRANSFER,
            OpKind::Fund => FUND,
            OpKind::GetWallet | OpKind::GetHistory | OpKind::CreateWallet => GET_WALLET,
        };
        let end_ms =
            (op.intended_at - origin).num_milliseconds().max(0) as u64 + op.latency_us / 1000;
        let latency = Duration::from_micros(op.latency_us);
        recorder.record(
            end_ms / 1000,
            endpoint,
            op.outcome,
            latency,
            op.error_code.as_deref(),
        );
    }
    let mut hlog = BufWriter::new(std::fs::File::create(dir.join("latency.hlog"))?);
    recorder.write_interval_log(&mut hlog)?;
    hlog.flush()?;
    write_json(&dir.join("timeline.json"), &json!(recorder.timeline()))?;
    let seconds = config.scenario.duration.as_secs_f64();
    let endpoints = recorder.summaries(seconds);
    let report = outcome.report.as_ref();
    let summary = RunSummary {
        scenario: format!("{} (simulated)", config.scenario.name),
        seed: outcome.seed,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        users: config.scenario.users,
        wallets: config.scenario.wallets,
        rate: config.scenario.rate,
        started_at,
        duration_s: seconds,
        totals: Totals {
            requests: endpoints.iter().map(|e| e.count).sum(),
            rps: endpoints.iter().map(|e| e.rps).sum(),
        },
        endpoints,
        errors: recorder.errors(),
        convergence: outcome
            .convergence
            .unwrap_or(run_log::summary::Convergence {
                converged: false,
                took_ms: 0,
                bound_ms: 0,
                started_offset_ms: None,
            }),
        faults: run_log::fault_windows(&outcome.chaos),
        verdict: Verdict {
            passed: outcome.passed(),
            violated: outcome.violated(),
        },
        thresholds: ThresholdsSummary {
            checked: Vec::new(),
            missed: Vec::new(),
        },
        versions: Versions {
            loadgen: env!("CARGO_PKG_VERSION").to_owned(),
            commit: "simulated".to_owned(),
            os: std::env::consts::OS.to_owned(),
            arch: std::env::consts::ARCH.to_owned(),
            cpus: 1,
            hostname: None,
            memory_mib: None,
            kernel: None,
        },
        // Simulated processes share one thread: no CPU of their own.
        cpu: Vec::new(),
        history_lag: None,
    };
    let _ = report;
    write_json(&dir.join("summary.json"), &serde_json::to_value(&summary)?)
}

fn write_json(path: &Path, value: &serde_json::Value) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}
