//! Test tools for flow-events.
//!
//! - [`conformance`]: the suite every backend passes, with
//!   [`conformance_tests!`] to run it as one test per case.
//! - [`faulty`]: fault injection around any backend; [`FaultyStore`] around
//!   any pending-events store.
//! - [`SessionClient`]: a plain client over one backend session, to run the
//!   suite against a backend without the resilience decorator.
//! - [`mocks`]: mockall mocks of the core traits.

pub mod conformance;
pub mod faulty;
mod faulty_store;
mod macros;
pub mod mocks;
mod session_client;

pub use faulty_store::{FaultyStore, StoreFaultHandle};
pub use session_client::SessionClient;

/// The repository README's example, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
