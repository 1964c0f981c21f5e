//! The conformance suite against NATS JetStream, twice: through the
//! resilience decorator (as services use it), and straight on a session
//! (the backend alone, so a failure there points at the backend).
//!
//! Each case gets a stream and a subject prefix of its own; the streams
//! (and with them the consumers) are deleted afterwards, even when it fails.

mod common;

use std::time::Duration;

use async_trait::async_trait;
use common::Fixture;
use flow_events_core::{ConnectionMonitor, ConnectionState, Resilient};
use flow_events_testkit::SessionClient;
use flow_events_testkit::conformance::Harness;

/// The server's largest message less room for the envelope and headers.
const LARGE_PAYLOAD: usize = 1024 * 1024 - 16 * 1024;

/// One case's stream, backend and cleanup.
struct Nats {
    fx: Fixture,
}

impl Nats {
    /// `None` when there is no server (outside CI).
    fn new(case: &str) -> Option<Self> {
        if !common::server_available(case) {
            return None;
        }
        Some(Self {
            fx: Fixture::new(&format!("conf-{case}")),
        })
    }
}

/// Through `Resilient`.
struct ThroughResilient(Option<Nats>);

#[async_trait]
impl Harness for ThroughResilient {
    type Client = Resilient;

    async fn client(&self) -> Resilient {
        let nats = self.0.as_ref().expect("server");
        let client = Resilient::builder(nats.fx.backend.clone())
            .with_config(nats.fx.config.clone())
            .start()
            .await
            .expect("an optional start-up does not fail");
        let mut state = client.watch_state();
        tokio::time::timeout(
            self.timeout(),
            state.wait_for(|s| *s == ConnectionState::Connected),
        )
        .await
        .unwrap_or_else(|_| panic!("connected in time: {:?}", client.status().last_error))
        .expect("the supervisor runs");
        client
    }

    fn large_payload_bytes(&self) -> usize {
        LARGE_PAYLOAD
    }

    fn timeout(&self) -> Duration {
        Duration::from_secs(30)
    }
}

/// Straight on a session.
struct OnSession(Option<Nats>);

#[async_trait]
impl Harness for OnSession {
    type Client = SessionClient;

    async fn client(&self) -> SessionClient {
        let nats = self.0.as_ref().expect("server");
        SessionClient::connect(&nats.fx.backend)
            .await
            .expect("connected to the server")
    }

    fn large_payload_bytes(&self) -> usize {
        LARGE_PAYLOAD
    }
}

/// Runs a case unless the server is missing (outside CI).
macro_rules! nats_conformance {
    ($harness:ident; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(nats) = Nats::new(stringify!($case)) else { return };
                let harness = $harness(Some(nats));
                flow_events_testkit::conformance::$case(&harness).await;
            }
        )+
    };
}

macro_rules! all_cases {
    ($harness:ident) => {
        nats_conformance!($harness;
            publish_then_receive,
            in_order_delivery,
            topic_patterns,
            fan_out,
            competing_consumers,
            retry_redelivers,
            reject_does_not_redeliver,
            concurrent_publishers,
            large_payload,
            unicode_payload,
            closed_subscription_stops_receiving,
            subscription_keeps_events_while_closed,
            publish_without_subscribers,
        );
    };
}

mod resilient {
    use super::*;
    all_cases!(ThroughResilient);
}

mod session {
    use super::*;
    all_cases!(OnSession);
}
