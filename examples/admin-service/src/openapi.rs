//! The OpenAPI 3 description of the HTTP API, generated from the handlers'
//! annotations (utoipa) and served at `/openapi.json`.
//!
//! The types here only describe JSON the handlers write; the tests run the
//! API against this description (schemathesis in CI), so they cannot drift.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// The body of `POST /events`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventRequest {
    /// The event type and routing key: words separated by `.`, no whitespace,
    /// control character, `*` or `#`, at most 255 bytes (UTF-8).
    #[serde(rename = "type")]
    #[schema(
        example = "order.created",
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\s\x00-\x1f\x7f-\x9f*#.]+(\.[^\s\x00-\x1f\x7f-\x9f*#.]+)*$"
    )]
    pub(crate) event_type: String,
    /// Any JSON (numbers within the range of a double); `{}` when left out.
    #[schema(example = json!({"order_id": 42}))]
    pub(crate) data: Option<Value>,
}

/// How a published event ended.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Outcome {
    /// The broker confirmed it.
    Confirmed,
    /// Kept in the local buffer until the broker is back.
    Buffered,
}

/// `202`: the event was accepted.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct Accepted {
    /// The event's id (UUID v7).
    #[schema(format = "uuid")]
    pub(crate) id: String,
    pub(crate) outcome: Outcome,
    /// Events waiting in the buffer, when buffered.
    pub(crate) pending_events: Option<u64>,
}

/// An error: `{"error": message, "code": code}`, and more for some codes.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct ErrorBody {
    /// What went wrong, for a person.
    pub(crate) error: String,
    /// For a program: `bad_request`, `unauthorized`, `too_large`,
    /// `unsupported_media_type`, `refused_by_broker`, `buffer_full`, `dropped`,
    /// `overloaded`, `shutting_down`, `store_failed`, `not_found`...
    pub(crate) code: String,
    /// The event's id, when an event was built.
    #[schema(format = "uuid")]
    pub(crate) id: Option<String>,
    /// `dropped`, when the buffer was full and the event dropped.
    pub(crate) outcome: Option<String>,
    /// Events in the buffer, when the event was dropped.
    pub(crate) pending_events: Option<u64>,
}

/// `GET /health/live`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct Live {
    #[schema(example = "alive")]
    pub(crate) status: String,
}

/// `GET /health/ready`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct Ready {
    /// `ready` or `not ready`.
    pub(crate) status: String,
    pub(crate) issues: Vec<String>,
}

/// The overall health.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum HealthStatus {
    Healthy,
    Degraded,
    Unhealthy,
}

/// The connection state of a dependency.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ConnectionState {
    Disconnected,
    Connecting,
    Connected,
    Failed,
}

/// One dependency (the broker) in `GET /health`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct Dependency {
    pub(crate) status: ConnectionState,
    pub(crate) connected: bool,
    pub(crate) pending_events: u64,
    /// The broker URL, its password masked.
    pub(crate) url: String,
    pub(crate) blocked: bool,
    pub(crate) oldest_pending_age_seconds: Option<f64>,
    pub(crate) dropped_events: u64,
    pub(crate) expired_events: u64,
    pub(crate) unreadable_events: u64,
    pub(crate) last_error: Option<String>,
    pub(crate) reconnect_attempts: u32,
    /// RFC 3339.
    pub(crate) last_connected: Option<String>,
}

/// `GET /health`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct Health {
    pub(crate) status: HealthStatus,
    pub(crate) service: String,
    pub(crate) dependencies: std::collections::BTreeMap<String, Dependency>,
    pub(crate) issues: Vec<String>,
}

/// The routes flow-events-axum serves for the service (`app::router` mounts
/// them, `/metrics` behind the API token): described here, with the rest of
/// the API. Descriptions only: the handlers are the library's.
mod served {
    use super::{ErrorBody, Health, Live, Ready};

    #[utoipa::path(get, path = "/health", tag = "health",
        responses(
            (status = 200, description = "Healthy, or degraded: the broker is away and events are buffered", body = Health),
            (status = 503, description = "Unhealthy: a required broker is down", body = Health),
        ))]
    #[allow(dead_code)]
    pub(super) fn health() {}

    #[utoipa::path(get, path = "/health/live", tag = "health",
        responses((status = 200, description = "The process serves HTTP", body = Live)))]
    #[allow(dead_code)]
    pub(super) fn live() {}

    #[utoipa::path(get, path = "/health/ready", tag = "health",
        responses(
            (status = 200, description = "Ready to take events", body = Ready),
            (status = 503, description = "A required broker is down, or the service is stopping", body = Ready),
        ))]
    #[allow(dead_code)]
    pub(super) fn ready() {}

    #[utoipa::path(get, path = "/metrics", tag = "metrics",
        security((), ("bearer" = [])),
        responses(
            (status = 200, description = "Prometheus text format 0.0.4", body = String, content_type = "text/plain"),
            (status = 401, description = "API_TOKEN is set and the request lacks it", body = ErrorBody),
        ))]
    #[allow(dead_code)]
    pub(super) fn metrics() {}
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "admin-service",
        description = "Publishes events through flow-events; keeps working while the broker is down."
    ),
    paths(
        served::health,
        served::live,
        served::ready,
        crate::app::publish,
        served::metrics,
        crate::app::openapi_json,
    ),
    modifiers(&BearerToken),
)]
struct ApiDoc;

/// The `bearer` scheme the protected endpoints name.
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The description as JSON text, made once.
pub(crate) fn document() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        ApiDoc::openapi()
            .to_json()
            .unwrap_or_else(|e| format!("{{\"error\": \"cannot encode the description: {e}\"}}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_every_route() {
        let doc: Value = serde_json::from_str(document()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        for path in [
            "/health",
            "/health/live",
            "/health/ready",
            "/events",
            "/metrics",
            "/openapi.json",
        ] {
            assert!(doc["paths"][path].is_object(), "{path} missing");
        }
        let responses = &doc["paths"]["/events"]["post"]["responses"];
        for code in ["202", "400", "401", "413", "415", "503"] {
            assert!(responses[code].is_object(), "{code} missing");
        }
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
    }
}
