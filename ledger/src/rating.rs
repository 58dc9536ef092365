//! Re-rating a batch: each record is priced with the tenant's price book (the
//! authority's rating is the truth) and aggregated into (tenant, agent, model, feature)
//! groups, so posting a batch of thousands of records touches a handful of rows.
//!
//! Cost per record: one hash lookup of its group (the model is resolved once per group,
//! not per record) and core's integer rating. A record the book cannot rate (no book, or
//! a model missing from it) is charged at the client's amount, since the client already
//! debited that, and counted in `unrated_records` so the book can be fixed.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use tollgate_core::{Credits, ModelRef, PriceBook, RatingInput};

use crate::engine::UsageGroup;
use crate::error::LedgerError;
use crate::ids::TenantId;
use crate::usage::{TenantPosting, UsageRecord};

/// Longest agent, model or feature name, in bytes.
pub const MAX_NAME_LEN: usize = 256;
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
        for (what, v) in [
            ("agent", &r.agent),
            ("model", &r.model),
            ("feature", &r.feature),
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
    let mut index: HashMap<(&str, &str, &str, &str), usize, FxBuild> = HashMap::default();
    let mut slots: Vec<Slot> = Vec::new();
    for r in records {
        let key = (
            r.tenant.as_str(),
            r.agent.as_str(),
            r.model.as_str(),
            r.feature.as_str(),
        );
        let si = match index.get(&key) {
            Some(&i) => i,
            None => {
                let ti = *tenant_idx.entry(r.tenant.as_str()).or_insert_with(|| {
                    tenants.push((
                        r.tenant.clone(),
                        TenantPosting {
                            tenant: r.tenant.clone(),
                            records: 0,
                            rated: Credits::ZERO,
                            client_amount: Credits::ZERO,
                            repriced_records: 0,
                            stale_book_records: 0,
                            unrated_records: 0,
                            from_holds: Credits::ZERO,
                            from_grants: Credits::ZERO,
                            from_plan: Credits::ZERO,
                            overrun: Credits::ZERO,
                            suspect: Credits::ZERO,
                        },
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
                        model: r.model.clone(),
                        feature: r.feature.clone(),
                        ..UsageGroup::default()
                    },
                });
                index.insert(key, slots.len() - 1);
                slots.len() - 1
            }
        };
        let slot = &mut slots[si];
        let (_, summary, book) = &mut tenants[slot.tenant];
        let input = RatingInput {
            input_tokens: r.input_tokens,
            output_tokens: r.output_tokens,
            initiator: r.initiator,
            outcomes: r.outcomes,
        };
        let charge = match (book.as_ref(), slot.model.as_ref()) {
            (Some(b), Some(m)) => b.rate_detailed(m, &input).ok(),
            _ => None,
        };
        let (credits, units) = match charge {
            Some(c) => (c.credits, c.request_units_milli),
            None => {
                summary.unrated_records += 1;
                (r.client_amount, 0)
            }
        };
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
        g.amount = g.amount.saturating_add(credits);
        g.records = g.records.saturating_add(r.call_count());
        g.input_tokens = g.input_tokens.saturating_add(r.input_tokens);
        g.output_tokens = g.output_tokens.saturating_add(r.output_tokens);
        g.outcomes = g.outcomes.saturating_add(r.outcomes);
        g.request_units_milli = g.request_units_milli.saturating_add(units);
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
