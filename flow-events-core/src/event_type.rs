//! [`EventType`]: the validated type of an event, its routing key.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest event type accepted, in bytes (the brokers' routing key limit).
pub const MAX_EVENT_TYPE_LEN: usize = 255;

/// Why a string is not a valid event type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidEventType {
    /// The type is the empty string.
    #[error("event type is empty")]
    Empty,
    /// The type is longer than [`MAX_EVENT_TYPE_LEN`] bytes.
    #[error("event type is {len} bytes long, the limit is {MAX_EVENT_TYPE_LEN}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The type contains a character that is not allowed (whitespace, `*` or `#`).
    #[error(
        "event type {value:?} contains {found:?}, which is not allowed (no whitespace, '*' or '#')"
    )]
    InvalidChar {
        /// The type as given.
        value: String,
        /// The offending character.
        found: char,
    },
    /// The type has an empty word (a leading, trailing or doubled `.`).
    #[error("event type {value:?} has an empty word (leading, trailing or doubled '.')")]
    EmptyWord {
        /// The type as given.
        value: String,
    },
}

/// A validated event type such as `order.created`; it becomes the routing key.
///
/// Words are separated by `.`; no word is empty, and the type has no whitespace,
/// `*` or `#` (those are pattern wildcards), and at most 255 bytes.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct EventType(String);

impl EventType {
    /// Validates `value` as an event type.
    pub fn new(value: impl Into<String>) -> Result<Self, InvalidEventType> {
        let value = value.into();
        if value.is_empty() {
            return Err(InvalidEventType::Empty);
        }
        if value.len() > MAX_EVENT_TYPE_LEN {
            return Err(InvalidEventType::TooLong { len: value.len() });
        }
        // Most types are plain ASCII words: checked byte by byte in one
        // pass. Anything else takes the character-by-character path.
        if plain_ascii(value.as_bytes()) {
            return Ok(Self(value));
        }
        if let Some(found) = value
            .chars()
            .find(|c| c.is_whitespace() || c.is_control() || *c == '*' || *c == '#')
        {
            return Err(InvalidEventType::InvalidChar { value, found });
        }
        if value.split('.').any(str::is_empty) {
            return Err(InvalidEventType::EmptyWord { value });
        }
        Ok(Self(value))
    }

    /// The type as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether `bytes` (not empty) is a valid type of printable ASCII alone:
/// no space, control, `*` or `#`, and no empty word between dots.
fn plain_ascii(bytes: &[u8]) -> bool {
    let mut previous = b'.';
    for &b in bytes {
        if !b.is_ascii_graphic() || b == b'*' || b == b'#' || (b == b'.' && previous == b'.') {
            return false;
        }
        previous = b;
    }
    previous != b'.'
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl AsRef<str> for EventType {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for EventType {
    type Error = InvalidEventType;
    fn try_from(value: &str) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl TryFrom<String> for EventType {
    type Error = InvalidEventType;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl std::str::FromStr for EventType {
    type Err = InvalidEventType;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::new(s).map_err(serde::de::Error::custom)
    }
}
