//! Conformance cases of delayed retries and dead letters that say why.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use flow_events_core::{Decision, Event, EventSink, RetryPolicy, dead_letter};
use serde_json::json;
use tokio::time::Instant;

use super::Harness;
use super::support::{Scope, collect, subscribe};

async fn publish<C: EventSink + ?Sized>(client: &C, event: Event, what: &str) {
    if let Err(e) = client.publish(event).await {
        panic!("publishing {what}: {e}");
    }
}

/// The dead letters of `subscription` once there are `n` of them, or `None`
/// when the harness cannot read them.
async fn dead_letters<H: Harness>(harness: &H, subscription: &str, n: usize) -> Option<Vec<Event>> {
    let deadline = Instant::now() + harness.timeout();
    loop {
        let found = harness.dead_letters(subscription).await?;
        if found.len() >= n {
            return Some(found);
        }
        assert!(
            Instant::now() < deadline,
            "{} dead letters of {subscription} within {:?}, expected {n}",
            found.len(),
            harness.timeout()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts that `dead` is a dead letter of `original` from `subscription`
/// after `attempts`, for a reason containing `reason`.
fn assert_says_why(
    dead: &Event,
    original: &Event,
    subscription: &str,
    attempts: u32,
    reason: &str,
) {
    assert_eq!(dead.id(), original.id(), "the dead letter is the event");
    let header = |name: &str| {
        dead.headers()
            .get(name)
            .unwrap_or_else(|| panic!("the dead letter has no {name} header: {:?}", dead.headers()))
            .clone()
    };
    assert!(
        header(dead_letter::ERROR_HEADER).contains(reason),
        "{} says {:?}, expected it to mention {reason:?}",
        dead_letter::ERROR_HEADER,
        header(dead_letter::ERROR_HEADER)
    );
    assert_eq!(header(dead_letter::ATTEMPTS_HEADER), attempts.to_string());
    assert_eq!(
        header(dead_letter::ROUTING_KEY_HEADER),
        original.event_type().as_str()
    );
    assert_eq!(header(dead_letter::SUBSCRIPTION_HEADER), subscription);
    let first = dead_letter::parse_timestamp(&header(dead_letter::FIRST_FAILED_AT_HEADER))
        .expect("the first failure is a time");
    let last = dead_letter::parse_timestamp(&header(dead_letter::FAILED_AT_HEADER))
        .expect("the failure is a time");
    assert!(first <= last, "first failure {first} after the last {last}");
}

/// A handler that always retries, under a policy of 3 attempts with delays
/// of 100 and 200 ms: the event comes as attempts 1, 2 and 3, each at least
/// the policy's delay after the one before, then goes to the dead letters
/// with every `x-flow-*` header.
pub async fn retry_waits_for_the_policy_delay<H: Harness>(harness: &H) {
    let wait = harness.timeout();
    let mut scope = Scope::new("delayed");
    let client = harness.client().await;
    let times = Arc::new(Mutex::new(Vec::new()));
    let seen_at = times.clone();
    let (handler, mut seen) = collect(move |_| {
        if let Ok(mut t) = seen_at.lock() {
            t.push(Instant::now());
        }
        Decision::Retry
    });
    let policy = RetryPolicy::exponential(Duration::from_millis(100))
        .with_factor(2.0)
        .with_jitter(false)
        .with_max_attempts(3);
    let subscription = scope
        .subscription("orders", "order.*")
        .with_retry(policy.clone());
    let name = subscription.name().to_owned();
    let handle = subscribe(&client, subscription, handler).await;

    let event = scope.event("order.created", json!({ "kind": "failing" }));
    publish(&client, event.clone(), "the failing event").await;
    for attempt in 1..=3 {
        let d = seen.next(wait, "an attempt").await;
        assert_eq!(d.event().id(), event.id());
        assert_eq!(d.attempt(), attempt, "attempts count from 1");
        assert_eq!(d.redelivered(), attempt > 1);
    }
    let times = times.lock().map(|t| t.clone()).unwrap_or_default();
    for (n, pair) in times.windows(2).enumerate() {
        let asked = policy.delay(u32::try_from(n + 1).unwrap_or(u32::MAX));
        let waited = pair[1] - pair[0];
        assert!(
            waited >= asked,
            "retry {} came after {waited:?}, the policy asks {asked:?}",
            n + 1
        );
    }
    if let Some(dead) = dead_letters(harness, &name, 1).await {
        assert_eq!(dead.len(), 1, "one dead letter");
        assert_says_why(&dead[0], &event, &name, 3, "still failing after 3 attempts");
    }
    handle.close().await;
    harness.cleanup(scope.names()).await;
}

/// A handler answering `RetryAfter(300 ms)` gets the event again no sooner,
/// as attempt 2, flagged as redelivered.
pub async fn retry_after_waits_for_the_handlers_delay<H: Harness>(harness: &H) {
    let wait = harness.timeout();
    let mut scope = Scope::new("after");
    let client = harness.client().await;
    let asked = Duration::from_millis(300);
    let times = Arc::new(Mutex::new(Vec::new()));
    let seen_at = times.clone();
    let (handler, mut seen) = collect(move |d| {
        if let Ok(mut t) = seen_at.lock() {
            t.push(Instant::now());
        }
        if d.attempt() == 1 {
            Decision::RetryAfter(asked)
        } else {
            Decision::Ack
        }
    });
    let subscription = scope.subscription("orders", "order.*");
    let handle = subscribe(&client, subscription, handler).await;
    let event = scope.event("order.created", json!({ "kind": "later" }));
    publish(&client, event.clone(), "the event").await;
    let first = seen.next(wait, "the first attempt").await;
    assert_eq!(first.attempt(), 1);
    let second = seen.next(wait, "the delayed retry").await;
    assert_eq!(second.event().id(), event.id());
    assert_eq!(second.attempt(), 2);
    assert!(second.redelivered());
    let times = times.lock().map(|t| t.clone()).unwrap_or_default();
    assert!(
        times[1] - times[0] >= asked,
        "the retry came after {:?}, the handler asked {asked:?}",
        times[1] - times[0]
    );
    handle.close().await;
    harness.cleanup(scope.names()).await;
}

/// A reject's reason, the attempts, the original routing key and the
/// subscription travel with the dead letter; a panicking handler's last
/// attempt is dead-lettered saying it panicked.
pub async fn dead_letters_say_why<H: Harness>(harness: &H) {
    let wait = harness.timeout();
    let mut scope = Scope::new("why");
    let client = harness.client().await;
    let (handler, mut seen) = collect(|d| {
        if d.event().data()["kind"] == json!("panic") {
            panic!("the handler broke on purpose");
        }
        Decision::reject("no such customer")
    });
    let subscription = scope.subscription("orders", "order.*").with_max_attempts(1);
    let name = subscription.name().to_owned();
    let handle = subscribe(&client, subscription, handler).await;
    let rejected = scope.event("order.created", json!({ "kind": "reject" }));
    publish(&client, rejected.clone(), "the rejected event").await;
    assert_eq!(seen.next(wait, "the rejected event").await.attempt(), 1);
    let panicking = scope.event("order.paid", json!({ "kind": "panic" }));
    publish(&client, panicking.clone(), "the panicking event").await;
    let Some(dead) = dead_letters(harness, &name, 2).await else {
        println!("the harness reads no dead letters: only the deliveries were checked");
        handle.close().await;
        harness.cleanup(scope.names()).await;
        return;
    };
    assert_eq!(dead.len(), 2, "two dead letters");
    assert_says_why(&dead[0], &rejected, &name, 1, "no such customer");
    assert_says_why(
        &dead[1],
        &panicking,
        &name,
        1,
        "the handler broke on purpose",
    );
    handle.close().await;
    harness.cleanup(scope.names()).await;
}
