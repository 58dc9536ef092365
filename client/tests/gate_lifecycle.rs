//! A `Gate`'s per-thread state: bad tenant ids get a typed error without growing the
//! thread's lane table, and dropping a gate hands its lanes back to the sidecar and
//! unmaps the region (many attach/drop cycles on one thread stay bounded).
//!
//! One test function per concern, serialized: `Gate::live_mappings` counts the whole
//! process.

use std::sync::Mutex;

use tollgate_client::{
    Call, Gate, PoolSpec, Region, RegionConfig, ReserveError, TenantId, TenantSpec,
};
use tollgate_core::{Credits, Horizon, LimitKind};

const C: u64 = 1_000_000;
static SERIAL: Mutex<()> = Mutex::new(());

fn setup(dir: &tempfile::TempDir) -> (Region, std::path::PathBuf) {
    let path = dir.path().join("region");
    let r = Region::create(
        &path,
        RegionConfig {
            pools: 4,
            tenants: 2,
            lanes: 8,
            slots_per_lane: 8,
            ring_capacity: 64,
            price_book_bytes: 4096,
            ..RegionConfig::default()
        },
    )
    .unwrap();
    r.configure_pool(
        0,
        &PoolSpec {
            limit: LimitKind::TenantWindow(Horizon::Minute),
            floors: [Credits(0); 3],
        },
    )
    .unwrap();
    r.grant(0, Credits(1_000_000 * C)).unwrap();
    let p = vec![0];
    r.configure_tenant(
        0,
        &TenantSpec {
            name: "acme".into(),
            classes: [
                [p.clone(), p.clone()],
                [p.clone(), p.clone()],
                [p.clone(), p],
            ],
        },
    )
    .unwrap();
    r.set_slow_path(10, std::time::Duration::from_micros(10));
    (r, path)
}

/// Reserves `call`, acting as the sidecar when the lane is dry (tops up what it asked).
fn reserve<'a>(r: &Region, gate: &'a Gate, call: &Call<'a>) -> tollgate_client::Reservation<'a> {
    for _ in 0..3 {
        match gate.reserve(call) {
            Ok(h) => return h,
            Err(ReserveError::Denied(_)) => {
                for (lane, _) in r.demands() {
                    r.top_up(lane, Credits(50 * C)).unwrap();
                }
            }
            Err(e) => panic!("reserve: {e}"),
        }
    }
    panic!("still dry after top-ups")
}

#[test]
fn out_of_range_tenant_is_a_typed_error_without_growing_the_lane_table() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (r, path) = setup(&dir);
    let gate = Gate::attach(&path).unwrap();
    for t in [u16::MAX, 1000, 2, 1] {
        let call = Call::fixed(Credits(C)).tenant(TenantId(t));
        match gate.reserve(&call) {
            Err(ReserveError::UnknownTenant(_)) => {}
            other => panic!("tenant #{t}: expected UnknownTenant, got {other:?}"),
        }
        // Two tenants of 6 classes each at most; before the fix, #65535 grew it to ~393k.
        assert!(
            gate.thread_lane_table_len() <= 12,
            "tenant #{t}: lane table grew to {}",
            gate.thread_lane_table_len()
        );
        assert_eq!(gate.thread_lanes(), 0);
    }
    assert!(r.lanes().is_empty(), "no lane claimed for a bad tenant");
    // A good tenant still works on the same thread.
    let acme = gate.tenant("acme").unwrap();
    reserve(&r, &gate, &Call::fixed(Credits(C)).tenant(acme))
        .commit_credits(Credits(C))
        .unwrap();
    assert_eq!(gate.thread_lanes(), 1);
    r.audit().check().unwrap();
}

#[test]
fn attach_drop_cycles_on_one_thread_release_lanes_and_mappings() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let (r, path) = setup(&dir);
    let base = Gate::live_mappings();
    let mut charged = 0u64;
    // Far more cycles than the region has lanes (8): only reuse keeps this going.
    for cycle in 0..300u64 {
        let gate = Gate::attach(&path).unwrap();
        assert_eq!(Gate::live_mappings(), base + 1);
        let acme = gate.tenant("acme").unwrap();
        let call = Call::fixed(Credits(3 * C)).tenant(acme);
        let a = reserve(&r, &gate, &call);
        let b = reserve(&r, &gate, &call);
        // One commit on another thread (pending on the lane until settled), one here,
        // and every few cycles a worker thread with a lane of its own that exits first
        // (its lane is parked for the process, then handed back with the gate).
        std::thread::scope(|s| {
            s.spawn(|| a.commit_credits(Credits(2 * C)).unwrap());
            if cycle % 3 == 0 {
                // Joined explicitly: that waits for the thread's exit, thread-local
                // destructors included (the scope's own wait does not).
                s.spawn(|| {
                    reserve(&r, &gate, &call)
                        .commit_credits(Credits(C))
                        .unwrap()
                })
                .join()
                .unwrap();
            }
        });
        b.commit_credits(Credits(4 * C)).unwrap(); // 1 credit of overrun
        charged += 6 * C + if cycle % 3 == 0 { C } else { 0 };
        assert_eq!(gate.thread_lanes(), 1);
        drop(gate);
        assert_eq!(Gate::live_mappings(), base, "cycle {cycle}: mapping kept");
        // Every lane of the dropped gate is handed back (reclaiming), none still owned.
        let lanes = r.lanes();
        assert!(!lanes.is_empty());
        assert!(
            lanes.iter().all(|l| l.reclaiming),
            "cycle {cycle}: a lane stayed owned"
        );
        r.audit().check().unwrap();
        // The sidecar's reclaim takes them back and frees them.
        let reports = r.reclaim_dead().unwrap();
        assert_eq!(reports.len(), lanes.len());
        assert!(r.lanes().is_empty(), "cycle {cycle}: lanes not freed");
        let mut recs = Vec::new();
        r.drain_all(&mut recs).unwrap();
        let audit = r.audit();
        audit.check().unwrap();
        assert_eq!(audit.pools[0].consumed, charged, "cycle {cycle}");
        assert_eq!(
            audit.pools[0].carved, 0,
            "cycle {cycle}: credits left in lanes"
        );
    }
}
