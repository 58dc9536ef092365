//! Real processes for the end-to-end tests: the `tollgate` binary as authority and sidecars,
//! and this test binary re-executed as agent processes (see [`agent_main`]).

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tollgate_proto::v1::admin_service_client::AdminServiceClient;
use tollgate_proto::v1::{self, GetBalanceRequest, GetStatementRequest};
use tonic::transport::Channel;

pub const TENANT: &str = "acme";
pub const ADMIN: &str = "e2e-admin-token";
pub const CREDIT: u64 = 1_000_000;

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_tollgate")
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// How a test starts sidecars and agents.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Isolation {
    /// Children of the test, in its namespaces, as root.
    Shared,
    /// As a Kubernetes pod runs them: the sidecar and every agent each in a PID and mount
    /// namespace of its own (`unshare --pid --fork --mount-proc`), agents under another uid
    /// that shares only a group with the sidecar (the pod's `fsGroup`), no new privileges;
    /// the region folder shared the way an emptyDir is.
    Pod,
}

/// The group the sidecar and the agents share in pod mode, and the agents' uid there.
pub const POD_GROUP: u32 = 4242;
pub const POD_AGENT_UID: u32 = 65534;

/// Whether pod mode can run here; prints `SKIPPED: <name>` when not (a failure instead
/// when `TOLLGATE_TEST_REQUIRE_SERVICES=1`, as in CI).
pub fn pod_mode_available(name: &str) -> bool {
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

/// A command for `program` under `isolation`; in pod mode run as `uid` (with the pod
/// group) when given, else as root, in its own PID and mount namespace.
fn isolated(isolation: Isolation, program: &Path, uid: Option<u32>) -> Command {
    match isolation {
        Isolation::Shared => Command::new(program),
        Isolation::Pod => {
            // `--kill-child`: if the test dies, its processes die with it.
            let mut c = Command::new("unshare");
            c.args(["--pid", "--fork", "--kill-child", "--mount-proc"]);
            if let Some(uid) = uid {
                c.arg("setpriv")
                    .arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={uid}"))
                    .arg(format!("--groups={POD_GROUP}"))
                    .args(["--no-new-privs", "--"]);
            }
            c.arg(program);
            c
        }
    }
}

/// Makes `dir` look like a pod's emptyDir with an `fsGroup`: group-owned, setgid,
/// group-writable; and its parents passable.
pub fn share_like_an_empty_dir(dir: &Path) {
    std::fs::create_dir_all(dir).expect("shared folder");
    nix::unistd::chown(dir, None, Some(nix::unistd::Gid::from_raw(POD_GROUP)))
        .expect("chgrp the shared folder");
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o2770))
        .expect("chmod the shared folder");
    if let Some(parent) = dir.parent() {
        let mode = std::fs::metadata(parent)
            .expect("parent")
            .permissions()
            .mode();
        std::fs::set_permissions(parent, std::fs::Permissions::from_mode(mode | 0o711))
            .expect("open the parent for traversal");
    }
}

/// The one child `unshare --fork` started, as our PID namespace numbers it.
fn forked_child(unshare_pid: u32) -> Option<u32> {
    let text =
        std::fs::read_to_string(format!("/proc/{unshare_pid}/task/{unshare_pid}/children")).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// A child process that is killed when dropped.
pub struct Proc {
    pub child: Child,
    /// Started under `unshare`: signals go to the process it forked (the real one).
    pub forked: bool,
}

impl Proc {
    pub fn new(child: Child, isolation: Isolation) -> Proc {
        Proc {
            child,
            forked: isolation == Isolation::Pod,
        }
    }
    pub fn pid(&self) -> Pid {
        let outer = self.child.id();
        let pid = if self.forked {
            forked_child(outer).unwrap_or(outer)
        } else {
            outer
        };
        Pid::from_raw(pid as i32)
    }
    /// SIGKILL, then reap.
    pub fn kill9(&mut self) {
        let _ = kill(self.pid(), Signal::SIGKILL);
        let _ = self.child.wait();
    }
    /// SIGTERM and wait up to `timeout` for a clean exit; true if it exited 0 (`unshare`
    /// passes its child's exit status on).
    pub fn term(&mut self, timeout: Duration) -> bool {
        let _ = kill(self.pid(), Signal::SIGTERM);
        let end = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(st)) => return st.success(),
                Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(20)),
                _ => {
                    self.kill9();
                    return false;
                }
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = kill(self.pid(), Signal::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// The authority process.
pub struct Authority {
    /// Killed when the test ends.
    pub proc: Proc,
    pub addr: SocketAddr,
}

impl Authority {
    /// Stops it (SIGTERM); true if it exited cleanly.
    pub fn stop(&mut self) -> bool {
        self.proc.term(Duration::from_secs(15))
    }
}

impl Authority {
    /// Starts `tollgate authority` on the SQLite store in `dir` (port 0 = any).
    pub fn start(dir: &Path, port: u16) -> Authority {
        let store = format!("sqlite://{}", dir.join("ledger.db").display());
        Authority::start_on(dir, port, &store)
    }

    /// Starts `tollgate authority` on `store` (any URL `--store` takes) with its config
    /// and signing key in `dir` (replicas given the same `dir` share the key).
    pub fn start_on(dir: &Path, port: u16, store: &str) -> Authority {
        std::fs::create_dir_all(dir).expect("authority dir");
        let key = dir.join("authority.key");
        if !key.exists() {
            let out = Command::new(bin())
                .args(["authority", "keygen", "--out"])
                .arg(&key)
                .output()
                .expect("run tollgate authority keygen");
            assert!(out.status.success(), "keygen: {out:?}");
        }
        let config = dir.join("authority.toml");
        std::fs::write(
            &config,
            format!(
                "admin_token = \"{ADMIN}\"\n\
                 [[sidecars]]\nname = \"pod-a\"\ntoken = \"pod-a-token\"\ntenants = [\"{TENANT}\"]\n\
                 [[sidecars]]\nname = \"pod-b\"\ntoken = \"pod-b-token\"\ntenants = [\"{TENANT}\"]\n\
                 [leases]\nttl_secs = 30\nsettle_grace_secs = 15\nrelearn_grace_secs = 1\n"
            ),
        )
        .expect("authority config");
        let mut child = Command::new(bin())
            .args(["authority", "--store", store, "--signing-key"])
            .arg(&key)
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--http",
                "off",
                "--config",
            ])
            .arg(&config)
            .args(["--log", "warn"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tollgate authority");
        // It prints "tollgate authority: gRPC on ADDR, ..." once it listens.
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent && let Some(rest) = line.split("gRPC on ").nth(1) {
                    let addr = rest.split(',').next().unwrap_or("").trim().to_string();
                    let _ = tx.send(addr);
                    sent = true;
                }
                if std::env::var_os("E2E_VERBOSE").is_some() {
                    eprintln!("[authority] {line}");
                }
            }
        });
        let addr: SocketAddr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the authority did not start within 30 s")
            .parse()
            .expect("the authority printed its address");
        Authority {
            proc: Proc::new(child, Isolation::Shared),
            addr,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// A sidecar process.
pub struct Sidecar {
    pub proc: Proc,
    pub region: PathBuf,
    pub http: u16,
    pub id: String,
    authority: String,
    extra: Vec<String>,
    isolation: Isolation,
}

impl Sidecar {
    pub fn start(dir: &Path, id: &str, authority: &str, extra: &[&str]) -> Sidecar {
        Sidecar::start_in(dir, id, authority, extra, Isolation::Shared)
    }

    /// [`Sidecar::start`] under `isolation` (pod mode: its own PID and mount namespace,
    /// the region folder shared like an emptyDir, its private state in a folder of its own).
    pub fn start_in(
        dir: &Path,
        id: &str,
        authority: &str,
        extra: &[&str],
        isolation: Isolation,
    ) -> Sidecar {
        let region_dir = dir.join(id);
        std::fs::create_dir_all(&region_dir).expect("region dir");
        let mut extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        if isolation == Isolation::Pod {
            share_like_an_empty_dir(&region_dir);
            // The signing key and outbox stay out of the agents' reach, as the injector
            // mounts them.
            let state = dir.join(format!("{id}-state"));
            std::fs::create_dir_all(&state).expect("state dir");
            extra.push("--state-dir".into());
            extra.push(state.display().to_string());
        }
        let region = region_dir.join("region");
        let http = free_port();
        let child = Self::spawn_child(&region, id, authority, http, &extra, isolation);
        Sidecar {
            proc: Proc::new(child, isolation),
            region,
            http,
            id: id.into(),
            authority: authority.into(),
            extra,
            isolation,
        }
    }

    fn spawn_child(
        region: &Path,
        id: &str,
        authority: &str,
        http: u16,
        extra: &[String],
        isolation: Isolation,
    ) -> Child {
        let token = region
            .parent()
            .and_then(Path::parent)
            .expect("the region folder has a parent")
            .join(format!("{id}-token"));
        std::fs::write(&token, format!("{id}-token")).expect("token file");
        let verbose = std::env::var_os("E2E_VERBOSE").is_some();
        isolated(isolation, Path::new(bin()), None)
            .arg("sidecar")
            .arg("--region")
            .arg(region)
            .args(["--authority", authority, "--sidecar-id", id, "--token-file"])
            .arg(&token)
            .args(["--tenants", TENANT, "--http", &format!("127.0.0.1:{http}")])
            .args(["--log", if verbose { "info" } else { "warn" }])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(if verbose {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .expect("spawn tollgate sidecar")
    }

    /// Restarts the process on the same region folder (after a kill).
    pub fn restart(&mut self) {
        self.proc.child = Self::spawn_child(
            &self.region,
            &self.id,
            &self.authority,
            self.http,
            &self.extra,
            self.isolation,
        );
    }

    /// Waits until agents can use the region (tenant configured, price book published).
    pub fn wait_ready(&self) {
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(g) = tollgate_client::Gate::attach(&self.region)
                && g.tenant(TENANT).is_ok()
                && g.model(MODEL).is_ok()
            {
                return;
            }
            assert!(
                Instant::now() < end,
                "sidecar {} not ready within 30 s",
                self.id
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The sidecar's Prometheus text, if it answers.
    pub fn metrics(&self) -> Option<String> {
        use std::io::{Read, Write};
        let mut s = TcpStream::connect(("127.0.0.1", self.http)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
            .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out)
    }

    /// A metric's value (first sample whose name and labels start with `prefix`).
    pub fn metric(&self, prefix: &str) -> Option<f64> {
        self.metrics()?
            .lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }
}

/// The model the tests' agents call: 1 credit per million input and output tokens,
/// so a call of `n` tokens costs `n` micro-credits.
pub const MODEL: &str = "unit-model";

pub fn price_book() -> v1::PriceBook {
    v1::PriceBook {
        tenant: TENANT.into(),
        models: vec![v1::ModelPrice {
            model: MODEL.into(),
            pricing: Some(v1::model_price::Pricing::Tokens(v1::TokenPrice {
                input_per_mtok_micro: CREDIT,
                output_per_mtok_micro: CREDIT,
            })),
            max_output_tokens: 1_000,
        }],
        default_max_output_tokens: 1_000,
        ..Default::default()
    }
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

/// `m` with the admin token.
pub fn authed<T>(m: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(m);
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {ADMIN}").parse().expect("header"),
    );
    r
}

pub async fn admin(url: &str) -> AdminServiceClient<Channel> {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        match tonic::transport::Endpoint::from_shared(url.to_string())
            .expect("url")
            .connect()
            .await
        {
            Ok(ch) => return AdminServiceClient::new(ch),
            Err(e) => {
                assert!(Instant::now() < end, "admin connect: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Creates the tenant with one purchased grant of `grant` and a plan with `hard_cap` on
/// overage (0 = no plan charge allowed past the grant... a cap of 0 means none, so tests
/// that want "nothing past the grant" pass 1).
/// `tollgate authority` on the SQLite store in `dir/authority` with the test tenant set up
/// (see [`setup_tenant`]), the runtime for admin calls and an admin client.
pub fn authority_with_tenant(
    dir: &Path,
    grant: u64,
    hard_cap: u64,
) -> (
    Authority,
    tokio::runtime::Runtime,
    AdminServiceClient<Channel>,
) {
    let auth = Authority::start(&dir.join("authority"), 0);
    let rt = rt();
    let admin = rt.block_on(async {
        let mut a = admin(&auth.url()).await;
        setup_tenant(&mut a, grant, hard_cap).await;
        a
    });
    (auth, rt, admin)
}

pub async fn setup_tenant(a: &mut AdminServiceClient<Channel>, grant: u64, hard_cap: u64) {
    a.create_tenant(authed(v1::CreateTenantRequest {
        tenant: TENANT.into(),
        display_name: "e2e".into(),
        deduction_order: 0,
    }))
    .await
    .expect("create tenant");
    a.set_price_book(authed(v1::SetPriceBookRequest {
        price_book: Some(price_book()),
    }))
    .await
    .expect("price book");
    if grant > 0 {
        a.add_grant(authed(v1::AddGrantRequest {
            grant: Some(v1::Grant {
                tenant: TENANT.into(),
                kind: v1::GrantKind::Purchased as i32,
                amount_micro: grant,
                priority: 10,
                label: "e2e grant".into(),
                ..Default::default()
            }),
        }))
        .await
        .expect("grant");
    }
    if hard_cap > 0 {
        set_cap(a, hard_cap).await;
    }
}

/// Adds a grant of `kind` with `priority` (smaller pays first).
pub async fn add_grant(
    a: &mut AdminServiceClient<Channel>,
    kind: v1::GrantKind,
    amount: u64,
    priority: i32,
    label: &str,
) {
    a.add_grant(authed(v1::AddGrantRequest {
        grant: Some(v1::Grant {
            tenant: TENANT.into(),
            kind: kind as i32,
            amount_micro: amount,
            priority,
            label: label.into(),
            ..Default::default()
        }),
    }))
    .await
    .expect("grant");
}

pub async fn set_cap(a: &mut AdminServiceClient<Channel>, hard_cap: u64) {
    a.set_plan(authed(v1::SetPlanRequest {
        plan: Some(v1::Plan {
            tenant: TENANT.into(),
            hard_cap_micro: hard_cap,
            ..Default::default()
        }),
    }))
    .await
    .expect("plan");
}

pub async fn statement(a: &mut AdminServiceClient<Channel>) -> v1::Statement {
    a.get_statement(authed(GetStatementRequest {
        tenant: TENANT.into(),
        from_unix_ms: 0,
        to_unix_ms: 0,
    }))
    .await
    .expect("statement")
    .into_inner()
}

pub async fn balance(a: &mut AdminServiceClient<Channel>) -> v1::Balance {
    a.get_balance(authed(GetBalanceRequest {
        tenant: TENANT.into(),
    }))
    .await
    .expect("balance")
    .into_inner()
}

// ---- agent processes -------------------------------------------------------------------

/// What an agent process reports when it exits.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AgentReport {
    pub calls: u64,
    pub spent: u64,
    pub denied: u64,
    pub held: u64,
}

impl AgentReport {
    pub fn parse(s: &str) -> AgentReport {
        let mut r = AgentReport::default();
        for kv in s.split_whitespace() {
            let (k, v) = kv.split_once('=').unwrap_or((kv, "0"));
            let v: u64 = v.parse().unwrap_or(0);
            match k {
                "calls" => r.calls = v,
                "spent" => r.spent = v,
                "denied" => r.denied = v,
                "held" => r.held = v,
                _ => {}
            }
        }
        r
    }
}

/// An agent process (this test binary running `agent_main`).
pub struct Agent {
    pub proc: Proc,
    pub out: PathBuf,
}

/// How an agent behaves.
#[derive(Debug, Clone)]
pub struct AgentPlan {
    pub tier: &'static str,
    /// Run until this file exists (then report and exit).
    pub stop_file: PathBuf,
    /// Or hold this many reservations and wait to be killed.
    pub hold: u32,
    /// Pause between calls.
    pub pause_ms: u64,
    /// Shared, or in its own namespaces as another uid.
    pub isolation: Isolation,
}

impl Agent {
    pub fn start(region: &Path, out: PathBuf, plan: &AgentPlan) -> Agent {
        let mut exe = std::env::current_exe().expect("test binary");
        if plan.isolation == Isolation::Pod {
            // A link in the shared folder: the agents' uid can run it whatever the
            // checkout's permissions.
            let link = region.with_file_name("agent-bin");
            if !link.exists() && std::fs::hard_link(&exe, &link).is_err() {
                std::fs::copy(&exe, &link).expect("copy the agent binary");
            }
            exe = link;
        }
        let child = isolated(plan.isolation, &exe, Some(POD_AGENT_UID))
            .args([
                "--exact",
                "agent_main",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("TOLLGATE_E2E_AGENT", "1")
            .env("TOLLGATE_REGION", region)
            .env("E2E_OUT", &out)
            .env("E2E_TIER", plan.tier)
            .env("E2E_STOP", &plan.stop_file)
            .env("E2E_HOLD", plan.hold.to_string())
            .env("E2E_PAUSE_MS", plan.pause_ms.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn agent");
        Agent {
            proc: Proc::new(child, plan.isolation),
            out,
        }
    }

    /// Waits for the agent to exit and reads its report.
    pub fn finish(mut self) -> AgentReport {
        let st = self.proc.child.wait().expect("agent wait");
        assert!(st.success(), "agent exited with {st}");
        AgentReport::parse(&std::fs::read_to_string(&self.out).expect("agent report"))
    }

    /// Waits until the agent wrote its report (hold mode) and returns it.
    pub fn wait_report(&self, timeout: Duration) -> AgentReport {
        let end = Instant::now() + timeout;
        loop {
            if let Ok(s) = std::fs::read_to_string(&self.out)
                && s.ends_with('\n')
            {
                return AgentReport::parse(&s);
            }
            assert!(Instant::now() < end, "agent report not written");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The body of an agent process: reserve, "call", commit, until the stop file appears.
pub fn agent_main() {
    use tollgate_client::{Call, Gate, ReserveError};
    use tollgate_core::{Tier, Usage};
    let region = std::env::var("TOLLGATE_REGION").expect("region");
    let out = PathBuf::from(std::env::var("E2E_OUT").expect("out"));
    let stop = PathBuf::from(std::env::var("E2E_STOP").expect("stop"));
    let hold: u32 = std::env::var("E2E_HOLD")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let pause: u64 = std::env::var("E2E_PAUSE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let tier = match std::env::var("E2E_TIER").as_deref() {
        Ok("background") => Tier::Background,
        Ok("scheduler") => Tier::Scheduler,
        _ => Tier::Interactive,
    };
    let gate = Gate::attach(&region).expect("attach");
    let t = gate.tenant(TENANT).expect("tenant");
    let m = gate.model(MODEL).expect("model");
    let mut rep = AgentReport::default();
    let write = |rep: &AgentReport| {
        let tmp = out.with_extension("tmp");
        std::fs::write(
            &tmp,
            format!(
                "calls={} spent={} denied={} held={}\n",
                rep.calls, rep.spent, rep.denied, rep.held
            ),
        )
        .expect("write report");
        std::fs::rename(&tmp, &out).expect("publish report");
    };
    if hold > 0 {
        let mut holds = Vec::new();
        while holds.len() < hold as usize {
            let call = Call::model(&m)
                .tenant(t)
                .input_tokens(500)
                .max_output_tokens(500)
                .tier(tier);
            match gate.reserve(&call) {
                Ok(h) => {
                    rep.held += h.amount().0;
                    holds.push(h);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        write(&rep);
        // Wait to be killed with the reservations held.
        loop {
            std::thread::sleep(Duration::from_secs(1));
            if stop.exists() {
                std::mem::forget(holds); // never reached in the kill test
                return;
            }
        }
    }
    let mut n: u64 = 0;
    while !stop.exists() {
        n += 1;
        let input = 200 + (n * 37) % 300;
        let call = Call::model(&m)
            .tenant(t)
            .input_tokens(input)
            .max_output_tokens(300)
            .tier(tier);
        match gate.reserve(&call) {
            Ok(h) => {
                std::thread::sleep(Duration::from_millis(pause));
                let used = 50 + (n * 13) % 250;
                match h.commit(Usage::new(input, used)) {
                    Ok(c) => {
                        rep.calls += 1;
                        rep.spent += c.0;
                    }
                    Err(e) => panic!("commit failed: {e}"),
                }
            }
            Err(ReserveError::Denied(d)) => {
                rep.denied += 1;
                std::thread::sleep(d.retry_after.min(Duration::from_millis(50)));
            }
            Err(e) => panic!("reserve failed: {e}"),
        }
    }
    write(&rep);
}

/// The PostgreSQL URL of the tests (`TOLLGATE_TEST_POSTGRES_URL`) with a fresh schema, or
/// None after printing `SKIPPED: <test>` when it is not set (a failure instead when
/// `TOLLGATE_TEST_REQUIRE_SERVICES=1`, as in CI).
pub fn postgres_store(test: &str) -> Option<String> {
    const VAR: &str = "TOLLGATE_TEST_POSTGRES_URL";
    let Ok(base) = std::env::var(VAR) else {
        if std::env::var("TOLLGATE_TEST_REQUIRE_SERVICES").as_deref() == Ok("1") {
            panic!("{test}: {VAR} is not set but TOLLGATE_TEST_REQUIRE_SERVICES=1");
        }
        eprintln!("SKIPPED: {test}: set {VAR}");
        return None;
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let sep = if base.contains('?') { '&' } else { '?' };
    Some(format!(
        "{base}{sep}schema=tge2e_{}_{nanos}",
        std::process::id()
    ))
}
