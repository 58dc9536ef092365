//! The background tasks: lease settlement, the ledger's sweep, policy sync and the
//! pruning of ended windows and old denial counts every second; alert evaluation, webhook delivery and shadow measurement every second; and,
//! once, serving the demand deferred during the relearn window.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tollgate_ledger::TenantId;

use crate::policy_store::PendingWebhook;
use crate::state::{State, now_ms};

/// Spawns the loops; each ends when `shutdown` becomes true.
pub fn spawn_loops(state: Arc<State>, shutdown: watch::Receiver<bool>) {
    // Lease settlement and the ledger's sweep, every second.
    let s = state.clone();
    let mut stop = shutdown.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|v| *v) => break,
            }
            housekeeping(&s).await;
        }
    });
    // Alert evaluation for tenants with new usage, then webhook delivery.
    let s = state.clone();
    let mut stop = shutdown.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|v| *v) => break,
            }
            evaluate_alerts(&s).await;
            deliver_webhooks(&s).await;
            crate::shadow::evaluate(&s).await;
        }
    });
    // After the relearn window: serve the demand that arrived during it.
    let s = state;
    let mut stop = shutdown;
    tokio::spawn(async move {
        let wait = s.relearn_until_ms().saturating_sub(now_ms());
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(wait + 10)) => {}
            _ = stop.wait_for(|v| *v) => return,
        }
        crate::leasing::grant_deferred(&s).await;
    });
}

/// One pass of the every-second housekeeping: settle leases past their expiry and grace,
/// the ledger's sweep, policy sync from the store (replicas), pruning ended windows and
/// old denial counts. The deterministic simulation (`sim/`) calls it on its own clock.
pub async fn housekeeping(s: &Arc<State>) {
    crate::leasing::settle_due_leases(s).await;
    match s.ledger.sweep(1000).await {
        Ok(r) => {
            s.metrics.batches_pruned.inc_by(r.batches_pruned);
        }
        Err(e) => tracing::warn!(error = %e, "ledger sweep failed"),
    }
    // Replicas: push what another replica changed; forget ended windows.
    if let Err(e) = crate::policy_push::sync_policies_from_store(s).await {
        tracing::warn!(error = %e, "policy sync from the store failed");
    }
    if let Err(e) = s.policy.prune_windows(now_ms()).await {
        tracing::warn!(error = %e, "pruning ended quota windows failed");
    }
    let day_ago = now_ms().saturating_sub(crate::denials::KEEP_MS);
    if let Err(e) = s.policy.prune_denials(day_ago).await {
        tracing::warn!(error = %e, "pruning old denial counts failed");
    }
}

async fn evaluate_alerts(state: &State) {
    let tenants: Vec<String> = {
        let mut d = state
            .alert_dirty
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        std::mem::take(&mut *d).into_iter().collect()
    };
    for tenant in tenants {
        let Ok(t) = TenantId::new(tenant.as_str()) else {
            continue;
        };
        let events = match state.ledger.evaluate_alerts(&t).await {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(tenant, error = %e, "alert evaluation failed");
                continue;
            }
        };
        if events.is_empty() {
            continue;
        }
        let rules = state.policy.alert_rules(&tenant).await.unwrap_or_default();
        for ev in events {
            let Some(rule) = rules
                .iter()
                .find(|r| r.id == ev.rule_id)
                .filter(|r| !r.webhook_url.is_empty())
            else {
                continue;
            };
            let secret = rule.webhook_secret.as_bytes().to_vec();
            if !state.webhook.can_sign(&secret) {
                tracing::warn!(
                    tenant,
                    rule = ev.rule_id,
                    "alert fired but neither the rule nor the authority has a webhook secret; not delivered"
                );
                continue;
            }
            let w = PendingWebhook {
                delivery: format!("{}-{}-{}", ev.tenant, ev.rule_id, ev.audit_seq),
                url: rule.webhook_url.clone(),
                body: serde_json::to_vec(&ev).unwrap_or_default(),
                secret,
                attempts: 0,
            };
            // Queued first: a restart or a dead replica delays the delivery, never loses it.
            if let Err(e) = state.policy.enqueue_webhook(&w, now_ms()).await {
                tracing::error!(tenant, delivery = w.delivery, error = %e, "cannot queue an alert webhook");
            }
        }
    }
}

/// Claims due webhooks and sends each in its own task (a slow receiver delays only its
/// own deliveries). A claim lasts a minute, longer than an attempt's 10 s timeout.
async fn deliver_webhooks(state: &Arc<State>) {
    let sender = state.webhook.clone();
    let now = now_ms();
    let due = match state.policy.claim_webhooks(now, 60_000, 64).await {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "claiming webhooks failed");
            return;
        }
    };
    for w in due {
        let (sender, state) = (sender.clone(), state.clone());
        tokio::spawn(async move { sender.attempt_queued(&state.policy, w, now).await });
    }
}
