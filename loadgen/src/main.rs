use clap::Parser;

fn main() -> std::process::ExitCode {
    loadgen::main(loadgen::cli::Cli::parse())
}
