//! What a run will do, decided before anything starts: the scenario with
//! the command line's overrides, the seed, the fault plan, the run
//! directory, and the exact command that replays it.

use std::path::PathBuf;

use anyhow::Context;
use chaos::plan::{FaultMenu, PlannedFault};
use harness::system::{Launcher, SystemOptions};

use workload::scenario::{self, Scenario};

use crate::cli::RunArgs;

pub struct Plan {
    pub scenario: Scenario,
    pub seed: u64,
    pub faults: Vec<PlannedFault>,
    pub run_dir: PathBuf,
    pub command: String,
    /// Processes outside the system whose CPU the run accounts.
    pub also_account: Vec<(String, u32)>,
}

/// Resolves the scenario and the seed, plans the faults and creates the
/// run directory. Every user mistake is an error here, before any process
/// starts.
pub fn prepare(args: &RunArgs) -> anyhow::Result<Plan> {
    let scenario = resolve_scenario(args)?;
    super::parse_thresholds(args)?;
    let seed = args.seed.unwrap_or_else(rand::random);
    let faults = plan_faults(args, &scenario, seed);
    let mut command: Vec<String> = match &args.command_line {
        Some(line) => vec![line.clone()],
        None => std::env::args().collect(),
    };
    if args.seed.is_none() {
        command.push(format!("--seed {seed}"));
    }
    let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S");
    let run_dir = args
        .out_dir
        .join(format!("{stamp}-{}-seed{seed}", scenario.name));
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    Ok(Plan {
        scenario,
        seed,
        faults,
        run_dir,
        command: command.join(" "),
        also_account: args.also_account.clone(),
    })
}

fn resolve_scenario(args: &RunArgs) -> anyhow::Result<Scenario> {
    let mut scenario = match &args.scenario_file {
        Some(path) => scenario::from_file(path)?,
        None => scenario::find_builtin(&args.scenario)?,
    };
    if let Some(duration) = args.duration {
        scenario.duration = duration;
    }
    if let Some(users) = args.users {
        scenario.users = users;
    }
    if let Some(rate) = args.rate {
        scenario.rate = rate;
    }
    if let Some(bound) = args.max_in_flight {
        scenario.max_in_flight = bound;
    }
    if let Some(wallets) = args.wallets {
        scenario.wallets = wallets;
    }
    if let Some(count) = args.wallet_instances {
        scenario.wallet_instances = count;
    }
    if let Some(count) = args.history_instances {
        scenario.history_instances = count;
    }
    if args.no_faults {
        scenario.faults.enabled = false;
    }
    if args.faults {
        scenario.faults.enabled = true;
    }
    scenario.validate()?;
    Ok(scenario)
}

/// The scenario's explicit schedule, or faults drawn from the seed over
/// its menu; none when faults are off.
fn plan_faults(args: &RunArgs, scenario: &Scenario, seed: u64) -> Vec<PlannedFault> {
    if !scenario.faults.enabled {
        return Vec::new();
    }
    let schedule = &scenario.faults.schedule;
    if !schedule.is_empty() {
        let mut plan = chaos::plan::explicit(
            schedule
                .iter()
                .map(|f| (f.at.as_millis() as u64, f.kind, f.hold.as_millis() as u64))
                .collect(),
        );
        // `explicit` keeps the given order of faults due at the same time,
        // and the schedule is in time order once sorted the same way.
        let mut sorted: Vec<_> = schedule.iter().collect();
        sorted.sort_by_key(|f| f.at);
        for (fault, wanted) in plan.iter_mut().zip(sorted) {
            *fault = fault.on_instance(wanted.instance.saturating_sub(1) as usize);
            fault.overlaps = wanted.overlaps;
            fault.link = wanted.link;
        }
        return plan;
    }
    let menu = FaultMenu {
        weights: scenario.faults.menu.clone(),
        count: scenario.faults.count,
        overlap_percent: scenario.faults.overlap_percent,
    };
    chaos::plan::plan_faults(
        seed,
        &menu,
        scenario.duration.as_millis() as u64,
        u64::from(args.infra.session_timeout_ms),
        chaos::plan::Topology {
            wallets: scenario.wallet_instances as usize,
            histories: scenario.history_instances as usize,
        },
    )
}

impl Plan {
    /// The seed and the command first, so a run can always be replayed.
    pub fn print(&self) {
        println!(
            "seed {}   (replay: {} --seed {})",
            self.seed,
            self.command
                .split(" --seed")
                .next()
                .unwrap_or(&self.command),
            self.seed
        );
        println!("command: {}", self.command);
        println!("run directory: {}", self.run_dir.display());
        let s = &self.scenario;
        println!(
            "scenario {}: {} wallets, {} wallet + {} history instances, {}, {}, {} faults",
            s.name,
            s.wallets,
            s.wallet_instances,
            s.history_instances,
            humantime::format_duration(s.duration),
            if s.rate == 0 {
                format!("closed loop of {} users", s.users)
            } else {
                format!(
                    "{} ops/s arriving (open model, at most {} in flight)",
                    s.rate, s.max_in_flight
                )
            },
            self.faults.len()
        );
        for line in chaos::plan::describe(&self.faults).lines() {
            println!("  fault {line}");
        }
    }

    /// The system this run provisions: every process a child of this
    /// binary, logging into the run directory.
    pub fn system_options(&self, args: &RunArgs) -> anyhow::Result<SystemOptions> {
        let exe = std::env::current_exe().context("locating this executable")?;
        let mut options = SystemOptions::isolated(&self.run_dir, Launcher::multi_call(exe));
        options.database_url = args.infra.database_url.clone();
        options.kafka_brokers = args.infra.kafka_brokers.clone();
        options.partitions = args.infra.partitions;
        options.session_timeout_ms = args.infra.session_timeout_ms;
        if args.infra.open {
            options.auth_secret = None;
        }
        options.network_faults = self.faults.iter().any(|f| f.kind.is_network());
        options.wallet_instances = self.scenario.wallet_instances as usize;
        options.history_instances = self.scenario.history_instances as usize;
        // `SERVICE_LOG` (a `RUST_LOG` filter) turns up the services' logs
        // without the load generator's, e.g. `info,wallet::relay=debug`.
        let filter = std::env::var("SERVICE_LOG")
            .unwrap_or_else(|_| "info,sqlx=warn,tower_http=warn,rdkafka=warn".into());
        options.service_env.push(("RUST_LOG".into(), filter));
        Ok(options)
    }
}
