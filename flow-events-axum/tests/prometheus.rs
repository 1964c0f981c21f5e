//! `/metrics` renders the sink's and its consumers' metrics with their
//! values and labels. The only test of its binary: the recorder is global,
//! so no other sink adds to these counters.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::http::StatusCode;
use common::{WAIT, connected_sink, get};
use flow_events_axum::{Endpoints, install_prometheus};
use flow_events_core::{
    Decision, Delivery, Event, EventSink, EventSource, Subscription, TopicPattern, handler_fn,
};
use flow_events_memory::MemoryBroker;

#[tokio::test]
async fn metrics_count_publishes_and_deliveries_by_subscription_and_decision() {
    let prometheus = install_prometheus().expect("recorder");
    let broker = MemoryBroker::new();
    let events = connected_sink(&broker, false).await;
    let app: Router = Endpoints::new(events.clone(), "billing")
        .with_prometheus(prometheus)
        .router();

    let calls = Arc::new(AtomicUsize::new(0));
    let _subscription = events
        .subscribe(
            Subscription::new("invoices", TopicPattern::new("invoice.*").expect("pattern"))
                .expect("subscription")
                .with_max_attempts(2),
            handler_fn({
                let calls = calls.clone();
                move |d: Delivery| {
                    calls.fetch_add(1, Ordering::SeqCst);
                    async move {
                        match d.event().event_type().as_str() {
                            "invoice.bad" => Decision::Retry,
                            _ => Decision::Ack,
                        }
                    }
                }
            }),
        )
        .await
        .expect("subscribe");
    for t in ["invoice.paid", "invoice.sent", "invoice.bad"] {
        let event = Event::try_new(t, serde_json::json!({})).expect("event");
        events.publish(event).await.expect("confirmed");
    }
    // invoice.bad: retried once, then dead-lettered at its second attempt.
    tokio::time::timeout(WAIT, async {
        while calls.load(Ordering::SeqCst) < 4 || broker.dead_letters("invoices").is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("four handler calls");

    // Counted once the delivery is settled, just after the handler returns.
    let want = [
        "flow_events_published_total 3\n",
        "flow_events_confirmed_total 3\n",
        "flow_events_buffered_total 0\n",
        "flow_events_pending_events 0\n",
        "flow_events_connected 1\n",
        "flow_events_publish_duration_seconds_count{outcome=\"confirmed\"} 3\n",
        "flow_events_delivered_total{subscription=\"invoices\"} 4\n",
        "flow_events_handled_total{subscription=\"invoices\",decision=\"ack\"} 2\n",
        "flow_events_handled_total{subscription=\"invoices\",decision=\"retry\"} 2\n",
        "flow_events_retried_total{subscription=\"invoices\"} 1\n",
        "flow_events_dead_lettered_total{subscription=\"invoices\"} 1\n",
        "flow_events_handler_duration_seconds_count{subscription=\"invoices\"} 4\n",
    ];
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        let metrics = get(&app, "/metrics").await;
        assert_eq!(metrics.status, StatusCode::OK);
        text = metrics.body;
        if want.iter().all(|w| text.contains(w)) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    println!("{text}");
    for w in want {
        assert!(text.contains(w), "missing {w:?} in\n{text}");
    }
    events.shutdown(WAIT).await;
}
