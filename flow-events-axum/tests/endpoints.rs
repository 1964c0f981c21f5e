//! Each endpoint of the router over the memory broker: health (the original
//! JSON shape), liveness, readiness through a shutdown and an outage, and
//! metrics with and without a Prometheus handle, mounted behind a layer.

mod common;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use common::{WAIT, connected_sink, get as http_get, send};
use flow_events_axum::{CONTENT_TYPE, Endpoints, install_prometheus};
use flow_events_core::{ConnectionState, Event, EventSink};
use flow_events_memory::MemoryBroker;
use flow_events_testkit::wait::{until_connected, until_state};

#[tokio::test]
async fn health_has_the_original_shape_and_degrades_while_the_broker_is_away() {
    let broker = MemoryBroker::new();
    let events = connected_sink(&broker, false).await;
    let app: Router = Endpoints::new(events.clone(), "Admin Service").router();

    let up = http_get(&app, "/health").await;
    assert_eq!(up.status, StatusCode::OK);
    assert!(up.content_type.starts_with("application/json"), "{up:?}");
    let body = up.json();
    assert_eq!(body["status"], "healthy");
    assert_eq!(body["service"], "Admin Service");
    let memory = &body["dependencies"]["memory"];
    assert_eq!(memory["status"], "connected");
    assert_eq!(memory["connected"], true);
    assert_eq!(memory["pending_events"], 0);
    assert_eq!(memory["url"], "memory://");
    assert_eq!(body["issues"], serde_json::json!([]));

    broker.take_down();
    until_state("the broker gone", &events, WAIT, |s| {
        s != ConnectionState::Connected
    })
    .await;
    events
        .publish(Event::try_new("order.created", serde_json::json!({})).expect("event"))
        .await
        .expect("buffered");
    let down = http_get(&app, "/health").await;
    // Optional broker: the service still works, degraded, 200.
    assert_eq!(down.status, StatusCode::OK);
    let body = down.json();
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["dependencies"]["memory"]["pending_events"], 1);
    assert!(!body["issues"].as_array().expect("issues").is_empty());
    // Ready all the same: publishing goes on into the buffer.
    assert_eq!(http_get(&app, "/health/ready").await.status, StatusCode::OK);
    broker.bring_up();
    events.shutdown(WAIT).await;
}

#[tokio::test]
async fn a_required_broker_down_is_unhealthy_and_not_ready() {
    let broker = MemoryBroker::new();
    let events = connected_sink(&broker, true).await;
    let app: Router = Endpoints::new(events.clone(), "billing").router();
    assert_eq!(http_get(&app, "/health").await.status, StatusCode::OK);

    broker.take_down();
    until_state("the broker gone", &events, WAIT, |s| {
        s != ConnectionState::Connected
    })
    .await;
    let health = http_get(&app, "/health").await;
    assert_eq!(health.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(health.json()["status"], "unhealthy");
    let ready = http_get(&app, "/health/ready").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.json()["status"], "not ready");
    // Alive all the same: restarting the process would not bring the broker back.
    let live = http_get(&app, "/health/live").await;
    assert_eq!(live.status, StatusCode::OK);
    assert_eq!(live.json(), serde_json::json!({"status": "alive"}));

    broker.bring_up();
    until_connected(&events, WAIT).await;
    assert_eq!(http_get(&app, "/health/ready").await.status, StatusCode::OK);
    events.shutdown(WAIT).await;
}

#[tokio::test]
async fn readiness_turns_503_once_shutdown_begins_and_liveness_stays() {
    let broker = MemoryBroker::new();
    let events = connected_sink(&broker, false).await;
    let endpoints = Endpoints::new(events.clone(), "billing");
    let app: Router = endpoints.router();
    let ready = http_get(&app, "/health/ready").await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(
        ready.json(),
        serde_json::json!({"status": "ready", "issues": []})
    );

    endpoints.clone().begin_shutdown();
    assert!(endpoints.is_shutting_down());
    let ready = http_get(&app, "/health/ready").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        ready.json(),
        serde_json::json!({"status": "not ready", "issues": ["shutting down"]})
    );
    assert_eq!(http_get(&app, "/health/live").await.status, StatusCode::OK);
    assert_eq!(http_get(&app, "/health").await.status, StatusCode::OK);
    events.shutdown(WAIT).await;
}

#[tokio::test]
async fn metrics_are_prometheus_text_when_a_handle_is_given() {
    let prometheus = install_prometheus().expect("recorder");
    // Installing again gives the same recorder.
    let again = install_prometheus().expect("the same recorder");
    let broker = MemoryBroker::new();
    let events = connected_sink(&broker, false).await;

    let without: Router = Endpoints::new(events.clone(), "billing").router();
    assert_eq!(
        http_get(&without, "/metrics").await.status,
        StatusCode::NOT_FOUND
    );
    let only_metrics: Router = Endpoints::new(events.clone(), "billing").metrics_router();
    let refused = http_get(&only_metrics, "/metrics").await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.json()["code"], "no_metrics");

    let app: Router = Endpoints::new(events.clone(), "billing")
        .with_prometheus(prometheus)
        .router();
    events
        .publish(Event::try_new("order.created", serde_json::json!({})).expect("event"))
        .await
        .expect("confirmed");
    let metrics = http_get(&app, "/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert_eq!(metrics.content_type, CONTENT_TYPE);
    let text = metrics.body;
    for expected in [
        "# TYPE flow_events_connected gauge\nflow_events_connected 1\n",
        "# TYPE flow_events_connection_state gauge\nflow_events_connection_state 2\n",
        "# TYPE flow_events_published_total counter\n",
        "# TYPE flow_events_confirmed_total counter\n",
        "# HELP flow_events_pending_events Events waiting in the local buffer",
        "# TYPE flow_events_publish_duration_seconds histogram\n",
        "flow_events_publish_duration_seconds_bucket{outcome=\"confirmed\",le=\"0.00025\"}",
        "flow_events_publish_duration_seconds_bucket{outcome=\"confirmed\",le=\"+Inf\"}",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    assert!(!text.contains("# EOF"), "OpenMetrics marker in 0.0.4 text");
    let _ = again.render();
    events.shutdown(WAIT).await;
}

/// Answers 401 unless the request carries `Authorization: Bearer secret`.
async fn authorize(request: Request, next: Next) -> Response {
    let allowed = request
        .headers()
        .get("authorization")
        .is_some_and(|v| v == "Bearer secret");
    if allowed {
        next.run(request).await
    } else {
        StatusCode::UNAUTHORIZED.into_response()
    }
}

#[tokio::test]
async fn metrics_can_sit_behind_the_services_own_layer_while_health_stays_open() {
    let prometheus = install_prometheus().expect("recorder");
    let broker = MemoryBroker::new();
    let events = connected_sink(&broker, false).await;
    let endpoints = Endpoints::new(events.clone(), "billing").with_prometheus(prometheus);
    let app: Router = Router::new()
        .merge(endpoints.metrics_router())
        .route("/orders", get(|| async { "orders" }))
        .route_layer(middleware::from_fn(authorize))
        .merge(endpoints.health_router());

    assert_eq!(
        http_get(&app, "/metrics").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        http_get(&app, "/orders").await.status,
        StatusCode::UNAUTHORIZED
    );
    let with_token = axum::http::Request::get("/metrics")
        .header("authorization", "Bearer secret")
        .body(Body::empty())
        .expect("request");
    let metrics = send(&app, with_token).await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(metrics.body.contains("flow_events_connected 1"));
    for open in ["/health", "/health/live", "/health/ready"] {
        assert_eq!(http_get(&app, open).await.status, StatusCode::OK, "{open}");
    }
    events.shutdown(WAIT).await;
}
