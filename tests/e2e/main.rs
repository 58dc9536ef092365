//! End-to-end tests across real processes: `tollgate authority`, two `tollgate sidecar`s with
//! separate region folders (two pods), and agent processes (this test binary re-executed
//! into [`agent_main`]) that reserve and commit through `tollgate-client`.
//!
//! Set `E2E_VERBOSE=1` to see the components' logs.

mod pricing;
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::*;

/// Not a test: the entry point of agent processes (a no-op unless the harness spawned this
/// binary as an agent).
#[test]
fn agent_main() {
    if std::env::var_os("TOLLGATE_E2E_AGENT").is_some() {
        support::agent_main();
    }
}

fn region_totals(path: &Path) -> tollgate_demo::scenario::RegionTotals {
    tollgate_demo::scenario::region_totals(path).expect("region audit")
}

fn start_agents(
    dir: &Path,
    regions: &[&Path],
    per_region: usize,
    tiers: &[&'static str],
    isolation: Isolation,
) -> (Vec<Agent>, std::path::PathBuf) {
    let stop = dir.join("stop-agents");
    let out = agent_out_dir(dir);
    let mut agents = Vec::new();
    for (r, region) in regions.iter().enumerate() {
        for i in 0..per_region {
            let plan = AgentPlan {
                tier: tiers[(r + i) % tiers.len()],
                stop_file: stop.clone(),
                hold: 0,
                pause_ms: 1,
                isolation,
            };
            agents.push(Agent::start(
                region,
                out.join(format!("agent-{r}-{i}.out")),
                &plan,
            ));
        }
    }
    (agents, stop)
}

/// Where agents write their reports: writable by the agents' uid in pod mode.
fn agent_out_dir(dir: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let out = dir.join("agent-reports");
    std::fs::create_dir_all(&out).expect("agent reports folder");
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    out
}

fn stop_agents(agents: Vec<Agent>, stop: &Path) -> AgentReport {
    std::fs::write(stop, b"stop").expect("stop file");
    let mut total = AgentReport::default();
    for a in agents {
        let r = a.finish();
        total.calls += r.calls;
        total.spent += r.spent;
        total.denied += r.denied;
    }
    total
}

/// The most important promise: under load from two pods, the hard cap is never exceeded,
/// and at the end ledger + regions account for every credit exactly.
#[test]
fn fleet_hard_cap_never_exceeded_and_credits_conserved() {
    cap_scenario(
        &[(tollgate_proto::v1::GrantKind::Purchased, 2 * CREDIT, 10)],
        3 * CREDIT,
        2,
        Isolation::Shared,
    );
}

/// The same fleet as pods run it: each sidecar and each agent in PID and mount
/// namespaces of their own, the agents under another uid sharing only the pod's group.
/// No live agent is reclaimed (that would fail its commits), the cap holds, and ledger
/// and regions conserve credits exactly.
#[test]
fn fleet_hard_cap_never_exceeded_and_credits_conserved_in_pod_namespaces() {
    if pod_mode_available("fleet_hard_cap_never_exceeded_and_credits_conserved_in_pod_namespaces") {
        cap_scenario(
            &[(tollgate_proto::v1::GrantKind::Purchased, 2 * CREDIT, 10)],
            3 * CREDIT,
            2,
            Isolation::Pod,
        );
    }
}

/// The demo's shape: trial credits pay first, then purchased credits, then plan overage up
/// to the cap, three agents per pod.
#[test]
fn fleet_hard_cap_never_exceeded_with_trial_purchased_and_overage() {
    use tollgate_proto::v1::GrantKind;
    cap_scenario(
        &[
            (GrantKind::Trial, 2 * CREDIT, 0),
            (GrantKind::Purchased, 3 * CREDIT, 10),
        ],
        2 * CREDIT,
        3,
        Isolation::Shared,
    );
}

/// Replicas: two `tollgate authority` processes on one PostgreSQL database, pod-a's
/// sidecar talking to the first and pod-b's to the second, under load: the fleet's hard
/// cap is never exceeded, every committed call is posted once, and ledger + regions
/// conserve credits exactly.
#[test]
fn two_authority_replicas_on_postgres_keep_the_fleet_cap_and_conserve_credits() {
    let Some(store) = postgres_store(
        "two_authority_replicas_on_postgres_keep_the_fleet_cap_and_conserve_credits",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let auth_dir = dir.path().join("authority");
    let first = Authority::start_on(&auth_dir, 0, &store);
    let second = Authority::start_on(&auth_dir, 0, &store);
    cap_scenario_on(
        dir,
        [&first, &second],
        &[(tollgate_proto::v1::GrantKind::Purchased, 2 * CREDIT, 10)],
        3 * CREDIT,
        2,
        Isolation::Shared,
    );
}

/// The fleet against a tenant whose `grants` pay first, then plan overage up to `cap`.
fn cap_scenario(
    grants: &[(tollgate_proto::v1::GrantKind, u64, i32)],
    cap: u64,
    agents_per_pod: usize,
    isolation: Isolation,
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let auth = Authority::start(&dir.path().join("authority"), 0);
    cap_scenario_on(dir, [&auth, &auth], grants, cap, agents_per_pod, isolation);
}

/// [`cap_scenario`] with pod-a's sidecar on `auths[0]` and pod-b's on `auths[1]` (the
/// same authority, or two replicas of one database).
fn cap_scenario_on(
    dir: tempfile::TempDir,
    auths: [&Authority; 2],
    grants: &[(tollgate_proto::v1::GrantKind, u64, i32)],
    cap: u64,
    agents_per_pod: usize,
    isolation: Isolation,
) {
    let auth = auths[0];
    let rt = rt();
    let grant: u64 = grants.iter().map(|g| g.1).sum();
    let mut admin = rt.block_on(async {
        let mut a = admin(&auth.url()).await;
        setup_tenant(&mut a, 0, cap).await;
        for (i, (kind, amount, priority)) in grants.iter().enumerate() {
            add_grant(&mut a, *kind, *amount, *priority, &format!("grant-{i}")).await;
        }
        a
    });
    let mut a = Sidecar::start_in(dir.path(), "pod-a", &auths[0].url(), &[], isolation);
    let mut b = Sidecar::start_in(dir.path(), "pod-b", &auths[1].url(), &[], isolation);
    a.wait_ready();
    b.wait_ready();
    let (agents, stop) = start_agents(
        dir.path(),
        &[&a.region, &b.region],
        agents_per_pod,
        &["interactive", "scheduler", "background"],
        isolation,
    );
    // Run until the budget is gone: the fleet is denied for a while.
    let end = Instant::now() + Duration::from_secs(25);
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let bal = rt.block_on(balance(&mut admin));
        if bal.available_micro == 0 && bal.consumed_micro + 20_000 >= grant + cap
            || Instant::now() > end
        {
            break;
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    let fleet = stop_agents(agents, &stop);
    assert!(
        a.proc.term(Duration::from_secs(15)),
        "pod-a did not stop cleanly"
    );
    assert!(
        b.proc.term(Duration::from_secs(15)),
        "pod-b did not stop cleanly"
    );

    let st = rt.block_on(statement(&mut admin));
    let overage: u64 = st
        .by_grant
        .iter()
        .filter(|l| l.key == "plan")
        .map(|l| l.amount_micro)
        .sum();
    let (ra, rb) = (region_totals(&a.region), region_totals(&b.region));
    eprintln!(
        "fleet: {} calls, {} micro committed, {} denials; ledger: {} calls, {} micro, overage {} (cap {}); \
         pod-a leased {} consumed {} returned {}; pod-b leased {} consumed {} returned {}",
        fleet.calls,
        fleet.spent,
        fleet.denied,
        st.calls,
        st.total_micro,
        overage,
        cap,
        ra.granted,
        ra.consumed,
        ra.returned,
        rb.granted,
        rb.consumed,
        rb.returned
    );
    // Every committed call posted exactly once.
    assert_eq!(
        st.calls, fleet.calls,
        "calls committed by agents vs posted by the ledger"
    );
    assert_eq!(
        st.total_micro, fleet.spent,
        "credits committed by agents vs posted"
    );
    // The regions spent exactly what the ledger posted, and gave back the rest.
    assert!(
        ra.balanced && rb.balanced,
        "a region's conservation equation does not hold"
    );
    assert_eq!(
        ra.consumed + rb.consumed,
        st.total_micro,
        "regions' consumption vs the ledger"
    );
    assert_eq!(
        ra.left + rb.left,
        0,
        "credits left in regions after a graceful stop"
    );
    assert_eq!(
        ra.overrun + rb.overrun,
        0,
        "no call ran past its reservation here"
    );
    // The fleet was really stopped by the budget (the test means something)...
    assert!(
        fleet.denied > 0,
        "the fleet was never denied: the cap was not reached"
    );
    // ...and never went past it.
    assert!(overage <= cap, "overage {overage} past the hard cap {cap}");
    assert!(
        st.total_micro <= grant + cap,
        "spent {} past grant + cap {}",
        st.total_micro,
        grant + cap
    );
    // Ledger side: no hold left open once the sidecars returned their leases.
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let bal = rt.block_on(balance(&mut admin));
        if bal.held_micro == 0 {
            assert_eq!(
                bal.consumed_micro, st.total_micro,
                "balance consumed vs statement"
            );
            break;
        }
        assert!(
            Instant::now() < end,
            "holds still open after the sidecars returned their leases: {}",
            bal.held_micro
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// kill -9 of a sidecar under load, then a restart on the same region folder: every call
/// the agents committed is posted once (none lost from the rings or the outbox, none doubled
/// by a replay).
#[test]
fn sidecar_kill9_under_load_then_restart_loses_and_doubles_nothing() {
    sidecar_kill9_scenario(false, Isolation::Shared);
}

/// The same as a pod runs it: the sidecar and each agent in PID and mount namespaces of
/// their own, the agents under another uid. The restarted sidecar resumes with agents it
/// can only know by their holder locks, and reclaims none of them while they run.
#[test]
fn sidecar_kill9_under_load_then_restart_in_pod_namespaces() {
    if pod_mode_available("sidecar_kill9_under_load_then_restart_in_pod_namespaces") {
        sidecar_kill9_scenario(false, Isolation::Pod);
    }
}

/// kill -9 of a sidecar, then its agents finish and exit while it is down, then a restart:
/// the calls in their lanes' rings are still posted, once.
#[test]
fn agents_that_exit_while_their_sidecar_is_down_still_get_their_calls_posted() {
    sidecar_kill9_scenario(true, Isolation::Shared);
}

/// One pod under load; its sidecar is killed with SIGKILL and restarted on the same region
/// folder, the agents finishing before the restart (`agents_exit_while_down`) or after it.
fn sidecar_kill9_scenario(agents_exit_while_down: bool, isolation: Isolation) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (auth, rt, mut admin) = authority_with_tenant(dir.path(), 1_000 * CREDIT, 0);
    let mut a = Sidecar::start_in(dir.path(), "pod-a", &auth.url(), &[], isolation);
    a.wait_ready();
    let (agents, stop) = start_agents(
        dir.path(),
        &[&a.region],
        2,
        &["interactive", "background"],
        isolation,
    );
    std::thread::sleep(Duration::from_millis(1500));
    a.proc.kill9();
    let fleet = if agents_exit_while_down {
        let fleet = stop_agents(agents, &stop);
        a.restart();
        a.wait_ready();
        std::thread::sleep(Duration::from_millis(1500));
        fleet
    } else {
        std::thread::sleep(Duration::from_millis(700));
        a.restart();
        std::thread::sleep(Duration::from_millis(2500));
        stop_agents(agents, &stop)
    };
    assert!(
        a.proc.term(Duration::from_secs(15)),
        "restarted sidecar did not stop cleanly"
    );
    let st = rt.block_on(statement(&mut admin));
    let r = region_totals(&a.region);
    eprintln!(
        "fleet: {} calls, {} micro; ledger: {} calls, {} micro; region consumed {}",
        fleet.calls, fleet.spent, st.calls, st.total_micro, r.consumed
    );
    assert!(fleet.calls > 0);
    assert_eq!(
        st.calls, fleet.calls,
        "calls committed vs posted after a sidecar kill -9"
    );
    assert_eq!(
        st.total_micro, fleet.spent,
        "credits committed vs posted after a sidecar kill -9"
    );
    assert!(r.balanced, "region conservation after the restart");
    assert_eq!(r.consumed, st.total_micro);
}

/// kill -9 of agent processes holding reservations: the sidecar reclaims their holds within
/// the liveness timeout, exactly.
#[test]
fn agent_kill9_holds_are_reclaimed_within_the_liveness_timeout() {
    agent_kill9_scenario(Isolation::Shared);
}

/// The same with the sidecar and the agents in PID and mount namespaces of their own.
#[test]
fn agent_kill9_holds_are_reclaimed_in_pod_namespaces() {
    if pod_mode_available("agent_kill9_holds_are_reclaimed_in_pod_namespaces") {
        agent_kill9_scenario(Isolation::Pod);
    }
}

fn agent_kill9_scenario(isolation: Isolation) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (auth, _rt, _admin) = authority_with_tenant(dir.path(), 100 * CREDIT, 0);
    let mut sc = Sidecar::start_in(
        dir.path(),
        "pod-a",
        &auth.url(),
        &["--liveness-timeout-ms", "1000"],
        isolation,
    );
    sc.wait_ready();
    let stop = dir.path().join("never");
    let out = agent_out_dir(dir.path());
    let mut agents = Vec::new();
    for i in 0..2 {
        let plan = AgentPlan {
            tier: "interactive",
            stop_file: stop.clone(),
            hold: 5,
            pause_ms: 0,
            isolation,
        };
        agents.push(Agent::start(
            &sc.region,
            out.join(format!("holder-{i}.out")),
            &plan,
        ));
    }
    let held: u64 = agents
        .iter()
        .map(|a| a.wait_report(Duration::from_secs(20)).held)
        .sum();
    assert!(held > 0);
    let killed = Instant::now();
    for a in agents.iter_mut() {
        a.proc.kill9();
    }
    let end = killed + Duration::from_secs(10);
    let reclaimed = loop {
        let n = sc
            .metric("tollgate_sidecar_processes_reclaimed_total")
            .unwrap_or(0.0);
        let c = sc
            .metric("tollgate_sidecar_reclaimed_micro_credits_total")
            .unwrap_or(0.0);
        if n >= 2.0 {
            break c as u64;
        }
        assert!(
            Instant::now() < end,
            "dead agents' lanes not reclaimed within 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!(
        "reclaimed {reclaimed} micro-credits (held {held}) {:?} after kill -9",
        killed.elapsed()
    );
    assert!(reclaimed >= held, "reclaimed {reclaimed} < held {held}");
    assert!(sc.proc.term(Duration::from_secs(15)));
    let audit = tollgate_client::Region::open_owner(&sc.region)
        .expect("region")
        .audit();
    audit.check().expect("conservation after reclaim");
    assert!(
        audit.lanes.iter().all(|l| l.held == 0),
        "a hold survived the reclaim"
    );
}

/// Lowering the cap with `tollgate ctl` denies further calls within one push.
#[test]
fn lowering_the_cap_with_ctl_denies_further_calls_within_one_push() {
    use tollgate_client::{Call, Gate, ReserveError};
    use tollgate_core::Usage;
    let dir = tempfile::tempdir().expect("tempdir");
    let (auth, rt, mut admin) = authority_with_tenant(dir.path(), 0, 1_000 * CREDIT);
    let mut sc = Sidecar::start(dir.path(), "pod-a", &auth.url(), &[]);
    sc.wait_ready();
    let gate = Gate::attach(&sc.region).expect("attach");
    let t = gate.tenant(TENANT).expect("tenant");
    let m = gate.model(MODEL).expect("model");
    let call = || {
        Call::model(&m)
            .tenant(t)
            .input_tokens(300)
            .max_output_tokens(300)
    };
    // Spend for a while.
    let warm = Instant::now();
    let mut spent = 0u64;
    while warm.elapsed() < Duration::from_millis(1500) {
        if let Ok(h) = gate.reserve(&call()) {
            spent += h.commit(Usage::new(300, 100)).expect("commit").0;
        }
    }
    assert!(spent > 0);
    // Lower the cap to what is already spent (this thread is the only agent), with the CLI an
    // operator would use.
    let new_cap = spent;
    let credits = format!("{}.{:06}", new_cap / CREDIT, new_cap % CREDIT);
    let status = std::process::Command::new(bin())
        .args([
            "ctl",
            "--authority",
            &auth.url(),
            "--admin-token",
            ADMIN,
            "plan",
            "set",
            TENANT,
            "--hard-cap",
            &credits,
        ])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("tollgate ctl");
    assert!(status.success(), "tollgate ctl plan set failed");
    let pushed = Instant::now();
    // Keep calling. Calls may pass until the push lands (what the sidecar held locally);
    // from then on every call is denied. Stop after a full second without a pass.
    let mut after = 0u64;
    let mut first_denial = None;
    let mut last_pass = None;
    let mut attempts_denied_in_a_row = 0u32;
    loop {
        match gate.reserve(&call()) {
            Ok(h) => {
                after += h.commit(Usage::new(300, 100)).expect("commit").0;
                last_pass = Some(pushed.elapsed());
                attempts_denied_in_a_row = 0;
            }
            Err(ReserveError::Denied(d)) => {
                first_denial.get_or_insert(pushed.elapsed());
                attempts_denied_in_a_row += 1;
                std::thread::sleep(d.retry_after.min(Duration::from_millis(10)));
            }
            Err(e) => panic!("{e}"),
        }
        if attempts_denied_in_a_row > 0
            && last_pass.map_or(pushed.elapsed(), |p| pushed.elapsed() - p) > Duration::from_secs(1)
        {
            break;
        }
        assert!(
            pushed.elapsed() < Duration::from_secs(10),
            "still serving 10 s after lowering the cap"
        );
    }
    eprintln!(
        "lowered cap: first denial {:?}, last call served {:?} after `tollgate ctl plan set` returned \
         ({after} micro-credits spent in between)",
        first_denial.unwrap_or_default(),
        last_pass.unwrap_or_default()
    );
    drop(gate);
    assert!(sc.proc.term(Duration::from_secs(15)));
    let st = rt.block_on(statement(&mut admin));
    let overage: u64 = st
        .by_grant
        .iter()
        .filter(|l| l.key == "plan")
        .map(|l| l.amount_micro)
        .sum();
    // The ledger never charges past the lowered cap; calls served after the push were paid
    // from what the sidecar already held (leases granted under the old cap).
    eprintln!("ledger overage {overage} micro-credits, lowered cap {new_cap}");
    assert!(
        overage <= new_cap + after,
        "overage {overage} past the lowered cap {new_cap} + {after} served from held leases"
    );
}

/// The authority stopped for 10 s under load: agents go on within their leases, are denied
/// (fail closed) once those run out, and every record is posted once the authority is back.
#[test]
fn authority_down_10s_agents_fail_closed_then_every_record_is_posted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let adir = dir.path().join("authority");
    let mut auth = Authority::start(&adir, 0);
    let port = auth.addr.port();
    let url = auth.url();
    let rt = rt();
    rt.block_on(async {
        let mut a = admin(&url).await;
        setup_tenant(&mut a, 1_000 * CREDIT, 0).await;
    });
    let mut sc = Sidecar::start(dir.path(), "pod-a", &url, &[]);
    sc.wait_ready();
    let (agents, stop) = start_agents(
        dir.path(),
        &[&sc.region],
        2,
        &["interactive", "scheduler"],
        Isolation::Shared,
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert!(auth.stop(), "authority did not stop cleanly");
    let down = Instant::now();
    let connected = || {
        sc.metric("tollgate_sidecar_authority_connected")
            .unwrap_or(1.0)
    };
    std::thread::sleep(Duration::from_secs(10));
    let connected_while_down = connected();
    let mut auth = Authority::start(&adir, port);
    eprintln!("authority back after {:?}", down.elapsed());
    // Let the sidecar reconnect and the fleet spend a little more.
    let end = Instant::now() + Duration::from_secs(20);
    while sc
        .metric("tollgate_sidecar_authority_connected")
        .unwrap_or(0.0)
        < 1.0
    {
        assert!(Instant::now() < end, "the sidecar did not reconnect");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    let fleet = stop_agents(agents, &stop);
    assert!(
        sc.proc.term(Duration::from_secs(15)),
        "sidecar did not stop cleanly"
    );
    let mut admin = rt.block_on(admin(&auth.url()));
    let st = rt.block_on(statement(&mut admin));
    let r = region_totals(&sc.region);
    eprintln!(
        "fleet: {} calls, {} micro, {} denials; ledger: {} calls, {} micro; region leased {} consumed {}",
        fleet.calls, fleet.spent, fleet.denied, st.calls, st.total_micro, r.granted, r.consumed
    );
    assert_eq!(
        connected_while_down, 0.0,
        "the sidecar reported a session while the authority was down"
    );
    assert!(
        fleet.denied > 0,
        "agents were never denied: they did not run out of leases while the authority was down"
    );
    assert_eq!(
        st.calls, fleet.calls,
        "calls committed vs posted after the outage"
    );
    assert_eq!(
        st.total_micro, fleet.spent,
        "credits committed vs posted after the outage"
    );
    assert!(r.balanced, "region conservation");
    // Fail closed: nothing was spent past what was leased (no emergency allowance configured).
    assert!(
        r.consumed <= r.granted,
        "spent {} past the leases {}",
        r.consumed,
        r.granted
    );
    assert!(auth.stop());
}

/// With a pool near its floor, background calls are denied while interactive calls pass.
#[test]
fn near_the_floor_background_is_denied_while_interactive_passes() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A small wallet: the pool runs low within seconds.
    let (auth, rt, mut admin) = authority_with_tenant(dir.path(), CREDIT, 0);
    // Background work must leave half of the pool to interactive work.
    let mut sc = Sidecar::start(
        dir.path(),
        "pod-a",
        &auth.url(),
        &["--tier-floors", "0,0,500"],
    );
    sc.wait_ready();
    let stop = dir.path().join("stop");
    let agent = |tier: &'static str, name: &str| {
        let plan = AgentPlan {
            tier,
            stop_file: stop.clone(),
            hold: 0,
            pause_ms: 1,
            isolation: Isolation::Shared,
        };
        Agent::start(&sc.region, dir.path().join(name), &plan)
    };
    let bg = agent("background", "bg.out");
    let fg = agent("interactive", "fg.out");
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let bal = rt.block_on(balance(&mut admin));
        if bal.available_micro == 0 && bal.consumed_micro + 2_000 >= CREDIT || Instant::now() > end
        {
            break;
        }
    }
    let floor_denials = sc
        .metric("tollgate_sidecar_denials_total{reason=\"tier_floor\",tier=\"background\"}")
        .unwrap_or(0.0);
    let interactive_floor_denials = sc
        .metric("tollgate_sidecar_denials_total{reason=\"tier_floor\",tier=\"interactive\"}")
        .unwrap_or(0.0);
    std::fs::write(&stop, b"stop").expect("stop");
    let (b, f) = (bg.finish(), fg.finish());
    assert!(sc.proc.term(Duration::from_secs(15)));
    let st = rt.block_on(statement(&mut admin));
    eprintln!(
        "background: {} calls {} micro, {} denials ({floor_denials} by the floor); interactive: {} calls {} micro, {} denials",
        b.calls, b.spent, b.denied, f.calls, f.spent, f.denied
    );
    assert!(
        floor_denials > 0.0,
        "background was never stopped by its floor"
    );
    assert_eq!(
        interactive_floor_denials, 0.0,
        "interactive work is never stopped by a floor"
    );
    assert!(
        f.spent > b.spent,
        "interactive work got less than background work"
    );
    assert_eq!(st.total_micro, b.spent + f.spent);
}

/// Degraded mode with an emergency allowance: with the authority unreachable and the leases
/// spent, the sidecar releases at most the configured allowance more, then fails closed.
#[test]
fn authority_down_emergency_allowance_is_bounded_then_fails_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut auth, _rt, _admin) = authority_with_tenant(dir.path(), 1_000 * CREDIT, 0);
    let allowance = 50_000u64; // 0.05 credits
    let mut sc = Sidecar::start(
        dir.path(),
        "pod-a",
        &auth.url(),
        &["--emergency-allowance", "0.05"],
    );
    sc.wait_ready();
    let (agents, stop) = start_agents(
        dir.path(),
        &[&sc.region],
        2,
        &["interactive"],
        Isolation::Shared,
    );
    std::thread::sleep(Duration::from_millis(1000));
    assert!(auth.stop(), "authority did not stop cleanly");
    // Leases last a few seconds of burn; then the allowance; then nothing.
    let end = Instant::now() + Duration::from_secs(20);
    let drawn = loop {
        let d = sc
            .metric("tollgate_sidecar_emergency_drawn_micro_credits{limit=\"acme/wallet\"}")
            .unwrap_or(0.0) as u64;
        if d >= allowance || Instant::now() > end {
            break d;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    std::thread::sleep(Duration::from_secs(1));
    let fleet = stop_agents(agents, &stop);
    // The authority is gone: the stop cannot flush, the outbox keeps the batches.
    assert!(
        sc.proc.term(Duration::from_secs(20)),
        "sidecar did not stop"
    );
    let r = region_totals(&sc.region);
    eprintln!(
        "emergency drawn {drawn} of {allowance}; fleet {} calls {} micro {} denials; region granted {} (leases + emergency) consumed {}",
        fleet.calls, fleet.spent, fleet.denied, r.granted, r.consumed
    );
    assert!(drawn > 0, "the emergency allowance was never used");
    assert!(
        drawn <= allowance,
        "drew {drawn} past the allowance {allowance}"
    );
    assert!(fleet.denied > 0, "never failed closed");
    assert!(r.balanced);
    assert!(
        r.consumed <= r.granted,
        "spent past leases + emergency allowance"
    );
    assert_eq!(r.consumed, fleet.spent);
}

/// A user's mistake gets one clear line on stderr and exit code 1, with no backtrace even
/// when RUST_BACKTRACE is set (as it often is where people debug).
#[test]
fn bad_input_gets_one_error_line_and_exit_1() {
    for args in [
        &["authority", "migrate", "--store", "mysql://db/x"][..],
        &[
            "authority",
            "--store",
            "postgres://u:secret@127.0.0.1:5432/x",
            "--http",
            "off",
        ],
        &["ctl", "--authority", "not a url", "tenant", "list"],
    ] {
        let out = std::process::Command::new(bin())
            .args(args)
            .env("RUST_BACKTRACE", "1")
            .output()
            .expect("run tollgate");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        let last = err.lines().last().unwrap_or_default();
        assert!(last.starts_with("error: "), "{args:?}: {err}");
        assert!(!err.contains("backtrace"), "{args:?}: {err}");
        assert!(
            !err.contains("secret"),
            "{args:?}: the password leaked: {err}"
        );
    }
}

/// `tollgate demo` as a newcomer runs it: its statement, from the authority's ledger, names
/// the agents by name, shows the runaway loop's task by id, outcomes and work units, and
/// money beside credits; every call is reconciled.
#[test]
fn the_demo_statement_names_agents_tasks_outcomes_and_money() {
    let out = std::process::Command::new(bin())
        .args(["demo", "--duration", "6s", "--agents", "6"])
        .output()
        .expect("run tollgate demo");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let statement = text
        .split("== Statement for acme")
        .nth(1)
        .unwrap_or_else(|| panic!("no statement in:\n{text}"));
    for want in [
        "by agent (its name",
        "support-bot",
        "runaway-loop",
        "ticket-4711",
        "agentic work units",
        "outcomes",
        "USD ",
        "every call posted once, to the micro-credit",
        "audit chain verified",
    ] {
        assert!(
            statement.contains(want),
            "{want:?} missing from:\n{statement}"
        );
    }
    // Agents are named, not pod/process/lane instances.
    assert!(!statement.contains("/lane"), "{statement}");
}
