//! The system as real processes: a real PostgreSQL server, the real broker
//! process, the wallet and history processes started from this package's
//! binary. Each test gets its own broker, topic, group and databases.
//!
//! libtest starts tests in the order of their names, as many at once as it
//! has threads (`RUST_TEST_THREADS`, which `.cargo/config.toml` sets to 4:
//! these tests mostly wait on their runs). The longest ones (`bench`, and
//! the wallet kills under `faults`) sort early, so none of them starts last
//! and holds the binary up alone.

mod attached;
mod bench;
mod end_to_end;
mod faults;
mod helpers;
mod poison;
mod readme;
mod report;
mod run;
mod sim;
