//! The task table: named tasks agents open, which the sidecar registers with the
//! authority and serves like any other limit.
//!
//! **Invariant.** An entry's state word is `[holder:48 | generation:13 | kind:3]`: `FREE`
//! (keeping its last generation), `WRITING` (one agent process, named, is filling it in
//! under the next generation) or `OPEN`. The registration words (tenant, id, budget, max
//! calls, hash) of an `OPEN` entry never change until the sidecar frees it, and a freed
//! entry is reused only under a new generation, so a [`TaskRef`] (slot, generation) names
//! one task for as long as it is open and never another one.
//!
//! **Opening** (agents, slow path): probe from the hash of (tenant, id). An `OPEN` entry
//! of the same tenant and id is the task (processes of the pod share it). A `FREE` one is
//! claimed with one CAS (`FREE(g)` -> `WRITING(holder, g + 1)`), filled in, then `OPEN`
//! stored with Release. An entry being written is waited for a bounded time, then
//! skipped. A writer killed mid-way leaves `WRITING` naming its holder: the sidecar frees
//! the entry (generation kept, so nothing made under it matches later) once the holder is
//! dead, as for lanes and names.
//!
//! **Completion** (`Task::complete`): the completing thread holds a zero-credit
//! reservation flagged as a work unit on its lane, then marks the task done with one CAS
//! on `K_DONE` (0 -> the mark naming that lane, claim generation and slot), then commits
//! the reservation, which writes the work-unit record. Only the CAS winner commits; a
//! loser cancels. If the winner dies between its CAS and its commit, reclaim finds the
//! held slot, sees the mark names it, and settles it as a commit: the task's one work-unit
//! record is written exactly once in the pod, whatever instruction a process dies at.
//!
//! **The sidecar's line** (`KS_*`, written only by the sidecar): the task's status for
//! this generation (registered with the authority, spent, out of calls, closed), the pool
//! its budget is leased into, and the calls it has handed to lanes.

use crate::codes::{
    TASK_FREE as FREE, TASK_HOLDER_SHIFT as HOLDER_SHIFT, TASK_OPEN as OPEN,
    TASK_WRITING as WRITING, TaskRef, task_gen as gen_of, task_kind as kind, task_word as word,
};
use crate::holder::{self, HolderId};
use crate::lane::View;
use crate::layout::*;
use crate::names::hash;
use crate::sync::{ACQ, ACQ_REL, REL, RELAXED, spin_hint};

/// Probes spent waiting for an entry another process is writing, before moving on.
const WRITE_WAIT_SPINS: u32 = if cfg!(loom) { 2 } else { 20_000 };

/// The sidecar's view of a task (`KS_STATUS`, low 8 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum TaskStatus {
    /// Not seen by the sidecar yet.
    New = 0,
    /// Leased from the authority into its pool: calls on it are served.
    Open = 1,
    /// Its budget is spent (the authority refused it more).
    Spent = 2,
    /// It has made `max_calls` calls.
    OutOfCalls = 3,
    /// Completed, or closed by the sidecar.
    Closed = 4,
    /// Registered with the authority, waiting for its first lease.
    Pending = 5,
}

impl TaskStatus {
    fn from_code(c: u64) -> TaskStatus {
        match c {
            1 => TaskStatus::Open,
            2 => TaskStatus::Spent,
            3 => TaskStatus::OutOfCalls,
            4 => TaskStatus::Closed,
            5 => TaskStatus::Pending,
            _ => TaskStatus::New,
        }
    }
}

/// Why a task could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenError {
    /// Every entry is taken.
    Full,
    /// No open task of that id, and no budget to open one with.
    NoBudget,
}

/// What an agent asks for when it opens a task.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TaskTerms<'a> {
    pub tenant: u16,
    pub id: &'a [u8],
    pub budget: u64,
    pub max_calls: u32,
}

/// A task as registered in the table (sidecar side).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskEntry {
    /// Where it is.
    pub task: TaskRef,
    /// Tenant index.
    pub tenant: u16,
    /// The task id (lossily decoded: the region is not trusted).
    pub id: String,
    /// Its budget, micro-credits.
    pub budget: u64,
    /// Most calls (0: no limit).
    pub max_calls: u32,
    /// An agent completed it.
    pub completed: bool,
    /// What the sidecar last wrote for it.
    pub status: TaskStatus,
    /// Calls given to its lanes, net of the unused calls of reclaimed lanes.
    pub calls_given: u64,
}

fn task_hash(tenant: u16, id: &[u8]) -> u64 {
    let mut b = Vec::with_capacity(id.len() + 2);
    b.extend_from_slice(&tenant.to_le_bytes());
    b.extend_from_slice(id);
    hash(&b)
}

impl View<'_> {
    #[inline]
    pub(crate) fn kw(&self, slot: usize, field: usize) -> &crate::sync::AtomicU64 {
        &self.w[self.l.task(slot) + field]
    }

    /// The entry `t` names if it is still that task (open under `t`'s generation).
    #[inline]
    pub(crate) fn task_is(&self, t: TaskRef) -> bool {
        let slot = usize::from(t.slot);
        slot < self.l.tasks && {
            let st = self.kw(slot, K_STATE).load(ACQ);
            kind(st) == OPEN && gen_of(st) == t.generation
        }
    }

    /// Opens the task of `terms` for agent process `me`: the entry of the same tenant and
    /// id if one is open (with the terms it was opened with), else a new one (if `terms`
    /// has a budget).
    pub(crate) fn open_task(
        &self,
        terms: &TaskTerms<'_>,
        me: HolderId,
    ) -> Result<TaskRef, OpenError> {
        let n = self.l.tasks;
        if n == 0 || terms.id.is_empty() || terms.id.len() > MAX_TASK_ID {
            return Err(OpenError::Full);
        }
        let mut free_seen = false;
        let h = task_hash(terms.tenant, terms.id);
        let start = (h % n as u64) as usize;
        for i in 0..n {
            let slot = (start + i) % n;
            let st = self.kw(slot, K_STATE);
            let mut waited = 0;
            loop {
                let cur = st.load(ACQ);
                match kind(cur) {
                    FREE if cur >> HOLDER_SHIFT == 0 && terms.budget == 0 => {
                        free_seen = true;
                        break; // joining only: look on for an open entry of the id
                    }
                    FREE if cur >> HOLDER_SHIFT == 0 => {
                        let next = (gen_of(cur) + 1) & crate::codes::TASK_GEN_MASK;
                        let claim = word(me.get(), next, WRITING);
                        if st.compare_exchange(cur, claim, ACQ_REL, RELAXED).is_err() {
                            continue;
                        }
                        self.write_terms(slot, terms, h);
                        st.store(word(0, next, OPEN), REL);
                        return Ok(TaskRef {
                            slot: slot as u16,
                            generation: next,
                        });
                    }
                    OPEN if self.task_matches(slot, terms.tenant, terms.id, h) => {
                        return Ok(TaskRef {
                            slot: slot as u16,
                            generation: gen_of(cur),
                        });
                    }
                    WRITING if waited < WRITE_WAIT_SPINS => {
                        waited += 1;
                        spin_hint();
                    }
                    _ => break,
                }
            }
        }
        Err(if free_seen {
            OpenError::NoBudget
        } else {
            OpenError::Full
        })
    }

    fn write_terms(&self, slot: usize, t: &TaskTerms<'_>, h: u64) {
        self.kw(slot, K_TENANT).store(u64::from(t.tenant), RELAXED);
        self.kw(slot, K_LEN).store(t.id.len() as u64, RELAXED);
        self.kw(slot, K_BUDGET).store(t.budget, RELAXED);
        self.kw(slot, K_MAX_CALLS)
            .store(u64::from(t.max_calls), RELAXED);
        self.kw(slot, K_HASH).store(h, RELAXED);
        self.kw(slot, K_DONE).store(0, RELAXED);
        let mut padded = [0u8; MAX_TASK_ID];
        padded[..t.id.len()].copy_from_slice(t.id);
        for (i, chunk) in padded.chunks(WORD).enumerate() {
            let mut b = [0u8; WORD];
            b.copy_from_slice(chunk);
            self.kw(slot, K_ID + i)
                .store(u64::from_le_bytes(b), RELAXED);
        }
    }

    fn task_matches(&self, slot: usize, tenant: u16, id: &[u8], h: u64) -> bool {
        self.kw(slot, K_HASH).load(RELAXED) == h
            && self.kw(slot, K_TENANT).load(RELAXED) == u64::from(tenant)
            && self.kw(slot, K_LEN).load(RELAXED) == id.len() as u64
            && id.chunks(WORD).enumerate().all(|(i, chunk)| {
                let b = self.kw(slot, K_ID + i).load(RELAXED).to_le_bytes();
                b[..chunk.len()] == *chunk
            })
    }

    /// `(budget, max_calls)` task `t` was opened with (zeros for a stale reference).
    pub(crate) fn task_terms(&self, t: TaskRef) -> (u64, u32) {
        if !self.task_is(t) {
            return (0, 0);
        }
        let slot = usize::from(t.slot);
        let calls = self.kw(slot, K_MAX_CALLS).load(RELAXED);
        (
            self.kw(slot, K_BUDGET).load(RELAXED),
            u32::try_from(calls).unwrap_or(u32::MAX),
        )
    }

    /// The pool the sidecar leases `t`'s budget into, if it registered `t`.
    pub(crate) fn task_pool(&self, t: TaskRef) -> Option<usize> {
        if self.task_status(t) == TaskStatus::New {
            return None;
        }
        let p = self.kw(usize::from(t.slot), KS_POOL).load(ACQ);
        (p != 0 && (p as usize) <= self.l.pools).then(|| p as usize - 1)
    }

    /// What the pod holds of `t`'s budget that can still pay calls: its pool's uncarved
    /// credits and what its live lanes have not reserved (shared and local credits).
    /// Reserved and committed-but-unharvested credits are not counted: they pay nothing
    /// more. A scan of the lanes: for the slow path only.
    pub(crate) fn task_remaining(&self, t: TaskRef) -> u64 {
        let Some(p) = self.task_pool(t) else {
            return 0;
        };
        let mut left = self.pw(p, P_AVAILABLE).load(ACQ);
        for lane in 0..self.l.lanes {
            let key = crate::codes::LaneKey::decode(self.lw(lane, L_KEY).load(ACQ));
            if key.and_then(|k| k.task) == Some(t) {
                let unreserved = crate::lane::credits(self.lw(lane, L_AVAIL).load(ACQ))
                    .saturating_add(self.lw(lane, L_LOCAL).load(ACQ));
                left = left.saturating_add(unreserved);
            }
        }
        left
    }

    /// Records the pool `t`'s budget is leased into (sidecar, before its status says so).
    pub(crate) fn set_task_pool(&self, t: TaskRef, pool: usize) {
        if self.task_is(t) {
            self.kw(usize::from(t.slot), KS_POOL)
                .store(pool as u64 + 1, REL);
        }
    }

    /// The completion mark of task `t` (0: not completed; also 0 for a stale reference).
    #[inline]
    pub(crate) fn task_done(&self, t: TaskRef) -> u64 {
        if !self.task_is(t) {
            return 0;
        }
        self.kw(usize::from(t.slot), K_DONE).load(ACQ)
    }

    /// Marks `t` completed by the work-unit reservation `mark`; `false` if it was already
    /// completed (or `t` is stale).
    pub(crate) fn mark_task_done(&self, t: TaskRef, mark: u64) -> bool {
        self.task_is(t)
            && self
                .kw(usize::from(t.slot), K_DONE)
                .compare_exchange(0, mark, ACQ_REL, RELAXED)
                .is_ok()
    }

    /// The sidecar's status of `t` (`Closed` for a stale reference).
    pub(crate) fn task_status(&self, t: TaskRef) -> TaskStatus {
        if !self.task_is(t) {
            return TaskStatus::Closed;
        }
        let w = self.kw(usize::from(t.slot), KS_STATUS).load(ACQ);
        if (w >> 8) as u16 != t.generation {
            return TaskStatus::New;
        }
        TaskStatus::from_code(w & 0xFF)
    }

    /// Writes the sidecar's status of `t` (sidecar only).
    pub(crate) fn set_task_status(&self, t: TaskRef, s: TaskStatus) {
        if self.task_is(t) {
            let w = (u64::from(t.generation) << 8) | s as u64;
            self.kw(usize::from(t.slot), KS_STATUS).store(w, REL);
        }
    }

    /// The open task at `slot`, read defensively (sidecar).
    pub(crate) fn task_entry(&self, slot: usize) -> Option<TaskEntry> {
        if slot >= self.l.tasks {
            return None;
        }
        let st = self.kw(slot, K_STATE).load(ACQ);
        if kind(st) != OPEN {
            return None;
        }
        let t = TaskRef {
            slot: slot as u16,
            generation: gen_of(st),
        };
        let len = self.kw(slot, K_LEN).load(RELAXED) as usize;
        if len == 0 || len > MAX_TASK_ID {
            return None;
        }
        let mut id = Vec::with_capacity(len);
        for i in 0..len.div_ceil(WORD) {
            let b = self.kw(slot, K_ID + i).load(RELAXED).to_le_bytes();
            id.extend_from_slice(&b[..(len - i * WORD).min(WORD)]);
        }
        Some(TaskEntry {
            task: t,
            tenant: self.kw(slot, K_TENANT).load(RELAXED) as u16,
            id: String::from_utf8_lossy(&id).into_owned(),
            budget: self.kw(slot, K_BUDGET).load(RELAXED),
            max_calls: u32::try_from(self.kw(slot, K_MAX_CALLS).load(RELAXED)).unwrap_or(u32::MAX),
            completed: self.kw(slot, K_DONE).load(ACQ) != 0,
            status: self.task_status(t),
            calls_given: self.kw(slot, KS_CALLS_GIVEN).load(ACQ),
        })
    }

    /// Frees entries left `WRITING` by processes that died mid-way, and the open entry `t`
    /// when the sidecar is done with it (sidecar). The generation is kept: the next open of
    /// the slot bumps it.
    pub(crate) fn free_task(&self, t: TaskRef) -> bool {
        let slot = usize::from(t.slot);
        if slot >= self.l.tasks {
            return false;
        }
        let st = self.kw(slot, K_STATE);
        let open = word(0, t.generation, OPEN);
        if st.load(ACQ) != open {
            return false;
        }
        // The sidecar's words start at zero for the slot's next task: an agent opening it
        // writes only its own words, and a count left over would make the next task look
        // as if it had already made (or been given) its calls. A crash between these
        // stores and the CAS leaves a closing entry with no calls, which is what it has.
        self.kw(slot, KS_CALLS_GIVEN).store(0, REL);
        self.kw(slot, KS_CALLS_DONE).store(0, REL);
        self.kw(slot, KS_POOL).store(0, REL);
        st.compare_exchange(open, word(0, t.generation, FREE), ACQ_REL, RELAXED)
            .is_ok()
    }

    /// Frees entries left `WRITING` by dead processes (sidecar). Returns how many.
    pub(crate) fn free_stuck_tasks(&self, is_dead: &dyn Fn(HolderId) -> bool) -> usize {
        let mut freed = 0;
        for slot in 0..self.l.tasks {
            let st = self.kw(slot, K_STATE);
            let cur = st.load(ACQ);
            if kind(cur) != WRITING {
                continue;
            }
            let Some(h) = holder::HolderId::new(cur >> HOLDER_SHIFT) else {
                continue;
            };
            let free = word(0, gen_of(cur), FREE);
            if is_dead(h) && st.compare_exchange(cur, free, ACQ_REL, RELAXED).is_ok() {
                freed += 1;
            }
        }
        freed
    }
}

/// A task's calls as the sidecar accounts them (see [`View::give_calls`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TaskCalls {
    /// Given to lanes, net of the unused calls of reclaimed lanes (at most `max_calls`).
    pub given: u64,
    /// Made by lanes since reclaimed.
    pub done: u64,
    /// Made by live lanes (their `L_CALLS`).
    pub live_used: u64,
    /// Given to live lanes (their `L_CALLS_LIMIT`).
    pub live_given: u64,
}

impl TaskCalls {
    /// `given = live_given + done`, and no live lane made more calls than it was given.
    pub fn balanced(&self) -> bool {
        self.live_given.checked_add(self.done) == Some(self.given)
            && self.live_used <= self.live_given
    }

    /// Calls made so far in the pod.
    pub fn made(&self) -> u64 {
        self.done.saturating_add(self.live_used)
    }
}

impl View<'_> {
    /// CALLS: gives lane `lane` of task `t` `n` more calls (sidecar; journaled: the lane's
    /// `L_CALLS_LIMIT` and the task's `KS_CALLS_GIVEN` move together).
    pub(crate) fn give_calls(
        &self,
        lane: usize,
        t: TaskRef,
        n: u64,
    ) -> Result<(), crate::error::SidecarError> {
        use crate::error::SidecarError;
        if !self.task_is(t) {
            return Err(SidecarError::Config(format!("task {t:?} is not open")));
        }
        let slot = usize::from(t.slot);
        let limit = self.lw(lane, L_CALLS_LIMIT).load(ACQ);
        let given = self.kw(slot, KS_CALLS_GIVEN).load(ACQ);
        let e = crate::journal::Entry {
            rmw: None,
            stores: vec![
                (
                    self.l.lane(lane) + L_CALLS_LIMIT,
                    limit
                        .checked_add(n)
                        .ok_or(SidecarError::Overflow("lane calls"))?,
                ),
                (
                    self.l.task(slot) + KS_CALLS_GIVEN,
                    given
                        .checked_add(n)
                        .ok_or(SidecarError::Overflow("task calls"))?,
                ),
            ],
        };
        self.journal_begin(&e)?;
        self.journal_finish(&e, &mut |_| true);
        Ok(())
    }

    /// RECLAIM-CALLS: a reclaimed lane of task `t` gives its unused calls back and its calls
    /// made are booked as done (sidecar, journaled; safe to re-run: a second run finds no
    /// unused calls and books nothing).
    pub(crate) fn reclaim_calls(
        &self,
        lane: usize,
        t: TaskRef,
        step: &mut impl FnMut(u32) -> bool,
    ) -> Result<(), crate::error::SidecarError> {
        let limit = self.lw(lane, L_CALLS_LIMIT).load(ACQ);
        let used = self.lw(lane, L_CALLS).load(ACQ).min(limit);
        if limit == 0 || !self.task_is(t) {
            return Ok(());
        }
        let slot = usize::from(t.slot);
        let given = self.kw(slot, KS_CALLS_GIVEN).load(ACQ);
        let done = self.kw(slot, KS_CALLS_DONE).load(ACQ);
        let e = crate::journal::Entry {
            rmw: None,
            stores: vec![
                (self.l.lane(lane) + L_CALLS_LIMIT, 0),
                (self.l.lane(lane) + L_CALLS, 0),
                (
                    self.l.task(slot) + KS_CALLS_GIVEN,
                    given.saturating_sub(limit - used),
                ),
                (self.l.task(slot) + KS_CALLS_DONE, done.saturating_add(used)),
            ],
        };
        self.journal_begin(&e)?;
        if !step(105) {
            return Ok(());
        }
        self.journal_finish(&e, step);
        Ok(())
    }

    /// Task `t`'s calls: the task's counters and its live lanes' (sidecar, audit).
    pub(crate) fn task_calls(&self, t: TaskRef) -> TaskCalls {
        if !self.task_is(t) {
            return TaskCalls::default();
        }
        let slot = usize::from(t.slot);
        let mut c = TaskCalls {
            given: self.kw(slot, KS_CALLS_GIVEN).load(ACQ),
            done: self.kw(slot, KS_CALLS_DONE).load(ACQ),
            ..TaskCalls::default()
        };
        for lane in 0..self.l.lanes {
            let key = crate::codes::LaneKey::decode(self.lw(lane, L_KEY).load(ACQ));
            if key.and_then(|k| k.task) == Some(t) {
                c.live_used = c.live_used.saturating_add(self.lw(lane, L_CALLS).load(ACQ));
                c.live_given = c
                    .live_given
                    .saturating_add(self.lw(lane, L_CALLS_LIMIT).load(ACQ));
            }
        }
        c
    }
}
