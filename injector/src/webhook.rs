//! The webhook's decision for one AdmissionReview: skip, inject, or deny.
//!
//! Fail closed. The chart registers the webhook with `failurePolicy: Fail`, and the injector
//! denies what it cannot understand (a malformed pod, a bad override, an opt-in annotation
//! with a value other than "true"/"false"): an agent that asked for Tollgate never runs
//! unmetered. The price is that pod creation in labelled namespaces depends on the injector
//! being up; the chart runs two replicas behind a PodDisruptionBudget and only watches
//! namespaces that opted in, so the rest of the cluster never depends on it.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::admission::{self, AdmissionRequest, BadReview, Verdict};
use crate::config::InjectorConfig;
use crate::inject;
use crate::metrics::{Metrics, ReviewResult};
use crate::names::*;

/// Answers AdmissionReviews.
#[derive(Debug, Clone)]
pub struct Injector {
    config: InjectorConfig,
    metrics: Metrics,
}

impl Injector {
    pub fn new(config: InjectorConfig) -> Self {
        Self {
            config,
            metrics: Metrics::new(),
        }
    }

    pub fn config(&self) -> &InjectorConfig {
        &self.config
    }

    /// The injector's counters (served at `/metrics`).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Answers one HTTP body: the AdmissionReview response, or a [`BadReview`] (HTTP 400) for
    /// a body that is not an AdmissionReview request at all.
    pub fn review(&self, body: &[u8]) -> Result<Value, BadReview> {
        let request = admission::parse_request(body).inspect_err(|_| self.metrics.bad_request())?;
        let verdict = self.decide(&request);
        let who = describe(&request);
        let result = match &verdict {
            Verdict::Patch { .. } => {
                tracing::info!(pod = %who, uid = %request.uid, "injected the Tollgate sidecar");
                ReviewResult::Injected
            }
            Verdict::Allow { .. } => {
                tracing::debug!(pod = %who, uid = %request.uid, "admitted without injection");
                ReviewResult::Admitted
            }
            Verdict::Deny { message } => {
                tracing::warn!(pod = %who, uid = %request.uid, %message, "denied");
                ReviewResult::Denied
            }
        };
        self.metrics.review(result);
        Ok(admission::response(&request.uid, &verdict))
    }

    /// The verdict for one request.
    pub fn decide(&self, request: &AdmissionRequest) -> Verdict {
        let allow = || Verdict::Allow {
            warnings: Vec::new(),
        };
        let deny = |message: String| Verdict::Deny {
            message: format!("tollgate injector: {message}"),
        };

        // Only pod creation is ours; anything else the API server sends (a mis-scoped
        // webhook rule) is admitted untouched: containers cannot be added after creation.
        let (Some(kind), Some(operation)) = (&request.kind, request.operation.as_deref()) else {
            return deny("the request has no kind or no operation".into());
        };
        let is_pod = kind.group.is_empty()
            && kind.kind == "Pod"
            && request.sub_resource.as_deref().unwrap_or("").is_empty();
        if !is_pod || operation != "CREATE" {
            return allow();
        }
        let namespace = request.namespace.as_deref().unwrap_or("");
        if self.config.skip_namespaces.contains(namespace) {
            return allow();
        }
        let Some(pod) = request.object.as_ref().filter(|o| o.is_object()) else {
            return deny("the request carries no pod object to inspect".into());
        };
        let annotations = match string_map(pod, "annotations") {
            Ok(a) => a,
            Err(m) => return deny(m),
        };
        let labels = match string_map(pod, "labels") {
            Ok(l) => l,
            Err(m) => return deny(m),
        };
        // Opt-out by label is also honoured (the chart's objectSelector uses it too).
        if labels.get(INJECT_ANNOTATION).map(String::as_str) == Some("false") {
            return allow();
        }
        match annotations.get(INJECT_ANNOTATION).map(|v| v.trim()) {
            None | Some("false") => return allow(),
            Some("true") => {}
            Some(other) => {
                return deny(format!(
                    "annotation {INJECT_ANNOTATION} must be \"true\" or \"false\", not {other:?}"
                ));
            }
        }
        if annotations.contains_key(STATUS_ANNOTATION) {
            // Injected already: never a second sidecar. On a re-invocation (a later webhook
            // added containers) the new app containers still get the region.
            return match inject::top_up(pod) {
                Ok(top) if top.patch.is_empty() => Verdict::Allow {
                    warnings: top.warnings,
                },
                Ok(top) => Verdict::Patch {
                    patch: Value::Array(top.patch),
                    warnings: top.warnings,
                },
                Err(e) => deny(e.to_string()),
            };
        }
        let settings = match self.config.defaults.with_overrides(&annotations) {
            Ok(s) => s,
            Err(e) => return deny(e.to_string()),
        };
        if settings.tenants.is_empty() {
            // The sidecar requires its tenants; inject one that cannot start? No: say so now.
            return deny(format!(
                "no tenant for the sidecar: annotate the pod with {CONFIG_PREFIX}tenants (a comma list), \
                 or give the injector a default (--tenants, chart value injector.defaults.tenants)"
            ));
        }
        match inject::inject(pod, &settings) {
            Ok(injection) => Verdict::Patch {
                patch: Value::Array(injection.patch),
                warnings: injection.warnings,
            },
            Err(e) => deny(e.to_string()),
        }
    }
}

/// `metadata.<field>` as a string map; absent is empty, a non-string value is malformed.
fn string_map(pod: &Value, field: &str) -> Result<BTreeMap<String, String>, String> {
    let Some(meta) = pod.get("metadata") else {
        return Err("the pod has no metadata".into());
    };
    match meta.get(field) {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(format!("metadata.{field}.{k:?} is not a string")),
            })
            .collect(),
        Some(_) => Err(format!("metadata.{field} is not an object")),
    }
}

/// `namespace/name` for logs (generateName pods have no name yet at admission).
fn describe(request: &AdmissionRequest) -> String {
    let ns = request.namespace.as_deref().unwrap_or("");
    let meta = request.object.as_ref().and_then(|o| o.get("metadata"));
    let name = request
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .or_else(|| {
            meta.and_then(|m| m.get("name"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .or_else(|| {
            meta.and_then(|m| m.get("generateName"))
                .and_then(Value::as_str)
                .map(|g| format!("{g}*"))
        })
        .unwrap_or_else(|| "?".into());
    format!("{ns}/{name}")
}

#[cfg(test)]
mod tests;
