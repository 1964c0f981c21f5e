#![doc = include_str!("../README.md")]

mod address;
mod backend;
mod config;
mod consume;
mod errors;
mod pull;
mod redact;
mod session;
mod topology;
mod wire;

pub use backend::NatsBackend;
pub use config::{
    ENV_ACK_WAIT, ENV_CONNECT_TIMEOUT, ENV_CREDS, ENV_DEAD_LETTER, ENV_DUPLICATE_WINDOW,
    ENV_MAX_AGE, ENV_NKEY, ENV_PASSWORD, ENV_PING_INTERVAL, ENV_RETENTION, ENV_RETRY_DELAY,
    ENV_STREAM, ENV_SUBJECT_PREFIX, ENV_TLS, ENV_TLS_CA, ENV_TLS_CERT, ENV_TLS_KEY, ENV_TOKEN,
    ENV_URL, ENV_USER, ENV_VARS, NatsConfig, NatsConfigBuilder, Retention,
};
pub use consume::{
    DEAD_LETTER_REASON_HEADER, DEAD_LETTER_SUBSCRIPTION_HEADER, DELIVERY_COUNT_HEADER,
};
pub use topology::consumer_name;
pub use wire::{CONTENT_TYPE, CONTENT_TYPE_HEADER, MSG_ID_HEADER, TIME_HEADER, TYPE_HEADER};
