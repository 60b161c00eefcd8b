//! Reading a run directory (docs/run-directory.md): everything a report
//! shows comes from these files, so a run can be re-rendered or compared
//! long after its processes are gone.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use run_log::checker::Report;
use run_log::{
    ChaosEvent,
    service_metrics::MetricsSample,
    summary::{LagSecond, RunSummary, TimelinePoint},
};
use serde::de::DeserializeOwned;

use crate::latency::{self, EndpointLatency};

#[derive(Debug, thiserror::Error)]
pub enum RunDirError {
    #[error(
        "{0} is not a run directory: it has no summary.json (a run writes it once the load \
         and the checks are done; an interrupted run has none)"
    )]
    NotARun(PathBuf),
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The files of one run, parsed. Only `summary.json` is required; a
/// missing optional file leaves its section of the report saying so.
#[derive(Debug)]
pub struct RunData {
    pub dir: PathBuf,
    pub summary: RunSummary,
    /// `checker.json`: the verdict with its evidence.
    pub checker: Option<Report>,
    /// `timeline.json`: outcomes per second and endpoint.
    pub timeline: Vec<TimelinePoint>,
    /// `chaos.jsonl`.
    pub chaos: Vec<ChaosEvent>,
    /// `lag.json`.
    pub lag: Option<Vec<LagSecond>>,
    /// `metrics.jsonl`: the services' own backlog and lag.
    pub service_metrics: Option<Vec<MetricsSample>>,
    /// `latency.hlog`, by tag.
    pub latency: BTreeMap<String, EndpointLatency>,
    /// Files the report would have used but the directory lacks.
    pub missing: Vec<&'static str>,
}

impl RunData {
    pub fn load(dir: &Path) -> Result<Self, RunDirError> {
        if !dir.join("summary.json").is_file() {
            return Err(RunDirError::NotARun(dir.to_path_buf()));
        }
        let mut missing = Vec::new();
        let summary = read_json(&dir.join("summary.json"))?;
        let checker = optional(dir, "checker.json", &mut missing, read_json)?;
        let timeline = optional(dir, "timeline.json", &mut missing, read_json)?.unwrap_or_default();
        let chaos = optional(dir, "chaos.jsonl", &mut missing, |path| {
            run_log::read_jsonl(path).map_err(|err| RunDirError::Invalid {
                path: path.to_path_buf(),
                message: err.to_string(),
            })
        })?
        .unwrap_or_default();
        let lag = optional(dir, "lag.json", &mut missing, read_json)?;
        // Only a live run has services to scrape (not a simulated one), so
        // its absence is not a gap.
        let service_metrics = optional(dir, "metrics.jsonl", &mut Vec::new(), |path| {
            run_log::read_jsonl(path).map_err(|err| RunDirError::Invalid {
                path: path.to_path_buf(),
                message: err.to_string(),
            })
        })?;
        let latency = optional(dir, "latency.hlog", &mut missing, |path| {
            let bytes = std::fs::read(path).map_err(|source| RunDirError::Io {
                path: path.to_path_buf(),
                source,
            })?;
            latency::read_interval_log(&bytes).map_err(|err| RunDirError::Invalid {
                path: path.to_path_buf(),
                message: err.to_string(),
            })
        })?
        .unwrap_or_default();
        Ok(Self {
            dir: dir.to_path_buf(),
            summary,
            checker,
            timeline,
            chaos,
            lag,
            service_metrics,
            latency,
            missing,
        })
    }

    /// The directory's own name: `<time>-<scenario>-seed<seed>`.
    pub fn name(&self) -> String {
        self.dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.dir.display().to_string())
    }

    /// An endpoint's interval histograms, found by its log tag.
    pub fn latency_of(&self, endpoint: &str) -> Option<&EndpointLatency> {
        self.latency.get(&run_log::latency::tag(endpoint))
    }
}

fn optional<T>(
    dir: &Path,
    file: &'static str,
    missing: &mut Vec<&'static str>,
    read: impl FnOnce(&Path) -> Result<T, RunDirError>,
) -> Result<Option<T>, RunDirError> {
    let path = dir.join(file);
    if path.is_file() {
        read(&path).map(Some)
    } else {
        missing.push(file);
        Ok(None)
    }
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, RunDirError> {
    let text = std::fs::read_to_string(path).map_err(|source| RunDirError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|err| RunDirError::Invalid {
        path: path.to_path_buf(),
        message: err.to_string(),
    })
}
