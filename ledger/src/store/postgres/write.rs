//! The write half of a PostgreSQL transaction: one multi-row statement per table
//! (`INSERT ... SELECT FROM UNNEST(arrays)`), so writing a group commit of many batches
//! costs a few round trips whatever its size.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::PgConnection;
use sqlx::Row;
use tollgate_core::Credits;

use super::{sqlstate, write_error};
use crate::audit::AuditRecord;
use crate::clock::Timestamp;
use crate::error::LedgerError;
use crate::grant::Grant;
use crate::grant::ResetPeriod;
use crate::hold::Funding;
use crate::hold::Hold;
use crate::ids::TenantId;
use crate::store::rows::{TASK_COLS, c, i, oi, task_values, to_json};
use crate::store::{BatchRow, PriceBookRow, WalletRow};
use crate::task::TaskRow;
use crate::usage::Posting;

/// Wallet columns after `tenant`, in table order.
const WALLET_COLS: &str = "config, created_at, next_grant_id, next_hold_id, granted, available, held, consumed, expired, \
     plan_held, plan_consumed, overrun, period_start, period_spent, period_metered, period_request_milli, \
     price_book_version, alert_state, audit_seq, audit_hash";

const WALLET_ARRAYS: &str = "$1::text[], $2::text[], $3::int8[], $4::int8[], $5::int8[], $6::int8[], $7::int8[], $8::int8[], \
     $9::int8[], $10::int8[], $11::int8[], $12::int8[], $13::int8[], $14::int8[], $15::int8[], $16::int8[], $17::int8[], \
     $18::int8[], $19::text[], $20::int8[], $21::text[]";

/// Number of `BIGINT NOT NULL` wallet columns from `created_at` to `period_request_milli`.
const WALLET_INTS: usize = 15;

struct WalletCols {
    tenant: Vec<String>,
    config: Vec<String>,
    ints: [Vec<i64>; WALLET_INTS],
    price_book_version: Vec<Option<i64>>,
    alert_state: Vec<String>,
    audit_seq: Vec<i64>,
    audit_hash: Vec<String>,
}

impl WalletCols {
    fn new(ws: &[WalletRow]) -> Result<WalletCols, LedgerError> {
        let mut cols = WalletCols {
            tenant: Vec::with_capacity(ws.len()),
            config: Vec::with_capacity(ws.len()),
            ints: std::array::from_fn(|_| Vec::with_capacity(ws.len())),
            price_book_version: Vec::with_capacity(ws.len()),
            alert_state: Vec::with_capacity(ws.len()),
            audit_seq: Vec::with_capacity(ws.len()),
            audit_hash: Vec::with_capacity(ws.len()),
        };
        for w in ws {
            let t = &w.totals;
            let ints = [
                i(w.created_at, "time")?,
                i(w.next_grant_id, "grant id")?,
                i(w.next_hold_id, "hold id")?,
                c(t.granted, "granted")?,
                c(t.available, "available")?,
                c(t.held, "held")?,
                c(t.consumed, "consumed")?,
                c(t.expired, "expired")?,
                c(t.plan_held, "plan held")?,
                c(t.plan_consumed, "plan consumed")?,
                c(t.overrun, "overrun")?,
                i(w.period_start, "time")?,
                c(w.period_spent, "period spent")?,
                c(w.period_usage.metered, "period metered")?,
                i(w.period_usage.request_units_milli, "period requests")?,
            ];
            cols.tenant.push(w.tenant.as_str().to_owned());
            cols.config.push(to_json(&w.config)?);
            for (col, v) in cols.ints.iter_mut().zip(ints) {
                col.push(v);
            }
            cols.price_book_version
                .push(oi(w.price_book_version, "price book version")?);
            cols.alert_state.push(to_json(&w.alert_state)?);
            cols.audit_seq.push(i(w.audit_head.seq, "audit seq")?);
            cols.audit_hash.push(hex::encode(w.audit_head.hash));
        }
        Ok(cols)
    }

    fn bind<'q>(
        self,
        mut q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        q = q.bind(self.tenant).bind(self.config);
        for col in self.ints {
            q = q.bind(col);
        }
        q.bind(self.price_book_version)
            .bind(self.alert_state)
            .bind(self.audit_seq)
            .bind(self.audit_hash)
    }
}

/// Insert new wallets. A wallet that exists already (another replica created the tenant
/// concurrently) is [`LedgerError::TenantExists`].
pub(super) async fn new_wallets(
    conn: &mut PgConnection,
    ws: &[WalletRow],
) -> Result<(), LedgerError> {
    if ws.is_empty() {
        return Ok(());
    }
    // Built from constants only.
    let sql = format!(
        "INSERT INTO wallets (tenant, {WALLET_COLS}) SELECT * FROM UNNEST({WALLET_ARRAYS})"
    );
    let q = WalletCols::new(ws)?.bind(sqlx::query(sqlx::AssertSqlSafe(sql)));
    match q.execute(&mut *conn).await {
        Ok(_) => Ok(()),
        Err(e) if sqlstate(&e).as_deref() == Some("23505") => {
            Err(LedgerError::TenantExists(ws[0].tenant.clone()))
        }
        Err(e) => Err(write_error(e, "writing wallets")),
    }
}

/// Update locked wallets.
pub(super) async fn wallets(conn: &mut PgConnection, ws: &[WalletRow]) -> Result<(), LedgerError> {
    if ws.is_empty() {
        return Ok(());
    }
    let set = WALLET_COLS
        .split(',')
        .map(|c| format!("{0} = v.{0}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ");
    // Built from constants only.
    let sql = format!(
        "UPDATE wallets AS w SET {set} FROM UNNEST({WALLET_ARRAYS}) AS v(tenant, {WALLET_COLS}) WHERE w.tenant = v.tenant"
    );
    let n = WalletCols::new(ws)?
        .bind(sqlx::query(sqlx::AssertSqlSafe(sql)))
        .execute(&mut *conn)
        .await
        .map_err(|e| write_error(e, "writing wallets"))?
        .rows_affected();
    let distinct = ws.iter().map(|w| &w.tenant).collect::<BTreeSet<_>>().len();
    if n != distinct as u64 {
        return Err(LedgerError::store(format!(
            "{n} of {distinct} wallet rows were written: a wallet vanished during the transaction"
        )));
    }
    Ok(())
}

/// The last version of each row by key: one statement must not upsert a row twice.
fn last_by_key<T, K: Ord>(rows: &[T], key: impl Fn(&T) -> K) -> Vec<&T> {
    let mut m: BTreeMap<K, &T> = BTreeMap::new();
    for r in rows {
        m.insert(key(r), r);
    }
    m.into_values().collect()
}

pub(super) async fn grants(conn: &mut PgConnection, gs: &[Grant]) -> Result<(), LedgerError> {
    if gs.is_empty() {
        return Ok(());
    }
    let gs = last_by_key(gs, |g| (g.tenant.clone(), g.id));
    let n = gs.len();
    let mut tenant = Vec::with_capacity(n);
    let mut kind = Vec::with_capacity(n);
    let mut reset = Vec::with_capacity(n);
    let mut reference = Vec::with_capacity(n);
    let mut expires = Vec::with_capacity(n);
    let mut next_reset = Vec::with_capacity(n);
    let mut closed: Vec<i16> = Vec::with_capacity(n);
    // id, amount, priority, starts_at, created_at, period, period_start, granted,
    // available, held, consumed, expired
    let mut ints: [Vec<i64>; 12] = std::array::from_fn(|_| Vec::with_capacity(n));
    for g in gs {
        tenant.push(g.tenant.as_str().to_owned());
        kind.push(g.kind.as_str());
        reset.push(g.reset.map(ResetPeriod::as_str));
        reference.push(g.reference.clone());
        expires.push(oi(g.expires_at, "time")?);
        next_reset.push(oi(g.next_reset_at, "time")?);
        closed.push(i16::from(g.closed));
        let v = [
            i(g.id.0, "grant id")?,
            c(g.amount, "amount")?,
            i64::from(g.priority),
            i(g.starts_at, "time")?,
            i(g.created_at, "time")?,
            i64::from(g.period),
            i(g.period_start, "time")?,
            c(g.granted, "granted")?,
            c(g.available, "available")?,
            c(g.held, "held")?,
            c(g.consumed, "consumed")?,
            c(g.expired, "expired")?,
        ];
        for (col, x) in ints.iter_mut().zip(v) {
            col.push(x);
        }
    }
    let [
        id,
        amount,
        priority,
        starts,
        created,
        period,
        period_start,
        granted,
        available,
        held,
        consumed,
        expired,
    ] = ints;
    sqlx::query(
        "INSERT INTO grants (tenant, id, kind, amount, priority, starts_at, expires_at, reset_period, reference, created_at, \
         period, period_start, next_reset_at, granted, available, held, consumed, expired, closed) \
         SELECT * FROM UNNEST($1::text[], $2::int8[], $3::text[], $4::int8[], $5::int8[], $6::int8[], $7::int8[], $8::text[], \
         $9::text[], $10::int8[], $11::int8[], $12::int8[], $13::int8[], $14::int8[], $15::int8[], $16::int8[], $17::int8[], \
         $18::int8[], $19::int2[]) \
         ON CONFLICT (tenant, id) DO UPDATE SET period = excluded.period, period_start = excluded.period_start, \
         next_reset_at = excluded.next_reset_at, granted = excluded.granted, available = excluded.available, \
         held = excluded.held, consumed = excluded.consumed, expired = excluded.expired, closed = excluded.closed",
    )
    .bind(tenant)
    .bind(id)
    .bind(kind)
    .bind(amount)
    .bind(priority)
    .bind(starts)
    .bind(expires)
    .bind(reset)
    .bind(reference)
    .bind(created)
    .bind(period)
    .bind(period_start)
    .bind(next_reset)
    .bind(granted)
    .bind(available)
    .bind(held)
    .bind(consumed)
    .bind(expired)
    .bind(closed)
    .execute(&mut *conn)
    .await
    .map_err(|e| write_error(e, "writing grants"))?;
    Ok(())
}

pub(super) async fn holds(conn: &mut PgConnection, hs: &[Hold]) -> Result<(), LedgerError> {
    if hs.is_empty() {
        return Ok(());
    }
    let hs = last_by_key(hs, |h| (h.tenant.clone(), h.id));
    let n = hs.len();
    let mut tenant = Vec::with_capacity(n);
    let mut owner = Vec::with_capacity(n);
    let mut status = Vec::with_capacity(n);
    let mut closed_at = Vec::with_capacity(n);
    let mut parts = Vec::with_capacity(n);
    // id, amount, drawn, released, created_at, expires_at
    let mut ints: [Vec<i64>; 6] = std::array::from_fn(|_| Vec::with_capacity(n));
    for h in hs {
        tenant.push(h.tenant.as_str().to_owned());
        owner.push(h.owner.clone());
        status.push(h.status.as_str());
        closed_at.push(oi(h.closed_at, "time")?);
        parts.push(to_json(&h.parts)?);
        let v = [
            i(h.id.0, "hold id")?,
            c(h.amount, "amount")?,
            c(h.drawn, "drawn")?,
            c(h.released, "released")?,
            i(h.created_at, "time")?,
            i(h.expires_at, "time")?,
        ];
        for (col, x) in ints.iter_mut().zip(v) {
            col.push(x);
        }
    }
    let [id, amount, drawn, released, created, expires] = ints;
    sqlx::query(
        "INSERT INTO holds (tenant, id, owner, amount, drawn, released, status, created_at, expires_at, closed_at, parts) \
         SELECT * FROM UNNEST($1::text[], $2::int8[], $3::text[], $4::int8[], $5::int8[], $6::int8[], $7::text[], \
         $8::int8[], $9::int8[], $10::int8[], $11::text[]) \
         ON CONFLICT (tenant, id) DO UPDATE SET drawn = excluded.drawn, released = excluded.released, \
         status = excluded.status, closed_at = excluded.closed_at, parts = excluded.parts",
    )
    .bind(tenant)
    .bind(id)
    .bind(owner)
    .bind(amount)
    .bind(drawn)
    .bind(released)
    .bind(status)
    .bind(created)
    .bind(expires)
    .bind(closed_at)
    .bind(parts)
    .execute(&mut *conn)
    .await
    .map_err(|e| write_error(e, "writing holds"))?;
    Ok(())
}

pub(super) async fn postings(conn: &mut PgConnection, ps: &[Posting]) -> Result<(), LedgerError> {
    if ps.is_empty() {
        return Ok(());
    }
    let n = ps.len();
    let mut tenant = Vec::with_capacity(n);
    let mut sidecar = Vec::with_capacity(n);
    let mut seq = Vec::with_capacity(n);
    let mut hold = Vec::with_capacity(n);
    let mut agent = Vec::with_capacity(n);
    let mut instance = Vec::with_capacity(n);
    let mut model = Vec::with_capacity(n);
    let mut feature = Vec::with_capacity(n);
    let mut task = Vec::with_capacity(n);
    let mut funding = Vec::with_capacity(n);
    let mut grant = Vec::with_capacity(n);
    // at, amount, records, input_tokens, output_tokens, outcomes, work_units,
    // request_units_milli, balance_before, balance_after
    let mut ints: [Vec<i64>; 10] = std::array::from_fn(|_| Vec::with_capacity(n));
    for p in ps {
        let (fk, gid) = Funding::to_parts(p.funding);
        tenant.push(p.tenant.as_str());
        sidecar.push(p.batch.as_ref().map(|b| b.sidecar_id.as_str()));
        seq.push(p.batch.as_ref().map(|b| i(b.seq, "seq")).transpose()?);
        hold.push(p.hold.map(|h| i(h.0, "hold id")).transpose()?);
        agent.push(p.agent.as_str());
        instance.push(p.agent_instance.as_str());
        model.push(p.model.as_str());
        feature.push(p.feature.as_str());
        task.push(p.task.as_str());
        funding.push(fk);
        grant.push(oi(gid, "grant id")?);
        let v = [
            i(p.at, "time")?,
            c(p.amount, "amount")?,
            i(p.records, "records")?,
            i(p.input_tokens, "tokens")?,
            i(p.output_tokens, "tokens")?,
            i(p.outcomes, "outcomes")?,
            i(p.work_units, "work units")?,
            i(p.request_units_milli, "request units")?,
            c(p.balance_before, "balance")?,
            c(p.balance_after, "balance")?,
        ];
        for (col, x) in ints.iter_mut().zip(v) {
            col.push(x);
        }
    }
    let [
        at,
        amount,
        records,
        input,
        output,
        outcomes,
        work_units,
        units,
        before,
        after,
    ] = ints;
    // WITH ORDINALITY + ORDER BY: identities are assigned in the order given.
    sqlx::query(
        "INSERT INTO postings (tenant, at, batch_sidecar, batch_seq, hold_id, agent, agent_instance, model, feature, task, \
         funding, grant_id, amount, records, input_tokens, output_tokens, outcomes, work_units, request_units_milli, \
         balance_before, balance_after) \
         SELECT tenant, at, batch_sidecar, batch_seq, hold_id, agent, agent_instance, model, feature, task, \
         funding, grant_id, amount, records, input_tokens, output_tokens, outcomes, work_units, request_units_milli, \
         balance_before, balance_after \
         FROM UNNEST($1::text[], $2::int8[], $3::text[], $4::int8[], $5::int8[], $6::text[], $7::text[], $8::text[], \
         $9::text[], $10::text[], $11::text[], $12::int8[], $13::int8[], $14::int8[], $15::int8[], $16::int8[], $17::int8[], \
         $18::int8[], $19::int8[], $20::int8[], $21::int8[]) \
         WITH ORDINALITY AS v(tenant, at, batch_sidecar, batch_seq, hold_id, agent, agent_instance, model, feature, task, \
         funding, grant_id, amount, records, input_tokens, output_tokens, outcomes, work_units, request_units_milli, \
         balance_before, balance_after, ord) ORDER BY ord",
    )
    .bind(tenant)
    .bind(at)
    .bind(sidecar)
    .bind(seq)
    .bind(hold)
    .bind(agent)
    .bind(instance)
    .bind(model)
    .bind(feature)
    .bind(task)
    .bind(funding)
    .bind(grant)
    .bind(amount)
    .bind(records)
    .bind(input)
    .bind(output)
    .bind(outcomes)
    .bind(work_units)
    .bind(units)
    .bind(before)
    .bind(after)
    .execute(&mut *conn)
    .await
    .map_err(|e| write_error(e, "writing postings"))?;
    Ok(())
}

/// Insert batch rows. A key already committed by another writer is refused by the
/// primary key: harmless for a batch that posted nothing, an abort (so nothing is posted
/// twice) for one that did.
pub(super) async fn batches(conn: &mut PgConnection, bs: &[BatchRow]) -> Result<(), LedgerError> {
    if bs.is_empty() {
        return Ok(());
    }
    let n = bs.len();
    let mut sidecar = Vec::with_capacity(n);
    let mut seq = Vec::with_capacity(n);
    let mut posted = Vec::with_capacity(n);
    let mut records = Vec::with_capacity(n);
    let mut outcome = Vec::with_capacity(n);
    let mut digest = Vec::with_capacity(n);
    let mut signature = Vec::with_capacity(n);
    for b in bs {
        sidecar.push(b.outcome.key.sidecar_id.as_str());
        seq.push(i(b.outcome.key.seq, "batch seq")?);
        posted.push(i(b.outcome.posted_at, "time")?);
        records.push(i(b.outcome.records, "records")?);
        outcome.push(to_json(&b.outcome)?);
        digest.push(b.digest.as_deref());
        signature.push(b.signature.as_deref());
    }
    let rows = sqlx::query(
        "INSERT INTO batches (sidecar_id, seq, posted_at, records, outcome, digest, signature) \
         SELECT * FROM UNNEST($1::text[], $2::int8[], $3::int8[], $4::int8[], $5::text[], $6::text[], $7::text[]) \
         ON CONFLICT (sidecar_id, seq) DO NOTHING RETURNING sidecar_id, seq",
    )
    .bind(sidecar)
    .bind(seq)
    .bind(posted)
    .bind(records)
    .bind(outcome)
    .bind(digest)
    .bind(signature)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| write_error(e, "writing batches"))?;
    if rows.len() == n {
        return Ok(());
    }
    let mut inserted = BTreeSet::new();
    for r in &rows {
        let s: String = r.try_get("sidecar_id")?;
        let q: i64 = r.try_get("seq")?;
        inserted.insert((s, q));
    }
    for b in bs {
        let k = (
            b.outcome.key.sidecar_id.clone(),
            i(b.outcome.key.seq, "seq")?,
        );
        if !inserted.contains(&k) && !b.outcome.tenants.is_empty() {
            return Err(LedgerError::store(format!(
                "{} was posted concurrently by another writer; nothing was written: \
                 retry, and it will be acknowledged as a duplicate",
                b.outcome.key
            )));
        }
    }
    Ok(())
}

pub(super) async fn audit(conn: &mut PgConnection, rs: &[AuditRecord]) -> Result<(), LedgerError> {
    if rs.is_empty() {
        return Ok(());
    }
    let n = rs.len();
    let mut tenant = Vec::with_capacity(n);
    let mut seq = Vec::with_capacity(n);
    let mut at = Vec::with_capacity(n);
    let mut prev = Vec::with_capacity(n);
    let mut body = Vec::with_capacity(n);
    let mut hash = Vec::with_capacity(n);
    let mut sig = Vec::with_capacity(n);
    for a in rs {
        tenant.push(a.tenant.as_str());
        seq.push(i(a.seq, "audit seq")?);
        at.push(i(a.at, "time")?);
        prev.push(a.prev_hash.as_str());
        body.push(a.body.as_str());
        hash.push(a.hash.as_str());
        sig.push(a.signature.as_str());
    }
    sqlx::query(
        "INSERT INTO audit_records (tenant, seq, at, prev_hash, body, hash, signature) \
         SELECT * FROM UNNEST($1::text[], $2::int8[], $3::int8[], $4::text[], $5::text[], $6::text[], $7::text[])",
    )
    .bind(tenant)
    .bind(seq)
    .bind(at)
    .bind(prev)
    .bind(body)
    .bind(hash)
    .bind(sig)
    .execute(&mut *conn)
    .await
    .map_err(|e| write_error(e, "writing audit_records"))?;
    Ok(())
}

pub(super) async fn spend(
    conn: &mut PgConnection,
    buckets: &[(TenantId, Timestamp, Credits)],
) -> Result<(), LedgerError> {
    if buckets.is_empty() {
        return Ok(());
    }
    // Sum repeats first: one statement must not upsert a row twice.
    let mut sums: BTreeMap<(&str, Timestamp), u64> = BTreeMap::new();
    for (t, minute, amount) in buckets {
        let e = sums.entry((t.as_str(), *minute)).or_default();
        *e = e.checked_add(amount.micros()).ok_or_else(|| {
            LedgerError::Overflow(format!("spend of {t} in minute {minute} overflows"))
        })?;
    }
    let mut tenant = Vec::with_capacity(sums.len());
    let mut minute = Vec::with_capacity(sums.len());
    let mut amount = Vec::with_capacity(sums.len());
    for ((t, m), a) in sums {
        tenant.push(t);
        minute.push(i(m, "time")?);
        amount.push(i(a, "amount")?);
    }
    sqlx::query(
        "INSERT INTO spend_minutes (tenant, minute, amount) \
         SELECT * FROM UNNEST($1::text[], $2::int8[], $3::int8[]) \
         ON CONFLICT (tenant, minute) DO UPDATE SET amount = spend_minutes.amount + excluded.amount",
    )
    .bind(tenant)
    .bind(minute)
    .bind(amount)
    .execute(&mut *conn)
    .await
    .map_err(|e| write_error(e, "writing spend_minutes"))?;
    Ok(())
}

pub(super) async fn price_books(
    conn: &mut PgConnection,
    ps: &[PriceBookRow],
) -> Result<(), LedgerError> {
    if ps.is_empty() {
        return Ok(());
    }
    let mut tenant = Vec::with_capacity(ps.len());
    let mut version = Vec::with_capacity(ps.len());
    let mut book = Vec::with_capacity(ps.len());
    let mut created = Vec::with_capacity(ps.len());
    for p in ps {
        tenant.push(p.tenant.as_str());
        version.push(i(p.version, "price book version")?);
        book.push(p.json.as_str());
        created.push(i(p.created_at, "time")?);
    }
    sqlx::query(
        "INSERT INTO price_books (tenant, version, book, created_at) \
         SELECT * FROM UNNEST($1::text[], $2::int8[], $3::text[], $4::int8[])",
    )
    .bind(tenant)
    .bind(version)
    .bind(book)
    .bind(created)
    .execute(&mut *conn)
    .await
    .map_err(|e| write_error(e, "writing price_books"))?;
    Ok(())
}

/// Task rows, inserted or replaced whole (the engine computed them under the wallet
/// locks), in one statement.
pub(super) async fn tasks(conn: &mut PgConnection, ts: &[TaskRow]) -> Result<(), LedgerError> {
    if ts.is_empty() {
        return Ok(());
    }
    let mut tenant = Vec::with_capacity(ts.len());
    let mut task = Vec::with_capacity(ts.len());
    let mut cols: [Vec<Option<i64>>; TASK_COLS.len()] =
        std::array::from_fn(|_| Vec::with_capacity(ts.len()));
    for t in ts {
        tenant.push(t.tenant.as_str());
        task.push(t.task.as_str());
        for (col, v) in cols.iter_mut().zip(task_values(t)?) {
            col.push(v);
        }
    }
    let names = TASK_COLS.join(", ");
    let arrays: Vec<String> = (0..TASK_COLS.len())
        .map(|k| format!("${}::int8[]", k + 3))
        .collect();
    let set: Vec<String> = TASK_COLS
        .iter()
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    let sql = format!(
        "INSERT INTO tasks (tenant, task, {names}) SELECT * FROM UNNEST($1::text[], $2::text[], {}) \
         ON CONFLICT (tenant, task) DO UPDATE SET {}",
        arrays.join(", "),
        set.join(", ")
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(tenant)
        .bind(task);
    for col in cols {
        q = q.bind(col);
    }
    q.execute(&mut *conn)
        .await
        .map_err(|e| write_error(e, "writing tasks"))?;
    Ok(())
}
