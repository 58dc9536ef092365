//! Unit tests on real mapped regions in a temp dir (std atomics).

use std::io::Write;

use tollgate_core::{Credits, Horizon, Initiator, LimitKind, Tier};

use super::*;
use crate::layout::{H_VERSION, HEADER_WORDS, WORD};

pub(crate) const C: u64 = 1_000_000; // one credit in micro-credits

pub(crate) fn small_config() -> RegionConfig {
    RegionConfig {
        pools: 8,
        tenants: 2,
        lanes: 16,
        slots_per_lane: 8,
        ring_capacity: 8,
        price_book_bytes: 4096,
        names: 64,
        tasks: 8,
    }
}

/// A region with tenant 0 "acme" whose every class is subject to 4 pools (wallet,
/// per-minute, per-hour, agent instance), each granted `grant` micro-credits, with a
/// floor on pool 0 for lower tiers.
pub(crate) fn setup(dir: &tempfile::TempDir, grant: u64) -> (Region, std::path::PathBuf) {
    let path = dir.path().join("region");
    let r = Region::create(&path, small_config()).unwrap();
    let limits = [
        LimitKind::TenantWallet,
        LimitKind::TenantWindow(Horizon::Minute),
        LimitKind::TenantWindow(Horizon::Hour),
        LimitKind::Agent(Horizon::Day),
    ];
    for (p, l) in limits.iter().enumerate() {
        let floors = if p == 0 {
            [Credits(0), Credits(grant / 4), Credits(grant / 2)]
        } else {
            [Credits(0); 3]
        };
        r.configure_pool(p, &PoolSpec { limit: *l, floors })
            .unwrap();
        r.grant(p, Credits(grant)).unwrap();
    }
    let all = vec![0, 1, 2, 3];
    r.configure_tenant(
        0,
        &TenantSpec {
            name: "acme".into(),
            classes: [
                [all.clone(), all.clone()],
                [all.clone(), all.clone()],
                [all.clone(), all],
            ],
        },
    )
    .unwrap();
    r.set_slow_path(10, std::time::Duration::from_micros(10));
    (r, path)
}

/// A plain reservation request of `amount`.
pub(crate) fn req(amount: u64) -> crate::lane::Request {
    crate::lane::Request {
        amount,
        ..Default::default()
    }
}

fn lane_of(r: &Region, tier: Tier) -> usize {
    r.lanes()
        .into_iter()
        .find(|l| l.key.map(|k| k.tier) == Some(tier))
        .map(|l| l.lane)
        .expect("a lane for the tier")
}

#[test]
fn reserve_commit_cancel_conserve_credits() {
    let dir = tempfile::tempdir().unwrap();
    let (r, path) = setup(&dir, 1000 * C);
    let gate = Gate::attach(&path).unwrap();
    let acme = gate.tenant("acme").unwrap();
    // The first reserve claims a lane, finds it dry and is denied (no sidecar running).
    let call = Call::fixed(Credits(10 * C)).tenant(acme);
    match gate.reserve(&call) {
        Err(ReserveError::Denied(d)) => {
            assert_eq!(d.limit, None);
            assert_eq!(d.needed, Credits(10 * C));
        }
        other => panic!("expected a denial, got {other:?}"),
    }
    let lane = lane_of(&r, Tier::Interactive);
    assert_eq!(r.demands(), vec![(lane, Credits(10 * C))]);
    r.top_up(lane, Credits(100 * C)).unwrap();
    assert!(r.demands().is_empty());
    let a = gate.reserve(&call).unwrap();
    let b = gate.reserve(&call).unwrap();
    assert_eq!(a.commit_credits(Credits(4 * C)).unwrap(), Credits(4 * C));
    b.cancel();
    let c = gate.reserve(&call).unwrap();
    drop(c); // = cancel
    let d = gate.reserve(&call).unwrap();
    d.commit_credits(Credits(12 * C)).unwrap(); // overrun of 2 credits
    let audit = r.audit();
    audit.check().unwrap();
    let lb = &audit.lanes[0];
    assert_eq!(lb.consumed, 14 * C);
    assert_eq!(lb.overrun, 2 * C);
    assert_eq!(lb.available + lb.local, 86 * C);
    let mut recs = Vec::new();
    let st = r.drain(lane, &mut recs).unwrap();
    assert_eq!(st.records, 2);
    assert_eq!(recs[0].actual, Credits(4 * C));
    assert_eq!(recs[1].actual, Credits(12 * C));
    let audit = r.audit();
    audit.check().unwrap();
    for p in &audit.pools[..4] {
        assert_eq!(p.consumed, 16 * C, "paid 14 + overrun 2");
        assert_eq!(p.overrun, 2 * C);
        assert_eq!(p.carved, 86 * C);
    }
    // Revoke takes back what is in `avail` at once, and asks the lane to flush its local
    // credits; the next reserve does, and a second revoke takes those. Held credits stay.
    let held = gate.reserve(&call).unwrap();
    let first = r.revoke(lane, Credits::MAX).unwrap();
    assert!(
        r.audit().lanes[0].local > 0,
        "the agent still has local credits"
    );
    gate.reserve(&call).unwrap().cancel();
    let second = r.revoke(lane, Credits::MAX).unwrap();
    assert!(second.0 > 0, "the flush made local credits revocable");
    let a = r.audit();
    a.check().unwrap();
    let lb = &a.lanes[0];
    assert_eq!(first.0 + second.0 + lb.available + lb.local, 76 * C);
    assert_eq!(lb.held, 10 * C);
    held.commit_credits(Credits(C)).unwrap();
    r.audit().check().unwrap();
}

#[test]
fn tier_floor_keeps_budget_for_interactive_work() {
    let dir = tempfile::tempdir().unwrap();
    let (r, path) = setup(&dir, 100 * C);
    let gate = Gate::attach(&path).unwrap();
    let bg = Call::fixed(Credits(C)).tier(Tier::Background);
    assert!(gate.reserve(&bg).is_err()); // claims the lane
    let lane = lane_of(&r, Tier::Background);
    // Pool 0 keeps 50 credits for tiers below scheduler... background floor is 50.
    r.top_up(lane, Credits(50 * C)).unwrap();
    match r.top_up(lane, Credits(C)) {
        Err(SidecarError::Insufficient { pool: 0, limit, .. }) => {
            assert_eq!(limit, LimitKind::TenantWallet)
        }
        other => panic!("expected the floor to bind, got {other:?}"),
    }
    // The agent's denial names the limit the sidecar recorded.
    let lane_credits = Call::fixed(Credits(51 * C)).tier(Tier::Background);
    match gate.reserve(&lane_credits) {
        Err(ReserveError::Denied(d)) => {
            assert_eq!(d.limit, Some(LimitKind::TenantWallet));
            assert_eq!(d.tier, Tier::Background);
            assert!(d.retry_after >= std::time::Duration::from_millis(40));
        }
        other => panic!("expected a denial, got {other:?}"),
    }
    // Interactive work can still take the rest.
    let _ = gate.reserve(&Call::fixed(Credits(C)));
    let ilane = lane_of(&r, Tier::Interactive);
    r.top_up(ilane, Credits(50 * C)).unwrap();
    r.audit().check().unwrap();
    let info = r.lanes().into_iter().find(|l| l.lane == lane).unwrap();
    assert_eq!(info.last_denial, Some(LimitKind::TenantWallet));
    assert!(info.denials >= 1);
}

#[test]
fn local_task_budget_denies_the_task_not_the_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let (r, path) = setup(&dir, 1000 * C);
    let gate = Gate::attach(&path).unwrap();
    let _ = gate.reserve(&Call::fixed(Credits(C)));
    r.top_up(lane_of(&r, Tier::Interactive), Credits(100 * C))
        .unwrap();
    let task = LocalTask::new(Credits(10 * C));
    let call = Call::fixed(Credits(4 * C)).local_task(&task);
    let a = gate.reserve(&call).unwrap();
    let b = gate.reserve(&call).unwrap();
    match gate.reserve(&call) {
        Err(ReserveError::TaskExhausted {
            needed,
            remaining,
            task,
            why,
        }) => {
            assert_eq!((task.as_str(), why), ("", TaskLimit::Budget));
            assert_eq!(needed, Credits(4 * C));
            assert_eq!(remaining, Credits(2 * C));
        }
        other => panic!("expected the task to be out, got {other:?}"),
    }
    a.commit_credits(Credits(C)).unwrap();
    assert_eq!(task.remaining(), Credits(5 * C));
    b.cancel();
    assert_eq!(task.remaining(), Credits(9 * C));
    // Without the task the tenant still has budget.
    gate.reserve(&Call::fixed(Credits(4 * C))).unwrap().cancel();
    r.audit().check().unwrap();
}

#[test]
fn commit_on_another_thread_is_settled_by_the_owner() {
    let dir = tempfile::tempdir().unwrap();
    let (r, path) = setup(&dir, 1000 * C);
    let gate = Gate::attach(&path).unwrap();
    let _ = gate.reserve(&Call::fixed(Credits(C)));
    let lane = lane_of(&r, Tier::Interactive);
    r.top_up(lane, Credits(100 * C)).unwrap();
    let call = Call::fixed(Credits(10 * C));
    let a = gate.reserve(&call).unwrap();
    let b = gate.reserve(&call).unwrap();
    std::thread::scope(|s| {
        s.spawn(move || a.commit_credits(Credits(3 * C)).unwrap());
        s.spawn(move || drop(b));
    });
    // Committed but not settled yet: still balanced (the slots hold it).
    r.audit().check().unwrap();
    assert_eq!(r.audit().lanes[0].held, 20 * C);
    // The owner's next reserve settles both.
    gate.reserve(&call).unwrap().cancel();
    let a = r.audit();
    a.check().unwrap();
    assert_eq!(a.lanes[0].held, 0);
    assert_eq!(a.lanes[0].consumed, 3 * C);
    assert_eq!(a.lanes[0].available + a.lanes[0].local, 97 * C);
}

/// A per-token price book of `version` charging `input` and `output` micro-credits per
/// million tokens for model "m".
fn token_book(version: u64, input: u64, output: u64) -> tollgate_core::rating::PriceBook {
    use tollgate_core::rating::{ModelPrice, PriceBook, PriceBookSpec, Pricing};
    PriceBook::new(PriceBookSpec {
        version,
        request_price: Credits::ZERO,
        default_max_output_tokens: 1_000,
        models: vec![ModelPrice {
            name: "m".into(),
            pricing: Pricing::PerToken {
                input_per_million: Credits(input),
                output_per_million: Credits(output),
            },
            max_output_tokens: None,
        }],
    })
    .unwrap()
}

#[test]
fn a_commit_rates_with_the_book_current_at_commit() {
    use tollgate_core::Usage;
    let dir = tempfile::tempdir().unwrap();
    let (r, path) = setup(&dir, 1000 * C);
    r.publish_price_book(&token_book(1, C, 2 * C)).unwrap();
    let gate = Gate::attach(&path).unwrap();
    let m = gate.model("m").unwrap();
    let call = Call::model(&m).input_tokens(1_000).max_output_tokens(1_000);
    let _ = gate.reserve(&Call::fixed(Credits(C)));
    r.top_up(lane_of(&r, Tier::Interactive), Credits(100 * C))
        .unwrap();
    let used = Usage::new(500, 250);
    // Same book at reserve and commit: rated with the prices the reservation carries.
    let a = gate.reserve(&call).unwrap();
    assert_eq!(a.amount(), Credits(3_000));
    assert_eq!(a.commit(used).unwrap(), Credits(1_000));
    // A new book between reserve and commit: the commit is rated with it, on the owner
    // thread and on another thread alike.
    let a = gate.reserve(&call).unwrap();
    let b = gate.reserve(&call).unwrap();
    r.publish_price_book(&token_book(2, 3 * C, 4 * C)).unwrap();
    assert_eq!(a.commit(used).unwrap(), Credits(2_500));
    let got = std::thread::scope(|s| s.spawn(move || b.commit(used).unwrap()).join().unwrap());
    assert_eq!(got, Credits(2_500));
    // The handle resolved in the old book still rates by the new one (by name), and so
    // does one resolved again.
    let old = gate.reserve(&call).unwrap();
    assert_eq!(old.amount(), Credits(7_000));
    assert_eq!(old.commit(used).unwrap(), Credits(2_500));
    let m2 = gate.model("m").unwrap();
    let call2 = Call::model(&m2)
        .input_tokens(1_000)
        .max_output_tokens(1_000);
    let new = gate.reserve(&call2).unwrap();
    assert_eq!(new.amount(), Credits(7_000));
    assert_eq!(new.commit(used).unwrap(), Credits(2_500));
    gate.reserve(&Call::fixed(Credits(C))).unwrap().cancel();
    let a = r.audit();
    a.check().unwrap();
    assert_eq!(a.lanes[0].consumed, 1_000 + 4 * 2_500);
}

#[test]
fn a_commit_on_a_thread_with_its_own_lane_takes_the_remote_path() {
    let dir = tempfile::tempdir().unwrap();
    let (r, path) = setup(&dir, 1000 * C);
    let gate = Gate::attach(&path).unwrap();
    let call = Call::fixed(Credits(10 * C));
    let _ = gate.reserve(&Call::fixed(Credits(C)));
    r.top_up(lane_of(&r, Tier::Interactive), Credits(100 * C))
        .unwrap();
    let mine = gate.reserve(&call).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            // This thread owns a lane of the same class; the main thread's reservation
            // must still be settled through the main thread's lane.
            let _ = gate.reserve(&Call::fixed(Credits(C)));
            for lane in r.lanes().into_iter().filter(|l| l.key.is_some()) {
                if lane.available.0 < 50 * C {
                    r.top_up(lane.lane, Credits(50 * C)).unwrap();
                }
            }
            let own = gate.reserve(&call).unwrap();
            assert_eq!(mine.commit_credits(Credits(4 * C)).unwrap(), Credits(4 * C));
            assert_eq!(own.commit_credits(Credits(2 * C)).unwrap(), Credits(2 * C));
            r.audit().check().unwrap();
        })
        // `join` waits for the thread's exit (its lanes parked), destructors included.
        .join()
        .unwrap();
    });
    // The main thread settles the commit made on the other thread at its next reserve;
    // the other thread's lane was settled and parked when it exited.
    gate.reserve(&Call::fixed(Credits(C))).unwrap().cancel();
    let a = r.audit();
    a.check().unwrap();
    let consumed: u64 = a.lanes.iter().map(|l| l.consumed).sum();
    assert_eq!(consumed, 6 * C);
    assert!(a.lanes.iter().all(|l| l.held == 0));
}

#[test]
fn a_commit_from_a_thread_local_destructor_after_the_lanes_were_parked() {
    use std::cell::RefCell;
    struct CommitOnDrop(RefCell<Option<Reservation<'static>>>);
    impl Drop for CommitOnDrop {
        fn drop(&mut self) {
            if let Some(res) = self.0.borrow_mut().take() {
                let _ = res.commit_credits(Credits(3 * C));
            }
        }
    }
    thread_local! {
        static HELD: CommitOnDrop = const { CommitOnDrop(RefCell::new(None)) };
    }
    let dir = tempfile::tempdir().unwrap();
    let (r, path) = setup(&dir, 1000 * C);
    let gate: &'static Gate = Box::leak(Box::new(Gate::attach(&path).unwrap()));
    let r = &r;
    std::thread::scope(|s| {
        s.spawn(move || {
            // `HELD` is set up before the gate's thread state, so (destructors running in
            // reverse order) it is dropped after the thread's lanes were settled and
            // parked: the commit in its destructor must take the remote path.
            HELD.with(|_| {});
            let _ = gate.reserve(&Call::fixed(Credits(C)));
            r.top_up(lane_of(r, Tier::Interactive), Credits(100 * C))
                .unwrap();
            let res = gate.reserve(&Call::fixed(Credits(10 * C))).unwrap();
            HELD.with(|h| *h.0.borrow_mut() = Some(res));
        })
        // `join` waits for the thread's exit, destructors included (the scope's own
        // wait does not).
        .join()
        .unwrap();
    });
    let a = r.audit();
    a.check().unwrap();
    // Whichever destructor ran first, the commit was applied exactly once.
    assert_eq!(a.lanes[0].consumed, 3 * C);
    assert_eq!(a.lanes[0].held, 0);
}

#[test]
fn price_book_rates_reservations_and_commits() {
    use tollgate_core::rating::{ModelPrice, PriceBook, PriceBookSpec, Pricing};
    let dir = tempfile::tempdir().unwrap();
    let (r, path) = setup(&dir, 1000 * C);
    let spec: PriceBookSpec = serde_json::from_value(serde_json::json!({
        "version": 7,
        "default_max_output_tokens": 1000,
        "models": [],
    }))
    .unwrap();
    let _ = (ModelPrice::clone, Pricing::clone);
    let book = PriceBook::new(spec).unwrap();
    r.publish_price_book(&book).unwrap();
    let gate = Gate::attach(&path).unwrap();
    assert!(matches!(gate.model("nope"), Err(ReserveError::Rating(_))));
}

fn write_file(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.path().join(name);
    std::fs::File::create(&p).unwrap().write_all(bytes).unwrap();
    p
}

#[test]
fn attach_reports_each_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    assert!(matches!(
        Gate::attach(&missing),
        Err(AttachError::NotFound { .. })
    ));

    let empty = write_file(&dir, "empty", &[]);
    assert!(matches!(
        Gate::attach(&empty),
        Err(AttachError::Truncated { actual: 0, .. })
    ));

    let short = write_file(&dir, "short", &[0u8; 100]);
    assert!(matches!(
        Gate::attach(&short),
        Err(AttachError::Truncated { .. })
    ));

    let zero = write_file(&dir, "zero", &vec![0u8; HEADER_WORDS * WORD]);
    assert!(matches!(Gate::attach(&zero), Err(AttachError::Unfinished)));

    let foreign = write_file(&dir, "foreign", &vec![0x5Au8; 2 * HEADER_WORDS * WORD]);
    assert!(matches!(
        Gate::attach(&foreign),
        Err(AttachError::ForeignMagic { .. })
    ));

    // A good region, then damaged copies of it.
    let good = dir.path().join("good");
    drop(Region::create(&good, small_config()).unwrap());
    let bytes = std::fs::read(&good).unwrap();
    Gate::attach(&good).unwrap();

    let mut unfinished = bytes.clone();
    unfinished[H_VERSION * WORD..(H_VERSION + 1) * WORD].fill(0);
    let p = write_file(&dir, "unfinished", &unfinished);
    assert!(matches!(Gate::attach(&p), Err(AttachError::Unfinished)));

    let mut version = bytes.clone();
    version[H_VERSION * WORD] = 99;
    let p = write_file(&dir, "version", &version);
    assert!(matches!(
        Gate::attach(&p),
        Err(AttachError::VersionMismatch { found: 99, .. })
    ));

    let p = write_file(&dir, "truncated", &bytes[..bytes.len() - 4096]);
    assert!(matches!(
        Gate::attach(&p),
        Err(AttachError::Truncated { .. })
    ));

    let mut longer = bytes.clone();
    longer.extend_from_slice(&[0u8; 4096]);
    let p = write_file(&dir, "longer", &longer);
    assert!(matches!(Gate::attach(&p), Err(AttachError::Corrupt { .. })));

    let mut counts = bytes.clone();
    counts[crate::layout::H_LANES * WORD] ^= 1;
    let p = write_file(&dir, "checksum", &counts);
    assert!(matches!(
        Gate::attach(&p),
        Err(AttachError::Corrupt {
            what: "header checksum"
        })
    ));

    // A consistent checksum over impossible counts is still refused.
    let mut forged = bytes;
    let lanes_at = crate::layout::H_LANES * WORD;
    forged[lanes_at..lanes_at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    let mut st = [0u64; crate::layout::STATIC_END - crate::layout::STATIC_START];
    for (i, v) in st.iter_mut().enumerate() {
        let at = (crate::layout::STATIC_START + i) * WORD;
        *v = u64::from_le_bytes(forged[at..at + 8].try_into().unwrap());
    }
    let sum = crate::layout::checksum(&st);
    let at = crate::layout::H_CHECKSUM * WORD;
    forged[at..at + 8].copy_from_slice(&sum.to_le_bytes());
    let p = write_file(&dir, "forged", &forged);
    assert!(matches!(Gate::attach(&p), Err(AttachError::Corrupt { .. })));
    assert!(matches!(
        Region::open_owner(&p),
        Err(AttachError::Corrupt { .. })
    ));
}

#[test]
fn create_rejects_bad_configs_and_open_owner_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let bad = RegionConfig {
        ring_capacity: 3,
        ..small_config()
    };
    assert!(matches!(
        Region::create(dir.path().join("r"), bad),
        Err(CreateError::Config(_))
    ));
    let (r, path) = setup(&dir, 10 * C);
    let (_, epoch) = r.owner();
    drop(r);
    let r2 = Region::open_owner(&path).unwrap();
    assert_eq!(r2.recovery(), JournalRecovery::Clean);
    assert_eq!(r2.owner().1, epoch + 1);
    assert_eq!(r2.tenant_index("acme"), Some(0));
    r2.audit().check().unwrap();
    let _ = Initiator::Agent;
}

/// A tiny deterministic PRNG for the interleaving tests (splitmix64).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Agent threads reserve, commit (here, or on another thread), cancel and drop at random
/// while a sidecar thread tops lanes up on demand, revokes and drains; at the end every
/// equation holds exactly and the committed amounts are exactly what was consumed.
#[test]
fn random_interleavings_on_a_mapped_region_conserve_credits() {
    use std::sync::{Mutex, mpsc};
    let dir = tempfile::tempdir().unwrap();
    let (r, path) = setup(&dir, 100_000 * C);
    r.set_slow_path(50, std::time::Duration::from_micros(200));
    let gate: &'static Gate = Box::leak(Box::new(Gate::attach(&path).unwrap()));
    let committed = std::sync::Arc::new(Mutex::new((0u64, 0u64))); // (sum of actuals, count)
    let done = std::sync::Arc::new(Mutex::new(false));
    let (tx, rx) = mpsc::channel::<(Reservation<'static>, u64)>();
    let remote = {
        let committed = committed.clone();
        std::thread::spawn(move || {
            for (h, actual) in rx {
                h.commit_credits(Credits(actual)).unwrap();
                let mut c = committed.lock().unwrap();
                c.0 += actual;
                c.1 += 1;
            }
        })
    };
    let agents: Vec<_> = (0..3u64)
        .map(|i| {
            let committed = committed.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut rng = Rng(i + 1);
                let mut open: Vec<Reservation<'static>> = Vec::new();
                for _ in 0..3000 {
                    let tier = Tier::ALL[rng.below(3) as usize];
                    let amount = 1 + rng.below(3 * C);
                    if let Ok(h) = gate.reserve(&Call::fixed(Credits(amount)).tier(tier)) {
                        open.push(h);
                    }
                    if open.len() > 4 || rng.below(3) == 0 {
                        let Some(h) = open.pop() else { continue };
                        let actual = rng.below(h.amount().0 * 3 / 2 + 1);
                        match rng.below(5) {
                            0 => h.cancel(),
                            1 => drop(h),
                            2 => tx.send((h, actual)).unwrap(),
                            _ => {
                                h.commit_credits(Credits(actual)).unwrap();
                                let mut c = committed.lock().unwrap();
                                c.0 += actual;
                                c.1 += 1;
                            }
                        }
                    }
                }
                // The rest are dropped (cancelled) here; the thread's exit flushes its
                // local credits back to `avail`.
            })
        })
        .collect();
    drop(tx);
    std::thread::scope(|s| {
        let r = &r;
        let stop = done.clone();
        s.spawn(move || {
            let mut rng = Rng(99);
            let mut records = Vec::new();
            while !*stop.lock().unwrap() {
                for (lane, want) in r.demands() {
                    let _ = r.top_up(lane, Credits(want.0.max(20 * C)));
                }
                if rng.below(20) == 0 {
                    for info in r.lanes() {
                        let _ = r.revoke(info.lane, Credits(rng.below(10 * C)));
                    }
                }
                r.drain_all(&mut records).unwrap();
                std::thread::yield_now();
            }
        });
        for a in agents {
            a.join().unwrap();
        }
        remote.join().unwrap();
        *done.lock().unwrap() = true;
    });
    let mut records = Vec::new();
    r.drain_all(&mut records).unwrap();
    let audit = r.audit();
    audit.check().unwrap();
    let (sum, count) = *committed.lock().unwrap();
    let consumed: u64 = audit.lanes.iter().map(|l| l.consumed + l.overrun).sum();
    assert_eq!(
        consumed, sum,
        "every committed credit consumed exactly once: {:#?}",
        audit.lanes
    );
    assert!(count > 100, "the test exercised commits ({count})");
    for l in &audit.lanes {
        assert_eq!(l.held, 0, "nothing held after every reservation ended");
        assert_eq!(l.local, 0, "exiting threads flushed their local credits");
    }
    // All of it reached the pools too.
    for p in &audit.pools[..4] {
        assert_eq!(p.consumed, sum);
    }
}

/// A simulated agent process (a claim naming a process that does not exist) dies after
/// each step of reserve + commit; `reclaim_dead` (liveness from holder locks) returns everything
/// exactly once on a real mapped region.
#[test]
fn dead_process_is_reclaimed_exactly_once() {
    use crate::lane::View;
    use crate::layout::{L_CLAIM, L_KEY};
    use crate::sync::REL;
    for crash in [1, 2, 3, 11, 12, 31, 32, 33, 34, 35, 0] {
        let dir = tempfile::tempdir().unwrap();
        let (r, path) = setup(&dir, 100 * C);
        let (mem, layout) = crate::region::open_and_validate(&path).unwrap();
        let v = View {
            w: mem.words(),
            l: &layout,
        };
        // A holder with no file in the holders folder: its process is gone.
        let ghost = crate::holder::HolderId::new(0xDEAD).unwrap();
        assert!(!r.is_alive(ghost));
        let key = LaneKey {
            tenant: 0,
            tier: Tier::Interactive,
            initiator: Initiator::Human,
            agent: 0,
            task: None,
        };
        v.lw(3, L_CLAIM)
            .store(crate::holder::claimed_by(0, ghost), REL);
        v.lw(3, L_KEY).store(key.encode(), REL);
        r.top_up(3, Credits(50 * C)).unwrap();
        let mut o = v.owner_for(3);
        let mut dead = false;
        let mut step = |s: u32| {
            dead |= s == crash;
            !dead
        };
        // Held and never committed: the process "dies" holding it. It pulls all 50.
        let _held = v.reserve(&mut o, &req(7 * C), &mut |_| true).unwrap();
        r.top_up(3, Credits(40 * C)).unwrap();
        // 45 > the 43 left locally: this one pulls again, then takes, then settles.
        if let Ok(slot) = v.reserve(&mut o, &req(45 * C), &mut step) {
            let _ = v.settle(&mut o, slot, 46 * C, false, &mut step);
        }
        assert_eq!(!step(u32::MAX), crash != 0, "crash point {crash} reached");
        r.audit().check().unwrap();
        let reports = r.reclaim_dead().unwrap();
        assert_eq!(reports.len(), 1, "crash at {crash}");
        assert_eq!(reports[0].lane, 3);
        assert!(r.reclaim_dead().unwrap().is_empty(), "exactly once");
        let a = r.audit();
        a.check().unwrap();
        let charged = crash == 0 || crash >= 31;
        let lane = a.lanes.iter().find(|l| l.lane == 3).unwrap();
        assert_eq!(lane.consumed, if charged { 45 * C } else { 0 });
        assert_eq!(lane.overrun, if charged { C } else { 0 });
        for p in &a.pools[..4] {
            assert_eq!(p.carved, 0);
            assert_eq!(p.available + p.consumed, 100 * C + p.overrun);
        }
        assert!(r.lanes().iter().all(|l| l.lane != 3), "lane freed");
    }
}

#[test]
fn handles_can_cross_threads() {
    fn send<T: Send>() {}
    fn sync<T: Sync>() {}
    send::<Gate>();
    sync::<Gate>();
    send::<Reservation<'static>>();
    sync::<Task>();
    send::<Region>();
    sync::<Region>();
}

proptest::proptest! {
    /// The gate's 64-bit per-token rating gives exactly the price book's result, for
    /// every price and token count (near-overflow ones take the book's own path).
    #[test]
    fn gate_token_rating_equals_the_price_book(
        ip in proptest::prop_oneof![0u64..10_000_000, proptest::num::u64::ANY],
        op in proptest::prop_oneof![0u64..10_000_000, proptest::num::u64::ANY],
        input in proptest::prop_oneof![0u64..1_000_000, proptest::num::u64::ANY],
        output in proptest::prop_oneof![0u64..1_000_000, proptest::num::u64::ANY],
    ) {
        use tollgate_core::rating::{ModelPrice, PriceBook, PriceBookSpec, Pricing};
        use tollgate_core::{RatingInput, Usage};
        let book = PriceBook::new(PriceBookSpec {
            version: 3,
            request_price: Credits::ZERO,
            default_max_output_tokens: 1_000,
            models: vec![ModelPrice {
                name: "m".into(),
                pricing: Pricing::PerToken {
                    input_per_million: Credits(ip),
                    output_per_million: Credits(op),
                },
                max_output_tokens: None,
            }],
        })
        .unwrap();
        let r = book.model("m").unwrap();
        let usage = Usage { input_tokens: input, output_tokens: output };
        let want = book.rate(&r, &RatingInput::new(usage));
        let got = crate::gate::rate_tokens(&book, &r, input, output, Initiator::Human);
        proptest::prop_assert_eq!(&got, &want);
        // The prices a reservation carries to its commit give the same, when they fit.
        let p = crate::gate::per_token_prices(&book, &r);
        proptest::prop_assert_eq!(p, Some((ip, op)));
        if let Some(c) = p.and_then(|p| crate::gate::rate_per_token(p, input, output)) {
            proptest::prop_assert_eq!(Ok(Credits(c)), want);
        }
    }
}

/// A limit the sidecar knows cannot be refilled soon is denied at once: no demand raised
/// (the sidecar is not woken), the limit named, the time left as the retry hint. Cleared,
/// the dry lane waits for a top-up and asks for one again.
#[test]
fn a_limit_marked_final_is_denied_at_once_without_a_demand() {
    let dir = tempfile::tempdir().unwrap();
    let (r, path) = setup(&dir, 100 * C);
    let gate = Gate::attach(&path).unwrap();
    let call = Call::fixed(Credits(C));
    assert!(gate.reserve(&call).is_err(), "claims the lane, dry");
    let lane = lane_of(&r, Tier::Interactive);
    // The dry reserve above asked for a top-up; the sidecar answers "not before 30 s".
    assert_eq!(r.demands().len(), 1);
    let until = std::time::SystemTime::now() + std::time::Duration::from_secs(30);
    r.record_denial_until(lane, LimitKind::HardCap, until)
        .unwrap();
    // Forget the first demand, as the sidecar does once it has seen it.
    let v = r.view();
    v.lw(lane, crate::layout::L_DEMAND)
        .store(0, crate::sync::REL);
    for _ in 0..1_000 {
        match gate.reserve(&call) {
            Err(ReserveError::Denied(d)) => {
                assert_eq!(d.limit, Some(LimitKind::HardCap));
                assert!(d.retry_after >= std::time::Duration::from_secs(25), "{d:?}");
            }
            other => panic!("expected an immediate denial, got {other:?}"),
        }
    }
    assert!(
        r.demands().is_empty(),
        "a runaway loop on a final limit wakes nobody"
    );
    let info = r.lanes().into_iter().find(|l| l.lane == lane).unwrap();
    assert!(info.denials >= 1_000, "every denial is still counted");
    r.clear_denial(lane).unwrap();
    assert!(matches!(gate.reserve(&call), Err(ReserveError::Denied(_))));
    assert_eq!(r.demands().len(), 1, "cleared: the dry lane asks again");
    // A top-up lifts it too, and the call passes.
    r.record_denial_until(lane, LimitKind::HardCap, until)
        .unwrap();
    r.top_up(lane, Credits(10 * C)).unwrap();
    gate.reserve(&call)
        .unwrap()
        .commit_credits(Credits(C))
        .unwrap();
    r.audit().check().unwrap();
}

/// Found by the region fuzzer: two lanes whose ring heads an agent scribbled far past
/// their tails made `drain_all`'s skipped count overflow (a panic in debug builds).
#[test]
fn scribbled_ring_heads_never_overflow_the_drain_counts() {
    let dir = tempfile::tempdir().unwrap();
    let (r, path) = setup(&dir, 100 * C);
    let v = r.view();
    for lane in [1, 2] {
        let claim = crate::holder::claimed_by(0, crate::holder::HolderId::new(0xBEEF).unwrap());
        v.lw(lane, crate::layout::L_CLAIM)
            .store(claim, crate::sync::REL);
        v.lw(lane, crate::layout::L_RING_HEAD)
            .store(u64::MAX - 3, crate::sync::REL);
        v.lw(lane, crate::layout::L_TOPPED_UP)
            .store(1, crate::sync::REL);
    }
    let mut out = Vec::new();
    let st = r.drain_all(&mut out).unwrap();
    assert_eq!(st.skipped, u64::MAX, "saturated, not wrapped");
    drop(path);
}

/// `Call::wait(false)` never blocks: a dry lane asks the sidecar for a top-up and says
/// `WouldWait` (no denial counted, the task budget untouched); once topped up the same
/// call passes without waiting.
#[test]
fn a_call_that_may_not_wait_asks_and_returns_would_wait() {
    let dir = tempfile::tempdir().unwrap();
    let (r, path) = setup(&dir, 100 * C);
    // A long wait, so a reserve that waited would be seen to.
    r.set_slow_path(10, std::time::Duration::from_millis(5));
    let gate = Gate::attach(&path).unwrap();
    let task = LocalTask::new(Credits(10 * C));
    let call = Call::fixed(Credits(C)).local_task(&task).wait(false);
    let started = std::time::Instant::now();
    assert_eq!(gate.reserve(&call).err(), Some(ReserveError::WouldWait));
    assert!(started.elapsed() < std::time::Duration::from_millis(5));
    let lane = lane_of(&r, Tier::Interactive);
    assert_eq!(
        r.demands(),
        vec![(lane, Credits(C))],
        "the sidecar was asked"
    );
    assert_eq!(
        task.remaining(),
        Credits(10 * C),
        "the task got its credits back"
    );
    let info = r.lanes().into_iter().find(|l| l.lane == lane).unwrap();
    assert_eq!(info.denials, 0, "not a denial");
    r.top_up(lane, Credits(5 * C)).unwrap();
    gate.reserve(&call)
        .unwrap()
        .commit_credits(Credits(C))
        .unwrap();
    r.audit().check().unwrap();
}

/// The owner's commits write their records as the settle's intent while the ring has room;
/// once it is full they fall back to the slot-intent settle, which counts the record lost.
/// Either way the amounts are exact, and each record carries its call's tokens and outcomes.
#[test]
fn owner_commits_fill_the_ring_then_count_lost_records_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (r, path) = setup(&dir, 1000 * C);
    let gate = Gate::attach(&path).unwrap();
    let acme = gate.tenant("acme").unwrap();
    let call = Call::fixed(Credits(10 * C)).tenant(acme);
    assert!(gate.reserve(&call).is_err(), "dry: claims the lane");
    let lane = lane_of(&r, Tier::Interactive);
    r.top_up(lane, Credits(500 * C)).unwrap();
    let ring = small_config().ring_capacity as u64;
    for i in 1..=ring + 2 {
        let usage = tollgate_core::Usage {
            input_tokens: i,
            output_tokens: 2 * i,
        };
        let got = gate
            .reserve(&call)
            .unwrap()
            .commit_with_outcomes(usage, i as u32)
            .unwrap();
        assert_eq!(
            got,
            Credits(10 * C),
            "a fixed-price call is charged its cost"
        );
    }
    // One more, with an overrun: always the slot-intent settle.
    gate.reserve(&call)
        .unwrap()
        .commit_credits(Credits(11 * C))
        .unwrap();
    let a = r.audit();
    a.check().unwrap();
    let lb = a.lanes.iter().find(|l| l.lane == lane).unwrap();
    assert_eq!(lb.consumed, (ring + 3) * 10 * C);
    assert_eq!(lb.overrun, C);
    let info = r.lanes().into_iter().find(|l| l.lane == lane).unwrap();
    assert_eq!(
        info.lost_records, 3,
        "two commits and the overrun found the ring full"
    );
    let mut recs = Vec::new();
    let st = r.drain(lane, &mut recs).unwrap();
    assert_eq!(st.records, ring);
    for (i, rec) in (1..).zip(&recs) {
        assert_eq!(rec.seq, i);
        assert_eq!(
            (rec.reserved, rec.actual),
            (Credits(10 * C), Credits(10 * C))
        );
        assert_eq!((rec.input_tokens, rec.output_tokens), (i, 2 * i));
        assert_eq!(rec.outcomes, i as u32);
        assert!(rec.pre_rated);
    }
    // With room again, the next commit's record follows the lost ones.
    gate.reserve(&call)
        .unwrap()
        .commit_credits(Credits(3 * C))
        .unwrap();
    recs.clear();
    r.drain(lane, &mut recs).unwrap();
    assert_eq!(recs.len(), 1);
    assert_eq!((recs[0].seq, recs[0].actual), (ring + 1, Credits(3 * C)));
    r.audit().check().unwrap();
}

/// A process dies at each step of its owner commit (the record-intent settle) on a mapped
/// region; reclaim finishes the commit exactly once: charged, its record published once.
#[test]
fn dead_process_mid_record_commit_is_reclaimed_exactly_once() {
    use crate::lane::View;
    use crate::layout::{L_CLAIM, L_KEY};
    use crate::sync::REL;
    for crash in [41, 42, 43, 44, 0] {
        let dir = tempfile::tempdir().unwrap();
        let (r, path) = setup(&dir, 100 * C);
        let (mem, layout) = crate::region::open_and_validate(&path).unwrap();
        let v = View {
            w: mem.words(),
            l: &layout,
        };
        let ghost = crate::holder::HolderId::new(0xDEAD).unwrap();
        let key = LaneKey {
            tenant: 0,
            tier: Tier::Interactive,
            initiator: Initiator::Human,
            agent: 0,
            task: None,
        };
        v.lw(3, L_CLAIM)
            .store(crate::holder::claimed_by(0, ghost), REL);
        v.lw(3, L_KEY).store(key.encode(), REL);
        r.top_up(3, Credits(50 * C)).unwrap();
        let mut o = v.owner_for(3);
        let _held = v.reserve(&mut o, &req(7 * C), &mut |_| true).unwrap();
        let slot = v.reserve(&mut o, &req(20 * C), &mut |_| true).unwrap();
        let mut dead = false;
        let mut step = |s: u32| {
            dead |= s == crash;
            !dead
        };
        let done = v.commit_owned(&mut o, slot, 12 * C, 5, 1, &mut step);
        assert_eq!(done, Some(crash == 0), "crash point {crash} reached");
        r.audit().check().unwrap();
        let reports = r.reclaim_dead().unwrap();
        assert_eq!(reports.len(), 1, "crash at {crash}");
        assert!(r.reclaim_dead().unwrap().is_empty(), "exactly once");
        let a = r.audit();
        a.check().unwrap();
        for p in &a.pools[..4] {
            assert_eq!(p.carved, 0);
            assert_eq!(
                p.consumed,
                12 * C,
                "the commit charged once (crash at {crash})"
            );
            assert_eq!(p.available + p.consumed, 100 * C);
        }
        assert!(r.lanes().iter().all(|l| l.lane != 3), "lane freed");
    }
}

/// The per-pool and per-lane reads the sidecar makes every tick agree with the full audit
/// they replace, on lanes in every state (held, committed, revoked, never topped up).
#[test]
fn single_pool_and_lane_reads_agree_with_the_audit() {
    let dir = tempfile::tempdir().unwrap();
    let (r, path) = setup(&dir, 1000 * C);
    let gate = Gate::attach(&path).unwrap();
    let acme = gate.tenant("acme").unwrap();
    for tier in Tier::ALL {
        let call = Call::fixed(Credits(3 * C)).tenant(acme).tier(tier);
        assert!(gate.reserve(&call).is_err(), "dry until topped up");
    }
    for (lane, _) in r.demands() {
        r.top_up(lane, Credits(40 * C)).unwrap();
    }
    let held = gate
        .reserve(&Call::fixed(Credits(5 * C)).tenant(acme))
        .unwrap();
    gate.reserve(
        &Call::fixed(Credits(2 * C))
            .tenant(acme)
            .tier(Tier::Scheduler),
    )
    .unwrap()
    .commit_credits(Credits(3 * C))
    .unwrap();
    let background = lane_of(&r, Tier::Background);
    r.revoke(background, Credits(7 * C)).unwrap();
    let mut records = Vec::new();
    r.drain_all(&mut records).unwrap();

    let audit = r.audit();
    audit.check().unwrap();
    assert!(audit.lanes.len() >= 3, "three tiers' lanes topped up");
    for p in &audit.pools {
        assert_eq!(&r.pool(p.pool).unwrap(), p, "pool {}", p.pool);
        let c = r.pool_counters(p.pool).unwrap();
        assert_eq!(
            (
                c.granted,
                c.available,
                c.carved,
                c.consumed,
                c.returned,
                c.overrun,
                c.reclaimed
            ),
            (
                p.granted,
                p.available,
                p.carved,
                p.consumed,
                p.returned,
                p.overrun,
                p.reclaimed
            ),
            "pool {}",
            p.pool
        );
    }
    assert!(
        audit.pools[0].carved > 0,
        "the comparison saw carved credits"
    );
    let lists: Vec<(usize, Vec<usize>)> = audit
        .lanes
        .iter()
        .map(|l| (l.lane, l.pools.clone()))
        .collect();
    assert_eq!(r.lane_pool_lists(), lists);
    for l in &audit.lanes {
        assert_eq!(&r.lane_balance(l.lane).unwrap(), l);
    }
    let in_use = r.lanes();
    assert!(!in_use.is_empty());
    for info in &in_use {
        assert_eq!(r.lane_info(info.lane).as_ref(), Some(info));
    }
    let free = (0..16)
        .find(|l| in_use.iter().all(|i| i.lane != *l))
        .unwrap();
    assert_eq!(r.lane_info(free), None);
    assert_eq!(r.lane_info(16), None, "past the last lane");
    assert!(matches!(
        r.pool_counters(8),
        Err(SidecarError::OutOfRange { what: "pool", .. })
    ));
    assert!(r.lane_balance(16).is_err());
    held.cancel();
}
