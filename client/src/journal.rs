//! The sidecar's intent journal: how a sidecar crash in the middle of a multi-word
//! update (top-up, revoke, harvest, grant) is finished or rolled back on restart.
//!
//! The sidecar is the single writer of pool words and of a lane's sidecar line, so every
//! such update is a list of absolute stores, which are idempotent. At most one update
//! also touches the shared `avail` word with a read-modify-write; that RMW stamps a new
//! sidecar tag (`stag`, the top 8 bits of `avail`, written only by the sidecar). Order:
//!
//! 1. write the journal: the RMW (lane, new stag) and the absolute stores, then mark it
//!    active (Release);
//! 2. the RMW on `avail`, if any;
//! 3. the stores;
//! 4. mark the journal inactive.
//!
//! Recovery (`Region::open_owner`): an active journal whose RMW's stag is not in the lane's
//! `avail` never took effect (steps 3+ did not run either): drop it. Otherwise re-apply
//! all the stores (idempotent) and clear it. Either way each credit moves exactly once.

use crate::error::SidecarError;
use crate::lane::{View, stag};
use crate::layout::{JOURNAL_WORDS, L_AVAIL};
use crate::sync::{ACQ, REL, RELAXED};

const J_ACTIVE: usize = 0;
const J_RMW: usize = 1;
const J_LANE: usize = 2;
const J_STAG: usize = 3;
const J_N: usize = 4;
const J_PAIRS: usize = 8;
/// Most stores one journaled update can make.
pub(crate) const MAX_PAIRS: usize = (JOURNAL_WORDS - J_PAIRS) / 2;

/// One journaled update being built.
#[derive(Debug, Default)]
pub(crate) struct Entry {
    /// `(lane, new stag)` of the RMW on `avail`, if the update has one.
    pub rmw: Option<(usize, u8)>,
    pub stores: Vec<(usize, u64)>,
}

/// What recovery found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalRecovery {
    /// No update was in flight.
    Clean,
    /// An update had taken effect; its remaining stores were applied.
    Completed,
    /// An update had not taken effect; it was dropped.
    RolledBack,
}

impl View<'_> {
    fn jw(&self, i: usize) -> &crate::sync::AtomicU64 {
        &self.w[self.l.journal_off + i]
    }

    /// Step 1: record the intent.
    pub(crate) fn journal_begin(&self, e: &Entry) -> Result<(), SidecarError> {
        if e.stores.len() > MAX_PAIRS {
            return Err(SidecarError::Config(format!(
                "a journaled update may make at most {MAX_PAIRS} stores"
            )));
        }
        let (rmw, lane, st) = match e.rmw {
            Some((lane, st)) => (1, lane as u64, u64::from(st)),
            None => (0, 0, 0),
        };
        self.jw(J_RMW).store(rmw, RELAXED);
        self.jw(J_LANE).store(lane, RELAXED);
        self.jw(J_STAG).store(st, RELAXED);
        self.jw(J_N).store(e.stores.len() as u64, RELAXED);
        for (i, (idx, v)) in e.stores.iter().enumerate() {
            self.jw(J_PAIRS + 2 * i).store(*idx as u64, RELAXED);
            self.jw(J_PAIRS + 2 * i + 1).store(*v, RELAXED);
        }
        self.jw(J_ACTIVE).store(1, REL);
        Ok(())
    }

    /// Steps 3 and 4: apply the stores, then retire the entry.
    pub(crate) fn journal_finish(&self, e: &Entry, step: &mut impl FnMut(u32) -> bool) {
        for (idx, v) in &e.stores {
            self.w[*idx].store(*v, REL);
        }
        if !step(10) {
            return;
        }
        self.jw(J_ACTIVE).store(0, REL);
    }

    /// Drops an entry whose RMW did not happen (a failed CAS).
    pub(crate) fn journal_abort(&self) {
        self.jw(J_ACTIVE).store(0, REL);
    }

    /// Finishes or rolls back an update a crashed sidecar left in flight.
    pub(crate) fn journal_recover(&self) -> Result<JournalRecovery, SidecarError> {
        if self.jw(J_ACTIVE).load(ACQ) == 0 {
            return Ok(JournalRecovery::Clean);
        }
        if self.jw(J_RMW).load(RELAXED) != 0 {
            let lane = self.jw(J_LANE).load(RELAXED) as usize;
            if lane >= self.l.lanes {
                return Err(SidecarError::Corrupt("journal lane"));
            }
            let want = self.jw(J_STAG).load(RELAXED) as u8;
            if stag(self.lw(lane, L_AVAIL).load(ACQ)) != want {
                self.journal_abort();
                return Ok(JournalRecovery::RolledBack);
            }
        }
        let n = self.jw(J_N).load(RELAXED) as usize;
        if n > MAX_PAIRS {
            return Err(SidecarError::Corrupt("journal length"));
        }
        for i in 0..n {
            let idx = self.jw(J_PAIRS + 2 * i).load(RELAXED) as usize;
            let v = self.jw(J_PAIRS + 2 * i + 1).load(RELAXED);
            // Journaled stores only ever target pools and lanes, never the header.
            if idx < self.l.pools_off || idx >= self.w.len() {
                return Err(SidecarError::Corrupt("journal store index"));
            }
            self.w[idx].store(v, REL);
        }
        self.journal_abort();
        Ok(JournalRecovery::Completed)
    }
}
