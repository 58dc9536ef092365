//! Grants: the credits a wallet holds, and the order they are spent in.
//!
//! A grant is an amount of credits of one [`GrantKind`], usable from `starts_at` until
//! `expires_at`, spent in the wallet's [`DeductionOrder`]. A grant with a [`ResetPeriod`]
//! is a recurring allowance: at each calendar-aligned period boundary its unused credits
//! expire (no rollover) and it is refilled to `amount`.
//!
//! Invariant, per grant and at every moment:
//! `granted = available + held + consumed + expired`, every term non-negative.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};
use tollgate_core::Credits;
use tollgate_core::time::{CivilDate, month_start};

use crate::clock::Timestamp;
use crate::ids::{GrantId, TenantId};

/// What a grant is for. Informational for statements and audits; spending order comes
/// from priority, expiry and age (see [`DeductionOrder`]), not from the kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantKind {
    /// Free credits for a trial.
    Trial,
    /// Marketing or goodwill credits.
    Promotional,
    /// Credits the customer paid for.
    Purchased,
    /// A plan's included allowance, refilled every period (see [`ResetPeriod`]).
    RecurringAllowance,
}

impl GrantKind {
    /// Lower-case name, as in config files and the CLI.
    pub const fn as_str(self) -> &'static str {
        match self {
            GrantKind::Trial => "trial",
            GrantKind::Promotional => "promotional",
            GrantKind::Purchased => "purchased",
            GrantKind::RecurringAllowance => "recurring_allowance",
        }
    }

    /// The kind a name ([`GrantKind::as_str`]) names, `None` if none.
    pub fn from_name(s: &str) -> Option<GrantKind> {
        [
            GrantKind::Trial,
            GrantKind::Promotional,
            GrantKind::Purchased,
            GrantKind::RecurringAllowance,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// How often a recurring grant resets. Calendar-aligned in UTC, as in
/// `tollgate_core::grant::ResetPeriod`: a monthly grant resets at 00:00 on the 1st of
/// every month; an annual pool resets on January 1st (a pool granted 2026-03-15 runs to
/// 2027-01-01, then a calendar year at a time). At a reset the unused credits expire:
/// nothing rolls over. (No `Never` variant here: a one-off grant has `reset: None`.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResetPeriod {
    /// Every calendar month.
    Monthly,
    /// Every 12 calendar months (an annual pool).
    Annual,
}

impl ResetPeriod {
    /// Its name: in the stores' `reset_period` column.
    pub const fn as_str(self) -> &'static str {
        match self {
            ResetPeriod::Monthly => "monthly",
            ResetPeriod::Annual => "annual",
        }
    }

    /// The period a name ([`ResetPeriod::as_str`]) names, `None` if none.
    pub fn from_name(s: &str) -> Option<ResetPeriod> {
        [ResetPeriod::Monthly, ResetPeriod::Annual]
            .into_iter()
            .find(|r| r.as_str() == s)
    }

    /// The first reset boundary strictly after `period_start`: the next 1st of a month
    /// (monthly) or the next January 1st (annual). `None` if past `u64` seconds.
    pub fn next_boundary(self, period_start: Timestamp) -> Option<Timestamp> {
        match self {
            ResetPeriod::Monthly => add_months(month_start(period_start), 1),
            ResetPeriod::Annual => tollgate_core::time::next_year_start(period_start),
        }
    }
}

/// Midnight UTC on the 1st of the month `months` after the month containing `ts`.
pub(crate) fn add_months(ts: Timestamp, months: u32) -> Option<Timestamp> {
    let d = CivilDate::from_unix(ts);
    let m0 = i64::from(d.month) - 1 + i64::from(months);
    CivilDate {
        year: d.year + m0.div_euclid(12),
        month: u8::try_from(m0.rem_euclid(12) + 1).ok()?,
        day: 1,
    }
    .to_unix()
}

/// One key of a deduction order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeductionKey {
    /// Smaller `priority` number first.
    Priority,
    /// Earliest `expires_at` first; grants that never expire last.
    EarliestExpiry,
    /// Oldest grant (smallest [`GrantId`]) first.
    Oldest,
}

/// The order a wallet's grants are spent in: compare by each key in turn; grants equal on
/// every key are ordered by id (oldest first), so the order is always total and
/// deterministic. Default: priority, then earliest expiry, then oldest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DeductionOrder {
    /// Keys, most significant first.
    pub keys: Vec<DeductionKey>,
}

impl Default for DeductionOrder {
    fn default() -> Self {
        DeductionOrder {
            keys: vec![
                DeductionKey::Priority,
                DeductionKey::EarliestExpiry,
                DeductionKey::Oldest,
            ],
        }
    }
}

impl DeductionOrder {
    /// Spend the soonest-expiring credits first, then by priority, then oldest.
    pub fn expiry_first() -> Self {
        DeductionOrder {
            keys: vec![
                DeductionKey::EarliestExpiry,
                DeductionKey::Priority,
                DeductionKey::Oldest,
            ],
        }
    }

    /// Compare two grants: `Less` means `a` is spent before `b`.
    pub fn compare(&self, a: &Grant, b: &Grant) -> Ordering {
        for key in &self.keys {
            let o = match key {
                DeductionKey::Priority => a.priority.cmp(&b.priority),
                DeductionKey::EarliestExpiry => match (a.expires_at, b.expires_at) {
                    (Some(x), Some(y)) => x.cmp(&y),
                    (Some(_), None) => Ordering::Less,
                    (None, Some(_)) => Ordering::Greater,
                    (None, None) => Ordering::Equal,
                },
                DeductionKey::Oldest => a.id.cmp(&b.id),
            };
            if o != Ordering::Equal {
                return o;
            }
        }
        a.id.cmp(&b.id)
    }
}

/// What to grant (the request). See [`Grant`] for the resulting state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantSpec {
    /// Kind of grant.
    pub kind: GrantKind,
    /// Credits granted (per period, for a recurring grant). Must be non-zero.
    pub amount: Credits,
    /// Smaller is spent first under the default order.
    pub priority: u32,
    /// First second the credits may be spent; `None` = now.
    pub starts_at: Option<Timestamp>,
    /// First second the credits may no longer be spent (unused credits expire then);
    /// `None` = never. Must be after the start.
    pub expires_at: Option<Timestamp>,
    /// Reset period of a recurring grant; `None` = one-off.
    pub reset: Option<ResetPeriod>,
    /// Caller's reference (invoice, promotion code). When set it is an idempotency key:
    /// a second grant with the same reference and terms for the same tenant returns the
    /// first; with other terms it is refused
    /// ([`LedgerError::GrantReferenceConflict`](crate::LedgerError::GrantReferenceConflict)).
    pub reference: Option<String>,
}

impl GrantSpec {
    /// A one-off grant of `amount` of `kind`, priority 100, starting now, never expiring.
    pub fn new(kind: GrantKind, amount: Credits) -> GrantSpec {
        GrantSpec {
            kind,
            amount,
            priority: 100,
            starts_at: None,
            expires_at: None,
            reset: None,
            reference: None,
        }
    }

    /// Same, with this priority.
    pub fn priority(mut self, priority: u32) -> Self {
        self.priority = priority;
        self
    }

    /// Same, starting at `at`.
    pub fn starts_at(mut self, at: Timestamp) -> Self {
        self.starts_at = Some(at);
        self
    }

    /// Same, expiring at `at`.
    pub fn expires_at(mut self, at: Timestamp) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// Same, resetting every `period`.
    pub fn reset(mut self, period: ResetPeriod) -> Self {
        self.reset = Some(period);
        self
    }

    /// Same, with an idempotency reference.
    pub fn reference(mut self, reference: impl Into<String>) -> Self {
        self.reference = Some(reference.into());
        self
    }
}

/// A grant and its balances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// Owner.
    pub tenant: TenantId,
    /// Per-tenant id (creation order).
    pub id: GrantId,
    /// Kind.
    pub kind: GrantKind,
    /// Credits per period (the whole grant, for a one-off grant).
    pub amount: Credits,
    /// Deduction priority (smaller first under the default order).
    pub priority: u32,
    /// First usable second.
    pub starts_at: Timestamp,
    /// First unusable second, if any.
    pub expires_at: Option<Timestamp>,
    /// Reset period, if recurring.
    pub reset: Option<ResetPeriod>,
    /// Caller's reference.
    pub reference: Option<String>,
    /// When the grant was recorded.
    pub created_at: Timestamp,
    /// Number of resets so far (0 for the first period). Holds remember the period they
    /// drew from, so credits voided after a reset expire instead of rolling over.
    pub period: u32,
    /// Start of the current period.
    pub period_start: Timestamp,
    /// When the next reset is due, if recurring and not expired.
    pub next_reset_at: Option<Timestamp>,
    /// Total credits ever put in (amount times the periods so far, plus adjustments).
    pub granted: Credits,
    /// Spendable now (if started and not expired).
    pub available: Credits,
    /// Reserved by open holds.
    pub held: Credits,
    /// Spent.
    pub consumed: Credits,
    /// Expired unused (at expiry or at a reset) or debited by an adjustment.
    pub expired: Credits,
    /// `true` once expired: no further resets; nothing available.
    pub closed: bool,
}

impl Grant {
    /// The terms in which `spec` differs from the spec this grant was made with: kind,
    /// amount, priority, start (only if `spec` names one: `None` meant "when first
    /// made"), expiry, reset. Empty: `spec` is a retry of this grant.
    pub fn terms_differing_from(&self, spec: &GrantSpec) -> Vec<&'static str> {
        let mut differ = Vec::new();
        if self.kind != spec.kind {
            differ.push("kind");
        }
        if self.amount != spec.amount {
            differ.push("amount");
        }
        if self.priority != spec.priority {
            differ.push("priority");
        }
        if spec.starts_at.is_some_and(|s| s != self.starts_at) {
            differ.push("starts_at");
        }
        if self.expires_at != spec.expires_at {
            differ.push("expires_at");
        }
        if self.reset != spec.reset {
            differ.push("reset");
        }
        differ
    }

    /// `true` if the grant can pay at `now`: started, not expired, not closed.
    pub fn is_usable(&self, now: Timestamp) -> bool {
        !self.closed && self.starts_at <= now && self.expires_at.is_none_or(|e| now < e)
    }

    /// `available + held`: what is left of the grant.
    pub fn remaining(&self) -> Credits {
        self.available.saturating_add(self.held)
    }

    /// `true` if `granted == available + held + consumed + expired` (no overflow).
    pub fn is_conserved(&self) -> bool {
        Credits::checked_sum([self.available, self.held, self.consumed, self.expired])
            == Some(self.granted)
    }
}

// Conversions with core's vocabulary (`tollgate_core::grant`), so callers holding core
// types can use the ledger and back.

impl From<GrantKind> for tollgate_core::grant::GrantKind {
    fn from(k: GrantKind) -> Self {
        match k {
            GrantKind::Trial => Self::Trial,
            GrantKind::Promotional => Self::Promotional,
            GrantKind::Purchased => Self::Purchased,
            GrantKind::RecurringAllowance => Self::RecurringAllowance,
        }
    }
}

impl From<tollgate_core::grant::GrantKind> for GrantKind {
    fn from(k: tollgate_core::grant::GrantKind) -> Self {
        use tollgate_core::grant::GrantKind as C;
        match k {
            C::Trial => GrantKind::Trial,
            C::Promotional => GrantKind::Promotional,
            C::Purchased => GrantKind::Purchased,
            C::RecurringAllowance => GrantKind::RecurringAllowance,
        }
    }
}

impl ResetPeriod {
    /// Core's reset period of an optional ledger one (`None` is core's `Never`).
    pub fn to_core(reset: Option<ResetPeriod>) -> tollgate_core::grant::ResetPeriod {
        use tollgate_core::grant::ResetPeriod as C;
        match reset {
            None => C::Never,
            Some(ResetPeriod::Monthly) => C::Monthly,
            Some(ResetPeriod::Annual) => C::Annual,
        }
    }

    /// The ledger's optional reset period of core's (`Never` is `None`).
    pub fn from_core(reset: tollgate_core::grant::ResetPeriod) -> Option<ResetPeriod> {
        use tollgate_core::grant::ResetPeriod as C;
        match reset {
            C::Never => None,
            C::Monthly => Some(ResetPeriod::Monthly),
            C::Annual => Some(ResetPeriod::Annual),
        }
    }
}

impl From<tollgate_core::grant::DeductionOrder> for DeductionOrder {
    /// Core's named orders as key lists (core's "age" is creation order, which is grant
    /// id order here).
    fn from(o: tollgate_core::grant::DeductionOrder) -> Self {
        use DeductionKey::{EarliestExpiry, Oldest, Priority};
        use tollgate_core::grant::DeductionOrder as C;
        let keys = match o {
            C::PriorityExpiryAge => vec![Priority, EarliestExpiry, Oldest],
            C::ExpiryPriorityAge => vec![EarliestExpiry, Priority, Oldest],
            C::OldestFirst => vec![Oldest],
            C::PriorityAge => vec![Priority, Oldest],
        };
        DeductionOrder { keys }
    }
}
