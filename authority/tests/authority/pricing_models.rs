//! The pricing models of the market, each through the real authority: the admin API sets
//! the tenant up, a sidecar leases and sends signed usage batches over its session, and
//! the statement and balance are read back, every figure checked to the micro-credit.
//! Models that live in time (monthly credits, an annual pool) move the ledger's clock.

use tollgate_ledger::ManualClock;
use tollgate_proto::batch::RecordInput;
use tollgate_proto::v1::{self as pb, model_price::Pricing};

use super::common::*;

/// 2026-01-15 00:00:00 UTC.
const T0: u64 = 1_768_435_200;
/// 2026-02-02 00:00:00 UTC.
const FEB_2: u64 = 1_769_990_400;
/// 2027-01-02 00:00:00 UTC.
const JAN_2_2027: u64 = 1_798_848_000;
const C: u64 = 1_000_000;

/// Waits until the ledger's sweep (every second) has ended the holds that expired when
/// the clock moved: a liveness guard of 20 s, not a timing assertion.
async fn holds_swept(a: &mut AdminClient, tenant: &str) -> pb::Balance {
    for _ in 0..200 {
        let b = a.balance(tenant).await;
        if b.held_micro == 0 {
            return b;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("expired holds were not swept within 20 s");
}

/// Agentforce Flex Credits: $500 buys 100,000 credits; an action covers up to 10,000
/// tokens at 20 credits, so 10,000 tokens are one action, 10,001 two, 20,001 three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agentforce_actions_of_10k_tokens_at_20_credits_bought_in_500_dollar_packs() {
    if skip_without_store(
        "agentforce_actions_of_10k_tokens_at_20_credits_bought_in_500_dollar_packs",
    ) {
        return;
    }
    let h = start_harness().await;
    let mut a = AdminClient::connect(&h.url).await;
    a.tenant("acme").await;
    a.pack("acme", 100_000, 500 * C, "USD").await;
    let g =
        a.0.buy_credits(req(
            pb::BuyCreditsRequest {
                tenant: "acme".into(),
                packs: 1,
                reference: "invoice-1".into(),
                expires_unix_ms: 0,
            },
            Some(ADMIN),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(g.amount_micro, 100_000 * C);
    a.book(
        "acme",
        0,
        vec![model(
            "agentforce",
            Pricing::Actions(pb::ActionPrice {
                tokens_per_action: 10_000,
                per_action_micro: 20 * C,
            }),
        )],
    )
    .await;
    let mut sc = Sidecar::connect(&h.url, "pod-1", SC_ACME, &["acme"]).await;
    sc.lease_wallet("acme", 1_000 * C).await;
    let rec = |task, tokens, client| RecordInput {
        task,
        feature: "service",
        ..call("acme", "service-agent", "agentforce", tokens, client)
    };
    let ack = sc
        .post(
            1,
            &[
                rec("case-1", 10_000, 20 * C),
                rec("case-2", 10_001, 40 * C),
                rec("case-3", 20_001, 60 * C),
            ],
        )
        .await;
    assert_eq!(ack.rated_micro, 120 * C);
    let s = a.statement("acme").await;
    assert_eq!((s.total_micro, s.calls), (120 * C, 3));
    assert_eq!(s.currency, "USD");
    // 120 credits at $500 per 100,000: $0.60; a 20-credit action is $0.10.
    assert_eq!(s.total_money_micro, 600_000);
    for (task, credits, dollars) in [
        ("case-1", 20 * C, 100_000),
        ("case-2", 40 * C, 200_000),
        ("case-3", 60 * C, 300_000),
    ] {
        let l = line(&s.by_task, task);
        assert_eq!((l.amount_micro, l.amount_money_micro), (credits, dollars));
        assert_eq!(l.agents, "service-agent");
    }
    assert_eq!(line(&s.by_agent, "service-agent").amount_micro, 120 * C);
    let b = a.balance("acme").await;
    assert_eq!(b.consumed_micro, 120 * C);
    assert_eq!(b.consumed_money_micro, 600_000);
    assert_eq!(b.available_micro + b.held_micro, 99_880 * C);
    // Buying again under the same reference grants nothing more.
    let again =
        a.0.buy_credits(req(
            pb::BuyCreditsRequest {
                tenant: "acme".into(),
                packs: 1,
                reference: "invoice-1".into(),
                expires_unix_ms: 0,
            },
            Some(ADMIN),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.grant_id, g.grant_id);
    assert_eq!(a.balance("acme").await.granted_micro, 100_000 * C);
    h.running.shutdown().await.unwrap();
}

/// HubSpot-style monthly credits: the allowance resets on the 1st and what was not used
/// does not roll over; past it, usage is recorded as overrun, never billed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubspot_monthly_credits_reset_without_rollover() {
    if skip_without_store("hubspot_monthly_credits_reset_without_rollover") {
        return;
    }
    let clock = ManualClock::new(T0);
    let h = start_harness_with_clock(clock.clone()).await;
    let mut a = AdminClient::connect(&h.url).await;
    a.tenant("acme").await;
    // One credit per 1,000 input tokens.
    a.book(
        "acme",
        0,
        vec![model(
            "breeze",
            Pricing::Tokens(pb::TokenPrice {
                input_per_mtok_micro: 1_000 * C,
                output_per_mtok_micro: 0,
            }),
        )],
    )
    .await;
    a.grant(pb::Grant {
        tenant: "acme".into(),
        kind: pb::GrantKind::Recurring as i32,
        amount_micro: 1_000 * C,
        reset: pb::ResetPeriod::Monthly as i32,
        label: "monthly-credits".into(),
        ..Default::default()
    })
    .await;
    let mut sc = Sidecar::connect(&h.url, "pod-1", SC_ACME, &["acme"]).await;
    sc.lease_wallet("acme", 500 * C).await;
    sc.post(
        1,
        &[call("acme", "breeze-agent", "breeze", 300_000, 300 * C)],
    )
    .await;
    assert_eq!(a.balance("acme").await.consumed_micro, 300 * C);

    // February: 1,000 credits again, January's 700 unused are gone.
    clock.set(FEB_2);
    let b = holds_swept(&mut a, "acme").await;
    assert_eq!(b.available_micro, 1_000 * C);
    assert_eq!(b.expired_micro, 700 * C);
    assert_eq!(b.granted_micro, 2_000 * C);
    sc.lease_wallet("acme", 1_000 * C).await;
    sc.post(
        2,
        &[call("acme", "breeze-agent", "breeze", 1_000_000, 1_000 * C)],
    )
    .await;
    // 100 more than the month's credits: within the sidecar's overrun allowance, so it is
    // recorded, but no credit pays it: overrun, never billed.
    sc.post(
        3,
        &[call("acme", "breeze-agent", "breeze", 100_000, 100 * C)],
    )
    .await;
    let b = a.balance("acme").await;
    assert_eq!(b.consumed_micro, 1_300 * C);
    assert_eq!(b.overrun_micro, 100 * C);
    let feb =
        a.0.get_statement(req(
            pb::GetStatementRequest {
                tenant: "acme".into(),
                from_unix_ms: 1_769_904_000_000,
                to_unix_ms: 0,
            },
            Some(ADMIN),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((feb.total_micro, feb.overrun_micro), (1_000 * C, 100 * C));
    let jan =
        a.0.get_statement(req(
            pb::GetStatementRequest {
                tenant: "acme".into(),
                from_unix_ms: 0,
                to_unix_ms: 1_769_904_000_000,
            },
            Some(ADMIN),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((jan.total_micro, jan.overrun_micro), (300 * C, 0));
    h.running.shutdown().await.unwrap();
}

/// Workday-style annual pool: one pool for the year, drawn by every agent of the tenant
/// in every pod, refilled (without rollover) at the new year.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workday_one_annual_pool_used_by_every_agent() {
    if skip_without_store("workday_one_annual_pool_used_by_every_agent") {
        return;
    }
    let clock = ManualClock::new(T0);
    let h = start_harness_with_clock(clock.clone()).await;
    let mut a = AdminClient::connect(&h.url).await;
    a.tenant("acme").await;
    a.book(
        "acme",
        0,
        vec![model(
            "flex",
            Pricing::Tokens(pb::TokenPrice {
                input_per_mtok_micro: 1_000 * C,
                output_per_mtok_micro: 0,
            }),
        )],
    )
    .await;
    a.grant(pb::Grant {
        tenant: "acme".into(),
        kind: pb::GrantKind::Recurring as i32,
        amount_micro: 10_000 * C,
        reset: pb::ResetPeriod::Annual as i32,
        label: "annual-pool".into(),
        ..Default::default()
    })
    .await;
    let mut recruiter = Sidecar::connect(&h.url, "pod-1", SC_ACME, &["acme"]).await;
    let mut payroll = Sidecar::connect(&h.url, "pod-2", SC_BOTH, &["acme"]).await;
    recruiter.lease_wallet("acme", 3_000 * C).await;
    payroll.lease_wallet("acme", 3_000 * C).await;
    recruiter
        .post(
            1,
            &[call("acme", "recruiter", "flex", 2_000_000, 2_000 * C)],
        )
        .await;
    payroll
        .post(1, &[call("acme", "payroll", "flex", 1_500_000, 1_500 * C)])
        .await;
    let s = a.statement("acme").await;
    assert_eq!(s.total_micro, 3_500 * C);
    assert_eq!(line(&s.by_agent, "recruiter").amount_micro, 2_000 * C);
    assert_eq!(line(&s.by_agent, "payroll").amount_micro, 1_500 * C);
    let grants = a.balance("acme").await.grants;
    assert_eq!(grants.len(), 1, "one pool");
    assert_eq!(grants[0].remaining_micro, 6_500 * C);

    // The new year: the pool is refilled, this year's 6,500 unused expire.
    clock.set(JAN_2_2027);
    let b = holds_swept(&mut a, "acme").await;
    assert_eq!(b.available_micro, 10_000 * C);
    assert_eq!(b.expired_micro, 6_500 * C);
    assert_eq!(b.consumed_micro, 3_500 * C);
    h.running.shutdown().await.unwrap();
}

/// GitHub Copilot Business: $19 per user with 300 premium requests each, then $0.04 a
/// request; a model multiplier (10x); tool calls the agent starts on its own are free.
/// One credit is one dollar here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copilot_seats_with_300_premium_requests_each_then_4_cents() {
    if skip_without_store("copilot_seats_with_300_premium_requests_each_then_4_cents") {
        return;
    }
    let h = start_harness().await;
    let mut a = AdminClient::connect(&h.url).await;
    a.tenant("acme").await;
    a.pack("acme", 1, C, "USD").await;
    let request = |mult| {
        Pricing::Requests(pb::RequestPrice {
            multiplier_permille: mult,
            agent_initiated_free: true,
        })
    };
    a.book(
        "acme",
        40_000,
        vec![
            model("gpt-4.1", request(1_000)),
            model("claude-opus", request(10_000)),
        ],
    )
    .await;
    a.plan(pb::Plan {
        tenant: "acme".into(),
        seats: 2,
        seat_price_micro: 19 * C,
        included_requests_per_seat: 300,
        overage_request_price_micro: 40_000,
        ..Default::default()
    })
    .await;
    let mut sc = Sidecar::connect(&h.url, "pod-1", SC_ACME, &["acme"]).await;
    sc.lease_wallet("acme", 100 * C).await;
    let human = |model, calls: u32, client| RecordInput {
        calls,
        initiator: Some(pb::Initiator::Human),
        ..call("acme", "coder", model, 2_000, client)
    };
    sc.post(
        1,
        &[
            // 500 requests at 1x, as one record of 500 calls.
            human("gpt-4.1", 500, 500 * 40_000),
            // 100 tool calls the agent started: free.
            RecordInput {
                calls: 100,
                initiator: Some(pb::Initiator::Agent),
                ..call("acme", "coder", "claude-opus", 9_000, 0)
            },
            // 20 requests at 10x: 200 requests.
            human("claude-opus", 20, 20 * 400_000),
        ],
    )
    .await;
    let s = a.statement("acme").await;
    // At list price: 700 requests at $0.04 = $28.
    assert_eq!((s.total_micro, s.calls), (28 * C, 620));
    let opus = line(&s.by_model, "claude-opus");
    assert_eq!((opus.calls, opus.amount_micro), (120, 8 * C));
    assert_eq!(opus.request_units_milli, 200_000);
    // What the plan bills: 2 seats ($38) with 600 requests included, 100 over at $0.04.
    assert_eq!(s.plan_bills.len(), 1);
    let bill = &s.plan_bills[0];
    assert_eq!(bill.seats, 2);
    assert_eq!(bill.seat_fees_micro, 38 * C);
    assert_eq!(bill.included_requests_milli, 600_000);
    assert_eq!(bill.overage_requests_milli, 100_000);
    assert_eq!(bill.request_overage_micro, 4 * C);
    assert_eq!(bill.charge_micro, 42 * C);
    assert_eq!(bill.charge_money_micro, 42 * C);
    assert_eq!(bill.list_price_micro, 28 * C);
    let b = a.balance("acme").await;
    assert_eq!(b.period_bill.unwrap().charge_micro, 42 * C);
    h.running.shutdown().await.unwrap();
}

/// Intercom Fin: $0.99 per resolution, the conversations themselves free, on a plan with a
/// consumption floor: below it the floor is billed, above it the resolutions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intercom_99_cents_per_resolution_over_a_consumption_floor() {
    if skip_without_store("intercom_99_cents_per_resolution_over_a_consumption_floor") {
        return;
    }
    let h = start_harness().await;
    let mut a = AdminClient::connect(&h.url).await;
    a.tenant("acme").await;
    a.pack("acme", 1, C, "USD").await;
    let outcome = |micro| {
        Pricing::Outcome(pb::OutcomePrice {
            per_outcome_micro: micro,
        })
    };
    a.book(
        "acme",
        0,
        vec![
            model("fin-chat", outcome(990_000)),
            model("fin-resolution", outcome(990_000)),
        ],
    )
    .await;
    a.plan(pb::Plan {
        tenant: "acme".into(),
        consumption_floor_micro: 50 * C,
        ..Default::default()
    })
    .await;
    let mut sc = Sidecar::connect(&h.url, "pod-1", SC_ACME, &["acme"]).await;
    sc.lease_wallet("acme", 200 * C).await;
    let chat = RecordInput {
        output_tokens: 300,
        ..call("acme", "fin", "fin-chat", 1_200, 0)
    };
    let resolved = RecordInput {
        outcomes: 1,
        ..call("acme", "fin", "fin-resolution", 0, 990_000)
    };
    // 30 conversations (free), each resolved later: $29.70, under the $50 floor.
    let mut recs = vec![chat.clone(); 30];
    recs.extend(vec![resolved.clone(); 30]);
    sc.post(1, &recs).await;
    let s = a.statement("acme").await;
    assert_eq!((s.total_micro, s.outcomes), (29_700_000, 30));
    assert_eq!(line(&s.by_model, "fin-chat").amount_micro, 0);
    assert_eq!(line(&s.by_model, "fin-chat").calls, 30);
    let bill = &s.plan_bills[0];
    assert_eq!(bill.floor_top_up_micro, 20_300_000);
    assert_eq!(bill.charge_micro, 50 * C);
    assert_eq!(bill.charge_money_micro, 50 * C);
    // 40 more: 70 resolutions, $69.30, past the floor.
    sc.post(2, &vec![resolved; 40]).await;
    let s = a.statement("acme").await;
    assert_eq!((s.total_micro, s.outcomes), (69_300_000, 70));
    assert_eq!(line(&s.by_agent, "fin").outcomes, 70);
    let bill = &s.plan_bills[0];
    assert_eq!(
        (bill.floor_top_up_micro, bill.charge_micro),
        (0, 69_300_000)
    );
    h.running.shutdown().await.unwrap();
}

/// Seats plus consumption (Salesforce-style): $125 per user per month, each seat bringing
/// 1,000 credits of usage; usage past the seats' credits billed at list price; credits
/// are $500 per 100,000, so a seat is 25,000 credits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seats_plus_consumption_bill_the_seats_and_the_usage_past_them() {
    if skip_without_store("seats_plus_consumption_bill_the_seats_and_the_usage_past_them") {
        return;
    }
    let h = start_harness().await;
    let mut a = AdminClient::connect(&h.url).await;
    a.tenant("acme").await;
    a.pack("acme", 100_000, 500 * C, "USD").await;
    a.book(
        "acme",
        0,
        vec![model(
            "agentforce",
            Pricing::Actions(pb::ActionPrice {
                tokens_per_action: 10_000,
                per_action_micro: 20 * C,
            }),
        )],
    )
    .await;
    a.plan(pb::Plan {
        tenant: "acme".into(),
        seats: 4,
        seat_price_micro: 25_000 * C,
        included_micro_per_seat: 1_000 * C,
        ..Default::default()
    })
    .await;
    let mut sc = Sidecar::connect(&h.url, "pod-1", SC_ACME, &["acme"]).await;
    sc.lease_wallet("acme", 6_000 * C).await;
    // 250 calls of 10,000 tokens: 250 actions, 5,000 credits.
    sc.post(
        1,
        &[RecordInput {
            calls: 250,
            ..call("acme", "sales-agent", "agentforce", 2_500_000, 5_000 * C)
        }],
    )
    .await;
    let s = a.statement("acme").await;
    assert_eq!(s.total_micro, 5_000 * C);
    let bill = &s.plan_bills[0];
    assert_eq!(bill.seat_fees_micro, 100_000 * C);
    assert_eq!(bill.included_micro, 4_000 * C);
    assert_eq!(bill.overage_micro, 1_000 * C);
    // 101,000 credits: $505.
    assert_eq!(bill.charge_micro, 101_000 * C);
    assert_eq!(bill.charge_money_micro, 505 * C);
    let b = a.balance("acme").await;
    assert_eq!(b.period_bill.unwrap().charge_money_micro, 505 * C);
    h.running.shutdown().await.unwrap();
}
