//! The authority trusts a sidecar no further than its credential and its leases: sidecar
//! ids belong to the credential that registered them first, a batch key is never
//! answered DUPLICATE for different content, held leases are believed only if the store
//! granted them, demands name defined limits, and a Register is bounded. A grant label
//! (its idempotency reference) reused with another amount is refused, not answered with
//! the old grant. An audit page past the largest sequence is empty.

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

fn huge_register(bytes: usize) -> pb::RegisterRequest {
    pb::RegisterRequest {
        sidecar_id: "pod-big".into(),
        tenants: vec!["acme".into()],
        public_key: key_for("pod-big").verifying_key().to_bytes().to_vec(),
        agent: "x".repeat(bytes),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_are_refused_and_unauthenticated_ones_before_reading() {
    if skip_without_store("oversized_messages_are_refused_and_unauthenticated_ones_before_reading")
    {
        return;
    }
    use tollgate_proto::v1::sidecar_service_client::SidecarServiceClient;
    let h = start_harness().await;
    setup_tenant(&h.url, "acme", 10).await;
    let mut c = SidecarServiceClient::connect(h.url.clone()).await.unwrap();
    // 20 MiB: past the sidecar service's limit (it accepted 256 MiB).
    let st = c
        .register(req(huge_register(20 << 20), Some(SC_ACME)))
        .await
        .unwrap_err();
    assert_eq!(st.code(), tonic::Code::OutOfRange, "{st:?}");
    // Without credentials the answer comes from the headers alone: UNAUTHENTICATED, not
    // the size error a decode (or a length check of the body) would give.
    for token in [None, Some("wrong-token")] {
        let st = c
            .register(req(huge_register(20 << 20), token))
            .await
            .unwrap_err();
        assert_eq!(st.code(), tonic::Code::Unauthenticated, "{token:?}: {st:?}");
    }
    // The streaming session too: refused before its first message is read.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(pb::SessionUp {
        msg: Some(session_up::Msg::Batch(pb::UsageBatch {
            seq: 1,
            dictionary: vec!["y".repeat(20 << 20)],
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let st = c
        .session(req(tokio_stream::wrappers::ReceiverStream::new(rx), None))
        .await
        .unwrap_err();
    assert_eq!(st.code(), tonic::Code::Unauthenticated, "{st:?}");
    // An admin token is no sidecar credential, also decided from the headers.
    let st = c
        .register(req(huge_register(20 << 20), Some(ADMIN)))
        .await
        .unwrap_err();
    assert_eq!(st.code(), tonic::Code::PermissionDenied, "{st:?}");
    // The admin service has a smaller limit of its own.
    let st = admin(&h.url)
        .await
        .create_tenant(req(
            pb::CreateTenantRequest {
                tenant: "big".into(),
                display_name: "z".repeat(5 << 20),
                deduction_order: 0,
            },
            Some(ADMIN),
        ))
        .await
        .unwrap_err();
    assert_eq!(st.code(), tonic::Code::OutOfRange, "{st:?}");
    h.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_register_is_believed_only_for_leases_granted_to_that_sidecar() {
    if skip_without_store("a_register_is_believed_only_for_leases_granted_to_that_sidecar") {
        return;
    }
    let h = start_harness().await;
    setup_tenant(&h.url, "acme", 100).await;
    let hourly = pb::LimitKey::tenant_window("acme", pb::Window::Hour);
    set_quota(&h.url, "hourly", hourly.clone(), 3_000_000).await;
    let mut sc = Sidecar::connect(&h.url, "pod-1", SC_ACME, &["acme"]).await;
    let leases = sc.lease_rounds(&[(hourly.clone(), 2_000_000)], 1).await;
    let real = leases.into_iter().next().expect("a window lease");
    drop(sc);
    let dir = h.dir;
    h.running.shutdown().await.unwrap();

    let running = start(options(dir.path(), 3600)).await.unwrap();
    let url = format!("http://{}", running.grpc_addr);
    let forever = u64::MAX / 2;
    let held = vec![
        // The real lease, reported inflated: honoured at what was granted.
        pb::HeldLease {
            lease_id: real.lease_id.clone(),
            limit: real.limit.clone(),
            amount_micro: 1_000_000_000_000_000,
            remaining_micro: 1_000_000_000_000_000,
            expires_unix_ms: forever,
        },
        // Made up, in the forms the authority uses.
        pb::HeldLease {
            lease_id: "w/acme/hourly/0/1".into(),
            limit: Some(hourly.clone()),
            amount_micro: 1_000_000_000_000_000,
            remaining_micro: 1_000_000_000_000_000,
            expires_unix_ms: forever,
        },
        pb::HeldLease {
            lease_id: "u/acme/1".into(),
            limit: Some(pb::LimitKey::tenant_window("acme", pb::Window::Minute)),
            amount_micro: 1_000_000_000_000_000,
            remaining_micro: 1_000_000_000_000_000,
            expires_unix_ms: forever,
        },
    ];
    let r = register(&url, "pod-1", SC_ACME, &["acme"], held.clone())
        .await
        .unwrap();
    assert_eq!(r.honoured_lease_ids, vec![real.lease_id.clone()]);
    {
        let t = running.state.lease_table();
        let l = t.get(&real.lease_id).expect("relearned");
        assert_eq!(
            l.amount, real.amount_micro,
            "the granted amount, not the report"
        );
        assert_eq!(l.expires_ms, real.expires_unix_ms, "the granted expiry");
        assert!(t.get("w/acme/hourly/0/1").is_none());
    }
    let m = running.state.metrics.encode();
    assert!(
        m.contains("tollgate_authority_refused_total{result=\"forged_lease\"} 2"),
        "{m}"
    );
    // Another sidecar of the same credential cannot claim pod-1's lease either.
    let r = register(&url, "pod-2", SC_ACME, &["acme"], held)
        .await
        .unwrap();
    assert!(r.honoured_lease_ids.is_empty(), "{r:?}");
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demands_on_undefined_limits_get_no_lease() {
    if skip_without_store("demands_on_undefined_limits_get_no_lease") {
        return;
    }
    let h = start_harness().await;
    setup_tenant(&h.url, "acme", 100).await;
    let mut sc = Sidecar::connect(&h.url, "pod-1", SC_ACME, &["acme"]).await;
    let undefined = [
        pb::LimitKey {
            scope: 7,
            window: pb::Window::Hour as i32,
            ..pb::LimitKey::wallet("acme")
        },
        pb::LimitKey {
            window: 9,
            ..pb::LimitKey::wallet("acme")
        },
        pb::LimitKey {
            scope: pb::Scope::Tier as i32,
            window: pb::Window::Hour as i32,
            tier: 42,
            ..pb::LimitKey::wallet("acme")
        },
        pb::LimitKey {
            scope: pb::Scope::Agent as i32,
            window: pb::Window::Hour as i32,
            ..pb::LimitKey::wallet("acme")
        },
    ];
    let asks: Vec<_> = undefined
        .iter()
        .map(|l| (l.clone(), 1_000_000_000_000))
        .collect();
    let leases = sc.lease_rounds(&asks, 1).await;
    assert!(
        leases.is_empty(),
        "no lease on an undefined limit: {leases:?}"
    );
    let m = h.running.state.metrics.encode();
    assert!(
        m.contains("tollgate_authority_refused_total{result=\"undefined_limit\"} 4"),
        "{m}"
    );
    // A defined limit in the same session is still served.
    let leases = sc
        .lease_rounds(&[(pb::LimitKey::wallet("acme"), 1_000_000)], 1)
        .await;
    assert_eq!(leases.len(), 1, "{leases:?}");
    h.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_register_is_bounded() {
    if skip_without_store("a_register_is_bounded") {
        return;
    }
    use tollgate_proto::v1::sidecar_service_client::SidecarServiceClient;
    let h = start_harness().await;
    let mut c = SidecarServiceClient::connect(h.url.clone()).await.unwrap();
    let many = pb::RegisterRequest {
        sidecar_id: "pod-1".into(),
        tenants: (0..200_000).map(|i| format!("t{i}")).collect(),
        public_key: key_for("pod-1").verifying_key().to_bytes().to_vec(),
        ..Default::default()
    };
    let st = c.register(req(many, Some(SC_BOTH))).await.unwrap_err();
    assert_eq!(st.code(), tonic::Code::InvalidArgument, "{st:?}");
    assert!(st.message().contains("at most"), "{st:?}");
    let held = pb::RegisterRequest {
        sidecar_id: "pod-1".into(),
        tenants: vec!["acme".into()],
        public_key: key_for("pod-1").verifying_key().to_bytes().to_vec(),
        held_leases: vec![pb::HeldLease::default(); 10_000],
        ..Default::default()
    };
    let st = c.register(req(held, Some(SC_BOTH))).await.unwrap_err();
    assert_eq!(st.code(), tonic::Code::InvalidArgument, "{st:?}");
    assert!(st.message().contains("held_leases"), "{st:?}");
    h.running.shutdown().await.unwrap();
}

/// What a sidecar reports past its holds is charged only up to the overrun allowance
/// (defaults: 1 credit plus a tenth of its holds); the rest is suspected tampering:
/// counted, in the batch's audit record, and not charged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_past_the_holds_beyond_the_allowance_is_recorded_not_charged() {
    if skip_without_store("usage_past_the_holds_beyond_the_allowance_is_recorded_not_charged") {
        return;
    }
    let h = start_harness().await;
    setup_tenant(&h.url, "acme", 100).await;
    let mut sc = Sidecar::connect(&h.url, "pod-1", SC_ACME, &["acme"]).await;
    sc.demand(pb::LimitKey::wallet("acme"), 5_000_000, 0).await;
    let lease = sc.next_grant().await;
    assert_eq!(lease.amount_micro, 5_000_000);
    // 50 credits reported against the 5-credit lease.
    let mut b = tollgate_proto::BatchBuilder::new(1, 1);
    b.push(&tollgate_proto::batch::RecordInput {
        tenant: "acme",
        agent_instance: "agent-a",
        model: MODEL,
        feature: "chat",
        input_tokens: 50_000_000,
        client_rated_micro: 50_000_000,
        calls: 1,
        at_unix_ms: 1_800_000_000_000,
        ..Default::default()
    });
    let mut batch = b.finish();
    sc.sign(&mut batch);
    sc.send(session_up::Msg::Batch(batch)).await;
    let ack = sc.next_ack().await;
    assert_eq!(ack.status, pb::AckStatus::Accepted as i32, "{ack:?}");

    let allowance = 1_000_000 + 5_000_000 / 10;
    let bal = balance(&h.url, "acme").await;
    assert_eq!(
        bal.consumed_micro,
        5_000_000 + allowance,
        "the lease plus the allowance, no more: {bal:?}"
    );
    let suspect = 50_000_000 - 5_000_000 - allowance;
    let m = h.running.state.metrics.encode();
    assert!(
        m.contains("tollgate_authority_suspected_tampering_total 1"),
        "{m}"
    );
    assert!(
        m.contains(&format!(
            "tollgate_authority_suspected_tampering_micro_total {suspect}"
        )),
        "{m}"
    );
    let tenant = tollgate_ledger::TenantId::new("acme").unwrap();
    let records = h
        .running
        .state
        .ledger
        .store()
        .audit_records(&tenant, 0, 1000)
        .await
        .unwrap();
    let recorded = records.iter().any(|r| {
        matches!(
            r.event().unwrap(),
            tollgate_ledger::AuditEvent::Usage { suspect: s, .. } if s.micros() == suspect
        )
    });
    assert!(recorded, "the audit chain records the suspect amount");
    assert!(
        h.running
            .state
            .ledger
            .verify_audit(None)
            .await
            .unwrap()
            .is_ok()
    );
    h.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_label_reused_with_another_amount_is_already_exists() {
    if skip_without_store("a_grant_label_reused_with_another_amount_is_already_exists") {
        return;
    }
    let h = start_harness().await;
    setup_tenant(&h.url, "acme", 0).await;
    let grant = |amount_micro: u64| {
        req(
            pb::AddGrantRequest {
                grant: Some(pb::Grant {
                    tenant: "acme".into(),
                    kind: pb::GrantKind::Purchased as i32,
                    amount_micro,
                    priority: 10,
                    label: "invoice-42".into(),
                    ..Default::default()
                }),
            },
            Some(ADMIN),
        )
    };
    let mut a = admin(&h.url).await;
    let first = a.add_grant(grant(5_000_000)).await.unwrap().into_inner();
    let again = a.add_grant(grant(5_000_000)).await.unwrap().into_inner();
    assert_eq!(
        again.grant_id, first.grant_id,
        "a retry returns the first grant"
    );
    let e = a.add_grant(grant(6_000_000)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::AlreadyExists, "{e}");
    assert!(
        e.message().contains("invoice-42") && e.message().contains("amount"),
        "{e}"
    );
    assert_eq!(balance(&h.url, "acme").await.granted_micro, 5_000_000);
    h.running.shutdown().await.unwrap();
}

/// A paged audit export asked for records after `u64::MAX` (or anything past what a
/// store can number) is an empty last page, not "amount overflow".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_page_after_the_largest_sequence_is_empty() {
    if skip_without_store("an_audit_page_after_the_largest_sequence_is_empty") {
        return;
    }
    let h = start_harness().await;
    setup_tenant(&h.url, "acme", 1).await;
    let mut a = admin(&h.url).await;
    for after_seq in [u64::MAX, u64::MAX - 1, i64::MAX as u64] {
        let page = a
            .export_audit(req(
                pb::ExportAuditRequest {
                    tenant: "acme".into(),
                    after_seq,
                    ..Default::default()
                },
                Some(ADMIN),
            ))
            .await
            .unwrap_or_else(|e| panic!("after_seq {after_seq}: {e}"))
            .into_inner();
        assert!(page.records.is_empty() && !page.more, "{after_seq}");
        assert_eq!(page.next_after_seq, after_seq);
    }
    // The first page still has the tenant's records.
    let page = a
        .export_audit(req(
            pb::ExportAuditRequest {
                tenant: "acme".into(),
                ..Default::default()
            },
            Some(ADMIN),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!page.records.is_empty());
    h.running.shutdown().await.unwrap();
}

/// Bytes sent as they are, as a message body (and any answer read back as bytes).
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        buf: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use prost::bytes::BufMut;
        buf.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        buf: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use prost::bytes::Buf;
        let mut v = vec![0; buf.remaining()];
        buf.copy_to_slice(&mut v);
        Ok(Some(v))
    }
}

/// `body` as the message of the unary method `path`, with `token` (and a sidecar id).
async fn raw_call(url: &str, path: &'static str, token: &str, body: Vec<u8>) -> tonic::Status {
    let ch = tonic::transport::Endpoint::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut g = tonic::client::Grpc::new(ch);
    g.ready().await.unwrap();
    let mut r = req(body, Some(token));
    r.metadata_mut().insert(
        tollgate_proto::SIDECAR_ID_HEADER,
        "pod-raw".parse().unwrap(),
    );
    match g
        .unary(
            r,
            tonic::codegen::http::uri::PathAndQuery::from_static(path),
            RawCodec,
        )
        .await
    {
        Ok(_) => tonic::Status::ok(""),
        Err(s) => s,
    }
}

/// A body that is not the method's message is the caller's fault: `INVALID_ARGUMENT` on both
/// services (tonic-prost's codec said `INTERNAL`), decided after authentication.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_does_not_decode_is_invalid_argument_on_both_services() {
    if skip_without_store("a_body_that_does_not_decode_is_invalid_argument_on_both_services") {
        return;
    }
    let h = start_harness().await;
    setup_tenant(&h.url, "acme", 10).await;
    const REGISTER: &str = "/tollgate.v1.SidecarService/Register";
    const BALANCE: &str = "/tollgate.v1.AdminService/GetBalance";
    // Field 1, length-delimited, claiming far more bytes than follow.
    let truncated = vec![0x0A, 0xFF, 0xFF, 0xFF, 0x0F, 1, 2, 3];
    for (path, token) in [(REGISTER, SC_ACME), (BALANCE, ADMIN)] {
        let st = raw_call(&h.url, path, token, truncated.clone()).await;
        assert_eq!(st.code(), tonic::Code::InvalidArgument, "{path}: {st:?}");
        // Authentication still comes first.
        let st = raw_call(&h.url, path, "wrong-token", truncated.clone()).await;
        assert_eq!(st.code(), tonic::Code::Unauthenticated, "{path}: {st:?}");
    }
    // Random bodies: whatever they decode to (or not), never INTERNAL.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut invalid = 0;
    for i in 0..200 {
        let len = 1 + (i % 64);
        let body: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        for (path, token) in [(REGISTER, SC_ACME), (BALANCE, ADMIN)] {
            let st = raw_call(&h.url, path, token, body.clone()).await;
            assert_ne!(st.code(), tonic::Code::Internal, "{path} {body:?}: {st:?}");
            if st.code() == tonic::Code::InvalidArgument {
                invalid += 1;
            }
        }
    }
    assert!(
        invalid > 100,
        "only {invalid} of 400 random bodies were refused"
    );
    h.running.shutdown().await.unwrap();
}
