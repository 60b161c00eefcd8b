//! Canaries: named switches that plant known bugs in the real code, so the
//! simulator's power to find bugs can be checked continuously. They exist
//! only in builds with the `canary` feature (the simulator's tests and its
//! `--canary` flag); in every other build [`enabled`] is a constant `false`
//! and the planted code compiles away.
//!
//! The names, and the bug each plants:
//! - `relay-marks-before-ack`: the relay marks rows sent before the broker
//!   acknowledged them.
//! - `offset-before-commit`: the history consumer stores offsets before
//!   its transaction commits.
//! - `no-duplicate-guard`: the history consumer does not skip an event at
//!   or below its wallet's head.

/// Every canary there is.
pub const NAMES: [&str; 3] = [
    "relay-marks-before-ack",
    "offset-before-commit",
    "no-duplicate-guard",
];

#[cfg(feature = "canary")]
mod switch {
    use std::sync::RwLock;

    static ENABLED: RwLock<Option<&'static str>> = RwLock::new(None);

    /// Turns canary `name` on (or every canary off with `None`).
    pub fn set(name: Option<&'static str>) {
        *ENABLED.write().expect("canary lock") = name;
    }

    pub fn enabled(name: &str) -> bool {
        *ENABLED.read().expect("canary lock") == Some(name)
    }
}

#[cfg(feature = "canary")]
pub use switch::{enabled, set};

/// Without the `canary` feature no canary exists.
#[cfg(not(feature = "canary"))]
#[inline(always)]
pub fn enabled(_name: &str) -> bool {
    false
}
