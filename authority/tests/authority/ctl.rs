//! `tollgate ctl` end to end against a real authority.

use clap::Parser;
use tollgate_authority::cli::ctl::execute;

use super::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_commands_work_end_to_end() {
    if skip_without_store("ctl_commands_work_end_to_end") {
        return;
    }
    let h = start_harness().await;
    let u = h.url.as_str();
    let out = ctl(u, &["tenant", "create", "acme", "--name", "Acme Corp"])
        .await
        .unwrap();
    assert!(out.contains("created tenant acme"), "{out}");
    assert!(
        ctl(u, &["tenant", "list"])
            .await
            .unwrap()
            .contains("Acme Corp")
    );
    let out = ctl(
        u,
        &[
            "grant",
            "add",
            "acme",
            "--kind",
            "trial",
            "--amount",
            "12.5",
            "--expires",
            "2099-01-01",
        ],
    )
    .await
    .unwrap();
    assert!(out.contains("12.500000"), "{out}");
    ctl(
        u,
        &[
            "grant",
            "add",
            "acme",
            "--kind",
            "purchased",
            "--amount",
            "100",
            "--label",
            "inv-1",
        ],
    )
    .await
    .unwrap();
    let grants = ctl(u, &["grant", "list", "acme"]).await.unwrap();
    assert!(
        grants.contains("trial") && grants.contains("inv-1"),
        "{grants}"
    );

    let book = h.dir.path().join("prices.toml");
    std::fs::write(
        &book,
        r#"
version = 0
request_price = 40000
default_max_output_tokens = 1024
[[models]]
name = "gpt-small"
pricing = { kind = "per_token", input_per_million = 1000000, output_per_million = 2000000 }
[[models]]
name = "agent-actions"
pricing = { kind = "per_action", tokens_per_action = 10000, price_per_action = 20000000 }
"#,
    )
    .unwrap();
    let out = ctl(
        u,
        &[
            "price-book",
            "set",
            "acme",
            "--file",
            book.to_str().unwrap(),
        ],
    )
    .await
    .unwrap();
    assert!(
        out.contains("version 1") && out.contains("2 models"),
        "{out}"
    );
    let out = ctl(
        u,
        &[
            "plan",
            "set",
            "acme",
            "--included",
            "10",
            "--hard-cap",
            "80",
        ],
    )
    .await
    .unwrap();
    assert!(out.contains("80.000000"), "{out}");
    assert!(
        ctl(u, &["plan", "get", "acme"])
            .await
            .unwrap()
            .contains("80.000000")
    );
    ctl(
        u,
        &[
            "quota",
            "set",
            "acme",
            "per-minute",
            "--window",
            "minute",
            "--max",
            "5",
        ],
    )
    .await
    .unwrap();
    ctl(
        u,
        &[
            "quota",
            "set",
            "acme",
            "bg",
            "--window",
            "hour",
            "--max",
            "1",
            "--tier",
            "background",
            "--shadow",
        ],
    )
    .await
    .unwrap();
    ctl(
        u,
        &[
            "quota",
            "floor",
            "acme",
            "--tier",
            "background",
            "--permille",
            "200",
        ],
    )
    .await
    .unwrap();
    let policy = ctl(u, &["quota", "list", "acme"]).await.unwrap();
    assert!(
        policy.contains("floor TIER_BACKGROUND") && policy.contains("200 permille"),
        "{policy}"
    );
    assert!(
        policy.contains("acme/minute")
            && policy.contains("acme/tier/background/hour")
            && policy.contains("(shadow)"),
        "{policy}"
    );
    ctl(u, &["alert", "set", "acme", "eighty", "--percent", "80"])
        .await
        .unwrap();
    assert!(
        ctl(u, &["alert", "list", "acme"])
            .await
            .unwrap()
            .contains("80% used")
    );
    let bal = ctl(u, &["balance", "acme"]).await.unwrap();
    assert!(
        bal.contains("available") && bal.contains("112.500000"),
        "{bal}"
    );
    assert!(
        ctl(u, &["statement", "acme", "--from", "2026-01-01"])
            .await
            .unwrap()
            .contains("statement of acme")
    );
    assert!(
        ctl(u, &["audit", "verify"])
            .await
            .unwrap()
            .contains("audit chain OK")
    );

    // Clear errors.
    let e = ctl(
        u,
        &["grant", "add", "acme", "--kind", "trial", "--amount", "-3"],
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("--amount"), "{e}");
    let e = ctl(u, &["balance", "nobody"]).await.unwrap_err();
    assert!(
        e.to_string().contains("NotFound") && e.to_string().contains("nobody"),
        "{e}"
    );
    let e = execute(
        CtlCli::try_parse_from(["ctl", "--authority", u, "balance", "acme"])
            .unwrap()
            .ctl,
    )
    .await
    .unwrap_err();
    assert!(
        e.to_string().contains("Unauthenticated") && e.to_string().contains("--admin-token"),
        "{e}"
    );
    let e = execute(
        CtlCli::try_parse_from([
            "ctl",
            "--authority",
            "http://127.0.0.1:1",
            "--admin-token",
            "x",
            "tenant",
            "list",
        ])
        .unwrap()
        .ctl,
    )
    .await
    .unwrap_err();
    assert!(
        format!("{e:#}").contains("cannot reach the authority"),
        "{e:#}"
    );
    h.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_estimate_prints_the_answer() {
    if skip_without_store("ctl_estimate_prints_the_answer") {
        return;
    }
    // `--help` documents every flag and the line format.
    let help = match CtlCli::try_parse_from(["ctl", "estimate", "--help"]) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("--help parses as an error that prints the help"),
    };
    for want in [
        "--line",
        "MODEL:CALLS:IN:OUT[:OUTCOMES]",
        "--days",
        "--total",
        "--agent-initiated",
        "Examples:",
    ] {
        assert!(help.contains(want), "{want} missing from:\n{help}");
    }
    let h = start_harness().await;
    let u = h.url.as_str();
    setup_tenant(u, "acme", 100).await;
    // m1: 1 micro-credit per input token, 2 per output token: 1000 + 2 * 500 = 2000 a call.
    let out = ctl(
        u,
        &[
            "estimate",
            "acme",
            "--line",
            "m1:1000:1000:500",
            "--days",
            "10",
        ],
    )
    .await
    .unwrap();
    assert!(out.contains("over 10 day(s), calls a day"), "{out}");
    // 1,000 calls a day for 10 days at 0.002 credits: 20 credits.
    assert!(out.contains("total                20"), "{out}");
    assert!(out.contains("no limit within 10 day(s)"), "{out}");
    assert!(out.contains("runway               50 day(s)"), "{out}");
    let e = ctl(u, &["estimate", "acme", "--line", "m1:1"])
        .await
        .unwrap_err();
    assert!(e.to_string().contains("MODEL:CALLS"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_what_if_prints_the_difference_line_by_line() {
    if skip_without_store("ctl_what_if_prints_the_difference_line_by_line") {
        return;
    }
    let h = start_harness().await;
    let u = h.url.as_str();
    // m1: 1 micro-credit per input token.
    setup_tenant(u, "acme", 100).await;
    let mut sc = Sidecar::connect(u, "pod-1", SC_ACME, &["acme"]).await;
    sc.post(1, &[call("acme", "bot", MODEL, 2000, 2000)]).await;
    let book = h.dir.path().join("dearer.toml");
    std::fs::write(
        &book,
        r#"
version = 0
default_max_output_tokens = 1024
[[models]]
name = "m1"
pricing = { kind = "per_token", input_per_million = 5000000, output_per_million = 0 }
"#,
    )
    .unwrap();
    let out = ctl(
        u,
        &["what-if", "acme", "--price-book", book.to_str().unwrap()],
    )
    .await
    .unwrap();
    // 2,000 input tokens: 0.002 credits recorded, 0.01 under 5 per token: +0.008.
    assert!(out.contains("bot"), "{out}");
    assert!(
        out.contains("total: recorded 0.002000, other book 0.010000, difference +0.008000"),
        "{out}"
    );
}
