//! What finance reads, on the wire: balances and statements in credits and in the
//! tenant's currency, broken down by agent, instance, model, feature, task and source,
//! with Agentic Work Units, outcomes, overruns and the plan's bill. Pure conversions of
//! the ledger's reports; no I/O.
//!
//! Rules: credits convert to money at the tenant's credit pack, rounded up per figure
//! (`CreditPack::money_for`), so lines may add up to a little more than the total; an
//! amount past `u64` money shows as `u64::MAX`. Overruns (usage no grant or room under the
//! cap could pay) are shown as they are, apart from the charged amounts, never added to
//! them. Credits per work unit are rounded down.

use std::collections::{BTreeMap, BTreeSet};

use tollgate_core::{CreditPack, Credits, CurrencyCode, Money};
use tollgate_ledger::{Balance, Funding, MonthBill, Statement, StatementRow, TaskRow};
use tollgate_proto::v1 as pb;

/// Most `by_task` and `by_instance` lines in a statement (the largest first).
pub const MAX_DETAIL_LINES: usize = 1_000;

/// Milliseconds of unix seconds.
fn ms(secs: u64) -> u64 {
    secs.saturating_mul(1000)
}

/// `c` in the pack's currency (0 without a pack; `u64::MAX` past `u64`).
pub fn money(pack: Option<&CreditPack>, c: Credits) -> u64 {
    pack.map_or(0, |p| p.money_for(c).map_or(u64::MAX, Money::micros))
}

/// A pack on the wire.
pub fn pack_to_wire(tenant: &str, p: &CreditPack) -> pb::CreditPack {
    pb::CreditPack {
        tenant: tenant.to_string(),
        credits_micro: p.credits.micros(),
        price_micro: p.price.micros(),
        currency: p.currency.to_string(),
    }
}

/// A wire pack to core: `None` to remove it (`credits_micro == 0`), or why it is invalid.
pub fn pack_from_wire(p: &pb::CreditPack) -> Result<Option<CreditPack>, String> {
    if p.credits_micro == 0 {
        return Ok(None);
    }
    let currency: CurrencyCode = p.currency.parse().map_err(|e| format!("currency: {e}"))?;
    CreditPack::new(Credits(p.credits_micro), Money(p.price_micro), currency)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// One month's plan bill on the wire.
pub fn plan_bill(m: &MonthBill, seats: u64, pack: Option<&CreditPack>) -> pb::PlanBill {
    let b = &m.bill;
    pb::PlanBill {
        month_start_unix_ms: ms(m.month_start),
        month_end_unix_ms: ms(m.month_end),
        open: m.open,
        seats,
        seat_fees_micro: b.seat_fees.micros(),
        included_micro: b.included_credits.micros(),
        overage_micro: b.overage_credits.micros(),
        included_requests_milli: b.included_requests_milli,
        overage_requests_milli: b.overage_requests_milli,
        request_overage_micro: b.request_overage_charge.micros(),
        floor_top_up_micro: b.floor_top_up.micros(),
        charge_micro: b.charge.micros(),
        over_cap_micro: b.over_cap.micros(),
        list_price_micro: m.list_price.micros(),
        charge_money_micro: money(pack, b.charge),
    }
}

/// The balance on the wire. `month` is the current month's bill (with a plan).
pub fn balance(b: &Balance, month: Option<&MonthBill>, seats: u64) -> pb::Balance {
    let pack = b.credit_pack.as_ref();
    let consumed = b.consumed.saturating_add(b.plan_consumed);
    pb::Balance {
        tenant: b.tenant.to_string(),
        available_micro: b.spendable.micros(),
        held_micro: b.held.saturating_add(b.plan_held).micros(),
        consumed_micro: consumed.micros(),
        granted_micro: b.granted.micros(),
        expired_micro: b.expired.micros(),
        period_spent_micro: b.period_spent.micros(),
        hard_cap_micro: b.hard_cap.map_or(0, |c| c.micros()),
        burn_1h_per_hour_micro: b.burn_rate_1h.micros(),
        burn_24h_per_hour_micro: b.burn_rate_24h.micros(),
        projected_depletion_unix_ms: b.projected_depletion_at.map_or(0, ms),
        grants: Vec::new(),
        as_of_unix_ms: ms(b.at),
        overrun_micro: b.overrun.micros(),
        currency: pack.map(|p| p.currency.to_string()).unwrap_or_default(),
        credit_pack: pack.map(|p| pack_to_wire(b.tenant.as_str(), p)),
        available_money_micro: money(pack, b.spendable),
        consumed_money_micro: money(pack, consumed),
        period_spent_money_micro: money(pack, b.period_spent),
        period_bill: month.map(|m| plan_bill(m, seats, pack)),
    }
}

/// A line being summed, with the agent names seen on it.
#[derive(Default)]
struct Acc {
    line: pb::StatementLine,
    agents: BTreeSet<String>,
}

impl Acc {
    fn add(&mut self, r: &StatementRow) {
        let l = &mut self.line;
        match r.funding {
            Funding::Overrun => l.overrun_micro = l.overrun_micro.saturating_add(r.amount.micros()),
            Funding::Grant(_) | Funding::Plan => {
                l.amount_micro = l.amount_micro.saturating_add(r.amount.micros())
            }
            Funding::Free => {}
        }
        l.calls = l.calls.saturating_add(r.records);
        l.input_tokens = l.input_tokens.saturating_add(r.input_tokens);
        l.output_tokens = l.output_tokens.saturating_add(r.output_tokens);
        l.outcomes = l.outcomes.saturating_add(r.outcomes);
        l.work_units = l.work_units.saturating_add(r.work_units);
        l.request_units_milli = l.request_units_milli.saturating_add(r.request_units_milli);
        if !r.agent.is_empty() {
            self.agents.insert(r.agent.clone());
        }
    }

    fn finish(
        self,
        key: String,
        pack: Option<&CreditPack>,
        with_agents: bool,
    ) -> pb::StatementLine {
        let mut l = self.line;
        l.key = key;
        l.credits_per_work_unit_micro = l.amount_micro.checked_div(l.work_units).unwrap_or(0);
        l.amount_money_micro = money(pack, Credits(l.amount_micro));
        if with_agents {
            l.agents = self.agents.into_iter().collect::<Vec<_>>().join(",");
        }
        l
    }
}

/// The label of a source.
pub fn funding_label(f: Funding) -> String {
    match f {
        Funding::Grant(g) => format!("grant#{}", g.0),
        Funding::Plan => "plan".to_string(),
        Funding::Overrun => "overrun (not billed)".to_string(),
        Funding::Free => "free".to_string(),
    }
}

/// Lines of a map, in key order.
fn lines(
    m: BTreeMap<String, Acc>,
    pack: Option<&CreditPack>,
    with_agents: bool,
) -> Vec<pb::StatementLine> {
    m.into_iter()
        .map(|(k, a)| a.finish(k, pack, with_agents))
        .collect()
}

/// Lines of a map, the largest (charged, then overrun, then calls) first, at most
/// [`MAX_DETAIL_LINES`]; and how many were left out.
fn largest(m: BTreeMap<String, Acc>, pack: Option<&CreditPack>) -> (Vec<pb::StatementLine>, u64) {
    let mut v = lines(m, pack, true);
    v.sort_by(|a, b| {
        (b.amount_micro, b.overrun_micro, b.calls)
            .cmp(&(a.amount_micro, a.overrun_micro, a.calls))
            .then_with(|| a.key.cmp(&b.key))
    });
    let omitted = v.len().saturating_sub(MAX_DETAIL_LINES) as u64;
    v.truncate(MAX_DETAIL_LINES);
    (v, omitted)
}

/// The statement on the wire. `from_ms` / `to_ms` echo the request; `seats` is the plan's.
pub fn statement(s: &Statement, from_ms: u64, to_ms: u64, seats: u64) -> pb::Statement {
    let pack = s.credit_pack.as_ref();
    let mut by: [BTreeMap<String, Acc>; 6] = Default::default();
    let mut total = Acc::default();
    for row in &s.rows {
        let keys = [
            row.agent.clone(),
            row.model.clone(),
            row.feature.clone(),
            funding_label(row.funding),
            row.task.clone(),
            row.agent_instance.clone(),
        ];
        for (i, (map, key)) in by.iter_mut().zip(keys).enumerate() {
            // Tasks: only rows that name one.
            if i == 4 && key.is_empty() {
                continue;
            }
            map.entry(key).or_default().add(row);
        }
        total.add(row);
    }
    let [agents, models, features, sources, tasks, instances] = by;
    let (by_task, tasks_omitted) = largest(tasks, pack);
    let (by_instance, instances_omitted) = largest(instances, pack);
    let t = total.line;
    pb::Statement {
        tenant: s.tenant.to_string(),
        from_unix_ms: from_ms,
        to_unix_ms: to_ms,
        total_micro: t.amount_micro,
        calls: t.calls,
        by_agent: lines(agents, pack, false),
        by_model: lines(models, pack, false),
        by_feature: lines(features, pack, false),
        by_grant: lines(sources, pack, false),
        by_task,
        by_instance,
        tasks_omitted,
        instances_omitted,
        overrun_micro: t.overrun_micro,
        outcomes: t.outcomes,
        work_units: t.work_units,
        currency: pack.map(|p| p.currency.to_string()).unwrap_or_default(),
        credit_pack: pack.map(|p| pack_to_wire(s.tenant.as_str(), p)),
        total_money_micro: money(pack, Credits(t.amount_micro)),
        plan_bills: s
            .plan_bills
            .iter()
            .map(|m| plan_bill(m, seats, pack))
            .collect(),
    }
}

/// A task on the wire.
pub fn task_info(t: &TaskRow) -> pb::TaskInfo {
    pb::TaskInfo {
        task: t.task.clone(),
        budget_micro: t.terms.map_or(0, |x| x.budget.micros()),
        max_calls: t.terms.and_then(|x| x.max_calls).unwrap_or(0),
        spent_micro: t.spent.micros(),
        calls: t.calls,
        work_units: t.work_units,
        opened_unix_ms: t.opened_at.map_or(0, ms),
        completed_unix_ms: t.completed_at.map_or(0, ms),
        last_unix_ms: ms(t.last_at),
        closed: match t.closed() {
            None => String::new(),
            Some(tollgate_ledger::TaskClosed::Completed) => "completed".into(),
            Some(tollgate_ledger::TaskClosed::MaxCalls) => "max_calls".into(),
            Some(tollgate_ledger::TaskClosed::Budget) => "budget".into(),
        },
        conflicts: t.conflicts,
    }
}

/// An estimate on the wire (`req` gives the lines as asked).
pub fn estimate(
    e: &tollgate_ledger::estimate::Estimate,
    req: &pb::EstimateRequest,
    pack: Option<&CreditPack>,
) -> pb::EstimateResponse {
    use tollgate_core::LimitKind;
    let lines = e
        .lines
        .iter()
        .zip(&req.lines)
        .map(|(l, asked)| pb::LineEstimate {
            line: Some(asked.clone()),
            calls: l.calls,
            credits_micro: l.credits.micros(),
            per_call_micro: l.per_call.micros(),
            request_units_milli: l.request_units_milli,
            priced: l.priced,
            money_micro: money(pack, l.credits),
        })
        .collect();
    let grants = e
        .grants
        .iter()
        .map(|g| pb::GrantDraw {
            grant_id: g.grant.0.to_string(),
            kind: match g.kind {
                tollgate_ledger::GrantKind::Trial => pb::GrantKind::Trial,
                tollgate_ledger::GrantKind::Promotional => pb::GrantKind::Promotional,
                tollgate_ledger::GrantKind::Purchased => pb::GrantKind::Purchased,
                tollgate_ledger::GrantKind::RecurringAllowance => pb::GrantKind::Recurring,
            } as i32,
            label: g.reference.clone().unwrap_or_default(),
            amount_micro: g.amount.micros(),
            remaining_after_micro: g.remaining_after.micros(),
        })
        .collect();
    let unbounded = e.spendable == Credits::MAX;
    pb::EstimateResponse {
        tenant: e.tenant.to_string(),
        as_of_unix_ms: e.at.saturating_mul(1000),
        price_book_version: e.price_book_version,
        lines,
        credits_micro: e.total.micros(),
        credits_per_day_micro: e.total.micros() / u64::from(req.days.max(1)),
        currency: pack.map(|p| p.currency.to_string()).unwrap_or_default(),
        money_micro: money(pack, e.total),
        grants,
        plan_funded_micro: e.plan_funded.micros(),
        unfunded_micro: e.unfunded.micros(),
        hits_limit: e.limit_hit.is_some(),
        limit_day: e.limit_hit.map_or(0, |h| h.day),
        limit_unix_ms: e.limit_hit.map_or(0, |h| h.at.saturating_mul(1000)),
        limit: match e.limit_hit.map(|h| h.limit) {
            Some(LimitKind::HardCap) => "hard_cap".into(),
            Some(_) => "balance".into(),
            None => String::new(),
        },
        spendable_micro: if unbounded { 0 } else { e.spendable.micros() },
        spendable_unbounded: unbounded,
        burn_last_24h_micro: e.burn_last_24h.micros(),
        runway_days: e.runway_days.unwrap_or(0),
        runway_unbounded: e.runway_days.is_none(),
    }
}

/// A what-if replay on the wire.
pub fn what_if(
    req: &pb::WhatIfRequest,
    lines: &[tollgate_ledger::estimate::ReplayLine],
    pack: Option<&CreditPack>,
) -> pb::WhatIfResponse {
    let sum = |f: fn(&tollgate_ledger::estimate::ReplayLine) -> Credits| {
        lines
            .iter()
            .fold(Credits::ZERO, |a, l| a.saturating_add(f(l)))
    };
    let (recorded, replayed) = (sum(|l| l.recorded), sum(|l| l.replayed));
    pb::WhatIfResponse {
        tenant: req.tenant.clone(),
        from_unix_ms: req.from_unix_ms,
        to_unix_ms: req.to_unix_ms,
        lines: lines
            .iter()
            .map(|l| pb::WhatIfLine {
                agent: l.agent.clone(),
                model: l.model.clone(),
                feature: l.feature.clone(),
                calls: l.calls,
                input_tokens: l.input_tokens,
                output_tokens: l.output_tokens,
                outcomes: l.outcomes,
                recorded_micro: l.recorded.micros(),
                replayed_micro: l.replayed.micros(),
                priced: l.priced,
            })
            .collect(),
        recorded_micro: recorded.micros(),
        replayed_micro: replayed.micros(),
        currency: pack.map(|p| p.currency.to_string()).unwrap_or_default(),
        recorded_money_micro: money(pack, recorded),
        replayed_money_micro: money(pack, replayed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_ledger::{GrantId, TenantId};

    fn row(agent: &str, task: &str, funding: Funding, amount: u64, wu: u64) -> StatementRow {
        StatementRow {
            agent: agent.into(),
            agent_instance: format!("pod/{agent}/lane0"),
            model: "m".into(),
            feature: "f".into(),
            task: task.into(),
            funding,
            amount: Credits(amount),
            records: 1,
            input_tokens: 10,
            output_tokens: 5,
            outcomes: 0,
            work_units: wu,
            request_units_milli: 0,
        }
    }

    #[test]
    fn statement_lines_break_down_by_name_task_and_show_overruns_apart() {
        let pack = CreditPack::new(
            Credits::from_credits(100_000).unwrap(),
            Money::from_units(500).unwrap(),
            CurrencyCode::USD,
        )
        .unwrap();
        let s = Statement {
            tenant: TenantId::new("acme").unwrap(),
            from: 0,
            to: 10,
            rows: vec![
                row("bot", "t-1", Funding::Grant(GrantId(1)), 20_000_000, 1),
                row("bot", "t-2", Funding::Grant(GrantId(1)), 40_000_000, 1),
                row("bot", "t-2", Funding::Overrun, 1_300_000, 0),
                row("", "", Funding::Plan, 5_000_000, 0),
            ],
            plan_funded: Credits(5_000_000),
            overrun: Credits(1_300_000),
            plan_bills: Vec::new(),
            credit_pack: Some(pack),
        };
        let w = statement(&s, 0, 10_000, 0);
        assert_eq!(w.total_micro, 65_000_000);
        assert_eq!(w.overrun_micro, 1_300_000);
        assert_eq!(w.work_units, 2);
        assert_eq!(w.currency, "USD");
        // 65 credits at $500 per 100,000: $0.325.
        assert_eq!(w.total_money_micro, 325_000);
        let bot = w.by_agent.iter().find(|l| l.key == "bot").unwrap();
        assert_eq!(bot.amount_micro, 60_000_000);
        assert_eq!(bot.overrun_micro, 1_300_000);
        assert_eq!(bot.credits_per_work_unit_micro, 30_000_000);
        // A 20-credit action is $0.10.
        let t1 = w.by_task.iter().find(|l| l.key == "t-1").unwrap();
        assert_eq!(t1.amount_money_micro, 100_000);
        assert_eq!(t1.agents, "bot");
        // Tasks only for rows that name one, the largest first.
        assert_eq!(
            w.by_task.iter().map(|l| l.key.as_str()).collect::<Vec<_>>(),
            ["t-2", "t-1"]
        );
        assert!(w.by_grant.iter().any(|l| l.key == "overrun (not billed)"
            && l.overrun_micro == 1_300_000
            && l.amount_micro == 0));
        assert!(w.by_grant.iter().any(|l| l.key == "plan"));
        assert_eq!(w.by_instance.len(), 2);
    }

    #[test]
    fn packs_round_trip_and_bad_ones_are_named() {
        let wire = pb::CreditPack {
            tenant: "acme".into(),
            credits_micro: 100_000_000_000,
            price_micro: 500_000_000,
            currency: "USD".into(),
        };
        let p = pack_from_wire(&wire).unwrap().unwrap();
        assert_eq!(pack_to_wire("acme", &p), wire);
        assert_eq!(
            pack_from_wire(&pb::CreditPack {
                credits_micro: 0,
                ..wire.clone()
            }),
            Ok(None)
        );
        let e = pack_from_wire(&pb::CreditPack {
            currency: "usd".into(),
            ..wire.clone()
        })
        .unwrap_err();
        assert!(e.starts_with("currency:"), "{e}");
        assert!(
            pack_from_wire(&pb::CreditPack {
                price_micro: 0,
                ..wire
            })
            .is_err()
        );
        assert_eq!(money(None, Credits(5)), 0);
    }
}
