//! The sidecar's configuration once its flags are validated, and the parsers of the flag
//! values it shares with the Helm chart (credit amounts, tier floors). The control loop, the
//! region owner and the runtime depend on this module, never on the CLI.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};

/// Default of `--lane-overrun-allowance`, in credits.
pub const DEFAULT_LANE_OVERRUN_ALLOWANCE: &str = "1";

/// Parses a credit amount written as decimal credits (`12`, `0.5`, `3.000001`) into
/// micro-credits, exactly (no floats).
pub fn parse_credits(s: &str) -> anyhow::Result<u64> {
    let s = s.trim();
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if whole.is_empty() && frac.is_empty() {
        bail!("empty credit amount");
    }
    if !whole.chars().all(|c| c.is_ascii_digit()) || !frac.chars().all(|c| c.is_ascii_digit()) {
        bail!("{s:?} is not a credit amount (use decimal credits like 12 or 0.5)");
    }
    if frac.len() > 6 {
        bail!("{s:?} has more than 6 decimals (1 micro-credit is the smallest unit)");
    }
    let w: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().context("credit amount too large")?
    };
    let f: u64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<6}").parse()?
    };
    w.checked_mul(1_000_000)
        .and_then(|m| m.checked_add(f))
        .with_context(|| format!("{s:?} credits is too large"))
}

/// The configuration after validation.
#[derive(Debug, Clone)]
pub struct Config {
    /// Region file.
    pub region: PathBuf,
    /// Folder of the sidecar's private files: signing key, outbox, state.
    pub state_dir: PathBuf,
    /// Authority URL.
    pub authority: String,
    /// Sidecar identity.
    pub sidecar_id: String,
    /// Bearer token, if any.
    pub token: Option<String>,
    /// CA certificate (PEM bytes) for an https authority.
    pub ca_cert: Option<Vec<u8>>,
    /// Tenants served.
    pub tenants: Vec<String>,
    /// HTTP bind address.
    pub http: SocketAddr,
    /// Emergency allowance per limit (micro-credits).
    pub emergency_allowance: u64,
    /// Lanes in the region.
    pub lanes: u32,
    /// Named tasks open at once in the pod (the region's task table).
    pub tasks: u32,
    /// Distinct agent and feature names the region can hold (its name table).
    pub names: u32,
    /// Control loop period.
    pub tick: Duration,
    /// Dead-process reclaim timeout.
    pub liveness_timeout: Duration,
    /// Default tier floors (per-mille of the local budget) when the policy has none.
    pub tier_floor_permille: [u32; 3],
    /// Overrun allowance per lane (micro-credits): see `--lane-overrun-allowance`.
    pub lane_overrun_allowance: u64,
}

/// Parses `--tier-floors` (`"0,100,250"`: per-mille for interactive, scheduler, background).
pub fn parse_floors(s: &str) -> anyhow::Result<[u32; 3]> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    if parts.len() != 3 {
        bail!(
            "--tier-floors {s:?}: give three per-mille values, for interactive, scheduler and background (e.g. 0,100,250)"
        );
    }
    let mut out = [0u32; 3];
    for (i, p) in parts.iter().enumerate() {
        let v: u32 = p.parse().with_context(|| {
            format!("--tier-floors {s:?}: {p:?} is not a whole number of per-mille")
        })?;
        if v > 1000 {
            bail!("--tier-floors {s:?}: {v} is more than 1000 per-mille");
        }
        out[i] = v;
    }
    Ok(out)
}
