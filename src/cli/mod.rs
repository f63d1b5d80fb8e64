//! The command line: one file per sub-command, each a thin layer over the library.

mod db;
mod intent;
mod pipeline;
mod replay;
mod simulate;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use caly::app::{App, shutdown_signal};
use caly::settings::ServeArgs;

/// Caly: a real-time voice-agent engine for phone calls.
#[derive(Debug, Parser)]
#[command(name = "caly", version, about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (calls, webhooks, REST).
    Serve(ServeArgs),
    /// Check or draw pipeline files.
    #[command(subcommand)]
    Pipeline(pipeline::PipelineCommand),
    /// Run a WAV file or an Exotel capture (JSONL) through a pipeline offline, as fast as
    /// possible, and print a timeline with per-stage cost.
    Replay(replay::ReplayArgs),
    /// Act as Exotel: N concurrent real-time calls against a running server, with a report of
    /// latency, late and dropped frames, and the server's CPU and memory per call.
    Simulate(simulate::SimulateArgs),
    /// Classify caller utterances: TEXT arguments, or one utterance per stdin line; one JSON
    /// object per line out: {"intent","confidence","entities","alternatives"}.
    Intent(intent::IntentArgs),
    /// Apply the call-records database migrations (`serve` also does at start).
    Migrate(db::DbArgs),
    /// Manage REST API keys.
    #[command(subcommand)]
    Apikey(db::ApikeyCommand),
    /// Erase the personal data of every call from a number (transcripts, the number itself,
    /// entities, action wording); counts and timings stay for KPIs.
    Erase(db::EraseArgs),
}

impl Cli {
    /// Runs the sub-command.
    pub(crate) async fn run(self) -> ExitCode {
        match self.command {
            Command::Serve(args) => report(serve(args).await),
            Command::Pipeline(cmd) => pipeline::run(cmd),
            Command::Replay(args) => replay::run(args).await,
            Command::Simulate(args) => simulate::run(args).await,
            Command::Intent(args) => intent::run(args),
            Command::Migrate(db) => report(db::migrate(&db).await.map(|store| {
                println!("Migrations applied ({}).", store.backend().label());
            })),
            Command::Apikey(cmd) => report(db::apikey(cmd).await),
            Command::Erase(args) => report(db::erase(args).await),
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let app = App::build(&args).await?;
    app.run_until(shutdown_signal()).await
}

/// Prints a report as pretty JSON or as `render` gives it; `false` if it could not be.
fn print_report<R: serde::Serialize>(
    report: &R,
    json: bool,
    render: impl FnOnce(&R) -> String,
) -> bool {
    if !json {
        print!("{}", render(report));
        return true;
    }
    match serde_json::to_string_pretty(report) {
        Ok(s) => {
            println!("{s}");
            true
        }
        Err(e) => {
            eprintln!("error: {e}");
            false
        }
    }
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
