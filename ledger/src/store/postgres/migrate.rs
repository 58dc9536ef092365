//! Versioned migrations for PostgreSQL: SQL files under `migrations/postgres/`, embedded
//! at build time (no `DATABASE_URL` needed to build) and applied in order, each in its
//! own transaction together with its row in `schema_migrations` (PostgreSQL DDL is
//! transactional, so a migration is applied entirely or not at all).
//!
//! Several authority replicas may start at once: the runner holds a session-level
//! advisory lock keyed by the schema name while it works, so exactly one applies a
//! pending migration and the others then see it applied.

use sqlx::postgres::PgPool;
use sqlx::{Connection, Row};

use crate::error::LedgerError;

/// Embedded migrations: (version, name, SQL), in version order.
pub const MIGRATIONS: &[(i64, &str, &str)] = &[
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
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
    )
    .execute(&mut *conn)
    .await?;
    let done: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM schema_migrations ORDER BY version")
            .fetch_all(&mut *conn)
            .await?;
    let latest = MIGRATIONS.last().map_or(0, |m| m.0);
    if let Some(&v) = done.iter().find(|&&v| v > latest) {
        return Err(LedgerError::store(format!(
            "the database schema is at version {v}, newer than this build knows ({latest}): \
             run a tollgate release at least as new as the one that migrated it"
        )));
    }
    let mut applied = Vec::new();
    for &(version, name, sql) in MIGRATIONS {
        if done.contains(&version) {
            continue;
        }
        let mut tx = conn.begin().await?;
        sqlx::raw_sql(sql)
            .execute(&mut *tx)
            .await
            .map_err(|e| LedgerError::db(format!("migration {version} ({name}) failed: {e}"), e))?;
        let now = crate::clock::Clock::now(&crate::clock::SystemClock);
        sqlx::query(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
        )
        .bind(version)
        .bind(name)
        .bind(i64::try_from(now).unwrap_or(i64::MAX))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        applied.push(version);
    }
    Ok(applied)
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
