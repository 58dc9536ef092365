//! Throughput with 1..n threads or processes, each running its own operation loop.
//!
//! Every worker builds its own state first (its lane, its handle), then all start together and
//! run for a fixed wall time, checking a stop flag once per chunk of operations so the check
//! costs nothing measurable. Throughput is the total count over the measured time.
//!
//! Processes: the bench binary re-executes itself with [`CHILD_ROLE_VAR`] set; a child builds
//! its state, prints `ready`, waits for `go` on stdin, runs for the given time and prints
//! `ops <count> <elapsed_ns>`. The parent starts them all at once after every `ready`.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Environment variable that selects a child role in a re-executed bench binary.
pub const CHILD_ROLE_VAR: &str = "TOLLGATE_BENCH_CHILD";
/// Environment variable with the child's run time in milliseconds.
pub const CHILD_MILLIS_VAR: &str = "TOLLGATE_BENCH_CHILD_MILLIS";

/// Operations between two looks at the stop flag or the clock.
const CHUNK: u64 = 1024;

/// Operations per second, and how many operations that was.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Throughput {
    /// Workers (threads or processes).
    pub workers: usize,
    /// Operations completed by all workers.
    pub ops: u64,
    /// Wall time of the measured run.
    pub elapsed: Duration,
}

impl Throughput {
    /// Operations per second.
    pub fn per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl std::fmt::Display for Throughput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} worker(s): {:.2} M ops/s ({} ops in {:.2} s)",
            self.workers,
            self.per_sec() / 1e6,
            self.ops,
            self.elapsed.as_secs_f64()
        )
    }
}

/// Runs `threads` threads for `run`: `make(i)` builds thread i's operation on that thread.
pub fn threads<M, F>(threads: usize, run: Duration, make: M) -> Throughput
where
    M: Fn(usize) -> F + Sync,
    F: FnMut(),
{
    let stop = AtomicBool::new(false);
    let ready = Barrier::new(threads + 1);
    let go = Barrier::new(threads + 1);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let (stop, ready, go, make) = (&stop, &ready, &go, &make);
                s.spawn(move || {
                    let mut op = make(i);
                    ready.wait();
                    go.wait();
                    let mut ops = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..CHUNK {
                            op();
                        }
                        ops += CHUNK;
                    }
                    ops
                })
            })
            .collect();
        ready.wait();
        let t0 = Instant::now();
        go.wait();
        std::thread::sleep(run);
        stop.store(true, Ordering::Relaxed);
        // A worker finishes its current chunk after the flag: count those ops in the time too.
        let ops = handles
            .into_iter()
            .map(|h| h.join().unwrap_or(0))
            .sum::<u64>();
        Throughput {
            workers: threads,
            ops,
            elapsed: t0.elapsed(),
        }
    })
}

/// Why a process run failed.
#[derive(Debug, thiserror::Error)]
pub enum ProcessRunError {
    /// The bench binary could not be found or started again.
    #[error("cannot start child bench process: {0}")]
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

/// Runs `processes` copies of this binary in role `role` for `run` each. `env` is passed to
/// every child (for example the region path).
pub fn processes(
    processes: usize,
    run: Duration,
    role: &str,
    env: &[(&str, String)],
) -> Result<Throughput, ProcessRunError> {
    let exe = std::env::current_exe().map_err(ProcessRunError::Spawn)?;
    let mut children: Vec<Child> = Vec::new();
    for _ in 0..processes {
        let mut cmd = Command::new(&exe);
        cmd.env(CHILD_ROLE_VAR, role)
            .env(CHILD_MILLIS_VAR, run.as_millis().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        children.push(cmd.spawn().map_err(ProcessRunError::Spawn)?);
    }
    let result = drive(&mut children, run);
    for c in &mut children {
        // A child that misbehaved may still run; the others have exited already.
        let _ = c.kill();
        let _ = c.wait();
    }
    result
}

fn drive(children: &mut [Child], run: Duration) -> Result<Throughput, ProcessRunError> {
    let bad = |index: usize, what: String| ProcessRunError::Child { index, what };
    let mut readers = Vec::new();
    for (i, c) in children.iter_mut().enumerate() {
        let out = c.stdout.take().ok_or_else(|| bad(i, "no stdout".into()))?;
        let mut r = BufReader::new(out);
        let mut line = String::new();
        r.read_line(&mut line).map_err(|e| bad(i, e.to_string()))?;
        if line.trim() != "ready" {
            return Err(bad(i, format!("expected `ready`, got {line:?}")));
        }
        readers.push(r);
    }
    let t0 = Instant::now();
    for (i, c) in children.iter_mut().enumerate() {
        let stdin = c.stdin.as_mut().ok_or_else(|| bad(i, "no stdin".into()))?;
        stdin
            .write_all(b"go\n")
            .and_then(|()| stdin.flush())
            .map_err(|e| bad(i, e.to_string()))?;
    }
    let mut ops = 0u64;
    for (i, r) in readers.iter_mut().enumerate() {
        let mut line = String::new();
        r.read_line(&mut line).map_err(|e| bad(i, e.to_string()))?;
        let mut parts = line.split_whitespace();
        match (parts.next(), parts.next().map(str::parse::<u64>)) {
            (Some("ops"), Some(Ok(n))) => ops += n,
            _ => return Err(bad(i, format!("expected `ops N NS`, got {line:?}"))),
        }
    }
    let elapsed = t0.elapsed().max(run);
    Ok(Throughput {
        workers: children.len(),
        ops,
        elapsed,
    })
}

/// The child side: call from `main` when [`CHILD_ROLE_VAR`] is set, after building `op`.
/// Prints `ready`, waits for `go`, runs `op` for the time in [`CHILD_MILLIS_VAR`], prints the
/// count.
pub fn child_loop<F: FnMut()>(mut op: F) -> std::io::Result<()> {
    let millis: u64 = std::env::var(CHILD_MILLIS_VAR)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let run = Duration::from_millis(millis);
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")?;
    out.flush()?;
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let t0 = Instant::now();
    let mut ops = 0u64;
    while t0.elapsed() < run {
        for _ in 0..CHUNK {
            op();
        }
        ops += CHUNK;
    }
    writeln!(out, "ops {ops} {}", t0.elapsed().as_nanos())?;
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn threads_count_every_op() {
        let counted = AtomicU64::new(0);
        let t = threads(2, Duration::from_millis(50), |_| {
            || {
                counted.fetch_add(1, Ordering::Relaxed);
            }
        });
        assert_eq!(t.workers, 2);
        assert_eq!(t.ops, counted.load(Ordering::Relaxed));
        assert!(t.ops >= 2 * CHUNK);
        assert!(t.per_sec() > 0.0);
    }
}
