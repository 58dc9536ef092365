//! The store suite on SQLite (a fresh database file in a temp dir per case).

mod store_suite;

use std::sync::Arc;

use store_suite::Opener;
use tollgate_ledger::{SqliteStore, Store};

async fn fresh() -> Option<Opener> {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let path = dir.path().join("ledger.db");
    Some(Arc::new(move || {
        let path = path.clone();
        let dir = dir.clone();
        Box::pin(async move {
            let _keep = dir;
            let s: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.unwrap());
            s
        })
    }))
}

store_suite::store_suite!(fresh);

/// SQLite prunes burn-rate buckets older than two days at each sweep.
#[tokio::test]
async fn sqlite_prunes_old_spend_buckets() {
    let open = fresh().await.unwrap();
    let h = store_suite::H::new(open).await;
    let t = h.tenant_with("acme", 100).await;
    for i in 0..3u64 {
        let b = store_suite::batch("sc", i, vec![store_suite::rec(&t, "a", store_suite::c(1))]);
        h.ledger.post_batch(&b).await.unwrap();
        h.clock.advance(60);
    }
    assert_eq!(h.ledger.sweep(10).await.unwrap().buckets_pruned, 0);
    h.clock.advance(2 * 86_400);
    assert_eq!(h.ledger.sweep(10).await.unwrap().buckets_pruned, 3);
    assert_eq!(h.ledger.sweep(10).await.unwrap().buckets_pruned, 0);
    assert_eq!(
        h.ledger.balance(&t).await.unwrap().consumed,
        store_suite::c(3)
    );
}
