//! API properties the authority relies on: the ledger is shareable across tasks and its
//! futures are `Send` (tonic handlers run on a multi-threaded runtime).

mod common;

use std::sync::Arc;

use common::*;
use tollgate_ledger::{GrantKind, GrantSpec, HoldId, HoldRequest, Ledger, TenantConfig};

fn assert_send<T: Send>(_: &T) {}
fn assert_sync<T: Send + Sync>() {}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_is_shareable_and_futures_are_send() {
    assert_sync::<Ledger>();
    let e = env().await;
    let ledger = Arc::new(e.ledger);
    let t = tenant("acme");
    let f = ledger.create_tenant(&t, TenantConfig::default());
    assert_send(&f);
    f.await.unwrap();
    let f = ledger.grant(&t, GrantSpec::new(GrantKind::Trial, credits(5)));
    assert_send(&f);
    f.await.unwrap();
    let req = HoldRequest {
        owner: "sc".into(),
        amount: credits(1),
        min_amount: credits(1),
        ttl_secs: 10,
    };
    let f = ledger.hold(&t, req);
    assert_send(&f);
    let h = f.await.unwrap();
    let b = batch("sc", 1, vec![record(&t, "m", 1, 1, credits(1))]);
    let f = ledger.post_batch(&b);
    assert_send(&f);
    f.await.unwrap();
    let f = ledger.void_hold(&t, h.id);
    assert_send(&f);
    f.await.unwrap();
    let f = ledger.balance(&t);
    assert_send(&f);
    f.await.unwrap();
    let f = ledger.evaluate_alerts(&t);
    assert_send(&f);
    f.await.unwrap();
    let f = ledger.sweep(100);
    assert_send(&f);
    f.await.unwrap();
    let mut out = Vec::new();
    let f = ledger.export_audit(None, &mut out);
    assert_send(&f);
    f.await.unwrap();
    // Spawned onto the runtime from another task.
    let l2 = ledger.clone();
    let t2 = t.clone();
    let r = tokio::spawn(async move { l2.void_hold(&t2, HoldId(999)).await })
        .await
        .unwrap();
    assert!(r.is_err(), "unknown hold must be an error");
}
