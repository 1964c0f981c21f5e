//! The conformance cases. Each one panics with a message saying what went wrong.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use flow_events_core::{Decision, Delivery, Event, EventId, EventSink, Handler, PublishOutcome};
use serde_json::json;
use tokio::sync::{Barrier, mpsc};

use super::Harness;
use super::support::{Scope, assert_same_event, collect, collect_acking, subscribe};

async fn publish<C: EventSink + ?Sized>(client: &C, event: Event, what: &str) -> PublishOutcome {
    client
        .publish(event)
        .await
        .unwrap_or_else(|e| panic!("publishing {what}: {e}"))
}

fn number(delivery: &Delivery, key: &str) -> u64 {
    delivery.event().data()[key]
        .as_u64()
        .unwrap_or_else(|| panic!("delivery without a numeric {key:?}: {:?}", delivery.event()))
}

/// One event published while connected is confirmed and arrives whole: same id,
/// type, payload, headers and timestamp, not flagged as redelivered, attempt 1.
pub async fn publish_then_receive<H: Harness>(harness: &H) {
    let wait = harness.timeout();
    let mut scope = Scope::new("receive");
    let client = harness.client().await;
    let (handler, mut seen) = collect_acking();
    let handle = subscribe(&client, scope.subscription("orders", "order.*"), handler).await;

    let sent = scope
        .event(
            "order.created",
            json!({"order_id": 42, "total": 19.99, "items": ["a", "b"], "gift": false}),
        )
        .with_header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        );
    let outcome = publish(&client, sent.clone(), "the event").await;
    assert_eq!(
        outcome,
        PublishOutcome::Confirmed,
        "a publish while connected"
    );

    let got = seen.next(wait, "the event").await;
    assert_same_event(got.event(), &sent, "the delivered event");
    assert!(!got.redelivered(), "a first delivery is not a redelivery");
    assert_eq!(got.attempt(), 1, "a first delivery is attempt 1");

    handle.close().await;
    harness.cleanup(scope.names()).await;
}

/// A thousand events published as one batch by one publisher arrive at one
/// consumer in the order they were published, each once.
pub async fn in_order_delivery<H: Harness>(harness: &H) {
    const N: usize = 1000;
    let wait = harness.timeout();
    let mut scope = Scope::new("order");
    let client = harness.client().await;
    let (handler, mut seen) = collect_acking();
    let handle = subscribe(&client, scope.subscription("orders", "order.#"), handler).await;

    let events: Vec<Event> = (0..N)
        .map(|n| scope.event("order.updated", json!({ "n": n })))
        .collect();
    let ids: Vec<EventId> = events.iter().map(Event::id).collect();
    for (n, result) in client.publish_batch(events).await.into_iter().enumerate() {
        if let Err(e) = result {
            panic!("publishing event {n}: {e}");
        }
    }

    let got = seen.take(N, wait, "the batch").await;
    let got_ids: Vec<EventId> = got.iter().map(|d| d.event().id()).collect();
    if got_ids != ids {
        let first = got
            .iter()
            .enumerate()
            .find(|(i, d)| d.event().id() != ids[*i])
            .map(|(i, d)| (i, number(d, "n")));
        panic!(
            "events arrived out of order or not once each; first difference (position, n): {first:?}"
        );
    }

    handle.close().await;
    harness.cleanup(scope.names()).await;
}

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

/// A delivery answered with `Retry` comes again, flagged as redelivered, as
/// attempt 2; acked then, it is not delivered a third time.
pub async fn retry_redelivers<H: Harness>(harness: &H) {
    let wait = harness.timeout();
    let mut scope = Scope::new("retry");
    let client = harness.client().await;
    let (handler, mut seen) = collect(|d| {
        if d.event().data()["kind"] == json!("flaky") && d.attempt() == 1 {
            Decision::Retry
        } else {
            Decision::Ack
        }
    });
    let subscription = scope
        .subscription("orders", "order.*")
        .with_prefetch(1)
        .with_max_attempts(3);
    let handle = subscribe(&client, subscription, handler).await;

    let flaky = scope.event("order.created", json!({ "kind": "flaky" }));
    publish(&client, flaky.clone(), "the flaky event").await;

    let first = seen.next(wait, "the first delivery").await;
    assert_eq!(first.event().id(), flaky.id());
    assert!(!first.redelivered(), "the first delivery is not flagged");
    assert_eq!(first.attempt(), 1);

    let second = seen.next(wait, "the redelivery").await;
    assert_eq!(
        second.event().id(),
        flaky.id(),
        "the retried event comes again"
    );
    assert!(
        second.redelivered(),
        "a retried event is flagged as redelivered"
    );
    assert_eq!(second.attempt(), 2, "a retried event comes as attempt 2");
    assert_same_event(second.event(), &flaky, "the redelivered event");

    assert_only_markers_follow(&client, &scope, &mut seen, flaky.id(), wait).await;
    handle.close().await;
    harness.cleanup(scope.names()).await;
}

/// Publishes two markers one after the other and asserts that they are the
/// next deliveries, so `gone` was not delivered again. With a prefetch of 1,
/// whether a broker puts a message back at the front or the back of the
/// queue, it would arrive before the second marker.
async fn assert_only_markers_follow<C: EventSink>(
    client: &C,
    scope: &Scope,
    seen: &mut super::support::Deliveries,
    gone: EventId,
    wait: std::time::Duration,
) {
    for n in 1..=2 {
        let marker = scope.event("order.marker", json!({ "kind": "marker", "n": n }));
        let id = marker.id();
        publish(client, marker, "a marker").await;
        let next = seen.next(wait, "a marker").await;
        assert_ne!(
            next.event().id(),
            gone,
            "the event was delivered again before marker {n}"
        );
        assert_eq!(next.event().id(), id, "marker {n} is the next delivery");
    }
}

/// A delivery answered with `Reject` is not delivered again.
pub async fn reject_does_not_redeliver<H: Harness>(harness: &H) {
    let wait = harness.timeout();
    let mut scope = Scope::new("reject");
    let client = harness.client().await;
    let (handler, mut seen) = collect(|d| {
        if d.event().data()["kind"] == json!("poison") {
            Decision::Reject
        } else {
            Decision::Ack
        }
    });
    let subscription = scope.subscription("orders", "order.*").with_prefetch(1);
    let handle = subscribe(&client, subscription, handler).await;

    let poison = scope.event("order.created", json!({ "kind": "poison" }));
    publish(&client, poison.clone(), "the poison event").await;
    let first = seen.next(wait, "the poison event").await;
    assert_eq!(first.event().id(), poison.id());

    assert_only_markers_follow(&client, &scope, &mut seen, poison.id(), wait).await;
    handle.close().await;
    harness.cleanup(scope.names()).await;
}

/// Eight tasks publishing 250 events each at once through one client: every
/// event arrives once, and each task's events arrive in the order it published them.
pub async fn concurrent_publishers<H: Harness>(harness: &H) {
    const TASKS: u64 = 8;
    const EACH: u64 = 250;
    let wait = harness.timeout();
    let mut scope = Scope::new("concurrent");
    let client = Arc::new(harness.client().await);
    let (handler, mut seen) = collect_acking();
    let handle = subscribe(&*client, scope.subscription("orders", "order.#"), handler).await;

    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let client = Arc::clone(&client);
        let events: Vec<Event> = (0..EACH)
            .map(|n| scope.event("order.updated", json!({ "task": task, "n": n })))
            .collect();
        tasks.push(tokio::spawn(async move {
            for event in events {
                if let Err(e) = client.publish(event).await {
                    panic!("task {task} publishing: {e}");
                }
            }
        }));
    }
    for task in tasks {
        if let Err(e) = task.await {
            panic!("a publishing task failed: {e}");
        }
    }

    let total = usize::try_from(TASKS * EACH).unwrap_or(usize::MAX);
    let got = seen.take(total, wait, "every event").await;
    let ids: HashSet<EventId> = got.iter().map(|d| d.event().id()).collect();
    assert_eq!(ids.len(), total, "no event arrives twice");
    let mut per_task: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for d in &got {
        per_task
            .entry(number(d, "task"))
            .or_default()
            .push(number(d, "n"));
    }
    for task in 0..TASKS {
        let ns = per_task.get(&task).map_or(&[][..], Vec::as_slice);
        assert!(
            ns.iter().copied().eq(0..EACH),
            "task {task}'s events arrive once each, in its order ({} of {EACH})",
            ns.len()
        );
    }

    handle.close().await;
    harness.cleanup(scope.names()).await;
}

/// A payload of 1 MiB (or [`Harness::large_payload_bytes`]) arrives intact.
pub async fn large_payload<H: Harness>(harness: &H) {
    let size = harness.large_payload_bytes();
    let wait = harness.timeout();
    let mut scope = Scope::new("large");
    let client = harness.client().await;
    let (handler, mut seen) = collect_acking();
    let handle = subscribe(&client, scope.subscription("files", "file.*"), handler).await;

    let alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut state = 0x2545_f491_u32;
    let blob: String = (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            char::from(alphabet[state as usize % alphabet.len()])
        })
        .collect();
    let sent = scope.event("file.uploaded", json!({ "blob": blob, "size": size }));
    assert!(sent.encoded_len() > size);
    publish(&client, sent.clone(), "the large event").await;

    let got = seen.next(wait, "the large event").await;
    assert_same_event(got.event(), &sent, "the large event");

    handle.close().await;
    harness.cleanup(scope.names()).await;
}

/// Emoji, CJK, right-to-left scripts, combining marks and escapes arrive
/// intact, in the payload, a header and the event type.
pub async fn unicode_payload<H: Harness>(harness: &H) {
    let wait = harness.timeout();
    let mut scope = Scope::new("unicode");
    let client = harness.client().await;
    let (handler, mut seen) = collect_acking();
    let handle = subscribe(&client, scope.subscription("texts", "größe.*"), handler).await;

    let sent = scope
        .event(
            "größe.変更",
            json!({
                "emoji": "🎉🚀 👩‍👩‍👧‍👦 🏳️‍🌈",
                "cjk": "漢字かな交じり文、中文，한국어",
                "rtl": "שלום עולם · مرحبا بالعالم",
                "combining": "e\u{301} n\u{303} a\u{30a}",
                "invisible": "zero\u{200b}width\u{200d}joiner\u{feff}",
                "escapes": "\"quoted\" \\ / \n\t\r \u{0} \u{1f}",
                "astral": "𝄞 𐍈 🀄",
                "keys": { "ключ": "значение", "🔑": "🗝️" }
            }),
        )
        .with_header("note", "héllo 世界 🎉 مرحبا");
    publish(&client, sent.clone(), "the unicode event").await;

    let got = seen.next(wait, "the unicode event").await;
    assert_same_event(got.event(), &sent, "the unicode event");

    handle.close().await;
    harness.cleanup(scope.names()).await;
}

/// After `SubscriptionHandle::close` has returned, its handler is not called
/// again, while another subscription goes on receiving.
pub async fn closed_subscription_stops_receiving<H: Harness>(harness: &H) {
    let wait = harness.timeout();
    let mut scope = Scope::new("close");
    let client = harness.client().await;
    let (h_closed, mut seen_closed) = collect_acking();
    let (h_open, mut seen_open) = collect_acking();
    let closing = subscribe(&client, scope.subscription("closing", "order.*"), h_closed).await;
    let open = subscribe(&client, scope.subscription("open", "order.*"), h_open).await;

    let before = scope.event("order.created", json!({ "n": 1 }));
    publish(&client, before.clone(), "the first event").await;
    assert_eq!(
        seen_closed.next(wait, "the first event").await.event().id(),
        before.id()
    );
    assert_eq!(
        seen_open.next(wait, "the first event").await.event().id(),
        before.id()
    );

    closing.close().await;
    let after = scope.event("order.created", json!({ "n": 2 }));
    publish(&client, after.clone(), "the second event").await;
    // The open subscription getting it shows it went through the broker.
    assert_eq!(
        seen_open.next(wait, "the second event").await.event().id(),
        after.id()
    );
    let late: Vec<EventId> = seen_closed
        .seen_now()
        .iter()
        .map(|d| d.event().id())
        .collect();
    assert!(
        late.is_empty(),
        "a closed subscription's handler was called: {late:?}"
    );

    open.close().await;
    harness.cleanup(scope.names()).await;
}

/// A subscription is durable: events published while it has no consumer wait
/// for it and arrive, in order, when it is subscribed again.
pub async fn subscription_keeps_events_while_closed<H: Harness>(harness: &H) {
    let wait = harness.timeout();
    let mut scope = Scope::new("durable");
    let client = harness.client().await;
    let subscription = scope.subscription("orders", "order.*");

    let (handler, mut seen) = collect_acking();
    let handle = subscribe(&client, subscription.clone(), handler).await;
    let first = scope.event("order.created", json!({ "n": 0 }));
    publish(&client, first.clone(), "the first event").await;
    assert_eq!(
        seen.next(wait, "the first event").await.event().id(),
        first.id()
    );
    handle.close().await;

    let waiting: Vec<Event> = (1..=3)
        .map(|n| scope.event("order.created", json!({ "n": n })))
        .collect();
    for event in &waiting {
        publish(&client, event.clone(), "an event while closed").await;
    }

    let (handler, mut seen) = collect_acking();
    let handle = subscribe(&client, subscription, handler).await;
    let got = seen.take(waiting.len(), wait, "the waiting events").await;
    let got: Vec<EventId> = got.iter().map(|d| d.event().id()).collect();
    let expected: Vec<EventId> = waiting.iter().map(Event::id).collect();
    assert_eq!(got, expected, "the events published while closed, in order");

    handle.close().await;
    harness.cleanup(scope.names()).await;
}

/// Publishing an event nobody subscribed to succeeds (it is confirmed and goes
/// nowhere): a subscription made afterwards does not get it.
pub async fn publish_without_subscribers<H: Harness>(harness: &H) {
    let wait = harness.timeout();
    let mut scope = Scope::new("nobody");
    let client = harness.client().await;

    let lost = scope.event("nobody.listens", json!({ "n": 0 }));
    let outcome = publish(&client, lost.clone(), "an event nobody subscribed to").await;
    assert_eq!(
        outcome,
        PublishOutcome::Confirmed,
        "publishing where nobody subscribes"
    );

    let (handler, mut seen) = collect_acking();
    let handle = subscribe(&client, scope.subscription("late", "#"), handler).await;
    let marker = scope.event("nobody.listens", json!({ "n": 1 }));
    publish(&client, marker.clone(), "the marker").await;
    let got = seen.next(wait, "the marker").await;
    assert_eq!(
        got.event().id(),
        marker.id(),
        "a subscription made after a publish does not get that event"
    );

    handle.close().await;
    harness.cleanup(scope.names()).await;
}
