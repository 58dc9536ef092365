//! Policy vocabulary: what a limit is ([`LimitKind`]), and (phase 2) the quota, floor,
//! task-budget, alert and grant policy types. Data plus pure helpers; no I/O.

use std::fmt;

use serde::{Deserialize, Serialize};

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
    /// A windowed quota on one agent instance.
    AgentInstance(Horizon),
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
            | LimitKind::AgentInstance(h)
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
            LimitKind::AgentInstance(h) => write!(f, "agent instance per-{h} quota"),
            LimitKind::TierWindow(t, h) => write!(f, "{t} tier per-{h} quota"),
            LimitKind::InitiatorWindow(i, h) => write!(f, "{i}-initiated per-{h} quota"),
            LimitKind::TierFloor(t) => write!(f, "{t} tier floor"),
            LimitKind::Task => f.write_str("task budget"),
            LimitKind::HardCap => f.write_str("hard spending cap"),
            LimitKind::EmergencyAllowance => f.write_str("emergency allowance"),
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
            LimitKind::AgentInstance(Horizon::Hour).to_string(),
            "agent instance per-hour quota"
        );
        let json = serde_json::to_string(&LimitKind::TierFloor(Tier::Background)).unwrap();
        assert_eq!(json, r#"{"tier_floor":"background"}"#);
        let back: LimitKind = serde_json::from_str(&json).unwrap();
        assert_eq!(back, LimitKind::TierFloor(Tier::Background));
    }
}
