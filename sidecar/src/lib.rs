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
//! See [`degraded`]: with the authority unreachable the sidecar serves from its leases until
//! they expire and then fails closed, unless `--emergency-allowance` is set. Per limit and
//! per outage, `spent while disconnected ≤ local budget at disconnection (spent only until
//! its leases' expiry) + emergency allowance + the lane overrun allowance per lane`. At a
//! lease's expiry what lanes still hold of it is taken back (lanes are asked to flush their
//! agents' local credits), so after it a lane serves at most the one call that flushes.
//!
//! ## Usage: exactly once, even when detail is lost
//!
//! Every 50 ms (`core::DRAIN_EVERY`; the tick is 10 ms) the sidecar drains the lanes' rings (which also harvests their consumption into
//! the pools), seals the records into one sequence-numbered batch signed with its ed25519 key
//! ([`key`], [`batcher`]), writes it to the [`outbox`] in its state folder (`--state-dir`), and only then
//! sends it. A batch leaves the outbox when the authority acknowledges it as durable; the
//! authority posts each (sidecar, sequence) once, so replays double nothing. Per lane,
//! [`reconcile`] compares what was reported with the lane's `consumed + overrun` totals:
//! detail lost to a full ring, or drained by a sidecar that crashed before writing its batch,
//! is reported as one aggregate record with its exact amount, so no credit goes unreported.
//!
//! ## What is reported per lane, and the overrun allowance
//!
//! Any process that maps the region can write any word of it. So the sidecar keeps, in its
//! own memory and its private state file (never the region), what it gave each lane: topped
//! up, less what it revoked and reclaimed. Over a lane's life, what it reports for the lane
//! (records and aggregates, each counted at the larger of the agent's rating and the list
//! price of its tokens, since the authority re-rates by tokens) is at most that plus
//! `--lane-overrun-allowance` (`TOLLGATE_LANE_OVERRUN_ALLOWANCE`, credits, default
//! [`config::DEFAULT_LANE_OVERRUN_ALLOWANCE`]). Anything past it is not reported: it is counted
//! (`tollgate_sidecar_suspected_tampering_micro_credits_total`) and logged with the lane, and
//! the sidecar goes on. The allowance covers honest overruns (calls that cost more than they
//! reserved).
//!
//! ## Pools
//!
//! See [`owner`]: each tenant has its own share of the region's pools; a policy that does not
//! fit its tenant's share is refused whole (logged, counted, and `/readyz` says why) and the
//! previous one stays in force; a limit a policy deletes asks for no more leases, gives its
//! credits back, and its pool is freed once no lane is carved from it.
//!
//! ## Restart behaviour
//!
//! Everything the sidecar must not lose lives on disk, not in its memory: the region itself
//! (tmpfs; agents keep reserving from their allowances while the sidecar is down), and in its
//! private state folder the signing key (`sidecar.key`), the outbox of signed batches not yet
//! acknowledged, what was reported per lane (`reported.json` plus the cursors in each outbox
//! entry), the leases it holds and each lane's report bound (`sidecar-state.json`), which
//! pool serves which limit (`pools.json`) and each lane's owners (`lanes.json`). A restarted
//! sidecar re-attaches to the region (finishing or rolling back the update its predecessor
//! left in flight, see `tollgate-client`'s journal), registers with the leases it still
//! holds, replays the outbox in sequence order and goes on.
//! If its lease state is lost, the authority settles the missing leases at expiry (its
//! documented rule for leases that never come back) and no credit is created.
//! A damaged region (the Tollgate magic with a bad version, checksum or size) is replaced by
//! a new one; a file at `--region` that is not a region at all (another magic, or too small
//! to be one and not empty) is never overwritten: the sidecar refuses to start and names it
//! ([`owner::NotARegion`]).
//!
//! ## Leases and policy
//!
//! Consumption is attributed to leases oldest first ([`leasebook`]), as the authority does.
//! A lease is never spent past its expiry: what it still has is taken out of the pool and the
//! lanes (lanes asked to flush what their agents hold, taken as it comes back) and returned. A revocation (a lowered cap) shrinks the limit's local budget to the
//! new ceiling at once: uncarved credits first, then the largest lane allowances
//! ([`lease::shrink`]). A pushed policy reconfigures the pools and lane classes in the region
//! ([`owner`]); a pushed price book is published to the region for agents to rate with.
//! On SIGTERM or SIGINT the sidecar stops topping up, takes every allowance back, flushes
//! the last batches (up to five seconds for acknowledgements) and returns every unused lease.
//!
//! ## Endpoints and logs
//!
//! [`http`]: `/healthz` (the control loop ticks), `/readyz` (region ready and the session up
//! or leased budget held), `/metrics` ([`metrics`]: allowance, pool, burn, consumed, denials
//! by reason and tier, lease age, ring overflow, authority connectivity, outbox depth,
//! reclaims, emergency allowance drawn, registrations refused). Logs are `tracing`, text or
//! JSON ([`logging`]). A registration the authority refuses for good (`UNAUTHENTICATED`,
//! `PERMISSION_DENIED`: the token is unknown or does not cover `--tenants`) is logged as an
//! error naming the tenants, counted, and keeps `/readyz` not ready with the reason; refused
//! at the first registration, the sidecar exits non-zero with the authority's message.
//!
//! ## Module map
//!
//! [`cli`] (flags) and [`config`] (the resolved [`config::Config`]), [`run`] (runtime, signals, [`run::spawn`] for
//! in-process use), [`core`] (the control loop), [`session`] (transport to the authority,
//! [`backoff`]), [`owner`] (the region), [`lease`] / [`leasebook`] / [`burn`] / [`degraded`]
//! (decisions), [`batcher`] / [`outbox`] / [`reconcile`] / [`state`] / [`key`] (durability),
//! [`convert`] (wire types), [`http`] / [`metrics`] / [`logging`].
//!
//! ## Binaries
//!
//! The sidecar runs as `tollgate sidecar` (the all-in-one binary) or as `tollgate-sidecar`
//! (`src/bin/tollgate-sidecar.rs`, the same flags and environment), which links nothing but
//! this crate's dependencies: about half the resident code, so the sidecar stays within its
//! memory target (`benches/results/rss-2026-11-27.md`). The injector runs `tollgate-sidecar`.
#![forbid(unsafe_code)]

pub mod backoff;
pub mod batcher;
pub mod burn;
pub mod cli;
pub mod config;
pub mod convert;
pub mod core;
pub mod degraded;
pub mod hint;
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
