//! Rows to ledger types and back, for both stores: one decoder per row type, over the
//! few column reads ([`Columns`]) each dialect implements. Amounts and times are signed
//! 64-bit integers in both (`INTEGER`, `BIGINT`); a `u64` that does not fit is refused
//! with [`LedgerError::Overflow`] rather than wrapped, and a negative value read back is
//! [`LedgerError::Corrupt`]. The names of enum values are the enums' own
//! ([`GrantKind::as_str`], [`ResetPeriod::as_str`], [`HoldStatus::as_str`],
//! [`Funding::to_parts`]).

use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use tollgate_core::{Credits, PeriodUsage};

use crate::audit::{AuditRecord, ChainHead, WalletTotals};
use crate::error::LedgerError;
use crate::grant::{Grant, GrantKind, ResetPeriod};
use crate::hold::{Funding, Hold, HoldStatus};
use crate::ids::{BatchKey, GrantId, HoldId, TenantId};
use crate::report::StatementRow;
use crate::store::{AlertRuleState, PriceBookRow, WalletRow};
use crate::task::{TaskRow, TaskTerms};
use crate::usage::Posting;

/// `u64` to `BIGINT`.
pub(super) fn i(v: u64, what: &str) -> Result<i64, LedgerError> {
    i64::try_from(v)
        .map_err(|_| LedgerError::Overflow(format!("{what} {v} does not fit in the store")))
}

/// Credits to `BIGINT`.
pub(super) fn c(v: Credits, what: &str) -> Result<i64, LedgerError> {
    i(v.micros(), what)
}

/// Optional `u64` to `BIGINT`.
pub(super) fn oi(v: Option<u64>, what: &str) -> Result<Option<i64>, LedgerError> {
    v.map(|v| i(v, what)).transpose()
}

pub(super) fn u(v: i64, what: &str) -> Result<u64, LedgerError> {
    u64::try_from(v).map_err(|_| LedgerError::Corrupt(format!("negative {what} {v} in the store")))
}

/// The column reads a decoder needs, per dialect.
pub(super) trait Columns {
    /// A nullable integer column.
    fn int(&self, col: &str) -> Result<Option<i64>, LedgerError>;
    /// A nullable text column.
    fn text(&self, col: &str) -> Result<Option<String>, LedgerError>;
    /// A 0/1 flag (SQLite `INTEGER`, PostgreSQL `SMALLINT`).
    fn flag(&self, col: &str) -> Result<bool, LedgerError>;
}

impl Columns for SqliteRow {
    fn int(&self, col: &str) -> Result<Option<i64>, LedgerError> {
        Ok(self.try_get(col)?)
    }
    fn text(&self, col: &str) -> Result<Option<String>, LedgerError> {
        Ok(self.try_get(col)?)
    }
    fn flag(&self, col: &str) -> Result<bool, LedgerError> {
        Ok(self.try_get::<i64, _>(col)? != 0)
    }
}

impl Columns for PgRow {
    fn int(&self, col: &str) -> Result<Option<i64>, LedgerError> {
        Ok(self.try_get(col)?)
    }
    fn text(&self, col: &str) -> Result<Option<String>, LedgerError> {
        Ok(self.try_get(col)?)
    }
    fn flag(&self, col: &str) -> Result<bool, LedgerError> {
        Ok(self.try_get::<i16, _>(col)? != 0)
    }
}

fn null(col: &str) -> LedgerError {
    LedgerError::Corrupt(format!("column {col} is NULL"))
}

/// A non-null text column.
pub(super) fn get_s(row: &impl Columns, col: &str) -> Result<String, LedgerError> {
    row.text(col)?.ok_or_else(|| null(col))
}

pub(super) fn get_u(row: &impl Columns, col: &str) -> Result<u64, LedgerError> {
    u(row.int(col)?.ok_or_else(|| null(col))?, col)
}

pub(super) fn get_c(row: &impl Columns, col: &str) -> Result<Credits, LedgerError> {
    Ok(Credits(get_u(row, col)?))
}

pub(super) fn get_opt_u(row: &impl Columns, col: &str) -> Result<Option<u64>, LedgerError> {
    row.int(col)?.map(|v| u(v, col)).transpose()
}

pub(super) fn tenant_of(row: &impl Columns) -> Result<TenantId, LedgerError> {
    let s = get_s(row, "tenant")?;
    TenantId::new(s).map_err(|e| LedgerError::Corrupt(e.to_string()))
}

pub(super) fn json<T: serde::de::DeserializeOwned>(
    row: &impl Columns,
    col: &str,
) -> Result<T, LedgerError> {
    let s = get_s(row, col)?;
    serde_json::from_str(&s).map_err(|e| LedgerError::Corrupt(format!("column {col}: {e}")))
}

pub(super) fn to_json<T: serde::Serialize>(v: &T) -> Result<String, LedgerError> {
    serde_json::to_string(v).map_err(|e| LedgerError::store(format!("encoding JSON: {e}")))
}

fn kind_from(s: &str) -> Result<GrantKind, LedgerError> {
    GrantKind::from_name(s).ok_or_else(|| LedgerError::Corrupt(format!("unknown grant kind {s:?}")))
}

fn reset_from(s: &str) -> Result<ResetPeriod, LedgerError> {
    ResetPeriod::from_name(s)
        .ok_or_else(|| LedgerError::Corrupt(format!("unknown reset period {s:?}")))
}

fn status_from(s: &str) -> Result<HoldStatus, LedgerError> {
    HoldStatus::from_name(s)
        .ok_or_else(|| LedgerError::Corrupt(format!("unknown hold status {s:?}")))
}

fn funding_from(kind: &str, grant: Option<u64>) -> Result<Funding, LedgerError> {
    Funding::from_parts(kind, grant)
        .ok_or_else(|| LedgerError::Corrupt(format!("bad funding {kind:?}")))
}

fn hash_from(s: &str) -> Result<[u8; 32], LedgerError> {
    hex::decode(s)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| LedgerError::Corrupt(format!("bad audit head hash {s:?}")))
}

fn small(v: u64, what: &str) -> Result<u32, LedgerError> {
    u32::try_from(v).map_err(|_| LedgerError::Corrupt(format!("{what} {v} out of range")))
}

pub(super) fn wallet_from(row: &impl Columns) -> Result<WalletRow, LedgerError> {
    let head_hash = get_s(row, "audit_hash")?;
    let alert_state: Vec<AlertRuleState> = json(row, "alert_state")?;
    Ok(WalletRow {
        tenant: tenant_of(row)?,
        config: json(row, "config")?,
        created_at: get_u(row, "created_at")?,
        next_grant_id: get_u(row, "next_grant_id")?,
        next_hold_id: get_u(row, "next_hold_id")?,
        totals: WalletTotals {
            granted: get_c(row, "granted")?,
            available: get_c(row, "available")?,
            held: get_c(row, "held")?,
            consumed: get_c(row, "consumed")?,
            expired: get_c(row, "expired")?,
            plan_held: get_c(row, "plan_held")?,
            plan_consumed: get_c(row, "plan_consumed")?,
            overrun: get_c(row, "overrun")?,
        },
        period_start: get_u(row, "period_start")?,
        period_spent: get_c(row, "period_spent")?,
        period_usage: PeriodUsage {
            metered: get_c(row, "period_metered")?,
            request_units_milli: get_u(row, "period_request_milli")?,
        },
        price_book_version: get_opt_u(row, "price_book_version")?,
        alert_state,
        audit_head: ChainHead {
            seq: get_u(row, "audit_seq")?,
            hash: hash_from(&head_hash)?,
        },
    })
}

pub(super) fn grant_from(row: &impl Columns) -> Result<Grant, LedgerError> {
    let kind = get_s(row, "kind")?;
    let reset = row.text("reset_period")?;
    let closed = row.flag("closed")?;
    Ok(Grant {
        tenant: tenant_of(row)?,
        id: GrantId(get_u(row, "id")?),
        kind: kind_from(&kind)?,
        amount: get_c(row, "amount")?,
        priority: small(get_u(row, "priority")?, "grant priority")?,
        starts_at: get_u(row, "starts_at")?,
        expires_at: get_opt_u(row, "expires_at")?,
        reset: reset.as_deref().map(reset_from).transpose()?,
        reference: row.text("reference")?,
        created_at: get_u(row, "created_at")?,
        period: small(get_u(row, "period")?, "grant period")?,
        period_start: get_u(row, "period_start")?,
        next_reset_at: get_opt_u(row, "next_reset_at")?,
        granted: get_c(row, "granted")?,
        available: get_c(row, "available")?,
        held: get_c(row, "held")?,
        consumed: get_c(row, "consumed")?,
        expired: get_c(row, "expired")?,
        closed,
    })
}

pub(super) fn hold_from(row: &impl Columns) -> Result<Hold, LedgerError> {
    let status = get_s(row, "status")?;
    Ok(Hold {
        tenant: tenant_of(row)?,
        id: HoldId(get_u(row, "id")?),
        owner: get_s(row, "owner")?,
        amount: get_c(row, "amount")?,
        drawn: get_c(row, "drawn")?,
        released: get_c(row, "released")?,
        status: status_from(&status)?,
        created_at: get_u(row, "created_at")?,
        expires_at: get_u(row, "expires_at")?,
        closed_at: get_opt_u(row, "closed_at")?,
        parts: json(row, "parts")?,
    })
}

pub(super) fn audit_from(row: &impl Columns) -> Result<AuditRecord, LedgerError> {
    Ok(AuditRecord {
        tenant: tenant_of(row)?,
        seq: get_u(row, "seq")?,
        at: get_u(row, "at")?,
        prev_hash: get_s(row, "prev_hash")?,
        body: get_s(row, "body")?,
        hash: get_s(row, "hash")?,
        signature: get_s(row, "signature")?,
    })
}

pub(super) fn posting_from(row: &impl Columns) -> Result<Posting, LedgerError> {
    let sidecar = row.text("batch_sidecar")?;
    let seq = get_opt_u(row, "batch_seq")?;
    let funding = get_s(row, "funding")?;
    Ok(Posting {
        tenant: tenant_of(row)?,
        batch: match (sidecar, seq) {
            (Some(sidecar_id), Some(seq)) => Some(BatchKey { sidecar_id, seq }),
            _ => None,
        },
        hold: get_opt_u(row, "hold_id")?.map(HoldId),
        agent: get_s(row, "agent")?,
        agent_instance: get_s(row, "agent_instance")?,
        model: get_s(row, "model")?,
        feature: get_s(row, "feature")?,
        task: get_s(row, "task")?,
        funding: funding_from(&funding, get_opt_u(row, "grant_id")?)?,
        amount: get_c(row, "amount")?,
        records: get_u(row, "records")?,
        input_tokens: get_u(row, "input_tokens")?,
        output_tokens: get_u(row, "output_tokens")?,
        outcomes: get_u(row, "outcomes")?,
        work_units: get_u(row, "work_units")?,
        request_units_milli: get_u(row, "request_units_milli")?,
        balance_before: get_c(row, "balance_before")?,
        balance_after: get_c(row, "balance_after")?,
        at: get_u(row, "at")?,
    })
}

pub(super) fn statement_row_from(r: &impl Columns) -> Result<StatementRow, LedgerError> {
    let funding = get_s(r, "funding")?;
    Ok(StatementRow {
        agent: get_s(r, "agent")?,
        agent_instance: get_s(r, "agent_instance")?,
        model: get_s(r, "model")?,
        feature: get_s(r, "feature")?,
        task: get_s(r, "task")?,
        funding: funding_from(&funding, get_opt_u(r, "grant_id")?)?,
        amount: get_c(r, "amount")?,
        records: get_u(r, "records")?,
        input_tokens: get_u(r, "input_tokens")?,
        output_tokens: get_u(r, "output_tokens")?,
        outcomes: get_u(r, "outcomes")?,
        work_units: get_u(r, "work_units")?,
        request_units_milli: get_u(r, "request_units_milli")?,
    })
}

/// The statement's aggregate query over `postings`; `pg` for PostgreSQL's placeholders,
/// its `NUMERIC` sums cast back and its NULL ordering. Binds: tenant, from, to.
pub(super) fn statement_sql(pg: bool) -> String {
    let sum = |c: &str| {
        if pg {
            format!("SUM({c})::BIGINT AS {c}")
        } else {
            format!("SUM({c}) AS {c}")
        }
    };
    let sums = [
        "amount",
        "records",
        "input_tokens",
        "output_tokens",
        "outcomes",
        "work_units",
        "request_units_milli",
    ]
    .map(sum)
    .join(", ");
    let (p1, p2, p3, nulls) = if pg {
        ("$1", "$2", "$3", " NULLS FIRST")
    } else {
        ("?", "?", "?", "")
    };
    format!(
        "SELECT agent, agent_instance, model, feature, task, funding, grant_id, {sums} \
         FROM postings WHERE tenant = {p1} AND at >= {p2} AND at < {p3} \
         GROUP BY agent, agent_instance, model, feature, task, funding, grant_id \
         ORDER BY agent, agent_instance, model, feature, task, funding, grant_id{nulls}"
    )
}

/// The plan-usage query: `metered` (credits of plan-funded postings without request
/// units), `units` (their request units) and `list` (all their credits) of a tenant in
/// `[from, to)`. Binds: tenant, from, to.
pub(super) fn plan_usage_sql(pg: bool) -> String {
    let (cast, p1, p2, p3) = if pg {
        ("::BIGINT", "$1", "$2", "$3")
    } else {
        ("", "?", "?", "?")
    };
    format!(
        "SELECT COALESCE(SUM(CASE WHEN request_units_milli = 0 THEN amount ELSE 0 END), 0){cast} AS metered, \
         COALESCE(SUM(request_units_milli), 0){cast} AS units, COALESCE(SUM(amount), 0){cast} AS list \
         FROM postings WHERE tenant = {p1} AND at >= {p2} AND at < {p3} AND funding = 'plan'"
    )
}

pub(super) fn task_from(row: &impl Columns) -> Result<TaskRow, LedgerError> {
    let budget = get_opt_u(row, "budget")?;
    Ok(TaskRow {
        tenant: tenant_of(row)?,
        task: get_s(row, "task")?,
        terms: budget
            .map(|b| -> Result<TaskTerms, LedgerError> {
                Ok(TaskTerms {
                    budget: Credits(b),
                    max_calls: get_opt_u(row, "max_calls")?,
                })
            })
            .transpose()?,
        opened_at: get_opt_u(row, "opened_at")?,
        first_at: get_u(row, "first_at")?,
        last_at: get_u(row, "last_at")?,
        spent: get_c(row, "spent")?,
        calls: get_u(row, "calls")?,
        work_units: get_u(row, "work_units")?,
        completed_at: get_opt_u(row, "completed_at")?,
        conflicts: get_u(row, "conflicts")?,
    })
}

/// A task row's values in the column order of the stores' `tasks` upserts:
/// (budget, max_calls, opened_at, first_at, last_at, spent, calls, work_units,
/// completed_at, conflicts).
pub(super) fn task_values(t: &TaskRow) -> Result<[Option<i64>; 10], LedgerError> {
    Ok([
        t.terms.map(|x| c(x.budget, "task budget")).transpose()?,
        t.terms
            .and_then(|x| x.max_calls)
            .map(|m| i(m, "task max calls"))
            .transpose()?,
        oi(t.opened_at, "time")?,
        Some(i(t.first_at, "time")?),
        Some(i(t.last_at, "time")?),
        Some(c(t.spent, "task spent")?),
        Some(i(t.calls, "task calls")?),
        Some(i(t.work_units, "task work units")?),
        oi(t.completed_at, "time")?,
        Some(i(t.conflicts, "task conflicts")?),
    ])
}

/// The `tasks` columns after `tenant, task`, in the order of [`task_values`].
pub(super) const TASK_COLS: [&str; 10] = [
    "budget",
    "max_calls",
    "opened_at",
    "first_at",
    "last_at",
    "spent",
    "calls",
    "work_units",
    "completed_at",
    "conflicts",
];

pub(super) fn price_book_from(row: &impl Columns) -> Result<PriceBookRow, LedgerError> {
    Ok(PriceBookRow {
        tenant: tenant_of(row)?,
        version: get_u(row, "version")?,
        json: get_s(row, "book")?,
        created_at: get_u(row, "created_at")?,
    })
}
