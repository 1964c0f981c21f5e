//! The conformance suite against NATS JetStream, twice: through the
//! resilience decorator (as services use it), and straight on a session
//! (the backend alone, so a failure there points at the backend).
//!
//! Each case gets a stream and a subject prefix of its own; the streams
//! (and with them the consumers) are deleted afterwards, even when it fails.

mod common;

use async_trait::async_trait;
use common::Fixture;
use flow_events_core::Resilient;
use flow_events_testkit::conformance::Harness;
use flow_events_testkit::{SessionClient, wait};

/// The server's largest message less room for the envelope and headers.
const LARGE_PAYLOAD: usize = 1024 * 1024 - 16 * 1024;

/// One case's stream, backend and cleanup.
struct Nats {
    fx: Fixture,
}

impl Nats {
    /// `None` when there is no server (outside CI).
    fn new(case: &str) -> Option<Self> {
        if !common::NATS.available(case) {
            return None;
        }
        Some(Self {
            fx: Fixture::new(&format!("conf-{case}")),
        })
    }
}

/// Through `Resilient`.
struct ThroughResilient(Nats);

#[async_trait]
impl Harness for ThroughResilient {
    type Client = Resilient;

    async fn client(&self) -> Resilient {
        let builder =
            Resilient::builder(self.0.fx.backend.clone()).with_config(self.0.fx.config.clone());
        wait::start_connected(builder, self.timeout()).await
    }

    fn large_payload_bytes(&self) -> usize {
        LARGE_PAYLOAD
    }
}

/// Straight on a session.
struct OnSession(Nats);

#[async_trait]
impl Harness for OnSession {
    type Client = SessionClient;

    async fn client(&self) -> SessionClient {
        SessionClient::connect(&self.0.fx.backend)
            .await
            .expect("connected to the server")
    }

    fn large_payload_bytes(&self) -> usize {
        LARGE_PAYLOAD
    }
}

mod resilient {
    use super::*;
    flow_events_testkit::conformance_tests!(|case| Nats::new(case).map(ThroughResilient));
}

mod session {
    use super::*;
    flow_events_testkit::conformance_tests!(|case| Nats::new(case).map(OnSession));
}
