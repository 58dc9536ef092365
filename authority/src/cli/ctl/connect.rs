//! The admin client: checks the `--authority` URL, sets up TLS with `--ca-cert`, attaches
//! the bearer token to every request, and turns gRPC errors into messages with a hint.

use std::path::PathBuf;

use anyhow::{Context, anyhow};
use tollgate_proto::v1::admin_service_client::AdminServiceClient;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// A connected admin client.
pub struct Admin {
    pub(super) client: AdminServiceClient<Channel>,
    token: Option<String>,
}

impl Admin {
    /// Connects to `url`.
    pub async fn connect(
        url: &str,
        token: Option<String>,
        ca: Option<&PathBuf>,
    ) -> anyhow::Result<Admin> {
        let ep = endpoint(url, ca)?;
        let ch = ep.connect().await.with_context(|| {
            format!("cannot reach the authority at {url}: is it running? (set --authority or TOLLGATE_AUTHORITY)")
        })?;
        Ok(Admin {
            client: AdminServiceClient::new(ch).max_decoding_message_size(512 * 1024 * 1024),
            token,
        })
    }

    /// `msg` with the bearer token, if one was given.
    pub(super) fn req<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        if let Some(t) = &self.token
            && let Ok(v) = format!("Bearer {t}").parse()
        {
            r.metadata_mut().insert(tollgate_proto::AUTHORIZATION, v);
        }
        r
    }
}

/// Validates the `--authority` URL and configures TLS for `https://`.
fn endpoint(url: &str, ca: Option<&PathBuf>) -> anyhow::Result<Endpoint> {
    // tonic takes any scheme and speaks plain HTTP/2 to it: refuse what is not ours.
    if !url.starts_with("http://") && !url.starts_with("https://") {
        anyhow::bail!(
            "--authority {url:?} must be an http:// or https:// URL like http://127.0.0.1:7070"
        );
    }
    let mut ep = Endpoint::from_shared(url.to_string())
        .with_context(|| format!("--authority {url:?} is not a URL like http://127.0.0.1:7070"))?;
    if url.starts_with("https://") {
        let mut tls = ClientTlsConfig::new();
        if let Some(ca) = ca {
            let pem = std::fs::read(ca)
                .with_context(|| format!("cannot read --ca-cert {}", ca.display()))?;
            tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(pem));
        }
        ep = ep.tls_config(tls).context("TLS configuration")?;
    }
    Ok(ep)
}

/// A gRPC error as one line, with a hint for the usual causes.
pub(super) fn status(e: tonic::Status) -> anyhow::Error {
    let hint = match e.code() {
        tonic::Code::Unauthenticated => " (set --admin-token or TOLLGATE_ADMIN_TOKEN)",
        tonic::Code::PermissionDenied => " (this token may not do that)",
        tonic::Code::Unavailable => " (is the authority running and reachable?)",
        _ => "",
    };
    anyhow!("{:?}: {}{hint}", e.code(), e.message())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_and_https_authorities_are_accepted() {
        for bad in [
            "ftp://127.0.0.1:7070",
            "127.0.0.1:7070",
            "file:///etc/passwd",
        ] {
            let e = endpoint(bad, None).expect_err(bad).to_string();
            assert!(e.contains("http:// or https://"), "{bad}: {e}");
        }
        endpoint("http://127.0.0.1:7070", None).expect("http");
    }
}
