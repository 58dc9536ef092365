//! Throughput with n threads or n processes, in rounds.
//!
//! Every worker builds its own state first (attach, claim its lane). Then, per round, all
//! workers start together, each runs `round_ops` operations and times its own busy time,
//! and between rounds the sidecar's work runs (top-ups, draining the rings) while the
//! workers wait, so it is not counted and does not compete for the 2 cores. Throughput is
//! the sum over workers of `ops / busy time`; the wall-clock rate of the rounds (including
//! the barrier skew) is reported next to it as a check.
//!
//! Worker i is pinned to CPU i (see [`pin_to`]); the sidecar's work is not pinned.
//!
//! Processes: the bench binary re-executes itself with [`CHILD_ROLE_VAR`] set. A child
//! builds its state, prints `ready`, then for every `go` on stdin runs a round and prints
//! `done <busy_ns>`; it exits at `exit` or end of input.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

/// Environment variable that selects a child role in a re-executed bench binary.
pub const CHILD_ROLE_VAR: &str = "TOLLGATE_BENCH_CHILD";
/// Environment variable with the child's operations per round.
pub const CHILD_ROUND_OPS_VAR: &str = "TOLLGATE_BENCH_ROUND_OPS";
/// Environment variable with the CPU a child pins itself to.
pub const CHILD_CPU_VAR: &str = "TOLLGATE_BENCH_CPU";
/// Set to `0` to run workers unpinned.
pub const PIN_VAR: &str = "TOLLGATE_BENCH_PIN";

/// Pins the calling thread to `cpu` (modulo the CPUs available), unless [`PIN_VAR`] is `0`.
/// Worker i runs on CPU i, so a worker never migrates between rounds (a migration restarts
/// it on cold caches and makes the figures depend on the scheduler). Returns whether it
/// pinned.
pub fn pin_to(cpu: usize) -> bool {
    if std::env::var(PIN_VAR).as_deref() == Ok("0") {
        return false;
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu % cpus).is_ok()
        && nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).is_ok()
}

/// The outcome of a multi-worker run.
#[derive(Debug, Clone, PartialEq)]
pub struct Throughput {
    /// Workers (threads or processes).
    pub workers: usize,
    /// Operations per worker.
    pub ops: Vec<u64>,
    /// Busy time per worker.
    pub busy: Vec<Duration>,
    /// Wall time of all rounds (without the sidecar's work between them).
    pub wall: Duration,
}

impl Throughput {
    /// Sum over workers of ops / busy time, in operations per second.
    pub fn per_sec(&self) -> f64 {
        self.ops
            .iter()
            .zip(&self.busy)
            .map(|(o, b)| *o as f64 / b.as_secs_f64().max(1e-9))
            .sum()
    }

    /// All operations over the rounds' wall time, in operations per second.
    pub fn wall_per_sec(&self) -> f64 {
        self.ops.iter().sum::<u64>() as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// Total operations.
    pub fn total_ops(&self) -> u64 {
        self.ops.iter().sum()
    }
}

impl std::fmt::Display for Throughput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} worker(s): {:.2} M ops/s (wall-clock {:.2} M ops/s; {} ops)",
            self.workers,
            self.per_sec() / 1e6,
            self.wall_per_sec() / 1e6,
            self.total_ops()
        )
    }
}

/// Runs `threads` threads for `rounds` rounds of `round_ops` operations. `make(i)` builds
/// thread i's operation on that thread (and may prime it); `serve` runs between rounds.
pub fn threads<M, F, S>(
    threads: usize,
    rounds: u32,
    round_ops: u64,
    make: M,
    serve: S,
) -> Throughput
where
    M: Fn(usize) -> F + Sync,
    F: FnMut(),
    S: FnMut() + Send,
{
    let start = Barrier::new(threads + 1);
    let end = Barrier::new(threads + 1);
    let serve = Mutex::new(serve);
    let mut wall = Duration::ZERO;
    let (ops, busy) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let (start, end, make) = (&start, &end, &make);
                s.spawn(move || {
                    pin_to(i);
                    let mut op = make(i);
                    start.wait(); // built
                    let mut busy = Duration::ZERO;
                    for _ in 0..rounds {
                        start.wait();
                        let t0 = Instant::now();
                        for _ in 0..round_ops {
                            op();
                        }
                        busy += t0.elapsed();
                        end.wait();
                    }
                    busy
                })
            })
            .collect();
        start.wait();
        for _ in 0..rounds {
            let t0 = Instant::now();
            start.wait();
            end.wait();
            wall += t0.elapsed();
            (serve.lock().unwrap_or_else(|e| e.into_inner()))();
        }
        let busy: Vec<Duration> = handles
            .into_iter()
            .map(|h| h.join().unwrap_or(Duration::MAX))
            .collect();
        (vec![u64::from(rounds) * round_ops; threads], busy)
    });
    Throughput {
        workers: threads,
        ops,
        busy,
        wall,
    }
}

/// Why a process run failed.
#[derive(Debug, thiserror::Error)]
pub enum ProcessRunError {
    /// The bench binary could not be started again.
    #[error("cannot start a child bench process: {0}")]
    Spawn(#[source] std::io::Error),
    /// A child did not follow the protocol (it crashed, or printed something else).
    #[error("child bench process {index} misbehaved: {what}")]
    Child {
        /// Which child.
        index: usize,
        /// What it did.
        what: String,
    },
}

/// Runs `processes` copies of this binary in role `role` for `rounds` rounds of
/// `round_ops` operations; `env` goes to every child; `serve` runs while the children
/// start up and between rounds.
pub fn processes(
    processes: usize,
    rounds: u32,
    round_ops: u64,
    role: &str,
    env: &[(&str, String)],
    serve: &mut dyn FnMut(),
) -> Result<Throughput, ProcessRunError> {
    let exe = std::env::current_exe().map_err(ProcessRunError::Spawn)?;
    let mut children: Vec<Child> = Vec::new();
    let (tx, rx) = mpsc::channel::<(usize, String)>();
    let mut result = Ok(());
    for index in 0..processes {
        let mut cmd = Command::new(&exe);
        cmd.env(CHILD_ROLE_VAR, role)
            .env(CHILD_ROUND_OPS_VAR, round_ops.to_string())
            .env(CHILD_CPU_VAR, index.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        match cmd.spawn() {
            Ok(mut child) => {
                if let Some(out) = child.stdout.take() {
                    let tx = tx.clone();
                    std::thread::spawn(move || {
                        for line in BufReader::new(out).lines() {
                            let Ok(line) = line else { break };
                            if tx.send((index, line)).is_err() {
                                break;
                            }
                        }
                        let _ = tx.send((index, "eof".into()));
                    });
                }
                children.push(child);
            }
            Err(e) => {
                result = Err(ProcessRunError::Spawn(e));
                break;
            }
        }
    }
    let outcome = result.and_then(|()| drive(&mut children, &rx, rounds, round_ops, serve));
    for c in &mut children {
        if let Some(stdin) = c.stdin.as_mut() {
            let _ = stdin.write_all(b"exit\n");
        }
        drop(c.stdin.take());
    }
    for c in &mut children {
        // A child that misbehaved may still run; a good one has exited at `exit`.
        if outcome.is_err() {
            let _ = c.kill();
        }
        let _ = c.wait();
    }
    outcome
}

fn drive(
    children: &mut [Child],
    rx: &mpsc::Receiver<(usize, String)>,
    rounds: u32,
    round_ops: u64,
    serve: &mut dyn FnMut(),
) -> Result<Throughput, ProcessRunError> {
    let n = children.len();
    let bad = |index: usize, what: String| ProcessRunError::Child { index, what };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut ready = 0;
    while ready < n {
        if Instant::now() > deadline {
            return Err(bad(0, "not ready within 60 s".into()));
        }
        match rx.recv_timeout(Duration::from_millis(1)) {
            Ok((_, line)) if line == "ready" => ready += 1,
            Ok((i, line)) => return Err(bad(i, format!("expected `ready`, got {line:?}"))),
            Err(mpsc::RecvTimeoutError::Timeout) => serve(),
            Err(mpsc::RecvTimeoutError::Disconnected) => return Err(bad(0, "gone".into())),
        }
    }
    let mut busy = vec![Duration::ZERO; n];
    let mut wall = Duration::ZERO;
    for _ in 0..rounds {
        let t0 = Instant::now();
        for (i, c) in children.iter_mut().enumerate() {
            let stdin = c.stdin.as_mut().ok_or_else(|| bad(i, "no stdin".into()))?;
            stdin
                .write_all(b"go\n")
                .and_then(|()| stdin.flush())
                .map_err(|e| bad(i, e.to_string()))?;
        }
        for _ in 0..n {
            let (i, line) = rx
                .recv_timeout(Duration::from_secs(60))
                .map_err(|e| bad(0, e.to_string()))?;
            match line.strip_prefix("done ").map(str::parse::<u64>) {
                Some(Ok(ns)) => busy[i] += Duration::from_nanos(ns),
                _ => return Err(bad(i, format!("expected `done NS`, got {line:?}"))),
            }
        }
        wall += t0.elapsed();
        serve();
    }
    Ok(Throughput {
        workers: n,
        ops: vec![u64::from(rounds) * round_ops; n],
        busy,
        wall,
    })
}

/// The child side: call from `main` when [`CHILD_ROLE_VAR`] is set, after building (and
/// priming) `op`. Prints `ready`, then runs a round per `go`.
pub fn child_rounds<F: FnMut()>(mut op: F) -> std::io::Result<()> {
    if let Some(cpu) = std::env::var(CHILD_CPU_VAR)
        .ok()
        .and_then(|v| v.parse().ok())
    {
        pin_to(cpu);
    }
    let round_ops: u64 = std::env::var(CHILD_ROUND_OPS_VAR)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16_384);
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")?;
    out.flush()?;
    for line in std::io::stdin().lock().lines() {
        if line?.trim() != "go" {
            break;
        }
        let t0 = Instant::now();
        for _ in 0..round_ops {
            op();
        }
        writeln!(out, "done {}", t0.elapsed().as_nanos())?;
        out.flush()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn threads_run_every_round_and_serve_between() {
        let counted = AtomicU64::new(0);
        let served = AtomicU64::new(0);
        let t = threads(
            2,
            5,
            100,
            |_| {
                || {
                    counted.fetch_add(1, Ordering::Relaxed);
                }
            },
            || {
                served.fetch_add(1, Ordering::Relaxed);
            },
        );
        assert_eq!(t.workers, 2);
        assert_eq!(t.total_ops(), 1_000);
        assert_eq!(counted.load(Ordering::Relaxed), 1_000);
        assert_eq!(served.load(Ordering::Relaxed), 5);
        assert!(t.per_sec() > 0.0 && t.wall_per_sec() > 0.0);
    }
}
