//! The sidecar process: runtime, tasks, signals.

use crate::cli::Config;

/// Runs the sidecar until SIGTERM or SIGINT.
pub fn run_blocking(config: Config) -> anyhow::Result<()> {
    let _ = config;
    anyhow::bail!("the sidecar runtime is not wired yet")
}
