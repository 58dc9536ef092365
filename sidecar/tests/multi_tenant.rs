//! Two tenants in one sidecar under load: `acme`'s runaway agents spend until its budget is
//! gone and keep trying, while `beta`'s agents keep being granted. Afterwards every credit
//! is where it should be, per tenant: in the authority's ledger (statement and balance) and
//! in the region (its audit, and each tenant's wallet pool).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tollgate_client::{Gate, Region, ReserveError};
use tollgate_core::Usage;

use common::*;

const C: u64 = 1_000_000;
/// acme's whole budget: a few hundred calls.
const ACME_GRANT: u64 = C / 5;
const BETA_GRANT: u64 = 50 * C;
const BETA_CALLS: u64 = 400;

/// One agent thread: reserves and commits calls of `tenant` until `stop`; returns (credits
/// committed, calls committed, denials).
fn agent(
    gate: Arc<Gate>,
    tenant: &'static str,
    stop: Arc<AtomicBool>,
    denied: Arc<AtomicU64>,
    max_calls: u64,
) -> (u64, u64, u64) {
    let t = gate.tenant(tenant).expect("tenant");
    let m = gate.model(MODEL).expect("model");
    let (mut spent, mut calls, mut denials) = (0, 0, 0);
    while !stop.load(Ordering::Relaxed) && calls < max_calls {
        match gate.reserve(&unit_call(&m, t)) {
            Ok(h) => {
                spent += h.commit(Usage::new(400, 100)).expect("commit").0;
                calls += 1;
            }
            Err(ReserveError::Denied(_)) => {
                denials += 1;
                denied.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("{tenant}: {e}"),
        }
    }
    (spent, calls, denials)
}

/// The pool `pools.json` maps `limit` to.
fn pool_of(state_dir: &std::path::Path, limit: &str) -> usize {
    let map: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state_dir.join("pools.json")).expect("pools.json"))
            .expect("json");
    map["pools"][limit]["pool"].as_u64().expect("pool") as usize
}

#[test]
fn one_tenant_s_runaway_agents_never_take_the_other_tenant_s_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut auth =
        Authority::start_tenants(dir.path(), &[("acme", ACME_GRANT), ("beta", BETA_GRANT)]);
    let mut cfg = auth.sidecar_config(dir.path());
    cfg.tenants = vec!["acme".into(), "beta".into()];
    cfg.lanes = 16;
    let region = cfg.region.clone();
    let state_dir = cfg.state_dir.clone();
    let sc = tollgate_sidecar::run::spawn(cfg).expect("sidecar");
    wait_for("the region to serve both tenants", || {
        Gate::attach(&region).ok().is_some_and(|g| {
            g.tenant("acme").is_ok() && g.tenant("beta").is_ok() && g.model(MODEL).is_ok()
        })
    });
    let gate = Arc::new(Gate::attach(&region).expect("attach"));
    let stop = Arc::new(AtomicBool::new(false));
    let acme_denied = Arc::new(AtomicU64::new(0));
    let runaways: Vec<_> = (0..4)
        .map(|_| {
            let (g, s, d) = (gate.clone(), stop.clone(), acme_denied.clone());
            std::thread::spawn(move || agent(g, "acme", s, d, u64::MAX))
        })
        .collect();
    // beta starts once acme has run dry, so every beta call is made while acme is denied.
    wait_for("acme to run dry", || {
        acme_denied.load(Ordering::Relaxed) > 100
    });
    let beta_denied = Arc::new(AtomicU64::new(0));
    let beta: Vec<_> = (0..2)
        .map(|_| {
            let (g, s, d) = (gate.clone(), stop.clone(), beta_denied.clone());
            std::thread::spawn(move || agent(g, "beta", s, d, BETA_CALLS / 2))
        })
        .collect();
    let started = Instant::now();
    let beta: Vec<(u64, u64, u64)> = beta.into_iter().map(|t| t.join().expect("beta")).collect();
    let beta_took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let acme: Vec<(u64, u64, u64)> = runaways
        .into_iter()
        .map(|t| t.join().expect("acme"))
        .collect();
    let beta_spent: u64 = beta.iter().map(|b| b.0).sum();
    let beta_calls: u64 = beta.iter().map(|b| b.1).sum();
    let acme_spent: u64 = acme.iter().map(|a| a.0).sum();
    let acme_calls: u64 = acme.iter().map(|a| a.1).sum();
    assert_eq!(
        beta_calls, BETA_CALLS,
        "every beta call granted (in {beta_took:?})"
    );
    // acme's agents kept asking all along: denied while beta was served.
    assert!(
        acme.iter().all(|a| a.2 > 0),
        "every runaway was denied: {acme:?}"
    );
    assert!(
        acme_spent <= ACME_GRANT,
        "acme spent {acme_spent} of {ACME_GRANT}"
    );
    drop(gate);

    wait_for("every call to be posted", || {
        auth.statement_of("acme").calls == acme_calls
            && auth.statement_of("beta").calls == beta_calls
    });
    sc.stop().expect("graceful stop");

    // The ledger, per tenant: exactly what the agents committed, and the rest of the grant.
    for (tenant, spent, calls, grant) in [
        ("acme", acme_spent, acme_calls, ACME_GRANT),
        ("beta", beta_spent, beta_calls, BETA_GRANT),
    ] {
        let st = auth.statement_of(tenant);
        assert_eq!(
            (st.calls, st.total_micro),
            (calls, spent),
            "{tenant}'s statement"
        );
        let b = auth.balance_of(tenant);
        assert_eq!(b.consumed_micro, spent, "{tenant} consumed");
        assert_eq!(
            b.available_micro + b.held_micro,
            grant - spent,
            "{tenant}'s balance"
        );
    }
    // The region, per tenant: balanced, and each wallet pool consumed what its agents did.
    let r = Region::open_owner(&region).expect("reopen the region");
    let audit = r.audit();
    audit.check().expect("region conservation");
    for (tenant, spent) in [("acme", acme_spent), ("beta", beta_spent)] {
        let p = pool_of(&state_dir, &format!("{tenant}/wallet"));
        assert_eq!(audit.pools[p].consumed, spent, "{tenant}'s wallet pool");
        assert_eq!(
            audit.pools[p].carved, 0,
            "{tenant}'s lanes gave everything back"
        );
    }
    auth.shutdown();
}
