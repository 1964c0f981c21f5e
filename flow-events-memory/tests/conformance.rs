//! The conformance suite against the memory backend, twice: through the
//! resilience decorator (as services use it), and straight on a session (the
//! backend alone, so a failure there points at the backend).

use async_trait::async_trait;
use flow_events_core::{Event, Resilient};
use flow_events_memory::MemoryBroker;
use flow_events_testkit::conformance::Harness;
use flow_events_testkit::{SessionClient, wait};

/// `Resilient` over a memory broker of the case's own.
struct ThroughResilient {
    broker: MemoryBroker,
}

#[async_trait]
impl Harness for ThroughResilient {
    type Client = Resilient;

    async fn client(&self) -> Resilient {
        let builder = Resilient::builder(self.broker.backend());
        wait::start_connected(builder, self.timeout()).await
    }

    async fn dead_letters(&self, subscription: &str) -> Option<Vec<Event>> {
        Some(self.broker.dead_letters(subscription))
    }
}

/// A plain session on a memory broker of the case's own.
struct OnSession {
    broker: MemoryBroker,
}

#[async_trait]
impl Harness for OnSession {
    type Client = SessionClient;

    async fn client(&self) -> SessionClient {
        SessionClient::connect(&self.broker.backend())
            .await
            .expect("the memory broker is up")
    }

    async fn dead_letters(&self, subscription: &str) -> Option<Vec<Event>> {
        Some(self.broker.dead_letters(subscription))
    }
}

mod resilient {
    use super::*;

    flow_events_testkit::conformance_tests!(ThroughResilient {
        broker: MemoryBroker::new()
    });
}

mod session {
    use super::*;

    flow_events_testkit::conformance_tests!(OnSession {
        broker: MemoryBroker::new()
    });
}
