//! # Liveness: who holds a lane, and whether that process still runs
//!
//! **Rule.** Before an agent process claims its first lane it registers a *holder*: it
//! creates a file in the region's holders folder (`<region path>.holders/`, made by the
//! sidecar next to the region in the same shared folder) and takes an exclusive `flock` on
//! it, which it keeps for the rest of its life. Every claim word it writes names that
//! holder (a 48-bit id, the file's name). The sidecar judges a holder **dead iff it can
//! take the lock itself** (non-blocking) **or the file is gone**.
//!
//! **Why this is exact, in any pod.** The kernel drops a `flock` when the last descriptor
//! of its open file goes away, which happens when the process exits or is killed by any
//! signal (kill -9 included), and at no other time unless the process closes the
//! descriptor itself. The lock lives on the inode in the shared tmpfs, not on a pid, so it
//! means the same thing in every PID namespace and for every uid that can open the file
//! (two containers' pid 1s never collide: ids are drawn at random and a file name is
//! taken with an exclusive link, so two live holders never share one). A holder's file is
//! created under a temporary name, locked, and only then linked to its final name, so the
//! final name of a live holder is locked from the instant it exists, and the id appears
//! in a claim word only after that. Hence while a claim names a holder, "the lock is free"
//! implies "the holder is dead". A restarted sidecar decides the same way: the files and
//! locks belong to the agents, not to it.
//!
//! **What can still go wrong, and what then holds.** A process that closes the descriptor
//! (closing every fd) or whose file is deleted (anything in the pod can write the shared
//! folder) looks dead and its lanes are reclaimed while it runs. The claim word carries a
//! generation bumped at every claim, and slot states carry the generation of the claim
//! that made them, so such a process learns at its next reserve or commit that the lane is
//! no longer its own (the claim differs): it refuses the commit
//! ([`crate::CommitError::Reclaimed`]) or claims a fresh lane for the next reserve, and
//! never settles into a lane reclaim has settled. A fork child inherits the descriptor,
//! so its parent's lanes are reclaimed only once both have exited (late, never early); the
//! child registers a holder of its own (new id) at its first claim and drops its copy of
//! the parent's descriptor.
//!
//! The claim word: `[holder:48 | generation:15 | owned:1]`. Free lanes keep their
//! generation (holder 0), so the next claim bumps it; generation 0 is never claimed, so a
//! slot state tagged 0 never matches a live claim.

use std::fmt;

/// Bits of the holder id in the claim word.
const HOLDER_BITS: u32 = 48;
const HOLDER_SHIFT: u32 = 16;
const GEN_MASK: u64 = 0x7FFF << 1;
/// Largest holder id.
const HOLDER_MAX: u64 = (1 << HOLDER_BITS) - 1;

/// An agent process as lane claims name it: the id of its holder file (see the module
/// docs). Never 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HolderId(u64);

impl HolderId {
    /// The id as a number (48 bits, nonzero).
    pub fn get(self) -> u64 {
        self.0
    }

    /// The holder's file name in the holders folder.
    pub fn file_name(self) -> String {
        format!("{:012x}", self.0)
    }

    /// The id a holder file name stands for, if it is one.
    pub fn from_file_name(name: &str) -> Option<HolderId> {
        if name.len() != 12 {
            return None;
        }
        let v = u64::from_str_radix(name, 16).ok()?;
        HolderId::new(v)
    }

    pub(crate) fn new(v: u64) -> Option<HolderId> {
        (v != 0 && v <= HOLDER_MAX).then_some(HolderId(v))
    }
}

impl fmt::Display for HolderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:012x}", self.0)
    }
}

/// The holder a claim word names (owned or being reclaimed); `None` for a free lane.
#[inline]
pub(crate) fn holder_of(claim: u64) -> Option<HolderId> {
    HolderId::new(claim >> HOLDER_SHIFT)
}

/// The claim's generation (also the tag of the slot states it makes).
#[inline]
pub(crate) fn generation(claim: u64) -> u16 {
    ((claim & GEN_MASK) >> 1) as u16
}

/// Whether the claim word says owned (not free, not being reclaimed).
#[inline]
pub(crate) fn is_owned(claim: u64) -> bool {
    claim & 1 == 1 && holder_of(claim).is_some()
}

/// Whether the lane is free (no holder): claimable.
#[inline]
pub(crate) fn is_free(claim: u64) -> bool {
    holder_of(claim).is_none()
}

/// The word of a free lane that keeps `claim`'s generation.
#[inline]
pub(crate) fn freed(claim: u64) -> u64 {
    claim & GEN_MASK
}

/// The word of a claim by `holder` of a lane whose free word is `free`: the next
/// generation (skipping 0), owned.
#[inline]
pub(crate) fn claimed_by(free: u64, holder: HolderId) -> u64 {
    let next = match (generation(free) + 1) & 0x7FFF {
        0 => 1,
        g => g,
    };
    (holder.0 << HOLDER_SHIFT) | (u64::from(next) << 1) | 1
}

/// The same claim, being reclaimed (owned bit cleared).
#[inline]
pub(crate) fn reclaiming(claim: u64) -> u64 {
    claim & !1
}

#[cfg(not(loom))]
pub(crate) use files::*;

#[cfg(not(loom))]
mod files {
    use std::fs::{File, OpenOptions};
    use std::hash::{BuildHasher, Hasher};
    use std::io::Write;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;
    use std::time::{Duration, SystemTime};

    use super::{HOLDER_MAX, HolderId};

    /// The holders folder of the region at `region`.
    pub(crate) fn holders_dir(region: &Path) -> PathBuf {
        let mut s = region.as_os_str().to_owned();
        s.push(".holders");
        PathBuf::from(s)
    }

    /// Creates the holders folder if it is missing (the sidecar does at create; an agent
    /// that finds none makes it): group-writable, setgid where allowed so the agents'
    /// files take the pod's shared group.
    pub(crate) fn create_holders_dir(region: &Path) -> std::io::Result<PathBuf> {
        let dir = holders_dir(region);
        match std::fs::create_dir(&dir) {
            Ok(()) => {
                // Ours: open it to the group (the umask may have narrowed it).
                let setgid =
                    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o2770));
                if setgid.is_err() {
                    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o770))?;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        if !std::fs::metadata(&dir)?.is_dir() {
            return Err(std::io::Error::other(format!(
                "{} exists and is not a folder",
                dir.display()
            )));
        }
        Ok(dir)
    }

    /// This process's registration in one holders folder.
    struct Registered {
        dir: PathBuf,
        /// The process that registered (a fork child sees its parent's entries).
        pid: u32,
        id: HolderId,
        /// Holds the lock: dropped only with the process (or when the file was lost).
        _file: File,
        inode: u64,
    }

    static REGISTRY: Mutex<Vec<Registered>> = Mutex::new(Vec::new());

    /// This process's holder in `dir`, registering one on first use (or after a fork, or
    /// when its file was deleted). Slow path only: claims call it.
    pub(crate) fn holder_for(dir: &Path) -> std::io::Result<HolderId> {
        let mut reg = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
        let me = std::process::id();
        // A fork child drops its copies of the parent's descriptors (the parent's locks
        // stay with the parent) and registers its own holder.
        reg.retain(|r| r.pid == me);
        if let Some(pos) = reg.iter().position(|r| r.dir == dir) {
            let r = &reg[pos];
            let still_there = std::fs::metadata(dir.join(r.id.file_name()))
                .map(|m| m.ino() == r.inode)
                .unwrap_or(false);
            if still_there {
                return Ok(r.id);
            }
            // Deleted (or replaced) under us: the sidecar would judge us dead. Register
            // anew; lanes claimed under the old id learn of it by their generation.
            reg.swap_remove(pos);
        }
        let r = register(dir, me)?;
        let id = r.id;
        reg.push(r);
        Ok(id)
    }

    fn register(dir: &Path, pid: u32) -> std::io::Result<Registered> {
        let seed = std::hash::RandomState::new();
        for attempt in 0u64..64 {
            let mut h = seed.build_hasher();
            h.write_u32(pid);
            h.write_u64(attempt);
            h.write_u128(
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos(),
            );
            let Some(id) = HolderId::new(h.finish() & HOLDER_MAX) else {
                continue;
            };
            let tmp = dir.join(format!(".tmp-{}-{pid}", id.file_name()));
            let _ = std::fs::remove_file(&tmp);
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o660)
                .open(&tmp)?;
            // The umask may have narrowed the mode: the sidecar (another uid, same group)
            // must be able to open the file to test its lock.
            file.set_permissions(std::fs::Permissions::from_mode(0o660))?;
            match file.try_lock() {
                Ok(()) => {}
                // Someone is looking at this fresh file (a garbage collector testing an old
                // one by mistake): leave it and draw another id.
                Err(std::fs::TryLockError::WouldBlock) => {
                    let _ = std::fs::remove_file(&tmp);
                    continue;
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(e),
            }
            // For people reading the folder: the pid in the agent's own namespace.
            let _ = writeln!(file, "pid {pid}");
            let final_path = dir.join(id.file_name());
            // An exclusive link: a live holder's name is never taken twice, and the final
            // name is locked from the moment it exists.
            let linked = std::fs::hard_link(&tmp, &final_path);
            let _ = std::fs::remove_file(&tmp);
            match linked {
                Ok(()) => {
                    let inode = file.metadata()?.ino();
                    return Ok(Registered {
                        dir: dir.to_owned(),
                        pid,
                        id,
                        _file: file,
                        inode,
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(std::io::Error::other("no unused holder id after 64 tries"))
    }

    /// What the sidecar found out about a holder.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Probe {
        /// Its lock is held: the process runs.
        Alive,
        /// Its lock was free (or its file is gone): the process is dead.
        Dead,
        /// The file could not be opened or tested (permissions?): not provably dead, so
        /// treated as alive.
        Unknown,
    }

    /// Tests holder `id`'s lock (sidecar). Never blocks.
    pub(crate) fn probe(dir: &Path, id: HolderId) -> Probe {
        let file = match File::open(dir.join(id.file_name())) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Probe::Dead,
            Err(_) => return Probe::Unknown,
        };
        match file.try_lock() {
            // Ours now; released when `file` is dropped.
            Ok(()) => Probe::Dead,
            Err(std::fs::TryLockError::WouldBlock) => Probe::Alive,
            Err(std::fs::TryLockError::Error(_)) => Probe::Unknown,
        }
    }

    /// The pid a holder wrote into its file (in its own PID namespace; for people only).
    pub(crate) fn reported_pid(dir: &Path, id: HolderId) -> Option<u32> {
        let text = std::fs::read_to_string(dir.join(id.file_name())).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("pid "))
            .and_then(|p| p.trim().parse().ok())
    }

    /// Removes holder files no claim names whose lock is free (dead processes), and
    /// temporary files of registrations that died half-way (unlocked and older than a
    /// minute). Returns how many were removed.
    pub(crate) fn collect_garbage(dir: &Path, named: &[HolderId]) -> usize {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let path = entry.path();
            if let Some(id) = HolderId::from_file_name(&name) {
                if named.contains(&id) || probe(dir, id) != Probe::Dead {
                    continue;
                }
            } else if name.starts_with(".tmp-") {
                let old = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > Duration::from_secs(60));
                // Only an old one is tested: taking the lock of a fresh one, even for an
                // instant, would make its registering agent's own lock fail.
                if !old || !File::open(&path).is_ok_and(|f| f.try_lock().is_ok()) {
                    continue;
                }
            } else {
                continue;
            }
            if std::fs::remove_file(&path).is_ok() {
                removed += 1;
            }
        }
        removed
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn claim_words_round_trip_and_bump_the_generation() {
        let h = HolderId::new(0xABCDEF).unwrap();
        let c = claimed_by(0, h);
        assert_eq!(holder_of(c), Some(h));
        assert_eq!(generation(c), 1);
        assert!(is_owned(c));
        let r = reclaiming(c);
        assert!(!is_owned(r) && !is_free(r));
        let f = freed(r);
        assert!(is_free(f));
        assert_eq!(generation(f), 1);
        assert_eq!(generation(claimed_by(f, h)), 2);
        // The generation wraps past 0.
        let top = (0x7FFF << 1) as u64;
        assert_eq!(generation(claimed_by(top, h)), 1);
        assert_eq!(HolderId::from_file_name(&h.file_name()), Some(h));
        assert_eq!(HolderId::from_file_name("000000000000"), None);
        assert_eq!(HolderId::from_file_name("xyz"), None);
    }

    #[test]
    fn a_registered_holder_is_alive_and_a_missing_one_dead() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = create_holders_dir(&tmp.path().join("region")).unwrap();
        let id = holder_for(&dir).unwrap();
        assert_eq!(
            holder_for(&dir).unwrap(),
            id,
            "one holder per process and folder"
        );
        assert_eq!(probe(&dir, id), Probe::Alive);
        assert_eq!(reported_pid(&dir, id), Some(std::process::id()));
        let ghost = HolderId::new(1).unwrap();
        assert_eq!(probe(&dir, ghost), Probe::Dead);
        // Garbage collection keeps the live holder.
        assert_eq!(collect_garbage(&dir, &[]), 0);
        assert!(dir.join(id.file_name()).exists());
        // A deleted file makes the next claim register anew.
        std::fs::remove_file(dir.join(id.file_name())).unwrap();
        let again = holder_for(&dir).unwrap();
        assert_ne!(again, id);
        assert_eq!(probe(&dir, again), Probe::Alive);
    }
}
