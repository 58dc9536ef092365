//! Leases never exceed what the wallet and every window allow, however many sidecars ask
//! at once.

use tollgate_proto::v1::{self as pb};

use super::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sidecars_never_lease_past_the_wallet_or_a_window() {
    if skip_without_store("concurrent_sidecars_never_lease_past_the_wallet_or_a_window") {
        return;
    }
    let h = start_harness().await;
    // 10 credits in the wallet; a tenant-wide quota of 3 credits per hour.
    setup_tenant(&h.url, "acme", 10).await;
    set_quota(
        &h.url,
        "hourly",
        pb::LimitKey::tenant_window("acme", pb::Window::Hour),
        3_000_000,
    )
    .await;

    let mut sidecars = Vec::new();
    for i in 0..4 {
        sidecars.push(Sidecar::connect(&h.url, &format!("pod-{i}"), SC_ACME, &["acme"]).await);
    }
    let wallet = pb::LimitKey::wallet("acme");
    let hourly = pb::LimitKey::tenant_window("acme", pb::Window::Hour);
    // Every sidecar asks for far more than there is, three rounds, all at once.
    let mut tasks = Vec::new();
    for mut sc in sidecars {
        let (wallet, hourly) = (wallet.clone(), hourly.clone());
        tasks.push(tokio::spawn(async move {
            sc.lease_rounds(&[(wallet, 8_000_000), (hourly, 2_000_000)], 3)
                .await
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let n = all.len();
    let per_limit = Sidecar::totals(all);
    assert!(n > 0, "some leases were granted");
    let wallet_total = per_limit.get("acme/wallet").copied().unwrap_or(0);
    let hourly_total = per_limit.get("acme/hour").copied().unwrap_or(0);
    assert!(
        wallet_total > 0 && wallet_total <= 10_000_000,
        "wallet leases {wallet_total}"
    );
    assert!(
        hourly_total > 0 && hourly_total <= 3_000_000,
        "window leases {hourly_total}"
    );
    let b = balance(&h.url, "acme").await;
    assert_eq!(b.held_micro, wallet_total, "every wallet lease is one hold");
    assert_eq!(b.available_micro + b.held_micro, 10_000_000);
    h.running.shutdown().await.unwrap();
}

/// A window lease's unspent credits handed back when it expires go back to the window
/// (the sidecar's closing return arrives after the expiry; the lease is kept for the
/// settle grace so it still counts), and what it spent stays counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_window_lease_returns_its_unspent_credits_to_the_window() {
    if skip_without_store("an_expired_window_lease_returns_its_unspent_credits_to_the_window") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path(), 0);
    opts.config.leases.ttl_secs = 1;
    opts.config.leases.settle_grace_secs = 10;
    let running = tollgate_authority::server::start(opts).await.unwrap();
    let url = format!("http://{}", running.grpc_addr);
    setup_tenant(&url, "acme", 100).await;
    let hourly = pb::LimitKey::tenant_window("acme", pb::Window::Hour);
    set_quota(&url, "hourly", hourly.clone(), 3_000_000).await;
    let mut sc = Sidecar::connect(&url, "pod-1", SC_ACME, &["acme"]).await;
    let first = Sidecar::totals(sc.lease_rounds(&[(hourly.clone(), 3_000_000)], 1).await);
    assert_eq!(first.get("acme/hour"), Some(&3_000_000));
    let lease_id = {
        let t = running.state.lease_table();
        t.of_sidecar("pod-1")[0].lease_id.clone()
    };
    // Past the expiry and at least one settlement pass: 1 credit spent, 2 handed back.
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
    sc.send(pb::session_up::Msg::LeaseReturn(pb::LeaseReturn {
        lease_id,
        amount_micro: 2_000_000,
        close: true,
        through_seq: 0,
    }))
    .await;
    let again = Sidecar::totals(sc.lease_rounds(&[(hourly, 3_000_000)], 1).await);
    assert_eq!(
        again.get("acme/hour"),
        Some(&2_000_000),
        "the 2 credits handed back are leased again; the 1 spent stays counted"
    );
    running.shutdown().await.unwrap();
}

/// Credits a sidecar hands back from a wallet lease are free for others at once: the
/// hold behind the lease shrinks by that much and stays open for the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wallet_lease_returned_in_part_frees_those_credits_at_once() {
    if skip_without_store("a_wallet_lease_returned_in_part_frees_those_credits_at_once") {
        return;
    }
    let h = start_harness().await;
    setup_tenant(&h.url, "acme", 10).await;
    let mut sc = Sidecar::connect(&h.url, "pod-1", SC_ACME, &["acme"]).await;
    sc.demand(pb::LimitKey::wallet("acme"), 5_000_000, 0).await;
    let lease = sc.next_grant().await;
    assert_eq!(lease.amount_micro, 5_000_000);
    sc.send(pb::session_up::Msg::LeaseReturn(pb::LeaseReturn {
        lease_id: lease.lease_id.clone(),
        amount_micro: 2_000_000,
        close: false,
        through_seq: 0,
    }))
    .await;
    // The heartbeat's echo orders this after the return's handling.
    sc.lease_rounds(&[], 1).await;
    let b = balance(&h.url, "acme").await;
    assert_eq!(
        (b.available_micro, b.held_micro),
        (7_000_000, 3_000_000),
        "{b:?}"
    );
    // Another sidecar can lease what came back now.
    let mut other = Sidecar::connect(&h.url, "pod-2", SC_ACME, &["acme"]).await;
    let got = Sidecar::totals(
        other
            .lease_rounds(&[(pb::LimitKey::wallet("acme"), 7_000_000)], 1)
            .await,
    );
    assert_eq!(got.get("acme/wallet"), Some(&7_000_000));
    h.running.shutdown().await.unwrap();
}

/// A shadow quota denies nothing: its window's spend and whether it would have denied are
/// measured and exported instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_quota_is_measured_not_enforced() {
    if skip_without_store("a_shadow_quota_is_measured_not_enforced") {
        return;
    }
    let h = start_harness().await;
    setup_tenant(&h.url, "acme", 10).await;
    let hourly = pb::LimitKey::tenant_window("acme", pb::Window::Hour);
    admin(&h.url)
        .await
        .set_quota(req(
            pb::SetQuotaRequest {
                rule: Some(pb::QuotaRule {
                    id: "soft".into(),
                    limit: Some(hourly.clone()),
                    max_micro: 500_000,
                    shadow: true,
                }),
            },
            Some(ADMIN),
        ))
        .await
        .unwrap();
    let mut sc = Sidecar::connect(&h.url, "pod-1", SC_ACME, &["acme"]).await;
    // Not enforced: a lease on the hourly limit is not bounded by the shadow maximum.
    let leased = Sidecar::totals(sc.lease_rounds(&[(hourly, 2_000_000)], 1).await);
    assert_eq!(leased.get("acme/hour"), Some(&2_000_000));
    // 0.6 credits spent this hour, past the shadow 0.5.
    sc.send(pb::session_up::Msg::Batch(sc.batch(1, "acme", 6000)))
        .await;
    assert_eq!(sc.next_ack().await.status, pb::AckStatus::Accepted as i32);
    let want = "tollgate_authority_shadow_exceeded_total{tenant=\"acme\",rule=\"soft\"} 1";
    let mut m = String::new();
    for _ in 0..100 {
        m = h.running.state.metrics.encode();
        if m.contains(want) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(m.contains(want), "{m}");
    assert!(
        m.contains("tollgate_authority_shadow_used_micro{tenant=\"acme\",rule=\"soft\"} 600000"),
        "{m}"
    );
    h.running.shutdown().await.unwrap();
}

/// Lease decisions take turns per limit, not across limits: while one tenant's wallet
/// decision is inside its critical section (its key's lock held), another tenant's grant
/// goes through, and the first is granted as soon as its lock is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenants_grant_does_not_wait_for_anothers() {
    if skip_without_store("one_tenants_grant_does_not_wait_for_anothers") {
        return;
    }
    use tollgate_authority::lease::Demand;
    use tollgate_authority::leasing::grant_for;

    let h = start_harness().await;
    setup_tenant(&h.url, "acme", 10).await;
    setup_tenant(&h.url, "globex", 10).await;
    let state = h.running.state.clone();
    let (acme, globex) = (pb::LimitKey::wallet("acme"), pb::LimitKey::wallet("globex"));
    for (limit, sid) in [(&acme, "sc-a"), (&globex, "sc-g")] {
        state.lease_table().set_demand(
            &limit.canonical(),
            sid,
            Demand {
                held: 0,
                desired: 2_000_000,
                burn_per_sec: 0,
                at_ms: tollgate_authority::server::now_ms(),
            },
        );
    }
    let granted = |m: Option<Result<pb::SessionDown, tonic::Status>>| match m {
        Some(Ok(pb::SessionDown {
            msg: Some(pb::session_down::Msg::Grant(g)),
        })) => g.lease.unwrap().amount_micro,
        other => panic!("expected a grant, got {other:?}"),
    };

    let acme_key = acme.canonical();
    let held = state.grant_locks.lock(&acme_key).await;
    let (tx_a, mut rx_a) = tokio::sync::mpsc::channel(4);
    let s = state.clone();
    let acme_grant = tokio::spawn(async move { grant_for(&s, "sc-a", &acme, &tx_a).await });

    let (tx_g, mut rx_g) = tokio::sync::mpsc::channel(4);
    grant_for(&state, "sc-g", &globex, &tx_g).await;
    assert_eq!(granted(rx_g.try_recv().ok()), 2_000_000);
    // acme's decision cannot have run: its key is still locked.
    assert!(rx_a.try_recv().is_err());
    assert!(!acme_grant.is_finished());

    drop(held);
    acme_grant.await.unwrap();
    assert_eq!(granted(rx_a.recv().await), 2_000_000);
    // Both locks were dropped with their last holder.
    assert!(state.grant_locks.is_empty());
}

/// A demand nothing of the limit can serve (for any sidecar) is answered with a refusal
/// naming why and until when, so the sidecar denies its agents at once instead of letting
/// them wait for a refill that is not coming.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demand_nothing_can_serve_is_refused_with_the_reason_and_the_time() {
    if skip_without_store("a_demand_nothing_can_serve_is_refused_with_the_reason_and_the_time") {
        return;
    }
    let h = start_harness().await;
    setup_tenant(&h.url, "acme", 2).await;
    let hourly = pb::LimitKey::tenant_window("acme", pb::Window::Hour);
    set_quota(&h.url, "hourly", hourly.clone(), 1_000_000).await;
    let wallet = pb::LimitKey::wallet("acme");
    let mut sc = Sidecar::connect(&h.url, "pod-1", SC_ACME, &["acme"]).await;
    let refusal = |m| match m {
        pb::session_down::Msg::Refusal(r) => Some(r),
        _ => None,
    };
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    };

    // The wallet: all of it leased, then asked for more.
    sc.demand(wallet.clone(), 2_000_000, 0).await;
    assert_eq!(sc.next_grant().await.amount_micro, 2_000_000);
    let before = now_ms();
    sc.demand(wallet.clone(), 1_000_000, 2_000_000).await;
    let r = sc.next_matching(refusal).await;
    assert_eq!(
        r.limit.as_ref().map(pb::LimitKey::canonical).as_deref(),
        Some("acme/wallet")
    );
    assert_eq!(r.reason, pb::LeaseRefusalReason::WalletDry as i32, "{r:?}");
    let ttl_ms = h.running.state.lease_cfg.ttl_secs * 1000;
    assert!(
        r.retry_unix_ms >= before + ttl_ms && r.retry_unix_ms <= now_ms() + ttl_ms,
        "a wallet is asked again after a lease ttl: {r:?}"
    );

    // The window: its quota claimed, then asked for more: until the hour rolls.
    sc.demand(hourly.clone(), 1_000_000, 0).await;
    assert_eq!(sc.next_grant().await.amount_micro, 1_000_000);
    sc.demand(hourly.clone(), 1_000_000, 1_000_000).await;
    let r = sc.next_matching(refusal).await;
    assert_eq!(
        r.reason,
        pb::LeaseRefusalReason::WindowSpent as i32,
        "{r:?}"
    );
    assert_eq!(r.retry_unix_ms % 3_600_000, 0, "the end of the hour: {r:?}");
    assert!(
        r.retry_unix_ms > before && r.retry_unix_ms <= now_ms() + 3_600_000,
        "{r:?}"
    );

    // A plan whose hard cap allows one credit of usage past the grants: the cap binds.
    let mut a = admin(&h.url).await;
    a.set_plan(req(
        pb::SetPlanRequest {
            plan: Some(pb::Plan {
                tenant: "acme".into(),
                hard_cap_micro: 1_000_000,
                ..Default::default()
            }),
        },
        Some(ADMIN),
    ))
    .await
    .unwrap();
    // The plan funds usage past the grants up to its cap: one credit more, then nothing.
    sc.demand(wallet.clone(), 1_000_000, 2_000_000).await;
    assert_eq!(sc.next_grant().await.amount_micro, 1_000_000);
    sc.demand(wallet, 1_000_000, 3_000_000).await;
    let r = sc.next_matching(refusal).await;
    assert_eq!(r.reason, pb::LeaseRefusalReason::HardCap as i32, "{r:?}");
    assert!(
        h.running.state.metrics.encode().contains(
            "tollgate_authority_lease_refusals_total{result=\"LEASE_REFUSAL_REASON_HARD_CAP\"} 1"
        ),
        "counted by reason"
    );
    h.running.shutdown().await.unwrap();
}
