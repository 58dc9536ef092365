//! The usage rings: one single-producer single-consumer ring per lane, from the lane's
//! owner (producer) to the sidecar (consumer).
//!
//! The producer writes a record's words, then publishes the head with Release; the
//! consumer reads the head with Acquire, copies the records, then publishes the tail with
//! Release, which the producer reads with Acquire before reusing a record. A full ring
//! never blocks and never loses credits: the amounts are already in the lane's
//! `consumed` / `overrun` totals (which the sidecar harvests), and the lost per-call
//! detail is counted in the lane's `lost` word.

use tollgate_core::{Credits, Initiator, Tier};

use crate::codes::{LaneKey, TaskRef, unpack_names};
use crate::lane::{META_CANCELLED, META_NO_MODEL, META_WORK_UNIT, OUT_PRE_RATED, View};
use crate::layout::*;
use crate::sync::{ACQ, REL, RELAXED};

/// One committed call, as drained from a lane's ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageRecord {
    /// Lane it came from.
    pub lane: usize,
    /// Tenant index (see `Region::tenant_name`).
    pub tenant: u16,
    /// Tier of the call.
    pub tier: Tier,
    /// Who started it.
    pub initiator: Initiator,
    /// What was reserved.
    pub reserved: Credits,
    /// What the call cost.
    pub actual: Credits,
    /// Input tokens (saturated at `u32::MAX`).
    pub input_tokens: u64,
    /// Output tokens (saturated at `u32::MAX`).
    pub output_tokens: u64,
    /// The model's index in the price book that rated it, if rated by model.
    pub model_index: Option<u16>,
    /// Low 32 bits of the price-book version that rated it.
    pub book_version: u32,
    /// Position in the lane's ring (1-based, per lane): gaps mean lost records.
    pub seq: u64,
    /// The agent's name id (see `Region::name`; 0: unnamed).
    pub agent: u16,
    /// The feature's name id (0: none).
    pub feature: u16,
    /// The named task the call spent, if any (see `Region::task_id`).
    pub task: Option<TaskRef>,
    /// Outcomes the call reported (e.g. resolved tickets).
    pub outcomes: u32,
    /// The cost was stated in credits by the agent, not rated from usage.
    pub pre_rated: bool,
    /// The record completes its task (one Agentic Work Unit); it carries no usage.
    pub work_unit: bool,
}

/// What one drain of a lane found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DrainStats {
    /// Records copied out.
    pub records: u64,
    /// Records skipped because they were unreadable (torn or scribbled).
    pub skipped: u64,
    /// The lane's total of records lost to a full ring so far.
    pub lost_total: u64,
}

impl View<'_> {
    /// Copies out every record published in `lane`'s ring and frees their space.
    pub(crate) fn drain_ring(&self, lane: usize, out: &mut Vec<UsageRecord>) -> DrainStats {
        let (st, end) = self.peek_ring(lane, out);
        self.lw(lane, L_RING_TAIL).store(end, REL);
        st
    }

    /// Frees `lane`'s ring space up to ring position `upto` (a position a peek returned).
    /// Returns false, and frees nothing, when `upto` is not between the tail and the head
    /// (the release is stale or scribbled). Only the consumer (the sidecar) moves the tail.
    pub(crate) fn release_ring(&self, lane: usize, upto: u64) -> bool {
        let head = self.lw(lane, L_RING_HEAD).load(ACQ);
        let tail = self.lw(lane, L_RING_TAIL).load(RELAXED);
        let ahead = upto.wrapping_sub(tail);
        if ahead > head.wrapping_sub(tail) {
            return false;
        }
        if ahead != 0 {
            self.lw(lane, L_RING_TAIL).store(upto, REL);
        }
        true
    }

    /// Copies out every record published in `lane`'s ring WITHOUT freeing their space;
    /// returns what it found and the ring position just past them (give it to
    /// [`View::release_ring`] once the records are safe elsewhere).
    pub(crate) fn peek_ring(&self, lane: usize, out: &mut Vec<UsageRecord>) -> (DrainStats, u64) {
        let key = LaneKey::decode(self.lw(lane, L_KEY).load(ACQ));
        let head = self.lw(lane, L_RING_HEAD).load(ACQ);
        let mut tail = self.lw(lane, L_RING_TAIL).load(RELAXED);
        let mut st = DrainStats::default();
        let cap = self.l.ring as u64;
        if head.wrapping_sub(tail) > cap {
            // Only a scribbled head gets here: read at most one ring's worth.
            st.skipped += head.wrapping_sub(tail) - cap;
            tail = head.wrapping_sub(cap);
        }
        while tail != head {
            let r = self.l.record(lane, tail);
            let g = |f: usize| self.w[r + f].load(RELAXED);
            let seq = g(R_SEQ);
            let meta = g(R_META);
            let tokens = g(R_TOKENS);
            let (agent, feature, task) = unpack_names(g(R_NAMES));
            let outcomes = g(R_OUTCOMES);
            if seq != tail.wrapping_add(1) || meta & META_CANCELLED != 0 {
                st.skipped += 1;
            } else {
                let model = meta & 0xFFFF;
                out.push(UsageRecord {
                    lane,
                    tenant: key.map_or(u16::MAX, |k| k.tenant),
                    tier: key.map_or(Tier::Background, |k| k.tier),
                    initiator: key.map_or(Initiator::Agent, |k| k.initiator),
                    reserved: Credits(g(R_RESERVED)),
                    actual: Credits(g(R_ACTUAL)),
                    input_tokens: tokens & 0xFFFF_FFFF,
                    output_tokens: tokens >> 32,
                    model_index: (model != META_NO_MODEL).then_some(model as u16),
                    book_version: (meta >> 32) as u32,
                    seq,
                    agent,
                    feature,
                    task,
                    outcomes: outcomes as u32,
                    pre_rated: outcomes & OUT_PRE_RATED != 0,
                    work_unit: meta & META_WORK_UNIT != 0,
                });
                st.records += 1;
            }
            tail = tail.wrapping_add(1);
        }
        st.lost_total = self.lw(lane, L_LOST).load(ACQ);
        (st, tail)
    }
}
