//! Integration tests of the harness against real processes: `sleep` and `sh`
//! for process supervision, the installed PostgreSQL server binaries for the
//! cluster, and loopback sockets for the readiness probes and the fault proxy.
//!
//! One test binary (instead of one per file) so the shared test server is
//! started once and the crate is linked once.

mod common;
mod net;
mod postgres;
mod process;
mod proxy;
