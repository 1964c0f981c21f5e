//! Broker URLs whose password never leaves the process in text.

use std::fmt;

/// Replaces the password of every URL in `text` with `***`.
///
/// Works on a single URL (`amqp://guest:secret@host:5672/`), on a comma-separated
/// list, and on free text that contains URLs (an error message, say). A URL
/// without a password is left as it is.
///
/// ```
/// use flow_events_core::redact_url;
/// assert_eq!(redact_url("amqp://guest:guest@rabbitmq:5672/"), "amqp://guest:***@rabbitmq:5672/");
/// assert_eq!(redact_url("amqp://rabbitmq:5672/"), "amqp://rabbitmq:5672/");
/// ```
pub fn redact_url(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut token_start = 0;
    for (i, c) in text.char_indices() {
        if is_separator(c) {
            redact_token(&text[token_start..i], &mut out);
            out.push(c);
            token_start = i + c.len_utf8();
        }
    }
    redact_token(&text[token_start..], &mut out);
    out
}

fn is_separator(c: char) -> bool {
    c.is_whitespace() || matches!(c, ',' | '"' | '\'' | '(' | ')' | '<' | '>')
}

/// Redacts `user:password@` in one whitespace-free token, with or without a scheme.
fn redact_token(token: &str, out: &mut String) {
    let start = token.find("://").map_or(0, |p| p + 3);
    let end = token[start..]
        .find(['/', '?', '#'])
        .map_or(token.len(), |p| start + p);
    let authority = &token[start..end];
    match authority.rfind('@') {
        Some(at) => match authority[..at].find(':') {
            Some(colon) => {
                out.push_str(&token[..start + colon]);
                out.push_str(":***");
                out.push_str(&token[start + at..]);
            }
            None => out.push_str(token),
        },
        None => out.push_str(token),
    }
}

/// A broker URL (or a comma-separated list of them) that shows itself redacted.
///
/// `Display` and `Debug` print the password as `***`; only [`BrokerUrl::expose`]
/// gives the real text, for the backend that connects with it.
///
/// ```
/// use flow_events_core::BrokerUrl;
/// let url = BrokerUrl::new("amqp://guest:s3cret@localhost:5672/%2f");
/// assert_eq!(url.to_string(), "amqp://guest:***@localhost:5672/%2f");
/// assert!(!format!("{url:?}").contains("s3cret"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    raw: String,
    redacted: String,
}

impl BrokerUrl {
    /// Wraps `url`.
    pub fn new(url: impl Into<String>) -> Self {
        let raw = url.into();
        let redacted = redact_url(&raw);
        Self { raw, redacted }
    }

    /// The URL with its password: pass it only to a connection call.
    pub fn expose(&self) -> &str {
        &self.raw
    }

    /// The URL with its password replaced by `***`.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    /// The comma-separated URLs, each trimmed, empty entries skipped.
    pub fn split(&self) -> Vec<BrokerUrl> {
        self.raw
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(BrokerUrl::new)
            .collect()
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl fmt::Debug for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BrokerUrl({:?})", self.redacted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_password() {
        assert_eq!(
            redact_url("amqp://guest:guest@rabbitmq:5672/"),
            "amqp://guest:***@rabbitmq:5672/"
        );
        assert_eq!(
            redact_url("amqps://u:p%40ss@h/vhost?heartbeat=10"),
            "amqps://u:***@h/vhost?heartbeat=10"
        );
        assert_eq!(redact_url("amqp://u:p@h"), "amqp://u:***@h");
    }

    #[test]
    fn password_with_at_sign_is_fully_hidden() {
        assert_eq!(redact_url("amqp://u:p@ss@h:1/"), "amqp://u:***@h:1/");
    }

    #[test]
    fn leaves_urls_without_password() {
        for u in ["amqp://h:5672/", "amqp://user@h/", "memory://", "not a url"] {
            assert_eq!(redact_url(u), u);
        }
    }

    #[test]
    fn redacts_lists_and_text() {
        assert_eq!(
            redact_url("amqp://a:x@h1,amqp://b:y@h2/"),
            "amqp://a:***@h1,amqp://b:***@h2/"
        );
        assert_eq!(
            redact_url("failed to connect to amqp://a:secret@h1:5672: refused"),
            "failed to connect to amqp://a:***@h1:5672: refused"
        );
    }

    #[test]
    fn redacts_without_scheme() {
        assert_eq!(redact_url("u:secret@h:5672"), "u:***@h:5672");
        assert_eq!(redact_url("mailto@example"), "mailto@example");
    }

    #[test]
    fn broker_url_never_prints_secret() {
        let u = BrokerUrl::new("amqp://a:topsecret@h1, amqp://b:other@h2");
        assert!(!format!("{u} {u:?}").contains("secret"));
        let parts = u.split();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1].expose(), "amqp://b:other@h2");
        assert_eq!(parts[1].to_string(), "amqp://b:***@h2");
    }
}
