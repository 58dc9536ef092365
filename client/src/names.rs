//! The name table: agent and feature names, interned once per name, so ring records
//! carry 16-bit ids instead of strings.
//!
//! **Invariant.** An entry is `FREE`, `WRITING` (claimed by one agent process, named in the
//! state word), or `READY` (hash and length in the state word, bytes in the entry). A
//! `READY` entry never changes again (entries are not recycled while the region lives), so
//! an id an agent holds names the same string for as long as the region exists. Id 0 is
//! "unnamed" and never an entry.
//!
//! **Interning** (agents, on the slow path: `Gate::agent`, `Gate::feature`, attach): probe
//! from the name's hash (open addressing, linear, bounded by the table size). A `READY`
//! entry with the same hash, length and bytes is the id. A `FREE` entry is claimed with
//! one CAS (`FREE` -> `WRITING(holder)`), its bytes written, then `READY` stored with
//! Release, so a reader that loads `READY` with Acquire sees the bytes. An entry another
//! process is writing is waited for a bounded time (it is usually the same name, interned
//! at the same instant); if it stays `WRITING`, the probe moves on.
//!
//! **Crashes.** A writer killed between its CAS and its `READY` store leaves a `WRITING`
//! entry naming its holder; nobody ever uses its bytes. The sidecar frees such entries
//! once the holder is dead ([`View::free_stuck_names`]), the same liveness rule as for
//! lanes. Two processes interning one name concurrently get one id, unless one of them
//! dies or stalls mid-write longer than the other waits: then the other makes a second
//! entry with the same bytes, which resolves to the same string (it costs an entry, not a
//! label). Nothing else is possible, so no interleaving loses or confuses a name
//! (`loom_attr`: `loom_names_*`, `loom_a_name_writer_*`).
//!
//! **Hostile input.** Any process that maps the region can write any word of the table.
//! The sidecar reads an entry only through [`View::name_bytes`]: bounded by the entry's
//! size, `READY` required, length at most [`MAX_NAME`], bytes decoded lossily. At worst a
//! scribbler makes its own pod's records carry a wrong or empty name; it cannot crash the
//! sidecar or move a credit.

use crate::holder::{self, HolderId};
use crate::lane::View;
use crate::layout::*;
use crate::sync::{ACQ, ACQ_REL, REL, RELAXED, spin_hint};

const FREE: u64 = 0;
const WRITING: u64 = 1;
const READY: u64 = 2;

/// Probes spent waiting for an entry another process is writing, before moving on.
const WRITE_WAIT_SPINS: u32 = if cfg!(loom) { 2 } else { 20_000 };

/// Why a name could not be interned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NameError {
    /// Longer than [`MAX_NAME`] bytes.
    TooLong,
    /// Every entry is taken.
    Full,
}

#[inline]
fn state_kind(st: u64) -> u64 {
    st & 0xFF
}

/// FNV-1a over the bytes.
pub(crate) fn hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn ready_word(h: u64, len: usize) -> u64 {
    ((h >> 32) << 32) | ((len as u64) << 8) | READY
}

impl View<'_> {
    #[inline]
    fn nw(&self, id: usize, field: usize) -> &crate::sync::AtomicU64 {
        &self.w[self.l.name(id) + field]
    }

    /// Interns `name` for agent process `me`: its id (0 for the empty name).
    pub(crate) fn intern(&self, name: &[u8], me: HolderId) -> Result<u16, NameError> {
        if name.is_empty() {
            return Ok(0);
        }
        if name.len() > MAX_NAME {
            return Err(NameError::TooLong);
        }
        let h = hash(name);
        let want = ready_word(h, name.len());
        let span = self.l.names - 1;
        let start = (h % span as u64) as usize;
        for i in 0..span {
            let id = 1 + (start + i) % span;
            let st = self.nw(id, N_STATE);
            let mut waited = 0;
            loop {
                let cur = st.load(ACQ);
                match state_kind(cur) {
                    FREE if cur == FREE => {
                        let claim = (me.get() << 16) | WRITING;
                        if st.compare_exchange(FREE, claim, ACQ_REL, RELAXED).is_err() {
                            continue; // someone else claimed it: look again
                        }
                        self.write_name_bytes(id, name);
                        st.store(want, REL);
                        return Ok(id as u16);
                    }
                    READY if cur == want && self.name_matches(id, name) => return Ok(id as u16),
                    WRITING if waited < WRITE_WAIT_SPINS => {
                        waited += 1;
                        spin_hint();
                    }
                    _ => break, // another name, a stuck writer, or garbage: next entry
                }
            }
        }
        Err(NameError::Full)
    }

    fn write_name_bytes(&self, id: usize, name: &[u8]) {
        let mut padded = [0u8; MAX_NAME];
        padded[..name.len()].copy_from_slice(name);
        for (i, chunk) in padded.chunks(WORD).enumerate() {
            let mut b = [0u8; WORD];
            b.copy_from_slice(chunk);
            self.nw(id, N_BYTES + i)
                .store(u64::from_le_bytes(b), RELAXED);
        }
    }

    fn name_matches(&self, id: usize, name: &[u8]) -> bool {
        name.chunks(WORD).enumerate().all(|(i, chunk)| {
            let b = self.nw(id, N_BYTES + i).load(RELAXED).to_le_bytes();
            b[..chunk.len()] == *chunk
        })
    }

    /// The bytes of name `id` if it is a published entry (0 and anything else: `None`).
    pub(crate) fn name_bytes(&self, id: u16) -> Option<Vec<u8>> {
        let id = usize::from(id);
        if id == 0 || id >= self.l.names {
            return None;
        }
        let st = self.nw(id, N_STATE).load(ACQ);
        let len = ((st >> 8) & 0xFF) as usize;
        if state_kind(st) != READY || len == 0 || len > MAX_NAME {
            return None;
        }
        let mut out = Vec::with_capacity(len);
        for i in 0..len.div_ceil(WORD) {
            let b = self.nw(id, N_BYTES + i).load(RELAXED).to_le_bytes();
            out.extend_from_slice(&b[..(len - i * WORD).min(WORD)]);
        }
        Some(out)
    }

    /// Frees entries left `WRITING` by processes that died mid-write (sidecar). Returns how
    /// many it freed.
    pub(crate) fn free_stuck_names(&self, is_dead: &dyn Fn(HolderId) -> bool) -> usize {
        let mut freed = 0;
        for id in 1..self.l.names {
            let st = self.nw(id, N_STATE);
            let cur = st.load(ACQ);
            if state_kind(cur) != WRITING {
                continue;
            }
            let Some(h) = holder::HolderId::new(cur >> 16) else {
                continue;
            };
            // A dead writer writes nothing more; the CAS only loses to a scribbler.
            if is_dead(h) && st.compare_exchange(cur, FREE, ACQ_REL, RELAXED).is_ok() {
                freed += 1;
            }
        }
        freed
    }

    /// `(entries in use, entries in all)` (metrics).
    pub(crate) fn names_used(&self) -> (usize, usize) {
        let used = (1..self.l.names)
            .filter(|id| self.nw(*id, N_STATE).load(RELAXED) != FREE)
            .count();
        (used, self.l.names - 1)
    }
}
