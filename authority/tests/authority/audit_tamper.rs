//! Editing, deleting or reordering one audit record in the database makes
//! `tollgate ctl audit verify` fail and name the record; so does a posting, grant or
//! wallet row changed behind the chain. An export verifies offline for the tenant it
//! belongs to with a recent head; a cut, empty or spliced export does not.

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
            all_tenants: false,
            file: None,
            public_key: None,
            max_head_age: None,
            head_after: None,
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
            tenant: Some("clean".into()),
            all_tenants: false,
            file: Some(file.clone()),
            public_key: Some(key.to_string()),
            max_head_age: Some("1h".into()),
            head_after: None,
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

async fn sql(h: &Harness, statement: &'static str) {
    let mut db = SqliteConnectOptions::new()
        .filename(h.db_path())
        .connect()
        .await
        .unwrap();
    sqlx::query(statement).execute(&mut db).await.unwrap();
    db.close().await.unwrap();
}

/// Issue 15: the outside tester's findings, through `tollgate ctl` as typed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_audit_verify_checks_the_tables_and_what_an_export_must_be() {
    if skip_without_store("ctl_audit_verify_checks_the_tables_and_what_an_export_must_be") {
        return;
    }
    // The authority's clock starts three hours ago, so its heads can be old or recent
    // against the verifier's real clock.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let clock = tollgate_ledger::ManualClock::new(now - 3 * 3600);
    let h = start_harness_with_clock(clock.clone()).await;
    setup_tenant(&h.url, "acme", 20).await;
    setup_tenant(&h.url, "other", 20).await;
    let mut sc = Sidecar::connect(&h.url, "pod-1", SC_ACME, &["acme"]).await;
    sc.lease_wallet("acme", 5_000_000).await;
    sc.post(1, &[call("acme", "bot", MODEL, 2_000_000, 2_000_000)])
        .await;
    let ok = ctl(&h.url, &["audit", "verify", "--tenant", "acme"])
        .await
        .unwrap();
    assert!(
        ok.contains("audit chain OK")
            && ok.contains("tables match the chain: 1 posting rows, 1 grants, 1 wallets"),
        "{ok}"
    );

    // The tester's statements: the chain is intact, the tables are not.
    sql(&h, "UPDATE postings SET amount = amount + 5000000").await;
    let e = ctl(&h.url, &["audit", "verify", "--tenant", "acme"])
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("FAILED") && e.contains("table postings, row 1, column amount: the audit chain says 2.000000, the table has 7.000000"), "{e}");
    sql(&h, "UPDATE postings SET amount = amount - 5000000").await;
    sql(&h, "UPDATE grants SET available = available + 100000000").await;
    let e = ctl(&h.url, &["audit", "verify"])
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("tenant acme") && e.contains("table grants, row 1, column available: the audit chain says 15.000000, the table has 115.000000"), "{e}");
    // Over the API, the row is in fields of its own.
    let mut a = admin(&h.url).await;
    let r = a
        .verify_audit(req(
            pb::VerifyAuditRequest {
                tenant: "other".into(),
            },
            Some(ADMIN),
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!r.ok);
    assert_eq!(
        (
            r.bad_table.as_str(),
            r.bad_row.as_str(),
            r.bad_column.as_str(),
            r.chain_value.as_str(),
            r.table_value.as_str()
        ),
        ("grants", "1", "available", "20.000000", "120.000000")
    );
    sql(&h, "UPDATE grants SET available = available - 100000000").await;
    let ok = ctl(&h.url, &["audit", "verify"]).await.unwrap();
    assert!(ok.contains("audit chain OK"), "{ok}");

    // Exports: one now (its head signed three hours ago by the authority's clock), one
    // after two more hours and a grant.
    let dir = h.dir.path();
    let old = dir.join("old.jsonl");
    let new = dir.join("new.jsonl");
    let out = ctl(
        &h.url,
        &[
            "audit",
            "export",
            "--tenant",
            "acme",
            "--out",
            old.to_str().unwrap(),
        ],
    )
    .await
    .unwrap();
    let key = out
        .lines()
        .find_map(|l| l.strip_prefix("public key: "))
        .unwrap()
        .to_string();
    assert!(out.contains("--tenant acme --max-head-age 1h"), "{out}");
    clock.advance(2 * 3600);
    add_grants(&h.url, "acme", 1).await;
    ctl(
        &h.url,
        &[
            "audit",
            "export",
            "--tenant",
            "acme",
            "--out",
            new.to_str().unwrap(),
        ],
    )
    .await
    .unwrap();
    let offline = |file: &std::path::Path, extra: &[&str]| {
        let mut args: Vec<String> = [
            "audit",
            "verify",
            "--file",
            file.to_str().unwrap(),
            "--public-key",
            &key,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let url = h.url.clone();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            ctl(&url, &args).await
        }
    };
    let ok = offline(&new, &["--tenant", "acme", "--max-head-age", "2h"])
        .await
        .unwrap();
    assert!(ok.contains("OK") && ok.contains("tenant acme:"), "{ok}");

    // Saying neither who nor how recent is refused.
    let e = offline(&new, &["--max-head-age", "2h"])
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("--tenant") && e.contains("--all-tenants"), "{e}");
    let e = offline(&new, &["--tenant", "acme"])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("--max-head-age") && e.contains("--head-after"),
        "{e}"
    );

    // Cut at the old export's last record, with the old export's signed head.
    let new_text = std::fs::read_to_string(&new).unwrap();
    let old_text = std::fs::read_to_string(&old).unwrap();
    let n_old = old_text.lines().count();
    let cut: Vec<&str> = new_text
        .lines()
        .take(n_old - 1)
        .chain(old_text.lines().last())
        .collect();
    let cut_file = dir.join("cut.jsonl");
    std::fs::write(&cut_file, cut.join("\n")).unwrap();
    let e = offline(&cut_file, &["--tenant", "acme", "--max-head-age", "2h"])
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("FAILED") && e.contains("an old head"), "{e}");
    // An archive is verified against its own date.
    let ok = offline(
        &old,
        &[
            "--tenant",
            "acme",
            "--head-after",
            &(now - 4 * 3600).to_string(),
        ],
    )
    .await
    .unwrap();
    assert!(ok.contains("OK"), "{ok}");

    // No records: refused, not "OK: 0 records".
    let empty = dir.join("empty.jsonl");
    std::fs::write(&empty, new_text.lines().next().unwrap()).unwrap();
    let e = offline(&empty, &["--all-tenants", "--max-head-age", "2h"])
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("no audit records"), "{e}");

    // Another tenant's whole chain and head spliced in.
    let theirs = dir.join("other.jsonl");
    ctl(
        &h.url,
        &[
            "audit",
            "export",
            "--tenant",
            "other",
            "--out",
            theirs.to_str().unwrap(),
        ],
    )
    .await
    .unwrap();
    let other_text = std::fs::read_to_string(&theirs).unwrap();
    let spliced: Vec<&str> = new_text.lines().chain(other_text.lines().skip(1)).collect();
    let spliced_file = dir.join("spliced.jsonl");
    std::fs::write(&spliced_file, spliced.join("\n")).unwrap();
    let e = offline(&spliced_file, &["--tenant", "acme", "--max-head-age", "2h"])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("tenant other in an export verified for tenant acme"),
        "{e}"
    );
    // As an operator's export of all tenants it is two chains, and says so.
    let ok = offline(&spliced_file, &["--all-tenants", "--max-head-age", "2h"])
        .await
        .unwrap();
    assert!(
        ok.contains("2 tenant(s)") && ok.contains("tenant acme:") && ok.contains("tenant other:"),
        "{ok}"
    );
    h.running.shutdown().await.unwrap();
}
