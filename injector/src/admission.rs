//! The `admission.k8s.io/v1` AdmissionReview envelope: just the fields the injector reads and
//! writes. The pod itself stays a `serde_json::Value`, so fields this crate does not know pass
//! through untouched.

use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};

pub const API_VERSION: &str = "admission.k8s.io/v1";
pub const KIND: &str = "AdmissionReview";

/// A body that cannot be answered with an AdmissionReview (no request uid to answer to):
/// the server replies HTTP 400 with this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an admission.k8s.io/v1 AdmissionReview request: {0}")]
pub struct BadReview(pub String);

/// The request part of an AdmissionReview.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRequest {
    pub uid: String,
    #[serde(default)]
    pub kind: Option<GroupVersionKind>,
    #[serde(default)]
    pub resource: Option<GroupVersionResource>,
    #[serde(default)]
    pub sub_resource: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub operation: Option<String>,
    #[serde(default)]
    pub object: Option<Value>,
    #[serde(default)]
    pub dry_run: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct GroupVersionKind {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub kind: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct GroupVersionResource {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub resource: String,
}

/// Parses a body into its request. Anything that has no request uid is a [`BadReview`].
pub fn parse_request(body: &[u8]) -> Result<AdmissionRequest, BadReview> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| BadReview(format!("the body is not JSON ({e})")))?;
    let field = |name: &str| value.get(name).and_then(Value::as_str).unwrap_or("");
    if field("apiVersion") != API_VERSION || field("kind") != KIND {
        return Err(BadReview(format!(
            "expected apiVersion {API_VERSION:?} and kind {KIND:?}, got apiVersion {:?} and kind {:?}",
            field("apiVersion"),
            field("kind")
        )));
    }
    let request = value
        .get("request")
        .filter(|r| r.is_object())
        .ok_or_else(|| BadReview("the review has no \"request\" object".into()))?;
    match request.get("uid").and_then(Value::as_str) {
        Some(uid) if !uid.is_empty() => {}
        _ => {
            return Err(BadReview(
                "the request has no \"uid\" string to answer to".into(),
            ));
        }
    }
    serde_json::from_value(request.clone()).map_err(|e| {
        BadReview(format!(
            "the request does not have the AdmissionRequest shape ({e})"
        ))
    })
}

/// The answer to one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Admit the object as it is.
    Allow { warnings: Vec<String> },
    /// Admit the object with this RFC 6902 JSON Patch applied.
    Patch { patch: Value, warnings: Vec<String> },
    /// Refuse the object; the message reaches the user (`kubectl apply`, the ReplicaSet's events).
    Deny { message: String },
}

/// Builds the AdmissionReview response for `uid`.
pub fn response(uid: &str, verdict: &Verdict) -> Value {
    let inner = match verdict {
        Verdict::Allow { warnings } => json!({ "uid": uid, "allowed": true, "warnings": warnings }),
        Verdict::Patch { patch, warnings } => {
            let bytes = serde_json::to_vec(patch).unwrap_or_default();
            json!({
                "uid": uid,
                "allowed": true,
                "patchType": "JSONPatch",
                "patch": base64::engine::general_purpose::STANDARD.encode(bytes),
                "warnings": warnings,
            })
        }
        Verdict::Deny { message } => json!({
            "uid": uid,
            "allowed": false,
            "status": { "code": 400, "reason": "BadRequest", "message": message },
        }),
    };
    let mut inner = inner;
    // An empty warnings list is noise in the API server's logs.
    if let Some(obj) = inner.as_object_mut()
        && obj
            .get("warnings")
            .and_then(Value::as_array)
            .is_some_and(Vec::is_empty)
    {
        obj.remove("warnings");
    }
    json!({ "apiVersion": API_VERSION, "kind": KIND, "response": inner })
}
