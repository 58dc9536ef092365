//! The leases the sidecar holds on one limit, and how consumption is attributed to them.
//!
//! Both the sidecar and the authority attribute consumption FIFO: the oldest lease that has
//! not expired pays first (protocol, `sidecar.proto` §4). A lease is never spent after its
//! expiry: when it expires, what it still has is taken out of the local budget and returned
//! (closed). Consumption that arrives after that (calls reserved before the expiry and
//! committed after it) is attributed to the next lease; consumption that no lease covers is an
//! overrun, counted and reported (overruns are charged, never hidden).

use std::collections::VecDeque;

/// One lease as the sidecar tracks it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HeldLease {
    /// Authority's lease id.
    pub id: String,
    /// Granted amount (micro-credits).
    pub amount: u64,
    /// Consumption attributed to it so far.
    pub used: u64,
    /// Returned to the authority so far.
    pub returned: u64,
    /// Expiry, unix milliseconds.
    pub expires_unix_ms: u64,
}

impl HeldLease {
    /// What it can still pay for.
    pub fn remaining(&self) -> u64 {
        self.amount
            .saturating_sub(self.used)
            .saturating_sub(self.returned)
    }
}

/// A return to send to the authority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Return {
    /// Lease id.
    pub id: String,
    /// Amount handed back.
    pub amount: u64,
    /// The lease is finished.
    pub close: bool,
}

/// The leases on one limit.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct LeaseBook {
    leases: VecDeque<HeldLease>,
    /// Consumption no lease covered (overruns, or spend from the emergency allowance).
    pub unbacked: u64,
    /// Sum of every grant ever received (for conservation checks and metrics).
    pub granted_total: u64,
    /// Unix ms of the newest grant.
    pub last_grant_unix_ms: Option<u64>,
}

impl LeaseBook {
    /// An empty book.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a new lease.
    pub fn grant(&mut self, id: String, amount: u64, expires_unix_ms: u64, now_unix_ms: u64) {
        self.granted_total = self.granted_total.saturating_add(amount);
        self.last_grant_unix_ms = Some(now_unix_ms);
        self.leases.push_back(HeldLease {
            id,
            amount,
            used: 0,
            returned: 0,
            expires_unix_ms,
        });
    }

    /// Re-adds a lease after a restart (from the sidecar's state file), with its remaining.
    pub fn restore(&mut self, lease: HeldLease) {
        self.leases.push_back(lease);
    }

    /// Attributes `amount` of consumption FIFO; returns the part no lease covered.
    pub fn consume(&mut self, mut amount: u64) -> u64 {
        for l in self.leases.iter_mut() {
            if amount == 0 {
                break;
            }
            let take = amount.min(l.remaining());
            l.used += take;
            amount -= take;
        }
        self.unbacked = self.unbacked.saturating_add(amount);
        amount
    }

    /// Sum of what the unexpired leases can still pay for.
    pub fn remaining(&self) -> u64 {
        self.leases
            .iter()
            .map(HeldLease::remaining)
            .fold(0u64, u64::saturating_add)
    }

    /// What leases expiring before `deadline_unix_ms` can still pay for (they will be
    /// returned soon, so a refill should not count on them).
    pub fn expiring_before(&self, deadline_unix_ms: u64) -> u64 {
        self.leases
            .iter()
            .filter(|l| l.expires_unix_ms < deadline_unix_ms)
            .map(HeldLease::remaining)
            .fold(0u64, u64::saturating_add)
    }

    /// The earliest expiry among held leases.
    pub fn next_expiry(&self) -> Option<u64> {
        self.leases.iter().map(|l| l.expires_unix_ms).min()
    }

    /// Removes leases that expired at `now`, returning one closing [`Return`] each (amount =
    /// what was left). The caller takes that much out of the local budget.
    pub fn expire(&mut self, now_unix_ms: u64) -> Vec<Return> {
        let mut out = Vec::new();
        self.leases.retain(|l| {
            if l.expires_unix_ms <= now_unix_ms {
                out.push(Return {
                    id: l.id.clone(),
                    amount: l.remaining(),
                    close: true,
                });
                false
            } else {
                true
            }
        });
        out
    }

    /// Hands back `amount` (a revocation, a lowered cap, an idle pool): from the newest lease
    /// first, so the oldest keep paying FIFO. Fully returned leases are closed and dropped.
    /// Returns the returns to send; their sum is `min(amount, remaining())`.
    pub fn give_back(&mut self, mut amount: u64) -> Vec<Return> {
        let mut out = Vec::new();
        for l in self.leases.iter_mut().rev() {
            if amount == 0 {
                break;
            }
            let take = amount.min(l.remaining());
            if take == 0 {
                continue;
            }
            l.returned += take;
            amount -= take;
            out.push(Return {
                id: l.id.clone(),
                amount: take,
                close: l.remaining() == 0,
            });
        }
        self.leases.retain(|l| l.remaining() > 0);
        out
    }

    /// Closes every lease (graceful shutdown): returns everything still unspent.
    pub fn close_all(&mut self) -> Vec<Return> {
        self.leases
            .drain(..)
            .map(|l| Return {
                amount: l.remaining(),
                id: l.id,
                close: true,
            })
            .collect()
    }

    /// The held leases, for `Register` after an authority restart.
    pub fn held(&self) -> impl Iterator<Item = &HeldLease> {
        self.leases.iter()
    }

    /// Keeps only the leases whose ids the authority still honours; returns what the dropped
    /// ones had left (to be taken out of the local budget).
    pub fn keep_honoured(&mut self, honoured: &[String]) -> u64 {
        let mut dropped = 0u64;
        self.leases.retain(|l| {
            let keep = honoured.iter().any(|h| h == &l.id);
            if !keep {
                dropped = dropped.saturating_add(l.remaining());
            }
            keep
        });
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book() -> LeaseBook {
        let mut b = LeaseBook::new();
        b.grant("a".into(), 100, 1_000, 0);
        b.grant("b".into(), 100, 2_000, 0);
        b
    }

    #[test]
    fn consumption_is_fifo_and_overrun_counted() {
        let mut b = book();
        assert_eq!(b.consume(150), 0);
        let v: Vec<_> = b.held().map(|l| (l.id.clone(), l.used)).collect();
        assert_eq!(v, vec![("a".into(), 100), ("b".into(), 50)]);
        assert_eq!(b.consume(80), 30);
        assert_eq!(b.unbacked, 30);
        assert_eq!(b.remaining(), 0);
    }

    #[test]
    fn expiry_closes_and_returns_the_rest() {
        let mut b = book();
        b.consume(40);
        let r = b.expire(1_000);
        assert_eq!(
            r,
            vec![Return {
                id: "a".into(),
                amount: 60,
                close: true
            }]
        );
        assert_eq!(b.remaining(), 100);
        // late consumption goes to the next lease
        b.consume(10);
        assert_eq!(b.remaining(), 90);
    }

    #[test]
    fn give_back_takes_newest_first_and_conserves() {
        let mut b = book();
        b.consume(30);
        let r = b.give_back(120);
        assert_eq!(
            r,
            vec![
                Return {
                    id: "b".into(),
                    amount: 100,
                    close: true
                },
                Return {
                    id: "a".into(),
                    amount: 20,
                    close: false
                },
            ]
        );
        assert_eq!(b.remaining(), 50);
        let all = b.close_all();
        assert_eq!(
            all,
            vec![Return {
                id: "a".into(),
                amount: 50,
                close: true
            }]
        );
        assert_eq!(b.remaining(), 0);
        // granted = used + returned + remaining, exactly
        assert_eq!(b.granted_total, 200);
    }

    #[test]
    fn expiring_soon_is_counted() {
        let b = book();
        assert_eq!(b.expiring_before(1_500), 100);
        assert_eq!(b.expiring_before(999), 0);
        assert_eq!(b.expiring_before(5_000), 200);
    }

    #[test]
    fn dishonoured_leases_are_dropped() {
        let mut b = book();
        b.consume(10);
        assert_eq!(b.keep_honoured(&["b".to_string()]), 90);
        assert_eq!(b.remaining(), 100);
    }
}
