//! CPU each process of the system uses while the load runs, read from
//! `/proc` (`harness::procfs`) at the load's start and end: the services
//! and the broker by their own pids, PostgreSQL with every backend below
//! its postmaster, and this process (the load generator).
//!
//! A process restarted by a fault counts from its restart only: its
//! killed predecessor's CPU is gone with it.

use harness::system::{Role, System, instance_name};
use run_log::summary::ProcessCpu;

/// One process to account: its name, pid, and whether its children count.
struct Watched {
    name: String,
    pid: u32,
    tree: bool,
}

/// The readings at the load's start.
pub struct CpuWatch {
    start: Vec<(String, u32, f64)>,
}

/// Every process of `system` with a pid now, then `extra` (a PostgreSQL
/// the run did not start but can see), then this process.
fn watched(system: &System, extra: &[(String, u32)]) -> Vec<Watched> {
    let mut list = Vec::new();
    for role in [Role::Wallet, Role::History] {
        for (index, instance) in system.instances(role).iter().enumerate() {
            if let Some(pid) = instance.process.as_ref().and_then(|p| p.pid()) {
                list.push(Watched {
                    name: instance_name(role, index),
                    pid,
                    tree: false,
                });
            }
        }
    }
    if let Some(pid) = system.broker.as_ref().and_then(|b| b.pid()) {
        list.push(Watched {
            name: "broker".into(),
            pid,
            tree: false,
        });
    }
    let postgres = system.postgres.as_ref().and_then(|pg| pg.pid());
    for (name, pid) in postgres
        .map(|pid| ("postgres".to_owned(), pid))
        .into_iter()
        .chain(extra.iter().cloned())
    {
        list.push(Watched {
            name,
            pid,
            tree: true,
        });
    }
    list.push(Watched {
        name: "loadgen".into(),
        pid: std::process::id(),
        tree: false,
    });
    list
}

fn read(process: &Watched) -> Option<f64> {
    if process.tree {
        harness::procfs::tree_cpu_seconds(process.pid)
    } else {
        harness::procfs::cpu_seconds(process.pid)
    }
}

impl CpuWatch {
    pub fn start(system: &System, extra: &[(String, u32)]) -> CpuWatch {
        let start = watched(system, extra)
            .into_iter()
            .filter_map(|p| Some((p.name.clone(), p.pid, read(&p)?)))
            .collect();
        CpuWatch { start }
    }

    /// CPU seconds since [`CpuWatch::start`], in the order processes were
    /// listed; one that restarted counts from its restart.
    pub fn finish(self, system: &System, extra: &[(String, u32)]) -> Vec<ProcessCpu> {
        watched(system, extra)
            .into_iter()
            .filter_map(|p| {
                let now = read(&p)?;
                let before = self
                    .start
                    .iter()
                    .find(|(name, pid, _)| *name == p.name && *pid == p.pid)
                    .map_or(0.0, |(_, _, cpu)| *cpu);
                Some(ProcessCpu {
                    process: p.name,
                    cpu_s: (now - before).max(0.0),
                })
            })
            .collect()
    }
}
