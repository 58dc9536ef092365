//! Register, session, lease, usage batch, durable acknowledgement, idempotent re-send.

use tollgate_proto::v1::{self as pb, session_up};

use super::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_session_lease_batch_ack_and_duplicate_posted_once() {
    if skip_without_store("register_session_lease_batch_ack_and_duplicate_posted_once") {
        return;
    }
    let h = start_harness().await;
    setup_tenant(&h.url, "acme", 1000).await;
    let mut sc = Sidecar::connect(&h.url, "pod-1", SC_ACME, &["acme"]).await;
    assert_eq!(sc.registered.durable_through_seq, 0);
    assert_eq!(sc.registered.policies.len(), 1);
    assert_eq!(sc.registered.price_books.len(), 1);
    assert_eq!(sc.registered.price_books[0].version, 1);

    // Lease: ask for 10 credits on the wallet.
    sc.demand(pb::LimitKey::wallet("acme"), 10_000_000, 0).await;
    let lease = sc.next_grant().await;
    assert_eq!(lease.limit.as_ref().unwrap().canonical(), "acme/wallet");
    assert!(
        lease.amount_micro > 0 && lease.amount_micro <= 10_000_000,
        "{lease:?}"
    );
    assert!(lease.expires_unix_ms > tollgate_authority::server::now_ms());
    let b = balance(&h.url, "acme").await;
    assert_eq!(
        b.held_micro, lease.amount_micro,
        "the lease is backed by a hold"
    );

    // A batch of 100 records of 100 input tokens (1 micro each) = 10,000 micro.
    let batch = sc.batch(1, "acme", 100);
    sc.send(session_up::Msg::Batch(batch.clone())).await;
    let ack = sc.next_ack().await;
    assert_eq!(ack.seq, 1);
    assert_eq!(ack.status, pb::AckStatus::Accepted as i32, "{ack:?}");
    assert_eq!(ack.records, 100);
    assert_eq!(ack.rated_micro, 10_000);
    let after = balance(&h.url, "acme").await;
    assert_eq!(after.consumed_micro, 10_000);

    // The same batch again: acknowledged as a duplicate, posted once.
    sc.send(session_up::Msg::Batch(batch)).await;
    let ack = sc.next_ack().await;
    assert_eq!(ack.seq, 1);
    assert_eq!(ack.status, pb::AckStatus::Duplicate as i32, "{ack:?}");
    let again = balance(&h.url, "acme").await;
    assert_eq!(
        again.consumed_micro, 10_000,
        "a re-sent batch must not be posted twice"
    );
    let st = statement(&h.url, "acme").await;
    assert_eq!(st.calls, 100);
    assert_eq!(st.total_micro, 10_000);
    assert_eq!(st.by_agent.len(), 2);
    assert_eq!(st.by_model[0].key, MODEL);

    // A second batch, then a re-registration learns what is durable.
    sc.send(session_up::Msg::Batch(sc.batch(2, "acme", 10)))
        .await;
    assert_eq!(sc.next_ack().await.status, pb::AckStatus::Accepted as i32);
    let again = register(&h.url, "pod-1", SC_ACME, &["acme"], Vec::new())
        .await
        .unwrap();
    assert_eq!(again.durable_through_seq, 2);

    // Returning the lease ends its hold.
    sc.send(session_up::Msg::LeaseReturn(pb::LeaseReturn {
        lease_id: lease.lease_id.clone(),
        amount_micro: lease.amount_micro,
        close: true,
        through_seq: 2,
    }))
    .await;
    // Heartbeat round trip orders us after the return's processing.
    sc.send(session_up::Msg::Heartbeat(pb::Heartbeat { unix_ms: 1 }))
        .await;
    sc.next_matching(|m| match m {
        pb::session_down::Msg::Heartbeat(_) => Some(()),
        _ => None,
    })
    .await;
    let b = balance(&h.url, "acme").await;
    assert_eq!(b.held_micro, 0, "{b:?}");
    assert_eq!(b.consumed_micro, 11_000);
    h.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lowering_a_cap_pushes_policy_and_ceilings_to_every_session() {
    if skip_without_store("lowering_a_cap_pushes_policy_and_ceilings_to_every_session") {
        return;
    }
    let h = start_harness().await;
    setup_tenant(&h.url, "acme", 0).await;
    let mut a = admin(&h.url).await;
    let plan = |cap: u64| pb::SetPlanRequest {
        plan: Some(pb::Plan {
            tenant: "acme".into(),
            hard_cap_micro: cap,
            ..Default::default()
        }),
    };
    a.set_plan(req(plan(100_000_000), Some(ADMIN)))
        .await
        .unwrap();
    let mut s1 = Sidecar::connect(&h.url, "pod-1", SC_ACME, &["acme"]).await;
    let mut s2 = Sidecar::connect(&h.url, "pod-2", SC_BOTH, &["acme"]).await;
    assert_eq!(s1.registered.policies[0].hard_cap_micro, 100_000_000);
    s1.demand(pb::LimitKey::wallet("acme"), 30_000_000, 0).await;
    let l1 = s1.next_grant().await;
    s2.demand(pb::LimitKey::wallet("acme"), 30_000_000, 0).await;
    let l2 = s2.next_grant().await;
    assert!(l1.amount_micro > 0 && l2.amount_micro > 0);

    // Lower the cap below what the two hold together.
    a.set_plan(req(plan(20_000_000), Some(ADMIN)))
        .await
        .unwrap();
    for s in [&mut s1, &mut s2] {
        let p = s
            .next_matching(|m| match m {
                pb::session_down::Msg::Policy(p) => p.policy,
                _ => None,
            })
            .await;
        assert_eq!(p.hard_cap_micro, 20_000_000);
        let r = s
            .next_matching(|m| match m {
                pb::session_down::Msg::Revocation(r) => Some(r),
                _ => None,
            })
            .await;
        assert_eq!(r.limit.as_ref().unwrap().canonical(), "acme/wallet");
        assert!(r.ceiling_micro <= 20_000_000, "{r:?}");
    }
    h.running.shutdown().await.unwrap();
}
