//! What operators see: the real binary's logs during a full simulated call (JSON, masked
//! numbers, no transcript text at INFO, the call's ids on its lines).

use std::time::Duration;

use caly::devtools::simulate::ExotelClient;
use caly::testing::within;

use crate::helpers::{TempDir, repo, spawn_binary, take_a_turn, utterance};

/// Runs `caly serve` (default pipeline, Realtime simulator) with `RUST_LOG=level`, makes one
/// call from +919800000000, stops the server, and returns its stderr and the call's recorded
/// transcript lines.
async fn one_call_logged(level: &str) -> (String, Vec<String>) {
    let dir = TempDir::new("logs");
    let db = format!("sqlite://{}", dir.0.join("caly.db").display());
    let log_path = dir.0.join("stderr.log");
    let pipeline = repo("pipelines/default.toml");
    let (child, addr) = spawn_binary(
        &[
            "--drain-grace-secs",
            "5",
            "--pipeline",
            pipeline.to_str().unwrap(),
            "--database-url",
            &db,
        ],
        &[("RUST_LOG", level)],
        std::fs::File::create(&log_path).unwrap().into(),
    )
    .await;
    let url = format!("ws://{addr}/v1/exotel/stream?sample-rate=8000");
    let mut c = ExotelClient::connect(&url, None).await.unwrap();
    c.start("MZlog", "CAlog", 8000).await.unwrap();
    take_a_turn(&mut c, &utterance()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.stop().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    crate::helpers::sigterm(&child);
    crate::helpers::exits_cleanly(child, 30).await;
    let logs = std::fs::read_to_string(&log_path).unwrap();
    let store = caly::store::Store::connect(&db).await.unwrap();
    let detail = store
        .call_detail("CAlog")
        .await
        .unwrap()
        .expect("the call was recorded");
    store.close().await;
    let lines = detail
        .transcript
        .iter()
        .map(|s| s.text.clone())
        .filter(|t| t.len() >= 8)
        .collect();
    (logs, lines)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_call_logs_json_with_masked_numbers_and_no_transcript_at_info() {
    let (logs, transcript) = one_call_logged("info").await;
    assert!(
        !transcript.is_empty(),
        "the call must have a transcript to look for"
    );
    let mut call_lines = 0;
    for line in logs.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["message"].is_string(), "{line}");
        if v["span"]["call_sid"] == "CAlog" {
            call_lines += 1;
        }
    }
    assert!(call_lines >= 2, "the call's lines carry its span:\n{logs}");
    assert!(!logs.contains("9800000000"), "an unmasked number:\n{logs}");
    assert!(
        logs.contains("\"from\":\"+********0000\""),
        "the caller, masked, on `Call started.`:\n{logs}"
    );
    for text in &transcript {
        assert!(
            !logs.contains(text.as_str()),
            "transcript at INFO: {text}\n{logs}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_debug_the_transcript_is_visible_and_numbers_are_still_masked() {
    // The INFO test above would pass vacuously if transcripts never reached the log at all.
    let (logs, transcript) = one_call_logged("info,caly::call=debug").await;
    assert!(
        transcript.iter().any(|t| logs.contains(t.as_str())),
        "no transcript line at DEBUG: {transcript:?}"
    );
    assert!(!logs.contains("9800000000"));
}

/// Parses a `/metrics` answer with a Prometheus text parser; panics if it does not parse.
fn scrape(text: &str) -> prometheus_parse::Scrape {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    prometheus_parse::Scrape::parse(lines).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// The sum of every sample of `name` whose labels include `labels`.
fn value(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    s.samples
        .iter()
        .filter(|x| x.metric == name)
        .filter(|x| labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match &x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(h) => h.iter().map(|b| b.count).fold(0.0, f64::max),
            prometheus_parse::Value::Summary(_) => 0.0,
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_and_move_during_a_call() {
    let pipeline = std::fs::read_to_string(repo("pipelines/default.toml")).unwrap();
    let mut app = crate::helpers::spawn_app(&pipeline, |_| {}).await;
    if app.state.realtime != "simulator" {
        eprintln!("skipped: OPENAI_API_KEY is set, so the server would call OpenAI");
        return;
    }
    let addr = app.addr.to_string();
    let before = scrape(
        &caly::devtools::simulate::http_get(&addr, "/metrics")
            .await
            .unwrap()
            .1,
    );
    let mut c = ExotelClient::connect(&app.url("sample-rate=8000"), None)
        .await
        .unwrap();
    c.start("MZmetrics", "CAmetrics", 8000).await.unwrap();
    take_a_turn(&mut c, &utterance()).await;
    // Mid-call (the caller has not hung up): one call active.
    let during = scrape(
        &caly::devtools::simulate::http_get(&addr, "/metrics")
            .await
            .unwrap()
            .1,
    );
    assert_eq!(value(&during, "caly_calls_active", &[]), 1.0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.stop().await.unwrap();
    app.report().await;
    // The call's records are written within a second of its end.
    let after = within(
        Duration::from_secs(10),
        "the records to be written",
        async {
            loop {
                let s = scrape(
                    &caly::devtools::simulate::http_get(&addr, "/metrics")
                        .await
                        .unwrap()
                        .1,
                );
                if value(&s, "caly_store_queue_depth", &[]) == 0.0
                    && value(&s, "caly_store_records_written_total", &[]) > 0.0
                {
                    return s;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        },
    )
    .await;
    let moved = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };
    assert_eq!(value(&after, "caly_calls_active", &[]), 0.0);
    assert_eq!(
        moved("caly_calls_ended_total", &[("outcome", "hangup")]),
        1.0
    );
    assert_eq!(moved("caly_media_in_total", &[]), 225.0);
    assert!(moved("caly_media_out_total", &[]) >= 6.0);
    assert_eq!(
        moved("caly_voice_to_voice_sent_seconds", &[]),
        1.0,
        "one turn observed"
    );
    // The ring may hand a stage several media messages' bytes at once.
    assert!(moved("caly_stage_frames_total", &[("stage", "decode")]) > 0.0);
    assert!(moved("caly_stage_frame_seconds", &[("stage", "vad")]) >= 1.0);
    assert!(moved("caly_store_records_written_total", &[]) >= 4.0);
    assert!(value(&after, "caly_store_flush_seconds", &[]) >= 1.0);
    assert!(value(&after, "caly_db_pool_connections", &[]) >= 1.0);
    assert_eq!(value(&after, "caly_store_records_dropped_total", &[]), 0.0);
}
