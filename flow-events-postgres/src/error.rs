//! Errors of flow-events-postgres.

use flow_events_core::redact_url;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A table prefix or schema name is not a plain lowercase identifier.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The database refused a statement or could not be reached.
    #[error("database error: {}", redact_url(&.0.to_string()))]
    Database(#[source] sqlx::Error),
    /// An event could not be encoded as JSON.
    #[error("could not encode event: {0}")]
    Encode(#[source] serde_json::Error),
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Self::Database(e)
    }
}

impl Error {
    /// Whether trying again later may succeed (a database that is away, a
    /// pool that timed out, a serialization failure), as opposed to a wrong
    /// name or a statement the database refuses for good.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Database(sqlx::Error::Database(db)) => {
                // Class 40 (transaction rollback: serialization failure,
                // deadlock), 53 (insufficient resources), 57 (operator
                // intervention: shutdown), 08 (connection exception).
                db.code()
                    .is_some_and(|c| ["40", "53", "57", "08"].iter().any(|p| c.starts_with(p)))
            }
            Self::Database(_) => true,
            Self::InvalidName { .. } | Self::Encode(_) => false,
        }
    }
}

/// The result of this crate's operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
