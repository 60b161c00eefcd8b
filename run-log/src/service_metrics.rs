//! `metrics.jsonl`: what the services said about themselves during a run,
//! scraped from each instance's `/metrics` once a second from the load's
//! start until history caught up. The harness measures backlog and lag
//! from the databases' own times (`lag.json`); these are the services'
//! figures for the same things, so a report can put them side by side.

use serde::{Deserialize, Serialize};

/// One scrape of one service instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsSample {
    /// Seconds since the load started.
    pub second: f64,
    /// `wallet`, `wallet-2`, `history`, ...
    pub instance: String,
    /// Whether the instance answered with metrics (no: it was down, or
    /// too slow to answer within the scrape's timeout).
    pub up: bool,
    /// A wallet's `outbox_backlog`: rows committed, not yet published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbox_backlog: Option<f64>,
    /// A wallet's `outbox_oldest_unpublished_age_seconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbox_oldest_age_s: Option<f64>,
    /// A history member's `consumer_lag`, summed over its partitions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumer_lag: Option<f64>,
}

/// The services' figures for one second of a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServiceSecond {
    pub second: i64,
    /// The outbox's backlog as a wallet instance saw it (every instance
    /// reads the same table, so the largest reading of the second).
    pub outbox_backlog: Option<f64>,
    /// Every answering history member's lag, summed (each reports the
    /// partitions it holds).
    pub consumer_lag: Option<f64>,
}

/// Folds samples into one [`ServiceSecond`] per second that has any.
pub fn per_second(samples: &[MetricsSample]) -> Vec<ServiceSecond> {
    let mut seconds: std::collections::BTreeMap<i64, ServiceSecond> = Default::default();
    for sample in samples.iter().filter(|s| s.up) {
        let second = sample.second.floor() as i64;
        let entry = seconds.entry(second).or_insert(ServiceSecond {
            second,
            outbox_backlog: None,
            consumer_lag: None,
        });
        if let Some(backlog) = sample.outbox_backlog {
            entry.outbox_backlog = Some(entry.outbox_backlog.map_or(backlog, |b| b.max(backlog)));
        }
        if let Some(lag) = sample.consumer_lag {
            entry.consumer_lag = Some(entry.consumer_lag.unwrap_or(0.0) + lag);
        }
    }
    seconds.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(
        second: f64,
        instance: &str,
        backlog: Option<f64>,
        lag: Option<f64>,
    ) -> MetricsSample {
        MetricsSample {
            second,
            instance: instance.into(),
            up: true,
            outbox_backlog: backlog,
            outbox_oldest_age_s: backlog.map(|_| 0.5),
            consumer_lag: lag,
        }
    }

    #[test]
    fn a_second_takes_the_largest_backlog_and_the_sum_of_the_lags() {
        let mut down = sample(1.9, "history-2", None, Some(1000.0));
        down.up = false;
        let samples = [
            sample(1.1, "wallet", Some(40.0), None),
            sample(1.2, "wallet-2", Some(42.0), None),
            sample(1.3, "history", None, Some(7.0)),
            sample(1.4, "history-2", None, Some(5.0)),
            down,
            sample(3.0, "history", None, Some(0.0)),
        ];
        assert_eq!(
            per_second(&samples),
            [
                ServiceSecond {
                    second: 1,
                    outbox_backlog: Some(42.0),
                    consumer_lag: Some(12.0)
                },
                ServiceSecond {
                    second: 3,
                    outbox_backlog: None,
                    consumer_lag: Some(0.0)
                },
            ]
        );
        let line = serde_json::to_string(&samples[0]).unwrap();
        assert_eq!(
            serde_json::from_str::<MetricsSample>(&line).unwrap(),
            samples[0]
        );
        assert!(!line.contains("consumer_lag"), "{line}");
    }
}
