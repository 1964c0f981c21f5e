//! The HTTP API in-process, over the memory broker and the local PostgreSQL:
//! an order and its event commit together, the consumer counts it once,
//! health shows the relay.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{database_reachable, database_url, drop_tables_at_end};
use flow_events_core::{Delivery, EventSource, Resilient, handler_fn};
use flow_events_memory::MemoryBroker;
use flow_events_postgres::sqlx::postgres::PgPoolOptions;
use flow_events_postgres::{Inbox, Relay, Tables, migrate};
use flow_events_testkit::steps::subscription;
use flow_events_testkit::wait::start_connected;
use orders::{AppState, OrderStore, count_orders, router};
use serde_json::{Value, json};
use tower::ServiceExt;

/// Longest wait for the decorator to connect.
const WAIT: Duration = Duration::from_secs(10);

async fn call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(match body {
            Some(v) => Body::from(v.to_string()),
            None => Body::empty(),
        })
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_is_counted_once_and_health_shows_the_relay() {
    if !database_reachable("the API test") {
        return;
    }
    let pool = PgPoolOptions::new()
        .max_connections(6)
        .connect(&database_url())
        .await
        .unwrap();
    let tables = Tables::new(&format!("t_api_{:08x}", fastrand::u32(..))).unwrap();
    migrate(&pool, &tables).await.unwrap();
    let store = OrderStore::new(&tables);
    let _drop = drop_tables_at_end(tables.clone());
    store.create_tables(&pool).await.unwrap();

    let broker = MemoryBroker::new();
    let events = start_connected(Resilient::builder(broker.backend()), WAIT).await;
    let inbox = Inbox::new(&tables, "customer-counts");
    let _subscription = events
        .subscribe(
            subscription("counts", "order.created"),
            handler_fn({
                let (pool, store) = (pool.clone(), store.clone());
                move |d: Delivery| {
                    let (pool, store, inbox) = (pool.clone(), store.clone(), inbox.clone());
                    async move {
                        // Handled twice, as a redelivery would be: counted once.
                        let first = count_orders(&pool, &inbox, &store, &d).await;
                        let again = count_orders(&pool, &inbox, &store, &d).await;
                        assert_eq!(
                            (first.clone(), again),
                            (
                                flow_events_core::Decision::Ack,
                                flow_events_core::Decision::Ack
                            )
                        );
                        first
                    }
                }
            }),
        )
        .await
        .unwrap();
    let relay = Arc::new(Relay::builder(pool.clone(), &tables, events.clone()).start());
    let app = router(AppState {
        pool: pool.clone(),
        store: store.clone(),
        events: events.clone(),
        relay: relay.clone(),
    });

    let (status, created) = call(
        &app,
        "POST",
        "/orders",
        Some(json!({"customer": "c-1", "amount_cents": 1250})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert!(created["order_id"].is_string() && created["event_id"].is_string());
    let (status, _) = call(
        &app,
        "POST",
        "/orders",
        Some(json!({"customer": "", "amount_cents": 1})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    let started = Instant::now();
    loop {
        let (status, body) = call(&app, "GET", "/customers/c-1", None).await;
        assert_eq!(status, StatusCode::OK);
        if body["orders"] == 1 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "never counted: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, health) = call(&app, "GET", "/health", None).await;
    assert_eq!(status, StatusCode::OK, "{health}");
    assert_eq!(health["relay"]["published"], 1, "{health}");
    assert!(health["relay"]["state"].is_string());

    relay.shutdown().await;
    events.shutdown(Duration::from_secs(1)).await;
}
