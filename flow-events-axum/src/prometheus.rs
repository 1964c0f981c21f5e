//! The Prometheus recorder the metrics of flow-events are rendered from.

use std::sync::OnceLock;

use flow_events_core::metrics as names;
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

/// The content type of the Prometheus text format 0.0.4 that `/metrics` answers.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Why no Prometheus recorder could be installed.
pub type PrometheusError = BuildError;

/// Installs a Prometheus recorder as the global `metrics` recorder, with the
/// histogram buckets of flow-events' metrics
/// ([`PUBLISH_DURATION_BUCKETS`](flow_events_core::metrics::PUBLISH_DURATION_BUCKETS),
/// [`HANDLER_DURATION_BUCKETS`](flow_events_core::metrics::HANDLER_DURATION_BUCKETS)),
/// and gives the handle that renders them. Call it before starting the
/// sink. Calling it again gives the same handle; it fails when another
/// recorder was installed first (install yours with
/// `metrics-exporter-prometheus` then, and give its handle to
/// [`Endpoints::with_prometheus`](crate::Endpoints::with_prometheus)).
///
/// Upkeep (draining histogram samples, publishing descriptions) runs at each
/// render, so no background task is needed as long as something scrapes.
pub fn install_prometheus() -> Result<PrometheusHandle, PrometheusError> {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(names::PUBLISH_DURATION.to_owned()),
            names::PUBLISH_DURATION_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full(names::HANDLER_DURATION.to_owned()),
            names::HANDLER_DURATION_BUCKETS,
        )?
        .install_recorder()?;
    // Two callers racing: the loser's recorder was refused by `metrics`
    // above, so only one handle exists.
    Ok(HANDLE.get_or_init(|| handle).clone())
}
