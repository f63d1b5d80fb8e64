//! `caly pipeline`: check, draw and list what pipeline files may use.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};

use caly::engine::graph;
use caly::engine::registry::CompileOptions;

/// Check or draw pipeline files.
#[derive(Debug, Subcommand)]
pub(crate) enum PipelineCommand {
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
pub(crate) enum GraphFormat {
    Dot,
    Mermaid,
}

/// Runs the sub-command.
pub(crate) fn run(cmd: PipelineCommand) -> ExitCode {
    let registry = caly::call::registry();
    match cmd {
        PipelineCommand::Check { files } => {
            let mut failed = false;
            for file in &files {
                match graph::load(file, &registry, &CompileOptions::default()) {
                    Ok(g) => {
                        for w in g.warning_lines() {
                            println!("{w}");
                        }
                        println!(
                            "{}: ok ({} stages in {} tasks)",
                            file.display(),
                            g.nodes().len(),
                            g.tasks().len()
                        );
                    }
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
                let note = if k.info.tool {
                    " (tool kind: load tests, benches, replay)"
                } else {
                    ""
                };
                println!("{:<12} {}{note}", k.info.name, k.info.summary);
            }
            ExitCode::SUCCESS
        }
    }
}
