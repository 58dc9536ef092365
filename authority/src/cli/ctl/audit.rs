//! `ctl audit`: verify the signed audit chain (on the authority, where the live tables
//! are checked against it too, or offline from an exported file with the authority's
//! public key) and export it.

use std::fmt::Write;
use std::path::PathBuf;

use anyhow::{Context, anyhow, bail};
use clap::Subcommand;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tollgate_ledger::TenantId;
use tollgate_ledger::audit::{VerifyOptions, VerifyReport};
use tollgate_proto::v1 as pb;

use super::connect::{Admin, status};

/// Audit commands.
#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Verify the audit chain. On the authority (default): every record's hash,
    /// signature and link, then the live tables against what the chain vouches for
    /// (every posting row, every grant's balance, the wallet totals); fails naming the
    /// first bad record or the first row that differs (table, row, column, the chain's
    /// value and the table's). Offline (--file, --public-key): an exported file, for the
    /// tenant it should belong to (--tenant, or --all-tenants for an operator's export)
    /// and with a head signed recently enough (--max-head-age or --head-after), so an
    /// export cut back to an old head, an empty export and another tenant's chain
    /// spliced in are refused.
    #[command(
        after_help = "Examples:\n  tollgate ctl audit verify --tenant acme\n  tollgate ctl audit verify --file acme-audit.jsonl --public-key <hex> --tenant acme --max-head-age 1h\n  tollgate ctl audit verify --file archive.jsonl --public-key <hex> --all-tenants --head-after 2026-11-30T00:00:00Z"
    )]
    Verify {
        /// Tenant. On the authority: whose chain to verify (default: every tenant; needs
        /// the admin token). Offline: the tenant the export must belong to; a line of
        /// any other tenant is refused.
        #[arg(long)]
        tenant: Option<String>,
        /// Offline: accept an export of several tenants (an operator's export) instead
        /// of naming the one tenant with --tenant; the tenants verified are listed.
        #[arg(long, conflicts_with = "tenant", requires = "file")]
        all_tenants: bool,
        /// Verify this exported file offline instead of asking the authority.
        #[arg(long, requires = "public_key")]
        file: Option<PathBuf>,
        /// The authority's public key (64 hex characters) for offline verification.
        #[arg(long)]
        public_key: Option<String>,
        /// Offline: refuse heads signed longer ago than this (e.g. 90s, 30m, 1h, 7d).
        /// An export cut back to an earlier head carries that head's older time.
        #[arg(long, requires = "file", conflicts_with = "head_after")]
        max_head_age: Option<String>,
        /// Offline: refuse heads signed before this time (RFC 3339 such as
        /// 2026-12-01T00:00:00Z, YYYY-MM-DD at UTC midnight, or unix seconds); for an
        /// archived export, the time it was made.
        #[arg(long, requires = "file")]
        head_after: Option<String>,
    },
    /// Export the signed chain (JSON lines) to a file, and print the public key.
    Export {
        /// Tenant (default: every tenant; needs the admin token).
        #[arg(long)]
        tenant: Option<String>,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
    },
}

/// What an offline verification expects of an export.
#[derive(Debug, Clone, Default)]
pub struct OfflineExpect {
    /// The tenant the export must belong to (`None` with `all_tenants`).
    pub tenant: Option<String>,
    /// Accept several tenants.
    pub all_tenants: bool,
    /// `--max-head-age`.
    pub max_head_age: Option<String>,
    /// `--head-after`.
    pub head_after: Option<String>,
}

/// The commands that need no authority: `verify --file`. `None` for the others.
pub fn offline(cmd: &AuditCmd) -> Option<anyhow::Result<String>> {
    match cmd {
        AuditCmd::Verify {
            file: Some(file),
            public_key,
            tenant,
            all_tenants,
            max_head_age,
            head_after,
        } => Some(verify_file(
            file,
            public_key.as_deref().unwrap_or_default(),
            &OfflineExpect {
                tenant: tenant.clone(),
                all_tenants: *all_tenants,
                max_head_age: max_head_age.clone(),
                head_after: head_after.clone(),
            },
        )),
        _ => None,
    }
}

/// Runs an audit command against the authority.
pub async fn run(cmd: AuditCmd, a: &mut Admin, out: &mut String) -> anyhow::Result<()> {
    match cmd {
        AuditCmd::Verify {
            tenant,
            all_tenants,
            max_head_age,
            head_after,
            ..
        } => {
            // The authority signs the head it checks against as it verifies: these
            // flags only make sense for a file.
            if all_tenants || max_head_age.is_some() || head_after.is_some() {
                bail!("--all-tenants, --max-head-age and --head-after apply to --file only");
            }
            let r = a
                .client
                .verify_audit(a.req(pb::VerifyAuditRequest {
                    tenant: tenant.unwrap_or_default(),
                }))
                .await
                .map_err(status)?
                .into_inner();
            if !r.ok {
                bail!(
                    "audit chain verification FAILED: tenant {}, record seq {}: {}",
                    r.bad_tenant,
                    r.bad_seq,
                    r.problem
                );
            }
            writeln!(
                out,
                "audit chain OK: {} records verified; tables match the chain: {} posting rows, {} grants, {} wallets",
                r.records_checked, r.postings_checked, r.grants_checked, r.wallets_checked
            )?;
        }
        AuditCmd::Export { tenant, out: path } => {
            let r = a
                .client
                .export_audit(a.req(pb::ExportAuditRequest {
                    tenant: tenant.clone().unwrap_or_default(),
                    jsonl: true,
                    ..Default::default()
                }))
                .await
                .map_err(status)?
                .into_inner();
            std::fs::write(&path, &r.export_jsonl)
                .with_context(|| format!("cannot write {}", path.display()))?;
            let lines = r.export_jsonl.iter().filter(|b| **b == b'\n').count();
            let key = hex::encode(&r.public_key);
            let who = match &tenant {
                Some(t) => format!("--tenant {t}"),
                None => "--all-tenants".into(),
            };
            writeln!(out, "wrote {} ({lines} lines)", path.display())?;
            writeln!(out, "public key: {key}")?;
            writeln!(
                out,
                "verify offline: tollgate ctl audit verify --file {} --public-key {key} {who} --max-head-age 1h",
                path.display(),
            )?;
        }
    }
    Ok(())
}

/// `90s`, `30m`, `1h`, `7d`, `2w` (or plain seconds) as seconds.
fn parse_age(s: &str) -> anyhow::Result<u64> {
    let s = s.trim();
    let bad = || anyhow!("--max-head-age {s:?}: give a duration like 90s, 30m, 1h or 7d");
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).ok_or_else(bad)
}

/// RFC 3339, `YYYY-MM-DD` (UTC midnight) or unix seconds, as unix seconds.
fn parse_after(s: &str) -> anyhow::Result<u64> {
    if let Ok(t) = OffsetDateTime::parse(s.trim(), &Rfc3339) {
        return u64::try_from(t.unix_timestamp())
            .map_err(|_| anyhow!("--head-after {s:?} is before 1970"));
    }
    super::units::parse_time("--head-after", s.trim())
        .map(|ms| ms / 1000)
        .map_err(|_| {
            anyhow!(
                "--head-after {s:?} is not a time: use RFC 3339 (2026-12-01T00:00:00Z), YYYY-MM-DD (UTC) or unix seconds"
            )
        })
}

/// Unix seconds as an RFC 3339 UTC time.
fn show_secs(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("unix {secs}"))
}

/// Verifies an exported file offline with the authority's public key, for the tenant
/// and head age `expect` names (see [`AuditCmd::Verify`]).
pub fn verify_file(
    file: &PathBuf,
    public_key_hex: &str,
    expect: &OfflineExpect,
) -> anyhow::Result<String> {
    let key = tollgate_ledger::parse_public_key(public_key_hex.trim())
        .map_err(|e| anyhow!("--public-key: {e}"))?;
    // A tenant verifying its export says who it is; an operator's export of everyone
    // says so explicitly. Without either, a chain spliced in from another tenant would
    // pass as part of the export.
    let tenant = match (&expect.tenant, expect.all_tenants) {
        (Some(t), false) => Some(TenantId::new(t.clone()).map_err(|e| anyhow!("--tenant: {e}"))?),
        (None, true) => None,
        (Some(_), true) => bail!("give --tenant or --all-tenants, not both"),
        (None, false) => bail!(
            "offline verification needs --tenant <id> (the tenant whose export this is) or --all-tenants (an operator's export)"
        ),
    };
    // The head's age is what catches an export cut back to an older head, so it is
    // never left unchecked: an archive is verified with --head-after its date.
    let now = OffsetDateTime::now_utc().unix_timestamp().max(0) as u64;
    let since = match (&expect.max_head_age, &expect.head_after) {
        (Some(age), None) => now.saturating_sub(parse_age(age)?),
        (None, Some(after)) => parse_after(after)?,
        (Some(_), Some(_)) => bail!("give --max-head-age or --head-after, not both"),
        (None, None) => bail!(
            "offline verification needs --max-head-age <duration> (e.g. 1h) or --head-after <time>: an export cut back to an old signed head is only caught by the head's age"
        ),
    };
    let opts = VerifyOptions {
        tenant,
        heads_signed_since: Some(since),
        now: Some(now),
        allow_empty: false,
    };
    let f = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    match tollgate_ledger::audit::verify_with(std::io::BufReader::new(f), &key, opts) {
        Ok(report) => Ok(describe(file, &report)),
        Err(e) => bail!("audit export {} FAILED verification: {e}", file.display()),
    }
}

fn describe(file: &std::path::Path, report: &VerifyReport) -> String {
    let mut s = format!(
        "audit export {} OK: {} records of {} tenant(s) verified\n",
        file.display(),
        report.records(),
        report.tenants.len()
    );
    for ((tenant, records, _), head) in report.tenants.iter().zip(&report.heads) {
        let at = head.signed_at.map_or("-".into(), show_secs);
        let _ = writeln!(
            s,
            "  tenant {tenant}: {records} records, head seq {} signed {at}",
            head.seq
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_and_times_parse() {
        assert_eq!(parse_age("90s").unwrap(), 90);
        assert_eq!(parse_age("30m").unwrap(), 1800);
        assert_eq!(parse_age("1h").unwrap(), 3600);
        assert_eq!(parse_age("7d").unwrap(), 604_800);
        assert_eq!(parse_age("120").unwrap(), 120);
        for bad in ["", "h", "1y", "-1h", "1.5h", "99999999999999999999w"] {
            assert!(parse_age(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_after("2026-12-01T00:00:00Z").unwrap(), 1_796_083_200);
        assert_eq!(parse_after("2026-12-01").unwrap(), 1_796_083_200);
        assert_eq!(parse_after("1796083200").unwrap(), 1_796_083_200);
        assert!(parse_after("yesterday").is_err());
        assert!(parse_after("1960-01-01T00:00:00Z").is_err());
        assert_eq!(show_secs(1_796_083_200), "2026-12-01T00:00:00Z");
    }
}
