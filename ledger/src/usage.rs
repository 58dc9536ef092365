//! Usage: the records sidecars send, the batch that carries them, what posting a batch
//! did, and the posting rows it wrote.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tollgate_core::{Credits, Initiator, Tier};

use crate::clock::Timestamp;
use crate::hold::Funding;
use crate::ids::{BatchKey, HoldId, TenantId};

/// A name a record carries (agent, instance, model, feature, task): shared, so the
/// records of a batch point at one copy of each dictionary entry instead of each holding
/// its own.
pub type Name = Arc<str>;

/// One call's usage, as the sidecar reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRecord {
    /// Tenant billed.
    pub tenant: TenantId,
    /// The agent's name, as the agent set it ("" = unnamed): what statements and per-agent
    /// quotas group by.
    pub agent: Name,
    /// The instance detail the name does not give: `<sidecar>/<process>/lane<n>`.
    #[serde(default = "empty_name")]
    pub agent_instance: Name,
    /// Model name as in the price book.
    pub model: Name,
    /// Product feature the call served ("" = none).
    pub feature: Name,
    /// The task the call worked on ("" = none).
    #[serde(default = "empty_name")]
    pub task: Name,
    /// Priority tier.
    pub tier: Tier,
    /// Who started the call.
    pub initiator: Initiator,
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
    /// Outcomes reported (e.g. resolved tickets), for per-outcome prices.
    pub outcomes: u64,
    /// Version of the price book the client rated with.
    pub price_book_version: u64,
    /// What the client's rating said the call cost.
    pub client_amount: Credits,
    /// When the call completed (unix seconds).
    pub at: Timestamp,
    /// Calls this record stands for: 1, or more for an aggregate record whose per-call
    /// detail was lost (a sidecar's full ring); 0 is read as 1. Postings and statements
    /// count calls, so an aggregate is not undercounted; a per-request price charges
    /// every one of them.
    #[serde(default = "one_call")]
    pub calls: u64,
    /// Agentic Work Units: 1 on the record an agent writes when it completes the task
    /// named by `task` (counted once per task; such a record is not a call).
    #[serde(default)]
    pub work_units: u64,
    /// The agent stated the cost in credits (a fixed-price call, `commit_credits`): there
    /// is no usage to re-rate (see the rule in [`crate::rating`]).
    #[serde(default)]
    pub pre_rated: bool,
    /// The sidecar lost the calls' detail and reports their exact amount as one record:
    /// charged as stated, like a pre-rated record.
    #[serde(default)]
    pub aggregate: bool,
}

fn empty_name() -> Name {
    Name::from("")
}

fn one_call() -> u64 {
    1
}

impl UsageRecord {
    /// Calls this record stands for (at least 1).
    pub fn call_count(&self) -> u64 {
        self.calls.max(1)
    }

    /// True for a task's completion record that carries no usage of its own: it counts a
    /// work unit, not a call.
    pub fn is_completion_only(&self) -> bool {
        self.work_units > 0
            && self.input_tokens == 0
            && self.output_tokens == 0
            && self.outcomes == 0
            && self.client_amount.is_zero()
    }

    /// Calls this record counts in statements and against a task's `max_calls`.
    pub fn counted_calls(&self) -> u64 {
        if self.is_completion_only() {
            0
        } else {
            self.call_count()
        }
    }
}

/// A sequence-numbered batch of usage records from one sidecar. Idempotent by
/// [`BatchKey`]: posting a batch whose key was already posted posts nothing and returns
/// the first outcome again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageBatch {
    /// Sender and sequence number.
    pub key: BatchKey,
    /// The records; may name several tenants (a pod can serve several).
    pub records: Vec<UsageRecord>,
    /// SHA-256 of the batch as sent (hex), if the authority computed one; stored with the
    /// batch and put in the audit chain.
    pub digest: Option<String>,
    /// The sidecar's signature over the batch (encoding chosen by the authority), stored
    /// with the batch for non-repudiation.
    pub signature: Option<String>,
}

/// What posting a batch did for one tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantPosting {
    /// Tenant.
    pub tenant: TenantId,
    /// Records of this tenant in the batch.
    pub records: u64,
    /// Total as rated by the authority (the truth).
    pub rated: Credits,
    /// Total as the client rated it.
    pub client_amount: Credits,
    /// Records whose client amount differed from the authority's rating.
    pub repriced_records: u64,
    /// Records the client rated with another price book version than the one in force
    /// (the authority should push its book to the sender).
    #[serde(default)]
    pub stale_book_records: u64,
    /// Records the authority could not rate (a model missing from the book, no book, or
    /// a charge that overflows): charged by the unrateable-record rule of
    /// [`crate::rating`], counted here (and in the audit record) so the book can be fixed.
    pub unrated_records: u64,
    /// What those records were charged.
    #[serde(default)]
    pub unrated_amount: Credits,
    /// Records whose cost the agent stated (pre-rated, or a sidecar's aggregate of calls
    /// whose detail was lost): charged as stated (see [`crate::rating`]).
    #[serde(default)]
    pub pre_rated_records: u64,
    /// Agentic Work Units counted (completions of tasks not completed before).
    #[serde(default)]
    pub work_units: u64,
    /// Completion records of tasks already completed: no work unit counted.
    #[serde(default)]
    pub repeated_completions: u64,
    /// Tasks this batch closed (completed, or brought to their `max_calls` or budget):
    /// the authority stops leasing them.
    #[serde(default)]
    pub tasks_closed: Vec<String>,
    /// Paid from the sidecar's open holds.
    pub from_holds: Credits,
    /// Paid from grants directly (no hold left).
    pub from_grants: Credits,
    /// Paid by the plan directly (past every grant; list price).
    pub from_plan: Credits,
    /// Not paid: past the plan's hard cap, or past every grant without a plan.
    /// Recorded and reported; never billed.
    pub overrun: Credits,
    /// Not charged: usage past the sender's holds beyond the overrun allowance
    /// ([`OverrunAllowance`]), suspected tampering. Recorded in the audit chain.
    #[serde(default)]
    pub suspect: Credits,
}

/// How much of a batch's usage the ledger charges past the sending sidecar's own open
/// holds (its leases), per batch and tenant: `absolute` plus `fraction_ppm` millionths of
/// those holds' amounts. A sidecar spends only what its leases allow, plus small honest
/// overruns (a call costing more than its reservation) and a configured emergency
/// allowance while the authority is unreachable; anything past this bound is usage the
/// sender could not have been allowed (a scribbled region, a forged report), so it is
/// recorded as suspected tampering and not charged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverrunAllowance {
    /// Micro-credits allowed past the holds whatever their size.
    pub absolute: Credits,
    /// Millionths of the sender's open holds (their full amounts) allowed on top.
    pub fraction_ppm: u32,
}

impl OverrunAllowance {
    /// The allowance for a sender holding `holds` (sum of its open holds' amounts).
    pub fn for_holds(&self, holds: Credits) -> Credits {
        let part = u128::from(holds.micros()) * u128::from(self.fraction_ppm) / 1_000_000;
        Credits(
            self.absolute
                .micros()
                .saturating_add(u64::try_from(part).unwrap_or(u64::MAX)),
        )
    }
}

impl TenantPosting {
    /// Credits actually charged (holds + grants + plan).
    pub fn charged(&self) -> Credits {
        self.from_holds
            .saturating_add(self.from_grants)
            .saturating_add(self.from_plan)
    }
}

/// Result of posting a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchOutcome {
    /// The batch.
    pub key: BatchKey,
    /// `true` if this key had been posted before: nothing was posted this time and the
    /// figures are those of the first posting.
    pub duplicate: bool,
    /// Records in the batch.
    pub records: u64,
    /// When it was posted (the first time).
    pub posted_at: Timestamp,
    /// Per tenant, in tenant-id order.
    pub tenants: Vec<TenantPosting>,
}

impl BatchOutcome {
    /// The outcome of `key` when its row was pruned: `mark` is the sidecar's watermark
    /// (highest sequence pruned, when). A key at or below it was posted and pruned: a
    /// duplicate with its figures gone. Above it (or without a mark): not posted.
    pub fn if_pruned(key: &BatchKey, mark: Option<(i64, i64)>) -> Option<BatchOutcome> {
        let (through, at) = mark?;
        let through = u64::try_from(through).ok()?;
        (key.seq <= through).then(|| BatchOutcome {
            key: key.clone(),
            duplicate: true,
            records: 0,
            posted_at: u64::try_from(at).unwrap_or(0),
            tenants: Vec::new(),
        })
    }
}

/// One posting row: credits of one (agent, instance, model, feature, task) group of a
/// batch paid by one source. Records of a batch are aggregated into these rows, so a
/// batch of thousands of records writes a handful of rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Posting {
    /// Tenant.
    pub tenant: TenantId,
    /// Batch that caused it (`None` for a hold posted by amount).
    pub batch: Option<BatchKey>,
    /// Hold it drew from, if any.
    pub hold: Option<HoldId>,
    /// The agent's name ("" = unnamed).
    pub agent: String,
    /// The agent instance (for a hold posted by amount: the holder).
    pub agent_instance: String,
    /// Model.
    pub model: String,
    /// Feature.
    pub feature: String,
    /// Task ("" = none).
    pub task: String,
    /// Who paid.
    pub funding: Funding,
    /// Credits.
    pub amount: Credits,
    /// Calls aggregated into this row (an aggregate record counts the calls it stands
    /// for; a group split across sources counts on its first row only).
    pub records: u64,
    /// Prompt tokens of those records.
    pub input_tokens: u64,
    /// Completion tokens of those records.
    pub output_tokens: u64,
    /// Outcomes of those records.
    pub outcomes: u64,
    /// Agentic Work Units of those records.
    pub work_units: u64,
    /// Weighted requests (milli-requests) this row's credits stand for under a
    /// per-request price. On a plan-funded row: exactly what it added to the period's
    /// plan usage, so a period's bill can be recomputed from its postings.
    pub request_units_milli: u64,
    /// Balance before and after. For a grant: the grant's `available + held`. For
    /// the plan and overrun: the wallet's list-price spend in the current period.
    pub balance_before: Credits,
    /// See `balance_before`.
    pub balance_after: Credits,
    /// When posted.
    pub at: Timestamp,
}
