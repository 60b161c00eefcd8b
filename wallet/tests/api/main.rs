//! The wallet API in-process (`oneshot` on the router) against a fresh,
//! migrated database per test on a real PostgreSQL server.

mod auth;
mod concurrency;
mod create;
mod fund;
mod helpers;
mod idempotency;
mod transfer;
