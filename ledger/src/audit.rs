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
//! **Heads are dated (export version 2).** A head signs `"tollgate-audit-head-v2\0" ||
//! len(tenant) as u32 BE || tenant || seq as u64 BE || hash || signed_at as u64 BE`. An
//! export cut back to an earlier head, with that head, is consistent in itself: only the
//! head's time shows it is old, so [`verify_with`] refuses heads signed before a time the
//! verifier names ([`VerifyOptions::heads_signed_since`]). Version-1 heads (domain
//! `tollgate-audit-head-v1`, no time) still verify, but are refused as
//! [`VerifyFailure::UndatedHead`] in a version-2 export or wherever the age is asked.
//! [`VerifyOptions::tenant`] refuses any line of another tenant (a chain spliced in), and
//! an export without records is refused.
//!
//! [`verify`] needs only the export and the authority's public key.
//!
//! **The tables.** A valid chain says nothing about tables edited behind it: online
//! verification (`Ledger::verify_audit`) also checks the live tables against what each
//! chain vouches for, with a [`TableCheck`].

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Read};

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tollgate_core::Credits;

use crate::clock::Timestamp;
use crate::error::LedgerError;
use crate::grant::{Grant, GrantKind, ResetPeriod};
use crate::hold::{Funding, HoldPart};
use crate::ids::{BatchKey, GrantId, HoldId, TenantId};
use crate::policy::AlertCondition;
use crate::usage::Posting;

const HASH_DOMAIN: &[u8] = b"tollgate-audit-v1\0";
const SIG_DOMAIN: &[u8] = b"tollgate-audit-sig-v1\0";
/// Heads of version-1 exports: tenant, sequence number and hash, no time. Still verified
/// (so an old export is recognised), but such a head cannot show how recent it is.
const HEAD_DOMAIN_V1: &[u8] = b"tollgate-audit-head-v1\0";
/// Heads of version-2 exports also sign the time they were signed, so a verifier can
/// refuse an export cut back to an old head.
const HEAD_DOMAIN: &[u8] = b"tollgate-audit-head-v2\0";
/// `format` field of an export header.
pub const EXPORT_FORMAT: &str = "tollgate-audit-export";
/// Version of the export format. Version 2: heads carry `signed_at` and are signed under
/// `tollgate-audit-head-v2`. Version 1 (heads without a time) is still read. The record
/// hash rule is the same in both.
pub const EXPORT_VERSION: u32 = 2;
/// Oldest export version [`verify`] reads.
pub const EXPORT_VERSION_MIN: u32 = 1;
/// How far past the verifier's clock a head's `signed_at` may lie (clock skew between
/// the authority and the verifier) before it is refused as coming from the future.
pub const HEAD_CLOCK_SKEW_SECS: u64 = 300;
/// Longest export line [`verify`] reads (a record is a few kilobytes at most): a longer
/// line is refused instead of being read into memory.
pub const MAX_EXPORT_LINE: usize = 16 << 20;

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

/// What a head's signature covers: `domain || len(tenant) as u32 BE || tenant || seq as
/// u64 BE || hash`, then (version 2) `signed_at as u64 BE`. The domain names the version,
/// so a version-1 signature never verifies as a version-2 head or the other way round.
fn head_message(tenant: &str, seq: u64, hash: &Hash, signed_at: Option<Timestamp>) -> Vec<u8> {
    let domain = if signed_at.is_some() {
        HEAD_DOMAIN
    } else {
        HEAD_DOMAIN_V1
    };
    let mut m = Vec::with_capacity(domain.len() + 4 + tenant.len() + 8 + 32 + 8);
    m.extend_from_slice(domain);
    m.extend_from_slice(&(tenant.len() as u32).to_be_bytes());
    m.extend_from_slice(tenant.as_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(hash);
    if let Some(at) = signed_at {
        m.extend_from_slice(&at.to_be_bytes());
    }
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

    /// A signed head line for an export, stating that it was signed at `signed_at`.
    pub fn sign_head(
        &self,
        tenant: &TenantId,
        head: &ChainHead,
        signed_at: Timestamp,
    ) -> ExportLine {
        let sig = self.key.sign(&head_message(
            tenant.as_str(),
            head.seq,
            &head.hash,
            Some(signed_at),
        ));
        ExportLine::Head {
            tenant: tenant.clone(),
            seq: head.seq,
            hash: hex::encode(head.hash),
            signed_at: Some(signed_at),
            signature: hex::encode(sig.to_bytes()),
        }
    }

    /// A head line as version-1 exports wrote it (no time, `tollgate-audit-head-v1`):
    /// only for tests that show such heads are recognised as old.
    #[doc(hidden)]
    pub fn sign_head_v1(&self, tenant: &TenantId, head: &ChainHead) -> ExportLine {
        let sig = self
            .key
            .sign(&head_message(tenant.as_str(), head.seq, &head.hash, None));
        ExportLine::Head {
            tenant: tenant.clone(),
            seq: head.seq,
            hash: hex::encode(head.hash),
            signed_at: None,
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
        /// When the head was signed (unix seconds; version 2). Absent in version-1
        /// exports, whose heads carry no time.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signed_at: Option<Timestamp>,
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
    exported_at: Timestamp,
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
            exported_at,
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
            let line = self.signer.sign_head(t, h, self.exported_at);
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
    /// The export holds no audit record at all.
    #[error(
        "the export holds no audit records: there is nothing to verify (an empty or emptied export)"
    )]
    NoRecords,
    /// A record or head of a tenant other than the one the verifier was told to expect.
    #[error(
        "a line of tenant {found} in an export verified for tenant {expected}: another tenant's chain was spliced in, or this is not {expected}'s export"
    )]
    OtherTenant {
        /// The tenant expected.
        expected: TenantId,
        /// The tenant found.
        found: TenantId,
    },
    /// A head in the old format (`tollgate-audit-head-v1`), which carries no signing
    /// time, where the head's age must be checked (or in a version-2 export).
    #[error(
        "the signed head is in the old format (tollgate-audit-head-v1) and carries no signing time, so how recent it is cannot be checked: export the chain again from a current authority"
    )]
    UndatedHead,
    /// The head was signed before the time the verifier requires.
    #[error(
        "the signed head was signed at {signed_at} (unix seconds), before {not_before} as required: an old head, so the export may have been cut back to it; export the chain again"
    )]
    StaleHead {
        /// When the head was signed.
        signed_at: Timestamp,
        /// The earliest signing time accepted.
        not_before: Timestamp,
    },
    /// The head claims to be signed later than the verifier's clock allows.
    #[error(
        "the signed head claims it was signed at {signed_at} (unix seconds), after the verifier's time {now} (plus {HEAD_CLOCK_SKEW_SECS} s of clock skew)"
    )]
    FutureHead {
        /// When the head claims to be signed.
        signed_at: Timestamp,
        /// The verifier's time.
        now: Timestamp,
    },
    /// A live table differs from what the (valid) chain vouches for.
    #[error(
        "table {}, row {}, column {}: the audit chain says {}, the table has {}",
        .0.table, .0.id, .0.column, .0.chain, .0.found
    )]
    TableMismatch(Box<RowMismatch>),
}

/// A table row that differs from what the chain vouches for (boxed in
/// [`VerifyFailure::TableMismatch`] to keep the error small).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowMismatch {
    /// Table (`postings`, `grants`, `wallets`).
    pub table: String,
    /// The row: posting row id, grant id, or tenant.
    pub id: String,
    /// Column.
    pub column: String,
    /// What the chain vouches for.
    pub chain: String,
    /// What the table holds.
    pub found: String,
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
    /// Sequence number of the record (as written in it), if known. For a
    /// [`VerifyFailure::TableMismatch`], the record that vouches for the row.
    pub seq: Option<u64>,
    /// What failed.
    pub failure: VerifyFailure,
}

/// A tenant's verified head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedHead {
    /// Tenant.
    pub tenant: TenantId,
    /// Last sequence number.
    pub seq: u64,
    /// When the head was signed (`None`: a version-1 head).
    pub signed_at: Option<Timestamp>,
}

/// Rows of the live tables checked against the chains (online verification).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TablesChecked {
    /// Posting rows.
    pub postings: u64,
    /// Grant rows.
    pub grants: u64,
    /// Wallet rows.
    pub wallets: u64,
}

/// A verified export: per tenant, the number of records and the head.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VerifyReport {
    /// Tenant, records verified, head sequence number.
    pub tenants: Vec<(TenantId, u64, u64)>,
    /// Each tenant's head, in the order of `tenants`.
    pub heads: Vec<VerifiedHead>,
    /// The live tables checked against the chains (`None` for an export).
    pub tables: Option<TablesChecked>,
}

impl VerifyReport {
    /// Records verified in total.
    pub fn records(&self) -> u64 {
        self.tenants.iter().map(|t| t.1).sum()
    }
}

/// What a verifier expects of an export beyond valid chains.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyOptions {
    /// The only tenant the export may hold (records and heads); its head must be there.
    /// `None`: any tenants (an operator's export of all of them).
    pub tenant: Option<TenantId>,
    /// Refuse heads signed before this time (unix seconds), and heads without a time
    /// (version 1). A cut export carries an old head: this is what catches it.
    pub heads_signed_since: Option<Timestamp>,
    /// The verifier's time: heads signed more than [`HEAD_CLOCK_SKEW_SECS`] after it are
    /// refused. `None`: not checked.
    pub now: Option<Timestamp>,
    /// Accept an export without records (online verification of an empty store).
    pub allow_empty: bool,
}

/// Per-tenant verification state.
#[derive(Debug, Clone)]
struct ChainState {
    head: ChainHead,
    records: u64,
    signed_head: Option<(u64, Option<Timestamp>)>,
}

/// Incremental verification of an export, line by line (what [`verify`] does over a
/// reader); use it to verify a stream without holding it in memory.
#[derive(Debug, Clone)]
pub struct Verifier {
    key: VerifyingKey,
    opts: VerifyOptions,
    chains: BTreeMap<TenantId, ChainState>,
    /// The header's version, once seen.
    version: Option<u32>,
    line: usize,
}

impl Verifier {
    /// A verifier trusting `public_key`, with default options (any tenants, any head
    /// age, no empty export).
    pub fn new(public_key: &VerifyingKey) -> Verifier {
        Verifier::with_options(public_key, VerifyOptions::default())
    }

    /// A verifier trusting `public_key` that also enforces `opts`.
    pub fn with_options(public_key: &VerifyingKey, opts: VerifyOptions) -> Verifier {
        Verifier {
            key: *public_key,
            opts,
            chains: BTreeMap::new(),
            version: None,
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

    /// A failure at the current line (for checks made beside the verifier, such as the
    /// live tables against a record just fed).
    pub fn error_here(
        &self,
        tenant: &TenantId,
        seq: Option<u64>,
        failure: VerifyFailure,
    ) -> VerifyError {
        self.fail(Some(tenant), seq, failure)
    }

    /// Count `n` lines as already read (lines of other tenants' chains verified
    /// separately), so failures name the line an export of them all would have.
    pub fn skip_lines(&mut self, n: usize) {
        self.line = self.line.saturating_add(n);
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
        let Some(version) = self.version else {
            return match &parsed {
                ExportLine::Header {
                    format, version, ..
                } if format == EXPORT_FORMAT
                    && (EXPORT_VERSION_MIN..=EXPORT_VERSION).contains(version) =>
                {
                    self.version = Some(*version);
                    Ok(())
                }
                _ => Err(self.fail(
                    None,
                    None,
                    VerifyFailure::BadHeader(format!(
                        "line 1 must be a {EXPORT_FORMAT} header of version {EXPORT_VERSION_MIN} to {EXPORT_VERSION}"
                    )),
                )),
            };
        };
        match parsed {
            ExportLine::Header { .. } => Err(self.fail(
                None,
                None,
                VerifyFailure::BadHeader("a second header inside the export".into()),
            )),
            ExportLine::Record(r) => {
                self.expected_tenant(&r.tenant, Some(r.seq))?;
                self.record(&r)
            }
            ExportLine::Head {
                tenant,
                seq,
                hash,
                signed_at,
                signature,
            } => {
                self.expected_tenant(&tenant, Some(seq))?;
                self.head(version, &tenant, seq, &hash, signed_at, &signature)
            }
        }
    }

    fn expected_tenant(&self, found: &TenantId, seq: Option<u64>) -> Result<(), VerifyError> {
        match &self.opts.tenant {
            Some(expected) if expected != found => Err(self.fail(
                Some(found),
                seq,
                VerifyFailure::OtherTenant {
                    expected: expected.clone(),
                    found: found.clone(),
                },
            )),
            _ => Ok(()),
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
        let expected = head.seq.saturating_add(1);
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
        version: u32,
        tenant: &TenantId,
        seq: u64,
        hash: &str,
        signed_at: Option<Timestamp>,
        signature: &str,
    ) -> Result<(), VerifyError> {
        let t = Some(tenant);
        if self
            .chains
            .get(tenant)
            .is_some_and(|c| c.signed_head.is_some())
        {
            return Err(self.fail(
                t,
                Some(seq),
                VerifyFailure::Malformed("a second head line for this tenant".into()),
            ));
        }
        let hash_bytes = decode_hex32(hash);
        let ok = match (hash_bytes, decode_sig(signature)) {
            (Some(h), Some(sig)) => self
                .key
                .verify_strict(&head_message(tenant.as_str(), seq, &h, signed_at), &sig)
                .is_ok(),
            _ => false,
        };
        if !ok {
            return Err(self.fail(t, Some(seq), VerifyFailure::BadHeadSignature));
        }
        // The signature is good: now its time. A version-2 export never carries an
        // undated head (one pasted in from an old export is refused), and a verifier that
        // asks how recent the head is refuses undated ones.
        match (signed_at, self.opts.heads_signed_since) {
            (None, since) if version >= 2 || since.is_some() => {
                return Err(self.fail(t, Some(seq), VerifyFailure::UndatedHead));
            }
            (Some(at), Some(not_before)) if at < not_before => {
                return Err(self.fail(
                    t,
                    Some(seq),
                    VerifyFailure::StaleHead {
                        signed_at: at,
                        not_before,
                    },
                ));
            }
            _ => {}
        }
        if let (Some(at), Some(now)) = (signed_at, self.opts.now)
            && at > now.saturating_add(HEAD_CLOCK_SKEW_SECS)
        {
            return Err(self.fail(
                t,
                Some(seq),
                VerifyFailure::FutureHead { signed_at: at, now },
            ));
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
            .signed_head = Some((seq, signed_at));
        Ok(())
    }

    /// End of the export: every tenant must have had its signed head; the expected
    /// tenant (if any) must be there; and there must be records (unless allowed empty).
    pub fn finish(self) -> Result<VerifyReport, VerifyError> {
        let end = |tenant: Option<TenantId>, seq: Option<u64>, failure| VerifyError {
            line: self.line.max(1),
            tenant,
            seq,
            failure,
        };
        if self.version.is_none() {
            return Err(end(
                None,
                None,
                VerifyFailure::BadHeader("the export is empty".into()),
            ));
        }
        let mut report = VerifyReport::default();
        for (tenant, chain) in &self.chains {
            match chain.signed_head {
                Some((h, signed_at)) => {
                    report.tenants.push((tenant.clone(), chain.records, h));
                    report.heads.push(VerifiedHead {
                        tenant: tenant.clone(),
                        seq: h,
                        signed_at,
                    });
                }
                None => {
                    return Err(end(
                        Some(tenant.clone()),
                        Some(chain.head.seq),
                        VerifyFailure::MissingHead,
                    ));
                }
            }
        }
        if let Some(t) = &self.opts.tenant
            && !self.chains.contains_key(t)
        {
            // Nothing of the expected tenant: say the export is empty if it is, else
            // that its head is missing.
            if report.records() == 0 && !self.opts.allow_empty {
                return Err(end(Some(t.clone()), None, VerifyFailure::NoRecords));
            }
            return Err(end(Some(t.clone()), None, VerifyFailure::MissingHead));
        }
        if report.records() == 0 && !self.opts.allow_empty {
            return Err(end(
                self.opts.tenant.clone(),
                None,
                VerifyFailure::NoRecords,
            ));
        }
        Ok(report)
    }
}

/// Verify an export offline with the authority's public key: every record's hash and
/// signature, every link, every sequence number, and each tenant's signed head. Refuses
/// an export without records. Returns the first failure, naming the line, tenant and
/// record. [`verify_with`] also checks the tenant and how recent the heads are.
pub fn verify<R: BufRead>(
    export: R,
    public_key: &VerifyingKey,
) -> Result<VerifyReport, VerifyError> {
    verify_with(export, public_key, VerifyOptions::default())
}

/// [`verify`], also enforcing `opts`: only the expected tenant's lines, heads signed
/// recently enough. Reads outside input: every problem is a [`VerifyError`], lines
/// longer than [`MAX_EXPORT_LINE`] included.
pub fn verify_with<R: BufRead>(
    mut export: R,
    public_key: &VerifyingKey,
    opts: VerifyOptions,
) -> Result<VerifyReport, VerifyError> {
    let mut v = Verifier::with_options(public_key, opts);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        // Read at most one byte past the limit, so an overlong line is seen as such
        // without reading it all.
        let limit = (MAX_EXPORT_LINE + 1) as u64;
        let n = match (&mut export).take(limit).read_until(b'\n', &mut buf) {
            Ok(n) => n,
            Err(e) => {
                v.line += 1;
                return Err(v.fail(None, None, VerifyFailure::Malformed(e.to_string())));
            }
        };
        if n == 0 {
            break;
        }
        if buf.last() == Some(&b'\n') {
            buf.pop();
        } else if buf.len() > MAX_EXPORT_LINE {
            v.line += 1;
            return Err(v.fail(
                None,
                None,
                VerifyFailure::Malformed(format!(
                    "line longer than {MAX_EXPORT_LINE} bytes: not an export line"
                )),
            ));
        }
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        match std::str::from_utf8(&buf) {
            Ok(l) => v.feed_line(l)?,
            Err(e) => {
                v.line += 1;
                return Err(v.fail(
                    None,
                    None,
                    VerifyFailure::Malformed(format!("not UTF-8 text: {e}")),
                ));
            }
        }
    }
    v.finish()
}

/// A posting the chain vouches for, in chain order (see [`TableCheck`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpectedPosting {
    /// One posting row of a usage batch, as its `usage` record lists it.
    Usage {
        /// The record that lists it.
        seq: u64,
        /// The batch.
        batch: BatchKey,
        /// The posting as the record states it.
        posting: AuditPosting,
    },
    /// The rows of a hold posted by amount (one per source drawn, plus overrun): their
    /// credits add up to what the `hold_ended` record consumed plus the overrun it
    /// recorded.
    HoldPost {
        /// The `hold_ended` record.
        seq: u64,
        /// The hold.
        hold: HoldId,
        /// Credits of all its rows together.
        amount: Credits,
    },
}

/// A table row that differs from the chain: table, row id, column, chain's value,
/// table's value, and the record that vouches for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// Record vouching for the row (`None`: the row has none).
    pub seq: Option<u64>,
    /// The failure ([`VerifyFailure::TableMismatch`]).
    pub failure: VerifyFailure,
}

fn mismatch(
    seq: Option<u64>,
    table: &str,
    id: impl ToString,
    column: &str,
    chain: impl ToString,
    found: impl ToString,
) -> Mismatch {
    Mismatch {
        seq,
        failure: VerifyFailure::TableMismatch(Box::new(RowMismatch {
            table: table.into(),
            id: id.to_string(),
            column: column.into(),
            chain: chain.to_string(),
            found: found.to_string(),
        })),
    }
}

/// Signed micro-credits as credits (a tampered row may make a derived figure negative).
fn show_micros(v: i128) -> String {
    let sign = if v < 0 { "-" } else { "" };
    let a = v.unsigned_abs();
    format!("{sign}{}.{:06}", a / 1_000_000, a % 1_000_000)
}

/// What a tenant's chain vouches for in the live tables, gathered record by record:
/// the wallet totals after the last movement (every movement record states them), each
/// grant's credits put in (its `grant` record, plus `reset` refills and `adjustment`
/// credits), and each posting row (in order: usage records list theirs, a hold posted
/// by amount states its total).
///
/// Checked against the tables: every posting row, in row order, equals the next posting
/// the chain lists, and no row is left over; the wallet row's totals equal the last
/// stated totals; each grant row exists in the chain with the `granted` the chain puts
/// in, keeps `available + held + consumed + expired = granted`, and the grants' columns
/// add up to the stated totals. The chain states no per-grant split of draws, so a row's
/// `available`, `held`, `consumed` and `expired` are checked through that sum and the
/// row's own balance, not one by one.
#[derive(Debug, Clone, Default)]
pub struct TableCheck {
    /// Totals after the last movement, and that record's sequence number.
    totals: WalletTotals,
    totals_seq: Option<u64>,
    /// Per grant: credits put in, and the last record that changed that.
    grants: BTreeMap<GrantId, (u128, u64)>,
    pending: std::collections::VecDeque<ExpectedPosting>,
}

impl TableCheck {
    /// A check for one tenant's chain, from its first record.
    pub fn new() -> TableCheck {
        TableCheck::default()
    }

    /// Take in the next record of the chain (already verified).
    pub fn record(&mut self, seq: u64, event: &AuditEvent) {
        let before = self.totals;
        let mut put_in = |g: GrantId, x: Credits| {
            let e = self.grants.entry(g).or_insert((0, seq));
            e.0 += u128::from(x.0);
            e.1 = seq;
        };
        let after = match event {
            AuditEvent::Grant {
                grant,
                amount,
                after,
                ..
            } => {
                put_in(*grant, *amount);
                Some(after)
            }
            AuditEvent::Reset {
                grant,
                refilled,
                after,
                ..
            } => {
                put_in(*grant, *refilled);
                Some(after)
            }
            AuditEvent::Adjustment {
                grant,
                credit,
                after,
                ..
            } => {
                put_in(*grant, *credit);
                Some(after)
            }
            AuditEvent::Usage {
                batch,
                postings,
                after,
                ..
            } => {
                for p in postings {
                    self.pending.push_back(ExpectedPosting::Usage {
                        seq,
                        batch: batch.clone(),
                        posting: p.clone(),
                    });
                }
                Some(after)
            }
            AuditEvent::HoldEnded {
                hold,
                consumed_now,
                after,
                ..
            } => {
                // Posting by amount charges `consumed_now` to the hold's sources and what
                // a lowered cap cut off to overrun (the only overrun this event adds).
                let overrun = after.overrun.0.saturating_sub(before.overrun.0);
                let amount = consumed_now.0.saturating_add(overrun);
                if amount > 0 {
                    self.pending.push_back(ExpectedPosting::HoldPost {
                        seq,
                        hold: *hold,
                        amount: Credits(amount),
                    });
                }
                Some(after)
            }
            AuditEvent::Hold { after, .. }
            | AuditEvent::HoldReduced { after, .. }
            | AuditEvent::Expire { after, .. } => Some(after),
            AuditEvent::Alert { .. } | AuditEvent::Config { .. } => None,
        };
        if let Some(a) = after {
            self.totals = *a;
            self.totals_seq = Some(seq);
        }
    }

    /// The next posting the chain lists that has not been matched yet.
    pub fn next_expected(&mut self) -> Option<ExpectedPosting> {
        self.pending.pop_front()
    }

    /// Compare one posting row (`id`: its row id) with the usage posting the chain lists.
    pub fn check_usage_row(
        seq: u64,
        batch: &BatchKey,
        want: &AuditPosting,
        id: i64,
        row: &Posting,
    ) -> Result<(), Mismatch> {
        let m = |column: &str, chain: String, found: String| {
            Err(mismatch(Some(seq), "postings", id, column, chain, found))
        };
        let show_batch = |b: Option<&BatchKey>| b.map_or("none".to_string(), |b| b.to_string());
        let show_hold = |h: Option<HoldId>| h.map_or("none".to_string(), |h| h.0.to_string());
        let show_funding = |f: Funding| match f.to_parts() {
            (k, Some(g)) => format!("{k} {g}"),
            (k, None) => k.to_string(),
        };
        if row.batch.as_ref() != Some(batch) {
            return m(
                "batch",
                show_batch(Some(batch)),
                show_batch(row.batch.as_ref()),
            );
        }
        if row.amount != want.amount {
            return m("amount", want.amount.to_string(), row.amount.to_string());
        }
        if row.funding != want.funding {
            return m(
                "funding",
                show_funding(want.funding),
                show_funding(row.funding),
            );
        }
        if row.hold != want.hold {
            return m("hold_id", show_hold(want.hold), show_hold(row.hold));
        }
        if row.records != want.records {
            return m("records", want.records.to_string(), row.records.to_string());
        }
        // Records written before attribution name the instance in `agent`; the
        // migration moved such rows' `agent` to `agent_instance`.
        let agent_ok = (row.agent == want.agent && row.agent_instance == want.agent_instance)
            || (want.agent_instance.is_empty()
                && row.agent.is_empty()
                && row.agent_instance == want.agent);
        if !agent_ok {
            return m(
                "agent",
                format!("{:?}/{:?}", want.agent, want.agent_instance),
                format!("{:?}/{:?}", row.agent, row.agent_instance),
            );
        }
        for (column, chain, found) in [
            ("model", &want.model, &row.model),
            ("feature", &want.feature, &row.feature),
            ("task", &want.task, &row.task),
        ] {
            if chain != found {
                return m(column, format!("{chain:?}"), format!("{found:?}"));
            }
        }
        if row.outcomes != want.outcomes {
            return m(
                "outcomes",
                want.outcomes.to_string(),
                row.outcomes.to_string(),
            );
        }
        if row.work_units != want.work_units {
            return m(
                "work_units",
                want.work_units.to_string(),
                row.work_units.to_string(),
            );
        }
        Ok(())
    }

    /// Compare the rows of a hold posted by amount (`rows`: those following in row order
    /// with no batch and this hold) with what the `hold_ended` record states.
    pub fn check_hold_post_rows(
        seq: u64,
        hold: HoldId,
        amount: Credits,
        rows: &[(i64, Posting)],
    ) -> Result<(), Mismatch> {
        let Some((first, _)) = rows.first() else {
            return Err(mismatch(
                Some(seq),
                "postings",
                "-",
                "row",
                format!("a posting of hold {} for {amount}", hold.0),
                "no such row",
            ));
        };
        let total: i128 = rows.iter().map(|(_, p)| i128::from(p.amount.0)).sum();
        if total != i128::from(amount.0) {
            let (chain, found) = if rows.len() == 1 {
                (amount.to_string(), show_micros(total))
            } else {
                (
                    format!("{amount} over the hold's {} rows", rows.len()),
                    show_micros(total),
                )
            };
            return Err(mismatch(
                Some(seq),
                "postings",
                first,
                "amount",
                chain,
                found,
            ));
        }
        Ok(())
    }

    /// A posting row the chain does not list (after its last record).
    pub fn extra_row(last_seq: u64, id: i64, row: &Posting) -> Mismatch {
        mismatch(
            None,
            "postings",
            id,
            "row",
            format!("no posting after record {last_seq}"),
            format!("a row of {}", row.amount),
        )
    }

    /// A posting the chain lists that has no row.
    pub fn missing_row(exp: &ExpectedPosting) -> Mismatch {
        match exp {
            ExpectedPosting::Usage {
                seq,
                batch,
                posting,
            } => mismatch(
                Some(*seq),
                "postings",
                "-",
                "row",
                format!("a posting of {batch} for {}", posting.amount),
                "no such row",
            ),
            ExpectedPosting::HoldPost { seq, hold, amount } => mismatch(
                Some(*seq),
                "postings",
                "-",
                "row",
                format!("a posting of hold {} for {amount}", hold.0),
                "no such row",
            ),
        }
    }

    /// Compare the wallet row's totals with the totals the last movement stated.
    pub fn check_wallet(&self, tenant: &TenantId, row: &WalletTotals) -> Result<(), Mismatch> {
        let c = &self.totals;
        for (column, chain, found) in [
            ("granted", c.granted, row.granted),
            ("available", c.available, row.available),
            ("held", c.held, row.held),
            ("consumed", c.consumed, row.consumed),
            ("expired", c.expired, row.expired),
            ("plan_held", c.plan_held, row.plan_held),
            ("plan_consumed", c.plan_consumed, row.plan_consumed),
            ("overrun", c.overrun, row.overrun),
        ] {
            if chain != found {
                return Err(mismatch(
                    self.totals_seq,
                    "wallets",
                    tenant,
                    column,
                    chain,
                    found,
                ));
            }
        }
        Ok(())
    }

    /// Compare the tenant's grant rows (all of them, closed too) with the chain.
    pub fn check_grants(&self, rows: &[Grant]) -> Result<(), Mismatch> {
        let cols = |g: &Grant| -> [i128; 4] {
            [g.available, g.held, g.consumed, g.expired].map(|c| i128::from(c.0))
        };
        const NAMES: [&str; 4] = ["available", "held", "consumed", "expired"];
        let t = &self.totals;
        let chain_sums: [i128; 4] =
            [t.available, t.held, t.consumed, t.expired].map(|c| i128::from(c.0));
        let mut sums = [0i128; 4];
        let mut granted_sum = 0i128;
        for g in rows {
            for (s, v) in sums.iter_mut().zip(cols(g)) {
                *s += v;
            }
            granted_sum += i128::from(g.granted.0);
        }
        // The first column whose sum over the grants differs from the stated totals is
        // the one a row with a broken balance gets blamed for.
        let bad_col = (0..4).find(|&i| sums[i] != chain_sums[i]);
        let mut seen = BTreeSet::new();
        for g in rows {
            let Some(&(put_in, seq)) = self.grants.get(&g.id) else {
                return Err(mismatch(
                    None,
                    "grants",
                    g.id.0,
                    "id",
                    "no grant record",
                    format!("a grant of {}", g.granted),
                ));
            };
            seen.insert(g.id);
            if u128::from(g.granted.0) != put_in {
                return Err(mismatch(
                    Some(seq),
                    "grants",
                    g.id.0,
                    "granted",
                    show_micros(put_in as i128),
                    g.granted,
                ));
            }
            let v = cols(g);
            let total: i128 = v.iter().sum();
            if total != put_in as i128 {
                // Name the column: the one whose sum is off, and what the chain's
                // `granted` leaves for it next to the row's other columns.
                let i = bad_col.unwrap_or(0);
                let others: i128 = total - v[i];
                let column = if bad_col.is_some() {
                    NAMES[i]
                } else {
                    "available+held+consumed+expired"
                };
                let (chain, found) = if bad_col.is_some() {
                    (show_micros(put_in as i128 - others), show_micros(v[i]))
                } else {
                    (show_micros(put_in as i128), show_micros(total))
                };
                return Err(mismatch(Some(seq), "grants", g.id.0, column, chain, found));
            }
        }
        if let Some((id, (put_in, seq))) = self.grants.iter().find(|(id, _)| !seen.contains(*id)) {
            return Err(mismatch(
                Some(*seq),
                "grants",
                id.0,
                "id",
                format!("a grant of {}", show_micros(*put_in as i128)),
                "no such row",
            ));
        }
        let sum_id = "(all grants of the tenant)";
        if granted_sum != i128::from(t.granted.0) {
            return Err(mismatch(
                self.totals_seq,
                "grants",
                sum_id,
                "granted",
                t.granted,
                show_micros(granted_sum),
            ));
        }
        if let Some(i) = bad_col {
            return Err(mismatch(
                self.totals_seq,
                "grants",
                sum_id,
                NAMES[i],
                show_micros(chain_sums[i]),
                show_micros(sums[i]),
            ));
        }
        Ok(())
    }
}

/// For `skip_serializing_if`: a field absent at zero keeps older records' encoding.
fn credits_are_zero(c: &Credits) -> bool {
    c.is_zero()
}
