//! Editing, deleting or reordering one audit record in the database makes
//! `tollgate ctl audit verify` fail and name the record; an export verifies offline.

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};
use tollgate_authority::cli::ctl::{AuditCmd, CtlArgs, CtlCommand, execute};
use tollgate_proto::v1 as pb;

use super::common::*;

fn verify_args(url: &str, tenant: &str) -> CtlArgs {
    CtlArgs {
        authority: url.to_string(),
        admin_token: Some(ADMIN.to_string()),
        ca_cert: None,
        raw: false,
        command: CtlCommand::Audit(AuditCmd::Verify {
            tenant: Some(tenant.to_string()),
            file: None,
            public_key: None,
        }),
    }
}

async fn add_grants(url: &str, tenant: &str, n: u64) {
    let mut a = admin(url).await;
    for i in 0..n {
        a.add_grant(req(
            pb::AddGrantRequest {
                grant: Some(pb::Grant {
                    tenant: tenant.into(),
                    kind: pb::GrantKind::Promotional as i32,
                    amount_micro: 1_000_000 + i,
                    ..Default::default()
                }),
            },
            Some(ADMIN),
        ))
        .await
        .unwrap();
    }
}

/// Replaces the first digit of the first number in `s` by a larger one.
fn raise_first_number(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut done = false;
    for c in s.chars() {
        if !done && c.is_ascii_digit() {
            out.push(if c == '9' { '8' } else { '9' });
            done = true;
        } else {
            out.push(c);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_audit_records_fail_verify_naming_the_record() {
    if skip_without_store("tampered_audit_records_fail_verify_naming_the_record") {
        return;
    }
    let h = start_harness().await;
    for t in ["clean", "edited", "deleted", "reordered"] {
        setup_tenant(&h.url, t, 5).await;
        add_grants(&h.url, t, 4).await;
    }
    for t in ["clean", "edited", "deleted", "reordered"] {
        let out = execute(verify_args(&h.url, t)).await.unwrap();
        assert!(out.contains("audit chain OK"), "{out}");
    }

    let mut db = SqliteConnectOptions::new()
        .filename(h.db_path())
        .connect()
        .await
        .unwrap();
    // Edit: raise the first amount in record 3's body.
    let body: (String,) =
        sqlx::query_as("SELECT body FROM audit_records WHERE tenant = 'edited' AND seq = 3")
            .fetch_one(&mut db)
            .await
            .unwrap();
    let edited = raise_first_number(&body.0);
    assert_ne!(edited, body.0, "record 3 has a number to edit: {}", body.0);
    sqlx::query("UPDATE audit_records SET body = ? WHERE tenant = 'edited' AND seq = 3")
        .bind(edited)
        .execute(&mut db)
        .await
        .unwrap();
    // Delete record 2.
    sqlx::query("DELETE FROM audit_records WHERE tenant = 'deleted' AND seq = 2")
        .execute(&mut db)
        .await
        .unwrap();
    // Reorder records 2 and 3.
    for (from, to) in [(2i64, -1i64), (3, 2), (-1, 3)] {
        sqlx::query("UPDATE audit_records SET seq = ? WHERE tenant = 'reordered' AND seq = ?")
            .bind(to)
            .bind(from)
            .execute(&mut db)
            .await
            .unwrap();
    }
    db.close().await.unwrap();

    for (t, seq) in [("edited", 3), ("deleted", 3), ("reordered", 2)] {
        let e = execute(verify_args(&h.url, t))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("FAILED"), "{t}: {e}");
        assert!(e.contains(&format!("tenant {t}")), "{t}: {e}");
        assert!(e.contains(&format!("record seq {seq}")), "{t}: {e}");
    }
    let out = execute(verify_args(&h.url, "clean")).await.unwrap();
    assert!(out.contains("audit chain OK"), "{out}");

    // A tenant's export verifies offline with the public key; an edited line does not.
    let file = h.dir.path().join("clean.jsonl");
    let out = execute(CtlArgs {
        command: CtlCommand::Audit(AuditCmd::Export {
            tenant: Some("clean".into()),
            out: file.clone(),
        }),
        ..verify_args(&h.url, "clean")
    })
    .await
    .unwrap();
    let key = out
        .lines()
        .find_map(|l| l.strip_prefix("public key: "))
        .expect("export prints the public key")
        .to_string();
    let offline = |key: &str| CtlArgs {
        authority: "http://127.0.0.1:1".into(),
        admin_token: None,
        ca_cert: None,
        raw: false,
        command: CtlCommand::Audit(AuditCmd::Verify {
            tenant: None,
            file: Some(file.clone()),
            public_key: Some(key.to_string()),
        }),
    };
    let ok = execute(offline(&key)).await.unwrap();
    assert!(ok.contains("OK"), "{ok}");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replacen("1000002", "1000003", 1)).unwrap();
    let e = execute(offline(&key)).await.unwrap_err().to_string();
    assert!(e.contains("FAILED") && e.contains("record seq"), "{e}");
    h.running.shutdown().await.unwrap();
}
