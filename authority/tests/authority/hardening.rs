//! The authority trusts a sidecar no further than its credential and its leases: sidecar
//! ids belong to the credential that registered them first, a batch key is never
//! answered DUPLICATE for different content, held leases are believed only if the store
//! granted them, demands name defined limits, and a Register is bounded.

use tollgate_authority::server::start;
use tollgate_proto::v1::{self as pb, session_up};

use super::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_id_stays_with_its_first_credential_across_a_restart() {
    if skip_without_store("a_sidecar_id_stays_with_its_first_credential_across_a_restart") {
        return;
    }
    let h = start_harness().await;
    setup_tenant(&h.url, "acme", 100).await;
    setup_tenant(&h.url, "globex", 100).await;
    // Another credential takes the id the acme pod will use, and posts under it.
    let squatter = Sidecar::connect(&h.url, "pod-a", SC_BOTH, &["globex"]).await;
    squatter
        .send(session_up::Msg::Batch(squatter.batch(1, "globex", 1)))
        .await;
    drop(squatter);
    let dir = h.dir;
    h.running.shutdown().await.unwrap();

    let running = start(options(dir.path(), 0)).await.unwrap();
    let url = format!("http://{}", running.grpc_addr);
    let refused = register(&url, "pod-a", SC_ACME, &["acme"], Vec::new()).await;
    let st = refused.expect_err("the id belongs to the other credential");
    assert_eq!(st.code(), tonic::Code::PermissionDenied, "{st:?}");
    assert!(st.message().contains("another credential"), "{st:?}");
    assert!(
        running
            .state
            .metrics
            .encode()
            .contains("tollgate_authority_refused_total{result=\"sidecar_id_owned\"} 1"),
        "{}",
        running.state.metrics.encode()
    );
    // The owner itself still registers.
    register(&url, "pod-a", SC_BOTH, &["globex"], Vec::new())
        .await
        .unwrap();
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_key_resent_with_other_content_is_rejected_not_duplicate() {
    if skip_without_store("a_batch_key_resent_with_other_content_is_rejected_not_duplicate") {
        return;
    }
    let h = start_harness().await;
    setup_tenant(&h.url, "acme", 100).await;
    let mut sc = Sidecar::connect(&h.url, "pod-1", SC_ACME, &["acme"]).await;
    sc.send(session_up::Msg::Batch(sc.batch(1, "acme", 2)))
        .await;
    let ack = sc.next_ack().await;
    assert_eq!(ack.status, pb::AckStatus::Accepted as i32, "{ack:?}");

    // Same key, other records: refused loudly, nothing posted.
    sc.send(session_up::Msg::Batch(sc.batch(1, "acme", 3)))
        .await;
    let ack = sc.next_ack().await;
    assert_eq!(ack.status, pb::AckStatus::Rejected as i32, "{ack:?}");
    assert!(
        ack.error.contains("different content") || ack.error.contains("identical"),
        "{ack:?}"
    );
    // The identical re-send is still a duplicate.
    sc.send(session_up::Msg::Batch(sc.batch(1, "acme", 2)))
        .await;
    let ack = sc.next_ack().await;
    assert_eq!(ack.status, pb::AckStatus::Duplicate as i32, "{ack:?}");

    let m = h.running.state.metrics.encode();
    assert!(
        m.contains("tollgate_authority_batches_total{result=\"conflict\"} 1"),
        "{m}"
    );
    let st = statement(&h.url, "acme").await;
    assert_eq!(st.calls, 2, "only the first batch is posted: {st:?}");
    h.running.shutdown().await.unwrap();
}
