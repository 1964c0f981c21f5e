//! The TCP proxy against a local echo server.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use flow_events_testkit::proxy::{ProxyMode, TcpProxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Longest wait for something expected.
const WAIT: Duration = Duration::from_secs(5);

/// An echo server, stopped when dropped.
struct Echo {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Echo {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((mut s, _)) = listener.accept().await {
                conns.spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        Self { addr, task }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn round_trip(stream: &mut TcpStream, message: &[u8]) -> io::Result<Vec<u8>> {
    stream.write_all(message).await?;
    let mut back = vec![0; message.len()];
    stream.read_exact(&mut back).await?;
    Ok(back)
}

/// Whether the connection is closed (end of stream or reset) within `WAIT`.
async fn closed(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 16];
    matches!(
        tokio::time::timeout(WAIT, stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// Polls `check` until it holds, for at most `WAIT`.
async fn eventually(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "{what} not within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn forwards_both_ways_and_counts_connections() {
    let echo = Echo::start().await;
    let proxy = TcpProxy::start(echo.addr).await.expect("proxy");
    assert_eq!(proxy.upstream(), echo.addr);
    assert_eq!(proxy.mode(), ProxyMode::Up);
    let mut a = TcpStream::connect(proxy.addr()).await.expect("connect");
    let mut b = TcpStream::connect(proxy.addr()).await.expect("connect");
    assert_eq!(round_trip(&mut a, b"hello").await.expect("echo"), b"hello");
    let big = vec![7u8; 1 << 20];
    assert_eq!(round_trip(&mut b, &big).await.expect("echo"), big);
    assert_eq!(proxy.connections(), 2);
    assert_eq!(proxy.accepted(), 2);
    drop(a);
    eventually("one connection left", || proxy.connections() == 1).await;
    // The client's end of stream goes through: the echo server closes too.
    b.shutdown().await.expect("shutdown");
    assert!(closed(&mut b).await);
    eventually("no connection left", || proxy.connections() == 0).await;
}

#[tokio::test]
async fn down_resets_new_connections_and_keeps_open_ones() {
    let echo = Echo::start().await;
    let proxy = TcpProxy::start(echo.addr.to_string()).await.expect("proxy");
    let mut open = TcpStream::connect(proxy.addr()).await.expect("connect");
    assert_eq!(round_trip(&mut open, b"1").await.expect("echo"), b"1");

    proxy.down();
    let mut refused = TcpStream::connect(proxy.addr()).await.expect("tcp accept");
    assert!(round_trip(&mut refused, b"x").await.is_err());
    assert_eq!(round_trip(&mut open, b"2").await.expect("echo"), b"2");
    assert_eq!(proxy.accepted(), 1);

    proxy.up();
    let mut again = TcpStream::connect(proxy.addr()).await.expect("connect");
    assert_eq!(round_trip(&mut again, b"3").await.expect("echo"), b"3");
}

#[tokio::test]
async fn cut_resets_every_open_connection() {
    let echo = Echo::start().await;
    let proxy = TcpProxy::start(echo.addr).await.expect("proxy");
    let mut a = TcpStream::connect(proxy.addr()).await.expect("connect");
    let mut b = TcpStream::connect(proxy.addr()).await.expect("connect");
    round_trip(&mut a, b"a").await.expect("echo");
    round_trip(&mut b, b"b").await.expect("echo");

    proxy.handle().cut();
    assert!(closed(&mut a).await, "a is reset");
    assert!(closed(&mut b).await, "b is reset");
    eventually("no connection left", || proxy.connections() == 0).await;
    // A reset, not a clean close: the client sees ECONNRESET on its next read.
    let mut c = TcpStream::connect(proxy.addr()).await.expect("connect");
    round_trip(&mut c, b"c").await.expect("echo");
    proxy.cut();
    let mut buf = [0u8; 1];
    let err = tokio::time::timeout(WAIT, c.read(&mut buf))
        .await
        .expect("in time")
        .expect_err("a reset");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
}

#[tokio::test]
async fn blackhole_holds_everything_back_until_restored() {
    let echo = Echo::start().await;
    let proxy = TcpProxy::start(echo.addr).await.expect("proxy");
    let mut open = TcpStream::connect(proxy.addr()).await.expect("connect");
    round_trip(&mut open, b"before").await.expect("echo");

    proxy.blackhole();
    open.write_all(b"held").await.expect("write");
    let mut buf = [0u8; 4];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), open.read_exact(&mut buf))
            .await
            .is_err(),
        "nothing comes back through a blackhole"
    );
    // New connections are accepted, and held too.
    let mut late = TcpStream::connect(proxy.addr()).await.expect("connect");
    late.write_all(b"late").await.expect("write");
    eventually("two connections", || proxy.connections() == 2).await;

    proxy.restore();
    tokio::time::timeout(WAIT, open.read_exact(&mut buf))
        .await
        .expect("in time")
        .expect("read");
    assert_eq!(&buf, b"held");
    tokio::time::timeout(WAIT, late.read_exact(&mut buf))
        .await
        .expect("in time")
        .expect("read");
    assert_eq!(&buf, b"late");
    assert_eq!(
        round_trip(&mut open, b"after").await.expect("echo"),
        b"after"
    );
}

#[tokio::test]
async fn latency_is_added_each_way() {
    let echo = Echo::start().await;
    let proxy = TcpProxy::start(echo.addr).await.expect("proxy");
    let mut s = TcpStream::connect(proxy.addr()).await.expect("connect");
    round_trip(&mut s, b"warm").await.expect("echo");
    proxy.set_latency(Duration::from_millis(100));
    assert_eq!(proxy.latency(), Duration::from_millis(100));
    let started = Instant::now();
    round_trip(&mut s, b"slow").await.expect("echo");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(200), "{took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    // A delay line, not a throughput cap: many chunks in flight at once.
    let started = Instant::now();
    for _ in 0..20 {
        s.write_all(&[1u8; 1000]).await.expect("write");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut back = vec![0u8; 20_000];
    s.read_exact(&mut back).await.expect("read");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    proxy.set_latency(Duration::ZERO);
}

#[tokio::test]
async fn dropping_the_proxy_closes_everything() {
    let echo = Echo::start().await;
    let proxy = TcpProxy::start(echo.addr).await.expect("proxy");
    let addr = proxy.addr();
    let handle = proxy.handle();
    let mut open = TcpStream::connect(addr).await.expect("connect");
    round_trip(&mut open, b"x").await.expect("echo");
    drop(proxy);
    assert!(closed(&mut open).await, "the open connection is closed");
    eventually("no connection left", || handle.connections() == 0).await;
    // The listener is gone: the port refuses connections.
    let deadline = Instant::now() + WAIT;
    loop {
        match TcpStream::connect(addr).await {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => break,
            Err(e) => panic!("{e}"),
            Ok(_) => {
                assert!(Instant::now() < deadline, "still listening");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    // The handle outlives the proxy and steers nothing.
    handle.cut();
    handle.down();
}
