//! What a dead-lettered copy of an event says about why it is there: the
//! `x-flow-*` headers every backend with dead letters puts on it.

use chrono::{DateTime, SecondsFormat, Utc};

use crate::retry::truncate_reason;

/// Why the event was dead-lettered (the handler's reject reason, "still
/// failing after N attempts", a panic, or why the message is not an event),
/// at most [`MAX_REASON_BYTES`](crate::MAX_REASON_BYTES).
pub const ERROR_HEADER: &str = "x-flow-error";
/// The attempts the event had, as a decimal number.
pub const ATTEMPTS_HEADER: &str = "x-flow-attempts";
/// The routing key the event was first published with (its type): a replay
/// publishes it there again.
pub const ROUTING_KEY_HEADER: &str = "x-flow-routing-key";
/// The subscription that gave up on it.
pub const SUBSCRIPTION_HEADER: &str = "x-flow-subscription";
/// When its first attempt failed (RFC 3339, UTC).
pub const FIRST_FAILED_AT_HEADER: &str = "x-flow-first-failed-at";
/// When it was dead-lettered (RFC 3339, UTC).
pub const FAILED_AT_HEADER: &str = "x-flow-failed-at";

/// Every header a dead letter carries, in the order [`DeadLetter::headers`]
/// gives them.
pub const DEAD_LETTER_HEADERS: [&str; 6] = [
    ERROR_HEADER,
    ATTEMPTS_HEADER,
    ROUTING_KEY_HEADER,
    SUBSCRIPTION_HEADER,
    FIRST_FAILED_AT_HEADER,
    FAILED_AT_HEADER,
];

/// The account of one dead letter, turned into its headers.
///
/// ```
/// use flow_events_core::DeadLetter;
/// let now = chrono::Utc::now();
/// let headers = DeadLetter::new("no such customer", 3, "order.created", "billing")
///     .with_first_failed_at(now)
///     .headers();
/// assert_eq!(headers[0], ("x-flow-error", "no such customer".to_owned()));
/// assert_eq!(headers[1], ("x-flow-attempts", "3".to_owned()));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    reason: String,
    attempts: u32,
    routing_key: String,
    subscription: String,
    first_failed_at: Option<DateTime<Utc>>,
    failed_at: DateTime<Utc>,
}

impl DeadLetter {
    /// A dead letter failed now, for `reason` (cut to 1 KiB), after
    /// `attempts`, first published with `routing_key`, given up by
    /// `subscription`.
    pub fn new(
        reason: impl Into<String>,
        attempts: u32,
        routing_key: impl Into<String>,
        subscription: impl Into<String>,
    ) -> Self {
        Self {
            reason: truncate_reason(reason.into()),
            attempts,
            routing_key: routing_key.into(),
            subscription: subscription.into(),
            first_failed_at: None,
            failed_at: Utc::now(),
        }
    }

    /// When its first attempt failed. Default: when it was dead-lettered.
    pub fn with_first_failed_at(mut self, at: DateTime<Utc>) -> Self {
        self.first_failed_at = Some(at);
        self
    }

    /// The headers, in the order of [`DEAD_LETTER_HEADERS`].
    pub fn headers(&self) -> [(&'static str, String); 6] {
        let first = self.first_failed_at.unwrap_or(self.failed_at);
        [
            (ERROR_HEADER, self.reason.clone()),
            (ATTEMPTS_HEADER, self.attempts.to_string()),
            (ROUTING_KEY_HEADER, self.routing_key.clone()),
            (SUBSCRIPTION_HEADER, self.subscription.clone()),
            (FIRST_FAILED_AT_HEADER, timestamp(first)),
            (FAILED_AT_HEADER, timestamp(self.failed_at)),
        ]
    }
}

/// A time as the dead-letter headers write it: RFC 3339, UTC, milliseconds.
pub fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A time read back from a dead-letter header.
pub fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_name_every_field_and_times_round_trip() {
        let dl = DeadLetter::new("x".repeat(5000), 4, "a.b", "sub");
        let headers = dl.headers();
        let names: Vec<&str> = headers.iter().map(|(k, _)| *k).collect();
        assert_eq!(names, DEAD_LETTER_HEADERS);
        assert_eq!(headers[0].1.len(), crate::MAX_REASON_BYTES);
        assert_eq!(headers[4].1, headers[5].1, "first failure defaults to now");
        let back = parse_timestamp(&headers[5].1).expect("a time");
        assert_eq!(timestamp(back), headers[5].1);
    }
}
