//! `caly simulate`: a load generator that acts as Exotel.
//!
//! Each simulated call connects to the stream endpoint (tokio-tungstenite), sends `connected`
//! and `start`, then streams caller audio in real time from a WAV (or generated speech-like
//! audio), plays the bot's audio back at real time and echoes each `mark` once the audio before
//! it has "played", honours `clear`, and ends with `stop`. Calls start staggered.
//!
//! What it measures:
//! - **added latency**: when the bot is quiet, a call sends a DTMF key; the test bot
//!   (`tone_responder`) answers every key with a 1 kHz tone at once, so the time to the first
//!   chunk of that tone is the server's whole in-band round trip (ring, front half, bot,
//!   playback, chunker, socket). A probe whose first reply chunk is not the probe tone (a turn's
//!   reply got in first) is discarded;
//! - **bot first-byte time**: from the end of each caller utterance to the first chunk of the
//!   turn's reply (this includes the VAD's `stop_ms` by design);
//! - **late frames**: bot chunks that arrive after the previous one finished playing (a gap
//!   the caller hears), and caller chunks the simulator itself sent late;
//! - **dropped frames**: audio the server's rings dropped, from its `/metrics`, and bot chunks
//!   the server sent after the caller's playback had run dry (its own count of late frames);
//! - the server's CPU and RSS per call, from `/proc/<pid>` when `--server-pid` is given.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::devtools::signal;
use crate::devtools::wav::read_wav_mono;

/// Bot tones `tone_responder` uses by default (`pipelines/tone_bot.toml`).
const TURN_HZ: f64 = 440.0;
const PROBE_HZ: f64 = 1000.0;
/// A probe is sent at most this often per call.
const PROBE_EVERY: Duration = Duration::from_secs(2);
/// A bot chunk arriving this long after the previous one finished starts a new reply.
const NEW_REPLY_GAP: Duration = Duration::from_millis(400);

/// Why the client failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The WebSocket handshake or a send failed.
    #[error("websocket: {0}")]
    Ws(#[from] tungstenite::Error),
    /// The URL is not usable.
    #[error("bad url: {0}")]
    Url(String),
    /// Reading a file failed.
    #[error("{0}")]
    Input(String),
    /// The server ended the call other than normally (close code, if one came).
    #[error("the server ended the call abnormally (close code {0:?})")]
    Ended(Option<u16>),
}

/// A message from the server, as Exotel would see it.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerMessage {
    /// Bot audio (PCM16 samples).
    Media(Vec<i16>),
    /// A mark to echo once the audio before it has played.
    Mark(String),
    /// Drop unplayed audio.
    Clear,
    /// The server closed the socket, with its close code.
    Close(Option<u16>),
    /// Anything else, verbatim.
    Other(String),
}

/// An Exotel AgentStream client (the Voicebot applet's side of the socket).
pub struct ExotelClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    stream_sid: String,
    seq: u64,
    chunk: u64,
}

impl ExotelClient {
    /// Connects, with `user:password` Basic auth if given, and sends `connected`.
    pub async fn connect(url: &str, auth: Option<&str>) -> Result<ExotelClient, ClientError> {
        let mut request = url.into_client_request()?;
        if let Some(auth) = auth {
            let value = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(auth)
            );
            let header = value
                .parse()
                .map_err(|_| ClientError::Url("bad auth".into()))?;
            request.headers_mut().insert("authorization", header);
        }
        let (ws, _) = tokio_tungstenite::connect_async_with_config(request, None, true).await?;
        let mut client = ExotelClient {
            ws,
            stream_sid: String::new(),
            seq: 0,
            chunk: 0,
        };
        client
            .send_text(r#"{"event":"connected"}"#.to_owned())
            .await?;
        Ok(client)
    }

    /// Sends `start` for a call.
    pub async fn start(
        &mut self,
        stream_sid: &str,
        call_sid: &str,
        rate: u32,
    ) -> Result<(), ClientError> {
        self.stream_sid = stream_sid.to_owned();
        self.seq += 1;
        let msg = serde_json::json!({
            "event": "start",
            "sequence_number": self.seq.to_string(),
            "stream_sid": stream_sid,
            "start": {
                "stream_sid": stream_sid,
                "call_sid": call_sid,
                "account_sid": "ACsimulated",
                "from": "+919800000000",
                "to": "+918000000000",
                "custom_parameters": {},
                "media_format": {"encoding": "audio/x-raw", "sample_rate": rate.to_string(), "bit_rate": "16"}
            }
        });
        self.send_text(msg.to_string()).await
    }

    /// Sends caller audio as one `media` message.
    pub async fn media(&mut self, pcm: &[i16]) -> Result<(), ClientError> {
        let bytes: Vec<u8> = pcm.iter().flat_map(|s| s.to_le_bytes()).collect();
        self.media_bytes(&bytes).await
    }

    /// Sends raw bytes as one `media` message (tests send odd sizes with it).
    pub async fn media_bytes(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.seq += 1;
        self.chunk += 1;
        let payload = base64::engine::general_purpose::STANDARD.encode(bytes);
        let text = format!(
            r#"{{"event":"media","sequence_number":"{}","stream_sid":"{}","media":{{"chunk":"{}","timestamp":"0","payload":"{payload}"}}}}"#,
            self.seq, self.stream_sid, self.chunk
        );
        self.send_text(text).await
    }

    /// Sends a DTMF key.
    pub async fn dtmf(&mut self, digit: char) -> Result<(), ClientError> {
        self.seq += 1;
        let text = format!(
            r#"{{"event":"dtmf","sequence_number":{},"stream_sid":"{}","dtmf":{{"digit":"{digit}","duration":"100"}}}}"#,
            self.seq, self.stream_sid
        );
        self.send_text(text).await
    }

    /// Echoes a mark: the audio before it has played.
    pub async fn mark(&mut self, name: &str) -> Result<(), ClientError> {
        self.seq += 1;
        let msg = serde_json::json!({"event": "mark", "sequence_number": self.seq, "stream_sid": self.stream_sid, "mark": {"name": name}});
        self.send_text(msg.to_string()).await
    }

    /// Sends `stop` (the caller hung up).
    pub async fn stop(&mut self) -> Result<(), ClientError> {
        self.seq += 1;
        let msg = serde_json::json!({"event": "stop", "sequence_number": self.seq.to_string(), "stream_sid": self.stream_sid, "stop": {"call_sid": "-", "reason": "callended"}});
        self.send_text(msg.to_string()).await
    }

    /// Sends any text frame.
    pub async fn send_text(&mut self, text: String) -> Result<(), ClientError> {
        Ok(self.ws.send(Message::text(text)).await?)
    }

    /// Sends a binary frame.
    pub async fn send_binary(&mut self, bytes: Vec<u8>) -> Result<(), ClientError> {
        Ok(self.ws.send(Message::binary(bytes)).await?)
    }

    /// Closes the socket.
    pub async fn close(&mut self) {
        let _ = self.ws.close(None).await;
    }

    /// The next message from the server; `None` once the socket is gone.
    pub async fn recv(&mut self) -> Option<ServerMessage> {
        loop {
            let msg = match self.ws.next().await? {
                Ok(m) => m,
                Err(_) => return Some(ServerMessage::Close(None)),
            };
            return Some(match msg {
                Message::Text(t) => parse_server(t.as_str()),
                Message::Close(frame) => ServerMessage::Close(frame.map(|f| f.code.into())),
                Message::Binary(_) | Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {
                    continue;
                }
            });
        }
    }
}

/// Reads one server message.
pub fn parse_server(text: &str) -> ServerMessage {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else {
        return ServerMessage::Other(text.to_owned());
    };
    match v["event"].as_str() {
        Some("media") => {
            let payload = v["media"]["payload"].as_str().unwrap_or("");
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(payload)
                .unwrap_or_default();
            ServerMessage::Media(
                bytes
                    .chunks_exact(2)
                    .map(|b| i16::from_le_bytes([b[0], b[1]]))
                    .collect(),
            )
        }
        Some("mark") => ServerMessage::Mark(v["mark"]["name"].as_str().unwrap_or("").to_owned()),
        Some("clear") => ServerMessage::Clear,
        _ => ServerMessage::Other(text.to_owned()),
    }
}

/// Level in dB (full scale) of a tone at `hz` in `pcm` (Goertzel).
pub fn tone_db(pcm: &[i16], rate: u32, hz: f64) -> f64 {
    if pcm.is_empty() {
        return f64::NEG_INFINITY;
    }
    let w = 2.0 * std::f64::consts::PI * hz / f64::from(rate);
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for x in pcm {
        let s = f64::from(*x) / 32768.0 + coeff * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    let amplitude = 2.0 * power.max(0.0).sqrt() / pcm.len() as f64;
    20.0 * amplitude.max(1e-12).log10()
}

/// Which tone a bot chunk carries.
fn classify(pcm: &[i16], rate: u32) -> Option<bool> {
    let probe = tone_db(pcm, rate, PROBE_HZ);
    let turn = tone_db(pcm, rate, TURN_HZ);
    if probe.max(turn) < -40.0 {
        None
    } else {
        Some(probe > turn)
    }
}

/// `GET path` on a plain HTTP/1.1 server; returns (status, body).
pub async fn http_get(addr: &str, path: &str) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("no status line")?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    // Chunked bodies: good enough for our own small responses.
    let body = if text
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

/// Sum of a counter family in a Prometheus/OpenMetrics exposition.
pub fn metric_sum(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Cumulative bucket counts of a histogram in an exposition: (upper bound, count).
pub fn histogram_buckets(exposition: &str, name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{le=\"");
    let mut out: Vec<(f64, f64)> = exposition
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (le, rest) = rest.split_once('"')?;
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            let count = rest.rsplit(' ').next()?.parse().ok()?;
            Some((bound, count))
        })
        .collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// The bucket bound under which the `q` quantile of what was observed between two expositions
/// falls (`None` if nothing was observed).
pub fn histogram_quantile(before: &str, after: &str, name: &str, q: f64) -> Option<(f64, u64)> {
    let b = histogram_buckets(before, name);
    let a = histogram_buckets(after, name);
    let delta: Vec<(f64, f64)> = a
        .iter()
        .map(|(le, n)| {
            (
                *le,
                n - b.iter().find(|(l, _)| l == le).map_or(0.0, |(_, m)| *m),
            )
        })
        .collect();
    let total = delta.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let bound = delta.iter().find(|(_, n)| *n >= q * total)?.0;
    Some((bound, total as u64))
}

/// How a load run is set up.
#[derive(Debug, Clone)]
pub struct SimulateOptions {
    /// The stream URL, e.g. `ws://127.0.0.1:8080/v1/exotel/stream?sample-rate=8000`.
    pub url: String,
    /// Concurrent calls.
    pub calls: usize,
    /// Caller audio (a WAV at the stream's rate); generated speech-like audio without it.
    pub audio: Option<PathBuf>,
    /// How long each call lasts.
    pub duration: Duration,
    /// Milliseconds of audio per `media` message (Exotel's pages say about 100).
    pub chunk_ms: u32,
    /// Starts are spread over this long.
    pub stagger: Duration,
    /// Speak over the bot as soon as a reply starts.
    pub barge_in: bool,
    /// With `barge_in`: the audio's ground truth (a `truth.json` as `fixtures/generate.py`
    /// writes it, keyed by the WAV's file name). Each reply then gets the next item spoken
    /// over it from its true onset: sentences are timed to `clear`, backchannels must get none.
    pub truth: Option<PathBuf>,
    /// Send DTMF probes to measure added latency.
    pub probes: bool,
    /// The server's pid, to read its CPU and memory from `/proc`.
    pub server_pid: Option<u32>,
    /// `user:password` for the stream.
    pub auth: Option<String>,
}

/// p50 / p99 / max of a set of durations, in ms.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Summary {
    /// Samples.
    pub n: usize,
    /// Median, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// 95th percentile, ms.
    pub p95_ms: f64,
    /// Largest, ms.
    pub max_ms: f64,
}

impl Summary {
    /// Summarises samples.
    pub fn of(mut v: Vec<Duration>) -> Summary {
        if v.is_empty() {
            return Summary::default();
        }
        v.sort();
        let at = |q: f64| {
            let i = ((v.len() as f64 - 1.0) * q).round() as usize;
            v[i.min(v.len() - 1)].as_secs_f64() * 1000.0
        };
        Summary {
            n: v.len(),
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            p95_ms: at(0.95),
            max_ms: at(1.0),
        }
    }
}

/// The result of a load run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SimReport {
    /// This run's tag: call `i` was `CAsim{run}{i:06}` ([`call_sid`]).
    pub run: String,
    /// Calls asked for.
    pub calls: usize,
    /// Calls that streamed to the end.
    pub completed: usize,
    /// Calls that failed (refused, socket lost, …).
    pub failed: usize,
    /// Failure messages, one per distinct error.
    pub errors: Vec<String>,
    /// DTMF probe → first probe-tone chunk.
    pub added_latency: Summary,
    /// Probes whose reply queued behind a turn's reply (not counted).
    pub probes_discarded: usize,
    /// End of a caller utterance → first chunk of the turn's reply.
    pub first_byte: Summary,
    /// Bot chunks that arrived after the previous one finished playing (as this client saw it).
    pub late_bot_chunks: u64,
    /// Bot chunks the server sent after the caller's playback had run dry (its `/metrics`).
    pub server_underruns: u64,
    /// Caller chunks the simulator sent more than one chunk late.
    pub late_caller_chunks: u64,
    /// `clear` messages received.
    pub clears: u64,
    /// With `--barge-in`: the caller's speech over a reply starting → `clear` received (with
    /// `--truth`: from the sentence's true onset, as the caller said it).
    pub barge_in_reaction: Summary,
    /// With `--truth`: backchannels spoken over a reply that got no `clear`.
    pub backchannels_held: u64,
    /// With `--truth`: backchannels spoken over a reply that got a `clear` (false barge-ins).
    pub backchannel_clears: u64,
    /// Caller audio the server's rings dropped, in ms (from `/metrics`).
    pub dropped_ms: f64,
    /// From the server's latency ledger: p99 of Caly's own share of a turn (first model audio
    /// → first chunk to Exotel), as the histogram bucket bound it falls under, ms; and turns.
    pub engine_share_p99_ms: Option<(f64, u64)>,
    /// From the ledger: p50 bucket bound of voice-to-voice (end of the caller's speech as first
    /// detected, by Caly's VAD or the model's → first chunk sent), ms.
    pub voice_to_voice_p50_ms: Option<f64>,
    /// Server CPU per call, % of one core, while all calls streamed.
    pub cpu_per_call_pct: Option<f64>,
    /// Server RSS growth per call, KiB, while all calls streamed.
    pub rss_per_call_kib: Option<f64>,
    /// Server RSS before the run, KiB.
    pub rss_baseline_kib: Option<f64>,
}

#[derive(Default)]
struct Collected {
    added: Vec<Duration>,
    first_byte: Vec<Duration>,
    discarded: usize,
    late_bot: u64,
    late_caller: u64,
    clears: u64,
    barge: Vec<Duration>,
    held: u64,
    cut: u64,
    completed: usize,
    errors: Vec<String>,
}

/// One item of a fixture's ground truth, in samples.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Onset {
    start: usize,
    end: usize,
    backchannel: bool,
}

/// The items `truth` (a `truth.json`) lists for `audio`, in samples at `rate`.
fn onsets(
    truth: &std::path::Path,
    audio: &std::path::Path,
    rate: u32,
) -> Result<Vec<Onset>, ClientError> {
    let text = std::fs::read_to_string(truth)
        .map_err(|e| ClientError::Input(format!("{}: {e}", truth.display())))?;
    let all: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| ClientError::Input(format!("{}: {e}", truth.display())))?;
    let name = audio
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let items = all[name].as_array().ok_or_else(|| {
        ClientError::Input(format!("{} has no entry for {name}", truth.display()))
    })?;
    let at = |v: &serde_json::Value| (v.as_f64().unwrap_or(0.0) * f64::from(rate)) as usize;
    let found: Vec<Onset> = items
        .iter()
        .map(|i| Onset {
            start: at(&i["start"]),
            end: at(&i["end"]),
            backchannel: i["kind"] == "backchannel",
        })
        .filter(|o| o.end > o.start)
        .collect();
    if found.is_empty() {
        return Err(ClientError::Input(format!(
            "{} lists no speech for {name}",
            truth.display()
        )));
    }
    Ok(found)
}

fn rate_of(url: &str) -> u32 {
    crate::http::exotel::rate_from_query(url.split_once('?').map(|(_, q)| q)).unwrap_or(8000)
}

fn host_of(url: &str) -> Result<String, ClientError> {
    let rest = url
        .strip_prefix("ws://")
        .or_else(|| url.strip_prefix("wss://"))
        .ok_or_else(|| ClientError::Url(url.to_owned()))?;
    Ok(rest.split(['/', '?']).next().unwrap_or(rest).to_owned())
}

/// Whether the server at `url` runs a pipeline that talks to a model (`/readyz` says
/// `realtime` is `openai` or `simulator`): there a key press is the caller typing (the keypad),
/// not a latency probe.
pub async fn talks_to_a_model(url: &str) -> bool {
    let Ok(host) = host_of(url) else {
        return false;
    };
    http_get(&host, "/readyz").await.is_ok_and(|(_, body)| {
        serde_json::from_str::<serde_json::Value>(&body)
            .is_ok_and(|v| matches!(v["realtime"].as_str(), Some("openai" | "simulator")))
    })
}

/// Generated caller audio: utterances of 1.2–2 s of speech-like sound between 1.5 s pauses.
fn generated_speech(rate: u32) -> Vec<i16> {
    let mut pcm = Vec::new();
    for (i, secs) in [1.6f32, 1.2, 2.0, 1.4].iter().enumerate() {
        pcm.extend(signal::silence(rate, 1.5));
        let mut v = signal::vowels(rate, *secs);
        if i % 2 == 1 {
            v.iter_mut().for_each(|s| *s /= 2);
        }
        pcm.extend(v);
    }
    pcm.extend(signal::silence(rate, 1.5));
    pcm
}

/// Sample positions where speech ends (a 20 ms energy gate), for first-byte timing.
fn speech_ends(pcm: &[i16], rate: u32) -> Vec<usize> {
    let win = (rate / 50) as usize;
    let mut ends = Vec::new();
    let mut speaking = false;
    let mut quiet = 0;
    for (i, w) in pcm.chunks(win).enumerate() {
        let rms = (w.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>() / w.len() as f64).sqrt();
        if rms > 500.0 {
            speaking = true;
            quiet = 0;
        } else if speaking {
            quiet += 1;
            if quiet == 10 {
                ends.push((i + 1 - 10) * win);
                speaking = false;
            }
        }
    }
    ends
}

/// Runs the load.
pub async fn run(options: SimulateOptions) -> Result<SimReport, ClientError> {
    let rate = rate_of(&options.url);
    let host = host_of(&options.url)?;
    let audio = match &options.audio {
        Some(path) => {
            let (r, pcm) = read_wav_mono(path).map_err(ClientError::Input)?;
            if r != rate {
                return Err(ClientError::Input(format!(
                    "{} is {r} Hz but the stream is {rate} Hz",
                    path.display()
                )));
            }
            pcm
        }
        None => generated_speech(rate),
    };
    let truth = match (&options.truth, &options.audio) {
        (Some(truth), Some(audio)) => onsets(truth, audio, rate)?,
        (Some(_), None) => {
            return Err(ClientError::Input(
                "--truth needs the --audio it describes".into(),
            ));
        }
        _ => Vec::new(),
    };
    let truth = Arc::new(truth);
    let audio = Arc::new(audio);
    let ends = Arc::new(speech_ends(&audio, rate));
    let before = http_get(&host, "/metrics").await.ok().map(|(_, b)| b);
    let proc_before = options.server_pid.and_then(read_proc);
    let collected = Arc::new(Mutex::new(Collected::default()));
    let run = run_tag();
    let mut tasks = tokio::task::JoinSet::new();
    let started = Instant::now();
    for i in 0..options.calls {
        let offset = if options.calls > 1 {
            options.stagger.mul_f64(i as f64 / options.calls as f64)
        } else {
            Duration::ZERO
        };
        let (run, options, audio, ends, truth, collected) = (
            run.clone(),
            options.clone(),
            Arc::clone(&audio),
            Arc::clone(&ends),
            Arc::clone(&truth),
            Arc::clone(&collected),
        );
        tasks.spawn(async move {
            tokio::time::sleep(offset).await;
            let result = one_call(&run, i, rate, &options, &audio, &ends, &truth).await;
            let mut c = collected.lock().await;
            match result {
                Ok(call) => {
                    c.completed += 1;
                    c.added.extend(call.added);
                    c.first_byte.extend(call.first_byte);
                    c.discarded += call.discarded;
                    c.late_bot += call.late_bot;
                    c.late_caller += call.late_caller;
                    c.clears += call.clears;
                    c.barge.extend(call.barge);
                    c.held += call.held;
                    c.cut += call.cut;
                }
                Err(e) => {
                    let e = e.to_string();
                    if !c.errors.contains(&e) {
                        c.errors.push(e);
                    }
                }
            }
        });
    }
    // Sample the server in the middle of the steady state, when every call is streaming.
    let steady_from = options.stagger + Duration::from_secs(1);
    let steady = options
        .duration
        .saturating_sub(Duration::from_secs(2))
        .min(Duration::from_secs(10));
    let mut usage = None;
    if let Some(pid) = options.server_pid
        && options.duration > steady_from
    {
        tokio::time::sleep_until((started + steady_from).into()).await;
        let a = read_proc(pid);
        let t = Instant::now();
        tokio::time::sleep(steady).await;
        let b = read_proc(pid);
        if let (Some(a), Some(b)) = (a, b) {
            usage = Some((a, b, t.elapsed()));
        }
    }
    while tasks.join_next().await.is_some() {}
    let after = http_get(&host, "/metrics").await.ok().map(|(_, b)| b);
    let c = std::mem::take(&mut *collected.lock().await);
    let calls = options.calls.max(1) as f64;
    let mut report = SimReport {
        run,
        calls: options.calls,
        completed: c.completed,
        failed: options.calls - c.completed,
        errors: c.errors,
        added_latency: Summary::of(c.added),
        probes_discarded: c.discarded,
        first_byte: Summary::of(c.first_byte),
        late_bot_chunks: c.late_bot,
        late_caller_chunks: c.late_caller,
        clears: c.clears,
        barge_in_reaction: Summary::of(c.barge),
        backchannels_held: c.held,
        backchannel_clears: c.cut,
        ..SimReport::default()
    };
    if let (Some(b), Some(a)) = (before, after) {
        let dropped =
            metric_sum(&a, "caly_ring_dropped_total") - metric_sum(&b, "caly_ring_dropped_total");
        // Ring units are bytes on the caller's edge (pcm16le) and samples after decoding;
        // count them as samples at the stream's rate: an upper bound in ms.
        report.dropped_ms = dropped / f64::from(rate) * 1000.0;
        report.engine_share_p99_ms = histogram_quantile(&b, &a, "caly_turn_engine_seconds", 0.99)
            .map(|(le, n)| (le * 1000.0, n));
        report.voice_to_voice_p50_ms =
            histogram_quantile(&b, &a, "caly_voice_to_voice_sent_seconds", 0.5)
                .map(|(le, _)| le * 1000.0);
    }
    if let Some((a, b, window)) = usage {
        let cpu = (b.cpu_ticks - a.cpu_ticks) as f64 / 100.0;
        report.cpu_per_call_pct = Some(cpu / window.as_secs_f64() / calls * 100.0);
        if let Some(base) = proc_before {
            report.rss_baseline_kib = Some(base.rss_kib as f64);
            report.rss_per_call_kib = Some((b.rss_kib as f64 - base.rss_kib as f64) / calls);
        }
    }
    Ok(report)
}

/// What a soak measured on the server (its `/metrics`: resident memory and alive tasks) before
/// the sequential calls, while they ran, after them, and after a concurrent batch.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SoakReport {
    /// Calls made one after another.
    pub sequential: usize,
    /// Of those, how many failed.
    pub sequential_failed: usize,
    /// How long they took.
    pub sequential_secs: f64,
    /// The concurrent batches that followed (`calls` at once each), if any.
    pub concurrent: Vec<SimReport>,
    /// (calls so far, server RSS KiB, server alive tasks), sampled with the server idle.
    pub samples: Vec<(usize, f64, f64)>,
    /// Least-squares slope of the server's RSS over the sequential calls, bytes per call.
    pub rss_slope_bytes_per_call: f64,
    /// Server RSS (KiB) and tasks after each concurrent batch, with the server idle again.
    pub after_concurrent: Vec<(f64, f64)>,
}

impl SoakReport {
    /// Whether the server's alive tasks came back to where they started, after the sequential
    /// calls and after the concurrent ones (the server idle each time).
    pub fn tasks_back_to_baseline(&self) -> bool {
        let Some(first) = self.samples.first() else {
            return false;
        };
        let seq_ok = self.samples.last().is_some_and(|last| last.2 <= first.2);
        let conc_ok = self
            .after_concurrent
            .iter()
            .all(|(_, tasks)| *tasks <= first.2);
        seq_ok && conc_ok
    }

    /// Human-readable summary.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let first = self.samples.first().copied().unwrap_or_default();
        let last = self.samples.last().copied().unwrap_or_default();
        out.push_str(&format!(
            "sequential: {} calls in {:.1} s, {} failed\n",
            self.sequential, self.sequential_secs, self.sequential_failed
        ));
        out.push_str(&format!(
            "server RSS: {:.0} KiB at start -> {:.0} KiB after them; slope {:+.1} bytes/call over {} samples\n",
            first.1,
            last.1,
            self.rss_slope_bytes_per_call,
            self.samples.len()
        ));
        out.push_str(&format!(
            "server tasks: {:.0} at start -> {:.0} after them\n",
            first.2, last.2
        ));
        for (i, (c, (rss, tasks))) in self
            .concurrent
            .iter()
            .zip(&self.after_concurrent)
            .enumerate()
        {
            out.push_str(&format!(
                "burst {}: {} calls at once, {} completed, {} failed; then RSS {rss:.0} KiB, tasks {tasks:.0}\n",
                i + 1,
                c.calls,
                c.completed,
                c.failed
            ));
        }
        out
    }
}

/// Waits until the server has no call and no queued record (and its recorder's batch window
/// has passed), then reads its RSS (KiB) and alive tasks.
async fn idle_sample(host: &str) -> Option<(f64, f64)> {
    for _ in 0..600 {
        let (_, text) = http_get(host, "/metrics").await.ok()?;
        if metric_sum(&text, "caly_calls_active") == 0.0
            && metric_sum(&text, "caly_store_queue_depth") == 0.0
        {
            tokio::time::sleep(Duration::from_millis(1200)).await;
            let (_, text) = http_get(host, "/metrics").await.ok()?;
            return Some((
                metric_sum(&text, "caly_process_resident_memory_bytes") / 1024.0,
                metric_sum(&text, "caly_runtime_alive_tasks"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Least-squares slope of `y` over `x` (0 with fewer than two points or one `x`).
pub fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let num: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let den: f64 = points.iter().map(|p| (p.0 - mx) * (p.0 - mx)).sum();
    if den == 0.0 { 0.0 } else { num / den }
}

/// The soak: `sequential` calls one after another (the server sampled idle about 20 times),
/// then `bursts` times `options.calls` at once, the server sampled idle after each.
pub async fn soak(
    options: SimulateOptions,
    sequential: usize,
    bursts: usize,
) -> Result<SoakReport, ClientError> {
    let rate = rate_of(&options.url);
    let host = host_of(&options.url)?;
    let audio = Arc::new(generated_speech(rate));
    let ends = speech_ends(&audio, rate);
    let tag = run_tag();
    // Warm up: pools, caches and the runtime's slabs reach their working size.
    for i in 0..20 {
        let _ = one_call(&tag, 1_000_000 + i, rate, &options, &audio, &ends, &[]).await;
    }
    let mut report = SoakReport {
        sequential,
        ..SoakReport::default()
    };
    let every = (sequential / 20).max(1);
    if let Some((rss, tasks)) = idle_sample(&host).await {
        report.samples.push((0, rss, tasks));
    }
    let started = Instant::now();
    for i in 0..sequential {
        if one_call(&tag, i, rate, &options, &audio, &ends, &[])
            .await
            .is_err()
        {
            report.sequential_failed += 1;
        }
        if (i + 1) % every == 0 || i + 1 == sequential {
            let paused = Instant::now();
            if let Some((rss, tasks)) = idle_sample(&host).await {
                report.samples.push((i + 1, rss, tasks));
            }
            // Sampling time is not call time.
            report.sequential_secs -= paused.elapsed().as_secs_f64();
        }
    }
    report.sequential_secs += started.elapsed().as_secs_f64();
    let points: Vec<(f64, f64)> = report
        .samples
        .iter()
        .map(|(n, rss, _)| (*n as f64, rss * 1024.0))
        .collect();
    report.rss_slope_bytes_per_call = slope(&points);
    if options.calls > 0 {
        for _ in 0..bursts {
            report.concurrent.push(run(options.clone()).await?);
            if let Some(sample) = idle_sample(&host).await {
                report.after_concurrent.push(sample);
            }
        }
    }
    Ok(report)
}

#[derive(Default)]
struct CallResult {
    added: Vec<Duration>,
    first_byte: Vec<Duration>,
    discarded: usize,
    late_bot: u64,
    late_caller: u64,
    clears: u64,
    barge: Vec<Duration>,
    held: u64,
    cut: u64,
}

/// A tag for one run, so its calls' CallSids are new ones (a real CallSid names one call).
fn run_tag() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_string()
}

/// The CallSid of call `index` of run `run`.
pub fn call_sid(run: &str, index: usize) -> String {
    format!("CAsim{run}{index:06}")
}

/// One simulated call.
async fn one_call(
    run: &str,
    index: usize,
    rate: u32,
    options: &SimulateOptions,
    audio: &[i16],
    ends: &[usize],
    truth: &[Onset],
) -> Result<CallResult, ClientError> {
    let mut client = ExotelClient::connect(&options.url, options.auth.as_deref()).await?;
    let sid = format!("MZsim{run}{index:06}");
    client.start(&sid, &call_sid(run, index), rate).await?;
    let chunk = (rate as usize * options.chunk_ms as usize / 1000).max(1);
    let period = Duration::from_millis(u64::from(options.chunk_ms));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let t0 = Instant::now();
    let deadline = t0 + options.duration;
    let mut r = CallResult::default();
    let mut pos = 0usize; // caller audio position, samples (loops over `audio`)
    let mut play_end: Option<Instant> = None;
    let mut marks: std::collections::VecDeque<(Instant, String)> = Default::default();
    let mut probe_sent: Option<Instant> = None;
    // Barge-in: the caller jumped to speech over a reply; when that speech went out.
    let mut jumped = false;
    let mut barge_sent: Option<Instant> = None;
    let mut last_probe = t0;
    let mut pending_end: Option<Instant> = None; // end of the caller's last utterance
    let mut last_chunk_tone: Option<bool> = None;
    // With a truth: the next item to speak over a reply, and a backchannel being spoken (until
    // when a `clear` would be its fault).
    let mut next_item = index;
    let mut speaking_backchannel = false;
    let mut backchannel_until: Option<Instant> = None;
    let chunk_time = Duration::from_secs_f64(chunk as f64 / f64::from(rate));
    loop {
        let next_mark = marks.front().map(|(at, _)| *at);
        tokio::select! {
            biased;
            msg = client.recv() => {
                let now = Instant::now();
                match msg {
                    Some(ServerMessage::Close(Some(1000))) => {
                        // The server ended the call (a goodbye, a hand-off, a limit): as on a
                        // phone, the caller has nothing left to send.
                        client.close().await;
                        return Ok(r);
                    }
                    Some(ServerMessage::Close(code)) => return Err(ClientError::Ended(code)),
                    None => return Err(ClientError::Ended(None)),
                    Some(ServerMessage::Media(pcm)) => {
                        let dur = Duration::from_secs_f64(pcm.len() as f64 / f64::from(rate));
                        let tone = classify(&pcm, rate);
                        let new_reply = match play_end {
                            None => true,
                            Some(end) if now > end + NEW_REPLY_GAP => true,
                            Some(end) if now > end => {
                                // A gap inside a reply, unless a probe was answered or the tone changed.
                                if tone == last_chunk_tone && probe_sent.is_none() { r.late_bot += 1; false } else { true }
                            }
                            _ => tone != last_chunk_tone && tone.is_some(),
                        };
                        if new_reply {
                            match tone {
                                Some(true) => {
                                    if let Some(p) = probe_sent.take() { r.added.push(now - p); }
                                }
                                Some(false) | None => {
                                    if probe_sent.take().is_some() { r.discarded += 1; }
                                    if let Some(end) = pending_end.take() { r.first_byte.push(now.saturating_duration_since(end)); }
                                    if options.barge_in && !truth.is_empty() {
                                        // Speak the next item over the reply from its true onset
                                        // (unless a backchannel is still being judged).
                                        if backchannel_until.is_none() {
                                            let item = truth[next_item % truth.len()];
                                            next_item += 1;
                                            pos = pos - pos % audio.len().max(1) + item.start;
                                            jumped = true;
                                            speaking_backchannel = item.backchannel;
                                            barge_sent = None;
                                        }
                                    } else if options.barge_in {
                                        // Speak over the bot: jump to the next utterance.
                                        if let Some(next) = ends.iter().find(|e| **e > pos % audio.len().max(1)) {
                                            let start = next.saturating_sub(rate as usize);
                                            pos = pos - pos % audio.len().max(1) + start;
                                            jumped = true;
                                            barge_sent = None;
                                        }
                                    }
                                }
                            }
                        }
                        last_chunk_tone = tone;
                        play_end = Some(play_end.map_or(now, |e| e.max(now)) + dur);
                    }
                    Some(ServerMessage::Mark(name)) => {
                        marks.push_back((play_end.unwrap_or(now), name));
                    }
                    Some(ServerMessage::Clear) => {
                        r.clears += 1;
                        if backchannel_until.take().is_some() {
                            r.cut += 1;
                        }
                        if let Some(sent) = barge_sent.take() {
                            r.barge.push(now.saturating_duration_since(sent));
                        }
                        // Whatever comes next is a new reply.
                        play_end = None;
                        marks.clear();
                    }
                    Some(ServerMessage::Other(_)) => {}
                }
            }
            () = async { match next_mark { Some(at) => tokio::time::sleep_until(at.into()).await, None => std::future::pending().await } } => {
                if let Some((_, name)) = marks.pop_front() {
                    client.mark(&name).await?;
                }
            }
            at = ticker.tick() => {
                let now = Instant::now();
                if now >= deadline { break; }
                if now.duration_since(at.into_std()) > period { r.late_caller += 1; }
                let len = audio.len().max(1);
                let mut piece = Vec::with_capacity(chunk);
                for k in 0..chunk { piece.push(audio[(pos + k) % len]); }
                // An utterance ending inside this piece starts the first-byte clock.
                let in_loop = pos % len;
                if let Some(end) = ends.iter().find(|e| **e >= in_loop && **e < in_loop + chunk) {
                    let ahead = (end - in_loop) as f64 / f64::from(rate);
                    pending_end = Some(now + Duration::from_secs_f64(ahead));
                }
                client.media(&piece).await?;
                if std::mem::take(&mut jumped) {
                    if truth.is_empty() {
                        barge_sent = Some(now);
                    } else if std::mem::take(&mut speaking_backchannel) {
                        // Judged over its length and the VAD's stop time after it.
                        backchannel_until = Some(now + Duration::from_millis(1500));
                    } else {
                        // The chunk holds the audio of the last `chunk_time`: the caller began
                        // the sentence that long before it could be sent.
                        barge_sent = Some(now.checked_sub(chunk_time).unwrap_or(now));
                    }
                }
                if backchannel_until.is_some_and(|until| now >= until) {
                    backchannel_until = None;
                    r.held += 1;
                }
                pos += chunk;
                let quiet = play_end.is_none_or(|e| now > e + Duration::from_millis(200));
                if options.probes && quiet && probe_sent.is_none() && now.duration_since(last_probe) >= PROBE_EVERY {
                    client.dtmf('5').await?;
                    probe_sent = Some(Instant::now());
                    last_probe = now;
                }
            }
        }
    }
    client.stop().await?;
    client.close().await;
    Ok(r)
}

#[derive(Debug, Clone, Copy)]
struct ProcSample {
    cpu_ticks: u64,
    rss_kib: u64,
}

fn read_proc(pid: u32) -> Option<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may contain spaces): utime is 14th, stime 15th overall.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(ProcSample {
        cpu_ticks: utime + stime,
        rss_kib,
    })
}

impl SimReport {
    /// The human-readable report.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "calls: {} asked, {} completed, {} failed",
            self.calls, self.completed, self.failed
        );
        for e in &self.errors {
            let _ = writeln!(s, "  error: {e}");
        }
        let line = |name: &str, m: &Summary| {
            if m.n == 0 {
                return format!("{name:<28} (none measured)");
            }
            format!(
                "{name:<28} p50 {:7.2} ms   p99 {:7.2} ms   max {:7.2} ms   (n = {})",
                m.p50_ms, m.p99_ms, m.max_ms, m.n
            )
        };
        let _ = writeln!(
            s,
            "{}",
            line("added latency (dtmf probe)", &self.added_latency)
        );
        let _ = writeln!(
            s,
            "{}",
            line("bot first byte after a turn", &self.first_byte)
        );
        if self.added_latency.n > 0 || self.probes_discarded > 0 {
            let _ = writeln!(
                s,
                "probes discarded (queued behind a reply): {}",
                self.probes_discarded
            );
        }
        let _ = writeln!(
            s,
            "late bot chunks: {} seen by the simulator, {} counted by the server; late caller chunks (simulator): {}",
            self.late_bot_chunks, self.server_underruns, self.late_caller_chunks
        );
        let _ = writeln!(s, "barge-in clears: {}", self.clears);
        if self.backchannels_held + self.backchannel_clears > 0 {
            let _ = writeln!(
                s,
                "backchannels over a reply: {} held, {} cut the bot off",
                self.backchannels_held, self.backchannel_clears
            );
        }
        if self.barge_in_reaction.n > 0 {
            let b = &self.barge_in_reaction;
            let _ = writeln!(
                s,
                "barge-in reaction (caller speech over a reply → clear): p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms over {}",
                b.p50_ms, b.p95_ms, b.max_ms, b.n
            );
        }
        if let Some((p99, n)) = self.engine_share_p99_ms {
            let _ = writeln!(
                s,
                "engine share of a turn (server ledger, model audio in → first chunk out): p99 ≤ {p99} ms over {n} turns"
            );
        }
        if let Some(p50) = self.voice_to_voice_p50_ms {
            let _ = writeln!(
                s,
                "voice to voice (server ledger, end of speech detected → first chunk out): p50 ≤ {p50:.0} ms"
            );
        }
        let _ = writeln!(
            s,
            "caller audio dropped by the server: {:.1} ms",
            self.dropped_ms
        );
        if let Some(cpu) = self.cpu_per_call_pct {
            let _ = writeln!(s, "server CPU per call: {cpu:.3}% of one core");
        }
        if let (Some(rss), Some(base)) = (self.rss_per_call_kib, self.rss_baseline_kib) {
            let _ = writeln!(
                s,
                "server RSS per call: {rss:.0} KiB (baseline {:.1} MiB)",
                base / 1024.0
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goertzel_tells_the_two_tones_apart() {
        let probe = signal::sine(8000, 1000.0, 0.2, 0.3);
        let turn = signal::sine(8000, 440.0, 0.2, 0.3);
        assert_eq!(classify(&probe, 8000), Some(true));
        assert_eq!(classify(&turn, 8000), Some(false));
        assert_eq!(classify(&[0; 1600], 8000), None);
        assert!((tone_db(&turn, 8000, 440.0) - 20.0 * 0.3f64.log10()).abs() < 0.5);
    }

    #[test]
    fn summaries_pick_the_right_ranks() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let s = Summary::of(v);
        assert_eq!(
            (s.n, s.p50_ms, s.p99_ms, s.max_ms),
            (100, 51.0, 99.0, 100.0)
        );
        assert_eq!(Summary::of(Vec::new()).n, 0);
    }

    #[test]
    fn metric_sums_read_the_exposition() {
        let text = "# TYPE caly_audio_dropped_seconds counter\ncaly_audio_dropped_seconds_total{ring=\"a\"} 0.5\ncaly_audio_dropped_seconds_total{ring=\"b\"} 0.25\ncaly_media_in_total 9\n";
        assert_eq!(metric_sum(text, "caly_audio_dropped_seconds_total"), 0.75);
        assert_eq!(metric_sum(text, "caly_media_in_total"), 9.0);
    }

    #[test]
    fn histogram_quantiles_come_from_bucket_deltas() {
        let before =
            "x_bucket{le=\"0.001\"} 1\nx_bucket{le=\"0.005\"} 1\nx_bucket{le=\"+Inf\"} 1\n";
        let after =
            "x_bucket{le=\"0.001\"} 90\nx_bucket{le=\"0.005\"} 100\nx_bucket{le=\"+Inf\"} 101\n";
        assert_eq!(
            histogram_quantile(before, after, "x", 0.5),
            Some((0.001, 100))
        );
        assert_eq!(
            histogram_quantile(before, after, "x", 0.99),
            Some((0.005, 100))
        );
        assert_eq!(histogram_quantile(after, after, "x", 0.99), None);
    }

    #[test]
    fn speech_ends_are_found_in_generated_audio() {
        let pcm = generated_speech(8000);
        assert_eq!(speech_ends(&pcm, 8000).len(), 4);
    }

    #[test]
    fn urls_give_their_host_and_rate() {
        assert_eq!(
            host_of("ws://127.0.0.1:9/v1/exotel/stream?sample-rate=16000").unwrap(),
            "127.0.0.1:9"
        );
        assert_eq!(rate_of("ws://h/v1/exotel/stream?sample-rate=16000"), 16000);
        assert_eq!(rate_of("ws://h/v1/exotel/stream"), 8000);
    }
}
