//! Chaos for the proving ground: a seeded fault schedule, carried out
//! against the real processes of a run, with its timeline in `chaos.jsonl`.
//!
//! - [`plan`]: pure planning. A seed and a weighted [`FaultMenu`] give the
//!   same [`PlannedFault`]s every time ([`plan_faults`]); [`explicit`]
//!   plans by hand; [`describe`] prints a plan.
//! - [`log`]: [`ChaosLog`], the `chaos.jsonl` writer (one flushed line per
//!   phase of a fault).
//! - [`runner`]: [`run_plan`] injects, holds, heals and waits for recovery,
//!   fault by fault, on a [`harness::system::System`]; [`heal_all`] brings
//!   every part back for the liveness phase.
//! - [`recovery`]: when a healed part counts as recovered (probes).
//! - [`network`]: faults on the links between the parts, through the
//!   harness's fault proxies.
//! - [`status`]: [`ChaosStatus`], the faults in flight, for a progress line.
//!
//! Turning faults off is the caller's choice: an empty plan
//! ([`FaultMenu::none`]) runs nothing, and liveness is judged only after
//! [`run_plan`] returned and [`heal_all`] succeeded.

pub mod log;
pub mod network;
pub mod plan;
pub mod recovery;
pub mod runner;
pub mod status;

pub use log::ChaosLog;
pub use plan::{FaultMenu, PlannedFault, describe, explicit, plan_faults};
pub use run_log::{ChaosEvent, FaultKind, FaultPhase};
pub use runner::{heal_all, run_plan};
pub use status::ChaosStatus;
