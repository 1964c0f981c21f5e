//! Test tools for flow-events.
//!
//! - `amqp` (feature `amqp`): a guard that deletes the queues and exchanges
//!   a test declared on RabbitMQ.
//! - [`cleanup`]: clean-up run when a guard is dropped, also on a panic.
//! - [`conformance`]: the suite every backend passes, with
//!   [`conformance_tests!`] to run it as one test per case.
//! - [`deliveries`]: a subscription whose deliveries are handed over to the
//!   test, to look at one by one and in order.
//! - [`faulty`]: fault injection around any backend; [`FaultyStore`] around
//!   any pending-events store.
//! - [`proxy`]: a TCP proxy with faults on command (down, cut, blackhole,
//!   latency), to put between a client and a real broker.
//! - [`SessionClient`]: a plain client over one backend session, to run the
//!   suite against a backend without the resilience decorator.
//! - `mocks` (feature `mocks`): mockall mocks of the core traits.
//! - `python` (feature `python`): the Python interop scripts of the
//!   `interop` folder, run with the interpreter `FLOW_EVENTS_PYTHON` names.
//! - [`received`]: a handler that records what it receives, for tests that
//!   count deliveries.
//! - [`server`]: whether a server a test needs is there (a missing one fails
//!   under `CI=true`, and skips the test elsewhere).
//! - [`steps`]: the steps of session-level tests, each named for what it
//!   checks (`publish_confirmed`, `next_delivery`, ...).
//! - [`traffic`]: steady publishing and consuming for the fault tests, and
//!   a proxy's connections cut at an interval.
//! - [`wait`]: bounded waits on a state or a condition, shared by the tests
//!   of every crate.

#[cfg(feature = "amqp")]
pub mod amqp;
pub mod cleanup;
pub mod conformance;
pub mod deliveries;
pub mod faulty;
mod faulty_store;
mod macros;
#[cfg(feature = "mocks")]
pub mod mocks;
pub mod proxy;
#[cfg(feature = "python")]
pub mod python;
pub mod received;
pub mod server;
mod session_client;
pub mod steps;
pub mod traffic;
pub mod wait;

pub use faulty_store::{FaultyStore, StoreFaultHandle};
pub use session_client::SessionClient;

/// The repository README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
