//! Degraded mode: what the sidecar may release while the authority is unreachable.
//!
//! # The bound
//!
//! While the session is down the sidecar keeps carving lane allowances out of the leases it
//! already holds, and only until they expire. When a limit's local budget runs out it either
//! **fails closed** (the default: `emergency_allowance = 0`, lanes are no longer topped up and
//! agents are denied) or draws from a configured **emergency allowance** for that limit. So
//! during one outage, for every limit,
//!
//! ```text
//! spent while disconnected ≤ local budget at the moment of disconnection, spent only until its leases' expiry
//!                          + emergency_allowance
//!                          + per lane of the limit: the lane overrun allowance (--lane-overrun-allowance)
//! ```
//!
//! **Expiry.** A lease cannot be renewed while disconnected, so the sidecar ends it
//! [`crate::core::DISCONNECTED_EXPIRY_LEAD`] (100 ms) before its expiry: what it still has
//! is taken out of the pool, then out of the lanes' shared `avail` words, and every lane
//! carved from the pool is asked to flush (its agent hands back the credits it pulled into its
//! own local credits at its next call, taking only that call's amount). What the lanes could
//! not give at once is taken at every tick as it is flushed, until nothing of the lease is
//! left. So an agent that keeps calling has nothing of the lease by its expiry; one that was
//! quiet and calls after it is served that one call (the one that flushes) and denied from
//! the next tick on. That call, and reservations made before the expiry and committed after
//! it, are paid from the local budget at disconnection: they add nothing to the bound.
//!
//! **Overruns.** A call that costs more than it reserved is charged past the lane's
//! allowance. The sidecar reports per lane at most what it gave the lane plus the lane
//! overrun allowance (`--lane-overrun-allowance`, default 1 credit; see the crate docs), so
//! overruns add at most that per lane.
//!
//! The emergency allowance is drawn at most once per outage and never refilled until the
//! session is back *and* every batch that reported its use has been acknowledged: it is the
//! only way the fleet can spend past a cap without overruns, and by no more than that amount
//! per limit per sidecar. Everything spent is still recorded, signed and reported once the
//! authority is back.

/// Per-limit emergency budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Emergency {
    /// The configured allowance (micro-credits); 0 means fail closed.
    pub allowance: u64,
    /// Drawn during the current outage.
    pub drawn: u64,
}

impl Emergency {
    /// A budget of `allowance` micro-credits per limit per outage.
    pub fn new(allowance: u64) -> Self {
        Self {
            allowance,
            drawn: 0,
        }
    }

    /// Draws up to `want`; returns what may be released (0 once spent: fail closed).
    pub fn draw(&mut self, want: u64) -> u64 {
        let left = self.allowance.saturating_sub(self.drawn);
        let give = want.min(left);
        self.drawn += give;
        give
    }

    /// What is left for this outage.
    pub fn left(&self) -> u64 {
        self.allowance.saturating_sub(self.drawn)
    }

    /// Called once the session is back and all batches up to now are acknowledged.
    pub fn reconciled(&mut self) {
        self.drawn = 0;
    }
}

/// Connectivity to the authority as the sidecar's loop sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connectivity {
    /// Registered, session open.
    Connected,
    /// Never connected yet, or the session dropped at `since_ms` (sidecar clock).
    Disconnected {
        /// When the session was lost (milliseconds on the sidecar's monotonic clock).
        since_ms: u64,
    },
}

impl Connectivity {
    /// Whether the session is up.
    pub fn is_connected(&self) -> bool {
        matches!(self, Connectivity::Connected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_closed_by_default() {
        let mut e = Emergency::new(0);
        assert_eq!(e.draw(1_000), 0);
    }

    #[test]
    fn emergency_is_bounded_per_outage() {
        let mut e = Emergency::new(1_000);
        assert_eq!(e.draw(600), 600);
        assert_eq!(e.draw(600), 400);
        assert_eq!(e.draw(1), 0);
        assert_eq!(e.left(), 0);
        e.reconciled();
        assert_eq!(e.draw(2_000), 1_000);
    }
}
