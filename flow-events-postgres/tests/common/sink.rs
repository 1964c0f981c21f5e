//! A sink over the memory broker with faults, and the helpers of the relay tests.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use flow_events_core::{
    ConnectionMonitor, ConnectionState, Decision, Delivery, Event, EventId, EventSource, Resilient,
    Subscription, SubscriptionHandle, TopicPattern, handler_fn,
};
use flow_events_memory::MemoryBroker;
use flow_events_postgres::sqlx::PgPool;
use flow_events_postgres::{Outbox, Relay, RelayStatus, Tables};
use flow_events_testkit::faulty::{FaultHandle, Faulty};

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
        let sink = Resilient::builder(backend).start().await.unwrap();
        let consumer = Resilient::builder(broker.backend()).start().await.unwrap();
        for r in [&sink, &consumer] {
            tokio::time::timeout(
                WAIT,
                r.watch_state()
                    .wait_for(|s| *s == ConnectionState::Connected),
            )
            .await
            .unwrap()
            .unwrap();
        }
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

pub async fn until_status(relay: &Relay, what: &str, check: impl Fn(&RelayStatus) -> bool) {
    let mut rx = relay.watch_status();
    if tokio::time::timeout(WAIT, rx.wait_for(|s| check(s)))
        .await
        .is_err()
    {
        panic!("{what}: not within {WAIT:?}; status {:?}", relay.status());
    }
}
