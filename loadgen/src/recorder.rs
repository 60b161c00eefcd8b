//! The live load's recorder: `run_log::recorder::Recorder` on the wall
//! clock, counting seconds from the load's start.

use std::{
    ops::Deref,
    time::{Duration, Instant, SystemTime},
};

use run_log::{Outcome, recorder};

pub struct Recorder {
    started: Instant,
    inner: recorder::Recorder,
}

impl Recorder {
    pub fn new(started: Instant) -> Self {
        Self {
            started,
            inner: recorder::Recorder::new(SystemTime::now()),
        }
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    /// Records one operation finishing now; `latency` runs from its
    /// intended start.
    pub fn record(
        &self,
        endpoint: &'static str,
        outcome: Outcome,
        latency: Duration,
        error_code: Option<&str>,
    ) {
        let second = self.started.elapsed().as_secs();
        self.inner
            .record(second, endpoint, outcome, latency, error_code);
    }
}

impl Deref for Recorder {
    type Target = recorder::Recorder;

    fn deref(&self) -> &recorder::Recorder {
        &self.inner
    }
}
