//! "How much will this cost?": a described workload rated against a tenant's price book
//! and run through its wallet, in memory, day by day.
//!
//! Nothing here is a second implementation of the money rules. Each line's calls are
//! charged by [`crate::rating::charge_record`], the function that charges posted usage
//! (an unpriced model is charged as a posted record naming it would be: at the book's
//! dearest model, and flagged); each day's charges are posted by
//! [`WalletTx::post_usage`] on a copy of the tenant's wallet after
//! [`WalletTx::catch_up`] to that day (so resets, expiries and the plan's month
//! rollover happen as they would), in the tenant's deduction order, then the plan
//! within its hard cap. The copy is never written: an estimate changes nothing.
//!
//! **Charges.** A line is `calls` calls of `input_tokens_per_call` in and
//! `output_tokens_per_call` out; its outcomes are reported on one of its calls. One call
//! is rated once and multiplied (each call is rounded up to the micro-credit as a
//! posted call is); the call carrying the outcomes is rated apart. A line given "in
//! total" is spread over the days as evenly as whole calls allow (the remainder on the
//! first days).
//!
//! **What the answer says.** The credits of each line and in total; the grants that
//! would pay, in the order they would first pay, and how much each; what the plan would
//! fund; whether the workload would run into a limit and on which day (the first day
//! some of its usage could not be paid: by the `HardCap` with a capped plan, else the
//! wallet) and how much would go unpaid (calls a sidecar would deny); and the runway:
//! what the tenant can spend now divided by the last 24 hours' spend plus the
//! workload's average day.

use std::sync::Arc;

use tollgate_core::{Credits, Initiator, LimitKind, PriceBook, Tier};

use crate::audit::AuditSigner;
use crate::clock::Timestamp;
use crate::engine::{Ctx, UsageGroup, WalletTx};
use crate::error::LedgerError;
use crate::grant::GrantKind;
use crate::ids::{BatchKey, GrantId, TenantId};
use crate::rating::{How, MAX_NAME_LEN, charge_record, summary_for};
use crate::usage::UsageRecord;

/// Most days an estimate covers.
pub const MAX_ESTIMATE_DAYS: u32 = 3_660;
/// Most lines in a workload.
pub const MAX_ESTIMATE_LINES: usize = 100;
/// Most lines times days: the simulation posts (and signs, in memory) one day at a time,
/// so this bounds what one request may cost the authority (a year of 100 lines).
pub const MAX_ESTIMATE_LINE_DAYS: u64 = 36_600;
/// Most calls (or outcomes, or tokens per call) one line may state.
pub const MAX_LINE_COUNT: u64 = 1_000_000_000_000;

const DAY: u64 = 86_400;

/// One line of a workload: calls to one model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadLine {
    /// The model (as the price book names it).
    pub model: String,
    /// Agent and feature names (for the answer's lines; they change no price).
    pub agent: String,
    /// Feature.
    pub feature: String,
    /// Calls per day, or in total (see [`Workload::per_day`]).
    pub calls: u64,
    /// Input tokens of each call.
    pub input_tokens_per_call: u64,
    /// Output tokens of each call.
    pub output_tokens_per_call: u64,
    /// Outcomes per day or in total (per-outcome prices).
    pub outcomes: u64,
    /// Who starts the calls (agent-started calls are free under a per-request price with
    /// `agent_initiated_free`).
    pub initiator: Initiator,
}

/// A described workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// The lines.
    pub lines: Vec<WorkloadLine>,
    /// True: each line's calls and outcomes happen every day; false: in total over the days.
    pub per_day: bool,
    /// Days it runs, starting now (1 to [`MAX_ESTIMATE_DAYS`]).
    pub days: u32,
}

impl Workload {
    /// Refuses what cannot be estimated, naming the line.
    pub fn validate(&self) -> Result<(), LedgerError> {
        let bad = |m: String| Err(LedgerError::InvalidInput(m));
        if self.days == 0 || self.days > MAX_ESTIMATE_DAYS {
            return bad(format!("days is {}: 1 to {MAX_ESTIMATE_DAYS}", self.days));
        }
        if self.lines.is_empty() || self.lines.len() > MAX_ESTIMATE_LINES {
            return bad(format!(
                "{} lines: 1 to {MAX_ESTIMATE_LINES}",
                self.lines.len()
            ));
        }
        let line_days = self.lines.len() as u64 * u64::from(self.days);
        if line_days > MAX_ESTIMATE_LINE_DAYS {
            return bad(format!(
                "{} lines over {} days: at most {MAX_ESTIMATE_LINE_DAYS} lines times days",
                self.lines.len(),
                self.days
            ));
        }
        for (i, l) in self.lines.iter().enumerate() {
            if l.model.is_empty() || l.model.len() > MAX_NAME_LEN {
                return bad(format!("line {i}: model must be 1 to {MAX_NAME_LEN} bytes"));
            }
            if l.agent.len() > MAX_NAME_LEN || l.feature.len() > MAX_NAME_LEN {
                return bad(format!(
                    "line {i}: agent and feature: at most {MAX_NAME_LEN} bytes"
                ));
            }
            for (what, v) in [
                ("calls", l.calls),
                ("input_tokens_per_call", l.input_tokens_per_call),
                ("output_tokens_per_call", l.output_tokens_per_call),
                ("outcomes", l.outcomes),
            ] {
                if v > MAX_LINE_COUNT {
                    return bad(format!("line {i}: {what} is {v}, at most {MAX_LINE_COUNT}"));
                }
            }
            if l.outcomes > 0 && l.calls == 0 {
                return bad(format!(
                    "line {i}: outcomes are reported on calls: set calls"
                ));
            }
        }
        Ok(())
    }

    /// The calls and outcomes of line `l` on day `d` (0-based).
    fn on_day(&self, l: &WorkloadLine, d: u32) -> (u64, u64) {
        if self.per_day {
            return (l.calls, l.outcomes);
        }
        let n = u64::from(self.days);
        let share = |total: u64| total / n + u64::from(u64::from(d) < total % n);
        (share(l.calls), share(l.outcomes))
    }
}

/// One line of the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineEstimate {
    /// The line as asked.
    pub line: WorkloadLine,
    /// Calls over the whole estimate.
    pub calls: u64,
    /// Credits over the whole estimate.
    pub credits: Credits,
    /// What one call (without outcomes) costs.
    pub per_call: Credits,
    /// Request units (milli-requests) over the whole estimate (per-request prices).
    pub request_units_milli: u64,
    /// False when the book does not price the model: charged at its dearest model, as
    /// posted usage naming it would be.
    pub priced: bool,
}

/// What one grant would pay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantDraw {
    /// The grant.
    pub grant: GrantId,
    /// Its kind and reference (label).
    pub kind: GrantKind,
    /// Reference.
    pub reference: Option<String>,
    /// Credits it would pay over the estimate.
    pub amount: Credits,
    /// What would be left of it at the end.
    pub remaining_after: Credits,
}

/// The first day the workload could not be paid in full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitHit {
    /// Day (1 = today).
    pub day: u32,
    /// Its start (unix seconds; day 1 is now).
    pub at: Timestamp,
    /// What binds: [`LimitKind::HardCap`] or [`LimitKind::TenantWallet`].
    pub limit: LimitKind,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Estimate {
    /// The tenant.
    pub tenant: TenantId,
    /// As of (unix seconds).
    pub at: Timestamp,
    /// The price book version rated with (0: the tenant has none; then every line is
    /// charged nothing but unpriced).
    pub price_book_version: u64,
    /// Per line.
    pub lines: Vec<LineEstimate>,
    /// Credits over the whole estimate.
    pub total: Credits,
    /// Grants that would pay, in the order they would first pay.
    pub grants: Vec<GrantDraw>,
    /// Usage the plan would fund (within its hard cap).
    pub plan_funded: Credits,
    /// Usage nothing could pay (a sidecar would deny those calls).
    pub unfunded: Credits,
    /// The first day some of it could not be paid.
    pub limit_hit: Option<LimitHit>,
    /// What the tenant can spend now (`Credits::MAX`: unbounded, a plan without a cap).
    pub spendable: Credits,
    /// Spent in the last 24 hours.
    pub burn_last_24h: Credits,
    /// Whole days until `spendable` runs out at the last 24 hours' spend plus the
    /// workload's average day; `None` when nothing burns or spend is unbounded.
    pub runway_days: Option<u64>,
}

fn mul(c: Credits, n: u64) -> Credits {
    Credits(c.micros().saturating_mul(n))
}

/// Rates `calls` calls of line `l` with `outcomes` on one of them: credits, request units,
/// the price of one call and whether the model is priced.
fn rate_line(
    tenant: &TenantId,
    book: Option<&PriceBook>,
    l: &WorkloadLine,
    calls: u64,
    outcomes: u64,
) -> (Credits, u64, Credits, bool) {
    let model = book.and_then(|b| b.model(&l.model));
    let record = |outcomes: u64| UsageRecord {
        tenant: tenant.clone(),
        agent: Arc::from(l.agent.as_str()),
        agent_instance: Arc::from(""),
        model: Arc::from(l.model.as_str()),
        feature: Arc::from(l.feature.as_str()),
        task: Arc::from(""),
        tier: Tier::Interactive,
        initiator: l.initiator,
        input_tokens: l.input_tokens_per_call,
        output_tokens: l.output_tokens_per_call,
        outcomes,
        price_book_version: book.map_or(0, |b| b.version()),
        client_amount: Credits::ZERO,
        at: 0,
        calls: 1,
        work_units: 0,
        pre_rated: false,
        aggregate: false,
    };
    let (one, one_units, how) = charge_record(book, model.as_ref(), &record(0));
    let priced = how == How::Rated;
    if calls == 0 {
        return (Credits::ZERO, 0, one, priced);
    }
    let (plain, with) = if outcomes > 0 {
        (
            calls - 1,
            Some(charge_record(book, model.as_ref(), &record(outcomes))),
        )
    } else {
        (calls, None)
    };
    let mut credits = mul(one, plain);
    let mut units = one_units.saturating_mul(plain);
    if let Some((c, u, _)) = with {
        credits = credits.saturating_add(c);
        units = units.saturating_add(u);
    }
    (credits, units, one, priced)
}

/// Runs `workload` through `w` (the tenant's wallet as of `now`, caught up) day by day.
/// `w` is consumed and never written anywhere.
pub(crate) fn simulate(
    mut w: WalletTx,
    signer: &AuditSigner,
    book: Option<Arc<PriceBook>>,
    workload: &Workload,
    now: Timestamp,
    burn_last_24h: Credits,
) -> Estimate {
    let tenant = w.row.tenant.clone();
    let (spendable, _) = w.spendable(now);
    let book = book.as_deref();
    let mut lines: Vec<LineEstimate> = workload
        .lines
        .iter()
        .map(|l| {
            let (_, _, per_call, priced) = rate_line(&tenant, book, l, 0, 0);
            LineEstimate {
                line: l.clone(),
                calls: 0,
                credits: Credits::ZERO,
                per_call,
                request_units_milli: 0,
                priced,
            }
        })
        .collect();
    let mut draws: Vec<(GrantId, Credits)> = Vec::new();
    let (mut plan_funded, mut unfunded) = (Credits::ZERO, Credits::ZERO);
    let mut limit_hit = None;
    for d in 0..workload.days {
        let at = now.saturating_add(u64::from(d) * DAY);
        let ctx = Ctx { now: at, signer };
        w.catch_up(ctx);
        let mut groups = Vec::new();
        for (l, est) in workload.lines.iter().zip(lines.iter_mut()) {
            let (calls, outcomes) = workload.on_day(l, d);
            if calls == 0 {
                continue;
            }
            let (credits, units, _, _) = rate_line(&tenant, book, l, calls, outcomes);
            est.calls = est.calls.saturating_add(calls);
            est.credits = est.credits.saturating_add(credits);
            est.request_units_milli = est.request_units_milli.saturating_add(units);
            groups.push(UsageGroup {
                agent: Arc::from(l.agent.as_str()),
                model: Arc::from(l.model.as_str()),
                feature: Arc::from(l.feature.as_str()),
                amount: credits,
                records: calls,
                input_tokens: calls.saturating_mul(l.input_tokens_per_call),
                output_tokens: calls.saturating_mul(l.output_tokens_per_call),
                outcomes,
                request_units_milli: units,
                ..UsageGroup::default()
            });
        }
        if groups.is_empty() {
            continue;
        }
        let consumed_before: Vec<(GrantId, Credits)> =
            w.grants.iter().map(|g| (g.id, g.consumed)).collect();
        let mut summary = summary_for(&tenant);
        let key = BatchKey {
            sidecar_id: "estimate".into(),
            seq: u64::from(d) + 1,
        };
        w.post_usage(ctx, &key, &mut groups, &mut summary, None, None);
        for g in &w.grants {
            let before = consumed_before
                .iter()
                .find(|(id, _)| *id == g.id)
                .map_or(Credits::ZERO, |(_, c)| *c);
            let paid = g.consumed.saturating_sub(before);
            if paid.is_zero() {
                continue;
            }
            match draws.iter_mut().find(|(id, _)| *id == g.id) {
                Some((_, a)) => *a = a.saturating_add(paid),
                None => draws.push((g.id, paid)),
            }
        }
        plan_funded = plan_funded.saturating_add(summary.from_plan);
        unfunded = unfunded.saturating_add(summary.overrun);
        if !summary.overrun.is_zero() && limit_hit.is_none() {
            let limit = match w.spendable(at).1 {
                LimitKind::HardCap => LimitKind::HardCap,
                _ => LimitKind::TenantWallet,
            };
            limit_hit = Some(LimitHit {
                day: d + 1,
                at,
                limit,
            });
        }
    }
    let total = lines
        .iter()
        .fold(Credits::ZERO, |a, l| a.saturating_add(l.credits));
    let grants = draws
        .into_iter()
        .filter_map(|(id, amount)| {
            let g = w.grants.iter().find(|g| g.id == id)?;
            Some(GrantDraw {
                grant: id,
                kind: g.kind,
                reference: g.reference.clone(),
                amount,
                remaining_after: g.remaining(),
            })
        })
        .collect();
    let daily = burn_last_24h.saturating_add(Credits(total.micros() / u64::from(workload.days)));
    let runway_days = (spendable != Credits::MAX && !daily.is_zero())
        .then(|| spendable.micros() / daily.micros());
    Estimate {
        tenant,
        at: now,
        price_book_version: book.map_or(0, |b| b.version()),
        lines,
        total,
        grants,
        plan_funded,
        unfunded,
        limit_hit,
        spendable,
        burn_last_24h,
        runway_days,
    }
}

// ---- What-if ------------------------------------------------------------------------------

/// One (agent, model, feature) line of a what-if replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayLine {
    /// Agent name.
    pub agent: String,
    /// Model.
    pub model: String,
    /// Feature.
    pub feature: String,
    /// Calls, tokens and outcomes recorded in the period.
    pub calls: u64,
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Outcomes.
    pub outcomes: u64,
    /// What the usage was rated when posted (charged, plan-funded and overrun alike).
    pub recorded: Credits,
    /// What the other book rates it.
    pub replayed: Credits,
    /// False when the other book does not price the model (rated at its dearest model).
    pub priced: bool,
}

/// A past period's recorded usage rated under another price book, line by line (see
/// [`crate::Ledger::what_if`]).
///
/// The ledger keeps usage per posted group, not per call, so each line is rated from its
/// recorded totals as an aggregate record of `calls` calls ([`charge_record`], the
/// posting rule for such records): exact for per-request and per-outcome prices, within
/// one micro-credit per call for per-token prices (the totals are rounded once, not per
/// call), and at least one action per call for per-action prices. Calls are taken as
/// human-initiated (the statement does not keep the initiator), so a book that makes
/// agent-initiated calls free is not credited for them.
pub fn replay(
    tenant: &TenantId,
    rows: &[crate::report::StatementRow],
    book: &PriceBook,
) -> Vec<ReplayLine> {
    let mut lines: Vec<ReplayLine> = Vec::new();
    for r in rows {
        let i = match lines
            .iter()
            .position(|l| l.agent == r.agent && l.model == r.model && l.feature == r.feature)
        {
            Some(i) => i,
            None => {
                lines.push(ReplayLine {
                    agent: r.agent.clone(),
                    model: r.model.clone(),
                    feature: r.feature.clone(),
                    calls: 0,
                    input_tokens: 0,
                    output_tokens: 0,
                    outcomes: 0,
                    recorded: Credits::ZERO,
                    replayed: Credits::ZERO,
                    priced: true,
                });
                lines.len() - 1
            }
        };
        let l = &mut lines[i];
        l.calls = l.calls.saturating_add(r.records);
        l.input_tokens = l.input_tokens.saturating_add(r.input_tokens);
        l.output_tokens = l.output_tokens.saturating_add(r.output_tokens);
        l.outcomes = l.outcomes.saturating_add(r.outcomes);
        l.recorded = l.recorded.saturating_add(r.amount);
    }
    for l in &mut lines {
        if l.calls == 0 && l.input_tokens == 0 && l.output_tokens == 0 && l.outcomes == 0 {
            continue;
        }
        let model = book.model(&l.model);
        let record = UsageRecord {
            tenant: tenant.clone(),
            agent: Arc::from(l.agent.as_str()),
            agent_instance: Arc::from(""),
            model: Arc::from(l.model.as_str()),
            feature: Arc::from(l.feature.as_str()),
            task: Arc::from(""),
            tier: Tier::Interactive,
            initiator: Initiator::Human,
            input_tokens: l.input_tokens,
            output_tokens: l.output_tokens,
            outcomes: l.outcomes,
            price_book_version: book.version(),
            client_amount: Credits::ZERO,
            at: 0,
            calls: l.calls.max(1),
            work_units: 0,
            pre_rated: false,
            aggregate: false,
        };
        let (c, _, how) = charge_record(Some(book), model.as_ref(), &record);
        l.replayed = c;
        l.priced = how == How::Rated;
    }
    lines
}
