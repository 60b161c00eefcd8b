//! The services' own figures during a run: every instance's `/metrics`,
//! scraped once a second from the load's start until history has caught
//! up, kept as `metrics.jsonl` ([`run_log::service_metrics`]). An
//! instance that is down (a fault killed it) is recorded as not up.

use std::{path::Path, time::Duration};

use anyhow::Context;
use futures::future::join_all;
use harness::system::{Role, System, instance_name};
use openmetrics_parser::{PrometheusValue, prometheus::parse_prometheus};
use run_log::service_metrics::MetricsSample;
use tokio::{task::JoinHandle, time::Instant};
use tokio_util::sync::CancellationToken;

/// Once a second: the run's charts are per second.
const SCRAPE_EVERY_MS: u64 = 1_000;
/// A scrape slower than this counts the instance as not answering.
const SCRAPE_TIMEOUT_MS: u64 = 800;

/// The scraping task, running.
pub struct Scraper {
    stop: CancellationToken,
    task: JoinHandle<Vec<MetricsSample>>,
}

impl Scraper {
    /// Starts scraping every instance of `system` (directly, past any
    /// fault proxy), timing samples from `started`.
    pub fn start(system: &System, started: std::time::Instant) -> anyhow::Result<Scraper> {
        let mut targets = Vec::new();
        for role in [Role::Wallet, Role::History] {
            for (index, instance) in system.instances(role).iter().enumerate() {
                targets.push((
                    instance_name(role, index),
                    format!("{}/metrics", instance.url),
                ));
            }
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(SCRAPE_TIMEOUT_MS))
            .build()
            .context("the metrics client")?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(scrape_until(http, targets, started, stop.clone()));
        Ok(Scraper { stop, task })
    }

    /// Stops scraping and writes `path`.
    pub async fn finish(self, path: &Path) -> anyhow::Result<()> {
        self.stop.cancel();
        let samples = self.task.await.context("the metrics scraper")?;
        run_log::write_jsonl_file(path, &samples)
            .with_context(|| format!("writing {}", path.display()))
    }
}

async fn scrape_until(
    http: reqwest::Client,
    targets: Vec<(String, String)>,
    started: std::time::Instant,
    stop: CancellationToken,
) -> Vec<MetricsSample> {
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval_at(Instant::now(), Duration::from_millis(SCRAPE_EVERY_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return samples,
            _ = tick.tick() => {}
        }
        let second = started.elapsed().as_secs_f64();
        let scrapes = targets.iter().map(|(instance, url)| {
            let http = http.clone();
            async move {
                let text = async { http.get(url).send().await?.error_for_status()?.text().await };
                sample(second, instance, text.await.ok().as_deref())
            }
        });
        samples.extend(join_all(scrapes).await);
    }
}

/// What `text` (an instance's `/metrics`, `None` when it did not answer)
/// says about backlog and lag.
fn sample(second: f64, instance: &str, text: Option<&str>) -> MetricsSample {
    let parsed = text.and_then(|text| parse_prometheus(text).ok());
    let values = |name: &str| -> Option<Vec<f64>> {
        let family = parsed.as_ref()?.families.get(name)?;
        Some(
            family
                .iter_samples()
                .filter_map(|sample| match &sample.value {
                    PrometheusValue::Gauge(n) | PrometheusValue::Unknown(n) => Some(n.as_f64()),
                    PrometheusValue::Counter(c) => Some(c.value.as_f64()),
                    _ => None,
                })
                .collect(),
        )
    };
    MetricsSample {
        second,
        instance: instance.to_owned(),
        up: parsed.is_some(),
        outbox_backlog: values("outbox_backlog").and_then(|v| v.first().copied()),
        outbox_oldest_age_s: values("outbox_oldest_unpublished_age_seconds")
            .and_then(|v| v.first().copied()),
        consumer_lag: values("consumer_lag").map(|lags| lags.iter().sum()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_backlog_and_sums_the_partitions_lag() {
        let wallet = "# TYPE outbox_backlog gauge\noutbox_backlog 12\n\
                      # TYPE outbox_oldest_unpublished_age_seconds gauge\n\
                      outbox_oldest_unpublished_age_seconds 0.25\n\
                      # TYPE http_request_duration_seconds histogram\n\
                      http_request_duration_seconds_bucket{route=\"/wallets/{id}\",le=\"+Inf\"} 3\n\
                      http_request_duration_seconds_sum{route=\"/wallets/{id}\"} 0.1\n\
                      http_request_duration_seconds_count{route=\"/wallets/{id}\"} 3\n";
        let s = sample(2.5, "wallet", Some(wallet));
        assert!(s.up);
        assert_eq!(
            (s.outbox_backlog, s.outbox_oldest_age_s, s.consumer_lag),
            (Some(12.0), Some(0.25), None)
        );

        let history = "# TYPE consumer_lag gauge\nconsumer_lag{partition=\"0\"} 4\nconsumer_lag{partition=\"5\"} 6\n";
        let s = sample(2.5, "history", Some(history));
        assert_eq!((s.outbox_backlog, s.consumer_lag), (None, Some(10.0)));

        let down = sample(3.0, "history", None);
        assert!(!down.up);
        assert_eq!(down.consumer_lag, None);
    }
}
