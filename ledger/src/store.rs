//! The store interface: where the ledger's state lives.
//!
//! **Contract.** Every ledger operation is one write transaction: [`Store::begin`], then
//! [`StoreTx::lock_wallets`] (which locks the named tenants' wallet rows until commit:
//! `SELECT ... FOR UPDATE` on PostgreSQL, `BEGIN IMMEDIATE` on SQLite), the reads it
//! needs, one [`StoreTx::write`] of the computed [`Changes`], and [`StoreTx::commit`].
//! Commit returns only once the transaction is durable, so an acknowledgement built on
//! it is never lost. A transaction dropped without commit rolls back.
//!
//! The ledger computes every change in memory from the locked rows (see `engine`), so a
//! store is plain storage: no business rule lives in SQL, and a PostgreSQL store is a
//! translation of [`sqlite`]'s queries (the schema in `migrations/` is portable SQL).
//! Because the wallet row is locked before anything of that tenant is read, two writers
//! (two authority replicas on one PostgreSQL) touching the same tenant serialize, and
//! the per-tenant audit chain head (on the wallet row) never forks. Writers lock wallets
//! in tenant-id order, so they never deadlock.
//!
//! Reads outside a transaction ([`Store::wallet`], [`Store::statement`], ...) see
//! committed data and lock nothing.

/// PostgreSQL: several authority replicas on one database (row locks, unique keys).
pub mod migrate;
pub mod postgres;
mod rows;
pub mod sqlite;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tollgate_core::{Credits, PeriodUsage};

use crate::task::TaskRow;

use crate::audit::{AuditRecord, ChainHead, WalletTotals};
use crate::clock::Timestamp;
use crate::error::LedgerError;
use crate::grant::Grant;
use crate::hold::Hold;
use crate::ids::{BatchKey, GrantId, HoldId, TenantId};
use crate::policy::TenantConfig;
use crate::report::StatementRow;
use crate::usage::{BatchOutcome, Posting};

pub use sqlite::SqliteStore;

/// Alert bookkeeping of one rule, so a rule fires once per condition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertRuleState {
    /// Rule id.
    pub rule_id: String,
    /// Cap period (month start) in which a percent rule last fired.
    pub fired_period: Option<Timestamp>,
    /// Whether a depletion rule's condition held at the last evaluation.
    pub active: bool,
}

/// The wallet row of a tenant: configuration, counters, totals and the audit head.
/// Locked by [`StoreTx::lock_wallets`]; everything else of the tenant is read after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalletRow {
    /// Tenant.
    pub tenant: TenantId,
    /// Configuration.
    pub config: TenantConfig,
    /// Creation time.
    pub created_at: Timestamp,
    /// Next grant id to assign.
    pub next_grant_id: u64,
    /// Next hold id to assign.
    pub next_hold_id: u64,
    /// Totals over all grants (open and closed), plus plan-funded and overrun figures.
    pub totals: WalletTotals,
    /// Current billing period (calendar month) start.
    pub period_start: Timestamp,
    /// Spent (grants + plan, list price) in the current period.
    pub period_spent: Credits,
    /// Plan-funded usage of the current period (what `Plan::bill` bills).
    pub period_usage: PeriodUsage,
    /// The price book in force (version), if any.
    pub price_book_version: Option<u64>,
    /// Alert rule states.
    pub alert_state: Vec<AlertRuleState>,
    /// Audit chain head.
    pub audit_head: ChainHead,
}

impl WalletRow {
    /// A fresh wallet.
    pub fn new(tenant: TenantId, config: TenantConfig, now: Timestamp) -> WalletRow {
        WalletRow {
            tenant,
            config,
            created_at: now,
            next_grant_id: 1,
            next_hold_id: 1,
            totals: WalletTotals::default(),
            period_start: tollgate_core::time::month_start(now),
            period_spent: Credits::ZERO,
            price_book_version: None,
            period_usage: PeriodUsage::default(),
            alert_state: Vec::new(),
            audit_head: ChainHead::default(),
        }
    }
}

/// Which holds to load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldSelect {
    /// These ids (any status).
    Ids(Vec<HoldId>),
    /// Open holds owned by this owner (sidecar).
    OpenOwnedBy(String),
    /// Open holds whose timeout is at or before this time.
    OpenDueBy(Timestamp),
}

/// A stored usage batch (one row per batch, whatever its size).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchRow {
    /// Outcome (with key, record count and time).
    pub outcome: BatchOutcome,
    /// Digest as sent, if any.
    pub digest: Option<String>,
    /// Sidecar signature, if any.
    pub signature: Option<String>,
}

/// A stored price book version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceBookRow {
    /// Tenant.
    pub tenant: TenantId,
    /// Version.
    pub version: u64,
    /// The book, as JSON.
    pub json: String,
    /// When stored.
    pub created_at: Timestamp,
}

/// Everything one ledger operation writes. Rows are upserted (inserted, or replaced by
/// key); postings, batches, audit records and price books are only ever inserted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Wallet rows created.
    pub new_wallets: Vec<WalletRow>,
    /// Wallet rows updated (must have been locked).
    pub wallets: Vec<WalletRow>,
    /// Grants inserted or updated.
    pub grants: Vec<Grant>,
    /// Holds inserted or updated.
    pub holds: Vec<Hold>,
    /// Posting rows.
    pub postings: Vec<Posting>,
    /// Batch rows.
    pub batches: Vec<BatchRow>,
    /// Audit records, in chain order per tenant.
    pub audit: Vec<AuditRecord>,
    /// Spend per (tenant, minute start) to add to the burn-rate buckets.
    pub spend_buckets: Vec<(TenantId, Timestamp, Credits)>,
    /// Price book versions stored.
    pub price_books: Vec<PriceBookRow>,
    /// Task rows inserted or replaced (their tenant's wallet is locked).
    pub tasks: Vec<TaskRow>,
}

impl Changes {
    /// `true` if nothing is to be written.
    pub fn is_empty(&self) -> bool {
        self.new_wallets.is_empty()
            && self.wallets.is_empty()
            && self.grants.is_empty()
            && self.holds.is_empty()
            && self.postings.is_empty()
            && self.batches.is_empty()
            && self.audit.is_empty()
            && self.spend_buckets.is_empty()
            && self.price_books.is_empty()
            && self.tasks.is_empty()
    }
}

/// A write transaction. Dropping it without [`StoreTx::commit`] rolls it back.
#[async_trait]
pub trait StoreTx: Send {
    /// Lock and read the wallet rows of `tenants` (sorted, distinct: callers pass them in
    /// tenant-id order so concurrent writers never deadlock). `None` for a tenant without
    /// a wallet. The locks last until commit or rollback.
    async fn lock_wallets(
        &mut self,
        tenants: &[TenantId],
    ) -> Result<Vec<Option<WalletRow>>, LedgerError>;

    /// The tenant's grants that are open or still hold credits (`closed = false OR
    /// held > 0`): everything a movement can touch. Call after locking the wallet.
    async fn active_grants(&mut self, tenant: &TenantId) -> Result<Vec<Grant>, LedgerError>;

    /// [`StoreTx::active_grants`] of several tenants at once (one result per tenant, in
    /// order). The default asks tenant by tenant; stores override it with one query.
    async fn active_grants_of(
        &mut self,
        tenants: &[TenantId],
    ) -> Result<Vec<Vec<Grant>>, LedgerError> {
        let mut out = Vec::with_capacity(tenants.len());
        for t in tenants {
            out.push(self.active_grants(t).await?);
        }
        Ok(out)
    }

    /// A grant by id (any state).
    async fn grant(
        &mut self,
        tenant: &TenantId,
        grant: GrantId,
    ) -> Result<Option<Grant>, LedgerError>;

    /// A grant by its idempotency reference.
    async fn grant_by_reference(
        &mut self,
        tenant: &TenantId,
        reference: &str,
    ) -> Result<Option<Grant>, LedgerError>;

    /// Holds of the tenant, selected.
    async fn holds(
        &mut self,
        tenant: &TenantId,
        select: &HoldSelect,
    ) -> Result<Vec<Hold>, LedgerError>;

    /// Open holds of several (tenant, owner) pairs at once, in one list (any order).
    /// The default asks pair by pair; stores override it with one query.
    async fn open_holds_of(
        &mut self,
        pairs: &[(TenantId, String)],
    ) -> Result<Vec<Hold>, LedgerError> {
        let mut out = Vec::new();
        for (t, owner) in pairs {
            out.extend(
                self.holds(t, &HoldSelect::OpenOwnedBy(owner.clone()))
                    .await?,
            );
        }
        Ok(out)
    }

    /// The outcome of a batch already posted, if any.
    async fn batch(&mut self, key: &BatchKey) -> Result<Option<BatchOutcome>, LedgerError>;

    /// The digest stored with a posted batch (`None`: not stored, pruned, or posted
    /// without one). Used to refuse a re-sent key whose content differs.
    async fn batch_digest(&mut self, key: &BatchKey) -> Result<Option<String>, LedgerError>;

    /// A stored price book version.
    async fn price_book(
        &mut self,
        tenant: &TenantId,
        version: u64,
    ) -> Result<Option<PriceBookRow>, LedgerError>;

    /// The stored rows of these (tenant, task) pairs (those that exist, any order). Call
    /// after locking the tenants' wallets.
    async fn tasks_of(&mut self, pairs: &[(TenantId, String)])
    -> Result<Vec<TaskRow>, LedgerError>;

    /// Write the changes (in this transaction).
    async fn write(&mut self, changes: &Changes) -> Result<(), LedgerError>;

    /// Commit durably.
    async fn commit(self: Box<Self>) -> Result<(), LedgerError>;
}

/// The ledger's storage. One implementation per database; all pass the same suite
/// (`tests/store_suite.rs`).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Begin a write transaction.
    async fn begin(&self) -> Result<Box<dyn StoreTx>, LedgerError>;

    /// All tenants, in id order.
    async fn tenants(&self) -> Result<Vec<TenantId>, LedgerError>;

    /// A wallet row (committed state, unlocked).
    async fn wallet(&self, tenant: &TenantId) -> Result<Option<WalletRow>, LedgerError>;

    /// The wallet row and its active grants (open, or still holding credits) read
    /// together from one committed state. The default reads them one after the other;
    /// stores override it with a read transaction so a balance never mixes two states.
    async fn wallet_view(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<(WalletRow, Vec<Grant>)>, LedgerError> {
        let Some(row) = self.wallet(tenant).await? else {
            return Ok(None);
        };
        Ok(Some((row, self.grants(tenant, false).await?)))
    }

    /// Grants of a tenant, in id order; closed ones too if `include_closed`.
    async fn grants(
        &self,
        tenant: &TenantId,
        include_closed: bool,
    ) -> Result<Vec<Grant>, LedgerError>;

    /// Holds of a tenant, in id order; ended ones too if `include_closed`.
    async fn holds(
        &self,
        tenant: &TenantId,
        include_closed: bool,
    ) -> Result<Vec<Hold>, LedgerError>;

    /// Open holds whose timeout is at or before `now`, up to `limit`, oldest first.
    async fn due_holds(
        &self,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<(TenantId, HoldId)>, LedgerError>;

    /// Tenants with a grant whose expiry or reset is due at or before `now`.
    async fn tenants_with_due_grants(
        &self,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<TenantId>, LedgerError>;

    /// Spend (credits posted from holds, grants and the plan) in minute buckets starting
    /// at or after `since`.
    async fn spend_since(
        &self,
        tenant: &TenantId,
        since: Timestamp,
    ) -> Result<Credits, LedgerError>;

    /// Posting rows of `[from, to)`, aggregated by agent, instance, model, feature, task
    /// and funding.
    async fn statement(
        &self,
        tenant: &TenantId,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<StatementRow>, LedgerError>;

    /// Posting rows of a tenant in `[from, to)`, in posting order (detail view).
    async fn postings(
        &self,
        tenant: &TenantId,
        from: Timestamp,
        to: Timestamp,
        limit: u32,
    ) -> Result<Vec<Posting>, LedgerError>;

    /// Posting rows of a tenant with their row ids (SQLite's rowid, PostgreSQL's identity
    /// column), ids above `after_id`, in id order (the order they were written), up to
    /// `limit`: audit verification walks them beside the tenant's chain. The default
    /// says the store cannot.
    async fn posting_rows(
        &self,
        tenant: &TenantId,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<(i64, Posting)>, LedgerError> {
        let _ = (tenant, after_id, limit);
        Err(LedgerError::store(
            "this store cannot list posting rows by id, so the audit chain cannot be checked against them",
        ))
    }

    /// A posted batch's outcome.
    async fn batch(&self, key: &BatchKey) -> Result<Option<BatchOutcome>, LedgerError>;

    /// What the plan funded in `[from, to)`, as the period's usage counts it: the
    /// plan-funded postings' credits without request units (metered), and their request
    /// units (so one calendar month's sum is that month's `PeriodUsage`); and all their
    /// credits (the list price).
    async fn plan_usage(
        &self,
        tenant: &TenantId,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<(PeriodUsage, Credits), LedgerError>;

    /// A task's row.
    async fn task(&self, tenant: &TenantId, task: &str) -> Result<Option<TaskRow>, LedgerError>;

    /// A tenant's tasks, most recently active first, up to `limit`.
    async fn tasks(&self, tenant: &TenantId, limit: u32) -> Result<Vec<TaskRow>, LedgerError>;

    /// Audit records of a tenant with `seq >= from_seq`, in order, up to `limit`.
    async fn audit_records(
        &self,
        tenant: &TenantId,
        from_seq: u64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, LedgerError>;

    /// Drop burn-rate buckets older than `before` (they only serve the last 24 hours);
    /// returns how many were dropped. The default keeps everything.
    async fn prune_spend(&self, before: Timestamp) -> Result<u64, LedgerError> {
        let _ = before;
        Ok(0)
    }

    /// Batch-key retention: delete up to `limit` rows of `batches` posted before `before`
    /// and raise each affected sidecar's watermark (stamped `now`) to the highest sequence deleted (in
    /// the same transaction), so a re-sent old key is still a duplicate. Returns how many
    /// rows were deleted.
    async fn prune_batches(
        &self,
        before: Timestamp,
        now: Timestamp,
        limit: u32,
    ) -> Result<u64, LedgerError>;

    /// The latest price book of a tenant, if any.
    async fn latest_price_book(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<PriceBookRow>, LedgerError>;
}
