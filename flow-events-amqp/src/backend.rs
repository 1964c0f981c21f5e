//! [`AmqpBackend`]: connects sessions to RabbitMQ, trying each configured URL in turn.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use async_trait::async_trait;
use flow_events_core::backend_kit::{AfterConnect, UrlRotation};
use flow_events_core::{Backend, BackendError, BackendInfo, Config, Session};
use lapin::Connection;

use crate::address::Address;
use crate::channel::{ChannelSlot, PublishChannel};
use crate::config::AmqpConfig;
use crate::publish::{LatestPublisher, Publisher};
use crate::session::{AmqpSession, Parts, close_quietly};
use crate::state::SessionState;
use crate::topology::short;
use crate::transport;
use crate::wire;

/// The RabbitMQ backend: each [`Backend::connect`] opens a session of two
/// connections (one publishes, one consumes, so that a publisher blocked by
/// the broker cannot starve the consumers).
///
/// `AmqpConfig::url()` may list several URLs separated by commas, the nodes of a
/// cluster say: the first connect starts at a random one (so that a fleet of
/// services spreads over the nodes), and every connect tries them in turn
/// from the one after the last used, so that a node that died is tried last
/// (see [`UrlRotation`]).
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use flow_events_amqp::{AmqpBackend, AmqpConfig};
/// use flow_events_core::{Backend, Config, Event};
///
/// let amqp = AmqpConfig::builder()
///     .with_url("amqp://guest:guest@localhost:5672/%2f")
///     .with_app_id("billing")
///     .build()?;
/// let backend = AmqpBackend::new(&Config::default(), amqp);
/// let session = backend.connect().await?;
/// let event = Event::try_new("invoice.paid", serde_json::json!({"invoice": 7}))?;
/// let confirmation = session.send(&event).await?;
/// confirmation.await?; // the broker has the event
/// session.close().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct AmqpBackend {
    inner: Arc<Inner>,
}

struct Inner {
    /// The resilience settings it uses: the publish timeout, the largest
    /// event, the retry pause of deliveries.
    config: Config,
    amqp: AmqpConfig,
    /// The URLs, tried in turn from a random one; after a connect, the next
    /// starts at the URL after the one used: when this session is lost, its
    /// node may be the one that died.
    urls: UrlRotation,
    /// The broker's largest message, once a refusal has told it (0: not
    /// known); shared by every session, so that an event known to be too
    /// large is refused before it costs a channel.
    broker_max_message: Arc<AtomicUsize>,
    /// The publisher of the newest session: retry copies of deliveries that
    /// came on an older session's consuming connection go through it once
    /// that session's publishing connection is gone.
    latest_publisher: LatestPublisher,
}

impl AmqpBackend {
    /// A backend for the broker of `amqp` (URLs, exchange, AMQP settings),
    /// with the resilience settings of `config` it needs (publish timeout,
    /// largest event, backoff). Nothing is checked or connected until
    /// [`Backend::connect`], so that a bad URL is reported like any other
    /// connection failure (as a `Configuration` error).
    pub fn new(config: &Config, amqp: AmqpConfig) -> Self {
        let urls = amqp.url().map_or(0, |u| u.split().len());
        Self {
            inner: Arc::new(Inner {
                config: config.clone(),
                amqp,
                urls: UrlRotation::new(fastrand::usize(..urls.max(1)), AfterConnect::MoveOn),
                broker_max_message: Arc::default(),
                latest_publisher: LatestPublisher::default(),
            }),
        }
    }

    /// The resilience settings it was given.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The AMQP settings.
    pub fn amqp_config(&self) -> &AmqpConfig {
        &self.inner.amqp
    }

    fn heartbeat_secs(&self) -> u16 {
        u16::try_from(self.inner.amqp.heartbeat().as_secs()).unwrap_or(u16::MAX)
    }

    /// Opens a session on one address.
    async fn connect_to(&self, address: &Address) -> Result<AmqpSession, BackendError> {
        let options = &self.inner.amqp;
        let config = &self.inner.config;
        // The consuming connection opens with the first subscription.
        let publish_conn = transport::connect(options, address, "publish").await?;
        match self.publisher(address, &publish_conn).await {
            Ok(publisher) => {
                let publisher = Arc::new(publisher);
                self.inner.latest_publisher.set(&publisher);
                Ok(AmqpSession::start(Parts {
                    publish_conn,
                    publisher,
                    latest: self.inner.latest_publisher.clone(),
                    exchange: options.exchange().to_owned(),
                    options: options.clone(),
                    address: address.clone(),
                    retry_pause: (
                        config.retry_delay().min(Duration::from_secs(1)),
                        config.max_retry_delay(),
                    ),
                }))
            }
            Err(e) => {
                close_quietly(&publish_conn, options.operation_timeout()).await;
                Err(e)
            }
        }
    }

    /// Opens the publishing channel in confirm mode and declares the exchange.
    async fn publisher(
        &self,
        address: &Address,
        conn: &Connection,
    ) -> Result<Publisher, BackendError> {
        let options = &self.inner.amqp;
        let config = &self.inner.config;
        let limit = options.operation_timeout();
        let scrub = &address.scrub;
        let exchange = short("exchange", options.exchange())?;
        let app_id = short("app_id", options.app_id())?;
        let channel = PublishChannel::open(conn, options.exchange(), limit, scrub).await?;
        Ok(Publisher {
            channels: ChannelSlot::new(channel),
            exchange,
            app_id,
            mandatory: options.mandatory(),
            max_event_bytes: config.max_event_bytes(),
            max_header_bytes: wire::max_header_bytes(conn.configuration().frame_max()),
            operation_timeout: limit,
            confirm_timeout: config.publish_timeout(),
            state: Arc::new(SessionState::new()),
            scrub: scrub.clone(),
            broker_max_message: self.inner.broker_max_message.clone(),
        })
    }
}

#[async_trait]
impl Backend for AmqpBackend {
    async fn connect(&self) -> Result<Arc<dyn Session>, BackendError> {
        let Some(url) = self.inner.amqp.url() else {
            return Err(BackendError::configuration(
                "no broker URL configured (set RABBITMQ_URL)",
            ));
        };
        let heartbeat = self.heartbeat_secs();
        let session = self
            .inner
            .urls
            .connect(&url.split(), "broker URL", |url| {
                let address = Address::parse(url, heartbeat);
                async move { self.connect_to(&address?).await }
            })
            .await?;
        Ok(Arc::new(session))
    }

    /// `messaging.system` `rabbitmq`, the exchange and the routing key.
    fn message_attributes(&self, event: &flow_events_core::Event) -> Vec<(&'static str, String)> {
        wire::message_attributes(self.inner.amqp.exchange(), event.event_type().as_str())
    }

    fn info(&self) -> BackendInfo {
        let url = self
            .inner
            .amqp
            .url()
            .map(|u| u.redacted().to_owned())
            .unwrap_or_default();
        BackendInfo::new("amqp", url)
            .with_display_name("RabbitMQ")
            .with_dependency("rabbitmq")
    }
}

impl fmt::Debug for AmqpBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpBackend")
            .field("url", &self.info().url)
            .field("amqp", &self.inner.amqp)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(urls: &str) -> AmqpBackend {
        let amqp = AmqpConfig::builder().with_url(urls).build().unwrap();
        AmqpBackend::new(&Config::default(), amqp)
    }

    #[test]
    fn the_first_connect_starts_at_a_random_url() {
        let urls = "amqp://a:5672,amqp://b:5672,amqp://c:5672";
        let mut starts = [0_usize; 3];
        for _ in 0..300 {
            let start = backend(urls).inner.urls.next();
            starts[start] += 1;
        }
        // Each of the three is the first choice about 100 times in 300; the
        // chance that one is never chosen is (2/3)^300.
        assert!(starts.iter().all(|&k| k > 0), "{starts:?}");
        assert_eq!(backend("amqp://a:5672").inner.urls.next(), 0);
    }
}
