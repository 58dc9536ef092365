use super::*;
use crate::time::CivilDate;

fn c(n: u64) -> Credits {
    Credits::from_credits(n).unwrap()
}

fn at(year: i64, month: u8, day: u8) -> u64 {
    CivilDate { year, month, day }.to_unix().unwrap()
}

#[test]
fn monthly_allowance_resets_without_rollover() {
    let grant = GrantTerms {
        kind: GrantKind::RecurringAllowance,
        amount: c(1_000),
        priority: 0,
        starts_at: at(2026, 1, 1),
        expires_at: None,
        reset: ResetPeriod::Monthly,
    };
    let jan_20 = at(2026, 1, 20);
    let jan_31_late = at(2026, 1, 31) + 86_399;
    let feb_1 = at(2026, 2, 1);
    // January: 300 used, 700 left.
    assert_eq!(grant.available(c(300), jan_20), c(700));
    // The January window ends at the last second of the 31st.
    assert!(grant.reset.window(jan_20).contains(jan_31_late));
    assert!(!grant.reset.resets_between(jan_20, jan_31_late));
    assert!(grant.reset.resets_between(jan_31_late, feb_1));
    assert_eq!(grant.reset.next_reset(jan_20), Some(feb_1));
    // At the reset the 700 unused are forfeited, not rolled over: February has 1,000.
    assert_eq!(grant.forfeited_at_reset(c(300)), c(700));
    assert_eq!(grant.available(Credits::ZERO, feb_1), c(1_000));
    // February is 28 days in 2026.
    assert_eq!(grant.reset.next_reset(feb_1), Some(at(2026, 3, 1)));
    assert_eq!(grant.reset.next_reset(feb_1).unwrap() - feb_1, 28 * 86_400);
    // Over-consumption never shows as negative.
    assert_eq!(grant.available(c(5_000), jan_20), Credits::ZERO);
}

#[test]
fn annual_pool_is_one_window_per_calendar_year() {
    let pool = GrantTerms {
        kind: GrantKind::RecurringAllowance,
        amount: c(120_000),
        priority: 0,
        starts_at: 0,
        expires_at: None,
        reset: ResetPeriod::Annual,
    };
    // March and November share a window: usage by any agent of the tenant draws on it.
    assert!(!pool.reset.resets_between(at(2026, 3, 3), at(2026, 11, 30)));
    assert!(pool.reset.resets_between(at(2026, 12, 31), at(2027, 1, 1)));
    assert_eq!(pool.reset.next_reset(at(2026, 3, 3)), Some(at(2027, 1, 1)));
    assert_eq!(pool.available(c(90_000), at(2026, 11, 30)), c(30_000));
    assert_eq!(ResetPeriod::Never.next_reset(5), None);
    assert!(!ResetPeriod::Never.resets_between(0, u64::MAX));
}

#[test]
fn grants_outside_their_dates_have_nothing() {
    let g = GrantTerms {
        kind: GrantKind::Trial,
        amount: c(50),
        priority: 0,
        starts_at: 100,
        expires_at: Some(200),
        reset: ResetPeriod::Never,
    };
    assert_eq!(g.available(Credits::ZERO, 99), Credits::ZERO);
    assert_eq!(g.available(Credits::ZERO, 100), c(50));
    assert_eq!(g.available(Credits::ZERO, 200), Credits::ZERO);
    assert_eq!(g.forfeited_at_reset(Credits::ZERO), Credits::ZERO);
}

fn key(priority: u32, expires_at: Option<u64>, created_at: u64, id: u64) -> GrantOrderKey {
    GrantOrderKey {
        priority,
        expires_at,
        created_at,
        id,
    }
}

#[test]
fn default_order_is_priority_then_expiry_then_age() {
    let grants = [
        GrantBalance {
            key: key(10, None, 1, 1), // purchased, never expires
            available: c(100),
        },
        GrantBalance {
            key: key(0, Some(500), 5, 2), // promo, expires later
            available: c(30),
        },
        GrantBalance {
            key: key(0, Some(400), 9, 3), // promo, expires sooner
            available: c(20),
        },
        GrantBalance {
            key: key(0, None, 0, 4), // promo, never expires
            available: c(10),
        },
    ];
    let plan = plan_deduction(DeductionOrder::default(), &grants, c(70));
    assert_eq!(
        plan.parts,
        vec![(2, c(20)), (1, c(30)), (3, c(10)), (0, c(10))]
    );
    assert_eq!(plan.shortfall, Credits::ZERO);

    let fifo = plan_deduction(DeductionOrder::OldestFirst, &grants, c(15));
    assert_eq!(fifo.parts, vec![(3, c(10)), (0, c(5))]);
    let expiry = plan_deduction(DeductionOrder::ExpiryPriorityAge, &grants, c(25));
    assert_eq!(expiry.parts, vec![(2, c(20)), (1, c(5))]);
    let prio_age = plan_deduction(DeductionOrder::PriorityAge, &grants, c(15));
    assert_eq!(prio_age.parts, vec![(3, c(10)), (1, c(5))]);

    let short = plan_deduction(DeductionOrder::default(), &grants, c(200));
    assert_eq!(short.shortfall, c(40));
    let taken = Credits::checked_sum(short.parts.iter().map(|p| p.1)).unwrap();
    assert_eq!(taken, c(160));
}

#[test]
fn ties_break_on_id_so_the_order_is_total() {
    let a = key(1, Some(5), 5, 7);
    let b = key(1, Some(5), 5, 8);
    for order in [
        DeductionOrder::PriorityExpiryAge,
        DeductionOrder::ExpiryPriorityAge,
        DeductionOrder::OldestFirst,
        DeductionOrder::PriorityAge,
    ] {
        assert_eq!(order.compare(&a, &b), Ordering::Less);
        assert_eq!(order.compare(&b, &a), Ordering::Greater);
        assert_eq!(order.compare(&a, &a), Ordering::Equal);
    }
    // An expiry at u64::MAX still comes before "never".
    assert_eq!(
        DeductionOrder::ExpiryPriorityAge
            .compare(&key(0, Some(u64::MAX), 0, 9), &key(0, None, 0, 1)),
        Ordering::Less
    );
}
