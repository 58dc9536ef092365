//! Benchmarks of Tollgate's shared-memory fast path, and what they are compared against.
//!
//! The figures that matter (the targets in BENCHMARKS.md): reserve + commit of a call under 4 limits, a task
//! budget and a tier, on one thread (p50 <= 25 ns, p99 <= 100 ns), its scaling to 2 threads
//! (>= 1.8x) and 2 processes, the shared-counter baseline (one CAS per limit,
//! `tollgate_client::baseline`), and a Redis Lua check-and-decrement measured in the same run
//! (the fast path must be >= 1000x faster at p50). The bench binary is
//! `benches/fastpath.rs`; this library holds its parts:
//!
//! - [`hdr`]: percentiles with an HDR histogram, timing with `Instant` only (method in its docs);
//! - [`tollgate`]: the region as the sidecar sets it up, and an agent's reserve + commit;
//! - [`redis_lua`]: the Redis peer;
//! - [`scaling`]: throughput with n threads or n re-executed processes, in rounds.
//!
//! Results and the method are recorded in `benches/results/FASTPATH.md`.

pub mod hdr;
pub mod redis_lua;
pub mod scaling;
pub mod tollgate;
