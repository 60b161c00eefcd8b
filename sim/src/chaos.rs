//! Faults in the simulated world, in the live run's vocabulary
//! (`run_log::FaultKind`, `chaos.jsonl`'s `ChaosEvent`s), plus what only a
//! simulation can aim at: a crash at any I/O step of any instance
//! (between a database commit and an offset store, between a send and a
//! mark), serialization failures, commits whose outcome is lost, lost and
//! refused acknowledgements, lost responses.
//!
//! A seed draws its [`FaultPlan`]: the probabilities of the injected
//! faults ([`Knobs`]) and a schedule of timed faults, which may overlap.
//! In swarm mode each seed also draws which kinds are enabled at all and
//! how often they strike.

use std::{cell::RefCell, rc::Rc, time::Duration};

use rand::Rng;
use run_log::{ChaosEvent, FaultKind, FaultPhase};
use serde::{Deserialize, Serialize};

use crate::{
    client,
    cluster::{self, Cluster, Role},
    exec,
    world::{self, Knobs},
};

/// Timed faults come in this window of the load, so the last one heals
/// before the load ends.
const WINDOW_START: Duration = Duration::from_secs(3);
const WINDOW_END_BEFORE: Duration = Duration::from_secs(8);

/// A fault at a time (from the load's start), held for a while.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimedFault {
    pub at_ms: u64,
    pub kind: FaultKind,
    /// Which instance, for the kinds that have several.
    pub instance: usize,
    pub hold_ms: u64,
}

/// A seed's faults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultPlan {
    pub knobs: Knobs,
    pub timed: Vec<TimedFault>,
    /// Crashes at I/O steps, at most.
    pub crash_budget: u32,
}

impl FaultPlan {
    /// No faults at all.
    pub fn none() -> FaultPlan {
        FaultPlan {
            knobs: Knobs::default(),
            timed: Vec::new(),
            crash_budget: 0,
        }
    }

    /// The plan of a seed. Default: every kind on at a moderate rate;
    /// swarm: each kind on with even odds, its rate drawn up to twice the
    /// default.
    pub fn draw(
        rng: &mut impl Rng,
        swarm: bool,
        load: Duration,
        wallets: usize,
        histories: usize,
    ) -> FaultPlan {
        let mut rate = |base: f64| -> f64 {
            if !swarm {
                return base;
            }
            if rng.random_bool(0.5) {
                base * rng.random_range(0.25..2.0)
            } else {
                0.0
            }
        };
        let knobs = Knobs {
            crash: rate(1e-4),
            serialization_failure: rate(2e-3),
            commit_unknown: rate(2e-3),
            ack_lost: rate(2e-3),
            produce_refused: rate(1e-3),
            response_lost: rate(2e-3),
        };
        // The model's stop already loses every open transaction, as a crash
        // does, and has no checkpoint to skip: a PostgreSQL kill would be
        // the restart drawn twice. A late joiner in a fresh group is not
        // modelled (the sim's consumers all share one group).
        let menu: Vec<FaultKind> = FaultKind::ALL
            .into_iter()
            .filter(|&kind| is_simulated(kind))
            .filter(|_| !swarm || rng.random_bool(0.7))
            .collect();
        let count = if menu.is_empty() {
            0
        } else {
            rng.random_range(3..=6)
        };
        let window_end = load.saturating_sub(WINDOW_END_BEFORE).max(WINDOW_START);
        let mut timed: Vec<TimedFault> = (0..count)
            .map(|_| {
                let kind = menu[rng.random_range(0..menu.len())];
                let at_ms = rng.random_range(millis(WINDOW_START)..=millis(window_end));
                let hold_ms = match kind {
                    // Past the session timeout: the member is evicted and
                    // continues as a zombie.
                    FaultKind::HistoryPause => {
                        millis(cluster::SESSION_TIMEOUT) + rng.random_range(500..3_000)
                    }
                    FaultKind::BrokerKill => rng.random_range(500..5_000),
                    FaultKind::PostgresRestart | FaultKind::PostgresKill => {
                        rng.random_range(200..3_000)
                    }
                    FaultKind::WalletKill | FaultKind::HistoryKill | FaultKind::HistoryJoin => {
                        rng.random_range(200..3_000)
                    }
                    // Not on the menu (see is_simulated).
                    FaultKind::NetLatency
                    | FaultKind::NetDrop
                    | FaultKind::NetPartition
                    | FaultKind::LostResponse => 0,
                };
                let instance = match kind {
                    FaultKind::WalletKill => rng.random_range(0..wallets),
                    FaultKind::HistoryKill | FaultKind::HistoryPause | FaultKind::HistoryJoin => {
                        rng.random_range(0..histories)
                    }
                    FaultKind::BrokerKill
                    | FaultKind::PostgresRestart
                    | FaultKind::PostgresKill
                    | FaultKind::NetLatency
                    | FaultKind::NetDrop
                    | FaultKind::NetPartition
                    | FaultKind::LostResponse => 0,
                };
                TimedFault {
                    at_ms,
                    kind,
                    instance,
                    hold_ms,
                }
            })
            .collect();
        timed.sort_by_key(|f| f.at_ms);
        let crash_budget = if knobs.crash > 0.0 {
            rng.random_range(1..=5)
        } else {
            0
        };
        FaultPlan {
            knobs,
            timed,
            crash_budget,
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The fault timeline of a run, as `chaos.jsonl` holds it.
#[derive(Default)]
pub struct Timeline {
    pub events: RefCell<Vec<ChaosEvent>>,
    next_id: RefCell<u32>,
    /// When the load started (offsets count from here).
    pub load_start: RefCell<Duration>,
}

impl Timeline {
    pub fn new_fault(&self) -> u32 {
        let mut next = self.next_id.borrow_mut();
        *next += 1;
        *next
    }

    /// Closes the window of every fault still open: the heal undid them.
    pub fn close_open(&self) {
        let open: Vec<(u32, FaultKind, String)> = {
            let events = self.events.borrow();
            events
                .iter()
                .filter(|e| e.phase == FaultPhase::Injected)
                .filter(|e| {
                    !events
                        .iter()
                        .any(|h| h.fault_id == e.fault_id && h.phase == FaultPhase::Healed)
                })
                .map(|e| (e.fault_id, e.kind, e.target.clone()))
                .collect()
        };
        for (fault_id, kind, target) in open {
            self.record(
                fault_id,
                kind,
                FaultPhase::Healed,
                &target,
                "healed for the liveness phase".into(),
            );
            self.record(fault_id, kind, FaultPhase::Recovered, &target, "up".into());
        }
    }

    pub fn record(
        &self,
        fault_id: u32,
        kind: FaultKind,
        phase: FaultPhase,
        target: &str,
        detail: String,
    ) {
        let now = exec::with(|e| e.now());
        let offset = now.saturating_sub(*self.load_start.borrow());
        world::trace("chaos", &[i64::from(fault_id), phase as i64], Some(&detail));
        self.events.borrow_mut().push(ChaosEvent {
            fault_id,
            kind,
            phase,
            at: client::at(now),
            offset_ms: millis(offset),
            target: target.to_owned(),
            pid: None,
            detail,
        });
    }
}

fn kill_kind(role: Role) -> FaultKind {
    match role {
        Role::Wallet(_) => FaultKind::WalletKill,
        Role::History(_) => FaultKind::HistoryKill,
    }
}

/// Crashes `role` at I/O step `step` (the driver chose this point) and
/// starts it again after a pause drawn from the seed.
pub fn crash_at(cluster: &Rc<Cluster>, timeline: &Rc<Timeline>, role: Role, step: &str) {
    let fault_id = timeline.new_fault();
    let kind = kill_kind(role);
    cluster.kill(role);
    world::count(|c| *c.crash_points.entry(step.to_owned()).or_default() += 1);
    timeline.record(
        fault_id,
        kind,
        FaultPhase::Injected,
        &role.name(),
        format!("crash before {step}"),
    );
    let down = Duration::from_millis(exec::with(|e| {
        e.random(|rng| rng.random_range(100..3_000u64))
    }));
    let (cluster, timeline) = (cluster.clone(), timeline.clone());
    exec::with(|e| {
        e.spawn(cluster::CHAOS, async move {
            exec::sleep(down).await;
            cluster.start(role);
            timeline.record(
                fault_id,
                kind,
                FaultPhase::Healed,
                &role.name(),
                "restarted".into(),
            );
            timeline.record(
                fault_id,
                kind,
                FaultPhase::Recovered,
                &role.name(),
                "up".into(),
            );
        })
    });
}

/// Works through the timed faults; each is injected, held, healed.
pub async fn run_timed(cluster: Rc<Cluster>, timeline: Rc<Timeline>, faults: Vec<TimedFault>) {
    for fault in faults {
        let start = *timeline.load_start.borrow();
        let due = start + Duration::from_millis(fault.at_ms);
        let now = exec::with(|e| e.now());
        if due > now {
            exec::sleep(due - now).await;
        }
        let (cluster, timeline) = (cluster.clone(), timeline.clone());
        // Held faults overlap: each runs on its own.
        exec::with(|e| {
            e.spawn(cluster::CHAOS, async move {
                one(cluster, timeline, fault).await
            })
        });
    }
}

/// Whether the simulator draws live fault kind `kind` as a timed fault.
/// Not a PostgreSQL crash (its stop is the same model step as a restart),
/// not a late history instance (the sim's consumers share one group), and
/// no network kind: those have their simulated counterparts among the
/// injected faults instead (lost responses, dropped sessions at crash
/// points, delayed and refused acknowledgements).
pub fn is_simulated(kind: FaultKind) -> bool {
    !matches!(kind, FaultKind::PostgresKill | FaultKind::HistoryJoin) && !kind.is_network()
}

async fn one(cluster: Rc<Cluster>, timeline: Rc<Timeline>, fault: TimedFault) {
    let fault_id = timeline.new_fault();
    let kind = fault.kind;
    let (target, injected, healed) = match kind {
        FaultKind::BrokerKill => {
            cluster.kafka.stop();
            ("broker".to_owned(), "broker stopped", "broker started")
        }
        FaultKind::PostgresRestart | FaultKind::PostgresKill => {
            cluster.pg.stop();
            ("postgres".to_owned(), "server stopped", "server started")
        }
        FaultKind::WalletKill | FaultKind::HistoryKill => {
            let role = if kind == FaultKind::WalletKill {
                Role::Wallet(fault.instance)
            } else {
                Role::History(fault.instance)
            };
            cluster.kill(role);
            (role.name(), "SIGKILL", "restarted")
        }
        FaultKind::HistoryPause => {
            let role = Role::History(fault.instance);
            exec::with(|e| e.pause(role.process()));
            (role.name(), "SIGSTOP", "SIGCONT")
        }
        // Not on the simulator's menu (a hand-written replay could name them).
        FaultKind::HistoryJoin
        | FaultKind::NetLatency
        | FaultKind::NetDrop
        | FaultKind::NetPartition
        | FaultKind::LostResponse => return,
    };
    timeline.record(
        fault_id,
        kind,
        FaultPhase::Injected,
        &target,
        injected.into(),
    );
    exec::sleep(Duration::from_millis(fault.hold_ms)).await;
    match kind {
        FaultKind::BrokerKill => cluster.kafka.start(),
        FaultKind::PostgresRestart | FaultKind::PostgresKill => cluster.pg.start(),
        FaultKind::WalletKill => cluster.start(Role::Wallet(fault.instance)),
        FaultKind::HistoryKill => cluster.start(Role::History(fault.instance)),
        FaultKind::HistoryPause => {
            exec::with(|e| e.resume(Role::History(fault.instance).process()))
        }
        FaultKind::HistoryJoin
        | FaultKind::NetLatency
        | FaultKind::NetDrop
        | FaultKind::NetPartition
        | FaultKind::LostResponse => {}
    }
    timeline.record(fault_id, kind, FaultPhase::Healed, &target, healed.into());
    timeline.record(fault_id, kind, FaultPhase::Recovered, &target, "up".into());
}

/// The heal before the liveness phase: everything up and running again.
pub fn heal_all(cluster: &Rc<Cluster>) {
    exec::with(|e| e.kill(cluster::CHAOS));
    cluster.kafka.start();
    cluster.pg.start();
    for i in 0..cluster.wallets {
        cluster.start(Role::Wallet(i));
    }
    for j in 0..cluster.histories {
        let role = Role::History(j);
        exec::with(|e| e.resume(role.process()));
        cluster.start(role);
    }
}
