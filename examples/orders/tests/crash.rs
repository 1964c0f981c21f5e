//! The crash test: a child process creating orders (and relaying and
//! counting them) is killed with SIGKILL at random points, over several
//! rounds; after a restart every committed order has had exactly one effect
//! through the inbox, its event was delivered at least once, and no event
//! exists for an order that was rolled back.
//!
//! Needs PostgreSQL (`DATABASE_URL`, default the local `test` database) and
//! RabbitMQ at 127.0.0.1:5672; without them it skips, except under `CI=true`.
//! `CRASH_ROUNDS` sets the number of kills (default 5).

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{database_reachable, database_url, drop_tables_at_end};
use flow_events_amqp::{AmqpBackend, AmqpConfig};
use flow_events_core::{Config, Decision, Delivery, EventSource, Resilient, handler_fn};
use flow_events_postgres::Tables;
use flow_events_postgres::sqlx::postgres::PgPoolOptions;
use flow_events_postgres::sqlx::{self, PgPool};
use flow_events_testkit::amqp::Cleanup;
use flow_events_testkit::cleanup::OnDrop;
use flow_events_testkit::server::reachable;
use flow_events_testkit::steps::subscription;
use flow_events_testkit::wait::start_connected;
use orders::OrderStore;
use orders::settings::{
    ENV_DATABASE_URL, ENV_PORT, ENV_QUEUE, ENV_RELAY_POLL, ENV_TABLE_PREFIX, VARIABLES,
};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Names of this run, and the clean-up of everything it made.
struct Run {
    prefix: String,
    exchange: String,
    queue: String,
    observer: String,
    _tables: OnDrop,
    _amqp: Cleanup,
}

impl Run {
    /// The names of run `id`; what they name is deleted when the run is dropped.
    fn new(id: &str) -> Self {
        let prefix = format!("t_crash_{id}");
        let exchange = format!("test.crash.{id}");
        let queue = format!("test.crash.{id}.counts");
        let observer = format!("test.crash.{id}.observer");
        let mut amqp = Cleanup::new(AMQP_URL);
        amqp.queue(&queue)
            .queue(&format!("{queue}.dead"))
            .queue(&observer)
            .queue(&format!("{observer}.dead"))
            .exchange(&exchange)
            .exchange(&format!("{exchange}.dlx"));
        Self {
            _tables: drop_tables_at_end(Tables::new(&prefix).unwrap()),
            _amqp: amqp,
            prefix,
            exchange,
            queue,
            observer,
        }
    }

    /// The child: the example binary with this run's environment, built from
    /// the example's own list of variables.
    fn child(&self, command: &str) -> Child {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_orders"));
        for var in VARIABLES {
            cmd.env_remove(var);
        }
        cmd.arg(command)
            .env(ENV_DATABASE_URL, database_url())
            .env(ENV_TABLE_PREFIX, &self.prefix)
            .env(ENV_QUEUE, &self.queue)
            .env(ENV_RELAY_POLL, "0.2")
            .env(ENV_PORT, "0")
            .env(flow_events_amqp::ENV_URL, AMQP_URL)
            .env(flow_events_amqp::ENV_EXCHANGE, &self.exchange)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        cmd.spawn().expect("start the orders example")
    }
}

/// The events seen on the wire: order id -> deliveries.
type Wire = Arc<Mutex<HashMap<String, usize>>>;

async fn observe(run: &Run) -> (Resilient, flow_events_core::SubscriptionHandle, Wire) {
    let amqp = AmqpConfig::builder()
        .with_url(AMQP_URL)
        .with_exchange(&run.exchange)
        .build()
        .unwrap();
    let builder = Resilient::builder(AmqpBackend::new(&Config::default(), amqp));
    let r = start_connected(builder, Duration::from_secs(20)).await;
    let wire: Wire = Arc::default();
    let seen = wire.clone();
    let handle = r
        .subscribe(
            subscription(&run.observer, "order.created"),
            handler_fn(move |d: Delivery| {
                let seen = seen.clone();
                async move {
                    let order = d.event().data()["order_id"]
                        .as_str()
                        .unwrap_or("?")
                        .to_owned();
                    *seen.lock().unwrap().entry(order).or_default() += 1;
                    Decision::Ack
                }
            }),
        )
        .await
        .unwrap();
    (r, handle, wire)
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql).fetch_one(pool).await.unwrap();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_random_every_committed_order_counts_once() {
    let test = "the crash test";
    if !database_reachable(test) || !reachable("RabbitMQ", "127.0.0.1:5672", test) {
        return;
    }
    let rounds: usize = std::env::var("CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let run = Run::new(&format!("{:08x}", fastrand::u32(..)));
    let tables = Tables::new(&run.prefix).unwrap();
    let store = OrderStore::new(&tables);
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect(&database_url())
        .await
        .unwrap();
    let (observer, _observing, wire) = observe(&run).await;

    let committed: Arc<Mutex<Vec<String>>> = Arc::default();
    let rolled_back: Arc<Mutex<Vec<String>>> = Arc::default();
    for round in 0..rounds {
        let mut child = run.child("generate");
        let stdout = child.stdout.take().unwrap();
        let (c, r) = (committed.clone(), rolled_back.clone());
        let before = c.lock().unwrap().len();
        let reader = tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match line.split_once(' ') {
                    Some(("committed", id)) => c.lock().unwrap().push(id.to_owned()),
                    Some(("rolled-back", id)) => r.lock().unwrap().push(id.to_owned()),
                    _ => {}
                }
            }
        });
        // Once it is creating orders, kill it at a random point.
        let started = Instant::now();
        while committed.lock().unwrap().len() < before + 20 {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "round {round}: the child created no orders"
            );
            assert!(
                child.try_wait().unwrap().is_none(),
                "round {round}: the child exited"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(fastrand::u64(0..1500))).await;
        child.start_kill().unwrap(); // SIGKILL
        child.wait().await.unwrap();
        reader.await.unwrap();
        let outbox_rows = count(&pool, &format!("SELECT count(*) FROM {}", tables.outbox())).await;
        println!(
            "round {}: killed after {:?}; {} orders acknowledged so far, {} outbox rows left",
            round + 1,
            started.elapsed(),
            committed.lock().unwrap().len(),
            outbox_rows
        );
    }

    // Restart: the relay publishes what is left, the consumer counts it.
    let mut last = run.child("serve");
    let orders_sql = format!("SELECT count(*) FROM {}", store.orders);
    let counted_sql = format!(
        "SELECT coalesce(sum(orders), 0)::int8 FROM {}",
        store.counts
    );
    let outbox_sql = format!("SELECT count(*) FROM {}", tables.outbox());
    let started = Instant::now();
    loop {
        let orders = count(&pool, &orders_sql).await;
        let counted = count(&pool, &counted_sql).await;
        let outbox = count(&pool, &outbox_sql).await;
        let on_wire = wire.lock().unwrap().len() as i64;
        if outbox == 0 && counted == orders && on_wire >= orders {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "after the restart: {orders} orders, {counted} counted, {outbox} outbox rows, {on_wire} seen on the wire"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    last.start_kill().unwrap();
    last.wait().await.unwrap();

    // Every acknowledged order exists.
    let order_ids: HashSet<String> =
        sqlx::query_as::<_, (String,)>(&format!("SELECT id::text FROM {}", store.orders))
            .fetch_all(&pool)
            .await
            .unwrap()
            .into_iter()
            .map(|(id,)| id)
            .collect();
    let committed = committed.lock().unwrap().clone();
    let rolled_back = rolled_back.lock().unwrap().clone();
    for id in &committed {
        assert!(order_ids.contains(id), "acknowledged order {id} is missing");
    }
    // Exactly once in effect: each customer's count is its number of orders,
    // and the inbox holds one id per order.
    let per_customer: Vec<(String, i64, Option<i64>)> = sqlx::query_as(&format!(
        "SELECT o.customer, count(*), max(c.orders) FROM {} o LEFT JOIN {} c USING (customer) GROUP BY o.customer",
        store.orders, store.counts
    ))
    .fetch_all(&pool)
    .await
    .unwrap();
    for (customer, orders, counted) in &per_customer {
        assert_eq!(Some(*orders), *counted, "customer {customer}");
    }
    let claimed = count(&pool, &format!("SELECT count(*) FROM {}", tables.inbox())).await;
    assert_eq!(claimed, order_ids.len() as i64, "one inbox id per order");
    // At least once on the wire, and nothing for an order that does not exist.
    let wire = wire.lock().unwrap().clone();
    for id in &order_ids {
        assert!(wire.contains_key(id), "order {id} was never delivered");
    }
    for id in wire.keys() {
        assert!(
            order_ids.contains(id),
            "an event for order {id}, which was never committed"
        );
    }
    for id in &rolled_back {
        assert!(
            !wire.contains_key(id),
            "an event for rolled-back order {id}"
        );
    }
    let duplicates: usize = wire.values().map(|n| n - 1).sum();
    println!(
        "{rounds} kills: {} orders committed ({} acknowledged before a kill), {} rolled back, \
         {} events on the wire of which {duplicates} duplicates, {claimed} counted once each",
        order_ids.len(),
        committed.len(),
        rolled_back.len(),
        wire.values().sum::<usize>(),
    );
    assert!(!rolled_back.is_empty(), "the run rolled some orders back");
    observer.shutdown(Duration::from_secs(5)).await;
}
