//! Typed errors: each says what is wrong and what to do about it.

use std::time::Duration;

use tollgate_core::{Credits, Horizon, LimitKind, Tier};

/// Why `Gate::attach` (or `Region::open_owner`) could not use a region file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttachError {
    /// No file at the path.
    #[error("no region at {path}: is the tollgate sidecar running and TOLLGATE_REGION set?")]
    NotFound {
        /// The path tried.
        path: String,
    },
    /// The creator has not finished initialising the region (version word still 0).
    #[error("region is still being created by the sidecar: retry in a moment")]
    Unfinished,
    /// The file does not start with the Tollgate magic.
    #[error("not a tollgate region (magic {found:#018x}): check the path")]
    ForeignMagic {
        /// The first word of the file.
        found: u64,
    },
    /// The region was created by an incompatible version of tollgate.
    #[error(
        "region layout version {found}, this client reads version {supported}: upgrade the client or the sidecar so they match"
    )]
    VersionMismatch {
        /// Version in the file.
        found: u64,
        /// Version this crate supports.
        supported: u64,
    },
    /// The file is shorter than its header says (or than a header).
    #[error("region file is truncated: {actual} bytes, expected {expected}; restart the sidecar")]
    Truncated {
        /// Bytes the header (or the layout) requires.
        expected: u64,
        /// Bytes in the file.
        actual: u64,
    },
    /// The header is inconsistent.
    #[error("region is corrupt ({what}): restart the sidecar to recreate it")]
    Corrupt {
        /// Which check failed.
        what: &'static str,
    },
    /// The region's holders folder (where each agent process keeps the lock that tells
    /// the sidecar it is alive) is missing or not writable by this process.
    #[error(
        "cannot register with the sidecar in {path}: {source}; the agent needs write access to the region's folder (a shared group, e.g. the pod's fsGroup)"
    )]
    Holders {
        /// The holders folder.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
    /// The agent name (`GateOptions::agent` or `TOLLGATE_AGENT`) cannot be used.
    #[error("cannot use the agent name {name:?}: {why}")]
    AgentName {
        /// The name.
        name: String,
        /// What is wrong with it.
        why: String,
    },
    /// The file could not be opened or mapped.
    #[error("cannot open or map the region: {0}")]
    Io(#[from] std::io::Error),
}

/// Why `Region::create` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CreateError {
    /// The configuration asks for something the layout cannot hold.
    #[error("invalid region configuration: {0}")]
    Config(String),
    /// Creating, sizing, touching or mapping the file failed (a full tmpfs fails here).
    #[error("cannot create the region file: {0}; check the tmpfs size and permissions")]
    Io(#[from] std::io::Error),
}

/// A reservation refused because a limit has no budget left for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// The binding limit, as the sidecar recorded it for this lane; `None` when the lane's
    /// allowance ran out and the sidecar has not (yet) named a limit: retry.
    pub limit: Option<LimitKind>,
    /// The horizon of the binding limit, if it is windowed.
    pub horizon: Option<Horizon>,
    /// When a retry can succeed, with per-tier jitter (lower tiers wait longer).
    pub retry_after: Duration,
    /// The tier of the refused call.
    pub tier: Tier,
    /// What the call needed.
    pub needed: Credits,
}

impl std::fmt::Display for Denial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.limit {
            Some(l) => write!(f, "denied by the {l}")?,
            None => write!(f, "denied: the lane's allowance is exhausted")?,
        }
        write!(
            f,
            " ({} needed, {} tier); retry after {} ms",
            self.needed,
            self.tier,
            self.retry_after.as_millis()
        )
    }
}

/// Why `Gate::reserve` did not return a reservation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReserveError {
    /// A limit is out of budget; see [`Denial`] for which and when to retry.
    #[error("{0}")]
    Denied(Denial),
    /// The call's task is out: its budget is spent, it made its `max_calls` calls, or it
    /// was completed. Stop the task (the tenant is fine).
    #[error("task {task:?} is out ({why}): {needed} needed, {remaining} left; stop the task")]
    TaskExhausted {
        /// The task id ("" for a [`crate::LocalTask`]).
        task: String,
        /// Which of the task's limits refused.
        why: TaskLimit,
        /// What the call needed.
        needed: Credits,
        /// What the task has left in this pod.
        remaining: Credits,
    },
    /// The lane is dry and the call asked not to wait ([`crate::Call::wait`]): the
    /// sidecar has been asked for a top-up; reserve again, waiting this time.
    #[error("the lane is waiting for a top-up from the sidecar and the call asked not to wait")]
    WouldWait,
    /// The tenant is not configured in this region.
    #[error("tenant {0:?} is not served by this sidecar: check TOLLGATE_TENANTS")]
    UnknownTenant(String),
    /// The tenant has no limits configured for this tier and initiator.
    #[error("tenant has no lane class for tier {tier} ({initiator}): configure its limits")]
    NoClass {
        /// Tier of the call.
        tier: Tier,
        /// Initiator of the call.
        initiator: tollgate_core::Initiator,
    },
    /// Every lane in the region is claimed.
    #[error("no free lane in the region: raise RegionConfig::lanes or reduce agent threads")]
    NoFreeLane,
    /// Every reservation slot of this thread's lanes is in use.
    #[error("too many outstanding reservations on this thread: commit or cancel some")]
    TooManyOutstanding,
    /// The call could not be rated.
    #[error("cannot rate the call: {0}")]
    Rating(#[from] tollgate_core::RatingError),
    /// The call costs more than a lane can ever hold.
    #[error("call too large: {0} exceeds what one reservation can hold")]
    TooLarge(Credits),
    /// The region's price book is missing or unreadable.
    #[error("no usable price book in the region: {0}")]
    PriceBook(String),
    /// This process could not (re-)register its liveness lock in the region's holders
    /// folder, so it cannot claim a lane.
    #[error("cannot register this process with the sidecar: {0}")]
    Liveness(String),
    /// An agent or feature name, or a task id, cannot be used.
    #[error("invalid name {name:?}: {why}")]
    InvalidName {
        /// The name.
        name: String,
        /// What is wrong with it.
        why: String,
    },
    /// The region's name table is full (every distinct agent and feature name takes an
    /// entry for the region's life).
    #[error(
        "the region's name table is full ({capacity} names): use fewer distinct agent and feature names, or raise the sidecar's --names"
    )]
    NameTableFull {
        /// Names the table holds.
        capacity: usize,
    },
    /// The region's task table is full (tasks open at once in the pod).
    #[error(
        "the region's task table is full ({capacity} open tasks): complete tasks, or raise the sidecar's --tasks"
    )]
    TaskTableFull {
        /// Tasks the table holds.
        capacity: usize,
    },
}

/// Which limit of a named task refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TaskLimit {
    /// Its budget is spent.
    Budget,
    /// It made its `max_calls` calls.
    MaxCalls,
    /// It was completed.
    Completed,
    /// The sidecar closed it (idle for long, or its tenant's policy is gone): open it
    /// again to go on.
    Closed,
}

impl std::fmt::Display for TaskLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TaskLimit::Budget => "budget spent",
            TaskLimit::MaxCalls => "max calls reached",
            TaskLimit::Completed => "completed",
            TaskLimit::Closed => "closed by the sidecar",
        })
    }
}

/// Why `Reservation::commit` failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommitError {
    /// The usage could not be rated; the full reservation was charged instead.
    #[error("cannot rate the usage, the full reservation was charged: {0}")]
    Rating(#[from] tollgate_core::RatingError),
    /// The slot was no longer held by this reservation: the sidecar reclaimed the lane,
    /// which happens only when this process's liveness lock was released or its holder
    /// file deleted. Nothing was charged; the reservation's credits went back.
    #[error(
        "reservation was reclaimed by the sidecar (this process looked dead to it); nothing was charged"
    )]
    Reclaimed,
}

/// Why a sidecar-side operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SidecarError {
    /// An index past the configured count.
    #[error("{what} index {index} out of range (region has {count})")]
    OutOfRange {
        /// Which table.
        what: &'static str,
        /// Index given.
        index: usize,
        /// Entries in the table.
        count: usize,
    },
    /// A pool lacks the credits for a top-up (above the tier's floor).
    #[error("pool {pool} ({limit}) has too little available for a top-up of {needed}")]
    Insufficient {
        /// The binding pool.
        pool: usize,
        /// Its limit.
        limit: LimitKind,
        /// What was asked.
        needed: Credits,
    },
    /// The lane is not claimed by a live agent, or has no class.
    #[error("lane {0} is not in use")]
    LaneNotInUse(usize),
    /// The lane's owner is alive: it cannot be reclaimed.
    #[error("lane {0} belongs to a live process")]
    OwnerAlive(usize),
    /// A value does not fit the region's encoding.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Arithmetic would overflow a counter (a corrupt region or absurd amounts).
    #[error("counter overflow in {0}")]
    Overflow(&'static str),
    /// A word read from the region is out of range (an agent scribbled on it).
    #[error("region word out of range: {0}")]
    Corrupt(&'static str),
}
