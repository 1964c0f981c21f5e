//! One proxied connection: two directions, each a delay line that holds its
//! data back while the proxy is a blackhole.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{ProxyMode, Shared};

/// Bytes read at once.
const CHUNK: usize = 16 * 1024;
/// Chunks read ahead of the writer (they wait out the latency).
const CHUNKS_AHEAD: usize = 64;

/// Closes `stream` with a TCP reset rather than a clean close.
pub(super) fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// Counts an open connection for as long as it lives.
struct Open<'a>(&'a Shared);

impl<'a> Open<'a> {
    fn new(shared: &'a Shared) -> Self {
        shared.open.fetch_add(1, Ordering::SeqCst);
        Self(shared)
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Forwards between `client` and a new connection to `upstream` until both
/// sides are done, an error, a cut or the proxy's end.
pub(super) async fn run(
    client: TcpStream,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    cut: CancellationToken,
    stop: CancellationToken,
) {
    let _open = Open::new(&shared);
    let _ = client.set_nodelay(true);
    let server = tokio::select! {
        _ = cut.cancelled() => return reset(client),
        _ = stop.cancelled() => return reset(client),
        connected = super::connect(upstream) => match connected {
            Ok(server) => server,
            Err(_) => return reset(client),
        },
    };
    let (mut client, mut server) = (client, server);
    let clean = {
        let (client_read, client_write) = client.split();
        let (server_read, server_write) = server.split();
        let both = async {
            tokio::try_join!(
                forward(client_read, server_write, &shared),
                forward(server_read, client_write, &shared),
            )
        };
        tokio::select! {
            _ = cut.cancelled() => false,
            _ = stop.cancelled() => false,
            done = both => done.is_ok(),
        }
    };
    if !clean {
        // A cut, or one side failed (reset, say): reset both, as a broken
        // network path would.
        reset(client);
        reset(server);
    }
}

/// Waits until the proxy forwards (not a blackhole).
async fn flowing(mode: &mut watch::Receiver<ProxyMode>) {
    // The sender lives as long as the shared state, which outlives this.
    let _ = mode.wait_for(|m| *m != ProxyMode::Blackhole).await;
}

/// Copies `from` to `to`, each chunk delayed by the latency of the moment it
/// was read; passes the end of stream on. Nothing moves while the proxy is a
/// blackhole: a chunk read just before waits for the end of it.
async fn forward(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    shared: &Shared,
) -> io::Result<()> {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(CHUNKS_AHEAD);
    let mut read_mode = shared.mode.subscribe();
    let mut write_mode = shared.mode.subscribe();
    let reading = async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            flowing(&mut read_mode).await;
            let n = from.read(&mut buf).await?;
            if n == 0 {
                // Dropping the sender lets the writer pass the end on.
                return Ok::<_, io::Error>(());
            }
            let due = Instant::now() + *shared.latency.borrow();
            if tx.send((due, buf[..n].to_vec())).await.is_err() {
                return Ok(());
            }
        }
    };
    let writing = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            flowing(&mut write_mode).await;
            to.write_all(&chunk).await?;
        }
        to.shutdown().await
    };
    tokio::try_join!(reading, writing).map(|_| ())
}
