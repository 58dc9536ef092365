//! The sidecar's ed25519 signing key.
//!
//! Usage batches are signed so the authority's audit chain can show which sidecar reported
//! what. The key is kept next to the region (tmpfs, mode 0600): a restarted sidecar signs with
//! the same key, so batches already in the outbox stay valid; a new pod makes a new key and
//! presents it when it registers.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

/// What went wrong loading or creating the key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing the key file failed.
    #[error("sidecar key {path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a 32-byte seed.
    #[error(
        "sidecar key {path} is {len} bytes, expected a 32-byte ed25519 seed; delete it to make a new key"
    )]
    BadLength {
        /// The key file.
        path: PathBuf,
        /// Its length.
        len: usize,
    },
    /// The OS random source failed.
    #[error("no randomness for a new sidecar key: {0}")]
    Random(String),
}

/// The sidecar's signing key.
pub struct SidecarKey {
    key: SigningKey,
}

impl std::fmt::Debug for SidecarKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SidecarKey")
            .field("public", &hex(&self.public_bytes()))
            .finish()
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl SidecarKey {
    /// A fresh random key (not persisted).
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(Self {
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// Loads the key at `path`, or creates it (mode 0600) if there is none.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyError> {
        let err = |source| KeyError::Io {
            path: path.to_path_buf(),
            source,
        };
        match fs::read(path) {
            Ok(bytes) => {
                let seed: [u8; 32] =
                    bytes
                        .as_slice()
                        .try_into()
                        .map_err(|_| KeyError::BadLength {
                            path: path.to_path_buf(),
                            len: bytes.len(),
                        })?;
                Ok(Self {
                    key: SigningKey::from_bytes(&seed),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let k = Self::generate()?;
                let tmp = path.with_extension("tmp");
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&tmp)
                    .map_err(err)?;
                f.write_all(&k.key.to_bytes()).map_err(err)?;
                f.sync_all().map_err(err)?;
                fs::rename(&tmp, path).map_err(err)?;
                Ok(k)
            }
            Err(e) => Err(err(e)),
        }
    }

    /// Signs `msg`.
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.key.sign(msg).to_bytes()
    }

    /// The public key the authority verifies with.
    pub fn public_bytes(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }
}

/// Checks a signature made by [`SidecarKey::sign`] (for tests and tools).
pub fn verify(public: &[u8; 32], msg: &[u8], sig: &[u8; 64]) -> bool {
    VerifyingKey::from_bytes(public)
        .map(|k| k.verify_strict(msg, &Signature::from_bytes(sig)).is_ok())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_survives_restart_and_signs() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sidecar.key");
        let a = SidecarKey::load_or_create(&p).unwrap();
        let b = SidecarKey::load_or_create(&p).unwrap();
        assert_eq!(a.public_bytes(), b.public_bytes());
        let sig = a.sign(b"batch");
        assert!(verify(&b.public_bytes(), b"batch", &sig));
        assert!(!verify(&b.public_bytes(), b"batcH", &sig));
        let mode = fs::metadata(&p).unwrap().permissions();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.mode() & 0o777, 0o600);
    }

    #[test]
    fn bad_key_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sidecar.key");
        fs::write(&p, b"short").unwrap();
        let e = SidecarKey::load_or_create(&p).unwrap_err();
        assert!(matches!(e, KeyError::BadLength { len: 5, .. }), "{e}");
    }
}
