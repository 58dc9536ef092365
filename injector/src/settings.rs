//! What the injected sidecar looks like for one pod: the injector's defaults, with the pod's
//! `config.tollgate.dev/<key>` annotations applied on top, every value validated.
//!
//! A bad value is an error that names the annotation, the value and what is accepted: the
//! webhook denies the pod with that message rather than inject a sidecar that cannot start.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::names::CONFIG_PREFIX;
use crate::quantity::Quantity;

/// Everything the injected sidecar is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SidecarSettings {
    /// The `tollgate` image the sidecar runs; the container runs its
    /// [`crate::names::SIDECAR_COMMAND`], so the image must hold it (the Dockerfile installs it).
    pub image: String,
    pub image_pull_policy: PullPolicy,
    /// The authority's gRPC address (`http://tollgate-authority.tollgate:7070`).
    pub authority: String,
    /// The tenants the sidecar serves; empty leaves the choice to the sidecar's credential.
    pub tenants: Vec<String>,
    pub log_level: LogLevel,
    pub log_format: LogFormat,
    pub cpu_request: Quantity,
    pub cpu_limit: Quantity,
    pub memory_request: Quantity,
    pub memory_limit: Quantity,
    /// `sizeLimit` of the in-memory emptyDir holding the region.
    pub region_size: Quantity,
    /// A Secret in the pod's namespace whose key `token` is the sidecar's credential.
    pub token_secret: Option<String>,
    /// The uid and gid the sidecar runs as (and the pod's fsGroup when it has none).
    pub run_as_user: u32,
    /// Lanes in the region (`TOLLGATE_LANES`); `None` keeps the sidecar's default.
    pub lanes: Option<u32>,
    /// Credits per limit the sidecar may release while the authority is unreachable
    /// (`TOLLGATE_EMERGENCY_ALLOWANCE`, decimal credits); `None` keeps the sidecar's default
    /// (0: fail closed).
    pub emergency_allowance: Option<String>,
    /// A ConfigMap in the pod's namespace whose key `gateway.toml` configures `tollgate
    /// gateway`: when set, the gateway is injected beside the sidecar and the app containers
    /// get `OPENAI_BASE_URL` / `ANTHROPIC_BASE_URL` pointing at it.
    pub gateway_config: Option<String>,
    /// A Secret mounted in the gateway at `/var/run/secrets/tollgate-gateway` (the upstreams'
    /// API keys and the gateway keys its configuration names as files).
    pub gateway_secret: Option<String>,
}

/// A value that is not acceptable, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error(
        "annotation {annotation:?} is not a Tollgate setting; known keys under {CONFIG_PREFIX}: {known}",
        known = KEYS.join(", ")
    )]
    UnknownKey { annotation: String },
    #[error("{source_name} = {value:?} is invalid: {reason}")]
    Invalid {
        source_name: String,
        value: String,
        reason: String,
    },
    #[error("{0}")]
    Inconsistent(String),
}

/// The keys accepted under `config.tollgate.dev/`.
pub const KEYS: &[&str] = &[
    "tenants",
    "tenant",
    "authority",
    "image",
    "image-pull-policy",
    "log-level",
    "log-format",
    "cpu-request",
    "cpu-limit",
    "memory-request",
    "memory-limit",
    "region-size",
    "token-secret",
    "lanes",
    "emergency-allowance",
    "gateway-config",
    "gateway-secret",
];

impl SidecarSettings {
    /// Applies the pod's `config.tollgate.dev/<key>` annotations to these defaults.
    /// Annotations outside that prefix are ignored; an unknown key under it is an error, so a
    /// typo never goes unnoticed.
    pub fn with_overrides(
        &self,
        annotations: &BTreeMap<String, String>,
    ) -> Result<Self, SettingsError> {
        let mut s = self.clone();
        for (annotation, value) in annotations {
            let Some(key) = annotation.strip_prefix(CONFIG_PREFIX) else {
                continue;
            };
            s.set(key, value, annotation)?;
        }
        s.check()?;
        Ok(s)
    }

    /// Sets one setting by its key; `source_name` is what error messages call it (the
    /// annotation, or the injector's flag).
    pub fn set(&mut self, key: &str, value: &str, source_name: &str) -> Result<(), SettingsError> {
        let invalid = |reason: String| SettingsError::Invalid {
            source_name: source_name.to_owned(),
            value: value.to_owned(),
            reason,
        };
        let quantity = |v: &str| v.parse::<Quantity>().map_err(|e| invalid(e.to_string()));
        match key {
            "tenants" | "tenant" => self.tenants = parse_tenants(value).map_err(invalid)?,
            "authority" => self.authority = parse_authority(value).map_err(invalid)?,
            "image" => self.image = parse_image(value).map_err(invalid)?,
            "image-pull-policy" => self.image_pull_policy = value.parse().map_err(invalid)?,
            "log-level" => self.log_level = value.parse().map_err(invalid)?,
            "log-format" => self.log_format = value.parse().map_err(invalid)?,
            "cpu-request" => self.cpu_request = quantity(value)?,
            "cpu-limit" => self.cpu_limit = quantity(value)?,
            "memory-request" => self.memory_request = quantity(value)?,
            "memory-limit" => self.memory_limit = quantity(value)?,
            "region-size" => self.region_size = quantity(value)?,
            "token-secret" => {
                self.token_secret = if value.trim().is_empty() {
                    None
                } else {
                    Some(parse_secret_name(value).map_err(invalid)?)
                }
            }
            "lanes" => {
                self.lanes = match value.trim() {
                    "" => None,
                    v => Some(parse_lanes(v).map_err(invalid)?),
                }
            }
            "emergency-allowance" => {
                self.emergency_allowance = match value.trim() {
                    "" => None,
                    v => Some(parse_credits(v).map_err(invalid)?),
                }
            }
            "gateway-config" => {
                self.gateway_config = match value.trim() {
                    "" => None,
                    v => Some(parse_secret_name(v).map_err(invalid)?),
                }
            }
            "gateway-secret" => {
                self.gateway_secret = match value.trim() {
                    "" => None,
                    v => Some(parse_secret_name(v).map_err(invalid)?),
                }
            }
            _ => {
                return Err(SettingsError::UnknownKey {
                    annotation: source_name.to_owned(),
                });
            }
        }
        Ok(())
    }

    /// Checks the settings against each other.
    pub fn check(&self) -> Result<(), SettingsError> {
        if self.cpu_request > self.cpu_limit {
            return Err(SettingsError::Inconsistent(format!(
                "sidecar cpu request {} is above its limit {}",
                self.cpu_request, self.cpu_limit
            )));
        }
        if self.memory_request > self.memory_limit {
            return Err(SettingsError::Inconsistent(format!(
                "sidecar memory request {} is above its limit {}",
                self.memory_request, self.memory_limit
            )));
        }
        // The sidecar touches every page of the region at start, and tmpfs pages count against
        // the memory limit of the container that touched them.
        if self.region_size >= self.memory_limit {
            return Err(SettingsError::Inconsistent(format!(
                "region size {} must be below the sidecar memory limit {}: the region lives in \
                 tmpfs and counts against the sidecar's memory; raise {CONFIG_PREFIX}memory-limit \
                 or lower {CONFIG_PREFIX}region-size",
                self.region_size, self.memory_limit
            )));
        }
        if self.gateway_secret.is_some() && self.gateway_config.is_none() {
            return Err(SettingsError::Inconsistent(format!(
                "{CONFIG_PREFIX}gateway-secret needs {CONFIG_PREFIX}gateway-config: the gateway is \
                 injected only with its configuration"
            )));
        }
        if self.region_size.nanos() == 0 {
            return Err(SettingsError::Inconsistent(
                "region size must be above zero".into(),
            ));
        }
        Ok(())
    }
}

fn parse_tenants(value: &str) -> Result<Vec<String>, String> {
    let mut tenants = Vec::new();
    for raw in value.split(',') {
        let t = raw.trim();
        if t.is_empty() {
            continue;
        }
        let ok_chars = t
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if t.len() > 128
            || !ok_chars
            || !t.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        {
            return Err(format!(
                "tenant {t:?} must be 1 to 128 characters of letters, digits, '-', '_' or '.', starting with a letter or digit"
            ));
        }
        if !tenants.iter().any(|x| x == t) {
            tenants.push(t.to_owned());
        }
    }
    Ok(tenants)
}

fn parse_lanes(value: &str) -> Result<u32, String> {
    match value.parse::<u32>() {
        Ok(n) if (1..=65_536).contains(&n) => Ok(n),
        _ => Err("lanes is a whole number from 1 to 65536".into()),
    }
}

/// Decimal credits with at most 6 decimals (1 micro-credit is the smallest unit), as the
/// sidecar's `--emergency-allowance` reads them.
fn parse_credits(value: &str) -> Result<String, String> {
    let (whole, frac) = value.split_once('.').unwrap_or((value, ""));
    let digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    if (whole.is_empty() && frac.is_empty()) || !digits(whole) || !digits(frac) {
        return Err("a credit amount is decimal credits like 12 or 0.5".into());
    }
    if frac.len() > 6 {
        return Err("at most 6 decimals (1 micro-credit is the smallest unit)".into());
    }
    if whole.len() > 12 {
        return Err("the amount is too large".into());
    }
    Ok(value.to_owned())
}

fn parse_authority(value: &str) -> Result<String, String> {
    let v = value.trim();
    let rest = v
        .strip_prefix("http://")
        .or_else(|| v.strip_prefix("https://"))
        .ok_or_else(|| {
            "the authority address must be a URL starting with http:// or https://".to_owned()
        })?;
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(
            "the authority address needs a host, e.g. http://tollgate-authority.tollgate:7070"
                .into(),
        );
    }
    if let Some((_, port)) = host.rsplit_once(':')
        && !host.ends_with(']')
        && port.parse::<u16>().is_err()
    {
        return Err(format!("port {port:?} is not a number from 0 to 65535"));
    }
    Ok(v.to_owned())
}

fn parse_image(value: &str) -> Result<String, String> {
    let v = value.trim();
    let ok = !v.is_empty()
        && v.len() <= 512
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/' | ':' | '@'));
    if !ok {
        return Err(
            "an image reference is like registry.example.com/tollgate:0.1.0 (no spaces)".into(),
        );
    }
    Ok(v.to_owned())
}

/// A DNS-1123 subdomain, the rule for Secret names.
fn parse_secret_name(value: &str) -> Result<String, String> {
    let v = value.trim();
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let ok = v.len() <= 253
        && edge_ok(v.chars().next())
        && edge_ok(v.chars().last())
        && v.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if !ok {
        return Err("a Secret name is lower-case letters, digits, '-' and '.', starting and ending with a letter or digit".into());
    }
    Ok(v.to_owned())
}

macro_rules! word_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s.trim() {
                    $($text => Ok(Self::$variant),)+
                    _ => Err(format!("expected one of: {}", [$($text),+].join(", "))),
                }
            }
        }
    };
}

word_enum!(
    /// The sidecar's log level (`TOLLGATE_LOG`).
    LogLevel { Trace => "trace", Debug => "debug", Info => "info", Warn => "warn", Error => "error" }
);
word_enum!(
    /// The sidecar's log format (`--log-format`).
    LogFormat { Text => "text", Json => "json" }
);
word_enum!(
    /// The sidecar container's `imagePullPolicy`.
    PullPolicy { Always => "Always", IfNotPresent => "IfNotPresent", Never => "Never" }
);
