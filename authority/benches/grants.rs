//! Lease grants per second through the authority's real grant path
//! ([`tollgate_authority::leasing::grant_for`]: fair share, the ledger hold, the stored
//! lease record, the grant sent down the session channel) on a started authority over
//! SQLite (WAL, synchronous=FULL), with many concurrent demands.
//!
//! `cargo bench -p tollgate-authority --bench grants` (harness = false; prints a table).
//! Two scenarios, each with TOLLGATE_BENCH_WORKERS (100) concurrent sidecars demanding
//! wallet leases: all on **1 tenant**, and spread over **100 tenants** (worker i on
//! tenant i mod 100). Each worker runs TOLLGATE_BENCH_GRANTS (20) rounds of: report a
//! demand, get the grant, close the lease (as a sidecar returning it would), so the
//! wallets' open holds stay few. The figure is grants received per second over the whole
//! run (closes included in the wall time). TOLLGATE_BENCH_RUNS (3) runs of each;
//! TOLLGATE_BENCH_DIR: where the databases go (default a temp dir beside this crate);
//! TOLLGATE_BENCH_STORE: a `postgres://` URL runs on PostgreSQL instead, each run in a
//! fresh schema `tggrants_<pid>_<tenants>_<run>`.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tollgate_authority::config::Config;
use tollgate_authority::lease::Demand;
use tollgate_authority::leasing::{close_lease, grant_for};
use tollgate_authority::server::{ServeOptions, State, now_ms, start};
use tollgate_core::Credits;
use tollgate_ledger::{GrantKind, GrantSpec, TenantConfig, TenantId};
use tollgate_proto::v1::{LimitKey, SessionDown, session_down};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One worker: `rounds` demand-grant-close rounds of sidecar `sid` on `tenant`'s wallet.
async fn worker(state: Arc<State>, sid: String, tenant: String, rounds: usize) -> usize {
    let (tx, mut rx) = mpsc::channel(16);
    let limit = LimitKey::wallet(&tenant);
    let key = limit.canonical();
    let mut granted = 0;
    for _ in 0..rounds {
        state.lease_table().set_demand(
            &key,
            &sid,
            Demand {
                held: 0,
                desired: 1_000_000,
                burn_per_sec: 0,
                at_ms: now_ms(),
            },
        );
        grant_for(&state, &sid, &limit, &tx).await;
        // `grant_for` queues the grant before it returns.
        if let Ok(Ok(SessionDown {
            msg: Some(session_down::Msg::Grant(g)),
        })) = rx.try_recv()
        {
            let lease = g.lease.expect("a grant carries its lease");
            granted += 1;
            close_lease(&state, &lease.lease_id, false).await;
        }
    }
    granted
}

async fn scenario(tenants: usize, workers: usize, rounds: usize, run: usize) -> (usize, f64) {
    let dir = match std::env::var("TOLLGATE_BENCH_DIR") {
        Ok(d) => tempfile::tempdir_in(d).unwrap(),
        Err(_) => tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap(),
    };
    let config =
        "admin_token = \"bench-admin\"\n[leases]\nrelearn_grace_secs = 0\nmin_lease_micro = 1\n";
    let running = start(ServeOptions {
        store: match std::env::var("TOLLGATE_BENCH_STORE") {
            Ok(pg) if pg.starts_with("postgres") => {
                let sep = if pg.contains('?') { '&' } else { '?' };
                let pid = std::process::id();
                format!("{pg}{sep}schema=tggrants_{pid}_{tenants}_{run}")
            }
            _ => format!("sqlite://{}", dir.path().join("bench.db").display()),
        },
        listen: "127.0.0.1:0".parse().unwrap(),
        http: None,
        config: Config::parse(config).unwrap(),
        signer_seed_hex: "03".repeat(32),
    })
    .await
    .unwrap();
    let state = running.state.clone();
    let names: Vec<String> = (0..tenants).map(|t| format!("t{t}")).collect();
    for n in &names {
        let t = TenantId::new(n.as_str()).unwrap();
        state
            .ledger
            .create_tenant(&t, TenantConfig::default())
            .await
            .unwrap();
        state
            .ledger
            .grant(
                &t,
                GrantSpec::new(GrantKind::Purchased, Credits(1_000_000_000_000_000)),
            )
            .await
            .unwrap();
    }
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            tokio::spawn(worker(
                state.clone(),
                format!("sc-{w}"),
                names[w % tenants].clone(),
                rounds,
            ))
        })
        .collect();
    let mut granted = 0;
    for t in tasks {
        granted += t.await.unwrap();
    }
    let secs = t0.elapsed().as_secs_f64();
    running.shutdown().await.unwrap();
    (granted, granted as f64 / secs)
}

fn main() {
    let workers = env("TOLLGATE_BENCH_WORKERS", 100);
    let rounds = env("TOLLGATE_BENCH_GRANTS", 20);
    let runs = env("TOLLGATE_BENCH_RUNS", 3);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = match std::env::var("TOLLGATE_BENCH_STORE") {
        Ok(s) if s.starts_with("postgres") => "PostgreSQL",
        _ => "SQLite",
    };
    println!(
        "lease grants through grant_for, {store}, {workers} concurrent sidecars x {rounds} rounds"
    );
    println!(
        "{:>8} {:>4} {:>8} {:>12}",
        "tenants", "run", "grants", "grants/s"
    );
    for tenants in [1, 100] {
        for run in 1..=runs {
            let (granted, rate) = rt.block_on(scenario(tenants, workers, rounds, run));
            assert_eq!(granted, workers * rounds, "every round gets its grant");
            println!("{tenants:>8} {run:>4} {granted:>8} {rate:>12.0}");
        }
    }
}
