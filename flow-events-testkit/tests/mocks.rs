//! Each mock stands in for its trait, and its expectations are checked.

use std::sync::Arc;

use flow_events_core::{
    Backend, BackendError, BackendErrorKind, BackendInfo, ConfirmWait, ConnectionMonitor,
    ConnectionState, ConnectionStatus, Decision, Delivery, Event, EventSink, EventSource, Handler,
    PublishError, PublishErrorKind, PublishOutcome, Session, SubscribeError, Subscription,
    TopicPattern,
};
use flow_events_testkit::mocks::{
    MockBackend, MockConnectionMonitor, MockEventSink, MockEventSource, MockHandler, MockSession,
};
use mockall::Sequence;
use tokio::sync::watch;

fn event(t: &str) -> Event {
    Event::try_new(t, serde_json::json!({ "t": t })).expect("a valid event")
}

#[tokio::test]
async fn event_sink_mock_checks_calls_and_order() {
    let mut sink = MockEventSink::new();
    let mut seq = Sequence::new();
    sink.expect_publish()
        .withf(|e| e.event_type().as_str() == "order.created")
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(PublishOutcome::Confirmed));
    sink.expect_publish()
        .withf(|e| e.event_type().as_str() == "order.paid")
        .times(1)
        .in_sequence(&mut seq)
        .returning(|e| Err(PublishError::new(PublishErrorKind::ShuttingDown, e)));

    let sent = event("order.paid");
    assert_eq!(
        sink.publish(event("order.created")).await.unwrap(),
        PublishOutcome::Confirmed
    );
    let err = sink.publish(sent.clone()).await.unwrap_err();
    assert_eq!(err.kind(), &PublishErrorKind::ShuttingDown);
    assert_eq!(err.into_event(), sent);
    sink.checkpoint();
}

#[tokio::test]
async fn event_source_mock_refuses_a_subscription() {
    let mut source = MockEventSource::new();
    source
        .expect_subscribe()
        .withf(|s, _| s.name() == "billing")
        .times(1)
        .returning(|_, _| Err(SubscribeError::ShuttingDown));
    let handler = Arc::new(MockHandler::new());
    let subscription = Subscription::new("billing", TopicPattern::all()).unwrap();
    let result = source.subscribe(subscription, handler).await;
    assert!(matches!(result, Err(SubscribeError::ShuttingDown)));
}

#[tokio::test]
async fn handler_mock_decides_per_delivery() {
    let mut handler = MockHandler::new();
    handler
        .expect_handle()
        .withf(|d| d.attempt() == 1)
        .times(2)
        .returning(|_| Decision::Retry);
    handler
        .expect_handle()
        .withf(|d| d.attempt() > 1)
        .times(1)
        .returning(|_| Decision::Ack);
    let handler: Arc<dyn Handler> = Arc::new(handler);
    let e = event("order.created");
    assert_eq!(
        handler.handle(Delivery::new(e.clone(), false, 1)).await,
        Decision::Retry
    );
    assert_eq!(
        handler.handle(Delivery::new(e.clone(), false, 1)).await,
        Decision::Retry
    );
    assert_eq!(
        handler.handle(Delivery::new(e, true, 2)).await,
        Decision::Ack
    );
}

#[test]
fn connection_monitor_mock_reports_state() {
    let mut monitor = MockConnectionMonitor::new();
    let (_tx, rx) = watch::channel(ConnectionState::Connecting);
    monitor
        .expect_state()
        .times(1)
        .return_const(ConnectionState::Failed);
    monitor
        .expect_watch_state()
        .times(1)
        .return_once(move || rx);
    monitor.expect_status().times(1).returning(|| {
        let mut status = ConnectionStatus::new(ConnectionState::Failed, "amqp://h/");
        status.pending_events = 7;
        status
    });
    assert_eq!(monitor.state(), ConnectionState::Failed);
    assert_eq!(*monitor.watch_state().borrow(), ConnectionState::Connecting);
    assert_eq!(monitor.status().pending_events, 7);
}

#[tokio::test]
async fn backend_and_session_mocks_stand_in_for_a_broker() {
    let sent = event("order.created");
    let id = sent.id();
    let mut session = MockSession::new();
    session
        .expect_send_encoded()
        .withf(move |e, body, wait| {
            e.id() == id && *body == e.encode() && *wait == ConfirmWait::Session
        })
        .times(1)
        .returning(|_, _, _| Ok(Box::pin(async { Ok(()) })));
    session
        .expect_closed()
        .times(1)
        .returning(|| BackendError::connection("broker gone"));
    session.expect_close().times(1).return_const(());

    let mut backend = MockBackend::new();
    let mut seq = Sequence::new();
    backend
        .expect_connect()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|| Err(BackendError::connection("refused")));
    let mut session = Some(session);
    backend
        .expect_connect()
        .times(1)
        .in_sequence(&mut seq)
        .returning(move || {
            let s: Arc<dyn Session> = Arc::new(session.take().expect("connected once"));
            Ok(s)
        });
    backend
        .expect_info()
        .return_const(BackendInfo::new("mock", "mock://"));

    assert_eq!(backend.info().name, "mock");
    let err = backend.connect().await.err().unwrap();
    assert_eq!(err.kind(), BackendErrorKind::Connection);
    let session = backend.connect().await.unwrap();
    session.send(&sent).await.unwrap().await.unwrap();
    assert_eq!(session.closed().await.kind(), BackendErrorKind::Connection);
    session.close().await;
}

#[test]
fn a_session_mock_can_report_blocking() {
    let mut session = MockSession::new();
    let (tx, rx) = watch::channel(false);
    session.expect_blocked().times(1).return_once(move || rx);
    let blocked = session.blocked();
    tx.send(true).unwrap();
    assert!(*blocked.borrow());
}

#[test]
fn an_unmet_expectation_fails_the_test() {
    let result = std::panic::catch_unwind(|| {
        let mut sink = MockEventSink::new();
        sink.expect_publish()
            .times(1)
            .returning(|_| Ok(PublishOutcome::Confirmed));
        drop(sink);
    });
    assert!(
        result.is_err(),
        "a mock dropped with an unmet expectation panics"
    );
}
