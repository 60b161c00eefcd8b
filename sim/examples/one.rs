fn main() {
    let seed: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let config = sim::SimConfig::standard();
    let started = std::time::Instant::now();
    let outcome = sim::run_seed(seed, &config, None);
    println!(
        "seed {seed}: passed {} violated {:?} panic {:?} sim {:?} real {:?} polls {} events {} ops {} hash {:x}",
        outcome.passed(),
        outcome.violated(),
        outcome.panic,
        outcome.simulated,
        started.elapsed(),
        outcome.polls,
        outcome.trace_events,
        outcome.ops.len(),
        outcome.trace_hash
    );
    println!("{:?}", outcome.counters);
    println!("{:?}", outcome.convergence);
    if let Some(report) = &outcome.report {
        println!("{}", consistency_checker::render_text(report));
    }
}
