//! Agent-side lane protocol: reserve, commit, cancel, settle, the owner's transfers
//! between the shared `avail` word and its local credits, and the decisions reclaim makes
//! about an operation a dead owner left half done. See [`crate::protocol`] for the
//! invariant and why each step is crash-safe.

use crate::codes::{TASK_OPEN, done_mark, task_word, unpack_names};
use crate::holder;
use crate::layout::*;
use crate::sync::{ACQ, ACQ_REL, AtomicU64, REL, RELAXED};

// The lane's `avail` word: [stag:8 | otag:16 | credits:40].
pub(crate) const CREDIT_BITS: u32 = 40;
pub(crate) const CREDIT_MASK: u64 = (1 << CREDIT_BITS) - 1;
pub(crate) const OTAG_SHIFT: u32 = 40;
pub(crate) const OTAG_MASK: u64 = 0xFFFF << OTAG_SHIFT;
pub(crate) const STAG_SHIFT: u32 = 56;
/// The most credits (micro) one lane can hold: about 1.1 million credits.
pub const MAX_LANE_CREDITS: u64 = CREDIT_MASK;
/// A pull from `avail` takes this many times the call's amount (when available), so the
/// next calls are served from local credits without a read-modify-write.
pub(crate) const PULL_FACTOR: u64 = 8;

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

// Slot state word: [tag:16 | kind:8]. The tag is the generation of the claim under which
// the slot was reserved (see `holder`), so a reservation made under an earlier claim of
// the lane (one that reclaim has settled) can never commit into a later one.
pub(crate) const EMPTY: u64 = 0;
pub(crate) const RESERVING: u64 = 1;
pub(crate) const HELD: u64 = 2;
pub(crate) const COMMITTED: u64 = 3;
pub(crate) const CANCELLED: u64 = 4;
pub(crate) const SETTLING: u64 = 5;
/// A thread other than the owner has taken the slot to commit or cancel it and is writing
/// the actual amount; `COMMITTED` / `CANCELLED` follow. Reclaim treats it as held.
pub(crate) const FINISHING: u64 = 6;
/// `RESERVING` for a reservation that also counts one of the lane's calls (`L_CALLS`):
/// reclaim decides the take from `local` as for `RESERVING`, and undoes the count if the
/// take did not happen.
pub(crate) const RESERVING_CALL: u64 = 7;
/// The owner's commit settle ([`View::commit_owned`]) has written its usage record,
/// unpublished, at the ring position whose low 32 bits sit in the state word's top half:
/// the record is the settle's intent (see [`rec_state`]). The generation tag bits are 0,
/// as for `SETTLING`: the slot is past the point where a stale commit could claim it.
pub(crate) const SETTLING_REC: u64 = 8;
const REC_HEAD_SHIFT: u32 = 32;

/// The `SETTLING_REC` state word for a record written at ring position `head`.
#[inline]
pub(crate) fn rec_state(head: u64) -> u64 {
    SETTLING_REC | (u64::from(head as u32) << REC_HEAD_SHIFT)
}

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

// Transfer intent word: [tag:16 | dir:8 | active:8].
const XFER_ACTIVE: u64 = 1;
const XFER_PULL: u64 = 1 << 8;
const XFER_FLUSH: u64 = 2 << 8;

// Slot/record meta word: [book version low 32 | flags:16 | model:16].
pub(crate) const META_CANCELLED: u64 = 1 << 16;
/// The record completes its task: one Agentic Work Unit (written at reserve).
pub(crate) const META_WORK_UNIT: u64 = 1 << 17;
pub(crate) const META_NO_MODEL: u64 = 0xFFFF;

// Slot/record outcomes word, written at commit: [flags:32 | outcomes:32].
/// The cost was stated in credits (`commit_credits`, a fixed-price call), not rated.
pub(crate) const OUT_PRE_RATED: u64 = 1 << 32;

/// Packs a commit's outcomes and flags into the outcomes word.
#[inline]
pub(crate) fn pack_outcomes(outcomes: u32, pre_rated: bool) -> u64 {
    u64::from(outcomes) | if pre_rated { OUT_PRE_RATED } else { 0 }
}

/// What one reservation asks for, as the slot records it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Request {
    /// Credits to hold.
    pub amount: u64,
    /// Token counts of the call's maximum (see [`pack_tokens`]).
    pub tokens: u64,
    /// Model, flags and book version (see `META_*`).
    pub meta: u64,
    /// Agent, feature and task ids (see `codes::pack_names`).
    pub names: u64,
    /// The reservation counts as one of the lane's calls, which stop at `L_CALLS_LIMIT`
    /// (a task with `max_calls`).
    pub counts_call: bool,
}

/// Packs a call's token counts into one word (each saturates at `u32::MAX`).
#[inline]
pub(crate) fn pack_tokens(input: u64, output: u64) -> u64 {
    input.min(u64::from(u32::MAX)) | (output.min(u64::from(u32::MAX)) << 32)
}

/// What the owner thread knows about a lane it owns: only it writes these words, so it
/// never has to read them back from shared memory.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Owner {
    pub lane: usize,
    /// The claim word this owner's process wrote: the lane is still its own while the
    /// lane's claim word equals it (a reclaim changes it, a re-claim bumps its generation).
    pub claim: u64,
    /// The owner tag of the last owner CAS on `avail` (the next transfer uses `otag + 1`).
    pub otag: u16,
    /// Free slots (bit set = free). Only the owner allocates and frees slots.
    pub free: u64,
    /// The lane's local credits (mirror of `L_LOCAL`, which only the owner writes).
    pub local: u64,
}

/// Why `reserve` did not reserve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReserveFail {
    /// The lane (local plus `avail`) has fewer credits than the call needs.
    Dry { have: u64 },
    /// Every slot is in use.
    NoSlot,
    /// A task lane has made every call the sidecar allowed it (`L_CALLS_LIMIT`).
    NoCalls,
    /// A modelled crash stopped it.
    Stopped,
}

/// A lane header's words.
pub(crate) type Hdr = [AtomicU64; LANE_HDR_WORDS];
/// A reservation slot's words.
pub(crate) type Slot = [AtomicU64; SLOT_WORDS];

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

    /// A lane's header as a fixed-size array: one bounds check here, none per field.
    #[inline]
    pub(crate) fn hdr(&self, lane: usize) -> &'a Hdr {
        let b = self.l.lane(lane);
        // In range: the layout was validated against the mapping's length.
        self.w[b..b + LANE_HDR_WORDS]
            .try_into()
            .expect("lane header inside the validated layout")
    }

    /// A reservation slot as a fixed-size array.
    #[inline]
    pub(crate) fn slot_words(&self, lane: usize, slot: usize) -> &'a Slot {
        let b = self.l.slot(lane, slot);
        self.w[b..b + SLOT_WORDS]
            .try_into()
            .expect("slot inside the validated layout")
    }

    /// Ring record `i` of `lane` as a fixed-size array.
    #[inline]
    fn record_words(&self, lane: usize, i: u64) -> &'a [AtomicU64; REC_WORDS] {
        let b = self.l.record(lane, i);
        // One bounds check for the record, none per field.
        self.w[b..b + REC_WORDS]
            .try_into()
            .expect("record inside the validated layout")
    }

    /// Starts owning `lane` (after a claim, or taking over a lane of an exited thread).
    pub(crate) fn owner_for(&self, lane: usize) -> Owner {
        let claim = self.lw(lane, L_CLAIM).load(ACQ);
        let otag = otag(self.lw(lane, L_AVAIL).load(ACQ));
        let local = self.lw(lane, L_LOCAL).load(ACQ);
        let mut free = 0u64;
        for s in 0..self.l.slots {
            if kind(self.sw(lane, s, S_STATE).load(ACQ)) == EMPTY {
                free |= 1 << s;
            }
        }
        Owner {
            lane,
            claim,
            otag,
            free,
            local,
        }
    }

    /// CLAIM a free lane for `holder` (agent process): one CAS from the free word (which
    /// keeps the last generation) to `[holder | generation + 1 | owned]`, then the lane's
    /// key. `None` if the lane is not free or another process won it.
    pub(crate) fn claim(&self, lane: usize, holder: holder::HolderId, key: u64) -> Option<Owner> {
        let claim = self.lw(lane, L_CLAIM);
        let free = claim.load(RELAXED);
        if !holder::is_free(free) {
            return None;
        }
        claim
            .compare_exchange(free, holder::claimed_by(free, holder), ACQ_REL, RELAXED)
            .ok()?;
        self.lw(lane, L_KEY).store(key, REL);
        Some(self.owner_for(lane))
    }

    /// Whether `o`'s lane is still its own (nobody reclaimed it since `o` took it). One
    /// load of the agent line the owner is about to write anyway.
    #[inline]
    pub(crate) fn still_owns(&self, o: &Owner) -> bool {
        self.hdr(o.lane)[L_CLAIM].load(ACQ) == o.claim
    }

    /// Whether slot `slot` still holds the reservation made under claim generation `gen`
    /// (owner thread, before it settles its own commit).
    #[inline]
    pub(crate) fn slot_is_held(&self, lane: usize, slot: usize, generation: u16) -> bool {
        self.sw(lane, slot, S_STATE).load(ACQ) == state(HELD, generation)
    }

    /// RESERVE, run by the lane's owner thread. If local credits are short, first PULL a
    /// batch from `avail` (one tagged CAS); then TAKE from local credits:
    /// 1. write amount, `local` and (a counted call) `calls` (the before-values) into a free
    ///    slot, then its state `RESERVING` (the intent);
    /// 2. a counted call: `calls += 1` (owner-only word: a plain store);
    /// 3. `local -= amount` (owner-only word: a plain store);
    /// 4. state `HELD`.
    #[inline]
    pub(crate) fn reserve(
        &self,
        o: &mut Owner,
        r: &Request,
        step: &mut impl FnMut(u32) -> bool,
    ) -> Result<usize, ReserveFail> {
        let h = self.hdr(o.lane);
        if o.free == 0 {
            return Err(ReserveFail::NoSlot);
        }
        let calls = if r.counts_call {
            let calls = h[L_CALLS].load(RELAXED);
            if calls >= h[L_CALLS_LIMIT].load(ACQ) {
                return Err(ReserveFail::NoCalls);
            }
            calls
        } else {
            0
        };
        let amount = r.amount;
        let flush_req = h[L_FLUSH_REQ].load(RELAXED) != 0;
        if flush_req && o.local > 0 {
            // A revoke wants credits back: return ours to `avail` first.
            if !self.flush(o, o.local, step) {
                return Err(ReserveFail::Stopped);
            }
        }
        if o.local < amount {
            // While a revoke is pending, take only what this call needs.
            let factor = if flush_req { 1 } else { PULL_FACTOR };
            self.pull(o, amount, factor, step)?;
        }
        let slot = o.free.trailing_zeros() as usize;
        let sl = self.slot_words(o.lane, slot);
        sl[S_RESERVED].store(amount, RELAXED);
        sl[S_LOCAL_BEFORE].store(o.local, RELAXED);
        sl[S_TOKENS].store(r.tokens, RELAXED);
        sl[S_META].store(r.meta, RELAXED);
        sl[S_NAMES].store(r.names, RELAXED);
        sl[S_OUTCOMES].store(0, RELAXED);
        let generation = holder::generation(o.claim);
        if r.counts_call {
            sl[S_CALLS_BEFORE].store(calls, RELAXED);
            sl[S_STATE].store(state(RESERVING_CALL, generation), REL);
            if !step(13) {
                return Err(ReserveFail::Stopped);
            }
            h[L_CALLS].store(calls + 1, REL);
        } else {
            sl[S_STATE].store(state(RESERVING, generation), REL);
        }
        if !step(11) {
            return Err(ReserveFail::Stopped);
        }
        o.local -= amount;
        h[L_LOCAL].store(o.local, REL);
        if !step(12) {
            return Err(ReserveFail::Stopped);
        }
        sl[S_STATE].store(state(HELD, generation), REL);
        o.free &= !(1 << slot);
        Ok(slot)
    }

    /// PULL a batch into local credits: at least what the call lacks, up to
    /// `PULL_FACTOR` times the call. Steps: transfer intent (amount, local before, tag
    /// `t`); CAS `avail` (credits -= batch, otag := t); `local += batch`; clear intent.
    fn pull(
        &self,
        o: &mut Owner,
        amount: u64,
        factor: u64,
        step: &mut impl FnMut(u32) -> bool,
    ) -> Result<(), ReserveFail> {
        let h = self.hdr(o.lane);
        let need = amount - o.local;
        let avail = &h[L_AVAIL];
        let t = o.otag.wrapping_add(1);
        let mut cur = avail.load(RELAXED);
        loop {
            let have = credits(cur);
            if have < need {
                return Err(ReserveFail::Dry {
                    have: have + o.local,
                });
            }
            let batch = have.min(amount.saturating_mul(factor)).max(need);
            self.xfer_intent(o, XFER_PULL, t, batch);
            if !step(1) {
                return Err(ReserveFail::Stopped);
            }
            match debit(avail, cur, batch, t) {
                Ok(()) => {
                    o.otag = t;
                    if !step(2) {
                        return Err(ReserveFail::Stopped);
                    }
                    o.local += batch;
                    h[L_LOCAL].store(o.local, REL);
                    if !step(3) {
                        return Err(ReserveFail::Stopped);
                    }
                    h[L_XFER_STATE].store(0, REL);
                    return Ok(());
                }
                // The sidecar moved `avail` first; nothing happened: drop the intent.
                Err(now) => {
                    h[L_XFER_STATE].store(0, REL);
                    cur = now;
                }
            }
        }
    }

    /// FLUSH `x` local credits back to `avail` (for a revoke, or when a thread leaves the
    /// lane). Steps: transfer intent; `local -= x`; CAS `avail` (credits += x, otag := t);
    /// clear intent. Returns `false` only when `step` stopped it.
    pub(crate) fn flush(&self, o: &mut Owner, x: u64, step: &mut impl FnMut(u32) -> bool) -> bool {
        let h = self.hdr(o.lane);
        let x = x.min(o.local);
        if x == 0 {
            return true;
        }
        let t = o.otag.wrapping_add(1);
        self.xfer_intent(o, XFER_FLUSH, t, x);
        if !step(21) {
            return false;
        }
        o.local -= x;
        h[L_LOCAL].store(o.local, REL);
        if !step(22) {
            return false;
        }
        credit_owner(&h[L_AVAIL], x, t);
        o.otag = t;
        if !step(23) {
            return false;
        }
        h[L_XFER_STATE].store(0, REL);
        true
    }

    fn xfer_intent(&self, o: &Owner, dir: u64, t: u16, amount: u64) {
        let lane = o.lane;
        self.lw(lane, L_XFER_AMOUNT).store(amount, RELAXED);
        self.lw(lane, L_XFER_LOCAL_BEFORE).store(o.local, RELAXED);
        self.lw(lane, L_XFER_STATE)
            .store(XFER_ACTIVE | dir | (u64::from(t) << 16), REL);
    }

    /// Credits a half-done transfer has taken out of both `avail` and `local` (for the
    /// audit), deciding each step from its word exactly as recovery does.
    pub(crate) fn xfer_in_flight(&self, lane: usize) -> u64 {
        let st = self.lw(lane, L_XFER_STATE).load(ACQ);
        if st & XFER_ACTIVE == 0 {
            return 0;
        }
        let t = (st >> 16) as u16;
        let x = self.lw(lane, L_XFER_AMOUNT).load(RELAXED);
        let before = self.lw(lane, L_XFER_LOCAL_BEFORE).load(RELAXED);
        let local = self.lw(lane, L_LOCAL).load(ACQ);
        let avail_done = otag(self.lw(lane, L_AVAIL).load(ACQ)) == t;
        let local_done = local != before;
        match (st & 0xFF00, avail_done, local_done) {
            (XFER_PULL, true, false) => x,
            (XFER_FLUSH, false, true) => x,
            _ => 0,
        }
    }

    /// Finishes (or drops) a transfer a dead owner left half done. The caller owns the
    /// lane now. Safe to re-run.
    fn recover_xfer(&self, o: &mut Owner) {
        let lane = o.lane;
        let st = self.lw(lane, L_XFER_STATE).load(ACQ);
        if st & XFER_ACTIVE == 0 {
            return;
        }
        let t = (st >> 16) as u16;
        let x = self.lw(lane, L_XFER_AMOUNT).load(RELAXED);
        let before = self.lw(lane, L_XFER_LOCAL_BEFORE).load(RELAXED);
        let local = self.lw(lane, L_LOCAL);
        let avail = self.lw(lane, L_AVAIL);
        let avail_done = otag(avail.load(ACQ)) == t;
        match st & 0xFF00 {
            XFER_PULL if avail_done && local.load(ACQ) == before => {
                local.store(before.wrapping_add(x), REL);
            }
            XFER_FLUSH if !avail_done && local.load(ACQ) != before => {
                credit_owner(avail, x, t);
            }
            _ => {}
        }
        self.lw(lane, L_XFER_STATE).store(0, REL);
        o.otag = otag(avail.load(ACQ));
        o.local = local.load(ACQ);
    }

    /// COMMIT or CANCEL from a thread that does not own the lane: one CAS on the slot
    /// state (`HELD` to `COMMITTED` / `CANCELLED`, with the actual amount written first),
    /// then flag the slot in the lane's pending mask so the owner settles it. Returns
    /// `false` if the slot does not hold this reservation any more (reclaimed: its state
    /// is not `HELD` under the claim generation `generation` it was made in).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn finish_remote(
        &self,
        lane: usize,
        slot: usize,
        generation: u16,
        actual: u64,
        tokens: u64,
        outcomes: u64,
        cancel: bool,
    ) -> bool {
        let kind = if cancel { CANCELLED } else { COMMITTED };
        let st = self.sw(lane, slot, S_STATE);
        // Take the slot first, write second: a stale reservation (its lane reclaimed and
        // claimed again, the slot reused) must not write into a slot it no longer holds.
        if st
            .compare_exchange(
                state(HELD, generation),
                state(FINISHING, generation),
                ACQ_REL,
                RELAXED,
            )
            .is_err()
        {
            return false;
        }
        self.sw(lane, slot, S_ACTUAL).store(actual, RELAXED);
        if !cancel {
            self.sw(lane, slot, S_TOKENS).store(tokens, RELAXED);
            self.sw(lane, slot, S_OUTCOMES).store(outcomes, RELAXED);
        }
        st.store(state(kind, generation), REL);
        self.lw(lane, L_PENDING).fetch_or(1 << slot, REL);
        true
    }

    /// Settles every slot other threads committed or cancelled (owner only).
    #[inline(always)]
    pub(crate) fn settle_pending(&self, o: &mut Owner) {
        if self.hdr(o.lane)[L_PENDING].load(RELAXED) != 0 {
            self.settle_pending_now(o);
        }
    }

    /// `settle_pending` once the mask has a bit set (rare on the hot path).
    #[cold]
    #[inline(never)]
    fn settle_pending_now(&self, o: &mut Owner) {
        let pending = &self.hdr(o.lane)[L_PENDING];
        let mut mask = pending.swap(0, ACQ);
        while mask != 0 {
            let slot = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            if slot >= self.l.slots {
                continue; // a scribbled mask: ignore bits past the slots
            }
            let sl = self.slot_words(o.lane, slot);
            let st = sl[S_STATE].load(ACQ);
            if tag(st) != holder::generation(o.claim) {
                continue; // not a reservation of this claim (a scribbled mask)
            }
            let cancel = match kind(st) {
                COMMITTED => false,
                CANCELLED => true,
                _ => continue,
            };
            let actual = sl[S_ACTUAL].load(RELAXED);
            let actual = if cancel { 0 } else { actual };
            let _ = self.settle(o, slot, actual, cancel, &mut |_| true);
        }
    }

    /// SETTLE a held, committed or cancelled slot, run by the owner (or by the sidecar
    /// acting as owner of a dead lane). Steps:
    /// 1. record the actual amount and the before-values of `consumed`, `overrun`, the
    ///    ring head, `lost` and `local` in the slot, then its state `SETTLING` (the intent);
    /// 2. `consumed` += paid (owner-only word, plain store);
    /// 3. `overrun` += the part of `actual` past the reservation;
    /// 4. push a usage record to the ring (or count it lost if the ring is full);
    /// 5. `local` += refund;
    /// 6. state `EMPTY`, slot free.
    ///
    /// Returns `false` only when `step` stopped it (a modelled crash).
    #[inline]
    pub(crate) fn settle(
        &self,
        o: &mut Owner,
        slot: usize,
        actual: u64,
        cancel: bool,
        step: &mut impl FnMut(u32) -> bool,
    ) -> bool {
        let h = self.hdr(o.lane);
        let sl = self.slot_words(o.lane, slot);
        if cancel {
            let m = sl[S_META].load(RELAXED);
            sl[S_META].store(m | META_CANCELLED, RELAXED);
        }
        sl[S_ACTUAL].store(actual, RELAXED);
        sl[S_CONS_BEFORE].store(h[L_CONSUMED].load(RELAXED), RELAXED);
        sl[S_OVER_BEFORE].store(h[L_OVERRUN].load(RELAXED), RELAXED);
        sl[S_HEAD_BEFORE].store(h[L_RING_HEAD].load(RELAXED), RELAXED);
        sl[S_LOST_BEFORE].store(h[L_LOST].load(RELAXED), RELAXED);
        sl[S_LOCAL_BEFORE].store(o.local, RELAXED);
        sl[S_STATE].store(state(SETTLING, 0), REL);
        if !step(31) {
            return false;
        }
        if !self.finish_settling(o, slot, step) {
            return false;
        }
        o.free |= 1 << slot;
        true
    }

    /// COMMIT on the owner thread, the common case: the actual cost within the reservation
    /// and room in the ring. The usage record is the settle's intent, so the slot gets one
    /// before-value instead of five and nothing is read back. Steps:
    /// 1. write the usage record at ring position `head` (not yet published) with the lane's
    ///    `consumed` before-value in `R_CONS_BEFORE`, and `local` (before) into the slot;
    ///    state := `SETTLING_REC(head)` (the intent: from here the commit is decided);
    /// 2. `consumed := before + actual`;
    /// 3. `head := head + 1` (publishes the record);
    /// 4. `local := before + (reserved - actual)`;
    /// 5. state := `EMPTY`, slot free.
    ///
    /// `None` (nothing written) when it does not apply: an overrun, or a full ring (the
    /// caller settles with [`View::settle`], which counts the record lost). `Some(false)`
    /// only when `step` stopped it (a modelled crash).
    #[inline]
    pub(crate) fn commit_owned(
        &self,
        o: &mut Owner,
        slot: usize,
        actual: u64,
        tokens: u64,
        outcomes: u64,
        step: &mut impl FnMut(u32) -> bool,
    ) -> Option<bool> {
        let h = self.hdr(o.lane);
        let sl = self.slot_words(o.lane, slot);
        let reserved = sl[S_RESERVED].load(RELAXED);
        let head = h[L_RING_HEAD].load(RELAXED);
        let tail = h[L_RING_TAIL].load(ACQ);
        if actual > reserved || head.wrapping_sub(tail) >= self.l.ring as u64 {
            return None;
        }
        let consumed = h[L_CONSUMED].load(RELAXED);
        let rec = self.record_words(o.lane, head);
        rec[R_RESERVED].store(reserved, RELAXED);
        rec[R_ACTUAL].store(actual, RELAXED);
        rec[R_TOKENS].store(tokens, RELAXED);
        rec[R_META].store(sl[S_META].load(RELAXED), RELAXED);
        rec[R_SEQ].store(head.wrapping_add(1), RELAXED);
        rec[R_NAMES].store(sl[S_NAMES].load(RELAXED), RELAXED);
        rec[R_OUTCOMES].store(outcomes, RELAXED);
        rec[R_CONS_BEFORE].store(consumed, RELAXED);
        sl[S_LOCAL_BEFORE].store(o.local, RELAXED);
        sl[S_STATE].store(rec_state(head), REL);
        if !step(41) {
            return Some(false);
        }
        h[L_CONSUMED].store(consumed.wrapping_add(actual), REL);
        if !step(42) {
            return Some(false);
        }
        h[L_RING_HEAD].store(head.wrapping_add(1), REL);
        if !step(43) {
            return Some(false);
        }
        o.local += reserved - actual;
        h[L_LOCAL].store(o.local, REL);
        if !step(44) {
            return Some(false);
        }
        sl[S_STATE].store(state(EMPTY, 0), REL);
        o.free |= 1 << slot;
        Some(true)
    }

    /// Where a `SETTLING_REC` slot's record is, and whether the owner published it: the
    /// owner is sequential and only this settle moves the head until the slot is empty, so
    /// the head is the packed position or one past it. `None` for anything else (a
    /// scribbled region).
    fn rec_at(&self, lane: usize, st: u64) -> Option<(u64, bool)> {
        let at = (st >> REC_HEAD_SHIFT) as u32;
        let head = self.lw(lane, L_RING_HEAD).load(ACQ);
        if head as u32 == at {
            Some((head, false))
        } else if head.wrapping_sub(1) as u32 == at {
            Some((head.wrapping_sub(1), true))
        } else {
            None
        }
    }

    /// What a `SETTLING_REC` slot still has to do, each effect decided by its own word:
    /// `(paid not yet in consumed, refund not yet in local, record not yet published, the
    /// record's ring position)`; an amount of 0 means done or nothing to do.
    fn rec_pending(&self, lane: usize, slot: usize, st: u64) -> Option<(u64, u64, bool, u64)> {
        let (at, published) = self.rec_at(lane, st)?;
        let rec = self.record_words(lane, at);
        let reserved = self.sw(lane, slot, S_RESERVED).load(RELAXED);
        // `commit_owned` writes only commits within the reservation; `min` keeps a
        // scribbled record from underflowing.
        let paid = rec[R_ACTUAL].load(RELAXED).min(reserved);
        let refund = reserved - paid;
        let h = self.hdr(lane);
        let paid_left = if h[L_CONSUMED].load(ACQ) == rec[R_CONS_BEFORE].load(RELAXED) {
            paid
        } else {
            0
        };
        let local_before = self.sw(lane, slot, S_LOCAL_BEFORE).load(RELAXED);
        let refund_left = if h[L_LOCAL].load(ACQ) == local_before {
            refund
        } else {
            0
        };
        Some((paid_left, refund_left, !published, at))
    }

    /// Steps 2-5 of [`View::commit_owned`] for a slot a dead owner left in `SETTLING_REC`,
    /// each skipped if already done. Safe to re-run.
    fn finish_settling_rec(
        &self,
        o: &mut Owner,
        slot: usize,
        st: u64,
        step: &mut impl FnMut(u32) -> bool,
    ) -> bool {
        let h = self.hdr(o.lane);
        let Some((paid, refund, unpublished, at)) = self.rec_pending(o.lane, slot, st) else {
            // Not a state `commit_owned` writes (a scribbled region): nothing can be
            // decided; the audit reports the credits it held as missing.
            self.sw(o.lane, slot, S_STATE).store(state(EMPTY, 0), REL);
            return true;
        };
        if paid > 0 {
            let c = &h[L_CONSUMED];
            c.store(c.load(RELAXED).wrapping_add(paid), REL);
        }
        if !step(42) {
            return false;
        }
        if unpublished {
            h[L_RING_HEAD].store(at.wrapping_add(1), REL);
        }
        if !step(43) {
            return false;
        }
        if refund > 0 {
            let l = &h[L_LOCAL];
            l.store(l.load(RELAXED).wrapping_add(refund), REL);
        }
        o.local = h[L_LOCAL].load(RELAXED);
        if !step(44) {
            return false;
        }
        self.sw(o.lane, slot, S_STATE).store(state(EMPTY, 0), REL);
        true
    }

    /// Steps 2-6 of settle, each skipped if already done (decided by its own word): the
    /// same code finishes a settle a dead owner left half done.
    #[inline]
    fn finish_settling(
        &self,
        o: &mut Owner,
        slot: usize,
        step: &mut impl FnMut(u32) -> bool,
    ) -> bool {
        let h = self.hdr(o.lane);
        let sl = self.slot_words(o.lane, slot);
        let lane = o.lane;
        let reserved = sl[S_RESERVED].load(RELAXED);
        let actual = sl[S_ACTUAL].load(RELAXED);
        let meta = sl[S_META].load(RELAXED);
        let paid = actual.min(reserved);
        let over = actual - paid;
        let refund = reserved - paid;
        let cons_before = sl[S_CONS_BEFORE].load(RELAXED);
        let consumed = &h[L_CONSUMED];
        if paid > 0 && consumed.load(RELAXED) == cons_before {
            consumed.store(cons_before.wrapping_add(paid), REL);
        }
        if !step(32) {
            return false;
        }
        let over_before = sl[S_OVER_BEFORE].load(RELAXED);
        let overrun = &h[L_OVERRUN];
        if over > 0 && overrun.load(RELAXED) == over_before {
            overrun.store(over_before.wrapping_add(over), REL);
        }
        if !step(33) {
            return false;
        }
        if meta & META_CANCELLED == 0 {
            let head_before = sl[S_HEAD_BEFORE].load(RELAXED);
            let lost_before = sl[S_LOST_BEFORE].load(RELAXED);
            if h[L_RING_HEAD].load(RELAXED) == head_before && h[L_LOST].load(RELAXED) == lost_before
            {
                let rec = [
                    reserved,
                    actual,
                    sl[S_TOKENS].load(RELAXED),
                    meta,
                    head_before.wrapping_add(1),
                    sl[S_NAMES].load(RELAXED),
                    sl[S_OUTCOMES].load(RELAXED),
                ];
                self.push_record(lane, head_before, &rec);
            }
        }
        if !step(34) {
            return false;
        }
        let local_before = sl[S_LOCAL_BEFORE].load(RELAXED);
        let local = &h[L_LOCAL];
        if refund > 0 && local.load(RELAXED) == local_before {
            local.store(local_before.wrapping_add(refund), REL);
        }
        o.local = local.load(RELAXED);
        if !step(35) {
            return false;
        }
        sl[S_STATE].store(state(EMPTY, 0), REL);
        true
    }

    /// Pushes one usage record (owner, or the sidecar for a dead lane): the record words
    /// (`R_RESERVED ..= R_OUTCOMES`, the sequence `head + 1` among them), then the head with
    /// Release. A full ring counts the record as lost; its amounts are already in
    /// `consumed` / `overrun`.
    #[inline]
    fn push_record(&self, lane: usize, head: u64, words: &[u64; R_OUTCOMES + 1]) {
        let h = self.hdr(lane);
        let tail = h[L_RING_TAIL].load(ACQ);
        if head.wrapping_sub(tail) >= self.l.ring as u64 {
            let lost = &h[L_LOST];
            lost.store(lost.load(RELAXED).wrapping_add(1), REL);
            return;
        }
        let b = self.l.record(lane, head);
        // One bounds check for the record, none per field.
        let rec: &[AtomicU64; REC_WORDS] = self.w[b..b + REC_WORDS]
            .try_into()
            .expect("record inside the validated layout");
        for (w, v) in rec.iter().zip(words) {
            w.store(*v, RELAXED);
        }
        h[L_RING_HEAD].store(head.wrapping_add(1), REL);
    }

    /// How many credits slot `slot` holds right now, deciding half-done operations from
    /// their words exactly as reclaim does. Used by the conservation audit.
    pub(crate) fn slot_hold(&self, lane: usize, slot: usize) -> u64 {
        let s = |f| self.sw(lane, slot, f).load(ACQ);
        let st = s(S_STATE);
        let reserved = s(S_RESERVED);
        let local = self.lw(lane, L_LOCAL).load(ACQ);
        match kind(st) {
            RESERVING | RESERVING_CALL if reserved > 0 && local != s(S_LOCAL_BEFORE) => reserved,
            HELD | FINISHING | COMMITTED | CANCELLED => reserved,
            SETTLING => {
                let actual = s(S_ACTUAL);
                let paid = actual.min(reserved);
                let refund = reserved - paid;
                let mut h = 0;
                if paid > 0 && self.lw(lane, L_CONSUMED).load(ACQ) == s(S_CONS_BEFORE) {
                    h += paid;
                }
                if refund > 0 && local == s(S_LOCAL_BEFORE) {
                    h += refund;
                }
                h
            }
            SETTLING_REC => self
                .rec_pending(lane, slot, st)
                .map_or(0, |(paid, refund, _, _)| paid + refund),
            _ => 0,
        }
    }

    /// Reclaim of a lane whose owner is dead (the caller owns the lane now): finishes a
    /// half-done transfer, decides a half-done take from `local`, finishes a half-done
    /// settle, then settles every held or committed slot (held ones as cancelled: the
    /// call's outcome is unknown, so its credits go back). Safe to re-run after a crash
    /// of the caller. Returns the slots settled, or `None` if `step` stopped it.
    pub(crate) fn recover_slots(
        &self,
        o: &mut Owner,
        step: &mut impl FnMut(u32) -> bool,
    ) -> Option<u32> {
        self.recover_xfer(o);
        let mut settled = 0;
        // The (at most one) slot operation in flight first.
        for slot in 0..self.l.slots {
            let st = self.sw(o.lane, slot, S_STATE).load(ACQ);
            match kind(st) {
                RESERVING | RESERVING_CALL => {
                    let before = self.sw(o.lane, slot, S_LOCAL_BEFORE).load(RELAXED);
                    let taken = self.lw(o.lane, L_LOCAL).load(ACQ) != before;
                    if !taken && kind(st) == RESERVING_CALL {
                        // The call was counted (or not yet) but never made: uncount it.
                        let calls = self.sw(o.lane, slot, S_CALLS_BEFORE).load(RELAXED);
                        self.lw(o.lane, L_CALLS).store(calls, REL);
                    }
                    let next = if taken { HELD } else { EMPTY };
                    self.sw(o.lane, slot, S_STATE)
                        .store(state(next, tag(st)), REL);
                }
                SETTLING => {
                    if !self.finish_settling(o, slot, step) {
                        return None;
                    }
                    settled += 1;
                }
                SETTLING_REC => {
                    if !self.finish_settling_rec(o, slot, st, step) {
                        return None;
                    }
                    settled += 1;
                }
                _ => {}
            }
        }
        o.local = self.lw(o.lane, L_LOCAL).load(ACQ);
        for slot in 0..self.l.slots {
            let st = self.sw(o.lane, slot, S_STATE).load(ACQ);
            let (actual, cancel) = match kind(st) {
                // A task's completion whose mark names this very reservation: the task
                // was completed, so its work-unit record is written (see `tasks.rs`).
                HELD if self.is_marked_work_unit(o.lane, slot, tag(st)) => (0, false),
                // FINISHING: the committing thread died with the process mid-way.
                HELD | FINISHING | CANCELLED => (0, true),
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

impl View<'_> {
    /// Whether held slot `slot` of `lane` (made under claim generation `generation`) is a
    /// work-unit reservation that won its task's completion mark.
    fn is_marked_work_unit(&self, lane: usize, slot: usize, generation: u16) -> bool {
        let meta = self.sw(lane, slot, S_META).load(RELAXED);
        if meta & META_WORK_UNIT == 0 {
            return false;
        }
        let (_, _, task) = unpack_names(self.sw(lane, slot, S_NAMES).load(RELAXED));
        let Some(t) = task.filter(|t| usize::from(t.slot) < self.l.tasks) else {
            return false;
        };
        let entry = self.l.task(usize::from(t.slot));
        self.w[entry + K_STATE].load(ACQ) == task_word(0, t.generation, TASK_OPEN)
            && self.w[entry + K_DONE].load(ACQ) == done_mark(lane, generation, slot)
    }
}

/// The pull's CAS: take `batch` credits and stamp the owner tag. `Err` with the current
/// word if it changed since `cur` was read (or is short).
#[cfg(not(tollgate_broken))]
#[inline]
fn debit(avail: &AtomicU64, cur: u64, batch: u64, t: u16) -> Result<(), u64> {
    if credits(cur) < batch {
        return Err(avail.load(RELAXED));
    }
    avail
        .compare_exchange(cur, with_otag(cur - batch, t), ACQ_REL, RELAXED)
        .map(|_| ())
}

/// The deliberately broken variant (`--cfg tollgate_broken`): a split read-modify-write.
/// A top-up landing between the load and the store is lost; the loom model
/// `loom_reserve_races_top_up` must catch it.
#[cfg(tollgate_broken)]
#[inline]
fn debit(avail: &AtomicU64, _cur: u64, batch: u64, t: u16) -> Result<(), u64> {
    let cur = avail.load(ACQ);
    if credits(cur) < batch {
        return Err(cur);
    }
    avail.store(with_otag(cur - batch, t), REL);
    Ok(())
}

/// The flush's CAS: give `x` back and stamp the owner tag (the sidecar adds and takes
/// concurrently, so it must be a read-modify-write).
fn credit_owner(avail: &AtomicU64, x: u64, t: u16) {
    let mut cur = avail.load(RELAXED);
    loop {
        // Cannot pass CREDIT_MASK: a flush only returns what this lane pulled, and the
        // sidecar keeps a lane's outstanding credits below MAX_LANE_CREDITS.
        let c = credits(cur).saturating_add(x).min(CREDIT_MASK);
        let new = with_otag((cur & !CREDIT_MASK) | c, t);
        match avail.compare_exchange_weak(cur, new, ACQ_REL, RELAXED) {
            Ok(_) => return,
            Err(now) => cur = now,
        }
    }
}
