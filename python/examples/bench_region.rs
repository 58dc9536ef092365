//! The Rust side of the Python benchmark (`python/bench/run.sh`): creates the fast-path
//! bench's region (`tollgate_benches::tollgate`: 4 limits, a task, a per-token price
//! book), times Rust's own reserve + commit on it (the figure the Python one is set beside),
//! then serves the region as its sidecar for the Python process, one round per `serve`
//! line on stdin (answered `ok`), until stdin closes; then checks conservation.
//!
//! Prints `region PATH` first, then the Rust figures.

use std::hint::black_box;
use std::io::{BufRead, Write};

use tollgate_benches::hdr;
use tollgate_benches::tollgate::{Agent, SERVE_EVERY, Sidecar};

const WARMUP: u64 = 100_000;
const SAMPLES: u64 = 1_000_000;
const BATCHES: u64 = 100_000;
const BATCH: u32 = 32;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut sidecar = Sidecar::create()?;
    println!("region {}", sidecar.path().display());
    {
        let agent = Agent::attach(sidecar.path())?;
        let task = agent.open_task();
        let sc = std::cell::RefCell::new(&mut sidecar);
        agent.prime(&task, || sc.borrow_mut().serve().map(|_| ()))?;
        let op = || {
            black_box(agent.reserve_commit(&task).expect("reserve + commit"));
        };
        let serve = || {
            sc.borrow_mut().serve().expect("serve");
        };
        let p = hdr::per_op(WARMUP, SAMPLES, SERVE_EVERY, op, serve);
        println!("rust      rated call, per-op    : {p}");
        let p = hdr::batched(WARMUP, BATCHES, BATCH, SERVE_EVERY, op, serve);
        println!("rust      rated call, batch {BATCH}  : {p}");
    }
    std::io::stdout().flush()?;
    for line in std::io::stdin().lock().lines() {
        if line? == "serve" {
            sidecar.serve()?;
            println!("ok");
            std::io::stdout().flush()?;
        }
    }
    sidecar.serve()?;
    sidecar.audit()?;
    println!("region audit: balanced");
    Ok(())
}
