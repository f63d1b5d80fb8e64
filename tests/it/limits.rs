//! The HTTP server's connection limits, from outside on real sockets: clients that send part
//! of a request and go quiet, keep-alive connections left idle, a body that never finishes and
//! connections beyond the cap are all ended within their configured bounds, while health
//! checks and an Exotel call carry on.

use std::time::{Duration, Instant};

use caly::devtools::simulate::ExotelClient;
use caly::metrics::Metrics;
use caly::testing::within;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::helpers::{spawn_app, take_a_turn, tone_bot, utterance};

/// Writes `bytes` on a new connection to `addr`.
async fn open(addr: std::net::SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    s
}

/// Reads until the server closes `s`; what it sent.
async fn until_closed(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return String::from_utf8_lossy(&out).into_owned(),
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads one response to a request on `s` (headers, and a body of `content-length`).
async fn one_response(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before a response");
        out.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&out).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_owned)
                })
                .and_then(|l| l.trim().parse().ok())
                .unwrap_or(0);
            if body.len() >= length {
                return text;
            }
        }
    }
}

async fn healthz(addr: std::net::SocketAddr) -> String {
    let mut s = open(
        addr,
        b"GET /healthz HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n",
    )
    .await;
    until_closed(&mut s).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_connections_are_closed_while_health_checks_and_a_call_carry_on() {
    let bound = Duration::from_secs(1);
    let mut app = spawn_app(&tone_bot(1000), |a| a.http_header_timeout_secs = 1).await;
    let metrics = app.state.calls_config.metrics.clone();
    // Half a request line and headers, then nothing.
    let opened = Instant::now();
    let mut slow = Vec::new();
    for _ in 0..60 {
        slow.push(open(app.addr, b"GET /healthz HTTP/1.1\r\nhost: slow\r\nx-wait: ").await);
    }
    // A whole request, its answer read, then the connection left idle.
    let mut idle = Vec::new();
    for _ in 0..20 {
        let mut s = open(app.addr, b"GET /healthz HTTP/1.1\r\nhost: idle\r\n\r\n").await;
        let answer = one_response(&mut s).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        idle.push(s);
    }
    // Meanwhile health checks answer, and an Exotel call outlives the header bound several
    // times over: a WebSocket in use is not an idle connection.
    assert!(healthz(app.addr).await.starts_with("HTTP/1.1 200"));
    let mut call = ExotelClient::connect(&app.url("sample-rate=8000"), None)
        .await
        .unwrap();
    call.start("MZslow", "CAslow", 8000).await.unwrap();
    take_a_turn(&mut call, &utterance()).await;
    let quiet = vec![0i16; 160];
    let until = Instant::now() + 3 * bound;
    while Instant::now() < until {
        call.media(&quiet).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    take_a_turn(&mut call, &utterance()).await;
    call.stop().await.unwrap();
    let report = app.report().await;
    assert_eq!(report.end, caly::call::CallEnd::Hangup, "{report:?}");
    // Every slow and idle connection has been closed by the server, none before its bound.
    within(
        Duration::from_secs(20),
        "slow connections to be closed",
        async {
            for s in &mut slow {
                let sent = until_closed(s).await;
                assert!(!sent.starts_with("HTTP/1.1 200"), "{sent}");
            }
            for s in &mut idle {
                until_closed(s).await;
            }
        },
    )
    .await;
    assert!(opened.elapsed() >= bound);
    assert!(
        Metrics::get(&metrics.http_timeouts, "limit", "headers") >= 80,
        "{}",
        Metrics::get(&metrics.http_timeouts, "limit", "headers")
    );
    within(
        Duration::from_secs(5),
        "connections to be counted closed",
        async {
            while metrics.http_connections.get() != 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        },
    )
    .await;
    assert!(healthz(app.addr).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn a_body_that_never_finishes_is_answered_408() {
    let app = spawn_app(&tone_bot(300), |a| a.http_request_timeout_secs = 1).await;
    let mut s = open(
        app.addr,
        b"POST /v1/apikeys HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"name\":",
    )
    .await;
    let answer = within(Duration::from_secs(20), "a 408", one_response(&mut s)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"timeout\""), "{answer}");
    let metrics = &app.state.calls_config.metrics;
    assert_eq!(Metrics::get(&metrics.http_timeouts, "limit", "request"), 1);
    assert!(healthz(app.addr).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn connections_beyond_the_cap_are_refused_with_503_until_one_closes() {
    let app = spawn_app(&tone_bot(300), |a| {
        a.max_connections = 4;
        a.http_header_timeout_secs = 30;
    })
    .await;
    let metrics = app.state.calls_config.metrics.clone();
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(open(app.addr, b"GET /healthz HTTP/1.1\r\n").await);
    }
    within(Duration::from_secs(10), "four connections open", async {
        while metrics.http_connections.get() != 4 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    for _ in 0..3 {
        let refused = within(Duration::from_secs(10), "a refusal", healthz(app.addr)).await;
        assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
        assert!(refused.contains("too_many_connections"), "{refused}");
    }
    assert_eq!(metrics.http_connections_refused.get(), 3);
    // One held connection finishes its request: its place is free again.
    let mut first = held.remove(0);
    first
        .write_all(b"host: test\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    assert!(until_closed(&mut first).await.starts_with("HTTP/1.1 200"));
    within(Duration::from_secs(10), "a place to free up", async {
        while metrics.http_connections.get() != 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(healthz(app.addr).await.starts_with("HTTP/1.1 200"));
    assert_eq!(metrics.http_connections_refused.get(), 3);
}
