//! The names of the tables and of the notification channel.

use crate::error::{Error, Result};

/// Longest prefix or schema name accepted: the longest table name made from
/// it (`<prefix>_inbox_handled_at`) stays within PostgreSQL's 63 bytes.
pub const MAX_NAME_LEN: usize = 40;

/// Where the outbox and inbox live: an optional schema and a prefix for the
/// table names (`<prefix>_outbox`, `<prefix>_inbox`, `<prefix>_migrations`).
///
/// Both are plain lowercase identifiers (`[a-z_][a-z0-9_]*`, at most 40
/// bytes), so they are never quoted wrong and never carry SQL. Several
/// services, or parallel tests, each use their own prefix or schema.
///
/// ```
/// use flow_events_postgres::Tables;
/// let tables = Tables::new("billing").unwrap().with_schema("app").unwrap();
/// assert_eq!(tables.outbox(), "\"app\".\"billing_outbox\"");
/// assert_eq!(tables.channel(), "app_billing_outbox");
/// assert!(Tables::new("x; DROP TABLE users").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tables {
    schema: Option<String>,
    prefix: String,
}

impl Default for Tables {
    /// Prefix `flow_events`, the connection's default schema.
    fn default() -> Self {
        Self {
            schema: None,
            prefix: "flow_events".to_owned(),
        }
    }
}

fn validate(name: &str) -> Result<String> {
    let refuse = |reason| {
        Err(Error::InvalidName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() {
        return refuse("empty");
    }
    if name.len() > MAX_NAME_LEN {
        return refuse("longer than 40 bytes");
    }
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        return refuse("starts with a digit");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return refuse("only a-z, 0-9 and _ are allowed");
    }
    Ok(name.to_owned())
}

impl Tables {
    /// Tables named `<prefix>_outbox`, `<prefix>_inbox`, in the connection's
    /// default schema.
    pub fn new(prefix: &str) -> Result<Self> {
        Ok(Self {
            schema: None,
            prefix: validate(prefix)?,
        })
    }

    /// The tables live in `schema` (created by the migrations if missing).
    pub fn with_schema(mut self, schema: &str) -> Result<Self> {
        self.schema = Some(validate(schema)?);
        Ok(self)
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The schema, if one was given.
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    fn qualified(&self, suffix: &str) -> String {
        match &self.schema {
            Some(schema) => format!("\"{schema}\".\"{}_{suffix}\"", self.prefix),
            None => format!("\"{}_{suffix}\"", self.prefix),
        }
    }

    /// The outbox table, quoted and qualified.
    pub fn outbox(&self) -> String {
        self.qualified("outbox")
    }

    /// The inbox table, quoted and qualified.
    pub fn inbox(&self) -> String {
        self.qualified("inbox")
    }

    /// The table of applied migrations, quoted and qualified.
    pub fn migrations(&self) -> String {
        self.qualified("migrations")
    }

    /// The channel `Outbox::enqueue` notifies and relays listen on.
    pub fn channel(&self) -> String {
        match &self.schema {
            Some(schema) => format!("{schema}_{}_outbox", self.prefix),
            None => format!("{}_outbox", self.prefix),
        }
    }

    /// Fills the placeholders of a migration.
    pub(crate) fn render(&self, sql: &str) -> String {
        sql.replace("{outbox}", &self.outbox())
            .replace("{inbox}", &self.inbox())
            .replace(
                "{inbox_handled_at_index}",
                &format!("\"{}_inbox_handled_at\"", self.prefix),
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_identifiers() {
        for ok in ["a", "flow_events", "_x9", &"a".repeat(40)] {
            assert!(Tables::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "A", "9a", "a-b", "a\"b", "a b", "é", &"a".repeat(41)] {
            assert!(Tables::new(bad).is_err(), "{bad}");
            assert!(Tables::default().with_schema(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn renders_qualified_names() {
        let t = Tables::new("p").unwrap();
        assert_eq!(t.render("{outbox} {inbox}"), "\"p_outbox\" \"p_inbox\"");
        assert_eq!(t.channel(), "p_outbox");
        let t = t.with_schema("s").unwrap();
        assert_eq!(t.migrations(), "\"s\".\"p_migrations\"");
    }
}
