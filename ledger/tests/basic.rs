//! Basic flows through the ledger on SQLite: grant, hold, usage, void, balance, audit.

mod common;

use common::*;
use tollgate_core::Credits;
use tollgate_ledger::{GrantKind, GrantSpec, HoldRequest, HoldStatus, TenantConfig};

#[tokio::test]
async fn grant_hold_usage_void_and_audit_verify() {
    let e = env().await;
    let t = tenant("acme");
    e.ledger
        .create_tenant(&t, TenantConfig::default())
        .await
        .unwrap();
    let g = e
        .ledger
        .grant(&t, GrantSpec::new(GrantKind::Purchased, credits(100)))
        .await
        .unwrap();
    assert_eq!(g.available, credits(100));
    let h = e
        .ledger
        .hold(
            &t,
            HoldRequest {
                owner: "sc-1".into(),
                amount: credits(30),
                min_amount: credits(30),
                ttl_secs: 60,
            },
        )
        .await
        .unwrap();
    assert_eq!(h.amount, credits(30));
    // No price book: charged at the client's amount.
    let out = e
        .ledger
        .post_batch(&batch("sc-1", 1, vec![record(&t, "m", 10, 10, credits(5))]))
        .await
        .unwrap();
    assert!(!out.duplicate);
    assert_eq!(out.tenants[0].from_holds, credits(5));
    assert_eq!(out.tenants[0].unrated_records, 1);
    let h = e.ledger.void_hold(&t, h.id).await.unwrap();
    assert_eq!(h.status, HoldStatus::Posted);
    assert_eq!(h.drawn, credits(5));
    let b = e.ledger.balance(&t).await.unwrap();
    assert_eq!(b.available, credits(95));
    assert_eq!(b.consumed, credits(5));
    assert_eq!(b.held, Credits::ZERO);
    let report = e.ledger.verify_audit(None).await.unwrap().unwrap();
    assert_eq!(report.records(), 5); // config, grant, hold, usage, hold ended
}
