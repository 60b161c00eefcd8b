//! The front door of the proving ground. `loadgen up` starts the system on
//! this machine; `loadgen serve <role>` is how the harness runs each role of
//! the system as its own process from this one binary (so `cargo run` builds
//! everything a run needs).

pub mod cli;
mod up;

use std::process::ExitCode;

use cli::{Cli, Command, Serve};

/// Exit code when the harness itself failed (bad arguments, could not start).
pub const EXIT_HARNESS_FAILED: u8 = 2;

pub fn main(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(EXIT_HARNESS_FAILED);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(role) => serve(role).await.map(|()| ExitCode::SUCCESS),
            Command::Up(args) => {
                init_tracing("warn");
                up::up(args).await.map(|()| ExitCode::SUCCESS)
            }
        }
    });
    result.unwrap_or_else(|err| {
        eprintln!("error: {err:#}");
        ExitCode::from(EXIT_HARNESS_FAILED)
    })
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
            wallet::init_tracing();
            broker::run(config).await
        }
    }
}

fn init_tracing(default: &str) {
    service_kit::init_tracing(default);
}
