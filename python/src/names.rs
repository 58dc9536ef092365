//! Tiers, initiators and limits as the words Python code uses (the core's own names).

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use tollgate_core::{Initiator, LimitKind, Tier};

/// `"interactive"`, `"scheduler"` or `"background"`.
pub fn tier(s: &str) -> PyResult<Tier> {
    match s {
        "interactive" => Ok(Tier::Interactive),
        "scheduler" => Ok(Tier::Scheduler),
        "background" => Ok(Tier::Background),
        other => Err(PyValueError::new_err(format!(
            "unknown tier {other:?}: use \"interactive\", \"scheduler\" or \"background\""
        ))),
    }
}

/// `"human"` or `"agent"`.
pub fn initiator(s: &str) -> PyResult<Initiator> {
    match s {
        "human" => Ok(Initiator::Human),
        "agent" => Ok(Initiator::Agent),
        other => Err(PyValueError::new_err(format!(
            "unknown initiator {other:?}: use \"human\" or \"agent\""
        ))),
    }
}

/// The limit's kind as a snake_case word (its tier, initiator and horizon are reported
/// apart).
pub fn limit(l: LimitKind) -> &'static str {
    match l {
        LimitKind::TenantWallet => "tenant_wallet",
        LimitKind::TenantWindow(_) => "tenant_window",
        LimitKind::Agent(_) => "agent",
        LimitKind::TierWindow(..) => "tier_window",
        LimitKind::InitiatorWindow(..) => "initiator_window",
        LimitKind::TierFloor(_) => "tier_floor",
        LimitKind::Task => "task",
        LimitKind::HardCap => "hard_cap",
        LimitKind::EmergencyAllowance => "emergency_allowance",
        _ => "other",
    }
}
