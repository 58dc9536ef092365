//! What the authority keeps beside the ledger: per-tenant quota rules, tier floors and
//! defaults (pushed to sidecars as `TenantPolicy`), alert rules' webhook URLs, tenant
//! display names, and each sidecar's durable-batch hint. Small tables in the same SQLite
//! file as the ledger (`tollgate_authority_*`), written rarely; protobuf-encoded values so
//! the schema does not change when a policy field is added.
//!
//! The durable-batch hint may lag the ledger (it is written after the batch commit, and
//! only now and then); that is safe: `Register` probes the ledger forward from it, and a
//! re-sent batch is posted once anyway.

use prost::Message;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use tollgate_proto::v1;

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum PolicyStoreError {
    /// Database error.
    #[error("authority policy store: {0}")]
    Db(#[from] sqlx::Error),
    /// A stored value does not decode.
    #[error("authority policy store: stored {what} of tenant {tenant} is corrupt: {message}")]
    Corrupt {
        /// Which table.
        what: &'static str,
        /// Tenant.
        tenant: String,
        /// Decoder message.
        message: String,
    },
}

/// The tables.
#[derive(Debug, Clone)]
pub struct PolicyStore {
    pool: SqlitePool,
}

impl PolicyStore {
    /// Opens (creating if needed) the tables in the SQLite database at `url`
    /// (`sqlite://path`, `sqlite:path` or a path).
    pub async fn open(url: &str) -> Result<PolicyStore, PolicyStoreError> {
        // Same forms as the ledger's store: `sqlite://path`, `sqlite:path` or a plain path.
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(url);
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(std::time::Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(opts)
            .await?;
        for ddl in [
            "CREATE TABLE IF NOT EXISTS tollgate_authority_policy (tenant TEXT PRIMARY KEY, policy BLOB NOT NULL)",
            "CREATE TABLE IF NOT EXISTS tollgate_authority_alert_rules (tenant TEXT NOT NULL, rule_id TEXT NOT NULL, rule BLOB NOT NULL, PRIMARY KEY (tenant, rule_id))",
            "CREATE TABLE IF NOT EXISTS tollgate_authority_tenants (tenant TEXT PRIMARY KEY, display_name TEXT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS tollgate_authority_sidecars (sidecar_id TEXT PRIMARY KEY, durable_seq INTEGER NOT NULL)",
        ] {
            sqlx::query(ddl).execute(&pool).await?;
        }
        Ok(PolicyStore { pool })
    }

    /// The stored policy of `tenant` (quotas, floors, defaults, version), if any.
    pub async fn policy(&self, tenant: &str) -> Result<Option<v1::TenantPolicy>, PolicyStoreError> {
        let row: Option<(Vec<u8>,)> =
            sqlx::query_as("SELECT policy FROM tollgate_authority_policy WHERE tenant = ?")
                .bind(tenant)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|(b,)| {
            v1::TenantPolicy::decode(b.as_slice()).map_err(|e| PolicyStoreError::Corrupt {
                what: "policy",
                tenant: tenant.to_string(),
                message: e.to_string(),
            })
        })
        .transpose()
    }

    /// Stores the policy of `policy.tenant`.
    pub async fn put_policy(&self, policy: &v1::TenantPolicy) -> Result<(), PolicyStoreError> {
        sqlx::query(
            "INSERT INTO tollgate_authority_policy (tenant, policy) VALUES (?, ?) \
             ON CONFLICT(tenant) DO UPDATE SET policy = excluded.policy",
        )
        .bind(&policy.tenant)
        .bind(policy.encode_to_vec())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Alert rules of `tenant` (with webhook URLs), by id.
    pub async fn alert_rules(&self, tenant: &str) -> Result<Vec<v1::AlertRule>, PolicyStoreError> {
        let rows: Vec<(Vec<u8>,)> = sqlx::query_as(
            "SELECT rule FROM tollgate_authority_alert_rules WHERE tenant = ? ORDER BY rule_id",
        )
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(b,)| {
                v1::AlertRule::decode(b.as_slice()).map_err(|e| PolicyStoreError::Corrupt {
                    what: "alert rule",
                    tenant: tenant.to_string(),
                    message: e.to_string(),
                })
            })
            .collect()
    }

    /// Inserts or replaces an alert rule.
    pub async fn put_alert_rule(&self, rule: &v1::AlertRule) -> Result<(), PolicyStoreError> {
        sqlx::query(
            "INSERT INTO tollgate_authority_alert_rules (tenant, rule_id, rule) VALUES (?, ?, ?) \
             ON CONFLICT(tenant, rule_id) DO UPDATE SET rule = excluded.rule",
        )
        .bind(&rule.tenant)
        .bind(&rule.id)
        .bind(rule.encode_to_vec())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Deletes an alert rule; true if it existed.
    pub async fn delete_alert_rule(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<bool, PolicyStoreError> {
        let r = sqlx::query(
            "DELETE FROM tollgate_authority_alert_rules WHERE tenant = ? AND rule_id = ?",
        )
        .bind(tenant)
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Display name of a tenant.
    pub async fn display_name(&self, tenant: &str) -> Result<Option<String>, PolicyStoreError> {
        let row: Option<(String,)> =
            sqlx::query_as("SELECT display_name FROM tollgate_authority_tenants WHERE tenant = ?")
                .bind(tenant)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|r| r.0))
    }

    /// Sets a tenant's display name.
    pub async fn put_display_name(&self, tenant: &str, name: &str) -> Result<(), PolicyStoreError> {
        sqlx::query(
            "INSERT INTO tollgate_authority_tenants (tenant, display_name) VALUES (?, ?) \
             ON CONFLICT(tenant) DO UPDATE SET display_name = excluded.display_name",
        )
        .bind(tenant)
        .bind(name)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The durable-batch hint of a sidecar (0 if none).
    pub async fn durable_hint(&self, sidecar: &str) -> Result<u64, PolicyStoreError> {
        let row: Option<(i64,)> = sqlx::query_as(
            "SELECT durable_seq FROM tollgate_authority_sidecars WHERE sidecar_id = ?",
        )
        .bind(sidecar)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map_or(0, |r| u64::try_from(r.0).unwrap_or(0)))
    }

    /// Raises the durable-batch hint (never lowers it).
    pub async fn put_durable_hint(&self, sidecar: &str, seq: u64) -> Result<(), PolicyStoreError> {
        let seq = i64::try_from(seq).unwrap_or(i64::MAX);
        sqlx::query(
            "INSERT INTO tollgate_authority_sidecars (sidecar_id, durable_seq) VALUES (?, ?) \
             ON CONFLICT(sidecar_id) DO UPDATE SET durable_seq = MAX(durable_seq, excluded.durable_seq)",
        )
        .bind(sidecar)
        .bind(seq)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
