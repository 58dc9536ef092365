//! `tollgate sidecar` and `tollgate-sidecar`: flags and environment (fixed names shared with
//! the Helm chart), resolved into a [`Config`] (see [`crate::config`]), then the run.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};

pub use crate::config::{Config, DEFAULT_LANE_OVERRUN_ALLOWANCE, parse_credits, parse_floors};
use crate::logging::LogFormat;

/// Run the per-pod sidecar: own the region, lease budget from the authority, drain usage.
#[derive(Debug, Clone, clap::Args)]
pub struct SidecarArgs {
    /// Region file path (the pod's in-memory emptyDir). Agents find it through the same env.
    #[arg(
        long,
        env = "TOLLGATE_REGION",
        default_value = "/var/run/tollgate/region"
    )]
    pub region: PathBuf,

    /// Folder for the sidecar's private files (batch signing key, outbox of unsent usage,
    /// state). Default: the region's folder. In a pod, give a folder the agent containers
    /// do not mount, so they can neither read the key nor touch unsent batches (the
    /// injector does).
    #[arg(long, env = "TOLLGATE_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Authority gRPC URL.
    #[arg(
        long,
        env = "TOLLGATE_AUTHORITY",
        default_value = "http://tollgate-authority:7070"
    )]
    pub authority: String,

    /// This sidecar's identity at the authority (default: the pod name from HOSTNAME).
    #[arg(long, env = "TOLLGATE_SIDECAR_ID")]
    pub sidecar_id: Option<String>,

    /// File holding this sidecar's credential (bearer token) for the authority.
    #[arg(long, env = "TOLLGATE_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,

    /// CA certificate (PEM) to trust when the authority URL is https:// (required then).
    #[arg(long, env = "TOLLGATE_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,

    /// Tenants this pod serves, comma separated.
    #[arg(long, env = "TOLLGATE_TENANTS", value_delimiter = ',', required = true)]
    pub tenants: Vec<String>,

    /// Address for /healthz, /readyz and /metrics.
    #[arg(long, env = "TOLLGATE_HTTP", default_value = "0.0.0.0:7072")]
    pub http: SocketAddr,

    /// Log filter (`info`, `debug`, or directives like `tollgate_sidecar=debug,info`).
    #[arg(long, env = "TOLLGATE_LOG", default_value = "info")]
    pub log: String,

    /// Log format.
    #[arg(long, env = "TOLLGATE_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Credits per limit this sidecar may release while the authority is unreachable and its
    /// leases are spent (0 = fail closed). Bounds overspend per limit per outage.
    #[arg(long, env = "TOLLGATE_EMERGENCY_ALLOWANCE", default_value = "0")]
    pub emergency_allowance: String,

    /// Lanes in the region (agent threads or processes × tiers it can serve at once).
    #[arg(long, env = "TOLLGATE_LANES", default_value_t = 128)]
    pub lanes: u32,

    /// Named tasks the pod's agents can have open at once (the region's task table; each
    /// takes a pool while open).
    #[arg(long, env = "TOLLGATE_TASKS", default_value_t = 256)]
    pub tasks: u32,

    /// Distinct agent and feature names the region can hold (its name table; a name is
    /// interned once and kept for the region's life).
    #[arg(long, env = "TOLLGATE_NAMES", default_value_t = 1024)]
    pub names: u32,

    /// Control loop period in milliseconds (top-ups, drains); the loop slows down when idle.
    #[arg(long, env = "TOLLGATE_TICK_MS", default_value_t = 10)]
    pub tick_ms: u64,

    /// Default tier floors, per-mille of each pool's local budget, for interactive, scheduler
    /// and background (a tier may not take a pool below its floor; the floor of a tier also
    /// binds the tiers below it). Used when the authority's policy sets no floors.
    #[arg(long, env = "TOLLGATE_TIER_FLOORS", default_value = "0,0,0")]
    pub tier_floors: String,

    /// Overrun allowance per lane, in credits: what the sidecar reports for a lane (its
    /// records and aggregates, over the lane's life) is at most what the sidecar gave the
    /// lane (topped up, less what it took back) plus this. Usage past it is not reported
    /// and is counted as suspected tampering (a process that maps the region can write its
    /// lane's words). Covers honest overruns (a call that cost more than it reserved).
    #[arg(
        long,
        env = "TOLLGATE_LANE_OVERRUN_ALLOWANCE",
        default_value = DEFAULT_LANE_OVERRUN_ALLOWANCE
    )]
    pub lane_overrun_allowance: String,

    /// Milliseconds after which a dead agent process's holds are reclaimed.
    #[arg(long, env = "TOLLGATE_LIVENESS_TIMEOUT_MS", default_value_t = 1_000)]
    pub liveness_timeout_ms: u64,
}

impl SidecarArgs {
    /// Validates the flags into a [`Config`].
    pub fn resolve(&self) -> anyhow::Result<Config> {
        let sidecar_id = match &self.sidecar_id {
            Some(id) if !id.trim().is_empty() => id.trim().to_string(),
            _ => std::env::var("HOSTNAME")
                .ok()
                .filter(|h| !h.trim().is_empty())
                .context("no --sidecar-id / TOLLGATE_SIDECAR_ID and no HOSTNAME to default to")?,
        };
        let tenants: Vec<String> = self
            .tenants
            .iter()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect();
        if tenants.is_empty() {
            bail!("--tenants / TOLLGATE_TENANTS names no tenant");
        }
        let token = match &self.token_file {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .with_context(|| format!("reading the sidecar token file {}", p.display()))?
                    .trim()
                    .to_string(),
            ),
            None => None,
        };
        let ca_cert = match &self.ca_cert {
            Some(p) => Some(
                std::fs::read(p)
                    .with_context(|| format!("reading the CA certificate {}", p.display()))?,
            ),
            None => None,
        };
        if self.authority.starts_with("https://") && ca_cert.is_none() {
            bail!(
                "--authority {:?} is https: give the CA that signed its certificate with --ca-cert",
                self.authority
            );
        }
        let state_dir = match (&self.state_dir, self.region.parent()) {
            (Some(d), _) => d.clone(),
            (None, Some(p)) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if self.lanes == 0 {
            bail!("--lanes must be at least 1");
        }
        if self.tasks > tollgate_client::layout::MAX_TASKS as u32 {
            bail!(
                "--tasks must be at most {}",
                tollgate_client::layout::MAX_TASKS
            );
        }
        if self.names < 2 || self.names as usize > tollgate_client::layout::MAX_NAMES {
            bail!(
                "--names must be between 2 and {}",
                tollgate_client::layout::MAX_NAMES
            );
        }
        if self.tick_ms == 0 || self.tick_ms > 10_000 {
            bail!("--tick-ms must be between 1 and 10000");
        }
        if !self.authority.starts_with("http://") && !self.authority.starts_with("https://") {
            bail!(
                "--authority {:?} must be an http:// or https:// URL",
                self.authority
            );
        }
        Ok(Config {
            region: self.region.clone(),
            state_dir,
            authority: self.authority.clone(),
            sidecar_id,
            token,
            ca_cert,
            tenants,
            http: self.http,
            emergency_allowance: parse_credits(&self.emergency_allowance)
                .context("--emergency-allowance")?,
            lanes: self.lanes,
            tasks: self.tasks,
            names: self.names,
            tick: Duration::from_millis(self.tick_ms),
            liveness_timeout: Duration::from_millis(self.liveness_timeout_ms),
            tier_floor_permille: parse_floors(&self.tier_floors)?,
            lane_overrun_allowance: parse_credits(&self.lane_overrun_allowance)
                .context("--lane-overrun-allowance")?,
        })
    }
}

/// Entry point for `tollgate sidecar` and the `tollgate-sidecar` binary.
pub fn run(args: SidecarArgs) -> anyhow::Result<()> {
    crate::logging::init(&args.log, args.log_format)?;
    let config = args.resolve()?;
    crate::run::run_blocking(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: SidecarArgs,
    }

    #[test]
    fn credits_parse_exactly() {
        assert_eq!(parse_credits("0").unwrap(), 0);
        assert_eq!(parse_credits("12").unwrap(), 12_000_000);
        assert_eq!(parse_credits("0.5").unwrap(), 500_000);
        assert_eq!(parse_credits(".000001").unwrap(), 1);
        assert!(parse_credits("1.0000001").is_err());
        assert!(parse_credits("-1").is_err());
        assert!(parse_credits("1e3").is_err());
        assert!(parse_credits("").is_err());
        assert!(parse_credits("99999999999999999999").is_err());
    }

    #[test]
    fn flags_resolve() {
        let t = T::try_parse_from([
            "x",
            "--region",
            "/tmp/r/region",
            "--tenants",
            "acme, beta",
            "--sidecar-id",
            "pod-1",
            "--authority",
            "http://127.0.0.1:7070",
        ])
        .unwrap();
        let c = t.a.resolve().unwrap();
        assert_eq!(c.tenants, vec!["acme", "beta"]);
        assert_eq!(
            c.state_dir,
            PathBuf::from("/tmp/r"),
            "defaults to the region's folder"
        );
        let t = T::try_parse_from([
            "x",
            "--region",
            "/tmp/r/region",
            "--state-dir",
            "/var/lib/tg",
            "--tenants",
            "acme",
            "--sidecar-id",
            "pod-1",
        ])
        .unwrap();
        assert_eq!(
            t.a.resolve().unwrap().state_dir,
            PathBuf::from("/var/lib/tg")
        );
        assert_eq!(c.http.port(), 7072);
        assert_eq!(c.emergency_allowance, 0);
        assert_eq!(c.tier_floor_permille, [0, 0, 0]);
    }

    #[test]
    fn floors_parse() {
        assert_eq!(parse_floors("0, 100,250").unwrap(), [0, 100, 250]);
        assert!(parse_floors("1,2").is_err());
        assert!(parse_floors("0,0,1001").is_err());
        assert!(parse_floors("0,x,1").is_err());
    }

    #[test]
    fn bad_flags_are_clear_errors() {
        let t = T::try_parse_from([
            "x",
            "--tenants",
            "a",
            "--sidecar-id",
            "p",
            "--authority",
            "tcp://x",
        ])
        .unwrap();
        let e = t.a.resolve().unwrap_err().to_string();
        assert!(e.contains("http://"), "{e}");
        let t = T::try_parse_from(["x", "--tenants", " ", "--sidecar-id", "p"]).unwrap();
        assert!(t.a.resolve().is_err());
        let t = T::try_parse_from([
            "x",
            "--tenants",
            "a",
            "--sidecar-id",
            "p",
            "--authority",
            "https://auth:7070",
        ])
        .unwrap();
        let e = t.a.resolve().unwrap_err().to_string();
        assert!(e.contains("--ca-cert"), "{e}");
    }
}
