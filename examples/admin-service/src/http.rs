//! The HTTP server: hyper's HTTP/1 connections with a timer, so that a client
//! that sends its headers too slowly, or keeps a connection idle too long, is
//! cut off, and a shutdown that a slow client cannot hold up.
//!
//! `axum::serve` sets no timeout at all; hyper has a header read timeout once
//! it is given a timer (hyper-util's `TokioTimer`), and tower-http's timeout
//! (in the router) bounds a whole request. hyper has no idle keep-alive
//! timeout, so each connection watches its own idleness here.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
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

/// How many requests of the connection are running, and when the last one
/// ended (none yet: the first request's head is bounded by hyper's header
/// timeout, and may be on its way).
#[derive(Debug)]
struct Activity {
    state: Mutex<(usize, Option<Instant>)>,
}

impl Activity {
    fn new() -> Self {
        Self {
            state: Mutex::new((0, None)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (usize, Option<Instant>)> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn begin(self: &Arc<Self>) -> RequestGuard {
        self.lock().0 += 1;
        RequestGuard(self.clone())
    }

    /// When the connection will have been idle for `idle` since its last
    /// request; `None` while a request runs or before the first ended.
    fn idle_deadline(&self, idle: Duration) -> Option<Instant> {
        let (running, last_end) = *self.lock();
        last_end.filter(|_| running == 0).map(|end| end + idle)
    }
}

/// Marks the end of a request when dropped (also when the request is cancelled).
struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.0 = state.0.saturating_sub(1);
        state.1 = Some(Instant::now());
    }
}

async fn connection(
    stream: TcpStream,
    app: Router,
    limits: HttpLimits,
    mut stop: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::new());
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            tracing::debug!(method = %request.method(), path = %request.uri().path(), "request");
            let guard = activity.begin();
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
        let idle_deadline = activity.idle_deadline(limits.idle_timeout);
        tokio::select! {
            ended = conn.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!("connection closed: {e}");
                }
                return;
            }
            () = sleep_until(idle_deadline), if !closing => {
                if activity
                    .idle_deadline(limits.idle_timeout)
                    .is_some_and(|deadline| deadline <= Instant::now())
                {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
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
