//! Structured logs with `tracing`: human text or one JSON object per line.

use tracing_subscriber::EnvFilter;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line (for log pipelines).
    Json,
}

/// What went wrong setting up logging.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The filter did not parse.
    #[error(
        "bad log filter {filter:?}: {reason} (use a level like `info` or directives like `tollgate_sidecar=debug,info`)"
    )]
    Filter {
        /// What was given.
        filter: String,
        /// The parser's complaint.
        reason: String,
    },
}

/// Installs the global subscriber. A second call (tests, the demo running several sidecars
/// in one process) keeps the first subscriber and returns Ok.
pub fn init(filter: &str, format: LogFormat) -> Result<(), LogError> {
    let env = EnvFilter::try_new(filter).map_err(|e| LogError::Filter {
        filter: filter.to_string(),
        reason: e.to_string(),
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    Ok(())
}
