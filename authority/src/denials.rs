//! Denials sidecars report (`DemandReport.denials`): counted per tenant, binding limit
//! (the empty key: the lane ran dry before a limit was named), tier and minute in the store (so every replica's sessions add to one count), kept
//! for [`KEEP_MS`], and read back for dashboards by `RecentDenials`. A denial spends
//! nothing; these counts are for people, never for a money decision.

use std::collections::BTreeMap;

use prost::Message;
use tollgate_proto::v1 as pb;
use tonic::Status;

use crate::policy_store::DenialCount;
use crate::state::{State, now_ms, store_status};

/// How long denial counts are kept: a day.
pub const KEEP_MS: u64 = 86_400_000;
/// What `RecentDenials` covers when the request names no start: the last hour.
pub const DEFAULT_SPAN_MS: u64 = 3_600_000;
/// Most distinct (limit, tier) pairs one report may add (a pod has a handful of limits).
pub const MAX_PER_REPORT: usize = 256;

fn minute_of(ms: u64) -> u64 {
    ms - ms % 60_000
}

/// Records one report's denial counts of tenants in `tenants` (the sidecar's); entries
/// for other tenants or with a zero count are skipped. Returns the calls counted.
pub async fn record(
    state: &State,
    tenants: &[String],
    denials: &[pb::DenialCount],
) -> Result<u64, Status> {
    let minute = minute_of(now_ms());
    let mut by_tenant: BTreeMap<&str, Vec<DenialCount>> = BTreeMap::new();
    let mut counted = 0u64;
    for d in denials.iter().take(MAX_PER_REPORT) {
        // A lane that ran dry before a limit was named is counted for its tenant under the
        // empty key (no tenant from an older sidecar: not counted).
        let (tenant, key, limit_pb) = match &d.limit {
            Some(limit) => (&limit.tenant, limit.canonical(), limit.encode_to_vec()),
            None => (&d.tenant, String::new(), Vec::new()),
        };
        if d.count == 0 || tenant.is_empty() || !tenants.contains(tenant) {
            continue;
        }
        counted = counted.saturating_add(d.count);
        by_tenant
            .entry(tenant)
            .or_default()
            .push((key, limit_pb, d.tier, d.count));
    }
    for (tenant, rows) in by_tenant {
        state
            .policy
            .record_denials(tenant, minute, &rows)
            .await
            .map_err(store_status)?;
    }
    state.metrics.denials_reported.inc_by(counted);
    Ok(counted)
}

/// The `RecentDenials` answer for `tenant` since `since_ms` (0 = the last hour).
pub async fn recent(
    state: &State,
    tenant: &str,
    since_ms: u64,
) -> Result<pb::RecentDenialsResponse, Status> {
    let since = if since_ms == 0 {
        minute_of(now_ms().saturating_sub(DEFAULT_SPAN_MS))
    } else {
        since_ms
    };
    let rows = state
        .policy
        .recent_denials(tenant, since)
        .await
        .map_err(store_status)?;
    let mut totals: BTreeMap<(String, i32), pb::DenialTotal> = BTreeMap::new();
    let mut minutes = Vec::with_capacity(rows.len());
    for (minute, key, limit_pb, tier, count) in rows {
        let t = totals
            .entry((key.clone(), tier))
            .or_insert_with(|| pb::DenialTotal {
                // The empty key: denials that named no limit.
                limit: (!limit_pb.is_empty())
                    .then(|| pb::LimitKey::decode(limit_pb.as_slice()).ok())
                    .flatten(),
                limit_key: key.clone(),
                tier,
                ..Default::default()
            });
        t.count = t.count.saturating_add(count);
        t.last_minute_unix_ms = t.last_minute_unix_ms.max(minute);
        minutes.push(pb::DenialMinute {
            minute_unix_ms: minute,
            limit_key: key,
            tier,
            count,
        });
    }
    let mut totals: Vec<pb::DenialTotal> = totals.into_values().collect();
    totals.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.limit_key.cmp(&b.limit_key))
    });
    Ok(pb::RecentDenialsResponse {
        tenant: tenant.to_string(),
        since_unix_ms: since,
        totals,
        minutes,
    })
}
