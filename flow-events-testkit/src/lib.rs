//! Test tools for flow-events: fault injection around any backend.

pub mod faulty;
