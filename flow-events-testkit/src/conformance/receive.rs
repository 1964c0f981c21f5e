//! What arrives is what was sent: one event whole, a large payload, every
//! kind of Unicode, and an event nobody listens to.

use flow_events_core::PublishOutcome;
use serde_json::json;

use super::Harness;
use super::support::{Scope, assert_same_event, collect_acking, publish, subscribe};

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
