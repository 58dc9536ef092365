//! The conservation audit: reads every counter of the invariant and checks it.
//!
//! Per lane: `topped_up = avail + local + held + consumed + revoked + reclaimed`.
//! Per pool: `granted + overrun = available + carved + consumed + returned`, and
//! `carved` = the sum over the lanes carved from the pool of
//! `topped_up - revoked - reclaimed - harvested`.
//! Exact when no agent is mid-operation (all stopped, or dead and reclaimed); on a live
//! region a lane may be caught between two words and the audit can be off transiently.

use crate::lane::{View, credits};
use crate::layout::*;
use crate::sync::ACQ;

/// One lane's side of the equation (micro-credits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaneBalance {
    /// The lane.
    pub lane: usize,
    /// Ever topped up.
    pub topped_up: u64,
    /// In `avail` now.
    pub available: u64,
    /// The owner's local credits (pulled from `avail`, not yet reserved), plus any in a
    /// half-done transfer between the two.
    pub local: u64,
    /// Held by reservations (half-done ones decided by tag, as reclaim would).
    pub held: u64,
    /// Consumed and paid from the lane.
    pub consumed: u64,
    /// Consumed past reservations (charged to pools directly).
    pub overrun: u64,
    /// Taken back by revoke.
    pub revoked: u64,
    /// Taken back by reclaim.
    pub reclaimed: u64,
    /// Consumption already moved to the pools.
    pub harvested: u64,
    /// Pools the lane is carved from.
    pub pools: Vec<usize>,
}

impl LaneBalance {
    /// `topped_up == available + local + held + consumed + revoked + reclaimed`.
    pub fn balanced(&self) -> bool {
        Some(self.topped_up)
            == self
                .available
                .checked_add(self.local)
                .and_then(|v| v.checked_add(self.held))
                .and_then(|v| v.checked_add(self.consumed))
                .and_then(|v| v.checked_add(self.revoked))
                .and_then(|v| v.checked_add(self.reclaimed))
    }

    /// Credits this lane has outstanding against each of its pools.
    pub fn carved(&self) -> u64 {
        self.topped_up
            .wrapping_sub(self.revoked)
            .wrapping_sub(self.reclaimed)
            .wrapping_sub(self.harvested)
    }
}

/// One pool's side of the equation (micro-credits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolBalance {
    /// The pool.
    pub pool: usize,
    /// Leased into the pool.
    pub granted: u64,
    /// Not carved.
    pub available: u64,
    /// Carved into lanes.
    pub carved: u64,
    /// Consumed (paid plus overrun).
    pub consumed: u64,
    /// Given back to the authority.
    pub returned: u64,
    /// Overruns charged.
    pub overrun: u64,
    /// Came back from dead processes (part of the flows above, for reporting).
    pub reclaimed: u64,
    /// Sum of `carved()` over the lanes carved from this pool.
    pub carved_by_lanes: u64,
}

impl PoolBalance {
    /// `granted + overrun == available + carved + consumed + returned` and `carved`
    /// matches the lanes.
    pub fn balanced(&self) -> bool {
        self.granted.checked_add(self.overrun)
            == self
                .available
                .checked_add(self.carved)
                .and_then(|v| v.checked_add(self.consumed))
                .and_then(|v| v.checked_add(self.returned))
            && self.carved == self.carved_by_lanes
    }
}

/// One pool's own counters (micro-credits), without the lanes' side of the equation: what
/// the sidecar reads on every tick ([`crate::Region::pool_counters`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolCounters {
    /// Leased into the pool.
    pub granted: u64,
    /// Not carved.
    pub available: u64,
    /// Carved into lanes.
    pub carved: u64,
    /// Consumed (paid plus overrun).
    pub consumed: u64,
    /// Given back to the authority.
    pub returned: u64,
    /// Overruns charged.
    pub overrun: u64,
    /// Came back from dead processes.
    pub reclaimed: u64,
}

/// Every counter of the conservation equation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audit {
    /// Per pool.
    pub pools: Vec<PoolBalance>,
    /// Per lane that was ever topped up.
    pub lanes: Vec<LaneBalance>,
}

impl Audit {
    /// `Ok` if every pool and lane balances; otherwise the first that does not.
    pub fn check(&self) -> Result<(), String> {
        for l in &self.lanes {
            if !l.balanced() {
                return Err(format!("lane does not balance: {l:?}"));
            }
        }
        for p in &self.pools {
            if !p.balanced() {
                return Err(format!("pool does not balance: {p:?}"));
            }
        }
        Ok(())
    }
}

impl View<'_> {
    pub(crate) fn lane_balance(&self, lane: usize) -> LaneBalance {
        let g = |f| self.lw(lane, f).load(ACQ);
        let held = (0..self.l.slots).map(|s| self.slot_hold(lane, s)).sum();
        LaneBalance {
            lane,
            topped_up: g(L_TOPPED_UP),
            available: credits(g(L_AVAIL)),
            local: g(L_LOCAL).wrapping_add(self.xfer_in_flight(lane)),
            held,
            consumed: g(L_CONSUMED),
            overrun: g(L_OVERRUN),
            revoked: g(L_REVOKED),
            reclaimed: g(L_RECLAIMED),
            harvested: g(L_HARVEST_CONSUMED),
            pools: self.lane_pools(lane).unwrap_or_default(),
        }
    }

    pub(crate) fn audit(&self) -> Audit {
        let lanes: Vec<LaneBalance> = (0..self.l.lanes)
            .filter(|&l| self.lw(l, L_TOPPED_UP).load(ACQ) != 0)
            .map(|l| self.lane_balance(l))
            .collect();
        let pools = (0..self.l.pools)
            .map(|p| {
                let carved_by_lanes = lanes
                    .iter()
                    .filter(|l| l.pools.contains(&p))
                    .fold(0u64, |a, l| a.wrapping_add(l.carved()));
                self.pool_balance(p, carved_by_lanes)
            })
            .collect();
        Audit { pools, lanes }
    }

    /// Pool `p`'s own words: O(1), for the sidecar's every-tick reads.
    pub(crate) fn pool_counters(&self, p: usize) -> PoolCounters {
        let g = |f| self.pw(p, f).load(ACQ);
        PoolCounters {
            granted: g(P_GRANTED),
            available: g(P_AVAILABLE),
            carved: g(P_CARVED),
            consumed: g(P_CONSUMED),
            returned: g(P_RETURNED),
            overrun: g(P_OVERRUN),
            reclaimed: g(P_RECLAIMED),
        }
    }

    /// Pool `p`'s side of the equation, with the lanes' side computed from their header
    /// words only (no slot is read): one pass over the lanes.
    pub(crate) fn pool_balance_of(&self, p: usize) -> PoolBalance {
        let carved_by_lanes = (0..self.l.lanes)
            .filter(|&l| self.lw(l, L_TOPPED_UP).load(ACQ) != 0)
            .filter(|&l| self.lane_pools(l).is_ok_and(|ps| ps.contains(&p)))
            .fold(0u64, |a, l| {
                let g = |f| self.lw(l, f).load(ACQ);
                a.wrapping_add(
                    g(L_TOPPED_UP)
                        .wrapping_sub(g(L_REVOKED))
                        .wrapping_sub(g(L_RECLAIMED))
                        .wrapping_sub(g(L_HARVEST_CONSUMED)),
                )
            });
        self.pool_balance(p, carved_by_lanes)
    }

    fn pool_balance(&self, p: usize, carved_by_lanes: u64) -> PoolBalance {
        let c = self.pool_counters(p);
        PoolBalance {
            pool: p,
            granted: c.granted,
            available: c.available,
            carved: c.carved,
            consumed: c.consumed,
            returned: c.returned,
            overrun: c.overrun,
            reclaimed: c.reclaimed,
            carved_by_lanes,
        }
    }
}
