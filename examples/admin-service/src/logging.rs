//! Log output: readable lines by default, JSON lines with `LOG_FORMAT=json`.

use std::io::IsTerminal;

use flow_events_core::ConfigError;
use tracing_subscriber::EnvFilter;

use crate::settings::{ENV_RUST_LOG, LogFormat};

/// Installs the global subscriber writing to standard output. Fails, naming
/// `RUST_LOG`, when the filter does not parse.
pub(crate) fn init(format: LogFormat, filter: &str) -> Result<(), ConfigError> {
    let env_filter = EnvFilter::builder()
        .parse(filter)
        .map_err(|e| ConfigError::new(ENV_RUST_LOG, filter, e.to_string()))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stdout);
    match format {
        LogFormat::Json => builder
            .json()
            .with_current_span(false)
            .with_span_list(false)
            .init(),
        LogFormat::Human => builder.with_ansi(std::io::stdout().is_terminal()).init(),
    }
    Ok(())
}
