//! How fast a call is refused, one run: `cargo bench -p tollgate-benches --bench denial`.
//!
//! 1. **Immediate denial**: the lane is dry and the sidecar has marked its binding limit
//!    as not refillable before a time (`Region::record_denial_until`: a hard cap reached,
//!    a window spent until it rolls). Target: p50 <= 100 ns, p99 <= 1 us.
//! 2. **Bounded wait**: the lane is dry and no such mark is set, so the agent raises a
//!    demand and waits the region's bounded time for a top-up before it denies (the
//!    region's wait set to 10 ms, as the demo runs it). For comparison.
//! 3. **A runaway loop costs the others nothing**: a thread hammers the marked lane while
//!    another thread's granted reserve + commit is measured; the p50 with and without the
//!    hammering, side by side.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use tollgate_benches::hdr::{self, fmt_ns};
use tollgate_client::{Call, Gate, PoolSpec, Region, RegionConfig, ReserveError, TenantSpec};
use tollgate_core::{Credits, LimitKind, Tier};

const C: u64 = 1_000_000;

fn region(path: &std::path::Path) -> Region {
    let r = Region::create(
        path,
        RegionConfig {
            pools: 2,
            tenants: 2,
            lanes: 16,
            slots_per_lane: 8,
            ring_capacity: 4096,
            price_book_bytes: 1024,
            ..RegionConfig::default()
        },
    )
    .expect("create region");
    for (pool, name) in ["dry", "busy"].into_iter().enumerate() {
        r.configure_pool(
            pool,
            &PoolSpec {
                limit: LimitKind::HardCap,
                floors: [Credits(0); 3],
            },
        )
        .expect("pool");
        r.configure_tenant(
            pool,
            &TenantSpec {
                name: name.into(),
                classes: std::array::from_fn(|_| [vec![pool], vec![pool]]),
            },
        )
        .expect("tenant");
    }
    r.grant(1, Credits(1_000_000_000 * C)).expect("grant");
    r
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("region");
    let r = region(&path);
    let gate = Gate::attach(&path).expect("attach");
    let dry = gate.tenant("dry").expect("tenant");
    let busy = gate.tenant("busy").expect("tenant");
    let refused = Call::fixed(Credits(C)).tenant(dry).tier(Tier::Interactive);
    let denied = |g: &Gate| match g.reserve(&refused) {
        Err(ReserveError::Denied(d)) => {
            black_box(d);
        }
        other => panic!("expected a denial, got {other:?}"),
    };
    // Claim the dry lane, then mark its limit final for an hour.
    denied(&gate);
    let lane = r
        .lanes()
        .into_iter()
        .find(|l| l.key.is_some_and(|k| k.tenant == dry.0))
        .expect("the dry tenant's lane")
        .lane;
    let until = SystemTime::now() + Duration::from_secs(3600);
    r.record_denial_until(lane, LimitKind::HardCap, until)
        .expect("mark final");
    println!("== immediate denial (limit marked final), 1 thread");
    let p = hdr::per_op(100_000, 2_000_000, u64::MAX, || denied(&gate), || {});
    println!("tollgate  immediate denial     : {p}");
    let met = p.p50_ns <= 100.0 && p.p99_ns <= 1_000.0;
    println!(
        "target p50 <= 100 ns, p99 <= 1 us: {}",
        if met { "met" } else { "MISSED" }
    );

    println!("\n== bounded wait (no mark: a refill is plausible), 1 thread");
    r.clear_denial(lane).expect("clear");
    r.set_slow_path(0, Duration::from_millis(10));
    let p = hdr::per_op(5, 200, u64::MAX, || denied(&gate), || {});
    println!("tollgate  denial after the wait: {p}");

    println!("\n== a runaway loop on the marked lane vs another tenant's granted calls");
    r.record_denial_until(lane, LimitKind::HardCap, until)
        .expect("mark final");
    let call = Call::fixed(Credits(2_800))
        .tenant(busy)
        .tier(Tier::Interactive);
    let granted = |g: &Gate| {
        let h = g.reserve(&call).expect("granted");
        black_box(h.commit_credits(Credits(1_802)).expect("commit"));
    };
    // Claim and fill the busy lane; keep it topped up between samples.
    let _ = gate.reserve(&call);
    let busy_lane = r
        .lanes()
        .into_iter()
        .find(|l| l.key.is_some_and(|k| k.tenant == busy.0))
        .expect("the busy tenant's lane")
        .lane;
    let serve = || {
        let _ = r.top_up(busy_lane, Credits(100 * C));
        let mut records = Vec::new();
        let _ = r.drain(busy_lane, &mut records);
    };
    serve();
    let quiet = hdr::per_op(100_000, 1_000_000, 10_000, || granted(&gate), serve);
    println!("granted reserve + commit, quiet        : {quiet}");
    let stop = AtomicBool::new(false);
    let marked = AtomicBool::new(false);
    let loud = std::thread::scope(|s| {
        s.spawn(|| {
            // This thread's own lane of the dry tenant: claimed here, marked by the sidecar.
            let _ = gate.reserve(&refused);
            while !marked.load(Ordering::Acquire) {
                std::hint::spin_loop();
            }
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                denied(&gate);
                n += 1;
            }
            println!("(the runaway loop was denied {n} times meanwhile)");
        });
        while r
            .lanes()
            .iter()
            .filter(|l| l.key.is_some_and(|k| k.tenant == dry.0))
            .count()
            < 2
        {
            std::thread::yield_now();
        }
        for l in r.lanes() {
            if l.key.is_some_and(|k| k.tenant == dry.0) {
                r.record_denial_until(l.lane, LimitKind::HardCap, until)
                    .expect("mark final");
            }
        }
        marked.store(true, Ordering::Release);
        let p = hdr::per_op(100_000, 1_000_000, 10_000, || granted(&gate), serve);
        stop.store(true, Ordering::Relaxed);
        p
    });
    println!("granted reserve + commit, with runaway : {loud}");
    println!(
        "p50 {} quiet vs {} with the runaway loop on the other core; demands pending (from the lanes' first, unmarked calls only): {}",
        fmt_ns(quiet.p50_ns),
        fmt_ns(loud.p50_ns),
        r.demands().len()
    );
    r.audit().check().expect("conservation");
}
