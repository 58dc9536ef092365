//! Prints the pod the injector makes of a pod or of a workload's pod template, so the result
//! can be checked (CI validates it against the Kubernetes schema) or an override debugged:
//!
//! ```text
//! cargo run -p tollgate-injector --example inject_pod -- [tollgate injector flags] < deployment.json
//! ```
//!
//! Reads one JSON object on stdin (a Pod, or anything with `spec.template`), runs it through
//! the same AdmissionReview path the webhook serves, applies the returned JSON Patch and prints
//! the resulting Pod. A denial prints the message on stderr and exits with status 2.

use std::io::Read;
use std::process::ExitCode;

use base64::Engine as _;
use clap::Parser;
use serde_json::{Value, json};
use tollgate_injector::Injector;
use tollgate_injector::cli::InjectorArgs;

#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    args: InjectorArgs,
}

fn main() -> anyhow::Result<ExitCode> {
    let flags = Flags::parse();
    let injector = Injector::new(flags.args.config()?);
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input)?;
    let object: Value = serde_json::from_str(&input)?;
    let namespace = object["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default")
        .to_owned();
    let mut pod = match object.pointer("/spec/template") {
        Some(template) => {
            let name = object["metadata"]["name"].as_str().unwrap_or("workload");
            let mut meta = template
                .get("metadata")
                .cloned()
                .unwrap_or_else(|| json!({}));
            meta["name"] = json!(format!("{name}-0"));
            meta["namespace"] = json!(namespace);
            json!({ "apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template["spec"] })
        }
        None => object,
    };
    let review = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "00000000-0000-0000-0000-000000000000",
            "kind": { "group": "", "version": "v1", "kind": "Pod" },
            "resource": { "group": "", "version": "v1", "resource": "pods" },
            "namespace": namespace,
            "operation": "CREATE",
            "object": pod,
        },
    });
    let out = injector.review(review.to_string().as_bytes())?;
    let response = &out["response"];
    if response["allowed"] != true {
        eprintln!(
            "denied: {}",
            response["status"]["message"].as_str().unwrap_or("?")
        );
        return Ok(ExitCode::from(2));
    }
    if let Some(warnings) = response["warnings"].as_array() {
        for w in warnings {
            eprintln!("warning: {}", w.as_str().unwrap_or_default());
        }
    }
    if let Some(patch) = response["patch"].as_str() {
        let bytes = base64::engine::general_purpose::STANDARD.decode(patch)?;
        let patch: json_patch::Patch = serde_json::from_slice(&bytes)?;
        json_patch::patch(&mut pod, &patch)?;
    } else {
        eprintln!("admitted without injection");
    }
    println!("{}", serde_json::to_string_pretty(&pod)?);
    Ok(ExitCode::SUCCESS)
}
