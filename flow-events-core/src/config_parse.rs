//! Parsing the values of configuration variables: `var` is the variable's
//! name and `v` its value, both named by the error. Backends read their own
//! variables with these too (re-exported in [`backend_kit`](crate::backend_kit)).

use std::str::FromStr;
use std::time::Duration;

use crate::error::ConfigError;

/// A boolean: `true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`.
pub fn parse_bool(var: &str, v: &str) -> Result<bool, ConfigError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(ConfigError::new(var, v, "expected true or false")),
    }
}

/// A whole number.
pub fn parse_num<T: FromStr>(var: &str, v: &str) -> Result<T, ConfigError> {
    v.trim()
        .parse()
        .map_err(|_| ConfigError::new(var, v, "expected a whole number"))
}

/// A non-negative number of seconds, fractions allowed.
pub fn parse_secs(var: &str, v: &str) -> Result<Duration, ConfigError> {
    let secs: f64 = v
        .trim()
        .parse()
        .map_err(|_| ConfigError::new(var, v, "expected a number of seconds"))?;
    if !secs.is_finite() || secs < 0.0 {
        return Err(ConfigError::new(
            var,
            v,
            "expected a non-negative number of seconds",
        ));
    }
    Duration::try_from_secs_f64(secs)
        .map_err(|_| ConfigError::new(var, v, "number of seconds out of range"))
}
