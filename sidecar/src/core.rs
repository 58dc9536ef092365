//! The control loop's state and decisions: one owner of the region, the lease books, the
//! outbox and the session's outgoing queue. Everything here runs on one task, so no state
//! is shared except the metrics and health flags.
//!
//! Each tick: reclaim dead agents' lanes, drain the rings into signed batches (outbox first),
//! harvest consumption into the pools and attribute it to leases, expire leases, top up and
//! revoke lane allowances, ask for leases before pools run dry, and flush messages to the
//! authority.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::mpsc;
use tollgate_core::LimitKind;
use tollgate_proto::batch::RecordInput;
use tollgate_proto::v1::{
    self, DemandReport, Heartbeat, LeaseReturn, LimitDemand, LimitKey, RegisterRequest,
    SessionDown, SessionUp, TenantPolicy, session_down, session_up,
};

use crate::batcher::Batcher;
use crate::burn::BurnMeter;
use crate::config::Config;
use crate::degraded::{Connectivity, Emergency};
use crate::http::Health;
use crate::key::SidecarKey;
use crate::lease::{LaneAction, LanePolicy, LeasePolicy, PoolView};
use crate::leasebook::{LeaseBook, Return};
use crate::metrics::{self, Metrics};
use crate::outbox::Outbox;
use crate::owner::{Owner, PoolHints, Refused};
use crate::reconcile::{self, Cursor, LaneLedger};
use crate::session::Event;
use crate::state::SidecarState;

/// How long an unanswered lease request is waited for before it is sent again.
pub const DEMAND_RETRY: Duration = Duration::from_millis(500);

/// How often the rings are drained into a batch.
pub const DRAIN_EVERY: Duration = Duration::from_millis(50);

/// While the authority is unreachable a lease cannot be renewed, so it is expired this long
/// before its expiry: its credits are taken out of the pool and the lanes at once, and a
/// lane whose agent holds some of them in its own local credits is asked to flush them. An
/// agent calling in this window flushes at its call, and the flushed credits are taken at
/// the next tick, so by the expiry itself nothing of the lease is spendable.
pub const DISCONNECTED_EXPIRY_LEAD: Duration = Duration::from_millis(100);

/// How often denial counts are reported when no demand carries them.
pub const DENIALS_EVERY: Duration = Duration::from_secs(1);

fn now_unix_ms() -> u64 {
    tollgate_core::clock::unix_ms()
}

/// Runtime data of one limit (one pool).
#[derive(Debug)]
struct LimitRt {
    key: LimitKey,
    pool: usize,
    burn: BurnMeter,
    /// Demanded and not answered yet, and when it was asked.
    in_flight: u64,
    asked_at: Option<Instant>,
    emergency: Emergency,
    /// Pool consumed counter at the last harvest (consumption is attributed by delta).
    last_consumed: u64,
    /// Deleted by a policy: asks for no lease, gives its credits back, and is dropped once
    /// its pool is freed.
    retiring: bool,
    /// The authority's last `LeaseRefusal` for this limit, while it stands: nothing of it is
    /// free until then, so lanes it leaves dry deny at once. A grant ends it.
    refused: Option<Refused>,
    /// How long its last lease was granted for (a refusal without a time of its own lasts
    /// about that long).
    lease_ttl: Duration,
    /// Credits of leases that ended (expired, or not honoured) that the local budget could not
    /// give up yet: agents held them in their local credits, out of the sidecar's reach
    /// until they flush at their next call. Taken back at every tick until none is left, so
    /// an expired lease is not spent from lane allowances no lease backs any more.
    owed: u64,
}

/// Runtime data of one lane.
#[derive(Debug)]
struct LaneRt {
    burn: BurnMeter,
    last_consumed: u64,
    last_active: Instant,
}

/// The control loop's state, grouped by concern: the region and what is carved from it,
/// the authority link, usage reporting (durable until acknowledged), the lease state saved
/// to disk, and the rules (policies and sizing) the loop applies.
pub struct Core {
    cfg: Config,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    key: SidecarKey,
    started: Instant,
    shutting_down: bool,
    /// A grant or refusal arrived: waiting lanes should be served now rather than on the
    /// next tick (a new task's first call waits for exactly this grant).
    serve_now: bool,
    region: RegionSide,
    link: Link,
    usage: Reporting,
    saved: Saved,
    rules: Rules,
    tasks: tasks::TaskBook,
}

/// The region, its pools' limits and its lanes.
struct RegionSide {
    owner: Owner,
    limits: BTreeMap<String, LimitRt>,
    lanes: HashMap<usize, LaneRt>,
    /// The region was destroyed under the sidecar (why): nothing is read from it any more
    /// and a new one is being created.
    damaged: Option<String>,
    last_reclaim: Instant,
    /// Last time an agent spent, asked for credits, or a record was drained.
    last_activity: Instant,
}

/// The session with the authority.
struct Link {
    conn: Connectivity,
    up: Option<mpsc::Sender<SessionUp>>,
    up_queue: VecDeque<SessionUp>,
    heartbeat_every: Duration,
    last_up: Instant,
}

/// Usage on its way to the authority: drained, sealed, kept until acknowledged.
struct Reporting {
    batcher: Batcher,
    outbox: Outbox,
    /// Sequences in the outbox (sent or not), not yet acknowledged.
    unacked: BTreeSet<u64>,
    /// Per-lane reconciliation of records with totals.
    ledgers: BTreeMap<u32, LaneLedger>,
    /// Cursors as of the last acknowledged batch (what `reported.json` holds).
    acked_cursors: BTreeMap<u32, Cursor>,
    /// Cursors carried by each unacknowledged batch.
    unacked_cursors: BTreeMap<u64, Vec<(u32, Cursor)>>,
    reported_path: std::path::PathBuf,
    /// Per lane: what the sidecar has put into batches for it, as the authority will charge
    /// it (in this process's memory and the state file, never in the region).
    charged: BTreeMap<u32, u64>,
    last_drain: Instant,
}

/// The leases and lane bounds saved in `sidecar-state.json`.
struct Saved {
    state: SidecarState,
    state_path: std::path::PathBuf,
    state_dirty: bool,
    last_state_save: Instant,
}

/// What the loop enforces and how it sizes leases and allowances.
struct Rules {
    policies: BTreeMap<String, TenantPolicy>,
    /// Policies the region could not take (kept to retry when pools are freed).
    failed_policies: BTreeMap<String, TenantPolicy>,
    lease_policy: LeasePolicy,
    lane_policy: LanePolicy,
    last_demand: Instant,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("sidecar", &self.cfg.sidecar_id)
            .field("limits", &self.region.limits.len())
            .field("conn", &self.link.conn)
            .finish()
    }
}

impl Core {
    /// Creates or re-attaches the region, loads the key, the lease books and the outbox.
    pub fn start(cfg: Config, metrics: Arc<Metrics>, health: Arc<Health>) -> anyhow::Result<Core> {
        if let Some(dir) = cfg.region.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the region folder {}", dir.display()))?;
        }
        std::fs::create_dir_all(&cfg.state_dir).with_context(|| {
            format!(
                "creating the sidecar's state folder {}",
                cfg.state_dir.display()
            )
        })?;
        let key = SidecarKey::load_or_create(&cfg.state_dir.join("sidecar.key"))?;
        let (outbox, recovered) = Outbox::open(cfg.state_dir.join("outbox"))?;
        for bad in &recovered.corrupt {
            tracing::error!(file = %bad.display(), "corrupt outbox batch set aside");
        }
        let state_path = cfg.state_dir.join("sidecar-state.json");
        let state = match SidecarState::load(&state_path) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "starting without the lease state");
                SidecarState::default()
            }
        };
        let owner = Owner::open(&cfg)?;
        // What was reported before a restart: acknowledged batches (reported.json), then every
        // batch still in the outbox.
        let reported_path = cfg.state_dir.join("reported.json");
        let acked_cursors = reconcile::load(&reported_path);
        let mut ledgers: BTreeMap<u32, LaneLedger> = acked_cursors
            .iter()
            .map(|(l, c)| (*l, LaneLedger::from_cursor(*c)))
            .collect();
        let mut unacked = BTreeSet::new();
        let mut unacked_cursors = BTreeMap::new();
        // Batches sealed before the region was last replaced carry cursors of lanes that
        // no longer exist: the new region's rings start over.
        let rebuilt_at = read_rebuilt_at(&cfg.state_dir);
        for p in &recovered.pending {
            let (mut cursors, _) = Batcher::decode(p.seq, &p.payload)?;
            if p.seq < rebuilt_at {
                cursors.clear();
            }
            for (lane, c) in &cursors {
                ledgers.entry(*lane).or_default().cursor.merge(c);
            }
            unacked_cursors.insert(p.seq, cursors);
            unacked.insert(p.seq);
        }
        if !recovered.pending.is_empty() {
            tracing::info!(
                batches = recovered.pending.len(),
                "resuming unsent usage batches from the outbox"
            );
        }
        let now = tollgate_core::clock::now();
        let mut core = Core {
            metrics,
            health,
            key,
            started: now,
            shutting_down: false,
            serve_now: false,
            region: RegionSide {
                owner,
                limits: BTreeMap::new(),
                lanes: HashMap::new(),
                damaged: None,
                last_reclaim: now,
                last_activity: now,
            },
            link: Link {
                conn: Connectivity::Disconnected { since_ms: 0 },
                up: None,
                up_queue: VecDeque::new(),
                heartbeat_every: Duration::from_secs(5),
                last_up: now,
            },
            usage: Reporting {
                batcher: Batcher::new(cfg.sidecar_id.clone()),
                outbox,
                unacked,
                ledgers,
                acked_cursors,
                unacked_cursors,
                reported_path,
                charged: BTreeMap::new(),
                last_drain: now,
            },
            saved: Saved {
                state,
                state_path,
                state_dirty: false,
                last_state_save: now,
            },
            rules: Rules {
                policies: BTreeMap::new(),
                failed_policies: BTreeMap::new(),
                lease_policy: LeasePolicy::default(),
                lane_policy: LanePolicy::default(),
                last_demand: now - Duration::from_secs(60),
            },
            tasks: tasks::TaskBook::default(),
            cfg,
        };
        // Limits the region already has (a sidecar restart) come back with their pools.
        let retiring = core.region.owner.retiring();
        for (retired, (canonical, key, pool)) in core
            .region
            .owner
            .limits()
            .into_iter()
            .map(|l| (false, l))
            .chain(retiring.into_iter().map(|l| (true, l)))
        {
            let consumed = core.region.owner.pool(pool).consumed;
            let mut rt = LimitRt::new(key, pool, consumed, core.cfg.emergency_allowance);
            rt.retiring = retired;
            core.region.limits.insert(canonical, rt);
        }
        // What ended leases still had in agents' hands before the restart is still owed.
        for (canonical, owed) in std::mem::take(&mut core.saved.state.owed) {
            if let Some(l) = core.region.limits.get_mut(&canonical) {
                l.owed = owed;
            }
        }
        let lanes = std::mem::take(&mut core.saved.state.lanes);
        core.region
            .owner
            .restore_given(lanes.iter().map(|(l, b)| (*l as usize, b.given)));
        core.usage.charged = lanes.iter().map(|(l, b)| (*l, b.charged)).collect();
        core.metrics
            .outbox_pending
            .set(core.usage.unacked.len() as i64);
        Ok(core)
    }

    fn mono_secs(&self) -> u64 {
        tollgate_core::clock::now()
            .saturating_duration_since(self.started)
            .as_secs()
    }

    // ---- session events ------------------------------------------------------------------

    /// Handles one event from the session transport.
    pub fn on_event(&mut self, ev: Event) {
        match ev {
            Event::NeedRegister(reply) => {
                let _ = reply.send(self.register_request());
            }
            Event::Connected { response, up } => self.on_connected(*response, up),
            Event::Down(msg) => self.on_down(*msg),
            Event::Disconnected { reason } => {
                if self.link.conn.is_connected() {
                    tracing::warn!(%reason, "authority session lost: serving from leases (degraded mode)");
                } else {
                    tracing::debug!(%reason, "authority not reachable");
                }
                self.on_lost();
            }
            Event::Refused { code, message } => {
                // Not a passing outage: the credential is unknown, or does not cover these
                // tenants. Said loudly and kept visible until a registration succeeds.
                tracing::error!(
                    tenants = %self.cfg.tenants.join(","),
                    sidecar = %self.cfg.sidecar_id,
                    ?code,
                    %message,
                    "the authority refuses to register this sidecar: check its token and the tenants it may serve"
                );
                self.metrics.register_refusals.inc();
                self.metrics.register_refused.set(1);
                self.health.set_problem(
                    "authority".into(),
                    Some(format!(
                        "registration for tenants {} refused ({code:?}): {message}",
                        self.cfg.tenants.join(",")
                    )),
                );
                self.on_lost();
            }
        }
    }

    /// The session is gone (or was never opened): what was in flight is forgotten, batches
    /// stay in the outbox, and the sidecar serves from its leases.
    fn on_lost(&mut self) {
        self.metrics.reconnects.inc();
        if self.link.conn.is_connected() {
            self.link.conn = Connectivity::Disconnected {
                since_ms: tollgate_core::clock::now()
                    .saturating_duration_since(self.started)
                    .as_millis() as u64,
            };
        }
        self.link.up = None;
        self.link.up_queue.clear(); // batches stay in the outbox; demand is re-sent
        for l in self.region.limits.values_mut() {
            l.in_flight = 0;
            l.asked_at = None;
        }
        self.metrics.authority_connected.set(0);
        self.health.set_connected(false);
    }

    fn register_request(&self) -> RegisterRequest {
        let mut held = Vec::new();
        for (canonical, book) in &self.saved.state.leases {
            let Some(l) = self.region.limits.get(canonical) else {
                continue;
            };
            for lease in book.held() {
                held.push(v1::HeldLease {
                    lease_id: lease.id.clone(),
                    limit: Some(l.key.clone()),
                    amount_micro: lease.amount,
                    remaining_micro: lease.remaining(),
                    expires_unix_ms: lease.expires_unix_ms,
                });
            }
        }
        RegisterRequest {
            sidecar_id: self.cfg.sidecar_id.clone(),
            tenants: self.cfg.tenants.clone(),
            public_key: self.key.public_bytes().to_vec(),
            held_leases: held,
            next_seq: self.usage.outbox.next_seq(),
            agent: format!("tollgate-sidecar {}", env!("CARGO_PKG_VERSION")),
        }
    }

    fn on_connected(&mut self, r: v1::RegisterResponse, up: mpsc::Sender<SessionUp>) {
        tracing::info!(
            durable_through = r.durable_through_seq,
            "authority session open"
        );
        self.link.conn = Connectivity::Connected;
        self.link.up = Some(up);
        self.metrics.register_refused.set(0);
        self.health.set_problem("authority".into(), None);
        self.metrics.authority_connected.set(1);
        self.health.set_connected(true);
        if r.heartbeat_interval_ms > 0 {
            self.link.heartbeat_every =
                Duration::from_millis(r.heartbeat_interval_ms).max(Duration::from_millis(100));
        }
        // Batches the authority already has are done.
        let done: Vec<u64> = self
            .usage
            .unacked
            .range(..=r.durable_through_seq)
            .copied()
            .collect();
        for seq in done {
            self.acked(seq);
        }
        // Leases it no longer honours must not be spent.
        let mut dropped_any = false;
        for (canonical, book) in self.saved.state.leases.iter_mut() {
            let dropped = book.keep_honoured(&r.honoured_lease_ids);
            if dropped > 0 {
                dropped_any = true;
                if let Some(l) = self.region.limits.get_mut(canonical) {
                    let taken = take_back(&mut self.region.owner, l.pool, dropped);
                    l.owed = l.owed.saturating_add(dropped - taken);
                    tracing::warn!(limit = %canonical, dropped, taken, "leases not honoured by the authority withdrawn");
                }
            }
        }
        if dropped_any {
            self.saved.state_dirty = true;
        }
        for p in r.policies {
            self.apply_policy(p);
        }
        for b in r.price_books {
            self.apply_price_book(&b);
        }
        // The tasks' terms before any demand on their limits.
        self.resend_task_opens();
        // Replay everything not acknowledged, in order.
        self.replay_outbox();
        if self.usage.unacked.is_empty() {
            for l in self.region.limits.values_mut() {
                l.emergency.reconciled();
            }
        }
        self.rules.last_demand = tollgate_core::clock::now() - Duration::from_secs(60);
        self.flush_up();
    }

    fn replay_outbox(&mut self) {
        let seqs: Vec<u64> = self.usage.unacked.iter().copied().collect();
        if seqs.is_empty() {
            return;
        }
        let mut replayed = 0;
        for seq in seqs {
            let payload = match self.usage.outbox.read(seq) {
                Ok(Some(p)) => p,
                Ok(None) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read an outbox batch");
                    continue;
                }
            };
            match Batcher::decode(seq, &payload) {
                Ok((_, batch)) => {
                    self.link.up_queue.push_back(SessionUp {
                        msg: Some(session_up::Msg::Batch(batch)),
                    });
                    replayed += 1;
                }
                Err(e) => tracing::error!(error = %e, "cannot replay an outbox batch"),
            }
        }
        tracing::info!(batches = replayed, "replaying unacknowledged usage batches");
    }

    fn on_down(&mut self, msg: SessionDown) {
        let Some(m) = msg.msg else { return };
        match m {
            session_down::Msg::Grant(g) => {
                if let Some(lease) = g.lease {
                    self.on_grant(lease);
                    self.serve_now = true;
                }
            }
            session_down::Msg::Revocation(r) => self.on_revocation(r),
            session_down::Msg::Policy(p) => {
                if let Some(p) = p.policy {
                    self.apply_policy(p);
                }
            }
            session_down::Msg::PriceBook(b) => {
                if let Some(b) = b.price_book {
                    self.apply_price_book(&b);
                }
            }
            session_down::Msg::Ack(a) => self.on_ack(a),
            session_down::Msg::Heartbeat(_) => {}
            session_down::Msg::Refusal(r) => {
                self.on_refusal(r);
                self.serve_now = true;
            }
        }
    }

    /// Whether an event since the last call wants the lanes served before the next
    /// regular tick (a grant some agent may be waiting for, a refusal to deny at once).
    pub fn take_serve_now(&mut self) -> bool {
        std::mem::take(&mut self.serve_now)
    }

    /// Nothing of a limit is free at the authority: lanes it leaves dry are denied at once
    /// (next lanes pass) until the refusal's time or a grant, instead of waiting for a
    /// refill that is not coming. The demand for it stays (asked again every two seconds).
    fn on_refusal(&mut self, r: v1::LeaseRefusal) {
        let Some(key) = r.limit else { return };
        let canonical = key.canonical();
        let Some(l) = self.region.limits.get_mut(&canonical) else {
            return;
        };
        let reason = v1::LeaseRefusalReason::try_from(r.reason);
        let kind = match reason {
            Ok(v1::LeaseRefusalReason::HardCap) => LimitKind::HardCap,
            Ok(v1::LeaseRefusalReason::WalletDry) => LimitKind::TenantWallet,
            Ok(v1::LeaseRefusalReason::TaskSpent) => LimitKind::Task,
            _ => crate::owner::limit_kind(&key).unwrap_or(LimitKind::TenantWallet),
        };
        // Believed up to the limit's window end (a spent monthly quota: the month's end),
        // or a day for an unwindowed limit; a grant, a policy change or the next demand's
        // answer lift it before (see `crate::hint`).
        let now = now_unix_ms();
        let until = crate::hint::refusal_until(kind, r.retry_unix_ms, now, l.lease_ttl);
        // The demand stays in flight: asked again when it is forgotten (two seconds), not
        // at every tick.
        l.refused = (until > now).then_some(Refused {
            kind,
            until_unix_ms: until,
        });
        tracing::debug!(limit = %canonical, ?kind, until, "lease refused: nothing of the limit is free");
        if kind == LimitKind::Task && self.tasks.serves(&canonical) {
            self.on_task_refused(&canonical);
        }
    }

    fn on_grant(&mut self, lease: v1::Lease) {
        let Some(key) = lease.limit.clone() else {
            return;
        };
        let canonical = key.canonical();
        let now = now_unix_ms();
        let Some(l) = self.region.limits.get_mut(&canonical) else {
            tracing::warn!(limit = %canonical, "lease for a limit this sidecar does not serve: returning it");
            self.queue_returns(vec![Return {
                id: lease.lease_id,
                amount: lease.amount_micro,
                close: true,
            }]);
            return;
        };
        if self.shutting_down || l.retiring || lease.expires_unix_ms <= now {
            self.queue_returns(vec![Return {
                id: lease.lease_id,
                amount: lease.amount_micro,
                close: true,
            }]);
            return;
        }
        if let Err(e) = self.region.owner.grant(l.pool, lease.amount_micro) {
            tracing::error!(error = %e, limit = %canonical, "cannot put a lease into its pool: returning it");
            self.queue_returns(vec![Return {
                id: lease.lease_id,
                amount: lease.amount_micro,
                close: true,
            }]);
            return;
        }
        // One grant answers one demand (possibly with less than asked: fair share).
        l.in_flight = 0;
        l.asked_at = None;
        l.refused = None;
        l.lease_ttl = Duration::from_millis(lease.expires_unix_ms.saturating_sub(now));
        self.saved
            .state
            .leases
            .entry(canonical.clone())
            .or_default()
            .grant(
                lease.lease_id,
                lease.amount_micro,
                lease.expires_unix_ms,
                now,
            );
        self.saved.state_dirty = true;
        tracing::debug!(limit = %canonical, amount = lease.amount_micro, "lease granted");
        if self.tasks.serves(&canonical) {
            self.on_task_grant(&canonical);
        }
    }

    fn on_revocation(&mut self, r: v1::Revocation) {
        let Some(key) = r.limit else { return };
        let canonical = key.canonical();
        let Some(l) = self.region.limits.get(&canonical) else {
            return;
        };
        let pool = l.pool;
        let book = self
            .saved
            .state
            .leases
            .entry(canonical.clone())
            .or_default();
        let mut returns = Vec::new();
        // Leases revoked by id go back whole.
        let listed: u64 = book
            .held()
            .filter(|h| r.lease_ids.contains(&h.id))
            .map(|h| h.remaining())
            .sum();
        let remaining = book.remaining();
        let ceiling_excess = remaining.saturating_sub(r.ceiling_micro);
        let excess = ceiling_excess.max(listed);
        if excess > 0 {
            let taken = take_back(&mut self.region.owner, pool, excess);
            returns = book.give_back(taken);
            tracing::info!(limit = %canonical, ceiling = r.ceiling_micro, taken, wanted = excess, reason = %r.reason, "revocation applied");
        }
        self.saved.state_dirty = true;
        self.queue_returns(returns);
        self.flush_up();
    }

    fn on_ack(&mut self, a: v1::BatchAck) {
        match v1::AckStatus::try_from(a.status) {
            Ok(v1::AckStatus::Rejected) => {
                tracing::error!(seq = a.seq, error = %a.error, "usage batch rejected by the authority: dropped");
            }
            Ok(v1::AckStatus::Accepted) | Ok(v1::AckStatus::Duplicate) => {}
            _ => {
                tracing::warn!(
                    seq = a.seq,
                    "acknowledgement with an unknown status: keeping the batch"
                );
                return;
            }
        }
        self.acked(a.seq);
        if self.usage.unacked.is_empty() && self.link.conn.is_connected() {
            for l in self.region.limits.values_mut() {
                l.emergency.reconciled();
            }
        }
    }

    fn acked(&mut self, seq: u64) {
        // Record what this batch reported before it leaves the outbox.
        if let Some(cursors) = self.usage.unacked_cursors.remove(&seq)
            && !cursors.is_empty()
        {
            for (lane, c) in &cursors {
                self.usage.acked_cursors.entry(*lane).or_default().merge(c);
            }
            if let Err(e) = reconcile::save(&self.usage.reported_path, &self.usage.acked_cursors) {
                tracing::error!(error = %e, seq, "cannot save reported.json: keeping the batch");
                self.usage.unacked_cursors.insert(seq, cursors);
                return;
            }
        }
        if let Err(e) = self.usage.outbox.ack(seq) {
            tracing::error!(error = %e, seq, "cannot remove an acknowledged batch");
        }
        if self.usage.unacked.remove(&seq) {
            self.metrics.batches_acked.inc();
        }
        self.metrics
            .outbox_pending
            .set(self.usage.unacked.len() as i64);
    }

    fn apply_policy(&mut self, p: TenantPolicy) {
        if !self.cfg.tenants.contains(&p.tenant) {
            return;
        }
        if let Some(old) = self.rules.policies.get(&p.tenant)
            && old.version > p.version
        {
            return; // an older push arriving late
        }
        for canonical in self.region.owner.retire_dropped(&p) {
            self.retire(&canonical);
        }
        match self.region.owner.configure(&p) {
            Ok(configured) => {
                for (canonical, key, pool) in configured.limits {
                    match self.region.limits.get_mut(&canonical) {
                        Some(l) => l.retiring = false,
                        None => {
                            let consumed = self.region.owner.pool(pool).consumed;
                            self.region.limits.insert(
                                canonical,
                                LimitRt::new(key, pool, consumed, self.cfg.emergency_allowance),
                            );
                        }
                    }
                }
                // A raised cap or quota may free what was refused: ask again at once. The
                // same version pushed again (a new session) changes nothing.
                let newer = self
                    .rules
                    .policies
                    .get(&p.tenant)
                    .is_none_or(|old| old.version < p.version);
                let mut lift = Vec::new();
                for l in self
                    .region
                    .limits
                    .values_mut()
                    .filter(|l| newer && l.key.tenant == p.tenant)
                {
                    if l.refused.take().is_some() {
                        lift.push(l.pool);
                        l.in_flight = 0;
                        l.asked_at = None;
                    }
                }
                self.region.owner.lift_denials(&lift);
                self.rules.failed_policies.remove(&p.tenant);
                self.health.set_policy_error(&p.tenant, None);
                tracing::info!(tenant = %p.tenant, version = p.version, cap = p.hard_cap_micro, "policy applied");
                self.rules.policies.insert(p.tenant.clone(), p);
            }
            Err(e) => {
                // Not recorded as applied: the region still enforces the last policy that
                // was, and the sidecar says so (log, metric, readiness) until one is.
                self.metrics.policy_errors.inc();
                tracing::error!(tenant = %p.tenant, version = p.version, error = %e, "cannot apply the pushed policy: the previous one stays in force");
                self.health
                    .set_policy_error(&p.tenant, Some(format!("version {}: {e}", p.version)));
                self.rules.failed_policies.insert(p.tenant.clone(), p);
            }
        }
        self.metrics
            .policies_failing
            .set(self.rules.failed_policies.len() as i64);
    }

    /// A limit deleted by a policy: stop asking for leases and give back what its pool holds
    /// (lanes carved from it are revoked by [`Owner::retire_step`]).
    fn retire(&mut self, canonical: &str) {
        let Some(l) = self.region.limits.get_mut(canonical) else {
            return;
        };
        l.retiring = true;
        l.in_flight = 0;
        l.asked_at = None;
        self.give_back_retiring();
    }

    /// One pass over the deleted limits: their pools' uncarved credits go back to the
    /// authority; a limit whose pool is freed closes its leases and is dropped.
    fn retire_pass(&mut self) {
        if !self.region.limits.values().any(|l| l.retiring) {
            return;
        }
        self.give_back_retiring();
        let freed = self.region.owner.retire_step();
        let mut returns = Vec::new();
        for canonical in &freed {
            self.region.limits.remove(canonical);
            self.metrics.forget_limit(canonical);
            if let Some(mut book) = self.saved.state.leases.remove(canonical) {
                returns.extend(book.close_all());
            }
            self.saved.state_dirty = true;
        }
        self.queue_returns(returns);
        // Freed pools may be what a refused policy was waiting for.
        if !freed.is_empty() {
            let waiting: Vec<TenantPolicy> = self.rules.failed_policies.values().cloned().collect();
            for p in waiting {
                self.apply_policy(p);
            }
        }
    }

    fn give_back_retiring(&mut self) {
        let mut returns = Vec::new();
        for (canonical, l) in self.region.limits.iter().filter(|(_, l)| l.retiring) {
            let available = self.region.owner.pool(l.pool).available;
            if available == 0 {
                continue;
            }
            let taken = self.region.owner.give_back(l.pool, available);
            // What the leases do not cover was credited for lanes still carved from the
            // pool (see `Owner::top_up`): it goes nowhere.
            let book = self
                .saved
                .state
                .leases
                .entry(canonical.clone())
                .or_default();
            returns.extend(book.give_back(taken));
            self.saved.state_dirty = true;
        }
        self.queue_returns(returns);
    }

    fn apply_price_book(&mut self, b: &v1::PriceBook) {
        if !b.tenant.is_empty() && !self.cfg.tenants.contains(&b.tenant) {
            return;
        }
        match crate::convert::price_book(b) {
            Ok(spec) => match self.region.owner.publish_price_book(spec) {
                Ok(()) => tracing::info!(version = b.version, "price book published to the region"),
                Err(e) => tracing::error!(error = %e, "cannot publish the price book"),
            },
            Err(e) => tracing::error!(error = %e, "pushed price book is invalid"),
        }
    }

    fn queue_returns(&mut self, returns: Vec<Return>) {
        let through_seq = self.usage.outbox.next_seq().saturating_sub(1);
        for r in returns {
            if r.amount == 0 && !r.close {
                continue;
            }
            self.link.up_queue.push_back(SessionUp {
                msg: Some(session_up::Msg::LeaseReturn(LeaseReturn {
                    lease_id: r.id,
                    amount_micro: r.amount,
                    close: r.close,
                    through_seq,
                })),
            });
        }
    }

    /// Sends what is queued while the session is up.
    pub fn flush_up(&mut self) {
        let Some(up) = &self.link.up else { return };
        while let Some(m) = self.link.up_queue.pop_front() {
            let is_batch = matches!(m.msg, Some(session_up::Msg::Batch(_)));
            match up.try_send(m) {
                Ok(()) => {
                    self.link.last_up = tollgate_core::clock::now();
                    if is_batch {
                        self.metrics.batches_sent.inc();
                    }
                }
                Err(mpsc::error::TrySendError::Full(m)) => {
                    self.link.up_queue.push_front(m);
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.link.up = None;
                    return;
                }
            }
        }
    }

    /// Whether nothing waits to be sent.
    pub fn up_queue_empty(&self) -> bool {
        self.link.up_queue.is_empty()
    }

    // ---- the tick --------------------------------------------------------------------------

    /// One pass of the control loop.
    pub fn tick(&mut self) {
        let started = std::time::Instant::now();
        self.tick_pass();
        self.metrics
            .tick_seconds
            .observe(started.elapsed().as_secs_f64());
    }

    fn tick_pass(&mut self) {
        // First, before any word of the region is touched.
        if self.region_unusable() {
            self.flush_up();
            self.health.tick();
            return;
        }
        let now = tollgate_core::clock::now();
        self.region.owner.heartbeat(now_unix_ms());
        // While shutting down, reclaim at every tick: agents that exited must give their
        // allowances back before the leases are returned.
        if self.shutting_down
            || now.duration_since(self.region.last_reclaim) >= self.cfg.liveness_timeout / 2
        {
            self.region.last_reclaim = now;
            self.reclaim();
        }
        // Draining also harvests consumption into the pools; batching every DRAIN_EVERY keeps
        // batches large without letting the rings fill.
        if self.shutting_down || now.duration_since(self.usage.last_drain) >= DRAIN_EVERY {
            self.usage.last_drain = now;
            self.drain();
        }
        self.harvest();
        self.expire();
        self.tasks_pass();
        self.retire_pass();
        self.lanes_pass();
        self.demand();
        if self.link.conn.is_connected()
            && now.duration_since(self.link.last_up) >= self.link.heartbeat_every
        {
            self.link.up_queue.push_back(SessionUp {
                msg: Some(session_up::Msg::Heartbeat(Heartbeat {
                    unix_ms: now_unix_ms(),
                })),
            });
        }
        self.flush_up();
        if self.saved.state_dirty
            && now.duration_since(self.saved.last_state_save) >= Duration::from_millis(200)
        {
            self.save_state();
        }
        self.update_metrics();
        self.health.tick();
    }

    /// Checks the region for damage (a process that maps it truncated, removed, replaced
    /// or overwrote it). On the tick that finds it: counted, logged, `/readyz` not ready,
    /// and nothing more is read from it. On the next: a new region, configured from the
    /// sidecar's own memory. True while the region cannot be used.
    fn region_unusable(&mut self) -> bool {
        if self.region.damaged.is_none() {
            let Some(d) = self.region.owner.damage() else {
                return false;
            };
            self.metrics.region_damage.inc();
            tracing::error!(damage = %d, "the region was destroyed under the sidecar: nothing more is drained or harvested from it; creating a new one");
            self.health
                .set_problem("region".into(), Some(format!("{d}; creating a new region")));
            self.region.damaged = Some(d.to_string());
            return true;
        }
        match self.rebuild_region() {
            Ok(()) => {
                tracing::info!(was = ?self.region.damaged, "a new region is ready: agents re-attach to it");
                self.region.damaged = None;
                self.health.set_problem("region".into(), None);
                false
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot create a new region: retrying");
                true
            }
        }
    }

    /// A new region from what the sidecar holds in memory: its policies, price book and
    /// leases (each limit's pool gets what its leases still have). What was drained from
    /// the old one is in the outbox; the old lanes' cursors are done with.
    fn rebuild_region(&mut self) -> anyhow::Result<()> {
        write_rebuilt_at(&self.cfg.state_dir, self.usage.outbox.next_seq())?;
        self.usage.ledgers.clear();
        self.usage.acked_cursors.clear();
        reconcile::save(&self.usage.reported_path, &self.usage.acked_cursors)?;
        for cursors in self.usage.unacked_cursors.values_mut() {
            cursors.clear();
        }
        self.usage.charged.clear();
        self.region.lanes.clear();
        self.saved.state_dirty = true;
        self.region.owner.rebuild(&self.cfg)?;
        let policies: Vec<TenantPolicy> = self
            .rules
            .policies
            .values()
            .chain(self.rules.failed_policies.values())
            .cloned()
            .collect();
        for p in policies {
            self.rules.policies.remove(&p.tenant);
            self.apply_policy(p);
        }
        for (canonical, l) in self.region.limits.iter_mut() {
            let held = self
                .saved
                .state
                .leases
                .get(canonical)
                .map_or(0, LeaseBook::remaining);
            if held > 0 {
                self.region.owner.grant(l.pool, held)?;
            }
            l.last_consumed = self.region.owner.pool(l.pool).consumed;
            // The new pool holds exactly what the leases still have.
            l.owed = 0;
            l.in_flight = 0;
            l.asked_at = None;
        }
        Ok(())
    }

    fn save_state(&mut self) {
        self.saved.state.owed = self
            .region
            .limits
            .iter()
            .filter(|(_, l)| l.owed > 0)
            .map(|(c, l)| (c.clone(), l.owed))
            .collect();
        self.saved.state.lanes = self
            .region
            .owner
            .given_all()
            .iter()
            .map(|(l, g)| (*l as u32, *g))
            .chain(self.usage.charged.keys().map(|l| (*l, 0)))
            .map(|(l, _)| {
                let bound = crate::state::LaneBound {
                    given: self.region.owner.given(l as usize),
                    charged: self.usage.charged.get(&l).copied().unwrap_or(0),
                };
                (l, bound)
            })
            .collect();
        match self.saved.state.save(&self.saved.state_path) {
            Ok(()) => {
                self.saved.state_dirty = false;
                self.saved.last_state_save = tollgate_core::clock::now();
            }
            Err(e) => tracing::error!(error = %e, "cannot save the lease state"),
        }
    }

    fn reclaim(&mut self) {
        for r in self.region.owner.reclaim_dead() {
            self.metrics.processes_reclaimed.inc();
            self.metrics.reclaimed_credits.inc_by(r.returned);
            self.region.lanes.remove(&r.lane);
            tracing::info!(lane = r.lane, holder = ?r.holder.map(|h| h.to_string()), settled = r.settled, returned = r.returned, "reclaimed a dead agent's lane");
        }
    }

    fn drain(&mut self) {
        let mut drains = self
            .region
            .owner
            .drain(crate::batcher::MAX_RECORDS_PER_BATCH);
        // The rings' space is freed only after a batch is in the outbox, so after a crash
        // between the two the ring still holds records the outbox already has: skip every
        // sequence the lane's cursor (restored from the outbox) has already reported.
        for d in drains.iter_mut() {
            let next_seq = self
                .usage
                .ledgers
                .get(&(d.lane as u32))
                .map_or(0, |l| l.cursor.next_seq);
            d.records.retain(|r| r.rec.seq >= next_seq);
        }
        let releases: Vec<_> = drains.iter().map(|d| (d.lane, d.upto)).collect();
        let now = tollgate_core::clock::now();
        let now_ms = now_unix_ms();
        // Work on copies: the ledgers advance only once the batch is in the outbox.
        let mut next = Advance::default();
        let mut aggregates = Vec::new();
        let mut count = 0usize;
        for d in drains.iter_mut() {
            let lane = d.lane as u32;
            let mut l = self.usage.ledgers.get(&lane).cloned().unwrap_or_default();
            // While shutting down, a lane no live agent owns has nothing in flight: its lost
            // detail is reported now rather than after the quiet period.
            let settled = self.shutting_down && !d.live;
            if let Some(agg) = self.bound_lane(d, &mut l, &mut next, now, settled) {
                aggregates.push((d.lane, agg));
            }
            count += d.records.len();
            next.ledgers.insert(lane, l);
        }
        if count == 0 && aggregates.is_empty() {
            // Nothing to send; keep the quiet-period clocks. Whatever the rings held is
            // already in the outbox.
            self.advance(next);
            for (lane, upto) in releases {
                self.region.owner.release(lane, upto);
            }
            return;
        }
        let names: Vec<_> = aggregates
            .iter()
            .map(|(lane, agg)| (self.region.owner.lane_names(*lane), *agg))
            .collect();
        let mut recs: Vec<RecordInput<'_>> = drains
            .iter()
            .flat_map(|d| d.records.iter().map(|r| r.as_input(now_ms)))
            .collect();
        for (n, agg) in &names {
            let Some(n) = n else {
                continue;
            };
            let (tenant, agent) = (&n.tenant, &n.instance);
            recs.push(RecordInput {
                tenant,
                agent: &n.agent_name,
                agent_instance: agent,
                task: &n.task,
                tier: Some(crate::convert::tier_to_wire(n.tier)),
                initiator: Some(crate::convert::initiator_to_wire(n.initiator)),
                client_rated_micro: agg.amount,
                calls: u32::try_from(agg.calls).unwrap_or(u32::MAX),
                aggregate: true,
                at_unix_ms: now_ms,
                ..Default::default()
            });
            tracing::warn!(tenant = %tenant, agent = %agent, amount = agg.amount, calls = agg.calls, "reporting usage whose per-call detail was lost as one aggregate record");
            self.metrics.ring_overflow.inc_by(agg.calls);
        }
        let cursors: Vec<(u32, Cursor)> =
            next.ledgers.iter().map(|(l, g)| (*l, g.cursor)).collect();
        match self
            .usage
            .batcher
            .seal(&mut self.usage.outbox, &self.key, &recs, &cursors, now_ms)
        {
            Ok(batch) => {
                self.metrics.records_drained.inc_by(count as u64);
                self.usage.unacked.insert(batch.seq);
                self.usage.unacked_cursors.insert(batch.seq, cursors);
                self.metrics
                    .outbox_pending
                    .set(self.usage.unacked.len() as i64);
                if self.link.up.is_some() {
                    self.link.up_queue.push_back(SessionUp {
                        msg: Some(session_up::Msg::Batch(batch)),
                    });
                }
                self.advance(next);
                // Durable now (written and renamed): free their ring space.
                for (lane, upto) in releases {
                    self.region.owner.release(lane, upto);
                }
            }
            Err(e) => {
                // Nothing released: the records stay in the rings and go into the next
                // batch that can be written (a full ring meanwhile counts lost detail,
                // which reconciliation reports as an aggregate).
                self.metrics.outbox_write_errors.inc();
                tracing::error!(error = %e, records = count, "cannot persist a usage batch");
            }
        }
    }

    /// Bounds what is reported for one drained lane: its records, then the aggregate of its
    /// lost detail, are reported only while what the lane was charged in total stays within
    /// what the sidecar gave it plus the overrun allowance. The rest is withheld (the
    /// ledger still counts it, so it is never reported later) as suspected tampering: a
    /// process that maps the region can write any word of its lane, or its ring.
    fn bound_lane(
        &self,
        d: &mut crate::owner::LaneDrain,
        l: &mut LaneLedger,
        next: &mut Advance,
        now: Instant,
        settled: bool,
    ) -> Option<reconcile::Aggregate> {
        let lane = d.lane as u32;
        let cap = self
            .region
            .owner
            .given(d.lane)
            .saturating_add(self.cfg.lane_overrun_allowance);
        let mut charged = self.usage.charged.get(&lane).copied().unwrap_or(0);
        let mut withheld = 0u64;
        d.records.retain(|r| {
            l.record(r.rec.seq, r.rec.actual.0);
            let fits = charged
                .checked_add(r.charge_bound)
                .is_some_and(|c| c <= cap);
            if fits {
                charged += r.charge_bound;
            } else {
                withheld = withheld.saturating_add(r.charge_bound);
            }
            fits
        });
        let mut agg = l.check_settled(d.total, d.lost_total, now, settled);
        if let Some(a) = agg.as_mut() {
            let send = a.amount.min(cap.saturating_sub(charged));
            withheld = withheld.saturating_add(a.amount - send);
            charged += send;
            a.amount = send;
        }
        if withheld > 0 {
            next.withheld.push((d.lane, withheld, cap));
        }
        next.charged.insert(lane, charged);
        agg.filter(|a| a.amount > 0)
    }

    /// The drain's bookkeeping, once its batch is in the outbox (or there was none to write).
    fn advance(&mut self, next: Advance) {
        self.usage.ledgers.extend(next.ledgers);
        if !next.charged.is_empty() {
            self.usage.charged.extend(next.charged);
            self.saved.state_dirty = true;
        }
        for (lane, amount, cap) in next.withheld {
            self.metrics.suspected_tampering.inc_by(amount);
            tracing::warn!(
                lane,
                amount,
                bound = cap,
                agent = ?self.region.owner.lane_names(lane).map(|n| n.instance),
                "a lane reported more than the sidecar gave it plus the overrun allowance: the excess is not reported (suspected tampering with the region)"
            );
        }
    }

    fn harvest(&mut self) {
        let secs = self.mono_secs();
        for lane in self.region.owner.harvest_all() {
            let rt = self
                .region
                .lanes
                .entry(lane.lane)
                .or_insert_with(|| LaneRt::new(lane.consumed, tollgate_core::clock::now()));
            let delta = lane.consumed.saturating_sub(rt.last_consumed);
            if delta > 0 || lane.wants_more {
                self.region.last_activity = tollgate_core::clock::now();
            }
            if delta > 0 {
                rt.burn.record(secs, delta);
                rt.last_active = tollgate_core::clock::now();
                rt.last_consumed = lane.consumed;
            }
        }
        for (canonical, l) in self.region.limits.iter_mut() {
            let snap = self.region.owner.pool(l.pool);
            let delta = snap.consumed.saturating_sub(l.last_consumed);
            if delta > 0 {
                l.last_consumed = snap.consumed;
                l.burn.record(secs, delta);
                if Metrics::exported(&l.key) {
                    self.metrics
                        .consumed
                        .get_or_create(&Metrics::limit(canonical))
                        .inc_by(delta);
                }
                let book = self
                    .saved
                    .state
                    .leases
                    .entry(canonical.clone())
                    .or_default();
                let unbacked = book.consume(delta);
                if unbacked > 0 {
                    tracing::debug!(limit = %canonical, unbacked, "consumption past the held leases (overrun or emergency)");
                }
                self.saved.state_dirty = true;
            }
        }
    }

    /// Ends the leases whose time is up (early by [`DISCONNECTED_EXPIRY_LEAD`] while the
    /// authority is unreachable: they cannot be renewed) and takes what they still have out
    /// of the local budget, then goes on taking what earlier ends could not take yet.
    fn expire(&mut self) {
        let now = now_unix_ms();
        let until = if self.link.conn.is_connected() {
            now
        } else {
            now + DISCONNECTED_EXPIRY_LEAD.as_millis() as u64
        };
        let mut all = Vec::new();
        for (canonical, book) in self.saved.state.leases.iter_mut() {
            if book.next_expiry().is_none_or(|e| e > until) {
                continue;
            }
            let returns = book.expire(until);
            let Some(l) = self.region.limits.get_mut(canonical) else {
                continue;
            };
            let left: u64 = returns.iter().map(|r| r.amount).sum();
            if left > 0 {
                let taken = take_back(&mut self.region.owner, l.pool, left);
                if taken < left {
                    // In agents' local credits (asked to flush) or held by reservations in
                    // flight: taken as they come back; a reservation's use is attributed to
                    // the next lease, if any.
                    l.owed = l.owed.saturating_add(left - taken);
                    tracing::debug!(limit = %canonical, left, taken, "expired lease partly in lanes: taking the rest back as it is flushed");
                }
            }
            self.saved.state_dirty = true;
            all.extend(returns);
        }
        self.queue_returns(all);
        self.take_owed();
    }

    /// Takes back what ended leases left in lanes, as agents flush it (see [`LimitRt::owed`]).
    /// Never more than the local budget holds beyond what its live leases back: what was
    /// spent of it meanwhile is gone (and reported).
    fn take_owed(&mut self) {
        for (canonical, l) in self.region.limits.iter_mut().filter(|(_, l)| l.owed > 0) {
            let snap = self.region.owner.pool(l.pool);
            let backed = self
                .saved
                .state
                .leases
                .get(canonical)
                .map_or(0, LeaseBook::remaining);
            let unbacked = snap
                .available
                .saturating_add(snap.carved)
                .saturating_sub(backed);
            if unbacked < l.owed {
                l.owed = unbacked;
                self.saved.state_dirty = true;
            }
            if l.owed == 0 {
                continue;
            }
            let taken = take_back(&mut self.region.owner, l.pool, l.owed);
            l.owed -= taken;
            if taken > 0 {
                self.saved.state_dirty = true;
                tracing::debug!(limit = %canonical, taken, still = l.owed, "took back credits of ended leases from lanes");
            }
        }
    }

    fn lanes_pass(&mut self) {
        let secs = self.mono_secs();
        let now = tollgate_core::clock::now();
        let degraded = !self.link.conn.is_connected();
        self.region.owner.refresh();
        let wall_ms = now_unix_ms();
        let hints = PoolHints {
            refused: self
                .region
                .limits
                .values()
                .filter_map(|l| Some((l.pool, l.refused?)))
                .filter(|(_, r)| r.until_unix_ms > wall_ms)
                .collect(),
            demand_left: self
                .region
                .limits
                .values()
                .filter_map(|l| {
                    let asked = l.asked_at?;
                    Some((
                        l.pool,
                        DEMAND_RETRY.saturating_sub(now.saturating_duration_since(asked)),
                    ))
                })
                .collect(),
        };
        let live = self.region.owner.live_lanes();
        let mut lanes_per_task: BTreeMap<tollgate_client::TaskRef, u64> = BTreeMap::new();
        for t in live.iter().filter_map(|l| l.task) {
            *lanes_per_task.entry(t).or_insert(0) += 1;
        }
        for lane in live {
            if let Some(t) = lane.task
                && !self.shutting_down
            {
                self.feed_calls(&lane, lanes_per_task.get(&t).copied().unwrap_or(1));
            }
            let rt = self
                .region
                .lanes
                .entry(lane.lane)
                .or_insert_with(|| LaneRt::new(lane.consumed, now));
            if lane.wants_more {
                rt.last_active = now;
            }
            let view = crate::lease::LaneView {
                allowance: lane.allowance,
                burn_per_sec: rt.burn.rate_per_sec(secs).max(rt.burn.last_second(secs)),
                idle_for: now.duration_since(rt.last_active),
                asked: lane.asked,
            };
            let action = if self.shutting_down {
                LaneAction::Revoke(lane.allowance)
            } else {
                self.rules.lane_policy.action(view)
            };
            match action {
                LaneAction::Keep => {}
                LaneAction::Revoke(x) if x > 0 => {
                    let _ = self.region.owner.revoke(lane.lane, x);
                }
                LaneAction::Revoke(_) => {}
                LaneAction::TopUp(want) => {
                    let give = self.region.owner.carvable(lane.lane, want, &hints);
                    let give = if give == 0 && degraded {
                        self.emergency_for(lane.lane, want)
                    } else {
                        give
                    };
                    if give > 0 && self.region.owner.top_up(lane.lane, give).is_ok() {
                        self.saved.state_dirty = true;
                    }
                }
            }
        }
    }

    /// Degraded mode with a dry pool: draw the emergency allowance of every limit the lane is
    /// subject to (all or nothing) into the pools, then carve it.
    fn emergency_for(&mut self, lane: usize, want: u64) -> u64 {
        let pools = self.region.owner.lane_pools(lane);
        if pools.is_empty() {
            return 0;
        }
        let mut limits: Vec<&mut LimitRt> = self
            .region
            .limits
            .values_mut()
            .filter(|l| pools.contains(&l.pool))
            .collect();
        let can = limits
            .iter()
            .map(|l| l.emergency.left())
            .min()
            .unwrap_or(0)
            .min(want);
        if can == 0 {
            return 0;
        }
        for l in limits.iter_mut() {
            let got = l.emergency.draw(can);
            debug_assert_eq!(got, can);
            if let Err(e) = self.region.owner.grant(l.pool, got) {
                tracing::error!(error = %e, "cannot add the emergency allowance to a pool");
                return 0;
            }
            tracing::warn!(limit = %l.key.canonical(), amount = got, left = l.emergency.left(), "spending the emergency allowance (authority unreachable)");
        }
        self.region.owner.carvable(lane, can, &PoolHints::default())
    }

    fn demand(&mut self) {
        if !self.link.conn.is_connected() || self.shutting_down {
            return;
        }
        let secs = self.mono_secs();
        let now = tollgate_core::clock::now();
        let mut demands = Vec::new();
        for (canonical, l) in self.region.limits.iter_mut().filter(|(_, l)| !l.retiring) {
            // An unanswered demand is forgotten after two seconds and asked again.
            if l.asked_at
                .is_some_and(|t| now.duration_since(t) > Duration::from_secs(2))
            {
                l.in_flight = 0;
                l.asked_at = None;
            }
            let snap = self.region.owner.pool(l.pool);
            let held = self
                .saved
                .state
                .leases
                .get(canonical)
                .map_or(0, LeaseBook::remaining);
            let burn = l.burn.rate_per_sec(secs).max(l.burn.last_second(secs));
            // The uncarved reserve is what refills lanes: keep it above the low-water mark.
            // Credits below the largest tier floor serve only the top tiers, and leases about
            // to expire will be returned: renew before either leaves the pool short.
            let expiring = self.saved.state.leases.get(canonical).map_or(0, |b| {
                b.expiring_before(
                    now_unix_ms()
                        + 2 * self.rules.lease_policy.refill_lead.as_millis() as u64
                        + 1_000,
                )
            });
            let view = PoolView {
                local: snap
                    .available
                    .saturating_sub(self.region.owner.max_floor(l.pool))
                    .saturating_sub(expiring),
                in_flight: l.in_flight,
                burn_per_sec: burn,
            };
            if let Some(want) = self.rules.lease_policy.demand(view) {
                l.in_flight = l.in_flight.saturating_add(want);
                l.asked_at = Some(now);
                demands.push(LimitDemand {
                    limit: Some(l.key.clone()),
                    burn_per_sec_micro: burn,
                    desired_micro: want,
                    held_micro: held,
                });
            }
        }
        // Denials ride along with the demands, or go on their own at most once a second.
        let report_denials =
            !demands.is_empty() || now.duration_since(self.rules.last_demand) >= DENIALS_EVERY;
        let denials = if report_denials {
            self.region.owner.take_denials()
        } else {
            Vec::new()
        };
        if !demands.is_empty() || !denials.is_empty() {
            self.rules.last_demand = now;
            self.link.up_queue.push_back(SessionUp {
                msg: Some(session_up::Msg::Demand(DemandReport { demands, denials })),
            });
        }
    }

    fn update_metrics(&mut self) {
        let secs = self.mono_secs();
        let now = now_unix_ms();
        let mut any_budget = false;
        let mut ring_depth = 0;
        for (canonical, l) in self.region.limits.iter_mut() {
            let snap = self.region.owner.pool(l.pool);
            any_budget |= snap.available + snap.carved > 0;
            // Tasks come and go by the thousand: a series each would grow /metrics without
            // bound (they are counted in `tasks_open`, and spent per task at the authority).
            if !Metrics::exported(&l.key) {
                continue;
            }
            let labels = Metrics::limit(canonical);
            self.metrics
                .allowance
                .get_or_create(&labels)
                .set(metrics::gauge_value(snap.carved));
            self.metrics
                .pool_available
                .get_or_create(&labels)
                .set(metrics::gauge_value(snap.available));
            self.metrics
                .burn_rate
                .get_or_create(&labels)
                .set(metrics::gauge_value(l.burn.rate_per_sec(secs)));
            self.metrics
                .emergency_drawn
                .get_or_create(&labels)
                .set(metrics::gauge_value(l.emergency.drawn));
            if let Some(t) = self
                .saved
                .state
                .leases
                .get(canonical)
                .and_then(|b| b.last_grant_unix_ms)
            {
                self.metrics
                    .lease_age_seconds
                    .get_or_create(&labels)
                    .set((now.saturating_sub(t) / 1000) as i64);
            }
        }
        for d in self.region.owner.ring_depths() {
            ring_depth += d;
        }
        self.metrics.ring_depth.set(ring_depth as i64);
        self.region.owner.export_denials(&self.metrics);
        let (names, _) = self.region.owner.region().names_used();
        self.metrics.names_used.set(names as i64);
        self.health.set_has_budget(any_budget);
    }

    // ---- shutdown --------------------------------------------------------------------------

    /// Time since an agent last spent or asked for credits.
    pub fn idle_for(&self) -> Duration {
        tollgate_core::clock::now().saturating_duration_since(self.region.last_activity)
    }

    /// Stops topping up and takes every lane allowance back.
    pub fn begin_shutdown(&mut self) {
        self.shutting_down = true;
    }

    /// True when every batch is acknowledged and no lease request is unanswered (or there is
    /// no session to wait for).
    pub fn flushed(&self) -> bool {
        !self.link.conn.is_connected()
            || (self.usage.unacked.is_empty()
                && self.link.up_queue.is_empty()
                && self.region.limits.values().all(|l| {
                    // A request unanswered for half a second is not worth waiting for: the
                    // authority may have nothing to grant (a cap reached).
                    l.in_flight == 0
                        || l.asked_at.is_none_or(|t| {
                            tollgate_core::clock::now().saturating_duration_since(t)
                                > Duration::from_millis(500)
                        })
                }))
    }

    /// Returns every unused lease (graceful shutdown).
    pub fn return_leases(&mut self) {
        if self.region.damaged.is_some() {
            // Nothing in a destroyed region can be trusted to say what is unused: the
            // leases settle at expiry, the authority's rule for leases not returned.
            return;
        }
        // Last pass: dead agents' lanes and live lanes' allowances back into the pools.
        self.reclaim();
        self.lanes_pass();
        let mut all = Vec::new();
        let canonicals: Vec<String> = self.saved.state.leases.keys().cloned().collect();
        for canonical in canonicals {
            let Some(l) = self.region.limits.get(&canonical) else {
                continue;
            };
            let snap = self.region.owner.pool(l.pool);
            let taken = self.region.owner.give_back(l.pool, snap.available);
            let book = self.saved.state.leases.entry(canonical).or_default();
            all.extend(book.give_back(taken));
        }
        self.saved.state_dirty = true;
        self.queue_returns(all);
        self.flush_up();
    }

    /// Last words: saves the lease state.
    pub fn finish(&mut self) {
        self.save_state();
    }
}

/// The state file naming the first outbox sequence sealed from the current region:
/// batches before it belong to a region that was replaced.
const REBUILT_AT: &str = "region-rebuilt-at";

fn read_rebuilt_at(state_dir: &std::path::Path) -> u64 {
    std::fs::read_to_string(state_dir.join(REBUILT_AT))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn write_rebuilt_at(state_dir: &std::path::Path, seq: u64) -> std::io::Result<()> {
    let path = state_dir.join(REBUILT_AT);
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, seq.to_string())?;
    std::fs::rename(&tmp, &path)
}

/// What one drain moves forward once its batch is written.
#[derive(Debug, Default)]
struct Advance {
    ledgers: BTreeMap<u32, LaneLedger>,
    charged: BTreeMap<u32, u64>,
    /// `(lane, credits withheld, the lane's bound)`.
    withheld: Vec<(usize, u64, u64)>,
}

impl LaneRt {
    /// A lane first seen now, with `consumed` so far (its burn counts from here).
    fn new(consumed: u64, now: Instant) -> LaneRt {
        LaneRt {
            burn: BurnMeter::new(),
            last_consumed: consumed,
            last_active: now,
        }
    }
}

impl LimitRt {
    fn new(key: LimitKey, pool: usize, consumed: u64, emergency: u64) -> LimitRt {
        LimitRt {
            key,
            pool,
            burn: BurnMeter::new(),
            in_flight: 0,
            asked_at: None,
            emergency: Emergency::new(emergency),
            last_consumed: consumed,
            retiring: false,
            refused: None,
            lease_ttl: crate::hint::DEFAULT_LEASE_TTL,
            owed: 0,
        }
    }
}

/// Takes up to `amount` out of `pool`'s local budget: its uncarved credits first, then lane
/// allowances (largest first), and hands them back as returned. Returns what was taken.
///
/// What the lanes' `avail` words cannot cover is in agents' local credits (or held by
/// reservations): every lane carved from the pool is then asked to flush (a revoke it cannot
/// fully answer sets its flush request), so its agent hands its local credits back at its
/// next call and the caller takes them at a later tick.
fn take_back(owner: &mut Owner, pool: usize, amount: u64) -> u64 {
    let snap = owner.pool(pool);
    let lanes = owner.lanes_of_pool(pool);
    let allowances: Vec<u64> = lanes.iter().map(|l| l.1).collect();
    let plan = crate::lease::shrink(amount, snap.available, &allowances);
    let mut short = plan.shortfall;
    for (i, x) in plan.from_lanes {
        // Revoked credits go back to every pool of the lane, including this one.
        let got = owner.revoke(lanes[i].0, x);
        short += x - got.min(x);
    }
    if short > 0 {
        for lane in owner.lanes_carved_from(pool) {
            // Takes what an agent flushed since (at most `short` in all) and, if its `avail`
            // cannot answer, leaves the lane's flush request set.
            let got = owner.revoke(lane, short);
            short = short.saturating_sub(got);
        }
    }
    owner.give_back(pool, amount)
}

mod tasks;
#[cfg(test)]
mod tests;
