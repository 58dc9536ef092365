//! Names shared by the webhook, the chart and the agents: annotations, paths and ports.

/// Pod annotation that opts a pod in (`"true"`) or out (`"false"`, or absent).
pub const INJECT_ANNOTATION: &str = "tollgate.dev/inject";
/// Pod annotation the injector sets; its presence means "already injected".
pub const STATUS_ANNOTATION: &str = "tollgate.dev/status";
/// Value of [`STATUS_ANNOTATION`] on an injected pod.
pub const STATUS_INJECTED: &str = "injected";
/// Pod label the injector sets (value [`STATUS_INJECTED`]), so a PodMonitor can select the
/// injected pods and scrape their sidecars' `/metrics`.
pub const SIDECAR_LABEL: &str = "tollgate.dev/sidecar";
/// Prefix of the per-pod override annotations (`config.tollgate.dev/tenants`, ...).
pub const CONFIG_PREFIX: &str = "config.tollgate.dev/";
/// Namespace label the chart's namespaceSelector matches (`enabled`).
pub const NAMESPACE_LABEL: &str = "tollgate.dev/injection";

/// Name of the injected init container (native sidecar).
pub const SIDECAR_NAME: &str = "tollgate-sidecar";
/// The sidecar's executable in the `tollgate` image: the sidecar alone, with the flags and
/// environment of `tollgate sidecar` but none of the authority's or the webhook's code, so
/// its resident memory is a fraction of the all-in-one binary's.
pub const SIDECAR_COMMAND: &str = "/usr/local/bin/tollgate-sidecar";
/// Name of the in-memory emptyDir volume holding the region.
pub const REGION_VOLUME: &str = "tollgate-region";
/// Where the region's volume is mounted, in the sidecar and every app container.
pub const REGION_DIR: &str = "/var/run/tollgate";
/// The region file; app containers get it as `TOLLGATE_REGION`.
pub const REGION_PATH: &str = "/var/run/tollgate/region";
/// Name of the emptyDir holding the sidecar's private state (batch signing key, outbox of
/// unsent usage): mounted in the sidecar only, so app containers can neither read the key
/// nor touch unsent batches. It outlives sidecar restarts (the pod's lifetime).
pub const STATE_VOLUME: &str = "tollgate-sidecar-state";
/// Where the state volume is mounted in the sidecar (`TOLLGATE_STATE_DIR`).
pub const STATE_DIR: &str = "/var/lib/tollgate-sidecar";
/// Name of the volume holding the sidecar's credential (from a Secret).
pub const TOKEN_VOLUME: &str = "tollgate-token";
/// Where the credential's volume is mounted in the sidecar.
pub const TOKEN_DIR: &str = "/var/run/secrets/tollgate";
/// The key of the credential in its Secret, and the file name under [`TOKEN_DIR`].
pub const TOKEN_KEY: &str = "token";
/// The sidecar's HTTP port (`/healthz`, `/readyz`, `/metrics`).
pub const SIDECAR_HTTP_PORT: u16 = 7072;

/// Name of the gateway's init container (native sidecar), injected when the pod names a
/// gateway configuration (`config.tollgate.dev/gateway-config`).
pub const GATEWAY_NAME: &str = "tollgate-gateway";
/// The gateway's executable in the `tollgate` image (`tollgate gateway`).
pub const GATEWAY_COMMAND: &str = "/usr/local/bin/tollgate";
/// The gateway's port: app containers reach it on localhost.
pub const GATEWAY_PORT: u16 = 8787;
/// Name of the volume holding the gateway's configuration (a ConfigMap).
pub const GATEWAY_CONFIG_VOLUME: &str = "tollgate-gateway-config";
/// Where the gateway's configuration is mounted; its file is [`GATEWAY_CONFIG_KEY`] there.
pub const GATEWAY_CONFIG_DIR: &str = "/etc/tollgate-gateway";
/// The key of the gateway's TOML in its ConfigMap, and the file name under [`GATEWAY_CONFIG_DIR`].
pub const GATEWAY_CONFIG_KEY: &str = "gateway.toml";
/// Name of the volume holding the gateway's secrets (upstream API keys, gateway keys).
pub const GATEWAY_SECRET_VOLUME: &str = "tollgate-gateway-secrets";
/// Where the gateway's secrets are mounted (its configuration names files there).
pub const GATEWAY_SECRET_DIR: &str = "/var/run/secrets/tollgate-gateway";
