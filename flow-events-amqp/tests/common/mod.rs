//! Helpers shared by the integration tests: broker check, unique names, raw
//! lapin access, and cleanup of everything a test declared.

#![allow(dead_code, unreachable_pub)]

pub mod broker;
pub mod cluster;
pub mod logs;
pub mod python;
pub mod traffic;

use std::sync::Arc;
use std::time::Duration;

use flow_events_amqp::{AmqpBackend, AmqpConfig, AmqpConfigBuilder};
use flow_events_core::{Backend, Config, Session};
use flow_events_testkit::proxy::TcpProxy;
use flow_events_testkit::server::Server;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};

/// The test broker.
pub const RABBITMQ: Server = Server::new("RabbitMQ", "127.0.0.1:5672");
pub const BROKER: &str = RABBITMQ.addr();
pub const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Longest wait for anything a test expects to happen.
pub const WAIT: Duration = Duration::from_secs(10);

/// Whether the broker is reachable. Not reachable: fails under `CI=true`,
/// otherwise prints why the test is skipped.
pub fn broker_available(test: &str) -> bool {
    RABBITMQ.available(test)
}

/// Returns from the test when the broker is not there (outside CI).
#[macro_export]
macro_rules! require_broker {
    ($name:expr) => {
        flow_events_testkit::require!(common::RABBITMQ, $name)
    };
}

/// A proxy in front of the test broker, whose connections can be faulted.
pub async fn proxy() -> TcpProxy {
    RABBITMQ.proxy().await
}

/// The test broker's URL through `proxy`.
pub fn url_through(proxy: &TcpProxy) -> String {
    proxy.url_for("guest", "guest", "/")
}

/// A name unique to this run: `prefix` and a random suffix.
pub fn unique(prefix: &str) -> String {
    format!("test.{prefix}.{}", uuid::Uuid::now_v7().simple())
}

/// Opens a plain lapin connection and channel to the test broker.
pub async fn raw() -> (Connection, Channel) {
    let conn = Connection::connect(URL, ConnectionProperties::default())
        .await
        .expect("raw connection");
    let channel = conn.create_channel().await.expect("raw channel");
    (conn, channel)
}

/// Deletes, when dropped (also on a panic), the queues and exchanges a test
/// declared; [`Cleanup::new`] with [`URL`] for the test broker.
pub use flow_events_testkit::amqp::Cleanup;

/// What a subscription declares, for [`Cleanup`].
pub trait CleanupSubscription {
    /// Deletes a subscription's queue, dead-letter queue and delay queues at
    /// the end.
    fn subscription(&mut self, name: &str) -> &mut Self;
}

impl CleanupSubscription for Cleanup {
    fn subscription(&mut self, name: &str) -> &mut Self {
        for delay in flow_events_amqp::delay_queues(name) {
            self.queue(&delay);
        }
        self.queue(name).queue(&format!("{name}.dead"))
    }
}

// Not every test binary waits; those that do find the waits here.
#[allow(unused_imports)]
pub use flow_events_testkit::wait::{until, until_state};

/// A test's own exchange, config, backend and cleanup.
pub struct Fixture {
    pub exchange: String,
    pub config: Config,
    pub options: AmqpConfig,
    pub backend: AmqpBackend,
    pub cleanup: Cleanup,
}

impl Fixture {
    pub fn new(test: &str) -> Self {
        Self::with(test, |c| c, |o| o)
    }

    /// A fixture whose config and options are adjusted by `config` and `options`.
    pub fn with(
        test: &str,
        config: impl FnOnce(flow_events_core::ConfigBuilder) -> flow_events_core::ConfigBuilder,
        options: impl FnOnce(AmqpConfigBuilder) -> AmqpConfigBuilder,
    ) -> Self {
        let exchange = unique(test);
        let config = config(Config::builder().with_publish_timeout(WAIT))
            .build()
            .expect("config");
        let options = options(
            AmqpConfig::builder()
                .with_url(URL)
                .with_exchange(&exchange)
                .with_app_id(format!("flow-events-test-{test}")),
        )
        .build()
        .expect("AMQP config");
        let backend = AmqpBackend::new(&config, options.clone());
        let mut cleanup = Cleanup::new(URL);
        cleanup
            .exchange(&exchange)
            .exchange(&format!("{exchange}.dlx"));
        Self {
            exchange,
            config,
            options,
            backend,
            cleanup,
        }
    }

    /// Another backend on the same exchange with the same settings, to `url`
    /// (the broker through a proxy, say).
    pub fn backend_to(&self, url: &str) -> AmqpBackend {
        let options = self.options.clone().into_builder().with_url(url);
        AmqpBackend::new(&self.config, options.build().expect("AMQP config"))
    }

    pub async fn session(&self) -> Arc<dyn Session> {
        self.backend.connect().await.expect("connect")
    }

    /// A new queue bound to the test exchange with `pattern`, deleted at the end.
    pub async fn raw_queue(&mut self, channel: &Channel, pattern: &str) -> String {
        self.bound_queue(channel, pattern, false).await
    }

    /// A new durable queue bound to the test exchange with `pattern` (the
    /// broker confirms persistent messages to it once on disk), deleted at
    /// the end.
    pub async fn durable_queue(&mut self, channel: &Channel, pattern: &str) -> String {
        self.bound_queue(channel, pattern, true).await
    }

    async fn bound_queue(&mut self, channel: &Channel, pattern: &str, durable: bool) -> String {
        let queue = unique("raw");
        self.cleanup.queue(&queue);
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    durable,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("declare raw queue");
        channel
            .queue_bind(
                queue.as_str().into(),
                self.exchange.as_str().into(),
                pattern.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind raw queue");
        queue
    }
}

/// A durable fanout exchange of the test's own, declared with plain lapin
/// (the backend declares a topic exchange: the same name with other
/// settings); deleted when the returned guard is dropped.
pub async fn fanout_exchange() -> (String, Cleanup) {
    let exchange = unique("fanout");
    let mut cleanup = Cleanup::new(URL);
    cleanup.exchange(&exchange);
    let (conn, channel) = raw().await;
    channel
        .exchange_declare(
            exchange.as_str().into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("declare fanout");
    let _ = conn.close(200, "declared".into()).await;
    (exchange, cleanup)
}

/// Messages ready in `queue` (not counting unacked ones).
pub async fn ready(channel: &Channel, queue: &str) -> u32 {
    channel
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
        .message_count()
}

/// The next message of `queue`, read (and acked) with plain lapin.
pub async fn next_raw(channel: &Channel, queue: &str) -> lapin::message::Delivery {
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("raw consume");
    let delivery = tokio::time::timeout(WAIT, consumer.next())
        .await
        .unwrap_or_else(|_| panic!("no message in {queue} within {WAIT:?}"))
        .expect("consumer ended")
        .expect("delivery");
    delivery
        .ack(BasicAckOptions::default())
        .await
        .expect("raw ack");
    channel
        .basic_cancel(consumer.tag(), Default::default())
        .await
        .expect("cancel");
    delivery
}
