//! The Exotel transport on 127.0.0.1: real server, real WebSocket client acting as Exotel.

use std::time::Duration;

use caly::call::CallEnd;
use caly::devtools::simulate::{ExotelClient, ServerMessage, tone_db};
use caly::metrics::Metrics;
use caly::testing::{read_wav_mono, signal, within};
use tokio_tungstenite::tungstenite;

use crate::helpers::{repo, spawn_app, tone_bot};

/// The first utterance of the speech fixture and the silence after it (0–4.5 s at 8 kHz).
fn utterance() -> Vec<i16> {
    let (_, pcm) = read_wav_mono(&repo("fixtures/audio/speech_en_hi_8k.wav")).unwrap();
    pcm[..36_000].to_vec()
}

/// Sends audio in 20 ms media messages, a little faster than real time.
async fn speak(client: &mut ExotelClient, pcm: &[i16]) {
    for chunk in pcm.chunks(160) {
        client.media(chunk).await.unwrap();
        tokio::time::sleep(Duration::from_millis(4)).await;
    }
}

/// Receives until `n` media chunks have come, echoing marks; returns (chunks, sequence of kinds).
async fn bot_audio(client: &mut ExotelClient, n: usize) -> (Vec<Vec<i16>>, Vec<&'static str>) {
    let mut media = Vec::new();
    let mut kinds = Vec::new();
    within(Duration::from_secs(20), "bot audio", async {
        while media.len() < n {
            match client.recv().await {
                Some(ServerMessage::Media(pcm)) => {
                    media.push(pcm);
                    kinds.push("media");
                }
                Some(ServerMessage::Mark(name)) => {
                    kinds.push("mark");
                    client.mark(&name).await.unwrap();
                }
                Some(ServerMessage::Clear) => kinds.push("clear"),
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await;
    (media, kinds)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_call_gets_chunked_bot_audio_with_marks_and_frees_everything() {
    let mut app = spawn_app(&tone_bot(1000), |_| {}).await;
    let mut client = ExotelClient::connect(&app.url("sample-rate=8000"), None)
        .await
        .unwrap();
    client.start("MZfull", "CAfull", 8000).await.unwrap();
    speak(&mut client, &utterance()).await;
    // 1 s of 440 Hz at 8 kHz plus the resampler's 10 ms: five full chunks and a padded tail.
    let (media, kinds) = bot_audio(&mut client, 6).await;
    for (i, chunk) in media.iter().enumerate() {
        let bytes = chunk.len() * 2;
        assert!(
            bytes % 320 == 0 && (3200..=100_000).contains(&bytes),
            "chunk {i}: {bytes} bytes"
        );
    }
    assert_eq!(media.iter().map(Vec::len).sum::<usize>() * 2, 6 * 3200);
    for chunk in &media[..5] {
        assert!(tone_db(chunk, 8000, 440.0) > -20.0, "the bot's tone");
    }
    // Every chunk is followed by its mark before the next chunk.
    let pattern: Vec<&str> = kinds.iter().copied().filter(|k| *k != "clear").collect();
    assert!(pattern.chunks(2).all(|p| p[0] == "media"), "{kinds:?}");
    client.stop().await.unwrap();
    let report = app.report().await;
    assert_eq!(report.end, CallEnd::Hangup);
    assert_eq!(report.stream_sid.as_deref(), Some("MZfull"));
    assert_eq!(report.call_sid.as_deref(), Some("CAfull"));
    assert_eq!(report.media_in, 225);
    assert_eq!(report.media_out, 6);
    assert!(report.bad_input.is_empty(), "{:?}", report.bad_input);
    // Everything freed: no call active, no session task left.
    assert_eq!(app.state.calls_config.metrics.calls_active.get(), 0);
    within(Duration::from_secs(5), "session task to end", async {
        while !app.state.calls.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert_eq!(
        Metrics::get(
            &app.state.calls_config.metrics.calls_ended,
            "outcome",
            "hangup"
        ),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn barge_in_clears_at_once_and_drops_the_queued_reply() {
    let mut app = spawn_app(&tone_bot(4000), |_| {}).await;
    let mut client = ExotelClient::connect(&app.url("sample-rate=8000"), None)
        .await
        .unwrap();
    client.start("MZbarge", "CAbarge", 8000).await.unwrap();
    speak(&mut client, &utterance()).await;
    // The 4 s reply starts playing.
    let (_, _) = bot_audio(&mut client, 1).await;
    // The caller talks over it: the second utterance of the fixture.
    let (_, pcm) = read_wav_mono(&repo("fixtures/audio/speech_en_hi_8k.wav")).unwrap();
    let over = pcm[38_320..50_000].to_vec();
    let mut cleared = false;
    let mut media_before_clear = 1;
    for chunk in over.chunks(160) {
        client.media(chunk).await.unwrap();
        // Read whatever the server sent meanwhile.
        while let Ok(Some(msg)) =
            tokio::time::timeout(Duration::from_millis(2), client.recv()).await
        {
            match msg {
                ServerMessage::Clear => cleared = true,
                ServerMessage::Media(_) if !cleared => media_before_clear += 1,
                ServerMessage::Mark(name) => client.mark(&name).await.unwrap(),
                _ => {}
            }
        }
        if cleared {
            break;
        }
    }
    assert!(cleared, "the server sent clear");
    client.stop().await.unwrap();
    let report = app.report().await;
    assert_eq!(report.barge_ins.len(), 1, "{report:?}");
    let reaction = report.barge_ins[0];
    assert!(
        reaction <= Duration::from_millis(50),
        "clear {reaction:?} after the VAD decision"
    );
    // Of the 4 s reply (20 chunks) only what the lead allowed before the clear went out.
    assert!(report.media_out < 10, "{} chunks sent", report.media_out);
    assert_eq!(media_before_clear as u64, report.media_out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_skipped_and_counted_while_a_neighbour_call_goes_on() {
    let mut app = spawn_app(&tone_bot(300), |_| {}).await;
    let url = app.url("sample-rate=8000");
    let healthy = tokio::spawn({
        let url = url.clone();
        async move {
            let mut a = ExotelClient::connect(&url, None).await.unwrap();
            a.start("MZgood", "CAgood", 8000).await.unwrap();
            speak(&mut a, &utterance()).await;
            a.stop().await.unwrap();
        }
    });
    let mut b = ExotelClient::connect(&url, None).await.unwrap();
    let silence = signal::silence(8000, 0.02);
    b.media(&silence).await.unwrap(); // media before start
    b.dtmf('1').await.unwrap(); // dtmf before start
    b.start("MZbad", "CAbad", 8000).await.unwrap();
    b.send_text("{this is not json".into()).await.unwrap();
    b.send_text(
        r#"{"event":"media","stream_sid":"MZbad","media":{"payload":"%%%not base64%%%"}}"#.into(),
    )
    .await
    .unwrap();
    b.media_bytes(&[1, 2, 3]).await.unwrap(); // odd byte count
    b.send_text(r#"{"event":"surprise","x":1}"#.into())
        .await
        .unwrap();
    b.send_text(format!(
        r#"{{"event":"media","pad":"{}"}}"#,
        "x".repeat(1024 * 1024)
    ))
    .await
    .unwrap(); // 1 MB
    b.send_binary(vec![0u8; 640]).await.unwrap();
    b.send_text(r#"{"event":"dtmf","dtmf":{"digit":"Z"}}"#.into())
        .await
        .unwrap();
    // The call goes on: good media still counts.
    for _ in 0..10 {
        b.media(&silence).await.unwrap();
    }
    b.stop().await.unwrap();
    healthy.await.unwrap();
    let (r1, r2) = (app.report().await, app.report().await);
    let (bad, good) = if r1.stream_sid.as_deref() == Some("MZbad") {
        (r1, r2)
    } else {
        (r2, r1)
    };
    assert_eq!(good.end, CallEnd::Hangup);
    assert!(good.bad_input.is_empty(), "{:?}", good.bad_input);
    assert_eq!(good.media_in, 225);
    assert_eq!(bad.end, CallEnd::Hangup);
    assert_eq!(bad.media_in, 10);
    let mut kinds: Vec<(&str, u64)> = bad.bad_input.iter().map(|(k, v)| (*k, *v)).collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            ("bad_base64", 1),
            ("bad_dtmf", 1),
            ("before_start", 2),
            ("binary", 1),
            ("malformed", 1),
            ("odd_bytes", 1),
            ("oversized", 1),
            ("unknown_event", 1),
        ]
    );
}

fn http_status(e: &caly::devtools::simulate::ClientError) -> Option<u16> {
    match e {
        caly::devtools::simulate::ClientError::Ws(tungstenite::Error::Http(r)) => {
            Some(r.status().as_u16())
        }
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_auth_is_required_when_configured_and_optional_otherwise() {
    let mut app = spawn_app(&tone_bot(300), |a| {
        a.stream_auth = Some("exotel:s3cret".into())
    })
    .await;
    let url = app.url("sample-rate=8000");
    for auth in [None, Some("exotel:wrong"), Some("exotel")] {
        let err = ExotelClient::connect(&url, auth)
            .await
            .err()
            .expect("refused");
        assert_eq!(http_status(&err), Some(401), "{auth:?}");
    }
    assert_eq!(
        Metrics::get(
            &app.state.calls_config.metrics.calls_refused,
            "reason",
            "unauthorized"
        ),
        3
    );
    let mut c = ExotelClient::connect(&url, Some("exotel:s3cret"))
        .await
        .unwrap();
    c.start("MZauth", "CAauth", 8000).await.unwrap();
    c.stop().await.unwrap();
    assert_eq!(app.report().await.end, CallEnd::Hangup);

    let mut open = spawn_app(&tone_bot(300), |_| {}).await;
    let mut c = ExotelClient::connect(&open.url(""), None).await.unwrap();
    c.start("MZopen", "CAopen", 8000).await.unwrap();
    c.stop().await.unwrap();
    assert_eq!(
        open.report().await.sample_rate,
        8000,
        "no query: Exotel's default rate"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_beyond_max_calls_are_refused_and_counted() {
    let mut app = spawn_app(&tone_bot(300), |a| a.max_calls = 2).await;
    let url = app.url("sample_rate=16000");
    let mut a = ExotelClient::connect(&url, None).await.unwrap();
    let _b = ExotelClient::connect(&url, None).await.unwrap();
    let err = ExotelClient::connect(&url, None)
        .await
        .err()
        .expect("refused");
    assert_eq!(http_status(&err), Some(503));
    assert_eq!(
        Metrics::get(
            &app.state.calls_config.metrics.calls_refused,
            "reason",
            "at_capacity"
        ),
        1
    );
    a.start("MZa", "CAa", 16000).await.unwrap();
    a.stop().await.unwrap();
    assert_eq!(app.report().await.sample_rate, 16000);
    // A call ended: a new one gets in.
    let mut c = ExotelClient::connect(&url, None).await.unwrap();
    c.start("MZc", "CAc", 16000).await.unwrap();
    c.stop().await.unwrap();
    assert_eq!(app.report().await.stream_sid.as_deref(), Some("MZc"));
    // A rate the pipeline does not take is refused before the upgrade.
    let err = ExotelClient::connect(&app.url("sample-rate=11025"), None)
        .await
        .err()
        .expect("refused");
    assert_eq!(http_status(&err), Some(400));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_without_media_ends_at_the_idle_timeout() {
    let mut app = spawn_app(&tone_bot(300), |a| a.idle_timeout_ms = 300).await;
    let mut c = ExotelClient::connect(&app.url("sample-rate=8000"), None)
        .await
        .unwrap();
    c.start("MZidle", "CAidle", 8000).await.unwrap();
    c.media(&signal::silence(8000, 0.1)).await.unwrap();
    let closed = within(Duration::from_secs(5), "the server to hang up", async {
        loop {
            match c.recv().await {
                Some(ServerMessage::Close(code)) => return code,
                None => return None,
                _ => {}
            }
        }
    })
    .await;
    assert_eq!(closed, Some(1000));
    assert_eq!(app.report().await.end, CallEnd::IdleTimeout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_refuses_new_calls_and_lets_calls_in_progress_finish() {
    let mut app = spawn_app(&tone_bot(300), |a| a.drain_grace_secs = 30).await;
    let mut c = ExotelClient::connect(&app.url("sample-rate=8000"), None)
        .await
        .unwrap();
    c.start("MZdrain", "CAdrain", 8000).await.unwrap();
    app.begin_shutdown();
    let addr = app.addr.to_string();
    within(Duration::from_secs(5), "readyz to say draining", async {
        loop {
            let (status, body) = caly::devtools::simulate::http_get(&addr, "/readyz")
                .await
                .unwrap();
            if status == 503 {
                assert!(body.contains("draining"), "{body}");
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let err = ExotelClient::connect(&app.url("sample-rate=8000"), None)
        .await
        .err()
        .expect("refused");
    assert_eq!(http_status(&err), Some(503));
    // The call in progress carries on and ends on its own.
    speak(&mut c, &signal::silence(8000, 0.5)).await;
    c.stop().await.unwrap();
    let report = app.report().await;
    assert_eq!((report.end, report.media_in), (CallEnd::Hangup, 25));
    app.stopped().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_grace_period_remaining_calls_are_ended_cleanly() {
    let mut app = spawn_app(&tone_bot(300), |a| a.drain_grace_secs = 1).await;
    let mut c = ExotelClient::connect(&app.url("sample-rate=8000"), None)
        .await
        .unwrap();
    c.start("MZlate", "CAlate", 8000).await.unwrap();
    c.media(&signal::silence(8000, 0.1)).await.unwrap();
    app.begin_shutdown();
    let code = within(
        Duration::from_secs(10),
        "the server to end the call",
        async {
            loop {
                match c.recv().await {
                    Some(ServerMessage::Close(code)) => return code,
                    None => return None,
                    _ => {}
                }
            }
        },
    )
    .await;
    assert_eq!(code, Some(1001), "going away");
    assert_eq!(app.report().await.end, CallEnd::Shutdown);
    app.stopped().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_makes_the_real_server_drain_and_exit_cleanly() {
    let dir = crate::helpers::TempDir::new("sigterm");
    let db = format!("sqlite://{}", dir.0.join("caly.db").display());
    let pipeline = repo("pipelines/tone_bot.toml");
    let (child, addr) = crate::helpers::spawn_binary(
        &[
            "--drain-grace-secs",
            "20",
            "--pipeline",
            pipeline.to_str().unwrap(),
            "--database-url",
            &db,
        ],
        &[],
        std::process::Stdio::null(),
    )
    .await;
    let url = format!("ws://{addr}/v1/exotel/stream?sample-rate=8000");
    let mut c = ExotelClient::connect(&url, None).await.unwrap();
    c.start("MZterm", "CAterm", 8000).await.unwrap();
    crate::helpers::sigterm(&child);
    within(Duration::from_secs(5), "readyz to say draining", async {
        loop {
            if let Ok((503, _)) = caly::devtools::simulate::http_get(&addr, "/readyz").await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    // The call in progress is not cut off.
    speak(&mut c, &signal::silence(8000, 0.3)).await;
    c.stop().await.unwrap();
    crate::helpers::exits_cleanly(child, 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_ends_at_its_maximum_duration_and_on_socket_loss() {
    let mut app = spawn_app(&tone_bot(300), |a| a.max_call_secs = 1).await;
    let mut c = ExotelClient::connect(&app.url("sample-rate=8000"), None)
        .await
        .unwrap();
    c.start("MZmax", "CAmax", 8000).await.unwrap();
    let code = within(
        Duration::from_secs(10),
        "the server to end the call",
        async {
            loop {
                // Keep media flowing so only the duration limit can end it.
                c.media(&signal::silence(8000, 0.02)).await.ok();
                match tokio::time::timeout(Duration::from_millis(20), c.recv()).await {
                    Ok(Some(ServerMessage::Close(code))) => return code,
                    Ok(None) => return None,
                    _ => {}
                }
            }
        },
    )
    .await;
    assert_eq!(code, Some(1000));
    assert_eq!(app.report().await.end, CallEnd::MaxDuration);

    // The peer vanishes without `stop`.
    let mut app = spawn_app(&tone_bot(300), |_| {}).await;
    let mut c = ExotelClient::connect(&app.url("sample-rate=8000"), None)
        .await
        .unwrap();
    c.start("MZlost", "CAlost", 8000).await.unwrap();
    c.media(&signal::silence(8000, 0.1)).await.unwrap();
    drop(c);
    let report = app.report().await;
    assert_eq!(report.end, CallEnd::SocketLost);
    assert_eq!(app.state.calls_config.metrics.calls_active.get(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_through_the_server_and_the_realtime_simulator_reaches_the_caller() {
    let pipeline = std::fs::read_to_string(repo("pipelines/default.toml")).unwrap();
    let mut app = spawn_app(&pipeline, |_| {}).await;
    if app.state.realtime != "simulator" {
        eprintln!("skipped: OPENAI_API_KEY is set, so the server would call OpenAI");
        return;
    }
    let (status, body) = caly::devtools::simulate::http_get(&app.addr.to_string(), "/readyz")
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("\"realtime\":\"simulator\""), "{body}");
    let mut c = ExotelClient::connect(&app.url("sample-rate=8000"), None)
        .await
        .unwrap();
    c.start("MZrt", "CArt", 8000).await.unwrap();
    speak(&mut c, &utterance()).await;
    // The simulator's 1.2 s answer, at 8 kHz: six chunks (the last one padded).
    let (media, _) = bot_audio(&mut c, 6).await;
    assert!(media.iter().all(|m| m.len() * 2 % 320 == 0));
    // Let the last mark come back before hanging up.
    tokio::time::sleep(Duration::from_millis(100)).await;
    c.stop().await.unwrap();
    let report = app.report().await;
    assert_eq!(report.end, CallEnd::Hangup);
    assert_eq!(report.turns.len(), 1, "{report:?}");
    let turn = report.turns[0];
    assert!(
        turn.voice_to_voice_sent_ms >= turn.model_ms + turn.engine_ms - 0.001,
        "{turn:?}"
    );
    assert!(
        turn.voice_to_voice_played_ms
            .is_some_and(|p| p >= turn.voice_to_voice_sent_ms),
        "{turn:?}"
    );
    let metrics = caly::devtools::simulate::http_get(&app.addr.to_string(), "/metrics")
        .await
        .unwrap()
        .1;
    assert_eq!(
        caly::devtools::simulate::metric_sum(&metrics, "caly_turn_engine_seconds_count"),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speech_over_a_reply_clears_it_and_backchannels_over_it_do_not() {
    // `caly simulate --barge-in --truth` over the overlapping-speech fixture: sentences spoken
    // over the bot's replies from their true onsets are timed to `clear`; "haan", "hmm",
    // "achha", "ji" spoken over a reply must leave it playing.
    let app = spawn_app(&tone_bot(1000), |_| {}).await;
    let options = caly::devtools::simulate::SimulateOptions {
        url: app.url("sample-rate=8000"),
        calls: 1,
        audio: Some(repo("fixtures/audio/overlap_speech_hi_en_8k.wav")),
        duration: Duration::from_secs(24),
        chunk_ms: 20,
        stagger: Duration::ZERO,
        barge_in: true,
        truth: Some(repo("fixtures/audio/truth.json")),
        probes: false,
        server_pid: None,
        auth: None,
    };
    let report = caly::devtools::simulate::run(options).await.unwrap();
    assert_eq!(report.completed, 1, "{report:?}");
    assert!(
        report.barge_in_reaction.n >= 2,
        "sentences timed: {report:?}"
    );
    assert!(
        report.backchannels_held >= 2,
        "backchannels spoken: {report:?}"
    );
    assert_eq!(report.backchannel_clears, 0, "{report:?}");
    assert_eq!(
        report.clears as usize, report.barge_in_reaction.n,
        "every clear was for a sentence: {report:?}"
    );
}

/// The newcomer's first run: `caly serve` with no keys (the Realtime simulator and the demo
/// store, both announced on `/readyz`), then `caly simulate`. The calls look up a real demo
/// order and the records read as a conversation: the bot says what the store said, never the
/// tool's JSON, and never promises what the store did not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomers_simulated_calls_look_up_a_demo_order_and_the_bot_speaks_no_json() {
    let pipeline = std::fs::read_to_string(repo("pipelines/default.toml")).unwrap();
    if !offline() {
        return;
    }
    let app = spawn_app(&pipeline, |_| {}).await;
    assert_eq!((app.state.realtime, app.state.store), ("simulator", "demo"));
    let (_, body) = caly::devtools::simulate::http_get(&app.addr.to_string(), "/readyz")
        .await
        .unwrap();
    assert!(body.contains("\"store\":\"demo\""), "{body}");
    let report = simulate_calls(&app, 2, 20).await;
    for i in 0..2 {
        let detail = recorded(&app, &report, i, |d| {
            d.actions.iter().any(|a| a.status == "done")
                && d.transcript
                    .iter()
                    .any(|s| s.speaker == "bot" && s.text.contains("1001"))
        })
        .await;
        let bot: Vec<&str> = detail
            .transcript
            .iter()
            .filter(|s| s.speaker == "bot")
            .map(|s| s.text.as_str())
            .collect();
        for line in &bot {
            assert!(
                !line.contains(['{', '}']) && !line.contains("\"status\""),
                "raw JSON in the bot's words: {line}"
            );
        }
        let action = detail
            .actions
            .iter()
            .find(|a| a.action == "order_status")
            .unwrap_or_else(|| panic!("{detail:?}"));
        assert_eq!(action.status, "done", "{detail:?}");
        assert!(
            bot.iter().all(|l| !l.contains("kal tak deliver")),
            "a promise the store did not make: {bot:?}"
        );
    }
}

/// `--no-demo-store`: without Shopify settings the agents answer that the store is not
/// connected, and the bot says exactly that (the agent's sentence, not its JSON).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_demo_store_the_bot_says_the_store_is_not_connected() {
    let pipeline = std::fs::read_to_string(repo("pipelines/default.toml")).unwrap();
    if !offline() {
        return;
    }
    let app = spawn_app(&pipeline, |a| a.no_demo_store = true).await;
    assert_eq!(app.state.store, "unconfigured");
    assert!(app.state.demo_store.is_none());
    let report = simulate_calls(&app, 1, 12).await;
    let detail = recorded(&app, &report, 0, |d| {
        d.actions.first().is_some_and(|a| {
            d.transcript
                .iter()
                .any(|s| s.speaker == "bot" && s.text == a.detail)
        })
    })
    .await;
    assert_eq!(detail.actions[0].status, "not_configured", "{detail:?}");
    for s in detail.transcript.iter().filter(|s| s.speaker == "bot") {
        assert!(
            !s.text.contains(['{', '}']),
            "raw JSON in the bot's words: {}",
            s.text
        );
    }
}

/// With a real model (an API key) and no Shopify settings there is no demo store: real
/// callers must never hear about orders that do not exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_model_without_a_store_gets_no_demo_store() {
    let pipeline = std::fs::read_to_string(repo("pipelines/default.toml")).unwrap();
    let services =
        caly::engine::stage::Services::new().with(caly::stages::realtime::RealtimeEndpoint {
            url: "ws://127.0.0.1:9/v1/realtime".into(),
            api_key: Some("sk-not-used".into()),
            simulator: false,
        });
    let app = crate::helpers::spawn_app_with(&pipeline, |_| {}, services).await;
    assert_eq!(app.state.realtime, "openai");
    assert_eq!(app.state.store, "unconfigured");
    assert!(app.state.demo_store.is_none());
}

/// The cost of a call is the simulator's reported usage priced by the table the server was
/// given: per call in the records, in the KPIs (per call and per contained call) and on
/// `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_calls_cost_is_its_reported_usage_at_the_price_tables_rates() {
    let pipeline = std::fs::read_to_string(repo("pipelines/default.toml")).unwrap();
    let dir = crate::helpers::TempDir::new("prices");
    let table = dir.0.join("prices.toml");
    // Round prices so the expected sum is easy to follow: $1, 0.5, 2, 10, 0.25, 20 per 1M.
    std::fs::write(
        &table,
        "as_of = \"2026-12-01\"\ncurrency = \"USD\"\n[models.\"gpt-realtime-2.1\"]\ntext_in = 1.0\ntext_in_cached = 0.5\ntext_out = 2.0\naudio_in = 10.0\naudio_in_cached = 0.25\naudio_out = 20.0\n",
    )
    .unwrap();
    if !offline() {
        return;
    }
    let app = spawn_app(&pipeline, |a| a.prices = Some(table.clone())).await;
    let sim = app
        .state
        .simulator
        .clone()
        .expect("offline: the simulator plays the model");
    let report = simulate_calls(&app, 1, 12).await;
    let sent = sim.usage_sent();
    assert!(sent.len() >= 3, "{sent:?}");
    let n = |u: &serde_json::Value, path: &str| u.pointer(path).and_then(|v| v.as_u64()).unwrap();
    let mut expected = 0.0;
    let mut audio_out = 0;
    for u in &sent {
        let (text, text_cached) = (
            n(u, "/input_token_details/text_tokens"),
            n(u, "/input_token_details/cached_tokens_details/text_tokens"),
        );
        let audio = n(u, "/input_token_details/audio_tokens");
        expected += ((text - text_cached) as f64 * 1.0
            + text_cached as f64 * 0.5
            + audio as f64 * 10.0
            + n(u, "/output_token_details/text_tokens") as f64 * 2.0
            + n(u, "/output_token_details/audio_tokens") as f64 * 20.0)
            / 1e6;
        audio_out += n(u, "/output_token_details/audio_tokens");
    }
    let call = recorded(&app, &report, 0, |d| d.call.ended_at.is_some())
        .await
        .call;
    assert!(expected > 0.0);
    assert!(
        (call.cost_usd - expected).abs() < 1e-12,
        "{} vs {expected}",
        call.cost_usd
    );
    assert_eq!(call.usage.audio_out, audio_out);
    let now = caly::store::now_ms();
    let kpis = app
        .state
        .db
        .kpis(now - 3_600_000, now + 1_000)
        .await
        .unwrap();
    assert!((kpis.cost_usd - expected).abs() < 1e-12, "{kpis:?}");
    assert_eq!(kpis.contained, 1);
    assert!((kpis.cost_per_contained_call_usd.unwrap() - expected).abs() < 1e-12);
    let metrics = caly::devtools::simulate::http_get(&app.addr.to_string(), "/metrics")
        .await
        .unwrap()
        .1;
    let scraped = caly::devtools::simulate::metric_sum(&metrics, "caly_model_cost_usd_total");
    assert!((scraped - expected).abs() < 1e-9, "{scraped} vs {expected}");
    assert_eq!(
        caly::devtools::simulate::metric_sum(&metrics, "caly_model_tokens_total") as u64,
        sent.iter()
            .map(|u| n(u, "/total_tokens") + n(u, "/input_token_details/cached_tokens"))
            .sum::<u64>()
    );
}

/// Whether the environment leaves the server offline: no OpenAI key (the Realtime simulator
/// plays the model) and no Shopify settings (the demo store, unless turned off). The tests
/// of the offline mode skip otherwise, and only then.
fn offline() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.is_empty());
    if set("OPENAI_API_KEY") || set("SHOPIFY_ACCESS_TOKEN") {
        eprintln!("skipped: OPENAI_API_KEY or Shopify settings are set");
        return false;
    }
    true
}

/// `caly simulate`'s calls (generated speech, no probes) against `app`; every one completes.
async fn simulate_calls(
    app: &crate::helpers::TestApp,
    calls: usize,
    secs: u64,
) -> caly::devtools::simulate::SimReport {
    let options = caly::devtools::simulate::SimulateOptions {
        url: app.url("sample-rate=8000"),
        calls,
        audio: None,
        duration: Duration::from_secs(secs),
        chunk_ms: 100,
        stagger: Duration::ZERO,
        barge_in: false,
        truth: None,
        probes: false,
        server_pid: None,
        auth: None,
    };
    let report = caly::devtools::simulate::run(options).await.unwrap();
    assert_eq!(report.completed, calls, "{report:?}");
    report
}

/// Call `index` of a simulated run as its records hold it, once `ready` says they are written.
async fn recorded(
    app: &crate::helpers::TestApp,
    report: &caly::devtools::simulate::SimReport,
    index: usize,
    ready: impl Fn(&caly::store::read::CallDetail) -> bool,
) -> caly::store::read::CallDetail {
    let sid = caly::devtools::simulate::call_sid(&report.run, index);
    within(Duration::from_secs(10), "the call's records", async {
        loop {
            if let Some(d) = app.state.db.call_detail(&sid).await.unwrap()
                && ready(&d)
            {
                return d;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}
