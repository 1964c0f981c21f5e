//! Picks the backend: RabbitMQ when `RABBITMQ_URL` is set, otherwise the
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

/// The chosen backend and how to describe it in the start-up log.
pub(crate) struct Selected {
    pub(crate) backend: Arc<dyn Backend>,
    /// `amqp` or `memory`.
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

/// Builds the backend for `config` and `amqp`. `service` names the connection on the broker.
pub(crate) fn select(
    config: &Config,
    amqp_settings: &AmqpSettings,
    service: &str,
) -> anyhow::Result<Selected> {
    match config.url() {
        Some(url) => amqp(config, amqp_settings, service, url.redacted()),
        None => memory(),
    }
}

#[cfg(feature = "amqp")]
fn amqp(
    config: &Config,
    options: &AmqpSettings,
    service: &str,
    redacted: &str,
) -> anyhow::Result<Selected> {
    use flow_events_amqp::AmqpBackend;
    let options = options.clone().with_app_id(service);
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
            "the embedded in-memory broker ({ENV_URL} is not set): \
             events stay inside this process"
        ),
        _broker: Some(broker),
    })
}

#[cfg(not(feature = "memory"))]
fn memory() -> anyhow::Result<Selected> {
    anyhow::bail!(
        "{ENV_URL} is not set and this build has no in-memory backend \
         (built without the `memory` feature); set {ENV_URL}, for example \
         amqp://guest:guest@localhost:5672/"
    )
}
