//! The Prometheus recorder the metrics of flow-events are rendered from.

use std::sync::{Mutex, OnceLock, PoisonError};

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
    static INSTALLING: Mutex<()> = Mutex::new(());
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    // One caller installs; one racing it waits and gets the same handle
    // (without the lock it would find the recorder taken and fail).
    let _one_at_a_time = INSTALLING.lock().unwrap_or_else(PoisonError::into_inner);
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
    Ok(HANDLE.get_or_init(|| handle).clone())
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Barrier};

    use super::install_prometheus;

    #[test]
    fn callers_racing_all_get_the_handle() {
        let start = Arc::new(Barrier::new(8));
        let callers: Vec<_> = (0..8)
            .map(|_| {
                let start = start.clone();
                std::thread::spawn(move || {
                    start.wait();
                    install_prometheus().map(|_| ())
                })
            })
            .collect();
        for caller in callers {
            let installed = caller.join().expect("no panic");
            assert!(installed.is_ok(), "{installed:?}");
        }
    }
}
