//! The simulated system: the PostgreSQL and Kafka models, several wallet
//! instances (each the real router over the real store, plus a relay
//! running the real round) and several history instances (each a group
//! member running the real batch contract over the real apply path).
//! Every instance is a process of the executor, so it can be crashed at
//! any I/O step, stopped, and started again.

use std::{
    cell::{Cell, RefCell},
    rc::Rc,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::body::Body;
use history::{
    apply::Incoming,
    consumer::{Clock, ConsumerStatus, OffsetStore, SharedStatus, process_batch},
};
use rand::Rng;
use service_kit::{
    Backoff,
    auth::{Auth, Keys},
};
use tower::ServiceExt;
use uuid::Uuid;
use wallet::{
    relay::round::{OutboxRow, Publisher, publish_round},
    store::{Ids, Store},
};

use crate::{
    exec::{self, ProcessId},
    kafka::{Kafka, MemberId, Poll},
    pg::{self, Postgres, history::SimHistoryDb, wallet::SimWalletDb},
    world,
};

pub const CLIENTS: ProcessId = 1;
pub const CHAOS: ProcessId = 2;
pub const BROKER: ProcessId = 3;
const WALLET_BASE: ProcessId = 100;
const HISTORY_BASE: ProcessId = 200;

/// The production defaults the simulated instances run with.
pub const PARTITIONS: usize = 8;
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(6);
const HEARTBEAT_EVERY: Duration = Duration::from_millis(1_200);
const AUTO_COMMIT_EVERY: Duration = Duration::from_millis(200);
const FETCH_WAIT: Duration = Duration::from_millis(50);
const EXPIRY_CHECK_EVERY: Duration = Duration::from_millis(100);
const RELAY_BATCH_MAX: i64 = 500;
const CONSUMER_BATCH_MAX: usize = 500;
const RELAY_BACKOFF_FIRST: Duration = Duration::from_millis(100);
const RELAY_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A round's acknowledgements arrive after 1 to this many ms.
const ACK_DELAY_MS_MAX: u64 = 5;
pub const TOPIC: &str = "wallet-events";

/// Which part of the system a process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Wallet(usize),
    History(usize),
}

impl Role {
    pub fn process(self) -> ProcessId {
        match self {
            Role::Wallet(i) => WALLET_BASE + i as ProcessId,
            Role::History(i) => HISTORY_BASE + i as ProcessId,
        }
    }

    pub fn of(process: ProcessId) -> Option<Role> {
        match process {
            p if (HISTORY_BASE..HISTORY_BASE + 100).contains(&p) => {
                Some(Role::History((p - HISTORY_BASE) as usize))
            }
            p if (WALLET_BASE..WALLET_BASE + 100).contains(&p) => {
                Some(Role::Wallet((p - WALLET_BASE) as usize))
            }
            _ => None,
        }
    }

    pub fn name(self) -> String {
        match self {
            Role::Wallet(i) => format!("wallet-{i}"),
            Role::History(i) => format!("history-{i}"),
        }
    }
}

/// The relay's publisher on the Kafka model.
struct SimPublisher {
    kafka: Kafka,
}

impl Publisher for SimPublisher {
    async fn publish(&self, rows: &[OutboxRow]) -> Vec<Result<(), String>> {
        let mut results = Vec::with_capacity(rows.len());
        for row in rows {
            world::io("kafka.produce").await;
            let key = row.wallet_id.to_string();
            let result = self.kafka.produce(key.as_bytes(), row.payload.as_bytes());
            results.push(result.map(|_| ()));
        }
        // The acknowledgements arrive after a delay drawn per round.
        let delay = exec::with(|e| e.random(|rng| rng.random_range(1..=ACK_DELAY_MS_MAX)));
        exec::sleep(Duration::from_millis(delay)).await;
        results
    }
}

/// Simulated time for the consumer.
struct SimClock;

impl Clock for SimClock {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        crate::pg::clock_timestamp()
    }

    async fn sleep(&self, pause: Duration) -> bool {
        exec::sleep(pause).await;
        true
    }
}

/// A member's offset store on the Kafka model.
struct SimOffsets {
    kafka: Kafka,
    member: MemberId,
}

impl OffsetStore for SimOffsets {
    fn store_offset(&self, _topic: &str, partition: i32, offset: i64) -> Result<(), String> {
        self.kafka.store_offset(self.member, partition, offset)
    }
}

/// A wake-up for whoever waits: raised, it wakes every current waiter.
#[derive(Default)]
struct Signal {
    raised: Cell<u64>,
    waiters: RefCell<Vec<std::task::Waker>>,
}

impl Signal {
    fn raise(&self) {
        self.raised.set(self.raised.get() + 1);
        for waker in self.waiters.borrow_mut().drain(..) {
            waker.wake();
        }
    }

    /// Completes at the next raise.
    fn wait(&self) -> impl std::future::Future<Output = ()> + '_ {
        let seen = self.raised.get();
        std::future::poll_fn(move |cx| {
            if self.raised.get() != seen {
                return std::task::Poll::Ready(());
            }
            self.waiters.borrow_mut().push(cx.waker().clone());
            std::task::Poll::Pending
        })
    }
}

/// An HTTP answer as a client sees it.
pub enum Answer {
    Response {
        status: u16,
        body: Vec<u8>,
    },
    /// No connection could be made: the instance is down.
    Refused,
    /// The connection broke before an answer (the instance died, or the
    /// response was lost).
    Reset,
    TimedOut,
}

/// The simulated system.
pub struct Cluster {
    pub pg: Postgres,
    pub kafka: Kafka,
    pub wallet_db: SimWalletDb,
    pub history_db: SimHistoryDb,
    ids: Ids,
    pub wallets: usize,
    pub histories: usize,
    /// Up, per wallet instance; its router when up.
    routers: RefCell<Vec<Option<axum::Router>>>,
    history_up: RefCell<Vec<bool>>,
    pub request_timeout: Duration,
    /// Per wallet instance, raised after a request it answered, which may
    /// have committed outbox rows: wakes that instance's idle relay (the
    /// service's in-process `OutboxWake`); the other relays find the rows
    /// at their idle poll.
    outbox_wakes: Vec<Signal>,
    /// The keys of the simulated system's token secret: the clients mint
    /// with them, the wallet instances verify (on simulated time).
    pub keys: Keys,
    auth: Auth,
}

/// The simulated system's token secret.
const TOKEN_SECRET: &[u8] = b"simulated-wallet-system-token-secret";

/// Simulated time in Unix seconds: what tokens are issued at and expire on.
pub fn unix_now() -> u64 {
    u64::try_from(pg::clock_timestamp().timestamp()).unwrap_or(0)
}

impl Cluster {
    pub fn new(wallets: usize, histories: usize) -> Rc<Cluster> {
        let pg = Postgres::new();
        let kafka = Kafka::new(TOPIC, PARTITIONS, SESSION_TIMEOUT);
        let ids =
            Ids::new(|| Uuid::from_u128(exec::with(|e| e.random(|rng| rng.random::<u128>()))));
        let keys = Keys::new(TOKEN_SECRET).expect("the simulator's secret is long enough");
        let auth = Auth::tokens(keys.clone()).with_clock(unix_now);
        Rc::new(Cluster {
            keys,
            auth,
            wallet_db: SimWalletDb { pg: pg.clone() },
            history_db: SimHistoryDb { pg: pg.clone() },
            pg,
            kafka,
            ids,
            wallets,
            histories,
            routers: RefCell::new(vec![None; wallets]),
            history_up: RefCell::new(vec![false; histories]),
            request_timeout: Duration::from_secs(10),
            outbox_wakes: (0..wallets).map(|_| Signal::default()).collect(),
        })
    }

    /// Starts every instance and the broker's group coordinator.
    pub fn start_all(self: &Rc<Self>) {
        let kafka = self.kafka.clone();
        exec::with(|e| {
            e.spawn(BROKER, async move {
                loop {
                    exec::sleep(EXPIRY_CHECK_EVERY).await;
                    kafka.expire();
                }
            })
        });
        for i in 0..self.wallets {
            self.start(Role::Wallet(i));
        }
        for j in 0..self.histories {
            self.start(Role::History(j));
        }
    }

    pub fn is_up(&self, role: Role) -> bool {
        match role {
            Role::Wallet(i) => self.routers.borrow()[i].is_some(),
            Role::History(j) => self.history_up.borrow()[j],
        }
    }

    /// Starts `role`'s process (its tasks), if it is not running.
    pub fn start(self: &Rc<Self>, role: Role) {
        if self.is_up(role) {
            return;
        }
        exec::with(|e| e.resume(role.process()));
        world::trace("start", &[i64::from(role.process())], None);
        match role {
            Role::Wallet(i) => {
                let store = Store::new(self.wallet_db.clone(), self.ids.clone());
                let router = wallet::router(wallet::AppState {
                    store,
                    auth: self.auth.clone(),
                });
                self.routers.borrow_mut()[i] = Some(router);
                let cluster = self.clone();
                exec::with(|e| e.spawn(role.process(), async move { cluster.relay(i).await }));
            }
            Role::History(j) => {
                self.history_up.borrow_mut()[j] = true;
                let cluster = self.clone();
                exec::with(|e| e.spawn(role.process(), async move { cluster.consume(role).await }));
            }
        }
    }

    /// SIGKILL: `role`'s tasks are dropped where they stand.
    pub fn kill(&self, role: Role) {
        match role {
            Role::Wallet(i) => self.routers.borrow_mut()[i] = None,
            Role::History(j) => self.history_up.borrow_mut()[j] = false,
        }
        exec::with(|e| {
            e.kill(role.process());
            e.resume(role.process());
        });
        world::trace("kill", &[i64::from(role.process())], None);
    }

    /// Wakes wallet instance `i`'s relay.
    pub fn wake_relay(&self, i: usize) {
        self.outbox_wakes[i].raise();
    }

    /// The relay of wallet instance `i`, with the service's policy: rounds
    /// back to back while rows wait, an idle wait (woken early when one of
    /// its commits may have written rows), bounded backoff after a failure.
    async fn relay(self: Rc<Self>, i: usize) {
        let publisher = SimPublisher {
            kafka: self.kafka.clone(),
        };
        let mut backoff = Backoff::new(RELAY_BACKOFF_FIRST, RELAY_BACKOFF_MAX);
        loop {
            match publish_round(&self.wallet_db, &publisher, RELAY_BATCH_MAX).await {
                Ok(report) if report.locked == 0 => {
                    backoff.reset();
                    self.idle(i).await;
                }
                Ok(report) => {
                    backoff.reset();
                    if report.failure.is_some() {
                        world::count(|c| c.partial_relay_rounds += 1);
                    }
                    world::trace(
                        "relay.round",
                        &[report.locked as i64, report.marked as i64],
                        None,
                    );
                }
                Err(_) => exec::sleep(backoff.next_pause()).await,
            }
        }
    }

    /// Waits for the idle poll, or less if instance `i` woke its relay.
    async fn idle(&self, i: usize) {
        let notified = self.outbox_wakes[i].wait();
        let poll = exec::sleep(wallet::relay::IDLE_POLL);
        futures::future::select(Box::pin(notified), Box::pin(poll)).await;
    }

    /// One history instance: a group member applying batches through the
    /// service's batch contract, with its heartbeat and auto-commit.
    async fn consume(self: Rc<Self>, role: Role) {
        let member = Rc::new(Cell::new(self.kafka.join()));
        let process = role.process();
        let (kafka, beating) = (self.kafka.clone(), member.clone());
        exec::with(|e| {
            e.spawn(process, async move {
                loop {
                    kafka.heartbeat(beating.get());
                    exec::sleep(HEARTBEAT_EVERY).await;
                }
            })
        });
        let (kafka, committing) = (self.kafka.clone(), member.clone());
        exec::with(|e| {
            e.spawn(process, async move {
                loop {
                    exec::sleep(AUTO_COMMIT_EVERY).await;
                    kafka.commit(committing.get());
                }
            })
        });
        let status: SharedStatus = Arc::new(Mutex::new(ConsumerStatus::default()));
        loop {
            world::io("kafka.poll").await;
            let batch = match self.kafka.poll(member.get(), CONSUMER_BATCH_MAX) {
                Poll::Rejoin => {
                    member.set(self.kafka.join());
                    continue;
                }
                Poll::Messages(batch) if batch.is_empty() => {
                    exec::sleep(FETCH_WAIT).await;
                    continue;
                }
                Poll::Messages(batch) => batch,
            };
            self.apply(member.get(), &batch, &status).await;
        }
    }

    async fn apply(&self, member: MemberId, batch: &[Incoming], status: &SharedStatus) {
        let offsets = SimOffsets {
            kafka: self.kafka.clone(),
            member,
        };
        let before = status.lock().expect("status").totals;
        process_batch(&self.history_db, &offsets, batch, status, &SimClock).await;
        let after = status.lock().expect("status").totals;
        world::count(|c| c.duplicates_skipped += after.duplicates - before.duplicates);
        let partitions: Vec<i32> = batch.iter().map(|m| m.partition).collect();
        if !self.kafka.owns(member, &partitions) {
            world::count(|c| c.zombie_batches += 1);
        }
        world::trace(
            "history.batch",
            &[batch.len() as i64, after.applied as i64],
            None,
        );
    }

    /// Sends `request` to wallet instance `i` and waits for its answer.
    /// The handler runs as a task of the instance, so the instance's death
    /// cuts it off where it stands.
    pub async fn call_wallet(
        self: &Rc<Self>,
        i: usize,
        request: axum::http::Request<Body>,
    ) -> Answer {
        let latency = || exec::with(|e| e.random(|rng| rng.random_range(100..=2_000u64)));
        exec::sleep(Duration::from_micros(latency())).await;
        let Some(router) = self.routers.borrow()[i].clone() else {
            return Answer::Refused;
        };
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let cluster = self.clone();
        exec::with(|e| {
            e.spawn(Role::Wallet(i).process(), async move {
                world::io("http.handle").await;
                let response = router.oneshot(request).await.expect("infallible");
                let status = response.status().as_u16();
                let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                    .await
                    .map(|b| b.to_vec())
                    .unwrap_or_default();
                cluster.wake_relay(i);
                world::io("http.respond").await;
                if world::chance(|k| k.response_lost) {
                    world::count(|c| c.responses_lost += 1);
                    return; // the sender is dropped: the client sees a reset
                }
                exec::sleep(Duration::from_micros(latency())).await;
                let _ = sender.send((status, body));
            })
        });
        let timeout = exec::sleep(self.request_timeout);
        match futures::future::select(receiver, Box::pin(timeout)).await {
            futures::future::Either::Left((Ok((status, body)), _)) => {
                Answer::Response { status, body }
            }
            futures::future::Either::Left((Err(_), _)) => Answer::Reset,
            futures::future::Either::Right(_) => Answer::TimedOut,
        }
    }
}
