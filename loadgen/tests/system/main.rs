//! The system as real processes: a real PostgreSQL server, the real broker
//! process, the wallet and history processes started from this package's
//! binary. Each test gets its own broker, topic, group and databases.

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
mod wallet_kills;
