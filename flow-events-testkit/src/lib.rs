//! Test tools for flow-events.
//!
//! - [`conformance`]: the suite every backend passes, with
//!   [`conformance_tests!`] to run it as one test per case.
//! - [`SessionClient`]: a plain client over one backend session, to run the
//!   suite against a backend without the resilience decorator.
//! - [`mocks`]: mockall mocks of the core traits.
//! - [`faulty`]: a backend wrapper that injects faults, steered by a handle.

pub mod conformance;
pub mod faulty;
mod macros;
pub mod mocks;
mod session_client;

pub use session_client::SessionClient;
