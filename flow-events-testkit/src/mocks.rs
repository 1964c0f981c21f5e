//! mockall mocks of the core traits, for unit tests of code that uses them.
//!
//! Async methods are mocked through `async_trait`: an expectation returns the
//! method's output directly.
//!
//! ```
//! use flow_events_core::{Event, EventSink, PublishOutcome};
//! use flow_events_testkit::mocks::MockEventSink;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let mut sink = MockEventSink::new();
//! sink.expect_publish()
//!     .withf(|e| e.event_type().as_str() == "order.created")
//!     .times(1)
//!     .returning(|_| Ok(PublishOutcome::Buffered { pending: 1 }));
//!
//! let event = Event::try_new("order.created", serde_json::json!({})).unwrap();
//! assert_eq!(
//!     sink.publish(event).await.unwrap(),
//!     PublishOutcome::Buffered { pending: 1 }
//! );
//! # }
//! ```

// mockall generates undocumented items (expectation structs and methods).
#![allow(missing_docs, missing_debug_implementations, unreachable_pub)]

use std::sync::Arc;

use async_trait::async_trait;
use flow_events_core::{
    Backend, BackendError, BackendInfo, ConfirmWait, Confirmation, ConnectionMonitor,
    ConnectionState, ConnectionStatus, Decision, Delivery, DeliveryStream, Event, EventSink,
    EventSource, Handler, PublishError, PublishOutcome, Session, SubscribeError, Subscription,
    SubscriptionHandle,
};
use tokio::sync::watch;

mockall::mock! {
    /// A mock [`EventSink`].
    pub EventSink {}

    #[async_trait]
    impl EventSink for EventSink {
        async fn publish(&self, event: Event) -> Result<PublishOutcome, PublishError>;
        async fn publish_batch(&self, events: Vec<Event>) -> Vec<Result<PublishOutcome, PublishError>>;
    }
}

mockall::mock! {
    /// A mock [`EventSource`].
    pub EventSource {}

    #[async_trait]
    impl EventSource for EventSource {
        async fn subscribe(
            &self,
            subscription: Subscription,
            handler: Arc<dyn Handler>,
        ) -> Result<SubscriptionHandle, SubscribeError>;
    }
}

mockall::mock! {
    /// A mock [`ConnectionMonitor`].
    pub ConnectionMonitor {}

    impl ConnectionMonitor for ConnectionMonitor {
        fn state(&self) -> ConnectionState;
        fn watch_state(&self) -> watch::Receiver<ConnectionState>;
        fn status(&self) -> ConnectionStatus;
    }
}

mockall::mock! {
    /// A mock [`Backend`].
    pub Backend {}

    #[async_trait]
    impl Backend for Backend {
        async fn connect(&self) -> Result<Arc<dyn Session>, BackendError>;
        fn info(&self) -> BackendInfo;
    }
}

mockall::mock! {
    /// A mock [`Session`].
    pub Session {}

    #[async_trait]
    impl Session for Session {
        async fn send_encoded(
            &self,
            event: &Event,
            body: Vec<u8>,
            wait: ConfirmWait,
        ) -> Result<Confirmation, BackendError>;
        async fn subscribe(&self, subscription: &Subscription) -> Result<DeliveryStream, BackendError>;
        async fn closed(&self) -> BackendError;
        fn blocked(&self) -> watch::Receiver<bool>;
        async fn close(&self);
    }
}

mockall::mock! {
    /// A mock [`Handler`].
    pub Handler {}

    #[async_trait]
    impl Handler for Handler {
        async fn handle(&self, delivery: Delivery) -> Decision;
    }
}
