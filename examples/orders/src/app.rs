//! The HTTP API: `POST /orders`, `GET /customers/{customer}`, `GET /health`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use flow_events_core::{ConnectionMonitor, Resilient};
use flow_events_postgres::Relay;
use flow_events_postgres::sqlx::{self, PgPool};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::store::{OrderStore, create_order};

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The database.
    pub pool: PgPool,
    /// The order tables and the outbox.
    pub store: OrderStore,
    /// The event sink the relay publishes through.
    pub events: Resilient,
    /// The relay.
    pub relay: Arc<Relay>,
}

#[derive(Debug, Deserialize)]
struct NewOrder {
    customer: String,
    amount_cents: i64,
}

/// The routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/orders", post(post_order))
        .route("/customers/{customer}", get(customer))
        .route("/health", get(health))
        .with_state(state)
}

fn error(status: StatusCode, message: impl std::fmt::Display) -> (StatusCode, Json<Value>) {
    (status, Json(json!({ "error": message.to_string() })))
}

async fn post_order(
    State(state): State<AppState>,
    Json(order): Json<NewOrder>,
) -> (StatusCode, Json<Value>) {
    if order.customer.is_empty() || order.customer.len() > 200 {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "customer must be 1 to 200 bytes",
        );
    }
    match create_order(
        &state.pool,
        &state.store,
        &order.customer,
        order.amount_cents,
    )
    .await
    {
        Ok((order_id, event_id)) => (
            StatusCode::CREATED,
            Json(json!({ "order_id": order_id, "event_id": event_id })),
        ),
        Err(e) => {
            tracing::error!(error = %e, "could not create an order: {e}");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "could not create the order",
            )
        }
    }
}

async fn customer(
    State(state): State<AppState>,
    Path(customer): Path<String>,
) -> (StatusCode, Json<Value>) {
    let counted: Result<Option<(i64,)>, _> = sqlx::query_as(&format!(
        "SELECT orders FROM {} WHERE customer = $1",
        state.store.counts
    ))
    .bind(&customer)
    .fetch_optional(&state.pool)
    .await;
    match counted {
        Ok(n) => (
            StatusCode::OK,
            Json(json!({ "customer": customer, "orders": n.map_or(0, |(n,)| n) })),
        ),
        Err(e) => {
            tracing::error!(error = %e, "could not read a count: {e}");
            error(StatusCode::SERVICE_UNAVAILABLE, "database unavailable")
        }
    }
}

async fn health(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let mut report = serde_json::to_value(state.events.health("orders")).unwrap_or(Value::Null);
    let relay = state.relay.status();
    if let Value::Object(map) = &mut report {
        map.insert(
            "relay".to_owned(),
            serde_json::to_value(&relay).unwrap_or(Value::Null),
        );
    }
    let status = if state.events.status().connected {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report))
}
