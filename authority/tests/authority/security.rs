//! Credentials and input validation: UNAUTHENTICATED, PERMISSION_DENIED, INVALID_ARGUMENT.

use tollgate_proto::v1::{self as pb, session_up};
use tonic::Code;

use super::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_wrong_credentials_are_unauthenticated() {
    if skip_without_store("missing_or_wrong_credentials_are_unauthenticated") {
        return;
    }
    let h = start_harness().await;
    setup_tenant(&h.url, "acme", 10).await;
    let mut a = admin(&h.url).await;
    for token in [None, Some("wrong-token")] {
        let e = a
            .get_balance(req(
                pb::GetBalanceRequest {
                    tenant: "acme".into(),
                },
                token,
            ))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
        let e = register(&h.url, "pod-x", token.unwrap_or(""), &["acme"], Vec::new())
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    }
    h.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_data_is_permission_denied() {
    if skip_without_store("another_tenants_data_is_permission_denied") {
        return;
    }
    let h = start_harness().await;
    setup_tenant(&h.url, "acme", 10).await;
    setup_tenant(&h.url, "globex", 10).await;
    let mut a = admin(&h.url).await;
    // A sidecar scoped to acme registering for globex.
    let e = register(&h.url, "pod-1", SC_ACME, &["acme", "globex"], Vec::new())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("globex"), "{}", e.message());
    // A reader of acme reading globex; reading acme works.
    let e = a
        .get_balance(req(
            pb::GetBalanceRequest {
                tenant: "globex".into(),
            },
            Some(READER_ACME),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    a.get_balance(req(
        pb::GetBalanceRequest {
            tenant: "acme".into(),
        },
        Some(READER_ACME),
    ))
    .await
    .unwrap();
    let e = a
        .export_audit(req(
            pb::ExportAuditRequest {
                tenant: "globex".into(),
                ..Default::default()
            },
            Some(READER_ACME),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    // A sidecar credential cannot administer.
    let e = a
        .add_grant(req(
            pb::AddGrantRequest {
                grant: Some(pb::Grant {
                    tenant: "acme".into(),
                    kind: pb::GrantKind::Trial as i32,
                    amount_micro: 1,
                    ..Default::default()
                }),
            },
            Some(SC_ACME),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    // In a session: asking for another tenant's budget ends the session with
    // PERMISSION_DENIED; a batch naming another tenant is rejected, never posted.
    let mut sc = Sidecar::connect(&h.url, "pod-2", SC_ACME, &["acme"]).await;
    let mut batch = sc.batch(1, "globex", 3);
    sc.sign(&mut batch);
    sc.send(session_up::Msg::Batch(batch)).await;
    let ack = sc.next_ack().await;
    assert_eq!(ack.status, pb::AckStatus::Rejected as i32, "{ack:?}");
    assert!(ack.error.contains("globex"), "{}", ack.error);
    assert_eq!(balance(&h.url, "globex").await.consumed_micro, 0);
    sc.demand(pb::LimitKey::wallet("globex"), 1_000_000, 0)
        .await;
    let e = loop {
        match tokio::time::timeout(std::time::Duration::from_secs(30), sc.down.message())
            .await
            .expect("session answered")
        {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("session ended without a status"),
            Err(e) => break e,
        }
    };
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    h.running.shutdown().await.unwrap();
}

/// `r` failed with INVALID_ARGUMENT and a message containing `what`.
fn invalid_naming<T: std::fmt::Debug>(r: Result<T, tonic::Status>, what: &str) {
    let e = r.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains(what), "{}", e.message());
}

/// `r` failed with INVALID_ARGUMENT and a message starting with `what`.
fn invalid_starting<T: std::fmt::Debug>(r: Result<T, tonic::Status>, what: &str) {
    let e = r.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().starts_with(what), "{}", e.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_invalid_argument_with_a_message() {
    if skip_without_store("malformed_requests_are_invalid_argument_with_a_message") {
        return;
    }
    let h = start_harness().await;
    setup_tenant(&h.url, "acme", 10).await;
    let mut a = admin(&h.url).await;
    invalid_starting(
        a.create_tenant(req(
            pb::CreateTenantRequest {
                tenant: "".into(),
                ..Default::default()
            },
            Some(ADMIN),
        ))
        .await,
        "tenant: ",
    );
    invalid_naming(
        a.create_tenant(req(
            pb::CreateTenantRequest {
                tenant: "bad tenant!".into(),
                ..Default::default()
            },
            Some(ADMIN),
        ))
        .await,
        "invalid",
    );
    invalid_naming(
        a.add_grant(req(
            pb::AddGrantRequest {
                grant: Some(pb::Grant {
                    tenant: "acme".into(),
                    kind: pb::GrantKind::Trial as i32,
                    amount_micro: 0,
                    ..Default::default()
                }),
            },
            Some(ADMIN),
        ))
        .await,
        "amount_micro",
    );
    invalid_naming(
        a.set_quota(req(
            pb::SetQuotaRequest {
                rule: Some(pb::QuotaRule {
                    id: "q".into(),
                    limit: Some(pb::LimitKey::wallet("acme")),
                    max_micro: 5,
                    shadow: false,
                }),
            },
            Some(ADMIN),
        ))
        .await,
        "window",
    );
    invalid_naming(
        a.set_price_book(req(
            pb::SetPriceBookRequest {
                price_book: Some(pb::PriceBook {
                    tenant: "acme".into(),
                    models: vec![pb::ModelPrice {
                        model: "m".into(),
                        pricing: None,
                        max_output_tokens: 0,
                    }],
                    ..Default::default()
                }),
            },
            Some(ADMIN),
        ))
        .await,
        "models[0]",
    );

    // Register with a short public key.
    let mut c =
        tollgate_proto::v1::sidecar_service_client::SidecarServiceClient::connect(h.url.clone())
            .await
            .unwrap();
    let e = c
        .register(req(
            pb::RegisterRequest {
                sidecar_id: "pod-1".into(),
                tenants: vec!["acme".into()],
                public_key: vec![1, 2, 3],
                ..Default::default()
            },
            Some(SC_ACME),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("public_key") && e.message().contains("32"),
        "{}",
        e.message()
    );

    // A batch with a bad signature or an out-of-range index is rejected with the reason.
    let mut sc = Sidecar::connect(&h.url, "pod-1", SC_ACME, &["acme"]).await;
    let mut bad = sc.batch(1, "acme", 2);
    bad.signature[0] ^= 0xff;
    sc.send(session_up::Msg::Batch(bad)).await;
    let ack = sc.next_ack().await;
    assert_eq!(ack.status, pb::AckStatus::Rejected as i32);
    assert!(ack.error.contains("signature"), "{}", ack.error);
    let mut bad = sc.batch(2, "acme", 2);
    bad.records[1].model = 99;
    sc.sign(&mut bad);
    sc.send(session_up::Msg::Batch(bad)).await;
    let ack = sc.next_ack().await;
    assert_eq!(ack.status, pb::AckStatus::Rejected as i32);
    assert!(ack.error.contains("records[1].model"), "{}", ack.error);
    assert_eq!(balance(&h.url, "acme").await.consumed_micro, 0);
    h.running.shutdown().await.unwrap();
}
