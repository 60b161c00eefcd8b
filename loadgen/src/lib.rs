//! The front door of the proving ground.
//!
//! - `loadgen run`: one seeded experiment: provision, load + chaos, heal,
//!   converge, check, report ([`run`]); its exit code is the verdict.
//! - `loadgen scenarios`: the built-in scenarios (`workload::scenario`).
//! - `loadgen up`: the system on fixed local ports until Ctrl-C.
//! - `loadgen token`: a bearer token for a user or the admin ([`auth`]).
//! - `loadgen sim`: the deterministic simulation (the `sim` crate).
//! - `loadgen bench`: the system beside a SQL-only model of a transfer on
//!   one durable PostgreSQL ([`bench`]).
//! - `loadgen serve <role>`: how the harness runs each role of the system as
//!   its own process from this one binary, so `cargo run` builds all a run needs.
//!
//! The load itself: the `workload` crate (the seed's operations and the
//! retry policy, shared with the simulator), [`arrivals`] (when each
//! starts: closed loop or open model), [`attack`] (the goose attack that
//! executes them), [`recorder`] (HdrHistograms from each operation's
//! intended start), [`thresholds`] (latency bounds).

pub mod arrivals;
pub mod attack;
pub mod auth;
pub mod bench;
pub mod cli;
pub mod recorder;
pub mod run;
pub mod thresholds;
mod up;

use std::process::ExitCode;

use cli::{Cli, Command, Serve};
use tokio_util::sync::CancellationToken;

pub fn main(cli: Cli) -> ExitCode {
    // The simulator needs no runtime: it is its own executor.
    let cli = match cli.command {
        Command::Sim(args) => return sim::cli::main(args),
        command => Cli { command },
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(run::EXIT_HARNESS);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(role) => serve(role).await.map(|()| ExitCode::SUCCESS),
            Command::Up(args) => {
                service_kit::init_tracing("warn");
                up::up(args).await.map(|()| ExitCode::SUCCESS)
            }
            Command::Sim(_) => unreachable!("dispatched before the runtime starts"),
            Command::ReplayDeadLetters(args) => replay_dead_letters(&args.history_db).await,
            Command::Token(args) => auth::token(&args).map(|()| ExitCode::SUCCESS),
            Command::Scenarios => {
                for scenario in workload::scenario::builtin() {
                    println!("{:<10} {}", scenario.name, scenario.description);
                }
                Ok(ExitCode::SUCCESS)
            }
            Command::Bench(args) => {
                service_kit::init_tracing("warn,goose=error");
                bench::bench(args, on_ctrl_c()).await
            }
            Command::Run(args) => {
                // Before goose starts: its own logger and Ctrl-C handler then
                // stand down (they install only if none is installed yet).
                service_kit::init_tracing("warn,goose=error");
                run::run(*args, on_ctrl_c()).await
            }
        }
    });
    result.unwrap_or_else(|err| {
        eprintln!("error: {err:#}");
        ExitCode::from(run::EXIT_HARNESS)
    })
}

/// A token cancelled by Ctrl-C, which also stops goose's users.
fn on_ctrl_c() -> CancellationToken {
    let interrupted = CancellationToken::new();
    let on_interrupt = interrupted.clone();
    let installed = ctrlc::set_handler(move || {
        eprintln!("interrupted: stopping the load, then every process");
        goose::trigger_killswitch("interrupted");
        on_interrupt.cancel();
    });
    if let Err(err) = installed {
        tracing::warn!(error = %err, "no Ctrl-C handler");
    }
    interrupted
}

async fn replay_dead_letters(history_db: &str) -> anyhow::Result<ExitCode> {
    use anyhow::Context;
    let pool = sqlx::PgPool::connect(history_db)
        .await
        .with_context(|| format!("connecting to {history_db}"))?;
    let replayed = history::apply::replay_dead_letters(&pool)
        .await
        .context("replaying dead letters")?;
    println!(
        "{} dead letters applied and released, {} still refused (they stay in dead_letters)",
        replayed.released, replayed.still_refused
    );
    Ok(ExitCode::SUCCESS)
}

async fn serve(role: Serve) -> anyhow::Result<()> {
    match role {
        Serve::Wallet(config) => {
            wallet::init_tracing();
            wallet::run(config).await
        }
        Serve::History(config) => {
            history::init_tracing();
            history::run(config).await
        }
        Serve::Broker(config) => {
            broker::init_tracing();
            broker::run(config).await
        }
        Serve::Trivial { port, delay_ms } => {
            bench::serve_trivial(port, std::time::Duration::from_millis(delay_ms)).await
        }
    }
}
