//! The HTTP/JSON admin API on a real authority: the OpenAPI document, calls with the admin
//! token, a tenant's reader token, another tenant's, none, and malformed bodies.

use serde_json::{Value, json};
use tollgate_proto::v1 as pb;

use super::common::*;

struct Http {
    base: String,
    client: reqwest::Client,
}

impl Http {
    fn new(h: &Harness) -> Http {
        Http {
            base: format!("http://{}", h.running.http_addr.unwrap()),
            client: reqwest::Client::new(),
        }
    }

    /// POSTs `body` (raw) to an admin method; the status and the JSON reply.
    async fn raw(&self, method: &str, token: Option<&str>, body: &str) -> (u16, Value) {
        let mut r = self
            .client
            .post(format!("{}/v1/admin/{method}", self.base))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        assert_eq!(
            resp.headers()["content-type"],
            "application/json",
            "{method}: every reply is JSON"
        );
        (
            status,
            serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap(),
        )
    }

    async fn call(&self, method: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        self.raw(method, token, &body.to_string()).await
    }
}

/// The error shape: `{"error": {"code", "grpc_code", "message"}}` and nothing else.
fn assert_error(status: u16, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status, want_status, "{body}");
    let e = body["error"].as_object().expect("error object");
    assert_eq!(e["code"], want_code, "{body}");
    assert!(e["grpc_code"].as_u64().unwrap() > 0);
    assert!(!e["message"].as_str().unwrap().is_empty());
    assert_eq!(body.as_object().unwrap().len(), 1);
}

#[tokio::test]
async fn openapi_document_has_a_path_per_admin_rpc() {
    let h = start_harness().await;
    let http = Http::new(&h);
    let doc = http
        .client
        .get(format!("{}/openapi.json", http.base))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let doc: Value = serde_json::from_slice(&doc).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    assert_eq!(paths.len(), tollgate_authority::http_api::ADMIN_RPCS.len());
    for m in tollgate_authority::http_api::ADMIN_RPCS {
        let op = &paths[&format!("/v1/admin/{m}")]["post"];
        assert_eq!(op["operationId"], *m);
        let req = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            .as_str()
            .unwrap();
        let name = req.rsplit('/').next().unwrap();
        assert!(doc["components"]["schemas"][name].is_object(), "{name}");
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}

#[tokio::test]
async fn admin_calls_over_http_share_tokens_and_scoping_with_grpc() {
    let h = start_harness().await;
    let http = Http::new(&h);
    for t in ["acme", "globex"] {
        let (s, b) = http
            .call(
                "CreateTenant",
                Some(ADMIN),
                json!({"tenant": t, "display_name": format!("{t} corp")}),
            )
            .await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(b["tenant"], t);
        assert_eq!(b["deduction_order"], "DEDUCTION_ORDER_DEFAULT");
    }
    let (s, g) = http
        .call(
            "AddGrant",
            Some(ADMIN),
            json!({"grant": {"tenant": "acme", "kind": "GRANT_KIND_PURCHASED",
                "amount_micro": 5_000_000, "priority": 1, "label": "po-1"}}),
        )
        .await;
    assert_eq!(s, 200, "{g}");
    assert!(!g["grant_id"].as_str().unwrap().is_empty());
    assert_eq!(g["remaining_micro"], 5_000_000);

    // The tenant's reader sees its balance, the same as over gRPC.
    let (s, b) = http
        .call("GetBalance", Some(READER_ACME), json!({"tenant": "acme"}))
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["available_micro"], 5_000_000);
    assert_eq!(b["grants"][0]["label"], "po-1");
    let grpc = admin(&h.url)
        .await
        .get_balance(req(
            pb::GetBalanceRequest {
                tenant: "acme".into(),
            },
            Some(READER_ACME),
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(b["granted_micro"], grpc.granted_micro);
    assert_eq!(b["grants"][0]["grant_id"], grpc.grants[0].grant_id);

    // No token, a wrong one: 401 (before the body is even parsed).
    let (s, b) = http.raw("GetBalance", None, r#"{"tenant":"acme"}"#).await;
    assert_error(s, &b, 401, "unauthenticated");
    let (s, b) = http.raw("GetBalance", Some("nope"), "{").await;
    assert_error(s, &b, 401, "unauthenticated");
    // Another tenant's data, or an admin call, with acme's reader token: 403.
    let (s, b) = http
        .call("GetBalance", Some(READER_ACME), json!({"tenant": "globex"}))
        .await;
    assert_error(s, &b, 403, "permission_denied");
    let (s, b) = http
        .call(
            "CreateTenant",
            Some(READER_ACME),
            json!({"tenant": "initech"}),
        )
        .await;
    assert_error(s, &b, 403, "permission_denied");
    // Malformed bodies: 400 in the same shape.
    for bad in [
        "{",
        "[1]",
        r#"{"tenant": 5}"#,
        r#"{"tenant": "acme", "no_such_field": 1}"#,
        r#"{"grant": {"amount_micro": -5}}"#,
    ] {
        let (s, b) = http.raw("AddGrant", Some(ADMIN), bad).await;
        assert_error(s, &b, 400, "invalid_argument");
    }
    // The service's own validation, unchanged.
    let (s, b) = http
        .call(
            "CreateTenant",
            Some(ADMIN),
            json!({"tenant": "Not A Tenant!"}),
        )
        .await;
    assert_error(s, &b, 400, "invalid_argument");
    // An unknown method, a GET.
    let (s, b) = http.call("Nope", Some(ADMIN), json!({})).await;
    assert_error(s, &b, 404, "not_found");
    let resp = http
        .client
        .get(format!("{}/v1/admin/GetBalance", http.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    let b: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    assert_error(405, &b, 405, "unimplemented");
    // An empty body is the empty message.
    let (s, b) = http.raw("ListTenants", Some(ADMIN), "").await;
    assert_eq!(s, 200);
    assert_eq!(b["tenants"].as_array().unwrap().len(), 2);
}

/// The dashboard's cap form is `POST /v1/admin/SetPlan`: a cap lowered over HTTP is pushed
/// to the tenant's live sidecars at once (policy and a revocation with the new ceiling), and
/// the next lease is refused at the hard cap.
#[tokio::test]
async fn a_cap_lowered_over_http_is_pushed_and_refuses_the_next_lease() {
    const C: u64 = 1_000_000;
    let h = start_harness().await;
    let http = Http::new(&h);
    setup_tenant(&h.url, "acme", 0).await;
    let plan = |cap: u64| json!({"plan": {"tenant": "acme", "hard_cap_micro": cap}});
    let (s, _) = http.call("SetPlan", Some(ADMIN), plan(10 * C)).await;
    assert_eq!(s, 200);
    let mut sc = Sidecar::connect(&h.url, "pod-1", SC_ACME, &["acme"]).await;
    let lease = sc.lease_wallet("acme", 3 * C).await;
    assert!(lease.amount_micro > 0);

    let (s, b) = http.call("SetPlan", Some(ADMIN), plan(C)).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["hard_cap_micro"], C);
    let p = sc
        .next_matching(|m| match m {
            pb::session_down::Msg::Policy(p) => p.policy,
            _ => None,
        })
        .await;
    assert_eq!(p.hard_cap_micro, C);
    let r = sc
        .next_matching(|m| match m {
            pb::session_down::Msg::Revocation(r) => Some(r),
            _ => None,
        })
        .await;
    assert!(r.ceiling_micro <= C, "{r:?}");
    // What is held already fills the new cap: the next ask is refused at the cap.
    sc.demand(pb::LimitKey::wallet("acme"), 2 * C, lease.amount_micro)
        .await;
    let refusal = sc
        .next_matching(|m| match m {
            pb::session_down::Msg::Refusal(r) => Some(r),
            _ => None,
        })
        .await;
    assert_eq!(refusal.reason, pb::LeaseRefusalReason::HardCap as i32);
    // A reader cannot move the cap.
    let (s, b) = http.call("SetPlan", Some(READER_ACME), plan(100 * C)).await;
    assert_error(s, &b, 403, "permission_denied");
}
