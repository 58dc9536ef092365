//! Writes the committed seeds of `region_attach` (run without the fuzzer:
//! `cargo run --example make_seeds` in this directory). Each seed is the flags byte
//! followed by a real region file made with the sidecar's API, as client/tests/corrupt_region.rs
//! makes its fixture: configured pools, a tenant, a price book, lanes an agent claimed,
//! topped up, committed on and left holding a reservation.

use std::path::Path;
use std::time::Duration;

use tollgate_client::{Call, Gate, PoolSpec, Region, RegionConfig, TenantSpec};
use tollgate_core::rating::{ModelPrice, PriceBook, PriceBookSpec, Pricing};
use tollgate_core::{Credits, Horizon, LimitKind};

const C: u64 = 1_000_000;

fn region(dir: &Path, name: &str, config: RegionConfig, used: bool) -> Vec<u8> {
    let path = dir.join(name);
    let pools = config.pools as usize;
    let region = Region::create(&path, config).expect("create region");
    let limits = [
        LimitKind::TenantWallet,
        LimitKind::TenantWindow(Horizon::Minute),
        LimitKind::Agent(Horizon::Day),
    ];
    for p in 0..pools {
        let spec = PoolSpec {
            limit: limits[p % limits.len()],
            floors: [Credits(0), Credits(10 * C), Credits(20 * C)],
        };
        region.configure_pool(p, &spec).expect("configure pool");
        region.grant(p, Credits(1_000 * C)).expect("grant");
    }
    let all: Vec<usize> = (0..pools).collect();
    let spec = TenantSpec {
        name: "acme".into(),
        classes: std::array::from_fn(|_| [all.clone(), all.clone()]),
    };
    region.configure_tenant(0, &spec).expect("configure tenant");
    let book = PriceBook::new(PriceBookSpec {
        version: 3,
        request_price: Credits::ZERO,
        default_max_output_tokens: 100,
        models: vec![ModelPrice {
            name: "gpt-test".into(),
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
    if used {
        let gate = Gate::attach(&path).expect("attach");
        let acme = gate.tenant("acme").expect("tenant");
        let call = Call::fixed(Credits(3 * C)).tenant(acme);
        let _ = gate.reserve(&call); // a fresh lane is dry: this claims it
        for info in region.lanes() {
            region.top_up(info.lane, Credits(100 * C)).expect("top up");
        }
        let h = gate.reserve(&call).expect("reserve");
        h.commit_credits(Credits(2 * C)).expect("commit");
        std::mem::forget(gate.reserve(&call).expect("reserve")); // left held
    }
    std::fs::read(&path).expect("read region")
}

fn main() {
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/region_attach");
    std::fs::create_dir_all(&out).expect("seed dir");
    let dir = std::env::temp_dir().join(format!("tollgate-seeds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let small = RegionConfig {
        pools: 1,
        tenants: 1,
        lanes: 1,
        slots_per_lane: 1,
        ring_capacity: 1,
        price_book_bytes: 256,
        names: 8,
        tasks: 2,
    };
    let fixture = RegionConfig {
        pools: 3,
        tenants: 2,
        lanes: 2,
        slots_per_lane: 2,
        ring_capacity: 4,
        price_book_bytes: 512,
        names: 8,
        tasks: 2,
    };
    let seeds = [
        // Flags 7: stamp magic, version, size and checksum (a no-op on a valid file).
        ("small_fresh", 7u8, region(&dir, "a", small, false)),
        ("small_used", 7, region(&dir, "b", small, true)),
        ("fixture_used", 7, region(&dir, "c", fixture, true)),
        // Flags 0: the bytes as they are.
        ("small_used_raw", 0, region(&dir, "d", small, true)),
    ];
    for (name, flags, image) in seeds {
        let mut bytes = vec![flags];
        bytes.extend_from_slice(&image);
        std::fs::write(out.join(name), &bytes).expect("write seed");
        println!("{name}: {} bytes", bytes.len());
    }
    let _ = std::fs::remove_dir_all(&dir);
}
