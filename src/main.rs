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
    /// Act as Exotel: N concurrent real-time calls against a running server, with a report of
    /// latency, late and dropped frames, and the server's CPU and memory per call.
    Simulate(SimulateArgs),
    /// Classify caller utterances: TEXT arguments, or one utterance per stdin line; one JSON
    /// object per line out: {"intent","confidence","entities","alternatives"}.
    Intent(IntentArgs),
    /// Apply the call-records database migrations (`serve` also does at start).
    Migrate(DbArgs),
    /// Manage REST API keys.
    #[command(subcommand)]
    Apikey(ApikeyCommand),
}

#[derive(Debug, clap::Args)]
struct DbArgs {
    /// `sqlite://FILE` or `postgres://…`.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://caly.db",
        hide_env_values = true
    )]
    database_url: String,
}

#[derive(Debug, Subcommand)]
enum ApikeyCommand {
    /// Create a key; it is printed once, as the last line of stdout, and only its hash is kept.
    Create {
        /// Who or what uses it.
        #[arg(long)]
        name: String,
        /// What it may do.
        #[arg(long, default_value = "read", value_parser = ["read", "write", "admin"])]
        scope: String,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Revoke a key by id.
    Revoke {
        /// The key's id (printed when it was created).
        id: String,
        #[command(flatten)]
        db: DbArgs,
    },
}

#[derive(Debug, clap::Args)]
struct IntentArgs {
    /// Utterances; none: read stdin, one per line.
    text: Vec<String>,
    /// A directory with lexicon.toml, numbers.toml and entities.toml (default: built in).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Print the cues behind each answer and the raw scores (to stderr).
    #[arg(long)]
    explain: bool,
    /// Fit the calibration (temperature, unknown bias, threshold) on a labelled JSONL file
    /// and print the values to put in lexicon.toml's [scoring].
    #[arg(long, value_name = "LABELLED.jsonl")]
    fit: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct SimulateArgs {
    /// The stream URL, e.g. ws://127.0.0.1:8080/v1/exotel/stream?sample-rate=8000
    #[arg(long)]
    url: String,
    /// Concurrent calls.
    #[arg(long, default_value_t = 10)]
    calls: usize,
    /// Caller audio: a WAV at the stream's rate (default: generated speech-like audio).
    #[arg(long)]
    audio: Option<PathBuf>,
    /// Seconds each call lasts.
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// Milliseconds of audio per media message.
    #[arg(long, default_value_t = 100)]
    chunk_ms: u32,
    /// Seconds over which call starts are spread.
    #[arg(long, default_value_t = 5.0)]
    stagger: f64,
    /// Speak over the bot as soon as a reply starts.
    #[arg(long)]
    barge_in: bool,
    /// Do not send DTMF latency probes.
    #[arg(long)]
    no_probes: bool,
    /// The server's pid, to report its CPU and memory per call.
    #[arg(long)]
    server_pid: Option<u32>,
    /// `user:password` for the stream (CALY_STREAM_AUTH on the server).
    #[arg(long, env = "CALY_STREAM_AUTH", hide_env_values = true)]
    auth: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Soak: first make this many calls one after another, sampling the server's memory and
    /// tasks (from its /metrics) with it idle, then the `--calls` concurrent ones.
    #[arg(long, default_value_t = 0)]
    sequential: usize,
    /// Soak: how many times to run the `--calls` concurrent batch after the sequential calls.
    #[arg(long, default_value_t = 1)]
    bursts: usize,
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
    caly::logging::init(caly::logging::LogFormat::from_env());
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
        Command::Simulate(args) => simulate(args).await,
        Command::Intent(args) => intent(args),
        Command::Migrate(db) => report(migrate(&db).await.map(|store| {
            println!("Migrations applied ({}).", store.backend().label());
        })),
        Command::Apikey(cmd) => report(apikey(cmd).await),
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

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn migrate(db: &DbArgs) -> anyhow::Result<caly::store::Store> {
    use anyhow::Context as _;
    let url = caly::store::redact_url(&db.database_url);
    let store = caly::store::Store::connect_with(&db.database_url, 2)
        .await
        .with_context(|| format!("cannot open {url}"))?;
    store.migrate().await.context("migration failed")?;
    Ok(store)
}

async fn apikey(cmd: ApikeyCommand) -> anyhow::Result<()> {
    match cmd {
        ApikeyCommand::Create { name, scope, db } => {
            let name = name.trim();
            anyhow::ensure!(
                !name.is_empty() && name.len() <= caly::store::keys::MAX_NAME,
                "--name must be 1 to {} characters",
                caly::store::keys::MAX_NAME
            );
            let scope: caly::store::keys::Scope = scope.parse().map_err(anyhow::Error::msg)?;
            let store = migrate(&db).await?;
            let key = store.create_api_key(name, scope).await?;
            println!(
                "Created API key {} ({name}, scope {scope}). It is shown once; keep it now:",
                key.id
            );
            println!("{}", key.secret);
        }
        ApikeyCommand::Revoke { id, db } => {
            let store = migrate(&db).await?;
            anyhow::ensure!(
                store.revoke_api_key(&id).await?,
                "no live API key with id {id}"
            );
            println!("Revoked {id}.");
        }
    }
    Ok(())
}

async fn simulate(args: SimulateArgs) -> ExitCode {
    let options = caly::simulate::SimulateOptions {
        url: args.url,
        calls: args.calls,
        audio: args.audio,
        duration: std::time::Duration::from_secs_f64(args.duration.max(0.1)),
        chunk_ms: args.chunk_ms.clamp(10, 1000),
        stagger: std::time::Duration::from_secs_f64(args.stagger.max(0.0)),
        barge_in: args.barge_in,
        probes: !args.no_probes,
        server_pid: args.server_pid,
        auth: args.auth,
    };
    if args.sequential > 0 {
        return match caly::simulate::soak(options, args.sequential, args.bursts).await {
            Ok(report) => {
                if args.json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&report).unwrap_or_default()
                    );
                } else {
                    print!("{}", report.render());
                }
                let failed = report.sequential_failed
                    + report.concurrent.iter().map(|c| c.failed).sum::<usize>();
                if !report.tasks_back_to_baseline() {
                    eprintln!("the server's tasks did not return to their baseline");
                }
                if failed == 0 && report.tasks_back_to_baseline() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match caly::simulate::run(options).await {
        Ok(report) => {
            if args.json {
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
            if report.failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
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

fn intent(args: IntentArgs) -> ExitCode {
    use caly::intent::{Classifier, cli};
    use std::io::Write as _;
    let classifier = match &args.data {
        Some(dir) => Classifier::from_dir(dir).map(std::sync::Arc::new),
        None => Classifier::builtin(),
    };
    let classifier = match classifier {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(path) = &args.fit {
        let data = match std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|t| cli::read_labelled(&t))
        {
            Ok(d) => d,
            Err(e) => {
                eprintln!("error: {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        };
        let before = cli::evaluate(&classifier, &data);
        let f = cli::fit(&classifier, &data);
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "{} utterances; now: accuracy {:.3}, ECE {:.3}",
            data.len(),
            before.0,
            before.1
        );
        let _ = writeln!(
            out,
            "fitted: accuracy {:.3}, ECE {:.3}, mean log-likelihood {:.3}",
            f.accuracy, f.ece, f.log_likelihood
        );
        let _ = writeln!(
            out,
            "[scoring]\ntemperature = {:.1}\nunknown_bias = {:.1}\nmin_confidence = {:.2}",
            f.temperature, f.unknown_bias, f.min_confidence
        );
        return ExitCode::SUCCESS;
    }
    if args.explain {
        for text in &args.text {
            let s = classifier.explain(text);
            eprintln!("{text}");
            for (intent, cue, negated) in &s.cues {
                eprintln!(
                    "  {intent:<20} {cue}{}",
                    if *negated { "  (negated)" } else { "" }
                );
            }
            let mut scored: Vec<(f32, caly::intent::Intent)> = caly::intent::INTENTS
                .iter()
                .map(|i| (s.score[*i as usize], *i))
                .filter(|(v, _)| *v > 0.0)
                .collect();
            scored.sort_by(|a, b| b.0.total_cmp(&a.0));
            eprintln!("  scores: {scored:?}");
        }
    }
    let stdout = std::io::stdout();
    let result = if args.text.is_empty() {
        cli::run_lines(&classifier, std::io::stdin().lock(), stdout.lock())
    } else {
        let joined = args.text.join("\n");
        cli::run_lines(&classifier, joined.as_bytes(), stdout.lock())
    };
    let _ = stdout.lock().flush();
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
