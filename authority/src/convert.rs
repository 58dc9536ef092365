//! The authority's side of the wire: id validation, and `tollgate_proto::convert` (the
//! one wire/core conversion layer) with its errors turned into `INVALID_ARGUMENT` messages
//! naming the field and what is wrong with it.

use tollgate_core::{Horizon, Initiator, PriceBookSpec, Tier};
use tollgate_proto::{convert, v1};
use tonic::Status;

pub use tollgate_proto::convert::price_book_to_wire;

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

/// A call's wire tier to core (unspecified = interactive: see `tollgate_proto::convert`).
pub fn tier(t: i32) -> Result<Tier, String> {
    convert::call_tier(t).map_err(|e| e.to_string())
}

/// A call's wire initiator to core (unspecified = human).
pub fn initiator(i: i32) -> Result<Initiator, String> {
    convert::call_initiator(i).map_err(|e| e.to_string())
}

/// Window of a quota (`None` for WINDOW_NONE and unknown values).
pub fn horizon(w: i32) -> Option<Horizon> {
    convert::window(w).ok().flatten()
}

/// Wire price book to the core spec (version from the wire; the caller assigns it), or
/// `INVALID_ARGUMENT` naming the entry.
pub fn price_book_spec(pb: &v1::PriceBook) -> Result<PriceBookSpec, Status> {
    convert::price_book_spec(pb).map_err(|e| match e {
        // These name their entry (`models[i]: ...`): the field is `price_book.models[i]`.
        convert::ConvertError::EmptyModelName { .. }
        | convert::ConvertError::NoPricing { .. }
        | convert::ConvertError::ZeroActionTokens { .. } => {
            Status::invalid_argument(format!("price_book.{e}"))
        }
        e => invalid("price_book", e),
    })
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
        assert!(
            e.message().starts_with("price_book.models[0]: "),
            "{}",
            e.message()
        );
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
    fn call_tiers_and_initiators_default_and_unknown_values_are_named() {
        assert_eq!(tier(0), Ok(Tier::Interactive));
        assert_eq!(tier(v1::Tier::Background as i32), Ok(Tier::Background));
        assert_eq!(tier(9), Err("unknown tier 9".to_string()));
        assert_eq!(initiator(0), Ok(Initiator::Human));
        assert_eq!(initiator(9), Err("unknown initiator 9".to_string()));
        assert_eq!(horizon(v1::Window::Hour as i32), Some(Horizon::Hour));
        assert_eq!(horizon(v1::Window::None as i32), None);
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
