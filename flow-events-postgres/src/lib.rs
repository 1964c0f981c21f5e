#![doc = include_str!("../README.md")]

mod error;
mod inbox;
mod migrate;
mod outbox;
mod relay;
mod tables;

pub use error::{Error, Result};
pub use inbox::{Cleanup, Inbox};
pub use migrate::{drop_tables, migrate};
pub use outbox::Outbox;
pub use relay::{Relay, RelayBuilder, RelayState, RelayStatus};
pub use tables::{MAX_NAME_LEN, Tables};

/// The client, re-exported so that applications use the same version.
pub use sqlx;
