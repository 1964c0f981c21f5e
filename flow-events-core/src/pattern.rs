//! Topic patterns: `*` matches one word, `#` matches zero or more words.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::event::{EventType, MAX_EVENT_TYPE_LEN};

/// Why a string is not a valid topic pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidPattern {
    /// The pattern is empty.
    #[error("topic pattern is empty")]
    Empty,
    /// The pattern is longer than 255 bytes.
    #[error("topic pattern is {len} bytes long, the limit is {MAX_EVENT_TYPE_LEN}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// A word is malformed: empty, has whitespace, or mixes a wildcard with other characters.
    #[error(
        "topic pattern {value:?} has an invalid word {word:?} (wildcards '*' and '#' must stand alone)"
    )]
    InvalidWord {
        /// The pattern as given.
        value: String,
        /// The offending word.
        word: String,
    },
}

/// A validated topic pattern, with AMQP topic-exchange semantics.
///
/// ```
/// use flow_events_core::{EventType, TopicPattern};
/// let p = TopicPattern::new("order.#").unwrap();
/// assert!(p.matches(&EventType::new("order.created").unwrap()));
/// assert!(p.matches(&EventType::new("order").unwrap()));
/// assert!(!p.matches(&EventType::new("user.created").unwrap()));
/// ```
#[derive(Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct TopicPattern {
    raw: String,
    #[serde(skip)]
    words: Vec<Word>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Word {
    Literal(String),
    Star,
    Hash,
}

impl TopicPattern {
    /// Validates `value` as a pattern.
    pub fn new(value: impl Into<String>) -> Result<Self, InvalidPattern> {
        let raw = value.into();
        if raw.is_empty() {
            return Err(InvalidPattern::Empty);
        }
        if raw.len() > MAX_EVENT_TYPE_LEN {
            return Err(InvalidPattern::TooLong { len: raw.len() });
        }
        let mut words = Vec::new();
        for w in raw.split('.') {
            let word = match w {
                "*" => Word::Star,
                "#" => Word::Hash,
                _ if w.is_empty()
                    || w.chars()
                        .any(|c| c.is_whitespace() || c.is_control() || c == '*' || c == '#') =>
                {
                    return Err(InvalidPattern::InvalidWord {
                        word: w.to_owned(),
                        value: raw.clone(),
                    });
                }
                _ => Word::Literal(w.to_owned()),
            };
            words.push(word);
        }
        Ok(Self { raw, words })
    }

    /// The pattern that matches every event type (`#`).
    pub fn all() -> Self {
        Self {
            raw: "#".to_owned(),
            words: vec![Word::Hash],
        }
    }

    /// The pattern as a string (an AMQP binding key).
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// Whether `event_type` matches.
    pub fn matches(&self, event_type: &EventType) -> bool {
        let words: Vec<&str> = event_type.as_str().split('.').collect();
        matches_from(&self.words, &words)
    }
}

fn matches_from(pattern: &[Word], words: &[&str]) -> bool {
    match pattern.split_first() {
        None => words.is_empty(),
        Some((Word::Hash, rest)) => {
            (0..=words.len()).any(|skip| matches_from(rest, &words[skip..]))
        }
        Some((Word::Star, rest)) => !words.is_empty() && matches_from(rest, &words[1..]),
        Some((Word::Literal(l), rest)) => {
            words.first().is_some_and(|w| w == l) && matches_from(rest, &words[1..])
        }
    }
}

impl fmt::Display for TopicPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl fmt::Debug for TopicPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TopicPattern({:?})", self.raw)
    }
}

impl std::str::FromStr for TopicPattern {
    type Err = InvalidPattern;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl TryFrom<&str> for TopicPattern {
    type Error = InvalidPattern;
    fn try_from(value: &str) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl<'de> Deserialize<'de> for TopicPattern {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::new(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, t: &str) -> bool {
        TopicPattern::new(p)
            .unwrap()
            .matches(&EventType::new(t).unwrap())
    }

    #[test]
    fn exact() {
        assert!(m("order.created", "order.created"));
        assert!(!m("order.created", "order.created.v2"));
        assert!(!m("order.created", "order"));
    }

    #[test]
    fn star_is_one_word() {
        assert!(m("order.*", "order.created"));
        assert!(!m("order.*", "order"));
        assert!(!m("order.*", "order.created.v2"));
        assert!(m("*.created", "user.created"));
        assert!(m("*.*.v2", "order.created.v2"));
    }

    #[test]
    fn hash_is_zero_or_more_words() {
        assert!(m("#", "a"));
        assert!(m("#", "a.b.c"));
        assert!(m("order.#", "order"));
        assert!(m("order.#", "order.a.b"));
        assert!(m("#.created", "created"));
        assert!(m("#.created", "a.b.created"));
        assert!(!m("#.created", "a.b.created.x"));
        assert!(m("a.#.z", "a.z"));
        assert!(m("a.#.z", "a.b.c.z"));
        assert!(m("#.*", "a"));
        assert!(!m("*.#.*", "a"));
    }

    #[test]
    fn invalid() {
        assert_eq!(TopicPattern::new(""), Err(InvalidPattern::Empty));
        for p in ["a..b", "a*", "a.#b", "a b", ".a"] {
            assert!(TopicPattern::new(p).is_err(), "{p}");
        }
    }
}
