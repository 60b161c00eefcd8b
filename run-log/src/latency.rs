//! The conventions of `latency.hlog`, the HdrHistogram interval log of a
//! run: values are microseconds from each operation's intended start,
//! clamped to [`LATENCY_MAX_US`]; one histogram per endpoint and second,
//! tagged with the endpoint's name ([`tag`]); per-second histograms keep
//! [`INTERVAL_SIGFIGS`] significant figures, whole-run ones
//! [`TOTAL_SIGFIGS`]. The load generator writes by these rules and the
//! reports read by them, so both call this module.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Latencies above this (µs) are clamped: 10 minutes is longer than any
/// request can wait (the client times out first).
pub const LATENCY_MAX_US: u64 = 600_000_000;
/// Per-second histograms need less precision than the run totals.
pub const INTERVAL_SIGFIGS: u8 = 2;
pub const TOTAL_SIGFIGS: u8 = 3;

/// An empty histogram for one second of one endpoint.
pub fn interval_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, INTERVAL_SIGFIGS).expect("valid bounds")
}

/// An empty histogram for a whole run of one endpoint.
pub fn total_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, TOTAL_SIGFIGS).expect("valid bounds")
}

/// A latency as the histograms record it: whole microseconds, at least 1,
/// at most [`LATENCY_MAX_US`], so recording never fails.
pub fn recorded_us(latency: Duration) -> u64 {
    u64::try_from(latency.as_micros())
        .unwrap_or(u64::MAX)
        .clamp(1, LATENCY_MAX_US)
}

/// The interval log's tag of an endpoint: tags cannot hold spaces, so
/// `POST /wallets` is tagged `POST_/wallets`.
pub fn tag(endpoint: &str) -> String {
    endpoint.replace(' ', "_")
}

/// Microseconds (the histograms' unit) as milliseconds.
pub fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// The figures of one histogram that the timeline and the report's time
/// charts show, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percentiles {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    pub fn of(histogram: &Histogram<u64>) -> Percentiles {
        Percentiles {
            p50_ms: ms(histogram.value_at_quantile(0.50)),
            p90_ms: ms(histogram.value_at_quantile(0.90)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            max_ms: ms(histogram.max()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conventions_hold() {
        assert_eq!(tag("POST /wallets/{id}/fund"), "POST_/wallets/{id}/fund");
        assert_eq!(recorded_us(Duration::ZERO), 1);
        assert_eq!(recorded_us(Duration::from_secs(3_600)), LATENCY_MAX_US);
        let mut h = interval_histogram();
        for us in 1..=1_000u64 {
            h.record(us * 1_000).unwrap();
        }
        let p = Percentiles::of(&h);
        assert!((p.p50_ms - 500.0).abs() < 5.0, "{p:?}");
        assert!((p.max_ms - 1_000.0).abs() < 10.0, "{p:?}");
    }
}
