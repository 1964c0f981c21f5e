//! The service's settings: its own variables, then the `RABBITMQ_*` ones of
//! [`Config::from_env`]. An invalid value is a [`ConfigError`] naming the variable.

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

pub(crate) const DEFAULT_PORT: u16 = 8012;
pub(crate) const DEFAULT_SERVICE_NAME: &str = "Admin Service";
pub(crate) const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
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

/// Everything the service reads from the environment.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) port: u16,
    pub(crate) service_name: String,
    pub(crate) log_format: LogFormat,
    pub(crate) log_filter: String,
    pub(crate) shutdown_grace: Duration,
    pub(crate) config: Config,
    /// The AMQP backend's own settings (`RABBITMQ_QUEUE_TYPE`).
    pub(crate) amqp: AmqpSettings,
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
            Some(v) => parse_grace(&v)?,
            None => DEFAULT_SHUTDOWN_GRACE,
        };
        let config = Config::from_lookup(&lookup)?;
        let amqp = backend::amqp_settings(&lookup)?;
        Ok(Self {
            port,
            service_name,
            log_format,
            log_filter,
            shutdown_grace,
            config,
            amqp,
        })
    }
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

fn parse_grace(v: &str) -> Result<Duration, ConfigError> {
    let secs: f64 = v
        .trim()
        .parse()
        .map_err(|_| ConfigError::new(ENV_SHUTDOWN_GRACE, v, "expected a number of seconds"))?;
    if !secs.is_finite() || secs < 0.0 {
        return Err(ConfigError::new(
            ENV_SHUTDOWN_GRACE,
            v,
            "expected a non-negative number of seconds",
        ));
    }
    Duration::try_from_secs_f64(secs)
        .map_err(|_| ConfigError::new(ENV_SHUTDOWN_GRACE, v, "number of seconds out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults() {
        let s = from(&[]).unwrap();
        assert_eq!(s.port, 8012);
        assert_eq!(s.service_name, "Admin Service");
        assert_eq!(s.log_format, LogFormat::Human);
        assert_eq!(s.log_filter, "info,lapin=off");
        assert_eq!(s.shutdown_grace, Duration::from_secs(10));
        assert_eq!(s.config, Config::default());
    }

    #[test]
    fn reads_service_variables() {
        let s = from(&[
            (ENV_PORT, "9000"),
            (ENV_SERVICE_NAME, " Billing "),
            (ENV_LOG_FORMAT, "JSON"),
            (ENV_SHUTDOWN_GRACE, "2.5"),
            ("RABBITMQ_EXCHANGE", "my.events"),
        ])
        .unwrap();
        assert_eq!(s.port, 9000);
        assert_eq!(s.service_name, "Billing");
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(s.shutdown_grace, Duration::from_millis(2500));
        assert_eq!(s.config.exchange(), "my.events");
    }

    #[cfg(feature = "amqp")]
    #[test]
    fn reads_the_queue_type() {
        use flow_events_core::QueueKind;
        assert_eq!(from(&[]).unwrap().amqp.queue_kind(), QueueKind::Classic);
        let s = from(&[("RABBITMQ_QUEUE_TYPE", "quorum")]).unwrap();
        assert_eq!(s.amqp.queue_kind(), QueueKind::Quorum);
    }

    #[test]
    fn invalid_values_name_their_variable() {
        for (var, value) in [
            (ENV_PORT, "abc"),
            (ENV_PORT, "0"),
            (ENV_PORT, "70000"),
            (ENV_LOG_FORMAT, "xml"),
            (ENV_SHUTDOWN_GRACE, "soon"),
            (ENV_SHUTDOWN_GRACE, "-1"),
            ("RABBITMQ_MAX_RETRIES", "x"),
            #[cfg(feature = "amqp")]
            ("RABBITMQ_QUEUE_TYPE", "stream"),
        ] {
            let err = from(&[(var, value)]).expect_err(var);
            assert_eq!(err.variable(), var);
            let text = err.to_string();
            assert!(
                text.starts_with(&format!("invalid value {value:?} for {var}: ")),
                "{text}"
            );
        }
    }
}
