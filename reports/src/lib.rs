//! Self-contained HTML reports of a run directory.
//!
//! [`write_run_report`] renders `RUN_DIR/report.html`: verdict, run facts,
//! latency over time with fault bands, throughput, history lag with the
//! convergence point, percentile distributions, the endpoint table, errors
//! and the recovery after each fault. [`write_comparison`] renders two runs
//! side by side. Everything comes from the run directory's files
//! ([`run_dir`]); the page carries its style, its charting library (Apache
//! ECharts, vendored under `vendor/`), its data and its script inline, so
//! it opens offline in any browser.
//!
//! The numbers are pure functions ([`latency`], [`recovery`], [`model`],
//! [`compare::deltas`]); the pages ([`page`], [`compare`]) only lay them
//! out.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

pub mod bench;
pub mod charts;
pub mod compare;
pub mod faults;
pub mod latency;
pub mod model;
pub mod page;
pub mod recovery;
pub mod run_dir;
pub mod synthetic;

pub use run_dir::{RunData, RunDirError};

/// A page written to disk.
#[derive(Debug, Clone)]
pub struct Written {
    pub path: PathBuf,
    pub bytes: usize,
    /// Reading the run directory and rendering, without the write.
    pub took: Duration,
}

/// The report of one run as HTML.
pub fn render_run(dir: &Path) -> Result<String, RunDirError> {
    let data = RunData::load(dir)?;
    Ok(page::run_page(&model::RunModel::new(&data)).into_string())
}

/// Renders `dir/report.html` (or `out`).
pub fn write_run_report(dir: &Path, out: Option<&Path>) -> anyhow::Result<Written> {
    let started = Instant::now();
    let html = render_run(dir)?;
    let path = out
        .map(Path::to_path_buf)
        .unwrap_or_else(|| dir.join("report.html"));
    write(path, html, started)
}

/// Renders `dir/bench.html` from the bench's `dir/summary.json`.
pub fn write_bench_report(dir: &Path) -> anyhow::Result<Written> {
    use anyhow::Context;
    let started = Instant::now();
    let path = dir.join("summary.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let summary: run_log::bench::BenchSummary =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let html = bench::bench_page(&summary).into_string();
    write(dir.join("bench.html"), html, started)
}

/// The comparison page of two runs as HTML.
pub fn render_comparison(base: &Path, new: &Path) -> Result<String, RunDirError> {
    let (base, new) = (RunData::load(base)?, RunData::load(new)?);
    Ok(compare::compare_page(&base, &new).into_string())
}

/// Renders the comparison to `out`, by default `NEW/compare-<BASE name>.html`.
pub fn write_comparison(base: &Path, new: &Path, out: Option<&Path>) -> anyhow::Result<Written> {
    let started = Instant::now();
    let html = render_comparison(base, new)?;
    let path = match out {
        Some(path) => path.to_path_buf(),
        None => {
            let name = base
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "base".to_owned());
            new.join(format!("compare-{name}.html"))
        }
    };
    write(path, html, started)
}

fn write(path: PathBuf, html: String, started: Instant) -> anyhow::Result<Written> {
    let took = started.elapsed();
    std::fs::write(&path, &html)
        .map_err(|err| anyhow::anyhow!("writing {}: {err}", path.display()))?;
    Ok(Written {
        path,
        bytes: html.len(),
        took,
    })
}
