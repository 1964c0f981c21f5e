//! The conformance suite against the memory backend, twice: through the
//! resilience decorator (as services use it), and straight on a session (the
//! backend alone, so a failure there points at the backend).

use async_trait::async_trait;
use flow_events_core::{ConnectionMonitor, ConnectionState, Resilient};
use flow_events_memory::MemoryBroker;
use flow_events_testkit::SessionClient;
use flow_events_testkit::conformance::Harness;

/// `Resilient` over a memory broker of the case's own.
struct ThroughResilient {
    broker: MemoryBroker,
}

#[async_trait]
impl Harness for ThroughResilient {
    type Client = Resilient;

    async fn client(&self) -> Resilient {
        let client = Resilient::builder(self.broker.backend())
            .start()
            .await
            .expect("an optional start-up does not fail");
        let mut state = client.watch_state();
        tokio::time::timeout(
            self.timeout(),
            state.wait_for(|s| *s == ConnectionState::Connected),
        )
        .await
        .expect("connected in time")
        .expect("the supervisor runs");
        client
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
