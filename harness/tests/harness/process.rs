//! ManagedProcess against real `sleep` and `sh` children.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use harness::{ManagedProcess, ProcessSpec};
use nix::sys::signal::Signal;
use nix::unistd::{Uid, User, geteuid};
use std::os::unix::process::ExitStatusExt;
use tempfile::TempDir;

use crate::common::{
    OWNER_LOG_DIR_ENV, OWNER_ROLE_ENV, SIGNAL_EFFECT_TIMEOUT_MS, eventually, pid_dead, pid_gone,
    proc_state, read_owner_report, report_and_wait, start_owner,
};

fn sleep_spec(dir: &TempDir, name: &str) -> ProcessSpec {
    ProcessSpec::new(name, "sleep", dir.path().join(format!("{name}.log"))).arg("30")
}

#[tokio::test]
async fn pause_resume_and_kill_reap_the_child() -> Result<()> {
    let dir = TempDir::new()?;
    let mut sleeper = ManagedProcess::start(sleep_spec(&dir, "sleeper"))?;
    let pid = sleeper.pid().context("no pid after start")?;
    ensure!(sleeper.is_running());
    ensure!(!pid_gone(pid), "kill(pid, 0) failed for a running child");
    assert_eq!(sleeper.name(), "sleeper");

    // pause returns once the stop has taken effect, not merely been sent.
    sleeper.pause().await?;
    ensure!(
        proc_state(pid) == Some('T'),
        "pause returned before the child was seen stopped"
    );
    ensure!(sleeper.is_running(), "a paused process is still running");
    sleeper.resume()?;
    eventually("child resumed", SIGNAL_EFFECT_TIMEOUT_MS, || {
        matches!(proc_state(pid), Some('S' | 'R'))
    })
    .await?;

    sleeper.kill().await?;
    ensure!(!sleeper.is_running());
    assert_eq!(sleeper.pid(), None, "a reaped child has no pid");
    assert_eq!(
        sleeper.exit_status().and_then(|s| s.signal()),
        Some(libc_sigkill())
    );
    ensure!(
        pid_gone(pid),
        "pid {pid} still exists after kill: not reaped"
    );
    ensure!(
        sleeper.signal(Signal::SIGTERM).is_err(),
        "signalling a reaped child must fail"
    );
    // Killing again is a no-op, not an error.
    sleeper.kill().await?;
    Ok(())
}

#[tokio::test]
async fn terminate_stops_a_cooperative_child_with_sigterm() -> Result<()> {
    let dir = TempDir::new()?;
    let mut sleeper = ManagedProcess::start(sleep_spec(&dir, "polite"))?;
    let pid = sleeper.pid().context("no pid")?;
    let started = Instant::now();
    let status = sleeper.terminate(Duration::from_secs(10)).await?;
    assert_eq!(
        status.and_then(|s| s.signal()),
        Some(Signal::SIGTERM as i32)
    );
    ensure!(
        started.elapsed() < Duration::from_secs(5),
        "SIGTERM took {:?}",
        started.elapsed()
    );
    ensure!(pid_gone(pid));
    Ok(())
}

#[tokio::test]
async fn terminate_escalates_to_sigkill_after_the_grace() -> Result<()> {
    let dir = TempDir::new()?;
    // `exec` keeps one pid: the ignored disposition survives exec, so `sleep`
    // itself ignores SIGTERM and no grandchild is left behind by SIGKILL.
    let spec = ProcessSpec::new("stubborn", "sh", dir.path().join("stubborn.log"))
        .args(["-c", "trap '' TERM; exec sleep 30"]);
    let mut stubborn = ManagedProcess::start(spec)?;
    let pid = stubborn.pid().context("no pid")?;
    // Only send SIGTERM once it is really ignored, or the test races sh.
    eventually("sleep ignoring SIGTERM", SIGNAL_EFFECT_TIMEOUT_MS, || {
        ignores_sigterm(pid) && comm(pid).as_deref() == Some("sleep")
    })
    .await?;

    let grace = Duration::from_millis(500);
    let started = Instant::now();
    let status = stubborn.terminate(grace).await?;
    let elapsed = started.elapsed();
    assert_eq!(status.and_then(|s| s.signal()), Some(libc_sigkill()));
    ensure!(
        elapsed >= grace,
        "SIGKILL came before the grace ended ({elapsed:?})"
    );
    ensure!(
        elapsed < grace + Duration::from_secs(5),
        "terminate took {elapsed:?}"
    );
    ensure!(pid_gone(pid));
    Ok(())
}

#[tokio::test]
async fn restart_gives_a_new_pid_and_appends_to_the_log() -> Result<()> {
    let dir = TempDir::new()?;
    let log = dir.path().join("nested/logs/restart-me.log");
    let spec = ProcessSpec::new("restart-me", "sh", &log).args([
        "-c",
        "echo stdout-line-$$; echo stderr-line-$$ >&2; exec sleep 30",
    ]);
    let mut process = ManagedProcess::start(spec)?;
    let first = process.pid().context("no pid")?;
    ensure!(
        process.restart().await.is_err(),
        "restart must refuse a running process"
    );
    // Each run writes its output before exec'ing sleep; let it, before killing.
    let wrote = |pid: u32| {
        let log = log.clone();
        move || {
            std::fs::read_to_string(&log)
                .is_ok_and(|text| text.contains(&format!("stderr-line-{pid}")))
        }
    };
    eventually("first run's output", SIGNAL_EFFECT_TIMEOUT_MS, wrote(first)).await?;

    process.kill().await?;
    process.restart().await?;
    let second = process.pid().context("no pid after restart")?;
    ensure!(first != second, "restart kept pid {first}");
    ensure!(pid_gone(first));

    eventually(
        "second run's output",
        SIGNAL_EFFECT_TIMEOUT_MS,
        wrote(second),
    )
    .await?;
    process.terminate(Duration::from_secs(5)).await?;

    let text = std::fs::read_to_string(&log)?;
    let markers: Vec<&str> = text
        .lines()
        .filter(|line| line.starts_with("=== harness: starting restart-me (pid "))
        .collect();
    assert_eq!(markers.len(), 2, "log:\n{text}");
    ensure!(
        markers[0].contains(&format!("(pid {first}) at ")),
        "log:\n{text}"
    );
    ensure!(
        markers[1].contains(&format!("(pid {second}) at ")),
        "log:\n{text}"
    );
    ensure!(
        markers[0]
            .ends_with(": sh -c 'echo stdout-line-$$; echo stderr-line-$$ >&2; exec sleep 30'"),
        "log:\n{text}"
    );
    for pid in [first, second] {
        ensure!(
            text.contains(&format!("stdout-line-{pid}")),
            "stdout of {pid} missing:\n{text}"
        );
        ensure!(
            text.contains(&format!("stderr-line-{pid}")),
            "stderr of {pid} missing:\n{text}"
        );
        ensure!(
            text.contains(&format!("restart-me (pid {pid}) exited at ")),
            "exit marker of {pid} missing:\n{text}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn wait_exit_reports_the_exit_status() -> Result<()> {
    let dir = TempDir::new()?;
    let spec = ProcessSpec::new("exit-3", "sh", dir.path().join("exit.log"))
        .args(["-c", "exit \"$CODE\""])
        .env("CODE", "3")
        .cwd("/");
    let mut process = ManagedProcess::start(spec)?;
    let status = process
        .wait_exit(Duration::from_secs(10))
        .await
        .context("no exit")?;
    assert_eq!(status.code(), Some(3));
    ensure!(!process.is_running());
    assert_eq!(process.exit_status().and_then(|s| s.code()), Some(3));
    Ok(())
}

#[tokio::test]
async fn start_fails_clearly_for_a_missing_program() -> Result<()> {
    let dir = TempDir::new()?;
    let spec = ProcessSpec::new(
        "missing",
        "/nonexistent/program",
        dir.path().join("missing.log"),
    );
    let err = ManagedProcess::start(spec).expect_err("spawning a missing program must fail");
    ensure!(
        format!("{err:#}").contains("starting missing"),
        "error: {err:#}"
    );
    let log = std::fs::read_to_string(dir.path().join("missing.log"))?;
    ensure!(
        log.contains("=== harness: failed to start missing"),
        "log:\n{log}"
    );
    Ok(())
}

#[test]
fn drop_stops_and_reaps_the_child_without_a_runtime() -> Result<()> {
    let dir = TempDir::new()?;
    let sleeper = ManagedProcess::start(sleep_spec(&dir, "dropped"))?;
    let pid = sleeper.pid().context("no pid")?;
    let started = Instant::now();
    drop(sleeper);
    ensure!(pid_gone(pid), "pid {pid} survived drop");
    ensure!(
        started.elapsed() < Duration::from_secs(2),
        "drop of a SIGTERM-able child took {:?}",
        started.elapsed()
    );
    Ok(())
}

#[tokio::test]
async fn run_as_switches_user_and_the_log_stays_writable() -> Result<()> {
    let dir = TempDir::new()?;
    // As root (CI, this machine): the unprivileged `postgres` user, writing
    // into a log that root opened. Otherwise: ourselves (uid switch is a no-op).
    let user = if geteuid().is_root() {
        User::from_name("postgres")?.context("no postgres user")?
    } else {
        User::from_uid(Uid::current())?.context("no passwd entry for the current user")?
    };
    let spec = ProcessSpec::new("whoami", "sh", dir.path().join("whoami.log"))
        .args(["-c", "echo uid=$(id -u) gid=$(id -g)"])
        .cwd("/")
        .run_as(user.clone());
    let mut process = ManagedProcess::start(spec)?;
    let status = process
        .wait_exit(Duration::from_secs(10))
        .await
        .context("no exit")?;
    ensure!(status.success(), "{status}");
    let log = std::fs::read_to_string(dir.path().join("whoami.log"))?;
    ensure!(
        log.contains(&format!("uid={} gid={}", user.uid, user.gid)),
        "log:\n{log}"
    );
    Ok(())
}

/// The parent-death signal fires when the owning process is SIGKILLed (no
/// destructor runs). The test re-runs this binary as the owner.
#[tokio::test]
async fn children_die_when_their_owner_is_sigkilled() -> Result<()> {
    if std::env::var(OWNER_ROLE_ENV).as_deref() == Ok("process") {
        // Owner role: start a child from a short-lived thread's runtime, so
        // the test also shows that the spawning thread's exit does not
        // trigger the signal; only the owner process's death does.
        let log_dir = std::path::PathBuf::from(std::env::var(OWNER_LOG_DIR_ENV)?);
        let child = std::thread::spawn(move || {
            ManagedProcess::start(
                ProcessSpec::new("orphan-candidate", "sleep", log_dir.join("child.log")).arg("60"),
            )
        })
        .join()
        .expect("spawning thread panicked")?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        ensure!(
            !pid_dead(child.pid().context("no pid")?),
            "child died with its spawning thread"
        );
        let pid = child.pid().context("no pid")?;
        std::mem::forget(child); // SIGKILL comes first anyway
        return report_and_wait(&[pid.to_string()]).await;
    }

    let dir = TempDir::new()?;
    let mut owner = start_owner(
        "process::children_die_when_their_owner_is_sigkilled",
        "process",
        dir.path(),
    )?;
    let report = read_owner_report(&mut owner, dir.path()).await?;
    let child: u32 = report.first().context("empty report")?.parse()?;
    ensure!(
        !pid_dead(child),
        "child {child} not running before the owner died"
    );

    owner.kill().await?;
    eventually(
        "child of the killed owner to die",
        SIGNAL_EFFECT_TIMEOUT_MS,
        || pid_dead(child),
    )
    .await?;
    Ok(())
}

fn libc_sigkill() -> i32 {
    Signal::SIGKILL as i32
}

fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_owned())
}

/// Bit 14 (signal 15) of the SigIgn mask in /proc/<pid>/status.
fn ignores_sigterm(pid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|line| line.strip_prefix("SigIgn:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (Signal::SIGTERM as u64 - 1)) != 0)
}
