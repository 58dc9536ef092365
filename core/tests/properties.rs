//! Property tests for tollgate-core: exact parsing, rating monotonicity and rounding,
//! no panics on any input, calendar windows, money rounding, deduction conservation.

use std::num::NonZeroU64;

use proptest::prelude::*;
use tollgate_core::grant::{DeductionOrder, GrantBalance, GrantOrderKey, plan_deduction};
use tollgate_core::time::{CivilDate, month_start, next_month_start, next_year_start, year_start};
use tollgate_core::{
    CreditPack, Credits, CurrencyCode, Horizon, Initiator, MICROS_PER_CREDIT, ModelPrice, Money,
    PeriodUsage, Plan, PriceBook, PriceBookSpec, Pricing, RatingError, RatingInput, Usage,
};

fn credits() -> impl Strategy<Value = Credits> {
    prop_oneof![
        (0u64..10_000_000_000).prop_map(Credits),
        any::<u64>().prop_map(Credits),
    ]
}

fn pricing() -> impl Strategy<Value = Pricing> {
    prop_oneof![
        (credits(), credits()).prop_map(|(i, o)| Pricing::PerToken {
            input_per_million: i,
            output_per_million: o
        }),
        (any::<NonZeroU64>(), credits()).prop_map(|(n, p)| Pricing::PerAction {
            tokens_per_action: n,
            price_per_action: p
        }),
        (any::<u32>(), any::<bool>()).prop_map(|(m, f)| Pricing::PerRequest {
            multiplier_per_mille: m,
            agent_initiated_free: f
        }),
        credits().prop_map(|p| Pricing::PerOutcome {
            price_per_outcome: p
        }),
    ]
}

fn book_with(pricing: Pricing, request_price: Credits) -> PriceBook {
    PriceBook::new(PriceBookSpec {
        version: 1,
        request_price,
        default_max_output_tokens: 8_192,
        models: vec![ModelPrice {
            name: "m".into(),
            pricing,
            max_output_tokens: None,
        }],
    })
    .unwrap()
}

fn tokens() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..2_000_000, any::<u64>()]
}

fn input() -> impl Strategy<Value = RatingInput> {
    (
        tokens(),
        tokens(),
        any::<bool>(),
        prop_oneof![0u64..1_000, any::<u64>()],
    )
        .prop_map(|(i, o, agent, outcomes)| {
            RatingInput::new(Usage::new(i, o))
                .with_initiator(if agent {
                    Initiator::Agent
                } else {
                    Initiator::Human
                })
                .with_outcomes(outcomes)
        })
}

/// The exact charge in micro-credits * 1e6 (per-token) or micro-credits (others),
/// computed independently in u128 without rounding, or None if it cannot be represented.
fn reference_micros(p: &Pricing, request_price: Credits, x: &RatingInput) -> Option<u128> {
    match *p {
        Pricing::PerToken {
            input_per_million,
            output_per_million,
        } => {
            let exact = u128::from(x.input_tokens)
                .checked_mul(u128::from(input_per_million.micros()))?
                .checked_add(
                    u128::from(x.output_tokens)
                        .checked_mul(u128::from(output_per_million.micros()))?,
                )?;
            Some(exact.div_ceil(u128::from(MICROS_PER_CREDIT)))
        }
        Pricing::PerAction {
            tokens_per_action,
            price_per_action,
        } => {
            let t = u128::from(x.input_tokens) + u128::from(x.output_tokens);
            if t > u128::from(u64::MAX) {
                return None;
            }
            let actions = t.div_ceil(u128::from(tokens_per_action.get()));
            Some(actions * u128::from(price_per_action.micros()))
        }
        Pricing::PerRequest {
            multiplier_per_mille,
            agent_initiated_free,
        } => {
            if agent_initiated_free && x.initiator == Initiator::Agent {
                return Some(0);
            }
            Some(
                (u128::from(request_price.micros()) * u128::from(multiplier_per_mille))
                    .div_ceil(1_000),
            )
        }
        Pricing::PerOutcome { price_per_outcome } => {
            Some(u128::from(price_per_outcome.micros()) * u128::from(x.outcomes))
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn credits_display_parse_round_trip(micros in any::<u64>()) {
        let c = Credits(micros);
        let shown = c.to_string();
        let (_, frac) = shown.split_once('.').unwrap();
        prop_assert_eq!(frac.len(), 6);
        prop_assert_eq!(shown.parse::<Credits>(), Ok(c));
    }

    #[test]
    fn credits_parse_never_panics(s in "\\PC{0,30}") {
        let _ = s.parse::<Credits>();
    }

    #[test]
    fn credits_parse_short_forms_exactly(whole in 0u64..18_446_744_073_709, frac in 0u64..1_000_000, digits in 1usize..=6) {
        // "w.f" with `digits` decimals means w credits + f * 10^(6-digits) micro-credits.
        let f = frac % 10u64.pow(digits as u32);
        let s = format!("{whole}.{f:0digits$}");
        let expect = whole * MICROS_PER_CREDIT + f * 10u64.pow(6 - digits as u32);
        prop_assert_eq!(s.parse::<Credits>(), Ok(Credits(expect)));
    }

    #[test]
    fn rating_matches_reference_and_never_panics(p in pricing(), rp in credits(), x in input()) {
        let book = book_with(p.clone(), rp);
        let m = book.model("m").unwrap();
        let got = book.rate(&m, &x);
        match reference_micros(&p, rp, &x) {
            Some(r) if r <= u128::from(u64::MAX) => prop_assert_eq!(got, Ok(Credits(r as u64))),
            _ => prop_assert_eq!(got, Err(RatingError::Overflow)),
        }
        // Pricing::rate (outside a book) is the same arithmetic.
        prop_assert_eq!(p.rate(rp, &x), book.rate(&m, &x));
        // The detailed charge always agrees with the fast one.
        prop_assert_eq!(book.rate_detailed(&m, &x).map(|c| c.credits), book.rate(&m, &x));
    }

    #[test]
    fn per_token_rounds_up_by_less_than_one_micro(ip in credits(), op in credits(), i in 0u64..10_000_000, o in 0u64..10_000_000) {
        let book = book_with(Pricing::PerToken { input_per_million: ip, output_per_million: op }, Credits::ZERO);
        let m = book.model("m").unwrap();
        let exact = u128::from(i) * u128::from(ip.micros()) + u128::from(o) * u128::from(op.micros());
        if let Ok(cost) = book.rate(&m, &RatingInput::new(Usage::new(i, o))) {
            let scaled = u128::from(cost.micros()) * u128::from(MICROS_PER_CREDIT);
            prop_assert!(scaled >= exact);
            prop_assert!(scaled - exact < u128::from(MICROS_PER_CREDIT));
        }
    }

    #[test]
    fn rating_is_monotone_in_tokens(p in pricing(), rp in credits(), x in input(), di in tokens(), do_ in tokens()) {
        let book = book_with(p, rp);
        let m = book.model("m").unwrap();
        let more = RatingInput {
            input_tokens: x.input_tokens.saturating_add(di),
            output_tokens: x.output_tokens.saturating_add(do_),
            ..x
        };
        match (book.rate(&m, &x), book.rate(&m, &more)) {
            (Ok(a), Ok(b)) => prop_assert!(a <= b),
            // More tokens may overflow where fewer did not, never the reverse.
            (Ok(_), Err(_)) | (Err(_), Err(_)) => {}
            (Err(e), Ok(_)) => prop_assert!(false, "fewer tokens failed ({e}) but more succeeded"),
        }
    }

    #[test]
    fn action_count_is_ceil_tokens_over_n(n in 1u64..1_000_000, i in 0u64..100_000_000, o in 0u64..100_000_000) {
        let book = book_with(Pricing::PerAction {
            tokens_per_action: NonZeroU64::new(n).unwrap(),
            price_per_action: Credits(20_000_000),
        }, Credits::ZERO);
        let m = book.model("m").unwrap();
        let c = book.rate_detailed(&m, &RatingInput::new(Usage::new(i, o))).unwrap();
        let t = i + o;
        prop_assert!(c.actions * n >= t);
        prop_assert!(c.actions == 0 || (c.actions - 1) * n < t);
        prop_assert_eq!(c.credits, Credits(c.actions * 20_000_000));
    }

    #[test]
    fn reservation_covers_any_call_within_its_maximum(p in pricing(), rp in credits(), i in tokens(), max in prop::option::of(tokens()), frac in 0u64..=100, agent in any::<bool>()) {
        let book = book_with(p, rp);
        let m = book.model("m").unwrap();
        let who = if agent { Initiator::Agent } else { Initiator::Human };
        let cap = max.unwrap_or(book.max_output_tokens(&m).unwrap());
        let out = (u128::from(cap) * u128::from(frac) / 100) as u64;
        let actual = RatingInput::new(Usage::new(i, out)).with_initiator(who);
        if let (Ok(reserved), Ok(cost)) = (book.rate_max(&m, i, max, who), book.rate(&m, &actual)) {
            prop_assert!(cost <= reserved);
        }
    }

    #[test]
    fn calendar_windows_bracket_the_timestamp(ts in prop_oneof![0u64..8_000_000_000, any::<u64>()]) {
        let ms = month_start(ts);
        let d = CivilDate::from_unix(ms);
        prop_assert_eq!(d.day, 1);
        prop_assert!(ms <= ts);
        prop_assert_eq!(d.to_unix(), Some(ms));
        if let Some(next) = next_month_start(ts) {
            prop_assert!(ts < next);
            prop_assert_eq!(CivilDate::from_unix(next).day, 1);
            prop_assert!((28 * 86_400..=31 * 86_400).contains(&(next - ms)));
        }
        let ys = year_start(ts);
        prop_assert!(ys <= ms);
        prop_assert_eq!((CivilDate::from_unix(ys).month, CivilDate::from_unix(ys).day), (1, 1));
        if let Some(ny) = next_year_start(ts) {
            prop_assert!(ts < ny);
        }
        for h in Horizon::ALL {
            prop_assert!(h.window(ts).contains(ts));
        }
    }

    #[test]
    fn money_rounding_never_favours_the_customer(pc in 1u64..u64::MAX, pm in 1u64..u64::MAX, c in any::<u64>(), m in any::<u64>()) {
        let pack = CreditPack::new(Credits(pc), Money(pm), CurrencyCode::USD).unwrap();
        // credits -> money rounds up: money * pc >= credits * pm.
        if let Ok(money) = pack.money_for(Credits(c)) {
            prop_assert!(u128::from(money.micros()) * u128::from(pc) >= u128::from(c) * u128::from(pm));
        }
        // money -> credits rounds down: credits * pm <= money * pc.
        if let Ok(bought) = pack.credits_for(Money(m)) {
            prop_assert!(u128::from(bought.micros()) * u128::from(pm) <= u128::from(m) * u128::from(pc));
        }
    }

    #[test]
    fn deduction_conserves_the_amount(avail in prop::collection::vec((any::<u32>(), prop::option::of(any::<u64>()), any::<u64>(), 0u64..1_000_000), 0..12), amount in 0u64..5_000_000, order in 0usize..4) {
        let order = [DeductionOrder::PriorityExpiryAge, DeductionOrder::ExpiryPriorityAge, DeductionOrder::OldestFirst, DeductionOrder::PriorityAge][order];
        let grants: Vec<GrantBalance> = avail.iter().enumerate().map(|(id, &(priority, expires_at, created_at, a))| GrantBalance {
            key: GrantOrderKey { priority, expires_at, created_at, id: id as u64 },
            available: Credits(a),
        }).collect();
        let plan = plan_deduction(order, &grants, Credits(amount));
        let taken: u64 = plan.parts.iter().map(|p| p.1.micros()).sum();
        prop_assert_eq!(taken + plan.shortfall.micros(), amount);
        let total: u64 = grants.iter().map(|g| g.available.micros()).sum();
        prop_assert_eq!(plan.shortfall.micros(), amount.saturating_sub(total));
        for w in plan.parts.windows(2) {
            // In order, and every grant before the last one is drained.
            prop_assert!(order.compare(&grants[w[0].0].key, &grants[w[1].0].key).is_lt());
            prop_assert_eq!(w[0].1, grants[w[0].0].available);
        }
    }

    #[test]
    fn plan_bill_respects_floor_cap_and_split(metered in credits(), units in any::<u64>(), inc_c in credits(), inc_r in 0u64..1_000_000, price in 0u64..1_000_000_000, floor in 0u64..1_000_000_000_000, cap in prop::option::of(0u64..10_000_000_000_000)) {
        let plan = Plan {
            included_credits: inc_c,
            included_requests: inc_r,
            overage_request_price: Credits(price),
            consumption_floor: Credits(floor),
            hard_cap: cap.map(Credits),
            ..Plan::default()
        };
        let usage = PeriodUsage { metered, request_units_milli: units };
        match plan.bill(&usage) {
            Ok(b) => {
                prop_assert_eq!(b.included_credits.checked_add(b.overage_credits), Some(metered));
                prop_assert_eq!(b.included_requests_milli + b.overage_requests_milli, units);
                prop_assert!(b.charge >= Credits(floor));
                if let Some(cap) = cap {
                    prop_assert!(b.charge <= Credits(cap));
                }
                prop_assert_eq!(b.charge.checked_add(b.over_cap), Some(b.usage_charge.max(Credits(floor))));
                prop_assert_eq!(b.seat_fees, Credits::ZERO);
            }
            Err(_) => {
                // Only an incoherent plan or an unrepresentable charge may fail.
                let over_c = u128::from(metered.micros().saturating_sub(inc_c.micros()));
                let over_r = u128::from(units.saturating_sub(inc_r * 1_000));
                let req = (over_r * u128::from(price)).div_ceil(1_000);
                prop_assert!(cap.is_some_and(|c| c < floor) || over_c + req > u128::from(u64::MAX));
            }
        }
    }

    #[test]
    fn seat_fees_come_on_top_of_the_usage_part(metered in credits(), units in 0u64..100_000_000, seats in 0u64..10_000, seat_price in 0u64..1_000_000_000, per_seat in 0u64..1_000, cap in prop::option::of(0u64..10_000_000_000_000)) {
        let plan = Plan {
            overage_request_price: Credits(40_000),
            hard_cap: cap.map(Credits),
            seats,
            seat_price: Credits(seat_price),
            included_requests_per_seat: per_seat,
            ..Plan::default()
        };
        let no_seats = Plan { seats: 0, included_requests: seats * per_seat, ..plan };
        let usage = PeriodUsage { metered, request_units_milli: units };
        let (b, n) = (plan.bill(&usage).unwrap(), no_seats.bill(&usage).unwrap());
        // Seats are their fee plus an allowance the same as included requests.
        prop_assert_eq!(b.seat_fees, Credits(seats * seat_price));
        prop_assert_eq!(b.charge, n.charge.checked_add(b.seat_fees).unwrap());
        prop_assert_eq!(b.included_requests_milli, n.included_requests_milli);
        if let Some(cap) = cap {
            prop_assert!(b.charge.saturating_sub(b.seat_fees) <= Credits(cap));
        }
    }
}
