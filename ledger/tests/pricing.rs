//! Pricing cases from the field, posted through the ledger on SQLite with the tenant's
//! price book (the authority's rating is the truth) and plan.

mod common;

use std::num::NonZeroU64;

use common::*;
use tollgate_core::{Credits, Initiator, ModelPrice, Plan, PriceBook, PriceBookSpec, Pricing};
use tollgate_ledger::{
    Funding, GrantKind, GrantSpec, HoldRequest, LedgerError, ResetPeriod, TenantConfig, UsageRecord,
};

fn micro(n: u64) -> Credits {
    Credits::from_micros(n)
}

fn book(version: u64, models: Vec<(&str, Pricing)>, request_price: Credits) -> PriceBook {
    PriceBook::new(PriceBookSpec {
        version,
        request_price,
        default_max_output_tokens: 4096,
        models: models
            .into_iter()
            .map(|(n, p)| ModelPrice {
                name: n.into(),
                pricing: p,
                max_output_tokens: None,
            })
            .collect(),
    })
    .unwrap()
}

async fn tenant_with(
    e: &Env,
    name: &str,
    book: &PriceBook,
    plan: Option<Plan>,
) -> tollgate_ledger::TenantId {
    let t = tenant(name);
    e.ledger
        .create_tenant(
            &t,
            TenantConfig {
                plan,
                ..TenantConfig::default()
            },
        )
        .await
        .unwrap();
    e.ledger.set_price_book(&t, book).await.unwrap();
    t
}

#[tokio::test]
async fn actions_of_10k_tokens_at_20_credits() {
    let e = env().await;
    let b = book(
        1,
        vec![(
            "agentic",
            Pricing::PerAction {
                tokens_per_action: NonZeroU64::new(10_000).unwrap(),
                price_per_action: credits(20),
            },
        )],
        Credits::ZERO,
    );
    let t = tenant_with(&e, "actions", &b, None).await;
    e.ledger
        .grant(&t, GrantSpec::new(GrantKind::Purchased, credits(1000)))
        .await
        .unwrap();
    // 20,001 tokens = 3 actions = 60 credits; the client claimed 40 (wrong): re-rated.
    let out = e
        .ledger
        .post_batch(&batch(
            "sc",
            1,
            vec![record(&t, "agentic", 10_001, 10_000, credits(40))],
        ))
        .await
        .unwrap();
    assert_eq!(out.tenants[0].rated, credits(60));
    assert_eq!(out.tenants[0].repriced_records, 1);
    assert_eq!(out.tenants[0].stale_book_records, 0);
    assert_eq!(out.tenants[0].from_grants, credits(60));
    // Exactly 10,000 tokens is one action; one token is one action.
    let out = e
        .ledger
        .post_batch(&batch(
            "sc",
            2,
            vec![
                record(&t, "agentic", 4_000, 6_000, credits(20)),
                record(&t, "agentic", 1, 0, credits(20)),
            ],
        ))
        .await
        .unwrap();
    assert_eq!(out.tenants[0].rated, credits(40));
    assert_eq!(out.tenants[0].repriced_records, 0);
    // A client on an older book is told apart.
    let mut old = record(&t, "agentic", 1, 0, credits(20));
    old.price_book_version = 0;
    let out = e
        .ledger
        .post_batch(&batch("sc", 3, vec![old]))
        .await
        .unwrap();
    assert_eq!(out.tenants[0].stale_book_records, 1);
    assert_eq!(out.tenants[0].rated, credits(20));
    let bal = e.ledger.balance(&t).await.unwrap();
    assert_eq!(bal.consumed, credits(120));
    assert_eq!(bal.available, credits(880));
}

#[tokio::test]
async fn premium_requests_300_included_then_4_cents_agent_calls_free() {
    let e = env().await;
    // 1 credit = $1: a request costs $0.04 at list price.
    let b = book(
        1,
        vec![(
            "premium",
            Pricing::PerRequest {
                multiplier_per_mille: 1000,
                agent_initiated_free: true,
            },
        )],
        micro(40_000),
    );
    let plan = Plan {
        included_requests: 300,
        overage_request_price: micro(40_000),
        ..Plan::default()
    };
    let t = tenant_with(&e, "copilot", &b, Some(plan)).await;
    let mut records = Vec::new();
    for i in 0..350 {
        records.push(record(&t, "premium", 100 + i, 50, micro(40_000)));
    }
    for _ in 0..120 {
        let mut r = record(&t, "premium", 100, 50, Credits::ZERO);
        r.initiator = Initiator::Agent;
        records.push(r);
    }
    let out = e.ledger.post_batch(&batch("sc", 1, records)).await.unwrap();
    let tp = &out.tenants[0];
    assert_eq!(tp.records, 470);
    assert_eq!(
        tp.rated,
        micro(350 * 40_000),
        "agent-initiated calls are free"
    );
    assert_eq!(tp.from_plan, micro(350 * 40_000));
    assert_eq!(tp.overrun, Credits::ZERO);
    let bal = e.ledger.balance(&t).await.unwrap();
    assert_eq!(bal.period_usage.request_units_milli, 350_000);
    let bill = bal.period_bill.unwrap();
    assert_eq!(bill.included_requests_milli, 300_000);
    assert_eq!(bill.overage_requests_milli, 50_000);
    // 50 requests past the 300 included at $0.04 = $2.00.
    assert_eq!(bill.charge, credits(2));
}

#[tokio::test]
async fn monthly_credits_reset_without_rollover() {
    let e = env().await;
    let t = tenant("monthly");
    e.ledger
        .create_tenant(&t, TenantConfig::default())
        .await
        .unwrap();
    // Granted mid-January; resets on the 1st of every month.
    e.ledger
        .grant(
            &t,
            GrantSpec::new(GrantKind::RecurringAllowance, credits(100)).reset(ResetPeriod::Monthly),
        )
        .await
        .unwrap();
    e.ledger
        .post_batch(&batch("sc", 1, vec![record(&t, "m", 1, 1, credits(30))]))
        .await
        .unwrap();
    // A lease taken in January and returned after the reset: its credits expire.
    let h = e
        .ledger
        .hold(
            &t,
            HoldRequest {
                owner: "sc2".into(),
                amount: credits(20),
                min_amount: credits(20),
                ttl_secs: 40 * 86_400,
            },
        )
        .await
        .unwrap();
    assert_eq!(e.ledger.balance(&t).await.unwrap().available, credits(50));
    // 2026-02-01 00:00:00 UTC.
    e.clock.set(1_769_904_000);
    let bal = e.ledger.balance(&t).await.unwrap();
    assert_eq!(
        bal.available,
        credits(100),
        "refilled to 100, not 150: no rollover"
    );
    assert_eq!(bal.held, credits(20));
    e.ledger.void_hold(&t, h.id).await.unwrap();
    let bal = e.ledger.balance(&t).await.unwrap();
    assert_eq!(bal.available, credits(100), "January's held credits expire");
    assert_eq!(bal.expired, credits(70));
    assert_eq!(bal.granted, credits(200));
    // February: spend 110 of 100: 10 overrun (no plan).
    let out = e
        .ledger
        .post_batch(&batch("sc", 2, vec![record(&t, "m", 1, 1, credits(110))]))
        .await
        .unwrap();
    assert_eq!(out.tenants[0].from_grants, credits(100));
    assert_eq!(out.tenants[0].overrun, credits(10));
    // 2026-03-01: refilled again.
    e.clock.set(1_772_323_200);
    let bal = e.ledger.balance(&t).await.unwrap();
    assert_eq!(bal.available, credits(100));
    assert_eq!(bal.granted, credits(300));
    assert_eq!(bal.consumed, credits(130));
    assert_eq!(bal.overrun, credits(10));
    // The store catches up the same way the view did.
    let sweep = e.ledger.sweep(100).await.unwrap();
    assert_eq!(sweep.tenants_caught_up, 1);
    let g = &e.ledger.grants(&t, true).await.unwrap()[0];
    assert_eq!(g.period, 2);
    assert!(g.is_conserved());
    assert!(e.ledger.verify_audit(None).await.unwrap().is_ok());
}

#[tokio::test]
async fn annual_pool_shared_by_all_agents() {
    let e = env().await;
    let b = book(
        1,
        vec![(
            "gpt",
            Pricing::PerToken {
                input_per_million: credits(2),
                output_per_million: credits(8),
            },
        )],
        Credits::ZERO,
    );
    let t = tenant_with(&e, "pool", &b, None).await;
    e.ledger
        .grant(
            &t,
            GrantSpec::new(GrantKind::RecurringAllowance, credits(1000)).reset(ResetPeriod::Annual),
        )
        .await
        .unwrap();
    // Three agents, on two sidecars, each 100M input + 50M output tokens = 600 credits.
    let mut seq = 0;
    for (agent, sidecar) in [("a1", "sc-1"), ("a2", "sc-1"), ("a3", "sc-2")] {
        seq += 1;
        let mut r: UsageRecord = record(&t, "gpt", 100_000_000, 50_000_000, credits(600));
        r.agent = agent.into();
        e.ledger
            .post_batch(&batch(sidecar, seq, vec![r]))
            .await
            .unwrap();
    }
    let bal = e.ledger.balance(&t).await.unwrap();
    assert_eq!(bal.consumed, credits(1000), "one pool for every agent");
    assert_eq!(bal.overrun, credits(800));
    let st = e.ledger.statement(&t, 0, u64::MAX / 2).await.unwrap();
    let by_agent = |a: &str, f: Funding| {
        st.rows
            .iter()
            .filter(|r| r.agent == a && r.funding == f)
            .map(|r| r.amount)
            .fold(Credits::ZERO, |x, y| x.saturating_add(y))
    };
    assert_eq!(
        by_agent("a1", Funding::Grant(tollgate_ledger::GrantId(1))),
        credits(600)
    );
    assert_eq!(
        by_agent("a2", Funding::Grant(tollgate_ledger::GrantId(1))),
        credits(400)
    );
    assert_eq!(by_agent("a2", Funding::Overrun), credits(200));
    assert_eq!(by_agent("a3", Funding::Overrun), credits(600));
    // Still empty in December; refilled on 2027-01-01 (annual pools reset on January 1st).
    e.clock.set(1_798_761_600 - 1); // 2026-12-31 23:59:59
    assert_eq!(e.ledger.balance(&t).await.unwrap().available, Credits::ZERO);
    e.clock.set(1_798_761_600); // 2027-01-01
    assert_eq!(e.ledger.balance(&t).await.unwrap().available, credits(1000));
}

#[tokio::test]
async fn resolved_tickets_at_99_cents_on_a_consumption_floor() {
    let e = env().await;
    let b = book(
        1,
        vec![(
            "support",
            Pricing::PerOutcome {
                price_per_outcome: micro(990_000),
            },
        )],
        Credits::ZERO,
    );
    let plan = Plan {
        consumption_floor: credits(500),
        ..Plan::default()
    };
    let t = tenant_with(&e, "helpdesk", &b, Some(plan)).await;
    let ticket = |n: u64| {
        let mut r = record(&t, "support", 0, 0, micro(990_000));
        r.outcomes = n;
        r
    };
    // 300 resolved tickets = $297: the $500 floor applies.
    let recs: Vec<_> = (0..300).map(|_| ticket(1)).collect();
    e.ledger.post_batch(&batch("sc", 1, recs)).await.unwrap();
    let bill = e.ledger.balance(&t).await.unwrap().period_bill.unwrap();
    assert_eq!(bill.usage_charge, micro(297_000_000));
    assert_eq!(bill.floor_top_up, micro(203_000_000));
    assert_eq!(bill.charge, credits(500));
    // 400 more (700 in all) = $693: above the floor.
    let recs: Vec<_> = (0..400).map(|_| ticket(1)).collect();
    e.ledger.post_batch(&batch("sc", 2, recs)).await.unwrap();
    let bill = e.ledger.balance(&t).await.unwrap().period_bill.unwrap();
    assert_eq!(bill.charge, micro(693_000_000));
    assert_eq!(bill.floor_top_up, Credits::ZERO);
}

#[tokio::test]
async fn hard_cap_is_never_exceeded_past_it_is_overrun() {
    let e = env().await;
    let b = book(
        1,
        vec![(
            "gpt",
            Pricing::PerToken {
                input_per_million: credits(1),
                output_per_million: credits(1),
            },
        )],
        Credits::ZERO,
    );
    let plan = Plan {
        hard_cap: Some(credits(10)),
        ..Plan::default()
    };
    let t = tenant_with(&e, "capped", &b, Some(plan)).await;
    e.ledger
        .grant(&t, GrantSpec::new(GrantKind::Promotional, credits(5)))
        .await
        .unwrap();
    // 25 credits of usage: 5 from the grant, 10 from the plan (up to its cap), 10 overrun.
    let out = e
        .ledger
        .post_batch(&batch(
            "sc",
            1,
            vec![record(&t, "gpt", 15_000_000, 10_000_000, credits(25))],
        ))
        .await
        .unwrap();
    let tp = &out.tenants[0];
    assert_eq!(tp.from_grants, credits(5));
    assert_eq!(tp.from_plan, credits(10));
    assert_eq!(tp.overrun, credits(10));
    let bal = e.ledger.balance(&t).await.unwrap();
    assert_eq!(bal.period_bill.unwrap().charge, credits(10));
    assert_eq!(bal.spendable, Credits::ZERO);
    // No lease past the cap.
    let err = e
        .ledger
        .hold(
            &t,
            HoldRequest {
                owner: "sc".into(),
                amount: credits(1),
                min_amount: Credits::from_micros(1),
                ttl_secs: 60,
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            LedgerError::InsufficientFunds {
                limit: tollgate_core::LimitKind::HardCap,
                ..
            }
        ),
        "{err}"
    );
}
