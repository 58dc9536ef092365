//! The admin service: tenants, grants, price books, plans, quotas, alert rules, balance,
//! statements and the audit chain. Every change that sidecars enforce (cap, quota, price
//! book) is pushed to the tenant's live sessions before the call returns.

use std::sync::Arc;

use tollgate_core::{Credits, PriceBook as CorePriceBook};
use tollgate_ledger::{
    AlertCondition, AlertRule as LedgerAlertRule, DeductionKey, DeductionOrder, GrantKind,
    GrantSpec, ResetPeriod, TenantConfig, TenantId,
};
use tollgate_proto::v1::admin_service_server::AdminService;
use tollgate_proto::v1::{self as pb, SessionDown, session_down};
use tonic::{Request, Response, Status};

use crate::auth::Principal;
use crate::convert::{self, invalid};
pub use crate::policy_push::{
    policy_view, price_book_view, push_policy, quota_rule_for, sync_policies_from_store,
};
use crate::policy_push::{push_ceilings, stored_policy, update_policy, view_of, wallet_room};
use crate::reports;
use crate::state::{State, ledger_status, now_ms, store_status as store_err, tenant_id as tid};

/// The service.
#[derive(Debug, Clone)]
pub struct AdminSvc {
    state: Arc<State>,
}

impl AdminSvc {
    /// Over shared state.
    pub fn new(state: Arc<State>) -> AdminSvc {
        AdminSvc { state }
    }

    fn admin<T>(&self, req: &Request<T>, what: &str) -> Result<(), Status> {
        self.state
            .auth
            .authenticate(req.metadata())?
            .require_admin(what)
    }

    /// Admin, or a reader/sidecar credential scoped to `tenant`.
    /// Which tenants an audit call covers: every tenant (admin only) when none is named,
    /// else the one named (its reader may ask).
    fn audit_scope<T>(
        &self,
        req: &Request<T>,
        tenant: &str,
        call: &str,
    ) -> Result<Option<Vec<TenantId>>, Status> {
        if tenant.is_empty() {
            self.admin(req, &format!("{call} of every tenant"))?;
            return Ok(None);
        }
        let t = tid("tenant", tenant)?;
        self.reader(req, tenant)?;
        Ok(Some(vec![t]))
    }

    /// The seats of the tenant's plan (0 without a plan).
    async fn seats(&self, t: &TenantId) -> Result<u64, Status> {
        let cfg = self.state.ledger.config(t).await.map_err(ledger_status)?;
        Ok(cfg.plan.map_or(0, |p| p.seats))
    }

    /// The tenant's credit pack, if it prices its credits in a currency.
    async fn credit_pack(&self, t: &TenantId) -> Result<Option<tollgate_core::CreditPack>, Status> {
        let cfg = self.state.ledger.config(t).await.map_err(ledger_status)?;
        Ok(cfg.credit_pack)
    }

    fn reader<T>(&self, req: &Request<T>, tenant: &str) -> Result<Principal, Status> {
        let p = self.state.auth.authenticate(req.metadata())?;
        p.check_tenant(tenant)?;
        Ok(p)
    }
}

fn rule_id(field: &str, s: &str) -> Result<String, Status> {
    if s.is_empty()
        || s.len() > 128
        || !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'))
    {
        return Err(invalid(
            field,
            format!("rule id {s:?} is invalid: use 1 to 128 characters of A-Z a-z 0-9 . _ - :"),
        ));
    }
    Ok(s.to_string())
}

fn secs_to_ms(s: u64) -> u64 {
    s.saturating_mul(1000)
}

fn grant_to_wire(g: &tollgate_ledger::Grant) -> pb::Grant {
    pb::Grant {
        grant_id: g.id.0.to_string(),
        tenant: g.tenant.to_string(),
        kind: match g.kind {
            GrantKind::Trial => pb::GrantKind::Trial,
            GrantKind::Promotional => pb::GrantKind::Promotional,
            GrantKind::Purchased => pb::GrantKind::Purchased,
            GrantKind::RecurringAllowance => pb::GrantKind::Recurring,
        } as i32,
        amount_micro: g.amount.micros(),
        priority: i32::try_from(g.priority).unwrap_or(i32::MAX),
        starts_unix_ms: secs_to_ms(g.starts_at),
        expires_unix_ms: g.expires_at.map_or(0, secs_to_ms),
        reset: match g.reset {
            None => pb::ResetPeriod::None,
            Some(ResetPeriod::Monthly) => pb::ResetPeriod::Monthly,
            Some(ResetPeriod::Annual) => pb::ResetPeriod::Annual,
        } as i32,
        label: g.reference.clone().unwrap_or_default(),
        remaining_micro: g.remaining().micros(),
    }
}

fn order_to_wire(o: &DeductionOrder) -> pb::DeductionOrder {
    if *o == DeductionOrder::expiry_first() {
        pb::DeductionOrder::ExpiryFirst
    } else if o.keys == [DeductionKey::Oldest] {
        pb::DeductionOrder::OldestFirst
    } else {
        pb::DeductionOrder::Default
    }
}

/// A rule as readers see it: its webhook secret is write-only.
fn redact_rule(r: pb::AlertRule) -> pb::AlertRule {
    pb::AlertRule {
        has_webhook_secret: !r.webhook_secret.is_empty(),
        webhook_secret: String::new(),
        ..r
    }
}

fn validate_limit(field: &str, l: Option<&pb::LimitKey>) -> Result<pb::LimitKey, Status> {
    let l = l.ok_or_else(|| invalid(field, "is missing"))?;
    convert::tenant_id(&format!("{field}.tenant"), &l.tenant)?;
    match pb::Scope::try_from(l.scope) {
        Ok(pb::Scope::Tenant) => {}
        Ok(pb::Scope::Agent) => {
            convert::plain_id(&format!("{field}.agent"), &l.agent)?;
        }
        Ok(pb::Scope::Task) => {
            return Err(invalid(
                &format!("{field}.scope"),
                "a task's budget is set when the task is opened, not as a quota",
            ));
        }
        Ok(pb::Scope::Tier) => {
            if !matches!(
                pb::Tier::try_from(l.tier),
                Ok(pb::Tier::Interactive | pb::Tier::Scheduler | pb::Tier::Background)
            ) {
                return Err(invalid(
                    &format!("{field}.tier"),
                    "set a tier for SCOPE_TIER",
                ));
            }
        }
        Err(_) => {
            return Err(invalid(
                &format!("{field}.scope"),
                format!("unknown scope {}", l.scope),
            ));
        }
    }
    Ok(l.clone())
}

#[tonic::async_trait]
impl AdminService for AdminSvc {
    async fn create_tenant(
        &self,
        req: Request<pb::CreateTenantRequest>,
    ) -> Result<Response<pb::Tenant>, Status> {
        self.admin(&req, "CreateTenant")?;
        let r = req.into_inner();
        let t = tid("tenant", &r.tenant)?;
        let order = match pb::DeductionOrder::try_from(r.deduction_order) {
            Ok(pb::DeductionOrder::Default) => DeductionOrder::default(),
            Ok(pb::DeductionOrder::ExpiryFirst) => DeductionOrder::expiry_first(),
            Ok(pb::DeductionOrder::OldestFirst) => DeductionOrder {
                keys: vec![DeductionKey::Oldest],
            },
            Err(_) => {
                return Err(invalid(
                    "deduction_order",
                    format!("unknown value {}", r.deduction_order),
                ));
            }
        };
        if r.display_name.len() > 256 {
            return Err(invalid("display_name", "at most 256 bytes"));
        }
        self.state
            .ledger
            .create_tenant(
                &t,
                TenantConfig {
                    deduction_order: order,
                    ..TenantConfig::default()
                },
            )
            .await
            .map_err(ledger_status)?;
        if !r.display_name.is_empty() {
            self.state
                .policy
                .put_display_name(t.as_str(), &r.display_name)
                .await
                .map_err(store_err)?;
        }
        Ok(Response::new(pb::Tenant {
            tenant: t.to_string(),
            display_name: r.display_name,
            deduction_order: r.deduction_order,
            created_unix_ms: now_ms(),
        }))
    }

    async fn list_tenants(
        &self,
        req: Request<pb::ListTenantsRequest>,
    ) -> Result<Response<pb::ListTenantsResponse>, Status> {
        self.admin(&req, "ListTenants")?;
        let mut out = Vec::new();
        for t in self.state.ledger.tenants().await.map_err(ledger_status)? {
            let row = self
                .state
                .ledger
                .store()
                .wallet(&t)
                .await
                .map_err(ledger_status)?;
            let (order, created) = row
                .map(|w| {
                    (
                        order_to_wire(&w.config.deduction_order),
                        secs_to_ms(w.created_at),
                    )
                })
                .unwrap_or((pb::DeductionOrder::Default, 0));
            out.push(pb::Tenant {
                display_name: self
                    .state
                    .policy
                    .display_name(t.as_str())
                    .await
                    .map_err(store_err)?
                    .unwrap_or_default(),
                tenant: t.to_string(),
                deduction_order: order as i32,
                created_unix_ms: created,
            });
        }
        Ok(Response::new(pb::ListTenantsResponse { tenants: out }))
    }

    async fn add_grant(
        &self,
        req: Request<pb::AddGrantRequest>,
    ) -> Result<Response<pb::Grant>, Status> {
        self.admin(&req, "AddGrant")?;
        let g = req
            .into_inner()
            .grant
            .ok_or_else(|| invalid("grant", "is missing"))?;
        let t = tid("grant.tenant", &g.tenant)?;
        let kind = match pb::GrantKind::try_from(g.kind) {
            Ok(pb::GrantKind::Trial) => GrantKind::Trial,
            Ok(pb::GrantKind::Promotional) => GrantKind::Promotional,
            Ok(pb::GrantKind::Purchased) => GrantKind::Purchased,
            Ok(pb::GrantKind::Recurring) => GrantKind::RecurringAllowance,
            _ => {
                return Err(invalid(
                    "grant.kind",
                    "set one of trial, promotional, purchased, recurring",
                ));
            }
        };
        if g.amount_micro == 0 {
            return Err(invalid("grant.amount_micro", "must be above 0"));
        }
        let priority = u32::try_from(g.priority)
            .map_err(|_| invalid("grant.priority", "must not be negative"))?;
        let mut spec = GrantSpec::new(kind, Credits(g.amount_micro)).priority(priority);
        if g.starts_unix_ms > 0 {
            spec = spec.starts_at(g.starts_unix_ms / 1000);
        }
        if g.expires_unix_ms > 0 {
            spec = spec.expires_at(g.expires_unix_ms / 1000);
        }
        match pb::ResetPeriod::try_from(g.reset) {
            Ok(pb::ResetPeriod::None) => {}
            Ok(pb::ResetPeriod::Monthly) => spec = spec.reset(ResetPeriod::Monthly),
            Ok(pb::ResetPeriod::Annual) => spec = spec.reset(ResetPeriod::Annual),
            Err(_) => return Err(invalid("grant.reset", format!("unknown value {}", g.reset))),
        }
        if !g.label.is_empty() {
            spec = spec.reference(g.label.clone());
        }
        let out = self
            .state
            .ledger
            .grant(&t, spec)
            .await
            .map_err(ledger_status)?;
        Ok(Response::new(grant_to_wire(&out)))
    }

    async fn list_grants(
        &self,
        req: Request<pb::ListGrantsRequest>,
    ) -> Result<Response<pb::ListGrantsResponse>, Status> {
        let tenant = req.get_ref().tenant.clone();
        let t = tid("tenant", &tenant)?;
        self.reader(&req, &tenant)?;
        let gs = self
            .state
            .ledger
            .grants(&t, true)
            .await
            .map_err(ledger_status)?;
        Ok(Response::new(pb::ListGrantsResponse {
            grants: gs.iter().map(grant_to_wire).collect(),
        }))
    }

    async fn set_price_book(
        &self,
        req: Request<pb::SetPriceBookRequest>,
    ) -> Result<Response<pb::PriceBook>, Status> {
        self.admin(&req, "SetPriceBook")?;
        let mut wire = req
            .into_inner()
            .price_book
            .ok_or_else(|| invalid("price_book", "is missing"))?;
        let t = tid("price_book.tenant", &wire.tenant)?;
        let current = self
            .state
            .ledger
            .price_book(&t)
            .await
            .map_err(ledger_status)?
            .map_or(0, |b| b.version());
        wire.version = current + 1;
        let spec = convert::price_book_spec(&wire)?;
        let book = CorePriceBook::new(spec.clone()).map_err(|e| invalid("price_book", e))?;
        self.state
            .ledger
            .set_price_book(&t, &book)
            .await
            .map_err(ledger_status)?;
        let out = convert::price_book_to_wire(t.as_str(), &spec, now_ms());
        update_policy(&self.state, t.as_str(), |_| Ok(())).await?;
        let n = self.state.sessions.push(
            t.as_str(),
            &SessionDown {
                msg: Some(session_down::Msg::PriceBook(pb::PriceBookUpdate {
                    price_book: Some(out.clone()),
                })),
            },
        );
        self.state.metrics.policy_pushes.inc_by(n as u64);
        push_policy(&self.state, t.as_str()).await?;
        Ok(Response::new(out))
    }

    async fn get_price_book(
        &self,
        req: Request<pb::GetPriceBookRequest>,
    ) -> Result<Response<pb::PriceBook>, Status> {
        let r = req.get_ref().clone();
        let t = tid("tenant", &r.tenant)?;
        self.reader(&req, &r.tenant)?;
        let b = price_book_view(&self.state, t.as_str())
            .await?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "tenant {t} has no price book: set one with `tollgate ctl price-book set`"
                ))
            })?;
        if r.version != 0 && r.version != b.version {
            return Err(Status::not_found(format!(
                "only the version in force ({}) can be read; version {} is in the audit chain",
                b.version, r.version
            )));
        }
        Ok(Response::new(b))
    }

    async fn set_plan(
        &self,
        req: Request<pb::SetPlanRequest>,
    ) -> Result<Response<pb::Plan>, Status> {
        self.admin(&req, "SetPlan")?;
        let p = req
            .into_inner()
            .plan
            .ok_or_else(|| invalid("plan", "is missing"))?;
        let t = tid("plan.tenant", &p.tenant)?;
        let old_cap = self
            .state
            .ledger
            .config(&t)
            .await
            .map_err(ledger_status)?
            .plan
            .and_then(|pl| pl.hard_cap)
            .map(|c| c.micros());
        let plan = tollgate_core::Plan {
            included_credits: Credits(p.included_micro),
            included_requests: p.included_requests,
            overage_request_price: Credits(p.overage_request_price_micro),
            consumption_floor: Credits(p.consumption_floor_micro),
            hard_cap: (p.hard_cap_micro > 0 && !p.hard_cap_shadow)
                .then_some(Credits(p.hard_cap_micro)),
            seats: p.seats,
            seat_price: Credits(p.seat_price_micro),
            included_credits_per_seat: Credits(p.included_micro_per_seat),
            included_requests_per_seat: p.included_requests_per_seat,
        };
        plan.validate().map_err(|e| invalid("plan", e))?;
        self.state
            .ledger
            .set_plan(&t, Some(plan))
            .await
            .map_err(ledger_status)?;
        update_policy(&self.state, t.as_str(), |stored| {
            stored.hard_cap_shadow = p.hard_cap_shadow;
            stored.hard_cap_micro = if p.hard_cap_shadow {
                p.hard_cap_micro
            } else {
                0
            };
            Ok(())
        })
        .await?;
        push_policy(&self.state, t.as_str()).await?;
        let new_cap = (p.hard_cap_micro > 0 && !p.hard_cap_shadow).then_some(p.hard_cap_micro);
        let lowered = match (old_cap, new_cap) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(o), Some(n)) => n < o,
        };
        if lowered {
            let b = self.state.ledger.balance(&t).await.map_err(ledger_status)?;
            let room = wallet_room(&b, new_cap.unwrap_or(0));
            push_ceilings(&self.state, &pb::LimitKey::wallet(t.as_str()), room).await;
        }
        Ok(Response::new(p))
    }

    async fn get_plan(
        &self,
        req: Request<pb::GetPlanRequest>,
    ) -> Result<Response<pb::Plan>, Status> {
        let tenant = req.get_ref().tenant.clone();
        let t = tid("tenant", &tenant)?;
        self.reader(&req, &tenant)?;
        let cfg = self.state.ledger.config(&t).await.map_err(ledger_status)?;
        let stored = stored_policy(&self.state, &tenant).await?;
        let plan = cfg.plan.ok_or_else(|| {
            Status::not_found(format!(
                "tenant {t} has no plan: set one with `tollgate ctl plan set`"
            ))
        })?;
        Ok(Response::new(pb::Plan {
            tenant,
            included_micro: plan.included_credits.micros(),
            hard_cap_micro: if stored.hard_cap_shadow {
                stored.hard_cap_micro
            } else {
                plan.hard_cap.map_or(0, |c| c.micros())
            },
            hard_cap_shadow: stored.hard_cap_shadow,
            included_requests: plan.included_requests,
            overage_request_price_micro: plan.overage_request_price.micros(),
            consumption_floor_micro: plan.consumption_floor.micros(),
            seats: plan.seats,
            seat_price_micro: plan.seat_price.micros(),
            included_micro_per_seat: plan.included_credits_per_seat.micros(),
            included_requests_per_seat: plan.included_requests_per_seat,
        }))
    }

    async fn set_quota(
        &self,
        req: Request<pb::SetQuotaRequest>,
    ) -> Result<Response<pb::TenantPolicy>, Status> {
        self.admin(&req, "SetQuota")?;
        let rule = req
            .into_inner()
            .rule
            .ok_or_else(|| invalid("rule", "is missing"))?;
        let id = rule_id("rule.id", &rule.id)?;
        let limit = validate_limit("rule.limit", rule.limit.as_ref())?;
        if convert::horizon(limit.window).is_none() {
            return Err(invalid(
                "rule.limit.window",
                "a quota needs a window: minute, hour or month",
            ));
        }
        if rule.max_micro == 0 {
            return Err(invalid(
                "rule.max_micro",
                "must be above 0 (delete the rule to lift it)",
            ));
        }
        let t = tid("rule.limit.tenant", &limit.tenant)?;
        self.state.ledger.config(&t).await.map_err(ledger_status)?;
        let old = update_policy(&self.state, t.as_str(), |p| {
            let old = p.quotas.iter().find(|q| q.id == id).map(|q| q.max_micro);
            p.quotas.retain(|q| q.id != id);
            p.quotas.push(pb::QuotaRule {
                id: id.clone(),
                limit: Some(limit.clone()),
                max_micro: rule.max_micro,
                shadow: rule.shadow,
            });
            Ok(old)
        })
        .await?;
        push_policy(&self.state, t.as_str()).await?;
        if !rule.shadow && old.is_none_or(|o| rule.max_micro < o) {
            push_ceilings(&self.state, &limit, rule.max_micro).await;
        }
        Ok(Response::new(policy_view(&self.state, t.as_str()).await?))
    }

    async fn delete_quota(
        &self,
        req: Request<pb::DeleteQuotaRequest>,
    ) -> Result<Response<pb::TenantPolicy>, Status> {
        self.admin(&req, "DeleteQuota")?;
        let r = req.into_inner();
        let t = tid("tenant", &r.tenant)?;
        update_policy(&self.state, t.as_str(), |p| {
            let before = p.quotas.len();
            p.quotas.retain(|q| q.id != r.rule_id);
            if p.quotas.len() == before {
                return Err(Status::not_found(format!(
                    "tenant {t} has no quota rule {:?}",
                    r.rule_id
                )));
            }
            Ok(())
        })
        .await?;
        push_policy(&self.state, t.as_str()).await?;
        Ok(Response::new(policy_view(&self.state, t.as_str()).await?))
    }

    async fn get_policy(
        &self,
        req: Request<pb::GetPolicyRequest>,
    ) -> Result<Response<pb::TenantPolicy>, Status> {
        let tenant = req.get_ref().tenant.clone();
        tid("tenant", &tenant)?;
        self.reader(&req, &tenant)?;
        // Read through to the store: another replica may have changed it since this
        // one's cache was filled (the sync loop catches up within a second; a reader
        // should not wait for that).
        // (Not cached here: the sync loop pushes what changed when it caches it.)
        let stored = match self.state.policy.policy(&tenant).await.map_err(store_err)? {
            Some(p) => p,
            None => stored_policy(&self.state, &tenant).await?,
        };
        Ok(Response::new(view_of(&self.state, &tenant, stored).await?))
    }

    async fn set_tier_floor(
        &self,
        req: Request<pb::SetTierFloorRequest>,
    ) -> Result<Response<pb::TenantPolicy>, Status> {
        self.admin(&req, "SetTierFloor")?;
        let r = req.into_inner();
        let t = tid("tenant", &r.tenant)?;
        let floor = r.floor.ok_or_else(|| invalid("floor", "is missing"))?;
        if !matches!(
            pb::Tier::try_from(floor.tier),
            Ok(pb::Tier::Interactive | pb::Tier::Scheduler | pb::Tier::Background)
        ) {
            return Err(invalid(
                "floor.tier",
                "set interactive, scheduler or background",
            ));
        }
        if floor.floor_permille > 1000 {
            return Err(invalid("floor.floor_permille", "must be at most 1000"));
        }
        self.state.ledger.config(&t).await.map_err(ledger_status)?;
        update_policy(&self.state, t.as_str(), |p| {
            p.tier_floors.retain(|f| f.tier != floor.tier);
            if floor.floor_micro > 0 || floor.floor_permille > 0 {
                p.tier_floors.push(floor);
            }
            Ok(())
        })
        .await?;
        push_policy(&self.state, t.as_str()).await?;
        Ok(Response::new(policy_view(&self.state, t.as_str()).await?))
    }

    async fn set_alert_rule(
        &self,
        req: Request<pb::SetAlertRuleRequest>,
    ) -> Result<Response<pb::AlertRule>, Status> {
        self.admin(&req, "SetAlertRule")?;
        let rule = req
            .into_inner()
            .rule
            .ok_or_else(|| invalid("rule", "is missing"))?;
        let t = tid("rule.tenant", &rule.tenant)?;
        let id = rule_id("rule.id", &rule.id)?;
        let condition = match rule.condition {
            Some(pb::alert_rule::Condition::PercentUsedPermille(pm)) => {
                if pm == 0 || pm > 1000 || pm % 10 != 0 {
                    return Err(invalid(
                        "rule.percent_used_permille",
                        "must be a whole percent: 10 to 1000 in steps of 10",
                    ));
                }
                AlertCondition::BudgetUsedPercent { percent: pm / 10 }
            }
            Some(pb::alert_rule::Condition::DepletionWithinHours(h)) => {
                if h == 0 {
                    return Err(invalid("rule.depletion_within_hours", "must be above 0"));
                }
                AlertCondition::DepletionWithin { hours: h }
            }
            None => {
                return Err(invalid(
                    "rule.condition",
                    "set percent_used_permille or depletion_within_hours",
                ));
            }
        };
        if !rule.webhook_url.is_empty() {
            self.state
                .webhook
                .check_target(&rule.webhook_url)
                .map_err(|e| invalid("rule.webhook_url", e))?;
        }
        let mut rules = self
            .state
            .ledger
            .config(&t)
            .await
            .map_err(ledger_status)?
            .alert_rules;
        rules.retain(|r| r.id != id);
        rules.push(LedgerAlertRule {
            id: id.clone(),
            condition,
        });
        self.state
            .ledger
            .set_alert_rules(&t, rules)
            .await
            .map_err(ledger_status)?;
        let stored = pb::AlertRule {
            id,
            has_webhook_secret: !rule.webhook_secret.is_empty(),
            ..rule
        };
        self.state
            .policy
            .put_alert_rule(&stored)
            .await
            .map_err(store_err)?;
        Ok(Response::new(redact_rule(stored)))
    }

    async fn list_alert_rules(
        &self,
        req: Request<pb::ListAlertRulesRequest>,
    ) -> Result<Response<pb::ListAlertRulesResponse>, Status> {
        let tenant = req.get_ref().tenant.clone();
        tid("tenant", &tenant)?;
        self.reader(&req, &tenant)?;
        let rules = self
            .state
            .policy
            .alert_rules(&tenant)
            .await
            .map_err(store_err)?;
        Ok(Response::new(pb::ListAlertRulesResponse {
            rules: rules.into_iter().map(redact_rule).collect(),
        }))
    }

    async fn delete_alert_rule(
        &self,
        req: Request<pb::DeleteAlertRuleRequest>,
    ) -> Result<Response<pb::DeleteAlertRuleResponse>, Status> {
        self.admin(&req, "DeleteAlertRule")?;
        let r = req.into_inner();
        let t = tid("tenant", &r.tenant)?;
        let mut rules = self
            .state
            .ledger
            .config(&t)
            .await
            .map_err(ledger_status)?
            .alert_rules;
        let before = rules.len();
        rules.retain(|x| x.id != r.id);
        let in_ledger = rules.len() != before;
        if in_ledger {
            self.state
                .ledger
                .set_alert_rules(&t, rules)
                .await
                .map_err(ledger_status)?;
        }
        let deleted = self
            .state
            .policy
            .delete_alert_rule(t.as_str(), &r.id)
            .await
            .map_err(store_err)?;
        Ok(Response::new(pb::DeleteAlertRuleResponse {
            deleted: deleted || in_ledger,
        }))
    }

    async fn set_credit_pack(
        &self,
        req: Request<pb::SetCreditPackRequest>,
    ) -> Result<Response<pb::CreditPack>, Status> {
        self.admin(&req, "SetCreditPack")?;
        let wire = req
            .into_inner()
            .pack
            .ok_or_else(|| invalid("pack", "is missing"))?;
        let t = tid("pack.tenant", &wire.tenant)?;
        let pack = reports::pack_from_wire(&wire).map_err(|e| invalid("pack", e))?;
        self.state
            .ledger
            .set_credit_pack(&t, pack)
            .await
            .map_err(ledger_status)?;
        Ok(Response::new(match pack {
            Some(p) => reports::pack_to_wire(t.as_str(), &p),
            None => pb::CreditPack {
                tenant: t.to_string(),
                ..Default::default()
            },
        }))
    }

    async fn buy_credits(
        &self,
        req: Request<pb::BuyCreditsRequest>,
    ) -> Result<Response<pb::Grant>, Status> {
        self.admin(&req, "BuyCredits")?;
        let r = req.into_inner();
        let t = tid("tenant", &r.tenant)?;
        if r.packs == 0 {
            return Err(invalid("packs", "must be above 0"));
        }
        let pack = self
            .state
            .ledger
            .config(&t)
            .await
            .map_err(ledger_status)?
            .credit_pack
            .ok_or_else(|| {
                Status::failed_precondition(format!(
                    "tenant {t} has no credit pack: set one with `tollgate ctl pack set`"
                ))
            })?;
        let amount = pack
            .credits
            .checked_mul(u64::from(r.packs))
            .ok_or_else(|| invalid("packs", "too many: the credits overflow"))?;
        let mut spec = GrantSpec::new(GrantKind::Purchased, amount);
        if r.expires_unix_ms > 0 {
            spec = spec.expires_at(r.expires_unix_ms / 1000);
        }
        if !r.reference.is_empty() {
            spec = spec.reference(r.reference.clone());
        }
        let g = self
            .state
            .ledger
            .grant(&t, spec)
            .await
            .map_err(ledger_status)?;
        Ok(Response::new(grant_to_wire(&g)))
    }

    async fn get_balance(
        &self,
        req: Request<pb::GetBalanceRequest>,
    ) -> Result<Response<pb::Balance>, Status> {
        let tenant = req.get_ref().tenant.clone();
        let t = tid("tenant", &tenant)?;
        self.reader(&req, &tenant)?;
        let b = self.state.ledger.balance(&t).await.map_err(ledger_status)?;
        let month = self
            .state
            .ledger
            .month_bill(&t)
            .await
            .map_err(ledger_status)?;
        let seats = self.seats(&t).await?;
        let mut out = reports::balance(&b, month.as_ref(), seats);
        out.tenant = tenant;
        out.grants = b.grants.iter().map(grant_to_wire).collect();
        Ok(Response::new(out))
    }

    async fn get_statement(
        &self,
        req: Request<pb::GetStatementRequest>,
    ) -> Result<Response<pb::Statement>, Status> {
        let r = req.get_ref().clone();
        let t = tid("tenant", &r.tenant)?;
        self.reader(&req, &r.tenant)?;
        let (from, to) = period_secs(r.from_unix_ms, r.to_unix_ms)?;
        let s = self
            .state
            .ledger
            .statement(&t, from, to)
            .await
            .map_err(ledger_status)?;
        let seats = self.seats(&t).await?;
        let mut out = reports::statement(&s, r.from_unix_ms, r.to_unix_ms, seats);
        out.tenant = r.tenant;
        Ok(Response::new(out))
    }

    async fn list_tasks(
        &self,
        req: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        let r = req.get_ref().clone();
        let t = tid("tenant", &r.tenant)?;
        self.reader(&req, &r.tenant)?;
        let limit = match r.limit {
            0 => 100,
            n => n.min(10_000),
        };
        let tasks = self
            .state
            .ledger
            .tasks(&t, limit)
            .await
            .map_err(ledger_status)?;
        Ok(Response::new(pb::ListTasksResponse {
            tasks: tasks.iter().map(reports::task_info).collect(),
        }))
    }

    async fn recent_denials(
        &self,
        req: Request<pb::RecentDenialsRequest>,
    ) -> Result<Response<pb::RecentDenialsResponse>, Status> {
        let r = req.get_ref().clone();
        tid("tenant", &r.tenant)?;
        self.reader(&req, &r.tenant)?;
        Ok(Response::new(
            crate::denials::recent(&self.state, &r.tenant, r.since_unix_ms).await?,
        ))
    }

    async fn export_audit(
        &self,
        req: Request<pb::ExportAuditRequest>,
    ) -> Result<Response<pb::ExportAuditResponse>, Status> {
        let r = req.get_ref().clone();
        let tenants = self.audit_scope(&req, &r.tenant, "ExportAudit")?;
        let public_key = self.state.ledger.public_key().to_bytes().to_vec();
        if r.jsonl {
            let mut buf = Vec::new();
            self.state
                .ledger
                .export_audit(tenants.as_deref(), &mut buf)
                .await
                .map_err(ledger_status)?;
            return Ok(Response::new(pb::ExportAuditResponse {
                public_key,
                export_jsonl: buf,
                ..Default::default()
            }));
        }
        let Some(tenants) = tenants else {
            return Err(invalid(
                "tenant",
                "name a tenant for a paged export (or ask for jsonl)",
            ));
        };
        let limit = match r.limit {
            0 => 1000,
            n => n.min(10_000),
        };
        let recs = self
            .state
            .ledger
            .audit_records(&tenants[0], r.after_seq.saturating_add(1), limit + 1)
            .await
            .map_err(ledger_status)?;
        let more = recs.len() > limit as usize;
        let records: Vec<pb::AuditRecord> = recs
            .into_iter()
            .take(limit as usize)
            .map(|a| pb::AuditRecord {
                seq: a.seq,
                at_unix_ms: secs_to_ms(a.at),
                tenant: a.tenant.to_string(),
                kind: a.event().map(|e| e.kind().to_string()).unwrap_or_default(),
                body: a.body.into_bytes(),
                prev_hash: hex::decode(&a.prev_hash).unwrap_or_default(),
                hash: hex::decode(&a.hash).unwrap_or_default(),
                signature: hex::decode(&a.signature).unwrap_or_default(),
            })
            .collect();
        let next = records.last().map_or(r.after_seq, |x| x.seq);
        Ok(Response::new(pb::ExportAuditResponse {
            records,
            public_key,
            next_after_seq: next,
            more,
            export_jsonl: Vec::new(),
        }))
    }

    async fn verify_audit(
        &self,
        req: Request<pb::VerifyAuditRequest>,
    ) -> Result<Response<pb::VerifyAuditResponse>, Status> {
        let r = req.get_ref().clone();
        let tenants = self.audit_scope(&req, &r.tenant, "VerifyAudit")?;
        let res = self
            .state
            .ledger
            .verify_audit(tenants.as_deref())
            .await
            .map_err(ledger_status)?;
        Ok(Response::new(match res {
            Ok(report) => {
                let tables = report.tables.unwrap_or_default();
                pb::VerifyAuditResponse {
                    ok: true,
                    records_checked: report.records(),
                    postings_checked: tables.postings,
                    grants_checked: tables.grants,
                    wallets_checked: tables.wallets,
                    ..Default::default()
                }
            }
            Err(e) => {
                let mut r = pb::VerifyAuditResponse {
                    ok: false,
                    records_checked: 0,
                    bad_seq: e.seq.unwrap_or(0),
                    problem: e.to_string(),
                    bad_tenant: e.tenant.as_ref().map(|t| t.to_string()).unwrap_or_default(),
                    ..Default::default()
                };
                if let tollgate_ledger::VerifyFailure::TableMismatch(m) = e.failure {
                    r.bad_table = m.table;
                    r.bad_row = m.id;
                    r.bad_column = m.column;
                    r.chain_value = m.chain;
                    r.table_value = m.found;
                }
                r
            }
        }))
    }

    async fn estimate(
        &self,
        req: Request<pb::EstimateRequest>,
    ) -> Result<Response<pb::EstimateResponse>, Status> {
        let r = req.get_ref().clone();
        let t = tid("tenant", &r.tenant)?;
        self.reader(&req, &r.tenant)?;
        let mut lines = Vec::with_capacity(r.lines.len());
        for (i, l) in r.lines.iter().enumerate() {
            let initiator = tollgate_proto::convert::call_initiator(l.initiator)
                .map_err(|e| invalid(&format!("lines[{i}].initiator"), e.to_string()))?;
            lines.push(tollgate_ledger::estimate::WorkloadLine {
                model: l.model.clone(),
                agent: l.agent.clone(),
                feature: l.feature.clone(),
                calls: l.calls,
                input_tokens_per_call: l.input_tokens_per_call,
                output_tokens_per_call: l.output_tokens_per_call,
                outcomes: l.outcomes,
                initiator,
            });
        }
        let workload = tollgate_ledger::estimate::Workload {
            lines,
            per_day: r.per_day,
            days: r.days,
        };
        let e = self
            .state
            .ledger
            .estimate(&t, &workload)
            .await
            .map_err(ledger_status)?;
        let pack = self.credit_pack(&t).await?;
        Ok(Response::new(reports::estimate(&e, &r, pack.as_ref())))
    }

    async fn what_if(
        &self,
        req: Request<pb::WhatIfRequest>,
    ) -> Result<Response<pb::WhatIfResponse>, Status> {
        let r = req.get_ref().clone();
        let t = tid("tenant", &r.tenant)?;
        self.reader(&req, &r.tenant)?;
        let mut wire = r
            .price_book
            .clone()
            .ok_or_else(|| invalid("price_book", "is missing"))?;
        wire.tenant = r.tenant.clone();
        wire.version = 1;
        let spec = convert::price_book_spec(&wire)?;
        let book = CorePriceBook::new(spec).map_err(|e| invalid("price_book", e))?;
        let (from, to) = period_secs(r.from_unix_ms, r.to_unix_ms)?;
        let lines = self
            .state
            .ledger
            .what_if(&t, from, to, &book)
            .await
            .map_err(ledger_status)?;
        let pack = self.credit_pack(&t).await?;
        Ok(Response::new(reports::what_if(&r, &lines, pack.as_ref())))
    }
}

/// A period given in unix ms (`to` 0: open-ended) as `[from, to)` in seconds: the end is
/// rounded up so usage in the last second counts.
fn period_secs(from_unix_ms: u64, to_unix_ms: u64) -> Result<(u64, u64), Status> {
    let from = from_unix_ms / 1000;
    let to = if to_unix_ms == 0 {
        u64::MAX / 2
    } else {
        to_unix_ms.div_ceil(1000)
    };
    if to < from {
        return Err(invalid("to_unix_ms", "ends before from_unix_ms"));
    }
    Ok((from, to))
}
