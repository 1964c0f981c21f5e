//! The HTTP API: publishing and the OpenAPI description; health, readiness,
//! liveness and metrics from flow-events-axum.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use flow_events_axum::{Endpoints, PrometheusHandle};
use flow_events_core::{
    EventSink, PublishError, PublishErrorKind, PublishOutcome, Resilient, redact_url,
};
use futures_util::StreamExt;
use serde_json::json;
use tokio::sync::Semaphore;
use tower_http::timeout::TimeoutLayer;

use crate::openapi;
use crate::settings::{ApiToken, ENV_MAX_BODY_BYTES, HttpLimits};

mod body;

use body::{check_content_type, parse_event};

/// What the handlers share.
#[derive(Debug, Clone)]
pub(crate) struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    events: Resilient,
    /// `/health`, `/health/live`, `/health/ready` and `/metrics`, from flow-events-axum.
    endpoints: Endpoints,
    limits: HttpLimits,
    api_token: Option<ApiToken>,
    /// One permit per `POST /events` being served.
    publishes: Arc<Semaphore>,
}

impl AppState {
    pub(crate) fn new(
        events: Resilient,
        service: String,
        limits: HttpLimits,
        api_token: Option<ApiToken>,
        prometheus: PrometheusHandle,
    ) -> Self {
        let endpoints = Endpoints::new(events.clone(), service).with_prometheus(prometheus);
        Self {
            inner: Arc::new(Inner {
                events,
                endpoints,
                limits,
                api_token,
                publishes: Arc::new(Semaphore::new(limits.max_concurrent_requests)),
            }),
        }
    }

    /// From now on readiness is 503 (the process is going away).
    pub(crate) fn begin_shutdown(&self) {
        self.inner.endpoints.begin_shutdown();
    }
}

/// The routes. `POST /events` and `GET /metrics` need the API token when one
/// is set; `POST /events` takes at most `max_concurrent_requests` requests at
/// once (503 beyond); every request has `request_timeout` to finish (408).
pub(crate) fn router(state: AppState) -> Router {
    let limits = state.inner.limits;
    let publish_route = post(publish).layer(middleware::from_fn_with_state(
        state.clone(),
        limit_publishes,
    ));
    let protected = Router::new()
        .route("/events", publish_route)
        .merge(state.inner.endpoints.metrics_router())
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize));
    Router::new()
        .merge(state.inner.endpoints.health_router())
        .route("/openapi.json", get(openapi_json))
        .merge(protected)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ))
        .with_state(state)
}

/// A JSON error response: `{"error": message, "code": code}`.
#[derive(Debug)]
pub(crate) struct ApiError {
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
        let mut response = (
            self.status,
            Json(json!({"error": self.message, "code": self.code})),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Lets a request through when no token is set or it carries
/// `Authorization: Bearer <token>`.
async fn authorize(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(token) = &state.inner.api_token else {
        return next.run(request).await;
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    let message = match given {
        Some(given) if token_matches(token, given) => return next.run(request).await,
        Some(_) => "the bearer token is not the API token",
        None => "this endpoint needs Authorization: Bearer <API token>",
    };
    discard_body(request.into_body(), state.inner.limits.max_body_bytes).await;
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response()
}

/// Compares in constant time (subtle), so the time of a refusal does not tell
/// how much of a guess was right. Tokens of another length are refused at
/// once: that tells the length only.
fn token_matches(token: &ApiToken, given: &str) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(token.as_bytes().ct_eq(given.as_bytes()))
}

/// Serves `POST /events` while fewer than `MAX_CONCURRENT_REQUESTS` are being
/// served; answers 503 `overloaded` at once otherwise.
///
/// Written here rather than with tower's `LoadShed` and `ConcurrencyLimit`:
/// those answer without reading the request, and a client still sending its
/// body then reads a reset connection instead of the 503. The body of a
/// refused request is read and thrown away (at most `MAX_BODY_BYTES`, chunk by
/// chunk, within the request timeout), never kept.
async fn limit_publishes(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match state.inner.publishes.clone().try_acquire_owned() {
        Ok(permit) => {
            tracing::debug!("publish slot taken");
            let response = next.run(request).await;
            drop(permit);
            response
        }
        Err(_) => {
            tracing::debug!("publish turned away: every slot is taken");
            discard_body(request.into_body(), state.inner.limits.max_body_bytes).await;
            overloaded()
        }
    }
}

/// Reads what is left of a refused request's body, at most `limit` bytes,
/// keeping none of it: a server that closes a connection with unread data
/// makes the kernel reset it, and the client may then never read the answer.
async fn discard_body(body: Body, limit: usize) {
    let mut stream = body.into_data_stream();
    let mut read = 0usize;
    while let Some(Ok(chunk)) = stream.next().await {
        read = read.saturating_add(chunk.len());
        if read > limit {
            break;
        }
    }
}

/// `POST /events` is at its bound of concurrent requests.
fn overloaded() -> Response {
    let mut response = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded",
        "too many requests at once (MAX_CONCURRENT_REQUESTS); retry shortly",
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

#[utoipa::path(get, path = "/openapi.json", tag = "meta",
    responses((status = 200, description = "This description", body = Object)))]
pub(crate) async fn openapi_json() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        openapi::document(),
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; try /health, /health/live, /health/ready, POST /events, /metrics or /openapi.json",
    )
}

/// `POST /events` with `{"type": "order.created", "data": {...}}`.
#[utoipa::path(post, path = "/events", tag = "events",
    security((), ("bearer" = [])),
    request_body(content = openapi::EventRequest, content_type = "application/json"),
    responses(
        (status = 202, description = "Confirmed by the broker, or buffered while it is away", body = openapi::Accepted),
        (status = 400, description = "Not a valid event", body = openapi::ErrorBody),
        (status = 401, description = "API_TOKEN is set and the request lacks it", body = openapi::ErrorBody),
        (status = 413, description = "Body larger than MAX_BODY_BYTES, or event larger than FLOW_EVENTS_MAX_EVENT_BYTES", body = openapi::ErrorBody),
        (status = 415, description = "Content-Type missing or not JSON", body = openapi::ErrorBody),
        (status = 422, description = "The broker refused the event for good", body = openapi::ErrorBody),
        (status = 500, description = "The pending events store could not keep the event (the store's message says why)", body = openapi::ErrorBody),
        (status = 503, description = "Buffer full (dropped or rejected), too many requests at once, or shutting down", body = openapi::ErrorBody,
            headers(("Retry-After" = Option<String>, description = "Seconds to wait, for buffer_full and overloaded"))),
    ))]
pub(crate) async fn publish(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    check_content_type(&headers)?;
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!(
                    "request body is larger than {} bytes ({ENV_MAX_BODY_BYTES})",
                    state.inner.limits.max_body_bytes
                ),
            )
        } else {
            ApiError::bad_request(rejection.body_text())
        }
    })?;
    let event = parse_event(&body)?;
    drop(body);
    let id = event.id();
    let event_type = event.event_type().clone();

    // The library measures the call (flow_events_publish_duration_seconds).
    let result = state.inner.events.publish(event).await;

    match result {
        Ok(outcome) => {
            let (status, body) = match outcome {
                PublishOutcome::Buffered { pending } => (
                    StatusCode::ACCEPTED,
                    json!({"id": id, "outcome": outcome.as_str(), "pending_events": pending}),
                ),
                // The drop-newest policy dropped it (logged and counted by the
                // library): the client must know the event was not kept.
                PublishOutcome::Dropped { pending } => (
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
                    StatusCode::ACCEPTED,
                    json!({"id": id, "outcome": outcome.as_str()}),
                ),
            };
            tracing::debug!(%id, %event_type, outcome = outcome.as_str(), "publish answered");
            Ok((status, Json(body)).into_response())
        }
        Err(error) => Ok(refused(&state, &error).into_response()),
    }
}

/// The response for an event the sink refused; nothing was buffered.
fn refused(state: &AppState, error: &PublishError) -> Response {
    let event = error.event();
    let mut message = format!("event not accepted: {}", error.kind());
    if let Some(source) = error.backend_error() {
        // The backend scrubs its messages of credentials.
        message.push_str(&format!(" ({source})"));
    }
    if let Some(store) = error.store_error() {
        // A store names its file or table; a URL in it loses its password.
        message.push_str(&format!(" ({})", redact_url(&store.to_string())));
    }
    let (status, code) = match error.kind() {
        PublishErrorKind::TooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
        PublishErrorKind::BufferFull { .. } => (StatusCode::SERVICE_UNAVAILABLE, "buffer_full"),
        PublishErrorKind::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
        PublishErrorKind::NotConnected => (StatusCode::SERVICE_UNAVAILABLE, "not_connected"),
        PublishErrorKind::Refused => (StatusCode::UNPROCESSABLE_ENTITY, "refused_by_broker"),
        PublishErrorKind::StoreFailed => (StatusCode::INTERNAL_SERVER_ERROR, "store_failed"),
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
    use flow_events_core::{ConnectionMonitor, MemoryStore};
    use flow_events_memory::MemoryBroker;
    use flow_events_testkit::FaultyStore;
    use flow_events_testkit::faulty::Faulty;
    use tower::ServiceExt;

    use super::*;

    /// The broker is away, so the event goes to the store, whose disk is
    /// full: the 500 answer says what the store said.
    #[tokio::test]
    async fn a_store_failure_answers_500_with_the_store_message() {
        let (backend, faults) = Faulty::wrap(MemoryBroker::new().backend());
        faults.go_down();
        let (store, disk) = FaultyStore::wrap(MemoryStore::new());
        disk.set_full(true);
        let events = Resilient::builder(backend)
            .with_store(store)
            .start()
            .await
            .expect("start");
        let prometheus = flow_events_axum::install_prometheus().expect("prometheus");
        let state = AppState::new(
            events.clone(),
            "admin-service-test".to_owned(),
            HttpLimits::default(),
            None,
            prometheus,
        );
        let request = Request::post("/events")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(
                r#"{"type": "order.created", "data": {"id": 1}}"#,
            ))
            .expect("request");
        let response = router(state).oneshot(request).await.expect("response");
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        let body: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(body["code"], "store_failed", "{body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("could not store the event")
                && error.contains("no space left on device"),
            "{body}"
        );
        assert_eq!(events.status().pending_events, 0, "{body}");
        events.shutdown(std::time::Duration::ZERO).await;
    }

    #[test]
    fn token_comparison() {
        let token = crate::settings::ApiToken::for_tests("s3cret-token");
        assert!(token_matches(&token, "s3cret-token"));
        for wrong in ["", "s3cret-toke", "s3cret-tokeN", "s3cret-token-"] {
            assert!(!token_matches(&token, wrong), "{wrong}");
        }
    }
}
