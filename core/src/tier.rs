//! Who a call is for: its priority [`Tier`] and its [`Initiator`].

use std::fmt;

use serde::{Deserialize, Serialize};

/// Priority tier of a call. Declaration order is priority order:
/// `Interactive < Scheduler < Background` under `Ord`, and a *smaller* tier is *more*
/// important (index 0 is served first; lower tiers stop at their floors).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// A human is waiting (chat, IDE). Highest priority; never stopped by a floor.
    #[default]
    Interactive,
    /// Scheduled jobs (cron-like agent runs).
    Scheduler,
    /// Background work (indexing, batch evaluation). Lowest priority.
    Background,
}

impl Tier {
    /// All tiers in priority order (highest first); `ALL[t.as_index()] == t`.
    pub const ALL: [Tier; 3] = [Tier::Interactive, Tier::Scheduler, Tier::Background];
    /// Number of tiers (length of per-tier arrays).
    pub const COUNT: usize = 3;

    /// Dense index for per-tier arrays: Interactive 0, Scheduler 1, Background 2.
    #[inline]
    pub const fn as_index(self) -> usize {
        self as usize
    }

    /// Inverse of [`Tier::as_index`]; `None` for an index `>= Tier::COUNT`.
    #[inline]
    pub const fn from_index(index: usize) -> Option<Tier> {
        match index {
            0 => Some(Tier::Interactive),
            1 => Some(Tier::Scheduler),
            2 => Some(Tier::Background),
            _ => None,
        }
    }

    /// `true` if `self` is served before `other`.
    #[inline]
    pub const fn outranks(self, other: Tier) -> bool {
        (self as usize) < (other as usize)
    }

    /// Lower-case name, as in config files.
    pub const fn as_str(self) -> &'static str {
        match self {
            Tier::Interactive => "interactive",
            Tier::Scheduler => "scheduler",
            Tier::Background => "background",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Who started a call. Gateways keep agent keys apart from human keys; policies and
/// per-request prices may differ by initiator (agent-initiated calls can be free).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum Initiator {
    /// A person started the call (the default: it is never the cheaper assumption).
    #[default]
    Human,
    /// The agent started the call on its own (a tool call, a self-directed step).
    Agent,
}

impl Initiator {
    /// Both initiators; `ALL[i.as_index()] == i`.
    pub const ALL: [Initiator; 2] = [Initiator::Human, Initiator::Agent];

    /// Dense index: Human 0, Agent 1.
    #[inline]
    pub const fn as_index(self) -> usize {
        self as usize
    }

    /// Inverse of [`Initiator::as_index`].
    #[inline]
    pub const fn from_index(index: usize) -> Option<Initiator> {
        match index {
            0 => Some(Initiator::Human),
            1 => Some(Initiator::Agent),
            _ => None,
        }
    }

    /// Lower-case name, as in config files.
    pub const fn as_str(self) -> &'static str {
        match self {
            Initiator::Human => "human",
            Initiator::Agent => "agent",
        }
    }
}

impl fmt::Display for Initiator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tier_index_round_trips_and_orders_by_priority() {
        for (i, t) in Tier::ALL.iter().enumerate() {
            assert_eq!(t.as_index(), i);
            assert_eq!(Tier::from_index(i), Some(*t));
        }
        assert_eq!(Tier::from_index(3), None);
        assert!(Tier::Interactive < Tier::Background);
        assert!(Tier::Interactive.outranks(Tier::Scheduler));
        assert!(!Tier::Background.outranks(Tier::Scheduler));
        for (i, x) in Initiator::ALL.iter().enumerate() {
            assert_eq!(Initiator::from_index(x.as_index()), Some(*x));
            assert_eq!(x.as_index(), i);
        }
        assert_eq!(Initiator::from_index(2), None);
    }

    #[test]
    fn serde_names_are_snake_case() {
        assert_eq!(
            serde_json::to_string(&Tier::Background).unwrap(),
            "\"background\""
        );
        assert_eq!(
            serde_json::from_str::<Initiator>("\"agent\"").unwrap(),
            Initiator::Agent
        );
    }
}
