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
//! What "recovered" means per part is [`crate::recovery`]'s; the progress
//! the runner reports is [`crate::status`]'s.

use std::{
    fmt::Write as _,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use harness::system::{Role, System};
use run_log::{FaultKind, FaultPhase};
use tokio_util::sync::CancellationToken;

pub use crate::recovery::{RECOVERY_TIMEOUT_MS, wait_recovered};
pub use crate::status::ChaosStatus;
use crate::{log::ChaosLog, plan::PlannedFault, plan::tenths};

/// A fault injected this much later than planned (its predecessor was
/// still recovering) says so in its `detail`.
const LATE_NOTE_MS: u64 = 1_000;

/// The `detail` of a fault whose target this run did not start.
pub const SKIPPED_NOT_STARTED: &str = "skipped: not started by this run";

/// The part of the system a fault acts on.
pub fn target_role(kind: FaultKind) -> Role {
    match kind {
        FaultKind::BrokerKill => Role::Broker,
        FaultKind::HistoryKill | FaultKind::HistoryPause | FaultKind::HistoryJoin => Role::History,
        FaultKind::WalletKill => Role::Wallet,
        FaultKind::PostgresRestart | FaultKind::PostgresKill => Role::Postgres,
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
    let late_ms = log.offset_ms().saturating_sub(fault.at_ms);
    if let Some(detail) = skip_reason(system, fault.kind) {
        // A pair, so the timeline shows the fault was due and why it did
        // not happen, without opening a window that never closes.
        let target = target_role(fault.kind).as_str();
        let (id, kind) = (fault.fault_id, fault.kind);
        log.record(id, kind, FaultPhase::Injected, target, None, &detail)?;
        log.record(id, kind, FaultPhase::Healed, target, None, detail)?;
        status.skip();
        return Ok(());
    }
    inject_and_log(system, fault, late_ms, log, status).await?;
    // Not cut short by `stop`: a started fault is always held and healed.
    tokio::time::sleep(Duration::from_millis(fault.hold_ms)).await;
    // Recovery time counts from here, so a PostgreSQL restart (whose heal
    // waits for the server to accept connections) shows its real start-up.
    let heal_started = Instant::now();
    heal_and_log(system, fault, log, status).await?;
    recover_and_log(system, fault, heal_started, log, status).await
}

/// Why a fault cannot be injected: its target is not ours or not running.
fn skip_reason(system: &mut System, kind: FaultKind) -> Option<String> {
    let role = target_role(kind);
    match system.process_mut(role) {
        None => Some(SKIPPED_NOT_STARTED.to_owned()),
        Some(process) => (!process.is_running()).then(|| {
            format!(
                "skipped: {} was not running (last exit: {})",
                role.as_str(),
                process
                    .exit_status()
                    .map_or("unknown".to_owned(), |s| s.to_string())
            )
        }),
    }
}

async fn inject_and_log(
    system: &mut System,
    fault: &PlannedFault,
    late_ms: u64,
    log: &mut ChaosLog,
    status: &ChaosStatus,
) -> Result<()> {
    let (fault_id, kind) = (fault.fault_id, fault.kind);
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
    let target = target_role(kind).as_str();
    log.record(fault_id, kind, FaultPhase::Injected, target, pid, detail)?;
    Ok(())
}

async fn heal_and_log(
    system: &mut System,
    fault: &PlannedFault,
    log: &mut ChaosLog,
    status: &ChaosStatus,
) -> Result<()> {
    let (fault_id, kind) = (fault.fault_id, fault.kind);
    let target = target_role(kind).as_str();
    match heal(system, kind).await {
        Ok(pid) => {
            let detail = heal_detail(kind);
            log.record(fault_id, kind, FaultPhase::Healed, target, pid, detail)?;
            Ok(())
        }
        Err(err) => {
            let detail = format!("heal failed: {err:#}");
            log.record(fault_id, kind, FaultPhase::Healed, target, None, detail)?;
            status.end(fault_id, false);
            Err(err.context(format!("healing fault #{fault_id} {kind}")))
        }
    }
}

async fn recover_and_log(
    system: &mut System,
    fault: &PlannedFault,
    heal_started: Instant,
    log: &mut ChaosLog,
    status: &ChaosStatus,
) -> Result<()> {
    let role = target_role(fault.kind);
    let recovery = wait_recovered(system, role, Duration::from_millis(RECOVERY_TIMEOUT_MS)).await;
    let took = tenths(millis(heal_started.elapsed()));
    let (recovered, detail) = match recovery {
        Ok(()) => (true, format!("recovered in {took} s")),
        Err(err) => (
            false,
            format!("not recovered {took} s after healing: {err:#}"),
        ),
    };
    status.end(fault.fault_id, recovered);
    let pid = system.process_mut(role).and_then(|process| process.pid());
    let target = role.as_str();
    log.record(
        fault.fault_id,
        fault.kind,
        FaultPhase::Recovered,
        target,
        pid,
        detail,
    )?;
    Ok(())
}

fn injection_detail(kind: FaultKind) -> &'static str {
    match kind {
        FaultKind::BrokerKill | FaultKind::HistoryKill | FaultKind::WalletKill => "SIGKILL",
        FaultKind::PostgresKill => "SIGKILL to the postmaster (a crash)",
        FaultKind::HistoryJoin => "another history instance started in a fresh consumer group",
        FaultKind::HistoryPause => "SIGSTOP",
        FaultKind::PostgresRestart => "fast shutdown (SIGINT)",
    }
}

fn heal_detail(kind: FaultKind) -> &'static str {
    match kind {
        FaultKind::BrokerKill | FaultKind::HistoryKill | FaultKind::WalletKill => "restarted",
        FaultKind::HistoryPause => "SIGCONT",
        FaultKind::PostgresRestart => "started again, accepting connections",
        FaultKind::PostgresKill => "started again after crash recovery, accepting connections",
        FaultKind::HistoryJoin => "the late instance stopped (SIGTERM)",
    }
}

/// Injects `kind` and returns the pid acted on. The fault has taken effect
/// when this returns: a killed process is reaped, a stopped one is seen
/// stopped in `/proc`, PostgreSQL has shut down.
pub async fn inject(system: &mut System, kind: FaultKind) -> Result<Option<u32>> {
    let role = target_role(kind);
    if matches!(kind, FaultKind::PostgresRestart | FaultKind::PostgresKill) {
        let cluster = own_postgres(system)?;
        let pid = cluster.pid();
        if kind == FaultKind::PostgresKill {
            cluster.kill().await?;
        } else {
            cluster.fast_shutdown().await?;
        }
        return Ok(pid);
    }
    if kind == FaultKind::HistoryJoin {
        return system.start_late_history().await;
    }
    let process = own_process(system, role)?;
    let pid = process.pid();
    if kind == FaultKind::HistoryPause {
        process.pause().await?;
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
    if matches!(kind, FaultKind::PostgresRestart | FaultKind::PostgresKill) {
        let cluster = own_postgres(system)?;
        cluster.start_again().await?;
        return Ok(cluster.pid());
    }
    if kind == FaultKind::HistoryJoin {
        system.stop_late_history().await?;
        return Ok(system.history.pid());
    }
    let process = own_process(system, role)?;
    if kind == FaultKind::HistoryPause {
        process.resume()?;
    } else {
        process.restart().await?;
    }
    Ok(process.pid())
}

/// Sends every part back to work: continues stopped processes, restarts
/// dead ones (PostgreSQL first, since the services need it), then waits
/// until each answers. Each action is written to `log`, if given, as a
/// Healed line with fault id 0 (not a planned fault) and the fault kind
/// closest to what was undone; nothing is written when all was well.
pub async fn heal_all(system: &mut System, mut log: Option<&mut ChaosLog>) -> Result<()> {
    // A late history instance is an extra, not a part: it is stopped.
    if let Some(pid) = system.stop_late_history().await? {
        note(
            &mut log,
            FaultKind::HistoryJoin,
            Role::History,
            Some(pid),
            heal_detail(FaultKind::HistoryJoin),
        )?;
    }
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
        Some(pid) if harness::procfs::state(pid) == Some('T') => {
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
            [
                "broker", "history", "history", "wallet", "postgres", "postgres", "history"
            ]
        );
    }
}
