//! One migration runner for both dialects. Each dialect embeds its SQL files
//! (`migrations/sqlite/`, `migrations/postgres/`) as a list of [`Migration`]s and says how
//! to run one of them ([`Dialect`]); the runner decides which are pending, refuses a
//! database that a newer build migrated, and applies the rest in version order, each in
//! its own transaction together with its `schema_migrations` row, so a migration is applied
//! entirely or not at all, and exactly once when several processes start at once.

use async_trait::async_trait;

use crate::error::LedgerError;

/// An embedded migration: version, name, SQL.
pub type Migration = (i64, &'static str, &'static str);

/// The `schema_migrations` table, the same in both dialects.
pub(crate) const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)";

/// What the runner needs from one dialect.
#[async_trait]
pub(crate) trait Dialect: Send {
    /// Creates `schema_migrations` if it is missing.
    async fn ensure_table(&mut self) -> Result<(), LedgerError>;
    /// The versions recorded as applied.
    async fn applied(&mut self) -> Result<Vec<i64>, LedgerError>;
    /// In one transaction: unless `version` was recorded meanwhile (another process),
    /// runs `sql` and records the version at `at_ms`. True when this call applied it.
    async fn apply(
        &mut self,
        version: i64,
        name: &'static str,
        sql: &'static str,
        at_ms: i64,
    ) -> Result<bool, LedgerError>;
}

/// Applies every pending migration of `migrations` (in version order) through `dialect`.
/// Returns the versions this call applied.
pub(crate) async fn run(
    dialect: &mut impl Dialect,
    migrations: &[Migration],
) -> Result<Vec<i64>, LedgerError> {
    debug_assert!(
        migrations.windows(2).all(|w| w[0].0 < w[1].0),
        "migrations must be listed in increasing version order"
    );
    dialect.ensure_table().await?;
    let done = dialect.applied().await?;
    let latest = migrations.last().map_or(0, |m| m.0);
    if let Some(&v) = done.iter().find(|&&v| v > latest) {
        return Err(LedgerError::store(format!(
            "the database schema is at version {v}, newer than this build knows ({latest}): \
             run a tollgate release at least as new as the one that migrated it"
        )));
    }
    let mut applied = Vec::new();
    for &(version, name, sql) in migrations {
        if done.contains(&version) {
            continue;
        }
        let now = crate::clock::Clock::now(&crate::clock::SystemClock);
        let at_ms = i64::try_from(now).unwrap_or(i64::MAX);
        if dialect.apply(version, name, sql, at_ms).await? {
            applied.push(version);
        }
    }
    Ok(applied)
}
