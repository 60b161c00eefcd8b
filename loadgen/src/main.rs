use clap::Parser;

/// mimalloc: the simulator allocates in small pieces at a high rate, and
/// glibc's allocator was a sixth of its time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    loadgen::main(loadgen::cli::Cli::parse())
}
