//! Lease granting and ending: the fair-share decision for one sidecar's demand on one
//! limit, backed by a ledger hold (wallet), a window claim (quota) or nothing (no rule);
//! closing a returned lease; settling leases whose sidecar never came back. The rules are
//! in [`crate::lease`].

use std::sync::Arc;

use tollgate_core::Credits;
use tollgate_ledger::{HoldRequest, LedgerError, TenantId};
use tollgate_proto::v1::{
    Lease, LeaseGrant, LeaseRefusal, LeaseRefusalReason, LimitKey, SessionDown, session_down,
};

use crate::convert;
use crate::lease::{Backing, Demand, LeaseState, ShareInput, fair_grant};
use crate::metrics::Metrics;
use crate::sessions::{DownTx, send_now};
use crate::state::{State, now_ms};

/// Serves the demand recorded during the relearn window.
pub async fn grant_deferred(state: &Arc<State>) {
    let pending = state.lease_table().demands();
    for (key, sid, _) in pending {
        let Some(tx) = state.sessions.sender(&sid) else {
            continue;
        };
        let Some(limit) = limit_from_key(state, &key, &sid) else {
            continue;
        };
        grant_for(state, &sid, &limit, &tx).await;
    }
}

fn limit_from_key(state: &State, key: &str, sid: &str) -> Option<LimitKey> {
    // The table keeps the canonical key; find the structured key among the sidecar's
    // leases or rebuild the wallet key.
    if let Some(t) = key.strip_suffix("/wallet") {
        return Some(LimitKey::wallet(t));
    }
    state
        .lease_table()
        .of_sidecar(sid)
        .into_iter()
        .find(|l| l.limit_key == key)
        .map(|l| l.limit.clone())
}

/// Decides and sends one grant for `sid` on `limit` (fair share; see [`crate::lease`]).
///
/// Decisions on one limit key take turns (each reads that limit's demand and what is
/// free, then takes it); decisions on other keys run meanwhile. No cap depends on the
/// lock: the ledger's hold and the window claim each check their limit under the store's
/// row lock.
pub async fn grant_for(state: &Arc<State>, sid: &str, limit: &LimitKey, tx: &DownTx) {
    let key = limit.canonical();
    let _g = state.grant_locks.lock(&key).await;
    let now = now_ms();
    let Some(ask) = read_demand(state, &key, sid, now) else {
        return;
    };
    let granted = if limit.is_wallet() {
        take_from_wallet(state, sid, limit, &ask, now, tx).await
    } else if limit.scope == tollgate_proto::v1::Scope::Task as i32 {
        take_from_task(state, limit, &ask, now, tx).await
    } else {
        take_from_quota(state, limit, &ask, now, tx).await
    };
    let Some(granted) = granted else { return };
    let lease = record_lease(state, sid, limit, &key, granted);
    send_lease(state, sid, lease, tx).await;
}

/// One sidecar's demand on one limit, with every fresh sidecar's on the same limit.
struct Ask {
    demand: Demand,
    all_want: u64,
    all_held: u64,
}

impl Ask {
    /// This sidecar's fair share of `free`.
    fn share(&self, free: u64, max_lease: u64) -> u64 {
        fair_grant(ShareInput {
            free,
            mine_outstanding: self.demand.held,
            all_outstanding: self.all_held,
            my_want: self.demand.held.saturating_add(self.demand.desired),
            all_want: self.all_want,
            desired: self.demand.desired,
            max_lease,
        })
    }
}

/// A grant taken from its backing, not yet recorded or sent.
struct Taken {
    lease_id: String,
    amount: u64,
    expires_ms: u64,
    backing: Backing,
}

/// The recorded demand of `sid` on `key`; `None` if it wants nothing.
fn read_demand(state: &State, key: &str, sid: &str, now: u64) -> Option<Ask> {
    let fresh_since = now.saturating_sub(2 * ttl_ms(state));
    let t = state.lease_table();
    let demand = t.demand(key, sid)?;
    (demand.desired > 0).then(|| Ask {
        demand,
        all_want: t.all_want(key, fresh_since),
        all_held: t.all_held(key, fresh_since),
    })
}

fn ttl_ms(state: &State) -> u64 {
    state.lease_cfg.ttl_secs.saturating_mul(1000)
}

/// A wallet lease: the fair share of what is spendable, taken as a ledger hold. When
/// nothing is free the sidecar is told so ([`refuse`]).
async fn take_from_wallet(
    state: &State,
    sid: &str,
    limit: &LimitKey,
    ask: &Ask,
    now: u64,
    tx: &DownTx,
) -> Option<Taken> {
    let tenant = limit.tenant.as_str();
    let tid = TenantId::new(tenant).ok()?;
    let min_lease = state.lease_cfg.min_lease_micro;
    // The lock-free spendable read, not the full balance (burn rates, grants list):
    // this runs on every grant, and the hold below is the real check.
    let (free, binding) = match state.ledger.spendable(&tid).await {
        Ok((s, kind)) => (s.micros(), kind),
        Err(e) => {
            tracing::warn!(tenant, error = %e, "spendable for a lease failed");
            return None;
        }
    };
    let dry_reason = if binding == tollgate_core::LimitKind::HardCap {
        LeaseRefusalReason::HardCap
    } else {
        LeaseRefusalReason::WalletDry
    };
    if free < min_lease.min(ask.demand.desired).max(1) {
        refuse(state, tx, limit, dry_reason, now + ttl_ms(state));
        return None;
    }
    let g = ask.share(free, state.lease_cfg.max_lease_micro);
    if g == 0 || g < min_lease.min(ask.demand.desired) {
        return None;
    }
    let req = HoldRequest {
        owner: sid.to_string(),
        amount: Credits(g),
        min_amount: Credits(min_lease.min(g).max(1)),
        ttl_secs: state.lease_cfg.ttl_secs + state.lease_cfg.settle_grace_secs,
    };
    let hold = match state.ledger.hold(&tid, req).await {
        Ok(h) => h,
        Err(LedgerError::InsufficientFunds { .. }) => {
            refuse(state, tx, limit, dry_reason, now + ttl_ms(state));
            return None;
        }
        Err(e) => {
            tracing::warn!(tenant, error = %e, "hold for a lease failed");
            return None;
        }
    };
    Some(Taken {
        lease_id: lease_id_hold(tenant, hold.id.0),
        amount: hold.amount.micros(),
        expires_ms: now + ttl_ms(state),
        backing: Backing::Hold { hold_id: hold.id.0 },
    })
}

/// A lease on a windowed limit: unbounded but for the configured cap on one lease when no
/// enforced quota rule governs it, else the fair share of what the window has left,
/// claimed in the store. When the window is spent the sidecar is told so until its end.
async fn take_from_quota(
    state: &State,
    limit: &LimitKey,
    ask: &Ask,
    now: u64,
    tx: &DownTx,
) -> Option<Taken> {
    let tenant = limit.tenant.as_str();
    TenantId::new(tenant).ok()?;
    let rule = crate::policy_push::quota_rule_for(state, limit).await;
    let serial = state.lease_table().next_serial();
    let Some(rule) = rule else {
        return Some(Taken {
            lease_id: format!("u/{tenant}/{serial}"),
            // No rule limits it; the configured cap on one lease still does.
            amount: match state.lease_cfg.max_lease_micro {
                0 => ask.demand.desired,
                max => ask.demand.desired.min(max),
            },
            expires_ms: now + ttl_ms(state),
            backing: Backing::Unbounded,
        });
    };
    let h = convert::horizon(limit.window)?;
    let secs = now / 1000;
    let ws = h.window_start(secs).saturating_mul(1000);
    let we = h
        .window_end(secs)
        .map_or(u64::MAX, |e| e.saturating_mul(1000));
    // The window's claims are in the store, shared by every replica.
    let claimed = match state.policy.window_claimed(tenant, &rule.id, ws).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(tenant, rule = rule.id, error = %e, "reading a window claim failed");
            return None;
        }
    };
    let free = rule.max_micro.saturating_sub(claimed);
    if free == 0 {
        refuse(state, tx, limit, LeaseRefusalReason::WindowSpent, we);
        return None;
    }
    let g = ask.share(free, state.lease_cfg.max_lease_micro);
    if g == 0 {
        return None;
    }
    // Claim it: clamped on the row under its lock, so a replica that claimed meanwhile
    // is seen and the window's max is never passed.
    let g = match state
        .policy
        .claim_window(tenant, &rule.id, (ws, we), g, rule.max_micro)
        .await
    {
        Ok(0) => {
            refuse(state, tx, limit, LeaseRefusalReason::WindowSpent, we);
            return None;
        }
        Ok(g) => g,
        Err(e) => {
            tracing::warn!(tenant, rule = rule.id, error = %e, "claiming a window failed");
            return None;
        }
    };
    Some(Taken {
        lease_id: format!("w/{tenant}/{}/{ws}/{serial}", rule.id),
        amount: g,
        expires_ms: (now + ttl_ms(state)).min(we),
        backing: Backing::Window {
            rule_id: rule.id.clone(),
            window_start_ms: ws,
        },
    })
}

/// The claims row of a task's budget (a window that never ends).
pub fn task_claim_rule(task: &str) -> String {
    format!("task:{task}")
}

/// A lease on a task's budget: the fair share of what the task has left (its budget
/// less what is claimed, or less what posted usage spent if that is more), claimed in
/// the store; nothing for a task that was never registered or is closed (completed,
/// `max_calls` reached, budget spent), which the sidecar is told with `TASK_SPENT`.
async fn take_from_task(
    state: &State,
    limit: &LimitKey,
    ask: &Ask,
    now: u64,
    tx: &DownTx,
) -> Option<Taken> {
    let tenant = limit.tenant.as_str();
    let tid = TenantId::new(tenant).ok()?;
    let spent_refusal = |why: &str| {
        tracing::debug!(tenant, task = limit.task, why, "task lease refused");
        refuse(
            state,
            tx,
            limit,
            LeaseRefusalReason::TaskSpent,
            now + ttl_ms(state),
        );
    };
    let row = match state.ledger.task(&tid, &limit.task).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(tenant, task = limit.task, error = %e, "reading a task failed");
            return None;
        }
    };
    let Some((row, terms)) = row.and_then(|r| r.terms.map(|t| (r, t))) else {
        tracing::warn!(
            tenant,
            task = limit.task,
            "demand on a task never registered (TaskOpen)"
        );
        spent_refusal("not registered");
        return None;
    };
    if row.closed().is_some() {
        spent_refusal("closed");
        return None;
    }
    let rule = task_claim_rule(&limit.task);
    let claimed = match state.policy.window_claimed(tenant, &rule, 0).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(tenant, task = limit.task, error = %e, "reading a task claim failed");
            return None;
        }
    };
    let budget = terms.budget.micros();
    let free = budget.saturating_sub(claimed.max(row.spent.micros()));
    if free == 0 {
        spent_refusal("budget claimed");
        return None;
    }
    let g = ask.share(free, state.lease_cfg.max_lease_micro).min(free);
    if g == 0 {
        return None;
    }
    // Clamped on the row under its lock: the claims of every replica stay within the
    // budget.
    let g = match state
        .policy
        .claim_window(tenant, &rule, (0, u64::MAX), g, budget)
        .await
    {
        Ok(0) => {
            spent_refusal("budget claimed");
            return None;
        }
        Ok(g) => g,
        Err(e) => {
            tracing::warn!(tenant, task = limit.task, error = %e, "claiming a task's budget failed");
            return None;
        }
    };
    let serial = state.lease_table().next_serial();
    Some(Taken {
        lease_id: format!("k/{tenant}/{serial}"),
        amount: g,
        expires_ms: now + ttl_ms(state),
        backing: Backing::Task {
            task: limit.task.clone(),
        },
    })
}

/// Enters a taken grant in the lease table, counted as held until the sidecar's next
/// report; returns the lease as sent.
fn record_lease(state: &State, sid: &str, limit: &LimitKey, key: &str, g: Taken) -> Lease {
    let mut t = state.lease_table();
    t.insert(LeaseState {
        lease_id: g.lease_id.clone(),
        sidecar: sid.to_string(),
        limit: limit.clone(),
        limit_key: key.to_string(),
        amount: g.amount,
        returned: 0,
        expires_ms: g.expires_ms,
        backing: g.backing,
        closing_after_seq: None,
    });
    t.note_granted(key, sid, g.amount);
    Lease {
        lease_id: g.lease_id,
        limit: Some(limit.clone()),
        amount_micro: g.amount,
        expires_unix_ms: g.expires_ms,
    }
}

/// Tells `tx`'s sidecar that nothing of `limit` is free (see `LeaseRefusal` in the
/// protocol): its agents are denied at once until `retry_ms` or the next grant.
fn refuse(state: &State, tx: &DownTx, limit: &LimitKey, reason: LeaseRefusalReason, retry_ms: u64) {
    Metrics::count(&state.metrics.lease_refusals, reason.as_str_name());
    send_now(
        tx,
        SessionDown {
            msg: Some(session_down::Msg::Refusal(LeaseRefusal {
                limit: Some(limit.clone()),
                reason: reason as i32,
                retry_unix_ms: retry_ms,
            })),
        },
    );
}

/// Stores the grant, counts it and sends it.
async fn send_lease(state: &State, sid: &str, lease: Lease, tx: &DownTx) {
    // Stored before it is sent: a Register after a restart is believed only for leases
    // found here. If the write fails the grant still stands (the hold or window claim is
    // taken); the sidecar just cannot have it honoured after a restart.
    if let Err(e) = state.policy.put_lease(sid, &lease).await {
        tracing::warn!(sidecar = sid, lease = lease.lease_id, error = %e, "recording a lease failed");
    }
    state.metrics.leases_granted.inc();
    state
        .metrics
        .leases_granted_micro
        .inc_by(lease.amount_micro);
    send_now(
        tx,
        SessionDown {
            msg: Some(session_down::Msg::Grant(LeaseGrant { lease: Some(lease) })),
        },
    );
}

pub(crate) fn lease_id_hold(tenant: &str, hold: u64) -> String {
    format!("h/{tenant}/{hold}")
}

/// Removes a lease and ends its hold.
pub async fn close_lease(state: &State, lease_id: &str, at_expiry: bool) {
    let Some(l) = state.lease_table().remove(lease_id) else {
        return;
    };
    forget_lease(state, &l.sidecar, lease_id).await;
    if let Backing::Hold { hold_id } = l.backing {
        settle_hold(state, &l.limit.tenant, hold_id, &l.sidecar, at_expiry).await;
    }
}

/// Drops the stored grant of a lease that ended.
pub async fn forget_lease(state: &State, sidecar: &str, lease_id: &str) {
    if let Err(e) = state.policy.delete_lease(sidecar, lease_id).await {
        // Harmless: it is pruned after its expiry, and a hold lease also needs its hold.
        tracing::debug!(sidecar, lease_id, error = %e, "forgetting a lease failed");
    }
}
/// Settles leases whose expiry plus grace has passed (the "never came back" rule; see
/// [`crate::lease`]).
pub async fn settle_due_leases(state: &State) {
    let now = now_ms();
    let grace = state.lease_cfg.settle_grace_secs.saturating_mul(1000);
    // Every lease stays in the table for the grace after its expiry: late batches still
    // draw from a wallet lease's hold, and the closing return a sidecar sends when a
    // window lease expires still hands its unspent credits back to the window's claim.
    let due: Vec<_> = {
        let mut t = state.lease_table();
        let ids = t.due(now, grace);
        ids.into_iter().filter_map(|id| t.remove(&id)).collect()
    };
    for l in due {
        forget_lease(state, &l.sidecar, &l.lease_id).await;
        if let Backing::Hold { hold_id } = l.backing {
            settle_hold(state, &l.limit.tenant, hold_id, &l.sidecar, true).await;
        }
    }
    // Grants recorded by a replica that died before it ended them.
    if let Err(e) = state.policy.prune_leases(now.saturating_sub(grace)).await {
        tracing::debug!(error = %e, "pruning ended leases failed");
    }
}

/// Ends the hold behind a wallet lease; counts it as unreported when its sidecar is gone.
pub async fn settle_hold(
    state: &State,
    tenant: &str,
    hold_id: u64,
    sidecar: &str,
    at_expiry: bool,
) {
    let Ok(t) = TenantId::new(tenant) else { return };
    // `settle_hold` commits a timeout that passed and returns the final state, so what is
    // counted is what the store released, whoever ended the hold.
    match state
        .ledger
        .settle_hold(&t, tollgate_ledger::HoldId(hold_id))
        .await
    {
        Ok(h) => {
            if at_expiry && !state.sessions.is_live(sidecar) {
                state.metrics.leases_unreported.inc();
                state
                    .metrics
                    .leases_unreported_micro
                    .inc_by(h.released.micros());
                tracing::info!(
                    tenant,
                    hold_id,
                    sidecar,
                    released = h.released.micros(),
                    "lease settled at expiry without its sidecar"
                );
            }
        }
        Err(e) => tracing::warn!(tenant, hold_id, error = %e, "settling a lease failed"),
    }
}
