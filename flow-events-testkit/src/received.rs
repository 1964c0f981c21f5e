//! A handler that records what it receives, for the fault tests of every
//! backend, which count deliveries: none lost, how many twice, in what order.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flow_events_core::{Decision, Delivery, Event, EventId, Handler, handler_fn};
use tokio::sync::watch;

/// An event of the fault tests: type `fault.test`, payload `{"seq": seq}`.
pub fn numbered(seq: u64) -> Event {
    Event::try_new("fault.test", serde_json::json!({ "seq": seq })).expect("event")
}

#[derive(Debug, Default)]
struct Seen {
    ids: HashSet<EventId>,
    /// `seq` of each event, in the order first received.
    first_order: Vec<u64>,
    deliveries: usize,
}

/// Records every delivery (acks it); cheap to clone.
#[derive(Debug, Clone)]
pub struct Received {
    seen: Arc<Mutex<Seen>>,
    distinct: Arc<watch::Sender<usize>>,
}

impl Default for Received {
    fn default() -> Self {
        Self {
            seen: Arc::default(),
            distinct: Arc::new(watch::Sender::new(0)),
        }
    }
}

impl Received {
    /// Nothing received yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A handler that records and acks.
    pub fn handler(&self) -> Arc<dyn Handler> {
        let this = self.clone();
        handler_fn(move |d: Delivery| {
            this.record(&d);
            async { Decision::Ack }
        })
    }

    /// Records `d` (its `seq`, or `u64::MAX` without one).
    pub fn record(&self, d: &Delivery) {
        let event = d.event();
        let seq = event.data()["seq"].as_u64().unwrap_or(u64::MAX);
        let distinct = {
            let mut seen = self.seen.lock().expect("lock");
            seen.deliveries += 1;
            if seen.ids.insert(event.id()) {
                seen.first_order.push(seq);
            }
            seen.ids.len()
        };
        self.distinct.send_replace(distinct);
    }

    /// How many distinct events arrived.
    pub fn distinct(&self) -> usize {
        self.seen.lock().expect("lock").ids.len()
    }

    /// How many deliveries there were, duplicates included.
    pub fn deliveries(&self) -> usize {
        self.seen.lock().expect("lock").deliveries
    }

    /// Deliveries of an event already received.
    pub fn duplicates(&self) -> usize {
        let seen = self.seen.lock().expect("lock");
        seen.deliveries - seen.ids.len()
    }

    /// `seq` of each event, in the order first received.
    pub fn first_order(&self) -> Vec<u64> {
        self.seen.lock().expect("lock").first_order.clone()
    }

    /// Whether the event `id` was received.
    pub fn contains(&self, id: &EventId) -> bool {
        self.seen.lock().expect("lock").ids.contains(id)
    }

    /// Waits until `n` distinct events arrived; panics after `limit`.
    pub async fn wait_distinct(&self, n: usize, limit: Duration) -> Duration {
        let started = std::time::Instant::now();
        let mut rx = self.distinct.subscribe();
        if tokio::time::timeout(limit, rx.wait_for(|d| *d >= n))
            .await
            .is_err()
        {
            panic!(
                "{} of {n} distinct events received within {limit:?} ({} deliveries)",
                self.distinct(),
                self.deliveries()
            );
        }
        started.elapsed()
    }
}
