//! Steady publishing and consuming through `Resilient`, for the tests that
//! disturb the broker while events flow.

use std::time::{Duration, Instant};

use flow_events_amqp::{AmqpBackend, AmqpConfig};
use flow_events_core::{
    Config, ConfigBuilder, ConnectionState, EventSink, EventSource, PublishOutcome, Resilient,
    Subscription, SubscriptionHandle, TopicPattern,
};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;

use super::{WAIT, until_state};
use flow_events_testkit::received::{Received, numbered};

/// The heartbeat of the fault tests: a dead peer is noticed within seconds.
pub const HEARTBEAT: Duration = Duration::from_secs(2);

/// Longest wait for a drain or a whole delivery.
pub const LONG: Duration = Duration::from_secs(120);

/// Quick reconnects and a buffer large enough for every test.
pub fn fast(c: ConfigBuilder) -> ConfigBuilder {
    c.with_retry_delay(Duration::from_millis(100))
        .with_max_retry_delay(Duration::from_secs(1))
        .with_max_pending_events(50_000)
        .with_publish_timeout(Duration::from_secs(10))
}

/// A short heartbeat and short connect and operation timeouts.
pub fn short_heartbeat(o: AmqpConfig) -> AmqpConfig {
    o.with_heartbeat(HEARTBEAT)
        .with_connect_timeout(Duration::from_secs(3))
        .with_operation_timeout(Duration::from_secs(5))
}

/// `Resilient` over `backend` with `config`, started.
pub async fn start(backend: AmqpBackend, config: &Config) -> Resilient {
    Resilient::builder(backend)
        .with_config(config.clone())
        .start()
        .await
        .expect("start")
}

/// The subscription `name` to every `fault.*` event, 100 deliveries ahead.
pub fn subscription(name: &str) -> Subscription {
    Subscription::new(name, TopicPattern::new("fault.#").expect("pattern"))
        .expect("subscription")
        .with_prefetch(100)
}

/// Whether `s` is `connected`.
pub fn connected(s: ConnectionState) -> bool {
    s == ConnectionState::Connected
}

/// A consumer of `name` on `backend`, connected and subscribed.
pub async fn consumer(
    backend: AmqpBackend,
    config: &Config,
    name: &str,
    received: &Received,
) -> (Resilient, SubscriptionHandle) {
    let consumer = start(backend, config).await;
    until_state("consumer connected", &consumer, WAIT, connected).await;
    let handle = consumer
        .subscribe(subscription(name), received.handler())
        .await
        .expect("subscribe");
    (consumer, handle)
}

/// Messages ready in `queue`, read on a connection of its own.
pub async fn ready(queue: &str) -> u32 {
    let (conn, channel) = super::raw().await;
    let count = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("passive declare")
        .message_count();
    let _ = conn.close(200, "done".into()).await;
    count
}

/// What the publishing tasks saw.
#[derive(Debug, Default, Clone, Copy)]
pub struct Published {
    pub confirmed: u64,
    pub buffered: u64,
    /// The longest a `publish` call took.
    pub longest: Duration,
    /// How long publishing took.
    pub took: Duration,
}

/// Publishes events `0..n` from `tasks` tasks, each one event per `pace`;
/// every publish must be accepted (confirmed or buffered).
pub async fn publish_paced(publisher: &Resilient, n: u64, tasks: u64, pace: Duration) -> Published {
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for first in 0..tasks {
        let publisher = publisher.clone();
        set.spawn(async move {
            let mut mine = Published::default();
            let mut tick = tokio::time::interval(pace);
            for seq in (first..n).step_by(usize::try_from(tasks).expect("tasks")) {
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
        let mine = done.expect("publishing task");
        all.confirmed += mine.confirmed;
        all.buffered += mine.buffered;
        all.longest = all.longest.max(mine.longest);
    }
    all.took = started.elapsed();
    all
}
