//! The one conversion layer between the wire types ([`crate::v1`]) and `tollgate-core`'s:
//! price books, tiers, initiators, windows and limit keys. The authority and the sidecar
//! both convert here, so they cannot disagree on what a wire value means.
//!
//! Wire enums are `i32` fields: a value this version does not know is
//! [`ConvertError::Unknown`]. The rules for the zero (`*_UNSPECIFIED`) values are in the
//! crate docs ("Wire and core types").

use std::num::NonZeroU64;

use tollgate_core::{
    Credits, Horizon, Initiator, LimitKind, ModelPrice, PriceBook, PriceBookError, PriceBookSpec,
    Pricing, Tier,
};

use crate::v1;

/// Why a wire value has no core equivalent. The message names the value or the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConvertError {
    /// An enum value this version does not define.
    #[error("unknown {what} {value}")]
    Unknown {
        /// The enum (`tier`, `initiator`, `window`, `scope`).
        what: &'static str,
        /// The wire value.
        value: i32,
    },
    /// `TIER_UNSPECIFIED` where a tier must be named (a tier limit, a tier floor).
    #[error("no tier given: set interactive, scheduler or background")]
    UnspecifiedTier,
    /// A core horizon the wire has no window for (day, year, total).
    #[error("horizon {0:?} has no wire window (minute, hour or month)")]
    NoWireWindow(Horizon),
    /// A limit key whose fields do not fit its scope.
    #[error("{0}")]
    LimitShape(&'static str),
    /// A price book entry without a model name.
    #[error("models[{index}]: model name is empty")]
    EmptyModelName {
        /// Position in `models`.
        index: usize,
    },
    /// A price book entry without pricing.
    #[error(
        "models[{index}]: model {model:?} has no pricing: set tokens, actions, requests or outcome"
    )]
    NoPricing {
        /// Position in `models`.
        index: usize,
        /// Model name.
        model: String,
    },
    /// An action price covering zero tokens.
    #[error("models[{index}]: model {model:?}: actions.tokens_per_action must be at least 1")]
    ZeroActionTokens {
        /// Position in `models`.
        index: usize,
        /// Model name.
        model: String,
    },
    /// The book as a whole is invalid (a name twice, too many models).
    #[error(transparent)]
    PriceBook(#[from] PriceBookError),
}

/// Wire tier of a core tier.
pub fn tier_to_wire(t: Tier) -> v1::Tier {
    match t {
        Tier::Interactive => v1::Tier::Interactive,
        Tier::Scheduler => v1::Tier::Scheduler,
        Tier::Background => v1::Tier::Background,
    }
}

/// The tier a limit key or a tier floor names: `TIER_UNSPECIFIED` names none and is
/// [`ConvertError::UnspecifiedTier`].
pub fn tier(t: i32) -> Result<Tier, ConvertError> {
    match v1::Tier::try_from(t) {
        Ok(v1::Tier::Interactive) => Ok(Tier::Interactive),
        Ok(v1::Tier::Scheduler) => Ok(Tier::Scheduler),
        Ok(v1::Tier::Background) => Ok(Tier::Background),
        Ok(v1::Tier::Unspecified) => Err(ConvertError::UnspecifiedTier),
        Err(_) => Err(ConvertError::Unknown {
            what: "tier",
            value: t,
        }),
    }
}

/// The tier of a call (a usage record): `TIER_UNSPECIFIED` is interactive.
pub fn call_tier(t: i32) -> Result<Tier, ConvertError> {
    match tier(t) {
        Err(ConvertError::UnspecifiedTier) => Ok(Tier::Interactive),
        other => other,
    }
}

/// Wire initiator of a core initiator.
pub fn initiator_to_wire(i: Initiator) -> v1::Initiator {
    match i {
        Initiator::Human => v1::Initiator::Human,
        Initiator::Agent => v1::Initiator::Agent,
    }
}

/// Who started a call: `INITIATOR_UNSPECIFIED` is a human.
pub fn call_initiator(i: i32) -> Result<Initiator, ConvertError> {
    match v1::Initiator::try_from(i) {
        Ok(v1::Initiator::Unspecified | v1::Initiator::Human) => Ok(Initiator::Human),
        Ok(v1::Initiator::Agent) => Ok(Initiator::Agent),
        Err(_) => Err(ConvertError::Unknown {
            what: "initiator",
            value: i,
        }),
    }
}

/// The horizon of a wire window; `None` for `WINDOW_NONE` (the wallet, no window).
pub fn window(w: i32) -> Result<Option<Horizon>, ConvertError> {
    match v1::Window::try_from(w) {
        Ok(v1::Window::None) => Ok(None),
        Ok(v1::Window::Minute) => Ok(Some(Horizon::Minute)),
        Ok(v1::Window::Hour) => Ok(Some(Horizon::Hour)),
        Ok(v1::Window::Month) => Ok(Some(Horizon::Month)),
        Err(_) => Err(ConvertError::Unknown {
            what: "window",
            value: w,
        }),
    }
}

/// The wire window of a core horizon (minute, hour, month).
pub fn window_to_wire(h: Horizon) -> Result<v1::Window, ConvertError> {
    match h {
        Horizon::Minute => Ok(v1::Window::Minute),
        Horizon::Hour => Ok(v1::Window::Hour),
        Horizon::Month => Ok(v1::Window::Month),
        other => Err(ConvertError::NoWireWindow(other)),
    }
}

/// The core limit kind of a limit key. Each scope names exactly what it needs: a tenant
/// limit no agent instance and no tier; an agent-instance limit its instance and no tier;
/// a tier limit its tier and no instance; only the tenant's wallet has no window.
pub fn limit_kind(key: &v1::LimitKey) -> Result<LimitKind, ConvertError> {
    let scope = v1::Scope::try_from(key.scope).map_err(|_| ConvertError::Unknown {
        what: "scope",
        value: key.scope,
    })?;
    let horizon = window(key.window)?;
    let tier_set = match v1::Tier::try_from(key.tier) {
        Ok(t) => t != v1::Tier::Unspecified,
        Err(_) => {
            return Err(ConvertError::Unknown {
                what: "tier",
                value: key.tier,
            });
        }
    };
    let has_agent = !key.agent.is_empty();
    let has_task = !key.task.is_empty();
    let windowed = |h: Option<Horizon>| {
        h.ok_or(ConvertError::LimitShape(
            "only the tenant's wallet has no window",
        ))
    };
    match scope {
        v1::Scope::Tenant if has_agent || tier_set || has_task => Err(ConvertError::LimitShape(
            "a tenant limit names no agent, tier or task",
        )),
        v1::Scope::Tenant => Ok(horizon.map_or(LimitKind::TenantWallet, LimitKind::TenantWindow)),
        v1::Scope::Agent if !has_agent || tier_set || has_task => Err(ConvertError::LimitShape(
            "an agent limit names its agent and no tier or task",
        )),
        v1::Scope::Agent => Ok(LimitKind::Agent(windowed(horizon)?)),
        v1::Scope::Tier if !tier_set || has_agent || has_task => Err(ConvertError::LimitShape(
            "a tier limit names its tier and no agent or task",
        )),
        v1::Scope::Tier => Ok(LimitKind::TierWindow(tier(key.tier)?, windowed(horizon)?)),
        v1::Scope::Task if !has_task || has_agent || tier_set || horizon.is_some() => {
            Err(ConvertError::LimitShape(
                "a task limit names its task, no agent or tier, and has no window",
            ))
        }
        v1::Scope::Task => Ok(LimitKind::Task),
    }
}

/// The core spec of a wire price book, validated as [`PriceBook::new`] does (version
/// from the wire: whoever installs the book assigns it).
pub fn price_book_spec(b: &v1::PriceBook) -> Result<PriceBookSpec, ConvertError> {
    let mut models = Vec::with_capacity(b.models.len());
    for (index, m) in b.models.iter().enumerate() {
        if m.model.is_empty() {
            return Err(ConvertError::EmptyModelName { index });
        }
        let pricing = match &m.pricing {
            Some(v1::model_price::Pricing::Tokens(t)) => Pricing::PerToken {
                input_per_million: Credits(t.input_per_mtok_micro),
                output_per_million: Credits(t.output_per_mtok_micro),
            },
            Some(v1::model_price::Pricing::Actions(a)) => Pricing::PerAction {
                tokens_per_action: NonZeroU64::new(a.tokens_per_action).ok_or_else(|| {
                    ConvertError::ZeroActionTokens {
                        index,
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
                    index,
                    model: m.model.clone(),
                });
            }
        };
        models.push(ModelPrice {
            name: m.model.clone(),
            pricing,
            // 0 on the wire: the book's default applies.
            max_output_tokens: (m.max_output_tokens > 0).then_some(m.max_output_tokens),
        });
    }
    let spec = PriceBookSpec {
        version: b.version,
        request_price: Credits(b.request_price_micro),
        default_max_output_tokens: b.default_max_output_tokens,
        models,
    };
    PriceBook::new(spec.clone())?;
    Ok(spec)
}

/// The wire form of a core spec, for `tenant`, in force from `effective_unix_ms`.
pub fn price_book_to_wire(
    tenant: &str,
    spec: &PriceBookSpec,
    effective_unix_ms: u64,
) -> v1::PriceBook {
    v1::PriceBook {
        tenant: tenant.to_string(),
        version: spec.version,
        models: spec
            .models
            .iter()
            .map(|m| v1::ModelPrice {
                model: m.name.clone(),
                max_output_tokens: m.max_output_tokens.unwrap_or(0),
                pricing: Some(pricing_to_wire(&m.pricing)),
            })
            .collect(),
        effective_unix_ms,
        request_price_micro: spec.request_price.0,
        default_max_output_tokens: spec.default_max_output_tokens,
    }
}

fn pricing_to_wire(p: &Pricing) -> v1::model_price::Pricing {
    match p {
        Pricing::PerToken {
            input_per_million,
            output_per_million,
        } => v1::model_price::Pricing::Tokens(v1::TokenPrice {
            input_per_mtok_micro: input_per_million.0,
            output_per_mtok_micro: output_per_million.0,
        }),
        Pricing::PerAction {
            tokens_per_action,
            price_per_action,
        } => v1::model_price::Pricing::Actions(v1::ActionPrice {
            tokens_per_action: tokens_per_action.get(),
            per_action_micro: price_per_action.0,
        }),
        Pricing::PerRequest {
            multiplier_per_mille,
            agent_initiated_free,
        } => v1::model_price::Pricing::Requests(v1::RequestPrice {
            multiplier_permille: *multiplier_per_mille,
            agent_initiated_free: *agent_initiated_free,
        }),
        Pricing::PerOutcome { price_per_outcome } => {
            v1::model_price::Pricing::Outcome(v1::OutcomePrice {
                per_outcome_micro: price_per_outcome.0,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn book() -> v1::PriceBook {
        v1::PriceBook {
            tenant: "acme".into(),
            version: 3,
            models: vec![
                v1::ModelPrice {
                    model: "act".into(),
                    pricing: Some(v1::model_price::Pricing::Actions(v1::ActionPrice {
                        tokens_per_action: 10_000,
                        per_action_micro: 20_000_000,
                    })),
                    max_output_tokens: 500,
                },
                v1::ModelPrice {
                    model: "gpt".into(),
                    pricing: Some(v1::model_price::Pricing::Tokens(v1::TokenPrice {
                        input_per_mtok_micro: 2_500_000,
                        output_per_mtok_micro: 10_000_000,
                    })),
                    max_output_tokens: 0,
                },
            ],
            effective_unix_ms: 9,
            request_price_micro: 40_000,
            default_max_output_tokens: 1_024,
        }
    }

    #[test]
    fn a_converted_price_book_rates_as_its_wire_form_says() {
        let spec = price_book_spec(&book()).unwrap();
        assert_eq!(spec.version, 3);
        assert_eq!(spec.models[0].max_output_tokens, Some(500));
        assert_eq!(spec.models[1].max_output_tokens, None);
        assert_eq!(price_book_to_wire("acme", &spec, 9), book());
        let rated = PriceBook::new(spec)
            .unwrap()
            .rate_by_name(
                "act",
                &tollgate_core::RatingInput::new(tollgate_core::Usage::new(20_001, 0)),
            )
            .unwrap();
        // 20,001 tokens are three actions of 10,000.
        assert_eq!(rated, Credits(60_000_000));
    }

    #[test]
    fn bad_price_book_entries_are_named() {
        let mut b = book();
        b.models[1].pricing = None;
        let e = price_book_spec(&b).unwrap_err();
        assert_eq!(
            e,
            ConvertError::NoPricing {
                index: 1,
                model: "gpt".into()
            }
        );
        assert!(e.to_string().starts_with("models[1]: "), "{e}");
        let mut b = book();
        b.models[0].pricing = Some(v1::model_price::Pricing::Actions(v1::ActionPrice {
            tokens_per_action: 0,
            per_action_micro: 1,
        }));
        assert!(matches!(
            price_book_spec(&b),
            Err(ConvertError::ZeroActionTokens { index: 0, .. })
        ));
        let mut b = book();
        b.models[1].model = String::new();
        assert_eq!(
            price_book_spec(&b),
            Err(ConvertError::EmptyModelName { index: 1 })
        );
        let mut b = book();
        b.models[1].model = "act".into();
        let e = price_book_spec(&b).unwrap_err();
        assert!(matches!(e, ConvertError::PriceBook(_)), "{e:?}");
        assert!(e.to_string().contains("twice"), "{e}");
    }

    #[test]
    fn an_unspecified_tier_is_interactive_for_a_call_and_no_tier_for_a_selector() {
        for t in Tier::ALL {
            assert_eq!(tier(tier_to_wire(t) as i32), Ok(t));
            assert_eq!(call_tier(tier_to_wire(t) as i32), Ok(t));
        }
        assert_eq!(call_tier(0), Ok(Tier::Interactive));
        assert_eq!(tier(0), Err(ConvertError::UnspecifiedTier));
        let unknown = ConvertError::Unknown {
            what: "tier",
            value: 99,
        };
        assert_eq!(tier(99), Err(unknown.clone()));
        assert_eq!(call_tier(99), Err(unknown));
        assert_eq!(call_tier(99).unwrap_err().to_string(), "unknown tier 99");
    }

    #[test]
    fn initiators_and_windows_convert_both_ways() {
        for i in [Initiator::Human, Initiator::Agent] {
            assert_eq!(call_initiator(initiator_to_wire(i) as i32), Ok(i));
        }
        assert_eq!(call_initiator(0), Ok(Initiator::Human));
        assert!(call_initiator(7).is_err());
        for h in [Horizon::Minute, Horizon::Hour, Horizon::Month] {
            assert_eq!(window(window_to_wire(h).unwrap() as i32), Ok(Some(h)));
        }
        assert_eq!(window(0), Ok(None));
        assert!(window(9).is_err());
        assert_eq!(
            window_to_wire(Horizon::Day),
            Err(ConvertError::NoWireWindow(Horizon::Day))
        );
    }

    #[test]
    fn limit_keys_convert_to_their_kinds_and_misfits_are_refused() {
        let wallet = v1::LimitKey::wallet("acme");
        assert_eq!(limit_kind(&wallet), Ok(LimitKind::TenantWallet));
        let minute = v1::LimitKey::tenant_window("acme", v1::Window::Minute);
        assert_eq!(
            limit_kind(&minute),
            Ok(LimitKind::TenantWindow(Horizon::Minute))
        );
        let tier_hour = v1::LimitKey {
            scope: v1::Scope::Tier as i32,
            tier: v1::Tier::Background as i32,
            ..v1::LimitKey::tenant_window("acme", v1::Window::Hour)
        };
        assert_eq!(
            limit_kind(&tier_hour),
            Ok(LimitKind::TierWindow(Tier::Background, Horizon::Hour))
        );
        let agent = v1::LimitKey {
            scope: v1::Scope::Agent as i32,
            agent: "bot-1".into(),
            ..v1::LimitKey::tenant_window("acme", v1::Window::Month)
        };
        assert_eq!(limit_kind(&agent), Ok(LimitKind::Agent(Horizon::Month)));
        let misfits = [
            v1::LimitKey {
                tier: v1::Tier::Scheduler as i32,
                ..wallet.clone()
            },
            v1::LimitKey {
                tier: v1::Tier::Unspecified as i32,
                ..tier_hour.clone()
            },
            v1::LimitKey {
                window: v1::Window::None as i32,
                ..tier_hour.clone()
            },
            v1::LimitKey {
                agent: String::new(),
                ..agent.clone()
            },
        ];
        for key in misfits {
            assert!(
                matches!(limit_kind(&key), Err(ConvertError::LimitShape(_))),
                "{key:?}"
            );
        }
        let unknown_scope = v1::LimitKey {
            scope: 42,
            ..wallet
        };
        assert_eq!(
            limit_kind(&unknown_scope),
            Err(ConvertError::Unknown {
                what: "scope",
                value: 42
            })
        );
    }

    fn pricing() -> impl Strategy<Value = Pricing> {
        prop_oneof![
            (any::<u64>(), any::<u64>()).prop_map(|(i, o)| Pricing::PerToken {
                input_per_million: Credits(i),
                output_per_million: Credits(o),
            }),
            (1..=u64::MAX, any::<u64>()).prop_map(|(t, p)| Pricing::PerAction {
                tokens_per_action: NonZeroU64::new(t).unwrap(),
                price_per_action: Credits(p),
            }),
            (any::<u32>(), any::<bool>()).prop_map(|(m, f)| Pricing::PerRequest {
                multiplier_per_mille: m,
                agent_initiated_free: f,
            }),
            any::<u64>().prop_map(|p| Pricing::PerOutcome {
                price_per_outcome: Credits(p),
            }),
        ]
    }

    proptest! {
        #[test]
        fn every_valid_spec_round_trips_through_the_wire(
            version in any::<u64>(),
            request_price in any::<u64>(),
            default_max in any::<u64>(),
            models in proptest::collection::vec((pricing(), proptest::option::of(1..=u64::MAX)), 0..6),
        ) {
            let spec = PriceBookSpec {
                version,
                request_price: Credits(request_price),
                default_max_output_tokens: default_max,
                models: models
                    .into_iter()
                    .enumerate()
                    .map(|(i, (pricing, max_output_tokens))| ModelPrice {
                        name: format!("m{i}"),
                        pricing,
                        max_output_tokens,
                    })
                    .collect(),
            };
            let wire = price_book_to_wire("acme", &spec, 1);
            prop_assert_eq!(price_book_spec(&wire), Ok(spec));
        }
    }
}
