//! Helpers shared by the test modules: process-state probes that go through
//! /proc and kill(pid, 0) only, and the "owner" role used to test
//! parent-death signals by re-running this very test binary.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use harness::{ManagedProcess, ProcessSpec};
use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;
use tokio::time::{Instant, sleep};

/// Which role a re-run of this binary plays (see [`start_owner`]).
pub const OWNER_ROLE_ENV: &str = "HARNESS_TEST_OWNER_ROLE";
/// Where the owner reports the pids it started.
pub const OWNER_REPORT_ENV: &str = "HARNESS_TEST_OWNER_REPORT";
/// Where the owner's own processes log.
pub const OWNER_LOG_DIR_ENV: &str = "HARNESS_TEST_OWNER_LOG_DIR";

/// Bound for waiting on the kernel to act on a signal.
pub const SIGNAL_EFFECT_TIMEOUT_MS: u64 = 10_000;
/// Bound for the owner to start its children and report them (includes an
/// initdb for the PostgreSQL variant).
pub const OWNER_REPORT_TIMEOUT_MS: u64 = 120_000;

/// kill(pid, 0) says the pid no longer exists: it was reaped.
pub fn pid_gone(pid: u32) -> bool {
    kill(Pid::from_raw(pid as i32), None) == Err(Errno::ESRCH)
}

pub use harness::procfs::state as proc_state;

/// Gone, or a zombie waiting for a (possibly non-reaping) init: either way
/// no longer running. Used for processes that are not our children.
pub fn pid_dead(pid: u32) -> bool {
    pid_gone(pid) || matches!(proc_state(pid), Some('Z' | 'X') | None)
}

/// Polls `condition` every 10 ms until it holds, failing after `timeout_ms`.
pub async fn eventually(
    what: &str,
    timeout_ms: u64,
    mut condition: impl FnMut() -> bool,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    while !condition() {
        if Instant::now() >= deadline {
            bail!("timed out after {timeout_ms} ms waiting for: {what}");
        }
        sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// Re-runs this test binary as an "owner" process that runs only
/// `test_name` with [`OWNER_ROLE_ENV`] = `role`; the test then acts as the
/// owner instead of as the test (see the tests using it).
pub fn start_owner(test_name: &str, role: &str, dir: &Path) -> Result<ManagedProcess> {
    let exe = std::env::current_exe().context("locating the test binary")?;
    let spec = ProcessSpec::new(format!("owner-{role}"), exe, dir.join("owner.log"))
        .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env(OWNER_ROLE_ENV, role)
        .env(OWNER_REPORT_ENV, dir.join("report"))
        .env(OWNER_LOG_DIR_ENV, dir);
    ManagedProcess::start(spec)
}

/// Waits for the owner's report (written atomically) and returns its lines.
pub async fn read_owner_report(owner: &mut ManagedProcess, dir: &Path) -> Result<Vec<String>> {
    let report = dir.join("report");
    let deadline = Instant::now() + Duration::from_millis(OWNER_REPORT_TIMEOUT_MS);
    loop {
        if let Ok(text) = std::fs::read_to_string(&report) {
            return Ok(text.lines().map(str::to_owned).collect());
        }
        if !owner.is_running() || Instant::now() >= deadline {
            let log = std::fs::read_to_string(dir.join("owner.log")).unwrap_or_default();
            bail!(
                "owner never reported (exit {:?}); its log:\n{log}",
                owner.exit_status()
            );
        }
        sleep(Duration::from_millis(20)).await;
    }
}

/// The owner side: publish `lines` (atomically) and wait to be killed.
pub async fn report_and_wait(lines: &[String]) -> Result<()> {
    let report = std::path::PathBuf::from(std::env::var(OWNER_REPORT_ENV)?);
    let tmp = report.with_extension("tmp");
    std::fs::write(&tmp, lines.join("\n"))?;
    std::fs::rename(&tmp, &report)?;
    // The test SIGKILLs us long before this ends.
    sleep(Duration::from_secs(600)).await;
    bail!("owner was not killed")
}
