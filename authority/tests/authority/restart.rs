//! After a restart the authority relearns leases from re-registering sidecars and grants
//! nothing new during its relearn window; a lease whose sidecar never comes back is
//! settled at expiry and counted; health and metrics are served over HTTP.

use tollgate_authority::server::start;
use tollgate_proto::v1::{self as pb, session_up};

use super::common::*;

async fn heartbeat_round_trip(sc: &mut Sidecar) -> Vec<pb::session_down::Msg> {
    sc.send(session_up::Msg::Heartbeat(pb::Heartbeat { unix_ms: 0 }))
        .await;
    let mut before = Vec::new();
    loop {
        match sc.next().await {
            pb::session_down::Msg::Heartbeat(_) => return before,
            m => before.push(m),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_relearns_held_leases_and_grants_nothing_during_the_window() {
    if skip_without_store("restart_relearns_held_leases_and_grants_nothing_during_the_window") {
        return;
    }
    let h = start_harness().await;
    setup_tenant(&h.url, "acme", 100).await;
    let mut sc = Sidecar::connect(&h.url, "pod-1", SC_ACME, &["acme"]).await;
    sc.demand(pb::LimitKey::wallet("acme"), 5_000_000, 0).await;
    let lease = sc.next_grant().await;
    drop(sc);
    let dir = h.dir;
    h.running.shutdown().await.unwrap();

    // Same database, a long relearn window.
    let running = start(options(dir.path(), 3600)).await.unwrap();
    let url = format!("http://{}", running.grpc_addr);
    let held = vec![
        pb::HeldLease {
            lease_id: lease.lease_id.clone(),
            limit: lease.limit.clone(),
            amount_micro: lease.amount_micro,
            remaining_micro: lease.amount_micro,
            expires_unix_ms: lease.expires_unix_ms,
        },
        pb::HeldLease {
            lease_id: "h/acme/999".into(),
            limit: lease.limit.clone(),
            amount_micro: 1,
            remaining_micro: 1,
            expires_unix_ms: lease.expires_unix_ms,
        },
    ];
    let mut sc = Sidecar::connect_holding(&url, "pod-1", SC_ACME, &["acme"], held).await;
    assert_eq!(
        sc.registered.honoured_lease_ids,
        vec![lease.lease_id.clone()],
        "the real lease is honoured, the unknown one is not"
    );
    assert!(sc.registered.relearn_until_unix_ms > tollgate_authority::server::now_ms());
    sc.demand(pb::LimitKey::wallet("acme"), 5_000_000, lease.amount_micro)
        .await;
    let before = heartbeat_round_trip(&mut sc).await;
    assert!(
        !before
            .iter()
            .any(|m| matches!(m, pb::session_down::Msg::Grant(_))),
        "no new lease during the relearn window: {before:?}"
    );
    let metrics = running.state.metrics.encode();
    assert!(
        metrics.contains("tollgate_authority_relearn_deferred_total 1"),
        "{metrics}"
    );
    // The relearned lease's hold is still there and still counted.
    assert_eq!(balance(&url, "acme").await.held_micro, lease.amount_micro);
    drop(sc);
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_whose_sidecar_never_returns_is_settled_and_counted() {
    if skip_without_store("a_lease_whose_sidecar_never_returns_is_settled_and_counted") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path(), 0);
    opts.config.leases.ttl_secs = 1;
    opts.config.leases.settle_grace_secs = 0;
    let running = start(opts).await.unwrap();
    let url = format!("http://{}", running.grpc_addr);
    setup_tenant(&url, "acme", 100).await;
    let mut sc = Sidecar::connect(&url, "pod-gone", SC_ACME, &["acme"]).await;
    sc.demand(pb::LimitKey::wallet("acme"), 5_000_000, 0).await;
    let lease = sc.next_grant().await;
    sc.send(session_up::Msg::Batch(sc.batch(1, "acme", 10)))
        .await;
    assert_eq!(sc.next_ack().await.status, pb::AckStatus::Accepted as i32);
    drop(sc); // The pod dies: no return, no renewal.
    // Poll (bounded) until the settlement loop ran past the expiry.
    let mut settled = false;
    for _ in 0..200 {
        let m = running.state.metrics.encode();
        if m.contains("tollgate_authority_leases_unreported_total 1") {
            settled = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(settled, "{}", running.state.metrics.encode());
    let b = balance(&url, "acme").await;
    assert_eq!(b.held_micro, 0, "the hold ended");
    assert_eq!(b.consumed_micro, 1000, "reported usage stays posted");
    assert_eq!(
        b.available_micro,
        100_000_000 - 1000,
        "the undrawn rest went back"
    );
    // The metered amount is what the hold released undrawn (all of it if the hold timed
    // out before the batch arrived and the usage was paid from the grant directly).
    let holds = running
        .state
        .ledger
        .holds(&tollgate_ledger::TenantId::new("acme").unwrap(), true)
        .await
        .unwrap();
    assert_eq!(holds.len(), 1);
    assert_eq!(holds[0].amount.micros(), lease.amount_micro);
    let released = holds[0].released.micros();
    assert!(
        released == lease.amount_micro || released == lease.amount_micro - 1000,
        "{holds:?}"
    );
    let m = running.state.metrics.encode();
    assert!(
        m.contains(&format!(
            "tollgate_authority_leases_unreported_micro_total {released}"
        )),
        "{m}"
    );

    // Health and metrics over HTTP.
    let http = running.http_addr.unwrap();
    let client = reqwest::Client::new();
    let health = client
        .get(format!("http://{http}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let text = client
        .get(format!("http://{http}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("tollgate_authority_records_total 10"),
        "{text}"
    );
    running.shutdown().await.unwrap();
}
