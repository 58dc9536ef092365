//! Named tasks, as the control loop serves them.
//!
//! An agent opens a task in the region's task table (`tollgate_client::Gate::open_task`).
//! Each pass the sidecar registers the entries it has not seen: a pool for the task's limit
//! (`LimitKey{scope: Task, task}`), a `TaskOpen` to the authority (its terms: budget and
//! `max_calls`), then demands and leases like any limit; the entry's status says
//! `Pending` until the first lease (`Open`), `Spent` when the authority refuses more
//! (`TASK_SPENT`; `OutOfCalls` instead when the pod has given every call), `Closed` when
//! it is completed or idle. A task lane is carved from the task's pool with the rest of
//! its limits ([`crate::owner::Owner::lane_pools`]), and gets its calls from the task's
//! `max_calls` a few at a time ([`Core::feed_calls`]). A completed task's pool is retired
//! like a deleted limit's (credits back, leases closed), and its entry freed once no lane
//! is keyed by it. A task no lane used for [`IDLE_CLOSE`] is closed the same way.
//!
//! Two entries may name one task (two processes opened it at the same instant, one
//! preempted mid-write): they share the task's limit and pool, and its calls are counted
//! over both.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tollgate_client::{TaskEntry, TaskRef, TaskStatus};
use tollgate_proto::v1::{LimitKey, SessionUp, TaskOpen, session_up};

use super::{Core, LimitRt};
use crate::owner::LiveLane;

/// A task no lane was keyed by for this long is closed (its leases returned).
pub const IDLE_CLOSE: Duration = Duration::from_secs(300);

/// Most calls given to a lane at once.
const CALLS_CHUNK: u64 = 16;

/// The tasks the sidecar registered, by entry.
#[derive(Debug, Default)]
pub(super) struct TaskBook {
    entries: BTreeMap<TaskRef, TaskRt>,
}

#[derive(Debug)]
struct TaskRt {
    canonical: String,
    key: LimitKey,
    budget: u64,
    max_calls: u32,
    /// Last time a lane was keyed by it.
    last_lane: Instant,
    /// Completed or idle: its pool is retired, its entry freed once no lane is keyed by it.
    closing: bool,
}

impl TaskBook {
    /// Entries of the task whose limit is `canonical`.
    fn of(&self, canonical: &str) -> impl Iterator<Item = (&TaskRef, &TaskRt)> {
        self.entries
            .iter()
            .filter(move |(_, t)| t.canonical == canonical)
    }

    /// Whether `canonical` is a task's limit this sidecar serves.
    pub(super) fn serves(&self, canonical: &str) -> bool {
        self.of(canonical).next().is_some()
    }
}

impl Core {
    /// One pass over the task table: registers new tasks, closes completed and idle ones,
    /// frees the entries of closed ones no lane is keyed by any more.
    pub(super) fn tasks_pass(&mut self) {
        let entries = self.region.owner.region().tasks();
        if entries.is_empty() && self.tasks.entries.is_empty() {
            return;
        }
        let keyed: Vec<TaskRef> = self.region.owner.task_lanes();
        let now = tollgate_core::clock::now();
        for e in &entries {
            if keyed.contains(&e.task)
                && let Some(t) = self.tasks.entries.get_mut(&e.task)
            {
                t.last_lane = now;
            }
            match self.tasks.entries.get(&e.task) {
                None => self.register(e),
                Some(t) if t.closing => {}
                Some(t) if e.completed || now.duration_since(t.last_lane) >= IDLE_CLOSE => {
                    let canonical = t.canonical.clone();
                    self.close_task(&canonical, e.completed);
                }
                Some(_) => {}
            }
        }
        // Closed entries no lane is keyed by are freed; entries gone from the table are
        // forgotten.
        let closing: Vec<TaskRef> = self
            .tasks
            .entries
            .iter()
            .filter(|(r, t)| t.closing && !keyed.contains(r))
            .map(|(r, _)| *r)
            .collect();
        for r in closing {
            if self.region.owner.region().free_task(r) {
                self.region.owner.task_entry_freed(r);
                tracing::debug!(task = ?r, "task entry freed");
            }
        }
        let open: Vec<TaskRef> = entries.iter().map(|e| e.task).collect();
        self.tasks.entries.retain(|r, _| open.contains(r));
        self.metrics.tasks_open.set(open.len() as i64);
    }

    /// Registers a task an agent opened: its pool, its limit, its terms to the authority.
    fn register(&mut self, e: &TaskEntry) {
        let region = self.region.owner.region();
        let Some(tenant) = self.cfg.tenants.get(usize::from(e.tenant)).cloned() else {
            tracing::warn!(
                task = e.id,
                tenant = e.tenant,
                "a task names no tenant this sidecar serves: closed"
            );
            region.set_task_status(e.task, TaskStatus::Closed);
            return;
        };
        if e.completed {
            region.set_task_status(e.task, TaskStatus::Closed);
        }
        let key = LimitKey::task(tenant.as_str(), e.id.as_str());
        let canonical = key.canonical();
        self.region.owner.remember_task_id(e.task, &e.id);
        let pool = match self.region.owner.register_task(&key) {
            Ok(p) => p,
            Err(err) => {
                // Stays new: registered when a pool is free (a task closes).
                tracing::warn!(task = e.id, tenant, error = %err, "no pool for a task yet");
                return;
            }
        };
        let region = self.region.owner.region();
        let _ = region.set_task_pool(e.task, pool);
        let served = self.region.limits.contains_key(&canonical);
        if !served {
            let consumed = self.region.owner.pool(pool).consumed;
            let rt = LimitRt::new(key.clone(), pool, consumed, self.cfg.emergency_allowance);
            self.region.limits.insert(canonical.clone(), rt);
        } else if let Some(l) = self.region.limits.get_mut(&canonical) {
            l.retiring = false;
        }
        let held = self
            .saved
            .state
            .leases
            .get(&canonical)
            .is_some_and(|b| b.remaining() > 0);
        if !e.completed {
            let status = if held {
                TaskStatus::Open
            } else {
                TaskStatus::Pending
            };
            region.set_task_status(e.task, status);
        }
        tracing::info!(
            task = e.id,
            tenant,
            budget = e.budget,
            max_calls = e.max_calls,
            pool,
            "task registered"
        );
        self.tasks.entries.insert(
            e.task,
            TaskRt {
                canonical,
                key: key.clone(),
                budget: e.budget,
                max_calls: e.max_calls,
                last_lane: tollgate_core::clock::now(),
                closing: e.completed,
            },
        );
        self.metrics.tasks_opened.inc();
        self.queue_task_open(&key, e.budget, e.max_calls);
    }

    fn queue_task_open(&mut self, key: &LimitKey, budget: u64, max_calls: u32) {
        if self.link.up.is_none() {
            return; // sent with every registered task when the session opens
        }
        self.link.up_queue.push_back(SessionUp {
            msg: Some(session_up::Msg::TaskOpen(TaskOpen {
                tenant: key.tenant.clone(),
                task: key.task.clone(),
                budget_micro: budget,
                max_calls,
            })),
        });
    }

    /// Sends every open task's terms again (a new session: the authority may not know them).
    pub(super) fn resend_task_opens(&mut self) {
        let open: Vec<(LimitKey, u64, u32)> = self
            .tasks
            .entries
            .values()
            .filter(|t| !t.closing)
            .map(|t| (t.key.clone(), t.budget, t.max_calls))
            .collect();
        for (key, budget, max_calls) in open {
            self.queue_task_open(&key, budget, max_calls);
        }
    }

    /// Stops serving a task: its entries say closed, its pool is retired (credits back to
    /// the authority, leases closed once no lane lists it).
    fn close_task(&mut self, canonical: &str, completed: bool) {
        let refs: Vec<TaskRef> = self.tasks.of(canonical).map(|(r, _)| *r).collect();
        for r in &refs {
            self.region
                .owner
                .region()
                .set_task_status(*r, TaskStatus::Closed);
            if let Some(t) = self.tasks.entries.get_mut(r) {
                t.closing = true;
            }
        }
        if self.region.owner.retire_task(canonical) {
            self.retire(canonical);
        }
        tracing::info!(task = canonical, completed, "task closed");
    }

    /// A lease for a task's limit arrived: its entries are open.
    pub(super) fn on_task_grant(&mut self, canonical: &str) {
        let refs: Vec<TaskRef> = self
            .tasks
            .of(canonical)
            .filter(|(_, t)| !t.closing)
            .map(|(r, _)| *r)
            .collect();
        for r in refs {
            self.region
                .owner
                .region()
                .set_task_status(r, TaskStatus::Open);
        }
    }

    /// The authority refused a task's limit more (`TASK_SPENT`: its budget, its calls, or
    /// its completion in another pod): its entries say out of calls when this pod has
    /// *made* every call `max_calls` allows, else spent. "Spent" means no more is coming:
    /// what this pod still holds of the task (credits, and calls given to its lanes) pays
    /// the calls it covers (the client checks the task's remaining credits against the
    /// call; a lane out of calls asks for more and [`Core::feed_calls`] says when there
    /// are none). Calls given but not made are not the end of the task: marking it out of
    /// calls then stopped tasks with calls left on their lanes.
    pub(super) fn on_task_refused(&mut self, canonical: &str) {
        let made = self.task_calls_made(canonical);
        let refs: Vec<(TaskRef, u32)> = self
            .tasks
            .of(canonical)
            .filter(|(_, t)| !t.closing)
            .map(|(r, t)| (*r, t.max_calls))
            .collect();
        for (r, max_calls) in refs {
            let status = if max_calls > 0 && made >= u64::from(max_calls) {
                TaskStatus::OutOfCalls
            } else {
                TaskStatus::Spent
            };
            self.region.owner.region().set_task_status(r, status);
        }
    }

    /// Calls made by the lanes of the task whose limit is `canonical` (live and reclaimed),
    /// over its entries.
    fn task_calls_made(&self, canonical: &str) -> u64 {
        let region = self.region.owner.region();
        self.tasks
            .of(canonical)
            .map(|(r, _)| region.task_calls(*r).made())
            .fold(0, u64::saturating_add)
    }

    /// Calls given to the lanes of the task whose limit is `canonical`, over its entries.
    fn task_calls_given(&self, canonical: &str) -> u64 {
        let region = self.region.owner.region();
        self.tasks
            .of(canonical)
            .filter_map(|(r, _)| region.task(*r))
            .map(|e| e.calls_given)
            .fold(0, u64::saturating_add)
    }

    /// Gives a live lane of a task with `max_calls` more calls when it has (almost) none
    /// left, a few at a time so that calls do not sit in idle lanes; when the task has none
    /// left to give, its entries say so.
    pub(super) fn feed_calls(&mut self, lane: &LiveLane, lanes_of_task: u64) {
        let Some(r) = lane.task else { return };
        let Some(t) = self.tasks.entries.get(&r) else {
            return;
        };
        if t.max_calls == 0 || t.closing {
            return;
        }
        let canonical = t.canonical.clone();
        let max_calls = u64::from(t.max_calls);
        let region = self.region.owner.region();
        let Ok((made, given)) = region.lane_calls(lane.lane) else {
            return;
        };
        let left_here = given.saturating_sub(made);
        let left = max_calls.saturating_sub(self.task_calls_given(&canonical));
        let chunk = (left / (2 * lanes_of_task.max(1))).clamp(1, CALLS_CHUNK);
        // Fed while one call is still left, not once it is out: the agent's next reserve
        // then finds its call there instead of waiting for the next tick.
        if left_here > (chunk / 2).max(1) {
            return;
        }
        let region = self.region.owner.region();
        if left == 0 {
            if left_here == 0 {
                region.set_task_status(r, TaskStatus::OutOfCalls);
            }
            return;
        }
        match region.give_calls(lane.lane, r, chunk.min(left)) {
            Ok(()) => self.saved.state_dirty = true,
            Err(e) => tracing::warn!(lane = lane.lane, error = %e, "cannot give a task lane calls"),
        }
    }
}
