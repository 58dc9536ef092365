//! The sidecar's side of the money: pools, carving lane allowances (top-up), taking them
//! back (revoke), and moving consumption from lanes to pools (harvest). Every update is
//! journaled (see [`crate::journal`]); the sidecar is the single writer of pool words.

use tollgate_core::Tier;

use crate::codes::{LaneKey, decode_limit, pack_lane_pools, unpack_lane_pools, unpack_pools};
use crate::error::SidecarError;
use crate::journal::Entry;
use crate::lane::{CREDIT_MASK, MAX_LANE_CREDITS, STAG_SHIFT, View, credits, stag};
use crate::layout::*;
use crate::sync::{ACQ, ACQ_REL, RELAXED};

/// Which lane counter a revoke books the credits under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Revoked {
    /// Taken back from a live lane (idle, or a lowered cap).
    Revoke,
    /// Recovered from a dead process.
    Reclaim,
}

impl View<'_> {
    #[inline]
    pub(crate) fn pw(&self, pool: usize, field: usize) -> &crate::sync::AtomicU64 {
        &self.w[self.l.pool(pool) + field]
    }

    fn pool_index(&self, p: usize) -> Result<usize, SidecarError> {
        if p < self.l.pools {
            Ok(p)
        } else {
            Err(SidecarError::Corrupt("pool index in a pool list"))
        }
    }

    /// The pools lane `lane` is carved from: fixed at its first top-up (`L_POOLS`), so a
    /// configuration change cannot mis-attribute credits already carved.
    pub(crate) fn lane_pools(&self, lane: usize) -> Result<Vec<usize>, SidecarError> {
        if self.lw(lane, L_POOLS).load(ACQ) == 0 {
            return Ok(Vec::new());
        }
        let mut w = [0u64; POOL_LIST_WORDS];
        for (i, x) in w.iter_mut().enumerate() {
            *x = self.lw(lane, L_POOLS + i).load(ACQ);
        }
        unpack_lane_pools(w).map(|p| self.pool_index(p)).collect()
    }

    /// Fixes the pools `lane` will be carved from (before its first top-up; not journaled:
    /// nothing is carved yet). The first word is stored last: a nonzero `L_POOLS` means the
    /// whole list is there.
    pub(crate) fn fix_lane_pools(&self, lane: usize, pools: &[usize]) -> Result<(), SidecarError> {
        for p in pools {
            self.pool_index(*p)?;
        }
        let w = pack_lane_pools(pools).ok_or_else(|| {
            SidecarError::Config(format!(
                "a lane is carved from at most {MAX_POOLS_PER_LANE} distinct pools"
            ))
        })?;
        for i in (0..POOL_LIST_WORDS).rev() {
            self.lw(lane, L_POOLS + i).store(w[i], crate::sync::REL);
        }
        Ok(())
    }

    /// The pools a lane of this key would be carved from, per the tenant's configuration.
    pub(crate) fn class_pools(&self, key: LaneKey) -> Result<u64, SidecarError> {
        let t = key.tenant as usize;
        if t >= self.l.tenants {
            return Err(SidecarError::Corrupt("tenant index in a lane key"));
        }
        let base = self.l.tenant(t);
        if self.w[base + T_STATE].load(ACQ) == 0 {
            return Err(SidecarError::Config(format!(
                "tenant {t} is not configured"
            )));
        }
        let w = self.w[base + T_CLASS0 + key.class()].load(ACQ);
        if w == 0 {
            return Err(SidecarError::Config(format!(
                "tenant {t} has no limits for tier {} ({})",
                key.tier, key.initiator
            )));
        }
        Ok(w)
    }

    /// Credits the lane holds or has handed out and not yet settled: topped-up minus
    /// everything that left it. Equals `avail + local + held` when the lane is balanced.
    pub(crate) fn lane_outstanding(&self, lane: usize) -> u64 {
        let l = |f| self.lw(lane, f).load(ACQ);
        l(L_TOPPED_UP)
            .saturating_sub(l(L_REVOKED))
            .saturating_sub(l(L_RECLAIMED))
            .saturating_sub(l(L_CONSUMED))
    }

    /// TOP-UP `amount` into a live lane, carved from every pool the lane is subject to,
    /// each kept at or above the lane tier's floor. On refusal, records the binding limit
    /// in the lane (what the agent reports when it denies).
    pub(crate) fn top_up(
        &self,
        lane: usize,
        amount: u64,
        step: &mut impl FnMut(u32) -> bool,
    ) -> Result<(), SidecarError> {
        if amount == 0 {
            return Ok(());
        }
        let claim = self.lw(lane, L_CLAIM).load(ACQ);
        let key = LaneKey::decode(self.lw(lane, L_KEY).load(ACQ));
        let Some(key) = key.filter(|_| crate::holder::is_owned(claim)) else {
            return Err(SidecarError::LaneNotInUse(lane));
        };
        if self.lw(lane, L_POOLS).load(ACQ) == 0 {
            let class: Vec<usize> = unpack_pools(self.class_pools(key)?).collect();
            self.fix_lane_pools(lane, &class)?;
        }
        let pools = self.lane_pools(lane)?;
        if self.lane_outstanding(lane).saturating_add(amount) > MAX_LANE_CREDITS {
            return Err(SidecarError::Overflow("lane allowance"));
        }
        let mut e = Entry::default();
        for &p in &pools {
            let avail = self.pw(p, P_AVAILABLE).load(ACQ);
            let floor = self.pw(p, P_FLOOR0 + tier_floor_index(key.tier)).load(ACQ);
            if avail < amount.saturating_add(floor) {
                let code = self.pw(p, P_LIMIT).load(ACQ);
                self.lw(lane, L_DENY).store(code, crate::sync::REL);
                return Err(SidecarError::Insufficient {
                    pool: p,
                    limit: decode_limit(code).unwrap_or(tollgate_core::LimitKind::HardCap),
                    needed: tollgate_core::Credits(amount),
                });
            }
            let carved = self.pw(p, P_CARVED).load(ACQ);
            e.stores
                .push((self.l.pool(p) + P_AVAILABLE, avail - amount));
            e.stores
                .push((self.l.pool(p) + P_CARVED, carved.wrapping_add(amount)));
        }
        let topped = self.lw(lane, L_TOPPED_UP).load(ACQ);
        e.stores
            .push((self.l.lane(lane) + L_TOPPED_UP, topped.wrapping_add(amount)));
        let avail = self.lw(lane, L_AVAIL);
        let new_stag = stag(avail.load(ACQ)).wrapping_add(1);
        e.rmw = Some((lane, new_stag));
        self.journal_begin(&e)?;
        if !step(1) {
            return Ok(());
        }
        // One fetch_add: the credits (they cannot carry into the tags: outstanding stays
        // below MAX_LANE_CREDITS) and +1 on the sidecar tag (wraps off the top).
        avail.fetch_add(amount | (1 << STAG_SHIFT), ACQ_REL);
        if !step(2) {
            return Ok(());
        }
        self.journal_finish(&e, step);
        self.lw(lane, L_DENY).store(0, crate::sync::REL);
        self.lw(lane, L_DENY_UNTIL).store(0, crate::sync::REL);
        Ok(())
    }

    /// REVOKE up to `max` credits from a lane's `avail` (one CAS that also stamps a new
    /// sidecar tag), back into every pool the lane is carved from. Returns what was taken.
    pub(crate) fn revoke(
        &self,
        lane: usize,
        max: u64,
        why: Revoked,
        step: &mut impl FnMut(u32) -> bool,
    ) -> Result<u64, SidecarError> {
        let pools = self.lane_pools(lane)?;
        let counter = match why {
            Revoked::Revoke => L_REVOKED,
            Revoked::Reclaim => L_RECLAIMED,
        };
        let avail = self.lw(lane, L_AVAIL);
        loop {
            let cur = avail.load(ACQ);
            let x = credits(cur).min(max);
            if x == 0 {
                return Ok(0);
            }
            let mut e = Entry::default();
            for &p in &pools {
                let a = self.pw(p, P_AVAILABLE).load(ACQ);
                let c = self.pw(p, P_CARVED).load(ACQ);
                e.stores
                    .push((self.l.pool(p) + P_AVAILABLE, a.wrapping_add(x)));
                e.stores
                    .push((self.l.pool(p) + P_CARVED, c.wrapping_sub(x)));
                if why == Revoked::Reclaim {
                    let r = self.pw(p, P_RECLAIMED).load(ACQ);
                    e.stores
                        .push((self.l.pool(p) + P_RECLAIMED, r.wrapping_add(x)));
                }
            }
            let before = self.lw(lane, counter).load(ACQ);
            e.stores
                .push((self.l.lane(lane) + counter, before.wrapping_add(x)));
            let new_stag = stag(cur).wrapping_add(1);
            e.rmw = Some((lane, new_stag));
            self.journal_begin(&e)?;
            if !step(1) {
                return Ok(x);
            }
            let new = ((cur - x) & !(0xFF << STAG_SHIFT)) | (u64::from(new_stag) << STAG_SHIFT);
            if avail.compare_exchange(cur, new, ACQ_REL, RELAXED).is_err() {
                // The agent moved `avail` first: nothing happened; try again.
                self.journal_abort();
                continue;
            }
            if !step(2) {
                return Ok(x);
            }
            self.journal_finish(&e, step);
            return Ok(x);
        }
    }

    /// RECLAIM-LOCAL: a dead owner's local credits go back into the pools (journaled
    /// absolute stores; the owner is dead, so the sidecar may write its words).
    pub(crate) fn reclaim_local(
        &self,
        lane: usize,
        step: &mut impl FnMut(u32) -> bool,
    ) -> Result<u64, SidecarError> {
        let x = self.lw(lane, L_LOCAL).load(ACQ);
        if x == 0 {
            return Ok(0);
        }
        let pools = self.lane_pools(lane)?;
        let mut e = Entry::default();
        for &p in &pools {
            let a = self.pw(p, P_AVAILABLE).load(ACQ);
            let c = self.pw(p, P_CARVED).load(ACQ);
            let r = self.pw(p, P_RECLAIMED).load(ACQ);
            e.stores
                .push((self.l.pool(p) + P_AVAILABLE, a.wrapping_add(x)));
            e.stores
                .push((self.l.pool(p) + P_CARVED, c.wrapping_sub(x)));
            e.stores
                .push((self.l.pool(p) + P_RECLAIMED, r.wrapping_add(x)));
        }
        let before = self.lw(lane, L_RECLAIMED).load(ACQ);
        e.stores
            .push((self.l.lane(lane) + L_RECLAIMED, before.wrapping_add(x)));
        e.stores.push((self.l.lane(lane) + L_LOCAL, 0));
        self.journal_begin(&e)?;
        if !step(41) {
            return Ok(x);
        }
        self.journal_finish(&e, step);
        Ok(x)
    }

    /// HARVEST: move what a lane consumed since the last harvest from the pools' carved
    /// credits to their consumed (and overrun) counters. Returns `(paid, overrun)` moved.
    pub(crate) fn harvest(
        &self,
        lane: usize,
        step: &mut impl FnMut(u32) -> bool,
    ) -> Result<(u64, u64), SidecarError> {
        let cons = self.lw(lane, L_CONSUMED).load(ACQ);
        let over = self.lw(lane, L_OVERRUN).load(ACQ);
        let hc = self.lw(lane, L_HARVEST_CONSUMED).load(ACQ);
        let ho = self.lw(lane, L_HARVEST_OVERRUN).load(ACQ);
        let dc = cons
            .checked_sub(hc)
            .ok_or(SidecarError::Corrupt("lane consumed went backwards"))?;
        let dov = over
            .checked_sub(ho)
            .ok_or(SidecarError::Corrupt("lane overrun went backwards"))?;
        if dc == 0 && dov == 0 {
            return Ok((0, 0));
        }
        // A scribbled region can hold any value: sums are checked, never assumed to fit.
        let moved = dc.checked_add(dov).ok_or(SidecarError::Corrupt(
            "lane consumed plus overrun overflows",
        ))?;
        let pools = self.lane_pools(lane)?;
        let mut e = Entry::default();
        for &p in &pools {
            let c = self.pw(p, P_CARVED).load(ACQ);
            let used = self.pw(p, P_CONSUMED).load(ACQ);
            let o = self.pw(p, P_OVERRUN).load(ACQ);
            let c = c
                .checked_sub(dc)
                .ok_or(SidecarError::Corrupt("lane consumed more than was carved"))?;
            e.stores.push((self.l.pool(p) + P_CARVED, c));
            e.stores
                .push((self.l.pool(p) + P_CONSUMED, used.wrapping_add(moved)));
            e.stores
                .push((self.l.pool(p) + P_OVERRUN, o.wrapping_add(dov)));
        }
        e.stores
            .push((self.l.lane(lane) + L_HARVEST_CONSUMED, cons));
        e.stores.push((self.l.lane(lane) + L_HARVEST_OVERRUN, over));
        self.journal_begin(&e)?;
        if !step(1) {
            return Ok((dc, dov));
        }
        self.journal_finish(&e, step);
        Ok((dc, dov))
    }

    /// GRANT: credits leased from the authority arrive in a pool.
    pub(crate) fn grant(&self, pool: usize, amount: u64) -> Result<(), SidecarError> {
        let g = self.pw(pool, P_GRANTED).load(ACQ);
        let a = self.pw(pool, P_AVAILABLE).load(ACQ);
        let e = Entry {
            rmw: None,
            stores: vec![
                (
                    self.l.pool(pool) + P_GRANTED,
                    g.checked_add(amount)
                        .ok_or(SidecarError::Overflow("pool granted"))?,
                ),
                (
                    self.l.pool(pool) + P_AVAILABLE,
                    a.checked_add(amount)
                        .ok_or(SidecarError::Overflow("pool available"))?,
                ),
            ],
        };
        self.journal_begin(&e)?;
        self.journal_finish(&e, &mut |_| true);
        Ok(())
    }

    /// RETURN: uncarved credits go back to the authority (lease returned or shrunk).
    /// Returns what was returned (at most what is available).
    pub(crate) fn give_back(&self, pool: usize, max: u64) -> Result<u64, SidecarError> {
        let a = self.pw(pool, P_AVAILABLE).load(ACQ);
        let r = self.pw(pool, P_RETURNED).load(ACQ);
        let x = a.min(max);
        let e = Entry {
            rmw: None,
            stores: vec![
                (self.l.pool(pool) + P_AVAILABLE, a - x),
                (self.l.pool(pool) + P_RETURNED, r.wrapping_add(x)),
            ],
        };
        self.journal_begin(&e)?;
        self.journal_finish(&e, &mut |_| true);
        Ok(x)
    }
}

fn tier_floor_index(t: Tier) -> usize {
    t.as_index()
}

const _: () = assert!(CREDIT_MASK == MAX_LANE_CREDITS);
