//! # tollgate-core: units, rating and policy types
//!
//! Pure, integer-only building blocks shared by every Tollgate part: the agent-side
//! client (which rates each call on its hot path), the sidecar, and the ledger and
//! authority (which re-rate usage as the truth). No I/O, no floats, no `unsafe`.
//!
//! ## Units
//! - Money is [`Credits`]: a `u64` count of **micro-credits** (1 credit =
//!   [`MICROS_PER_CREDIT`] = 1,000,000). Shown as credits with six decimals
//!   (`12.500000`), parsed exactly from `"12.5"`, serialized as the integer micro-credits.
//! - Time is unix seconds (`u64`, UTC). Windows ([`Horizon`]) are aligned: minute, hour
//!   and day to the epoch, month and year to the UTC calendar ([`time`]).
//!
//! ## Arithmetic rules
//! Every operation that can overflow is checked and reports a typed error (or `None`);
//! nothing wraps, nothing panics on any input.
//!
//! ## Crate map
//! - [`credits`]: `Credits` and its parsing.
//! - [`tier`]: priority [`Tier`]s and the call's [`Initiator`].
//! - [`time`]: [`Horizon`]s and calendar window math.
//! - [`policy`]: [`LimitKind`] and the policy types.
//! - [`rating`]: [`Usage`], [`RatingInput`], [`ModelRef`] and the rating engine.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod alert;
pub mod credits;
pub mod grant;
pub mod money;
pub mod plan;
pub mod policy;
pub mod rating;
pub mod tier;
pub mod time;

pub use alert::{AlertRule, BudgetState, BurnRate};
pub use credits::{Credits, MICROS_PER_CREDIT, ParseCreditsError};
pub use grant::{
    DeductionOrder, DeductionPlan, GrantBalance, GrantKind, GrantOrderKey, GrantTerms, ResetPeriod,
    plan_deduction,
};
pub use money::{CreditPack, CurrencyCode, Money, MoneyError};
pub use plan::{PeriodBill, PeriodUsage, Plan, PlanError};
pub use policy::{
    Decision, FloorAmount, LimitKind, QuotaPolicy, QuotaScope, TaskBudget, TierFloors,
};
pub use rating::{
    Charge, ModelPrice, ModelRef, PriceBook, PriceBookError, PriceBookSpec, Pricing, RatingError,
    RatingInput, Usage,
};
pub use tier::{Initiator, Tier};
pub use time::{CivilDate, Horizon, Window};
