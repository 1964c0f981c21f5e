//! Turns lapin errors into classified, password-free [`BackendError`]s.

use std::io;
use std::time::Duration;

use flow_events_core::{BackendError, BackendErrorKind};
use lapin::ErrorKind;

/// Removes secrets (the URL with its password, the password itself) from
/// text that came from lapin or the broker.
pub(crate) use flow_events_core::backend_kit::Scrub;

/// The message size and the broker's limit from the text with which the
/// broker closes a channel that published a message over its
/// `max_message_size` (`PRECONDITION_FAILED - message size 2097268 is larger
/// than configured max size 1048576`; "max size" alone for the built-in limit).
pub(crate) fn message_size_refusal(text: &str) -> Option<(usize, usize)> {
    let rest = &text[text.find("message size ")? + "message size ".len()..];
    let (size, rest) = rest.split_once(" is larger than ")?;
    let max = rest
        .strip_prefix("configured ")
        .unwrap_or(rest)
        .strip_prefix("max size ")?;
    let digits = max.find(|c: char| !c.is_ascii_digit()).unwrap_or(max.len());
    Some((size.trim().parse().ok()?, max[..digits].parse().ok()?))
}

/// The routing key from the text with which the broker closes a channel
/// that published to a routing key its topic permissions refuse
/// (`ACCESS_REFUSED - write access to topic 'admin.x' in exchange
/// 'flow.events' in vhost '/' refused for user 'svc'`).
pub(crate) fn topic_refusal(text: &str) -> Option<&str> {
    let rest = &text[text.find("access to topic '")? + "access to topic '".len()..];
    // The key may hold a quote: the exchange's name follows the last
    // "' in exchange ".
    let end = rest.rfind("' in exchange ")?;
    Some(&rest[..end])
}

/// Why the broker closed a publishing channel, when the reason is one
/// publish's and a new channel on the same connection mends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ChannelRefusal {
    /// A topic permission refused this routing key (403 `ACCESS_REFUSED`).
    Topic(String),
    /// A message of this size over the broker's `max_message_size`, this
    /// limit (406 `PRECONDITION_FAILED`).
    Size(usize, usize),
    /// The exchange is gone (404 `NOT_FOUND`): a new channel declares it again.
    NoExchange,
}

/// [`ChannelRefusal`] of a lapin error, if it is one.
pub(crate) fn channel_refusal(err: &lapin::Error) -> Option<ChannelRefusal> {
    let ErrorKind::ProtocolError(amqp) = err.kind() else {
        return None;
    };
    let text = amqp.get_message().as_str();
    match amqp.get_id() {
        403 => topic_refusal(text).map(|key| ChannelRefusal::Topic(key.to_owned())),
        406 => message_size_refusal(text).map(|(size, max)| ChannelRefusal::Size(size, max)),
        404 if text.contains("no exchange") => Some(ChannelRefusal::NoExchange),
        _ => None,
    }
}

/// A timeout of the broker wait `what`.
pub(crate) fn timeout(what: &str, after: Duration) -> BackendError {
    BackendError::timeout(what, after)
}

/// Classifies `err`, which happened while doing `context` (lowercase, such as
/// "declaring exchange flow.events").
pub(crate) fn classify(err: &lapin::Error, context: &str, scrub: &Scrub) -> BackendError {
    let (kind, detail) = match err.kind() {
        ErrorKind::ProtocolError(amqp) => {
            let text = amqp.get_message().as_str();
            let (kind, hint) = match amqp.get_id() {
                // One routing key refused for this user: the event's own.
                403 if topic_refusal(text).is_some() => (
                    BackendErrorKind::EventRefused,
                    " (the user's topic permissions refuse this routing key)",
                ),
                403 => (
                    BackendErrorKind::Configuration,
                    " (check the user name, password and permissions)",
                ),
                530 => (
                    BackendErrorKind::Configuration,
                    " (check the virtual host in the URL and the user's access to it)",
                ),
                // One message too large for the broker: the channel is gone,
                // the connection and the configuration are fine.
                406 if message_size_refusal(text).is_some() => (
                    BackendErrorKind::Connection,
                    " (an event larger than the broker's max_message_size was published)",
                ),
                406 => (
                    BackendErrorKind::Configuration,
                    " (an exchange or queue exists with other settings: delete it or change the configuration)",
                ),
                404 | 402 | 540 => (BackendErrorKind::Configuration, ""),
                311 => (BackendErrorKind::EventRefused, ""),
                320 | 506 | 541 => (BackendErrorKind::Connection, ""),
                _ => (BackendErrorKind::Other, ""),
            };
            (kind, format!("{text}{hint}"))
        }
        ErrorKind::IOError(io_err) | ErrorKind::RuntimeShutdownError(io_err) => {
            let kind = match io_err.kind() {
                io::ErrorKind::TimedOut => BackendErrorKind::Timeout,
                // A TLS handshake that fails on the certificate, or a TLS URL
                // pointed at a plain port: not fixed by retrying.
                io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput => {
                    BackendErrorKind::Configuration
                }
                _ => BackendErrorKind::Connection,
            };
            (kind, io_err.to_string())
        }
        ErrorKind::InvalidConnectionState(state) => (
            BackendErrorKind::Connection,
            format!("the connection is {state:?}"),
        ),
        ErrorKind::InvalidChannelState(state, _) => (
            BackendErrorKind::Connection,
            format!("the channel is {state:?}"),
        ),
        ErrorKind::MissingHeartbeatError => (
            BackendErrorKind::Connection,
            "no heartbeat from the broker".to_owned(),
        ),
        ErrorKind::AuthProviderError(_)
        | ErrorKind::InvalidProtocolVersion(_)
        | ErrorKind::NoDefaultRuntime => (BackendErrorKind::Configuration, err.to_string()),
        _ => (BackendErrorKind::Other, err.to_string()),
    };
    let message = scrub.clean(&format!("{context}: {detail}"));
    let error = BackendError::new(kind, message);
    if scrub.is_clean(&err.to_string()) {
        error.with_source(err.clone())
    } else {
        error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_removes_url_and_password() {
        let s = Scrub::new(["amqp://u:hunter2@h/", "hunter2"]);
        assert_eq!(
            s.clean("bad url 'amqp://u:hunter2@h/' and hunter2"),
            "bad url '***' and ***"
        );
        assert!(!s.is_clean("x hunter2"));
        assert!(s.is_clean("nothing here"));
    }

    #[test]
    fn short_passwords_are_not_scrubbed_word_by_word() {
        let s = Scrub::new(["amqp://u:a@h/", "a"]);
        assert_eq!(s.clean("a connection"), "a connection");
    }

    #[test]
    fn message_size_refusals_are_recognised() {
        assert_eq!(
            message_size_refusal(
                "PRECONDITION_FAILED - message size 2097268 is larger than configured max size 1048576"
            ),
            Some((2_097_268, 1_048_576))
        );
        assert_eq!(
            message_size_refusal("message size 7 is larger than max size 5"),
            Some((7, 5))
        );
        assert_eq!(
            message_size_refusal("PRECONDITION_FAILED - inequivalent arg 'type'"),
            None
        );
        assert_eq!(
            message_size_refusal("message size x is larger than max size 5"),
            None
        );
    }

    #[test]
    fn topic_refusals_name_the_routing_key() {
        let text = "ACCESS_REFUSED - write access to topic 'admin.x' in exchange 'flow.events' \
                    in vhost '/' refused for user 'svc'";
        assert_eq!(topic_refusal(text), Some("admin.x"));
        assert_eq!(
            topic_refusal("access to topic 'it's' in exchange 'x' in vhost '/' refused"),
            Some("it's")
        );
        assert_eq!(
            topic_refusal("ACCESS_REFUSED - access to exchange 'flow.events' in vhost '/' refused"),
            None
        );
    }

    #[test]
    fn io_errors_are_connection_errors() {
        let err = lapin::Error::from(io::Error::from(io::ErrorKind::ConnectionRefused));
        let e = classify(&err, "connecting", &Scrub::default());
        assert_eq!(e.kind(), BackendErrorKind::Connection);
        assert!(e.message().starts_with("connecting: "));
    }
}
