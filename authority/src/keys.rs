//! The authority's audit signing key: an ed25519 seed stored as 64 hex characters in a file
//! readable only by its owner (`tollgate authority keygen` writes one).

use std::io::Write;
use std::path::Path;

use tollgate_ledger::audit::AuditSigner;

/// Why the key could not be loaded or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// File I/O.
    #[error("signing key file {path}: {source}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Not a hex seed.
    #[error("signing key file {path} is not a 64-hex-character ed25519 seed: {message}")]
    Format {
        /// File.
        path: String,
        /// What the parser said.
        message: String,
    },
    /// The file exists and overwrite was not asked for.
    #[error("{0} already exists; pass --force to overwrite it")]
    Exists(String),
}

/// Loads the signer from `path`.
pub fn load(path: &Path) -> Result<AuditSigner, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.display().to_string(),
        source,
    })?;
    AuditSigner::from_seed_hex(text.trim()).map_err(|e| KeyError::Format {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// Generates a key and writes it to `path` (mode 0600). Returns the signer.
pub fn generate(path: &Path, force: bool) -> Result<AuditSigner, KeyError> {
    if path.exists() && !force {
        return Err(KeyError::Exists(path.display().to_string()));
    }
    let signer = AuditSigner::generate().map_err(|e| KeyError::Format {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    let io = |source| KeyError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(io)?;
    writeln!(f, "{}", signer.seed_hex()).map_err(io)?;
    f.sync_all().map_err(io)?;
    Ok(signer)
}
