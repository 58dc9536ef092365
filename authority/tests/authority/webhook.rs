//! An alert that fires is POSTed to its webhook, signed with HMAC-SHA256, retried, and
//! kept in the store until delivered.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use tollgate_proto::v1::{self as pb, session_up};

use super::common::*;

/// One delivery as received: (signature header, delivery id header, body).
type Delivery = (String, String, Vec<u8>);

/// A webhook receiver on loopback: answers 503 while `up` is false, records what it
/// accepts.
struct Receiver {
    url: String,
    up: Arc<AtomicBool>,
    calls: Arc<AtomicU32>,
    got: Arc<Mutex<Vec<Delivery>>>,
}

impl Receiver {
    async fn start(up: bool) -> Receiver {
        let up = Arc::new(AtomicBool::new(up));
        let calls = Arc::new(AtomicU32::new(0));
        let got: Arc<Mutex<Vec<Delivery>>> = Arc::default();
        let (u, c, g) = (up.clone(), calls.clone(), got.clone());
        let app = Router::new().route(
            "/hook",
            post(move |headers: HeaderMap, body: Bytes| {
                let (u, c, g) = (u.clone(), c.clone(), g.clone());
                async move {
                    c.fetch_add(1, Ordering::SeqCst);
                    if !u.load(Ordering::SeqCst) {
                        return StatusCode::SERVICE_UNAVAILABLE;
                    }
                    let header = |name: &str| {
                        headers
                            .get(name)
                            .map(|v| v.to_str().unwrap().to_string())
                            .unwrap_or_default()
                    };
                    g.lock().unwrap().push((
                        header("x-tollgate-signature"),
                        header("x-tollgate-delivery"),
                        body.to_vec(),
                    ));
                    StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver {
            url,
            up,
            calls,
            got,
        }
    }

    fn got(&self) -> Vec<Delivery> {
        self.got.lock().unwrap().clone()
    }

    /// Waits (bounded, 30 s) until `ready` holds.
    async fn wait_until(&self, ready: impl Fn(&Receiver) -> bool) {
        for _ in 0..600 {
            if ready(self) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Tenant `acme` with 1 credit and an alert at half of it posting to `hook` (signed with
/// `secret`, or the authority's global one if empty); then a sidecar spends 0.6 of it,
/// which fires the alert.
async fn fire_half_alert(url: &str, hook: &str, secret: &str) {
    setup_tenant(url, "acme", 1).await;
    admin(url)
        .await
        .set_alert_rule(req(
            pb::SetAlertRuleRequest {
                rule: Some(pb::AlertRule {
                    id: "half".into(),
                    tenant: "acme".into(),
                    condition: Some(pb::alert_rule::Condition::PercentUsedPermille(500)),
                    webhook_url: hook.into(),
                    webhook_secret: secret.into(),
                    has_webhook_secret: false,
                }),
            },
            Some(ADMIN),
        ))
        .await
        .unwrap();
    let mut sc = Sidecar::connect(url, "pod-1", SC_ACME, &["acme"]).await;
    sc.send(session_up::Msg::Batch(sc.batch(1, "acme", 6000)))
        .await;
    assert_eq!(sc.next_ack().await.status, pb::AckStatus::Accepted as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_fires_and_is_delivered_signed() {
    if skip_without_store("alert_fires_and_is_delivered_signed") {
        return;
    }
    // Down for the first attempt, so the delivery has to retry.
    let hook = Receiver::start(false).await;
    let h = start_harness().await;
    fire_half_alert(&h.url, &hook.url, "").await;
    hook.wait_until(|r| r.calls.load(Ordering::SeqCst) > 0)
        .await;
    hook.up.store(true, Ordering::SeqCst);
    hook.wait_until(|r| !r.got().is_empty()).await;
    let got = hook.got();
    assert_eq!(got.len(), 1, "one delivery (after one retry)");
    assert!(
        hook.calls.load(Ordering::SeqCst) >= 2,
        "the first attempt failed and was retried"
    );
    let (sig, delivery, body) = &got[0];
    assert_eq!(sig, &tollgate_authority::webhook::sign(b"whsec-test", body));
    assert!(delivery.starts_with("acme-half-"), "{delivery}");
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
    let hook = Receiver::start(false).await;
    let h = start_harness().await;
    fire_half_alert(&h.url, &hook.url, "").await;
    // The first attempt fails (receiver down); then the authority stops.
    hook.wait_until(|r| r.calls.load(Ordering::SeqCst) > 0)
        .await;
    assert!(hook.calls.load(Ordering::SeqCst) > 0, "never attempted");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let dir = h.dir;
    h.running.shutdown().await.unwrap();
    assert!(hook.got().is_empty());

    // Receiver back, authority restarted on the same store: delivered, once.
    hook.up.store(true, Ordering::SeqCst);
    let running = tollgate_authority::server::start(options(dir.path(), 0))
        .await
        .unwrap();
    hook.wait_until(|r| !r.got().is_empty()).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got = hook.got();
    assert_eq!(got.len(), 1, "delivered once after the restart: {got:?}");
    assert!(got[0].1.starts_with("acme-half-"), "{got:?}");
    running.shutdown().await.unwrap();
}

/// A rule with its own webhook secret signs with it; the secret is write-only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_with_its_own_secret_signs_with_it_and_never_shows_it() {
    if skip_without_store("a_rule_with_its_own_secret_signs_with_it_and_never_shows_it") {
        return;
    }
    let hook = Receiver::start(true).await;
    let h = start_harness().await;
    fire_half_alert(&h.url, &hook.url, "acme-own-secret").await;
    hook.wait_until(|r| !r.got().is_empty()).await;
    let got = hook.got();
    assert_eq!(got.len(), 1);
    let (sig, _, body) = &got[0];
    assert_eq!(
        sig,
        &tollgate_authority::webhook::sign(b"acme-own-secret", body),
        "signed with the rule's key, not the global one"
    );
    let rules = admin(&h.url)
        .await
        .list_alert_rules(req(
            pb::ListAlertRulesRequest {
                tenant: "acme".into(),
            },
            Some(ADMIN),
        ))
        .await
        .unwrap()
        .into_inner()
        .rules;
    assert_eq!(rules.len(), 1);
    assert!(rules[0].has_webhook_secret);
    assert!(
        rules[0].webhook_secret.is_empty(),
        "the secret was returned"
    );
    h.running.shutdown().await.unwrap();
}
