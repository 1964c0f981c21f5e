//! The NATS settings, read from their own `NATS_*` variables.
//!
//! The resilience settings (retries, backoff, buffer, publish timeout,
//! largest event) stay in `flow_events_core::Config`; this type holds what
//! only the NATS backend needs.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use flow_events_core::backend_kit::{parse_bool, parse_secs};
use flow_events_core::{BrokerUrl, ConfigError};

use crate::redact::redact;

mod builder;

pub use builder::NatsConfigBuilder;

/// `NATS_URL`: the server URL, or several separated by commas (tried in turn).
pub const ENV_URL: &str = "NATS_URL";
/// `NATS_STREAM`: the stream that holds the events (default `FLOW_EVENTS`).
pub const ENV_STREAM: &str = "NATS_STREAM";
/// `NATS_SUBJECT_PREFIX`: events go to `<prefix>.<event type>` (default `flow.events`).
pub const ENV_SUBJECT_PREFIX: &str = "NATS_SUBJECT_PREFIX";
/// `NATS_USER`: user name (with `NATS_PASSWORD`), when the URL carries none.
pub const ENV_USER: &str = "NATS_USER";
/// `NATS_PASSWORD`: password of `NATS_USER`.
pub const ENV_PASSWORD: &str = "NATS_PASSWORD";
/// `NATS_TOKEN`: an authentication token.
pub const ENV_TOKEN: &str = "NATS_TOKEN";
/// `NATS_NKEY`: an nkey seed (`SU...`).
pub const ENV_NKEY: &str = "NATS_NKEY";
/// `NATS_CREDS`: path of a credentials file (user JWT and nkey seed).
pub const ENV_CREDS: &str = "NATS_CREDS";
/// `NATS_TLS`: `true` requires TLS even for `nats://` URLs (`tls://` URLs always use it).
pub const ENV_TLS: &str = "NATS_TLS";
/// `NATS_TLS_CA`: path of a PEM file of CA certificates trusted beside the system's roots.
pub const ENV_TLS_CA: &str = "NATS_TLS_CA";
/// `NATS_TLS_CERT`: path of the client certificate (PEM), with `NATS_TLS_KEY`.
pub const ENV_TLS_CERT: &str = "NATS_TLS_CERT";
/// `NATS_TLS_KEY`: path of the client certificate's key (PEM).
pub const ENV_TLS_KEY: &str = "NATS_TLS_KEY";
/// `NATS_DUPLICATE_WINDOW`: seconds in which a republished event id is dropped (default 120).
pub const ENV_DUPLICATE_WINDOW: &str = "NATS_DUPLICATE_WINDOW";
/// `NATS_RETENTION`: `interest` (default) or `limits`.
pub const ENV_RETENTION: &str = "NATS_RETENTION";
/// `NATS_MAX_AGE`: seconds an event is kept in the stream at most (default: no limit).
pub const ENV_MAX_AGE: &str = "NATS_MAX_AGE";
/// `NATS_ACK_WAIT`: seconds before an unsettled delivery is delivered again (default 30).
pub const ENV_ACK_WAIT: &str = "NATS_ACK_WAIT";
/// `NATS_RETRY_DELAY`: seconds before a retried delivery comes again (default 1).
pub const ENV_RETRY_DELAY: &str = "NATS_RETRY_DELAY";
/// `NATS_DEAD_LETTER`: `false` turns the dead-letter stream off (default `true`).
pub const ENV_DEAD_LETTER: &str = "NATS_DEAD_LETTER";
/// `NATS_CONNECT_TIMEOUT`: seconds one connection attempt may take (default 5).
pub const ENV_CONNECT_TIMEOUT: &str = "NATS_CONNECT_TIMEOUT";
/// `NATS_PING_INTERVAL`: seconds between pings; a server silent for about
/// three of them is taken as lost (default 10).
pub const ENV_PING_INTERVAL: &str = "NATS_PING_INTERVAL";

/// Every variable [`NatsConfig::from_env`] reads, in the order of the README.
pub const ENV_VARS: &[&str] = &[
    ENV_URL,
    ENV_STREAM,
    ENV_SUBJECT_PREFIX,
    ENV_USER,
    ENV_PASSWORD,
    ENV_TOKEN,
    ENV_NKEY,
    ENV_CREDS,
    ENV_TLS,
    ENV_TLS_CA,
    ENV_TLS_CERT,
    ENV_TLS_KEY,
    ENV_DUPLICATE_WINDOW,
    ENV_RETENTION,
    ENV_MAX_AGE,
    ENV_ACK_WAIT,
    ENV_RETRY_DELAY,
    ENV_DEAD_LETTER,
    ENV_CONNECT_TIMEOUT,
    ENV_PING_INTERVAL,
];

/// A secret setting: `Debug` shows `***`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(String);

impl Secret {
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// How the stream keeps events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Retention {
    /// An event is kept until every subscription whose filter takes it has
    /// acknowledged it (or it has no subscription at all when published):
    /// the closest to a topic exchange with durable queues. The default.
    #[default]
    Interest,
    /// Events are kept until the stream's limits (`max_age`) remove them,
    /// whatever the subscriptions did: they can be read again.
    Limits,
}

impl FromStr for Retention {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "interest" => Ok(Self::Interest),
            "limits" => Ok(Self::Limits),
            _ => Err("expected interest or limits".to_owned()),
        }
    }
}

impl fmt::Display for Retention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Interest => "interest",
            Self::Limits => "limits",
        })
    }
}

/// The NATS settings. Built from the `NATS_*` variables with
/// [`NatsConfig::from_env`] or in code with [`NatsConfig::builder`];
/// `Debug` shows no secret.
///
/// ```
/// use std::time::Duration;
/// use flow_events_nats::NatsConfig;
/// let config = NatsConfig::builder()
///     .with_url("nats://alice:s3cret@localhost:4222")
///     .with_stream("BILLING")
///     .with_subject_prefix("billing.events")
///     .with_retry_delay(Duration::from_millis(500))
///     .build()
///     .unwrap();
/// assert_eq!(config.stream(), "BILLING");
/// assert_eq!(config.dead_letter_stream(), "BILLING_DEAD");
/// assert!(!format!("{config:?}").contains("s3cret"));
/// ```
#[derive(Clone, PartialEq)]
pub struct NatsConfig {
    url: Option<BrokerUrl>,
    stream: String,
    subject_prefix: String,
    user: Option<String>,
    password: Option<Secret>,
    token: Option<Secret>,
    nkey: Option<Secret>,
    creds: Option<PathBuf>,
    tls: bool,
    tls_ca: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    duplicate_window: Duration,
    retention: Retention,
    max_age: Option<Duration>,
    ack_wait: Duration,
    retry_delay: Duration,
    dead_letter: bool,
    connect_timeout: Duration,
    ping_interval: Duration,
}

impl fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL's own Debug would show a token (`nats://token@host`).
        f.debug_struct("NatsConfig")
            .field("url", &self.redacted_url())
            .field("stream", &self.stream)
            .field("subject_prefix", &self.subject_prefix)
            .field("user", &self.user)
            .field("password", &self.password)
            .field("token", &self.token)
            .field("nkey", &self.nkey)
            .field("creds", &self.creds)
            .field("tls", &self.tls)
            .field("tls_ca", &self.tls_ca)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("duplicate_window", &self.duplicate_window)
            .field("retention", &self.retention)
            .field("max_age", &self.max_age)
            .field("ack_wait", &self.ack_wait)
            .field("retry_delay", &self.retry_delay)
            .field("dead_letter", &self.dead_letter)
            .field("connect_timeout", &self.connect_timeout)
            .field("ping_interval", &self.ping_interval)
            .finish()
    }
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            url: None,
            stream: "FLOW_EVENTS".to_owned(),
            subject_prefix: "flow.events".to_owned(),
            user: None,
            password: None,
            token: None,
            nkey: None,
            creds: None,
            tls: false,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            duplicate_window: Duration::from_secs(120),
            retention: Retention::Interest,
            max_age: None,
            ack_wait: Duration::from_secs(30),
            retry_delay: Duration::from_secs(1),
            dead_letter: true,
            connect_timeout: Duration::from_secs(5),
            ping_interval: Duration::from_secs(10),
        }
    }
}

impl NatsConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> NatsConfigBuilder {
        NatsConfigBuilder {
            config: NatsConfig::default(),
        }
    }

    /// Reads the `NATS_*` variables ([`ENV_VARS`]); unset or empty ones keep
    /// their defaults. An invalid value is an error naming the variable
    /// (secrets are never quoted).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`NatsConfig::from_env`], reading variables through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let mut b = NatsConfig::builder();
        if let Some(v) = get(ENV_URL) {
            b = b.with_url(v.trim());
        }
        if let Some(v) = get(ENV_STREAM) {
            b = b.with_stream(v.trim());
        }
        if let Some(v) = get(ENV_SUBJECT_PREFIX) {
            b = b.with_subject_prefix(v.trim());
        }
        if let Some(v) = get(ENV_USER) {
            b.config.user = Some(v.trim().to_owned());
        }
        if let Some(v) = lookup(ENV_PASSWORD).filter(|v| !v.is_empty()) {
            b.config.password = Some(Secret(v));
        }
        if let Some(v) = get(ENV_TOKEN) {
            b = b.with_token(v.trim());
        }
        if let Some(v) = get(ENV_NKEY) {
            b = b.with_nkey_seed(v.trim());
        }
        if let Some(v) = get(ENV_CREDS) {
            b = b.with_credentials_file(v.trim());
        }
        if let Some(v) = get(ENV_TLS) {
            b = b.with_tls(parse_bool(ENV_TLS, &v)?);
        }
        if let Some(v) = get(ENV_TLS_CA) {
            b = b.with_tls_ca_file(v.trim());
        }
        if let Some(v) = get(ENV_TLS_CERT) {
            b.config.tls_cert = Some(v.trim().into());
        }
        if let Some(v) = get(ENV_TLS_KEY) {
            b.config.tls_key = Some(v.trim().into());
        }
        if let Some(v) = get(ENV_DUPLICATE_WINDOW) {
            b = b.with_duplicate_window(parse_secs(ENV_DUPLICATE_WINDOW, &v)?);
        }
        if let Some(v) = get(ENV_RETENTION) {
            let r = v
                .parse()
                .map_err(|reason: String| ConfigError::new(ENV_RETENTION, &v, reason))?;
            b = b.with_retention(r);
        }
        if let Some(v) = get(ENV_MAX_AGE) {
            b = b.with_max_age(Some(parse_secs(ENV_MAX_AGE, &v)?));
        }
        if let Some(v) = get(ENV_ACK_WAIT) {
            b = b.with_ack_wait(parse_secs(ENV_ACK_WAIT, &v)?);
        }
        if let Some(v) = get(ENV_RETRY_DELAY) {
            b = b.with_retry_delay(parse_secs(ENV_RETRY_DELAY, &v)?);
        }
        if let Some(v) = get(ENV_DEAD_LETTER) {
            b = b.with_dead_letter(parse_bool(ENV_DEAD_LETTER, &v)?);
        }
        if let Some(v) = get(ENV_CONNECT_TIMEOUT) {
            b = b.with_connect_timeout(parse_secs(ENV_CONNECT_TIMEOUT, &v)?);
        }
        if let Some(v) = get(ENV_PING_INTERVAL) {
            b = b.with_ping_interval(parse_secs(ENV_PING_INTERVAL, &v)?);
        }
        b.build_named(true)
    }

    /// The server URL(s), if set (with their secrets: see
    /// [`NatsConfig::redacted_url`] for showing them).
    pub(crate) fn url(&self) -> Option<&BrokerUrl> {
        self.url.as_ref()
    }
    /// Whether a URL is set.
    pub fn has_url(&self) -> bool {
        self.url.is_some()
    }
    /// The URL(s) with every password and token replaced by `***`.
    pub fn redacted_url(&self) -> String {
        self.url
            .as_ref()
            .map(|u| redact(u.expose()))
            .unwrap_or_default()
    }
    /// The stream of the events.
    pub fn stream(&self) -> &str {
        &self.stream
    }
    /// The subject prefix: events go to `<prefix>.<event type>`.
    pub fn subject_prefix(&self) -> &str {
        &self.subject_prefix
    }
    /// The dead-letter stream: `<stream>_DEAD`.
    pub fn dead_letter_stream(&self) -> String {
        format!("{}_DEAD", self.stream)
    }
    /// The dead-letter subject prefix: `<prefix>-dead`; a subscription's dead
    /// letters go to `<prefix>-dead.<subscription>`.
    pub fn dead_letter_prefix(&self) -> String {
        format!("{}-dead", self.subject_prefix)
    }
    /// Whether rejected events go to the dead-letter stream.
    pub fn dead_letter(&self) -> bool {
        self.dead_letter
    }
    /// Whether TLS is required for every URL.
    pub fn tls(&self) -> bool {
        self.tls
    }
    /// Extra CA certificates (PEM file).
    pub fn tls_ca_file(&self) -> Option<&PathBuf> {
        self.tls_ca.as_ref()
    }
    /// The client certificate and key files, when both are set.
    pub fn tls_client_cert(&self) -> Option<(&PathBuf, &PathBuf)> {
        self.tls_cert.as_ref().zip(self.tls_key.as_ref())
    }
    /// The user name given outside the URL.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }
    pub(crate) fn password(&self) -> Option<&Secret> {
        self.password.as_ref()
    }
    pub(crate) fn token(&self) -> Option<&Secret> {
        self.token.as_ref()
    }
    pub(crate) fn nkey(&self) -> Option<&Secret> {
        self.nkey.as_ref()
    }
    /// The credentials file, if set.
    pub fn credentials_file(&self) -> Option<&PathBuf> {
        self.creds.as_ref()
    }
    /// The stream's duplicate window.
    pub fn duplicate_window(&self) -> Duration {
        self.duplicate_window
    }
    /// The stream's retention.
    pub fn retention(&self) -> Retention {
        self.retention
    }
    /// The longest an event stays in the stream, if limited.
    pub fn max_age(&self) -> Option<Duration> {
        self.max_age
    }
    /// How long the server waits for a delivery to be settled before
    /// delivering it again.
    pub fn ack_wait(&self) -> Duration {
        self.ack_wait
    }
    /// The delay of a retried delivery (the nak's delay).
    pub fn retry_delay(&self) -> Duration {
        self.retry_delay
    }
    /// The longest one connection attempt may take.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }
    /// The interval between pings to the server.
    pub fn ping_interval(&self) -> Duration {
        self.ping_interval
    }
}

#[cfg(test)]
mod tests;
