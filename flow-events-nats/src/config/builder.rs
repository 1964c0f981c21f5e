//! [`NatsConfigBuilder`]: setting the NATS configuration in code, and the
//! checks shared with reading it from the environment.

use std::path::PathBuf;
use std::time::Duration;

use flow_events_core::{BrokerUrl, ConfigError};

use super::*;

/// Builds a [`NatsConfig`]; every setter documents its default.
#[derive(Debug, Clone)]
pub struct NatsConfigBuilder {
    pub(super) config: NatsConfig,
}

impl NatsConfigBuilder {
    /// The server URL, or several separated by commas. Default: none
    /// (connecting fails with a configuration error).
    pub fn with_url(mut self, url: impl Into<String>) -> Self {
        self.config.url = Some(BrokerUrl::new(url));
        self
    }
    /// The events' stream. Default `FLOW_EVENTS`.
    pub fn with_stream(mut self, stream: impl Into<String>) -> Self {
        self.config.stream = stream.into();
        self
    }
    /// The subject prefix. Default `flow.events`.
    pub fn with_subject_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.config.subject_prefix = prefix.into();
        self
    }
    /// User name and password (when the URL carries none). Default: none.
    pub fn with_user_and_password(
        mut self,
        user: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        self.config.user = Some(user.into());
        self.config.password = Some(Secret(password.into()));
        self
    }
    /// An authentication token. Default: none.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.config.token = Some(Secret(token.into()));
        self
    }
    /// An nkey seed. Default: none.
    pub fn with_nkey_seed(mut self, seed: impl Into<String>) -> Self {
        self.config.nkey = Some(Secret(seed.into()));
        self
    }
    /// A credentials file (JWT and seed). Default: none.
    pub fn with_credentials_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.creds = Some(path.into());
        self
    }
    /// Require TLS for every URL. Default `false` (`tls://` URLs use it anyway).
    pub fn with_tls(mut self, tls: bool) -> Self {
        self.config.tls = tls;
        self
    }
    /// Trust the CA certificates of this PEM file too. Default: the system's roots only.
    pub fn with_tls_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.tls_ca = Some(path.into());
        self
    }
    /// Present this client certificate (PEM files). Default: none.
    pub fn with_tls_client_cert(
        mut self,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> Self {
        self.config.tls_cert = Some(cert.into());
        self.config.tls_key = Some(key.into());
        self
    }
    /// The stream's duplicate window. Default 120 s.
    pub fn with_duplicate_window(mut self, window: Duration) -> Self {
        self.config.duplicate_window = window;
        self
    }
    /// The stream's retention. Default [`Retention::Interest`].
    pub fn with_retention(mut self, retention: Retention) -> Self {
        self.config.retention = retention;
        self
    }
    /// The longest an event stays in the stream. Default: no limit.
    pub fn with_max_age(mut self, max_age: Option<Duration>) -> Self {
        self.config.max_age = max_age;
        self
    }
    /// How long a delivery may stay unsettled before it is delivered again.
    /// Default 30 s.
    pub fn with_ack_wait(mut self, ack_wait: Duration) -> Self {
        self.config.ack_wait = ack_wait;
        self
    }
    /// The delay before a retried delivery comes again. Default 1 s.
    pub fn with_retry_delay(mut self, delay: Duration) -> Self {
        self.config.retry_delay = delay;
        self
    }
    /// Dead-letter rejected events into the dead-letter stream. Default `true`.
    pub fn with_dead_letter(mut self, on: bool) -> Self {
        self.config.dead_letter = on;
        self
    }
    /// The longest one connection attempt may take. Default 5 s.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }
    /// The interval between pings. Default 10 s.
    pub fn with_ping_interval(mut self, interval: Duration) -> Self {
        self.config.ping_interval = interval;
        self
    }

    /// Checks the settings.
    pub fn build(self) -> Result<NatsConfig, ConfigError> {
        self.build_named(false)
    }

    pub(super) fn build_named(self, env: bool) -> Result<NatsConfig, ConfigError> {
        let c = self.config;
        let name = |env_name: &'static str, setter: &'static str| {
            if env { env_name } else { setter }
        };
        if let Err(reason) = check_name(&c.stream) {
            return Err(ConfigError::new(
                name(ENV_STREAM, "stream"),
                &c.stream,
                reason,
            ));
        }
        if let Err(reason) = check_prefix(&c.subject_prefix) {
            return Err(ConfigError::new(
                name(ENV_SUBJECT_PREFIX, "subject_prefix"),
                &c.subject_prefix,
                reason,
            ));
        }
        for (value, env_name, setter) in [
            (c.duplicate_window, ENV_DUPLICATE_WINDOW, "duplicate_window"),
            (c.ack_wait, ENV_ACK_WAIT, "ack_wait"),
            (c.connect_timeout, ENV_CONNECT_TIMEOUT, "connect_timeout"),
            (c.ping_interval, ENV_PING_INTERVAL, "ping_interval"),
        ] {
            if value.is_zero() {
                return Err(ConfigError::new(
                    name(env_name, setter),
                    "0",
                    "must be more than 0",
                ));
            }
        }
        if c.tls_cert.is_some() != c.tls_key.is_some() {
            return Err(ConfigError::new(
                name(ENV_TLS_CERT, "tls_client_cert"),
                "",
                format!("{ENV_TLS_CERT} and {ENV_TLS_KEY} go together"),
            ));
        }
        if c.password.is_some() && c.user.is_none() {
            return Err(ConfigError::new(
                name(ENV_USER, "user"),
                "",
                format!("{ENV_PASSWORD} is set without {ENV_USER}"),
            ));
        }
        Ok(c)
    }
}

/// A stream name: no whitespace, `.`, `*`, `>`, or path separators.
pub(super) fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 255 {
        return Err("must be 1 to 255 bytes");
    }
    if name
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>' | '/' | '\\'))
    {
        return Err("must not contain whitespace, '.', '*', '>', '/' or '\\'");
    }
    Ok(())
}

/// A subject prefix: words separated by `.`, none empty or a wildcard.
pub(super) fn check_prefix(prefix: &str) -> Result<(), &'static str> {
    if prefix.is_empty() || prefix.len() > 200 {
        return Err("must be 1 to 200 bytes");
    }
    if prefix.split('.').any(|w| {
        w.is_empty()
            || w == "*"
            || w == ">"
            || w.chars().any(|c| c.is_whitespace() || c.is_control())
    }) {
        return Err("must be words separated by '.', without whitespace or wildcards");
    }
    Ok(())
}
