//! What an experiment does, drawn from its seed, shared by the live load
//! generator and the simulator so both run one workload:
//!
//! - [`scenario`]: the built-in scenarios and user-written TOML files.
//! - [`ops`]: the seed's wallets and, for every operation slot, its kind,
//!   wallets and amount ([`Workload`]).
//! - [`retry`]: when a client sends an operation again ([`Retry`]), and
//!   how an operation's attempts fold into its outcome (in `run_log`).

pub mod ops;
pub mod retry;
pub mod scenario;

pub use ops::{PlannedOp, PlannedWallet, Workload};
pub use retry::Retry;
pub use scenario::Scenario;
