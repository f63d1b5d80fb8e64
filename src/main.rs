//! The `caly` command: serve calls, check and draw pipelines, replay recordings.

mod cli;

use std::process::ExitCode;

use clap::Parser as _;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    caly::logging::init(caly::logging::LogFormat::from_env());
    cli.run().await
}
