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
