//! Tasks: a named budget shared by every process and pod working on one piece of work
//! (a ticket, an agent run), and what was posted against it.
//!
//! **Invariant.** A task's terms are set once, by its first registration
//! ([`crate::Ledger::open_task`]); a later registration with the same terms changes
//! nothing, and one with other terms changes nothing either and is counted in
//! `conflicts`. Its counters (`spent`, `calls`, `work_units`) move only with the usage
//! postings that name it, in the same transaction, so they always equal what its postings
//! add up to. A task is completed once: the first posted completion record (one Agentic
//! Work Unit) sets `completed_at`, and later completion records of it count no further
//! work unit.
//!
//! The ledger records; the authority enforces: it leases a task's budget like a window
//! (never past `budget`), and leases nothing more once the task is closed (completed,
//! `max_calls` calls posted, or its budget spent).

use serde::{Deserialize, Serialize};
use tollgate_core::Credits;

use crate::clock::Timestamp;
use crate::ids::TenantId;

/// Longest task id, in bytes.
pub const MAX_TASK_ID_LEN: usize = 128;

/// What a task may spend, set by its first registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TaskTerms {
    /// Credits the task may spend in all (> 0).
    pub budget: Credits,
    /// Calls the task may make in all; `None`: no limit on calls.
    pub max_calls: Option<u64>,
}

/// A task as the ledger keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRow {
    /// Tenant.
    pub tenant: TenantId,
    /// Task id (1 to [`MAX_TASK_ID_LEN`] bytes).
    pub task: String,
    /// Its terms; `None` when usage naming it arrived before (or without) a registration.
    pub terms: Option<TaskTerms>,
    /// When it was registered, if it was.
    pub opened_at: Option<Timestamp>,
    /// When it was first seen (registration or usage).
    pub first_at: Timestamp,
    /// When anything last happened to it.
    pub last_at: Timestamp,
    /// Credits posted against it (the authority's rating).
    pub spent: Credits,
    /// Calls posted against it (completion records not counted).
    pub calls: u64,
    /// Agentic Work Units counted for it (0 or 1).
    pub work_units: u64,
    /// When its first completion record was posted.
    pub completed_at: Option<Timestamp>,
    /// Registrations whose terms differed from the first one's (ignored).
    pub conflicts: u64,
}

/// Why no more may be leased for a task, if none may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskClosed {
    /// Its completion record was posted.
    Completed,
    /// `max_calls` calls were posted.
    MaxCalls,
    /// Its budget is spent (posted usage reached it).
    Budget,
}

impl TaskRow {
    /// A task first seen now, without terms.
    pub fn new(tenant: TenantId, task: String, now: Timestamp) -> TaskRow {
        TaskRow {
            tenant,
            task,
            terms: None,
            opened_at: None,
            first_at: now,
            last_at: now,
            spent: Credits::ZERO,
            calls: 0,
            work_units: 0,
            completed_at: None,
            conflicts: 0,
        }
    }

    /// Why the task may lease nothing more, `None` if it may.
    pub fn closed(&self) -> Option<TaskClosed> {
        if self.completed_at.is_some() {
            return Some(TaskClosed::Completed);
        }
        let terms = self.terms?;
        if terms.max_calls.is_some_and(|m| self.calls >= m) {
            return Some(TaskClosed::MaxCalls);
        }
        (self.spent >= terms.budget).then_some(TaskClosed::Budget)
    }
}

/// What a registration did ([`crate::Ledger::open_task`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskOpened {
    /// First registration: these terms are the task's.
    Created,
    /// Registered before with the same terms (another pod, a restarted sidecar).
    Same,
    /// Registered before with other terms, which stay; this registration was counted as
    /// a conflict and not applied.
    Conflict {
        /// The terms in force.
        kept: TaskTerms,
    },
}

/// Checks a task id: 1 to [`MAX_TASK_ID_LEN`] bytes, no control characters.
pub fn valid_task_id(task: &str) -> bool {
    !task.is_empty() && task.len() <= MAX_TASK_ID_LEN && !task.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_closes_on_completion_calls_or_budget() {
        let t = TenantId::new("acme").unwrap();
        let mut row = TaskRow::new(t, "ticket-1".into(), 5);
        assert_eq!(row.closed(), None, "no terms: nothing to enforce yet");
        row.terms = Some(TaskTerms {
            budget: Credits::from_credits(5).unwrap(),
            max_calls: Some(3),
        });
        row.calls = 2;
        row.spent = Credits(4_999_999);
        assert_eq!(row.closed(), None);
        row.calls = 3;
        assert_eq!(row.closed(), Some(TaskClosed::MaxCalls));
        row.calls = 0;
        row.spent = Credits::from_credits(5).unwrap();
        assert_eq!(row.closed(), Some(TaskClosed::Budget));
        row.completed_at = Some(9);
        assert_eq!(row.closed(), Some(TaskClosed::Completed));
        assert!(valid_task_id("ticket-4711"));
        assert!(!valid_task_id(""));
        assert!(!valid_task_id("a\nb"));
        assert!(!valid_task_id(&"x".repeat(129)));
    }
}
