//! The traffic helpers against the memory broker and a local listener.

use std::time::Duration;

use flow_events_core::{Config, ConnectionMonitor, Resilient, SubscriptionHandle};
use flow_events_memory::MemoryBroker;
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

use super::{
    CONNECT, Cutter, buffered_while_down, consumer, fast, publish_paced, publish_until, recovered,
    start,
};
use crate::faulty::Faulty;
use crate::proxy::TcpProxy;
use crate::received::Received;
use crate::steps::subscription;
use crate::wait::until_connected;

fn config() -> Config {
    fast(Config::builder()).build().expect("config")
}

/// A consumer of every `fault.*` event on `broker`, and what it receives.
async fn consuming(
    broker: &MemoryBroker,
    config: &Config,
    name: &str,
) -> (Resilient, SubscriptionHandle, Received) {
    let received = Received::new();
    let subscription = subscription(name, "fault.#");
    let (consumer, handle) = consumer(broker.backend(), config, subscription, &received).await;
    (consumer, handle, received)
}

#[tokio::test]
async fn paced_publishes_from_many_tasks_are_all_confirmed_and_consumed() {
    let broker = MemoryBroker::new();
    let config = config();
    let (consumer, handle, received) = consuming(&broker, &config, "paced").await;
    let publisher = start(broker.backend(), &config).await;
    until_connected(&publisher, CONNECT).await;
    let published = publish_paced(&publisher, 200, 4, Duration::from_millis(1)).await;
    assert_eq!(published.confirmed, 200, "{published}");
    assert_eq!(published.buffered, 0);
    received.wait_distinct(200, CONNECT).await;
    handle.close().await;
    consumer.shutdown(CONNECT).await;
    publisher.shutdown(CONNECT).await;
}

#[tokio::test]
async fn events_buffered_while_down_are_delivered_once_it_is_back() {
    let broker = MemoryBroker::new();
    let config = config();
    let (consumer, handle, received) = consuming(&broker, &config, "downup").await;
    let (backend, faults) = Faulty::wrap(broker.backend());
    faults.go_down();
    let publisher = start(backend, &config).await;
    buffered_while_down(&publisher, 50).await;
    recovered(&publisher, &received, 50, CONNECT, || faults.come_up()).await;
    assert_eq!(received.first_order(), (0..50).collect::<Vec<_>>());
    assert_eq!(publisher.status().confirmed, 50);
    handle.close().await;
    consumer.shutdown(CONNECT).await;
    publisher.shutdown(CONNECT).await;
}

#[tokio::test]
async fn publish_until_ends_with_its_events_or_when_stopped() {
    let broker = MemoryBroker::new();
    let publisher = start(broker.backend(), &config()).await;
    until_connected(&publisher, CONNECT).await;
    let pace = Duration::from_millis(1);
    let bounded = publish_until(publisher.clone(), 0..5, pace, CancellationToken::new());
    let calls = bounded.await.expect("publishing");
    assert_eq!((calls.ids.len(), calls.confirmed), (5, 5));

    let stop = CancellationToken::new();
    let endless = publish_until(publisher.clone(), 5.., pace, stop.clone());
    crate::wait::until("some published", CONNECT, || {
        publisher.status().confirmed >= 10
    })
    .await;
    stop.cancel();
    let calls = endless.await.expect("publishing");
    assert!(!calls.ids.is_empty());
    assert_eq!(calls.ids.len(), calls.confirmed + calls.buffered);
    publisher.shutdown(CONNECT).await;
}

#[tokio::test]
async fn the_cutter_cuts_the_proxys_connections_until_stopped() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let upstream = listener.local_addr().expect("addr");
    // Holds every accepted connection open.
    let server = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let proxy = TcpProxy::start(upstream).await.expect("proxy");
    let mut client = tokio::net::TcpStream::connect(proxy.addr())
        .await
        .expect("connect");
    let cutter = Cutter::start(proxy.handle(), Duration::from_millis(20));
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(CONNECT, client.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0) | Err(_))),
        "the connection is cut: {read:?}"
    );
    assert!(cutter.stop().await >= 1);
    server.abort();
}
