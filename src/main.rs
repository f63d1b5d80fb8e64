//! The `caly` command: serve calls, check and draw pipelines, replay recordings.

mod cli;

use std::process::ExitCode;

use clap::Parser as _;

/// With `--features dhat-heap`, every allocation is counted by dhat.
#[cfg(feature = "dhat-heap")]
#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

#[tokio::main]
async fn main() -> ExitCode {
    // Written to `dhat-heap.json` when dropped, as `caly` exits.
    #[cfg(feature = "dhat-heap")]
    let _profiler = dhat::Profiler::new_heap();
    let cli = cli::Cli::parse();
    caly::logging::init(caly::logging::LogFormat::from_env());
    cli.run().await
}
