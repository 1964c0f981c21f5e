//! Losing a connection: the session says so, its streams end, and its
//! deliveries cannot be settled on anything newer.

mod common;

use common::{Fixture, WAIT, unique};
use flow_events_core::{BackendErrorKind, Decision, Event, Subscription, TopicPattern};
use futures_util::StreamExt;

#[tokio::test(flavor = "multi_thread")]
async fn cut_connection_ends_the_session_and_its_deliveries() {
    require_broker!("cut_connection_ends_the_session_and_its_deliveries");
    let proxy = common::proxy().await;
    let mut fx = Fixture::with("cut", |c| c.with_url(common::url_through(&proxy)), |o| o);
    let name = unique("cut");
    fx.cleanup.subscription(&name);
    let sub = Subscription::new(&name, TopicPattern::all()).expect("subscription");

    let session = fx.session().await;
    let mut stream = session.subscribe(&sub).await.expect("subscribe");
    let sent = Event::try_new("order.created", serde_json::json!({"n": 1})).expect("event");
    session
        .send(&sent)
        .await
        .expect("send")
        .await
        .expect("confirm");
    let held = tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("in time")
        .expect("a delivery");

    proxy.cut();
    let reason = tokio::time::timeout(WAIT, session.closed())
        .await
        .expect("closed() resolves");
    assert_eq!(reason.kind(), BackendErrorKind::Connection, "{reason}");
    assert!(reason.is_retryable());
    assert!(
        tokio::time::timeout(WAIT, stream.next())
            .await
            .expect("the stream ends")
            .is_none()
    );
    let err = held
        .acker
        .settle(Decision::Ack)
        .await
        .expect_err("settled on a lost channel");
    assert_eq!(err.kind(), BackendErrorKind::Connection, "{err}");
    assert!(session.send(&sent).await.is_err());

    // A new session gets the event again, flagged, and can ack it.
    let session = fx.session().await;
    let mut stream = session.subscribe(&sub).await.expect("subscribe again");
    let again = tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("in time")
        .expect("the event again");
    assert_eq!(again.delivery.event(), &sent);
    assert!(again.delivery.redelivered());
    assert_eq!(again.delivery.attempt(), 2);
    again.acker.settle(Decision::Ack).await.expect("ack");
    session.close().await;
}

/// `rabbitmqctl`'s output, or `None` when it cannot be run here.
async fn rabbitmqctl(args: &[&str]) -> Option<String> {
    let out = tokio::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .await
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn connection_closed_by_the_broker_ends_the_session() {
    require_broker!("connection_closed_by_the_broker_ends_the_session");
    let app_id = unique("forced");
    let fx = Fixture::with("forced", |c| c, |o| o.with_app_id(&app_id));
    let session = fx.session().await;
    let Some(list) = rabbitmqctl(&["-q", "list_connections", "pid", "client_properties"]).await
    else {
        eprintln!("skipping: rabbitmqctl is not available");
        session.close().await;
        return;
    };
    let pid = list
        .lines()
        .find(|l| l.contains(&format!("{app_id} (consume)")))
        .and_then(|l| l.split_whitespace().next())
        .expect("the consuming connection is listed")
        .to_owned();
    rabbitmqctl(&["close_connection", &pid, "closed by a test"])
        .await
        .expect("close_connection");
    let reason = tokio::time::timeout(WAIT, session.closed())
        .await
        .expect("closed() resolves");
    assert_eq!(reason.kind(), BackendErrorKind::Connection, "{reason}");
    assert!(reason.message().contains("CONNECTION_FORCED"), "{reason}");
    assert!(
        reason.message().contains("consuming connection"),
        "{reason}"
    );
    session.close().await;
}
