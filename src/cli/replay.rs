//! `caly replay`: a recording through a pipeline offline, with a timeline and per-stage cost.

use std::path::PathBuf;
use std::process::ExitCode;

use caly::devtools::replay::{self, ReplayOptions};
use caly::engine::pipeline::Outcome;

/// A recording and the pipeline to run it through.
#[derive(Debug, clap::Args)]
pub(crate) struct ReplayArgs {
    /// A `.wav` file or a `.jsonl` capture of Exotel messages.
    capture: PathBuf,
    /// The pipeline to run it through.
    #[arg(long, default_value = "pipelines/front_half.toml")]
    pipeline: PathBuf,
    /// Audio rate of a capture whose `start` does not say (Exotel's `?sample-rate=`).
    #[arg(long)]
    sample_rate: Option<u32>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Replays the recording and prints the report; fails if the pipeline failed.
pub(crate) async fn run(args: ReplayArgs) -> ExitCode {
    let options = ReplayOptions {
        pipeline: args.pipeline,
        sample_rate: args.sample_rate,
    };
    // The feeder runs as a task on the runtime's workers, as the transport's socket loop does
    // in `caly serve`, not on the thread that blocks on `main`: from there every chunk handed
    // to the pipeline's task was a wake-up across threads (a futex call and two context
    // switches), a cost of this tool and not of the pipeline it measures.
    let capture = args.capture;
    let replayed = tokio::spawn(async move { replay::run(&capture, &options).await }).await;
    let report = match replayed {
        Ok(Ok(report)) => report,
        Ok(Err(e)) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("error: the replay stopped: {e}");
            return ExitCode::FAILURE;
        }
    };
    let printed = super::print_report(&report, args.json, |r| r.render());
    if !printed || matches!(report.outcome, Outcome::Failed { .. }) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
