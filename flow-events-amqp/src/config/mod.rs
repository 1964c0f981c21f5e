//! The AMQP backend's configuration: the broker URLs, the exchange and the
//! AMQP-only settings, read from the `RABBITMQ_*` variables or set in code.

use std::fmt;
use std::time::Duration;

use flow_events_core::{BrokerUrl, ConfigError, QueueKind};

mod builder;

pub use builder::AmqpConfigBuilder;

/// `RABBITMQ_URL`: the broker URL, or several separated by commas (tried in turn).
pub const ENV_URL: &str = "RABBITMQ_URL";
/// `RABBITMQ_EXCHANGE`: the topic exchange (default `flow.events`).
pub const ENV_EXCHANGE: &str = "RABBITMQ_EXCHANGE";
/// `RABBITMQ_QUEUE_TYPE`: the queue kind of subscriptions that do not ask for
/// one, `classic` (default) or `quorum`.
pub const ENV_QUEUE_TYPE: &str = "RABBITMQ_QUEUE_TYPE";
/// `RABBITMQ_CA_FILE`: a PEM file of extra certificate authorities trusted
/// for `amqps://` URLs (a broker with a private CA).
pub const ENV_CA_FILE: &str = "RABBITMQ_CA_FILE";

/// Settings of [`AmqpBackend`](crate::AmqpBackend), built from the
/// environment with [`AmqpConfig::from_env`] or in code with
/// [`AmqpConfig::builder`] (each setter documents its default).
///
/// The resilience settings (retries, backoff, buffer bounds, the publish
/// timeout, the largest event) come from core's
/// [`Config`](flow_events_core::Config); these are the AMQP ones. `Debug`
/// shows the URL redacted and no certificate.
///
/// ```
/// use std::time::Duration;
/// use flow_events_amqp::AmqpConfig;
/// let amqp = AmqpConfig::builder()
///     .with_url("amqp://guest:guest@localhost:5672/%2f")
///     .with_app_id("billing")
///     .with_heartbeat(Duration::from_secs(15))
///     .with_mandatory(true)
///     .build()?;
/// assert_eq!(amqp.app_id(), "billing");
/// assert_eq!(amqp.exchange(), "flow.events");
/// assert_eq!(amqp.connect_timeout(), Duration::from_secs(10));
/// assert!(!format!("{amqp:?}").contains("guest@"));
/// # Ok::<(), flow_events_core::ConfigError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct AmqpConfig {
    url: Option<BrokerUrl>,
    exchange: String,
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

impl Default for AmqpConfig {
    fn default() -> Self {
        Self {
            url: None,
            exchange: "flow.events".to_owned(),
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

impl AmqpConfig {
    /// A builder starting from the defaults (no URL, exchange `flow.events`).
    pub fn builder() -> AmqpConfigBuilder {
        Self::default().into_builder()
    }

    /// A builder starting from these settings: to change some of those read
    /// from the environment (the app id, say).
    ///
    /// ```
    /// use flow_events_amqp::AmqpConfig;
    /// let amqp = AmqpConfig::from_lookup(|_| None)?
    ///     .into_builder()
    ///     .with_app_id("billing")
    ///     .build()?;
    /// assert_eq!(amqp.app_id(), "billing");
    /// # Ok::<(), flow_events_core::ConfigError>(())
    /// ```
    pub fn into_builder(self) -> AmqpConfigBuilder {
        AmqpConfigBuilder { config: self }
    }

    /// The defaults, with the settings the environment gives: [`ENV_URL`],
    /// [`ENV_EXCHANGE`], [`ENV_QUEUE_TYPE`] and [`ENV_CA_FILE`]. Unset or
    /// empty variables keep their defaults; an invalid value (a URL the
    /// backend cannot use, say) is an error naming the variable.
    ///
    /// ```
    /// use flow_events_amqp::{AmqpConfig, ENV_QUEUE_TYPE, ENV_URL};
    /// use flow_events_core::QueueKind;
    /// let amqp = AmqpConfig::from_lookup(|name| match name {
    ///     ENV_URL => Some("amqp://guest:guest@rabbit:5672/%2f".to_owned()),
    ///     ENV_QUEUE_TYPE => Some("quorum".to_owned()),
    ///     _ => None,
    /// })?;
    /// assert_eq!(amqp.queue_kind(), QueueKind::Quorum);
    /// assert_eq!(amqp.url().map(|u| u.redacted()), Some("amqp://guest:***@rabbit:5672/%2f"));
    /// # Ok::<(), flow_events_core::ConfigError>(())
    /// ```
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`AmqpConfig::from_env`], reading variables through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let mut b = Self::builder();
        if let Some(v) = get(ENV_URL) {
            let url = BrokerUrl::new(v.trim());
            crate::address::check_url(&url)
                .map_err(|e| ConfigError::new(ENV_URL, url.redacted(), e.message()))?;
            b.config.url = Some(url);
        }
        if let Some(v) = get(ENV_EXCHANGE) {
            b = b.with_exchange(v.trim());
        }
        if let Some(v) = get(ENV_QUEUE_TYPE) {
            let kind = parse_queue_kind(&v).ok_or_else(|| {
                ConfigError::new(ENV_QUEUE_TYPE, &v, "expected classic or quorum")
            })?;
            b = b.with_queue_kind(kind);
        }
        if let Some(path) = get(ENV_CA_FILE) {
            let path = path.trim();
            let pem = std::fs::read_to_string(path)
                .map_err(|e| ConfigError::new(ENV_CA_FILE, path, format!("cannot read it: {e}")))?;
            b = b.with_tls_ca_pem(pem);
        }
        b.build_named(true)
    }

    /// The broker URL(s), if set.
    pub fn url(&self) -> Option<&BrokerUrl> {
        self.url.as_ref()
    }
    /// The topic exchange.
    pub fn exchange(&self) -> &str {
        &self.exchange
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

impl fmt::Debug for AmqpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpConfig")
            .field("url", &self.url)
            .field("exchange", &self.exchange)
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
        let o = AmqpConfig::default();
        assert!(o.url().is_none());
        assert_eq!(o.exchange(), "flow.events");
        assert_eq!(o.app_id(), "flow-events");
        assert_eq!(o.heartbeat(), Duration::from_secs(10));
        assert_eq!(o.operation_timeout(), Duration::from_secs(10));
        assert!(!o.mandatory());
        assert_eq!(o.dead_letter_exchange("flow.events"), "flow.events.dlx");
        assert_eq!(o.dead_letter_queue("billing"), "billing.dead");
        assert_eq!(o.queue_kind(), QueueKind::Classic);
        assert!(o.tls_ca_pem().is_none());
    }

    fn from(vars: &[(&str, &str)]) -> Result<AmqpConfig, ConfigError> {
        AmqpConfig::from_lookup(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn reads_the_queue_type() {
        assert_eq!(from(&[]).unwrap(), AmqpConfig::default());
        assert_eq!(
            from(&[(ENV_QUEUE_TYPE, "  ")]).unwrap(),
            AmqpConfig::default()
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
    fn reads_the_url_the_exchange_and_the_ca_file() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "-----BEGIN CERTIFICATE-----").unwrap();
        let c = from(&[
            (ENV_URL, " amqp://u:p@h:5672/ "),
            (ENV_EXCHANGE, "my.events"),
            (ENV_CA_FILE, ca.to_str().unwrap()),
        ])
        .unwrap();
        assert_eq!(c.url().unwrap().expose(), "amqp://u:p@h:5672/");
        assert_eq!(c.exchange(), "my.events");
        assert_eq!(c.tls_ca_pem(), Some("-----BEGIN CERTIFICATE-----"));
        assert!(!format!("{c:?}").contains("u:p@"), "{c:?}");
    }

    #[test]
    fn each_invalid_value_names_its_variable() {
        for (var, value) in [
            (ENV_URL, "localhost:5672"),
            (ENV_URL, "http://u:p@h/"),
            (ENV_EXCHANGE, "a b"),
            (ENV_CA_FILE, "/nonexistent/ca.pem"),
        ] {
            let err = from(&[(var, value)]).expect_err(var);
            assert_eq!(err.variable(), var, "{value}");
        }
    }

    #[test]
    fn an_invalid_url_error_hides_the_password() {
        let err = from(&[(ENV_URL, "nonsense:secret2@x, amqp://u:secret@h")]).unwrap_err();
        assert_eq!(err.variable(), ENV_URL);
        assert!(!err.to_string().contains("secret"), "{err}");
    }

    #[test]
    fn setters() {
        let o = AmqpConfig::builder()
            .with_dead_letter_exchange("dead")
            .with_dead_letter_queue_suffix("-dlq")
            .with_queue_kind(QueueKind::Quorum)
            .with_tls_ca_pem("-----BEGIN CERTIFICATE-----")
            .build()
            .unwrap();
        assert_eq!(o.dead_letter_exchange("x"), "dead");
        assert_eq!(o.dead_letter_queue("q"), "q-dlq");
        assert_eq!(o.queue_kind(), QueueKind::Quorum);
        assert!(format!("{o:?}").contains("<pem>"));
    }

    #[test]
    fn build_checks_the_exchange_naming_the_setter() {
        for exchange in ["", "a b", "tab\there"] {
            let err = AmqpConfig::builder()
                .with_exchange(exchange)
                .build()
                .expect_err(exchange);
            assert_eq!(err.variable(), "exchange", "{exchange:?}");
        }
        let c = AmqpConfig::builder()
            .with_exchange("my.events")
            .build()
            .unwrap();
        assert_eq!(c.exchange(), "my.events");
    }
}
