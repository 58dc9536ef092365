//! Rows to ledger types and back, for the PostgreSQL store. Amounts and times are
//! `BIGINT`; a `u64` that does not fit is refused with [`LedgerError::Overflow`] rather
//! than wrapped, and a negative value read back is [`LedgerError::Corrupt`].

use sqlx::Row;
use sqlx::postgres::PgRow;
use tollgate_core::{Credits, PeriodUsage};

use crate::audit::{AuditRecord, ChainHead, WalletTotals};
use crate::error::LedgerError;
use crate::grant::{Grant, GrantKind, ResetPeriod};
use crate::hold::{Funding, Hold, HoldStatus};
use crate::ids::{BatchKey, GrantId, HoldId, TenantId};
use crate::report::StatementRow;
use crate::store::{AlertRuleState, PriceBookRow, WalletRow};
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

fn u(v: i64, what: &str) -> Result<u64, LedgerError> {
    u64::try_from(v).map_err(|_| LedgerError::Corrupt(format!("negative {what} {v} in the store")))
}

pub(super) fn get_u(row: &PgRow, col: &str) -> Result<u64, LedgerError> {
    let v: i64 = row.try_get(col)?;
    u(v, col)
}

pub(super) fn get_c(row: &PgRow, col: &str) -> Result<Credits, LedgerError> {
    Ok(Credits(get_u(row, col)?))
}

pub(super) fn get_opt_u(row: &PgRow, col: &str) -> Result<Option<u64>, LedgerError> {
    let v: Option<i64> = row.try_get(col)?;
    v.map(|v| u(v, col)).transpose()
}

pub(super) fn tenant_of(row: &PgRow) -> Result<TenantId, LedgerError> {
    let s: String = row.try_get("tenant")?;
    TenantId::new(s).map_err(|e| LedgerError::Corrupt(e.to_string()))
}

pub(super) fn json<T: serde::de::DeserializeOwned>(
    row: &PgRow,
    col: &str,
) -> Result<T, LedgerError> {
    let s: String = row.try_get(col)?;
    serde_json::from_str(&s).map_err(|e| LedgerError::Corrupt(format!("column {col}: {e}")))
}

pub(super) fn to_json<T: serde::Serialize>(v: &T) -> Result<String, LedgerError> {
    serde_json::to_string(v).map_err(|e| LedgerError::Store(format!("encoding JSON: {e}")))
}

fn kind_from(s: &str) -> Result<GrantKind, LedgerError> {
    [
        GrantKind::Trial,
        GrantKind::Promotional,
        GrantKind::Purchased,
        GrantKind::RecurringAllowance,
    ]
    .into_iter()
    .find(|k| k.as_str() == s)
    .ok_or_else(|| LedgerError::Corrupt(format!("unknown grant kind {s:?}")))
}

pub(super) fn reset_str(r: ResetPeriod) -> &'static str {
    match r {
        ResetPeriod::Monthly => "monthly",
        ResetPeriod::Annual => "annual",
    }
}

fn reset_from(s: &str) -> Result<ResetPeriod, LedgerError> {
    match s {
        "monthly" => Ok(ResetPeriod::Monthly),
        "annual" => Ok(ResetPeriod::Annual),
        _ => Err(LedgerError::Corrupt(format!("unknown reset period {s:?}"))),
    }
}

fn status_from(s: &str) -> Result<HoldStatus, LedgerError> {
    HoldStatus::from_name(s)
        .ok_or_else(|| LedgerError::Corrupt(format!("unknown hold status {s:?}")))
}

/// A funding source as (kind, grant id) columns.
pub(super) fn funding_cols(f: Funding) -> (&'static str, Option<u64>) {
    match f {
        Funding::Grant(g) => ("grant", Some(g.0)),
        Funding::Plan => ("plan", None),
        Funding::Overrun => ("overrun", None),
    }
}

fn funding_from(kind: &str, grant: Option<u64>) -> Result<Funding, LedgerError> {
    match (kind, grant) {
        ("grant", Some(g)) => Ok(Funding::Grant(GrantId(g))),
        ("plan", _) => Ok(Funding::Plan),
        ("overrun", _) => Ok(Funding::Overrun),
        _ => Err(LedgerError::Corrupt(format!("bad funding {kind:?}"))),
    }
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

pub(super) fn wallet_from(row: &PgRow) -> Result<WalletRow, LedgerError> {
    let head_hash: String = row.try_get("audit_hash")?;
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

pub(super) fn grant_from(row: &PgRow) -> Result<Grant, LedgerError> {
    let kind: String = row.try_get("kind")?;
    let reset: Option<String> = row.try_get("reset_period")?;
    let closed: i16 = row.try_get("closed")?;
    Ok(Grant {
        tenant: tenant_of(row)?,
        id: GrantId(get_u(row, "id")?),
        kind: kind_from(&kind)?,
        amount: get_c(row, "amount")?,
        priority: small(get_u(row, "priority")?, "grant priority")?,
        starts_at: get_u(row, "starts_at")?,
        expires_at: get_opt_u(row, "expires_at")?,
        reset: reset.as_deref().map(reset_from).transpose()?,
        reference: row.try_get("reference")?,
        created_at: get_u(row, "created_at")?,
        period: small(get_u(row, "period")?, "grant period")?,
        period_start: get_u(row, "period_start")?,
        next_reset_at: get_opt_u(row, "next_reset_at")?,
        granted: get_c(row, "granted")?,
        available: get_c(row, "available")?,
        held: get_c(row, "held")?,
        consumed: get_c(row, "consumed")?,
        expired: get_c(row, "expired")?,
        closed: closed != 0,
    })
}

pub(super) fn hold_from(row: &PgRow) -> Result<Hold, LedgerError> {
    let status: String = row.try_get("status")?;
    Ok(Hold {
        tenant: tenant_of(row)?,
        id: HoldId(get_u(row, "id")?),
        owner: row.try_get("owner")?,
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

pub(super) fn audit_from(row: &PgRow) -> Result<AuditRecord, LedgerError> {
    Ok(AuditRecord {
        tenant: tenant_of(row)?,
        seq: get_u(row, "seq")?,
        at: get_u(row, "at")?,
        prev_hash: row.try_get("prev_hash")?,
        body: row.try_get("body")?,
        hash: row.try_get("hash")?,
        signature: row.try_get("signature")?,
    })
}

pub(super) fn posting_from(row: &PgRow) -> Result<Posting, LedgerError> {
    let sidecar: Option<String> = row.try_get("batch_sidecar")?;
    let seq = get_opt_u(row, "batch_seq")?;
    let funding: String = row.try_get("funding")?;
    Ok(Posting {
        tenant: tenant_of(row)?,
        batch: match (sidecar, seq) {
            (Some(sidecar_id), Some(seq)) => Some(BatchKey { sidecar_id, seq }),
            _ => None,
        },
        hold: get_opt_u(row, "hold_id")?.map(HoldId),
        agent: row.try_get("agent")?,
        model: row.try_get("model")?,
        feature: row.try_get("feature")?,
        funding: funding_from(&funding, get_opt_u(row, "grant_id")?)?,
        amount: get_c(row, "amount")?,
        records: get_u(row, "records")?,
        input_tokens: get_u(row, "input_tokens")?,
        output_tokens: get_u(row, "output_tokens")?,
        outcomes: get_u(row, "outcomes")?,
        balance_before: get_c(row, "balance_before")?,
        balance_after: get_c(row, "balance_after")?,
        at: get_u(row, "at")?,
    })
}

pub(super) fn statement_row_from(r: &PgRow) -> Result<StatementRow, LedgerError> {
    let funding: String = r.try_get("funding")?;
    Ok(StatementRow {
        agent: r.try_get("agent")?,
        model: r.try_get("model")?,
        feature: r.try_get("feature")?,
        funding: funding_from(&funding, get_opt_u(r, "grant_id")?)?,
        amount: get_c(r, "amount")?,
        records: get_u(r, "records")?,
        input_tokens: get_u(r, "input_tokens")?,
        output_tokens: get_u(r, "output_tokens")?,
        outcomes: get_u(r, "outcomes")?,
    })
}

pub(super) fn price_book_from(row: &PgRow) -> Result<PriceBookRow, LedgerError> {
    Ok(PriceBookRow {
        tenant: tenant_of(row)?,
        version: get_u(row, "version")?,
        json: row.try_get("book")?,
        created_at: get_u(row, "created_at")?,
    })
}
