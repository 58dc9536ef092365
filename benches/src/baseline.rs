//! The shared-counter baseline: one compare-and-swap per limit on shared words.
//!
//! This is the simpler design DESIGN §5 measures the lane design against: every limit on a call
//! (4 limits and a task budget here) is one shared `u64` of available credits, each on its own
//! 128-byte block (two cache lines, so the adjacent-line prefetcher does not couple them), laid
//! out as a region in mapped memory would be. A reservation debits every word with a CAS loop,
//! all-or-nothing (a failed word rolls back the ones already debited); the tier's floor is
//! checked in the same CAS (a lower tier may not take a pool below its floor). A commit returns
//! `reserved - actual` to every word with one `fetch_add` each.
//!
//! So one reserve + commit is 10 atomic read-modify-writes on 5 shared lines; with two threads
//! every one of those lines bounces between the cores, which is what the lane design avoids.
//!
//! The words live in this process's heap: the atomics cost the same as on a mapped file (the
//! cache does not know the difference), and the benches crate may not use `unsafe` to map a
//! file. Two-process figures for this baseline therefore need a mapped version from
//! tollgate-client (see the report).

use std::sync::atomic::{AtomicU64, Ordering};

/// One shared word on its own pair of cache lines.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Word(AtomicU64);

/// Why a baseline reservation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The limit at this index (0-based, in the order given at construction) had too little.
    #[error("limit {0} has too few credits left (above its floor) for this reservation")]
    Limit(usize),
    /// The task budget had too little.
    #[error("the task budget has too few credits left for this reservation")]
    Task,
}

/// Shared counters for a fixed set of limits plus one task budget.
#[derive(Debug)]
pub struct SharedCounters {
    limits: Box<[Word]>,
    task: Word,
}

/// A held amount, to be committed with the actual cost.
#[derive(Debug)]
#[must_use = "a reservation that is dropped keeps its credits: commit it"]
pub struct Hold<'a> {
    counters: &'a SharedCounters,
    amount: u64,
}

impl SharedCounters {
    /// `limits` words each holding `per_limit` credits, and a task budget of `task` credits.
    pub fn new(limits: usize, per_limit: u64, task: u64) -> Self {
        Self {
            limits: (0..limits)
                .map(|_| Word(AtomicU64::new(per_limit)))
                .collect(),
            task: Word(AtomicU64::new(task)),
        }
    }

    /// Available credits of limit `i`, or `None` if there is no such limit.
    pub fn available(&self, i: usize) -> Option<u64> {
        self.limits.get(i).map(|w| w.0.load(Ordering::Acquire))
    }

    /// Available credits of the task budget.
    pub fn task_available(&self) -> u64 {
        self.task.0.load(Ordering::Acquire)
    }

    /// Debits `amount` from every limit (keeping `floor` in each) and from the task budget,
    /// all or nothing.
    pub fn reserve(&self, amount: u64, floor: u64) -> Result<Hold<'_>, Refused> {
        let need = amount.saturating_add(floor);
        for (i, word) in self.limits.iter().enumerate() {
            if !debit(&word.0, amount, need) {
                self.refund_limits(i, amount);
                return Err(Refused::Limit(i));
            }
        }
        if !debit(&self.task.0, amount, amount) {
            self.refund_limits(self.limits.len(), amount);
            return Err(Refused::Task);
        }
        Ok(Hold {
            counters: self,
            amount,
        })
    }

    fn refund_limits(&self, upto: usize, amount: u64) {
        for word in &self.limits[..upto] {
            word.0.fetch_add(amount, Ordering::AcqRel);
        }
    }
}

/// One CAS loop: take `amount` if at least `need` is there.
fn debit(word: &AtomicU64, amount: u64, need: u64) -> bool {
    let mut cur = word.load(Ordering::Relaxed);
    loop {
        if cur < need {
            return false;
        }
        match word.compare_exchange_weak(cur, cur - amount, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => return true,
            Err(seen) => cur = seen,
        }
    }
}

impl Hold<'_> {
    /// Settles the hold at `actual` (at most the held amount in this baseline): the rest goes
    /// back to every word. Returns the amount returned.
    pub fn commit(self, actual: u64) -> u64 {
        let back = self.amount.saturating_sub(actual);
        if back > 0 {
            for word in self.counters.limits.iter() {
                word.0.fetch_add(back, Ordering::AcqRel);
            }
            self.counters.task.0.fetch_add(back, Ordering::AcqRel);
        }
        back
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_commit_moves_exactly_the_actual_cost() {
        let c = SharedCounters::new(4, 1_000, 500);
        let h = c.reserve(100, 0).unwrap();
        assert_eq!(c.available(3), Some(900));
        assert_eq!(h.commit(30), 70);
        for i in 0..4 {
            assert_eq!(c.available(i), Some(970));
        }
        assert_eq!(c.task_available(), 470);
    }

    #[test]
    fn refusal_is_all_or_nothing_and_names_the_limit() {
        let c = SharedCounters::new(4, 1_000, 5_000);
        // The floor keeps 950 in every limit: 100 does not fit in the first one.
        assert_eq!(c.reserve(100, 950).unwrap_err(), Refused::Limit(0));
        let c = SharedCounters::new(4, 1_000, 50);
        assert_eq!(c.reserve(100, 0).unwrap_err(), Refused::Task);
        for i in 0..4 {
            assert_eq!(c.available(i), Some(1_000), "limit {i} was rolled back");
        }
    }

    #[test]
    fn two_threads_never_overspend() {
        let c = SharedCounters::new(4, 10_000, 1_000_000);
        let granted = std::thread::scope(|s| {
            let hs: Vec<_> = (0..2)
                .map(|_| {
                    s.spawn(|| {
                        let mut n = 0u64;
                        while let Ok(h) = c.reserve(7, 0) {
                            let _ = h.commit(7);
                            n += 1;
                        }
                        n
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
        });
        assert_eq!(granted * 7 + c.available(0).unwrap(), 10_000);
        assert!(c.available(0).unwrap() < 7);
    }
}
