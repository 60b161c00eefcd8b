//! One supervised OS process: [`ProcessSpec`] describes it, [`ManagedProcess`]
//! owns it.
//!
//! Everything chaos does to a process goes through the pid we got back from
//! our own spawn, never through a name lookup (no pkill/killall), so an
//! unrelated process can never be hit. The child handle is kept until the
//! exit status has been collected, which means the pid cannot be recycled by
//! the kernel while we might still signal it, and every exit is reaped.
//!
//! Orphan safety: every child gets `PR_SET_PDEATHSIG` so it is signalled when
//! its owner dies, including when the owner is SIGKILLed and no destructor
//! runs. The kernel fires that signal when the *thread* that forked the child
//! exits, not the process, so all spawns happen on one dedicated spawner thread
//! that lives as long as the process. Tokio worker threads and the per-test
//! threads of `cargo test` come and go; spawning from them directly would kill
//! children at random moments.
//!
//! The child's stdout and stderr are appended to `log_path`, with a marker line
//! per start and per observed exit, so restarts of the same process share one
//! readable log.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{OnceLock, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use nix::errno::Errno;
use nix::sys::prctl;
use nix::sys::signal::{self, Signal};
use nix::unistd::{Pid, User, getpid, getppid};

/// How often the async waits poll `try_wait`: short enough that a kill is
/// observed promptly, long enough to cost nothing measurable.
const POLL_INTERVAL_MS: u64 = 10;

/// How long [`ManagedProcess::kill`] waits for the kernel to finish a SIGKILL.
/// SIGKILL cannot be caught; only a process stuck in uninterruptible sleep
/// takes longer than this.
const KILL_REAP_TIMEOUT_MS: u64 = 10_000;

/// How long [`ManagedProcess::pause`] waits to see SIGSTOP take effect, and
/// how often it looks.
const STOP_CONFIRM_TIMEOUT_MS: u64 = 2_000;
const STOP_CONFIRM_POLL_MS: u64 = 5;

/// Grace period between SIGTERM and SIGKILL when a still-running process is
/// dropped. Drop blocks the thread, so this stays short.
const DROP_GRACE_MS: u64 = 2_000;

/// What to run and how. Build it with [`ProcessSpec::new`] and the chained
/// helpers; all fields are public so callers can also adjust them directly.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    /// Human-readable name used in log markers and error messages.
    pub name: String,
    /// The executable; resolved through `PATH` when it has no slash.
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// Added to (not replacing) the inherited environment.
    pub env: Vec<(OsString, OsString)>,
    pub cwd: Option<PathBuf>,
    /// stdout and stderr are appended here; the parent directory is created.
    pub log_path: PathBuf,
    /// Run the child as this user (uid and primary gid). Needs root.
    pub run_as: Option<User>,
    /// Sent to the child by the kernel when its owner dies.
    pub death_signal: Signal,
}

impl ProcessSpec {
    /// A spec with no arguments, the inherited environment, and SIGKILL as the
    /// parent-death signal.
    pub fn new(
        name: impl Into<String>,
        program: impl Into<PathBuf>,
        log_path: impl Into<PathBuf>,
    ) -> Self {
        Self {
            name: name.into(),
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            cwd: None,
            log_path: log_path.into(),
            run_as: None,
            death_signal: Signal::SIGKILL,
        }
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    pub fn run_as(mut self, user: User) -> Self {
        self.run_as = Some(user);
        self
    }

    pub fn death_signal(mut self, signal: Signal) -> Self {
        self.death_signal = signal;
        self
    }

    /// The command line as one display string (for markers and errors).
    fn command_line(&self) -> String {
        std::iter::once(self.program.as_os_str())
            .chain(self.args.iter().map(OsString::as_os_str))
            .map(shell_quote)
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A started OS process that we own: signalled only through its pid, reaped
/// when it exits, and stopped (SIGTERM, then SIGKILL) when dropped.
///
/// The sync methods work with or without an async runtime; the async ones
/// need a Tokio runtime with the time driver (only for their poll sleeps).
#[derive(Debug)]
pub struct ManagedProcess {
    spec: ProcessSpec,
    /// `Some` from spawn until the exit status has been collected: while it is
    /// `Some`, the pid is ours (at worst a zombie) and safe to signal.
    child: Option<Child>,
    last_status: Option<ExitStatus>,
}

impl ManagedProcess {
    /// Spawns the process described by `spec`.
    pub fn start(spec: ProcessSpec) -> Result<Self> {
        let mut process = Self {
            spec,
            child: None,
            last_status: None,
        };
        process.spawn()?;
        Ok(process)
    }

    pub fn spec(&self) -> &ProcessSpec {
        &self.spec
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn log_path(&self) -> &Path {
        &self.spec.log_path
    }

    /// The pid of the current child, `None` once it has been reaped (a reaped
    /// pid may already belong to someone else).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The exit status of the most recent run, once it has been reaped.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        if self.child.is_some() {
            None
        } else {
            self.last_status
        }
    }

    /// Whether the child is still running; reaps it if it has exited.
    pub fn is_running(&mut self) -> bool {
        self.poll_exit();
        self.child.is_some()
    }

    /// Sends `signal` to our child's pid. Fails if there is no unreaped child.
    pub fn signal(&self, signal: Signal) -> Result<()> {
        let child = self
            .child
            .as_ref()
            .ok_or_else(|| anyhow!("{} is not running", self.spec.name))?;
        let pid = Pid::from_raw(i32::try_from(child.id()).context("pid out of range")?);
        signal::kill(pid, signal)
            .with_context(|| format!("sending {signal} to {} (pid {pid})", self.spec.name))
    }

    /// SIGSTOP: freezes the process (a "hung" process, for chaos). Returns
    /// once `/proc` shows it stopped: the signal takes effect at the
    /// target's next return to user space, and a caller that looks at the
    /// state straight after sending it (heal_all does) must not see it
    /// still running and decide there is nothing to continue. Gives up
    /// with a warning after [`STOP_CONFIRM_TIMEOUT_MS`]; with no `/proc`
    /// to read it trusts the signal.
    pub async fn pause(&self) -> Result<()> {
        self.signal(Signal::SIGSTOP)?;
        let Some(pid) = self.pid() else {
            return Ok(());
        };
        let deadline = Instant::now() + Duration::from_millis(STOP_CONFIRM_TIMEOUT_MS);
        loop {
            match crate::procfs::state(pid) {
                Some('T') | None => return Ok(()),
                Some(_) if Instant::now() >= deadline => {
                    tracing::warn!(pid, "SIGSTOP sent but the process is not seen stopped");
                    return Ok(());
                }
                Some(_) => tokio::time::sleep(Duration::from_millis(STOP_CONFIRM_POLL_MS)).await,
            }
        }
    }

    /// SIGCONT: undoes [`ManagedProcess::pause`].
    pub fn resume(&self) -> Result<()> {
        self.signal(Signal::SIGCONT)
    }

    /// SIGKILL, then reap. Succeeds if the process had already exited.
    pub async fn kill(&mut self) -> Result<()> {
        if !self.is_running() {
            return Ok(());
        }
        self.signal(Signal::SIGKILL)?;
        match self
            .wait_exit(Duration::from_millis(KILL_REAP_TIMEOUT_MS))
            .await
        {
            Some(_) => Ok(()),
            None => bail!(
                "{} (pid {:?}) did not exit within {KILL_REAP_TIMEOUT_MS} ms of SIGKILL",
                self.spec.name,
                self.pid()
            ),
        }
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL; always reaps. Returns the
    /// exit status of the last run (`None` if it never ran to a reaped exit).
    pub async fn terminate(&mut self, grace: Duration) -> Result<Option<ExitStatus>> {
        if !self.is_running() {
            return Ok(self.last_status);
        }
        self.signal(Signal::SIGTERM)?;
        // A paused process keeps SIGTERM pending until it runs again.
        self.signal(Signal::SIGCONT)?;
        if let Some(status) = self.wait_exit(grace).await {
            return Ok(Some(status));
        }
        tracing::warn!(
            name = %self.spec.name,
            pid = ?self.pid(),
            grace_ms = grace.as_millis(),
            "process ignored SIGTERM; sending SIGKILL"
        );
        self.kill().await?;
        Ok(self.last_status)
    }

    /// Starts the process again from the same spec. Only valid once the
    /// previous run has exited (it is reaped here if needed).
    pub async fn restart(&mut self) -> Result<()> {
        if self.is_running() {
            bail!(
                "cannot restart {}: still running (pid {:?})",
                self.spec.name,
                self.pid()
            );
        }
        self.spawn()
    }

    /// Waits up to `timeout` for the process to exit and reaps it. `None`
    /// means it is still running.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(waited) = self.exited_or_past(deadline) {
                return waited;
            }
            tokio::time::sleep(Duration::from_millis(POLL_INTERVAL_MS)).await;
        }
    }

    /// [`ManagedProcess::wait_exit`] for callers without a runtime (such as
    /// `Drop` impls); blocks the calling thread.
    pub fn wait_exit_blocking(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(waited) = self.exited_or_past(deadline) {
                return waited;
            }
            thread::sleep(Duration::from_millis(POLL_INTERVAL_MS));
        }
    }

    /// One step of the exit waits: `Some(Some(status))` once exited (and
    /// reaped), `Some(None)` when the deadline passed first, `None` to keep
    /// waiting.
    fn exited_or_past(&mut self, deadline: Instant) -> Option<Option<ExitStatus>> {
        if let Some(status) = self.poll_exit() {
            return Some(Some(status));
        }
        if self.child.is_none() {
            return Some(self.last_status);
        }
        (Instant::now() >= deadline).then_some(None)
    }

    fn spawn(&mut self) -> Result<()> {
        let spec = &self.spec;
        let log = open_log(&spec.log_path)?;
        let command = build_command(spec, &log)?;
        let command_line = spec.command_line();
        let child = match spawn_on_spawner_thread(command) {
            Ok(child) => child,
            Err(err) => {
                append_marker(&log, &format!("failed to start {}: {err}", spec.name));
                return Err(err)
                    .with_context(|| format!("starting {} ({command_line})", spec.name));
            }
        };
        // Written after spawn because only then is the pid known; a first
        // line from the child may land before it, which is harmless.
        append_marker(
            &log,
            &format!(
                "starting {} (pid {}) at {}: {command_line}",
                spec.name,
                child.id(),
                now_rfc3339()
            ),
        );
        tracing::debug!(name = %spec.name, pid = child.id(), log = %spec.log_path.display(), "started process");
        self.child = Some(child);
        self.last_status = None;
        Ok(())
    }

    /// Reaps the child if it has exited; `Some` only on the call that reaped.
    fn poll_exit(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                self.record_exit(status);
                Some(status)
            }
            Ok(None) => None,
            Err(err) => {
                // Only possible if something else reaped our child (ECHILD):
                // the pid is no longer ours, so stop using it.
                tracing::warn!(name = %self.spec.name, %err, "lost track of child process");
                self.child = None;
                None
            }
        }
    }

    fn record_exit(&mut self, status: ExitStatus) {
        if let Some(child) = self.child.take()
            && let Ok(log) = open_log(&self.spec.log_path)
        {
            append_marker(
                &log,
                &format!(
                    "{} (pid {}) exited at {}: {status}",
                    self.spec.name,
                    child.id(),
                    now_rfc3339()
                ),
            );
        }
        self.last_status = Some(status);
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        if !self.is_running() {
            return;
        }
        let _ = self.signal(Signal::SIGTERM);
        let _ = self.signal(Signal::SIGCONT);
        if self
            .wait_exit_blocking(Duration::from_millis(DROP_GRACE_MS))
            .is_some()
        {
            return;
        }
        let _ = self.signal(Signal::SIGKILL);
        if let Some(child) = self.child.as_mut() {
            match child.wait() {
                Ok(status) => self.record_exit(status),
                Err(err) => {
                    tracing::warn!(name = %self.spec.name, %err, "could not reap child on drop");
                }
            }
        }
    }
}

fn build_command(spec: &ProcessSpec, log: &File) -> Result<Command> {
    let mut command = Command::new(&spec.program);
    command.args(&spec.args);
    for (key, value) in &spec.env {
        command.env(key, value);
    }
    if let Some(dir) = &spec.cwd {
        command.current_dir(dir);
    }
    let stdout = log.try_clone().context("duplicating the log file handle")?;
    let stderr = log.try_clone().context("duplicating the log file handle")?;
    command.stdin(Stdio::null()).stdout(stdout).stderr(stderr);
    // A process group of its own: a Ctrl-C at the terminal reaches only the
    // owner, which then stops its children in order (services before the
    // broker and the database) instead of all of them dying at once.
    command.process_group(0);
    if let Some(user) = &spec.run_as {
        command.uid(user.uid.as_raw()).gid(user.gid.as_raw());
    }
    set_parent_death_signal(&mut command, spec.death_signal, getpid());
    Ok(command)
}

/// Installs `PR_SET_PDEATHSIG` in the forked child, just before exec.
///
/// std runs `pre_exec` hooks after it has switched uid/gid, which matters: the
/// kernel clears the parent-death signal on credential changes, so setting it
/// before the switch would silently lose it for `run_as` children.
#[allow(unsafe_code)]
fn set_parent_death_signal(command: &mut Command, signal: Signal, owner: Pid) {
    // SAFETY: the hook runs in the forked child of a multi-threaded process,
    // where only async-signal-safe operations are allowed. It makes two raw
    // syscalls (prctl, getppid) and converts an errno into io::Error, which
    // neither allocates nor takes locks.
    unsafe {
        command.pre_exec(move || {
            prctl::set_pdeathsig(signal)?;
            // If the owner died between fork and prctl, the signal will never
            // come: refuse to exec an orphan.
            if getppid() != owner {
                return Err(Errno::ESRCH.into());
            }
            Ok(())
        });
    }
}

struct SpawnRequest {
    command: Command,
    reply: mpsc::SyncSender<io::Result<Child>>,
}

/// The spawner thread's inbox. The sender lives in a static and is never
/// dropped, so the thread never leaves its loop and never exits before the
/// process does (which is what keeps PDEATHSIG from firing early).
static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();

fn spawner() -> io::Result<&'static mpsc::Sender<SpawnRequest>> {
    if let Some(sender) = SPAWNER.get() {
        return Ok(sender);
    }
    let (sender, inbox) = mpsc::channel::<SpawnRequest>();
    thread::Builder::new()
        .name("harness-spawner".into())
        .spawn(move || {
            for mut request in inbox {
                // The requester may have given up; nothing to do then (the
                // child is dropped unreaped, which only happens on a panic
                // elsewhere).
                let _ = request.reply.send(request.command.spawn());
            }
        })?;
    // If another thread won the race, our sender is dropped here and our
    // thread ends without ever having forked anything.
    Ok(SPAWNER.get_or_init(|| sender))
}

fn spawn_on_spawner_thread(command: Command) -> io::Result<Child> {
    let gone = || io::Error::other("the harness spawner thread is gone");
    let (reply, answer) = mpsc::sync_channel(1);
    spawner()?
        .send(SpawnRequest { command, reply })
        .map_err(|_| gone())?;
    answer.recv().map_err(|_| gone())?
}

fn open_log(path: &Path) -> Result<File> {
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        fs::create_dir_all(parent)
            .with_context(|| format!("creating log directory {}", parent.display()))?;
    }
    // Append: restarts add to the same log, and concurrent writers (child
    // and marker lines) never overwrite each other.
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening log file {}", path.display()))
}

fn append_marker(mut log: &File, text: &str) {
    if let Err(err) = writeln!(log, "=== harness: {text}") {
        tracing::warn!(%err, "could not write a marker line to a process log");
    }
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Quotes an argument for display so a logged command line can be pasted
/// into a shell.
fn shell_quote(arg: &OsStr) -> String {
    let text = arg.to_string_lossy();
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        text.into_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}
