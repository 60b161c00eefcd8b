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
use crate::{log::ChaosLog, network, plan::PlannedFault, plan::tenths};

/// A fault injected this much later than planned (its predecessor was
/// still recovering) says so in its `detail`.
const LATE_NOTE_MS: u64 = 1_000;

/// The `detail` of a fault whose target this run did not start.
pub const SKIPPED_NOT_STARTED: &str = "skipped: not started by this run";

/// The process a fault acts on; `None` for a network fault, which acts on
/// a link ([`PlannedFault::link`], see [`crate::network`]).
pub fn target_role(kind: FaultKind) -> Option<Role> {
    match kind {
        FaultKind::BrokerKill => Some(Role::Broker),
        FaultKind::HistoryKill | FaultKind::HistoryPause | FaultKind::HistoryJoin => {
            Some(Role::History)
        }
        FaultKind::WalletKill => Some(Role::Wallet),
        FaultKind::PostgresRestart | FaultKind::PostgresKill => Some(Role::Postgres),
        FaultKind::NetLatency
        | FaultKind::NetDrop
        | FaultKind::NetPartition
        | FaultKind::LostResponse => None,
    }
}

/// Runs `plan` against `system`, timing each fault from the log's load
/// start, and writes Injected, Healed and Recovered for each.
///
/// Faults are injected in plan order. An overlapping fault
/// ([`PlannedFault::overlaps`]) is injected at its time while the faults
/// before it still hold; any other fault first waits until every earlier
/// fault has healed and recovered, and is injected at once if that made it
/// late. A fault is healed when its hold ends; recovery is waited for once
/// no fault holds any more (a part cannot be judged while another part it
/// needs is still broken), and its time counts from its own heal.
///
/// `stop` ends the run between faults: a fault not yet injected is dropped,
/// but one already injected is held for its full time, healed and waited
/// for, so the run never leaves a fault behind. A fault that cannot be
/// injected is recorded as skipped with the reason, and a part that does
/// not recover as not recovered; the run goes on. An error is returned
/// only when a heal fails: the harness cannot bring its own part back.
pub async fn run_plan(
    system: &mut System,
    plan: &[PlannedFault],
    log: &mut ChaosLog,
    status: &ChaosStatus,
    stop: &CancellationToken,
) -> Result<()> {
    let mut pending = plan.iter().peekable();
    // Injected, not yet healed: the fault and when its hold ends.
    let mut holding: Vec<(&PlannedFault, Instant)> = Vec::new();
    // Healed, recovery not yet judged: the fault and when its heal began.
    let mut healed: Vec<(&PlannedFault, Instant)> = Vec::new();
    loop {
        let next_heal = holding
            .iter()
            .enumerate()
            .min_by_key(|(_, (_, due))| *due)
            .map(|(index, &(_, due))| (index, due));
        // The next fault may go in now only if it overlaps by design or
        // nothing else is in flight.
        let next_inject = pending
            .peek()
            .filter(|fault| !stop.is_cancelled() && (fault.overlaps || holding.is_empty()))
            .map(|fault| {
                (
                    *fault,
                    log.load_start() + Duration::from_millis(fault.at_ms),
                )
            });
        let inject_first = match (next_inject, next_heal) {
            (Some((_, due)), Some((_, heal_due))) => due < heal_due,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if let (true, Some((fault, due))) = (inject_first, next_inject) {
            tokio::select! {
                biased;
                () = stop.cancelled() => continue,
                () = tokio::time::sleep_until(due.into()) => {}
            }
            pending.next();
            if start_fault(system, fault, log, status).await? {
                let hold = Duration::from_millis(fault.hold_ms);
                holding.push((fault, Instant::now() + hold));
            }
        } else if let Some((index, due)) = next_heal {
            // Not cut short by `stop`: a started fault is always held and
            // healed.
            tokio::time::sleep_until(due.into()).await;
            let (fault, _) = holding.swap_remove(index);
            // Recovery time counts from here, so a PostgreSQL restart
            // (whose heal waits for the server to accept connections)
            // shows its real start-up.
            let heal_started = Instant::now();
            heal_and_log(system, fault, log, status).await?;
            healed.push((fault, heal_started));
            if holding.is_empty() {
                for (fault, heal_started) in healed.drain(..) {
                    recover_and_log(system, fault, heal_started, log, status).await?;
                }
            }
        } else {
            // Nothing holds, so a waiting fault could have gone in: the
            // plan is done or the run was stopped.
            return Ok(());
        }
    }
}

/// Injects `fault` (true), or records why it cannot be (false).
async fn start_fault(
    system: &mut System,
    fault: &PlannedFault,
    log: &mut ChaosLog,
    status: &ChaosStatus,
) -> Result<bool> {
    let late_ms = log.offset_ms().saturating_sub(fault.at_ms);
    if let Some(detail) = skip_reason(system, fault) {
        record_skipped(fault, detail, log, status)?;
        return Ok(false);
    }
    if let Err(err) = inject_and_log(system, fault, late_ms, log, status).await {
        // One fault that could not be put in does not end the experiment:
        // the faults already holding must still be healed, and the run
        // judged. heal_all undoes whatever part of it took effect.
        tracing::warn!(fault_id = fault.fault_id, "{err:#}");
        let detail = format!("skipped: injection failed: {err:#}");
        record_skipped(fault, detail, log, status)?;
        return Ok(false);
    }
    Ok(true)
}

/// A pair, so the timeline shows the fault was due and why it did not
/// happen, without opening a window that never closes.
fn record_skipped(
    fault: &PlannedFault,
    detail: String,
    log: &mut ChaosLog,
    status: &ChaosStatus,
) -> Result<()> {
    let target = fault.target();
    let (id, kind) = (fault.fault_id, fault.kind);
    log.record(id, kind, FaultPhase::Injected, &target, None, &detail)?;
    log.record(id, kind, FaultPhase::Healed, &target, None, detail)?;
    status.skip();
    Ok(())
}

/// Why a fault cannot be injected: its target is not ours or not running.
fn skip_reason(system: &mut System, fault: &PlannedFault) -> Option<String> {
    let Some(role) = target_role(fault.kind) else {
        return network::skip_reason(system, fault.network_link());
    };
    let instance = target_instance(fault);
    let count = system.instance_count(role);
    match system.instance_mut(role, instance) {
        None if instance >= count => Some(format!(
            "skipped: this run has {count} {} instance(s)",
            role.as_str()
        )),
        None => Some(SKIPPED_NOT_STARTED.to_owned()),
        Some(process) => (!process.is_running()).then(|| {
            format!(
                "skipped: {} was not running (last exit: {})",
                fault.target(),
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
    let pid = inject(system, fault)
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
    log.record(
        fault_id,
        kind,
        FaultPhase::Injected,
        &fault.target(),
        pid,
        detail,
    )?;
    Ok(())
}

async fn heal_and_log(
    system: &mut System,
    fault: &PlannedFault,
    log: &mut ChaosLog,
    status: &ChaosStatus,
) -> Result<()> {
    let (fault_id, kind) = (fault.fault_id, fault.kind);
    let target = fault.target();
    match heal(system, fault).await {
        Ok(pid) => {
            let detail = heal_detail(kind);
            log.record(fault_id, kind, FaultPhase::Healed, &target, pid, detail)?;
            Ok(())
        }
        Err(err) => {
            let detail = format!("heal failed: {err:#}");
            log.record(fault_id, kind, FaultPhase::Healed, &target, None, detail)?;
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
    let instance = target_instance(fault);
    let within = Duration::from_millis(RECOVERY_TIMEOUT_MS);
    let role = target_role(fault.kind);
    let recovery = match role {
        Some(role) => wait_recovered(system, role, instance, within).await,
        None => network::wait_recovered_through(system, fault.network_link(), within).await,
    };
    let took = tenths(millis(heal_started.elapsed()));
    let (recovered, detail) = match recovery {
        Ok(()) => (true, format!("recovered in {took} s")),
        Err(err) => (
            false,
            format!("not recovered {took} s after healing: {err:#}"),
        ),
    };
    status.end(fault.fault_id, recovered);
    let pid = role
        .and_then(|role| system.instance_mut(role, instance))
        .and_then(|process| process.pid());
    log.record(
        fault.fault_id,
        fault.kind,
        FaultPhase::Recovered,
        &fault.target(),
        pid,
        detail,
    )?;
    Ok(())
}

/// The instance a fault acts on (the first one for a late history
/// instance, whose recovery is the regular members' takeover).
fn target_instance(fault: &PlannedFault) -> usize {
    if fault.kind == FaultKind::HistoryJoin {
        0
    } else {
        fault.instance
    }
}

fn injection_detail(kind: FaultKind) -> &'static str {
    match kind {
        FaultKind::BrokerKill | FaultKind::HistoryKill | FaultKind::WalletKill => "SIGKILL",
        FaultKind::PostgresKill => "SIGKILL to the postmaster (a crash)",
        FaultKind::HistoryJoin => "another history instance started in a fresh consumer group",
        FaultKind::HistoryPause => "SIGSTOP",
        FaultKind::PostgresRestart => "fast shutdown (SIGINT)",
        FaultKind::NetLatency => "every chunk delayed 150 ms each way",
        FaultKind::NetDrop => "every open connection reset",
        FaultKind::NetPartition => "open connections reset, new ones refused",
        FaultKind::LostResponse => "requests delivered, answers dropped with the connection",
    }
}

fn heal_detail(kind: FaultKind) -> &'static str {
    match kind {
        FaultKind::BrokerKill | FaultKind::HistoryKill | FaultKind::WalletKill => "restarted",
        FaultKind::HistoryPause => "SIGCONT",
        FaultKind::PostgresRestart => "started again, accepting connections",
        FaultKind::PostgresKill => "started again after crash recovery, accepting connections",
        FaultKind::HistoryJoin => "the late instance stopped (SIGTERM)",
        FaultKind::NetLatency
        | FaultKind::NetDrop
        | FaultKind::NetPartition
        | FaultKind::LostResponse => "bytes pass again",
    }
}

/// Injects `kind` and returns the pid acted on. The fault has taken effect
/// when this returns: a killed process is reaped, a stopped one is seen
/// stopped in `/proc`, PostgreSQL has shut down.
pub async fn inject(system: &mut System, fault: &PlannedFault) -> Result<Option<u32>> {
    let kind = fault.kind;
    let Some(role) = target_role(kind) else {
        network::inject(system, kind, fault.network_link())?;
        return Ok(None);
    };
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
    let process = own_process(system, role, fault.instance)?;
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

fn own_process(
    system: &mut System,
    role: Role,
    instance: usize,
) -> Result<&mut harness::ManagedProcess> {
    system.instance_mut(role, instance).with_context(|| {
        format!(
            "{} was not started by this run",
            harness::system::instance_name(role, instance)
        )
    })
}

/// Undoes `kind` and returns the pid now serving the part.
pub async fn heal(system: &mut System, fault: &PlannedFault) -> Result<Option<u32>> {
    let kind = fault.kind;
    let Some(role) = target_role(kind) else {
        network::heal(system, fault.network_link())?;
        return Ok(None);
    };
    if matches!(kind, FaultKind::PostgresRestart | FaultKind::PostgresKill) {
        let cluster = own_postgres(system)?;
        cluster.start_again().await?;
        return Ok(cluster.pid());
    }
    if kind == FaultKind::HistoryJoin {
        return system.stop_late_history().await;
    }
    let process = own_process(system, role, fault.instance)?;
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
            Role::History.as_str(),
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
                Role::Postgres.as_str(),
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
                Role::Postgres.as_str(),
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
        for instance in 0..system.instance_count(role) {
            let target = harness::system::instance_name(role, instance);
            let Some(process) = system.instance_mut(role, instance) else {
                continue;
            };
            if let Some(detail) = continue_if_stopped(process)? {
                note(&mut log, stopped, &target, process.pid(), &detail)?;
            }
            if !process.is_running() {
                let detail = not_running_detail(process);
                process
                    .restart()
                    .await
                    .with_context(|| format!("restarting {target}"))?;
                note(&mut log, dead, &target, process.pid(), &detail)?;
            }
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
    target: &str,
    pid: Option<u32>,
    detail: &str,
) -> Result<()> {
    if let Some(log) = log.as_deref_mut() {
        log.record(0, kind, FaultPhase::Healed, target, pid, detail)?;
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
            .map(|&kind| target_role(kind).map_or("a link", Role::as_str))
            .collect();
        assert_eq!(
            targets,
            [
                "broker", "history", "history", "wallet", "postgres", "postgres", "history",
                "a link", "a link", "a link", "a link"
            ]
        );
        for kind in FaultKind::ALL {
            assert_eq!(target_role(kind).is_none(), kind.is_network(), "{kind}");
        }
    }
}
