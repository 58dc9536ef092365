//! The versioned [`PriceBook`] and the rating arithmetic for the four pricing kinds.

use std::num::NonZeroU64;

use serde::{Deserialize, Serialize};

use super::{ModelRef, RatingError, RatingInput};
use crate::credits::{Credits, MICROS_PER_CREDIT};
use crate::tier::Initiator;

/// Per-mille base: a multiplier of `1000` is 1×.
pub const PER_MILLE: u64 = 1_000;

/// Ordinary usage, which every price of an accepted book must rate without overflow
/// ([`PriceBook::check_ordinary_usage`]): one record of this many input tokens and as many
/// output tokens (a billion each, far past any context window)...
pub const ORDINARY_MAX_TOKENS: u64 = 1_000_000_000;
/// ...with this many outcomes...
pub const ORDINARY_MAX_OUTCOMES: u64 = 1_000_000;
/// ...standing for this many calls (an aggregate record).
pub const ORDINARY_MAX_CALLS: u64 = 1_000_000;

/// How one model (or billable feature) is priced. All prices are [`Credits`]
/// (micro-credits); every charge is rounded **up** to the next micro-credit, once per call.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum Pricing {
    /// Per token, input and output priced separately, per **million** tokens:
    /// `ceil((in * input_per_million + out * output_per_million) / 1_000_000)` micro-credits.
    PerToken {
        /// Price of one million input tokens.
        input_per_million: Credits,
        /// Price of one million output tokens.
        output_per_million: Credits,
    },
    /// Per action: one action covers up to `tokens_per_action` tokens (input + output), so a
    /// call costs `ceil(tokens / tokens_per_action)` actions (10,000 tokens at 10,000 per
    /// action = 1 action, 10,001 = 2, 20,001 = 3; a call of 0 tokens costs nothing).
    PerAction {
        /// Tokens one action covers (never zero).
        tokens_per_action: NonZeroU64,
        /// Price of one action.
        price_per_action: Credits,
    },
    /// Per request: the book's `request_price` times `multiplier_per_mille / 1000`
    /// (1000 = 1×, 330 = 0.33×, 10000 = 10×), rounded up. Token counts do not matter.
    /// With `agent_initiated_free`, calls the agent starts on its own cost nothing and
    /// count no request units: only human-initiated calls are billed.
    PerRequest {
        /// Model multiplier in per-mille of the book's request price.
        multiplier_per_mille: u32,
        /// Agent-initiated calls are free (and use no included requests).
        agent_initiated_free: bool,
    },
    /// Per outcome (e.g. a resolved ticket): `outcomes * price_per_outcome`. The calls
    /// themselves cost nothing; the outcome is reported as an event with `outcomes > 0`.
    /// A consumption floor is plan-level: see [`crate::plan::Plan::consumption_floor`].
    PerOutcome {
        /// Price of one outcome.
        price_per_outcome: Credits,
    },
}

impl Pricing {
    /// What a call costs under this pricing, with `request_price` the book's price of one
    /// 1× request (used only by [`Pricing::PerRequest`]). The same arithmetic as
    /// [`PriceBook::rate`], for callers that keep pricing outside a book.
    #[inline]
    pub fn rate(
        &self,
        request_price: Credits,
        input: &RatingInput,
    ) -> Result<Credits, RatingError> {
        rate_pricing(self, request_price, input, 1)
    }
}

/// A model's entry in the price book.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    /// Model (or billable feature) name, unique in the book, e.g. `"gpt-4o"`.
    pub name: String,
    /// How it is priced.
    pub pricing: Pricing,
    /// Largest output a call may produce, for sizing reservations when the call states
    /// none; `None` uses the book's `default_max_output_tokens`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u64>,
}

/// The unvalidated form of a [`PriceBook`] (what config files and the API carry).
///
/// Parsing is strict: an unknown field anywhere (the book, a model, a pricing) is an
/// error naming it, so a misspelt `max_output_token` cannot silently fall back to a
/// default and misprice calls.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceBookSpec {
    /// Version; every usage record carries the version that rated it.
    pub version: u64,
    /// Price of one request at multiplier 1× (for [`Pricing::PerRequest`] models).
    #[serde(default)]
    pub request_price: Credits,
    /// Output tokens assumed for a reservation when neither the call nor the model says.
    pub default_max_output_tokens: u64,
    /// Models, in any order; names unique.
    pub models: Vec<ModelPrice>,
}

/// Why a price book is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PriceBookError {
    /// Two entries share a name.
    #[error("model {0:?} appears twice in the price book: names must be unique")]
    DuplicateModel(String),
    /// An entry has an empty name.
    #[error("a model in the price book has an empty name")]
    EmptyModelName,
    /// More models than a `ModelRef` can index.
    #[error("price book has {0} models: at most {max} are supported", max = u32::MAX)]
    TooManyModels(usize),
    /// A price so large that ordinary usage overflows `u64` micro-credits: calls on it
    /// could not be rated (see [`PriceBook::check_ordinary_usage`]).
    #[error(
        "model {0:?}: ordinary usage (a record of {ORDINARY_MAX_TOKENS} input and output tokens, {ORDINARY_MAX_OUTCOMES} outcomes, {ORDINARY_MAX_CALLS} calls) overflows u64 micro-credits: lower its price"
    )]
    OverflowsOnOrdinaryUsage(String),
}

/// A validated, versioned price book: model names to [`Pricing`], and the rating engine.
///
/// Fast path: resolve the model once with [`PriceBook::model`] and keep the
/// [`ModelRef`]; then [`PriceBook::rate`] is an index plus integer arithmetic (no hashing,
/// no allocation) and [`PriceBook::rate_max`] sizes a reservation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "PriceBookSpec")]
pub struct PriceBook {
    version: u64,
    request_price: Credits,
    default_max_output_tokens: u64,
    models: Vec<ModelPrice>,
    /// Indices into `models`, sorted by name, for `model()` by binary search.
    #[serde(skip)]
    by_name: Vec<u32>,
}

impl TryFrom<PriceBookSpec> for PriceBook {
    type Error = PriceBookError;

    fn try_from(spec: PriceBookSpec) -> Result<PriceBook, PriceBookError> {
        if u32::try_from(spec.models.len()).is_err() {
            return Err(PriceBookError::TooManyModels(spec.models.len()));
        }
        if spec.models.iter().any(|m| m.name.is_empty()) {
            return Err(PriceBookError::EmptyModelName);
        }
        // The length fits in u32 (checked above), so every index does too.
        let mut by_name: Vec<u32> = (0..spec.models.len() as u32).collect();
        by_name.sort_by(|&a, &b| {
            spec.models[a as usize]
                .name
                .cmp(&spec.models[b as usize].name)
        });
        if let Some(w) = by_name
            .windows(2)
            .find(|w| spec.models[w[0] as usize].name == spec.models[w[1] as usize].name)
        {
            return Err(PriceBookError::DuplicateModel(
                spec.models[w[0] as usize].name.clone(),
            ));
        }
        Ok(PriceBook {
            version: spec.version,
            request_price: spec.request_price,
            default_max_output_tokens: spec.default_max_output_tokens,
            models: spec.models,
            by_name,
        })
    }
}

impl From<PriceBook> for PriceBookSpec {
    fn from(book: PriceBook) -> PriceBookSpec {
        PriceBookSpec {
            version: book.version,
            request_price: book.request_price,
            default_max_output_tokens: book.default_max_output_tokens,
            models: book.models,
        }
    }
}

/// The parts of a charge, for statements and plan accounting ([`PriceBook::rate_detailed`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Charge {
    /// What the call costs at list price.
    pub credits: Credits,
    /// Actions billed (per-action pricing), else 0.
    pub actions: u64,
    /// Weighted requests billed, in milli-requests (per-request pricing: the model's
    /// multiplier, or 0 for a free agent-initiated call), else 0.
    pub request_units_milli: u64,
    /// Outcomes billed (per-outcome pricing), else 0.
    pub outcomes: u64,
}

impl PriceBook {
    /// Validates a spec (unique, non-empty names).
    pub fn new(spec: PriceBookSpec) -> Result<PriceBook, PriceBookError> {
        PriceBook::try_from(spec)
    }

    /// The book's version.
    #[inline]
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Price of one request at 1× (per-request pricing).
    pub fn request_price(&self) -> Credits {
        self.request_price
    }

    /// Output tokens assumed for reservations when neither call nor model says.
    pub fn default_max_output_tokens(&self) -> u64 {
        self.default_max_output_tokens
    }

    /// All entries, in `ModelRef::index` order.
    pub fn models(&self) -> &[ModelPrice] {
        &self.models
    }

    /// Resolves a model name to a handle (binary search; do it once, not per call).
    pub fn model(&self, name: &str) -> Option<ModelRef> {
        let pos = self
            .by_name
            .binary_search_by(|&i| self.models[i as usize].name.as_str().cmp(name))
            .ok()?;
        Some(ModelRef {
            index: self.by_name[pos],
            book_version: self.version,
        })
    }

    /// The entry a handle refers to, checking it belongs to this book.
    #[inline]
    pub fn entry(&self, model: &ModelRef) -> Result<&ModelPrice, RatingError> {
        if model.book_version != self.version {
            return Err(RatingError::StaleModelRef {
                handle_version: model.book_version,
                book_version: self.version,
            });
        }
        self.models
            .get(model.index as usize)
            .ok_or(RatingError::BadModelRef(model.index))
    }

    /// Output tokens a reservation assumes for this model when the call states no maximum.
    pub fn max_output_tokens(&self, model: &ModelRef) -> Result<u64, RatingError> {
        Ok(self
            .entry(model)?
            .max_output_tokens
            .unwrap_or(self.default_max_output_tokens))
    }

    /// What a call costs at list price, rounded up to the micro-credit. Hot path: no
    /// allocation, no hashing; overflow is [`RatingError::Overflow`], never a panic.
    #[inline]
    pub fn rate(&self, model: &ModelRef, input: &RatingInput) -> Result<Credits, RatingError> {
        let entry = self.entry(model)?;
        rate_pricing(&entry.pricing, self.request_price, input, 1)
    }

    /// The most a call may cost, for sizing its reservation: `input_tokens` in and
    /// `max_output_tokens` out (or, when `None`, the model's / book's default maximum),
    /// no outcomes. Since rating is monotone in tokens, a call that stays within its
    /// maximum never costs more than this.
    #[inline]
    pub fn rate_max(
        &self,
        model: &ModelRef,
        input_tokens: u64,
        max_output_tokens: Option<u64>,
        initiator: Initiator,
    ) -> Result<Credits, RatingError> {
        self.rate_max_with_outcomes(model, input_tokens, max_output_tokens, initiator, 0)
    }

    /// [`PriceBook::rate_max`] for a call that may also produce up to `outcomes` outcomes
    /// (a model priced per outcome charges them; one priced per token, the tokens).
    pub fn rate_max_with_outcomes(
        &self,
        model: &ModelRef,
        input_tokens: u64,
        max_output_tokens: Option<u64>,
        initiator: Initiator,
        outcomes: u64,
    ) -> Result<Credits, RatingError> {
        let entry = self.entry(model)?;
        let output_tokens = max_output_tokens
            .or(entry.max_output_tokens)
            .unwrap_or(self.default_max_output_tokens);
        let input = RatingInput {
            input_tokens,
            output_tokens,
            initiator,
            outcomes,
        };
        rate_pricing(&entry.pricing, self.request_price, &input, 1)
    }

    /// Rates by model name (resolves the name each time: for the authority's re-rating,
    /// not the hot path).
    pub fn rate_by_name(&self, model: &str, input: &RatingInput) -> Result<Credits, RatingError> {
        let m = self
            .model(model)
            .ok_or_else(|| RatingError::UnknownModel(model.to_owned()))?;
        self.rate(&m, input)
    }

    /// The charge with its parts (actions, request units, outcomes). `credits` always
    /// equals [`PriceBook::rate`] for the same arguments.
    pub fn rate_detailed(
        &self,
        model: &ModelRef,
        input: &RatingInput,
    ) -> Result<Charge, RatingError> {
        self.rate_record(model, input, 1)
    }

    /// The charge of a usage record that stands for `calls` calls (0 is read as 1), its
    /// token and outcome counts being the calls' totals: per request, every call is a
    /// request (`calls` times the price and the request units); per action, at least one
    /// action per call that used a token; per token and per outcome, the totals. With
    /// one call it is [`PriceBook::rate_detailed`].
    pub fn rate_record(
        &self,
        model: &ModelRef,
        input: &RatingInput,
        calls: u64,
    ) -> Result<Charge, RatingError> {
        let entry = self.entry(model)?;
        charge_of(&entry.pricing, self.request_price, input, calls.max(1))
    }

    /// The most `input` (standing for `calls` calls) could cost under any model of this
    /// book: the rule for a record naming a model the book does not price (see the
    /// ledger's unrateable-record rule). `Ok(None)` for a book without models; an
    /// overflow under any model is [`RatingError::Overflow`].
    pub fn rate_dearest(
        &self,
        input: &RatingInput,
        calls: u64,
    ) -> Result<Option<Charge>, RatingError> {
        let mut dearest: Option<Charge> = None;
        for m in &self.models {
            let c = charge_of(&m.pricing, self.request_price, input, calls.max(1))?;
            if dearest.is_none_or(|d| c.credits > d.credits) {
                dearest = Some(c);
            }
        }
        Ok(dearest)
    }

    /// Refuses prices so large that ordinary usage (a record of [`ORDINARY_MAX_TOKENS`]
    /// input and output tokens, [`ORDINARY_MAX_OUTCOMES`] outcomes, standing for
    /// [`ORDINARY_MAX_CALLS`] calls, by a human) overflows `u64` micro-credits: such a book
    /// could not rate real calls, so it is refused when it is installed rather than
    /// discovered at posting time. Rating is monotone in every count, so smaller usage
    /// never overflows either.
    pub fn check_ordinary_usage(&self) -> Result<(), PriceBookError> {
        let input = RatingInput {
            input_tokens: ORDINARY_MAX_TOKENS,
            output_tokens: ORDINARY_MAX_TOKENS,
            initiator: Initiator::Human,
            outcomes: ORDINARY_MAX_OUTCOMES,
        };
        for m in &self.models {
            charge_of(&m.pricing, self.request_price, &input, ORDINARY_MAX_CALLS)
                .map_err(|_| PriceBookError::OverflowsOnOrdinaryUsage(m.name.clone()))?;
        }
        Ok(())
    }
}

/// A charge with its parts under one pricing (see [`PriceBook::rate_record`]).
fn charge_of(
    pricing: &Pricing,
    request_price: Credits,
    input: &RatingInput,
    calls: u64,
) -> Result<Charge, RatingError> {
    let credits = rate_pricing(pricing, request_price, input, calls)?;
    let mut charge = Charge {
        credits,
        ..Charge::default()
    };
    match *pricing {
        Pricing::PerToken { .. } => {}
        Pricing::PerAction {
            tokens_per_action, ..
        } => charge.actions = actions_of_calls(input, tokens_per_action, calls)?,
        Pricing::PerRequest {
            multiplier_per_mille,
            agent_initiated_free,
        } => {
            if !(agent_initiated_free && input.initiator == Initiator::Agent) {
                charge.request_units_milli = u64::from(multiplier_per_mille)
                    .checked_mul(calls)
                    .ok_or(RatingError::Overflow)?;
            }
        }
        Pricing::PerOutcome { .. } => charge.outcomes = input.outcomes,
    }
    Ok(charge)
}

/// Actions a call uses: `ceil((input + output) / tokens_per_action)`.
#[inline]
pub fn action_count(
    input: &RatingInput,
    tokens_per_action: NonZeroU64,
) -> Result<u64, RatingError> {
    let tokens = input
        .input_tokens
        .checked_add(input.output_tokens)
        .ok_or(RatingError::Overflow)?;
    Ok(tokens.div_ceil(tokens_per_action.get()))
}

/// The rating arithmetic for one pricing kind, for a record standing for `calls` calls
/// (at least 1) whose token and outcome counts are the totals of those calls.
#[inline]
fn rate_pricing(
    pricing: &Pricing,
    request_price: Credits,
    input: &RatingInput,
    calls: u64,
) -> Result<Credits, RatingError> {
    match *pricing {
        Pricing::PerToken {
            input_per_million,
            output_per_million,
        } => {
            // Each product is < 2^128; only their sum can overflow u128.
            let a = u128::from(input.input_tokens) * u128::from(input_per_million.micros());
            let b = u128::from(input.output_tokens) * u128::from(output_per_million.micros());
            let total = a.checked_add(b).ok_or(RatingError::Overflow)?;
            ceil_div_to_credits(total, u128::from(MICROS_PER_CREDIT))
        }
        Pricing::PerAction {
            tokens_per_action,
            price_per_action,
        } => price_per_action
            .checked_mul(actions_of_calls(input, tokens_per_action, calls)?)
            .ok_or(RatingError::Overflow),
        Pricing::PerRequest {
            multiplier_per_mille,
            agent_initiated_free,
        } => {
            if agent_initiated_free && input.initiator == Initiator::Agent {
                return Ok(Credits::ZERO);
            }
            // < 2^64 * 2^32 * 2^64: fits u128 only with the calls checked.
            let scaled = (u128::from(request_price.micros()) * u128::from(multiplier_per_mille))
                .checked_mul(u128::from(calls.max(1)))
                .ok_or(RatingError::Overflow)?;
            ceil_div_to_credits(scaled, u128::from(PER_MILLE))
        }
        Pricing::PerOutcome { price_per_outcome } => price_per_outcome
            .checked_mul(input.outcomes)
            .ok_or(RatingError::Overflow),
    }
}

/// Actions of a record standing for `calls` calls: `ceil(tokens / tokens_per_action)`,
/// but at least one per call that used a token (`min(calls, tokens)`), since a call is
/// never less than one action. With one call it is exactly [`action_count`].
#[inline]
fn actions_of_calls(
    input: &RatingInput,
    tokens_per_action: NonZeroU64,
    calls: u64,
) -> Result<u64, RatingError> {
    let by_tokens = action_count(input, tokens_per_action)?;
    let tokens = input.input_tokens.saturating_add(input.output_tokens);
    Ok(by_tokens.max(calls.max(1).min(tokens)))
}

/// `ceil(numerator / denominator)` as credits; `denominator` is a non-zero constant.
#[inline]
fn ceil_div_to_credits(numerator: u128, denominator: u128) -> Result<Credits, RatingError> {
    u64::try_from(numerator.div_ceil(denominator))
        .map(Credits::from_micros)
        .map_err(|_| RatingError::Overflow)
}
