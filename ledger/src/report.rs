//! What the ledger reports: balances with burn rate and projected depletion, statement
//! rows and alert events.

use serde::{Deserialize, Serialize};
use tollgate_core::{CreditPack, Credits, PeriodBill, PeriodUsage};

use crate::clock::Timestamp;
use crate::grant::Grant;
use crate::hold::Funding;
use crate::ids::TenantId;
use crate::policy::AlertCondition;

/// A wallet's balance at one moment.
///
/// Conservation: `granted = available + upcoming + held + consumed + expired`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    /// Tenant.
    pub tenant: TenantId,
    /// Time of the figures.
    pub at: Timestamp,
    /// Credits ever granted (including every reset's refill).
    pub granted: Credits,
    /// Spendable now from grants (started, not expired, not held).
    pub available: Credits,
    /// In grants that have not started yet.
    pub upcoming: Credits,
    /// Reserved by open holds from grants.
    pub held: Credits,
    /// Spent from grants.
    pub consumed: Credits,
    /// Expired unused.
    pub expired: Credits,
    /// Plan-funded credits reserved by open holds.
    pub plan_held: Credits,
    /// Plan-funded credits spent, all time (list price; the bill is `period_bill`).
    pub plan_consumed: Credits,
    /// Overrun recorded, all time (never billed).
    pub overrun: Credits,
    /// Start of the current billing period (calendar month, UTC).
    pub period_start: Timestamp,
    /// Spent (from grants and the plan) in the current period, at list price.
    pub period_spent: Credits,
    /// Plan-funded usage of the current period.
    pub period_usage: PeriodUsage,
    /// The current period's bill under the plan so far, if the tenant has a plan.
    pub period_bill: Option<PeriodBill>,
    /// The plan's hard cap on the period's charge, if any.
    pub hard_cap: Option<Credits>,
    /// What a new hold could reserve now (grants, plus the plan's room under its cap).
    pub spendable: Credits,
    /// Average spend per hour over the last hour (settled usage).
    pub burn_rate_1h: Credits,
    /// Average spend per hour over the last 24 hours (settled usage).
    pub burn_rate_24h: Credits,
    /// When `spendable` runs out at the last hour's burn rate, counting open holds as
    /// already spent; `None` if nothing is being spent.
    pub projected_depletion_at: Option<Timestamp>,
    /// The grants (open ones, and closed ones that still hold credits).
    pub grants: Vec<Grant>,
    /// The tenant's credit pack (the price of credits in its currency), if set.
    pub credit_pack: Option<CreditPack>,
}

/// One line of a statement: spend of one (agent, instance, model, feature, task) paid by
/// one source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementRow {
    /// The agent's name ("" = unnamed).
    pub agent: String,
    /// Agent instance.
    pub agent_instance: String,
    /// Model.
    pub model: String,
    /// Feature.
    pub feature: String,
    /// Task ("" = none).
    pub task: String,
    /// Who paid (grant, plan, overrun, nothing).
    pub funding: Funding,
    /// Credits.
    pub amount: Credits,
    /// Calls.
    pub records: u64,
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
    /// Outcomes.
    pub outcomes: u64,
    /// Agentic Work Units.
    pub work_units: u64,
    /// Weighted requests (milli-requests) under per-request prices.
    pub request_units_milli: u64,
}

/// One calendar month's bill under the tenant's plan, as far as the statement's range
/// reaches into it: what the plan actually bills (seats, overage, floor, cap), not the
/// list price of the plan-funded usage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonthBill {
    /// Start of the month (UTC).
    pub month_start: Timestamp,
    /// End of the month (exclusive).
    pub month_end: Timestamp,
    /// The plan-funded usage of the whole month so far (metered list price; request
    /// units).
    pub usage: PeriodUsage,
    /// All plan-funded credits of the month at list price (metered and per request).
    pub list_price: Credits,
    /// The bill of that usage under the plan in force now.
    pub bill: PeriodBill,
    /// True while the month is not over: the bill so far.
    pub open: bool,
}

/// A statement over `[from, to)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    /// Tenant.
    pub tenant: TenantId,
    /// Start (inclusive).
    pub from: Timestamp,
    /// End (exclusive).
    pub to: Timestamp,
    /// Rows, ordered by agent, instance, model, feature, task, funding.
    pub rows: Vec<StatementRow>,
    /// Plan-funded credits in the rows (list price).
    pub plan_funded: Credits,
    /// Overrun credits in the rows (never billed).
    pub overrun: Credits,
    /// With a plan: the bill of each calendar month the range touches (whole months).
    pub plan_bills: Vec<MonthBill>,
    /// The tenant's credit pack (the price of credits in its currency), if set.
    pub credit_pack: Option<CreditPack>,
}

/// An alert that fired; recorded in the audit chain. Delivery is the authority's job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertEvent {
    /// Tenant.
    pub tenant: TenantId,
    /// Rule id.
    pub rule_id: String,
    /// The rule's condition.
    pub condition: AlertCondition,
    /// When it fired.
    pub at: Timestamp,
    /// Spend in the current month.
    pub period_spent: Credits,
    /// Budget the percentage refers to.
    pub budget: Credits,
    /// Burn rate per hour over the last hour.
    pub burn_rate_1h: Credits,
    /// Projected depletion, if spending.
    pub projected_depletion_at: Option<Timestamp>,
    /// Audit sequence number of the record of this alert.
    pub audit_seq: u64,
}
