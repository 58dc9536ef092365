//! Real processes against one region: the conservation equation holds exactly, with and
//! without `kill -9`.
//!
//! The test process is the sidecar: it creates a region in a temp dir with 4 limits of `L`
//! credits each (tenant wallet, per-minute and per-hour windows, agent instance), tops lanes
//! up on demand and below a low-water mark, drains the rings, and reclaims dead processes.
//! The agents are this same test binary, re-executed (`current_exe()`) with
//! `TOLLGATE_MP_ROLE=agent` so that only [`agent_child`] runs: 4 processes x 2 threads
//! reserving random amounts at random tiers (fixed-price and model-rated calls, a task budget
//! on most), then committing, cancelling, dropping, keeping a few outstanding, or handing the
//! reservation to the sibling thread to commit there. An agent stops when its stdin closes.
//!
//! At the end (every agent exited or killed, every dead process reclaimed, every ring
//! drained) the test checks, for every lane and every pool,
//! `topped_up = available + local + held + consumed + revoked + reclaimed` and
//! `granted + overrun = available + carved + consumed + returned` (with `carved` equal to
//! what the lanes still hold), that nothing is still carved or held, that the paid spend
//! never exceeded `L`, and that the drained usage records add up to the consumed credits.
//!
//! `kill_9_agents_mid_run_and_reclaim_exactly` SIGKILLs a random live agent (one that has
//! claimed lanes, so it is mid-run) at least 50 times, reclaims it at once, checks that a
//! second reclaim finds nothing (exactly once) and starts a replacement.
//!
//! Each scenario also runs **as a Kubernetes pod runs it** (the `_in_pod_namespaces`
//! tests): every agent in a PID and mount namespace of its own (`unshare --pid --fork
//! --mount-proc`, so its pid is 1 and `/proc` shows only itself) and under another uid
//! (65534) that shares only a group with the sidecar (as the pod's `fsGroup` gives it), with
//! no new privileges. The region folder is shared the way an emptyDir is. Liveness must
//! then come from the agents' holder locks, not from pids. Those tests need root and
//! `unshare`/`setpriv`; without them they print `SKIPPED: <name>` (and fail when
//! `TOLLGATE_TEST_REQUIRE_SERVICES=1`, as in CI).
//!
//! `TOLLGATE_STRESS_RUNS=N` repeats each scenario N times; `TOLLGATE_STRESS_SEED` fixes the
//! random seed (printed on every run).

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tollgate_client::{
    Audit, Call, Gate, PoolSpec, Region, RegionConfig, Reservation, ReserveError, SidecarError,
    TenantSpec, UsageRecord,
};
use tollgate_core::rating::{ModelPrice, PriceBook, PriceBookSpec, Pricing};
use tollgate_core::{Credits, Horizon, LimitKind, Tier, Usage};

const ROLE_VAR: &str = "TOLLGATE_MP_ROLE";
const REGION_VAR: &str = "TOLLGATE_MP_REGION";
const SEED_VAR: &str = "TOLLGATE_MP_SEED";
const OVERRUN_VAR: &str = "TOLLGATE_MP_OVERRUN";
const RUNS_VAR: &str = "TOLLGATE_STRESS_RUNS";
const FIXED_SEED_VAR: &str = "TOLLGATE_STRESS_SEED";

/// One credit in micro-credits.
const C: u64 = 1_000_000;
const AGENTS: usize = 4;
const THREADS: usize = 2;
const KILLS: usize = 50;
const MODEL: &str = "gpt-test";
const TENANT: &str = "acme";
/// A sidecar top-up, and the low-water mark below which a lane is topped up unasked.
const TOP_UP: u64 = 200 * C;
const LOW_WATER: u64 = 50 * C;
/// No scenario may take longer than this: a hang fails with a message instead.
const LIVENESS: Duration = Duration::from_secs(120);
/// The group the sidecar and the agents share in pod mode (a pod's `fsGroup`), and the
/// agents' uid there (not root, not the sidecar's).
const POD_GROUP: u32 = 4242;
const POD_AGENT_UID: u32 = 65534;

/// The scenarios run on parallel test threads of one process, and a fork copies every
/// descriptor the process has open until the child execs, including one with which
/// another scenario's sidecar is just testing (and so holding) a dead holder's lock: that
/// holder would then look alive to its own sidecar for an instant. A real sidecar does not
/// fork; here spawning and the sidecar's liveness work take turns.
static FORK_OR_PROBE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn fork_or_probe() -> std::sync::MutexGuard<'static, ()> {
    FORK_OR_PROBE.lock().unwrap_or_else(|e| e.into_inner())
}

/// How agent processes are started.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Isolation {
    /// Children of the test process, in its namespaces, as root.
    Shared,
    /// Each in its own PID and mount namespace, as another uid sharing only a group.
    Pod,
}

/// The one child `unshare --fork` started (the agent), as our PID namespace numbers it.
fn forked_child(unshare_pid: u32) -> u32 {
    let path = format!("/proc/{unshare_pid}/task/{unshare_pid}/children");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut kids = text
        .split_whitespace()
        .map(|p| p.parse::<u32>().expect("a pid"));
    let kid = kids
        .next()
        .unwrap_or_else(|| panic!("unshare {unshare_pid} has no child"));
    assert!(kids.next().is_none(), "unshare {unshare_pid} has one child");
    kid
}

/// Whether pod mode can run here; prints `SKIPPED: <name>` when not (and panics instead
/// when services are required, as in CI).
fn pod_mode_available(name: &str) -> bool {
    let root = nix::unistd::geteuid().is_root();
    let works = root
        && Command::new("unshare")
            .args([
                "--pid",
                "--fork",
                "--mount-proc",
                "setpriv",
                "--reuid=65534",
            ])
            .args(["--regid=65534", "--clear-groups", "--", "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    if !works {
        let why = if root {
            "unshare/setpriv cannot create namespaces here"
        } else {
            "needs root"
        };
        if std::env::var("TOLLGATE_TEST_REQUIRE_SERVICES").as_deref() == Ok("1") {
            panic!("{name}: {why}, and TOLLGATE_TEST_REQUIRE_SERVICES=1");
        }
        println!("SKIPPED: {name} ({why})");
    }
    works
}

// ---------------------------------------------------------------------------------------
// Random numbers (no dependency; reproducible from the printed seed).

#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    /// splitmix64
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
    fn percent(&mut self) -> u64 {
        self.next() % 100
    }
}

fn base_seed() -> u64 {
    std::env::var(FIXED_SEED_VAR)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                ^ u64::from(std::process::id())
        })
}

fn runs() -> usize {
    std::env::var(RUNS_VAR)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .max(1)
}

// ---------------------------------------------------------------------------------------
// The agent role (a child process).

/// Entry point of the agent processes; a no-op in a normal test run.
#[test]
fn agent_child() {
    if std::env::var(ROLE_VAR).as_deref() != Ok("agent") {
        return;
    }
    let region = std::env::var(REGION_VAR).expect("TOLLGATE_MP_REGION names the region");
    let seed: u64 = std::env::var(SEED_VAR)
        .ok()
        .and_then(|s| s.parse().ok())
        .expect("TOLLGATE_MP_SEED is a number");
    let overrun = std::env::var(OVERRUN_VAR).as_deref() == Ok("1");
    run_agent(Path::new(&region), seed, overrun);
}

/// Set when the parent closes our stdin.
static STOP: AtomicBool = AtomicBool::new(false);

fn run_agent(region: &Path, seed: u64, overrun: bool) {
    std::thread::spawn(|| {
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 64];
        while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
        STOP.store(true, Ordering::Release);
    });
    let gate = Gate::attach(region).expect("agent attaches to the sidecar's region");
    let tenant = gate.tenant(TENANT).expect("tenant is configured");
    let model = gate.model(MODEL).expect("model is in the price book");
    // Tasks outlive the reservations that spend them (some are committed by the sibling);
    // a thread moves to its next task when one is spent.
    let mut rng = Rng::new(seed);
    let tasks: Vec<Vec<tollgate_client::LocalTask>> = (0..THREADS)
        .map(|_| {
            (0..256)
                .map(|_| tollgate_client::LocalTask::new(Credits(rng.range(20, 400) * C)))
                .collect()
        })
        .collect();
    // Each thread sends some reservations to its sibling, which commits them.
    let (tx0, rx0) = mpsc::channel::<Pending<'_>>();
    let (tx1, rx1) = mpsc::channel::<Pending<'_>>();
    let ends = [(tx1, rx0), (tx0, rx1)];
    std::thread::scope(|s| {
        for (i, (to_sibling, inbox)) in ends.into_iter().enumerate() {
            let (gate, model, tasks) = (&gate, &model, &tasks[i]);
            s.spawn(move || {
                let mut rng = Rng::new(seed.wrapping_mul(31).wrapping_add(i as u64 + 1));
                let me = Agent {
                    gate,
                    tenant,
                    model,
                    tasks,
                    overrun,
                };
                me.run(&mut rng, to_sibling, inbox);
            });
        }
    });
    debug_assert_eq!(THREADS, 2);
}

/// One agent thread's view.
struct Agent<'g> {
    gate: &'g Gate,
    tenant: tollgate_client::TenantId,
    model: &'g tollgate_client::Model,
    tasks: &'g [tollgate_client::LocalTask],
    overrun: bool,
}

/// A reservation and the actual cost to commit it with.
type Pending<'g> = (Reservation<'g>, u64);

impl<'g> Agent<'g> {
    fn run(
        &self,
        rng: &mut Rng,
        to_sibling: mpsc::Sender<Pending<'g>>,
        inbox: mpsc::Receiver<Pending<'g>>,
    ) {
        let Agent {
            gate,
            tenant,
            model,
            tasks,
            overrun,
        } = *self;
        let mut task = 0usize;
        let mut outstanding: Vec<Pending<'g>> = Vec::new();
        let settle = |(hold, actual): Pending<'g>| {
            hold.commit_credits(Credits(actual))
                .expect("a live agent's commit succeeds");
        };
        while !STOP.load(Ordering::Acquire) {
            while let Ok(r) = inbox.try_recv() {
                settle(r);
            }
            let tier = match rng.percent() {
                0..60 => Tier::Interactive,
                60..85 => Tier::Scheduler,
                _ => Tier::Background,
            };
            let use_task = task < tasks.len() && rng.percent() < 80;
            let by_model = rng.percent() < 25;
            let (input, max_out) = (rng.range(1, 2_000), rng.range(1, 1_000));
            let mut call = if by_model {
                Call::model(model)
                    .input_tokens(input)
                    .max_output_tokens(max_out)
            } else {
                Call::fixed(Credits(rng.range(1, 20 * C)))
            }
            .tenant(tenant)
            .tier(tier);
            if use_task {
                call = call.local_task(&tasks[task]);
            }
            let hold = match gate.reserve(&call) {
                Ok(h) => h,
                Err(ReserveError::Denied(_)) => continue,
                Err(ReserveError::TaskExhausted { .. }) => {
                    task += 1;
                    continue;
                }
                // Every slot of the lane is held (some by the sibling): settle ours, go on.
                Err(ReserveError::TooManyOutstanding) => {
                    for r in outstanding.drain(..) {
                        settle(r);
                    }
                    while let Ok(r) = inbox.try_recv() {
                        settle(r);
                    }
                    std::thread::yield_now();
                    continue;
                }
                Err(e) => panic!("unexpected reserve error: {e}"),
            };
            let held = hold.amount().0;
            let actual = match rng.percent() {
                // An occasional overrun (a provider that ignored the maximum).
                0..3 if overrun => held + rng.range(1, 5 * C),
                _ => rng.range(0, held),
            };
            match rng.percent() {
                0..50 if by_model => {
                    let usage = Usage::new(input, rng.range(0, max_out));
                    hold.commit(usage).expect("usage within the maximum rates");
                }
                0..50 => settle((hold, actual)),
                50..60 => hold.cancel(),
                60..70 => drop(hold),
                70..88 => {
                    outstanding.push((hold, actual));
                    if outstanding.len() > 4 {
                        settle(outstanding.remove(0));
                    }
                }
                _ => {
                    if let Err(mpsc::SendError(r)) = to_sibling.send((hold, actual)) {
                        settle(r);
                    }
                }
            }
        }
        for r in outstanding.drain(..) {
            settle(r);
        }
        drop(to_sibling);
        // The sibling drops its sender when it stops: commit what it sent until then.
        for r in inbox {
            settle(r);
        }
    }
}

// ---------------------------------------------------------------------------------------
// The sidecar role (this test process).

struct Sidecar {
    _dir: tempfile::TempDir,
    path: PathBuf,
    isolation: Isolation,
    /// The binary agents run (pod mode: a copy inside the shared folder, which the agents'
    /// uid can read whatever the checkout's permissions).
    agent_exe: PathBuf,
    region: Region,
    limit: u64,
    records: Vec<UsageRecord>,
    lost_records: u64,
    top_ups: u64,
    refusals: u64,
}

fn limits() -> [LimitKind; 4] {
    [
        LimitKind::TenantWallet,
        LimitKind::TenantWindow(Horizon::Minute),
        LimitKind::TenantWindow(Horizon::Hour),
        LimitKind::Agent(Horizon::Day),
    ]
}

impl Sidecar {
    /// A region with tenant `acme` subject to 4 limits of `limit` micro-credits each, lower
    /// tiers kept above a floor on the wallet, and a per-token price book.
    fn new(limit: u64, isolation: Isolation) -> Sidecar {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut agent_exe = std::env::current_exe().expect("test binary path");
        if isolation == Isolation::Pod {
            // As an emptyDir with an fsGroup: group-owned, setgid, group-writable.
            nix::unistd::chown(
                dir.path(),
                None,
                Some(nix::unistd::Gid::from_raw(POD_GROUP)),
            )
            .expect("chgrp the shared folder");
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o2770))
                .expect("chmod the shared folder");
            let copy = dir.path().join("agent-bin");
            std::fs::copy(&agent_exe, &copy).expect("copy the agent binary");
            std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o750))
                .expect("chmod the agent binary");
            agent_exe = copy;
        }
        let path = dir.path().join("region");
        let region = Region::create(
            &path,
            RegionConfig {
                pools: 4,
                tenants: 1,
                lanes: 128,
                slots_per_lane: 16,
                ring_capacity: 1024,
                price_book_bytes: 4096,
                ..RegionConfig::default()
            },
        )
        .expect("create region");
        for (p, l) in limits().into_iter().enumerate() {
            let floors = if p == 0 {
                [Credits(0), Credits(limit / 20), Credits(limit / 10)]
            } else {
                [Credits(0); 3]
            };
            region
                .configure_pool(p, &PoolSpec { limit: l, floors })
                .expect("configure pool");
            region.grant(p, Credits(limit)).expect("grant");
        }
        let all = vec![0, 1, 2, 3];
        region
            .configure_tenant(
                0,
                &TenantSpec {
                    name: TENANT.into(),
                    classes: std::array::from_fn(|_| [all.clone(), all.clone()]),
                },
            )
            .expect("configure tenant");
        let book = PriceBook::new(PriceBookSpec {
            version: 1,
            request_price: Credits::ZERO,
            default_max_output_tokens: 1_000,
            models: vec![ModelPrice {
                name: MODEL.into(),
                pricing: Pricing::PerToken {
                    input_per_million: Credits(2_000 * C),
                    output_per_million: Credits(6_000 * C),
                },
                max_output_tokens: None,
            }],
        })
        .expect("price book");
        region.publish_price_book(&book).expect("publish");
        region.set_slow_path(100, Duration::from_micros(300));
        Sidecar {
            _dir: dir,
            path,
            isolation,
            agent_exe,
            region,
            limit,
            records: Vec::new(),
            lost_records: 0,
            top_ups: 0,
            refusals: 0,
        }
    }

    fn spawn_agent(&self, seed: u64, overrun: bool) -> Child {
        let _turn = fork_or_probe();
        let mut cmd = match self.isolation {
            Isolation::Shared => Command::new(&self.agent_exe),
            Isolation::Pod => {
                // `--kill-child`: a SIGKILL of `unshare` SIGKILLs the agent (pid 1 of its
                // namespace), so the test can kill -9 the agent through the pid it knows.
                let mut c = Command::new("unshare");
                c.args(["--pid", "--fork", "--kill-child", "--mount-proc"])
                    .arg("setpriv")
                    .arg(format!("--reuid={POD_AGENT_UID}"))
                    .arg(format!("--regid={POD_AGENT_UID}"))
                    .arg(format!("--groups={POD_GROUP}"))
                    .args(["--no-new-privs", "--"])
                    .arg(&self.agent_exe);
                c
            }
        };
        cmd.args([
            "agent_child",
            "--exact",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(ROLE_VAR, "agent")
        .env(REGION_VAR, &self.path)
        .env(SEED_VAR, seed.to_string())
        .env(OVERRUN_VAR, if overrun { "1" } else { "0" })
        .env_remove(RUNS_VAR)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the test binary as an agent")
    }

    fn top_up(&mut self, lane: usize, amount: u64) {
        match self.region.top_up(lane, Credits(amount)) {
            Ok(()) => self.top_ups += 1,
            Err(SidecarError::Insufficient { limit, .. }) => {
                self.refusals += 1;
                self.region
                    .record_denial(lane, limit, Duration::from_millis(1))
                    .expect("record denial");
            }
            // The lane's process died and was reclaimed, or has not written its key yet.
            Err(SidecarError::LaneNotInUse(_)) => {}
            Err(e) => panic!("top-up of lane {lane} failed: {e}"),
        }
    }

    /// One pass of the sidecar's work.
    fn serve_once(&mut self) {
        let _turn = fork_or_probe();
        for (lane, want) in self.region.demands() {
            let before = self.refusals;
            self.top_up(lane, want.0.max(TOP_UP));
            if self.refusals > before && want.0 < TOP_UP {
                // The big top-up did not fit: the exact demand may.
                self.top_up(lane, want.0);
            }
        }
        for info in self.region.lanes() {
            let alive_owner = !info.reclaiming && info.key.is_some();
            if alive_owner && info.available.0 < LOW_WATER && info.topped_up.0 > 0 {
                self.top_up(info.lane, TOP_UP);
            }
        }
        let st = self
            .region
            .drain_all(&mut self.records)
            .expect("drain rings");
        self.lost_records = self.lost_records.max(st.lost_total);
        self.region.reclaim_dead().expect("reclaim dead processes");
    }

    /// Closes every agent's stdin, keeps serving until they exit, and checks they exited
    /// cleanly.
    fn stop_all(&mut self, children: &mut Vec<Child>, started: Instant) {
        for c in children.iter_mut() {
            drop(c.stdin.take());
        }
        while !children.is_empty() {
            assert!(
                started.elapsed() < LIVENESS,
                "agents did not stop within {LIVENESS:?}"
            );
            self.serve_once();
            // try_wait reaps an exited agent; keep only the running ones.
            children.retain_mut(|c| match c.try_wait().expect("try_wait") {
                Some(status) => {
                    assert!(status.success(), "an agent failed: {status}");
                    false
                }
                None => true,
            });
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Reclaims the lanes of every exited agent, drains, and checks the equation exactly.
    fn finish_and_check(&mut self, label: &str) -> Audit {
        let _turn = fork_or_probe();
        let reports = self.region.reclaim_dead().expect("final reclaim");
        assert!(
            self.region.processes().is_empty(),
            "{label}: lanes still claimed after every agent exited and was reclaimed: {:?}",
            self.region.processes()
        );
        assert!(
            self.region
                .reclaim_dead()
                .expect("second reclaim")
                .is_empty(),
            "{label}: a second reclaim found work: not exactly once"
        );
        let st = self
            .region
            .drain_all(&mut self.records)
            .expect("final drain");
        self.lost_records = self.lost_records.max(st.lost_total);
        let audit = self.region.audit();
        check_conservation(&audit, label);
        for l in &audit.lanes {
            assert_eq!(l.held, 0, "{label}: lane {} still holds credits", l.lane);
            assert_eq!(
                l.local, 0,
                "{label}: lane {} still has local credits",
                l.lane
            );
            assert_eq!(
                l.available, 0,
                "{label}: lane {} still has credits after reclaim",
                l.lane
            );
            assert_eq!(
                l.carved(),
                0,
                "{label}: lane {} still owes its pools",
                l.lane
            );
        }
        for p in &audit.pools {
            assert_eq!(
                p.carved, 0,
                "{label}: pool {} still has carved credits",
                p.pool
            );
            assert_eq!(p.granted, self.limit, "{label}: pool {} granted", p.pool);
            let paid = p.consumed - p.overrun;
            assert!(
                paid <= self.limit,
                "{label}: pool {} paid {paid} past its limit {}",
                p.pool,
                self.limit
            );
            assert!(
                p.consumed <= self.limit + p.overrun,
                "{label}: pool {} spent {} > limit {} + overruns {}",
                p.pool,
                p.consumed,
                self.limit,
                p.overrun
            );
            // Nothing left anywhere but in the pool: every credit came back or was spent.
            assert_eq!(
                p.available + p.consumed + p.returned,
                p.granted + p.overrun,
                "{label}: pool {} lost or created credits",
                p.pool
            );
        }
        // All 4 pools carve every lane, so they must agree on what was spent.
        let spent: Vec<u64> = audit.pools.iter().map(|p| p.consumed).collect();
        assert!(
            spent.windows(2).all(|w| w[0] == w[1]),
            "{label}: pools disagree on spend {spent:?}"
        );
        // The rings never lose credits: with no record lost, the records add up exactly.
        let recorded: u64 = self.records.iter().map(|r| r.actual.0).sum();
        if self.lost_records == 0 {
            assert_eq!(
                recorded, spent[0],
                "{label}: drained usage records do not add up to the consumed credits"
            );
        } else {
            assert!(recorded <= spent[0], "{label}: records exceed consumption");
        }
        eprintln!(
            "{label}: spent {} of {} credits ({} overrun) in {} records ({} lost), {} top-ups, {} refused, {} lanes left to the final reclaim",
            spent[0] as f64 / C as f64,
            self.limit as f64 / C as f64,
            audit.pools[0].overrun as f64 / C as f64,
            self.records.len(),
            self.lost_records,
            self.top_ups,
            self.refusals,
            reports.len()
        );
        audit
    }
}

/// The conservation equation for every lane and pool, written out term by term.
fn check_conservation(audit: &Audit, label: &str) {
    assert!(
        !audit.lanes.is_empty(),
        "{label}: no lane was ever topped up"
    );
    for l in &audit.lanes {
        assert_eq!(
            l.topped_up,
            l.available + l.local + l.held + l.consumed + l.revoked + l.reclaimed,
            "{label}: lane equation broken: {l:?}"
        );
    }
    for p in &audit.pools {
        assert_eq!(
            p.granted + p.overrun,
            p.available + p.carved + p.consumed + p.returned,
            "{label}: pool equation broken: {p:?}"
        );
        let by_lanes: u64 = audit
            .lanes
            .iter()
            .filter(|l| l.pools.contains(&p.pool))
            .map(|l| l.carved())
            .sum();
        assert_eq!(
            p.carved, by_lanes,
            "{label}: pool {} carved differs from its lanes",
            p.pool
        );
    }
    audit
        .check()
        .unwrap_or_else(|e| panic!("{label}: audit: {e}"));
}

// ---------------------------------------------------------------------------------------
// The scenarios.

/// 4 agents x 2 threads spend a limit of L until it is exhausted; nothing is lost.
#[test]
fn agents_spend_at_most_the_limit_and_conserve_credits() {
    spend_the_limit(Isolation::Shared);
}

/// The same with every agent in its own PID and mount namespace, under another uid.
#[test]
fn agents_spend_at_most_the_limit_and_conserve_credits_in_pod_namespaces() {
    if pod_mode_available("agents_spend_at_most_the_limit_and_conserve_credits_in_pod_namespaces") {
        spend_the_limit(Isolation::Pod);
    }
}

fn spend_the_limit(isolation: Isolation) {
    for run in 0..runs() {
        let seed = base_seed().wrapping_add(run as u64);
        let label = format!("clean run {run}, {isolation:?} (seed {seed})");
        eprintln!("{label}");
        let mut rng = Rng::new(seed);
        let mut sc = Sidecar::new(30_000 * C, isolation);
        let started = Instant::now();
        let mut children: Vec<Child> = (0..AGENTS)
            .map(|_| sc.spawn_agent(rng.next(), false))
            .collect();
        // Serve until the interactive tier is refused for lack of credits (the limit binds),
        // then a little longer so every agent sees the denials.
        let mut exhausted_at: Option<Instant> = None;
        loop {
            assert!(
                started.elapsed() < LIVENESS,
                "{label}: the limit was not spent within {LIVENESS:?}"
            );
            sc.serve_once();
            for c in children.iter_mut() {
                if let Some(status) = c.try_wait().expect("try_wait") {
                    panic!("{label}: an agent exited early: {status}");
                }
            }
            let wallet = sc.region.pool(0).expect("pool 0");
            if exhausted_at.is_none() && wallet.available < TOP_UP && sc.refusals > 0 {
                exhausted_at = Some(Instant::now());
            }
            if exhausted_at.is_some_and(|t| t.elapsed() > Duration::from_millis(200)) {
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        sc.stop_all(&mut children, started);
        sc.finish_and_check(&label);
    }
}

/// The same with at least 50 `kill -9`s of random agents mid-run, each reclaimed exactly once
/// and replaced; overruns are in the mix.
#[test]
fn kill_9_agents_mid_run_and_reclaim_exactly() {
    kill_agents(Isolation::Shared);
}

/// The same with every agent in its own PID and mount namespace, under another uid: no
/// live agent is ever reclaimed (every agent is pid 1 of its namespace), and every killed
/// one is, exactly once.
#[test]
fn kill_9_agents_mid_run_and_reclaim_exactly_in_pod_namespaces() {
    if pod_mode_available("kill_9_agents_mid_run_and_reclaim_exactly_in_pod_namespaces") {
        kill_agents(Isolation::Pod);
    }
}

fn kill_agents(isolation: Isolation) {
    for run in 0..runs() {
        let seed = base_seed().wrapping_add(1_000 + run as u64);
        let label = format!("kill -9 run {run}, {isolation:?} (seed {seed})");
        eprintln!("{label}");
        let mut rng = Rng::new(seed);
        // Large enough that agents are mostly spending, not denied, when they are killed.
        let mut sc = Sidecar::new(2_000_000 * C, isolation);
        let started = Instant::now();
        let mut children: Vec<Child> = (0..AGENTS)
            .map(|_| sc.spawn_agent(rng.next(), true))
            .collect();
        let mut kills = 0usize;
        let mut reclaimed_lanes = 0usize;
        let mut reclaimed_credits = 0u64;
        let mut settled_by_reclaim = 0u64;
        let mut next_kill = Instant::now() + Duration::from_millis(rng.range(5, 40));
        while kills < KILLS {
            assert!(
                started.elapsed() < LIVENESS,
                "{label}: only {kills} kills within {LIVENESS:?}"
            );
            sc.serve_once();
            // Kill only while every agent has claimed lanes (is mid-run). Live agents are
            // never reclaimed: every holder that claims lanes is alive until killed.
            let turn = fork_or_probe();
            let procs = sc.region.processes();
            let alive: Vec<_> = procs.iter().filter(|p| p.alive).map(|p| p.holder).collect();
            assert_eq!(
                alive.len(),
                procs.len(),
                "{label}: a holder looks dead while no agent was killed since the last reclaim: {procs:?}"
            );
            if Instant::now() >= next_kill && alive.len() == children.len() {
                {
                    let i = rng.range(0, children.len() as u64 - 1) as usize;
                    let pid = children[i].id();
                    let agent_pid = match isolation {
                        Isolation::Shared => pid,
                        // The agent itself (pid 1 of its namespace), seen from ours; its
                        // `unshare` parent then ends with the same signal.
                        Isolation::Pod => forked_child(pid),
                    };
                    kill(Pid::from_raw(agent_pid as i32), Signal::SIGKILL).expect("kill -9");
                    let status = children[i].wait().expect("wait for the killed agent");
                    match isolation {
                        Isolation::Shared => assert_eq!(
                            status.signal(),
                            Some(Signal::SIGKILL as i32),
                            "{label}: agent {pid} ended otherwise: {status}"
                        ),
                        // This `unshare` reports a killed child as a failure; the agent's
                        // holder must be dead all the same (checked by the reclaim below).
                        Isolation::Pod => assert!(!status.success(), "{label}: {status}"),
                    }
                    let reports = sc.region.reclaim_dead().expect("reclaim");
                    let victim = reports.first().and_then(|r| r.holder);
                    assert!(
                        victim.is_some_and(|v| alive.contains(&v))
                            && reports.iter().all(|r| r.holder == victim),
                        "{label}: reclaim after killing {pid} did {reports:?}"
                    );
                    if isolation == Isolation::Shared {
                        // Same PID namespace: the pid the holder wrote is the child's.
                        let named = procs.iter().find(|p| Some(p.holder) == victim);
                        assert_eq!(named.and_then(|p| p.pid), Some(pid), "{label}");
                    }
                    reclaimed_lanes += reports.len();
                    reclaimed_credits += reports.iter().map(|r| r.returned).sum::<u64>();
                    settled_by_reclaim += reports.iter().map(|r| u64::from(r.settled)).sum::<u64>();
                    let again = sc.region.reclaim_dead().expect("reclaim again");
                    assert!(
                        again.is_empty(),
                        "{label}: a second reclaim of {pid} found work: not exactly once: first {reports:?}, then {again:?}"
                    );
                    assert!(
                        !sc.region
                            .processes()
                            .iter()
                            .any(|p| Some(p.holder) == victim),
                        "{label}: {pid} still holds lanes after reclaim"
                    );
                    drop(turn);
                    children[i] = sc.spawn_agent(rng.next(), true);
                    kills += 1;
                    next_kill = Instant::now() + Duration::from_millis(rng.range(5, 40));
                }
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        sc.stop_all(&mut children, started);
        let audit = sc.finish_and_check(&label);
        let pool_reclaimed = audit.pools[0].reclaimed;
        assert!(
            pool_reclaimed >= reclaimed_credits,
            "{label}: pools booked {pool_reclaimed} reclaimed, kills returned {reclaimed_credits}"
        );
        eprintln!(
            "{label}: {kills} kills, {reclaimed_lanes} lanes reclaimed from killed agents, {settled_by_reclaim} of their reservations settled by the sidecar, {} credits returned",
            tollgate_core::Credits::from_micros(reclaimed_credits)
        );
    }
}
