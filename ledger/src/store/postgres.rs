//! The PostgreSQL store: the path past one machine. Several authority replicas share
//! one database and stay exact.
//!
//! **How replicas stay exact.** Every write transaction runs at `READ COMMITTED` and
//! first locks the wallet rows it touches with `SELECT ... FOR UPDATE`, in tenant-id
//! order (byte order: the text keys are `COLLATE "C"`), so two writers of one tenant
//! serialize and writers of several tenants never deadlock. After the lock, each later
//! statement takes a fresh snapshot, so a writer that waited reads what the previous
//! one committed: the grants, holds, the batch table and the audit head it computes on
//! are current. Nothing of a tenant is read or written before its wallet is locked, so
//! no stricter isolation (and no serialization-failure retry loop) is needed.
//!
//! **Exactly-once batches.** `batches` has the primary key (sidecar, seq). A batch
//! re-sent to another replica, or raced to two at once, touches the same tenants, so
//! the second waits for the first's wallet lock and then finds the batch posted (it
//! returns the stored outcome, marked duplicate). Should two writers ever insert the
//! same key anyway (a re-sent key with different records, hence different tenants),
//! the unique key refuses the second: a key without postings is then simply already
//! there (`ON CONFLICT DO NOTHING`), one with postings aborts the transaction with a
//! retryable error, and the retry sees the duplicate. The key is never posted twice.
//!
//! **Durability.** Connections set `synchronous_commit = on`, so `commit` returns once
//! the WAL is flushed (on a replicated primary: as configured there), whatever the
//! server default: an acknowledgement is never lost. They also set
//! `idle_in_transaction_session_timeout` (30 s by default), so a replica that hangs
//! while holding a wallet lock is cut off by the server instead of stalling that
//! tenant's writers on every other replica; its transaction is rolled back.
//!
//! **Throughput.** [`StoreTx::write`] sends one multi-row statement per table
//! (`INSERT ... SELECT FROM UNNEST($1::text[], ...)`), so a group commit of many batches
//! costs a handful of round trips, not one per record or posting.
//!
//! Queries are runtime SQL (no compile-time checked macros, no `DATABASE_URL` at build
//! time); migrations under `migrations/postgres/` are embedded and applied at connect
//! ([`PostgresStore::migrate`] for `tollgate authority migrate`).

mod migrate;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};
use tollgate_core::{Credits, PeriodUsage};

use super::rows::*;
use super::{Changes, HoldSelect, PriceBookRow, Store, StoreTx, WalletRow};
use crate::audit::AuditRecord;
use crate::clock::Timestamp;
use crate::error::LedgerError;
use crate::grant::Grant;
use crate::hold::Hold;
use crate::ids::{BatchKey, GrantId, HoldId, TenantId};
use crate::report::StatementRow;
use crate::task::TaskRow;
use crate::usage::{BatchOutcome, Posting};

pub use self::migrate::MIGRATIONS;

/// Longest accepted schema name.
const MAX_SCHEMA_LEN: usize = 63;

/// How to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresOptions {
    /// Pool size (connections per store instance).
    pub max_connections: u32,
    /// Schema holding the ledger's tables (created if missing; default: the server's
    /// `search_path`, usually `public`). Letters, digits and `_` only.
    pub schema: Option<String>,
    /// How long to wait for a pooled connection before failing.
    pub acquire_timeout: Duration,
    /// Apply pending migrations at connect.
    pub migrate: bool,
    /// A transaction left idle this long (a replica that hung or lost its network while
    /// holding a wallet lock) is aborted by the server, so it cannot block the other
    /// replicas' writers of that tenant; nothing of it is committed. `None`: the server's
    /// setting.
    pub idle_in_transaction_timeout: Option<Duration>,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            max_connections: 16,
            schema: None,
            acquire_timeout: Duration::from_secs(30),
            migrate: true,
            idle_in_transaction_timeout: Some(Duration::from_secs(30)),
        }
    }
}

/// The PostgreSQL store. Cheap to clone (a pool handle).
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    schema: Option<String>,
}

fn check_schema(s: &str) -> Result<(), LedgerError> {
    let ok = !s.is_empty()
        && s.len() <= MAX_SCHEMA_LEN
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !s.as_bytes()[0].is_ascii_digit();
    if ok {
        Ok(())
    } else {
        Err(LedgerError::InvalidInput(format!(
            "schema name {s:?} is invalid: use 1 to {MAX_SCHEMA_LEN} letters, digits or '_', not starting with a digit"
        )))
    }
}

/// A URL with its password hidden, for error messages and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

impl PostgresStore {
    /// Whether `url` names a PostgreSQL database (`postgres://` or `postgresql://`), for
    /// choosing the store from one `--store` flag.
    pub fn is_url(url: &str) -> bool {
        let u = url.trim_start().to_ascii_lowercase();
        u.starts_with("postgres://") || u.starts_with("postgresql://")
    }

    /// Split the store's own settings off a `--store` URL: `schema=NAME` (the schema
    /// holding the tables, created if missing) and `pool_size=N` (connections per
    /// replica) are taken out of the query string and returned as options (the rest,
    /// e.g. `sslmode`, stays for the driver). Unknown values give a typed error.
    pub fn options_from_url(url: &str) -> Result<(String, PostgresOptions), LedgerError> {
        let mut opts = PostgresOptions::default();
        let Some((base, query)) = url.split_once('?') else {
            return Ok((url.to_string(), opts));
        };
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "schema" => {
                    check_schema(v)?;
                    opts.schema = Some(v.to_string());
                }
                "pool_size" => {
                    opts.max_connections = v.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                        LedgerError::InvalidInput(format!(
                            "pool_size={v:?} in the store URL is not a positive number"
                        ))
                    })?;
                }
                _ => kept.push(pair),
            }
        }
        let clean = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        Ok((clean, opts))
    }

    /// Connect to `url` (`postgres://user[:password]@host[:port]/database[?...]`) with
    /// default options and apply pending migrations.
    pub async fn connect(url: &str) -> Result<PostgresStore, LedgerError> {
        PostgresStore::connect_with(url, PostgresOptions::default()).await
    }

    /// Connect with options.
    pub async fn connect_with(
        url: &str,
        opts: PostgresOptions,
    ) -> Result<PostgresStore, LedgerError> {
        let conn: PgConnectOptions = url.parse().map_err(|e| {
            LedgerError::InvalidInput(format!(
                "PostgreSQL URL {} is invalid: {e} (expected postgres://user@host:5432/database)",
                redact_url(url)
            ))
        })?;
        if let Some(s) = &opts.schema {
            check_schema(s)?;
        }
        let mut settings = vec![("synchronous_commit", "on".to_string())];
        if let Some(s) = &opts.schema {
            settings.push(("search_path", s.clone()));
        }
        if let Some(t) = opts.idle_in_transaction_timeout {
            settings.push((
                "idle_in_transaction_session_timeout",
                format!("{}ms", t.as_millis().max(1)),
            ));
        }
        // Name the connections (visible in pg_stat_activity) unless the URL does.
        let conn = if conn.get_application_name().is_none() {
            conn.application_name("tollgate-authority")
        } else {
            conn
        };
        let conn = conn.options(settings);
        if opts.max_connections == 0 {
            return Err(LedgerError::InvalidInput(
                "max_connections must be at least 1".into(),
            ));
        }
        let pool = PgPoolOptions::new()
            .max_connections(opts.max_connections)
            .acquire_timeout(opts.acquire_timeout)
            .connect_with(conn)
            .await
            .map_err(|e| {
                LedgerError::db(format!(
                    "cannot connect to PostgreSQL at {}: {e} (is the server running and the URL right?)",
                    redact_url(url)
                ), e)
            })?;
        let store = PostgresStore {
            pool,
            schema: opts.schema,
        };
        if opts.migrate {
            store.migrate().await?;
        }
        Ok(store)
    }

    /// Apply pending migrations (idempotent; safe when several replicas start at once).
    /// Returns the versions this call applied.
    pub async fn migrate(&self) -> Result<Vec<i64>, LedgerError> {
        migrate::run(&self.pool, self.schema.as_deref()).await
    }

    /// Applied migration versions.
    pub async fn applied_migrations(&self) -> Result<Vec<i64>, LedgerError> {
        migrate::applied(&self.pool).await
    }

    /// The pool (for tests and tools that need raw SQL, e.g. tamper tests).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The schema, if one was given.
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// Close the pool (waits for connections to be returned).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// A write transaction on PostgreSQL (`READ COMMITTED`, wallet rows locked `FOR UPDATE`).
pub struct PostgresTx {
    tx: Transaction<'static, Postgres>,
}

/// SQLSTATE of a database error, if it is one.
fn sqlstate(e: &sqlx::Error) -> Option<String> {
    e.as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.into_owned())
}

/// Map errors that a caller can act on to a clear message. `what` says what failed
/// ("writing grants", "locking wallets").
fn write_error(e: sqlx::Error, what: &str) -> LedgerError {
    match sqlstate(&e).as_deref() {
        Some("40001") | Some("40P01") => LedgerError::db(
            format!(
                "concurrent write conflict while {what} ({e}); nothing was written: retry the operation"
            ),
            e,
        ),
        _ => LedgerError::db(format!("{what}: {e}"), e),
    }
}

#[async_trait]
impl StoreTx for PostgresTx {
    async fn lock_wallets(
        &mut self,
        tenants: &[TenantId],
    ) -> Result<Vec<Option<WalletRow>>, LedgerError> {
        if tenants.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<&str> = tenants.iter().map(|t| t.as_str()).collect();
        // One statement; the rows are locked in ORDER BY order (the lock step runs above
        // the sort), i.e. tenant-id byte order for every writer: no deadlock.
        let rows = sqlx::query(
            "SELECT * FROM wallets WHERE tenant = ANY($1::text[]) ORDER BY tenant FOR UPDATE",
        )
        .bind(&names)
        .fetch_all(&mut *self.tx)
        .await
        .map_err(|e| write_error(e, "locking wallets"))?;
        let mut found: BTreeMap<TenantId, WalletRow> = BTreeMap::new();
        for r in &rows {
            let w = wallet_from(r)?;
            found.insert(w.tenant.clone(), w);
        }
        Ok(tenants.iter().map(|t| found.remove(t)).collect())
    }

    async fn active_grants(&mut self, tenant: &TenantId) -> Result<Vec<Grant>, LedgerError> {
        let rows = sqlx::query(
            "SELECT * FROM grants WHERE tenant = $1 AND (closed = 0 OR held > 0) ORDER BY id",
        )
        .bind(tenant.as_str())
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter().map(grant_from).collect()
    }

    async fn active_grants_of(
        &mut self,
        tenants: &[TenantId],
    ) -> Result<Vec<Vec<Grant>>, LedgerError> {
        if tenants.is_empty() {
            return Ok(Vec::new());
        }
        // One round trip for all the tenants of a group commit.
        let names: Vec<&str> = tenants.iter().map(|t| t.as_str()).collect();
        let rows = sqlx::query(
            "SELECT * FROM grants WHERE tenant = ANY($1::text[]) AND (closed = 0 OR held > 0) ORDER BY tenant, id",
        )
        .bind(&names)
        .fetch_all(&mut *self.tx)
        .await?;
        let mut by: BTreeMap<TenantId, Vec<Grant>> = BTreeMap::new();
        for r in &rows {
            let g = grant_from(r)?;
            by.entry(g.tenant.clone()).or_default().push(g);
        }
        Ok(tenants
            .iter()
            .map(|t| by.remove(t).unwrap_or_default())
            .collect())
    }

    async fn grant(
        &mut self,
        tenant: &TenantId,
        grant: GrantId,
    ) -> Result<Option<Grant>, LedgerError> {
        let row = sqlx::query("SELECT * FROM grants WHERE tenant = $1 AND id = $2")
            .bind(tenant.as_str())
            .bind(i(grant.0, "grant id")?)
            .fetch_optional(&mut *self.tx)
            .await?;
        row.as_ref().map(grant_from).transpose()
    }

    async fn grant_by_reference(
        &mut self,
        tenant: &TenantId,
        reference: &str,
    ) -> Result<Option<Grant>, LedgerError> {
        let row = sqlx::query("SELECT * FROM grants WHERE tenant = $1 AND reference = $2")
            .bind(tenant.as_str())
            .bind(reference)
            .fetch_optional(&mut *self.tx)
            .await?;
        row.as_ref().map(grant_from).transpose()
    }

    async fn holds(
        &mut self,
        tenant: &TenantId,
        select: &HoldSelect,
    ) -> Result<Vec<Hold>, LedgerError> {
        let q = match select {
            HoldSelect::Ids(ids) => {
                let ids = ids
                    .iter()
                    .map(|h| i(h.0, "hold id"))
                    .collect::<Result<Vec<i64>, _>>()?;
                sqlx::query(
                    "SELECT * FROM holds WHERE tenant = $1 AND id = ANY($2::int8[]) ORDER BY id",
                )
                .bind(tenant.as_str())
                .bind(ids)
            }
            HoldSelect::OpenOwnedBy(owner) => sqlx::query(
                "SELECT * FROM holds WHERE tenant = $1 AND owner = $2 AND status = 'open' ORDER BY id",
            )
            .bind(tenant.as_str())
            .bind(owner.as_str()),
            HoldSelect::OpenDueBy(t) => sqlx::query(
                "SELECT * FROM holds WHERE tenant = $1 AND status = 'open' AND expires_at <= $2 ORDER BY id",
            )
            .bind(tenant.as_str())
            .bind(i(*t, "time")?),
        };
        let rows = q.fetch_all(&mut *self.tx).await?;
        rows.iter().map(hold_from).collect()
    }

    async fn batch_digest(&mut self, key: &BatchKey) -> Result<Option<String>, LedgerError> {
        let row: Option<(Option<String>,)> =
            sqlx::query_as("SELECT digest FROM batches WHERE sidecar_id = $1 AND seq = $2")
                .bind(key.sidecar_id.as_str())
                .bind(i(key.seq, "batch seq")?)
                .fetch_optional(&mut *self.tx)
                .await?;
        Ok(row.and_then(|(d,)| d))
    }

    async fn batch(&mut self, key: &BatchKey) -> Result<Option<BatchOutcome>, LedgerError> {
        let row = sqlx::query("SELECT outcome FROM batches WHERE sidecar_id = $1 AND seq = $2")
            .bind(key.sidecar_id.as_str())
            .bind(i(key.seq, "batch seq")?)
            .fetch_optional(&mut *self.tx)
            .await?;
        if let Some(r) = row {
            return json(&r, "outcome").map(Some);
        }
        // Read after the row: a prune that removed it committed before, so its
        // watermark is seen here.
        let mark: Option<(i64, i64)> = sqlx::query_as(
            "SELECT pruned_through, pruned_at FROM batch_watermarks WHERE sidecar_id = $1",
        )
        .bind(key.sidecar_id.as_str())
        .fetch_optional(&mut *self.tx)
        .await?;
        Ok(BatchOutcome::if_pruned(key, mark))
    }

    async fn price_book(
        &mut self,
        tenant: &TenantId,
        version: u64,
    ) -> Result<Option<PriceBookRow>, LedgerError> {
        let row = sqlx::query("SELECT * FROM price_books WHERE tenant = $1 AND version = $2")
            .bind(tenant.as_str())
            .bind(i(version, "price book version")?)
            .fetch_optional(&mut *self.tx)
            .await?;
        row.as_ref().map(price_book_from).transpose()
    }

    async fn write(&mut self, ch: &Changes) -> Result<(), LedgerError> {
        let conn = &mut *self.tx;
        write::new_wallets(conn, &ch.new_wallets).await?;
        write::wallets(conn, &ch.wallets).await?;
        write::grants(conn, &ch.grants).await?;
        write::holds(conn, &ch.holds).await?;
        write::postings(conn, &ch.postings).await?;
        write::batches(conn, &ch.batches).await?;
        write::audit(conn, &ch.audit).await?;
        write::spend(conn, &ch.spend_buckets).await?;
        write::price_books(conn, &ch.price_books).await?;
        write::tasks(conn, &ch.tasks).await?;
        Ok(())
    }

    async fn tasks_of(
        &mut self,
        pairs: &[(TenantId, String)],
    ) -> Result<Vec<TaskRow>, LedgerError> {
        if pairs.is_empty() {
            return Ok(Vec::new());
        }
        let tenants: Vec<&str> = pairs.iter().map(|(t, _)| t.as_str()).collect();
        let tasks: Vec<&str> = pairs.iter().map(|(_, k)| k.as_str()).collect();
        let rows = sqlx::query(
            "SELECT t.* FROM tasks t JOIN UNNEST($1::text[], $2::text[]) AS k(tenant, task) \
             ON t.tenant = k.tenant AND t.task = k.task",
        )
        .bind(tenants)
        .bind(tasks)
        .fetch_all(&mut *self.tx)
        .await?;
        rows.iter().map(task_from).collect()
    }

    async fn commit(self: Box<Self>) -> Result<(), LedgerError> {
        self.tx.commit().await.map_err(|e| {
            LedgerError::db(
                format!(
                    "commit failed ({e}): the operation may or may not have been applied; \
                 batches are idempotent, so re-send them"
                ),
                e,
            )
        })
    }
}

mod write;

#[async_trait]
impl Store for PostgresStore {
    async fn begin(&self) -> Result<Box<dyn StoreTx>, LedgerError> {
        let tx = self.pool.begin().await?;
        Ok(Box::new(PostgresTx { tx }))
    }

    async fn tenants(&self) -> Result<Vec<TenantId>, LedgerError> {
        let rows = sqlx::query("SELECT tenant FROM wallets ORDER BY tenant")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(tenant_of).collect()
    }

    async fn wallet(&self, tenant: &TenantId) -> Result<Option<WalletRow>, LedgerError> {
        let row = sqlx::query("SELECT * FROM wallets WHERE tenant = $1")
            .bind(tenant.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(wallet_from).transpose()
    }

    async fn wallet_view(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<(WalletRow, Vec<Grant>)>, LedgerError> {
        // One snapshot for both reads (a read-only REPEATABLE READ transaction takes it
        // at its first statement), so a balance never mixes two committed states.
        let mut tx = self
            .pool
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?;
        let Some(row) = sqlx::query("SELECT * FROM wallets WHERE tenant = $1")
            .bind(tenant.as_str())
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(None);
        };
        let grants = sqlx::query(
            "SELECT * FROM grants WHERE tenant = $1 AND (closed = 0 OR held > 0) ORDER BY id",
        )
        .bind(tenant.as_str())
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some((
            wallet_from(&row)?,
            grants.iter().map(grant_from).collect::<Result<_, _>>()?,
        )))
    }

    async fn grants(
        &self,
        tenant: &TenantId,
        include_closed: bool,
    ) -> Result<Vec<Grant>, LedgerError> {
        let rows = if include_closed {
            sqlx::query("SELECT * FROM grants WHERE tenant = $1 ORDER BY id")
        } else {
            sqlx::query(
                "SELECT * FROM grants WHERE tenant = $1 AND (closed = 0 OR held > 0) ORDER BY id",
            )
        }
        .bind(tenant.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(grant_from).collect()
    }

    async fn holds(
        &self,
        tenant: &TenantId,
        include_closed: bool,
    ) -> Result<Vec<Hold>, LedgerError> {
        let rows = if include_closed {
            sqlx::query("SELECT * FROM holds WHERE tenant = $1 ORDER BY id")
        } else {
            sqlx::query("SELECT * FROM holds WHERE tenant = $1 AND status = 'open' ORDER BY id")
        }
        .bind(tenant.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(hold_from).collect()
    }

    async fn due_holds(
        &self,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<(TenantId, HoldId)>, LedgerError> {
        let rows = sqlx::query(
            "SELECT tenant, id FROM holds WHERE status = 'open' AND expires_at <= $1 ORDER BY expires_at, tenant, id LIMIT $2",
        )
        .bind(i(now, "time")?)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((tenant_of(r)?, HoldId(get_u(r, "id")?))))
            .collect()
    }

    async fn tenants_with_due_grants(
        &self,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<TenantId>, LedgerError> {
        let rows = sqlx::query(
            "SELECT DISTINCT tenant FROM grants WHERE closed = 0 AND (next_reset_at <= $1 OR expires_at <= $1) ORDER BY tenant LIMIT $2",
        )
        .bind(i(now, "time")?)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(tenant_of).collect()
    }

    async fn spend_since(
        &self,
        tenant: &TenantId,
        since: Timestamp,
    ) -> Result<Credits, LedgerError> {
        // SUM(bigint) is numeric in PostgreSQL: cast back (an overflow is an error, not
        // a wrap).
        let v: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(amount), 0)::BIGINT FROM spend_minutes WHERE tenant = $1 AND minute >= $2",
        )
        .bind(tenant.as_str())
        .bind(i(since, "time")?)
        .fetch_one(&self.pool)
        .await?;
        u64::try_from(v)
            .map(Credits)
            .map_err(|_| LedgerError::Corrupt(format!("negative spend {v} for {tenant}")))
    }

    async fn statement(
        &self,
        tenant: &TenantId,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<StatementRow>, LedgerError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(statement_sql(true)))
            .bind(tenant.as_str())
            .bind(i(from, "time")?)
            .bind(i(to, "time")?)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(statement_row_from).collect()
    }

    async fn postings(
        &self,
        tenant: &TenantId,
        from: Timestamp,
        to: Timestamp,
        limit: u32,
    ) -> Result<Vec<Posting>, LedgerError> {
        let rows = sqlx::query(
            "SELECT * FROM postings WHERE tenant = $1 AND at >= $2 AND at < $3 ORDER BY at, id LIMIT $4",
        )
        .bind(tenant.as_str())
        .bind(i(from, "time")?)
        .bind(i(to, "time")?)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(posting_from).collect()
    }

    async fn posting_rows(
        &self,
        tenant: &TenantId,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<(i64, Posting)>, LedgerError> {
        let rows = sqlx::query(
            "SELECT id AS row_id, * FROM postings WHERE tenant = $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(tenant.as_str())
        .bind(after_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| -> Result<(i64, Posting), LedgerError> {
                Ok((sqlx::Row::try_get::<i64, _>(r, "row_id")?, posting_from(r)?))
            })
            .collect()
    }

    async fn batch(&self, key: &BatchKey) -> Result<Option<BatchOutcome>, LedgerError> {
        let row = sqlx::query("SELECT outcome FROM batches WHERE sidecar_id = $1 AND seq = $2")
            .bind(key.sidecar_id.as_str())
            .bind(i(key.seq, "batch seq")?)
            .fetch_optional(&self.pool)
            .await?;
        if let Some(r) = row {
            return json(&r, "outcome").map(Some);
        }
        // Read after the row: a prune that removed it committed before, so its
        // watermark is seen here.
        let mark: Option<(i64, i64)> = sqlx::query_as(
            "SELECT pruned_through, pruned_at FROM batch_watermarks WHERE sidecar_id = $1",
        )
        .bind(key.sidecar_id.as_str())
        .fetch_optional(&self.pool)
        .await?;
        Ok(BatchOutcome::if_pruned(key, mark))
    }

    async fn plan_usage(
        &self,
        tenant: &TenantId,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<(PeriodUsage, Credits), LedgerError> {
        let (metered, units, list): (i64, i64, i64) =
            sqlx::query_as(sqlx::AssertSqlSafe(plan_usage_sql(true)))
                .bind(tenant.as_str())
                .bind(i(from, "time")?)
                .bind(i(to, "time")?)
                .fetch_one(&self.pool)
                .await?;
        let usage = PeriodUsage {
            metered: Credits(u(metered, "plan usage")?),
            request_units_milli: u(units, "plan request units")?,
        };
        Ok((usage, Credits(u(list, "plan usage")?)))
    }

    async fn task(&self, tenant: &TenantId, task: &str) -> Result<Option<TaskRow>, LedgerError> {
        let row = sqlx::query("SELECT * FROM tasks WHERE tenant = $1 AND task = $2")
            .bind(tenant.as_str())
            .bind(task)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(task_from).transpose()
    }

    async fn tasks(&self, tenant: &TenantId, limit: u32) -> Result<Vec<TaskRow>, LedgerError> {
        let rows = sqlx::query(
            "SELECT * FROM tasks WHERE tenant = $1 ORDER BY last_at DESC, task LIMIT $2",
        )
        .bind(tenant.as_str())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(task_from).collect()
    }

    async fn audit_records(
        &self,
        tenant: &TenantId,
        from_seq: u64,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, LedgerError> {
        let rows = sqlx::query(
            "SELECT * FROM audit_records WHERE tenant = $1 AND seq >= $2 ORDER BY seq LIMIT $3",
        )
        .bind(tenant.as_str())
        .bind(i(from_seq, "seq")?)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(audit_from).collect()
    }

    async fn prune_batches(
        &self,
        before: Timestamp,
        now: Timestamp,
        limit: u32,
    ) -> Result<u64, LedgerError> {
        // One statement: delete the oldest rows, then raise each sidecar's watermark to the
        // highest sequence deleted, atomically (a reader that misses a row sees the mark).
        let deleted: i64 = sqlx::query_scalar(
            "WITH doomed AS ( \
                 DELETE FROM batches WHERE (sidecar_id, seq) IN ( \
                     SELECT sidecar_id, seq FROM batches WHERE posted_at < $1 \
                     ORDER BY posted_at LIMIT $2 FOR UPDATE SKIP LOCKED) \
                 RETURNING sidecar_id, seq), \
             marks AS ( \
                 INSERT INTO batch_watermarks (sidecar_id, pruned_through, pruned_at) \
                 SELECT sidecar_id, max(seq), $3 FROM doomed GROUP BY sidecar_id \
                 ON CONFLICT (sidecar_id) DO UPDATE SET \
                     pruned_through = GREATEST(batch_watermarks.pruned_through, excluded.pruned_through), \
                     pruned_at = excluded.pruned_at \
                 RETURNING 1) \
             SELECT count(*) FROM doomed",
        )
        .bind(i(before, "time")?)
        .bind(i64::from(limit))
        .bind(i(now, "time")?)
        .fetch_one(&self.pool)
        .await?;
        Ok(u64::try_from(deleted).unwrap_or(0))
    }

    async fn latest_price_book(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<PriceBookRow>, LedgerError> {
        let row = sqlx::query(
            "SELECT * FROM price_books WHERE tenant = $1 ORDER BY version DESC LIMIT 1",
        )
        .bind(tenant.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(price_book_from).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_checked() {
        assert!(check_schema("tg_abc123").is_ok());
        assert!(check_schema("").is_err());
        assert!(check_schema("1abc").is_err());
        assert!(check_schema("a\"; DROP TABLE x; --").is_err());
        assert!(check_schema(&"a".repeat(64)).is_err());
    }

    #[test]
    fn postgres_urls_are_recognised() {
        assert!(PostgresStore::is_url("postgres://u@h/db"));
        assert!(PostgresStore::is_url("PostgreSQL://u@h/db"));
        assert!(!PostgresStore::is_url("sqlite://./x.db"));
        assert!(!PostgresStore::is_url("./tollgate.db"));
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
    }

    #[test]
    fn store_settings_are_taken_from_the_url() {
        let (url, o) = PostgresStore::options_from_url(
            "postgres://u@h/db?sslmode=disable&schema=tg_a&pool_size=4",
        )
        .unwrap();
        assert_eq!(url, "postgres://u@h/db?sslmode=disable");
        assert_eq!(o.schema.as_deref(), Some("tg_a"));
        assert_eq!(o.max_connections, 4);
        let (url, o) = PostgresStore::options_from_url("postgres://u@h/db").unwrap();
        assert_eq!(
            (url.as_str(), o),
            ("postgres://u@h/db", PostgresOptions::default())
        );
        assert!(PostgresStore::options_from_url("postgres://u@h/db?schema=1x").is_err());
        assert!(PostgresStore::options_from_url("postgres://u@h/db?pool_size=0").is_err());
    }
}
