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

async fn write(
    mut out: BufWriter<std::fs::File>,
    mut records: mpsc::UnboundedReceiver<OpRecord>,
) -> anyhow::Result<()> {
    while let Some(record) = records.recv().await {
        serde_json::to_writer(&mut out, &record)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(())
}
