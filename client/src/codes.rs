//! Compact encodings of policy values into region words (limits, lane keys, pool lists).

use tollgate_core::{Horizon, Initiator, LimitKind, Tier};

use crate::layout::MAX_LIMITS_PER_LANE;

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

/// A lane's key: which tenant, tier and initiator its calls belong to. Bit 63 marks the
/// key as written (a claimed lane without it is still being set up, or was abandoned).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LaneKey {
    /// Tenant index in the region.
    pub tenant: u16,
    /// Priority tier.
    pub tier: Tier,
    /// Who starts the calls.
    pub initiator: Initiator,
}

const KEY_READY: u64 = 1 << 63;

impl LaneKey {
    pub(crate) fn encode(self) -> u64 {
        KEY_READY
            | u64::from(self.tenant)
            | ((self.tier.as_index() as u64) << 16)
            | ((self.initiator.as_index() as u64) << 24)
    }

    pub(crate) fn decode(w: u64) -> Option<LaneKey> {
        if w & KEY_READY == 0 {
            return None;
        }
        Some(LaneKey {
            tenant: (w & 0xFFFF) as u16,
            tier: Tier::from_index(((w >> 16) & 0xFF) as usize)?,
            initiator: Initiator::from_index(((w >> 24) & 0xFF) as usize)?,
        })
    }

    /// The class index within a tenant record.
    pub(crate) fn class(self) -> usize {
        self.tier.as_index() * 2 + self.initiator.as_index()
    }
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
        let k = LaneKey {
            tenant: 7,
            tier: Tier::Background,
            initiator: Initiator::Agent,
        };
        assert_eq!(LaneKey::decode(k.encode()), Some(k));
        assert_eq!(LaneKey::decode(0), None);
    }
}
