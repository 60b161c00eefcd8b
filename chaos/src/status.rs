//! [`ChaosStatus`]: the faults in flight and the counts so far, shared
//! between the runner that updates it and the progress line that reads it.

use std::{
    fmt::Write as _,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
};

use run_log::FaultKind;

/// The faults in flight and counts so far, for a progress line. Clones
/// share one state, so the runner updates what the printer reads.
#[derive(Debug, Clone, Default)]
pub struct ChaosStatus {
    inner: Arc<StatusInner>,
}

#[derive(Debug, Default)]
struct StatusInner {
    /// Injected and not yet recovered (or given up on).
    active: Mutex<Vec<(u32, FaultKind)>>,
    injected: AtomicU32,
    recovered: AtomicU32,
    not_recovered: AtomicU32,
    skipped: AtomicU32,
}

impl ChaosStatus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Faults injected and not yet recovered, by id.
    pub fn active(&self) -> Vec<(u32, FaultKind)> {
        self.inner.active.lock().expect("status lock").clone()
    }

    pub fn injected(&self) -> u32 {
        self.inner.injected.load(Ordering::Relaxed)
    }

    pub fn recovered(&self) -> u32 {
        self.inner.recovered.load(Ordering::Relaxed)
    }

    /// Faults whose target did not answer within [`RECOVERY_TIMEOUT_MS`].
    pub fn not_recovered(&self) -> u32 {
        self.inner.not_recovered.load(Ordering::Relaxed)
    }

    /// Faults skipped because their target was not ours or not running.
    pub fn skipped(&self) -> u32 {
        self.inner.skipped.load(Ordering::Relaxed)
    }

    /// E.g. `faults: 3 injected, 2 recovered, active #3 history_pause`.
    pub fn progress(&self) -> String {
        let mut line = format!(
            "faults: {} injected, {} recovered",
            self.injected(),
            self.recovered()
        );
        for (count, what) in [
            (self.not_recovered(), "not recovered"),
            (self.skipped(), "skipped"),
        ] {
            if count > 0 {
                let _ = write!(line, ", {count} {what}");
            }
        }
        for (fault_id, kind) in self.active() {
            let _ = write!(line, ", active #{fault_id} {kind}");
        }
        line
    }

    pub(crate) fn begin(&self, fault_id: u32, kind: FaultKind) {
        self.inner.injected.fetch_add(1, Ordering::Relaxed);
        self.inner
            .active
            .lock()
            .expect("status lock")
            .push((fault_id, kind));
    }

    pub(crate) fn end(&self, fault_id: u32, recovered: bool) {
        self.inner
            .active
            .lock()
            .expect("status lock")
            .retain(|&(id, _)| id != fault_id);
        let counter = if recovered {
            &self.inner.recovered
        } else {
            &self.inner.not_recovered
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn skip(&self) {
        self.inner.skipped.fetch_add(1, Ordering::Relaxed);
    }
}
