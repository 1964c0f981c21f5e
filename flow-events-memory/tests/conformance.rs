//! The conformance suite against the memory backend, straight on a session:
//! the backend alone, without the resilience decorator.

use async_trait::async_trait;
use flow_events_memory::MemoryBroker;
use flow_events_testkit::SessionClient;
use flow_events_testkit::conformance::Harness;

/// Every case gets a broker of its own.
struct Direct {
    broker: MemoryBroker,
}

#[async_trait]
impl Harness for Direct {
    type Client = SessionClient;

    async fn client(&self) -> SessionClient {
        SessionClient::connect(&self.broker.backend())
            .await
            .expect("the memory broker is up")
    }
}

flow_events_testkit::conformance_tests!(Direct {
    broker: MemoryBroker::new()
});
