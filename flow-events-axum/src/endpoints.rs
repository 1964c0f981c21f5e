//! What the routes share, and the routers.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::routing::get;
use flow_events_core::Resilient;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::handlers;

/// The health and metrics endpoints of one resilient sink and its
/// consumers. Cheap to clone; every clone shares the same state.
///
/// [`Endpoints::router`] gives all four routes; [`Endpoints::health_router`]
/// and [`Endpoints::metrics_router`] give them in two parts, so that a
/// service can put its own layers (authentication, say) on `/metrics` only.
/// The handlers are public too ([`crate::health`], ...), for a service that
/// mounts them under other paths or documents them itself.
#[derive(Clone)]
pub struct Endpoints {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) events: Resilient,
    pub(crate) service: String,
    pub(crate) prometheus: Option<PrometheusHandle>,
    pub(crate) shutting_down: AtomicBool,
}

impl fmt::Debug for Endpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoints")
            .field("service", &self.inner.service)
            .field("prometheus", &self.inner.prometheus.is_some())
            .field("shutting_down", &self.is_shutting_down())
            .finish_non_exhaustive()
    }
}

impl Endpoints {
    /// The endpoints of `events`, reported under the name `service` in `/health`.
    /// `/metrics` is served once a Prometheus handle is given
    /// ([`Endpoints::with_prometheus`]).
    pub fn new(events: Resilient, service: impl Into<String>) -> Self {
        Self::build(events, service.into(), None)
    }

    /// Serves `/metrics` from `handle` (see [`crate::install_prometheus`]).
    pub fn with_prometheus(self, handle: PrometheusHandle) -> Self {
        let Inner {
            events, service, ..
        } = &*self.inner;
        Self::build(events.clone(), service.clone(), Some(handle))
    }

    fn build(events: Resilient, service: String, prometheus: Option<PrometheusHandle>) -> Self {
        Self {
            inner: Arc::new(Inner {
                events,
                service,
                prometheus,
                shutting_down: AtomicBool::new(false),
            }),
        }
    }

    /// `/health`, `/health/live`, `/health/ready` and, with a Prometheus
    /// handle, `/metrics`. Merge it into the service's router; it needs no
    /// state of the service's.
    pub fn router<S>(&self) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        let router = self.health_router();
        if self.inner.prometheus.is_some() {
            router.merge(self.metrics_router())
        } else {
            router
        }
    }

    /// `/health`, `/health/live` and `/health/ready`.
    pub fn health_router<S>(&self) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        Router::new()
            .route("/health", get(handlers::health))
            .route("/health/live", get(handlers::live))
            .route("/health/ready", get(handlers::ready))
            .with_state(self.clone())
    }

    /// `/metrics` alone (503 without a Prometheus handle).
    pub fn metrics_router<S>(&self) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        Router::new()
            .route("/metrics", get(handlers::metrics))
            .with_state(self.clone())
    }

    /// From now on `/health/ready` answers 503 (the process is going away),
    /// so that a load balancer stops sending traffic while it drains.
    pub fn begin_shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Whether [`Endpoints::begin_shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::SeqCst)
    }

    /// The sink.
    pub fn events(&self) -> &Resilient {
        &self.inner.events
    }
}
