//! The fast-path benchmark: tollgate-client, the shared-counter baseline and Redis, one run.
//!
//! `cargo bench -p tollgate-benches --bench fastpath` prints, in order: the machine, the
//! clock's cost, percentiles of one reserve + commit (HDR harness, two methods, see
//! `tollgate_benches::hdr`) for tollgate, the baseline and Redis, then throughput with 1 and
//! 2 threads and 2 processes (rounds, see `tollgate_benches::scaling`), criterion means,
//! and a summary against the performance targets (BENCHMARKS.md).
//!
//! `TOLLGATE_BENCH_ROUNDS` (default 400) sets the rounds of each throughput run.

use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::Criterion;
use tollgate_benches::hdr::{self, Percentiles, fmt_ns};
use tollgate_benches::redis_lua::{self, RedisLimiter};
use tollgate_benches::scaling::{self, Throughput};
use tollgate_benches::tollgate::{Agent, REGION_VAR, SERVE_EVERY, Sidecar};
use tollgate_client::baseline::SharedCounters;

/// Held per reservation and charged per commit, in micro-credits (what the rated call
/// holds and costs, so every contender moves the same amounts).
const HOLD: u64 = 2_800;
const ACTUAL: u64 = 1_802;
/// Credits each baseline or Redis counter starts with: never the reason for a denial.
const PLENTY: u64 = u64::MAX / 4;

const PER_OP_SAMPLES: u64 = 2_000_000;
const BATCHES: u64 = 100_000;
const BATCH: u32 = 32;
const WARMUP: u64 = 200_000;
const REDIS_SAMPLES: u64 = 20_000;
/// Operations per worker per throughput round (under a lane ring's capacity).
const ROUND_OPS: u64 = 32_768;
const CHILD_ROLE: &str = "tollgate-agent";

/// Target figures (the performance targets in BENCHMARKS.md).
const TARGET_P50_NS: f64 = 25.0;
const TARGET_P99_NS: f64 = 100.0;
const TARGET_SCALING: f64 = 1.8;
const TARGET_REDIS_RATIO: f64 = 1000.0;

fn rounds() -> u32 {
    std::env::var("TOLLGATE_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|r| *r > 0)
        .unwrap_or(400)
}

/// Everything the summary needs.
#[derive(Default)]
struct Figures {
    tollgate_per_op: Option<Percentiles>,
    tollgate_batched: Option<Percentiles>,
    fixed_per_op: Option<Percentiles>,
    baseline_per_op: Option<Percentiles>,
    baseline_batched: Option<Percentiles>,
    redis: Option<Percentiles>,
    tollgate_t1: Option<Throughput>,
    tollgate_t2: Option<Throughput>,
    tollgate_p1: Option<Throughput>,
    tollgate_p2: Option<Throughput>,
    baseline_t1: Option<Throughput>,
    baseline_t2: Option<Throughput>,
}

fn main() {
    if let Ok(role) = std::env::var(scaling::CHILD_ROLE_VAR) {
        child(&role);
        return;
    }
    machine();
    println!(
        "clock: one Instant::now() pair costs {} (median; subtracted from every sample)",
        fmt_ns(hdr::clock_overhead_ps(200_000) as f64 / 1000.0)
    );
    println!(
        "call: {HOLD} micro-credits held, {ACTUAL} charged; 4 limits (lane carved from 4 pools), task budget, interactive tier"
    );
    let mut sidecar = Sidecar::create().expect("create the bench region");
    let agent = Agent::attach(sidecar.path()).expect("attach the bench region");
    let mut f = Figures::default();

    println!("\n== latency of one reserve + commit, 1 thread");
    tollgate_latency(&mut f, &agent, &mut sidecar);
    baseline_latency(&mut f);
    redis_latency(&mut f);
    println!(
        "(usage records lost to a full ring so far: {})",
        sidecar.lost_records()
    );

    println!(
        "\n== throughput (rounds of {ROUND_OPS} ops per worker, sidecar work between rounds; worker i pinned to CPU i unless {}=0)",
        scaling::PIN_VAR
    );
    let sidecar = Mutex::new(sidecar);
    tollgate_scaling(&mut f, &agent, &sidecar);
    println!(
        "(usage records lost to a full ring so far: {})",
        sidecar
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .lost_records()
    );
    baseline_scaling(&mut f);

    println!("\n== criterion (mean)");
    let mut c = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(50)
        .configure_from_args();
    criterion_means(&mut c, &agent, &sidecar);
    c.final_summary();

    let mut sidecar = sidecar.into_inner().unwrap_or_else(|e| e.into_inner());
    let reclaimed = sidecar
        .reclaim_dead()
        .expect("reclaim the child processes' lanes");
    serve(&mut sidecar);
    println!(
        "\nend of run: {reclaimed} lanes of exited child processes reclaimed; {} usage records lost to a full ring (should be 0); conservation audit: {}",
        sidecar.lost_records(),
        match sidecar.audit() {
            Ok(()) => "balanced".to_string(),
            Err(e) => format!("BROKEN: {e}"),
        }
    );
    summary(&f);
}

fn machine() {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "machine: {cpus} CPUs, {cpu}; load average at start: {}",
        load.trim()
    );
}

fn child(role: &str) {
    if role != CHILD_ROLE {
        eprintln!("unknown child role {role:?}");
        std::process::exit(2);
    }
    let Some(path) = std::env::var_os(REGION_VAR) else {
        eprintln!("{REGION_VAR} is not set");
        std::process::exit(2);
    };
    let agent = Agent::attach(std::path::Path::new(&path)).expect("child attaches");
    let task = agent.open_task();
    // The parent is the sidecar: it tops the lane up while we wait.
    agent
        .prime(&task, || {
            std::thread::sleep(Duration::from_millis(1));
            Ok(())
        })
        .expect("child's lane gets credits");
    scaling::child_rounds(|| {
        black_box(agent.reserve_commit(&task).expect("reserve + commit"));
    })
    .expect("child talks to the parent");
}

fn serve(sidecar: &mut Sidecar) {
    sidecar.serve().expect("sidecar serves the region");
}

fn tollgate_latency(f: &mut Figures, agent: &Agent, sidecar: &mut Sidecar) {
    let task = agent.open_task();
    let sc = std::cell::RefCell::new(sidecar);
    agent
        .prime(&task, || sc.borrow_mut().serve().map(|_| ()))
        .expect("lane gets credits");
    let op = || {
        black_box(agent.reserve_commit(&task).expect("reserve + commit"));
    };
    let srv = || serve(&mut sc.borrow_mut());
    let p = hdr::per_op(WARMUP, PER_OP_SAMPLES, SERVE_EVERY, op, srv);
    println!("tollgate  rated call, per-op   : {p}");
    f.tollgate_per_op = Some(p);
    let p = hdr::batched(WARMUP, BATCHES, BATCH, SERVE_EVERY, op, srv);
    println!("tollgate  rated call, batch {BATCH} : {p}");
    f.tollgate_batched = Some(p);
    let fixed = || {
        black_box(agent.reserve_commit_fixed(&task).expect("reserve + commit"));
    };
    let p = hdr::per_op(WARMUP, PER_OP_SAMPLES, SERVE_EVERY, fixed, srv);
    println!("tollgate  pre-rated call, per-op: {p}");
    f.fixed_per_op = Some(p);
    let p = hdr::batched(WARMUP, BATCHES, BATCH, SERVE_EVERY, fixed, srv);
    println!("tollgate  pre-rated call, batch {BATCH}: {p}");
}

/// 4 limits and the task budget as 5 shared words.
fn baseline_counters() -> SharedCounters {
    SharedCounters::new(&[PLENTY; 5])
}

fn baseline_op(c: &SharedCounters) {
    c.reserve(black_box(HOLD)).expect("plenty of credits");
    c.commit(HOLD, black_box(ACTUAL));
}

fn baseline_latency(f: &mut Figures) {
    let c = baseline_counters();
    let p = hdr::per_op(WARMUP, PER_OP_SAMPLES, u64::MAX, || baseline_op(&c), || {});
    println!("baseline  5 shared words, per-op: {p}");
    f.baseline_per_op = Some(p);
    let p = hdr::batched(WARMUP, BATCHES, BATCH, u64::MAX, || baseline_op(&c), || {});
    println!("baseline  5 shared words, batch {BATCH}: {p}");
    f.baseline_batched = Some(p);
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
    let p = hdr::per_op(
        1_000,
        REDIS_SAMPLES,
        u64::MAX,
        || match r.reserve() {
            Ok(0) => {}
            Ok(k) => failed = Some(format!("refused by key {k}")),
            Err(e) => failed = Some(e.to_string()),
        },
        || {},
    );
    if let Some(e) = failed {
        println!("redis     EVALSHA check-and-decrement FAILED: {e}");
        return;
    }
    println!("redis     EVALSHA check-and-decrement (1 round trip, {url}), per-op: {p}");
    f.redis = Some(p);
}

fn tollgate_scaling(f: &mut Figures, agent: &Agent, sidecar: &Mutex<Sidecar>) {
    let rounds = rounds();
    let serve_locked = || serve(&mut sidecar.lock().unwrap_or_else(|e| e.into_inner()));
    let run = |threads: usize| {
        scaling::threads(
            threads,
            rounds,
            ROUND_OPS,
            |_| {
                // Each thread: its own task, its own lane (claimed on its first reserve).
                let task = agent.open_task();
                agent
                    .prime(&task, || {
                        serve_locked();
                        Ok(())
                    })
                    .expect("lane gets credits");
                move || {
                    black_box(agent.reserve_commit(&task).expect("reserve + commit"));
                }
            },
            serve_locked,
        )
    };
    let t1 = run(1);
    println!("tollgate  threads   {t1}");
    let t2 = run(2);
    println!(
        "tollgate  threads   {t2}  scaling {:.2}x",
        t2.per_sec() / t1.per_sec()
    );
    let path = sidecar
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .path()
        .to_string_lossy()
        .into_owned();
    let mut serve_fn = serve_locked;
    let mut procs = |n: usize| {
        scaling::processes(
            n,
            rounds,
            ROUND_OPS,
            CHILD_ROLE,
            &[(REGION_VAR, path.clone())],
            &mut serve_fn,
        )
    };
    match (procs(1), procs(2)) {
        (Ok(p1), Ok(p2)) => {
            println!("tollgate  processes {p1}");
            println!(
                "tollgate  processes {p2}  scaling {:.2}x vs 1 process, {:.2}x vs 1 thread",
                p2.per_sec() / p1.per_sec(),
                p2.per_sec() / t1.per_sec()
            );
            f.tollgate_p1 = Some(p1);
            f.tollgate_p2 = Some(p2);
        }
        (Err(e), _) | (_, Err(e)) => println!("tollgate  processes FAILED: {e}"),
    }
    f.tollgate_t1 = Some(t1);
    f.tollgate_t2 = Some(t2);
}

fn baseline_scaling(f: &mut Figures) {
    let rounds = rounds();
    let c = baseline_counters();
    let run = |threads: usize| {
        scaling::threads(threads, rounds, ROUND_OPS, |_| || baseline_op(&c), || {})
    };
    let t1 = run(1);
    println!("baseline  threads   {t1}");
    let t2 = run(2);
    println!(
        "baseline  threads   {t2}  scaling {:.2}x (both threads on the same 5 words)",
        t2.per_sec() / t1.per_sec()
    );
    println!(
        "SKIPPED: baseline with 2 processes: tollgate_client::baseline keeps its words in process memory (no mapped variant)"
    );
    f.baseline_t1 = Some(t1);
    f.baseline_t2 = Some(t2);
}

fn criterion_means(c: &mut Criterion, agent: &Agent, sidecar: &Mutex<Sidecar>) {
    let task = agent.open_task();
    let mut sc = sidecar.lock().unwrap_or_else(|e| e.into_inner());
    agent
        .prime(&task, || sc.serve().map(|_| ()))
        .expect("lane gets credits");
    c.bench_function("tollgate/reserve_commit_rated", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(SERVE_EVERY);
                let t0 = Instant::now();
                for _ in 0..n {
                    black_box(agent.reserve_commit(&task).expect("reserve + commit"));
                }
                timed += t0.elapsed();
                left -= n;
                serve(&mut sc);
            }
            timed
        })
    });
    drop(sc);
    let counters = baseline_counters();
    c.bench_function("baseline/reserve_commit_5_words", |b| {
        b.iter(|| baseline_op(&counters))
    });
    match RedisLimiter::connect(&redis_lua::url(), PLENTY, PLENTY, HOLD, 0) {
        Ok(mut r) => {
            c.bench_function("redis/evalsha_check_and_decrement", |b| {
                b.iter(|| black_box(r.reserve().expect("redis answers")))
            });
        }
        Err(e) => println!("SKIPPED: criterion redis/evalsha_check_and_decrement: {e}"),
    }
}

fn verdict(met: bool) -> &'static str {
    if met { "MET" } else { "MISSED" }
}

fn summary(f: &Figures) {
    println!("\n== summary (targets: BENCHMARKS.md)");
    if let (Some(p), Some(b)) = (f.tollgate_per_op, f.tollgate_batched) {
        println!(
            "tollgate reserve+commit, 1 thread: p50 {} per-op / {} batched (target <= {TARGET_P50_NS} ns: {}), p99 {} (target <= {TARGET_P99_NS} ns: {}), p99.9 {}",
            fmt_ns(p.p50_ns),
            fmt_ns(b.p50_ns),
            verdict(p.p50_ns.min(b.p50_ns) <= TARGET_P50_NS),
            fmt_ns(p.p99_ns),
            verdict(p.p99_ns <= TARGET_P99_NS),
            fmt_ns(p.p999_ns)
        );
    }
    if let Some(p) = f.fixed_per_op {
        println!(
            "tollgate pre-rated call: p50 {}, p99 {}",
            fmt_ns(p.p50_ns),
            fmt_ns(p.p99_ns)
        );
    }
    if let (Some(p), Some(b)) = (f.baseline_per_op, f.baseline_batched) {
        println!(
            "baseline (5 CAS + 5 fetch_add), 1 thread: p50 {} per-op / {} batched, p99 {}",
            fmt_ns(p.p50_ns),
            fmt_ns(b.p50_ns),
            fmt_ns(p.p99_ns)
        );
    }
    if let (Some(t1), Some(t2)) = (&f.tollgate_t1, &f.tollgate_t2) {
        let s = t2.per_sec() / t1.per_sec();
        println!(
            "tollgate scaling 2 threads / 1: {s:.2}x (target >= {TARGET_SCALING}x: {})",
            verdict(s >= TARGET_SCALING)
        );
        if let (Some(p1), Some(p2)) = (&f.tollgate_p1, &f.tollgate_p2) {
            let s = p2.per_sec() / p1.per_sec();
            println!(
                "tollgate scaling 2 processes / 1 process: {s:.2}x (target >= {TARGET_SCALING}x: {}); 2 processes / 1 thread: {:.2}x",
                verdict(s >= TARGET_SCALING),
                p2.per_sec() / t1.per_sec()
            );
        }
    }
    if let (Some(t1), Some(t2)) = (&f.baseline_t1, &f.baseline_t2) {
        println!(
            "baseline scaling 2 threads / 1: {:.2}x",
            t2.per_sec() / t1.per_sec()
        );
    }
    match (f.redis, f.tollgate_per_op, f.tollgate_batched) {
        (Some(r), Some(p), Some(b)) => {
            let ratio = r.p50_ns / p.p50_ns.max(b.p50_ns);
            println!(
                "redis: p50 {}, p99 {}; tollgate p50 is {ratio:.0}x lower (target >= {TARGET_REDIS_RATIO}x: {})",
                fmt_ns(r.p50_ns),
                fmt_ns(r.p99_ns),
                verdict(ratio >= TARGET_REDIS_RATIO)
            );
        }
        _ => println!("redis: not measured (see SKIPPED above)"),
    }
}
