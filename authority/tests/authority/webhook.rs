//! An alert that fires is POSTed to its webhook, signed with HMAC-SHA256 over its
//! timestamp, delivery id and body, retried, and kept in the store until delivered.
//! Redirects are not followed; private targets are refused unless the config allows them.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::post;
use tollgate_authority::metrics::Metrics;
use tollgate_authority::webhook::{
    self, DeliveryError, SIGNATURE_TOLERANCE_SECS, TargetError, VerifyError, WebhookSender,
};
use tollgate_proto::v1::{self as pb, session_up};

use super::common::*;

/// One delivery as received: (signature header, delivery id header, body).
type Delivery = (String, String, Vec<u8>);

/// A webhook receiver on loopback: `/hook` answers 503 while `up` is false and records
/// what it accepts; `/redirect` answers 307 to `/hook`.
struct Receiver {
    url: String,
    redirect_url: String,
    up: Arc<AtomicBool>,
    calls: Arc<AtomicU32>,
    redirects: Arc<AtomicU32>,
    got: Arc<Mutex<Vec<Delivery>>>,
}

impl Receiver {
    async fn start(up: bool) -> Receiver {
        let up = Arc::new(AtomicBool::new(up));
        let calls = Arc::new(AtomicU32::new(0));
        let got: Arc<Mutex<Vec<Delivery>>> = Arc::default();
        let redirects = Arc::new(AtomicU32::new(0));
        let (u, c, g, r) = (up.clone(), calls.clone(), got.clone(), redirects.clone());
        let app = Router::new()
            .route(
                "/redirect",
                post(move || {
                    let r = r.clone();
                    async move {
                        r.fetch_add(1, Ordering::SeqCst);
                        (
                            StatusCode::TEMPORARY_REDIRECT,
                            [(header::LOCATION, "/hook")],
                        )
                    }
                }),
            )
            .route(
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
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver {
            url: format!("http://{addr}/hook"),
            redirect_url: format!("http://{addr}/redirect"),
            up,
            calls,
            redirects,
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
    let now = unix_now();
    webhook::verify(b"whsec-test", sig, delivery, body, now).expect("a valid signature");
    let t: u64 = sig
        .strip_prefix("t=")
        .and_then(|s| s.split(',').next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no timestamp in {sig:?}"));
    assert!(
        t.abs_diff(now) <= SIGNATURE_TOLERANCE_SECS,
        "t={t} now={now}"
    );
    // The same delivery replayed later than the tolerance: refused, though authentic.
    assert!(matches!(
        webhook::verify(
            b"whsec-test",
            sig,
            delivery,
            body,
            t + SIGNATURE_TOLERANCE_SECS + 1
        ),
        Err(VerifyError::Stale { .. })
    ));
    // The signature bound to another delivery id, or another key: refused.
    let other_id = format!("{delivery}0");
    assert_eq!(
        webhook::verify(b"whsec-test", sig, &other_id, body, now),
        Err(VerifyError::Mismatch)
    );
    assert_eq!(
        webhook::verify(b"whsec-other", sig, delivery, body, now),
        Err(VerifyError::Mismatch)
    );
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
    let (sig, delivery, body) = &got[0];
    webhook::verify(b"acme-own-secret", sig, delivery, body, unix_now())
        .expect("signed with the rule's key");
    assert_eq!(
        webhook::verify(b"whsec-test", sig, delivery, body, unix_now()),
        Err(VerifyError::Mismatch),
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

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn sender(allow_private: bool) -> WebhookSender {
    WebhookSender::new(Some(b"whsec-test"), allow_private, Arc::new(Metrics::new())).unwrap()
}

/// A receiver that redirects gets one request: the signed headers are not carried to the
/// redirect's target, and the attempt counts as failed (retried later).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_not_followed() {
    let hook = Receiver::start(true).await;
    let err = sender(true)
        .attempt(&hook.redirect_url, b"{}", "acme-half-1", b"")
        .await
        .unwrap_err();
    assert!(matches!(err, DeliveryError::Status(307)), "{err}");
    assert!(err.retryable(), "a redirect is retried like other failures");
    assert_eq!(hook.redirects.load(Ordering::SeqCst), 1);
    assert_eq!(
        hook.calls.load(Ordering::SeqCst),
        0,
        "the redirect was followed"
    );
}

/// A host name that resolves to loopback is refused at delivery (after DNS, before any
/// connection), a literal loopback address too; with `webhook_allow_private_targets` both
/// are delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_targets_are_refused_unless_allowed() {
    let hook = Receiver::start(true).await;
    let by_name = hook.url.replace("127.0.0.1", "localhost");
    for url in [&by_name, &hook.url] {
        let err = sender(false)
            .attempt(url, b"{}", "acme-half-1", b"")
            .await
            .unwrap_err();
        match &err {
            DeliveryError::Target(TargetError::Forbidden { addr, .. }) => {
                assert!(addr.is_loopback(), "{err}")
            }
            other => panic!("{url}: not refused as a private target: {other}"),
        }
        assert!(!err.retryable());
        assert!(
            err.to_string().contains("webhook_allow_private_targets"),
            "{err}"
        );
    }
    assert_eq!(
        hook.calls.load(Ordering::SeqCst),
        0,
        "a refused target was sent to"
    );

    for url in [&by_name, &hook.url] {
        sender(true)
            .attempt(url, b"{}", "acme-half-1", b"")
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
    }
    let got = hook.got();
    assert_eq!(got.len(), 2);
    for (sig, delivery, body) in &got {
        assert_eq!(delivery, "acme-half-1");
        webhook::verify(b"whsec-test", sig, delivery, body, unix_now()).unwrap();
    }
}

/// `SetAlertRule` refuses a literal private address unless the config allows it, naming
/// the field and the setting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_with_a_private_literal_target_is_refused_by_default() {
    if skip_without_store("a_rule_with_a_private_literal_target_is_refused_by_default") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path(), 0);
    opts.config.webhook_allow_private_targets = false;
    let running = tollgate_authority::server::start(opts).await.unwrap();
    let url = format!("http://{}", running.grpc_addr);
    setup_tenant(&url, "acme", 1).await;
    let rule = |hook: &str| pb::SetAlertRuleRequest {
        rule: Some(pb::AlertRule {
            id: "half".into(),
            tenant: "acme".into(),
            condition: Some(pb::alert_rule::Condition::PercentUsedPermille(500)),
            webhook_url: hook.into(),
            webhook_secret: String::new(),
            has_webhook_secret: false,
        }),
    };
    for hook in [
        "http://127.0.0.1:9/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:10.0.0.1]/",
    ] {
        let e = admin(&url)
            .await
            .set_alert_rule(req(rule(hook), Some(ADMIN)))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{hook}: {e}");
        assert!(
            e.message().contains("rule.webhook_url")
                && e.message().contains("webhook_allow_private_targets"),
            "{hook}: {e}"
        );
    }
    admin(&url)
        .await
        .set_alert_rule(req(rule("https://hooks.example.com/tollgate"), Some(ADMIN)))
        .await
        .expect("a public host name is accepted");
    running.shutdown().await.unwrap();
}
