use super::*;
use crate::money::{CreditPack, CurrencyCode, Money};
use crate::rating::{ModelPrice, PriceBook, PriceBookSpec, Pricing, RatingInput, Usage};
use crate::tier::Initiator;

/// 100,000 credits for $500: one credit is half a cent.
fn pack() -> CreditPack {
    CreditPack::new(
        Credits::from_credits(100_000).unwrap(),
        Money::from_units(500).unwrap(),
        CurrencyCode::USD,
    )
    .unwrap()
}

fn dollars(s: &str) -> Money {
    s.parse().unwrap()
}

#[test]
fn premium_requests_300_included_then_four_cents_agent_calls_free() {
    let pack = pack();
    let four_cents = pack.price_in_credits(dollars("0.04")).unwrap();
    assert_eq!(four_cents, Credits::from_credits(8).unwrap());
    let book = PriceBook::new(PriceBookSpec {
        version: 1,
        request_price: four_cents,
        default_max_output_tokens: 4_096,
        models: vec![ModelPrice {
            name: "premium".into(),
            pricing: Pricing::PerRequest {
                multiplier_per_mille: 1_000,
                agent_initiated_free: true,
            },
            max_output_tokens: None,
        }],
    })
    .unwrap();
    let plan = Plan {
        included_requests: 300,
        overage_request_price: four_cents,
        ..Plan::default()
    };
    let model = book.model("premium").unwrap();
    let human = RatingInput::new(Usage::new(2_000, 500));
    let agent = human.with_initiator(Initiator::Agent);

    let mut usage = PeriodUsage::default();
    for _ in 0..300 {
        usage
            .add(&book.rate_detailed(&model, &human).unwrap())
            .unwrap();
    }
    // 1,000 tool calls the agent starts on its own: free, and they use no allowance.
    for _ in 0..1_000 {
        let c = book.rate_detailed(&model, &agent).unwrap();
        assert_eq!(c.credits, Credits::ZERO);
        usage.add(&c).unwrap();
    }
    let bill = plan.bill(&usage).unwrap();
    assert_eq!(bill.included_requests_milli, 300_000);
    assert_eq!(bill.overage_requests_milli, 0);
    assert_eq!(bill.charge, Credits::ZERO);

    // The 301st..310th human requests cost $0.04 each.
    for _ in 0..10 {
        usage
            .add(&book.rate_detailed(&model, &human).unwrap())
            .unwrap();
    }
    let bill = plan.bill(&usage).unwrap();
    assert_eq!(bill.overage_requests_milli, 10_000);
    assert_eq!(bill.charge, Credits::from_credits(80).unwrap());
    assert_eq!(pack.money_for(bill.charge).unwrap(), dollars("0.40"));
    // The hot path reserves the marginal (overage) price of one request.
    assert_eq!(book.rate(&model, &human), Ok(four_cents));
}

#[test]
fn request_multiplier_is_weighted_against_the_allowance() {
    let plan = Plan {
        included_requests: 1,
        overage_request_price: Credits(40_000),
        ..Plan::default()
    };
    // Three 0.33x requests = 990 milli-requests: within one included request.
    let usage = PeriodUsage {
        metered: Credits::ZERO,
        request_units_milli: 990,
    };
    assert_eq!(plan.bill(&usage).unwrap().charge, Credits::ZERO);
    // Four: 1,320 milli, 320 over: ceil(320 * 40,000 / 1000) = 12,800.
    let usage = PeriodUsage {
        metered: Credits::ZERO,
        request_units_milli: 1_320,
    };
    assert_eq!(plan.bill(&usage).unwrap().charge, Credits(12_800));
}

#[test]
fn resolved_tickets_at_99_cents_on_top_of_a_consumption_floor() {
    let pack = pack();
    let per_ticket = pack.price_in_credits(dollars("0.99")).unwrap();
    assert_eq!(per_ticket, "198".parse().unwrap());
    let book = PriceBook::new(PriceBookSpec {
        version: 3,
        request_price: Credits::ZERO,
        default_max_output_tokens: 1_024,
        models: vec![ModelPrice {
            name: "ticket-resolution".into(),
            pricing: Pricing::PerOutcome {
                price_per_outcome: per_ticket,
            },
            max_output_tokens: None,
        }],
    })
    .unwrap();
    let floor = pack.price_in_credits(dollars("500")).unwrap();
    let plan = Plan {
        consumption_floor: floor,
        ..Plan::default()
    };
    let model = book.model("ticket-resolution").unwrap();
    let bill_for = |tickets: u64| {
        let mut usage = PeriodUsage::default();
        // The LLM calls themselves are free under outcome pricing.
        let call = RatingInput::new(Usage::new(5_000, 700));
        usage
            .add(&book.rate_detailed(&model, &call).unwrap())
            .unwrap();
        let resolved = RatingInput::default().with_outcomes(tickets);
        usage
            .add(&book.rate_detailed(&model, &resolved).unwrap())
            .unwrap();
        plan.bill(&usage).unwrap()
    };
    // 300 tickets = $297 < $500 floor: the floor is billed, $203 as top-up.
    let b = bill_for(300);
    assert_eq!(pack.money_for(b.usage_charge).unwrap(), dollars("297"));
    assert_eq!(pack.money_for(b.floor_top_up).unwrap(), dollars("203"));
    assert_eq!(pack.money_for(b.charge).unwrap(), dollars("500"));
    // 700 tickets = $693 > floor: outcomes are billed on top, no top-up.
    let b = bill_for(700);
    assert_eq!(b.floor_top_up, Credits::ZERO);
    assert_eq!(pack.money_for(b.charge).unwrap(), dollars("693"));
    // No tickets: the floor alone.
    assert_eq!(bill_for(0).charge, floor);
}

#[test]
fn included_credits_then_overage_then_hard_cap() {
    let c = |n: u64| Credits::from_credits(n).unwrap();
    let plan = Plan {
        included_credits: c(1_000),
        hard_cap: Some(c(500)),
        ..Plan::default()
    };
    let usage = |n| PeriodUsage {
        metered: c(n),
        request_units_milli: 0,
    };
    let b = plan.bill(&usage(900)).unwrap();
    assert_eq!(
        (b.included_credits, b.overage_credits, b.charge),
        (c(900), c(0), c(0))
    );
    let b = plan.bill(&usage(1_200)).unwrap();
    assert_eq!(
        (b.overage_credits, b.charge, b.over_cap),
        (c(200), c(200), c(0))
    );
    assert_eq!(plan.headroom(&usage(1_200)), Ok(Some(c(300))));
    let b = plan.bill(&usage(1_700)).unwrap();
    assert_eq!((b.charge, b.over_cap), (c(500), c(200)));
    assert_eq!(plan.headroom(&usage(1_700)), Ok(Some(Credits::ZERO)));
    assert_eq!(Plan::default().headroom(&usage(5)), Ok(None));
}

#[test]
fn incoherent_plans_and_overflow_are_errors() {
    let plan = Plan {
        consumption_floor: Credits(10),
        hard_cap: Some(Credits(5)),
        ..Plan::default()
    };
    assert!(matches!(
        plan.bill(&PeriodUsage::default()),
        Err(PlanError::FloorAboveCap { .. })
    ));
    let plan = Plan {
        included_requests: u64::MAX,
        ..Plan::default()
    };
    assert_eq!(plan.bill(&PeriodUsage::default()), Err(PlanError::Overflow));
    let plan = Plan {
        overage_request_price: Credits::MAX,
        ..Plan::default()
    };
    let usage = PeriodUsage {
        metered: Credits::MAX,
        request_units_milli: 5_000,
    };
    assert_eq!(plan.bill(&usage), Err(PlanError::Overflow));
}

#[test]
fn seats_bill_their_fee_and_bring_allowances_per_seat() {
    // Copilot Business: $19 per user per month with 300 premium requests each, then $0.04
    // each. One credit is one dollar here.
    let usd = CreditPack::new(
        Credits::ONE,
        Money::from_units(1).unwrap(),
        CurrencyCode::USD,
    )
    .unwrap();
    let credits = |s: &str| usd.price_in_credits(dollars(s)).unwrap();
    let plan = Plan {
        seats: 10,
        seat_price: credits("19"),
        included_requests_per_seat: 300,
        overage_request_price: credits("0.04"),
        ..Plan::default()
    };
    assert_eq!(plan.request_allowance(), Ok(3_000));
    // Nothing used: the seats are billed all the same (the commitment).
    let bill = plan.bill(&PeriodUsage::default()).unwrap();
    assert_eq!(bill.seat_fees, credits("190"));
    assert_eq!(bill.charge, credits("190"));
    // 3,500 requests: 500 past the seats' 3,000 at $0.04 = $20, on top of the seats.
    let usage = PeriodUsage {
        metered: Credits::ZERO,
        request_units_milli: 3_500_000,
    };
    let bill = plan.bill(&usage).unwrap();
    assert_eq!(bill.included_requests_milli, 3_000_000);
    assert_eq!(bill.request_overage_charge, credits("20"));
    assert_eq!(bill.charge, credits("210"));
    assert_eq!(usd.money_for(bill.charge).unwrap(), dollars("210"));

    // Salesforce-style: $125 per user per month, each seat bringing 25,000 credits of
    // metered usage; a consumption floor and a cap govern the usage part only.
    let plan = Plan {
        seats: 4,
        seat_price: Credits::from_credits(125).unwrap(),
        included_credits_per_seat: Credits::from_credits(25_000).unwrap(),
        consumption_floor: Credits::from_credits(50).unwrap(),
        hard_cap: Some(Credits::from_credits(1_000).unwrap()),
        ..Plan::default()
    };
    let usage = |c: u64| PeriodUsage {
        metered: Credits::from_credits(c).unwrap(),
        request_units_milli: 0,
    };
    // Within the seats' 100,000 credits: the seats plus the floor.
    let bill = plan.bill(&usage(100_000)).unwrap();
    assert_eq!(
        bill.included_credits,
        Credits::from_credits(100_000).unwrap()
    );
    assert_eq!(bill.charge, Credits::from_credits(500 + 50).unwrap());
    // 100,300: 300 of overage (over the floor), plus the seats.
    let bill = plan.bill(&usage(100_300)).unwrap();
    assert_eq!(bill.charge, Credits::from_credits(500 + 300).unwrap());
    // The cap bounds the usage part; the seats stay billed.
    let bill = plan.bill(&usage(200_000)).unwrap();
    assert_eq!(bill.charge, Credits::from_credits(500 + 1_000).unwrap());
    assert_eq!(bill.over_cap, Credits::from_credits(99_000).unwrap());
    assert_eq!(
        plan.headroom(&usage(100_300)).unwrap(),
        Some(Credits::from_credits(700).unwrap())
    );

    // Seat terms that overflow are refused.
    let absurd = Plan {
        seats: u64::MAX,
        seat_price: Credits::from_credits(2).unwrap(),
        ..Plan::default()
    };
    assert_eq!(absurd.validate(), Err(PlanError::Overflow));
    let absurd = Plan {
        seats: 3,
        included_requests_per_seat: u64::MAX / 2,
        ..Plan::default()
    };
    assert_eq!(absurd.validate(), Err(PlanError::Overflow));
}
