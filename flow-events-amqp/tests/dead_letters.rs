//! Delayed retries through delay queues, dead letters that say why, and the
//! delivery limit of quorum queues, against the real broker.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::CleanupSubscription;
use common::broker::rabbitmqctl;
use common::python::{peek_dead_letter, python};
use common::{Fixture, WAIT, unique, until, until_state};
use flow_events_core::{
    Decision, Delivery, Event, EventSink, EventSource, QueueKind, Resilient, RetryPolicy,
    Subscription, TopicPattern, dead_letter, handler_fn,
};
use lapin::BasicProperties;
use lapin::options::{BasicGetOptions, BasicPublishOptions};
use lapin::types::AMQPValue;

/// A started `Resilient` over the fixture's backend, connected.
async fn client(fx: &Fixture) -> Resilient {
    let client = Resilient::builder(fx.backend.clone())
        .with_config(fx.config.clone())
        .start()
        .await
        .expect("start");
    until_state("connected", &client, WAIT, |s| {
        s == flow_events_core::ConnectionState::Connected
    })
    .await;
    client
}

/// Each delivery a handler saw, with when it came.
type Seen = Arc<Mutex<Vec<(Instant, Delivery)>>>;

/// A handler that records when each delivery came and answers `decision`.
fn recording(decision: Decision) -> (Arc<dyn flow_events_core::Handler>, Seen) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let handler = handler_fn(move |d: Delivery| {
        let log = log.clone();
        let decision = decision.clone();
        async move {
            log.lock().expect("lock").push((Instant::now(), d));
            decision
        }
    });
    (handler, seen)
}

fn count(seen: &Mutex<Vec<(Instant, Delivery)>>) -> usize {
    seen.lock().expect("lock").len()
}

/// The `x-flow-*` headers of a message, as text.
fn flow_headers(properties: &BasicProperties) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    if let Some(h) = properties.headers() {
        for (k, v) in h.inner() {
            if k.as_str().starts_with("x-flow-") {
                let text = match v {
                    AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                    other => format!("{other:?}"),
                };
                out.insert(k.as_str().to_owned(), text);
            }
        }
    }
    out
}

/// Takes the next message of `queue` (basic.get, acked), waiting for it.
async fn get(channel: &lapin::Channel, queue: &str) -> lapin::message::BasicGetMessage {
    let started = Instant::now();
    loop {
        let got = channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get");
        if let Some(message) = got {
            return message;
        }
        assert!(
            started.elapsed() < WAIT,
            "no message in {queue} within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Three retries after 200, 400 and 800 ms: each comes between the delay
/// asked and 250 ms more; after the last attempt the event is in the
/// dead-letter queue with every `x-flow-*` header, read back with pika.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_retries_then_a_dead_letter_that_says_why() {
    require_broker!("delayed_retries_then_a_dead_letter_that_says_why");
    let Some(python) = python() else { return };
    let mut fx = Fixture::new("delayed-retry");
    let name = unique("delayed-retry");
    fx.cleanup.subscription(&name);
    let client = client(&fx).await;
    let policy = RetryPolicy::exponential(Duration::from_millis(200))
        .with_factor(2.0)
        .with_jitter(false)
        .with_max_attempts(4);
    let sub = Subscription::new(&name, TopicPattern::new("order.*").expect("pattern"))
        .expect("subscription")
        .with_retry(policy.clone());
    let (handler, seen) = recording(Decision::Retry);
    let handle = client.subscribe(sub, handler).await.expect("subscribe");

    let event = Event::try_new("order.created", serde_json::json!({"n": 1})).expect("event");
    client.publish(event.clone()).await.expect("published");
    until("four attempts", WAIT, || count(&seen) == 4).await;

    let seen = seen.lock().expect("lock").clone();
    for (n, pair) in seen.windows(2).enumerate() {
        let retry = u32::try_from(n + 1).expect("small");
        let asked = policy.delay(retry);
        let observed = pair[1].0 - pair[0].0;
        println!(
            "retry {retry}: asked {} ms, observed {} ms",
            asked.as_millis(),
            observed.as_millis()
        );
        assert_eq!(pair[1].1.attempt(), retry + 1);
        assert!(
            observed >= asked && observed <= asked + Duration::from_millis(250),
            "retry {retry}: observed {observed:?}, asked {asked:?} (+250 ms at most)"
        );
    }

    let got = peek_dead_letter(&python, &format!("{name}.dead")).await;
    let headers = &got["headers"];
    for header in dead_letter::DEAD_LETTER_HEADERS {
        assert!(headers[header].is_string(), "{header} missing: {headers}");
    }
    assert_eq!(headers["x-flow-error"], "still failing after 4 attempts");
    assert_eq!(headers["x-flow-attempts"], "4");
    assert_eq!(headers["x-flow-routing-key"], "order.created");
    assert_eq!(headers["x-flow-subscription"], name.as_str());
    assert_eq!(got["message_id"], event.id().to_string());
    assert_eq!(got["body"]["id"], event.id().to_string());
    let first =
        dead_letter::parse_timestamp(headers["x-flow-first-failed-at"].as_str().unwrap_or(""))
            .expect("first failure");
    let last = dead_letter::parse_timestamp(headers["x-flow-failed-at"].as_str().unwrap_or(""))
        .expect("failure");
    let spread = (last - first).to_std().expect("in order");
    assert!(
        spread >= Duration::from_millis(1400),
        "the first failure is kept across the retries: {spread:?}"
    );
    handle.close().await;
    client.shutdown(WAIT).await;
}

/// A quorum-queue subscription declares `x-delivery-limit` from its maximum
/// attempts (read back from the broker); a failing event gets exactly that
/// many attempts, then is dead-lettered with its headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_queues_get_a_delivery_limit_from_the_attempts() {
    require_broker!("quorum_queues_get_a_delivery_limit_from_the_attempts");
    let mut fx = Fixture::new("delivery-limit");
    let name = unique("delivery-limit");
    fx.cleanup.subscription(&name);
    let client = client(&fx).await;
    let sub = Subscription::new(&name, TopicPattern::new("order.*").expect("pattern"))
        .expect("subscription")
        .with_queue_kind(QueueKind::Quorum)
        .with_max_attempts(3);
    let (handler, seen) = recording(Decision::Retry);
    let handle = client.subscribe(sub, handler).await.expect("subscribe");

    // Read back from the broker.
    let listed = rabbitmqctl(&[
        "list_queues",
        "-q",
        "--no-table-headers",
        "name",
        "arguments",
    ]);
    match listed {
        Some(listed) => {
            let line = listed
                .lines()
                .find(|l| l.starts_with(&format!("{name}\t")))
                .unwrap_or_else(|| panic!("{name} not listed:\n{listed}"));
            println!("broker: {line}");
            assert!(line.contains("{\"x-delivery-limit\",2}"), "{line}");
            assert!(line.contains("{\"x-queue-type\",\"quorum\"}"), "{line}");
        }
        None if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("rabbitmqctl is needed under CI=true to read the queue's arguments back")
        }
        None => eprintln!("rabbitmqctl unavailable: the delivery limit was not read back"),
    }

    let failing = Event::try_new("order.created", serde_json::json!({"n": 1})).expect("event");
    client.publish(failing.clone()).await.expect("published");
    let (_conn, channel) = common::raw().await;
    let dead = get(&channel, &format!("{name}.dead")).await;
    let headers = flow_headers(&dead.delivery.properties);
    println!("dead letter headers: {headers:?}");
    assert_eq!(headers["x-flow-attempts"], "3");
    assert_eq!(headers["x-flow-error"], "still failing after 3 attempts");
    assert_eq!(headers["x-flow-routing-key"], "order.created");
    assert_eq!(headers["x-flow-subscription"], name);
    for header in dead_letter::DEAD_LETTER_HEADERS {
        assert!(headers.contains_key(header), "{header} missing");
    }
    let attempts: Vec<u32> = seen
        .lock()
        .expect("lock")
        .iter()
        .map(|(_, d)| d.attempt())
        .collect();
    assert_eq!(attempts, [1, 2, 3], "exactly three attempts");
    handle.close().await;
    client.shutdown(WAIT).await;
}

/// A message that is not an event is dead-lettered saying so, with the
/// routing key it came with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_is_not_an_event_is_dead_lettered_saying_so() {
    require_broker!("a_message_that_is_not_an_event_is_dead_lettered_saying_so");
    let mut fx = Fixture::new("not-an-event");
    let name = unique("not-an-event");
    fx.cleanup.subscription(&name);
    let client = client(&fx).await;
    let sub = Subscription::new(&name, TopicPattern::new("order.*").expect("pattern"))
        .expect("subscription");
    let (handler, seen) = recording(Decision::Ack);
    let handle = client.subscribe(sub, handler).await.expect("subscribe");
    let (_conn, channel) = common::raw().await;
    channel
        .basic_publish(
            fx.exchange.as_str().into(),
            "order.garbled".into(),
            BasicPublishOptions::default(),
            b"{\"password\": \"hunter2\"}",
            BasicProperties::default(),
        )
        .await
        .expect("publish")
        .await
        .expect("written");
    let dead = get(&channel, &format!("{name}.dead")).await;
    let headers = flow_headers(&dead.delivery.properties);
    println!("dead letter headers: {headers:?}");
    assert!(
        headers["x-flow-error"].starts_with("not an event"),
        "{headers:?}"
    );
    assert!(!headers["x-flow-error"].contains("hunter2"));
    assert_eq!(headers["x-flow-routing-key"], "order.garbled");
    assert_eq!(headers["x-flow-attempts"], "1");
    assert_eq!(dead.delivery.data, b"{\"password\": \"hunter2\"}");
    assert_eq!(count(&seen), 0);
    handle.close().await;
    client.shutdown(WAIT).await;
}
