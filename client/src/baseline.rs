//! The shared-counter baseline the lanes design is measured against: one word per
//! limit, shared by every thread, and a reservation is one CAS per limit (undone in
//! reverse if a later limit refuses). Correct and simple, but every reservation writes
//! every limit's cache line, so threads contend on them.

use crate::sync::{ACQ_REL, AtomicU64, RELAXED, word};

/// A set of limits as shared counters.
#[derive(Debug)]
pub struct SharedCounters {
    limits: Box<[Padded]>,
}

/// One counter on its own pair of cache lines.
#[derive(Debug)]
#[repr(align(128))]
struct Padded(AtomicU64);

impl SharedCounters {
    /// One counter per limit, each starting at the given remaining budget.
    pub fn new(budgets: &[u64]) -> SharedCounters {
        SharedCounters {
            limits: budgets.iter().map(|b| Padded(word(*b))).collect(),
        }
    }

    /// Remaining budget of limit `i` (`None` if there is no such limit).
    pub fn remaining(&self, i: usize) -> Option<u64> {
        self.limits.get(i).map(|p| p.0.load(RELAXED))
    }

    /// Takes `amount` from every limit, or from none: returns the index of the first
    /// limit that lacked it.
    #[inline]
    pub fn reserve(&self, amount: u64) -> Result<(), usize> {
        for (i, p) in self.limits.iter().enumerate() {
            let mut cur = p.0.load(RELAXED);
            loop {
                if cur < amount {
                    for q in &self.limits[..i] {
                        q.0.fetch_add(amount, ACQ_REL);
                    }
                    return Err(i);
                }
                match p
                    .0
                    .compare_exchange_weak(cur, cur - amount, ACQ_REL, RELAXED)
                {
                    Ok(_) => break,
                    Err(now) => cur = now,
                }
            }
        }
        Ok(())
    }

    /// Settles a reservation of `reserved` that cost `actual` (`actual <= reserved`):
    /// one fetch_add per limit for the difference.
    #[inline]
    pub fn commit(&self, reserved: u64, actual: u64) {
        let back = reserved.saturating_sub(actual);
        if back > 0 {
            for p in self.limits.iter() {
                p.0.fetch_add(back, ACQ_REL);
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn all_or_nothing() {
        let c = SharedCounters::new(&[100, 50, 100]);
        assert_eq!(c.reserve(40), Ok(()));
        assert_eq!(c.reserve(40), Err(1));
        assert_eq!(c.remaining(0), Some(60));
        assert_eq!(c.remaining(1), Some(10));
        c.commit(40, 30);
        assert_eq!(c.remaining(2), Some(70));
        assert_eq!(c.remaining(3), None);
    }
}
