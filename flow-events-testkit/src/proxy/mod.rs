//! A TCP proxy to put between a client and a real broker, with faults on
//! command: refuse new connections, reset the open ones, forward nothing
//! (a network partition), or add latency.
//!
//! It faults only the connections that go through it, so tests using it can
//! run next to other tests on the same broker.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! use std::time::Duration;
//! use flow_events_testkit::proxy::{ProxyMode, TcpProxy};
//!
//! # let broker = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! # let broker_addr = broker.local_addr()?;
//! // Between the client and the broker (RabbitMQ at 127.0.0.1:5672, say).
//! let proxy = TcpProxy::start(broker_addr).await?;
//! let url = proxy.url_for("guest", "guest", "/");
//! assert_eq!(url, format!("amqp://guest:guest@{}/%2F", proxy.addr()));
//!
//! let faults = proxy.handle(); // cloneable, for a task that injects faults
//! faults.down(); // new connections are reset at once
//! faults.up();
//! faults.set_latency(Duration::from_millis(20)); // each way, per chunk
//! faults.blackhole(); // open connections stay open, nothing goes through
//! assert_eq!(faults.mode(), ProxyMode::Blackhole);
//! faults.restore(); // everything held back goes through
//! faults.cut(); // every open connection is reset
//! assert_eq!(faults.connections(), 0);
//! # Ok(()) }
//! ```

mod pipe;

use std::io;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

/// What the proxy does with connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProxyMode {
    /// Forwards everything.
    Up,
    /// Resets every new connection as soon as it is accepted; the open ones
    /// carry on (call [`ProxyHandle::cut`] as well to drop them).
    Down,
    /// Keeps every connection open, accepts new ones, and forwards nothing in
    /// either direction, as a network partition does: the peers notice only
    /// through their own timeouts (heartbeats). What was held back goes
    /// through, in order, once the mode changes back.
    Blackhole,
}

/// What the listener and the connections share.
#[derive(Debug)]
struct Shared {
    mode: watch::Sender<ProxyMode>,
    latency: watch::Sender<Duration>,
    /// Cancelled by `cut`: every connection accepted before holds a clone.
    cut: Mutex<CancellationToken>,
    open: AtomicUsize,
    accepted: AtomicU64,
}

impl Shared {
    fn cut_token(&self) -> CancellationToken {
        self.cut.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Steers a [`TcpProxy`]; cheap to clone. Once the proxy is dropped, the
/// handle still answers but steers nothing.
#[derive(Debug, Clone)]
pub struct ProxyHandle {
    shared: Arc<Shared>,
}

impl ProxyHandle {
    /// Forwards again: ends [`ProxyMode::Down`] and [`ProxyMode::Blackhole`].
    pub fn up(&self) {
        self.shared.mode.send_replace(ProxyMode::Up);
    }

    /// Resets every new connection at once; the open ones carry on.
    pub fn down(&self) {
        self.shared.mode.send_replace(ProxyMode::Down);
    }

    /// Forwards nothing, in either direction, on any connection; see
    /// [`ProxyMode::Blackhole`].
    pub fn blackhole(&self) {
        self.shared.mode.send_replace(ProxyMode::Blackhole);
    }

    /// Ends a blackhole (or a down): the same as [`ProxyHandle::up`].
    pub fn restore(&self) {
        self.up();
    }

    /// Resets every open connection now (both sides get a TCP reset); new
    /// connections go through as the mode says.
    pub fn cut(&self) {
        let mut current = self.shared.cut.lock().unwrap_or_else(|e| e.into_inner());
        current.cancel();
        *current = CancellationToken::new();
    }

    /// Delays every chunk of data by `latency`, in each direction (a round
    /// trip takes twice as long); applies to data read from now on.
    /// Default: none.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.latency.send_replace(latency);
    }

    /// The latency added to each chunk, each way.
    pub fn latency(&self) -> Duration {
        *self.shared.latency.borrow()
    }

    /// The current mode.
    pub fn mode(&self) -> ProxyMode {
        *self.shared.mode.borrow()
    }

    /// Connections open through the proxy now.
    pub fn connections(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// Connections let through since the start (those reset by
    /// [`ProxyHandle::down`] not counted).
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }
}

/// A TCP proxy on `127.0.0.1` to one upstream address, steered through its
/// [`ProxyHandle`] (reached through `Deref`, or [`TcpProxy::handle`] for a
/// clone).
///
/// It owns its tasks: dropping it stops the listener (the port is closed)
/// and closes every connection.
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    handle: ProxyHandle,
    stop: CancellationToken,
    listener: JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on a free port of `127.0.0.1` and forwards each connection to
    /// `upstream` (`"host:port"` or a socket address, resolved once, now).
    ///
    /// Must be called within a tokio runtime.
    pub async fn start(upstream: impl tokio::net::ToSocketAddrs) -> io::Result<Self> {
        let upstream = tokio::net::lookup_host(upstream)
            .await?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address for upstream"))?;
        let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            mode: watch::Sender::new(ProxyMode::Up),
            latency: watch::Sender::new(Duration::ZERO),
            cut: Mutex::new(CancellationToken::new()),
            open: AtomicUsize::new(0),
            accepted: AtomicU64::new(0),
        });
        let stop = CancellationToken::new();
        let listener = tokio::spawn(serve(listener, upstream, shared.clone(), stop.clone()));
        Ok(Self {
            addr,
            upstream,
            handle: ProxyHandle { shared },
            stop,
            listener,
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address connections are forwarded to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// A handle to steer the proxy from elsewhere (another task).
    pub fn handle(&self) -> ProxyHandle {
        self.handle.clone()
    }

    /// An AMQP URL through the proxy, with the user, password and virtual
    /// host percent-encoded: `url_for("guest", "guest", "/")` gives
    /// `amqp://guest:guest@127.0.0.1:<port>/%2F`.
    pub fn url_for(&self, user: &str, password: &str, vhost: &str) -> String {
        format!(
            "amqp://{}:{}@{}/{}",
            encode(user),
            encode(password),
            self.addr,
            encode(vhost)
        )
    }
}

impl Deref for TcpProxy {
    type Target = ProxyHandle;
    fn deref(&self) -> &ProxyHandle {
        &self.handle
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.stop.cancel();
        // Dropping the listener task drops the connection tasks it owns.
        self.listener.abort();
    }
}

/// Percent-encodes everything but the URI's unreserved characters.
fn encode(part: &str) -> String {
    let mut out = String::with_capacity(part.len());
    for byte in part.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Accepts connections until stopped; owns the connection tasks.
async fn serve(
    listener: TcpListener,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    if *shared.mode.borrow() == ProxyMode::Down {
                        pipe::reset(client);
                        continue;
                    }
                    shared.accepted.fetch_add(1, Ordering::SeqCst);
                    let cut = shared.cut_token();
                    connections.spawn(pipe::run(client, upstream, shared.clone(), cut, stop.clone()));
                }
                // Out of file descriptors, say: wait a little rather than spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
        }
    }
    // Dropping the set aborts every connection task: their sockets close.
    connections.shutdown().await;
}

/// Connects to the upstream address; also used by the pipe.
async fn connect(upstream: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(upstream).await?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parts_are_percent_encoded() {
        assert_eq!(encode("/"), "%2F");
        assert_eq!(encode("prod"), "prod");
        assert_eq!(encode("p@ss:w/rd"), "p%40ss%3Aw%2Frd");
        assert_eq!(encode("a-b.c_d~e"), "a-b.c_d~e");
    }
}
