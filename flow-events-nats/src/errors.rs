//! Classifying async-nats errors into `BackendErrorKind`s, without secrets.

use std::error::Error as StdError;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::context::{
    CreateStreamErrorKind, GetStreamErrorKind, PublishErrorKind as JsPublishErrorKind,
};
use async_nats::jetstream::stream::ConsumerErrorKind;
use async_nats::{ConnectErrorKind, jetstream::ErrorCode};
use flow_events_core::{BackendError, BackendErrorKind};

use crate::redact::Scrub;

/// JetStream's code for a message larger than the stream's or account's limit.
const MESSAGE_TOO_LARGE: ErrorCode = ErrorCode(10054);
/// The stream refuses new messages (its limits are reached with `discard new`).
const STREAM_FULL: ErrorCode = ErrorCode(10077);
/// Storage resources exhausted.
const INSUFFICIENT_RESOURCES: ErrorCode = ErrorCode(10023);

/// An error of kind `kind` about `context`, its detail scrubbed.
fn error(kind: BackendErrorKind, context: &str, detail: &str, scrub: &Scrub) -> BackendError {
    BackendError::new(kind, scrub.clean(&format!("{context}: {detail}")))
}

/// The kind of a JetStream API error: a clash of settings, missing JetStream
/// or refused permissions are configuration errors; the rest is transient.
pub(crate) fn api_kind(e: &jetstream::Error) -> BackendErrorKind {
    match e.error_code() {
        ErrorCode::STREAM_NAME_EXIST
        | ErrorCode::STREAM_SUBJECT_OVERLAP
        | ErrorCode::JETSTREAM_NOT_ENABLED
        | ErrorCode::JETSTREAM_NOT_ENABLED_FOR_ACCOUNT => BackendErrorKind::Configuration,
        MESSAGE_TOO_LARGE => BackendErrorKind::EventRefused,
        STREAM_FULL | INSUFFICIENT_RESOURCES => BackendErrorKind::Nacked,
        _ if e.code() == 403 => BackendErrorKind::Configuration,
        _ if e.code() == 400 => BackendErrorKind::Configuration,
        _ => BackendErrorKind::Other,
    }
}

/// A hint for a JetStream API error that an operator can act on.
fn api_hint(e: &jetstream::Error) -> &'static str {
    match e.error_code() {
        ErrorCode::STREAM_SUBJECT_OVERLAP => {
            " (another stream already takes these subjects: choose another NATS_SUBJECT_PREFIX, or delete that stream)"
        }
        ErrorCode::JETSTREAM_NOT_ENABLED | ErrorCode::JETSTREAM_NOT_ENABLED_FOR_ACCOUNT => {
            " (start nats-server with JetStream, -js, or enable it for the account)"
        }
        _ if e.code() == 403 => " (check the user's permissions)",
        _ => "",
    }
}

/// Classifies a failed connection attempt.
pub(crate) fn connect(e: &async_nats::ConnectError, what: &str, scrub: &Scrub) -> BackendError {
    let kind = match e.kind() {
        ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => {
            BackendErrorKind::Configuration
        }
        ConnectErrorKind::ServerParse | ConnectErrorKind::Tls => BackendErrorKind::Configuration,
        ConnectErrorKind::TimedOut => BackendErrorKind::Timeout,
        // A TLS handshake that fails on the certificate (rustls reports it
        // as invalid data), or a TLS URL pointed at a plain port: not fixed
        // by retrying.
        _ if tls_refused(e) => BackendErrorKind::Configuration,
        _ => BackendErrorKind::Connection,
    };
    let hint = match e.kind() {
        ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => {
            " (check the user, password, token, nkey or credentials file)"
        }
        _ if tls_refused(e) => " (check the server's certificate and NATS_TLS_CA)",
        _ => "",
    };
    let detail = match e.source() {
        Some(source) => format!("{e}: {source}{hint}"),
        None => format!("{e}{hint}"),
    };
    error(kind, what, &detail, scrub)
}

/// Whether `e` (or an error under it) is an I/O error of invalid data or
/// input, as a refused TLS certificate is.
fn tls_refused(e: &(dyn StdError + 'static)) -> bool {
    let mut current: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = current {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput
            )
        {
            return true;
        }
        current = err.source();
    }
    false
}

/// Classifies a failed stream lookup.
pub(crate) fn get_stream(
    e: &jetstream::context::GetStreamError,
    what: &str,
    scrub: &Scrub,
) -> BackendError {
    match e.kind() {
        GetStreamErrorKind::JetStream(api) => error(
            api_kind(&api),
            what,
            &format!("{api}{}", api_hint(&api)),
            scrub,
        ),
        GetStreamErrorKind::InvalidStreamName | GetStreamErrorKind::EmptyName => {
            error(BackendErrorKind::Configuration, what, &e.to_string(), scrub)
        }
        _ => request_failure(e, what, scrub),
    }
}

/// Classifies a failed stream creation or update.
pub(crate) fn create_stream(
    e: &jetstream::context::CreateStreamError,
    what: &str,
    scrub: &Scrub,
) -> BackendError {
    match e.kind() {
        CreateStreamErrorKind::JetStream(api) => error(
            api_kind(&api),
            what,
            &format!("{api}{}", api_hint(&api)),
            scrub,
        ),
        CreateStreamErrorKind::JetStreamUnavailable => error(
            BackendErrorKind::Configuration,
            what,
            "JetStream is not available (start nats-server with -js)",
            scrub,
        ),
        CreateStreamErrorKind::TimedOut => {
            error(BackendErrorKind::Timeout, what, "timed out", scrub)
        }
        CreateStreamErrorKind::EmptyStreamName | CreateStreamErrorKind::InvalidStreamName => {
            error(BackendErrorKind::Configuration, what, &e.to_string(), scrub)
        }
        _ => request_failure(e, what, scrub),
    }
}

/// Classifies a failed consumer operation.
pub(crate) fn consumer(
    e: &jetstream::stream::ConsumerError,
    what: &str,
    scrub: &Scrub,
) -> BackendError {
    match e.kind() {
        ConsumerErrorKind::JetStream(api) => error(
            api_kind(&api),
            what,
            &format!("{api}{}", api_hint(&api)),
            scrub,
        ),
        ConsumerErrorKind::TimedOut => error(BackendErrorKind::Timeout, what, "timed out", scrub),
        ConsumerErrorKind::InvalidName | ConsumerErrorKind::InvalidConsumerType => {
            error(BackendErrorKind::Configuration, what, &e.to_string(), scrub)
        }
        _ => request_failure(e, what, scrub),
    }
}

/// A request that got no answer: a timeout, or the connection is gone.
fn request_failure(e: &dyn StdError, what: &str, scrub: &Scrub) -> BackendError {
    let mut text = e.to_string();
    let mut timed_out = text.contains("timed out");
    let mut source = e.source();
    while let Some(s) = source {
        let t = s.to_string();
        timed_out |= t.contains("timed out");
        text = format!("{text}: {t}");
        source = s.source();
    }
    let kind = if timed_out {
        BackendErrorKind::Timeout
    } else {
        BackendErrorKind::Connection
    };
    error(kind, what, &text, scrub)
}

/// Classifies a failed JetStream publish (sending it or its ack).
pub(crate) fn publish(
    e: &jetstream::context::PublishError,
    what: &str,
    scrub: &Scrub,
    limit: Duration,
) -> BackendError {
    match e.kind() {
        JsPublishErrorKind::MaxPayloadExceeded => error(
            BackendErrorKind::EventRefused,
            what,
            &format!(
                "{e}: {}",
                e.source().map(|s| s.to_string()).unwrap_or_default()
            ),
            scrub,
        ),
        JsPublishErrorKind::TimedOut => BackendError::timeout(what, limit),
        JsPublishErrorKind::BrokenPipe => error(
            BackendErrorKind::Connection,
            what,
            "the connection closed before the server acknowledged it",
            scrub,
        ),
        JsPublishErrorKind::StreamNotFound => error(
            BackendErrorKind::Connection,
            what,
            "no stream takes the subject (the stream was deleted?); it is created again on the next connection",
            scrub,
        ),
        _ => {
            // A JetStream error answer carries the server's code.
            if let Some(api) = e
                .source()
                .and_then(|s| s.downcast_ref::<jetstream::Error>())
            {
                let kind = match api_kind(api) {
                    // A refusal of the server for this message only: retrying
                    // on the same stream may work once it has room.
                    BackendErrorKind::Other | BackendErrorKind::Configuration => {
                        BackendErrorKind::Nacked
                    }
                    kind => kind,
                };
                return error(kind, what, &api.to_string(), scrub);
            }
            request_failure(e, what, scrub)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: usize, err_code: u64) -> jetstream::Error {
        serde_json::from_value(serde_json::json!({
            "code": code, "err_code": err_code, "description": "x"
        }))
        .unwrap()
    }

    #[test]
    fn api_errors_are_classified() {
        assert_eq!(api_kind(&api(400, 10058)), BackendErrorKind::Configuration);
        assert_eq!(api_kind(&api(400, 10065)), BackendErrorKind::Configuration);
        assert_eq!(api_kind(&api(503, 10039)), BackendErrorKind::Configuration);
        assert_eq!(api_kind(&api(400, 10054)), BackendErrorKind::EventRefused);
        assert_eq!(api_kind(&api(503, 10077)), BackendErrorKind::Nacked);
        assert_eq!(api_kind(&api(500, 10001)), BackendErrorKind::Other);
    }

    #[test]
    fn messages_are_scrubbed() {
        let scrub = Scrub::new(["sekrit-token"]);
        let e = error(
            BackendErrorKind::Connection,
            "connecting to nats://sekrit-token@h",
            "refused for sekrit-token",
            &scrub,
        );
        assert!(!e.to_string().contains("sekrit"), "{e}");
    }
}
