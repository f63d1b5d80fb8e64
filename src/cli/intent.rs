//! `caly intent`: classify caller utterances, explain a decision, fit the calibration.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use caly::intent::{Classifier, INTENTS, Intent, cli};

/// Classify caller utterances.
#[derive(Debug, clap::Args)]
pub(crate) struct IntentArgs {
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

/// Runs the sub-command.
pub(crate) fn run(args: IntentArgs) -> ExitCode {
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
