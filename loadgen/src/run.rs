//! `loadgen run`: one seeded experiment from start to verdict.
//!
//! 1. Provision: private PostgreSQL and broker unless pointed elsewhere,
//!    fresh databases, the wallet and history processes.
//! 2. Seed the wallets the seed defines.
//! 3. Load + chaos (the safety phase): the goose attack runs while the
//!    fault plan kills and restarts processes.
//! 4. Heal and converge (the liveness phase): every process up, then wait
//!    for the outbox to drain and history to catch up.
//! 5. Check every invariant; the verdict is the exit code.
//! 6. Write `summary.json` and `lag.json` next to the operation log, the
//!    latency interval log, the fault timeline, `checker.json` and every
//!    process's log, then render them into `report.html`.

use std::{
    io::{BufWriter, IsTerminal, Write},
    path::{Path, PathBuf},
    process::ExitCode,
    sync::{Arc, atomic::AtomicU64},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use chaos::{
    log::ChaosLog,
    plan::{FaultMenu, PlannedFault},
    runner::ChaosStatus,
};
use harness::system::{Launcher, System, SystemOptions};
use run_log::{
    Attempt, OpKind, OpRecord, Outcome,
    summary::{
        ConvergenceSummary, EndpointSummary, RunSummary, ThresholdsSummary, Totals, Verdict,
        Versions,
    },
};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{
    attack::{self, LoadContext},
    cli::RunArgs,
    recorder::Recorder,
    scenario::{self, Scenario},
    thresholds,
    workload::Workload,
};

pub const EXIT_VIOLATED: u8 = 1;
pub const EXIT_HARNESS: u8 = 2;
pub const EXIT_THRESHOLD: u8 = 3;

/// Wallet creations and fundings in flight at once during set-up.
const SETUP_CONCURRENCY: usize = 16;
/// How often convergence is polled.
const CONVERGE_POLL_MS: u64 = 250;

struct Plan {
    scenario: Scenario,
    seed: u64,
    faults: Vec<PlannedFault>,
    run_dir: PathBuf,
    command: String,
}

pub async fn run(args: RunArgs, interrupted: CancellationToken) -> anyhow::Result<ExitCode> {
    let plan = prepare(&args)?;
    println!(
        "seed {}   (replay: {} --seed {})",
        plan.seed,
        plan.command
            .split(" --seed")
            .next()
            .unwrap_or(&plan.command),
        plan.seed
    );
    println!("command: {}", plan.command);
    println!("run directory: {}", plan.run_dir.display());
    let s = &plan.scenario;
    println!(
        "scenario {}: {} wallets, {} users, {}, {}, {} faults",
        s.name,
        s.wallets,
        s.users,
        humantime::format_duration(s.duration),
        if s.rate == 0 {
            "closed loop".to_owned()
        } else {
            format!("{} ops/s", s.rate)
        },
        plan.faults.len()
    );
    if !plan.faults.is_empty() {
        for line in chaos::plan::describe(&plan.faults).lines() {
            println!("  fault {line}");
        }
    }

    println!("provisioning PostgreSQL, broker, wallet, history ...");
    let mut system = System::start(system_options(&args, &plan)?)
        .await
        .context("provisioning the system")?;
    let outcome = experiment(&args, &plan, &mut system, &interrupted).await;
    println!("stopping every process ...");
    let stopped = system.shutdown().await;
    let code = outcome?;
    stopped.context("stopping the system")?;
    Ok(code)
}

fn prepare(args: &RunArgs) -> anyhow::Result<Plan> {
    let mut scenario = match &args.scenario_file {
        Some(path) => scenario::from_file(path)?,
        None => scenario::find_builtin(&args.scenario)?,
    };
    if let Some(duration) = args.duration {
        scenario.duration = duration;
    }
    if let Some(users) = args.users {
        scenario.users = users;
    }
    if let Some(rate) = args.rate {
        scenario.rate = rate;
    }
    if let Some(wallets) = args.wallets {
        scenario.wallets = wallets;
    }
    if args.no_faults {
        scenario.faults.enabled = false;
    }
    if args.faults {
        scenario.faults.enabled = true;
    }
    scenario.validate()?;
    for threshold in &args.thresholds {
        thresholds::parse(threshold)?;
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    let load_ms = scenario.duration.as_millis() as u64;
    let faults = if !scenario.faults.enabled {
        Vec::new()
    } else if !scenario.faults.schedule.is_empty() {
        chaos::plan::explicit(
            scenario
                .faults
                .schedule
                .iter()
                .map(|f| (f.at.as_millis() as u64, f.kind, f.hold.as_millis() as u64))
                .collect(),
        )
    } else {
        let menu = FaultMenu {
            weights: scenario.faults.menu.clone(),
            count: scenario.faults.count,
        };
        chaos::plan::plan_faults(
            seed,
            &menu,
            load_ms,
            u64::from(args.infra.session_timeout_ms),
        )
    };
    let mut command: Vec<String> = std::env::args().collect();
    if args.seed.is_none() {
        command.push(format!("--seed {seed}"));
    }
    let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S");
    let run_dir = args
        .out_dir
        .join(format!("{stamp}-{}-seed{seed}", scenario.name));
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    Ok(Plan {
        scenario,
        seed,
        faults,
        run_dir,
        command: command.join(" "),
    })
}

fn system_options(args: &RunArgs, plan: &Plan) -> anyhow::Result<SystemOptions> {
    let exe = std::env::current_exe().context("locating this executable")?;
    let mut options = SystemOptions::isolated(&plan.run_dir, Launcher::multi_call(exe));
    options.database_url = args.infra.database_url.clone();
    options.kafka_brokers = args.infra.kafka_brokers.clone();
    options.partitions = args.infra.partitions;
    options.session_timeout_ms = args.infra.session_timeout_ms;
    options.service_env.push((
        "RUST_LOG".into(),
        "info,sqlx=warn,tower_http=warn,rdkafka=warn".into(),
    ));
    Ok(options)
}

async fn experiment(
    args: &RunArgs,
    plan: &Plan,
    system: &mut System,
    interrupted: &CancellationToken,
) -> anyhow::Result<ExitCode> {
    let scenario = &plan.scenario;
    // Read once (it asks git): config.json and summary.json share it.
    let versions = versions();
    write_json(
        &plan.run_dir.join("config.json"),
        &json!({
            "command": plan.command,
            "seed": plan.seed,
            "scenario": scenario,
            "faults": plan.faults,
            "system": {
                "wallet_url": system.wallet_url,
                "history_url": system.history_url,
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
    std::fs::write(
        plan.run_dir.join("command.txt"),
        format!("{}\n", plan.command),
    )?;

    let workload = Workload::new(plan.seed, scenario);
    let ops_file = BufWriter::new(std::fs::File::create(plan.run_dir.join("ops.jsonl"))?);
    let (ops_tx, ops_rx) = mpsc::unbounded_channel::<OpRecord>();
    let writer = tokio::spawn(write_ops(ops_file, ops_rx));

    println!("seeding {} wallets ...", scenario.wallets);
    let wallet_ids = seed_wallets(&workload, plan.seed, &system.wallet_url, &ops_tx).await?;

    // The safety phase: load and faults together.
    let load_start = Instant::now();
    let recorder = Arc::new(Recorder::new(load_start));
    let users = u64::from(scenario.users);
    let context = Arc::new(LoadContext {
        workload,
        seed: plan.seed,
        wallet_ids,
        wallet_url: system.wallet_url.clone(),
        history_url: system.history_url.clone(),
        users,
        slot_interval: (scenario.rate > 0)
            .then(|| Duration::from_secs_f64(users as f64 / f64::from(scenario.rate))),
        op_id_base: 2 * u64::from(scenario.wallets),
        recorder: recorder.clone(),
        ops: ops_tx.clone(),
        next_slot: (0..users).map(|_| AtomicU64::new(0)).collect(),
        started_wall: chrono::Utc::now(),
    });
    let context_started_wall = context.started_wall;
    drop(ops_tx);
    let status = Arc::new(ChaosStatus::new());
    let mut chaos_log = ChaosLog::create(
        plan.run_dir.join("chaos.jsonl"),
        load_start,
        context.started_wall,
    )?;
    let stop_chaos = interrupted.clone();
    println!(
        "load + chaos for {} ...",
        humantime::format_duration(scenario.duration)
    );
    let progress = tokio::spawn(show_progress(
        recorder.clone(),
        status.clone(),
        scenario.duration,
        interrupted.clone(),
    ));
    let (attack_result, chaos_result) = tokio::join!(
        attack::run(context.clone(), scenario.duration),
        chaos::runner::run_plan(system, &plan.faults, &mut chaos_log, &status, &stop_chaos),
    );
    let load_seconds = load_start.elapsed().as_secs_f64();
    progress.abort();
    drop(context);
    attack_result.context("the load")?;
    chaos_result.context("the chaos schedule")?;
    if interrupted.is_cancelled() {
        bail!("interrupted");
    }

    // The liveness phase: heal everything, then wait for history.
    println!(
        "healing every process, then waiting for history to converge (bound {}) ...",
        humantime::format_duration(args.converge_timeout)
    );
    chaos::runner::heal_all(system, Some(&mut chaos_log)).await?;
    let converge_started_ms = load_start.elapsed().as_millis() as u64;
    let convergence = converge(system, args.converge_timeout, interrupted).await?;
    println!(
        "{} in {:.1} s",
        if convergence.converged {
            "converged"
        } else {
            "NOT converged"
        },
        convergence.took_ms as f64 / 1000.0
    );
    writer.await.context("ops writer")??;

    // The verdict.
    let checker_args = consistency_checker::Args {
        wallet_db: system.wallet_db.clone(),
        history_db: system.history_db.clone(),
        ops: Some(plan.run_dir.join("ops.jsonl")),
        chaos: Some(plan.run_dir.join("chaos.jsonl")),
        json: false,
        out: Some(plan.run_dir.join("checker.json")),
        convergence: Some(convergence),
    };
    let report = consistency_checker::run(&checker_args)
        .await
        .context("running the consistency checker")?;
    println!("{}", consistency_checker::render_text(&report));

    let summaries = recorder.summaries(load_seconds);
    let parsed: Vec<_> = args
        .thresholds
        .iter()
        .map(|t| thresholds::parse(t))
        .collect::<Result<_, _>>()?;
    let missed = thresholds::missed(&parsed, &summaries);
    let mut hlog = BufWriter::new(std::fs::File::create(plan.run_dir.join("latency.hlog"))?);
    recorder.write_interval_log(&mut hlog)?;
    hlog.flush()?;
    write_json(
        &plan.run_dir.join("timeline.json"),
        &json!(recorder.timeline()),
    )?;
    let lag = history_lag(system, context_started_wall).await?;
    write_json(&plan.run_dir.join("lag.json"), &json!(lag))?;
    let faults = run_log::read_jsonl::<run_log::ChaosEvent>(&plan.run_dir.join("chaos.jsonl"))
        .unwrap_or_default();
    let summary = RunSummary {
        scenario: scenario.name.clone(),
        seed: plan.seed,
        command: plan.command.clone(),
        users: scenario.users,
        wallets: scenario.wallets,
        rate: scenario.rate,
        started_at: Some(context_started_wall),
        duration_s: load_seconds,
        totals: Totals {
            requests: summaries.iter().map(|s| s.count).sum(),
            rps: summaries.iter().map(|s| s.rps).sum(),
        },
        endpoints: summaries,
        errors: recorder.errors(),
        convergence: ConvergenceSummary {
            converged: convergence.converged,
            took_ms: convergence.took_ms,
            bound_ms: convergence.bound_ms,
            started_offset_ms: Some(converge_started_ms),
        },
        faults: run_log::fault_windows(&faults),
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
    };
    write_json(&plan.run_dir.join("summary.json"), &json!(summary))?;
    print_summary(&summary.endpoints, load_seconds);
    println!("run directory: {}", plan.run_dir.display());
    // The report shows the verdict; it does not decide it, so a rendering
    // failure is reported but leaves the exit code to the checks.
    match reports::write_run_report(&plan.run_dir, None) {
        Ok(written) => println!(
            "report: {} ({:.0} KiB)",
            written.path.display(),
            written.bytes as f64 / 1024.0
        ),
        Err(err) => eprintln!("warning: could not render report.html: {err:#}"),
    }

    if !report.passed {
        println!("VERDICT: invariants violated (exit {EXIT_VIOLATED})");
        return Ok(ExitCode::from(EXIT_VIOLATED));
    }
    if !missed.is_empty() {
        for line in &missed {
            println!("threshold missed: {line}");
        }
        println!("VERDICT: invariants held, thresholds missed (exit {EXIT_THRESHOLD})");
        return Ok(ExitCode::from(EXIT_THRESHOLD));
    }
    println!("VERDICT: every invariant held (exit 0)");
    Ok(ExitCode::SUCCESS)
}

/// Creates and funds the seed's wallets; every attempt goes to the log.
async fn seed_wallets(
    workload: &Workload,
    seed: u64,
    wallet_url: &str,
    ops: &mpsc::UnboundedSender<OpRecord>,
) -> anyhow::Result<Vec<Uuid>> {
    use futures::{StreamExt, stream};
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(attack::REQUEST_TIMEOUT_MS))
        .build()?;
    let planned = workload.wallets();
    let results: Vec<anyhow::Result<Uuid>> = stream::iter(planned)
        .map(|wallet| {
            let http = http.clone();
            async move {
                let started = Instant::now();
                let intended_at = chrono::Utc::now();
                let create = http
                    .post(format!("{wallet_url}/wallets"))
                    .json(&json!({"user_id": wallet.user_id}))
                    .send()
                    .await;
                let (outcome, status, code) = attack::classify_json(create).await;
                let id = outcome
                    .1
                    .as_ref()
                    .and_then(|body| body["data"]["id"].as_str())
                    .and_then(|id| Uuid::parse_str(id).ok());
                let op_id = 2 * u64::from(wallet.index);
                let record = |kind,
                              outcome,
                              status,
                              error_code: Option<String>,
                              key: Option<String>,
                              amount| {
                    let pending = OpRecord {
                        op_id: op_id + u64::from(kind == OpKind::Fund),
                        kind,
                        wallet_index: Some(wallet.index),
                        to_wallet_index: None,
                        wallet_id: id,
                        to_wallet_id: None,
                        amount,
                        idempotency_key: key,
                        outcome,
                        status,
                        error_code: error_code.clone(),
                        intended_at,
                        latency_us: 0,
                        attempts: Vec::new(),
                    };
                    let attempt = Attempt {
                        outcome,
                        status,
                        error_code,
                        started_us: 0,
                        latency_us: started.elapsed().as_micros() as u64,
                    };
                    pending.settle(vec![attempt])
                };
                let _ = ops.send(record(
                    OpKind::CreateWallet,
                    outcome.0,
                    status,
                    code,
                    None,
                    None,
                ));
                let id = id.with_context(|| format!("creating wallet {} failed", wallet.index))?;
                let key = format!("seed{seed}-setup-fund-{}", wallet.index);
                let fund = http
                    .post(format!("{wallet_url}/wallets/{id}/fund"))
                    .header("Idempotency-Key", &key)
                    .json(&json!({"amount": wallet_events::format_money(wallet.initial_balance)}))
                    .send()
                    .await;
                let (fund_outcome, status, code) = attack::classify_json(fund).await;
                let _ = ops.send(record(
                    OpKind::Fund,
                    fund_outcome.0,
                    status,
                    code,
                    Some(key),
                    Some(wallet.initial_balance),
                ));
                if fund_outcome.0 != Outcome::Ok {
                    bail!("funding wallet {} failed", wallet.index);
                }
                Ok(id)
            }
        })
        .buffered(SETUP_CONCURRENCY)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Waits until the outbox is drained and history holds every ledger entry.
async fn converge(
    system: &System,
    bound: Duration,
    interrupted: &CancellationToken,
) -> anyhow::Result<consistency_checker::Convergence> {
    let started = Instant::now();
    let mut wallet_db = connect(&system.wallet_db).await?;
    let mut history_db = connect(&system.history_db).await?;
    loop {
        let (unpublished, ledger): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE published_at IS NULL), count(*) FROM outbox",
        )
        .fetch_one(&mut wallet_db)
        .await
        .unwrap_or((-1, -1));
        let (history, parked): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM history_entries), (SELECT count(*) FROM parked_events)",
        )
        .fetch_one(&mut history_db)
        .await
        .unwrap_or((-1, -1));
        let took_ms = started.elapsed().as_millis() as u64;
        if unpublished == 0 && parked == 0 && history >= ledger && ledger >= 0 {
            return Ok(consistency_checker::Convergence {
                converged: true,
                took_ms,
                bound_ms: bound.as_millis() as u64,
            });
        }
        if started.elapsed() > bound || interrupted.is_cancelled() {
            println!(
                "  outbox unpublished {unpublished}, ledger {ledger}, history {history}, parked {parked}"
            );
            return Ok(consistency_checker::Convergence {
                converged: false,
                took_ms,
                bound_ms: bound.as_millis() as u64,
            });
        }
        tokio::time::sleep(Duration::from_millis(CONVERGE_POLL_MS)).await;
    }
}

async fn connect(url: &str) -> anyhow::Result<sqlx::PgConnection> {
    <sqlx::PgConnection as sqlx::Connection>::connect(url)
        .await
        .with_context(|| format!("connecting to {url}"))
}

async fn write_ops(
    mut out: BufWriter<std::fs::File>,
    mut records: mpsc::UnboundedReceiver<OpRecord>,
) -> anyhow::Result<()> {
    while let Some(record) = records.recv().await {
        serde_json::to_writer(&mut out, &record)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}

/// Elapsed, requests per second, p99 so far, errors and the faults in
/// effect: a bar on a terminal, a line every 5 s otherwise (CI logs).
async fn show_progress(
    recorder: Arc<Recorder>,
    status: Arc<ChaosStatus>,
    duration: Duration,
    stop: CancellationToken,
) {
    let terminal = std::io::stderr().is_terminal();
    let bar = indicatif::ProgressBar::new(duration.as_secs());
    if terminal {
        bar.set_style(
            indicatif::ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let started = recorder.started();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last = (0u64, Instant::now());
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => break,
        }
        let (count, errors, p99) = recorder.progress();
        let rps = (count - last.0) as f64 / last.1.elapsed().as_secs_f64().max(0.001);
        last = (count, Instant::now());
        let faults: Vec<String> = status
            .active()
            .iter()
            .map(|(id, kind)| format!("#{id} {kind}"))
            .collect();
        let faults = if faults.is_empty() {
            "none".to_owned()
        } else {
            faults.join(", ")
        };
        let message =
            format!("{rps:>6.0} req/s  p99 {p99:>7.1} ms  errors {errors}  faults: {faults}");
        let elapsed = started.elapsed().as_secs();
        bar.set_position(elapsed.min(duration.as_secs()));
        bar.set_message(message.clone());
        if !terminal && elapsed.is_multiple_of(5) {
            println!("  {elapsed:>4}s  {message}");
        }
    }
    bar.finish_and_clear();
}

fn print_summary(summaries: &[EndpointSummary], seconds: f64) {
    println!(
        "{:<30} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9}",
        "endpoint", "count", "ok", "failed", "indet.", "req/s", "p50 ms", "p99 ms", "max ms"
    );
    for s in summaries {
        println!(
            "{:<30} {:>8} {:>8} {:>8} {:>8} {:>8.1} {:>9.1} {:>9.1} {:>9.1}",
            s.endpoint,
            s.count,
            s.ok,
            s.failed,
            s.indeterminate,
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
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

/// What ran, and where: the source tree's commit (when the binary runs
/// from a checkout, as `cargo run` does) and the machine.
fn versions() -> Versions {
    let command_output = |program: &str, args: &[&str]| -> Option<String> {
        let out = std::process::Command::new(program)
            .args(args)
            .output()
            .ok()?;
        let text = String::from_utf8(out.stdout).ok()?.trim().to_owned();
        (out.status.success() && !text.is_empty()).then_some(text)
    };
    let source = env!("CARGO_MANIFEST_DIR");
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
        commit: command_output("git", &["-C", source, "describe", "--always", "--dirty"])
            .unwrap_or_else(|| "unknown".to_owned()),
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

/// How long each event took from its commit in the wallet database to
/// being visible in history, folded per second (`lag.json`). Both times
/// come from the database servers' clocks.
async fn history_lag(
    system: &System,
    load_started: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<Vec<run_log::summary::LagSecond>> {
    let mut history_db = connect(&system.history_db).await?;
    let origin = load_started.timestamp_micros() as f64 / 1e6;
    let rows: Vec<(f64, f64)> = sqlx::query_as(
        "SELECT EXTRACT(EPOCH FROM committed_at)::float8, EXTRACT(EPOCH FROM applied_at)::float8
         FROM history_entries",
    )
    .fetch_all(&mut history_db)
    .await
    .context("reading history lag")?;
    let relative: Vec<(f64, f64)> = rows
        .into_iter()
        .map(|(commit, visible)| (commit - origin, visible - origin))
        .collect();
    Ok(run_log::summary::lag_series(&relative))
}
