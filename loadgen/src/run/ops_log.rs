//! `ops.jsonl`, the operation log: the load and the set-up hand finished
//! operations to an [`OpsSink`]; one writer task appends them as JSON
//! lines. A record the writer could not take is counted, and a run that
//! lost any is not judged: the checker would miss operations.

use std::{
    io::{BufWriter, Write},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, bail};
use run_log::OpRecord;
use tokio::{sync::mpsc, task::JoinHandle};

/// Where finished operations go; clones share the log.
#[derive(Clone)]
pub struct OpsSink {
    records: mpsc::UnboundedSender<OpRecord>,
    lost: Arc<AtomicU64>,
}

impl OpsSink {
    pub fn record(&self, record: OpRecord) {
        if self.records.send(record).is_err() {
            // The writer stopped; its error ends the run, and this says
            // how much it missed.
            self.lost.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The writer of `ops.jsonl` and the first sink to it.
pub struct OpsLog {
    sink: OpsSink,
    writer: JoinHandle<anyhow::Result<()>>,
}

impl OpsLog {
    pub fn create(run_dir: &Path) -> anyhow::Result<OpsLog> {
        let path = run_dir.join("ops.jsonl");
        let file =
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let (records, receiver) = mpsc::unbounded_channel();
        let writer = tokio::spawn(write(BufWriter::new(file), receiver));
        Ok(OpsLog {
            sink: OpsSink {
                records,
                lost: Arc::new(AtomicU64::new(0)),
            },
            writer,
        })
    }

    pub fn sink(&self) -> OpsSink {
        self.sink.clone()
    }

    /// Waits until every record of every sink (all dropped by now) is on
    /// disk; an error if the writer failed or any record was lost.
    pub async fn finish(self) -> anyhow::Result<()> {
        let lost = self.sink.lost.clone();
        drop(self.sink);
        self.writer.await.context("the ops.jsonl writer")??;
        let lost = lost.load(Ordering::Relaxed);
        if lost > 0 {
            bail!("{lost} operation records never reached ops.jsonl");
        }
        Ok(())
    }
}

/// How often the writer takes what arrived. Waiting on the channel would
/// wake the writer (and often park and wake a thread) once per operation:
/// at a thousand operations a second that was a sizeable share of the load
/// generator's CPU. Taken in batches, a send only queues.
const WRITE_EVERY: Duration = Duration::from_millis(50);
/// Records taken per batch at most, so a backlog is written in steps.
const WRITE_BATCH_MAX: usize = 4096;

async fn write(
    mut out: BufWriter<std::fs::File>,
    mut records: mpsc::UnboundedReceiver<OpRecord>,
) -> anyhow::Result<()> {
    let mut batch = Vec::with_capacity(WRITE_BATCH_MAX);
    loop {
        if records.is_empty() && !records.is_closed() {
            tokio::time::sleep(WRITE_EVERY).await;
            continue;
        }
        // Ready at once: records wait, or every sender is gone.
        if records.recv_many(&mut batch, WRITE_BATCH_MAX).await == 0 {
            break;
        }
        for record in batch.drain(..) {
            serde_json::to_writer(&mut out, &record)?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use run_log::{OpKind, Outcome};

    use super::*;

    fn record(op_id: u64) -> OpRecord {
        OpRecord {
            op_id,
            kind: OpKind::GetWallet,
            wallet_index: Some(0),
            to_wallet_index: None,
            wallet_id: None,
            to_wallet_id: None,
            amount: None,
            idempotency_key: None,
            outcome: Outcome::Ok,
            status: Some(200),
            error_code: None,
            intended_at: chrono::DateTime::UNIX_EPOCH,
            latency_us: 1,
            attempts: Vec::new(),
        }
    }

    /// Records from several sinks, sent in bursts and after pauses longer
    /// than the writer's interval, all reach the file, each once, in the
    /// order each sink sent them; `finish` returns once the last is there.
    #[tokio::test]
    async fn every_record_reaches_the_file_once() {
        let dir = tempfile::tempdir().unwrap();
        let log = OpsLog::create(dir.path()).unwrap();
        let sinks = [log.sink(), log.sink()];
        for round in 0..3u64 {
            for (s, sink) in sinks.iter().enumerate() {
                for i in 0..2_500u64 {
                    sink.record(record(round * 10_000 + s as u64 * 5_000 + i));
                }
            }
            tokio::time::sleep(WRITE_EVERY * 2).await;
        }
        drop(sinks);
        log.finish().await.unwrap();
        let text = std::fs::read_to_string(dir.path().join("ops.jsonl")).unwrap();
        let ids: Vec<u64> = text
            .lines()
            .map(|line| serde_json::from_str::<OpRecord>(line).unwrap().op_id)
            .collect();
        assert_eq!(ids.len(), 15_000, "every record, once");
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 15_000, "no record twice");
        for s in 0..2u64 {
            let own: Vec<u64> = ids
                .iter()
                .copied()
                .filter(|id| id % 10_000 / 5_000 == s)
                .collect();
            assert!(own.is_sorted(), "sink {s}'s records in the order sent");
        }
    }
}
