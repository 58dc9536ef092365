//! What both price-book targets check once a text parsed: the spec survives a round trip
//! through each format, and a book built from it rates without panicking.

use tollgate_core::Initiator;
use tollgate_core::rating::{PriceBook, PriceBookSpec, RatingInput};

/// Parse -> serialize -> parse gives the same spec, in JSON and (when every integer fits
/// TOML's i64) in TOML; then the validated book is exercised.
pub fn check_spec(spec: &PriceBookSpec) {
    let json = serde_json::to_string(spec).expect("a parsed spec serializes to JSON");
    let back: PriceBookSpec = serde_json::from_str(&json).expect("our own JSON parses");
    assert_eq!(&back, spec, "JSON round trip changed the spec: {json}");

    match toml::to_string(spec) {
        Ok(text) => {
            let back: PriceBookSpec = toml::from_str(&text).expect("our own TOML parses");
            assert_eq!(&back, spec, "TOML round trip changed the spec: {text}");
        }
        // TOML integers are i64: a JSON book may hold larger u64 prices.
        Err(e) => assert!(fits_toml_not(spec), "TOML refused a spec it can hold: {e}"),
    }
    check_book(spec);
}

/// True when some integer is beyond i64, so TOML cannot represent the spec.
fn fits_toml_not(spec: &PriceBookSpec) -> bool {
    let json = serde_json::to_value(spec).expect("to value");
    fn big(v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::Number(n) => n.as_i64().is_none(),
            serde_json::Value::Array(a) => a.iter().any(big),
            serde_json::Value::Object(o) => o.values().any(big),
            _ => false,
        }
    }
    big(&json)
}

fn check_book(spec: &PriceBookSpec) {
    let built = PriceBook::new(spec.clone());
    // The serde path (`try_from = "PriceBookSpec"`) and the constructor agree.
    let json = serde_json::to_string(spec).expect("to JSON");
    let via_serde = serde_json::from_str::<PriceBook>(&json);
    assert_eq!(
        built.is_ok(),
        via_serde.is_ok(),
        "PriceBook::new and serde disagree"
    );
    let Ok(book) = built else { return };
    let inputs = [
        (0, 0, 0),
        (1, 1, 1),
        (1_000, 500, 0),
        (u64::MAX, 0, 0),
        (0, u64::MAX, u64::MAX),
        (u64::MAX, u64::MAX, u64::MAX),
    ];
    for m in book.models() {
        let model = book.model(&m.name).expect("every listed model resolves");
        for (input_tokens, output_tokens, outcomes) in inputs {
            for initiator in [Initiator::Human, Initiator::Agent] {
                let input = RatingInput {
                    input_tokens,
                    output_tokens,
                    initiator,
                    outcomes,
                };
                let rated = book.rate(&model, &input);
                if let Ok(charge) = book.rate_detailed(&model, &input) {
                    assert_eq!(
                        Ok(charge.credits),
                        rated,
                        "rate_detailed disagrees with rate"
                    );
                }
                let _ = book.rate_max(&model, input_tokens, None, initiator);
                let _ = book.rate_max(&model, input_tokens, Some(output_tokens), initiator);
            }
        }
    }
}
