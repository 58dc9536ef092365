//! Compact encodings of policy values into region words (limits, lane keys, pool lists).

use tollgate_core::{Horizon, Initiator, LimitKind, Tier};

use crate::layout::{MAX_LIMITS_PER_LANE, MAX_POOLS_PER_LANE, POOL_LIST_WORDS};

fn horizon_code(h: Horizon) -> u64 {
    Horizon::ALL.iter().position(|x| *x == h).unwrap_or(0) as u64
}

fn horizon_from(c: u64) -> Option<Horizon> {
    Horizon::ALL.get(c as usize).copied()
}

/// A limit as a non-zero word (0 means "no limit recorded"), or `None` for a kind this
/// layout version cannot store.
pub(crate) fn encode_limit(k: LimitKind) -> Option<u64> {
    let (code, a, b) = match k {
        LimitKind::TenantWallet => (1, 0, 0),
        LimitKind::TenantWindow(h) => (2, horizon_code(h), 0),
        LimitKind::Agent(h) => (3, horizon_code(h), 0),
        LimitKind::TierWindow(t, h) => (4, horizon_code(h), t.as_index() as u64),
        LimitKind::InitiatorWindow(i, h) => (5, horizon_code(h), i.as_index() as u64),
        LimitKind::TierFloor(t) => (6, 0, t.as_index() as u64),
        LimitKind::Task => (7, 0, 0),
        LimitKind::HardCap => (8, 0, 0),
        LimitKind::EmergencyAllowance => (9, 0, 0),
        _ => return None,
    };
    Some(code | (a << 8) | (b << 16))
}

/// The limit a word encodes; `None` for 0 or an unknown/scribbled code.
pub(crate) fn decode_limit(w: u64) -> Option<LimitKind> {
    let (code, a, b) = (w & 0xFF, (w >> 8) & 0xFF, (w >> 16) & 0xFF);
    if w >> 24 != 0 {
        return None;
    }
    Some(match code {
        1 => LimitKind::TenantWallet,
        2 => LimitKind::TenantWindow(horizon_from(a)?),
        3 => LimitKind::Agent(horizon_from(a)?),
        4 => LimitKind::TierWindow(Tier::from_index(b as usize)?, horizon_from(a)?),
        5 => LimitKind::InitiatorWindow(Initiator::from_index(b as usize)?, horizon_from(a)?),
        6 => LimitKind::TierFloor(Tier::from_index(b as usize)?),
        7 => LimitKind::Task,
        8 => LimitKind::HardCap,
        9 => LimitKind::EmergencyAllowance,
        _ => return None,
    })
}

/// A named task's place in the region's task table: its slot and the generation the slot
/// had when the task was opened there (a slot is reused for another task only with a new
/// generation, so a stale reference never matches a new task).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct TaskRef {
    /// Index in the task table (below 4095).
    pub slot: u16,
    /// Generation of the slot (13 bits).
    pub generation: u16,
}

/// Bits of a task generation.
pub(crate) const TASK_GEN_MASK: u16 = 0x1FFF;

impl TaskRef {
    /// `[generation:13 | slot + 1:12]`, 0 for no task (25 bits).
    #[inline]
    pub(crate) fn encode(t: Option<TaskRef>) -> u64 {
        match t {
            None => 0,
            Some(t) => {
                (u64::from(t.slot) + 1) & 0xFFF | (u64::from(t.generation & TASK_GEN_MASK) << 12)
            }
        }
    }

    /// The reference 25 bits encode (`None` for 0).
    #[inline]
    pub(crate) fn decode(w: u64) -> Option<TaskRef> {
        let slot = w & 0xFFF;
        (slot != 0).then(|| TaskRef {
            slot: (slot - 1) as u16,
            generation: ((w >> 12) & u64::from(TASK_GEN_MASK)) as u16,
        })
    }
}

// A task table entry's state word: `[holder:48 | generation:13 | kind:3]` (see `tasks.rs`).
pub(crate) const TASK_FREE: u64 = 0;
pub(crate) const TASK_WRITING: u64 = 1;
pub(crate) const TASK_OPEN: u64 = 2;
pub(crate) const TASK_HOLDER_SHIFT: u32 = 16;
const TASK_GEN_SHIFT: u32 = 3;

#[inline]
pub(crate) fn task_kind(st: u64) -> u64 {
    st & 0x7
}
#[inline]
pub(crate) fn task_gen(st: u64) -> u16 {
    ((st >> TASK_GEN_SHIFT) & u64::from(TASK_GEN_MASK)) as u16
}
#[inline]
pub(crate) fn task_word(holder: u64, generation: u16, kind: u64) -> u64 {
    (holder << TASK_HOLDER_SHIFT) | (u64::from(generation) << TASK_GEN_SHIFT) | kind
}

/// A task's completion mark naming the work-unit reservation that won it:
/// `[1 | lane:16 | claim generation:15 | slot:8]` (see `tasks.rs`).
#[inline]
pub(crate) fn done_mark(lane: usize, generation: u16, slot: usize) -> u64 {
    (1 << 63) | ((lane as u64 & 0xFFFF) << 24) | (u64::from(generation) << 8) | slot as u64
}

/// A lane's key: which tenant, tier and initiator its calls belong to, the agent (by name
/// id) they are made as, and the task they spend, if any. Bit 63 marks the key as written
/// (a claimed lane without it is still being set up, or was abandoned).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LaneKey {
    /// Tenant index in the region.
    pub tenant: u16,
    /// Priority tier.
    pub tier: Tier,
    /// Who starts the calls.
    pub initiator: Initiator,
    /// The agent's name id in the region's name table (0: unnamed).
    pub agent: u16,
    /// The named task the lane's calls spend, if any.
    pub task: Option<TaskRef>,
}

const KEY_READY: u64 = 1 << 63;

impl LaneKey {
    /// `[ready:1 | task:25 @32 | agent:16 @16 | initiator:1 @14 | tier:2 @12 | tenant:12]`.
    pub(crate) fn encode(self) -> u64 {
        KEY_READY
            | u64::from(self.tenant) & 0xFFF
            | ((self.tier.as_index() as u64) << 12)
            | ((self.initiator.as_index() as u64) << 14)
            | (u64::from(self.agent) << 16)
            | (TaskRef::encode(self.task) << 32)
    }

    pub(crate) fn decode(w: u64) -> Option<LaneKey> {
        if w & KEY_READY == 0 || (w >> 57) & 0x3F != 0 || w & (1 << 15) != 0 {
            return None;
        }
        Some(LaneKey {
            tenant: (w & 0xFFF) as u16,
            tier: Tier::from_index(((w >> 12) & 0x3) as usize)?,
            initiator: Initiator::from_index(((w >> 14) & 0x1) as usize)?,
            agent: ((w >> 16) & 0xFFFF) as u16,
            task: TaskRef::decode((w >> 32) & 0x1FF_FFFF),
        })
    }

    /// The class index within a tenant record.
    pub(crate) fn class(self) -> usize {
        self.tier.as_index() * 2 + self.initiator.as_index()
    }
}

/// A call's names as the slot and ring-record word carries them:
/// `[task:25 @32 | feature:16 @16 | agent:16]`.
#[inline]
pub(crate) fn pack_names(agent: u16, feature: u16, task: Option<TaskRef>) -> u64 {
    u64::from(agent) | (u64::from(feature) << 16) | (TaskRef::encode(task) << 32)
}

/// `(agent, feature, task)` from a names word (any word decodes: bits past 57 are ignored).
#[inline]
pub(crate) fn unpack_names(w: u64) -> (u16, u16, Option<TaskRef>) {
    (
        (w & 0xFFFF) as u16,
        ((w >> 16) & 0xFFFF) as u16,
        TaskRef::decode((w >> 32) & 0x1FF_FFFF),
    )
}

/// Packs up to [`MAX_POOLS_PER_LANE`] distinct pool indices (each below 0xFFFF) into a
/// lane's pool-list words; 0xFFFF marks an empty entry, so the first word is never 0
/// (which lanes use to mean "no list yet").
pub(crate) fn pack_lane_pools(pools: &[usize]) -> Option<[u64; POOL_LIST_WORDS]> {
    if pools.len() > MAX_POOLS_PER_LANE {
        return None;
    }
    let mut w = [u64::MAX; POOL_LIST_WORDS];
    for (i, p) in pools.iter().enumerate() {
        if *p >= 0xFFFF || pools[..i].contains(p) {
            return None;
        }
        let (word, shift) = (i / 4, 16 * (i % 4));
        w[word] &= !(0xFFFF << shift);
        w[word] |= (*p as u64) << shift;
    }
    Some(w)
}

/// Unpacks a lane's pool list (checking entries against the pool count is the caller's job).
pub(crate) fn unpack_lane_pools(w: [u64; POOL_LIST_WORDS]) -> impl Iterator<Item = usize> {
    (0..MAX_POOLS_PER_LANE)
        .map(move |i| ((w[i / 4] >> (16 * (i % 4))) & 0xFFFF) as usize)
        .filter(|p| *p != 0xFFFF)
}

/// Packs up to eight distinct pool indices (each < 255) into a word; 0xFF marks an empty
/// entry, so the result is never 0 (which lanes use to mean "no list yet").
pub(crate) fn pack_pools(pools: &[usize]) -> Option<u64> {
    if pools.len() > MAX_LIMITS_PER_LANE {
        return None;
    }
    let mut w = u64::MAX;
    for (i, p) in pools.iter().enumerate() {
        if *p >= 0xFF || pools[..i].contains(p) {
            return None;
        }
        w &= !(0xFF << (8 * i));
        w |= (*p as u64) << (8 * i);
    }
    Some(w)
}

/// Unpacks a pool list (checking entries against the pool count is the caller's job).
pub(crate) fn unpack_pools(w: u64) -> impl Iterator<Item = usize> {
    (0..MAX_LIMITS_PER_LANE)
        .map(move |i| ((w >> (8 * i)) & 0xFF) as usize)
        .filter(|p| *p != 0xFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_round_trip() {
        let all = [
            LimitKind::TenantWallet,
            LimitKind::TenantWindow(Horizon::Minute),
            LimitKind::Agent(Horizon::Total),
            LimitKind::TierWindow(Tier::Background, Horizon::Month),
            LimitKind::InitiatorWindow(Initiator::Agent, Horizon::Day),
            LimitKind::TierFloor(Tier::Scheduler),
            LimitKind::Task,
            LimitKind::HardCap,
            LimitKind::EmergencyAllowance,
        ];
        for k in all {
            let w = encode_limit(k).unwrap();
            assert_ne!(w, 0);
            assert_eq!(decode_limit(w), Some(k));
        }
        assert_eq!(decode_limit(0), None);
        assert_eq!(decode_limit(0xFFFF_FFFF), None);
    }

    #[test]
    fn pool_lists_pack() {
        let w = pack_pools(&[0, 3, 254]).unwrap();
        assert_ne!(w, 0);
        assert_eq!(unpack_pools(w).collect::<Vec<_>>(), vec![0, 3, 254]);
        assert_eq!(unpack_pools(pack_pools(&[]).unwrap()).count(), 0);
        assert!(pack_pools(&[1, 1]).is_none());
        assert!(pack_pools(&[255]).is_none());
        assert!(pack_pools(&[0; 9]).is_none());
    }

    #[test]
    fn lane_keys_round_trip() {
        let task = TaskRef {
            slot: 4094,
            generation: TASK_GEN_MASK,
        };
        for (agent, task) in [
            (0, None),
            (65535, Some(task)),
            (
                3,
                Some(TaskRef {
                    slot: 0,
                    generation: 0,
                }),
            ),
        ] {
            let k = LaneKey {
                tenant: 1023,
                tier: Tier::Background,
                initiator: Initiator::Agent,
                agent,
                task,
            };
            assert_eq!(LaneKey::decode(k.encode()), Some(k));
        }
        assert_eq!(LaneKey::decode(0), None);
        assert_eq!(LaneKey::decode(u64::MAX), None, "scribbled high bits");
    }

    #[test]
    fn names_round_trip() {
        let t = Some(TaskRef {
            slot: 17,
            generation: 9,
        });
        assert_eq!(unpack_names(pack_names(5, 65535, t)), (5, 65535, t));
        assert_eq!(unpack_names(pack_names(0, 0, None)), (0, 0, None));
        // Any word decodes to something (a scribbled record).
        let _ = unpack_names(u64::MAX);
    }

    #[test]
    fn lane_pool_lists_pack() {
        let pools: Vec<usize> = (0..12).map(|i| i * 300).collect();
        let w = pack_lane_pools(&pools).unwrap();
        assert_ne!(w[0], 0);
        assert_eq!(unpack_lane_pools(w).collect::<Vec<_>>(), pools);
        assert_eq!(unpack_lane_pools(pack_lane_pools(&[]).unwrap()).count(), 0);
        assert!(pack_lane_pools(&[1, 1]).is_none());
        assert!(pack_lane_pools(&[0xFFFF]).is_none());
        assert!(pack_lane_pools(&[0; 13]).is_none());
    }
}
