//! `caly simulate`: act as Exotel against a running server and report what the calls got.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use caly::devtools::simulate::{self, SimulateOptions};

/// Concurrent real-time calls against a running server.
#[derive(Debug, clap::Args)]
pub(crate) struct SimulateArgs {
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
    /// With --barge-in: the audio's ground truth (fixtures/audio/truth.json): each reply gets
    /// the next item spoken over it from its true onset; backchannels must not cut it off.
    #[arg(long, requires = "barge_in")]
    truth: Option<PathBuf>,
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
    /// Also play the model: host the offline Realtime simulator on 127.0.0.1:PORT for the
    /// run, in this process (point the server at it with
    /// `OPENAI_REALTIME_URL=ws://127.0.0.1:PORT/v1/realtime` and any `OPENAI_API_KEY`), so
    /// the server's CPU and memory are its own.
    #[arg(long)]
    model_port: Option<u16>,
    /// Also play the store: host the demo store (seeded orders #1001–#1006) on
    /// 127.0.0.1:PORT for the run, in this process (point the server at it with
    /// `SHOPIFY_API_URL=http://127.0.0.1:PORT/admin/api/VERSION/graphql.json`, any VERSION, and
    /// `SHOPIFY_ACCESS_TOKEN` = `--store-token`), so a simulated model's tool calls are answered
    /// as with a real shop and the conversation is as busy.
    #[arg(long)]
    store_port: Option<u16>,
    /// The hosted model's script: `order` (an order-status call that ends with a goodbye) or
    /// `busy` (eight turns, five of them store lookups, no goodbye: as busy as a real call).
    #[arg(long, value_enum, default_value_t = ModelScript::Order)]
    model_script: ModelScript,
    /// The hosted demo store's access token.
    #[arg(long, default_value = "shpat_demo_load")]
    store_token: String,
}

/// The scripts `--model-port` can play.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum ModelScript {
    /// An order-status call that ends with a goodbye.
    Order,
    /// Eight turns, five store lookups, no goodbye.
    Busy,
}

/// Runs the calls and prints the report; fails if a call failed.
pub(crate) async fn run(args: SimulateArgs) -> ExitCode {
    // Held for the run: dropped (and stopped) when it returns.
    let _model = match args.model_port {
        Some(port) => {
            let script = match args.model_script {
                ModelScript::Busy => caly::devtools::realtime_sim::busy_script(),
                ModelScript::Order => caly::devtools::realtime_sim::hinglish_script(),
            };
            let config = caly::devtools::realtime_sim::SimulatorConfig {
                script,
                log_capacity: 0,
                ..Default::default()
            };
            match caly::devtools::realtime_sim::Simulator::start_on(config, port).await {
                Ok(sim) => {
                    eprintln!(
                        "note: the Realtime SIMULATOR plays the model at {}",
                        sim.url()
                    );
                    Some(sim)
                }
                Err(e) => {
                    eprintln!("error: cannot host the Realtime simulator on port {port}: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        None => None,
    };
    let _store = match args.store_port {
        Some(port) => {
            match caly::devtools::demo_store::DemoStore::start_on(port, args.store_token.clone())
                .await
            {
                Ok(store) => {
                    eprintln!(
                        "note: the DEMO STORE answers the server's Shopify calls at {}",
                        store.url()
                    );
                    Some(store)
                }
                Err(e) => {
                    eprintln!("error: cannot host the demo store on port {port}: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        None => None,
    };
    let mut probes = !args.no_probes;
    if probes && simulate::talks_to_a_model(&args.url).await {
        eprintln!(
            "note: the server's pipeline talks to a model, where a key press is the caller typing: \
             no DTMF latency probes (they measure the tone bot)"
        );
        probes = false;
    }
    let options = SimulateOptions {
        url: args.url,
        calls: args.calls,
        audio: args.audio,
        duration: Duration::from_secs_f64(args.duration.max(0.1)),
        chunk_ms: args.chunk_ms.clamp(10, 1000),
        stagger: Duration::from_secs_f64(args.stagger.max(0.0)),
        barge_in: args.barge_in,
        truth: args.truth,
        probes,
        server_pid: args.server_pid,
        auth: args.auth,
    };
    if args.sequential > 0 {
        return match simulate::soak(options, args.sequential, args.bursts).await {
            Ok(report) => {
                let printed = super::print_report(&report, args.json, |r| r.render());
                let failed = report.sequential_failed
                    + report.concurrent.iter().map(|c| c.failed).sum::<usize>();
                if !report.tasks_back_to_baseline() {
                    eprintln!("the server's tasks did not return to their baseline");
                }
                if printed && failed == 0 && report.tasks_back_to_baseline() {
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
    match simulate::run(options).await {
        Ok(report) => {
            let printed = super::print_report(&report, args.json, |r| r.render());
            if printed && report.failed == 0 {
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
