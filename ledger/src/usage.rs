//! Usage: the records sidecars send, the batch that carries them, what posting a batch
//! did, and the posting rows it wrote.

use serde::{Deserialize, Serialize};
use tollgate_core::{Credits, Initiator, Tier};

use crate::clock::Timestamp;
use crate::hold::Funding;
use crate::ids::{BatchKey, HoldId, TenantId};

/// One call's usage, as the sidecar reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRecord {
    /// Tenant billed.
    pub tenant: TenantId,
    /// Agent instance that made the call (pod/process identity).
    pub agent: String,
    /// Model name as in the price book.
    pub model: String,
    /// Product feature the call served (free text, for statements).
    pub feature: String,
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
    /// count calls, so an aggregate is not undercounted.
    #[serde(default = "one_call")]
    pub calls: u64,
}

fn one_call() -> u64 {
    1
}

impl UsageRecord {
    /// Calls this record stands for (at least 1).
    pub fn call_count(&self) -> u64 {
        self.calls.max(1)
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
    /// Records the authority could not rate (model missing from the book, or no book):
    /// charged at the client's amount, counted here so the price book can be fixed.
    pub unrated_records: u64,
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

/// One posting row: credits of one (agent, model, feature) group of a batch paid by one
/// source. Records of a batch are aggregated into these rows, so a batch of thousands of
/// records writes a handful of rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Posting {
    /// Tenant.
    pub tenant: TenantId,
    /// Batch that caused it (`None` for a hold posted by amount).
    pub batch: Option<BatchKey>,
    /// Hold it drew from, if any.
    pub hold: Option<HoldId>,
    /// Agent instance.
    pub agent: String,
    /// Model.
    pub model: String,
    /// Feature.
    pub feature: String,
    /// Who paid.
    pub funding: Funding,
    /// Credits.
    pub amount: Credits,
    /// Calls aggregated into this row (an aggregate record counts the calls it stands
    /// for; a record split across sources counts in each).
    pub records: u64,
    /// Prompt tokens of those records.
    pub input_tokens: u64,
    /// Completion tokens of those records.
    pub output_tokens: u64,
    /// Outcomes of those records.
    pub outcomes: u64,
    /// Balance before and after. For a grant: the grant's `available + held`. For
    /// the plan and overrun: the wallet's list-price spend in the current period.
    pub balance_before: Credits,
    /// See `balance_before`.
    pub balance_after: Credits,
    /// When posted.
    pub at: Timestamp,
}
