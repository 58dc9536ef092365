//! The embedded store: SQLite through sqlx, in WAL mode with `synchronous=FULL`, so a
//! committed transaction is on disk before `commit` returns.
//!
//! Writers go through a pool of ONE connection and open transactions with
//! `BEGIN IMMEDIATE`: SQLite has one writer at a time anyway, and taking the write lock
//! at `BEGIN` means a transaction never fails half-way on a lock upgrade; the wallet-row
//! "lock" of the [`Store`] contract is this database-wide write lock. Readers use a
//! separate pool and see the last committed state (WAL readers do not block the writer).
//!
//! Migrations are SQL files under `migrations/sqlite/`, embedded at build time and
//! applied in order at open (table `schema_migrations`).

mod write;

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};
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

/// Embedded migrations: (version, name, SQL), in version order.
pub const MIGRATIONS: &[crate::store::migrate::Migration] = &[
    (
        1,
        "initial",
        include_str!("../../migrations/sqlite/0001_initial.sql"),
    ),
    (
        2,
        "batch_watermarks",
        include_str!("../../migrations/sqlite/0002_batch_watermarks.sql"),
    ),
    (
        3,
        "sidecar_trust",
        include_str!("../../migrations/sqlite/0003_sidecar_trust.sql"),
    ),
    (
        4,
        "authority",
        include_str!("../../migrations/sqlite/0004_authority.sql"),
    ),
    (
        5,
        "attribution",
        include_str!("../../migrations/sqlite/0005_attribution.sql"),
    ),
];

/// Rows per multi-row INSERT: 21 columns x 500 rows stays far below SQLite's limit of
/// 32,766 bound parameters, and one statement per chunk instead of per row is what lets
/// a batch post in a handful of statements.
const ROWS_PER_INSERT: usize = 500;

/// `prefix` followed by `rows` groups of `cols` placeholders, then `suffix`.
fn multi_row(prefix: &str, cols: usize, rows: usize, suffix: &str) -> String {
    let group = format!("({})", vec!["?"; cols].join(", "));
    let mut sql = String::with_capacity(prefix.len() + rows * (group.len() + 2) + suffix.len());
    sql.push_str(prefix);
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&group);
    }
    sql.push_str(suffix);
    sql
}

/// `prefix` followed by `(?, ..., ?)` with `n` placeholders, then `suffix`.
fn in_list(prefix: &str, n: usize, suffix: &str) -> String {
    format!("{prefix}({}){suffix}", vec!["?"; n].join(", "))
}

/// Applies the pending [`MIGRATIONS`] to an SQLite database with the ledger's one runner
/// ([`crate::store::migrate`]), each in its own transaction with its `schema_migrations`
/// row (idempotent). The authority runs it on its own pool too, so its tables come from
/// the same versioned migrations.
pub async fn migrate_pool(pool: &SqlitePool) -> Result<(), LedgerError> {
    crate::store::migrate::run(&mut Lite(pool), MIGRATIONS).await?;
    Ok(())
}

/// SQLite's side of the runner.
struct Lite<'p>(&'p SqlitePool);

#[async_trait]
impl crate::store::migrate::Dialect for Lite<'_> {
    async fn ensure_table(&mut self) -> Result<(), LedgerError> {
        sqlx::query(crate::store::migrate::CREATE_TABLE)
            .execute(self.0)
            .await?;
        Ok(())
    }

    async fn applied(&mut self) -> Result<Vec<i64>, LedgerError> {
        Ok(
            sqlx::query_scalar("SELECT version FROM schema_migrations ORDER BY version")
                .fetch_all(self.0)
                .await?,
        )
    }

    async fn apply(
        &mut self,
        version: i64,
        name: &'static str,
        sql: &'static str,
        at_ms: i64,
    ) -> Result<bool, LedgerError> {
        // SQLite has no advisory lock: the write lock of BEGIN IMMEDIATE serialises
        // processes, and the version is checked again under it.
        let mut tx = self.0.begin_with("BEGIN IMMEDIATE").await?;
        let done: Option<i64> =
            sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = ?")
                .bind(version)
                .fetch_optional(&mut *tx)
                .await?;
        if done.is_some() {
            return Ok(false);
        }
        sqlx::raw_sql(sql)
            .execute(&mut *tx)
            .await
            .map_err(|e| LedgerError::db(format!("migration {version} ({name}) failed: {e}"), e))?;
        sqlx::query("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)")
            .bind(version)
            .bind(name)
            .bind(at_ms)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }
}

/// The SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
}

impl SqliteStore {
    /// Open (creating if missing) the database at `path` and apply pending migrations.
    pub async fn open(path: impl AsRef<Path>) -> Result<SqliteStore, LedgerError> {
        let opts = SqliteConnectOptions::new()
            .filename(path.as_ref())
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(false);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .connect_with(opts.clone())
            .await
            .map_err(|e| {
                LedgerError::db(
                    format!(
                        "cannot open SQLite database {}: {e}",
                        path.as_ref().display()
                    ),
                    e,
                )
            })?;
        let store_w = SqliteStore {
            writer: writer.clone(),
            reader: writer.clone(),
        };
        store_w.migrate().await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts.read_only(true))
            .await?;
        Ok(SqliteStore { writer, reader })
    }

    /// Open a database given as a URL-ish string: `sqlite://path`, `sqlite:path` or a
    /// plain path.
    pub async fn open_url(url: &str) -> Result<SqliteStore, LedgerError> {
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(url);
        if path.is_empty() {
            return Err(LedgerError::InvalidInput(
                "empty SQLite path: give a file path such as ./tollgate.db".into(),
            ));
        }
        SqliteStore::open(path).await
    }

    /// Apply pending migrations (idempotent).
    pub async fn migrate(&self) -> Result<(), LedgerError> {
        migrate_pool(&self.writer).await
    }

    /// Applied migration versions.
    pub async fn applied_migrations(&self) -> Result<Vec<i64>, LedgerError> {
        Ok(
            sqlx::query_scalar("SELECT version FROM schema_migrations ORDER BY version")
                .fetch_all(&self.reader)
                .await?,
        )
    }

    /// The writer pool (for tests and tools that need raw SQL, e.g. tamper tests).
    pub fn pool(&self) -> &SqlitePool {
        &self.writer
    }
}

/// A write transaction on SQLite.
pub struct SqliteTx {
    tx: Transaction<'static, Sqlite>,
}

#[async_trait]
impl StoreTx for SqliteTx {
    async fn lock_wallets(
        &mut self,
        tenants: &[TenantId],
    ) -> Result<Vec<Option<WalletRow>>, LedgerError> {
        // BEGIN IMMEDIATE already holds the database write lock.
        let mut found: std::collections::HashMap<TenantId, WalletRow> =
            std::collections::HashMap::with_capacity(tenants.len());
        for chunk in tenants.chunks(ROWS_PER_INSERT) {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(in_list(
                "SELECT * FROM wallets WHERE tenant IN ",
                chunk.len(),
                "",
            )));
            for t in chunk {
                q = q.bind(t.as_str());
            }
            for row in q.fetch_all(&mut *self.tx).await? {
                let w = wallet_from(&row)?;
                found.insert(w.tenant.clone(), w);
            }
        }
        Ok(tenants.iter().map(|t| found.remove(t)).collect())
    }

    async fn active_grants(&mut self, tenant: &TenantId) -> Result<Vec<Grant>, LedgerError> {
        let rows = sqlx::query(
            "SELECT * FROM grants WHERE tenant = ? AND (closed = 0 OR held > 0) ORDER BY id",
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
        let mut by: std::collections::HashMap<TenantId, Vec<Grant>> =
            std::collections::HashMap::with_capacity(tenants.len());
        for chunk in tenants.chunks(ROWS_PER_INSERT) {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(in_list(
                "SELECT * FROM grants WHERE tenant IN ",
                chunk.len(),
                " AND (closed = 0 OR held > 0) ORDER BY tenant, id",
            )));
            for t in chunk {
                q = q.bind(t.as_str());
            }
            for row in q.fetch_all(&mut *self.tx).await? {
                let g = grant_from(&row)?;
                by.entry(g.tenant.clone()).or_default().push(g);
            }
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
        let row = sqlx::query("SELECT * FROM grants WHERE tenant = ? AND id = ?")
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
        let row = sqlx::query("SELECT * FROM grants WHERE tenant = ? AND reference = ?")
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
        let rows = match select {
            HoldSelect::Ids(ids) => {
                let mut rows = Vec::new();
                for id in ids {
                    if let Some(r) = sqlx::query("SELECT * FROM holds WHERE tenant = ? AND id = ?")
                        .bind(tenant.as_str())
                        .bind(i(id.0, "hold id")?)
                        .fetch_optional(&mut *self.tx)
                        .await?
                    {
                        rows.push(r);
                    }
                }
                rows
            }
            HoldSelect::OpenOwnedBy(owner) => {
                sqlx::query(
                    "SELECT * FROM holds WHERE tenant = ? AND owner = ? AND status = 'open' ORDER BY id",
                )
                .bind(tenant.as_str())
                .bind(owner.as_str())
                .fetch_all(&mut *self.tx)
                .await?
            }
            HoldSelect::OpenDueBy(t) => {
                sqlx::query(
                    "SELECT * FROM holds WHERE tenant = ? AND status = 'open' AND expires_at <= ? ORDER BY id",
                )
                .bind(tenant.as_str())
                .bind(i(*t, "time")?)
                .fetch_all(&mut *self.tx)
                .await?
            }
        };
        rows.iter().map(hold_from).collect()
    }

    async fn open_holds_of(
        &mut self,
        pairs: &[(TenantId, String)],
    ) -> Result<Vec<Hold>, LedgerError> {
        let mut out = Vec::new();
        // Chunks of 250 pairs: at most 500 bound parameters per query.
        for chunk in pairs.chunks(ROWS_PER_INSERT / 2) {
            let mut tenants: Vec<&str> = chunk.iter().map(|(t, _)| t.as_str()).collect();
            tenants.sort_unstable();
            tenants.dedup();
            let mut owners: Vec<&str> = chunk.iter().map(|(_, o)| o.as_str()).collect();
            owners.sort_unstable();
            owners.dedup();
            let sql = format!(
                "SELECT * FROM holds WHERE status = 'open' AND tenant IN ({}) AND owner IN ({}) ORDER BY tenant, id",
                vec!["?"; tenants.len()].join(", "),
                vec!["?"; owners.len()].join(", ")
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for t in &tenants {
                q = q.bind(*t);
            }
            for o in &owners {
                q = q.bind(*o);
            }
            for row in q.fetch_all(&mut *self.tx).await? {
                let h = hold_from(&row)?;
                // The IN x IN query may return pairs that were not asked for.
                if chunk.iter().any(|(t, o)| *t == h.tenant && *o == h.owner) {
                    out.push(h);
                }
            }
        }
        Ok(out)
    }

    async fn batch_digest(&mut self, key: &BatchKey) -> Result<Option<String>, LedgerError> {
        let row: Option<(Option<String>,)> =
            sqlx::query_as("SELECT digest FROM batches WHERE sidecar_id = ? AND seq = ?")
                .bind(key.sidecar_id.as_str())
                .bind(i(key.seq, "batch seq")?)
                .fetch_optional(&mut *self.tx)
                .await?;
        Ok(row.and_then(|(d,)| d))
    }

    async fn batch(&mut self, key: &BatchKey) -> Result<Option<BatchOutcome>, LedgerError> {
        let row = sqlx::query("SELECT outcome FROM batches WHERE sidecar_id = ? AND seq = ?")
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
            "SELECT pruned_through, pruned_at FROM batch_watermarks WHERE sidecar_id = ?",
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
        let row = sqlx::query("SELECT * FROM price_books WHERE tenant = ? AND version = ?")
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
        // Per tenant, the primary key's prefix, then its tasks by IN lists.
        let mut by_tenant: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
        for (t, task) in pairs {
            by_tenant.entry(t.as_str()).or_default().push(task.as_str());
        }
        let mut out = Vec::new();
        for (tenant, tasks) in by_tenant {
            for chunk in tasks.chunks(ROWS_PER_INSERT) {
                let mut q = sqlx::query(sqlx::AssertSqlSafe(in_list(
                    "SELECT * FROM tasks WHERE tenant = ? AND task IN ",
                    chunk.len(),
                    "",
                )))
                .bind(tenant);
                for task in chunk {
                    q = q.bind(*task);
                }
                for row in q.fetch_all(&mut *self.tx).await? {
                    out.push(task_from(&row)?);
                }
            }
        }
        Ok(out)
    }

    async fn commit(self: Box<Self>) -> Result<(), LedgerError> {
        self.tx.commit().await?;
        Ok(())
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn begin(&self) -> Result<Box<dyn StoreTx>, LedgerError> {
        let tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        Ok(Box::new(SqliteTx { tx }))
    }

    async fn tenants(&self) -> Result<Vec<TenantId>, LedgerError> {
        let rows = sqlx::query("SELECT tenant FROM wallets ORDER BY tenant")
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(tenant_of).collect()
    }

    async fn wallet(&self, tenant: &TenantId) -> Result<Option<WalletRow>, LedgerError> {
        let row = sqlx::query("SELECT * FROM wallets WHERE tenant = ?")
            .bind(tenant.as_str())
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(wallet_from).transpose()
    }

    async fn wallet_view(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<(WalletRow, Vec<Grant>)>, LedgerError> {
        // One read transaction: both reads see the same WAL snapshot.
        let mut tx = self.reader.begin().await?;
        let Some(row) = sqlx::query("SELECT * FROM wallets WHERE tenant = ?")
            .bind(tenant.as_str())
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(None);
        };
        let grants = sqlx::query(
            "SELECT * FROM grants WHERE tenant = ? AND (closed = 0 OR held > 0) ORDER BY id",
        )
        .bind(tenant.as_str())
        .fetch_all(&mut *tx)
        .await?;
        let grants = grants
            .iter()
            .map(grant_from)
            .collect::<Result<Vec<_>, _>>()?;
        tx.rollback().await?;
        Ok(Some((wallet_from(&row)?, grants)))
    }

    async fn grants(
        &self,
        tenant: &TenantId,
        include_closed: bool,
    ) -> Result<Vec<Grant>, LedgerError> {
        let rows = if include_closed {
            sqlx::query("SELECT * FROM grants WHERE tenant = ? ORDER BY id")
        } else {
            sqlx::query(
                "SELECT * FROM grants WHERE tenant = ? AND (closed = 0 OR held > 0) ORDER BY id",
            )
        }
        .bind(tenant.as_str())
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(grant_from).collect()
    }

    async fn holds(
        &self,
        tenant: &TenantId,
        include_closed: bool,
    ) -> Result<Vec<Hold>, LedgerError> {
        let rows = if include_closed {
            sqlx::query("SELECT * FROM holds WHERE tenant = ? ORDER BY id")
        } else {
            sqlx::query("SELECT * FROM holds WHERE tenant = ? AND status = 'open' ORDER BY id")
        }
        .bind(tenant.as_str())
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(hold_from).collect()
    }

    async fn due_holds(
        &self,
        now: Timestamp,
        limit: u32,
    ) -> Result<Vec<(TenantId, HoldId)>, LedgerError> {
        let rows = sqlx::query(
            "SELECT tenant, id FROM holds WHERE status = 'open' AND expires_at <= ? ORDER BY expires_at, tenant, id LIMIT ?",
        )
        .bind(i(now, "time")?)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
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
        let now = i(now, "time")?;
        let rows = sqlx::query(
            "SELECT DISTINCT tenant FROM grants WHERE closed = 0 AND (next_reset_at <= ? OR expires_at <= ?) ORDER BY tenant LIMIT ?",
        )
        .bind(now)
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(tenant_of).collect()
    }

    async fn spend_since(
        &self,
        tenant: &TenantId,
        since: Timestamp,
    ) -> Result<Credits, LedgerError> {
        let v: Option<i64> = sqlx::query_scalar(
            "SELECT SUM(amount) FROM spend_minutes WHERE tenant = ? AND minute >= ?",
        )
        .bind(tenant.as_str())
        .bind(i(since, "time")?)
        .fetch_one(&self.reader)
        .await?;
        Ok(Credits(u(v.unwrap_or(0), "spend")?))
    }

    async fn statement(
        &self,
        tenant: &TenantId,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<StatementRow>, LedgerError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(statement_sql(false)))
            .bind(tenant.as_str())
            .bind(i(from, "time")?)
            .bind(i(to, "time")?)
            .fetch_all(&self.reader)
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
            "SELECT * FROM postings WHERE tenant = ? AND at >= ? AND at < ? ORDER BY at, rowid LIMIT ?",
        )
        .bind(tenant.as_str())
        .bind(i(from, "time")?)
        .bind(i(to, "time")?)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
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
            "SELECT rowid AS row_id, * FROM postings WHERE tenant = ? AND rowid > ? ORDER BY rowid LIMIT ?",
        )
        .bind(tenant.as_str())
        .bind(after_id)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| -> Result<(i64, Posting), LedgerError> {
                Ok((sqlx::Row::try_get::<i64, _>(r, "row_id")?, posting_from(r)?))
            })
            .collect()
    }

    async fn batch(&self, key: &BatchKey) -> Result<Option<BatchOutcome>, LedgerError> {
        let row = sqlx::query("SELECT outcome FROM batches WHERE sidecar_id = ? AND seq = ?")
            .bind(key.sidecar_id.as_str())
            .bind(i(key.seq, "batch seq")?)
            .fetch_optional(&self.reader)
            .await?;
        if let Some(r) = row {
            return json(&r, "outcome").map(Some);
        }
        // Read after the row: a prune that removed it committed before, so its
        // watermark is seen here.
        let mark: Option<(i64, i64)> = sqlx::query_as(
            "SELECT pruned_through, pruned_at FROM batch_watermarks WHERE sidecar_id = ?",
        )
        .bind(key.sidecar_id.as_str())
        .fetch_optional(&self.reader)
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
            sqlx::query_as(sqlx::AssertSqlSafe(plan_usage_sql(false)))
                .bind(tenant.as_str())
                .bind(i(from, "time")?)
                .bind(i(to, "time")?)
                .fetch_one(&self.reader)
                .await?;
        let usage = PeriodUsage {
            metered: Credits(u(metered, "plan usage")?),
            request_units_milli: u(units, "plan request units")?,
        };
        Ok((usage, Credits(u(list, "plan usage")?)))
    }

    async fn task(&self, tenant: &TenantId, task: &str) -> Result<Option<TaskRow>, LedgerError> {
        let row = sqlx::query("SELECT * FROM tasks WHERE tenant = ? AND task = ?")
            .bind(tenant.as_str())
            .bind(task)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(task_from).transpose()
    }

    async fn tasks(&self, tenant: &TenantId, limit: u32) -> Result<Vec<TaskRow>, LedgerError> {
        let rows =
            sqlx::query("SELECT * FROM tasks WHERE tenant = ? ORDER BY last_at DESC, task LIMIT ?")
                .bind(tenant.as_str())
                .bind(i64::from(limit))
                .fetch_all(&self.reader)
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
            "SELECT * FROM audit_records WHERE tenant = ? AND seq >= ? ORDER BY seq LIMIT ?",
        )
        .bind(tenant.as_str())
        .bind(i(from_seq, "seq")?)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(audit_from).collect()
    }

    async fn prune_spend(&self, before: Timestamp) -> Result<u64, LedgerError> {
        let r = sqlx::query("DELETE FROM spend_minutes WHERE minute < ?")
            .bind(i(before, "time")?)
            .execute(&self.writer)
            .await?;
        Ok(r.rows_affected())
    }

    async fn prune_batches(
        &self,
        before: Timestamp,
        now: Timestamp,
        limit: u32,
    ) -> Result<u64, LedgerError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let doomed: Vec<(String, i64)> = sqlx::query_as(
            "SELECT sidecar_id, seq FROM batches WHERE posted_at < ? ORDER BY posted_at LIMIT ?",
        )
        .bind(i(before, "time")?)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        let mut through: std::collections::BTreeMap<&str, i64> = Default::default();
        for (sid, seq) in &doomed {
            let e = through.entry(sid.as_str()).or_insert(*seq);
            *e = (*e).max(*seq);
        }
        let now = i(now, "time")?;
        for (sid, seq) in &through {
            sqlx::query(
                "INSERT INTO batch_watermarks (sidecar_id, pruned_through, pruned_at) VALUES (?, ?, ?) \
                 ON CONFLICT (sidecar_id) DO UPDATE SET pruned_through = MAX(pruned_through, excluded.pruned_through), pruned_at = excluded.pruned_at",
            )
            .bind(*sid)
            .bind(*seq)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        for (sid, seq) in &doomed {
            sqlx::query("DELETE FROM batches WHERE sidecar_id = ? AND seq = ?")
                .bind(sid.as_str())
                .bind(*seq)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(doomed.len() as u64)
    }

    async fn latest_price_book(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<PriceBookRow>, LedgerError> {
        let row =
            sqlx::query("SELECT * FROM price_books WHERE tenant = ? ORDER BY version DESC LIMIT 1")
                .bind(tenant.as_str())
                .fetch_optional(&self.reader)
                .await?;
        row.as_ref().map(price_book_from).transpose()
    }
}
