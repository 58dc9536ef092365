//! Per-lane reconciliation of usage records with the lane's consumption totals, so that no
//! credit goes unreported when per-call detail is lost.
//!
//! # Invariant
//!
//! For every lane, everything its agents committed (`consumed + overrun`, cumulative words in
//! the region) is reported to the authority exactly once: as individual records, or, for
//! records whose detail was lost, as one aggregate record (`aggregate = true`, `calls` = how
//! many were lost). Detail is lost when a ring was full (the client counts it in the lane's
//! `lost` word); a gap in the records' sequence numbers is counted too, as a safety net (the
//! sidecar frees ring space only once a batch is in the outbox, so a crash between draining
//! and writing no longer makes one).
//!
//! # How
//!
//! `reported` is the sum of the amounts the sidecar has put into batches for the lane. The
//! difference `x = (consumed + overrun) − reported` is the lost detail plus, transiently,
//! records still in the ring and a commit in progress (between its `consumed` update and its
//! ring push). Only a difference that stays the same for [`QUIET`] is reported, so the
//! transient parts never are: an agent thread would have to stop in the middle of a commit for
//! that long (a dead agent's half-done commit is finished by reclaim well within it).
//!
//! `reported`, `lost_seen` and `next_seq` travel with every batch in the outbox and are saved
//! in `reported.json` before an acknowledged batch is deleted, so a restarted sidecar resumes
//! from exactly what it had reported.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long a difference must stay unchanged before it is reported as lost detail.
pub const QUIET: Duration = Duration::from_secs(2);

/// What the outbox and `reported.json` keep per lane.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cursor {
    /// Sum of the amounts reported for the lane (records and aggregates), micro-credits.
    pub reported: u64,
    /// The lane's `lost` counter already accounted for.
    pub lost_seen: u64,
    /// The ring sequence number of the next record expected.
    pub next_seq: u64,
}

impl Cursor {
    /// Field-wise maximum (every field only grows).
    pub fn merge(&mut self, o: &Cursor) {
        self.reported = self.reported.max(o.reported);
        self.lost_seen = self.lost_seen.max(o.lost_seen);
        self.next_seq = self.next_seq.max(o.next_seq);
    }
}

/// An aggregate record to send for lost detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aggregate {
    /// Credits the lost records stand for.
    pub amount: u64,
    /// How many records (at least 1).
    pub calls: u64,
}

/// One lane's reconciliation state.
#[derive(Debug, Clone, Default)]
pub struct LaneLedger {
    /// Persisted part.
    pub cursor: Cursor,
    gap_calls: u64,
    last_x: u64,
    quiet_since: Option<Instant>,
}

impl LaneLedger {
    /// Resumes from a persisted cursor.
    pub fn from_cursor(cursor: Cursor) -> Self {
        LaneLedger {
            cursor,
            ..Default::default()
        }
    }

    /// Accounts for one drained record.
    pub fn record(&mut self, seq: u64, actual: u64) {
        if self.cursor.next_seq > 0 && seq > self.cursor.next_seq {
            self.gap_calls += seq - self.cursor.next_seq;
        }
        self.cursor.next_seq = self.cursor.next_seq.max(seq + 1);
        self.cursor.reported = self.cursor.reported.saturating_add(actual);
    }

    /// After a drain: `total` is the lane's `consumed + overrun`, `lost_total` its `lost`
    /// counter. Returns the aggregate to report, once the difference has been stable, or at
    /// once with `settled` (no live agent owns the lane, so nothing is in flight).
    pub fn check(&mut self, total: u64, lost_total: u64, now: Instant) -> Option<Aggregate> {
        self.check_settled(total, lost_total, now, false)
    }

    /// [`LaneLedger::check`], reporting at once when `settled`.
    pub fn check_settled(
        &mut self,
        total: u64,
        lost_total: u64,
        now: Instant,
        settled: bool,
    ) -> Option<Aggregate> {
        let x = total.saturating_sub(self.cursor.reported);
        if x == 0 {
            self.last_x = 0;
            self.quiet_since = None;
            // Lost records whose amounts were zero (free calls) carry nothing to report.
            self.cursor.lost_seen = self.cursor.lost_seen.max(lost_total);
            self.gap_calls = 0;
            return None;
        }
        if !settled {
            if x != self.last_x || self.quiet_since.is_none() {
                self.last_x = x;
                self.quiet_since = Some(now);
                return None;
            }
            if now.duration_since(self.quiet_since?) < QUIET {
                return None;
            }
        }
        let calls = lost_total.saturating_sub(self.cursor.lost_seen) + self.gap_calls;
        self.cursor.reported += x;
        self.cursor.lost_seen = self.cursor.lost_seen.max(lost_total);
        self.gap_calls = 0;
        self.last_x = 0;
        self.quiet_since = None;
        Some(Aggregate {
            amount: x,
            calls: calls.max(1),
        })
    }
}

/// Loads `reported.json` (missing = empty).
pub fn load(path: &Path) -> BTreeMap<u32, Cursor> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Saves `reported.json` atomically.
pub fn save(path: &Path, cursors: &BTreeMap<u32, Cursor>) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec(cursors).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_differences_are_not_reported() {
        let mut l = LaneLedger::default();
        let t0 = Instant::now();
        l.record(1, 100);
        // a commit in progress: consumed moved, the record is not pushed yet
        assert_eq!(l.check(150, 0, t0), None);
        l.record(2, 50);
        assert_eq!(l.check(150, 0, t0 + QUIET * 2), None);
    }

    #[test]
    fn lost_detail_is_reported_once_after_it_stays() {
        let mut l = LaneLedger::default();
        let t0 = Instant::now();
        l.record(1, 100);
        // two records lost to a full ring: 70 credits, lost counter 2
        assert_eq!(l.check(170, 2, t0), None);
        assert_eq!(l.check(170, 2, t0 + QUIET / 2), None);
        assert_eq!(
            l.check(170, 2, t0 + QUIET),
            Some(Aggregate {
                amount: 70,
                calls: 2
            })
        );
        assert_eq!(l.check(170, 2, t0 + QUIET * 3), None, "reported once");
        // the lane goes on: nothing more to report
        l.record(2, 30);
        assert_eq!(l.check(200, 2, t0 + QUIET * 4), None);
    }

    #[test]
    fn a_crash_gap_in_sequence_numbers_counts_the_lost_calls() {
        let mut l = LaneLedger::from_cursor(Cursor {
            reported: 100,
            lost_seen: 0,
            next_seq: 2,
        });
        let t0 = Instant::now();
        // records 2..=4 were drained by the crashed sidecar and never batched
        l.record(5, 10);
        assert_eq!(l.check(140, 0, t0), None);
        assert_eq!(
            l.check(140, 0, t0 + QUIET),
            Some(Aggregate {
                amount: 30,
                calls: 3
            })
        );
    }

    #[test]
    fn a_settled_lane_reports_at_once() {
        let mut l = LaneLedger::default();
        l.record(1, 10);
        assert_eq!(
            l.check_settled(25, 1, Instant::now(), true),
            Some(Aggregate {
                amount: 15,
                calls: 1
            })
        );
    }

    #[test]
    fn a_moving_difference_restarts_the_quiet_period() {
        let mut l = LaneLedger::default();
        let t0 = Instant::now();
        assert_eq!(l.check(10, 1, t0), None);
        assert_eq!(l.check(20, 1, t0 + QUIET), None);
        assert_eq!(
            l.check(20, 1, t0 + QUIET * 2),
            Some(Aggregate {
                amount: 20,
                calls: 1
            })
        );
    }

    #[test]
    fn cursors_merge_by_maximum_and_persist() {
        let mut a = Cursor {
            reported: 5,
            lost_seen: 2,
            next_seq: 9,
        };
        a.merge(&Cursor {
            reported: 7,
            lost_seen: 1,
            next_seq: 3,
        });
        assert_eq!(
            a,
            Cursor {
                reported: 7,
                lost_seen: 2,
                next_seq: 9
            }
        );
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("reported.json");
        assert!(load(&p).is_empty());
        let mut m = BTreeMap::new();
        m.insert(3u32, a);
        save(&p, &m).unwrap();
        assert_eq!(load(&p), m);
    }
}
