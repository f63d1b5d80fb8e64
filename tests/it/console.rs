//! The console's server side, over real HTTP on both backends: sign-in and its cookie, a
//! session that only reads and ends with sign-out or its key, the live stream (server-sent
//! events) of a real call from start to end, two instances on one PostgreSQL database seeing
//! each other's calls, the KPI series, and the pages' security headers. (The pages themselves
//! are driven in a real browser by `tests/browser/console.test.mjs`.)

use std::time::Duration;

use caly::devtools::simulate::ExotelClient;
use caly::store::keys::Scope;
use caly::store::{Record, now_ms};
use caly::testing::within;
use serde_json::{Value, json};

use crate::helpers::{TestApp, postgres_db, spawn_app, test_dbs, tone_bot};
use crate::records::{Http, error_code, open, seeded_call};

fn cookie_of(resp: &reqwest::Response) -> Option<String> {
    resp.headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

async fn sign_in(http: &Http, key: &str, https: bool) -> (u16, Option<String>, Value) {
    let mut req = http
        .client
        .post(format!("{}/v1/console/session", http.base))
        .json(&json!({ "key": key }));
    if https {
        req = req.header("x-forwarded-proto", "https");
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let cookie = cookie_of(&resp);
    (status, cookie, resp.json().await.unwrap_or_default())
}

/// `caly_session=…` from a `Set-Cookie` value.
fn pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap_or_default().to_owned()
}

async fn with_cookie(http: &Http, method: reqwest::Method, path: &str, cookie: &str) -> u16 {
    http.client
        .request(method, format!("{}{path}", http.base))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_session_reads_only_and_ends_with_sign_out_or_its_key() {
    for db in test_dbs().await {
        let url = db.url.clone();
        let app = spawn_app(&tone_bot(1000), |a| a.database_url = url).await;
        let http = Http::new(app.addr);
        let admin = app
            .state
            .db
            .create_api_key("lead", Scope::Admin)
            .await
            .unwrap();
        let reader = app
            .state
            .db
            .create_api_key("support", Scope::Read)
            .await
            .unwrap();

        // A wrong key, a malformed body: refused, no cookie.
        let (status, cookie, body) = sign_in(&http, &format!("{}x", reader.secret), false).await;
        assert_eq!((status, cookie), (401, None), "{}: {body}", db.label);
        let resp = http
            .client
            .post(format!("{}/v1/console/session", http.base))
            .header("content-type", "application/json")
            .body(r#"{"key": 5, "extra": true}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 400);

        // An admin key signs in; the cookie is HttpOnly, SameSite=Strict, site-wide; Secure
        // behind HTTPS.
        let (status, cookie, body) = sign_in(&http, &admin.secret, false).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["scope"], "read", "a session reads only: {body}");
        let set = cookie.unwrap();
        for part in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] {
            assert!(set.contains(part), "{set}");
        }
        assert!(!set.contains("Secure"), "plain HTTP: {set}");
        assert!(!set.contains(&admin.secret), "the cookie is not the key");
        let (_, secure, _) = sign_in(&http, &admin.secret, true).await;
        assert!(secure.unwrap().contains("; Secure"));
        let session = pair(&set);

        // It reads, like a read key; it changes nothing, whatever its key's scope.
        use reqwest::Method;
        assert_eq!(
            with_cookie(&http, Method::GET, "/v1/calls", &session).await,
            200
        );
        assert_eq!(
            with_cookie(&http, Method::GET, "/v1/analytics/kpis", &session).await,
            200
        );
        assert_eq!(
            with_cookie(&http, Method::GET, "/v1/apikeys", &session).await,
            403
        );
        assert_eq!(
            with_cookie(&http, Method::DELETE, "/v1/calls/CAnone", &session).await,
            403
        );
        let forged = "caly_session=cs_0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(
            with_cookie(&http, Method::GET, "/v1/calls", forged).await,
            401
        );
        assert_eq!(
            with_cookie(&http, Method::GET, "/v1/calls", "caly_session=junk").await,
            401
        );

        // Signing out ends it; signing out twice is fine.
        assert_eq!(
            with_cookie(&http, Method::DELETE, "/v1/console/session", &session).await,
            204
        );
        assert_eq!(
            with_cookie(&http, Method::GET, "/v1/calls", &session).await,
            401
        );
        assert_eq!(
            with_cookie(&http, Method::DELETE, "/v1/console/session", &session).await,
            204
        );

        // Revoking its key ends a session too.
        let (_, cookie, _) = sign_in(&http, &reader.secret, false).await;
        let session = pair(&cookie.unwrap());
        let (status, me) = http
            .send(
                http.client
                    .get(format!("{}/v1/console/session", http.base))
                    .header("cookie", &session),
            )
            .await;
        assert_eq!((status, me["scope"].clone()), (200, json!("read")), "{me}");
        let (_, me) = http.get("/v1/console/session", Some(&admin.secret)).await;
        assert_eq!(me["scope"], "admin", "a bearer key is itself: {me}");
        let (status, _) = http
            .send(
                http.client
                    .delete(format!("{}/v1/apikeys/{}", http.base, reader.id))
                    .bearer_auth(&admin.secret),
            )
            .await;
        assert_eq!(status, 204);
        assert_eq!(
            with_cookie(&http, Method::GET, "/v1/calls", &session).await,
            401
        );
        let (_, body) = http.get("/v1/console/session", None).await;
        assert_eq!(error_code(&body), "unauthorized");
        drop(app);
        db.drop_db().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_in_again_and_again_keeps_a_bounded_number_of_sessions_per_key() {
    let app = spawn_app(&tone_bot(1000), |_| {}).await;
    let http = Http::new(app.addr);
    let key = app
        .state
        .db
        .create_api_key("loop", Scope::Read)
        .await
        .unwrap();
    let mut first = None;
    for _ in 0..(caly::store::keys::MAX_SESSIONS_PER_KEY + 5) {
        let (status, cookie, _) = sign_in(&http, &key.secret, false).await;
        assert_eq!(status, 201);
        first.get_or_insert(pair(&cookie.unwrap()));
    }
    assert_eq!(
        app.state.db.count_rows("console_sessions").await.unwrap(),
        caly::store::keys::MAX_SESSIONS_PER_KEY
    );
    // The oldest gave way.
    assert_eq!(
        with_cookie(
            &http,
            reqwest::Method::GET,
            "/v1/calls",
            first.as_deref().unwrap()
        )
        .await,
        401
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_requests_count_against_its_keys_rate() {
    let app = spawn_app(&tone_bot(1000), |a| a.api_rate_per_sec = 1).await;
    let http = Http::new(app.addr);
    let key = app
        .state
        .db
        .create_api_key("busy", Scope::Read)
        .await
        .unwrap();
    let (status, cookie, _) = sign_in(&http, &key.secret, false).await;
    assert_eq!(status, 201);
    let session = pair(&cookie.unwrap());
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(with_cookie(&http, reqwest::Method::GET, "/v1/calls", &session).await);
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    // The same bucket as the key's own bearer requests.
    let (status, body) = http.get("/v1/calls", Some(&key.secret)).await;
    assert_eq!((status, error_code(&body)), (429, "rate_limited"));
}

/// Server-sent events as `(event, data)`, from a response body.
struct Sse {
    body: reqwest::Response,
    buf: String,
}

impl Sse {
    async fn open(app: &TestApp, key: &str) -> Sse {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let resp = reqwest::Client::new()
            .get(format!("http://{}/v1/console/live", app.addr))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let kind = resp.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(kind.starts_with("text/event-stream"), "{kind}");
        Sse {
            body: resp,
            buf: String::new(),
        }
    }

    /// The next event (comments and keep-alives skipped).
    async fn next(&mut self) -> (String, Value) {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut event = String::from("message");
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(e) = line.strip_prefix("event:") {
                        event = e.trim().to_owned();
                    } else if let Some(d) = line.strip_prefix("data:") {
                        data.push_str(d.trim_start());
                    }
                }
                if data.is_empty() {
                    continue;
                }
                return (event, serde_json::from_str(&data).unwrap());
            }
            let chunk = self.body.chunk().await.unwrap().expect("the stream ended");
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Events until one satisfies `want`.
    async fn until(&mut self, what: &str, want: impl Fn(&str, &Value) -> bool) -> Value {
        within(Duration::from_secs(20), what, async {
            loop {
                let (event, data) = self.next().await;
                if want(&event, &data) {
                    return data;
                }
            }
        })
        .await
    }
}

async fn start_call(app: &TestApp, sid: &str) -> ExotelClient {
    let mut c = ExotelClient::connect(&app.url("sample-rate=8000"), None)
        .await
        .unwrap();
    c.start(&format!("MZ{sid}"), sid, 8000).await.unwrap();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_stream_shows_a_call_from_its_start_to_its_end() {
    let app = spawn_app(&tone_bot(1500), |_| {}).await;
    let key = app
        .state
        .db
        .create_api_key("wall", Scope::Read)
        .await
        .unwrap();
    let mut live = Sse::open(&app, &key.secret).await;
    let (event, snapshot) = live.next().await;
    assert_eq!((event.as_str(), snapshot), ("snapshot", json!([])));

    let mut c = start_call(&app, "CAlive1").await;
    let started = live
        .until("the call on the live stream", |e, d| {
            e == "call" && d["call_sid"] == "CAlive1"
        })
        .await;
    // `caly simulate`'s caller is +919800000000.
    assert_eq!(started["caller"], "…0000", "masked: {started}");
    assert_eq!(started["activity"], "listening");
    let id = started["id"].as_str().unwrap().to_owned();
    // A second viewer joining now gets it in its snapshot.
    let mut late = Sse::open(&app, &key.secret).await;
    let (event, snap) = late.next().await;
    assert_eq!(event, "snapshot");
    assert_eq!(snap[0]["id"], id.as_str(), "{snap}");
    // The caller speaks: the stream follows who is talking, then the bot's turn is counted.
    let mut turn = crate::helpers::utterance();
    turn.extend(std::iter::repeat_n(0i16, 8000)); // a second of silence ends the turn
    crate::helpers::take_a_turn(&mut c, &turn).await;
    live.until("the caller speaking", |e, d| {
        e == "call" && d["activity"] == "caller_speaking"
    })
    .await;
    live.until("the bot's reply", |e, d| {
        e == "call" && d["activity"] == "bot_speaking"
    })
    .await;
    c.stop().await.unwrap();
    let ended = live
        .until("the call's end", |e, d| {
            e == "ended" && d["id"] == id.as_str()
        })
        .await;
    assert_eq!(ended["end_reason"], "hangup", "{ended}");
    assert!(
        app.state
            .calls_config
            .live
            .as_ref()
            .unwrap()
            .snapshot()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_stream_wants_a_key_and_the_pages_carry_their_security_headers() {
    let app = spawn_app(&tone_bot(1000), |_| {}).await;
    let http = Http::new(app.addr);
    let (status, body) = http.get("/v1/console/live", None).await;
    assert_eq!((status, error_code(&body)), (401, "unauthorized"));
    for path in [
        "/console",
        "/console/assets/app.js",
        "/console/assets/uPlot.iife.min.js",
    ] {
        let resp = http
            .client
            .get(format!("{}{path}", http.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{path}");
        let h = resp.headers();
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
        assert_eq!(h["x-content-type-options"], "nosniff");
    }
    let (status, _) = http.get("/console/assets/..%2Fsecret", None).await;
    assert_eq!(status, 404);
    let (status, _) = http.get("/console/assets/nothing.js", None).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_postgres_database_show_each_others_live_calls() {
    let Some(db) = postgres_db().await else {
        eprintln!("skipped: TEST_DATABASE_URL is not set");
        return;
    };
    let url = db.url.clone();
    let a = spawn_app(&tone_bot(1000), |s| s.database_url = url.clone()).await;
    let b = spawn_app(&tone_bot(1000), |s| s.database_url = url.clone()).await;
    let key = a
        .state
        .db
        .create_api_key("wall", Scope::Read)
        .await
        .unwrap();
    // The viewer is on B; the call is on A.
    let mut live = Sse::open(&b, &key.secret).await;
    let _ = live.next().await;
    let board_a = a.state.calls_config.live.clone().unwrap();
    // B's listener may still be connecting: A's calls are re-announced every beat, so the
    // call reaches B within one.
    let c = start_call(&a, "CAremote").await;
    let seen = live
        .until("A's call on B's live stream", |e, d| {
            e == "call" && d["call_sid"] == "CAremote"
        })
        .await;
    assert_eq!(seen["instance"], board_a.instance(), "{seen}");
    assert_ne!(
        board_a.instance(),
        b.state.calls_config.live.as_ref().unwrap().instance()
    );
    let id = seen["id"].as_str().unwrap().to_owned();
    drop(c);
    let ended = live
        .until("A's call ending on B", |e, d| {
            e == "ended" && d["id"] == id.as_str()
        })
        .await;
    assert_eq!(ended["instance"], board_a.instance());
    drop(a);
    drop(b);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kpi_series_buckets_calls_cost_and_latency_by_hour_and_day() {
    for db in test_dbs().await {
        let store = open(&db).await;
        let hour = 3_600_000;
        let since = (now_ms() / hour - 5) * hour;
        let mut records = Vec::new();
        // Two calls in the first hour, one in the fourth; a turn each.
        for (sid, at) in [
            ("CAs1", since + 60_000),
            ("CAs2", since + 120_000),
            ("CAs3", since + 3 * hour + 5),
        ] {
            records.extend(seeded_call(sid, at, 2));
            records.push(Record::Turn {
                call_id: caly::store::call_id_for_sid(sid),
                seq: 0,
                model_ms: 200.0,
                engine_ms: 2.0,
                v2v_sent_ms: 250.0,
                v2v_played_ms: Some(if sid == "CAs2" { 500.0 } else { 300.0 }),
                at_ms: at,
            });
        }
        store.write_batch(&records).await.unwrap();
        let (buckets, complete) = store.series(since, since + 5 * hour, hour).await.unwrap();
        assert!(complete);
        let calls: Vec<i64> = buckets.iter().map(|b| b.calls).collect();
        assert_eq!(calls, [2, 0, 0, 1, 0], "{}", db.label);
        assert_eq!(buckets[0].turns, 2);
        assert_eq!(buckets[0].v2v_p50_ms, Some(300.0));
        assert_eq!(buckets[0].v2v_p95_ms, Some(500.0));
        assert_eq!(buckets[1].v2v_p50_ms, None);
        assert_eq!(buckets[3].v2v_p50_ms, Some(300.0));
        let (days, _) = store
            .series(since, since + 5 * hour, 24 * hour)
            .await
            .unwrap();
        assert_eq!(days.len(), 1);
        assert_eq!(days[0].calls, 3);
        db.drop_db().await;
    }
    // Over HTTP: the parameters are checked.
    let app = spawn_app(&tone_bot(1000), |_| {}).await;
    let http = Http::new(app.addr);
    let key = app
        .state
        .db
        .create_api_key("kpi", Scope::Read)
        .await
        .unwrap();
    let k = Some(key.secret.as_str());
    let (status, body) = http.get("/v1/analytics/series?bucket=day", k).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["buckets"].as_array().unwrap().len(), 30, "{body}");
    let (status, body) = http.get("/v1/analytics/series", k).await;
    assert_eq!((status, body["bucket"].clone()), (200, json!("hour")));
    assert_eq!(body["buckets"].as_array().unwrap().len(), 24);
    for bad in ["bucket=week", "since=yesterday", "until=-"] {
        let (status, body) = http.get(&format!("/v1/analytics/series?{bad}"), k).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    // A range over the bucket limit keeps its last 2000 buckets; a reversed one has none.
    let (status, body) = http
        .get(
            "/v1/analytics/series?since=2000-01-01T00:00:00Z&until=2026-12-01T00:00:00Z",
            k,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["buckets"].as_array().unwrap().len(),
        caly::store::read::MAX_BUCKETS as usize
    );
    assert_eq!(body["since"], "2026-09-08T16:00:00Z", "{}", body["since"]);
    let (status, body) = http
        .get(
            "/v1/analytics/series?since=2026-12-04T00:00:00Z&until=2026-12-03T00:00:00Z",
            k,
        )
        .await;
    assert_eq!((status, body["buckets"].clone()), (200, json!([])));
}
