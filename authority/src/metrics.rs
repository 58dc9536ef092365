//! Prometheus metrics of the authority (served on `/metrics` by [`crate::http`]).
//!
//! Names start with `tollgate_authority_`. Money counters are micro-credits.

use std::collections::HashMap;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Label set with a single `result` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// accepted | duplicate | rejected | ok | error | ...
    pub result: String,
}

/// Every metric the authority exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Usage batches by result (accepted, duplicate, rejected).
    pub batches: Family<ResultLabel, Counter>,
    /// Usage records posted.
    pub records: Counter,
    /// Micro-credits rated by the authority on posted usage.
    pub rated_micro: Counter,
    /// Connected sidecar sessions.
    pub sessions: Gauge,
    /// Leases granted.
    pub leases_granted: Counter,
    /// Micro-credits granted in leases.
    pub leases_granted_micro: Counter,
    /// Leases settled at expiry without the sidecar having returned them, while the
    /// sidecar was disconnected (the "never came back" rule).
    pub leases_unreported: Counter,
    /// Micro-credits left undrawn in unreported leases (released, never charged).
    pub leases_unreported_micro: Counter,
    /// Leases returned by sidecars.
    pub leases_returned: Counter,
    /// Policy pushes sent to sessions.
    pub policy_pushes: Counter,
    /// Webhook deliveries by result (ok, retry, failed, refused: a private target).
    pub webhooks: Family<ResultLabel, Counter>,
    /// Demand reports refused while relearning after a restart.
    pub relearn_deferred: Counter,
    /// Batch idempotency keys pruned past the retention.
    pub batches_pruned: Counter,
    /// Sidecar requests refused or parts ignored as untrusted, by reason
    /// (`sidecar_id_owned`, `forged_lease`, `undefined_limit`, `register_too_large`).
    pub refused: Family<ResultLabel, Counter>,
    /// Demands answered with a `LeaseRefusal` (nothing of the limit free), by reason.
    pub lease_refusals: Family<ResultLabel, Counter>,
    /// Usage past a sidecar's holds beyond the overrun allowance: not charged, recorded.
    pub suspected_tampering: Counter,
    /// Micro-credits of such usage (rated, not charged).
    pub suspected_tampering_micro: Counter,
    /// Records the authority could not rate (unknown model, overflow), charged by the
    /// ledger's unrateable-record rule: a price book to fix.
    pub unrated_records: Counter,
    /// Micro-credits charged for them.
    pub unrated_micro: Counter,
    /// Records charged as their sender stated (pre-rated, or aggregates of lost detail).
    pub pre_rated_records: Counter,
    /// Agentic Work Units counted (tasks completed).
    pub work_units: Counter,
    /// Task registrations by result (`created`, `same`, `conflict`, `invalid`).
    pub task_opens: Family<ResultLabel, Counter>,
    /// Tasks closed by posted usage, by reason (`completed`, `max_calls`, `budget`).
    pub tasks_closed: Family<ResultLabel, Counter>,
    /// Calls sidecars reported denied to their agents.
    pub denials_reported: Counter,
    /// Shadow-mode limits: what they would have done ([`crate::shadow`]).
    pub shadow: ShadowMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("tollgate_authority");
        let m = Metrics {
            batches: Family::default(),
            records: Counter::default(),
            rated_micro: Counter::default(),
            sessions: Gauge::default(),
            leases_granted: Counter::default(),
            leases_granted_micro: Counter::default(),
            leases_unreported: Counter::default(),
            leases_unreported_micro: Counter::default(),
            leases_returned: Counter::default(),
            policy_pushes: Counter::default(),
            webhooks: Family::default(),
            relearn_deferred: Counter::default(),
            batches_pruned: Counter::default(),
            refused: Family::default(),
            lease_refusals: Family::default(),
            suspected_tampering: Counter::default(),
            suspected_tampering_micro: Counter::default(),
            unrated_records: Counter::default(),
            unrated_micro: Counter::default(),
            pre_rated_records: Counter::default(),
            work_units: Counter::default(),
            task_opens: Family::default(),
            tasks_closed: Family::default(),
            denials_reported: Counter::default(),
            shadow: ShadowMetrics::default(),
            registry: Registry::default(),
        };
        registry.register("batches", "Usage batches by result", m.batches.clone());
        registry.register("records", "Usage records posted", m.records.clone());
        registry.register(
            "rated_micro",
            "Micro-credits rated on posted usage",
            m.rated_micro.clone(),
        );
        registry.register("sessions", "Connected sidecar sessions", m.sessions.clone());
        registry.register("leases_granted", "Leases granted", m.leases_granted.clone());
        registry.register(
            "leases_granted_micro",
            "Micro-credits granted in leases",
            m.leases_granted_micro.clone(),
        );
        registry.register(
            "leases_unreported",
            "Leases settled at expiry while their sidecar was away",
            m.leases_unreported.clone(),
        );
        registry.register(
            "leases_unreported_micro",
            "Micro-credits undrawn in leases settled while their sidecar was away",
            m.leases_unreported_micro.clone(),
        );
        registry.register(
            "leases_returned",
            "Leases returned",
            m.leases_returned.clone(),
        );
        registry.register(
            "policy_pushes",
            "Policy and price-book messages pushed to sessions",
            m.policy_pushes.clone(),
        );
        registry.register("webhooks", "Alert webhook deliveries", m.webhooks.clone());
        registry.register(
            "shadow_used_micro",
            "Spend in the current window of a shadow (not enforced) limit; -1 if not measurable",
            m.shadow.used.clone(),
        );
        registry.register(
            "shadow_max_micro",
            "Maximum of a shadow (not enforced) limit",
            m.shadow.max.clone(),
        );
        registry.register(
            "shadow_exceeded",
            "Windows in which a shadow limit would have denied calls",
            m.shadow.exceeded.clone(),
        );
        registry.register(
            "batches_pruned",
            "Usage batch keys pruned past the retention (their sidecars keep a watermark)",
            m.batches_pruned.clone(),
        );
        registry.register(
            "refused",
            "Sidecar requests refused, or parts of them ignored, as untrusted (by reason)",
            m.refused.clone(),
        );
        registry.register(
            "lease_refusals",
            "Demands answered with a lease refusal: nothing of the limit free (by reason)",
            m.lease_refusals.clone(),
        );
        registry.register(
            "suspected_tampering",
            "Usage reports past a sidecar's holds beyond the overrun allowance (not charged)",
            m.suspected_tampering.clone(),
        );
        registry.register(
            "suspected_tampering_micro",
            "Micro-credits reported past a sidecar's holds beyond the overrun allowance (not charged)",
            m.suspected_tampering_micro.clone(),
        );
        registry.register(
            "unrated_records",
            "Usage records the price book could not rate (unknown model, overflow), charged by the unrateable-record rule",
            m.unrated_records.clone(),
        );
        registry.register(
            "unrated_micro",
            "Micro-credits charged for usage records the price book could not rate",
            m.unrated_micro.clone(),
        );
        registry.register(
            "pre_rated_records",
            "Usage records charged as their sender stated (pre-rated calls, aggregates of lost detail)",
            m.pre_rated_records.clone(),
        );
        registry.register(
            "work_units",
            "Agentic Work Units counted (tasks completed)",
            m.work_units.clone(),
        );
        registry.register(
            "task_opens",
            "Task registrations by result (created, same, conflict, invalid)",
            m.task_opens.clone(),
        );
        registry.register(
            "tasks_closed",
            "Tasks closed by posted usage, by reason (completed, max_calls, budget)",
            m.tasks_closed.clone(),
        );
        registry.register(
            "denials_reported",
            "Calls sidecars reported denied to their agents",
            m.denials_reported.clone(),
        );
        registry.register(
            "relearn_deferred",
            "Demands deferred during the relearn window",
            m.relearn_deferred.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Counter helper for a labelled family.
    pub fn count(family: &Family<ResultLabel, Counter>, result: &str) {
        family
            .get_or_create(&ResultLabel {
                result: result.to_string(),
            })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_metrics() {
        let m = Metrics::new();
        m.records.inc_by(3);
        Metrics::count(&m.batches, "accepted");
        let text = m.encode();
        assert!(
            text.contains("tollgate_authority_records_total 3"),
            "{text}"
        );
        assert!(
            text.contains("tollgate_authority_batches_total{result=\"accepted\"} 1"),
            "{text}"
        );
    }
}

/// Labels of the shadow metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShadowLabels {
    /// Tenant.
    pub tenant: String,
    /// Quota rule id, or `hard_cap`.
    pub rule: String,
}

/// The shadow metrics and which windows were already counted as exceeded.
#[derive(Debug, Default)]
pub struct ShadowMetrics {
    /// Spend in the current window (-1: not measurable).
    pub used: Family<ShadowLabels, Gauge>,
    /// The rule's maximum.
    pub max: Family<ShadowLabels, Gauge>,
    /// Windows whose spend passed the maximum.
    pub exceeded: Family<ShadowLabels, Counter>,
    counted: Mutex<HashMap<ShadowLabels, u64>>,
}

impl ShadowMetrics {
    /// Records one rule's window; counts it exceeded once per window.
    pub fn record(&self, labels: ShadowLabels, used: Option<u64>, max: u64, window_start: u64) {
        let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.max.get_or_create(&labels).set(gauge(max));
        let Some(used) = used else {
            self.used.get_or_create(&labels).set(-1);
            return;
        };
        self.used.get_or_create(&labels).set(gauge(used));
        if used <= max {
            return;
        }
        let mut counted = self
            .counted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if counted.get(&labels) == Some(&window_start) {
            return;
        }
        tracing::warn!(
            tenant = labels.tenant,
            rule = labels.rule,
            used,
            max,
            "shadow limit exceeded: enforced, it would be denying calls now"
        );
        self.exceeded.get_or_create(&labels).inc();
        counted.insert(labels, window_start);
    }
}
