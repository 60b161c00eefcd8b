//! `reports`: render a run directory into `report.html`, or compare two.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

/// Self-contained HTML reports of wallet-system runs (works offline).
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Render RUN_DIR/report.html from the run directory's files.
    Render {
        /// A run directory written by `loadgen run`.
        run_dir: PathBuf,
        /// Where to write the page [default: RUN_DIR/report.html].
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Compare two runs: overlaid percentile distributions, per-endpoint
    /// deltas (p50, p99, throughput) with regressions highlighted, both
    /// verdicts.
    Compare {
        /// The run to compare against.
        base_run: PathBuf,
        /// The run being judged.
        new_run: PathBuf,
        /// Where to write the page [default: NEW_RUN/compare-<BASE_RUN name>.html].
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let written = match &cli.command {
        Command::Render { run_dir, out } => reports::write_run_report(run_dir, out.as_deref()),
        Command::Compare {
            base_run,
            new_run,
            out,
        } => reports::write_comparison(base_run, new_run, out.as_deref()),
    };
    match written {
        Ok(written) => {
            println!(
                "wrote {} ({:.0} KiB, rendered in {} ms)",
                written.path.display(),
                written.bytes as f64 / 1024.0,
                written.took.as_millis()
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("reports: {err:#}");
            ExitCode::from(2)
        }
    }
}
