//! Component costs of one reserve + commit, for finding where the fast path's time goes
//! (not a figure of record: the bench `fastpath` is).
//!
//! `cargo build --profile bench -p tollgate-benches --example components`, then
//! `chrt -f 10 target/release/examples/components [PREFIX]` (only the variants whose name
//! starts with `PREFIX`; `REPS` sets the stretches, default 30). Each variant runs
//! stretches of 16,384 calls with the sidecar's work between them and prints the best
//! stretch's mean per call (loop included).

use std::hint::black_box;
use std::time::Instant;

use tollgate_benches::tollgate::{
    Agent, BenchError, INPUT_TOKENS, MAX_OUTPUT_TOKENS, MODEL, Sidecar, TENANT, USAGE,
};
use tollgate_client::{Call, Gate};
use tollgate_core::{Credits, Tier};

const STRETCH: u32 = 16_384;

fn time(only: Option<&str>, reps: u32, name: &str, sc: &mut Sidecar, mut f: impl FnMut()) {
    if only.is_some_and(|p| !name.starts_with(p)) {
        return;
    }
    let mut best = f64::MAX;
    for _ in 0..reps {
        let t = Instant::now();
        for _ in 0..STRETCH {
            f();
        }
        best = best.min(t.elapsed().as_nanos() as f64 / f64::from(STRETCH));
        sc.serve().expect("sidecar round");
    }
    println!("{name:40} best {best:.1} ns");
}

fn main() -> Result<(), BenchError> {
    let only = std::env::args().nth(1);
    let only = only.as_deref();
    let reps = std::env::var("REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let mut sc = Sidecar::create()?;
    // The bench's agent (its calls carry a task) and a second gate for calls without one.
    let agent = Agent::attach(sc.path())?;
    let task = agent.open_task();
    agent.prime(&task, || sc.serve().map(|_| ()))?;
    let gate = Gate::attach(sc.path())?;
    let model = gate.model(MODEL)?;
    let tenant = gate.tenant(TENANT)?;
    let fixed = || {
        Call::fixed(Credits(2_800))
            .tenant(tenant)
            .tier(Tier::Interactive)
    };
    let rated = || {
        Call::model(&model)
            .tenant(tenant)
            .input_tokens(INPUT_TOKENS)
            .max_output_tokens(MAX_OUTPUT_TOKENS)
            .tier(Tier::Interactive)
    };
    for _ in 0..100 {
        match gate.reserve(&fixed()) {
            Ok(r) => {
                r.cancel();
                break;
            }
            Err(_) => {
                sc.serve()?;
            }
        }
    }
    for _ in 0..3 {
        time(only, reps, "rated+task", &mut sc, || {
            black_box(agent.reserve_commit(&task).expect("call"));
        });
        time(only, reps, "rated, no task", &mut sc, || {
            let r = gate.reserve(&rated()).expect("reserve");
            black_box(r.commit(USAGE).expect("commit"));
        });
        time(only, reps, "fixed+task", &mut sc, || {
            black_box(agent.reserve_commit_fixed(&task).expect("call"));
        });
        time(only, reps, "fixed, no task", &mut sc, || {
            let r = gate.reserve(&fixed()).expect("reserve");
            black_box(r.commit_credits(Credits(1_802)).expect("commit"));
        });
        time(only, reps, "fixed, no task, cancel", &mut sc, || {
            gate.reserve(&fixed()).expect("reserve").cancel();
        });
    }
    if let Err(e) = sc.audit() {
        eprintln!("conservation audit failed: {e}");
        std::process::exit(1);
    }
    println!("conservation audit: balanced");
    Ok(())
}
