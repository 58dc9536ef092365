//! The audit chain against tampering: editing, deleting or reordering one record in the
//! SQLite database makes verification fail and name the record; a tenant verifies its
//! own export offline with the public key.

mod common;

use common::*;
use tollgate_ledger::audit::{record_hash, write_export};
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
    // write_export of nothing verifies as nothing.
    let mut empty = Vec::new();
    write_export(&mut empty, &signer(), 0, &[]).unwrap();
    assert_eq!(verify(empty.as_slice(), &key).unwrap().records(), 0);
}
