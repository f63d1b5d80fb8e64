//! `caly intent`: classify caller utterances, explain a decision, fit the calibration.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use caly::intent::{Classifier, INTENTS, Intent, TrainConfig, cli};

/// Classify caller utterances.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct IntentArgs {
    #[command(subcommand)]
    command: Option<IntentCommand>,
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

#[derive(Debug, clap::Subcommand)]
enum IntentCommand {
    /// Train the weights on data/intent/train.jsonl and data/intent/corpus/*.jsonl (each file
    /// a batch), fit the temperature on batches left out in turn, write model.bin, and score
    /// data/intent/heldout/*.jsonl, which training never reads.
    Train(TrainArgs),
    /// Score labelled JSONL files: accuracy, per language, per intent, entities, calibration.
    Eval(EvalArgs),
}

#[derive(Debug, clap::Args)]
struct TrainArgs {
    /// The data directory (lexicon, corpus, held-out batches).
    #[arg(long, default_value = "data/intent")]
    data: PathBuf,
    /// Where to write the weights (default: DATA/model.bin).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Shuffling seed.
    #[arg(long, default_value_t = TrainConfig::default().seed)]
    seed: u64,
    /// Passes over the data.
    #[arg(long, default_value_t = TrainConfig::default().epochs)]
    epochs: usize,
    /// Initial learning rate.
    #[arg(long, default_value_t = TrainConfig::default().rate)]
    rate: f32,
    /// L2 penalty per update.
    #[arg(long, default_value_t = TrainConfig::default().l2)]
    l2: f32,
    /// log2 of the hash buckets.
    #[arg(long, default_value_t = TrainConfig::default().bits, value_parser = clap::value_parser!(u32).range(8..=22))]
    bits: u32,
    /// Add the rules' probabilities to the inputs (the shipped model does without: it scores
    /// higher on the held-out batches alone).
    #[arg(long)]
    with_rules: bool,
    /// Leave the lexicon's cues out of the inputs (the n-grams alone, to compare).
    #[arg(long)]
    no_cues: bool,
}

#[derive(Debug, clap::Args)]
struct EvalArgs {
    /// Labelled JSONL files ({"text","lang","intent","entities"} per line).
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// A data directory to load the classifier from (default: built in).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Score the cue rules alone, without the trained weights.
    #[arg(long)]
    rules_only: bool,
}

fn train(args: &TrainArgs) -> Result<(), String> {
    let rules = Classifier::rules_from_dir(&args.data)?;
    let batches = cli::training_batches(&args.data)?;
    let cfg = TrainConfig {
        seed: args.seed,
        epochs: args.epochs,
        rate: args.rate,
        l2: args.l2,
        bits: args.bits,
        rules: args.with_rules,
        cues: !args.no_cues,
    };
    let trained = cli::train(&rules, &batches, &cfg);
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.data.join("model.bin"));
    let bytes = trained.bytes();
    // A closed pipe (`| head`) ends the output, not the process with a panic.
    let mut so = std::io::stdout().lock();
    std::fs::write(&out, &bytes).map_err(|e| format!("{}: {e}", out.display()))?;
    let _ = writeln!(
        so,
        "trained on {} utterances in {} batches; left-out-batch accuracy {:.4}; temperature {:.2}",
        trained.n,
        batches.len(),
        trained.cross_accuracy,
        trained.temperature
    );
    for f in &trained.affirm_grid {
        let _ = writeln!(
            so,
            "  affirm floor {:.2}: left-out-batch affirm precision {:.4}, recall {:.4}{}",
            f.floor,
            f.precision,
            f.recall,
            if *f == trained.affirm {
                "  <- chosen"
            } else {
                ""
            }
        );
    }
    let _ = writeln!(so, "wrote {} ({} bytes)", out.display(), bytes.len());
    let held = cli::jsonl_in(&args.data.join("heldout"))?;
    if !held.is_empty() {
        let classifier = rules.with_model(&bytes)?;
        let mut rows = Vec::new();
        for f in &held {
            rows.extend(cli::read_file(f)?);
        }
        let _ = write!(
            so,
            "\nheld out ({} files, never trained on):\n{}",
            held.len(),
            cli::report(&classifier, &rows)
        );
    }
    Ok(())
}

fn eval(args: &EvalArgs) -> Result<(), String> {
    let classifier = match &args.data {
        Some(dir) => std::sync::Arc::new(Classifier::from_dir(dir)?),
        None => Classifier::builtin()?,
    };
    let classifier = if args.rules_only {
        classifier.rules_only()
    } else {
        (*classifier).clone()
    };
    let mut rows = Vec::new();
    for f in &args.files {
        rows.extend(cli::read_file(f)?);
    }
    let started = std::time::Instant::now();
    let report = cli::report(&classifier, &rows);
    let secs = started.elapsed().as_secs_f64();
    // A closed pipe (`| head`) ends the output, not the process with a panic.
    let _ = write!(
        std::io::stdout().lock(),
        "{report}\nthroughput: {:.0} utterances/s on one thread\n",
        rows.len() as f64 / secs.max(1e-9)
    );
    Ok(())
}

/// Runs the sub-command.
pub(crate) fn run(args: IntentArgs) -> ExitCode {
    let done = match &args.command {
        Some(IntentCommand::Train(t)) => Some(train(t)),
        Some(IntentCommand::Eval(e)) => Some(eval(e)),
        None => None,
    };
    if let Some(done) = done {
        return match done {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
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
            let mut scored: Vec<(f32, Intent)> = INTENTS
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
