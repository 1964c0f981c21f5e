//! The conformance suite: one set of cases every backend must pass, run
//! against any [`EventSink`] + [`EventSource`] (opendal's behaviour tests,
//! Watermill's `pubsub/tests`).
//!
//! A backend's `tests/conformance.rs` implements [`Harness`] and calls
//! [`conformance_tests!`](crate::conformance_tests), which makes one test per
//! case; a case can also be run on its own:
//!
//! ```
//! use async_trait::async_trait;
//! use flow_events_memory::MemoryBroker;
//! use flow_events_testkit::SessionClient;
//! use flow_events_testkit::conformance::{self, Harness};
//!
//! struct Memory(MemoryBroker);
//!
//! #[async_trait]
//! impl Harness for Memory {
//!     type Client = SessionClient;
//!     async fn client(&self) -> SessionClient {
//!         SessionClient::connect(&self.0.backend()).await.expect("connected")
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! conformance::publish_then_receive(&Memory(MemoryBroker::new())).await;
//! # }
//! // In tests/conformance.rs: flow_events_testkit::conformance_tests!(Memory(MemoryBroker::new()));
//! ```
//!
//! Every case uses its own event-type prefix and subscription names, so cases
//! can run at once against one shared broker. Waits are bounded by
//! [`Harness::timeout`]; "nothing more arrives" is proven by publishing a
//! marker afterwards and checking what comes before it, never by sleeping.
//! A case fails by panicking with what went wrong.
//!
//! A case is a public `async fn` of one of this module's files, each file one
//! concern (what arrives, order, routing, the handler's decisions, a
//! subscription's life); a new concern gets a file of its own. Its name goes
//! in the one list of cases, in [`conformance_tests!`](crate::conformance_tests),
//! and every backend then runs it.

use std::time::Duration;

use async_trait::async_trait;
use flow_events_core::{EventSink, EventSource};

mod decisions;
mod delayed_retry;
mod ordering;
mod receive;
mod routing;
mod subscriptions;
mod support;

// A file per concern; each one's public functions are cases, and the one list
// of them that runs is `conformance_tests!`.
pub use decisions::*;
pub use delayed_retry::*;
pub use ordering::*;
pub use receive::*;
pub use routing::*;
pub use subscriptions::*;

/// What the suite needs from a backend under test.
#[async_trait]
pub trait Harness: Send + Sync + 'static {
    /// A client connected to the broker under test.
    type Client: EventSink + EventSource + Send + Sync + 'static;

    /// A new client, connected (for a resilient client: wait until connected).
    /// Cases that need two consumers ask for two clients.
    async fn client(&self) -> Self::Client;

    /// Called at the end of each case with the subscription names it used
    /// (a real broker deletes their queues). Default: nothing.
    async fn cleanup(&self, subscriptions: &[String]) {
        let _ = subscriptions;
    }

    /// The payload size of the `large_payload` case. Default: 1 MiB. A
    /// backend whose broker takes less in one message says how much it
    /// takes (NATS: its `max_payload`, 1 MiB by default, counts the
    /// headers and the envelope too).
    fn large_payload_bytes(&self) -> usize {
        1024 * 1024
    }

    /// The dead letters of `subscription` so far, oldest first, each with
    /// the `x-flow-*` headers of [`flow_events_core::dead_letter`] among its
    /// headers; `None` when the harness cannot read them (the cases then
    /// check the deliveries only). Default: `None`.
    async fn dead_letters(&self, subscription: &str) -> Option<Vec<flow_events_core::Event>> {
        let _ = subscription;
        None
    }

    /// The longest wait for something that must happen. Default: 30 s, as a
    /// real broker on a small machine can be slow.
    fn timeout(&self) -> Duration {
        Duration::from_secs(30)
    }
}
