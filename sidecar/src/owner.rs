//! The sidecar as owner of the region: creates or re-attaches it, maps limits to pools and
//! tenants' lane classes to pools, and wraps the client crate's sidecar API in the shapes
//! the control loop ([`crate::core`]) works with.
//!
//! Pools are assigned to limits once and remembered in `pools.json` next to the region, so a
//! restarted sidecar finds the same pool for the same limit.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use tollgate_client::{
    AttachError, LaneInfo, PoolSpec, ReclaimReport, Region, RegionConfig, TenantSpec, UsageRecord,
};
use tollgate_core::{Credits, Horizon, LimitKind, PriceBook, PriceBookSpec, Tier};
use tollgate_proto::batch::RecordInput;
use tollgate_proto::v1::{self, LimitKey, TenantPolicy};

use crate::cli::Config;
use crate::metrics::{DenialLabels, Metrics};

/// How long an agent whose lane ran dry waits for a top-up before it denies.
pub const AGENT_MAX_WAIT: Duration = Duration::from_millis(50);

/// A pool's counters (micro-credits).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolSnap {
    /// Leased in.
    pub granted: u64,
    /// Uncarved.
    pub available: u64,
    /// In lane allowances.
    pub carved: u64,
    /// Consumed (including overruns).
    pub consumed: u64,
    /// Given back.
    pub returned: u64,
}

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
    /// Agent instance name (`<sidecar>/pid<pid>/lane<n>`).
    pub agent: String,
    /// Model name ("" for fixed-price calls).
    pub model: String,
    /// Full price book version.
    pub book_version: u64,
}

impl DrainedRecord {
    /// The batch input for this record.
    pub fn as_input(&self, now_unix_ms: u64) -> RecordInput<'_> {
        RecordInput {
            tenant: &self.tenant,
            agent_instance: &self.agent,
            model: &self.model,
            feature: "",
            task: "",
            tier: Some(crate::convert::tier_to_wire(self.rec.tier)),
            initiator: Some(crate::convert::initiator_to_wire(self.rec.initiator)),
            input_tokens: self.rec.input_tokens,
            output_tokens: self.rec.output_tokens,
            outcomes: 0,
            price_book_version: self.book_version,
            client_rated_micro: self.rec.actual.0,
            calls: 1,
            aggregate: false,
            at_unix_ms: now_unix_ms,
        }
    }
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct PoolMap {
    /// canonical limit -> (pool, wire key as JSON-friendly parts)
    pools: BTreeMap<String, PoolEntry>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct PoolEntry {
    pool: usize,
    tenant: String,
    scope: i32,
    window: i32,
    tier: i32,
    agent_instance: String,
}

impl PoolEntry {
    fn key(&self) -> LimitKey {
        LimitKey {
            tenant: self.tenant.clone(),
            scope: self.scope,
            window: self.window,
            agent_instance: self.agent_instance.clone(),
            tier: self.tier,
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
    /// Every lane seen in use: its key and owner holder id (drained even after a reclaim).
    keys: BTreeMap<usize, (tollgate_client::LaneKey, u64)>,
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
        // Per-agent-instance limits need per-lane pools: enforced by the authority only.
        v1::Scope::AgentInstance => None,
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
        let region = match Region::open_owner(&cfg.region) {
            Ok(r) => {
                tracing::info!(recovery = ?r.recovery(), "re-attached to the existing region");
                r
            }
            Err(AttachError::NotFound { .. }) => create(cfg)?,
            Err(
                e @ (AttachError::Unfinished
                | AttachError::ForeignMagic { .. }
                | AttachError::VersionMismatch { .. }
                | AttachError::Truncated { .. }
                | AttachError::Corrupt { .. }),
            ) => {
                tracing::error!(error = %e, "the region file is unusable: creating a new one (its leases settle at expiry)");
                let _ = std::fs::remove_file(&map_path);
                create(cfg)?
            }
            Err(e) => return Err(e).context("re-attaching to the region"),
        };
        region.set_slow_path(200, AGENT_MAX_WAIT);
        let map = match std::fs::read(&map_path) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                tracing::error!(error = %e, "pools.json unreadable: limits will be mapped again");
                PoolMap::default()
            }),
            Err(_) => PoolMap::default(),
        };
        Ok(Owner {
            region,
            sidecar_id: cfg.sidecar_id.clone(),
            tenants: cfg.tenants.clone(),
            map,
            map_path,
            books: BTreeMap::new(),
            denials_seen: BTreeMap::new(),
            floors: BTreeMap::new(),
            keys: BTreeMap::new(),
            default_floors: cfg.tier_floor_permille,
        })
    }

    /// The region (for audits in tests and the demo).
    pub fn region(&self) -> &Region {
        &self.region
    }

    /// Limits already mapped to pools (after a restart).
    pub fn limits(&self) -> Vec<(String, LimitKey, usize)> {
        self.map
            .pools
            .iter()
            .map(|(c, e)| (c.clone(), e.key(), e.pool))
            .collect()
    }

    fn save_map(&self) -> anyhow::Result<()> {
        let tmp = self.map_path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(&self.map)?)?;
        std::fs::rename(&tmp, &self.map_path)?;
        Ok(())
    }

    fn pool_for(&mut self, key: &LimitKey) -> anyhow::Result<usize> {
        let canonical = key.canonical();
        if let Some(e) = self.map.pools.get(&canonical) {
            return Ok(e.pool);
        }
        let used: Vec<usize> = self.map.pools.values().map(|e| e.pool).collect();
        let n = self.region.config().pools as usize;
        let pool = (0..n)
            .find(|p| !used.contains(p))
            .with_context(|| format!("no free pool for {canonical}: the region has {n}"))?;
        self.map.pools.insert(
            canonical,
            PoolEntry {
                pool,
                tenant: key.tenant.clone(),
                scope: key.scope,
                window: key.window,
                tier: key.tier,
                agent_instance: key.agent_instance.clone(),
            },
        );
        self.save_map()?;
        Ok(pool)
    }

    /// Configures a tenant's pools and lane classes from its policy; returns its limits.
    pub fn configure(
        &mut self,
        p: &TenantPolicy,
    ) -> anyhow::Result<Vec<(String, LimitKey, usize)>> {
        let t_index = self
            .tenants
            .iter()
            .position(|t| t == &p.tenant)
            .with_context(|| format!("tenant {} is not served here", p.tenant))?;
        let floors = if p.tier_floors.iter().any(|f| !f.shadow) {
            tier_floors(p)
        } else {
            let mut f = Floors::default();
            for (i, v) in self.default_floors.iter().enumerate() {
                // a tier's floor binds the tiers below it too
                for slot in f.permille.iter_mut().skip(i) {
                    *slot = (*slot).max(u64::from(*v));
                }
            }
            f
        };
        let mut limits = vec![LimitKey::wallet(p.tenant.clone())];
        for q in &p.quotas {
            let Some(k) = &q.limit else { continue };
            if q.shadow || k.tenant != p.tenant || limit_kind(k).is_none() {
                continue;
            }
            if !limits.iter().any(|l| l.canonical() == k.canonical()) {
                limits.push(k.clone());
            }
        }
        let mut out = Vec::new();
        let mut classes: [[Vec<usize>; 2]; Tier::COUNT] = Default::default();
        for key in limits {
            let kind = limit_kind(&key).context("limit kind")?;
            let pool = self.pool_for(&key)?;
            self.region
                .configure_pool(
                    pool,
                    &PoolSpec {
                        limit: kind,
                        floors: floors.abs.map(Credits),
                    },
                )
                .with_context(|| format!("configuring the pool of {}", key.canonical()))?;
            self.floors.insert(pool, floors);
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
            out.push((key.canonical(), key, pool));
        }
        self.region
            .configure_tenant(
                t_index,
                &TenantSpec {
                    name: p.tenant.clone(),
                    classes,
                },
            )
            .with_context(|| format!("configuring tenant {}", p.tenant))?;
        Ok(out)
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

    /// A pool's counters.
    pub fn pool(&self, pool: usize) -> PoolSnap {
        match self.region.pool(pool) {
            Ok(b) => PoolSnap {
                granted: b.granted,
                available: b.available,
                carved: b.carved,
                consumed: b.consumed,
                returned: b.returned,
            },
            Err(_) => PoolSnap::default(),
        }
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

    /// Reclaims every lane of every dead process.
    pub fn reclaim_dead(&mut self) -> Vec<ReclaimReport> {
        // Remember every claimed lane first: a lane reclaimed before any drain saw it claimed
        // (an agent that spent and exited within one drain period, reclaimed at shutdown
        // where reclaim runs before the drain) would otherwise never be drained again.
        self.note_lanes(&self.lanes_in_use());
        match self.region.reclaim_dead() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "reclaim failed");
                Vec::new()
            }
        }
    }

    fn lanes_in_use(&self) -> Vec<LaneInfo> {
        self.region.lanes()
    }

    /// Remembers the key and process of every claimed lane, so its records can still be
    /// drained and named after the lane is reclaimed.
    fn note_lanes(&mut self, in_use: &[LaneInfo]) {
        for l in in_use {
            if let Some(k) = l.key {
                self.keys
                    .insert(l.lane, (k, l.holder.map_or(0, |h| h.get())));
            }
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
        let lanes: Vec<usize> = self.keys.keys().copied().collect();
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
        let audit = self.region.audit();
        for d in out.iter_mut() {
            if let Some(b) = audit.lanes.iter().find(|b| b.lane == d.lane) {
                d.total = b.consumed.saturating_add(b.overrun);
            }
        }
        out
    }

    /// Frees the ring space of records that are durably in the outbox.
    pub fn release(&self, lane: usize, upto: u64) {
        if let Err(e) = self.region.release(lane, upto) {
            tracing::error!(lane, error = %e, "ring release failed");
        }
    }

    /// Names for a lane's aggregate record: (tenant, agent, tier, initiator).
    pub fn lane_names(
        &self,
        lane: usize,
    ) -> Option<(String, String, Tier, tollgate_core::Initiator)> {
        let (k, pid) = self.keys.get(&lane)?;
        Some((
            self.tenants.get(k.tenant as usize)?.clone(),
            self.agent_name(lane, *pid),
            k.tier,
            k.initiator,
        ))
    }

    /// The agent instance a lane's records are posted under: pod, agent process (its
    /// holder id: pids mean nothing across the pod's PID namespaces) and lane.
    fn agent_name(&self, lane: usize, holder: u64) -> String {
        format!("{}/{:012x}/lane{}", self.sidecar_id, holder, lane)
    }

    fn resolve(&self, mut rec: UsageRecord) -> DrainedRecord {
        // A lane drained after its reclaim has no key any more: use the one it had.
        let (key, pid) = self
            .keys
            .get(&rec.lane)
            .map_or((None, 0), |(k, p)| (Some(*k), *p));
        if rec.tenant == u16::MAX
            && let Some(k) = key
        {
            rec.tenant = k.tenant;
            rec.tier = k.tier;
            rec.initiator = k.initiator;
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
        DrainedRecord {
            agent: self.agent_name(rec.lane, pid),
            book_version: book.map_or(u64::from(rec.book_version), |(v, _)| *v),
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
                })
            })
            .collect()
    }

    /// Pools a lane is (or would be) carved from.
    pub fn lane_pools(&self, lane: usize) -> Vec<usize> {
        let Some(info) = self.lanes_in_use().into_iter().find(|l| l.lane == lane) else {
            return Vec::new();
        };
        let Some(key) = info.key else {
            return Vec::new();
        };
        let Some(tenant) = self.tenants.get(key.tenant as usize) else {
            return Vec::new();
        };
        self.map
            .pools
            .values()
            .filter(|e| &e.tenant == tenant)
            .filter(|e| match limit_kind(&e.key()) {
                Some(LimitKind::TierWindow(t, _)) => t == key.tier,
                Some(_) => true,
                None => false,
            })
            .map(|e| e.pool)
            .collect()
    }

    /// How much of `want` every pool of `lane` can pay now (above the lane tier's floor).
    /// When it is nothing, the binding limit is recorded in the lane for the agent's denial.
    pub fn carvable(&mut self, lane: usize, want: u64) -> u64 {
        let pools = self.lane_pools(lane);
        let Some(info) = self.lanes_in_use().into_iter().find(|l| l.lane == lane) else {
            return 0;
        };
        let Some(key) = info.key else { return 0 };
        let mut give = want;
        let mut binding: Option<(usize, u64)> = None;
        for p in &pools {
            let Ok(b) = self.region.pool(*p) else {
                return 0;
            };
            let floor = self.floor_of(*p, key.tier);
            let can = b.available.saturating_sub(floor);
            if can < give {
                give = can;
                binding = Some((*p, floor));
            }
        }
        if pools.is_empty() {
            return 0;
        }
        if give == 0
            && let Some((p, floor)) = binding
        {
            let limit = if floor > 0 {
                LimitKind::TierFloor(key.tier)
            } else {
                self.kind_of(p).unwrap_or(LimitKind::TenantWallet)
            };
            let _ = self
                .region
                .record_denial(lane, limit, Duration::from_millis(50));
        }
        give
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
            .pool(pool)
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

    /// Tops `lane` up by `amount`.
    pub fn top_up(&mut self, lane: usize, amount: u64) -> anyhow::Result<()> {
        Ok(self.region.top_up(lane, Credits(amount))?)
    }

    /// Takes up to `amount` back from `lane`.
    pub fn revoke(&mut self, lane: usize, amount: u64) -> u64 {
        self.region
            .revoke(lane, Credits(amount))
            .map(|c| c.0)
            .unwrap_or(0)
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

    /// Records waiting per lane (not tracked by the client; 0 after each drain).
    pub fn ring_depths(&self) -> Vec<u64> {
        Vec::new()
    }

    /// Moves agents' denial counters into the metrics (by the limit they named and tier).
    pub fn export_denials(&mut self, m: &Metrics) {
        for l in self.lanes_in_use() {
            let seen = self.denials_seen.entry(l.lane).or_insert(0);
            if l.denials > *seen {
                let tier = l.key.map_or("unknown", |k| k.tier.as_str());
                let reason = l.last_denial.map_or("allowance".to_string(), reason_label);
                m.denials
                    .get_or_create(&DenialLabels {
                        reason,
                        tier: tier.to_string(),
                    })
                    .inc_by(l.denials - *seen);
                *seen = l.denials;
            } else if l.denials < *seen {
                *seen = l.denials; // a lane reused by a new agent
            }
            m.ring_overflow.get();
        }
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

fn create(cfg: &Config) -> anyhow::Result<Region> {
    let tenants = cfg.tenants.len() as u32;
    let config = RegionConfig {
        pools: (tenants * 8).clamp(8, 255),
        tenants,
        lanes: cfg.lanes,
        // About two seconds of a busy lane's calls: a sidecar restart rarely fills a ring
        // (and when one does, the amounts are still reported, see `reconcile`).
        ring_capacity: 1024,
        ..RegionConfig::default()
    };
    let r = Region::create(&cfg.region, config)
        .with_context(|| format!("creating the region {}", cfg.region.display()))?;
    tracing::info!(path = %cfg.region.display(), lanes = cfg.lanes, "region created");
    Ok(r)
}
