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
//!   [`RECOVERY_HOLD_S`] good seconds in a row (or good to the end of its
//!   window), after at least one bad one. A fault is only blamed for bad seconds up to [`ATTRIBUTION_GRACE_S`]
//!   after its own recovery, and only until the next fault is injected:
//!   no bad second in that window means unaffected, and a fault still
//!   unrecovered when the next one strikes is reported as such.

use crate::faults::FaultSpan;

pub const BASELINE_WINDOW_S: u64 = 10;
pub const WARMUP_S: u64 = 2;
pub const P99_TOLERANCE_FACTOR: f64 = 1.5;
pub const P99_TOLERANCE_MS: f64 = 5.0;
pub const THROUGHPUT_TOLERANCE: f64 = 0.8;
pub const RECOVERY_HOLD_S: u64 = 3;
/// A bad second this long after the fault's recovery is not its doing.
pub const ATTRIBUTION_GRACE_S: f64 = 10.0;

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
    /// Still below the baseline when the next fault was injected.
    NotBeforeNextFault,
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
            let next_fault = spans
                .iter()
                .map(|other| other.injected_s)
                .filter(|&at| at > span.injected_s)
                .reduce(f64::min);
            let window = Window {
                seconds: (injected..next_fault.map_or(last_second, |at| at.floor() as u64))
                    .map(at)
                    .collect(),
                injected_s: span.injected_s,
                blame_until_s: span.end_s(load_end_s) + ATTRIBUTION_GRACE_S,
                cut_short: if next_fault.is_some() {
                    RecoveryTime::NotBeforeNextFault
                } else {
                    RecoveryTime::NotWithinRun
                },
            };
            let p99 = match baseline_p99 {
                None => RecoveryTime::NoBaseline,
                Some(base) => {
                    let limit = (base * P99_TOLERANCE_FACTOR).max(base + P99_TOLERANCE_MS);
                    window.recovery(|s| s.p99_ms.is_some_and(|p| p <= limit))
                }
            };
            let throughput = match baseline_ok {
                None => RecoveryTime::NoBaseline,
                Some(base) => window.recovery(|s| s.ok as f64 >= base * THROUGHPUT_TOLERANCE),
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

/// The seconds a fault can be blamed for and recover in.
struct Window {
    /// From the injection to the next fault's injection or the load's end.
    seconds: Vec<SystemSecond>,
    injected_s: f64,
    /// The first bad second must start before this to count as the fault's.
    blame_until_s: f64,
    /// What to say when the window ends before recovery.
    cut_short: RecoveryTime,
}

impl Window {
    fn recovery(&self, good: impl Fn(&SystemSecond) -> bool) -> RecoveryTime {
        let seconds = &self.seconds;
        let first_bad = seconds
            .iter()
            .position(|s| !good(s))
            .filter(|&index| (seconds[index].second as f64) < self.blame_until_s);
        let Some(first_bad) = first_bad else {
            return RecoveryTime::Unaffected;
        };
        let hold = RECOVERY_HOLD_S as usize;
        (first_bad..seconds.len())
            // Good to the end of the window counts too: the next fault or
            // the load's end cut the hold short, not the fault.
            .find(|&start| {
                seconds[start..(start + hold).min(seconds.len())]
                    .iter()
                    .all(&good)
            })
            .map(|start| {
                RecoveryTime::After((seconds[start].second as f64 - self.injected_s).max(0.0))
            })
            .unwrap_or(self.cut_short)
    }
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    Some(if values.len().is_multiple_of(2) {
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
    fn a_fault_is_not_blamed_for_a_later_faults_stall() {
        // #1 at 10 s does nothing; #2 at 30 s stalls 30..34.
        let mut quiet = span(10.0, 12.0);
        quiet.recovered_s = Some(12.5);
        let mut loud = span(30.0, 33.0);
        loud.fault_id = 2;
        let result = recoveries(&[quiet, loud], &seconds(60, 30..34, 0..0), 60.0);
        assert_eq!(result[0].p99, RecoveryTime::Unaffected);
        assert_eq!(result[0].throughput, RecoveryTime::Unaffected);
        assert!(matches!(result[1].throughput, RecoveryTime::After(t) if (t - 4.0).abs() < 1e-9));
        // A stall that outlasts the next fault's injection.
        let mut first = span(10.0, 12.0);
        first.recovered_s = Some(12.5);
        let mut second = span(14.0, 15.0);
        second.fault_id = 2;
        let result = recoveries(&[first, second], &seconds(60, 10..20, 0..0), 60.0);
        assert_eq!(result[0].p99, RecoveryTime::NotBeforeNextFault);
        // A dip long after the fault healed is not the fault's.
        let result = recoveries(&[span(10.0, 12.0)], &seconds(60, 40..41, 0..0), 60.0);
        assert_eq!(result[0].throughput, RecoveryTime::Unaffected);
    }

    #[test]
    fn median_of_even_and_odd_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(Vec::new()), None);
    }
}
