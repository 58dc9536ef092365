//! RECLAIM: the sidecar takes over a dead process's lane, finishes or undoes whatever the
//! owner left half done (deciding from tags and before-values), settles its reservations
//! (held ones as cancelled), takes its local and available credits back into the pools
//! and frees the lane.
//! Each step is idempotent or decided by state, so a sidecar that dies mid-reclaim
//! resumes it and every credit comes back exactly once.

use crate::carve::Revoked;
use crate::error::SidecarError;
use crate::holder::{self, HolderId};
use crate::lane::View;
use crate::layout::*;
use crate::sync::{ACQ, ACQ_REL, REL, RELAXED};

/// What reclaiming one lane did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReclaimReport {
    /// The lane.
    pub lane: usize,
    /// The holder (agent process) that owned it.
    pub holder: Option<HolderId>,
    /// Reservations settled (held ones as cancelled, committed ones charged).
    pub settled: u32,
    /// Credits (micro) that went back into the pools.
    pub returned: u64,
}

impl View<'_> {
    /// Reclaims `lane` if its owner is dead according to `is_dead` (or if a previous
    /// reclaim of it was interrupted). Refuses a live owner.
    pub(crate) fn reclaim_lane(
        &self,
        lane: usize,
        is_dead: &dyn Fn(HolderId) -> bool,
        step: &mut impl FnMut(u32) -> bool,
    ) -> Result<ReclaimReport, SidecarError> {
        let claim = self.lw(lane, L_CLAIM);
        let c = claim.load(ACQ);
        let process = holder::holder_of(c);
        let Some(h) = process else {
            return Err(SidecarError::LaneNotInUse(lane));
        };
        if holder::is_owned(c) {
            if !is_dead(h) {
                return Err(SidecarError::OwnerAlive(lane));
            }
            // Owned -> reclaiming: from here on the sidecar is the lane's only writer.
            let taken = claim.compare_exchange(c, holder::reclaiming(c), ACQ_REL, RELAXED);
            if taken.is_err() {
                return Err(SidecarError::OwnerAlive(lane));
            }
        }
        if !step(100) {
            return Ok(ReclaimReport {
                lane,
                holder: process,
                settled: 0,
                returned: 0,
            });
        }
        let mut o = self.owner_for(lane);
        let Some(settled) = self.recover_slots(&mut o, step) else {
            return Ok(ReclaimReport {
                lane,
                holder: process,
                settled: 0,
                returned: 0,
            });
        };
        if !step(101) {
            return Ok(ReclaimReport {
                lane,
                holder: process,
                settled,
                returned: 0,
            });
        }
        let mut returned = 0;
        if self.lw(lane, L_POOLS).load(ACQ) != 0 {
            returned = self.reclaim_local(lane, step)?;
            if !step(104) {
                return Ok(ReclaimReport {
                    lane,
                    holder: process,
                    settled,
                    returned,
                });
            }
            returned += self.revoke(lane, u64::MAX, Revoked::Reclaim, step)?;
            if !step(102) {
                return Ok(ReclaimReport {
                    lane,
                    holder: process,
                    settled,
                    returned,
                });
            }
            self.harvest(lane, step)?;
        }
        // A task lane's unused calls go back to its task, its calls made are booked.
        if let Some(t) =
            crate::codes::LaneKey::decode(self.lw(lane, L_KEY).load(ACQ)).and_then(|k| k.task)
        {
            self.reclaim_calls(lane, t, step)?;
        }
        if !step(103) {
            return Ok(ReclaimReport {
                lane,
                holder: process,
                settled,
                returned,
            });
        }
        self.lw(lane, L_KEY).store(0, REL);
        self.lw(lane, L_POOLS).store(0, REL);
        self.lw(lane, L_DENY).store(0, REL);
        self.lw(lane, L_DENY_UNTIL).store(0, REL);
        self.lw(lane, L_DEMAND).store(0, REL);
        self.lw(lane, L_DEMAND_SEEN).store(0, REL);
        // Free, keeping the generation: the next claim bumps it, so nothing made under
        // this claim (a slot state, an owner's memory of the claim) matches the next one.
        claim.store(holder::freed(c), REL);
        Ok(ReclaimReport {
            lane,
            holder: process,
            settled,
            returned,
        })
    }
}
