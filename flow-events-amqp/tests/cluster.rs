//! Failover on a real three-node RabbitMQ cluster (`scripts/rabbitmq-cluster.sh`,
//! AMQP at 127.0.0.1:5681-5683): a node killed with SIGKILL under load, the
//! consumer's node killed, a killed node started again.
//!
//! The tests kill nodes of a cluster every checkout on this machine shares,
//! so they take a lock file and run one at a time; each starts again, when
//! it ends (also when it fails), every node it killed. Without the cluster
//! they are skipped, unless `CI=true`, where they fail. Run with
//! `--nocapture` to see the figures.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::CleanupSubscription;
use common::cluster::{self, Cluster, node_of};
use common::traffic::{LONG, connected, consumer, start};
use common::{Cleanup, WAIT, unique, until, until_state};
use flow_events_amqp::{AmqpBackend, AmqpConfig};
use flow_events_core::{
    Config, ConnectionMonitor, EventSink, PublishOutcome, QueueKind, Resilient,
};
use flow_events_testkit::received::{Received, numbered};

/// Publishing tasks, each publishing one event per `PACE`: about 1 600
/// events a second.
const TASKS: u64 = 32;
const PACE: Duration = Duration::from_millis(20);

/// A test's exchange and queue on the cluster, deleted at the end.
struct Names {
    exchange: String,
    queue: String,
    _cleanup: Cleanup,
}

impl Names {
    fn new(test: &str) -> Self {
        let exchange = unique(test);
        let queue = unique(&format!("{test}.q"));
        let mut cleanup = Cleanup::on(&cluster::URLS);
        cleanup
            .exchange(&exchange)
            .exchange(&format!("{exchange}.dlx"))
            .subscription(&queue);
        Self {
            exchange,
            queue,
            _cleanup: cleanup,
        }
    }

    /// The default settings, but for a buffer large enough that no event of
    /// a test is dropped.
    fn config(&self) -> Config {
        Config::builder()
            .with_max_pending_events(50_000)
            .build()
            .expect("config")
    }

    /// The default AMQP settings on `urls` and the test's exchange, with
    /// quorum queues for subscriptions.
    fn quorum(&self, urls: &str, app: &str) -> AmqpConfig {
        AmqpConfig::builder()
            .with_url(urls)
            .with_exchange(&self.exchange)
            .with_app_id(format!("flow-events-test-{app}"))
            .with_queue_kind(QueueKind::Quorum)
            .build()
            .expect("AMQP config")
    }
}

/// `Resilient` on `urls`, connected; and the node it is connected to.
async fn connect(names: &Names, urls: &str, app: &str) -> (Resilient, usize) {
    let config = names.config();
    let events = start(AmqpBackend::new(&config, names.quorum(urls, app)), &config).await;
    until_state("connected", &events, WAIT, connected).await;
    let node = node_on(&events);
    (events, node)
}

/// The node `events` is connected to, from its status.
fn node_on(events: &Resilient) -> usize {
    let shown = events.status().url;
    node_of(&shown).unwrap_or_else(|| panic!("status shows {shown:?}, not one node"))
}

/// A consumer of the test's quorum queue on `urls`, subscribed; and its node.
async fn consume(
    names: &Names,
    urls: &str,
    received: &Received,
) -> (Resilient, flow_events_core::SubscriptionHandle, usize) {
    let config = names.config();
    let backend = AmqpBackend::new(&config, names.quorum(urls, "cluster-consumer"));
    let (events, handle) = consumer(backend, &config, &names.queue, received).await;
    let node = node_on(&events);
    (events, handle, node)
}

/// What the publishing tasks were answered.
#[derive(Debug, Default)]
struct Answers {
    /// `seq` of the events answered `Confirmed` or `Buffered`: those must arrive.
    promised: Vec<u64>,
    confirmed: u64,
    buffered: u64,
    /// Any other answer, with its `seq`.
    other: Vec<(u64, String)>,
    /// When each `Confirmed` answer came.
    confirmed_at: Vec<Instant>,
}

impl std::fmt::Display for Answers {
    /// How the publishes were answered, with the first five other answers.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} confirmed, {} buffered, {} other answers {:?}",
            self.confirmed,
            self.buffered,
            self.other.len(),
            &self.other[..self.other.len().min(5)]
        )
    }
}

/// Publishes events `0..n` from `TASKS` tasks, one event per `PACE` each;
/// `answered` counts the answers as they come.
async fn publish_paced(publisher: Resilient, n: u64, answered: Arc<AtomicU64>) -> Answers {
    let mut set = tokio::task::JoinSet::new();
    for first in 0..TASKS {
        let publisher = publisher.clone();
        let answered = answered.clone();
        set.spawn(async move {
            let mut mine = Answers::default();
            let mut tick = tokio::time::interval(PACE);
            for seq in (first..n).step_by(usize::try_from(TASKS).expect("tasks")) {
                tick.tick().await;
                match publisher.publish(numbered(seq)).await {
                    Ok(PublishOutcome::Confirmed) => {
                        mine.confirmed += 1;
                        mine.confirmed_at.push(Instant::now());
                        mine.promised.push(seq);
                    }
                    Ok(PublishOutcome::Buffered { .. }) => {
                        mine.buffered += 1;
                        mine.promised.push(seq);
                    }
                    other => mine.other.push((seq, format!("{other:?}"))),
                }
                answered.fetch_add(1, Ordering::Relaxed);
            }
            mine
        });
    }
    let mut all = Answers::default();
    while let Some(done) = set.join_next().await {
        let mine = done.expect("publishing task");
        all.promised.extend(mine.promised);
        all.confirmed += mine.confirmed;
        all.buffered += mine.buffered;
        all.other.extend(mine.other);
        all.confirmed_at.extend(mine.confirmed_at);
    }
    all
}

/// Waits until every promised event has arrived; panics naming the missing ones.
async fn all_promised_arrive(received: &Received, answers: &Answers) -> Duration {
    let started = Instant::now();
    let promised: HashSet<u64> = answers.promised.iter().copied().collect();
    let missing = || {
        let got: HashSet<u64> = received.first_order().into_iter().collect();
        let mut missing: Vec<u64> = promised.difference(&got).copied().collect();
        missing.sort_unstable();
        missing
    };
    while !missing().is_empty() {
        if started.elapsed() > LONG {
            let missing = missing();
            panic!(
                "{} of {} confirmed or buffered events never arrived within {LONG:?}; the first: {:?}",
                missing.len(),
                promised.len(),
                &missing[..missing.len().min(20)]
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

/// Publishes the events `seqs`, each confirmed, and waits until `received`
/// has every event up to the last of them.
async fn publish_confirmed_and_received(
    publisher: &Resilient,
    seqs: std::ops::Range<u64>,
    received: &Received,
) {
    let all = usize::try_from(seqs.end).expect("n");
    for seq in seqs {
        let outcome = publisher.publish(numbered(seq)).await.expect("publish");
        assert_eq!(outcome, PublishOutcome::Confirmed, "event {seq}");
    }
    received.wait_distinct(all, WAIT).await;
}

/// Waits until `events` is connected to a node other than `dead`; returns
/// that node.
async fn moved_off(what: &str, events: &Resilient, dead: usize) -> usize {
    until(what, LONG, || {
        events.state() == flow_events_core::ConnectionState::Connected
            && node_of(&events.status().url).is_some_and(|n| n != dead)
    })
    .await;
    node_on(events)
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_publishers_node_loses_no_confirmed_or_buffered_event() {
    const TEST: &str = "killing_the_publishers_node_loses_no_confirmed_or_buffered_event";
    const N: u64 = 10_000;
    const KILL_AFTER: u64 = 3_000;
    let Some(mut cluster) = Cluster::take(TEST) else {
        return;
    };
    let names = Names::new("cluster.publisher-killed");

    // The publisher starts at a random node; the consumer is on the others.
    let (publisher, doomed) = connect(&names, &cluster::all_urls(), "cluster-publisher").await;
    let received = Received::new();
    let (consumer, _subscription, consumer_node) =
        consume(&names, &cluster::urls_except(doomed), &received).await;
    assert_ne!(consumer_node, doomed);
    println!("publisher on node {doomed}, consumer on node {consumer_node} (quorum queue)");

    let answered = Arc::new(AtomicU64::new(0));
    let publishing = tokio::spawn(publish_paced(publisher.clone(), N, answered.clone()));
    until("publishes answered before the kill", LONG, || {
        answered.load(Ordering::Relaxed) >= KILL_AFTER
    })
    .await;

    let killed_at = Instant::now();
    let script_took = cluster.kill(doomed).await;
    let killed = Instant::now();
    let new_node = moved_off("publisher on another node", &publisher, doomed).await;
    let reconnected = killed_at.elapsed();

    let answers = publishing.await.expect("publishing");
    let first_confirm = answers
        .confirmed_at
        .iter()
        .filter(|&&t| t > killed)
        .min()
        .map(|t| t.duration_since(killed_at));
    let drained = all_promised_arrive(&received, &answers).await;

    println!("{N} publishes: {answers}");
    println!(
        "node {doomed} killed after {KILL_AFTER} answers (kill-node took {script_took:?}); \
         publisher connected to node {new_node} {reconnected:?} after the kill; \
         first publish confirmed through it {first_confirm:?} after the kill"
    );
    println!(
        "all {} promised events delivered to the consumer on node {consumer_node} \
         ({drained:?} after the last publish); {} duplicates; {} reconnects",
        answers.promised.len(),
        received.duplicates(),
        publisher.status().reconnects
    );
    assert!(answers.other.is_empty(), "every publish is accepted");
    assert_eq!(
        node_on(&consumer),
        consumer_node,
        "the consumer's node survived: it stays"
    );
    publisher.shutdown(WAIT).await;
    consumer.shutdown(WAIT).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_consumers_node_moves_it_and_misses_nothing() {
    const TEST: &str = "killing_the_consumers_node_moves_it_and_misses_nothing";
    const N: u64 = 5_000;
    const KILL_AFTER: usize = 1_500;
    let Some(mut cluster) = Cluster::take(TEST) else {
        return;
    };
    let names = Names::new("cluster.consumer-killed");

    // The consumer starts at a random node, and declares the quorum queue
    // there (its first leader); the publisher is on the other nodes.
    let received = Received::new();
    let (consumer, _subscription, doomed) = consume(&names, &cluster::all_urls(), &received).await;
    let (publisher, publisher_node) =
        connect(&names, &cluster::urls_except(doomed), "cluster-publisher").await;
    assert_ne!(publisher_node, doomed);
    println!(
        "consumer on node {doomed} (quorum queue declared there), publisher on node {publisher_node}"
    );

    let answered = Arc::new(AtomicU64::new(0));
    let publishing = tokio::spawn(publish_paced(publisher.clone(), N, answered));
    until("events consumed before the kill", LONG, || {
        received.distinct() >= KILL_AFTER
    })
    .await;

    let killed_at = Instant::now();
    cluster.kill(doomed).await;
    let new_node = moved_off("consumer on another node", &consumer, doomed).await;
    let reconnected = killed_at.elapsed();
    let deliveries = received.deliveries();
    until("a delivery on the new node", LONG, || {
        received.deliveries() > deliveries
    })
    .await;
    let resumed = killed_at.elapsed();

    let answers = publishing.await.expect("publishing");
    all_promised_arrive(&received, &answers).await;
    println!("{N} publishes: {answers}");
    println!(
        "node {doomed} killed after {KILL_AFTER} events consumed; consumer connected to node \
         {new_node} {reconnected:?} after the kill, first delivery there {resumed:?} after it; \
         all {} promised events delivered, {} duplicates",
        answers.promised.len(),
        received.duplicates()
    );
    assert_eq!(
        node_on(&publisher),
        publisher_node,
        "the publisher's node survived"
    );
    publisher.shutdown(WAIT).await;
    consumer.shutdown(WAIT).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_node_started_again_rejoins_the_cluster() {
    const TEST: &str = "a_killed_node_started_again_rejoins_the_cluster";
    const N: u64 = 100;
    let Some(mut cluster) = Cluster::take(TEST) else {
        return;
    };
    let names = Names::new("cluster.rejoin");
    let doomed = 3;
    cluster.kill(doomed).await;
    let status = cluster.whole().await;
    assert!(
        status.is_err(),
        "with node {doomed} down the cluster is not whole: {status:?}"
    );

    // While node 3 is away: a quorum queue declared on node 1, fed through node 2.
    let received = Received::new();
    let (first_consumer, first_subscription, _) = consume(&names, cluster::url(1), &received).await;
    let (publisher, _) = connect(&names, cluster::url(2), "cluster-publisher").await;
    publish_confirmed_and_received(&publisher, 0..N, &received).await;
    publisher.shutdown(WAIT).await;
    first_subscription.close().await;
    first_consumer.shutdown(WAIT).await;

    let started = Instant::now();
    cluster.start_node(doomed).await;
    let took = started.elapsed();
    let status = cluster
        .whole()
        .await
        .unwrap_or_else(|e| panic!("not whole again: {e}"));
    println!("node {doomed} back in {took:?}:\n{status}");

    // Node 3 knows the queue declared while it was away, and serves it.
    let (consumer, _subscription, on) = consume(&names, cluster::url(doomed), &received).await;
    assert_eq!(on, doomed);
    let (publisher, on) = connect(&names, cluster::url(doomed), "cluster-publisher").await;
    assert_eq!(on, doomed);
    publish_confirmed_and_received(&publisher, N..2 * N, &received).await;
    publisher.shutdown(WAIT).await;
    consumer.shutdown(WAIT).await;
}
