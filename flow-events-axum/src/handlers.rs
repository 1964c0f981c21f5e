//! The handlers: health, liveness, readiness, metrics.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use flow_events_core::HealthStatus;
use serde_json::json;

use crate::endpoints::Endpoints;
use crate::prometheus::CONTENT_TYPE;

/// `GET /health`: the sink's health report (`Resilient::health`), 200 when
/// healthy or degraded, 503 when unhealthy (a required broker is down).
pub async fn health(State(endpoints): State<Endpoints>) -> Response {
    let inner = &endpoints.inner;
    let report = inner.events.health(&inner.service);
    let status = StatusCode::from_u16(report.status.http_status())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(report)).into_response()
}

/// `GET /health/live`: 200 `{"status": "alive"}` while the process answers.
pub async fn live() -> Response {
    Json(json!({"status": "alive"})).into_response()
}

/// `GET /health/ready`: 200 `{"status": "ready", "issues": [...]}`, or 503
/// `{"status": "not ready", ...}` while shutting down or unhealthy. A
/// degraded sink is ready: it buffers while the broker is away.
pub async fn ready(State(endpoints): State<Endpoints>) -> Response {
    if endpoints.is_shutting_down() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not ready", "issues": ["shutting down"]})),
        )
            .into_response();
    }
    let inner = &endpoints.inner;
    let report = inner.events.health(&inner.service);
    if report.status == HealthStatus::Unhealthy {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not ready", "issues": report.issues})),
        )
            .into_response()
    } else {
        Json(json!({"status": "ready", "issues": report.issues})).into_response()
    }
}

/// `GET /metrics`: every metric of the recorder in the Prometheus text
/// format, the sink's gauges read at this moment.
pub async fn metrics(State(endpoints): State<Endpoints>) -> Response {
    let Some(prometheus) = &endpoints.inner.prometheus else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "error": "no Prometheus recorder was given to the endpoints",
                "code": "no_metrics",
            })),
        )
            .into_response();
    };
    endpoints.inner.events.record_metrics();
    prometheus.run_upkeep();
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], prometheus.render()).into_response()
}
