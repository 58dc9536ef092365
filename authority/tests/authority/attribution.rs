//! Attribution, tasks, per-agent quotas, reported denials and the charging defects, through
//! the real gRPC service: who spent (agent names, instances, features, tasks), what they
//! got for it (outcomes, work units), overruns as they are, and what `tollgate ctl` shows.

use tollgate_proto::batch::RecordInput;
use tollgate_proto::v1::{self as pb, model_price::Pricing, session_down, session_up};

use super::common::*;

const C: u64 = 1_000_000;

async fn ctl(url: &str, args: &[&str]) -> String {
    super::common::ctl(url, args).await.unwrap()
}

/// A record of `agent` on instance `instance` working on `task`, `micro` input tokens
/// (one micro-credit each under `setup_tenant`'s book).
fn work<'a>(agent: &'a str, instance: &'a str, task: &'a str, micro: u64) -> RecordInput<'a> {
    RecordInput {
        agent_instance: instance,
        feature: "triage",
        task,
        ..call("acme", agent, MODEL, micro, micro)
    }
}

fn done<'a>(agent: &'a str, task: &'a str) -> RecordInput<'a> {
    RecordInput {
        work_units: 1,
        ..work(agent, "pod-1/7/lane0", task, 0)
    }
}

/// The overrun defect: with a 20-credit wallet, agents committed 21.30 credits; the
/// ledger's overrun held the 1.30, but statements said "overrun (not billed) 0.000000"
/// and balances showed none. Now they show it as it is, beside who spent what.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_name_agents_tasks_and_work_units_and_show_overruns_as_they_are() {
    if skip_without_store(
        "statements_name_agents_tasks_and_work_units_and_show_overruns_as_they_are",
    ) {
        return;
    }
    let h = start_harness().await;
    setup_tenant(&h.url, "acme", 20).await;
    let mut sc = Sidecar::connect(&h.url, "pod-1", SC_ACME, &["acme"]).await;
    sc.lease_wallet("acme", 20 * C).await;
    sc.post(
        1,
        &[
            work("support-bot", "pod-1/7/lane0", "ticket-1", 6 * C),
            work("support-bot", "pod-1/8/lane0", "ticket-1", 4 * C),
            done("support-bot", "ticket-1"),
            work("support-bot", "pod-1/7/lane0", "ticket-2", 5 * C),
            done("support-bot", "ticket-2"),
            work("billing-bot", "pod-1/9/lane1", "", 6_300_000),
        ],
    )
    .await;
    let s = statement(&h.url, "acme").await;
    assert_eq!(s.total_micro, 20 * C, "charged: the wallet");
    assert_eq!(s.overrun_micro, 1_300_000, "the overrun, as it is");
    assert_eq!((s.calls, s.work_units), (4, 2));
    let support = line(&s.by_agent, "support-bot");
    assert_eq!((support.amount_micro, support.work_units), (15 * C, 2));
    assert_eq!(support.credits_per_work_unit_micro, 7_500_000);
    let billing = line(&s.by_agent, "billing-bot");
    assert_eq!(billing.amount_micro + billing.overrun_micro, 6_300_000);
    assert_eq!(billing.overrun_micro, 1_300_000);
    let t1 = line(&s.by_task, "ticket-1");
    assert_eq!((t1.amount_micro, t1.calls, t1.work_units), (10 * C, 2, 1));
    assert_eq!(t1.agents, "support-bot");
    assert_eq!(
        s.by_task.len(),
        2,
        "records without a task are in no task line"
    );
    assert_eq!(line(&s.by_instance, "pod-1/8/lane0").amount_micro, 4 * C);
    assert_eq!(line(&s.by_feature, "triage").calls, 4);
    let b = balance(&h.url, "acme").await;
    assert_eq!(b.overrun_micro, 1_300_000);

    // And so does ctl.
    let out = ctl(&h.url, &["statement", "acme"]).await;
    for want in [
        "overrun (not billed) 1.300000",
        "agentic work units 2",
        "support-bot",
        "billing-bot",
        "ticket-1",
        "pod-1/8/lane0",
        "7.500000",
    ] {
        assert!(out.contains(want), "{want:?} not in:\n{out}");
    }
    let out = ctl(&h.url, &["balance", "acme"]).await;
    assert!(out.contains("overrun (not billed) 1.300000"), "{out}");
    h.running.shutdown().await.unwrap();
}

/// The unrateable-record defect: a record on a model the book does not price was charged
/// the client's own amount (here 0). Now: the book's dearest model, counted and logged;
/// a book that overflows on ordinary usage is refused; a pre-rated record (the agent's
/// `commit_credits`, no usage) is charged as stated instead of re-rated to 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrateable_and_pre_rated_records_are_charged_by_their_rules() {
    if skip_without_store("unrateable_and_pre_rated_records_are_charged_by_their_rules") {
        return;
    }
    let h = start_harness().await;
    setup_tenant(&h.url, "acme", 100).await;
    let mut a = AdminClient::connect(&h.url).await;
    let e =
        a.0.set_price_book(req(
            pb::SetPriceBookRequest {
                price_book: Some(pb::PriceBook {
                    tenant: "acme".into(),
                    models: vec![model(
                        "gold",
                        Pricing::Tokens(pb::TokenPrice {
                            input_per_mtok_micro: u64::MAX,
                            output_per_mtok_micro: 0,
                        }),
                    )],
                    ..Default::default()
                }),
            },
            Some(ADMIN),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message().contains("\"gold\"") && e.message().contains("overflows"),
        "{e:?}"
    );

    let mut sc = Sidecar::connect(&h.url, "pod-1", SC_ACME, &["acme"]).await;
    sc.lease_wallet("acme", 50 * C).await;
    // The book prices m1 at 1 micro an input token, 2 an output token: the dearest rating
    // of 1,000 in and 1,000 out is 3,000.
    let ack = sc
        .post(
            1,
            &[RecordInput {
                output_tokens: 1_000,
                ..call("acme", "bot", "retired-model", 1_000, 0)
            }],
        )
        .await;
    assert_eq!(ack.rated_micro, 3_000);
    let m = h.running.state.metrics.encode();
    assert!(
        m.contains("tollgate_authority_unrated_records_total 1"),
        "{m}"
    );
    assert!(
        m.contains("tollgate_authority_unrated_micro_total 3000"),
        "{m}"
    );
    // commit_credits on a model call: 2.5 credits stated, no tokens.
    let ack = sc
        .post(
            2,
            &[RecordInput {
                pre_rated: true,
                ..call("acme", "bot", MODEL, 0, 2_500_000)
            }],
        )
        .await;
    assert_eq!(ack.rated_micro, 2_500_000);
    let m = h.running.state.metrics.encode();
    assert!(
        m.contains("tollgate_authority_pre_rated_records_total 1"),
        "{m}"
    );
    h.running.shutdown().await.unwrap();
}

/// A quota on an agent by name is one window for every instance of it in every pod: the
/// leases of all sidecars together stay within it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_quota_is_one_window_for_every_pod() {
    if skip_without_store("an_agent_quota_is_one_window_for_every_pod") {
        return;
    }
    let h = start_harness().await;
    setup_tenant(&h.url, "acme", 100).await;
    let out = ctl(
        &h.url,
        &[
            "quota",
            "set",
            "acme",
            "bot-hourly",
            "--window",
            "hour",
            "--max",
            "5",
            "--agent",
            "support-bot",
        ],
    )
    .await;
    assert!(out.contains("acme/agent/support-bot/hour"), "{out}");
    let limit = pb::LimitKey::agent_window("acme", "support-bot", pb::Window::Hour);
    let mut one = Sidecar::connect(&h.url, "pod-1", SC_ACME, &["acme"]).await;
    let mut two = Sidecar::connect(&h.url, "pod-2", SC_BOTH, &["acme"]).await;
    let mut leases = one.lease_rounds(&[(limit.clone(), 4 * C)], 2).await;
    leases.extend(two.lease_rounds(&[(limit.clone(), 4 * C)], 2).await);
    let total = Sidecar::totals(leases)
        .get("acme/agent/support-bot/hour")
        .copied()
        .unwrap_or(0);
    assert_eq!(
        total,
        5 * C,
        "the whole window and no more, across both pods"
    );
    // Spent: the next ask is refused until the window rolls.
    two.demand(limit.clone(), C, 0).await;
    let r = two
        .next_matching(|m| match m {
            session_down::Msg::Refusal(r) => Some(r),
            _ => None,
        })
        .await;
    assert_eq!(r.reason, pb::LeaseRefusalReason::WindowSpent as i32);
    assert_eq!(r.limit, Some(limit));
    // Another agent's window is its own.
    let other = pb::LimitKey::agent_window("acme", "billing-bot", pb::Window::Hour);
    let l = two.lease_rounds(&[(other, 3 * C)], 1).await;
    assert_eq!(
        Sidecar::totals(l).get("acme/agent/billing-bot/hour"),
        Some(&(3 * C))
    );
    h.running.shutdown().await.unwrap();
}

fn task_open(task: &str, budget: u64, max_calls: u32) -> session_up::Msg {
    session_up::Msg::TaskOpen(pb::TaskOpen {
        tenant: "acme".into(),
        task: task.into(),
        budget_micro: budget,
        max_calls,
    })
}

async fn refusal_on(sc: &mut Sidecar, limit: &pb::LimitKey) -> pb::LeaseRefusal {
    sc.demand(limit.clone(), C, 0).await;
    sc.next_matching(|m| match m {
        session_down::Msg::Refusal(r) if r.limit.as_ref() == Some(limit) => Some(r),
        _ => None,
    })
    .await
}

async fn revoked(sc: &mut Sidecar, limit: &pb::LimitKey) -> pb::Revocation {
    sc.next_matching(|m| match m {
        session_down::Msg::Revocation(r) if r.limit.as_ref() == Some(limit) => Some(r),
        _ => None,
    })
    .await
}

/// A task: registered once (the first terms win, a conflicting registration is counted),
/// leased to several pods never past its budget, and closed by posted usage (its
/// `max_calls`, or its completion) after which its leases are revoked and nothing more is
/// leased; its spend is on the statement by task id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_are_leased_within_budget_across_pods_and_closed_by_posted_usage() {
    if skip_without_store("tasks_are_leased_within_budget_across_pods_and_closed_by_posted_usage") {
        return;
    }
    let h = start_harness().await;
    setup_tenant(&h.url, "acme", 100).await;
    let mut one = Sidecar::connect(&h.url, "pod-1", SC_ACME, &["acme"]).await;
    let mut two = Sidecar::connect(&h.url, "pod-2", SC_BOTH, &["acme"]).await;
    one.lease_wallet("acme", 30 * C).await;
    two.lease_wallet("acme", 30 * C).await;
    one.send(task_open("ticket-1", 5 * C, 3)).await;
    two.send(task_open("ticket-1", 5 * C, 3)).await;
    // A third registration with other terms: kept out, counted.
    two.send(task_open("ticket-1", 9 * C, 0)).await;
    two.sync().await;
    one.sync().await;
    let m = h.running.state.metrics.encode();
    assert!(
        m.contains("tollgate_authority_task_opens_total{result=\"created\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("tollgate_authority_task_opens_total{result=\"same\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("tollgate_authority_task_opens_total{result=\"conflict\"} 1"),
        "{m}"
    );

    let t1 = pb::LimitKey::task("acme", "ticket-1");
    let mut leases = one.lease_rounds(&[(t1.clone(), 4 * C)], 2).await;
    leases.extend(two.lease_rounds(&[(t1.clone(), 4 * C)], 2).await);
    let total = Sidecar::totals(leases)
        .get("acme/task/ticket-1")
        .copied()
        .unwrap_or(0);
    assert_eq!(total, 5 * C, "one budget for both pods, never past it");
    assert_eq!(
        refusal_on(&mut two, &t1).await.reason,
        pb::LeaseRefusalReason::TaskSpent as i32
    );

    // Three calls posted (two pods): max_calls reached, the task's leases are revoked.
    one.post(1, &[work("support-bot", "pod-1/7/lane0", "ticket-1", C)])
        .await;
    // The batch that closes it revokes the leases before it is acknowledged.
    let (_, seen) = two
        .post_seeing(
            1,
            &[
                work("support-bot", "pod-2/3/lane0", "ticket-1", C),
                work("support-bot", "pod-2/3/lane0", "ticket-1", C),
            ],
        )
        .await;
    assert!(
        seen.iter()
            .any(|m| matches!(m, session_down::Msg::Revocation(r)
            if r.limit.as_ref() == Some(&t1) && r.ceiling_micro == 0)),
        "{seen:?}"
    );
    assert_eq!(revoked(&mut one, &t1).await.ceiling_micro, 0);
    let m = h.running.state.metrics.encode();
    assert!(
        m.contains("tollgate_authority_tasks_closed_total{result=\"max_calls\"} 1"),
        "{m}"
    );

    // A task completed by its completion record leases nothing more either.
    let t2 = pb::LimitKey::task("acme", "ticket-2");
    one.send(task_open("ticket-2", 5 * C, 0)).await;
    assert!(!one.lease_rounds(&[(t2.clone(), 2 * C)], 1).await.is_empty());
    let (_, seen) = one
        .post_seeing(
            2,
            &[
                work("support-bot", "pod-1/7/lane0", "ticket-2", 2 * C),
                done("support-bot", "ticket-2"),
            ],
        )
        .await;
    assert!(
        seen.iter()
            .any(|m| matches!(m, session_down::Msg::Revocation(r)
            if r.limit.as_ref() == Some(&t2) && r.ceiling_micro == 0)),
        "{seen:?}"
    );
    assert_eq!(
        refusal_on(&mut one, &t2).await.reason,
        pb::LeaseRefusalReason::TaskSpent as i32
    );
    // A task nobody registered has no budget to lease.
    let t3 = pb::LimitKey::task("acme", "never-opened");
    assert_eq!(
        refusal_on(&mut one, &t3).await.reason,
        pb::LeaseRefusalReason::TaskSpent as i32
    );

    let s = statement(&h.url, "acme").await;
    let l1 = line(&s.by_task, "ticket-1");
    assert_eq!((l1.amount_micro, l1.calls), (3 * C, 3));
    let l2 = line(&s.by_task, "ticket-2");
    assert_eq!((l2.amount_micro, l2.calls, l2.work_units), (2 * C, 1, 1));
    let mut a = AdminClient::connect(&h.url).await;
    let tasks =
        a.0.list_tasks(req(
            pb::ListTasksRequest {
                tenant: "acme".into(),
                limit: 0,
            },
            Some(ADMIN),
        ))
        .await
        .unwrap()
        .into_inner()
        .tasks;
    let k1 = tasks.iter().find(|t| t.task == "ticket-1").unwrap();
    assert_eq!((k1.budget_micro, k1.max_calls, k1.conflicts), (5 * C, 3, 1));
    assert_eq!(
        (k1.calls, k1.spent_micro, k1.closed.as_str()),
        (3, 3 * C, "max_calls")
    );
    let k2 = tasks.iter().find(|t| t.task == "ticket-2").unwrap();
    assert_eq!((k2.work_units, k2.closed.as_str()), (1, "completed"));
    let out = ctl(&h.url, &["task", "list", "acme"]).await;
    assert!(
        out.contains("closed (max_calls), 1 conflicting registration(s)"),
        "{out}"
    );
    h.running.shutdown().await.unwrap();
}

/// Denials sidecars report are counted per limit and tier for the dashboards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reported_denials_are_counted_per_limit_and_tier() {
    if skip_without_store("reported_denials_are_counted_per_limit_and_tier") {
        return;
    }
    let h = start_harness().await;
    setup_tenant(&h.url, "acme", 10).await;
    let mut sc = Sidecar::connect(&h.url, "pod-1", SC_ACME, &["acme"]).await;
    let agent = pb::LimitKey::agent_window("acme", "support-bot", pb::Window::Hour);
    let report = |n: u64| {
        session_up::Msg::Demand(pb::DemandReport {
            demands: Vec::new(),
            denials: vec![
                pb::DenialCount {
                    limit: Some(agent.clone()),
                    tier: pb::Tier::Background as i32,
                    count: n,
                    tenant: "acme".into(),
                },
                pb::DenialCount {
                    limit: Some(pb::LimitKey::wallet("acme")),
                    tier: pb::Tier::Interactive as i32,
                    count: 1,
                    tenant: "acme".into(),
                },
                // No limit named (the lane ran dry): counted for the lane's tenant...
                pb::DenialCount {
                    limit: None,
                    tier: pb::Tier::Scheduler as i32,
                    count: 4,
                    tenant: "acme".into(),
                },
                // ...not without one (an older sidecar), nor for a tenant the sidecar
                // does not serve.
                pb::DenialCount {
                    limit: None,
                    tier: pb::Tier::Interactive as i32,
                    count: 5,
                    tenant: String::new(),
                },
                pb::DenialCount {
                    limit: None,
                    tier: pb::Tier::Interactive as i32,
                    count: 6,
                    tenant: "globex".into(),
                },
            ],
        })
    };
    sc.send(report(7)).await;
    sc.send(report(3)).await;
    sc.sync().await;
    let r = AdminClient::connect(&h.url)
        .await
        .0
        .recent_denials(req(
            pb::RecentDenialsRequest {
                tenant: "acme".into(),
                since_unix_ms: 0,
            },
            Some(READER_ACME),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.totals.len(), 3, "{:?}", r.totals);
    assert_eq!(r.totals[0].limit_key, "acme/agent/support-bot/hour");
    assert_eq!(r.totals[0].limit, Some(agent));
    assert_eq!(
        (r.totals[0].tier, r.totals[0].count),
        (pb::Tier::Background as i32, 10)
    );
    // The lane-ran-dry denials: the empty key, no limit.
    assert_eq!(
        (
            r.totals[1].limit_key.as_str(),
            r.totals[1].limit.as_ref(),
            r.totals[1].count
        ),
        ("", None, 8)
    );
    assert_eq!(r.totals[1].tier, pb::Tier::Scheduler as i32);
    assert_eq!(
        (r.totals[2].limit_key.as_str(), r.totals[2].count),
        ("acme/wallet", 2)
    );
    assert!(!r.minutes.is_empty());
    assert!(
        h.running
            .state
            .metrics
            .encode()
            .contains("tollgate_authority_denials_reported_total 20")
    );
    let out = ctl(&h.url, &["denials", "acme"]).await;
    assert!(
        out.contains("acme/agent/support-bot/hour") && out.contains("background"),
        "{out}"
    );
    h.running.shutdown().await.unwrap();
}
