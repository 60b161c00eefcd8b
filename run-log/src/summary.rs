//! The run's figures, as `loadgen run` writes them and the reports read
//! them back: `summary.json` ([`RunSummary`]), `timeline.json`
//! ([`TimelinePoint`] per second and endpoint) and `lag.json`
//! ([`LagSecond`] per second: how long events took from commit in the
//! wallet database to being visible in history).
//!
//! Fields added after the first runs were written carry `#[serde(default)]`
//! so older run directories still render.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::FaultWindow;

/// `summary.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub scenario: String,
    pub seed: u64,
    pub command: String,
    pub users: u32,
    #[serde(default)]
    pub wallets: u32,
    /// Operations per second the scenario paced; 0 for a closed loop.
    #[serde(default)]
    pub rate: u32,
    /// When the load started: second 0 of every series.
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    /// How long the load ran.
    pub duration_s: f64,
    pub endpoints: Vec<EndpointSummary>,
    pub totals: Totals,
    pub errors: Vec<ErrorCount>,
    pub convergence: Convergence,
    pub faults: Vec<FaultWindow>,
    pub verdict: Verdict,
    pub thresholds: ThresholdsSummary,
    pub versions: Versions,
}

/// One endpoint's figures over the whole load; latency in milliseconds
/// from each operation's intended start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointSummary {
    pub endpoint: String,
    /// Operations issued (ok + failed + indeterminate).
    pub count: u64,
    pub ok: u64,
    pub failed: u64,
    pub indeterminate: u64,
    /// Arrivals of an open-model load not issued: every user was busy.
    #[serde(default)]
    pub dropped: u64,
    pub rps: f64,
    pub min_ms: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p75_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    pub requests: u64,
    pub rps: f64,
}

/// Responses that were not ok, by endpoint and error code (the service's
/// code, or a client-side cause such as `connect_refused`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorCount {
    pub endpoint: String,
    pub code: String,
    pub count: u64,
}

/// How the liveness phase ended: whether history caught up with the
/// ledger once every fault was healed, how long it took, and the bound it
/// had. The checker judges `converged-in-time` from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Convergence {
    pub converged: bool,
    pub took_ms: u64,
    pub bound_ms: u64,
    /// When the wait began, in milliseconds since the load started.
    #[serde(default)]
    pub started_offset_ms: Option<u64>,
}

impl Convergence {
    /// When history had caught up, in seconds since the load started.
    pub fn converged_at_s(&self) -> Option<f64> {
        self.converged
            .then_some(self.started_offset_ms?)
            .map(|start| (start + self.took_ms) as f64 / 1000.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub passed: bool,
    /// Names of the violated invariants.
    pub violated: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThresholdsSummary {
    pub checked: Vec<String>,
    pub missed: Vec<String>,
}

/// What ran, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versions {
    pub loadgen: String,
    /// `git describe --always --dirty` of the source tree, or "unknown".
    pub commit: String,
    pub os: String,
    pub arch: String,
    pub cpus: usize,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub memory_mib: Option<u64>,
    #[serde(default)]
    pub kernel: Option<String>,
}

/// One second of one endpoint: outcomes and latency (ms).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelinePoint {
    /// Seconds since the load started.
    pub second: u64,
    pub endpoint: String,
    pub ok: u64,
    pub failed: u64,
    pub indeterminate: u64,
    #[serde(default)]
    pub dropped: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// One second of history lag: events that became visible in history during
/// the second, how long they took from their commit in the wallet database
/// (milliseconds, nearest-rank percentiles), and the backlog at the end of
/// the second (committed, not yet visible).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LagSecond {
    /// Seconds since the load started.
    pub second: i64,
    /// Events committed during this second.
    pub committed: u64,
    /// Events that became visible during this second.
    pub applied: u64,
    pub backlog: u64,
    /// Lag of the events applied this second; `None` when none were.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

/// Folds per-event (commit, visible) times, in seconds since the load
/// started, into one [`LagSecond`] per second from the first commit to the
/// last visibility. Events committed before the load (the set-up phase) are
/// counted from their own second, which may be negative.
pub fn lag_series(events: &[(f64, f64)]) -> Vec<LagSecond> {
    if events.is_empty() {
        return Vec::new();
    }
    let second_of = |t: f64| t.floor() as i64;
    let first = events.iter().map(|e| second_of(e.0)).min().unwrap_or(0);
    let last = events
        .iter()
        .map(|e| second_of(e.0.max(e.1)))
        .max()
        .unwrap_or(first);
    let span = (last - first + 1) as usize;
    let mut committed = vec![0u64; span];
    let mut lags: Vec<Vec<f64>> = vec![Vec::new(); span];
    for &(commit, visible) in events {
        committed[(second_of(commit) - first) as usize] += 1;
        // A clock step can make visibility precede commit; that lag is 0.
        let visible = visible.max(commit);
        lags[(second_of(visible) - first) as usize].push((visible - commit) * 1000.0);
    }
    let mut backlog = 0u64;
    committed
        .into_iter()
        .zip(lags)
        .enumerate()
        .map(|(index, (committed, mut lags))| {
            backlog = backlog + committed - lags.len() as u64;
            lags.sort_by(f64::total_cmp);
            LagSecond {
                second: first + index as i64,
                committed,
                applied: lags.len() as u64,
                backlog,
                p50_ms: nearest_rank(&lags, 0.50),
                p99_ms: nearest_rank(&lags, 0.99),
                max_ms: lags.last().copied(),
            }
        })
        .collect()
}

/// The nearest-rank percentile of sorted values.
fn nearest_rank(sorted: &[f64], quantile: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (quantile * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_placed_at_visibility_and_the_backlog_drains() {
        // Second 0: three commits, one visible at once (10 ms), two held
        // back by an outage until second 3 (3.0 s and 2.5 s late).
        let events = [(0.1, 0.11), (0.2, 3.2), (0.7, 3.2), (2.0, 2.5)];
        let series = lag_series(&events);
        let seconds: Vec<i64> = series.iter().map(|s| s.second).collect();
        assert_eq!(seconds, [0, 1, 2, 3]);
        let backlog: Vec<u64> = series.iter().map(|s| s.backlog).collect();
        assert_eq!(backlog, [2, 2, 2, 0]);
        assert_eq!(series[0].committed, 3);
        assert_eq!(series[0].applied, 1);
        assert!((series[0].max_ms.unwrap() - 10.0).abs() < 1e-6);
        assert_eq!(series[1].p99_ms, None);
        assert_eq!(series[2].applied, 1);
        assert!((series[2].p50_ms.unwrap() - 500.0).abs() < 1e-6);
        assert_eq!(series[3].applied, 2);
        assert!((series[3].p50_ms.unwrap() - 2500.0).abs() < 1e-6);
        assert!((series[3].max_ms.unwrap() - 3000.0).abs() < 1e-6);
    }

    #[test]
    fn set_up_events_before_the_load_have_negative_seconds() {
        let series = lag_series(&[(-1.5, -1.4), (0.5, 0.6)]);
        assert_eq!(series.first().unwrap().second, -2);
        assert_eq!(series.len(), 3);
        assert!(lag_series(&[]).is_empty());
    }

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(nearest_rank(&values, 0.50), Some(50.0));
        assert_eq!(nearest_rank(&values, 0.99), Some(99.0));
        assert_eq!(nearest_rank(&values[..1], 0.99), Some(1.0));
    }

    #[test]
    fn convergence_point_needs_a_start_and_success() {
        let mut c = Convergence {
            converged: true,
            took_ms: 1_500,
            bound_ms: 60_000,
            started_offset_ms: Some(30_000),
        };
        assert_eq!(c.converged_at_s(), Some(31.5));
        c.converged = false;
        assert_eq!(c.converged_at_s(), None);
    }
}
