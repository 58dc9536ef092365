//! # tollgate-core: units, rating and policy types
//!
//! Pure, integer-only building blocks shared by every Tollgate part: the agent-side
//! client (which rates each call on its hot path), the sidecar, and the ledger and
//! authority (which re-rate usage as the truth). No I/O, no floats, no `unsafe`.
//!
//! ## Units
//! - Money inside Tollgate is [`Credits`]: a `u64` count of **micro-credits**
//!   (1 credit = [`MICROS_PER_CREDIT`] = 1,000,000). Shown as credits with six decimals
//!   (`12.500000`), parsed exactly from `"12.5"`, serialized as the integer micro-credits.
//! - Real money is [`Money`], a `u64` count of micro-units of a currency; a [`CreditPack`]
//!   (e.g. 100,000 credits for $500) is the exchange rate between the two.
//! - Time is unix seconds (`u64`, UTC). Windows ([`Horizon`]) are aligned: minute, hour
//!   and day to the epoch, month and year to the UTC calendar ([`time`]).
//!
//! ## Rounding and overflow
//! - A charge is rounded **up** to the next micro-credit, once per call (never per token
//!   or per component), so `charge * 1e6 >= exact` and the excess is under one micro-credit.
//! - Credits to money round up; money to credits bought rounds down; a money price stated
//!   as credits rounds up ([`money`]). Plan request overage rounds up once per period.
//! - Every operation that can overflow is checked and reports a typed error (or `None`):
//!   nothing wraps, nothing panics, on any input.
//!
//! ## Pricing kinds ([`Pricing`])
//! - **Per token**, per model: input and output priced separately per million tokens.
//! - **Per action**: an action covers up to N tokens (input + output); a call costs
//!   `ceil(tokens / N)` actions. At N = 10,000 and 20 credits an action: 10,000 tokens
//!   cost 20 credits, 10,001 cost 40, 20,001 cost 60.
//! - **Per request**: the book's request price times the model's per-mille multiplier;
//!   calls the agent starts on its own can be free ([`Initiator::Agent`]).
//! - **Per outcome** (a resolved ticket): outcomes times a price; the calls are free.
//!
//! A usage record may stand for several calls ([`PriceBook::rate_record`]): per request
//! each call is a request, per action each call that used a token is at least one action.
//! A book must rate ordinary usage (a billion tokens, a million outcomes or calls in one
//! record) without overflow ([`PriceBook::check_ordinary_usage`]); the authority refuses
//! books that do not.
//!
//! Included allowances, seats, the consumption floor and the hard cap are plan-level:
//! [`Plan::bill`] splits a period's usage into included and overage (e.g. 300 included
//! premium requests per seat, then each costs $0.04), applies the floor and the cap, and
//! adds the seats' fees.
//!
//! ## The fast rating API
//! Resolve a model name once (binary search), keep the [`ModelRef`], then rate each call
//! with an index and integer arithmetic: no hashing, no allocation. A `ModelRef` carries
//! its book's version; a handle from an older book is refused, not misapplied.
//!
//! ```
//! use tollgate_core::{Credits, Initiator, ModelPrice, PriceBook, PriceBookSpec, Pricing,
//!                     RatingInput, Usage};
//!
//! let book = PriceBook::new(PriceBookSpec {
//!     version: 1,
//!     request_price: Credits::ZERO,
//!     default_max_output_tokens: 4_096,
//!     models: vec![ModelPrice {
//!         name: "gpt-4o".into(),
//!         pricing: Pricing::PerToken {
//!             input_per_million: "2.5".parse()?,
//!             output_per_million: "10".parse()?,
//!         },
//!         max_output_tokens: None,
//!     }],
//! })?;
//! let gpt = book.model("gpt-4o").expect("priced"); // once, at start-up
//!
//! // Before the call: size the reservation from the call's maximum.
//! let hold = book.rate_max(&gpt, 1_200, Some(800), Initiator::Human)?;
//! // After the call: rate what it actually used.
//! let cost = book.rate(&gpt, &RatingInput::new(Usage::new(1_180, 311)))?;
//! assert!(cost <= hold);
//! assert_eq!(cost.to_string(), "0.006060");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Crate map
//! - [`credits`]: `Credits` and its exact parsing.
//! - [`money`]: `Money`, currency codes, credit packs (exchange rates).
//! - [`rating`]: [`Usage`], [`RatingInput`], [`PriceBook`], [`ModelRef`], the engine.
//! - [`plan`]: [`Plan`] terms and the period bill (allowance, overage, floor, cap).
//! - [`tier`]: priority [`Tier`]s and the call's [`Initiator`].
//! - [`time`]: [`Horizon`]s and calendar window math.
//! - [`policy`]: [`LimitKind`], quotas (with shadow mode), tier floors, task budgets.
//! - [`alert`]: alert rules, burn rate and projected depletion.
//! - [`grant`]: grant kinds, resets without rollover, the deduction order.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod alert;
pub mod clock;
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
