//! A sidecar whose token does not cover its `--tenants` can never work: the authority
//! refuses its `Register` with `PERMISSION_DENIED`. It must not run on looking alive with the
//! refusal visible only at debug level: it logs it as an error, counts it, reports not ready
//! with the reason, and, refused at its first registration, exits non-zero with the
//! authority's message.

mod common;

use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tollgate_authority::config::SidecarCredential;

use common::*;

/// The authority with tenants `acme` and `beta`, and a second credential `pod-b` that may
/// serve only `beta`.
fn authority(dir: &std::path::Path) -> Authority {
    Authority::start_with(dir, &[(TENANT, GRANT_MICRO), ("beta", GRANT_MICRO)], |c| {
        c.sidecars.push(SidecarCredential {
            name: "pod-b".into(),
            token: Some("pod-b-token".into()),
            token_file: None,
            tenants: vec!["beta".into()],
        })
    })
}

#[test]
fn a_sidecar_refused_at_its_first_registration_stops_with_the_authority_s_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let auth = authority(dir.path());
    let mut cfg = auth.sidecar_config(dir.path());
    cfg.sidecar_id = "pod-b".into();
    cfg.token = Some("pod-b-token".into());
    let sc = tollgate_sidecar::run::spawn(cfg).expect("the sidecar starts");
    let (metrics, health, http) = (sc.metrics.clone(), sc.health.clone(), sc.http_addr);
    // It stops on its own: its endpoints go away.
    let end = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(http).is_ok() {
        assert!(
            Instant::now() < end,
            "the refused sidecar is still running (ready: {:?})",
            health.not_ready_reasons()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let err = sc.stop().expect_err("the sidecar ended without an error");
    let msg = format!("{err:#}");
    eprintln!("{msg}");
    assert!(
        msg.contains("refused to register sidecar pod-b for tenants acme")
            && msg.contains("not allowed to act for tenant"),
        "{msg}"
    );
    assert!(metrics.register_refusals.get() >= 1);
    assert_eq!(metrics.register_refused.get(), 1);
    let reasons = health.not_ready_reasons().join("; ");
    assert!(
        reasons.contains("registration for tenants acme refused"),
        "{reasons}"
    );
    auth.shutdown();
}

#[test]
fn the_binary_exits_non_zero_when_its_token_does_not_cover_its_tenants() {
    let dir = tempfile::tempdir().expect("tempdir");
    let auth = authority(dir.path());
    let token = dir.path().join("token");
    std::fs::write(&token, "pod-b-token\n").expect("token");
    let mut c = sidecar_bin();
    let child = c
        .arg("--region")
        .arg(dir.path().join("pod").join("region"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--token-file")
        .arg(&token)
        .args(["--tenants", TENANT, "--sidecar-id", "pod-b"])
        .args(["--authority", &auth.url, "--http", "127.0.0.1:0"])
        .args(["--lanes", "4", "--tasks", "8", "--names", "32"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run");
    let out = exits_within_20s(child, "the refused sidecar is still running after 20 s");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        stderr.contains("not allowed to act for tenant"),
        "stderr: {stderr}\nstdout: {stdout}"
    );
    // The error-level log names the tenants.
    let logs = format!("{stdout}{stderr}");
    assert!(
        logs.lines()
            .any(|l| l.contains("ERROR") && l.contains("tenants") && l.contains("acme")),
        "{logs}"
    );
    auth.shutdown();
}
