//! Poison events against the real broker: an event the broker refuses (a
//! routing key its topic permissions deny) or nacks (a full queue with
//! `x-overflow: reject-publish`) is dealt with on its own, and the events
//! behind it flow.
//!
//! The topic permission tests use a virtual host and a user of their own,
//! created and deleted by the test; the nack test a queue of its own. None
//! of them changes anything another test uses.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::broker::{OwnVhost, ctl_available};
use common::traffic::{LONG, connected, fast, short_heartbeat};
use common::{Fixture, WAIT, unique, until, until_state};
use flow_events_amqp::{AmqpBackend, AmqpConfig};
use flow_events_core::{
    Config, ConnectionMonitor, Event, EventSink, EventSource, PublishErrorKind, PublishOutcome,
    Resilient, Subscription, SubscriptionHandle, TopicPattern,
};
use flow_events_testkit::received::Received;
use lapin::options::{
    BasicGetOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

fn order(seq: u64) -> Event {
    Event::try_new("order.created", serde_json::json!({ "seq": seq })).expect("event")
}

fn admin() -> Event {
    Event::try_new("admin.x", serde_json::json!({ "seq": u64::MAX })).expect("event")
}

/// `Resilient` over the broker at `url`, exchange `exchange`, started.
async fn resilient(test: &str, url: &str, exchange: &str) -> Resilient {
    let config = fast(Config::builder()).build().expect("config");
    let options = AmqpConfig::builder()
        .with_url(url)
        .with_exchange(exchange)
        .with_app_id(unique(test))
        .build()
        .expect("AMQP config");
    Resilient::builder(AmqpBackend::new(&config, options))
        .with_config(config)
        .start()
        .await
        .expect("start")
}

/// A consumer of every `order.*` event, straight to the broker at `url`, on
/// the subscription (queue) `subscription`.
async fn orders(
    test: &str,
    subscription: &str,
    url: &str,
    exchange: &str,
    received: &Received,
) -> (Resilient, SubscriptionHandle) {
    let consumer = resilient(test, url, exchange).await;
    until_state("consumer connected", &consumer, WAIT, connected).await;
    let sub = Subscription::new(subscription, TopicPattern::new("order.*").expect("pattern"))
        .expect("subscription")
        .with_prefetch(100);
    let handle = consumer
        .subscribe(sub, received.handler())
        .await
        .expect("subscribe");
    (consumer, handle)
}

/// A virtual host whose user may publish `order.*` only, or `None` (the
/// test is skipped) when `rabbitmqctl` is not available.
fn orders_only(test: &str, exchange: &str) -> Option<OwnVhost> {
    if !ctl_available(test) {
        return None;
    }
    let own = OwnVhost::create("topic").expect("create a virtual host and a user");
    own.allow_topics(exchange, r"^order\.");
    Some(own)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_routing_key_costs_that_event_and_nothing_else() {
    require_broker!("a_refused_routing_key_costs_that_event_and_nothing_else");
    let exchange = unique("topic");
    let Some(own) = orders_only(
        "a_refused_routing_key_costs_that_event_and_nothing_else",
        &exchange,
    ) else {
        return;
    };
    let received = Received::new();
    let (consumer, handle) =
        orders("topic", &unique("topic"), &own.url(), &exchange, &received).await;
    // The publisher goes through a proxy that counts its connections.
    let proxy = common::proxy().await;
    let publisher = resilient(
        "topic",
        &proxy.url_for(&own.user, &own.password, &own.vhost),
        &exchange,
    )
    .await;
    until_state("publisher connected", &publisher, WAIT, connected).await;

    // One refused event, then 200 good ones, all at once (as the requests
    // of a busy service would): the refusal closes the channel under the
    // others in flight.
    let bad = admin();
    let mut batch = vec![bad.clone()];
    batch.extend((0..200).map(order));
    let started = Instant::now();
    let mut results = publisher.publish_batch(batch).await.into_iter();
    let refused = match results.next().expect("a result per event") {
        Err(e) => {
            assert_eq!(e.kind(), &PublishErrorKind::Refused, "{e}");
            let why = e
                .backend_error()
                .map(ToString::to_string)
                .unwrap_or_default();
            assert!(why.contains("admin.x"), "{why}");
            assert_eq!(e.into_event(), bad);
            "handed back"
        }
        Ok(outcome) => {
            assert!(
                matches!(outcome, PublishOutcome::Buffered { .. }),
                "{outcome:?}"
            );
            until("counted as refused", WAIT, || {
                publisher.status().refused_events == 1
            })
            .await;
            "counted as refused"
        }
    };
    let mut confirmed = 0;
    for result in results {
        if result.expect("accepted") == PublishOutcome::Confirmed {
            confirmed += 1;
        }
    }
    let delivered = received.wait_distinct(200, LONG).await;
    let all_in = started.elapsed();
    let s = publisher.status();
    println!(
        "topic permission refusal: the refused event was {refused}; the 200 published with it \
         all delivered {all_in:?} after they were published ({confirmed} confirmed, the others \
         buffered after the refusal interrupted them; the last arrived {delivered:?} after the \
         publish calls returned); {} connection(s) through the proxy, {} reconnects",
        proxy.accepted(),
        s.reconnects
    );
    assert!(all_in <= Duration::from_secs(2), "{all_in:?}");
    // Publishing is back to direct, on the new channel.
    for seq in 200..220 {
        assert_eq!(
            publisher.publish(order(seq)).await.expect("accepted"),
            PublishOutcome::Confirmed
        );
    }
    received.wait_distinct(220, LONG).await;
    // At most one new connection for the whole test: the refusal costs a
    // channel, and now and then (1 run in 8 or so, cause not established)
    // the connection once; never a reconnect loop.
    assert!(proxy.accepted() <= 2, "{} connections", proxy.accepted());
    assert!(s.reconnects <= 1, "{} reconnects", s.reconnects);
    assert!(!received.contains(&bad.id()));
    handle.close().await;
    consumer.shutdown(WAIT).await;
    assert!(publisher.shutdown(WAIT).await.remaining.is_empty());
    drop(own);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_buffered_event_is_counted_and_the_rest_go_through() {
    require_broker!("a_refused_buffered_event_is_counted_and_the_rest_go_through");
    let exchange = unique("topicbuf");
    let Some(own) = orders_only(
        "a_refused_buffered_event_is_counted_and_the_rest_go_through",
        &exchange,
    ) else {
        return;
    };
    let received = Received::new();
    let (consumer, handle) = orders(
        "topicbuf",
        &unique("topicbuf"),
        &own.url(),
        &exchange,
        &received,
    )
    .await;
    let proxy = common::proxy().await;
    proxy.down();
    let publisher = resilient(
        "topicbuf",
        &proxy.url_for(&own.user, &own.password, &own.vhost),
        &exchange,
    )
    .await;
    assert!(matches!(
        publisher.publish(admin()).await.expect("buffered"),
        PublishOutcome::Buffered { .. }
    ));
    for seq in 0..50 {
        publisher.publish(order(seq)).await.expect("buffered");
    }
    let before = proxy.accepted();
    proxy.up();
    received.wait_distinct(50, LONG).await;
    until("nothing pending", LONG, || {
        publisher.status().pending_events == 0
    })
    .await;
    let s = publisher.status();
    println!(
        "refused from the buffer: {} refused, {} confirmed, {} connection(s) after up, last \
         error {:?}",
        s.refused_events,
        s.confirmed,
        proxy.accepted() - before,
        s.last_error
    );
    assert_eq!(received.first_order(), (0..50).collect::<Vec<_>>());
    assert_eq!(s.refused_events, 1);
    assert_eq!(s.confirmed, 50);
    assert_eq!(
        s.reconnects, 0,
        "the refusal cost a channel, not the connection"
    );
    assert!(proxy.accepted() - before <= 2);
    assert!(s.last_error.unwrap_or_default().contains("admin.x"));
    handle.close().await;
    consumer.shutdown(WAIT).await;
    assert!(publisher.shutdown(WAIT).await.remaining.is_empty());
    drop(own);
}

/// Declares `queue` bound to `exchange` with `pattern`, with `arguments`.
async fn bound_queue(
    channel: &lapin::Channel,
    exchange: &str,
    queue: &str,
    pattern: &str,
    arguments: FieldTable,
) {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            arguments,
        )
        .await
        .expect("declare queue");
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            pattern.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind queue");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_nacked_event_is_published_a_bounded_number_of_times_and_holds_nothing_back() {
    require_broker!("a_nacked_event_is_published_a_bounded_number_of_times_and_holds_nothing_back");
    let mut fx = Fixture::with("nack", fast, short_heartbeat);
    let (full, copies, orders_queue) = (unique("full"), unique("copies"), unique("nack"));
    let orders_dead = format!("{orders_queue}.dead");
    fx.cleanup
        .queue(&full)
        .queue(&copies)
        .queue(&orders_queue)
        .queue(&orders_dead);
    let (conn, channel) = common::raw().await;
    channel
        .exchange_declare(
            fx.exchange.as_str().into(),
            lapin::ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("declare exchange");
    // A queue that takes nothing and says so (nack), and one beside it that
    // keeps a copy of every publish.
    let mut rejecting = FieldTable::default();
    rejecting.insert(ShortString::from("x-max-length"), AMQPValue::LongLongInt(0));
    rejecting.insert(
        ShortString::from("x-overflow"),
        AMQPValue::LongString(LongString::from("reject-publish")),
    );
    bound_queue(&channel, &fx.exchange, &full, "order.full", rejecting).await;
    bound_queue(
        &channel,
        &fx.exchange,
        &copies,
        "order.full",
        FieldTable::default(),
    )
    .await;

    let received = Received::new();
    let (consumer, handle) =
        orders("nack", &orders_queue, common::URL, &fx.exchange, &received).await;
    let publisher = resilient("nack", common::URL, &fx.exchange).await;
    until_state("publisher connected", &publisher, WAIT, connected).await;
    let max = publisher.config().max_publish_attempts();
    let nacked: Vec<Event> = (0..2)
        .map(|n| {
            Event::try_new("order.full", serde_json::json!({ "seq": 1000 + n })).expect("event")
        })
        .collect();
    let started = Instant::now();
    for event in &nacked {
        let outcome = publisher.publish(event.clone()).await.expect("accepted");
        assert!(
            matches!(outcome, PublishOutcome::Buffered { .. }),
            "{outcome:?}"
        );
    }
    // The events behind them go straight through.
    let mut confirmed = 0;
    for seq in 0..50 {
        if publisher.publish(order(seq)).await.expect("accepted") == PublishOutcome::Confirmed {
            confirmed += 1;
        }
    }
    let others = received.wait_distinct(50, LONG).await;
    until("nothing pending", LONG, || {
        publisher.status().pending_events == 0
    })
    .await;
    let settled = started.elapsed();
    let s = publisher.status();
    assert_eq!(s.refused_events, 2, "{s:?}");

    // Every publish left a copy in the other queue.
    let mut sends: HashMap<String, usize> = HashMap::new();
    while let Some(copy) = channel
        .basic_get(copies.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .expect("basic_get")
    {
        let id = copy
            .delivery
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.as_str().to_owned())
            .unwrap_or_default();
        *sends.entry(id).or_default() += 1;
    }
    println!(
        "reject-publish: sends per nacked event {:?} (at most {max}); {confirmed} of 50 later \
         events confirmed at once, all 50 delivered within {others:?}; both nacked events given \
         up after {settled:?}",
        sends.values().collect::<Vec<_>>()
    );
    assert_eq!(sends.len(), 2);
    for event in &nacked {
        let n = sends.get(&event.id().to_string()).copied().unwrap_or(0);
        assert!(
            (1..=max as usize).contains(&n),
            "{n} sends of {}",
            event.id()
        );
    }
    assert_eq!(confirmed, 50, "the later events were not held back");
    assert_eq!(s.reconnects, 0);
    handle.close().await;
    consumer.shutdown(WAIT).await;
    assert!(publisher.shutdown(WAIT).await.remaining.is_empty());
    let _ = conn.close(200, "done".into()).await;
}
