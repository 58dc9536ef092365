//! The signed audit chain.
//!
//! **Invariant.** Every credit movement of a tenant (grant, hold, post, void, expire,
//! reset, adjustment, usage posting) and every alert is one [`AuditRecord`] in that
//! tenant's chain, appended in the same store transaction as the movement itself. Record
//! `n` (from 1) carries `prev_hash` = the hash of record `n - 1` (32 zero bytes for
//! record 1), and
//!
//! ```text
//! hash = SHA-256("tollgate-audit-v1\0" || len(tenant) as u32 BE || tenant
//!                || seq as u64 BE || at as u64 BE || prev_hash || body)
//! signature = ed25519(authority key, "tollgate-audit-sig-v1\0" || hash)
//! ```
//!
//! where `body` is the record's canonical encoding: the compact JSON of its
//! [`AuditEvent`] exactly as stored (verification hashes the stored bytes, never a
//! re-encoding). So an edited record fails its hash (or, if the hash was recomputed, its
//! signature); a dropped or reordered record breaks the sequence numbers and the
//! `prev_hash` link of the record after it.
//!
//! **Per-tenant chains.** Each tenant has its own chain (its head, `seq` and `hash`, lives
//! on the tenant's wallet row and is locked with it), so a tenant verifies its own export
//! without seeing anyone else's records, and two tenants' postings never contend for
//! one chain head (which keeps multi-replica PostgreSQL writers independent).
//!
//! **Export.** JSON lines: a [`ExportLine::Header`], then each tenant's records in
//! sequence order, then one signed [`ExportLine::Head`] per tenant: the chain head as the
//! wallet row records it at export time. The head catches a dropped *last* record, which
//! no later record could. Limit: someone who can rewrite the database can drop the
//! newest records *and* roll the wallet's head back; an export or head kept by the tenant
//! earlier catches that (compare `seq`), nothing inside one database can.
//!
//! [`verify`] needs only the export and the authority's public key.

use std::collections::BTreeMap;
use std::io::BufRead;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tollgate_core::Credits;

use crate::clock::Timestamp;
use crate::error::LedgerError;
use crate::grant::{GrantKind, ResetPeriod};
use crate::hold::{Funding, HoldPart};
use crate::ids::{BatchKey, GrantId, HoldId, TenantId};
use crate::policy::AlertCondition;

const HASH_DOMAIN: &[u8] = b"tollgate-audit-v1\0";
const SIG_DOMAIN: &[u8] = b"tollgate-audit-sig-v1\0";
const HEAD_DOMAIN: &[u8] = b"tollgate-audit-head-v1\0";
/// `format` field of an export header.
pub const EXPORT_FORMAT: &str = "tollgate-audit-export";
/// Version of the export format (and of the hash rule above).
pub const EXPORT_VERSION: u32 = 1;

/// A 32-byte SHA-256 hash.
pub type Hash = [u8; 32];
/// The `prev_hash` of record 1.
pub const GENESIS_HASH: Hash = [0u8; 32];

/// A wallet's totals after a movement, so each audit record states the resulting
/// balances and a tenant can follow its wallet from its export alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct WalletTotals {
    /// Ever granted.
    pub granted: Credits,
    /// Available in grants (started or not).
    pub available: Credits,
    /// Held from grants.
    pub held: Credits,
    /// Consumed from grants.
    pub consumed: Credits,
    /// Expired.
    pub expired: Credits,
    /// Plan-funded credits held.
    pub plan_held: Credits,
    /// Plan-funded credits consumed (all time, list price).
    pub plan_consumed: Credits,
    /// Overrun (all time, unbilled).
    pub overrun: Credits,
}

/// Why a hold ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldEnd {
    /// Posted (by amount, or released after draws).
    Posted,
    /// Voided by its owner or an admin.
    Voided,
    /// Timed out.
    Expired,
}

/// Credits of one usage posting, as the audit record lists them.
///
/// Records written before attribution reached the ledger have no `agent_instance`: their
/// `agent` is the instance. The attribution fields are left out when empty or zero, so
/// the bodies stay short.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditPosting {
    /// The agent's name ("" = unnamed).
    pub agent: String,
    /// The agent instance.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub agent_instance: String,
    /// Model.
    pub model: String,
    /// Feature.
    pub feature: String,
    /// Task.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub task: String,
    /// Hold drawn from, if any.
    pub hold: Option<HoldId>,
    /// Source.
    pub funding: Funding,
    /// Credits.
    pub amount: Credits,
    /// Records.
    pub records: u64,
    /// Outcomes.
    #[serde(default, skip_serializing_if = "u64_is_zero")]
    pub outcomes: u64,
    /// Agentic Work Units.
    #[serde(default, skip_serializing_if = "u64_is_zero")]
    pub work_units: u64,
}

fn u64_is_zero(v: &u64) -> bool {
    *v == 0
}

/// What happened: the body of an audit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum AuditEvent {
    /// Credits granted.
    Grant {
        /// Grant.
        grant: GrantId,
        /// Kind.
        kind: GrantKind,
        /// Amount.
        amount: Credits,
        /// Priority.
        priority: u32,
        /// Start.
        starts_at: Timestamp,
        /// Expiry.
        expires_at: Option<Timestamp>,
        /// Reset period.
        reset: Option<ResetPeriod>,
        /// Reference.
        reference: Option<String>,
        /// Totals after.
        after: WalletTotals,
    },
    /// A hold was placed.
    Hold {
        /// Hold.
        hold: HoldId,
        /// Owner (sidecar).
        owner: String,
        /// Amount.
        amount: Credits,
        /// Timeout.
        expires_at: Timestamp,
        /// Sources.
        parts: Vec<HoldPart>,
        /// Totals after.
        after: WalletTotals,
    },
    /// A hold ended (posted, voided or expired).
    HoldEnded {
        /// Hold.
        hold: HoldId,
        /// How.
        end: HoldEnd,
        /// Credits drawn in total.
        drawn: Credits,
        /// Credits consumed by this event (a post by amount); zero otherwise.
        consumed_now: Credits,
        /// Undrawn credits returned to their grants.
        returned: Credits,
        /// Undrawn credits that expired (their grant expired or reset meanwhile).
        expired: Credits,
        /// Totals after.
        after: WalletTotals,
    },
    /// Part of an open hold's undrawn credits was handed back early (its lease was
    /// returned in part); the hold stays open.
    HoldReduced {
        /// Hold.
        hold: HoldId,
        /// Credits returned to their grants (or plan room freed).
        returned: Credits,
        /// Credits that expired instead (their grant lapsed meanwhile).
        expired: Credits,
        /// Totals after.
        after: WalletTotals,
    },
    /// A usage batch was posted for this tenant.
    Usage {
        /// Batch.
        batch: BatchKey,
        /// Records of this tenant.
        records: u64,
        /// Authority's rating.
        rated: Credits,
        /// Client's rating.
        client_amount: Credits,
        /// Postings.
        postings: Vec<AuditPosting>,
        /// Overrun (unbilled).
        overrun: Credits,
        /// Suspected tampering: usage past the sender's holds beyond the overrun
        /// allowance, not charged. Absent when zero, so older records encode as before.
        #[serde(default, skip_serializing_if = "credits_are_zero")]
        suspect: Credits,
        /// Records the authority could not rate (unknown model, overflow), charged by the
        /// unrateable-record rule. Absent when zero.
        #[serde(default, skip_serializing_if = "u64_is_zero")]
        unrated_records: u64,
        /// What those records were charged. Absent when zero.
        #[serde(default, skip_serializing_if = "credits_are_zero")]
        unrated_amount: Credits,
        /// Records charged as their sender stated (pre-rated or aggregate). Absent when zero.
        #[serde(default, skip_serializing_if = "u64_is_zero")]
        pre_rated_records: u64,
        /// Batch digest as sent, if known.
        digest: Option<String>,
        /// Totals after.
        after: WalletTotals,
    },
    /// A grant expired: its available credits expired.
    Expire {
        /// Grant.
        grant: GrantId,
        /// Credits expired.
        expired: Credits,
        /// Totals after.
        after: WalletTotals,
    },
    /// A recurring grant reset: unused credits expired and it was refilled.
    Reset {
        /// Grant.
        grant: GrantId,
        /// New period number.
        period: u32,
        /// Period start.
        period_start: Timestamp,
        /// Unused credits that expired.
        expired: Credits,
        /// Credits put in.
        refilled: Credits,
        /// Totals after.
        after: WalletTotals,
    },
    /// An administrative adjustment.
    Adjustment {
        /// Grant adjusted.
        grant: GrantId,
        /// Credits added (granted and available).
        credit: Credits,
        /// Credits removed from available (counted as expired).
        debit: Credits,
        /// Why.
        reason: String,
        /// Totals after.
        after: WalletTotals,
    },
    /// An alert fired.
    Alert {
        /// Rule.
        rule_id: String,
        /// Condition.
        condition: AlertCondition,
        /// Spend this month.
        period_spent: Credits,
        /// Budget.
        budget: Credits,
        /// Burn per hour.
        burn_rate_1h: Credits,
        /// Projected depletion.
        projected_depletion_at: Option<Timestamp>,
    },
    /// The tenant's configuration changed (plan, order, alert rules): not a movement,
    /// but it changes how later movements are computed, so it is on the record.
    Config {
        /// The new configuration, as JSON.
        config: serde_json::Value,
    },
}

impl AuditEvent {
    /// Short name of the event kind.
    pub fn kind(&self) -> &'static str {
        match self {
            AuditEvent::Grant { .. } => "grant",
            AuditEvent::Hold { .. } => "hold",
            AuditEvent::HoldEnded { .. } => "hold_ended",
            AuditEvent::HoldReduced { .. } => "hold_reduced",
            AuditEvent::Usage { .. } => "usage",
            AuditEvent::Expire { .. } => "expire",
            AuditEvent::Reset { .. } => "reset",
            AuditEvent::Adjustment { .. } => "adjustment",
            AuditEvent::Alert { .. } => "alert",
            AuditEvent::Config { .. } => "config",
        }
    }

    /// The canonical encoding (compact JSON, fields in declaration order).
    pub fn encode(&self) -> String {
        // Serializing these plain structs cannot fail (no maps with non-string keys).
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// One record of a tenant's chain, as stored and exported. Hashes and signatures are
/// lower-case hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Tenant whose chain this is.
    pub tenant: TenantId,
    /// Position in the chain, from 1.
    pub seq: u64,
    /// Time of the movement.
    pub at: Timestamp,
    /// Hash of the previous record (hex).
    pub prev_hash: String,
    /// Canonical encoding of the [`AuditEvent`] (hashed exactly as stored).
    pub body: String,
    /// This record's hash (hex).
    pub hash: String,
    /// ed25519 signature over the hash (hex).
    pub signature: String,
}

impl AuditRecord {
    /// Decode the body.
    pub fn event(&self) -> Result<AuditEvent, LedgerError> {
        serde_json::from_str(&self.body).map_err(|e| {
            LedgerError::Corrupt(format!(
                "audit record {} of tenant {} has an unreadable body: {e}",
                self.seq, self.tenant
            ))
        })
    }
}

/// The head of a tenant's chain: last sequence number and hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainHead {
    /// Last sequence number (0 for an empty chain).
    pub seq: u64,
    /// Hash of the last record ([`GENESIS_HASH`] for an empty chain).
    pub hash: Hash,
}

impl Default for ChainHead {
    fn default() -> Self {
        ChainHead {
            seq: 0,
            hash: GENESIS_HASH,
        }
    }
}

/// Compute a record's hash from its parts.
pub fn record_hash(tenant: &str, seq: u64, at: Timestamp, prev: &Hash, body: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update(HASH_DOMAIN);
    h.update((tenant.len() as u32).to_be_bytes());
    h.update(tenant.as_bytes());
    h.update(seq.to_be_bytes());
    h.update(at.to_be_bytes());
    h.update(prev);
    h.update(body);
    h.finalize().into()
}

fn head_message(tenant: &str, seq: u64, hash: &Hash) -> Vec<u8> {
    let mut m = Vec::with_capacity(HEAD_DOMAIN.len() + 4 + tenant.len() + 8 + 32);
    m.extend_from_slice(HEAD_DOMAIN);
    m.extend_from_slice(&(tenant.len() as u32).to_be_bytes());
    m.extend_from_slice(tenant.as_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(hash);
    m
}

fn sig_message(hash: &Hash) -> [u8; SIG_DOMAIN.len() + 32] {
    let mut m = [0u8; SIG_DOMAIN.len() + 32];
    m[..SIG_DOMAIN.len()].copy_from_slice(SIG_DOMAIN);
    m[SIG_DOMAIN.len()..].copy_from_slice(hash);
    m
}

/// The authority's audit signing key.
#[derive(Clone)]
pub struct AuditSigner {
    key: SigningKey,
}

impl std::fmt::Debug for AuditSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditSigner")
            .field("public_key", &self.public_key_hex())
            .finish_non_exhaustive()
    }
}

impl AuditSigner {
    /// A signer from a 32-byte ed25519 secret seed.
    pub fn from_seed(seed: &[u8; 32]) -> AuditSigner {
        AuditSigner {
            key: SigningKey::from_bytes(seed),
        }
    }

    /// A signer from a hex-encoded 32-byte seed (as in a key file).
    pub fn from_seed_hex(seed_hex: &str) -> Result<AuditSigner, LedgerError> {
        let seed = decode_hex32(seed_hex.trim()).ok_or_else(|| {
            LedgerError::InvalidInput(
                "audit signing key must be 64 hex characters (a 32-byte ed25519 seed)".into(),
            )
        })?;
        Ok(AuditSigner::from_seed(&seed))
    }

    /// A fresh random key from the operating system's random source.
    pub fn generate() -> Result<AuditSigner, LedgerError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed)
            .map_err(|e| LedgerError::store(format!("no randomness for a new audit key: {e}")))?;
        Ok(AuditSigner::from_seed(&seed))
    }

    /// The secret seed as hex (to write a key file; keep it secret).
    pub fn seed_hex(&self) -> String {
        hex::encode(self.key.to_bytes())
    }

    /// The public key verifiers need.
    pub fn public_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// The public key as hex.
    pub fn public_key_hex(&self) -> String {
        hex::encode(self.key.verifying_key().to_bytes())
    }

    /// Build the next record of a chain and advance the head.
    pub fn append(
        &self,
        head: &mut ChainHead,
        tenant: &TenantId,
        at: Timestamp,
        event: &AuditEvent,
    ) -> AuditRecord {
        let body = event.encode();
        let seq = head.seq + 1;
        let hash = record_hash(tenant.as_str(), seq, at, &head.hash, body.as_bytes());
        let sig = self.key.sign(&sig_message(&hash));
        let rec = AuditRecord {
            tenant: tenant.clone(),
            seq,
            at,
            prev_hash: hex::encode(head.hash),
            body,
            hash: hex::encode(hash),
            signature: hex::encode(sig.to_bytes()),
        };
        *head = ChainHead { seq, hash };
        rec
    }

    /// A signed head line for an export.
    pub fn sign_head(&self, tenant: &TenantId, head: &ChainHead) -> ExportLine {
        let sig = self
            .key
            .sign(&head_message(tenant.as_str(), head.seq, &head.hash));
        ExportLine::Head {
            tenant: tenant.clone(),
            seq: head.seq,
            hash: hex::encode(head.hash),
            signature: hex::encode(sig.to_bytes()),
        }
    }
}

/// Parse a hex public key (64 hex characters).
pub fn parse_public_key(hex_key: &str) -> Result<VerifyingKey, LedgerError> {
    let bytes = decode_hex32(hex_key.trim()).ok_or_else(|| {
        LedgerError::InvalidInput(
            "public key must be 64 hex characters (a 32-byte ed25519 key)".into(),
        )
    })?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| {
        LedgerError::InvalidInput(format!("public key is not a valid ed25519 point: {e}"))
    })
}

fn decode_hex32(s: &str) -> Option<[u8; 32]> {
    let v = hex::decode(s).ok()?;
    v.try_into().ok()
}

fn decode_sig(s: &str) -> Option<Signature> {
    let v = hex::decode(s).ok()?;
    let b: [u8; 64] = v.try_into().ok()?;
    Some(Signature::from_bytes(&b))
}

/// One line of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ExportLine {
    /// First line.
    Header {
        /// Always [`EXPORT_FORMAT`].
        format: String,
        /// [`EXPORT_VERSION`].
        version: u32,
        /// Public key of the signer (informational: verify with a key you trust).
        public_key: String,
        /// Export time.
        exported_at: Timestamp,
    },
    /// An audit record.
    Record(AuditRecord),
    /// A tenant's chain head at export time, signed.
    Head {
        /// Tenant.
        tenant: TenantId,
        /// Last sequence number.
        seq: u64,
        /// Hash of the last record (hex).
        hash: String,
        /// Signature over the head (hex).
        signature: String,
    },
}

/// Writes an export incrementally (so a long chain is never held in memory): the
/// header at creation, records as they come, and the signed heads at [`finish`].
///
/// [`finish`]: ExportWriter::finish
pub struct ExportWriter<'a, W: std::io::Write> {
    out: W,
    signer: &'a AuditSigner,
    heads: Vec<(TenantId, ChainHead)>,
}

fn io_err(e: std::io::Error) -> LedgerError {
    LedgerError::Io(format!("writing the audit export: {e}"))
}

fn write_line<W: std::io::Write>(out: &mut W, l: &ExportLine) -> Result<(), LedgerError> {
    let s = serde_json::to_string(l).map_err(|e| LedgerError::Io(e.to_string()))?;
    out.write_all(s.as_bytes()).map_err(io_err)?;
    out.write_all(b"\n").map_err(io_err)
}

impl<'a, W: std::io::Write> ExportWriter<'a, W> {
    /// Start an export (writes the header line).
    pub fn new(
        mut out: W,
        signer: &'a AuditSigner,
        exported_at: Timestamp,
    ) -> Result<Self, LedgerError> {
        write_line(
            &mut out,
            &ExportLine::Header {
                format: EXPORT_FORMAT.into(),
                version: EXPORT_VERSION,
                public_key: signer.public_key_hex(),
                exported_at,
            },
        )?;
        Ok(ExportWriter {
            out,
            signer,
            heads: Vec::new(),
        })
    }

    /// Write one record (a tenant's records must come in sequence order).
    pub fn record(&mut self, r: &AuditRecord) -> Result<(), LedgerError> {
        write_line(&mut self.out, &ExportLine::Record(r.clone()))
    }

    /// Note a tenant's head; heads are signed and written by [`ExportWriter::finish`].
    pub fn head(&mut self, tenant: &TenantId, head: ChainHead) {
        self.heads.push((tenant.clone(), head));
    }

    /// Write the signed heads, flush, and hand back the writer.
    pub fn finish(mut self) -> Result<W, LedgerError> {
        for (t, h) in &self.heads {
            let line = self.signer.sign_head(t, h);
            write_line(&mut self.out, &line)?;
        }
        self.out.flush().map_err(io_err)?;
        Ok(self.out)
    }
}

/// Write an export: header, each tenant's records (in order), then each tenant's head.
pub fn write_export<W: std::io::Write>(
    out: W,
    signer: &AuditSigner,
    exported_at: Timestamp,
    chains: &[(TenantId, ChainHead, Vec<AuditRecord>)],
) -> Result<(), LedgerError> {
    let mut w = ExportWriter::new(out, signer, exported_at)?;
    for (tenant, head, records) in chains {
        for r in records {
            w.record(r)?;
        }
        w.head(tenant, *head);
    }
    w.finish().map(|_| ())
}

/// What is wrong with a record (or the export around it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyFailure {
    /// The line is not valid JSON of an export line.
    #[error("line is not a valid export line: {0}")]
    Malformed(String),
    /// The first line is not a header of a known version.
    #[error("missing or unsupported export header: {0}")]
    BadHeader(String),
    /// The record's hash does not match its contents: the record was edited.
    #[error("hash does not match the record's contents: the record was edited")]
    HashMismatch,
    /// The signature does not verify: forged, or edited with the hash recomputed.
    #[error(
        "signature does not verify with the given public key: the record was altered or signed by another key"
    )]
    BadSignature,
    /// A sequence number out of place: a record before it was dropped, or records were
    /// reordered.
    #[error(
        "expected sequence number {expected}, found {found}: a record was dropped or records were reordered"
    )]
    SeqGap {
        /// The number that should be here.
        expected: u64,
        /// The number found.
        found: u64,
    },
    /// `prev_hash` does not match the previous record's hash.
    #[error(
        "prev_hash does not match the previous record's hash: a record was dropped, inserted or reordered"
    )]
    BrokenLink,
    /// The signed head names a later (or different) last record than the export has.
    #[error(
        "the signed head says the chain ends at sequence {head_seq}, the export's last record is {last_seq}: records were dropped from the end, or the chain was altered"
    )]
    HeadMismatch {
        /// Head's sequence number.
        head_seq: u64,
        /// Last record seen.
        last_seq: u64,
    },
    /// The head's signature does not verify.
    #[error("the chain head's signature does not verify with the given public key")]
    BadHeadSignature,
    /// A tenant's records have no signed head.
    #[error("no signed head line for this tenant: the export is truncated")]
    MissingHead,
}

/// A verification failure, naming the record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit verification failed at line {line}{}{}: {failure}",
    .tenant.as_ref().map(|t| format!(", tenant {t}")).unwrap_or_default(),
    .seq.map(|s| format!(", record seq {s}")).unwrap_or_default())]
pub struct VerifyError {
    /// 1-based line number in the export.
    pub line: usize,
    /// Tenant of the record, if known.
    pub tenant: Option<TenantId>,
    /// Sequence number of the record (as written in it), if known.
    pub seq: Option<u64>,
    /// What failed.
    pub failure: VerifyFailure,
}

/// A verified export: per tenant, the number of records and the head.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VerifyReport {
    /// Tenant, records verified, head sequence number.
    pub tenants: Vec<(TenantId, u64, u64)>,
}

impl VerifyReport {
    /// Records verified in total.
    pub fn records(&self) -> u64 {
        self.tenants.iter().map(|t| t.1).sum()
    }
}

/// Per-tenant verification state.
#[derive(Debug)]
struct ChainState {
    head: ChainHead,
    records: u64,
    signed_head: Option<u64>,
}

/// Incremental verification of an export, line by line (what [`verify`] does over a
/// reader); use it to verify a stream without holding it in memory.
#[derive(Debug)]
pub struct Verifier {
    key: VerifyingKey,
    chains: BTreeMap<TenantId, ChainState>,
    saw_header: bool,
    line: usize,
}

impl Verifier {
    /// A verifier trusting `public_key`.
    pub fn new(public_key: &VerifyingKey) -> Verifier {
        Verifier {
            key: *public_key,
            chains: BTreeMap::new(),
            saw_header: false,
            line: 0,
        }
    }

    fn fail(
        &self,
        tenant: Option<&TenantId>,
        seq: Option<u64>,
        failure: VerifyFailure,
    ) -> VerifyError {
        VerifyError {
            line: self.line,
            tenant: tenant.cloned(),
            seq,
            failure,
        }
    }

    /// Check the next line of the export (text, without the newline).
    pub fn feed_line(&mut self, line: &str) -> Result<(), VerifyError> {
        self.line += 1;
        if line.trim().is_empty() {
            return Ok(());
        }
        let parsed: ExportLine = serde_json::from_str(line)
            .map_err(|e| self.fail(None, None, VerifyFailure::Malformed(e.to_string())))?;
        self.check(parsed)
    }

    /// Check the next line of the export, already parsed (counts as one line).
    pub fn feed(&mut self, parsed: ExportLine) -> Result<(), VerifyError> {
        self.line += 1;
        self.check(parsed)
    }

    fn check(&mut self, parsed: ExportLine) -> Result<(), VerifyError> {
        if !self.saw_header {
            return match &parsed {
                ExportLine::Header {
                    format, version, ..
                } if format == EXPORT_FORMAT && *version == EXPORT_VERSION => {
                    self.saw_header = true;
                    Ok(())
                }
                _ => Err(self.fail(
                    None,
                    None,
                    VerifyFailure::BadHeader(format!(
                        "line 1 must be a {EXPORT_FORMAT} header of version {EXPORT_VERSION}"
                    )),
                )),
            };
        }
        match parsed {
            ExportLine::Header { .. } => Err(self.fail(
                None,
                None,
                VerifyFailure::BadHeader("a second header inside the export".into()),
            )),
            ExportLine::Record(r) => self.record(&r),
            ExportLine::Head {
                tenant,
                seq,
                hash,
                signature,
            } => self.head(&tenant, seq, &hash, &signature),
        }
    }

    fn record(&mut self, r: &AuditRecord) -> Result<(), VerifyError> {
        let t = Some(&r.tenant);
        let s = Some(r.seq);
        let (head, signed) = match self.chains.get(&r.tenant) {
            Some(c) => (c.head, c.signed_head.is_some()),
            None => (ChainHead::default(), false),
        };
        if signed {
            return Err(self.fail(
                t,
                s,
                VerifyFailure::Malformed("a record after its tenant's head line".into()),
            ));
        }
        let expected = head.seq + 1;
        if r.seq != expected {
            return Err(self.fail(
                t,
                s,
                VerifyFailure::SeqGap {
                    expected,
                    found: r.seq,
                },
            ));
        }
        if decode_hex32(&r.prev_hash) != Some(head.hash) {
            return Err(self.fail(t, s, VerifyFailure::BrokenLink));
        }
        let hash = record_hash(
            r.tenant.as_str(),
            r.seq,
            r.at,
            &head.hash,
            r.body.as_bytes(),
        );
        if decode_hex32(&r.hash) != Some(hash) {
            return Err(self.fail(t, s, VerifyFailure::HashMismatch));
        }
        let ok = decode_sig(&r.signature)
            .is_some_and(|sig| self.key.verify_strict(&sig_message(&hash), &sig).is_ok());
        if !ok {
            return Err(self.fail(t, s, VerifyFailure::BadSignature));
        }
        let chain = self.chains.entry(r.tenant.clone()).or_insert(ChainState {
            head: ChainHead::default(),
            records: 0,
            signed_head: None,
        });
        chain.head = ChainHead { seq: r.seq, hash };
        chain.records += 1;
        Ok(())
    }

    fn head(
        &mut self,
        tenant: &TenantId,
        seq: u64,
        hash: &str,
        signature: &str,
    ) -> Result<(), VerifyError> {
        let t = Some(tenant);
        let hash_bytes = decode_hex32(hash);
        let ok = match (hash_bytes, decode_sig(signature)) {
            (Some(h), Some(sig)) => self
                .key
                .verify_strict(&head_message(tenant.as_str(), seq, &h), &sig)
                .is_ok(),
            _ => false,
        };
        if !ok {
            return Err(self.fail(t, Some(seq), VerifyFailure::BadHeadSignature));
        }
        let have = self
            .chains
            .get(tenant)
            .map_or(ChainHead::default(), |c| c.head);
        if have.seq != seq || Some(have.hash) != hash_bytes {
            // Name the first record the export lacks (or the last one it has).
            let named = if seq > have.seq {
                have.seq + 1
            } else {
                have.seq
            };
            return Err(self.fail(
                t,
                Some(named),
                VerifyFailure::HeadMismatch {
                    head_seq: seq,
                    last_seq: have.seq,
                },
            ));
        }
        self.chains
            .entry(tenant.clone())
            .or_insert(ChainState {
                head: have,
                records: 0,
                signed_head: None,
            })
            .signed_head = Some(seq);
        Ok(())
    }

    /// End of the export: every tenant must have had its signed head.
    pub fn finish(self) -> Result<VerifyReport, VerifyError> {
        if !self.saw_header {
            return Err(VerifyError {
                line: self.line.max(1),
                tenant: None,
                seq: None,
                failure: VerifyFailure::BadHeader("the export is empty".into()),
            });
        }
        let mut report = VerifyReport::default();
        for (tenant, chain) in self.chains {
            match chain.signed_head {
                Some(h) => report.tenants.push((tenant, chain.records, h)),
                None => {
                    return Err(VerifyError {
                        line: self.line,
                        seq: Some(chain.head.seq),
                        tenant: Some(tenant),
                        failure: VerifyFailure::MissingHead,
                    });
                }
            }
        }
        Ok(report)
    }
}

/// Verify an export offline with the authority's public key: every record's hash and
/// signature, every link, every sequence number, and each tenant's signed head. Returns
/// the first failure, naming the line, tenant and record.
pub fn verify<R: BufRead>(
    export: R,
    public_key: &VerifyingKey,
) -> Result<VerifyReport, VerifyError> {
    let mut v = Verifier::new(public_key);
    for line in export.lines() {
        match line {
            Ok(l) => v.feed_line(&l)?,
            Err(e) => {
                v.line += 1;
                return Err(v.fail(None, None, VerifyFailure::Malformed(e.to_string())));
            }
        }
    }
    v.finish()
}

/// For `skip_serializing_if`: a field absent at zero keeps older records' encoding.
fn credits_are_zero(c: &Credits) -> bool {
    c.is_zero()
}
