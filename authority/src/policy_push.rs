//! Policy push: the tenant's policy and price book as sidecars get them, the stored
//! policy read through the cache, and what is pushed to live sessions when a policy
//! changes (here or, with replicas on one database, on another replica): the policy, the
//! price book, and ceilings for limits that went down.

use std::collections::BTreeMap;

use tollgate_core::PriceBook as CorePriceBook;
use tollgate_proto::v1::{self as pb, SessionDown, session_down};
use tonic::Status;

use crate::convert;
use crate::state::{State, ledger_status, now_ms, store_status, tenant_id};

/// The tenant's policy as sidecars get it: stored quotas and floors plus the plan's cap
/// and the price book version in force.
pub async fn policy_view(state: &State, tenant: &str) -> Result<pb::TenantPolicy, Status> {
    let stored = stored_policy(state, tenant).await?;
    view_of(state, tenant, stored).await
}

/// [`policy_view`] of a given stored policy.
pub async fn view_of(
    state: &State,
    tenant: &str,
    mut p: pb::TenantPolicy,
) -> Result<pb::TenantPolicy, Status> {
    let t = tenant_id("tenant", tenant)?;
    let cfg = state.ledger.config(&t).await.map_err(ledger_status)?;
    if !p.hard_cap_shadow {
        p.hard_cap_micro = cfg
            .plan
            .as_ref()
            .and_then(|pl| pl.hard_cap)
            .map_or(0, |c| c.micros());
    }
    p.price_book_version = state
        .ledger
        .price_book(&t)
        .await
        .map_err(ledger_status)?
        .map_or(0, |b| b.version());
    Ok(p)
}

pub async fn stored_policy(state: &State, tenant: &str) -> Result<pb::TenantPolicy, Status> {
    if let Some(p) = state.policy_cache_get(tenant) {
        return Ok(p);
    }
    let p = state
        .policy
        .policy(tenant)
        .await
        .map_err(store_status)?
        .unwrap_or_else(|| pb::TenantPolicy {
            tenant: tenant.to_string(),
            ..Default::default()
        });
    state.policy_cache_put(p.clone());
    Ok(p)
}

/// Changes a tenant's stored policy: read fresh from the store (not the cache, which may
/// lag a change made on another replica), edited by `change`, written with a
/// compare-and-set on its version (re-run on a lost race), then cached. Returns
/// `change`'s output.
pub async fn update_policy<T>(
    state: &State,
    tenant: &str,
    change: impl FnMut(&mut pb::TenantPolicy) -> Result<T, Status>,
) -> Result<T, Status> {
    let (p, out) = state
        .policy
        .update_policy(tenant, change)
        .await
        .map_err(store_status)??;
    state.policy_cache_put(p);
    Ok(out)
}

/// The price book in force, on the wire.
pub async fn price_book_view(state: &State, tenant: &str) -> Result<Option<pb::PriceBook>, Status> {
    let t = tenant_id("tenant", tenant)?;
    let book = state.ledger.price_book(&t).await.map_err(ledger_status)?;
    Ok(book.map(|b| convert::price_book_to_wire(tenant, &book_spec(&b), 0)))
}

fn book_spec(b: &CorePriceBook) -> tollgate_core::PriceBookSpec {
    tollgate_core::PriceBookSpec {
        version: b.version(),
        request_price: b.request_price(),
        default_max_output_tokens: b.default_max_output_tokens(),
        models: b.models().to_vec(),
    }
}

/// The enforced (non-shadow) quota rule governing `limit`, if any.
pub async fn quota_rule_for(state: &State, limit: &pb::LimitKey) -> Option<pb::QuotaRule> {
    let p = stored_policy(state, &limit.tenant).await.ok()?;
    let key = limit.canonical();
    p.quotas
        .into_iter()
        .find(|q| !q.shadow && q.limit.as_ref().is_some_and(|l| l.canonical() == key))
}

/// Pushes the tenant's current policy to its live sessions; returns how many got it.
pub async fn push_policy(state: &State, tenant: &str) -> Result<usize, Status> {
    let p = policy_view(state, tenant).await?;
    let n = state.sessions.push(
        tenant,
        &SessionDown {
            msg: Some(session_down::Msg::Policy(pb::PolicyUpdate {
                policy: Some(p),
            })),
        },
    );
    state.metrics.policy_pushes.inc_by(n as u64);
    Ok(n)
}

/// Replicas on one database: pushes to this replica's sessions the policy changes that
/// another replica stored (found by the stored versions running ahead of this replica's
/// cache). Quotas whose maximum went down get their ceilings pushed, as on the replica
/// that made the change; with a hard cap, the wallet's ceilings are pushed too. Returns
/// how many tenants changed.
pub async fn sync_policies_from_store(state: &State) -> Result<usize, Status> {
    let versions = state.policy.policy_versions().await.map_err(store_status)?;
    let mut changed = 0;
    for (tenant, version) in versions {
        let old = state.policy_cache_get(&tenant);
        if old.as_ref().is_some_and(|p| p.version >= version) {
            continue;
        }
        let Some(new) = state.policy.policy(&tenant).await.map_err(store_status)? else {
            continue;
        };
        state.policy_cache_put(new.clone());
        changed += 1;
        // Nothing was pushed from the old state if it was never cached here.
        let Some(old) = old else { continue };
        if let Some(book) = price_book_view(state, &tenant).await? {
            let n = state.sessions.push(
                &tenant,
                &SessionDown {
                    msg: Some(session_down::Msg::PriceBook(pb::PriceBookUpdate {
                        price_book: Some(book),
                    })),
                },
            );
            state.metrics.policy_pushes.inc_by(n as u64);
        }
        push_policy(state, &tenant).await?;
        for q in new.quotas.iter().filter(|q| !q.shadow) {
            let lowered = old
                .quotas
                .iter()
                .find(|o| o.id == q.id)
                .is_none_or(|o| q.max_micro < o.max_micro);
            if let (true, Some(limit)) = (lowered, &q.limit) {
                push_ceilings(state, limit, q.max_micro).await;
            }
        }
        let t = tenant_id("tenant", &tenant)?;
        let cap = state
            .ledger
            .config(&t)
            .await
            .map_err(ledger_status)?
            .plan
            .and_then(|pl| pl.hard_cap);
        if let Some(cap) = cap {
            let b = state.ledger.balance(&t).await.map_err(ledger_status)?;
            push_ceilings(
                state,
                &pb::LimitKey::wallet(&tenant),
                wallet_room(&b, cap.micros()),
            )
            .await;
        }
    }
    Ok(changed)
}

/// What may still be spent this period under a hard cap: the grants' credits, plus the
/// plan's room under the cap (conservatively: the cap minus everything spent this
/// period). Holds placed under an older, higher cap do not count.
pub fn wallet_room(b: &tollgate_ledger::Balance, cap: u64) -> u64 {
    b.available
        .saturating_add(b.held)
        .micros()
        .saturating_add(cap.saturating_sub(b.period_spent.micros()))
}

/// After a limit went down: tell each sidecar holding more than its share of what is left
/// to shrink to its ceiling (proportional to what it holds).
pub async fn push_ceilings(state: &State, limit: &pb::LimitKey, room: u64) {
    let key = limit.canonical();
    let now = now_ms();
    let fresh = now.saturating_sub(2 * state.lease_cfg.ttl_secs.saturating_mul(1000));
    let holders: Vec<(String, u64)> = {
        let t = state.lease_table();
        let mut by: BTreeMap<String, u64> = BTreeMap::new();
        for l in t.of_limit(&key) {
            if l.expires_ms > now {
                *by.entry(l.sidecar.clone()).or_default() += l.outstanding();
            }
        }
        for (k, s, d) in t.demands() {
            if k == key && d.at_ms >= fresh {
                by.insert(s, d.held);
            }
        }
        by.into_iter().collect()
    };
    let total: u64 = holders.iter().map(|h| h.1).sum();
    for (sid, held) in holders {
        let ceiling = if total <= room {
            held
        } else {
            (u128::from(room) * u128::from(held) / u128::from(total.max(1))) as u64
        };
        if let Some(tx) = state.sessions.sender(&sid) {
            crate::sessions::send_now(
                &tx,
                SessionDown {
                    msg: Some(session_down::Msg::Revocation(pb::Revocation {
                        limit: Some(limit.clone()),
                        ceiling_micro: ceiling,
                        lease_ids: Vec::new(),
                        reason: format!(
                            "limit {key} lowered: hold at most {ceiling} micro-credits"
                        ),
                    })),
                },
            );
            state.metrics.policy_pushes.inc();
        }
    }
}
