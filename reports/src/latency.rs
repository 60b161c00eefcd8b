//! Latency figures from `latency.hlog`, the HdrHistogram interval log that
//! loadgen writes: one histogram per endpoint (the log's tag) and second,
//! values in microseconds from each operation's intended start.
//!
//! Everything here is a pure function of histograms: the per-second
//! percentile series, the whole run's distribution per endpoint, and the
//! per-second histograms of all endpoints merged (for recovery).

use std::collections::BTreeMap;

use base64::Engine;
use hdrhistogram::{
    Histogram,
    serialization::{
        Deserializer,
        interval_log::{IntervalLogIterator, LogEntry},
    },
};
use run_log::latency::{Percentiles, ms};

/// Significant figures of the merged histograms; the interval histograms
/// were recorded with 2, so more would only cost memory.
const MERGED_SIGFIGS: u8 = 2;

/// Percentile steps per halving of the remaining distance to 100 %, as in
/// HdrHistogram's own percentile output.
const TICKS_PER_HALF_DISTANCE: u32 = 5;

/// The distribution's x axis ends at this percentile (99.999 %): beyond it
/// a run of minutes holds single requests.
const DISTRIBUTION_LAST_QUANTILE: f64 = 0.99999;

#[derive(Debug, thiserror::Error)]
pub enum LatencyLogError {
    #[error("line {line}: {message}")]
    Entry { line: usize, message: String },
    #[error("a histogram at {second} s of tag {tag:?}: {message}")]
    Histogram {
        tag: String,
        second: u64,
        message: String,
    },
}

/// One endpoint's interval histograms, by second since the load started.
#[derive(Debug, Clone)]
pub struct EndpointLatency {
    /// The interval log's tag: the endpoint with spaces as underscores.
    pub tag: String,
    pub intervals: BTreeMap<u64, Histogram<u64>>,
}

/// One second's latency figures, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SecondLatency {
    pub second: u64,
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// One point of a percentile distribution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PercentilePoint {
    /// 0.0 ..= [`DISTRIBUTION_LAST_QUANTILE`].
    pub quantile: f64,
    pub latency_ms: f64,
}

impl PercentilePoint {
    /// Where the distribution's x axis ends.
    pub const LAST: PercentilePoint = PercentilePoint {
        quantile: DISTRIBUTION_LAST_QUANTILE,
        latency_ms: 0.0,
    };

    /// HdrHistogram's x coordinate: 1 / (1 - quantile), plotted on a log
    /// axis, so 90 %, 99 %, 99.9 % ... are evenly spaced.
    pub fn inverted_tail(&self) -> f64 {
        1.0 / (1.0 - self.quantile)
    }
}

/// Reads an interval log into its tags' histograms. Untagged intervals are
/// filed under the empty tag.
pub fn read_interval_log(
    text: &[u8],
) -> Result<BTreeMap<String, EndpointLatency>, LatencyLogError> {
    let mut endpoints: BTreeMap<String, EndpointLatency> = BTreeMap::new();
    let mut deserializer = Deserializer::new();
    for (index, entry) in IntervalLogIterator::new(text).enumerate() {
        let entry = entry.map_err(|err| LatencyLogError::Entry {
            line: index + 1,
            message: format!("{err:?}"),
        })?;
        let LogEntry::Interval(interval) = entry else {
            continue;
        };
        let tag = interval
            .tag()
            .map(|t| t.as_str().to_owned())
            .unwrap_or_default();
        let second = interval.start_timestamp().as_secs();
        let histogram_error = |message: String| LatencyLogError::Histogram {
            tag: tag.clone(),
            second,
            message,
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(interval.encoded_histogram())
            .map_err(|err| histogram_error(err.to_string()))?;
        let histogram: Histogram<u64> = deserializer
            .deserialize(&mut bytes.as_slice())
            .map_err(|err| histogram_error(format!("{err:?}")))?;
        let endpoint = endpoints
            .entry(tag.clone())
            .or_insert_with(|| EndpointLatency {
                tag: tag.clone(),
                intervals: BTreeMap::new(),
            });
        match endpoint.intervals.get_mut(&second) {
            Some(existing) => existing
                .add(&histogram)
                .map_err(|err| histogram_error(format!("{err:?}")))?,
            None => {
                endpoint.intervals.insert(second, histogram);
            }
        }
    }
    Ok(endpoints)
}

/// A second's figures from its histogram (µs).
pub fn second_latency(second: u64, histogram: &Histogram<u64>) -> SecondLatency {
    let p = Percentiles::of(histogram);
    SecondLatency {
        second,
        count: histogram.len(),
        p50_ms: p.p50_ms,
        p90_ms: p.p90_ms,
        p99_ms: p.p99_ms,
        max_ms: p.max_ms,
    }
}

impl EndpointLatency {
    /// p50/p90/p99/max for every second that had requests.
    pub fn per_second(&self) -> Vec<SecondLatency> {
        self.intervals
            .iter()
            .filter(|(_, h)| !h.is_empty())
            .map(|(second, h)| second_latency(*second, h))
            .collect()
    }

    /// All of the run's intervals in one histogram.
    pub fn total(&self) -> Histogram<u64> {
        merge(self.intervals.values())
    }
}

/// Adds histograms into one (auto-resizing, so any ranges fit).
pub fn merge<'a>(histograms: impl IntoIterator<Item = &'a Histogram<u64>>) -> Histogram<u64> {
    let mut total = Histogram::<u64>::new(MERGED_SIGFIGS).expect("2 significant figures are valid");
    for histogram in histograms {
        // An auto-resizing histogram accepts every value; add cannot fail.
        let _ = total.add(histogram);
    }
    total
}

/// Every endpoint's histograms merged per second: what the whole system
/// did in each second.
pub fn merged_per_second(
    endpoints: &BTreeMap<String, EndpointLatency>,
) -> BTreeMap<u64, Histogram<u64>> {
    let mut seconds: BTreeMap<u64, Vec<&Histogram<u64>>> = BTreeMap::new();
    for endpoint in endpoints.values() {
        for (second, histogram) in &endpoint.intervals {
            seconds.entry(*second).or_default().push(histogram);
        }
    }
    seconds
        .into_iter()
        .map(|(second, histograms)| (second, merge(histograms)))
        .collect()
}

/// The percentile distribution, HdrHistogram style: latency at quantiles
/// that crowd towards the tail, up to 99.999 %.
pub fn distribution(histogram: &Histogram<u64>) -> Vec<PercentilePoint> {
    if histogram.is_empty() {
        return Vec::new();
    }
    let mut points: Vec<PercentilePoint> = Vec::new();
    for step in histogram.iter_quantiles(TICKS_PER_HALF_DISTANCE) {
        let quantile = step.quantile_iterated_to();
        if quantile > DISTRIBUTION_LAST_QUANTILE {
            break;
        }
        points.push(PercentilePoint {
            quantile,
            latency_ms: ms(histogram.highest_equivalent(step.value_iterated_to())),
        });
    }
    // The tail end: the last quantile shown, at its true value.
    points.push(PercentilePoint {
        quantile: DISTRIBUTION_LAST_QUANTILE,
        latency_ms: ms(histogram.value_at_quantile(DISTRIBUTION_LAST_QUANTILE)),
    });
    points
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use hdrhistogram::serialization::{
        V2DeflateSerializer,
        interval_log::{IntervalLogWriterBuilder, Tag},
    };

    use super::*;

    /// 1..=n milliseconds, once each, in µs.
    fn uniform_ms(n: u64) -> Histogram<u64> {
        let mut h = run_log::latency::interval_histogram();
        for ms in 1..=n {
            h.record(ms * 1000).unwrap();
        }
        h
    }

    fn write_log(intervals: &[(&str, u64, &Histogram<u64>)]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut serializer = V2DeflateSerializer::new();
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut log = IntervalLogWriterBuilder::new()
            .with_start_time(start)
            .with_base_time(start)
            .begin_log_with(&mut out, &mut serializer)
            .unwrap();
        for (tag, second, histogram) in intervals {
            log.write_histogram(
                histogram,
                Duration::from_secs(*second),
                Duration::from_secs(1),
                Tag::new(tag),
            )
            .unwrap();
        }
        drop(log);
        out
    }

    fn close(actual: f64, expected: f64) -> bool {
        // Two significant figures: within 1 % (plus the bucket width).
        (actual - expected).abs() <= expected * 0.01 + 0.01
    }

    #[test]
    fn interval_log_round_trips_per_tag_and_second() {
        let fast = uniform_ms(100);
        let slow = uniform_ms(1000);
        let log = write_log(&[
            ("GET_/a", 0, &fast),
            ("GET_/a", 2, &slow),
            ("POST_/b", 1, &fast),
        ]);
        let endpoints = read_interval_log(&log).unwrap();
        assert_eq!(endpoints.keys().collect::<Vec<_>>(), ["GET_/a", "POST_/b"]);
        let a = endpoints["GET_/a"].per_second();
        assert_eq!(a.iter().map(|s| s.second).collect::<Vec<_>>(), [0, 2]);
        assert_eq!(a[0].count, 100);
        assert!(close(a[0].p50_ms, 50.0), "{}", a[0].p50_ms);
        assert!(close(a[0].p90_ms, 90.0), "{}", a[0].p90_ms);
        assert!(close(a[0].p99_ms, 99.0), "{}", a[0].p99_ms);
        assert!(close(a[0].max_ms, 100.0), "{}", a[0].max_ms);
        assert!(close(a[1].p99_ms, 990.0), "{}", a[1].p99_ms);
        assert!(close(a[1].max_ms, 1000.0), "{}", a[1].max_ms);
    }

    #[test]
    fn totals_and_merged_seconds_add_the_intervals() {
        let log = write_log(&[
            ("GET_/a", 0, &uniform_ms(100)),
            ("GET_/a", 1, &uniform_ms(100)),
            ("POST_/b", 1, &uniform_ms(300)),
        ]);
        let endpoints = read_interval_log(&log).unwrap();
        let total = endpoints["GET_/a"].total();
        assert_eq!(total.len(), 200);
        assert!(close(ms(total.value_at_quantile(0.5)), 50.0));
        let merged = merged_per_second(&endpoints);
        assert_eq!(merged[&0].len(), 100);
        assert_eq!(merged[&1].len(), 400);
        // Second 1: 100 values 1..=100 and 300 values 1..=300; 50 % of 400
        // is the 200th smallest: 100 from each below 100 ms, so ~100 ms.
        assert!(close(ms(merged[&1].value_at_quantile(0.5)), 100.0));
    }

    #[test]
    fn distribution_crowds_towards_the_tail_and_stops_at_99_999() {
        let points = distribution(&uniform_ms(10_000));
        let first = points.first().unwrap();
        let last = points.last().unwrap();
        assert_eq!(first.quantile, 0.0);
        assert!(close(first.latency_ms, 1.0), "{first:?}");
        assert_eq!(last.quantile, DISTRIBUTION_LAST_QUANTILE);
        assert!(close(last.latency_ms, 10_000.0), "{last:?}");
        assert!((last.inverted_tail() - 100_000.0).abs() < 1.0);
        // Monotonic in both coordinates.
        for pair in points.windows(2) {
            assert!(pair[0].quantile <= pair[1].quantile);
            assert!(pair[0].latency_ms <= pair[1].latency_ms);
        }
        // The 99 % point sits at 99 % of the values.
        let p99 = points.iter().find(|p| p.quantile >= 0.99).unwrap();
        assert!(
            close(p99.latency_ms, 9_900.0 * p99.quantile / 0.99),
            "{p99:?}"
        );
        // More points between 99 % and 99.99 % than between 0 % and 50 %.
        let tail = points
            .iter()
            .filter(|p| (0.99..0.9999).contains(&p.quantile))
            .count();
        let head = points.iter().filter(|p| p.quantile < 0.5).count();
        assert!(tail >= head, "tail {tail}, head {head}");
        assert!(distribution(&Histogram::new(2).unwrap()).is_empty());
    }

    #[test]
    fn a_corrupt_histogram_is_an_error_naming_its_tag_and_second() {
        let error = read_interval_log(b"Tag=GET_/a,3.000,1.000,1.0,not-base64!!\n").unwrap_err();
        assert!(
            matches!(&error, LatencyLogError::Histogram { tag, second: 3, .. } if tag == "GET_/a"),
            "{error}"
        );
    }
}
