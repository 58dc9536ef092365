//! Spending alerts: [`AlertRule`]s over a budget's use and its projected depletion, with
//! integer [`BurnRate`] math. Pure: the authority feeds in the numbers and delivers.

use serde::{Deserialize, Serialize};

use crate::credits::Credits;
use crate::time::SECS_PER_HOUR;

/// Spend per hour. Computed from settled usage plus open holds over a trailing window.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct BurnRate(pub Credits);

impl BurnRate {
    /// Burn rate of `spent` over `over_secs` seconds, rounded **up** (projections err
    /// toward earlier depletion); `None` for an empty window or an overflowing rate.
    pub fn from_spend(spent: Credits, over_secs: u64) -> Option<BurnRate> {
        if over_secs == 0 {
            return None;
        }
        let per_hour = (u128::from(spent.micros()) * u128::from(SECS_PER_HOUR))
            .div_ceil(u128::from(over_secs));
        u64::try_from(per_hour)
            .ok()
            .map(|m| BurnRate(Credits::from_micros(m)))
    }

    /// Credits per hour.
    pub const fn per_hour(self) -> Credits {
        self.0
    }

    /// Seconds until `available` runs out at this rate (rounded down); `None` if nothing
    /// is burning.
    pub fn secs_until_depleted(self, available: Credits) -> Option<u64> {
        if self.0.is_zero() {
            return None;
        }
        let secs = u128::from(available.micros()) * u128::from(SECS_PER_HOUR)
            / u128::from(self.0.micros());
        Some(u64::try_from(secs).unwrap_or(u64::MAX))
    }

    /// When `available` runs out, as a unix time; `None` if nothing is burning (or never
    /// within `u64`).
    pub fn depletion_at(self, available: Credits, now: u64) -> Option<u64> {
        now.checked_add(self.secs_until_depleted(available)?)
    }
}

/// The numbers an alert looks at, for one budget (a wallet, a plan's cap, a quota).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BudgetState {
    /// The budget (granted, or the cap).
    pub budget: Credits,
    /// Used so far (settled plus held).
    pub used: Credits,
    /// Current burn rate.
    pub burn: BurnRate,
}

impl BudgetState {
    /// What is left: `budget - used`, or zero.
    pub fn available(&self) -> Credits {
        self.budget.saturating_sub(self.used)
    }

    /// Whole percent of the budget used, rounded down (100 for an empty budget that is
    /// touched, 0 for one that is not), capped at `u32::MAX`.
    pub fn percent_used(&self) -> u32 {
        if self.budget.is_zero() {
            return if self.used.is_zero() { 0 } else { 100 };
        }
        let p = u128::from(self.used.micros()) * 100 / u128::from(self.budget.micros());
        u32::try_from(p).unwrap_or(u32::MAX)
    }
}

/// When to alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertRule {
    /// At least `percent` of the budget is used (e.g. 50, 80, 100).
    BudgetUsed {
        /// Threshold in whole percent.
        percent: u32,
    },
    /// At the current burn rate the budget runs out within `hours`.
    DepletionWithin {
        /// Horizon in hours.
        hours: u32,
    },
}

impl AlertRule {
    /// `true` if the condition holds in `state`. Exact integer comparison:
    /// `used * 100 >= budget * percent`.
    pub fn is_met(&self, state: &BudgetState) -> bool {
        match *self {
            AlertRule::BudgetUsed { percent } => {
                u128::from(state.used.micros()) * 100
                    >= u128::from(state.budget.micros()) * u128::from(percent)
            }
            AlertRule::DepletionWithin { hours } => state
                .burn
                .secs_until_depleted(state.available())
                .is_some_and(|secs| secs <= u64::from(hours) * SECS_PER_HOUR),
        }
    }

    /// `true` if the condition was not met `before` and is met `after`: fire once per
    /// crossing, not on every update.
    pub fn newly_met(&self, before: &BudgetState, after: &BudgetState) -> bool {
        !self.is_met(before) && self.is_met(after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(n: u64) -> Credits {
        Credits::from_credits(n).unwrap()
    }

    #[test]
    fn budget_percent_alerts_fire_on_crossing() {
        let rule = AlertRule::BudgetUsed { percent: 80 };
        let at = |used| BudgetState {
            budget: c(1_000),
            used,
            burn: BurnRate::default(),
        };
        assert!(!rule.is_met(&at(c(799))));
        assert!(!rule.is_met(&at(Credits(799_999_999))));
        assert!(rule.is_met(&at(c(800))));
        assert!(rule.newly_met(&at(c(700)), &at(c(800))));
        assert!(!rule.newly_met(&at(c(850)), &at(c(900))));
        assert_eq!(at(c(805)).percent_used(), 80);
        assert_eq!(at(c(2_000)).available(), Credits::ZERO);
    }

    #[test]
    fn burn_rate_and_projected_depletion() {
        // 30 credits in 15 minutes = 120 credits/hour.
        let burn = BurnRate::from_spend(c(30), 900).unwrap();
        assert_eq!(burn.per_hour(), c(120));
        // 600 credits left at 120/h: 5 hours.
        assert_eq!(burn.secs_until_depleted(c(600)), Some(5 * 3_600));
        assert_eq!(burn.depletion_at(c(600), 1_000), Some(1_000 + 18_000));
        assert_eq!(BurnRate::default().secs_until_depleted(c(1)), None);
        assert_eq!(BurnRate::from_spend(c(1), 0), None);
        assert_eq!(BurnRate::from_spend(Credits::MAX, 1), None);
        // Rounded up: 1 micro-credit over 7 s is 515 (514.28..) per hour.
        assert_eq!(
            BurnRate::from_spend(Credits(1), 7).unwrap().per_hour(),
            Credits(515)
        );

        let rule = AlertRule::DepletionWithin { hours: 6 };
        let state = BudgetState {
            budget: c(1_000),
            used: c(400),
            burn,
        };
        assert!(rule.is_met(&state));
        assert!(!AlertRule::DepletionWithin { hours: 4 }.is_met(&state));
        let idle = BudgetState {
            burn: BurnRate::default(),
            ..state
        };
        assert!(!rule.is_met(&idle));
        let json = serde_json::to_string(&rule).unwrap();
        assert_eq!(json, r#"{"depletion_within":{"hours":6}}"#);
    }
}
