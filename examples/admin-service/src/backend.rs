//! Picks the backend: RabbitMQ when `RABBITMQ_URL` is set, NATS JetStream
//! when `NATS_URL` is set (both set is a start-up error), otherwise the
//! embedded in-memory broker.

use std::sync::Arc;

use flow_events_core::{Backend, Config, ConfigError};

/// `RABBITMQ_URL`: picks the AMQP backend (named here too, so that a build
/// without the `amqp` feature can still say it is set).
pub(crate) const ENV_RABBITMQ_URL: &str = "RABBITMQ_URL";

/// The AMQP backend's configuration (`RABBITMQ_URL`, `RABBITMQ_EXCHANGE`,
/// `RABBITMQ_QUEUE_TYPE`, `RABBITMQ_CA_FILE`).
#[cfg(feature = "amqp")]
pub(crate) type AmqpSettings = flow_events_amqp::AmqpConfig;

/// Without the `amqp` feature: only the URL, so that [`select`] can refuse it.
#[cfg(not(feature = "amqp"))]
#[derive(Debug, Clone, Default)]
pub(crate) struct AmqpSettings {
    url: Option<flow_events_core::BrokerUrl>,
}

#[cfg(not(feature = "amqp"))]
impl AmqpSettings {
    /// `RABBITMQ_URL`, if set.
    pub(crate) fn url(&self) -> Option<&flow_events_core::BrokerUrl> {
        self.url.as_ref()
    }
}

/// Reads the AMQP backend's configuration through `lookup`: a URL no retry
/// can fix (a scheme other than `amqp`/`amqps`, say) is an error naming
/// `RABBITMQ_URL`, whether the broker is required or not.
#[cfg(feature = "amqp")]
pub(crate) fn amqp_settings(
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<AmqpSettings, ConfigError> {
    flow_events_amqp::AmqpConfig::from_lookup(lookup)
}

/// Reads `RABBITMQ_URL` only: without the `amqp` feature, [`select`] refuses
/// it with its own message.
#[cfg(not(feature = "amqp"))]
pub(crate) fn amqp_settings(
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<AmqpSettings, ConfigError> {
    let url = lookup(ENV_RABBITMQ_URL).filter(|v| !v.trim().is_empty());
    Ok(AmqpSettings {
        url: url.map(|v| flow_events_core::BrokerUrl::new(v.trim())),
    })
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
/// names the connection on the broker.
pub(crate) fn select(
    config: &Config,
    amqp_settings: &AmqpSettings,
    service: &str,
) -> anyhow::Result<Selected> {
    select_with(config, amqp_settings, service, |name| {
        std::env::var(name).ok()
    })
}

/// Like [`select`], reading the NATS variables through `lookup`.
fn select_with(
    config: &Config,
    amqp_settings: &AmqpSettings,
    service: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<Selected> {
    let nats_url = lookup(ENV_NATS_URL).filter(|v| !v.trim().is_empty());
    match (amqp_settings.url(), nats_url) {
        (Some(_), Some(_)) => anyhow::bail!(
            "both {ENV_RABBITMQ_URL} and {ENV_NATS_URL} are set: set one of them \
             ({ENV_RABBITMQ_URL} for RabbitMQ, {ENV_NATS_URL} for NATS)"
        ),
        (Some(url), None) => amqp(config, amqp_settings, service, url.redacted()),
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
    amqp: &AmqpSettings,
    service: &str,
    redacted: &str,
) -> anyhow::Result<Selected> {
    use flow_events_amqp::AmqpBackend;
    let amqp_for_service = amqp.clone().into_builder().with_app_id(service).build()?;
    let backend = AmqpBackend::new(config, amqp_for_service);
    Ok(Selected {
        backend: Arc::new(backend),
        name: "amqp",
        description: format!(
            "RabbitMQ at {redacted} (exchange {}, {})",
            amqp.exchange(),
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
    _amqp: &AmqpSettings,
    _service: &str,
    redacted: &str,
) -> anyhow::Result<Selected> {
    anyhow::bail!(
        "{ENV_RABBITMQ_URL} is set ({redacted}) but this build has no RabbitMQ backend \
         (built without the `amqp` feature); unset {ENV_RABBITMQ_URL} to use the in-memory broker"
    )
}

#[cfg(feature = "memory")]
fn memory() -> anyhow::Result<Selected> {
    let broker = flow_events_memory::MemoryBroker::new();
    Ok(Selected {
        backend: Arc::new(broker.backend()),
        name: "memory",
        description: format!(
            "the embedded in-memory broker (neither {ENV_RABBITMQ_URL} nor {ENV_NATS_URL} is set): \
             events stay inside this process"
        ),
        _broker: Some(broker),
    })
}

#[cfg(not(feature = "memory"))]
fn memory() -> anyhow::Result<Selected> {
    anyhow::bail!(
        "neither {ENV_RABBITMQ_URL} nor {ENV_NATS_URL} is set and this build has no in-memory backend \
         (built without the `memory` feature); set {ENV_RABBITMQ_URL}, for example \
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
        let amqp = amqp_settings(lookup(&[(
            "RABBITMQ_URL",
            "amqp://guest:secret@localhost:5672/",
        )]))
        .expect("settings");
        let e = select_with(
            &Config::default(),
            &amqp,
            "svc",
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
            lookup(&[("NATS_URL", "  ")]),
        )
        .expect("memory");
        assert_eq!(selected.name, "memory");
    }
}
