//! The pricing models of the market through the real path: an agent (this test process,
//! attached to the region with `tollgate-client`) reserves and commits, a `tollgate sidecar`
//! process drains its records and posts them signed, a `tollgate authority` process rates
//! them, and the statement read back over the admin API is checked to the micro-credit.
//!
//! The authority suite (`authority/tests/authority/pricing_models.rs`) checks the same
//! models with a simulated session and a clock it can move; the models that live in time
//! (HubSpot's monthly reset, Workday's annual refill) are checked there, since a real
//! authority process keeps real time. Here Workday's single pool is shared by agents of
//! two pods.

use std::path::Path;
use std::time::{Duration, Instant};

use tollgate_client::{Call, Gate, GateOptions, ReserveError, TaskSpec};
use tollgate_core::{Credits, Initiator, Usage};
use tollgate_proto::v1::admin_service_client::AdminServiceClient;
use tollgate_proto::v1::{self as pb, model_price::Pricing};
use tonic::transport::Channel;

use crate::support::*;

const C: u64 = CREDIT;

/// The tenant, its price book, and optionally a plan, a credit pack (bought `packs` times;
/// 0: it only prices credits in a currency), or a grant: the setup a finance team would
/// make with `tollgate ctl`. Grants pay before the plan: a plan's included allowance, floor
/// and overage bill the usage past every grant, so the plan tests buy no credits.
struct Setup {
    request_price_micro: u64,
    models: Vec<pb::ModelPrice>,
    plan: Option<pb::Plan>,
    pack: Option<(u64, u64, &'static str, u32)>,
    grant: Option<pb::Grant>,
}

/// Agentforce's action pricing: up to 10,000 tokens are one 20-credit action.
fn agentforce() -> pb::ModelPrice {
    model(
        "agentforce",
        Pricing::Actions(pb::ActionPrice {
            tokens_per_action: 10_000,
            per_action_micro: 20 * C,
        }),
    )
}

fn model(name: &str, pricing: Pricing) -> pb::ModelPrice {
    pb::ModelPrice {
        model: name.into(),
        pricing: Some(pricing),
        max_output_tokens: 0,
    }
}

async fn set_up(a: &mut AdminServiceClient<Channel>, s: Setup) {
    a.create_tenant(authed(pb::CreateTenantRequest {
        tenant: TENANT.into(),
        ..Default::default()
    }))
    .await
    .expect("tenant");
    a.set_price_book(authed(pb::SetPriceBookRequest {
        price_book: Some(pb::PriceBook {
            tenant: TENANT.into(),
            models: s.models,
            request_price_micro: s.request_price_micro,
            default_max_output_tokens: 1_000,
            ..Default::default()
        }),
    }))
    .await
    .expect("price book");
    if let Some(plan) = s.plan {
        a.set_plan(authed(pb::SetPlanRequest { plan: Some(plan) }))
            .await
            .expect("plan");
    }
    if let Some((credits, price_micro, currency, packs)) = s.pack {
        a.set_credit_pack(authed(pb::SetCreditPackRequest {
            pack: Some(pb::CreditPack {
                tenant: TENANT.into(),
                credits_micro: credits * C,
                price_micro,
                currency: currency.into(),
            }),
        }))
        .await
        .expect("pack");
        if packs == 0 {
            return set_grant(a, s.grant).await;
        }
        a.buy_credits(authed(pb::BuyCreditsRequest {
            tenant: TENANT.into(),
            packs,
            reference: "invoice-1".into(),
            expires_unix_ms: 0,
        }))
        .await
        .expect("buy credits");
    }
    set_grant(a, s.grant).await;
}

async fn set_grant(a: &mut AdminServiceClient<Channel>, grant: Option<pb::Grant>) {
    if let Some(g) = grant {
        a.add_grant(authed(pb::AddGrantRequest { grant: Some(g) }))
            .await
            .expect("grant");
    }
}

/// One pod: a sidecar on the test's authority, ready once its region knows `models`.
fn pod(dir: &Path, id: &str, authority: &str, models: &[&str]) -> Sidecar {
    let sc = Sidecar::start(dir, id, authority, &[]);
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(g) = Gate::attach(&sc.region)
            && g.tenant(TENANT).is_ok()
            && models.iter().all(|m| g.model(m).is_ok())
        {
            return sc;
        }
        assert!(Instant::now() < end, "sidecar {id} not ready within 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn agent(sc: &Sidecar, name: &str) -> Gate {
    Gate::attach_with(&sc.region, &GateOptions::new().agent(name)).expect("attach")
}

/// `f` until it is not refused, while the pod's first lease (or a larger one, or a task's
/// registration) is on its way: a liveness guard of 20 s, not a timing assertion.
fn retrying<T>(what: &str, mut f: impl FnMut() -> Result<T, ReserveError>) -> T {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        match f() {
            Ok(v) => return v,
            Err(e @ (ReserveError::Denied(_) | ReserveError::WouldWait)) => {
                assert!(
                    Instant::now() < end,
                    "{what}: still refused after 20 s: {e}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

fn reserve<'a>(gate: &'a Gate, call: &Call<'a>) -> tollgate_client::Reservation<'a> {
    retrying("reserve", || gate.reserve(call))
}

/// Stops the sidecars (every record posted) and reads the statement and balance.
fn settle(
    rt: &tokio::runtime::Runtime,
    a: &mut AdminServiceClient<Channel>,
    pods: Vec<Sidecar>,
) -> (pb::Statement, pb::Balance) {
    for mut sc in pods {
        assert!(
            sc.proc.term(Duration::from_secs(20)),
            "sidecar did not stop"
        );
    }
    rt.block_on(async { (statement(a).await, balance(a).await) })
}

fn line<'a>(lines: &'a [pb::StatementLine], key: &str) -> &'a pb::StatementLine {
    lines
        .iter()
        .find(|l| l.key == key)
        .unwrap_or_else(|| panic!("no line {key:?} in {lines:?}"))
}

fn start(
    dir: &Path,
    s: Setup,
) -> (
    Authority,
    tokio::runtime::Runtime,
    AdminServiceClient<Channel>,
) {
    let auth = Authority::start(&dir.join("authority"), 0);
    let rt = rt();
    let a = rt.block_on(async {
        let mut a = admin(&auth.url()).await;
        set_up(&mut a, s).await;
        a
    });
    (auth, rt, a)
}

/// Agentforce Flex Credits: $500 buys 100,000 credits; an action covers up to 10,000
/// tokens at 20 credits: 10,000 tokens are one action, 10,001 two, 20,001 three. Each
/// case is a named task of a named agent.
#[test]
fn agentforce_actions_through_agent_sidecar_and_authority() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (auth, rt, mut a) = start(
        dir.path(),
        Setup {
            request_price_micro: 0,
            models: vec![agentforce()],
            plan: None,
            pack: Some((100_000, 500 * C, "USD", 1)),
            grant: None,
        },
    );
    let sc = pod(dir.path(), "pod-a", &auth.url(), &["agentforce"]);
    {
        let gate = agent(&sc, "service-agent");
        let t = gate.tenant(TENANT).unwrap();
        let m = gate.model("agentforce").unwrap();
        let service = gate.feature("service").unwrap();
        for (case, tokens, credits) in [
            ("case-1", 10_000, 20 * C),
            ("case-2", 10_001, 40 * C),
            ("case-3", 20_001, 60 * C),
        ] {
            let task = gate
                .open_task(&TaskSpec::new(case).tenant(t).budget(Credits(100 * C)))
                .expect("open task");
            let call = Call::model(&m)
                .tenant(t)
                .feature(service)
                .task(&task)
                .input_tokens(tokens)
                .max_output_tokens(0);
            let charged = reserve(&gate, &call).commit(Usage::new(tokens, 0)).unwrap();
            assert_eq!(charged.0, credits, "the agent's own rating of {case}");
        }
    }
    let (s, b) = settle(&rt, &mut a, vec![sc]);
    assert_eq!((s.total_micro, s.calls), (120 * C, 3));
    assert_eq!(s.currency, "USD");
    // 120 credits at $500 per 100,000: $0.60; a 20-credit action is $0.10.
    assert_eq!(s.total_money_micro, 600_000);
    for (case, credits, dollars) in [
        ("case-1", 20 * C, 100_000),
        ("case-2", 40 * C, 200_000),
        ("case-3", 60 * C, 300_000),
    ] {
        let l = line(&s.by_task, case);
        assert_eq!((l.amount_micro, l.amount_money_micro), (credits, dollars));
        assert_eq!(l.agents, "service-agent");
    }
    assert_eq!(line(&s.by_agent, "service-agent").amount_micro, 120 * C);
    assert_eq!(line(&s.by_feature, "service").amount_micro, 120 * C);
    assert_eq!(b.consumed_micro, 120 * C);
    assert_eq!(b.consumed_money_micro, 600_000);
    assert_eq!(b.available_micro + b.held_micro, 99_880 * C);
}

/// GitHub Copilot Business: $19 per user with 300 premium requests each, then $0.04 a
/// request; a model multiplier (10x); tool calls the agent starts on its own are free.
/// One credit is one dollar.
#[test]
fn copilot_premium_requests_through_agent_sidecar_and_authority() {
    let dir = tempfile::tempdir().expect("tempdir");
    let request = |mult| {
        Pricing::Requests(pb::RequestPrice {
            multiplier_permille: mult,
            agent_initiated_free: true,
        })
    };
    let (auth, rt, mut a) = start(
        dir.path(),
        Setup {
            request_price_micro: 40_000,
            models: vec![
                model("gpt-4.1", request(1_000)),
                model("claude-opus", request(10_000)),
            ],
            plan: Some(pb::Plan {
                tenant: TENANT.into(),
                seats: 2,
                seat_price_micro: 19 * C,
                included_requests_per_seat: 300,
                overage_request_price_micro: 40_000,
                ..Default::default()
            }),
            pack: Some((1, C, "USD", 0)),
            grant: None,
        },
    );
    let sc = pod(
        dir.path(),
        "pod-a",
        &auth.url(),
        &["gpt-4.1", "claude-opus"],
    );
    {
        let gate = agent(&sc, "coder");
        let t = gate.tenant(TENANT).unwrap();
        let gpt = gate.model("gpt-4.1").unwrap();
        let opus = gate.model("claude-opus").unwrap();
        let human = |m| {
            Call::model(m)
                .tenant(t)
                .initiator(Initiator::Human)
                .input_tokens(2_000)
                .max_output_tokens(100)
        };
        let tool = Call::model(&opus)
            .tenant(t)
            .initiator(Initiator::Agent)
            .input_tokens(9_000)
            .max_output_tokens(100);
        let mut charged = 0;
        for _ in 0..500 {
            charged += reserve(&gate, &human(&gpt))
                .commit(Usage::new(2_000, 50))
                .unwrap()
                .0;
        }
        for _ in 0..100 {
            charged += reserve(&gate, &tool)
                .commit(Usage::new(9_000, 50))
                .unwrap()
                .0;
        }
        for _ in 0..20 {
            charged += reserve(&gate, &human(&opus))
                .commit(Usage::new(2_000, 50))
                .unwrap()
                .0;
        }
        assert_eq!(charged, 28 * C, "the agents' own rating");
    }
    let (s, b) = settle(&rt, &mut a, vec![sc]);
    // At list price: 700 requests at $0.04 = $28.
    assert_eq!((s.total_micro, s.calls), (28 * C, 620));
    let opus = line(&s.by_model, "claude-opus");
    assert_eq!((opus.calls, opus.amount_micro), (120, 8 * C));
    assert_eq!(opus.request_units_milli, 200_000);
    // What the plan bills: 2 seats ($38) with 600 requests included, 100 over at $0.04.
    assert_eq!(s.plan_bills.len(), 1);
    let bill = &s.plan_bills[0];
    assert_eq!((bill.seats, bill.seat_fees_micro), (2, 38 * C));
    assert_eq!(bill.included_requests_milli, 600_000);
    assert_eq!(bill.overage_requests_milli, 100_000);
    assert_eq!(bill.request_overage_micro, 4 * C);
    assert_eq!(
        (bill.charge_micro, bill.charge_money_micro),
        (42 * C, 42 * C)
    );
    assert_eq!(bill.list_price_micro, 28 * C);
    assert_eq!(b.period_bill.expect("period bill").charge_micro, 42 * C);
}

/// Intercom Fin: $0.99 per resolution, the conversations free, on a plan with a $50
/// consumption floor. Resolutions come later than the calls (reported on their own) or
/// with the call's commit.
#[test]
fn intercom_resolutions_through_agent_sidecar_and_authority() {
    let dir = tempfile::tempdir().expect("tempdir");
    let outcome = Pricing::Outcome(pb::OutcomePrice {
        per_outcome_micro: 990_000,
    });
    let (auth, rt, mut a) = start(
        dir.path(),
        Setup {
            request_price_micro: 0,
            models: vec![model("fin", outcome)],
            plan: Some(pb::Plan {
                tenant: TENANT.into(),
                consumption_floor_micro: 50 * C,
                ..Default::default()
            }),
            pack: Some((1, C, "USD", 0)),
            grant: None,
        },
    );
    let mut sc = pod(dir.path(), "pod-a", &auth.url(), &["fin"]);
    let gate = agent(&sc, "fin");
    let t = gate.tenant(TENANT).unwrap();
    let fin = gate.model("fin").unwrap();
    let chat = Call::model(&fin)
        .tenant(t)
        .input_tokens(1_200)
        .max_output_tokens(300);
    // 30 conversations (free), each resolved later: $29.70, under the $50 floor.
    for _ in 0..30 {
        let cost = reserve(&gate, &chat)
            .commit(Usage::new(1_200, 300))
            .unwrap();
        assert_eq!(cost.0, 0, "a conversation costs nothing");
    }
    for _ in 0..30 {
        assert_eq!(report_outcome(&gate, &chat), 990_000);
    }
    // Records reach the ledger once the sidecar drains and posts them (every few hundred
    // ms): wait for all 60, a liveness guard, not a timing assertion.
    let first = wait_for_calls(&rt, &mut a, 60);
    assert_eq!((first.total_micro, first.outcomes), (29_700_000, 30));
    assert_eq!(line(&first.by_model, "fin").calls, 60);
    let bill = &first.plan_bills[0];
    assert_eq!(bill.floor_top_up_micro, 20_300_000);
    assert_eq!(
        (bill.charge_micro, bill.charge_money_micro),
        (50 * C, 50 * C)
    );
    // 40 more, resolved in the call itself (reserved for it): 70 resolutions, $69.30,
    // past the floor.
    let resolving = chat.outcomes(1);
    for _ in 0..40 {
        let cost = reserve(&gate, &resolving)
            .commit_with_outcomes(Usage::new(1_200, 300), 1)
            .unwrap();
        assert_eq!(cost.0, 990_000);
    }
    drop(gate);
    assert!(sc.proc.term(Duration::from_secs(20)));
    let s = rt.block_on(statement(&mut a));
    assert_eq!((s.total_micro, s.outcomes), (69_300_000, 70));
    assert_eq!(line(&s.by_agent, "fin").outcomes, 70);
    let bill = &s.plan_bills[0];
    assert_eq!(
        (bill.floor_top_up_micro, bill.charge_micro),
        (0, 69_300_000)
    );
}

/// Reports one outcome of `call` later (retrying while the pod's lease grows to pay it).
fn report_outcome(gate: &Gate, call: &Call<'_>) -> u64 {
    retrying("report outcomes", || gate.report_outcomes(call, 1)).0
}

fn wait_for_calls(
    rt: &tokio::runtime::Runtime,
    a: &mut AdminServiceClient<Channel>,
    calls: u64,
) -> pb::Statement {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let s = rt.block_on(statement(a));
        if s.calls >= calls {
            return s;
        }
        assert!(
            Instant::now() < end,
            "{} of {calls} calls posted after 20 s",
            s.calls
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Seats plus consumption (Salesforce-style): $125 per user per month (25,000 credits at
/// $500 per 100,000), each seat bringing 1,000 credits of usage; usage past them billed.
#[test]
fn seats_plus_consumption_through_agent_sidecar_and_authority() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (auth, rt, mut a) = start(
        dir.path(),
        Setup {
            request_price_micro: 0,
            models: vec![agentforce()],
            plan: Some(pb::Plan {
                tenant: TENANT.into(),
                seats: 4,
                seat_price_micro: 25_000 * C,
                included_micro_per_seat: 1_000 * C,
                ..Default::default()
            }),
            pack: Some((100_000, 500 * C, "USD", 0)),
            grant: None,
        },
    );
    let sc = pod(dir.path(), "pod-a", &auth.url(), &["agentforce"]);
    {
        let gate = agent(&sc, "sales-agent");
        let t = gate.tenant(TENANT).unwrap();
        let m = gate.model("agentforce").unwrap();
        let call = Call::model(&m)
            .tenant(t)
            .input_tokens(10_000)
            .max_output_tokens(0);
        // 250 calls of 10,000 tokens: 250 actions, 5,000 credits.
        for _ in 0..250 {
            reserve(&gate, &call).commit(Usage::new(10_000, 0)).unwrap();
        }
    }
    let (s, b) = settle(&rt, &mut a, vec![sc]);
    assert_eq!((s.total_micro, s.calls), (5_000 * C, 250));
    let bill = &s.plan_bills[0];
    assert_eq!(bill.seat_fees_micro, 100_000 * C);
    assert_eq!(bill.included_micro, 4_000 * C);
    assert_eq!(bill.overage_micro, 1_000 * C);
    // 101,000 credits: $505.
    assert_eq!(
        (bill.charge_micro, bill.charge_money_micro),
        (101_000 * C, 505 * C)
    );
    assert_eq!(
        b.period_bill.expect("period bill").charge_money_micro,
        505 * C
    );
}

/// Workday: one annual pool of credits used by every agent, here agents of two pods.
#[test]
fn workday_one_annual_pool_used_by_agents_of_two_pods() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (auth, rt, mut a) = start(
        dir.path(),
        Setup {
            request_price_micro: 0,
            // 1,000 credits per million input tokens: 100,000 tokens are 100 credits.
            models: vec![model(
                "flex",
                Pricing::Tokens(pb::TokenPrice {
                    input_per_mtok_micro: 1_000 * C,
                    output_per_mtok_micro: 0,
                }),
            )],
            plan: None,
            pack: None,
            grant: Some(pb::Grant {
                tenant: TENANT.into(),
                kind: pb::GrantKind::Recurring as i32,
                amount_micro: 10_000 * C,
                reset: pb::ResetPeriod::Annual as i32,
                label: "annual-pool".into(),
                ..Default::default()
            }),
        },
    );
    let recruiting = pod(dir.path(), "pod-a", &auth.url(), &["flex"]);
    let payroll = pod(dir.path(), "pod-b", &auth.url(), &["flex"]);
    for (sc, name, calls) in [(&recruiting, "recruiter", 20), (&payroll, "payroll", 15)] {
        let gate = agent(sc, name);
        let t = gate.tenant(TENANT).unwrap();
        let m = gate.model("flex").unwrap();
        let call = Call::model(&m)
            .tenant(t)
            .input_tokens(100_000)
            .max_output_tokens(0);
        for _ in 0..calls {
            reserve(&gate, &call)
                .commit(Usage::new(100_000, 0))
                .unwrap();
        }
    }
    let (s, b) = settle(&rt, &mut a, vec![recruiting, payroll]);
    assert_eq!((s.total_micro, s.calls), (3_500 * C, 35));
    assert_eq!(line(&s.by_agent, "recruiter").amount_micro, 2_000 * C);
    assert_eq!(line(&s.by_agent, "payroll").amount_micro, 1_500 * C);
    assert_eq!(b.grants.len(), 1, "one pool");
    assert_eq!(b.grants[0].remaining_micro, 6_500 * C);
}
