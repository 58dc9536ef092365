//! What the authority keeps beside the ledger: per-tenant quota rules, tier floors and
//! defaults (pushed to sidecars as `TenantPolicy`), alert rules' webhook URLs, tenant
//! display names, each sidecar's durable-batch hint, the window-quota and task-budget
//! claims, and the denials sidecars report (per minute, for the dashboards). Small
//! tables (`tollgate_authority_*`) in the ledger's database, made by the ledger's versioned
//! migrations (SQLite: 3 and 4, applied at open; PostgreSQL: 2 and 4, `tollgate authority
//! migrate`).
//! Values are protobuf-encoded so the schema does not change when a policy field is added.
//!
//! **Several replicas** (PostgreSQL) share these tables, so every write here is safe
//! against a concurrent writer on another replica:
//! - a policy is compared-and-set on its `version` ([`PolicyStore::update_policy`]
//!   retries on a lost race), so no change is lost;
//! - a window claim is one conditional `UPDATE` (`claimed + g <= max`, evaluated on the
//!   row under its lock), so the leases of all replicas together never pass a window's
//!   maximum ([`PolicyStore::claim_window`]).
//!
//! The durable-batch hint may lag the ledger (it is written after the batch commit, and
//! only now and then); that is safe: `Register` probes the ledger forward from it, and a
//! re-sent batch is posted once anyway.

use prost::Message;
use sqlx::postgres::PgPool;
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
    /// The tables' migrations failed.
    #[error("authority policy store: migrating the tables failed")]
    Migrate(#[source] tollgate_ledger::LedgerError),
    /// Another writer kept changing the same policy.
    #[error("the policy of tenant {0} changed concurrently too often; retry")]
    Contended(String),
}

#[derive(Debug, Clone)]
enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// The tables.
#[derive(Debug, Clone)]
pub struct PolicyStore {
    db: Db,
}

// SQL is written once for both dialects: `$n` placeholders (SQLite takes them too) and
// `CASE` where SQLite's two-argument MIN/MAX and PostgreSQL's LEAST/GREATEST differ.

/// Runs one query on whichever database: `$build` turns a fresh statement (the `$q`
/// binding, for `sqlx::query_as`) into the finished fetch.
macro_rules! on_db {
    ($self:expr, $sql:expr, |$q:ident| $build:expr) => {
        match &$self.db {
            Db::Sqlite(pool) => {
                let $q = sqlx::AssertSqlSafe($sql.to_string());
                $build(pool).await
            }
            Db::Postgres(pool) => {
                let $q = sqlx::AssertSqlSafe($sql.to_string());
                $build(pool).await
            }
        }
    };
}

/// As [`on_db`] for a statement run with `execute`: gives the rows affected.
macro_rules! exec_db {
    ($self:expr, $sql:expr, |$q:ident| $build:expr) => {
        match &$self.db {
            Db::Sqlite(pool) => {
                let $q = sqlx::AssertSqlSafe($sql.to_string());
                $build(pool).await.map(|r| r.rows_affected())
            }
            Db::Postgres(pool) => {
                let $q = sqlx::AssertSqlSafe($sql.to_string());
                $build(pool).await.map(|r| r.rows_affected())
            }
        }
    };
}

fn clamp(x: u64) -> i64 {
    i64::try_from(x).unwrap_or(i64::MAX)
}

fn unclamp(x: i64) -> u64 {
    u64::try_from(x).unwrap_or(0)
}

impl PolicyStore {
    /// Opens (creating if needed) the tables in the SQLite database at `url`
    /// (`sqlite://path`, `sqlite:path` or a path).
    pub async fn open_sqlite(url: &str) -> Result<PolicyStore, PolicyStoreError> {
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
        // The ledger's versioned SQLite migrations make these tables (version 3: sidecar
        // owners and leases, version 4: the rest), as on PostgreSQL; the file may be
        // opened here before the ledger opens it.
        tollgate_ledger::store::sqlite::migrate_pool(&pool)
            .await
            .map_err(PolicyStoreError::Migrate)?;
        // Files whose authority tables predate the policy's version column (made before
        // migration 4, which then found the table there).
        let has_version: Option<(String,)> = sqlx::query_as(
            "SELECT name FROM pragma_table_info('tollgate_authority_policy') WHERE name = 'version'",
        )
        .fetch_optional(&pool)
        .await?;
        if has_version.is_none() {
            sqlx::query(
                "ALTER TABLE tollgate_authority_policy ADD COLUMN version INTEGER NOT NULL DEFAULT 0",
            )
            .execute(&pool)
            .await?;
        }
        Ok(PolicyStore {
            db: Db::Sqlite(pool),
        })
    }

    /// Uses the ledger's PostgreSQL pool (its connections' `search_path` names the
    /// schema); the tables come from the ledger's migration 2.
    pub fn postgres(pool: PgPool) -> PolicyStore {
        PolicyStore {
            db: Db::Postgres(pool),
        }
    }

    fn decode_policy(tenant: &str, b: &[u8]) -> Result<v1::TenantPolicy, PolicyStoreError> {
        v1::TenantPolicy::decode(b).map_err(|e| PolicyStoreError::Corrupt {
            what: "policy",
            tenant: tenant.to_string(),
            message: e.to_string(),
        })
    }

    /// The stored policy of `tenant` (quotas, floors, defaults, version), if any.
    pub async fn policy(&self, tenant: &str) -> Result<Option<v1::TenantPolicy>, PolicyStoreError> {
        let sql = "SELECT policy FROM tollgate_authority_policy WHERE tenant = $1";
        let row: Option<(Vec<u8>,)> = on_db!(self, sql, |q| |p| sqlx::query_as(q)
            .bind(tenant)
            .fetch_optional(p))?;
        row.map(|(b,)| Self::decode_policy(tenant, &b)).transpose()
    }

    /// Every tenant's policy version (for replicas to notice changes made elsewhere).
    pub async fn policy_versions(&self) -> Result<Vec<(String, u64)>, PolicyStoreError> {
        let sql = "SELECT tenant, version FROM tollgate_authority_policy";
        let rows: Vec<(String, i64)> = on_db!(self, sql, |q| |p| sqlx::query_as(q).fetch_all(p))?;
        Ok(rows.into_iter().map(|(t, v)| (t, unclamp(v))).collect())
    }

    /// Read-modify-write of a tenant's policy (a default one if none is stored): `change`
    /// edits it, the version goes up by one, and the write succeeds only if nobody wrote
    /// in between (compare-and-set on the version); otherwise it is re-read and `change`
    /// runs again (a few times at most). Returns the stored policy and `change`'s output.
    pub async fn update_policy<T, E>(
        &self,
        tenant: &str,
        mut change: impl FnMut(&mut v1::TenantPolicy) -> Result<T, E>,
    ) -> Result<Result<(v1::TenantPolicy, T), E>, PolicyStoreError> {
        for _ in 0..8 {
            let current = self.policy(tenant).await?;
            let mut p = current.clone().unwrap_or_else(|| v1::TenantPolicy {
                tenant: tenant.to_string(),
                ..Default::default()
            });
            let out = match change(&mut p) {
                Ok(o) => o,
                Err(e) => return Ok(Err(e)),
            };
            p.tenant = tenant.to_string();
            p.version = current.as_ref().map_or(0, |c| c.version).saturating_add(1);
            let blob = p.encode_to_vec();
            let written = match &current {
                None => {
                    let sql = "INSERT INTO tollgate_authority_policy (tenant, policy, version) VALUES ($1, $2, $3) ON CONFLICT (tenant) DO NOTHING";
                    exec_db!(self, sql, |q| |pool| sqlx::query(q)
                        .bind(tenant)
                        .bind(&blob)
                        .bind(clamp(p.version))
                        .execute(pool))?
                }
                Some(c) => {
                    let sql = "UPDATE tollgate_authority_policy SET policy = $1, version = $2 WHERE tenant = $3 AND version = $4";
                    exec_db!(self, sql, |q| |pool| sqlx::query(q)
                        .bind(&blob)
                        .bind(clamp(p.version))
                        .bind(tenant)
                        .bind(clamp(c.version))
                        .execute(pool))?
                }
            };
            if written == 1 {
                return Ok(Ok((p, out)));
            }
        }
        Err(PolicyStoreError::Contended(tenant.to_string()))
    }

    /// Binds `sidecar` to `credential` if nobody owns it yet, and returns the owner's
    /// credential (this one, or whoever registered the id first). One conditional
    /// insert, so two replicas registering one id at once agree on the owner. `tenants`
    /// is kept for operators (which tenants the first registration named).
    pub async fn claim_sidecar(
        &self,
        sidecar: &str,
        credential: &str,
        tenants: &[String],
        now_ms: u64,
    ) -> Result<String, PolicyStoreError> {
        let sql = "INSERT INTO tollgate_authority_sidecar_owners (sidecar_id, credential, tenants, registered_at_ms) VALUES ($1, $2, $3, $4) ON CONFLICT (sidecar_id) DO NOTHING";
        let tenants = tenants.join(",");
        exec_db!(self, sql, |q| |pool| sqlx::query(q)
            .bind(sidecar)
            .bind(credential)
            .bind(&tenants)
            .bind(clamp(now_ms))
            .execute(pool))?;
        let sql = "SELECT credential FROM tollgate_authority_sidecar_owners WHERE sidecar_id = $1";
        let (owner,): (String,) = on_db!(self, sql, |q| |p| sqlx::query_as(q)
            .bind(sidecar)
            .fetch_one(p))?;
        Ok(owner)
    }

    /// Records a lease granted to `sidecar` (replacing one of the same id), before the
    /// grant is sent: after a restart, [`PolicyStore::lease`] is what a re-registering
    /// sidecar's held leases are checked against.
    pub async fn put_lease(
        &self,
        sidecar: &str,
        lease: &v1::Lease,
    ) -> Result<(), PolicyStoreError> {
        let sql = "INSERT INTO tollgate_authority_leases (sidecar_id, lease_id, lease, expires_ms) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (sidecar_id, lease_id) DO UPDATE SET lease = excluded.lease, expires_ms = excluded.expires_ms";
        let blob = lease.encode_to_vec();
        exec_db!(self, sql, |q| |p| sqlx::query(q)
            .bind(sidecar)
            .bind(&lease.lease_id)
            .bind(&blob)
            .bind(clamp(lease.expires_unix_ms))
            .execute(p))?;
        Ok(())
    }

    /// The lease `lease_id` as granted to `sidecar`, if it was and has not ended.
    pub async fn lease(
        &self,
        sidecar: &str,
        lease_id: &str,
    ) -> Result<Option<v1::Lease>, PolicyStoreError> {
        let sql =
            "SELECT lease FROM tollgate_authority_leases WHERE sidecar_id = $1 AND lease_id = $2";
        let row: Option<(Vec<u8>,)> = on_db!(self, sql, |q| |p| sqlx::query_as(q)
            .bind(sidecar)
            .bind(lease_id)
            .fetch_optional(p))?;
        row.map(|(b,)| {
            v1::Lease::decode(b.as_slice()).map_err(|e| PolicyStoreError::Corrupt {
                what: "lease",
                tenant: sidecar.to_string(),
                message: e.to_string(),
            })
        })
        .transpose()
    }

    /// Forgets a lease that ended (settled, closed or expired).
    pub async fn delete_lease(
        &self,
        sidecar: &str,
        lease_id: &str,
    ) -> Result<(), PolicyStoreError> {
        let sql = "DELETE FROM tollgate_authority_leases WHERE sidecar_id = $1 AND lease_id = $2";
        exec_db!(self, sql, |q| |p| sqlx::query(q)
            .bind(sidecar)
            .bind(lease_id)
            .execute(p))?;
        Ok(())
    }

    /// Forgets leases that expired before `before_ms` (a replica that died never deleted
    /// its own); returns how many.
    pub async fn prune_leases(&self, before_ms: u64) -> Result<u64, PolicyStoreError> {
        let sql = "DELETE FROM tollgate_authority_leases WHERE expires_ms < $1";
        Ok(exec_db!(self, sql, |q| |p| sqlx::query(q)
            .bind(clamp(before_ms))
            .execute(p))?)
    }

    /// Alert rules of `tenant` (with webhook URLs), by id.
    pub async fn alert_rules(&self, tenant: &str) -> Result<Vec<v1::AlertRule>, PolicyStoreError> {
        let sql =
            "SELECT rule FROM tollgate_authority_alert_rules WHERE tenant = $1 ORDER BY rule_id";
        let rows: Vec<(Vec<u8>,)> = on_db!(self, sql, |q| |p| sqlx::query_as(q)
            .bind(tenant)
            .fetch_all(p))?;
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
        let sql = "INSERT INTO tollgate_authority_alert_rules (tenant, rule_id, rule) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant, rule_id) DO UPDATE SET rule = excluded.rule";
        exec_db!(self, sql, |q| |p| sqlx::query(q)
            .bind(&rule.tenant)
            .bind(&rule.id)
            .bind(rule.encode_to_vec())
            .execute(p))?;
        Ok(())
    }

    /// Deletes an alert rule; true if it existed.
    pub async fn delete_alert_rule(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<bool, PolicyStoreError> {
        let sql = "DELETE FROM tollgate_authority_alert_rules WHERE tenant = $1 AND rule_id = $2";
        let r = exec_db!(self, sql, |q| |p| sqlx::query(q)
            .bind(tenant)
            .bind(id)
            .execute(p))?;
        Ok(r > 0)
    }

    /// Display name of a tenant.
    pub async fn display_name(&self, tenant: &str) -> Result<Option<String>, PolicyStoreError> {
        let sql = "SELECT display_name FROM tollgate_authority_tenants WHERE tenant = $1";
        let row: Option<(String,)> = on_db!(self, sql, |q| |p| sqlx::query_as(q)
            .bind(tenant)
            .fetch_optional(p))?;
        Ok(row.map(|r| r.0))
    }

    /// Sets a tenant's display name.
    pub async fn put_display_name(&self, tenant: &str, name: &str) -> Result<(), PolicyStoreError> {
        let sql = "INSERT INTO tollgate_authority_tenants (tenant, display_name) VALUES ($1, $2) \
             ON CONFLICT (tenant) DO UPDATE SET display_name = excluded.display_name";
        exec_db!(self, sql, |q| |p| sqlx::query(q)
            .bind(tenant)
            .bind(name)
            .execute(p))?;
        Ok(())
    }

    /// Adds denied calls a sidecar reported: `(limit key, encoded LimitKey, tier, count)`
    /// per binding limit and tier, counted in the minute starting at `minute_ms`.
    pub async fn record_denials(
        &self,
        tenant: &str,
        minute_ms: u64,
        denials: &[DenialCount],
    ) -> Result<(), PolicyStoreError> {
        let sql = "INSERT INTO tollgate_authority_denials (tenant, limit_key, limit_pb, tier, minute_ms, count) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant, limit_key, tier, minute_ms) \
             DO UPDATE SET count = tollgate_authority_denials.count + excluded.count";
        for (key, pb, tier, count) in denials {
            exec_db!(self, sql, |q| |p| sqlx::query(q)
                .bind(tenant)
                .bind(key.as_str())
                .bind(pb.as_slice())
                .bind(*tier)
                .bind(clamp(minute_ms))
                .bind(clamp(*count))
                .execute(p))?;
        }
        Ok(())
    }

    /// Denials of a tenant in minutes starting at or after `since_ms`: `(minute, limit
    /// key, encoded LimitKey, tier, count)`, oldest first.
    pub async fn recent_denials(
        &self,
        tenant: &str,
        since_ms: u64,
    ) -> Result<Vec<DenialRow>, PolicyStoreError> {
        let sql = "SELECT minute_ms, limit_key, limit_pb, tier, count FROM tollgate_authority_denials \
             WHERE tenant = $1 AND minute_ms >= $2 ORDER BY minute_ms, limit_key, tier LIMIT 100000";
        let rows: Vec<(i64, String, Vec<u8>, i32, i64)> = on_db!(self, sql, |q| |p| {
            sqlx::query_as(q)
                .bind(tenant)
                .bind(clamp(since_ms))
                .fetch_all(p)
        })?;
        Ok(rows
            .into_iter()
            .map(|(m, k, pb, t, c)| (unclamp(m), k, pb, t, unclamp(c)))
            .collect())
    }

    /// Forgets denials counted in minutes before `before_ms`; returns how many rows.
    pub async fn prune_denials(&self, before_ms: u64) -> Result<u64, PolicyStoreError> {
        let sql = "DELETE FROM tollgate_authority_denials WHERE minute_ms < $1";
        let r = exec_db!(self, sql, |q| |p| sqlx::query(q)
            .bind(clamp(before_ms))
            .execute(p))?;
        Ok(r)
    }

    /// The durable-batch hint of a sidecar (0 if none).
    pub async fn durable_hint(&self, sidecar: &str) -> Result<u64, PolicyStoreError> {
        let sql = "SELECT durable_seq FROM tollgate_authority_sidecars WHERE sidecar_id = $1";
        let row: Option<(i64,)> = on_db!(self, sql, |q| |p| sqlx::query_as(q)
            .bind(sidecar)
            .fetch_optional(p))?;
        Ok(row.map_or(0, |r| unclamp(r.0)))
    }

    /// Raises the durable-batch hint (never lowers it).
    pub async fn put_durable_hint(&self, sidecar: &str, seq: u64) -> Result<(), PolicyStoreError> {
        let sql = "INSERT INTO tollgate_authority_sidecars (sidecar_id, durable_seq) VALUES ($1, $2) \
             ON CONFLICT (sidecar_id) DO UPDATE SET durable_seq = CASE WHEN excluded.durable_seq > tollgate_authority_sidecars.durable_seq \
             THEN excluded.durable_seq ELSE tollgate_authority_sidecars.durable_seq END";
        exec_db!(self, sql, |q| |p| sqlx::query(q)
            .bind(sidecar)
            .bind(clamp(seq))
            .execute(p))?;
        Ok(())
    }

    /// What is claimed (leased out, not handed back) of a window.
    pub async fn window_claimed(
        &self,
        tenant: &str,
        rule_id: &str,
        window_start_ms: u64,
    ) -> Result<u64, PolicyStoreError> {
        let sql = "SELECT claimed FROM tollgate_authority_windows WHERE tenant = $1 AND rule_id = $2 AND window_start_ms = $3";
        let row: Option<(i64,)> = on_db!(self, sql, |q| |p| sqlx::query_as(q)
            .bind(tenant)
            .bind(rule_id)
            .bind(clamp(window_start_ms))
            .fetch_optional(p))?;
        Ok(row.map_or(0, |r| unclamp(r.0)))
    }

    /// Claims up to `want` of a window whose maximum is `max`; returns what was claimed
    /// (`min(want, max - claimed)`, 0 when the window is full). One conditional update
    /// of the window's row: replicas claiming at once serialize on its lock and each
    /// sees the other's claim, so the sum never passes `max`.
    pub async fn claim_window(
        &self,
        tenant: &str,
        rule_id: &str,
        window: (u64, u64),
        want: u64,
        max: u64,
    ) -> Result<u64, PolicyStoreError> {
        let (start, end) = (clamp(window.0), clamp(window.1));
        let insert = "INSERT INTO tollgate_authority_windows (tenant, rule_id, window_start_ms, window_end_ms, claimed, last_claim) \
             VALUES ($1, $2, $3, $4, 0, 0) ON CONFLICT (tenant, rule_id, window_start_ms) DO NOTHING";
        exec_db!(self, insert, |q| |p| sqlx::query(q)
            .bind(tenant)
            .bind(rule_id)
            .bind(start)
            .bind(end)
            .execute(p))?;
        // Both SET expressions read the row as it was before this update.
        let update = "UPDATE tollgate_authority_windows \
             SET last_claim = CASE WHEN $2 - claimed <= 0 THEN 0 WHEN $1 < $2 - claimed THEN $1 ELSE $2 - claimed END, \
             claimed = claimed + CASE WHEN $2 - claimed <= 0 THEN 0 WHEN $1 < $2 - claimed THEN $1 ELSE $2 - claimed END \
             WHERE tenant = $3 AND rule_id = $4 AND window_start_ms = $5 RETURNING last_claim";
        let (want, max) = (clamp(want), clamp(max));
        let row: Option<(i64,)> = on_db!(self, update, |q| |p| sqlx::query_as(q)
            .bind(want)
            .bind(max)
            .bind(tenant)
            .bind(rule_id)
            .bind(start)
            .fetch_optional(p))?;
        Ok(row.map_or(0, |r| unclamp(r.0)))
    }

    /// Hands `amount` of a window back (a lease returned unspent credits).
    pub async fn release_window(
        &self,
        tenant: &str,
        rule_id: &str,
        window_start_ms: u64,
        amount: u64,
    ) -> Result<(), PolicyStoreError> {
        let sql = "UPDATE tollgate_authority_windows SET claimed = CASE WHEN claimed > $1 THEN claimed - $1 ELSE 0 END \
             WHERE tenant = $2 AND rule_id = $3 AND window_start_ms = $4";
        exec_db!(self, sql, |q| |p| sqlx::query(q)
            .bind(clamp(amount))
            .bind(tenant)
            .bind(rule_id)
            .bind(clamp(window_start_ms))
            .execute(p))?;
        Ok(())
    }

    /// Forgets windows that ended before `now_ms`; returns how many.
    pub async fn prune_windows(&self, now_ms: u64) -> Result<u64, PolicyStoreError> {
        let sql = "DELETE FROM tollgate_authority_windows WHERE window_end_ms < $1";
        let r = exec_db!(self, sql, |q| |p| sqlx::query(q)
            .bind(clamp(now_ms))
            .execute(p))?;
        Ok(r)
    }
}

/// A denial count as stored: (minute start ms, limit key, encoded `LimitKey`, tier, count).
pub type DenialRow = (u64, String, Vec<u8>, i32, u64);

/// A denial count to add: (limit key, encoded `LimitKey`, tier, count).
pub type DenialCount = (String, Vec<u8>, i32, u64);

/// A `tollgate_authority_webhooks` row as claimed: (delivery, url, body, secret, attempts).
type WebhookRow = (String, String, Vec<u8>, Vec<u8>, i32);

/// An alert webhook waiting in the store for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingWebhook {
    /// Unique delivery id (sent as `X-Tollgate-Delivery`; receivers de-duplicate by it).
    pub delivery: String,
    /// Where to POST.
    pub url: String,
    /// The JSON body, signed as is.
    pub body: Vec<u8>,
    /// The rule's own HMAC key; empty: the authority's global webhook secret.
    pub secret: Vec<u8>,
    /// Attempts made so far.
    pub attempts: u32,
}

impl PolicyStore {
    /// Queues a webhook for delivery (once per delivery id: a second enqueue of the same
    /// id is a no-op). True if it was queued now.
    pub async fn enqueue_webhook(
        &self,
        w: &PendingWebhook,
        now_ms: u64,
    ) -> Result<bool, PolicyStoreError> {
        let sql = "INSERT INTO tollgate_authority_webhooks (delivery, url, body, secret, attempts, next_at_ms, claimed_until_ms) \
             VALUES ($1, $2, $3, $4, 0, $5, 0) ON CONFLICT (delivery) DO NOTHING";
        let n = exec_db!(self, sql, |q| |p| sqlx::query(q)
            .bind(&w.delivery)
            .bind(&w.url)
            .bind(&w.body)
            .bind(&w.secret)
            .bind(clamp(now_ms))
            .execute(p))?;
        Ok(n == 1)
    }

    /// Claims up to `limit` due webhooks for `claim_ms` (another replica skips them until
    /// then, so a delivery in flight is not sent twice at once).
    pub async fn claim_webhooks(
        &self,
        now_ms: u64,
        claim_ms: u64,
        limit: u32,
    ) -> Result<Vec<PendingWebhook>, PolicyStoreError> {
        let lock = match self.db {
            Db::Sqlite(_) => "",
            Db::Postgres(_) => " FOR UPDATE SKIP LOCKED",
        };
        let sql = format!(
            "UPDATE tollgate_authority_webhooks SET claimed_until_ms = $1 WHERE delivery IN \
             (SELECT delivery FROM tollgate_authority_webhooks WHERE next_at_ms <= $2 AND claimed_until_ms <= $3 \
             ORDER BY next_at_ms LIMIT $4{lock}) RETURNING delivery, url, body, secret, attempts"
        );
        let rows: Vec<WebhookRow> = on_db!(self, sql.as_str(), |q| |p| {
            sqlx::query_as(q)
                .bind(clamp(now_ms.saturating_add(claim_ms)))
                .bind(clamp(now_ms))
                .bind(clamp(now_ms))
                .bind(i64::from(limit))
                .fetch_all(p)
        })?;
        Ok(rows
            .into_iter()
            .map(|(delivery, url, body, secret, attempts)| PendingWebhook {
                delivery,
                url,
                body,
                secret,
                attempts: u32::try_from(attempts).unwrap_or(0),
            })
            .collect())
    }

    /// A webhook is finished (delivered, or given up on): forget it.
    pub async fn webhook_done(&self, delivery: &str) -> Result<(), PolicyStoreError> {
        let sql = "DELETE FROM tollgate_authority_webhooks WHERE delivery = $1";
        exec_db!(self, sql, |q| |p| sqlx::query(q).bind(delivery).execute(p))?;
        Ok(())
    }

    /// An attempt failed: count it and try again at `next_at_ms`.
    pub async fn webhook_retry_at(
        &self,
        delivery: &str,
        attempts: u32,
        next_at_ms: u64,
    ) -> Result<(), PolicyStoreError> {
        let sql = "UPDATE tollgate_authority_webhooks SET attempts = $1, next_at_ms = $2, claimed_until_ms = 0 WHERE delivery = $3";
        exec_db!(self, sql, |q| |p| sqlx::query(q)
            .bind(i32::try_from(attempts).unwrap_or(i32::MAX))
            .bind(clamp(next_at_ms))
            .bind(delivery)
            .execute(p))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file made by the code before migration 4 (ledger migrations 1 to 3, the
    /// authority's tables made at open, the oldest without the policy's version column)
    /// opens: migration 4 is applied, what was stored reads back, and policy updates work.
    #[tokio::test]
    async fn a_file_from_before_migration_4_migrates() {
        use sqlx::Executor;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let url = format!("sqlite://{}", path.display());
        {
            let opts = SqliteConnectOptions::new()
                .filename(&path)
                .create_if_missing(true);
            let pool = SqlitePool::connect_with(opts).await.unwrap();
            pool.execute("CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)").await.unwrap();
            for &(version, name, sql) in &tollgate_ledger::store::sqlite::MIGRATIONS[..3] {
                pool.execute(sql).await.unwrap();
                sqlx::query("INSERT INTO schema_migrations VALUES (?, ?, 0)")
                    .bind(version)
                    .bind(name)
                    .execute(&pool)
                    .await
                    .unwrap();
            }
            pool.execute("CREATE TABLE tollgate_authority_policy (tenant TEXT PRIMARY KEY, policy BLOB NOT NULL)").await.unwrap();
            pool.execute("CREATE TABLE tollgate_authority_tenants (tenant TEXT PRIMARY KEY, display_name TEXT NOT NULL)").await.unwrap();
            let old = v1::TenantPolicy {
                tenant: "acme".into(),
                default_max_output_tokens: 2,
                ..Default::default()
            };
            sqlx::query("INSERT INTO tollgate_authority_policy VALUES ('acme', ?)")
                .bind(old.encode_to_vec())
                .execute(&pool)
                .await
                .unwrap();
            sqlx::query("INSERT INTO tollgate_authority_tenants VALUES ('acme', 'Acme')")
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        }
        let s = PolicyStore::open_sqlite(&url).await.unwrap();
        let Db::Sqlite(pool) = &s.db else {
            unreachable!()
        };
        let versions: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM schema_migrations ORDER BY version")
                .fetch_all(pool)
                .await
                .unwrap();
        assert_eq!(versions, [1, 2, 3, 4, 5]);
        let p = s.policy("acme").await.unwrap().unwrap();
        assert_eq!((p.default_max_output_tokens, p.version), (2, 0));
        assert_eq!(
            s.display_name("acme").await.unwrap().as_deref(),
            Some("Acme")
        );
        let (p, ()) = s
            .update_policy("acme", |p| {
                p.default_max_output_tokens = 3;
                Ok::<_, ()>(())
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!((p.default_max_output_tokens, p.version), (3, 1));
        // The tables migration 4 made are there too.
        assert_eq!(
            s.claim_window("acme", "r", (0, 60_000), 5, 10)
                .await
                .unwrap(),
            5
        );
        // And the ledger opens the same file.
        let ledger = tollgate_ledger::SqliteStore::open_url(&url).await.unwrap();
        assert_eq!(ledger.applied_migrations().await.unwrap(), [1, 2, 3, 4, 5]);
    }

    async fn sqlite() -> (tempfile::TempDir, PolicyStore) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("p.db").display());
        let s = PolicyStore::open_sqlite(&url).await.unwrap();
        (dir, s)
    }

    #[tokio::test]
    async fn window_claims_never_pass_the_max_and_come_back() {
        let (_d, s) = sqlite().await;
        let w = (60_000, 120_000);
        assert_eq!(s.claim_window("acme", "r", w, 70, 100).await.unwrap(), 70);
        assert_eq!(s.claim_window("acme", "r", w, 70, 100).await.unwrap(), 30);
        assert_eq!(s.claim_window("acme", "r", w, 70, 100).await.unwrap(), 0);
        assert_eq!(s.window_claimed("acme", "r", 60_000).await.unwrap(), 100);
        s.release_window("acme", "r", 60_000, 40).await.unwrap();
        assert_eq!(s.claim_window("acme", "r", w, 70, 100).await.unwrap(), 40);
        // Other tenants and windows are apart; a lowered max grants nothing more.
        assert_eq!(s.claim_window("globex", "r", w, 5, 100).await.unwrap(), 5);
        assert_eq!(s.claim_window("acme", "r", w, 5, 50).await.unwrap(), 0);
        assert_eq!(s.prune_windows(120_001).await.unwrap(), 2);
        assert_eq!(s.window_claimed("acme", "r", 60_000).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn webhooks_queue_once_claim_once_and_retry_later() {
        let (_d, s) = sqlite().await;
        let w = |d: &str| PendingWebhook {
            delivery: d.into(),
            url: "http://x/h".into(),
            body: b"{}".to_vec(),
            secret: b"k".to_vec(),
            attempts: 0,
        };
        assert!(s.enqueue_webhook(&w("d1"), 1_000).await.unwrap());
        assert!(!s.enqueue_webhook(&w("d1"), 1_000).await.unwrap());
        assert!(s.enqueue_webhook(&w("d2"), 5_000).await.unwrap());
        let got = s.claim_webhooks(1_000, 60_000, 10).await.unwrap();
        assert_eq!(got.len(), 1, "d2 is not due yet");
        assert_eq!(got[0], w("d1"), "round trip");
        assert!(
            s.claim_webhooks(2_000, 60_000, 10)
                .await
                .unwrap()
                .is_empty(),
            "claimed"
        );
        s.webhook_retry_at("d1", 1, 3_000).await.unwrap();
        let got = s.claim_webhooks(6_000, 60_000, 10).await.unwrap();
        assert_eq!(got.len(), 2);
        assert!(got.iter().any(|w| w.delivery == "d1" && w.attempts == 1));
        s.webhook_done("d1").await.unwrap();
        s.webhook_done("d2").await.unwrap();
        assert!(
            s.claim_webhooks(u64::MAX / 2, 1, 10)
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn policy_updates_are_versioned_and_errors_write_nothing() {
        let (_d, s) = sqlite().await;
        let (p, ()) = s
            .update_policy("acme", |p| {
                p.hard_cap_micro = 5;
                Ok::<(), String>(())
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!(p.version, 1);
        let (p, old) = s
            .update_policy("acme", |p| {
                let old = p.hard_cap_micro;
                p.hard_cap_micro = 7;
                Ok::<u64, String>(old)
            })
            .await
            .unwrap()
            .unwrap();
        assert_eq!((p.version, old), (2, 5));
        let r = s
            .update_policy("acme", |_| Err::<(), _>("refused".to_string()))
            .await
            .unwrap();
        assert_eq!(r.unwrap_err(), "refused");
        let stored = s.policy("acme").await.unwrap().unwrap();
        assert_eq!((stored.version, stored.hard_cap_micro), (2, 7));
        assert_eq!(
            s.policy_versions().await.unwrap(),
            vec![("acme".to_string(), 2)]
        );
    }
}
