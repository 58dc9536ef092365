//! Versioned migrations for PostgreSQL: SQL files under `migrations/postgres/`, embedded
//! at build time (no `DATABASE_URL` needed to build) and applied by the ledger's one
//! runner ([`crate::store::migrate`]), each in its own transaction together with its row
//! in `schema_migrations` (PostgreSQL DDL is transactional, so a migration is applied
//! entirely or not at all).
//!
//! Several authority replicas may start at once: the runner holds a session-level
//! advisory lock keyed by the schema name while it works, so exactly one applies a
//! pending migration and the others then see it applied.

use sqlx::postgres::PgPool;
use sqlx::{Connection, Row};

use crate::error::LedgerError;

/// Embedded migrations: (version, name, SQL), in version order.
pub const MIGRATIONS: &[crate::store::migrate::Migration] = &[
    (
        1,
        "initial",
        include_str!("../../../migrations/postgres/0001_initial.sql"),
    ),
    (
        2,
        "authority",
        include_str!("../../../migrations/postgres/0002_authority.sql"),
    ),
    (
        3,
        "batch_watermarks",
        include_str!("../../../migrations/postgres/0003_batch_watermarks.sql"),
    ),
    (
        4,
        "sidecar_trust",
        include_str!("../../../migrations/postgres/0004_sidecar_trust.sql"),
    ),
    (
        5,
        "attribution",
        include_str!("../../../migrations/postgres/0005_attribution.sql"),
    ),
];

/// Apply every pending migration to the schema the pool's connections use (their
/// `search_path`), creating `schema` first if one is given. Idempotent. Returns the
/// versions applied by this call.
pub async fn run(pool: &PgPool, schema: Option<&str>) -> Result<Vec<i64>, LedgerError> {
    let mut conn = pool.acquire().await?;
    // Lock first: even `CREATE SCHEMA IF NOT EXISTS` races between sessions.
    const KEY: &str = "hashtextextended('tollgate-ledger-migrate:' || coalesce($1::text, current_schema(), ''), 0)";
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT pg_advisory_lock({KEY})"
    )))
    .bind(schema)
    .execute(&mut *conn)
    .await?;
    let result = create_and_apply(&mut conn, schema).await;
    // Unlock even if a migration failed (the lock is per session, and the connection
    // goes back to the pool).
    let unlock = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT pg_advisory_unlock({KEY})"
    )))
    .bind(schema)
    .execute(&mut *conn)
    .await;
    let applied = result?;
    unlock?;
    Ok(applied)
}

async fn create_and_apply(
    conn: &mut sqlx::PgConnection,
    schema: Option<&str>,
) -> Result<Vec<i64>, LedgerError> {
    if let Some(s) = schema {
        // The name was validated (letters, digits, '_'), so quoting it is injection-safe.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE SCHEMA IF NOT EXISTS \"{s}\""
        )))
        .execute(&mut *conn)
        .await
        .map_err(|e| LedgerError::db(format!("cannot create schema {s}: {e}"), e))?;
    }
    apply(conn).await
}

async fn apply(conn: &mut sqlx::PgConnection) -> Result<Vec<i64>, LedgerError> {
    crate::store::migrate::run(&mut Pg(conn), MIGRATIONS).await
}

/// PostgreSQL's side of the runner, on one connection (holding the advisory lock).
struct Pg<'c>(&'c mut sqlx::PgConnection);

#[async_trait::async_trait]
impl crate::store::migrate::Dialect for Pg<'_> {
    async fn ensure_table(&mut self) -> Result<(), LedgerError> {
        sqlx::query(crate::store::migrate::CREATE_TABLE)
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    async fn applied(&mut self) -> Result<Vec<i64>, LedgerError> {
        Ok(
            sqlx::query_scalar("SELECT version FROM schema_migrations ORDER BY version")
                .fetch_all(&mut *self.0)
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
        // The advisory lock makes this session the only one migrating: no re-check needed.
        let mut tx = self.0.begin().await?;
        sqlx::raw_sql(sql)
            .execute(&mut *tx)
            .await
            .map_err(|e| LedgerError::db(format!("migration {version} ({name}) failed: {e}"), e))?;
        sqlx::query(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
        )
        .bind(version)
        .bind(name)
        .bind(at_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }
}

/// Applied migration versions, in order.
pub async fn applied(pool: &PgPool) -> Result<Vec<i64>, LedgerError> {
    let rows = sqlx::query("SELECT version FROM schema_migrations ORDER BY version")
        .fetch_all(pool)
        .await?;
    rows.iter()
        .map(|r| r.try_get::<i64, _>("version").map_err(LedgerError::from))
        .collect()
}
