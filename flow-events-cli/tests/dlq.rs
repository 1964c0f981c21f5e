//! `flow-events dlq` against the real broker, running the built binary: a
//! rejected event is listed, replayed by id (and handled again as attempt 1),
//! and a purge empties the queue; without `--yes` nothing is done unless the
//! answer is yes.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use flow_events_amqp::{AmqpBackend, AmqpConfig};
use flow_events_core::{
    Config, Decision, Delivery, Event, EventSink, EventSource, Resilient, handler_fn,
};
use flow_events_testkit::amqp::Cleanup;
use flow_events_testkit::server::reachable;
use flow_events_testkit::steps::subscription;
use flow_events_testkit::wait::start_connected;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use tokio::sync::mpsc;

const BROKER: &str = "127.0.0.1:5672";
const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const WAIT: Duration = Duration::from_secs(15);

/// Runs `flow-events dlq <args>` against the test broker, with `input` on stdin.
fn dlq(args: &[&str], input: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_flow-events"))
        .arg("dlq")
        .args(args)
        .env("RABBITMQ_URL", URL)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    println!(
        "$ flow-events dlq {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// Messages in `queue`, read back from the broker.
async fn depth(queue: &str) -> u32 {
    let conn = Connection::connect(URL, ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let q = ch
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await
        .unwrap();
    let _ = conn.close(200, "done".into()).await;
    q.message_count()
}

async fn until_depth(queue: &str, n: u32) {
    let started = std::time::Instant::now();
    while depth(queue).await != n {
        assert!(started.elapsed() < WAIT, "{queue} never held {n} messages");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_replay_and_purge_dead_letters() {
    if !reachable("RabbitMQ", BROKER, "list_replay_and_purge_dead_letters") {
        return;
    }
    let suffix = uuid::Uuid::now_v7().simple().to_string();
    let exchange = format!("test.cli.{suffix}");
    let name = format!("test.cli-dlq.{suffix}");
    let dead = format!("{name}.dead");
    let mut cleanup = Cleanup::new(URL);
    cleanup
        .queue(&name)
        .queue(&dead)
        .exchange(&exchange)
        .exchange(&format!("{exchange}.dlx"));

    let amqp = AmqpConfig::builder()
        .with_url(URL)
        .with_exchange(&exchange)
        .build()
        .unwrap();
    let backend = AmqpBackend::new(&Config::default(), amqp);
    let client = start_connected(Resilient::builder(backend), WAIT).await;
    // Rejects every event until the test says it is fixed.
    let fixed = Arc::new(AtomicBool::new(false));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let is_fixed = fixed.clone();
    let handler = handler_fn(move |d: Delivery| {
        let (tx, is_fixed) = (tx.clone(), is_fixed.clone());
        async move {
            let _ = tx.send(d);
            if is_fixed.load(Ordering::SeqCst) {
                Decision::Ack
            } else {
                Decision::reject("customer 42 does not exist")
            }
        }
    });
    let handle = client
        .subscribe(subscription(&name, "order.*"), handler)
        .await
        .unwrap();

    let event = Event::try_new("order.created", serde_json::json!({"customer": 42})).unwrap();
    let id = event.id().to_string();
    client.publish(event).await.unwrap();
    let first = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.attempt(), 1);
    until_depth(&dead, 1).await;

    // Listed, as a table and as JSON, and left in the queue.
    let table = dlq(&["list", &name], "");
    assert!(table.status.success());
    let lines: Vec<String> = stdout(&table).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 2, "a header and one dead letter");
    assert!(lines[0].starts_with("ID\tTYPE"));
    assert!(lines[1].starts_with(&format!("{id}\torder.created\torder.created\t1\t")));
    assert!(lines[1].ends_with("customer 42 does not exist"));
    let json = dlq(&["list", &name, "--json"], "");
    let row: serde_json::Value = serde_json::from_str(stdout(&json).trim()).unwrap();
    assert_eq!(row["id"], id.as_str());
    assert_eq!(row["error"], "customer 42 does not exist");
    assert_eq!(row["attempts"], "1");
    assert_eq!(row["subscription"], name.as_str());
    assert!(row["first_failed_at"].is_string() && row["failed_at"].is_string());
    assert_eq!(depth(&dead).await, 1, "listing leaves the dead letter");

    // Without --yes, anything but yes replays nothing.
    let refused = dlq(&["replay", &name, "--id", &id], "n\n");
    assert!(!refused.status.success());
    assert_eq!(depth(&dead).await, 1);
    let unknown = dlq(&["replay", &name, "--id", "nope", "--yes"], "");
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no dead letter with id nope"));

    // Replayed: handled again as attempt 1, and gone from the dead letters.
    fixed.store(true, Ordering::SeqCst);
    let replayed = dlq(&["replay", &name, "--id", &id], "y\n");
    assert!(replayed.status.success());
    assert_eq!(stdout(&replayed), format!("replayed {id}\n"));
    let again = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.event().id().to_string(), id);
    assert_eq!(again.attempt(), 1, "the attempt count is reset");
    assert_eq!(again.event().event_type().as_str(), "order.created");
    until_depth(&dead, 0).await;

    // Two more dead letters, purged with --yes.
    fixed.store(false, Ordering::SeqCst);
    for n in 0..2 {
        let e = Event::try_new("order.created", serde_json::json!({ "n": n })).unwrap();
        client.publish(e).await.unwrap();
    }
    until_depth(&dead, 2).await;
    let kept = dlq(&["purge", &name, "--all"], "\n");
    assert!(!kept.status.success());
    assert_eq!(depth(&dead).await, 2, "no confirmation, no purge");
    let purged = dlq(&["purge", &name, "--all", "--yes"], "");
    assert!(purged.status.success());
    assert_eq!(stdout(&purged), "purged 2\n");
    assert_eq!(depth(&dead).await, 0);

    handle.close().await;
    client.shutdown(WAIT).await;
}
