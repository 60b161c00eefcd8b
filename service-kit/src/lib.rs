//! What the wallet and history services do the same way at their edges:
//! who may call ([`auth`]), logging set-up, serving HTTP with a graceful shutdown, turning
//! SIGTERM/SIGINT into a cancellation, reaching a database that may still
//! be starting (or restarting under chaos) before migrating it, the
//! one bounded [`Backoff`] every retry loop uses, the Prometheus metrics
//! both expose ([`metrics`]) and what their OpenAPI documents share
//! ([`openapi`]).

pub mod auth;
mod backoff;
pub mod canary;
pub mod metrics;
pub mod openapi;

use std::time::Duration;

pub use backoff::Backoff;

use anyhow::Context;
use sqlx::{PgPool, migrate::Migrator, postgres::PgPoolOptions};
use tokio_util::sync::CancellationToken;

/// How long start-up keeps trying to reach the database before giving up.
const DATABASE_WAIT_MS: u64 = 60_000;
const DATABASE_RETRY_MS: u64 = 500;
/// A request waits at most this long for a free connection.
const ACQUIRE_TIMEOUT_MS: u64 = 5_000;
/// A pooled connection idle longer than this is pinged before it is handed
/// out: long enough that a busy service never pings, short enough that a
/// database restarted during a lull is noticed before a request fails.
const PING_IF_IDLE_MS: u64 = 1_000;

/// Whether `err` means the database cannot be reached right now (down,
/// restarting, the connection broke, no connection free in time), as
/// opposed to a query that went wrong: the first is a 503 to retry, the
/// second an internal error.
pub fn database_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
        sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exception; 57P01-3: shutdown, crash,
            // starting up; 53300: too many connections.
            code.starts_with("08") || code.starts_with("57P") || code == "53300"
        }),
        _ => false,
    }
}

/// Where a service finds its database and the event topic: the part of
/// the command line both services share (`#[command(flatten)]`).
#[derive(Debug, Clone, clap::Args)]
pub struct Connections {
    /// PostgreSQL URL of the service's own database (migrated at start-up).
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,

    /// Kafka bootstrap servers, comma-separated.
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    pub kafka_brokers: String,

    /// The event topic.
    #[arg(long, env = "KAFKA_TOPIC", default_value = wallet_events::DEFAULT_TOPIC)]
    pub kafka_topic: String,
}

/// Logs to stderr, filtered by `RUST_LOG`, else `default_filter`; colours
/// only on a terminal (the harness sends stderr to a log file).
pub fn init_tracing(default_filter: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| default_filter.into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// A pool on `database_url`, migrated by `migrator`; retries while the
/// database does not answer yet.
pub async fn connect_and_migrate(
    database_url: &str,
    pool_size: u32,
    migrator: &Migrator,
) -> anyhow::Result<PgPool> {
    let pool = PgPoolOptions::new()
        .max_connections(pool_size)
        .acquire_timeout(Duration::from_millis(ACQUIRE_TIMEOUT_MS))
        // sqlx pings every connection it hands out by default: a round trip
        // before each transaction. A connection in steady use is known to
        // work; only one idle long enough to have gone stale is pinged (one
        // that broke in between fails its statement, which the caller
        // reports as the database being unavailable).
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for > Duration::from_millis(PING_IF_IDLE_MS) {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
        .connect_lazy(database_url)
        .context("DATABASE_URL is not a valid PostgreSQL URL")?;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(DATABASE_WAIT_MS);
    loop {
        match migrator.run(&pool).await {
            Ok(()) => return Ok(pool),
            Err(err) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(error = %err, "database not ready, retrying");
                tokio::time::sleep(Duration::from_millis(DATABASE_RETRY_MS)).await;
            }
            Err(err) => return Err(err).context("migrating the database"),
        }
    }
}

/// Serves `router` on `listener` (bound by the caller, so tests can use
/// port 0) until `shutdown` is cancelled, then lets requests in flight
/// finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Request spans and latency logs belong to the serving process, not to
    // the API: the simulator drives the routers in-process without them
    // (the layer was 7 % of a simulated seed's time).
    let router = router
        .layer(axum::middleware::from_fn(metrics::track_requests))
        .layer(tower_http::trace::TraceLayer::new_for_http());
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .context("serving HTTP")
}

/// The route's one path parameter as text, or `None` when its
/// percent-encoded bytes are not UTF-8. It never rejects: axum's own
/// rejection is a plain-text 400, and each service answers a bad segment
/// in its envelope with the code of what the segment should have been.
pub struct PathSegment(pub Option<String>);

impl PathSegment {
    /// The segment as a wallet id, recorded on the request's span as
    /// `wallet_id`; else what to show of it (a segment that is not text
    /// is no UUID either).
    pub fn wallet_id(&self) -> Result<uuid::Uuid, String> {
        let id = parse_wallet_id(self.0.as_deref().unwrap_or("(not UTF-8)"))?;
        tracing::Span::current().record("wallet_id", tracing::field::display(id));
        Ok(id)
    }
}

/// `text` as a wallet id, else its first 64 characters: what an
/// `invalid_wallet_id` answer shows of it.
pub fn parse_wallet_id(text: &str) -> Result<uuid::Uuid, String> {
    uuid::Uuid::parse_str(text).map_err(|_| text.chars().take(64).collect())
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for PathSegment {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        let path = axum::extract::Path::<String>::from_request_parts(parts, state).await;
        Ok(PathSegment(path.ok().map(|axum::extract::Path(text)| text)))
    }
}

/// Cancels `shutdown` on the first SIGTERM or SIGINT.
pub async fn shutdown_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("shutting down");
    shutdown.cancel();
}
