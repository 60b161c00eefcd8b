//! Faults on the report's time axis: each fault of `chaos.jsonl` as a span
//! in seconds since the load started.

use chrono::{DateTime, Utc};
use run_log::{ChaosEvent, FaultKind};

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

/// One span per fault, in injection order: `run_log::fault_windows` put on
/// the load's time axis. Every event's `at` is the load start plus its
/// `offset_ms` (one monotonic clock, see `chaos::log`), so any event gives
/// the origin.
pub fn fault_spans(events: &[ChaosEvent]) -> Vec<FaultSpan> {
    let Some(first) = events.first() else {
        return Vec::new();
    };
    let origin = first.at - chrono::Duration::milliseconds(first.offset_ms as i64);
    let seconds = |at: DateTime<Utc>| (at - origin).num_milliseconds() as f64 / 1000.0;
    run_log::fault_windows(events)
        .into_iter()
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
