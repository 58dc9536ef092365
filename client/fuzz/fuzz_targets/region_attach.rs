//! A region file with arbitrary contents, opened the way an agent (`Gate::attach`) and a
//! restarted sidecar (`Region::open_owner`) open it. Either open returns a typed error, or
//! every call made through the region returns (whatever it returns): no panic, no SIGBUS,
//! no read outside the mapping.
//!
//! Input: one flags byte, then the file's bytes. Random bytes stop at the magic or the
//! checksum, so the flags let the fuzzer stamp a valid magic and version (bit 0), a size
//! field equal to the file's length (bit 1) and a correct header checksum (bit 2): with all
//! three set, mutations of a real region reach the layout checks and everything after them.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use libfuzzer_sys::fuzz_target;
use tollgate_client::layout::{LAYOUT_VERSION, MAGIC, WORD};
use tollgate_client::{Call, Gate, Region, TaskSpec, TenantId};
use tollgate_core::{Credits, Tier, Usage};

const C: u64 = 1_000_000;
/// Checksummed static header words: `[4, 20)`, the checksum itself at word 3.
const STATIC_START: usize = 4;
const STATIC_END: usize = 20;

/// A fresh file for each input. Rewriting one path in place would truncate a file that a
/// previous input's mapping may still cover (a thread's lane table is dropped after
/// `thread::scope` returns), and reading a mapping past the end of its file is SIGBUS.
fn file() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = DIR.get_or_init(|| {
        // tmpfs when there is one: a region lives on tmpfs in a pod, and it is faster.
        let shm = Path::new("/dev/shm");
        if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        }
    });
    let n = N.fetch_add(1, Ordering::Relaxed);
    dir.join(format!("tollgate-fuzz-region-{}-{n}", std::process::id()))
}

/// FNV-1a over the static header words, as the client computes it.
fn checksum(words: &[u64]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for w in words {
        for b in w.to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

fn put(image: &mut [u8], word: usize, value: u64) {
    if let Some(slot) = image.get_mut(word * WORD..(word + 1) * WORD) {
        slot.copy_from_slice(&value.to_le_bytes());
    }
}

fn stamp(flags: u8, image: &mut [u8]) {
    if flags & 1 != 0 {
        put(image, 0, MAGIC);
        put(image, 1, LAYOUT_VERSION);
    }
    if flags & 2 != 0 {
        let len = image.len() as u64;
        put(image, 2, len);
    }
    if flags & 4 != 0 && image.len() >= STATIC_END * WORD {
        let words: Vec<u64> = image[STATIC_START * WORD..STATIC_END * WORD]
            .chunks_exact(WORD)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        put(image, 3, checksum(&words));
    }
}

/// What an agent does: resolve names, reserve, commit (an overrun too), cancel. On a
/// thread of its own, so the thread's exit (which hands its lanes back) runs too; joined
/// explicitly, because only `join` waits for the thread's thread-local destructors.
fn agent(gate: &Gate) {
    std::thread::scope(|s| {
        let thread = s.spawn(|| {
            let tenants = [
                gate.tenant("acme").ok(),
                Some(TenantId(0)),
                Some(TenantId(1)),
            ];
            let model = gate.model("gpt-test").ok();
            // The name and task tables come from the file too.
            let agent = gate.agent("fuzz-agent").ok();
            let feature = gate.feature("fuzz-feature").unwrap_or_default();
            let task = gate
                .open_task(
                    &TaskSpec::new("fuzz-task")
                        .budget(Credits(10 * C))
                        .max_calls(3)
                        .wait(std::time::Duration::ZERO),
                )
                .ok();
            for tenant in tenants.into_iter().flatten() {
                for tier in [Tier::Interactive, Tier::Background] {
                    let call = Call::fixed(Credits(C)).tenant(tenant).tier(tier);
                    if let Ok(h) = gate.reserve(&call) {
                        let _ = h.commit_credits(Credits(C / 2));
                    }
                    if let Ok(h) = gate.reserve(&call) {
                        h.cancel();
                    }
                    let mut named = call.feature(feature);
                    if let Some(a) = agent {
                        named = named.agent(a);
                    }
                    if let Some(t) = &task {
                        named = named.task(t);
                    }
                    if let Ok(h) = gate.reserve(&named) {
                        let _ = h.commit_with_outcomes(Usage::new(10, 10), 2);
                    }
                    if let Some(m) = &model {
                        let call = Call::model(m).tenant(tenant).tier(tier).input_tokens(100);
                        if let Ok(h) = gate.reserve(&call) {
                            let _ = h.commit(Usage::new(100, 70));
                        }
                    }
                }
            }
            if let Some(t) = &task {
                let _ = t.complete();
            }
        });
        thread.join().expect("the agent thread does not panic");
    });
}

/// What a restarted sidecar does with a region it finds: audit, then per lane what the
/// sidecar's drain loop does (peek, release), reclaim, top up, revoke.
///
/// `Region::drain_all` is left out: it sums the lanes' `skipped` counts with `+=`, and a
/// lane's count follows its ring head and tail, so two scribbled rings overflow it (a
/// finding, reported in docs/fuzzing.md with its input); the sidecar drains lane by lane.
fn owner(region: &Region) {
    let _ = region.audit().check();
    let mut out = Vec::new();
    for info in region.lanes().into_iter().take(8) {
        out.clear();
        if let Ok((_, upto)) = region.peek(info.lane, &mut out) {
            let _ = region.release(info.lane, upto);
        }
        let _ = region.drain(info.lane, &mut out);
    }
    let _ = region.reclaim_dead();
    let _ = region.processes();
    for id in 0..64 {
        let _ = region.name(id);
    }
    for t in region.tasks() {
        let _ = region.task(t.task);
    }
    let _ = region.demands();
    for info in region.lanes().into_iter().take(8) {
        let _ = region.top_up(info.lane, Credits(C));
        let _ = region.revoke(info.lane, Credits(C));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut image = rest.to_vec();
    stamp(flags, &mut image);
    let path = file();
    std::fs::write(&path, &image).expect("write the region file");
    match Gate::attach(&path) {
        // The slow-path wait comes from the file too: a hang here is a finding (-timeout).
        Ok(gate) => agent(&gate),
        Err(e) => assert!(!e.to_string().is_empty(), "an error names its cause"),
    }
    match Region::open_owner(&path) {
        Ok(region) => owner(&region),
        Err(e) => assert!(!e.to_string().is_empty(), "an error names its cause"),
    }
    // Unlinking leaves any mapping still open intact.
    let _ = std::fs::remove_file(&path);
});
