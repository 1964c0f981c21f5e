#![doc = include_str!("../README.md")]

mod endpoints;
mod handlers;
mod prometheus;

pub use endpoints::Endpoints;
pub use handlers::{health, live, metrics, ready};
pub use metrics_exporter_prometheus::PrometheusHandle;
pub use prometheus::{CONTENT_TYPE, PrometheusError, install_prometheus};
