//! The `realtime` stage against the offline simulator over loopback.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use caly::devtools::realtime_sim::{ScriptTurn, Simulator, SimulatorConfig};
use caly::engine::bus::{Bus, BusEvent, BusKind};
use caly::engine::frame::{Control, Event, Frame, Packet, Speaker};
use caly::engine::pipeline::{Outcome, Pipeline, PipelineOptions, SourceHandle};
use caly::engine::registry::CompileOptions;
use caly::engine::stage::Services;
use caly::stages::realtime::RealtimeEndpoint;
use caly::testing::{read_wav_mono, signal, within};
use serde_json::Value;
use tokio::sync::broadcast;

use crate::helpers::{TempDir, compile_with, repo};

const WAIT: Duration = Duration::from_secs(15);

fn script(turns: &[(&str, &str, Option<&str>)]) -> Vec<ScriptTurn> {
    turns
        .iter()
        .map(|(user, bot, tool)| ScriptTurn {
            user: (*user).into(),
            bot: (*bot).into(),
            bot_ms: 1200,
            tool: tool.map(|t| (t.into(), serde_json::json!({"order_number": "1001"}))),
            more_tools: Vec::new(),
        })
        .collect()
}

/// The realtime stage alone, with no call controller to ask for answers: the model answers
/// every turn itself (`create_response = true`), as the API does by default.
fn pipeline(voice: &str, pcmu: bool) -> String {
    let front = if pcmu {
        "[stages.decode]\nkind = \"decode\"\n[stages.vad]\nkind = \"vad\"\n[stages.ulaw]\nkind = \"encode\"\nencoding = \"mulaw\"\n"
    } else {
        "[stages.decode]\nkind = \"decode\"\n[stages.resample]\nkind = \"resample\"\nsample_rate = 24000\n[stages.vad]\nkind = \"vad\"\n"
    };
    format!(
        "[pipeline]\nname = \"rt\"\n[stages.caller]\nkind = \"call_audio\"\n{front}[stages.voice]\nkind = \"realtime\"\ncreate_response = true\n{voice}\n[stages.playback]\nkind = \"call_playback\"\ninputs = [\"voice.audio\"]\nring = {{ capacity_ms = 5000, when_full = \"block\" }}\n"
    )
}

/// A stage that offers `agents` (a quoted list body) as tools to the model and answers
/// nothing: the test plays the agent.
fn offer_tools(agents: &str) -> String {
    format!(
        "[stages.tools]\nkind = \"offer_tools\"\ninputs = [\"voice.tool_calls\"]\nagents = [\"{agents}\"]\n"
    )
}

/// One call driven by hand: caller audio in, bot audio counted, bus watched.
pub(crate) struct Call {
    pipeline: Pipeline,
    source: Option<SourceHandle>,
    bus: broadcast::Receiver<std::sync::Arc<BusEvent>>,
    audio_bytes: Arc<AtomicUsize>,
}

impl Call {
    fn start(text: &str, sim: &Simulator, key: &str) -> Call {
        Call::start_with(text, sim, key, None)
    }

    fn start_with(
        text: &str,
        sim: &Simulator,
        key: &str,
        shopify: Option<Arc<caly::commerce::shop::Shopify>>,
    ) -> Call {
        let graph = compile_with(
            text,
            CompileOptions {
                source_rate: Some(8000),
            },
        );
        let bus = Bus::new();
        let rx = bus.subscribe();
        let mut services = Services::new().with(RealtimeEndpoint {
            url: sim.url(),
            api_key: Some(key.into()),
            simulator: true,
        });
        if let Some(shop) = shopify {
            services.insert(shop);
        }
        let options = PipelineOptions {
            bus: Some(bus),
            services: Some(Arc::new(services)),
            ..Default::default()
        };
        let mut pipeline = Pipeline::start(graph, options).unwrap();
        let source = pipeline.take_source("caller").unwrap();
        let mut sink = pipeline.take_sink("playback").unwrap();
        let audio_bytes = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&audio_bytes);
        tokio::spawn(async move {
            while sink.ready().await {
                while let Some(frame) = sink.try_next() {
                    if let Frame::Packet(p) = frame {
                        counted.fetch_add(p.bytes.len(), Ordering::SeqCst);
                    }
                }
            }
        });
        Call {
            pipeline,
            source: Some(source),
            bus: rx,
            audio_bytes,
        }
    }

    /// Speech (the fixture's first utterance, then silence) at about 10× real time.
    async fn speak(&mut self) {
        let (_, pcm) = read_wav_mono(&repo("fixtures/audio/speech_en_hi_8k.wav")).unwrap();
        self.send(&pcm[..36_000]).await;
    }

    async fn send(&mut self, pcm: &[i16]) {
        let source = self.source.as_mut().unwrap();
        for chunk in pcm.chunks(160) {
            let bytes: Vec<u8> = chunk.iter().flat_map(|s| s.to_le_bytes()).collect();
            source.push(Frame::Packet(Packet { bytes: &bytes }));
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    async fn wait_for<T>(&mut self, what: &str, mut pick: impl FnMut(&BusKind) -> Option<T>) -> T {
        within(WAIT, what, async {
            loop {
                match self.bus.recv().await {
                    Ok(e) => {
                        if let Some(t) = pick(&e.kind) {
                            return t;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(e) => panic!("bus closed while waiting for {what}: {e}"),
                }
            }
        })
        .await
    }

    async fn bot_said(&mut self) -> String {
        self.wait_for("the bot's final transcript", |k| match k {
            BusKind::Text(t) if t.speaker == Speaker::Bot && t.is_final => Some(t.text.clone()),
            _ => None,
        })
        .await
    }

    /// Waits for a stage to end the call on purpose; returns its reason.
    async fn ended(&mut self) -> String {
        self.wait_for("the call to be ended", |k| match k {
            BusKind::Ended { reason } => Some(reason.clone()),
            _ => None,
        })
        .await
    }

    async fn end(mut self) -> Outcome {
        if let Some(source) = self.source.take() {
            source.close().await;
        }
        within(WAIT, "the call to end", self.pipeline.finished()).await
    }
}

fn events(sim: &Simulator, kind: &str) -> Vec<(usize, Value)> {
    sim.log()
        .into_iter()
        .filter(|l| l.event["type"] == kind)
        .map(|l| (l.connection, l.event))
        .collect()
}

async fn until(what: &str, mut f: impl FnMut() -> bool) {
    within(WAIT, what, async {
        while !f() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_is_configured_as_the_toml_says_in_both_audio_formats() {
    let dir = TempDir::new("rt");
    let prompt = dir.0.join("prompt.md");
    std::fs::write(&prompt, "Speak Hinglish, briefly.").unwrap();
    let sim = Simulator::start(SimulatorConfig::default()).await.unwrap();
    let voice = format!(
        "voice = \"shimmer\"\ninstructions = \"{}\"\nlanguage = \"hi\"",
        prompt.display()
    );
    let text = format!(
        "{}{}",
        pipeline(&voice, false),
        offer_tools("order_status\", \"cancel_order")
    );
    let mut call = Call::start(&text, &sim, "sk-test");
    call.speak().await;
    call.bot_said().await;
    let (_, update) = events(&sim, "session.update").remove(0);
    let s = &update["session"];
    assert_eq!(s["type"], "realtime");
    assert_eq!(s["model"], "gpt-realtime-2.1");
    // A reasoning model: quick answers by default, no parallel tool calls unless asked.
    assert_eq!(s["reasoning"], serde_json::json!({"effort": "low"}));
    assert!(s.get("parallel_tool_calls").is_none(), "{s}");
    assert_eq!(s["instructions"], "Speak Hinglish, briefly.");
    assert_eq!(s["output_modalities"], serde_json::json!(["audio"]));
    assert_eq!(
        s["audio"]["input"]["format"],
        serde_json::json!({"type": "audio/pcm", "rate": 24000})
    );
    assert_eq!(
        s["audio"]["output"]["format"],
        serde_json::json!({"type": "audio/pcm", "rate": 24000})
    );
    assert_eq!(s["audio"]["output"]["voice"], "shimmer");
    let tr = &s["audio"]["input"]["transcription"];
    assert_eq!(tr["model"], "gpt-transcribe");
    assert_eq!(tr["language"], "hi", "one language when the TOML names one");
    assert!(tr.get("languages").is_none(), "{tr}");
    assert!(
        tr["keywords"]
            .as_array()
            .is_some_and(|k| k.iter().any(|w| w == "refund")),
        "{tr}"
    );
    let td = &s["audio"]["input"]["turn_detection"];
    assert_eq!(
        (
            td["type"].as_str(),
            td["create_response"].as_bool(),
            td["interrupt_response"].as_bool()
        ),
        (Some("server_vad"), Some(true), Some(false))
    );
    let tools: Vec<&str> = s["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(tools, ["order_status", "cancel_order"]);
    assert!(
        sim.log().iter().all(|l| l.valid),
        "every client event is GA-shaped"
    );
    until("bot audio at playback", || {
        call.audio_bytes.load(Ordering::SeqCst) > 16_000
    })
    .await;
    assert_eq!(call.end().await, Outcome::Completed);

    let sim = Simulator::start(SimulatorConfig::default()).await.unwrap();
    let mut call = Call::start(
        &pipeline("input_format = \"pcmu\"\noutput_format = \"pcmu\"", true),
        &sim,
        "sk-test",
    );
    call.speak().await;
    call.bot_said().await;
    let (_, update) = events(&sim, "session.update").remove(0);
    assert_eq!(
        update["session"]["audio"]["input"]["format"],
        serde_json::json!({"type": "audio/pcmu"})
    );
    assert_eq!(
        update["session"]["audio"]["output"]["format"],
        serde_json::json!({"type": "audio/pcmu"})
    );
    until("bot audio at playback", || {
        call.audio_bytes.load(Ordering::SeqCst) > 16_000
    })
    .await;
    assert_eq!(call.end().await, Outcome::Completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_turn_brings_bot_audio_and_both_transcripts() {
    let sim = Simulator::start(SimulatorConfig::default()).await.unwrap();
    let mut call = Call::start(&pipeline("", false), &sim, "sk-test");
    call.speak().await;
    let caller = call
        .wait_for("the caller's transcript", |k| match k {
            BusKind::Text(t) if t.speaker == Speaker::Caller && t.is_final => Some(t.text.clone()),
            _ => None,
        })
        .await;
    assert_eq!(caller, "hello, mera order kahan hai");
    assert_eq!(
        call.bot_said().await,
        "Namaste! Aapka order number bata dijiye."
    );
    // 1.2 s of 24 kHz bot audio, at the call's 8 kHz: about 19,200 bytes.
    until("bot audio at playback", || {
        call.audio_bytes.load(Ordering::SeqCst) >= 19_000
    })
    .await;
    assert_eq!(call.end().await, Outcome::Completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn barge_in_cancels_and_truncates_to_what_the_caller_heard() {
    let config = SimulatorConfig {
        script: vec![ScriptTurn {
            user: "hello".into(),
            bot: "a long answer".into(),
            bot_ms: 4000,
            tool: None,
            more_tools: Vec::new(),
        }],
        delta_interval: Duration::from_millis(25),
        ..Default::default()
    };
    let sim = Simulator::start(config).await.unwrap();
    let mut call = Call::start(&pipeline("", false), &sim, "sk-test");
    call.speak().await;
    call.wait_for("the reply's first audio", |k| {
        matches!(k, BusKind::Event(Event::ReplyAudioStarted { .. })).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    call.pipeline.control_all(&Control::Interrupt {
        heard: Duration::from_millis(250),
    });
    until("cancel and truncate", || {
        !events(&sim, "conversation.item.truncate").is_empty()
    })
    .await;
    let cancels = events(&sim, "response.cancel");
    assert_eq!(cancels.len(), 1);
    assert!(
        cancels[0].1["response_id"]
            .as_str()
            .unwrap()
            .starts_with("resp_sim_")
    );
    let (_, truncate) = events(&sim, "conversation.item.truncate").remove(0);
    assert_eq!(truncate["audio_end_ms"], 250);
    assert_eq!(truncate["content_index"], 0);
    assert!(
        truncate["item_id"]
            .as_str()
            .unwrap()
            .starts_with("item_bot_")
    );
    call.wait_for("the cancelled response's end", |k| match k {
        BusKind::Event(Event::ResponseDone { status, .. }) if status == "cancelled" => Some(()),
        _ => None,
    })
    .await;
    assert_eq!(call.end().await, Outcome::Completed);

    // What the caller "heard" is never more than the model sent: capped, so OpenAI accepts it.
    let sim = Simulator::start(SimulatorConfig {
        script: vec![ScriptTurn {
            user: "hello".into(),
            bot: "a long answer".into(),
            bot_ms: 4000,
            tool: None,
            more_tools: Vec::new(),
        }],
        delta_interval: Duration::from_millis(25),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut call = Call::start(&pipeline("", false), &sim, "sk-test");
    call.speak().await;
    call.wait_for("the reply's first audio", |k| {
        matches!(k, BusKind::Event(Event::ReplyAudioStarted { .. })).then_some(())
    })
    .await;
    call.pipeline.control_all(&Control::Interrupt {
        heard: Duration::from_secs(60),
    });
    until("truncate", || {
        !events(&sim, "conversation.item.truncate").is_empty()
    })
    .await;
    let (_, truncate) = events(&sim, "conversation.item.truncate").remove(0);
    let end = truncate["audio_end_ms"].as_u64().unwrap();
    assert!(end > 0 && end < 4000, "capped at the audio received: {end}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    while let Ok(e) = call.bus.try_recv() {
        assert!(
            !matches!(e.kind, BusKind::Event(Event::ModelError { .. })),
            "the simulator refused the truncate: {e:?}"
        );
    }
    assert_eq!(call.end().await, Outcome::Completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_socket_reconnects_restores_context_and_the_next_turn_works() {
    let config = SimulatorConfig {
        script: script(&[
            ("pehla sawaal", "pehla jawab", None),
            ("doosra sawaal", "doosra jawab", None),
        ]),
        ..Default::default()
    };
    let sim = Simulator::start(config).await.unwrap();
    let mut call = Call::start(
        &pipeline("ping_every_ms = 100\nbackoff_initial_ms = 50", false),
        &sim,
        "sk-test",
    );
    call.speak().await;
    assert_eq!(call.bot_said().await, "pehla jawab");
    sim.faults(|f| f.drop_now = true);
    call.wait_for("a reconnection", |k| {
        matches!(k, BusKind::Event(Event::ModelReconnected { .. })).then_some(())
    })
    .await;
    assert_eq!(sim.connections(), 2);
    call.speak().await;
    assert_eq!(call.bot_said().await, "doosra jawab");
    // The new session was configured again and given the first turn back, as text.
    let second: Vec<Value> = sim
        .log()
        .into_iter()
        .filter(|l| l.connection == 1)
        .map(|l| l.event)
        .collect();
    assert_eq!(second[0]["type"], "session.update");
    let restored: Vec<(String, String)> = second
        .iter()
        .filter(|e| e["type"] == "conversation.item.create")
        .map(|e| {
            (
                e["item"]["role"].as_str().unwrap().to_owned(),
                e["item"]["content"][0]["text"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        restored,
        [
            ("user".to_owned(), "pehla sawaal".to_owned()),
            ("assistant".to_owned(), "pehla jawab".to_owned())
        ]
    );
    assert_eq!(call.end().await, Outcome::Completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_is_renewed_before_its_cap() {
    let sim = Simulator::start(SimulatorConfig::default()).await.unwrap();
    let mut call = Call::start(&pipeline("renew_after_secs = 1", false), &sim, "sk-test");
    call.send(&signal::silence(8000, 0.2)).await;
    call.wait_for("a renewal", |k| {
        matches!(k, BusKind::Event(Event::ModelReconnected { .. })).then_some(())
    })
    .await;
    assert!(sim.connections() >= 2);
    // The renewed session works.
    call.speak().await;
    call.bot_said().await;
    assert_eq!(call.end().await, Outcome::Completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fatal_errors_end_the_call_without_retrying() {
    let sim = Simulator::start(SimulatorConfig {
        api_key: Some("sk-right".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut call = Call::start(&pipeline("", false), &sim, "sk-wrong");
    call.send(&signal::silence(8000, 0.1)).await;
    let reason = call.ended().await;
    assert!(reason.contains("invalid_api_key"), "{reason}");
    assert!(matches!(call.end().await, Outcome::Ended { .. }));
    assert_eq!(sim.connections(), 1, "no reconnect loop");

    // Quota runs out mid-call.
    let sim = Simulator::start(SimulatorConfig::default()).await.unwrap();
    sim.faults(|f| f.error_next = Some(("insufficient_quota".into(), true)));
    let mut call = Call::start(&pipeline("", false), &sim, "sk-test");
    call.speak().await;
    let reason = call.ended().await;
    assert!(reason.contains("insufficient_quota"), "{reason}");
    assert!(matches!(call.end().await, Outcome::Ended { .. }));
    assert_eq!(sim.connections(), 1, "no reconnect loop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_server_trips_the_deadline_and_the_call_reconnects() {
    let sim = Simulator::start(SimulatorConfig::default()).await.unwrap();
    let mut call = Call::start(
        &pipeline(
            "read_timeout_ms = 300\nping_every_ms = 50\nwrite_timeout_ms = 200\nbackoff_initial_ms = 20",
            false,
        ),
        &sim,
        "sk-test",
    );
    call.send(&signal::silence(8000, 0.1)).await;
    until("the session to start", || {
        !events(&sim, "session.update").is_empty()
    })
    .await;
    sim.faults(|f| f.stall = true);
    until("a second connection", || sim.connections() >= 2).await;
    sim.faults(|f| f.stall = false);
    call.wait_for("a reconnection", |k| {
        matches!(k, BusKind::Event(Event::ModelReconnected { .. })).then_some(())
    })
    .await;
    call.speak().await;
    call.bot_said().await;
    assert_eq!(call.end().await, Outcome::Completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_call_round_trips_through_a_test_agent() {
    let sim = Simulator::start(SimulatorConfig {
        script: script(&[("mera order kahan hai", "Aapka order", Some("order_status"))]),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut call = Call::start(
        &format!("{}{}", pipeline("", false), offer_tools("order_status")),
        &sim,
        "sk-test",
    );
    call.speak().await;
    let (call_id, name, arguments, turns_begun) = call
        .wait_for("a tool call", |k| match k {
            BusKind::Event(Event::ToolCall {
                call_id,
                name,
                arguments,
                turns_begun,
            }) => Some((
                call_id.clone(),
                name.clone(),
                arguments.clone(),
                *turns_begun,
            )),
            _ => None,
        })
        .await;
    assert_eq!(name, "order_status");
    assert_eq!(turns_begun, Some(1), "the caller had begun one turn");
    assert_eq!(
        serde_json::from_str::<Value>(&arguments).unwrap()["order_number"],
        "1001"
    );
    // The test agent answers on the control lane.
    let output = r#"{"status":"shipped","eta":"kal"}"#.to_owned();
    call.pipeline
        .control(
            "voice",
            Control::ToolResult {
                call_id: call_id.clone(),
                output: output.clone(),
            },
        )
        .unwrap();
    let said = call.bot_said().await;
    assert!(
        said.contains("shipped"),
        "the bot speaks the store's facts: {said}"
    );
    let log: Vec<Value> = sim.log().into_iter().map(|l| l.event).collect();
    let at = log
        .iter()
        .position(|e| {
            e["type"] == "conversation.item.create" && e["item"]["type"] == "function_call_output"
        })
        .unwrap();
    assert_eq!(log[at]["item"]["call_id"], call_id.as_str());
    assert_eq!(log[at]["item"]["output"], output.as_str());
    assert_eq!(log[at + 1]["type"], "response.create");
    assert_eq!(call.end().await, Outcome::Completed);
}

fn agent_pipeline() -> String {
    format!(
        "{}\n[stages.intent]\nkind = \"classify_intent\"\ninputs = [\"voice.transcript\"]\n\n[stages.actions]\nkind = \"agent\"\ninputs = [\"intent\", \"voice.tool_calls\"]\nagents = [\"order_status\", \"cancel_order\"]\n",
        pipeline("", false)
    )
}

/// The `function_call_output`s the model got, as (status, message).
fn tool_outputs(sim: &Simulator) -> Vec<(String, String)> {
    events(sim, "conversation.item.create")
        .into_iter()
        .filter(|(_, e)| e["item"]["type"] == "function_call_output")
        .map(|(_, e)| {
            let out: Value = serde_json::from_str(e["item"]["output"].as_str().unwrap()).unwrap();
            (
                out["status"].as_str().unwrap_or_default().to_owned(),
                out["message"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

async fn store() -> (
    caly::testing::fake_shop::FakeShopify,
    Arc<caly::commerce::shop::Shopify>,
) {
    let fake = caly::testing::fake_shop::FakeShopify::start("shpat_t")
        .await
        .unwrap();
    let shop = caly::commerce::shop::Shopify::new(caly::commerce::shop::ShopifyConfig::new(
        fake.url(),
        "shpat_t",
    ))
    .unwrap();
    (fake, shop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_call_reaches_the_agent_and_a_cancel_happens_once_after_yes_even_across_a_reconnect()
{
    let (fake, shop) = store().await;
    let turns = script(&[
        (
            "order 1001 cancel kar do",
            "Pakka cancel karoon?",
            Some("cancel_order"),
        ),
        ("haan ji", "Ho gaya.", Some("cancel_order")),
        (
            "order 1001 cancel kar do na",
            "Woh ho chuka hai.",
            Some("cancel_order"),
        ),
    ]);
    let sim = Simulator::start(SimulatorConfig {
        script: turns,
        ..SimulatorConfig::default()
    })
    .await
    .unwrap();
    let mut call = Call::start_with(&agent_pipeline(), &sim, "sk-test", Some(shop));
    call.speak().await;
    let asked = call.bot_said().await;
    // The bot says the agent's question (the simulator speaks a tool's sentence).
    let (status, question) = tool_outputs(&sim).remove(0);
    assert_eq!(status, "needs_confirmation");
    assert_eq!(asked, question);
    assert_eq!(
        fake.succeeded("OrderCancel"),
        0,
        "nothing happens before the yes"
    );
    call.speak().await;
    let done = call.bot_said().await;
    assert!(done.contains("is cancelled"), "{done}");
    assert_eq!(fake.succeeded("OrderCancel"), 1);
    // The model's socket drops; the caller repeats the request on the new session.
    sim.faults(|f| f.drop_now = true);
    call.send(&signal::silence(8000, 0.3)).await;
    call.wait_for("a reconnect", |k| {
        matches!(k, BusKind::Event(Event::ModelReconnected { .. })).then_some(())
    })
    .await;
    call.speak().await;
    let again = call.bot_said().await;
    assert!(again.contains("is cancelled"), "{again}");
    let outputs = tool_outputs(&sim);
    let statuses: Vec<&str> = outputs.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(statuses, ["needs_confirmation", "done", "done"]);
    assert_eq!(
        fake.succeeded("OrderCancel"),
        1,
        "cancelled once, whatever is repeated"
    );
    assert_eq!(call.end().await, Outcome::Completed);
}

/// Plays `turns` (a caller turn and the bot's answer each) through the agent pipeline against
/// the fake store: each tool output's status, and the cancellations the store made.
async fn play_against_the_store(turns: &[(&str, &str, Option<&str>)]) -> (Vec<String>, usize) {
    let (fake, shop) = store().await;
    let sim = Simulator::start(SimulatorConfig {
        script: script(turns),
        ..SimulatorConfig::default()
    })
    .await
    .unwrap();
    let mut call = Call::start_with(&agent_pipeline(), &sim, "sk-test", Some(shop));
    for _ in turns {
        call.speak().await;
        call.bot_said().await;
    }
    let statuses: Vec<String> = tool_outputs(&sim).into_iter().map(|(s, _)| s).collect();
    assert_eq!(call.end().await, Outcome::Completed);
    (statuses, fake.succeeded("OrderCancel"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_cancel_happens_without_a_yes() {
    let (statuses, cancels) = play_against_the_store(&[
        ("order 1001 cancel kar do", "Pakka?", Some("cancel_order")),
        ("nahi rehne do", "Theek hai.", Some("cancel_order")),
        ("mera order kahan hai", "Dekhti hoon.", Some("cancel_order")),
    ])
    .await;
    assert_eq!(
        statuses,
        [
            "needs_confirmation",
            "needs_confirmation",
            "needs_confirmation"
        ]
    );
    assert_eq!(cancels, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reasoning_model_gets_its_effort_and_answers_two_parallel_tool_calls_in_one_response() {
    let mut turns = script(&[(
        "mera order aur refund",
        "Dono dekh liye",
        Some("order_status"),
    )]);
    turns[0].more_tools = vec![(
        "refund_status".into(),
        serde_json::json!({"order_number": "1001"}),
    )];
    let sim = Simulator::start(SimulatorConfig {
        script: turns,
        ..Default::default()
    })
    .await
    .unwrap();
    let voice =
        "model = \"gpt-realtime-2.1\"\nreasoning_effort = \"medium\"\nparallel_tool_calls = true";
    let text = format!(
        "{}{}",
        pipeline(voice, false),
        offer_tools("order_status\", \"refund_status")
    );
    let mut call = Call::start(&text, &sim, "sk-test");
    call.speak().await;
    let mut calls = Vec::new();
    while calls.len() < 2 {
        let c = call
            .wait_for("a tool call", |k| match k {
                BusKind::Event(Event::ToolCall { call_id, name, .. }) => {
                    Some((call_id.clone(), name.clone()))
                }
                _ => None,
            })
            .await;
        calls.push(c);
    }
    let names: Vec<&str> = calls.iter().map(|(_, n)| n.as_str()).collect();
    assert_eq!(names, ["order_status", "refund_status"]);
    // The test plays the agent: both results, one after the other.
    for (i, (call_id, _)) in calls.iter().enumerate() {
        call.pipeline
            .control(
                "voice",
                Control::ToolResult {
                    call_id: call_id.clone(),
                    output: format!("{{\"fact\":{i}}}"),
                },
            )
            .unwrap();
    }
    let said = call.bot_said().await;
    assert!(said.contains("fact 0") && said.contains("fact 1"), "{said}");
    let (_, update) = events(&sim, "session.update").remove(0);
    assert_eq!(
        update["session"]["reasoning"],
        serde_json::json!({"effort": "medium"})
    );
    assert_eq!(update["session"]["parallel_tool_calls"], true);
    // One response carried both calls, and the answer was asked for once, after both outputs.
    let log: Vec<Value> = sim.log().into_iter().map(|l| l.event).collect();
    let outputs: Vec<usize> = log
        .iter()
        .enumerate()
        .filter(|(_, e)| e["item"]["type"] == "function_call_output")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(outputs.len(), 2);
    let creates_between = log[outputs[0]..outputs[1]]
        .iter()
        .filter(|e| e["type"] == "response.create")
        .count();
    assert_eq!(creates_between, 0, "no response before every output is in");
    assert_eq!(log[outputs[1] + 1]["type"], "response.create");
    assert!(
        sim.log().iter().all(|l| l.valid),
        "every client event is GA-shaped"
    );
    assert_eq!(call.end().await, Outcome::Completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_reasoning_model_gets_neither_reasoning_nor_parallel_tool_calls() {
    let sim = Simulator::start(SimulatorConfig::default()).await.unwrap();
    let mut call = Call::start(
        &pipeline(
            "model = \"gpt-realtime-1.5\"\ntranscription_model = \"gpt-live-transcribe\"",
            false,
        ),
        &sim,
        "sk-test",
    );
    call.speak().await;
    call.bot_said().await;
    let (_, update) = events(&sim, "session.update").remove(0);
    let s = &update["session"];
    assert_eq!(s["model"], "gpt-realtime-1.5");
    assert!(s.get("reasoning").is_none(), "{s}");
    assert!(s.get("parallel_tool_calls").is_none(), "{s}");
    // Code-mixed callers: both languages by default, and the store's words.
    let tr = &s["audio"]["input"]["transcription"];
    assert_eq!(tr["model"], "gpt-live-transcribe");
    assert_eq!(tr["languages"], serde_json::json!(["hi", "en"]));
    assert!(tr.get("language").is_none());
    assert!(
        tr["keywords"]
            .as_array()
            .is_some_and(|k| k.iter().any(|w| w == "pincode"))
    );
    assert_eq!(call.end().await, Outcome::Completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_create_response_the_model_answers_only_when_the_controller_asks() {
    let sim = Simulator::start(SimulatorConfig {
        script: script(&[
            (
                "hello, mera order kahan hai",
                "Order number bata dijiye.",
                None,
            ),
            ("Caller typed on the keypad: 1001", "Dekhti hoon.", None),
        ]),
        ..SimulatorConfig::default()
    })
    .await
    .unwrap();
    let text = pipeline("", false).replace("create_response = true\n", "");
    let mut call = Call::start(&text, &sim, "sk-test");
    call.speak().await;
    call.wait_for("the model's end of the caller's turn", |k| match k {
        BusKind::Event(Event::ModelSpeechStopped) => Some(()),
        _ => None,
    })
    .await;
    let (_, update) = events(&sim, "session.update").remove(0);
    assert_eq!(
        update["session"]["audio"]["input"]["turn_detection"]["create_response"],
        false
    );
    assert!(
        events(&sim, "response.create").is_empty(),
        "nothing asked yet"
    );
    call.pipeline.control_all(&Control::Respond);
    call.bot_said().await;
    assert_eq!(events(&sim, "response.create").len(), 1);
    // Keys typed on the keypad: the caller's message to the model, answered, and in the
    // caller's transcript.
    call.pipeline.control_all(&Control::CallerText(
        "Caller typed on the keypad: 1001".into(),
    ));
    let typed = call
        .wait_for("the typed turn in the transcript", |k| match k {
            BusKind::Text(t)
                if t.speaker == Speaker::Caller && t.is_final && t.text.contains("keypad") =>
            {
                Some(t.text.clone())
            }
            _ => None,
        })
        .await;
    assert_eq!(typed, "Caller typed on the keypad: 1001");
    call.bot_said().await;
    let items: Vec<Value> = events(&sim, "conversation.item.create")
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    assert!(
        items.iter().any(|e| e["item"]["role"] == "user"
            && e["item"]["content"][0]["type"] == "input_text"
            && e["item"]["content"][0]["text"] == "Caller typed on the keypad: 1001"),
        "{items:?}"
    );
    assert_eq!(events(&sim, "response.create").len(), 2);
    call.end().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_is_not_quite_a_yes_does_not_cancel_and_a_clear_yes_then_does() {
    // The intent stage reads "haan? phir se boliye" and "haan ek minute" as `affirm` with high
    // confidence; the gate must not.
    let (statuses, cancels) = play_against_the_store(&[
        (
            "order 1001 cancel kar do",
            "Pakka cancel kar doon?",
            Some("cancel_order"),
        ),
        (
            "haan? phir se boliye",
            "Kya main order cancel kar doon?",
            Some("cancel_order"),
        ),
        (
            "haan ek minute, ghar pe pooch loon",
            "Zaroor.",
            Some("cancel_order"),
        ),
        (
            "haan ji, cancel kar dijiye",
            "Ho gaya.",
            Some("cancel_order"),
        ),
    ])
    .await;
    assert_eq!(
        statuses,
        [
            "needs_confirmation",
            "needs_confirmation",
            "needs_confirmation",
            "done"
        ]
    );
    assert_eq!(cancels, 1);
}
