//! The fault timeline of a run: [`ChaosLog`] appends one [`ChaosEvent`] per
//! line to `chaos.jsonl` and keeps a copy in memory for the caller.
//!
//! Each line is flushed as it is written: the harness process itself may be
//! killed (Ctrl-C, a CI timeout), and the lines written so far are exactly
//! what places a violation inside a fault window afterwards.
//!
//! Times come from one monotonic clock: the load start is remembered as an
//! `Instant` together with its wall-clock time, and every event's `at` is
//! that wall-clock time plus the monotonic time elapsed, so `at` and
//! `offset_ms` agree even if the system clock is stepped mid-run.

use std::{
    fs::File,
    io::{BufWriter, Write},
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use run_log::{ChaosEvent, FaultKind, FaultPhase};

/// An open `chaos.jsonl`.
#[derive(Debug)]
pub struct ChaosLog {
    path: PathBuf,
    out: BufWriter<File>,
    load_start: Instant,
    load_start_at: DateTime<Utc>,
    /// Everything written, in order; bounded by the plan (three lines per
    /// fault plus a few from healing at the end).
    events: Vec<ChaosEvent>,
}

impl ChaosLog {
    /// Creates (or truncates) `path`; offsets count from `load_start`, which
    /// happened at wall-clock time `load_start_at`.
    pub fn create(
        path: impl Into<PathBuf>,
        load_start: Instant,
        load_start_at: DateTime<Utc>,
    ) -> Result<Self> {
        let path = path.into();
        let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self {
            path,
            out: BufWriter::new(file),
            load_start,
            load_start_at,
            events: Vec::new(),
        })
    }

    /// [`ChaosLog::create`] with the load starting now.
    pub fn create_now(path: impl Into<PathBuf>) -> Result<Self> {
        Self::create(path, Instant::now(), Utc::now())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn load_start(&self) -> Instant {
        self.load_start
    }

    pub fn load_start_at(&self) -> DateTime<Utc> {
        self.load_start_at
    }

    /// Milliseconds since the load started (0 before it).
    pub fn offset_ms(&self) -> u64 {
        millis(self.load_start.elapsed().as_millis())
    }

    /// The events written so far, in order.
    pub fn events(&self) -> &[ChaosEvent] {
        &self.events
    }

    /// Appends one event stamped now and flushes it to the file.
    pub fn record(
        &mut self,
        fault_id: u32,
        kind: FaultKind,
        phase: FaultPhase,
        target: &str,
        pid: Option<u32>,
        detail: impl Into<String>,
    ) -> Result<&ChaosEvent> {
        let elapsed = Instant::now().saturating_duration_since(self.load_start);
        let at = self.load_start_at
            + chrono::Duration::from_std(elapsed).context("elapsed time out of range")?;
        let event = ChaosEvent {
            fault_id,
            kind,
            phase,
            at,
            offset_ms: millis(elapsed.as_millis()),
            target: target.to_owned(),
            pid,
            detail: detail.into(),
        };
        run_log::write_jsonl(&mut self.out, std::slice::from_ref(&event))
            .and_then(|()| self.out.flush())
            .with_context(|| format!("writing {}", self.path.display()))?;
        tracing::info!(
            fault_id,
            kind = %kind,
            phase = ?phase,
            target,
            pid,
            detail = %event.detail,
            offset_ms = event.offset_ms,
            "chaos"
        );
        self.events.push(event);
        Ok(self.events.last().expect("just pushed"))
    }
}

fn millis(ms: u128) -> u64 {
    u64::try_from(ms).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn every_line_reaches_the_file_at_once_with_consistent_times() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chaos.jsonl");
        std::fs::write(&path, "stale line from an earlier run\n").unwrap();
        let started_at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let start = Instant::now() - Duration::from_millis(1_500);
        let mut log = ChaosLog::create(&path, start, started_at).unwrap();

        log.record(
            1,
            FaultKind::BrokerKill,
            FaultPhase::Injected,
            "broker",
            Some(42),
            "SIGKILL",
        )
        .unwrap();
        // Read while the log is still open: the line is already there.
        let events: Vec<ChaosEvent> = run_log::read_jsonl(&path).unwrap();
        assert_eq!(events.len(), 1, "the file was truncated and holds one line");
        let event = &events[0];
        assert_eq!(
            (event.fault_id, event.pid, event.target.as_str()),
            (1, Some(42), "broker")
        );
        assert!(
            (1_500..60_000).contains(&event.offset_ms),
            "{}",
            event.offset_ms
        );
        assert_eq!(
            (event.at - started_at).num_milliseconds(),
            i64::try_from(event.offset_ms).unwrap()
        );

        log.record(
            1,
            FaultKind::BrokerKill,
            FaultPhase::Healed,
            "broker",
            Some(43),
            "",
        )
        .unwrap();
        let events: Vec<ChaosEvent> = run_log::read_jsonl(&path).unwrap();
        assert_eq!(events, log.events());
        assert!(events[1].offset_ms >= events[0].offset_ms);
    }
}
