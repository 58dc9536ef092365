//! The sidecar as owner of the region: creates or re-attaches it, maps limits to pools and
//! tenants' lane classes to pools, and wraps the client crate's sidecar API in the shapes
//! the control loop ([`crate::core`]) works with.
//!
//! Pools are assigned to limits once and remembered in `pools.json` in the state folder, so
//! a restarted sidecar finds the same pool for the same limit.
//!
//! # Pool bookkeeping
//!
//! Invariant: a pool serves at most one limit, and a pool is handed to a new limit only when
//! no lane lists it and it holds nothing (`available = carved = 0`).
//!
//! * Each tenant served has its own share of the region's pools (`pools / tenants`, a fixed
//!   range of indices), so one tenant's rules can never use up the pools another tenant needs.
//!   A policy that needs more pools than its tenant has free is refused as a whole
//!   ([`ConfigureError::NoFreePool`]) and nothing of it is applied.
//! * A limit a new policy no longer has is *retired*: new lanes are no longer carved from
//!   its pool, lanes already carved from it are revoked, and the control loop gives its
//!   credits back to the authority. The pool is freed once no lane lists it (a lane's pool
//!   list is fixed until the lane is reclaimed) and it holds nothing. Until then, a live lane
//!   that still lists it is topped up as if the deleted limit were not there: the retiring
//!   pool is credited exactly the amount of the top-up (it no longer limits anything and asks
//!   the authority for nothing; the wallet pool still pays for every call).
//!
//! # Lane owners
//!
//! Records are named after the process that made them (`<sidecar>/<holder id>/lane<n>`).
//! A lane changes owner only after the sidecar reclaimed it. Right after each reclaim the
//! sidecar notes the ring position the old owner's records end at (read while the lane is
//! still free), so records drained later are named after the owner that wrote them, never
//! after the next process that claims the lane. Owners and those positions are saved in
//! `lanes.json` in the state folder, so a restarted sidecar still names (and drains) the
//! records of lanes that were released before it started.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use anyhow::Context;
use tollgate_client::{
    AttachError, LaneInfo, LaneKey, PoolCounters, PoolSpec, ReclaimReport, Region, RegionConfig,
    RegionDamage, SidecarError, TaskRef, TaskStatus, TenantSpec, UsageRecord,
};
use tollgate_core::{Credits, Horizon, Initiator, LimitKind, PriceBook, PriceBookSpec, Tier};
use tollgate_proto::batch::RecordInput;
use tollgate_proto::v1::{self, LimitKey, TenantPolicy};

use crate::config::Config;
use crate::metrics::{DenialLabels, Metrics};

/// How long an agent whose lane ran dry waits for a top-up before it denies.
pub const AGENT_MAX_WAIT: Duration = Duration::from_millis(50);

/// A live lane, as the control loop needs it.
#[derive(Debug, Clone, Copy)]
pub struct LiveLane {
    /// Lane index.
    pub lane: usize,
    /// Credits in its allowance now.
    pub allowance: u64,
    /// Consumed in total.
    pub consumed: u64,
    /// The agent ran dry and asked for more.
    pub wants_more: bool,
    /// How much it asked for (0 if it did not).
    pub asked: u64,
    /// Its tier.
    pub tier: Tier,
    /// The named task its calls spend, if any.
    pub task: Option<TaskRef>,
}

/// What draining one lane found.
#[derive(Debug, Clone)]
pub struct LaneDrain {
    /// The lane.
    pub lane: usize,
    /// Its records, names resolved.
    pub records: Vec<DrainedRecord>,
    /// Its `lost` counter.
    pub lost_total: u64,
    /// Its `consumed + overrun`, after the drain.
    pub total: u64,
    /// A live agent process owns it (a commit may be in flight).
    pub live: bool,
    /// Ring position past its records: released (ring space freed) only once they are
    /// durably in the outbox, see [`Owner::release`].
    pub upto: u64,
}

/// One drained record with its names resolved.
#[derive(Debug, Clone)]
pub struct DrainedRecord {
    /// Raw record.
    pub rec: UsageRecord,
    /// Tenant name.
    pub tenant: String,
    /// The agent's name ("" unnamed).
    pub agent_name: String,
    /// Agent instance (`<sidecar>/<holder id>/lane<n>`).
    pub agent: String,
    /// Feature name ("" none).
    pub feature: String,
    /// Task id ("" none).
    pub task: String,
    /// Model name ("" for fixed-price calls).
    pub model: String,
    /// Full price book version.
    pub book_version: u64,
    /// The most the authority can charge for it: the larger of the agent's rating and the
    /// list price of its tokens (the authority re-rates by tokens).
    pub charge_bound: u64,
}

impl DrainedRecord {
    /// The batch input for this record.
    pub fn as_input(&self, now_unix_ms: u64) -> RecordInput<'_> {
        RecordInput {
            tenant: &self.tenant,
            agent: &self.agent_name,
            agent_instance: &self.agent,
            model: &self.model,
            feature: &self.feature,
            task: &self.task,
            tier: Some(crate::convert::tier_to_wire(self.rec.tier)),
            initiator: Some(crate::convert::initiator_to_wire(self.rec.initiator)),
            input_tokens: self.rec.input_tokens,
            output_tokens: self.rec.output_tokens,
            outcomes: u64::from(self.rec.outcomes),
            price_book_version: self.book_version,
            client_rated_micro: self.rec.actual.0,
            calls: 1,
            aggregate: false,
            at_unix_ms: now_unix_ms,
            work_units: u32::from(self.rec.work_unit),
            pre_rated: self.rec.pre_rated,
        }
    }
}

/// A lane of a task is carved at most 1/`TASK_LANE_SHARE` of what the task's pool has
/// left (or what it asked for, if more), so one lane never takes a small task's whole
/// budget from the others.
pub const TASK_LANE_SHARE: u64 = 4;

/// How long a freed task entry's id is still known to name its late records.
pub const TASK_ID_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

/// Who holds a lane, as records name it: the agent process's holder id (its liveness
/// lock file's name), the same in every PID namespace of the pod.
pub type Holder = u64;

fn holder_of(lane: &LaneInfo) -> Holder {
    lane.holder.map_or(0, |h| h.get())
}

/// The owner a lane's records are named after.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LaneOwner {
    /// Tenant index in the region.
    pub tenant: u16,
    /// Tier of the lane.
    pub tier: Tier,
    /// Initiator of its calls.
    pub initiator: Initiator,
    /// The process that held it.
    pub holder: Holder,
    /// The agent's name id (0: unnamed).
    #[serde(default)]
    pub agent: u16,
    /// The task its calls spent, if any.
    #[serde(default)]
    pub task: Option<TaskRef>,
}

impl LaneOwner {
    fn of(lane: &LaneInfo, key: LaneKey) -> LaneOwner {
        LaneOwner {
            tenant: key.tenant,
            tier: key.tier,
            initiator: key.initiator,
            holder: holder_of(lane),
            agent: key.agent,
            task: key.task,
        }
    }
}

/// Names of a lane's aggregate record (usage whose per-call detail was lost).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaneNames {
    /// Tenant.
    pub tenant: String,
    /// The agent's name.
    pub agent_name: String,
    /// The agent instance (`<sidecar>/<holder id>/lane<n>`).
    pub instance: String,
    /// The task id ("" none).
    pub task: String,
    /// Tier.
    pub tier: Tier,
    /// Initiator.
    pub initiator: Initiator,
}

/// A past owner of a lane: its records are those up to ring position `through` (records
/// with `seq <= through`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Handover {
    through: u64,
    owner: LaneOwner,
}

/// What `lanes.json` keeps: each lane's last owner and the owners before it whose records
/// may still be in its ring.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct LaneBook {
    owners: BTreeMap<usize, LaneOwner>,
    handovers: BTreeMap<usize, Vec<Handover>>,
}

/// Why a tenant's policy could not be applied. Nothing of the policy is applied then.
#[derive(Debug, thiserror::Error)]
pub enum ConfigureError {
    /// The tenant is not one this sidecar serves.
    #[error("tenant {0} is not served by this sidecar (see --tenants)")]
    UnknownTenant(String),
    /// The tenant's share of the region's pools is used up.
    #[error(
        "tenant {tenant} needs {needed} more pool(s) and has {free} free of its {share}: pools of deleted limits are freed once no lane is carved from them; fewer limits, or fewer tenants per sidecar, give each more"
    )]
    NoFreePool {
        /// The tenant.
        tenant: String,
        /// New pools the policy needs.
        needed: usize,
        /// Pools of the tenant's share not in use.
        free: usize,
        /// The tenant's share.
        share: usize,
    },
    /// The region refused the configuration.
    #[error("the region refused the configuration of {what}: {source}")]
    Region {
        /// What was being configured.
        what: String,
        /// The region's error.
        source: SidecarError,
    },
    /// `pools.json` could not be saved.
    #[error("cannot save the pool map: {0}")]
    Save(#[source] std::io::Error),
}

/// A policy as applied.
#[derive(Debug, Clone, Default)]
pub struct Configured {
    /// `(canonical, key, pool)` of every limit the policy enforces here.
    pub limits: Vec<(String, LimitKey, usize)>,
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct PoolMap {
    /// canonical limit -> (pool, wire key as JSON-friendly parts)
    pools: BTreeMap<String, PoolEntry>,
    /// Limits deleted by a policy whose pools are not free yet.
    #[serde(default)]
    retiring: BTreeMap<String, PoolEntry>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct PoolEntry {
    pool: usize,
    tenant: String,
    scope: i32,
    window: i32,
    tier: i32,
    #[serde(alias = "agent_instance")]
    agent: String,
    #[serde(default)]
    task: String,
}

impl PoolEntry {
    /// A task's budget (registered by agents, not by a policy).
    fn is_task(&self) -> bool {
        self.scope == v1::Scope::Task as i32
    }

    fn new(pool: usize, key: &LimitKey) -> PoolEntry {
        PoolEntry {
            pool,
            tenant: key.tenant.clone(),
            scope: key.scope,
            window: key.window,
            tier: key.tier,
            agent: key.agent.clone(),
            task: key.task.clone(),
        }
    }

    fn key(&self) -> LimitKey {
        LimitKey {
            tenant: self.tenant.clone(),
            scope: self.scope,
            window: self.window,
            agent: self.agent.clone(),
            tier: self.tier,
            task: self.task.clone(),
        }
    }
}

/// The region owner.
pub struct Owner {
    region: Region,
    sidecar_id: String,
    tenants: Vec<String>,
    map: PoolMap,
    map_path: PathBuf,
    /// Price books by full version (names of models in records).
    books: BTreeMap<u64, PriceBook>,
    denials_seen: BTreeMap<usize, u64>,
    /// Per pool: absolute floors and per-mille floors, per tier.
    floors: BTreeMap<usize, Floors>,
    /// Every lane seen in use: its owners (drained and named even after a reclaim).
    lanes: LaneBook,
    lanes_path: PathBuf,
    /// Names read from the region's name table (a published name never changes).
    names: BTreeMap<u16, String>,
    /// Task ids by reference, from the task's registration (records outlive a task's
    /// table entry: a completed task's entry may be freed before its last records are
    /// drained). Forgotten [`TASK_ID_GRACE`] after the entry is freed.
    task_ids: BTreeMap<TaskRef, String>,
    /// Entries freed, oldest first: their ids are forgotten after [`TASK_ID_GRACE`].
    freed_tasks: std::collections::VecDeque<(std::time::Instant, TaskRef)>,
    /// Per lane: the limit that bound its last denial the sidecar recorded.
    binding: BTreeMap<usize, LimitKey>,
    /// Denials since the last report to the authority, by binding limit and tier.
    denial_counts: BTreeMap<(String, i32), v1::DenialCount>,
    /// Per lane, in this process's memory only (never the region, which any agent can
    /// write): credits the sidecar gave the lane, net (topped up - revoked - reclaimed).
    given: BTreeMap<usize, u64>,
    /// Per lane: records waiting in its ring (head - tail) at its last drain.
    ring_depth: BTreeMap<usize, u64>,
    /// Per lane: the pools it is carved from, as the region says (refreshed each pass).
    carved_from: BTreeMap<usize, Vec<usize>>,
    /// Floors used when a policy sets none (per-mille, per tier).
    default_floors: [u32; 3],
}

/// A pool's tier floors: absolute, and per-mille of the pool's local budget.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Floors {
    abs: [u64; Tier::COUNT],
    permille: [u64; Tier::COUNT],
}

fn horizon_of(window: i32) -> Option<Horizon> {
    match v1::Window::try_from(window).ok()? {
        v1::Window::None => None,
        v1::Window::Minute => Some(Horizon::Minute),
        v1::Window::Hour => Some(Horizon::Hour),
        v1::Window::Month => Some(Horizon::Month),
    }
}

/// What the control loop knows of each pool's refills, for denials' retry hints.
#[derive(Debug, Clone, Default)]
pub struct PoolHints {
    /// Pools the authority refused to refill, until when.
    pub refused: BTreeMap<usize, Refused>,
    /// Pools with a lease request in flight: how long until it is answered or asked again.
    pub demand_left: BTreeMap<usize, Duration>,
}

fn now_unix_ms() -> u64 {
    tollgate_core::clock::unix_ms()
}

/// Nothing of a limit can be leased before `until_unix_ms` (the authority's lease
/// refusal); `kind` is what binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub kind: LimitKind,
    pub until_unix_ms: u64,
}

/// The region's limit kind for a wire limit key, if the region can enforce it.
pub fn limit_kind(key: &LimitKey) -> Option<LimitKind> {
    match v1::Scope::try_from(key.scope).ok()? {
        v1::Scope::Tenant => Some(match horizon_of(key.window) {
            None => LimitKind::TenantWallet,
            Some(h) => LimitKind::TenantWindow(h),
        }),
        v1::Scope::Tier => Some(LimitKind::TierWindow(
            crate::convert::tier_from_wire(key.tier)?,
            horizon_of(key.window)?,
        )),
        // An agent's quota binds the lanes of that agent (a lane's key names its agent).
        v1::Scope::Agent if !key.agent.is_empty() => {
            Some(LimitKind::Agent(horizon_of(key.window)?))
        }
        // A task's budget binds the lanes of that task.
        v1::Scope::Task if !key.task.is_empty() => Some(LimitKind::Task),
        v1::Scope::Agent | v1::Scope::Task => None,
    }
}

impl std::fmt::Debug for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Owner")
            .field("region", &self.region.path())
            .finish()
    }
}

impl Owner {
    /// Re-attaches to the region (a sidecar restart), or creates it.
    pub fn open(cfg: &Config) -> anyhow::Result<Owner> {
        let map_path = cfg.state_dir.join("pools.json");
        let lanes_path = cfg.state_dir.join("lanes.json");
        let region = match Region::open_owner(&cfg.region) {
            Ok(r) => {
                tracing::info!(recovery = ?r.recovery(), "re-attached to the existing region");
                r
            }
            Err(AttachError::NotFound { .. }) => {
                // Ring positions of another region mean nothing in a new one.
                let _ = std::fs::remove_file(&lanes_path);
                create(cfg)?
            }
            Err(
                e @ (AttachError::Unfinished
                | AttachError::ForeignMagic { .. }
                | AttachError::VersionMismatch { .. }
                | AttachError::Truncated { .. }
                | AttachError::Corrupt { .. }),
            ) => {
                // Only a Tollgate region (ours, damaged) is replaced: a file that never was
                // one is someone's data at a mistyped path.
                check_replaceable(&cfg.region)?;
                tracing::error!(error = %e, "the region file is unusable: creating a new one (its leases settle at expiry)");
                let _ = std::fs::remove_file(&map_path);
                let _ = std::fs::remove_file(&lanes_path);
                create(cfg)?
            }
            Err(e) => return Err(e).context("re-attaching to the region"),
        };
        region.set_slow_path(200, AGENT_MAX_WAIT);
        mend_holders(region.holders_dir());
        let map = match std::fs::read(&map_path) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                tracing::error!(error = %e, "pools.json unreadable: limits will be mapped again");
                PoolMap::default()
            }),
            Err(_) => PoolMap::default(),
        };
        let lanes = match std::fs::read(&lanes_path) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                tracing::error!(error = %e, "lanes.json unreadable: records of lanes released before this start are named by their current owner");
                LaneBook::default()
            }),
            Err(_) => LaneBook::default(),
        };
        let mut owner = Owner {
            region,
            sidecar_id: cfg.sidecar_id.clone(),
            tenants: cfg.tenants.clone(),
            map,
            map_path,
            books: BTreeMap::new(),
            denials_seen: BTreeMap::new(),
            floors: BTreeMap::new(),
            lanes,
            lanes_path,
            names: BTreeMap::new(),
            task_ids: BTreeMap::new(),
            freed_tasks: std::collections::VecDeque::new(),
            binding: BTreeMap::new(),
            denial_counts: BTreeMap::new(),
            given: BTreeMap::new(),
            ring_depth: BTreeMap::new(),
            carved_from: BTreeMap::new(),
            default_floors: cfg.tier_floor_permille,
        };
        owner.refresh();
        Ok(owner)
    }

    /// The region (for audits in tests and the demo).
    pub fn region(&self) -> &Region {
        &self.region
    }

    /// Whether the region was destroyed under the sidecar (see [`Region::damage`]).
    pub fn damage(&self) -> Option<RegionDamage> {
        self.region.damage()
    }

    /// Replaces a damaged region by a new one at the same path (built aside and renamed
    /// into place), with the same pool for each limit. Nothing the old region's lanes
    /// hold is trusted or carried over: its lanes, their owners, what was given to them and
    /// their ring positions are forgotten. The caller configures tenants, prices and
    /// credits again from its own memory.
    pub fn rebuild(&mut self, cfg: &Config) -> anyhow::Result<()> {
        let region = create(cfg)?;
        region.set_slow_path(200, AGENT_MAX_WAIT);
        mend_holders(region.holders_dir());
        self.region = region;
        self.lanes = LaneBook::default();
        self.save_lanes();
        self.given.clear();
        self.ring_depth.clear();
        self.carved_from.clear();
        self.denials_seen.clear();
        // The latest price book, for agents to rate with.
        if let Some(book) = self.books.values().next_back()
            && let Err(e) = self.region.publish_price_book(book)
        {
            tracing::error!(error = %e, "cannot publish the price book to the new region");
        }
        Ok(())
    }

    /// Limits mapped to pools and still enforced (after a restart), without the retiring ones.
    pub fn limits(&self) -> Vec<(String, LimitKey, usize)> {
        self.map
            .pools
            .iter()
            .map(|(c, e)| (c.clone(), e.key(), e.pool))
            .collect()
    }

    /// Limits deleted by a policy whose pools are not free yet (after a restart).
    pub fn retiring(&self) -> Vec<(String, LimitKey, usize)> {
        self.map
            .retiring
            .iter()
            .map(|(c, e)| (c.clone(), e.key(), e.pool))
            .collect()
    }

    fn save_map(&self) -> std::io::Result<()> {
        save_json(&self.map_path, &self.map)
    }

    fn save_lanes(&self) {
        if let Err(e) = save_json(&self.lanes_path, &self.lanes) {
            tracing::error!(error = %e, "cannot save lanes.json: after a restart, records of released lanes may be named by their next owner");
        }
    }

    /// The pool indices of tenant `t`'s share: the region's pools split evenly by tenant.
    fn share(&self, t: usize) -> Range<usize> {
        let n = class_pool_count(self.tenants.len()).min(self.region.config().pools as usize);
        let per = n / self.tenants.len().max(1);
        (t * per)..((t + 1) * per).min(n)
    }

    /// The pools of agents' quotas and tasks' budgets: past the class pools, shared by
    /// every tenant (their indices never appear in a tenant record).
    fn extra(&self) -> Range<usize> {
        let n = self.region.config().pools as usize;
        class_pool_count(self.tenants.len()).min(n)..n
    }

    fn used_pools(&self) -> BTreeSet<usize> {
        self.map
            .pools
            .values()
            .chain(self.map.retiring.values())
            .map(|e| e.pool)
            .collect()
    }

    /// Configures a tenant's pools and lane classes from its policy (call
    /// [`Owner::retire_dropped`] first). All or nothing: on an error the tenant's lanes are
    /// carved as before.
    pub fn configure(&mut self, p: &TenantPolicy) -> Result<Configured, ConfigureError> {
        let t_index = self
            .tenants
            .iter()
            .position(|t| t == &p.tenant)
            .ok_or_else(|| ConfigureError::UnknownTenant(p.tenant.clone()))?;
        let floors = self.policy_floors(p);
        let limits = enforced_limits(p);
        // Check the pool budget before changing anything.
        let mapped = |k: &LimitKey| {
            let c = k.canonical();
            self.map.pools.contains_key(&c) || self.map.retiring.contains_key(&c)
        };
        // Class limits take pools of the tenant's share; agents' quotas, of the range past
        // the class pools.
        let is_class = |k: &LimitKey| limit_kind(k).is_some_and(is_class_kind);
        let needed = limits.iter().filter(|k| !mapped(k) && is_class(k)).count();
        let needed_extra = limits.iter().filter(|k| !mapped(k) && !is_class(k)).count();
        let used = self.used_pools();
        let share = self.share(t_index);
        let mut free = share.clone().filter(|x| !used.contains(x));
        let free_count = free.clone().count();
        if needed > free_count {
            return Err(ConfigureError::NoFreePool {
                tenant: p.tenant.clone(),
                needed,
                free: free_count,
                share: share.len(),
            });
        }
        let extra = self.extra();
        let mut free_extra = extra.clone().filter(|x| !used.contains(x));
        let free_extra_count = free_extra.clone().count();
        if needed_extra > free_extra_count {
            return Err(ConfigureError::NoFreePool {
                tenant: p.tenant.clone(),
                needed: needed_extra,
                free: free_extra_count,
                share: extra.len(),
            });
        }
        // Decide every pool first; change nothing until the region took the configuration.
        let mut plan = Vec::new();
        for key in limits {
            let canonical = key.canonical();
            let Some(kind) = limit_kind(&key) else {
                continue; // enforced_limits keeps only enforceable ones
            };
            let pool = match self
                .map
                .pools
                .get(&canonical)
                .or_else(|| self.map.retiring.get(&canonical))
            {
                Some(e) => e.pool,
                // Checked above: there are enough.
                None if is_class_kind(kind) => {
                    free.next().ok_or_else(|| ConfigureError::NoFreePool {
                        tenant: p.tenant.clone(),
                        needed,
                        free: free_count,
                        share: share.len(),
                    })?
                }
                None => free_extra
                    .next()
                    .ok_or_else(|| ConfigureError::NoFreePool {
                        tenant: p.tenant.clone(),
                        needed: needed_extra,
                        free: free_extra_count,
                        share: extra.len(),
                    })?,
            };
            plan.push((canonical, key, kind, pool));
        }
        let mut classes: [[Vec<usize>; 2]; Tier::COUNT] = Default::default();
        for (canonical, _, kind, pool) in &plan {
            self.region
                .configure_pool(
                    *pool,
                    &PoolSpec {
                        limit: *kind,
                        floors: floors.abs.map(Credits),
                    },
                )
                .map_err(|source| ConfigureError::Region {
                    what: format!("the pool of {canonical}"),
                    source,
                })?;
            add_to_classes(&mut classes, *kind, *pool);
        }
        self.region
            .configure_tenant(
                t_index,
                &TenantSpec {
                    name: p.tenant.clone(),
                    classes,
                },
            )
            .map_err(|source| ConfigureError::Region {
                what: format!("tenant {}", p.tenant),
                source,
            })?;
        let mut out = Configured::default();
        for (canonical, key, _, pool) in plan {
            // A deleted limit that comes back keeps its old pool.
            self.map.retiring.remove(&canonical);
            self.map
                .pools
                .insert(canonical.clone(), PoolEntry::new(pool, &key));
            self.floors.insert(pool, floors);
            out.limits.push((canonical, key, pool));
        }
        self.save_map().map_err(ConfigureError::Save)?;
        Ok(out)
    }

    /// The pool a task's budget (`key`, a task scope limit) is leased into: the one it had
    /// (after a restart, or if it was being retired), else a free one past the class pools.
    pub fn register_task(&mut self, key: &LimitKey) -> Result<usize, ConfigureError> {
        let canonical = key.canonical();
        if let Some(e) = self.map.pools.get(&canonical) {
            return Ok(e.pool);
        }
        let pool = match self.map.retiring.remove(&canonical) {
            Some(e) => e.pool,
            None => {
                let used = self.used_pools();
                let extra = self.extra();
                let free = extra.clone().find(|p| !used.contains(p));
                free.ok_or_else(|| ConfigureError::NoFreePool {
                    tenant: key.tenant.clone(),
                    needed: 1,
                    free: 0,
                    share: extra.len(),
                })?
            }
        };
        self.region
            .configure_pool(
                pool,
                &PoolSpec {
                    limit: LimitKind::Task,
                    floors: [Credits::ZERO; Tier::COUNT],
                },
            )
            .map_err(|source| ConfigureError::Region {
                what: format!("the pool of {canonical}"),
                source,
            })?;
        self.map.pools.insert(canonical, PoolEntry::new(pool, key));
        self.save_map().map_err(ConfigureError::Save)?;
        Ok(pool)
    }

    /// Stops serving a task's budget: its pool is retired like a deleted limit's (its
    /// credits go back, lanes carved from it are revoked, it is freed once no lane lists
    /// it). Returns whether it was served.
    pub fn retire_task(&mut self, canonical: &str) -> bool {
        let Some(e) = self.map.pools.remove(canonical) else {
            return false;
        };
        self.map.retiring.insert(canonical.to_string(), e);
        if let Err(e) = self.save_map() {
            tracing::error!(error = %e, "cannot save pools.json");
        }
        true
    }

    /// Retires the limits of `p`'s tenant that `p` no longer has (see the module docs):
    /// new lanes are no longer carved from them, whether or not the rest of `p` can be
    /// applied, so their pools free up for what `p` needs. Returns their canonical keys.
    pub fn retire_dropped(&mut self, p: &TenantPolicy) -> Vec<String> {
        let keep: BTreeSet<String> = enforced_limits(p).iter().map(|k| k.canonical()).collect();
        let gone: Vec<String> = self
            .map
            .pools
            .iter()
            .filter(|(c, e)| e.tenant == p.tenant && !e.is_task() && !keep.contains(c.as_str()))
            .map(|(c, _)| c.clone())
            .collect();
        for c in &gone {
            if let Some(e) = self.map.pools.remove(c) {
                tracing::info!(limit = %c, pool = e.pool, "limit deleted by the policy: retiring its pool");
                self.map.retiring.insert(c.clone(), e);
            }
        }
        if gone.is_empty() {
            return gone;
        }
        if let Err(e) = self.save_map() {
            tracing::error!(error = %e, "cannot save pools.json");
        }
        // New lanes are carved from the limits the tenant keeps, even if the rest of the
        // policy cannot be applied yet.
        if let Some(t_index) = self.tenants.iter().position(|t| t == &p.tenant) {
            let mut classes: [[Vec<usize>; 2]; Tier::COUNT] = Default::default();
            let mut kept: Vec<&PoolEntry> = self
                .map
                .pools
                .values()
                .filter(|e| e.tenant == p.tenant)
                .collect();
            // The wallet first: it is the one a full class must never leave out.
            kept.sort_by_key(|e| (!e.key().is_wallet(), e.pool));
            for e in kept {
                if let Some(kind) = limit_kind(&e.key()) {
                    add_to_classes(&mut classes, kind, e.pool);
                }
            }
            let spec = TenantSpec {
                name: p.tenant.clone(),
                classes,
            };
            if let Err(e) = self.region.configure_tenant(t_index, &spec) {
                tracing::error!(tenant = %p.tenant, error = %e, "cannot stop carving new lanes from deleted limits");
            }
        }
        gone
    }

    fn policy_floors(&self, p: &TenantPolicy) -> Floors {
        if p.tier_floors.iter().any(|f| !f.shadow) {
            return tier_floors(p);
        }
        let mut f = Floors::default();
        for (i, v) in self.default_floors.iter().enumerate() {
            // a tier's floor binds the tiers below it too
            for slot in f.permille.iter_mut().skip(i) {
                *slot = (*slot).max(u64::from(*v));
            }
        }
        f
    }

    /// One step of retiring deleted limits' pools: revokes what lanes carved from them still
    /// have available, and frees each pool no lane lists that holds nothing. Returns the
    /// canonical keys of the limits whose pools were freed. (The control loop gives the
    /// pools' uncarved credits back to the authority before each step.)
    pub fn retire_step(&mut self) -> Vec<String> {
        if self.map.retiring.is_empty() {
            return Vec::new();
        }
        self.refresh();
        let mut freed = Vec::new();
        let retiring: Vec<(String, usize)> = self
            .map
            .retiring
            .iter()
            .map(|(c, e)| (c.clone(), e.pool))
            .collect();
        for (canonical, pool) in retiring {
            let listing: Vec<usize> = self
                .carved_from
                .iter()
                .filter(|(_, pools)| pools.contains(&pool))
                .map(|(lane, _)| *lane)
                .collect();
            for lane in &listing {
                let _ = self.revoke(*lane, u64::MAX);
            }
            let snap = self.pool(pool);
            if listing.is_empty() && snap.available == 0 && snap.carved == 0 {
                self.map.retiring.remove(&canonical);
                self.floors.remove(&pool);
                tracing::info!(limit = %canonical, pool, "pool of a deleted limit freed");
                freed.push(canonical);
            }
        }
        if !freed.is_empty()
            && let Err(e) = self.save_map()
        {
            tracing::error!(error = %e, "cannot save pools.json");
        }
        freed
    }

    /// Re-reads which pools each lane is carved from (one audit of the region).
    pub fn refresh(&mut self) {
        self.carved_from = self.region.lane_pool_lists().into_iter().collect();
    }

    /// Publishes a price book to the region.
    pub fn publish_price_book(&mut self, spec: PriceBookSpec) -> anyhow::Result<()> {
        let book = PriceBook::new(spec)?;
        self.region.publish_price_book(&book)?;
        self.books.insert(book.version(), book);
        while self.books.len() > 8 {
            let first = *self.books.keys().next().unwrap_or(&0);
            self.books.remove(&first);
        }
        Ok(())
    }

    /// Writes the heartbeat word.
    pub fn heartbeat(&self, unix_ms: u64) {
        self.region.heartbeat(unix_ms);
    }

    /// A pool's counters (all zero for an index past the region's pools).
    pub fn pool(&self, pool: usize) -> PoolCounters {
        self.region.pool_counters(pool).unwrap_or_default()
    }

    /// Leased credits arrive.
    pub fn grant(&mut self, pool: usize, amount: u64) -> anyhow::Result<()> {
        Ok(self.region.grant(pool, Credits(amount))?)
    }

    /// Up to `max` uncarved credits leave the pool; returns what left.
    pub fn give_back(&mut self, pool: usize, max: u64) -> u64 {
        self.region
            .give_back(pool, Credits(max))
            .map(|c| c.0)
            .unwrap_or(0)
    }

    /// Reclaims every lane of every dead process, and every lane a live process handed back.
    ///
    /// Lanes seen in one snapshot taken after the liveness check are reclaimed first, so the
    /// key and owner noted for each are final (a dead or handed-back lane's owner writes
    /// nothing more). Right after each reclaim the ring position the old owner's records end
    /// at is noted ([`Handover`]). The client's own pass then collects the holder files of
    /// processes that are gone (and reclaims what appeared since the snapshot).
    pub fn reclaim_dead(&mut self) -> Vec<ReclaimReport> {
        let dead: Vec<_> = self
            .region
            .processes()
            .into_iter()
            .filter(|p| !p.alive)
            .map(|p| p.holder)
            .collect();
        let snapshot = self.lanes_in_use();
        self.note_lanes(&snapshot);
        let mut out = Vec::new();
        for l in snapshot {
            let gone = l.reclaiming || l.holder.is_some_and(|h| dead.contains(&h));
            if !gone {
                continue;
            }
            // The old owner cannot push any more; reclaim itself may (settled commits).
            let before = self.ring_head(l.lane);
            match self.region.reclaim_lane(l.lane) {
                Ok(r) => {
                    let owner = l.key.map(|k| LaneOwner::of(&l, k));
                    self.after_reclaim(&r, owner, before);
                    out.push(r);
                }
                // Reclaimed concurrently, or the holder came back: skip.
                Err(SidecarError::LaneNotInUse(_) | SidecarError::OwnerAlive(_)) => {}
                Err(e) => tracing::error!(lane = l.lane, error = %e, "reclaim failed"),
            }
        }
        match self.region.reclaim_dead() {
            Ok(late) => {
                for r in late {
                    // Claimed and given up since the snapshot: its owner is the one noted
                    // last if the holder matches, else unknown.
                    let owner = self
                        .lanes
                        .owners
                        .get(&r.lane)
                        .copied()
                        .filter(|o| r.holder.map(|h| h.get()) == Some(o.holder));
                    self.after_reclaim(&r, owner, None);
                    out.push(r);
                }
            }
            Err(e) => tracing::error!(error = %e, "reclaim failed"),
        }
        if !out.is_empty() {
            self.save_lanes();
        }
        out
    }

    /// Bookkeeping of one reclaimed lane: where its old owner's records end, and what the
    /// sidecar took back from it.
    fn after_reclaim(&mut self, r: &ReclaimReport, owner: Option<LaneOwner>, before: Option<u64>) {
        let after = self.ring_head(r.lane);
        // A head read while the lane is still free holds only the old owner's records: a
        // new owner claims before it pushes.
        let still_free = !self.region.lanes().iter().any(|x| x.lane == r.lane);
        let through = if still_free { after } else { before };
        if let (Some(owner), Some(through)) = (owner, through) {
            self.lanes
                .handovers
                .entry(r.lane)
                .or_default()
                .push(Handover { through, owner });
        }
        let given = self.given.entry(r.lane).or_insert(0);
        *given = given.saturating_sub(r.returned);
        self.carved_from.remove(&r.lane);
    }

    /// The lane's ring position past its last record.
    fn ring_head(&self, lane: usize) -> Option<u64> {
        let mut scratch = Vec::new();
        self.region
            .peek(lane, &mut scratch)
            .ok()
            .map(|(_, upto)| upto)
    }

    fn lanes_in_use(&self) -> Vec<LaneInfo> {
        self.region.lanes()
    }

    /// Remembers the owner of every claimed lane, so its records can still be drained and
    /// named after the lane is reclaimed.
    fn note_lanes(&mut self, in_use: &[LaneInfo]) {
        let mut changed = false;
        for l in in_use {
            if let Some(k) = l.key {
                let owner = LaneOwner::of(l, k);
                if self.lanes.owners.insert(l.lane, owner) != Some(owner) {
                    changed = true;
                }
            }
        }
        if changed {
            self.save_lanes();
        }
    }

    /// Drains every lane that may hold records (in use, or known from before) and harvests
    /// their consumption into the pools. Returns per-lane results with the lanes' totals.
    pub fn drain(&mut self, max: usize) -> Vec<LaneDrain> {
        let in_use = self.lanes_in_use();
        self.note_lanes(&in_use);
        let live: Vec<usize> = in_use
            .iter()
            .filter(|l| !l.reclaiming && l.holder.is_some_and(|h| self.region.is_alive(h)))
            .map(|l| l.lane)
            .collect();
        let mut out = Vec::new();
        let mut raw = Vec::new();
        let mut n = 0usize;
        let lanes: BTreeSet<usize> = self
            .lanes
            .owners
            .keys()
            .chain(self.lanes.handovers.keys())
            .copied()
            .collect();
        for lane in lanes {
            if n >= max {
                break;
            }
            raw.clear();
            // Peek, not drain: the records keep their ring space until their batch is in the
            // outbox, so a crash in between loses no per-call detail.
            let (stats, upto) = match self.region.peek(lane, &mut raw) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(lane, error = %e, "drain failed");
                    continue;
                }
            };
            self.ring_depth
                .insert(lane, stats.records.saturating_add(stats.skipped));
            n += raw.len();
            let records = raw.iter().map(|r| self.resolve(*r)).collect();
            out.push(LaneDrain {
                lane,
                records,
                lost_total: stats.lost_total,
                total: 0,
                live: live.contains(&lane),
                upto,
            });
        }
        // Totals after the drain (consumed + overrun, cumulative per lane).
        for d in out.iter_mut() {
            if let Ok(b) = self.region.lane_balance(d.lane)
                && b.topped_up != 0
            {
                d.total = b.consumed.saturating_add(b.overrun);
            }
        }
        out
    }

    /// Frees the ring space of records that are durably in the outbox; forgets the past
    /// owners whose records are all freed.
    pub fn release(&mut self, lane: usize, upto: u64) {
        if let Err(e) = self.region.release(lane, upto) {
            tracing::error!(lane, error = %e, "ring release failed");
            return;
        }
        if let Some(h) = self.lanes.handovers.get_mut(&lane) {
            let before = h.len();
            h.retain(|x| x.through > upto);
            let changed = h.len() != before;
            if h.is_empty() {
                self.lanes.handovers.remove(&lane);
            }
            if changed {
                self.save_lanes();
            }
        }
    }

    /// Names for a lane's aggregate record, after the owner of its oldest records still in
    /// the ring (or its current owner).
    pub fn lane_names(&mut self, lane: usize) -> Option<LaneNames> {
        let o = self
            .lanes
            .handovers
            .get(&lane)
            .and_then(|h| h.first())
            .map(|h| h.owner)
            .or_else(|| self.lanes.owners.get(&lane).copied())?;
        Some(LaneNames {
            tenant: self.tenants.get(o.tenant as usize)?.clone(),
            agent_name: self.name_of(o.agent),
            instance: self.agent_name(lane, o.holder),
            task: o.task.map(|t| self.task_id(t)).unwrap_or_default(),
            tier: o.tier,
            initiator: o.initiator,
        })
    }

    /// An agent or feature name by its id in the region's name table ("" for 0 or an
    /// entry that is not a name: the table is written by agents).
    pub fn name_of(&mut self, id: u16) -> String {
        if id == 0 {
            return String::new();
        }
        if let Some(n) = self.names.get(&id) {
            return n.clone();
        }
        // A published name never changes, so it is read once.
        match self.region.name(id) {
            Some(n) => {
                self.names.insert(id, n.clone());
                n
            }
            None => String::new(),
        }
    }

    /// Remembers task `t`'s id (at its registration), so records drained after its
    /// entry is freed still name it.
    pub fn remember_task_id(&mut self, t: TaskRef, id: &str) {
        self.task_ids.insert(t, id.to_owned());
    }

    /// Task `t`'s entry was freed: its id is kept [`TASK_ID_GRACE`] longer (its lanes'
    /// last records are drained within a pass or two), then forgotten, so the map stays
    /// as small as the open tasks.
    pub fn task_entry_freed(&mut self, t: TaskRef) {
        let now = tollgate_core::clock::now();
        self.freed_tasks.push_back((now, t));
        while let Some(&(at, old)) = self.freed_tasks.front() {
            if now.duration_since(at) < TASK_ID_GRACE {
                break;
            }
            self.freed_tasks.pop_front();
            self.task_ids.remove(&old);
        }
    }

    /// A task's id: from the region while it is open there, else as the sidecar last saw
    /// it ("" if it never did).
    pub fn task_id(&mut self, t: TaskRef) -> String {
        if let Some(id) = self.task_ids.get(&t) {
            return id.clone();
        }
        match self.region.task(t) {
            Some(e) => {
                self.task_ids.insert(t, e.id.clone());
                e.id
            }
            None => String::new(),
        }
    }

    /// The agent instance a lane's records are posted under: pod, agent process (its
    /// holder id: pids mean nothing across the pod's PID namespaces) and lane.
    fn agent_name(&self, lane: usize, holder: Holder) -> String {
        format!("{}/{:012x}/lane{}", self.sidecar_id, holder, lane)
    }

    /// The owner that wrote record `seq` of `lane`: the first past owner whose records end
    /// at or after it, else the lane's current owner.
    fn owner_of(&self, lane: usize, seq: u64) -> Option<LaneOwner> {
        self.lanes
            .handovers
            .get(&lane)
            .and_then(|h| h.iter().find(|x| seq <= x.through))
            .map(|x| x.owner)
            .or_else(|| self.lanes.owners.get(&lane).copied())
    }

    fn resolve(&mut self, mut rec: UsageRecord) -> DrainedRecord {
        // The record's names come from who wrote it, not from the lane's key now (a lane
        // drained after its reclaim has no key, or a new owner's).
        let owner = self.owner_of(rec.lane, rec.seq);
        if let Some(o) = owner {
            rec.tenant = o.tenant;
            rec.tier = o.tier;
            rec.initiator = o.initiator;
        }
        let tenant = self
            .tenants
            .get(rec.tenant as usize)
            .cloned()
            .unwrap_or_else(|| format!("#{}", rec.tenant));
        let book = self
            .books
            .iter()
            .rev()
            .find(|(v, _)| (**v & 0xFFFF_FFFF) as u32 == rec.book_version);
        let model = match (book, rec.model_index) {
            (Some((_, b)), Some(i)) => b
                .models()
                .get(i as usize)
                .map(|m| m.name.clone())
                .unwrap_or_default(),
            _ => String::new(),
        };
        // What the authority will charge for it: it re-rates usage by tokens and outcomes
        // when it knows the model, so the sidecar's bound uses the larger of that and the
        // agent's own rating; a pre-rated record is charged as stated.
        let rated = match (book, model.is_empty() || rec.pre_rated) {
            (Some((_, b)), false) => b
                .rate_by_name(
                    &model,
                    &tollgate_core::RatingInput {
                        input_tokens: rec.input_tokens,
                        output_tokens: rec.output_tokens,
                        initiator: rec.initiator,
                        outcomes: u64::from(rec.outcomes),
                    },
                )
                .map_or(u64::MAX, |c| c.0),
            _ => 0,
        };
        let book_version = book.map_or(u64::from(rec.book_version), |(v, _)| *v);
        DrainedRecord {
            agent_name: self.name_of(rec.agent),
            feature: self.name_of(rec.feature),
            task: rec.task.map(|t| self.task_id(t)).unwrap_or_default(),
            agent: self.agent_name(rec.lane, owner.map_or(0, |o| o.holder)),
            book_version,
            charge_bound: rated.max(rec.actual.0),
            tenant,
            model,
            rec,
        }
    }

    /// Per-lane consumption totals (after the drain harvested them).
    pub fn harvest_all(&mut self) -> Vec<LiveLane> {
        self.live_lanes()
    }

    /// Lanes owned by live agents.
    pub fn live_lanes(&self) -> Vec<LiveLane> {
        self.lanes_in_use()
            .into_iter()
            .filter(|l| !l.reclaiming)
            .filter_map(|l| {
                let key = l.key?;
                Some(LiveLane {
                    lane: l.lane,
                    allowance: l.available.0,
                    consumed: l.consumed.0.saturating_add(l.overrun.0),
                    wants_more: l.demand.0 > 0,
                    asked: l.demand.0,
                    tier: key.tier,
                    task: key.task,
                })
            })
            .collect()
    }

    /// Pools a lane is carved from (as the region says, once it was first topped up) or
    /// would be: its class's (per its tenant's configuration), its agent's quotas, and its
    /// task's budget. A lane of a task the sidecar has no pool for is carved from nothing
    /// (it is not topped up before the task is registered, nor after it is closed).
    pub fn lane_pools(&self, lane: usize) -> Vec<usize> {
        if let Some(p) = self.carved_from.get(&lane) {
            return p.clone();
        }
        let Some(info) = self.region.lane_info(lane) else {
            return Vec::new();
        };
        let Some(key) = info.key else {
            return Vec::new();
        };
        let Some(tenant) = self.tenants.get(key.tenant as usize) else {
            return Vec::new();
        };
        let task_id = match key.task {
            None => None,
            Some(t) => match self.region.task(t) {
                Some(e) if e.status != TaskStatus::Closed => Some(e.id),
                _ => return Vec::new(),
            },
        };
        let agent = self.region.name(key.agent).unwrap_or_default();
        let mut pools: Vec<usize> = Vec::new();
        let mut task_pool = None;
        for e in self.map.pools.values().filter(|e| &e.tenant == tenant) {
            match limit_kind(&e.key()) {
                Some(LimitKind::TierWindow(t, _)) if t != key.tier => {}
                Some(LimitKind::Agent(_)) if e.agent != agent => {}
                Some(LimitKind::Task) if task_id.as_deref() == Some(e.task.as_str()) => {
                    task_pool = Some(e.pool);
                }
                Some(LimitKind::Task) => {}
                Some(_) => pools.push(e.pool),
                None => {}
            }
        }
        if task_id.is_some() {
            match task_pool {
                // The task's budget first: it is never left out of a full list.
                Some(p) => pools.insert(0, p),
                None => return Vec::new(),
            }
        }
        pools.truncate(tollgate_client::layout::MAX_POOLS_PER_LANE);
        pools
    }

    fn is_retiring(&self, pool: usize) -> bool {
        self.map.retiring.values().any(|e| e.pool == pool)
    }

    /// How much of `want` every pool of `lane` can pay now (a task's pool: a
    /// [`TASK_LANE_SHARE`] share of what it has left, or what the lane asked for) (above the lane tier's floor);
    /// pools of deleted limits limit nothing. When it is nothing, the binding limit is
    /// recorded in the lane for the agent's denial, with a retry hint for its kind (see
    /// [`crate::hint`]); when a pool that pays nothing is one the authority refused to
    /// refill (`hints.refused`), the lane is denied at once until then. A lane of a task
    /// that is closed (or not registered) is given nothing.
    pub fn carvable(&mut self, lane: usize, want: u64, hints: &PoolHints) -> u64 {
        let Some(info) = self.region.lane_info(lane) else {
            return 0;
        };
        let Some(key) = info.key else { return 0 };
        let now_ms = now_unix_ms();
        if let Some(t) = key.task
            && self
                .region
                .task(t)
                .is_none_or(|e| e.status == TaskStatus::Closed)
        {
            let until = UNIX_EPOCH + Duration::from_millis(now_ms) + crate::hint::MAX_REFUSAL;
            let _ = self
                .region
                .record_denial_until(lane, LimitKind::Task, until);
            return 0;
        }
        let pools: Vec<usize> = self
            .lane_pools(lane)
            .into_iter()
            .filter(|p| !self.is_retiring(*p))
            .collect();
        let mut give = want;
        let mut binding: Option<(usize, u64)> = None;
        // A dry pool no refill is coming for: it decides the denial.
        let mut final_dry: Option<(usize, Refused, u64)> = None;
        for p in &pools {
            let Ok(b) = self.region.pool_counters(*p) else {
                return 0;
            };
            let floor = self.floor_of(*p, key.tier);
            let mut can = b.available.saturating_sub(floor);
            let task_pool = self.kind_of(*p) == Some(LimitKind::Task);
            if task_pool {
                // A task's budget is often small and shared by several lanes (threads,
                // processes): one lane gets a share of what is left, at least what it asked
                // for, never the whole budget while other lanes of the task may need it.
                can = can.min((can / TASK_LANE_SHARE).max(info.demand.0));
            }
            if can < give {
                give = can;
                binding = Some((*p, floor));
            }
            // A task whose credits sit in other lanes of this pod is not out: those lanes
            // give them back (spent, or revoked when idle), so no denial at once.
            let own = info.available.0.saturating_add(info.held.0);
            let elsewhere = task_pool && b.carved > own;
            if can == 0
                && !elsewhere
                && final_dry.is_none()
                && let Some(r) = hints.refused.get(p)
            {
                final_dry = Some((*p, *r, floor));
            }
        }
        if pools.is_empty() {
            return 0;
        }
        if give == 0
            && let Some((p, r, floor)) = final_dry
        {
            let limit = if floor > 0 {
                LimitKind::TierFloor(key.tier)
            } else {
                r.kind
            };
            let until = UNIX_EPOCH + Duration::from_millis(r.until_unix_ms);
            let _ = self.region.record_denial_until(lane, limit, until);
            self.note_binding(lane, p);
        } else if give == 0
            && let Some((p, floor)) = binding
        {
            let limit = if floor > 0 {
                LimitKind::TierFloor(key.tier)
            } else {
                self.kind_of(p).unwrap_or(LimitKind::TenantWallet)
            };
            let left = hints.demand_left.get(&p).copied();
            let hint = crate::hint::soft_hint(limit, now_ms, left);
            let _ = self.region.record_denial(lane, limit, hint);
            self.note_binding(lane, p);
        }
        give
    }

    /// Remembers which limit (by pool) bound `lane` last, for the denial counts.
    fn note_binding(&mut self, lane: usize, pool: usize) {
        let key = self
            .map
            .pools
            .values()
            .chain(self.map.retiring.values())
            .find(|e| e.pool == pool)
            .map(PoolEntry::key);
        if let Some(k) = key {
            self.binding.insert(lane, k);
        }
    }

    /// Lanes carved from any of `pools` wait for a refill again instead of being denied at
    /// once (their limits' refusals were lifted).
    pub fn lift_denials(&mut self, pools: &[usize]) {
        if pools.is_empty() {
            return;
        }
        for lane in self.lanes_in_use() {
            if self.lane_pools(lane.lane).iter().any(|p| pools.contains(p)) {
                let _ = self.region.clear_denial(lane.lane);
            }
        }
    }

    fn kind_of(&self, pool: usize) -> Option<LimitKind> {
        self.map
            .pools
            .values()
            .find(|e| e.pool == pool)
            .and_then(|e| limit_kind(&e.key()))
    }

    /// The floor tier `tier` must leave in `pool`: the larger of the absolute floor and the
    /// per-mille floor applied to the pool's local budget (uncarved plus carved).
    fn floor_of(&self, pool: usize, tier: Tier) -> u64 {
        let Some(f) = self.floors.get(&pool) else {
            return 0;
        };
        let t = tier.as_index();
        let local = self
            .region
            .pool_counters(pool)
            .map(|b| b.available.saturating_add(b.carved))
            .unwrap_or(0);
        let rel =
            u64::try_from(u128::from(local) * u128::from(f.permille[t]) / 1000).unwrap_or(u64::MAX);
        f.abs[t].max(rel)
    }

    /// The largest floor any tier must leave in `pool` now.
    pub fn max_floor(&self, pool: usize) -> u64 {
        Tier::ALL
            .iter()
            .map(|t| self.floor_of(pool, *t))
            .max()
            .unwrap_or(0)
    }

    /// Tops `lane` up by `amount`. A pool of a deleted limit the lane is still carved from
    /// is credited the amount first (it limits nothing any more, see the module docs).
    pub fn top_up(&mut self, lane: usize, amount: u64) -> anyhow::Result<()> {
        for p in self.lane_pools(lane) {
            if self.is_retiring(p) {
                self.region.grant(p, Credits(amount))?;
            }
        }
        if !self.carved_from.contains_key(&lane) {
            // The lane's first top-up: fix its pools (class, agent, task) in the region.
            let pools = self.lane_pools(lane);
            if pools.is_empty() {
                anyhow::bail!("lane {lane} has no pool to be carved from");
            }
            self.region.set_lane_pools(lane, &pools)?;
            self.carved_from.insert(lane, pools);
        }
        #[cfg(debug_assertions)]
        let before = self.carve_books(lane);
        self.region.top_up(lane, Credits(amount))?;
        #[cfg(debug_assertions)]
        self.assert_moved(lane, &before, amount, 0);
        let given = self.given.entry(lane).or_insert(0);
        *given = given.saturating_add(amount);
        Ok(())
    }

    /// Both sides of a carve as the sidecar books them: each of the lane's pools'
    /// (uncarved, carved) and the lane's topped-up total. The sidecar is the only writer of
    /// these words, so between two snapshots they move only by its own updates.
    #[cfg(debug_assertions)]
    fn carve_books(&self, lane: usize) -> (Vec<(u64, u64)>, u64) {
        let pools = self
            .lane_pools(lane)
            .into_iter()
            .map(|p| {
                let b = self.pool(p);
                (b.available, b.carved)
            })
            .collect();
        let info = self.region.lanes().into_iter().find(|l| l.lane == lane);
        (pools, info.map_or(0, |l| l.topped_up.0))
    }

    /// Conservation of a top-up (`given` into the lane) or a revoke (`taken` out of it):
    /// every pool moved exactly that between uncarved and carved, and the lane's books by
    /// the same amount. Checked in every test run (debug builds).
    #[cfg(debug_assertions)]
    fn assert_moved(&self, lane: usize, before: &(Vec<(u64, u64)>, u64), given: u64, taken: u64) {
        let after = self.carve_books(lane);
        if after.0.len() != before.0.len() {
            return; // the lane's pools were fixed by this very top-up
        }
        for ((a0, c0), (a1, c1)) in before.0.iter().zip(&after.0) {
            debug_assert_eq!(
                a0 + c0,
                a1 + c1,
                "a carve created or destroyed pool credits"
            );
            debug_assert_eq!(
                a0 + taken,
                a1 + given,
                "pool side of a carve of lane {lane}"
            );
            debug_assert_eq!(
                c0 + given,
                c1 + taken,
                "lane side of a carve of lane {lane}"
            );
        }
        debug_assert_eq!(
            after.1 - before.1,
            given,
            "the lane's top-ups of lane {lane}"
        );
    }

    /// Takes up to `amount` back from `lane`.
    pub fn revoke(&mut self, lane: usize, amount: u64) -> u64 {
        #[cfg(debug_assertions)]
        let before = self.carve_books(lane);
        let got = self
            .region
            .revoke(lane, Credits(amount))
            .map(|c| c.0)
            .unwrap_or(0);
        #[cfg(debug_assertions)]
        self.assert_moved(lane, &before, 0, got);
        if let Some(given) = self.given.get_mut(&lane) {
            *given = given.saturating_sub(got);
        }
        got
    }

    /// Credits the sidecar gave `lane`, net of what it took back (kept in this process's
    /// memory, and in the sidecar's state file; never read from the region).
    pub fn given(&self, lane: usize) -> u64 {
        self.given.get(&lane).copied().unwrap_or(0)
    }

    /// Every lane's [`Owner::given`], to persist.
    pub fn given_all(&self) -> &BTreeMap<usize, u64> {
        &self.given
    }

    /// Restores [`Owner::given`] from the state file (a restart).
    pub fn restore_given(&mut self, given: impl IntoIterator<Item = (usize, u64)>) {
        self.given.extend(given);
    }

    /// Lanes carved from `pool` with their allowances.
    pub fn lanes_of_pool(&self, pool: usize) -> Vec<(usize, u64)> {
        self.lanes_in_use()
            .into_iter()
            .filter(|l| l.available.0 > 0)
            .filter(|l| self.lane_pools(l.lane).contains(&pool))
            .map(|l| (l.lane, l.available.0))
            .collect()
    }

    /// Every lane carved from `pool`, whatever its `avail` holds: an agent may hold credits
    /// of it in its own local credits, which only a flush request brings back.
    pub fn lanes_carved_from(&self, pool: usize) -> Vec<usize> {
        self.carved_from
            .iter()
            .filter(|(_, pools)| pools.contains(&pool))
            .map(|(lane, _)| *lane)
            .collect()
    }

    /// Records waiting per lane (ring head minus tail) when each lane was last drained.
    pub fn ring_depths(&self) -> Vec<u64> {
        self.ring_depth.values().copied().collect()
    }

    /// Moves agents' denial counters into the metrics (by the limit they named and tier),
    /// and into the counts reported to the authority (by the limit that bound them, see
    /// [`Owner::take_denials`]).
    pub fn export_denials(&mut self, m: &Metrics) {
        for l in self.lanes_in_use() {
            let seen = self.denials_seen.entry(l.lane).or_insert(0);
            if l.denials > *seen {
                let n = l.denials - *seen;
                *seen = l.denials;
                let tier = l.key.map_or(Tier::Background, |k| k.tier);
                let reason = l.last_denial.map_or("allowance".to_string(), reason_label);
                m.denials
                    .get_or_create(&DenialLabels {
                        reason,
                        tier: tier.as_str().to_string(),
                    })
                    .inc_by(n);
                // The limit the sidecar recorded for the lane, if the agent's denial named one.
                let limit = self
                    .binding
                    .get(&l.lane)
                    .filter(|_| l.last_denial.is_some())
                    .cloned();
                let wire_tier = crate::convert::tier_to_wire(tier) as i32;
                let tenant = l
                    .key
                    .and_then(|k| self.tenants.get(usize::from(k.tenant)))
                    .cloned()
                    .unwrap_or_default();
                // Denials that name no limit are counted per tenant (the lane ran dry).
                let at = (
                    limit
                        .as_ref()
                        .map_or_else(|| format!("{tenant}/"), LimitKey::canonical),
                    wire_tier,
                );
                let c = self.denial_counts.entry(at).or_insert(v1::DenialCount {
                    limit,
                    tier: wire_tier,
                    count: 0,
                    tenant,
                });
                c.count = c.count.saturating_add(n);
            } else if l.denials < *seen {
                *seen = l.denials; // a lane reused by a new agent
            }
            m.ring_overflow.get();
        }
    }

    /// The denials counted since the last call, by binding limit and tier (for the next
    /// `DemandReport`).
    pub fn take_denials(&mut self) -> Vec<v1::DenialCount> {
        std::mem::take(&mut self.denial_counts)
            .into_values()
            .collect()
    }

    /// Tasks some lane in use is keyed by.
    pub fn task_lanes(&self) -> Vec<TaskRef> {
        let mut out: Vec<TaskRef> = self
            .lanes_in_use()
            .into_iter()
            .filter_map(|l| l.key?.task)
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// A short label for a limit kind (metrics).
pub fn reason_label(k: LimitKind) -> String {
    match k {
        LimitKind::TenantWallet => "wallet".into(),
        LimitKind::TenantWindow(h) => format!("tenant_{}", format!("{h:?}").to_lowercase()),
        LimitKind::TierWindow(t, h) => {
            format!("tier_{}_{}", t.as_str(), format!("{h:?}").to_lowercase())
        }
        LimitKind::TierFloor(_) => "tier_floor".into(),
        LimitKind::Task => "task".into(),
        LimitKind::HardCap => "hard_cap".into(),
        LimitKind::EmergencyAllowance => "emergency".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// The limits of a policy the region enforces: the wallet, then each enforceable quota
/// of the tenant (once each).
fn enforced_limits(p: &TenantPolicy) -> Vec<LimitKey> {
    let mut limits = vec![LimitKey::wallet(p.tenant.clone())];
    for q in &p.quotas {
        let Some(k) = &q.limit else { continue };
        // A task's budget comes with the task (`TaskOpen`), never with a policy.
        if q.shadow || k.tenant != p.tenant || limit_kind(k).is_none_or(|l| l == LimitKind::Task) {
            continue;
        }
        if !limits.iter().any(|l| l.canonical() == k.canonical()) {
            limits.push(k.clone());
        }
    }
    limits
}

/// Adds `pool` to the lane classes it applies to (a tier's window binds that tier only).
fn add_to_classes(classes: &mut [[Vec<usize>; 2]; Tier::COUNT], kind: LimitKind, pool: usize) {
    if !is_class_kind(kind) {
        return; // an agent's or a task's pool: listed per lane (`Owner::lane_pools`)
    }
    for tier in Tier::ALL {
        let applies = match kind {
            LimitKind::TierWindow(t, _) => t == tier,
            _ => true,
        };
        if applies {
            for per_init in classes[tier.as_index()].iter_mut() {
                if per_init.len() < tollgate_client::layout::MAX_LIMITS_PER_LANE {
                    per_init.push(pool);
                }
            }
        }
    }
}

/// Limits every lane of a class is subject to (not an agent's quota or a task's budget,
/// which bind only the lanes of that agent or task).
fn is_class_kind(kind: LimitKind) -> bool {
    !matches!(kind, LimitKind::Agent(_) | LimitKind::Task)
}

/// Writes `value` as JSON to a temporary name and renames it into place.
fn save_json(path: &Path, value: &impl serde::Serialize) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec(value).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(&tmp, path)
}

/// Per-tier floors of a policy: the floor of tier T binds T and every lower tier.
fn tier_floors(p: &TenantPolicy) -> Floors {
    let mut f = Floors::default();
    for tf in &p.tier_floors {
        if tf.shadow {
            continue;
        }
        let Some(t) = crate::convert::tier_from_wire(tf.tier) else {
            continue;
        };
        for i in t.as_index()..Tier::COUNT {
            f.abs[i] = f.abs[i].max(tf.floor_micro);
            f.permille[i] = f.permille[i].max(u64::from(tf.floor_permille));
        }
    }
    f
}

/// Mode of the region's holders folder (`<region>.holders/`, where every agent process
/// creates and locks a file: its liveness): the pod's group (its `fsGroup`, which owns the
/// region's emptyDir) reads and writes it, and setgid keeps every file created in it in that
/// group, so agents under any uid of the group can create their files there and no one
/// outside it can.
pub const HOLDERS_MODE: u32 = 0o2770;

/// Gives the holders folder [`HOLDERS_MODE`] if it has another (an agent made it first, or
/// someone in the pod changed it).
fn mend_holders(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(dir) else {
        return;
    };
    let mode = meta.permissions().mode() & 0o7777;
    if mode != HOLDERS_MODE
        && let Err(e) = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(HOLDERS_MODE))
    {
        tracing::warn!(folder = %dir.display(), mode = format!("{mode:o}"), error = %e, "cannot give the agents' folder mode 2770: agents under other uids of the pod's group may not be able to attach");
    }
}

/// Pools of the tenants' class limits (the wallet, tenant and tier windows): the first
/// ones, the only ones a tenant record's class lists can name.
fn class_pool_count(tenants: usize) -> usize {
    (tenants * 8).clamp(8, tollgate_client::layout::MAX_CLASS_POOL)
}

/// Pools of the region: the class pools, then a range for agents' quotas (16 per tenant)
/// and one per task that can be open.
fn region_pools(cfg: &Config) -> u32 {
    let n = cfg.tenants.len();
    let all = class_pool_count(n) + 16 * n + cfg.tasks as usize;
    all.min(tollgate_client::layout::MAX_POOLS) as u32
}

/// `--region` names an existing file that is not a Tollgate region: the sidecar refuses to
/// overwrite it.
#[derive(Debug, thiserror::Error)]
#[error(
    "{path} exists and is not a Tollgate region ({why}): refusing to overwrite it; point --region at another path, or remove the file if it may go"
)]
pub struct NotARegion {
    /// The file.
    pub path: PathBuf,
    /// What it holds instead.
    pub why: String,
}

/// Whether the unusable file at `path` may be replaced by a new region: it may if it is
/// empty, starts with the Tollgate magic (a damaged region: bad version, checksum, size), or
/// is all zeros at the start (sized by a create that wrote nothing yet); otherwise it is
/// refused ([`NotARegion`]).
fn check_replaceable(path: &Path) -> anyhow::Result<()> {
    use std::io::Read;
    let mut head = Vec::with_capacity(8);
    std::fs::File::open(path)
        .and_then(|f| f.take(8).read_to_end(&mut head))
        .with_context(|| format!("reading the start of the region file {}", path.display()))?;
    let refuse = |why: String| {
        Err(NotARegion {
            path: path.to_owned(),
            why,
        }
        .into())
    };
    match head.len() {
        0 => Ok(()),
        n if n < 8 => refuse(format!("{n} bytes, too small to be a region")),
        _ => {
            let word = u64::from_le_bytes(head[..8].try_into().unwrap_or([0; 8]));
            if word == tollgate_client::layout::MAGIC || word == 0 {
                Ok(())
            } else {
                refuse(format!(
                    "it starts with {:?}",
                    String::from_utf8_lossy(&head)
                ))
            }
        }
    }
}

fn create(cfg: &Config) -> anyhow::Result<Region> {
    let tenants = cfg.tenants.len() as u32;
    let config = RegionConfig {
        pools: region_pools(cfg),
        tenants,
        lanes: cfg.lanes,
        // About two seconds of a busy lane's calls: a sidecar restart rarely fills a ring
        // (and when one does, the amounts are still reported, see `reconcile`).
        ring_capacity: 1024,
        names: cfg.names,
        tasks: cfg.tasks,
        ..RegionConfig::default()
    };
    let r = Region::create(&cfg.region, config)
        .with_context(|| format!("creating the region {}", cfg.region.display()))?;
    tracing::info!(path = %cfg.region.display(), lanes = cfg.lanes, tasks = cfg.tasks, names = cfg.names, "region created");
    Ok(r)
}
