//! A minimal TCP proxy in front of the broker, for the drain run.
//!
//! The outage and memory runs use the testkit's `TcpProxy`; this one exists
//! because the drain run needs the time of every connection attempt, refused
//! ones included, to tell which backoff delay was in force, and `TcpProxy`
//! counts only the connections it lets through.
//!
//! `down()` cuts every open connection and closes new ones as soon as they are
//! accepted (the client sees the connection end during the handshake, as with
//! a broker that is gone); `up()` forwards again.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use anyhow::Context;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// One connection attempt seen by the proxy.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attempt {
    pub(crate) at: Instant,
    /// Whether it was forwarded (the proxy was up).
    pub(crate) forwarded: bool,
}

#[derive(Debug)]
struct State {
    up: AtomicBool,
    /// Cancelled to cut the connections forwarded so far.
    cut: Mutex<CancellationToken>,
    attempts: Mutex<Vec<Attempt>>,
}

/// `broker_url` with its host and port replaced by `addr` (credentials and
/// vhost kept).
pub(crate) fn via(broker_url: &str, addr: SocketAddr) -> String {
    let (scheme, rest) = broker_url.split_once("://").unwrap_or(("amqp", broker_url));
    let (userinfo, hostpath) = match rest.rsplit_once('@') {
        Some((u, h)) => (format!("{u}@"), h),
        None => (String::new(), rest),
    };
    let path = hostpath.find('/').map_or("", |i| &hostpath[i..]);
    format!("{scheme}://{userinfo}{addr}{path}")
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The proxy; it stops, and cuts what it forwards, when dropped.
#[derive(Debug)]
pub(crate) struct Proxy {
    addr: SocketAddr,
    state: Arc<State>,
    stop: CancellationToken,
}

impl Proxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `target`, up or down from the start.
    pub(crate) async fn start(target: SocketAddr, up: bool) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the proxy")?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            up: AtomicBool::new(up),
            cut: Mutex::new(CancellationToken::new()),
            attempts: Mutex::new(Vec::new()),
        });
        let stop = CancellationToken::new();
        tokio::spawn(accept_loop(listener, target, state.clone(), stop.clone()));
        Ok(Self { addr, state, stop })
    }

    /// An AMQP URL through the proxy, with the credentials and vhost of `broker_url`.
    pub(crate) fn url(&self, broker_url: &str) -> String {
        via(broker_url, self.addr)
    }

    /// Forwards new connections.
    pub(crate) fn up(&self) {
        self.state.up.store(true, Ordering::SeqCst);
    }

    /// Cuts every open connection and refuses new ones.
    pub(crate) fn down(&self) {
        self.state.up.store(false, Ordering::SeqCst);
        let mut cut = lock(&self.state.cut);
        cut.cancel();
        *cut = CancellationToken::new();
    }

    /// The connection attempts seen so far.
    pub(crate) fn attempts(&self) -> Vec<Attempt> {
        lock(&self.state.attempts).clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
        lock(&self.state.cut).cancel();
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    state: Arc<State>,
    stop: CancellationToken,
) {
    loop {
        let inbound = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((inbound, _)) => inbound,
                Err(_) => continue,
            },
        };
        let forwarded = state.up.load(Ordering::SeqCst);
        lock(&state.attempts).push(Attempt {
            at: Instant::now(),
            forwarded,
        });
        if !forwarded {
            drop(inbound);
            continue;
        }
        let cut = lock(&state.cut).clone();
        tokio::spawn(forward(inbound, target, cut));
    }
}

async fn forward(mut inbound: TcpStream, target: SocketAddr, cut: CancellationToken) {
    let Ok(mut upstream) = TcpStream::connect(target).await else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    tokio::select! {
        _ = cut.cancelled() => {}
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut upstream) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_keeps_credentials_and_vhost() {
        let addr = "127.0.0.1:4000".parse().expect("addr");
        assert_eq!(
            via("amqp://guest:guest@127.0.0.1:5672/%2f", addr),
            "amqp://guest:guest@127.0.0.1:4000/%2f"
        );
        assert_eq!(via("amqp://localhost", addr), "amqp://127.0.0.1:4000");
    }
}
