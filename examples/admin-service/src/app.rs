//! The HTTP API: health, readiness, liveness, publishing and metrics.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use flow_events_core::{
    Event, EventSink, EventType, HealthStatus, PublishError, PublishErrorKind, PublishOutcome,
    Resilient,
};
use serde_json::{Map, Value, json};

use crate::metrics::{self, Metrics, PublishResult};

/// What the handlers share.
#[derive(Debug, Clone)]
pub(crate) struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    events: Resilient,
    service: String,
    metrics: Metrics,
    shutting_down: AtomicBool,
    max_body_bytes: usize,
}

impl AppState {
    pub(crate) fn new(events: Resilient, service: String) -> Self {
        let max_body_bytes = events.config().max_event_bytes();
        let metrics = Metrics::new(events.clone());
        Self {
            inner: Arc::new(Inner {
                events,
                service,
                metrics,
                shutting_down: AtomicBool::new(false),
                max_body_bytes,
            }),
        }
    }

    /// From now on readiness is 503 (the process is going away).
    pub(crate) fn begin_shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
    }
}

/// The routes.
pub(crate) fn router(state: AppState) -> Router {
    let limit = state.inner.max_body_bytes;
    Router::new()
        .route("/health", get(health))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/events", post(publish))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// A JSON error response: `{"error": message, "code": code}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"error": self.message, "code": self.code})),
        )
            .into_response()
    }
}

async fn health(State(state): State<AppState>) -> Response {
    let report = state.inner.events.health(&state.inner.service);
    let status = StatusCode::from_u16(report.status.http_status())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(report)).into_response()
}

async fn live() -> Json<Value> {
    Json(json!({"status": "alive"}))
}

async fn ready(State(state): State<AppState>) -> Response {
    if state.inner.shutting_down.load(Ordering::SeqCst) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not ready", "issues": ["shutting down"]})),
        )
            .into_response();
    }
    let report = state.inner.events.health(&state.inner.service);
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

async fn metrics(State(state): State<AppState>) -> Response {
    match state.inner.metrics.render() {
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(_) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "could not encode the metrics",
        )
        .into_response(),
    }
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; try /health, /health/live, /health/ready, POST /events or /metrics",
    )
}

/// `POST /events` with `{"type": "order.created", "data": {...}}`.
async fn publish(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let limit = state.inner.max_body_bytes;
    check_content_type(&headers)?;
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("request body is larger than {limit} bytes (FLOW_EVENTS_MAX_EVENT_BYTES)"),
            )
        } else {
            ApiError::bad_request(rejection.body_text())
        }
    })?;
    let event = parse_event(&body)?;
    let id = event.id();
    let event_type = event.event_type().clone();

    let started = Instant::now();
    let result = state.inner.events.publish(event).await;
    let took = started.elapsed();

    match result {
        Ok(outcome) => {
            let (measured, status, body) = match outcome {
                PublishOutcome::Buffered { pending } => (
                    PublishResult::Buffered,
                    StatusCode::ACCEPTED,
                    json!({"id": id, "outcome": outcome.as_str(), "pending_events": pending}),
                ),
                // The drop-newest policy dropped it (logged and counted by the
                // library): the client must know the event was not kept.
                PublishOutcome::Dropped { pending } => (
                    PublishResult::Dropped,
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({
                        "id": id,
                        "outcome": outcome.as_str(),
                        "pending_events": pending,
                        "code": "dropped",
                        "error": "pending events buffer full, the event was dropped (RABBITMQ_OVERFLOW_POLICY=drop-newest)",
                    }),
                ),
                _ => (
                    PublishResult::Confirmed,
                    StatusCode::ACCEPTED,
                    json!({"id": id, "outcome": outcome.as_str()}),
                ),
            };
            state.inner.metrics.observe_publish(measured, took);
            tracing::debug!(%id, %event_type, outcome = outcome.as_str(), "publish answered");
            Ok((status, Json(body)).into_response())
        }
        Err(error) => {
            state
                .inner
                .metrics
                .observe_publish(PublishResult::Refused, took);
            Ok(refused(&state, &error).into_response())
        }
    }
}

fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let is_json = value
        .to_str()
        .ok()
        .and_then(|v| v.split(';').next())
        .map(|mime| mime.trim().to_ascii_lowercase())
        .is_some_and(|mime| mime == "application/json" || mime.ends_with("+json"));
    if is_json {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected Content-Type: application/json",
        ))
    }
}

/// Validates the request body and builds the event. A missing `data` is `{}`.
fn parse_event(body: &[u8]) -> Result<Event, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))?;
    let Value::Object(mut fields) = value else {
        return Err(ApiError::bad_request(
            "the body must be a JSON object: {\"type\": \"order.created\", \"data\": {...}}",
        ));
    };
    let event_type = match fields.remove("type") {
        None => return Err(ApiError::bad_request("missing field \"type\"")),
        Some(Value::String(t)) => EventType::new(t)
            .map_err(|e| ApiError::bad_request(format!("invalid \"type\": {e}")))?,
        Some(_) => return Err(ApiError::bad_request("\"type\" must be a string")),
    };
    let data = fields
        .remove("data")
        .unwrap_or_else(|| Value::Object(Map::new()));
    if let Some(unknown) = fields.keys().next() {
        return Err(ApiError::bad_request(format!(
            "unknown field {unknown:?}; expected \"type\" and \"data\""
        )));
    }
    Ok(Event::new(event_type, data))
}

/// The response for an event the sink refused; nothing was buffered.
fn refused(state: &AppState, error: &PublishError) -> Response {
    let event = error.event();
    let mut message = format!("event not accepted: {}", error.kind());
    if let Some(source) = error.backend_error() {
        message.push_str(&format!(" ({source})"));
    }
    let (status, code) = match error.kind() {
        PublishErrorKind::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
        PublishErrorKind::BufferFull { .. } => (StatusCode::SERVICE_UNAVAILABLE, "buffer_full"),
        PublishErrorKind::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
        PublishErrorKind::NotConnected => (StatusCode::SERVICE_UNAVAILABLE, "not_connected"),
        PublishErrorKind::Refused => (StatusCode::UNPROCESSABLE_ENTITY, "refused_by_broker"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "publish_failed"),
    };
    if status.is_server_error() {
        tracing::warn!(id = %event.id(), event_type = %event.event_type(), code, "{message}");
    } else {
        tracing::info!(id = %event.id(), event_type = %event.event_type(), code, "{message}");
    }
    let body = json!({"error": message, "code": code, "id": event.id()});
    let mut response = (status, Json(body)).into_response();
    if matches!(error.kind(), PublishErrorKind::BufferFull { .. }) {
        let secs = state.inner.events.config().retry_delay().as_secs().max(1);
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(body: &str) -> StatusCode {
        parse_event(body.as_bytes()).unwrap_err().status
    }

    #[test]
    fn parses_type_and_data() {
        let e = parse_event(br#"{"type": "order.created", "data": {"id": 1}}"#).unwrap();
        assert_eq!(e.event_type().as_str(), "order.created");
        assert_eq!(e.data(), &json!({"id": 1}));
        let e = parse_event(br#"{"type": "order.created"}"#).unwrap();
        assert_eq!(e.data(), &json!({}));
    }

    #[test]
    fn refuses_bad_bodies() {
        for body in [
            "",
            "{",
            "[1]",
            "\"x\"",
            "{}",
            r#"{"type": 1}"#,
            r#"{"type": ""}"#,
            r#"{"type": "order created"}"#,
            r#"{"type": "order.*"}"#,
            r#"{"type": "a", "payload": {}}"#,
        ] {
            assert_eq!(code(body), StatusCode::BAD_REQUEST, "{body}");
        }
        let err = parse_event(br#"{"type": "a..b"}"#).unwrap_err();
        assert!(err.message.contains("empty word"), "{}", err.message);
    }

    #[test]
    fn content_type() {
        let mut h = HeaderMap::new();
        assert!(check_content_type(&h).is_ok());
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        assert!(check_content_type(&h).is_ok());
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/cloudevents+json"),
        );
        assert!(check_content_type(&h).is_ok());
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert_eq!(
            check_content_type(&h).unwrap_err().status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
    }
}
