//! The `caly` command: serve calls, check and draw pipelines, replay recordings.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use caly::app::{App, shutdown_signal};
use caly::graph;
use caly::registry::{CompileOptions, Registry};
use caly::replay::{self, ReplayOptions};
use caly::settings::ServeArgs;

/// Caly: a real-time voice-agent engine for phone calls.
#[derive(Debug, Parser)]
#[command(name = "caly", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (calls, webhooks, REST).
    Serve(ServeArgs),
    /// Check or draw pipeline files.
    #[command(subcommand)]
    Pipeline(PipelineCommand),
    /// Run a WAV file or an Exotel capture (JSONL) through a pipeline offline, as fast as
    /// possible, and print a timeline with per-stage cost.
    Replay {
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
    },
}

#[derive(Debug, Subcommand)]
enum PipelineCommand {
    /// Report every problem in each file (exit 1 if any).
    Check {
        /// Pipeline files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the compiled graph with formats, rings and latency.
    Graph {
        /// A pipeline file.
        file: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
        format: GraphFormat,
    },
    /// List the stage kinds this build knows.
    Kinds,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum GraphFormat {
    Dot,
    Mermaid,
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match cli.command {
        Command::Serve(args) => match serve(args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Pipeline(cmd) => pipeline(cmd),
        Command::Replay {
            capture,
            pipeline,
            sample_rate,
            json,
        } => {
            let options = ReplayOptions {
                pipeline,
                sample_rate,
            };
            match replay::run(&capture, &options).await {
                Ok(report) => {
                    if json {
                        match serde_json::to_string_pretty(&report) {
                            Ok(s) => println!("{s}"),
                            Err(e) => {
                                eprintln!("error: {e}");
                                return ExitCode::FAILURE;
                            }
                        }
                    } else {
                        print!("{}", report.render());
                    }
                    if matches!(report.outcome, caly::pipeline::Outcome::Failed { .. }) {
                        ExitCode::FAILURE
                    } else {
                        ExitCode::SUCCESS
                    }
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let app = App::build(&args).await?;
    app.run_until(shutdown_signal()).await
}

fn pipeline(cmd: PipelineCommand) -> ExitCode {
    let registry = Registry::with_builtin();
    match cmd {
        PipelineCommand::Check { files } => {
            let mut failed = false;
            for file in &files {
                match graph::load(file, &registry, &CompileOptions::default()) {
                    Ok(g) => println!(
                        "{}: ok ({} stages in {} tasks)",
                        file.display(),
                        g.nodes().len(),
                        g.tasks().len()
                    ),
                    Err(e) => {
                        failed = true;
                        println!("{e}");
                    }
                }
            }
            if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        PipelineCommand::Graph { file, format } => {
            match graph::load(&file, &registry, &CompileOptions::default()) {
                Ok(g) => {
                    match format {
                        GraphFormat::Dot => print!("{}", g.to_dot()),
                        GraphFormat::Mermaid => print!("{}", g.to_mermaid()),
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    println!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
        PipelineCommand::Kinds => {
            for k in registry.kinds() {
                let note = if k.info.test_only { " (test kind)" } else { "" };
                println!("{:<12} {}{note}", k.info.name, k.info.summary);
            }
            ExitCode::SUCCESS
        }
    }
}
