//! Deterministic simulation of the wallet system: the real wallet router,
//! store orchestration and relay round, the real history apply path and
//! consumer batch contract, and the unchanged consistency checker, run in
//! one thread on simulated time over models of PostgreSQL and Kafka. One
//! seed gives one trace; thousands of seeds run a minute.
//!
//! - [`exec`]: the deterministic executor (seeded scheduling, simulated
//!   clock, processes that can be killed or stopped).
//! - [`world`]: the trace, coverage counters and fault knobs; [`world::io`]
//!   is the choice point every simulated I/O step passes.
//! - [`pg`], [`kafka`]: the models, behind the services' backend traits.
//! - [`cluster`]: wallet and history instances as processes.
//! - [`client`]: the seeded workload with live-run retries and op log.
//! - [`chaos`]: the fault plan (swarm), timed faults and crash points.
//! - [`run`]: one seed's phases and verdict; [`snapshot`]: the checker's
//!   view of the models.
//! - [`cli`], [`sweep`], [`shrink`], [`output`]: `loadgen sim`: one seed
//!   and its run directory, sweeps with determinism checks, shrinking.

pub mod chaos;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod exec;
pub mod kafka;
pub mod output;
pub mod pg;
pub mod run;
pub mod shrink;
pub mod snapshot;
pub mod sweep;
pub mod world;

pub use run::{SeedOutcome, SimConfig, run_seed};
