//! The store suite on a REAL PostgreSQL server: the cases the SQLite store passes
//! (ported from tests/basic.rs, tests/pricing.rs and tests/audit_tamper.rs, whose shared
//! helpers build an SQLite ledger), plus what only a shared server has: migrations raced
//! by several instances, wallet row locks across instances, the unique batch key and a
//! tenant created by two instances at once.
//!
//! Set `TOLLGATE_TEST_POSTGRES_URL` (e.g. `postgres://postgres@127.0.0.1:5432/test`).
//! Without it every test prints `SKIPPED: <name>: set TOLLGATE_TEST_POSTGRES_URL` and
//! passes, unless `TOLLGATE_TEST_REQUIRE_SERVICES=1` (CI), then it fails. Each test runs
//! in its own fresh schema `tg_<random>`, dropped at the end (also on failure), so tests
//! run in parallel and repeated runs never collide.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sqlx::Connection;
use tollgate_core::{Credits, Initiator, ModelPrice, PriceBook, PriceBookSpec, Pricing, Tier};
use tollgate_ledger::audit::{ChainHead, WalletTotals};
use tollgate_ledger::store::postgres::{PostgresOptions, PostgresStore};
use tollgate_ledger::store::{
    AlertRuleState, BatchRow, Changes, HoldSelect, PriceBookRow, Store, WalletRow,
};
use tollgate_ledger::{
    AuditRecord, AuditSigner, BatchKey, BatchOutcome, Funding, Grant, GrantId, GrantKind,
    GrantSpec, Hold, HoldId, HoldPart, HoldRequest, HoldStatus, Ledger, LedgerError, ManualClock,
    Plan, Posting, ResetPeriod, TenantConfig, TenantId, TenantPosting, UsageBatch, UsageRecord,
    VerifyFailure,
};

mod store_suite;

const URL_VAR: &str = "TOLLGATE_TEST_POSTGRES_URL";

/// 2026-01-15 00:00:00 UTC.
const T0: u64 = 1_768_435_200;

// ----- harness -----

fn server_url(test: &str) -> Option<String> {
    match std::env::var(URL_VAR) {
        Ok(u) if !u.trim().is_empty() => Some(u),
        _ => {
            if std::env::var("TOLLGATE_TEST_REQUIRE_SERVICES").as_deref() == Ok("1") {
                panic!("{test}: {URL_VAR} is not set but TOLLGATE_TEST_REQUIRE_SERVICES=1");
            }
            eprintln!("SKIPPED: {test}: set {URL_VAR}");
            None
        }
    }
}

/// A fresh schema on the test server.
#[derive(Clone)]
struct Db {
    url: String,
    schema: String,
}

impl Db {
    /// A store instance (its own pool) on this schema, migrations applied.
    async fn store(&self) -> PostgresStore {
        self.store_as(None).await
    }

    /// A store whose connections carry `application_name = <schema>_<name>`, so a test
    /// can watch them in `pg_stat_activity`.
    async fn store_as(&self, name: Option<&str>) -> PostgresStore {
        let url = match name {
            Some(n) => {
                let sep = if self.url.contains('?') { '&' } else { '?' };
                format!("{}{sep}application_name={}_{n}", self.url, self.schema)
            }
            None => self.url.clone(),
        };
        PostgresStore::connect_with(
            &url,
            PostgresOptions {
                max_connections: 4,
                schema: Some(self.schema.clone()),
                ..PostgresOptions::default()
            },
        )
        .await
        .expect("connect to the test PostgreSQL")
    }

    /// Wait until a connection named `<schema>_<name>` waits for a lock.
    async fn wait_blocked(&self, name: &str) {
        let app = format!("{}_{name}", self.schema);
        let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
        for _ in 0..3000 {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'",
            )
            .bind(&app)
            .fetch_one(&mut conn)
            .await
            .unwrap();
            if n > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{app} never waited for a lock");
    }

    async fn drop_schema(&self) {
        let mut conn = sqlx::PgConnection::connect(&self.url).await.unwrap();
        // A connection of a failed case may still be rolling back: wait, but not forever.
        sqlx::query("SET lock_timeout = '20s'")
            .execute(&mut conn)
            .await
            .unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
            self.schema
        )))
        .execute(&mut conn)
        .await
        .unwrap();
    }
}

fn random_schema() -> String {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("random bytes");
    format!("tg_{}", hex::encode(b))
}

// ----- the generic store suite (tests/store_suite), on PostgreSQL -----

/// Drops its schema when the last handle goes (the suite's cases own their opener, so
/// this is the end of the case, panicking or not).
struct SchemaGuard(Db);

impl Drop for SchemaGuard {
    fn drop(&mut self) {
        let db = self.0.clone();
        // Drop is synchronous and may run on a runtime thread: use a thread of its own.
        let done = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(db.drop_schema())
        })
        .join();
        if done.is_err() {
            eprintln!("warning: could not drop test schema {}", self.0.schema);
        }
    }
}

/// A fresh schema per suite case; every call of the opener is a new store instance
/// (its own pool) on it, as a restarted authority or a second replica would be.
async fn pg_fresh() -> Option<store_suite::Opener> {
    // libtest names the test's thread after the test.
    let name = std::thread::current()
        .name()
        .unwrap_or("store suite case")
        .to_string();
    let url = server_url(&name)?;
    let db = Db {
        url,
        schema: random_schema(),
    };
    let guard = Arc::new(SchemaGuard(db.clone()));
    Some(Arc::new(move || {
        // The opener owns the guard: the schema lives as long as the case's opener.
        let _ = &guard;
        let db = db.clone();
        Box::pin(async move {
            let s: Arc<dyn Store> = Arc::new(db.store().await);
            s
        })
    }))
}

store_suite::store_suite!(pg_fresh);

// ----- harness for the PostgreSQL-only cases -----

/// Run `body` on a fresh schema, then drop it (also when `body` panics).
async fn with_db<F, Fut>(test: &str, body: F)
where
    F: FnOnce(Db) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(url) = server_url(test) else { return };
    let db = Db {
        url,
        schema: random_schema(),
    };
    let r = tokio::spawn(body(db.clone())).await;
    db.drop_schema().await;
    if let Err(e) = r {
        match e.try_into_panic() {
            Ok(p) => std::panic::resume_unwind(p),
            Err(e) => panic!("{test}: {e}"),
        }
    }
}

fn credits(n: u64) -> Credits {
    Credits::from_credits(n).unwrap()
}

fn tenant(s: &str) -> TenantId {
    TenantId::new(s).unwrap()
}

fn signer() -> AuditSigner {
    AuditSigner::from_seed(&[7u8; 32])
}

fn ledger_on(store: PostgresStore, clock: &ManualClock) -> Ledger {
    Ledger::new(Arc::new(store), Arc::new(clock.clone()), signer())
}

fn record(t: &TenantId, model: &str, input: u64, output: u64, client: Credits) -> UsageRecord {
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

fn batch(sidecar: &str, seq: u64, records: Vec<UsageRecord>) -> UsageBatch {
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

fn hold_req(owner: &str, amount: Credits) -> HoldRequest {
    HoldRequest {
        owner: owner.into(),
        amount,
        min_amount: amount,
        ttl_secs: 60,
    }
}

// ----- migrations and connection -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_are_versioned_idempotent_and_race_safe() {
    with_db(
        "migrations_are_versioned_idempotent_and_race_safe",
        |db| async move {
            // Three instances start at once on an empty schema: one applies, all succeed.
            let (a, b, c) = tokio::join!(db.store(), db.store(), db.store());
            for s in [&a, &b, &c] {
                assert_eq!(s.applied_migrations().await.unwrap(), vec![1, 2, 3, 4, 5]);
            }
            assert_eq!(
                a.migrate().await.unwrap(),
                Vec::<i64>::new(),
                "nothing pending"
            );
            // Session settings every connection carries.
            for (setting, want) in [
                ("synchronous_commit", "on"),
                ("idle_in_transaction_session_timeout", "30s"),
                ("search_path", db.schema.as_str()),
            ] {
                let got: String =
                    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SHOW {setting}")))
                        .fetch_one(a.pool())
                        .await
                        .unwrap();
                assert_eq!(got, want, "{setting}");
            }
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM schema_migrations")
                .fetch_one(a.pool())
                .await
                .unwrap();
            assert_eq!(n, 5);
            // A database migrated by a newer release is refused with a clear message.
            sqlx::query("INSERT INTO schema_migrations VALUES (999, 'future', 0)")
                .execute(a.pool())
                .await
                .unwrap();
            let err = a.migrate().await.unwrap_err().to_string();
            assert!(err.contains("999") && err.contains("newer"), "{err}");
        },
    )
    .await;
}

#[tokio::test]
async fn bad_url_and_schema_are_clear_errors() {
    let err = PostgresStore::connect("not a url").await.unwrap_err();
    assert!(matches!(err, LedgerError::InvalidInput(_)), "{err}");
    let err = PostgresStore::connect_with(
        "postgres://u:hunter2@127.0.0.1:1/x",
        PostgresOptions {
            schema: Some("bad\"; DROP".into()),
            ..PostgresOptions::default()
        },
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("schema name"), "{err}");
    // Nothing listens on port 1: a store error that does not leak the password.
    let err = PostgresStore::connect_with(
        "postgres://u:hunter2@127.0.0.1:1/x",
        PostgresOptions {
            acquire_timeout: Duration::from_secs(2),
            ..PostgresOptions::default()
        },
    )
    .await
    .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, LedgerError::Store(_)), "{msg}");
    assert!(!msg.contains("hunter2"), "password leaked: {msg}");
    let cause = std::error::Error::source(&err).and_then(std::error::Error::source);
    assert!(cause.is_some(), "the connection error is kept as the cause");
}

// ----- the store interface, row by row -----

/// A batch outcome's per-tenant figures. Built from JSON so that counters the ledger
/// adds later (with serde defaults) need no change here.
fn tenant_posting(t: &TenantId) -> TenantPosting {
    let cr = |n: u64| serde_json::to_value(credits(n)).unwrap();
    serde_json::from_value(serde_json::json!({
        "tenant": t.as_str(),
        "records": 3,
        "rated": cr(6),
        "client_amount": cr(6),
        "repriced_records": 0,
        "unrated_records": 3,
        "from_holds": cr(1),
        "from_grants": cr(0),
        "from_plan": cr(2),
        "overrun": cr(3),
    }))
    .expect("TenantPosting from JSON")
}

fn sample(t: &TenantId) -> Changes {
    let mut w = WalletRow::new(t.clone(), TenantConfig::default(), T0);
    w.next_grant_id = 3;
    w.next_hold_id = 2;
    w.totals = WalletTotals {
        granted: credits(150),
        available: credits(120),
        held: credits(10),
        consumed: credits(15),
        expired: credits(5),
        plan_held: credits(1),
        plan_consumed: credits(2),
        overrun: credits(3),
    };
    w.period_spent = credits(17);
    w.period_usage.metered = credits(2);
    w.period_usage.request_units_milli = 1500;
    w.price_book_version = Some(2);
    w.alert_state = vec![AlertRuleState {
        rule_id: "r1".into(),
        fired_period: Some(T0),
        active: true,
    }];
    w.audit_head = ChainHead {
        seq: 1,
        hash: [9u8; 32],
    };
    let g1 = Grant {
        tenant: t.clone(),
        id: GrantId(1),
        kind: GrantKind::RecurringAllowance,
        amount: credits(100),
        priority: 5,
        starts_at: T0,
        expires_at: Some(T0 + 86_400 * 365),
        reset: Some(ResetPeriod::Monthly),
        reference: Some("order-1".into()),
        created_at: T0,
        period: 2,
        period_start: T0,
        next_reset_at: Some(T0 + 50),
        granted: credits(100),
        available: credits(70),
        held: credits(10),
        consumed: credits(15),
        expired: credits(5),
        closed: false,
    };
    let g2 = Grant {
        id: GrantId(2),
        kind: GrantKind::Trial,
        amount: credits(50),
        priority: 100,
        expires_at: None,
        reset: None,
        reference: None,
        next_reset_at: None,
        granted: credits(50),
        available: credits(50),
        held: Credits::ZERO,
        consumed: Credits::ZERO,
        expired: Credits::ZERO,
        ..g1.clone()
    };
    let h = Hold {
        tenant: t.clone(),
        id: HoldId(1),
        owner: "sc-1".into(),
        amount: credits(11),
        drawn: credits(1),
        released: Credits::ZERO,
        status: HoldStatus::Open,
        created_at: T0,
        expires_at: T0 + 60,
        closed_at: None,
        parts: vec![
            HoldPart {
                funding: Funding::Grant(GrantId(1)),
                period: 2,
                amount: credits(10),
                drawn: credits(1),
                released: credits(2),
            },
            HoldPart {
                funding: Funding::Plan,
                period: 0,
                amount: credits(1),
                drawn: Credits::ZERO,
                released: Credits::ZERO,
            },
        ],
    };
    let key = BatchKey {
        sidecar_id: "sc-1".into(),
        seq: 7,
    };
    let p1 = Posting {
        tenant: t.clone(),
        batch: Some(key.clone()),
        hold: Some(HoldId(1)),
        agent: "a".into(),
        agent_instance: "pod-1/pid7/lane0".into(),
        model: "m".into(),
        feature: "f".into(),
        task: "ticket-1".into(),
        funding: Funding::Grant(GrantId(1)),
        amount: credits(1),
        records: 3,
        input_tokens: 10,
        output_tokens: 20,
        outcomes: 1,
        work_units: 1,
        request_units_milli: 2_000,
        balance_before: credits(71),
        balance_after: credits(70),
        at: T0,
    };
    let p2 = Posting {
        batch: None,
        hold: None,
        funding: Funding::Plan,
        amount: credits(2),
        at: T0 + 1,
        ..p1.clone()
    };
    let p3 = Posting {
        agent: "B".into(),
        funding: Funding::Overrun,
        amount: credits(3),
        at: T0 + 2,
        ..p1.clone()
    };
    let outcome = BatchOutcome {
        key: key.clone(),
        duplicate: false,
        records: 3,
        posted_at: T0,
        tenants: vec![tenant_posting(t)],
    };
    let a1 = AuditRecord {
        tenant: t.clone(),
        seq: 1,
        at: T0,
        prev_hash: "00".repeat(32),
        body: "{\"event\":\"x\"}".into(),
        hash: "09".repeat(32),
        signature: "ab".repeat(64),
    };
    Changes {
        new_wallets: vec![w],
        grants: vec![g1, g2],
        holds: vec![h],
        postings: vec![p1, p2, p3],
        batches: vec![BatchRow {
            outcome,
            digest: Some("d1".into()),
            signature: None,
        }],
        audit: vec![a1],
        spend_buckets: vec![
            (t.clone(), T0, credits(5)),
            (t.clone(), T0, credits(7)),
            (t.clone(), T0 + 60, credits(1)),
        ],
        price_books: vec![PriceBookRow {
            tenant: t.clone(),
            version: 2,
            json: "{\"v\":2}".into(),
            created_at: T0,
        }],
        ..Changes::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_round_trip_every_column() {
    with_db("changes_round_trip_every_column", |db| async move {
        let s = db.store().await;
        let t = tenant("acme");
        let ch = sample(&t);
        let mut tx = s.begin().await.unwrap();
        assert_eq!(
            tx.lock_wallets(std::slice::from_ref(&t)).await.unwrap(),
            vec![None]
        );
        tx.write(&ch).await.unwrap();
        tx.commit().await.unwrap();

        let w = &ch.new_wallets[0];
        assert_eq!(s.wallet(&t).await.unwrap().as_ref(), Some(w));
        assert_eq!(
            s.wallet_view(&t).await.unwrap(),
            Some((w.clone(), ch.grants.clone()))
        );
        assert_eq!(s.wallet_view(&tenant("none")).await.unwrap(), None);
        assert_eq!(s.tenants().await.unwrap(), vec![t.clone()]);
        assert_eq!(s.grants(&t, true).await.unwrap(), ch.grants);
        assert_eq!(s.holds(&t, true).await.unwrap(), ch.holds);
        assert_eq!(s.holds(&t, false).await.unwrap(), ch.holds, "open");
        assert_eq!(s.postings(&t, T0, T0 + 10, 100).await.unwrap(), ch.postings);
        assert_eq!(
            s.postings(&t, T0, T0 + 10, 2).await.unwrap(),
            ch.postings[..2]
        );
        let key = ch.batches[0].outcome.key.clone();
        assert_eq!(
            s.batch(&key).await.unwrap(),
            Some(ch.batches[0].outcome.clone())
        );
        assert_eq!(
            s.batch(&BatchKey {
                sidecar_id: "sc-1".into(),
                seq: 8
            })
            .await
            .unwrap(),
            None
        );
        assert_eq!(s.audit_records(&t, 1, 10).await.unwrap(), ch.audit);
        assert_eq!(s.audit_records(&t, 2, 10).await.unwrap(), vec![]);
        assert_eq!(
            s.spend_since(&t, T0).await.unwrap(),
            credits(13),
            "repeats summed"
        );
        assert_eq!(s.spend_since(&t, T0 + 60).await.unwrap(), credits(1));
        assert_eq!(
            s.spend_since(&tenant("none"), 0).await.unwrap(),
            Credits::ZERO
        );
        assert_eq!(
            s.latest_price_book(&t).await.unwrap(),
            Some(ch.price_books[0].clone())
        );
        assert_eq!(s.due_holds(T0 + 59, 10).await.unwrap(), vec![]);
        assert_eq!(
            s.due_holds(T0 + 60, 10).await.unwrap(),
            vec![(t.clone(), HoldId(1))]
        );
        assert_eq!(
            s.tenants_with_due_grants(T0 + 49, 10).await.unwrap(),
            vec![]
        );
        assert_eq!(
            s.tenants_with_due_grants(T0 + 50, 10).await.unwrap(),
            vec![t.clone()]
        );

        // Statement: grouped by agent, model, feature, funding (byte order, grant
        // sources after plan/overrun... as SQLite orders them) with exact sums.
        let st = s.statement(&t, T0, T0 + 10).await.unwrap();
        let got: Vec<(String, Funding, Credits)> = st
            .iter()
            .map(|r| (r.agent.clone(), r.funding, r.amount))
            .collect();
        assert_eq!(
            got,
            vec![
                ("B".into(), Funding::Overrun, credits(3)),
                ("a".into(), Funding::Grant(GrantId(1)), credits(1)),
                ("a".into(), Funding::Plan, credits(2)),
            ]
        );
        assert_eq!(st[1].records, 3);
        assert_eq!(st[1].input_tokens, 10);
        assert_eq!(st[1].output_tokens, 20);
        assert_eq!(st[1].outcomes, 1);

        // In a transaction: the locked row, selections, price book by version.
        let mut tx = s.begin().await.unwrap();
        let got = tx.lock_wallets(std::slice::from_ref(&t)).await.unwrap();
        assert_eq!(got, vec![Some(w.clone())]);
        assert_eq!(tx.active_grants(&t).await.unwrap(), ch.grants);
        assert_eq!(
            tx.active_grants_of(&[t.clone(), tenant("none")])
                .await
                .unwrap(),
            vec![ch.grants.clone(), vec![]]
        );
        assert_eq!(
            tx.grant(&t, GrantId(2)).await.unwrap(),
            Some(ch.grants[1].clone())
        );
        assert_eq!(tx.grant(&t, GrantId(9)).await.unwrap(), None);
        assert_eq!(
            tx.grant_by_reference(&t, "order-1").await.unwrap(),
            Some(ch.grants[0].clone())
        );
        assert_eq!(
            tx.holds(&t, &HoldSelect::Ids(vec![HoldId(1), HoldId(5)]))
                .await
                .unwrap(),
            ch.holds
        );
        assert_eq!(
            tx.holds(&t, &HoldSelect::OpenOwnedBy("sc-1".into()))
                .await
                .unwrap(),
            ch.holds
        );
        assert_eq!(
            tx.holds(&t, &HoldSelect::OpenOwnedBy("sc-2".into()))
                .await
                .unwrap(),
            vec![]
        );
        assert_eq!(
            tx.holds(&t, &HoldSelect::OpenDueBy(T0 + 59)).await.unwrap(),
            vec![]
        );
        assert_eq!(
            tx.batch(&key).await.unwrap(),
            Some(ch.batches[0].outcome.clone())
        );
        assert_eq!(
            tx.price_book(&t, 2).await.unwrap(),
            Some(ch.price_books[0].clone())
        );
        assert_eq!(tx.price_book(&t, 1).await.unwrap(), None);

        // Updates: wallet, grant and hold rows are replaced by key; spend accumulates.
        let mut w2 = w.clone();
        w2.next_hold_id = 9;
        w2.price_book_version = None;
        w2.alert_state.clear();
        let mut g1 = ch.grants[0].clone();
        g1.closed = true;
        g1.available = Credits::ZERO;
        g1.held = Credits::ZERO;
        g1.expired = credits(85);
        let mut h = ch.holds[0].clone();
        h.status = HoldStatus::Voided;
        h.released = credits(10);
        h.closed_at = Some(T0 + 5);
        tx.write(&Changes {
            wallets: vec![w2.clone()],
            grants: vec![g1.clone()],
            holds: vec![h.clone()],
            spend_buckets: vec![(t.clone(), T0, credits(1))],
            ..Changes::default()
        })
        .await
        .unwrap();
        tx.commit().await.unwrap();
        assert_eq!(s.wallet(&t).await.unwrap(), Some(w2));
        assert_eq!(
            s.grants(&t, true).await.unwrap(),
            vec![g1.clone(), ch.grants[1].clone()]
        );
        assert_eq!(
            s.grants(&t, false).await.unwrap(),
            vec![ch.grants[1].clone()],
            "closed"
        );
        assert_eq!(s.holds(&t, false).await.unwrap(), vec![]);
        assert_eq!(s.holds(&t, true).await.unwrap(), vec![h]);
        assert_eq!(s.spend_since(&t, T0).await.unwrap(), credits(14));
        assert_eq!(s.due_holds(T0 + 1000, 10).await.unwrap(), vec![]);

        // A transaction dropped without commit leaves nothing behind.
        let mut tx = s.begin().await.unwrap();
        tx.lock_wallets(std::slice::from_ref(&t)).await.unwrap();
        let mut g3 = ch.grants[1].clone();
        g3.id = GrantId(3);
        tx.write(&Changes {
            grants: vec![g3],
            ..Changes::default()
        })
        .await
        .unwrap();
        drop(tx);
        assert_eq!(s.grants(&t, true).await.unwrap().len(), 2);

        // Too large for BIGINT: refused, not wrapped.
        let mut big = ch.grants[1].clone();
        big.id = GrantId(4);
        big.granted = Credits(u64::MAX);
        let mut tx = s.begin().await.unwrap();
        let err = tx
            .write(&Changes {
                grants: vec![big],
                ..Changes::default()
            })
            .await
            .unwrap_err();
        assert!(matches!(err, LedgerError::Overflow(_)), "{err}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_in_byte_order_whatever_the_collation() {
    with_db(
        "tenants_are_in_byte_order_whatever_the_collation",
        |db| async move {
            let clock = ManualClock::new(T0);
            let l = ledger_on(db.store().await, &clock);
            let names = ["b", "B", "a", "_x", "A-1", "a.b", "0"];
            for n in names {
                l.create_tenant(&tenant(n), TenantConfig::default())
                    .await
                    .unwrap();
            }
            let mut want: Vec<TenantId> = names.iter().map(|n| tenant(n)).collect();
            want.sort();
            assert_eq!(l.tenants().await.unwrap(), want);
        },
    )
    .await;
}

// ----- ledger flows (the SQLite cases) -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grant_hold_usage_void_and_audit_verify() {
    with_db("grant_hold_usage_void_and_audit_verify", |db| async move {
        let clock = ManualClock::new(T0);
        let l = ledger_on(db.store().await, &clock);
        let t = tenant("acme");
        l.create_tenant(&t, TenantConfig::default()).await.unwrap();
        let g = l
            .grant(&t, GrantSpec::new(GrantKind::Purchased, credits(100)))
            .await
            .unwrap();
        assert_eq!(g.available, credits(100));
        let h = l.hold(&t, hold_req("sc-1", credits(30))).await.unwrap();
        assert_eq!(h.amount, credits(30));
        let out = l
            .post_batch(&batch("sc-1", 1, vec![record(&t, "m", 10, 10, credits(5))]))
            .await
            .unwrap();
        assert!(!out.duplicate);
        assert_eq!(out.tenants[0].from_holds, credits(5));
        assert_eq!(out.tenants[0].unrated_records, 1);
        let h = l.void_hold(&t, h.id).await.unwrap();
        assert_eq!(h.status, HoldStatus::Posted);
        assert_eq!(h.drawn, credits(5));
        let b = l.balance(&t).await.unwrap();
        assert_eq!(b.available, credits(95));
        assert_eq!(b.consumed, credits(5));
        assert_eq!(b.held, Credits::ZERO);
        assert_eq!(b.burn_rate_1h, credits(5));
        let st = l.statement(&t, T0, T0 + 1).await.unwrap();
        assert_eq!(st.rows.len(), 1);
        assert_eq!(st.rows[0].amount, credits(5));
        let report = l.verify_audit(None).await.unwrap().unwrap();
        assert_eq!(report.records(), 5); // config, grant, hold, usage, hold ended
        // A grant with a reference is idempotent.
        let mut spec = GrantSpec::new(GrantKind::Promotional, credits(3));
        spec.reference = Some("promo-1".into());
        let a = l.grant(&t, spec.clone()).await.unwrap();
        let b = l.grant(&t, spec).await.unwrap();
        assert_eq!(a, b);
        assert_eq!(l.balance(&t).await.unwrap().granted, credits(103));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_timeouts_resets_and_sweep() {
    with_db("hold_timeouts_resets_and_sweep", |db| async move {
        let clock = ManualClock::new(T0);
        let l = ledger_on(db.store().await, &clock);
        let t = tenant("acme");
        l.create_tenant(&t, TenantConfig::default()).await.unwrap();
        let mut spec = GrantSpec::new(GrantKind::RecurringAllowance, credits(50));
        spec.reset = Some(ResetPeriod::Monthly);
        l.grant(&t, spec).await.unwrap();
        let h = l.hold(&t, hold_req("sc", credits(20))).await.unwrap();
        assert_eq!(l.balance(&t).await.unwrap().held, credits(20));
        clock.advance(61);
        let rep = l.sweep(100).await.unwrap();
        assert_eq!(rep.holds_expired, 1);
        let holds = l.store().holds(&t, true).await.unwrap();
        assert_eq!(holds[0].id, h.id);
        assert_eq!(holds[0].status, HoldStatus::Expired);
        // Into February: the monthly allowance resets (no rollover).
        l.post_batch(&batch("sc", 1, vec![record(&t, "m", 1, 1, credits(10))]))
            .await
            .unwrap();
        clock.set(T0 + 20 * 86_400);
        let rep = l.sweep(100).await.unwrap();
        assert_eq!(rep.tenants_caught_up, 1);
        let b = l.balance(&t).await.unwrap();
        assert_eq!(b.available, credits(50), "refilled");
        let parts = [b.available, b.upcoming, b.held, b.consumed, b.expired];
        let sum: u64 = parts.iter().map(|c| c.micros()).sum();
        assert_eq!(b.granted.micros(), sum, "conserved");
        l.verify_audit(None).await.unwrap().unwrap();
    })
    .await;
}

fn book(version: u64) -> PriceBook {
    PriceBook::new(PriceBookSpec {
        version,
        request_price: Credits::ZERO,
        default_max_output_tokens: 4096,
        models: vec![ModelPrice {
            name: "gpt".into(),
            pricing: Pricing::PerToken {
                input_per_million: credits(1),
                output_per_million: credits(1),
            },
            max_output_tokens: None,
        }],
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hard_cap_is_never_exceeded_past_it_is_overrun() {
    with_db(
        "hard_cap_is_never_exceeded_past_it_is_overrun",
        |db| async move {
            let clock = ManualClock::new(T0);
            let l = ledger_on(db.store().await, &clock);
            let t = tenant("capped");
            let plan = Plan {
                hard_cap: Some(credits(10)),
                ..Plan::default()
            };
            l.create_tenant(
                &t,
                TenantConfig {
                    plan: Some(plan),
                    ..TenantConfig::default()
                },
            )
            .await
            .unwrap();
            l.set_price_book(&t, &book(1)).await.unwrap();
            let err = l.set_price_book(&t, &book(1)).await.unwrap_err();
            assert!(matches!(err, LedgerError::InvalidInput(_)), "{err}");
            l.grant(&t, GrantSpec::new(GrantKind::Promotional, credits(5)))
                .await
                .unwrap();
            // 25 credits of usage: 5 from the grant, 10 from the plan (its cap), 10 overrun.
            let out = l
                .post_batch(&batch(
                    "sc",
                    1,
                    vec![record(&t, "gpt", 15_000_000, 10_000_000, credits(25))],
                ))
                .await
                .unwrap();
            let tp = &out.tenants[0];
            assert_eq!(tp.from_grants, credits(5));
            assert_eq!(tp.from_plan, credits(10));
            assert_eq!(tp.overrun, credits(10));
            let bal = l.balance(&t).await.unwrap();
            assert_eq!(bal.period_bill.unwrap().charge, credits(10));
            assert_eq!(bal.spendable, Credits::ZERO);
            let err = l
                .hold(
                    &t,
                    HoldRequest {
                        owner: "sc".into(),
                        amount: credits(1),
                        min_amount: Credits::from_micros(1),
                        ttl_secs: 60,
                    },
                )
                .await
                .unwrap_err();
            assert!(
                matches!(
                    err,
                    LedgerError::InsufficientFunds {
                        limit: tollgate_core::LimitKind::HardCap,
                        ..
                    }
                ),
                "{err}"
            );
            // A fresh instance reads the stored book back (no cache) and rates the same.
            let l2 = ledger_on(db.store().await, &clock);
            assert_eq!(l2.price_book(&t).await.unwrap().unwrap().version(), 1);
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_resent_to_another_instance_is_posted_once() {
    with_db(
        "batch_resent_to_another_instance_is_posted_once",
        |db| async move {
            let clock = ManualClock::new(T0);
            let l1 = ledger_on(db.store().await, &clock);
            let l2 = ledger_on(db.store().await, &clock);
            let t = tenant("acme");
            let o = tenant("other");
            for x in [&t, &o] {
                l1.create_tenant(x, TenantConfig::default()).await.unwrap();
                l1.grant(x, GrantSpec::new(GrantKind::Purchased, credits(100)))
                    .await
                    .unwrap();
            }
            let b = batch(
                "sc",
                1,
                vec![
                    record(&t, "m", 1, 1, credits(4)),
                    record(&o, "m", 1, 1, credits(2)),
                ],
            );
            let first = l1.post_batch(&b).await.unwrap();
            assert!(!first.duplicate);
            let again = l2.post_batch(&b).await.unwrap();
            assert!(again.duplicate);
            assert_eq!(again.tenants, first.tenants);
            // In one group commit, with a repeat inside the call.
            let b2 = batch("sc", 2, vec![record(&t, "m", 1, 1, credits(1))]);
            let outs = l2.post_batches(&[b.clone(), b2.clone(), b2]).await.unwrap();
            assert!(outs[0].duplicate && !outs[1].duplicate && outs[2].duplicate);
            assert_eq!(l1.balance(&t).await.unwrap().consumed, credits(5));
            assert_eq!(l1.balance(&o).await.unwrap().consumed, credits(2));
            assert_eq!(
                l1.store()
                    .postings(&t, 0, u64::MAX / 2, 100)
                    .await
                    .unwrap()
                    .len(),
                2
            );
        },
    )
    .await;
}

// ----- concurrency across instances -----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wallet_lock_makes_the_second_writer_wait_and_read_the_first() {
    with_db(
        "wallet_lock_makes_the_second_writer_wait_and_read_the_first",
        |db| async move {
            let a = db.store().await;
            let b = db.store_as(Some("b")).await;
            let t = tenant("acme");
            let clock = ManualClock::new(T0);
            ledger_on(a.clone(), &clock)
                .create_tenant(&t, TenantConfig::default())
                .await
                .unwrap();
            let mut ta = a.begin().await.unwrap();
            let row = ta.lock_wallets(std::slice::from_ref(&t)).await.unwrap()[0]
                .clone()
                .unwrap();
            let t2 = t.clone();
            let waiter = tokio::spawn(async move {
                let mut tb = b.begin().await.unwrap();
                let got = tb.lock_wallets(&[t2]).await.unwrap();
                tb.commit().await.unwrap();
                got
            });
            db.wait_blocked("b").await;
            let mut changed = row.clone();
            changed.next_grant_id += 41;
            ta.write(&Changes {
                wallets: vec![changed.clone()],
                ..Changes::default()
            })
            .await
            .unwrap();
            ta.commit().await.unwrap();
            let got = waiter.await.unwrap();
            assert_eq!(
                got,
                vec![Some(changed)],
                "the waiter reads the committed row"
            );
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_created_by_two_instances_at_once_exists_once() {
    with_db(
        "tenant_created_by_two_instances_at_once_exists_once",
        |db| async move {
            let clock = ManualClock::new(T0);
            let l1 = ledger_on(db.store().await, &clock);
            let l2 = ledger_on(db.store().await, &clock);
            for i in 0..20 {
                let t = tenant(&format!("t{i}"));
                let (r1, r2) = tokio::join!(
                    l1.create_tenant(&t, TenantConfig::default()),
                    l2.create_tenant(&t, TenantConfig::default())
                );
                let oks = [&r1, &r2].iter().filter(|r| r.is_ok()).count();
                assert_eq!(oks, 1, "{r1:?} {r2:?}");
                for r in [r1, r2] {
                    if let Err(e) = r {
                        assert_eq!(e, LedgerError::TenantExists(t.clone()));
                    }
                }
                assert_eq!(l1.audit_records(&t, 1, 10).await.unwrap().len(), 1);
            }
            l1.verify_audit(None).await.unwrap().unwrap();
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_batch_key_is_refused_by_the_unique_key_never_doubled() {
    with_db(
        "racing_batch_key_is_refused_by_the_unique_key_never_doubled",
        |db| async move {
            // Below the ledger: two transactions insert the same (sidecar, seq) without a
            // common wallet lock. The primary key makes the second wait, then refuse.
            let a = db.store().await;
            let b = db.store_as(Some("b")).await;
            let t = tenant("acme");
            let ch = sample(&t);
            let row = ch.batches[0].clone();
            let mut ta = a.begin().await.unwrap();
            ta.write(&Changes {
                batches: vec![row.clone()],
                postings: ch.postings.clone(),
                ..Changes::default()
            })
            .await
            .unwrap();
            let (b2, row2, posts) = (b.clone(), row.clone(), ch.postings.clone());
            let racer = tokio::spawn(async move {
                let mut tb = b2.begin().await.unwrap();
                let r = tb
                    .write(&Changes {
                        postings: posts,
                        batches: vec![row2],
                        ..Changes::default()
                    })
                    .await;
                if r.is_ok() {
                    tb.commit().await.unwrap();
                }
                r
            });
            db.wait_blocked("b").await;
            ta.commit().await.unwrap();
            let err = racer.await.unwrap().unwrap_err();
            assert!(err.to_string().contains("posted concurrently"), "{err}");
            assert_eq!(
                a.postings(&t, 0, u64::MAX / 2, 100).await.unwrap().len(),
                3,
                "once"
            );
            // A batch that posted nothing (no records) is simply already there.
            let mut empty = row.clone();
            empty.outcome.key.seq = 99;
            empty.outcome.tenants.clear();
            for s in [&a, &b] {
                let mut tx = s.begin().await.unwrap();
                tx.write(&Changes {
                    batches: vec![empty.clone()],
                    ..Changes::default()
                })
                .await
                .unwrap();
                tx.commit().await.unwrap();
            }
            assert!(a.batch(&empty.outcome.key).await.unwrap().is_some());
        },
    )
    .await;
}

// ----- the audit chain against tampering in PostgreSQL -----

async fn history(db: &Db) -> (PostgresStore, Ledger) {
    let s = db.store().await;
    let clock = ManualClock::new(T0);
    let l = ledger_on(s.clone(), &clock);
    let t = tenant("acme");
    let o = tenant("other");
    for x in [&t, &o] {
        l.create_tenant(x, TenantConfig::default()).await.unwrap();
        l.grant(x, GrantSpec::new(GrantKind::Purchased, credits(100)))
            .await
            .unwrap();
    }
    let h = l.hold(&t, hold_req("sc", credits(10))).await.unwrap();
    l.post_batch(&batch(
        "sc",
        1,
        vec![
            record(&t, "m", 1, 1, credits(4)),
            record(&o, "m", 1, 1, credits(2)),
        ],
    ))
    .await
    .unwrap();
    l.void_hold(&t, h.id).await.unwrap();
    l.grant(&t, GrantSpec::new(GrantKind::Promotional, credits(7)))
        .await
        .unwrap();
    let rep = l.verify_audit(None).await.unwrap().unwrap();
    assert_eq!(rep.tenants.len(), 2);
    assert_eq!(rep.tenants[0].1, 6);
    assert_eq!(rep.tenants[1].1, 3);
    (s, l)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edited_deleted_or_reordered_audit_records_are_named() {
    with_db("edited_deleted_or_reordered_audit_records_are_named", |db| async move {
        let (s, l) = history(&db).await;
        let exec = |sql: &'static str| {
            let pool = s.pool().clone();
            async move {
                sqlx::query(sql).execute(&pool).await.unwrap();
            }
        };
        exec("UPDATE audit_records SET body = replace(body, '\"amount\":100000000', '\"amount\":900000000') WHERE tenant = 'acme' AND seq = 2").await;
        let err = l.verify_audit(None).await.unwrap().unwrap_err();
        assert_eq!(err.seq, Some(2), "{err}");
        assert_eq!(err.tenant, Some(tenant("acme")));
        assert_eq!(err.failure, VerifyFailure::HashMismatch);
        exec("UPDATE audit_records SET body = replace(body, '\"amount\":900000000', '\"amount\":100000000') WHERE tenant = 'acme' AND seq = 2").await;
        l.verify_audit(None).await.unwrap().unwrap();

        exec("UPDATE audit_records SET seq = -1 WHERE tenant = 'acme' AND seq = 3").await;
        exec("UPDATE audit_records SET seq = 3 WHERE tenant = 'acme' AND seq = 4").await;
        exec("UPDATE audit_records SET seq = 4 WHERE tenant = 'acme' AND seq = -1").await;
        let err = l.verify_audit(None).await.unwrap().unwrap_err();
        assert_eq!(err.seq, Some(3), "{err}");
        assert_eq!(err.failure, VerifyFailure::BrokenLink);
        exec("UPDATE audit_records SET seq = -1 WHERE tenant = 'acme' AND seq = 3").await;
        exec("UPDATE audit_records SET seq = 3 WHERE tenant = 'acme' AND seq = 4").await;
        exec("UPDATE audit_records SET seq = 4 WHERE tenant = 'acme' AND seq = -1").await;
        l.verify_audit(None).await.unwrap().unwrap();

        exec("DELETE FROM audit_records WHERE tenant = 'acme' AND seq = 3").await;
        let err = l.verify_audit(None).await.unwrap().unwrap_err();
        assert_eq!(err.tenant, Some(tenant("acme")));
        assert_eq!(err.seq, Some(4), "{err}");
    })
    .await;
}

/// Issue 15 on PostgreSQL: the tester's statements leave the chain intact but not the
/// tables; verification checks the tables against the chain and names the row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_changed_behind_the_chain_are_named() {
    with_db(
        "tables_changed_behind_the_chain_are_named",
        |db| async move {
            let (s, l) = history(&db).await;
            let rep = l.verify_audit(None).await.unwrap().unwrap();
            let tables = rep.tables.unwrap();
            assert_eq!((tables.postings, tables.grants, tables.wallets), (2, 3, 2));
            let exec = |sql: &'static str| {
                let pool = s.pool().clone();
                async move {
                    sqlx::query(sql).execute(&pool).await.unwrap();
                }
            };
            let mismatch = |table: &str, id: String, column: &str, chain: &str, found: &str| {
                VerifyFailure::TableMismatch(Box::new(tollgate_ledger::audit::RowMismatch {
                    table: table.into(),
                    id,
                    column: column.into(),
                    chain: chain.into(),
                    found: found.into(),
                }))
            };
            let id: i64 = sqlx::query_scalar(
                "SELECT id FROM postings WHERE tenant = 'acme' ORDER BY id LIMIT 1",
            )
            .fetch_one(s.pool())
            .await
            .unwrap();

            exec("UPDATE postings SET amount = amount + 5000000").await;
            let err = l.verify_audit(None).await.unwrap().unwrap_err();
            assert_eq!(err.tenant, Some(tenant("acme")), "{err}");
            assert_eq!(err.seq, Some(4), "{err}");
            assert_eq!(
                err.failure,
                mismatch("postings", id.to_string(), "amount", "4.000000", "9.000000")
            );
            exec("UPDATE postings SET amount = amount - 5000000").await;
            l.verify_audit(None).await.unwrap().unwrap();

            exec("UPDATE grants SET available = available + 100000000").await;
            let err = l.verify_audit(None).await.unwrap().unwrap_err();
            assert_eq!(err.tenant, Some(tenant("acme")), "{err}");
            assert_eq!(
                err.failure,
                mismatch("grants", "1".into(), "available", "96.000000", "196.000000")
            );
            exec("UPDATE grants SET available = available - 100000000").await;
            l.verify_audit(None).await.unwrap().unwrap();

            exec("UPDATE wallets SET overrun = overrun + 1 WHERE tenant = 'other'").await;
            let err = l.verify_audit(None).await.unwrap().unwrap_err();
            assert_eq!(
                err.failure,
                mismatch("wallets", "other".into(), "overrun", "0.000000", "0.000001")
            );
        },
    )
    .await;
}
