//! What the services and background tasks share: the [`State`], the clock
//! ([`now_ms`]) and the mapping of store errors to gRPC statuses.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tollgate_ledger::{Ledger, LedgerError, TenantId};
use tollgate_proto::v1::TenantPolicy;
use tonic::Status;

use crate::auth::Authenticator;
use crate::config::LeaseConfig;
use crate::convert::{self, invalid};
use crate::ingest::Ingest;
use crate::keylock::KeyLocks;
use crate::lease::LeaseTable;
use crate::metrics::Metrics;
use crate::policy_store::{PolicyStore, PolicyStoreError};
use crate::sessions::Sessions;
use crate::webhook::WebhookSender;

/// Milliseconds since the Unix epoch (simulated when a simulation drives this thread: see
/// `tollgate_core::clock`).
pub fn now_ms() -> u64 {
    tollgate_core::clock::unix_ms()
}

/// Maps a ledger error to a gRPC status that says what to do.
pub fn ledger_status(e: LedgerError) -> Status {
    match e {
        LedgerError::InvalidInput(m) => Status::invalid_argument(m),
        LedgerError::Overflow(m) => Status::invalid_argument(format!("amount overflow: {m}")),
        e @ (LedgerError::UnknownTenant(_)
        | LedgerError::UnknownGrant { .. }
        | LedgerError::UnknownHold { .. }) => Status::not_found(e.to_string()),
        e @ (LedgerError::TenantExists(_)
        | LedgerError::BatchConflict { .. }
        | LedgerError::GrantReferenceConflict { .. }) => Status::already_exists(e.to_string()),
        e @ (LedgerError::HoldClosed { .. } | LedgerError::InsufficientFunds { .. }) => {
            Status::failed_precondition(e.to_string())
        }
        e @ (LedgerError::Store(_) | LedgerError::Io(_)) => Status::unavailable(e.to_string()),
        e @ LedgerError::Corrupt(_) => Status::data_loss(e.to_string()),
        e => Status::internal(e.to_string()),
    }
}

/// Everything the services share.
#[derive(Debug)]
pub struct State {
    /// The ledger (money rules and store).
    pub ledger: Arc<Ledger>,
    /// Quotas, floors, webhook URLs, hints.
    pub policy: PolicyStore,
    /// Credentials.
    pub auth: Authenticator,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Sessions and registrations.
    pub sessions: Sessions,
    /// Outstanding leases and demand.
    pub leases: Mutex<LeaseTable>,
    /// Serializes lease decisions per limit key (fair share needs a consistent view of
    /// one limit's demand; other limits' decisions run meanwhile).
    pub grant_locks: KeyLocks,
    /// Lease timing.
    pub lease_cfg: LeaseConfig,
    /// When this process started (unix ms): the relearn window runs from here.
    pub started_ms: u64,
    /// Group-commit ingest.
    pub ingest: Ingest,
    /// Alert webhook delivery.
    pub webhook: WebhookSender,
    /// Tenants with usage since the last alert evaluation.
    pub alert_dirty: Mutex<BTreeSet<String>>,
    /// Stored policies (quotas, floors) by tenant, read through.
    pub policy_cache: Mutex<HashMap<String, TenantPolicy>>,
    /// Becomes true when the server shuts down (sessions end themselves).
    pub shutdown: watch::Receiver<bool>,
}

impl State {
    /// True while the authority relearns leases after its start.
    pub fn relearning(&self, now_ms: u64) -> bool {
        now_ms < self.relearn_until_ms()
    }

    /// End of the relearn window.
    pub fn relearn_until_ms(&self) -> u64 {
        self.started_ms
            .saturating_add(self.lease_cfg.relearn_grace_secs.saturating_mul(1000))
    }

    /// A cached stored policy.
    pub fn policy_cache_get(&self, tenant: &str) -> Option<TenantPolicy> {
        self.policy_cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(tenant)
            .cloned()
    }

    /// Caches a stored policy.
    pub fn policy_cache_put(&self, p: TenantPolicy) {
        self.policy_cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(p.tenant.clone(), p);
    }

    /// Locks the lease table (poisoning is recovered: every update is a single step).
    pub fn lease_table(&self) -> std::sync::MutexGuard<'_, LeaseTable> {
        self.leases
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Maps an error of the authority's own tables to a gRPC status (retry later).
pub fn store_status(e: PolicyStoreError) -> Status {
    Status::unavailable(e.to_string())
}

/// A tenant id from a request field, validated.
pub fn tenant_id(field: &str, s: &str) -> Result<TenantId, Status> {
    let s = convert::tenant_id(field, s)?;
    TenantId::new(s).map_err(|e| invalid(field, e))
}
