//! A sink over the memory broker with faults, and the helpers of the relay tests.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use flow_events_core::{
    Decision, Delivery, Event, EventId, EventSource, Resilient, Subscription, SubscriptionHandle,
    TopicPattern, handler_fn,
};
use flow_events_memory::MemoryBroker;
use flow_events_postgres::sqlx::PgPool;
use flow_events_postgres::{Outbox, Relay, RelayStatus, Tables};
use flow_events_testkit::faulty::{FaultHandle, Faulty};
use flow_events_testkit::wait::start_connected;

use super::{WAIT, until};

/// A sink over the memory broker with faults, connected, and a consumer on
/// it that records every event received, in order.
pub struct Sink {
    pub broker: MemoryBroker,
    pub sink: Resilient,
    pub faults: FaultHandle,
    pub received: Arc<Mutex<Vec<Event>>>,
    _consumer: (Resilient, SubscriptionHandle),
}

impl Sink {
    pub async fn start() -> Self {
        let broker = MemoryBroker::new();
        let (backend, faults) = Faulty::wrap(broker.backend());
        let sink = start_connected(Resilient::builder(backend), WAIT).await;
        let consumer = start_connected(Resilient::builder(broker.backend()), WAIT).await;
        let received = Arc::new(Mutex::new(Vec::new()));
        let seen = received.clone();
        let handle = consumer
            .subscribe(
                Subscription::new("relayed", TopicPattern::new("#").unwrap()).unwrap(),
                handler_fn(move |d: Delivery| {
                    let seen = seen.clone();
                    async move {
                        seen.lock().unwrap().push(d.into_event());
                        Decision::Ack
                    }
                }),
            )
            .await
            .unwrap();
        Self {
            broker,
            sink,
            faults,
            received,
            _consumer: (consumer, handle),
        }
    }

    pub fn ids(&self) -> Vec<EventId> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .map(Event::id)
            .collect()
    }

    pub async fn until_received(&self, ids: &[EventId]) {
        until(&format!("{} events received", ids.len()), WAIT, || async {
            let got = self.ids();
            ids.iter().all(|id| got.contains(id))
        })
        .await;
    }
}

pub fn event(n: usize) -> Event {
    Event::try_new("order.created", serde_json::json!({ "n": n })).unwrap()
}

pub fn relay(
    pool: &PgPool,
    tables: &Tables,
    sink: &Resilient,
) -> flow_events_postgres::RelayBuilder {
    Relay::builder(pool.clone(), tables, sink.clone())
        .with_status_interval(Duration::from_millis(50))
        .with_backoff(Duration::from_millis(20), Duration::from_millis(200))
}

pub async fn commit_events(pool: &PgPool, outbox: &Outbox, events: &[Event]) {
    let mut tx = pool.begin().await.unwrap();
    for e in events {
        outbox.enqueue(&mut tx, e).await.unwrap();
    }
    tx.commit().await.unwrap();
}

/// Commits `transactions` transactions of five events from each of
/// `writers` tasks at once; the ids of all the events.
pub async fn commit_concurrently(
    pool: &PgPool,
    outbox: &Outbox,
    writers: usize,
    transactions: usize,
) -> Vec<EventId> {
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let pool = pool.clone();
            let outbox = outbox.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for t in 0..transactions {
                    let first = (w * transactions + t) * 5;
                    let events: Vec<Event> = (first..first + 5).map(event).collect();
                    commit_events(&pool, &outbox, &events).await;
                    ids.extend(events.iter().map(Event::id));
                }
                ids
            })
        })
        .collect();
    let mut ids = Vec::new();
    for task in tasks {
        ids.extend(task.await.unwrap());
    }
    ids
}

pub async fn until_status(relay: &Relay, what: &str, check: impl Fn(&RelayStatus) -> bool) {
    let mut rx = relay.watch_status();
    if tokio::time::timeout(WAIT, rx.wait_for(|s| check(s)))
        .await
        .is_err()
    {
        panic!("{what}: not within {WAIT:?}; status {:?}", relay.status());
    }
}
