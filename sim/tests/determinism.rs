//! The simulation replays: the same seed gives the same fault schedule, the same trace
//! and the same final totals; and a short sweep finds no violation.

use tollgate_sim::SimConfig;

fn short(seed: u64) -> SimConfig {
    // Short (a debug build runs it) with faults three times as likely.
    let mut c = SimConfig::new(seed);
    c.steps = 250;
    c.fault_rate = 3.0;
    c
}

#[test]
fn the_same_seed_replays_the_same_run() {
    let a = tollgate_sim::run(short(7)).unwrap_or_else(|v| panic!("{v}"));
    let b = tollgate_sim::run(short(7)).unwrap_or_else(|v| panic!("{v}"));
    println!("seed 7: digest {:016x}, faults {:?}", a.digest, a.faults);
    assert!(a.faults.values().sum::<u64>() > 0, "faults were injected");
    assert_eq!(a.faults, b.faults, "same fault schedule");
    assert_eq!(a.totals, b.totals, "same final totals");
    assert_eq!(a.steps, b.steps);
    assert_eq!(a.digest, b.digest, "same trace");
    assert!(a.calls > 0, "agents made calls");
    let c = tollgate_sim::run(short(8)).unwrap_or_else(|v| panic!("{v}"));
    assert_ne!(a.digest, c.digest, "another seed, another run");
}

#[test]
fn a_short_sweep_finds_no_violation() {
    for seed in 100..102 {
        let r = tollgate_sim::run(short(seed)).unwrap_or_else(|v| panic!("{v}"));
        let committed: u64 = r.totals.values().map(|t| t.committed).sum();
        let posted: u64 = r.totals.values().map(|t| t.posted).sum();
        assert!(committed > 0, "seed {seed}: nothing committed");
        assert!(
            posted <= committed,
            "seed {seed}: posted {posted} > committed {committed}"
        );
    }
}
