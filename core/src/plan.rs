//! Plans: the commercial terms of a billing period, and the pure bill computation.
//!
//! A [`Plan`] has an included allowance (credits of metered usage, and/or weighted
//! requests), an overage price for requests past the allowance, an optional consumption
//! floor, an optional hard cap, and optionally **seats**: a fee per seat each period
//! (the commitment: it is billed whatever the usage) that brings allowances per seat
//! (Salesforce's $125 per user per month; Copilot Business's $19 per user with 300
//! premium requests each). [`Plan::bill`] splits one period's [`PeriodUsage`] into
//! included and overage and computes the charge:
//!
//! 1. metered credits (per-token, per-action, per-outcome charges at list price):
//!    the first `included_credits + seats * included_credits_per_seat` are included,
//!    the rest is overage at list price;
//! 2. weighted requests (per-request pricing, in milli-requests; free agent-initiated
//!    calls count none): the first `included_requests + seats *
//!    included_requests_per_seat` are included, each one past it costs
//!    `overage_request_price` (× its model multiplier), rounded up once per period;
//! 3. **consumption floor**: the minimum usage charge for the period. All usage charges
//!    (metered overage, request overage, outcomes) count toward it; if they total less,
//!    the difference is billed as a floor top-up, so `usage part = max(usage, floor)`.
//!    E.g. a $500 floor with $0.99 per resolved ticket: 300 tickets ($297) bill $500,
//!    700 tickets ($693) bill $693;
//! 4. **hard cap**: the usage part never exceeds it; anything above is reported as
//!    `over_cap` (enforcement keeps it at zero; a non-zero value means overruns);
//! 5. **seat fees**: `seats * seat_price`, added to the usage part, so
//!    `charge = seat_fees + min(max(usage, floor), cap)`. The cap limits spend on usage,
//!    not the seats bought (a cap below the seat fees would refuse every call while
//!    billing them).

use serde::{Deserialize, Serialize};

use crate::credits::Credits;
use crate::rating::{Charge, PER_MILLE};

/// The commercial terms for one billing period (a UTC calendar month unless the
/// authority says otherwise).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Plan {
    /// Metered usage (list-price credits) included each period.
    #[serde(default)]
    pub included_credits: Credits,
    /// Requests (at 1×) included each period, e.g. 300 premium requests.
    #[serde(default)]
    pub included_requests: u64,
    /// Price of one request (at 1×) past the included requests, e.g. the credits of $0.04.
    #[serde(default)]
    pub overage_request_price: Credits,
    /// Minimum charge per period; usage charges count toward it. Zero = no floor.
    #[serde(default)]
    pub consumption_floor: Credits,
    /// Maximum usage charge per period (a first-class limit, never exceeded; seat fees
    /// come on top); `None` = no cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hard_cap: Option<Credits>,
    /// Seats bought (users licensed). Zero: no seat terms.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub seats: u64,
    /// Fee per seat each period (the commitment, billed whatever the usage).
    #[serde(default, skip_serializing_if = "credits_zero")]
    pub seat_price: Credits,
    /// Metered credits each seat brings into the period's allowance.
    #[serde(default, skip_serializing_if = "credits_zero")]
    pub included_credits_per_seat: Credits,
    /// Requests (at 1×) each seat brings into the period's allowance (e.g. 300).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub included_requests_per_seat: u64,
}

fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}

fn credits_zero(c: &Credits) -> bool {
    c.is_zero()
}

/// What a tenant used in one billing period, accumulated from rated calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PeriodUsage {
    /// List-price credits of everything not priced per request.
    pub metered: Credits,
    /// Weighted requests in milli-requests (a 1× request is 1000).
    pub request_units_milli: u64,
}

impl PeriodUsage {
    /// Adds one rated call: a per-request charge (non-zero request units) counts as
    /// requests (the plan prices it), anything else as metered credits.
    pub fn add(&mut self, charge: &Charge) -> Result<(), PlanError> {
        if charge.request_units_milli > 0 {
            self.request_units_milli = self
                .request_units_milli
                .checked_add(charge.request_units_milli)
                .ok_or(PlanError::Overflow)?;
        } else {
            self.metered = self
                .metered
                .checked_add(charge.credits)
                .ok_or(PlanError::Overflow)?;
        }
        Ok(())
    }
}

/// One period's bill: usage split into included and overage, floor and cap applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PeriodBill {
    /// Metered credits covered by the allowance.
    pub included_credits: Credits,
    /// Metered credits past the allowance (billed at list price).
    pub overage_credits: Credits,
    /// The seat fees of the period (`seats * seat_price`), billed whatever the usage.
    #[serde(default)]
    pub seat_fees: Credits,
    /// Milli-requests covered by the included requests.
    pub included_requests_milli: u64,
    /// Milli-requests past the included requests.
    pub overage_requests_milli: u64,
    /// `ceil(overage_requests_milli * overage_request_price / 1000)`.
    pub request_overage_charge: Credits,
    /// `overage_credits + request_overage_charge`.
    pub usage_charge: Credits,
    /// Added to reach the consumption floor (`floor - usage_charge`, or zero).
    pub floor_top_up: Credits,
    /// What the period costs: `seat_fees + min(max(usage_charge, floor), hard_cap)`.
    pub charge: Credits,
    /// Charge above the hard cap that was not billed (zero when the cap was enforced).
    pub over_cap: Credits,
}

/// Why a plan or bill is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The floor is above the hard cap: no bill could satisfy both.
    #[error(
        "consumption floor {floor} is above the hard cap {cap}: lower the floor or raise the cap"
    )]
    FloorAboveCap {
        /// The floor.
        floor: Credits,
        /// The cap.
        cap: Credits,
    },
    /// An amount does not fit in `u64` micro-credits.
    #[error("plan arithmetic overflows u64: usage or prices too large")]
    Overflow,
}

impl Plan {
    /// Checks the plan is coherent: floor not above cap, seat terms that fit in `u64`.
    pub fn validate(&self) -> Result<(), PlanError> {
        if let Some(cap) = self.hard_cap
            && self.consumption_floor > cap
        {
            return Err(PlanError::FloorAboveCap {
                floor: self.consumption_floor,
                cap,
            });
        }
        self.credit_allowance()?;
        self.request_allowance()?
            .checked_mul(PER_MILLE)
            .ok_or(PlanError::Overflow)?;
        self.seat_fees()?;
        Ok(())
    }

    /// Metered credits included each period: the plan's own plus every seat's.
    pub fn credit_allowance(&self) -> Result<Credits, PlanError> {
        self.included_credits_per_seat
            .checked_mul(self.seats)
            .and_then(|s| s.checked_add(self.included_credits))
            .ok_or(PlanError::Overflow)
    }

    /// Requests (at 1×) included each period: the plan's own plus every seat's.
    pub fn request_allowance(&self) -> Result<u64, PlanError> {
        self.included_requests_per_seat
            .checked_mul(self.seats)
            .and_then(|s| s.checked_add(self.included_requests))
            .ok_or(PlanError::Overflow)
    }

    /// The period's seat fees: `seats * seat_price`.
    pub fn seat_fees(&self) -> Result<Credits, PlanError> {
        self.seat_price
            .checked_mul(self.seats)
            .ok_or(PlanError::Overflow)
    }

    /// Splits a period's usage into included and overage and computes its charge (see
    /// the module docs for the rules).
    pub fn bill(&self, usage: &PeriodUsage) -> Result<PeriodBill, PlanError> {
        self.validate()?;
        let included_credits = usage.metered.min(self.credit_allowance()?);
        let overage_credits = usage.metered.saturating_sub(included_credits);

        let allowance_milli = self
            .request_allowance()?
            .checked_mul(PER_MILLE)
            .ok_or(PlanError::Overflow)?;
        let included_requests_milli = usage.request_units_milli.min(allowance_milli);
        let overage_requests_milli = usage.request_units_milli - included_requests_milli;
        let scaled =
            u128::from(overage_requests_milli) * u128::from(self.overage_request_price.micros());
        let request_overage_charge = u64::try_from(scaled.div_ceil(u128::from(PER_MILLE)))
            .map(Credits::from_micros)
            .map_err(|_| PlanError::Overflow)?;

        let usage_charge = overage_credits
            .checked_add(request_overage_charge)
            .ok_or(PlanError::Overflow)?;
        let floor_top_up = self.consumption_floor.saturating_sub(usage_charge);
        let floored = usage_charge.max(self.consumption_floor);
        let usage_part = self.hard_cap.map_or(floored, |cap| floored.min(cap));
        let seat_fees = self.seat_fees()?;
        let charge = usage_part
            .checked_add(seat_fees)
            .ok_or(PlanError::Overflow)?;
        Ok(PeriodBill {
            seat_fees,
            included_credits,
            overage_credits,
            included_requests_milli,
            overage_requests_milli,
            request_overage_charge,
            usage_charge,
            floor_top_up,
            charge,
            over_cap: floored.saturating_sub(usage_part),
        })
    }

    /// How much more usage charge the period can take before the hard cap: `None`
    /// without a cap. Usage below the floor still counts (the floor is the minimum, not an
    /// extra), so this is `cap - usage_charge`, not `cap - charge`.
    pub fn headroom(&self, usage: &PeriodUsage) -> Result<Option<Credits>, PlanError> {
        let Some(cap) = self.hard_cap else {
            return Ok(None);
        };
        let bill = self.bill(usage)?;
        Ok(Some(cap.saturating_sub(bill.usage_charge)))
    }
}

#[cfg(test)]
mod tests;
