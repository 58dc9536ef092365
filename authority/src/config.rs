//! The authority's configuration file (TOML): sidecar credentials scoped to tenants, the
//! admin token, tenant read tokens, TLS, the audit signing key, the webhook secret and lease
//! timing. Every field has a safe default except the credentials themselves.
//!
//! ```toml
//! admin_token = "change-me-admin"          # or env TOLLGATE_ADMIN_TOKEN
//! signing_key = "/etc/tollgate/authority.key" # hex ed25519 seed (`tollgate authority keygen`)
//! webhook_secret = "whsec-change-me"       # HMAC-SHA256 key for alert webhooks
//! webhook_allow_private_targets = false    # true: webhooks may go to private/loopback addresses
//!
//! [tls]                                    # optional: serve gRPC over TLS (rustls)
//! cert = "/etc/tollgate/tls.crt"
//! key = "/etc/tollgate/tls.key"
//!
//! [[sidecars]]                             # one entry per sidecar credential
//! name = "pool-a"
//! token = "sc-secret-a"                    # or token_file = "/var/run/secrets/a"
//! tenants = ["acme", "globex"]             # "*" = every tenant
//!
//! [[readers]]                              # optional: tenant-scoped read-only tokens
//! token = "acme-reader"
//! tenants = ["acme"]
//!
//! [leases]
//! ttl_secs = 30            # a lease is valid this long
//! settle_grace_secs = 15   # after expiry, usage still posts against its hold this long
//! relearn_grace_secs = 5   # after a restart, grant nothing new this long
//! max_lease_micro = 0      # cap on one lease (0 = no cap beyond fair share)
//! min_lease_micro = 1000   # smaller grants are not worth a round trip
//! overrun_allowance_micro = 1000000  # charged past a sidecar's holds per batch, at most
//! overrun_allowance_ppm = 100000     # ... plus this many millionths of its holds
//! ```
//!
//! **Overrun allowance.** Per batch and tenant, the authority charges at most
//! `overrun_allowance_micro + overrun_allowance_ppm / 1e6 x (the sending sidecar's open
//! holds)` past those holds (its wallet leases). Honest sidecars stay inside it (a call
//! that cost more than it reserved, a batch posted just after its lease ended); anything
//! past it is recorded as suspected tampering (metric
//! `tollgate_authority_suspected_tampering_total`, a warning, and the batch's audit
//! record) and not charged. A sidecar `emergency_allowance` spent during an outage is
//! usage past its holds too: keep `overrun_allowance_micro` at least that large.
//!
//! Top-level `batch_retention_days = 30` (0 = forever) sets how long usage batches'
//! idempotency keys are kept.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// What is wrong with a configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown/mistyped fields.
    #[error("config file {path} is not valid: {message}")]
    Parse {
        /// File.
        path: PathBuf,
        /// What the parser said (line and column included).
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("config: {0}")]
    Invalid(String),
}

/// TLS certificate and key (PEM) paths.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain, PEM.
    pub cert: PathBuf,
    /// Private key, PEM.
    pub key: PathBuf,
}

/// One sidecar credential.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SidecarCredential {
    /// Name for logs and metrics.
    pub name: String,
    /// Bearer token (inline).
    #[serde(default)]
    pub token: Option<String>,
    /// Or a file holding the token (trailing whitespace ignored).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Tenants this credential may serve; `"*"` means all.
    pub tenants: Vec<String>,
}

/// A tenant-scoped read-only credential (balance, statement, audit export).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ReaderCredential {
    /// Bearer token.
    pub token: String,
    /// Tenants it may read.
    pub tenants: Vec<String>,
}

/// Lease timing and sizing.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LeaseConfig {
    /// Lease lifetime, seconds.
    pub ttl_secs: u64,
    /// After a lease's expiry its hold stays open this long for late batches, seconds.
    pub settle_grace_secs: u64,
    /// After start, no new leases for this long (sidecars re-register first), seconds.
    pub relearn_grace_secs: u64,
    /// Largest single lease, micro-credits (0 = unbounded).
    pub max_lease_micro: u64,
    /// Smallest grant worth sending, micro-credits.
    pub min_lease_micro: u64,
    /// Charged past a sidecar's holds per batch and tenant, at most (micro-credits),
    /// plus [`LeaseConfig::overrun_allowance_ppm`]; the rest is suspected tampering.
    pub overrun_allowance_micro: u64,
    /// Millionths of the sender's open holds allowed past them, on top.
    pub overrun_allowance_ppm: u32,
}

impl LeaseConfig {
    /// The ledger's bound on usage charged past a sidecar's holds.
    pub fn overrun_allowance(&self) -> tollgate_ledger::OverrunAllowance {
        tollgate_ledger::OverrunAllowance {
            absolute: tollgate_core::Credits(self.overrun_allowance_micro),
            fraction_ppm: self.overrun_allowance_ppm,
        }
    }
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            ttl_secs: 30,
            settle_grace_secs: 15,
            relearn_grace_secs: 5,
            max_lease_micro: 0,
            min_lease_micro: 1_000,
            // One credit, plus a tenth of the holds.
            overrun_allowance_micro: 1_000_000,
            overrun_allowance_ppm: 100_000,
        }
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Token for the admin service.
    #[serde(default)]
    pub admin_token: Option<String>,
    /// Path of the audit signing key (hex seed).
    #[serde(default)]
    pub signing_key: Option<PathBuf>,
    /// HMAC key for alert webhooks.
    #[serde(default)]
    pub webhook_secret: Option<String>,
    /// Allow alert webhooks to private, loopback, link-local, CGNAT and IPv6 ULA addresses
    /// (see [`crate::webhook::forbidden_ip`]). Off by default: a rule's URL must not make
    /// the authority reach into its own network (cloud metadata, admin ports).
    #[serde(default)]
    pub webhook_allow_private_targets: bool,
    /// TLS for the gRPC listener.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Sidecar credentials.
    #[serde(default)]
    pub sidecars: Vec<SidecarCredential>,
    /// Read-only tenant credentials.
    #[serde(default)]
    pub readers: Vec<ReaderCredential>,
    /// Lease timing.
    #[serde(default)]
    pub leases: LeaseConfig,
    /// Days a usage batch's idempotency key is kept (default 30; 0 = forever). Older keys
    /// are pruned; each sidecar keeps a watermark (the highest sequence pruned), so a
    /// re-sent old batch is still refused as a duplicate. Keep it longer than a sidecar
    /// may hold an unacknowledged batch in its outbox.
    #[serde(default)]
    pub batch_retention_days: Option<u64>,
}

/// Default of [`Config::batch_retention_days`].
pub const DEFAULT_BATCH_RETENTION_DAYS: u64 = 30;

impl Config {
    /// Batch-key retention in seconds (0 = forever).
    pub fn batch_retention_secs(&self) -> u64 {
        self.batch_retention_days
            .unwrap_or(DEFAULT_BATCH_RETENTION_DAYS)
            .saturating_mul(86_400)
    }

    /// Reads and validates a TOML file. Relative `token_file` paths resolve against the
    /// file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut cfg = Config::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for sc in &mut cfg.sidecars {
            if let Some(f) = sc.token_file.take() {
                let f = if f.is_relative() { base.join(f) } else { f };
                let tok = std::fs::read_to_string(&f).map_err(|source| ConfigError::Read {
                    path: f.clone(),
                    source,
                })?;
                sc.token = Some(tok.trim_end().to_string());
            }
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses TOML text (no file references resolved) and validates it.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<text>"),
            message: e.to_string(),
        })?;
        Ok(cfg)
    }

    /// Checks consistency: tokens present, non-empty and unique; tenants listed; timings
    /// non-zero.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut seen = std::collections::HashSet::new();
        if let Some(t) = &self.admin_token {
            if t.trim().is_empty() {
                return Err(ConfigError::Invalid("admin_token is empty".into()));
            }
            seen.insert(t.clone());
        }
        for (i, sc) in self.sidecars.iter().enumerate() {
            let Some(tok) = &sc.token else {
                return Err(ConfigError::Invalid(format!(
                    "sidecars[{i}] ({}) has neither token nor token_file",
                    sc.name
                )));
            };
            if tok.trim().is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "sidecars[{i}] ({}) has an empty token",
                    sc.name
                )));
            }
            if sc.tenants.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "sidecars[{i}] ({}) lists no tenants (use [\"*\"] for all)",
                    sc.name
                )));
            }
            if !seen.insert(tok.clone()) {
                return Err(ConfigError::Invalid(format!(
                    "sidecars[{i}] ({}) reuses a token of another credential; tokens must be unique",
                    sc.name
                )));
            }
        }
        for (i, r) in self.readers.iter().enumerate() {
            if r.token.trim().is_empty() || r.tenants.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "readers[{i}] needs a non-empty token and at least one tenant"
                )));
            }
            if !seen.insert(r.token.clone()) {
                return Err(ConfigError::Invalid(format!(
                    "readers[{i}] reuses a token of another credential; tokens must be unique"
                )));
            }
        }
        if self.leases.ttl_secs == 0 {
            return Err(ConfigError::Invalid(
                "leases.ttl_secs must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_file() {
        let cfg = Config::parse(
            r#"
admin_token = "adm"
webhook_secret = "wh"
[[sidecars]]
name = "a"
token = "t1"
tenants = ["acme"]
[[readers]]
token = "r1"
tenants = ["acme"]
[leases]
ttl_secs = 10
"#,
        )
        .unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.sidecars[0].tenants, vec!["acme"]);
        assert_eq!(cfg.leases.ttl_secs, 10);
        assert_eq!(cfg.leases.settle_grace_secs, 15);
        assert!(
            !cfg.webhook_allow_private_targets,
            "private targets are off by default"
        );
        let cfg = Config::parse("webhook_allow_private_targets = true").unwrap();
        assert!(cfg.webhook_allow_private_targets);
    }

    #[test]
    fn batch_retention_defaults_to_30_days_and_0_keeps_forever() {
        assert_eq!(Config::default().batch_retention_secs(), 30 * 86_400);
        let c = Config::parse("batch_retention_days = 0").unwrap();
        assert_eq!(c.batch_retention_secs(), 0);
        let c = Config::parse("batch_retention_days = 7").unwrap();
        assert_eq!(c.batch_retention_secs(), 7 * 86_400);
        assert!(Config::parse("batch_retention_days = -1").is_err());
    }

    #[test]
    fn rejects_unknown_fields_and_duplicate_tokens() {
        let e = Config::parse("admin_tokn = \"x\"").unwrap_err();
        assert!(e.to_string().contains("admin_tokn"), "{e}");
        let cfg = Config::parse(
            r#"
admin_token = "same"
[[sidecars]]
name = "a"
token = "same"
tenants = ["acme"]
"#,
        )
        .unwrap();
        let e = cfg.validate().unwrap_err();
        assert!(e.to_string().contains("reuses a token"), "{e}");
    }
}
