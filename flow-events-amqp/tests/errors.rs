//! Each bad input surfaces as a typed error, without the password.

mod common;

use std::time::{Duration, Instant};

use common::{Cleanup, URL, fanout_exchange, unique};
use flow_events_amqp::{AmqpBackend, AmqpConfig, AmqpConfigBuilder};
use flow_events_core::{Backend, BackendError, BackendErrorKind, Config, redact_url};

fn backend(url: &str, exchange: &str, options: AmqpConfigBuilder) -> AmqpBackend {
    let options = options.with_url(url).with_exchange(exchange);
    AmqpBackend::new(&Config::default(), options.build().expect("AMQP config"))
}

async fn connect_err(backend: &AmqpBackend) -> BackendError {
    match backend.connect().await {
        Ok(session) => {
            session.close().await;
            panic!("connected to {}", backend.info().url)
        }
        Err(e) => e,
    }
}

fn assert_no_secret(err: &BackendError, secret: &str) {
    let text = format!("{err} {err:?}");
    assert!(!text.contains(secret), "{text}");
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        assert!(!s.to_string().contains(secret), "{s}");
        source = s.source();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_password_is_a_configuration_error() {
    require_broker!("wrong_password_is_a_configuration_error");
    let b = backend(
        "amqp://guest:Wr0ngPassw0rd@127.0.0.1:5672/%2f",
        &unique("x"),
        AmqpConfig::builder(),
    );
    let err = connect_err(&b).await;
    assert_eq!(err.kind(), BackendErrorKind::Configuration, "{err}");
    assert!(err.message().contains("ACCESS_REFUSED"), "{err}");
    assert!(
        err.message().contains("amqp://guest:***@127.0.0.1:5672"),
        "{err}"
    );
    assert_no_secret(&err, "Wr0ngPassw0rd");
    assert!(!format!("{b:?}").contains("Wr0ngPassw0rd"));
    assert_eq!(b.info().url, "amqp://guest:***@127.0.0.1:5672/%2f");
    assert_eq!(b.info().name, "amqp");
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_vhost_is_a_configuration_error_within_the_timeout() {
    require_broker!("unknown_vhost_is_a_configuration_error_within_the_timeout");
    let b = backend(
        "amqp://guest:guest@127.0.0.1:5672/no-such-vhost",
        &unique("x"),
        AmqpConfig::builder().with_connect_timeout(Duration::from_secs(3)),
    );
    let started = Instant::now();
    let err = connect_err(&b).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    // The broker refuses connection.open with NOT_ALLOWED; the connect timeout
    // bounds the wait should a broker never answer.
    assert_eq!(err.kind(), BackendErrorKind::Configuration, "{err}");
    assert!(err.message().contains("vhost"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn exchange_declared_as_fanout_is_a_configuration_error() {
    require_broker!("exchange_declared_as_fanout_is_a_configuration_error");
    let (exchange, _cleanup) = fanout_exchange().await;
    let b = backend(URL, &exchange, AmqpConfig::builder());
    let err = connect_err(&b).await;
    assert_eq!(err.kind(), BackendErrorKind::Configuration, "{err}");
    assert!(err.message().contains("PRECONDITION_FAILED"), "{err}");
    assert!(err.message().contains(&exchange), "{err}");
    assert!(!err.is_retryable());
}

#[tokio::test(flavor = "multi_thread")]
async fn unparsable_url_is_a_configuration_error() {
    // Needs no broker: nothing is reached.
    for url in [
        "amqp://guest:S3cretPw@127.0.0.1:notaport/%2f",
        "http://guest:S3cretPw@127.0.0.1:5672/",
        "amqp://guest:S3cretPw@127.0.0.1:5672/%2f?heartbeat=often",
    ] {
        let b = backend(url, "flow.events", AmqpConfig::builder());
        let err = connect_err(&b).await;
        assert_eq!(err.kind(), BackendErrorKind::Configuration, "{url}: {err}");
        assert!(err.message().contains("invalid broker URL"), "{err}");
        assert_no_secret(&err, "S3cretPw");
    }
    let no_url = AmqpBackend::new(&Config::default(), AmqpConfig::default());
    assert_eq!(
        connect_err(&no_url).await.kind(),
        BackendErrorKind::Configuration
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_connection_is_a_connection_error() {
    // Port 1 is closed on the test machine: the connect is refused at once.
    let b = backend(
        "amqp://guest:S3cretPw@127.0.0.1:1/%2f",
        "flow.events",
        AmqpConfig::builder(),
    );
    let err = connect_err(&b).await;
    assert_eq!(err.kind(), BackendErrorKind::Connection, "{err}");
    assert!(err.is_retryable());
    assert_no_secret(&err, "S3cretPw");
}

#[tokio::test(flavor = "multi_thread")]
async fn silent_server_is_a_timeout() {
    // A listener that never answers: the AMQP handshake never starts.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!(
        "amqp://guest:guest@{}/%2f",
        listener.local_addr().expect("addr")
    );
    let b = backend(
        &url,
        "flow.events",
        AmqpConfig::builder().with_connect_timeout(Duration::from_millis(500)),
    );
    let err = connect_err(&b).await;
    assert_eq!(err.kind(), BackendErrorKind::Timeout, "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn each_connect_starts_with_the_url_after_the_one_last_used() {
    require_broker!("each_connect_starts_with_the_url_after_the_one_last_used");
    let exchange = unique("urls");
    let mut cleanup = Cleanup::new(URL);
    cleanup.exchange(&exchange);
    // Two URLs of the same broker, told apart by their text (as a session's
    // `url` shows it): after a session on one, the next connect takes the
    // other, so that a node whose session was lost is tried last.
    let a = URL.to_owned();
    let b = format!("{URL}?heartbeat=9");
    let backend = backend(&format!("{a},{b}"), &exchange, AmqpConfig::builder());
    let mut used = Vec::new();
    for _ in 0..3 {
        let session = backend.connect().await.expect("connect");
        used.push(session.url().expect("a session names its URL"));
        session.close().await;
    }
    let (a, b) = (redact_url(&a), redact_url(&b));
    assert!(used[0] == a || used[0] == b, "{used:?}");
    assert_ne!(used[1], used[0], "{used:?}");
    assert_eq!(used[2], used[0], "{used:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_url_is_passed_over_and_both_dead_is_one_error() {
    require_broker!("a_dead_url_is_passed_over_and_both_dead_is_one_error");
    let exchange = unique("urls");
    let mut cleanup = Cleanup::new(URL);
    cleanup.exchange(&exchange);
    // Wherever a connect starts, the refused URL is passed over.
    let b = backend(
        &format!("amqp://guest:guest@127.0.0.1:1/%2f, {URL}"),
        &exchange,
        AmqpConfig::builder(),
    );
    for _ in 0..3 {
        let session = b.connect().await.expect("connect through the live URL");
        assert_eq!(session.url(), Some(redact_url(URL)));
        session.close().await;
    }

    // Both dead: the error says so, with the kind of the last failure.
    let b = backend(
        "amqp://guest:guest@127.0.0.1:1/%2f,amqp://guest:guest@127.0.0.1:2/%2f",
        &exchange,
        AmqpConfig::builder(),
    );
    let err = connect_err(&b).await;
    assert_eq!(err.kind(), BackendErrorKind::Connection);
    assert!(err.message().contains("none of the 2 broker URLs"), "{err}");
}
