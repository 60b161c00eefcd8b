//! Recovery after each fault: how long until the system's p99 latency and
//! its ok-throughput were back at their level before the fault.
//!
//! - Baseline: the [`BASELINE_WINDOW_S`] seconds before the injection that
//!   lie in no other fault and after the warm-up ([`WARMUP_S`]); p99 is the
//!   median of those seconds' p99s (one slow second does not move it),
//!   throughput their mean ok responses per second.
//! - A second is *good* for latency when its p99 is at most
//!   [`P99_TOLERANCE_FACTOR`] × baseline (or baseline + [`P99_TOLERANCE_MS`],
//!   whichever is larger, so that a 4 ms baseline does not call 7 ms a
//!   stall), and good for throughput when it completed at least
//!   [`THROUGHPUT_TOLERANCE`] × baseline ok responses. A second without
//!   requests is bad for both.
//! - Recovered: from the injection, the first second that starts
//!   [`RECOVERY_HOLD_S`] good seconds in a row, after at least one bad one.
//!   No bad second at all: unaffected.

use crate::faults::FaultSpan;

pub const BASELINE_WINDOW_S: u64 = 10;
pub const WARMUP_S: u64 = 2;
pub const P99_TOLERANCE_FACTOR: f64 = 1.5;
pub const P99_TOLERANCE_MS: f64 = 5.0;
pub const THROUGHPUT_TOLERANCE: f64 = 0.8;
pub const RECOVERY_HOLD_S: u64 = 3;

/// What the whole system did in one second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SystemSecond {
    pub second: u64,
    /// Ok responses completed in the second.
    pub ok: u64,
    /// p99 over every endpoint; `None` if no request completed.
    pub p99_ms: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RecoveryTime {
    /// No second after the injection was worse than the baseline.
    Unaffected,
    /// Back to the baseline this many seconds after the injection.
    After(f64),
    /// Still below the baseline when the load ended.
    NotWithinRun,
    /// No clean seconds before the fault to compare with.
    NoBaseline,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FaultRecovery {
    pub span: FaultSpan,
    pub baseline_p99_ms: Option<f64>,
    pub baseline_ok_per_s: Option<f64>,
    pub p99: RecoveryTime,
    pub throughput: RecoveryTime,
}

/// Recovery of every fault, given the system's seconds (in order, one per
/// second of the load; missing seconds count as empty).
pub fn recoveries(
    spans: &[FaultSpan],
    seconds: &[SystemSecond],
    load_end_s: f64,
) -> Vec<FaultRecovery> {
    let last_second = load_end_s.floor() as u64;
    let at = |second: u64| -> SystemSecond {
        seconds
            .iter()
            .find(|s| s.second == second)
            .copied()
            .unwrap_or(SystemSecond {
                second,
                ok: 0,
                p99_ms: None,
            })
    };
    spans
        .iter()
        .map(|span| {
            let injected = span.injected_s.floor() as u64;
            let baseline: Vec<SystemSecond> = (injected.saturating_sub(BASELINE_WINDOW_S)
                ..injected)
                .filter(|s| *s >= WARMUP_S)
                .filter(|s| !in_any_fault(spans, *s, load_end_s))
                .map(at)
                .filter(|s| s.p99_ms.is_some())
                .collect();
            let baseline_p99 = median(baseline.iter().filter_map(|s| s.p99_ms).collect());
            let baseline_ok = (!baseline.is_empty())
                .then(|| baseline.iter().map(|s| s.ok as f64).sum::<f64>() / baseline.len() as f64);
            let after: Vec<SystemSecond> = (injected..last_second).map(at).collect();
            let p99 = match baseline_p99 {
                None => RecoveryTime::NoBaseline,
                Some(base) => {
                    let limit = (base * P99_TOLERANCE_FACTOR).max(base + P99_TOLERANCE_MS);
                    recovery(&after, span, |s| s.p99_ms.is_some_and(|p| p <= limit))
                }
            };
            let throughput = match baseline_ok {
                None => RecoveryTime::NoBaseline,
                Some(base) => {
                    recovery(&after, span, |s| s.ok as f64 >= base * THROUGHPUT_TOLERANCE)
                }
            };
            FaultRecovery {
                span: span.clone(),
                baseline_p99_ms: baseline_p99,
                baseline_ok_per_s: baseline_ok,
                p99,
                throughput,
            }
        })
        .collect()
}

fn in_any_fault(spans: &[FaultSpan], second: u64, open_end: f64) -> bool {
    let (from, to) = (second as f64, second as f64 + 1.0);
    spans
        .iter()
        .any(|span| span.injected_s < to && span.end_s(open_end) > from)
}

fn recovery(
    after: &[SystemSecond],
    span: &FaultSpan,
    good: impl Fn(&SystemSecond) -> bool,
) -> RecoveryTime {
    let Some(first_bad) = after.iter().position(|s| !good(s)) else {
        return RecoveryTime::Unaffected;
    };
    let hold = RECOVERY_HOLD_S as usize;
    (first_bad..after.len())
        .find(|&start| after.len() >= start + hold && after[start..start + hold].iter().all(&good))
        .map(|start| RecoveryTime::After((after[start].second as f64 - span.injected_s).max(0.0)))
        .unwrap_or(RecoveryTime::NotWithinRun)
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    Some(if values.len() % 2 == 0 {
        (values[middle - 1] + values[middle]) / 2.0
    } else {
        values[middle]
    })
}

#[cfg(test)]
mod tests {
    use run_log::FaultKind;

    use super::*;

    fn span(injected_s: f64, healed_s: f64) -> FaultSpan {
        FaultSpan {
            fault_id: 1,
            kind: FaultKind::BrokerKill,
            target: "wallet".into(),
            injected_s,
            healed_s: Some(healed_s),
            recovered_s: Some(healed_s + 0.5),
        }
    }

    /// 100 ok/s at 10 ms, except `stalled` seconds: nothing completes.
    fn seconds(
        total: u64,
        stalled: std::ops::Range<u64>,
        slow: std::ops::Range<u64>,
    ) -> Vec<SystemSecond> {
        (0..total)
            .map(|second| SystemSecond {
                second,
                ok: if stalled.contains(&second) { 0 } else { 100 },
                p99_ms: if stalled.contains(&second) {
                    None
                } else if slow.contains(&second) {
                    Some(2_000.0)
                } else {
                    Some(10.0)
                },
            })
            .collect()
    }

    #[test]
    fn recovery_counts_from_injection_to_three_good_seconds() {
        // Injected at 20.4 s; nothing completes 20..24; seconds 24 and 25
        // complete the backlog slowly; from 26 on all is well.
        let result = recoveries(&[span(20.4, 23.0)], &seconds(60, 20..24, 24..26), 60.0);
        let r = &result[0];
        assert_eq!(r.baseline_p99_ms, Some(10.0));
        assert_eq!(r.baseline_ok_per_s, Some(100.0));
        // Latency good again from second 26: 5.6 s after the injection.
        assert!(
            matches!(r.p99, RecoveryTime::After(t) if (t - 5.6).abs() < 1e-9),
            "{:?}",
            r.p99
        );
        // Throughput good again from second 24.
        assert!(
            matches!(r.throughput, RecoveryTime::After(t) if (t - 3.6).abs() < 1e-9),
            "{:?}",
            r.throughput
        );
    }

    #[test]
    fn an_unfelt_fault_is_unaffected_and_a_late_one_not_within_run() {
        let quiet = recoveries(&[span(20.0, 23.0)], &seconds(60, 0..0, 0..0), 60.0);
        assert_eq!(quiet[0].p99, RecoveryTime::Unaffected);
        assert_eq!(quiet[0].throughput, RecoveryTime::Unaffected);
        // Stalled from 55 to the end of the load at 60 s.
        let late = recoveries(&[span(55.0, 58.0)], &seconds(60, 55..60, 0..0), 60.0);
        assert_eq!(late[0].p99, RecoveryTime::NotWithinRun);
        assert_eq!(late[0].throughput, RecoveryTime::NotWithinRun);
    }

    #[test]
    fn the_baseline_skips_warm_up_and_other_faults() {
        // A fault at 1 s has only warm-up before it: no baseline.
        let early = recoveries(&[span(1.0, 2.0)], &seconds(30, 1..3, 0..0), 30.0);
        assert_eq!(early[0].p99, RecoveryTime::NoBaseline);
        // The seconds of fault #1 (slow) do not count in fault #2's baseline.
        let mut first = span(10.0, 14.0);
        first.recovered_s = Some(15.0);
        let mut second = span(18.0, 20.0);
        second.fault_id = 2;
        let result = recoveries(&[first, second], &seconds(40, 0..0, 10..16), 40.0);
        assert_eq!(result[1].baseline_p99_ms, Some(10.0));
        assert!(
            matches!(result[0].p99, RecoveryTime::After(t) if (t - 6.0).abs() < 1e-9),
            "{:?}",
            result[0].p99
        );
        assert_eq!(result[1].p99, RecoveryTime::Unaffected);
    }

    #[test]
    fn median_of_even_and_odd_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(Vec::new()), None);
    }
}
