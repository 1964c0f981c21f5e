//! The orders example service. `orders` serves the HTTP API; `orders
//! generate` (used by the crash test) creates orders without end, and rolls
//! one in five back, printing `committed <id>` or `rolled-back <id>` for
//! each once its transaction has ended.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use flow_events_amqp::AmqpBackend;
use flow_events_core::{
    ConnectionMonitor, ConnectionState, EventSource, Resilient, Subscription, TopicPattern,
    handler_fn,
};
use flow_events_postgres::sqlx::postgres::PgPoolOptions;
use flow_events_postgres::{Inbox, Relay, migrate};
use orders::{AppState, OrderStore, Settings, count_orders, create_order, rolled_back_order};
use tokio::io::AsyncWriteExt;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let generate = match std::env::args().nth(1).as_deref() {
        None | Some("serve") => false,
        Some("generate") => true,
        Some(other) => anyhow::bail!("unknown command {other:?}: use serve or generate"),
    };
    let settings = Settings::from_env()?;
    let pool = PgPoolOptions::new()
        .max_connections(10)
        .acquire_timeout(Duration::from_secs(10))
        .connect(&settings.database_url)
        .await
        .context("connecting to PostgreSQL")?;
    migrate(&pool, &settings.tables).await?;
    let store = OrderStore::new(&settings.tables);
    store.create_tables(&pool).await?;

    let backend = AmqpBackend::new(&settings.events, settings.amqp.clone());
    let events = Resilient::builder(backend)
        .with_config(settings.events.clone())
        .start()
        .await?;
    // The consumer's queue must exist before the first event is published,
    // or the broker has nowhere to route it: subscribe once connected, then
    // start the relay. (Services that consume another service's events
    // declare their queues themselves, before that service publishes.)
    let mut state = events.watch_state();
    let connected = tokio::time::timeout(
        Duration::from_secs(30),
        state.wait_for(|s| *s == ConnectionState::Connected),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    if !connected {
        tracing::warn!("RabbitMQ is not reachable yet; the consumer subscribes when it is");
    }
    let inbox = Inbox::new(&settings.tables, "customer-counts");
    let _cleanup = inbox.start_cleanup(
        pool.clone(),
        Duration::from_secs(7 * 24 * 3600),
        Duration::from_secs(3600),
    );
    let _subscription = events
        .subscribe(
            Subscription::new(&settings.queue, TopicPattern::new("order.created")?)?,
            handler_fn({
                let pool = pool.clone();
                let store = store.clone();
                move |delivery| {
                    let (pool, store, inbox) = (pool.clone(), store.clone(), inbox.clone());
                    async move { count_orders(&pool, &inbox, &store, &delivery).await }
                }
            }),
        )
        .await?;

    let relay = Arc::new(
        Relay::builder(pool.clone(), &settings.tables, events.clone())
            .with_name("orders")
            .with_poll_interval(settings.relay_poll)
            .start(),
    );
    let state = AppState {
        pool: pool.clone(),
        store: store.clone(),
        events: events.clone(),
        relay: relay.clone(),
    };
    if generate {
        for worker in 0..4u64 {
            let (pool, store) = (pool.clone(), store.clone());
            tokio::spawn(async move {
                if let Err(e) = generate_orders(worker, pool, store).await {
                    tracing::error!("generator stopped: {e:#}");
                }
            });
        }
        tokio::signal::ctrl_c().await?;
    } else {
        let addr = SocketAddr::from(([0, 0, 0, 0], settings.port));
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        tracing::info!(%addr, "orders listening");
        axum::serve(listener, orders::router(state))
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
    }
    relay.shutdown().await;
    events.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

/// Creates orders for seven customers without end; one in five is rolled back.
async fn generate_orders(
    worker: u64,
    pool: flow_events_postgres::sqlx::PgPool,
    store: OrderStore,
) -> anyhow::Result<()> {
    let mut out = tokio::io::stdout();
    for n in 0u64.. {
        let customer = format!("c{}", (worker + n) % 7);
        let amount = i64::from(fastrand::u32(100..10_000));
        let line = if fastrand::u8(0..5) == 0 {
            format!(
                "rolled-back {}\n",
                rolled_back_order(&pool, &store, &customer, amount).await?
            )
        } else {
            let (order_id, _) = create_order(&pool, &store, &customer, amount).await?;
            format!("committed {order_id}\n")
        };
        out.write_all(line.as_bytes()).await?;
        out.flush().await?;
    }
    Ok(())
}
