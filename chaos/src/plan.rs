//! The fault schedule of a run, as pure data: no I/O, no clock.
//!
//! [`plan_faults`] turns a seed and a weighted [`FaultMenu`] into a list of
//! [`PlannedFault`]s spread over the load window; the same seed always gives
//! the same plan, so a run can be replayed fault for fault. [`explicit`]
//! builds a plan by hand (tests, reproductions), and [`describe`] renders a
//! plan as the lines printed before a run starts.
//!
//! Layout of the window: the first [`LEAD_MARGIN_PERCENT`] of the load runs
//! fault-free (a baseline for the latency graphs), the last
//! [`END_MARGIN_PERCENT`] too (the system is seen working again under load).
//! What is between is cut into `count` equal slots with one fault each. A
//! fault starts in the early part of its slot, and its hold plus
//! [`RECOVERY_ALLOWANCE_MS`] ends inside the slot, so one slot's recovery
//! can be told apart from the next one's damage. With
//! [`FaultMenu::overlap_percent`], that share of the slots also holds a
//! second fault on another target, injected while the first still holds
//! (the broker down while a wallet instance is dead, a paused consumer
//! across a rebalance): the pair is planned, so it is replayed exactly.
//!
//! A fault on a service picks one of its instances from the seed
//! ([`Topology`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use harness::system::Link;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use run_log::FaultKind;
use serde::{Deserialize, Serialize};

/// Mixed into the run seed so the fault stream is independent of the other
/// streams drawn from the same seed (wallets, operations): changing the
/// workload does not move the faults, and vice versa. ASCII "chaosflt".
pub const FAULT_STREAM_SALT: u64 = 0x6368_616f_7366_6c74;

/// The fault-free share at the start of the load: a baseline to compare
/// the fault windows against.
pub const LEAD_MARGIN_PERCENT: u64 = 15;
/// The fault-free share at the end of the load: the system is seen serving
/// load again after the last fault, before the load stops.
pub const END_MARGIN_PERCENT: u64 = 10;
/// Time kept free after each fault heals, for the part to answer again
/// (a restarted history member waits for the group to hand it partitions).
pub const RECOVERY_ALLOWANCE_MS: u64 = 8_000;
/// A fault starts within this share of its slot, so the rest of the slot
/// is left for the hold and the recovery.
pub const EARLY_PART_PERCENT: u64 = 25;

/// A dead broker: long enough for producers and consumers to notice and
/// back off, short enough for the outbox to stay small.
pub const BROKER_KILL_HOLD_MS: (u64, u64) = (2_000, 6_000);
/// A dead history member: its partitions stay with the dead member until
/// its session times out.
pub const HISTORY_KILL_HOLD_MS: (u64, u64) = (1_000, 3_000);
/// Added to the session timeout for a paused history member, so the group
/// really evicts it and it has to rejoin when it continues.
pub const HISTORY_PAUSE_EXTRA_HOLD_MS: (u64, u64) = (1_000, 4_000);
/// A dead wallet: clients see refused connections, the outbox waits.
pub const WALLET_KILL_HOLD_MS: (u64, u64) = (1_000, 3_000);
/// PostgreSQL down: both services' pools fail and must reconnect.
pub const POSTGRES_RESTART_HOLD_MS: (u64, u64) = (1_000, 3_000);
/// Long enough for the late instance to read a good part of the topic.
pub const HISTORY_JOIN_HOLD_MS: (u64, u64) = (5_000, 15_000);
/// A slow link: long enough for pools and consumers to feel it.
pub const NET_LATENCY_HOLD_MS: (u64, u64) = (3_000, 8_000);
/// Dropped connections act at once; the hold only spaces the heal.
pub const NET_DROP_HOLD_MS: (u64, u64) = (500, 1_000);
/// A partition that heals: past the broker clients' retry backoff, and
/// sometimes past the consumer's session timeout.
pub const NET_PARTITION_HOLD_MS: (u64, u64) = (2_000, 8_000);
/// Answers lost for a few seconds: tens of operations retried.
pub const LOST_RESPONSE_HOLD_MS: (u64, u64) = (1_000, 4_000);

/// Which faults a run may draw, how often relative to each other, and how
/// many. A kind with weight 0 (or absent) is never drawn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultMenu {
    pub weights: BTreeMap<FaultKind, u32>,
    /// Faults wanted; fewer are planned when the load window is too short.
    pub count: u32,
    /// The share of slots (0-100) whose fault gets a companion on another
    /// target that overlaps it.
    #[serde(default)]
    pub overlap_percent: u32,
}

impl FaultMenu {
    /// Every kind with the same weight.
    pub fn uniform(count: u32) -> Self {
        Self {
            weights: FaultKind::ALL.iter().map(|&kind| (kind, 1)).collect(),
            count,
            overlap_percent: 0,
        }
    }

    /// The menu of a run with faults turned off.
    pub fn none() -> Self {
        Self {
            weights: BTreeMap::new(),
            count: 0,
            overlap_percent: 0,
        }
    }
}

/// One fault of a plan. Times are relative to the start of the load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedFault {
    /// From 1, in time order; the phases in chaos.jsonl carry it.
    pub fault_id: u32,
    pub kind: FaultKind,
    /// When to inject, in ms since the load started.
    pub at_ms: u64,
    /// How long the fault lasts before it is healed.
    pub hold_ms: u64,
    /// Which instance of its target it acts on (0: the first); always 0
    /// for the broker, PostgreSQL and a late history instance.
    #[serde(default)]
    pub instance: usize,
    /// Injected at its time even while earlier faults hold, overlapping
    /// them on purpose. A fault without it waits until every earlier fault
    /// has healed and recovered (and says it was late).
    #[serde(default)]
    pub overlaps: bool,
    /// The link a network fault acts on; `None` for the other kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<Link>,
}

impl PlannedFault {
    /// The same fault on instance `instance` of its target.
    pub fn on_instance(mut self, instance: usize) -> Self {
        self.instance = instance;
        self
    }

    /// The same fault, injected at its time whatever else holds.
    pub fn overlapping(mut self) -> Self {
        self.overlaps = true;
        self
    }

    /// The same network fault on `link`.
    pub fn on_link(mut self, link: Link) -> Self {
        self.link = Some(link);
        self
    }

    /// What it acts on, as chaos.jsonl names it: a process (`broker`,
    /// `postgres`, `wallet`, `wallet-2`, `history`, `history-2`, ...) or
    /// a link (`client->wallet`, `services->postgres`, ...).
    pub fn target(&self) -> String {
        match self.link {
            Some(link) if self.kind.is_network() => link.name(),
            _ => target_name(self.kind, self.instance),
        }
    }

    /// The link a network fault acts on: its own, else the client link of
    /// the first wallet instance.
    pub fn network_link(&self) -> Link {
        self.link.unwrap_or(Link::ClientWallet(0))
    }
}

/// How many instances of each service a run has: faults on a service
/// pick one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Topology {
    pub wallets: usize,
    pub histories: usize,
}

impl Topology {
    /// One instance of each service.
    pub const SINGLE: Topology = Topology {
        wallets: 1,
        histories: 1,
    };

    /// The instances `kind` can act on.
    fn choices(self, kind: FaultKind) -> usize {
        match kind {
            FaultKind::WalletKill => self.wallets.max(1),
            FaultKind::HistoryKill | FaultKind::HistoryPause => self.histories.max(1),
            _ => 1,
        }
    }
}

/// What a process fault of `kind` on `instance` acts on: the process name
/// of a service instance, else the part.
fn target_name(kind: FaultKind, instance: usize) -> String {
    match crate::runner::target_role(kind) {
        Some(role)
            if matches!(
                kind,
                FaultKind::WalletKill | FaultKind::HistoryKill | FaultKind::HistoryPause
            ) =>
        {
            harness::system::instance_name(role, instance)
        }
        Some(role) => role.as_str().to_owned(),
        None => "network".to_owned(),
    }
}

/// Two faults that may overlap: different targets (processes or links),
/// and not both on PostgreSQL (one server, one fault at a time). A late
/// history instance is a process of its own.
fn may_overlap(a: &PlannedFault, b: &PlannedFault) -> bool {
    let late = |fault: &PlannedFault| fault.kind == FaultKind::HistoryJoin;
    if late(a) || late(b) {
        return !(late(a) && late(b));
    }
    a.target() != b.target()
}

/// The link a network fault of `kind` is drawn on: lost responses only
/// on a client link (the load is the client that retries); the others on
/// any link.
fn draw_link(rng: &mut ChaCha8Rng, kind: FaultKind, topology: Topology) -> Option<Link> {
    if !kind.is_network() {
        return None;
    }
    let client = Link::ClientWallet(rng.random_range(0..topology.wallets.max(1)));
    if kind == FaultKind::LostResponse {
        return Some(client);
    }
    Some(match rng.random_range(0..3) {
        0 => client,
        1 => Link::Postgres,
        _ => Link::Broker,
    })
}

/// The hold bounds of `kind`, in ms, both inclusive.
pub fn hold_bounds_ms(kind: FaultKind, session_timeout_ms: u64) -> (u64, u64) {
    match kind {
        FaultKind::BrokerKill => BROKER_KILL_HOLD_MS,
        FaultKind::HistoryKill => HISTORY_KILL_HOLD_MS,
        FaultKind::HistoryPause => (
            session_timeout_ms.saturating_add(HISTORY_PAUSE_EXTRA_HOLD_MS.0),
            session_timeout_ms.saturating_add(HISTORY_PAUSE_EXTRA_HOLD_MS.1),
        ),
        FaultKind::WalletKill => WALLET_KILL_HOLD_MS,
        FaultKind::PostgresRestart | FaultKind::PostgresKill => POSTGRES_RESTART_HOLD_MS,
        FaultKind::HistoryJoin => HISTORY_JOIN_HOLD_MS,
        FaultKind::NetLatency => NET_LATENCY_HOLD_MS,
        FaultKind::NetDrop => NET_DROP_HOLD_MS,
        FaultKind::NetPartition => NET_PARTITION_HOLD_MS,
        FaultKind::LostResponse => LOST_RESPONSE_HOLD_MS,
    }
}

/// The seeded fault schedule for a load of `load_ms`.
///
/// Never panics: a menu without positive weights, a zero count or a window
/// too short for even one fault gives an empty plan, and a count larger
/// than the window holds is cut to what fits.
pub fn plan_faults(
    seed: u64,
    menu: &FaultMenu,
    load_ms: u64,
    session_timeout_ms: u64,
    topology: Topology,
) -> Vec<PlannedFault> {
    let choices: Vec<(FaultKind, u64)> = menu
        .weights
        .iter()
        .filter(|&(_, &weight)| weight > 0)
        .map(|(&kind, &weight)| (kind, u64::from(weight)))
        .collect();
    let total_weight: u64 = choices.iter().map(|&(_, weight)| weight).sum();
    let window_start_ms = percent_of(load_ms, LEAD_MARGIN_PERCENT);
    let window_end_ms = load_ms - percent_of(load_ms, END_MARGIN_PERCENT);
    let window_ms = window_end_ms.saturating_sub(window_start_ms);

    // Every fault needs at least the shortest hold plus the allowance; this
    // bounds the draws below whatever `count` asks for.
    let shortest_need_ms = choices
        .iter()
        .map(|&(kind, _)| hold_bounds_ms(kind, session_timeout_ms).0)
        .min()
        .unwrap_or(0)
        .saturating_add(RECOVERY_ALLOWANCE_MS);
    let wanted = u64::from(menu.count).min(window_ms / shortest_need_ms);
    if total_weight == 0 || wanted == 0 {
        return Vec::new();
    }

    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ FAULT_STREAM_SALT);
    let draws = Draws {
        choices: &choices,
        wanted,
        session_timeout_ms,
        topology,
        overlap_percent: menu.overlap_percent.min(100),
    };
    let drawn = draw(&mut rng, &draws);
    let planned = fitting_prefix(&drawn, window_ms);
    if planned == 0 {
        return Vec::new();
    }
    let slot_ms = window_ms / planned as u64;
    let mut faults = Vec::new();
    for (index, slot) in drawn.into_iter().take(planned).enumerate() {
        let slot_start_ms = window_start_ms + index as u64 * slot_ms;
        let slack_ms = slot_ms - slot.need_ms();
        let early_ms = slack_ms.min(percent_of(slot_ms, EARLY_PART_PERCENT));
        let at_ms = slot_start_ms + rng.random_range(0..=early_ms);
        faults.push(PlannedFault {
            at_ms,
            ..slot.first
        });
        if let Some(second) = slot.second {
            faults.push(PlannedFault {
                at_ms: at_ms + second.at_ms,
                ..second
            });
        }
    }
    for (fault, fault_id) in faults.iter_mut().zip(1u32..) {
        fault.fault_id = fault_id;
    }
    faults
}

/// What [`draw`] draws from.
struct Draws<'a> {
    choices: &'a [(FaultKind, u64)],
    wanted: u64,
    session_timeout_ms: u64,
    topology: Topology,
    overlap_percent: u32,
}

/// One slot's faults: the first (its `at_ms` still 0), and maybe a second
/// whose `at_ms` is its delay after the first, while the first holds.
struct Slot {
    first: PlannedFault,
    second: Option<PlannedFault>,
}

impl Slot {
    /// From the slot's first injection to the end of its recovery allowance.
    fn need_ms(&self) -> u64 {
        let first_ms = self.first.hold_ms;
        let second_ms = self
            .second
            .as_ref()
            .map_or(0, |c| c.at_ms.saturating_add(c.hold_ms));
        first_ms
            .max(second_ms)
            .saturating_add(RECOVERY_ALLOWANCE_MS)
    }
}

/// `wanted` slots. Every kind on the menu comes up once as a slot's first
/// fault (in a seeded order) before the weights decide the rest, so a run
/// long enough for the whole menu exercises all of it. Each slot draws all
/// of its own values, so cutting slots from the end leaves the others as
/// they were.
fn draw(rng: &mut ChaCha8Rng, draws: &Draws<'_>) -> Vec<Slot> {
    let total_weight: u64 = draws.choices.iter().map(|&(_, weight)| weight).sum();
    let mut coverage: Vec<FaultKind> = draws.choices.iter().map(|&(kind, _)| kind).collect();
    for i in (1..coverage.len()).rev() {
        coverage.swap(i, rng.random_range(0..=i));
    }
    let hold = |rng: &mut ChaCha8Rng, kind| {
        let (low, high) = hold_bounds_ms(kind, draws.session_timeout_ms);
        rng.random_range(low..=high)
    };
    let fault = |rng: &mut ChaCha8Rng, kind: FaultKind| PlannedFault {
        fault_id: 0,
        kind,
        at_ms: 0,
        hold_ms: hold(rng, kind),
        instance: rng.random_range(0..draws.topology.choices(kind)),
        overlaps: false,
        link: draw_link(rng, kind, draws.topology),
    };
    (0..draws.wanted)
        .map(|index| {
            let kind = match coverage.get(index as usize) {
                Some(&kind) => kind,
                None => pick_kind(rng, draws.choices, total_weight),
            };
            let first = fault(rng, kind);
            let wants_second = rng.random_range(0..100) < draws.overlap_percent;
            let second = wants_second.then(|| {
                // A few tries at a fault that may share the slot; a menu of
                // one target may have none.
                (0..COMPANION_TRIES).find_map(|_| {
                    let kind = pick_kind(rng, draws.choices, total_weight);
                    let mut second = fault(rng, kind);
                    // Starts while the first holds: in its first half.
                    second.at_ms = rng.random_range(1..=(first.hold_ms / 2).max(1));
                    second.overlaps = true;
                    may_overlap(&first, &second).then_some(second)
                })
            });
            Slot {
                first,
                second: second.flatten(),
            }
        })
        .collect()
}

/// How many kinds a slot tries for a companion that may overlap its first.
const COMPANION_TRIES: u32 = 4;

/// The longest prefix of `drawn` whose slots each fit an equal share of
/// the window. Cutting from the end keeps the first faults of a seed the
/// same whatever the load length.
fn fitting_prefix(drawn: &[Slot], window_ms: u64) -> usize {
    let mut need_ms = Vec::with_capacity(drawn.len());
    let mut longest_ms = 0;
    for slot in drawn {
        longest_ms = longest_ms.max(slot.need_ms());
        need_ms.push(longest_ms);
    }
    let mut planned = drawn.len();
    while planned > 0 && window_ms / (planned as u64) < need_ms[planned - 1] {
        planned -= 1;
    }
    planned
}

/// A hand-written plan: `(at_ms, kind, hold_ms)` entries, numbered from 1
/// in time order (entries at the same time keep their given order).
pub fn explicit(mut schedule: Vec<(u64, FaultKind, u64)>) -> Vec<PlannedFault> {
    schedule.sort_by_key(|&(at_ms, _, _)| at_ms);
    schedule
        .into_iter()
        .zip(1u32..)
        .map(|((at_ms, kind, hold_ms), fault_id)| PlannedFault {
            fault_id,
            kind,
            at_ms,
            hold_ms,
            instance: 0,
            overlaps: false,
            link: None,
        })
        .collect()
}

/// One line per fault, e.g. `#1 broker_kill at 8.0s for 4.2s`, naming
/// the instance when it is not the first (`on wallet-2`) and an overlap.
pub fn describe(plan: &[PlannedFault]) -> String {
    let mut text = String::new();
    for fault in plan {
        let _ = write!(
            text,
            "#{} {} at {} for {}",
            fault.fault_id,
            fault.kind,
            seconds(fault.at_ms),
            seconds(fault.hold_ms)
        );
        if fault.instance > 0 {
            let _ = write!(text, " on {}", fault.target());
        }
        if fault.overlaps {
            text.push_str(" (overlapping)");
        }
        text.push('\n');
    }
    text
}

/// `ms` as seconds with one decimal, rounded: `4250` → `4.3s`.
pub(crate) fn seconds(ms: u64) -> String {
    format!("{}s", tenths(ms))
}

/// `ms` as seconds with one decimal, rounded, without a unit: `4250` → `4.3`.
/// Integer arithmetic, so the same plan always prints the same text.
pub(crate) fn tenths(ms: u64) -> String {
    let tenths = ms.saturating_add(50) / 100;
    format!("{}.{}", tenths / 10, tenths % 10)
}

fn pick_kind(rng: &mut ChaCha8Rng, choices: &[(FaultKind, u64)], total_weight: u64) -> FaultKind {
    let mut ticket = rng.random_range(0..total_weight);
    for &(kind, weight) in choices {
        if ticket < weight {
            return kind;
        }
        ticket -= weight;
    }
    unreachable!("the ticket is below the sum of the weights")
}

/// `percent`% of `value`, without overflow for any `u64`.
fn percent_of(value: u64, percent: u64) -> u64 {
    (u128::from(value) * u128::from(percent) / 100) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEN_MINUTES_MS: u64 = 600_000;
    const SESSION_TIMEOUT_MS: u64 = 6_000;

    fn plan(seed: u64, menu: &FaultMenu, load_ms: u64) -> Vec<PlannedFault> {
        plan_faults(seed, menu, load_ms, SESSION_TIMEOUT_MS, Topology::SINGLE)
    }

    fn assert_well_formed(plan: &[PlannedFault], load_ms: u64) {
        let window_start_ms = percent_of(load_ms, LEAD_MARGIN_PERCENT);
        for (index, fault) in plan.iter().enumerate() {
            assert_eq!(fault.fault_id as usize, index + 1, "{plan:?}");
            assert!(
                fault.at_ms >= window_start_ms,
                "{fault:?} starts in the lead margin"
            );
            let end_ms = fault.at_ms + fault.hold_ms + RECOVERY_ALLOWANCE_MS;
            assert!(
                end_ms <= load_ms,
                "{fault:?} recovers after the load ({load_ms} ms)"
            );
            let (low, high) = hold_bounds_ms(fault.kind, SESSION_TIMEOUT_MS);
            assert!((low..=high).contains(&fault.hold_ms), "{fault:?}");
            if let Some(next) = plan.get(index + 1) {
                assert!(end_ms <= next.at_ms, "{fault:?} overlaps {next:?}");
            }
        }
    }

    #[test]
    fn same_seed_gives_the_same_plan() {
        let menu = FaultMenu::uniform(12);
        let first = plan(42, &menu, TEN_MINUTES_MS);
        assert_eq!(first.len(), 12);
        assert_eq!(first, plan(42, &menu, TEN_MINUTES_MS));
        assert_well_formed(&first, TEN_MINUTES_MS);
    }

    #[test]
    fn another_seed_gives_another_plan() {
        let menu = FaultMenu::uniform(12);
        assert_ne!(
            plan(42, &menu, TEN_MINUTES_MS),
            plan(43, &menu, TEN_MINUTES_MS)
        );
    }

    #[test]
    fn zero_weight_kinds_are_never_planned() {
        let mut menu = FaultMenu::uniform(20);
        menu.weights.insert(FaultKind::PostgresRestart, 0);
        menu.weights.insert(FaultKind::PostgresKill, 0);
        menu.weights.insert(FaultKind::WalletKill, 0);
        menu.weights.remove(&FaultKind::HistoryPause);
        menu.weights.remove(&FaultKind::HistoryJoin);
        menu.weights.retain(|kind, _| !kind.is_network());
        for seed in 0..50 {
            let plan = plan(seed, &menu, TEN_MINUTES_MS);
            assert!(!plan.is_empty());
            assert!(
                plan.iter()
                    .all(|f| matches!(f.kind, FaultKind::BrokerKill | FaultKind::HistoryKill)),
                "seed {seed}: {plan:?}"
            );
        }
        let only_zero = FaultMenu {
            weights: [(FaultKind::BrokerKill, 0)].into(),
            count: 5,
            overlap_percent: 0,
        };
        assert!(plan(1, &only_zero, TEN_MINUTES_MS).is_empty());
        assert!(plan(1, &FaultMenu::none(), TEN_MINUTES_MS).is_empty());
    }

    #[test]
    fn weights_shape_the_mix() {
        let menu = FaultMenu {
            weights: [(FaultKind::BrokerKill, 9), (FaultKind::WalletKill, 1)].into(),
            count: 40,
            overlap_percent: 0,
        };
        let plan = plan(7, &menu, 3_600_000);
        assert_eq!(plan.len(), 40);
        let brokers = plan
            .iter()
            .filter(|f| f.kind == FaultKind::BrokerKill)
            .count();
        assert!(brokers > 25, "{brokers} of 40 broker kills at weight 9:1");
    }

    #[test]
    fn faults_never_overlap_and_recover_inside_the_load() {
        let menu = FaultMenu::uniform(10);
        for seed in 0..200 {
            for load_ms in [120_000, 300_000, TEN_MINUTES_MS] {
                assert_well_formed(&plan(seed, &menu, load_ms), load_ms);
            }
        }
    }

    #[test]
    fn history_pause_outlasts_the_session_timeout() {
        let menu = FaultMenu {
            weights: [(FaultKind::HistoryPause, 1)].into(),
            count: 8,
            overlap_percent: 0,
        };
        for session_timeout_ms in [3_000, 6_000, 45_000] {
            let plan = plan_faults(5, &menu, 1_200_000, session_timeout_ms, Topology::SINGLE);
            assert_eq!(plan.len(), 8);
            for fault in &plan {
                assert!(fault.hold_ms > session_timeout_ms, "{fault:?}");
                assert!(fault.hold_ms <= session_timeout_ms + HISTORY_PAUSE_EXTRA_HOLD_MS.1);
            }
        }
    }

    #[test]
    fn a_count_larger_than_fits_is_capped() {
        let menu = FaultMenu::uniform(1_000);
        let load_ms = 120_000;
        let plan = plan(3, &menu, load_ms);
        assert!(!plan.is_empty());
        // 75% of two minutes is 90 s; each fault needs at least 9 s.
        assert!(plan.len() <= 10, "{} faults", plan.len());
        assert_well_formed(&plan, load_ms);

        // Too short for anything, or absurd inputs: empty, no panic.
        assert!(self::plan(3, &menu, 5_000).is_empty());
        assert!(self::plan(3, &menu, 0).is_empty());
        let huge = FaultMenu::uniform(u32::MAX);
        assert_eq!(
            plan_faults(
                3,
                &FaultMenu::uniform(2),
                u64::MAX,
                SESSION_TIMEOUT_MS,
                Topology::SINGLE
            )
            .len(),
            2
        );
        assert!(plan_faults(3, &huge, 60_000, u64::MAX, Topology::SINGLE).len() <= 5);
    }

    #[test]
    fn overlapping_pairs_share_a_slot_on_different_targets_and_instances_vary() {
        let mut menu = FaultMenu::uniform(10);
        menu.overlap_percent = 100;
        let topology = Topology {
            wallets: 2,
            histories: 3,
        };
        let load_ms = TEN_MINUTES_MS;
        let mut instances = std::collections::BTreeSet::new();
        for seed in 0..100 {
            let plan = plan_faults(seed, &menu, load_ms, SESSION_TIMEOUT_MS, topology);
            assert_eq!(
                plan,
                plan_faults(seed, &menu, load_ms, SESSION_TIMEOUT_MS, topology)
            );
            let ids: Vec<u32> = plan.iter().map(|f| f.fault_id).collect();
            assert_eq!(ids, (1..=plan.len() as u32).collect::<Vec<_>>());
            for (index, fault) in plan.iter().enumerate() {
                instances.insert((fault.kind, fault.instance));
                assert!(fault.instance < topology.choices(fault.kind), "{fault:?}");
                if !fault.overlaps {
                    continue;
                }
                // The fault it overlaps is the one before: injected first,
                // still holding, on another process.
                let first = &plan[index - 1];
                assert!(!first.overlaps, "{plan:?}");
                assert!(first.at_ms < fault.at_ms, "{first:?} {fault:?}");
                assert!(
                    fault.at_ms < first.at_ms + first.hold_ms,
                    "{first:?} {fault:?}"
                );
                assert!(may_overlap(first, fault), "{first:?} {fault:?}");
                let end_ms = fault.at_ms + fault.hold_ms + RECOVERY_ALLOWANCE_MS;
                assert!(end_ms <= load_ms, "{fault:?}");
                if let Some(next) = plan.get(index + 1) {
                    assert!(end_ms <= next.at_ms, "{fault:?} runs into {next:?}");
                }
            }
            assert!(plan.iter().any(|f| f.overlaps), "seed {seed}: {plan:?}");
        }
        for (kind, count) in [
            (FaultKind::WalletKill, 2),
            (FaultKind::HistoryKill, 3),
            (FaultKind::HistoryPause, 3),
        ] {
            for instance in 0..count {
                assert!(
                    instances.contains(&(kind, instance)),
                    "{kind} on {instance}"
                );
            }
        }
        let one = |kind, instance| explicit(vec![(0, kind, 1_000)])[0].on_instance(instance);
        let pairs = [
            (
                one(FaultKind::PostgresKill, 0),
                one(FaultKind::PostgresRestart, 0),
                false,
            ),
            (
                one(FaultKind::WalletKill, 1),
                one(FaultKind::WalletKill, 1),
                false,
            ),
            (
                one(FaultKind::WalletKill, 0),
                one(FaultKind::WalletKill, 1),
                true,
            ),
            (
                one(FaultKind::HistoryJoin, 0),
                one(FaultKind::HistoryKill, 0),
                true,
            ),
            (
                one(FaultKind::NetPartition, 0).on_link(Link::Postgres),
                one(FaultKind::NetLatency, 0).on_link(Link::Postgres),
                false,
            ),
            (
                one(FaultKind::NetPartition, 0).on_link(Link::Postgres),
                one(FaultKind::PostgresKill, 0),
                true,
            ),
        ];
        for (a, b, may) in pairs {
            assert_eq!(may_overlap(&a, &b), may, "{a:?} {b:?}");
        }
    }

    #[test]
    fn menus_round_trip_through_json() {
        let menu = FaultMenu::uniform(3);
        let text = serde_json::to_string(&menu).unwrap();
        assert!(text.contains(r#""history_pause":1"#), "{text}");
        assert_eq!(serde_json::from_str::<FaultMenu>(&text).unwrap(), menu);
    }

    #[test]
    fn explicit_plans_are_numbered_in_time_order() {
        let plan = explicit(vec![
            (9_000, FaultKind::WalletKill, 1_000),
            (1_000, FaultKind::BrokerKill, 4_200),
            (5_000, FaultKind::HistoryPause, 7_000),
        ]);
        let order: Vec<(u32, FaultKind, u64)> =
            plan.iter().map(|f| (f.fault_id, f.kind, f.at_ms)).collect();
        assert_eq!(
            order,
            [
                (1, FaultKind::BrokerKill, 1_000),
                (2, FaultKind::HistoryPause, 5_000),
                (3, FaultKind::WalletKill, 9_000),
            ]
        );
        assert_eq!(
            describe(&plan[..2]),
            "#1 broker_kill at 1.0s for 4.2s\n#2 history_pause at 5.0s for 7.0s\n"
        );
        assert_eq!(seconds(8_049), "8.0s");
        assert_eq!(seconds(8_050), "8.1s");
    }
}
