//! What happens to an event when the pending buffer is full.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// What to do with an event when the pending buffer is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OverflowPolicy {
    /// Drop the new event (the original behaviour), logged and counted.
    #[default]
    DropNewest,
    /// Drop the oldest pending event to make room, logged and counted.
    DropOldest,
    /// Refuse the new event with an error that hands it back.
    Reject,
}

impl FromStr for OverflowPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "drop-newest" => Ok(Self::DropNewest),
            "drop-oldest" => Ok(Self::DropOldest),
            "reject" => Ok(Self::Reject),
            _ => Err("expected drop-newest, drop-oldest or reject".to_owned()),
        }
    }
}

impl fmt::Display for OverflowPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::DropNewest => "drop-newest",
            Self::DropOldest => "drop-oldest",
            Self::Reject => "reject",
        })
    }
}
