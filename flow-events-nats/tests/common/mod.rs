//! Helpers shared by the integration tests: server check, names of their
//! own, raw async-nats access, and deletion of every stream a test made.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use flow_events_core::{Backend, Config, ConfigBuilder, Session};
use flow_events_nats::{NatsBackend, NatsConfig, NatsConfigBuilder};
use flow_events_testkit::proxy::TcpProxy;
use flow_events_testkit::server::Server;

/// The test server.
pub const NATS: Server = Server::new("NATS", "127.0.0.1:4222");
pub const URL: &str = "nats://127.0.0.1:4222";

/// Longest wait for anything a test expects to happen.
pub const WAIT: Duration = Duration::from_secs(10);

/// Returns from the test when the server is not there (outside CI).
#[macro_export]
macro_rules! require_server {
    ($name:expr) => {
        flow_events_testkit::require!(common::NATS, $name)
    };
}

/// A proxy in front of the test server, whose connections can be faulted.
pub async fn proxy() -> TcpProxy {
    NATS.proxy().await
}

/// The test server's URL through `proxy`.
pub fn url_through(proxy: &TcpProxy) -> String {
    format!("nats://{}", proxy.addr())
}

/// A random suffix unique to this run.
pub fn suffix() -> String {
    format!("{:012x}", fastrand::u64(..) >> 16)
}

/// A plain async-nats client and JetStream context on the test server.
pub async fn raw() -> (async_nats::Client, async_nats::jetstream::Context) {
    let client = async_nats::connect(URL).await.expect("raw connection");
    let js = async_nats::jetstream::new(client.clone());
    (client, js)
}

/// Deletes, when dropped (also on a panic), the streams a test made (their
/// consumers go with them).
#[derive(Debug, Default)]
pub struct Cleanup {
    streams: Vec<String>,
}

impl Cleanup {
    pub fn stream(&mut self, name: &str) -> &mut Self {
        self.streams.push(name.to_owned());
        self
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let streams = std::mem::take(&mut self.streams);
        if streams.is_empty() {
            return;
        }
        flow_events_testkit::cleanup::run_to_end(async move {
            let Ok(Ok(client)) = tokio::time::timeout(WAIT, async_nats::connect(URL)).await else {
                eprintln!("clean-up: the server does not answer; streams {streams:?} are left");
                return;
            };
            let js = async_nats::jetstream::new(client);
            for s in streams {
                let _ = tokio::time::timeout(WAIT, js.delete_stream(&s)).await;
            }
        });
    }
}

// Not every test binary waits; those that do find the waits here.
#[allow(unused_imports)]
pub use flow_events_testkit::wait::{until, until_state};

/// A test's own stream and subject prefix, config, backend and cleanup.
pub struct Fixture {
    pub stream: String,
    pub prefix: String,
    pub config: Config,
    pub nats: NatsConfig,
    pub backend: NatsBackend,
    pub cleanup: Cleanup,
}

impl Fixture {
    pub fn new(test: &str) -> Self {
        Self::with(test, |c| c, |n| n)
    }

    /// A fixture whose settings are adjusted by `config` and `nats`.
    pub fn with(
        test: &str,
        config: impl FnOnce(ConfigBuilder) -> ConfigBuilder,
        nats: impl FnOnce(NatsConfigBuilder) -> NatsConfigBuilder,
    ) -> Self {
        let id = suffix();
        let stream = format!("TEST_{}_{id}", test.replace(['.', ' ', '-'], "_"));
        let prefix = format!("test.{test}.{id}");
        let config = config(Config::builder().with_publish_timeout(WAIT))
            .build()
            .expect("config");
        let nats = nats(
            NatsConfig::builder()
                .with_url(URL)
                .with_stream(&stream)
                .with_subject_prefix(&prefix)
                .with_retry_delay(Duration::from_millis(200)),
        )
        .build()
        .expect("nats config");
        let backend = NatsBackend::new(&config, nats.clone())
            .with_connection_name(format!("flow-events-test-{test}"));
        let mut cleanup = Cleanup::default();
        cleanup.stream(&stream).stream(&nats.dead_letter_stream());
        Self {
            stream,
            prefix,
            config,
            nats,
            backend,
            cleanup,
        }
    }

    /// Another backend on the same stream with the same settings, to `url`
    /// (the server through a proxy, say).
    pub fn backend_to(&self, url: &str) -> NatsBackend {
        let nats = NatsConfig::builder()
            .with_url(url)
            .with_stream(&self.stream)
            .with_subject_prefix(&self.prefix)
            .with_retry_delay(self.nats.retry_delay())
            .with_ack_wait(self.nats.ack_wait())
            .with_ping_interval(self.nats.ping_interval())
            .with_connect_timeout(self.nats.connect_timeout())
            .build()
            .expect("nats config");
        NatsBackend::new(&self.config, nats)
    }

    pub async fn session(&self) -> Arc<dyn Session> {
        self.backend.connect().await.expect("connect")
    }
}
