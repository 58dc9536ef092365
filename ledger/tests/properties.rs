//! Property tests: random sequences of grants, holds, usage, posts, voids, expiries,
//! resets, adjustments, plan changes and re-sent batches, on the SQLite store with a
//! manual clock. After every step, read back from the store:
//! - every grant conserves: `granted = available + held + consumed + expired`;
//! - the wallet totals equal the sums over the grants;
//! - what open holds reserve equals what the grants (and the plan) show as held;
//! - postings explain the balances: grant postings sum to `consumed`, plan postings to
//!   `plan_consumed`, overrun postings to `overrun`;
//! - the deduction order holds: a grant ordered before one that paid has nothing left;
//! - the plan's hard cap is never exceeded; a re-sent batch changes nothing;
//! - and at the end the audit chain verifies, one record per movement.
//!
//! `PROPTEST_CASES` raises the number of cases (default 24 here, to keep CI fast).

mod common;

use std::collections::BTreeMap;

use common::*;
use proptest::prelude::*;
use tollgate_core::{Credits, Plan};
use tollgate_ledger::{
    DeductionOrder, Funding, GrantKind, GrantSpec, HoldId, HoldRequest, HoldStatus, Ledger,
    ResetPeriod, TenantConfig, TenantId, UsageBatch,
};

const DAY: u64 = 86_400;

#[derive(Debug, Clone)]
enum Op {
    Grant {
        kind: u8,
        amount: u64,
        priority: u32,
        start_in: Option<u64>,
        expires_in: Option<u64>,
        reset: Option<bool>,
    },
    Hold {
        owner: u8,
        amount: u64,
        partial: bool,
        ttl: u64,
    },
    Usage {
        owner: u8,
        amounts: Vec<u64>,
    },
    Void {
        pick: usize,
    },
    PostHold {
        pick: usize,
        percent: u64,
    },
    Reduce {
        pick: usize,
        percent: u64,
    },
    Advance {
        secs: u64,
    },
    Sweep,
    SetPlan {
        plan: Option<(u64, Option<u64>)>,
    },
    Resend {
        pick: usize,
    },
    Adjust {
        pick: usize,
        credit: u64,
        debit: u64,
    },
    Order {
        expiry_first: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..4, 1u64..200, 0u32..3, proptest::option::of(0u64..10 * DAY),
              proptest::option::of(1u64..60 * DAY), proptest::option::of(any::<bool>()))
            .prop_map(|(kind, amount, priority, start_in, expires_in, reset)| Op::Grant {
                kind, amount, priority, start_in, expires_in, reset }),
        4 => (0u8..3, 1u64..120, any::<bool>(), 1u64..10 * DAY)
            .prop_map(|(owner, amount, partial, ttl)| Op::Hold { owner, amount, partial, ttl }),
        6 => (0u8..4, proptest::collection::vec(0u64..60, 1..6))
            .prop_map(|(owner, amounts)| Op::Usage { owner, amounts }),
        2 => any::<usize>().prop_map(|pick| Op::Void { pick }),
        2 => (any::<usize>(), 0u64..=100).prop_map(|(pick, percent)| Op::PostHold { pick, percent }),
        2 => (any::<usize>(), 0u64..=100).prop_map(|(pick, percent)| Op::Reduce { pick, percent }),
        3 => (0u64..20 * DAY).prop_map(|secs| Op::Advance { secs }),
        1 => Just(Op::Sweep),
        1 => proptest::option::of((0u64..80, proptest::option::of(0u64..150)))
            .prop_map(|plan| Op::SetPlan { plan }),
        1 => any::<usize>().prop_map(|pick| Op::Resend { pick }),
        1 => (any::<usize>(), 0u64..50, 0u64..50)
            .prop_map(|(pick, credit, debit)| Op::Adjust { pick, credit, debit }),
        1 => any::<bool>().prop_map(|expiry_first| Op::Order { expiry_first }),
    ]
}

/// The hold `id` of `t` (open or ended).
async fn hold_by_id(e: &Env, t: &TenantId, id: HoldId) -> tollgate_ledger::Hold {
    let holds = e.ledger.holds(t, true).await.unwrap();
    holds.into_iter().find(|h| h.id == id).unwrap()
}

/// Half-credits, so amounts are not all round.
fn amt(n: u64) -> Credits {
    Credits::from_micros(n * 500_000)
}

struct Model {
    holds: Vec<HoldId>,
    batches: Vec<UsageBatch>,
    seq: BTreeMap<u8, u64>,
    cap_floor: Option<(u64, Credits)>,
}

/// `cap_floor`: the period and plan charge when the cap was last set. A cap set below
/// the month's charge stops further plan usage; it cannot un-bill what was charged.
async fn check(e: &Env, t: &TenantId, what: &str, cap_floor: Option<(u64, Credits)>) {
    let l: &Ledger = &e.ledger;
    let row = e.store_dyn().wallet(t).await.unwrap().unwrap();
    let grants = l.grants(t, true).await.unwrap();
    let holds = l.holds(t, true).await.unwrap();
    let sum = |f: fn(&tollgate_ledger::Grant) -> Credits| {
        grants
            .iter()
            .fold(Credits::ZERO, |a, g| a.checked_add(f(g)).unwrap())
    };
    for g in &grants {
        assert!(g.is_conserved(), "{what}: grant not conserved: {g:?}");
    }
    let tot = row.totals;
    assert_eq!(tot.granted, sum(|g| g.granted), "{what}: granted");
    assert_eq!(tot.available, sum(|g| g.available), "{what}: available");
    assert_eq!(tot.held, sum(|g| g.held), "{what}: held");
    assert_eq!(tot.consumed, sum(|g| g.consumed), "{what}: consumed");
    assert_eq!(tot.expired, sum(|g| g.expired), "{what}: expired");
    // Held credits are exactly what open holds have not drawn.
    let mut held_by_grant: BTreeMap<u64, Credits> = BTreeMap::new();
    let mut plan_held = Credits::ZERO;
    for h in holds.iter().filter(|h| h.status == HoldStatus::Open) {
        let mut drawn = Credits::ZERO;
        for p in &h.parts {
            let undrawn = p
                .amount
                .checked_sub(p.drawn)
                .and_then(|x| x.checked_sub(p.released))
                .unwrap();
            drawn = drawn.checked_add(p.drawn).unwrap();
            match p.funding {
                Funding::Grant(g) => {
                    let e = held_by_grant.entry(g.0).or_insert(Credits::ZERO);
                    *e = e.checked_add(undrawn).unwrap();
                }
                _ => plan_held = plan_held.checked_add(undrawn).unwrap(),
            }
        }
        assert_eq!(drawn, h.drawn, "{what}: hold parts vs drawn");
        assert!(h.drawn <= h.amount, "{what}: overdrawn hold");
    }
    for g in &grants {
        let want = held_by_grant.get(&g.id.0).copied().unwrap_or(Credits::ZERO);
        assert_eq!(g.held, want, "{what}: held of {} vs its holds", g.id);
    }
    assert_eq!(tot.plan_held, plan_held, "{what}: plan held");
    for h in holds.iter().filter(|h| h.status != HoldStatus::Open) {
        assert_eq!(
            h.drawn.checked_add(h.released).unwrap(),
            h.amount,
            "{what}: ended hold must be drawn + released: {h:?}"
        );
    }
    // Postings explain the balances.
    let posts = e
        .store_dyn()
        .postings(t, 0, u64::MAX / 2, u32::MAX)
        .await
        .unwrap();
    let by = |f: fn(Funding) -> bool| {
        posts
            .iter()
            .filter(|p| f(p.funding))
            .fold(Credits::ZERO, |a, p| a.checked_add(p.amount).unwrap())
    };
    assert_eq!(
        by(|f| f.grant().is_some()),
        tot.consumed,
        "{what}: grant postings vs consumed"
    );
    assert_eq!(
        by(|f| f == Funding::Plan),
        tot.plan_consumed,
        "{what}: plan postings"
    );
    assert_eq!(
        by(|f| f == Funding::Overrun),
        tot.overrun,
        "{what}: overrun postings"
    );
    // The hard cap holds.
    if let Some(plan) = &row.config.plan
        && let Some(cap) = plan.hard_cap
    {
        let bill = plan.bill(&row.period_usage).unwrap();
        let allowed = match cap_floor {
            Some((period, charge)) if period == row.period_start => cap.max(charge),
            _ => cap,
        };
        assert!(
            bill.usage_charge <= allowed,
            "{what}: cap {cap} exceeded: {bill:?}"
        );
    }
}

async fn run(ops: Vec<Op>) {
    let e = env().await;
    let t = tenant("prop");
    e.ledger
        .create_tenant(&t, TenantConfig::default())
        .await
        .unwrap();
    let mut m = Model {
        holds: Vec::new(),
        batches: Vec::new(),
        seq: BTreeMap::new(),
        cap_floor: None,
    };
    for (step, op) in ops.into_iter().enumerate() {
        let what = format!("step {step} {op:?}");
        let now = e.clock_now();
        match op {
            Op::Grant {
                kind,
                amount,
                priority,
                start_in,
                expires_in,
                reset,
            } => {
                let kind = [
                    GrantKind::Trial,
                    GrantKind::Promotional,
                    GrantKind::Purchased,
                    GrantKind::RecurringAllowance,
                ][kind as usize];
                let mut spec = GrantSpec::new(kind, amt(amount)).priority(priority);
                let start = now + start_in.unwrap_or(0);
                if start_in.is_some() {
                    spec = spec.starts_at(start);
                }
                if let Some(x) = expires_in {
                    spec = spec.expires_at(start + x);
                }
                if let Some(monthly) = reset {
                    spec = spec.reset(if monthly {
                        ResetPeriod::Monthly
                    } else {
                        ResetPeriod::Annual
                    });
                }
                e.ledger.grant(&t, spec).await.unwrap();
            }
            Op::Hold {
                owner,
                amount,
                partial,
                ttl,
            } => {
                let req = HoldRequest {
                    owner: format!("sc-{owner}"),
                    amount: amt(amount),
                    min_amount: if partial {
                        Credits::from_micros(1)
                    } else {
                        amt(amount)
                    },
                    ttl_secs: ttl,
                };
                let before = e.ledger.balance(&t).await.unwrap();
                match e.ledger.hold(&t, req).await {
                    Ok(h) => {
                        assert!(h.amount <= amt(amount));
                        assert!(h.amount <= before.spendable, "{what}: hold past spendable");
                        m.holds.push(h.id);
                    }
                    Err(tollgate_ledger::LedgerError::InsufficientFunds { available, .. }) => {
                        assert!(available < amt(amount), "{what}");
                    }
                    Err(err) => panic!("{what}: {err}"),
                }
            }
            Op::Usage { owner, amounts } => {
                let sidecar = format!("sc-{owner}");
                let seq = m.seq.entry(owner).or_insert(0);
                *seq += 1;
                let recs = amounts
                    .iter()
                    .enumerate()
                    .map(|(i, a)| {
                        let mut r = record(&t, "m", 1, 1, amt(*a));
                        r.agent = format!("agent-{}", i % 2).into();
                        r
                    })
                    .collect();
                let b = batch(&sidecar, *seq, recs);
                let had_holds = e
                    .ledger
                    .holds(&t, false)
                    .await
                    .unwrap()
                    .iter()
                    .any(|h| h.owner == sidecar && h.expires_at > now);
                let out = e.ledger.post_batch(&b).await.unwrap();
                assert!(!out.duplicate);
                let tp = &out.tenants[0];
                let total: Credits = amounts
                    .iter()
                    .fold(Credits::ZERO, |a, x| a.checked_add(amt(*x)).unwrap());
                assert_eq!(tp.rated, total);
                assert_eq!(
                    tp.charged().checked_add(tp.overrun).unwrap(),
                    total,
                    "{what}: every credit of usage is paid or overrun"
                );
                if !had_holds {
                    check_deduction_order(&e, &t, &b, now, &what).await;
                }
                m.batches.push(b);
            }
            Op::Void { pick } => {
                if !m.holds.is_empty() {
                    let id = m.holds[pick % m.holds.len()];
                    let _ = e.ledger.void_hold(&t, id).await;
                }
            }
            Op::PostHold { pick, percent } => {
                if !m.holds.is_empty() {
                    let id = m.holds[pick % m.holds.len()];
                    let h = hold_by_id(&e, &t, id).await;
                    let amount = Credits::from_micros(h.remaining().micros() / 100 * percent);
                    let _ = e.ledger.post_hold(&t, id, amount).await;
                }
            }
            Op::Reduce { pick, percent } => {
                if !m.holds.is_empty() {
                    let id = m.holds[pick % m.holds.len()];
                    let h = hold_by_id(&e, &t, id).await;
                    // Apply what is due first, so the reduce's own catch-up changes nothing.
                    e.ledger.sweep(1000).await.unwrap();
                    let before = e.ledger.balance(&t).await.unwrap();
                    let amount = Credits::from_micros(h.remaining().micros() / 100 * percent);
                    if let Ok(after) = e.ledger.reduce_hold(&t, id, amount).await {
                        // Still open, reserving exactly that much less.
                        assert_eq!(after.status, HoldStatus::Open, "{what}");
                        assert_eq!(
                            after.released,
                            h.released.checked_add(amount).unwrap(),
                            "{what}: reduce"
                        );
                        let bal = e.ledger.balance(&t).await.unwrap();
                        let reserved =
                            |b: &tollgate_ledger::Balance| b.held.checked_add(b.plan_held).unwrap();
                        assert_eq!(
                            reserved(&bal),
                            reserved(&before).checked_sub(amount).unwrap(),
                            "{what}: reserved after handing back {amount}"
                        );
                        assert_eq!(bal.consumed, before.consumed, "{what}: nothing consumed");
                    }
                }
            }
            Op::Advance { secs } => e.clock.advance(secs),
            Op::Sweep => {
                e.ledger.sweep(1000).await.unwrap();
                let open = e.ledger.holds(&t, false).await.unwrap();
                assert!(
                    open.iter().all(|h| h.expires_at > now),
                    "{what}: sweep left an expired hold open"
                );
            }
            Op::SetPlan { plan } => {
                let plan = plan.map(|(included, cap)| Plan {
                    included_credits: amt(included),
                    hard_cap: cap.map(amt),
                    ..Plan::default()
                });
                e.ledger.set_plan(&t, plan).await.unwrap();
                let row = e.store_dyn().wallet(&t).await.unwrap().unwrap();
                m.cap_floor = plan.map(|p| {
                    let charge = p.bill(&row.period_usage).unwrap().usage_charge;
                    (row.period_start, charge)
                });
            }
            Op::Resend { pick } => {
                if !m.batches.is_empty() {
                    let b = m.batches[pick % m.batches.len()].clone();
                    let before = e.store_dyn().wallet(&t).await.unwrap().unwrap();
                    let out = e.ledger.post_batch(&b).await.unwrap();
                    assert!(out.duplicate, "{what}: re-sent batch posted again");
                    let after = e.store_dyn().wallet(&t).await.unwrap().unwrap();
                    // Only due resets/expiries may have moved: consumption did not.
                    assert_eq!(before.totals.consumed, after.totals.consumed, "{what}");
                    assert_eq!(before.totals.overrun, after.totals.overrun, "{what}");
                    assert_eq!(
                        before.totals.plan_consumed, after.totals.plan_consumed,
                        "{what}"
                    );
                }
            }
            Op::Adjust {
                pick,
                credit,
                debit,
            } => {
                let gs = e.ledger.grants(&t, true).await.unwrap();
                if !gs.is_empty() {
                    let g = &gs[pick % gs.len()];
                    let _ = e
                        .ledger
                        .adjust(&t, g.id, amt(credit), amt(debit), "property test")
                        .await;
                }
            }
            Op::Order { expiry_first } => {
                let order = if expiry_first {
                    DeductionOrder::expiry_first()
                } else {
                    DeductionOrder::default()
                };
                e.ledger.set_deduction_order(&t, order).await.unwrap();
            }
        }
        check(&e, &t, &what, m.cap_floor).await;
    }
    let rep = e.ledger.verify_audit(None).await.unwrap().unwrap();
    let head = e.store_dyn().wallet(&t).await.unwrap().unwrap().audit_head;
    assert_eq!(rep.records(), head.seq);
}

/// After a batch paid from grants directly: every usable grant ordered before the last
/// grant that paid must be empty.
async fn check_deduction_order(e: &Env, t: &TenantId, b: &UsageBatch, now: u64, what: &str) {
    let row = e.store_dyn().wallet(t).await.unwrap().unwrap();
    let order = row.config.deduction_order.clone();
    let posts = e
        .store_dyn()
        .postings(t, now, now + 1, u32::MAX)
        .await
        .unwrap();
    let payers: Vec<u64> = posts
        .iter()
        .filter(|p| p.batch.as_ref() == Some(&b.key))
        .filter_map(|p| p.funding.grant().map(|g| g.0))
        .collect();
    let mut usable: Vec<_> = e
        .ledger
        .grants(t, true)
        .await
        .unwrap()
        .into_iter()
        .filter(|g| g.is_usable(now))
        .collect();
    usable.sort_by(|a, b| order.compare(a, b));
    let Some(last) = usable.iter().rposition(|g| payers.contains(&g.id.0)) else {
        return;
    };
    for g in &usable[..last] {
        assert_eq!(
            g.available,
            Credits::ZERO,
            "{what}: {} comes first in the deduction order but still has credits",
            g.id
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24),
        max_shrink_iters: 200,
        ..ProptestConfig::default()
    })]

    #[test]
    fn ledger_invariants_hold(ops in proptest::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run(ops));
    }
}
