//! Corrupt regions: every way a region file can be wrong gives a typed error from
//! `Gate::attach` (or an attach that stays safe to use); never a panic, never SIGBUS.
//!
//! The fixtures start from a real region: created by the sidecar API, configured (4 pools,
//! tenant `acme`, a price book), with lanes an agent claimed, topped up, reserved and
//! committed on. Each case writes a damaged copy to its own file and attaches to it:
//! missing, truncated at every interesting length, wrong magic, wrong version, unfinished
//! (version word 0, and an all-zero file), random bytes, a scribbled static header, a size
//! field that disagrees; then a property test over random byte flips, word overwrites,
//! truncations and extensions. When an attach succeeds, the test reserves, commits and
//! cancels through the damaged region (and the sidecar reopens it, audits and drains it):
//! whatever those return, they must return.

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use tollgate_client::layout::{HEADER_WORDS, LAYOUT_VERSION, MAGIC, WORD};
use tollgate_client::{
    AttachError, Call, Gate, PoolSpec, Region, RegionConfig, TenantId, TenantSpec,
};
use tollgate_core::rating::{ModelPrice, PriceBook, PriceBookSpec, Pricing};
use tollgate_core::{Credits, Horizon, LimitKind, Tier, Usage};

const C: u64 = 1_000_000;
const MODEL: &str = "gpt-test";
const HEADER_BYTES: usize = HEADER_WORDS * WORD;
/// The magic, version, size, checksum and static layout words: any change to them must be
/// refused at attach.
const STATIC_HEADER_BYTES: usize = 20 * WORD;

/// A valid region image with real content, and a directory to write damaged copies in.
struct Fixture {
    dir: tempfile::TempDir,
    image: Vec<u8>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("valid");
    let region = Region::create(
        &path,
        RegionConfig {
            pools: 4,
            tenants: 2,
            lanes: 4,
            slots_per_lane: 4,
            ring_capacity: 4,
            price_book_bytes: 2048,
            ..RegionConfig::default()
        },
    )
    .expect("create region");
    let limits = [
        LimitKind::TenantWallet,
        LimitKind::TenantWindow(Horizon::Minute),
        LimitKind::TenantWindow(Horizon::Hour),
        LimitKind::Agent(Horizon::Day),
    ];
    for (p, limit) in limits.into_iter().enumerate() {
        region
            .configure_pool(
                p,
                &PoolSpec {
                    limit,
                    floors: [Credits(0), Credits(10 * C), Credits(20 * C)],
                },
            )
            .expect("configure pool");
        region.grant(p, Credits(1_000 * C)).expect("grant");
    }
    let all = vec![0, 1, 2, 3];
    region
        .configure_tenant(
            0,
            &TenantSpec {
                name: "acme".into(),
                classes: std::array::from_fn(|_| [all.clone(), all.clone()]),
            },
        )
        .expect("configure tenant");
    let book = PriceBook::new(PriceBookSpec {
        version: 3,
        request_price: Credits::ZERO,
        default_max_output_tokens: 100,
        models: vec![ModelPrice {
            name: MODEL.into(),
            pricing: Pricing::PerToken {
                input_per_million: Credits(1_000 * C),
                output_per_million: Credits(3_000 * C),
            },
            max_output_tokens: None,
        }],
    })
    .expect("price book");
    region.publish_price_book(&book).expect("publish");
    region.set_slow_path(10, Duration::from_micros(20));
    // Give the lanes real state: claimed, topped up, a committed call, one left held.
    let gate = Gate::attach(&path).expect("attach the valid region");
    let acme = gate.tenant("acme").expect("tenant");
    let call = Call::fixed(Credits(3 * C)).tenant(acme);
    assert!(gate.reserve(&call).is_err(), "a fresh lane is dry");
    for info in region.lanes() {
        region.top_up(info.lane, Credits(100 * C)).expect("top up");
    }
    gate.reserve(&call)
        .expect("reserve")
        .commit_credits(Credits(2 * C))
        .expect("commit");
    let held = gate.reserve(&call).expect("reserve");
    std::mem::forget(held); // stays held in the image, as if the agent were mid-call
    let image = std::fs::read(&path).expect("read the region file");
    assert_eq!(image.len() % 4096, 0);
    Fixture { dir, image }
}

impl Fixture {
    /// Writes `bytes` to a fresh file and returns its path.
    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, bytes).expect("write damaged copy");
        path
    }

    fn with_word(&self, word: usize, value: u64) -> Vec<u8> {
        let mut b = self.image.clone();
        b[word * WORD..(word + 1) * WORD].copy_from_slice(&value.to_le_bytes());
        b
    }
}

/// Uses an attached gate the way an agent would, on a thread of its own so the thread's
/// exit (which settles and hands back its lanes) runs on the damaged region too, and the
/// thread-local lane table does not outlive the case. Everything may fail, nothing may panic.
fn exercise_gate(gate: &Gate) {
    std::thread::scope(|s| {
        s.spawn(|| agent_calls(gate));
    });
}

fn agent_calls(gate: &Gate) {
    let tenants = [
        gate.tenant("acme").ok(),
        Some(TenantId(1)),
        Some(TenantId(u16::MAX)),
    ];
    let model = gate.model(MODEL).ok();
    for tenant in tenants.into_iter().flatten() {
        for tier in [Tier::Interactive, Tier::Scheduler, Tier::Background] {
            let call = Call::fixed(Credits(C)).tenant(tenant).tier(tier);
            if let Ok(h) = gate.reserve(&call) {
                let _ = h.commit_credits(Credits(C / 2));
            }
            if let Ok(h) = gate.reserve(&call) {
                h.cancel();
            }
            if let Some(m) = &model {
                let call = Call::model(m)
                    .tenant(tenant)
                    .tier(tier)
                    .input_tokens(100)
                    .max_output_tokens(50);
                if let Ok(h) = gate.reserve(&call) {
                    let _ = h.commit(Usage::new(100, 70)); // an overrun too
                }
            }
        }
    }
}

/// The sidecar's side of a damaged region: reopen, audit, drain, reclaim. May fail, must
/// not panic.
fn exercise_owner(path: &Path) {
    if let Ok(region) = Region::open_owner(path) {
        let _ = region.audit().check();
        let mut out = Vec::new();
        let _ = region.drain_all(&mut out);
        let _ = region.reclaim_dead();
        for info in region.lanes() {
            let _ = region.top_up(info.lane, Credits(C));
            let _ = region.revoke(info.lane, Credits(C));
        }
    }
}

fn attach(path: &Path) -> Result<Gate, AttachError> {
    let result = Gate::attach(path);
    if let Err(e) = &result {
        // Every error says something a person can act on.
        assert!(!e.to_string().is_empty());
    }
    result
}

#[test]
fn the_valid_fixture_attaches_and_works() {
    let f = fixture();
    let path = f.write("copy", &f.image);
    let gate = attach(&path).expect("an undamaged copy attaches");
    let acme = gate.tenant("acme").expect("tenant survives the copy");
    gate.model(MODEL).expect("price book survives the copy");
    // The copy's lanes are claimed by this (live) process, so a new gate claims a free one.
    let _ = gate.reserve(&Call::fixed(Credits(C)).tenant(acme));
}

#[test]
fn missing_file_is_not_found() {
    let f = fixture();
    let err = attach(&f.dir.path().join("nope")).err().expect("no file");
    assert!(matches!(err, AttachError::NotFound { .. }), "{err:?}");
}

#[test]
fn truncated_files_are_refused() {
    let f = fixture();
    let len = f.image.len();
    for cut in [
        0,
        1,
        WORD - 1,
        WORD,
        STATIC_HEADER_BYTES,
        HEADER_BYTES - 1,
        HEADER_BYTES,
        HEADER_BYTES + WORD,
        len / 2,
        len - 4096,
        len - 1,
    ] {
        let path = f.write(&format!("cut{cut}"), &f.image[..cut]);
        match attach(&path) {
            Err(AttachError::Truncated { actual, expected }) => {
                assert_eq!(actual, cut as u64, "cut at {cut}");
                assert!(expected > actual, "cut at {cut}: expected {expected}");
            }
            other => panic!("cut at {cut}: expected Truncated, got {:?}", other.err()),
        }
    }
}

#[test]
fn wrong_magic_is_foreign() {
    let f = fixture();
    for magic in [
        0x4154_4147_4c4c_4f54,
        u64::from_le_bytes(*b"ELF\0\0\0\0\0"),
        1,
    ] {
        let path = f.write("magic", &f.with_word(0, magic));
        match attach(&path) {
            Err(AttachError::ForeignMagic { found }) => assert_eq!(found, magic),
            other => panic!(
                "magic {magic:#x}: expected ForeignMagic, got {:?}",
                other.err()
            ),
        }
    }
}

#[test]
fn wrong_version_is_a_mismatch() {
    let f = fixture();
    for version in [LAYOUT_VERSION + 1, 1_000, u64::MAX] {
        let path = f.write("version", &f.with_word(1, version));
        match attach(&path) {
            Err(AttachError::VersionMismatch { found, supported }) => {
                assert_eq!((found, supported), (version, LAYOUT_VERSION));
            }
            other => panic!(
                "version {version}: expected VersionMismatch, got {:?}",
                other.err()
            ),
        }
    }
}

#[test]
fn unfinished_regions_say_so() {
    let f = fixture();
    // The creator writes the version word last: a region caught before that.
    let path = f.write("unfinished", &f.with_word(1, 0));
    let err = attach(&path).err().expect("version 0");
    assert!(matches!(err, AttachError::Unfinished), "{err:?}");
    // Sized but nothing written yet.
    let path = f.write("zeros", &vec![0u8; f.image.len()]);
    let err = attach(&path).err().expect("all zero");
    assert!(matches!(err, AttachError::Unfinished), "{err:?}");
}

#[test]
fn random_bytes_are_foreign() {
    let f = fixture();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for (i, len) in [
        HEADER_BYTES,
        f.image.len(),
        f.image.len() + 4096,
        3 * 4096 + 5,
    ]
    .into_iter()
    .enumerate()
    {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        let path = f.write(&format!("random{i}"), &bytes);
        let err = attach(&path).err().expect("random bytes never attach");
        assert!(matches!(err, AttachError::ForeignMagic { .. }), "{err:?}");
        // Random bytes behind a valid magic and version: the checksum or sizes catch it.
        let mut framed = bytes.clone();
        framed[..WORD].copy_from_slice(&MAGIC.to_le_bytes());
        framed[WORD..2 * WORD].copy_from_slice(&LAYOUT_VERSION.to_le_bytes());
        let path = f.write(&format!("framed{i}"), &framed);
        let err = attach(&path).err().expect("random header never attaches");
        assert!(
            matches!(
                err,
                AttachError::Corrupt { .. } | AttachError::Truncated { .. }
            ),
            "{err:?}"
        );
    }
}

#[test]
fn scribbled_static_header_is_corrupt() {
    let f = fixture();
    // Size field, checksum and each static layout word in turn.
    for word in 2..20 {
        let original = u64::from_le_bytes(
            f.image[word * WORD..(word + 1) * WORD]
                .try_into()
                .expect("8 bytes"),
        );
        for value in [original ^ 1, original.wrapping_add(4096), 0, u64::MAX] {
            let path = f.write("static", &f.with_word(word, value));
            let err = attach(&path)
                .err()
                .unwrap_or_else(|| panic!("word {word} = {value:#x} attached"));
            assert!(
                matches!(
                    err,
                    AttachError::Corrupt { .. } | AttachError::Truncated { .. }
                ),
                "word {word} = {value:#x}: {err:?}"
            );
        }
    }
}

#[test]
fn a_longer_file_than_its_header_says_is_corrupt() {
    let f = fixture();
    let mut longer = f.image.clone();
    longer.extend_from_slice(&[0u8; 4096]);
    let path = f.write("longer", &longer);
    let err = attach(&path).err().expect("size disagrees");
    assert!(matches!(err, AttachError::Corrupt { .. }), "{err:?}");
}

/// One way to damage a region image.
#[derive(Debug, Clone)]
enum Damage {
    /// XOR one byte (never 0, so the byte changes).
    Flip { at: usize, xor: u8 },
    /// Overwrite one 64-bit word.
    Word { index: usize, value: u64 },
    /// Cut the file to this length (modulo its current length).
    Truncate { len: usize },
    /// Append zero bytes.
    Extend { extra: usize },
}

fn damage(len: usize) -> impl Strategy<Value = Damage> {
    let words = len / WORD;
    prop_oneof![
        // Header bytes are the ones attach reads: weight them.
        3 => (0..HEADER_BYTES, 1u8..=255).prop_map(|(at, xor)| Damage::Flip { at, xor }),
        3 => (0..len, 1u8..=255).prop_map(|(at, xor)| Damage::Flip { at, xor }),
        3 => (0..words, prop_oneof![Just(0u64), Just(u64::MAX), Just(1u64 << 40), any::<u64>()])
            .prop_map(|(index, value)| Damage::Word { index, value }),
        1 => (0..len).prop_map(|len| Damage::Truncate { len }),
        1 => (1..8192usize).prop_map(|extra| Damage::Extend { extra }),
    ]
}

fn apply(image: &[u8], damage: &[Damage]) -> Vec<u8> {
    let mut b = image.to_vec();
    for d in damage {
        match *d {
            Damage::Flip { at, xor } => {
                if let Some(byte) = b.get_mut(at) {
                    *byte ^= xor;
                }
            }
            Damage::Word { index, value } => {
                if let Some(w) = b.get_mut(index * WORD..(index + 1) * WORD) {
                    w.copy_from_slice(&value.to_le_bytes());
                }
            }
            Damage::Truncate { len } => b.truncate(len % (b.len() + 1)),
            Damage::Extend { extra } => b.resize(b.len() + extra, 0),
        }
    }
    b
}

/// Random damage (256 cases of 1-5 flips, word overwrites, truncations, extensions): attach
/// succeeds exactly when the length and the static header are intact, refuses with a typed
/// error otherwise, and a gate on a damaged body can be used without a panic.
#[test]
fn random_damage_never_panics() {
    let f = fixture();
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let case = AtomicUsize::new(0);
    let result = runner.run(
        &prop::collection::vec(damage(f.image.len()), 1..6),
        |damages| {
            let bytes = apply(&f.image, &damages);
            // A new file per case: a gate from an earlier case may still map its own file.
            let n = case.fetch_add(1, Ordering::Relaxed);
            let path = f.write(&format!("damaged-{n}"), &bytes);
            let header_changed = bytes.len() < STATIC_HEADER_BYTES
                || bytes[..STATIC_HEADER_BYTES] != f.image[..STATIC_HEADER_BYTES];
            let must_refuse = bytes.len() != f.image.len() || header_changed;
            match attach(&path) {
                Ok(gate) => {
                    prop_assert!(
                        !must_refuse,
                        "attached a region with a changed length or static header"
                    );
                    exercise_gate(&gate);
                }
                Err(e) => prop_assert!(
                    must_refuse,
                    "an intact static header and length were refused: {e:?}"
                ),
            }
            exercise_owner(&path);
            Ok(())
        },
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// The header's dynamic words (owner, heartbeat, price-book seqlock, slow-path tuning) are
/// not checksummed: scribbled, the region still attaches and stays usable.
#[test]
fn scribbled_dynamic_header_is_survivable() {
    let f = fixture();
    for word in 20..64 {
        for value in [0, 1 << 40, u64::MAX] {
            let path = f.write(&format!("dyn-{word}-{value}"), &f.with_word(word, value));
            let gate = attach(&path).expect("the static header is intact");
            exercise_gate(&gate);
            exercise_owner(&path);
        }
    }
}

/// Header words 32 and 33: how long an agent whose lane ran dry spins, then sleeps. Read
/// from the region, so a scribbled value must be bounded by the client, not trusted (an
/// unbounded spin would hang `reserve`, a huge wait would overflow `Instant + Duration`).
const SLOW_PATH_WORDS: [usize; 2] = [32, 33];

#[test]
fn scribbled_slow_path_tuning_is_survivable() {
    let f = fixture();
    for word in SLOW_PATH_WORDS {
        for value in [1 << 40, u64::MAX] {
            let path = f.write(&format!("slow-{word}-{value}"), &f.with_word(word, value));
            let gate = attach(&path).expect("the static header is intact");
            exercise_gate(&gate);
        }
    }
}
