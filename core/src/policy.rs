//! Limit policy: what a limit is ([`LimitKind`]), windowed quotas ([`QuotaPolicy`]),
//! tier floors ([`TierFloors`]) and task budgets ([`TaskBudget`]). Data plus pure
//! decision helpers; no I/O. Alerts live in [`crate::alert`], grants in [`crate::grant`].

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::credits::Credits;
use crate::tier::{Initiator, Tier};
use crate::time::Horizon;

/// Which limit a denial (or an alert, or a pool) is about. Denials carry this so the
/// caller learns *what* ran out: the tenant (back off), the task (stop the loop), or its
/// own tier (lower-priority work yields to humans).
///
/// `#[non_exhaustive]`: new limits may be added; match with a `_` arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LimitKind {
    /// The tenant's wallet (its grants) is exhausted.
    TenantWallet,
    /// A windowed quota on the whole tenant (e.g. credits per minute).
    TenantWindow(Horizon),
    /// A windowed quota on one agent (by name: every instance of it together).
    Agent(Horizon),
    /// A windowed quota on the calls of one tier.
    TierWindow(Tier, Horizon),
    /// A windowed quota on the calls of one initiator (human- or agent-started).
    InitiatorWindow(Initiator, Horizon),
    /// The call's tier may not take the pool below its floor (capacity is kept for
    /// higher tiers).
    TierFloor(Tier),
    /// The task's own budget is spent: the task, not the tenant, is out.
    Task,
    /// The plan's hard cap on spend for the billing period.
    HardCap,
    /// The sidecar's emergency allowance (authority unreachable) is spent.
    EmergencyAllowance,
}

impl LimitKind {
    /// The window horizon of a windowed limit; `None` for wallet, floor, task, cap.
    pub const fn horizon(self) -> Option<Horizon> {
        match self {
            LimitKind::TenantWindow(h)
            | LimitKind::Agent(h)
            | LimitKind::TierWindow(_, h)
            | LimitKind::InitiatorWindow(_, h) => Some(h),
            LimitKind::TenantWallet
            | LimitKind::TierFloor(_)
            | LimitKind::Task
            | LimitKind::HardCap
            | LimitKind::EmergencyAllowance => None,
        }
    }

    /// `true` for limits owned by the tenant as a whole (every agent of it is affected).
    pub const fn is_tenant_wide(self) -> bool {
        matches!(
            self,
            LimitKind::TenantWallet
                | LimitKind::TenantWindow(_)
                | LimitKind::HardCap
                | LimitKind::TierWindow(..)
                | LimitKind::InitiatorWindow(..)
        )
    }
}

impl fmt::Display for LimitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitKind::TenantWallet => f.write_str("tenant wallet"),
            LimitKind::TenantWindow(h) => write!(f, "tenant per-{h} quota"),
            LimitKind::Agent(h) => write!(f, "agent per-{h} quota"),
            LimitKind::TierWindow(t, h) => write!(f, "{t} tier per-{h} quota"),
            LimitKind::InitiatorWindow(i, h) => write!(f, "{i}-initiated per-{h} quota"),
            LimitKind::TierFloor(t) => write!(f, "{t} tier floor"),
            LimitKind::Task => f.write_str("task budget"),
            LimitKind::HardCap => f.write_str("hard spending cap"),
            LimitKind::EmergencyAllowance => f.write_str("emergency allowance"),
        }
    }
}

/// What a quota policy applies to (within one tenant; the tenant is the policy's owner).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuotaScope {
    /// All of the tenant's calls together.
    Tenant,
    /// One agent, by name (all its instances together).
    Agent,
    /// The tenant's calls of one tier.
    Tier(Tier),
    /// The tenant's calls of one initiator.
    Initiator(Initiator),
}

/// A windowed quota: at most `limit` credits per `horizon` window for `scope`.
/// In `shadow` mode it is evaluated and reported but never enforced, so a new policy
/// can be rolled out and watched first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct QuotaPolicy {
    /// What the quota applies to.
    pub scope: QuotaScope,
    /// Window length (and calendar alignment).
    pub horizon: Horizon,
    /// Credits allowed per window.
    pub limit: Credits,
    /// Report, do not enforce.
    #[serde(default)]
    pub shadow: bool,
}

/// The outcome of checking one limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Within the limit.
    Allow,
    /// Over the limit: refuse the call.
    Deny(LimitKind),
    /// Over a shadow-mode limit: allow, but report that it would have been denied.
    ShadowDeny(LimitKind),
}

impl Decision {
    /// `true` unless the call must be refused.
    pub const fn is_allowed(self) -> bool {
        !matches!(self, Decision::Deny(_))
    }
}

impl QuotaPolicy {
    /// The [`LimitKind`] a denial by this policy reports.
    pub const fn limit_kind(&self) -> LimitKind {
        match self.scope {
            QuotaScope::Tenant => LimitKind::TenantWindow(self.horizon),
            QuotaScope::Agent => LimitKind::Agent(self.horizon),
            QuotaScope::Tier(t) => LimitKind::TierWindow(t, self.horizon),
            QuotaScope::Initiator(i) => LimitKind::InitiatorWindow(i, self.horizon),
        }
    }

    /// `true` if the policy applies to a call of this tier and initiator.
    pub fn applies_to(&self, tier: Tier, initiator: Initiator) -> bool {
        match self.scope {
            QuotaScope::Tenant | QuotaScope::Agent => true,
            QuotaScope::Tier(t) => t == tier,
            QuotaScope::Initiator(i) => i == initiator,
        }
    }

    /// May `amount` more be spent when `used` was already spent in the current window?
    /// Allowed iff `used + amount <= limit` (an overflowing sum is over the limit).
    pub fn check(&self, used: Credits, amount: Credits) -> Decision {
        let within = used
            .checked_add(amount)
            .is_some_and(|total| total <= self.limit);
        match (within, self.shadow) {
            (true, _) => Decision::Allow,
            (false, false) => Decision::Deny(self.limit_kind()),
            (false, true) => Decision::ShadowDeny(self.limit_kind()),
        }
    }
}

/// A tier's floor: how much of a pool must remain after a call of that tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FloorAmount {
    /// A fixed amount.
    Credits(Credits),
    /// Per-mille of the pool's size (what the pool was granted this window); values
    /// above 1000 count as 1000.
    PerMille(u32),
}

impl FloorAmount {
    /// The floor for a pool of `pool_size` credits, rounded up.
    pub fn resolve(self, pool_size: Credits) -> Credits {
        match self {
            FloorAmount::Credits(c) => c,
            FloorAmount::PerMille(pm) => {
                let pm = u128::from(pm.min(1_000));
                let f = (u128::from(pool_size.micros()) * pm).div_ceil(1_000);
                // f <= pool_size because pm <= 1000.
                Credits::from_micros(u64::try_from(f).unwrap_or(u64::MAX))
            }
        }
    }
}

/// Floors per tier: a call of tier `t` may not take a pool below `floor(t)`, so capacity
/// stays for higher tiers and human-initiated work always finds budget. The effective
/// floor of a tier is at least that of every higher tier (floors are made monotone), and
/// interactive work normally has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TierFloors {
    /// Floors indexed by [`Tier::as_index`].
    pub floors: [FloorAmount; Tier::COUNT],
}

impl Default for TierFloors {
    /// No floors.
    fn default() -> TierFloors {
        TierFloors {
            floors: [FloorAmount::Credits(Credits::ZERO); Tier::COUNT],
        }
    }
}

impl TierFloors {
    /// The effective floor of `tier` for a pool of `pool_size`: the largest configured
    /// floor of `tier` and every tier above it.
    pub fn floor(&self, tier: Tier, pool_size: Credits) -> Credits {
        self.floors[..=tier.as_index()]
            .iter()
            .map(|f| f.resolve(pool_size))
            .max()
            .unwrap_or(Credits::ZERO)
    }

    /// All effective floors for a pool, indexed by tier (for writing into a region).
    pub fn resolve_all(&self, pool_size: Credits) -> [Credits; Tier::COUNT] {
        Tier::ALL.map(|t| self.floor(t, pool_size))
    }

    /// May a call of `tier` take `amount` from a pool of `pool_size` that has `available`?
    /// Allowed iff `available - amount >= floor(tier)`.
    pub fn check(
        &self,
        tier: Tier,
        pool_size: Credits,
        available: Credits,
        amount: Credits,
    ) -> Decision {
        let floor = self.floor(tier, pool_size);
        match available.checked_sub(amount) {
            Some(left) if left >= floor => Decision::Allow,
            _ => Decision::Deny(LimitKind::TierFloor(tier)),
        }
    }
}

/// A per-task budget: a task (one agent run, one ticket) may spend at most `limit`, and
/// optionally make at most `max_calls` calls. Past it, `reserve` refuses with
/// [`LimitKind::Task`] so the runtime can stop a runaway loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TaskBudget {
    /// Credits the task may spend.
    pub limit: Credits,
    /// Calls the task may make; `None` = unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_calls: Option<u64>,
}

impl TaskBudget {
    /// A budget of `limit` credits and no call limit.
    pub const fn new(limit: Credits) -> TaskBudget {
        TaskBudget {
            limit,
            max_calls: None,
        }
    }

    /// May one more call costing `amount` run, after `spent` credits over `calls` calls?
    pub fn check(&self, spent: Credits, calls: u64, amount: Credits) -> Decision {
        let money_ok = spent
            .checked_add(amount)
            .is_some_and(|total| total <= self.limit);
        let calls_ok = self.max_calls.is_none_or(|max| calls < max);
        if money_ok && calls_ok {
            Decision::Allow
        } else {
            Decision::Deny(LimitKind::Task)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_kind_names_its_horizon() {
        assert_eq!(
            LimitKind::TenantWindow(Horizon::Minute).horizon(),
            Some(Horizon::Minute)
        );
        assert_eq!(LimitKind::Task.horizon(), None);
        assert_eq!(
            LimitKind::Agent(Horizon::Hour).to_string(),
            "agent per-hour quota"
        );
        let json = serde_json::to_string(&LimitKind::TierFloor(Tier::Background)).unwrap();
        assert_eq!(json, r#"{"tier_floor":"background"}"#);
        let back: LimitKind = serde_json::from_str(&json).unwrap();
        assert_eq!(back, LimitKind::TierFloor(Tier::Background));
    }

    fn c(n: u64) -> Credits {
        Credits::from_credits(n).unwrap()
    }

    #[test]
    fn quota_allows_up_to_the_limit_and_shadow_only_reports() {
        let mut q = QuotaPolicy {
            scope: QuotaScope::Tenant,
            horizon: Horizon::Minute,
            limit: c(100),
            shadow: false,
        };
        assert_eq!(q.check(c(60), c(40)), Decision::Allow);
        let deny = Decision::Deny(LimitKind::TenantWindow(Horizon::Minute));
        assert_eq!(q.check(c(60), c(40).checked_add(Credits(1)).unwrap()), deny);
        assert_eq!(q.check(Credits::MAX, c(1)), deny);
        q.shadow = true;
        let d = q.check(c(100), c(1));
        assert_eq!(
            d,
            Decision::ShadowDeny(LimitKind::TenantWindow(Horizon::Minute))
        );
        assert!(d.is_allowed());
        assert!(!deny.is_allowed());
        let tier_q = QuotaPolicy {
            scope: QuotaScope::Tier(Tier::Background),
            ..q
        };
        assert!(tier_q.applies_to(Tier::Background, Initiator::Human));
        assert!(!tier_q.applies_to(Tier::Interactive, Initiator::Human));
        let agent_q = QuotaPolicy {
            scope: QuotaScope::Initiator(Initiator::Agent),
            ..q
        };
        assert!(!agent_q.applies_to(Tier::Background, Initiator::Human));
        assert_eq!(
            agent_q.limit_kind(),
            LimitKind::InitiatorWindow(Initiator::Agent, Horizon::Minute)
        );
        let json = serde_json::to_string(&agent_q).unwrap();
        assert_eq!(serde_json::from_str::<QuotaPolicy>(&json).unwrap(), agent_q);
        let no_shadow: QuotaPolicy =
            serde_json::from_str(r#"{"scope":"agent","horizon":"hour","limit":5}"#).unwrap();
        assert!(!no_shadow.shadow);
    }

    #[test]
    fn lower_tiers_stop_at_their_floor() {
        let floors = TierFloors {
            floors: [
                FloorAmount::Credits(Credits::ZERO),
                FloorAmount::PerMille(100),
                FloorAmount::PerMille(300),
            ],
        };
        let pool = c(1_000);
        assert_eq!(floors.resolve_all(pool), [c(0), c(100), c(300)]);
        // 350 left: background may take 50 (down to 300), not 51.
        let avail = c(350);
        assert_eq!(
            floors.check(Tier::Background, pool, avail, c(50)),
            Decision::Allow
        );
        assert_eq!(
            floors.check(Tier::Background, pool, avail, c(51)),
            Decision::Deny(LimitKind::TierFloor(Tier::Background))
        );
        assert_eq!(
            floors.check(Tier::Scheduler, pool, avail, c(250)),
            Decision::Allow
        );
        assert_eq!(
            floors.check(Tier::Interactive, pool, avail, c(350)),
            Decision::Allow
        );
        assert_eq!(
            floors.check(Tier::Interactive, pool, avail, c(351)),
            Decision::Deny(LimitKind::TierFloor(Tier::Interactive))
        );
        // A misconfigured higher floor still binds the lower tiers (monotone floors).
        let odd = TierFloors {
            floors: [
                FloorAmount::Credits(Credits::ZERO),
                FloorAmount::Credits(c(500)),
                FloorAmount::Credits(c(10)),
            ],
        };
        assert_eq!(odd.floor(Tier::Background, pool), c(500));
        assert_eq!(FloorAmount::PerMille(5_000).resolve(pool), pool);
        assert_eq!(FloorAmount::PerMille(1).resolve(Credits(1)), Credits(1));
    }

    #[test]
    fn task_budget_refuses_past_its_limit_or_call_count() {
        let t = TaskBudget {
            limit: c(10),
            max_calls: Some(3),
        };
        assert_eq!(t.check(c(4), 2, c(6)), Decision::Allow);
        assert_eq!(
            t.check(c(4), 2, Credits(6_000_001)),
            Decision::Deny(LimitKind::Task)
        );
        assert_eq!(t.check(c(0), 3, c(1)), Decision::Deny(LimitKind::Task));
        assert_eq!(
            TaskBudget::new(c(1)).check(c(0), u64::MAX, c(1)),
            Decision::Allow
        );
    }
}
