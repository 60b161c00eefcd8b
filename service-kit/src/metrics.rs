//! Prometheus metrics, as both services expose them at `/metrics`: the
//! `metrics` facade with its Prometheus exporter, installed by a serving
//! process only. The simulator runs the same code with no recorder, so
//! every `metrics::counter!` there is a no-op.
//!
//! Each service records its own figures (relay rounds, events applied);
//! this module gives what they share: the recorder, request latency by
//! route and status ([`track_requests`]), the database pool's usage
//! ([`record_pool`]) and the `/metrics` route, which lets the service
//! sample what is cheaper read at scrape time than kept up to date (a
//! backlog query, the pool) before it renders.

use std::{future::Future, sync::Arc, time::Duration};

use anyhow::Context;
use axum::{
    Router,
    extract::{MatchedPath, Request},
    http::{StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::get,
};
use futures::future::BoxFuture;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sqlx::PgPool;

/// Request latency: `http_request_duration_seconds{method,route,status}`.
pub const HTTP_DURATION: &str = "http_request_duration_seconds";
/// Latency buckets, in seconds: a transfer takes milliseconds, a stalled
/// one seconds.
const HTTP_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// How often the exporter drops what it no longer needs.
const UPKEEP_MS: u64 = 5_000;

/// Installs the process's Prometheus recorder and keeps it tidy; returns
/// the handle `/metrics` renders from. Call once, from `main`'s runtime.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(HTTP_DURATION.into()), &HTTP_BUCKETS)
        .context("histogram buckets")?
        .install_recorder()
        .context("installing the metrics recorder")?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(UPKEEP_MS));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

/// Middleware: times every request and records it under the route's
/// pattern (`/wallets/{id}/transfer`, never the id itself, so the series
/// stay few), its method and its status. A path no route matches is
/// recorded as `unmatched`.
pub async fn track_requests(request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::histogram!(HTTP_DURATION, "method" => method, "route" => route, "status" => status)
        .record(started.elapsed().as_secs_f64());
    response
}

/// The pool's connections: `db_pool_connections{state="idle"|"in_use"}`
/// and `db_pool_max_connections`.
pub fn record_pool(pool: &PgPool) {
    let size = pool.size();
    let idle = pool.num_idle() as u32;
    metrics::gauge!("db_pool_connections", "state" => "idle").set(idle);
    metrics::gauge!("db_pool_connections", "state" => "in_use").set(size.saturating_sub(idle));
    metrics::gauge!("db_pool_max_connections").set(pool.options().get_max_connections());
}

/// What a service samples right before each scrape.
pub type Sampler = Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

/// Wraps an async closure as a [`Sampler`].
pub fn sampler<F, Fut>(sample: F) -> Sampler
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    Arc::new(move || Box::pin(sample()))
}

/// `GET /metrics`: runs `sample`, then renders every metric in the
/// Prometheus text format.
pub fn route(handle: PrometheusHandle, sample: Sampler) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let (handle, sample) = (handle.clone(), sample.clone());
            async move {
                sample().await;
                (
                    StatusCode::OK,
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    handle.render(),
                )
                    .into_response()
            }
        }),
    )
}
