//! Routing: topic patterns, fan-out to several subscriptions, and competing
//! consumers of one subscription.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use flow_events_core::{Decision, Delivery, Event, EventId, EventSink, Handler};
use serde_json::json;
use tokio::sync::{Barrier, mpsc};

use super::Harness;
use super::support::{Scope, collect_acking, number, publish, subscribe};

/// `*` matches exactly one word, `#` zero or more, a pattern without
/// wildcards only itself: each subscription gets exactly the matching events.
pub async fn topic_patterns<H: Harness>(harness: &H) {
    let wait = harness.timeout();
    let mut scope = Scope::new("topics");
    let client = harness.client().await;

    // (subscription, pattern, expected types in order, markers it will see)
    let cases: [(&str, &str, &[&str], usize); 4] = [
        ("star", "order.*", &["order.created", "order.paid"], 1),
        (
            "hash",
            "order.#",
            &["order", "order.created", "order.created.v2", "order.paid"],
            2,
        ),
        ("exact", "order.created", &["order.created"], 1),
        ("middle", "*.created", &["order.created", "user.created"], 1),
    ];
    let mut subscribed = Vec::new();
    for (what, pattern, expected, markers) in cases {
        let (handler, seen) = collect_acking();
        let handle = subscribe(&client, scope.subscription(what, pattern), handler).await;
        subscribed.push((what, expected, markers, handle, seen));
    }

    for suffix in [
        "order",
        "order.created",
        "order.created.v2",
        "order.paid",
        "user.created",
        "user",
        "stock.order.created",
    ] {
        let event = scope.event(suffix, json!({ "marker": false }));
        publish(&client, event, suffix).await;
    }
    // Markers, published last: `order.end` reaches `*` and `#`; a marked
    // `order.created` reaches `#`, the exact pattern and `*.created`. Once a
    // subscription has its markers, everything routed to it before has arrived.
    for suffix in ["order.end", "order.created"] {
        let event = scope.event(suffix, json!({ "marker": true }));
        publish(&client, event, suffix).await;
    }

    let prefix = scope.event_type("");
    for (what, expected, markers, handle, mut seen) in subscribed {
        let mut got = Vec::new();
        let mut markers_seen = 0;
        while markers_seen < markers {
            let d = seen.next(wait, &format!("the markers of {what}")).await;
            if d.event().data()["marker"] == json!(true) {
                markers_seen += 1;
            } else {
                got.push(d.event().event_type().as_str().replacen(&prefix, "", 1));
            }
        }
        assert_eq!(got, expected, "events routed to the {what:?} subscription");
        handle.close().await;
    }
    harness.cleanup(scope.names()).await;
}

/// Different subscription names each get every matching event.
pub async fn fan_out<H: Harness>(harness: &H) {
    const N: u64 = 10;
    let wait = harness.timeout();
    let mut scope = Scope::new("fanout");
    let client = harness.client().await;
    let (h1, mut seen1) = collect_acking();
    let (h2, mut seen2) = collect_acking();
    let one = subscribe(&client, scope.subscription("billing", "order.*"), h1).await;
    let two = subscribe(&client, scope.subscription("shipping", "order.*"), h2).await;

    for n in 0..N {
        publish(
            &client,
            scope.event("order.paid", json!({ "n": n })),
            "an event",
        )
        .await;
    }
    for (what, seen) in [("billing", &mut seen1), ("shipping", &mut seen2)] {
        let got = seen.take(N as usize, wait, what).await;
        let ns: Vec<u64> = got.iter().map(|d| number(d, "n")).collect();
        assert_eq!(ns, (0..N).collect::<Vec<_>>(), "events seen by {what}");
    }

    one.close().await;
    two.close().await;
    harness.cleanup(scope.names()).await;
}

/// Waits (bounded) on its first delivery until the other consumer has had
/// one too, so that both are attached before either races through the work.
struct Competing {
    consumer: usize,
    tx: mpsc::UnboundedSender<(usize, EventId)>,
    barrier: Arc<Barrier>,
    waited: AtomicBool,
    wait: std::time::Duration,
}

#[async_trait]
impl Handler for Competing {
    async fn handle(&self, delivery: Delivery) -> Decision {
        if !self.waited.swap(true, Ordering::SeqCst) {
            // On timeout go on: the case then fails on "both got some".
            let _ = tokio::time::timeout(self.wait, self.barrier.wait()).await;
        }
        let _ = self.tx.send((self.consumer, delivery.event().id()));
        Decision::Ack
    }
}

/// Two clients consuming one subscription name split the events between
/// them: none lost, none doubled, and each got some.
pub async fn competing_consumers<H: Harness>(harness: &H) {
    const N: usize = 1000;
    let wait = harness.timeout();
    let mut scope = Scope::new("compete");
    let subscription = scope.subscription("workers", "job.#");
    let clients = [harness.client().await, harness.client().await];
    let (tx, mut rx) = mpsc::unbounded_channel();
    let barrier = Arc::new(Barrier::new(2));
    let mut handles = Vec::new();
    for (consumer, client) in clients.iter().enumerate() {
        let handler = Arc::new(Competing {
            consumer,
            tx: tx.clone(),
            barrier: Arc::clone(&barrier),
            waited: AtomicBool::new(false),
            wait,
        });
        handles.push(subscribe(client, subscription.clone(), handler).await);
    }
    drop(tx);

    let events: Vec<Event> = (0..N)
        .map(|n| scope.event("job.run", json!({ "n": n })))
        .collect();
    let sent: HashSet<EventId> = events.iter().map(Event::id).collect();
    for (n, result) in clients[0]
        .publish_batch(events)
        .await
        .into_iter()
        .enumerate()
    {
        if let Err(e) = result {
            panic!("publishing job {n}: {e}");
        }
    }

    let mut got = Vec::with_capacity(N);
    let all = async {
        while got.len() < N {
            match rx.recv().await {
                Some(seen) => got.push(seen),
                None => break,
            }
        }
    };
    let timed_out = tokio::time::timeout(wait, all).await.is_err();
    assert!(
        !timed_out && got.len() == N,
        "got {} of {N} jobs within {wait:?}",
        got.len()
    );
    let ids: HashSet<EventId> = got.iter().map(|(_, id)| *id).collect();
    assert_eq!(ids.len(), N, "no job is handled twice");
    assert_eq!(ids, sent, "every job published is handled");
    let per_consumer = [0, 1].map(|c| got.iter().filter(|(who, _)| *who == c).count());
    assert!(
        per_consumer.iter().all(|&n| n > 0),
        "both consumers get work: {per_consumer:?}"
    );

    for handle in handles {
        handle.close().await;
    }
    harness.cleanup(scope.names()).await;
}
