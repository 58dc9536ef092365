//! Re-rating a batch: each record is priced with the tenant's price book (the
//! authority's rating is the truth) and aggregated into (tenant, agent, instance, model,
//! feature, task) groups, so posting a batch of thousands of records touches a handful
//! of rows.
//!
//! Cost per record: one hash lookup of its group (the model is resolved once per group,
//! not per record) and core's integer rating. The names are shared strings
//! ([`crate::usage::Name`]), so grouping copies none.
//!
//! ## What a record is charged
//! 0. **A task's completion record** (work units, no usage, no model) costs nothing.
//! 1. **Rated** (the normal case): the book prices the record's model; the charge is
//!    [`PriceBook::rate_record`] of its usage, whatever the client said. A record that
//!    stands for `calls` calls is `calls` requests under a per-request price.
//! 2. **Stated** (`pre_rated`: a fixed-price call or `commit_credits`; or `aggregate`: a
//!    sidecar's exact amount for calls whose detail a full ring lost): there is no usage
//!    to re-rate, so the charge is the amount stated; if the record also reports usage on
//!    a priced model, it is charged at least what the book says for that usage. What a
//!    pod can make its tenant pay this way is bounded like every charge: by its leases
//!    plus the overrun allowance (the rest is suspect, see [`crate::OverrunAllowance`]).
//!    Counted in `pre_rated_records`.
//! 3. **Unrateable** (the model is not in the tenant's book, the tenant has no book, or
//!    the charge overflows): never just what the client said, which a stale or scribbled
//!    record could set to anything. The usage is charged at the **dearest** model of the
//!    book ([`PriceBook::rate_dearest`]: the most any priced model would charge for it),
//!    and at least the client's amount; with no book (nothing to rate with), the
//!    client's amount; a charge that overflows under some model is charged
//!    [`UNRATEABLE_OVERFLOW_CHARGE`], more than any lease, so the sender's holds and the
//!    overrun allowance pay and the rest is recorded as suspect. Counted in
//!    `unrated_records` / `unrated_amount` and in the batch's audit record; the authority
//!    also counts it in a metric and logs it, so the book gets fixed.
//!
//! No record is charged more than [`MAX_RECORD_CHARGE`], and a group's sums saturate at
//! [`MAX_GROUP_SUM`]: absurd figures (a scribbled region, a forged record) are charged
//! past any lease and stored, never refused, so the batch's other records are not lost.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use tollgate_core::{Credits, ModelRef, PriceBook, RatingInput};

use crate::engine::{MAX_GRANT, UsageGroup};
use crate::error::LedgerError;
use crate::ids::TenantId;
use crate::usage::{TenantPosting, UsageRecord};

/// Longest agent, instance, model, feature or task name, in bytes.
pub const MAX_NAME_LEN: usize = 256;

/// The most one record is charged, whatever it says: one billion credits, far past any
/// lease. Also what an unrateable record whose charge overflows is charged (see the
/// module docs).
pub const MAX_RECORD_CHARGE: Credits = MAX_GRANT;

/// What an unrateable record whose charge overflows is charged.
pub const UNRATEABLE_OVERFLOW_CHARGE: Credits = MAX_RECORD_CHARGE;

/// Largest count (calls, tokens, outcomes, work units) and amount a group sums to: the
/// stores keep signed 64-bit integers, so sums saturate here rather than fail to store.
pub const MAX_GROUP_SUM: u64 = i64::MAX as u64 / 2;

/// Most work units one record may report.
pub const MAX_WORK_UNITS_PER_RECORD: u64 = 1_000;
/// Most records in one batch.
pub const MAX_BATCH_RECORDS: usize = 1_000_000;

/// Most calls one (aggregate) record may stand for.
pub const MAX_CALLS_PER_RECORD: u64 = u32::MAX as u64;

/// Check a batch's records: names not too long, counts in range.
pub fn validate_records(records: &[UsageRecord]) -> Result<(), LedgerError> {
    if records.len() > MAX_BATCH_RECORDS {
        return Err(LedgerError::InvalidInput(format!(
            "batch has {} records: at most {MAX_BATCH_RECORDS} per batch",
            records.len()
        )));
    }
    for (i, r) in records.iter().enumerate() {
        if r.calls > MAX_CALLS_PER_RECORD {
            return Err(LedgerError::InvalidInput(format!(
                "record {i}: calls is {}, at most {MAX_CALLS_PER_RECORD}",
                r.calls
            )));
        }
        if r.work_units > MAX_WORK_UNITS_PER_RECORD {
            return Err(LedgerError::InvalidInput(format!(
                "record {i}: work_units is {}, at most {MAX_WORK_UNITS_PER_RECORD}",
                r.work_units
            )));
        }
        for (what, v) in [
            ("agent", &r.agent),
            ("agent_instance", &r.agent_instance),
            ("model", &r.model),
            ("feature", &r.feature),
            ("task", &r.task),
        ] {
            if v.len() > MAX_NAME_LEN {
                return Err(LedgerError::InvalidInput(format!(
                    "record {i}: {what} is {} bytes long, at most {MAX_NAME_LEN}",
                    v.len()
                )));
            }
        }
    }
    Ok(())
}

/// A fast non-cryptographic hasher (FxHash's multiply-rotate) for the per-record group
/// lookup. Keys come from authenticated sidecars and a crafted collision can only slow
/// down the sender's own batch, so SipHash's flooding resistance is not needed here.
#[derive(Default, Clone, Copy)]
struct FxHasher(u64);

const FX_K: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.write_u64(u64::from_le_bytes(w));
        }
        for &b in chunks.remainder() {
            self.write_u64(u64::from(b));
        }
    }

    #[inline]
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(FX_K);
    }

    #[inline]
    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

type FxBuild = BuildHasherDefault<FxHasher>;

/// Per tenant: the posting summary (records, rated and client totals) and the groups.
pub type RatedBatch = BTreeMap<TenantId, (TenantPosting, Vec<UsageGroup>)>;

/// How a record was charged (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// By the book.
    Rated,
    /// As its sender stated (pre-rated or aggregate).
    Stated,
    /// By the unrateable-record rule.
    Unrated,
}

/// What one record is charged: credits, the request units they stand for (per-request
/// prices; 0 otherwise) and how (see the module docs).
pub fn charge_record(
    book: Option<&PriceBook>,
    model: Option<&ModelRef>,
    r: &UsageRecord,
) -> (Credits, u64, How) {
    let input = RatingInput {
        input_tokens: r.input_tokens,
        output_tokens: r.output_tokens,
        initiator: r.initiator,
        outcomes: r.outcomes,
    };
    // A task's completion record counts a work unit and carries no usage (the sidecar
    // names no model for it): nothing to rate, nothing to charge.
    if r.is_completion_only() {
        return (Credits::ZERO, 0, How::Rated);
    }
    let calls = r.call_count();
    let rated = match (book, model) {
        (Some(b), Some(m)) => Some(b.rate_record(m, &input, calls)),
        _ => None,
    };
    if r.pre_rated || r.aggregate {
        return match rated {
            Some(Ok(c)) if c.credits > r.client_amount => {
                (c.credits, c.request_units_milli, How::Stated)
            }
            _ => (r.client_amount, 0, How::Stated),
        };
    }
    if let Some(Ok(c)) = rated {
        return (c.credits, c.request_units_milli, How::Rated);
    }
    let credits = match book.map(|b| b.rate_dearest(&input, calls)) {
        Some(Ok(Some(c))) => c.credits.max(r.client_amount),
        Some(Err(_)) => UNRATEABLE_OVERFLOW_CHARGE.max(r.client_amount),
        // A model the book prices whose own rating overflowed, yet every model rated it
        // (cannot happen: the dearest includes it); or no book: nothing to rate with.
        Some(Ok(None)) | None => match rated {
            Some(Err(_)) => UNRATEABLE_OVERFLOW_CHARGE.max(r.client_amount),
            _ => r.client_amount,
        },
    };
    (credits, 0, How::Unrated)
}

/// An empty posting summary for `tenant`.
pub(crate) fn summary_for(tenant: &TenantId) -> TenantPosting {
    TenantPosting {
        tenant: tenant.clone(),
        records: 0,
        rated: Credits::ZERO,
        client_amount: Credits::ZERO,
        repriced_records: 0,
        stale_book_records: 0,
        unrated_records: 0,
        unrated_amount: Credits::ZERO,
        pre_rated_records: 0,
        work_units: 0,
        repeated_completions: 0,
        tasks_closed: Vec::new(),
        from_holds: Credits::ZERO,
        from_grants: Credits::ZERO,
        from_plan: Credits::ZERO,
        overrun: Credits::ZERO,
        suspect: Credits::ZERO,
    }
}

/// The group key of a record: its tenant and names.
type GroupKey<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str, &'a str);

/// Rate and aggregate a batch's records.
pub fn rate_records(
    records: &[UsageRecord],
    books: &HashMap<TenantId, Arc<PriceBook>>,
) -> RatedBatch {
    struct Slot {
        tenant: usize,
        model: Option<ModelRef>,
        group: UsageGroup,
    }
    let mut tenants: Vec<(TenantId, TenantPosting, Option<Arc<PriceBook>>)> = Vec::new();
    let mut tenant_idx: HashMap<&str, usize, FxBuild> = HashMap::default();
    let mut index: HashMap<GroupKey<'_>, usize, FxBuild> = HashMap::default();
    let mut slots: Vec<Slot> = Vec::new();
    for r in records {
        let key = (
            r.tenant.as_str(),
            &*r.agent,
            &*r.agent_instance,
            &*r.model,
            &*r.feature,
            &*r.task,
        );
        let si = match index.get(&key) {
            Some(&i) => i,
            None => {
                let ti = *tenant_idx.entry(r.tenant.as_str()).or_insert_with(|| {
                    tenants.push((
                        r.tenant.clone(),
                        summary_for(&r.tenant),
                        books.get(&r.tenant).cloned(),
                    ));
                    tenants.len() - 1
                });
                let model = tenants[ti].2.as_ref().and_then(|b| b.model(&r.model));
                slots.push(Slot {
                    tenant: ti,
                    model,
                    group: UsageGroup {
                        agent: r.agent.clone(),
                        agent_instance: r.agent_instance.clone(),
                        model: r.model.clone(),
                        feature: r.feature.clone(),
                        task: r.task.clone(),
                        ..UsageGroup::default()
                    },
                });
                index.insert(key, slots.len() - 1);
                slots.len() - 1
            }
        };
        let slot = &mut slots[si];
        let (_, summary, book) = &mut tenants[slot.tenant];
        let (credits, units, how) = charge_record(book.as_deref(), slot.model.as_ref(), r);
        let credits = credits.min(MAX_RECORD_CHARGE);
        match how {
            How::Rated => {}
            How::Stated => summary.pre_rated_records += 1,
            How::Unrated => {
                summary.unrated_records += 1;
                summary.unrated_amount = summary.unrated_amount.saturating_add(credits);
            }
        }
        if book
            .as_ref()
            .is_some_and(|b| b.version() != r.price_book_version)
        {
            summary.stale_book_records += 1;
        }
        if credits != r.client_amount {
            summary.repriced_records += 1;
        }
        summary.records += 1;
        summary.rated = summary.rated.saturating_add(credits);
        summary.client_amount = summary.client_amount.saturating_add(r.client_amount);
        let g = &mut slot.group;
        let add = |a: u64, b: u64| a.saturating_add(b).min(MAX_GROUP_SUM);
        g.amount = Credits(add(g.amount.micros(), credits.micros()));
        g.records = add(g.records, r.counted_calls());
        g.work_units = add(g.work_units, r.work_units);
        g.input_tokens = add(g.input_tokens, r.input_tokens);
        g.output_tokens = add(g.output_tokens, r.output_tokens);
        g.outcomes = add(g.outcomes, r.outcomes);
        g.request_units_milli = add(g.request_units_milli, units);
    }
    let mut out: RatedBatch = BTreeMap::new();
    let mut groups: Vec<Vec<UsageGroup>> = (0..tenants.len()).map(|_| Vec::new()).collect();
    for s in slots {
        groups[s.tenant].push(s.group);
    }
    for ((tenant, summary, _), g) in tenants.into_iter().zip(groups) {
        out.insert(tenant, (summary, g));
    }
    out
}
