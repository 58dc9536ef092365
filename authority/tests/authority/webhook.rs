//! An alert that fires is POSTed to its webhook, signed with HMAC-SHA256.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::routing::post;
use tollgate_proto::v1::{self as pb, session_up};

use super::common::*;

/// (signature header, body) of one delivery.
type Delivery = (String, Vec<u8>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_fires_and_is_delivered_signed() {
    if skip_without_store("alert_fires_and_is_delivered_signed") {
        return;
    }
    // A receiver on loopback that records what it gets; it fails the first call so the
    // delivery has to retry.
    let got: Arc<Mutex<Vec<Delivery>>> = Arc::default();
    let calls = Arc::new(Mutex::new(0u32));
    let (g, c) = (got.clone(), calls.clone());
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: Bytes| {
            let (g, c) = (g.clone(), c.clone());
            async move {
                let n = {
                    let mut c = c.lock().unwrap();
                    *c += 1;
                    *c
                };
                if n == 1 {
                    return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                }
                let sig = headers
                    .get("x-tollgate-signature")
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default();
                g.lock().unwrap().push((sig, body.to_vec()));
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let h = start_harness().await;
    setup_tenant(&h.url, "acme", 1).await;
    let mut a = admin(&h.url).await;
    a.set_alert_rule(req(
        pb::SetAlertRuleRequest {
            rule: Some(pb::AlertRule {
                id: "half".into(),
                tenant: "acme".into(),
                condition: Some(pb::alert_rule::Condition::PercentUsedPermille(500)),
                webhook_url: hook,
            }),
        },
        Some(ADMIN),
    ))
    .await
    .unwrap();
    // Spend 0.6 of the 1 credit.
    let mut sc = Sidecar::connect(&h.url, "pod-1", SC_ACME, &["acme"]).await;
    sc.send(session_up::Msg::Batch(sc.batch(1, "acme", 6000)))
        .await;
    assert_eq!(sc.next_ack().await.status, pb::AckStatus::Accepted as i32);
    // Wait (bounded) for the delivery.
    for _ in 0..600 {
        if !got.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "one delivery (after one retry)");
    assert!(
        *calls.lock().unwrap() >= 2,
        "the first attempt failed and was retried"
    );
    let (sig, body) = &got[0];
    assert_eq!(sig, &tollgate_authority::webhook::sign(b"whsec-test", body));
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(v["rule_id"], "half");
    assert_eq!(v["tenant"], "acme");
    h.running.shutdown().await.unwrap();
}

/// A webhook whose receiver is down is kept in the store: after the authority restarts,
/// it is delivered (once) when the receiver is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_not_yet_delivered_survives_a_restart() {
    if skip_without_store("a_webhook_not_yet_delivered_survives_a_restart") {
        return;
    }
    let up = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let got: Arc<Mutex<Vec<String>>> = Arc::default();
    let (u, c, g) = (up.clone(), calls.clone(), got.clone());
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap| {
            let (u, c, g) = (u.clone(), c.clone(), g.clone());
            async move {
                c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if !u.load(std::sync::atomic::Ordering::SeqCst) {
                    return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                }
                let id = headers
                    .get("x-tollgate-delivery")
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default();
                g.lock().unwrap().push(id);
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let h = start_harness().await;
    setup_tenant(&h.url, "acme", 1).await;
    admin(&h.url)
        .await
        .set_alert_rule(req(
            pb::SetAlertRuleRequest {
                rule: Some(pb::AlertRule {
                    id: "half".into(),
                    tenant: "acme".into(),
                    condition: Some(pb::alert_rule::Condition::PercentUsedPermille(500)),
                    webhook_url: hook,
                }),
            },
            Some(ADMIN),
        ))
        .await
        .unwrap();
    let mut sc = Sidecar::connect(&h.url, "pod-1", SC_ACME, &["acme"]).await;
    sc.send(session_up::Msg::Batch(sc.batch(1, "acme", 6000)))
        .await;
    assert_eq!(sc.next_ack().await.status, pb::AckStatus::Accepted as i32);
    // The first attempt fails (receiver down); then the authority stops.
    for _ in 0..600 {
        if calls.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        calls.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "never attempted"
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    drop(sc);
    let dir = h.dir;
    h.running.shutdown().await.unwrap();
    assert!(got.lock().unwrap().is_empty());

    // Receiver back, authority restarted on the same store: delivered, once.
    up.store(true, std::sync::atomic::Ordering::SeqCst);
    let running = tollgate_authority::server::start(options(dir.path(), 0))
        .await
        .unwrap();
    for _ in 0..600 {
        if !got.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "delivered once after the restart: {got:?}");
    assert!(got[0].starts_with("acme-half-"), "{got:?}");
    running.shutdown().await.unwrap();
}
