use clap::Parser;

/// mimalloc: the simulator allocates in small pieces at a high rate, and
/// glibc's allocator was a sixth of its time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc 3's `mimalloc.h` (the Rust bindings
/// do not name it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() -> std::process::ExitCode {
    let cli = loadgen::cli::Cli::parse();
    if matches!(cli.command, loadgen::cli::Command::Sim(_)) {
        // A sweep frees each seed's world and builds the next one of the
        // same size: keeping freed memory instead of returning it to the
        // OS spares a page fault and a zeroed page per reuse (13x fewer
        // faults, about 4 % of a sweep's time).
        // SAFETY: an FFI call with plain integer arguments that sets a
        // process-wide allocator option before any thread is started;
        // mimalloc reads its options atomically. The project's only unsafe.
        #[allow(unsafe_code)]
        unsafe {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1)
        };
    }
    loadgen::main(cli)
}
