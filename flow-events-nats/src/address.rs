//! One server address: its URL without credentials, the credentials it
//! carried, and the connect options of the session.

use std::sync::Arc;

use async_nats::{ConnectOptions, Event, ServerAddr};
use flow_events_core::backend_kit::SessionLoss;
use flow_events_core::{BackendError, BrokerUrl};

use crate::config::NatsConfig;
use crate::redact::redact;

/// Credentials given in a URL.
#[derive(Clone, PartialEq, Eq)]
enum UrlAuth {
    None,
    UserPassword(String, String),
    Token(String),
}

/// A parsed server URL.
#[derive(Clone)]
pub(crate) struct Address {
    /// The address without user information.
    pub(crate) server: ServerAddr,
    /// The URL as given, its secrets replaced by `***`.
    pub(crate) redacted: String,
    auth: UrlAuth,
    tls: bool,
}

impl std::fmt::Debug for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Address")
            .field("url", &self.redacted)
            .finish_non_exhaustive()
    }
}

/// `%XX` escapes decoded (as URLs carry reserved characters of passwords).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = bytes.get(i + 1..i + 3)
            && let Ok(hex) = std::str::from_utf8(hex)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Address {
    /// Parses `url` (`nats://`, `tls://`, or `host:port`); `tls` requires
    /// TLS whatever the scheme.
    pub(crate) fn parse(url: &BrokerUrl, tls: bool) -> Result<Self, BackendError> {
        let redacted = redact(url.expose());
        let invalid = |reason: &str| {
            BackendError::configuration(format!(
                "invalid NATS URL {redacted}: {reason}; expected nats://[user:password@]host:4222, \
                 nats://token@host:4222 or tls://..."
            ))
        };
        let parsed: ServerAddr = url
            .expose()
            .parse()
            .map_err(|e: std::io::Error| invalid(&redact(&e.to_string())))?;
        let mut inner = parsed.into_inner();
        match inner.scheme() {
            "nats" | "tls" => {}
            other => {
                return Err(invalid(&format!(
                    "the scheme must be nats or tls, not {:?}",
                    other.chars().take(16).collect::<String>()
                )));
            }
        }
        if inner.host_str().is_none_or(str::is_empty) {
            return Err(invalid("no host"));
        }
        let user = percent_decode(inner.username());
        let password = inner.password().map(percent_decode);
        let auth = match (user.is_empty(), password) {
            (true, None) => UrlAuth::None,
            (false, None) => UrlAuth::Token(user),
            (_, Some(password)) => UrlAuth::UserPassword(user, password),
        };
        let tls = tls || inner.scheme() == "tls";
        inner
            .set_username("")
            .and_then(|()| inner.set_password(None))
            .map_err(|()| invalid("its user information cannot be removed"))?;
        let server = ServerAddr::from_url(inner).map_err(|e| invalid(&e.to_string()))?;
        Ok(Self {
            server,
            redacted,
            auth,
            tls,
        })
    }

    /// The secrets of the URL.
    pub(crate) fn secrets(&self) -> impl Iterator<Item = &str> {
        let (a, b) = match &self.auth {
            UrlAuth::None => (None, None),
            UrlAuth::UserPassword(_, p) => (Some(p.as_str()), None),
            UrlAuth::Token(t) => (None, Some(t.as_str())),
        };
        a.into_iter().chain(b)
    }

    /// The connect options of a session to this address. The client does
    /// not reconnect by itself: a lost connection ends the session (the
    /// event callback records it), and the decorator's supervisor decides
    /// when to connect again.
    pub(crate) async fn options(
        &self,
        nats: &NatsConfig,
        name: &str,
        state: Arc<SessionLoss>,
    ) -> Result<ConnectOptions, BackendError> {
        let mut options = match nats.credentials_file() {
            Some(path) => ConnectOptions::with_credentials_file(path.clone())
                .await
                .map_err(|e| {
                    BackendError::configuration(format!(
                        "reading the credentials file {}: {e}",
                        path.display()
                    ))
                })?,
            None => ConnectOptions::new(),
        };
        match &self.auth {
            UrlAuth::UserPassword(user, password) => {
                options = options.user_and_password(user.clone(), password.clone());
            }
            UrlAuth::Token(token) => options = options.token(token.clone()),
            UrlAuth::None => {
                if let (Some(user), Some(password)) = (nats.user(), nats.password()) {
                    options =
                        options.user_and_password(user.to_owned(), password.expose().to_owned());
                }
                if let Some(token) = nats.token() {
                    options = options.token(token.expose().to_owned());
                }
            }
        }
        if let Some(seed) = nats.nkey() {
            options = options.nkey(seed.expose().to_owned());
        }
        if self.tls {
            options = options.require_tls(true);
        }
        if let Some(ca) = nats.tls_ca_file() {
            options = options.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = nats.tls_client_cert() {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        let redacted = self.redacted.clone();
        Ok(options
            .name(name)
            .connection_timeout(nats.connect_timeout())
            .ping_interval(nats.ping_interval())
            .request_timeout(Some(nats.connect_timeout().max(std::time::Duration::from_secs(5))))
            // One attempt, without delay: the first connect is that
            // attempt. After a loss the client may try once more, but its
            // session is over by then (the event callback below ends it)
            // and the decorator's supervisor owns reconnecting.
            .max_reconnects(Some(1))
            .reconnect_delay_callback(|_| std::time::Duration::ZERO)
            .retain_servers_order()
            .ignore_discovered_servers()
            .event_callback(move |event| {
                let state = state.clone();
                let redacted = redacted.clone();
                async move {
                    let reason = match event {
                        Event::Disconnected => format!("connection to {redacted} lost"),
                        Event::Closed => format!("connection to {redacted} closed"),
                        Event::LameDuckMode => {
                            format!("{redacted} is shutting down (lame duck mode)")
                        }
                        Event::ServerError(e) => {
                            tracing::warn!(server = %redacted, "NATS server error: {}", redact(&e.to_string()));
                            return;
                        }
                        Event::SlowConsumer(sid) => {
                            tracing::warn!(server = %redacted, sid, "NATS slow consumer: messages dropped by the client");
                            return;
                        }
                        _ => return,
                    };
                    if state.set_lost(&BackendError::connection(&reason)) {
                        tracing::debug!(reason = %reason, "session lost");
                    }
                }
            }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flow_events_core::BackendErrorKind;

    fn parse(url: &str) -> Result<Address, BackendError> {
        Address::parse(&BrokerUrl::new(url), false)
    }

    #[test]
    fn credentials_leave_the_url() {
        let a = parse("nats://alice:p%40ss@h:4223").unwrap();
        assert!(a.auth == UrlAuth::UserPassword("alice".into(), "p@ss".into()));
        assert_eq!(a.server.host(), "h");
        assert_eq!(a.server.port(), 4223);
        assert!(!a.server.has_user_pass());
        assert_eq!(a.redacted, "nats://alice:***@h:4223");
        assert_eq!(a.secrets().collect::<Vec<_>>(), ["p@ss"]);
        assert_eq!(percent_decode("a%4"), "a%4");
        assert_eq!(percent_decode("%é%41"), "%éA");
        let t = parse("nats://s3cret@h").unwrap();
        assert!(t.auth == UrlAuth::Token("s3cret".into()));
        assert_eq!(t.redacted, "nats://***@h");
        assert!(!t.tls);
    }

    #[test]
    fn schemes_and_defaults() {
        let a = parse("127.0.0.1:4222").unwrap();
        assert!(a.auth == UrlAuth::None && !a.tls);
        assert!(parse("tls://h").unwrap().tls);
        assert!(
            Address::parse(&BrokerUrl::new("nats://h"), true)
                .unwrap()
                .tls
        );
        assert_eq!(parse("nats://h").unwrap().server.port(), 4222);
    }

    #[test]
    fn invalid_urls_are_configuration_errors_without_secrets() {
        for url in [
            "amqp://u:topsecret@h/",
            "ws://u:topsecret@h/",
            "nats://u:topsecret@h:notaport",
            "nats://topsecret@:4222",
        ] {
            let e = parse(url).expect_err(url);
            assert_eq!(e.kind(), BackendErrorKind::Configuration, "{url}");
            assert!(e.message().contains("invalid NATS URL"), "{e}");
            assert!(!e.to_string().contains("topsecret"), "{e}");
        }
    }
}
