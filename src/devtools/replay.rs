//! `caly replay`: a WAV file (any common rate, mono or stereo) or an Exotel capture (JSONL of
//! AgentStream messages) through a pipeline, offline and as fast as the pipeline takes it,
//! with every stage timed. The report is a timeline of events, the speech segments, any drops,
//! and each stage's cost per 20 ms of audio.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::broadcast::error::TryRecvError;

use crate::codec::{linear_to_alaw, linear_to_ulaw};
use crate::devtools::wav::read_wav_mono;
use crate::engine::bus::BusKind;
use crate::engine::format::{Encoding, Format};
use crate::engine::frame::{AudioChunk, Event, Frame, Packet};
use crate::engine::graph::{self, LoadError};
use crate::engine::pipeline::{Outcome, Pipeline, PipelineOptions, PipelineStats};
use crate::engine::registry::CompileOptions;
use crate::transport::exotel::wire::{Inbound, decode_payload};

/// Exotel's default rate, for captures that do not say.
const DEFAULT_CAPTURE_RATE: u32 = 8000;

/// What to replay through what.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// Rate of a capture's audio when its `start` does not say (the URL's `sample-rate`).
    pub sample_rate: Option<u32>,
}

/// Why a replay could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The input could not be read.
    #[error("{0}")]
    Input(String),
    /// The pipeline does not load.
    #[error("{0}")]
    Pipeline(#[from] LoadError),
    /// The pipeline has no source the replay can feed.
    #[error("pipeline has no `call_audio`-style source to feed")]
    NoSource,
    /// The pipeline's source takes a format replay cannot produce.
    #[error("cannot feed a source that takes {0}")]
    Unfeedable(Format),
    /// A stage could not be built.
    #[error("{0}")]
    Build(#[from] crate::engine::stage::BuildError),
}

/// A speech segment found by a `vad` stage.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Segment {
    /// Onset, seconds from the start.
    pub start: f64,
    /// Offset, seconds from the start.
    pub end: f64,
}

/// The outcome of a replay.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayReport {
    /// The input file.
    pub input: String,
    /// The pipeline's name.
    pub pipeline: String,
    /// Rate of the audio fed in.
    pub sample_rate: u32,
    /// Length of the audio fed in, seconds.
    pub audio_seconds: f64,
    /// Capture lines skipped as malformed.
    pub skipped_lines: u64,
    /// Every event published on the bus: (stage, event).
    pub events: Vec<(Arc<str>, Event)>,
    /// Speech segments, paired from the events.
    pub segments: Vec<Segment>,
    /// Counters of every stage and ring.
    pub stats: PipelineStats,
    /// How the pipeline ended.
    pub outcome: Outcome,
    /// Wall-clock time of the run, seconds.
    pub wall_seconds: f64,
}

/// Loads the input as mono PCM16: `(rate, samples, skipped capture lines)`.
pub fn load_input(
    path: &Path,
    rate_hint: Option<u32>,
) -> Result<(u32, Vec<i16>, u64), ReplayError> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    if ext.eq_ignore_ascii_case("wav") {
        let (rate, samples) = read_wav_mono(path).map_err(ReplayError::Input)?;
        return Ok((rate, samples, 0));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| ReplayError::Input(format!("cannot read {}: {e}", path.display())))?;
    let mut rate = rate_hint;
    let mut bytes = Vec::new();
    let mut buf = Vec::new();
    let mut skipped = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(msg) = Inbound::parse(line) else {
            skipped += 1;
            continue;
        };
        match msg.event.as_ref() {
            "start" if rate.is_none() => {
                rate = msg
                    .start
                    .as_ref()
                    .and_then(|s| s.media_format.as_ref())
                    .and_then(|m| m.sample_rate)
                    .and_then(|r| u32::try_from(r).ok());
            }
            "media" => match msg
                .media
                .as_ref()
                .map(|m| decode_payload(&m.payload, &mut buf))
            {
                Some(Ok(audio)) => bytes.extend_from_slice(audio),
                _ => skipped += 1,
            },
            _ => {}
        }
    }
    let samples = bytes
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    Ok((rate.unwrap_or(DEFAULT_CAPTURE_RATE), samples, skipped))
}

/// Runs the replay.
pub async fn run(input: &Path, options: &ReplayOptions) -> Result<ReplayReport, ReplayError> {
    let (rate, samples, skipped_lines) = load_input(input, options.sample_rate)?;
    let registry = crate::call::registry();
    let compile = CompileOptions {
        source_rate: Some(rate),
    };
    let graph = graph::load(&options.pipeline, &registry, &compile)?;
    let started = Instant::now();
    let bus = crate::engine::bus::Bus::new();
    let mut events_rx = bus.subscribe();
    let mut pipeline = Pipeline::start(
        Arc::clone(&graph),
        PipelineOptions {
            call_id: Some(Arc::from("replay")),
            profile: true,
            bus: Some(bus),
            services: None,
            caller: None,
            record_id: None,
        },
    )?;
    let (source_id, mut source) = pipeline.take_first_source().ok_or(ReplayError::NoSource)?;
    let format = graph
        .node(&source_id)
        .and_then(|n| n.ports.first())
        .map(|p| p.format)
        .ok_or(ReplayError::NoSource)?;
    let chunk = (rate as usize / 50).max(1);
    let mut bytes = Vec::with_capacity(chunk * 2);
    for (i, pcm) in samples.chunks(chunk).enumerate() {
        bytes.clear();
        match format {
            Format::Audio(a) => {
                let pts = a.duration_of((i * chunk) as u64);
                source
                    .send(Frame::Audio(AudioChunk { pts, samples: pcm }))
                    .await;
                continue;
            }
            Format::Encoded(e) => match e.encoding {
                Encoding::Pcm16le => bytes.extend(pcm.iter().flat_map(|s| s.to_le_bytes())),
                Encoding::Mulaw => bytes.extend(pcm.iter().map(|s| linear_to_ulaw(*s))),
                Encoding::Alaw => bytes.extend(pcm.iter().map(|s| linear_to_alaw(*s))),
                Encoding::Opus => return Err(ReplayError::Unfeedable(format)),
            },
            other => return Err(ReplayError::Unfeedable(other)),
        }
        source.send(Frame::Packet(Packet { bytes: &bytes })).await;
    }
    source.close().await;
    let outcome = pipeline.finished().await;
    let wall = started.elapsed();
    let mut events = Vec::new();
    loop {
        match events_rx.try_recv() {
            Ok(e) => {
                if let BusKind::Event(ev) = &e.kind {
                    events.push((Arc::clone(&e.stage), ev.clone()));
                }
            }
            Err(TryRecvError::Lagged(_)) => continue,
            Err(_) => break,
        }
    }
    Ok(ReplayReport {
        input: input.display().to_string(),
        pipeline: graph.name.clone(),
        sample_rate: rate,
        audio_seconds: samples.len() as f64 / f64::from(rate),
        skipped_lines,
        segments: segments(&events),
        events,
        stats: pipeline.stats(),
        outcome,
        wall_seconds: wall.as_secs_f64(),
    })
}

/// Pairs `SpeechStarted` with the next `SpeechStopped`.
pub fn segments(events: &[(Arc<str>, Event)]) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut open: Option<Duration> = None;
    for (_, e) in events {
        match e {
            Event::SpeechStarted { at } => open = Some(*at),
            Event::SpeechStopped { at, .. } => {
                if let Some(start) = open.take() {
                    out.push(Segment {
                        start: start.as_secs_f64(),
                        end: at.as_secs_f64(),
                    });
                }
            }
            _ => {}
        }
    }
    out
}

impl ReplayReport {
    /// The human-readable timeline.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "replay {} ({} Hz, {:.2} s of audio) through `{}`",
            self.input, self.sample_rate, self.audio_seconds, self.pipeline
        );
        if self.skipped_lines > 0 {
            let _ = writeln!(s, "skipped {} malformed capture lines", self.skipped_lines);
        }
        let _ = writeln!(s, "\ntimeline:");
        for (stage, e) in &self.events {
            let line = match e {
                Event::SpeechStarted { at } => {
                    format!("{:8.3} s  {stage:<10} speech started", at.as_secs_f64())
                }
                Event::SpeechConfirmed { at } => format!(
                    "{:8.3} s  {stage:<10} speech confirmed (long enough to barge in)",
                    at.as_secs_f64()
                ),
                Event::SpeechStopped { at, speech } => format!(
                    "{:8.3} s  {stage:<10} speech stopped after {:.3} s",
                    at.as_secs_f64(),
                    speech.as_secs_f64()
                ),
                Event::Dtmf { digit } => format!("           {stage:<10} dtmf {digit}"),
                other => format!("           {stage:<10} {other:?}"),
            };
            let _ = writeln!(s, "  {line}");
        }
        let _ = writeln!(s, "\nspeech segments ({}):", self.segments.len());
        for seg in &self.segments {
            let _ = writeln!(
                s,
                "  {:8.3} – {:8.3} s  ({:.3} s)",
                seg.start,
                seg.end,
                seg.end - seg.start
            );
        }
        let drops: Vec<String> = self
            .stats
            .rings
            .iter()
            .filter(|(_, c)| c.dropped > 0 || c.frames_dropped > 0)
            .map(|(r, c)| format!("{r}: {} units, {} frames", c.dropped, c.frames_dropped))
            .collect();
        let _ = writeln!(
            s,
            "\ndrops: {}",
            if drops.is_empty() {
                "none".to_owned()
            } else {
                drops.join("; ")
            }
        );
        let chunks = (self.audio_seconds / 0.02).max(1.0);
        let _ = writeln!(
            s,
            "\n{:<14} {:>8} {:>8} {:>22}",
            "stage", "frames", "skipped", "cost per 20 ms audio"
        );
        let mut total = 0.0;
        for (id, c) in &self.stats.stages {
            let us = c.busy_ns as f64 / 1000.0 / chunks;
            total += us;
            let _ = writeln!(
                s,
                "{id:<14} {:>8} {:>8} {:>19.2} µs",
                c.frames_in, c.skipped, us
            );
        }
        let _ = writeln!(
            s,
            "{:<14} {:>8} {:>8} {total:>19.2} µs  ({:.3}% of one core in real time)",
            "total",
            "",
            "",
            total / 20_000.0 * 100.0
        );
        let speed = self.audio_seconds / self.wall_seconds.max(1e-9);
        let _ = writeln!(
            s,
            "\nran {:.2} s of audio in {:.1} ms ({speed:.0}× real time): {}",
            self.audio_seconds,
            self.wall_seconds * 1000.0,
            match &self.outcome {
                Outcome::Completed => "completed".to_owned(),
                Outcome::Ended { reason } => format!("ended: {reason}"),
                Outcome::Failed { stage, error } => format!("FAILED in `{stage}`: {error}"),
            }
        );
        s
    }
}
