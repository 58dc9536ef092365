//! `Estimate` through gRPC on a real authority, with exact numbers: the rating, the grants
//! that pay in deduction order, the day the balance or the plan's hard cap stops the
//! workload, the runway; and that an estimate changes nothing.

use tollgate_ledger::ManualClock;
use tollgate_proto::v1 as pb;
use tollgate_proto::v1::model_price::Pricing;

use super::common::*;

const C: u64 = 1_000_000;
/// 2026-03-01T00:00:00Z: 30 days from here stay in March (one plan month).
const T0: u64 = 1_772_323_200;

/// A book where `m1` costs 2 micro-credits per input token and 8 per output token.
async fn book(a: &mut AdminClient, tenant: &str) {
    a.book(
        tenant,
        0,
        vec![model(
            "m1",
            Pricing::Tokens(pb::TokenPrice {
                input_per_mtok_micro: 2 * C,
                output_per_mtok_micro: 8 * C,
            }),
        )],
    )
    .await;
}

/// 1,000 calls a day of 1,000 tokens in and 500 out: 2 * 1000 + 8 * 500 = 6,000
/// micro-credits a call, 6 credits a day.
fn workload(tenant: &str, days: u32) -> pb::EstimateRequest {
    pb::EstimateRequest {
        tenant: tenant.into(),
        lines: vec![pb::WorkloadLine {
            model: "m1".into(),
            calls: 1000,
            input_tokens_per_call: 1000,
            output_tokens_per_call: 500,
            agent: "bot".into(),
            ..Default::default()
        }],
        per_day: true,
        days,
    }
}

async fn estimate(
    url: &str,
    r: pb::EstimateRequest,
    token: &str,
) -> Result<pb::EstimateResponse, tonic::Status> {
    admin(url)
        .await
        .estimate(req(r, Some(token)))
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn grants_pay_in_deduction_order_until_the_balance_stops_the_workload() {
    let h = start_harness_with_clock(ManualClock::new(T0)).await;
    let mut a = AdminClient::connect(&h.url).await;
    a.tenant("acme").await;
    book(&mut a, "acme").await;
    let purchased = a
        .grant(pb::Grant {
            tenant: "acme".into(),
            kind: pb::GrantKind::Purchased as i32,
            amount_micro: 100 * C,
            priority: 10,
            label: "po-1".into(),
            ..Default::default()
        })
        .await;
    let trial = a
        .grant(pb::Grant {
            tenant: "acme".into(),
            kind: pb::GrantKind::Trial as i32,
            amount_micro: 10 * C,
            priority: 1,
            ..Default::default()
        })
        .await;
    let before = balance(&h.url, "acme").await;

    let mut w = workload("acme", 30);
    // A model the book does not price: charged at the dearest (here: m1's) price.
    w.lines.push(pb::WorkloadLine {
        model: "unpriced".into(),
        calls: 1,
        input_tokens_per_call: 1000,
        output_tokens_per_call: 0,
        ..Default::default()
    });
    let e = estimate(&h.url, w, READER_ACME).await.unwrap();
    assert_eq!(e.as_of_unix_ms, T0 * 1000);
    assert_eq!(e.lines[0].per_call_micro, 6_000);
    assert_eq!(e.lines[0].calls, 30_000);
    assert_eq!(e.lines[0].credits_micro, 180 * C);
    assert!(e.lines[0].priced);
    assert!(!e.lines[1].priced);
    assert_eq!(e.lines[1].per_call_micro, 2_000);
    assert_eq!(e.lines[1].credits_micro, 60_000);
    assert_eq!(e.credits_micro, 180 * C + 60_000);
    assert_eq!(e.credits_per_day_micro, 6 * C + 2_000);
    // The trial (priority 1) pays first, then the purchased grant; 110 credits in all.
    let paid: Vec<(&str, u64, u64)> = e
        .grants
        .iter()
        .map(|g| (g.grant_id.as_str(), g.amount_micro, g.remaining_after_micro))
        .collect();
    assert_eq!(
        paid,
        vec![
            (trial.grant_id.as_str(), 10 * C, 0),
            (purchased.grant_id.as_str(), 100 * C, 0)
        ]
    );
    assert_eq!(e.grants[1].label, "po-1");
    assert_eq!(e.plan_funded_micro, 0);
    // 6.002 credits a day: 18 days are 108.036; day 19 cannot be paid in full.
    assert!(e.hits_limit);
    assert_eq!(e.limit, "balance");
    assert_eq!(e.limit_day, 19);
    assert_eq!(e.limit_unix_ms, (T0 + 18 * 86_400) * 1000);
    assert_eq!(e.unfunded_micro, 180 * C + 60_000 - 110 * C);
    assert_eq!(e.spendable_micro, 110 * C);
    assert!(!e.spendable_unbounded);
    assert_eq!(e.burn_last_24h_micro, 0);
    // 110 / 6.002 = 18.3: 18 whole days.
    assert_eq!((e.runway_days, e.runway_unbounded), (18, false));

    // Nothing was spent or recorded.
    let after = balance(&h.url, "acme").await;
    assert_eq!(after.available_micro, before.available_micro);
    assert_eq!(after.consumed_micro, 0);

    // In total over 30 days (1,000 calls): 6 credits, paid by the trial alone.
    let mut w = workload("acme", 30);
    w.per_day = false;
    let e = estimate(&h.url, w, ADMIN).await.unwrap();
    assert_eq!((e.lines[0].calls, e.credits_micro), (1000, 6 * C));
    assert_eq!(e.credits_per_day_micro, 200_000);
    assert_eq!(e.grants.len(), 1);
    assert_eq!(e.grants[0].remaining_after_micro, 4 * C);
    assert!(!e.hits_limit);
    assert_eq!(e.runway_days, 550);
}

#[tokio::test]
async fn the_plans_hard_cap_stops_the_workload() {
    let h = start_harness_with_clock(ManualClock::new(T0)).await;
    let mut a = AdminClient::connect(&h.url).await;
    a.tenant("acme").await;
    book(&mut a, "acme").await;
    a.plan(pb::Plan {
        tenant: "acme".into(),
        hard_cap_micro: 20 * C,
        ..Default::default()
    })
    .await;
    let e = estimate(&h.url, workload("acme", 30), ADMIN).await.unwrap();
    assert_eq!(e.credits_micro, 180 * C);
    assert!(e.grants.is_empty());
    // 6 credits a day under a 20-credit cap: days 1-3 take 18, day 4 only 2 more.
    assert_eq!(e.plan_funded_micro, 20 * C);
    assert_eq!(e.unfunded_micro, 160 * C);
    assert_eq!(
        (e.hits_limit, e.limit.as_str(), e.limit_day),
        (true, "hard_cap", 4)
    );
    assert_eq!(e.spendable_micro, 20 * C);
    assert_eq!(e.runway_days, 3);
}

#[tokio::test]
async fn estimates_are_scoped_and_validated() {
    let h = start_harness_with_clock(ManualClock::new(T0)).await;
    let mut a = AdminClient::connect(&h.url).await;
    a.tenant("acme").await;
    a.tenant("globex").await;
    let e = estimate(&h.url, workload("globex", 1), READER_ACME)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    let e = estimate(&h.url, workload("acme", 1), "nope")
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    for days in [0, 3661] {
        let e = estimate(&h.url, workload("acme", days), ADMIN)
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{days}");
    }
    let mut w = workload("acme", 1);
    w.lines.clear();
    let e = estimate(&h.url, w, ADMIN).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let e = estimate(&h.url, workload("nobody", 1), ADMIN)
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    // Without a book: nothing is priced.
    let e = estimate(&h.url, workload("acme", 1), ADMIN).await.unwrap();
    assert_eq!((e.price_book_version, e.lines[0].priced), (0, false));
}

#[tokio::test]
async fn what_if_replays_recorded_usage_under_another_book_line_by_line() {
    let h = start_harness().await;
    // m1: 1 micro-credit per input token, 2 per output token.
    setup_tenant(&h.url, "acme", 100).await;
    let mut sc = Sidecar::connect(&h.url, "pod-1", SC_ACME, &["acme"]).await;
    let writer = tollgate_proto::batch::RecordInput {
        output_tokens: 250,
        feature: "reports",
        ..call("acme", "writer", MODEL, 500, 1_000)
    };
    sc.post(
        1,
        &[
            call("acme", "bot", MODEL, 1000, 1000),
            call("acme", "bot", MODEL, 1000, 1000),
            call("acme", "bot", MODEL, 1000, 1000),
            writer,
        ],
    )
    .await;
    let other = pb::PriceBook {
        models: vec![model(
            MODEL,
            Pricing::Tokens(pb::TokenPrice {
                input_per_mtok_micro: 3 * C,
                output_per_mtok_micro: 4 * C,
            }),
        )],
        default_max_output_tokens: 1000,
        ..Default::default()
    };
    let w = admin(&h.url)
        .await
        .what_if(req(
            pb::WhatIfRequest {
                tenant: "acme".into(),
                price_book: Some(other.clone()),
                ..Default::default()
            },
            Some(READER_ACME),
        ))
        .await
        .unwrap()
        .into_inner();
    let mut lines: Vec<(&str, &str, u64, u64, u64, bool)> = w
        .lines
        .iter()
        .map(|l| {
            (
                l.agent.as_str(),
                l.feature.as_str(),
                l.calls,
                l.recorded_micro,
                l.replayed_micro,
                l.priced,
            )
        })
        .collect();
    lines.sort();
    // bot: 3 calls of 1,000 input tokens: 3,000 recorded, 9,000 under 3 per token.
    // writer: 500 in, 250 out: 500 + 500 recorded, 1,500 + 1,000 replayed.
    assert_eq!(
        lines,
        vec![
            ("bot", "", 3, 3_000, 9_000, true),
            ("writer", "reports", 1, 1_000, 2_500, true)
        ]
    );
    assert_eq!((w.recorded_micro, w.replayed_micro), (4_000, 11_500));
    // Nothing was installed: the tenant's book is the one it had.
    let book = admin(&h.url)
        .await
        .get_price_book(req(
            pb::GetPriceBookRequest {
                tenant: "acme".into(),
                version: 0,
            },
            Some(ADMIN),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(book.version, 1);

    // A book without the model: rated at its dearest model, and said so.
    let mut missing = other;
    missing.models[0].model = "other".into();
    let w = admin(&h.url)
        .await
        .what_if(req(
            pb::WhatIfRequest {
                tenant: "acme".into(),
                price_book: Some(missing),
                ..Default::default()
            },
            Some(ADMIN),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(w.lines.iter().all(|l| !l.priced));
    assert_eq!(w.replayed_micro, 11_500);
    // Scoped like every read; a missing book is invalid.
    let e = admin(&h.url)
        .await
        .what_if(req(
            pb::WhatIfRequest {
                tenant: "acme".into(),
                ..Default::default()
            },
            Some(ADMIN),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let e = admin(&h.url)
        .await
        .what_if(req(
            pb::WhatIfRequest {
                tenant: "globex".into(),
                ..Default::default()
            },
            Some(READER_ACME),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
}

/// The largest estimate allowed (100 lines for 366 days) is answered; one more day is
/// refused.
#[tokio::test]
async fn the_largest_estimate_is_answered_and_a_larger_one_refused() {
    let h = start_harness_with_clock(ManualClock::new(T0)).await;
    let mut a = AdminClient::connect(&h.url).await;
    a.tenant("acme").await;
    book(&mut a, "acme").await;
    a.grant(pb::Grant {
        tenant: "acme".into(),
        kind: pb::GrantKind::Purchased as i32,
        amount_micro: 1_000_000 * C,
        ..Default::default()
    })
    .await;
    let mut w = workload("acme", 366);
    let line = w.lines[0].clone();
    w.lines = (0..100)
        .map(|i| pb::WorkloadLine {
            agent: format!("agent-{i}"),
            ..line.clone()
        })
        .collect();
    let e = estimate(&h.url, w.clone(), ADMIN).await.unwrap();
    // 100 lines of 6 credits a day for 366 days.
    assert_eq!(e.credits_micro, 100 * 6 * 366 * C);
    assert_eq!(e.grants[0].amount_micro, 100 * 6 * 366 * C);
    w.days = 367;
    let err = estimate(&h.url, w, ADMIN).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}
