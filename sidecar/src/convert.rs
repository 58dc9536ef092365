//! Conversions between the wire types (`tollgate-proto`) and the core types
//! (`tollgate-core`) the region speaks.

use std::num::NonZeroU64;

use tollgate_core::{Credits, Initiator, ModelPrice, PriceBookSpec, Pricing, Tier};
use tollgate_proto::v1;

/// Why a pushed value cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// A model entry has no pricing.
    #[error("price book version {version}: model {model:?} has no pricing")]
    NoPricing {
        /// Book version.
        version: u64,
        /// Model name.
        model: String,
    },
    /// An action price covering zero tokens.
    #[error("price book version {version}: model {model:?} has tokens_per_action = 0")]
    ZeroActionTokens {
        /// Book version.
        version: u64,
        /// Model name.
        model: String,
    },
}

/// The core price book spec of a pushed price book.
pub fn price_book(b: &v1::PriceBook) -> Result<PriceBookSpec, ConvertError> {
    let mut models = Vec::with_capacity(b.models.len());
    for m in &b.models {
        let pricing = match &m.pricing {
            Some(v1::model_price::Pricing::Tokens(t)) => Pricing::PerToken {
                input_per_million: Credits(t.input_per_mtok_micro),
                output_per_million: Credits(t.output_per_mtok_micro),
            },
            Some(v1::model_price::Pricing::Actions(a)) => Pricing::PerAction {
                tokens_per_action: NonZeroU64::new(a.tokens_per_action).ok_or_else(|| {
                    ConvertError::ZeroActionTokens {
                        version: b.version,
                        model: m.model.clone(),
                    }
                })?,
                price_per_action: Credits(a.per_action_micro),
            },
            Some(v1::model_price::Pricing::Requests(r)) => Pricing::PerRequest {
                multiplier_per_mille: r.multiplier_permille,
                agent_initiated_free: r.agent_initiated_free,
            },
            Some(v1::model_price::Pricing::Outcome(o)) => Pricing::PerOutcome {
                price_per_outcome: Credits(o.per_outcome_micro),
            },
            None => {
                return Err(ConvertError::NoPricing {
                    version: b.version,
                    model: m.model.clone(),
                });
            }
        };
        models.push(ModelPrice {
            name: m.model.clone(),
            pricing,
            max_output_tokens: (m.max_output_tokens > 0).then_some(m.max_output_tokens),
        });
    }
    Ok(PriceBookSpec {
        version: b.version,
        request_price: Credits(b.request_price_micro),
        default_max_output_tokens: b.default_max_output_tokens,
        models,
    })
}

/// Wire tier of a core tier.
pub fn tier_to_wire(t: Tier) -> v1::Tier {
    match t {
        Tier::Interactive => v1::Tier::Interactive,
        Tier::Scheduler => v1::Tier::Scheduler,
        Tier::Background => v1::Tier::Background,
    }
}

/// Core tier of a wire tier (`None` for unspecified or unknown values).
pub fn tier_from_wire(t: i32) -> Option<Tier> {
    match v1::Tier::try_from(t).ok()? {
        v1::Tier::Interactive => Some(Tier::Interactive),
        v1::Tier::Scheduler => Some(Tier::Scheduler),
        v1::Tier::Background => Some(Tier::Background),
        v1::Tier::Unspecified => None,
    }
}

/// Wire initiator of a core initiator.
pub fn initiator_to_wire(i: Initiator) -> v1::Initiator {
    match i {
        Initiator::Human => v1::Initiator::Human,
        Initiator::Agent => v1::Initiator::Agent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn price_book_converts_every_kind_and_rejects_bad_entries() {
        let mut b = v1::PriceBook {
            tenant: "acme".into(),
            version: 3,
            request_price_micro: 40_000,
            default_max_output_tokens: 1_000,
            models: vec![
                v1::ModelPrice {
                    model: "gpt".into(),
                    pricing: Some(v1::model_price::Pricing::Tokens(v1::TokenPrice {
                        input_per_mtok_micro: 2_500_000,
                        output_per_mtok_micro: 10_000_000,
                    })),
                    max_output_tokens: 0,
                },
                v1::ModelPrice {
                    model: "act".into(),
                    pricing: Some(v1::model_price::Pricing::Actions(v1::ActionPrice {
                        tokens_per_action: 10_000,
                        per_action_micro: 20_000_000,
                    })),
                    max_output_tokens: 500,
                },
            ],
            ..Default::default()
        };
        let spec = price_book(&b).unwrap();
        assert_eq!(spec.version, 3);
        assert_eq!(spec.models.len(), 2);
        assert_eq!(spec.models[1].max_output_tokens, Some(500));
        let book = tollgate_core::PriceBook::new(spec).unwrap();
        let r = book
            .rate_by_name(
                "act",
                &tollgate_core::RatingInput::new(tollgate_core::Usage::new(20_001, 0)),
            )
            .unwrap();
        assert_eq!(r, Credits(60_000_000));
        b.models[0].pricing = None;
        assert!(matches!(
            price_book(&b),
            Err(ConvertError::NoPricing { .. })
        ));
    }

    #[test]
    fn tiers_round_trip() {
        for t in Tier::ALL {
            assert_eq!(tier_from_wire(tier_to_wire(t) as i32), Some(t));
        }
        assert_eq!(tier_from_wire(0), None);
        assert_eq!(tier_from_wire(99), None);
    }
}
