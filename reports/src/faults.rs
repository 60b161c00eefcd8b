//! Faults on the report's time axis: each fault of `chaos.jsonl` as a span
//! in seconds since the load started.

use chrono::{DateTime, Utc};
use run_log::{ChaosEvent, FaultKind, FaultPhase};

/// One fault, from injection to recovery.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultSpan {
    pub fault_id: u32,
    pub kind: FaultKind,
    pub target: String,
    pub injected_s: f64,
    /// When the process was started again / continued.
    pub healed_s: Option<f64>,
    /// When it answered its health check again.
    pub recovered_s: Option<f64>,
}

impl FaultSpan {
    /// The end of the band: recovery, else healing, else `open_end`.
    pub fn end_s(&self, open_end: f64) -> f64 {
        self.recovered_s.or(self.healed_s).unwrap_or(open_end)
    }

    /// "#2 history_kill": the band's label.
    pub fn label(&self) -> String {
        format!("#{} {}", self.fault_id, self.kind)
    }
}

/// A fault the run planned but did not inject (its part is not this
/// run's, or not running), with the runner's reason.
#[derive(Debug, Clone, PartialEq)]
pub struct SkippedFault {
    pub fault_id: u32,
    pub kind: FaultKind,
    pub target: String,
    pub reason: String,
}

/// The faults `chaos.jsonl` records as skipped (an injection whose detail
/// says `skipped: ...`), in plan order.
pub fn skipped_faults(events: &[ChaosEvent]) -> Vec<SkippedFault> {
    let mut skipped: Vec<SkippedFault> = events
        .iter()
        .filter(|e| e.phase == FaultPhase::Injected && e.detail.starts_with("skipped"))
        .map(|e| SkippedFault {
            fault_id: e.fault_id,
            kind: e.kind,
            target: e.target.clone(),
            reason: e
                .detail
                .trim_start_matches("skipped")
                .trim_start_matches(':')
                .trim()
                .to_owned(),
        })
        .collect();
    skipped.sort_by_key(|f| f.fault_id);
    skipped
}

/// One span per fault injected, in injection order: `run_log::fault_windows` put on
/// the load's time axis (a skipped fault has none). Every event's `at` is the load start plus its
/// `offset_ms` (one monotonic clock, see `chaos::log`), so any event gives
/// the origin.
pub fn fault_spans(events: &[ChaosEvent]) -> Vec<FaultSpan> {
    let Some(first) = events.first() else {
        return Vec::new();
    };
    let origin = first.at - chrono::Duration::milliseconds(first.offset_ms as i64);
    let seconds = |at: DateTime<Utc>| (at - origin).num_milliseconds() as f64 / 1000.0;
    let skipped: Vec<u32> = skipped_faults(events).iter().map(|f| f.fault_id).collect();
    run_log::fault_windows(events)
        .into_iter()
        .filter(|window| !skipped.contains(&window.fault_id))
        .map(|window| FaultSpan {
            fault_id: window.fault_id,
            kind: window.kind,
            target: window.target,
            injected_s: seconds(window.start),
            healed_s: window.healed.map(seconds),
            recovered_s: window.recovered.map(seconds),
        })
        .collect()
}

/// The band colour of a fault kind (translucent, so series show through).
pub fn colour(kind: FaultKind) -> &'static str {
    match kind {
        FaultKind::BrokerKill => "rgba(220, 53, 69, 0.16)",
        FaultKind::HistoryKill => "rgba(111, 66, 193, 0.16)",
        FaultKind::HistoryPause => "rgba(253, 126, 20, 0.18)",
        FaultKind::WalletKill => "rgba(13, 110, 253, 0.14)",
        FaultKind::PostgresRestart => "rgba(120, 85, 60, 0.18)",
        FaultKind::PostgresKill => "rgba(80, 50, 30, 0.22)",
        FaultKind::HistoryJoin => "rgba(32, 201, 151, 0.16)",
        FaultKind::NetLatency => "rgba(108, 117, 125, 0.14)",
        FaultKind::NetDrop => "rgba(108, 117, 125, 0.24)",
        FaultKind::NetPartition => "rgba(52, 58, 64, 0.20)",
        FaultKind::LostResponse => "rgba(214, 51, 132, 0.18)",
    }
}

#[cfg(test)]
mod tests {
    use run_log::FaultPhase;

    use super::*;

    fn event(fault_id: u32, phase: FaultPhase, offset_ms: u64) -> ChaosEvent {
        ChaosEvent {
            fault_id,
            kind: FaultKind::HistoryKill,
            phase,
            at: DateTime::from_timestamp(1_700_000_000, 0).unwrap()
                + chrono::Duration::milliseconds(offset_ms as i64),
            offset_ms,
            target: "history".into(),
            pid: Some(7),
            detail: String::new(),
        }
    }

    #[test]
    fn a_skipped_fault_has_no_span_and_is_listed_with_its_reason() {
        let mut skipped = event(3, FaultPhase::Injected, 7_000);
        skipped.kind = FaultKind::BrokerKill;
        skipped.detail = "skipped: not started by this run".into();
        let mut healed = skipped.clone();
        healed.phase = FaultPhase::Healed;
        let events = [
            event(1, FaultPhase::Injected, 5_000),
            skipped,
            healed,
            event(1, FaultPhase::Healed, 9_000),
        ];
        let spans = fault_spans(&events);
        assert_eq!(spans.iter().map(|s| s.fault_id).collect::<Vec<_>>(), [1]);
        assert_eq!(
            skipped_faults(&events),
            [SkippedFault {
                fault_id: 3,
                kind: FaultKind::BrokerKill,
                target: "history".into(),
                reason: "not started by this run".into(),
            }]
        );
    }

    #[test]
    fn spans_run_from_injection_to_recovery_or_the_open_end() {
        let spans = fault_spans(&[
            event(2, FaultPhase::Injected, 20_000),
            event(1, FaultPhase::Injected, 5_000),
            event(1, FaultPhase::Healed, 9_000),
            event(1, FaultPhase::Recovered, 12_500),
        ]);
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[0].fault_id, 1);
        assert_eq!(spans[0].injected_s, 5.0);
        assert_eq!(spans[0].end_s(60.0), 12.5);
        assert_eq!(spans[1].end_s(60.0), 60.0);
        assert_eq!(spans[0].label(), "#1 history_kill");
    }
}
