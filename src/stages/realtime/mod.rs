//! `realtime`: the caller's voice to OpenAI's Realtime API (GA) and the bot's voice back.
//!
//! A task stage: it owns a WebSocket (tokio-tungstenite over rustls). In: caller audio, PCM16
//! at 24 kHz (sent as `audio/pcm`) or μ-law at 8 kHz (sent as `audio/pcmu`), as negotiated on
//! its input edge. Out, on four ports: `audio` (bot PCM16 at 24 or 8 kHz, then `ReplyEnded`),
//! `transcript` (caller and bot, partial and final), `tool_calls` (`ToolCall` events) and
//! `events` (server speech detection, response lifecycle, errors, reconnections).
//!
//! On `Interrupt { heard }` it cancels the response in progress and truncates the bot's item
//! to what the caller heard (capped at what was received). Tool results arrive as `ToolResult`
//! on the control lane and go back as `function_call_output` + `response.create`.
//!
//! Resilience: every write has a deadline; a ping every few seconds and a read deadline catch a
//! half-dead socket. A drop, a stall or `session_expired` reconnects with exponential backoff
//! and jitter, restores the session and the last turns as text, and sends the caller audio
//! buffered during the gap (bounded, oldest dropped, counted). The session is renewed between
//! turns before the 60-minute cap. Fatal errors (`invalid_api_key`, `insufficient_quota`, …)
//! end the call with the reason, never a reconnect loop. Facts: PROTOCOLS.md §3.

pub mod models;
pub mod protocol;

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::{FutureExt, SinkExt, StreamExt};
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::codec::linear_to_ulaw;
use crate::engine::format::{Caps, Encoding, Format};
use crate::engine::frame::{AudioChunk, Control, Event, Frame, Speaker, TextChunk};
use crate::engine::bus::BusKind;
use crate::engine::registry::{CompileOptions, Invalid, NegotiateError, Negotiated, Role, StageKind};
use crate::engine::stage::{BuildCtx, BuildError, Port, Runnable, StageError, TaskIo, TaskStage};
use protocol::{
    AudioDelta, AudioFormat, AudioInput, AudioOutput, ClientEvent, Content, Item, Peek, append_text, decode_audio,
    Reasoning, ServerEvent, Session, SessionAudio, Transcription, TurnDetection,
};
pub use protocol::ReasoningEffort;

/// Where the `realtime` stage connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealtimeEndpoint {
    /// `wss://api.openai.com/v1/realtime` (or a loopback simulator's `ws://` URL).
    pub url: String,
    /// The API key, if any.
    pub api_key: Option<String>,
    /// Whether this is the offline simulator.
    pub simulator: bool,
}

/// OpenAI's Realtime endpoint (PROTOCOLS.md §3.2).
pub const OPENAI_REALTIME_URL: &str = "wss://api.openai.com/v1/realtime";


impl RealtimeEndpoint {
    /// From `OPENAI_REALTIME_URL` and `OPENAI_API_KEY`.
    pub fn from_env() -> RealtimeEndpoint {
        RealtimeEndpoint {
            url: std::env::var("OPENAI_REALTIME_URL")
                .ok()
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| OPENAI_REALTIME_URL.to_owned()),
            api_key: std::env::var("OPENAI_API_KEY")
                .ok()
                .filter(|k| !k.is_empty()),
            simulator: false,
        }
    }
}

/// Function calls awaiting their output that are remembered; older ones are forgotten.
const MAX_OPEN_CALLS: usize = 16;
/// User items whose caller turn is remembered (their transcripts arrive soon after).
const MAX_TURNS_KEPT: usize = 32;

/// Output ports, in order.
pub const PORT_AUDIO: usize = 0;
/// Transcript port.
pub const PORT_TRANSCRIPT: usize = 1;
/// Tool-call port.
pub const PORT_TOOL_CALLS: usize = 2;
/// Events port.
pub const PORT_EVENTS: usize = 3;

static PCM_24K: Caps = Caps::Audio { rates: &[24000] };
static PCMU_8K: Caps = Caps::Encoded {
    encodings: &[Encoding::Mulaw],
    rates: &[8000],
};

fn d_model() -> String {
    "gpt-realtime-2.1".into()
}
fn d_voice() -> String {
    "marin".into()
}
fn d_transcription_model() -> String {
    "gpt-transcribe".into()
}
/// Code-mixed Hinglish callers: both languages, not one.
fn d_languages() -> Vec<String> {
    vec!["hi".into(), "en".into()]
}
/// Words an e-commerce caller says that a recogniser should not miss.
fn d_keywords() -> Vec<String> {
    ["order", "cancel", "return", "refund", "replacement", "exchange", "pincode", "delivery", "tracking", "COD"]
        .map(String::from)
        .to_vec()
}
fn d_threshold() -> f32 {
    0.5
}
fn d_prefix_padding_ms() -> u32 {
    300
}
fn d_silence_duration_ms() -> u32 {
    500
}
fn d_renew_after_secs() -> u64 {
    // Before OpenAI's 60-minute session cap (§3.11), between turns.
    55 * 60
}
fn d_connect_timeout_ms() -> u64 {
    5000
}
fn d_write_timeout_ms() -> u64 {
    2000
}
fn d_read_timeout_ms() -> u64 {
    10_000
}
fn d_ping_every_ms() -> u64 {
    3000
}
fn d_max_reconnects() -> u32 {
    5
}
fn d_backoff_initial_ms() -> u64 {
    200
}
fn d_backoff_max_ms() -> u64 {
    5000
}
fn d_gap_buffer_ms() -> u32 {
    3000
}
fn d_history_turns() -> usize {
    10
}

/// Parameters of `realtime`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RealtimeSpec {
    /// Realtime model (`gpt-realtime-2.1`, `gpt-realtime-2.1-mini`, `gpt-realtime-1.5`, …;
    /// see [`models`]).
    #[serde(default = "d_model")]
    pub model: String,
    /// Voice (`marin`, `shimmer`, …).
    #[serde(default = "d_voice")]
    pub voice: String,
    /// A file of instructions for the model (relative to the working directory).
    pub instructions: Option<String>,
    /// `pcm16` (24 kHz) or `pcmu` (8 kHz μ-law): must match the input edge when given.
    pub input_format: Option<AudioWire>,
    /// `pcm16` (24 kHz out) or `pcmu` (8 kHz out, decoded to PCM16 here).
    #[serde(default)]
    pub output_format: AudioWire,
    /// Model that transcribes the caller.
    #[serde(default = "d_transcription_model")]
    pub transcription_model: String,
    /// One language for the caller's transcription (e.g. `hi`), instead of `languages`.
    pub language: Option<String>,
    /// Languages the caller may speak, for transcription models that take several
    /// (`gpt-transcribe`, `gpt-live-transcribe`). Default `["hi", "en"]`.
    pub languages: Option<Vec<String>>,
    /// Words the recogniser should listen for (the store's own words), for transcription
    /// models that take them. Default: order, cancel, return, refund, pincode, …
    pub keywords: Option<Vec<String>>,
    /// `server_vad`, `semantic_vad` or `none`.
    #[serde(default)]
    pub turn_detection: TurnDetectionKind,
    /// How hard a reasoning model thinks before answering (`minimal` … `xhigh`); only for
    /// the `gpt-realtime-2` family. Default `low`: phone callers wait for every answer.
    pub reasoning_effort: Option<ReasoningEffort>,
    /// Let a reasoning model call several tools at once (the `gpt-realtime-2` family only).
    pub parallel_tool_calls: Option<bool>,
    /// Server VAD threshold, 0–1.
    #[serde(default = "d_threshold")]
    pub vad_threshold: f32,
    /// Server VAD audio kept before speech, ms.
    #[serde(default = "d_prefix_padding_ms")]
    pub prefix_padding_ms: u32,
    /// Server VAD silence that ends a turn, ms.
    #[serde(default = "d_silence_duration_ms")]
    pub silence_duration_ms: u32,
    /// Let the model answer on its own at the end of every turn its turn detection commits,
    /// backchannels ("haan", "hmm") over the bot included. Off by default: the call controller
    /// asks for each answer ([`Control::Respond`], `[conversation]` in the pipeline file).
    #[serde(default)]
    pub create_response: bool,
    /// Let the model cancel its own answer when the caller speaks. Off by default: Caly's
    /// own barge-in ignores backchannels ("haan") and clears Exotel in step.
    #[serde(default)]
    pub interrupt_response: bool,
    /// Overrides the Realtime URL (tests; `${VAR}` works).
    pub url: Option<String>,
    /// Renew the session (reconnect between turns) after this many seconds.
    #[serde(default = "d_renew_after_secs")]
    pub renew_after_secs: u64,
    /// Connect deadline, ms.
    #[serde(default = "d_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Deadline for every socket write, ms.
    #[serde(default = "d_write_timeout_ms")]
    pub write_timeout_ms: u64,
    /// The socket counts as dead after this long without hearing from the server, ms.
    #[serde(default = "d_read_timeout_ms")]
    pub read_timeout_ms: u64,
    /// Ping interval, ms.
    #[serde(default = "d_ping_every_ms")]
    pub ping_every_ms: u64,
    /// Consecutive failed reconnects before the call is ended.
    #[serde(default = "d_max_reconnects")]
    pub max_reconnects: u32,
    /// First reconnect delay, ms (doubles, with jitter).
    #[serde(default = "d_backoff_initial_ms")]
    pub backoff_initial_ms: u64,
    /// Longest reconnect delay, ms.
    #[serde(default = "d_backoff_max_ms")]
    pub backoff_max_ms: u64,
    /// Caller audio kept while reconnecting, ms (oldest dropped beyond it).
    #[serde(default = "d_gap_buffer_ms")]
    pub gap_buffer_ms: u32,
    /// Turns restored as text after a reconnect.
    #[serde(default = "d_history_turns")]
    pub history_turns: usize,
}

impl RealtimeSpec {
    /// The models it names: (TOML key, model, role).
    pub fn models(&self) -> [(&'static str, &str, models::Role); 2] {
        [
            ("model", self.model.as_str(), models::Role::Realtime),
            ("transcription_model", self.transcription_model.as_str(), models::Role::Transcription),
        ]
    }
}

/// How audio crosses the Realtime socket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AudioWire {
    /// PCM16 at 24 kHz (`audio/pcm`).
    #[default]
    Pcm16,
    /// G.711 μ-law at 8 kHz (`audio/pcmu`).
    Pcmu,
}

/// Who detects the caller's turns on the model's side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TurnDetectionKind {
    /// Energy-based, with `vad_threshold`, `prefix_padding_ms`, `silence_duration_ms`.
    #[default]
    ServerVad,
    /// The model judges when the caller has finished.
    SemanticVad,
    /// No turn detection on the model's side.
    None,
}

impl TurnDetectionKind {
    fn wire(self) -> Option<&'static str> {
        match self {
            TurnDetectionKind::ServerVad => Some("server_vad"),
            TurnDetectionKind::SemanticVad => Some("semantic_vad"),
            TurnDetectionKind::None => None,
        }
    }
}

/// What the session loop needs, built once per call.
#[derive(Debug, Clone)]
struct Config {
    url: String,
    api_key: Option<String>,
    session: Session,
    input_pcmu: bool,
    output_pcmu: bool,
    output_rate: u32,
    connect_timeout: Duration,
    write_timeout: Duration,
    read_timeout: Duration,
    ping_every: Duration,
    renew_after: Duration,
    max_reconnects: u32,
    backoff_initial: Duration,
    backoff_max: Duration,
    gap_bytes: usize,
    history_turns: usize,
    /// The model answers turns itself (`create_response`): [`Control::Respond`] is moot.
    auto_respond: bool,
    /// The model, as its responses' usage is priced.
    model_name: Arc<str>,
}

/// Speech to speech over the OpenAI Realtime API.
pub struct Realtime {
    config: Arc<Config>,
}

impl StageKind for Realtime {
    const NAME: &'static str = "realtime";
    const SUMMARY: &'static str = "OpenAI Realtime (GA) speech to speech: audio, transcripts, tool calls.";
    const EXAMPLE: &'static str = "model = \"gpt-realtime-2.1\"\nvoice = \"marin\"\nreasoning_effort = \"low\"";
    const ROLE: Role = Role::Transform;
    const TASK: bool = true;
    type Spec = RealtimeSpec;

    fn input_caps(_: &RealtimeSpec) -> Caps {
        Caps::Either(&PCM_24K, &PCMU_8K)
    }

    /// A model with an announced shutdown still in the future.
    fn warnings(spec: &RealtimeSpec) -> Vec<Invalid> {
        let today = models::today();
        spec.models()
            .into_iter()
            .filter(|(_, name, _)| matches!(models::standing(name, today), models::Standing::Retiring { .. }))
            .filter_map(|(key, name, role)| {
                models::notice(name, role, today).map(|message| Invalid { key, message })
            })
            .collect()
    }

    fn validate(spec: &RealtimeSpec) -> Vec<Invalid> {
        let mut invalid = Vec::new();
        let today = models::today();
        for (key, name, role) in spec.models() {
            if let models::Standing::Retired { .. } = models::standing(name, today) {
                invalid.push(Invalid {
                    key,
                    message: models::notice(name, role, today).unwrap_or_default(),
                });
            }
        }
        if !models::takes_reasoning(&spec.model) {
            for (key, set) in [
                ("reasoning_effort", spec.reasoning_effort.is_some()),
                ("parallel_tool_calls", spec.parallel_tool_calls.is_some()),
            ] {
                if set {
                    invalid.push(Invalid {
                        key,
                        message: format!(
                            "`{}` is not a reasoning model: only the gpt-realtime-2 family (gpt-realtime-2, gpt-realtime-2.1, gpt-realtime-2.1-mini) takes `{key}`",
                            spec.model
                        ),
                    });
                }
            }
        }
        if spec.language.is_some() && spec.languages.is_some() {
            invalid.push(Invalid {
                key: "languages",
                message: "set `language` (one) or `languages` (several), not both".into(),
            });
        }
        if !models::takes_languages_and_keywords(&spec.transcription_model) {
            for (key, set) in [
                ("languages", spec.languages.is_some()),
                ("keywords", spec.keywords.is_some()),
            ] {
                if set {
                    invalid.push(Invalid {
                        key,
                        message: format!(
                            "transcription model `{}` takes no `{key}` (gpt-transcribe and gpt-live-transcribe do); use `language` for one language",
                            spec.transcription_model
                        ),
                    });
                }
            }
        }
        if !(0.0..=1.0).contains(&spec.vad_threshold) {
            invalid.push(Invalid {
                key: "vad_threshold",
                message: "between 0 and 1".into(),
            });
        }
        invalid
    }

    fn negotiate(
        spec: &RealtimeSpec,
        inputs: &[Format],
        _: &CompileOptions,
    ) -> Result<Negotiated, NegotiateError> {
        let pcmu_in = match inputs.first() {
            Some(Format::Audio(_)) => false,
            Some(Format::Encoded(_)) => true,
            other => return Err(format!("realtime needs caller audio, got {other:?}").into()),
        };
        if let Some(declared) = spec.input_format
            && (declared == AudioWire::Pcmu) != pcmu_in
        {
            return Err(format!(
                "input_format = {declared:?} but the input edge carries {}",
                inputs[0]
            )
            .into());
        }
        let out_rate = if spec.output_format == AudioWire::Pcmu {
            8000
        } else {
            24000
        };
        Ok(Negotiated {
            ports: vec![
                Port {
                    name: "audio",
                    format: Format::audio(out_rate),
                },
                Port {
                    name: "transcript",
                    format: Format::Text,
                },
                Port {
                    name: "tool_calls",
                    format: Format::Events,
                },
                Port {
                    name: "events",
                    format: Format::Events,
                },
            ],
            latency: Duration::ZERO,
        })
    }

    fn build(spec: &RealtimeSpec, ctx: &BuildCtx<'_>) -> Result<Runnable, BuildError> {
        let input_pcmu = matches!(ctx.input(), Some(Format::Encoded(_)));
        let output_pcmu = spec.output_format == AudioWire::Pcmu;
        let instructions = match &spec.instructions {
            Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
                ctx.error(format!("cannot read instructions {path}: {e}"))
            })?),
            None => None,
        };
        let format = |pcmu: bool| if pcmu { AudioFormat::pcmu() } else { AudioFormat::pcm() };
        let server_vad = spec.turn_detection == TurnDetectionKind::ServerVad;
        let turn_detection = spec.turn_detection.wire().map(|kind| TurnDetection {
                kind: kind.into(),
                threshold: server_vad.then_some(spec.vad_threshold),
                prefix_padding_ms: server_vad.then_some(spec.prefix_padding_ms),
                silence_duration_ms: server_vad.then_some(spec.silence_duration_ms),
                create_response: Some(spec.create_response),
                interrupt_response: Some(spec.interrupt_response),
                eagerness: None,
        });
        // The tools are what the stages reading `tool_calls` offer (the `agent` stage's agents).
        let declared: Vec<protocol::Tool> = ctx
            .tools
            .iter()
            .map(|t| protocol::Tool {
                kind: "function".into(),
                name: t.name.into(),
                description: t.description.into(),
                parameters: Arc::clone(&t.parameters),
            })
            .collect();
        let session = Session {
            kind: "realtime".into(),
            model: Some(spec.model.clone()),
            instructions,
            output_modalities: Some(vec!["audio".into()]),
            audio: Some(SessionAudio {
                input: Some(AudioInput {
                    format: Some(format(input_pcmu)),
                    noise_reduction: Some(serde_json::json!({"type": "near_field"})),
                    transcription: Some(transcription(spec)),
                    turn_detection,
                }),
                output: Some(AudioOutput {
                    format: Some(format(output_pcmu)),
                    voice: Some(spec.voice.clone()),
                    speed: None,
                }),
            }),
            tool_choice: (!declared.is_empty()).then(|| "auto".into()),
            tools: (!declared.is_empty()).then_some(declared),
            max_output_tokens: None,
            truncation: None,
            // Only the reasoning family takes these; for others they are never sent.
            reasoning: models::takes_reasoning(&spec.model).then(|| Reasoning {
                effort: spec.reasoning_effort.unwrap_or(ReasoningEffort::Low),
            }),
            parallel_tool_calls: spec
                .parallel_tool_calls
                .filter(|_| models::takes_reasoning(&spec.model)),
        };
        let endpoint = ctx
            .services
            .get::<RealtimeEndpoint>()
            .cloned()
            .unwrap_or_else(RealtimeEndpoint::from_env);
        let base = spec.url.clone().unwrap_or_else(|| endpoint.url.clone());
        let url = if base.contains("model=") {
            base
        } else {
            let sep = if base.contains('?') { '&' } else { '?' };
            format!("{base}{sep}model={}", spec.model)
        };
        let gap_bytes = input_bytes_per_ms(input_pcmu) * spec.gap_buffer_ms as usize;
        Ok(Runnable::Task(Box::new(Realtime {
            config: Arc::new(Config {
                model_name: Arc::from(spec.model.as_str()),
                url,
                api_key: endpoint.api_key.clone(),
                session,
                input_pcmu,
                output_pcmu,
                output_rate: if output_pcmu { 8000 } else { 24000 },
                connect_timeout: Duration::from_millis(spec.connect_timeout_ms),
                write_timeout: Duration::from_millis(spec.write_timeout_ms),
                read_timeout: Duration::from_millis(spec.read_timeout_ms),
                ping_every: Duration::from_millis(spec.ping_every_ms.max(10)),
                renew_after: Duration::from_secs(spec.renew_after_secs),
                max_reconnects: spec.max_reconnects,
                backoff_initial: Duration::from_millis(spec.backoff_initial_ms.max(1)),
                backoff_max: Duration::from_millis(spec.backoff_max_ms.max(1)),
                gap_bytes,
                history_turns: spec.history_turns,
                auto_respond: spec.create_response && spec.turn_detection != TurnDetectionKind::None,
            }),
        })))
    }
}

/// The caller's transcription settings: several languages and keywords for the models that
/// take them, one `language` (if set) for the others.
fn transcription(spec: &RealtimeSpec) -> Transcription {
    let rich = models::takes_languages_and_keywords(&spec.transcription_model);
    let (language, languages) = match (&spec.language, rich) {
        (Some(one), _) => (Some(one.clone()), None),
        (None, true) => (None, Some(spec.languages.clone().unwrap_or_else(d_languages))),
        (None, false) => (None, None),
    };
    Transcription {
        model: spec.transcription_model.clone(),
        language,
        languages,
        keywords: rich.then(|| spec.keywords.clone().unwrap_or_else(d_keywords)),
        prompt: None,
    }
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Why a connection ended.
#[derive(Debug)]
enum SessionEnd {
    /// The caller's audio ended: the call is over.
    InputEnded,
    /// Reconnect (the socket dropped, stalled or expired), with backoff.
    Reconnect(String),
    /// Reconnect at once, between turns, before OpenAI's session cap.
    Renew,
    /// The model will not serve this call: end it with this reason.
    Fatal(String),
}

/// What survives reconnections.
struct State {
    /// Encoded caller audio not yet sent (the gap while reconnecting).
    gap: VecDeque<u8>,
    gap_dropped: u64,
    /// Recent turns as (role, text), for context restore.
    history: VecDeque<(&'static str, String)>,
    active_response: Option<String>,
    /// Responses we cancelled: their late audio is dropped.
    cancelled: VecDeque<String>,
    /// The assistant item whose audio is playing, and ms of its audio received.
    item: Option<(String, u64)>,
    /// A `response.create` to send once the active response is done.
    pending_create: Option<Option<serde_json::Value>>,
    /// Function calls the model made that have no output yet: with parallel tool calls, the
    /// next response is asked for once all of them are answered, not after each.
    open_calls: VecDeque<String>,
    /// Partial transcripts, for pts.
    started: Instant,
    unknown_logged: HashSet<String>,
    /// The response whose first audio has been reported.
    first_audio_of: Option<String>,
    /// The model's turn detection has heard the caller start and not yet stop: a renewal now
    /// would cut the turn in two.
    caller_speaking: bool,
    /// Caller turns begun so far (the model's `speech_started`), and the turn of each recent
    /// user item, so a transcript can say which turn it is of.
    caller_turns: u64,
    turn_of: VecDeque<(String, u64)>,
    scratch: Vec<u8>,
    /// Caller audio going out in the next append (reused).
    outgoing: Vec<u8>,
    pcm: Vec<i16>,
    b64: String,
}

impl State {
    /// The caller turn of user item `item_id`, if it is recent.
    fn turn(&self, item_id: &str) -> Option<u64> {
        self.turn_of.iter().find(|(id, _)| id == item_id).map(|(_, turn)| *turn)
    }

    fn new() -> State {
        State {
            gap: VecDeque::new(),
            gap_dropped: 0,
            history: VecDeque::new(),
            active_response: None,
            cancelled: VecDeque::new(),
            item: None,
            pending_create: None,
            open_calls: VecDeque::new(),
            started: Instant::now(),
            unknown_logged: HashSet::new(),
            first_audio_of: None,
            caller_speaking: false,
            caller_turns: 0,
            turn_of: VecDeque::new(),
            scratch: Vec::new(),
            outgoing: Vec::new(),
            pcm: Vec::new(),
            b64: String::new(),
        }
    }

    fn remember(&mut self, role: &'static str, text: String, limit: usize) {
        if text.trim().is_empty() {
            return;
        }
        self.history.push_back((role, text));
        while self.history.len() > limit * 2 {
            self.history.pop_front();
        }
    }

    fn buffer_gap(&mut self, bytes: &[u8], limit: usize) {
        self.gap.extend(bytes);
        if self.gap.len() > limit {
            let over = self.gap.len() - limit;
            self.gap.drain(..over);
            self.gap_dropped += over as u64;
        }
    }
}

impl TaskStage for Realtime {
    fn run(self: Box<Self>, io: TaskIo) -> BoxFuture<'static, Result<(), StageError>> {
        run(self.config, io).boxed()
    }
}

/// The stage's whole life: connect, serve, reconnect as needed, end with the call.
async fn run(config: Arc<Config>, mut io: TaskIo) -> Result<(), StageError> {
    let mut state = State::new();
    let mut failures: u32 = 0;
    let mut reconnecting = false;
    loop {
        let socket = match connect(&config).await {
            Ok(socket) => socket,
            Err(ConnectError::Fatal(reason)) => return end(io, reason).await,
            Err(ConnectError::Retry(reason)) => {
                failures += 1;
                if failures > config.max_reconnects {
                    return end(io, format!("realtime unreachable after {failures} attempts: {reason}")).await;
                }
                tracing::warn!(attempt = failures, error = %reason, "Realtime connect failed; retrying.");
                if !wait_buffering(&config, &mut io, &mut state, backoff(&config, failures)).await {
                    io.output.close().await;
                    return Ok(());
                }
                continue;
            }
        };
        if reconnecting {
            push_event(&mut io, Event::ModelReconnected { attempts: failures.max(1) }).await?;
            if state.gap_dropped > 0 {
                tracing::warn!(dropped_bytes = state.gap_dropped, "Caller audio dropped while reconnecting.");
            }
        }
        let connected_at = Instant::now();
        match serve(&config, socket, &mut io, &mut state, reconnecting).await? {
            SessionEnd::InputEnded => {
                io.output.close().await;
                return Ok(());
            }
            SessionEnd::Fatal(reason) => return end(io, reason).await,
            again => {
                let (reason, renewal) = match again {
                    SessionEnd::Reconnect(reason) => {
                        tracing::warn!(%reason, "Realtime connection ended; reconnecting.");
                        (reason, false)
                    }
                    _ => {
                        tracing::info!("Renewing the Realtime session before its cap.");
                        ("renewal".to_owned(), true)
                    }
                };
                reconnecting = true;
                // A connection that served a while resets the count; one that failed at once
                // does not, so a server that accepts and then drops cannot loop forever.
                if connected_at.elapsed() > config.read_timeout {
                    failures = 0;
                }
                failures += 1;
                if failures > config.max_reconnects {
                    return end(io, format!("realtime kept failing: {reason}")).await;
                }
                let delay = if renewal { Duration::ZERO } else { backoff(&config, failures) };
                if !wait_buffering(&config, &mut io, &mut state, delay).await {
                    io.output.close().await;
                    return Ok(());
                }
            }
        }
    }
}

/// Ends the call cleanly with a reason the transport and the store can record.
async fn end(mut io: TaskIo, reason: String) -> Result<(), StageError> {
    tracing::error!(%reason, "Realtime cannot serve this call; ending it.");
    let _ = push_event(&mut io, Event::ModelError { code: "fatal".into(), message: reason.clone(), fatal: true }).await;
    io.output.close().await;
    Err(StageError::end(reason))
}

/// Exponential backoff with ±50% jitter.
fn backoff(config: &Config, attempt: u32) -> Duration {
    crate::backoff::delay(config.backoff_initial, config.backoff_max, attempt)
}

/// Sleeps for `delay` while keeping caller audio in the gap buffer. `false` if the input ended.
async fn wait_buffering(config: &Config, io: &mut TaskIo, state: &mut State, delay: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + delay;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => return true,
            item = io.input.next() => match item {
                None => return false,
                Some((_, frame)) => {
                    if let Some(bytes) = encode_input(config, frame, &mut state.scratch).map(<[u8]>::to_vec) {
                        state.buffer_gap(&bytes, config.gap_bytes);
                    }
                }
            },
        }
    }
}

/// Encodes caller audio in the session's input format (PCM16LE, or μ-law passed through).
fn encode_input<'a>(config: &Config, frame: Frame<'a>, scratch: &'a mut Vec<u8>) -> Option<&'a [u8]> {
    match frame {
        Frame::Audio(a) if !config.input_pcmu => {
            scratch.clear();
            scratch.extend(a.samples.iter().flat_map(|s| s.to_le_bytes()));
            Some(scratch.as_slice())
        }
        Frame::Audio(a) => {
            scratch.clear();
            scratch.extend(a.samples.iter().map(|s| linear_to_ulaw(*s)));
            Some(scratch.as_slice())
        }
        Frame::Packet(p) => Some(p.bytes),
        _ => None,
    }
}

enum ConnectError {
    Retry(String),
    Fatal(String),
}

fn install_crypto() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

async fn connect(config: &Config) -> Result<Socket, ConnectError> {
    install_crypto();
    let mut request = config
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| ConnectError::Fatal(format!("bad realtime url: {e}")))?;
    if let Some(key) = &config.api_key {
        let value = format!("Bearer {key}")
            .parse()
            .map_err(|_| ConnectError::Fatal("API key is not a valid header".into()))?;
        request.headers_mut().insert("authorization", value);
    }
    // The model's events are a few KiB (100 ms of 24 kHz audio is 6.4 KiB of base64): an
    // 8 KiB read buffer, not tungstenite's 128 KiB per call (bigger events grow it as needed).
    let ws = tungstenite::protocol::WebSocketConfig::default().read_buffer_size(8 * 1024);
    let connecting =
        tokio_tungstenite::connect_async_tls_with_config(request, Some(ws), true, None);
    match tokio::time::timeout(config.connect_timeout, connecting).await {
        Ok(Ok((socket, _))) => Ok(socket),
        Ok(Err(tungstenite::Error::Http(response))) if [401, 403].contains(&response.status().as_u16()) => {
            Err(ConnectError::Fatal(format!("realtime refused the key: HTTP {}", response.status())))
        }
        Ok(Err(e)) => Err(ConnectError::Retry(e.to_string())),
        Err(_) => Err(ConnectError::Retry("connect deadline passed".into())),
    }
}

async fn send(config: &Config, socket: &mut Socket, event: &ClientEvent) -> Result<(), String> {
    let text = serde_json::to_string(event).map_err(|e| e.to_string())?;
    send_text(config, socket, text).await
}

async fn send_text(config: &Config, socket: &mut Socket, text: String) -> Result<(), String> {
    match tokio::time::timeout(config.write_timeout, socket.send(Message::text(text))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("write failed: {e}")),
        Err(_) => Err("write deadline passed".into()),
    }
}

async fn push_event(io: &mut TaskIo, event: Event) -> Result<(), StageError> {
    io.ctx.publish(BusKind::Event(event.clone()));
    io.output.push(PORT_EVENTS, Frame::Event(&event)).await
}

async fn push_text(
    io: &mut TaskIo,
    state: &State,
    speaker: Speaker,
    text: String,
    is_final: bool,
    turn: Option<u64>,
) -> Result<(), StageError> {
    let chunk = TextChunk {
        pts: state.started.elapsed(),
        text,
        is_final,
        speaker,
        turn,
    };
    if is_final {
        io.ctx.publish(BusKind::Text(chunk.clone()));
    }
    io.output.push(PORT_TRANSCRIPT, Frame::Text(&chunk)).await
}

/// One connection: configure, restore, then relay until it ends.
async fn serve(
    config: &Config,
    mut socket: Socket,
    io: &mut TaskIo,
    state: &mut State,
    restore: bool,
) -> Result<SessionEnd, StageError> {
    if let Err(e) = send(config, &mut socket, &ClientEvent::SessionUpdate { session: Box::new(config.session.clone()) }).await {
        return Ok(write_failed(&mut socket, e).await);
    }
    if restore {
        let items: Vec<_> = state.history.iter().cloned().collect();
        for (role, text) in items {
            let content = if role == "assistant" {
                Content::OutputText { text }
            } else {
                Content::InputText { text }
            };
            let item = Item::Message { role: role.into(), content: vec![content] };
            if let Err(e) = send(config, &mut socket, &ClientEvent::ConversationItemCreate { item }).await {
                return Ok(write_failed(&mut socket, e).await);
            }
        }
        // The response in flight died with the old socket, and so did the new session's idea
        // of a turn in progress.
        state.active_response = None;
        state.item = None;
        state.caller_speaking = false;
    }
    // Audio that arrived while we were away.
    while !state.gap.is_empty() {
        let n = state.gap.len().min(48_000);
        let bytes: Vec<u8> = state.gap.drain(..n).collect();
        if let Err(e) = append(config, &mut socket, state, &bytes).await {
            return Ok(write_failed(&mut socket, e).await);
        }
    }
    let renew_at = tokio::time::Instant::now() + config.renew_after;
    let mut ping = tokio::time::interval(config.ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    loop {
        // Between turns only: not while the model answers, nor while the caller speaks.
        let renew_due = state.active_response.is_none() && !state.caller_speaking;
        tokio::select! {
            biased;
            control = io.control.recv() => {
                let Some(control) = control else { continue };
                if let Err(e) = on_control(config, &mut socket, io, state, control).await? {
                    return Ok(write_failed(&mut socket, e).await);
                }
            }
            message = socket.next() => {
                last_heard = Instant::now();
                match message {
                    None => return Ok(SessionEnd::Reconnect("socket closed".into())),
                    Some(Err(e)) => return Ok(SessionEnd::Reconnect(format!("socket error: {e}"))),
                    Some(Ok(Message::Close(frame))) => {
                        if let Some(f) = &frame
                            && u16::from(f.code) >= 4000
                        {
                            return Ok(SessionEnd::Fatal(format!("realtime closed the session: {} {}", u16::from(f.code), f.reason)));
                        }
                        let _ = frame.map(|f| f.code == CloseCode::Normal);
                        return Ok(SessionEnd::Reconnect("socket closed by the server".into()));
                    }
                    Some(Ok(Message::Text(text))) => match take_audio(config, io, state, text.as_str()) {
                        Incoming::Audio => {
                            // Done with the message before waiting for room downstream: it
                            // shares the socket's read buffer, which grew (to 64 KiB a call)
                            // whenever a delta was held across that wait.
                            drop(text);
                            let chunk = AudioChunk { pts: state.started.elapsed(), samples: &state.pcm };
                            io.output.push(PORT_AUDIO, Frame::Audio(chunk)).await?;
                        }
                        Incoming::Skip => {}
                        Incoming::Other(kind) => {
                            if let Some(end) = on_server(config, &mut socket, io, state, text.as_str(), &kind).await? {
                                return Ok(end);
                            }
                        }
                    },
                    Some(Ok(_)) => {}
                }
            }
            item = io.input.next() => {
                match item {
                    None => {
                        let _ = tokio::time::timeout(config.write_timeout, socket.close(None)).await;
                        return Ok(SessionEnd::InputEnded);
                    }
                    Some((_, frame)) => {
                        let mut bytes = std::mem::take(&mut state.outgoing);
                        bytes.clear();
                        if let Some(audio) = encode_input(config, frame, &mut state.scratch) {
                            bytes.extend_from_slice(audio);
                        }
                        // Audio already waiting goes in the same append, up to 100 ms: an
                        // Exotel message of 100 ms reaches this stage as five 20 ms chunks at
                        // once, and one send instead of five adds no wait.
                        let most = 100 * input_bytes_per_ms(config.input_pcmu);
                        while bytes.len() < most {
                            let Some((_, frame)) = io.input.try_next() else { break };
                            if let Some(audio) = encode_input(config, frame, &mut state.scratch) {
                                bytes.extend_from_slice(audio);
                            }
                        }
                        let sent = if bytes.is_empty() { Ok(()) } else { append(config, &mut socket, state, &bytes).await };
                        if let Err(e) = sent {
                            state.buffer_gap(&bytes, config.gap_bytes);
                            state.outgoing = bytes;
                            return Ok(write_failed(&mut socket, e).await);
                        }
                        state.outgoing = bytes;
                    }
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > config.read_timeout {
                    return Ok(SessionEnd::Reconnect("read deadline passed: the server went quiet".into()));
                }
                let sent = tokio::time::timeout(config.write_timeout, socket.send(Message::Ping(Vec::new().into()))).await;
                if !matches!(sent, Ok(Ok(()))) {
                    return Ok(SessionEnd::Reconnect("ping could not be written".into()));
                }
            }
            () = tokio::time::sleep_until(renew_at), if renew_due => {
                let _ = tokio::time::timeout(config.write_timeout, socket.close(None)).await;
                return Ok(SessionEnd::Renew);
            }
        }
    }
}

/// The end of the call an error means, if it is fatal.
fn fatal(error: &protocol::ErrorBody) -> Option<SessionEnd> {
    error.is_fatal().then(|| {
        let code = error.code.as_deref().unwrap_or_default();
        SessionEnd::Fatal(format!("{code}: {}", error.message))
    })
}

/// A write failed: the server may have refused the session (a wrong key, no quota) and closed
/// at once, before or while we wrote. What it said decides; otherwise reconnect.
async fn write_failed(socket: &mut Socket, error: String) -> SessionEnd {
    refusal(socket).await.unwrap_or(SessionEnd::Reconnect(error))
}

/// The fatal error a closing server sent, if it sent one (read for at most 500 ms).
async fn refusal(socket: &mut Socket) -> Option<SessionEnd> {
    let read = async {
        while let Some(Ok(message)) = socket.next().await {
            let Message::Text(text) = message else { continue };
            if let Ok(ServerEvent::Error { error }) = serde_json::from_str::<ServerEvent>(text.as_str())
                && let Some(end) = fatal(&error)
            {
                return Some(end);
            }
        }
        None
    };
    tokio::time::timeout(Duration::from_millis(500), read).await.ok().flatten()
}

async fn append(config: &Config, socket: &mut Socket, state: &mut State, bytes: &[u8]) -> Result<(), String> {
    let text = append_text(bytes, &mut state.b64);
    send_text(config, socket, text).await
}

/// Acts on a control; `Ok(Err(_))` when the socket failed (reconnect).
async fn on_control(
    config: &Config,
    socket: &mut Socket,
    io: &mut TaskIo,
    state: &mut State,
    control: Control,
) -> Result<Result<(), String>, StageError> {
    if let Control::CallerText(text) = &control {
        // The caller's turn, typed: in the transcript like a spoken one (so the intent stage
        // reads its numbers), and to the model as the user's message.
        state.remember("user", text.clone(), config.history_turns);
        state.caller_turns += 1;
        let turn = Some(state.caller_turns);
        push_text(io, state, Speaker::Caller, text.clone(), true, turn).await?;
    }
    Ok(on_socket_control(config, socket, state, control).await)
}

async fn on_socket_control(config: &Config, socket: &mut Socket, state: &mut State, control: Control) -> Result<(), String> {
    match control {
        Control::Interrupt { heard } => {
            if let Some(id) = state.active_response.take() {
                send(config, socket, &ClientEvent::ResponseCancel { response_id: Some(id.clone()) }).await?;
                state.cancelled.push_back(id);
                while state.cancelled.len() > 16 {
                    state.cancelled.pop_front();
                }
            }
            if let Some((item_id, received_ms)) = state.item.take() {
                let audio_end_ms = (heard.as_millis() as u64).min(received_ms);
                send(
                    config,
                    socket,
                    &ClientEvent::ConversationItemTruncate { item_id, content_index: 0, audio_end_ms },
                )
                .await?;
            }
            state.pending_create = None;
        }
        Control::ToolResult { call_id, output } => {
            state.open_calls.retain(|c| *c != call_id);
            let item = Item::FunctionCallOutput { call_id, output };
            send(config, socket, &ClientEvent::ConversationItemCreate { item }).await?;
            if state.open_calls.is_empty() {
                request_response(config, socket, state, None).await?;
            }
        }
        Control::Say(text) => {
            let response = serde_json::json!({
                "instructions": format!(
                    "A note from the store system; act on it, speaking to the caller in their language: {text}"
                ),
            });
            request_response(config, socket, state, Some(response)).await?;
        }
        Control::Respond if config.auto_respond => {}
        Control::Respond => request_response(config, socket, state, None).await?,
        Control::CallerText(text) => {
            let item = Item::Message { role: "user".into(), content: vec![Content::InputText { text }] };
            send(config, socket, &ClientEvent::ConversationItemCreate { item }).await?;
            request_response(config, socket, state, None).await?;
        }
    }
    Ok(())
}

/// `response.create` now, or once the active response is done (one at a time, §3.10).
async fn request_response(
    config: &Config,
    socket: &mut Socket,
    state: &mut State,
    response: Option<serde_json::Value>,
) -> Result<(), String> {
    if state.active_response.is_some() {
        state.pending_create = Some(response);
        return Ok(());
    }
    send(config, socket, &ClientEvent::ResponseCreate { response }).await
}

/// Bytes of caller audio per millisecond on the model's socket: μ-law at 8 kHz is a byte a
/// sample, pcm16 at 24 kHz two.
fn input_bytes_per_ms(pcmu: bool) -> usize {
    if pcmu { 8 } else { 48 }
}

/// An event from the model, as the audio path sorts it without waiting on anything.
enum Incoming<'a> {
    /// An audio delta, decoded into `State::pcm`, to pass on.
    Audio,
    /// Nothing to do (unparsable, cancelled, bad base64).
    Skip,
    /// Any other event, of this type: [`on_server`].
    Other(std::borrow::Cow<'a, str>),
}

/// The hot path (most of what the model sends is audio): an audio delta decoded into the
/// state's PCM buffer and accounted for, synchronously, so the message can be dropped before
/// the audio waits for room downstream.
fn take_audio<'a>(config: &Config, io: &TaskIo, state: &mut State, text: &'a str) -> Incoming<'a> {
    let Ok(peek) = serde_json::from_str::<Peek<'_>>(text) else {
        tracing::warn!("Skipping a Realtime message that is not an event.");
        return Incoming::Skip;
    };
    if peek.kind != "response.output_audio.delta" {
        return Incoming::Other(peek.kind);
    }
    let Ok(delta) = serde_json::from_str::<AudioDelta<'_>>(text) else {
        return Incoming::Skip;
    };
    if state.cancelled.iter().any(|c| *c == delta.response_id) {
        return Incoming::Skip;
    }
    if decode_audio(&delta.delta, config.output_pcmu, &mut state.scratch, &mut state.pcm).is_err() {
        tracing::warn!("Skipping an audio delta that is not base64.");
        return Incoming::Skip;
    }
    let ms = state.pcm.len() as u64 * 1000 / u64::from(config.output_rate);
    match &mut state.item {
        Some((id, received)) if *id == delta.item_id => *received += ms,
        _ => state.item = Some((delta.item_id.to_string(), ms)),
    }
    if state.first_audio_of.as_deref() != Some(delta.response_id.as_ref()) {
        state.first_audio_of = Some(delta.response_id.to_string());
        io.ctx.publish(BusKind::Event(Event::ReplyAudioStarted { id: delta.response_id.to_string() }));
    }
    Incoming::Audio
}

/// Every event but audio deltas ([`take_audio`], which read its `kind`).
async fn on_server(
    config: &Config,
    socket: &mut Socket,
    io: &mut TaskIo,
    state: &mut State,
    text: &str,
    kind: &str,
) -> Result<Option<SessionEnd>, StageError> {
    let event = match serde_json::from_str::<ServerEvent>(text) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(kind = %kind, error = %e, "Skipping a malformed Realtime event.");
            return Ok(None);
        }
    };
    match event {
        ServerEvent::SessionCreated { .. } | ServerEvent::SessionUpdated { .. } | ServerEvent::ItemTruncated { .. } => {}
        ServerEvent::Error { error } => {
            if let Some(end) = fatal(&error) {
                return Ok(Some(end));
            }
            let code = error.code.clone().unwrap_or_default();
            if code != "response_cancel_not_active" {
                push_event(io, Event::ModelError { code: code.clone(), message: error.message.clone(), fatal: false }).await?;
            }
            if error.ends_socket() {
                return Ok(Some(SessionEnd::Reconnect(code)));
            }
        }
        ServerEvent::SpeechStarted { item_id, .. } => {
            state.caller_turns += 1;
            if state.turn_of.len() == MAX_TURNS_KEPT {
                state.turn_of.pop_front();
            }
            state.turn_of.push_back((item_id, state.caller_turns));
            state.caller_speaking = true;
            push_event(io, Event::ModelSpeechStarted).await?;
        }
        ServerEvent::SpeechStopped { .. } => {
            state.caller_speaking = false;
            push_event(io, Event::ModelSpeechStopped).await?;
        }
        ServerEvent::InputTranscriptDelta { item_id, delta } => {
            let turn = state.turn(&item_id);
            push_text(io, state, Speaker::Caller, delta, false, turn).await?;
        }
        ServerEvent::InputTranscriptCompleted { item_id, transcript } => {
            state.remember("user", transcript.clone(), config.history_turns);
            let turn = state.turn(&item_id);
            push_text(io, state, Speaker::Caller, transcript, true, turn).await?;
        }
        ServerEvent::ResponseCreated { response } => {
            state.active_response = Some(response.id.clone());
            push_event(io, Event::ResponseStarted { id: response.id }).await?;
        }
        ServerEvent::OutputItemAdded { item, .. } => {
            if item.kind == "message" {
                state.item = Some((item.id, 0));
            }
        }
        ServerEvent::AudioDone { response_id, .. } => {
            if !state.cancelled.contains(&response_id) {
                io.output.push(PORT_AUDIO, Frame::Event(&Event::ReplyEnded)).await?;
            }
        }
        ServerEvent::OutputTranscriptDelta { response_id, delta, .. } => {
            if !state.cancelled.contains(&response_id) {
                push_text(io, state, Speaker::Bot, delta, false, None).await?;
            }
        }
        ServerEvent::OutputTranscriptDone { transcript, .. } => {
            state.remember("assistant", transcript.clone(), config.history_turns);
            push_text(io, state, Speaker::Bot, transcript, true, None).await?;
        }
        ServerEvent::FunctionCallArgumentsDone { call_id, name, arguments, .. } => {
            if state.open_calls.len() == MAX_OPEN_CALLS {
                state.open_calls.pop_front();
            }
            state.open_calls.push_back(call_id.clone());
            let call = Event::ToolCall { call_id, name, arguments, turns_begun: Some(state.caller_turns) };
            io.ctx.publish(BusKind::Event(call.clone()));
            io.output.push(PORT_TOOL_CALLS, Frame::Event(&call)).await?;
        }
        ServerEvent::ResponseDone { response } => {
            if state.active_response.as_deref() == Some(response.id.as_str()) {
                state.active_response = None;
            }
            let usage = response.usage.as_ref().map(protocol::Usage::by_kind).unwrap_or_default();
            let model = Arc::clone(&config.model_name);
            push_event(io, Event::ResponseDone { id: response.id, status: response.status, model, usage }).await?;
            if state.active_response.is_none()
                && let Some(pending) = state.pending_create.take()
                && let Err(e) = send(config, socket, &ClientEvent::ResponseCreate { response: pending }).await
            {
                return Ok(Some(write_failed(socket, e).await));
            }
        }
        ServerEvent::Other => {
            if state.unknown_logged.len() < 64 && state.unknown_logged.insert(kind.to_string()) {
                tracing::debug!(kind = %kind, "Skipping a Realtime event Caly does not use.");
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gap_buffer_keeps_the_newest_audio_and_counts_what_it_dropped() {
        let mut state = State::new();
        let bytes: Vec<u8> = (0..=255u8).collect();
        for chunk in bytes.chunks(64) {
            state.buffer_gap(chunk, 100);
        }
        assert_eq!(state.gap.len(), 100);
        assert_eq!(state.gap_dropped, 156);
        assert!(state.gap.iter().copied().eq(156..=255u8));
    }

    #[test]
    fn history_is_bounded_and_skips_empty_turns() {
        let mut state = State::new();
        for i in 0..30 {
            state.remember("user", format!("turn {i}"), 10);
            state.remember("assistant", "  ".into(), 10);
        }
        assert_eq!(state.history.len(), 20);
        assert_eq!(state.history.front().map(|(_, t)| t.as_str()), Some("turn 10"));
    }
}
