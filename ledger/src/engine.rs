//! The ledger's rules, as pure in-memory state transitions on one tenant's locked wallet.
//!
//! A [`WalletTx`] is loaded from the store inside a transaction (wallet row, active
//! grants, the holds the operation touches), changed here synchronously, and written back
//! as [`Changes`] in the same transaction. Nothing here does I/O, so the rules are the
//! same whatever the store, and the property tests exercise exactly this code.
//!
//! Invariants kept by every method (checked by `tests/properties.rs`):
//! - per grant: `granted = available + held + consumed + expired`;
//! - the wallet totals equal the sums over its grants (plus plan-funded and overrun, which
//!   are tracked beside them and never create grant credits);
//! - nothing is negative (all amounts are `u64`, and no move takes more than is there);
//! - with a plan hard cap: the month's plan charge (`Plan::bill(period_usage)`'s usage
//!   charge) never exceeds the cap: plan-funded usage is taken only within the room
//!   the cap leaves, and what does not fit is overrun;
//! - every movement appends exactly one audit record.

use std::collections::{BTreeMap, BTreeSet};

use tollgate_core::rating::PER_MILLE;
use tollgate_core::time::month_start;
use tollgate_core::{Credits, LimitKind, PeriodUsage};

use crate::audit::{AuditEvent, AuditPosting, AuditSigner, HoldEnd, WalletTotals};
use crate::clock::Timestamp;
use crate::error::LedgerError;
use crate::grant::{Grant, GrantSpec};
use crate::hold::{Funding, Hold, HoldPart, HoldRequest, HoldStatus};
use crate::ids::{BatchKey, GrantId, HoldId};
use crate::policy::{AlertCondition, TenantConfig};
use crate::report::AlertEvent;
use crate::store::{AlertRuleState, Changes, WalletRow};
use crate::task::TaskRow;
use crate::usage::{Name, OverrunAllowance, Posting, TenantPosting};

/// Largest single grant or adjustment: one billion credits. Keeps every total far from
/// `u64` overflow even after thousands of resets.
pub const MAX_GRANT: Credits = Credits(1_000_000_000 * tollgate_core::MICROS_PER_CREDIT);

/// Longest grant reference, in bytes.
pub const MAX_REFERENCE_LEN: usize = 200;

/// Time and signer of one operation.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    /// The operation's time (read once from the clock).
    pub now: Timestamp,
    /// Audit signer.
    pub signer: &'a AuditSigner,
}

/// Usage of one (agent, instance, model, feature, task) group of a batch, already rated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageGroup {
    /// The agent's name.
    pub agent: Name,
    /// Agent instance.
    pub agent_instance: Name,
    /// Model.
    pub model: Name,
    /// Feature.
    pub feature: Name,
    /// Task ("" = none).
    pub task: Name,
    /// Rated credits.
    pub amount: Credits,
    /// Calls (completion records not counted).
    pub records: u64,
    /// Agentic Work Units reported (before de-duplication per task).
    pub work_units: u64,
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
    /// Outcomes.
    pub outcomes: u64,
    /// Request units (milli-requests) of per-request-priced records; 0 for metered
    /// groups (a group is one model, so one pricing kind).
    pub request_units_milli: u64,
}

impl Default for UsageGroup {
    fn default() -> UsageGroup {
        let empty = Name::from("");
        UsageGroup {
            agent: empty.clone(),
            agent_instance: empty.clone(),
            model: empty.clone(),
            feature: empty.clone(),
            task: empty,
            amount: Credits::ZERO,
            records: 0,
            work_units: 0,
            input_tokens: 0,
            output_tokens: 0,
            outcomes: 0,
            request_units_milli: 0,
        }
    }
}

/// Room left under a plan's hard cap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanRoom {
    /// Metered credits.
    pub metered: Credits,
    /// Request units (milli-requests).
    pub request_milli: u64,
}

impl PlanRoom {
    /// No cap.
    pub const UNBOUNDED: PlanRoom = PlanRoom {
        metered: Credits::MAX,
        request_milli: u64::MAX,
    };
}

/// The request units that `part` of a group's `amount` credits stand for (rounded up).
fn units_for(units: u64, amount: Credits, part: Credits) -> u64 {
    if units == 0 || amount.is_zero() {
        return 0;
    }
    let v = (u128::from(units) * u128::from(part.micros())).div_ceil(u128::from(amount.micros()));
    u64::try_from(v).unwrap_or(u64::MAX).min(units)
}

/// One tenant's wallet, locked and loaded, being changed.
#[derive(Debug, Clone)]
pub struct WalletTx {
    /// The wallet row.
    pub row: WalletRow,
    /// Active grants (open, or still holding credits), plus any loaded by id.
    pub grants: Vec<Grant>,
    /// Loaded holds.
    pub holds: Vec<Hold>,
    new_wallet: bool,
    row_changed: bool,
    changed_grants: BTreeSet<GrantId>,
    changed_holds: BTreeSet<HoldId>,
    audit: Vec<crate::audit::AuditRecord>,
    postings: Vec<Posting>,
    spend: BTreeMap<Timestamp, Credits>,
    /// Tasks the usage posted names, by id (loaded, or new), and which changed.
    tasks: BTreeMap<String, TaskRow>,
    changed_tasks: BTreeSet<String>,
}

/// One source's payment of (part of) a usage group, before it becomes a posting.
struct Draw {
    hold: Option<HoldId>,
    funding: Funding,
    amount: Credits,
    /// Request units (milli) these credits stand for (plan draws: what the period took).
    units: u64,
    before: Credits,
    after: Credits,
}

/// One part of a hold drawn: (source, credits, request units, balance before, after).
type HoldDraw = (Funding, Credits, u64, Credits, Credits);

/// What a batch's summary says each source paid so far, in micro-credits.
#[derive(Debug, Clone, Copy)]
struct Paid {
    from_holds: u64,
    from_grants: u64,
    from_plan: u64,
    overrun: u64,
    suspect: u64,
}

impl Paid {
    fn of(s: &TenantPosting) -> Paid {
        Paid {
            from_holds: s.from_holds.micros(),
            from_grants: s.from_grants.micros(),
            from_plan: s.from_plan.micros(),
            overrun: s.overrun.micros(),
            suspect: s.suspect.micros(),
        }
    }

    /// What was paid since `earlier` (the summary only grows).
    fn since(self, earlier: &Paid) -> Paid {
        Paid {
            from_holds: self.from_holds.wrapping_sub(earlier.from_holds),
            from_grants: self.from_grants.wrapping_sub(earlier.from_grants),
            from_plan: self.from_plan.wrapping_sub(earlier.from_plan),
            overrun: self.overrun.wrapping_sub(earlier.overrun),
            suspect: self.suspect.wrapping_sub(earlier.suspect),
        }
    }
}

fn sum(xs: impl Iterator<Item = Credits>) -> Credits {
    xs.fold(Credits::ZERO, Credits::saturating_add)
}

/// Past the sender's holds: at most the allowance's `room`; the rest is suspected
/// tampering (counted, not charged). Returns what is left to pay.
fn past_holds(room: &mut Option<Credits>, left: Credits, summary: &mut TenantPosting) -> Credits {
    let Some(room) = room.as_mut() else {
        return left;
    };
    let beyond = left.saturating_sub(*room);
    *room = room.saturating_sub(left);
    put(&mut summary.suspect, beyond);
    left.saturating_sub(beyond)
}

fn take(from: &mut Credits, x: Credits) {
    debug_assert!(*from >= x, "moving {x} out of {from}");
    *from = from.saturating_sub(x);
}

fn put(to: &mut Credits, x: Credits) {
    *to = to.saturating_add(x);
}

impl WalletTx {
    /// Wrap loaded state.
    pub fn new(row: WalletRow, grants: Vec<Grant>, holds: Vec<Hold>) -> WalletTx {
        WalletTx {
            row,
            grants,
            holds,
            new_wallet: false,
            row_changed: false,
            changed_grants: BTreeSet::new(),
            changed_holds: BTreeSet::new(),
            audit: Vec::new(),
            postings: Vec::new(),
            spend: BTreeMap::new(),
            tasks: BTreeMap::new(),
            changed_tasks: BTreeSet::new(),
        }
    }

    /// Add task rows loaded in the transaction (for usage that names them).
    pub fn add_loaded_tasks(&mut self, rows: impl IntoIterator<Item = TaskRow>) {
        for r in rows {
            self.tasks.entry(r.task.clone()).or_insert(r);
        }
    }

    /// A loaded task row, if any.
    pub fn task(&self, task: &str) -> Option<&TaskRow> {
        self.tasks.get(task)
    }

    /// The task's row to change (created if it was never seen), marked changed.
    pub fn task_mut(&mut self, task: &str, now: Timestamp) -> &mut TaskRow {
        self.changed_tasks.insert(task.to_owned());
        let tenant = self.row.tenant.clone();
        self.tasks
            .entry(task.to_owned())
            .or_insert_with(|| TaskRow::new(tenant, task.to_owned(), now))
    }

    /// A new wallet (to be inserted).
    pub fn create(row: WalletRow) -> WalletTx {
        let mut w = WalletTx::new(row, Vec::new(), Vec::new());
        w.new_wallet = true;
        w
    }

    /// Add holds loaded later in the transaction (skips ones already loaded).
    pub fn add_loaded_holds(&mut self, holds: Vec<Hold>) {
        for h in holds {
            if !self.holds.iter().any(|x| x.id == h.id) {
                self.holds.push(h);
            }
        }
    }

    /// Add a grant loaded later (skips one already loaded).
    pub fn add_loaded_grant(&mut self, g: Grant) {
        if !self.grants.iter().any(|x| x.id == g.id) {
            self.grants.push(g);
        }
    }

    /// `true` if the operation changed anything.
    pub fn is_changed(&self) -> bool {
        self.new_wallet || self.row_changed || !self.audit.is_empty()
    }

    /// Move everything written into `changes`.
    pub fn into_changes(self, changes: &mut Changes) {
        self.check_conserved();
        let tenant = self.row.tenant.clone();
        for id in &self.changed_grants {
            if let Some(g) = self.grants.iter().find(|g| g.id == *id) {
                changes.grants.push(g.clone());
            }
        }
        for id in &self.changed_holds {
            if let Some(h) = self.holds.iter().find(|h| h.id == *id) {
                changes.holds.push(h.clone());
            }
        }
        changes.postings.extend(self.postings);
        changes.audit.extend(self.audit);
        for id in &self.changed_tasks {
            if let Some(t) = self.tasks.get(id) {
                changes.tasks.push(t.clone());
            }
        }
        for (minute, c) in self.spend {
            changes.spend_buckets.push((tenant.clone(), minute, c));
        }
        if self.new_wallet {
            changes.new_wallets.push(self.row);
        } else if self.row_changed {
            changes.wallets.push(self.row);
        }
    }

    /// Invariant 1 (conservation), checked on every transaction of a debug build: for
    /// the wallet and each grant, `granted = available + held + consumed + expired`; for
    /// each hold, what it drew and released is at most its amount, and all of it once
    /// it ended.
    fn check_conserved(&self) {
        let t = &self.row.totals;
        let parts = |a: Credits, h: Credits, c: Credits, e: Credits| {
            [a, h, c, e]
                .iter()
                .map(|x| u128::from(x.micros()))
                .sum::<u128>()
        };
        debug_assert_eq!(
            u128::from(t.granted.micros()),
            parts(t.available, t.held, t.consumed, t.expired),
            "wallet {}: granted = available + held + consumed + expired ({t:?})",
            self.row.tenant
        );
        for g in &self.grants {
            debug_assert_eq!(
                u128::from(g.granted.micros()),
                parts(g.available, g.held, g.consumed, g.expired),
                "{} of {}: granted = available + held + consumed + expired",
                g.id,
                g.tenant
            );
        }
        for h in &self.holds {
            let settled = u128::from(h.drawn.micros()) + u128::from(h.released.micros());
            debug_assert!(
                settled <= u128::from(h.amount.micros()),
                "{} of {}: drew {} and released {} of {}",
                h.id,
                h.tenant,
                h.drawn,
                h.released,
                h.amount
            );
            debug_assert!(
                h.status == HoldStatus::Open || settled == u128::from(h.amount.micros()),
                "{} of {} ended ({:?}) with {} of {} neither drawn nor released",
                h.id,
                h.tenant,
                h.status,
                u128::from(h.amount.micros()) - settled,
                h.amount
            );
        }
    }

    fn record(&mut self, ctx: Ctx<'_>, event: AuditEvent) -> u64 {
        let rec = ctx
            .signer
            .append(&mut self.row.audit_head, &self.row.tenant, ctx.now, &event);
        let seq = rec.seq;
        self.audit.push(rec);
        self.row_changed = true;
        seq
    }

    fn totals(&self) -> WalletTotals {
        self.row.totals
    }

    fn grant_mut(&mut self, id: GrantId) -> Option<&mut Grant> {
        self.changed_grants.insert(id);
        self.grants.iter_mut().find(|g| g.id == id)
    }

    /// The plan's hard cap on the period's charge, if any.
    pub fn hard_cap(&self) -> Option<Credits> {
        self.row.config.plan.as_ref().and_then(|p| p.hard_cap)
    }

    /// How much more plan-funded usage the period can take before the plan's charge
    /// would pass its hard cap: metered credits, and request units (milli-requests).
    /// Zero without a plan; unbounded without a cap.
    pub fn plan_room(&self) -> PlanRoom {
        let Some(plan) = &self.row.config.plan else {
            return PlanRoom::default();
        };
        let Some(cap) = plan.hard_cap else {
            return PlanRoom::UNBOUNDED;
        };
        let usage = &self.row.period_usage;
        let Ok(bill) = plan.bill(usage) else {
            return PlanRoom::default();
        };
        let head = cap.saturating_sub(bill.usage_charge);
        // `bill` succeeded, so the allowances fit.
        let metered = plan
            .credit_allowance()
            .unwrap_or(Credits::ZERO)
            .saturating_sub(usage.metered)
            .saturating_add(head);
        let included_milli = plan
            .request_allowance()
            .unwrap_or(0)
            .saturating_mul(PER_MILLE);
        let extra_milli = if plan.overage_request_price.is_zero() {
            u64::MAX
        } else {
            let m = u128::from(head.micros()) * u128::from(PER_MILLE)
                / u128::from(plan.overage_request_price.micros());
            u64::try_from(m).unwrap_or(u64::MAX)
        };
        PlanRoom {
            metered,
            request_milli: included_milli
                .saturating_sub(usage.request_units_milli)
                .saturating_add(extra_milli),
        }
    }

    /// Fund up to `credits` of usage from the plan, within its room; `units` is the
    /// request units (milli) those credits stand for (0 for metered usage). Returns the
    /// credits taken and the request units the period's usage took with them (recorded
    /// in the period's usage). `reserved` is room set aside for open holds' plan parts
    /// that this draw must leave alone (zero for a draw from a hold's own plan part,
    /// which was reserved for it).
    fn plan_take(&mut self, credits: Credits, units: u64, reserved: Credits) -> (Credits, u64) {
        if self.row.config.plan.is_none() || credits.is_zero() {
            return (Credits::ZERO, 0);
        }
        let mut room = self.plan_room();
        if !reserved.is_zero() {
            room.metered = room.metered.saturating_sub(reserved);
            // The same credits in request units, at the overage price.
            let price = self
                .row
                .config
                .plan
                .as_ref()
                .map_or(0, |p| p.overage_request_price.micros());
            if price > 0 {
                let milli =
                    u128::from(reserved.micros()) * u128::from(PER_MILLE) / u128::from(price);
                room.request_milli = room
                    .request_milli
                    .saturating_sub(u64::try_from(milli).unwrap_or(u64::MAX));
            }
        }
        let usage = &mut self.row.period_usage;
        if units == 0 {
            let x = credits.min(room.metered);
            usage.metered = usage.metered.saturating_add(x);
            (x, 0)
        } else {
            let k = units.min(room.request_milli);
            let x = if k == units {
                credits
            } else {
                let v = u128::from(credits.micros()) * u128::from(k) / u128::from(units);
                Credits(u64::try_from(v).unwrap_or(0))
            };
            if x.is_zero() {
                // Nothing funded: the period's usage takes no request units either.
                return (Credits::ZERO, 0);
            }
            usage.request_units_milli = usage.request_units_milli.saturating_add(k);
            (x, k)
        }
    }

    /// Credits in usable grants at `now`.
    pub fn usable_available(&self, now: Timestamp) -> Credits {
        self.grants
            .iter()
            .filter(|g| g.is_usable(now))
            .fold(Credits::ZERO, |a, g| a.saturating_add(g.available))
    }

    /// Credits in grants not started yet.
    pub fn upcoming(&self, now: Timestamp) -> Credits {
        self.grants
            .iter()
            .filter(|g| !g.closed && g.starts_at > now)
            .fold(Credits::ZERO, |a, g| a.saturating_add(g.available))
    }

    /// What a new hold could reserve now, and the limit that binds: usable grants, plus
    /// (with a plan) the plan's metered room under its cap less what holds already
    /// reserve from the plan.
    pub fn spendable(&self, now: Timestamp) -> (Credits, LimitKind) {
        let grants = self.usable_available(now);
        if self.row.config.plan.is_none() {
            return (grants, LimitKind::TenantWallet);
        }
        let room = self
            .plan_room()
            .metered
            .saturating_sub(self.row.totals.plan_held);
        let limit = if self.hard_cap().is_some() {
            LimitKind::HardCap
        } else {
            LimitKind::TenantWallet
        };
        (grants.saturating_add(room), limit)
    }

    /// Grants usable at `now`, in deduction order.
    fn deduction_order(&self, now: Timestamp) -> Vec<GrantId> {
        let order = &self.row.config.deduction_order;
        let mut usable: Vec<&Grant> = self.grants.iter().filter(|g| g.is_usable(now)).collect();
        usable.sort_by(|a, b| order.compare(a, b));
        usable.into_iter().map(|g| g.id).collect()
    }

    /// Apply everything due at `ctx.now`: the cap period rollover, grant resets and
    /// expiries (in time order), and the timeouts of loaded open holds.
    pub fn catch_up(&mut self, ctx: Ctx<'_>) {
        let period = month_start(ctx.now);
        if period > self.row.period_start {
            self.row.period_start = period;
            self.row.period_spent = Credits::ZERO;
            self.row.period_usage = PeriodUsage::default();
            self.row_changed = true;
        }
        // Grant events in time order; ties by grant id; resets before expiry.
        loop {
            let mut next: Option<(Timestamp, GrantId, bool)> = None;
            for g in &self.grants {
                if g.closed {
                    continue;
                }
                let reset = g
                    .next_reset_at
                    .filter(|&r| r <= ctx.now && g.expires_at.is_none_or(|e| r < e))
                    .map(|r| (r, g.id, true));
                let expire = g
                    .expires_at
                    .filter(|&e| e <= ctx.now)
                    .map(|e| (e, g.id, false));
                for cand in [reset, expire].into_iter().flatten() {
                    let key = |c: &(Timestamp, GrantId, bool)| (c.0, c.1, !c.2);
                    if next.as_ref().is_none_or(|n| key(&cand) < key(n)) {
                        next = Some(cand);
                    }
                }
            }
            match next {
                Some((at, id, true)) => self.reset_grant(ctx, id, at),
                Some((_, id, false)) => self.expire_grant(ctx, id),
                None => break,
            }
        }
        let due: Vec<HoldId> = self
            .holds
            .iter()
            .filter(|h| h.status == HoldStatus::Open && h.expires_at <= ctx.now)
            .map(|h| h.id)
            .collect();
        for id in due {
            // Loaded and open: cannot fail.
            let _ = self.end_hold(ctx, id, Credits::ZERO, HoldEnd::Expired);
        }
    }

    fn reset_grant(&mut self, ctx: Ctx<'_>, id: GrantId, at: Timestamp) {
        let Some(g) = self.grant_mut(id) else { return };
        let expired = g.available;
        g.available = Credits::ZERO;
        put(&mut g.expired, expired);
        let refill = g.amount;
        put(&mut g.granted, refill);
        put(&mut g.available, refill);
        g.period = g.period.saturating_add(1);
        g.period_start = at;
        let next = g.reset.and_then(|r| r.next_boundary(at));
        g.next_reset_at = next.filter(|&n| g.expires_at.is_none_or(|e| n < e));
        let period = g.period;
        let t = &mut self.row.totals;
        take(&mut t.available, expired);
        put(&mut t.expired, expired);
        put(&mut t.granted, refill);
        put(&mut t.available, refill);
        let after = self.totals();
        self.record(
            ctx,
            AuditEvent::Reset {
                grant: id,
                period,
                period_start: at,
                expired,
                refilled: refill,
                after,
            },
        );
    }

    fn expire_grant(&mut self, ctx: Ctx<'_>, id: GrantId) {
        let Some(g) = self.grant_mut(id) else { return };
        let expired = g.available;
        g.available = Credits::ZERO;
        put(&mut g.expired, expired);
        g.closed = true;
        g.next_reset_at = None;
        let t = &mut self.row.totals;
        take(&mut t.available, expired);
        put(&mut t.expired, expired);
        let after = self.totals();
        self.record(
            ctx,
            AuditEvent::Expire {
                grant: id,
                expired,
                after,
            },
        );
    }

    /// Validate a grant request.
    pub fn validate_grant(spec: &GrantSpec, now: Timestamp) -> Result<(), LedgerError> {
        if spec.amount.is_zero() || spec.amount > MAX_GRANT {
            return Err(LedgerError::InvalidInput(format!(
                "grant amount {} must be above 0 and at most {MAX_GRANT} credits",
                spec.amount
            )));
        }
        let start = spec.starts_at.unwrap_or(now);
        if let Some(e) = spec.expires_at
            && e <= start
        {
            return Err(LedgerError::InvalidInput(format!(
                "grant expires_at {e} must be after its start {start}"
            )));
        }
        if let Some(r) = &spec.reference
            && (r.is_empty() || r.len() > MAX_REFERENCE_LEN)
        {
            return Err(LedgerError::InvalidInput(format!(
                "grant reference must be 1 to {MAX_REFERENCE_LEN} bytes"
            )));
        }
        Ok(())
    }

    /// Grant credits. The caller checked idempotency by reference.
    pub fn add_grant(&mut self, ctx: Ctx<'_>, spec: &GrantSpec) -> Result<GrantId, LedgerError> {
        Self::validate_grant(spec, ctx.now)?;
        let granted = self
            .row
            .totals
            .granted
            .checked_add(spec.amount)
            .ok_or_else(|| LedgerError::Overflow("the wallet's total granted".into()))?;
        let id = GrantId(self.row.next_grant_id);
        self.row.next_grant_id += 1;
        let starts_at = spec.starts_at.unwrap_or(ctx.now);
        let next_reset_at = spec
            .reset
            .and_then(|r| r.next_boundary(starts_at))
            .filter(|&n| spec.expires_at.is_none_or(|e| n < e));
        let g = Grant {
            tenant: self.row.tenant.clone(),
            id,
            kind: spec.kind,
            amount: spec.amount,
            priority: spec.priority,
            starts_at,
            expires_at: spec.expires_at,
            reset: spec.reset,
            reference: spec.reference.clone(),
            created_at: ctx.now,
            period: 0,
            period_start: starts_at,
            next_reset_at,
            granted: spec.amount,
            available: spec.amount,
            held: Credits::ZERO,
            consumed: Credits::ZERO,
            expired: Credits::ZERO,
            closed: false,
        };
        self.grants.push(g);
        self.changed_grants.insert(id);
        self.row.totals.granted = granted;
        put(&mut self.row.totals.available, spec.amount);
        let after = self.totals();
        self.record(
            ctx,
            AuditEvent::Grant {
                grant: id,
                kind: spec.kind,
                amount: spec.amount,
                priority: spec.priority,
                starts_at,
                expires_at: spec.expires_at,
                reset: spec.reset,
                reference: spec.reference.clone(),
                after,
            },
        );
        // A grant that starts in the past may already be due for resets or expiry.
        self.catch_up(ctx);
        Ok(id)
    }

    /// Administrative adjustment of a loaded grant: add `credit`, remove `debit` from its
    /// available credits (counted as expired).
    pub fn adjust(
        &mut self,
        ctx: Ctx<'_>,
        id: GrantId,
        credit: Credits,
        debit: Credits,
        reason: &str,
    ) -> Result<(), LedgerError> {
        if credit > MAX_GRANT || debit > MAX_GRANT {
            return Err(LedgerError::InvalidInput(format!(
                "adjustment above {MAX_GRANT} credits"
            )));
        }
        let tenant = self.row.tenant.clone();
        let g = self
            .grants
            .iter()
            .find(|g| g.id == id)
            .ok_or(LedgerError::UnknownGrant {
                tenant: tenant.clone(),
                grant: id,
            })?;
        if g.closed && !credit.is_zero() {
            return Err(LedgerError::InvalidInput(format!(
                "{id} has expired: credit a new grant instead"
            )));
        }
        let avail_after = g.available.saturating_add(credit);
        if debit > avail_after {
            return Err(LedgerError::InvalidInput(format!(
                "cannot debit {debit} from {id}: only {avail_after} is available"
            )));
        }
        self.row
            .totals
            .granted
            .checked_add(credit)
            .ok_or_else(|| LedgerError::Overflow("the wallet's total granted".into()))?;
        let g = self
            .grant_mut(id)
            .ok_or(LedgerError::UnknownGrant { tenant, grant: id })?;
        put(&mut g.granted, credit);
        put(&mut g.available, credit);
        take(&mut g.available, debit);
        put(&mut g.expired, debit);
        let t = &mut self.row.totals;
        put(&mut t.granted, credit);
        put(&mut t.available, credit);
        take(&mut t.available, debit);
        put(&mut t.expired, debit);
        let after = self.totals();
        self.record(
            ctx,
            AuditEvent::Adjustment {
                grant: id,
                credit,
                debit,
                reason: reason.to_owned(),
                after,
            },
        );
        Ok(())
    }

    /// Place a hold.
    pub fn create_hold(&mut self, ctx: Ctx<'_>, req: &HoldRequest) -> Result<Hold, LedgerError> {
        if req.amount.is_zero() || req.min_amount > req.amount || req.ttl_secs == 0 {
            return Err(LedgerError::InvalidInput(
                "hold needs amount > 0, min_amount <= amount and ttl_secs > 0".into(),
            ));
        }
        if req.owner.is_empty() || req.owner.len() > 256 {
            return Err(LedgerError::InvalidInput(
                "hold owner (sidecar id) must be 1 to 256 bytes".into(),
            ));
        }
        let (spendable, limit) = self.spendable(ctx.now);
        let want = req.amount.min(spendable);
        if want.is_zero() || want < req.min_amount {
            return Err(LedgerError::InsufficientFunds {
                tenant: self.row.tenant.clone(),
                requested: req.min_amount.max(Credits(1)),
                available: spendable,
                limit,
            });
        }
        let mut parts = Vec::new();
        let mut left = want;
        for id in self.deduction_order(ctx.now) {
            if left.is_zero() {
                break;
            }
            let Some(g) = self.grant_mut(id) else {
                continue;
            };
            let x = left.min(g.available);
            if x.is_zero() {
                continue;
            }
            take(&mut g.available, x);
            put(&mut g.held, x);
            parts.push(HoldPart {
                funding: Funding::Grant(id),
                period: g.period,
                amount: x,
                drawn: Credits::ZERO,
                released: Credits::ZERO,
            });
            take(&mut self.row.totals.available, x);
            put(&mut self.row.totals.held, x);
            left = left.saturating_sub(x);
        }
        if !left.is_zero() {
            // Only reachable with a plan (spendable counted its room).
            parts.push(HoldPart {
                funding: Funding::Plan,
                period: 0,
                amount: left,
                drawn: Credits::ZERO,
                released: Credits::ZERO,
            });
            put(&mut self.row.totals.plan_held, left);
        }
        let id = HoldId(self.row.next_hold_id);
        self.row.next_hold_id += 1;
        let hold = Hold {
            tenant: self.row.tenant.clone(),
            id,
            owner: req.owner.clone(),
            amount: want,
            drawn: Credits::ZERO,
            released: Credits::ZERO,
            status: HoldStatus::Open,
            created_at: ctx.now,
            expires_at: ctx.now.saturating_add(req.ttl_secs),
            closed_at: None,
            parts: parts.clone(),
        };
        self.holds.push(hold.clone());
        self.changed_holds.insert(id);
        let after = self.totals();
        self.record(
            ctx,
            AuditEvent::Hold {
                hold: id,
                owner: req.owner.clone(),
                amount: want,
                expires_at: hold.expires_at,
                parts,
                after,
            },
        );
        Ok(hold)
    }

    /// Draw up to `want` from one open hold's parts; returns (funding, amount, request
    /// units, balance before, balance after) per part drawn. `units` is the request units
    /// (milli) that `want` stands for (0 for metered usage): plan-funded parts are still
    /// limited by the plan's room under its cap at the moment of the draw.
    fn draw_hold(&mut self, idx: usize, want: Credits, units: u64) -> Vec<HoldDraw> {
        let mut out = Vec::new();
        let mut left = want;
        for p in 0..self.holds[idx].parts.len() {
            if left.is_zero() {
                break;
            }
            let part = self.holds[idx].parts[p];
            let mut x = left.min(part.undrawn());
            if x.is_zero() {
                continue;
            }
            let (before, after, k) = match part.funding {
                Funding::Grant(gid) => {
                    let Some(g) = self.grant_mut(gid) else {
                        continue;
                    };
                    let before = g.remaining();
                    take(&mut g.held, x);
                    put(&mut g.consumed, x);
                    let after = g.remaining();
                    take(&mut self.row.totals.held, x);
                    put(&mut self.row.totals.consumed, x);
                    (before, after, units_for(units, want, x))
                }
                _ => {
                    let k;
                    (x, k) = self.plan_take(x, units_for(units, want, x), Credits::ZERO);
                    if x.is_zero() {
                        continue;
                    }
                    take(&mut self.row.totals.plan_held, x);
                    put(&mut self.row.totals.plan_consumed, x);
                    (
                        self.row.period_spent,
                        self.row.period_spent.saturating_add(x),
                        k,
                    )
                }
            };
            put(&mut self.row.period_spent, x);
            let h = &mut self.holds[idx];
            put(&mut h.parts[p].drawn, x);
            put(&mut h.drawn, x);
            left = left.saturating_sub(x);
            out.push((part.funding, x, k, before, after));
        }
        let id = self.holds[idx].id;
        self.changed_holds.insert(id);
        out
    }

    /// Hands back up to `limit` (all if `None`) of hold `idx`'s undrawn credits, last
    /// part first (so what stays reserved is what usage draws first): to their grant, or
    /// expired if the grant lapsed since; the plan's part frees plan room. Counted in the
    /// parts' and the hold's `released`. Returns (returned, expired).
    fn release_undrawn(&mut self, idx: usize, limit: Option<Credits>) -> (Credits, Credits) {
        let mut returned = Credits::ZERO;
        let mut expired = Credits::ZERO;
        let mut left = limit.unwrap_or(Credits(u64::MAX));
        for p in (0..self.holds[idx].parts.len()).rev() {
            let part = self.holds[idx].parts[p];
            let undrawn = part.undrawn().min(left);
            if undrawn.is_zero() {
                continue;
            }
            match part.funding {
                Funding::Grant(gid) => {
                    let Some(g) = self.grant_mut(gid) else {
                        continue;
                    };
                    take(&mut g.held, undrawn);
                    let lapsed = g.closed || g.period != part.period;
                    if lapsed {
                        put(&mut g.expired, undrawn);
                    } else {
                        put(&mut g.available, undrawn);
                    }
                    take(&mut self.row.totals.held, undrawn);
                    if lapsed {
                        put(&mut self.row.totals.expired, undrawn);
                        put(&mut expired, undrawn);
                    } else {
                        put(&mut self.row.totals.available, undrawn);
                        put(&mut returned, undrawn);
                    }
                }
                _ => {
                    take(&mut self.row.totals.plan_held, undrawn);
                    put(&mut returned, undrawn);
                }
            }
            let h = &mut self.holds[idx];
            put(&mut h.parts[p].released, undrawn);
            put(&mut h.released, undrawn);
            left = left.saturating_sub(undrawn);
        }
        (returned, expired)
    }

    /// Index of hold `id`, which must be loaded and open.
    fn open_hold_index(&self, id: HoldId) -> Result<usize, LedgerError> {
        let tenant = &self.row.tenant;
        let idx =
            self.holds
                .iter()
                .position(|h| h.id == id)
                .ok_or_else(|| LedgerError::UnknownHold {
                    tenant: tenant.clone(),
                    hold: id,
                })?;
        let status = self.holds[idx].status;
        if status != HoldStatus::Open {
            return Err(LedgerError::HoldClosed {
                tenant: tenant.clone(),
                hold: id,
                status: status.as_str(),
            });
        }
        Ok(idx)
    }

    /// Hand `amount` of an open hold's undrawn credits back now (its owner returned part
    /// of the lease): they are available to others at once instead of when the hold ends.
    /// The hold stays open with less reserved. Errors: unknown or ended hold, or more
    /// than it has undrawn.
    pub fn reduce_hold(
        &mut self,
        ctx: Ctx<'_>,
        id: HoldId,
        amount: Credits,
    ) -> Result<Hold, LedgerError> {
        let idx = self.open_hold_index(id)?;
        let h = &self.holds[idx];
        if amount > h.remaining() {
            return Err(LedgerError::InvalidInput(format!(
                "cannot hand back {amount} of {id}: only {} is undrawn",
                h.remaining()
            )));
        }
        if amount.is_zero() {
            return Ok(h.clone());
        }
        let (returned, expired) = self.release_undrawn(idx, Some(amount));
        self.changed_holds.insert(id);
        let hold = self.holds[idx].clone();
        let after = self.totals();
        self.record(
            ctx,
            AuditEvent::HoldReduced {
                hold: id,
                returned,
                expired,
                after,
            },
        );
        Ok(hold)
    }

    /// End a hold: consume `consume` of it (posting by amount; zero to just release),
    /// release the rest. `end` says why; a released hold with draws counts as posted.
    pub fn end_hold(
        &mut self,
        ctx: Ctx<'_>,
        id: HoldId,
        consume: Credits,
        end: HoldEnd,
    ) -> Result<Hold, LedgerError> {
        let idx = self.open_hold_index(id)?;
        let h = &self.holds[idx];
        if consume > h.remaining() {
            return Err(LedgerError::InvalidInput(format!(
                "cannot post {consume} from {id}: only {} remains held",
                h.remaining()
            )));
        }
        let mut consumed_now = Credits::ZERO;
        if !consume.is_zero() {
            let tenant = self.row.tenant.clone();
            let owner = h.owner.clone();
            let mut drawn = self.draw_hold(idx, consume, 0);
            for &(_, amount, _, _, _) in &drawn {
                put(&mut consumed_now, amount);
                self.add_spend(ctx.now, amount);
            }
            // A cap lowered since the hold was placed can cut its plan part: what could
            // not be drawn is overrun, recorded (never billed), as for batch usage.
            let short = consume.saturating_sub(consumed_now);
            if !short.is_zero() {
                put(&mut self.row.totals.overrun, short);
                let spent = self.row.period_spent;
                drawn.push((Funding::Overrun, short, 0, spent, spent));
            }
            for (funding, amount, units, before, after) in drawn {
                self.postings.push(Posting {
                    tenant: tenant.clone(),
                    batch: None,
                    hold: Some(id),
                    agent: String::new(),
                    agent_instance: owner.clone(),
                    model: String::new(),
                    feature: "hold_post".into(),
                    task: String::new(),
                    funding,
                    amount,
                    records: 0,
                    input_tokens: 0,
                    output_tokens: 0,
                    outcomes: 0,
                    work_units: 0,
                    request_units_milli: units,
                    balance_before: before,
                    balance_after: after,
                    at: ctx.now,
                });
            }
        }
        let (returned, expired) = self.release_undrawn(idx, None);
        let h = &mut self.holds[idx];
        h.status = match end {
            HoldEnd::Expired => HoldStatus::Expired,
            _ if !h.drawn.is_zero() => HoldStatus::Posted,
            _ => HoldStatus::Voided,
        };
        h.closed_at = Some(ctx.now);
        let end = match h.status {
            HoldStatus::Posted => HoldEnd::Posted,
            HoldStatus::Expired => HoldEnd::Expired,
            _ => HoldEnd::Voided,
        };
        let drawn = h.drawn;
        let hold = h.clone();
        self.changed_holds.insert(id);
        let after = self.totals();
        self.record(
            ctx,
            AuditEvent::HoldEnded {
                hold: id,
                end,
                drawn,
                consumed_now,
                returned,
                expired,
                after,
            },
        );
        Ok(hold)
    }

    fn add_spend(&mut self, now: Timestamp, x: Credits) {
        let minute = now - now % 60;
        let e = self.spend.entry(minute).or_insert(Credits::ZERO);
        put(e, x);
    }

    /// The sender's open holds (its leases), soonest to expire first.
    fn sender_holds(&self, sidecar: &str) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.holds.len())
            .filter(|&i| {
                let h = &self.holds[i];
                h.status == HoldStatus::Open && h.owner == sidecar
            })
            .collect();
        idx.sort_by_key(|&i| (self.holds[i].expires_at, self.holds[i].id));
        idx
    }

    /// Step 1 of [`WalletTx::post_usage`]: draw from the sender's open holds; returns
    /// what is left to pay.
    fn usage_from_holds(
        &mut self,
        ctx: Ctx<'_>,
        g: &UsageGroup,
        hold_idx: &[usize],
        mut left: Credits,
        summary: &mut TenantPosting,
        draws: &mut Vec<Draw>,
    ) -> Credits {
        for &i in hold_idx {
            if left.is_zero() {
                break;
            }
            let hid = self.holds[i].id;
            let units = units_for(g.request_units_milli, g.amount, left);
            for (funding, x, k, before, after) in self.draw_hold(i, left, units) {
                left = left.saturating_sub(x);
                put(&mut summary.from_holds, x);
                self.add_spend(ctx.now, x);
                draws.push(Draw {
                    hold: Some(hid),
                    funding,
                    amount: x,
                    units: k,
                    before,
                    after,
                });
            }
        }
        left
    }

    /// Step 2: grants, in deduction order; returns what is left to pay.
    fn usage_from_grants(
        &mut self,
        ctx: Ctx<'_>,
        g: &UsageGroup,
        order: &[GrantId],
        mut left: Credits,
        summary: &mut TenantPosting,
        draws: &mut Vec<Draw>,
    ) -> Credits {
        for &gid in order {
            if left.is_zero() {
                break;
            }
            let Some(gr) = self.grant_mut(gid) else {
                continue;
            };
            let x = left.min(gr.available);
            if x.is_zero() {
                continue;
            }
            let units = units_for(g.request_units_milli, g.amount, x);
            let before = gr.remaining();
            take(&mut gr.available, x);
            put(&mut gr.consumed, x);
            let after = gr.remaining();
            take(&mut self.row.totals.available, x);
            put(&mut self.row.totals.consumed, x);
            put(&mut self.row.period_spent, x);
            left = left.saturating_sub(x);
            put(&mut summary.from_grants, x);
            self.add_spend(ctx.now, x);
            draws.push(Draw {
                hold: None,
                funding: Funding::Grant(gid),
                amount: x,
                units,
                before,
                after,
            });
        }
        left
    }

    /// Step 3: the plan, within its room under the hard cap less what open holds
    /// reserved there (their owners' usage draws it; taking it here would turn their
    /// covered usage into overrun). Returns what is left to pay.
    fn usage_from_plan(
        &mut self,
        ctx: Ctx<'_>,
        g: &UsageGroup,
        left: Credits,
        summary: &mut TenantPosting,
        draws: &mut Vec<Draw>,
    ) -> Credits {
        if left.is_zero() {
            return left;
        }
        let units = units_for(g.request_units_milli, g.amount, left);
        let reserved = self.row.totals.plan_held;
        let (x, k) = self.plan_take(left, units, reserved);
        if x.is_zero() {
            return left;
        }
        let before = self.row.period_spent;
        put(&mut self.row.period_spent, x);
        put(&mut self.row.totals.plan_consumed, x);
        put(&mut summary.from_plan, x);
        self.add_spend(ctx.now, x);
        draws.push(Draw {
            hold: None,
            funding: Funding::Plan,
            amount: x,
            units: k,
            before,
            after: self.row.period_spent,
        });
        left.saturating_sub(x)
    }

    /// Step 4: what nothing paid is overrun: recorded, reported, never billed.
    fn usage_overrun(
        &mut self,
        g: &UsageGroup,
        left: Credits,
        summary: &mut TenantPosting,
        draws: &mut Vec<Draw>,
    ) {
        if left.is_zero() {
            return;
        }
        put(&mut self.row.totals.overrun, left);
        put(&mut summary.overrun, left);
        let spent = self.row.period_spent;
        draws.push(Draw {
            hold: None,
            funding: Funding::Overrun,
            amount: left,
            units: units_for(g.request_units_milli, g.amount, left),
            before: spent,
            after: spent,
        });
    }

    /// One posting (and audit entry) per draw of a group; the group's counts go on its
    /// first posting. A group nothing was charged for (free calls, a completion record,
    /// or usage that was all suspect) gets one [`Funding::Free`] posting of amount 0
    /// carrying its counts, so statements count every call.
    fn emit_postings(
        &mut self,
        ctx: Ctx<'_>,
        key: &BatchKey,
        g: &UsageGroup,
        mut draws: Vec<Draw>,
        audit: &mut Vec<AuditPosting>,
    ) {
        if draws.is_empty() {
            draws.push(Draw {
                hold: None,
                funding: Funding::Free,
                amount: Credits::ZERO,
                units: g.request_units_milli,
                before: self.row.period_spent,
                after: self.row.period_spent,
            });
        }
        for (n, d) in draws.into_iter().enumerate() {
            let (records, it, ot, oc, wu) = if n == 0 {
                (
                    g.records,
                    g.input_tokens,
                    g.output_tokens,
                    g.outcomes,
                    g.work_units,
                )
            } else {
                (0, 0, 0, 0, 0)
            };
            self.postings.push(Posting {
                tenant: self.row.tenant.clone(),
                batch: Some(key.clone()),
                hold: d.hold,
                agent: g.agent.to_string(),
                agent_instance: g.agent_instance.to_string(),
                model: g.model.to_string(),
                feature: g.feature.to_string(),
                task: g.task.to_string(),
                funding: d.funding,
                amount: d.amount,
                records,
                input_tokens: it,
                output_tokens: ot,
                outcomes: oc,
                work_units: wu,
                request_units_milli: d.units,
                balance_before: d.before,
                balance_after: d.after,
                at: ctx.now,
            });
            audit.push(AuditPosting {
                agent: g.agent.to_string(),
                agent_instance: g.agent_instance.to_string(),
                model: g.model.to_string(),
                feature: g.feature.to_string(),
                task: g.task.to_string(),
                hold: d.hold,
                funding: d.funding,
                amount: d.amount,
                records,
                outcomes: oc,
                work_units: wu,
            });
        }
    }

    /// Counts each group's work units once per task: a task already completed (or
    /// completed by an earlier group of this batch) counts none again. Completion
    /// records without a task count as reported.
    fn count_work_units(
        &mut self,
        ctx: Ctx<'_>,
        groups: &mut [UsageGroup],
        summary: &mut TenantPosting,
    ) {
        for g in groups.iter_mut().filter(|g| g.work_units > 0) {
            if g.task.is_empty() {
                summary.work_units = summary.work_units.saturating_add(g.work_units);
                continue;
            }
            let row = self.task_mut(&g.task, ctx.now);
            if row.completed_at.is_some() {
                summary.repeated_completions =
                    summary.repeated_completions.saturating_add(g.work_units);
                g.work_units = 0;
            } else {
                row.completed_at = Some(ctx.now);
                summary.repeated_completions = summary
                    .repeated_completions
                    .saturating_add(g.work_units - 1);
                g.work_units = 1;
                summary.work_units = summary.work_units.saturating_add(1);
            }
        }
    }

    /// Adds each group's spend, calls and work units to its task's row; a task this batch
    /// closed (completed, or brought to its `max_calls` or budget) is listed in
    /// `summary.tasks_closed`. Call after [`WalletTx::count_work_units`] (completion is
    /// already set there; `was_open` says which tasks were open before this batch).
    fn post_task_usage(
        &mut self,
        ctx: Ctx<'_>,
        groups: &[UsageGroup],
        was_open: &BTreeSet<String>,
        summary: &mut TenantPosting,
    ) {
        for g in groups.iter().filter(|g| !g.task.is_empty()) {
            let row = self.task_mut(&g.task, ctx.now);
            put(&mut row.spent, g.amount);
            row.calls = row.calls.saturating_add(g.records);
            row.work_units = row.work_units.saturating_add(g.work_units);
            row.last_at = ctx.now;
        }
        for task in was_open {
            if self.tasks.get(task).is_some_and(|r| r.closed().is_some()) {
                summary.tasks_closed.push(task.clone());
            }
        }
    }

    /// Conservation of one batch's posting, on both sides: every rated credit is paid
    /// by exactly one source or counted as suspect, and what the sources paid is what
    /// left the wallet's available and held credits (or went to the plan or overrun).
    fn check_usage_conserved(
        &self,
        before: &WalletTotals,
        paid_before: &Paid,
        summary: &TenantPosting,
        rated: Credits,
    ) {
        let d = Paid::of(summary).since(paid_before);
        let after = self.totals();
        let gain = |a: Credits, b: Credits| a.micros().wrapping_sub(b.micros());
        debug_assert_eq!(
            d.from_holds + d.from_grants + d.from_plan + d.overrun + d.suspect,
            rated.micros(),
            "usage of {}: every rated credit is paid or suspect",
            self.row.tenant
        );
        debug_assert_eq!(
            gain(after.consumed, before.consumed) + gain(after.plan_consumed, before.plan_consumed),
            d.from_holds + d.from_grants + d.from_plan,
            "usage of {}: consumed credits are the credits posted",
            self.row.tenant
        );
        debug_assert_eq!(
            gain(before.available, after.available),
            d.from_grants,
            "usage of {}: credits out of grants are the credits posted from grants",
            self.row.tenant
        );
        debug_assert_eq!(
            gain(before.held, after.held) + gain(before.plan_held, after.plan_held),
            d.from_holds,
            "usage of {}: credits out of holds are the credits posted from holds",
            self.row.tenant
        );
        debug_assert_eq!(
            gain(after.overrun, before.overrun),
            d.overrun,
            "usage of {}: overrun recorded is overrun posted",
            self.row.tenant
        );
    }

    /// Post rated usage of one batch for this tenant: from the sender's open holds
    /// first, then grants in deduction order, then the plan (within its room under the
    /// hard cap); what is left is overrun (recorded, never billed). The tasks the groups
    /// name get their spend, calls and (once per task) work units; load their rows first
    /// ([`WalletTx::add_loaded_tasks`]), or they are taken as new.
    pub fn post_usage(
        &mut self,
        ctx: Ctx<'_>,
        key: &BatchKey,
        groups: &mut [UsageGroup],
        summary: &mut TenantPosting,
        digest: Option<&str>,
        allowance: Option<OverrunAllowance>,
    ) {
        let was_open: BTreeSet<String> = groups
            .iter()
            .filter(|g| !g.task.is_empty())
            .filter(|g| self.task(&g.task).is_none_or(|r| r.closed().is_none()))
            .map(|g| g.task.to_string())
            .collect();
        self.count_work_units(ctx, groups, summary);
        let hold_idx = self.sender_holds(&key.sidecar_id);
        // What may still be charged past the sender's holds in this batch.
        let mut past_holds_left = allowance.map(|a| {
            let held = hold_idx.iter().fold(Credits::ZERO, |acc, &i| {
                acc.saturating_add(self.holds[i].amount)
            });
            a.for_holds(held)
        });
        let order = self.deduction_order(ctx.now);
        let totals_before = self.totals();
        let (summary_before, rated) = (Paid::of(summary), sum(groups.iter().map(|g| g.amount)));
        let mut audit_postings = Vec::new();
        for g in groups.iter() {
            let mut draws = Vec::new();
            let mut left = g.amount;
            left = self.usage_from_holds(ctx, g, &hold_idx, left, summary, &mut draws);
            left = past_holds(&mut past_holds_left, left, summary);
            left = self.usage_from_grants(ctx, g, &order, left, summary, &mut draws);
            left = self.usage_from_plan(ctx, g, left, summary, &mut draws);
            self.usage_overrun(g, left, summary, &mut draws);
            self.emit_postings(ctx, key, g, draws, &mut audit_postings);
        }
        self.check_usage_conserved(&totals_before, &summary_before, summary, rated);
        self.post_task_usage(ctx, groups, &was_open, summary);
        self.row_changed = true;
        let after = self.totals();
        self.record(
            ctx,
            AuditEvent::Usage {
                batch: key.clone(),
                records: summary.records,
                rated: summary.rated,
                client_amount: summary.client_amount,
                postings: audit_postings,
                overrun: summary.overrun,
                suspect: summary.suspect,
                unrated_records: summary.unrated_records,
                unrated_amount: summary.unrated_amount,
                pre_rated_records: summary.pre_rated_records,
                digest: digest.map(str::to_owned),
                after,
            },
        );
    }

    /// Change the configuration (recorded in the chain).
    pub fn set_config(&mut self, ctx: Ctx<'_>, config: TenantConfig) {
        self.row.config = config;
        self.row.alert_state.retain(|s| {
            self.row
                .config
                .alert_rules
                .iter()
                .any(|r| r.id == s.rule_id)
        });
        self.row_changed = true;
        let json = serde_json::to_value(&self.row.config).unwrap_or_default();
        self.record(ctx, AuditEvent::Config { config: json });
    }

    /// Close a grant early (plan change): its available credits expire now.
    pub fn close_grant(&mut self, ctx: Ctx<'_>, id: GrantId) {
        if self.grants.iter().any(|g| g.id == id && !g.closed) {
            self.expire_grant(ctx, id);
        }
    }

    /// Evaluate alert rules given the burn rates; fire (and record) those that trigger.
    pub fn evaluate_alerts(
        &mut self,
        ctx: Ctx<'_>,
        burn_1h: Credits,
        burn_24h: Credits,
    ) -> Vec<AlertEvent> {
        let _ = burn_24h;
        let now = ctx.now;
        let (spent, budget) = match (&self.row.config.plan, self.hard_cap()) {
            (Some(plan), Some(cap)) => {
                let charge = plan
                    .bill(&self.row.period_usage)
                    .map_or(Credits::ZERO, |b| b.usage_charge);
                (charge, cap)
            }
            _ => {
                let spent = self.row.period_spent;
                let left = self
                    .usable_available(now)
                    .saturating_add(self.row.totals.held);
                (spent, spent.saturating_add(left))
            }
        };
        let depletion = self.projected_depletion(now, burn_1h);
        let rules = self.row.config.alert_rules.clone();
        let mut fired = Vec::new();
        for rule in rules {
            let pos = match self
                .row
                .alert_state
                .iter()
                .position(|s| s.rule_id == rule.id)
            {
                Some(p) => p,
                None => {
                    self.row.alert_state.push(AlertRuleState {
                        rule_id: rule.id.clone(),
                        ..Default::default()
                    });
                    self.row_changed = true;
                    self.row.alert_state.len() - 1
                }
            };
            let fire = match rule.condition {
                AlertCondition::BudgetUsedPercent { percent } => {
                    let reached = !budget.is_zero()
                        && u128::from(spent.micros()) * 100
                            >= u128::from(budget.micros()) * u128::from(percent);
                    let st = &mut self.row.alert_state[pos];
                    if reached && st.fired_period != Some(self.row.period_start) {
                        st.fired_period = Some(self.row.period_start);
                        true
                    } else {
                        false
                    }
                }
                AlertCondition::DepletionWithin { hours } => {
                    let soon =
                        depletion.is_some_and(|d| d <= now.saturating_add(u64::from(hours) * 3600));
                    let st = &mut self.row.alert_state[pos];
                    let f = soon && !st.active;
                    if st.active != soon {
                        st.active = soon;
                        self.row_changed = true;
                    }
                    f
                }
            };
            if fire {
                self.row_changed = true;
                let seq = self.record(
                    ctx,
                    AuditEvent::Alert {
                        rule_id: rule.id.clone(),
                        condition: rule.condition,
                        period_spent: spent,
                        budget,
                        burn_rate_1h: burn_1h,
                        projected_depletion_at: depletion,
                    },
                );
                fired.push(AlertEvent {
                    tenant: self.row.tenant.clone(),
                    rule_id: rule.id,
                    condition: rule.condition,
                    at: now,
                    period_spent: spent,
                    budget,
                    burn_rate_1h: burn_1h,
                    projected_depletion_at: depletion,
                    audit_seq: seq,
                });
            }
        }
        fired
    }

    /// When what can still be spent runs out at `burn_per_hour`, counting open holds as
    /// already spent: `now + spendable / burn`. `None` when nothing is burning, or when
    /// spend is unbounded (a plan without a cap).
    pub fn projected_depletion(&self, now: Timestamp, burn_per_hour: Credits) -> Option<Timestamp> {
        if burn_per_hour.is_zero() {
            return None;
        }
        let (left, _) = self.spendable(now);
        if left == Credits::MAX {
            return None;
        }
        let secs = u128::from(left.micros()) * 3600 / u128::from(burn_per_hour.micros());
        Some(now.saturating_add(u64::try_from(secs).unwrap_or(u64::MAX)))
    }
}
