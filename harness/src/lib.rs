//! Starts and supervises the real processes of tests and proving-ground runs:
//! a private PostgreSQL cluster, the broker and the services.
//!
//! The chaos runs kill these processes mid-flight, so the crate is strict
//! about process hygiene: a process is only ever signalled through the pid we
//! started (never by name), every child is reaped, and every child carries a
//! parent-death signal so nothing outlives the process that owns it, even when
//! that owner panics or is SIGKILLed.
//!
//! - [`process`]: one supervised OS process ([`process::ManagedProcess`]).
//! - [`postgres`]: a private PostgreSQL cluster ([`postgres::PgCluster`]) and
//!   the shared per-test-process server ([`postgres::test_server`],
//!   [`postgres::fresh_database`]).
//! - [`net`]: free ports and readiness probes.
//! - [`proxy`]: a TCP fault proxy for one network link ([`proxy::FaultProxy`]).
//! - [`system`]: the whole system under test as processes, by [`system::Role`].
//! - [`browser`]: headless Chromium loading a report page, for its tests.

pub mod browser;
pub mod net;
pub mod postgres;
pub mod process;
pub mod procfs;
pub mod proxy;
pub mod system;

pub use postgres::{PgCluster, PgOptions, TestServer, fresh_database, test_server};
pub use process::{ManagedProcess, ProcessSpec};
