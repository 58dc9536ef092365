//! Shadow mode: a quota rule or a hard cap set with `shadow` is not enforced (sidecars get
//! no lease limit from it, the ledger no cap); instead the authority measures what it
//! *would* have done, so a platform team can try a limit on live traffic first.
//!
//! Every second, for each tenant whose policy this replica has loaded, it compares the
//! tenant's spend in the current window with each shadow rule's maximum:
//! - `tollgate_authority_shadow_used_micro{tenant, rule}` and `..._max_micro` are gauges
//!   of the current window;
//! - `tollgate_authority_shadow_exceeded_total{tenant, rule}` counts windows in which the
//!   spend passed the maximum (once per window), with a warning in the log.
//!
//! Measured from the ledger: tenant-wide minute and hour windows from its per-minute spend
//! buckets, month windows from the billing period's spend; a shadow hard cap (`rule`
//! = `hard_cap`) against the period's plan charge. Shadow rules scoped to a tier or an
//! agent instance are not measured (the ledger keeps no per-tier spend); they are reported
//! with `used` = -1 so they are not mistaken for zero.

use tollgate_core::Horizon;
use tollgate_ledger::TenantId;
use tollgate_proto::v1;

pub use crate::metrics::{ShadowLabels, ShadowMetrics};
use crate::state::{State, now_ms};

/// One pass over the tenants whose policies are cached here.
pub async fn evaluate(state: &State) {
    let policies: Vec<v1::TenantPolicy> = state
        .policy_cache
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .values()
        .filter(|p| p.hard_cap_shadow || p.quotas.iter().any(|q| q.shadow))
        .cloned()
        .collect();
    let now_s = now_ms() / 1000;
    for p in policies {
        let Ok(t) = TenantId::new(p.tenant.as_str()) else {
            continue;
        };
        let balance = match state.ledger.balance(&t).await {
            Ok(b) => b,
            Err(e) => {
                tracing::debug!(tenant = p.tenant, error = %e, "shadow evaluation: balance failed");
                continue;
            }
        };
        for q in p.quotas.iter().filter(|q| q.shadow) {
            let labels = ShadowLabels {
                tenant: p.tenant.clone(),
                rule: q.id.clone(),
            };
            let tenant_wide = q
                .limit
                .as_ref()
                .is_some_and(|l| l.scope == v1::Scope::Tenant as i32);
            let horizon = q
                .limit
                .as_ref()
                .and_then(|l| crate::convert::horizon(l.window));
            let (used, window_start) = match (tenant_wide, horizon) {
                (true, Some(Horizon::Month)) => {
                    (Some(balance.period_spent.micros()), balance.period_start)
                }
                (true, Some(h)) => {
                    let ws = h.window_start(now_s);
                    let spent = state.ledger.store().spend_since(&t, ws).await;
                    (spent.ok().map(|c| c.micros()), ws)
                }
                _ => (None, 0),
            };
            state
                .metrics
                .shadow
                .record(labels, used, q.max_micro, window_start);
        }
        if p.hard_cap_shadow && p.hard_cap_micro > 0 {
            let charge = balance
                .period_bill
                .as_ref()
                .map_or(0, |b| b.usage_charge.micros());
            state.metrics.shadow.record(
                ShadowLabels {
                    tenant: p.tenant.clone(),
                    rule: "hard_cap".into(),
                },
                Some(charge),
                p.hard_cap_micro,
                balance.period_start,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> ShadowLabels {
        ShadowLabels {
            tenant: "acme".into(),
            rule: "r".into(),
        }
    }

    #[test]
    fn an_exceeded_window_is_counted_once() {
        let m = ShadowMetrics::default();
        m.record(labels(), Some(50), 100, 60);
        assert_eq!(m.exceeded.get_or_create(&labels()).get(), 0);
        m.record(labels(), Some(150), 100, 60);
        m.record(labels(), Some(170), 100, 60);
        assert_eq!(m.exceeded.get_or_create(&labels()).get(), 1);
        assert_eq!(m.used.get_or_create(&labels()).get(), 170);
        m.record(labels(), Some(101), 100, 120);
        assert_eq!(m.exceeded.get_or_create(&labels()).get(), 2, "a new window");
        m.record(labels(), None, 100, 0);
        assert_eq!(m.used.get_or_create(&labels()).get(), -1);
    }
}
