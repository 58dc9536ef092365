//! A region destroyed under its sidecar by a process that maps it: truncated while mapped
//! (the sidecar survives through the truncation guard, where it would otherwise die of
//! SIGBUS), removed, replaced, or with its header overwritten. Each is reported by
//! `Region::damage`, and a healthy region reports none.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use tollgate_client::{
    Call, Gate, PoolSpec, Region, RegionConfig, RegionDamage, TenantSpec, install_truncation_guard,
};
use tollgate_core::{Credits, LimitKind};

const C: u64 = 1_000_000;

fn region(path: &Path) -> Region {
    let r = Region::create(
        path,
        RegionConfig {
            pools: 1,
            tenants: 1,
            lanes: 64,
            slots_per_lane: 4,
            ring_capacity: 64,
            price_book_bytes: 1024,
            ..RegionConfig::default()
        },
    )
    .expect("create region");
    r.configure_pool(
        0,
        &PoolSpec {
            limit: LimitKind::TenantWallet,
            floors: [Credits(0); 3],
        },
    )
    .expect("pool");
    r.grant(0, Credits(100 * C)).expect("grant");
    let one = vec![0];
    r.configure_tenant(
        0,
        &TenantSpec {
            name: "acme".into(),
            classes: std::array::from_fn(|_| [one.clone(), one.clone()]),
        },
    )
    .expect("tenant");
    r
}

/// An agent reserves and commits once, so the lanes have content.
fn spend(path: &Path, r: &Region) {
    let gate = Gate::attach(path).expect("attach");
    let call = Call::fixed(Credits(C));
    assert!(gate.reserve(&call).is_err(), "dry lane before a top-up");
    for lane in r.lanes() {
        r.top_up(lane.lane, Credits(10 * C)).expect("top up");
    }
    gate.reserve(&call)
        .expect("reserve")
        .commit_credits(Credits(C))
        .expect("commit");
}

#[test]
fn a_region_truncated_while_mapped_is_survived_and_reported() {
    install_truncation_guard().expect("install the guard");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("region");
    let r = region(&path);
    spend(&path, &r);
    assert_eq!(r.damage(), None, "healthy");
    // Another process (here: another handle) truncates the file under the mapping.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(0)
        .open(&path)
        .unwrap();
    f.set_len(4096).unwrap();
    // Every lane page now lies past the end of the file: without the guard each of these
    // reads raises SIGBUS and ends the test process.
    let lanes = r.lanes();
    let audit = r.audit();
    let mut drained = Vec::new();
    let _ = r.drain_all(&mut drained);
    assert!(
        lanes.is_empty(),
        "the truncated part reads as zeros: {lanes:?}"
    );
    assert!(audit.lanes.iter().all(|l| l.topped_up == 0));
    match r.damage() {
        Some(RegionDamage::Truncated { expected, actual }) => {
            assert_eq!(actual, 4096);
            assert!(expected > actual);
        }
        other => panic!("expected a truncation, got {other:?}"),
    }
    // A replacement region at the same path is healthy; the old handle says it was replaced.
    let fresh = region(&path);
    assert_eq!(fresh.damage(), None);
    assert!(r.damage().is_some());
}

#[test]
fn a_region_removed_replaced_or_overwritten_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("region");
    let r = region(&path);
    assert_eq!(r.damage(), None);
    std::fs::rename(&path, dir.path().join("moved")).unwrap();
    assert_eq!(r.damage(), Some(RegionDamage::Removed));
    std::fs::write(&path, b"not a region").unwrap();
    assert_eq!(r.damage(), Some(RegionDamage::Replaced));
    std::fs::remove_file(&path).unwrap();
    std::fs::rename(dir.path().join("moved"), &path).unwrap();
    assert_eq!(r.damage(), None, "back in place");

    // Random bytes over the first page (magic, version, checksum): header overwritten.
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    f.write_all(&noise).unwrap();
    f.sync_all().unwrap();
    match r.damage() {
        Some(RegionDamage::Header(why)) => assert!(!why.is_empty()),
        other => panic!("expected a header overwrite, got {other:?}"),
    }
}
