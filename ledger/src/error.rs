//! The ledger's error type: what went wrong and what to do about it.

use tollgate_core::{Credits, LimitKind};

use crate::ids::{GrantId, HoldId, TenantId};

/// Errors of ledger operations and stores.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// A request was malformed; the message says which field and why.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The tenant has no wallet: create it first.
    #[error("unknown tenant {0}: create the tenant first")]
    UnknownTenant(TenantId),
    /// The tenant already exists.
    #[error("tenant {0} already exists")]
    TenantExists(TenantId),
    /// No such grant for this tenant.
    #[error("unknown {grant} for tenant {tenant}")]
    UnknownGrant {
        /// Tenant.
        tenant: TenantId,
        /// Grant.
        grant: GrantId,
    },
    /// No such hold for this tenant.
    #[error("unknown {hold} for tenant {tenant}")]
    UnknownHold {
        /// Tenant.
        tenant: TenantId,
        /// Hold.
        hold: HoldId,
    },
    /// The hold already ended (posted, voided or expired); holds are never edited.
    #[error("{hold} of tenant {tenant} is no longer open (it is {status})")]
    HoldClosed {
        /// Tenant.
        tenant: TenantId,
        /// Hold.
        hold: HoldId,
        /// Its state.
        status: &'static str,
    },
    /// Not enough credits (or room under the cap) for the request.
    #[error(
        "insufficient funds for tenant {tenant}: requested {requested}, at most {available} can be reserved ({limit} limits it)"
    )]
    InsufficientFunds {
        /// Tenant.
        tenant: TenantId,
        /// Requested (minimum) amount.
        requested: Credits,
        /// What could be reserved.
        available: Credits,
        /// The limit that binds.
        limit: LimitKind,
    },
    /// An amount overflowed `u64` micro-credits.
    #[error("credit amount overflow: {0}")]
    Overflow(String),
    /// The store failed (I/O, database, connection). Retry; if it persists, check the
    /// database.
    #[error("store error: {0}")]
    Store(String),
    /// Stored data is inconsistent or unreadable (tampering, or a bug).
    #[error("corrupt ledger data: {0}")]
    Corrupt(String),
    /// Reading or writing an export failed.
    #[error("I/O error: {0}")]
    Io(String),
    /// A batch key already posted was sent again with different content (another
    /// digest): never a retry, so nothing is posted and the sender must be looked at.
    #[error(
        "batch {key} was already posted with digest {stored}; this one has digest {sent}: a re-sent batch must be identical (nothing posted)"
    )]
    BatchConflict {
        /// The key (sidecar id, seq).
        key: crate::ids::BatchKey,
        /// Digest stored with the first posting.
        stored: String,
        /// Digest of the batch just sent.
        sent: String,
    },
    /// A grant reference already names a grant made with other terms: not a retry, so
    /// nothing is granted (the same terms again return the first grant).
    #[error(
        "grant reference {reference:?} of tenant {tenant} already names {grant}, which differs in {}: a retry must repeat the same terms (nothing granted)",
        differing.join(", ")
    )]
    GrantReferenceConflict {
        /// Tenant.
        tenant: TenantId,
        /// The reference.
        reference: String,
        /// The grant it names.
        grant: GrantId,
        /// The terms that differ (`amount`, `kind`, `priority`, `starts_at`,
        /// `expires_at`, `reset`).
        differing: Vec<&'static str>,
    },
}

impl From<sqlx::Error> for LedgerError {
    fn from(e: sqlx::Error) -> Self {
        LedgerError::Store(e.to_string())
    }
}
