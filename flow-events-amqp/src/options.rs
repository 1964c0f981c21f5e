//! Settings of the AMQP backend that the shared [`Config`](flow_events_core::Config) does not carry.

use std::fmt;
use std::time::Duration;

use flow_events_core::{ConfigError, QueueKind};

/// `RABBITMQ_QUEUE_TYPE`: the queue kind of subscriptions that do not ask for
/// one, `classic` (default) or `quorum`; read by [`AmqpOptions::from_env`].
pub const ENV_QUEUE_TYPE: &str = "RABBITMQ_QUEUE_TYPE";

/// Settings of [`AmqpBackend`](crate::AmqpBackend); each setter documents its default.
///
/// The shared settings (URL, exchange, publish timeout, largest event) come
/// from [`Config`](flow_events_core::Config); these are the AMQP-only ones.
///
/// ```
/// use std::time::Duration;
/// use flow_events_amqp::AmqpOptions;
/// let options = AmqpOptions::new()
///     .with_app_id("billing")
///     .with_heartbeat(Duration::from_secs(15))
///     .with_mandatory(true);
/// assert_eq!(options.app_id(), "billing");
/// assert_eq!(options.connect_timeout(), Duration::from_secs(10));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct AmqpOptions {
    app_id: String,
    heartbeat: Duration,
    connect_timeout: Duration,
    operation_timeout: Duration,
    mandatory: bool,
    dead_letter_exchange: Option<String>,
    dead_letter_queue_suffix: String,
    queue_kind: QueueKind,
    tls_ca_pem: Option<String>,
}

impl Default for AmqpOptions {
    fn default() -> Self {
        Self {
            app_id: "flow-events".to_owned(),
            heartbeat: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            operation_timeout: Duration::from_secs(10),
            mandatory: false,
            dead_letter_exchange: None,
            dead_letter_queue_suffix: ".dead".to_owned(),
            queue_kind: QueueKind::Classic,
            tls_ca_pem: None,
        }
    }
}

impl AmqpOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// The defaults, with the settings the environment gives:
    /// [`ENV_QUEUE_TYPE`] (`RABBITMQ_QUEUE_TYPE`). Unset or empty variables
    /// keep their defaults; an invalid value is an error naming the variable.
    /// The shared settings are read by `Config::from_env`.
    ///
    /// ```
    /// use flow_events_amqp::{AmqpOptions, ENV_QUEUE_TYPE};
    /// use flow_events_core::QueueKind;
    /// let options = AmqpOptions::from_lookup(|name| {
    ///     (name == ENV_QUEUE_TYPE).then(|| "quorum".to_owned())
    /// })?;
    /// assert_eq!(options.queue_kind(), QueueKind::Quorum);
    /// # Ok::<(), flow_events_core::ConfigError>(())
    /// ```
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`AmqpOptions::from_env`], reading variables through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut options = Self::default();
        if let Some(v) = lookup(ENV_QUEUE_TYPE).filter(|v| !v.trim().is_empty()) {
            options.queue_kind = parse_queue_kind(&v).ok_or_else(|| {
                ConfigError::new(ENV_QUEUE_TYPE, &v, "expected classic or quorum")
            })?;
        }
        Ok(options)
    }

    /// The name of the publishing service: the `app_id` property of every
    /// message, and the connection name shown by the management UI.
    /// Default: `flow-events`.
    pub fn with_app_id(mut self, app_id: impl Into<String>) -> Self {
        self.app_id = app_id.into();
        self
    }

    /// The heartbeat proposed to the broker, in whole seconds; zero turns
    /// heartbeats off. A `heartbeat` parameter in the URL wins. Without
    /// heartbeats a dead peer can take minutes to notice. Default: 10 s.
    pub fn with_heartbeat(mut self, heartbeat: Duration) -> Self {
        self.heartbeat = heartbeat;
        self
    }

    /// The longest wait for one connection to open (TCP, TLS, AMQP handshake),
    /// per URL. Default: 10 s.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The longest wait for every other broker operation: opening a channel,
    /// declaring, binding, handing a publish to the socket, acknowledging.
    /// The wait for a publisher confirm is the config's `publish_timeout`.
    /// Default: 10 s.
    pub fn with_operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout;
        self
    }

    /// Publish with the `mandatory` flag: an event that no queue is bound for
    /// comes back and its send fails with `EventRefused`, instead of being
    /// dropped by the broker in silence. Default: off.
    pub fn with_mandatory(mut self, mandatory: bool) -> Self {
        self.mandatory = mandatory;
        self
    }

    /// The dead-letter exchange (direct, durable) shared by all subscriptions.
    /// Default: the events exchange followed by `.dlx` (`flow.events.dlx`).
    pub fn with_dead_letter_exchange(mut self, exchange: impl Into<String>) -> Self {
        self.dead_letter_exchange = Some(exchange.into());
        self
    }

    /// The suffix that names a subscription's dead-letter queue after its
    /// queue (`billing` → `billing.dead`). Default: `.dead`.
    pub fn with_dead_letter_queue_suffix(mut self, suffix: impl Into<String>) -> Self {
        self.dead_letter_queue_suffix = suffix.into();
        self
    }

    /// The queue kind for subscriptions that do not ask for one
    /// ([`flow_events_core::Subscription::with_queue_kind`]); a subscription
    /// that asks for a kind gets it. Default: classic.
    pub fn with_queue_kind(mut self, kind: QueueKind) -> Self {
        self.queue_kind = kind;
        self
    }

    /// Extra certificate authorities (PEM) trusted for `amqps://` URLs, on top
    /// of the system's roots: for a broker with a private CA. Default: none.
    pub fn with_tls_ca_pem(mut self, pem: impl Into<String>) -> Self {
        self.tls_ca_pem = Some(pem.into());
        self
    }

    /// The publishing service's name.
    pub fn app_id(&self) -> &str {
        &self.app_id
    }
    /// The heartbeat proposed to the broker.
    pub fn heartbeat(&self) -> Duration {
        self.heartbeat
    }
    /// The longest wait for one connection to open.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }
    /// The longest wait for any other broker operation.
    pub fn operation_timeout(&self) -> Duration {
        self.operation_timeout
    }
    /// Whether events are published with the `mandatory` flag.
    pub fn mandatory(&self) -> bool {
        self.mandatory
    }
    /// The dead-letter exchange for the events exchange `exchange`.
    pub fn dead_letter_exchange(&self, exchange: &str) -> String {
        self.dead_letter_exchange
            .clone()
            .unwrap_or_else(|| format!("{exchange}.dlx"))
    }
    /// The dead-letter queue of the subscription queue `queue`.
    pub fn dead_letter_queue(&self, queue: &str) -> String {
        format!("{queue}{}", self.dead_letter_queue_suffix)
    }
    /// The queue kind for subscriptions that keep the core default.
    pub fn queue_kind(&self) -> QueueKind {
        self.queue_kind
    }
    /// The extra certificate authorities, if any.
    pub fn tls_ca_pem(&self) -> Option<&str> {
        self.tls_ca_pem.as_deref()
    }
}

/// `classic` or `quorum`, in any case.
fn parse_queue_kind(v: &str) -> Option<QueueKind> {
    match v.trim().to_ascii_lowercase().as_str() {
        "classic" => Some(QueueKind::Classic),
        "quorum" => Some(QueueKind::Quorum),
        _ => None,
    }
}

impl fmt::Debug for AmqpOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpOptions")
            .field("app_id", &self.app_id)
            .field("heartbeat", &self.heartbeat)
            .field("connect_timeout", &self.connect_timeout)
            .field("operation_timeout", &self.operation_timeout)
            .field("mandatory", &self.mandatory)
            .field("dead_letter_exchange", &self.dead_letter_exchange)
            .field("dead_letter_queue_suffix", &self.dead_letter_queue_suffix)
            .field("queue_kind", &self.queue_kind)
            .field("tls_ca_pem", &self.tls_ca_pem.as_ref().map(|_| "<pem>"))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let o = AmqpOptions::new();
        assert_eq!(o.app_id(), "flow-events");
        assert_eq!(o.heartbeat(), Duration::from_secs(10));
        assert_eq!(o.operation_timeout(), Duration::from_secs(10));
        assert!(!o.mandatory());
        assert_eq!(o.dead_letter_exchange("flow.events"), "flow.events.dlx");
        assert_eq!(o.dead_letter_queue("billing"), "billing.dead");
        assert_eq!(o.queue_kind(), QueueKind::Classic);
        assert!(o.tls_ca_pem().is_none());
    }

    fn from(vars: &[(&str, &str)]) -> Result<AmqpOptions, ConfigError> {
        AmqpOptions::from_lookup(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn reads_the_queue_type() {
        assert_eq!(from(&[]).unwrap(), AmqpOptions::default());
        assert_eq!(
            from(&[(ENV_QUEUE_TYPE, "  ")]).unwrap(),
            AmqpOptions::default()
        );
        for (value, kind) in [
            ("quorum", QueueKind::Quorum),
            (" Quorum ", QueueKind::Quorum),
            ("classic", QueueKind::Classic),
            ("CLASSIC", QueueKind::Classic),
        ] {
            assert_eq!(
                from(&[(ENV_QUEUE_TYPE, value)]).unwrap().queue_kind(),
                kind,
                "{value}"
            );
        }
    }

    #[test]
    fn an_unknown_queue_type_names_the_variable() {
        for value in ["stream", "quorum,classic", "qurom"] {
            let err = from(&[(ENV_QUEUE_TYPE, value)]).expect_err(value);
            assert_eq!(err.variable(), ENV_QUEUE_TYPE);
            assert!(
                err.to_string().contains("expected classic or quorum"),
                "{err}"
            );
        }
    }

    #[test]
    fn setters() {
        let o = AmqpOptions::new()
            .with_dead_letter_exchange("dead")
            .with_dead_letter_queue_suffix("-dlq")
            .with_queue_kind(QueueKind::Quorum)
            .with_tls_ca_pem("-----BEGIN CERTIFICATE-----");
        assert_eq!(o.dead_letter_exchange("x"), "dead");
        assert_eq!(o.dead_letter_queue("q"), "q-dlq");
        assert_eq!(o.queue_kind(), QueueKind::Quorum);
        assert!(format!("{o:?}").contains("<pem>"));
    }
}
