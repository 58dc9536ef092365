//! Attribution through the ledger (agent name and instance, feature, task, outcomes, work
//! units), tasks, and the charging rules for records the book cannot rate, pre-rated
//! records and records standing for several calls. SQLite; the PostgreSQL store runs the
//! same writes through the store suite.

mod common;

use std::num::NonZeroU64;

use common::*;
use tollgate_core::{Credits, Initiator, ModelPrice, Plan, PriceBook, PriceBookSpec, Pricing};
use tollgate_ledger::audit::AuditEvent;
use tollgate_ledger::rating::UNRATEABLE_OVERFLOW_CHARGE;
use tollgate_ledger::{
    Funding, GrantKind, GrantSpec, HoldRequest, LedgerError, OverrunAllowance, TaskClosed,
    TaskOpened, TaskTerms, TenantConfig, UsageRecord,
};

fn book(models: Vec<(&str, Pricing)>, request_price: Credits) -> PriceBook {
    PriceBook::new(PriceBookSpec {
        version: 1,
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

/// Per token: 1 micro-credit an input token, 2 an output token.
fn tokens_1_2() -> Pricing {
    Pricing::PerToken {
        input_per_million: credits(1),
        output_per_million: credits(2),
    }
}

async fn funded(e: &Env, name: &str, b: &PriceBook, grant: u64) -> tollgate_ledger::TenantId {
    let t = tenant(name);
    e.ledger
        .create_tenant(&t, TenantConfig::default())
        .await
        .unwrap();
    e.ledger.set_price_book(&t, b).await.unwrap();
    if grant > 0 {
        e.ledger
            .grant(&t, GrantSpec::new(GrantKind::Purchased, credits(grant)))
            .await
            .unwrap();
    }
    t
}

fn call(
    t: &tollgate_ledger::TenantId,
    agent: &str,
    instance: &str,
    feature: &str,
    task: &str,
    input: u64,
) -> UsageRecord {
    UsageRecord {
        agent: agent.into(),
        agent_instance: instance.into(),
        feature: feature.into(),
        task: task.into(),
        ..record(t, "m", input, 0, Credits(input))
    }
}

fn completion(t: &tollgate_ledger::TenantId, agent: &str, task: &str) -> UsageRecord {
    UsageRecord {
        work_units: 1,
        ..call(t, agent, "pod-a/1/lane0", "", task, 0)
    }
}

#[tokio::test]
async fn postings_statements_and_the_audit_carry_names_tasks_and_work_units() {
    let e = env().await;
    let b = book(vec![("m", tokens_1_2())], Credits::ZERO);
    let t = funded(&e, "acme", &b, 100).await;
    let out = e
        .ledger
        .post_batch(&batch(
            "pod-a",
            1,
            vec![
                call(
                    &t,
                    "support-bot",
                    "pod-a/1/lane0",
                    "triage",
                    "ticket-1",
                    1_000,
                ),
                call(
                    &t,
                    "support-bot",
                    "pod-a/2/lane0",
                    "triage",
                    "ticket-1",
                    2_000,
                ),
                call(&t, "support-bot", "pod-a/1/lane0", "reply", "ticket-2", 500),
                call(&t, "billing-bot", "pod-a/3/lane1", "invoice", "", 4_000),
                completion(&t, "support-bot", "ticket-1"),
                // Another process completes the same task: one AWU, not two.
                UsageRecord {
                    agent_instance: "pod-a/2/lane0".into(),
                    ..completion(&t, "support-bot", "ticket-1")
                },
            ],
        ))
        .await
        .unwrap();
    let p = &out.tenants[0];
    assert_eq!(p.rated, Credits(7_500));
    assert_eq!(p.work_units, 1);
    assert_eq!(p.repeated_completions, 1);
    assert_eq!(p.tasks_closed, vec!["ticket-1".to_string()]);

    let s = e.ledger.statement(&t, 0, T0 + 10).await.unwrap();
    let by = |agent: &str, task: &str| {
        s.rows
            .iter()
            .filter(|r| r.agent == agent && r.task == task)
            .fold((Credits::ZERO, 0, 0), |(a, c, w), r| {
                (a.saturating_add(r.amount), c + r.records, w + r.work_units)
            })
    };
    assert_eq!(by("support-bot", "ticket-1"), (Credits(3_000), 2, 1));
    assert_eq!(by("support-bot", "ticket-2"), (Credits(500), 1, 0));
    assert_eq!(by("billing-bot", ""), (Credits(4_000), 1, 0));
    // Instances stay apart as detail.
    let instances: std::collections::BTreeSet<&str> = s
        .rows
        .iter()
        .filter(|r| r.agent == "support-bot")
        .map(|r| r.agent_instance.as_str())
        .collect();
    assert_eq!(
        instances,
        ["pod-a/1/lane0", "pod-a/2/lane0"].into_iter().collect()
    );
    // The completion records cost nothing: counted on a free posting, not as calls.
    assert!(
        s.rows
            .iter()
            .any(|r| r.funding == Funding::Free && r.work_units == 1 && r.records == 0)
    );

    // The task's row moved with the postings.
    let row = e.ledger.task(&t, "ticket-1").await.unwrap().unwrap();
    assert_eq!(
        (row.spent, row.calls, row.work_units),
        (Credits(3_000), 2, 1)
    );
    assert_eq!(row.completed_at, Some(T0));
    assert_eq!(row.closed(), Some(TaskClosed::Completed));
    assert_eq!(row.terms, None, "never registered: no terms");

    // The audit record names them too.
    let recs = e.ledger.audit_records(&t, 1, 100).await.unwrap();
    let usage = recs
        .iter()
        .find_map(|r| match r.event().unwrap() {
            AuditEvent::Usage { postings, .. } => Some(postings),
            _ => None,
        })
        .unwrap();
    assert!(usage.iter().any(|p| p.agent == "support-bot"
        && p.agent_instance == "pod-a/2/lane0"
        && p.task == "ticket-1"));
    assert!(usage.iter().any(|p| p.work_units == 1));
    assert!(e.ledger.verify_audit(None).await.unwrap().is_ok());

    // A later completion of the completed task counts no AWU either.
    let out = e
        .ledger
        .post_batch(&batch(
            "pod-a",
            2,
            vec![completion(&t, "support-bot", "ticket-1")],
        ))
        .await
        .unwrap();
    assert_eq!(
        (
            out.tenants[0].work_units,
            out.tenants[0].repeated_completions
        ),
        (0, 1)
    );
    assert!(out.tenants[0].tasks_closed.is_empty());
}

/// The sidecar sends a task's completion with no model: it is not an unrateable record
/// (charged at the dearest model, here a 0.04-credit request), it costs nothing.
#[tokio::test]
async fn a_completion_record_without_a_model_costs_nothing() {
    let e = env().await;
    let per_request = Pricing::PerRequest {
        multiplier_per_mille: 1_000,
        agent_initiated_free: false,
    };
    let b = book(
        vec![("m", tokens_1_2()), ("premium", per_request)],
        Credits(40_000),
    );
    let t = funded(&e, "acme", &b, 100).await;
    let out = e
        .ledger
        .post_batch(&batch(
            "pod-a",
            1,
            vec![UsageRecord {
                model: "".into(),
                ..completion(&t, "support-bot", "ticket-9")
            }],
        ))
        .await
        .unwrap();
    let p = &out.tenants[0];
    assert_eq!(p.rated, Credits::ZERO, "a work unit is not a request");
    assert_eq!(p.work_units, 1);
    assert_eq!(p.unrated_records, 0);
}

#[tokio::test]
async fn a_tasks_first_registration_sets_its_terms_and_posted_usage_closes_it() {
    let e = env().await;
    let b = book(vec![("m", tokens_1_2())], Credits::ZERO);
    let t = funded(&e, "acme", &b, 100).await;
    let terms = TaskTerms {
        budget: Credits(5_000),
        max_calls: Some(3),
    };
    let open = |terms| e.ledger.open_task(&t, "ticket-9", terms);
    assert_eq!(open(terms).await.unwrap(), TaskOpened::Created);
    assert_eq!(open(terms).await.unwrap(), TaskOpened::Same);
    let other = TaskTerms {
        budget: Credits(9_000),
        max_calls: None,
    };
    assert_eq!(
        open(other).await.unwrap(),
        TaskOpened::Conflict { kept: terms }
    );
    let row = e.ledger.task(&t, "ticket-9").await.unwrap().unwrap();
    assert_eq!((row.terms, row.conflicts), (Some(terms), 1));
    assert!(matches!(
        open(TaskTerms {
            budget: Credits::ZERO,
            max_calls: None
        })
        .await,
        Err(LedgerError::InvalidInput(_))
    ));
    assert!(matches!(
        e.ledger.open_task(&t, "", terms).await,
        Err(LedgerError::InvalidInput(_))
    ));

    // Two calls: open. The third reaches max_calls: closed by this batch.
    let post = |seq, n: usize| {
        let recs = (0..n)
            .map(|_| call(&t, "bot", "pod/1/lane0", "f", "ticket-9", 100))
            .collect();
        let b = batch("pod", seq, recs);
        let l = &e.ledger;
        async move { l.post_batch(&b).await }
    };
    assert!(post(1, 2).await.unwrap().tenants[0].tasks_closed.is_empty());
    assert_eq!(
        post(2, 1).await.unwrap().tenants[0].tasks_closed,
        vec!["ticket-9".to_string()]
    );
    let row = e.ledger.task(&t, "ticket-9").await.unwrap().unwrap();
    assert_eq!((row.calls, row.spent), (3, Credits(300)));
    assert_eq!(row.closed(), Some(TaskClosed::MaxCalls));
    // Already closed: not listed again.
    assert!(post(3, 1).await.unwrap().tenants[0].tasks_closed.is_empty());

    // A budget reached by spend closes a task too; a task registered after usage named
    // it takes the registration's terms and keeps the counts.
    let big = batch(
        "pod",
        4,
        vec![call(&t, "bot", "pod/1/lane0", "f", "ticket-10", 6_000)],
    );
    let out = e.ledger.post_batch(&big).await.unwrap();
    assert!(out.tenants[0].tasks_closed.is_empty(), "no terms yet");
    assert_eq!(
        e.ledger.open_task(&t, "ticket-10", terms).await.unwrap(),
        TaskOpened::Created
    );
    let row = e.ledger.task(&t, "ticket-10").await.unwrap().unwrap();
    assert_eq!(
        (row.spent, row.closed()),
        (Credits(6_000), Some(TaskClosed::Budget))
    );
    let listed = e.ledger.tasks(&t, 10).await.unwrap();
    assert_eq!(listed.len(), 2);
}

#[tokio::test]
async fn a_record_the_book_cannot_rate_is_charged_at_its_dearest_model_not_the_clients_word() {
    let e = env().await;
    let b = book(
        vec![
            ("cheap", tokens_1_2()),
            (
                "action",
                Pricing::PerAction {
                    tokens_per_action: NonZeroU64::new(10_000).unwrap(),
                    price_per_action: credits(20),
                },
            ),
        ],
        Credits::ZERO,
    );
    let t = funded(&e, "acme", &b, 1_000).await;
    // A model the book does not price, claimed free by the client: the most the book
    // charges for 12,000 tokens is 2 actions = 40 credits.
    let unknown = UsageRecord {
        model: "gone-model".into(),
        ..record(&t, "x", 12_000, 0, Credits::ZERO)
    };
    let out = e
        .ledger
        .post_batch(&batch("pod", 1, vec![unknown]))
        .await
        .unwrap();
    let p = &out.tenants[0];
    assert_eq!(p.rated, credits(40), "not the client's 0");
    assert_eq!((p.unrated_records, p.unrated_amount), (1, credits(40)));
    // A client that said more is charged what it said.
    let said_more = UsageRecord {
        model: "gone-model".into(),
        ..record(&t, "x", 12_000, 0, credits(45))
    };
    let out = e
        .ledger
        .post_batch(&batch("pod", 2, vec![said_more]))
        .await
        .unwrap();
    assert_eq!(out.tenants[0].rated, credits(45));
    // The audit record says so.
    let recs = e.ledger.audit_records(&t, 1, 100).await.unwrap();
    assert!(recs.iter().any(|r| matches!(
        r.event().unwrap(),
        AuditEvent::Usage {
            unrated_records: 1,
            unrated_amount,
            ..
        } if unrated_amount == credits(40)
    )));
}

#[tokio::test]
async fn an_overflowing_record_is_charged_past_any_lease_and_the_rest_is_suspect() {
    let e = env().await;
    let b = book(vec![("m", tokens_1_2())], Credits::ZERO);
    let t = tenant("acme");
    e.ledger
        .create_tenant(&t, TenantConfig::default())
        .await
        .unwrap();
    e.ledger.set_price_book(&t, &b).await.unwrap();
    e.ledger
        .grant(&t, GrantSpec::new(GrantKind::Purchased, credits(1_000)))
        .await
        .unwrap();
    let ledger = tollgate_ledger::Ledger::new(
        e.store.clone(),
        std::sync::Arc::new(e.clock.clone()),
        signer(),
    )
    .with_overrun_allowance(OverrunAllowance {
        absolute: credits(1),
        fraction_ppm: 100_000,
    });
    ledger
        .hold(
            &t,
            HoldRequest {
                owner: "pod".into(),
                amount: credits(10),
                min_amount: credits(10),
                ttl_secs: 60,
            },
        )
        .await
        .unwrap();
    // u64::MAX output tokens at 2 micro each: the charge overflows. The client says 0.
    let absurd = record(&t, "m", 0, u64::MAX, Credits::ZERO);
    let out = ledger
        .post_batch(&batch("pod", 1, vec![absurd]))
        .await
        .unwrap();
    let p = &out.tenants[0];
    assert_eq!(p.rated, UNRATEABLE_OVERFLOW_CHARGE);
    assert_eq!(p.unrated_records, 1);
    // The hold (10) and the allowance (1 + 10% of 10) are charged; the rest is suspect.
    assert_eq!(p.from_holds, credits(10));
    assert_eq!(p.from_grants, credits(2));
    assert_eq!(
        p.suspect,
        UNRATEABLE_OVERFLOW_CHARGE.saturating_sub(credits(12))
    );
}

#[tokio::test]
async fn a_book_whose_prices_overflow_on_ordinary_usage_is_refused() {
    let e = env().await;
    let t = tenant("acme");
    e.ledger
        .create_tenant(&t, TenantConfig::default())
        .await
        .unwrap();
    let absurd = book(
        vec![(
            "gold",
            Pricing::PerToken {
                input_per_million: Credits::MAX,
                output_per_million: Credits::ZERO,
            },
        )],
        Credits::ZERO,
    );
    let err = e.ledger.set_price_book(&t, &absurd).await.unwrap_err();
    assert!(
        matches!(&err, LedgerError::InvalidInput(m) if m.contains("\"gold\"") && m.contains("overflows")),
        "{err}"
    );
    assert!(e.ledger.price_book(&t).await.unwrap().is_none());
}

#[tokio::test]
async fn a_per_request_record_of_n_calls_is_n_requests() {
    let e = env().await;
    let b = book(
        vec![(
            "premium",
            Pricing::PerRequest {
                multiplier_per_mille: 1_000,
                agent_initiated_free: true,
            },
        )],
        Credits(40_000),
    );
    let t = funded(&e, "acme", &b, 100).await;
    let rec = UsageRecord {
        calls: 25,
        ..record(&t, "premium", 10, 10, Credits(40_000))
    };
    let out = e
        .ledger
        .post_batch(&batch("pod", 1, vec![rec.clone()]))
        .await
        .unwrap();
    assert_eq!(out.tenants[0].rated, Credits(25 * 40_000));
    // Agent-initiated: free however many, and still counted as calls.
    let free = UsageRecord {
        initiator: Initiator::Agent,
        ..rec
    };
    let out = e
        .ledger
        .post_batch(&batch("pod", 2, vec![free]))
        .await
        .unwrap();
    assert_eq!(out.tenants[0].rated, Credits::ZERO);
    let s = e.ledger.statement(&t, 0, T0 + 10).await.unwrap();
    let calls: u64 = s.rows.iter().map(|r| r.records).sum();
    let units: u64 = s.rows.iter().map(|r| r.request_units_milli).sum();
    assert_eq!((calls, units), (50, 25_000));
}

#[tokio::test]
async fn a_pre_rated_record_is_charged_its_stated_amount() {
    let e = env().await;
    let b = book(vec![("m", tokens_1_2())], Credits::ZERO);
    let t = funded(&e, "acme", &b, 100).await;
    // commit_credits on a model call: no usage, 3 credits stated. Re-rating its 0 tokens
    // would bill nothing.
    let stated = UsageRecord {
        pre_rated: true,
        ..record(&t, "m", 0, 0, credits(3))
    };
    // Stated with usage on a priced model: at least the book's rating (5 credits).
    let with_usage = UsageRecord {
        pre_rated: true,
        ..record(&t, "m", 5_000_000, 0, credits(1))
    };
    // A sidecar's aggregate of calls whose detail was lost: its exact amount.
    let aggregate = UsageRecord {
        aggregate: true,
        calls: 7,
        model: "".into(),
        ..record(&t, "m", 0, 0, Credits(1_234))
    };
    let out = e
        .ledger
        .post_batch(&batch("pod", 1, vec![stated, with_usage, aggregate]))
        .await
        .unwrap();
    let p = &out.tenants[0];
    assert_eq!(p.rated, credits(3 + 5).saturating_add(Credits(1_234)));
    assert_eq!((p.pre_rated_records, p.unrated_records), (3, 0));
    let calls: u64 = e
        .ledger
        .statement(&t, 0, T0 + 10)
        .await
        .unwrap()
        .rows
        .iter()
        .map(|r| r.records)
        .sum();
    assert_eq!(calls, 9);
}

#[tokio::test]
async fn statements_bill_each_month_as_the_plan_bills_it_seats_included() {
    let e = env().await;
    let b = book(
        vec![(
            "premium",
            Pricing::PerRequest {
                multiplier_per_mille: 1_000,
                agent_initiated_free: true,
            },
        )],
        Credits(40_000),
    );
    let t = tenant("acme");
    // Copilot Business: 2 seats at 19 credits ($19) with 300 premium requests each, then
    // 0.04 each.
    let plan = Plan {
        seats: 2,
        seat_price: credits(19),
        included_requests_per_seat: 300,
        overage_request_price: Credits(40_000),
        ..Plan::default()
    };
    e.ledger
        .create_tenant(
            &t,
            TenantConfig {
                plan: Some(plan),
                ..TenantConfig::default()
            },
        )
        .await
        .unwrap();
    e.ledger.set_price_book(&t, &b).await.unwrap();
    let rec = UsageRecord {
        calls: 650,
        ..record(&t, "premium", 10, 10, Credits(650 * 40_000))
    };
    e.ledger
        .post_batch(&batch("pod", 1, vec![rec]))
        .await
        .unwrap();
    let s = e.ledger.statement(&t, 0, T0 + 10).await.unwrap();
    assert_eq!(s.plan_bills.len(), 1);
    let m = &s.plan_bills[0];
    assert_eq!(m.usage.request_units_milli, 650_000);
    assert!(m.open);
    // 600 included, 50 at 0.04 = 2 credits, plus 38 of seats: 40 credits, while the
    // plan-funded usage at list price is 26 credits.
    assert_eq!(m.bill.seat_fees, credits(38));
    assert_eq!(m.bill.charge, credits(40));
    assert_eq!(s.plan_funded, credits(26));
    // The balance's bill of the period agrees with the statement's.
    let bal = e.ledger.balance(&t).await.unwrap();
    assert_eq!(bal.period_bill, Some(m.bill));
}
