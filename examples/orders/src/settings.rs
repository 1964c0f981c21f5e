//! Settings read from the environment, listed once here.

use std::time::Duration;

use anyhow::Context;
use flow_events_amqp::AmqpConfig;
use flow_events_core::Config;
use flow_events_postgres::Tables;

/// `ORDERS_PORT`: the HTTP port (default 8013).
pub const ENV_PORT: &str = "ORDERS_PORT";
/// `DATABASE_URL`: the PostgreSQL database (default the local `test` database).
pub const ENV_DATABASE_URL: &str = "DATABASE_URL";
/// `ORDERS_TABLE_PREFIX`: prefix of every table of the example (default `orders`).
pub const ENV_TABLE_PREFIX: &str = "ORDERS_TABLE_PREFIX";
/// `ORDERS_QUEUE`: the consumer's queue (default `orders.customer-counts`).
pub const ENV_QUEUE: &str = "ORDERS_QUEUE";
/// `ORDERS_RELAY_POLL`: the relay's poll interval in seconds (default 1).
pub const ENV_RELAY_POLL: &str = "ORDERS_RELAY_POLL";

/// Every variable the example reads, its own and flow-events'.
pub const VARIABLES: &[&str] = &[
    ENV_PORT,
    ENV_DATABASE_URL,
    ENV_TABLE_PREFIX,
    ENV_QUEUE,
    ENV_RELAY_POLL,
    flow_events_amqp::ENV_URL,
    flow_events_amqp::ENV_EXCHANGE,
];

/// The example's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// HTTP port.
    pub port: u16,
    /// The database URL (no password on the default).
    pub database_url: String,
    /// Where the tables live.
    pub tables: Tables,
    /// The consumer's queue.
    pub queue: String,
    /// The relay's poll interval.
    pub relay_poll: Duration,
    /// flow-events' resilience settings (`RABBITMQ_*`, `FLOW_EVENTS_*`).
    pub events: Config,
    /// The broker: `RABBITMQ_URL` (default: the local one), `RABBITMQ_EXCHANGE`.
    pub amqp: AmqpConfig,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl Settings {
    /// Reads the settings; an invalid value names its variable.
    pub fn from_env() -> anyhow::Result<Self> {
        let port = match var(ENV_PORT) {
            Some(v) => v
                .parse()
                .with_context(|| format!("{ENV_PORT}={v:?} is not a port"))?,
            None => 8013,
        };
        let prefix = var(ENV_TABLE_PREFIX).unwrap_or_else(|| "orders".to_owned());
        let tables = Tables::new(&prefix).context(ENV_TABLE_PREFIX)?;
        let relay_poll = match var(ENV_RELAY_POLL) {
            Some(v) => Duration::try_from_secs_f64(
                v.parse()
                    .with_context(|| format!("{ENV_RELAY_POLL}={v:?} is not a number"))?,
            )
            .with_context(|| format!("{ENV_RELAY_POLL}={v:?}"))?,
            None => Duration::from_secs(1),
        };
        let events = Config::from_env()?;
        let from_env = AmqpConfig::from_env()?;
        let mut amqp = from_env.clone().into_builder().with_app_id("orders");
        if from_env.url().is_none() {
            amqp = amqp.with_url("amqp://guest:guest@127.0.0.1:5672/%2f");
        }
        let amqp = amqp.build()?;
        Ok(Self {
            port,
            database_url: var(ENV_DATABASE_URL)
                .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".to_owned()),
            tables,
            queue: var(ENV_QUEUE).unwrap_or_else(|| "orders.customer-counts".to_owned()),
            relay_poll,
            events,
            amqp,
        })
    }
}
