//! `tollgate demo` flags and entry point.

use std::time::Duration;

/// Run the whole system locally: authority, two sidecars, a simulated agent fleet.
///
/// Starts the authority on a temporary embedded (SQLite) store, two sidecars with separate
/// region folders (two pods) and a fleet of agent threads (interactive, scheduler and
/// background agents over several models, with per-task budgets and one runaway loop). The
/// tenant's trial credits pay first, then its purchased credits, then overage up to the
/// plan's hard cap. Prints the dashboard's URL (the authority's `/ui`, live), live progress
/// (balance, burn rate, projected depletion, denials by reason and tier), then the tenant's
/// statement and the audit chain check; with `--keep` the authority and its dashboard keep
/// serving until Ctrl-C. If the authority cannot start, the demo says why and fails. Nothing
/// to install; everything lives in a temporary folder that is removed at the end.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// How long the fleet runs (e.g. `20s`, `1m`); the whole demo takes a few seconds more.
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Number of simulated agents (threads), spread over the two pods and the three tiers;
    /// the last one is the runaway loop.
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(4..=200))]
    pub agents: u32,

    /// Seconds between progress lines.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=60))]
    pub every: u64,

    /// The authority's HTTP address: its admin API and the dashboard (`/ui`). If the port
    /// is taken, a free one is used (the URL is printed).
    #[arg(long, default_value = "127.0.0.1:7071")]
    pub http: std::net::SocketAddr,

    /// After the run, keep the authority and its dashboard serving until Ctrl-C, so the
    /// numbers can be looked at.
    #[arg(long)]
    pub keep: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d =
        humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e} (write e.g. 20s or 1m)"))?;
    if d < Duration::from_secs(3) || d > Duration::from_secs(3600) {
        return Err(format!("{s:?}: choose between 3s and 1h"));
    }
    Ok(d)
}

/// Entry point for `tollgate demo`.
pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(crate::scenario::run(crate::scenario::Script {
        duration: args.duration,
        agents: args.agents,
        every: args.every,
        http: args.http,
        keep: args.keep,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: DemoArgs,
    }

    #[test]
    fn flags_parse_and_validate() {
        let t = T::try_parse_from(["x"]).unwrap();
        assert_eq!(t.a.duration, Duration::from_secs(20));
        assert_eq!(t.a.agents, 12);
        let t = T::try_parse_from(["x", "--duration", "1m", "--agents", "30"]).unwrap();
        assert_eq!(t.a.duration, Duration::from_secs(60));
        assert!(T::try_parse_from(["x", "--duration", "1s"]).is_err());
        assert!(T::try_parse_from(["x", "--duration", "soon"]).is_err());
        assert!(T::try_parse_from(["x", "--agents", "2"]).is_err());
        assert_eq!(t.a.http, "127.0.0.1:7071".parse().unwrap());
        assert!(!t.a.keep);
        let t = T::try_parse_from(["x", "--http", "127.0.0.1:9000", "--keep"]).unwrap();
        assert_eq!((t.a.http.port(), t.a.keep), (9000, true));
    }
}
