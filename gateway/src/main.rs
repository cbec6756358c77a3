//! The `stockgate` binary: parse the command line, set up logging, call into the library.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match gateway::cli::run(gateway::cli::Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // The cause chain on one line; no backtrace for what is a user-facing error.
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
