//! The audit chain against tampering: editing, deleting or reordering one record in the
//! SQLite database makes verification fail and name the record; a tenant verifies its
//! own export offline with the public key.

mod common;

use common::*;
use tollgate_ledger::audit::{
    TablesChecked, VerifyOptions, record_hash, verify_with, write_export,
};
use tollgate_ledger::{
    AuditSigner, GrantKind, GrantSpec, HoldRequest, TenantConfig, TenantId, VerifyFailure,
    parse_public_key, verify,
};

/// A ledger with some history for two tenants: acme has 6 records, other has 3.
async fn history() -> (Env, TenantId) {
    let e = env().await;
    let t = tenant("acme");
    let o = tenant("other");
    for x in [&t, &o] {
        e.ledger
            .create_tenant(x, TenantConfig::default())
            .await
            .unwrap();
        e.ledger
            .grant(x, GrantSpec::new(GrantKind::Purchased, credits(100)))
            .await
            .unwrap();
    }
    let h = e
        .ledger
        .hold(
            &t,
            HoldRequest {
                owner: "sc".into(),
                amount: credits(10),
                min_amount: credits(10),
                ttl_secs: 60,
            },
        )
        .await
        .unwrap();
    e.ledger
        .post_batch(&batch(
            "sc",
            1,
            vec![
                record(&t, "m", 1, 1, credits(4)),
                record(&o, "m", 1, 1, credits(2)),
            ],
        ))
        .await
        .unwrap();
    e.ledger.void_hold(&t, h.id).await.unwrap();
    e.ledger
        .grant(&t, GrantSpec::new(GrantKind::Promotional, credits(7)))
        .await
        .unwrap();
    let rep = e.ledger.verify_audit(None).await.unwrap().unwrap();
    assert_eq!(rep.tenants.len(), 2);
    assert_eq!(rep.tenants[0].1, 6);
    assert_eq!(rep.tenants[1].1, 3);
    (e, t)
}

async fn exec(e: &Env, sql: &'static str) {
    sqlx::query(sql).execute(e.store.pool()).await.unwrap();
}

#[tokio::test]
async fn edited_record_fails_and_is_named() {
    let (e, _) = history().await;
    // Record 2 of acme is its grant of 100 credits: make it 900.
    exec(
        &e,
        "UPDATE audit_records SET body = replace(body, '\"amount\":100000000', '\"amount\":900000000') WHERE tenant = 'acme' AND seq = 2",
    )
    .await;
    let err = e.ledger.verify_audit(None).await.unwrap().unwrap_err();
    assert_eq!(err.seq, Some(2), "{err}");
    assert_eq!(err.tenant, Some(tenant("acme")));
    assert_eq!(err.failure, VerifyFailure::HashMismatch);
    assert_eq!(err.line, 3, "header, acme #1, acme #2");
    assert!(err.to_string().contains("record seq 2"), "{err}");
    // The same from an exported file, verified offline.
    let mut out = Vec::new();
    e.ledger.export_audit(None, &mut out).await.unwrap();
    let key = parse_public_key(&signer().public_key_hex()).unwrap();
    let offline = verify(out.as_slice(), &key).unwrap_err();
    assert_eq!(offline, err);
}

#[tokio::test]
async fn edited_record_with_recomputed_hash_fails_its_signature() {
    let (e, _) = history().await;
    let (prev, at, body): (String, i64, String) = sqlx::query_as(
        "SELECT prev_hash, at, body FROM audit_records WHERE tenant = 'acme' AND seq = 2",
    )
    .fetch_one(e.store.pool())
    .await
    .unwrap();
    let body = body.replace("\"amount\":100000000", "\"amount\":900000000");
    let prev: [u8; 32] = hex::decode(prev).unwrap().try_into().unwrap();
    let h = record_hash("acme", 2, at as u64, &prev, body.as_bytes());
    sqlx::query("UPDATE audit_records SET body = ?, hash = ? WHERE tenant = 'acme' AND seq = 2")
        .bind(body)
        .bind(hex::encode(h))
        .execute(e.store.pool())
        .await
        .unwrap();
    let err = e.ledger.verify_audit(None).await.unwrap().unwrap_err();
    assert_eq!(err.seq, Some(2), "{err}");
    assert_eq!(err.failure, VerifyFailure::BadSignature);
}

#[tokio::test]
async fn deleted_record_fails_and_is_named() {
    let (e, _) = history().await;
    exec(
        &e,
        "DELETE FROM audit_records WHERE tenant = 'acme' AND seq = 3",
    )
    .await;
    let err = e.ledger.verify_audit(None).await.unwrap().unwrap_err();
    assert_eq!(err.tenant, Some(tenant("acme")));
    assert_eq!(err.seq, Some(4), "{err}");
    assert_eq!(
        err.failure,
        VerifyFailure::SeqGap {
            expected: 3,
            found: 4
        }
    );
}

#[tokio::test]
async fn deleted_last_record_fails_against_the_signed_head() {
    let (e, _) = history().await;
    exec(
        &e,
        "DELETE FROM audit_records WHERE tenant = 'acme' AND seq = 6",
    )
    .await;
    let err = e.ledger.verify_audit(None).await.unwrap().unwrap_err();
    assert_eq!(err.seq, Some(6), "names the missing record: {err}");
    assert_eq!(
        err.failure,
        VerifyFailure::HeadMismatch {
            head_seq: 6,
            last_seq: 5
        }
    );
}

#[tokio::test]
async fn reordered_records_fail_and_are_named() {
    let (e, _) = history().await;
    exec(
        &e,
        "UPDATE audit_records SET seq = -1 WHERE tenant = 'acme' AND seq = 3",
    )
    .await;
    exec(
        &e,
        "UPDATE audit_records SET seq = 3 WHERE tenant = 'acme' AND seq = 4",
    )
    .await;
    exec(
        &e,
        "UPDATE audit_records SET seq = 4 WHERE tenant = 'acme' AND seq = -1",
    )
    .await;
    let err = e.ledger.verify_audit(None).await.unwrap().unwrap_err();
    assert_eq!(err.seq, Some(3), "{err}");
    assert_eq!(err.failure, VerifyFailure::BrokenLink);
}

#[tokio::test]
async fn tenant_verifies_its_own_export_offline() {
    let (e, t) = history().await;
    let mut out = Vec::new();
    e.ledger
        .export_audit(Some(std::slice::from_ref(&t)), &mut out)
        .await
        .unwrap();
    let text = String::from_utf8(out.clone()).unwrap();
    assert!(
        !text.contains("\"tenant\":\"other\""),
        "only acme's records"
    );
    // The tenant has the export and the authority's public key (hex), nothing else.
    let key = parse_public_key(&signer().public_key_hex()).unwrap();
    let rep = verify(out.as_slice(), &key).unwrap();
    assert_eq!(rep.tenants, vec![(t.clone(), 6, 6)]);
    // Another key does not verify it.
    let other = AuditSigner::from_seed(&[9u8; 32]).public_key();
    let err = verify(out.as_slice(), &other).unwrap_err();
    assert_eq!(err.failure, VerifyFailure::BadSignature);
    assert_eq!(err.seq, Some(1));
    // Lines swapped in the file: named by line and sequence number.
    let mut lines: Vec<&str> = text.lines().collect();
    lines.swap(2, 3);
    let swapped = lines.join("\n");
    let err = verify(swapped.as_bytes(), &key).unwrap_err();
    assert_eq!(err.line, 3);
    assert_eq!(err.seq, Some(3));
    assert_eq!(
        err.failure,
        VerifyFailure::SeqGap {
            expected: 2,
            found: 3
        }
    );
    // Truncated (head line dropped): refused.
    let truncated: String = text.lines().take(4).collect::<Vec<_>>().join("\n");
    let err = verify(truncated.as_bytes(), &key).unwrap_err();
    assert_eq!(err.failure, VerifyFailure::MissingHead);
    // Garbage is a typed error, not a panic.
    assert!(verify(&b"not json\n"[..], &key).is_err());
    assert!(verify(&b""[..], &key).is_err());
    // An export of nothing proves nothing: refused, not "OK: 0 records".
    let mut empty = Vec::new();
    write_export(&mut empty, &signer(), 0, &[]).unwrap();
    let err = verify(empty.as_slice(), &key).unwrap_err();
    assert_eq!(err.failure, VerifyFailure::NoRecords, "{err}");
}

// ----- the live tables against the chain (issue 15) -----

fn table(table: &str, id: impl ToString, column: &str, chain: &str, found: &str) -> VerifyFailure {
    VerifyFailure::TableMismatch(Box::new(tollgate_ledger::audit::RowMismatch {
        table: table.into(),
        id: id.to_string(),
        column: column.into(),
        chain: chain.into(),
        found: found.into(),
    }))
}

async fn first_posting_id(e: &Env, tenant: &str) -> i64 {
    sqlx::query_scalar("SELECT rowid FROM postings WHERE tenant = ? ORDER BY rowid LIMIT 1")
        .bind(tenant)
        .fetch_one(e.store.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn untouched_tables_verify_and_are_counted() {
    let (e, _) = history().await;
    let rep = e.ledger.verify_audit(None).await.unwrap().unwrap();
    assert_eq!(
        rep.tables,
        Some(TablesChecked {
            postings: 2,
            grants: 3,
            wallets: 2
        })
    );
}

/// The tester's statement: every posting 5 credits dearer. The chain is intact; the
/// first posting row of the first tenant is named, with both values.
#[tokio::test]
async fn a_posting_amount_changed_in_the_table_fails_naming_the_row() {
    let (e, _) = history().await;
    let id = first_posting_id(&e, "acme").await;
    exec(&e, "UPDATE postings SET amount = amount + 5000000").await;
    let err = e.ledger.verify_audit(None).await.unwrap().unwrap_err();
    assert_eq!(err.tenant, Some(tenant("acme")), "{err}");
    assert_eq!(err.seq, Some(4), "the usage record listing it: {err}");
    assert_eq!(
        err.failure,
        table("postings", id, "amount", "4.000000", "9.000000")
    );
    let text = err.to_string();
    assert!(
        text.contains(&format!("table postings, row {id}, column amount"))
            && text.contains("the audit chain says 4.000000, the table has 9.000000"),
        "{text}"
    );
    // Only the other tenant's row changed: that one is named.
    exec(
        &e,
        "UPDATE postings SET amount = amount - 5000000 WHERE tenant = 'acme'",
    )
    .await;
    let other_id = first_posting_id(&e, "other").await;
    let err = e.ledger.verify_audit(None).await.unwrap().unwrap_err();
    assert_eq!(err.tenant, Some(tenant("other")), "{err}");
    assert_eq!(
        err.failure,
        table("postings", other_id, "amount", "2.000000", "7.000000")
    );
    exec(
        &e,
        "UPDATE postings SET amount = amount - 5000000 WHERE tenant = 'other'",
    )
    .await;
    e.ledger.verify_audit(None).await.unwrap().unwrap();
}

#[tokio::test]
async fn posting_rows_added_deleted_or_moved_fail() {
    let (e, _) = history().await;
    let id = first_posting_id(&e, "acme").await;
    // Moved to another grant (the statement would bill another source).
    exec(&e, "UPDATE postings SET grant_id = 2 WHERE tenant = 'acme'").await;
    let err = e.ledger.verify_audit(None).await.unwrap().unwrap_err();
    assert_eq!(
        err.failure,
        table("postings", id, "funding", "grant 1", "grant 2")
    );
    exec(&e, "UPDATE postings SET grant_id = 1 WHERE tenant = 'acme'").await;
    // A row no record lists.
    exec(
        &e,
        "INSERT INTO postings (tenant, at, batch_sidecar, batch_seq, hold_id, agent, model, feature, funding, grant_id, \
         amount, records, input_tokens, output_tokens, outcomes, balance_before, balance_after) \
         SELECT tenant, at, batch_sidecar, batch_seq, hold_id, agent, model, feature, funding, grant_id, \
         amount, records, input_tokens, output_tokens, outcomes, balance_before, balance_after FROM postings WHERE tenant = 'acme'",
    )
    .await;
    let extra: i64 = sqlx::query_scalar("SELECT MAX(rowid) FROM postings")
        .fetch_one(e.store.pool())
        .await
        .unwrap();
    let err = e.ledger.verify_audit(None).await.unwrap().unwrap_err();
    assert_eq!(
        err.failure,
        table(
            "postings",
            extra,
            "row",
            "no posting after record 6",
            "a row of 4.000000"
        )
    );
    assert_eq!(err.tenant, Some(tenant("acme")));
    // Rows deleted: the chain's posting has no row.
    exec(&e, "DELETE FROM postings WHERE tenant = 'acme'").await;
    let err = e.ledger.verify_audit(None).await.unwrap().unwrap_err();
    assert_eq!(
        err.failure,
        table(
            "postings",
            "-",
            "row",
            "a posting of batch sc#1 for 4.000000",
            "no such row"
        ),
        "{err}"
    );
    assert_eq!(err.seq, Some(4));
}

/// The tester's other statement: credit created in every grant row. The wallet row and
/// the chain agree; the grant rows do not.
#[tokio::test]
async fn credit_created_in_the_grants_table_fails_naming_the_grant() {
    let (e, _) = history().await;
    exec(&e, "UPDATE grants SET available = available + 100000000").await;
    let err = e.ledger.verify_audit(None).await.unwrap().unwrap_err();
    assert_eq!(err.tenant, Some(tenant("acme")), "{err}");
    assert_eq!(err.seq, Some(2), "acme's grant 1 record: {err}");
    // Granted 100, consumed 4 by the batch: the chain leaves 96 available.
    assert_eq!(
        err.failure,
        table("grants", 1, "available", "96.000000", "196.000000")
    );
    exec(&e, "UPDATE grants SET available = available - 100000000").await;
    e.ledger.verify_audit(None).await.unwrap().unwrap();
    // Granted raised with available, so the row balances: `granted` is what differs.
    exec(
        &e,
        "UPDATE grants SET granted = granted + 1000000, available = available + 1000000 WHERE tenant = 'acme' AND id = 2",
    )
    .await;
    let err = e.ledger.verify_audit(None).await.unwrap().unwrap_err();
    assert_eq!(
        err.failure,
        table("grants", 2, "granted", "7.000000", "8.000000")
    );
    assert_eq!(err.seq, Some(6));
    exec(
        &e,
        "UPDATE grants SET granted = granted - 1000000, available = available - 1000000 WHERE tenant = 'acme' AND id = 2",
    )
    .await;
    // Credits moved from consumed to available within one grant: the row balances and
    // `granted` agrees, the column sums do not.
    exec(
        &e,
        "UPDATE grants SET consumed = consumed - 1000000, available = available + 1000000 WHERE tenant = 'acme' AND id = 1",
    )
    .await;
    let err = e.ledger.verify_audit(None).await.unwrap().unwrap_err();
    assert_eq!(
        err.failure,
        table(
            "grants",
            "(all grants of the tenant)",
            "available",
            "103.000000",
            "104.000000"
        ),
        "{err}"
    );
}

#[tokio::test]
async fn wallet_totals_changed_in_the_table_fail_naming_the_column() {
    let (e, _) = history().await;
    exec(
        &e,
        "UPDATE wallets SET consumed = consumed + 1, available = available - 1 WHERE tenant = 'other'",
    )
    .await;
    let err = e.ledger.verify_audit(None).await.unwrap().unwrap_err();
    assert_eq!(err.tenant, Some(tenant("other")));
    assert_eq!(err.seq, Some(3), "other's last movement: {err}");
    assert_eq!(
        err.failure,
        table("wallets", "other", "available", "98.000000", "97.999999")
    );
}

#[tokio::test]
async fn a_hold_posted_by_amount_is_checked_against_its_record() {
    let (e, t) = history().await;
    let h = e
        .ledger
        .hold(
            &t,
            HoldRequest {
                owner: "sc".into(),
                amount: credits(5),
                min_amount: credits(5),
                ttl_secs: 60,
            },
        )
        .await
        .unwrap();
    e.ledger.post_hold(&t, h.id, credits(3)).await.unwrap();
    let rep = e.ledger.verify_audit(None).await.unwrap().unwrap();
    assert_eq!(rep.tables.unwrap().postings, 3);
    let id: i64 = sqlx::query_scalar(
        "SELECT rowid FROM postings WHERE tenant = 'acme' AND batch_sidecar IS NULL",
    )
    .fetch_one(e.store.pool())
    .await
    .unwrap();
    exec(
        &e,
        "UPDATE postings SET amount = 1000000 WHERE batch_sidecar IS NULL",
    )
    .await;
    let err = e.ledger.verify_audit(None).await.unwrap().unwrap_err();
    assert_eq!(err.seq, Some(8), "the hold_ended record: {err}");
    assert_eq!(
        err.failure,
        table("postings", id, "amount", "3.000000", "1.000000")
    );
}

// ----- offline: who and how recent (issue 15) -----

async fn export_of(e: &Env, t: &TenantId) -> String {
    let mut out = Vec::new();
    e.ledger
        .export_audit(Some(std::slice::from_ref(t)), &mut out)
        .await
        .unwrap();
    String::from_utf8(out).unwrap()
}

fn opts(t: &TenantId, since: u64, now: u64) -> VerifyOptions {
    VerifyOptions {
        tenant: Some(t.clone()),
        heads_signed_since: Some(since),
        now: Some(now),
        allow_empty: false,
    }
}

/// The tester's cut export: the records up to an earlier head, with that earlier head.
/// Every signature is genuine; only the head's age gives it away.
#[tokio::test]
async fn an_export_cut_back_to_an_old_head_is_refused() {
    let (e, t) = history().await;
    let old = export_of(&e, &t).await;
    e.clock.advance(7200);
    e.ledger
        .grant(&t, GrantSpec::new(GrantKind::Promotional, credits(1)))
        .await
        .unwrap();
    let new = export_of(&e, &t).await;
    let now = e.clock_now();
    let key = signer().public_key();
    // The current export verifies with a head from the last hour.
    let rep = verify_with(new.as_bytes(), &key, opts(&t, now - 3600, now)).unwrap();
    assert_eq!(rep.tenants, vec![(t.clone(), 7, 7)]);
    assert_eq!(rep.heads[0].signed_at, Some(now));
    // The new export cut at record 6 with the old export's head: chain and head agree.
    let cut: Vec<&str> = new.lines().take(7).chain(old.lines().last()).collect();
    let cut = cut.join("\n");
    assert!(
        verify(cut.as_bytes(), &key).is_ok(),
        "without a head age nothing tells"
    );
    let err = verify_with(cut.as_bytes(), &key, opts(&t, now - 3600, now)).unwrap_err();
    assert_eq!(
        err.failure,
        VerifyFailure::StaleHead {
            signed_at: T0,
            not_before: now - 3600
        },
        "{err}"
    );
    assert_eq!(err.line, 8);
    // A head's time cannot be moved: it is signed.
    let moved = cut.replace(
        &format!("\"signed_at\":{T0}"),
        &format!("\"signed_at\":{now}"),
    );
    assert_ne!(moved, cut);
    let err = verify_with(moved.as_bytes(), &key, opts(&t, now - 3600, now)).unwrap_err();
    assert_eq!(err.failure, VerifyFailure::BadHeadSignature);
    // A head from the verifier's future (beyond the clock skew) is refused.
    let err = verify_with(new.as_bytes(), &key, opts(&t, 0, now - 3600)).unwrap_err();
    assert_eq!(
        err.failure,
        VerifyFailure::FutureHead {
            signed_at: now,
            now: now - 3600
        }
    );
}

/// Old heads (version 1, no time) are recognised as such: refused in a version-2
/// export, and wherever the head's age is asked; a version-1 export still verifies
/// when it is not.
#[tokio::test]
async fn old_undated_heads_are_recognised() {
    let (e, t) = history().await;
    let text = export_of(&e, &t).await;
    let key = signer().public_key();
    let head = e.store_dyn().wallet(&t).await.unwrap().unwrap().audit_head;
    let v1_head = serde_json::to_string(&signer().sign_head_v1(&t, &head)).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    *lines.last_mut().unwrap() = v1_head;
    let in_v2 = lines.join("\n");
    let err = verify(in_v2.as_bytes(), &key).unwrap_err();
    assert_eq!(err.failure, VerifyFailure::UndatedHead, "{err}");
    assert!(err.to_string().contains("tollgate-audit-head-v1"), "{err}");
    // The same lines under a version-1 header: an old export, readable.
    lines[0] = lines[0].replace("\"version\":2", "\"version\":1");
    let v1 = lines.join("\n");
    let rep = verify(v1.as_bytes(), &key).unwrap();
    assert_eq!(rep.heads[0].signed_at, None);
    let now = e.clock_now();
    let err = verify_with(v1.as_bytes(), &key, opts(&t, now - 3600, now)).unwrap_err();
    assert_eq!(err.failure, VerifyFailure::UndatedHead);
    // A version-1 signature does not pass for a dated head, nor the other way round.
    let dated_v1 = in_v2.replace(
        "\"signature\"",
        &format!("\"signed_at\":{now},\"signature\""),
    );
    let err = verify(dated_v1.as_bytes(), &key).unwrap_err();
    assert_eq!(err.failure, VerifyFailure::BadHeadSignature);
}

/// Another tenant's whole chain and head spliced into an export: accepted as a
/// two-tenant export when no tenant is expected (the report names both), refused when
/// the verifier is told whose export it is.
#[tokio::test]
async fn another_tenants_chain_spliced_in_is_refused() {
    let (e, t) = history().await;
    let o = tenant("other");
    let mine = export_of(&e, &t).await;
    let theirs = export_of(&e, &o).await;
    let spliced: Vec<&str> = mine.lines().chain(theirs.lines().skip(1)).collect();
    let spliced = spliced.join("\n");
    let key = signer().public_key();
    let rep = verify(spliced.as_bytes(), &key).unwrap();
    assert_eq!(
        rep.tenants.iter().map(|x| x.0.as_str()).collect::<Vec<_>>(),
        ["acme", "other"]
    );
    let now = e.clock_now();
    let err = verify_with(spliced.as_bytes(), &key, opts(&t, now - 60, now)).unwrap_err();
    assert_eq!(
        err.failure,
        VerifyFailure::OtherTenant {
            expected: t.clone(),
            found: o.clone()
        }
    );
    assert_eq!(
        (err.line, err.seq),
        (9, Some(1)),
        "other's first record: {err}"
    );
    // Only the other tenant's export, verified as acme's: refused at its first record.
    let err = verify_with(theirs.as_bytes(), &key, opts(&t, now - 60, now)).unwrap_err();
    assert!(
        matches!(err.failure, VerifyFailure::OtherTenant { .. }),
        "{err}"
    );
    // The expected tenant's records without its head: truncated.
    let headless: Vec<&str> = mine.lines().take(7).collect();
    let err = verify_with(headless.join("\n").as_bytes(), &key, opts(&t, 0, now)).unwrap_err();
    assert_eq!(err.failure, VerifyFailure::MissingHead);
    // A header alone, expecting acme: no records.
    let header_only = mine.lines().next().unwrap();
    let err = verify_with(header_only.as_bytes(), &key, opts(&t, 0, now)).unwrap_err();
    assert_eq!(err.failure, VerifyFailure::NoRecords);
    assert_eq!(err.tenant, Some(t));
}

/// Hostile exports: every mutation of a valid export, and lines no export has, give a
/// typed error (or a valid report), never a panic.
#[tokio::test]
async fn hostile_exports_fail_typed_never_panic() {
    let (e, t) = history().await;
    let text = export_of(&e, &t).await;
    let key = signer().public_key();
    let bytes = text.as_bytes();
    // Signature checks are slow in debug builds (tens of ms per export): a spread of
    // positions, not all.
    for (i, b) in [b'"', b'}', b'\n', b'9', 0xff].into_iter().enumerate() {
        for pos in (i * 11..bytes.len()).step_by(151) {
            let mut m = bytes.to_vec();
            m[pos] = b;
            let _ = verify_with(m.as_slice(), &key, opts(&t, 0, u64::MAX));
        }
    }
    let header = text.lines().next().unwrap();
    let key_hex = signer().public_key_hex();
    let cases = [
        String::new(),
        "\n\n".into(),
        "[]".into(),
        "{\"type\":\"head\"}".into(),
        format!(
            "{header}\n{{\"type\":\"head\",\"tenant\":\"acme\",\"seq\":18446744073709551615,\"hash\":\"00\",\"signature\":\"zz\"}}"
        ),
        format!(
            "{header}\n{{\"type\":\"record\",\"tenant\":\"acme\",\"seq\":18446744073709551615,\"at\":1,\"prev_hash\":\"\",\"body\":\"\",\"hash\":\"\",\"signature\":\"\"}}"
        ),
        format!("{header}\n{{\"type\":\"record\",\"tenant\":\"acme\",\"seq\":-1}}"),
        format!(
            "{header}\n{{\"type\":\"head\",\"tenant\":\"\",\"seq\":0,\"hash\":\"{}\",\"signed_at\":18446744073709551615,\"signature\":\"{}\"}}",
            "0".repeat(64),
            "0".repeat(128)
        ),
        format!(
            "{{\"type\":\"header\",\"format\":\"tollgate-audit-export\",\"version\":4294967295,\"public_key\":\"{key_hex}\",\"exported_at\":0}}"
        ),
        format!("{header}\n{header}"),
        format!("{header}\n{}", "x".repeat(1000)),
    ];
    for c in &cases {
        assert!(verify(c.as_bytes(), &key).is_err(), "{c}");
        assert!(
            verify_with(c.as_bytes(), &key, opts(&t, 0, 0)).is_err(),
            "{c}"
        );
    }
    // Not UTF-8, and a line past the length limit: refused without reading it all.
    let err = verify(&b"\xff\xfe\n"[..], &key).unwrap_err();
    assert!(matches!(err.failure, VerifyFailure::Malformed(_)), "{err}");
    let long = vec![b'{'; tollgate_ledger::audit::MAX_EXPORT_LINE + 10];
    let err = verify(long.as_slice(), &key).unwrap_err();
    assert!(err.to_string().contains("longer than"), "{err}");
}

/// Tenants are verified one by one online; a failure in a later tenant's chain still
/// names the line that record has in an export of them all.
#[tokio::test]
async fn a_later_tenants_failure_names_its_export_line() {
    let (e, _) = history().await;
    exec(
        &e,
        "UPDATE audit_records SET body = replace(body, '\"amount\":100000000', '\"amount\":900000000') WHERE tenant = 'other' AND seq = 2",
    )
    .await;
    let err = e.ledger.verify_audit(None).await.unwrap().unwrap_err();
    assert_eq!(err.tenant, Some(tenant("other")));
    assert_eq!(err.line, 9, "header, acme's 6 records, other #1, other #2");
    let mut out = Vec::new();
    e.ledger.export_audit(None, &mut out).await.unwrap();
    let offline = verify(out.as_slice(), &signer().public_key()).unwrap_err();
    assert_eq!(offline, err);
}
