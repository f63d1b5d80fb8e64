//! The offline Realtime **simulator**: a loopback WebSocket server speaking the same GA
//! protocol as `api.openai.com/v1/realtime`, so the whole call path can be tried and tested
//! without a key or a network. It is always announced as a simulator.
//!
//! What it does: `session.created`, then strict parsing of every client event with the
//! client's own GA types (anything else is answered with an `error` event, so client bugs show
//! up in tests); server-side turn detection on the caller audio it receives (energy, with the
//! session's `silence_duration_ms`); a scripted transcript per turn (Hinglish by default); bot
//! audio synthesised at the session's output format (a formant-like signal, never silence)
//! with transcript deltas; a tool call when the script says so, and a spoken answer once the
//! `function_call_output` and `response.create` arrive; `response.cancel`,
//! `conversation.item.truncate` with the real checks; and faults on demand (drop the socket,
//! stall, delay, an error event, a session cap).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::codec::{ULAW_TO_LINEAR, linear_to_ulaw};
use crate::devtools::signal;
use crate::stages::realtime::protocol::{ClientEvent, Item};

/// One scripted turn: what the caller "said", what the bot answers, and maybe a tool call first.
#[derive(Debug, Clone, PartialEq)]
pub struct ScriptTurn {
    /// The caller's transcript.
    pub user: String,
    /// The bot's answer.
    pub bot: String,
    /// Milliseconds of bot audio.
    pub bot_ms: u32,
    /// A tool to call before answering: (name, arguments).
    pub tool: Option<(String, Value)>,
    /// More tools the same turn calls: all in one response with the first when the session
    /// sets `parallel_tool_calls`, one response each otherwise.
    pub more_tools: Vec<(String, Value)>,
}

/// A scripted turn of 1.2 s of bot audio, calling at most one tool.
fn turn(user: &str, bot: &str, tool: Option<(&str, Value)>) -> ScriptTurn {
    ScriptTurn {
        user: user.into(),
        bot: bot.into(),
        bot_ms: 1200,
        tool: tool.map(|(name, args)| (name.into(), args)),
        more_tools: Vec::new(),
    }
}

/// The default script: a Hinglish order-status call.
pub fn hinglish_script() -> Vec<ScriptTurn> {
    vec![
        turn(
            "hello, mera order kahan hai",
            "Namaste! Aapka order number bata dijiye.",
            None,
        ),
        turn(
            "order number 1 0 0 1",
            // Said only if no tool answer comes: with one, the answer's own sentence is spoken.
            "Ek minute, main aapka order dekh rahi hoon.",
            Some((
                crate::vocab::AgentName::OrderStatus.name(),
                json!({"order_number": "1001"}),
            )),
        ),
        turn(
            "theek hai, bas itna hi, bye",
            "Dhanyavaad! Aapka din shubh ho.",
            None,
        ),
    ]
}

/// A busy call for load tests: eight caller turns, five of them looking an order or a refund up
/// on the store (read-only tools: a load run never changes an order), and no goodbye, so a
/// session walks it again from the top for as long as the call lasts: a reply to every turn,
/// several turns a call, as a real support call has.
pub fn busy_script() -> Vec<ScriptTurn> {
    let status = |order: &str| {
        let args = json!({"order_number": order});
        Some((crate::vocab::AgentName::OrderStatus.name(), args))
    };
    let refund = |order: &str| {
        let args = json!({"order_number": order});
        Some((crate::vocab::AgentName::RefundStatus.name(), args))
    };
    vec![
        turn(
            "hello, mera order kahan hai",
            "Namaste! Aapka order number bata dijiye.",
            None,
        ),
        turn(
            "order number 1 0 0 1",
            "Ek minute, main dekh rahi hoon.",
            status("1001"),
        ),
        turn(
            "aur mera doosra order, 1 0 0 3?",
            "Ek minute.",
            status("1003"),
        ),
        turn(
            "order 1 0 0 6 ka refund kab aayega",
            "Main refund dekh rahi hoon.",
            refund("1006"),
        ),
        turn(
            "delivery kab tak hogi",
            "Aapka order do din mein pahunch jayega.",
            None,
        ),
        turn(
            "achha, aur 1 0 0 2 ka status?",
            "Ek minute.",
            status("1002"),
        ),
        turn("achha, ek sawaal aur hai", "Haan ji, boliye.", None),
        turn(
            "1 0 0 5 ka refund bhi dekh lijiye",
            "Main dekh rahi hoon.",
            refund("1005"),
        ),
    ]
}

/// What the simulator says for one tool answer: its `message` (an agent's outcome sentence),
/// else its facts as words ("status shipped, eta kal"), else the text itself if it is not JSON.
pub fn spoken_answer(output: &str) -> String {
    let Ok(value) = serde_json::from_str::<Value>(output) else {
        return output.chars().take(300).collect();
    };
    if let Some(message) = value["message"].as_str() {
        return message.to_string();
    }
    let Some(fields) = value.as_object() else {
        return words(&value);
    };
    let facts: Vec<String> = fields
        .iter()
        .filter(|(_, v)| !v.is_null())
        .take(8)
        .map(|(k, v)| format!("{} {}", k.replace('_', " "), words(v)))
        .collect();
    if facts.is_empty() {
        "The tool gave no answer.".to_string()
    } else {
        facts.join(", ")
    }
}

/// A JSON value as plain words.
fn words(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .take(4)
            .map(words)
            .collect::<Vec<_>>()
            .join(", "),
        Value::Object(o) => o.values().take(4).map(words).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

/// How the simulator behaves.
#[derive(Debug, Clone)]
pub struct SimulatorConfig {
    /// Turns, cycled.
    pub script: Vec<ScriptTurn>,
    /// The key clients must send (`Bearer …`); `None` accepts any.
    pub api_key: Option<String>,
    /// Close every session after this long with `session_expired` (OpenAI's is 60 minutes).
    pub session_cap: Option<Duration>,
    /// RMS above which a 20 ms frame of caller audio counts as speech.
    pub speech_rms: f64,
    /// Milliseconds of audio per `response.output_audio.delta`.
    pub delta_ms: u32,
    /// Pause before each audio delta (0: as fast as the socket takes them, like OpenAI).
    pub delta_interval: Duration,
    /// Most client events and `usage`s kept for inspection ([`Simulator::log`],
    /// [`Simulator::usage_sent`]); the server's built-in simulator keeps few, so a long run
    /// does not hold megabytes of a log nobody reads.
    pub log_capacity: usize,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        SimulatorConfig {
            script: hinglish_script(),
            api_key: None,
            session_cap: None,
            speech_rms: 700.0,
            delta_ms: 100,
            delta_interval: Duration::ZERO,
            log_capacity: LOG_CAPACITY,
        }
    }
}

/// Faults to inject; each one-shot fault clears itself when it fires.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Drop the socket (no close frame) when the next response would start.
    pub drop_next_response: bool,
    /// Drop the socket now (on the next event either way).
    pub drop_now: bool,
    /// Stop reading and writing (a half-dead socket) while set.
    pub stall: bool,
    /// Send this error code when the next response would start; close after it if `true`.
    pub error_next: Option<(String, bool)>,
    /// Wait this long before every response.
    pub response_delay: Duration,
}

/// A client event the simulator received, as JSON, with the connection it came on (0-based).
#[derive(Debug, Clone)]
pub struct Logged {
    /// Which connection.
    pub connection: usize,
    /// The event as sent (invalid ones too).
    pub event: Value,
    /// Whether it parsed as a GA client event.
    pub valid: bool,
}

struct Shared {
    config: SimulatorConfig,
    faults: Mutex<Faults>,
    log: Mutex<Vec<Logged>>,
    connections: AtomicUsize,
    /// The `usage` of every `response.done` sent (at most [`LOG_CAPACITY`]).
    usage: Mutex<Vec<Value>>,
}

/// A running simulator; dropping it stops it and every connection.
pub struct Simulator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for Simulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Most client events kept for inspection, by default.
const LOG_CAPACITY: usize = 20_000;

impl Simulator {
    /// Starts on 127.0.0.1 with a free port.
    pub async fn start(config: SimulatorConfig) -> std::io::Result<Simulator> {
        Simulator::start_on(config, 0).await
    }

    /// Starts on 127.0.0.1:`port` (0: a free one).
    pub async fn start_on(config: SimulatorConfig, port: u16) -> std::io::Result<Simulator> {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            config,
            faults: Mutex::new(Faults::default()),
            log: Mutex::new(Vec::new()),
            connections: AtomicUsize::new(0),
            usage: Mutex::new(Vec::new()),
        });
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Ok(Simulator { addr, shared, task })
    }

    /// The URL to give the `realtime` stage.
    pub fn url(&self) -> String {
        format!("ws://{}/v1/realtime", self.addr)
    }

    /// Changes the faults.
    pub fn faults(&self, change: impl FnOnce(&mut Faults)) {
        if let Ok(mut f) = self.shared.faults.lock() {
            change(&mut f);
        }
    }

    /// The `usage` of every `response.done` sent so far, in order.
    pub fn usage_sent(&self) -> Vec<Value> {
        self.shared
            .usage
            .lock()
            .map(|u| u.clone())
            .unwrap_or_default()
    }

    /// Every client event received so far.
    pub fn log(&self) -> Vec<Logged> {
        self.shared
            .log
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    // Events go out one small frame at a time, as OpenAI's do: without this,
                    // Nagle holds each behind the previous one's ACK (up to 40 ms).
                    let _ = stream.set_nodelay(true);
                    let n = shared.connections.fetch_add(1, Ordering::SeqCst);
                    connections.spawn(serve(stream, Arc::clone(&shared), n));
                }
            }
            Some(_) = connections.join_next() => {}
        }
    }
}

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

struct Conn {
    shared: Arc<Shared>,
    id: usize,
    input_pcmu: bool,
    output_pcmu: bool,
    create_response: bool,
    silence_ms: u32,
    /// Caller audio heard, ms.
    heard_ms: u64,
    /// Of it, what a response's usage has counted.
    billed_ms: u64,
    speaking: Option<u64>,
    voiced_ms: u32,
    quiet_ms: u32,
    user_items: usize,
    /// Assistant items produced: id → ms of audio sent.
    items: HashMap<String, u64>,
    /// The response being sent: (response id, item id, events still to send).
    active: Option<(String, String, VecDeque<Value>)>,
    responses: usize,
    /// The turn whose tool calls are out, and how many of them have been made.
    awaiting_tool: Option<(ScriptTurn, usize)>,
    /// Outputs received for them.
    tool_outputs: Vec<String>,
    /// `parallel_tool_calls` as the session set it.
    parallel_tools: bool,
    /// The script's next turn: each session (each call) walks the script from its start, so
    /// concurrent calls each hold a whole conversation.
    turn: usize,
    /// The last append's audio, decoded (reused).
    heard: Vec<u8>,
}

fn error_event(code: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": "invalid_request_error", "code": code, "message": message}})
}

async fn send(ws: &mut Ws, value: &Value) -> bool {
    ws.send(Message::text(value.to_string())).await.is_ok()
}

async fn serve(stream: TcpStream, shared: Arc<Shared>, id: usize) {
    let mut beta = false;
    let mut key_ok = shared.config.api_key.is_none();
    let expected = shared.config.api_key.clone();
    // The handshake API fixes the callback's error type, large as it is.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, resp: Response| {
        beta = req.headers().contains_key("openai-beta");
        if let (Some(expected), Some(got)) = (&expected, req.headers().get("authorization")) {
            key_ok = got.to_str().ok() == Some(format!("Bearer {expected}").as_str());
        }
        Ok(resp)
    };
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    if beta {
        let _ = send(&mut ws, &error_event("beta_api_shape_disabled", "The Realtime Beta API is no longer supported. Please use /v1/realtime for the GA API.")).await;
        let _ = ws
            .close(Some(CloseFrame {
                code: CloseCode::from(4000),
                reason: "beta".into(),
            }))
            .await;
        return;
    }
    if !key_ok {
        let _ = send(
            &mut ws,
            &error_event("invalid_api_key", "Incorrect API key provided."),
        )
        .await;
        let _ = ws
            .close(Some(CloseFrame {
                code: CloseCode::Policy,
                reason: "invalid_api_key".into(),
            }))
            .await;
        return;
    }
    let session = json!({"type": "session.created", "session": {"type": "realtime", "object": "realtime.session", "id": format!("sess_sim_{id}"), "model": "simulator"}});
    if !send(&mut ws, &session).await {
        return;
    }
    let mut conn = Conn {
        shared: Arc::clone(&shared),
        id,
        input_pcmu: false,
        output_pcmu: false,
        create_response: true,
        silence_ms: 500,
        heard_ms: 0,
        billed_ms: 0,
        speaking: None,
        voiced_ms: 0,
        quiet_ms: 0,
        user_items: 0,
        items: HashMap::new(),
        active: None,
        responses: 0,
        awaiting_tool: None,
        tool_outputs: Vec::new(),
        parallel_tools: false,
        turn: 0,
        heard: Vec::new(),
    };
    let cap = shared.config.session_cap;
    let expires = tokio::time::Instant::now() + cap.unwrap_or(Duration::from_secs(365 * 24 * 3600));
    loop {
        let (stall, drop_now) = conn.faults(|f| (f.stall, std::mem::take(&mut f.drop_now)));
        if drop_now {
            return; // the TCP stream is dropped without a close frame
        }
        if stall {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        let sending = conn.active.as_ref().is_some_and(|(_, _, q)| !q.is_empty());
        tokio::select! {
            biased;
            message = ws.next() => {
                let Some(Ok(message)) = message else { return };
                let alive = match message {
                    Message::Text(text) => conn.on_client(&mut ws, text.as_str()).await,
                    Message::Binary(_) => send(&mut ws, &error_event("invalid_value", "binary frames are not accepted")).await,
                    Message::Close(_) => false,
                    _ => true,
                };
                if !alive {
                    return;
                }
            }
            () = std::future::ready(()), if sending => {
                if !conn.send_next(&mut ws).await {
                    return;
                }
            }
            () = tokio::time::sleep_until(expires), if cap.is_some() => {
                let _ = send(&mut ws, &json!({"type": "error", "error": {"type": "invalid_request_error", "code": "session_expired", "message": "Your session hit the maximum duration."}})).await;
                let _ = ws.close(Some(CloseFrame { code: CloseCode::Away, reason: "session_expired".into() })).await;
                return;
            }
        }
    }
}

impl Conn {
    fn faults<T>(&self, f: impl FnOnce(&mut Faults) -> T) -> T {
        match self.shared.faults.lock() {
            Ok(mut faults) => f(&mut faults),
            Err(poisoned) => f(&mut poisoned.into_inner()),
        }
    }

    fn log(&self, event: Value, valid: bool) {
        if let Ok(mut log) = self.shared.log.lock()
            && log.len() < self.shared.config.log_capacity
        {
            log.push(Logged {
                connection: self.id,
                event,
                valid,
            });
        }
    }

    /// Handles one client message; `false` ends the connection.
    async fn on_client(&mut self, ws: &mut Ws, text: &str) -> bool {
        let raw = || serde_json::from_str(text).unwrap_or(Value::String(text.to_owned()));
        let event = match serde_json::from_str::<ClientEvent>(text) {
            Ok(e) => e,
            Err(e) => {
                self.log(raw(), false);
                return send(
                    ws,
                    &error_event("invalid_value", &format!("not a GA client event: {e}")),
                )
                .await;
            }
        };
        // Audio appends (fifty a second per call) are logged without their payload, and are
        // not parsed a second time for it.
        let logged = if matches!(event, ClientEvent::InputAudioBufferAppend { .. }) {
            json!({"type": "input_audio_buffer.append"})
        } else {
            raw()
        };
        self.log(logged, true);
        match event {
            ClientEvent::SessionUpdate { session } => {
                if session.kind != "realtime" {
                    return send(ws, &error_event("invalid_value", "session.type must be \"realtime\"")).await;
                }
                // Like the API: reasoning settings only for the models that take them.
                let model = session.model.as_deref().unwrap_or_default();
                if (session.reasoning.is_some() || session.parallel_tool_calls.is_some())
                    && !crate::stages::realtime::models::takes_reasoning(model)
                {
                    let message = format!("model {model} does not support reasoning or parallel_tool_calls");
                    return send(ws, &error_event("unknown_parameter", &message)).await;
                }
                if let Some(parallel) = session.parallel_tool_calls {
                    self.parallel_tools = parallel;
                }
                if let Some(audio) = &session.audio {
                    if let Some(format) = audio.input.as_ref().and_then(|i| i.format.as_ref()) {
                        match (format.kind.as_str(), format.rate) {
                            ("audio/pcm", Some(24000) | None) => self.input_pcmu = false,
                            ("audio/pcmu", _) => self.input_pcmu = true,
                            _ => return send(ws, &error_event("invalid_value", "input format must be audio/pcm at 24000 or audio/pcmu")).await,
                        }
                    }
                    if let Some(format) = audio.output.as_ref().and_then(|o| o.format.as_ref()) {
                        match (format.kind.as_str(), format.rate) {
                            ("audio/pcm", Some(24000) | None) => self.output_pcmu = false,
                            ("audio/pcmu", _) => self.output_pcmu = true,
                            _ => return send(ws, &error_event("invalid_value", "output format must be audio/pcm at 24000 or audio/pcmu")).await,
                        }
                    }
                    if let Some(td) = audio.input.as_ref().and_then(|i| i.turn_detection.as_ref()) {
                        self.create_response = td.create_response.unwrap_or(true);
                        self.silence_ms = td.silence_duration_ms.unwrap_or(500);
                    }
                }
                let echo = serde_json::to_value(&session).unwrap_or(Value::Null);
                send(ws, &json!({"type": "session.updated", "session": echo})).await
            }
            ClientEvent::InputAudioBufferAppend { audio } => {
                let mut bytes = std::mem::take(&mut self.heard);
                bytes.clear();
                if STANDARD.decode_vec(audio.as_bytes(), &mut bytes).is_err() {
                    self.heard = bytes;
                    return send(ws, &error_event("invalid_value", "audio is not base64")).await;
                }
                let alive = self.hear(ws, &bytes).await;
                self.heard = bytes;
                alive
            }
            ClientEvent::ConversationItemCreate { item } => {
                match &item {
                    Item::FunctionCallOutput { output, .. } if self.tool_outputs.len() < 16 => {
                        self.tool_outputs.push(output.clone());
                    }
                    // A reply the client gives back (a reconnected session's context): the
                    // script goes on after what the model is told it already said.
                    Item::Message { role, .. } if role == "assistant" => self.turn += 1,
                    _ => {}
                }
                true
            }
            ClientEvent::ConversationItemTruncate { item_id, audio_end_ms, .. } => match self.items.get(&item_id) {
                Some(produced) if audio_end_ms <= *produced => {
                    send(ws, &json!({"type": "conversation.item.truncated", "item_id": item_id, "content_index": 0, "audio_end_ms": audio_end_ms})).await
                }
                Some(produced) => {
                    let message = format!("audio_end_ms {audio_end_ms} is past the {produced} ms of audio in the item");
                    send(ws, &error_event("invalid_value", &message)).await
                }
                None => send(ws, &error_event("item_not_found", "no such item")).await,
            },
            ClientEvent::ResponseCreate { response } => {
                if let Some(instructions) = response.as_ref().and_then(|r| r["instructions"].as_str()) {
                    return self.respond_instructed(ws, instructions).await;
                }
                if self.active.is_some() {
                    return send(ws, &error_event("conversation_already_has_active_response", "Conversation already has an active response")).await;
                }
                self.respond(ws).await
            }
            ClientEvent::ResponseCancel { response_id } => {
                let matches = self.active.as_ref().is_some_and(|(id, _, _)| response_id.as_deref().is_none_or(|r| r == id));
                if !matches {
                    return send(ws, &error_event("response_cancel_not_active", "Cancellation failed: no active response found")).await;
                }
                let Some((id, _, _)) = self.active.take() else { return true };
                send(ws, &json!({"type": "response.done", "response": {"id": id, "status": "cancelled", "status_details": {"type": "cancelled", "reason": "client_cancelled"}}})).await
            }
        }
    }

    /// Server-side turn detection on caller audio, 20 ms at a time.
    async fn hear(&mut self, ws: &mut Ws, bytes: &[u8]) -> bool {
        let (rate, width): (usize, usize) = if self.input_pcmu {
            (8000, 1)
        } else {
            (24000, 2)
        };
        for frame in bytes.chunks(rate / 50 * width) {
            let samples = frame.len() / width;
            let energy: f64 = if self.input_pcmu {
                frame
                    .iter()
                    .map(|b| f64::from(ULAW_TO_LINEAR[*b as usize]).powi(2))
                    .sum()
            } else {
                frame
                    .chunks_exact(2)
                    .map(|b| f64::from(i16::from_le_bytes([b[0], b[1]])).powi(2))
                    .sum()
            };
            let rms = (energy / samples.max(1) as f64).sqrt();
            let ms = (samples * 1000 / rate) as u32;
            self.heard_ms += u64::from(ms);
            if rms > self.shared.config.speech_rms {
                self.voiced_ms += ms;
                self.quiet_ms = 0;
                if self.speaking.is_none() && self.voiced_ms >= 60 {
                    let start = self.heard_ms.saturating_sub(u64::from(self.voiced_ms));
                    self.speaking = Some(start);
                    self.user_items += 1;
                    let item = format!("item_user_{}_{}", self.id, self.user_items);
                    if !send(ws, &json!({"type": "input_audio_buffer.speech_started", "audio_start_ms": start, "item_id": item})).await {
                        return false;
                    }
                }
            } else {
                self.quiet_ms += ms;
                if self.quiet_ms >= 40 {
                    self.voiced_ms = 0;
                }
                if self.speaking.is_some() && self.quiet_ms >= self.silence_ms {
                    self.speaking = None;
                    if !self.turn_ended(ws).await {
                        return false;
                    }
                }
            }
        }
        true
    }

    async fn turn_ended(&mut self, ws: &mut Ws) -> bool {
        let item = format!("item_user_{}_{}", self.id, self.user_items);
        let end = self.heard_ms.saturating_sub(u64::from(self.quiet_ms));
        let script = &self.shared.config.script;
        let user = script
            .get(self.turn % script.len().max(1))
            .map(|t| t.user.clone())
            .unwrap_or_default();
        for event in [
            json!({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": end, "item_id": item}),
            json!({"type": "input_audio_buffer.committed", "item_id": item, "previous_item_id": null}),
            json!({"type": "conversation.item.added", "item": {"id": item, "type": "message", "role": "user", "content": [{"type": "input_audio", "transcript": null}]}}),
            json!({"type": "conversation.item.input_audio_transcription.completed", "item_id": item, "content_index": 0, "transcript": user}),
        ] {
            if !send(ws, &event).await {
                return false;
            }
        }
        if self.create_response && self.active.is_none() {
            return self.respond(ws).await;
        }
        true
    }

    /// Starts the next response: the script's tool call, or spoken audio.
    async fn respond(&mut self, ws: &mut Ws) -> bool {
        let (delay, drop, error) = self.faults(|f| {
            (
                f.response_delay,
                std::mem::take(&mut f.drop_next_response),
                f.error_next.take(),
            )
        });
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if drop {
            return false;
        }
        if let Some((code, close)) = error {
            let ok = send(ws, &error_event(&code, &format!("simulated {code}"))).await;
            if close {
                let _ = ws
                    .close(Some(CloseFrame {
                        code: CloseCode::Away,
                        reason: code.into(),
                    }))
                    .await;
                return false;
            }
            return ok;
        }
        self.responses += 1;
        let response_id = format!("resp_sim_{}_{}", self.id, self.responses);
        let script = &self.shared.config.script;
        let (turn, made) = match self.awaiting_tool.take() {
            Some(awaiting) => awaiting,
            None => {
                let n = self.turn;
                self.turn += 1;
                let Some(turn) = script.get(n % script.len().max(1)).cloned() else {
                    return true;
                };
                self.tool_outputs.clear();
                (turn, 0)
            }
        };
        let calls: Vec<(String, Value)> =
            turn.tool.iter().chain(&turn.more_tools).cloned().collect();
        let mut queue = VecDeque::new();
        queue.push_back(json!({"type": "response.created", "response": {"id": response_id, "object": "realtime.response", "status": "in_progress"}}));
        if made < calls.len() {
            // The next tool call, or all the rest at once when the session allows parallel calls.
            let take = if self.parallel_tools {
                calls.len() - made
            } else {
                1
            };
            let mut item_id = String::new();
            for (k, (name, arguments)) in calls[made..made + take].iter().enumerate() {
                item_id = format!("item_fc_{}_{}_{k}", self.id, self.responses);
                let call_id = format!("call_sim_{}_{}_{k}", self.id, self.responses);
                queue.push_back(json!({"type": "response.output_item.added", "response_id": response_id, "output_index": k, "item": {"id": item_id, "type": "function_call", "name": name, "call_id": call_id}}));
                queue.push_back(json!({"type": "response.function_call_arguments.done", "response_id": response_id, "item_id": item_id, "output_index": k, "call_id": call_id, "name": name, "arguments": arguments.to_string()}));
                queue.push_back(json!({"type": "response.output_item.done", "response_id": response_id, "output_index": k, "item": {"id": item_id, "type": "function_call"}}));
            }
            let arguments: usize = calls[made..made + take]
                .iter()
                .map(|(_, a)| a.to_string().len())
                .sum();
            let usage = self.usage(arguments / 4 + 8, 0);
            queue.push_back(json!({"type": "response.done", "response": {"id": response_id, "status": "completed", "usage": usage}}));
            self.awaiting_tool = Some((turn, made + take));
            self.active = Some((response_id, item_id, queue));
            return true;
        }
        // After a tool call the simulator says what the tool said, as a model told to speak
        // the store's facts would: the outcome's sentence, never the JSON, never the script's
        // own line (which could claim what the store did not).
        let text = if self.tool_outputs.is_empty() {
            turn.bot.clone()
        } else {
            let said: Vec<String> = self.tool_outputs.iter().map(|o| spoken_answer(o)).collect();
            said.join(" ")
        };
        self.tool_outputs.clear();
        self.speak(queue, response_id, &text, turn.bot_ms);
        true
    }

    /// A response the client asked for with its own instructions (a prompt, a filler, an
    /// agent's note): a short spoken line that leaves the script and any tool turn where they
    /// are.
    async fn respond_instructed(&mut self, ws: &mut Ws, instructions: &str) -> bool {
        if self.active.is_some() {
            return send(
                ws,
                &error_event(
                    "conversation_already_has_active_response",
                    "Conversation already has an active response",
                ),
            )
            .await;
        }
        self.responses += 1;
        let response_id = format!("resp_sim_{}_{}", self.id, self.responses);
        let mut queue = VecDeque::new();
        queue.push_back(json!({"type": "response.created", "response": {"id": response_id, "object": "realtime.response", "status": "in_progress"}}));
        let text: String = instructions.chars().take(60).collect();
        self.speak(queue, response_id, &format!("(instructed) {text}"), 600);
        true
    }

    /// A response's `usage`, in Realtime's shape, made up the way the API counts: the caller
    /// audio heard since the last response (1 token per 100 ms), the session's instructions and
    /// history as text (cached after the first response), the reply's transcript as text
    /// (`text_out`, 4 characters a token) and its audio (1 token per 50 ms). Recorded for
    /// [`Simulator::usage_sent`].
    fn usage(&mut self, text_out: usize, audio_out_ms: u64) -> Value {
        let audio_in = self.heard_ms.saturating_sub(self.billed_ms) / 100;
        self.billed_ms = self.heard_ms;
        let text_in = 400 + 40 * self.responses as u64;
        let text_cached = if self.responses > 1 { 384 } else { 0 };
        let text_out = text_out as u64;
        let audio_out = audio_out_ms / 50;
        let usage = json!({
            "total_tokens": text_in + audio_in + text_out + audio_out,
            "input_tokens": text_in + audio_in,
            "output_tokens": text_out + audio_out,
            "input_token_details": {"text_tokens": text_in, "audio_tokens": audio_in, "image_tokens": 0,
                "cached_tokens": text_cached,
                "cached_tokens_details": {"text_tokens": text_cached, "audio_tokens": 0, "image_tokens": 0}},
            "output_token_details": {"text_tokens": text_out, "audio_tokens": audio_out},
        });
        if let Ok(mut sent) = self.shared.usage.lock()
            && sent.len() < self.shared.config.log_capacity
        {
            sent.push(usage.clone());
        }
        usage
    }

    /// Queues a spoken reply: audio deltas of synthetic voice with the transcript spread over
    /// them, then the done events.
    fn speak(&mut self, mut queue: VecDeque<Value>, response_id: String, text: &str, bot_ms: u32) {
        let item_id = format!("item_bot_{}_{}", self.id, self.responses);
        queue.push_back(json!({"type": "rate_limits.updated", "rate_limits": [{"name": "tokens", "limit": 100000, "remaining": 99000, "reset_seconds": 1.0}]}));
        queue.push_back(json!({"type": "response.output_item.added", "response_id": response_id, "output_index": 0, "item": {"id": item_id, "type": "message", "role": "assistant"}}));
        queue.push_back(json!({"type": "response.content_part.added", "response_id": response_id, "item_id": item_id, "output_index": 0, "content_index": 0, "part": {"type": "audio", "transcript": ""}}));
        let rate = if self.output_pcmu { 8000 } else { 24000 };
        let pcm = signal::vowels(rate, bot_ms as f32 / 1000.0);
        let per = (rate * self.shared.config.delta_ms.max(10) / 1000) as usize;
        let words: Vec<&str> = text.split_whitespace().collect();
        let chunks = pcm.chunks(per).count().max(1);
        for (i, chunk) in pcm.chunks(per).enumerate() {
            let bytes: Vec<u8> = if self.output_pcmu {
                chunk.iter().map(|s| linear_to_ulaw(*s)).collect()
            } else {
                chunk.iter().flat_map(|s| s.to_le_bytes()).collect()
            };
            let ms = chunk.len() as u64 * 1000 / u64::from(rate);
            queue.push_back(json!({"type": "response.output_audio.delta", "response_id": response_id, "item_id": item_id, "output_index": 0, "content_index": 0, "delta": STANDARD.encode(bytes), "_ms": ms}));
            let from = i * words.len() / chunks;
            let to = (i + 1) * words.len() / chunks;
            if to > from {
                let delta = format!("{} ", words[from..to].join(" "));
                queue.push_back(json!({"type": "response.output_audio_transcript.delta", "response_id": response_id, "item_id": item_id, "output_index": 0, "content_index": 0, "delta": delta}));
            }
        }
        queue.push_back(json!({"type": "response.output_audio.done", "response_id": response_id, "item_id": item_id, "output_index": 0, "content_index": 0}));
        queue.push_back(json!({"type": "response.output_audio_transcript.done", "response_id": response_id, "item_id": item_id, "output_index": 0, "content_index": 0, "transcript": text}));
        queue.push_back(json!({"type": "response.output_item.done", "response_id": response_id, "output_index": 0, "item": {"id": item_id, "type": "message", "role": "assistant", "status": "completed"}}));
        let usage = self.usage(text.len() / 4 + 1, u64::from(bot_ms));
        queue.push_back(json!({"type": "response.done", "response": {"id": response_id, "status": "completed", "usage": usage}}));
        self.items.insert(item_id.clone(), 0);
        self.active = Some((response_id, item_id, queue));
    }

    /// Sends the next event of the active response.
    async fn send_next(&mut self, ws: &mut Ws) -> bool {
        let Some((_, item_id, queue)) = self.active.as_mut() else {
            return true;
        };
        let Some(mut event) = queue.pop_front() else {
            return true;
        };
        if let Some(ms) = event.get("_ms").and_then(Value::as_u64) {
            let pause = self.shared.config.delta_interval;
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            if let Some(produced) = self.items.get_mut(item_id.as_str()) {
                *produced += ms;
            }
            if let Some(obj) = event.as_object_mut() {
                obj.remove("_ms");
            }
        }
        let done = event["type"] == "response.done";
        let ok = send(ws, &event).await;
        if done {
            self.active = None;
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_busy_script_looks_orders_up_eight_turns_long_and_never_says_goodbye() {
        let script = busy_script();
        assert_eq!(script.len(), 8);
        let tools: Vec<&(String, Value)> = script.iter().filter_map(|t| t.tool.as_ref()).collect();
        assert_eq!(tools.len(), 5);
        for (name, args) in tools {
            let agent = crate::vocab::AgentName::from_name(name)
                .unwrap_or_else(|| panic!("{name} is an agent"));
            // A load run reads the store; it never changes an order.
            assert!(
                !crate::commerce::catalog::entry(agent).destructive,
                "{name}"
            );
            assert!(args["order_number"].is_string(), "{args}");
        }
        assert!(script.iter().all(|t| !t.user.contains("bye")));
    }

    #[test]
    fn a_tool_answer_is_spoken_as_its_sentence_or_its_facts_never_as_json() {
        let outcome = r#"{"status":"not_configured","message":"The store is not connected yet, so I cannot look up orders.","details":{"x":1}}"#;
        assert_eq!(
            spoken_answer(outcome),
            "The store is not connected yet, so I cannot look up orders."
        );
        let facts =
            spoken_answer(r#"{"status":"shipped","eta":"kal","tracking":{"number":"BD1"}}"#);
        assert_eq!(facts, "eta kal, status shipped, tracking BD1");
        for answer in [
            outcome,
            r#"{"a":[1,2],"b":null}"#,
            "[1, {\"x\": 2}]",
            "{}",
            "null",
        ] {
            let said = spoken_answer(answer);
            assert!(!said.contains(['{', '}', '"']), "{answer} -> {said}");
        }
        assert_eq!(spoken_answer("plain words"), "plain words");
    }
}
