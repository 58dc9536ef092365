//! Percentiles of a nanosecond-scale operation, measured with `Instant` alone.
//!
//! One `Instant::now()` (a vDSO `clock_gettime` on the TSC clocksource) costs about as much as
//! the operation under test, so a single method cannot give both an accurate median and honest
//! tails. Two are used and both are reported:
//!
//! - **per-op**: `now(); op(); now()` around every operation, minus the clock's own cost (the
//!   median of empty `now(); now()` pairs, calibrated just before). A slow operation (a cache
//!   miss, a preemption) shows as itself, so p99 and p99.9 are honest; each sample carries the
//!   clock's jitter (a few ns), so the median is only good to a few ns.
//! - **batched**: `now(); op() x N; now()` recorded as batch time / N. The clock cost is spread
//!   over N operations, so the median is accurate to a fraction of a ns, but one slow operation
//!   is diluted N-fold, so the tails are optimistic.
//!
//! Samples are recorded in picoseconds so sub-nanosecond differences survive the integer
//! histogram. No `rdtsc`: `Instant` is portable and, on this machine, reads the same TSC.

use std::fmt;
use std::time::Instant;

use hdrhistogram::Histogram;

/// Lowest and highest trackable sample, in picoseconds (1 ps .. 100 s).
const LOW_PS: u64 = 1;
const HIGH_PS: u64 = 100_000_000_000_000;

/// A latency distribution summarised for the report, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percentiles {
    /// Number of samples (operations for per-op, batches for batched).
    pub samples: u64,
    /// Mean of the samples.
    pub mean_ns: f64,
    /// Median.
    pub p50_ns: f64,
    /// 99th percentile.
    pub p99_ns: f64,
    /// 99.9th percentile.
    pub p999_ns: f64,
    /// Largest sample.
    pub max_ns: f64,
}

impl Percentiles {
    /// Summarises a histogram of picosecond samples.
    pub fn from_histogram_ps(h: &Histogram<u64>) -> Self {
        let ns = |ps: u64| ps as f64 / 1000.0;
        Self {
            samples: h.len(),
            mean_ns: h.mean() / 1000.0,
            p50_ns: ns(h.value_at_quantile(0.50)),
            p99_ns: ns(h.value_at_quantile(0.99)),
            p999_ns: ns(h.value_at_quantile(0.999)),
            max_ns: ns(h.max()),
        }
    }
}

impl fmt::Display for Percentiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "p50 {} p99 {} p99.9 {} max {} mean {} (n={})",
            fmt_ns(self.p50_ns),
            fmt_ns(self.p99_ns),
            fmt_ns(self.p999_ns),
            fmt_ns(self.max_ns),
            fmt_ns(self.mean_ns),
            self.samples
        )
    }
}

/// Formats a duration given in ns with a unit that keeps 3-4 significant digits.
pub fn fmt_ns(ns: f64) -> String {
    if ns < 1_000.0 {
        format!("{ns:.1} ns")
    } else if ns < 1_000_000.0 {
        format!("{:.2} us", ns / 1_000.0)
    } else {
        format!("{:.2} ms", ns / 1_000_000.0)
    }
}

fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts; a failure here is a programming error
    // in this harness, not bad input, and there is nothing to recover.
    Histogram::new_with_bounds(LOW_PS, HIGH_PS, 3).expect("valid histogram bounds")
}

/// The cost of one `Instant::now()` pair, in picoseconds: the median over `pairs` empty pairs.
pub fn clock_overhead_ps(pairs: u64) -> u64 {
    let mut h = new_histogram();
    for _ in 0..pairs {
        let t0 = Instant::now();
        let t1 = Instant::now();
        h.saturating_record(elapsed_ps(t0, t1).max(LOW_PS));
    }
    h.value_at_quantile(0.5)
}

fn elapsed_ps(t0: Instant, t1: Instant) -> u64 {
    u64::try_from(t1.duration_since(t0).as_nanos())
        .unwrap_or(u64::MAX / 1000)
        .saturating_mul(1000)
}

/// Times every operation on its own (see the module docs): honest tails, a few ns of jitter.
///
/// `warmup` operations run first and are not recorded. `serve` runs (untimed) after every
/// `serve_every` operations: the sidecar's share of the work, which is not on the agent's
/// path.
pub fn per_op<F: FnMut(), S: FnMut()>(
    warmup: u64,
    ops: u64,
    serve_every: u64,
    mut op: F,
    mut serve: S,
) -> Percentiles {
    let serve_every = serve_every.max(1);
    for i in 0..warmup {
        op();
        if i % serve_every == serve_every - 1 {
            serve();
        }
    }
    serve();
    let overhead = clock_overhead_ps(100_000);
    let mut h = new_histogram();
    for i in 0..ops {
        let t0 = Instant::now();
        op();
        let t1 = Instant::now();
        h.saturating_record(elapsed_ps(t0, t1).saturating_sub(overhead).max(LOW_PS));
        if i % serve_every == serve_every - 1 {
            serve();
        }
    }
    Percentiles::from_histogram_ps(&h)
}

/// Times batches of `batch` operations (see the module docs): accurate median, diluted tails.
/// `serve` runs (untimed) after every `serve_every` operations, rounded up to whole batches.
pub fn batched<F: FnMut(), S: FnMut()>(
    warmup: u64,
    batches: u64,
    batch: u32,
    serve_every: u64,
    mut op: F,
    mut serve: S,
) -> Percentiles {
    let serve_every = serve_every.max(1);
    for i in 0..warmup {
        op();
        if i % serve_every == serve_every - 1 {
            serve();
        }
    }
    serve();
    let batch = batch.max(1);
    let batches_per_serve = (serve_every / u64::from(batch)).max(1);
    let overhead = clock_overhead_ps(100_000);
    let mut h = new_histogram();
    for b in 0..batches {
        let t0 = Instant::now();
        for _ in 0..batch {
            op();
        }
        let t1 = Instant::now();
        let per_op = elapsed_ps(t0, t1).saturating_sub(overhead) / u64::from(batch);
        h.saturating_record(per_op.max(LOW_PS));
        if b % batches_per_serve == batches_per_serve - 1 {
            serve();
        }
    }
    Percentiles::from_histogram_ps(&h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_ordered_and_count_samples() {
        let mut x = 0u64;
        let mut served = 0;
        let p = per_op(
            10,
            1_000,
            100,
            || {
                x = std::hint::black_box(x.wrapping_add(1));
            },
            || served += 1,
        );
        assert_eq!(p.samples, 1_000);
        assert_eq!(served, 1 + 10, "once after warm-up, then every 100 ops");
        assert!(p.p50_ns <= p.p99_ns && p.p99_ns <= p.p999_ns && p.p999_ns <= p.max_ns);
    }

    #[test]
    fn batched_counts_batches() {
        let mut x = 0u64;
        let p = batched(
            10,
            200,
            16,
            1_000,
            || {
                x = std::hint::black_box(x.wrapping_add(1));
            },
            || {},
        );
        assert_eq!(p.samples, 200);
        assert!(p.p50_ns <= p.max_ns);
    }

    #[test]
    fn formats_with_units() {
        assert_eq!(fmt_ns(12.34), "12.3 ns");
        assert_eq!(fmt_ns(63_000.0), "63.00 us");
        assert_eq!(fmt_ns(2_500_000.0), "2.50 ms");
    }
}
