//! Agent-side lane protocol: reserve, commit, cancel, settle, and the decisions reclaim
//! makes about an operation a dead owner left half done. See [`crate::protocol`] for the
//! invariant and why each step is crash-safe.

use crate::layout::*;
use crate::sync::{ACQ, ACQ_REL, AtomicU64, REL, RELAXED};

// The lane's `avail` word: [stag:8 | otag:16 | credits:40].
pub(crate) const CREDIT_BITS: u32 = 40;
pub(crate) const CREDIT_MASK: u64 = (1 << CREDIT_BITS) - 1;
pub(crate) const OTAG_SHIFT: u32 = 40;
pub(crate) const OTAG_MASK: u64 = 0xFFFF << OTAG_SHIFT;
pub(crate) const STAG_SHIFT: u32 = 56;
/// The most credits (micro-credits) one lane can hold: about 1.1 million credits.
pub const MAX_LANE_CREDITS: u64 = CREDIT_MASK;

#[inline]
pub(crate) fn credits(avail: u64) -> u64 {
    avail & CREDIT_MASK
}
#[inline]
pub(crate) fn otag(avail: u64) -> u16 {
    ((avail & OTAG_MASK) >> OTAG_SHIFT) as u16
}
#[inline]
pub(crate) fn stag(avail: u64) -> u8 {
    (avail >> STAG_SHIFT) as u8
}
#[inline]
fn with_otag(avail: u64, tag: u16) -> u64 {
    (avail & !OTAG_MASK) | (u64::from(tag) << OTAG_SHIFT)
}

// Slot state word: [tag:16 | kind:8].
pub(crate) const EMPTY: u64 = 0;
pub(crate) const RESERVING: u64 = 1;
pub(crate) const HELD: u64 = 2;
pub(crate) const COMMITTED: u64 = 3;
pub(crate) const CANCELLED: u64 = 4;
pub(crate) const SETTLING: u64 = 5;

#[inline]
pub(crate) fn state(kind: u64, tag: u16) -> u64 {
    kind | (u64::from(tag) << 8)
}
#[inline]
pub(crate) fn kind(state: u64) -> u64 {
    state & 0xFF
}
#[inline]
pub(crate) fn tag(state: u64) -> u16 {
    (state >> 8) as u16
}

// Slot/record meta word: [book version low 32 | flags:16 | model:16].
pub(crate) const META_CANCELLED: u64 = 1 << 16;
pub(crate) const META_NO_MODEL: u64 = 0xFFFF;

/// Packs a call's token counts into one word (each saturates at `u32::MAX`).
#[inline]
pub(crate) fn pack_tokens(input: u64, output: u64) -> u64 {
    input.min(u64::from(u32::MAX)) | (output.min(u64::from(u32::MAX)) << 32)
}

/// What the owner thread knows about a lane it owns: only it writes these, so it never
/// has to read them back from shared memory.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Owner {
    pub lane: usize,
    /// The owner tag of the last owner CAS on `avail` (the next op uses `otag + 1`).
    pub otag: u16,
    /// Free slots (bit set = free). Only the owner allocates and frees slots.
    pub free: u64,
}

/// The lane ran dry: `reserve` found fewer credits than it needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReserveFail {
    Dry { have: u64 },
    NoSlot,
}

/// A view of a region's words through its layout: all protocol steps are methods here.
#[derive(Clone, Copy)]
pub(crate) struct View<'a> {
    pub w: &'a [AtomicU64],
    pub l: &'a Layout,
}

impl<'a> View<'a> {
    #[inline]
    pub(crate) fn lw(&self, lane: usize, field: usize) -> &'a AtomicU64 {
        &self.w[self.l.lane(lane) + field]
    }
    #[inline]
    pub(crate) fn sw(&self, lane: usize, slot: usize, field: usize) -> &'a AtomicU64 {
        &self.w[self.l.slot(lane, slot) + field]
    }

    /// Starts owning `lane` (after a successful claim): reads the tag and the free slots.
    pub(crate) fn owner_for(&self, lane: usize) -> Owner {
        let otag = otag(self.lw(lane, L_AVAIL).load(ACQ));
        let mut free = 0u64;
        for s in 0..self.l.slots {
            if kind(self.sw(lane, s, S_STATE).load(ACQ)) == EMPTY {
                free |= 1 << s;
            }
        }
        Owner { lane, otag, free }
    }

    /// RESERVE, run by the lane's owner thread. Steps (crash after any of them is safe,
    /// see the protocol docs):
    /// 1. write the amount into a free slot, then its state `RESERVING{t}` (the intent);
    /// 2. one CAS on `avail`: credits - amount, owner tag := t (the effect, tagged);
    /// 3. state `HELD{t}`.
    #[inline]
    pub(crate) fn reserve(
        &self,
        o: &mut Owner,
        amount: u64,
        tokens: u64,
        meta: u64,
        step: &mut impl FnMut(u32) -> bool,
    ) -> Result<(usize, u16), ReserveFail> {
        if o.free == 0 {
            return Err(ReserveFail::NoSlot);
        }
        let slot = o.free.trailing_zeros() as usize;
        let t = o.otag.wrapping_add(1);
        let lane = o.lane;
        self.sw(lane, slot, S_RESERVED).store(amount, RELAXED);
        self.sw(lane, slot, S_TOKENS).store(tokens, RELAXED);
        self.sw(lane, slot, S_META).store(meta, RELAXED);
        self.sw(lane, slot, S_STATE).store(state(RESERVING, t), REL);
        if !step(1) {
            return Ok((slot, t));
        }
        let avail = self.lw(lane, L_AVAIL);
        if let Err(have) = debit(avail, amount, t) {
            // Nothing was debited: withdraw the intent.
            self.sw(lane, slot, S_STATE).store(state(EMPTY, t), REL);
            return Err(ReserveFail::Dry { have });
        }
        o.otag = t;
        if !step(2) {
            return Ok((slot, t));
        }
        self.sw(lane, slot, S_STATE).store(state(HELD, t), REL);
        o.free &= !(1 << slot);
        Ok((slot, t))
    }

    /// COMMIT or CANCEL from a thread that does not own the lane: one CAS on the slot
    /// state (`HELD{t}` to `COMMITTED{t}` / `CANCELLED{t}`, with the actual amount
    /// written first), then flag the slot in the lane's pending mask so the owner settles
    /// it. Returns `false` if the slot was not ours any more (reclaimed).
    pub(crate) fn finish_remote(
        &self,
        lane: usize,
        slot: usize,
        t: u16,
        actual: u64,
        tokens: u64,
        cancel: bool,
    ) -> bool {
        let kind = if cancel { CANCELLED } else { COMMITTED };
        self.sw(lane, slot, S_ACTUAL).store(actual, RELAXED);
        if !cancel {
            self.sw(lane, slot, S_TOKENS).store(tokens, RELAXED);
        }
        if self
            .sw(lane, slot, S_STATE)
            .compare_exchange(state(HELD, t), state(kind, t), ACQ_REL, RELAXED)
            .is_err()
        {
            return false;
        }
        self.lw(lane, L_PENDING).fetch_or(1 << slot, REL);
        true
    }

    /// Settles every slot other threads committed or cancelled (owner only).
    #[inline]
    pub(crate) fn settle_pending(&self, o: &mut Owner) {
        let pending = self.lw(o.lane, L_PENDING);
        if pending.load(RELAXED) == 0 {
            return;
        }
        let mut mask = pending.swap(0, ACQ);
        while mask != 0 {
            let slot = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            if slot >= self.l.slots {
                continue; // a scribbled mask: ignore bits past the slots
            }
            let st = self.sw(o.lane, slot, S_STATE).load(ACQ);
            let cancel = match kind(st) {
                COMMITTED => false,
                CANCELLED => true,
                _ => continue,
            };
            let actual = self.sw(o.lane, slot, S_ACTUAL).load(RELAXED);
            self.settle(
                o,
                slot,
                if cancel { 0 } else { actual },
                cancel,
                &mut |_| true,
            );
        }
    }

    /// SETTLE a held, committed or cancelled slot, run by the owner (or by the sidecar
    /// acting as owner of a dead lane). Steps:
    /// 1. record the actual amount and the before-values of `consumed`, `overrun` and the
    ///    ring head in the slot, then its state `SETTLING{t2}` (the intent);
    /// 2. `consumed` += paid (owner-only word, plain store);
    /// 3. `overrun` += the part of `actual` past the reservation;
    /// 4. push a usage record to the ring (or count it lost if the ring is full);
    /// 5. one CAS on `avail`: credits + refund, owner tag := t2;
    /// 6. state `EMPTY`, slot free.
    ///
    /// Returns `false` only when `step` stopped it (a modelled crash).
    pub(crate) fn settle(
        &self,
        o: &mut Owner,
        slot: usize,
        actual: u64,
        cancel: bool,
        step: &mut impl FnMut(u32) -> bool,
    ) -> bool {
        let lane = o.lane;
        let t2 = o.otag.wrapping_add(1);
        let s = |f| self.sw(lane, slot, f);
        if cancel {
            let m = s(S_META).load(RELAXED);
            s(S_META).store(m | META_CANCELLED, RELAXED);
        }
        s(S_ACTUAL).store(actual, RELAXED);
        s(S_CONS_BEFORE).store(self.lw(lane, L_CONSUMED).load(RELAXED), RELAXED);
        s(S_OVER_BEFORE).store(self.lw(lane, L_OVERRUN).load(RELAXED), RELAXED);
        s(S_HEAD_BEFORE).store(self.lw(lane, L_RING_HEAD).load(RELAXED), RELAXED);
        s(S_STATE).store(state(SETTLING, t2), REL);
        if !step(1) {
            return false;
        }
        if !self.finish_settling(o, slot, t2, step) {
            return false;
        }
        o.free |= 1 << slot;
        true
    }

    /// Steps 2-6 of settle, each skipped if already done: the same code finishes a
    /// settle a dead owner left half done. Returns `true` when the slot is empty again.
    pub(crate) fn finish_settling(
        &self,
        o: &mut Owner,
        slot: usize,
        t2: u16,
        step: &mut impl FnMut(u32) -> bool,
    ) -> bool {
        let lane = o.lane;
        let s = |f| self.sw(lane, slot, f);
        let reserved = s(S_RESERVED).load(RELAXED);
        let actual = s(S_ACTUAL).load(RELAXED);
        let meta = s(S_META).load(RELAXED);
        let paid = actual.min(reserved);
        let over = actual - paid;
        let refund = reserved - paid;
        let cons_before = s(S_CONS_BEFORE).load(RELAXED);
        let consumed = self.lw(lane, L_CONSUMED);
        if paid > 0 && consumed.load(RELAXED) == cons_before {
            consumed.store(cons_before.wrapping_add(paid), REL);
        }
        if !step(2) {
            return false;
        }
        let over_before = s(S_OVER_BEFORE).load(RELAXED);
        let overrun = self.lw(lane, L_OVERRUN);
        if over > 0 && overrun.load(RELAXED) == over_before {
            overrun.store(over_before.wrapping_add(over), REL);
        }
        if !step(3) {
            return false;
        }
        let head_before = s(S_HEAD_BEFORE).load(RELAXED);
        if meta & META_CANCELLED == 0 && self.lw(lane, L_RING_HEAD).load(RELAXED) == head_before {
            let tokens = s(S_TOKENS).load(RELAXED);
            self.push_record(lane, head_before, reserved, actual, tokens, meta);
        }
        if !step(4) {
            return false;
        }
        let avail = self.lw(lane, L_AVAIL);
        if refund > 0 && otag(avail.load(ACQ)) != t2 {
            credit_owner(avail, refund, t2);
            o.otag = t2;
        }
        if !step(5) {
            return false;
        }
        s(S_STATE).store(state(EMPTY, t2), REL);
        true
    }

    /// Pushes one usage record (owner, or the sidecar for a dead lane): the record words,
    /// then the head with Release. A full ring counts the record as lost; its amounts are
    /// already in `consumed` / `overrun`.
    fn push_record(
        &self,
        lane: usize,
        head: u64,
        reserved: u64,
        actual: u64,
        tokens: u64,
        meta: u64,
    ) {
        let tail = self.lw(lane, L_RING_TAIL).load(ACQ);
        if head.wrapping_sub(tail) >= self.l.ring as u64 {
            let lost = self.lw(lane, L_LOST);
            lost.store(lost.load(RELAXED).wrapping_add(1), REL);
            return;
        }
        let r = self.l.record(lane, head);
        self.w[r + R_RESERVED].store(reserved, RELAXED);
        self.w[r + R_ACTUAL].store(actual, RELAXED);
        self.w[r + R_TOKENS].store(tokens, RELAXED);
        self.w[r + R_META].store(meta, RELAXED);
        self.w[r + R_SEQ].store(head.wrapping_add(1), RELAXED);
        self.lw(lane, L_RING_HEAD).store(head.wrapping_add(1), REL);
    }

    /// How many credits slot `slot` holds right now, deciding half-done operations from
    /// the tags exactly as reclaim does. Used by the conservation audit.
    pub(crate) fn slot_hold(&self, lane: usize, slot: usize) -> u64 {
        let st = self.sw(lane, slot, S_STATE).load(ACQ);
        let reserved = self.sw(lane, slot, S_RESERVED).load(RELAXED);
        let avail_tag = otag(self.lw(lane, L_AVAIL).load(ACQ));
        match kind(st) {
            RESERVING if avail_tag == tag(st) => reserved,
            HELD | COMMITTED | CANCELLED => reserved,
            SETTLING => {
                let actual = self.sw(lane, slot, S_ACTUAL).load(RELAXED);
                let paid = actual.min(reserved);
                let refund = reserved - paid;
                let mut h = 0;
                let cons_before = self.sw(lane, slot, S_CONS_BEFORE).load(RELAXED);
                if paid > 0 && self.lw(lane, L_CONSUMED).load(RELAXED) == cons_before {
                    h += paid;
                }
                if refund > 0 && avail_tag != tag(st) {
                    h += refund;
                }
                h
            }
            _ => 0,
        }
    }

    /// Reclaim, per slot, of a lane whose owner is dead (the caller owns the lane now):
    /// decides a half-done reserve from the tag, finishes a half-done settle, and
    /// settles every held or committed slot (held ones as cancelled: the call's outcome
    /// is unknown, so its credits go back). Safe to re-run after a crash of the caller.
    /// Returns the slots settled, or `None` if `step` stopped it (a modelled crash).
    pub(crate) fn recover_slots(
        &self,
        o: &mut Owner,
        step: &mut impl FnMut(u32) -> bool,
    ) -> Option<u32> {
        let mut settled = 0;
        // First the (at most one) operation in flight: it decides the owner tag.
        for slot in 0..self.l.slots {
            let st = self.sw(o.lane, slot, S_STATE).load(ACQ);
            match kind(st) {
                RESERVING => {
                    let avail_tag = otag(self.lw(o.lane, L_AVAIL).load(ACQ));
                    let next = if avail_tag == tag(st) { HELD } else { EMPTY };
                    self.sw(o.lane, slot, S_STATE)
                        .store(state(next, tag(st)), REL);
                }
                SETTLING => {
                    o.otag = otag(self.lw(o.lane, L_AVAIL).load(ACQ));
                    if !self.finish_settling(o, slot, tag(st), step) {
                        return None;
                    }
                    settled += 1;
                }
                _ => {}
            }
        }
        o.otag = otag(self.lw(o.lane, L_AVAIL).load(ACQ));
        for slot in 0..self.l.slots {
            let st = self.sw(o.lane, slot, S_STATE).load(ACQ);
            let (actual, cancel) = match kind(st) {
                HELD | CANCELLED => (0, true),
                COMMITTED => (self.sw(o.lane, slot, S_ACTUAL).load(RELAXED), false),
                _ => continue,
            };
            if !self.settle(o, slot, actual, cancel, step) {
                return None;
            }
            settled += 1;
        }
        self.lw(o.lane, L_PENDING).store(0, REL);
        Some(settled)
    }
}

/// Step 2 of reserve: take `amount` credits and stamp the owner tag, in one CAS. On
/// failure returns the credits there were.
#[cfg(not(tollgate_broken))]
#[inline]
fn debit(avail: &AtomicU64, amount: u64, t: u16) -> Result<(), u64> {
    let mut cur = avail.load(RELAXED);
    loop {
        let have = credits(cur);
        if have < amount {
            return Err(have);
        }
        match avail.compare_exchange_weak(cur, with_otag(cur - amount, t), ACQ_REL, RELAXED) {
            Ok(_) => return Ok(()),
            Err(now) => cur = now,
        }
    }
}

/// The deliberately broken variant (`--cfg tollgate_broken`): a split read-modify-write.
/// A top-up landing between the load and the store is lost; the loom model
/// `loom_reserve_races_top_up` must catch it.
#[cfg(tollgate_broken)]
#[inline]
fn debit(avail: &AtomicU64, amount: u64, t: u16) -> Result<(), u64> {
    let cur = avail.load(ACQ);
    let have = credits(cur);
    if have < amount {
        return Err(have);
    }
    avail.store(with_otag(cur - amount, t), REL);
    Ok(())
}

/// Step 5 of settle: give `refund` back and stamp the owner tag, in one CAS (the sidecar
/// adds and takes concurrently, so it must be a read-modify-write).
fn credit_owner(avail: &AtomicU64, refund: u64, t: u16) {
    let mut cur = avail.load(RELAXED);
    loop {
        // Cannot pass CREDIT_MASK: a refund only returns what this lane debited, and the
        // sidecar keeps a lane's outstanding credits below MAX_LANE_CREDITS.
        let c = credits(cur).saturating_add(refund).min(CREDIT_MASK);
        let new = with_otag((cur & !CREDIT_MASK) | c, t);
        match avail.compare_exchange_weak(cur, new, ACQ_REL, RELAXED) {
            Ok(_) => return,
            Err(now) => cur = now,
        }
    }
}
