use std::num::NonZeroU64;

use super::*;
use crate::credits::Credits;
use crate::money::{CreditPack, CurrencyCode, Money};

fn c(n: u64) -> Credits {
    Credits::from_credits(n).unwrap()
}

fn book() -> PriceBook {
    PriceBook::new(PriceBookSpec {
        version: 7,
        request_price: Credits(40_000),
        default_max_output_tokens: 4_096,
        models: vec![
            ModelPrice {
                name: "gpt-4o".into(),
                pricing: Pricing::PerToken {
                    input_per_million: "2.5".parse().unwrap(),
                    output_per_million: c(10),
                },
                max_output_tokens: Some(16_384),
            },
            ModelPrice {
                name: "action".into(),
                pricing: Pricing::PerAction {
                    tokens_per_action: NonZeroU64::new(10_000).unwrap(),
                    price_per_action: c(20),
                },
                max_output_tokens: None,
            },
            ModelPrice {
                name: "premium-10x".into(),
                pricing: Pricing::PerRequest {
                    multiplier_per_mille: 10_000,
                    agent_initiated_free: false,
                },
                max_output_tokens: None,
            },
            ModelPrice {
                name: "mini-0.33x".into(),
                pricing: Pricing::PerRequest {
                    multiplier_per_mille: 330,
                    agent_initiated_free: true,
                },
                max_output_tokens: None,
            },
        ],
    })
    .unwrap()
}

fn tokens(n: u64) -> RatingInput {
    RatingInput::new(Usage::new(n, 0))
}

#[test]
fn action_of_10000_tokens_at_20_credits() {
    let book = book();
    let m = book.model("action").unwrap();
    assert_eq!(book.rate(&m, &tokens(10_000)), Ok(c(20)));
    assert_eq!(book.rate(&m, &tokens(10_001)), Ok(c(40)));
    assert_eq!(book.rate(&m, &tokens(20_001)), Ok(c(60)));
    // Input and output tokens both count toward the action.
    let split = RatingInput::new(Usage::new(6_000, 4_001));
    assert_eq!(book.rate(&m, &split), Ok(c(40)));
    assert_eq!(book.rate_detailed(&m, &split).unwrap().actions, 2);
    assert_eq!(book.rate(&m, &tokens(0)), Ok(Credits::ZERO));
    assert_eq!(book.rate(&m, &tokens(1)), Ok(c(20)));
    // ... and with 100,000 credits for $500, one action is $0.10.
    let pack = CreditPack::new(
        c(100_000),
        Money::from_units(500).unwrap(),
        CurrencyCode::USD,
    )
    .unwrap();
    let one_action = book.rate(&m, &tokens(10_000)).unwrap();
    assert_eq!(pack.money_for(one_action).unwrap().to_cents_ceil(), 10);
}

#[test]
fn per_token_prices_input_and_output_separately_rounding_up() {
    let book = book();
    let m = book.model("gpt-4o").unwrap();
    // 1,200 in at 2.5/M = 3,000 micro; 800 out at 10/M = 8,000 micro.
    let call = RatingInput::new(Usage::new(1_200, 800));
    assert_eq!(book.rate(&m, &call), Ok(Credits(11_000)));
    // One input token costs 2.5 micro-credits: rounded up to 3.
    assert_eq!(book.rate(&m, &tokens(1)), Ok(Credits(3)));
    // Rounding is once per call, not per component: 1 in + 1 out = 12.5 -> 13.
    let both = RatingInput::new(Usage::new(1, 1));
    assert_eq!(book.rate(&m, &both), Ok(Credits(13)));
    assert_eq!(book.rate(&m, &tokens(0)), Ok(Credits::ZERO));
}

#[test]
fn per_request_uses_the_multiplier_and_may_free_agent_calls() {
    let book = book();
    let big = book.model("premium-10x").unwrap();
    let mini = book.model("mini-0.33x").unwrap();
    let human = tokens(123_456);
    let agent = human.with_initiator(Initiator::Agent);
    assert_eq!(book.rate(&big, &human), Ok(Credits(400_000)));
    // Not free for this model: agents pay too.
    assert_eq!(book.rate(&big, &agent), Ok(Credits(400_000)));
    // 40,000 * 0.33 = 13,200.
    assert_eq!(book.rate(&mini, &human), Ok(Credits(13_200)));
    assert_eq!(book.rate(&mini, &agent), Ok(Credits::ZERO));
    let d = book.rate_detailed(&mini, &agent).unwrap();
    assert_eq!(d.request_units_milli, 0);
    assert_eq!(
        book.rate_detailed(&mini, &human)
            .unwrap()
            .request_units_milli,
        330
    );
}

#[test]
fn rate_max_uses_call_then_model_then_book_maximum() {
    let book = book();
    let gpt = book.model("gpt-4o").unwrap();
    let action = book.model("action").unwrap();
    // Stated maximum: 1,200 in + 800 out.
    assert_eq!(
        book.rate_max(&gpt, 1_200, Some(800), Initiator::Human),
        Ok(Credits(11_000))
    );
    // Model default 16,384 out: 3,000 + 163,840.
    assert_eq!(
        book.rate_max(&gpt, 1_200, None, Initiator::Human),
        Ok(Credits(166_840))
    );
    assert_eq!(book.max_output_tokens(&gpt), Ok(16_384));
    // Book default 4,096 out: 6,000 + 4,096 = 10,096 tokens = 2 actions.
    assert_eq!(
        book.rate_max(&action, 6_000, None, Initiator::Agent),
        Ok(c(40))
    );
    assert_eq!(book.max_output_tokens(&action), Ok(4_096));
}

#[test]
fn model_handles_are_checked_against_the_book() {
    let book = book();
    assert_eq!(book.model("nope"), None);
    let m = book.model("premium-10x").unwrap();
    assert_eq!(book.models()[m.index() as usize].name, "premium-10x");
    assert_eq!(m.book_version(), 7);
    let mut spec = PriceBookSpec::from(book.clone());
    spec.version = 8;
    let newer = PriceBook::new(spec).unwrap();
    assert_eq!(
        newer.rate(&m, &tokens(1)),
        Err(RatingError::StaleModelRef {
            handle_version: 7,
            book_version: 8
        })
    );
    let bogus = ModelRef {
        index: 99,
        book_version: 7,
    };
    assert_eq!(
        book.rate(&bogus, &tokens(1)),
        Err(RatingError::BadModelRef(99))
    );
    assert_eq!(
        book.rate_by_name("nope", &tokens(1)),
        Err(RatingError::UnknownModel("nope".into()))
    );
    assert_eq!(book.rate_by_name("action", &tokens(1)), Ok(c(20)));
}

#[test]
fn invalid_books_are_rejected() {
    let mut spec = PriceBookSpec::from(book());
    spec.models.push(spec.models[0].clone());
    assert_eq!(
        PriceBook::new(spec.clone()),
        Err(PriceBookError::DuplicateModel("gpt-4o".into()))
    );
    spec.models.pop();
    spec.models[1].name.clear();
    assert_eq!(PriceBook::new(spec), Err(PriceBookError::EmptyModelName));
    // Zero tokens per action cannot even be deserialized.
    let json = r#"{"version":1,"default_max_output_tokens":1,"models":[
        {"name":"a","pricing":{"kind":"per_action","tokens_per_action":0,"price_per_action":1}}]}"#;
    assert!(serde_json::from_str::<PriceBook>(json).is_err());
    let dup = r#"{"version":1,"default_max_output_tokens":1,"models":[
        {"name":"a","pricing":{"kind":"per_outcome","price_per_outcome":1}},
        {"name":"a","pricing":{"kind":"per_outcome","price_per_outcome":2}}]}"#;
    let err = serde_json::from_str::<PriceBook>(dup).unwrap_err();
    assert!(err.to_string().contains("appears twice"), "{err}");
}

#[test]
fn unknown_fields_are_refused_by_name() {
    // A typo at each level: the book, a model, a pricing; JSON and TOML alike.
    let json = [
        (
            "defualt_max_output_tokens",
            r#"{"version":1,"defualt_max_output_tokens":1,"models":[]}"#,
        ),
        (
            "max_output_token",
            r#"{"version":1,"default_max_output_tokens":1,"models":[
            {"name":"a","max_output_token":5,"pricing":{"kind":"per_outcome","price_per_outcome":1}}]}"#,
        ),
        (
            "input_per_milion",
            r#"{"version":1,"default_max_output_tokens":1,"models":[{"name":"a","pricing":
            {"kind":"per_token","input_per_milion":1,"input_per_million":1,"output_per_million":2}}]}"#,
        ),
    ];
    for (field, text) in json {
        let e = serde_json::from_str::<PriceBookSpec>(text).unwrap_err();
        assert!(e.to_string().contains(field), "{field}: {e}");
        let e = serde_json::from_str::<PriceBook>(text).unwrap_err();
        assert!(e.to_string().contains(field), "{field}: {e}");
    }
    let toml_text = r#"
version = 3
default_max_output_tokens = 1000
[[models]]
name = "gpt-4o"
pricing = { kind = "per_request", multiplier_per_mille = 1000, agent_initiated_free = false, agent_initated_free = true }
"#;
    let e = toml::from_str::<PriceBookSpec>(toml_text).unwrap_err();
    assert!(e.to_string().contains("agent_initated_free"), "{e}");
    // Without the typo the same file parses.
    let fixed = toml_text.replace(", agent_initated_free = true", "");
    let spec: PriceBookSpec = toml::from_str(&fixed).unwrap();
    assert_eq!(spec.models[0].name, "gpt-4o");
}

#[test]
fn serde_round_trip_keeps_lookup_working() {
    let book = book();
    let json = serde_json::to_string(&book).unwrap();
    assert!(!json.contains("by_name"));
    let back: PriceBook = serde_json::from_str(&json).unwrap();
    assert_eq!(back, book);
    let m = back.model("mini-0.33x").unwrap();
    assert_eq!(back.rate(&m, &tokens(5)), Ok(Credits(13_200)));
}

#[test]
fn overflow_is_an_error_not_a_panic() {
    let max = PriceBook::new(PriceBookSpec {
        version: 1,
        request_price: Credits::MAX,
        default_max_output_tokens: u64::MAX,
        models: vec![
            ModelPrice {
                name: "tok".into(),
                pricing: Pricing::PerToken {
                    input_per_million: Credits::MAX,
                    output_per_million: Credits::MAX,
                },
                max_output_tokens: None,
            },
            ModelPrice {
                name: "act".into(),
                pricing: Pricing::PerAction {
                    tokens_per_action: NonZeroU64::MIN,
                    price_per_action: Credits(2),
                },
                max_output_tokens: None,
            },
            ModelPrice {
                name: "req".into(),
                pricing: Pricing::PerRequest {
                    multiplier_per_mille: u32::MAX,
                    agent_initiated_free: true,
                },
                max_output_tokens: None,
            },
            ModelPrice {
                name: "out".into(),
                pricing: Pricing::PerOutcome {
                    price_per_outcome: Credits::MAX,
                },
                max_output_tokens: None,
            },
        ],
    })
    .unwrap();
    let huge = RatingInput::new(Usage::new(u64::MAX, u64::MAX)).with_outcomes(2);
    for name in ["tok", "act", "req", "out"] {
        let m = max.model(name).unwrap();
        assert_eq!(max.rate(&m, &huge), Err(RatingError::Overflow), "{name}");
    }
    let act = max.model("act").unwrap();
    assert_eq!(
        max.rate_max(&act, u64::MAX, None, Initiator::Human),
        Err(RatingError::Overflow)
    );
}

#[test]
fn a_record_of_n_calls_is_n_requests_and_at_least_one_action_per_call() {
    let book = book();
    let premium = book.model("premium-10x").unwrap();
    let one = book.rate_detailed(&premium, &tokens(10)).unwrap();
    // 40,000 micro at 10x: 0.4 credits a request; 25 calls are 25 requests.
    let many = book.rate_record(&premium, &tokens(10), 25).unwrap();
    assert_eq!(one.credits, Credits(400_000));
    assert_eq!(many.credits, Credits(10_000_000));
    assert_eq!(many.request_units_milli, 250_000);
    // 0 calls is one call.
    assert_eq!(book.rate_record(&premium, &tokens(10), 0).unwrap(), one);
    // Free agent-initiated calls stay free however many.
    let mini = book.model("mini-0.33x").unwrap();
    let agent = tokens(10).with_initiator(Initiator::Agent);
    assert_eq!(
        book.rate_record(&mini, &agent, 1_000).unwrap(),
        Charge::default()
    );
    // Per action: 3 calls of 12,000 tokens together are 4 actions by tokens, but 5 calls
    // of 2 tokens each are 5 actions (a call is at least one), and 5 calls of 0 tokens 0.
    let action = book.model("action").unwrap();
    assert_eq!(
        book.rate_record(&action, &tokens(36_000), 3)
            .unwrap()
            .actions,
        4
    );
    assert_eq!(
        book.rate_record(&action, &tokens(10), 5).unwrap().credits,
        c(100)
    );
    assert_eq!(
        book.rate_record(&action, &tokens(0), 5).unwrap().credits,
        c(0)
    );
    // Per token: the totals.
    let gpt = book.model("gpt-4o").unwrap();
    assert_eq!(
        book.rate_record(&gpt, &tokens(1_000_000), 7)
            .unwrap()
            .credits,
        "2.5".parse().unwrap()
    );
    // Calls so many that the request charge overflows: an error, not a wrap.
    assert_eq!(
        book.rate_record(&premium, &tokens(1), u64::MAX),
        Err(RatingError::Overflow)
    );
}

#[test]
fn dearest_rating_takes_the_most_any_model_would_charge() {
    let book = book();
    // 30,000 tokens: gpt-4o 0.075, action 60 credits, premium 0.4: the action model.
    let d = book.rate_dearest(&tokens(30_000), 1).unwrap().unwrap();
    assert_eq!(d.credits, c(60));
    assert_eq!(d.actions, 3);
    // 10 tokens: one action (20 credits) is still the dearest.
    assert_eq!(
        book.rate_dearest(&tokens(10), 1).unwrap().unwrap().credits,
        c(20)
    );
    let empty = PriceBook::new(PriceBookSpec::default()).unwrap();
    assert_eq!(empty.rate_dearest(&tokens(10), 1), Ok(None));
    assert_eq!(
        book.rate_dearest(&tokens(u64::MAX), 1),
        Err(RatingError::Overflow)
    );
}

#[test]
fn books_whose_prices_overflow_on_ordinary_usage_are_refused() {
    assert_eq!(book().check_ordinary_usage(), Ok(()));
    let with = |name: &str, pricing: Pricing, request_price: Credits| {
        PriceBook::new(PriceBookSpec {
            version: 1,
            request_price,
            default_max_output_tokens: 1,
            models: vec![ModelPrice {
                name: name.into(),
                pricing,
                max_output_tokens: None,
            }],
        })
        .unwrap()
    };
    // 20 million credits per million tokens: a billion tokens is 2e10 credits, fine...
    let ok = with(
        "dear",
        Pricing::PerToken {
            input_per_million: c(20_000_000),
            output_per_million: c(20_000_000),
        },
        Credits::ZERO,
    );
    assert_eq!(ok.check_ordinary_usage(), Ok(()));
    // ...but u64::MAX micro per million tokens overflows on a few million tokens.
    let absurd = with(
        "absurd",
        Pricing::PerToken {
            input_per_million: Credits::MAX,
            output_per_million: Credits::ZERO,
        },
        Credits::ZERO,
    );
    let e = absurd.check_ordinary_usage().unwrap_err();
    assert_eq!(e, PriceBookError::OverflowsOnOrdinaryUsage("absurd".into()));
    assert!(e.to_string().contains("\"absurd\""), "{e}");
    let actions = with(
        "act",
        Pricing::PerAction {
            tokens_per_action: NonZeroU64::new(1).unwrap(),
            price_per_action: c(100_000_000),
        },
        Credits::ZERO,
    );
    assert!(actions.check_ordinary_usage().is_err());
    let outcome = with(
        "resolution",
        Pricing::PerOutcome {
            price_per_outcome: Credits(u64::MAX / 1_000),
        },
        Credits::ZERO,
    );
    assert!(outcome.check_ordinary_usage().is_err());
    let requests = with(
        "premium",
        Pricing::PerRequest {
            multiplier_per_mille: 1_000,
            agent_initiated_free: false,
        },
        Credits(u64::MAX / 1_000),
    );
    assert!(requests.check_ordinary_usage().is_err());
}
