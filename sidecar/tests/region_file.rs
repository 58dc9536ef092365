//! `--region` naming an existing file: a damaged Tollgate region (our magic, a bad
//! version, checksum or size) is replaced by a new one, as an empty file is; a file that is
//! not a region (another magic, or too small to be one) is someone's data at a mistyped
//! path: the sidecar refuses to start, names the file, and leaves it as it was.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tollgate_sidecar::config::Config;

mod common;
use common::{exits_within_20s, sidecar_bin};
use tollgate_sidecar::owner::NotARegion;

const MAGIC: &[u8; 8] = b"TOLLGATE";

/// A sidecar for `region`, with an authority nobody listens at (the region is opened before
/// any session).
fn config(dir: &Path, region: PathBuf) -> Config {
    Config {
        region,
        state_dir: dir.join("state"),
        authority: "http://127.0.0.1:1".into(),
        sidecar_id: "pod-a".into(),
        token: None,
        ca_cert: None,
        tenants: vec!["acme".into()],
        http: "127.0.0.1:0".parse().expect("addr"),
        emergency_allowance: 0,
        lanes: 4,
        tasks: 8,
        names: 32,
        tick: Duration::from_millis(10),
        liveness_timeout: Duration::from_secs(1),
        tier_floor_permille: [0, 0, 0],
        lane_overrun_allowance: 1_000_000,
    }
}

fn refused(dir: &Path, region: PathBuf, content: &[u8]) {
    std::fs::write(&region, content).expect("write");
    let err = tollgate_sidecar::run::spawn(config(dir, region.clone()))
        .expect_err("the sidecar started on a file that is not a region");
    let msg = format!("{err:#}");
    assert!(
        msg.contains(&region.display().to_string()) && msg.contains("not a Tollgate region"),
        "{msg}"
    );
    assert_eq!(
        std::fs::read(&region).expect("read"),
        content,
        "the file was changed"
    );
}

#[test]
fn a_file_that_is_not_a_region_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Larger than a region's header, another magic.
    let notes = "my notes, not a region\n".repeat(2_000);
    refused(dir.path(), dir.path().join("notes.txt"), notes.as_bytes());
    // Too small to be a region, and not empty.
    refused(dir.path(), dir.path().join("tiny"), b"hi\n");
    // The error is typed, for callers that tell it apart.
    let region = dir.path().join("notes.txt");
    let err = tollgate_sidecar::owner::Owner::open(&config(dir.path(), region))
        .expect_err("opened a file that is not a region");
    assert!(err.downcast_ref::<NotARegion>().is_some(), "{err:#}");
}

fn starts_as_region(region: &Path) {
    let sc = tollgate_sidecar::run::spawn(config(region.parent().expect("dir"), region.into()))
        .expect("the sidecar starts");
    let bytes = std::fs::read(region).expect("read");
    assert!(bytes.len() > 4096, "{} bytes", bytes.len());
    assert_eq!(&bytes[..8], MAGIC);
    sc.stop().expect("stop");
}

#[test]
fn an_empty_file_or_a_damaged_region_is_replaced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").expect("write");
    starts_as_region(&empty);

    // A region of ours, truncated to its first page.
    let region = dir.path().join("region");
    starts_as_region(&region);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&region)
        .expect("open");
    f.set_len(4096).expect("truncate");
    drop(f);
    starts_as_region(&region);

    // Our magic and nothing else a region has.
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&[0xAB; 200]);
    std::fs::write(&region, &bytes).expect("write");
    starts_as_region(&region);
}

#[test]
fn the_binary_exits_non_zero_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let region = dir.path().join("data.bin");
    let content = b"\x89PNG\r\n\x1a\n not a region at all";
    std::fs::write(&region, content).expect("write");
    let mut c = sidecar_bin();
    let child = c
        .arg("--region")
        .arg(&region)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .args(["--tenants", "acme", "--sidecar-id", "pod-a"])
        .args(["--authority", "http://127.0.0.1:1", "--http", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run");
    // A sidecar that started would run until stopped: give it 20 s to exit.
    let out = exits_within_20s(child, "the sidecar started on a file that is not a region");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        stderr.contains(&region.display().to_string()) && stderr.contains("not a Tollgate region"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&region).expect("read"), content);
}
