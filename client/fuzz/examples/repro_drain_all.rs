//! Reproduces the `Region::drain_all` overflow the fuzzer found (see docs/fuzzing.md):
//! `cargo run --example repro_drain_all` in this directory (a debug build, so overflow is
//! checked) panics with "attempt to add with overflow" in `Region::drain_all`. Both lanes
//! have a ring head far from their tail (words an agent can scribble); each lane's
//! `skipped` count is that distance less the ring's capacity, and the two sum past u64 (a
//! release build wraps).

use std::path::Path;

fn main() {
    let input = Path::new(env!("CARGO_MANIFEST_DIR")).join("findings/drain_all_skipped_overflow");
    let bytes = std::fs::read(&input).expect("read the finding");
    // The first byte is the target's flags byte; this copy is stamped already (flags 0), so
    // the region file is the rest as it is.
    assert_eq!(bytes[0] & 7, 0, "the input needs no stamping");
    let path = std::env::temp_dir().join(format!("tollgate-repro-{}", std::process::id()));
    std::fs::write(&path, &bytes[1..]).expect("write region");
    let region = tollgate_client::Region::open_owner(&path).expect("the region opens");
    let mut out = Vec::new();
    let result = region.drain_all(&mut out);
    println!("drain_all returned {result:?} (no overflow check in this build)");
    let _ = std::fs::remove_file(&path);
}
