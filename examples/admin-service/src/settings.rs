//! The service's settings: its own variables, then the resilience ones of
//! [`Config::from_lookup`] and the broker's (`RABBITMQ_URL`, ...) of the AMQP
//! backend's configuration. An invalid value is a [`ConfigError`] naming the
//! variable.
//!
//! [`variables`] lists every variable read here, taken from the parsing code
//! itself: the tests build a spawned service's environment from it, and check
//! the compose files against it.

use std::cell::RefCell;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use flow_events_core::{Config, ConfigError};

use crate::backend::{self, AmqpSettings};

/// `PORT`: the HTTP port (default 8012).
pub(crate) const ENV_PORT: &str = "PORT";
/// `SERVICE_NAME`: the name in `/health` and the logs (default `Admin Service`).
pub(crate) const ENV_SERVICE_NAME: &str = "SERVICE_NAME";
/// `LOG_FORMAT`: `human` (default) or `json`.
pub(crate) const ENV_LOG_FORMAT: &str = "LOG_FORMAT";
/// `SHUTDOWN_GRACE`: seconds to finish requests and drain pending events on shutdown (default 10).
pub(crate) const ENV_SHUTDOWN_GRACE: &str = "SHUTDOWN_GRACE";
/// `RUST_LOG`: the log filter (default `info,lapin=off`).
pub(crate) const ENV_RUST_LOG: &str = "RUST_LOG";
/// `API_TOKEN`: when set, `POST /events` and `GET /metrics` need `Authorization: Bearer <token>`.
pub(crate) const ENV_API_TOKEN: &str = "API_TOKEN";
/// `API_TOKEN_FILE`: a file holding the token (a container secret); the same as `API_TOKEN`.
pub(crate) const ENV_API_TOKEN_FILE: &str = "API_TOKEN_FILE";
/// `RABBITMQ_URL_FILE`: a file holding `RABBITMQ_URL` (a container secret); not both.
pub(crate) const ENV_URL_FILE: &str = "RABBITMQ_URL_FILE";
/// `FLOW_EVENTS_OUTBOX_PATH`: file of the durable outbox (default: none,
/// events pending in memory only).
pub(crate) const ENV_OUTBOX_PATH: &str = "FLOW_EVENTS_OUTBOX_PATH";
/// `MAX_BODY_BYTES`: the largest request body accepted (default 1 MiB).
pub(crate) const ENV_MAX_BODY_BYTES: &str = "MAX_BODY_BYTES";
/// `MAX_CONCURRENT_REQUESTS`: `POST /events` requests served at once; more get 503 (default 32).
pub(crate) const ENV_MAX_CONCURRENT_REQUESTS: &str = "MAX_CONCURRENT_REQUESTS";
/// `HTTP_HEADER_TIMEOUT`: seconds a client has to send a request's headers (default 10).
pub(crate) const ENV_HTTP_HEADER_TIMEOUT: &str = "HTTP_HEADER_TIMEOUT";
/// `HTTP_REQUEST_TIMEOUT`: seconds for a whole request, body and answer (default 30).
pub(crate) const ENV_HTTP_REQUEST_TIMEOUT: &str = "HTTP_REQUEST_TIMEOUT";
/// `HTTP_IDLE_TIMEOUT`: seconds an idle keep-alive connection stays open (default 5).
pub(crate) const ENV_HTTP_IDLE_TIMEOUT: &str = "HTTP_IDLE_TIMEOUT";

pub(crate) const DEFAULT_PORT: u16 = 8012;
pub(crate) const DEFAULT_SERVICE_NAME: &str = "Admin Service";
pub(crate) const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
pub(crate) const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// With 1 MiB bodies, 32 requests at once hold at most about 64 MiB (a body and
/// its payload's copy each), beside the 64 MiB of pending events.
pub(crate) const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 32;
pub(crate) const DEFAULT_HTTP_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
pub(crate) const DEFAULT_HTTP_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
pub(crate) const DEFAULT_HTTP_IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest duration setting accepted: a year. Anything longer is a mistake
/// (and far enough in the future overflows a clock).
const MAX_SECONDS: f64 = 365.0 * 24.0 * 3600.0;
/// lapin reports connection failures at ERROR level that the resilience layer
/// already reports (once, with the reason) and handles: off unless asked for.
pub(crate) const DEFAULT_LOG_FILTER: &str = "info,lapin=off";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogFormat {
    /// One readable line per event.
    Human,
    /// One JSON object per line.
    Json,
}

/// The API token; `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct ApiToken(String);

impl ApiToken {
    /// The token's bytes, for the comparison.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

#[cfg(test)]
impl ApiToken {
    pub(crate) fn for_tests(token: &str) -> Self {
        Self(token.to_owned())
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(***)")
    }
}

/// The HTTP server's limits and timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HttpLimits {
    pub(crate) max_body_bytes: usize,
    pub(crate) max_concurrent_requests: usize,
    pub(crate) header_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) idle_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
            header_timeout: DEFAULT_HTTP_HEADER_TIMEOUT,
            request_timeout: DEFAULT_HTTP_REQUEST_TIMEOUT,
            idle_timeout: DEFAULT_HTTP_IDLE_TIMEOUT,
        }
    }
}

/// Everything the service reads from the environment.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) port: u16,
    pub(crate) service_name: String,
    pub(crate) log_format: LogFormat,
    pub(crate) log_filter: String,
    pub(crate) shutdown_grace: Duration,
    pub(crate) api_token: Option<ApiToken>,
    pub(crate) http: HttpLimits,
    /// The durable outbox file, if any.
    pub(crate) outbox_path: Option<PathBuf>,
    /// The resilience settings.
    pub(crate) config: Config,
    /// The broker's settings (`RABBITMQ_URL`, `RABBITMQ_EXCHANGE`, ...).
    pub(crate) amqp: AmqpSettings,
}

/// Every variable the service reads, in the order it reads them: the
/// service's own, then those of [`Config::from_lookup`] and of the backend's
/// configuration. Taken by reading an
/// empty environment and noting each name asked for.
// Read by the end-to-end tests, which include this file (`tests/e2e/main.rs`).
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn variables() -> Vec<String> {
    let asked = RefCell::new(Vec::<String>::new());
    let _ = Settings::from_lookup(|name| {
        let mut asked = asked.borrow_mut();
        if !asked.iter().any(|n| n == name) {
            asked.push(name.to_owned());
        }
        None
    });
    asked.into_inner()
}

impl Settings {
    /// Reads the process environment.
    pub(crate) fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads variables through `lookup`; unset or empty ones keep their defaults.
    pub(crate) fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let port = match get(ENV_PORT) {
            Some(v) => parse_port(&v)?,
            None => DEFAULT_PORT,
        };
        let service_name = get(ENV_SERVICE_NAME)
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned());
        let log_format = match get(ENV_LOG_FORMAT) {
            Some(v) => parse_log_format(&v)?,
            None => LogFormat::Human,
        };
        let log_filter = get(ENV_RUST_LOG).unwrap_or_else(|| DEFAULT_LOG_FILTER.to_owned());
        let shutdown_grace = match get(ENV_SHUTDOWN_GRACE) {
            Some(v) => parse_secs(ENV_SHUTDOWN_GRACE, &v, true)?,
            None => DEFAULT_SHUTDOWN_GRACE,
        };
        let api_token = api_token(get(ENV_API_TOKEN), get(ENV_API_TOKEN_FILE))?;
        let defaults = HttpLimits::default();
        let http = HttpLimits {
            max_body_bytes: match get(ENV_MAX_BODY_BYTES) {
                Some(v) => parse_count(ENV_MAX_BODY_BYTES, &v)?,
                None => defaults.max_body_bytes,
            },
            max_concurrent_requests: match get(ENV_MAX_CONCURRENT_REQUESTS) {
                Some(v) => parse_count(ENV_MAX_CONCURRENT_REQUESTS, &v)?,
                None => defaults.max_concurrent_requests,
            },
            header_timeout: match get(ENV_HTTP_HEADER_TIMEOUT) {
                Some(v) => parse_secs(ENV_HTTP_HEADER_TIMEOUT, &v, false)?,
                None => defaults.header_timeout,
            },
            request_timeout: match get(ENV_HTTP_REQUEST_TIMEOUT) {
                Some(v) => parse_secs(ENV_HTTP_REQUEST_TIMEOUT, &v, false)?,
                None => defaults.request_timeout,
            },
            idle_timeout: match get(ENV_HTTP_IDLE_TIMEOUT) {
                Some(v) => parse_secs(ENV_HTTP_IDLE_TIMEOUT, &v, false)?,
                None => defaults.idle_timeout,
            },
        };
        let outbox_path = get(ENV_OUTBOX_PATH).map(|v| PathBuf::from(v.trim()));
        let config = Config::from_lookup(&lookup)?;
        // `RABBITMQ_URL` may come from a file; the backend reads it as if set.
        let url_from_file = match get(ENV_URL_FILE) {
            Some(path) if get(backend::ENV_RABBITMQ_URL).is_some() => {
                return Err(ConfigError::new(
                    ENV_URL_FILE,
                    &path,
                    format!(
                        "set {} or {ENV_URL_FILE}, not both",
                        backend::ENV_RABBITMQ_URL
                    ),
                ));
            }
            Some(path) => Some(read_file(ENV_URL_FILE, path.trim())?.trim().to_owned()),
            None => None,
        };
        let amqp = backend::amqp_settings(|name| match &url_from_file {
            Some(url) if name == backend::ENV_RABBITMQ_URL => Some(url.clone()),
            _ => lookup(name),
        })?;
        check_durations(get)?;
        Ok(Self {
            port,
            service_name,
            log_format,
            log_filter,
            shutdown_grace,
            api_token,
            http,
            outbox_path,
            config,
            amqp,
        })
    }
}

/// The text of the file at `path`, named by `var`; never quoted in an error.
fn read_file(var: &str, path: &str) -> Result<String, ConfigError> {
    std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(var, path, format!("cannot read it: {e}")))
}

/// The token from `API_TOKEN` or the file `API_TOKEN_FILE` names (not both),
/// trimmed of surrounding whitespace (a secret file often ends with a newline).
fn api_token(
    inline: Option<String>,
    file: Option<String>,
) -> Result<Option<ApiToken>, ConfigError> {
    let token = match (inline, file) {
        (None, None) => return Ok(None),
        (Some(_), Some(path)) => {
            return Err(ConfigError::new(
                ENV_API_TOKEN_FILE,
                &path,
                format!("set {ENV_API_TOKEN} or {ENV_API_TOKEN_FILE}, not both"),
            ));
        }
        (Some(token), None) => token,
        (None, Some(path)) => read_file(ENV_API_TOKEN_FILE, path.trim())?,
    };
    let token = token.trim();
    if token.is_empty() {
        return Err(ConfigError::new(
            ENV_API_TOKEN_FILE,
            "",
            "the token file is empty",
        ));
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        // Never quote the token: name the variable only.
        return Err(ConfigError::new(
            ENV_API_TOKEN,
            "***",
            "the token must not contain whitespace or control characters",
        ));
    }
    Ok(Some(ApiToken(token.to_owned())))
}

/// The durations of the core settings are read by the core; here they are
/// bounded too, so that none is impossible to wait for.
fn check_durations(get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
    use flow_events_core::{
        ENV_CONFIRM_WAIT, ENV_MAX_PENDING_AGE, ENV_MAX_RETRY_DELAY, ENV_PUBLISH_TIMEOUT,
        ENV_RETRY_DELAY,
    };
    for var in [
        ENV_RETRY_DELAY,
        ENV_MAX_RETRY_DELAY,
        ENV_PUBLISH_TIMEOUT,
        ENV_CONFIRM_WAIT,
        ENV_MAX_PENDING_AGE,
    ] {
        if let Some(v) = get(var) {
            parse_secs(var, &v, true)?;
        }
    }
    Ok(())
}

fn parse_port(v: &str) -> Result<u16, ConfigError> {
    match v.trim().parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(ConfigError::new(
            ENV_PORT,
            v,
            "expected a port number from 1 to 65535",
        )),
    }
}

fn parse_log_format(v: &str) -> Result<LogFormat, ConfigError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "json" => Ok(LogFormat::Json),
        "human" | "text" | "pretty" => Ok(LogFormat::Human),
        _ => Err(ConfigError::new(
            ENV_LOG_FORMAT,
            v,
            "expected json or human",
        )),
    }
}

fn parse_count(var: &str, v: &str) -> Result<usize, ConfigError> {
    match v.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(ConfigError::new(
            var,
            v,
            "expected a whole number above zero",
        )),
    }
}

/// Seconds, fractions allowed, at most a year; zero only when `zero_ok`.
fn parse_secs(var: &str, v: &str, zero_ok: bool) -> Result<Duration, ConfigError> {
    let secs: f64 = v
        .trim()
        .parse()
        .map_err(|_| ConfigError::new(var, v, "expected a number of seconds"))?;
    if !secs.is_finite() || secs < 0.0 || (secs == 0.0 && !zero_ok) {
        let what = if zero_ok { "non-negative" } else { "positive" };
        return Err(ConfigError::new(
            var,
            v,
            format!("expected a {what} number of seconds"),
        ));
    }
    if secs > MAX_SECONDS {
        return Err(ConfigError::new(
            var,
            v,
            "expected at most a year of seconds (31536000)",
        ));
    }
    Duration::try_from_secs_f64(secs)
        .map_err(|_| ConfigError::new(var, v, "number of seconds out of range"))
}

#[cfg(test)]
#[path = "settings_tests.rs"]
mod tests;
