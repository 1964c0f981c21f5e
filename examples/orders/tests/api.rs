//! The HTTP API in-process, over the memory broker and the local PostgreSQL:
//! an order and its event commit together, the consumer counts it once,
//! health shows the relay.

#![allow(clippy::unwrap_used)]

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use flow_events_core::{
    ConnectionMonitor, ConnectionState, Delivery, EventSource, Resilient, Subscription,
    TopicPattern, handler_fn,
};
use flow_events_memory::MemoryBroker;
use flow_events_postgres::sqlx::postgres::PgPoolOptions;
use flow_events_postgres::{Inbox, Relay, Tables, drop_tables, migrate};
use orders::{AppState, OrderStore, count_orders, router};
use serde_json::{Value, json};
use tower::ServiceExt;

const DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

fn database_available() -> bool {
    let addr: SocketAddr = "127.0.0.1:5432".parse().unwrap();
    match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
        Ok(_) => true,
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("PostgreSQL is not reachable at {addr} ({e}) and CI=true")
        }
        Err(e) => {
            eprintln!("skipping the API test: PostgreSQL is not reachable at {addr} ({e})");
            false
        }
    }
}

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
    if !database_available() {
        return;
    }
    let pool = PgPoolOptions::new()
        .max_connections(6)
        .connect(DATABASE_URL)
        .await
        .unwrap();
    let tables = Tables::new(&format!("t_api_{:08x}", fastrand::u32(..))).unwrap();
    migrate(&pool, &tables).await.unwrap();
    let store = OrderStore::new(&tables);
    let _drop = DropTables(tables.clone());
    store.create_tables(&pool).await.unwrap();

    let broker = MemoryBroker::new();
    let events = Resilient::builder(broker.backend()).start().await.unwrap();
    events
        .watch_state()
        .wait_for(|s| *s == ConnectionState::Connected)
        .await
        .unwrap();
    let inbox = Inbox::new(&tables, "customer-counts");
    let _subscription = events
        .subscribe(
            Subscription::new("counts", TopicPattern::new("order.created").unwrap()).unwrap(),
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

/// Drops the test's tables when dropped, also on a panic.
struct DropTables(Tables);

impl Drop for DropTables {
    fn drop(&mut self) {
        let tables = self.0.clone();
        // A runtime of its own on a thread of its own: this runs inside the
        // test's runtime, where blocking on a future is not allowed.
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                if let Ok(pool) = PgPoolOptions::new()
                    .max_connections(1)
                    .connect(DATABASE_URL)
                    .await
                {
                    let _ = OrderStore::new(&tables).drop_tables(&pool).await;
                    let _ = drop_tables(&pool, &tables).await;
                }
            });
        });
        let _ = done.join();
    }
}
