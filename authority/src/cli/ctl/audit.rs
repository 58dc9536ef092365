//! `ctl audit`: verify the signed audit chain (on the authority, or offline from an
//! exported file with the authority's public key) and export it.

use std::fmt::Write;
use std::path::PathBuf;

use anyhow::{Context, anyhow, bail};
use clap::Subcommand;
use tollgate_proto::v1 as pb;

use super::connect::{Admin, status};

/// Audit commands.
#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Verify the audit chain: on the authority (default), or offline from an exported
    /// file with --file and --public-key. Fails naming the first bad record.
    Verify {
        /// Tenant (default: every tenant; needs the admin token).
        #[arg(long)]
        tenant: Option<String>,
        /// Verify this exported file offline instead of asking the authority.
        #[arg(long, requires = "public_key")]
        file: Option<PathBuf>,
        /// The authority's public key (64 hex characters) for offline verification.
        #[arg(long)]
        public_key: Option<String>,
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

/// The commands that need no authority: `verify --file`. `None` for the others.
pub fn offline(cmd: &AuditCmd) -> Option<anyhow::Result<String>> {
    match cmd {
        AuditCmd::Verify {
            file: Some(file),
            public_key,
            ..
        } => Some(verify_file(file, public_key.as_deref().unwrap_or_default())),
        _ => None,
    }
}

/// Runs an audit command against the authority.
pub async fn run(cmd: AuditCmd, a: &mut Admin, out: &mut String) -> anyhow::Result<()> {
    match cmd {
        AuditCmd::Verify { tenant, .. } => {
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
                "audit chain OK: {} records verified",
                r.records_checked
            )?;
        }
        AuditCmd::Export { tenant, out: path } => {
            let r = a
                .client
                .export_audit(a.req(pb::ExportAuditRequest {
                    tenant: tenant.unwrap_or_default(),
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
            writeln!(out, "wrote {} ({lines} lines)", path.display())?;
            writeln!(out, "public key: {key}")?;
            writeln!(
                out,
                "verify offline: tollgate ctl audit verify --file {} --public-key {key}",
                path.display(),
            )?;
        }
    }
    Ok(())
}

/// Verifies an exported file offline with the authority's public key.
pub fn verify_file(file: &PathBuf, public_key_hex: &str) -> anyhow::Result<String> {
    let key = tollgate_ledger::parse_public_key(public_key_hex.trim())
        .map_err(|e| anyhow!("--public-key: {e}"))?;
    let f = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    match tollgate_ledger::verify(std::io::BufReader::new(f), &key) {
        Ok(report) => Ok(format!(
            "audit export {} OK: {} records of {} tenant(s) verified\n",
            file.display(),
            report.records(),
            report.tenants.len()
        )),
        Err(e) => bail!("audit export {} FAILED verification: {e}", file.display()),
    }
}
