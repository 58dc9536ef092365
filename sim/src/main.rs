//! `tollgate-sim`: runs the deterministic fleet simulation (see `docs/simulation.md`).
//!
//! `--seed N` runs one seed (exit 1 on a violation, with the seed, the step, the
//! invariant and the last events); `--seeds K` sweeps seeds `start..start+K` with a
//! progress line per seed and a summary.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Instant;

use tollgate_sim::{FAULT_KINDS, SimConfig};

fn usage() -> ExitCode {
    eprintln!(
        "usage: tollgate-sim (--seed N | --seeds K [--start S]) [--steps STEPS] [--quiet]\n\
         \x20 --seed N     run seed N; exit 1 on a violation\n\
         \x20 --seeds K    run K seeds (from --start, default 0) and print a summary\n\
         \x20 --steps      steps per seed before quiescence (default 2000)\n\
         \x20 --for-secs T stop starting seeds after T seconds (long sweeps)"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    // TOLLGATE_SIM_LOG=<filter> (e.g. `tollgate_sidecar=debug`): the parties' own logs on
    // stderr, interleaved with TOLLGATE_SIM_TRACE's events.
    if let Ok(filter) = std::env::var("TOLLGATE_SIM_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .without_time()
            .init();
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut seed = None;
    let mut seeds = None;
    let mut start = 0u64;
    let mut steps = SimConfig::new(0).steps;
    let mut quiet = false;
    let mut for_secs = u64::MAX;
    let mut i = 0;
    while i < args.len() {
        let val = |i: usize| args.get(i + 1).and_then(|v| v.parse::<u64>().ok());
        match args[i].as_str() {
            "--seed" => seed = val(i),
            "--seeds" => seeds = val(i),
            "--start" => start = val(i).unwrap_or(0),
            "--steps" => steps = val(i).unwrap_or(steps),
            "--for-secs" => for_secs = val(i).unwrap_or(u64::MAX),
            "--quiet" => {
                quiet = true;
                i += 1;
                continue;
            }
            _ => return usage(),
        }
        if !matches!(args[i].as_str(), "--quiet") && args.get(i + 1).is_none() {
            return usage();
        }
        i += 2;
    }
    let list: Vec<u64> = match (seed, seeds) {
        (Some(s), None) => vec![s],
        (None, Some(k)) => (start..start.saturating_add(k)).collect(),
        _ => return usage(),
    };
    let single = list.len() == 1 && seed.is_some();
    let t0 = Instant::now();
    let mut total_steps = 0u64;
    let mut checks = 0u64;
    let mut calls = 0u64;
    let mut faults: BTreeMap<&str, u64> = FAULT_KINDS.iter().map(|k| (*k, 0)).collect();
    let mut failures = Vec::new();
    // The most agents spent past a wallet and cap (within reservations) in any seed.
    let mut max_excess = (0u64, 0u64, 0u64);
    let mut ran = 0usize;
    for (n, s) in list.iter().enumerate() {
        if t0.elapsed().as_secs() >= for_secs {
            println!("time budget of {for_secs} s spent: stopping after {n} seeds");
            break;
        }
        ran += 1;
        let mut cfg = SimConfig::new(*s);
        cfg.steps = steps;
        let started = Instant::now();
        match tollgate_sim::run(cfg) {
            Ok(r) => {
                total_steps += r.steps;
                checks += r.checks;
                calls += r.calls;
                for (e, slack) in r.max_excess.values() {
                    if *e > max_excess.0 {
                        max_excess = (*e, *slack, *s);
                    }
                }
                for (k, v) in &r.faults {
                    *faults.entry(k).or_insert(0) += v;
                }
                if single || !quiet {
                    let f: u64 = r.faults.values().sum();
                    println!(
                        "seed {s}: ok  steps={} faults={f} calls={} denials={} acked_batches={} checks={} digest={:016x} ({} ms) [{}/{}]",
                        r.steps,
                        r.calls,
                        r.denials,
                        r.acked_batches,
                        r.checks,
                        r.digest,
                        started.elapsed().as_millis(),
                        n + 1,
                        list.len()
                    );
                }
                if single {
                    for (t, x) in &r.totals {
                        println!(
                            "  tenant {t}: committed={} (overrun {}) posted={} (plan {}) granted={} held={} max_excess_over_wallet_and_cap={:?}",
                            x.committed,
                            x.overrun_committed,
                            x.posted,
                            x.plan_consumed,
                            x.granted,
                            x.held,
                            r.max_excess.get(t)
                        );
                    }
                    println!("  faults: {:?}", r.faults);
                }
            }
            Err(v) => {
                println!("seed {s}: FAILED");
                println!("{v}");
                failures.push(*s);
            }
        }
    }
    println!(
        "max spent past wallet+cap within reservations: {} micro-credits (outage bound then {}, seed {})",
        max_excess.0, max_excess.1, max_excess.2
    );
    println!(
        "summary: seeds={} (from {}) failed={} steps={} calls={} checks={} faults={:?} elapsed={}s",
        ran,
        list.first().copied().unwrap_or(0),
        failures.len(),
        total_steps,
        calls,
        checks,
        faults,
        t0.elapsed().as_secs()
    );
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        println!("failed seeds: {failures:?}");
        ExitCode::from(1)
    }
}
