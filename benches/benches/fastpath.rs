//! The fast-path benchmark: tollgate-client, the shared-counter baseline and Redis, one run.
//!
//! `cargo bench -p tollgate-benches --bench fastpath` prints, in order: percentiles (HDR
//! harness, two methods, see `tollgate_benches::hdr`), thread and process scaling, the Redis
//! Lua check-and-decrement, criterion means, then a summary against the DESIGN §10 targets.
//! `TOLLGATE_BENCH_SECS` (default 2) sets the time of each throughput run.

use std::hint::black_box;
use std::time::Duration;

use criterion::Criterion;
use tollgate_benches::baseline::SharedCounters;
use tollgate_benches::hdr::{self, Percentiles, fmt_ns};
use tollgate_benches::redis_lua::{self, RedisLimiter};
use tollgate_benches::scaling::{self, Throughput};

/// Credits each limit starts with: never the reason for a denial during a run.
const PLENTY: u64 = u64::MAX / 4;
/// Held per reservation and charged per commit, in micro-credits.
const HOLD: u64 = 2_000;
const ACTUAL: u64 = 1_500;

/// Operations timed one by one, and batches of [`BATCH`] operations, per latency run.
const PER_OP_SAMPLES: u64 = 2_000_000;
const BATCHES: u64 = 200_000;
const BATCH: u32 = 32;
const REDIS_SAMPLES: u64 = 20_000;

fn run_secs() -> Duration {
    let secs = std::env::var("TOLLGATE_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .unwrap_or(2.0);
    Duration::from_secs_f64(secs)
}

/// Everything the summary needs.
#[derive(Default)]
struct Figures {
    baseline_per_op: Option<Percentiles>,
    baseline_batched: Option<Percentiles>,
    baseline_t1: Option<Throughput>,
    baseline_t2: Option<Throughput>,
    redis: Option<Percentiles>,
}

fn main() {
    if let Ok(role) = std::env::var(scaling::CHILD_ROLE_VAR) {
        child(&role);
        return;
    }
    let run = run_secs();
    let mut f = Figures::default();
    println!(
        "== tollgate fast-path bench: {HOLD} held, {ACTUAL} charged per call; 4 limits + task budget + tier floor"
    );
    baseline_latency(&mut f);
    baseline_scaling(&mut f, run);
    redis_latency(&mut f);
    let mut c = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(50)
        .configure_from_args();
    criterion_means(&mut c);
    c.final_summary();
    summary(&f);
}

fn child(role: &str) {
    eprintln!("unknown child role {role:?}");
    std::process::exit(2);
}

fn baseline_latency(f: &mut Figures) {
    let c = SharedCounters::new(4, PLENTY, PLENTY);
    let op = || {
        let hold = c.reserve(black_box(HOLD), 0).expect("plenty of credits");
        black_box(hold.commit(ACTUAL));
    };
    let p = hdr::per_op(100_000, PER_OP_SAMPLES, op);
    println!("baseline  reserve+commit 1 thread, per-op : {p}");
    f.baseline_per_op = Some(p);
    let p = hdr::batched(100_000, BATCHES, BATCH, op);
    println!("baseline  reserve+commit 1 thread, batch {BATCH}: {p}");
    f.baseline_batched = Some(p);
}

fn baseline_scaling(f: &mut Figures, run: Duration) {
    let c = SharedCounters::new(4, PLENTY, PLENTY);
    let make = |_| {
        let c = &c;
        move || {
            let hold = c.reserve(black_box(HOLD), 0).expect("plenty of credits");
            black_box(hold.commit(ACTUAL));
        }
    };
    let t1 = scaling::threads(1, run, make);
    println!("baseline  throughput {t1}");
    let t2 = scaling::threads(2, run, make);
    println!(
        "baseline  throughput {t2}  scaling {:.2}x",
        t2.per_sec() / t1.per_sec()
    );
    f.baseline_t1 = Some(t1);
    f.baseline_t2 = Some(t2);
}

fn redis_latency(f: &mut Figures) {
    let url = redis_lua::url();
    let mut r = match RedisLimiter::connect(&url, PLENTY, PLENTY, HOLD, 0) {
        Ok(r) => r,
        Err(e) => {
            println!(
                "SKIPPED: redis Lua check-and-decrement: Redis at {url} unreachable ({e}); set {}",
                redis_lua::URL_VAR
            );
            return;
        }
    };
    let mut failed = None;
    let p = hdr::per_op(1_000, REDIS_SAMPLES, || match r.reserve() {
        Ok(0) => {}
        Ok(k) => failed = Some(format!("refused by key {k}")),
        Err(e) => failed = Some(e.to_string()),
    });
    if let Some(e) = failed {
        println!("redis     EVALSHA check-and-decrement FAILED: {e}");
        return;
    }
    println!("redis     EVALSHA check-and-decrement (1 round trip), per-op: {p}");
    f.redis = Some(p);
}

fn criterion_means(c: &mut Criterion) {
    let counters = SharedCounters::new(4, PLENTY, PLENTY);
    c.bench_function("baseline/reserve_commit", |b| {
        b.iter(|| {
            let hold = counters
                .reserve(black_box(HOLD), 0)
                .expect("plenty of credits");
            black_box(hold.commit(ACTUAL))
        })
    });
}

fn summary(f: &Figures) {
    println!("\n== summary (targets: DESIGN §10)");
    if let (Some(p), Some(b)) = (f.baseline_per_op, f.baseline_batched) {
        println!(
            "baseline 1 thread: p50 {} (batched {}), p99 {}, p99.9 {}",
            fmt_ns(p.p50_ns),
            fmt_ns(b.p50_ns),
            fmt_ns(p.p99_ns),
            fmt_ns(p.p999_ns)
        );
    }
    if let (Some(t1), Some(t2)) = (f.baseline_t1, f.baseline_t2) {
        println!(
            "baseline scaling 2 threads / 1: {:.2}x",
            t2.per_sec() / t1.per_sec()
        );
    }
    match f.redis {
        Some(r) => println!(
            "redis: p50 {}, p99 {}, p99.9 {}",
            fmt_ns(r.p50_ns),
            fmt_ns(r.p99_ns),
            fmt_ns(r.p999_ns)
        ),
        None => println!("redis: not measured (see SKIPPED above)"),
    }
}
