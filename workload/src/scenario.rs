//! Scenarios: what a run does. The built-in ones (`loadgen scenarios` lists
//! them) and user-written TOML files (`--scenario-file`) share one shape:
//! wallet count and funds, operation mix, wallet-choice skew, amounts,
//! users, rate, duration, and the fault schedule.

use std::{collections::BTreeMap, path::Path, time::Duration};

use anyhow::{Context, bail};
use run_log::{FaultKind, Link};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// A scenario, as written in a TOML file (every field has a default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    /// Wallets created before the load starts.
    pub wallets: u32,
    /// Each wallet is funded with a seed-drawn amount between these.
    #[serde(with = "wallet_events::money_str")]
    pub initial_balance_min: Decimal,
    #[serde(with = "wallet_events::money_str")]
    pub initial_balance_max: Decimal,
    /// Concurrent goose users of a closed-loop load (rate 0).
    pub users: u32,
    /// How long the load runs (`30s`, `2m`).
    #[serde(with = "humantime_serde_shim")]
    pub duration: Duration,
    /// Operations per second, arriving on schedule whatever the system
    /// does (open model); 0 runs `users` users each as fast as the system
    /// answers (closed loop).
    pub rate: u32,
    /// Open model: operations in flight at most. An arrival that finds
    /// this many still running is dropped (counted, shown), not delayed.
    pub max_in_flight: u32,
    /// 0 picks wallets uniformly; above 0 it is the Zipf exponent of the
    /// wallet choice (1.1 puts most traffic on a few hot wallets).
    pub skew: f64,
    /// Transfer and fund amounts are drawn uniformly between these.
    #[serde(with = "wallet_events::money_str")]
    pub amount_min: Decimal,
    #[serde(with = "wallet_events::money_str")]
    pub amount_max: Decimal,
    pub mix: Mix,
    pub faults: Faults,
    /// Wallet service processes; the load is spread over them and their
    /// relays compete for the outbox.
    pub wallet_instances: u32,
    /// History service processes, members of one consumer group.
    pub history_instances: u32,
}

/// Relative weights of the operations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Mix {
    pub transfer: u32,
    pub fund: u32,
    pub get_wallet: u32,
    pub get_history: u32,
}

impl Default for Mix {
    fn default() -> Self {
        Self {
            transfer: 80,
            fund: 10,
            get_wallet: 5,
            get_history: 5,
        }
    }
}

/// The fault schedule: drawn from the seed over a weighted menu, or written
/// out explicitly.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    pub enabled: bool,
    /// How many faults to draw over the load window.
    pub count: u32,
    /// The share (0-100) of drawn faults that get a second fault on another
    /// target, injected while the first still holds.
    pub overlap_percent: u32,
    /// Relative weights by fault kind; kinds left out are never drawn.
    pub menu: BTreeMap<FaultKind, u32>,
    /// Explicit faults; when present, replaces the drawn schedule.
    pub schedule: Vec<ScheduledFault>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduledFault {
    #[serde(with = "humantime_serde_shim")]
    pub at: Duration,
    pub kind: FaultKind,
    #[serde(with = "humantime_serde_shim")]
    pub hold: Duration,
    /// Which instance of a service it acts on: 1 is the first (`wallet`),
    /// 2 the second (`wallet-2`), ...
    #[serde(default = "first_instance")]
    pub instance: u32,
    /// Injected at its time even while earlier faults hold.
    #[serde(default)]
    pub overlaps: bool,
    /// The link of a network fault: `client->wallet` (`-2`, ...),
    /// `services->postgres` or `services->broker`; default the first
    /// client link.
    #[serde(default)]
    pub link: Option<run_log::Link>,
}

fn first_instance() -> u32 {
    1
}

impl Default for Scenario {
    fn default() -> Self {
        Self {
            name: "custom".into(),
            description: String::new(),
            wallets: 100,
            initial_balance_min: Decimal::new(500, 0),
            initial_balance_max: Decimal::new(2_000, 0),
            users: 16,
            duration: Duration::from_secs(60),
            rate: 0,
            max_in_flight: 256,
            skew: 0.0,
            amount_min: Decimal::new(1, 2),
            amount_max: Decimal::new(50, 0),
            mix: Mix::default(),
            faults: Faults::default(),
            wallet_instances: 1,
            history_instances: 1,
        }
    }
}

/// A fault `at` seconds into the load, held `hold` seconds, on the first
/// instance or link.
fn scheduled(at: u64, kind: FaultKind, hold: u64) -> ScheduledFault {
    ScheduledFault {
        at: Duration::from_secs(at),
        kind,
        hold: Duration::from_secs(hold),
        instance: 1,
        overlaps: false,
        link: None,
    }
}

fn menu(kinds: &[(FaultKind, u32)]) -> BTreeMap<FaultKind, u32> {
    kinds.iter().copied().collect()
}

/// The open model's bound on operations in flight may not exceed this:
/// each is a goose user with its own connections.
pub const MAX_IN_FLIGHT_MAX: u32 = 4_096;

/// Service instances a scenario may ask for: each is a process with its own
/// pools and consumer, and this machine class has two cores.
pub const INSTANCES_MAX: u32 = 8;

/// The built-in scenarios, in the order `loadgen scenarios` lists them.
pub fn builtin() -> Vec<Scenario> {
    use FaultKind::*;
    vec![
        Scenario {
            name: "smoke".into(),
            description: "70 s, 8 users at 150 ops/s, 40 wallets, 2 wallet + 2 history instances; one fault of every family: broker kill, answers lost to the client, history kill, wallet kill, PostgreSQL cut off and crashed, the broker link cut while a wallet instance is down (the CI gate)".into(),
            wallets: 40,
            users: 8,
            duration: Duration::from_secs(70),
            rate: 150,
            wallet_instances: 2,
            history_instances: 2,
            faults: Faults {
                enabled: true,
                schedule: vec![
                    scheduled(5, BrokerKill, 3),
                    ScheduledFault { link: Some(Link::ClientWallet(0)), ..scheduled(12, LostResponse, 3) },
                    ScheduledFault { instance: 2, ..scheduled(18, HistoryKill, 2) },
                    ScheduledFault { instance: 2, ..scheduled(30, WalletKill, 2) },
                    ScheduledFault { link: Some(Link::Postgres), ..scheduled(36, NetPartition, 3) },
                    scheduled(43, PostgresKill, 2),
                    ScheduledFault { link: Some(Link::Broker), ..scheduled(52, NetPartition, 4) },
                    ScheduledFault { overlaps: true, ..scheduled(53, WalletKill, 2) },
                ],
                ..Faults::default()
            },
            ..Scenario::default()
        },
        Scenario {
            name: "transfers".into(),
            description: "uniform random transfers among 1000 wallets, with some funds and reads; no faults unless --faults".into(),
            wallets: 1_000,
            users: 32,
            duration: Duration::from_secs(60),
            faults: Faults {
                enabled: false,
                count: 3,
                menu: menu(&[(BrokerKill, 1), (HistoryKill, 1), (HistoryPause, 1)]),
                ..Faults::default()
            },
            ..Scenario::default()
        },
        Scenario {
            name: "hotspot".into(),
            description: "Zipf-skewed wallet choice (s = 1.2) over 200 wallets: heavy lock contention on a few".into(),
            wallets: 200,
            users: 32,
            duration: Duration::from_secs(60),
            skew: 1.2,
            faults: Faults {
                enabled: false,
                count: 3,
                menu: menu(&[(BrokerKill, 1), (HistoryKill, 1), (WalletKill, 1)]),
                ..Faults::default()
            },
            ..Scenario::default()
        },
        Scenario {
            name: "chaos".into(),
            description: "3 min at 200 ops/s on 2 wallet and 2 history instances with the full fault menu, half the faults overlapped by a second: broker, history, wallet kills, history pause, PostgreSQL restart and crash, a history instance joining late in a fresh group, slow, dropped and cut network links, lost answers".into(),
            wallets: 300,
            users: 16,
            duration: Duration::from_secs(180),
            rate: 200,
            wallet_instances: 2,
            history_instances: 2,
            faults: Faults {
                enabled: true,
                count: 8,
                overlap_percent: 50,
                menu: menu(&[(BrokerKill, 2), (HistoryKill, 2), (HistoryPause, 1), (WalletKill, 2), (PostgresRestart, 1), (PostgresKill, 1), (HistoryJoin, 1), (NetLatency, 1), (NetDrop, 1), (NetPartition, 2), (LostResponse, 2)]),
                ..Faults::default()
            },
            ..Scenario::default()
        },
    ]
}

pub fn find_builtin(name: &str) -> anyhow::Result<Scenario> {
    let all = builtin();
    let names: Vec<String> = all.iter().map(|s| s.name.clone()).collect();
    all.into_iter().find(|s| s.name == name).with_context(|| {
        format!(
            "no scenario named {name:?}; built-in scenarios: {}",
            names.join(", ")
        )
    })
}

pub fn from_file(path: &Path) -> anyhow::Result<Scenario> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let scenario: Scenario = toml::from_str(&text)
        .with_context(|| format!("{} is not a valid scenario", path.display()))?;
    scenario
        .validate()
        .with_context(|| format!("in {}", path.display()))?;
    Ok(scenario)
}

impl Scenario {
    /// Refuses scenarios that cannot run, with a message naming the field.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.wallets < 2 {
            bail!("wallets must be at least 2 (transfers need two wallets)");
        }
        if self.users == 0 {
            bail!("users must be at least 1");
        }
        if !(1..=MAX_IN_FLIGHT_MAX).contains(&self.max_in_flight) {
            bail!("max_in_flight must be between 1 and {MAX_IN_FLIGHT_MAX}");
        }
        for (name, count) in [
            ("wallet_instances", self.wallet_instances),
            ("history_instances", self.history_instances),
        ] {
            if !(1..=INSTANCES_MAX).contains(&count) {
                bail!("{name} must be between 1 and {INSTANCES_MAX}");
            }
        }
        if self.faults.overlap_percent > 100 {
            bail!("faults.overlap_percent must be between 0 and 100");
        }
        if self.duration < Duration::from_secs(1) {
            bail!("duration must be at least 1s");
        }
        if self.mix.transfer + self.mix.fund + self.mix.get_wallet + self.mix.get_history == 0 {
            bail!("mix: at least one operation needs a weight above 0");
        }
        if !(self.skew >= 0.0 && self.skew.is_finite()) {
            bail!("skew must be 0 (uniform) or a positive Zipf exponent");
        }
        let positive = |name: &str, value: Decimal| {
            if value <= Decimal::ZERO || value.scale() > wallet_events::MONEY_SCALE {
                bail!("{name} must be a positive amount with at most 4 decimals");
            }
            Ok(())
        };
        positive("amount_min", self.amount_min)?;
        positive("amount_max", self.amount_max)?;
        positive("initial_balance_min", self.initial_balance_min)?;
        positive("initial_balance_max", self.initial_balance_max)?;
        if self.amount_min > self.amount_max || self.initial_balance_min > self.initial_balance_max
        {
            bail!("a *_min amount is above its *_max");
        }
        // A schedule that is off is not run, so a shorter --duration with
        // --no-faults is fine.
        let schedule = if self.faults.enabled {
            &self.faults.schedule[..]
        } else {
            &[]
        };
        for fault in schedule {
            if fault.at + fault.hold > self.duration {
                bail!(
                    "fault {} at {:?} holding {:?} ends after the load ({:?})",
                    fault.kind,
                    fault.at,
                    fault.hold,
                    self.duration
                );
            }
            let instances = match fault.kind {
                FaultKind::WalletKill => self.wallet_instances,
                FaultKind::HistoryKill | FaultKind::HistoryPause => self.history_instances,
                _ => 1,
            };
            match fault.link {
                Some(_) if !fault.kind.is_network() => bail!(
                    "fault {} at {:?}: only network faults take a link",
                    fault.kind,
                    fault.at
                ),
                Some(Link::ClientWallet(index)) if index as u32 >= self.wallet_instances => bail!(
                    "fault {} at {:?}: link {} names a wallet instance the scenario does not run",
                    fault.kind,
                    fault.at,
                    Link::ClientWallet(index).name()
                ),
                Some(Link::Postgres | Link::Broker) if fault.kind == FaultKind::LostResponse => {
                    bail!(
                        "fault lost_response at {:?}: answers are lost on a client link only",
                        fault.at
                    )
                }
                _ => {}
            }
            if !(1..=instances).contains(&fault.instance) {
                bail!(
                    "fault {} at {:?}: instance {} does not exist (1 to {instances})",
                    fault.kind,
                    fault.at,
                    fault.instance
                );
            }
        }
        Ok(())
    }
}

/// Durations written like `30s`, `2m`, `1m30s`.
mod humantime_serde_shim {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&humantime::format_duration(*value).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scenario files shipped in `scenarios/` load and validate.
    #[test]
    fn the_shipped_scenario_files_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
        let pause = from_file(&dir.join("history-pause.toml")).unwrap();
        assert_eq!(pause.name, "history-pause");
        assert_eq!((pause.rate, pause.wallets), (200, 300));
        assert!(pause.faults.enabled);
        assert_eq!(pause.faults.schedule.len(), 1);
        assert_eq!(pause.faults.schedule[0].kind, FaultKind::HistoryPause);
        assert_eq!(pause.faults.schedule[0].at, Duration::from_secs(25));
        assert_eq!(pause.faults.schedule[0].hold, Duration::from_secs(8));
    }

    #[test]
    fn builtins_are_valid_and_smoke_covers_every_fault_family_within_90_s() {
        for scenario in builtin() {
            scenario.validate().unwrap();
        }
        let smoke = find_builtin("smoke").unwrap();
        assert!(smoke.duration <= Duration::from_secs(90));
        assert!(smoke.wallet_instances >= 2 && smoke.history_instances >= 2);
        let schedule = &smoke.faults.schedule;
        let has = |wanted: &dyn Fn(&ScheduledFault) -> bool| schedule.iter().any(wanted);
        use FaultKind::*;
        assert!(has(&|f| f.kind == BrokerKill), "broker");
        assert!(
            has(&|f| matches!(f.kind, HistoryKill | HistoryPause)),
            "consumer"
        );
        assert!(has(&|f| f.kind == WalletKill), "wallet");
        assert!(
            has(&|f| matches!(f.kind, PostgresKill | PostgresRestart)),
            "PostgreSQL"
        );
        assert!(has(&|f| f.kind == LostResponse), "a lost response");
        assert!(
            has(&|f| f.kind.is_network() && f.link == Some(Link::Postgres)),
            "network"
        );
        assert!(has(&|f| f.overlaps), "an overlap");
        let chaos = find_builtin("chaos").unwrap();
        assert!(chaos.wallet_instances >= 2 && chaos.history_instances >= 2);
        assert!(chaos.faults.overlap_percent > 0);
        assert!(chaos.faults.menu.keys().any(|kind| kind.is_network()));
        assert!(
            find_builtin("nope")
                .unwrap_err()
                .to_string()
                .contains("smoke")
        );
    }

    #[test]
    fn scheduled_faults_name_instances_and_links_that_exist() {
        let mut scenario = find_builtin("smoke").unwrap();
        // Off, the schedule is not held to a shorter load.
        scenario.duration = Duration::from_secs(10);
        scenario.faults.enabled = false;
        scenario.validate().unwrap();
        scenario.faults.enabled = true;
        assert!(scenario.validate().is_err());
        scenario.duration = Duration::from_secs(70);
        scenario.faults.schedule = vec![ScheduledFault {
            link: Some(Link::ClientWallet(5)),
            ..scheduled(1, FaultKind::LostResponse, 1)
        }];
        let err = scenario.validate().unwrap_err().to_string();
        assert!(err.contains("client->wallet-6"), "{err}");
        scenario.faults.schedule = vec![ScheduledFault {
            link: Some(Link::Postgres),
            ..scheduled(1, FaultKind::LostResponse, 1)
        }];
        assert!(scenario.validate().is_err());
        scenario.faults.schedule = vec![ScheduledFault {
            link: Some(Link::Broker),
            ..scheduled(1, FaultKind::BrokerKill, 1)
        }];
        assert!(scenario.validate().is_err());
        scenario.faults.schedule = vec![ScheduledFault {
            instance: 3,
            ..scheduled(1, FaultKind::WalletKill, 1)
        }];
        assert!(scenario.validate().is_err());
        let text = r#"
            name = "net"
            [[faults.schedule]]
            at = "5s"
            kind = "net_partition"
            hold = "2s"
            link = "services->broker"
        "#;
        let parsed: Scenario = toml::from_str(text).unwrap();
        assert_eq!(parsed.faults.schedule[0].link, Some(Link::Broker));
        assert_eq!(parsed.faults.schedule[0].instance, 1);
        assert!(toml::from_str::<Scenario>(&text.replace("broker\"", "nowhere\"")).is_err());
    }

    #[test]
    fn a_toml_file_overrides_defaults() {
        let text = r#"
            name = "mine"
            wallets = 10
            duration = "1m30s"
            amount_max = "5.00"
            [mix]
            transfer = 1
            fund = 0
            get_wallet = 0
            get_history = 0
            [faults]
            enabled = true
            [[faults.schedule]]
            at = "10s"
            kind = "broker_kill"
            hold = "5s"
        "#;
        let scenario: Scenario = toml::from_str(text).unwrap();
        scenario.validate().unwrap();
        assert_eq!(scenario.duration, Duration::from_secs(90));
        assert_eq!(scenario.amount_max, Decimal::new(5, 0));
        assert_eq!(scenario.users, 16, "unset fields keep their defaults");
        assert_eq!(scenario.faults.schedule[0].kind, FaultKind::BrokerKill);
    }

    #[test]
    fn mistakes_are_named() {
        assert!(
            toml::from_str::<Scenario>("walets = 3").is_err(),
            "unknown field"
        );
        let bad = Scenario {
            wallets: 1,
            ..Scenario::default()
        };
        assert!(bad.validate().unwrap_err().to_string().contains("wallets"));
        let bad = Scenario {
            amount_min: Decimal::new(1, 5),
            ..Scenario::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("amount_min")
        );
    }
}
