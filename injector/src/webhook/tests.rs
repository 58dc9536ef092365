//! AdmissionReview in, JSON Patch out: each test applies the returned patch to the pod with an
//! independent RFC 6902 implementation (the `json-patch` crate) and checks the resulting pod.

use base64::Engine as _;
use clap::Parser;
use serde_json::{Value, json};

use super::*;
use crate::config::InjectorArgs;

#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    args: InjectorArgs,
}

fn config(flags: &[&str]) -> anyhow::Result<InjectorConfig> {
    let argv = std::iter::once("injector").chain(flags.iter().copied());
    Flags::try_parse_from(argv)?.args.config()
}

fn injector() -> Injector {
    Injector::new(
        config(&[
            "--authority",
            "http://tollgate-authority.tollgate:7070",
            "--tenants",
            "default-tenant",
        ])
        .unwrap(),
    )
}

const UID: &str = "705ab4f5-6393-11e8-b7cc-42010a800002";

fn agent_pod(annotations: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "agent-7d9f-",
            "namespace": "agents",
            "labels": { "app": "agent" },
            "annotations": annotations,
        },
        "spec": {
            "initContainers": [{ "name": "migrate", "image": "example/migrate:1" }],
            "containers": [
                {
                    "name": "agent",
                    "image": "example/agent:1",
                    "env": [{ "name": "MODEL", "value": "large" }],
                    "volumeMounts": [{ "name": "scratch", "mountPath": "/scratch" }],
                },
                { "name": "tools", "image": "example/tools:1" },
            ],
            "volumes": [{ "name": "scratch", "emptyDir": {} }],
        },
    })
}

fn opted_in() -> Value {
    agent_pod(json!({ "tollgate.dev/inject": "true" }))
}

fn review_in(namespace: &str, operation: &str, pod: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": UID,
            "kind": { "group": "", "version": "v1", "kind": "Pod" },
            "resource": { "group": "", "version": "v1", "resource": "pods" },
            "namespace": namespace,
            "operation": operation,
            "userInfo": { "username": "system:serviceaccount:kube-system:replicaset-controller" },
            "object": pod,
            "dryRun": false,
        },
    })
}

fn review(pod: Value) -> Value {
    review_in("agents", "CREATE", pod)
}

struct Outcome {
    response: Value,
    /// The pod after applying the patch; `None` when the response has no patch.
    patched: Option<Value>,
}

impl Outcome {
    fn allowed(&self) -> bool {
        self.response["allowed"]
            .as_bool()
            .expect("allowed is a bool")
    }
    fn message(&self) -> &str {
        self.response["status"]["message"].as_str().unwrap_or("")
    }
    fn pod(&self) -> &Value {
        self.patched.as_ref().expect("a patch")
    }
    fn warnings(&self) -> Vec<String> {
        serde_json::from_value(self.response["warnings"].clone()).unwrap_or_default()
    }
}

fn send(inj: &Injector, review: &Value) -> Outcome {
    let out = inj
        .review(review.to_string().as_bytes())
        .expect("a well-formed AdmissionReview");
    assert_eq!(out["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(out["kind"], "AdmissionReview");
    let response = out["response"].clone();
    assert_eq!(
        response["uid"], review["request"]["uid"],
        "the response answers the request's uid"
    );
    let patched = response["patch"].as_str().map(|b64| {
        assert_eq!(response["patchType"], "JSONPatch");
        assert_eq!(
            response["allowed"], true,
            "a patch only comes with allowed: true"
        );
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("base64 patch");
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).expect("an RFC 6902 patch");
        let mut pod = review["request"]["object"].clone();
        json_patch::patch(&mut pod, &patch).expect("the patch applies to the pod");
        pod
    });
    if patched.is_none() {
        assert!(
            response.get("patchType").is_none(),
            "no patchType without a patch"
        );
    }
    Outcome { response, patched }
}

fn env_of(container: &Value) -> Vec<(String, Value)> {
    container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_owned(),
                e.get("value").cloned().unwrap_or(Value::Null),
            )
        })
        .collect()
}

fn env_value(container: &Value, name: &str) -> Option<String> {
    env_of(container)
        .into_iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| v.as_str().map(str::to_owned))
}

fn sidecar(pod: &Value) -> &Value {
    let first = &pod["spec"]["initContainers"][0];
    assert_eq!(
        first["name"], SIDECAR_NAME,
        "the sidecar is the first init container"
    );
    first
}

#[test]
fn injects_a_native_sidecar_sharing_an_in_memory_region() {
    let out = send(&injector(), &review(opted_in()));
    assert!(out.allowed());
    let pod = out.pod();

    // Native sidecar first, the pod's own init container kept after it.
    let inits = pod["spec"]["initContainers"].as_array().unwrap();
    assert_eq!(inits.len(), 2);
    let sc = sidecar(pod);
    assert_eq!(sc["restartPolicy"], "Always");
    assert_eq!(inits[1]["name"], "migrate");
    assert_eq!(sc["command"], json!(["/usr/local/bin/tollgate-sidecar"]));
    assert_eq!(sc["args"], json!(["--log-format", "json"]));
    assert_eq!(
        env_value(sc, "TOLLGATE_REGION").as_deref(),
        Some(REGION_PATH)
    );
    assert_eq!(
        env_value(sc, "TOLLGATE_AUTHORITY").as_deref(),
        Some("http://tollgate-authority.tollgate:7070")
    );
    assert_eq!(
        env_value(sc, "TOLLGATE_HTTP").as_deref(),
        Some("0.0.0.0:7072")
    );
    assert_eq!(env_value(sc, "TOLLGATE_LOG").as_deref(), Some("info"));
    let id = env_of(sc)
        .into_iter()
        .find(|(n, _)| n == "TOLLGATE_SIDECAR_ID");
    assert!(id.is_some());
    assert_eq!(
        sc["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "TOLLGATE_SIDECAR_ID")
            .unwrap()["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert_eq!(
        sc["volumeMounts"],
        json!([
            { "name": REGION_VOLUME, "mountPath": REGION_DIR },
            { "name": STATE_VOLUME, "mountPath": STATE_DIR },
        ])
    );
    assert_eq!(
        env_value(sc, "TOLLGATE_STATE_DIR").as_deref(),
        Some(STATE_DIR)
    );

    // The region volume: in memory, bounded; the sidecar's private state volume; the
    // pod's own volume kept.
    let volumes = pod["spec"]["volumes"].as_array().unwrap();
    assert_eq!(volumes.len(), 3);
    assert_eq!(volumes[0]["name"], "scratch");
    assert_eq!(
        volumes[1],
        json!({ "name": REGION_VOLUME, "emptyDir": { "medium": "Memory", "sizeLimit": "16Mi" } })
    );
    assert_eq!(
        volumes[2],
        json!({ "name": STATE_VOLUME, "emptyDir": { "sizeLimit": "256Mi" } })
    );

    // Every app container mounts the region and is told where it is; existing env and mounts kept.
    for c in pod["spec"]["containers"].as_array().unwrap() {
        let mounts = c["volumeMounts"].as_array().unwrap();
        assert!(
            mounts.contains(&json!({ "name": REGION_VOLUME, "mountPath": REGION_DIR })),
            "{c}"
        );
        assert!(
            !mounts.iter().any(|m| m["name"] == STATE_VOLUME),
            "an app container mounts the sidecar's private state: {c}"
        );
        assert_eq!(
            env_value(c, "TOLLGATE_REGION").as_deref(),
            Some("/var/run/tollgate/region")
        );
    }
    let agent = &pod["spec"]["containers"][0];
    assert_eq!(env_value(agent, "MODEL").as_deref(), Some("large"));
    assert_eq!(agent["volumeMounts"][0]["name"], "scratch");

    // fsGroup so the app's uid can use the 0660 region; status annotation; pod's annotation kept.
    assert_eq!(pod["spec"]["securityContext"]["fsGroup"], 65532);
    assert_eq!(
        pod["metadata"]["annotations"]["tollgate.dev/status"],
        "injected"
    );
    assert_eq!(
        pod["metadata"]["annotations"]["tollgate.dev/inject"],
        "true"
    );
    assert_eq!(
        pod["metadata"]["labels"]["tollgate.dev/sidecar"],
        "injected"
    );
    assert_eq!(pod["metadata"]["labels"]["app"], "agent");
    assert_eq!(
        env_value(sc, "TOLLGATE_TENANTS").as_deref(),
        Some("default-tenant")
    );
    // Unset knobs keep the sidecar's own defaults.
    assert_eq!(env_value(sc, "TOLLGATE_LANES"), None);
    assert_eq!(env_value(sc, "TOLLGATE_EMERGENCY_ALLOWANCE"), None);
    assert_eq!(env_value(sc, "TOLLGATE_TOKEN_FILE"), None);
    assert!(out.warnings().is_empty(), "{:?}", out.warnings());
}

#[test]
fn the_sidecar_is_probed_bounded_and_restricted() {
    let out = send(&injector(), &review(opted_in()));
    let sc = sidecar(out.pod());
    for (probe, path) in [
        ("startupProbe", "/readyz"),
        ("readinessProbe", "/readyz"),
        ("livenessProbe", "/healthz"),
    ] {
        assert_eq!(sc[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(sc[probe]["httpGet"]["port"], 7072, "{probe}");
    }
    assert_eq!(sc["ports"][0]["containerPort"], 7072);
    assert_eq!(
        sc["resources"],
        json!({ "requests": { "cpu": "10m", "memory": "32Mi" }, "limits": { "cpu": "500m", "memory": "96Mi" } })
    );
    let sec = &sc["securityContext"];
    assert_eq!(sec["runAsNonRoot"], true);
    assert_eq!(sec["runAsUser"], 65532);
    assert_eq!(sec["readOnlyRootFilesystem"], true);
    assert_eq!(sec["allowPrivilegeEscalation"], false);
    assert_eq!(sec["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(sec["seccompProfile"]["type"], "RuntimeDefault");
}

#[test]
fn injects_into_a_pod_without_optional_fields() {
    let pod = json!({
        "metadata": { "name": "solo", "annotations": { "tollgate.dev/inject": "true" } },
        "spec": { "containers": [{ "name": "agent", "image": "example/agent:1" }] },
    });
    let out = send(&injector(), &review(pod));
    let pod = out.pod();
    assert_eq!(pod["spec"]["initContainers"].as_array().unwrap().len(), 1);
    sidecar(pod);
    assert_eq!(pod["spec"]["volumes"].as_array().unwrap().len(), 2);
    let agent = &pod["spec"]["containers"][0];
    assert_eq!(
        agent["env"],
        json!([{ "name": "TOLLGATE_REGION", "value": REGION_PATH }])
    );
    assert_eq!(
        agent["volumeMounts"],
        json!([{ "name": REGION_VOLUME, "mountPath": REGION_DIR }])
    );
    assert_eq!(
        pod["spec"]["securityContext"],
        json!({ "fsGroup": 65532, "fsGroupChangePolicy": "OnRootMismatch" })
    );
    assert_eq!(
        pod["metadata"]["labels"],
        json!({ "tollgate.dev/sidecar": "injected" })
    );
}

#[test]
fn keeps_the_pods_fs_group_and_replaces_a_foreign_region_path_with_a_warning() {
    let mut pod = opted_in();
    pod["spec"]["securityContext"] = json!({ "fsGroup": 2000, "runAsNonRoot": true });
    pod["spec"]["containers"][0]["env"] = json!([
        { "name": "TOLLGATE_REGION", "value": "/tmp/region" },
        { "name": "MODEL", "value": "large" },
    ]);
    let out = send(&injector(), &review(pod));
    let pod = out.pod();
    assert_eq!(
        pod["spec"]["securityContext"],
        json!({ "fsGroup": 2000, "runAsNonRoot": true })
    );
    let agent = &pod["spec"]["containers"][0];
    let region_vars: Vec<_> = env_of(agent)
        .into_iter()
        .filter(|(n, _)| n == "TOLLGATE_REGION")
        .collect();
    assert_eq!(
        region_vars,
        vec![("TOLLGATE_REGION".to_owned(), json!(REGION_PATH))]
    );
    assert_eq!(env_value(agent, "MODEL").as_deref(), Some("large"));
    assert!(
        out.warnings()
            .iter()
            .any(|w| w.contains("TOLLGATE_REGION was replaced")),
        "{:?}",
        out.warnings()
    );
}

#[test]
fn an_injected_pod_is_never_injected_twice() {
    let inj = injector();
    let first = send(&inj, &review(opted_in()));
    let injected = first.pod().clone();
    let second = send(&inj, &review(injected.clone()));
    assert!(second.allowed());
    assert!(
        second.patched.is_none(),
        "re-invocation must not patch: {}",
        second.response
    );
    let sidecars = injected["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"] == SIDECAR_NAME)
        .count();
    assert_eq!(sidecars, 1);
}

#[test]
fn a_reinvocation_gives_the_region_to_containers_added_later_and_nothing_else() {
    let inj = injector();
    let mut injected = send(&inj, &review(opted_in())).pod().clone();
    // A webhook that ran after ours added an app container.
    injected["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "name": "late", "image": "example/late:1" }));
    let out = send(&inj, &review(injected));
    assert!(out.allowed());
    let pod = out.pod();
    let late = &pod["spec"]["containers"][2];
    assert_eq!(
        late["volumeMounts"],
        json!([{ "name": REGION_VOLUME, "mountPath": REGION_DIR }])
    );
    assert_eq!(
        env_value(late, "TOLLGATE_REGION").as_deref(),
        Some(REGION_PATH)
    );
    let patch_ops = base64::engine::general_purpose::STANDARD
        .decode(out.response["patch"].as_str().unwrap())
        .unwrap();
    let patch_ops: Vec<Value> = serde_json::from_slice(&patch_ops).unwrap();
    assert!(
        patch_ops.iter().all(|op| op["path"]
            .as_str()
            .unwrap()
            .starts_with("/spec/containers/2/")),
        "only the late container is touched: {patch_ops:?}"
    );
    let sidecars = pod["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"] == SIDECAR_NAME)
        .count();
    assert_eq!(sidecars, 1);
    // And once more: nothing left to do.
    let again = send(&inj, &review(pod.clone()));
    assert!(again.allowed() && again.patched.is_none());
}

#[test]
fn opted_out_pods_are_admitted_untouched() {
    let inj = injector();
    let mut labelled = opted_in();
    labelled["metadata"]["labels"]["tollgate.dev/inject"] = json!("false");
    for pod in [
        agent_pod(json!({ "tollgate.dev/inject": "false" })),
        agent_pod(json!({ "other": "x" })),
        agent_pod(Value::Null),
        labelled,
    ] {
        let out = send(&inj, &review(pod.clone()));
        assert!(out.allowed(), "{pod}");
        assert!(out.patched.is_none(), "{pod}");
    }
}

#[test]
fn skipped_namespaces_are_admitted_untouched() {
    let out = send(&injector(), &review_in("kube-system", "CREATE", opted_in()));
    assert!(out.allowed());
    assert!(out.patched.is_none());
    let inj = Injector::new(
        config(&[
            "--skip-namespaces",
            "tollgate, kube-system",
            "--tenants",
            "acme",
        ])
        .unwrap(),
    );
    let out = send(&inj, &review_in("tollgate", "CREATE", opted_in()));
    assert!(out.allowed() && out.patched.is_none());
    let out = send(&inj, &review_in("agents", "CREATE", opted_in()));
    assert!(out.patched.is_some(), "other namespaces are still injected");
}

#[test]
fn other_operations_and_kinds_are_admitted_untouched() {
    let inj = injector();
    for op in ["UPDATE", "DELETE", "CONNECT"] {
        let out = send(&inj, &review_in("agents", op, opted_in()));
        assert!(out.allowed() && out.patched.is_none(), "{op}");
    }
    let mut not_a_pod = review(opted_in());
    not_a_pod["request"]["kind"] =
        json!({ "group": "apps", "version": "v1", "kind": "Deployment" });
    let out = send(&inj, &not_a_pod);
    assert!(out.allowed() && out.patched.is_none());
    let mut subresource = review(opted_in());
    subresource["request"]["subResource"] = json!("ephemeralcontainers");
    let out = send(&inj, &subresource);
    assert!(out.allowed() && out.patched.is_none());
}

#[test]
fn annotations_override_the_defaults() {
    let pod = agent_pod(json!({
        "tollgate.dev/inject": "true",
        "config.tollgate.dev/tenants": "acme, globex ,acme",
        "config.tollgate.dev/authority": "https://authority.billing.svc:7070",
        "config.tollgate.dev/image": "registry.example.com/tollgate:0.2.0",
        "config.tollgate.dev/image-pull-policy": "Always",
        "config.tollgate.dev/cpu-request": "50m",
        "config.tollgate.dev/cpu-limit": "1",
        "config.tollgate.dev/memory-request": "64Mi",
        "config.tollgate.dev/memory-limit": "256Mi",
        "config.tollgate.dev/region-size": "128Mi",
        "config.tollgate.dev/log-level": "debug",
        "config.tollgate.dev/log-format": "text",
        "config.tollgate.dev/token-secret": "acme-sidecar-token",
        "config.tollgate.dev/lanes": "64",
        "config.tollgate.dev/emergency-allowance": "2.5",
        "unrelated.example.com/key": "ignored",
    }));
    let out = send(&injector(), &review(pod));
    assert!(out.warnings().is_empty(), "{:?}", out.warnings());
    let pod = out.pod();
    let sc = sidecar(pod);
    assert_eq!(sc["image"], "registry.example.com/tollgate:0.2.0");
    assert_eq!(sc["imagePullPolicy"], "Always");
    assert_eq!(
        env_value(sc, "TOLLGATE_TENANTS").as_deref(),
        Some("acme,globex")
    );
    assert_eq!(
        env_value(sc, "TOLLGATE_AUTHORITY").as_deref(),
        Some("https://authority.billing.svc:7070")
    );
    assert_eq!(env_value(sc, "TOLLGATE_LOG").as_deref(), Some("debug"));
    assert_eq!(env_value(sc, "TOLLGATE_LANES").as_deref(), Some("64"));
    assert_eq!(
        env_value(sc, "TOLLGATE_EMERGENCY_ALLOWANCE").as_deref(),
        Some("2.5")
    );
    assert_eq!(sc["command"], json!(["/usr/local/bin/tollgate-sidecar"]));
    assert_eq!(sc["args"], json!(["--log-format", "text"]));
    assert_eq!(
        sc["resources"],
        json!({ "requests": { "cpu": "50m", "memory": "64Mi" }, "limits": { "cpu": "1", "memory": "256Mi" } })
    );
    let region = pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == REGION_VOLUME)
        .unwrap();
    assert_eq!(region["emptyDir"]["sizeLimit"], "128Mi");
    // The credential: a Secret volume mounted read-only in the sidecar only.
    assert_eq!(
        env_value(sc, "TOLLGATE_TOKEN_FILE").as_deref(),
        Some("/var/run/secrets/tollgate/token")
    );
    let token = pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == TOKEN_VOLUME)
        .unwrap();
    assert_eq!(token["secret"]["secretName"], "acme-sidecar-token");
    assert!(
        sc["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == TOKEN_VOLUME && m["readOnly"] == true)
    );
    for c in pod["spec"]["containers"].as_array().unwrap() {
        assert!(
            !c["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["name"] == TOKEN_VOLUME)
        );
    }
}

#[test]
fn bad_overrides_are_denied_with_a_message_naming_them() {
    let inj = injector();
    let cases = [
        (
            "config.tollgate.dev/tennants",
            "acme",
            "not a Tollgate setting",
        ),
        ("config.tollgate.dev/cpu-limit", "lots", "not a quantity"),
        ("config.tollgate.dev/memory-limit", "64MB", "unknown suffix"),
        ("config.tollgate.dev/cpu-request", "2", "above its limit"),
        (
            "config.tollgate.dev/region-size",
            "1Gi",
            "below the sidecar memory limit",
        ),
        (
            "config.tollgate.dev/tenants",
            "acme,glo bex",
            "tenant \"glo bex\"",
        ),
        (
            "config.tollgate.dev/authority",
            "tollgate-authority:7070",
            "http://",
        ),
        (
            "config.tollgate.dev/authority",
            "http://authority:70x0",
            "port",
        ),
        (
            "config.tollgate.dev/log-level",
            "verbose",
            "trace, debug, info, warn, error",
        ),
        ("config.tollgate.dev/log-format", "xml", "text, json"),
        ("config.tollgate.dev/image", "bad image", "image reference"),
        (
            "config.tollgate.dev/image-pull-policy",
            "sometimes",
            "Always",
        ),
        (
            "config.tollgate.dev/token-secret",
            "Acme_Token",
            "Secret name",
        ),
    ];
    for (key, value, expected) in cases {
        let pod = agent_pod(json!({ "tollgate.dev/inject": "true", key: value }));
        let out = send(&inj, &review(pod));
        assert!(!out.allowed(), "{key}={value} must be denied");
        assert!(
            out.patched.is_none(),
            "{key}={value}: no patch with a denial"
        );
        assert_eq!(out.response["status"]["code"], 400);
        let msg = out.message();
        assert!(msg.starts_with("tollgate injector: "), "{msg}");
        assert!(
            msg.contains(expected),
            "{key}={value}: {msg:?} should mention {expected:?}"
        );
        let cross_check = matches!(
            expected,
            "above its limit" | "below the sidecar memory limit"
        );
        assert!(
            cross_check || msg.contains(key),
            "{msg:?} should name {key}"
        );
    }
}

#[test]
fn a_pod_without_any_tenant_is_denied() {
    // The sidecar cannot start without tenants: deny now rather than inject a crash loop.
    let inj = Injector::new(config(&[]).unwrap());
    let out = send(&inj, &review(opted_in()));
    assert!(!out.allowed());
    assert!(out.patched.is_none());
    assert!(
        out.message().contains("config.tollgate.dev/tenants"),
        "{}",
        out.message()
    );
    let pod =
        agent_pod(json!({ "tollgate.dev/inject": "true", "config.tollgate.dev/tenant": "acme" }));
    let out = send(&inj, &review(pod));
    assert_eq!(
        env_value(sidecar(out.pod()), "TOLLGATE_TENANTS").as_deref(),
        Some("acme")
    );
}

#[test]
fn an_unclear_opt_in_is_denied() {
    for value in ["yes", "True", "1", ""] {
        let out = send(
            &injector(),
            &review(agent_pod(json!({ "tollgate.dev/inject": value }))),
        );
        assert!(!out.allowed(), "{value:?}");
        assert!(out.patched.is_none());
        assert!(
            out.message().contains("must be \"true\" or \"false\""),
            "{}",
            out.message()
        );
    }
}

#[test]
fn bodies_that_are_not_admission_reviews_are_bad_requests() {
    let inj = injector();
    let mut no_uid = review(opted_in());
    no_uid["request"].as_object_mut().unwrap().remove("uid");
    let mut v1beta1 = review(opted_in());
    v1beta1["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"this is not json".to_vec(), "not JSON"),
        (b"".to_vec(), "not JSON"),
        (
            json!({ "kind": "Pod" }).to_string().into_bytes(),
            "expected apiVersion",
        ),
        (v1beta1.to_string().into_bytes(), "admission.k8s.io/v1beta1"),
        (
            json!({ "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview" })
                .to_string()
                .into_bytes(),
            "no \"request\"",
        ),
        (no_uid.to_string().into_bytes(), "uid"),
    ];
    for (body, expected) in cases {
        let err = inj.review(&body).expect_err("must be rejected");
        assert!(
            err.to_string().contains(expected),
            "{err} should mention {expected:?}"
        );
    }
}

#[test]
fn malformed_pods_are_denied_without_a_patch() {
    let inj = injector();
    let mut no_object = review(opted_in());
    no_object["request"]
        .as_object_mut()
        .unwrap()
        .remove("object");
    let mut no_kind = review(opted_in());
    no_kind["request"].as_object_mut().unwrap().remove("kind");
    let mut containers_not_list = opted_in();
    containers_not_list["spec"]["containers"] = json!({ "name": "agent" });
    let mut no_containers = opted_in();
    no_containers["spec"]["containers"] = json!([]);
    let mut unnamed = opted_in();
    unnamed["spec"]["containers"][1]
        .as_object_mut()
        .unwrap()
        .remove("name");
    let mut env_not_list = opted_in();
    env_not_list["spec"]["containers"][0]["env"] = json!("MODEL=large");
    let mut no_spec = opted_in();
    no_spec.as_object_mut().unwrap().remove("spec");
    let cases = vec![
        (no_object, "no pod object"),
        (no_kind, "no kind"),
        (
            review(agent_pod(json!({ "tollgate.dev/inject": true }))),
            "is not a string",
        ),
        (review(containers_not_list), "spec.containers is not a list"),
        (review(no_containers), "spec.containers is missing or empty"),
        (review(unnamed), "spec.containers[1] has no name"),
        (review(env_not_list), "spec.containers[0].env is not a list"),
        (review(no_spec), "no spec"),
    ];
    for (rev, expected) in cases {
        let out = send(&inj, &rev);
        assert!(!out.allowed(), "{expected}");
        assert!(out.patched.is_none());
        assert!(
            out.message().contains(expected),
            "{:?} should mention {expected:?}",
            out.message()
        );
    }
}

#[test]
fn collisions_with_the_sidecar_are_denied() {
    let inj = injector();
    let mut named = opted_in();
    named["spec"]["containers"][1]["name"] = json!(SIDECAR_NAME);
    let mut volume = opted_in();
    volume["spec"]["volumes"] = json!([{ "name": REGION_VOLUME, "emptyDir": {} }]);
    let mut mount = opted_in();
    mount["spec"]["containers"][0]["volumeMounts"] =
        json!([{ "name": "scratch", "mountPath": "/var/run/tollgate/" }]);
    let mut port = opted_in();
    port["spec"]["containers"][1]["ports"] = json!([{ "containerPort": 7072 }]);
    for (pod, expected) in [
        (port, "container \"tools\" declaring port 7072"),
        (named, "a container named \"tollgate-sidecar\""),
        (volume, "a volume named \"tollgate-region\""),
        (mount, "a volume mount at /var/run/tollgate"),
    ] {
        let out = send(&inj, &review(pod));
        assert!(!out.allowed());
        assert!(out.patched.is_none());
        assert!(out.message().contains(expected), "{}", out.message());
    }
}

#[test]
fn injector_flags_are_validated_at_start() {
    assert!(config(&[]).is_ok(), "the defaults are valid");
    for (flags, expected) in [
        (
            vec!["--memory-request", "8Mi", "--memory-limit", "16Mi"],
            "region size",
        ),
        (
            vec!["--cpu-request", "1", "--cpu-limit", "100m"],
            "above its limit",
        ),
        (
            vec!["--authority", "tollgate-authority:7070"],
            "--authority",
        ),
        (vec!["--sidecar-image", ""], "--sidecar-image"),
        (vec!["--sidecar-uid", "0"], "root"),
        (vec!["--region-size", "sixteen"], "--region-size"),
        (vec!["--lanes", "many"], "--lanes"),
    ] {
        let err = config(&flags).expect_err("must be rejected");
        let msg = format!("{err:#}");
        assert!(
            msg.contains(expected),
            "{flags:?}: {msg:?} should mention {expected:?}"
        );
    }
}

/// What agents need for their liveness locks: write access to the region's folder for
/// every container through the pod's group, and nothing more (no shared process
/// namespace, no uid of the injector's choosing for app containers).
#[test]
fn every_container_writes_the_region_through_the_pod_group_without_a_shared_process_namespace() {
    let mut pod = opted_in();
    // An app container under its own uid and group.
    pod["spec"]["containers"][1]["securityContext"] =
        json!({ "runAsUser": 4321, "runAsGroup": 4321, "runAsNonRoot": true });
    let out = send(&injector(), &review(pod.clone()));
    let patched = out.pod();
    let spec = &patched["spec"];
    assert_eq!(spec["securityContext"]["fsGroup"], json!(65532));
    assert!(
        spec.get("shareProcessNamespace").is_none(),
        "the injector never shares the process namespace"
    );
    assert_eq!(
        spec["containers"][1]["securityContext"], pod["spec"]["containers"][1]["securityContext"],
        "an app container keeps its uid"
    );
    let region_mount = |c: &Value| {
        c["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["name"] == REGION_VOLUME)
            .cloned()
            .expect("the region is mounted")
    };
    for c in spec["containers"]
        .as_array()
        .unwrap()
        .iter()
        .chain(std::iter::once(sidecar(patched)))
    {
        let m = region_mount(c);
        assert_eq!(m["mountPath"], REGION_DIR, "{}", c["name"]);
        assert_ne!(
            m["readOnly"],
            json!(true),
            "{} writes the region",
            c["name"]
        );
    }
    let region = &spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == REGION_VOLUME)
        .expect("the region volume")["emptyDir"];
    assert_eq!(region["medium"], "Memory");

    // A pod's own setting is left alone, either way.
    for share in [true, false] {
        let mut pod = opted_in();
        pod["spec"]["shareProcessNamespace"] = json!(share);
        let out = send(&injector(), &review(pod));
        assert_eq!(out.pod()["spec"]["shareProcessNamespace"], json!(share));
        assert!(out.warnings().is_empty(), "{:?}", out.warnings());
    }
}

#[test]
fn a_read_only_region_mount_is_made_read_write_with_a_warning() {
    let mut pod = opted_in();
    pod["spec"]["containers"][1]["volumeMounts"] =
        json!([{ "name": REGION_VOLUME, "mountPath": REGION_DIR, "readOnly": true }]);
    let out = send(&injector(), &review(pod));
    assert_eq!(
        out.pod()["spec"]["containers"][1]["volumeMounts"],
        json!([{ "name": REGION_VOLUME, "mountPath": REGION_DIR }])
    );
    assert!(
        out.warnings().iter().any(|w| w.contains("made read-write")),
        "{:?}",
        out.warnings()
    );
}

#[test]
fn a_gateway_config_injects_the_gateway_and_points_the_apps_at_it() {
    let mut pod = agent_pod(json!({
        "tollgate.dev/inject": "true",
        "config.tollgate.dev/gateway-config": "agent-gateway",
        "config.tollgate.dev/gateway-secret": "agent-gateway-keys",
    }));
    // The second container routes its calls elsewhere on purpose: kept, with a warning.
    pod["spec"]["containers"][1]["env"] =
        json!([{ "name": "OPENAI_BASE_URL", "value": "https://proxy.example.com/v1" }]);
    let out = send(&injector(), &review(pod));
    assert!(out.allowed(), "{}", out.message());
    let pod = out.pod();
    let inits = pod["spec"]["initContainers"].as_array().unwrap();
    assert_eq!(inits[0]["name"], SIDECAR_NAME);
    let gw = &inits[1];
    assert_eq!(
        gw["name"], GATEWAY_NAME,
        "the gateway starts after the sidecar"
    );
    assert_eq!(inits[2]["name"], "migrate");
    assert_eq!(gw["restartPolicy"], "Always");
    assert_eq!(gw["command"], json!(["/usr/local/bin/tollgate", "gateway"]));
    let args: Vec<&str> = gw["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        args.windows(2)
            .any(|w| w == ["--config", "/etc/tollgate-gateway/gateway.toml"])
    );
    assert!(args.windows(2).any(|w| w == ["--listen", "0.0.0.0:8787"]));
    assert_eq!(
        env_value(gw, "TOLLGATE_REGION").as_deref(),
        Some("/var/run/tollgate/region")
    );
    assert_eq!(gw["startupProbe"]["httpGet"]["port"], 8787);
    let mounts: Vec<&str> = gw["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        mounts,
        [
            "tollgate-region",
            "tollgate-gateway-config",
            "tollgate-gateway-secrets"
        ]
    );
    let volumes = pod["spec"]["volumes"].as_array().unwrap();
    let cm = volumes
        .iter()
        .find(|v| v["name"] == "tollgate-gateway-config")
        .unwrap();
    assert_eq!(cm["configMap"]["name"], "agent-gateway");
    assert!(
        volumes
            .iter()
            .any(|v| v["secret"]["secretName"] == "agent-gateway-keys")
    );
    let agent = &pod["spec"]["containers"][0];
    assert_eq!(
        env_value(agent, "OPENAI_BASE_URL").as_deref(),
        Some("http://127.0.0.1:8787/v1")
    );
    assert_eq!(
        env_value(agent, "ANTHROPIC_BASE_URL").as_deref(),
        Some("http://127.0.0.1:8787")
    );
    let tools = &pod["spec"]["containers"][1];
    assert_eq!(
        env_value(tools, "OPENAI_BASE_URL").as_deref(),
        Some("https://proxy.example.com/v1")
    );
    assert_eq!(
        env_value(tools, "ANTHROPIC_BASE_URL").as_deref(),
        Some("http://127.0.0.1:8787")
    );
    let warnings = out.warnings();
    assert!(
        warnings.iter().any(|w| w.contains("OPENAI_BASE_URL")),
        "{warnings:?}"
    );
}

#[test]
fn without_a_gateway_config_no_gateway_and_a_lone_secret_is_refused() {
    let out = send(&injector(), &review(opted_in()));
    let pod = out.pod();
    assert_eq!(pod["spec"]["initContainers"].as_array().unwrap().len(), 2);
    assert!(env_value(&pod["spec"]["containers"][0], "OPENAI_BASE_URL").is_none());
    let lone = agent_pod(json!({
        "tollgate.dev/inject": "true",
        "config.tollgate.dev/gateway-secret": "keys",
    }));
    let out = send(&injector(), &review(lone));
    assert!(!out.allowed());
    assert!(
        out.message().contains("gateway-config"),
        "{}",
        out.message()
    );
    let bad = agent_pod(json!({
        "tollgate.dev/inject": "true",
        "config.tollgate.dev/gateway-config": "Not_A_Name",
    }));
    assert!(!send(&injector(), &review(bad)).allowed());
}
