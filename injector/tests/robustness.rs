//! Nothing panics on bad input, and whatever the injector patches is a valid patch: random
//! bodies, and valid reviews with a random value grafted anywhere the injector looks.

use base64::Engine as _;
use clap::Parser;
use proptest::prelude::*;
use serde_json::{Value, json};
use tollgate_injector::Injector;
use tollgate_injector::cli::InjectorArgs;

#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    args: InjectorArgs,
}

fn injector() -> Injector {
    Injector::new(
        Flags::try_parse_from(["injector", "--tenants", "acme"])
            .unwrap()
            .args
            .config()
            .unwrap(),
    )
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "[a-zA-Z0-9/.:~ -]{0,12}".prop_map(Value::String),
        Just(json!("true")),
        Just(json!("7072")),
        Just(json!(7072)),
    ];
    leaf.prop_recursive(3, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z]{1,10}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn review(pod: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u-1",
            "kind": { "group": "", "version": "v1", "kind": "Pod" },
            "namespace": "agents",
            "operation": "CREATE",
            "object": pod,
        },
    })
}

fn pod() -> Value {
    json!({
        "metadata": { "name": "p", "annotations": { "tollgate.dev/inject": "true" } },
        "spec": {
            "initContainers": [{ "name": "init" }],
            "containers": [
                { "name": "a", "env": [{ "name": "X", "value": "1" }], "volumeMounts": [], "ports": [{ "containerPort": 80 }] },
                { "name": "b" },
            ],
            "volumes": [{ "name": "v", "emptyDir": {} }],
            "securityContext": {},
        },
    })
}

/// Places the injector reads; a random value goes into one of them.
const PATHS: &[&str] = &[
    "/metadata",
    "/metadata/annotations",
    "/metadata/annotations/tollgate.dev~1inject",
    "/metadata/annotations/config.tollgate.dev~1tenants",
    "/metadata/annotations/config.tollgate.dev~1memory-limit",
    "/metadata/labels",
    "/spec",
    "/spec/containers",
    "/spec/containers/0",
    "/spec/containers/0/name",
    "/spec/containers/0/env",
    "/spec/containers/0/env/0",
    "/spec/containers/0/volumeMounts",
    "/spec/containers/0/ports",
    "/spec/containers/0/ports/0/containerPort",
    "/spec/containers/1",
    "/spec/initContainers",
    "/spec/initContainers/0",
    "/spec/volumes",
    "/spec/volumes/0",
    "/spec/securityContext",
    "/spec/securityContext/fsGroup",
];

fn graft(mut doc: Value, path: &str, value: Value) -> Value {
    let (parent, last) = path.rsplit_once('/').unwrap();
    let key = last.replace("~1", "/").replace("~0", "~");
    match doc.pointer_mut(parent) {
        Some(Value::Object(map)) => {
            map.insert(key, value);
        }
        Some(Value::Array(list)) => {
            if let Ok(i) = key.parse::<usize>()
                && i < list.len()
            {
                list[i] = value;
            }
        }
        _ => {}
    }
    doc
}

/// Checks one answer: an AdmissionReview for uid u-1; a patch only with allowed: true, and
/// then it applies and yields exactly one sidecar.
fn check(review: &Value, answer: &Value) {
    let response = &answer["response"];
    assert_eq!(response["uid"], "u-1");
    let allowed = response["allowed"].as_bool().expect("allowed is a bool");
    if let Some(patch) = response["patch"].as_str() {
        assert!(allowed);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(patch)
            .unwrap();
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
        let mut pod = review["request"]["object"].clone();
        json_patch::patch(&mut pod, &patch).expect("every patch the injector sends applies");
        let sidecars = pod["spec"]["initContainers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["name"] == "tollgate-sidecar")
            .count();
        assert_eq!(sidecars, 1);
    } else if !allowed {
        let message = response["status"]["message"].as_str().unwrap();
        assert!(message.starts_with("tollgate injector: "), "{message}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bodies_never_panic(body in arb_json()) {
        let inj = injector();
        // Either a 400-style error or an answer; never a panic.
        if let Ok(answer) = inj.review(body.to_string().as_bytes()) {
            prop_assert!(answer["response"]["uid"].is_string());
        }
        let _ = inj.review(&body.to_string().into_bytes()[..body.to_string().len() / 2]);
    }

    #[test]
    fn random_values_anywhere_in_a_pod_are_answered_sanely(
        path in prop::sample::select(PATHS),
        value in arb_json(),
    ) {
        let review = review(graft(pod(), path, value));
        let answer = injector().review(review.to_string().as_bytes()).expect("a well-formed review");
        check(&review, &answer);
    }
}

#[test]
fn the_untouched_pod_is_injected() {
    let review = review(pod());
    let answer = injector().review(review.to_string().as_bytes()).unwrap();
    assert!(answer["response"]["patch"].is_string());
    check(&review, &answer);
}
