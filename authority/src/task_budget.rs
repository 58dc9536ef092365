//! Tasks at the authority: registrations (`SessionUp.TaskOpen`) and what happens when
//! posted usage closes a task. The budget itself is leased in [`crate::leasing`] (a
//! claim on the task's row, never past its budget); the rules are in [`crate::lease`].
//!
//! - **Registration.** The first registration of a (tenant, task) sets its terms (budget,
//!   `max_calls`) in the ledger; a later one with the same terms changes nothing (another
//!   pod, a restarted sidecar); one with other terms is logged and counted
//!   (`tollgate_authority_task_opens_total{result="conflict"}`) and never applied.
//! - **Closing.** When a batch completes a task (its completion record, one Agentic Work
//!   Unit) or brings it to its `max_calls` calls or its budget, the ledger lists it in the
//!   batch's outcome; every sidecar holding leases on it is then told to shrink them to
//!   nothing, and later demands are refused with `TASK_SPENT`. So `max_calls` holds
//!   fleet-wide up to the calls already leased for when it was reached.

use tollgate_core::Credits;
use tollgate_ledger::{BatchOutcome, TaskClosed, TaskOpened, TaskTerms, TenantId};
use tollgate_proto::v1 as pb;

use crate::metrics::Metrics;
use crate::sessions::Registration;
use crate::state::State;

/// Registers the task a sidecar's agent opened (see the module docs).
pub async fn open(state: &State, sid: &str, reg: &Registration, t: pb::TaskOpen) {
    let refuse = |why: &str| {
        Metrics::count(&state.metrics.task_opens, "invalid");
        tracing::warn!(
            sidecar = sid,
            tenant = t.tenant,
            task = t.task,
            why,
            "task registration refused"
        );
    };
    if !reg.tenants.contains(&t.tenant) {
        return refuse("this sidecar is not registered for the tenant");
    }
    let Ok(tenant) = TenantId::new(t.tenant.as_str()) else {
        return refuse("invalid tenant id");
    };
    let terms = TaskTerms {
        budget: Credits(t.budget_micro),
        max_calls: (t.max_calls > 0).then_some(u64::from(t.max_calls)),
    };
    match state.ledger.open_task(&tenant, &t.task, terms).await {
        Ok(TaskOpened::Created) => Metrics::count(&state.metrics.task_opens, "created"),
        Ok(TaskOpened::Same) => Metrics::count(&state.metrics.task_opens, "same"),
        Ok(TaskOpened::Conflict { kept }) => {
            Metrics::count(&state.metrics.task_opens, "conflict");
            tracing::warn!(
                sidecar = sid,
                tenant = t.tenant,
                task = t.task,
                budget_micro = t.budget_micro,
                max_calls = t.max_calls,
                kept_budget_micro = kept.budget.micros(),
                kept_max_calls = kept.max_calls.unwrap_or(0),
                "task registered again with other terms: the first registration's terms stay"
            );
        }
        Err(tollgate_ledger::LedgerError::InvalidInput(why)) => refuse(&why),
        Err(e) => {
            // The sidecar registers again (a reconnect); its demands on the task are
            // refused until then.
            tracing::warn!(sidecar = sid, tenant = t.tenant, task = t.task, error = %e, "storing a task registration failed");
        }
    }
}

/// After a batch is posted: the tasks it closed lease nothing more, and sidecars holding
/// leases on them shrink those to nothing.
pub async fn closed(state: &State, o: &BatchOutcome) {
    for t in &o.tenants {
        for task in &t.tasks_closed {
            let why = match state.ledger.task(&t.tenant, task).await {
                Ok(Some(row)) => match row.closed() {
                    Some(TaskClosed::Completed) => "completed",
                    Some(TaskClosed::MaxCalls) => "max_calls",
                    Some(TaskClosed::Budget) => "budget",
                    None => continue,
                },
                _ => "unknown",
            };
            Metrics::count(&state.metrics.tasks_closed, why);
            tracing::info!(
                tenant = t.tenant.as_str(),
                task,
                why,
                "task closed: no more leases"
            );
            let limit = pb::LimitKey::task(t.tenant.as_str(), task.as_str());
            crate::policy_push::push_ceilings(state, &limit, 0).await;
        }
    }
}
