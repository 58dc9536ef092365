//! Calendar alignment of resets (UTC): monthly on the 1st, annual on the 1st of the
//! start month, across year ends and leap years; deduction order keys.

use tollgate_core::Credits;
use tollgate_ledger::{
    DeductionKey, DeductionOrder, Grant, GrantId, GrantKind, ResetPeriod, TenantId,
};

fn ts(y: i64, m: u8, d: u8) -> u64 {
    tollgate_core::CivilDate {
        year: y,
        month: m,
        day: d,
    }
    .to_unix()
    .unwrap()
}

#[test]
fn monthly_boundaries_are_the_first_of_the_next_month() {
    let m = ResetPeriod::Monthly;
    assert_eq!(
        m.next_boundary(ts(2026, 1, 15) + 3600),
        Some(ts(2026, 2, 1))
    );
    assert_eq!(m.next_boundary(ts(2026, 2, 1)), Some(ts(2026, 3, 1)));
    assert_eq!(m.next_boundary(ts(2026, 12, 31)), Some(ts(2027, 1, 1)));
    assert_eq!(m.next_boundary(ts(2028, 2, 29)), Some(ts(2028, 3, 1)));
    assert_eq!(m.next_boundary(ts(2026, 3, 1) - 1), Some(ts(2026, 3, 1)));
}

#[test]
fn annual_boundaries_are_january_first() {
    let a = ResetPeriod::Annual;
    assert_eq!(a.next_boundary(ts(2026, 3, 15)), Some(ts(2027, 1, 1)));
    assert_eq!(a.next_boundary(ts(2027, 1, 1)), Some(ts(2028, 1, 1)));
    assert_eq!(a.next_boundary(ts(2026, 12, 31)), Some(ts(2027, 1, 1)));
    assert_eq!(a.next_boundary(ts(2028, 2, 29)), Some(ts(2029, 1, 1)));
    // The same boundaries as core's reset periods.
    for t in [ts(2026, 3, 15), ts(2026, 12, 31) + 86_399, ts(2028, 2, 29)] {
        for r in [ResetPeriod::Monthly, ResetPeriod::Annual] {
            assert_eq!(
                r.next_boundary(t),
                ResetPeriod::to_core(Some(r)).next_reset(t)
            );
        }
    }
}

#[test]
fn core_vocabulary_converts_both_ways() {
    use tollgate_core::grant as core;
    for k in [
        GrantKind::Trial,
        GrantKind::Promotional,
        GrantKind::Purchased,
        GrantKind::RecurringAllowance,
    ] {
        assert_eq!(GrantKind::from(core::GrantKind::from(k)), k);
    }
    for r in [None, Some(ResetPeriod::Monthly), Some(ResetPeriod::Annual)] {
        assert_eq!(ResetPeriod::from_core(ResetPeriod::to_core(r)), r);
    }
    assert_eq!(
        DeductionOrder::from(core::DeductionOrder::default()),
        DeductionOrder::default()
    );
    assert_eq!(
        DeductionOrder::from(core::DeductionOrder::ExpiryPriorityAge),
        DeductionOrder::expiry_first()
    );
}

fn grant(id: u64, priority: u32, expires_at: Option<u64>) -> Grant {
    Grant {
        tenant: TenantId::new("t").unwrap(),
        id: GrantId(id),
        kind: GrantKind::Purchased,
        amount: Credits::ONE,
        priority,
        starts_at: 0,
        expires_at,
        reset: None,
        reference: None,
        created_at: 0,
        period: 0,
        period_start: 0,
        next_reset_at: None,
        granted: Credits::ONE,
        available: Credits::ONE,
        held: Credits::ZERO,
        consumed: Credits::ZERO,
        expired: Credits::ZERO,
        closed: false,
    }
}

#[test]
fn deduction_orders_are_total_and_deterministic() {
    let gs = [
        grant(1, 5, None),
        grant(2, 1, Some(500)),
        grant(3, 1, Some(100)),
        grant(4, 5, Some(50)),
        grant(5, 1, Some(100)),
    ];
    let sorted = |o: &DeductionOrder| {
        let mut v: Vec<&Grant> = gs.iter().collect();
        v.sort_by(|a, b| o.compare(a, b));
        v.iter().map(|g| g.id.0).collect::<Vec<_>>()
    };
    assert_eq!(sorted(&DeductionOrder::default()), vec![3, 5, 2, 4, 1]);
    assert_eq!(sorted(&DeductionOrder::expiry_first()), vec![4, 3, 5, 2, 1]);
    let oldest = DeductionOrder {
        keys: vec![DeductionKey::Oldest],
    };
    assert_eq!(sorted(&oldest), vec![1, 2, 3, 4, 5]);
    // No keys at all still orders by id.
    assert_eq!(
        sorted(&DeductionOrder { keys: vec![] }),
        vec![1, 2, 3, 4, 5]
    );
}
