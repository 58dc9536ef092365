//! `tollgate demo` flags and entry point.

use std::time::Duration;

/// Run the whole system locally: authority, two sidecars, a simulated agent fleet.
///
/// Starts the authority on a temporary embedded (SQLite) store, two sidecars with separate
/// region folders (two pods) and a fleet of agent threads (interactive, scheduler and
/// background agents over several models, with per-task budgets and one runaway loop). Prints
/// live progress, then the tenant's statement and the audit chain check. Nothing to install.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// How long the fleet runs (e.g. `20s`, `1m`). The whole demo takes a few seconds more.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Number of simulated agents (threads), spread over the two pods and the three tiers.
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(3..=512))]
    pub agents: u32,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d =
        humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e} (write e.g. 20s or 1m)"))?;
    if d < Duration::from_secs(2) || d > Duration::from_secs(3600) {
        return Err(format!("{s:?}: choose between 2s and 1h"));
    }
    Ok(d)
}

/// Entry point for `tollgate demo`.
pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let _ = args;
    anyhow::bail!("the demo is being built")
}
