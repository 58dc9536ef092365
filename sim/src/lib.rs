//! # tollgate-sim: a deterministic simulation of a Tollgate fleet
//!
//! In the manner of TigerBeetle's VOPR and FoundationDB's simulation: the real code of
//! every party, one thread, a simulated clock and network, faults drawn from one seeded
//! random generator, and a checker of the invariants after every step. See
//! `docs/simulation.md`.
//!
//! **Real:** the authority's `Register` logic and session handler
//! ([`tollgate_authority::sidecar_svc::register`], [`SessionHandler`]) over its real
//! [`State`] (lease table, fair share, leasing, ingest with group commit, housekeeping)
//! and the real ledger on SQLite (a file in a temp dir, so an authority restart reopens
//! it); each sidecar's real control loop ([`Core`]: region, lease books, outbox, state
//! files) on a real region file; real agents ([`Gate`]) reserving and committing.
//!
//! **Simulated:** the clock (one [`SimClock`] installed on the thread; the ledger reads a
//! [`ManualClock`] kept in step), and the network between each sidecar and the authority
//! (in-flight messages with delivery times, per session in order, with the faults below).
//!
//! Everything runs on the calling thread; the authority's async code runs on a tokio
//! current-thread runtime, and every message is handled to completion
//! ([`SessionHandler::settled`]) before the next, so a seed replays exactly.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tollgate_authority::config::{Config as AuthorityConfig, LeaseConfig, SidecarCredential};
use tollgate_authority::sidecar_svc::{DownRx, SessionHandler};
use tollgate_authority::state::State;
use tollgate_client::Gate;
use tollgate_core::Credits;
use tollgate_core::clock::{SimClock, install_sim_clock, remove_sim_clock};
use tollgate_ledger::{BatchKey, GrantKind, GrantSpec, ManualClock, TenantConfig, TenantId};
use tollgate_proto::v1::{self, SessionDown, SessionUp, session_down, session_up};
use tollgate_sidecar::config::Config as SidecarConfig;
use tollgate_sidecar::core::Core;
use tollgate_sidecar::http::Health;
use tollgate_sidecar::metrics::Metrics;
use tollgate_sidecar::session::Event;

/// Micro-credits per credit.
pub const CREDIT: u64 = 1_000_000;
/// The simulated wall clock at the start (2001-09-09): far before the real clock, so the
/// agents' immediate-denial marks (which the client compares with the kernel's real
/// clock, see `tollgate_client::gate`) are always in the past and never make a run
/// depend on when it ran.
pub const START_UNIX_MS: u64 = 1_000_000_000_000;
/// The audit signing key of the simulated authority (a fixed test seed).
const SIGNER_SEED: &str = "0707070707070707070707070707070707070707070707070707070707070707";

/// What one run looks like.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The seed of every random choice.
    pub seed: u64,
    /// Steps of simulated time before quiescence.
    pub steps: u64,
    /// Sidecars (pods).
    pub sidecars: usize,
    /// Agents per sidecar (each its own `Gate`, so its own lanes).
    pub agents_per_sidecar: usize,
    /// Tenants; every sidecar serves all of them, so they compete for each wallet.
    pub tenants: usize,
    /// Each tenant's wallet (one purchased grant), micro-credits.
    pub wallet_micro: u64,
    /// Scales the fault probabilities (0: no faults).
    pub fault_rate: f64,
    /// Keep this many events for the violation report.
    pub trace_tail: usize,
}

impl SimConfig {
    /// The defaults for `seed`.
    pub fn new(seed: u64) -> SimConfig {
        SimConfig {
            seed,
            steps: 2_000,
            sidecars: 3,
            agents_per_sidecar: 3,
            tenants: 2,
            wallet_micro: 60 * CREDIT,
            fault_rate: 1.0,
            trace_tail: 40,
        }
    }
}

/// SplitMix64: small, fast, and the same on every platform.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_5EED)
    }
    /// The next word.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo + 1)
    }
    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        // 53 random bits as a fraction in [0, 1).
        ((self.next_u64() >> 11) as f64) / ((1u64 << 53) as f64) < p
    }
    /// An index below `n` (n > 0).
    pub fn pick(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// The kinds of fault injected, for the summary.
pub const FAULT_KINDS: [&str; 8] = [
    "drop",
    "delay",
    "duplicate",
    "reorder",
    "partition",
    "sidecar_crash",
    "authority_crash",
    "agent_restart",
];

/// A broken invariant.
#[derive(Debug, Clone)]
pub struct Violation {
    /// The seed that replays it.
    pub seed: u64,
    /// The step it was found after.
    pub step: u64,
    /// Which invariant, and the figures.
    pub invariant: String,
    /// The last events before it.
    pub last_events: Vec<String>,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "VIOLATION seed={} step={}: {}",
            self.seed, self.step, self.invariant
        )?;
        writeln!(f, "last events:")?;
        for e in &self.last_events {
            writeln!(f, "  {e}")?;
        }
        write!(
            f,
            "replay: cargo run --release -p tollgate-sim -- --seed {}",
            self.seed
        )
    }
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Steps run, quiescence included.
    pub steps: u64,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, u64>,
    /// Invariant checks evaluated.
    pub checks: u64,
    /// Agent calls committed, and denied.
    pub calls: u64,
    /// Denied reservations.
    pub denials: u64,
    /// Per tenant: committed by agents, posted by the ledger, past holds not charged
    /// (suspected tampering), overrun recorded.
    pub totals: BTreeMap<String, TenantTotals>,
    /// Batches the authority acknowledged (accepted or duplicate).
    pub acked_batches: u64,
    /// Per tenant: the most agents ever spent past the wallet and the cap (within their
    /// reservations), and the outage bound at that moment.
    pub max_excess: BTreeMap<String, (u64, u64)>,
    /// FNV-1a digest of the event trace and the final totals: equal for equal seeds.
    pub digest: u64,
}

/// One tenant's figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TenantTotals {
    /// What agents committed (their actual costs).
    pub committed: u64,
    /// The part of it past their reservations (honest overruns).
    pub overrun_committed: u64,
    /// Posted by the ledger: consumed from grants + plan + recorded overrun.
    pub posted: u64,
    /// Granted to the wallet.
    pub granted: u64,
    /// Still held at the end.
    pub held: u64,
    /// Charged to the plan (list price; the hard cap bounds it).
    pub plan_consumed: u64,
    /// Posted as overrun by the ledger (usage no hold, grant or cap room paid).
    pub ledger_overrun: u64,
}

struct Fnv(u64);
impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn add(&mut self, s: &str) {
        for b in s.bytes() {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 ^= 0xff;
        self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
    }
}

/// A message on the simulated network.
#[derive(Debug)]
enum Payload {
    Up(SessionUp),
    Down(SessionDown),
    /// The authority ended the session with this status.
    DownEnd(String),
}

#[derive(Debug)]
struct InFlight {
    at_ms: u64,
    order: u64,
    side: usize,
    /// The session (per sidecar) it belongs to.
    session: u64,
    payload: Payload,
}

/// The authority's end of one session.
struct AuthSession {
    handler: SessionHandler,
    down: DownRx,
    /// When the authority notices the connection is gone (None: alive).
    closes_at_ms: Option<u64>,
}

struct Authority {
    state: Arc<State>,
    _shutdown: watch::Sender<bool>,
    /// Per (sidecar, session number).
    sessions: BTreeMap<(usize, u64), AuthSession>,
    next_housekeeping_ms: u64,
    deferred_granted: bool,
}

struct Agent {
    gate: Option<Gate>,
    /// Reattach at (ms) after an exit.
    back_at_ms: u64,
}

struct Side {
    cfg: SidecarConfig,
    core: Option<Core>,
    /// The running sidecar's metrics (its outbox gauge says what is unacknowledged).
    metrics: Arc<Metrics>,
    /// The session the sidecar believes is open (its number), and its up channel.
    session: Option<(u64, mpsc::Receiver<SessionUp>)>,
    next_session: u64,
    /// Down until (crash).
    down_until_ms: Option<u64>,
    partitioned_until_ms: u64,
    next_connect_ms: u64,
    /// When the sidecar notices its session is gone (drop fault), if pending.
    notices_loss_at_ms: Option<u64>,
    agents: Vec<Agent>,
    /// Batches this sidecar has had acknowledged: seq → status.
    acked: BTreeMap<u64, i32>,
    /// Per-link latency (ms) added to every message now (a delay fault raises it).
    extra_latency_ms: u64,
    extra_latency_until_ms: u64,
    /// Sent batches, for duplicate faults.
    sent_batches: VecDeque<v1::UsageBatch>,
}

/// The simulated fleet.
pub struct World {
    cfg: SimConfig,
    rng: Rng,
    clock: SimClock,
    ledger_clock: ManualClock,
    rt: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
    store_url: String,
    authority_config: AuthorityConfig,
    authority: Option<Authority>,
    authority_back_at_ms: u64,
    sides: Vec<Side>,
    net: Vec<InFlight>,
    order: u64,
    tenants: Vec<String>,
    committed: BTreeMap<String, u64>,
    overrun_committed: BTreeMap<String, u64>,
    /// Slack of the spending bound per tenant: local budgets at disconnections and crashes,
    /// emergency allowances.
    slack: BTreeMap<String, u64>,
    report: Report,
    trace: VecDeque<String>,
    digest: Fnv,
    step: u64,
    quiescing: bool,
    /// Suspected-tampering micro-credits counted by authority processes that died.
    suspect_before: u64,
    /// Every event to stderr (`TOLLGATE_SIM_TRACE=1`).
    print_trace: bool,
}

fn now_ms(clock: &SimClock) -> u64 {
    clock.unix_ms()
}

fn metadata(sid: &str) -> tonic::metadata::MetadataMap {
    let mut md = tonic::metadata::MetadataMap::new();
    let tok: tonic::metadata::MetadataValue<_> = format!("Bearer {sid}-token")
        .parse()
        .expect("a token of plain ASCII");
    md.insert(tollgate_proto::AUTHORIZATION, tok);
    md.insert(
        tollgate_proto::SIDECAR_ID_HEADER,
        sid.parse().expect("a plain id"),
    );
    md
}

fn describe_up(m: &SessionUp) -> String {
    match &m.msg {
        Some(session_up::Msg::Batch(b)) => {
            let total: u64 = b.records.iter().map(|r| r.client_rated_micro).sum();
            format!(
                "batch seq={} records={} micro={total}",
                b.seq,
                b.records.len()
            )
        }
        Some(session_up::Msg::Demand(d)) => format!("demand limits={}", d.demands.len()),
        Some(session_up::Msg::LeaseReturn(r)) => format!(
            "return {} micro={} close={}",
            r.lease_id, r.amount_micro, r.close
        ),
        Some(session_up::Msg::Heartbeat(_)) => "heartbeat".into(),
        Some(session_up::Msg::TaskOpen(_)) => "task-open".into(),
        None => "empty".into(),
    }
}

fn describe_down(m: &SessionDown) -> String {
    match &m.msg {
        Some(session_down::Msg::Grant(g)) => match &g.lease {
            Some(l) => format!("grant {} micro={}", l.lease_id, l.amount_micro),
            None => "grant (empty)".into(),
        },
        Some(session_down::Msg::Ack(a)) => format!("ack seq={} status={}", a.seq, a.status),
        Some(session_down::Msg::Refusal(r)) => format!("refusal reason={}", r.reason),
        Some(session_down::Msg::Revocation(r)) => format!("revocation ceiling={}", r.ceiling_micro),
        Some(session_down::Msg::Policy(_)) => "policy".into(),
        Some(session_down::Msg::PriceBook(_)) => "price-book".into(),
        Some(session_down::Msg::Heartbeat(_)) => "heartbeat".into(),
        None => "empty".into(),
    }
}

impl World {
    /// Builds the fleet: the store with its tenants, the authority, the sidecars (regions
    /// created by their first `Core::start`) and the agents.
    pub fn new(cfg: SimConfig) -> anyhow::Result<World> {
        let clock = SimClock::new(START_UNIX_MS);
        install_sim_clock(clock.clone());
        let ledger_clock = ManualClock::new(START_UNIX_MS / 1000);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        // On tmpfs when there is one: the store commits with fsync (synchronous=FULL), which
        // costs nothing there, and the region lives on tmpfs in a pod too.
        let shm = std::path::Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::Builder::new()
                .prefix("tollgate-sim")
                .tempdir_in(shm)?
        } else {
            tempfile::tempdir()?
        };
        let store_url = format!("sqlite://{}", dir.path().join("authority.db").display());
        let tenants: Vec<String> = (0..cfg.tenants).map(|i| format!("t{i}")).collect();
        let authority_config = AuthorityConfig {
            sidecars: (0..cfg.sidecars)
                .map(|i| SidecarCredential {
                    name: format!("pod-{i}"),
                    token: Some(format!("pod-{i}-token")),
                    token_file: None,
                    tenants: tenants.clone(),
                })
                .collect(),
            leases: LeaseConfig {
                // Short leases, so expiry, settlement and relearning happen within a run.
                ttl_secs: 4,
                settle_grace_secs: 2,
                relearn_grace_secs: 1,
                ..LeaseConfig::default()
            },
            ..AuthorityConfig::default()
        };
        authority_config.validate()?;
        let mut w = World {
            rng: Rng::new(cfg.seed),
            clock,
            ledger_clock,
            rt,
            store_url,
            authority_config,
            authority: None,
            authority_back_at_ms: 0,
            sides: Vec::new(),
            net: Vec::new(),
            order: 0,
            committed: BTreeMap::new(),
            overrun_committed: BTreeMap::new(),
            slack: BTreeMap::new(),
            report: Report {
                seed: cfg.seed,
                ..Report::default()
            },
            trace: VecDeque::new(),
            digest: Fnv::new(),
            step: 0,
            quiescing: false,
            suspect_before: 0,
            print_trace: std::env::var_os("TOLLGATE_SIM_TRACE").is_some(),
            tenants,
            dir,
            cfg,
        };
        for k in FAULT_KINDS {
            w.report.faults.insert(k, 0);
        }
        w.start_authority()?;
        w.rt.block_on(async {
            let a = w.authority.as_ref().expect("just started");
            for t in &w.tenants {
                let tid = TenantId::new(t.as_str())?;
                a.state
                    .ledger
                    .create_tenant(&tid, TenantConfig::default())
                    .await?;
                a.state
                    .ledger
                    .grant(
                        &tid,
                        GrantSpec::new(GrantKind::Purchased, Credits(w.cfg.wallet_micro)),
                    )
                    .await?;
                if let Some(cap) = w.hard_cap(t) {
                    // Past its grant this tenant spends on its plan, up to the hard cap.
                    let plan = tollgate_ledger::Plan {
                        hard_cap: Some(Credits(cap)),
                        ..tollgate_ledger::Plan::default()
                    };
                    a.state.ledger.set_plan(&tid, Some(plan)).await?;
                }
            }
            anyhow::Ok(())
        })?;
        for i in 0..w.cfg.sidecars {
            let pod = w.dir.path().join(format!("pod-{i}"));
            std::fs::create_dir_all(&pod)?;
            // A key derived from the seed (the sidecar would draw a random one): the
            // batches' signatures, and so the store's content, replay exactly.
            let mut key = [0u8; 32];
            let mut kr = Rng::new(w.cfg.seed ^ (i as u64 + 1).wrapping_mul(0xA5A5));
            for chunk in key.chunks_mut(8) {
                chunk.copy_from_slice(&kr.next_u64().to_le_bytes());
            }
            std::fs::write(pod.join("sidecar.key"), key)?;
            let cfg = SidecarConfig {
                region: pod.join("region"),
                state_dir: pod.clone(),
                authority: "sim://authority".into(),
                sidecar_id: format!("pod-{i}"),
                token: Some(format!("pod-{i}-token")),
                ca_cert: None,
                tenants: w.tenants.clone(),
                http: "127.0.0.1:0".parse()?,
                // The first pod may spend a small emergency allowance in an outage; the
                // others fail closed (the default).
                emergency_allowance: if i == 0 { CREDIT / 5 } else { 0 },
                lanes: 64,
                tasks: 16,
                names: 64,
                tick: Duration::from_millis(10),
                liveness_timeout: Duration::from_secs(1),
                tier_floor_permille: [0, 0, 0],
                lane_overrun_allowance: CREDIT,
            };
            let metrics = Arc::new(Metrics::default());
            let core = Core::start(cfg.clone(), metrics.clone(), Arc::new(Health::default()))?;
            w.sides.push(Side {
                cfg,
                core: Some(core),
                metrics,
                session: None,
                next_session: 1,
                down_until_ms: None,
                partitioned_until_ms: 0,
                next_connect_ms: 0,
                notices_loss_at_ms: None,
                agents: (0..w.cfg.agents_per_sidecar)
                    .map(|_| Agent {
                        gate: None,
                        back_at_ms: 0,
                    })
                    .collect(),
                acked: BTreeMap::new(),
                extra_latency_ms: 0,
                extra_latency_until_ms: 0,
                sent_batches: VecDeque::new(),
            });
        }
        Ok(w)
    }

    /// The last tenant has a plan with a hard cap (a fifth of its wallet); the others
    /// only their wallet.
    fn hard_cap(&self, tenant: &str) -> Option<u64> {
        (self.tenants.len() > 1 && self.tenants.last().is_some_and(|t| t == tenant))
            .then_some(self.cfg.wallet_micro / 5)
    }

    fn now(&self) -> u64 {
        now_ms(&self.clock)
    }

    fn event(&mut self, e: String) {
        let line = format!("[{} +{}ms] {e}", self.step, self.now() - START_UNIX_MS);
        self.digest.add(&line);
        if self.print_trace {
            eprintln!("{line}");
        }
        self.trace.push_back(line);
        while self.trace.len() > self.cfg.trace_tail {
            self.trace.pop_front();
        }
    }

    fn fault(&mut self, kind: &'static str, e: String) {
        *self.report.faults.entry(kind).or_insert(0) += 1;
        self.event(format!("FAULT {kind}: {e}"));
    }

    fn start_authority(&mut self) -> anyhow::Result<()> {
        let (state, shutdown) = self.rt.block_on(tollgate_authority::server::open_state(
            &self.store_url,
            &self.authority_config,
            SIGNER_SEED,
            Arc::new(self.ledger_clock.clone()),
        ))?;
        self.authority = Some(Authority {
            state,
            _shutdown: shutdown,
            sessions: BTreeMap::new(),
            next_housekeeping_ms: self.now() + 1000,
            deferred_granted: false,
        });
        Ok(())
    }

    /// The authority process dies: its state (lease table, sessions, caches) is gone;
    /// the store stays. Every in-flight message to or from it is lost.
    fn crash_authority(&mut self, down_ms: u64) {
        let Some(a) = self.authority.take() else {
            return;
        };
        self.suspect_before += a.state.metrics.suspected_tampering_micro.get();
        // Every message handed to it was handled to completion (see `deliver`): the
        // crash falls between two messages, never inside a store transaction.
        self.rt.block_on(async move {
            for (_, s) in a.sessions {
                s.handler.close().await;
            }
            drop(a.state);
        });
        self.net.clear();
        for i in 0..self.sides.len() {
            self.sidecar_loses_session(i, "the authority crashed");
        }
        self.authority_back_at_ms = self.now() + down_ms;
    }

    /// The sidecar sees its session fail now.
    fn sidecar_loses_session(&mut self, i: usize, why: &str) {
        let s = &mut self.sides[i];
        s.notices_loss_at_ms = None;
        if s.session.take().is_some()
            && let Some(core) = s.core.as_mut()
        {
            core.on_event(Event::Disconnected { reason: why.into() });
        }
        let backoff = self.rng.range(50, 500);
        self.sides[i].next_connect_ms = self.now() + backoff;
    }

    /// The network path of sidecar `i` breaks: the sidecar notices after `detect_ms`, the
    /// authority after `auth_detect_ms`; until then the authority still handles the up
    /// messages in flight on the old session (so they may arrive after those of the next
    /// session: a reordering across sessions), and what it sends down is lost.
    fn break_session(&mut self, i: usize, detect_ms: u64, auth_detect_ms: u64) {
        let Some((sess, _)) = &self.sides[i].session else {
            return;
        };
        let sess = *sess;
        let now = self.now();
        // Down messages of the session are lost from now on.
        self.net.retain(|m| {
            !(m.side == i && m.session == sess && !matches!(m.payload, Payload::Up(_)))
        });
        if let Some(a) = self.authority.as_mut()
            && let Some(s) = a.sessions.get_mut(&(i, sess))
        {
            s.closes_at_ms = Some(now + auth_detect_ms);
        }
        self.sides[i].notices_loss_at_ms = Some(now + detect_ms);
    }

    fn crash_sidecar(&mut self, i: usize, down_ms: u64) {
        let Some(core) = self.sides[i].core.take() else {
            return;
        };
        // No graceful shutdown: no lease returned, no state saved beyond what the loop
        // already wrote. Its files and the region stay, as after `kill -9`.
        drop(core);
        self.sides[i].session = None;
        self.sides[i].notices_loss_at_ms = None;
        let now = self.now();
        self.net
            .retain(|m| m.side != i || matches!(m.payload, Payload::Up(_)));
        if let Some(a) = self.authority.as_mut() {
            for ((side, _), s) in a.sessions.iter_mut() {
                if *side == i && s.closes_at_ms.is_none() {
                    s.closes_at_ms = Some(now + 200);
                }
            }
        }
        self.sides[i].down_until_ms = Some(now + down_ms);
    }

    /// Adds to each tenant's bound what sidecar `i` may spend without the authority from
    /// now on: its open holds (leases) and, for a pod with one, the emergency allowance.
    fn add_outage_slack(&mut self, i: usize) {
        let Some(a) = &self.authority else {
            // The holds were counted when the authority went away or stay as they are.
            return;
        };
        let sid = format!("pod-{i}");
        let emergency = self.sides[i].cfg.emergency_allowance;
        let state = a.state.clone();
        let tenants = self.tenants.clone();
        let held: Vec<(String, u64)> = self.rt.block_on(async move {
            let mut out = Vec::new();
            for t in tenants {
                let tid = TenantId::new(t.as_str()).expect("valid tenant");
                let h: u64 = state
                    .ledger
                    .holds(&tid, false)
                    .await
                    .unwrap_or_default()
                    .iter()
                    .filter(|h| h.owner == sid)
                    .map(|h| h.remaining().0)
                    .sum();
                out.push((t, h));
            }
            out
        });
        for (t, h) in held {
            *self.slack.entry(t).or_insert(0) += h + emergency;
        }
    }

    fn send(&mut self, side: usize, session: u64, payload: Payload, latency: u64) {
        let now = self.now();
        // In order per session and direction: never before the last one queued.
        let up = matches!(payload, Payload::Up(_));
        let last = self
            .net
            .iter()
            .filter(|m| {
                m.side == side && m.session == session && matches!(m.payload, Payload::Up(_)) == up
            })
            .map(|m| m.at_ms)
            .max()
            .unwrap_or(0);
        self.order += 1;
        self.net.push(InFlight {
            at_ms: (now + latency).max(last),
            order: self.order,
            side,
            session,
            payload,
        });
    }

    fn latency(&mut self, i: usize) -> u64 {
        let extra = if self.now() < self.sides[i].extra_latency_until_ms {
            self.sides[i].extra_latency_ms
        } else {
            0
        };
        self.rng.range(1, 8) + extra
    }

    /// One step: `dt` of simulated time, then faults, agents, sidecars, the network and
    /// the authority's housekeeping, then the checks.
    fn step_once(&mut self, dt_ms: u64) -> Result<(), Violation> {
        self.step += 1;
        self.report.steps += 1;
        self.clock.advance(Duration::from_millis(dt_ms));
        self.ledger_clock.set(self.now() / 1000);
        if !self.quiescing {
            self.inject_faults();
        }
        self.restarts();
        if !self.quiescing {
            self.agents_act();
        }
        self.connect();
        for i in 0..self.sides.len() {
            if self.sides[i]
                .notices_loss_at_ms
                .is_some_and(|t| t <= self.now())
            {
                self.sidecar_loses_session(i, "connection lost");
            }
            if let Some(core) = self.sides[i].core.as_mut() {
                core.tick();
            }
            self.collect_up(i);
        }
        self.deliver();
        self.housekeeping();
        self.check()
    }

    fn inject_faults(&mut self) {
        let r = self.cfg.fault_rate;
        let n = self.sides.len();
        let now = self.now();
        if self.rng.chance(0.002 * r) {
            let i = self.rng.pick(n);
            if self.sides[i].session.is_some() {
                let detect = self.rng.range(10, 300);
                let auth = self.rng.range(10, 1500);
                self.fault("drop", format!("pod-{i}: a message lost, the session breaks (sidecar notices in {detect} ms, authority in {auth} ms)"));
                self.add_outage_slack(i);
                self.break_session(i, detect, auth);
            }
        }
        if self.rng.chance(0.004 * r) {
            let i = self.rng.pick(n);
            let extra = self.rng.range(50, 1500);
            let dur = self.rng.range(100, 3000);
            self.sides[i].extra_latency_ms = extra;
            self.sides[i].extra_latency_until_ms = now + dur;
            self.fault(
                "delay",
                format!("pod-{i}: +{extra} ms latency for {dur} ms"),
            );
        }
        if self.rng.chance(0.01 * r) {
            let i = self.rng.pick(n);
            if let Some((sess, _)) = &self.sides[i].session
                && !self.sides[i].sent_batches.is_empty()
            {
                let sess = *sess;
                let k = self.rng.pick(self.sides[i].sent_batches.len());
                let b = self.sides[i].sent_batches[k].clone();
                let lat = self.latency(i);
                self.fault(
                    "duplicate",
                    format!("pod-{i}: batch seq={} sent again", b.seq),
                );
                self.send(
                    i,
                    sess,
                    Payload::Up(SessionUp {
                        msg: Some(session_up::Msg::Batch(b)),
                    }),
                    lat,
                );
            }
        }
        if self.rng.chance(0.001 * r) {
            let i = self.rng.pick(n);
            if self.sides[i].session.is_some() {
                // The sidecar gives up on the session at once and reconnects while the
                // authority still reads the old one: the old session's last messages
                // are handled after the new session's first ones.
                let auth = self.rng.range(200, 2000);
                self.fault("reorder", format!("pod-{i}: reconnects while the authority handles the old session for {auth} ms"));
                self.add_outage_slack(i);
                self.break_session(i, 0, auth);
                self.sides[i].next_connect_ms = now;
            }
        }
        if self.rng.chance(0.001 * r) {
            let i = self.rng.pick(n);
            let dur = self.rng.range(200, 8000);
            self.fault("partition", format!("pod-{i}: cut off for {dur} ms"));
            self.add_outage_slack(i);
            self.sides[i].partitioned_until_ms = now + dur;
            if self.sides[i].session.is_some() {
                let detect = self.rng.range(10, 500);
                let auth = self.rng.range(10, 2000);
                self.break_session(i, detect, auth);
            }
        }
        if self.rng.chance(0.0007 * r) {
            let i = self.rng.pick(n);
            if self.sides[i].core.is_some() {
                let down = self.rng.range(10, 6000);
                self.fault(
                    "sidecar_crash",
                    format!("pod-{i}: killed, back in {down} ms"),
                );
                self.add_outage_slack(i);
                self.crash_sidecar(i, down);
            }
        }
        if self.rng.chance(0.0004 * r) && self.authority.is_some() {
            let down = self.rng.range(10, 5000);
            self.fault("authority_crash", format!("killed, back in {down} ms"));
            for i in 0..n {
                self.add_outage_slack(i);
            }
            self.crash_authority(down);
        }
        if self.rng.chance(0.003 * r) {
            let i = self.rng.pick(n);
            let k = self.rng.pick(self.sides[i].agents.len());
            if self.sides[i].agents[k].gate.is_some() {
                let back = self.rng.range(10, 2000);
                self.fault(
                    "agent_restart",
                    format!("pod-{i} agent {k}: exits (Gate dropped), back in {back} ms"),
                );
                self.sides[i].agents[k].gate = None;
                self.sides[i].agents[k].back_at_ms = now + back;
            }
        }
    }

    fn restarts(&mut self) {
        let now = self.now();
        if self.authority.is_none() && now >= self.authority_back_at_ms {
            match self.start_authority() {
                Ok(()) => self.event("authority restarted (state reopened from the store)".into()),
                Err(e) => self.event(format!("authority restart failed: {e:#}")),
            }
        }
        for i in 0..self.sides.len() {
            if self.sides[i].down_until_ms.is_some_and(|t| t <= now) {
                let metrics = Arc::new(Metrics::default());
                match Core::start(
                    self.sides[i].cfg.clone(),
                    metrics.clone(),
                    Arc::new(Health::default()),
                ) {
                    Ok(core) => {
                        self.sides[i].core = Some(core);
                        self.sides[i].metrics = metrics;
                        self.sides[i].down_until_ms = None;
                        self.sides[i].next_connect_ms = now;
                        self.event(format!(
                            "pod-{i}: sidecar restarted on its region and state dir"
                        ));
                    }
                    Err(e) => self.event(format!("pod-{i}: restart failed: {e:#}")),
                }
            }
        }
    }

    /// Each agent makes a call with some probability: reserve a random amount without
    /// waiting, then commit a random actual cost (now and then more than reserved).
    fn agents_act(&mut self) {
        let now = self.now();
        let mut refused = Vec::new();
        for i in 0..self.sides.len() {
            for k in 0..self.sides[i].agents.len() {
                if self.sides[i].agents[k].gate.is_none() {
                    if now < self.sides[i].agents[k].back_at_ms {
                        continue;
                    }
                    match Gate::attach(&self.sides[i].cfg.region) {
                        Ok(g) => self.sides[i].agents[k].gate = Some(g),
                        Err(_) => continue,
                    }
                }
                if !self.rng.chance(0.15) {
                    continue;
                }
                let t = self.rng.pick(self.tenants.len());
                let amount = self.rng.range(CREDIT / 100, CREDIT / 4);
                // Mostly under the reservation; one call in ten overruns by up to 10 %.
                let actual = if self.rng.chance(0.1) {
                    amount + self.rng.range(1, amount / 10)
                } else {
                    self.rng.range(amount / 4, amount)
                };
                let cancel = self.rng.chance(0.05);
                let tenant = self.tenants[t].clone();
                let gate = self.sides[i].agents[k].gate.as_ref().expect("attached");
                let Ok(tid) = gate.tenant(&tenant) else {
                    continue; // no policy in the region yet
                };
                let call = tollgate_client::Call::fixed(Credits(amount))
                    .tenant(tid)
                    .wait(false);
                match gate.reserve(&call) {
                    Ok(r) => {
                        if cancel {
                            r.cancel();
                            continue;
                        }
                        match r.commit_credits(Credits(actual)) {
                            Ok(c) => {
                                self.report.calls += 1;
                                *self.committed.entry(tenant.clone()).or_insert(0) += c.0;
                                *self.overrun_committed.entry(tenant).or_insert(0) +=
                                    c.0.saturating_sub(amount);
                            }
                            Err(e) => {
                                refused.push(format!("pod-{i} agent {k}: commit refused: {e}"));
                            }
                        }
                    }
                    Err(_) => self.report.denials += 1,
                }
            }
        }
        for line in refused {
            self.event(line);
        }
    }

    /// Sidecars without a session that may reach the authority register and open one,
    /// as `tollgate_sidecar::session` does over gRPC.
    fn connect(&mut self) {
        let now = self.now();
        for i in 0..self.sides.len() {
            let s = &self.sides[i];
            if s.core.is_none()
                || s.session.is_some()
                || now < s.next_connect_ms
                || now < s.partitioned_until_ms
                || self.authority.is_none()
            {
                continue;
            }
            let (tx, mut rx) = oneshot::channel();
            let core = self.sides[i].core.as_mut().expect("checked");
            core.on_event(Event::NeedRegister(tx));
            let Ok(reg) = rx.try_recv() else {
                continue;
            };
            let sid = self.sides[i].cfg.sidecar_id.clone();
            let md = metadata(&sid);
            let a = self.authority.as_ref().expect("checked");
            let state = a.state.clone();
            let opened = self.rt.block_on(async {
                let resp = tollgate_authority::sidecar_svc::register(&state, &md, reg).await?;
                let (h, down) = SessionHandler::open(state.clone(), &md)?;
                Ok::<_, tonic::Status>((resp, h, down))
            });
            match opened {
                Ok((resp, handler, down)) => {
                    let sess = self.sides[i].next_session;
                    self.sides[i].next_session += 1;
                    let (up_tx, up_rx) = mpsc::channel(1024);
                    let a = self.authority.as_mut().expect("checked");
                    // A newer session replaces the old one at the authority too (as
                    // `Sessions::open` does); the old handler keeps going until it notices.
                    a.sessions.insert(
                        (i, sess),
                        AuthSession {
                            handler,
                            down,
                            closes_at_ms: None,
                        },
                    );
                    self.sides[i].session = Some((sess, up_rx));
                    let core = self.sides[i].core.as_mut().expect("checked");
                    core.on_event(Event::Connected {
                        response: Box::new(resp),
                        up: up_tx,
                    });
                    self.event(format!("pod-{i}: registered, session {sess} open"));
                }
                Err(st) => {
                    let why = format!("register: {}: {}", st.code(), st.message());
                    let core = self.sides[i].core.as_mut().expect("checked");
                    core.on_event(Event::Disconnected {
                        reason: why.clone(),
                    });
                    self.sides[i].next_connect_ms = now + self.rng.range(100, 1000);
                    self.event(format!("pod-{i}: {why}"));
                }
            }
        }
    }

    fn collect_up(&mut self, i: usize) {
        let mut msgs = Vec::new();
        let sess = match self.sides[i].session.as_mut() {
            Some((sess, rx)) => {
                while let Ok(m) = rx.try_recv() {
                    msgs.push(m);
                }
                *sess
            }
            None => return,
        };
        for m in msgs {
            if let Some(session_up::Msg::Batch(b)) = &m.msg {
                let s = &mut self.sides[i];
                s.sent_batches.push_back(b.clone());
                if s.sent_batches.len() > 16 {
                    s.sent_batches.pop_front();
                }
            }
            let lat = self.latency(i);
            self.send(i, sess, Payload::Up(m), lat);
        }
    }

    /// Delivers every message due, oldest first; each up message is handled to
    /// completion by the authority, and what it sends down is queued on the network.
    fn deliver(&mut self) {
        loop {
            let now = self.now();
            let next = self
                .net
                .iter()
                .enumerate()
                .filter(|(_, m)| m.at_ms <= now)
                .min_by_key(|(_, m)| (m.at_ms, m.order))
                .map(|(k, _)| k);
            let Some(k) = next else { break };
            let m = self.net.swap_remove(k);
            match m.payload {
                Payload::Up(up) => {
                    let what = describe_up(&up);
                    let Some(a) = self.authority.as_mut() else {
                        continue;
                    };
                    let Some(s) = a.sessions.get_mut(&(m.side, m.session)) else {
                        continue;
                    };
                    let result = self.rt.block_on(async {
                        let r = s.handler.on_up(up).await;
                        s.handler.settled().await;
                        r
                    });
                    self.event(format!("pod-{} s{} up: {what}", m.side, m.session));
                    if let Err(st) = result {
                        self.event(format!(
                            "pod-{} s{}: the authority ended the session: {}",
                            m.side,
                            m.session,
                            st.message()
                        ));
                        if let Some(a) = self.authority.as_mut()
                            && let Some(s) = a.sessions.get_mut(&(m.side, m.session))
                        {
                            s.closes_at_ms = Some(now);
                        }
                    }
                }
                Payload::Down(down) => {
                    let current = self.sides[m.side]
                        .session
                        .as_ref()
                        .is_some_and(|(s, _)| *s == m.session);
                    if !current {
                        continue;
                    }
                    if let Some(session_down::Msg::Ack(a)) = &down.msg {
                        self.sides[m.side].acked.insert(a.seq, a.status);
                    }
                    let what = describe_down(&down);
                    self.event(format!("pod-{} s{} down: {what}", m.side, m.session));
                    if let Some(core) = self.sides[m.side].core.as_mut() {
                        core.on_event(Event::Down(Box::new(down)));
                        core.flush_up();
                    }
                }
                Payload::DownEnd(why) => {
                    let current = self.sides[m.side]
                        .session
                        .as_ref()
                        .is_some_and(|(s, _)| *s == m.session);
                    if current {
                        self.sidecar_loses_session(m.side, &why);
                    }
                }
            }
            self.collect_down();
            for i in 0..self.sides.len() {
                self.collect_up(i);
            }
        }
        self.close_noticed_sessions();
    }

    fn collect_down(&mut self) {
        let mut out = Vec::new();
        if let Some(a) = self.authority.as_mut() {
            for ((side, sess), s) in a.sessions.iter_mut() {
                while let Ok(m) = s.down.try_recv() {
                    out.push((*side, *sess, m));
                }
            }
        }
        for (side, sess, m) in out {
            let lat = self.latency(side);
            let payload = match m {
                Ok(d) => Payload::Down(d),
                Err(st) => Payload::DownEnd(format!("{}: {}", st.code(), st.message())),
            };
            self.send(side, sess, payload, lat);
        }
    }

    fn close_noticed_sessions(&mut self) {
        let now = self.now();
        let Some(a) = self.authority.as_mut() else {
            return;
        };
        let due: Vec<(usize, u64)> = a
            .sessions
            .iter()
            .filter(|(_, s)| s.closes_at_ms.is_some_and(|t| t <= now))
            .map(|(k, _)| *k)
            .collect();
        for k in due {
            // Up messages still in flight on it are lost with it.
            self.net.retain(|m| {
                !(m.side == k.0 && m.session == k.1 && matches!(m.payload, Payload::Up(_)))
            });
            let a = self.authority.as_mut().expect("checked");
            if let Some(s) = a.sessions.remove(&k) {
                self.rt.block_on(s.handler.close());
            }
        }
        self.collect_down();
    }

    fn housekeeping(&mut self) {
        let now = self.now();
        let Some(a) = self.authority.as_mut() else {
            return;
        };
        if now < a.next_housekeeping_ms {
            return;
        }
        a.next_housekeeping_ms = now + 1000;
        let state = a.state.clone();
        let deferred = !a.deferred_granted && !state.relearning(now);
        if deferred {
            a.deferred_granted = true;
        }
        self.rt.block_on(async {
            tollgate_authority::tasks::housekeeping(&state).await;
            if deferred {
                tollgate_authority::leasing::grant_deferred(&state).await;
            }
        });
        self.collect_down();
    }

    /// Reads every tenant's figures from the ledger (the authority's store, reopened if
    /// the authority is down).
    fn ledger_totals(&mut self) -> anyhow::Result<BTreeMap<String, TenantTotals>> {
        let state = match &self.authority {
            Some(a) => a.state.clone(),
            None => return Ok(self.report.totals.clone()),
        };
        let tenants = self.tenants.clone();
        let mut out = BTreeMap::new();
        let figures = self.rt.block_on(async move {
            let mut v = Vec::new();
            for t in tenants {
                let tid = TenantId::new(t.as_str())?;
                let grants = state.ledger.grants(&tid, true).await?;
                let b = state.ledger.balance(&tid).await?;
                v.push((t, grants, b));
            }
            anyhow::Ok(v)
        })?;
        for (t, grants, b) in figures {
            for g in &grants {
                let sum = g.available.0 + g.held.0 + g.consumed.0 + g.expired.0;
                self.report.checks += 1;
                if sum != g.granted.0 {
                    anyhow::bail!(
                        "ledger conservation: tenant {t} grant {:?}: granted {} != available {} + held {} + consumed {} + expired {}",
                        g.id,
                        g.granted.0,
                        g.available.0,
                        g.held.0,
                        g.consumed.0,
                        g.expired.0
                    );
                }
            }
            out.insert(
                t.clone(),
                TenantTotals {
                    committed: self.committed.get(&t).copied().unwrap_or(0),
                    overrun_committed: self.overrun_committed.get(&t).copied().unwrap_or(0),
                    posted: b.consumed.0 + b.plan_consumed.0 + b.overrun.0,
                    granted: b.granted.0,
                    held: b.held.0 + b.plan_held.0,
                    plan_consumed: b.plan_consumed.0,
                    ledger_overrun: b.overrun.0,
                },
            );
        }
        Ok(out)
    }

    fn violation(&self, invariant: String) -> Violation {
        Violation {
            seed: self.cfg.seed,
            step: self.step,
            invariant,
            last_events: self.trace.iter().cloned().collect(),
        }
    }

    /// The invariants that hold after every step.
    fn check(&mut self) -> Result<(), Violation> {
        let totals = self
            .ledger_totals()
            .map_err(|e| self.violation(format!("{e:#}")))?;
        for (t, x) in &totals {
            // Credits are never created: the ledger posts no more than agents committed.
            self.report.checks += 1;
            if x.posted > x.committed {
                return Err(self.violation(format!(
                    "tenant {t}: the ledger posted {} micro-credits, agents committed only {} (a batch posted twice?)",
                    x.posted, x.committed
                )));
            }
            // The wallet bound: what agents spent within their reservations is at most
            // the wallet, plus what sidecars could spend without the authority (their
            // leases when they lost it, the emergency allowance).
            let slack = self.slack.get(t).copied().unwrap_or(0);
            let cap = self.hard_cap(t).unwrap_or(0);
            let within = x.committed - x.overrun_committed;
            self.report.checks += 1;
            if within > x.granted + cap + slack {
                return Err(self.violation(format!(
                    "tenant {t}: agents spent {within} micro-credits within their reservations, past the wallet {} + hard cap {cap} + outage bound {slack} (committed {}, their overruns {}, posted {}, posted as overrun {}, held {})",
                    x.granted, x.committed, x.overrun_committed, x.posted, x.ledger_overrun, x.held
                )));
            }
            let excess = within.saturating_sub(x.granted + cap);
            let e = self.report.max_excess.entry(t.clone()).or_insert((0, 0));
            if excess > e.0 {
                *e = (excess, slack);
            }
            // The ledger never charges a plan past its hard cap (this plan has no
            // included credits: its charge is what it paid at list price).
            self.report.checks += 1;
            if x.plan_consumed > cap {
                return Err(self.violation(format!(
                    "tenant {t}: the plan was charged {} micro-credits, past its hard cap {cap}",
                    x.plan_consumed
                )));
            }
        }
        if self.authority.is_some() {
            self.report.totals = totals;
        }
        Ok(())
    }

    fn quiet(&self) -> bool {
        self.authority.is_some()
            && self.net.is_empty()
            && self.sides.iter().all(|s| {
                // Connected, nothing waiting to be sent, every batch acknowledged (not
                // `Core::flushed`, which also waits for unanswered demand: two limits
                // refused for good are asked again, in turn, forever).
                s.session.is_some()
                    && s.core.as_ref().is_some_and(Core::up_queue_empty)
                    && s.metrics.outbox_pending.get() == 0
            })
    }

    /// Heals everything, stops the agents, lets the fleet settle, returns every lease and
    /// checks the end-state invariants.
    fn quiesce(&mut self) -> Result<(), Violation> {
        self.quiescing = true;
        self.event("QUIESCE: network healed, faults stop, agents exit".into());
        let now = self.now();
        for s in &mut self.sides {
            s.partitioned_until_ms = 0;
            s.extra_latency_until_ms = 0;
            s.next_connect_ms = s.next_connect_ms.min(now);
            for a in &mut s.agents {
                a.gate = None;
            }
        }
        // Everything restarts, reconnects and reports.
        let mut waited = 0;
        while !self.quiet() {
            self.step_once(10)?;
            waited += 10;
            if waited > 120_000 {
                return Err(self.violation(
                    "quiescence: after 120 s without faults some batch is still unacknowledged or a sidecar is not connected".into(),
                ));
            }
        }
        // Graceful stop of every sidecar: allowances back, leases returned.
        for s in &mut self.sides {
            if let Some(c) = s.core.as_mut() {
                c.begin_shutdown();
            }
        }
        for _ in 0..100 {
            self.step_once(10)?;
        }
        for s in &mut self.sides {
            if let Some(c) = s.core.as_mut() {
                c.return_leases();
            }
        }
        // Past every lease's expiry and settle grace: the authority settles what is left.
        let ttl =
            self.authority_config.leases.ttl_secs + self.authority_config.leases.settle_grace_secs;
        for _ in 0..((ttl + 3) * 10) {
            self.step_once(100)?;
        }
        let totals = self
            .ledger_totals()
            .map_err(|e| self.violation(format!("{e:#}")))?;
        let suspect = self
            .authority
            .as_ref()
            .map_or(0, |a| a.state.metrics.suspected_tampering_micro.get())
            + self.suspect_before;
        let mut posted = 0;
        let mut committed = 0;
        for (t, x) in &totals {
            posted += x.posted;
            committed += x.committed;
            self.report.checks += 1;
            if x.held != 0 {
                return Err(self.violation(format!(
                    "quiescence: tenant {t} still has {} micro-credits held after every lease ended",
                    x.held
                )));
            }
        }
        // Credits conserved: every committed credit was posted once, or counted as past
        // the holds (suspected tampering, not charged).
        self.report.checks += 1;
        if posted + suspect != committed {
            return Err(self.violation(format!(
                "quiescence: agents committed {committed} micro-credits, the ledger posted {posted} and counted {suspect} as past the holds ({:?})",
                totals
            )));
        }
        // Every acknowledged batch is in the ledger.
        let state = self.authority.as_ref().expect("quiet").state.clone();
        let acked: Vec<BatchKey> = self
            .sides
            .iter()
            .flat_map(|s| {
                s.acked.keys().map(|seq| BatchKey {
                    sidecar_id: s.cfg.sidecar_id.clone(),
                    seq: *seq,
                })
            })
            .collect();
        self.report.acked_batches = acked.len() as u64;
        let missing = self.rt.block_on(async {
            let mut missing = Vec::new();
            for k in acked {
                if !matches!(state.ledger.batch(&k).await, Ok(Some(_))) {
                    missing.push(k);
                }
            }
            missing
        });
        self.report.checks += 1;
        if !missing.is_empty() {
            return Err(self.violation(format!(
                "quiescence: {} acknowledged batches missing from the ledger, the first: {:?}",
                missing.len(),
                &missing[..missing.len().min(5)]
            )));
        }
        self.report.totals = totals;
        Ok(())
    }

    /// Runs the configured steps, then quiescence.
    pub fn run(mut self) -> Result<Report, Box<Violation>> {
        for _ in 0..self.cfg.steps {
            let dt = self.rng.range(1, 20);
            self.step_once(dt).map_err(Box::new)?;
        }
        self.quiesce().map_err(Box::new)?;
        let mut line = String::new();
        for (t, x) in &self.report.totals {
            let _ = write!(line, "{t}:{:?};", x);
        }
        let _ = write!(line, "faults:{:?}", self.report.faults);
        self.digest.add(&line);
        self.report.digest = self.digest.0;
        Ok(self.report.clone())
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // Cores and sessions first (they use the runtime and the clock).
        for s in &mut self.sides {
            for a in &mut s.agents {
                a.gate = None;
            }
            s.core = None;
        }
        if let Some(a) = self.authority.take() {
            self.rt.block_on(async move {
                for (_, s) in a.sessions {
                    s.handler.close().await;
                }
            });
        }
        remove_sim_clock();
    }
}

/// Runs one seed with the default configuration (and `steps`).
pub fn run_seed(seed: u64, steps: u64) -> Result<Report, Box<Violation>> {
    let mut cfg = SimConfig::new(seed);
    cfg.steps = steps;
    run(cfg)
}

/// Runs one configured seed.
pub fn run(cfg: SimConfig) -> Result<Report, Box<Violation>> {
    let seed = cfg.seed;
    let w = World::new(cfg).map_err(|e| {
        Box::new(Violation {
            seed,
            step: 0,
            invariant: format!("setup failed: {e:#}"),
            last_events: Vec::new(),
        })
    })?;
    w.run()
}

/// Where the state of a run lives (for debugging a failed seed).
pub fn describe_dirs(w: &World) -> PathBuf {
    w.dir.path().to_path_buf()
}

/// Tenants' ids in a run (for tests).
pub fn tenant_names(cfg: &SimConfig) -> BTreeSet<String> {
    (0..cfg.tenants).map(|i| format!("t{i}")).collect()
}
