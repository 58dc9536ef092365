//! Per-tenant policy the ledger enforces: the plan, the deduction order and the alert
//! rules.
//!
//! The plan is `tollgate_core::Plan` (included credits and requests, overage request
//! price, consumption floor, hard cap on the period's charge). The ledger applies it to
//! usage that the tenant's grants do not cover: such usage is funded by the plan
//! ([`crate::Funding::Plan`]), accumulated in the month's `PeriodUsage`, and billed by
//! `Plan::bill`; the hard cap bounds that bill and is never exceeded (see the crate docs
//! for the overrun rule). A tenant without a plan is prepaid only: usage past its grants
//! is overrun.

use serde::{Deserialize, Serialize};
use tollgate_core::CreditPack;
pub use tollgate_core::Plan;

use crate::grant::DeductionOrder;

/// An alert rule of a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertRule {
    /// Rule id, unique per tenant (names the rule in events and deliveries).
    pub id: String,
    /// Condition.
    pub condition: AlertCondition,
}

/// When an alert fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertCondition {
    /// `percent` of the month's budget is used. With a plan hard cap: the month's plan
    /// charge against the cap. Otherwise: the month's spend against that spend plus what
    /// is left in usable grants. Fires once per calendar month.
    BudgetUsedPercent {
        /// Percent, 1..=100.
        percent: u32,
    },
    /// At the current burn rate (the last hour), what is left runs out within `hours`.
    /// Fires when it becomes true, and again only after it was false at an evaluation.
    DepletionWithin {
        /// Hours.
        hours: u32,
    },
}

/// A tenant's ledger configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TenantConfig {
    /// Order grants are spent in.
    pub deduction_order: DeductionOrder,
    /// The plan, if any.
    pub plan: Option<Plan>,
    /// Alert rules.
    pub alert_rules: Vec<AlertRule>,
    /// The price of the tenant's credits in its currency (e.g. 100,000 credits for
    /// $500), for balances and statements in money and for buying credit packs. `None`:
    /// credits only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credit_pack: Option<CreditPack>,
}
