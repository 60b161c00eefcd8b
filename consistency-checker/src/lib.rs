//! The consistency checker: proves, after a run, that no money was created
//! or lost and that the history is an exact image of the ledger.
//!
//! - [`snapshot`]: the rows the checker judges, plain data.
//! - [`load`]: reading a snapshot from both databases (read-only SQL) and
//!   the run directory's `ops.jsonl` and `chaos.jsonl`.
//! - [`invariants`]: the invariants, pure functions over a snapshot.
//! - [`report`]: the verdict (`checker.json`, types in `run_log::checker`)
//!   and its text rendering.
//!
//! The binary is a thin shell over [`run`], which loadgen also calls
//! in-process at the end of a run.

#[cfg(test)]
mod fixture;
pub mod invariants;
pub mod load;
pub mod report;
pub mod snapshot;

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

pub use invariants::check;
pub use load::{attach_chaos, attach_ops, attach_walk, load};
pub use report::{CheckResult, Facts, Invariant, Report, Status, Violation, render_text};
pub use run_log::summary::Convergence;
pub use snapshot::Snapshot;

/// The checker's command line and environment.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "consistency-checker",
    version,
    about = "Checks a run's wallet and history databases against the invariants; exit 0 all held, 1 violated, 2 the checker failed"
)]
pub struct Args {
    /// PostgreSQL URL of the wallet database (read only).
    #[arg(long, env = "WALLET_DB")]
    pub wallet_db: String,

    /// PostgreSQL URL of the history database (read only).
    #[arg(long, env = "HISTORY_DB")]
    pub history_db: String,

    /// The run's operation log (ops.jsonl); without it acked-write-durable
    /// is not evaluated.
    #[arg(long, env = "CHECKER_OPS")]
    pub ops: Option<PathBuf>,

    /// The run's fault timeline (chaos.jsonl), to place violations in their
    /// fault windows.
    #[arg(long, env = "CHECKER_CHAOS")]
    pub chaos: Option<PathBuf>,

    /// The run's end-of-run walk of the history API (walk.json); without
    /// it history-reads-match judges only the load's page reads.
    #[arg(long, env = "CHECKER_WALK")]
    pub walk: Option<PathBuf>,

    /// Print the report as JSON instead of text.
    #[arg(long, env = "CHECKER_JSON")]
    pub json: bool,

    /// Also write the JSON report to this file (checker.json).
    #[arg(long, env = "CHECKER_OUT")]
    pub out: Option<PathBuf>,

    /// How the liveness phase ended, for `converged-in-time`. Only callers
    /// in-process (loadgen) know it; from the command line the check is
    /// not evaluated.
    #[arg(skip)]
    pub convergence: Option<Convergence>,
}

/// Loads the snapshot the arguments name, checks it, and writes `--out`.
/// An `Err` means the checker could not judge (exit code 2), never that an
/// invariant failed: that is `Ok` with `passed == false`.
pub async fn run(args: &Args) -> anyhow::Result<Report> {
    let mut snapshot = load(&args.wallet_db, &args.history_db).await?;
    if let Some(path) = &args.ops {
        attach_ops(&mut snapshot, path)?;
    }
    if let Some(path) = &args.chaos {
        attach_chaos(&mut snapshot, path)?;
    }
    if let Some(path) = &args.walk {
        attach_walk(&mut snapshot, path)?;
    }
    snapshot.convergence = args.convergence;
    let report = check(&snapshot);
    if let Some(path) = &args.out {
        let json = serde_json::to_vec_pretty(&report).context("serializing the report")?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report)
}
