//! A synthetic run directory of any length, with known figures: what the
//! reports' tests assert against and what the render benchmark renders (a
//! 10-minute run without spending 10 minutes). Not used by real runs.
//!
//! Every second, every endpoint completes `ok_per_second` ok responses
//! with latencies `base_ms`, `base_ms + 1`, ... (one per response).
//! While a fault is held (injection to healing) latencies are
//! [`STALLED_MS`] instead. History lag is 5 ms p50 / 9 ms p99, with a
//! backlog of 80 events while a fault is held and a 4 s spike in the
//! second it heals.

use std::{
    path::Path,
    time::{Duration, SystemTime},
};

use chrono::{DateTime, Utc};
use hdrhistogram::serialization::{
    V2DeflateSerializer,
    interval_log::{IntervalLogWriterBuilder, Tag},
};
use run_log::{
    ChaosEvent, FaultKind, FaultPhase,
    summary::{
        Convergence, EndpointSummary, ErrorCount, LagSecond, RunSummary, ThresholdsSummary,
        TimelinePoint, Totals, Verdict, Versions,
    },
};
use serde_json::json;

/// Latency of every response while a fault is held.
pub const STALLED_MS: u64 = 2_000;
/// Seconds since the Unix epoch of the load's start.
const EPOCH_S: i64 = 1_700_000_000;

/// One fault: held from `at_s` to `at_s + hold_s`, healthy 0.4 s later.
#[derive(Debug, Clone, Copy)]
pub struct Fault {
    pub kind: FaultKind,
    pub at_s: u64,
    pub hold_s: u64,
}

#[derive(Debug, Clone)]
pub struct SyntheticRun {
    pub seconds: u64,
    /// Endpoint name and its base latency (ms).
    pub endpoints: Vec<(String, u64)>,
    pub ok_per_second: u64,
    pub faults: Vec<Fault>,
    pub summary: RunSummary,
    /// `checker.json`, if the run should have one.
    pub checker: Option<serde_json::Value>,
}

/// When the load started.
pub fn started_at() -> DateTime<Utc> {
    DateTime::from_timestamp(EPOCH_S, 0).expect("a valid timestamp")
}

/// A machine as a real run would record it.
fn versions() -> Versions {
    Versions {
        loadgen: "0.1.0".into(),
        commit: "abc1234".into(),
        os: "linux".into(),
        arch: "x86_64".into(),
        cpus: 2,
        hostname: Some("ci-box".into()),
        memory_mib: Some(24_000),
        kernel: Some("6.1.0".into()),
    }
}

impl SyntheticRun {
    /// A passing run of `users` users with the given endpoints and faults;
    /// the summary's endpoint figures are placeholders to adjust.
    pub fn new(seconds: u64, endpoints: &[(&str, u64)], faults: Vec<Fault>, users: u32) -> Self {
        let ok_per_second = 10;
        let endpoint_summaries: Vec<EndpointSummary> = endpoints
            .iter()
            .map(|(name, base_ms)| {
                endpoint_summary(
                    name,
                    *base_ms as f64,
                    *base_ms as f64 * 2.0,
                    ok_per_second as f64,
                )
            })
            .collect();
        let summary = RunSummary {
            scenario: "transfers".into(),
            seed: 42,
            command: format!("loadgen run transfers --users {users} --seed 42"),
            users,
            wallets: 100,
            rate: 0,
            started_at: Some(started_at()),
            duration_s: seconds as f64,
            totals: Totals {
                requests: endpoint_summaries.iter().map(|e| e.count).sum(),
                rps: endpoint_summaries.iter().map(|e| e.rps).sum(),
            },
            endpoints: endpoint_summaries,
            errors: vec![ErrorCount {
                endpoint: endpoints
                    .first()
                    .map(|e| e.0)
                    .unwrap_or_default()
                    .to_owned(),
                code: "connect_refused".into(),
                count: 2,
            }],
            convergence: Convergence {
                converged: true,
                took_ms: 1_500,
                bound_ms: 60_000,
                started_offset_ms: Some(seconds * 1000 + 1_000),
            },
            faults: Vec::new(),
            verdict: Verdict {
                passed: true,
                violated: Vec::new(),
            },
            thresholds: ThresholdsSummary {
                checked: Vec::new(),
                missed: Vec::new(),
            },
            versions: versions(),
            cpu: Vec::new(),
            history_lag: None,
        };
        Self {
            seconds,
            endpoints: endpoints
                .iter()
                .map(|(n, ms)| ((*n).to_owned(), *ms))
                .collect(),
            ok_per_second,
            faults,
            summary,
            checker: None,
        }
    }

    /// Replaces the summary's endpoint figures (and their totals).
    pub fn with_endpoint_figures(mut self, endpoints: Vec<EndpointSummary>) -> Self {
        self.summary.totals = Totals {
            requests: endpoints.iter().map(|e| e.count).sum(),
            rps: endpoints.iter().map(|e| e.rps).sum(),
        };
        self.summary.endpoints = endpoints;
        self
    }

    fn held(&self, second: u64) -> bool {
        self.faults
            .iter()
            .any(|f| (f.at_s..f.at_s + f.hold_s).contains(&second))
    }

    /// Writes the run directory's files into `dir` (created if missing).
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let write_json = |name: &str, value: serde_json::Value| -> std::io::Result<()> {
            std::fs::write(dir.join(name), serde_json::to_string_pretty(&value)?)
        };
        write_json("summary.json", json!(self.summary))?;
        if let Some(checker) = &self.checker {
            write_json("checker.json", checker.clone())?;
        }
        let mut chaos = Vec::new();
        run_log::write_jsonl(&mut chaos, &self.chaos_events())?;
        std::fs::write(dir.join("chaos.jsonl"), chaos)?;
        let (log, timeline) = self.latency_log()?;
        std::fs::write(dir.join("latency.hlog"), log)?;
        write_json("timeline.json", json!(timeline))?;
        write_json("lag.json", json!(self.lag()))
    }

    fn chaos_events(&self) -> Vec<ChaosEvent> {
        let event = |id: u32, fault: &Fault, phase: FaultPhase, offset_ms: u64| ChaosEvent {
            fault_id: id,
            kind: fault.kind,
            phase,
            at: started_at() + chrono::Duration::milliseconds(offset_ms as i64),
            offset_ms,
            target: target_of(fault.kind).to_owned(),
            pid: Some(100 + id),
            detail: String::new(),
        };
        self.faults
            .iter()
            .zip(1..)
            .flat_map(|(fault, id)| {
                let (at, healed) = (fault.at_s * 1000, (fault.at_s + fault.hold_s) * 1000);
                [
                    event(id, fault, FaultPhase::Injected, at),
                    event(id, fault, FaultPhase::Healed, healed),
                    event(id, fault, FaultPhase::Recovered, healed + 400),
                ]
            })
            .collect()
    }

    fn latency_log(&self) -> std::io::Result<(Vec<u8>, Vec<TimelinePoint>)> {
        let mut log = Vec::new();
        let mut timeline = Vec::new();
        let mut serializer = V2DeflateSerializer::new();
        let origin = SystemTime::UNIX_EPOCH + Duration::from_secs(EPOCH_S as u64);
        let mut writer = IntervalLogWriterBuilder::new()
            .with_start_time(origin)
            .with_base_time(origin)
            .begin_log_with(&mut log, &mut serializer)?;
        for second in 0..self.seconds {
            for (name, base_ms) in &self.endpoints {
                let mut histogram = run_log::latency::interval_histogram();
                let base_ms = if self.held(second) {
                    STALLED_MS
                } else {
                    *base_ms
                };
                for i in 0..self.ok_per_second {
                    histogram
                        .record((base_ms + i) * 1000)
                        .expect("within bounds");
                }
                writer
                    .write_histogram(
                        &histogram,
                        Duration::from_secs(second),
                        Duration::from_secs(1),
                        Tag::new(&run_log::latency::tag(name)),
                    )
                    .map_err(|err| std::io::Error::other(format!("{err:?}")))?;
                timeline.push(TimelinePoint {
                    second,
                    endpoint: name.clone(),
                    ok: self.ok_per_second,
                    failed: 0,
                    indeterminate: 0,
                    dropped: 0,
                    p50_ms: 0.0,
                    p90_ms: 0.0,
                    p99_ms: 0.0,
                    max_ms: 0.0,
                });
            }
        }
        drop(writer);
        Ok((log, timeline))
    }

    fn lag(&self) -> Vec<LagSecond> {
        let healed: Vec<u64> = self.faults.iter().map(|f| f.at_s + f.hold_s).collect();
        (0..self.seconds as i64 + 3)
            .map(|second| {
                let spike = healed.contains(&(second as u64));
                LagSecond {
                    second,
                    committed: 20,
                    applied: 20,
                    backlog: if self.held(second as u64) { 80 } else { 0 },
                    p50_ms: Some(5.0),
                    p99_ms: Some(if spike { 4_000.0 } else { 9.0 }),
                    max_ms: Some(if spike { 4_100.0 } else { 12.0 }),
                }
            })
            .collect()
    }
}

fn target_of(kind: FaultKind) -> &'static str {
    match kind {
        FaultKind::BrokerKill => "broker",
        FaultKind::HistoryKill | FaultKind::HistoryPause | FaultKind::HistoryJoin => "history",
        FaultKind::WalletKill => "wallet",
        FaultKind::PostgresRestart | FaultKind::PostgresKill => "postgres",
        FaultKind::NetLatency | FaultKind::NetDrop | FaultKind::NetPartition => {
            "services->postgres"
        }
        FaultKind::LostResponse => "client->wallet",
    }
}

/// An endpoint's summary figures with the given p50, p99 and throughput.
pub fn endpoint_summary(name: &str, p50_ms: f64, p99_ms: f64, rps: f64) -> EndpointSummary {
    let count = (rps * 30.0) as u64;
    EndpointSummary {
        endpoint: name.to_owned(),
        count,
        ok: count.saturating_sub(3),
        failed: 2,
        indeterminate: 1,
        dropped: 0,
        rps,
        min_ms: 1.0,
        mean_ms: p50_ms * 1.1,
        p50_ms,
        p75_ms: p50_ms * 1.3,
        p90_ms: p50_ms * 1.8,
        p99_ms,
        p999_ms: p99_ms * 2.0,
        max_ms: p99_ms * 3.0,
    }
}
