//! Picks the backend: RabbitMQ when `RABBITMQ_URL` is set, NATS JetStream
//! when `NATS_URL` is set (both set is a start-up error), otherwise the
//! embedded in-memory broker.

use std::sync::Arc;

use flow_events_core::{Backend, Config, ConfigError, ENV_URL};

/// The AMQP backend's own settings (`RABBITMQ_QUEUE_TYPE`); nothing in a
/// build without the `amqp` feature.
#[cfg(feature = "amqp")]
pub(crate) type AmqpSettings = flow_events_amqp::AmqpOptions;
/// The AMQP backend's own settings; nothing in a build without the `amqp` feature.
#[cfg(not(feature = "amqp"))]
pub(crate) type AmqpSettings = ();

/// Reads the AMQP backend's own settings through `lookup`.
#[cfg(feature = "amqp")]
pub(crate) fn amqp_settings(
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<AmqpSettings, ConfigError> {
    flow_events_amqp::AmqpOptions::from_lookup(lookup)
}

/// Reads the AMQP backend's own settings: none without the `amqp` feature.
#[cfg(not(feature = "amqp"))]
pub(crate) fn amqp_settings(
    _lookup: impl Fn(&str) -> Option<String>,
) -> Result<AmqpSettings, ConfigError> {
    Ok(())
}

/// Checks what no retry can fix before anything starts: a URL the backend
/// cannot parse, or a scheme other than `amqp`/`amqps`. An error names
/// `RABBITMQ_URL`.
pub(crate) fn check(config: &Config) -> Result<(), ConfigError> {
    match config.url() {
        Some(url) => check_amqp(url),
        None => Ok(()),
    }
}

#[cfg(feature = "amqp")]
fn check_amqp(url: &flow_events_core::BrokerUrl) -> Result<(), ConfigError> {
    flow_events_amqp::check_url(url)
        .map_err(|e| ConfigError::new(ENV_URL, url.redacted(), e.message()))
}

/// Without the backend, [`select`] refuses the URL with its own message.
#[cfg(not(feature = "amqp"))]
fn check_amqp(_url: &flow_events_core::BrokerUrl) -> Result<(), ConfigError> {
    Ok(())
}

/// The chosen backend and how to describe it in the start-up log.
pub(crate) struct Selected {
    pub(crate) backend: Arc<dyn Backend>,
    /// `amqp`, `nats` or `memory`.
    pub(crate) name: &'static str,
    /// A sentence for the start-up log.
    pub(crate) description: String,
    /// The embedded broker, kept alive as long as the service runs.
    #[cfg(feature = "memory")]
    _broker: Option<flow_events_memory::MemoryBroker>,
}

impl std::fmt::Debug for Selected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Selected")
            .field("name", &self.name)
            .field("description", &self.description)
            .finish_non_exhaustive()
    }
}

/// `NATS_URL`: picks the NATS backend (read here, so that a build without
/// the `nats` feature can still say it is set).
const ENV_NATS_URL: &str = "NATS_URL";

/// Builds the backend for `config`, `amqp` and the environment. `service`
/// names the connection on the broker; `ca_pem`: the CA certificates for
/// `amqps`, from `RABBITMQ_CA_FILE`.
pub(crate) fn select(
    config: &Config,
    amqp_settings: &AmqpSettings,
    service: &str,
    ca_pem: Option<&str>,
) -> anyhow::Result<Selected> {
    select_with(config, amqp_settings, service, ca_pem, |name| {
        std::env::var(name).ok()
    })
}

/// Like [`select`], reading the NATS variables through `lookup`.
fn select_with(
    config: &Config,
    amqp_settings: &AmqpSettings,
    service: &str,
    ca_pem: Option<&str>,
    lookup: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<Selected> {
    let nats_url = lookup(ENV_NATS_URL).filter(|v| !v.trim().is_empty());
    match (config.url(), nats_url) {
        (Some(_), Some(_)) => anyhow::bail!(
            "both {ENV_URL} and {ENV_NATS_URL} are set: set one of them \
             ({ENV_URL} for RabbitMQ, {ENV_NATS_URL} for NATS)"
        ),
        (Some(url), None) => amqp(config, amqp_settings, service, url.redacted(), ca_pem),
        (None, Some(_)) => nats(config, service, lookup),
        (None, None) => memory(),
    }
}

#[cfg(feature = "nats")]
fn nats(
    config: &Config,
    service: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<Selected> {
    use flow_events_nats::{NatsBackend, NatsConfig};
    let nats = NatsConfig::from_lookup(lookup)?;
    let description = format!(
        "NATS at {} (stream {}, subjects {}.>, {})",
        nats.redacted_url(),
        nats.stream(),
        nats.subject_prefix(),
        if config.required() {
            "required: start-up waits for it"
        } else {
            "optional: events are buffered while it is away"
        }
    );
    let backend = NatsBackend::new(config, nats).with_connection_name(service);
    Ok(Selected {
        backend: Arc::new(backend),
        name: "nats",
        description,
        #[cfg(feature = "memory")]
        _broker: None,
    })
}

#[cfg(not(feature = "nats"))]
fn nats(
    _config: &Config,
    _service: &str,
    _lookup: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<Selected> {
    anyhow::bail!(
        "{ENV_NATS_URL} is set but this build has no NATS backend (built without the \
         `nats` feature: cargo build -p admin-service --features nats); unset {ENV_NATS_URL} \
         to use the in-memory broker"
    )
}

#[cfg(feature = "amqp")]
fn amqp(
    config: &Config,
    options: &AmqpSettings,
    service: &str,
    redacted: &str,
    ca_pem: Option<&str>,
) -> anyhow::Result<Selected> {
    use flow_events_amqp::AmqpBackend;
    let mut options = options.clone().with_app_id(service);
    if let Some(pem) = ca_pem {
        options = options.with_tls_ca_pem(pem);
    }
    let backend = AmqpBackend::new(config, options);
    Ok(Selected {
        backend: Arc::new(backend),
        name: "amqp",
        description: format!(
            "RabbitMQ at {redacted} (exchange {}, {})",
            config.exchange(),
            if config.required() {
                "required: start-up waits for it"
            } else {
                "optional: events are buffered while it is away"
            }
        ),
        #[cfg(feature = "memory")]
        _broker: None,
    })
}

#[cfg(not(feature = "amqp"))]
fn amqp(
    _config: &Config,
    _options: &AmqpSettings,
    _service: &str,
    redacted: &str,
    _ca_pem: Option<&str>,
) -> anyhow::Result<Selected> {
    anyhow::bail!(
        "{ENV_URL} is set ({redacted}) but this build has no RabbitMQ backend \
         (built without the `amqp` feature); unset {ENV_URL} to use the in-memory broker"
    )
}

#[cfg(feature = "memory")]
fn memory() -> anyhow::Result<Selected> {
    let broker = flow_events_memory::MemoryBroker::new();
    Ok(Selected {
        backend: Arc::new(broker.backend()),
        name: "memory",
        description: format!(
            "the embedded in-memory broker (neither {ENV_URL} nor {ENV_NATS_URL} is set): \
             events stay inside this process"
        ),
        _broker: Some(broker),
    })
}

#[cfg(not(feature = "memory"))]
fn memory() -> anyhow::Result<Selected> {
    anyhow::bail!(
        "neither {ENV_URL} nor {ENV_NATS_URL} is set and this build has no in-memory backend \
         (built without the `memory` feature); set {ENV_URL}, for example \
         amqp://guest:guest@localhost:5672/, or {ENV_NATS_URL}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn both_urls_set_is_an_error_naming_both() {
        let config = Config::builder()
            .with_url("amqp://guest:secret@localhost:5672/")
            .build()
            .expect("config");
        let e = select_with(
            &config,
            &AmqpSettings::default(),
            "svc",
            None,
            lookup(&[("NATS_URL", "nats://t0ken@h:4222")]),
        )
        .expect_err("both set");
        let text = format!("{e:#}");
        assert!(
            text.contains("RABBITMQ_URL") && text.contains("NATS_URL"),
            "{text}"
        );
        assert!(
            !text.contains("secret") && !text.contains("t0ken"),
            "{text}"
        );
    }

    #[cfg(feature = "nats")]
    #[test]
    fn nats_url_picks_nats_and_health_names_it() {
        let config = Config::default();
        let selected = select_with(
            &config,
            &AmqpSettings::default(),
            "svc",
            None,
            lookup(&[
                ("NATS_URL", "nats://alice:s3cret@localhost:4222"),
                ("NATS_STREAM", "ADMIN"),
            ]),
        )
        .expect("nats");
        assert_eq!(selected.name, "nats");
        let info = selected.backend.info();
        assert_eq!(info.dependency, "nats");
        assert_eq!(info.url, "nats://alice:***@localhost:4222");
        assert!(
            selected.description.contains("stream ADMIN"),
            "{}",
            selected.description
        );
        assert!(!selected.description.contains("s3cret"));
    }

    #[cfg(feature = "memory")]
    #[test]
    fn nothing_set_picks_memory() {
        let selected = select_with(
            &Config::default(),
            &AmqpSettings::default(),
            "svc",
            None,
            lookup(&[("NATS_URL", "  ")]),
        )
        .expect("memory");
        assert_eq!(selected.name, "memory");
    }
}
