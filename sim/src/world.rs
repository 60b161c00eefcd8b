//! What the simulated world knows besides its schedule: the trace of
//! everything that happened (hashed, and kept line by line when asked),
//! the coverage counters, and the fault knobs of this seed. Backends reach
//! it through [`io`], the choice point every simulated I/O step passes.

use std::{
    cell::{Cell, RefCell},
    collections::BTreeMap,
    fmt::Write as _,
    rc::Rc,
};

use rand::Rng;

use crate::exec::{self, Executor, TaskId};

/// The probabilities of the faults a seed injects at choice points (swarm
/// testing: each seed draws which are on and how often).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Knobs {
    /// At an I/O step of a wallet or history instance: crash it there.
    pub crash: f64,
    /// A database statement fails with a serialization failure.
    pub serialization_failure: f64,
    /// A commit applies (or not) but the client only hears the connection
    /// broke.
    pub commit_unknown: f64,
    /// A produced message is written but its acknowledgement is lost.
    pub ack_lost: f64,
    /// A produced message is refused.
    pub produce_refused: f64,
    /// A request's response is lost after the handler finished.
    pub response_lost: f64,
}

/// Coverage: how often each interesting thing happened.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counters {
    /// Crashes by the I/O step they happened before.
    pub crash_points: BTreeMap<String, u64>,
    pub rebalances: u64,
    /// Messages fetched again after an earlier fetch of the same offset.
    pub redeliveries: u64,
    pub parked_events: u64,
    /// Relay rounds that marked some rows but not all.
    pub partial_relay_rounds: u64,
    /// Transactions rolled back: dropped, refused, or their process died.
    pub aborted_transactions: u64,
    /// Batches a member applied after it had lost its partitions.
    pub zombie_batches: u64,
    pub serialization_failures: u64,
    pub commits_unknown: u64,
    pub acks_lost: u64,
    pub responses_lost: u64,
    pub duplicates_skipped: u64,
    pub lock_waits: u64,
    pub deadlocks: u64,
}

impl Counters {
    /// Adds another seed's counts.
    pub fn add(&mut self, other: &Counters) {
        for (kind, count) in &other.crash_points {
            *self.crash_points.entry(kind.clone()).or_default() += count;
        }
        self.rebalances += other.rebalances;
        self.redeliveries += other.redeliveries;
        self.parked_events += other.parked_events;
        self.partial_relay_rounds += other.partial_relay_rounds;
        self.aborted_transactions += other.aborted_transactions;
        self.zombie_batches += other.zombie_batches;
        self.serialization_failures += other.serialization_failures;
        self.commits_unknown += other.commits_unknown;
        self.acks_lost += other.acks_lost;
        self.responses_lost += other.responses_lost;
        self.duplicates_skipped += other.duplicates_skipped;
        self.lock_waits += other.lock_waits;
        self.deadlocks += other.deadlocks;
    }

    /// The counters the acceptance names, each of which a sweep must see
    /// above zero.
    pub fn required(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("crash points", self.crash_points.values().sum()),
            ("rebalances", self.rebalances),
            ("redeliveries", self.redeliveries),
            ("parked events", self.parked_events),
            ("partial relay rounds", self.partial_relay_rounds),
            ("aborted transactions", self.aborted_transactions),
            ("zombie batches", self.zombie_batches),
        ]
    }
}

/// FNV-1a, 64 bits: a hash whose value is fixed by its definition, so a
/// trace hash means the same in every process and every build.
#[derive(Debug, Clone, Copy)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    pub fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// Eight bytes at a time (the rest one by one): the trace's cheaper
    /// step for text, just as fixed. Kafka's partitioner keeps
    /// [`Fnv::write`], whose low bits spread short keys better.
    pub fn write_words(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            self.write_u64(u64::from_le_bytes(word.try_into().expect("8 bytes")));
        }
        self.write(words.remainder());
    }

    /// A word at a time: FNV-1a's step over the word as one symbol.
    pub fn write_u64(&mut self, word: u64) {
        self.0 ^= word;
        self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
    }

    pub fn finish(&self) -> u64 {
        self.0
    }
}

/// The world's trace: a running hash of every event, and the events as
/// lines when the caller wants them.
#[derive(Debug, Default)]
pub struct Trace {
    hash: Fnv,
    events: u64,
    lines: Option<Vec<String>>,
}

impl Trace {
    pub fn new(keep_lines: bool) -> Trace {
        Trace {
            lines: keep_lines.then(Vec::new),
            ..Trace::default()
        }
    }

    fn record(
        &mut self,
        at_ns: u64,
        kind: &'static str,
        process: u32,
        values: &[i64],
        text: Option<&str>,
    ) {
        self.events += 1;
        // Kinds are static strings: their address stands for their bytes
        // within one binary, but not across builds, so hash the bytes.
        self.hash.write_u64(at_ns);
        self.hash.write_words(kind.as_bytes());
        self.hash.write_u64(u64::from(process));
        for value in values {
            self.hash.write_u64(*value as u64);
        }
        if let Some(text) = text {
            self.hash.write_words(text.as_bytes());
        }
        if let Some(lines) = &mut self.lines {
            let mut line = format!(
                "{{\"t_ms\":{:.3},\"event\":\"{kind}\",\"process\":{process}",
                at_ns as f64 / 1e6
            );
            if !values.is_empty() {
                let values: Vec<String> = values.iter().map(i64::to_string).collect();
                let _ = write!(line, ",\"values\":[{}]", values.join(","));
            }
            if let Some(text) = text {
                let _ = write!(line, ",\"detail\":{}", serde_json::Value::from(text));
            }
            line.push('}');
            lines.push(line);
        }
    }

    pub fn hash(&self) -> u64 {
        self.hash.finish()
    }

    pub fn events(&self) -> u64 {
        self.events
    }

    pub fn take_lines(&mut self) -> Vec<String> {
        self.lines.take().unwrap_or_default()
    }
}

/// The world's state besides the executor.
pub struct World {
    pub knobs: Knobs,
    pub trace: RefCell<Trace>,
    pub counters: RefCell<Counters>,
    /// Tasks stopped at an I/O step where the seed chose to crash their
    /// process, with the step.
    io_pending: RefCell<BTreeMap<TaskId, &'static str>>,
    /// Crashes still allowed (bounded so a run always makes progress).
    pub crash_budget: Cell<u32>,
    /// Faults strike only in the safety phase; healing turns them off.
    pub faults_on: Cell<bool>,
}

thread_local! {
    static WORLD: RefCell<Option<Rc<World>>> = const { RefCell::new(None) };
}

impl World {
    pub fn new(knobs: Knobs, keep_lines: bool, crash_budget: u32) -> Rc<World> {
        Rc::new(World {
            knobs,
            trace: RefCell::new(Trace::new(keep_lines)),
            counters: RefCell::new(Counters::default()),
            io_pending: RefCell::new(BTreeMap::new()),
            crash_budget: Cell::new(crash_budget),
            // Off during set-up, as in a live run; on for the load.
            faults_on: Cell::new(false),
        })
    }

    /// Makes this world current while `f` runs.
    pub fn enter<T>(self: &Rc<Self>, f: impl FnOnce() -> T) -> T {
        struct Leave;
        impl Drop for Leave {
            fn drop(&mut self) {
                WORLD.with(|w| w.borrow_mut().take());
            }
        }
        WORLD.with(|w| *w.borrow_mut() = Some(self.clone()));
        let _leave = Leave;
        f()
    }

    /// The I/O step where task `task` is to be crashed, if it is.
    pub fn take_crash(&self, task: TaskId) -> Option<&'static str> {
        self.io_pending.borrow_mut().remove(&task)
    }

    /// Records a trace event at `executor`'s time, of the task it polls.
    fn record(&self, executor: &Executor, kind: &'static str, values: &[i64], text: Option<&str>) {
        let process = executor.current().map_or(0, |(_, p)| p);
        let at_ns = u64::try_from(executor.now().as_nanos()).unwrap_or(u64::MAX);
        self.trace
            .borrow_mut()
            .record(at_ns, kind, process, values, text);
    }

    /// Whether a fault with probability `pick(knobs)` strikes now: never
    /// while faults are off, and without a draw when it cannot strike.
    fn strikes(&self, executor: &Executor, pick: impl FnOnce(&Knobs) -> f64) -> bool {
        if !self.faults_on.get() {
            return false;
        }
        let p = pick(&self.knobs);
        p > 0.0 && executor.random(|rng| rng.random_bool(p.min(1.0)))
    }
}

/// Runs `f` with the current world; `None` outside a simulation (the
/// backends also serve the contract tests under tokio).
pub fn try_with<T>(f: impl FnOnce(&World) -> T) -> Option<T> {
    WORLD.with(|w| w.borrow().as_ref().map(|world| f(world)))
}

/// Records a trace event at the current simulated time.
pub fn trace(kind: &'static str, values: &[i64], text: Option<&str>) {
    exec::try_with(|executor| try_with(|world| world.record(executor, kind, values, text)));
}

/// Counts something in this seed's coverage.
pub fn count(f: impl FnOnce(&mut Counters)) {
    try_with(|w| f(&mut w.counters.borrow_mut()));
}

/// Whether a fault with probability `pick(knobs)` strikes now (always
/// false outside a simulation).
pub fn chance(pick: impl FnOnce(&Knobs) -> f64) -> bool {
    exec::try_with(|executor| try_with(|world| world.strikes(executor, pick)))
        .flatten()
        .unwrap_or(false)
}

/// The choice point of an I/O step named `step`: traced; then, if the
/// seed crashes this process here, the task stops and the driver kills the
/// process before it runs again; otherwise the task yields whenever other
/// tasks are ready, so any of them may run first. Outside a simulation it
/// does nothing.
pub async fn io(step: &'static str) {
    if choose_at(step) {
        exec::yield_now().await;
    }
}

/// [`io`]'s decision, with the executor and the world each looked up once
/// (this runs at every simulated I/O step): whether the task yields.
fn choose_at(step: &'static str) -> bool {
    exec::try_with(|executor| {
        try_with(|world| {
            world.record(executor, step, &[], None);
            let Some((task, process)) = executor.current() else {
                return false;
            };
            let crashable =
                crate::cluster::Role::of(process).is_some() && world.crash_budget.get() > 0;
            if crashable && world.strikes(executor, |k| k.crash) {
                world.crash_budget.set(world.crash_budget.get() - 1);
                world.io_pending.borrow_mut().insert(task, step);
                return true;
            }
            executor.others_ready()
        })
        .unwrap_or(false)
    })
    .unwrap_or(false)
}
