//! Latency and outcome recording: HdrHistograms per endpoint for each
//! second of the load and for the whole run, and outcome counts per second.
//! Latency is measured from an operation's intended start (its schedule
//! slot), so a stalled service shows up as latency, not as missing requests
//! (coordinated omission). At the end the per-second histograms are written
//! as an HdrHistogram interval log (`latency.hlog`, one tag per endpoint),
//! the seconds as `timeline.json`, the totals as `summary.json`'s endpoints.
//!
//! The caller says which second of the load an operation belongs to, so a
//! live run (wall clock) and a simulation (simulated clock) record alike.

use std::{
    collections::BTreeMap,
    io::Write,
    sync::Mutex,
    time::{Duration, SystemTime},
};

use crate::{
    Outcome,
    latency::{self, Percentiles, ms},
    summary::{EndpointSummary, ErrorCount, TimelinePoint},
};
use hdrhistogram::{
    Histogram,
    serialization::{
        V2DeflateSerializer,
        interval_log::{IntervalLogWriterBuilder, Tag},
    },
};
use serde::Serialize;

/// Counts of outcomes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Outcomes {
    pub ok: u64,
    pub failed: u64,
    pub indeterminate: u64,
}

impl Outcomes {
    pub fn add(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Ok => self.ok += 1,
            Outcome::Failed => self.failed += 1,
            Outcome::Indeterminate => self.indeterminate += 1,
        }
    }

    pub fn total(&self) -> u64 {
        self.ok + self.failed + self.indeterminate
    }
}

struct Interval {
    latency: Histogram<u64>,
    outcomes: Outcomes,
    /// Arrivals of an open-model load that found every user busy.
    dropped: u64,
}

impl Interval {
    fn new() -> Self {
        Self {
            latency: latency::interval_histogram(),
            outcomes: Outcomes::default(),
            dropped: 0,
        }
    }
}

struct Inner {
    totals: BTreeMap<&'static str, (Histogram<u64>, Outcomes)>,
    dropped: BTreeMap<&'static str, u64>,
    /// (second since load start, endpoint) → that second's data.
    intervals: BTreeMap<(u64, &'static str), Interval>,
    errors: BTreeMap<(&'static str, String), u64>,
}

pub struct Recorder {
    started_wall: SystemTime,
    inner: Mutex<Inner>,
}

impl Recorder {
    /// A recorder for a load that started at `started_wall`.
    pub fn new(started_wall: SystemTime) -> Self {
        Self {
            started_wall,
            inner: Mutex::new(Inner {
                totals: BTreeMap::new(),
                dropped: BTreeMap::new(),
                intervals: BTreeMap::new(),
                errors: BTreeMap::new(),
            }),
        }
    }

    /// Records one operation that finished in `second` of the load;
    /// `latency` runs from its intended start.
    pub fn record(
        &self,
        second: u64,
        endpoint: &'static str,
        outcome: Outcome,
        latency: Duration,
        error_code: Option<&str>,
    ) {
        let us = latency::recorded_us(latency);
        let mut inner = self.inner.lock().expect("recorder lock");
        let (total, outcomes) = inner
            .totals
            .entry(endpoint)
            .or_insert_with(|| (latency::total_histogram(), Outcomes::default()));
        total.record(us).expect("recorded_us is within the bounds");
        outcomes.add(outcome);
        let interval = inner
            .intervals
            .entry((second, endpoint))
            .or_insert_with(Interval::new);
        interval
            .latency
            .record(us)
            .expect("recorded_us is within the bounds");
        interval.outcomes.add(outcome);
        if let Some(code) = error_code {
            *inner.errors.entry((endpoint, code.to_owned())).or_default() += 1;
        }
    }

    /// Records an arrival of an open-model load, due in `second`, that was
    /// not issued because every user was busy.
    pub fn record_dropped(&self, second: u64, endpoint: &'static str) {
        let mut inner = self.inner.lock().expect("recorder lock");
        *inner.dropped.entry(endpoint).or_default() += 1;
        inner
            .intervals
            .entry((second, endpoint))
            .or_insert_with(Interval::new)
            .dropped += 1;
    }

    /// Arrivals dropped so far, over all endpoints.
    pub fn dropped(&self) -> u64 {
        let inner = self.inner.lock().expect("recorder lock");
        inner.dropped.values().sum()
    }

    /// Requests, errors (not ok) and the p99 (ms) over all endpoints so far:
    /// the progress line.
    pub fn progress(&self) -> (u64, u64, f64) {
        let inner = self.inner.lock().expect("recorder lock");
        let mut all: Option<Histogram<u64>> = None;
        let (mut count, mut errors) = (0, 0);
        for (histogram, outcomes) in inner.totals.values() {
            count += outcomes.total();
            errors += outcomes.failed + outcomes.indeterminate;
            match &mut all {
                Some(h) => {
                    let _ = h.add(histogram);
                }
                None => all = Some(histogram.clone()),
            }
        }
        let p99 = all.map(|h| ms(h.value_at_quantile(0.99))).unwrap_or(0.0);
        (count, errors, p99)
    }

    pub fn summaries(&self, load_seconds: f64) -> Vec<EndpointSummary> {
        let inner = self.inner.lock().expect("recorder lock");
        let empty = (latency::total_histogram(), Outcomes::default());
        let endpoints: std::collections::BTreeSet<&'static str> = inner
            .totals
            .keys()
            .chain(inner.dropped.keys())
            .copied()
            .collect();
        endpoints
            .into_iter()
            .map(|endpoint| (endpoint, inner.totals.get(endpoint).unwrap_or(&empty)))
            .map(|(endpoint, (h, o))| EndpointSummary {
                endpoint: endpoint.to_owned(),
                count: o.total(),
                ok: o.ok,
                failed: o.failed,
                indeterminate: o.indeterminate,
                dropped: inner.dropped.get(endpoint).copied().unwrap_or(0),
                rps: if load_seconds > 0.0 {
                    o.total() as f64 / load_seconds
                } else {
                    0.0
                },
                min_ms: ms(h.min()),
                mean_ms: h.mean() / 1000.0,
                p50_ms: ms(h.value_at_quantile(0.50)),
                p75_ms: ms(h.value_at_quantile(0.75)),
                p90_ms: ms(h.value_at_quantile(0.90)),
                p99_ms: ms(h.value_at_quantile(0.99)),
                p999_ms: ms(h.value_at_quantile(0.999)),
                max_ms: ms(h.max()),
            })
            .collect()
    }

    /// Error counts by endpoint and code.
    pub fn errors(&self) -> Vec<ErrorCount> {
        let inner = self.inner.lock().expect("recorder lock");
        inner
            .errors
            .iter()
            .map(|((endpoint, code), count)| ErrorCount {
                endpoint: (*endpoint).to_owned(),
                code: code.clone(),
                count: *count,
            })
            .collect()
    }

    /// Per second and endpoint: outcomes and p50/p90/p99/max (ms).
    pub fn timeline(&self) -> Vec<TimelinePoint> {
        let inner = self.inner.lock().expect("recorder lock");
        inner
            .intervals
            .iter()
            .map(|((second, endpoint), interval)| {
                let p = Percentiles::of(&interval.latency);
                TimelinePoint {
                    second: *second,
                    endpoint: (*endpoint).to_owned(),
                    ok: interval.outcomes.ok,
                    failed: interval.outcomes.failed,
                    indeterminate: interval.outcomes.indeterminate,
                    dropped: interval.dropped,
                    p50_ms: p.p50_ms,
                    p90_ms: p.p90_ms,
                    p99_ms: p.p99_ms,
                    max_ms: p.max_ms,
                }
            })
            .collect()
    }

    /// Writes the per-second histograms as an HdrHistogram interval log.
    pub fn write_interval_log(&self, out: &mut impl Write) -> anyhow::Result<()> {
        let inner = self.inner.lock().expect("recorder lock");
        let mut serializer = V2DeflateSerializer::new();
        let mut log = IntervalLogWriterBuilder::new()
            .add_comment(
                "wallet-system loadgen: latency from intended start, microseconds; tag = endpoint",
            )
            .with_start_time(self.started_wall)
            .with_base_time(self.started_wall)
            .with_max_value_divisor(1000.0)
            .begin_log_with(out, &mut serializer)?;
        // A second of only dropped arrivals has no latency to log.
        let timed = inner
            .intervals
            .iter()
            .filter(|(_, i)| !i.latency.is_empty());
        for ((second, endpoint), interval) in timed {
            let tag_text = latency::tag(endpoint);
            let tag = Tag::new(&tag_text);
            log.write_histogram(
                &interval.latency,
                Duration::from_secs(*second),
                Duration::from_secs(1),
                tag,
            )
            .map_err(|err| anyhow::anyhow!("writing the interval log: {err:?}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_and_interval_log_hold_what_was_recorded() {
        let recorder = Recorder::new(SystemTime::UNIX_EPOCH);
        for ms in 1..=100u64 {
            recorder.record(
                ms / 50,
                "POST /x",
                Outcome::Ok,
                Duration::from_millis(ms),
                None,
            );
        }
        recorder.record(
            1,
            "POST /x",
            Outcome::Failed,
            Duration::from_millis(5),
            Some("insufficient_funds"),
        );
        let summary = &recorder.summaries(10.0)[0];
        assert_eq!((summary.count, summary.ok, summary.failed), (101, 100, 1));
        assert!((summary.p50_ms - 50.0).abs() < 1.0, "{}", summary.p50_ms);
        assert!((summary.max_ms - 100.0).abs() < 0.2, "{}", summary.max_ms);
        assert!((summary.rps - 10.1).abs() < 1e-9);
        assert_eq!(
            recorder.errors(),
            [ErrorCount {
                endpoint: "POST /x".into(),
                code: "insufficient_funds".into(),
                count: 1
            }]
        );
        let mut log = Vec::new();
        recorder.write_interval_log(&mut log).unwrap();
        let text = String::from_utf8(log).unwrap();
        assert!(text.contains("Tag=POST_/x"), "{text}");
    }

    #[test]
    fn dropped_arrivals_are_counted_apart_from_issued_operations() {
        let recorder = Recorder::new(SystemTime::UNIX_EPOCH);
        recorder.record(0, "POST /x", Outcome::Ok, Duration::from_millis(3), None);
        recorder.record_dropped(0, "POST /x");
        recorder.record_dropped(2, "POST /x");
        recorder.record_dropped(2, "GET /y");
        assert_eq!(recorder.dropped(), 3);
        let summaries = recorder.summaries(1.0);
        let by_name = |name: &str| summaries.iter().find(|s| s.endpoint == name).unwrap();
        assert_eq!(
            (by_name("POST /x").count, by_name("POST /x").dropped),
            (1, 2)
        );
        // An endpoint whose every arrival was dropped still has its row.
        assert_eq!((by_name("GET /y").count, by_name("GET /y").dropped), (0, 1));
        let timeline: Vec<(u64, String, u64, u64)> = recorder
            .timeline()
            .into_iter()
            .map(|p| (p.second, p.endpoint, p.ok, p.dropped))
            .collect();
        assert_eq!(
            timeline,
            [
                (0, "POST /x".to_owned(), 1, 1),
                (2, "GET /y".to_owned(), 0, 1),
                (2, "POST /x".to_owned(), 0, 1)
            ]
        );
        // Only the second with a latency goes to the interval log.
        let mut log = Vec::new();
        recorder.write_interval_log(&mut log).unwrap();
        let text = String::from_utf8(log).unwrap();
        let histograms = text.lines().filter(|l| l.starts_with("Tag=")).count();
        assert_eq!(histograms, 1, "{text}");
    }
}
