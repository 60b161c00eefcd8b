//! The system as real processes: a real PostgreSQL server, the real broker
//! process, the wallet and history processes started from this package's
//! binary. Each test gets its own broker, topic, group and databases.
//!
//! libtest starts tests in the order of their names, as many at once as it
//! has threads (`RUST_TEST_THREADS`, which `.cargo/config.toml` sets to 4:
//! these tests mostly wait on their runs). The two longest (`attempts`,
//! the wallet killed again and again, and `bench`) sort among the first
//! four, so they start at once instead of holding the binary up at its end.

mod attached;
mod attempts;
mod bench;
mod end_to_end;
mod faults;
mod helpers;
mod poison;
mod readme;
mod report;
mod run;
mod sim;
