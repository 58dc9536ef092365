//! Shared test helpers: a ledger on an SQLite store in a temp dir, with a manual clock.
#![allow(dead_code)]

use std::sync::Arc;

use tempfile::TempDir;
use tollgate_core::{Credits, Initiator, Tier};
use tollgate_ledger::{
    AuditSigner, BatchKey, Ledger, ManualClock, SqliteStore, TenantId, UsageBatch, UsageRecord,
};

/// 2026-01-15 00:00:00 UTC.
pub const T0: u64 = 1_768_435_200;

pub fn credits(n: u64) -> Credits {
    Credits::from_credits(n).unwrap()
}

pub fn tenant(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}

pub fn signer() -> AuditSigner {
    AuditSigner::from_seed(&[7u8; 32])
}

pub struct Env {
    pub dir: TempDir,
    pub clock: ManualClock,
    pub store: Arc<SqliteStore>,
    pub ledger: Ledger,
}

impl Env {
    /// The store as the trait object the ledger uses.
    pub fn store_dyn(&self) -> &dyn tollgate_ledger::Store {
        self.store.as_ref()
    }

    /// The manual clock's time.
    pub fn clock_now(&self) -> u64 {
        tollgate_ledger::Clock::now(&self.clock)
    }
}

pub async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open(dir.path().join("ledger.db"))
            .await
            .unwrap(),
    );
    let clock = ManualClock::new(T0);
    let ledger = Ledger::new(store.clone(), Arc::new(clock.clone()), signer());
    Env {
        dir,
        clock,
        store,
        ledger,
    }
}

pub fn record(t: &TenantId, model: &str, input: u64, output: u64, client: Credits) -> UsageRecord {
    UsageRecord {
        tenant: t.clone(),
        agent: "agent-1".into(),
        model: model.into(),
        feature: "chat".into(),
        tier: Tier::Interactive,
        initiator: Initiator::Human,
        input_tokens: input,
        output_tokens: output,
        outcomes: 0,
        price_book_version: 1,
        client_amount: client,
        at: T0,
        calls: 1,
        agent_instance: "".into(),
        task: "".into(),
        work_units: 0,
        pre_rated: false,
        aggregate: false,
    }
}

pub fn batch(sidecar: &str, seq: u64, records: Vec<UsageRecord>) -> UsageBatch {
    UsageBatch {
        key: BatchKey {
            sidecar_id: sidecar.into(),
            seq,
        },
        records,
        digest: None,
        signature: None,
    }
}
