//! REST read latency over a large call history: seeds (once) a database with 100,000 calls,
//! 2,000,000 transcript segments, 500,000 turns and their intents and actions through the
//! store's own write path, then times `GET /v1/calls` (several filters and deep pages),
//! `GET /v1/calls/{id}` and `GET /v1/analytics/kpis` over real HTTP against a server in this
//! process, and prints p50/p99 of each.
//!
//! ```text
//! CALY_BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/caly_bench cargo bench --bench records
//! ```
//!
//! Without `CALY_BENCH_DATABASE_URL` it uses `caly_bench` on the server `TEST_DATABASE_URL`
//! names, and without either it stops with a note. `CALY_BENCH_CALLS` (default 100000) and
//! `CALY_BENCH_SEGMENTS` (per call, default 20) change the size; a database already seeded
//! with that many calls is reused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use caly::store::keys::Scope;
use caly::store::{Record, Store, call_id_for_sid, now_ms};

fn intent(i: u64) -> &'static str {
    let all = caly::intent::INTENTS;
    all[(i % all.len() as u64) as usize].name()
}

/// A tiny deterministic generator (splitmix64), so every seed is the same data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn caller(i: u64) -> String {
    format!("+9198{:08}", i % 20_000)
}

fn call_records(i: u64, calls: u64, segments: i64, now: i64, rng: &mut Rng) -> Vec<Record> {
    let sid = format!("CAbench{i:07}");
    let id = call_id_for_sid(&sid);
    // 90 days of calls, newest last.
    let started = now - 90 * 86_400_000 + (i as i64) * (90 * 86_400_000 / calls as i64).max(1);
    let mut out = Vec::with_capacity(segments as usize + 12);
    out.push(Record::CallStarted {
        id: id.clone(),
        call_sid: Some(sid.clone()),
        stream_sid: Some(format!("MZbench{i:07}")),
        from: Some(caller(rng.next())),
        to: Some("+918041234567".into()),
        direction: Some("inbound".into()),
        pipeline: "default".into(),
        at_ms: started,
    });
    for seq in 0..segments {
        out.push(Record::Segment {
            call_id: id.clone(),
            seq,
            speaker: if seq % 2 == 0 { "caller" } else { "bot" },
            text: if seq % 2 == 0 {
                format!("mera order {} kahan hai, kab tak aayega?", 1000 + i)
            } else {
                "Aapka order kal tak deliver ho jayega. Kya main aur kuch madad kar sakti hoon?"
                    .into()
            },
            pts_ms: seq * 3000,
            at_ms: started + seq * 3000,
        });
    }
    for seq in 0..(1 + rng.below(2) as i64) {
        out.push(Record::Intent {
            call_id: id.clone(),
            seq,
            intent: intent(rng.next()).into(),
            confidence: 0.6 + rng.below(40) as f64 / 100.0,
            entities: format!(r#"{{"order_id":"{}"}}"#, 1000 + i),
            accepted: rng.below(10) < 9,
            at_ms: started + 2000,
        });
    }
    let roll = rng.below(10);
    if roll < 7 {
        let action = if roll == 0 {
            "talk_to_human"
        } else {
            "order_status"
        };
        out.push(Record::Action {
            call_id: id.clone(),
            action: action.into(),
            order: Some(format!("#{}", 1000 + i)),
            key: format!("{id}:{action}"),
            status: if rng.below(20) == 0 { "failed" } else { "done" }.into(),
            detail: "Order is out for delivery.".into(),
            at_ms: started + 5000,
        });
    }
    let mut v2v = Vec::new();
    for seq in 0..5 {
        let v = 450.0 + rng.below(600) as f64;
        v2v.push(v);
        out.push(Record::Turn {
            call_id: id.clone(),
            seq,
            model_ms: v - 60.0,
            engine_ms: 2.0,
            v2v_sent_ms: v - 40.0,
            v2v_played_ms: Some(v),
            at_ms: started + seq * 6000,
        });
    }
    v2v.sort_by(f64::total_cmp);
    let duration = 30_000 + rng.below(240_000) as i64;
    out.push(Record::CallEnded {
        id,
        call_sid: Some(sid),
        ended_at_ms: started + duration,
        duration_ms: duration,
        end_reason: "hangup".into(),
        turns: 5,
        barge_ins: rng.below(3) as i64,
        v2v_p50_ms: Some(v2v[2] as i64),
        v2v_max_ms: Some(v2v[4] as i64),
        usage: caly::engine::frame::TokenUse {
            text_in: 2_000,
            text_in_cached: 1_500,
            audio_in: 1_800,
            audio_in_cached: 0,
            text_out: 300,
            audio_out: 2_400,
        },
        cost_usd: 0.2,
    });
    out
}

async fn seed(store: &Store, calls: u64, segments: i64) {
    let have = store.count_rows("calls").await.unwrap();
    if have == calls as i64 {
        println!("reusing the {have} calls already seeded");
        return;
    }
    assert_eq!(
        have, 0,
        "the bench database holds {have} calls; drop it or use another"
    );
    let now = now_ms();
    let started = Instant::now();
    let mut written = 0u64;
    let per_task = calls.div_ceil(4);
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..4u64 {
        let store = store.clone();
        tasks.spawn(async move {
            let mut rng = Rng(t + 1);
            let mut n = 0u64;
            let mut batch = Vec::new();
            for i in (t * per_task)..((t + 1) * per_task).min(calls) {
                batch.extend(call_records(i, calls, segments, now, &mut rng));
                if batch.len() >= 2000 {
                    let t0 = Instant::now();
                    if let Err(e) = store.write_batch(&batch).await {
                        panic!(
                            "write_batch failed after {:?} at call {i}: {e}",
                            t0.elapsed()
                        );
                    }
                    n += batch.len() as u64;
                    batch.clear();
                }
            }
            store.write_batch(&batch).await.unwrap();
            n + batch.len() as u64
        });
    }
    while let Some(n) = tasks.join_next().await {
        written += n.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "seeded {calls} calls ({written} records) in {secs:.0} s: {:.0} records/s through write_batch",
        written as f64 / secs
    );
    if store.backend() == caly::store::Backend::Postgres {
        store.execute_admin("ANALYZE").await.unwrap();
    }
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

async fn time(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    name: &str,
    paths: &[String],
    runs: usize,
) {
    // One warm-up round.
    for p in paths.iter().take(5) {
        client
            .get(format!("{base}{p}"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
    }
    let mut took = Vec::with_capacity(runs);
    for i in 0..runs {
        let path = &paths[i % paths.len()];
        let t = Instant::now();
        let resp = client
            .get(format!("{base}{path}"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body = resp.bytes().await.unwrap();
        took.push(t.elapsed());
        assert!(status.is_success(), "{path}: {status} {body:?}");
    }
    took.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{name:<38} n={runs:<5} p50 {:>7.2} ms   p99 {:>7.2} ms   max {:>7.2} ms",
        ms(percentile(&took, 0.5)),
        ms(percentile(&took, 0.99)),
        ms(took[took.len() - 1]),
    );
}

fn bench_url() -> Option<String> {
    if let Ok(url) = std::env::var("CALY_BENCH_DATABASE_URL") {
        return Some(url);
    }
    let admin = std::env::var("TEST_DATABASE_URL").ok()?;
    let base = admin.split('?').next()?.rsplit_once('/')?.0.to_owned();
    Some(format!("{base}/caly_bench"))
}

async fn ensure_database(url: &str) {
    let Some((base, name)) = url.rsplit_once('/') else {
        return;
    };
    if !url.starts_with("postgres") {
        return;
    }
    let admin = Store::connect_with(&format!("{base}/postgres"), 1)
        .await
        .unwrap();
    let _ = admin
        .execute_admin(&format!("CREATE DATABASE {name}"))
        .await;
    admin.close().await;
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let Some(url) = bench_url() else {
        println!(
            "records bench skipped: set CALY_BENCH_DATABASE_URL (or TEST_DATABASE_URL) to a PostgreSQL server"
        );
        return;
    };
    let calls: u64 = std::env::var("CALY_BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let segments: i64 = std::env::var("CALY_BENCH_SEGMENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        ensure_database(&url).await;
        let store = Store::connect(&url).await.unwrap();
        store.migrate().await.unwrap();
        seed(&store, calls, segments).await;
        let key = store.create_api_key("bench", Scope::Read).await.unwrap();

        let mut args = caly::settings::ServeArgs::local(
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("pipelines/tone_bot.toml"),
        );
        args.database_url = url.clone();
        args.api_rate_per_sec = 1_000_000;
        let app = caly::app::App::build(&args).await.unwrap();
        let base = format!("http://{}", app.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until(async {
            let _ = stopped.await;
        }));
        let client = reqwest::Client::new();

        let mut rng = Rng(99);
        let list: Vec<String> = (0..50)
            .map(|_| match rng.below(4) {
                0 => "/v1/calls?limit=50".to_owned(),
                1 => format!("/v1/calls?status=completed&from={}", caller(rng.next())),
                2 => format!("/v1/calls?intent={}&limit=50", intent(rng.next())),
                _ => format!(
                    "/v1/calls?since={}&until={}&limit=100",
                    now_ms() - 30 * 86_400_000,
                    now_ms() - 29 * 86_400_000
                ),
            })
            .collect();
        // Deep pages: follow the cursor 20 pages in.
        let mut deep = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..20 {
            let path = match &cursor {
                Some(c) => format!("/v1/calls?limit=200&cursor={c}"),
                None => "/v1/calls?limit=200".to_owned(),
            };
            let page: serde_json::Value = client
                .get(format!("{base}{path}"))
                .bearer_auth(&key.secret)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            deep.push(path);
            cursor = page["next_cursor"].as_str().map(str::to_owned);
        }
        let detail: Vec<String> = (0..200)
            .map(|_| {
                let i = rng.below(calls);
                if i.is_multiple_of(2) {
                    format!("/v1/calls/{}", call_id_for_sid(&format!("CAbench{i:07}")))
                } else {
                    format!("/v1/calls/CAbench{i:07}")
                }
            })
            .collect();
        let kpis_30d = vec!["/v1/analytics/kpis".to_owned()];
        let kpis_1d = vec![format!(
            "/v1/analytics/kpis?since={}",
            now_ms() - 86_400_000
        )];
        println!(
            "\n{} backend, {calls} calls x {segments} segments",
            store.backend().label()
        );
        time(
            &client,
            &base,
            &key.secret,
            "GET /v1/calls (mixed filters)",
            &list,
            500,
        )
        .await;
        time(
            &client,
            &base,
            &key.secret,
            "GET /v1/calls (200/page, 20 pages deep)",
            &deep,
            200,
        )
        .await;
        time(
            &client,
            &base,
            &key.secret,
            "GET /v1/calls/{id} (20 segments)",
            &detail,
            500,
        )
        .await;
        time(
            &client,
            &base,
            &key.secret,
            "GET /v1/analytics/kpis (1 day)",
            &kpis_1d,
            50,
        )
        .await;
        time(
            &client,
            &base,
            &key.secret,
            "GET /v1/analytics/kpis (30 days)",
            &kpis_30d,
            30,
        )
        .await;
        let _ = stop.send(());
        let _ = server.await;
        store.revoke_api_key(&key.id).await.unwrap();
    });
}
