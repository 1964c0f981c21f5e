//! Broker URLs whose password never leaves the process in text.

use std::fmt;

/// Replaces the credentials of every URL in `text` with `***`.
///
/// Works on a single URL (`amqp://guest:secret@host:5672/`), on a comma-separated
/// list, and on free text that contains URLs (an error message, say). A URL
/// without a password is left as it is.
///
/// Everything between `scheme://` and the last `@` before the host is
/// credentials, whatever characters the password holds: a user name made of
/// the characters a URL allows is kept (`guest:***@`); when the credentials hold
/// anything else (a raw `/`, `#`, `?`, `@`, a space...), the URL cannot be parsed
/// and is shown as its scheme and host only (`amqp://***@host:5672`). In free
/// text a URL ends at whitespace; a password with whitespace is only safe in a
/// [`BrokerUrl`], which knows where its URL ends.
///
/// ```
/// use flow_events_core::redact_url;
/// assert_eq!(redact_url("amqp://guest:guest@rabbitmq:5672/"), "amqp://guest:***@rabbitmq:5672/");
/// assert_eq!(redact_url("amqp://u:p/a#s?s@rabbitmq:5672/%2f"), "amqp://***@rabbitmq:5672");
/// assert_eq!(redact_url("amqp://rabbitmq:5672/"), "amqp://rabbitmq:5672/");
/// ```
pub fn redact_url(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chunk_start = 0;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            redact_chunk(&text[chunk_start..i], &mut out);
            out.push(c);
            chunk_start = i + c.len_utf8();
        }
    }
    redact_chunk(&text[chunk_start..], &mut out);
    out
}

/// Redacts one piece of text that holds every URL in it whole: the URLs in it
/// start at each `scheme://`, and each ends where the next begins.
fn redact_chunk(chunk: &str, out: &mut String) {
    let starts = scheme_starts(chunk);
    let Some(&first) = starts.first() else {
        redact_schemeless(chunk, out);
        return;
    };
    redact_schemeless(&chunk[..first], out);
    for (n, &start) in starts.iter().enumerate() {
        let end = starts.get(n + 1).copied().unwrap_or(chunk.len());
        redact_one(&chunk[start..end], out);
    }
}

/// Where each `scheme://` in `text` begins (a scheme is a letter, then
/// letters, digits, `+`, `-` or `.`).
fn scheme_starts(text: &str) -> Vec<usize> {
    let bytes = text.as_bytes();
    let mut starts = Vec::new();
    let mut from = 0;
    while let Some(pos) = text[from..].find("://") {
        let sep = from + pos;
        let mut start = sep;
        while start > 0 && is_scheme_byte(bytes[start - 1]) {
            start -= 1;
        }
        // The scheme begins with its first letter.
        while start < sep && !bytes[start].is_ascii_alphabetic() {
            start += 1;
        }
        if start < sep && starts.last().is_none_or(|&last| start > last) {
            starts.push(start);
        }
        from = sep + 3;
    }
    starts
}

/// Whether `text` begins with `scheme://`.
fn starts_with_scheme(text: &str) -> bool {
    let Some(sep) = text.find("://") else {
        return false;
    };
    let scheme = &text.as_bytes()[..sep];
    scheme.first().is_some_and(u8::is_ascii_alphabetic) && scheme.iter().all(|&b| is_scheme_byte(b))
}

fn is_scheme_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')
}

/// Redacts one URL that starts with `scheme://` (and may carry trailing text).
fn redact_one(url: &str, out: &mut String) {
    let Some((scheme, rest)) = url.split_once("://") else {
        out.push_str(url);
        return;
    };
    let Some(at) = rest.rfind('@') else {
        out.push_str(url);
        return;
    };
    let (userinfo, after) = (&rest[..at], &rest[at + 1..]);
    out.push_str(scheme);
    out.push_str("://");
    if is_userinfo(userinfo) {
        match userinfo.split_once(':') {
            Some((user, _)) => {
                out.push_str(user);
                out.push_str(":***@");
            }
            // A user name alone is no secret.
            None => {
                out.push_str(userinfo);
                out.push('@');
            }
        }
        out.push_str(after);
    } else {
        // Not a URL a parser reads the same way: scheme and host only.
        let host_end = after.find(['/', '?', '#']).unwrap_or(after.len());
        out.push_str("***@");
        out.push_str(&after[..host_end]);
    }
}

/// Whether `s` is made only of what RFC 3986 allows in credentials:
/// unreserved characters, percent escapes, sub-delimiters and `:`.
fn is_userinfo(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let escape = b.get(i + 1..i + 3);
                if !escape.is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit)) {
                    return false;
                }
                i += 3;
                continue;
            }
            c if c.is_ascii_alphanumeric() => {}
            b'-' | b'.' | b'_' | b'~' | b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+'
            | b',' | b';' | b'=' | b':' => {}
            _ => return false,
        }
        i += 1;
    }
    true
}

/// Redacts `user:password@host` in text without a scheme.
fn redact_schemeless(text: &str, out: &mut String) {
    let mut token_start = 0;
    for (i, c) in text.char_indices() {
        if is_separator(c) {
            redact_token(&text[token_start..i], out);
            out.push(c);
            token_start = i + c.len_utf8();
        }
    }
    redact_token(&text[token_start..], out);
}

fn is_separator(c: char) -> bool {
    matches!(c, ',' | '"' | '\'' | '(' | ')' | '<' | '>')
}

/// Redacts `user:password@` in one token without a scheme.
fn redact_token(token: &str, out: &mut String) {
    let end = token.find(['/', '?', '#']).unwrap_or(token.len());
    let authority = &token[..end];
    match authority.rfind('@') {
        Some(at) => match authority[..at].find(':') {
            Some(colon) => {
                out.push_str(&token[..colon]);
                out.push_str(":***");
                out.push_str(&token[at..]);
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
        // The whole text is URLs: whitespace inside one is part of it.
        let mut redacted = String::with_capacity(raw.len());
        for (n, item) in split_list(&raw).into_iter().enumerate() {
            if n > 0 {
                redacted.push(',');
            }
            redact_chunk(item, &mut redacted);
        }
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
    ///
    /// A comma separates two URLs only when a `scheme://` follows it, so a
    /// password may hold commas.
    pub fn split(&self) -> Vec<BrokerUrl> {
        split_list(&self.raw)
            .into_iter()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(BrokerUrl::new)
            .collect()
    }
}

/// `text` cut at each comma that a `scheme://` follows (after optional spaces).
fn split_list(text: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let mut item_start = 0;
    for (i, _) in text.match_indices(',') {
        if starts_with_scheme(text[i + 1..].trim_start()) {
            items.push(&text[item_start..i]);
            item_start = i + 1;
        }
    }
    items.push(&text[item_start..]);
    items
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
        assert_eq!(redact_url("amqp://u:p@ss@h:1/"), "amqp://***@h:1");
        assert_eq!(redact_url("amqp://u:p%40ss@h:1/"), "amqp://u:***@h:1/");
    }

    #[test]
    fn credentials_up_to_the_last_at_are_masked_whatever_they_hold() {
        for password in ["pa/ss", "p#ss", "p?ss", "a/b?c#d@e", "p ss", "pä", "%zz"] {
            let url = format!("amqps://user:{password}@rabbit:5671/%2f?heartbeat=5");
            let shown = BrokerUrl::new(url.clone()).to_string();
            assert_eq!(shown, "amqps://***@rabbit:5671", "{password}");
        }
        // Characters a URL allows in a password keep the user shown.
        for password in ["p(ss)", "a,b", "x;y=z", "p%2Fss", "a:b", "*!$&'+~"] {
            let url = format!("amqp://user:{password}@rabbit:5672/%2f");
            assert_eq!(
                BrokerUrl::new(url.clone()).to_string(),
                "amqp://user:***@rabbit:5672/%2f",
                "{password}"
            );
            assert_eq!(redact_url(&url), "amqp://user:***@rabbit:5672/%2f");
        }
    }

    #[test]
    fn urls_in_free_text_are_redacted_whatever_surrounds_them() {
        assert_eq!(
            redact_url("connecting to 'amqp://u:p(x)@h:5672/%2f': refused (amqp://v:q@h2)"),
            "connecting to 'amqp://u:***@h:5672/%2f': refused (amqp://v:***@h2)"
        );
        assert_eq!(
            redact_url("bad url amqp://u:pa/ss@h:5672/x, giving up"),
            "bad url amqp://***@h:5672 giving up"
        );
        assert_eq!(
            redact_url("amqps://u:p@h/?cacertfile=file:///ca.pem"),
            "amqps://u:***@h/?cacertfile=file:///ca.pem"
        );
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

    #[test]
    fn lists_split_only_before_a_scheme() {
        let u = BrokerUrl::new("amqp://a:x,y@h1,amqp://b:p/q@h2/%2f, amqps://c:z@h3");
        assert_eq!(
            u.to_string(),
            "amqp://a:***@h1,amqp://***@h2, amqps://c:***@h3"
        );
        let parts: Vec<String> = u.split().iter().map(|p| p.expose().to_owned()).collect();
        assert_eq!(
            parts,
            ["amqp://a:x,y@h1", "amqp://b:p/q@h2/%2f", "amqps://c:z@h3"]
        );
    }
}
