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
    /// CPU each process of the system used while the load ran.
    #[serde(default)]
    pub cpu: Vec<ProcessCpu>,
    /// Commit-to-visible lag of the events the load produced.
    #[serde(default)]
    pub history_lag: Option<LagStats>,
}

/// CPU seconds (user + system) one process used while the load ran: a
/// service instance, the broker, PostgreSQL with its backends, or the load
/// generator itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessCpu {
    /// `wallet`, `wallet-2`, `history`, `broker`, `postgres`, `loadgen`.
    pub process: String,
    pub cpu_s: f64,
}

/// Commit-to-visible lag over a set of events, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LagStats {
    pub events: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// The lag of the events committed at or after `from` (seconds, as the
/// events' times): the load's own events, not the set-up's. `None` when
/// there are none.
pub fn lag_stats(events: &[(f64, f64)], from: f64) -> Option<LagStats> {
    let mut lags: Vec<f64> = events
        .iter()
        .filter(|(commit, _)| *commit >= from)
        .map(|&(commit, visible)| (visible.max(commit) - commit) * 1000.0)
        .collect();
    lags.sort_by(f64::total_cmp);
    Some(LagStats {
        events: lags.len() as u64,
        p50_ms: nearest_rank(&lags, 0.50)?,
        p99_ms: nearest_rank(&lags, 0.99)?,
        max_ms: *lags.last()?,
    })
}

/// How history caught up after an outage ended at `restart`, with events
/// (commit, visible) in seconds on one clock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatchUp {
    /// Events committed before the restart and not yet visible at it.
    pub backlog: u64,
    /// From the restart until the last of them was visible.
    pub caught_up_s: f64,
    /// Events made visible per second from the restart until then (the
    /// backlog and whatever arrived meanwhile).
    pub applied_per_s: f64,
    /// Events committed per second over the load: the production rate.
    pub produced_per_s: f64,
    /// `applied_per_s / produced_per_s`.
    pub multiple: f64,
}

/// The catch-up after `restart`; the production rate is the commits per
/// second over `load` (start, end). `None` when no backlog was left at the
/// restart (nothing to catch up) or the load window is empty.
pub fn catch_up(events: &[(f64, f64)], restart: f64, load: (f64, f64)) -> Option<CatchUp> {
    let backlog: Vec<f64> = events
        .iter()
        .filter(|(commit, visible)| *commit < restart && *visible > restart)
        .map(|&(_, visible)| visible)
        .collect();
    let done = backlog.iter().copied().fold(f64::NAN, f64::max);
    if backlog.is_empty() || load.1 <= load.0 {
        return None;
    }
    let caught_up_s = done - restart;
    let applied = events
        .iter()
        .filter(|(_, visible)| *visible > restart && *visible <= done)
        .count();
    let produced = events
        .iter()
        .filter(|(commit, _)| *commit >= load.0 && *commit < load.1)
        .count();
    let produced_per_s = produced as f64 / (load.1 - load.0);
    let applied_per_s = applied as f64 / caught_up_s.max(1e-3);
    Some(CatchUp {
        backlog: backlog.len() as u64,
        caught_up_s,
        applied_per_s,
        produced_per_s,
        multiple: applied_per_s / produced_per_s.max(1e-9),
    })
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
    fn lag_stats_count_only_the_loads_events() {
        let mut events = vec![(-2.0, 5.0)];
        events.extend((1..=100).map(|ms| (1.0, 1.0 + f64::from(ms) / 1000.0)));
        let stats = lag_stats(&events, 0.0).expect("events");
        assert_eq!(stats.events, 100);
        assert!((stats.p50_ms - 50.0).abs() < 1e-6, "{stats:?}");
        assert!((stats.p99_ms - 99.0).abs() < 1e-6, "{stats:?}");
        assert!((stats.max_ms - 100.0).abs() < 1e-6, "{stats:?}");
        assert_eq!(lag_stats(&events[..1], 0.0), None);
    }

    #[test]
    fn catch_up_measures_the_backlog_drain_against_production() {
        // 10 events/s over 0..20 s; the outage holds back the 50 events
        // committed in 5..10 s until the restart at 10 s; history applies
        // them by 10.5 s, with the 5 committed meanwhile.
        let mut events = Vec::new();
        for i in 0..200 {
            let commit = f64::from(i) / 10.0;
            let visible = if (5.0..10.0).contains(&commit) {
                10.0 + f64::from(i - 49) / 100.0
            } else if (10.0..10.5).contains(&commit) {
                10.5
            } else {
                commit + 0.01
            };
            events.push((commit, visible));
        }
        let caught = catch_up(&events, 10.0, (0.0, 20.0)).expect("a backlog");
        assert_eq!(caught.backlog, 50);
        assert!((caught.caught_up_s - 0.5).abs() < 1e-9, "{caught:?}");
        assert!((caught.produced_per_s - 10.0).abs() < 1e-9);
        assert!((caught.applied_per_s - 110.0).abs() < 1e-6, "{caught:?}");
        assert!((caught.multiple - 11.0).abs() < 1e-6, "{caught:?}");
        // Nothing held back at 2 s: nothing to catch up.
        assert_eq!(catch_up(&events, 2.0, (0.0, 20.0)), None);
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
