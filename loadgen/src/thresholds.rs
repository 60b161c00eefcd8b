//! Latency bounds a run must meet (`--threshold p99<200ms`), in the style of
//! goose's and k6's thresholds.

use std::time::Duration;

use anyhow::{Context, bail};

use run_log::summary::EndpointSummary;

#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    pub text: String,
    /// None: every endpoint must meet it.
    pub endpoint: Option<String>,
    pub statistic: Statistic,
    pub limit: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Statistic {
    P50,
    P90,
    P99,
    P999,
    Max,
    Mean,
}

pub fn parse(text: &str) -> anyhow::Result<Threshold> {
    let (endpoint, bound) = match text.rsplit_once(':') {
        Some((endpoint, bound)) => (Some(endpoint.trim().to_owned()), bound),
        None => (None, text),
    };
    let (statistic, limit) = bound
        .split_once('<')
        .with_context(|| format!("threshold {text:?}: expected STAT<DURATION, e.g. p99<200ms"))?;
    let statistic = match statistic.trim() {
        "p50" => Statistic::P50,
        "p90" => Statistic::P90,
        "p99" => Statistic::P99,
        "p99.9" => Statistic::P999,
        "max" => Statistic::Max,
        "mean" | "avg" => Statistic::Mean,
        other => bail!(
            "threshold {text:?}: unknown statistic {other:?} (p50, p90, p99, p99.9, max, mean)"
        ),
    };
    let limit = humantime::parse_duration(limit.trim())
        .with_context(|| format!("threshold {text:?}: {limit:?} is not a duration"))?;
    Ok(Threshold {
        text: text.to_owned(),
        endpoint,
        statistic,
        limit,
    })
}

/// The thresholds missed, each with what was measured.
pub fn missed(thresholds: &[Threshold], summaries: &[EndpointSummary]) -> Vec<String> {
    let mut missed = Vec::new();
    for threshold in thresholds {
        for summary in summaries.iter().filter(|s| {
            threshold
                .endpoint
                .as_deref()
                .is_none_or(|e| e == s.endpoint)
        }) {
            let value_ms = match threshold.statistic {
                Statistic::P50 => summary.p50_ms,
                Statistic::P90 => summary.p90_ms,
                Statistic::P99 => summary.p99_ms,
                Statistic::P999 => summary.p999_ms,
                Statistic::Max => summary.max_ms,
                Statistic::Mean => summary.mean_ms,
            };
            let limit_ms = threshold.limit.as_secs_f64() * 1000.0;
            if value_ms >= limit_ms {
                missed.push(format!(
                    "{}: {} measured {value_ms:.1} ms",
                    threshold.text, summary.endpoint
                ));
            }
        }
    }
    missed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_judges() {
        let t = parse("p99<200ms").unwrap();
        assert_eq!(
            (t.statistic, t.limit, t.endpoint.clone()),
            (Statistic::P99, Duration::from_millis(200), None)
        );
        let e = parse("POST /wallets/{id}/transfer:max<2s").unwrap();
        assert_eq!(e.endpoint.as_deref(), Some("POST /wallets/{id}/transfer"));
        assert!(parse("p98<1s").is_err());
        assert!(parse("p99 200ms").is_err());
        let summary = EndpointSummary {
            endpoint: "POST /wallets/{id}/transfer".into(),
            count: 1,
            ok: 1,
            failed: 0,
            indeterminate: 0,
            dropped: 0,
            rps: 1.0,
            min_ms: 1.0,
            mean_ms: 5.0,
            p50_ms: 4.0,
            p75_ms: 5.0,
            p90_ms: 9.0,
            p99_ms: 250.0,
            p999_ms: 300.0,
            max_ms: 1_900.0,
        };
        assert_eq!(
            missed(&[t.clone(), e], std::slice::from_ref(&summary)).len(),
            1
        );
        assert!(missed(&[t], &[]).is_empty());
    }
}
