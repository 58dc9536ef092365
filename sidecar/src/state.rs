//! The sidecar's own state file, next to the region (tmpfs): the leases it holds per limit,
//! so a restarted sidecar still knows their ids (to spend, return and re-register them).
//!
//! Written to a temporary name and renamed, so a crash leaves the old or the new file. The
//! region's pools, not this file, hold the credits; if the file is lost or stale the sidecar
//! re-registers without the missing leases, the authority settles them at expiry (the
//! documented rule for unreturned leases), and no credit is created.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::leasebook::LeaseBook;

/// What is persisted.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct SidecarState {
    /// Lease books by canonical limit key.
    pub leases: BTreeMap<String, LeaseBook>,
    /// Per lane: what bounds what the sidecar reports for it (kept here because the region,
    /// which any agent can write, cannot be trusted for it).
    #[serde(default)]
    pub lanes: BTreeMap<u32, LaneBound>,
    /// Per limit (canonical key): credits of ended leases that agents still held in their
    /// local credits, still to be taken back as they flush (so a restart does not leave them
    /// spendable).
    #[serde(default)]
    pub owed: BTreeMap<String, u64>,
}

/// One lane's report bound (micro-credits, cumulative over the lane's life).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LaneBound {
    /// Credits the sidecar gave the lane: topped up, less revoked and reclaimed.
    pub given: u64,
    /// Credits put into batches for the lane, as the authority will charge them.
    pub charged: u64,
}

/// Errors reading or writing the state file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The file could not be read or written.
    #[error("sidecar state {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid state (hand edited, or from an incompatible version).
    #[error("sidecar state {path} is not valid ({reason}); move it aside to start without it")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        reason: String,
    },
}

impl SidecarState {
    /// Loads `path`; a missing file is an empty state.
    pub fn load(path: &Path) -> Result<Self, StateError> {
        match fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| StateError::Corrupt {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(StateError::Io {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Saves atomically.
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        let io = |source| StateError::Io {
            path: path.to_path_buf(),
            source,
        };
        let bytes = serde_json::to_vec(self).map_err(|e| StateError::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let tmp = path.with_extension("tmp");
        let mut f = fs::File::create(&tmp).map_err(io)?;
        f.write_all(&bytes).map_err(io)?;
        fs::rename(&tmp, path).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corrupt() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("state.json");
        assert!(SidecarState::load(&p).unwrap().leases.is_empty());
        let mut s = SidecarState::default();
        let mut b = LeaseBook::new();
        b.grant("l1".into(), 500, 9_000, 1);
        b.consume(100);
        s.leases.insert("acme/wallet".into(), b);
        s.owed.insert("acme/wallet".into(), 70);
        s.save(&p).unwrap();
        let back = SidecarState::load(&p).unwrap();
        assert_eq!(back.leases["acme/wallet"].remaining(), 400);
        assert_eq!(back.owed["acme/wallet"], 70);
        // A file written before `owed` existed still loads.
        fs::write(&p, br#"{"leases":{}}"#).unwrap();
        assert!(SidecarState::load(&p).unwrap().owed.is_empty());
        fs::write(&p, b"{not json").unwrap();
        assert!(matches!(
            SidecarState::load(&p),
            Err(StateError::Corrupt { .. })
        ));
    }
}
