//! The control loop with a real region and real agents (`Gate`s, and a child process for a
//! dead agent), driven by the messages an authority sends: policies, price books, leases.
//! What the sidecar sends back is read from its session channel.

use std::path::Path;
use std::sync::{Arc, mpsc as std_mpsc};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tollgate_client::{Call, Gate};
use tollgate_core::Usage;
use tollgate_proto::v1::{self, LimitKey, SessionDown, SessionUp, session_down, session_up};

use super::*;

const TENANT: &str = "acme";
const MODEL: &str = "m";
/// What one call of [`spend`] costs: 400 input tokens at 1 credit per million, 100 output
/// tokens at 2 per million.
const CALL_MICRO: u64 = 600;
const C: u64 = 1_000_000;

fn config(dir: &Path, tenants: &[&str]) -> Config {
    Config {
        region: dir.join("shared").join("region"),
        state_dir: dir.join("state"),
        authority: "http://127.0.0.1:9".into(),
        sidecar_id: "pod-t".into(),
        token: None,
        ca_cert: None,
        tenants: tenants.iter().map(|t| t.to_string()).collect(),
        http: "127.0.0.1:0".parse().expect("addr"),
        emergency_allowance: 0,
        lanes: 8,
        tasks: 64,
        names: 256,
        tick: Duration::from_millis(5),
        liveness_timeout: Duration::from_secs(1),
        tier_floor_permille: [0, 0, 0],
        lane_overrun_allowance: C,
    }
}

/// A control loop "connected" to a test authority: messages down are fed to it, messages up
/// are read from `up`.
struct Harness {
    core: Core,
    up: mpsc::Receiver<SessionUp>,
    sent: Vec<SessionUp>,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
}

fn start(cfg: Config) -> Harness {
    let metrics = Arc::new(Metrics::default());
    let health = Arc::new(Health::default());
    let mut core = Core::start(cfg, metrics.clone(), health.clone()).expect("core");
    health.set_region_ready(true);
    let (tx, up) = mpsc::channel(100_000);
    core.on_event(Event::Connected {
        response: Box::new(v1::RegisterResponse {
            heartbeat_interval_ms: 60_000,
            ..Default::default()
        }),
        up: tx,
    });
    Harness {
        core,
        up,
        sent: Vec::new(),
        health,
        metrics,
    }
}

impl Harness {
    fn down(&mut self, msg: session_down::Msg) {
        self.core
            .on_event(Event::Down(Box::new(SessionDown { msg: Some(msg) })));
        self.collect();
    }

    fn collect(&mut self) {
        while let Ok(m) = self.up.try_recv() {
            self.sent.push(m);
        }
    }

    fn tick(&mut self) {
        self.core.tick();
        self.collect();
    }

    /// Ticks until `done` (at most 30 s; fails naming `what`).
    fn tick_until(&mut self, what: &str, mut done: impl FnMut(&mut Harness) -> bool) {
        let end = Instant::now() + Duration::from_secs(30);
        while !done(self) {
            assert!(Instant::now() < end, "gave up waiting for {what}");
            self.tick();
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn price_book(&mut self, tenant: &str) {
        self.down(session_down::Msg::PriceBook(v1::PriceBookUpdate {
            price_book: Some(price_book(tenant)),
        }));
    }

    fn policy(&mut self, tenant: &str, version: u64, quotas: &[LimitKey]) {
        self.down(session_down::Msg::Policy(v1::PolicyUpdate {
            policy: Some(policy(tenant, version, quotas)),
        }));
    }

    fn grant(&mut self, key: &LimitKey, id: &str, amount: u64) {
        self.down(session_down::Msg::Grant(v1::LeaseGrant {
            lease: Some(v1::Lease {
                lease_id: id.into(),
                limit: Some(key.clone()),
                amount_micro: amount,
                expires_unix_ms: now_unix_ms() + 3_600_000,
            }),
        }));
    }

    /// Canonical keys of the limits demanded since `from` (an index into `sent`).
    fn demanded_since(&self, from: usize) -> BTreeSet<String> {
        self.sent[from..]
            .iter()
            .filter_map(|m| match &m.msg {
                Some(session_up::Msg::Demand(d)) => Some(d),
                _ => None,
            })
            .flat_map(|d| d.demands.iter())
            .filter_map(|d| d.limit.as_ref().map(LimitKey::canonical))
            .collect()
    }

    /// Sum of the lease returns sent for lease `id`.
    fn returned(&self, id: &str) -> u64 {
        self.sent
            .iter()
            .filter_map(|m| match &m.msg {
                Some(session_up::Msg::LeaseReturn(r)) if r.lease_id == id => Some(r.amount_micro),
                _ => None,
            })
            .sum()
    }

    /// Every record sent in a batch: (agent, aggregate, amount).
    fn records(&self) -> Vec<(String, bool, u64)> {
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        for m in &self.sent {
            let Some(session_up::Msg::Batch(b)) = &m.msg else {
                continue;
            };
            if !seen.insert(b.seq) {
                continue; // a replay
            }
            for r in &b.records {
                let agent = b.dictionary[r.agent_instance as usize].clone();
                out.push((agent, r.aggregate, r.client_rated_micro));
            }
        }
        out
    }
}

/// The agent name records of lane `lane` get while its current owner holds it.
fn agent_of(h: &Harness, lane: usize) -> String {
    let holder = h
        .core
        .region
        .owner
        .region()
        .lanes()
        .into_iter()
        .find(|l| l.lane == lane)
        .and_then(|l| l.holder)
        .expect("a claimed lane");
    format!("pod-t/{:012x}/lane{lane}", holder.get())
}

fn price_book(tenant: &str) -> v1::PriceBook {
    v1::PriceBook {
        tenant: tenant.into(),
        version: 1,
        models: vec![v1::ModelPrice {
            model: MODEL.into(),
            pricing: Some(v1::model_price::Pricing::Tokens(v1::TokenPrice {
                input_per_mtok_micro: 1_000_000,
                output_per_mtok_micro: 2_000_000,
            })),
            max_output_tokens: 1_000,
        }],
        default_max_output_tokens: 1_000,
        ..Default::default()
    }
}

fn policy(tenant: &str, version: u64, quotas: &[LimitKey]) -> v1::TenantPolicy {
    v1::TenantPolicy {
        tenant: tenant.into(),
        version,
        quotas: quotas
            .iter()
            .enumerate()
            .map(|(i, k)| v1::QuotaRule {
                id: format!("q{i}"),
                limit: Some(k.clone()),
                max_micro: 1_000 * C,
                shadow: false,
            })
            .collect(),
        ..Default::default()
    }
}

/// Every quota the region can enforce for `tenant`: 3 tenant windows, 9 tier windows.
fn all_quotas(tenant: &str) -> Vec<LimitKey> {
    let windows = [v1::Window::Minute, v1::Window::Hour, v1::Window::Month];
    let mut out: Vec<LimitKey> = windows
        .iter()
        .map(|w| LimitKey::tenant_window(tenant, *w))
        .collect();
    for tier in [
        v1::Tier::Interactive,
        v1::Tier::Scheduler,
        v1::Tier::Background,
    ] {
        for w in windows {
            out.push(LimitKey {
                tenant: tenant.into(),
                scope: v1::Scope::Tier as i32,
                window: w as i32,
                agent: String::new(),
                tier: tier as i32,
                task: String::new(),
            });
        }
    }
    out
}

/// Commits `n` interactive calls of `tenant` through `gate`, retrying denials for up to
/// 30 s. Returns the credits committed.
fn spend(gate: &Gate, tenant: &str, n: u32) -> u64 {
    let t = gate.tenant(tenant).expect("tenant");
    let m = gate.model(MODEL).expect("model");
    let mut spent = 0;
    let mut done = 0;
    let end = Instant::now() + Duration::from_secs(30);
    while done < n {
        assert!(Instant::now() < end, "only {done} of {n} calls granted");
        let call = Call::model(&m)
            .tenant(t)
            .input_tokens(400)
            .max_output_tokens(200)
            .tier(tollgate_core::Tier::Interactive);
        match gate.reserve(&call) {
            Ok(h) => {
                spent += h.commit(Usage::new(400, 100)).expect("commit").0;
                done += 1;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
    spent
}

/// Runs `agent` on its own thread while the control loop ticks, until it returns.
fn with_agent<T: Send + 'static>(h: &mut Harness, agent: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std_mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(agent());
    });
    let mut out = None;
    h.tick_until("the agent to finish", |_| {
        out = rx.try_recv().ok();
        out.is_some()
    });
    out.expect("agent result")
}

/// A tenant set up for calls: price book, a policy with `quotas`, and a lease of
/// `amount` for the wallet and for every quota (lease ids `<tenant>-<n>`).
fn serve(h: &mut Harness, tenant: &str, quotas: &[LimitKey], amount: u64) {
    h.price_book(tenant);
    h.policy(tenant, 1, quotas);
    h.grant(
        &LimitKey::wallet(tenant),
        &format!("{tenant}-wallet"),
        amount,
    );
    for (i, q) in quotas.iter().enumerate() {
        h.grant(q, &format!("{tenant}-{i}"), amount);
    }
}

#[test]
fn a_policy_that_replaces_every_quota_is_applied_once_the_deleted_limits_free_their_pools() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut h = start(config(dir.path(), &[TENANT]));
    // One tenant: 8 pools, all used by the wallet and 7 quotas.
    let q = all_quotas(TENANT);
    let v1_quotas: Vec<LimitKey> = q[..7].to_vec(); // tenant m/h/mo, interactive m/h/mo, scheduler m
    serve(&mut h, TENANT, &v1_quotas, 20 * C);
    let region = h.core.cfg.region.clone();
    let gate = Arc::new(Gate::attach(&region).expect("attach"));
    let g = gate.clone();
    let mut spent = with_agent(&mut h, move || spend(&g, TENANT, 20));

    // v2 keeps the tenant minute window and the scheduler minute window and swaps the other
    // five for the five quotas not used yet: it needs five pools the tenant does not have free.
    let mut v2_quotas = vec![q[0].clone(), q[6].clone()];
    v2_quotas.extend(q[7..].iter().cloned());
    let dropped: Vec<String> = q[1..6].iter().map(LimitKey::canonical).collect();
    h.policy(TENANT, 2, &v2_quotas);
    // The agent's lane is still carved from the deleted limits' pools: they cannot be freed,
    // so v2 is not applied, and says so.
    assert!(
        !h.health.ready(),
        "a policy that could not be applied keeps the sidecar unready"
    );
    let reasons = h.health.not_ready_reasons().join("; ");
    assert!(reasons.contains("policy of tenant acme"), "{reasons}");
    assert!(h.metrics.policy_errors.get() >= 1);
    assert_eq!(
        h.core.rules.policies.get(TENANT).map(|p| p.version),
        Some(1)
    );
    // The deleted limits ask for no more leases and give their uncarved credits back.
    let from = h.sent.len();
    for _ in 0..20 {
        h.tick();
    }
    let g = gate.clone();
    spent += with_agent(&mut h, move || spend(&g, TENANT, 20));
    // A new agent meanwhile gets a lane carved from the limits the tenant keeps.
    let newcomer = Gate::attach(&region).expect("attach");
    let (newcomer, more) = with_agent(&mut h, move || {
        let s = spend(&newcomer, TENANT, 5);
        (newcomer, s)
    });
    spent += more;
    let retiring: BTreeSet<usize> = h.core.region.owner.retiring().iter().map(|r| r.2).collect();
    let listing = h
        .core
        .region
        .owner
        .region()
        .audit()
        .lanes
        .iter()
        .filter(|l| l.pools.iter().any(|p| retiring.contains(p)))
        .count();
    assert_eq!(
        listing, 1,
        "only the first agent's lane is carved from deleted limits"
    );
    drop(newcomer);
    let demanded = h.demanded_since(from);
    for c in &dropped {
        assert!(!demanded.contains(c), "{c} was demanded after its deletion");
    }
    for (i, k) in q.iter().enumerate().take(6).skip(1) {
        assert!(
            h.returned(&format!("{TENANT}-{i}")) > 0,
            "the lease of deleted limit {} was not given back",
            k.canonical()
        );
    }

    // The agent leaves: its lane is reclaimed, the pools free up, v2 is applied.
    drop(gate);
    h.tick_until("the new policy to be applied", |h| {
        h.core.rules.policies.get(TENANT).map(|p| p.version) == Some(2)
    });
    assert!(h.health.ready(), "{:?}", h.health.not_ready_reasons());
    assert_eq!(h.metrics.policies_failing.get(), 0);
    let limits: BTreeSet<String> = h
        .core
        .region
        .owner
        .limits()
        .into_iter()
        .map(|l| l.0)
        .collect();
    let want: BTreeSet<String> = std::iter::once(LimitKey::wallet(TENANT))
        .chain(v2_quotas.iter().cloned())
        .map(|k| k.canonical())
        .collect();
    assert_eq!(limits, want);
    assert!(h.core.region.owner.retiring().is_empty());
    for c in &dropped {
        assert!(
            !h.core.region.limits.contains_key(c),
            "{c} still has a lease book"
        );
    }
    // The new quotas are enforced: a new agent spends once they are leased.
    for (i, k) in v2_quotas.iter().enumerate().skip(2) {
        h.grant(k, &format!("{TENANT}-v2-{i}"), 20 * C);
    }
    let gate = Gate::attach(&region).expect("attach");
    spent += with_agent(&mut h, move || spend(&gate, TENANT, 10));
    h.tick_until("every call to be reported", |h| {
        h.records().iter().map(|r| r.2).sum::<u64>() == spent
    });
    assert!(h.core.region.owner.region().audit().check().is_ok());
}

#[test]
fn one_tenant_s_rules_cannot_take_the_pools_another_tenant_needs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut h = start(config(dir.path(), &["acme", "beta"]));
    // acme asks for the wallet and 12 quotas: more than its share of 8 pools.
    h.policy("acme", 1, &all_quotas("acme"));
    assert_eq!(h.metrics.policies_failing.get(), 1);
    assert!(
        !h.core.rules.policies.contains_key("acme"),
        "recorded as applied"
    );
    let reasons = h.health.not_ready_reasons().join("; ");
    assert!(
        reasons.contains("policy of tenant acme") && reasons.contains("pool"),
        "{reasons}"
    );
    // beta's 8 limits fit its own share.
    h.policy("beta", 1, &all_quotas("beta")[..7]);
    assert_eq!(
        h.core.rules.policies.get("beta").map(|p| p.version),
        Some(1)
    );
    assert_eq!(h.metrics.policies_failing.get(), 1);
    // acme within its share.
    h.policy("acme", 2, &all_quotas("acme")[..7]);
    assert_eq!(
        h.core.rules.policies.get("acme").map(|p| p.version),
        Some(2)
    );
    assert_eq!(h.metrics.policies_failing.get(), 0);
    assert!(h.health.ready(), "{:?}", h.health.not_ready_reasons());
    let pools: BTreeSet<usize> = h
        .core
        .region
        .owner
        .limits()
        .into_iter()
        .map(|l| l.2)
        .collect();
    assert_eq!(pools.len(), 16, "each limit its own pool");
}

#[test]
fn ring_depth_is_what_waits_in_the_rings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut h = start(config(dir.path(), &[TENANT]));
    serve(&mut h, TENANT, &[], 20 * C);
    let region = h.core.cfg.region.clone();
    let gate = Arc::new(Gate::attach(&region).expect("attach"));
    let g = gate.clone();
    with_agent(&mut h, move || spend(&g, TENANT, 5));
    h.tick_until("the calls to be drained", |h| h.records().len() == 5);
    // Three more calls from the allowance the lane has, with no drain in between.
    spend(&gate, TENANT, 3);
    h.core.drain();
    h.core.update_metrics();
    assert_eq!(h.metrics.ring_depth.get(), 3);
}

#[test]
fn a_restarted_sidecar_drains_a_lane_released_before_it_started() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), &[TENANT]);
    let mut h = start(cfg.clone());
    serve(&mut h, TENANT, &[], 20 * C);
    let gate = Arc::new(Gate::attach(&cfg.region).expect("attach"));
    let g = gate.clone();
    let mut spent = with_agent(&mut h, move || spend(&g, TENANT, 5));
    h.tick_until("the calls to be drained", |h| h.records().len() == 5);
    // Three more calls, then the agent hands its lane back and the sidecar reclaims it and
    // dies before its next drain.
    spent += spend(&gate, TENANT, 3);
    let me = agent_of(&h, 0);
    drop(gate);
    h.core.reclaim();
    assert!(
        h.core.region.owner.region().lanes().is_empty(),
        "the lane is free"
    );
    drop(h);

    let mut h = start(cfg);
    h.tick_until("the released lane's records to be reported", |h| {
        h.core
            .usage
            .ledgers
            .values()
            .map(|l| l.cursor.reported)
            .sum::<u64>()
            == spent
    });
    let named: Vec<_> = h.records().into_iter().filter(|r| r.0 == me).collect();
    assert_eq!(
        named.len(),
        8,
        "every record, named after its agent: {named:?}"
    );
}

/// The dead agent of [`a_dead_agent_s_records_are_never_named_after_the_next_owner`]: run
/// as a child process (it does nothing when run by the test harness itself). Spends 5
/// calls, tells the parent, waits for it to stop ticking, spends 3 more from its allowance
/// and exits without handing its lane back.
#[test]
fn child_agent_that_dies() {
    let Ok(region) = std::env::var("TOLLGATE_TEST_CHILD_REGION") else {
        return;
    };
    let signal =
        std::path::PathBuf::from(std::env::var("TOLLGATE_TEST_CHILD_SIGNAL").expect("signal"));
    let gate = Gate::attach(&region).expect("attach");
    spend(&gate, TENANT, 5);
    std::fs::write(signal.with_extension("five"), b"").expect("signal");
    while !signal.with_extension("go").exists() {
        std::thread::sleep(Duration::from_millis(2));
    }
    spend(&gate, TENANT, 3);
    // Dead without a word: no Drop, no hand-back.
    std::process::exit(0);
}

#[test]
fn a_dead_agent_s_records_are_never_named_after_the_next_owner() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), &[TENANT]);
    let mut h = start(cfg.clone());
    serve(&mut h, TENANT, &[], 20 * C);
    let signal = dir.path().join("child");
    let mut child = std::process::Command::new(std::env::current_exe().expect("exe"))
        .args([
            "--exact",
            "core::tests::child_agent_that_dies",
            "--nocapture",
        ])
        .env("TOLLGATE_TEST_CHILD_REGION", &cfg.region)
        .env("TOLLGATE_TEST_CHILD_SIGNAL", &signal)
        .spawn()
        .expect("child agent");
    h.tick_until("the child's first calls", |_| {
        signal.with_extension("five").exists()
    });
    h.tick_until("the child's first calls to be drained", |h| {
        h.records().len() == 5
    });
    let child_name = agent_of(&h, 0);
    // No ticks now: its last three calls stay in its ring when it dies.
    std::fs::write(signal.with_extension("go"), b"").expect("signal");
    let status = child.wait().expect("child");
    assert!(status.success());
    h.core.reclaim();
    // This process takes the lane over and spends on it.
    let gate = Arc::new(Gate::attach(&cfg.region).expect("attach"));
    let g = gate.clone();
    with_agent(&mut h, move || spend(&g, TENANT, 2));
    let me = agent_of(&h, 0);
    assert_ne!(me, child_name, "a new holder");
    h.tick_until("every record to be reported", |h| h.records().len() == 10);
    let count = |name: &str| h.records().iter().filter(|r| r.0 == name).count();
    assert_eq!(count(&child_name), 8, "{:?}", h.records());
    assert_eq!(count(&me), 2, "{:?}", h.records());
}

#[test]
fn what_a_lane_reports_is_bounded_by_what_the_sidecar_gave_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), &[TENANT]);
    let allowance = cfg.lane_overrun_allowance;
    let mut h = start(cfg.clone());
    serve(&mut h, TENANT, &[], 20 * C);
    let gate = Arc::new(Gate::attach(&cfg.region).expect("attach"));
    let g = gate.clone();
    let spent = with_agent(&mut h, move || spend(&g, TENANT, 5));
    assert_eq!(spent, 5 * CALL_MICRO);
    h.tick_until("the calls to be reported", |h| h.records().len() == 5);
    // The agent (any process that maps the region) writes its lane's overrun word.
    let scribbled = 50 * C;
    let lane = h.core.region.owner.region().lanes()[0].clone();
    scribble_lane_word(&cfg.region, lane.lane, LANE_CONSUMED, lane.consumed.0, None);
    scribble_lane_word(&cfg.region, lane.lane, LANE_OVERRUN, 0, Some(scribbled));
    // The bound moves with top-ups and revokes: keep the largest it was at any drain.
    let mut given_max = h.core.region.owner.given(lane.lane);
    h.tick_until("the scribble to be noticed", |h| {
        given_max = given_max.max(h.core.region.owner.given(lane.lane));
        h.metrics.suspected_tampering.get() > 0
    });
    let reported: u64 = h.records().iter().map(|r| r.2).sum();
    let aggregated: u64 = h.records().iter().filter(|r| r.1).map(|r| r.2).sum();
    assert!(
        reported <= given_max + allowance,
        "reported {reported} > given {given_max} + allowance {allowance}"
    );
    // The wallet's lease (20 credits) bounds what the lane was ever given.
    assert!(given_max <= 20 * C);
    // Every scribbled credit is either reported (within the bound) or counted as withheld.
    assert_eq!(aggregated + h.metrics.suspected_tampering.get(), scribbled);
    assert!(h.metrics.suspected_tampering.get() >= scribbled - 21 * C);
    // The agent keeps being served.
    let g = gate.clone();
    with_agent(&mut h, move || spend(&g, TENANT, 2));
}

/// Word offsets inside a lane (the region's layout, version 1): what an agent writes.
const LANE_CONSUMED: usize = 3;
const LANE_OVERRUN: usize = 4;

/// Writes word `field` of lane `lane` in the region file the way any process that maps it
/// can, after checking the layout by the word's known value `expect`.
fn scribble_lane_word(region: &Path, lane: usize, field: usize, expect: u64, value: Option<u64>) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(region)
        .expect("open the region");
    let word = |f: &mut std::fs::File, i: usize| {
        let mut b = [0u8; 8];
        f.seek(SeekFrom::Start((i * 8) as u64)).expect("seek");
        f.read_exact(&mut b).expect("read");
        u64::from_le_bytes(b)
    };
    // The static header names where the lanes start and how long each is.
    let lanes_off = word(&mut f, 12) as usize;
    let lane_words = word(&mut f, 14) as usize;
    let at = lanes_off + lane * lane_words + field;
    assert_eq!(
        word(&mut f, at),
        expect,
        "the layout is not what the test expects"
    );
    if let Some(v) = value {
        f.seek(SeekFrom::Start((at * 8) as u64)).expect("seek");
        f.write_all(&v.to_le_bytes()).expect("write");
    }
}

#[test]
fn the_agents_liveness_folder_is_created_beside_the_region_for_the_pod_group() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), &[TENANT]);
    let h = start(cfg.clone());
    let folder = h.core.region.owner.region().holders_dir().to_path_buf();
    assert_eq!(folder, dir.path().join("shared").join("region.holders"));
    let mode = |p: &Path| std::fs::metadata(p).expect("folder").permissions().mode() & 0o7777;
    assert_eq!(mode(&folder), 0o2770);
    drop(h);
    // A restart keeps it, and mends its mode.
    std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let _h = start(cfg);
    assert_eq!(mode(&folder), 0o2770);
}

/// Damages the region the way a process that maps it can, and shows the sidecar notices,
/// stops reading it, says so on `/readyz`, replaces it with a new region configured from
/// its own memory, and goes on: what it had drained is reported once, and a new agent
/// spends on the new region.
fn region_replaced_after(damage: impl FnOnce(&Path)) {
    tollgate_client::install_truncation_guard().expect("the truncation guard");
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), &[TENANT]);
    let mut h = start(cfg.clone());
    serve(&mut h, TENANT, &[], 20 * C);
    let gate = Gate::attach(&cfg.region).expect("attach");
    let mut spent = with_agent(&mut h, move || spend(&gate, TENANT, 5));
    h.tick_until("the calls to be reported", |h| h.records().len() == 5);
    assert!(h.health.ready(), "{:?}", h.health.not_ready_reasons());

    damage(&cfg.region);
    h.tick();
    assert_eq!(h.metrics.region_damage.get(), 1);
    let reasons = h.health.not_ready_reasons().join("; ");
    assert!(reasons.contains("region"), "{reasons}");
    h.tick_until("a new region", |h| h.health.ready());
    assert_eq!(h.metrics.region_damage.get(), 1, "the new region is sound");
    assert!(h.core.region.owner.region().damage().is_none());

    // Agents attach to the new one; its tenant, prices and leases came from the sidecar.
    let gate = Gate::attach(&cfg.region).expect("attach the new region");
    spent += with_agent(&mut h, move || spend(&gate, TENANT, 4));
    h.tick_until("the new calls to be reported", |h| h.records().len() == 9);
    let reported: u64 = h.records().iter().map(|r| r.2).sum();
    assert_eq!(reported, spent, "every call reported once");
    assert!(h.core.region.owner.region().audit().check().is_ok());
}

#[test]
fn a_scribbled_region_header_is_replaced_by_a_new_region() {
    region_replaced_after(|region| {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(region)
            .expect("open");
        // The size word of the static header.
        f.seek(SeekFrom::Start(2 * 8)).expect("seek");
        f.write_all(&7u64.to_le_bytes()).expect("write");
    });
}

#[test]
fn a_region_truncated_under_the_sidecar_is_survived_and_replaced() {
    region_replaced_after(|region| {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(region)
            .expect("open");
        f.set_len(0).expect("truncate");
    });
}

#[test]
fn a_sidecar_restarted_after_replacing_its_region_reports_the_new_region_s_calls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), &[TENANT]);
    let mut h = start(cfg.clone());
    serve(&mut h, TENANT, &[], 20 * C);
    let gate = Gate::attach(&cfg.region).expect("attach");
    let mut spent = with_agent(&mut h, move || spend(&gate, TENANT, 5));
    h.tick_until("the calls to be reported", |h| h.records().len() == 5);
    std::fs::remove_file(&cfg.region).expect("remove the region");
    h.tick_until("a new region", |h| {
        h.metrics.region_damage.get() == 1 && h.health.ready()
    });
    // Dies with the old region's batches unacknowledged: their cursors name lanes of a
    // region that is gone, and must not hide the new region's records.
    drop(h);
    let mut h = start(cfg.clone());
    let gate = Gate::attach(&cfg.region).expect("attach");
    spent += with_agent(&mut h, move || spend(&gate, TENANT, 3));
    h.tick_until("the new region's calls to be reported", |h| {
        h.records().len() == 8
    });
    let reported: u64 = h.records().iter().map(|r| r.2).sum();
    assert_eq!(reported, spent);
}

/// Reserves one interactive call of `tenant` and gives it back: the denial, if any.
fn try_call(gate: &Gate, tenant: &str) -> Option<tollgate_client::Denial> {
    let t = gate.tenant(tenant).expect("tenant");
    let m = gate.model(MODEL).expect("model");
    let call = Call::model(&m)
        .tenant(t)
        .input_tokens(400)
        .max_output_tokens(200)
        .tier(tollgate_core::Tier::Interactive);
    match gate.reserve(&call) {
        Ok(h) => {
            h.commit(Usage::new(400, 100)).expect("commit");
            None
        }
        Err(tollgate_client::ReserveError::Denied(d)) => Some(d),
        Err(e) => panic!("reserve: {e}"),
    }
}

/// The authority's answer that nothing of `limit` is free for the next minute.
fn refuse_for_a_minute(h: &mut Harness, limit: &LimitKey, reason: v1::LeaseRefusalReason) {
    h.down(session_down::Msg::Refusal(v1::LeaseRefusal {
        limit: Some(limit.clone()),
        reason: reason as i32,
        retry_unix_ms: now_unix_ms() + 60_000,
    }));
}

#[test]
fn a_refused_limit_denies_at_once_until_a_lease_or_a_policy_lifts_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut h = start(config(dir.path(), &[TENANT]));
    // 3 calls' worth in the wallet (the third reserve holds 800 for a 600 call): the
    // agent runs it dry.
    serve(&mut h, TENANT, &[], 3 * CALL_MICRO + 200);
    let region = h.core.cfg.region.clone();
    let gate = Arc::new(Gate::attach(&region).expect("attach"));
    let g = gate.clone();
    let spent = with_agent(&mut h, move || spend(&g, TENANT, 3));
    assert_eq!(spent, 3 * CALL_MICRO);
    // Dry, no refusal: the denial is the bounded wait's, with the short default hint.
    let g = gate.clone();
    let d = with_agent(&mut h, move || try_call(&g, TENANT)).expect("denied: the wallet is dry");
    assert!(d.retry_after < Duration::from_secs(5), "{d:?}");

    // The authority: nothing of the wallet is free, the hard cap binds for a minute.
    let wallet = LimitKey::wallet(TENANT);
    refuse_for_a_minute(&mut h, &wallet, v1::LeaseRefusalReason::HardCap);
    let g = gate.clone();
    h.tick_until("the lane to be denied at once", |h| {
        let g = g.clone();
        with_agent(h, move || try_call(&g, TENANT))
            .is_some_and(|d| d.limit == Some(LimitKind::HardCap))
    });
    // Every call now: the cap, a retry hint near the refusal's minute, and no demand.
    let before = h.sent.len();
    let g = gate.clone();
    let denials = with_agent(&mut h, move || {
        (0..1_000).map(|_| try_call(&g, TENANT)).collect::<Vec<_>>()
    });
    for d in &denials {
        let d = d.as_ref().expect("denied");
        assert_eq!(d.limit, Some(LimitKind::HardCap), "{d:?}");
        assert!(d.retry_after >= Duration::from_secs(50), "{d:?}");
    }
    assert!(
        h.demanded_since(before).is_empty(),
        "a runaway loop against a refused limit asks the authority for nothing"
    );

    // A new lease lifts it at the next lanes pass.
    h.grant(&wallet, "acme-wallet-2", 10 * CALL_MICRO);
    let g = gate.clone();
    h.tick_until("the lane to be refilled", |h| {
        let g = g.clone();
        with_agent(h, move || try_call(&g, TENANT)).is_none()
    });

    // Refused again, then a policy push (a raised cap): dry lanes wait for a refill again.
    let g = gate.clone();
    with_agent(&mut h, move || while try_call(&g, TENANT).is_none() {});
    refuse_for_a_minute(&mut h, &wallet, v1::LeaseRefusalReason::WalletDry);
    let g = gate.clone();
    h.tick_until("the lane to be denied at once", |h| {
        let g = g.clone();
        with_agent(h, move || try_call(&g, TENANT)).is_some_and(|d| {
            d.limit == Some(LimitKind::TenantWallet) && d.retry_after >= Duration::from_secs(50)
        })
    });
    h.policy(TENANT, 2, &[]);
    assert!(
        h.core.region.limits.values().all(|l| l.refused.is_none()),
        "a policy push lifts the refusals of its tenant"
    );
    let g = gate.clone();
    let d = with_agent(&mut h, move || try_call(&g, TENANT)).expect("still dry");
    assert!(
        d.retry_after < Duration::from_secs(5),
        "the wait again, not the refusal: {d:?}"
    );
}

/// A registration refused for good after the sidecar was registered (its credential was
/// withdrawn): it goes on from its leases, but says so until a registration succeeds.
#[test]
fn a_registration_refused_for_good_is_counted_and_keeps_the_sidecar_not_ready() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut h = start(config(dir.path(), &[TENANT]));
    h.tick();
    assert!(h.health.ready(), "{:?}", h.health.not_ready_reasons());
    h.core.on_event(Event::Refused {
        code: tonic::Code::PermissionDenied,
        message: "this credential is not allowed to act for tenant \"acme\"".into(),
    });
    h.tick();
    let reasons = h.health.not_ready_reasons().join("; ");
    assert!(
        reasons.contains("registration for tenants acme refused")
            && reasons.contains("not allowed to act"),
        "{reasons}"
    );
    assert_eq!(h.metrics.register_refusals.get(), 1);
    assert_eq!(h.metrics.register_refused.get(), 1);
    assert_eq!(h.metrics.authority_connected.get(), 0);
    // Registered again: the refusal is over.
    let (tx, _up) = mpsc::channel(16);
    h.core.on_event(Event::Connected {
        response: Box::new(v1::RegisterResponse::default()),
        up: tx,
    });
    assert_eq!(h.metrics.register_refused.get(), 0);
    assert!(
        !h.health
            .not_ready_reasons()
            .iter()
            .any(|r| r.contains("refused")),
        "{:?}",
        h.health.not_ready_reasons()
    );
}

/// A grant asks the loop to serve lanes before its next tick (a new task's first call
/// waits for exactly that grant), and a task's budget, a limit like any other, gets no
/// per-limit metric series: tasks number in thousands, the wallet's series stay.
#[test]
fn a_grant_brings_the_tick_forward_and_a_task_gets_no_metric_series() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(dir.path(), &["acme"]);
    let region = cfg.region.clone();
    let mut h = start(cfg);
    serve(&mut h, "acme", &[], 100 * C);
    assert!(h.core.take_serve_now(), "a grant wants lanes served now");
    assert!(!h.core.take_serve_now(), "once per grant");
    h.tick();
    assert!(!h.core.take_serve_now(), "a tick asks for nothing");

    let (tx, rx) = std_mpsc::channel();
    std::thread::spawn(move || {
        let gate = Gate::attach(&region).expect("attach");
        let t = gate.tenant("acme").expect("tenant");
        let m = gate.model(MODEL).expect("model");
        let spec = tollgate_client::TaskSpec::new("job-1")
            .tenant(t)
            .budget(tollgate_core::Credits(10 * C));
        let task = gate.open_task(&spec).expect("open the task");
        let end = Instant::now() + Duration::from_secs(30);
        let mut done = 0;
        while done < 3 && Instant::now() < end {
            let call = Call::model(&m)
                .tenant(t)
                .input_tokens(400)
                .max_output_tokens(200)
                .task(&task);
            match gate.reserve(&call) {
                Ok(r) => {
                    r.commit(Usage::new(400, 100)).expect("commit");
                    done += 1;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
        let _ = tx.send(done);
    });
    let key = LimitKey::task("acme", "job-1");
    let mut leased = false;
    let mut calls = None;
    h.tick_until("the agent's calls on its task", |h| {
        if !leased && h.demanded_since(0).contains(&key.canonical()) {
            h.grant(&key, "job-1-lease", 5 * C);
            assert!(h.core.take_serve_now());
            leased = true;
        }
        calls = rx.try_recv().ok();
        calls.is_some()
    });
    assert_eq!(calls, Some(3), "every call on the task was granted");
    let mut registry = prometheus_client::registry::Registry::default();
    h.metrics.register(&mut registry);
    let mut text = String::new();
    h.tick_until("the calls' consumption drained into the metrics", |_| {
        text = crate::metrics::render(&registry);
        text.contains("tollgate_sidecar_consumed_micro_credits_total{limit=\"acme/wallet\"}")
    });
    assert!(!text.contains("job-1"), "no series names the task: {text}");
    assert!(
        text.contains("tollgate_sidecar_tick_seconds_count"),
        "{text}"
    );
}
