//! The address in the status and health is the connected session's (one node
//! of several, say), and the backend's while no session is up.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use flow_events_core::{
    Backend, BackendError, BackendInfo, ConfirmWait, Confirmation, ConnectionMonitor,
    ConnectionState, DeliveryStream, Event, Resilient, Session, Subscription,
};
use flow_events_memory::{MemoryBackend, MemoryBroker};
use flow_events_testkit::faulty::Faulty;

/// The addresses the backend reports when no session is up.
const ALL_NODES: &str = "mem://u:***@node-1,mem://u:***@node-2";

/// A memory backend whose sessions say which "node" they are on: the
/// first session node 1, the next node 2, and so on.
struct Nodes {
    inner: MemoryBackend,
    connects: AtomicUsize,
}

struct OnNode {
    inner: Arc<dyn Session>,
    url: String,
}

#[async_trait]
impl Backend for Nodes {
    async fn connect(&self) -> Result<Arc<dyn Session>, BackendError> {
        let inner = self.inner.connect().await?;
        let node = self.connects.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(Arc::new(OnNode {
            inner,
            url: format!("mem://u:***@node-{node}"),
        }))
    }

    fn info(&self) -> BackendInfo {
        BackendInfo::new("memory", ALL_NODES).with_dependency("nodes")
    }
}

#[async_trait]
impl Session for OnNode {
    async fn send_encoded(
        &self,
        event: &Event,
        body: Vec<u8>,
        wait: ConfirmWait,
    ) -> Result<Confirmation, BackendError> {
        self.inner.send_encoded(event, body, wait).await
    }
    async fn subscribe(&self, subscription: &Subscription) -> Result<DeliveryStream, BackendError> {
        self.inner.subscribe(subscription).await
    }
    async fn closed(&self) -> BackendError {
        self.inner.closed().await
    }
    fn url(&self) -> Option<String> {
        Some(self.url.clone())
    }
    async fn close(&self) {
        self.inner.close().await;
    }
}

async fn wait_state(events: &Resilient, wanted: impl Fn(ConnectionState) -> bool) {
    let mut rx = events.watch_state();
    tokio::time::timeout(Duration::from_secs(60), rx.wait_for(|s| wanted(*s)))
        .await
        .expect("state within the limit")
        .expect("watch open");
}

#[tokio::test(start_paused = true)]
async fn status_and_health_show_the_node_of_the_current_session() {
    let broker = MemoryBroker::new();
    let backend = Nodes {
        inner: broker.backend(),
        connects: AtomicUsize::new(0),
    };
    // Through the fault-injecting wrapper: it must pass the address on.
    let (faulty, faults) = Faulty::wrap(backend);
    let events = Resilient::builder(faulty).start().await.expect("start");
    wait_state(&events, |s| s == ConnectionState::Connected).await;
    assert_eq!(events.status().url, "mem://u:***@node-1");
    let health = serde_json::to_value(events.health("svc")).expect("health json");
    assert_eq!(
        health["dependencies"]["nodes"]["url"], "mem://u:***@node-1",
        "{health}"
    );

    // The session is lost: every address is shown until the next one is up.
    broker.take_down();
    faults.drop_connection();
    wait_state(&events, |s| s != ConnectionState::Connected).await;
    assert_eq!(events.status().url, ALL_NODES);

    broker.bring_up();
    wait_state(&events, |s| s == ConnectionState::Connected).await;
    assert_eq!(events.status().url, "mem://u:***@node-2");
    events.shutdown(Duration::from_secs(1)).await;
}
