//! Conversation control through the real server: Exotel's socket, the default pipeline, the
//! Realtime simulator on 127.0.0.1 standing in for OpenAI.

use std::time::Duration;

use caly::call::CallEnd;
use caly::devtools::realtime_sim::{ScriptTurn, Simulator, SimulatorConfig};
use caly::devtools::simulate::{ExotelClient, ServerMessage, http_get};
use caly::engine::stage::Services;
use caly::stages::realtime::RealtimeEndpoint;
use caly::testing::{read_wav_mono, within};
use serde_json::json;

use crate::helpers::{TestApp, repo, spawn_app_with};

const TOKEN: &str = "conversation-webhook-token";

fn turn(user: &str, bot: &str, tool: Option<&str>) -> ScriptTurn {
    ScriptTurn {
        user: user.into(),
        bot: bot.into(),
        bot_ms: 1200,
        tool: tool.map(|t| (t.to_owned(), json!({}))),
        more_tools: Vec::new(),
    }
}

/// The Realtime simulator playing `script`.
async fn simulator(script: Vec<ScriptTurn>) -> Simulator {
    Simulator::start(SimulatorConfig {
        script,
        ..SimulatorConfig::default()
    })
    .await
    .unwrap()
}

fn default_pipeline() -> String {
    std::fs::read_to_string(repo("pipelines/default.toml")).unwrap()
}

/// A server running `pipeline` against `sim`, with `services` besides.
async fn serve_with(sim: &Simulator, pipeline: &str, services: Services) -> TestApp {
    let services = services.with(RealtimeEndpoint {
        url: sim.url(),
        api_key: Some("sk-test".into()),
        simulator: true,
    });
    spawn_app_with(pipeline, |a| a.webhook_token = Some(TOKEN.into()), services).await
}

/// The default pipeline against `sim`.
async fn serve(sim: &Simulator) -> TestApp {
    serve_with(sim, &default_pipeline(), Services::new()).await
}

/// A call started on `app`, as Exotel starts one.
async fn call(app: &TestApp, call_sid: &str) -> ExotelClient {
    let mut c = ExotelClient::connect(&app.url("sample-rate=8000"), None)
        .await
        .unwrap();
    c.start(&format!("MZ{call_sid}"), call_sid, 8000)
        .await
        .unwrap();
    c
}

/// The fixture's first utterance, 8 kHz.
fn utterance() -> Vec<i16> {
    let (_, pcm) = read_wav_mono(&repo("fixtures/audio/speech_en_hi_8k.wav")).unwrap();
    pcm[..36_000].to_vec()
}

/// "haan" (0.5 s), taken to 8 kHz by averaging sample pairs.
fn haan() -> Vec<i16> {
    let (_, pcm) = read_wav_mono(&repo("fixtures/audio/backchannel_haan_hmm_16k.wav")).unwrap();
    pcm[6400..14_400]
        .chunks_exact(2)
        .map(|p| ((i32::from(p[0]) + i32::from(p[1])) / 2) as i16)
        .collect()
}

async fn speak(client: &mut ExotelClient, pcm: &[i16]) {
    for chunk in pcm.chunks(160) {
        client.media(chunk).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What the server has sent the caller.
#[derive(Debug, Default)]
struct Heard {
    media: usize,
    clears: usize,
    close: Option<Option<u16>>,
}

async fn listen(client: &mut ExotelClient, heard: &mut Heard, for_at_most: Duration) {
    let _ = tokio::time::timeout(for_at_most, async {
        while let Some(message) = client.recv().await {
            match message {
                ServerMessage::Media(_) => heard.media += 1,
                ServerMessage::Mark(name) => {
                    let _ = client.mark(&name).await;
                }
                ServerMessage::Clear => heard.clears += 1,
                ServerMessage::Close(code) => {
                    heard.close = Some(code);
                    return;
                }
                ServerMessage::Other(_) => {}
            }
        }
    })
    .await;
}

/// Keeps the caller's line going with silence until `done` holds of what was heard, or the
/// server closes the stream (at most `secs`).
async fn keep_line_until(
    c: &mut ExotelClient,
    heard: &mut Heard,
    secs: u64,
    what: &str,
    done: impl Fn(&Heard) -> bool,
) {
    within(Duration::from_secs(secs), what, async {
        while !done(heard) && heard.close.is_none() {
            listen(c, heard, Duration::from_millis(20)).await;
            if heard.close.is_none() {
                let _ = c.media(&[0i16; 160]).await;
            }
        }
    })
    .await;
}

/// Keeps the caller's line going with silence until Caly closes the stream (at most `secs`).
async fn until_closed(c: &mut ExotelClient, heard: &mut Heard, secs: u64) {
    keep_line_until(c, heard, secs, "the stream to be closed by Caly", |_| false).await;
}

fn response_creates(sim: &Simulator) -> usize {
    sim.log()
        .iter()
        .filter(|l| l.event["type"] == "response.create")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backchannel_over_the_bots_reply_is_neither_a_barge_in_nor_answered() {
    // A long answer (3 s), so that the "haan" lands well inside it however slow the machine.
    let mut answer = turn(
        "mera order kahan hai",
        "Aapka order number bata dijiye, main dekhti hoon.",
        None,
    );
    answer.bot_ms = 3000;
    let sim = simulator(vec![answer]).await;
    let mut app = serve(&sim).await;
    let mut c = call(&app, "CAbackchannel").await;
    speak(&mut c, &utterance()).await;
    let mut heard = Heard::default();
    keep_line_until(&mut c, &mut heard, 20, "the bot's answer", |h| h.media > 0).await;
    // "haan" while the answer plays, then quiet long enough for the model's turn detection.
    speak(&mut c, &haan()).await;
    for _ in 0..50 {
        speak(&mut c, &[0i16; 160]).await;
        listen(&mut c, &mut heard, Duration::from_millis(1)).await;
    }
    c.stop().await.unwrap();
    let report = app.report().await;
    assert_eq!(heard.clears, 0, "the bot was not cut off: {heard:?}");
    assert_eq!(
        response_creates(&sim),
        1,
        "only the real turn was answered: {report:?} {:?}",
        sim.log()
            .iter()
            .map(|l| l.event["type"].clone())
            .collect::<Vec<_>>()
    );
    assert_eq!(report.backchannels, 1, "{report:?}");
    assert!(report.barge_ins.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_who_asks_for_a_person_hears_the_hand_off_line_then_the_flow_gets_302() {
    let sim = simulator(vec![turn(
        "mujhe kisi insaan se baat karni hai",
        "Main aapko abhi team se jod rahi hoon.",
        Some("talk_to_human"),
    )])
    .await;
    let mut app = serve(&sim).await;
    let mut c = call(&app, "CAhandoff").await;
    speak(&mut c, &utterance()).await;
    let mut heard = Heard::default();
    until_closed(&mut c, &mut heard, 20).await;
    assert_eq!(heard.close, Some(Some(1000)), "{heard:?}");
    // The hand-off line, 1.2 s at 8 kHz in 200 ms chunks, all sent before the close.
    assert!(heard.media >= 6, "{heard:?}");
    let report = app.report().await;
    assert_eq!(report.end, CallEnd::HandedOff);
    assert_eq!(
        report.hangup_reason.as_deref(),
        Some("the caller asked for a person")
    );
    // Exotel's Passthru right after the Voicebot applet: 302 → Connect, 200 → Hangup.
    let addr = app.addr.to_string();
    let handed =
        format!("/v1/exotel/passthru?token={TOKEN}&CallSid=CAhandoff&Stream%5BStatus%5D=completed");
    let (status, body) = http_get(&addr, &handed).await.unwrap();
    assert_eq!(status, 302, "{body}");
    let other = format!("/v1/exotel/passthru?token={TOKEN}&CallSid=CAsomeoneelse");
    let (status, body) = http_get(&addr, &other).await.unwrap();
    assert_eq!(status, 200, "{body}");
    let metrics = http_get(&addr, "/metrics").await.unwrap().1;
    assert!(
        metrics.contains("caly_calls_ended_total{outcome=\"handed_off\"} 1"),
        "{metrics}"
    );
    // On the record: the call list filters by end reason, the KPIs count the hand-off.
    let key = app
        .state
        .db
        .create_api_key("support", caly::store::keys::Scope::Read)
        .await
        .unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::new();
    let get = |path: String| {
        let req = http
            .get(format!("http://{addr}{path}"))
            .bearer_auth(&key.secret);
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (
                status,
                resp.json::<serde_json::Value>().await.unwrap_or_default(),
            )
        }
    };
    let listed = within(Duration::from_secs(10), "the call's record", async {
        loop {
            let (status, page) = get("/v1/calls?end_reason=handed_off".into()).await;
            assert_eq!(status, 200, "{page}");
            if page["items"].as_array().is_some_and(|i| !i.is_empty()) {
                return page;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(listed["items"][0]["call_sid"], "CAhandoff", "{listed}");
    // What Passthru asks the records when another instance took the call.
    assert!(app.state.db.was_handed_off("CAhandoff").await.unwrap());
    assert!(!app.state.db.was_handed_off("CAsomeoneelse").await.unwrap());
    let (_, other) = get("/v1/calls?end_reason=caller_silent".into()).await;
    assert_eq!(other["items"], json!([]), "{other}");
    let (status, bad) = get("/v1/calls?end_reason=gone_fishing".into()).await;
    assert_eq!(status, 400, "{bad}");
    let (_, kpis) = get("/v1/analytics/kpis".into()).await;
    assert_eq!(kpis["handed_off"], 1, "{kpis}");
    assert_eq!(kpis["contained"], 0, "{kpis}");
    assert_eq!(kpis["end_reasons"]["handed_off"], 1, "{kpis}");
    // On the call's timeline: the tool call, then the hand-off with its reason.
    let events = timeline(&app, "CAhandoff", "hand_off").await;
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert!(kinds.contains(&"tool_call"), "{events:?}");
    let hand_off = events.iter().find(|e| e.kind == "hand_off").unwrap();
    assert_eq!(hand_off.detail, "the caller asked for a person");
}

/// The call's timeline events once one of `kind` is recorded.
async fn timeline(
    app: &TestApp,
    call_sid: &str,
    kind: &str,
) -> Vec<caly::store::read::CallEventRow> {
    within(Duration::from_secs(10), "the call's timeline", async {
        loop {
            if let Some(d) = app.state.db.call_detail(call_sid).await.unwrap()
                && d.events.iter().any(|e| e.kind == kind)
            {
                return d.events;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_store_gets_exactly_one_filler_then_the_answer() {
    let sim = simulator(vec![ScriptTurn {
        tool: Some(("order_status".into(), json!({"order_number": "1001"}))),
        ..turn(
            "mera order 1001 kahan hai",
            "Aapka order raste mein hai.",
            None,
        )
    }])
    .await;
    let (_shop, shopify) = slow_store(Duration::from_millis(2500)).await;
    let mut app = serve_with(&sim, &default_pipeline(), Services::new().with(shopify)).await;
    let mut c = call(&app, "CAslowstore").await;
    speak(&mut c, &utterance()).await;
    let mut heard = Heard::default();
    let outputs = || {
        sim.log()
            .iter()
            .filter(|l| l.event["item"]["type"] == "function_call_output")
            .count()
    };
    keep_line_until(
        &mut c,
        &mut heard,
        30,
        "the tool's answer to be asked for",
        |_| outputs() > 0 && response_creates(&sim) >= 3,
    )
    .await;
    listen(&mut c, &mut heard, Duration::from_millis(500)).await;
    c.stop().await.unwrap();
    let report = app.report().await;
    // What the server asked the model, in order: the turn, the filler, the answer.
    let asked: Vec<String> = sim
        .log()
        .iter()
        .filter(|l| {
            l.event["type"] == "response.create"
                || l.event["item"]["type"] == "function_call_output"
        })
        .map(|l| match l.event["response"]["instructions"].as_str() {
            Some(i) if i.contains("holding phrase") => "filler".to_owned(),
            Some(_) => "other".to_owned(),
            None if l.event["type"] == "response.create" => "respond".to_owned(),
            None => "tool output".to_owned(),
        })
        .collect();
    assert_eq!(
        asked,
        ["respond", "filler", "tool output", "respond"],
        "{report:?}"
    );
    assert_eq!(report.fillers, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_slower_than_the_run_deadline_still_answers_the_tool_call_and_is_counted() {
    let sim = simulator(vec![ScriptTurn {
        tool: Some(("order_status".into(), json!({"order_number": "1002"}))),
        ..turn("mera order 1002 kahan hai", "Ek minute.", None)
    }])
    .await;
    let (_shop, shopify) = slow_store(Duration::from_secs(3)).await;
    let pipeline = default_pipeline().replacen(
        "[stages.actions]\n",
        "[stages.actions]\nrun_timeout_ms = 1000\n",
        1,
    );
    assert!(pipeline.contains("run_timeout_ms = 1000"));
    let mut app = serve_with(&sim, &pipeline, Services::new().with(shopify)).await;
    let mut c = call(&app, "CAdeadline").await;
    speak(&mut c, &utterance()).await;
    let mut heard = Heard::default();
    let output = || {
        sim.log()
            .iter()
            .find(|l| l.event["item"]["type"] == "function_call_output")
            .map(|l| {
                l.event["item"]["output"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
    };
    keep_line_until(&mut c, &mut heard, 30, "the tool call's answer", |_| {
        output().is_some()
    })
    .await;
    let said = output().unwrap_or_default();
    assert!(said.contains("taking too long"), "{said}");
    assert!(said.contains("\"failed\""), "{said}");
    let metrics = http_get(&app.addr.to_string(), "/metrics").await.unwrap().1;
    assert!(
        metrics.contains(r#"caly_agent_runs_total{agent="order_status",result="timeout"} 1"#),
        "{metrics}"
    );
    c.stop().await.unwrap();
    let _ = app.report().await;
}

/// The fake store answering every request after `delay`, and a client for it.
async fn slow_store(
    delay: Duration,
) -> (
    caly::testing::fake_shop::FakeShopify,
    std::sync::Arc<caly::commerce::shop::Shopify>,
) {
    let shop = caly::testing::fake_shop::FakeShopify::start("shpat_test")
        .await
        .unwrap();
    shop.faults(|f| f.delay = delay);
    let config = caly::commerce::shop::ShopifyConfig::new(shop.url(), "shpat_test");
    let shopify = caly::commerce::shop::Shopify::new(config).unwrap();
    (shop, shopify)
}

fn instructed(sim: &Simulator, needle: &str) -> usize {
    sim.log()
        .iter()
        .filter(|l| {
            l.event["type"] == "response.create"
                && l.event["response"]["instructions"]
                    .as_str()
                    .is_some_and(|i| i.contains(needle))
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_caller_is_asked_then_let_go_and_the_call_ends_as_caller_silent() {
    let sim = simulator(vec![turn("hello", "Namaste, boliye?", None)]).await;
    // 2 s: longer than the 0.8 s of quiet before the caller's first words, so the only
    // silence that counts is the one after the bot's answer.
    let pipeline = default_pipeline()
        .replace("idle_prompt_ms = 8000", "idle_prompt_ms = 2000")
        .replace("idle_max_prompts = 2", "idle_max_prompts = 1");
    assert!(pipeline.contains("idle_max_prompts = 1"));
    let mut app = serve_with(&sim, &pipeline, Services::new()).await;
    let mut c = call(&app, "CAquiet").await;
    speak(&mut c, &utterance()).await;
    let mut heard = Heard::default();
    until_closed(&mut c, &mut heard, 30).await;
    assert_eq!(heard.close, Some(Some(1000)), "{heard:?}");
    let report = app.report().await;
    assert_eq!(report.end, CallEnd::CallerSilent, "{report:?}");
    assert_eq!(report.idle_prompts, 1);
    assert_eq!(instructed(&sim, "still on the line"), 1);
    assert_eq!(instructed(&sim, "goodbye"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_callers_goodbye_caly_closes_the_stream_once_the_answer_has_played() {
    let sim = simulator(vec![turn(
        "theek hai, bas itna hi, bye",
        "Dhanyavaad! Aapka din shubh ho.",
        None,
    )])
    .await;
    let mut app = serve(&sim).await;
    let mut c = call(&app, "CAgoodbye").await;
    speak(&mut c, &utterance()).await;
    let mut heard = Heard::default();
    until_closed(&mut c, &mut heard, 20).await;
    assert_eq!(heard.close, Some(Some(1000)), "{heard:?}");
    // The whole 1.2 s answer (six 200 ms chunks) went out before the close.
    assert!(heard.media >= 6, "{heard:?}");
    let report = app.report().await;
    assert_eq!(report.end, CallEnd::CompletedByBot, "{report:?}");
    assert_eq!(
        report.hangup_reason.as_deref(),
        Some("the caller said goodbye")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_typed_on_the_keypad_reach_the_model_as_the_callers_turn_and_are_answered() {
    let sim = simulator(vec![turn(
        "Caller typed on the keypad: 1001",
        "Order 1001 dekh rahi hoon.",
        None,
    )])
    .await;
    let mut app = serve(&sim).await;
    let mut c = call(&app, "CAkeypad").await;
    for _ in 0..10 {
        c.media(&[0i16; 160]).await.unwrap();
    }
    for key in "1001#".chars() {
        c.dtmf(key).await.unwrap();
    }
    let mut heard = Heard::default();
    keep_line_until(
        &mut c,
        &mut heard,
        20,
        "the answer to the typed digits",
        |h| h.media > 0,
    )
    .await;
    c.stop().await.unwrap();
    let report = app.report().await;
    assert_eq!(report.keypad_entries, 1);
    let typed: Vec<_> = sim
        .log()
        .into_iter()
        .filter(|l| {
            l.event["type"] == "conversation.item.create" && l.event["item"]["role"] == "user"
        })
        .map(|l| l.event["item"]["content"][0]["text"].clone())
        .collect();
    assert_eq!(typed, [json!("Caller typed on the keypad: 1001")]);
    assert_eq!(response_creates(&sim), 1, "answered once");
    // The entry is on the call's timeline, as typed.
    let events = timeline(&app, "CAkeypad", "keypad").await;
    let keys: Vec<&str> = events
        .iter()
        .filter(|e| e.kind == "keypad")
        .map(|e| e.detail.as_str())
        .collect();
    assert_eq!(keys, ["1001"]);
}
