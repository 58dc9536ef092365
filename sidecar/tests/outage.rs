//! The authority stopped while agents keep calling: the sidecar serves from its leases until
//! they expire, and not a moment longer. At expiry what its lanes still hold of them is
//! taken back (the lanes' flush requests answered), so after the last lease's expiry plus
//! one tick no call is served, and what was served after the expiry is within the stated
//! bound (one call per lane, each within the lane's overrun allowance; no emergency
//! allowance configured). An agent that went quiet holding local credits and calls after
//! the expiry is served one call at most: its lane flushes at that call.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tollgate_authority::config::LeaseConfig;
use tollgate_client::{Gate, ReserveError};
use tollgate_core::Usage;
use tollgate_sidecar::state::SidecarState;

use common::*;

const AGENTS: usize = 4;
/// The lanes' overrun allowance in this test: one call's reservation.
const OVERRUN: u64 = 800;

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One served call: when its reservation was granted (unix ms) and what it committed.
#[derive(Debug, Clone, Copy)]
struct Served {
    at_ms: u64,
    credits: u64,
}

/// When an agent calls.
#[derive(Clone)]
struct Plan {
    stop: Arc<AtomicBool>,
    /// Set: the agent pauses (keeping whatever local credits it pulled) ...
    pause: Option<Arc<AtomicBool>>,
    /// ... until this is set, then calls again, one every `pause_ms`.
    resume: Arc<AtomicBool>,
    pause_ms: u64,
}

/// Calls until `stop` (see [`Plan`]); returns every served call and the denials.
fn agent(gate: Arc<Gate>, plan: Plan) -> (Vec<Served>, u64) {
    let t = gate.tenant(TENANT).expect("tenant");
    let m = gate.model(MODEL).expect("model");
    let mut served = Vec::new();
    let mut denied = 0;
    while !plan.stop.load(Ordering::Relaxed) {
        if plan
            .pause
            .as_ref()
            .is_some_and(|p| p.load(Ordering::Relaxed))
            && !plan.resume.load(Ordering::Relaxed)
        {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        match gate.reserve(&unit_call(&m, t)) {
            Ok(h) => {
                let at_ms = unix_ms();
                let credits = h.commit(Usage::new(400, 100)).expect("commit").0;
                served.push(Served { at_ms, credits });
            }
            Err(ReserveError::Denied(_)) => denied += 1,
            Err(e) => panic!("reserve: {e}"),
        }
        std::thread::sleep(Duration::from_millis(plan.pause_ms));
    }
    (served, denied)
}

/// The latest expiry among the leases the sidecar's state file lists (0 if none).
fn last_expiry(state_dir: &std::path::Path) -> u64 {
    SidecarState::load(&state_dir.join("sidecar-state.json"))
        .map(|s| {
            s.leases
                .values()
                .flat_map(|b| b.held().map(|l| l.expires_unix_ms))
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

#[test]
fn with_the_authority_down_no_call_is_served_past_the_leases_expiry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let auth = Authority::start_with_leases(
        dir.path(),
        &[(TENANT, GRANT_MICRO)],
        LeaseConfig {
            ttl_secs: 2,
            settle_grace_secs: 1,
            relearn_grace_secs: 0,
            ..LeaseConfig::default()
        },
    );
    let mut cfg = auth.sidecar_config(dir.path());
    cfg.lane_overrun_allowance = OVERRUN;
    let tick = cfg.tick;
    let region = cfg.region.clone();
    let state_dir = cfg.state_dir.clone();
    let sc = tollgate_sidecar::run::spawn(cfg).expect("sidecar");
    wait_for_region(&region);
    let gate = Arc::new(Gate::attach(&region).expect("attach"));
    let busy = Plan {
        stop: Arc::new(AtomicBool::new(false)),
        pause: None,
        resume: Arc::new(AtomicBool::new(false)),
        pause_ms: 1,
    };
    // One agent goes quiet when the authority goes, holding the local credits it pulled,
    // and calls again only after the leases expired: its lane serves it at most one call.
    let quiet = Plan {
        pause: Some(Arc::new(AtomicBool::new(false))),
        pause_ms: 10,
        ..busy.clone()
    };
    let agents: Vec<_> = (0..AGENTS)
        .map(|i| {
            let g = gate.clone();
            let p = if i == 0 { quiet.clone() } else { busy.clone() };
            std::thread::spawn(move || agent(g, p))
        })
        .collect();
    // Spending from leases, renewed as they go.
    std::thread::sleep(Duration::from_millis(1500));
    if let Some(p) = &quiet.pause {
        p.store(true, Ordering::Relaxed);
    }
    auth.shutdown();
    let down_ms = unix_ms();
    wait_for("the sidecar to see the authority gone", || {
        metric(sc.http_addr, "tollgate_sidecar_authority_connected") == Some(0.0)
    });
    // No lease is granted from now on: follow the state file until the last one it listed
    // has been expired for a second.
    let mut expiry = 0;
    loop {
        expiry = expiry.max(last_expiry(&state_dir));
        let now = unix_ms();
        if expiry > 0 && now > expiry + 300 {
            quiet.resume.store(true, Ordering::Relaxed);
        }
        if expiry > 0 && now > expiry + 1_000 {
            break;
        }
        assert!(now < down_ms + 10_000, "leases never expired");
        std::thread::sleep(Duration::from_millis(20));
    }
    busy.stop.store(true, Ordering::Relaxed);
    let mut served = Vec::new();
    let mut quiet_after = Vec::new();
    let mut denied = 0;
    for (i, a) in agents.into_iter().enumerate() {
        let (s, d) = a.join().expect("agent");
        if i == 0 {
            quiet_after = s.iter().filter(|c| c.at_ms > expiry).copied().collect();
        }
        served.extend(s);
        denied += d;
    }
    let tick_ms = tick.as_millis() as u64;
    let while_down: Vec<_> = served.iter().filter(|s| s.at_ms > down_ms).collect();
    let after: Vec<_> = served.iter().filter(|s| s.at_ms > expiry).collect();
    // The quiet agent's one call is served whenever it comes (its lane flushes then).
    let late: Vec<_> = after
        .iter()
        .filter(|s| s.at_ms > expiry + tick_ms)
        .filter(|s| quiet_after.first().is_none_or(|q| q.at_ms != s.at_ms))
        .collect();
    let after_credits: u64 = after.iter().map(|s| s.credits).sum();
    let late_credits: u64 = late.iter().map(|s| s.credits).sum();
    eprintln!(
        "down at {down_ms}, last lease expiry {expiry} (+{} ms): {} calls served while down, \
         {} after the expiry ({after_credits} micro; the quiet agent's: {}), {} after expiry \
         + one tick but the quiet agent's first ({late_credits} micro); {denied} denials",
        expiry.saturating_sub(down_ms),
        while_down.len(),
        after.len(),
        quiet_after.len(),
        late.len(),
    );
    assert!(
        !while_down.is_empty(),
        "no call was served from the leases while the authority was down"
    );
    assert!(denied > 0, "agents were never denied");
    assert!(
        late.is_empty(),
        "{} calls ({late_credits} micro) served after the leases' expiry + one tick",
        late.len()
    );
    assert!(
        quiet_after.len() <= 1,
        "the quiet agent was served {} calls after the expiry",
        quiet_after.len()
    );
    assert!(
        after.len() <= AGENTS,
        "{} calls served after the expiry: more than one per lane",
        after.len()
    );
    assert!(
        after_credits <= AGENTS as u64 * OVERRUN,
        "{after_credits} micro served after the expiry, past the lanes' overrun allowance"
    );
    sc.stop().expect("sidecar stops");
}
