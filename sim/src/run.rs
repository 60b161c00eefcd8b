//! One seed, start to verdict, in simulated time: the same phases as a
//! live run. Set-up, then the safety phase (load and faults), heal, the
//! liveness phase (the outbox drains and history converges within a bound,
//! or that is a violation), and the check: the unchanged consistency
//! checker over a snapshot of the simulated databases, the operation log
//! and the fault timeline.

use std::{
    cell::{Cell, RefCell},
    panic::AssertUnwindSafe,
    rc::Rc,
    time::Duration,
};

use consistency_checker::{Report, Snapshot};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use run_log::{ChaosEvent, OpRecord, summary::Convergence};
use workload::{Scenario, Workload};

use crate::{
    chaos::{self, FaultPlan, Timeline},
    client::{self, LoadContext, OpsLog},
    cluster::{self, Cluster, Role},
    exec::Executor,
    snapshot,
    world::{self, Counters, World},
};

/// The fault plan's stream of the seed, apart from the scheduler's.
const PLAN_SALT: u64 = 0x5349_4d5f_504c_414e;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub scenario: Scenario,
    pub wallet_instances: usize,
    pub history_instances: usize,
    /// How long history may take to catch up once faults heal.
    pub converge_bound: Duration,
    pub swarm: bool,
    pub faults: bool,
    /// Keep the trace's lines (for trace.jsonl and determinism diffs).
    pub keep_trace: bool,
}

impl SimConfig {
    /// The default simulated scenario: 60 s of load at 35 operations/s
    /// (2,100 operations, plus 80 to set up 40 wallets), 2 wallet and 2
    /// history instances.
    pub fn standard() -> SimConfig {
        let scenario = Scenario {
            name: "sim".into(),
            description: "simulated: 60 s at 35 ops/s, 2 wallet and 2 history instances".into(),
            wallets: 40,
            users: 8,
            duration: Duration::from_secs(60),
            rate: 35,
            mix: workload::scenario::Mix {
                transfer: 85,
                fund: 10,
                get_wallet: 5,
                get_history: 0,
            },
            ..Scenario::default()
        };
        SimConfig {
            scenario,
            wallet_instances: 2,
            history_instances: 2,
            converge_bound: Duration::from_secs(120),
            swarm: false,
            faults: true,
            keep_trace: false,
        }
    }
}

/// What one seed did and what the checker said.
pub struct SeedOutcome {
    pub seed: u64,
    pub report: Option<Report>,
    /// A panic in the simulated code (an assertion that fired).
    pub panic: Option<String>,
    pub trace_hash: u64,
    pub trace_events: u64,
    pub trace_lines: Vec<String>,
    pub counters: Counters,
    pub ops: Vec<OpRecord>,
    pub chaos: Vec<ChaosEvent>,
    pub plan: FaultPlan,
    pub convergence: Option<Convergence>,
    pub simulated: Duration,
    pub polls: u64,
}

/// Invariants the simulator cannot give the checker input for: the
/// history API is SQL over PostgreSQL with no seam beneath it, so there is
/// no walk of it (live runs walk it).
pub const NOT_SIMULATED: [consistency_checker::Invariant; 1] =
    [consistency_checker::Invariant::HistoryReadsMatch];

impl SeedOutcome {
    /// No violation, no panic, and every invariant evaluated that a
    /// simulated run gives the checker what it needs for (all but
    /// [`NOT_SIMULATED`]).
    pub fn passed(&self) -> bool {
        self.panic.is_none()
            && self.report.as_ref().is_some_and(|r| {
                r.passed
                    && r.checks.iter().all(|c| {
                        c.status != consistency_checker::Status::NotEvaluated
                            || NOT_SIMULATED.contains(&c.invariant)
                    })
            })
    }

    /// The violated invariants' names, and `panic` for a fired assertion.
    pub fn violated(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .report
            .as_ref()
            .map(|r| r.violated().iter().map(|i| i.as_str().to_owned()).collect())
            .unwrap_or_default();
        if self.panic.is_some() {
            names.push("panic".into());
        }
        names
    }
}

/// Runs seed `seed`, with `plan` instead of the drawn one if given.
pub fn run_seed(seed: u64, config: &SimConfig, plan: Option<FaultPlan>) -> SeedOutcome {
    let plan = plan.unwrap_or_else(|| {
        if !config.faults {
            return FaultPlan::none();
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ PLAN_SALT);
        FaultPlan::draw(
            &mut rng,
            config.swarm,
            config.scenario.duration,
            config.wallet_instances,
            config.history_instances,
        )
    });
    let executor = Executor::new(seed);
    let world = World::new(plan.knobs.clone(), config.keep_trace, plan.crash_budget);
    let result: Rc<RefCell<Option<Simulated>>> = Rc::new(RefCell::new(None));
    let panic = {
        let result = result.clone();
        let (executor, world) = (executor.clone(), world.clone());
        let plan = plan.clone();
        std::panic::catch_unwind(AssertUnwindSafe(move || {
            executor.enter(|| {
                world.enter(|| {
                    *result.borrow_mut() = Some(simulate(&executor, seed, config, &plan));
                })
            })
        }))
        .err()
        .map(|payload| panic_message(&payload))
    };
    let simulated = result.borrow_mut().take();
    let mut trace = world.trace.borrow_mut();
    let (report, ops, chaos, convergence) = match simulated {
        Some(s) => (Some(s.report), s.ops, s.chaos, Some(s.convergence)),
        None => (None, Vec::new(), Vec::new(), None),
    };
    SeedOutcome {
        seed,
        report,
        panic,
        trace_hash: trace.hash(),
        trace_events: trace.events(),
        trace_lines: trace.take_lines(),
        counters: world.counters.borrow().clone(),
        ops,
        chaos,
        plan,
        convergence,
        simulated: executor.now(),
        polls: executor.polls(),
    }
}

fn panic_message(payload: &Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "panic".to_owned())
}

struct Simulated {
    report: Report,
    ops: Vec<OpRecord>,
    chaos: Vec<ChaosEvent>,
    convergence: Convergence,
}

fn simulate(executor: &Rc<Executor>, seed: u64, config: &SimConfig, plan: &FaultPlan) -> Simulated {
    let cluster = Cluster::new(config.wallet_instances, config.history_instances);
    cluster.start_all();
    let timeline = Rc::new(Timeline::default());
    // Sized for the plan (set-up plus the load) up front: a record is a few
    // hundred bytes, and growing the log moves all of them.
    let planned = 2 * u64::from(config.scenario.wallets)
        + u64::from(config.scenario.rate) * config.scenario.duration.as_secs();
    let ops: OpsLog = Rc::new(RefCell::new(Vec::with_capacity(
        usize::try_from(planned).unwrap_or(0),
    )));
    let load_done = Rc::new(Cell::new(false));
    spawn_load(&cluster, &timeline, seed, config, plan, &ops, &load_done);

    // The safety phase: until the load's last operation settled.
    let driver = Driver {
        executor: executor.clone(),
        cluster: cluster.clone(),
        timeline: timeline.clone(),
    };
    let horizon = config.scenario.duration * 4 + Duration::from_secs(120);
    while !load_done.get() && driver.step(horizon) {}

    // Heal, then the liveness phase.
    world::try_with(|w| w.faults_on.set(false));
    chaos::heal_all(&cluster);
    timeline.close_open();
    let heal_at = executor.now();
    let load_start = *timeline.load_start.borrow();
    let deadline = heal_at + config.converge_bound;
    let mut converged = false;
    let mut next_probe = heal_at;
    while executor.now() <= deadline {
        if executor.now() >= next_probe {
            if snapshot::converged(&cluster) {
                converged = true;
                break;
            }
            next_probe = executor.now() + Duration::from_millis(100);
        }
        if !driver.step(next_probe.min(deadline)) {
            executor.jump_to(next_probe.min(deadline));
            if executor.now() >= deadline {
                break;
            }
        }
    }
    let convergence = Convergence {
        converged,
        took_ms: millis(executor.now() - heal_at),
        bound_ms: millis(config.converge_bound),
        started_offset_ms: Some(millis(heal_at.saturating_sub(load_start))),
    };
    world::trace(
        "converged",
        &[i64::from(converged), convergence.took_ms as i64],
        None,
    );

    // The check.
    let chaos_events = timeline.events.borrow().clone();
    let mut snapshot: Snapshot = snapshot::take(&cluster);
    // The load is over: the log moves to the checker and back, uncopied.
    snapshot.ops = std::mem::take(&mut *ops.borrow_mut());
    snapshot.faults = run_log::fault_windows(&chaos_events);
    snapshot.convergence = Some(convergence);
    let report = consistency_checker::check(&snapshot);
    Simulated {
        report,
        ops: std::mem::take(&mut snapshot.ops),
        chaos: chaos_events,
        convergence,
    }
}

fn spawn_load(
    cluster: &Rc<Cluster>,
    timeline: &Rc<Timeline>,
    seed: u64,
    config: &SimConfig,
    plan: &FaultPlan,
    ops: &OpsLog,
    load_done: &Rc<Cell<bool>>,
) {
    let (cluster, timeline, ops, done) = (
        cluster.clone(),
        timeline.clone(),
        ops.clone(),
        load_done.clone(),
    );
    let scenario = config.scenario.clone();
    let timed = plan.timed.clone();
    crate::exec::with(|e| {
        e.spawn(cluster::CLIENTS, async move {
            let workload = Rc::new(Workload::new(seed, &scenario));
            let bearers = client::bearers(&cluster, &workload);
            let wallet_ids = client::setup(&cluster, &workload, &bearers, seed, &ops).await;
            let start = crate::exec::with(|e| e.now());
            *timeline.load_start.borrow_mut() = start;
            world::try_with(|w| w.faults_on.set(true));
            let (c, t) = (cluster.clone(), timeline.clone());
            crate::exec::with(|e| e.spawn(cluster::CHAOS, chaos::run_timed(c, t, timed)));
            let users = u64::from(scenario.users);
            let context = Rc::new(LoadContext {
                seed,
                wallet_ids,
                users,
                interval: Duration::from_secs_f64(users as f64 / f64::from(scenario.rate.max(1))),
                start,
                end: start + scenario.duration,
                op_id_base: 2 * u64::from(scenario.wallets),
                bearers,
            });
            let users_left = Rc::new(Cell::new(users));
            for user in 0..users {
                let (cluster, workload, context, ops) = (
                    cluster.clone(),
                    workload.clone(),
                    context.clone(),
                    ops.clone(),
                );
                let (left, done) = (users_left.clone(), done.clone());
                crate::exec::with(|e| {
                    e.spawn(cluster::CLIENTS, async move {
                        client::user(cluster, workload, context, user, ops).await;
                        left.set(left.get() - 1);
                        if left.get() == 0 {
                            done.set(true);
                        }
                    })
                });
            }
        })
    });
}

/// Steps the executor, and crashes instances at I/O steps as the plan
/// allows.
struct Driver {
    executor: Rc<Executor>,
    cluster: Rc<Cluster>,
    timeline: Rc<Timeline>,
}

impl Driver {
    /// One scheduling decision: poll a ready task (or crash its process
    /// there), or move time to the next timer before `limit`. False when
    /// nothing can happen before `limit`.
    fn step(&self, limit: Duration) -> bool {
        let Some((task, process)) = self.executor.pick() else {
            return self.executor.advance(limit);
        };
        world::trace("poll", &[task as i64], None);
        if let Some(role) = Role::of(process)
            && let Some(step) = world::try_with(|w| w.take_crash(task)).flatten()
        {
            chaos::crash_at(&self.cluster, &self.timeline, role, step);
            return true;
        }
        self.executor.poll(task);
        true
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
