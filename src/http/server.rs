//! The HTTP server loop, with the limits `axum::serve` does not offer: a slow or silent
//! client cannot hold a connection. Each connection must send a request's headers within
//! `header_timeout` of being ready for one — on a new connection and between keep-alive
//! requests alike, so an idle keep-alive connection is closed after the same bound; a whole
//! request (its body included) must be answered within `request_timeout`; and at most
//! `max_connections` are open at once, WebSockets included (a permit travels with the socket
//! through the upgrade). Beyond the cap a connection is answered `503` and closed at once,
//! without being read. A WebSocket that has been upgraded is outside these timers: an Exotel
//! stream in use is never idle, and a silent one is ended by the call's own media timeout.

use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::error::ApiError;
use crate::metrics::Metrics;

/// Largest request head (request line and headers) taken; beyond it, `431`.
pub(crate) const MAX_HEADER_BYTES: usize = 16 * 1024;
/// After shutdown, how long open connections get to finish the request they are on.
const CLOSE_CONNECTIONS_TIMEOUT: Duration = Duration::from_secs(5);
/// After a failed accept (out of file descriptors), wait this long before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// What a connection beyond the cap is told, before it is closed.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\nretry-after: 1\r\n\
content-type: application/json\r\ncontent-length: 88\r\n\r\n\
{\"error\":{\"code\":\"too_many_connections\",\"message\":\"Too many open connections; retry.\"}}\n";

/// The server's connection limits (`caly serve` flags; README "Security").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Time to receive a request's headers, counted from when the connection is ready for
    /// one (accepted, or done with its previous request).
    pub header_timeout: Duration,
    /// Time to answer a request, its body included.
    pub request_timeout: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
}

/// A connection's socket with its place under the cap: the permit is returned when the
/// socket closes, after an upgrade too.
struct Counted {
    tcp: TcpStream,
    _permit: OwnedSemaphorePermit,
    open: prometheus_client::metrics::gauge::Gauge,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.open.dec();
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

/// Serves `router` on `listener` within `limits` until `shutdown` resolves, then lets open
/// connections finish the request they are on (up to a few seconds) and returns.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    let timeout = limits.request_timeout;
    let timed_metrics = metrics.clone();
    let router = router.layer(axum::middleware::from_fn(
        move |req: Request, next: Next| {
            let metrics = timed_metrics.clone();
            async move { answer_within(timeout, &metrics, req, next).await }
        },
    ));
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let connections = TaskTracker::new();
    let closing = CancellationToken::new();
    let mut shutdown = pin!(shutdown);
    loop {
        let tcp = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // Out of file descriptors (or the like): the listener itself is fine.
                    tracing::warn!(error = %e, "Could not accept a connection.");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics.http_connections_refused.inc();
            // Best effort and never waited on: a refused client gets one write, then the close.
            let _ = tcp.try_write(REFUSAL);
            continue;
        };
        if let Err(e) = tcp.set_nodelay(true) {
            // Bot audio and its `mark` go out as separate small frames; Nagle would hold them.
            tracing::debug!(error = %e, "Could not set TCP_NODELAY on a connection.");
        }
        metrics.http_connections.inc();
        let io = Counted {
            tcp,
            _permit: permit,
            open: metrics.http_connections.clone(),
        };
        let service = TowerToHyperService::new(router.clone());
        let closing = closing.clone();
        let metrics = metrics.clone();
        connections.spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_header_size(MAX_HEADER_BYTES);
            let mut conn = pin!(
                builder
                    .serve_connection(TokioIo::new(io), service)
                    .with_upgrades()
            );
            let done = tokio::select! {
                done = conn.as_mut() => done,
                () = closing.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = done {
                if e.is_timeout() {
                    metrics
                        .http_timeouts
                        .get_or_create(&[("limit", "headers")])
                        .inc();
                }
                tracing::debug!(error = %e, "HTTP connection ended with an error.");
            }
        });
    }
    closing.cancel();
    connections.close();
    if tokio::time::timeout(CLOSE_CONNECTIONS_TIMEOUT, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            connections = connections.len(),
            "Connections still open at shutdown are dropped."
        );
    }
}

/// Runs the rest of the stack for `req`, or answers `408` once `limit` has passed (a body
/// trickled in, a handler stuck on a dependency).
async fn answer_within(limit: Duration, metrics: &Metrics, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            metrics
                .http_timeouts
                .get_or_create(&[("limit", "request")])
                .inc();
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                format!(
                    "The request was not complete within {} s.",
                    limit.as_secs_f64()
                ),
            )
            .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_is_a_complete_http_response() {
        let text = std::str::from_utf8(REFUSAL).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(body.len(), length);
        assert!(head.starts_with("HTTP/1.1 503 "));
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], "too_many_connections");
    }
}
