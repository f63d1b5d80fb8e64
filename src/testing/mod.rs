//! Test-only code, compiled for `cargo test` and the `test-util` feature (integration tests,
//! benches, fuzz targets), never into the release binary: a single-stage [`Harness`] (our
//! `gst_check::Harness`), the test-only stage kinds, a fake Shopify, the fuzz entry points, and
//! the wiring the compliance tests use to run every kind.

use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::codec::{OpusEncoder, linear_to_alaw, linear_to_ulaw};
use crate::engine::bus::Bus;
use crate::engine::format::{AudioFormat, Encoding, Format};
use crate::engine::frame::{
    AudioChunk, Control, Event, Frame, OwnedFrame, Packet, Speaker, TextChunk,
};
use crate::engine::graph::Graph;
use crate::engine::pipeline::{Outcome, Pipeline, PipelineOptions};
use crate::engine::registry::{CompileOptions, DynSpec, KindEntry, Registry, Role};
use crate::engine::stage::{BuildCtx, Node, NodeCtx, NodeStats, Route, Runnable, StageError};

pub mod fake_shop;
pub mod fuzzing;
pub mod kinds;

pub use crate::devtools::signal;
pub use crate::devtools::wav::{read_wav_mono, write_wav_mono};

/// Exotel `media` messages carrying `pcm` (PCM16LE, base64) in chunks of `chunk` samples, as a
/// Voicebot stream would send them, with numbers as strings the way some Exotel pages show.
pub fn exotel_media_messages(pcm: &[i16], chunk: usize, stream_sid: &str) -> Vec<String> {
    use base64::Engine as _;
    pcm.chunks(chunk.max(1))
        .enumerate()
        .map(|(i, c)| {
            let bytes: Vec<u8> = c.iter().flat_map(|s| s.to_le_bytes()).collect();
            let payload = base64::engine::general_purpose::STANDARD.encode(bytes);
            format!(
                r#"{{"event":"media","sequence_number":"{}","stream_sid":"{stream_sid}","media":{{"chunk":"{}","timestamp":"{}","payload":"{payload}"}}}}"#,
                i + 2,
                i + 1,
                i * 20
            )
        })
        .collect()
}

/// Every built-in kind plus the test-only kinds (`fail_after`, `slow_sink`, `say_lines`,
/// `hang_up`, `offer_tools`).
pub fn registry() -> Registry {
    let mut registry = crate::call::registry();
    registry.register::<kinds::fail_after::FailAfter>();
    registry.register::<kinds::slow_sink::SlowSink>();
    registry.register::<kinds::say_lines::SayLines>();
    registry.register::<kinds::hang_up::HangUp>();
    registry.register::<kinds::offer_tools::OfferTools>();
    registry.register::<kinds::turn_model::TurnModel>();
    registry
}

/// Parses TOML text as the parameter table of a stage (what follows `[stages.x]`).
pub fn params_of(text: &str) -> Spanned<DeValue<'_>> {
    match DeTable::parse(text) {
        Ok(t) => {
            let span = t.span();
            Spanned::new(span, DeValue::Table(t.into_inner()))
        }
        Err(_) => Spanned::new(0..0, DeValue::Table(DeTable::new())),
    }
}

/// One synchronous stage driven by hand, with every output port captured.
pub struct Harness {
    node: Node,
    input: Option<AudioFormat>,
    pts_samples: u64,
    finished: bool,
    latency: Duration,
}

impl Harness {
    /// A stage of a built-in kind with TOML `params`, fed `inputs`.
    ///
    /// # Panics
    ///
    /// If the kind is unknown or the stage does not build: tests want that loud.
    pub fn new(kind: &str, params: &str, inputs: &[Format]) -> Harness {
        let registry = registry();
        let entry = registry
            .get(kind)
            .unwrap_or_else(|| panic!("no stage kind `{kind}`"));
        let spec = entry
            .parse(params, params_of(params))
            .unwrap_or_else(|e| panic!("`{kind}` params: {e:?}"));
        Harness::from_spec(spec.as_ref(), inputs).unwrap_or_else(|e| panic!("`{kind}`: {e}"))
    }

    /// Like [`new`](Self::new), but the stage's outputs go nowhere: what a bench measures is
    /// the stage alone, with no copies made of what it produces.
    ///
    /// # Panics
    ///
    /// If the kind is unknown or the stage does not build.
    pub fn discarding(kind: &str, params: &str, inputs: &[Format]) -> Harness {
        let mut h = Harness::new(kind, params, inputs);
        for routes in &mut h.node.routes {
            routes.clear();
        }
        h
    }

    /// A stage from an already parsed spec.
    pub fn from_spec(spec: &dyn DynSpec, inputs: &[Format]) -> Result<Harness, String> {
        let negotiated = spec
            .negotiate(inputs, &CompileOptions::default())
            .map_err(|e| e.message)?;
        let ctx = BuildCtx {
            stage: "under_test",
            inputs,
            outputs: &negotiated.ports,
            services: &crate::stages::services_from_env(),
            tools: &[],
            call: &crate::engine::stage::CallInfo::default(),
        };
        let Runnable::Inline(stage) = spec.build(&ctx).map_err(|e| e.to_string())? else {
            return Err("a task stage cannot run in a Harness".into());
        };
        let latency = stage.latency();
        let node_ctx = NodeCtx {
            id: Arc::from("under_test"),
            bus: Bus::new(),
            stats: Arc::new(NodeStats::default()),
            profile: false,
        };
        let mut node = Node::new(stage, negotiated.ports.len(), node_ctx);
        for routes in &mut node.routes {
            routes.push(Route::Capture(Vec::new()));
        }
        let input = match inputs.first() {
            Some(Format::Audio(a)) => Some(*a),
            _ => None,
        };
        Ok(Harness {
            node,
            input,
            pts_samples: 0,
            finished: false,
            latency,
        })
    }

    /// Pushes one frame; refused after [`finish`](Self::finish).
    pub fn push(&mut self, frame: Frame<'_>) -> Result<(), StageError> {
        if self.finished {
            return Err(StageError::fatal("frame pushed after Eos"));
        }
        self.node.process(frame, &mut [], 1).map(|_| ())
    }

    /// Pushes decoded audio with a pts that counts samples.
    ///
    /// # Panics
    ///
    /// If the stage fails.
    pub fn push_audio(&mut self, samples: &[i16]) {
        let pts = self
            .input
            .map_or(Duration::ZERO, |f| f.duration_of(self.pts_samples));
        self.pts_samples += samples.len() as u64;
        let r = self.push(Frame::Audio(AudioChunk { pts, samples }));
        if let Err(e) = r {
            panic!("push_audio: {e}");
        }
    }

    /// Pushes encoded bytes.
    ///
    /// # Panics
    ///
    /// If the stage fails.
    pub fn push_packet(&mut self, bytes: &[u8]) {
        if let Err(e) = self.push_packet_result(bytes) {
            panic!("push_packet: {e}");
        }
    }

    /// Pushes encoded bytes, returning what the stage said.
    pub fn push_packet_result(&mut self, bytes: &[u8]) -> Result<(), StageError> {
        self.push(Frame::Packet(Packet { bytes }))
    }

    /// Sends a control message.
    pub fn control(&mut self, control: &Control) -> Result<(), StageError> {
        self.node.control(control, &mut [], 1).map(|_| ())
    }

    /// Ends the input: the stage drains.
    pub fn finish(&mut self) -> Result<(), StageError> {
        self.finished = true;
        self.node.finish(&mut [], 1).map(|_| ())
    }

    /// What the stage reported as its latency.
    pub fn latency(&self) -> Duration {
        self.latency
    }

    /// Frames the stage skipped as bad.
    pub fn skipped(&self) -> u64 {
        self.node.ctx.stats.snapshot().skipped
    }

    /// Everything pushed out of `port`.
    pub fn output(&self, port: usize) -> &[OwnedFrame] {
        match self.node.routes.get(port).and_then(|r| r.first()) {
            Some(Route::Capture(frames)) => frames,
            _ => &[],
        }
    }

    /// All audio samples out of `port`, concatenated.
    pub fn audio(&self, port: usize) -> Vec<i16> {
        self.audio_chunks(port)
            .into_iter()
            .flat_map(|(_, s)| s)
            .collect()
    }

    /// Audio chunks out of `port` with their pts.
    pub fn audio_chunks(&self, port: usize) -> Vec<(Duration, Vec<i16>)> {
        self.output(port)
            .iter()
            .filter_map(|f| match f {
                OwnedFrame::Audio { pts, samples } => Some((*pts, samples.clone())),
                _ => None,
            })
            .collect()
    }

    /// Encoded packets out of `port`.
    pub fn packets(&self, port: usize) -> Vec<Vec<u8>> {
        self.output(port)
            .iter()
            .filter_map(|f| match f {
                OwnedFrame::Packet(p) => Some(p.clone()),
                _ => None,
            })
            .collect()
    }

    /// Encoded bytes out of `port`, concatenated.
    pub fn bytes(&self, port: usize) -> Vec<u8> {
        self.packets(port).concat()
    }

    /// Events out of every port.
    pub fn events(&self) -> Vec<Event> {
        (0..self.node.routes.len())
            .flat_map(|p| self.output(p).to_vec())
            .filter_map(|f| match f {
                OwnedFrame::Event(e) => Some(e),
                _ => None,
            })
            .collect()
    }
}

/// Frames of `format` covering `duration`, in 20 ms pieces: what a kind accepting that format
/// would see in a call.
pub fn frames_for(format: Format, duration: Duration) -> Vec<OwnedFrame> {
    let seconds = duration.as_secs_f32();
    match format {
        Format::Audio(a) => {
            let pcm = signal::vowels(a.sample_rate, seconds);
            let chunk = a.samples_in_ms(20).max(1);
            pcm.chunks(chunk)
                .enumerate()
                .map(|(i, c)| OwnedFrame::Audio {
                    pts: a.duration_of((i * chunk) as u64),
                    samples: c.to_vec(),
                })
                .collect()
        }
        Format::Encoded(e) => {
            let pcm = signal::vowels(e.sample_rate, seconds);
            let chunk = AudioFormat::pcm16(e.sample_rate).samples_in_ms(20).max(1);
            match e.encoding {
                Encoding::Pcm16le => pcm
                    .chunks(chunk)
                    .map(|c| OwnedFrame::Packet(c.iter().flat_map(|s| s.to_le_bytes()).collect()))
                    .collect(),
                Encoding::Mulaw => pcm
                    .chunks(chunk)
                    .map(|c| OwnedFrame::Packet(c.iter().map(|s| linear_to_ulaw(*s)).collect()))
                    .collect(),
                Encoding::Alaw => pcm
                    .chunks(chunk)
                    .map(|c| OwnedFrame::Packet(c.iter().map(|s| linear_to_alaw(*s)).collect()))
                    .collect(),
                Encoding::Opus => {
                    let Ok(mut enc) = OpusEncoder::new(e.sample_rate, 24000) else {
                        return Vec::new();
                    };
                    let mut buf = vec![0u8; 1500];
                    let mut packets = Vec::new();
                    for c in pcm.chunks_exact(chunk) {
                        if let Ok(n) = enc.encode(c, &mut buf) {
                            packets.push(OwnedFrame::Packet(buf[..n].to_vec()));
                        }
                    }
                    packets
                }
            }
        }
        Format::Text => vec![OwnedFrame::Text(TextChunk {
            pts: Duration::ZERO,
            text: "mera order kahan hai".into(),
            is_final: true,
            speaker: Speaker::Caller,
            turn: None,
        })],
        Format::Events => vec![OwnedFrame::Event(Event::Dtmf { digit: '5' })],
    }
}

/// A pipeline TOML that runs `kind` between a source and a sink, for compliance tests.
///
/// # Panics
///
/// For a kind whose inputs no test source can produce yet: add one when such a kind lands.
pub fn pipeline_around(kind: &KindEntry, registry: &Registry) -> String {
    let name = kind.info.name;
    let example = kind.info.example;
    let mut toml = format!("[pipeline]\nname = \"compliance_{name}\"\n\n");
    if kind.info.role == Role::Source {
        toml.push_str(&format!(
            "[stages.under_test]\nkind = \"{name}\"\n{example}\n\n"
        ));
        toml.push_str("[stages.sink]\nkind = \"blackhole\"\n");
        return toml;
    }
    let text = format!("{example}\n");
    let spec = kind
        .parse(&text, params_of(&text))
        .unwrap_or_else(|e| panic!("{name}: {e:?}"));
    let first = spec.input_caps().examples().into_iter().next();
    match first {
        Some(Format::Audio(a)) => toml.push_str(&format!(
            "[stages.src]\nkind = \"replay\"\nsample_rate = {}\nduration_ms = 300\n\n",
            a.sample_rate
        )),
        Some(Format::Encoded(e)) => toml.push_str(&format!(
            "[stages.src]\nkind = \"replay\"\nsample_rate = {r}\nduration_ms = 300\n\n[stages.enc]\nkind = \"encode\"\nencoding = \"{}\"\n\n",
            e.encoding,
            r = e.sample_rate
        )),
        Some(Format::Text) => toml.push_str(
            "[stages.src]\nkind = \"say_lines\"\nlines = [\"mera order kahan hai\", \"haan ji\"]\n\n",
        ),
        Some(Format::Events) => toml.push_str(
            "[stages.src]\nkind = \"say_lines\"\nlines = [\"order 1001 cancel kar do\", \"haan ji\"]\n\n[stages.intent]\nkind = \"classify_intent\"\n\n",
        ),
        other => panic!("{name}: no test source produces {other:?} yet"),
    }
    let _ = registry;
    toml.push_str(&format!(
        "[stages.under_test]\nkind = \"{name}\"\n{example}\n\n"
    ));
    if kind.info.role != Role::Sink {
        toml.push_str("[stages.sink]\nkind = \"blackhole\"\n");
    }
    toml
}

/// Runs a pipeline to its end on a fresh runtime, feeding every synchronous source 200 ms of
/// its format. Gives up after 10 s.
pub fn run_to_end(graph: Arc<Graph>) -> Result<Outcome, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let mut pipeline = Pipeline::start(Arc::clone(&graph), PipelineOptions::default())
            .map_err(|e| e.to_string())?;
        // Drain every sink's output, as a transport would.
        let mut drains = tokio::task::JoinSet::new();
        while let Some((_, mut sink)) = pipeline.take_first_sink() {
            drains.spawn(async move {
                while sink.ready().await {
                    sink.discard();
                }
            });
        }
        for node in graph.nodes().iter().filter(|n| n.source_ring.is_some()) {
            let Some(mut source) = pipeline.take_source(&node.id) else {
                continue;
            };
            let format = node.ports.first().map(|p| p.format);
            for frame in format
                .map(|f| frames_for(f, Duration::from_millis(200)))
                .unwrap_or_default()
            {
                source.send(frame.as_frame()).await;
            }
            source.close().await;
        }
        match tokio::time::timeout(Duration::from_secs(10), pipeline.finished()).await {
            Ok(Outcome::Completed) => Ok(Outcome::Completed),
            Ok(other) => Err(format!("{other:?}")),
            Err(_) => Err("pipeline did not finish within 10 s".into()),
        }
    })
}

/// Awaits `fut`, failing the test with `what` if it takes longer than `limit`.
///
/// # Panics
///
/// On timeout.
pub async fn within<T>(
    limit: Duration,
    what: &str,
    fut: impl std::future::Future<Output = T>,
) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}
