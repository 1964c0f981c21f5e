//! Test tools for flow-events.
//!
//! - [`conformance`]: the suite every backend passes, with
//!   [`conformance_tests!`] to run it as one test per case.
//! - [`faulty`]: fault injection around any backend; [`FaultyStore`] around
//!   any pending-events store.
//! - [`proxy`]: a TCP proxy with faults on command (down, cut, blackhole,
//!   latency), to put between a client and a real broker.
//! - [`SessionClient`]: a plain client over one backend session, to run the
//!   suite against a backend without the resilience decorator.
//! - `mocks` (feature `mocks`): mockall mocks of the core traits.
//! - [`received`]: a handler that records what it receives, for tests that
//!   count deliveries.
//! - [`server`]: whether a server a test needs is there (a missing one fails
//!   under `CI=true`, and skips the test elsewhere).
//! - [`steps`]: the steps of session-level tests, each named for what it
//!   checks (`publish_confirmed`, `next_delivery`, ...).
//! - [`wait`]: bounded waits on a state or a condition, shared by the tests
//!   of every crate.

pub mod conformance;
pub mod faulty;
mod faulty_store;
mod macros;
#[cfg(feature = "mocks")]
pub mod mocks;
pub mod proxy;
pub mod received;
pub mod server;
mod session_client;
pub mod steps;
pub mod wait;

pub use faulty_store::{FaultyStore, StoreFaultHandle};
pub use session_client::SessionClient;

/// The repository README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
