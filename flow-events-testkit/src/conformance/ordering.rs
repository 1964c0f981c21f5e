//! Order: one publisher's batch, and many publishers at once.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use flow_events_core::{Event, EventId, EventSink};
use serde_json::json;

use super::Harness;
use super::support::{Scope, collect_acking, number, subscribe};

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
