//! Two authorities on one PostgreSQL database (each with its own connection pool, lease
//! table and caches), serving sidecars at the same time.

use std::time::Duration;

use tollgate_authority::server::{Running, start};
use tollgate_proto::v1::{self as pb, session_up};

use super::common::*;

/// Two servers on the same schema (the same `dir`).
async fn two_replicas() -> (tempfile::TempDir, Running, Running) {
    let dir = tempfile::tempdir().unwrap();
    let a = start(options(dir.path(), 0)).await.unwrap();
    let b = start(options(dir.path(), 0)).await.unwrap();
    (dir, a, b)
}

fn url(r: &Running) -> String {
    format!("http://{}", r.grpc_addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_resent_or_raced_to_the_other_replica_is_posted_once() {
    if skip_without_store("a_batch_resent_or_raced_to_the_other_replica_is_posted_once") {
        return;
    }
    let (_dir, ra, rb) = two_replicas().await;
    let (ua, ub) = (url(&ra), url(&rb));
    setup_tenant(&ua, "acme", 1000).await;

    // Batch 1 acknowledged by replica A; the sidecar then moves to B and re-sends it.
    let mut on_a = Sidecar::connect(&ua, "pod-1", SC_ACME, &["acme"]).await;
    let batch1 = on_a.batch(1, "acme", 100);
    on_a.send(session_up::Msg::Batch(batch1.clone())).await;
    assert_eq!(on_a.next_ack().await.status, pb::AckStatus::Accepted as i32);
    drop(on_a);
    let mut on_b = Sidecar::connect(&ub, "pod-1", SC_ACME, &["acme"]).await;
    assert_eq!(
        on_b.registered.durable_through_seq, 1,
        "B learns from the database what A made durable"
    );
    on_b.send(session_up::Msg::Batch(batch1)).await;
    let ack = on_b.next_ack().await;
    assert_eq!(ack.status, pb::AckStatus::Duplicate as i32, "{ack:?}");

    // Batch 2 raced to both replicas at once (two sessions of the same sidecar).
    let on_a = Sidecar::connect(&ua, "pod-1", SC_ACME, &["acme"]).await;
    let batch2 = on_b.batch(2, "acme", 50);
    let mut on_a = on_a;
    on_a.send(session_up::Msg::Batch(batch2.clone())).await;
    on_b.send(session_up::Msg::Batch(batch2)).await;
    let (x, y) = tokio::join!(on_a.next_ack(), on_b.next_ack());
    let mut statuses = [x.status, y.status];
    statuses.sort();
    assert_eq!(
        statuses,
        [
            pb::AckStatus::Accepted as i32,
            pb::AckStatus::Duplicate as i32
        ],
        "one replica posts it, the other finds it posted: {x:?} {y:?}"
    );

    // Posted once: 100 + 50 records of 100 micro each, seen alike through both.
    for u in [&ua, &ub] {
        let st = statement(u, "acme").await;
        assert_eq!((st.calls, st.total_micro), (150, 15_000));
        assert_eq!(balance(u, "acme").await.consumed_micro, 15_000);
    }
    ra.shutdown().await.unwrap();
    rb.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_through_two_replicas_never_pass_the_wallet_or_a_window() {
    if skip_without_store("leases_through_two_replicas_never_pass_the_wallet_or_a_window") {
        return;
    }
    let (_dir, ra, rb) = two_replicas().await;
    let (ua, ub) = (url(&ra), url(&rb));
    // 10 credits; a tenant-wide quota of 3 credits per hour, set through A.
    setup_tenant(&ua, "acme", 10).await;
    set_quota(
        &ua,
        "hourly",
        pb::LimitKey::tenant_window("acme", pb::Window::Hour),
        3_000_000,
    )
    .await;

    // Three sidecars on each replica, each asking for far more than there is, at once.
    let wallet = pb::LimitKey::wallet("acme");
    let hourly = pb::LimitKey::tenant_window("acme", pb::Window::Hour);
    let mut tasks = Vec::new();
    for i in 0..6 {
        let u = if i % 2 == 0 { ua.clone() } else { ub.clone() };
        let (wallet, hourly) = (wallet.clone(), hourly.clone());
        tasks.push(tokio::spawn(async move {
            let mut sc = Sidecar::connect(&u, &format!("pod-{i}"), SC_ACME, &["acme"]).await;
            sc.lease_rounds(&[(wallet, 8_000_000), (hourly, 2_000_000)], 3)
                .await
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let per_limit = Sidecar::totals(all);
    let wallet_total = per_limit.get("acme/wallet").copied().unwrap_or(0);
    let hourly_total = per_limit.get("acme/hour").copied().unwrap_or(0);
    eprintln!("leased through both replicas: wallet {wallet_total}, hourly {hourly_total}");
    assert!(
        wallet_total > 0 && wallet_total <= 10_000_000,
        "wallet leases {wallet_total}"
    );
    assert!(
        hourly_total > 0 && hourly_total <= 3_000_000,
        "window leases {hourly_total} past the hourly quota"
    );
    let b = balance(&ub, "acme").await;
    assert_eq!(b.held_micro, wallet_total, "every wallet lease is one hold");
    assert_eq!(b.available_micro + b.held_micro, 10_000_000, "conserved");
    ra.shutdown().await.unwrap();
    rb.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cap_lowered_on_one_replica_reaches_sessions_on_the_other() {
    if skip_without_store("a_cap_lowered_on_one_replica_reaches_sessions_on_the_other") {
        return;
    }
    let (_dir, ra, rb) = two_replicas().await;
    let (ua, ub) = (url(&ra), url(&rb));
    setup_tenant(&ua, "acme", 100).await;
    let mut on_b = Sidecar::connect(&ub, "pod-1", SC_ACME, &["acme"]).await;
    // B caches the policy it pushed at registration; A now changes it.
    set_quota(
        &ua,
        "per-minute",
        pb::LimitKey::tenant_window("acme", pb::Window::Minute),
        1_500_000,
    )
    .await;
    let pushed = tokio::time::timeout(
        Duration::from_secs(10),
        on_b.next_matching(|m| match m {
            pb::session_down::Msg::Policy(p) => p.policy.clone(),
            _ => None,
        }),
    )
    .await
    .expect("replica B pushed A's change within 10 s");
    assert_eq!(pushed.quotas.len(), 1, "{pushed:?}");
    assert_eq!(pushed.quotas[0].max_micro, 1_500_000);
    // Both replicas changing one policy at once lose nothing (compare-and-set).
    let mut a = admin(&ua).await;
    let mut b = admin(&ub).await;
    let floor = |tier: pb::Tier| pb::SetTierFloorRequest {
        tenant: "acme".into(),
        floor: Some(pb::TierFloor {
            tier: tier as i32,
            floor_micro: 1_000,
            floor_permille: 0,
            shadow: false,
        }),
    };
    let (x, y) = tokio::join!(
        a.set_tier_floor(req(floor(pb::Tier::Background), Some(ADMIN))),
        b.set_tier_floor(req(floor(pb::Tier::Scheduler), Some(ADMIN))),
    );
    x.unwrap();
    y.unwrap();
    let p = a
        .get_policy(req(
            pb::GetPolicyRequest {
                tenant: "acme".into(),
            },
            Some(ADMIN),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p.tier_floors.len(), 2, "{p:?}");
    assert_eq!(p.quotas.len(), 1, "{p:?}");
    ra.shutdown().await.unwrap();
    rb.shutdown().await.unwrap();
}
