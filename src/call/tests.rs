//! The controller against a fake transport, on tokio's paused clock: a real pipeline (the
//! tone bot: decode → resample → vad → tone responder → playback) and real speech, with time
//! advancing only when every task is idle, so idle timeouts, pacing and playout run in
//! virtual time and nothing here depends on how fast the machine is.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::call::playout::ChunkRules;
use crate::engine::graph::Graph;
use crate::engine::registry::CompileOptions;
use crate::engine::spec::PipelineSpec;
use crate::engine::stage::Services;
use crate::metrics::Metrics;
use crate::transport::exotel::CHUNK_RULES;

/// What the test sends as the provider.
enum In {
    Start,
    Media(Vec<u8>),
    Dtmf(char),
    Stop,
    Bad(&'static str),
}

/// What the controller sent to the provider.
#[derive(Debug, Clone, PartialEq)]
enum Out {
    Audio(String),
    Clear,
    Closed(CallEnd),
}

/// A provider that plays instantly: every mark is echoed right after its chunk.
struct Fake {
    inbox: mpsc::Receiver<In>,
    echoes: VecDeque<String>,
    out: Arc<Mutex<Vec<Out>>>,
    media: Vec<u8>,
    mark: String,
}

impl Transport for Fake {
    fn chunk_rules(&self) -> ChunkRules {
        CHUNK_RULES
    }

    async fn recv(&mut self) -> Option<Inbound<'_>> {
        if let Some(mark) = self.echoes.pop_front() {
            self.mark = mark;
            return Some(Inbound::Mark(&self.mark));
        }
        Some(match self.inbox.recv().await? {
            In::Start => Inbound::Start(StreamStart {
                call_sid: Some("CA-test".into()),
                stream_sid: "MZ-test".into(),
                from: Some("09876543210".into()),
                to: None,
                sample_rate: None,
            }),
            In::Media(bytes) => {
                self.media = bytes;
                Inbound::Media(&self.media)
            }
            In::Dtmf(digit) => Inbound::Dtmf(digit),
            In::Stop => Inbound::Stop,
            In::Bad(kind) => Inbound::Bad(kind),
        })
    }

    async fn send_audio(&mut self, _pcm: &[u8], mark: &str) -> Result<(), Gone> {
        self.push(Out::Audio(mark.to_owned()));
        self.echoes.push_back(mark.to_owned());
        Ok(())
    }

    async fn send_clear(&mut self) -> Result<(), Gone> {
        self.push(Out::Clear);
        Ok(())
    }

    async fn close(&mut self, end: CallEnd) {
        self.push(Out::Closed(end));
    }
}

impl Fake {
    fn push(&self, out: Out) {
        self.out.lock().unwrap_or_else(|e| e.into_inner()).push(out);
    }
}

/// The caller's audio to the VAD, as every test pipeline here has it.
macro_rules! front_half {
    () => {
        r#"
[stages.caller]
kind = "call_audio"
[stages.decode]
kind = "decode"
[stages.resample]
kind = "resample"
sample_rate = 24000
[stages.vad]
kind = "vad"
start_ms = 200
stop_ms = 600
min_barge_in_ms = 400
"#
    };
}

const TONE_BOT: &str = concat!(
    "[pipeline]\nname = \"controller_test\"\n",
    front_half!(),
    r#"[stages.bot]
kind = "tone_responder"
turn_ms = 1500
dtmf_ms = 600
[stages.playback]
kind = "call_playback"
"#
);

/// A running call: the provider's end, and the controller's task.
struct Harness {
    tx: mpsc::Sender<In>,
    out: Arc<Mutex<Vec<Out>>>,
    call: tokio::task::JoinHandle<CallReport>,
    end_calls: CancellationToken,
    rate: u32,
}

fn config(pipeline: &str, rate: u32, tweak: impl FnOnce(&mut CallConfig)) -> CallConfig {
    let spec =
        PipelineSpec::parse(pipeline, "controller_test.toml").unwrap_or_else(|e| panic!("{e}"));
    let graph: Arc<Graph> = Graph::compile(
        &spec,
        &crate::testing::registry(),
        &CompileOptions {
            source_rate: Some(rate),
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut graphs = GraphSet::default();
    graphs.insert(rate, graph);
    let mut config = CallConfig {
        graphs: Arc::new(graphs),
        metrics: Arc::new(Metrics::new()),
        idle_timeout: Duration::from_secs(15),
        max_duration: Duration::from_secs(3600),
        max_bot_queue: Duration::from_secs(120),
        end_calls: CancellationToken::new(),
        services: Arc::new(Services::new()),
        reports: None,
        recorder: None,
        hand_offs: Arc::default(),
        prices: Arc::new(crate::call::cost::Prices::builtin().unwrap()),
        live: None,
    };
    tweak(&mut config);
    config
}

fn start(pipeline: &str, rate: u32, tweak: impl FnOnce(&mut CallConfig)) -> Harness {
    let config = config(pipeline, rate, tweak);
    let end_calls = config.end_calls.clone();
    let (tx, inbox) = mpsc::channel(4096);
    let out = Arc::new(Mutex::new(Vec::new()));
    let fake = Fake {
        inbox,
        echoes: VecDeque::new(),
        out: Arc::clone(&out),
        media: Vec::new(),
        mark: String::new(),
    };
    let call = tokio::spawn(async move { run_call(fake, rate, &config).await });
    Harness {
        tx,
        out,
        call,
        end_calls,
        rate,
    }
}

impl Harness {
    /// Sends as the provider; after the call has ended nothing is read, and nothing fails.
    async fn send(&self, message: In) {
        let _ = self.tx.send(message).await;
    }

    /// Sends `pcm` as 20 ms media messages in (virtual) real time.
    async fn speak(&self, pcm: &[i16]) {
        let n = (self.rate / 50) as usize;
        for chunk in pcm.chunks(n) {
            let bytes = chunk.iter().flat_map(|s| s.to_le_bytes()).collect();
            self.send(In::Media(bytes)).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn silence(&self, seconds: f32) {
        self.speak(&vec![0i16; (self.rate as f32 * seconds) as usize])
            .await;
    }

    fn sent(&self) -> Vec<Out> {
        self.out.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn audio_chunks(&self) -> usize {
        self.sent()
            .iter()
            .filter(|o| matches!(o, Out::Audio(_)))
            .count()
    }

    /// Keeps the line going with silence until the bot has sent audio.
    async fn until_bot_speaks(&self) {
        for _ in 0..500 {
            if self.audio_chunks() > 0 {
                return;
            }
            self.silence(0.02).await;
        }
        panic!("the bot never spoke: {:?}", self.sent());
    }

    async fn report(self) -> CallReport {
        drop(self.tx);
        self.call
            .await
            .unwrap_or_else(|e| panic!("controller task: {e}"))
    }

    async fn ended(self) -> (CallReport, Vec<Out>) {
        let out = Arc::clone(&self.out);
        let report = self
            .call
            .await
            .unwrap_or_else(|e| panic!("controller task: {e}"));
        let sent = out.lock().unwrap_or_else(|e| e.into_inner()).clone();
        (report, sent)
    }
}

/// Speech at `rate` from a fixture, `from`..`to` seconds.
fn speech(file: &str, rate: u32, from: f32, to: f32) -> Vec<i16> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/audio")
        .join(file);
    let (file_rate, pcm) =
        crate::devtools::wav::read_wav_mono(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(file_rate, rate, "{file}");
    let at = |s: f32| ((s * rate as f32) as usize).min(pcm.len());
    pcm[at(from)..at(to)].to_vec()
}

/// The first English utterance of the noisy 16 kHz fixture, with a little lead-in.
fn first_utterance() -> Vec<i16> {
    speech("speech_en_hi_noisy_16k.wav", 16000, 0.5, 3.8)
}

fn closed(sent: &[Out]) -> Option<CallEnd> {
    sent.iter().rev().find_map(|o| match o {
        Out::Closed(end) => Some(*end),
        _ => None,
    })
}

#[tokio::test(start_paused = true)]
async fn speech_over_the_bot_clears_it_and_interrupts_once() {
    let call = start(TONE_BOT, 16000, |_| {});
    call.send(In::Start).await;
    call.speak(&first_utterance()).await;
    call.silence(0.3).await;
    call.until_bot_speaks().await;
    let before = call.sent();
    assert!(
        !before.contains(&Out::Clear),
        "nothing to clear yet: {before:?}"
    );
    // The caller talks over the bot's 1.5 s reply.
    call.speak(&speech("speech_en_hi_noisy_16k.wav", 16000, 4.7, 6.5))
        .await;
    let sent = call.sent();
    let clears = sent.iter().filter(|o| **o == Out::Clear).count();
    assert_eq!(clears, 1, "one barge-in, one clear: {sent:?}");
    call.send(In::Stop).await;
    let (report, sent) = call.ended().await;
    assert_eq!(report.barge_ins.len(), 1);
    assert_eq!(report.end, CallEnd::Hangup);
    assert_eq!(closed(&sent), Some(CallEnd::Hangup));
}

#[tokio::test(start_paused = true)]
async fn a_backchannel_over_the_bot_does_not_clear_it() {
    let call = start(TONE_BOT, 16000, |_| {});
    call.send(In::Start).await;
    call.speak(&first_utterance()).await;
    call.silence(0.3).await;
    call.until_bot_speaks().await;
    // "haan" (0.31 s): long enough for the VAD to notice, too short to interrupt.
    call.speak(&speech("backchannel_haan_hmm_16k.wav", 16000, 0.4, 0.9))
        .await;
    call.silence(0.2).await;
    assert!(!call.sent().contains(&Out::Clear), "{:?}", call.sent());
    let report = call.report().await;
    assert!(report.barge_ins.is_empty());
    assert_eq!(report.end, CallEnd::SocketLost);
}

#[tokio::test(start_paused = true)]
async fn an_answered_and_played_turn_is_on_the_ledger() {
    let call = start(TONE_BOT, 16000, |_| {});
    call.send(In::Start).await;
    call.speak(&first_utterance()).await;
    call.silence(0.3).await;
    call.until_bot_speaks().await;
    // Let the 1.5 s reply play out (the fake echoes every mark).
    call.silence(2.0).await;
    let report = call.report().await;
    assert_eq!(report.turns.len(), 1, "{:?}", report.turns);
    let turn = report.turns[0];
    assert!(
        turn.voice_to_voice_played_ms.is_some(),
        "the first chunk's mark came back: {turn:?}"
    );
    assert!(turn.voice_to_voice_sent_ms >= turn.engine_ms);
    assert!(report.media_out >= 2, "the reply went out in chunks");
}

#[tokio::test(start_paused = true)]
async fn the_providers_stop_ends_the_call_as_a_hangup() {
    let call = start(TONE_BOT, 16000, |_| {});
    call.send(In::Start).await;
    call.silence(0.2).await;
    call.send(In::Stop).await;
    let (report, sent) = call.ended().await;
    assert_eq!(report.end, CallEnd::Hangup);
    assert_eq!(report.call_sid.as_deref(), Some("CA-test"));
    assert_eq!(closed(&sent), Some(CallEnd::Hangup));
}

#[tokio::test(start_paused = true)]
async fn a_lost_socket_ends_the_call() {
    let call = start(TONE_BOT, 16000, |_| {});
    call.send(In::Start).await;
    call.silence(0.2).await;
    let report = call.report().await;
    assert_eq!(report.end, CallEnd::SocketLost);
    assert!(report.media_in > 0);
}

#[tokio::test(start_paused = true)]
async fn silence_on_the_line_ends_the_call_at_the_idle_timeout() {
    let call = start(TONE_BOT, 16000, |c| c.idle_timeout = Duration::from_secs(5));
    call.send(In::Start).await;
    call.silence(1.0).await;
    // No media at all from here: the provider's side is alive but sends nothing.
    let (report, sent) = call.ended().await;
    assert_eq!(report.end, CallEnd::IdleTimeout);
    assert_eq!(closed(&sent), Some(CallEnd::IdleTimeout));
}

#[tokio::test(start_paused = true)]
async fn a_call_is_ended_at_its_maximum_duration() {
    let call = start(TONE_BOT, 16000, |c| c.max_duration = Duration::from_secs(3));
    call.send(In::Start).await;
    // Media keeps flowing, so only the cap can end it.
    for _ in 0..10 {
        if call.call.is_finished() {
            break;
        }
        call.silence(0.5).await;
    }
    let (report, _) = call.ended().await;
    assert_eq!(report.end, CallEnd::MaxDuration);
}

#[tokio::test(start_paused = true)]
async fn shutting_down_ends_every_call_with_going_away() {
    let call = start(TONE_BOT, 16000, |_| {});
    call.send(In::Start).await;
    call.silence(0.2).await;
    call.end_calls.cancel();
    let (report, sent) = call.ended().await;
    assert_eq!(report.end, CallEnd::Shutdown);
    assert_eq!(closed(&sent), Some(CallEnd::Shutdown));
}

fn with_stage(extra: &str) -> String {
    format!("{TONE_BOT}\n{extra}")
}

#[tokio::test(start_paused = true)]
async fn a_failing_stage_ends_the_call_as_failed() {
    let pipeline = with_stage(
        "[stages.boom]\nkind = \"fail_after\"\ninputs = [\"vad\"]\nframes = 5\n[stages.sink]\nkind = \"blackhole\"\n",
    );
    let call = start(&pipeline, 16000, |_| {});
    call.send(In::Start).await;
    call.silence(1.0).await;
    let (report, sent) = call.ended().await;
    assert_eq!(report.end, CallEnd::PipelineFailed);
    assert_eq!(closed(&sent), Some(CallEnd::PipelineFailed));
}

#[tokio::test(start_paused = true)]
async fn a_stage_ending_the_stream_ends_the_call_at_once() {
    let pipeline = with_stage(
        "[stages.done]\nkind = \"fail_after\"\ninputs = [\"vad\"]\nframes = 5\nend_stream = true\n[stages.sink]\nkind = \"blackhole\"\n",
    );
    let call = start(&pipeline, 16000, |_| {});
    call.send(In::Start).await;
    call.silence(1.0).await;
    let (report, _) = call.ended().await;
    assert_eq!(report.end, CallEnd::PipelineEnded);
}

#[tokio::test(start_paused = true)]
async fn a_pipeline_that_cannot_start_ends_the_stream_with_a_reason() {
    let pipeline = with_stage(
        "[stages.broken]\nkind = \"fail_after\"\ninputs = [\"vad\"]\nfail_build = true\n[stages.sink]\nkind = \"blackhole\"\n",
    );
    let call = start(&pipeline, 16000, |_| {});
    let metrics_probe = call.tx.clone();
    call.send(In::Start).await;
    // Media after a failed start is not "before start": the stream is already over.
    let _ = metrics_probe.send(In::Media(vec![0; 640])).await;
    let (report, sent) = call.ended().await;
    assert_eq!(report.end, CallEnd::StartFailed);
    assert_eq!(closed(&sent), Some(CallEnd::StartFailed));
    assert!(report.bad_input.is_empty(), "{:?}", report.bad_input);
    assert_eq!(report.media_in, 0);
}

#[tokio::test(start_paused = true)]
async fn a_stage_hangs_up_once_the_bots_last_words_have_played() {
    let pipeline =
        with_stage("[stages.hangup]\nkind = \"hang_up\"\ninputs = [\"vad\"]\nkey = \"#\"\n");
    let call = start(&pipeline, 16000, |_| {});
    call.send(In::Start).await;
    call.silence(0.2).await;
    // The tone bot answers a key with a 600 ms tone; the same key asks to hang up.
    call.send(In::Dtmf('#')).await;
    for _ in 0..200 {
        if call.call.is_finished() {
            break;
        }
        call.silence(0.05).await;
    }
    let (report, sent) = call.ended().await;
    assert_eq!(report.end, CallEnd::CompletedByBot);
    assert_eq!(
        report.hangup_reason.as_deref(),
        Some("the caller pressed #")
    );
    let first_close = sent.iter().position(|o| matches!(o, Out::Closed(_)));
    let last_audio = sent.iter().rposition(|o| matches!(o, Out::Audio(_)));
    assert!(last_audio.is_some(), "the bot's reply went out: {sent:?}");
    assert!(
        last_audio < first_close,
        "closed after the reply, not over it: {sent:?}"
    );
    // 600 ms of tone (and the resampler's 10 ms) at 16 kHz: six full 100 ms chunks and a
    // padded tail.
    assert_eq!(
        report.media_out, 7,
        "the whole reply was sent before hanging up"
    );
}

#[tokio::test(start_paused = true)]
async fn bad_input_is_counted_and_the_call_goes_on() {
    let call = start(TONE_BOT, 16000, |_| {});
    call.send(In::Media(vec![0; 640])).await;
    call.send(In::Start).await;
    call.send(In::Bad("malformed")).await;
    call.send(In::Bad("malformed")).await;
    call.send(In::Bad("bad_base64")).await;
    call.silence(0.2).await;
    call.send(In::Stop).await;
    let (report, _) = call.ended().await;
    assert_eq!(report.end, CallEnd::Hangup);
    assert_eq!(report.bad_input.get("before_start"), Some(&1));
    assert_eq!(report.bad_input.get("malformed"), Some(&2));
    assert_eq!(report.bad_input.get("bad_base64"), Some(&1));
    assert!(report.media_in > 0, "media after the bad input was taken");
}

/// A model that answers only when the controller asks (the `turn_model` test kind), logging
/// each request under `log`.
fn turn_pipeline(log: &str, conversation: &str, model: &str) -> String {
    let front = front_half!();
    format!(
        r#"
[pipeline]
name = "turns"
[conversation]
{conversation}
{front}
[stages.model]
kind = "turn_model"
log = "{log}"
{model}
[stages.playback]
kind = "call_playback"
"#
    )
}

fn requests(log: &str) -> Vec<String> {
    crate::testing::kinds::turn_model::requests(log)
}

/// Keeps the line going with silence until the call ends (at most `seconds`).
async fn until_ended(call: &Harness, seconds: f32) {
    for _ in 0..(seconds / 0.1) as usize {
        if call.call.is_finished() {
            return;
        }
        call.silence(0.1).await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_backchannel_over_the_bot_gets_no_answer_and_no_clear() {
    let call = start(&turn_pipeline("backchannel", "", ""), 16000, |_| {});
    call.send(In::Start).await;
    call.speak(&first_utterance()).await;
    call.silence(0.3).await;
    call.until_bot_speaks().await;
    // "haan" while the 1.5 s answer plays, then quiet until the model's turn detection ends it.
    call.speak(&speech("backchannel_haan_hmm_16k.wav", 16000, 0.4, 0.9))
        .await;
    call.silence(1.5).await;
    assert_eq!(
        requests("backchannel"),
        ["respond"],
        "only the real turn is answered"
    );
    assert!(!call.sent().contains(&Out::Clear), "{:?}", call.sent());
    let report = call.report().await;
    assert_eq!(report.backchannels, 1);
    assert!(report.barge_ins.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_short_answer_after_the_bots_question_is_answered() {
    let call = start(&turn_pipeline("short_answer", "", ""), 16000, |_| {});
    call.send(In::Start).await;
    call.speak(&first_utterance()).await;
    call.silence(0.3).await;
    call.until_bot_speaks().await;
    // The question plays out; then "haan".
    call.silence(2.0).await;
    call.speak(&speech("backchannel_haan_hmm_16k.wav", 16000, 0.4, 0.9))
        .await;
    call.silence(1.5).await;
    assert_eq!(requests("short_answer"), ["respond", "respond"]);
    let report = call.report().await;
    assert_eq!(report.backchannels, 0);
}

#[tokio::test(start_paused = true)]
async fn speech_that_cuts_the_bot_off_is_answered() {
    let call = start(
        &turn_pipeline("barge_answer", "", "reply_ms = 4000"),
        16000,
        |_| {},
    );
    call.send(In::Start).await;
    call.speak(&first_utterance()).await;
    call.silence(0.3).await;
    call.until_bot_speaks().await;
    call.speak(&speech("speech_en_hi_noisy_16k.wav", 16000, 4.7, 6.5))
        .await;
    call.silence(1.5).await;
    assert!(call.sent().contains(&Out::Clear), "{:?}", call.sent());
    assert_eq!(requests("barge_answer"), ["respond", "respond"]);
    let report = call.report().await;
    assert_eq!(report.barge_ins.len(), 1);
    assert_eq!(report.backchannels, 0);
}

#[tokio::test(start_paused = true)]
async fn a_silent_caller_is_prompted_then_let_go_as_caller_silent() {
    let conversation = "idle_prompt_ms = 2000\nidle_max_prompts = 2";
    let call = start(&turn_pipeline("silent", conversation, ""), 16000, |_| {});
    call.send(In::Start).await;
    call.speak(&first_utterance()).await;
    call.silence(0.3).await;
    call.until_bot_speaks().await;
    until_ended(&call, 30.0).await;
    let (report, sent) = call.ended().await;
    let prompt = format!("say: {}", conversation::IDLE_PROMPT);
    let goodbye = format!("say: {}", conversation::IDLE_GOODBYE);
    assert_eq!(
        requests("silent"),
        ["respond".to_owned(), prompt.clone(), prompt, goodbye]
    );
    assert_eq!(report.end, CallEnd::CallerSilent);
    assert_eq!(report.idle_prompts, 2);
    let close = sent.iter().position(|o| matches!(o, Out::Closed(_)));
    let last_audio = sent.iter().rposition(|o| matches!(o, Out::Audio(_)));
    assert!(
        last_audio < close,
        "the goodbye played before the close: {sent:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_caller_who_speaks_again_is_not_prompted() {
    let conversation = "idle_prompt_ms = 2000";
    let call = start(
        &turn_pipeline("not_silent", conversation, ""),
        16000,
        |_| {},
    );
    call.send(In::Start).await;
    for _ in 0..3 {
        call.speak(&first_utterance()).await;
        call.silence(1.5).await;
    }
    call.send(In::Stop).await;
    let (report, _) = call.ended().await;
    assert_eq!(requests("not_silent"), ["respond", "respond", "respond"]);
    assert_eq!(report.idle_prompts, 0);
    assert_eq!(report.end, CallEnd::Hangup);
}

#[tokio::test(start_paused = true)]
async fn after_the_callers_goodbye_the_bot_answers_and_ends_the_call_once_played() {
    let call = start(
        &turn_pipeline("goodbye", "", "goodbye_on_turn = 1"),
        16000,
        |_| {},
    );
    call.send(In::Start).await;
    call.speak(&first_utterance()).await;
    until_ended(&call, 10.0).await;
    let (report, sent) = call.ended().await;
    assert_eq!(requests("goodbye"), ["respond"]);
    assert_eq!(report.end, CallEnd::CompletedByBot);
    assert_eq!(
        report.hangup_reason.as_deref(),
        Some("the caller said goodbye")
    );
    let close = sent.iter().position(|o| matches!(o, Out::Closed(_)));
    let last_audio = sent.iter().rposition(|o| matches!(o, Out::Audio(_)));
    assert!(last_audio.is_some() && last_audio < close, "{sent:?}");
    // 1.5 s of answer at 16 kHz in 100 ms chunks, all of it sent before the close.
    assert!(report.media_out >= 15, "{}", report.media_out);
}

#[tokio::test(start_paused = true)]
async fn keypad_digits_reach_the_model_and_the_hand_off_key_hands_off() {
    let mut hand_offs = None;
    let call = start(&turn_pipeline("keypad", "", ""), 16000, |c| {
        hand_offs = Some(Arc::clone(&c.hand_offs));
    });
    call.send(In::Start).await;
    call.silence(0.2).await;
    for key in "1001#".chars() {
        call.send(In::Dtmf(key)).await;
    }
    call.silence(2.0).await;
    assert_eq!(
        requests("keypad"),
        [format!("text: {}", conversation::keypad_text("1001"))]
    );
    // "0" alone, ended by the pause.
    call.send(In::Dtmf('0')).await;
    until_ended(&call, 10.0).await;
    let (report, _) = call.ended().await;
    assert_eq!(report.end, CallEnd::HandedOff);
    assert_eq!(report.keypad_entries, 1);
    assert_eq!(
        requests("keypad").last().map(String::as_str),
        Some(format!("say: {}", conversation::HAND_OFF_LINE).as_str())
    );
    assert!(hand_offs.is_some_and(|h| h.contains("CA-test")));
}

#[tokio::test(start_paused = true)]
async fn an_unknown_conversation_key_is_refused_with_its_line() {
    let text = turn_pipeline("typo", "idle_promt_ms = 100", "");
    let spec = PipelineSpec::parse(&text, "typo.toml").unwrap_or_else(|e| panic!("{e}"));
    let err = Graph::compile(
        &spec,
        &crate::testing::registry(),
        &CompileOptions::default(),
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(err.contains("typo.toml:5"), "{err}");
    assert!(err.contains("idle_prompt_ms"), "suggests the key: {err}");
}
