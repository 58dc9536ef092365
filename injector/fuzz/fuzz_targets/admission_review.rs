//! The mutating webhook's handler on an arbitrary HTTP body: `Injector::review` answers an
//! AdmissionReview or returns `BadReview` (HTTP 400), and never panics.
//!
//! On an answer it checks what the API server relies on: the response echoes the request's
//! uid; a patch comes only with `allowed: true`, is base64 of a JSON Patch that applies to
//! the pod it was computed for, and leaves exactly one Tollgate sidecar when the pod was not
//! injected before; a denial names the injector.
#![no_main]

use base64::Engine as _;
use clap::Parser;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tollgate_injector::Injector;
use tollgate_injector::cli::InjectorArgs;
use tollgate_injector::names::{SIDECAR_NAME, STATUS_ANNOTATION};

#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    args: InjectorArgs,
}

fn injector() -> &'static Injector {
    static INJECTOR: std::sync::OnceLock<Injector> = std::sync::OnceLock::new();
    INJECTOR.get_or_init(|| {
        let flags = Flags::try_parse_from(["injector", "--tenants", "acme"]).expect("flags");
        Injector::new(flags.args.config().expect("config"))
    })
}

fn check(body: &[u8], answer: &Value) {
    let response = &answer["response"];
    let review: Value = serde_json::from_slice(body).expect("an answered body is JSON");
    let request = &review["request"];
    assert_eq!(response["uid"], request["uid"], "the uid is echoed");
    let allowed = response["allowed"].as_bool().expect("allowed is a bool");
    if let Some(patch) = response["patch"].as_str() {
        assert!(allowed, "a patch on a denial");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(patch)
            .expect("the patch is base64");
        let patch: json_patch::Patch = serde_json::from_slice(&bytes).expect("a JSON Patch");
        let mut pod = request["object"].clone();
        json_patch::patch(&mut pod, &patch).expect("every patch the injector sends applies");
        let injected_before = request["object"]["metadata"]["annotations"]
            .get(STATUS_ANNOTATION)
            .is_some();
        if !injected_before {
            let sidecars = pod["spec"]["initContainers"].as_array().map_or(0, |c| {
                c.iter().filter(|c| c["name"] == SIDECAR_NAME).count()
            });
            assert_eq!(sidecars, 1, "one sidecar after injection");
        }
    } else if !allowed {
        let message = response["status"]["message"].as_str().expect("a message");
        assert!(message.starts_with("tollgate injector: "), "{message}");
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(answer) = injector().review(data) {
        check(data, &answer);
    }
});
