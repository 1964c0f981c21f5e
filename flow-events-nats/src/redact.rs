//! Keeping secrets out of text: NATS URLs carry a password (`user:pass@`)
//! or a token alone (`token@`), and `redact_url` of core leaves the second
//! one as it is (for AMQP it is a user name).

use flow_events_core::redact_url;

/// Replaces every password and every token of the URLs in `text` with `***`.
///
/// ```text
/// nats://alice:secret@h:4222  ->  nats://alice:***@h:4222
/// nats://s3cr3t-token@h:4222  ->  nats://***@h:4222
/// ```
pub(crate) fn redact(text: &str) -> String {
    let text = redact_url(text);
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(at) = rest.find("://") {
        let start = at + 3;
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let end = rest
            .find(|c: char| c.is_whitespace() || matches!(c, '/' | '?' | '#' | ',' | '"' | '\''))
            .unwrap_or(rest.len());
        let authority = &rest[..end];
        match authority.rfind('@') {
            Some(i) if !authority[..i].contains(':') && !authority[..i].is_empty() => {
                out.push_str("***");
                out.push_str(&authority[i..]);
            }
            _ => out.push_str(authority),
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Removes known secrets from a client's error text, its URLs redacted.
#[derive(Clone, Default, Debug)]
pub(crate) struct Scrub(flow_events_core::backend_kit::Scrub);

impl Scrub {
    /// Scrubs `secrets` (empty ones and ones under 3 bytes are skipped:
    /// replacing them would mangle ordinary words).
    pub(crate) fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Self {
        Self(flow_events_core::backend_kit::Scrub::new(secrets))
    }

    /// `text` without secrets, its URLs redacted.
    pub(crate) fn clean(&self, text: &str) -> String {
        self.0.clean(&redact(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_and_tokens_are_redacted() {
        assert_eq!(
            redact("nats://alice:secret@h:4222"),
            "nats://alice:***@h:4222"
        );
        assert_eq!(redact("nats://tok3n@h:4222"), "nats://***@h:4222");
        assert_eq!(
            redact("tls://a:b@h1:4222,nats://t@h2"),
            "tls://a:***@h1:4222,nats://***@h2"
        );
        assert_eq!(
            redact("failed: nats://t0ken@h/ refused"),
            "failed: nats://***@h/ refused"
        );
        for plain in ["nats://h:4222", "nats://127.0.0.1", "no url here"] {
            assert_eq!(redact(plain), plain);
        }
    }

    #[test]
    fn scrub_removes_secrets() {
        let s = Scrub::new(["hunter22", "", "ab"]);
        assert_eq!(
            s.clean("auth hunter22 at nats://x:hunter22@h"),
            "auth *** at nats://x:***@h"
        );
        assert_eq!(s.clean("ab stays"), "ab stays");
    }
}
