//! Prometheus metrics the sidecar exports on `/metrics`.
//!
//! Amounts are micro-credits (integers, like every balance in Tollgate). Label sets stay
//! small: limits, tiers and denial reasons, never per-call values. Task budgets are limits
//! too, but short-lived and numbered in thousands, so they get no per-limit series (see
//! [`Metrics::exported`]); a deleted limit's series go when its pool is freed.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels naming one limit (pool).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    /// The limit's key as the sidecar knows it (tenant and horizon).
    pub limit: String,
}

/// Labels of a denial.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DenialLabels {
    /// Why (which limit kind, or the task budget).
    pub reason: String,
    /// The caller's priority tier.
    pub tier: String,
}

/// All the sidecar's metrics.
#[derive(Debug)]
pub struct Metrics {
    /// How long one pass of the control loop takes, seconds. Agents wait at most 10 ms for a
    /// top-up, so a tick near that long means late refills and "lane ran dry" denials.
    pub tick_seconds: Histogram,
    /// Credits carved into lane allowances, per limit.
    pub allowance: Family<LimitLabels, Gauge>,
    /// Uncarved credits in the pool, per limit.
    pub pool_available: Family<LimitLabels, Gauge>,
    /// Recent burn, micro-credits per second, per limit.
    pub burn_rate: Family<LimitLabels, Gauge>,
    /// Credits consumed (committed) in total, per limit.
    pub consumed: Family<LimitLabels, Counter>,
    /// Age of the newest lease grant per limit, seconds.
    pub lease_age_seconds: Family<LimitLabels, Gauge>,
    /// Denials by reason and tier.
    pub denials: Family<DenialLabels, Counter>,
    /// Usage records waiting in the rings.
    pub ring_depth: Gauge,
    /// Records whose per-call detail was lost to a full ring (the credits still counted).
    pub ring_overflow: Counter,
    /// 1 while the session with the authority is up.
    pub authority_connected: Gauge,
    /// Session (re)connect attempts.
    pub reconnects: Counter,
    /// 1 while the authority refuses to register this sidecar for good (`UNAUTHENTICATED` or
    /// `PERMISSION_DENIED`: its credential is unknown or does not cover its tenants).
    pub register_refused: Gauge,
    /// Registrations the authority refused for good.
    pub register_refusals: Counter,
    /// Batches persisted in the outbox and not yet acknowledged.
    pub outbox_pending: Gauge,
    /// Batches the outbox could not write (their records stay in the rings and are retried).
    pub outbox_write_errors: Counter,
    /// Batches sent (including replays).
    pub batches_sent: Counter,
    /// Batches acknowledged by the authority.
    pub batches_acked: Counter,
    /// Usage records drained from the rings.
    pub records_drained: Counter,
    /// Dead agent processes whose holds were reclaimed.
    pub processes_reclaimed: Counter,
    /// Credits given back by reclaiming dead processes' holds.
    pub reclaimed_credits: Counter,
    /// Named tasks registered with the authority.
    pub tasks_opened: Counter,
    /// Named tasks open in the region's task table.
    pub tasks_open: Gauge,
    /// Entries of the region's name table in use (agent and feature names).
    pub names_used: Gauge,
    /// Emergency allowance drawn during the current outage, per limit.
    pub emergency_drawn: Family<LimitLabels, Gauge>,
    /// Pushed policies the region could not take (the previous one stayed in force).
    pub policy_errors: Counter,
    /// Tenants whose latest pushed policy is not applied.
    pub policies_failing: Gauge,
    /// Credits lanes reported past what the sidecar gave them plus the overrun allowance,
    /// not reported to the authority.
    pub suspected_tampering: Counter,
    /// Times the region was found destroyed under the sidecar (and replaced).
    pub region_damage: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            // 10 µs .. ~82 ms, doubling.
            tick_seconds: Histogram::new(exponential_buckets(0.000_01, 2.0, 14)),
            allowance: Family::default(),
            pool_available: Family::default(),
            burn_rate: Family::default(),
            consumed: Family::default(),
            lease_age_seconds: Family::default(),
            denials: Family::default(),
            ring_depth: Gauge::default(),
            ring_overflow: Counter::default(),
            authority_connected: Gauge::default(),
            reconnects: Counter::default(),
            register_refused: Gauge::default(),
            register_refusals: Counter::default(),
            outbox_pending: Gauge::default(),
            outbox_write_errors: Counter::default(),
            batches_sent: Counter::default(),
            batches_acked: Counter::default(),
            records_drained: Counter::default(),
            processes_reclaimed: Counter::default(),
            reclaimed_credits: Counter::default(),
            tasks_opened: Counter::default(),
            tasks_open: Gauge::default(),
            names_used: Gauge::default(),
            emergency_drawn: Family::default(),
            policy_errors: Counter::default(),
            policies_failing: Gauge::default(),
            suspected_tampering: Counter::default(),
            region_damage: Counter::default(),
        }
    }
}

impl Metrics {
    /// Registers every metric under `tollgate_sidecar_*`.
    pub fn register(&self, r: &mut Registry) {
        let r = r.sub_registry_with_prefix("tollgate_sidecar");
        r.register(
            "tick_seconds",
            "Duration of one pass of the control loop",
            self.tick_seconds.clone(),
        );
        r.register(
            "allowance_micro_credits",
            "Credits in lane allowances, per limit",
            self.allowance.clone(),
        );
        r.register(
            "pool_available_micro_credits",
            "Uncarved credits in the pool, per limit",
            self.pool_available.clone(),
        );
        r.register(
            "burn_rate_micro_credits_per_second",
            "Recent burn per limit",
            self.burn_rate.clone(),
        );
        r.register(
            "consumed_micro_credits",
            "Credits consumed per limit",
            self.consumed.clone(),
        );
        r.register(
            "lease_age_seconds",
            "Seconds since the last lease grant per limit",
            self.lease_age_seconds.clone(),
        );
        r.register(
            "denials",
            "Denied reservations by reason and tier",
            self.denials.clone(),
        );
        r.register(
            "ring_depth_records",
            "Usage records waiting in the rings",
            self.ring_depth.clone(),
        );
        r.register(
            "ring_overflow_records",
            "Records whose detail a full ring dropped (credits still counted)",
            self.ring_overflow.clone(),
        );
        r.register(
            "authority_connected",
            "1 while the authority session is up",
            self.authority_connected.clone(),
        );
        r.register(
            "reconnects",
            "Authority session connection attempts",
            self.reconnects.clone(),
        );
        r.register(
            "register_refused",
            "1 while the authority refuses to register this sidecar (credential unknown or not covering its tenants)",
            self.register_refused.clone(),
        );
        r.register(
            "register_refusals",
            "Registrations the authority refused (UNAUTHENTICATED or PERMISSION_DENIED)",
            self.register_refusals.clone(),
        );
        r.register(
            "outbox_pending_batches",
            "Signed batches not yet acknowledged",
            self.outbox_pending.clone(),
        );
        r.register(
            "outbox_write_errors",
            "Usage batches the outbox could not write (records stay in the rings, retried)",
            self.outbox_write_errors.clone(),
        );
        r.register(
            "batches_sent",
            "Usage batches sent, replays included",
            self.batches_sent.clone(),
        );
        r.register(
            "batches_acked",
            "Usage batches acknowledged as durable",
            self.batches_acked.clone(),
        );
        r.register(
            "records_drained",
            "Usage records drained from the rings",
            self.records_drained.clone(),
        );
        r.register(
            "processes_reclaimed",
            "Dead agent processes reclaimed",
            self.processes_reclaimed.clone(),
        );
        r.register(
            "tasks_opened",
            "Named tasks registered with the authority",
            self.tasks_opened.clone(),
        );
        r.register(
            "tasks_open",
            "Named tasks open in the region",
            self.tasks_open.clone(),
        );
        r.register(
            "names_used",
            "Entries of the region's name table in use (agent and feature names)",
            self.names_used.clone(),
        );
        r.register(
            "reclaimed_micro_credits",
            "Credits recovered from dead processes' holds",
            self.reclaimed_credits.clone(),
        );
        r.register(
            "emergency_drawn_micro_credits",
            "Emergency allowance drawn this outage, per limit",
            self.emergency_drawn.clone(),
        );
        r.register(
            "policy_errors",
            "Pushed policies the region could not take (the previous one stays in force)",
            self.policy_errors.clone(),
        );
        r.register(
            "policies_failing",
            "Tenants whose latest pushed policy is not applied",
            self.policies_failing.clone(),
        );
        r.register(
            "suspected_tampering_micro_credits",
            "Credits lanes reported past what the sidecar gave them plus the overrun allowance (not reported)",
            self.suspected_tampering.clone(),
        );
        r.register(
            "region_damage",
            "Times the region was found destroyed (truncated, removed, replaced, header overwritten) and replaced by a new one",
            self.region_damage.clone(),
        );
    }

    /// Labels for `limit`.
    pub fn limit(limit: &str) -> LimitLabels {
        LimitLabels {
            limit: limit.to_string(),
        }
    }

    /// Whether `key` gets per-limit series: every limit but a task's budget.
    pub fn exported(key: &tollgate_proto::v1::LimitKey) -> bool {
        key.scope != tollgate_proto::v1::Scope::Task as i32
    }

    /// Drops the per-limit series of a limit that is gone (its pool freed).
    pub fn forget_limit(&self, limit: &str) {
        let labels = Self::limit(limit);
        self.allowance.remove(&labels);
        self.pool_available.remove(&labels);
        self.burn_rate.remove(&labels);
        self.consumed.remove(&labels);
        self.lease_age_seconds.remove(&labels);
        self.emergency_drawn.remove(&labels);
    }
}

/// Clamps a micro-credit amount into a gauge value.
pub fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Renders `registry` in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_labelled_metrics() {
        let m = Metrics::default();
        let mut r = Registry::default();
        m.register(&mut r);
        m.allowance
            .get_or_create(&Metrics::limit("acme/wallet"))
            .set(42);
        m.denials
            .get_or_create(&DenialLabels {
                reason: "tier_floor".into(),
                tier: "background".into(),
            })
            .inc();
        m.authority_connected.set(1);
        let text = render(&r);
        assert!(
            text.contains("tollgate_sidecar_allowance_micro_credits{limit=\"acme/wallet\"} 42"),
            "{text}"
        );
        assert!(
            text.contains(
                "tollgate_sidecar_denials_total{reason=\"tier_floor\",tier=\"background\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("tollgate_sidecar_authority_connected 1"),
            "{text}"
        );
    }
}
