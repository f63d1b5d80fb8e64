//! Data protection and key lifecycle on both backends: erasing a call over REST, erasing every
//! call from a number with `caly erase`, retention by age, expiring keys, the key listing and
//! when a key was last used.

use std::time::Duration;

use caly::store::keys::Scope;
use caly::store::{Record, Store, Webhook, WebhookKind, call_id_for_sid, now_ms};
use caly::testing::within;
use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, Connection as _, Row as _};

use crate::helpers::{TestDb, spawn_app, test_dbs, tone_bot};
use crate::records::{Http, error_code, open, seeded_call};

/// The caller `seeded_call` writes, as digits: it must not survive an erasure anywhere.
const CALLER: &str = "9876543210";
/// A word of every seeded caller segment.
const SAID: &str = "kahan";
const DAY_MS: i64 = 86_400_000;

/// `seeded_call`, from `from` instead.
fn call_from(sid: &str, started_ms: i64, from: &str) -> Vec<Record> {
    let mut records = seeded_call(sid, started_ms, 3);
    if let Some(Record::CallStarted { from: f, .. }) = records.first_mut() {
        *f = Some(from.to_owned());
    }
    records
}

/// Every text column of every row of the tables that hold call data, one line per row,
/// prefixed by its table.
async fn every_row(db: &TestDb) -> Vec<String> {
    let mut conn = sqlx::AnyConnection::connect(&db.url).await.unwrap();
    let mut lines = Vec::new();
    for table in [
        "calls",
        "transcript_segments",
        "turns",
        "intents",
        "actions",
        "webhook_events",
        "erasures",
        "call_events",
    ] {
        let rows = sqlx::query(AssertSqlSafe(format!("SELECT * FROM {table}")))
            .fetch_all(&mut conn)
            .await
            .unwrap();
        for row in rows {
            let mut line = format!("{table}:");
            for i in 0..row.len() {
                if let Ok(Some(text)) = row.try_get::<Option<String>, _>(i) {
                    line.push_str(&text);
                }
                line.push('|');
            }
            lines.push(line);
        }
    }
    conn.close().await.unwrap();
    lines
}

/// The rows of `every_row` that belong to the call `sid`.
fn rows_of<'a>(rows: &'a [String], sid: &str) -> Vec<&'a String> {
    let id = call_id_for_sid(sid);
    rows.iter()
        .filter(|r| r.contains(&id) || r.contains(sid))
        .collect()
}

/// A status callback for `sid` that quotes the caller, with a recording.
fn callback(sid: &str, dedupe: &str, at: i64) -> Webhook {
    Webhook {
        kind: Some(WebhookKind::Status),
        call_sid: sid.into(),
        dedupe_key: dedupe.into(),
        payload:
            json!({"CallSid": sid, "From": "09876543210", "RecordingUrl": "https://rec/x.mp3"})
                .to_string(),
        status: Some("completed".into()),
        terminal: true,
        from: Some("+919876543210".into()),
        recording_url: Some(format!("https://recordings.exotel.com/{sid}.mp3")),
        custom_field: Some(format!("order 1001 for {CALLER}")),
        received_ms: at,
        ..Webhook::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasing_a_call_removes_its_words_and_number_from_every_table_and_keeps_its_counts() {
    for db in test_dbs().await {
        let store = open(&db).await;
        let t0 = now_ms() - 600_000;
        let mut batch = call_from("CAgone", t0, "+919876543210");
        batch.extend(call_from("CAkeep", t0, "+919812345678"));
        batch.push(Record::Turn {
            call_id: call_id_for_sid("CAgone"),
            seq: 0,
            model_ms: 500.0,
            engine_ms: 5.0,
            v2v_sent_ms: 510.0,
            v2v_played_ms: Some(520.0),
            at_ms: t0,
        });
        // The caller typed their number on the keypad; the timeline keeps what was typed.
        batch.push(Record::CallEvent {
            call_id: call_id_for_sid("CAgone"),
            seq: 0,
            kind: "keypad",
            pts_ms: 4_000,
            detail: CALLER.into(),
            at_ms: t0,
        });
        // Still going on: not erasable yet.
        batch.push(Record::CallStarted {
            id: call_id_for_sid("CAlive"),
            call_sid: Some("CAlive".into()),
            stream_sid: None,
            from: Some("+919700000000".into()),
            to: None,
            direction: None,
            pipeline: "default".into(),
            at_ms: now_ms(),
        });
        store.write_batch(&batch).await.unwrap();
        store
            .apply_webhook(&callback("CAgone", "status:CAgone:terminal", t0))
            .await
            .unwrap();
        // What a confirmed change to an order records: the caller's words and the address.
        store
            .execute_admin(&format!(
                "UPDATE actions SET confirmed_by = 'haan ji {CALLER} pe bhej do', \
                 change_before = '{{\"shipping_address\":\"2 old lane\"}}', \
                 change_after = '{{\"shipping_address\":\"4 park street\"}}' \
                 WHERE call_id = '{}'",
                call_id_for_sid("CAgone")
            ))
            .await
            .unwrap();
        let until = now_ms() + DAY_MS;
        let before = store.kpis(t0 - 1, until).await.unwrap();
        let seen = every_row(&db).await;
        for table in ["calls:", "call_events:"] {
            assert!(
                rows_of(&seen, "CAgone")
                    .iter()
                    .any(|r| r.contains(CALLER) && r.starts_with(table)),
                "{}: the check sees the number in {table} before the erasure",
                db.label
            );
        }

        let app = spawn_app(&tone_bot(400), |a| {
            a.database_url = db.url.clone();
            a.api_rate_per_sec = 1000;
        })
        .await;
        let http = Http::new(app.addr);
        let read = store.create_api_key("dash", Scope::Read).await.unwrap();
        let write = store.create_api_key("privacy", Scope::Write).await.unwrap();
        let erase = |sid: &str, key: &str| {
            http.client
                .delete(format!("{}/v1/calls/{sid}", http.base))
                .bearer_auth(key)
        };
        let (s, b) = http.send(erase("CAgone", &read.secret)).await;
        assert_eq!((s, error_code(&b)), (403, "forbidden"), "{b}");
        let (s, b) = http
            .send(http.client.delete(format!("{}/v1/calls/CAgone", http.base)))
            .await;
        assert_eq!((s, error_code(&b)), (401, "unauthorized"), "{b}");
        let (s, erased) = http.send(erase("CAgone", &write.secret)).await;
        assert_eq!(s, 200, "{}: {erased}", db.label);
        assert_eq!(erased["call_id"], call_id_for_sid("CAgone").as_str());
        assert_eq!(erased["already"], false);
        let (s, again) = http.send(erase("CAgone", &write.secret)).await;
        assert_eq!((s, &again["already"]), (200, &Value::Bool(true)), "{again}");
        assert_eq!(again["erased_at"], erased["erased_at"]);
        let (s, b) = http.send(erase("CAlive", &write.secret)).await;
        assert_eq!((s, error_code(&b)), (409, "conflict"), "{b}");
        let (s, b) = http.send(erase("CAnothere", &write.secret)).await;
        assert_eq!((s, error_code(&b)), (404, "not_found"), "{b}");

        // Anything arriving for it later keeps nothing personal either.
        store
            .apply_webhook(&callback("CAgone", "status:CAgone:late", t0 + 1))
            .await
            .unwrap();
        store
            .write_batch(&[Record::Segment {
                call_id: call_id_for_sid("CAgone"),
                seq: 99,
                speaker: "caller",
                text: format!("late words {SAID} {CALLER}"),
                pts_ms: 0,
                at_ms: now_ms(),
            }])
            .await
            .unwrap();

        let seen = every_row(&db).await;
        let gone = rows_of(&seen, "CAgone");
        for row in &gone {
            for secret in [CALLER, SAID, "park street", "old lane", "haan ji"] {
                assert!(
                    !row.contains(secret),
                    "{}: {secret:?} survived in {row}",
                    db.label
                );
            }
        }
        assert!(
            gone.iter().any(|r| r.starts_with("erasures:")),
            "{}: the erasure itself is recorded",
            db.label
        );
        assert!(
            seen.iter()
                .any(|r| r.starts_with("erasures:") && r.contains(&format!("apikey:{}", write.id))),
            "{}: with who asked",
            db.label
        );
        assert_eq!(store.count_rows("erasures").await.unwrap(), 1);
        let kept = rows_of(&seen, "CAkeep");
        assert!(
            kept.iter().any(|r| r.contains(SAID)) && kept.iter().any(|r| r.contains("9812345678")),
            "{}: another call keeps its data",
            db.label
        );

        let (_, detail) = http.get("/v1/calls/CAgone", Some(&read.secret)).await;
        assert_eq!(detail["from"], "…3210", "{detail}");
        assert_eq!(detail["transcript"], json!([]));
        assert_eq!(detail["recording_url"], Value::Null);
        assert_eq!(detail["custom_field"], Value::Null);
        assert_eq!(detail["intents"][0]["intent"], "order_status");
        assert_eq!(detail["intents"][0]["entities"], json!({}));
        assert_eq!(detail["actions"][0]["detail"], "Erased.");
        assert_eq!(detail["erased_at"], erased["erased_at"]);
        assert_eq!(detail["turns"], 1, "counts stay");
        let (_, t) = http
            .get("/v1/calls/CAgone/transcript", Some(&read.secret))
            .await;
        assert_eq!(t["segments"], json!([]));
        for route in ["/v1/calls", "/v1/actions", "/v1/calls/CAgone"] {
            let (s, body) = http.get(route, Some(&read.secret)).await;
            assert_eq!(s, 200);
            let text = body.to_string();
            assert!(!text.contains(CALLER), "{route}: {text}");
        }
        let (_, kept) = http.get("/v1/calls/CAkeep", Some(&read.secret)).await;
        assert_eq!(kept["transcript"].as_array().map(Vec::len), Some(3));
        assert_eq!(kept["erased_at"], Value::Null);

        let after = store.kpis(t0 - 1, until).await.unwrap();
        assert_eq!(after, before, "{}: KPIs still count the call", db.label);
        drop(app);
        store.close().await;
        db.drop_db().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_erases_only_calls_older_than_the_limit_a_batch_at_a_time() {
    for db in test_dbs().await {
        let store = open(&db).await;
        let now = now_ms();
        let mut batch = Vec::new();
        for (i, sid) in ["CAold1", "CAold2", "CAold3"].into_iter().enumerate() {
            batch.extend(call_from(
                sid,
                now - 10 * DAY_MS - i as i64,
                "+919876543210",
            ));
        }
        batch.extend(call_from("CAyoung", now - 2 * DAY_MS, "+919876543210"));
        store.write_batch(&batch).await.unwrap();
        store
            .apply_webhook(&callback(
                "CAold1",
                "status:CAold1:terminal",
                now - 10 * DAY_MS,
            ))
            .await
            .unwrap();

        // One batch of one call at a time, oldest first, and only what is past the cutoff.
        let cutoff = now - 5 * DAY_MS;
        assert_eq!(store.purge_before(cutoff, 1).await.unwrap(), 1);
        let first = store.call_detail("CAold3").await.unwrap().unwrap();
        assert!(first.call.erased_at.is_some(), "oldest first");
        assert_eq!(store.purge_before(cutoff, 1).await.unwrap(), 1);
        assert_eq!(store.purge_before(cutoff, 10).await.unwrap(), 1);
        assert_eq!(store.purge_before(cutoff, 10).await.unwrap(), 0);
        for sid in ["CAold1", "CAold2", "CAold3"] {
            let d = store.call_detail(sid).await.unwrap().unwrap();
            assert!(
                d.call.erased_at.is_some() && d.transcript.is_empty(),
                "{sid}"
            );
        }
        let young = store.call_detail("CAyoung").await.unwrap().unwrap();
        assert_eq!(
            young.transcript.len(),
            3,
            "{}: a younger call stays",
            db.label
        );
        assert_eq!(young.call.from.as_deref(), Some("+919876543210"));
        let seen = every_row(&db).await;
        assert!(
            rows_of(&seen, "CAold1")
                .iter()
                .all(|r| !r.contains(CALLER) && !r.contains(SAID)),
            "{}: {:?}",
            db.label,
            rows_of(&seen, "CAold1")
        );
        store.close().await;
        db.drop_db().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_runs_retention_in_the_background_when_it_is_set() {
    for db in test_dbs().await {
        let store = open(&db).await;
        let now = now_ms();
        let mut batch = call_from("CAancient", now - 40 * DAY_MS, "+919876543210");
        batch.extend(call_from("CArecent", now - DAY_MS, "+919876543210"));
        store.write_batch(&batch).await.unwrap();
        let app = spawn_app(&tone_bot(400), |a| {
            a.database_url = db.url.clone();
            a.retention_days = Some(30);
        })
        .await;
        within(Duration::from_secs(20), "retention to run", async {
            loop {
                let d = store.call_detail("CAancient").await.unwrap().unwrap();
                if d.call.erased_at.is_some() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        let recent = store.call_detail("CArecent").await.unwrap().unwrap();
        assert!(recent.call.erased_at.is_none(), "{}", db.label);
        assert_eq!(recent.transcript.len(), 3);
        let health = reqwest::get(format!("http://{}/healthz", app.addr))
            .await
            .unwrap();
        assert_eq!(health.status().as_u16(), 200);
        drop(app);
        store.close().await;
        db.drop_db().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caly_erase_phone_erases_every_call_from_that_number_and_no_other() {
    for db in test_dbs().await {
        let store = open(&db).await;
        let t0 = now_ms() - 600_000;
        let mut batch = call_from("CAp1", t0, "+919876543210");
        batch.extend(call_from("CAp2", t0 + 1, "+919876543210"));
        batch.extend(call_from("CAp3", t0 + 2, "+919812345678"));
        store.write_batch(&batch).await.unwrap();
        let caly = |args: &[&str]| {
            std::process::Command::new(env!("CARGO_BIN_EXE_caly"))
                .args(args)
                .arg("--database-url")
                .arg(&db.url)
                .output()
                .unwrap()
        };
        // Any spelling of the number.
        let out = caly(&["erase", "--phone", "098765 43210"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("Erased 2 call(s)"), "{stdout}");
        assert!(!stdout.contains(CALLER), "the output masks it: {stdout}");
        for sid in ["CAp1", "CAp2"] {
            let d = store.call_detail(sid).await.unwrap().unwrap();
            assert!(
                d.transcript.is_empty() && d.call.erased_at.is_some(),
                "{sid}"
            );
            assert_eq!(d.call.from.as_deref(), Some("…3210"));
        }
        let other = store.call_detail("CAp3").await.unwrap().unwrap();
        assert_eq!(other.transcript.len(), 3);
        assert!(other.call.erased_at.is_none());
        let again = caly(&["erase", "--phone", "+91 98765 43210"]);
        assert!(String::from_utf8_lossy(&again.stdout).contains("Erased 0 call(s)"));
        let bad = caly(&["erase", "--phone", "not a number"]);
        assert!(!bad.status.success());
        store.close().await;
        db.drop_db().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_expire_are_listed_without_secrets_and_remember_their_last_use() {
    for db in test_dbs().await {
        let store = open(&db).await;
        let app = spawn_app(&tone_bot(400), |a| {
            a.database_url = db.url.clone();
            a.api_rate_per_sec = 1000;
        })
        .await;
        let http = Http::new(app.addr);
        let admin = store.create_api_key("ops", Scope::Admin).await.unwrap();
        let expired = store
            .create_api_key_expiring("old", Scope::Read, Some(now_ms() - 1))
            .await
            .unwrap();
        let (s, b) = http.get("/v1/calls", Some(&expired.secret)).await;
        assert_eq!((s, error_code(&b)), (401, "unauthorized"), "{b}");

        let create = |body: Value| {
            http.client
                .post(format!("{}/v1/apikeys", http.base))
                .bearer_auth(&admin.secret)
                .json(&body)
        };
        let (s, b) = http
            .send(create(
                json!({"name": "ci", "expires_at": "2001-01-01T00:00:00Z"}),
            ))
            .await;
        assert_eq!((s, error_code(&b)), (400, "bad_request"), "{b}");
        let (s, b) = http
            .send(create(json!({"name": "ci", "expires_in_days": 1.5})))
            .await;
        assert_eq!((s, error_code(&b)), (400, "bad_request"), "{b}");
        let (s, created) = http
            .send(create(json!({"name": "ci", "expires_in_days": 7})))
            .await;
        assert_eq!(s, 201, "{created}");
        assert!(created["expires_at"].is_string(), "{created}");
        let fresh = created["key"].as_str().unwrap().to_owned();
        assert_eq!(http.get("/v1/calls", Some(&fresh)).await.0, 200);

        let (s, b) = http.get("/v1/apikeys", Some(&fresh)).await;
        assert_eq!((s, error_code(&b)), (403, "forbidden"));
        // Used keys get `last_used_at`, written off the request path.
        let listed = within(Duration::from_secs(20), "last use to be written", async {
            loop {
                let (s, list) = http.get("/v1/apikeys", Some(&admin.secret)).await;
                assert_eq!(s, 200, "{list}");
                let items = list["items"].as_array().cloned().unwrap_or_default();
                let used = |id: &str| {
                    items
                        .iter()
                        .any(|k| k["id"] == id && k["last_used_at"].is_string())
                };
                if used(&admin.id) && used(created["id"].as_str().unwrap()) {
                    return list;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        let items = listed["items"].as_array().unwrap();
        assert_eq!(items.len(), 3, "{listed}");
        let text = listed.to_string();
        for secret in [&admin.secret, &expired.secret, &fresh] {
            let tail = &secret[secret.len() - 48..];
            assert!(!text.contains(tail), "a secret is listed: {text}");
        }
        let old = items
            .iter()
            .find(|k| k["id"] == expired.id.as_str())
            .unwrap();
        assert!(
            old["expires_at"].is_string() && old["last_used_at"].is_null(),
            "{old}"
        );
        assert_eq!(old["scope"], "read");
        assert!(old["created_at"].is_string());
        drop(app);
        store.close().await;
        db.drop_db().await;
    }
}

#[tokio::test]
async fn caly_apikey_create_with_an_expiry_and_list() {
    let db = crate::helpers::sqlite_db();
    let caly = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_caly"))
            .args(args)
            .arg("--database-url")
            .arg(&db.url)
            .output()
            .unwrap()
    };
    let out = caly(&[
        "apikey",
        "create",
        "--name",
        "temp",
        "--expires-in-days",
        "2",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secret = String::from_utf8(out.stdout).unwrap();
    let secret = secret.lines().last().unwrap().trim().to_owned();
    let out = caly(&["apikey", "list"]);
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let key: Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(key["name"], "temp");
    let expires = key["expires_at"].as_str().unwrap();
    let at = time::OffsetDateTime::parse(expires, &time::format_description::well_known::Rfc3339)
        .unwrap();
    let days = (at - time::OffsetDateTime::now_utc()).whole_hours();
    assert!((47..=48).contains(&days), "{expires}");
    assert!(!stdout.contains(&secret[secret.len() - 48..]), "{stdout}");
    let bad = caly(&["apikey", "create", "--name", "x", "--expires-in-days", "0"]);
    assert!(!bad.status.success());
    let store: Store = open(&db).await;
    assert!(store.check_api_key(&secret).await.unwrap().is_some());
    store.close().await;
}

#[tokio::test]
async fn the_openapi_document_says_what_each_route_takes_and_answers() {
    let app = spawn_app(&tone_bot(400), |_| {}).await;
    let http = Http::new(app.addr);
    let (s, doc) = http.get("/v1/openapi.json", None).await;
    assert_eq!(s, 200);
    let calls = &doc["paths"]["/v1/calls"]["get"];
    let param = |op: &Value, name: &str| {
        op["parameters"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == name).cloned())
            .unwrap_or(Value::Null)
    };
    let status = param(calls, "status");
    let statuses = status["schema"]["enum"].as_array().unwrap();
    assert!(statuses.contains(&json!("completed")));
    assert!(!statuses.contains(&json!("not_configured")), "{status}");
    assert_eq!(param(calls, "limit")["schema"]["maximum"], 200);
    assert!(param(calls, "cursor")["schema"]["pattern"].is_string());
    assert!(param(calls, "since")["schema"]["anyOf"].is_array());
    for code in ["200", "400", "401", "408", "429", "503"] {
        assert!(calls["responses"][code].is_object(), "GET /v1/calls {code}");
    }
    let erase = &doc["paths"]["/v1/calls/{id}"]["delete"];
    assert_eq!(erase["security"], json!([{"bearer": ["write"]}]));
    for code in ["200", "403", "404", "409"] {
        assert!(erase["responses"][code].is_object(), "DELETE {code}");
    }
    assert_eq!(
        doc["components"]["schemas"]["NewKeyRequest"]["additionalProperties"],
        false
    );
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    // A call's model use and cost are described, and what they refer to exists.
    let call = &doc["components"]["schemas"]["CallSummary"]["properties"];
    assert!(call["cost_usd"].is_object(), "{call}");
    assert_eq!(call["usage"]["$ref"], "#/components/schemas/TokenUse");
    assert!(doc["components"]["schemas"]["TokenUse"]["properties"]["audio_out"].is_object());
    let kpis = &doc["components"]["schemas"]["Kpis"]["properties"];
    assert!(kpis["cost_per_contained_call_usd"].is_object(), "{kpis}");
    for path in [
        "/v1/exotel/status",
        "/v1/exotel/passthru",
        "/v1/exotel/stream",
        "/v1/apikeys",
        "/v1/analytics/series",
        "/v1/console/session",
        "/v1/console/live",
    ] {
        assert!(doc["paths"][path].is_object(), "{path}");
    }
    // The console's routes: read routes take a bearer key or the session cookie, the same
    // scope and answers as the rest; routes that change things take only a bearer key.
    assert!(doc["components"]["securitySchemes"]["session"]["in"] == "cookie");
    for (path, method) in [
        ("/v1/console/live", "get"),
        ("/v1/console/session", "get"),
        ("/v1/analytics/series", "get"),
        ("/v1/calls", "get"),
    ] {
        let op = &doc["paths"][path][method];
        assert_eq!(
            op["security"],
            json!([{"bearer": ["read"]}, {"session": []}]),
            "{method} {path}"
        );
        for code in ["401", "429", "503"] {
            assert!(op["responses"][code].is_object(), "{method} {path} {code}");
        }
    }
    assert_eq!(
        doc["paths"]["/v1/apikeys"]["post"]["security"],
        json!([{"bearer": ["admin"]}])
    );
    let sign_in = &doc["paths"]["/v1/console/session"]["post"];
    assert_eq!(sign_in["security"], json!([]));
    for code in ["201", "400", "401", "413", "429"] {
        assert!(sign_in["responses"][code].is_object(), "sign-in {code}");
    }
    // Every handler-checked parameter is in the document and vice versa: a value the
    // document's enum allows is taken, one outside it is refused.
    let key = app
        .state
        .db
        .create_api_key("doc", Scope::Read)
        .await
        .unwrap();
    for word in statuses {
        let (s, _) = http
            .get(
                &format!("/v1/calls?status={}", word.as_str().unwrap()),
                Some(&key.secret),
            )
            .await;
        assert_eq!(s, 200, "{word}");
    }
    let (s, _) = http
        .get("/v1/calls?status=not_configured", Some(&key.secret))
        .await;
    assert_eq!(s, 400);
}
