//! The resilience configuration every backend shares: retries, backoff,
//! buffer bounds, timeouts and the largest event; from the environment with
//! the original names, or in code. Each backend reads its own settings (its
//! URLs, say) from its own variables.

use std::time::Duration;

use crate::config_parse::{parse_bool, parse_num, parse_secs};
use crate::error::ConfigError;
pub use crate::overflow::OverflowPolicy;

/// `RABBITMQ_REQUIRED`: start-up waits for the broker and fails without it (default false).
pub const ENV_REQUIRED: &str = "RABBITMQ_REQUIRED";
/// `RABBITMQ_MAX_RETRIES`: connection attempts before the state is `failed` (default 5).
pub const ENV_MAX_RETRIES: &str = "RABBITMQ_MAX_RETRIES";
/// `RABBITMQ_RETRY_DELAY`: base backoff delay in seconds, fractions allowed (default 5).
pub const ENV_RETRY_DELAY: &str = "RABBITMQ_RETRY_DELAY";
/// `RABBITMQ_MAX_RETRY_DELAY`: the backoff cap in seconds (default 60).
pub const ENV_MAX_RETRY_DELAY: &str = "RABBITMQ_MAX_RETRY_DELAY";
/// `RABBITMQ_MAX_PENDING_EVENTS`: the pending buffer's bound (default 1000).
pub const ENV_MAX_PENDING_EVENTS: &str = "RABBITMQ_MAX_PENDING_EVENTS";
/// `RABBITMQ_OVERFLOW_POLICY`: `drop-newest` (default), `drop-oldest` or `reject`.
pub const ENV_OVERFLOW_POLICY: &str = "RABBITMQ_OVERFLOW_POLICY";
/// `RABBITMQ_PUBLISH_TIMEOUT`: longest wait for one broker confirm, seconds (default 10).
pub const ENV_PUBLISH_TIMEOUT: &str = "RABBITMQ_PUBLISH_TIMEOUT";
/// `RABBITMQ_CONFIRM_WAIT`: longest a `publish` call waits for the broker's
/// confirm before it answers `Buffered`, seconds, fractions allowed (default 0.5).
pub const ENV_CONFIRM_WAIT: &str = "RABBITMQ_CONFIRM_WAIT";
/// `RABBITMQ_MAX_PUBLISH_ATTEMPTS`: sends of one event the broker nacks before
/// it is given up as refused (default 5).
pub const ENV_MAX_PUBLISH_ATTEMPTS: &str = "RABBITMQ_MAX_PUBLISH_ATTEMPTS";
/// `RABBITMQ_MAX_IN_FLIGHT`: unconfirmed publishes allowed at once while draining (default 1024).
pub const ENV_MAX_IN_FLIGHT: &str = "RABBITMQ_MAX_IN_FLIGHT";
/// `FLOW_EVENTS_MAX_EVENT_BYTES`: largest encoded event accepted (default 8 MiB).
pub const ENV_MAX_EVENT_BYTES: &str = "FLOW_EVENTS_MAX_EVENT_BYTES";

/// `FLOW_EVENTS_MAX_PENDING_BYTES`: bound of the pending buffer in encoded bytes (default 64 MiB).
pub const ENV_MAX_PENDING_BYTES: &str = "FLOW_EVENTS_MAX_PENDING_BYTES";
/// `FLOW_EVENTS_MAX_PENDING_AGE`: pending events older than this many seconds expire,
/// counted and logged (default: never).
pub const ENV_MAX_PENDING_AGE: &str = "FLOW_EVENTS_MAX_PENDING_AGE";
/// The default bound of the pending buffer in encoded bytes: 64 MiB, so that
/// the default count bound of events of the largest size cannot take gigabytes.
pub const DEFAULT_MAX_PENDING_BYTES: usize = 64 * 1024 * 1024;

/// Settings of the resilience decorator, shared by every backend: retries,
/// backoff, buffer bounds, timeouts and the largest event.
///
/// Built from the environment with [`Config::from_env`] or in code with
/// [`Config::builder`]. Where the broker is (its URLs) and the broker's own
/// settings are the backend's configuration, not this.
///
/// ```
/// use std::time::Duration;
/// use flow_events_core::Config;
/// let config = Config::builder()
///     .with_required(true)
///     .with_retry_delay(Duration::from_millis(500))
///     .build()
///     .unwrap();
/// assert!(config.required());
/// assert_eq!(config.max_retries(), 5);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    required: bool,
    max_retries: u32,
    retry_delay: Duration,
    max_retry_delay: Duration,
    max_pending_events: usize,
    overflow_policy: OverflowPolicy,
    publish_timeout: Duration,
    confirm_wait: Duration,
    max_publish_attempts: u32,
    max_in_flight: usize,
    max_event_bytes: usize,
    max_pending_bytes: Option<usize>,
    max_pending_age: Option<Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            required: false,
            max_retries: 5,
            retry_delay: Duration::from_secs(5),
            max_retry_delay: Duration::from_secs(60),
            max_pending_events: 1000,
            overflow_policy: OverflowPolicy::DropNewest,
            publish_timeout: Duration::from_secs(10),
            confirm_wait: Duration::from_millis(500),
            max_publish_attempts: 5,
            max_in_flight: 1024,
            max_event_bytes: 8 * 1024 * 1024,
            max_pending_bytes: Some(DEFAULT_MAX_PENDING_BYTES),
            max_pending_age: None,
        }
    }
}

impl Config {
    /// A builder starting from the defaults.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder {
            config: Config::default(),
        }
    }

    /// Reads the resilience variables (`RABBITMQ_*` and `FLOW_EVENTS_*`, the
    /// `ENV_*` constants); unset or empty ones
    /// keep their defaults. An invalid value is an error naming the variable.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`Config::from_env`], reading variables through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let mut b = Config::builder();
        if let Some(v) = get(ENV_REQUIRED) {
            b = b.with_required(parse_bool(ENV_REQUIRED, &v)?);
        }
        if let Some(v) = get(ENV_MAX_RETRIES) {
            b = b.with_max_retries(parse_num(ENV_MAX_RETRIES, &v)?);
        }
        if let Some(v) = get(ENV_RETRY_DELAY) {
            b = b.with_retry_delay(parse_secs(ENV_RETRY_DELAY, &v)?);
        }
        if let Some(v) = get(ENV_MAX_RETRY_DELAY) {
            b = b.with_max_retry_delay(parse_secs(ENV_MAX_RETRY_DELAY, &v)?);
        }
        if let Some(v) = get(ENV_MAX_PENDING_EVENTS) {
            b = b.with_max_pending_events(parse_num(ENV_MAX_PENDING_EVENTS, &v)?);
        }
        if let Some(v) = get(ENV_OVERFLOW_POLICY) {
            let p = v
                .parse()
                .map_err(|reason: String| ConfigError::new(ENV_OVERFLOW_POLICY, &v, reason))?;
            b = b.with_overflow_policy(p);
        }
        if let Some(v) = get(ENV_PUBLISH_TIMEOUT) {
            b = b.with_publish_timeout(parse_secs(ENV_PUBLISH_TIMEOUT, &v)?);
        }
        if let Some(v) = get(ENV_CONFIRM_WAIT) {
            b = b.with_confirm_wait(parse_secs(ENV_CONFIRM_WAIT, &v)?);
        }
        if let Some(v) = get(ENV_MAX_PUBLISH_ATTEMPTS) {
            b = b.with_max_publish_attempts(parse_num(ENV_MAX_PUBLISH_ATTEMPTS, &v)?);
        }
        if let Some(v) = get(ENV_MAX_IN_FLIGHT) {
            b = b.with_max_in_flight(parse_num(ENV_MAX_IN_FLIGHT, &v)?);
        }
        if let Some(v) = get(ENV_MAX_EVENT_BYTES) {
            b = b.with_max_event_bytes(parse_num(ENV_MAX_EVENT_BYTES, &v)?);
        }
        if let Some(v) = get(ENV_MAX_PENDING_BYTES) {
            b = b.with_max_pending_bytes(Some(parse_num(ENV_MAX_PENDING_BYTES, &v)?));
        }
        if let Some(v) = get(ENV_MAX_PENDING_AGE) {
            b = b.with_max_pending_age(Some(parse_secs(ENV_MAX_PENDING_AGE, &v)?));
        }
        b.build_named(true)
    }

    /// Whether start-up requires the broker.
    pub fn required(&self) -> bool {
        self.required
    }
    /// Connection attempts before the state is `failed`.
    pub fn max_retries(&self) -> u32 {
        self.max_retries
    }
    /// The base backoff delay.
    pub fn retry_delay(&self) -> Duration {
        self.retry_delay
    }
    /// The backoff cap.
    pub fn max_retry_delay(&self) -> Duration {
        self.max_retry_delay
    }
    /// The pending buffer's bound in events.
    pub fn max_pending_events(&self) -> usize {
        self.max_pending_events
    }
    /// What happens when the buffer is full.
    pub fn overflow_policy(&self) -> OverflowPolicy {
        self.overflow_policy
    }
    /// The longest wait for a confirm.
    pub fn publish_timeout(&self) -> Duration {
        self.publish_timeout
    }
    /// The longest a `publish` call waits for the broker's confirm before it
    /// answers `Buffered` (the event then stays in the buffer until confirmed).
    pub fn confirm_wait(&self) -> Duration {
        self.confirm_wait
    }
    /// Sends of one event the broker nacks before it is given up as refused.
    pub fn max_publish_attempts(&self) -> u32 {
        self.max_publish_attempts
    }
    /// Unconfirmed publishes allowed at once while draining.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }
    /// The largest encoded event accepted, in bytes.
    pub fn max_event_bytes(&self) -> usize {
        self.max_event_bytes
    }
    /// The pending buffer's bound in encoded bytes, if any.
    pub fn max_pending_bytes(&self) -> Option<usize> {
        self.max_pending_bytes
    }
    /// The age after which a pending event expires, if any.
    pub fn max_pending_age(&self) -> Option<Duration> {
        self.max_pending_age
    }
}

/// Builds a [`Config`]; each setter documents its default.
#[derive(Debug, Clone)]
pub struct ConfigBuilder {
    config: Config,
}

impl ConfigBuilder {
    /// Start-up waits for the broker and fails without it. Default: false.
    pub fn with_required(mut self, required: bool) -> Self {
        self.config.required = required;
        self
    }
    /// Connection attempts before the state is `failed`, at least 1. Default: 5.
    pub fn with_max_retries(mut self, n: u32) -> Self {
        self.config.max_retries = n;
        self
    }
    /// The base backoff delay, above zero. Default: 5 s.
    pub fn with_retry_delay(mut self, d: Duration) -> Self {
        self.config.retry_delay = d;
        self
    }
    /// The backoff cap, at least the base delay. Default: 60 s.
    pub fn with_max_retry_delay(mut self, d: Duration) -> Self {
        self.config.max_retry_delay = d;
        self
    }
    /// The pending buffer's bound (0 keeps nothing). Default: 1000.
    pub fn with_max_pending_events(mut self, n: usize) -> Self {
        self.config.max_pending_events = n;
        self
    }
    /// What happens when the buffer is full. Default: drop-newest.
    pub fn with_overflow_policy(mut self, p: OverflowPolicy) -> Self {
        self.config.overflow_policy = p;
        self
    }
    /// The longest wait for one confirm, above zero. Default: 10 s.
    pub fn with_publish_timeout(mut self, d: Duration) -> Self {
        self.config.publish_timeout = d;
        self
    }
    /// The longest a `publish` call waits for the broker's confirm, above
    /// zero: past it, the call answers `Buffered` and the event stays in the
    /// buffer until the confirm comes (or is sent again after a connection
    /// loss). A wait longer than the publish timeout ends at the timeout.
    /// Default: 0.5 s.
    pub fn with_confirm_wait(mut self, d: Duration) -> Self {
        self.config.confirm_wait = d;
        self
    }
    /// Sends of one event that the broker nacks before the event is given up
    /// as refused (logged with its id and type, counted), at least 1.
    /// Default: 5.
    pub fn with_max_publish_attempts(mut self, n: u32) -> Self {
        self.config.max_publish_attempts = n;
        self
    }
    /// Unconfirmed publishes at once while draining, at least 1. Default: 1024.
    pub fn with_max_in_flight(mut self, n: usize) -> Self {
        self.config.max_in_flight = n;
        self
    }
    /// The largest encoded event, at least 1 byte. Default: 8 MiB.
    pub fn with_max_event_bytes(mut self, n: usize) -> Self {
        self.config.max_event_bytes = n;
        self
    }

    /// The pending buffer's bound in encoded bytes, at least 1; `None` bounds
    /// the buffer by its count only. Default: 64 MiB.
    pub fn with_max_pending_bytes(mut self, n: Option<usize>) -> Self {
        self.config.max_pending_bytes = n;
        self
    }
    /// Pending events older than this expire, counted and logged; above zero.
    /// Default: never.
    pub fn with_max_pending_age(mut self, d: Option<Duration>) -> Self {
        self.config.max_pending_age = d;
        self
    }
    /// Checks the settings and builds the config.
    pub fn build(self) -> Result<Config, ConfigError> {
        self.build_named(false)
    }

    fn build_named(self, env: bool) -> Result<Config, ConfigError> {
        let c = self.config;
        let name = |env_name: &'static str, setter: &'static str| {
            if env { env_name } else { setter }
        };
        if c.max_retries == 0 {
            return Err(ConfigError::new(
                name(ENV_MAX_RETRIES, "max_retries"),
                "0",
                "must be at least 1",
            ));
        }
        if c.retry_delay.is_zero() {
            return Err(ConfigError::new(
                name(ENV_RETRY_DELAY, "retry_delay"),
                &format!("{}", c.retry_delay.as_secs_f64()),
                "must be above zero",
            ));
        }
        if c.max_retry_delay < c.retry_delay {
            return Err(ConfigError::new(
                name(ENV_MAX_RETRY_DELAY, "max_retry_delay"),
                &format!("{}", c.max_retry_delay.as_secs_f64()),
                format!(
                    "must be at least the retry delay ({} s)",
                    c.retry_delay.as_secs_f64()
                ),
            ));
        }
        if c.publish_timeout.is_zero() {
            return Err(ConfigError::new(
                name(ENV_PUBLISH_TIMEOUT, "publish_timeout"),
                "0",
                "must be above zero",
            ));
        }
        if c.confirm_wait.is_zero() {
            return Err(ConfigError::new(
                name(ENV_CONFIRM_WAIT, "confirm_wait"),
                "0",
                "must be above zero",
            ));
        }
        if c.max_publish_attempts == 0 {
            return Err(ConfigError::new(
                name(ENV_MAX_PUBLISH_ATTEMPTS, "max_publish_attempts"),
                "0",
                "must be at least 1",
            ));
        }
        if c.max_in_flight == 0 {
            return Err(ConfigError::new(
                name(ENV_MAX_IN_FLIGHT, "max_in_flight"),
                "0",
                "must be at least 1",
            ));
        }
        if c.max_event_bytes == 0 {
            return Err(ConfigError::new(
                name(ENV_MAX_EVENT_BYTES, "max_event_bytes"),
                "0",
                "must be at least 1",
            ));
        }
        if c.max_pending_bytes == Some(0) {
            return Err(ConfigError::new(
                name(ENV_MAX_PENDING_BYTES, "max_pending_bytes"),
                "0",
                "must be at least 1",
            ));
        }
        if c.max_pending_age.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::new(
                name(ENV_MAX_PENDING_AGE, "max_pending_age"),
                "0",
                "must be above zero",
            ));
        }
        Ok(c)
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
