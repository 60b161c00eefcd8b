//! How long rendering `report.html` takes for a 10-minute run, and how big
//! the page is: a synthetic run directory (600 s, four endpoints, one fault
//! of each kind, 100 responses per endpoint and second) rendered a few
//! times. `cargo bench -p reports` prints the figures; nothing is asserted
//! (the machines are noisy).

use std::time::{Duration, Instant};

use reports::synthetic::{Fault, SyntheticRun};
use run_log::FaultKind;

const RUNS: usize = 5;

fn main() {
    let scratch = tempfile::tempdir().expect("a temporary directory");
    let dir = scratch.path().join("ten-minutes");
    let faults = FaultKind::ALL
        .iter()
        .enumerate()
        .map(|(index, kind)| Fault {
            kind: *kind,
            at_s: 60 + 100 * index as u64,
            hold_s: 10,
        })
        .collect();
    let mut run = SyntheticRun::new(
        600,
        &[
            ("GET /wallets/{id}", 8),
            ("GET /wallets/{id}/history", 9),
            ("POST /wallets/{id}/fund", 15),
            ("POST /wallets/{id}/transfer", 20),
        ],
        faults,
        32,
    );
    run.ok_per_second = 100;
    run.write(&dir).expect("writing the run directory");
    let hlog = std::fs::metadata(dir.join("latency.hlog"))
        .map(|m| m.len())
        .unwrap_or(0);

    let mut times: Vec<Duration> = Vec::new();
    let mut bytes = 0;
    for _ in 0..RUNS {
        let started = Instant::now();
        let written = reports::write_run_report(&dir, None).expect("rendering");
        times.push(started.elapsed());
        bytes = written.bytes;
    }
    times.sort();
    println!(
        "render a 10-minute run (600 s x 4 endpoints, latency.hlog {:.0} KiB): min {:.0} ms, median {:.0} ms, max {:.0} ms over {RUNS} renders; report.html {:.0} KiB",
        hlog as f64 / 1024.0,
        times[0].as_secs_f64() * 1000.0,
        times[RUNS / 2].as_secs_f64() * 1000.0,
        times[RUNS - 1].as_secs_f64() * 1000.0,
        bytes as f64 / 1024.0
    );
    if let Some(peak) = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(str::to_owned)
        })
    {
        println!(
            "peak resident memory of the bench process: {}",
            peak.trim_start_matches("VmHWM:").trim()
        );
    }
}
