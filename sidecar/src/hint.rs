//! Retry hints of denials: when a dry limit can pay again, by what the limit is.
//!
//! A lane whose binding limit cannot be refilled before a time is denied at once until
//! then, and the agent's retry hint is the time left ([`refusal_until`]): a window's quota
//! when the window rolls (a monthly quota when the month resets), a wallet, a hard cap or a
//! task when leases held elsewhere come back (the authority says: a lease ttl). Otherwise
//! the lane waits for a lease in flight and the hint is how long that answer may take
//! ([`soft_hint`]). Agents add a per-tier jitter on top (`tollgate_client`'s denials).

use std::time::Duration;

use tollgate_core::LimitKind;

/// Longest a refusal of an unwindowed limit is believed (a grant, a policy change or the
/// next demand's answer lift it before).
pub const MAX_REFUSAL: Duration = Duration::from_secs(86_400);

/// What a refusal without a time of its own is taken to last for an unwindowed limit: about
/// a lease ttl, when leases other sidecars hold come back.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(30);

/// Shortest soft hint: a lease may land at the sidecar's next tick.
pub const MIN_SOFT: Duration = Duration::from_millis(10);

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The end (unix ms) of the window of a windowed limit `kind` at `now_ms`.
fn window_end_ms(kind: LimitKind, now_ms: u64) -> Option<u64> {
    let end = kind.horizon()?.window_end(now_ms / 1000)?;
    end.checked_mul(1000)
}

/// Until when (unix ms) a refusal of a limit of `kind` stands, the authority having said
/// `retry_unix_ms` (0: no time given) at `now_ms`. A windowed limit's refusal is believed
/// up to the window's end (so a spent monthly quota denies until the month resets, not a
/// day); another's up to [`MAX_REFUSAL`]. Without a time: the window's end, or
/// `lease_ttl`.
pub fn refusal_until(kind: LimitKind, retry_unix_ms: u64, now_ms: u64, lease_ttl: Duration) -> u64 {
    let window_end = window_end_ms(kind, now_ms);
    let cap = match window_end {
        Some(end) => end,
        None => now_ms.saturating_add(ms(MAX_REFUSAL)),
    };
    let asked = if retry_unix_ms > now_ms {
        retry_unix_ms
    } else {
        window_end.unwrap_or_else(|| now_ms.saturating_add(ms(lease_ttl)))
    };
    asked.min(cap)
}

/// The retry hint of a dry lane bound by a limit of `kind` that no refusal marks: the time
/// until the unanswered lease request is answered or asked again (`demand_left`; `None`:
/// none in flight, one goes out at the next tick), or the window's end if it comes first.
pub fn soft_hint(kind: LimitKind, now_ms: u64, demand_left: Option<Duration>) -> Duration {
    let wait = demand_left.unwrap_or(MIN_SOFT).max(MIN_SOFT);
    match window_end_ms(kind, now_ms) {
        Some(end) => wait.min(Duration::from_millis(end.saturating_sub(now_ms)).max(MIN_SOFT)),
        None => wait,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_core::{Horizon, Initiator, Tier};

    /// 2026-03-10 12:00:00 UTC.
    const NOW: u64 = 1_773_144_000_000;
    /// 2026-04-01 00:00:00 UTC.
    const APRIL: u64 = 1_775_001_600_000;

    #[test]
    fn a_spent_monthly_quota_denies_until_the_month_resets() {
        let month = LimitKind::TenantWindow(Horizon::Month);
        // The authority says the window's end: believed, though it is three weeks away.
        assert_eq!(refusal_until(month, APRIL, NOW, DEFAULT_LEASE_TTL), APRIL);
        // No time given: the window's end. Past the window's end: capped there.
        assert_eq!(refusal_until(month, 0, NOW, DEFAULT_LEASE_TTL), APRIL);
        assert_eq!(
            refusal_until(month, APRIL + 86_400_000, NOW, DEFAULT_LEASE_TTL),
            APRIL
        );
        let agent_minute = LimitKind::Agent(Horizon::Minute);
        assert_eq!(
            refusal_until(agent_minute, 0, NOW + 15_000, DEFAULT_LEASE_TTL),
            NOW + 60_000
        );
        let tier_hour = LimitKind::TierWindow(Tier::Background, Horizon::Hour);
        assert_eq!(
            refusal_until(tier_hour, 0, NOW, DEFAULT_LEASE_TTL),
            NOW + 3_600_000
        );
        let init_day = LimitKind::InitiatorWindow(Initiator::Agent, Horizon::Day);
        assert_eq!(
            refusal_until(init_day, 0, NOW, DEFAULT_LEASE_TTL),
            NOW + 12 * 3_600_000
        );
    }

    #[test]
    fn a_dry_wallet_denies_until_leases_can_come_back() {
        for kind in [LimitKind::TenantWallet, LimitKind::HardCap, LimitKind::Task] {
            // The authority's time (a lease ttl), as said.
            assert_eq!(
                refusal_until(kind, NOW + 45_000, NOW, DEFAULT_LEASE_TTL),
                NOW + 45_000
            );
            // None given: one lease ttl. Absurd: a day at most.
            assert_eq!(
                refusal_until(kind, 0, NOW, Duration::from_secs(20)),
                NOW + 20_000
            );
            assert_eq!(
                refusal_until(kind, u64::MAX, NOW, DEFAULT_LEASE_TTL),
                NOW + 86_400_000
            );
        }
    }

    #[test]
    fn a_soft_hint_is_the_lease_answer_or_the_window_end() {
        let wallet = LimitKind::TenantWallet;
        assert_eq!(
            soft_hint(wallet, NOW, Some(Duration::from_millis(400))),
            Duration::from_millis(400)
        );
        assert_eq!(soft_hint(wallet, NOW, None), MIN_SOFT);
        assert_eq!(soft_hint(wallet, NOW, Some(Duration::ZERO)), MIN_SOFT);
        // A minute window that rolls in 120 ms: its end comes before the answer.
        let minute = LimitKind::TenantWindow(Horizon::Minute);
        let near_end = NOW + 59_880;
        assert_eq!(
            soft_hint(minute, near_end, Some(Duration::from_millis(400))),
            Duration::from_millis(120)
        );
        assert_eq!(
            soft_hint(minute, NOW, Some(Duration::from_millis(400))),
            Duration::from_millis(400)
        );
    }
}
