//! The ledger service: the operations the authority calls.
//!
//! Each write operation is one store transaction: lock the tenant's wallet row(s), load
//! what the operation touches, apply everything due (resets, expiries, hold timeouts:
//! see [`WalletTx::catch_up`]), apply the operation with the pure rules of
//! [`crate::engine`], write the changes and the audit records, commit durably. A
//! returned `Ok` means committed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::sync::{Arc, Mutex};

use ed25519_dalek::VerifyingKey;
use tollgate_core::{CreditPack, Credits, PriceBook};

use crate::audit::{
    self, AuditRecord, AuditSigner, ChainHead, ExportLine, HoldEnd, VerifyError, VerifyFailure,
    VerifyReport,
};
use crate::clock::{Clock, Timestamp};
use crate::engine::{Ctx, WalletTx};
use crate::error::LedgerError;
use crate::grant::{DeductionOrder, Grant, GrantSpec};
use crate::hold::{Funding, Hold, HoldRequest, HoldStatus};
use crate::ids::{GrantId, HoldId, TenantId};
use crate::policy::{AlertRule, Plan, TenantConfig};
use crate::rating;
use crate::report::{AlertEvent, Balance, MonthBill, Statement};
use crate::store::{BatchRow, Changes, HoldSelect, PriceBookRow, Store, StoreTx, WalletRow};
use crate::task::{TaskOpened, TaskRow, TaskTerms, valid_task_id};
use crate::usage::{BatchOutcome, OverrunAllowance, UsageBatch};

/// Most calendar months one statement bills (a range of 50 years).
const MAX_STATEMENT_MONTHS: usize = 600;

/// Audit records read per query when exporting.
const EXPORT_PAGE: u32 = 10_000;

/// One step of a walk over audit chains.
enum ChainItem<'a> {
    Record(&'a AuditRecord),
    Head(&'a TenantId, ChainHead),
}

/// What a maintenance sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Holds that timed out and were released.
    pub holds_expired: u64,
    /// Tenants whose due grant expiries or resets were applied.
    pub tenants_caught_up: u64,
    /// Burn-rate buckets older than two days dropped.
    pub buckets_pruned: u64,
    /// Batch keys older than the retention dropped (see [`Ledger::with_batch_retention`]).
    pub batches_pruned: u64,
}

/// The credit ledger. Cheap to share (`Arc<Ledger>`); all methods take `&self`.
pub struct Ledger {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    signer: AuditSigner,
    /// Parsed price books by tenant. Safe with several processes: the version in force
    /// is read from the locked wallet row, and a cached book is used only if it has that
    /// version.
    books: Mutex<HashMap<TenantId, Arc<PriceBook>>>,
    /// Keep batch keys this long (seconds); `None` keeps them forever.
    batch_retention: Option<u64>,
    /// Bound on usage charged past the sender's holds; `None`: no bound.
    overrun_allowance: Option<OverrunAllowance>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("signer", &self.signer)
            .finish_non_exhaustive()
    }
}

impl Ledger {
    /// A ledger over `store`, reading time from `clock`, signing audit records with
    /// `signer`.
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, signer: AuditSigner) -> Ledger {
        Ledger {
            store,
            clock,
            signer,
            books: Mutex::new(HashMap::new()),
            batch_retention: None,
            overrun_allowance: None,
        }
    }

    /// Charge at most `allowance` of a batch's usage past the sending sidecar's open
    /// holds (per batch and tenant); the rest is recorded as suspected tampering
    /// ([`TenantPosting::suspect`], and in the batch's audit record) and not charged.
    /// Without it, usage past the holds is charged to grants and plan as far as they go.
    pub fn with_overrun_allowance(mut self, allowance: OverrunAllowance) -> Ledger {
        self.overrun_allowance = Some(allowance);
        self
    }

    /// Prune batch keys older than `secs` at each [`Ledger::sweep`]. A pruned key stays a
    /// duplicate through its sidecar's watermark (the highest sequence pruned), so the
    /// retention only has to outlast the time a sidecar may hold a batch it has not got
    /// acknowledged (its outbox): a batch *never posted* whose sequence is at or below the
    /// watermark would be taken for a duplicate. `secs` of 0 keeps everything.
    pub fn with_batch_retention(mut self, secs: u64) -> Ledger {
        self.batch_retention = (secs > 0).then_some(secs);
        self
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The current time by the ledger's clock.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The public key that verifies this ledger's audit records.
    pub fn public_key(&self) -> VerifyingKey {
        self.signer.public_key()
    }

    fn ctx(&self, now: Timestamp) -> Ctx<'_> {
        Ctx {
            now,
            signer: &self.signer,
        }
    }

    /// One transaction on one tenant's wallet: lock, load, catch up, apply `f`, write,
    /// commit. If `f` fails nothing is written (not even the catch-up).
    /// Change one part of a tenant's configuration in one wallet transaction (audited by
    /// `set_config`), keeping the rest as stored.
    async fn update_config(
        &self,
        tenant: &TenantId,
        change: impl FnOnce(&mut TenantConfig),
    ) -> Result<(), LedgerError> {
        self.with_wallet(tenant, None, |w, ctx| {
            let mut c = w.row.config.clone();
            change(&mut c);
            w.set_config(ctx, c);
            Ok(())
        })
        .await
    }

    async fn with_wallet<T>(
        &self,
        tenant: &TenantId,
        holds: Option<HoldSelect>,
        f: impl FnOnce(&mut WalletTx, Ctx<'_>) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let mut w = load_wallet(tx.as_mut(), tenant, holds.as_ref()).await?;
        let ctx = self.ctx(now);
        w.catch_up(ctx);
        let out = f(&mut w, ctx)?;
        let mut changes = Changes::default();
        w.into_changes(&mut changes);
        if !changes.is_empty() {
            tx.write(&changes).await?;
        }
        tx.commit().await?;
        Ok(out)
    }

    // ----- tenants and configuration -----

    /// Create a tenant's wallet. Fails with [`LedgerError::TenantExists`] if it exists.
    pub async fn create_tenant(
        &self,
        tenant: &TenantId,
        config: TenantConfig,
    ) -> Result<(), LedgerError> {
        validate_config(&config)?;
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let existing = tx.lock_wallets(std::slice::from_ref(tenant)).await?;
        if existing.into_iter().next().flatten().is_some() {
            return Err(LedgerError::TenantExists(tenant.clone()));
        }
        let mut w = WalletTx::create(WalletRow::new(tenant.clone(), TenantConfig::default(), now));
        w.set_config(self.ctx(now), config);
        let mut changes = Changes::default();
        w.into_changes(&mut changes);
        tx.write(&changes).await?;
        tx.commit().await
    }

    /// Create the tenant with a default configuration if it does not exist; `true` if
    /// it was created.
    pub async fn ensure_tenant(&self, tenant: &TenantId) -> Result<bool, LedgerError> {
        match self.create_tenant(tenant, TenantConfig::default()).await {
            Ok(()) => Ok(true),
            Err(LedgerError::TenantExists(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// All tenants.
    pub async fn tenants(&self) -> Result<Vec<TenantId>, LedgerError> {
        self.store.tenants().await
    }

    /// A tenant's configuration.
    pub async fn config(&self, tenant: &TenantId) -> Result<TenantConfig, LedgerError> {
        Ok(self.wallet_row(tenant).await?.config)
    }

    async fn wallet_row(&self, tenant: &TenantId) -> Result<WalletRow, LedgerError> {
        self.store
            .wallet(tenant)
            .await?
            .ok_or_else(|| LedgerError::UnknownTenant(tenant.clone()))
    }

    /// Replace a tenant's configuration (recorded in its audit chain).
    pub async fn set_config(
        &self,
        tenant: &TenantId,
        config: TenantConfig,
    ) -> Result<(), LedgerError> {
        validate_config(&config)?;
        self.with_wallet(tenant, None, |w, ctx| {
            w.set_config(ctx, config);
            Ok(())
        })
        .await
    }

    /// Set (or remove) a tenant's plan. Applies to usage posted from now on; the current
    /// period's plan usage is kept.
    pub async fn set_plan(&self, tenant: &TenantId, plan: Option<Plan>) -> Result<(), LedgerError> {
        if let Some(p) = &plan {
            p.validate()
                .map_err(|e| LedgerError::InvalidInput(format!("plan: {e}")))?;
        }
        self.update_config(tenant, |c| c.plan = plan).await
    }

    /// Set a tenant's deduction order.
    pub async fn set_deduction_order(
        &self,
        tenant: &TenantId,
        order: DeductionOrder,
    ) -> Result<(), LedgerError> {
        self.update_config(tenant, |c| c.deduction_order = order)
            .await
    }

    /// Replace a tenant's alert rules.
    pub async fn set_alert_rules(
        &self,
        tenant: &TenantId,
        rules: Vec<AlertRule>,
    ) -> Result<(), LedgerError> {
        let mut c = self.config(tenant).await?;
        c.alert_rules = rules;
        validate_config(&c)?;
        self.update_config(tenant, |cfg| cfg.alert_rules = c.alert_rules)
            .await
    }

    /// Set (or remove) the price of a tenant's credits in its currency (a credit pack,
    /// e.g. 100,000 credits for $500): balances and statements then show money beside
    /// credits, and credits can be bought in packs.
    pub async fn set_credit_pack(
        &self,
        tenant: &TenantId,
        pack: Option<CreditPack>,
    ) -> Result<(), LedgerError> {
        if let Some(p) = &pack {
            CreditPack::new(p.credits, p.price, p.currency)
                .map_err(|e| LedgerError::InvalidInput(format!("credit pack: {e}")))?;
        }
        self.update_config(tenant, |c| c.credit_pack = pack).await
    }

    /// Install a price book version for a tenant. Versions only go up: a book whose
    /// version is not above the one in force is refused, and so is a book whose prices
    /// overflow on ordinary usage ([`PriceBook::check_ordinary_usage`]): it could not
    /// rate real calls.
    pub async fn set_price_book(
        &self,
        tenant: &TenantId,
        book: &PriceBook,
    ) -> Result<(), LedgerError> {
        book.check_ordinary_usage()
            .map_err(|e| LedgerError::InvalidInput(format!("price book: {e}")))?;
        let json = serde_json::to_string(book)
            .map_err(|e| LedgerError::InvalidInput(format!("price book: {e}")))?;
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let mut row = tx
            .lock_wallets(std::slice::from_ref(tenant))
            .await?
            .into_iter()
            .next()
            .flatten()
            .ok_or_else(|| LedgerError::UnknownTenant(tenant.clone()))?;
        if let Some(v) = row.price_book_version
            && book.version() <= v
        {
            return Err(LedgerError::InvalidInput(format!(
                "price book version {} is not above the version in force ({v}): bump the version",
                book.version()
            )));
        }
        row.price_book_version = Some(book.version());
        let changes = Changes {
            wallets: vec![row],
            price_books: vec![PriceBookRow {
                tenant: tenant.clone(),
                version: book.version(),
                json,
                created_at: now,
            }],
            ..Changes::default()
        };
        tx.write(&changes).await?;
        tx.commit().await?;
        self.lock_books()
            .insert(tenant.clone(), Arc::new(book.clone()));
        Ok(())
    }

    /// The price book in force for a tenant, if any.
    pub async fn price_book(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<Arc<PriceBook>>, LedgerError> {
        let row = self.wallet_row(tenant).await?;
        let Some(v) = row.price_book_version else {
            return Ok(None);
        };
        if let Some(b) = self.cached_book(tenant, v) {
            return Ok(Some(b));
        }
        let mut tx = self.store.begin().await?;
        let book = self.load_book(tx.as_mut(), tenant, v).await?;
        drop(tx);
        Ok(Some(book))
    }

    fn lock_books(&self) -> std::sync::MutexGuard<'_, HashMap<TenantId, Arc<PriceBook>>> {
        // A poisoned cache is still a valid cache (entries are immutable Arcs).
        self.books.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cached_book(&self, tenant: &TenantId, version: u64) -> Option<Arc<PriceBook>> {
        self.lock_books()
            .get(tenant)
            .filter(|b| b.version() == version)
            .cloned()
    }

    async fn load_book(
        &self,
        tx: &mut dyn StoreTx,
        tenant: &TenantId,
        version: u64,
    ) -> Result<Arc<PriceBook>, LedgerError> {
        if let Some(b) = self.cached_book(tenant, version) {
            return Ok(b);
        }
        let row = tx.price_book(tenant, version).await?.ok_or_else(|| {
            LedgerError::Corrupt(format!(
                "tenant {tenant} names price book version {version}, which is not stored"
            ))
        })?;
        let book: PriceBook = serde_json::from_str(&row.json).map_err(|e| {
            LedgerError::Corrupt(format!("stored price book {version} of {tenant}: {e}"))
        })?;
        let book = Arc::new(book);
        self.lock_books().insert(tenant.clone(), book.clone());
        Ok(book)
    }

    // ----- grants -----

    /// Grant credits. With a `reference`, idempotent: the same reference and terms for
    /// the same tenant return the grant made the first time (and grant nothing); the same
    /// reference with other terms is [`LedgerError::GrantReferenceConflict`].
    pub async fn grant(&self, tenant: &TenantId, spec: GrantSpec) -> Result<Grant, LedgerError> {
        WalletTx::validate_grant(&spec, self.clock.now())?;
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let mut w = load_wallet(tx.as_mut(), tenant, None).await?;
        if let Some(r) = &spec.reference
            && let Some(g) = tx.grant_by_reference(tenant, r).await?
        {
            let differing = g.terms_differing_from(&spec);
            if differing.is_empty() {
                return Ok(g);
            }
            return Err(LedgerError::GrantReferenceConflict {
                tenant: tenant.clone(),
                reference: r.clone(),
                grant: g.id,
                differing,
            });
        }
        let ctx = self.ctx(now);
        w.catch_up(ctx);
        let id = w.add_grant(ctx, &spec)?;
        let g = w
            .grants
            .iter()
            .find(|g| g.id == id)
            .cloned()
            .ok_or_else(|| LedgerError::Corrupt("new grant vanished".into()))?;
        let mut changes = Changes::default();
        w.into_changes(&mut changes);
        tx.write(&changes).await?;
        tx.commit().await?;
        Ok(g)
    }

    /// Administrative adjustment: add `credit` to a grant, remove `debit` from its
    /// available credits (counted as expired). Recorded with `reason`.
    pub async fn adjust(
        &self,
        tenant: &TenantId,
        grant: GrantId,
        credit: Credits,
        debit: Credits,
        reason: &str,
    ) -> Result<Grant, LedgerError> {
        if reason.is_empty() || reason.len() > 1000 {
            return Err(LedgerError::InvalidInput(
                "an adjustment needs a reason of 1 to 1000 bytes".into(),
            ));
        }
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let mut w = load_wallet(tx.as_mut(), tenant, None).await?;
        if !w.grants.iter().any(|g| g.id == grant) {
            match tx.grant(tenant, grant).await? {
                Some(g) => w.add_loaded_grant(g),
                None => {
                    return Err(LedgerError::UnknownGrant {
                        tenant: tenant.clone(),
                        grant,
                    });
                }
            }
        }
        let ctx = self.ctx(now);
        w.catch_up(ctx);
        w.adjust(ctx, grant, credit, debit, reason)?;
        let g = w.grants.iter().find(|g| g.id == grant).cloned();
        let mut changes = Changes::default();
        w.into_changes(&mut changes);
        tx.write(&changes).await?;
        tx.commit().await?;
        g.ok_or_else(|| LedgerError::Corrupt("adjusted grant vanished".into()))
    }

    /// A tenant's grants (closed ones too if `include_closed`), as stored.
    pub async fn grants(
        &self,
        tenant: &TenantId,
        include_closed: bool,
    ) -> Result<Vec<Grant>, LedgerError> {
        self.store.grants(tenant, include_closed).await
    }

    // ----- holds -----

    /// Place a hold (back a lease): reserves up to `amount` (at least `min_amount`) from
    /// grants in deduction order, then from the plan's room under its cap.
    pub async fn hold(&self, tenant: &TenantId, req: HoldRequest) -> Result<Hold, LedgerError> {
        self.with_wallet(tenant, None, |w, ctx| w.create_hold(ctx, &req))
            .await
    }

    /// Post a hold: consume `amount` of it (at most what remains) and release the rest.
    pub async fn post_hold(
        &self,
        tenant: &TenantId,
        hold: HoldId,
        amount: Credits,
    ) -> Result<Hold, LedgerError> {
        self.with_wallet(tenant, Some(HoldSelect::Ids(vec![hold])), |w, ctx| {
            w.end_hold(ctx, hold, amount, HoldEnd::Posted)
        })
        .await
    }

    /// Release a hold: its undrawn credits go back (or expire if their grant lapsed).
    /// The hold ends as voided, or as posted if usage drew from it.
    pub async fn void_hold(&self, tenant: &TenantId, hold: HoldId) -> Result<Hold, LedgerError> {
        self.with_wallet(tenant, Some(HoldSelect::Ids(vec![hold])), |w, ctx| {
            w.end_hold(ctx, hold, Credits::ZERO, HoldEnd::Voided)
        })
        .await
    }

    /// Hand `amount` of an open hold's undrawn credits back now (a lease returned in part):
    /// available to others at once; the hold stays open with less reserved.
    pub async fn reduce_hold(
        &self,
        tenant: &TenantId,
        hold: HoldId,
        amount: Credits,
    ) -> Result<Hold, LedgerError> {
        self.with_wallet(tenant, Some(HoldSelect::Ids(vec![hold])), |w, ctx| {
            w.reduce_hold(ctx, hold, amount)
        })
        .await
    }

    /// Settle a hold: release it if it is still open (as [`Ledger::void_hold`]), and
    /// return its final state whether this call ended it, its timeout ended it now, or it
    /// had ended before. Unlike `void_hold`, a hold whose timeout passed is expired *and
    /// committed* here, so the returned `released` is what the store holds.
    pub async fn settle_hold(&self, tenant: &TenantId, hold: HoldId) -> Result<Hold, LedgerError> {
        self.with_wallet(tenant, Some(HoldSelect::Ids(vec![hold])), |w, ctx| match w
            .holds
            .iter()
            .find(|h| h.id == hold)
        {
            Some(h) if h.status != HoldStatus::Open => Ok(h.clone()),
            _ => w.end_hold(ctx, hold, Credits::ZERO, HoldEnd::Voided),
        })
        .await
    }

    /// A tenant's holds (ended ones too if `include_closed`).
    pub async fn holds(
        &self,
        tenant: &TenantId,
        include_closed: bool,
    ) -> Result<Vec<Hold>, LedgerError> {
        self.store.holds(tenant, include_closed).await
    }

    /// Apply what is due: release holds whose timeout passed and apply due grant
    /// expiries and resets, up to `limit` holds and `limit` tenants. The authority calls
    /// this periodically; every other operation also applies what is due for the
    /// tenant it touches, so correctness never depends on the sweep.
    pub async fn sweep(&self, limit: u32) -> Result<SweepReport, LedgerError> {
        let now = self.clock.now();
        let mut report = SweepReport::default();
        let due = self.store.due_holds(now, limit).await?;
        let mut by_tenant: BTreeMap<TenantId, Vec<HoldId>> = BTreeMap::new();
        for (t, h) in due {
            by_tenant.entry(t).or_default().push(h);
        }
        for (t, ids) in by_tenant {
            let n = self
                .with_wallet(&t, Some(HoldSelect::OpenDueBy(now)), |w, _| {
                    Ok(w.holds.iter().filter(|h| ids.contains(&h.id)).count())
                })
                .await?;
            report.holds_expired += n as u64;
        }
        for t in self.store.tenants_with_due_grants(now, limit).await? {
            self.with_wallet(&t, None, |_, _| Ok(())).await?;
            report.tenants_caught_up += 1;
        }
        // Burn rates look back 24 hours; keep two days of buckets.
        report.buckets_pruned = self
            .store
            .prune_spend(now.saturating_sub(2 * 86_400))
            .await?;
        if let Some(keep) = self.batch_retention {
            report.batches_pruned = self
                .store
                .prune_batches(now.saturating_sub(keep), now, limit.saturating_mul(10))
                .await?;
        }
        Ok(report)
    }

    // ----- usage -----

    /// Post one usage batch. Idempotent by its key.
    pub async fn post_batch(&self, batch: &UsageBatch) -> Result<BatchOutcome, LedgerError> {
        let mut v = self.post_batches(std::slice::from_ref(batch)).await?;
        v.pop()
            .ok_or_else(|| LedgerError::Corrupt("no outcome for the batch".into()))
    }

    /// Post several batches in ONE transaction (group commit: one durable commit for
    /// all). Each is idempotent by its key; a key repeated within the call is posted
    /// once. Every tenant named must exist. Outcomes are in input order.
    pub async fn post_batches(
        &self,
        batches: &[UsageBatch],
    ) -> Result<Vec<BatchOutcome>, LedgerError> {
        for b in batches {
            if b.key.sidecar_id.is_empty() || b.key.sidecar_id.len() > 256 {
                return Err(LedgerError::InvalidInput(
                    "batch sidecar id must be 1 to 256 bytes".into(),
                ));
            }
            rating::validate_records(&b.records)?;
        }
        let now = self.clock.now();
        let ctx = self.ctx(now);
        let tenants: Vec<TenantId> = batches
            .iter()
            .flat_map(|b| b.records.iter().map(|r| &r.tenant))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .cloned()
            .collect();
        let mut tx = self.store.begin().await?;
        let rows = tx.lock_wallets(&tenants).await?;
        // Which batches are new: not stored, and the first occurrence of their key in
        // this call (`repeat_of[i]` names the first occurrence of a repeated key).
        let mut outcomes: Vec<Option<BatchOutcome>> = Vec::with_capacity(batches.len());
        let mut repeat_of: Vec<Option<usize>> = Vec::with_capacity(batches.len());
        let mut seen: HashMap<&crate::ids::BatchKey, usize> = HashMap::new();
        for (i, b) in batches.iter().enumerate() {
            if let Some(&first) = seen.get(&b.key) {
                check_same_content(&b.key, batches[first].digest.as_deref(), b)?;
                repeat_of.push(Some(first));
                // Skipped below like a stored duplicate; filled in at the end.
                outcomes.push(Some(BatchOutcome {
                    key: b.key.clone(),
                    duplicate: true,
                    records: b.records.len() as u64,
                    posted_at: now,
                    tenants: Vec::new(),
                }));
                continue;
            }
            seen.insert(&b.key, i);
            repeat_of.push(None);
            let stored = tx.batch(&b.key).await?;
            if stored.is_some() && b.digest.is_some() {
                check_same_content(&b.key, tx.batch_digest(&b.key).await?.as_deref(), b)?;
            }
            outcomes.push(stored.map(|mut o| {
                o.duplicate = true;
                o
            }));
        }
        let mut wallets: BTreeMap<TenantId, WalletTx> = BTreeMap::new();
        let mut books: HashMap<TenantId, Arc<PriceBook>> = HashMap::new();
        if let Some((t, _)) = tenants.iter().zip(&rows).find(|(_, r)| r.is_none()) {
            return Err(LedgerError::UnknownTenant(t.clone()));
        }
        let grants = tx.active_grants_of(&tenants).await?;
        for ((t, row), grants) in tenants.iter().zip(rows).zip(grants) {
            let Some(row) = row else { continue };
            if let Some(v) = row.price_book_version {
                books.insert(t.clone(), self.load_book(tx.as_mut(), t, v).await?);
            }
            wallets.insert(t.clone(), WalletTx::new(row, grants, Vec::new()));
        }
        // Rate the new batches (pure CPU), then load the senders' open holds for the
        // tenants each batch names, then apply what is due, then post.
        let mut rated_batches = Vec::with_capacity(batches.len());
        let mut pairs: BTreeSet<(TenantId, String)> = BTreeSet::new();
        for (b, o) in batches.iter().zip(&outcomes) {
            if o.is_some() {
                rated_batches.push(None);
                continue;
            }
            let rated = rating::rate_records(&b.records, &books);
            for t in rated.keys() {
                if tenants.binary_search(t).is_err() {
                    return Err(LedgerError::UnknownTenant(t.clone()));
                }
                pairs.insert((t.clone(), b.key.sidecar_id.clone()));
            }
            rated_batches.push(Some(rated));
        }
        let pairs: Vec<(TenantId, String)> = pairs.into_iter().collect();
        for h in tx.open_holds_of(&pairs).await? {
            if let Some(w) = wallets.get_mut(&h.tenant) {
                w.add_loaded_holds(vec![h]);
            }
        }
        // The tasks the new batches name (their rows are changed under the wallet locks).
        let task_pairs: Vec<(TenantId, String)> = rated_batches
            .iter()
            .flatten()
            .flat_map(|rated| {
                rated.iter().flat_map(|(t, (_, groups))| {
                    groups
                        .iter()
                        .filter(|g| !g.task.is_empty())
                        .map(move |g| (t.clone(), g.task.to_string()))
                })
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if !task_pairs.is_empty() {
            for row in tx.tasks_of(&task_pairs).await? {
                if let Some(w) = wallets.get_mut(&row.tenant) {
                    w.add_loaded_tasks([row]);
                }
            }
        }
        for w in wallets.values_mut() {
            w.catch_up(ctx);
        }
        let mut changes = Changes::default();
        for ((b, o), rated) in batches.iter().zip(outcomes.iter_mut()).zip(rated_batches) {
            let Some(rated) = rated else { continue };
            if o.is_some() {
                continue;
            }
            let mut tenants_out = Vec::with_capacity(rated.len());
            for (t, (mut summary, mut groups)) in rated {
                let w = wallets
                    .get_mut(&t)
                    .ok_or_else(|| LedgerError::UnknownTenant(t.clone()))?;
                w.post_usage(
                    ctx,
                    &b.key,
                    &mut groups,
                    &mut summary,
                    b.digest.as_deref(),
                    self.overrun_allowance,
                );
                tenants_out.push(summary);
            }
            let outcome = BatchOutcome {
                key: b.key.clone(),
                duplicate: false,
                records: b.records.len() as u64,
                posted_at: now,
                tenants: tenants_out,
            };
            changes.batches.push(BatchRow {
                outcome: outcome.clone(),
                digest: b.digest.clone(),
                signature: b.signature.clone(),
            });
            *o = Some(outcome);
        }
        // Repeats within the call get the first occurrence's outcome.
        for i in 0..outcomes.len() {
            if let Some(first) = repeat_of[i]
                && let Some(mut d) = outcomes[first].clone()
            {
                d.duplicate = true;
                outcomes[i] = Some(d);
            }
        }
        for w in wallets.into_values() {
            w.into_changes(&mut changes);
        }
        if !changes.is_empty() {
            tx.write(&changes).await?;
        }
        tx.commit().await?;
        outcomes
            .into_iter()
            .map(|o| o.ok_or_else(|| LedgerError::Corrupt("batch without outcome".into())))
            .collect()
    }

    /// A posted batch's outcome, if it was posted.
    pub async fn batch(
        &self,
        key: &crate::ids::BatchKey,
    ) -> Result<Option<BatchOutcome>, LedgerError> {
        self.store.batch(key).await
    }

    // ----- reports -----

    /// Spend per hour over the last hour and the last 24 hours.
    pub async fn burn_rates(
        &self,
        tenant: &TenantId,
        now: Timestamp,
    ) -> Result<(Credits, Credits), LedgerError> {
        let h1 = self
            .store
            .spend_since(tenant, now.saturating_sub(3600))
            .await?;
        let h24 = self
            .store
            .spend_since(tenant, now.saturating_sub(86_400))
            .await?;
        Ok((h1, Credits(h24.micros() / 24)))
    }

    /// A tenant's balance now: grants (with what is due applied, as of now), holds,
    /// plan usage, burn rate and projected depletion.
    pub async fn balance(&self, tenant: &TenantId) -> Result<Balance, LedgerError> {
        let now = self.clock.now();
        let w = self.view_as_of(tenant, now).await?;
        let (b1, b24) = self.burn_rates(tenant, now).await?;
        let (spendable, _) = w.spendable(now);
        let t = w.row.totals;
        let upcoming = w.upcoming(now);
        let bill = w
            .row
            .config
            .plan
            .as_ref()
            .and_then(|p| p.bill(&w.row.period_usage).ok());
        Ok(Balance {
            tenant: tenant.clone(),
            at: now,
            granted: t.granted,
            available: t.available.saturating_sub(upcoming),
            upcoming,
            held: t.held,
            consumed: t.consumed,
            expired: t.expired,
            plan_held: t.plan_held,
            plan_consumed: t.plan_consumed,
            overrun: t.overrun,
            period_start: w.row.period_start,
            period_spent: w.row.period_spent,
            period_usage: w.row.period_usage,
            period_bill: bill,
            hard_cap: w.hard_cap(),
            spendable,
            burn_rate_1h: b1,
            burn_rate_24h: b24,
            projected_depletion_at: w.projected_depletion(now, b1),
            credit_pack: w.row.config.credit_pack,
            grants: w.grants,
        })
    }

    /// What a new hold could reserve for the tenant now, and the limit that binds
    /// (a cheaper read than [`Ledger::balance`] for sizing leases; it takes no lock, so
    /// the hold itself is still the check).
    pub async fn spendable(
        &self,
        tenant: &TenantId,
    ) -> Result<(Credits, tollgate_core::LimitKind), LedgerError> {
        let now = self.clock.now();
        Ok(self.view_as_of(tenant, now).await?.spendable(now))
    }

    /// A tenant's wallet and grants as of `now`, read without a lock: what is due is
    /// applied in memory only (the next write persists it).
    async fn view_as_of(&self, tenant: &TenantId, now: Timestamp) -> Result<WalletTx, LedgerError> {
        let (row, grants) = self
            .store
            .wallet_view(tenant)
            .await?
            .ok_or_else(|| LedgerError::UnknownTenant(tenant.clone()))?;
        let mut w = WalletTx::new(row, grants, Vec::new());
        w.catch_up(self.ctx(now));
        Ok(w)
    }

    /// What `workload` would cost the tenant and how its wallet would pay, from now on
    /// (see [`crate::estimate`]): read without a lock, computed in memory, never written.
    pub async fn estimate(
        &self,
        tenant: &TenantId,
        workload: &crate::estimate::Workload,
    ) -> Result<crate::estimate::Estimate, LedgerError> {
        workload.validate()?;
        let now = self.clock.now();
        let w = self.view_as_of(tenant, now).await?;
        let book = self.price_book(tenant).await?;
        let burn = self
            .store
            .spend_since(tenant, now.saturating_sub(86_400))
            .await?;
        Ok(crate::estimate::simulate(
            w,
            &self.signer,
            book,
            workload,
            now,
            burn,
        ))
    }

    /// The usage recorded in `[from, to)` rated under `book` instead, line by line per
    /// agent, model and feature, beside what it was rated when posted
    /// ([`crate::estimate::replay`]). Reads only.
    pub async fn what_if(
        &self,
        tenant: &TenantId,
        from: Timestamp,
        to: Timestamp,
        book: &PriceBook,
    ) -> Result<Vec<crate::estimate::ReplayLine>, LedgerError> {
        let s = self.statement(tenant, from, to).await?;
        Ok(crate::estimate::replay(tenant, &s.rows, book))
    }

    /// Spend in `[from, to)` by agent, model, feature and funding source.
    pub async fn statement(
        &self,
        tenant: &TenantId,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Statement, LedgerError> {
        if to < from {
            return Err(LedgerError::InvalidInput(format!(
                "statement range [{from}, {to}) ends before it starts"
            )));
        }
        let config = self.wallet_row(tenant).await?.config;
        let rows = self.store.statement(tenant, from, to).await?;
        let sum = |f: fn(Funding) -> bool| {
            rows.iter()
                .filter(|r| f(r.funding))
                .fold(Credits::ZERO, |a, r| a.saturating_add(r.amount))
        };
        let plan_bills = match &config.plan {
            Some(plan) => self.month_bills(tenant, plan, from, to).await?,
            None => Vec::new(),
        };
        Ok(Statement {
            tenant: tenant.clone(),
            from,
            to,
            plan_funded: sum(|f| f == Funding::Plan),
            overrun: sum(|f| f == Funding::Overrun),
            rows,
            plan_bills,
            credit_pack: config.credit_pack,
        })
    }

    /// The current month's bill under the tenant's plan (as a statement shows it), if the
    /// tenant has a plan.
    pub async fn month_bill(&self, tenant: &TenantId) -> Result<Option<MonthBill>, LedgerError> {
        let row = self.wallet_row(tenant).await?;
        let Some(plan) = row.config.plan else {
            return Ok(None);
        };
        let now = self.clock.now();
        let start = tollgate_core::time::month_start(now);
        let mut bills = self
            .month_bills(tenant, &plan, start, now.saturating_add(1))
            .await?;
        if bills.is_empty() {
            // Nothing plan-funded yet this month (and no seats): an empty bill.
            let end = tollgate_core::time::next_month_start(start).unwrap_or(u64::MAX);
            let usage = tollgate_core::PeriodUsage::default();
            let bill = plan.bill(&usage).map_err(|e| {
                LedgerError::Overflow(format!("the plan's bill of the month from {start}: {e}"))
            })?;
            return Ok(Some(MonthBill {
                month_start: start,
                month_end: end,
                usage,
                list_price: Credits::ZERO,
                bill,
                open: true,
            }));
        }
        Ok(bills.pop())
    }

    /// The bill of each calendar month that `[from, to)` touches and that saw plan-funded
    /// usage (or, with seats, every such month up to now), from the month's postings,
    /// under the plan in force now.
    async fn month_bills(
        &self,
        tenant: &TenantId,
        plan: &crate::policy::Plan,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<MonthBill>, LedgerError> {
        use tollgate_core::time::{month_start, next_month_start};
        let now = self.clock.now();
        let created = self.wallet_row(tenant).await?.created_at;
        // Nothing is billed before the wallet existed or after now.
        let first = month_start(from.max(created));
        let last = to.min(now.saturating_add(1));
        let mut out = Vec::new();
        let mut m = first;
        while m < last && out.len() < MAX_STATEMENT_MONTHS {
            let Some(end) = next_month_start(m) else {
                break;
            };
            let (usage, list_price) = self.store.plan_usage(tenant, m, end).await?;
            if usage != tollgate_core::PeriodUsage::default() || plan.seats > 0 {
                let bill = plan.bill(&usage).map_err(|e| {
                    LedgerError::Overflow(format!("the plan's bill of the month from {m}: {e}"))
                })?;
                out.push(MonthBill {
                    month_start: m,
                    month_end: end,
                    usage,
                    list_price,
                    bill,
                    open: end > now,
                });
            }
            m = end;
        }
        Ok(out)
    }

    // ----- tasks -----

    /// Register a task with its terms. The first registration of a (tenant, task) sets
    /// them; a later one with the same terms changes nothing ([`TaskOpened::Same`]), one
    /// with other terms changes nothing either and is counted as a conflict on the task
    /// ([`TaskOpened::Conflict`]).
    pub async fn open_task(
        &self,
        tenant: &TenantId,
        task: &str,
        terms: TaskTerms,
    ) -> Result<TaskOpened, LedgerError> {
        if !valid_task_id(task) {
            return Err(LedgerError::InvalidInput(format!(
                "task id must be 1 to {} bytes without control characters",
                crate::task::MAX_TASK_ID_LEN
            )));
        }
        if terms.budget.is_zero() || terms.budget > crate::engine::MAX_GRANT {
            return Err(LedgerError::InvalidInput(format!(
                "task {task:?}: budget {} must be above 0 and at most {} credits",
                terms.budget,
                crate::engine::MAX_GRANT
            )));
        }
        if terms.max_calls == Some(0) {
            return Err(LedgerError::InvalidInput(format!(
                "task {task:?}: max_calls of 0 allows nothing: give None for no limit"
            )));
        }
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        let mut w = load_wallet(tx.as_mut(), tenant, None).await?;
        let pair = [(tenant.clone(), task.to_owned())];
        w.add_loaded_tasks(tx.tasks_of(&pair).await?);
        let row = w.task_mut(task, now);
        row.last_at = now;
        let out = match row.terms {
            None => {
                row.terms = Some(terms);
                row.opened_at = Some(now);
                TaskOpened::Created
            }
            Some(t) if t == terms => TaskOpened::Same,
            Some(kept) => {
                row.conflicts = row.conflicts.saturating_add(1);
                TaskOpened::Conflict { kept }
            }
        };
        let mut changes = Changes::default();
        w.into_changes(&mut changes);
        tx.write(&changes).await?;
        tx.commit().await?;
        Ok(out)
    }

    /// A task's row (terms and what was posted against it), if it was registered or named
    /// by usage.
    pub async fn task(
        &self,
        tenant: &TenantId,
        task: &str,
    ) -> Result<Option<TaskRow>, LedgerError> {
        self.store.task(tenant, task).await
    }

    /// A tenant's tasks, most recently active first, up to `limit`.
    pub async fn tasks(&self, tenant: &TenantId, limit: u32) -> Result<Vec<TaskRow>, LedgerError> {
        self.store.tasks(tenant, limit).await
    }

    /// Evaluate a tenant's alert rules now; alerts that fire are recorded in its audit
    /// chain and returned for delivery. Call after posting usage (or on a timer).
    pub async fn evaluate_alerts(&self, tenant: &TenantId) -> Result<Vec<AlertEvent>, LedgerError> {
        let now = self.clock.now();
        let (b1, b24) = self.burn_rates(tenant, now).await?;
        self.with_wallet(tenant, None, |w, ctx| Ok(w.evaluate_alerts(ctx, b1, b24)))
            .await
    }

    // ----- audit -----

    /// Audit records of a tenant from `from_seq`, up to `limit`.
    pub async fn audit_records(
        &self,
        tenant: &TenantId,
        from_seq: u64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, LedgerError> {
        // Stores keep sequence numbers as signed 64-bit integers, so none lies past
        // i64::MAX: a page starting there is empty, not an overflow error (a reader
        // paging with `after_seq = u64::MAX` asks for nothing newer than everything).
        if i64::try_from(from_seq).is_err() {
            return Ok(Vec::new());
        }
        self.store.audit_records(tenant, from_seq, limit).await
    }

    /// Write an export (JSON lines, see [`crate::audit`]) of the given tenants' chains
    /// (all tenants if `None`), streaming page by page.
    pub async fn export_audit<W: Write>(
        &self,
        tenants: Option<&[TenantId]>,
        out: W,
    ) -> Result<(), LedgerError> {
        let mut w = audit::ExportWriter::new(out, &self.signer, self.clock.now())?;
        self.each_audit_record(tenants, |item| match item {
            ChainItem::Record(r) => w.record(r),
            ChainItem::Head(t, h) => {
                w.head(t, h);
                Ok(())
            }
        })
        .await?;
        w.finish().map(|_| ())
    }

    /// Visit the chains of `tenants` (all if `None`) up to each head as the wallet row
    /// says at the start of that tenant's walk: every record in order, then the head.
    async fn each_audit_record(
        &self,
        tenants: Option<&[TenantId]>,
        mut visit: impl FnMut(ChainItem<'_>) -> Result<(), LedgerError>,
    ) -> Result<(), LedgerError> {
        let list = match tenants {
            Some(t) => t.to_vec(),
            None => self.store.tenants().await?,
        };
        for t in list {
            let head = self.wallet_row(&t).await?.audit_head;
            let mut from = 1;
            while from <= head.seq {
                let page = self.store.audit_records(&t, from, EXPORT_PAGE).await?;
                let Some(last) = page.last() else { break };
                from = last.seq + 1;
                for r in page.iter().filter(|r| r.seq <= head.seq) {
                    visit(ChainItem::Record(r))?;
                }
            }
            visit(ChainItem::Head(&t, head))?;
        }
        Ok(())
    }

    /// Verify the given tenants' chains in the store (all if `None`) with this ledger's
    /// public key, as an export would be verified, and check the live tables against
    /// what each chain vouches for (see [`audit::TableCheck`]): every posting row, each
    /// grant's balance, the wallet totals. This is what `tollgate ctl audit verify` does
    /// against the database; it streams. The outer error is a store failure; the inner
    /// one names the first bad record, or the first row that differs from the chain
    /// (table, row, column, the chain's value and the table's).
    ///
    /// Tenants are verified one by one, each on its own verifier (their chains are
    /// independent). The reads take no lock, so a movement committed while a tenant is checked can make
    /// its tables look ahead of the chain read: a table mismatch is believed only if the
    /// tenant's chain head did not move meanwhile; otherwise that tenant is checked again
    /// (up to three times in all).
    pub async fn verify_audit(
        &self,
        tenants: Option<&[TenantId]>,
    ) -> Result<Result<VerifyReport, VerifyError>, LedgerError> {
        let opts = audit::VerifyOptions {
            allow_empty: true,
            ..Default::default()
        };
        let header = ExportLine::Header {
            format: audit::EXPORT_FORMAT.into(),
            version: audit::EXPORT_VERSION,
            public_key: self.signer.public_key_hex(),
            exported_at: self.clock.now(),
        };
        let list = match tenants {
            Some(t) => t.to_vec(),
            None => self.store.tenants().await?,
        };
        let mut report = VerifyReport {
            tables: Some(audit::TablesChecked::default()),
            ..Default::default()
        };
        // Records numbered as an export of these tenants would number them (the header
        // is line 1, each tenant's records follow, the heads come last), so a failure
        // names the line the same record has in an export.
        let mut line = 1;
        for t in &list {
            let mut attempt = 1;
            loop {
                // Each tenant (and each attempt) on a verifier of its own: chains are
                // independent, and a retry starts the tenant over.
                let mut v = audit::Verifier::with_options(&self.public_key(), opts.clone());
                if let Err(e) = v.feed(header.clone()) {
                    return Ok(Err(e));
                }
                v.skip_lines(line - 1);
                let mut checked = audit::TablesChecked::default();
                let (head, res) = self.verify_tenant(t, &mut v, &mut checked).await?;
                let res = res.and_then(|()| v.finish());
                match res {
                    Ok(r) => {
                        // An export writes every tenant's head after all records.
                        line = line.saturating_add(usize::try_from(head.seq).unwrap_or(usize::MAX));
                        report.tenants.extend(r.tenants);
                        report.heads.extend(r.heads);
                        if let Some(all) = report.tables.as_mut() {
                            all.postings += checked.postings;
                            all.grants += checked.grants;
                            all.wallets += checked.wallets;
                        }
                        break;
                    }
                    Err(e)
                        if attempt < 3
                            && matches!(e.failure, VerifyFailure::TableMismatch(_))
                            && self.wallet_row(t).await?.audit_head != head =>
                    {
                        attempt += 1;
                    }
                    Err(e) => return Ok(Err(e)),
                }
            }
        }
        Ok(Ok(report))
    }

    /// One tenant of [`Ledger::verify_audit`]: its chain up to the head its wallet row
    /// states (returned), then its posting rows, wallet totals and grants.
    async fn verify_tenant(
        &self,
        t: &TenantId,
        v: &mut audit::Verifier,
        checked: &mut audit::TablesChecked,
    ) -> Result<(ChainHead, Result<(), VerifyError>), LedgerError> {
        let row = self.wallet_row(t).await?;
        let head = row.audit_head;
        let fail = |v: &audit::Verifier, m: audit::Mismatch| v.error_here(t, m.seq, m.failure);
        let mut check = audit::TableCheck::new();
        let mut rows = PostingCursor::new(self.store.as_ref(), t);
        let mut from = 1;
        while from <= head.seq {
            let page = self.store.audit_records(t, from, EXPORT_PAGE).await?;
            let Some(last) = page.last() else { break };
            from = last.seq + 1;
            for r in page.iter().filter(|r| r.seq <= head.seq) {
                if let Err(e) = v.feed(ExportLine::Record(r.clone())) {
                    return Ok((head, Err(e)));
                }
                // Signed by the authority, yet not an event this ledger knows: a newer
                // version wrote it, and nothing can be said about the tables.
                let event = match r.event() {
                    Ok(ev) => ev,
                    Err(e) => {
                        let f = VerifyFailure::Malformed(e.to_string());
                        return Ok((head, Err(v.error_here(t, Some(r.seq), f))));
                    }
                };
                check.record(r.seq, &event);
                while let Some(exp) = check.next_expected() {
                    if let Err(m) = rows.check(&exp).await? {
                        return Ok((head, Err(fail(v, m))));
                    }
                }
            }
        }
        if let Err(e) = v.feed(self.signer.sign_head(t, &head, self.clock.now())) {
            return Ok((head, Err(e)));
        }
        if let Some((id, p)) = rows.next().await? {
            return Ok((
                head,
                Err(fail(v, audit::TableCheck::extra_row(head.seq, id, &p))),
            ));
        }
        checked.postings = rows.seen;
        if let Err(m) = check.check_wallet(t, &row.totals) {
            return Ok((head, Err(fail(v, m))));
        }
        checked.wallets = 1;
        let grants = self.store.grants(t, true).await?;
        if let Err(m) = check.check_grants(&grants) {
            return Ok((head, Err(fail(v, m))));
        }
        checked.grants = grants.len() as u64;
        Ok((head, Ok(())))
    }
}

/// A tenant's posting rows in row order, read page by page, for [`Ledger::verify_audit`].
struct PostingCursor<'a> {
    store: &'a dyn Store,
    tenant: &'a TenantId,
    buf: std::collections::VecDeque<(i64, crate::usage::Posting)>,
    after: i64,
    done: bool,
    seen: u64,
}

impl<'a> PostingCursor<'a> {
    fn new(store: &'a dyn Store, tenant: &'a TenantId) -> Self {
        PostingCursor {
            store,
            tenant,
            buf: Default::default(),
            after: 0,
            done: false,
            seen: 0,
        }
    }

    async fn peek(&mut self) -> Result<Option<&(i64, crate::usage::Posting)>, LedgerError> {
        if self.buf.is_empty() && !self.done {
            let page = self
                .store
                .posting_rows(self.tenant, self.after, EXPORT_PAGE)
                .await?;
            match page.last() {
                Some((id, _)) => self.after = *id,
                None => self.done = true,
            }
            self.buf.extend(page);
        }
        Ok(self.buf.front())
    }

    async fn next(&mut self) -> Result<Option<(i64, crate::usage::Posting)>, LedgerError> {
        self.peek().await?;
        let r = self.buf.pop_front();
        if r.is_some() {
            self.seen += 1;
        }
        Ok(r)
    }

    /// Match the next row(s) with a posting the chain lists.
    async fn check(
        &mut self,
        exp: &audit::ExpectedPosting,
    ) -> Result<Result<(), audit::Mismatch>, LedgerError> {
        Ok(match exp {
            audit::ExpectedPosting::Usage {
                seq,
                batch,
                posting,
            } => match self.next().await? {
                Some((id, row)) => {
                    audit::TableCheck::check_usage_row(*seq, batch, posting, id, &row)
                }
                None => Err(audit::TableCheck::missing_row(exp)),
            },
            audit::ExpectedPosting::HoldPost { seq, hold, amount } => {
                let mut group = Vec::new();
                while let Some((_, p)) = self.peek().await?
                    && p.batch.is_none()
                    && p.hold == Some(*hold)
                {
                    if let Some(r) = self.next().await? {
                        group.push(r);
                    }
                }
                audit::TableCheck::check_hold_post_rows(*seq, *hold, *amount, &group)
            }
        })
    }
}

fn validate_config(c: &TenantConfig) -> Result<(), LedgerError> {
    if c.deduction_order.keys.len() > 8 {
        return Err(LedgerError::InvalidInput(
            "deduction order has more than 8 keys".into(),
        ));
    }
    if let Some(p) = &c.plan {
        p.validate()
            .map_err(|e| LedgerError::InvalidInput(format!("plan: {e}")))?;
    }
    let mut ids = BTreeSet::new();
    for r in &c.alert_rules {
        if r.id.is_empty() || r.id.len() > 128 {
            return Err(LedgerError::InvalidInput(
                "alert rule id must be 1 to 128 bytes".into(),
            ));
        }
        if !ids.insert(&r.id) {
            return Err(LedgerError::InvalidInput(format!(
                "alert rule id {:?} appears twice",
                r.id
            )));
        }
        match r.condition {
            crate::policy::AlertCondition::BudgetUsedPercent { percent }
                if !(1..=100).contains(&percent) =>
            {
                return Err(LedgerError::InvalidInput(format!(
                    "alert rule {:?}: percent must be 1 to 100",
                    r.id
                )));
            }
            crate::policy::AlertCondition::DepletionWithin { hours: 0 } => {
                return Err(LedgerError::InvalidInput(format!(
                    "alert rule {:?}: hours must be above 0",
                    r.id
                )));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Lock and load one tenant's wallet with its active grants and the selected holds.
async fn load_wallet(
    tx: &mut dyn StoreTx,
    tenant: &TenantId,
    holds: Option<&HoldSelect>,
) -> Result<WalletTx, LedgerError> {
    let row = tx
        .lock_wallets(std::slice::from_ref(tenant))
        .await?
        .into_iter()
        .next()
        .flatten()
        .ok_or_else(|| LedgerError::UnknownTenant(tenant.clone()))?;
    let grants = tx.active_grants(tenant).await?;
    let holds = match holds {
        Some(sel) => tx.holds(tenant, sel).await?,
        None => Vec::new(),
    };
    Ok(WalletTx::new(row, grants, holds))
}

/// A key posted (or queued) before with digest `first` may be re-sent only unchanged: a
/// different digest is another batch reusing the key, refused rather than answered as a
/// duplicate (which would silently drop it). Keys pruned past the retention, and batches
/// without a digest, cannot be compared and stay plain duplicates.
fn check_same_content(
    key: &crate::ids::BatchKey,
    first: Option<&str>,
    batch: &UsageBatch,
) -> Result<(), LedgerError> {
    match (first, batch.digest.as_deref()) {
        (Some(stored), Some(sent)) if stored != sent => Err(LedgerError::BatchConflict {
            key: key.clone(),
            stored: stored.to_string(),
            sent: sent.to_string(),
        }),
        _ => Ok(()),
    }
}
