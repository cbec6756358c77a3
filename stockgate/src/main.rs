//! The `stockgate` binary: set up logging, parse the command line, run it (`cli`).

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    // `STOCKGATE_LOG_FORMAT=json`: one JSON object per line (containers, log pipelines).
    if std::env::var("STOCKGATE_LOG_FORMAT").is_ok_and(|f| f == "json") {
        logs.json().init();
    } else {
        logs.init();
    }
    match stockgate::cli::run(stockgate::cli::Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // The cause chain on one line; no backtrace for what is a user-facing error.
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
