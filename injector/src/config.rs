//! The injector's configuration: the flags of `tollgate injector` ([`InjectorArgs`]) and the
//! validated [`InjectorConfig`] they make (sidecar defaults, namespaces never touched). Its
//! own module so the webhook and its tests build a configuration without the command line's
//! server and runtime.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;

use crate::quantity::Quantity;
use crate::settings::{LogFormat, LogLevel, PullPolicy, SidecarSettings};

/// The injector's configuration: sidecar defaults and the namespaces it never touches.
#[derive(Debug, Clone)]
pub struct InjectorConfig {
    pub defaults: SidecarSettings,
    /// Namespaces never injected, whatever their labels (a safety net under the chart's
    /// namespaceSelector: the control plane and the injector's own namespace).
    pub skip_namespaces: BTreeSet<String>,
}

const AFTER_HELP: &str = "\
Normally run by the Helm chart (k8s/tollgate), which makes the certificate and registers the
webhook. By hand, with a certificate for the Service name the API server calls:

  tollgate injector --tls-cert tls.crt --tls-key tls.key --tenants acme \\
    --authority http://tollgate-authority.tollgate.svc:7070

Pods opt in with the annotation tollgate.dev/inject: \"true\" and override the defaults above
with config.tollgate.dev/<key> annotations: tenants, authority, image, image-pull-policy,
cpu-request, cpu-limit, memory-request, memory-limit, region-size, log-level, log-format,
token-secret, lanes, emergency-allowance. A bad value denies the pod with a message.";

/// Runs the mutating admission webhook that injects the Tollgate sidecar into pods annotated
/// `tollgate.dev/inject: "true"`. Every flag also reads the environment variable shown.
/// The `--sidecar-*`, `--authority`, `--tenants`, `--region-size` and `--token-secret`
/// values are defaults; a pod overrides them with `config.tollgate.dev/<key>` annotations.
#[derive(Debug, Clone, clap::Args)]
#[command(
    about = "Run the Kubernetes webhook that injects the Tollgate sidecar into annotated pods",
    after_help = AFTER_HELP
)]
pub struct InjectorArgs {
    /// Address of the HTTPS server (`POST /mutate`, `GET /healthz`, `GET /metrics`).
    #[arg(long, env = "TOLLGATE_INJECTOR_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// PEM certificate chain served to the API server.
    #[arg(
        long,
        env = "TOLLGATE_INJECTOR_TLS_CERT",
        default_value = "/etc/tollgate/tls/tls.crt"
    )]
    pub tls_cert: PathBuf,
    /// PEM private key of the certificate.
    #[arg(
        long,
        env = "TOLLGATE_INJECTOR_TLS_KEY",
        default_value = "/etc/tollgate/tls/tls.key"
    )]
    pub tls_key: PathBuf,
    /// How often to re-read the certificate and key (a rotated Secret is served without a
    /// restart); 0 disables.
    #[arg(long, env = "TOLLGATE_INJECTOR_TLS_RELOAD_SECS", default_value_t = 60)]
    pub tls_reload_secs: u64,
    /// Image of the injected sidecar (the `tollgate` image; it runs /usr/local/bin/tollgate-sidecar).
    #[arg(long, env = "TOLLGATE_INJECTOR_SIDECAR_IMAGE", default_value = concat!("tollgate:", env!("CARGO_PKG_VERSION")))]
    pub sidecar_image: String,
    /// imagePullPolicy of the sidecar: Always, IfNotPresent or Never.
    #[arg(
        long,
        env = "TOLLGATE_INJECTOR_SIDECAR_PULL_POLICY",
        default_value = "IfNotPresent"
    )]
    pub sidecar_pull_policy: String,
    /// Authority address the sidecars connect to.
    #[arg(
        long,
        env = "TOLLGATE_INJECTOR_AUTHORITY",
        default_value = "http://tollgate-authority:7070"
    )]
    pub authority: String,
    /// Default tenants of the sidecars (comma list). The sidecar needs at least one: with none
    /// here, a pod without `config.tollgate.dev/tenants` is denied.
    #[arg(long, env = "TOLLGATE_INJECTOR_TENANTS", default_value = "")]
    pub tenants: String,
    /// Sidecar log level: trace, debug, info, warn or error.
    #[arg(long, env = "TOLLGATE_INJECTOR_SIDECAR_LOG", default_value = "info")]
    pub sidecar_log: String,
    /// Sidecar log format: text or json.
    #[arg(
        long,
        env = "TOLLGATE_INJECTOR_SIDECAR_LOG_FORMAT",
        default_value = "json"
    )]
    pub sidecar_log_format: String,
    /// Sidecar CPU request.
    #[arg(long, env = "TOLLGATE_INJECTOR_CPU_REQUEST", default_value = "10m")]
    pub cpu_request: String,
    /// Sidecar CPU limit.
    #[arg(long, env = "TOLLGATE_INJECTOR_CPU_LIMIT", default_value = "500m")]
    pub cpu_limit: String,
    /// Sidecar memory request.
    #[arg(long, env = "TOLLGATE_INJECTOR_MEMORY_REQUEST", default_value = "32Mi")]
    pub memory_request: String,
    /// Sidecar memory limit (must exceed the region size: the region is tmpfs memory).
    #[arg(long, env = "TOLLGATE_INJECTOR_MEMORY_LIMIT", default_value = "96Mi")]
    pub memory_limit: String,
    /// sizeLimit of the in-memory volume holding the region.
    #[arg(long, env = "TOLLGATE_INJECTOR_REGION_SIZE", default_value = "16Mi")]
    pub region_size: String,
    /// Secret (in the pod's namespace) whose key `token` is the sidecar's credential; empty: none.
    #[arg(long, env = "TOLLGATE_INJECTOR_TOKEN_SECRET", default_value = "")]
    pub token_secret: String,
    /// Lanes in each region (`TOLLGATE_LANES`); empty keeps the sidecar's default.
    #[arg(long, env = "TOLLGATE_INJECTOR_LANES", default_value = "")]
    pub lanes: String,
    /// Credits per limit a sidecar may spend while the authority is unreachable; empty keeps the
    /// sidecar's default (0: fail closed).
    #[arg(
        long,
        env = "TOLLGATE_INJECTOR_EMERGENCY_ALLOWANCE",
        default_value = ""
    )]
    pub emergency_allowance: String,
    /// uid and gid of the sidecar, and the pod's fsGroup when it has none.
    #[arg(long, env = "TOLLGATE_INJECTOR_SIDECAR_UID", default_value_t = 65532)]
    pub sidecar_uid: u32,
    /// Namespaces never injected (comma list), whatever their labels.
    #[arg(
        long,
        env = "TOLLGATE_INJECTOR_SKIP_NAMESPACES",
        default_value = "kube-system,kube-public,kube-node-lease"
    )]
    pub skip_namespaces: String,
    /// The injector's own log filter (tracing env-filter syntax, e.g. `info` or `tollgate_injector=debug`).
    #[arg(long, env = "TOLLGATE_LOG", default_value = "info")]
    pub log: String,
    /// The injector's own log format: text or json.
    #[arg(long, env = "TOLLGATE_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
}

impl InjectorArgs {
    /// The validated injector configuration these flags describe.
    pub fn config(&self) -> anyhow::Result<InjectorConfig> {
        let q = |flag: &str, v: &str| -> anyhow::Result<Quantity> {
            v.parse().with_context(|| format!("--{flag} {v:?}"))
        };
        let mut defaults = SidecarSettings {
            image: String::new(),
            image_pull_policy: PullPolicy::IfNotPresent,
            authority: String::new(),
            tenants: Vec::new(),
            log_level: LogLevel::Info,
            log_format: LogFormat::Json,
            cpu_request: q("cpu-request", &self.cpu_request)?,
            cpu_limit: q("cpu-limit", &self.cpu_limit)?,
            memory_request: q("memory-request", &self.memory_request)?,
            memory_limit: q("memory-limit", &self.memory_limit)?,
            region_size: q("region-size", &self.region_size)?,
            token_secret: None,
            run_as_user: self.sidecar_uid,
            lanes: None,
            emergency_allowance: None,
            gateway_config: None,
            gateway_secret: None,
        };
        for (key, flag, value) in [
            ("image", "--sidecar-image", &self.sidecar_image),
            (
                "image-pull-policy",
                "--sidecar-pull-policy",
                &self.sidecar_pull_policy,
            ),
            ("authority", "--authority", &self.authority),
            ("tenants", "--tenants", &self.tenants),
            ("log-level", "--sidecar-log", &self.sidecar_log),
            (
                "log-format",
                "--sidecar-log-format",
                &self.sidecar_log_format,
            ),
            ("token-secret", "--token-secret", &self.token_secret),
            ("lanes", "--lanes", &self.lanes),
            (
                "emergency-allowance",
                "--emergency-allowance",
                &self.emergency_allowance,
            ),
        ] {
            defaults.set(key, value, flag)?;
        }
        defaults.check()?;
        if self.sidecar_uid == 0 {
            anyhow::bail!(
                "--sidecar-uid 0 would run the sidecar as root; use a non-root uid such as 65532"
            );
        }
        let skip_namespaces: BTreeSet<String> = self
            .skip_namespaces
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        Ok(InjectorConfig {
            defaults,
            skip_namespaces,
        })
    }
}
