//! # tollgate-authority: the central authority of Tollgate
//!
//! **Invariant.** Every credit a sidecar may spend was leased to it, backed by a ledger
//! hold; every usage batch acknowledged is committed in the store and posted exactly once;
//! every credit movement is in the tenant's signed audit chain.
//!
//! The authority serves two gRPC services (`tollgate.v1`, see `tollgate-proto`):
//! - the **sidecar service**: `Register`, then one bidirectional `Session` per sidecar
//!   carrying demand, signed usage batches and lease returns up, and lease grants,
//!   revocations, policy and price-book pushes and durable acknowledgements down;
//! - the **admin service**: tenants, grants, credit packs, price books, plans (with
//!   seats), quotas, alert rules, balance and statements (by agent, task, instance, model,
//!   feature and source, in credits and the tenant's currency, with AWUs, outcomes,
//!   overruns and the plan's bill), tasks, reported denials, audit export and
//!   verification, estimates (a workload rated and run through the wallet in memory) and
//!   what-ifs (a past period's usage under another price book), both in
//!   `tollgate_ledger::estimate`. Every admin RPC is also served as HTTP/JSON
//!   (`POST /v1/admin/<Method>` on the HTTP port, OpenAPI 3.1 at `/openapi.json`).
//!
//! The money rules live in `tollgate-ledger`; this crate adds the network, the
//! credentials, the lease allocation ([`lease`]), the policy push ([`sessions`]), the alert
//! webhooks ([`webhook`]), health, metrics, the HTTP/JSON admin API with its OpenAPI
//! document and the finance dashboard ([`http`], [`http_api`], [`ui`], [`metrics`]) and
//! the CLI ([`cli`]).
//!
//! **What a sidecar is trusted with.** A sidecar id belongs to the credential that first
//! registered it; a batch key re-sent with other content is refused; held leases reported
//! in `Register` are believed only as the store recorded them granted; and per batch and
//! tenant, usage past the sender's own holds is charged only up to the overrun allowance
//! (`[leases] overrun_allowance_micro` + `overrun_allowance_ppm` of its holds, default 1
//! credit + 10%): the rest is suspected tampering, counted
//! (`tollgate_authority_suspected_tampering_total`), logged and in the batch's audit
//! record, and not charged. So what code in a pod can make its tenants pay is bounded by
//! the pod's leases plus that allowance per batch.
//!
//! Crate map: [`config`] (TOML file), [`auth`] (tokens to principals), [`convert`] (wire
//! validation), [`lease`] (the lease table and fair share), [`sessions`], [`policy_store`]
//! (quotas, floors, webhook URLs), [`state`] (what everything shares), [`policy_push`]
//! (policy views and pushes), [`leasing`] (granting, closing and settling leases),
//! [`sidecar_svc`], [`admin_svc`], [`tasks`] (background loops), [`server`] (wiring and
//! `start`; it only starts things), [`keys`], [`shadow`] (what shadow-mode limits would
//! have done), [`reports`] (balances and statements on the wire), [`denials`] (reported
//! denials, for dashboards), [`task_budget`] (task registrations, and closing a task's
//! leases when posted usage closes it).
//!
//! Imports point one way: `server` -> services and `tasks` -> `leasing` -> `policy_push`
//! -> `state` -> the leaf modules (`metrics`, `lease`, `sessions`, `policy_store`, ...).
#![forbid(unsafe_code)]

pub mod admin_svc;
pub mod auth;
pub mod cli;
pub mod config;
pub mod convert;
pub mod denials;
pub mod http;
pub mod http_api;
pub mod ingest;
pub mod keylock;
pub mod keys;
pub mod lease;
pub mod leasing;
pub mod metrics;
pub mod policy_push;
pub mod policy_store;
pub mod reports;
pub mod server;
pub mod sessions;
pub mod shadow;
pub mod sidecar_svc;
pub mod state;
pub mod task_budget;
pub mod tasks;
pub mod ui;
pub mod webhook;
