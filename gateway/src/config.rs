//! The gateway's TOML configuration: upstreams per model and the gateway keys.
//!
//! ```toml
//! # Output tokens reserved (and sent upstream as the maximum) when a request sets none.
//! default_max_output_tokens = 1024
//!
//! [[upstreams]]
//! models = ["gpt-4o-mini", "gpt-4o"]      # "*" matches every model no other upstream names
//! base_url = "https://api.openai.com"     # the request path (/v1/...) is appended
//! api_key_file = "/var/run/secrets/openai/key"   # or api_key_env = "OPENAI_API_KEY"
//! forward_caller_key = false              # true: send the caller's own key upstream instead
//!
//! [[keys]]
//! key = "gk-support-bot"                  # or key_file = "/var/run/secrets/gw/support"
//! tenant = "acme"
//! agent = "support-bot"                   # default: the gateway's own agent name
//! feature = "tickets"                     # default: none
//! tier = "interactive"                    # interactive | scheduler | background
//! initiator = "agent"                     # human | agent
//! clamp = true                            # lower max_tokens to what the budget pays
//! clamp_min_tokens = 64                   # ... but never below this
//!
//! # Degrade before the wall (optional): when the authority projects a tenant's balance to
//! # run out within horizon_secs (at its last hour's burn), calls of these tiers are routed
//! # to the cheaper model named for theirs, or refused (429) when none is named.
//! [degrade]
//! authority = "http://tollgate-authority.tollgate:7070"
//! token_file = "/var/run/secrets/tollgate-gateway/read-token"   # a tenant read token
//! horizon_secs = 3600
//! poll_secs = 10
//! tiers = ["background", "scheduler"]     # never interactive
//! [degrade.route]
//! "gpt-4o" = "gpt-4o-mini"
//! ```
//!
//! Every problem is a [`ConfigError`] naming the field; nothing is read lazily, so a bad
//! file fails at start, not on the first request.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use tollgate_core::{Initiator, Tier};

/// Most output tokens a request may reserve by default.
pub const DEFAULT_MAX_OUTPUT_TOKENS: u64 = 1024;

/// What is wrong with a configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the gateway config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not TOML, or a field of the wrong type or unknown.
    #[error("invalid gateway config: {0}")]
    Syntax(String),
    /// An upstream's base URL is not an http(s) URL.
    #[error("upstream {index}: base_url {url:?} must start with http:// or https://")]
    BaseUrl {
        /// Index of the upstream in the file.
        index: usize,
        /// The URL.
        url: String,
    },
    /// An upstream names no model.
    #[error("upstream {index} names no model (models = [\"name\", ...] or [\"*\"])")]
    NoModels {
        /// Index of the upstream.
        index: usize,
    },
    /// Two upstreams claim the same model.
    #[error("model {model:?} is served by two upstreams; each model needs exactly one")]
    DuplicateModel {
        /// The model.
        model: String,
    },
    /// Both or neither of two exclusive fields are set, or a secret could not be read.
    #[error("{what}: {problem}")]
    Secret {
        /// The upstream or key concerned.
        what: String,
        /// What is wrong.
        problem: String,
    },
    /// No gateway key is configured: every request would be refused.
    #[error("no [[keys]]: configure at least one gateway key")]
    NoKeys,
    /// The same gateway key is configured twice.
    #[error("key {index} repeats an earlier key")]
    DuplicateKey {
        /// Index of the key.
        index: usize,
    },
    /// A key's field is out of range.
    #[error("key {index}: {problem}")]
    Key {
        /// Index of the key.
        index: usize,
        /// What is wrong.
        problem: String,
    },
    /// The `[degrade]` table is inconsistent.
    #[error("[degrade]: {0}")]
    Degrade(String),
    /// `default_max_output_tokens` is zero.
    #[error("default_max_output_tokens must be at least 1")]
    ZeroDefault,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    default_max_output_tokens: Option<u64>,
    #[serde(default)]
    upstreams: Vec<RawUpstream>,
    #[serde(default)]
    keys: Vec<RawKey>,
    #[serde(default)]
    degrade: Option<RawDegrade>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDegrade {
    authority: String,
    #[serde(default)]
    token_file: Option<PathBuf>,
    #[serde(default)]
    token_env: Option<String>,
    horizon_secs: u64,
    #[serde(default)]
    poll_secs: Option<u64>,
    tiers: Vec<Tier>,
    #[serde(default)]
    route: HashMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    models: Vec<String>,
    base_url: String,
    #[serde(default)]
    api_key_file: Option<PathBuf>,
    #[serde(default)]
    api_key_env: Option<String>,
    #[serde(default)]
    forward_caller_key: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    key_file: Option<PathBuf>,
    tenant: String,
    #[serde(default)]
    agent: Option<String>,
    #[serde(default)]
    feature: Option<String>,
    #[serde(default)]
    tier: Tier,
    #[serde(default)]
    initiator: Initiator,
    #[serde(default)]
    clamp: bool,
    #[serde(default)]
    clamp_min_tokens: Option<u64>,
}

/// Where requests for some models go.
#[derive(Clone, PartialEq, Eq)]
pub struct Upstream {
    /// Base URL without a trailing slash; the request's path is appended.
    pub base_url: String,
    /// The key sent upstream (read at start), if any.
    pub api_key: Option<String>,
    /// Send the caller's own `Authorization` / `x-api-key` upstream (instead of `api_key`).
    pub forward_caller_key: bool,
}

impl std::fmt::Debug for Upstream {
    // The key is a secret: never in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<set>"))
            .field("forward_caller_key", &self.forward_caller_key)
            .finish()
    }
}

/// Who a gateway key's calls are made as, and how they are limited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPolicy {
    /// The tenant whose budget pays.
    pub tenant: String,
    /// The agent name the calls are attributed to (`None`: the gateway's own).
    pub agent: Option<String>,
    /// The feature the calls are for.
    pub feature: Option<String>,
    /// Priority tier.
    pub tier: Tier,
    /// Who starts the calls.
    pub initiator: Initiator,
    /// Clamp `max_tokens` to what the budget pays instead of refusing.
    pub clamp: bool,
    /// The smallest maximum a clamp may leave (below it the call is refused).
    pub clamp_min_tokens: u64,
}

/// Degrading lower tiers before the wall.
#[derive(Clone, PartialEq, Eq)]
pub struct Degrade {
    /// The authority's gRPC URL (its admin API answers the projected depletion).
    pub authority: String,
    /// The bearer token for it (a tenant read token suffices).
    pub token: Option<String>,
    /// Degrade when depletion is projected within this many seconds.
    pub horizon_secs: u64,
    /// How often the projection is read.
    pub poll_secs: u64,
    /// The tiers degraded (never interactive).
    pub tiers: Vec<Tier>,
    /// The cheaper model a degraded call of a model goes to; a model not named is refused.
    pub route: HashMap<String, String>,
}

impl std::fmt::Debug for Degrade {
    // The token is a secret: never in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Degrade")
            .field("authority", &self.authority)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("horizon_secs", &self.horizon_secs)
            .field("poll_secs", &self.poll_secs)
            .field("tiers", &self.tiers)
            .field("route", &self.route)
            .finish()
    }
}

/// The whole configuration, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// Output tokens reserved when a request sets no maximum (also sent upstream).
    pub default_max_output_tokens: u64,
    /// Upstream by model name.
    pub models: HashMap<String, usize>,
    /// The upstream for models not named (`"*"`), if any.
    pub fallback: Option<usize>,
    /// The upstreams.
    pub upstreams: Vec<Upstream>,
    /// Policy by gateway key.
    pub keys: HashMap<String, KeyPolicy>,
    /// The degrade rule, if configured.
    pub degrade: Option<Degrade>,
}

impl Config {
    /// Reads and validates the file at `path` (secrets named by it are read too).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, &|name| std::env::var(name).ok())
    }

    /// Parses and validates `text`; `env` looks environment variables up (a parameter so
    /// tests need not touch the process environment).
    pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        let default_max_output_tokens = raw
            .default_max_output_tokens
            .unwrap_or(DEFAULT_MAX_OUTPUT_TOKENS);
        if default_max_output_tokens == 0 {
            return Err(ConfigError::ZeroDefault);
        }
        let mut models = HashMap::new();
        let mut fallback = None;
        let mut upstreams = Vec::new();
        for (index, u) in raw.upstreams.into_iter().enumerate() {
            let url = u.base_url.trim_end_matches('/').to_owned();
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::BaseUrl {
                    index,
                    url: u.base_url,
                });
            }
            if u.models.is_empty() {
                return Err(ConfigError::NoModels { index });
            }
            let what = format!("upstream {index}");
            let api_key = secret(&what, None, u.api_key_file.as_deref(), u.api_key_env, env)?;
            for m in u.models {
                let dup = if m == "*" {
                    fallback.replace(index).is_some()
                } else {
                    models.insert(m.clone(), index).is_some()
                };
                if dup {
                    return Err(ConfigError::DuplicateModel { model: m });
                }
            }
            upstreams.push(Upstream {
                base_url: url,
                api_key,
                forward_caller_key: u.forward_caller_key,
            });
        }
        if raw.keys.is_empty() {
            return Err(ConfigError::NoKeys);
        }
        let mut keys = HashMap::new();
        for (index, k) in raw.keys.into_iter().enumerate() {
            let what = format!("key {index}");
            let Some(key) = secret(&what, k.key, k.key_file.as_deref(), None, env)? else {
                return Err(ConfigError::Secret {
                    what,
                    problem: "set key or key_file".into(),
                });
            };
            if key.is_empty() {
                return Err(ConfigError::Key {
                    index,
                    problem: "the key is empty".into(),
                });
            }
            if k.tenant.is_empty() {
                return Err(ConfigError::Key {
                    index,
                    problem: "tenant is empty".into(),
                });
            }
            for (field, v) in [("agent", &k.agent), ("feature", &k.feature)] {
                if let Some(v) = v
                    && (v.is_empty() || v.len() > 64)
                {
                    return Err(ConfigError::Key {
                        index,
                        problem: format!("{field} must be 1 to 64 bytes"),
                    });
                }
            }
            let clamp_min_tokens = k.clamp_min_tokens.unwrap_or(1);
            if clamp_min_tokens == 0 {
                return Err(ConfigError::Key {
                    index,
                    problem: "clamp_min_tokens must be at least 1".into(),
                });
            }
            let policy = KeyPolicy {
                tenant: k.tenant,
                agent: k.agent,
                feature: k.feature,
                tier: k.tier,
                initiator: k.initiator,
                clamp: k.clamp,
                clamp_min_tokens,
            };
            if keys.insert(key, policy).is_some() {
                return Err(ConfigError::DuplicateKey { index });
            }
        }
        let degrade = match raw.degrade {
            None => None,
            Some(d) => {
                let bad = |problem: String| Err(ConfigError::Degrade(problem));
                if !(d.authority.starts_with("http://") || d.authority.starts_with("https://")) {
                    return bad(format!(
                        "authority {:?} must be an http(s) URL",
                        d.authority
                    ));
                }
                if d.horizon_secs == 0 {
                    return bad("horizon_secs must be at least 1".into());
                }
                if d.tiers.is_empty() {
                    return bad("tiers names no tier".into());
                }
                if d.tiers.contains(&Tier::Interactive) {
                    return bad("interactive calls keep going: leave it out of tiers".into());
                }
                if d.poll_secs == Some(0) {
                    return bad("poll_secs must be at least 1".into());
                }
                for (from, to) in &d.route {
                    if from == to || to.is_empty() {
                        return bad(format!("route {from:?} -> {to:?} goes nowhere"));
                    }
                }
                let token = secret("degrade", None, d.token_file.as_deref(), d.token_env, env)?;
                Some(Degrade {
                    authority: d.authority,
                    token,
                    horizon_secs: d.horizon_secs,
                    poll_secs: d.poll_secs.unwrap_or(10),
                    tiers: d.tiers,
                    route: d.route,
                })
            }
        };
        Ok(Config {
            default_max_output_tokens,
            models,
            fallback,
            upstreams,
            keys,
            degrade,
        })
    }

    /// The upstream serving `model`.
    pub fn upstream(&self, model: &str) -> Option<&Upstream> {
        self.models
            .get(model)
            .copied()
            .or(self.fallback)
            .and_then(|i| self.upstreams.get(i))
    }
}

/// A secret given inline, in a file (trimmed), or in an environment variable: at most one.
fn secret(
    what: &str,
    inline: Option<String>,
    file: Option<&Path>,
    var: Option<String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<String>, ConfigError> {
    let given = [inline.is_some(), file.is_some(), var.is_some()];
    if given.iter().filter(|g| **g).count() > 1 {
        return Err(ConfigError::Secret {
            what: what.into(),
            problem: "set only one of the key, its file or its environment variable".into(),
        });
    }
    if let Some(s) = inline {
        return Ok(Some(s));
    }
    if let Some(path) = file {
        let s = std::fs::read_to_string(path).map_err(|e| ConfigError::Secret {
            what: what.into(),
            problem: format!("cannot read {}: {e}", path.display()),
        })?;
        return Ok(Some(s.trim().to_owned()));
    }
    if let Some(name) = var {
        return match env(&name) {
            Some(v) if !v.trim().is_empty() => Ok(Some(v.trim().to_owned())),
            _ => Err(ConfigError::Secret {
                what: what.into(),
                problem: format!("environment variable {name} is unset or empty"),
            }),
        };
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    const GOOD: &str = r#"
default_max_output_tokens = 256
[[upstreams]]
models = ["gpt-4o-mini"]
base_url = "http://127.0.0.1:9/"
api_key_env = "UP_KEY"
[[upstreams]]
models = ["*"]
base_url = "https://example.test"
forward_caller_key = true
[[keys]]
key = "gk-1"
tenant = "acme"
agent = "bot"
tier = "background"
initiator = "agent"
clamp = true
clamp_min_tokens = 8
[[keys]]
key = "gk-2"
tenant = "acme"
"#;

    #[test]
    fn a_full_config_parses() {
        let env = |n: &str| (n == "UP_KEY").then(|| "sk-up ".to_owned());
        let c = Config::parse(GOOD, &env).unwrap();
        assert_eq!(c.default_max_output_tokens, 256);
        let up = c.upstream("gpt-4o-mini").unwrap();
        assert_eq!(up.base_url, "http://127.0.0.1:9");
        assert_eq!(up.api_key.as_deref(), Some("sk-up"));
        assert_eq!(
            c.upstream("claude-x").unwrap().base_url,
            "https://example.test"
        );
        assert!(c.upstream("claude-x").unwrap().forward_caller_key);
        let k = &c.keys["gk-1"];
        assert_eq!((k.tier, k.initiator), (Tier::Background, Initiator::Agent));
        assert_eq!((k.clamp, k.clamp_min_tokens), (true, 8));
        let d = &c.keys["gk-2"];
        assert_eq!(
            (d.tier, d.initiator, d.clamp),
            (Tier::Interactive, Initiator::Human, false)
        );
        assert!(
            !format!("{up:?}").contains("sk-up"),
            "the key is not logged"
        );
    }

    #[test]
    fn bad_configs_are_typed_errors() {
        let env = |n: &str| (n == "UP_KEY").then(|| "k".to_owned());
        type Check = fn(&ConfigError) -> bool;
        let cases: [(&str, Check); 9] = [
            ("this is not toml", |e| matches!(e, ConfigError::Syntax(_))),
            ("[[keys]]\nkey = \"k\"\ntenant = \"a\"\nbogus = 1", |e| {
                matches!(e, ConfigError::Syntax(_))
            }),
            (
                "[[keys]]\nkey = \"k\"\ntenant = \"a\"\ntier = \"vip\"",
                |e| matches!(e, ConfigError::Syntax(_)),
            ),
            ("", |e| matches!(e, ConfigError::NoKeys)),
            (
                "[[upstreams]]\nmodels = [\"m\"]\nbase_url = \"ftp://x\"",
                |e| matches!(e, ConfigError::BaseUrl { index: 0, .. }),
            ),
            (
                "[[upstreams]]\nmodels = [\"m\"]\nbase_url = \"http://a\"\n[[upstreams]]\nmodels = [\"m\"]\nbase_url = \"http://b\"",
                |e| matches!(e, ConfigError::DuplicateModel { .. }),
            ),
            (
                "[[upstreams]]\nmodels = [\"m\"]\nbase_url = \"http://a\"\napi_key_env = \"MISSING\"",
                |e| matches!(e, ConfigError::Secret { .. }),
            ),
            (
                "[[keys]]\nkey = \"k\"\ntenant = \"a\"\n[[keys]]\nkey = \"k\"\ntenant = \"b\"",
                |e| matches!(e, ConfigError::DuplicateKey { index: 1 }),
            ),
            (
                "[[keys]]\nkey = \"k\"\ntenant = \"a\"\nclamp_min_tokens = 0",
                |e| matches!(e, ConfigError::Key { index: 0, .. }),
            ),
        ];
        for (text, ok) in cases {
            let e = Config::parse(text, &env).unwrap_err();
            assert!(ok(&e), "{text:?} gave {e:?}");
        }
        let e = Config::parse(
            "default_max_output_tokens = 0\n[[keys]]\nkey = \"k\"\ntenant = \"a\"",
            &no_env,
        )
        .unwrap_err();
        assert!(matches!(e, ConfigError::ZeroDefault), "{e:?}");
        let e = Config::parse("[[keys]]\ntenant = \"a\"", &no_env).unwrap_err();
        assert!(matches!(e, ConfigError::Secret { .. }), "{e:?}");
    }

    #[test]
    fn the_degrade_rule_parses_and_never_degrades_interactive_calls() {
        let key = "[[keys]]\nkey = \"k\"\ntenant = \"a\"\n";
        let ok = format!(
            "{key}[degrade]\nauthority = \"http://auth:7070\"\ntoken_env = \"T\"\n\
             horizon_secs = 60\ntiers = [\"background\"]\n[degrade.route]\n\"big\" = \"small\"\n"
        );
        let env = |n: &str| (n == "T").then(|| "tok".to_owned());
        let d = Config::parse(&ok, &env).unwrap().degrade.unwrap();
        assert_eq!((d.horizon_secs, d.poll_secs), (60, 10));
        assert_eq!(d.route["big"], "small");
        assert_eq!(d.token.as_deref(), Some("tok"));
        assert!(
            !format!("{d:?}").contains("tok\""),
            "the token is not logged"
        );
        for bad in [
            ok.replace("[\"background\"]", "[\"interactive\", \"background\"]"),
            ok.replace("[\"background\"]", "[]"),
            ok.replace("horizon_secs = 60", "horizon_secs = 0"),
            ok.replace("http://auth:7070", "auth:7070"),
            ok.replace("\"small\"", "\"big\""),
        ] {
            let e = Config::parse(&bad, &env).unwrap_err();
            assert!(matches!(e, ConfigError::Degrade(_)), "{bad}: {e:?}");
        }
    }

    #[test]
    fn secrets_come_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("key");
        std::fs::write(&f, "gk-file\n").unwrap();
        let text = format!(
            "[[keys]]\nkey_file = {:?}\ntenant = \"a\"",
            f.display().to_string()
        );
        let c = Config::parse(&text, &no_env).unwrap();
        assert!(c.keys.contains_key("gk-file"));
        let missing = text.replace("key\"", "nope\"");
        let e = Config::parse(&missing, &no_env).unwrap_err();
        assert!(matches!(e, ConfigError::Secret { .. }), "{e:?}");
        assert!(Config::load(&dir.path().join("absent.toml")).is_err());
    }
}
