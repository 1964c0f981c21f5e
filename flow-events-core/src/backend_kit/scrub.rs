//! Keeping known secrets (a URL with its password, a password, a token) out
//! of text that came from a broker's client or from the broker itself.

use std::sync::Arc;

/// Secrets shorter than this are left alone: replacing every `ab` of a
/// message would mangle ordinary words and tell what the secret is.
const MIN_SECRET_BYTES: usize = 3;

/// Replaces every known secret in a text with `***`.
///
/// Cloned by every publish that may have to name a failure, so its secrets
/// are shared: a clone is one reference count, not a copy of each. Its
/// `Debug` output counts the secrets and never shows one.
#[derive(Clone, Default)]
pub struct Scrub {
    /// Longest first, so that a secret holding another goes whole.
    secrets: Arc<[String]>,
}

impl std::fmt::Debug for Scrub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Scrub({} secrets)", self.secrets.len())
    }
}

impl Scrub {
    /// Scrubs `secrets`; empty ones and ones under 3 bytes are skipped.
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Self {
        let mut secrets: Vec<String> = secrets
            .into_iter()
            .filter(|s| s.len() >= MIN_SECRET_BYTES)
            .map(str::to_owned)
            .collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Self {
            secrets: secrets.into(),
        }
    }

    /// `text` with every secret replaced by `***`.
    pub fn clean(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in self.secrets.iter() {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), "***");
            }
        }
        out
    }

    /// Whether `text` holds no secret.
    pub fn is_clean(&self, text: &str) -> bool {
        !self.secrets.iter().any(|s| text.contains(s.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_replaced_longest_first() {
        let s = Scrub::new(["amqp://u:hunter2@h/", "hunter2"]);
        assert_eq!(
            s.clean("bad url 'amqp://u:hunter2@h/' and hunter2"),
            "bad url '***' and ***"
        );
        assert!(!s.is_clean("x hunter2"));
        assert!(s.is_clean("nothing here"));
    }

    #[test]
    fn short_and_empty_secrets_are_left_alone() {
        let s = Scrub::new(["", "a", "ab", "p/#?()"]);
        assert_eq!(s.clean("a b ab"), "a b ab");
        assert_eq!(s.clean("password p/#?() here"), "password *** here");
        assert!(Scrub::default().is_clean("anything"));
    }

    #[test]
    fn debug_counts_the_secrets_without_showing_them() {
        let s = Scrub::new(["amqp://u:hunter2@h/", "hunter2"]);
        let shown = format!("{s:?} {:?}", s.clone());
        assert_eq!(shown, "Scrub(2 secrets) Scrub(2 secrets)");
    }
}
