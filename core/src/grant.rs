//! Wallet grants: their kinds, calendar-aligned resets, and the deterministic order in
//! which a debit is split across them. Pure data and helpers; the ledger owns the state.
//!
//! Reset semantics (all UTC-calendar aligned, see [`crate::time`]):
//! - [`ResetPeriod::Monthly`]: at each month start the grant's balance is restored to
//!   its full amount; what was left unused **does not roll over** (it is forfeited, and
//!   the ledger records that as a reset movement).
//! - [`ResetPeriod::Annual`]: one pool per calendar year, shared by every agent of the
//!   tenant, restored on January 1st, likewise without rollover.
//! - [`ResetPeriod::Never`]: a one-off amount, used until spent or expired.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::credits::Credits;
use crate::time::{Horizon, Window};

/// What kind of grant credits came from (reported in statements).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantKind {
    /// Free trial credits.
    Trial,
    /// Promotional or goodwill credits.
    Promotional,
    /// Credits the customer paid for.
    Purchased,
    /// The plan's recurring allowance (usually with a reset period).
    RecurringAllowance,
}

/// When a grant's balance is restored to its full amount.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum ResetPeriod {
    /// Never: a one-off amount.
    #[default]
    Never,
    /// At the start of each UTC calendar month, without rollover.
    Monthly,
    /// On January 1st UTC (an annual pool), without rollover.
    Annual,
}

impl ResetPeriod {
    /// The window horizon: Month, Year, or Total for `Never`.
    pub const fn horizon(self) -> Horizon {
        match self {
            ResetPeriod::Never => Horizon::Total,
            ResetPeriod::Monthly => Horizon::Month,
            ResetPeriod::Annual => Horizon::Year,
        }
    }

    /// The reset window containing `ts`.
    pub fn window(self, ts: u64) -> Window {
        self.horizon().window(ts)
    }

    /// The next reset strictly after `ts`; `None` for `Never`.
    pub fn next_reset(self, ts: u64) -> Option<u64> {
        self.horizon().window_end(ts)
    }

    /// `true` if at least one reset happens in `(from, to]`.
    pub fn resets_between(self, from: u64, to: u64) -> bool {
        to > from && self.horizon().window_start(from) != self.horizon().window_start(to)
    }
}

/// The terms of one grant in a wallet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GrantTerms {
    /// Kind.
    pub kind: GrantKind,
    /// Credits granted (per reset window, for resetting grants).
    pub amount: Credits,
    /// Deduction priority: **lower is spent first** (e.g. promotional 0, purchased 10).
    pub priority: u32,
    /// First second the grant may be spent.
    pub starts_at: u64,
    /// First second it may no longer be spent; `None` = never expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    /// When its balance is restored.
    #[serde(default)]
    pub reset: ResetPeriod,
}

impl GrantTerms {
    /// `true` if the grant may be spent at `now`.
    pub fn is_active(&self, now: u64) -> bool {
        now >= self.starts_at && self.expires_at.is_none_or(|e| now < e)
    }

    /// What is left at `now`, given what was consumed in `now`'s reset window (for
    /// `Never`, consumed in total). Zero outside `[starts_at, expires_at)`.
    pub fn available(&self, consumed_in_window: Credits, now: u64) -> Credits {
        if !self.is_active(now) {
            return Credits::ZERO;
        }
        self.amount.saturating_sub(consumed_in_window)
    }

    /// What a reset forfeits: the unused rest of the window that ends (no rollover).
    pub fn forfeited_at_reset(&self, consumed_in_window: Credits) -> Credits {
        match self.reset {
            ResetPeriod::Never => Credits::ZERO,
            ResetPeriod::Monthly | ResetPeriod::Annual => {
                self.amount.saturating_sub(consumed_in_window)
            }
        }
    }
}

/// What the deduction order looks at for one grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GrantOrderKey {
    /// Lower is spent first.
    pub priority: u32,
    /// Expiry; `None` (never) sorts after every date.
    pub expires_at: Option<u64>,
    /// When the grant was created.
    pub created_at: u64,
    /// The ledger's grant id: the final tie-break, so the order is total and
    /// deterministic.
    pub id: u64,
}

/// The order in which a debit is taken from a wallet's grants. Every order ends with
/// the grant id, so it is total: the same grants always give the same split.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeductionOrder {
    /// Priority, then earliest expiry, then oldest (the default).
    #[default]
    PriorityExpiryAge,
    /// Earliest expiry, then priority, then oldest: never let credits expire unused.
    ExpiryPriorityAge,
    /// Oldest first (FIFO), regardless of priority.
    OldestFirst,
    /// Priority, then oldest, ignoring expiry.
    PriorityAge,
}

impl DeductionOrder {
    /// Compares two grants: `Less` means `a` is spent before `b`.
    pub fn compare(self, a: &GrantOrderKey, b: &GrantOrderKey) -> Ordering {
        // `None` (never expires) last: map to u64::MAX, then break ties by is_none.
        let exp = |k: &GrantOrderKey| (k.expires_at.unwrap_or(u64::MAX), k.expires_at.is_none());
        let age = |k: &GrantOrderKey| (k.created_at, k.id);
        match self {
            DeductionOrder::PriorityExpiryAge => a
                .priority
                .cmp(&b.priority)
                .then(exp(a).cmp(&exp(b)))
                .then(age(a).cmp(&age(b))),
            DeductionOrder::ExpiryPriorityAge => exp(a)
                .cmp(&exp(b))
                .then(a.priority.cmp(&b.priority))
                .then(age(a).cmp(&age(b))),
            DeductionOrder::OldestFirst => age(a).cmp(&age(b)),
            DeductionOrder::PriorityAge => a.priority.cmp(&b.priority).then(age(a).cmp(&age(b))),
        }
    }
}

/// A grant's order key and what it has available now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GrantBalance {
    /// Its place in the order.
    pub key: GrantOrderKey,
    /// Spendable now (zero if inactive).
    pub available: Credits,
}

/// How a debit splits across grants.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DeductionPlan {
    /// `(index into the input slice, amount taken)`, in deduction order, no zero amounts.
    pub parts: Vec<(usize, Credits)>,
    /// What the grants could not cover (zero if fully covered).
    pub shortfall: Credits,
}

/// Splits `amount` across `grants` in `order`: each grant gives what it has until the
/// amount is covered. Pure; the ledger applies the plan (or refuses on a shortfall).
pub fn plan_deduction(
    order: DeductionOrder,
    grants: &[GrantBalance],
    amount: Credits,
) -> DeductionPlan {
    let mut idx: Vec<usize> = (0..grants.len()).collect();
    idx.sort_by(|&a, &b| order.compare(&grants[a].key, &grants[b].key));
    let mut left = amount;
    let mut parts = Vec::new();
    for i in idx {
        if left.is_zero() {
            break;
        }
        let take = grants[i].available.min(left);
        if !take.is_zero() {
            parts.push((i, take));
            left = left.saturating_sub(take);
        }
    }
    DeductionPlan {
        parts,
        shortfall: left,
    }
}

#[cfg(test)]
mod tests;
