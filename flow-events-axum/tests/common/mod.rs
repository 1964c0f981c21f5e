//! Requests to a router in process, and a sink over the memory broker.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use flow_events_core::{Config, Resilient};
use flow_events_memory::MemoryBroker;
use flow_events_testkit::wait::start_connected;
use tower::ServiceExt;

pub const WAIT: Duration = Duration::from_secs(10);

/// A response: status, content type and body.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub content_type: String,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// `GET path` on `app`.
pub async fn get(app: &Router, path: &str) -> Answer {
    let request = Request::get(path).body(Body::empty()).expect("request");
    send(app, request).await
}

pub async fn send(app: &Router, request: Request<Body>) -> Answer {
    let response = app.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = axum::body::to_bytes(response.into_body(), 1 << 22)
        .await
        .expect("body");
    Answer {
        status,
        content_type,
        body: String::from_utf8(body.to_vec()).expect("UTF-8"),
    }
}

/// A sink over `broker`, connected.
pub async fn connected_sink(broker: &MemoryBroker, required: bool) -> Resilient {
    let config = Config::builder()
        .with_required(required)
        .with_retry_delay(Duration::from_millis(50))
        .with_max_retry_delay(Duration::from_millis(200))
        .with_max_retries(2)
        .build()
        .expect("config");
    start_connected(
        Resilient::builder(broker.backend()).with_config(config),
        WAIT,
    )
    .await
}
