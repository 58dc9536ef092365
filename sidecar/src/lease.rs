//! The lease manager's decisions, as pure functions over plain numbers (micro-credits).
//!
//! The sidecar's loop reads the region and the session, asks these functions what to do, and
//! carries the answer out. Keeping the decisions here, without I/O or clocks, makes the
//! refill rule, the lane rule and the cap rule testable on their own.
//!
//! # The refill rule (pools, one per limit)
//!
//! A pool's *local budget* is what the sidecar holds for that limit: the pool's uncarved
//! credits plus every lane allowance carved from it. With `burn` the pool's recent burn
//! (micro-credits per second, [`crate::burn::BurnMeter`]):
//!
//! - `low_water = max(min_low_water, burn × refill_lead × 2)`: enough to keep serving for
//!   twice the time a refill may take to arrive;
//! - when `local + requested_in_flight < low_water`, the sidecar asks the authority for
//!   `target − local − in_flight`, with `target = clamp(max(2 × low_water, burn × lease_horizon),
//!   min_lease, max_local)`.
//!
//! So a pool is refilled *before* it runs dry whenever the authority answers within
//! `refill_lead`, and `max_local` bounds what a pod can strand if it dies.
//!
//! # The lane rule
//!
//! A lane's target allowance is `clamp(lane_burn × lane_horizon, min_allowance, max_allowance)`.
//! A lane below half its target is topped up to the target; every limit the lane is subject
//! to pays the same amount at once ([`carve`]), and a lane of a lower tier may not take a pool
//! below that tier's floor. A lane idle for `idle_after` gives its allowance back, and a lane
//! holding more than twice its target gives the excess back.
//!
//! # A lowered cap
//!
//! When the authority lowers what a limit may hold, the excess comes back at once: first from
//! the pool's uncarved credits, then from the lanes, largest allowance first ([`shrink`]).

use std::time::Duration;

/// Saturating `a × d` in micro-credits, with `a` per second.
fn per_sec_times(a: u64, d: Duration) -> u64 {
    let v = (a as u128).saturating_mul(d.as_millis()) / 1000;
    u64::try_from(v).unwrap_or(u64::MAX)
}

/// How a pool is refilled from authority leases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeasePolicy {
    /// The longest a refill may take to arrive (the session's round trip plus the authority).
    pub refill_lead: Duration,
    /// How much burn one lease request should cover.
    pub lease_horizon: Duration,
    /// Low-water mark when the burn is (near) zero.
    pub min_low_water: u64,
    /// Smallest request worth sending.
    pub min_lease: u64,
    /// Most the sidecar ever asks to hold for one limit.
    pub max_local: u64,
}

impl Default for LeasePolicy {
    fn default() -> Self {
        Self {
            refill_lead: Duration::from_millis(500),
            lease_horizon: Duration::from_secs(3),
            min_low_water: 1_000_000, // 1 credit
            min_lease: 2_000_000,
            max_local: 1_000_000_000_000, // 1,000,000 credits
        }
    }
}

/// What the sidecar knows about one pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolView {
    /// Uncarved pool credits plus the allowances carved from it.
    pub local: u64,
    /// Demanded from the authority and not yet answered.
    pub in_flight: u64,
    /// Recent burn, micro-credits per second.
    pub burn_per_sec: u64,
}

impl LeasePolicy {
    /// The level below which a refill is requested.
    pub fn low_water(&self, burn_per_sec: u64) -> u64 {
        self.min_low_water
            .max(per_sec_times(burn_per_sec, self.refill_lead).saturating_mul(2))
    }

    /// The level a refill aims for.
    pub fn target(&self, burn_per_sec: u64) -> u64 {
        let lw = self.low_water(burn_per_sec);
        lw.saturating_mul(2)
            .max(per_sec_times(burn_per_sec, self.lease_horizon))
            .clamp(self.min_lease.min(self.max_local), self.max_local)
    }

    /// How much to demand now, if anything.
    pub fn demand(&self, pool: PoolView) -> Option<u64> {
        let have = pool.local.saturating_add(pool.in_flight);
        if have >= self.low_water(pool.burn_per_sec) {
            return None;
        }
        let want = self.target(pool.burn_per_sec).saturating_sub(have);
        (want > 0).then_some(want)
    }
}

/// How lane allowances are sized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LanePolicy {
    /// How much of a lane's own burn an allowance should cover.
    pub horizon: Duration,
    /// Smallest allowance a lane in use gets (one typical call should fit).
    pub min_allowance: u64,
    /// Largest allowance one lane may hold.
    pub max_allowance: u64,
    /// A lane with no spending for this long gives its allowance back.
    pub idle_after: Duration,
}

impl Default for LanePolicy {
    fn default() -> Self {
        Self {
            horizon: Duration::from_millis(500),
            min_allowance: 200_000, // 0.2 credits
            max_allowance: 100_000_000,
            idle_after: Duration::from_secs(5),
        }
    }
}

/// What the sidecar knows about one lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LaneView {
    /// Credits currently in the lane's allowance.
    pub allowance: u64,
    /// The lane's recent burn, micro-credits per second.
    pub burn_per_sec: u64,
    /// Time since the lane last spent anything.
    pub idle_for: Duration,
    /// Credits the agent asked for when its lane ran dry (0 when it has not).
    pub asked: u64,
}

/// What to do with one lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaneAction {
    /// Nothing.
    Keep,
    /// Ask the pools for this much (then [`carve`] decides how much they pay).
    TopUp(u64),
    /// Take this much back to the pools.
    Revoke(u64),
}

impl LanePolicy {
    /// The allowance a lane with this burn should hold.
    pub fn target(&self, burn_per_sec: u64) -> u64 {
        per_sec_times(burn_per_sec, self.horizon).clamp(
            self.min_allowance.min(self.max_allowance),
            self.max_allowance,
        )
    }

    /// Decides one lane.
    pub fn action(&self, lane: LaneView) -> LaneAction {
        let target = self.target(lane.burn_per_sec);
        // An agent waiting on a dry lane gets what its call needs at once (plus headroom),
        // whatever the lane's recent burn says.
        if lane.asked > lane.allowance {
            let need = target.max(lane.asked.saturating_add(target / 2));
            return LaneAction::TopUp(need - lane.allowance);
        }
        if lane.idle_for >= self.idle_after {
            return if lane.allowance > 0 {
                LaneAction::Revoke(lane.allowance)
            } else {
                LaneAction::Keep
            };
        }
        if lane.allowance < target.div_ceil(2) {
            LaneAction::TopUp(target - lane.allowance)
        } else if lane.allowance > target.saturating_mul(2) {
            LaneAction::Revoke(lane.allowance - target)
        } else {
            LaneAction::Keep
        }
    }
}

/// One limit's side of a carve: the pool's uncarved credits and the floor the lane's tier must
/// leave in it (0 for the top tier).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payer {
    /// Uncarved credits in the pool.
    pub available: u64,
    /// Credits this tier must leave in the pool.
    pub floor: u64,
}

/// How much a lane subject to all of `payers` may receive when it wants `want`: every limit
/// pays the same amount or the lane gets nothing more, so an allowance is always backed by
/// every limit at once. A lane subject to no limit gets nothing (fail closed).
pub fn carve(want: u64, payers: &[Payer]) -> u64 {
    if payers.is_empty() {
        return 0;
    }
    payers
        .iter()
        .map(|p| p.available.saturating_sub(p.floor))
        .fold(want, u64::min)
}

/// Where the excess of a lowered limit comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Shrink {
    /// Taken from the pool's uncarved credits.
    pub from_pool: u64,
    /// Taken from lanes: (lane index as given, amount).
    pub from_lanes: Vec<(usize, u64)>,
    /// What could not be found locally (already spent or held by reservations in flight).
    pub shortfall: u64,
}

/// Plans taking `excess` back from a pool with `pool_available` uncarved credits and lanes
/// holding `lane_allowances`: the pool first, then the largest allowances first.
pub fn shrink(excess: u64, pool_available: u64, lane_allowances: &[u64]) -> Shrink {
    let from_pool = excess.min(pool_available);
    let mut left = excess - from_pool;
    let mut order: Vec<usize> = (0..lane_allowances.len()).collect();
    order.sort_by(|a, b| lane_allowances[*b].cmp(&lane_allowances[*a]).then(a.cmp(b)));
    let mut from_lanes = Vec::new();
    for i in order {
        if left == 0 {
            break;
        }
        let take = left.min(lane_allowances[i]);
        if take > 0 {
            from_lanes.push((i, take));
            left -= take;
        }
    }
    Shrink {
        from_pool,
        from_lanes,
        shortfall: left,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> LeasePolicy {
        LeasePolicy {
            refill_lead: Duration::from_secs(1),
            lease_horizon: Duration::from_secs(10),
            min_low_water: 100,
            min_lease: 200,
            max_local: 1_000_000,
        }
    }

    #[test]
    fn refills_before_dry_sized_from_burn() {
        let p = policy();
        // burn 1000/s, lead 1s: low water 2000; target max(4000, 10000) = 10000
        assert_eq!(p.low_water(1_000), 2_000);
        assert_eq!(p.target(1_000), 10_000);
        let ask = p.demand(PoolView {
            local: 1_999,
            in_flight: 0,
            burn_per_sec: 1_000,
        });
        assert_eq!(ask, Some(10_000 - 1_999));
        // at the mark: nothing yet
        assert_eq!(
            p.demand(PoolView {
                local: 2_000,
                in_flight: 0,
                burn_per_sec: 1_000
            }),
            None
        );
    }

    #[test]
    fn in_flight_demand_is_not_asked_twice() {
        let p = policy();
        let first = p
            .demand(PoolView {
                local: 0,
                in_flight: 0,
                burn_per_sec: 1_000,
            })
            .unwrap();
        assert_eq!(
            p.demand(PoolView {
                local: 0,
                in_flight: first,
                burn_per_sec: 1_000
            }),
            None
        );
    }

    #[test]
    fn idle_pool_keeps_a_small_floor_and_large_burn_is_capped() {
        let p = policy();
        assert_eq!(
            p.demand(PoolView {
                local: 0,
                in_flight: 0,
                burn_per_sec: 0
            }),
            Some(200)
        );
        assert_eq!(p.target(u64::MAX), 1_000_000);
        assert_eq!(
            p.demand(PoolView {
                local: 0,
                in_flight: 0,
                burn_per_sec: u64::MAX
            }),
            Some(1_000_000)
        );
    }

    #[test]
    fn lane_topped_up_below_half_target() {
        let lp = LanePolicy {
            horizon: Duration::from_millis(500),
            min_allowance: 100,
            max_allowance: 10_000,
            idle_after: Duration::from_secs(5),
        };
        // burn 4000/s → target 2000
        let busy = LaneView {
            allowance: 999,
            burn_per_sec: 4_000,
            idle_for: Duration::ZERO,
            asked: 0,
        };
        assert_eq!(lp.action(busy), LaneAction::TopUp(1_001));
        let ok = LaneView {
            allowance: 1_000,
            ..busy
        };
        assert_eq!(lp.action(ok), LaneAction::Keep);
        let fat = LaneView {
            allowance: 4_001,
            ..busy
        };
        assert_eq!(lp.action(fat), LaneAction::Revoke(2_001));
        let idle = LaneView {
            allowance: 50,
            burn_per_sec: 0,
            idle_for: Duration::from_secs(6),
            asked: 0,
        };
        assert_eq!(lp.action(idle), LaneAction::Revoke(50));
        let idle_empty = LaneView {
            allowance: 0,
            ..idle
        };
        assert_eq!(lp.action(idle_empty), LaneAction::Keep);
        // a fresh lane with no burn yet still gets the minimum so its first call can pass
        let fresh = LaneView {
            allowance: 0,
            burn_per_sec: 0,
            idle_for: Duration::ZERO,
            asked: 0,
        };
        assert_eq!(lp.action(fresh), LaneAction::TopUp(100));
        // an agent waiting for a call larger than the allowance gets it now
        let waiting = LaneView {
            allowance: 1_500,
            asked: 5_000,
            ..busy
        };
        assert_eq!(lp.action(waiting), LaneAction::TopUp(5_000 + 1_000 - 1_500));
        let waiting_after_idle = LaneView {
            allowance: 0,
            asked: 50,
            burn_per_sec: 0,
            idle_for: Duration::from_secs(60),
        };
        assert_eq!(lp.action(waiting_after_idle), LaneAction::TopUp(100));
    }

    #[test]
    fn carve_is_all_or_nothing_across_limits_and_respects_floors() {
        let payers = [
            Payer {
                available: 1_000,
                floor: 0,
            },
            Payer {
                available: 500,
                floor: 0,
            },
        ];
        assert_eq!(carve(800, &payers), 500);
        // a background lane must leave the floor in every pool
        let bg = [
            Payer {
                available: 1_000,
                floor: 900,
            },
            Payer {
                available: 500,
                floor: 100,
            },
        ];
        assert_eq!(carve(800, &bg), 100);
        let at_floor = [Payer {
            available: 900,
            floor: 900,
        }];
        assert_eq!(carve(800, &at_floor), 0);
        let below_floor = [Payer {
            available: 10,
            floor: 900,
        }];
        assert_eq!(carve(800, &below_floor), 0);
        assert_eq!(carve(800, &[]), 0);
    }

    #[test]
    fn shrink_takes_pool_first_then_largest_lanes() {
        let s = shrink(1_000, 300, &[100, 500, 400]);
        assert_eq!(s.from_pool, 300);
        assert_eq!(s.from_lanes, vec![(1, 500), (2, 200)]);
        assert_eq!(s.shortfall, 0);
        let short = shrink(2_000, 300, &[100, 500]);
        assert_eq!(short.shortfall, 1_100);
        let total: u64 = short.from_pool + short.from_lanes.iter().map(|l| l.1).sum::<u64>();
        assert_eq!(total + short.shortfall, 2_000);
    }
}
