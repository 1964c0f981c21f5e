//! The messages: persistent, about 1 KiB of JSON each, the same for every client.

use flow_events_core::Event;
use lapin::BasicProperties;
use lapin::types::ShortString;

/// The event type, and so the routing key the queue is bound with.
pub(crate) const EVENT_TYPE: &str = "bench.event";

/// Size of every message body in bytes (the JSON of an event).
pub(crate) const BODY_BYTES: usize = 1024;

/// `delivery_mode` 2: persistent.
const PERSISTENT: u8 = 2;

/// Makes the events and raw messages of the runs.
#[derive(Debug, Clone)]
pub(crate) struct Payload {
    pad: String,
    body: Vec<u8>,
}

impl Payload {
    /// A payload whose events encode to `BODY_BYTES` bytes.
    pub(crate) fn new() -> Self {
        let empty = Self::make_event("");
        let fixed = empty.encoded_len();
        let pad = "x".repeat(BODY_BYTES.saturating_sub(fixed));
        let event = Self::make_event(&pad);
        let body = serde_json::to_vec(&event).unwrap_or_default();
        Self { pad, body }
    }

    fn make_event(pad: &str) -> Event {
        Event::try_new(EVENT_TYPE, serde_json::json!({ "pad": pad }))
            .unwrap_or_else(|e| panic!("the benchmark's event type is valid: {e}"))
    }

    /// A new event (fresh id and time).
    pub(crate) fn event(&self) -> Event {
        Self::make_event(&self.pad)
    }

    /// A body of `BODY_BYTES` bytes for the raw clients.
    pub(crate) fn body(&self) -> &[u8] {
        &self.body
    }

    /// The properties a raw lapin publish carries: those of the wire contract
    /// (a fresh message id, type, content type, persistent, timestamp, app id).
    pub(crate) fn raw_properties() -> BasicProperties {
        let now = chrono::Utc::now().timestamp();
        BasicProperties::default()
            .with_message_id(ShortString::from(uuid::Uuid::now_v7().to_string()))
            .with_type(ShortString::from(EVENT_TYPE))
            .with_content_type(ShortString::from("application/json"))
            .with_delivery_mode(PERSISTENT)
            .with_timestamp(u64::try_from(now).unwrap_or(0))
            .with_app_id(ShortString::from("flow-events-bench"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_and_bodies_are_one_kib() {
        let p = Payload::new();
        assert_eq!(p.body().len(), BODY_BYTES);
        let sizes: Vec<usize> = (0..50).map(|_| p.event().encoded_len()).collect();
        // The timestamp prints fewer digits when it ends in zeros.
        assert!(
            sizes
                .iter()
                .all(|n| (BODY_BYTES - 6..=BODY_BYTES).contains(n)),
            "{sizes:?}"
        );
    }
}
