//! `caly serve` answers its health routes on a real socket.

use std::net::SocketAddr;

use caly::app::App;
use caly::settings::ServeArgs;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use crate::helpers::{init, repo};

async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    let status = buf.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = buf.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

#[tokio::test]
async fn health_and_readiness_answer_and_shutdown_is_graceful() {
    init();
    let args = ServeArgs::local(repo("pipelines/default.toml"));
    let app = App::build(&args).await.unwrap();
    let addr = app.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    let (status, body) = get(addr, "/healthz").await;
    assert_eq!(status, 200);
    assert!(body.contains("\"ok\""), "{body}");
    let (status, body) = get(addr, "/readyz").await;
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["status"], "ready");
    assert_eq!(json["pipeline"]["name"], "support_hinglish");
    // Without Shopify settings the default pipeline's agents act on the labelled demo store.
    let store = if std::env::var("SHOPIFY_ACCESS_TOKEN").is_ok_and(|t| !t.is_empty()) {
        "shopify"
    } else {
        "demo"
    };
    assert_eq!(json["store"], store);
    let (status, _) = get(addr, "/nope").await;
    assert_eq!(status, 404);
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_pipeline_that_does_not_compile_stops_the_server_from_starting() {
    let args = ServeArgs::local(repo("fixtures/pipelines/bad_cycle.toml"));
    let err = App::build(&args).await.err().expect("refused");
    let shown = format!("{err:#}");
    assert!(shown.contains("cycle: a -> b -> c -> a"), "{shown}");
}
