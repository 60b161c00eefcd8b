//! Carries out a plan against the real processes of a [`System`].
//!
//! [`run_plan`] works through the faults in order: wait for the fault's
//! time, inject it, hold it, heal it, wait until the part answers again,
//! and write each step to the [`ChaosLog`]. [`heal_all`] brings every part
//! back afterwards, whatever state a run left it in, so liveness is judged
//! on a whole system.
//!
//! Processes are only ever signalled through the handles the harness got
//! from its own spawns ([`harness::ManagedProcess`], [`harness::PgCluster`]),
//! never by name, and every killed process is reaped before it is restarted.
//!
//! What "recovered" means per part: the broker and PostgreSQL accept TCP
//! connections, the wallet answers `/health` with 200, and the history
//! member has taken the partitions over: its `/health` answers 200 and
//! lists every partition of the topic (a system runs one history member),
//! AND the broker describes the consumer group as `Stable` with a member.
//! Every partition, because after a kill the dead member keeps its share
//! until its session times out while the new one may already hold the
//! rest. The broker's view, because a member stopped past its session
//! timeout still lists its old partitions for a moment after it continues,
//! until it learns the group has moved on.

use std::{
    fmt::Write as _,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use harness::system::{Role, System};
use rdkafka::{
    ClientConfig,
    consumer::{BaseConsumer, Consumer},
};
use run_log::{FaultKind, FaultPhase};
use tokio_util::sync::CancellationToken;

use crate::{log::ChaosLog, plan::PlannedFault, plan::tenths};

/// How long a healed part may take to answer again before the fault is
/// recorded as not recovered. A history member may wait a full session
/// timeout for its dead predecessor to be evicted, then a rebalance; the
/// run's session timeouts are well below this.
pub const RECOVERY_TIMEOUT_MS: u64 = 90_000;
/// Pause between recovery probes: fine enough to time a takeover to a
/// tenth of a second, coarse enough to cost nothing.
const RECOVERY_POLL_MS: u64 = 100;
/// Upper bound for one probe (an HTTP request, a group description).
const PROBE_TIMEOUT_MS: u64 = 2_000;
/// SIGSTOP takes effect at the target's next return to user space; this
/// bounds the wait to see it in `/proc` before the fault is recorded.
const STOP_CONFIRM_TIMEOUT_MS: u64 = 2_000;
const STOP_CONFIRM_POLL_MS: u64 = 5;
/// A fault injected this much later than planned (its predecessor was
/// still recovering) says so in its `detail`.
const LATE_NOTE_MS: u64 = 1_000;

/// The `detail` of a fault whose target this run did not start.
pub const SKIPPED_NOT_STARTED: &str = "skipped: not started by this run";

/// The faults in flight and counts so far, for a progress line. Clones
/// share one state, so the runner updates what the printer reads.
#[derive(Debug, Clone, Default)]
pub struct ChaosStatus {
    inner: Arc<StatusInner>,
}

#[derive(Debug, Default)]
struct StatusInner {
    /// Injected and not yet recovered (or given up on).
    active: Mutex<Vec<(u32, FaultKind)>>,
    injected: AtomicU32,
    recovered: AtomicU32,
    not_recovered: AtomicU32,
    skipped: AtomicU32,
}

impl ChaosStatus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Faults injected and not yet recovered, by id.
    pub fn active(&self) -> Vec<(u32, FaultKind)> {
        self.inner.active.lock().expect("status lock").clone()
    }

    pub fn injected(&self) -> u32 {
        self.inner.injected.load(Ordering::Relaxed)
    }

    pub fn recovered(&self) -> u32 {
        self.inner.recovered.load(Ordering::Relaxed)
    }

    /// Faults whose target did not answer within [`RECOVERY_TIMEOUT_MS`].
    pub fn not_recovered(&self) -> u32 {
        self.inner.not_recovered.load(Ordering::Relaxed)
    }

    /// Faults skipped because their target was not ours or not running.
    pub fn skipped(&self) -> u32 {
        self.inner.skipped.load(Ordering::Relaxed)
    }

    /// E.g. `faults: 3 injected, 2 recovered, active #3 history_pause`.
    pub fn progress(&self) -> String {
        let mut line = format!(
            "faults: {} injected, {} recovered",
            self.injected(),
            self.recovered()
        );
        for (count, what) in [
            (self.not_recovered(), "not recovered"),
            (self.skipped(), "skipped"),
        ] {
            if count > 0 {
                let _ = write!(line, ", {count} {what}");
            }
        }
        for (fault_id, kind) in self.active() {
            let _ = write!(line, ", active #{fault_id} {kind}");
        }
        line
    }

    fn begin(&self, fault_id: u32, kind: FaultKind) {
        self.inner.injected.fetch_add(1, Ordering::Relaxed);
        self.inner
            .active
            .lock()
            .expect("status lock")
            .push((fault_id, kind));
    }

    fn end(&self, fault_id: u32, recovered: bool) {
        self.inner
            .active
            .lock()
            .expect("status lock")
            .retain(|&(id, _)| id != fault_id);
        let counter = if recovered {
            &self.inner.recovered
        } else {
            &self.inner.not_recovered
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn skip(&self) {
        self.inner.skipped.fetch_add(1, Ordering::Relaxed);
    }
}

/// The part of the system a fault acts on.
pub fn target_role(kind: FaultKind) -> Role {
    match kind {
        FaultKind::BrokerKill => Role::Broker,
        FaultKind::HistoryKill | FaultKind::HistoryPause => Role::History,
        FaultKind::WalletKill => Role::Wallet,
        FaultKind::PostgresRestart => Role::Postgres,
    }
}

/// Runs `plan` (in order) against `system`, timing each fault from the
/// log's load start, and writes Injected, Healed and Recovered for each.
///
/// `stop` ends the run between faults: a fault not yet injected is dropped,
/// but one already injected is held for its full time, healed and waited
/// for, so the run never leaves a fault behind. A fault that runs late
/// because its predecessor recovered slowly is injected at once. A part
/// that does not recover is recorded as such and the run goes on; an error
/// is returned only when the harness cannot act on its own processes.
pub async fn run_plan(
    system: &mut System,
    plan: &[PlannedFault],
    log: &mut ChaosLog,
    status: &ChaosStatus,
    stop: &CancellationToken,
) -> Result<()> {
    for fault in plan {
        let due = log.load_start() + Duration::from_millis(fault.at_ms);
        tokio::select! {
            biased;
            () = stop.cancelled() => return Ok(()),
            () = tokio::time::sleep_until(due.into()) => {}
        }
        run_fault(system, fault, log, status).await?;
    }
    Ok(())
}

async fn run_fault(
    system: &mut System,
    fault: &PlannedFault,
    log: &mut ChaosLog,
    status: &ChaosStatus,
) -> Result<()> {
    let (fault_id, kind) = (fault.fault_id, fault.kind);
    let role = target_role(kind);
    let target = role.as_str();
    let late_ms = log.offset_ms().saturating_sub(fault.at_ms);

    let skipped = match system.process_mut(role) {
        None => Some(SKIPPED_NOT_STARTED.to_owned()),
        Some(process) => (!process.is_running()).then(|| {
            format!(
                "skipped: {target} was not running (last exit: {})",
                process
                    .exit_status()
                    .map_or("unknown".to_owned(), |s| s.to_string())
            )
        }),
    };
    if let Some(detail) = skipped {
        // A pair, so the timeline shows the fault was due and why it did
        // not happen, without opening a window that never closes.
        log.record(fault_id, kind, FaultPhase::Injected, target, None, &detail)?;
        log.record(fault_id, kind, FaultPhase::Healed, target, None, detail)?;
        status.skip();
        return Ok(());
    }

    let pid = inject(system, kind)
        .await
        .with_context(|| format!("injecting fault #{fault_id} {kind}"))?;
    status.begin(fault_id, kind);
    let mut detail = injection_detail(kind).to_owned();
    if late_ms >= LATE_NOTE_MS {
        let _ = write!(
            detail,
            "; {} s late (the previous fault was still recovering)",
            tenths(late_ms)
        );
    }
    log.record(fault_id, kind, FaultPhase::Injected, target, pid, detail)?;

    // Not cut short by `stop`: a started fault is always held and healed.
    tokio::time::sleep(Duration::from_millis(fault.hold_ms)).await;

    // Recovery time counts from here, so a PostgreSQL restart (whose heal
    // waits for the server to accept connections) shows its real start-up.
    let heal_started = Instant::now();
    let new_pid = match heal(system, kind).await {
        Ok(pid) => pid,
        Err(err) => {
            log.record(
                fault_id,
                kind,
                FaultPhase::Healed,
                target,
                None,
                format!("heal failed: {err:#}"),
            )?;
            status.end(fault_id, false);
            return Err(err.context(format!("healing fault #{fault_id} {kind}")));
        }
    };
    log.record(
        fault_id,
        kind,
        FaultPhase::Healed,
        target,
        new_pid,
        heal_detail(kind),
    )?;

    let recovery = wait_recovered(system, role, Duration::from_millis(RECOVERY_TIMEOUT_MS)).await;
    let took = tenths(millis(heal_started.elapsed()));
    let (recovered, detail) = match recovery {
        Ok(()) => (true, format!("recovered in {took} s")),
        Err(err) => (
            false,
            format!("not recovered {took} s after healing: {err:#}"),
        ),
    };
    status.end(fault_id, recovered);
    let pid = system.process_mut(role).and_then(|process| process.pid());
    log.record(fault_id, kind, FaultPhase::Recovered, target, pid, detail)?;
    Ok(())
}

fn injection_detail(kind: FaultKind) -> &'static str {
    match kind {
        FaultKind::BrokerKill | FaultKind::HistoryKill | FaultKind::WalletKill => "SIGKILL",
        FaultKind::HistoryPause => "SIGSTOP",
        FaultKind::PostgresRestart => "fast shutdown (SIGINT)",
    }
}

fn heal_detail(kind: FaultKind) -> &'static str {
    match kind {
        FaultKind::BrokerKill | FaultKind::HistoryKill | FaultKind::WalletKill => "restarted",
        FaultKind::HistoryPause => "SIGCONT",
        FaultKind::PostgresRestart => "started again, accepting connections",
    }
}

/// Injects `kind` and returns the pid acted on. The fault has taken effect
/// when this returns: a killed process is reaped, a stopped one is seen
/// stopped in `/proc`, PostgreSQL has shut down.
pub async fn inject(system: &mut System, kind: FaultKind) -> Result<Option<u32>> {
    let role = target_role(kind);
    if kind == FaultKind::PostgresRestart {
        let cluster = own_postgres(system)?;
        let pid = cluster.pid();
        cluster.fast_shutdown().await?;
        return Ok(pid);
    }
    let process = own_process(system, role)?;
    let pid = process.pid();
    if kind == FaultKind::HistoryPause {
        process.pause()?;
        if let Some(pid) = pid {
            confirm_stopped(pid).await;
        }
    } else {
        process.kill().await?;
    }
    Ok(pid)
}

fn own_postgres(system: &mut System) -> Result<&mut harness::PgCluster> {
    system
        .postgres
        .as_mut()
        .context("PostgreSQL was not started by this run")
}

fn own_process(system: &mut System, role: Role) -> Result<&mut harness::ManagedProcess> {
    system
        .process_mut(role)
        .with_context(|| format!("{} was not started by this run", role.as_str()))
}

/// Undoes `kind` and returns the pid now serving the part.
pub async fn heal(system: &mut System, kind: FaultKind) -> Result<Option<u32>> {
    let role = target_role(kind);
    if kind == FaultKind::PostgresRestart {
        let cluster = own_postgres(system)?;
        cluster.start_again().await?;
        return Ok(cluster.pid());
    }
    let process = own_process(system, role)?;
    if kind == FaultKind::HistoryPause {
        process.resume()?;
    } else {
        process.restart().await?;
    }
    Ok(process.pid())
}

/// Waits up to `within` until `role` serves again (see the module docs for
/// what that means per part).
pub async fn wait_recovered(system: &System, role: Role, within: Duration) -> Result<()> {
    match role {
        Role::History => wait_history_takeover(system, within).await,
        _ => match tokio::time::timeout(within, system.wait_ready(role)).await {
            Ok(ready) => ready,
            Err(_) => bail!(
                "{} did not answer within {} ms",
                role.as_str(),
                within.as_millis()
            ),
        },
    }
}

async fn wait_history_takeover(system: &System, within: Duration) -> Result<()> {
    let deadline = tokio::time::Instant::now() + within;
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(PROBE_TIMEOUT_MS))
        .build()?;
    let url = format!("{}/health", system.history_url);
    let probe = GroupProbe::new(
        &system.kafka_brokers,
        &system.options.topic,
        &system.options.group_id,
    )?;
    let outcome = loop {
        let waiting_for = match history_partitions(&client, &url).await {
            Ok(held) if held.is_empty() => "history holds no partitions".to_owned(),
            Ok(held) => match probe.unsettled(held).await {
                Ok(None) => break Ok(()),
                Ok(Some(why)) => why,
                Err(err) => format!("asking the broker: {err:#}"),
            },
            Err(err) => format!("GET {url}: {err:#}"),
        };
        if tokio::time::Instant::now() >= deadline {
            break Err(anyhow!(
                "history did not take over the partitions within {} ms; last: {waiting_for}",
                within.as_millis()
            ));
        }
        tokio::time::sleep(Duration::from_millis(RECOVERY_POLL_MS)).await;
    };
    // Destroying a librdkafka client joins its threads; keep that off the
    // async workers.
    let _ = tokio::task::spawn_blocking(move || drop(probe)).await;
    outcome
}

/// The partitions the history member says it holds (`assigned_partitions:`
/// line of `/health`); an error unless it answers 200.
async fn history_partitions(client: &reqwest::Client, url: &str) -> Result<Vec<i32>> {
    let response = client.get(url).send().await?;
    let code = response.status();
    let body = response.text().await?;
    if code != reqwest::StatusCode::OK {
        bail!("status {code}: {}", body.lines().next().unwrap_or_default());
    }
    let line = body
        .lines()
        .find_map(|line| line.strip_prefix("assigned_partitions:"))
        .context("no assigned_partitions line in /health")?;
    line.split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| {
            part.parse()
                .with_context(|| format!("bad partition {part:?}"))
        })
        .collect()
}

/// Asks the broker about the topic and the history consumer group.
struct GroupProbe {
    client: Arc<BaseConsumer>,
    topic: String,
    group: String,
}

impl GroupProbe {
    fn new(brokers: &str, topic: &str, group: &str) -> Result<Self> {
        // No group.id: this client only reads metadata and describes
        // groups, it never joins one.
        let client: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .create()
            .context("creating a Kafka client to describe the consumer group")?;
        Ok(Self {
            client: Arc::new(client),
            topic: topic.to_owned(),
            group: group.to_owned(),
        })
    }

    /// `None` once the takeover is complete: the member (the system runs
    /// one) holds every partition of the topic, and the broker describes
    /// the group as `Stable` with a member. Else what is still missing.
    ///
    /// Every partition, not just one: after a kill, the dead member keeps
    /// its share until its session times out, and the new member may hold
    /// the other share meanwhile; events on the dead share wait.
    async fn unsettled(&self, held: Vec<i32>) -> Result<Option<String>> {
        let client = Arc::clone(&self.client);
        let (topic, group) = (self.topic.clone(), self.group.clone());
        tokio::task::spawn_blocking(move || {
            let timeout = Duration::from_millis(PROBE_TIMEOUT_MS);
            let metadata = client.fetch_metadata(Some(&topic), timeout)?;
            let partitions = metadata
                .topics()
                .iter()
                .find(|t| t.name() == topic)
                .map_or(0, |t| t.partitions().len());
            if partitions == 0 {
                return Ok(Some(format!("topic {topic} has no partitions yet")));
            }
            let all = (0..partitions).all(|p| i32::try_from(p).is_ok_and(|p| held.contains(&p)));
            if !all {
                return Ok(Some(format!(
                    "history holds {held:?} of {partitions} partitions"
                )));
            }
            let list = client.fetch_group_list(Some(&group), timeout)?;
            let Some(info) = list.groups().iter().find(|info| info.name() == group) else {
                return Ok(Some(format!("group {group} unknown to the broker")));
            };
            let members = info.members().len();
            if info.state().eq_ignore_ascii_case("stable") && members > 0 {
                Ok(None)
            } else {
                Ok(Some(format!(
                    "group {group} is {} with {members} members",
                    info.state()
                )))
            }
        })
        .await?
    }
}

/// Sends every part back to work: continues stopped processes, restarts
/// dead ones (PostgreSQL first, since the services need it), then waits
/// until each answers. Each action is written to `log`, if given, as a
/// Healed line with fault id 0 (not a planned fault) and the fault kind
/// closest to what was undone; nothing is written when all was well.
pub async fn heal_all(system: &mut System, mut log: Option<&mut ChaosLog>) -> Result<()> {
    if let Some(cluster) = system.postgres.as_mut() {
        let process = cluster.process_mut();
        if let Some(detail) = continue_if_stopped(process)? {
            note(
                &mut log,
                FaultKind::PostgresRestart,
                Role::Postgres,
                process.pid(),
                &detail,
            )?;
        }
        if !process.is_running() {
            let detail = not_running_detail(process);
            cluster
                .start_again()
                .await
                .context("starting PostgreSQL again")?;
            note(
                &mut log,
                FaultKind::PostgresRestart,
                Role::Postgres,
                cluster.pid(),
                &detail,
            )?;
        }
    }
    for (role, dead, stopped) in [
        (Role::Broker, FaultKind::BrokerKill, FaultKind::BrokerKill),
        (Role::Wallet, FaultKind::WalletKill, FaultKind::WalletKill),
        (
            Role::History,
            FaultKind::HistoryKill,
            FaultKind::HistoryPause,
        ),
    ] {
        let Some(process) = system.process_mut(role) else {
            continue;
        };
        if let Some(detail) = continue_if_stopped(process)? {
            note(&mut log, stopped, role, process.pid(), &detail)?;
        }
        if !process.is_running() {
            let detail = not_running_detail(process);
            process
                .restart()
                .await
                .with_context(|| format!("restarting {}", role.as_str()))?;
            note(&mut log, dead, role, process.pid(), &detail)?;
        }
    }
    for role in [Role::Postgres, Role::Broker, Role::Wallet, Role::History] {
        system.wait_ready(role).await?;
    }
    Ok(())
}

fn continue_if_stopped(process: &mut harness::ManagedProcess) -> Result<Option<String>> {
    match process.pid() {
        Some(pid) if process_state(pid) == Some('T') => {
            process.resume()?;
            Ok(Some(
                "heal_all: continued a stopped process (SIGCONT)".to_owned(),
            ))
        }
        _ => Ok(None),
    }
}

fn not_running_detail(process: &harness::ManagedProcess) -> String {
    let exit = process
        .exit_status()
        .map_or("unknown".to_owned(), |status| status.to_string());
    format!("heal_all: started again; it was not running (last exit: {exit})")
}

fn note(
    log: &mut Option<&mut ChaosLog>,
    kind: FaultKind,
    role: Role,
    pid: Option<u32>,
    detail: &str,
) -> Result<()> {
    if let Some(log) = log.as_deref_mut() {
        log.record(0, kind, FaultPhase::Healed, role.as_str(), pid, detail)?;
    }
    Ok(())
}

/// The state letter of `pid` from `/proc/<pid>/stat` (`R`, `S`, `T` for
/// stopped, ...); `None` if it cannot be read.
pub fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ...": comm may hold spaces and parentheses, so the
    // state is the first field after the last ')'.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().next()?.chars().next()
}

async fn confirm_stopped(pid: u32) {
    let deadline = Instant::now() + Duration::from_millis(STOP_CONFIRM_TIMEOUT_MS);
    loop {
        match process_state(pid) {
            Some('T') => return,
            // No /proc to look at: trust the signal.
            None => return,
            Some(_) if Instant::now() >= deadline => {
                tracing::warn!(pid, "SIGSTOP sent but the process is not seen stopped");
                return;
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(STOP_CONFIRM_POLL_MS)).await,
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_tracks_active_faults_and_counts() {
        let status = ChaosStatus::new();
        let printer = status.clone();
        status.begin(1, FaultKind::BrokerKill);
        status.begin(2, FaultKind::HistoryPause);
        status.end(1, true);
        status.skip();
        assert_eq!(printer.active(), [(2, FaultKind::HistoryPause)]);
        assert_eq!(
            (printer.injected(), printer.recovered(), printer.skipped()),
            (2, 1, 1)
        );
        assert_eq!(
            printer.progress(),
            "faults: 2 injected, 1 recovered, 1 skipped, active #2 history_pause"
        );
        status.end(2, false);
        assert!(printer.active().is_empty());
        assert_eq!(printer.not_recovered(), 1);
    }

    #[test]
    fn every_kind_targets_its_part() {
        let targets: Vec<&str> = FaultKind::ALL
            .iter()
            .map(|&kind| target_role(kind).as_str())
            .collect();
        assert_eq!(
            targets,
            ["broker", "history", "history", "wallet", "postgres"]
        );
    }

    #[test]
    fn process_state_reads_our_own_entry() {
        let state = process_state(std::process::id()).expect("/proc/self/stat");
        assert!(matches!(state, 'R' | 'S' | 'D'), "{state}");
        assert_eq!(process_state(u32::MAX), None);
    }
}
