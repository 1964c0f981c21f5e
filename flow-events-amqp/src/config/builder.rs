//! [`AmqpConfigBuilder`]: setting the AMQP configuration in code, and the
//! checks shared with reading it from the environment.

use std::time::Duration;

use flow_events_core::{BrokerUrl, ConfigError, QueueKind};

use super::{AmqpConfig, ENV_EXCHANGE};

/// Builds an [`AmqpConfig`]; every setter documents its default.
#[derive(Debug, Clone)]
pub struct AmqpConfigBuilder {
    pub(super) config: AmqpConfig,
}

impl AmqpConfigBuilder {
    /// The broker URL, or several separated by commas: the nodes of a
    /// cluster, tried in turn. Checked when the backend connects (a bad one
    /// is a `Configuration` error). Default: none (connecting fails).
    pub fn with_url(mut self, url: impl Into<String>) -> Self {
        self.config.url = Some(BrokerUrl::new(url));
        self
    }

    /// The topic exchange events are published to: 1 to 255 bytes, no
    /// whitespace (checked by [`AmqpConfigBuilder::build`]). Default: `flow.events`.
    pub fn with_exchange(mut self, exchange: impl Into<String>) -> Self {
        self.config.exchange = exchange.into();
        self
    }

    /// The name of the publishing service: the `app_id` property of every
    /// message, and the connection name shown by the management UI.
    /// Default: `flow-events`.
    pub fn with_app_id(mut self, app_id: impl Into<String>) -> Self {
        self.config.app_id = app_id.into();
        self
    }

    /// The heartbeat proposed to the broker, in whole seconds; zero turns
    /// heartbeats off. A `heartbeat` parameter in the URL wins. Without
    /// heartbeats a dead peer can take minutes to notice. Default: 10 s.
    pub fn with_heartbeat(mut self, heartbeat: Duration) -> Self {
        self.config.heartbeat = heartbeat;
        self
    }

    /// The longest wait for one connection to open (TCP, TLS, AMQP handshake),
    /// per URL. Default: 10 s.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// The longest wait for every other broker operation: opening a channel,
    /// declaring, binding, handing a publish to the socket, acknowledging.
    /// The wait for a publisher confirm is the config's `publish_timeout`.
    /// Default: 10 s.
    pub fn with_operation_timeout(mut self, timeout: Duration) -> Self {
        self.config.operation_timeout = timeout;
        self
    }

    /// Publish with the `mandatory` flag: an event that no queue is bound for
    /// comes back and its send fails with `EventRefused`, instead of being
    /// dropped by the broker in silence. Default: off.
    pub fn with_mandatory(mut self, mandatory: bool) -> Self {
        self.config.mandatory = mandatory;
        self
    }

    /// The dead-letter exchange (direct, durable) shared by all subscriptions.
    /// Default: the events exchange followed by `.dlx` (`flow.events.dlx`).
    pub fn with_dead_letter_exchange(mut self, exchange: impl Into<String>) -> Self {
        self.config.dead_letter_exchange = Some(exchange.into());
        self
    }

    /// The suffix that names a subscription's dead-letter queue after its
    /// queue (`billing` → `billing.dead`). Default: `.dead`.
    pub fn with_dead_letter_queue_suffix(mut self, suffix: impl Into<String>) -> Self {
        self.config.dead_letter_queue_suffix = suffix.into();
        self
    }

    /// The queue kind for subscriptions that do not ask for one
    /// ([`flow_events_core::Subscription::with_queue_kind`]); a subscription
    /// that asks for a kind gets it. Default: classic.
    pub fn with_queue_kind(mut self, kind: QueueKind) -> Self {
        self.config.queue_kind = kind;
        self
    }

    /// Extra certificate authorities (PEM) trusted for `amqps://` URLs, on top
    /// of the system's roots: for a broker with a private CA. Default: none.
    pub fn with_tls_ca_pem(mut self, pem: impl Into<String>) -> Self {
        self.config.tls_ca_pem = Some(pem.into());
        self
    }

    /// Checks the settings: the exchange name. The URLs are checked when the
    /// backend connects, like any other reason a connection fails.
    pub fn build(self) -> Result<AmqpConfig, ConfigError> {
        self.build_named(false)
    }

    /// [`AmqpConfigBuilder::build`], an error naming the variable (`env`) or
    /// the setter.
    pub(super) fn build_named(self, env: bool) -> Result<AmqpConfig, ConfigError> {
        let c = self.config;
        if let Err(reason) = check_exchange(&c.exchange) {
            let name = if env { ENV_EXCHANGE } else { "exchange" };
            return Err(ConfigError::new(name, &c.exchange, reason));
        }
        Ok(c)
    }
}

/// Why `exchange` cannot name the events exchange, if it cannot.
fn check_exchange(exchange: &str) -> Result<(), &'static str> {
    if exchange.is_empty()
        || exchange.len() > 255
        || exchange
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err("must be 1 to 255 bytes with no whitespace");
    }
    Ok(())
}
