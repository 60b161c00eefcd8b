use std::process::ExitCode;

use clap::Parser;
use consistency_checker::{Args, render_text, run};

/// Exit codes: the verdict is the CI gate, and "could not check" must never
/// look like "held".
const EXIT_HELD: u8 = 0;
const EXIT_VIOLATED: u8 = 1;
const EXIT_CHECKER_FAILED: u8 = 2;

#[tokio::main]
async fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(err) if !err.use_stderr() => {
            // --help and --version.
            let _ = err.print();
            return ExitCode::from(EXIT_HELD);
        }
        Err(err) => {
            // clap's message, without the usage block that follows it.
            let rendered = err.to_string();
            let message: Vec<&str> = rendered
                .lines()
                .map(str::trim)
                .take_while(|line| !line.is_empty())
                .collect();
            eprintln!("consistency-checker: {} (see --help)", message.join(" "));
            return ExitCode::from(EXIT_CHECKER_FAILED);
        }
    };
    let report = match run(&args).await {
        Ok(report) => report,
        Err(err) => {
            eprintln!("consistency-checker: {}", one_line(&err));
            return ExitCode::from(EXIT_CHECKER_FAILED);
        }
    };
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(json) => println!("{json}"),
            Err(err) => {
                eprintln!("consistency-checker: serializing the report: {err}");
                return ExitCode::from(EXIT_CHECKER_FAILED);
            }
        }
    } else {
        print!("{}", render_text(&report));
    }
    ExitCode::from(if report.passed {
        EXIT_HELD
    } else {
        EXIT_VIOLATED
    })
}

/// The error chain on one line. sqlx errors repeat their source in their
/// own message, so a cause already spelled out by its parent is skipped.
fn one_line(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let text = cause.to_string().replace('\n', " ");
        if parts
            .last()
            .is_some_and(|previous| previous.ends_with(&text))
        {
            continue;
        }
        parts.push(text);
    }
    parts.join(": ")
}
