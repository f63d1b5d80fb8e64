//! Call records on both backends: every test runs against a fresh SQLite file and, when
//! `TEST_DATABASE_URL` is set, a fresh PostgreSQL database. Webhooks, every REST route with its
//! auth cases, filters and pagination, hostile input, no N+1, the write-behind queue through
//! an outage and a shutdown, and a real call recorded end to end.

use std::collections::HashSet;
use std::time::Duration;

use caly::devtools::simulate::ExotelClient;
use caly::store::keys::Scope;
use caly::store::{Record, RecorderConfig, RecorderTask, Store, call_id_for_sid, now_ms};
use caly::testing::within;
use serde_json::Value;
use sqlx::{Connection as _, Executor as _};

use crate::helpers::{
    TestDb, postgres_db, repo, spawn_app, sqlite_db, take_a_turn, test_dbs, tone_bot, utterance,
};

const TOKEN: &str = "s3cret-webhook-token";

pub(crate) async fn open(db: &TestDb) -> Store {
    let store = Store::connect(&db.url).await.unwrap();
    store.migrate().await.unwrap();
    store
}

pub(crate) struct Http {
    pub(crate) base: String,
    pub(crate) client: reqwest::Client,
}

impl Http {
    pub(crate) fn new(addr: std::net::SocketAddr) -> Http {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Http {
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
        }
    }

    pub(crate) async fn get(&self, path: &str, key: Option<&str>) -> (u16, Value) {
        let mut req = self.client.get(format!("{}{path}", self.base));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&body).unwrap_or(Value::String(body)),
        )
    }

    pub(crate) async fn post(&self, path: &str, content_type: &str, body: String) -> (u16, Value) {
        let resp = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&body).unwrap_or(Value::String(body)),
        )
    }

    pub(crate) async fn send(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&body).unwrap_or(Value::String(body)),
        )
    }
}

pub(crate) fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no error code>")
}

/// A finished call with `segments` transcript segments, an intent and an action.
pub(crate) fn seeded_call(sid: &str, started_ms: i64, segments: i64) -> Vec<Record> {
    let id = call_id_for_sid(sid);
    let mut records = vec![Record::CallStarted {
        id: id.clone(),
        call_sid: Some(sid.into()),
        stream_sid: Some(format!("MZ{sid}")),
        from: Some("+919876543210".into()),
        to: Some("+918041234567".into()),
        direction: None,
        pipeline: "default".into(),
        at_ms: started_ms,
    }];
    for seq in 0..segments {
        records.push(Record::Segment {
            call_id: id.clone(),
            seq,
            speaker: if seq % 2 == 0 { "caller" } else { "bot" },
            text: format!("segment {seq} mera order kahan hai"),
            pts_ms: seq * 1500,
            at_ms: started_ms + seq,
        });
    }
    records.push(Record::Intent {
        call_id: id.clone(),
        seq: 0,
        intent: "order_status".into(),
        confidence: 0.93,
        entities: r#"{"order_id":"1001"}"#.into(),
        accepted: true,
        at_ms: started_ms,
    });
    records.push(Record::Action {
        call_id: id.clone(),
        action: "order_status".into(),
        order: Some("#1001".into()),
        key: format!("{id}:order_status:#1001"),
        status: "done".into(),
        detail: "Order #1001 is out for delivery.".into(),
        at_ms: started_ms,
    });
    records.push(Record::CallEnded {
        id,
        call_sid: Some(sid.into()),
        ended_at_ms: started_ms + 60_000,
        duration_ms: 60_000,
        end_reason: "hangup".into(),
        turns: 1,
        barge_ins: 0,
        v2v_p50_ms: Some(700),
        v2v_max_ms: Some(700),
        usage: SEEDED_USAGE,
        cost_usd: SEEDED_COST,
    });
    records
}

/// The model use every seeded call records.
const SEEDED_USAGE: caly::engine::frame::TokenUse = caly::engine::frame::TokenUse {
    text_in: 1_200,
    text_in_cached: 800,
    audio_in: 900,
    audio_in_cached: 0,
    text_out: 150,
    audio_out: 1_100,
};
/// What it cost.
const SEEDED_COST: f64 = 0.125;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_need_the_token_apply_once_and_converge_in_any_order() {
    for db in test_dbs().await {
        let url = db.url.clone();
        let mut app = spawn_app(&tone_bot(400), |a| {
            a.database_url = url;
            a.webhook_token = Some(TOKEN.into());
        })
        .await;
        let http = Http::new(app.addr);
        let form = "application/x-www-form-urlencoded";
        let terminal = "CallSid=CAorder&EventType=terminal&Status=completed&From=09876543210\
                        &To=08041234567&StartTime=2026-11-25+10%3A00%3A00\
                        &EndTime=2026-11-25+10%3A01%3A00&ConversationDuration=55\
                        &RecordingUrl=https%3A%2F%2Fs3.example%2Frec.mp3";
        // Missing and wrong tokens.
        let (s, b) = http.post("/v1/exotel/status", form, terminal.into()).await;
        assert_eq!(
            (s, error_code(&b)),
            (401, "unauthorized"),
            "{}: {b}",
            db.label
        );
        let (s, b) = http
            .post("/v1/exotel/status?token=nope", form, terminal.into())
            .await;
        assert_eq!((s, error_code(&b)), (403, "forbidden"), "{}: {b}", db.label);
        let store = open(&db).await;
        assert_eq!(store.count_rows("webhook_events").await.unwrap(), 0);

        // The terminal callback arrives first, before the stream even starts.
        let path = format!("/v1/exotel/status?token={TOKEN}");
        let (s, b) = http.post(&path, form, terminal.into()).await;
        assert_eq!((s, b["status"].as_str()), (200, Some("applied")), "{b}");
        let (s, b) = http.post(&path, form, terminal.into()).await;
        assert_eq!((s, b["status"].as_str()), (200, Some("duplicate")), "{b}");
        // A late `answered` (JSON this time) must not regress the terminal status.
        let answered = r#"{"CallSid":"CAorder","EventType":"answered","Status":"in-progress"}"#;
        let (s, _) = http.post(&path, "application/json", answered.into()).await;
        assert_eq!(s, 200);
        // Passthru after the Voicebot applet, as a GET with nested Stream keys.
        let passthru = format!(
            "/v1/exotel/passthru?token={TOKEN}&CallSid=CAorder&Stream%5BStreamSID%5D=MZorder\
             &Stream%5BStatus%5D=completed&Stream%5BDuration%5D=58&digits=%221%22"
        );
        let (s, b) = http.get(&passthru, None).await;
        assert_eq!((s, b["status"].as_str()), (200, Some("applied")), "{b}");
        let (s, b) = http.get(&passthru, None).await;
        assert_eq!(b["status"].as_str(), Some("duplicate"), "{s} {b}");
        assert_eq!(store.count_rows("webhook_events").await.unwrap(), 3);
        assert_eq!(store.count_rows("calls").await.unwrap(), 1);

        // Now the media stream of the same call runs and ends.
        let mut client = ExotelClient::connect(&app.url("sample-rate=8000"), None)
            .await
            .unwrap();
        client.start("MZorder", "CAorder", 8000).await.unwrap();
        client.media(&vec![0i16; 1600]).await.unwrap();
        client.stop().await.unwrap();
        app.report().await;
        let call = within(Duration::from_secs(10), "the call's end recorded", async {
            loop {
                let c = store.find_call("CAorder").await.unwrap().unwrap();
                if c.end_reason.is_some() {
                    return c;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        assert_eq!(call.id, call_id_for_sid("CAorder"));
        assert_eq!(call.status, "completed", "{}", db.label);
        assert_eq!(
            call.recording_url.as_deref(),
            Some("https://s3.example/rec.mp3")
        );
        assert_eq!(call.conversation_s, Some(55));
        assert_eq!(call.from.as_deref(), Some("+919876543210"));
        assert_eq!(call.stream_sid.as_deref(), Some("MZorder"));
        assert_eq!(call.end_reason.as_deref(), Some("hangup"));
        assert_eq!(store.count_rows("calls").await.unwrap(), 1);

        // A terminal failure reported by Exotel replaces our own `completed`.
        let failed = "CallSid=CAlate&Status=failed";
        let (s, _) = http.post(&path, form, failed.into()).await;
        assert_eq!(s, 200);
        assert_eq!(
            store.find_call("CAlate").await.unwrap().unwrap().status,
            "failed"
        );
        app.begin_shutdown();
        app.stopped().await.unwrap();
        store.close().await;
        db.drop_db().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_refused_when_no_token_is_configured() {
    let app = spawn_app(&tone_bot(400), |_| {}).await;
    let http = Http::new(app.addr);
    let (s, b) = http
        .post(
            "/v1/exotel/status?token=anything",
            "application/x-www-form-urlencoded",
            "CallSid=CA1&Status=completed".into(),
        )
        .await;
    assert_eq!((s, error_code(&b)), (403, "forbidden"), "{b}");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("CALY_WEBHOOK_TOKEN")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rest_route_wants_a_valid_key_of_the_right_scope() {
    for db in test_dbs().await {
        let url = db.url.clone();
        let app = spawn_app(&tone_bot(400), |a| {
            a.database_url = url;
            a.api_rate_per_sec = 1000;
        })
        .await;
        let http = Http::new(app.addr);
        let store = open(&db).await;
        store
            .write_batch(&seeded_call("CArest", now_ms() - 5_000, 3))
            .await
            .unwrap();
        let read = store
            .create_api_key("dashboard", Scope::Read)
            .await
            .unwrap();
        let admin = store.create_api_key("ops", Scope::Admin).await.unwrap();
        let id = call_id_for_sid("CArest");
        let routes = [
            "/v1/calls".to_owned(),
            format!("/v1/calls/{id}"),
            "/v1/calls/CArest".to_owned(),
            format!("/v1/calls/{id}/transcript"),
            "/v1/actions".to_owned(),
            "/v1/analytics/kpis".to_owned(),
        ];
        for route in &routes {
            let (s, b) = http.get(route, None).await;
            assert_eq!((s, error_code(&b)), (401, "unauthorized"), "{route}");
            let (s, _) = http.get(route, Some("caly_00000000_nope")).await;
            assert_eq!(s, 401, "{route}");
            // Change the last character to a different one: a fixed
            // replacement would equal the real secret whenever it already
            // ended in that character.
            let last = read.secret.chars().last().unwrap_or('0');
            let other = if last == '0' { '1' } else { '0' };
            let forged = format!("{}{other}", &read.secret[..read.secret.len() - 1]);
            let (s, _) = http.get(route, Some(&forged)).await;
            assert_eq!(s, 401, "{route} with a forged secret");
            let (s, b) = http.get(route, Some(&read.secret)).await;
            assert_eq!(s, 200, "{} {route}: {b}", db.label);
        }
        let (_, detail) = http.get("/v1/calls/CArest", Some(&read.secret)).await;
        assert_eq!(detail["id"], id.as_str());
        assert_eq!(detail["transcript"].as_array().unwrap().len(), 3);
        assert_eq!(detail["intents"][0]["intent"], "order_status");
        assert_eq!(detail["intents"][0]["entities"]["order_id"], "1001");
        assert_eq!(detail["actions"][0]["status"], "done");
        let (_, t) = http
            .get(&format!("/v1/calls/{id}/transcript"), Some(&read.secret))
            .await;
        assert_eq!(t["segments"][1]["speaker"], "bot");
        let (s, b) = http.get("/v1/calls/CAnothere", Some(&read.secret)).await;
        assert_eq!((s, error_code(&b)), (404, "not_found"));

        // Key management wants admin.
        let new_key = |key: &str| {
            http.client
                .post(format!("{}/v1/apikeys", http.base))
                .bearer_auth(key)
                .json(&serde_json::json!({"name": "ci", "scope": "read"}))
        };
        let (s, b) = http.send(new_key(&read.secret)).await;
        assert_eq!((s, error_code(&b)), (403, "forbidden"), "{b}");
        let (s, created) = http.send(new_key(&admin.secret)).await;
        assert_eq!(s, 201, "{created}");
        let fresh = created["key"].as_str().unwrap().to_owned();
        assert_eq!(http.get("/v1/calls", Some(&fresh)).await.0, 200);
        let revoke = http
            .client
            .delete(format!(
                "{}/v1/apikeys/{}",
                http.base,
                created["id"].as_str().unwrap()
            ))
            .bearer_auth(&admin.secret);
        assert_eq!(http.send(revoke).await.0, 204);
        assert_eq!(http.get("/v1/calls", Some(&fresh)).await.0, 401);
        let bad_body = http
            .client
            .post(format!("{}/v1/apikeys", http.base))
            .bearer_auth(&admin.secret)
            .header("content-type", "application/json")
            .body(r#"{"name":"x","scope":"root","extra":1}"#);
        assert_eq!(http.send(bad_body).await.0, 400);

        // The OpenAPI document is public and names every route.
        let (s, doc) = http.get("/v1/openapi.json", None).await;
        assert_eq!(s, 200);
        for path in [
            "/v1/calls",
            "/v1/calls/{id}",
            "/v1/calls/{id}/transcript",
            "/v1/actions",
            "/v1/analytics/kpis",
            "/v1/apikeys",
        ] {
            assert!(
                doc["paths"][path].is_object(),
                "{path} missing from openapi.json"
            );
        }
        store.close().await;
        db.drop_db().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_past_its_rate_gets_429_with_retry_after() {
    let app = spawn_app(&tone_bot(400), |a| a.api_rate_per_sec = 1).await;
    let http = Http::new(app.addr);
    let key = app
        .state
        .db
        .create_api_key("burst", Scope::Read)
        .await
        .unwrap();
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let resp = http
            .client
            .get(format!("{}/v1/calls", http.base))
            .bearer_auth(&key.secret)
            .send()
            .await
            .unwrap();
        if resp.status() == 429 {
            assert!(resp.headers().contains_key("retry-after"));
        }
        statuses.push(resp.status().as_u16());
    }
    // A burst of two is allowed at one per second.
    assert_eq!(&statuses[..2], &[200, 200], "{statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_and_pages_have_no_duplicates_or_gaps_while_calls_arrive() {
    for db in test_dbs().await {
        let store = open(&db).await;
        let base = now_ms() - 10_000_000;
        let mut seeded = HashSet::new();
        let mut batch = Vec::new();
        for i in 0..120 {
            let sid = format!("CApage{i:03}");
            // Pairs share a start time so the id breaks ties.
            batch.extend(seeded_call(&sid, base + (i / 2) * 1000, 1));
            seeded.insert(call_id_for_sid(&sid));
        }
        store.write_batch(&batch).await.unwrap();
        let url = db.url.clone();
        let app = spawn_app(&tone_bot(400), |a| {
            a.database_url = url;
            a.api_rate_per_sec = 1000;
        })
        .await;
        let http = Http::new(app.addr);
        let key = store.create_api_key("pager", Scope::Read).await.unwrap();
        // New calls keep arriving while a client pages through.
        let writer = store.clone();
        let inserting = tokio::spawn(async move {
            for i in 0..40 {
                let sid = format!("CAnew{i:03}");
                writer
                    .write_batch(&seeded_call(&sid, now_ms(), 1))
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let since = base;
        loop {
            let mut path = format!("/v1/calls?limit=25&until={}", base + 1_000_000);
            path.push_str(&format!("&since={since}"));
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let (s, page) = http.get(&path, Some(&key.secret)).await;
            assert_eq!(s, 200, "{page}");
            for item in page["items"].as_array().unwrap() {
                seen.push(item["id"].as_str().unwrap().to_owned());
            }
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        inserting.await.unwrap();
        let unique: HashSet<_> = seen.iter().cloned().collect();
        assert_eq!(
            unique.len(),
            seen.len(),
            "{}: duplicates across pages",
            db.label
        );
        assert_eq!(unique, seeded, "{}: gaps across pages", db.label);
        // Also unbounded by time: every page is newest first with no repeats.
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/v1/calls?limit=200&cursor={c}"),
                None => "/v1/calls?limit=200".into(),
            };
            let (_, page) = http.get(&path, Some(&key.secret)).await;
            all.extend(page["items"].as_array().unwrap().iter().map(|i| {
                let at = i["started_at"].as_str().unwrap();
                time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
                    .unwrap()
            }));
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        assert_eq!(all.len(), 160);
        assert!(all.windows(2).all(|w| w[0] >= w[1]), "newest first");

        // Filters, with the number spelled another way.
        let (_, page) = http
            .get(
                "/v1/calls?from=09876543210&status=completed&intent=order_status&limit=200",
                Some(&key.secret),
            )
            .await;
        assert_eq!(page["items"].as_array().unwrap().len(), 160, "{}", db.label);
        let (_, page) = http
            .get("/v1/calls?intent=cancel_order", Some(&key.secret))
            .await;
        assert_eq!(page["items"].as_array().unwrap().len(), 0);
        let (_, page) = http
            .get("/v1/calls?from=%2B919000000000", Some(&key.secret))
            .await;
        assert_eq!(page["items"].as_array().unwrap().len(), 0);
        let (_, page) = http
            .get(
                &format!("/v1/calls?since={}&until={}", base, base + 10_000),
                Some(&key.secret),
            )
            .await;
        assert_eq!(page["items"].as_array().unwrap().len(), 20, "10 s of pairs");
        let (_, page) = http
            .get(
                "/v1/actions?action=order_status&status=done&limit=7",
                Some(&key.secret),
            )
            .await;
        assert_eq!(page["items"].as_array().unwrap().len(), 7);
        assert!(page["next_cursor"].is_string());
        let next = page["next_cursor"].as_str().unwrap();
        let (s, page2) = http
            .get(
                &format!("/v1/actions?action=order_status&status=done&limit=7&cursor={next}"),
                Some(&key.secret),
            )
            .await;
        assert_eq!(s, 200);
        assert_ne!(page["items"][0]["id"], page2["items"][0]["id"]);
        store.close().await;
        db.drop_db().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_inputs_get_a_4xx_never_a_500() {
    for db in test_dbs().await {
        let url = db.url.clone();
        let app = spawn_app(&tone_bot(400), |a| {
            a.database_url = url;
            a.api_rate_per_sec = 1000;
            a.webhook_token = Some(TOKEN.into());
        })
        .await;
        let http = Http::new(app.addr);
        let key = app
            .state
            .db
            .create_api_key("fuzz", Scope::Read)
            .await
            .unwrap();
        let hostile = [
            "/v1/calls?status=completed'%20OR%20'1'%3D'1",
            "/v1/calls?status=%3BDROP%20TABLE%20calls",
            "/v1/calls?from=1'%20OR%201%3D1--",
            "/v1/calls?limit=100000000",
            "/v1/calls?limit=0",
            "/v1/calls?limit=-5",
            "/v1/calls?limit=abc",
            "/v1/calls?cursor=not-a-cursor",
            "/v1/calls?cursor=MTIzfHgnIE9SICcxJz0nMQ",
            "/v1/calls?since=yesterday",
            "/v1/calls?since=2026-02-30T00:00:00Z",
            "/v1/calls?status=",
            "/v1/calls?since=",
            "/v1/calls?until=99999999999999999999999",
            "/v1/calls?intent=%27%20UNION%20SELECT%20*%20FROM%20api_keys--",
            "/v1/calls?limit=1&limit=2",
            "/v1/calls/x'%20OR%20'1'='1",
            "/v1/calls/%00",
            "/v1/actions?call_id=abc'--",
            "/v1/actions?cursor=MTIzfGFiYw",
            "/v1/analytics/kpis?since=tomorrow",
            "/v1/analytics/kpis?since=5.5",
        ];
        for path in hostile {
            let (s, b) = http.get(path, Some(&key.secret)).await;
            assert!(
                (400..500).contains(&s),
                "{}: {path} gave {s}: {b}",
                db.label
            );
            assert!(b["error"]["code"].is_string(), "{path}: {b}");
            assert!(
                !b.to_string().to_lowercase().contains("sqlx"),
                "{path} leaks: {b}"
            );
        }
        // A range that ends before it starts is empty, not an error.
        let (s, b) = http
            .get(
                "/v1/calls?since=2026-11-25T00:00:00Z&until=2026-11-24T00:00:00Z",
                Some(&key.secret),
            )
            .await;
        assert_eq!((s, &b["items"]), (200, &serde_json::json!([])), "{b}");
        let (s, b) = http
            .get("/v1/analytics/kpis?since=5&until=4", Some(&key.secret))
            .await;
        assert_eq!((s, &b["calls"]), (200, &serde_json::json!(0)), "{b}");
        // Oversized and malformed webhook bodies.
        let huge = format!("CallSid=CAbig&Junk={}", "x".repeat(70 * 1024));
        let (s, b) = http
            .post(
                &format!("/v1/exotel/status?token={TOKEN}"),
                "application/x-www-form-urlencoded",
                huge,
            )
            .await;
        assert_eq!((s, error_code(&b)), (413, "too_large"), "{b}");
        for (ct, body) in [
            ("application/json", "{not json"),
            ("application/json", "[1,2,3]"),
            ("application/x-www-form-urlencoded", "Status=completed"),
            (
                "application/x-www-form-urlencoded",
                "CallSid=CA%27%3B--&Status=completed",
            ),
        ] {
            let (s, b) = http
                .post(&format!("/v1/exotel/status?token={TOKEN}"), ct, body.into())
                .await;
            assert_eq!(s, 400, "{body}: {b}");
        }
        // Nothing got in, and the server still serves.
        assert_eq!(app.state.db.count_rows("calls").await.unwrap(), 0);
        assert_eq!(http.get("/v1/calls", Some(&key.secret)).await.0, 200);
        db.drop_db().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_detail_takes_the_same_few_queries_for_2_or_2000_segments() {
    for db in test_dbs().await {
        let store = open(&db).await;
        store
            .write_batch(&seeded_call("CAshort", now_ms(), 2))
            .await
            .unwrap();
        store
            .write_batch(&seeded_call("CAlong", now_ms(), 2000))
            .await
            .unwrap();
        let before = store.queries();
        let short = store.call_detail("CAshort").await.unwrap().unwrap();
        let short_q = store.queries() - before;
        let before = store.queries();
        let long = store.call_detail("CAlong").await.unwrap().unwrap();
        let long_q = store.queries() - before;
        assert_eq!(short.transcript.len(), 2);
        assert_eq!(long.transcript.len(), 2000);
        assert_eq!(
            short_q, long_q,
            "{}: query count grew with the transcript",
            db.label
        );
        assert_eq!(
            long_q, 6,
            "call, transcript, intents, actions, turns, timeline events"
        );
        // Lists too: one query however many rows the page holds.
        let before = store.queries();
        let page = store
            .list_calls(&Default::default(), None, 200)
            .await
            .unwrap();
        assert_eq!(page.items.len(), 2);
        assert_eq!(store.queries() - before, 1);
        store.close().await;
        db.drop_db().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kpis_are_computed_from_what_was_recorded() {
    for db in test_dbs().await {
        let store = open(&db).await;
        let t0 = now_ms() - 100_000;
        let mut batch = Vec::new();
        // Three answered calls (60 s each); one asked for a human.
        for sid in ["CAk1", "CAk2", "CAk3"] {
            batch.extend(seeded_call(sid, t0, 2));
        }
        batch.push(Record::Action {
            call_id: call_id_for_sid("CAk3"),
            action: "talk_to_human".into(),
            order: None,
            key: "CAk3:talk_to_human".into(),
            status: "done".into(),
            detail: "Transferring.".into(),
            at_ms: t0,
        });
        batch.push(Record::Action {
            call_id: call_id_for_sid("CAk2"),
            action: "cancel_order".into(),
            order: Some("#1002".into()),
            key: "CAk2:cancel_order:#1002".into(),
            status: "failed".into(),
            detail: "Shopify is unreachable.".into(),
            at_ms: t0,
        });
        for (i, v) in [400.0, 600.0, 900.0].into_iter().enumerate() {
            batch.push(Record::Turn {
                call_id: call_id_for_sid("CAk1"),
                seq: i as i64,
                model_ms: v - 50.0,
                engine_ms: 5.0,
                v2v_sent_ms: v - 40.0,
                v2v_played_ms: Some(v),
                at_ms: t0,
            });
        }
        store.write_batch(&batch).await.unwrap();
        // And one that never connected, from Exotel only.
        let hook = caly::store::Webhook {
            kind: Some(caly::store::WebhookKind::Status),
            call_sid: "CAk4".into(),
            dedupe_key: "status:CAk4:terminal".into(),
            payload: "{}".into(),
            status: Some("no-answer".into()),
            terminal: true,
            started_at_ms: Some(t0),
            received_ms: t0,
            ..Default::default()
        };
        store.apply_webhook(&hook).await.unwrap();
        let k = store.kpis(t0 - 1, t0 + 1).await.unwrap();
        assert_eq!((k.calls, k.answered), (4, 3), "{}: {k:?}", db.label);
        assert_eq!(k.avg_duration_ms, Some(60_000.0));
        assert_eq!(k.p95_duration_ms, Some(60_000));
        assert_eq!(k.containment_rate, Some(2.0 / 3.0));
        assert_eq!(k.intents.get("order_status"), Some(&3));
        // Four done (3 order_status + 1 talk_to_human), one failed.
        assert_eq!((k.actions_done, k.actions_finished), (4, 5));
        assert_eq!(k.turns, 3);
        assert_eq!(k.v2v_p50_ms, Some(600.0));
        assert_eq!(k.v2v_p95_ms, Some(900.0));
        let empty = store.kpis(0, 1).await.unwrap();
        assert_eq!(
            (empty.calls, empty.containment_rate, empty.v2v_p50_ms),
            (0, None, None)
        );
        store.close().await;
        db.drop_db().await;
    }
}

/// Waits until `store` has `n` rows in `table`.
async fn rows(store: &Store, table: &str, n: i64) {
    within(Duration::from_secs(20), "rows to land", async {
        loop {
            if store.count_rows(table).await.unwrap_or(-1) == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_holds_while_sqlite_is_locked_and_lands_when_it_is_free() {
    let db = sqlite_db();
    let store = open(&db).await;
    let config = RecorderConfig {
        max_delay: Duration::from_millis(50),
        retry_initial: Duration::from_millis(50),
        retry_max: Duration::from_millis(200),
        ..Default::default()
    };
    // Another process holds the database's write lock longer than the busy timeout.
    let mut conn = sqlx::AnyConnection::connect(&format!("{}?mode=rwc", db.url))
        .await
        .unwrap();
    conn.execute("BEGIN EXCLUSIVE").await.unwrap();
    let (recorder, writer) = RecorderTask::start(store.clone(), config);
    for r in seeded_call("CAlocked", now_ms(), 50) {
        assert!(recorder.record(r));
    }
    within(Duration::from_secs(30), "a failed write", async {
        while recorder
            .stats()
            .failures
            .load(std::sync::atomic::Ordering::Relaxed)
            == 0
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    conn.execute("COMMIT").await.unwrap();
    rows(&store, "transcript_segments", 50).await;
    assert_eq!(store.count_rows("calls").await.unwrap(), 1);
    assert_eq!(writer.shutdown(Duration::from_secs(5)).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_writes_everything_still_queued() {
    for db in test_dbs().await {
        let store = open(&db).await;
        // A long batching delay: only shutdown can have written these.
        let config = RecorderConfig {
            max_delay: Duration::from_secs(3600),
            batch: 100_000,
            ..Default::default()
        };
        let (recorder, writer) = RecorderTask::start(store.clone(), config);
        let mut records = seeded_call("CAshutdown", now_ms(), 300);
        records.pop(); // no CallEnded: that would flush at once
        let n = records.len();
        for r in records {
            assert!(recorder.record(r));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(store.count_rows("transcript_segments").await.unwrap(), 0);
        assert_eq!(writer.shutdown(Duration::from_secs(10)).await, 0);
        assert_eq!(store.count_rows("transcript_segments").await.unwrap(), 300);
        assert_eq!(
            recorder
                .stats()
                .written
                .load(std::sync::atomic::Ordering::Relaxed),
            n as u64,
            "{}",
            db.label
        );
        store.close().await;
        db.drop_db().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_realtime_call_is_recorded_with_transcript_turns_and_its_end() {
    for db in test_dbs().await {
        let pipeline = std::fs::read_to_string(repo("pipelines/default.toml")).unwrap();
        let url = db.url.clone();
        let mut app = spawn_app(&pipeline, |a| a.database_url = url).await;
        if app.state.realtime != "simulator" {
            eprintln!("skipped: OPENAI_API_KEY is set, so the server would call OpenAI");
            return;
        }
        let mut c = ExotelClient::connect(&app.url("sample-rate=8000"), None)
            .await
            .unwrap();
        c.start("MZrec", "CArec", 8000).await.unwrap();
        take_a_turn(&mut c, &utterance()).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        c.stop().await.unwrap();
        app.report().await;
        // Shutting down flushes whatever the recorder still holds.
        app.begin_shutdown();
        app.stopped().await.unwrap();
        let store = open(&db).await;
        let detail = store.call_detail("CArec").await.unwrap().unwrap();
        assert_eq!(detail.call.status, "completed", "{}", db.label);
        assert_eq!(detail.call.end_reason.as_deref(), Some("hangup"));
        assert_eq!(detail.call.from.as_deref(), Some("+919800000000"));
        assert_eq!(detail.call.turns, 1);
        assert!(detail.call.v2v_p50_ms.is_some());
        let speakers: HashSet<_> = detail
            .transcript
            .iter()
            .map(|s| s.speaker.as_str())
            .collect();
        assert!(
            speakers.contains("caller") && speakers.contains("bot"),
            "{:?}",
            detail.transcript
        );
        assert_eq!(store.count_rows("turns").await.unwrap(), 1);
        store.close().await;
        db.drop_db().await;
    }
}

/// A TCP proxy in front of PostgreSQL that can cut every connection and refuse new ones.
struct Proxy {
    addr: std::net::SocketAddr,
    up: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(target: String) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (up, up_rx) = tokio::sync::watch::channel(true);
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !*up_rx.borrow() {
                    continue; // dropped: the client sees the connection closed
                }
                let target = target.clone();
                let mut up = up_rx.clone();
                conns.spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = up.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Proxy { addr, up, task }
    }

    fn set_up(&self, up: bool) {
        self.up.send_replace(up);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_dropping_mid_call_loses_nothing_once_it_is_back() {
    let Some(db) = postgres_db().await else {
        eprintln!("SKIPPED: TEST_DATABASE_URL is not set (this test needs PostgreSQL).");
        return;
    };
    // postgres://user@host:port/db → the proxy in place of host:port.
    let (head, tail) = db.url.split_once('@').unwrap();
    let (target, rest) = tail.split_once('/').unwrap();
    let proxy = Proxy::start(target.to_owned()).await;
    let proxied = format!("{head}@{}/{rest}", proxy.addr);
    let pipeline = std::fs::read_to_string(repo("pipelines/default.toml")).unwrap();
    let mut app = spawn_app(&pipeline, |a| a.database_url = proxied).await;
    if app.state.realtime != "simulator" {
        eprintln!("skipped: OPENAI_API_KEY is set, so the server would call OpenAI");
        return;
    }
    let pcm = utterance();
    let mut c = ExotelClient::connect(&app.url("sample-rate=8000"), None)
        .await
        .unwrap();
    c.start("MZdown", "CAdown", 8000).await.unwrap();
    take_a_turn(&mut c, &pcm).await;
    // The database goes away mid-call; the call goes on.
    proxy.set_up(false);
    take_a_turn(&mut c, &pcm).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.stop().await.unwrap();
    let report = app.report().await;
    assert_eq!(report.turns.len(), 2);
    let stats = std::sync::Arc::clone(app.state.recorder.stats());
    within(Duration::from_secs(20), "a failed write", async {
        while stats.failures.load(std::sync::atomic::Ordering::Relaxed) == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let http = Http::new(app.addr);
    let (_, ready) = http.get("/readyz", None).await;
    assert_eq!(ready["database"]["reachable"], false, "{ready}");
    // Straight to PostgreSQL (not through the proxy): the call's end is not there yet.
    let direct = open(&db).await;
    let before = direct.find_call("CAdown").await.unwrap();
    assert!(
        before.as_ref().is_none_or(|c| c.end_reason.is_none()),
        "{before:?}"
    );
    proxy.set_up(true);
    let detail = within(Duration::from_secs(30), "the queue to land", async {
        loop {
            if let Ok(Some(d)) = direct.call_detail("CAdown").await
                && d.call.end_reason.is_some()
            {
                return d;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(detail.call.turns, 2);
    assert_eq!(direct.count_rows("turns").await.unwrap(), 2);
    let bot_lines = detail
        .transcript
        .iter()
        .filter(|s| s.speaker == "bot")
        .count();
    assert!(
        bot_lines >= 2,
        "both turns' bot lines: {:?}",
        detail.transcript
    );
    assert_eq!(stats.dropped.load(std::sync::atomic::Ordering::Relaxed), 0);
    app.begin_shutdown();
    app.stopped().await.unwrap();
    direct.close().await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_all_succeed_without_database_is_locked() {
    for db in test_dbs().await {
        let store = open(&db).await;
        let mut tasks = tokio::task::JoinSet::new();
        for t in 0..6 {
            let store = store.clone();
            tasks.spawn(async move {
                for i in 0..15 {
                    let sid = format!("CAw{t}x{i}");
                    store.write_batch(&seeded_call(&sid, now_ms(), 300)).await?;
                    let hook = caly::store::Webhook {
                        kind: Some(caly::store::WebhookKind::Status),
                        call_sid: sid.clone(),
                        dedupe_key: format!("status:{sid}:terminal"),
                        payload: "{}".into(),
                        status: Some("completed".into()),
                        terminal: true,
                        received_ms: now_ms(),
                        ..Default::default()
                    };
                    store.apply_webhook(&hook).await?;
                }
                Ok::<_, caly::store::StoreError>(())
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap().unwrap_or_else(|e| panic!("{}: {e}", db.label));
        }
        assert_eq!(store.count_rows("calls").await.unwrap(), 90);
        assert_eq!(
            store.count_rows("transcript_segments").await.unwrap(),
            90 * 300
        );
        assert_eq!(store.count_rows("webhook_events").await.unwrap(), 90);
        store.close().await;
        db.drop_db().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caly_apikey_create_prints_a_key_that_the_server_accepts() {
    let db = sqlite_db();
    let caly = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_caly"))
            .args(args)
            .arg("--database-url")
            .arg(&db.url)
            .output()
            .unwrap()
    };
    for _ in 0..2 {
        let out = caly(&["migrate"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = caly(&["apikey", "create", "--name", "grafana", "--scope", "read"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let key = stdout.lines().last().unwrap().trim().to_owned();
    assert!(key.starts_with("caly_"), "{stdout}");
    let url = db.url.clone();
    let app = spawn_app(&tone_bot(400), |a| a.database_url = url).await;
    let http = Http::new(app.addr);
    assert_eq!(http.get("/v1/calls", Some(&key)).await.0, 200);
    let out = caly(&["apikey", "create", "--name", "x", "--scope", "root"]);
    assert!(!out.status.success());
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_caly"))
        .args(["migrate", "--database-url", "mysql://root:hunter2@db/x"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success());
    assert!(
        stderr.contains("sqlite://") && !stderr.contains("hunter2"),
        "{stderr}"
    );
}
