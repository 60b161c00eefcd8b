//! The deterministic executor: every task of the simulated world runs on
//! one thread, one poll at a time, in an order drawn from the seed, on a
//! simulated clock. Nothing here reads the wall clock, system randomness
//! or a hash map's order, so one seed gives one schedule.
//!
//! - Tasks belong to a process ([`ProcessId`]); killing a process drops its
//!   tasks where they stand, exactly like SIGKILL: whatever the task held
//!   (an open transaction, a half-sent request) is dropped with it.
//! - Ready tasks wait in a set; [`Executor::step`] polls one chosen by the
//!   seed's generator. When none is ready, time jumps to the next timer.
//! - [`sleep`] and [`yield_now`] are the only ways simulated code waits on
//!   time; backends call [`yield_now`] at every I/O step, which gives the
//!   scheduler (and the fault injector) a choice point there.
//!
//! The executor is reachable from inside tasks through a thread-local
//! context ([`with`]), set for the duration of [`Executor::enter`].

use std::{
    cell::{Cell, RefCell},
    collections::{BTreeMap, BTreeSet},
    future::Future,
    pin::Pin,
    rc::Rc,
    sync::{Arc, Mutex},
    task::{Context, Poll, Wake, Waker},
    time::Duration,
};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub type TaskId = u64;
pub type ProcessId = u32;

type BoxedTask = Pin<Box<dyn Future<Output = ()>>>;

struct Task {
    future: BoxedTask,
    process: ProcessId,
    /// Made once: a waker per poll would cost an allocation each time.
    waker: Option<Waker>,
}

/// Wakers push task ids here; they must be `Send + Sync`, so this is the
/// one shared structure. Ids in the order they became ready (a function of
/// the schedule, so deterministic), each at most once.
#[derive(Default)]
struct ReadyQueue {
    ids: Mutex<Ready>,
}

#[derive(Default)]
struct Ready {
    order: Vec<TaskId>,
    /// Whether each task id is in `order` (ids are dense, from 1).
    queued: Vec<bool>,
}

impl Ready {
    fn insert(&mut self, id: TaskId) {
        let slot = Executor::slot(id);
        if self.queued.len() <= slot {
            self.queued.resize(slot + 1, false);
        }
        if !self.queued[slot] {
            self.queued[slot] = true;
            self.order.push(id);
        }
    }

    fn take(&mut self, index: usize) -> TaskId {
        let id = self.order.swap_remove(index);
        self.queued[Executor::slot(id)] = false;
        id
    }

    fn len(&self) -> usize {
        self.order.len()
    }

    fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

struct TaskWaker {
    id: TaskId,
    queue: Arc<ReadyQueue>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.queue.ids.lock().expect("ready queue").insert(self.id);
    }
}

/// The simulated world's scheduler and clock.
pub struct Executor {
    now_ns: Cell<u64>,
    rng: RefCell<ChaCha8Rng>,
    /// Live tasks by id (ids are dense, from 1): a slot per task ever
    /// spawned in this world.
    tasks: RefCell<Vec<Option<Task>>>,
    live: Cell<usize>,
    spawned: RefCell<Vec<(TaskId, Task)>>,
    ready: Arc<ReadyQueue>,
    timers: RefCell<BTreeMap<(u64, u64), Waker>>,
    next_task: Cell<TaskId>,
    next_timer: Cell<u64>,
    polls: Cell<u64>,
    /// The task being polled, and its process.
    current: Cell<Option<(TaskId, ProcessId)>>,
    /// Stopped processes (SIGSTOP) and their tasks that became ready while
    /// stopped; they run again when the process continues.
    paused: RefCell<BTreeSet<ProcessId>>,
    deferred: RefCell<BTreeSet<TaskId>>,
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<Executor>>> = const { RefCell::new(None) };
}

/// Runs `f` with the executor of the world being simulated on this thread.
pub fn with<T>(f: impl FnOnce(&Executor) -> T) -> T {
    CURRENT.with(|current| {
        let current = current.borrow();
        let executor = current
            .as_ref()
            .expect("simulated code runs inside Executor::enter");
        f(executor)
    })
}

/// Runs `f` with the executor of this thread's world; `None` outside a
/// simulation.
pub fn try_with<T>(f: impl FnOnce(&Executor) -> T) -> Option<T> {
    CURRENT.with(|current| current.borrow().as_ref().map(|executor| f(executor)))
}

/// Whether simulated code is running (the backends also serve the
/// contract tests under tokio, where there is no simulated world).
pub fn in_simulation() -> bool {
    CURRENT.with(|current| current.borrow().is_some())
}

impl Executor {
    pub fn new(seed: u64) -> Rc<Executor> {
        Rc::new(Executor {
            now_ns: Cell::new(0),
            rng: RefCell::new(ChaCha8Rng::seed_from_u64(seed)),
            tasks: RefCell::new(Vec::new()),
            live: Cell::new(0),
            spawned: RefCell::new(Vec::new()),
            ready: Arc::new(ReadyQueue::default()),
            timers: RefCell::new(BTreeMap::new()),
            next_task: Cell::new(1),
            next_timer: Cell::new(0),
            polls: Cell::new(0),
            current: Cell::new(None),
            paused: RefCell::new(BTreeSet::new()),
            deferred: RefCell::new(BTreeSet::new()),
        })
    }

    /// Makes this executor the current one while `f` runs.
    pub fn enter<T>(self: &Rc<Self>, f: impl FnOnce() -> T) -> T {
        struct Leave;
        impl Drop for Leave {
            fn drop(&mut self) {
                CURRENT.with(|current| current.borrow_mut().take());
            }
        }
        CURRENT.with(|current| {
            let previous = current.borrow_mut().replace(self.clone());
            assert!(
                previous.is_none(),
                "one simulated world per thread at a time"
            );
        });
        let _leave = Leave;
        f()
    }

    /// Simulated time since the world began.
    pub fn now(&self) -> Duration {
        Duration::from_nanos(self.now_ns.get())
    }

    /// A draw from the seed's generator: scheduling and faults share it, so
    /// one seed gives one sequence of choices.
    pub fn random<T>(&self, f: impl FnOnce(&mut ChaCha8Rng) -> T) -> T {
        f(&mut self.rng.borrow_mut())
    }

    /// Polls performed so far: the cost of a run.
    pub fn polls(&self) -> u64 {
        self.polls.get()
    }

    /// Starts `future` as a task of `process`; it runs from the next step.
    pub fn spawn(&self, process: ProcessId, future: impl Future<Output = ()> + 'static) -> TaskId {
        let id = self.next_task.get();
        self.next_task.set(id + 1);
        let task = Task {
            future: Box::pin(future),
            process,
            waker: None,
        };
        self.spawned.borrow_mut().push((id, task));
        self.ready.ids.lock().expect("ready queue").insert(id);
        id
    }

    /// Drops every task of `process` (a SIGKILL). Returns how many.
    pub fn kill(&self, process: ProcessId) -> usize {
        self.adopt_spawned();
        let mut dropped = Vec::new();
        for slot in self.tasks.borrow_mut().iter_mut() {
            if slot.as_ref().is_some_and(|task| task.process == process) {
                dropped.extend(slot.take());
            }
        }
        self.live.set(self.live.get() - dropped.len());
        // Dropping may release locks and wake other tasks: no borrow held.
        let count = dropped.len();
        drop(dropped);
        count
    }

    /// Whether `process` has any task left.
    pub fn has_tasks(&self, process: ProcessId) -> bool {
        self.adopt_spawned();
        self.tasks
            .borrow()
            .iter()
            .flatten()
            .any(|t| t.process == process)
    }

    fn adopt_spawned(&self) {
        if self.spawned.borrow().is_empty() {
            return;
        }
        let spawned: Vec<(TaskId, Task)> = self.spawned.borrow_mut().drain(..).collect();
        let mut tasks = self.tasks.borrow_mut();
        for (id, task) in spawned {
            let index = usize::try_from(id).expect("task ids fit") - 1;
            if tasks.len() <= index {
                tasks.resize_with(index + 1, || None);
            }
            tasks[index] = Some(task);
            self.live.set(self.live.get() + 1);
        }
    }

    fn slot(id: TaskId) -> usize {
        usize::try_from(id).expect("task ids fit") - 1
    }

    /// The ready task the seed picks next and its process, without polling
    /// it; `None` when nothing is ready (time must move first).
    pub fn pick(&self) -> Option<(TaskId, ProcessId)> {
        self.adopt_spawned();
        loop {
            let chosen = {
                let mut ready = self.ready.ids.lock().expect("ready queue");
                if ready.is_empty() {
                    return None;
                }
                let index = self.rng.borrow_mut().random_range(0..ready.len());
                ready.take(index)
            };
            // A dead task's stale wake-up is dropped here; a stopped
            // process's task waits until it continues.
            let process = self
                .tasks
                .borrow()
                .get(Self::slot(chosen))
                .and_then(|t| t.as_ref().map(|t| t.process));
            match process {
                Some(process) if self.paused.borrow().contains(&process) => {
                    self.deferred.borrow_mut().insert(chosen);
                }
                Some(process) => return Some((chosen, process)),
                None => {}
            }
        }
    }

    /// Polls task `id` once.
    pub fn poll(&self, id: TaskId) {
        let Some(mut task) = self
            .tasks
            .borrow_mut()
            .get_mut(Self::slot(id))
            .and_then(Option::take)
        else {
            return;
        };
        self.polls.set(self.polls.get() + 1);
        let waker = task.waker.get_or_insert_with(|| {
            Waker::from(Arc::new(TaskWaker {
                id,
                queue: self.ready.clone(),
            }))
        });
        let mut context = Context::from_waker(waker);
        self.current.set(Some((id, task.process)));
        let pending = task.future.as_mut().poll(&mut context).is_pending();
        self.current.set(None);
        if pending {
            self.tasks.borrow_mut()[Self::slot(id)] = Some(task);
        } else {
            self.live.set(self.live.get() - 1);
        }
        self.adopt_spawned();
    }

    /// Whether a task other than the one being polled is ready to run.
    pub fn others_ready(&self) -> bool {
        let current = self.current.get().map(|(id, _)| id);
        let ready = self.ready.ids.lock().expect("ready queue");
        let others = match ready.order.as_slice() {
            [] => false,
            [only] => Some(*only) != current,
            _ => true,
        };
        others || !self.spawned.borrow().is_empty()
    }

    /// The task being polled and its process (`None` outside a poll).
    pub fn current(&self) -> Option<(TaskId, ProcessId)> {
        self.current.get()
    }

    /// Stops `process` (SIGSTOP): none of its tasks runs until [`resume`].
    ///
    /// [`resume`]: Executor::resume
    pub fn pause(&self, process: ProcessId) {
        self.paused.borrow_mut().insert(process);
    }

    /// Continues a stopped process (SIGCONT).
    pub fn resume(&self, process: ProcessId) {
        self.paused.borrow_mut().remove(&process);
        let tasks = self.tasks.borrow();
        let mut deferred = self.deferred.borrow_mut();
        let mut ready = self.ready.ids.lock().expect("ready queue");
        deferred.retain(
            |id| match tasks.get(Self::slot(*id)).and_then(Option::as_ref) {
                Some(task) if task.process == process => {
                    ready.insert(*id);
                    false
                }
                Some(_) => true,
                None => false,
            },
        );
    }

    pub fn is_paused(&self, process: ProcessId) -> bool {
        self.paused.borrow().contains(&process)
    }

    /// Moves the clock to the next timer (not past `limit`) and fires every
    /// timer due then. False if there is no timer before `limit`.
    pub fn advance(&self, limit: Duration) -> bool {
        let limit_ns = u64::try_from(limit.as_nanos()).unwrap_or(u64::MAX);
        let next = self.timers.borrow().keys().next().copied();
        let Some((due, _)) = next else { return false };
        if due > limit_ns {
            return false;
        }
        self.now_ns.set(self.now_ns.get().max(due));
        loop {
            let entry = {
                let mut timers = self.timers.borrow_mut();
                let first = timers.keys().next().copied();
                match first {
                    Some(key) if key.0 <= self.now_ns.get() => timers.remove(&key),
                    _ => None,
                }
            };
            match entry {
                Some(waker) => waker.wake(),
                None => return true,
            }
        }
    }

    /// Moves the clock to `to` when nothing is due before it.
    pub fn jump_to(&self, to: Duration) {
        let to_ns = u64::try_from(to.as_nanos()).unwrap_or(u64::MAX);
        self.now_ns.set(self.now_ns.get().max(to_ns));
    }

    fn register_timer(&self, deadline_ns: u64, waker: Waker) -> (u64, u64) {
        let seq = self.next_timer.get();
        self.next_timer.set(seq + 1);
        self.timers.borrow_mut().insert((deadline_ns, seq), waker);
        (deadline_ns, seq)
    }
}

/// Waits `duration` of simulated time.
pub fn sleep(duration: Duration) -> Sleep {
    let deadline_ns = with(|e| e.now_ns.get())
        .saturating_add(u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX));
    Sleep {
        deadline_ns,
        timer: None,
    }
}

pub struct Sleep {
    deadline_ns: u64,
    /// The timer's key once registered, with its executor's address.
    timer: Option<(usize, (u64, u64))>,
}

/// A sleep dropped before its deadline (a request's timeout once the
/// answer came) takes its timer with it, rather than leaving it to fire
/// later at a task that no longer waits.
impl Drop for Sleep {
    fn drop(&mut self) {
        let Some((owner, key)) = self.timer else {
            return;
        };
        // Only in the world that registered it, and never while the
        // executor is being entered, left or is firing timers.
        CURRENT.with(|current| {
            if let Ok(current) = current.try_borrow()
                && let Some(executor) = current.as_ref()
                && std::ptr::from_ref::<Executor>(executor).addr() == owner
                && let Ok(mut timers) = executor.timers.try_borrow_mut()
            {
                timers.remove(&key);
            }
        });
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let now = with(|e| e.now_ns.get());
        if now >= self.deadline_ns {
            return Poll::Ready(());
        }
        if self.timer.is_none() {
            self.timer = Some(with(|e| {
                let key = e.register_timer(self.deadline_ns, cx.waker().clone());
                (std::ptr::from_ref(e).addr(), key)
            }));
        }
        Poll::Pending
    }
}

/// Gives the scheduler a choice point: the task goes back to the ready set
/// and any ready task (this one included) may run next.
pub fn yield_now() -> YieldNow {
    YieldNow { yielded: false }
}

pub struct YieldNow {
    yielded: bool,
}

impl Future for YieldNow {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.yielded {
            return Poll::Ready(());
        }
        self.yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_interleaving() {
        let run = |seed: u64| -> Vec<u32> {
            let executor = Executor::new(seed);
            let order = Rc::new(RefCell::new(Vec::new()));
            executor.enter(|| {
                for task in 0..4u32 {
                    let order = order.clone();
                    executor.spawn(task, async move {
                        for _ in 0..3 {
                            order.borrow_mut().push(task);
                            yield_now().await;
                        }
                        sleep(Duration::from_millis(u64::from(task) + 1)).await;
                        order.borrow_mut().push(10 + task);
                    });
                }
                loop {
                    match executor.pick() {
                        Some((id, _)) => executor.poll(id),
                        None if executor.advance(Duration::from_secs(1)) => {}
                        None => break,
                    }
                }
                assert_eq!(executor.now(), Duration::from_millis(4));
            });
            order.borrow().clone()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8), "another seed, another interleaving");
        let tail: Vec<u32> = run(7).into_iter().rev().take(4).collect();
        assert_eq!(tail, [13, 12, 11, 10], "timers fire in deadline order");
    }

    #[test]
    fn killing_a_process_drops_its_tasks() {
        let executor = Executor::new(1);
        let dropped = Rc::new(Cell::new(false));
        executor.enter(|| {
            struct Guard(Rc<Cell<bool>>);
            impl Drop for Guard {
                fn drop(&mut self) {
                    self.0.set(true);
                }
            }
            let guard = Guard(dropped.clone());
            executor.spawn(3, async move {
                let _guard = guard;
                sleep(Duration::from_secs(60)).await;
            });
            let (id, process) = executor.pick().unwrap();
            assert_eq!(process, 3);
            executor.poll(id);
            assert_eq!(executor.kill(3), 1);
            assert!(!executor.has_tasks(3));
        });
        assert!(dropped.get());
    }
}
