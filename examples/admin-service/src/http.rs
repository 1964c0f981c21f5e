//! The HTTP server: hyper's HTTP/1 connections with a timer, so that a client
//! that sends its headers too slowly, or keeps a connection idle too long, is
//! cut off, and a shutdown that a slow client cannot hold up.
//!
//! `axum::serve` sets no timeout at all; hyper has a header read timeout once
//! it is given a timer (hyper-util's `TokioTimer`), and tower-http's timeout
//! (in the router) bounds a whole request. hyper has no idle keep-alive
//! timeout, so each connection watches its own idleness here.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt;

use crate::settings::HttpLimits;

/// Largest read buffer of a connection, and so the largest request head: a
/// slow or hostile client holds at most this much (hyper's default is about
/// 400 KiB).
const MAX_BUF_BYTES: usize = 64 * 1024;

/// Serves `app` on `listener` until `stop` turns true, then lets open
/// connections finish their requests. The caller bounds that wait (by
/// aborting this future's task, which closes every connection).
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    mut stop: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tracing::debug!(%peer, "connection accepted");
                    connections.spawn(connection(stream, app.clone(), limits, stop.clone()));
                }
                Err(e) => {
                    // Out of file descriptors, say: wait a little rather than spin.
                    tracing::warn!("cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    break;
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// What a connection is doing: how many of its requests are running, and
/// when the last one ended (none yet: the first request's head is bounded by
/// hyper's header timeout, and may be on its way). A watch channel, so that
/// the connection's loop wakes when a request ends and arms its idle timer.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Activity {
    running: usize,
    last_end: Option<Instant>,
}

impl Activity {
    /// When the connection will have been idle for `idle` since its last
    /// request; `None` while a request runs or before the first ended.
    fn idle_deadline(self, idle: Duration) -> Option<Instant> {
        self.last_end
            .filter(|_| self.running == 0)
            .map(|end| end + idle)
    }
}

/// Counts a request as running from its creation until it is dropped (also
/// when the request is cancelled), when it marks the request's end.
struct RequestGuard(Arc<watch::Sender<Activity>>);

impl RequestGuard {
    fn begin(activity: &Arc<watch::Sender<Activity>>) -> Self {
        activity.send_modify(|a| a.running += 1);
        Self(activity.clone())
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.send_modify(|a| {
            a.running = a.running.saturating_sub(1);
            a.last_end = Some(Instant::now());
        });
    }
}

async fn connection(
    stream: TcpStream,
    app: Router,
    limits: HttpLimits,
    mut stop: watch::Receiver<bool>,
) {
    let activity = Arc::new(watch::Sender::new(Activity::default()));
    let mut activity_changed = activity.subscribe();
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            tracing::debug!(method = %request.method(), path = %request.uri().path(), "request");
            let guard = RequestGuard::begin(&activity);
            let app = app.clone();
            async move {
                let response = app.oneshot(request).await;
                drop(guard);
                response.map_err(|never: Infallible| match never {})
            }
        })
    };
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_BUF_BYTES);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        // Read again after every wake-up: a request that ended arms the timer.
        let idle_deadline = activity_changed
            .borrow_and_update()
            .idle_deadline(limits.idle_timeout);
        tokio::select! {
            ended = conn.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!("connection closed: {e}");
                }
                return;
            }
            () = sleep_until(idle_deadline), if !closing => {
                // Still idle: no request began or ended since the deadline was read.
                if !activity_changed.has_changed().unwrap_or(true) {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
            // A request began or ended: read the deadline again. (The sender
            // lives as long as this function, so this never ends in an error.)
            _ = activity_changed.changed(), if !closing => {}
            changed = stop.changed(), if !closing => {
                if changed.is_err() || *stop.borrow() {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

/// Sleeps until `deadline`, or for ever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A keep-alive connection that goes quiet after a request is closed by
    /// the idle timeout (a tenth of a second here), not left to hyper's
    /// header timeout (an hour here): the loop re-arms its idle timer when a
    /// request ends.
    #[tokio::test]
    async fn an_idle_keep_alive_connection_is_closed_after_a_request() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let limits = HttpLimits {
            header_timeout: Duration::from_secs(3600),
            request_timeout: Duration::from_secs(3600),
            idle_timeout: Duration::from_millis(100),
            ..HttpLimits::default()
        };
        let app = Router::new().route("/", get(|| async { "ok" }));
        let (stop_tx, stop) = watch::channel(false);
        let server = tokio::spawn(serve(listener, app, limits, stop));

        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        // Reads the answer, then the end of the connection; a connection
        // left open would still be open when the minute is over.
        let mut got = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut got))
            .await
            .is_ok();
        let got = String::from_utf8_lossy(&got);
        assert!(
            got.starts_with("HTTP/1.1 200"),
            "the request is answered: {got}"
        );
        assert!(closed, "the idle connection is still open after a minute");

        stop_tx.send_replace(true);
        server.await.expect("the server stops");
    }
}
