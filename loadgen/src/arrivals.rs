//! When the load's operations start.
//!
//! - **Closed** (scenario rate 0): each goose user runs its own slots back
//!   to back, `u, u + users, u + 2·users, ...`, as fast as the system
//!   answers. The throughput is whatever the system gives.
//! - **Open** (rate above 0), as k6's arrival-rate executors: slot `k`
//!   arrives at `start + k / rate` whatever happened before it, and starts
//!   at once on an idle user of a pool of `max_in_flight`. With every user
//!   busy, the arrival is *dropped*: counted per endpoint and shown, never
//!   queued behind a stalled request. A history read hanging on a paused
//!   consumer therefore holds only its own user; the transfers arriving
//!   meanwhile start on time on others, and their latency is the wallet's.
//!
//! Either way slot `s` is the seed's operation `s`, so the same seed issues
//! the same operations (less, in the open model, the dropped ones, and the
//! last slots when the users were slow to start: the schedule ends with
//! the run, wherever it began).
//!
//! The open schedule starts once every user of the pool is waiting for
//! work (or [`JOIN_WAIT`] has passed), as k6 allocates its virtual users
//! before the clock runs: a user goose has not started yet cannot take an
//! arrival, and a schedule running ahead of them measured start-up, not
//! the system (a 400 ms p50 in the first second of a 256-user pool).

use std::{
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

/// How long the open schedule waits for the pool's users to start.
pub const JOIN_WAIT: Duration = Duration::from_secs(5);

use tokio::sync::mpsc;

/// One slot to run now: its number and its intended start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    pub slot: u64,
    pub intended: Instant,
}

pub enum Arrivals {
    Closed(Closed),
    Open(Open),
}

impl Arrivals {
    /// Closed loop over `users` users.
    pub fn closed(users: u64) -> Self {
        Self::Closed(Closed {
            users,
            next: (0..users).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    /// `rate` arrivals a second onto a pool of `max_in_flight` users.
    pub fn open(rate: u32, max_in_flight: u32) -> Self {
        Self::Open(Open::new(rate, max_in_flight))
    }

    /// Goose users the attack needs.
    pub fn users(&self) -> u64 {
        match self {
            Self::Closed(closed) => closed.users,
            Self::Open(open) => open.inboxes.len() as u64,
        }
    }

    /// User `user`'s next slot: at once when closed; when open, the next
    /// arrival handed to it, or None when none came within `wait` (the
    /// user then returns to goose, which may be stopping it).
    pub async fn next(&self, user: usize, wait: Duration) -> Option<Arrival> {
        match self {
            Self::Closed(closed) => {
                let counter = closed.next.get(user)?;
                let k = counter.fetch_add(1, Ordering::Relaxed);
                Some(Arrival {
                    slot: k * closed.users + user as u64,
                    intended: Instant::now(),
                })
            }
            Self::Open(open) => open.next(user, wait).await,
        }
    }

    /// User `user` finished its slot.
    pub fn done(&self, user: usize) {
        if let Self::Open(open) = self {
            open.idle.lock().expect("idle users").push(user);
        }
    }
}

pub struct Closed {
    users: u64,
    /// Per user: the next of its slots (k, for slot k·users + u).
    next: Vec<AtomicU64>,
}

pub struct Open {
    interval_ns: u64,
    /// Users with nothing to do, the most recently freed last: reusing it
    /// keeps its connections warm and the pool's connection count low.
    idle: Mutex<Vec<usize>>,
    inboxes: Vec<mpsc::Sender<Arrival>>,
    /// Each user's receiving end; only that user locks it.
    outboxes: Vec<tokio::sync::Mutex<mpsc::Receiver<Arrival>>>,
    /// Users that have asked for work at least once.
    seen: Vec<AtomicBool>,
    joined: AtomicUsize,
}

impl Open {
    fn new(rate: u32, max_in_flight: u32) -> Self {
        let pool = max_in_flight.max(1) as usize;
        let (inboxes, outboxes) = (0..pool)
            .map(|_| {
                let (tx, rx) = mpsc::channel(1);
                (tx, tokio::sync::Mutex::new(rx))
            })
            .unzip();
        Self {
            interval_ns: 1_000_000_000 / u64::from(rate.max(1)),
            // Popped from the end: user 0 first.
            idle: Mutex::new((0..pool).rev().collect()),
            inboxes,
            outboxes,
            seen: (0..pool).map(|_| AtomicBool::new(false)).collect(),
            joined: AtomicUsize::new(0),
        }
    }

    /// Waits until every user has asked for work once, or `bound` passed.
    async fn wait_for_users(&self, bound: Duration) {
        let deadline = Instant::now() + bound;
        while self.joined.load(Ordering::Relaxed) < self.inboxes.len() && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Slot `slot`'s intended start.
    pub fn intended(&self, started: Instant, slot: u64) -> Instant {
        started + Duration::from_nanos(self.interval_ns.saturating_mul(slot))
    }

    /// Hands out every arrival until `duration` after `started` has
    /// passed, the schedule running from when every user is ready (see
    /// the module docs). `dropped` hears each slot that found no idle user.
    /// Returns the slots that arrived.
    pub async fn dispatch(
        &self,
        started: Instant,
        duration: Duration,
        mut dropped: impl FnMut(Arrival),
    ) -> u64 {
        let end = started + duration;
        let origin = if self.joined.load(Ordering::Relaxed) == self.inboxes.len() {
            started
        } else {
            self.wait_for_users(JOIN_WAIT).await;
            Instant::now().max(started)
        };
        let mut slot = 0;
        loop {
            let intended = self.intended(origin, slot);
            if intended >= end {
                return slot;
            }
            tokio::time::sleep_until(intended.into()).await;
            if let Err(arrival) = self.arrive(Arrival { slot, intended }) {
                dropped(arrival);
            }
            slot += 1;
        }
    }

    /// Hands `arrival` to the most recently freed idle user, or gives it
    /// back when every user is busy.
    pub fn arrive(&self, arrival: Arrival) -> Result<(), Arrival> {
        let user = self.idle.lock().expect("idle users").pop().ok_or(arrival)?;
        // An idle user's inbox is empty, so this never fails.
        self.inboxes[user].try_send(arrival).map_err(|_| arrival)
    }

    async fn next(&self, user: usize, wait: Duration) -> Option<Arrival> {
        if !self.seen.get(user)?.swap(true, Ordering::Relaxed) {
            self.joined.fetch_add(1, Ordering::Relaxed);
        }
        let mut outbox = self.outboxes.get(user)?.lock().await;
        tokio::time::timeout(wait, outbox.recv())
            .await
            .ok()
            .flatten()
    }

    /// Arrivals handed to a user that never took them (the load ended
    /// first): they were not issued either.
    pub fn untaken(&self) -> Vec<Arrival> {
        let mut left = Vec::new();
        for outbox in &self.outboxes {
            if let Ok(mut outbox) = outbox.try_lock() {
                while let Ok(arrival) = outbox.try_recv() {
                    left.push(arrival);
                }
            }
        }
        left
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_millis(1);

    #[tokio::test]
    async fn closed_users_run_their_own_slots_in_turn() {
        let arrivals = Arrivals::closed(3);
        let mut slots = Vec::new();
        for _ in 0..2 {
            for user in 0..3 {
                slots.push(arrivals.next(user, WAIT).await.unwrap().slot);
            }
        }
        assert_eq!(slots, [0, 1, 2, 3, 4, 5]);
        assert_eq!(arrivals.users(), 3);
        assert!(arrivals.next(3, WAIT).await.is_none());
    }

    fn at(started: Instant, slot: u64) -> Arrival {
        Arrival {
            slot,
            intended: started + Duration::from_millis(100 * slot),
        }
    }

    /// Two users: one stalls on its first slot, the other takes every later
    /// arrival; once both are busy, arrivals are given back (dropped).
    #[tokio::test]
    async fn an_open_arrival_goes_to_an_idle_user_or_is_dropped() {
        let arrivals = Arrivals::open(10, 2);
        let Arrivals::Open(open) = &arrivals else {
            unreachable!()
        };
        assert_eq!(arrivals.users(), 2);
        let started = Instant::now();
        assert_eq!(open.intended(started, 7), at(started, 7).intended);
        // User 0 takes slot 0 and never finishes.
        open.arrive(at(started, 0)).unwrap();
        assert_eq!(arrivals.next(0, WAIT).await, Some(at(started, 0)));
        // User 1 takes slots 1..=4, each freed before the next arrives.
        for slot in 1..=4 {
            open.arrive(at(started, slot)).unwrap();
            assert!(arrivals.next(0, WAIT).await.is_none());
            assert_eq!(arrivals.next(1, WAIT).await, Some(at(started, slot)));
            arrivals.done(1);
        }
        // User 1 stalls on slot 5 too: slot 6 finds nobody.
        open.arrive(at(started, 5)).unwrap();
        assert_eq!(open.arrive(at(started, 6)), Err(at(started, 6)));
        assert_eq!(arrivals.next(1, WAIT).await, Some(at(started, 5)));
        // Freed, user 0 takes the next arrival.
        arrivals.done(0);
        open.arrive(at(started, 7)).unwrap();
        assert_eq!(arrivals.next(0, WAIT).await, Some(at(started, 7)));
        assert!(open.untaken().is_empty());
    }

    #[tokio::test]
    async fn the_open_schedule_starts_once_every_user_waits_for_work() {
        let arrivals = Arrivals::open(100, 2);
        let Arrivals::Open(open) = &arrivals else {
            unreachable!()
        };
        let started = Instant::now();
        let dispatch = open.dispatch(started, Duration::from_millis(300), |_| {});
        let users = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert!(arrivals.next(0, WAIT).await.is_none(), "user 1 is not up");
            tokio::time::sleep(Duration::from_millis(30)).await;
            let last_joined = Instant::now();
            assert!(arrivals.next(1, WAIT).await.is_none());
            let first = arrivals
                .next(0, Duration::from_millis(100))
                .await
                .expect("slot 0, once both are up");
            (first, last_joined)
        };
        let (sent, (first, last_joined)) = tokio::join!(dispatch, users);
        assert_eq!(first.slot, 0);
        assert!(
            first.intended >= last_joined,
            "slot 0 was due {:?} before the last user was up",
            last_joined - first.intended
        );
        // 10 ms apart from about 80 ms in, until 300 ms.
        assert!((18..=23).contains(&sent), "{sent} arrivals");
    }

    #[tokio::test]
    async fn dispatch_drops_what_finds_every_user_busy_and_reports_the_untaken() {
        let arrivals = Arrivals::open(200, 1);
        let Arrivals::Open(open) = &arrivals else {
            unreachable!()
        };
        // The user asks for work once (nothing yet), so the schedule starts.
        assert!(arrivals.next(0, WAIT).await.is_none());
        let started = Instant::now();
        let mut dropped = Vec::new();
        // 5 ms apart for 50 ms: slot 0 to the one user, which never takes
        // it; slots 1..=9 find it busy.
        let sent = open
            .dispatch(started, Duration::from_millis(50), |a| dropped.push(a.slot))
            .await;
        assert_eq!(sent, 10);
        assert_eq!(dropped, (1..10).collect::<Vec<u64>>());
        assert!(Instant::now() >= started + Duration::from_millis(45));
        assert_eq!(
            open.untaken(),
            [Arrival {
                slot: 0,
                intended: started
            }]
        );
    }
}
