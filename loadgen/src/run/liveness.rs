//! The liveness phase: heal every process, then wait (up to the bound)
//! until the outbox is drained and history holds an entry for every outbox
//! row, none parked. How it ended is the checker's `converged-in-time`.

use std::time::{Duration, Instant};

use anyhow::Context;
use harness::system::System;
use run_log::summary::Convergence;
use tokio_util::sync::CancellationToken;

use super::safety::Load;

/// How often convergence is polled.
const CONVERGE_POLL_MS: u64 = 250;

pub async fn run(
    system: &mut System,
    bound: Duration,
    load: &mut Load,
    interrupted: &CancellationToken,
) -> anyhow::Result<Convergence> {
    println!(
        "healing every process, then waiting for history to converge (bound {}) ...",
        humantime::format_duration(bound)
    );
    chaos::runner::heal_all(system, Some(&mut load.chaos_log)).await?;
    let started_offset_ms = load.offset_ms();
    let mut convergence = converge(system, bound, interrupted).await?;
    convergence.started_offset_ms = Some(started_offset_ms);
    println!(
        "{} in {:.1} s",
        if convergence.converged {
            "converged"
        } else {
            "NOT converged"
        },
        convergence.took_ms as f64 / 1000.0
    );
    Ok(convergence)
}

/// Polls both databases until history has caught up or the bound passed.
async fn converge(
    system: &System,
    bound: Duration,
    interrupted: &CancellationToken,
) -> anyhow::Result<Convergence> {
    let started = Instant::now();
    let mut wallet_db = connect(&system.wallet_db).await?;
    let mut history_db = connect(&system.history_db).await?;
    loop {
        // A failed query (a database restarting) reads as not yet.
        let (unpublished, outbox_rows): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE published_at IS NULL), count(*) FROM outbox",
        )
        .fetch_one(&mut wallet_db)
        .await
        .unwrap_or((-1, -1));
        let (history, parked): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM history_entries), (SELECT count(*) FROM parked_events)",
        )
        .fetch_one(&mut history_db)
        .await
        .unwrap_or((-1, -1));
        let converged =
            unpublished == 0 && parked == 0 && outbox_rows >= 0 && history >= outbox_rows;
        let out_of_time = started.elapsed() > bound || interrupted.is_cancelled();
        if !converged && out_of_time {
            println!(
                "  outbox unpublished {unpublished} of {outbox_rows}, history {history}, parked {parked}"
            );
        }
        if converged || out_of_time {
            return Ok(Convergence {
                converged,
                took_ms: started.elapsed().as_millis() as u64,
                bound_ms: bound.as_millis() as u64,
                started_offset_ms: None,
            });
        }
        tokio::time::sleep(Duration::from_millis(CONVERGE_POLL_MS)).await;
    }
}

pub async fn connect(url: &str) -> anyhow::Result<sqlx::PgConnection> {
    <sqlx::PgConnection as sqlx::Connection>::connect(url)
        .await
        .with_context(|| format!("connecting to {url}"))
}
