//! The sidecar's names for `tollgate_proto::convert`, the one wire/core conversion layer
//! (shared with the authority; the rules for unspecified values are in its crate docs).

use tollgate_core::Tier;

pub use tollgate_proto::convert::{
    ConvertError, initiator_to_wire, price_book_spec as price_book, tier_to_wire,
};

/// Core tier of a wire tier that selects one (a tier limit, a tier floor): `None` for
/// unspecified or unknown values.
pub fn tier_from_wire(t: i32) -> Option<Tier> {
    tollgate_proto::convert::tier(t).ok()
}

#[cfg(test)]
mod tests {
    use tollgate_proto::v1;

    use super::*;

    #[test]
    fn pushed_price_books_convert_and_bad_entries_are_refused() {
        let mut b = v1::PriceBook {
            tenant: "acme".into(),
            version: 3,
            models: vec![v1::ModelPrice {
                model: "gpt".into(),
                pricing: Some(v1::model_price::Pricing::Tokens(v1::TokenPrice {
                    input_per_mtok_micro: 2_500_000,
                    output_per_mtok_micro: 10_000_000,
                })),
                max_output_tokens: 0,
            }],
            ..Default::default()
        };
        assert_eq!(price_book(&b).unwrap().version, 3);
        b.models[0].pricing = None;
        assert!(matches!(
            price_book(&b),
            Err(ConvertError::NoPricing { index: 0, .. })
        ));
    }

    #[test]
    fn tiers_round_trip_and_unspecified_selects_none() {
        for t in Tier::ALL {
            assert_eq!(tier_from_wire(tier_to_wire(t) as i32), Some(t));
        }
        assert_eq!(tier_from_wire(0), None);
        assert_eq!(tier_from_wire(99), None);
    }
}
