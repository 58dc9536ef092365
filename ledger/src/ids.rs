//! Identifiers: tenants, grants, holds, and the (sidecar, sequence) key of a usage batch.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Longest accepted tenant id, in bytes.
pub const MAX_TENANT_ID_LEN: usize = 128;

/// A tenant id that is not one (see [`TenantId`]); the ledger reports it as
/// [`crate::LedgerError::InvalidInput`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "tenant id {0:?} is invalid: use 1 to {MAX_TENANT_ID_LEN} characters of A-Z a-z 0-9 . _ - :"
)]
pub struct InvalidTenantId(pub String);

/// A tenant: the owner of one wallet (its grants, holds, plan and audit chain).
///
/// Non-empty, at most [`MAX_TENANT_ID_LEN`] bytes of `[A-Za-z0-9._:-]`, so it is safe in
/// file names, URLs, log lines and export headers without escaping.
///
/// Cloning is cheap (a shared string): a batch's records share their tenant's id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TenantId(Arc<str>);

impl TenantId {
    /// Validate and wrap a tenant id.
    pub fn new(id: impl Into<String>) -> Result<TenantId, InvalidTenantId> {
        let id = id.into();
        let ok = !id.is_empty()
            && id.len() <= MAX_TENANT_ID_LEN
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'));
        if ok {
            Ok(TenantId(id.into()))
        } else {
            Err(InvalidTenantId(id))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TenantId {
    type Error = InvalidTenantId;
    fn try_from(s: String) -> Result<TenantId, InvalidTenantId> {
        TenantId::new(s)
    }
}

impl From<TenantId> for String {
    fn from(t: TenantId) -> String {
        t.0.to_string()
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

/// A wallet. Each tenant has exactly one wallet in this version, so a wallet is named by
/// its tenant; the type exists so a later version can give a tenant several wallets
/// without renaming the API.
pub type WalletId = TenantId;

/// A grant, numbered per tenant from 1 in creation order (so "oldest" is "smallest id").
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct GrantId(pub u64);

impl fmt::Display for GrantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "grant#{}", self.0)
    }
}

/// A hold (a pending debit backing a lease), numbered per tenant from 1.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct HoldId(pub u64);

impl fmt::Display for HoldId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "hold#{}", self.0)
    }
}

/// The idempotency key of a usage batch: the sidecar that sent it and its sequence number.
/// A batch with a key already posted is acknowledged again and posted nothing.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BatchKey {
    /// The sending sidecar's id (its registered identity).
    pub sidecar_id: String,
    /// The sidecar's batch sequence number.
    pub seq: u64,
}

impl fmt::Display for BatchKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "batch {}#{}", self.sidecar_id, self.seq)
    }
}
