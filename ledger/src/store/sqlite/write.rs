//! The write half of a SQLite transaction: one function per table, each a few
//! multi-row statements ([`ROWS_PER_INSERT`] rows each), in the order
//! `SqliteTx::write` calls them (the same tables and order as the PostgreSQL store's
//! `write` module).

use sqlx::sqlite::{Sqlite, SqliteArguments, SqliteConnection};
use tollgate_core::Credits;

use super::{ROWS_PER_INSERT, multi_row};
use crate::audit::AuditRecord;
use crate::clock::Timestamp;
use crate::error::LedgerError;
use crate::grant::{Grant, ResetPeriod};
use crate::hold::Hold;
use crate::ids::TenantId;
use crate::store::rows::{TASK_COLS, c, i, task_values, to_json};
use crate::store::{BatchRow, PriceBookRow, WalletRow};
use crate::task::TaskRow;
use crate::usage::Posting;

/// New wallet rows, one insert each (a wallet is created alone).
pub(super) async fn new_wallets(
    tx: &mut SqliteConnection,
    ws: &[WalletRow],
) -> Result<(), LedgerError> {
    for w in ws {
        write_wallet(tx, w, true).await?;
    }
    Ok(())
}

/// Changed (locked, existing) wallet rows: one update, or multi-row upserts for many.
pub(super) async fn wallets(
    tx: &mut SqliteConnection,
    ws: &[WalletRow],
) -> Result<(), LedgerError> {
    if let [w] = ws {
        return write_wallet(tx, w, false).await;
    }
    for chunk in ws.chunks(ROWS_PER_INSERT) {
        upsert_wallets(tx, chunk).await?;
    }
    Ok(())
}

/// New and changed grants.
pub(super) async fn grants(tx: &mut SqliteConnection, gs: &[Grant]) -> Result<(), LedgerError> {
    for chunk in gs.chunks(ROWS_PER_INSERT) {
        let mut q = sqlx::query(sqlx::AssertSqlSafe(multi_row(
            "INSERT INTO grants (tenant, id, kind, amount, priority, starts_at, expires_at, reset_period, reference, created_at, period, period_start, next_reset_at, granted, available, held, consumed, expired, closed) VALUES ",
            19,
            chunk.len(),
            " ON CONFLICT (tenant, id) DO UPDATE SET period = excluded.period, period_start = excluded.period_start, \
             next_reset_at = excluded.next_reset_at, granted = excluded.granted, available = excluded.available, \
             held = excluded.held, consumed = excluded.consumed, expired = excluded.expired, closed = excluded.closed",
        )));
        for g in chunk {
            q = q
                .bind(g.tenant.as_str())
                .bind(i(g.id.0, "grant id")?)
                .bind(g.kind.as_str())
                .bind(c(g.amount, "amount")?)
                .bind(i64::from(g.priority))
                .bind(i(g.starts_at, "time")?)
                .bind(g.expires_at.map(|v| i(v, "time")).transpose()?)
                .bind(g.reset.map(ResetPeriod::as_str))
                .bind(g.reference.as_deref())
                .bind(i(g.created_at, "time")?)
                .bind(i64::from(g.period))
                .bind(i(g.period_start, "time")?)
                .bind(g.next_reset_at.map(|v| i(v, "time")).transpose()?)
                .bind(c(g.granted, "granted")?)
                .bind(c(g.available, "available")?)
                .bind(c(g.held, "held")?)
                .bind(c(g.consumed, "consumed")?)
                .bind(c(g.expired, "expired")?)
                .bind(i64::from(g.closed));
        }
        q.execute(&mut *tx).await?;
    }
    Ok(())
}

/// New and changed holds.
pub(super) async fn holds(tx: &mut SqliteConnection, hs: &[Hold]) -> Result<(), LedgerError> {
    for h in hs {
        sqlx::query(
            "INSERT INTO holds (tenant, id, owner, amount, drawn, released, status, created_at, expires_at, closed_at, parts) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (tenant, id) DO UPDATE SET drawn = excluded.drawn, released = excluded.released, \
             status = excluded.status, closed_at = excluded.closed_at, parts = excluded.parts",
        )
        .bind(h.tenant.as_str())
        .bind(i(h.id.0, "hold id")?)
        .bind(h.owner.as_str())
        .bind(c(h.amount, "amount")?)
        .bind(c(h.drawn, "drawn")?)
        .bind(c(h.released, "released")?)
        .bind(h.status.as_str())
        .bind(i(h.created_at, "time")?)
        .bind(i(h.expires_at, "time")?)
        .bind(h.closed_at.map(|v| i(v, "time")).transpose()?)
        .bind(to_json(&h.parts)?)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// Postings (append only).
pub(super) async fn postings(tx: &mut SqliteConnection, ps: &[Posting]) -> Result<(), LedgerError> {
    for chunk in ps.chunks(ROWS_PER_INSERT) {
        let mut q = sqlx::query(sqlx::AssertSqlSafe(multi_row(
            "INSERT INTO postings (tenant, at, batch_sidecar, batch_seq, hold_id, agent, agent_instance, model, feature, task, funding, grant_id, amount, records, input_tokens, output_tokens, outcomes, work_units, request_units_milli, balance_before, balance_after) VALUES ",
            21,
            chunk.len(),
            "",
        )));
        for p in chunk {
            let (fk, gid) = p.funding.to_parts();
            q = q
                .bind(p.tenant.as_str())
                .bind(i(p.at, "time")?)
                .bind(p.batch.as_ref().map(|b| b.sidecar_id.as_str()))
                .bind(p.batch.as_ref().map(|b| i(b.seq, "seq")).transpose()?)
                .bind(p.hold.map(|h| i(h.0, "hold id")).transpose()?)
                .bind(p.agent.as_str())
                .bind(p.agent_instance.as_str())
                .bind(p.model.as_str())
                .bind(p.feature.as_str())
                .bind(p.task.as_str())
                .bind(fk)
                .bind(gid.map(|g| i(g, "grant id")).transpose()?)
                .bind(c(p.amount, "amount")?)
                .bind(i(p.records, "records")?)
                .bind(i(p.input_tokens, "tokens")?)
                .bind(i(p.output_tokens, "tokens")?)
                .bind(i(p.outcomes, "outcomes")?)
                .bind(i(p.work_units, "work units")?)
                .bind(i(p.request_units_milli, "request units")?)
                .bind(c(p.balance_before, "balance")?)
                .bind(c(p.balance_after, "balance")?);
        }
        q.execute(&mut *tx).await?;
    }
    Ok(())
}

/// Batch rows of the usage batches posted.
pub(super) async fn batches(tx: &mut SqliteConnection, bs: &[BatchRow]) -> Result<(), LedgerError> {
    for chunk in bs.chunks(ROWS_PER_INSERT) {
        let mut q = sqlx::query(sqlx::AssertSqlSafe(multi_row(
            "INSERT INTO batches (sidecar_id, seq, posted_at, records, outcome, digest, signature) VALUES ",
            7,
            chunk.len(),
            "",
        )));
        for b in chunk {
            q = q
                .bind(b.outcome.key.sidecar_id.as_str())
                .bind(i(b.outcome.key.seq, "seq")?)
                .bind(i(b.outcome.posted_at, "time")?)
                .bind(i(b.outcome.records, "records")?)
                .bind(to_json(&b.outcome)?)
                .bind(b.digest.as_deref())
                .bind(b.signature.as_deref());
        }
        q.execute(&mut *tx).await?;
    }
    Ok(())
}

/// Audit records (append only).
pub(super) async fn audit(
    tx: &mut SqliteConnection,
    rs: &[AuditRecord],
) -> Result<(), LedgerError> {
    for chunk in rs.chunks(ROWS_PER_INSERT) {
        let mut q = sqlx::query(sqlx::AssertSqlSafe(multi_row(
            "INSERT INTO audit_records (tenant, seq, at, prev_hash, body, hash, signature) VALUES ",
            7,
            chunk.len(),
            "",
        )));
        for a in chunk {
            q = q
                .bind(a.tenant.as_str())
                .bind(i(a.seq, "seq")?)
                .bind(i(a.at, "time")?)
                .bind(a.prev_hash.as_str())
                .bind(a.body.as_str())
                .bind(a.hash.as_str())
                .bind(a.signature.as_str());
        }
        q.execute(&mut *tx).await?;
    }
    Ok(())
}

/// Per-minute spend, added to what the minute already has.
pub(super) async fn spend(
    tx: &mut SqliteConnection,
    buckets: &[(TenantId, Timestamp, Credits)],
) -> Result<(), LedgerError> {
    for chunk in buckets.chunks(ROWS_PER_INSERT) {
        let mut q = sqlx::query(sqlx::AssertSqlSafe(multi_row(
            "INSERT INTO spend_minutes (tenant, minute, amount) VALUES ",
            3,
            chunk.len(),
            " ON CONFLICT (tenant, minute) DO UPDATE SET amount = spend_minutes.amount + excluded.amount",
        )));
        for (t, minute, amount) in chunk {
            q = q
                .bind(t.as_str())
                .bind(i(*minute, "time")?)
                .bind(c(*amount, "amount")?);
        }
        q.execute(&mut *tx).await?;
    }
    Ok(())
}

/// Task rows, inserted or replaced whole (the engine computed them under the wallet
/// lock).
pub(super) async fn tasks(tx: &mut SqliteConnection, ts: &[TaskRow]) -> Result<(), LedgerError> {
    let set: Vec<String> = TASK_COLS
        .iter()
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    let suffix = format!(
        " ON CONFLICT (tenant, task) DO UPDATE SET {}",
        set.join(", ")
    );
    let prefix = format!(
        "INSERT INTO tasks (tenant, task, {}) VALUES ",
        TASK_COLS.join(", ")
    );
    for chunk in ts.chunks(ROWS_PER_INSERT) {
        let mut q = sqlx::query(sqlx::AssertSqlSafe(multi_row(
            &prefix,
            2 + TASK_COLS.len(),
            chunk.len(),
            &suffix,
        )));
        for t in chunk {
            q = q.bind(t.tenant.as_str()).bind(t.task.as_str());
            for v in task_values(t)? {
                q = q.bind(v);
            }
        }
        q.execute(&mut *tx).await?;
    }
    Ok(())
}

/// New price book versions.
pub(super) async fn price_books(
    tx: &mut SqliteConnection,
    books: &[PriceBookRow],
) -> Result<(), LedgerError> {
    for p in books {
        sqlx::query(
            "INSERT INTO price_books (tenant, version, book, created_at) VALUES (?, ?, ?, ?)",
        )
        .bind(p.tenant.as_str())
        .bind(i(p.version, "version")?)
        .bind(p.json.as_str())
        .bind(i(p.created_at, "time")?)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// A wallet row's 21 values, in the column order of `upsert_wallets` and `write_wallet`
/// (tenant last).
fn bind_wallet<'q>(
    q: sqlx::query::Query<'q, Sqlite, SqliteArguments>,
    w: &'q WalletRow,
) -> Result<sqlx::query::Query<'q, Sqlite, SqliteArguments>, LedgerError> {
    let t = &w.totals;
    Ok(q.bind(to_json(&w.config)?)
        .bind(i(w.created_at, "time")?)
        .bind(i(w.next_grant_id, "grant id")?)
        .bind(i(w.next_hold_id, "hold id")?)
        .bind(c(t.granted, "granted")?)
        .bind(c(t.available, "available")?)
        .bind(c(t.held, "held")?)
        .bind(c(t.consumed, "consumed")?)
        .bind(c(t.expired, "expired")?)
        .bind(c(t.plan_held, "plan held")?)
        .bind(c(t.plan_consumed, "plan consumed")?)
        .bind(c(t.overrun, "overrun")?)
        .bind(i(w.period_start, "time")?)
        .bind(c(w.period_spent, "period spent")?)
        .bind(c(w.period_usage.metered, "period metered")?)
        .bind(i(w.period_usage.request_units_milli, "period requests")?)
        .bind(w.price_book_version.map(|v| i(v, "version")).transpose()?)
        .bind(to_json(&w.alert_state)?)
        .bind(i(w.audit_head.seq, "audit seq")?)
        .bind(hex::encode(w.audit_head.hash))
        .bind(w.tenant.as_str()))
}

/// Update several (locked, existing) wallet rows in one statement.
async fn upsert_wallets(tx: &mut SqliteConnection, ws: &[WalletRow]) -> Result<(), LedgerError> {
    const COLS: &str = "config, created_at, next_grant_id, next_hold_id, granted, available, held, consumed, expired, plan_held, plan_consumed, overrun, period_start, period_spent, period_metered, period_request_milli, price_book_version, alert_state, audit_seq, audit_hash, tenant";
    let set: Vec<String> = COLS
        .split(", ")
        .filter(|c| *c != "tenant")
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    let sql = multi_row(
        &format!("INSERT INTO wallets ({COLS}) VALUES "),
        21,
        ws.len(),
        &format!(" ON CONFLICT (tenant) DO UPDATE SET {}", set.join(", ")),
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for w in ws {
        q = bind_wallet(q, w)?;
    }
    q.execute(&mut *tx).await?;
    Ok(())
}

async fn write_wallet(
    tx: &mut SqliteConnection,
    w: &WalletRow,
    insert: bool,
) -> Result<(), LedgerError> {
    let sql = if insert {
        "INSERT INTO wallets (config, created_at, next_grant_id, next_hold_id, granted, available, held, consumed, expired, plan_held, plan_consumed, overrun, period_start, period_spent, period_metered, period_request_milli, price_book_version, alert_state, audit_seq, audit_hash, tenant) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    } else {
        "UPDATE wallets SET config = ?, created_at = ?, next_grant_id = ?, next_hold_id = ?, granted = ?, available = ?, held = ?, consumed = ?, expired = ?, plan_held = ?, plan_consumed = ?, overrun = ?, period_start = ?, period_spent = ?, period_metered = ?, period_request_milli = ?, price_book_version = ?, alert_state = ?, audit_seq = ?, audit_hash = ? WHERE tenant = ?"
    };
    let r = bind_wallet(sqlx::query(sql), w)?.execute(&mut *tx).await?;
    if r.rows_affected() != 1 {
        return Err(LedgerError::store(format!(
            "wallet row of {} was not written",
            w.tenant
        )));
    }
    Ok(())
}
