//! Conversions between the wire types (`tollgate_proto::v1`) and the core types, with the
//! validation that turns malformed requests into `INVALID_ARGUMENT` messages naming the
//! field and what is wrong with it.

use std::num::NonZeroU64;

use tollgate_core::{Credits, Horizon, Initiator, Tier};
use tollgate_core::{ModelPrice as CoreModelPrice, PriceBookSpec, Pricing};
use tollgate_proto::v1;
use tonic::Status;

/// `INVALID_ARGUMENT` naming `field`.
pub fn invalid(field: &str, what: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {what}"))
}

/// Longest id (tenant, sidecar, agent, model, feature) accepted, bytes.
pub const MAX_ID_LEN: usize = 128;

/// Validates a tenant id (non-empty, `[A-Za-z0-9._:-]`, at most 128 bytes).
pub fn tenant_id(field: &str, s: &str) -> Result<String, Status> {
    if s.is_empty() {
        return Err(invalid(field, "tenant is empty: name the tenant"));
    }
    if s.len() > MAX_ID_LEN
        || !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'))
    {
        return Err(invalid(
            field,
            format!(
                "tenant id {s:?} is invalid: use 1 to {MAX_ID_LEN} characters of A-Z a-z 0-9 . _ - :"
            ),
        ));
    }
    Ok(s.to_string())
}

/// Validates a free-text id (non-empty, at most 128 bytes, no control characters).
pub fn plain_id(field: &str, s: &str) -> Result<String, Status> {
    if s.is_empty() {
        return Err(invalid(field, "is empty"));
    }
    if s.len() > MAX_ID_LEN || s.chars().any(char::is_control) {
        return Err(invalid(
            field,
            format!("must be at most {MAX_ID_LEN} bytes without control characters"),
        ));
    }
    Ok(s.to_string())
}

/// Wire tier to core (unspecified = interactive).
pub fn tier(t: i32) -> Result<Tier, String> {
    match v1::Tier::try_from(t) {
        Ok(v1::Tier::Unspecified | v1::Tier::Interactive) => Ok(Tier::Interactive),
        Ok(v1::Tier::Scheduler) => Ok(Tier::Scheduler),
        Ok(v1::Tier::Background) => Ok(Tier::Background),
        Err(_) => Err(format!("unknown tier {t}")),
    }
}

/// Wire initiator to core (unspecified = human).
pub fn initiator(i: i32) -> Result<Initiator, String> {
    match v1::Initiator::try_from(i) {
        Ok(v1::Initiator::Unspecified | v1::Initiator::Human) => Ok(Initiator::Human),
        Ok(v1::Initiator::Agent) => Ok(Initiator::Agent),
        Err(_) => Err(format!("unknown initiator {i}")),
    }
}

/// Window of a quota (never WINDOW_NONE).
pub fn horizon(w: i32) -> Option<Horizon> {
    match v1::Window::try_from(w) {
        Ok(v1::Window::Minute) => Some(Horizon::Minute),
        Ok(v1::Window::Hour) => Some(Horizon::Hour),
        Ok(v1::Window::Month) => Some(Horizon::Month),
        _ => None,
    }
}

/// Wire price book to the core spec (version from the wire; the caller assigns it).
pub fn price_book_spec(pb: &v1::PriceBook) -> Result<PriceBookSpec, Status> {
    let mut models = Vec::with_capacity(pb.models.len());
    for (i, m) in pb.models.iter().enumerate() {
        let field = format!("price_book.models[{i}]");
        if m.model.is_empty() {
            return Err(invalid(&field, "model name is empty"));
        }
        let pricing = match &m.pricing {
            None => {
                return Err(invalid(
                    &field,
                    format!(
                        "model {:?} has no pricing: set tokens, actions, requests or outcome",
                        m.model
                    ),
                ));
            }
            Some(v1::model_price::Pricing::Tokens(t)) => Pricing::PerToken {
                input_per_million: Credits(t.input_per_mtok_micro),
                output_per_million: Credits(t.output_per_mtok_micro),
            },
            Some(v1::model_price::Pricing::Actions(a)) => Pricing::PerAction {
                tokens_per_action: NonZeroU64::new(a.tokens_per_action).ok_or_else(|| {
                    invalid(&field, "actions.tokens_per_action must be at least 1")
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
        };
        models.push(CoreModelPrice {
            name: m.model.clone(),
            pricing,
            max_output_tokens: (m.max_output_tokens > 0).then_some(m.max_output_tokens),
        });
    }
    let spec = PriceBookSpec {
        version: pb.version,
        request_price: Credits(pb.request_price_micro),
        default_max_output_tokens: pb.default_max_output_tokens,
        models,
    };
    // Validate now so the admin hears what is wrong.
    tollgate_core::PriceBook::new(spec.clone()).map_err(|e| invalid("price_book", e))?;
    Ok(spec)
}

/// Core spec to the wire.
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
                pricing: Some(match &m.pricing {
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
                }),
            })
            .collect(),
        effective_unix_ms,
        request_price_micro: spec.request_price.0,
        default_max_output_tokens: spec.default_max_output_tokens,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn price_book_round_trips_and_validates() {
        let pb = v1::PriceBook {
            tenant: "acme".into(),
            version: 3,
            models: vec![
                v1::ModelPrice {
                    model: "m1".into(),
                    pricing: Some(v1::model_price::Pricing::Actions(v1::ActionPrice {
                        tokens_per_action: 10_000,
                        per_action_micro: 20_000_000,
                    })),
                    max_output_tokens: 0,
                },
                v1::ModelPrice {
                    model: "m2".into(),
                    pricing: Some(v1::model_price::Pricing::Tokens(v1::TokenPrice {
                        input_per_mtok_micro: 3,
                        output_per_mtok_micro: 15,
                    })),
                    max_output_tokens: 4096,
                },
            ],
            effective_unix_ms: 9,
            request_price_micro: 40_000,
            default_max_output_tokens: 1024,
        };
        let spec = price_book_spec(&pb).unwrap();
        assert_eq!(price_book_to_wire("acme", &spec, 9), pb);
        let mut bad = pb.clone();
        bad.models[0].pricing = None;
        let e = price_book_spec(&bad).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("models[0]"), "{}", e.message());
        let mut dup = pb;
        dup.models[1].model = "m1".into();
        assert!(
            price_book_spec(&dup)
                .unwrap_err()
                .message()
                .contains("twice")
        );
    }

    #[test]
    fn ids_are_checked() {
        assert!(tenant_id("tenant", "acme-1").is_ok());
        let e = tenant_id("tenant", "").unwrap_err();
        assert!(e.message().starts_with("tenant: "), "{}", e.message());
        assert!(tenant_id("tenant", "a b").is_err());
        assert!(plain_id("sidecar_id", &"x".repeat(200)).is_err());
    }
}
