//! Builds the JSON Patch (RFC 6902) that injects the sidecar into one pod.
//!
//! What the patched pod holds:
//! - the sidecar as the first init container with `restartPolicy: Always` (a Kubernetes
//!   native sidecar, 1.29+), running the image's lean `tollgate-sidecar` binary: it starts before the app containers and its startup probe on
//!   `/readyz` holds them back until the region exists; it stops after them;
//! - an in-memory emptyDir (`medium: Memory`, `sizeLimit` = the region size) mounted at
//!   [`REGION_DIR`] in the sidecar and in every app container, and `TOLLGATE_REGION` set to
//!   [`REGION_PATH`] in every app container;
//! - a disk-backed emptyDir for the sidecar's private state (signing key, outbox) mounted at
//!   [`STATE_DIR`] in the sidecar only;
//! - a pod `fsGroup` when the pod has none (a pod's own is kept): the kubelet makes the
//!   region's emptyDir group-owned by it and setgid, and adds it to every container's groups,
//!   so the region (mode 0660, created by the sidecar) and the folder of agents' liveness
//!   locks beside it (`<region>.holders/`, mode 2770, created by the sidecar; every agent
//!   process creates and locks a file there) are readable and writable by the sidecar and by
//!   every app container, whatever uid each runs as. The region's mount is read-write in
//!   every container (a read-only one is made read-write, with a warning);
//! - nothing else shared: liveness comes from those locks, not from seeing the agents'
//!   processes, so the pod needs no `shareProcessNamespace`. The injector never sets it and
//!   leaves a pod's own setting as it is;
//! - the status annotation, so the pod is never injected twice, and the label
//!   `tollgate.dev/sidecar: injected`, so a PodMonitor can scrape the sidecars;
//! - with `config.tollgate.dev/gateway-config: <ConfigMap>`: `tollgate gateway` as the
//!   second init container (native sidecar, started after the sidecar, probed on its
//!   `/healthz`), its configuration mounted from the ConfigMap's `gateway.toml` (and the
//!   Secret of `gateway-secret`, if named), attached to the same region; every app container
//!   gets `OPENAI_BASE_URL` and `ANTHROPIC_BASE_URL` pointing at it on localhost (a value the
//!   container sets itself is kept, with a warning).

use serde_json::{Map, Value, json};

use crate::names::*;
use crate::settings::{LogFormat, SidecarSettings};

/// Why a pod cannot be injected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InjectError {
    #[error("the pod is malformed: {0}")]
    Malformed(String),
    #[error(
        "the pod already has {0}; it collides with the Tollgate sidecar (remove it, or opt out with {INJECT_ANNOTATION}: \"false\")"
    )]
    Conflict(String),
}

/// The patch and the warnings to show the user.
#[derive(Debug, Clone, PartialEq)]
pub struct Injection {
    pub patch: Vec<Value>,
    pub warnings: Vec<String>,
}

/// Escapes one JSON Pointer token (RFC 6901).
pub fn pointer_token(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

fn add(path: impl Into<String>, value: Value) -> Value {
    json!({ "op": "add", "path": path.into(), "value": value })
}

fn replace(path: impl Into<String>, value: Value) -> Value {
    json!({ "op": "replace", "path": path.into(), "value": value })
}

/// An optional array field: absent (or null) is `None`; anything but an array is malformed.
fn opt_array<'a>(
    obj: &'a Map<String, Value>,
    field: &str,
    what: &str,
) -> Result<Option<&'a Vec<Value>>, InjectError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => Ok(Some(a)),
        Some(_) => Err(InjectError::Malformed(format!(
            "{what}.{field} is not a list"
        ))),
    }
}

fn name_of(v: &Value) -> Option<&str> {
    v.get("name").and_then(Value::as_str)
}

/// Builds the patch for `pod` (the AdmissionRequest's object) with `settings`.
pub fn inject(pod: &Value, settings: &SidecarSettings) -> Result<Injection, InjectError> {
    let malformed = |m: &str| InjectError::Malformed(m.to_owned());
    let pod = pod
        .as_object()
        .ok_or_else(|| malformed("the object is not a JSON object"))?;
    let spec = pod
        .get("spec")
        .and_then(Value::as_object)
        .ok_or_else(|| malformed("it has no spec object"))?;
    let containers = opt_array(spec, "containers", "spec")?
        .filter(|c| !c.is_empty())
        .ok_or_else(|| malformed("spec.containers is missing or empty"))?;
    let init_containers = opt_array(spec, "initContainers", "spec")?;
    let volumes = opt_array(spec, "volumes", "spec")?;

    let mut patch = Vec::new();
    let mut warnings = Vec::new();

    // Collisions: refuse rather than produce a pod with two things of one name.
    let listed = [
        ("containers", Some(containers)),
        ("initContainers", init_containers),
    ];
    for (field, list) in listed {
        for (i, c) in list.into_iter().flatten().enumerate() {
            let name = name_of(c)
                .ok_or_else(|| InjectError::Malformed(format!("spec.{field}[{i}] has no name")))?;
            if name == SIDECAR_NAME || (settings.gateway_config.is_some() && name == GATEWAY_NAME) {
                return Err(InjectError::Conflict(format!("a container named {name:?}")));
            }
        }
    }
    // The sidecar listens on SIDECAR_HTTP_PORT in the pod's network namespace.
    for c in containers
        .iter()
        .chain(init_containers.into_iter().flatten())
    {
        let ports = c
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        for p in ports.filter_map(|p| p.get("containerPort")) {
            if p.as_u64() == Some(u64::from(SIDECAR_HTTP_PORT)) {
                return Err(InjectError::Conflict(format!(
                    "container {:?} declaring port {SIDECAR_HTTP_PORT}, the sidecar's HTTP port",
                    name_of(c).unwrap_or("?")
                )));
            }
            if settings.gateway_config.is_some() && p.as_u64() == Some(u64::from(GATEWAY_PORT)) {
                return Err(InjectError::Conflict(format!(
                    "container {:?} declaring port {GATEWAY_PORT}, the gateway's port",
                    name_of(c).unwrap_or("?")
                )));
            }
        }
    }
    for v in volumes.into_iter().flatten() {
        if let Some(name) = name_of(v)
            && (name == REGION_VOLUME
                || name == TOKEN_VOLUME
                || name == STATE_VOLUME
                || (settings.gateway_config.is_some()
                    && (name == GATEWAY_CONFIG_VOLUME || name == GATEWAY_SECRET_VOLUME)))
        {
            return Err(InjectError::Conflict(format!("a volume named {name:?}")));
        }
    }

    // Status annotation first: the metadata object always exists on a pod, annotations may not.
    let status_path = format!("/metadata/annotations/{}", pointer_token(STATUS_ANNOTATION));
    match pod.get("metadata").and_then(Value::as_object) {
        None => return Err(malformed("it has no metadata object")),
        Some(meta) => match meta.get("annotations") {
            None | Some(Value::Null) => patch.push(add(
                "/metadata/annotations",
                json!({ STATUS_ANNOTATION: STATUS_INJECTED }),
            )),
            Some(Value::Object(_)) => patch.push(add(status_path, json!(STATUS_INJECTED))),
            Some(_) => return Err(malformed("metadata.annotations is not an object")),
        },
    }

    // The label that lets a PodMonitor find the sidecars.
    match pod.get("metadata").and_then(|m| m.get("labels")) {
        None | Some(Value::Null) => patch.push(add(
            "/metadata/labels",
            json!({ SIDECAR_LABEL: STATUS_INJECTED }),
        )),
        Some(Value::Object(_)) => patch.push(add(
            format!("/metadata/labels/{}", pointer_token(SIDECAR_LABEL)),
            json!(STATUS_INJECTED),
        )),
        Some(_) => return Err(malformed("metadata.labels is not an object")),
    }

    // Volumes.
    let mut new_volumes = vec![
        json!({
            "name": REGION_VOLUME,
            "emptyDir": { "medium": "Memory", "sizeLimit": settings.region_size.as_str() },
        }),
        // Disk-backed: the outbox must survive a sidecar restart, not a node's memory.
        json!({ "name": STATE_VOLUME, "emptyDir": { "sizeLimit": "256Mi" } }),
    ];
    if let Some(secret) = &settings.token_secret {
        new_volumes.push(json!({
            "name": TOKEN_VOLUME,
            "secret": {
                "secretName": secret,
                "items": [{ "key": TOKEN_KEY, "path": TOKEN_KEY }],
                "defaultMode": 0o440,
            },
        }));
    }
    if let Some(cm) = &settings.gateway_config {
        new_volumes.push(json!({
            "name": GATEWAY_CONFIG_VOLUME,
            "configMap": {
                "name": cm,
                "items": [{ "key": GATEWAY_CONFIG_KEY, "path": GATEWAY_CONFIG_KEY }],
            },
        }));
        if let Some(secret) = &settings.gateway_secret {
            new_volumes.push(json!({
                "name": GATEWAY_SECRET_VOLUME,
                "secret": { "secretName": secret, "defaultMode": 0o440 },
            }));
        }
    }
    match volumes {
        None => patch.push(add("/spec/volumes", Value::Array(new_volumes))),
        Some(_) => patch.extend(new_volumes.into_iter().map(|v| add("/spec/volumes/-", v))),
    }

    // The sidecar goes first among the init containers, so the region is ready for every
    // container after it.
    let sidecar = sidecar_container(settings);
    let gateway = settings
        .gateway_config
        .as_ref()
        .map(|_| gateway_container(settings));
    match init_containers {
        None => patch.push(add(
            "/spec/initContainers",
            Value::Array(std::iter::once(sidecar).chain(gateway).collect()),
        )),
        Some(_) => {
            patch.push(add("/spec/initContainers/0", sidecar));
            // After the sidecar: the region exists before the gateway attaches.
            if let Some(g) = gateway {
                patch.push(add("/spec/initContainers/1", g));
            }
        }
    }

    // Every app container: the region's mount and TOLLGATE_REGION.
    share_region(containers, &mut patch, &mut warnings)?;
    if settings.gateway_config.is_some() {
        point_at_gateway(containers, &mut patch, &mut warnings)?;
    }

    // fsGroup, so the app containers share the region's group.
    match spec.get("securityContext") {
        None | Some(Value::Null) => patch.push(add(
            "/spec/securityContext",
            json!({ "fsGroup": settings.run_as_user, "fsGroupChangePolicy": "OnRootMismatch" }),
        )),
        Some(Value::Object(sc)) => {
            if sc.get("fsGroup").is_none_or(Value::is_null) {
                patch.push(add(
                    "/spec/securityContext/fsGroup",
                    json!(settings.run_as_user),
                ));
                if sc.get("fsGroupChangePolicy").is_none_or(Value::is_null) {
                    patch.push(add(
                        "/spec/securityContext/fsGroupChangePolicy",
                        json!("OnRootMismatch"),
                    ));
                }
            }
        }
        Some(_) => return Err(malformed("spec.securityContext is not an object")),
    }

    Ok(Injection { patch, warnings })
}

/// For a pod injected already: the patch that gives the region to app containers added after
/// the injection (by a webhook that ran later, which is why the chart asks for re-invocation).
/// Empty when every app container has it, or when the pod has no region volume to share.
pub fn top_up(pod: &Value) -> Result<Injection, InjectError> {
    let mut patch = Vec::new();
    let mut warnings = Vec::new();
    let Some(spec) = pod.get("spec").and_then(Value::as_object) else {
        return Err(InjectError::Malformed("it has no spec object".into()));
    };
    let has_region = opt_array(spec, "volumes", "spec")?
        .into_iter()
        .flatten()
        .any(|v| name_of(v) == Some(REGION_VOLUME));
    if let (true, Some(containers)) = (has_region, opt_array(spec, "containers", "spec")?) {
        share_region(containers, &mut patch, &mut warnings)?;
    }
    Ok(Injection { patch, warnings })
}

/// Mounts the region at [`REGION_DIR`] in every app container that does not have it yet and
/// sets `TOLLGATE_REGION` there.
fn share_region(
    containers: &[Value],
    patch: &mut Vec<Value>,
    warnings: &mut Vec<String>,
) -> Result<(), InjectError> {
    let mount = json!({ "name": REGION_VOLUME, "mountPath": REGION_DIR });
    let region_env = json!({ "name": "TOLLGATE_REGION", "value": REGION_PATH });
    for (i, c) in containers.iter().enumerate() {
        let c = c.as_object().ok_or_else(|| {
            InjectError::Malformed(format!("spec.containers[{i}] is not an object"))
        })?;
        let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
        let what = format!("spec.containers[{i}]");
        let base = format!("/spec/containers/{i}");
        match opt_array(c, "volumeMounts", &what)? {
            None => patch.push(add(format!("{base}/volumeMounts"), json!([mount]))),
            Some(mounts) => {
                let at_region_dir = mounts.iter().enumerate().find(|(_, m)| {
                    m.get("mountPath")
                        .and_then(Value::as_str)
                        .map(|p| p.trim_end_matches('/'))
                        == Some(REGION_DIR)
                });
                match at_region_dir {
                    Some((j, m)) if name_of(m) == Some(REGION_VOLUME) => {
                        // Agents write the region (claims, counters) and create their
                        // liveness lock files beside it.
                        if m.get("readOnly").and_then(Value::as_bool) == Some(true) {
                            warnings.push(format!(
                                "container {name:?}: the region's mount at {REGION_DIR} was made read-write (agents write the region and their liveness locks beside it)"
                            ));
                            patch.push(replace(format!("{base}/volumeMounts/{j}"), mount.clone()));
                        }
                    }
                    Some((_, m)) => {
                        return Err(InjectError::Conflict(format!(
                            "a volume mount at {REGION_DIR} in container {name:?} (volume {:?})",
                            name_of(m).unwrap_or("?")
                        )));
                    }
                    None => patch.push(add(format!("{base}/volumeMounts/-"), mount.clone())),
                }
            }
        }
        match opt_array(c, "env", &what)? {
            None => patch.push(add(format!("{base}/env"), json!([region_env]))),
            Some(env) => match env
                .iter()
                .position(|e| name_of(e) == Some("TOLLGATE_REGION"))
            {
                Some(j) => {
                    if env[j] != region_env {
                        warnings.push(format!(
                            "container {name:?}: TOLLGATE_REGION was replaced by {REGION_PATH}, the region the Tollgate sidecar serves"
                        ));
                        patch.push(replace(format!("{base}/env/{j}"), region_env.clone()));
                    }
                }
                None => patch.push(add(format!("{base}/env/-"), region_env.clone())),
            },
        }
    }
    Ok(())
}

/// Sets `OPENAI_BASE_URL` and `ANTHROPIC_BASE_URL` to the gateway in every app container
/// (after [`share_region`], so each has an `env` list), keeping a value the container sets.
fn point_at_gateway(
    containers: &[Value],
    patch: &mut Vec<Value>,
    warnings: &mut Vec<String>,
) -> Result<(), InjectError> {
    let urls = [
        (
            "OPENAI_BASE_URL",
            format!("http://127.0.0.1:{GATEWAY_PORT}/v1"),
        ),
        (
            "ANTHROPIC_BASE_URL",
            format!("http://127.0.0.1:{GATEWAY_PORT}"),
        ),
    ];
    for (i, c) in containers.iter().enumerate() {
        let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
        let env = c.get("env").and_then(Value::as_array);
        for (var, url) in &urls {
            match env.and_then(|e| e.iter().find(|e| name_of(e) == Some(var))) {
                Some(e) if e.get("value").and_then(Value::as_str) != Some(url.as_str()) => {
                    warnings.push(format!(
                        "container {name:?} sets {var} itself; it was kept, so its calls do not go through the Tollgate gateway"
                    ));
                }
                Some(_) => {}
                None => patch.push(add(
                    format!("/spec/containers/{i}/env/-"),
                    json!({ "name": var, "value": url }),
                )),
            }
        }
    }
    Ok(())
}

/// The gateway container: `tollgate gateway` on [`GATEWAY_PORT`], attached to the region,
/// reading the sidecar's metrics for its budget headers.
/// The resources of an injected container (sidecar or gateway).
fn resources(s: &SidecarSettings) -> Value {
    json!({
        "requests": { "cpu": s.cpu_request.as_str(), "memory": s.memory_request.as_str() },
        "limits": { "cpu": s.cpu_limit.as_str(), "memory": s.memory_limit.as_str() },
    })
}

/// The security context of an injected container: non-root, read-only, no privilege.
fn locked_down(s: &SidecarSettings) -> Value {
    json!({
        "runAsNonRoot": true,
        "runAsUser": s.run_as_user,
        "runAsGroup": s.run_as_user,
        "readOnlyRootFilesystem": true,
        "allowPrivilegeEscalation": false,
        "privileged": false,
        "capabilities": { "drop": ["ALL"] },
        "seccompProfile": { "type": "RuntimeDefault" },
    })
}

pub fn gateway_container(s: &SidecarSettings) -> Value {
    let mut mounts = vec![
        json!({ "name": REGION_VOLUME, "mountPath": REGION_DIR }),
        json!({ "name": GATEWAY_CONFIG_VOLUME, "mountPath": GATEWAY_CONFIG_DIR, "readOnly": true }),
    ];
    if s.gateway_secret.is_some() {
        mounts.push(
            json!({ "name": GATEWAY_SECRET_VOLUME, "mountPath": GATEWAY_SECRET_DIR, "readOnly": true }),
        );
    }
    let log_format = match s.log_format {
        LogFormat::Text => "text",
        LogFormat::Json => "json",
    };
    let probe = |period: u32, failures: u32| {
        json!({
            "httpGet": { "path": "/healthz", "port": GATEWAY_PORT, "scheme": "HTTP" },
            "periodSeconds": period,
            "timeoutSeconds": 1,
            "failureThreshold": failures,
        })
    };
    json!({
        "name": GATEWAY_NAME,
        "image": s.image,
        "imagePullPolicy": s.image_pull_policy.as_str(),
        "command": [GATEWAY_COMMAND, "gateway"],
        "args": [
            "--config", format!("{GATEWAY_CONFIG_DIR}/{GATEWAY_CONFIG_KEY}"),
            // The pod's network namespace: the kubelet probes the pod IP; the gateway keys,
            // not the address, keep other pods out.
            "--listen", format!("0.0.0.0:{GATEWAY_PORT}"),
            "--sidecar-metrics", format!("http://127.0.0.1:{SIDECAR_HTTP_PORT}/metrics"),
            "--log-format", log_format,
        ],
        "restartPolicy": "Always",
        "env": [
            { "name": "TOLLGATE_REGION", "value": REGION_PATH },
            { "name": "TOLLGATE_LOG", "value": s.log_level.as_str() },
        ],
        "ports": [{ "name": "tollgate-gw", "containerPort": GATEWAY_PORT, "protocol": "TCP" }],
        "startupProbe": probe(1, 120),
        "readinessProbe": probe(5, 3),
        "livenessProbe": probe(10, 3),
        "resources": resources(s),
        "securityContext": locked_down(s),
        "volumeMounts": mounts,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    })
}

/// The sidecar container: the image's lean [`SIDECAR_COMMAND`], which takes the same flags
/// and environment as `tollgate sidecar`.
pub fn sidecar_container(s: &SidecarSettings) -> Value {
    let mut env = vec![
        json!({ "name": "TOLLGATE_REGION", "value": REGION_PATH }),
        json!({ "name": "TOLLGATE_STATE_DIR", "value": STATE_DIR }),
        json!({ "name": "TOLLGATE_AUTHORITY", "value": s.authority }),
        json!({ "name": "TOLLGATE_SIDECAR_ID", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } }),
        json!({ "name": "TOLLGATE_HTTP", "value": format!("0.0.0.0:{SIDECAR_HTTP_PORT}") }),
        json!({ "name": "TOLLGATE_LOG", "value": s.log_level.as_str() }),
    ];
    if !s.tenants.is_empty() {
        env.push(json!({ "name": "TOLLGATE_TENANTS", "value": s.tenants.join(",") }));
    }
    if let Some(lanes) = s.lanes {
        env.push(json!({ "name": "TOLLGATE_LANES", "value": lanes.to_string() }));
    }
    if let Some(allowance) = &s.emergency_allowance {
        env.push(json!({ "name": "TOLLGATE_EMERGENCY_ALLOWANCE", "value": allowance }));
    }
    let mut mounts = vec![
        json!({ "name": REGION_VOLUME, "mountPath": REGION_DIR }),
        json!({ "name": STATE_VOLUME, "mountPath": STATE_DIR }),
    ];
    if s.token_secret.is_some() {
        env.push(
            json!({ "name": "TOLLGATE_TOKEN_FILE", "value": format!("{TOKEN_DIR}/{TOKEN_KEY}") }),
        );
        mounts.push(json!({ "name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": true }));
    }
    let log_format = match s.log_format {
        LogFormat::Text => "text",
        LogFormat::Json => "json",
    };
    let probe = |path: &str, period: u32, failures: u32| {
        json!({
            "httpGet": { "path": path, "port": SIDECAR_HTTP_PORT, "scheme": "HTTP" },
            "periodSeconds": period,
            "timeoutSeconds": 1,
            "failureThreshold": failures,
        })
    };
    json!({
        "name": SIDECAR_NAME,
        "image": s.image,
        "imagePullPolicy": s.image_pull_policy.as_str(),
        "command": [SIDECAR_COMMAND],
        "args": ["--log-format", log_format],
        "restartPolicy": "Always",
        "env": env,
        "ports": [{ "name": "tollgate-http", "containerPort": SIDECAR_HTTP_PORT, "protocol": "TCP" }],
        // Up to 2 minutes to create the region and obtain the first leases before the app
        // containers may start.
        "startupProbe": probe("/readyz", 1, 120),
        "readinessProbe": probe("/readyz", 5, 3),
        "livenessProbe": probe("/healthz", 10, 3),
        "resources": resources(s),
        "securityContext": locked_down(s),
        "volumeMounts": mounts,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    })
}
