#![doc = include_str!("../README.md")]

mod backend;
mod broker;
mod consumer;
mod session;
mod state;

pub use backend::MemoryBackend;
pub use broker::MemoryBroker;
pub use session::MemorySession;
