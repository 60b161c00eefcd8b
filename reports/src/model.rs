//! What a run's report shows, computed from its [`RunData`]: the series of
//! every chart and the recovery of every fault. Pure; the page only lays
//! it out.

use std::collections::BTreeMap;

use run_log::service_metrics::{self, ServiceSecond};

use crate::{
    charts::{SecondOutcomes, TimeAxis},
    faults::{FaultSpan, SkippedFault, fault_spans, skipped_faults},
    latency::{self, PercentilePoint, SecondLatency},
    recovery::{self, FaultRecovery, SystemSecond},
    run_dir::RunData,
};

pub struct RunModel<'a> {
    pub data: &'a RunData,
    pub spans: Vec<FaultSpan>,
    /// Faults planned but not injected, with why.
    pub skipped: Vec<SkippedFault>,
    pub axis: TimeAxis,
    /// Per endpoint (summary order): its latency per second.
    pub latency: Vec<(String, Vec<SecondLatency>)>,
    pub throughput: Vec<SecondOutcomes>,
    /// Per endpoint: the whole run's percentile distribution.
    pub distributions: Vec<(String, Vec<PercentilePoint>)>,
    pub recoveries: Vec<FaultRecovery>,
    pub load_end_s: f64,
    pub converged_at_s: Option<f64>,
    /// The services' own backlog and lag per second (`metrics.jsonl`).
    pub service_seconds: Vec<ServiceSecond>,
}

impl<'a> RunModel<'a> {
    pub fn new(data: &'a RunData) -> Self {
        let summary = &data.summary;
        let load_end_s = summary.duration_s;
        let converged_at_s = summary.convergence.converged_at_s();
        let spans = fault_spans(&data.chaos);
        let axis = time_axis(data, &spans, load_end_s, converged_at_s);
        let endpoints: Vec<&str> = summary
            .endpoints
            .iter()
            .map(|e| e.endpoint.as_str())
            .collect();
        let latency = endpoints
            .iter()
            .filter_map(|&e| Some((e.to_owned(), data.latency_of(e)?.per_second())))
            .collect();
        let distributions = endpoints
            .iter()
            .filter_map(|&e| {
                let total = data.latency_of(e)?.total();
                Some((e.to_owned(), latency::distribution(&total)))
            })
            .collect();
        let throughput = throughput(data);
        let system = system_seconds(data, &throughput);
        let recoveries = recovery::recoveries(&spans, &system, load_end_s);
        Self {
            data,
            skipped: skipped_faults(&data.chaos),
            spans,
            axis,
            latency,
            throughput,
            distributions,
            recoveries,
            load_end_s,
            converged_at_s,
            service_seconds: data
                .service_metrics
                .as_deref()
                .map(service_metrics::per_second)
                .unwrap_or_default(),
        }
    }
}

/// The time charts run to the latest of: the load's end, convergence, the
/// last lag second and the last fault's end.
fn time_axis(
    data: &RunData,
    spans: &[FaultSpan],
    load_end_s: f64,
    converged_at_s: Option<f64>,
) -> TimeAxis {
    let last_lag = data
        .lag
        .iter()
        .flatten()
        .map(|s| s.second as f64 + 1.0)
        .fold(0.0, f64::max);
    let last_fault = spans
        .iter()
        .map(|s| s.end_s(load_end_s))
        .fold(0.0, f64::max);
    TimeAxis {
        end_s: load_end_s
            .max(converged_at_s.unwrap_or(0.0))
            .max(last_lag)
            .max(last_fault),
    }
}

/// Outcomes per second over all endpoints, from `timeline.json`.
fn throughput(data: &RunData) -> Vec<SecondOutcomes> {
    let mut per_second: BTreeMap<u64, SecondOutcomes> = BTreeMap::new();
    for point in &data.timeline {
        let second = per_second.entry(point.second).or_insert(SecondOutcomes {
            second: point.second,
            ..SecondOutcomes::default()
        });
        second.ok += point.ok;
        second.failed += point.failed;
        second.indeterminate += point.indeterminate;
        second.dropped += point.dropped;
    }
    per_second.into_values().collect()
}

/// What the whole system did each second: ok responses and the p99 of all
/// endpoints merged (the recovery analysis works on these).
fn system_seconds(data: &RunData, throughput: &[SecondOutcomes]) -> Vec<SystemSecond> {
    let merged = latency::merged_per_second(&data.latency);
    throughput
        .iter()
        .map(|s| SystemSecond {
            second: s.second,
            ok: s.ok,
            p99_ms: merged
                .get(&s.second)
                .filter(|h| !h.is_empty())
                .map(|h| run_log::latency::ms(h.value_at_quantile(0.99))),
        })
        .collect()
}
