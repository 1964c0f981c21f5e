//! With RabbitMQ at 127.0.0.1:5672 (needs RabbitMQ): recovery after the
//! broker comes back, and required mode.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::Value;
use tokio::net::TcpStream;

use crate::common::{Service, WAIT, broker_available, unique};

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties, ExchangeKind};

const RABBIT: &str = "127.0.0.1:5672";
const RABBIT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// Deletes the test's exchange when dropped, also on a panic.
struct DeleteExchange(String);

impl Drop for DeleteExchange {
    fn drop(&mut self) {
        let name = self.0.clone();
        // A runtime of its own on a thread of its own: this may run inside
        // the test's runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let Ok(Ok(conn)) = tokio::time::timeout(
                    WAIT,
                    Connection::connect(RABBIT_URL, ConnectionProperties::default()),
                )
                .await
                else {
                    return;
                };
                if let Ok(ch) = conn.create_channel().await {
                    let _ = ch
                        .exchange_delete(name.as_str().into(), ExchangeDeleteOptions::default())
                        .await;
                }
                let _ = conn.close(200, "cleanup".into()).await;
            });
        })
        .join();
    }
}

/// A TCP forwarder to RabbitMQ that refuses (accepts and closes) every
/// connection until opened.
struct Forwarder {
    port: u16,
    open: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Forwarder {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind forwarder");
        let port = listener.local_addr().expect("addr").port();
        let open = Arc::new(AtomicBool::new(false));
        let flag = open.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                if !flag.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                tokio::spawn(async move {
                    if let Ok(mut upstream) = TcpStream::connect(RABBIT).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                });
            }
        });
        Self { port, open, task }
    }

    fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_events_reach_rabbitmq_when_it_comes_back() {
    if !broker_available("buffered_events_reach_rabbitmq_when_it_comes_back") {
        return;
    }
    let exchange = unique("admin-recovery");
    let _cleanup = DeleteExchange(exchange.clone());

    // A consumer of our own, bound to the test's exchange before anything is published.
    let conn = Connection::connect(RABBIT_URL, ConnectionProperties::default())
        .await
        .expect("connect to RabbitMQ");
    let channel = conn.create_channel().await.expect("channel");
    channel
        .exchange_declare(
            exchange.as_str().into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("declare exchange");
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("declare queue");
    let queue = queue.name().clone();
    channel
        .queue_bind(
            queue.clone(),
            exchange.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind queue");
    let mut consumer = channel
        .basic_consume(
            queue,
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");

    // The service starts while the broker is unreachable through the forwarder.
    let forwarder = Forwarder::start().await;
    let url = format!("amqp://guest:guest@127.0.0.1:{}/%2f", forwarder.port);
    let service = Service::start(&[
        ("RABBITMQ_URL", &url),
        ("RABBITMQ_EXCHANGE", &exchange),
        ("RABBITMQ_RETRY_DELAY", "0.1"),
        ("RABBITMQ_MAX_RETRY_DELAY", "0.5"),
    ])
    .await;
    let mut ids = Vec::new();
    for n in 0..5 {
        let r = service
            .post_json(&format!(
                r#"{{"type": "order.created", "data": {{"n": {n}}}}}"#
            ))
            .await;
        assert_eq!(r.status, 202, "{}", r.body);
        assert_eq!(r.json()["outcome"], "buffered", "{}", r.body);
        ids.push(r.json()["id"].as_str().unwrap().to_owned());
    }
    let health = service.health().await;
    assert_eq!(health["dependencies"]["rabbitmq"]["connected"], false);
    assert_eq!(health["dependencies"]["rabbitmq"]["pending_events"], 5);

    // The broker comes back: the buffer drains.
    forwarder.open();
    let health = service
        .wait_health("connected with nothing pending", |h| {
            let r = &h["dependencies"]["rabbitmq"];
            r["connected"] == true && r["pending_events"] == 0
        })
        .await;
    assert_eq!(health["status"], "healthy", "{health}");
    assert_eq!(service.metric("flow_events_confirmed_total").await, 5.0);
    assert_eq!(service.metric("flow_events_connected").await, 1.0);

    // Every posted event reached the consumer, in order.
    let mut got = Vec::new();
    while got.len() < ids.len() {
        let delivery = tokio::time::timeout(WAIT, consumer.next())
            .await
            .unwrap_or_else(|_| panic!("only {got:?} of {ids:?} arrived"))
            .expect("consumer ended")
            .expect("delivery");
        let event: Value = serde_json::from_slice(&delivery.data).expect("JSON body");
        assert_eq!(event["type"], "order.created");
        got.push(event["id"].as_str().unwrap().to_owned());
        delivery.ack(BasicAckOptions::default()).await.expect("ack");
    }
    assert_eq!(got, ids);

    // Published while connected: confirmed at once.
    let r = service.post_json(r#"{"type": "order.shipped"}"#).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.json()["outcome"], "confirmed");
    service.wait_log("connected to RabbitMQ at").await;
    service.wait_log("drain finished").await;
    let _ = conn.close(200, "done".into()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_mode_with_rabbitmq_is_ready() {
    if !broker_available("required_mode_with_rabbitmq_is_ready") {
        return;
    }
    let exchange = unique("admin-required");
    let _cleanup = DeleteExchange(exchange.clone());
    let service = Service::start(&[
        ("RABBITMQ_URL", RABBIT_URL),
        ("RABBITMQ_EXCHANGE", &exchange),
        ("RABBITMQ_REQUIRED", "true"),
    ])
    .await;
    let ready = service.get("/health/ready").await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    let health = service.health().await;
    assert_eq!(health["status"], "healthy", "{health}");
    assert_eq!(health["dependencies"]["rabbitmq"]["connected"], true);
    let r = service.post_json(r#"{"type": "order.created"}"#).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.json()["outcome"], "confirmed");
}
