//! The sidecar against a real authority (in-process, embedded store, loopback): its HTTP
//! endpoints, and a graceful stop that returns every unused lease.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn endpoints_serve_health_readiness_and_metrics_and_stop_returns_leases() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut auth = Authority::start(dir.path());
    let cfg = auth.sidecar_config(dir.path());
    let (region, state_dir) = (cfg.region.clone(), cfg.state_dir.clone());
    let sc = tollgate_sidecar::run::spawn(cfg).expect("sidecar");
    // The signing key and the outbox are in the private state folder, not beside the
    // region that the agents mount.
    assert!(state_dir.join("sidecar.key").exists());
    assert!(state_dir.join("outbox").is_dir());
    let beside_region: Vec<_> = std::fs::read_dir(region.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        beside_region.iter().all(|f| f.starts_with("region")),
        "only the region beside the region: {beside_region:?}"
    );
    let (code, _) = get(sc.http_addr, "/healthz");
    assert_eq!(code, 200);
    // Ready once the session is up (or budget is held).
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, _) = get(sc.http_addr, "/readyz");
        if code == 200 {
            break;
        }
        assert_eq!(code, 503);
        assert!(Instant::now() < end, "never ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    // It leases budget for the wallet before any agent asks.
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = get(sc.http_addr, "/metrics");
        assert!(
            body.contains("tollgate_sidecar_authority_connected 1"),
            "{body}"
        );
        let held = auth.balance().held_micro;
        if held > 0
            && body.contains("tollgate_sidecar_pool_available_micro_credits{limit=\"acme/wallet\"}")
        {
            break;
        }
        assert!(Instant::now() < end, "no lease held");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(get(sc.http_addr, "/nope").0, 404);
    // A graceful stop hands every unused lease back: no hold stays open at the authority.
    sc.stop().expect("graceful stop");
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let b = auth.balance();
        if b.held_micro == 0 {
            assert_eq!(
                b.available_micro, GRANT_MICRO,
                "every credit is spendable again"
            );
            break;
        }
        assert!(
            Instant::now() < end,
            "holds still open after the sidecar stopped: {}",
            b.held_micro
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    auth.shutdown();
}
