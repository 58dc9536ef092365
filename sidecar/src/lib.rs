//! # tollgate-sidecar
//!
//! The per-pod sidecar of Tollgate. It owns the pod's shared-memory region (created, sized and
//! every page touched at start, so a full tmpfs fails at start instead of with SIGBUS later),
//! holds one session with the authority, keeps a pool per limit refilled from authority
//! leases, carves lane allowances out of every pool a lane is subject to, drains the usage
//! rings into signed, sequence-numbered batches, reclaims the holds of dead agent processes,
//! and serves `/healthz`, `/readyz` and `/metrics`.
//!
//! ## The lease and refill rule
//!
//! See [`lease`]: a pool is refilled when its local budget (pool plus lane allowances) plus
//! what is already demanded falls below `low_water = max(min_low_water, 2 × burn × refill_lead)`,
//! up to `target = clamp(max(2 × low_water, burn × lease_horizon), min_lease, max_local)`, with
//! `burn` the pool's burn over the last ten seconds ([`burn`]). Lanes are topped up to
//! `lane_burn × lane_horizon` (bounded) when below half of it, paid by every limit at once and
//! never taking a pool below the lane's tier floor; idle lanes give their allowance back; a
//! lowered cap takes the excess back from the pool first, then the largest lanes.
//!
//! ## Degraded mode and its bound
//!
//! See [`degraded`]: with the authority unreachable the sidecar serves from its leases and then
//! fails closed, unless `--emergency-allowance` is set; then, per limit and per outage,
//! `spent while disconnected ≤ local budget at disconnection + emergency allowance`.
//!
//! ## Restart behaviour
//!
//! Everything the sidecar must not lose lives in the region's folder (tmpfs), not in its
//! memory: the region itself (agents keep reserving from their allowances while the sidecar
//! is down), the signing key, and the [`outbox`] of signed batches not yet acknowledged. A
//! restarted sidecar re-attaches to the region, replays the outbox in sequence order and goes
//! on draining; a usage record leaves a ring only after its batch is in the outbox, and the
//! authority posts each (sidecar, sequence) once, so nothing is lost or doubled.
#![forbid(unsafe_code)]

pub mod backoff;
pub mod batcher;
pub mod burn;
pub mod cli;
pub mod convert;
pub mod core;
pub mod degraded;
pub mod http;
pub mod key;
pub mod lease;
pub mod leasebook;
pub mod logging;
pub mod metrics;
pub mod outbox;
pub mod owner;
pub mod reconcile;
pub mod run;

pub mod session;
pub mod state;
