//! A Kafka model: one topic, one consumer group, and the broker's side of
//! what the relay and the consumer rely on.
//!
//! - Messages are partitioned by key (a fixed hash), appended in order and
//!   kept for good (the broker's storage survives its restarts).
//! - The producer is idempotent: a message is written at most once per
//!   send. A send can be refused (not written), or written with its
//!   acknowledgement lost; the relay then sends the row again in a later
//!   round, so the topic holds duplicates, as a real one may.
//! - Consumer groups, each independent: members join, heartbeat and poll; a member silent for the
//!   session timeout is evicted; every change of membership is an eager
//!   rebalance (everything revoked, then assigned round-robin over the
//!   members in id order), after which a member resumes each partition
//!   from the group's committed offset. On revoke a live member's stored
//!   offsets are committed, as librdkafka's auto-commit does.
//! - Stored offsets are committed by the member's periodic auto-commit; a
//!   member that lost a partition (evicted while stopped: a zombie) can no
//!   longer store or commit for it, but the batch it holds still reaches
//!   the database.
//! - The broker can be down: sends are refused, polls return nothing,
//!   commits fail.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use history::apply::Incoming;

use crate::{exec, world, world::Fnv};

/// The broker's clock: simulated time in a simulation, time since the
/// model's first use otherwise (the contract tests under tokio).
fn now() -> Duration {
    if exec::in_simulation() {
        return exec::with(|e| e.now());
    }
    static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    #[allow(clippy::disallowed_methods)] // not the simulated path
    let origin = *ORIGIN.get_or_init(std::time::Instant::now);
    origin.elapsed()
}

pub type MemberId = u64;

#[derive(Debug, Clone)]
struct Record {
    key: Vec<u8>,
    payload: Vec<u8>,
}

#[derive(Debug, Clone, Default)]
struct Member {
    group: String,
    last_heartbeat: Duration,
    generation: u64,
    assigned: Vec<i32>,
    /// Next offset to fetch, per assigned partition.
    positions: BTreeMap<i32, i64>,
    /// Offsets processed (stored), per assigned partition.
    stored: BTreeMap<i32, i64>,
}

struct State {
    up: bool,
    topic: String,
    partitions: Vec<Vec<Record>>,
    session_timeout: Duration,
    generation: u64,
    members: BTreeMap<MemberId, Member>,
    next_member: MemberId,
    /// The next offset to read, per group and partition.
    committed: BTreeMap<(String, i32), i64>,
    /// The highest offset ever fetched, per group and partition: a fetch
    /// at or below it is a redelivery.
    fetched_high: BTreeMap<(String, i32), i64>,
}

/// The group the services' consumers share.
pub const GROUP: &str = "history-service-group";

/// What a poll found.
#[derive(Debug)]
pub enum Poll {
    Messages(Vec<Incoming>),
    /// The member was evicted (it was silent too long); it must join again.
    Rejoin,
}

/// The broker and its one topic and group.
#[derive(Clone)]
pub struct Kafka {
    state: Arc<Mutex<State>>,
}

impl Kafka {
    pub fn new(topic: &str, partitions: usize, session_timeout: Duration) -> Kafka {
        Kafka {
            state: Arc::new(Mutex::new(State {
                up: true,
                topic: topic.to_owned(),
                partitions: vec![Vec::new(); partitions],
                session_timeout,
                generation: 0,
                members: BTreeMap::new(),
                next_member: 1,
                committed: BTreeMap::new(),
                fetched_high: BTreeMap::new(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("kafka model lock")
    }

    pub fn stop(&self) {
        self.lock().up = false;
    }

    pub fn start(&self) {
        self.lock().up = true;
    }

    pub fn is_up(&self) -> bool {
        self.lock().up
    }

    /// The partition of `key`: a fixed hash, so a wallet's events share one.
    pub fn partition_of(&self, key: &[u8]) -> i32 {
        let mut hash = Fnv::default();
        hash.write(key);
        let partitions = self.lock().partitions.len() as u64;
        i32::try_from(hash.finish() % partitions).expect("few partitions")
    }

    /// Sends one message: its partition and offset once written and
    /// acknowledged.
    pub fn produce(&self, key: &[u8], payload: &[u8]) -> Result<(i32, i64), String> {
        let partition = self.partition_of(key);
        let mut state = self.lock();
        if !state.up {
            return Err("Local: Broker transport failure".into());
        }
        if world::chance(|k| k.produce_refused) {
            return Err("Broker: Not enough in-sync replicas".into());
        }
        let log = &mut state.partitions[partition as usize];
        log.push(Record {
            key: key.to_vec(),
            payload: payload.to_vec(),
        });
        let offset = log.len() as i64 - 1;
        world::trace("kafka.produced", &[i64::from(partition), offset], None);
        if world::chance(|k| k.ack_lost) {
            world::count(|c| c.acks_lost += 1);
            return Err("Local: Message timed out".into());
        }
        Ok((partition, offset))
    }

    /// Adds a member to the services' group (a rebalance follows).
    pub fn join(&self) -> MemberId {
        self.join_group(GROUP)
    }

    /// Adds a member to `group` (a rebalance of that group follows).
    pub fn join_group(&self, group: &str) -> MemberId {
        let mut state = self.lock();
        let id = state.next_member;
        state.next_member += 1;
        let now = now();
        state.members.insert(
            id,
            Member {
                group: group.to_owned(),
                last_heartbeat: now,
                ..Member::default()
            },
        );
        world::trace("kafka.join", &[id as i64], None);
        state.rebalance(group);
        id
    }

    /// A clean leave: stored offsets committed, then a rebalance.
    pub fn leave(&self, member: MemberId) {
        let mut state = self.lock();
        if state.up {
            state.commit(member);
        }
        if let Some(gone) = state.members.remove(&member) {
            state.rebalance(&gone.group);
        }
    }

    /// The member is gone without committing (its process died); the
    /// group rebalances at once (a real broker waits for the session
    /// timeout first).
    pub fn leave_without_commit(&self, member: MemberId) {
        let mut state = self.lock();
        if let Some(gone) = state.members.remove(&member) {
            state.rebalance(&gone.group);
        }
    }

    /// The member is alive; false if it was evicted meanwhile.
    pub fn heartbeat(&self, member: MemberId) -> bool {
        let mut state = self.lock();
        if !state.up {
            return true;
        }
        let now = now();
        match state.members.get_mut(&member) {
            Some(m) => {
                m.last_heartbeat = now;
                true
            }
            None => false,
        }
    }

    /// Evicts members silent for longer than the session timeout.
    pub fn expire(&self) {
        let mut state = self.lock();
        if !state.up {
            return;
        }
        let now = now();
        let timeout = state.session_timeout;
        let silent: Vec<MemberId> = state
            .members
            .iter()
            .filter(|(_, m)| now.saturating_sub(m.last_heartbeat) > timeout)
            .map(|(&id, _)| id)
            .collect();
        if silent.is_empty() {
            return;
        }
        let mut groups = std::collections::BTreeSet::new();
        for id in &silent {
            if let Some(gone) = state.members.remove(id) {
                groups.insert(gone.group);
            }
            world::trace("kafka.evicted", &[*id as i64], None);
        }
        for group in groups {
            state.rebalance(&group);
        }
    }

    /// Up to `max` messages from the member's partitions.
    pub fn poll(&self, member: MemberId, max: usize) -> Poll {
        let mut state = self.lock();
        if !state.up {
            return Poll::Messages(Vec::new());
        }
        let State {
            members,
            partitions,
            fetched_high,
            topic,
            ..
        } = &mut *state;
        let Some(m) = members.get_mut(&member) else {
            return Poll::Rejoin;
        };
        let mut batch = Vec::new();
        for &partition in &m.assigned {
            let position = m.positions.entry(partition).or_insert(0);
            let log = &partitions[partition as usize];
            while batch.len() < max && (*position as usize) < log.len() {
                let record = &log[*position as usize];
                let high = fetched_high
                    .entry((m.group.clone(), partition))
                    .or_insert(-1);
                if *position <= *high {
                    world::count(|c| c.redeliveries += 1);
                } else {
                    *high = *position;
                }
                batch.push(Incoming {
                    topic: topic.clone(),
                    partition,
                    offset: *position,
                    key: Some(record.key.clone()),
                    payload: Some(record.payload.clone()),
                });
                *position += 1;
            }
        }
        Poll::Messages(batch)
    }

    /// Stores `offset` of `partition` as processed by `member`; refused if
    /// the member no longer owns the partition.
    pub fn store_offset(
        &self,
        member: MemberId,
        partition: i32,
        offset: i64,
    ) -> Result<(), String> {
        let mut state = self.lock();
        let Some(m) = state.members.get_mut(&member) else {
            return Err("Local: Erroneous state (not a member of the group)".into());
        };
        if !m.assigned.contains(&partition) {
            return Err(format!("Local: partition {partition} is not assigned"));
        }
        let stored = m.stored.entry(partition).or_insert(offset);
        *stored = (*stored).max(offset);
        Ok(())
    }

    /// The member's periodic auto-commit.
    pub fn commit(&self, member: MemberId) {
        let mut state = self.lock();
        if state.up {
            state.commit(member);
        }
    }

    /// Whether `member` still owns every partition in `partitions`.
    pub fn owns(&self, member: MemberId, partitions: &[i32]) -> bool {
        let state = self.lock();
        state
            .members
            .get(&member)
            .is_some_and(|m| partitions.iter().all(|p| m.assigned.contains(p)))
    }

    /// Whether every message was consumed and committed by the services'
    /// group.
    pub fn drained(&self) -> bool {
        let state = self.lock();
        state.partitions.iter().enumerate().all(|(p, log)| {
            let key = (GROUP.to_owned(), p as i32);
            state.committed.get(&key).copied().unwrap_or(0) >= log.len() as i64
        })
    }
}

impl State {
    fn commit(&mut self, member: MemberId) {
        let Some(m) = self.members.get(&member) else {
            return;
        };
        let group = m.group.clone();
        let stored: Vec<(i32, i64)> = m
            .stored
            .iter()
            .filter(|(p, _)| m.assigned.contains(p))
            .map(|(&p, &o)| (p, o))
            .collect();
        for (partition, offset) in stored {
            let committed = self
                .committed
                .entry((group.clone(), partition))
                .or_insert(0);
            *committed = (*committed).max(offset + 1);
        }
    }

    /// Eager rebalance of `group`: its live members' stored offsets
    /// committed, everything revoked, partitions dealt round-robin over the
    /// members in id order.
    fn rebalance(&mut self, group: &str) {
        let ids: Vec<MemberId> = self
            .members
            .iter()
            .filter(|(_, m)| m.group == group)
            .map(|(&id, _)| id)
            .collect();
        for &id in &ids {
            self.commit(id);
        }
        self.generation += 1;
        let generation = self.generation;
        for id in &ids {
            let m = self.members.get_mut(id).expect("a member");
            m.assigned.clear();
            m.positions.clear();
            m.stored.clear();
            m.generation = generation;
        }
        if !ids.is_empty() {
            for partition in 0..self.partitions.len() {
                let id = ids[partition % ids.len()];
                let p = i32::try_from(partition).expect("few partitions");
                let key = (group.to_owned(), p);
                let position = self.committed.get(&key).copied().unwrap_or(0);
                let m = self.members.get_mut(&id).expect("a member");
                m.assigned.push(p);
                m.positions.insert(p, position);
            }
        }
        world::count(|c| c.rebalances += 1);
        world::trace(
            "kafka.rebalance",
            &[generation as i64, ids.len() as i64],
            None,
        );
    }
}
