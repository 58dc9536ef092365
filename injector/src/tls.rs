//! The injector's TLS: a certificate and key read from PEM files (a Kubernetes TLS Secret,
//! written by Helm or by cert-manager) and re-read when they change, so a rotated certificate
//! is served without a restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why the certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "cannot read {path}: {source} (mount the webhook's TLS Secret there, or pass --tls-cert/--tls-key)"
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate (expected a `-----BEGIN CERTIFICATE-----` block)")]
    NoCertificate { path: PathBuf },
    #[error("{path} holds no usable PEM private key ({detail})")]
    BadKey { path: PathBuf, detail: String },
    #[error("the private key in {key} does not match the certificate in {cert}")]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("TLS setup failed: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Loads a certificate chain and its key from PEM bytes.
pub fn certified_key(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_path: &Path,
    key_path: &Path,
) -> Result<CertifiedKey, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_owned(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::BadKey {
        path: key_path.to_owned(),
        detail: e.to_string(),
    })?;
    let signer =
        rustls::crypto::ring::sign::any_supported_type(&key).map_err(|e| TlsError::BadKey {
            path: key_path.to_owned(),
            detail: e.to_string(),
        })?;
    let ck = CertifiedKey::new(certs, signer);
    match ck.keys_match() {
        Ok(()) => Ok(ck),
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::Mismatch {
            cert: cert_path.to_owned(),
            key: key_path.to_owned(),
        }),
        // Unknown key types cannot be checked here; the handshake will tell.
        Err(_) => Ok(ck),
    }
}

/// A certificate resolver that serves the files' current contents.
#[derive(Debug)]
pub struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    state: RwLock<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    key: Arc<CertifiedKey>,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

impl ReloadingCert {
    /// Loads the files now; an error here is fatal at start.
    pub fn load(
        cert_path: impl Into<PathBuf>,
        key_path: impl Into<PathBuf>,
    ) -> Result<Self, TlsError> {
        let (cert_path, key_path) = (cert_path.into(), key_path.into());
        let (cert_pem, key_pem) = (read(&cert_path)?, read(&key_path)?);
        let key = Arc::new(certified_key(&cert_pem, &key_pem, &cert_path, &key_path)?);
        Ok(Self {
            cert_path,
            key_path,
            state: RwLock::new(Loaded {
                cert_pem,
                key_pem,
                key,
            }),
        })
    }

    /// Re-reads the files. Returns whether a new certificate is now served; on error the
    /// previous one stays (a half-written Secret update must not take the webhook down).
    pub fn reload(&self) -> Result<bool, TlsError> {
        let (cert_pem, key_pem) = (read(&self.cert_path)?, read(&self.key_path)?);
        {
            let state = self.state.read().unwrap_or_else(|e| e.into_inner());
            if state.cert_pem == cert_pem && state.key_pem == key_pem {
                return Ok(false);
            }
        }
        let key = Arc::new(certified_key(
            &cert_pem,
            &key_pem,
            &self.cert_path,
            &self.key_path,
        )?);
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = Loaded {
            cert_pem,
            key_pem,
            key,
        };
        Ok(true)
    }

    fn current(&self) -> Arc<CertifiedKey> {
        self.state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .key
            .clone()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// A rustls server configuration (ring provider, TLS 1.2 and 1.3, HTTP/1.1) around `resolver`.
pub fn server_config(resolver: Arc<dyn ResolvesServerCert>) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
