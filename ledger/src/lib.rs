//! # tollgate-ledger: the credit ledger, its store and the signed audit chain
//!
//! The fleet-wide truth of Tollgate's central authority.
//!
//! ## Invariants
//! 1. **Conservation.** For every grant, and so for every wallet:
//!    `granted = available + held + consumed + expired`. Credits enter only by a grant,
//!    a reset's refill or an adjustment's credit, and leave `available` only to `held`,
//!    `consumed` or `expired`. Nothing is ever negative (amounts are `u64` and no move
//!    takes more than is there).
//! 2. **Deterministic deduction.** Holds and usage take from usable grants in the
//!    tenant's [`DeductionOrder`] (default: priority, then earliest expiry, then oldest),
//!    with the grant id as the final tie-break. Each [`Posting`] names the source that
//!    paid and its balance before and after.
//! 3. **The hard cap is never exceeded.** A tenant's plan ([`Plan`], from core) bills
//!    usage that grants do not cover; its hard cap bounds the month's plan charge.
//!    Usage is taken from the plan only within the room the cap leaves
//!    ([`engine::WalletTx::plan_room`]).
//! 4. **Durable, exactly-once posting.** Each operation is one store transaction that
//!    locks the tenant's wallet row first; `Ok` means committed (SQLite: WAL,
//!    `synchronous=FULL`). A usage batch is idempotent by (sidecar id, sequence): a
//!    re-sent batch posts nothing and returns the first outcome (see Retention).
//! 5. **Every movement is audited.** Grant, hold, post, void, expire, reset, adjustment,
//!    usage posting and alert each append one signed record to the tenant's hash chain in
//!    the same transaction ([`audit`]).
//! 6. **Attribution is kept.** Every posting names the agent (its name and instance), the
//!    model, the feature and the task it paid for, with its calls, tokens, outcomes,
//!    Agentic Work Units and request units; so does the posting's audit record. A task's
//!    counters ([`task`]) move with its postings in the same transaction, and a task
//!    counts one work unit, once.
//!
//! ## What a record is charged
//! The tenant's book rates it; a record of N calls is N requests under a per-request
//! price; records the book cannot rate, pre-rated records and sidecars' aggregates have
//! their documented rules in [`rating`] (never simply the client's word for an unknown
//! model). A book that overflows on ordinary usage is refused at
//! [`Ledger::set_price_book`]. Calls that cost nothing still get a posting
//! ([`Funding::Free`]), so statements count every call.
//!
//! ## Estimates
//! [`Ledger::estimate`] answers "how much will this cost?" with the same code: a
//! described workload is charged by [`rating::charge_record`] and posted day by day on an
//! in-memory copy of the tenant's wallet that is never written ([`estimate`]).
//!
//! ## The overrun rule
//! Agents spend from leases (holds), sized so the actual cost normally fits. An overrun
//! (a call that cost more than reserved) is still **posted, counted and reported**:
//! usage beyond the sender's holds is taken from grants, then from the plan. What no
//! grant can pay and the plan's cap leaves no room for is recorded as
//! [`Funding::Overrun`]: a posting row, a figure in the batch outcome, the balance and
//! the audit record, but **never billed and never charged to the cap**. So the cap is
//! never exceeded, and what gets past it is bounded by the overruns themselves: at most
//! the in-flight calls' excess over their reservations, never a new reservation.
//!
//! Lowering a cap below the month's charge stops plan-funded usage at once; it does not
//! un-bill what was already charged. Plan-funded credits are recorded at list price
//! (`plan_consumed`); what the tenant pays for them is `Plan::bill` of the month's
//! `PeriodUsage` (included credits and requests first, then overage, the floor, the cap).
//!
//! ## Statements and money
//! A [`Statement`] lists spend by agent, instance, model, feature, task and source;
//! with a plan, each calendar month's bill as the plan bills it (seats, allowances,
//! overage, floor, cap: [`MonthBill`]), recomputed from the month's plan-funded postings.
//! A tenant's credit pack ([`TenantConfig::credit_pack`]) prices its credits in its
//! currency; the authority shows money beside credits with it.
//!
//! ## Throughput
//! A batch's records are re-rated one by one (core's integer rating, the model resolved
//! once per group) and aggregated per (tenant, agent, instance, model, feature, task); the
//! names are shared strings per batch ([`Name`]), so grouping copies none; posting then
//! writes a handful of rows per tenant (postings per paying source, one batch row, one
//! audit record) with multi-row statements, and [`Ledger::post_batches`] commits several
//! batches in one durable transaction. `benches/ingest.rs` measures it; results are in
//! `benches/results/`.
//!
//! ## Retention
//! Postings and audit records are kept (statements and the chain need them); burn-rate
//! buckets are pruned after two days by [`Ledger::sweep`]. Batch rows are pruned by the
//! sweep after [`Ledger::with_batch_retention`] (the authority's default: 30 days); each
//! sidecar keeps a watermark, the highest sequence pruned, written in the same
//! transaction, so a re-sent pruned key is still a duplicate (its outcome's figures are
//! gone). Archiving old postings is not implemented yet.
//!
//! ## Money and time
//! Credits are integer micro-credits (`tollgate_core::Credits`); time is unix seconds
//! read once per operation from an injectable [`Clock`] ([`ManualClock`] in tests).
//! Periods are calendar-aligned in UTC: plan periods and monthly resets on the 1st.
//!
//! ## Map
//! - [`ledger`]: the [`Ledger`] service (the operations the authority calls).
//! - [`engine`]: the rules, as pure transitions of one locked wallet.
//! - [`grant`], [`hold`], [`usage`], [`policy`], [`report`], [`task`]: the types.
//! - [`rating`]: re-rating and aggregating batches with core's price book.
//! - [`audit`]: the chain, its export and the offline [`audit::verify`].
//! - [`store`]: the [`Store`] trait; [`store::sqlite`] the embedded implementation.
//! - [`clock`]: [`Clock`], [`SystemClock`], [`ManualClock`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod audit;
pub mod clock;
pub mod engine;
pub mod error;
pub mod estimate;
pub mod grant;
pub mod hold;
pub mod ids;
pub mod ledger;
pub mod policy;
pub mod rating;
pub mod report;
pub mod store;
pub mod task;
pub mod usage;

pub use audit::{
    AuditEvent, AuditRecord, AuditSigner, ExportLine, VerifyError, VerifyFailure, VerifyReport,
    parse_public_key, verify,
};
pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use error::{LedgerError, StoreError};
pub use grant::{DeductionKey, DeductionOrder, Grant, GrantKind, GrantSpec, ResetPeriod};
pub use hold::{Funding, Hold, HoldPart, HoldRequest, HoldStatus};
pub use ids::{BatchKey, GrantId, HoldId, InvalidTenantId, TenantId, WalletId};
pub use ledger::{Ledger, SweepReport};
pub use policy::{AlertCondition, AlertRule, Plan, TenantConfig};
pub use report::{AlertEvent, Balance, MonthBill, Statement, StatementRow};
pub use store::{SqliteStore, Store, StoreTx};
pub use task::{TaskClosed, TaskOpened, TaskRow, TaskTerms};
pub use usage::{
    BatchOutcome, Name, OverrunAllowance, Posting, TenantPosting, UsageBatch, UsageRecord,
};
