//! # tollgate-proto: the Tollgate gRPC protocol (package `tollgate.v1`)
//!
//! **Invariant.** Every credit a sidecar may spend was leased to it by the authority and is
//! backed by a ledger hold; every usage batch the authority acknowledges is durable and is
//! posted exactly once, whatever is retried or re-sent.
//!
//! The `.proto` files live in `proto/proto/tollgate/v1/` (`common.proto`, `sidecar.proto`,
//! `admin.proto`); they are compiled at build time by [protox] (pure Rust, no system
//! `protoc`) and tonic-prost-build. Everything generated is in [`v1`].
//!
//! ## Conventions
//! - Money: every field ending in `_micro` is a `u64` amount of micro-credits
//!   (1 credit = 1,000,000). No floats carry money.
//! - Time: `*_unix_ms` is milliseconds since the Unix epoch (UTC); `*_ms` is a duration.
//! - Authentication: metadata `authorization: Bearer <token>` ([`AUTHORIZATION`]). Sidecars
//!   also send [`SIDECAR_ID_HEADER`] on the session stream.
//! - Errors: `UNAUTHENTICATED` (missing or wrong token), `PERMISSION_DENIED` (a tenant outside
//!   the token's scope), `INVALID_ARGUMENT` (malformed request; the message names the field).
//!
//! ## Sidecar service ([`v1::sidecar_service_client::SidecarServiceClient`])
//! 1. **Register** (unary): sidecar id, tenants, ed25519 public key for batch signatures, the
//!    leases it still holds, the next batch seq. Reply: `durable_through_seq` (batches up to
//!    it are durable, drop them), policies and price books of its tenants, which held leases
//!    are honoured, the relearn grace window (a restarted authority grants nothing new until
//!    `relearn_until_unix_ms`), lease TTL and heartbeat interval.
//! 2. **Session** (bidirectional stream, one per sidecar; a new one replaces the old):
//!    - up: [`v1::DemandReport`] (per limit: recent burn, desired amount, held amount),
//!      [`v1::UsageBatch`] (sequence-numbered, signed), [`v1::LeaseReturn`], heartbeats;
//!    - down: [`v1::LeaseGrant`] (lease id, limit, amount, expiry), [`v1::LeaseRefusal`]
//!      (nothing of the limit is free: why, and when asking again may help),
//!      [`v1::Revocation`], [`v1::PolicyUpdate`], [`v1::PriceBookUpdate`],
//!      [`v1::BatchAck`], heartbeats.
//! 3. **Batches.** `seq` starts at 1 and goes up by one per batch. The authority sends a
//!    `BatchAck` only after its store committed the batch; a re-sent batch (same sidecar,
//!    same seq) is acknowledged with status `DUPLICATE` and posted once. A `REJECTED` batch
//!    (bad signature, tenant out of scope, malformed) is never posted: drop it and count it.
//!    Keep every batch until acknowledged and re-send the unacknowledged ones after a
//!    reconnect. Records name strings by index into the batch's `dictionary`
//!    (use [`BatchBuilder`]); the batch is signed over [`signing::batch_signing_bytes`]
//!    (a domain tag and the SHA-256 of the batch's canonical encoding).
//! 4. **Leases.** A lease is an increment of budget on one limit ([`v1::LimitKey`]) valid
//!    until `expires_unix_ms`. Both sides attribute consumption FIFO (oldest unexpired lease
//!    first). Never spend a lease after its expiry; ask for more (a `DemandReport`) well
//!    before it: a renewal is a new lease. Return unused amounts on shutdown or when told to
//!    by a `Revocation`. An unreturned lease is settled by the authority at expiry plus a
//!    settle grace: usage received is posted, the rest voided and counted as unreported.
//! 5. **Policy push.** A changed cap, quota or price book is pushed to every connected
//!    sidecar of the tenant at once. A lowered cap also sends a `Revocation` with the new
//!    `ceiling_micro` for the wallet limit: shrink the local budget to it, return the excess.
//!
//! ## Wire and core types
//! [`convert`] is the only translation between these messages and `tollgate-core`'s types
//! (price books, tiers, initiators, windows, limit kinds); the authority and the sidecar
//! both use it. Its errors are [`convert::ConvertError`]. The zero values:
//! - **An unspecified tier** (`TIER_UNSPECIFIED`) on a *call* (a usage record) is
//!   interactive, the highest tier, which no floor stops ([`convert::call_tier`]). Where a
//!   tier is a *selector* (a `SCOPE_TIER` limit key, a tier floor) it names no tier and is
//!   an error ([`convert::tier`]): a rule meant for one tier never silently binds another.
//! - `INITIATOR_UNSPECIFIED` is a human ([`convert::call_initiator`]).
//! - `WINDOW_NONE` is no window: only the tenant's wallet has none ([`convert::window`],
//!   [`convert::limit_kind`]).
//! - A model's `max_output_tokens` of 0 means the book's `default_max_output_tokens`.
//!
//! ## Admin service ([`v1::admin_service_client::AdminServiceClient`])
//! Tenants; wallets and grants; credit packs (the price of credits in the tenant's
//! currency) and buying them; price books; plans (included allowance, seats, overage price,
//! floor, hard cap); quota rules (per minute / hour / month, per tenant, agent by name or
//! tier, shadow mode); alert rules; balance with burn rate and projected depletion;
//! statements by agent, task, instance, model, feature and source with AWUs, outcomes,
//! overruns, money and the plan's bill; tasks; reported denials; audit export and
//! verification. Needs the admin token, except reads of a tenant's own balance,
//! statement, tasks, denials and audit export with a tenant-scoped token.
//!
//! Tasks: a sidecar registers a task its agents opened with `SessionUp.TaskOpen` (the
//! first registration's terms hold), then leases its budget as `LimitKey{scope: TASK}`
//! like any limit; once posted usage closes the task (completed, `max_calls`, budget) its
//! leases are revoked and demands are refused with `TASK_SPENT`.
//!
//! [protox]: https://docs.rs/protox
#![forbid(unsafe_code)]

/// Generated messages, clients and servers of package `tollgate.v1`.
#[allow(clippy::all, missing_docs)]
pub mod codec;

pub mod v1 {
    tonic::include_proto!("tollgate.v1");
}

/// The encoded `google.protobuf.FileDescriptorSet` of `tollgate.v1` (with the .proto
/// files' comments): for reflection, e.g. the authority's HTTP/JSON mapping and its
/// OpenAPI document.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/tollgate_descriptor.bin"));

pub mod batch;
pub mod convert;
pub mod limit;
pub mod signing;

pub use batch::BatchBuilder;

/// Metadata key carrying `Bearer <token>` on every call.
pub const AUTHORIZATION: &str = "authorization";
/// Metadata key carrying the sidecar id on the `Session` stream.
pub const SIDECAR_ID_HEADER: &str = "x-tollgate-sidecar-id";
/// Default authority gRPC port.
pub const DEFAULT_GRPC_PORT: u16 = 7070;
/// Default authority HTTP (health, metrics) port.
pub const DEFAULT_HTTP_PORT: u16 = 7071;
/// Micro-credits in one credit.
pub const MICRO_PER_CREDIT: u64 = 1_000_000;
