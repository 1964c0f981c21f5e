//! End-to-end tests: each starts the real `admin-service` binary on a free
//! port and talks HTTP to it (reqwest). States are awaited by polling an
//! endpoint with a deadline, never by sleeping.
//!
//! Tests marked "needs RabbitMQ" use the broker at 127.0.0.1:5672: without it
//! they print why and pass, except under `CI=true`, where they fail.
#![allow(clippy::unwrap_used)]

// The service's settings code, to list the variables it reads; it reads the
// AMQP backend's own settings through `backend`.
#[path = "../../src/backend.rs"]
#[allow(dead_code)]
mod backend;
#[path = "../../src/settings.rs"]
#[allow(dead_code)]
mod service_settings;

mod common;

mod compose;
mod limits;
mod memory_backend;
mod requests;
mod security;
mod settings_errors;
mod shutdown;
mod start_script;
mod unreachable_broker;
#[cfg(feature = "amqp")]
mod with_rabbitmq;
