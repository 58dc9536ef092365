//! Who is calling: bearer tokens from the configuration, mapped to a [`Principal`].
//!
//! - no `authorization` metadata, or a token nobody was given: `UNAUTHENTICATED`;
//! - a known token acting outside its scope (another tenant's data, a sidecar calling the
//!   admin service): `PERMISSION_DENIED`.
//!
//! Tokens are compared in constant time so a caller cannot learn one byte by byte.

use std::collections::BTreeSet;

use tonic::{Status, metadata::MetadataMap};

use crate::config::Config;

/// Tenants a credential may act for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantScope {
    /// Every tenant.
    All,
    /// Only these.
    Some(BTreeSet<String>),
}

impl TenantScope {
    fn from_list(list: &[String]) -> TenantScope {
        if list.iter().any(|t| t == "*") {
            TenantScope::All
        } else {
            TenantScope::Some(list.iter().cloned().collect())
        }
    }

    /// True if `tenant` is in scope.
    pub fn allows(&self, tenant: &str) -> bool {
        match self {
            TenantScope::All => true,
            TenantScope::Some(s) => s.contains(tenant),
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The admin token: everything on the admin service.
    Admin,
    /// A sidecar credential (its configured name) and the tenants it may serve.
    Sidecar {
        /// Credential name.
        name: String,
        /// Tenants.
        scope: TenantScope,
    },
    /// A tenant read token.
    Reader {
        /// Tenants.
        scope: TenantScope,
    },
}

impl Principal {
    /// `PERMISSION_DENIED` unless this principal may act for `tenant`.
    pub fn check_tenant(&self, tenant: &str) -> Result<(), Status> {
        let ok = match self {
            Principal::Admin => true,
            Principal::Sidecar { scope, .. } | Principal::Reader { scope } => scope.allows(tenant),
        };
        if ok {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "this credential is not allowed to act for tenant {tenant:?}"
            )))
        }
    }

    /// `PERMISSION_DENIED` unless this is the admin.
    pub fn require_admin(&self, what: &str) -> Result<(), Status> {
        match self {
            Principal::Admin => Ok(()),
            _ => Err(Status::permission_denied(format!(
                "{what} needs the admin token"
            ))),
        }
    }
}

/// Maps tokens to principals.
#[derive(Debug, Clone, Default)]
pub struct Authenticator {
    entries: Vec<(Vec<u8>, Principal)>,
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Authenticator {
    /// From the configuration (`admin_token` may come from the environment instead).
    pub fn from_config(cfg: &Config) -> Authenticator {
        let mut entries = Vec::new();
        if let Some(t) = &cfg.admin_token {
            entries.push((t.as_bytes().to_vec(), Principal::Admin));
        }
        for sc in &cfg.sidecars {
            if let Some(t) = &sc.token {
                entries.push((
                    t.as_bytes().to_vec(),
                    Principal::Sidecar {
                        name: sc.name.clone(),
                        scope: TenantScope::from_list(&sc.tenants),
                    },
                ));
            }
        }
        for r in &cfg.readers {
            entries.push((
                r.token.as_bytes().to_vec(),
                Principal::Reader {
                    scope: TenantScope::from_list(&r.tenants),
                },
            ));
        }
        Authenticator { entries }
    }

    /// The principal behind the request's bearer token.
    pub fn authenticate(&self, md: &MetadataMap) -> Result<Principal, Status> {
        let Some(v) = md.get(tollgate_proto::AUTHORIZATION) else {
            return Err(Status::unauthenticated(
                "missing credentials: send metadata `authorization: Bearer <token>`",
            ));
        };
        let v = v
            .to_str()
            .map_err(|_| Status::unauthenticated("authorization metadata is not valid ASCII"))?;
        let Some(tok) = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
        else {
            return Err(Status::unauthenticated(
                "authorization metadata must be `Bearer <token>`",
            ));
        };
        let tok = tok.trim().as_bytes();
        let mut found = None;
        // Compare against every entry (no early exit) to keep timing independent of which.
        for (t, p) in &self.entries {
            if ct_eq(t, tok) && found.is_none() {
                found = Some(p.clone());
            }
        }
        found.ok_or_else(|| Status::unauthenticated("unknown or wrong credentials"))
    }
}

/// Which service a [`Gate`] guards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateKind {
    /// The sidecar service: sidecar credentials only.
    Sidecar,
    /// The admin service: any credential (each call checks its own scope).
    Admin,
}

/// Authentication from the request headers, before any body is read: a tonic
/// interceptor runs on the HTTP/2 headers and answers on its own when it refuses, for
/// unary and streaming calls alike, so an unauthenticated caller can never make the
/// authority buffer or decode a message. The services authenticate again (cheap) for
/// the principal's scope.
#[derive(Debug, Clone)]
pub struct Gate {
    auth: std::sync::Arc<Authenticator>,
    kind: GateKind,
}

impl Gate {
    /// A gate over `auth` for the service `kind`.
    pub fn new(auth: Authenticator, kind: GateKind) -> Gate {
        Gate {
            auth: std::sync::Arc::new(auth),
            kind,
        }
    }
}

impl tonic::service::Interceptor for Gate {
    fn call(&mut self, req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        let p = self.auth.authenticate(req.metadata())?;
        if self.kind == GateKind::Sidecar && !matches!(p, Principal::Sidecar { .. }) {
            return Err(Status::permission_denied(
                "the sidecar service needs a sidecar credential (a token from the config's [[sidecars]])",
            ));
        }
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn auth() -> Authenticator {
        let cfg = Config::parse(
            r#"
admin_token = "adm"
[[sidecars]]
name = "a"
token = "sc-a"
tenants = ["acme"]
"#,
        )
        .unwrap();
        Authenticator::from_config(&cfg)
    }

    fn md(v: Option<&str>) -> MetadataMap {
        let mut m = MetadataMap::new();
        if let Some(v) = v {
            m.insert("authorization", v.parse().unwrap());
        }
        m
    }

    #[test]
    fn tokens_map_to_principals() {
        let a = auth();
        assert_eq!(
            a.authenticate(&md(Some("Bearer adm"))).unwrap(),
            Principal::Admin
        );
        let p = a.authenticate(&md(Some("Bearer sc-a"))).unwrap();
        assert!(p.check_tenant("acme").is_ok());
        assert_eq!(
            p.check_tenant("globex").unwrap_err().code(),
            Code::PermissionDenied
        );
        assert_eq!(
            p.require_admin("x").unwrap_err().code(),
            Code::PermissionDenied
        );
        for bad in [None, Some("Bearer nope"), Some("adm"), Some("Bearer ")] {
            assert_eq!(
                a.authenticate(&md(bad)).unwrap_err().code(),
                Code::Unauthenticated,
                "{bad:?}"
            );
        }
    }
}
