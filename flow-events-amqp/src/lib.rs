#![doc = include_str!("../README.md")]

mod address;
mod backend;
mod channel;
mod config;
mod confirms;
mod consume;
mod delay;
mod errors;
#[cfg(feature = "otel")]
mod otel;
mod publish;
mod session;
mod state;
mod topology;
mod transport;
mod watch;
mod wire;

pub use address::check_url;
pub use backend::AmqpBackend;
pub use config::{
    AmqpConfig, AmqpConfigBuilder, ENV_CA_FILE, ENV_EXCHANGE, ENV_QUEUE_TYPE, ENV_URL,
};
pub use delay::delay_queues;
pub use wire::{ATTEMPT_HEADER, CONTENT_TYPE, MESSAGING_SYSTEM, ROUTING_KEY_ATTRIBUTE};
