#![doc = include_str!("../README.md")]

mod address;
mod backend;
mod channel;
mod confirms;
mod consume;
mod delay;
mod errors;
mod options;
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
pub use delay::delay_queues;
pub use options::{AmqpOptions, ENV_QUEUE_TYPE};
pub use wire::{ATTEMPT_HEADER, CONTENT_TYPE, MESSAGING_SYSTEM, ROUTING_KEY_ATTRIBUTE};
