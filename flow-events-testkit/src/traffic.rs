//! Steady publishing and consuming through [`Resilient`], for the fault
//! tests of every backend, which disturb the broker while events flow: a
//! publisher and a consumer started, events published at a pace (from many
//! tasks, or from one until stopped), the proxy's connections cut at an
//! interval.

use std::time::{Duration, Instant};

use flow_events_core::{
    Backend, Config, ConfigBuilder, ConnectionMonitor, ConnectionState, EventId, EventSink,
    EventSource, HealthStatus, PublishOutcome, Resilient, Subscription, SubscriptionHandle,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::proxy::ProxyHandle;
use crate::received::{Received, numbered};
use crate::wait::{until, until_connected, until_state};

/// Longest wait for a drain or a whole delivery.
pub const LONG: Duration = Duration::from_secs(120);

/// Longest wait for a started publisher or consumer to connect.
pub const CONNECT: Duration = Duration::from_secs(10);

/// Quick reconnects (100 ms, at most 1 s apart), a buffer of 50 000 events,
/// large enough for every fault test, and a publish timeout of 10 s.
pub fn fast(c: ConfigBuilder) -> ConfigBuilder {
    c.with_retry_delay(Duration::from_millis(100))
        .with_max_retry_delay(Duration::from_secs(1))
        .with_max_pending_events(50_000)
        .with_publish_timeout(Duration::from_secs(10))
}

/// Whether `s` is [`ConnectionState::Connected`].
pub fn connected(s: ConnectionState) -> bool {
    s == ConnectionState::Connected
}

/// [`Resilient`] over `backend` with `config`, started (not waiting for a
/// connection); panics when the start fails.
pub async fn start(backend: impl Backend, config: &Config) -> Resilient {
    Resilient::builder(backend)
        .with_config(config.clone())
        .start()
        .await
        .unwrap_or_else(|e| panic!("starting the decorator: {e}"))
}

/// A consumer on `backend`, connected within [`CONNECT`] and subscribed to
/// `subscription` with `received`'s handler.
pub async fn consumer(
    backend: impl Backend,
    config: &Config,
    subscription: Subscription,
    received: &Received,
) -> (Resilient, SubscriptionHandle) {
    let consumer = start(backend, config).await;
    until_connected(&consumer, CONNECT).await;
    let handle = consumer
        .subscribe(subscription, received.handler())
        .await
        .unwrap_or_else(|e| panic!("subscribing: {e}"));
    (consumer, handle)
}

/// What the publishing tasks of [`publish_paced`] saw.
#[derive(Debug, Default, Clone, Copy)]
pub struct Published {
    /// Publishes answered [`PublishOutcome::Confirmed`].
    pub confirmed: u64,
    /// Publishes answered [`PublishOutcome::Buffered`].
    pub buffered: u64,
    /// The longest a `publish` call took.
    pub longest: Duration,
    /// How long publishing took.
    pub took: Duration,
}

impl std::fmt::Display for Published {
    /// For the figures a fault test prints: how long publishing took and
    /// how the publishes were answered.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "in {:?} ({} confirmed at once, {} buffered, longest publish {:?})",
            self.took, self.confirmed, self.buffered, self.longest
        )
    }
}

/// Publishes the events `0..n` of [`numbered`] from `tasks` tasks, each one
/// event per `pace`; every publish must be accepted (confirmed or buffered).
pub async fn publish_paced(publisher: &Resilient, n: u64, tasks: u64, pace: Duration) -> Published {
    let started = Instant::now();
    let step = usize::try_from(tasks).unwrap_or_else(|_| panic!("{tasks} tasks"));
    let mut set = tokio::task::JoinSet::new();
    for first in 0..tasks {
        let publisher = publisher.clone();
        set.spawn(async move {
            let mut mine = Published::default();
            let mut tick = tokio::time::interval(pace);
            for seq in (first..n).step_by(step) {
                tick.tick().await;
                let one = Instant::now();
                match publisher.publish(numbered(seq)).await {
                    Ok(PublishOutcome::Confirmed) => mine.confirmed += 1,
                    Ok(PublishOutcome::Buffered { .. }) => mine.buffered += 1,
                    other => panic!("event {seq}: {other:?}"),
                }
                mine.longest = mine.longest.max(one.elapsed());
            }
            mine
        });
    }
    let mut all = Published::default();
    while let Some(done) = set.join_next().await {
        let mine = done.unwrap_or_else(|e| panic!("a publishing task: {e}"));
        all.confirmed += mine.confirmed;
        all.buffered += mine.buffered;
        all.longest = all.longest.max(mine.longest);
    }
    all.took = started.elapsed();
    all
}

/// What the task of [`publish_until`] was answered.
#[derive(Debug, Default)]
pub struct Calls {
    /// The ids of the events published, in order.
    pub ids: Vec<EventId>,
    /// Publishes answered [`PublishOutcome::Confirmed`].
    pub confirmed: usize,
    /// Publishes answered [`PublishOutcome::Buffered`].
    pub buffered: usize,
    /// The longest a `publish` call took.
    pub slowest: Duration,
}

/// A task that publishes the events `seqs` of [`numbered`], one every
/// `pace`, until they are all published or `stop` is cancelled; every
/// publish must be accepted (confirmed or buffered).
pub fn publish_until(
    publisher: Resilient,
    seqs: impl IntoIterator<Item = u64, IntoIter: Send> + Send + 'static,
    pace: Duration,
    stop: CancellationToken,
) -> JoinHandle<Calls> {
    tokio::spawn(async move {
        let mut calls = Calls::default();
        let mut tick = tokio::time::interval(pace);
        for seq in seqs {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            let event = numbered(seq);
            let id = event.id();
            let started = Instant::now();
            let outcome = publisher.publish(event).await;
            calls.slowest = calls.slowest.max(started.elapsed());
            match outcome {
                Ok(PublishOutcome::Confirmed) => calls.confirmed += 1,
                Ok(PublishOutcome::Buffered { .. }) => calls.buffered += 1,
                other => panic!("event {seq}: {other:?}"),
            }
            calls.ids.push(id);
        }
        calls
    })
}

/// Publishes the events `0..n` of [`numbered`] to `publisher`, whose broker
/// is unreachable: each must be buffered. Then waits for a connection
/// attempt to have failed and checks what the publisher shows: `n` events
/// pending, not connected, a connection error, health degraded. Returns how
/// long the publishes took.
pub async fn buffered_while_down(publisher: &Resilient, n: u64) -> Duration {
    let started = Instant::now();
    for seq in 0..n {
        let outcome = publisher.publish(numbered(seq)).await;
        assert!(
            matches!(outcome, Ok(PublishOutcome::Buffered { .. })),
            "{seq}: {outcome:?}"
        );
    }
    let took = started.elapsed();
    // The first connection attempt runs beside the publishes: wait for it to
    // have failed before reading its error.
    until("a refused connection attempt", CONNECT, || {
        publisher.status().last_error.is_some()
    })
    .await;
    let status = publisher.status();
    assert_eq!(
        status.pending_events,
        usize::try_from(n).unwrap_or(usize::MAX)
    );
    assert!(!status.connected);
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.starts_with("connection error")),
        "{:?}",
        status.last_error
    );
    assert_eq!(publisher.health("test").status, HealthStatus::Degraded);
    took
}

/// How long a publisher took to recover, from the moment its broker came
/// back (see [`recovered`]).
#[derive(Debug, Clone, Copy)]
pub struct Recovery {
    /// Until it was connected again.
    pub connected: Duration,
    /// Until its buffer was drained (every event confirmed).
    pub drained: Duration,
    /// Until every event had been delivered.
    pub delivered: Duration,
}

/// Waits, from `back` (when the broker came back), until `publisher` is
/// connected (within `reconnect`), its buffer is drained and `received` has
/// `n` distinct events (each within [`LONG`]); returns how long each took.
pub async fn recovered(
    publisher: &Resilient,
    received: &Received,
    n: usize,
    back: Instant,
    reconnect: Duration,
) -> Recovery {
    until_state("publisher reconnected", publisher, reconnect, connected).await;
    let connected = back.elapsed();
    until("buffer drained", LONG, || {
        publisher.status().pending_events == 0
    })
    .await;
    let drained = back.elapsed();
    received.wait_distinct(n, LONG).await;
    Recovery {
        connected,
        drained,
        delivered: back.elapsed(),
    }
}

/// Cuts every connection through a proxy at an interval until stopped.
#[derive(Debug)]
pub struct Cutter {
    stop: CancellationToken,
    task: JoinHandle<u32>,
}

impl Cutter {
    /// Cuts the connections of `proxy` every `every`, the first cut one
    /// interval from now.
    pub fn start(proxy: ProxyHandle, every: Duration) -> Self {
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut cuts = 0u32;
                let mut tick = tokio::time::interval(every);
                tick.tick().await;
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return cuts,
                        _ = tick.tick() => {
                            proxy.cut();
                            cuts += 1;
                        }
                    }
                }
            }
        });
        Self { stop, task }
    }

    /// Stops cutting; returns how many cuts there were.
    pub async fn stop(self) -> u32 {
        self.stop.cancel();
        self.task
            .await
            .unwrap_or_else(|e| panic!("the cutting task: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use flow_events_core::{Config, ConnectionMonitor};
    use flow_events_memory::MemoryBroker;
    use tokio::io::AsyncReadExt;
    use tokio_util::sync::CancellationToken;

    use super::{
        CONNECT, Cutter, buffered_while_down, consumer, fast, publish_paced, publish_until,
        recovered, start,
    };
    use crate::faulty::Faulty;
    use crate::proxy::TcpProxy;
    use crate::received::Received;
    use crate::steps::subscription;
    use crate::wait::until_connected;

    fn config() -> Config {
        fast(Config::builder()).build().expect("config")
    }

    #[tokio::test]
    async fn paced_publishes_from_many_tasks_are_all_confirmed_and_consumed() {
        let broker = MemoryBroker::new();
        let config = config();
        let received = Received::new();
        let (consumer, handle) = consumer(
            broker.backend(),
            &config,
            subscription("paced", "fault.#"),
            &received,
        )
        .await;
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
        let received = Received::new();
        let (consumer, handle) = consumer(
            broker.backend(),
            &config,
            subscription("downup", "fault.#"),
            &received,
        )
        .await;
        let (backend, faults) = Faulty::wrap(broker.backend());
        faults.go_down();
        let publisher = start(backend, &config).await;
        buffered_while_down(&publisher, 50).await;
        faults.come_up();
        recovered(&publisher, &received, 50, Instant::now(), CONNECT).await;
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
}
