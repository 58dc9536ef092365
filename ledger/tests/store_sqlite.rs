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

/// A database made before migration 5: its postings named the agent instance in `agent`.
/// After the migration the instance is in `agent_instance` and the name is empty (it was
/// never known), statements read the row, and new postings carry both.
#[tokio::test]
async fn postings_from_before_attribution_keep_their_instance() {
    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::{ConnectOptions, Connection, Executor};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    {
        let mut conn = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .connect()
            .await
            .unwrap();
        conn.execute("CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)")
            .await
            .unwrap();
        for &(v, name, sql) in &tollgate_ledger::store::sqlite::MIGRATIONS[..4] {
            conn.execute(sqlx::raw_sql(sql)).await.unwrap();
            sqlx::query("INSERT INTO schema_migrations VALUES (?, ?, 0)")
                .bind(v)
                .bind(name)
                .execute(&mut conn)
                .await
                .unwrap();
        }
        conn.execute(
            "INSERT INTO postings (tenant, at, batch_sidecar, batch_seq, hold_id, agent, model, feature, funding, grant_id, \
             amount, records, input_tokens, output_tokens, outcomes, balance_before, balance_after) \
             VALUES ('acme', 100, 'pod-1', 1, NULL, 'pod-1/pid5925/lane0', 'm', 'chat', 'grant', 1, 5, 2, 3, 4, 0, 10, 5)",
        )
        .await
        .unwrap();
        conn.close().await.unwrap();
    }
    let store = SqliteStore::open(&path).await.unwrap();
    assert_eq!(
        store.applied_migrations().await.unwrap(),
        vec![1, 2, 3, 4, 5]
    );
    let t = tollgate_ledger::TenantId::new("acme").unwrap();
    let rows = store.statement(&t, 0, 1_000).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].agent, "");
    assert_eq!(rows[0].agent_instance, "pod-1/pid5925/lane0");
    assert_eq!((rows[0].task.as_str(), rows[0].work_units), ("", 0));
    assert_eq!(rows[0].records, 2);
    let p = store.postings(&t, 0, 1_000, 10).await.unwrap();
    assert_eq!(p[0].agent_instance, "pod-1/pid5925/lane0");
}
