//! Rating: turning a call into [`Credits`].
//!
//! Inputs are [`Usage`] (what a call consumed) and [`RatingInput`] (everything pricing
//! looks at besides the model). The model is resolved once to a [`ModelRef`], so rating a
//! call is a bounds-checked index and integer arithmetic: no hashing, no allocation.

use serde::{Deserialize, Serialize};

#[cfg(doc)]
use crate::credits::Credits;
use crate::tier::Initiator;

mod price_book;

pub use price_book::{
    Charge, ModelPrice, ORDINARY_MAX_CALLS, ORDINARY_MAX_OUTCOMES, ORDINARY_MAX_TOKENS, PER_MILLE,
    PriceBook, PriceBookError, PriceBookSpec, Pricing, action_count,
};

/// Tokens a call consumed (or, for a reservation, may consume).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
}

impl Usage {
    /// Usage of `input_tokens` in and `output_tokens` out.
    pub const fn new(input_tokens: u64, output_tokens: u64) -> Usage {
        Usage {
            input_tokens,
            output_tokens,
        }
    }

    /// Input plus output tokens, or `None` on overflow.
    pub const fn total_tokens(self) -> Option<u64> {
        self.input_tokens.checked_add(self.output_tokens)
    }
}

/// What rating looks at for one call, besides the model (see [`ModelRef`]).
///
/// `Copy` and allocation-free so the client can build one per call on the hot path.
/// Construct with [`RatingInput::new`] and the `with_*` methods, so fields added later
/// keep your code compiling.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RatingInput {
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
    /// Who started the call; per-request pricing may make agent-initiated calls free.
    pub initiator: Initiator,
    /// Outcomes (e.g. resolved tickets) this event reports, for per-outcome pricing.
    /// Usually 0 for an LLM call and reported as its own event when the outcome happens.
    pub outcomes: u64,
}

impl RatingInput {
    /// A human-initiated call with this usage and no outcomes.
    pub const fn new(usage: Usage) -> RatingInput {
        RatingInput {
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            initiator: Initiator::Human,
            outcomes: 0,
        }
    }

    /// Same input, started by `initiator`.
    pub const fn with_initiator(mut self, initiator: Initiator) -> RatingInput {
        self.initiator = initiator;
        self
    }

    /// Same input, reporting `outcomes` outcomes.
    pub const fn with_outcomes(mut self, outcomes: u64) -> RatingInput {
        self.outcomes = outcomes;
        self
    }

    /// The token part as [`Usage`].
    pub const fn usage(&self) -> Usage {
        Usage::new(self.input_tokens, self.output_tokens)
    }
}

impl From<Usage> for RatingInput {
    fn from(usage: Usage) -> RatingInput {
        RatingInput::new(usage)
    }
}

/// A model resolved in one version of a price book: an index plus the book's version, so
/// a handle from an older book is refused ([`RatingError::StaleModelRef`]) instead of
/// silently pricing another model. Obtain with [`PriceBook::model`]; cache it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ModelRef {
    pub(crate) index: u32,
    pub(crate) book_version: u64,
}

impl ModelRef {
    /// Position of the model in its price book.
    pub const fn index(self) -> u32 {
        self.index
    }

    /// Version of the price book this handle belongs to.
    pub const fn book_version(self) -> u64 {
        self.book_version
    }
}

/// Why a call could not be rated. Rating never panics and never wraps.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RatingError {
    /// The charge does not fit in `u64` micro-credits (absurd token counts or prices).
    #[error("charge overflows u64 micro-credits: check token counts and prices")]
    Overflow,
    /// The model handle came from another version of the price book.
    #[error(
        "model handle is from price book version {handle_version}, current is {book_version}: resolve the model again"
    )]
    StaleModelRef {
        /// Version the handle was resolved in.
        handle_version: u64,
        /// Version of the book asked to rate.
        book_version: u64,
    },
    /// The model handle's index is not in this price book.
    #[error("model handle index {0} is not in this price book: resolve the model again")]
    BadModelRef(u32),
    /// The model name is not in the price book.
    #[error("model {0:?} is not in the price book: add a price for it or fix the name")]
    UnknownModel(String),
}

#[cfg(test)]
mod tests;
