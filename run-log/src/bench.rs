//! `loadgen bench`'s `summary.json`: the SQL-only model beside the full
//! system on the same PostgreSQL, with the acceptance checks it was run
//! for. Written by loadgen, rendered by `reports` into `bench.html`.

use serde::{Deserialize, Serialize};

use crate::summary::{CatchUp, LagStats, ProcessCpu, Versions};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchSummary {
    pub seed: u64,
    pub command: String,
    /// Concurrent clients: pgbench connections, goose users.
    pub clients: u32,
    pub wallets: u32,
    /// Each phase's load.
    pub duration_s: f64,
    /// pgbench running the model transfer.
    pub model: Phases,
    /// The services under a transfer load.
    pub service: Phases,
    /// Service transfers/s over model transactions/s, at full load.
    pub throughput_ratio: f64,
    /// Commit-to-visible lag at half load.
    pub history_lag: Option<LagStats>,
    /// That lag in its two stages.
    #[serde(default)]
    pub lag_stages: Option<LagStages>,
    /// How long the broker was down in the outage phase.
    pub outage_s: f64,
    /// History's catch-up once the broker was back.
    pub catch_up: Option<CatchUp>,
    /// CPU per process at full load, and per transfer.
    pub cpu: Vec<CpuPerTransfer>,
    /// The load generator's CPU per request beside bare goose's.
    pub loadgen: LoadgenCost,
    /// Each target of the bench and whether this run met it.
    pub checks: Vec<Check>,
    /// Run directories of the service phases, relative to the bench's.
    pub runs: Vec<String>,
    pub versions: Versions,
}

/// The history lag split where the relay hands over to the consumer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LagStages {
    /// Wallet commit to the outbox row marked published: the relay's
    /// read, produce, the broker's acknowledgement, the mark.
    pub relay: LagStats,
    /// Marked published to visible in history: fetch, apply, commit.
    pub consumer: LagStats,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Phases {
    /// Closed loop: every client as fast as it goes.
    pub full: LoadFigures,
    /// Open model at half the service's full-load throughput.
    pub half: LoadFigures,
}

/// A load's transfers: how many per second, and their latency from each
/// one's intended (scheduled) start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadFigures {
    /// Arrivals per second asked for; 0 for a closed loop.
    pub rate: u32,
    pub transfers: u64,
    pub per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CpuPerTransfer {
    #[serde(flatten)]
    pub process: ProcessCpu,
    pub ms_per_transfer: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadgenCost {
    /// The load generator's CPU per request at full load.
    pub us_per_request: f64,
    /// Bare goose against a trivial endpoint answering at once, same
    /// users, same process.
    pub goose_us_per_request: f64,
    pub goose_requests: u64,
    /// Bare goose sending a transfer-shaped request to a trivial endpoint
    /// that answers a receipt-sized body after this delay (the full
    /// load's p50): the floor any client at that latency pays.
    pub matched_delay_ms: f64,
    pub matched_us_per_request: f64,
    pub matched_requests: u64,
    /// The load generator's CPU per request over the matched floor's.
    pub ratio: f64,
}

/// One target: what was measured against what was asked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub target: String,
    pub measured: String,
    pub passed: bool,
}

impl LoadFigures {
    /// The figures of `latencies` (microseconds, one per transfer) over a
    /// load of `seconds`.
    pub fn from_latencies_us(mut latencies: Vec<u64>, seconds: f64, rate: u32) -> LoadFigures {
        latencies.sort_unstable();
        let rank = |q: f64| -> f64 {
            if latencies.is_empty() {
                return 0.0;
            }
            let rank = (q * latencies.len() as f64).ceil() as usize;
            latencies[rank.clamp(1, latencies.len()) - 1] as f64 / 1000.0
        };
        LoadFigures {
            rate,
            transfers: latencies.len() as u64,
            per_s: latencies.len() as f64 / seconds.max(1e-3),
            p50_ms: rank(0.50),
            p99_ms: rank(0.99),
            max_ms: latencies.last().map_or(0.0, |&us| us as f64 / 1000.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_of_a_latency_list() {
        let latencies: Vec<u64> = (1..=1000).rev().map(|ms| ms * 1000).collect();
        let figures = LoadFigures::from_latencies_us(latencies, 10.0, 50);
        assert_eq!(figures.transfers, 1000);
        assert!((figures.per_s - 100.0).abs() < 1e-9);
        assert!((figures.p50_ms - 500.0).abs() < 1e-9);
        assert!((figures.p99_ms - 990.0).abs() < 1e-9);
        assert!((figures.max_ms - 1000.0).abs() < 1e-9);
        assert_eq!(figures.rate, 50);
        let empty = LoadFigures::from_latencies_us(Vec::new(), 10.0, 0);
        assert_eq!((empty.transfers, empty.p99_ms), (0, 0.0));
    }
}
