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

use flow_events_amqp::{AmqpBackend, AmqpConfig};
use flow_events_core::{Backend, Config, Session};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};

pub const BROKER: &str = "127.0.0.1:5672";
pub const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Longest wait for anything a test expects to happen.
pub const WAIT: Duration = Duration::from_secs(10);

/// Whether the broker is reachable. Not reachable: fails under `CI=true`,
/// otherwise prints why the test is skipped.
pub fn broker_available(test: &str) -> bool {
    flow_events_testkit::server::reachable("RabbitMQ", BROKER, test)
}

/// Returns from the test when the broker is not there (outside CI).
#[macro_export]
macro_rules! require_broker {
    ($name:expr) => {
        if !common::broker_available($name) {
            return;
        }
    };
}

/// A proxy in front of the test broker, whose connections can be faulted.
pub async fn proxy() -> flow_events_testkit::proxy::TcpProxy {
    flow_events_testkit::proxy::TcpProxy::start(BROKER)
        .await
        .expect("start the proxy")
}

/// The test broker's URL through `proxy`.
pub fn url_through(proxy: &flow_events_testkit::proxy::TcpProxy) -> String {
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
/// declared.
#[derive(Debug, Default)]
pub struct Cleanup {
    queues: Vec<String>,
    exchanges: Vec<String>,
    /// Where to delete them: the first of these that answers (the test
    /// broker when empty).
    urls: Vec<String>,
}

impl Cleanup {
    /// A cleanup on the broker at the first of `urls` that answers (the
    /// nodes of a cluster, say).
    pub fn on(urls: &[&str]) -> Self {
        Self {
            queues: Vec::new(),
            exchanges: Vec::new(),
            urls: urls.iter().map(|u| (*u).to_owned()).collect(),
        }
    }

    pub fn queue(&mut self, name: &str) -> &mut Self {
        self.queues.push(name.to_owned());
        self
    }
    pub fn exchange(&mut self, name: &str) -> &mut Self {
        self.exchanges.push(name.to_owned());
        self
    }
    /// A subscription's queue, dead-letter queue and delay queues.
    pub fn subscription(&mut self, name: &str) -> &mut Self {
        for delay in flow_events_amqp::delay_queues(name) {
            self.queue(&delay);
        }
        self.queue(name).queue(&format!("{name}.dead"))
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let queues = std::mem::take(&mut self.queues);
        let exchanges = std::mem::take(&mut self.exchanges);
        if queues.is_empty() && exchanges.is_empty() {
            return;
        }
        let mut urls = std::mem::take(&mut self.urls);
        if urls.is_empty() {
            urls.push(URL.to_owned());
        }
        // A runtime of its own on a thread of its own: this may run inside
        // the test's runtime, where blocking on a future is not allowed.
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let mut connected = None;
                for url in &urls {
                    if let Ok(Ok(conn)) = tokio::time::timeout(
                        WAIT,
                        Connection::connect(url, ConnectionProperties::default()),
                    )
                    .await
                    {
                        connected = Some(conn);
                        break;
                    }
                }
                let Some(conn) = connected else {
                    return;
                };
                for q in queues {
                    if let Ok(ch) = conn.create_channel().await {
                        let _ = ch
                            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                            .await;
                    }
                }
                for x in exchanges {
                    if let Ok(ch) = conn.create_channel().await {
                        let _ = ch
                            .exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
                            .await;
                    }
                }
                let _ = conn.close(200, "cleanup".into()).await;
            });
        });
        let _ = done.join();
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
        options: impl FnOnce(AmqpConfig) -> AmqpConfig,
    ) -> Self {
        let exchange = unique(test);
        let config = config(Config::builder().with_publish_timeout(WAIT))
            .build()
            .expect("config");
        let options = options(
            AmqpConfig::new()
                .with_url(URL)
                .with_exchange(&exchange)
                .with_app_id(format!("flow-events-test-{test}")),
        );
        let backend = AmqpBackend::new(&config, options.clone());
        let mut cleanup = Cleanup::default();
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
        AmqpBackend::new(&self.config, self.options.clone().with_url(url))
    }

    pub async fn session(&self) -> Arc<dyn Session> {
        self.backend.connect().await.expect("connect")
    }

    /// A new queue bound to the test exchange with `pattern`, deleted at the end.
    pub async fn raw_queue(&mut self, channel: &Channel, pattern: &str) -> String {
        let queue = unique("raw");
        self.cleanup.queue(&queue);
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions::default(),
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
