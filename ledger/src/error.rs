//! The ledger's error type: what went wrong and what to do about it.

use std::sync::Arc;

use tollgate_core::{Credits, LimitKind};

use crate::ids::{GrantId, HoldId, InvalidTenantId, TenantId};

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
    /// database. The database's own error, when there is one, is the source.
    #[error("store error: {0}")]
    Store(#[source] StoreError),
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

impl LedgerError {
    /// A store failure described by `message` alone.
    pub fn store(message: impl Into<String>) -> LedgerError {
        LedgerError::Store(StoreError::from(message.into()))
    }

    /// A store failure described by `message`, caused by the database error `e`.
    pub fn db(message: impl Into<String>, e: sqlx::Error) -> LedgerError {
        LedgerError::Store(StoreError {
            message: message.into(),
            source: Some(Arc::new(e)),
        })
    }
}

impl From<sqlx::Error> for LedgerError {
    fn from(e: sqlx::Error) -> Self {
        LedgerError::db(e.to_string(), e)
    }
}

/// Why the store failed: what was being done, and the database error behind it if any
/// (kept as the error's source, shared so [`LedgerError`] stays `Clone`). Two are equal
/// when their messages are.
#[derive(Debug, Clone)]
pub struct StoreError {
    message: String,
    source: Option<Arc<sqlx::Error>>,
}

impl StoreError {
    /// What failed.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<String> for StoreError {
    fn from(message: String) -> Self {
        StoreError {
            message,
            source: None,
        }
    }
}

impl From<&str> for StoreError {
    fn from(message: &str) -> Self {
        StoreError::from(message.to_string())
    }
}

impl PartialEq for StoreError {
    fn eq(&self, other: &Self) -> bool {
        self.message == other.message
    }
}

impl Eq for StoreError {}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<InvalidTenantId> for LedgerError {
    fn from(e: InvalidTenantId) -> Self {
        LedgerError::InvalidInput(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use super::*;

    #[test]
    fn a_database_error_stays_the_cause() {
        let e = LedgerError::from(sqlx::Error::PoolTimedOut);
        assert!(matches!(e, LedgerError::Store(_)));
        let store = e.source().expect("the store error");
        let db = store.source().expect("the database error behind it");
        assert!(db.downcast_ref::<sqlx::Error>().is_some());
        // The message is as before: the database's own.
        assert_eq!(
            e.to_string(),
            format!("store error: {}", sqlx::Error::PoolTimedOut)
        );
        // Messages without a database error have no cause.
        assert!(LedgerError::store("x").source().unwrap().source().is_none());
    }
}
