//! Store-level usage ingest: records per second posted durably (SQLite, WAL,
//! `synchronous=FULL`, a fresh database in a temp dir on the work disk).
//!
//! Each iteration posts fresh batches (new sequence numbers, so nothing is a duplicate)
//! of 8,192 records over 10 tenants x 20 agents x 3 models x 2 features, rated with each
//! tenant's price book, in one transaction per call (`post_batches`: group commit of
//! 1 or 4 batches). Senders hold no leases, so usage is deducted from grants directly.
//! `rate_only` measures the re-rating and aggregation alone, to show where time goes.
//!
//! Run: `cargo bench -p tollgate-ledger --bench ingest`.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use tollgate_core::{Credits, Initiator, ModelPrice, PriceBook, PriceBookSpec, Pricing, Tier};
use tollgate_ledger::{
    AuditSigner, BatchKey, GrantKind, GrantSpec, Ledger, ManualClock, SqliteStore, TenantConfig,
    TenantId, UsageBatch, UsageRecord,
};

const RECORDS: usize = 8_192;
const TENANTS: usize = 10;

fn book() -> PriceBook {
    let per_token = |i, o| Pricing::PerToken {
        input_per_million: Credits::from_credits(i).unwrap(),
        output_per_million: Credits::from_credits(o).unwrap(),
    };
    PriceBook::new(PriceBookSpec {
        version: 1,
        request_price: Credits::from_micros(40_000),
        default_max_output_tokens: 4096,
        models: ["small", "medium", "large"]
            .iter()
            .zip([per_token(1, 2), per_token(3, 15), per_token(15, 75)])
            .map(|(n, p)| ModelPrice {
                name: (*n).into(),
                pricing: p,
                max_output_tokens: None,
            })
            .collect(),
    })
    .unwrap()
}

fn records(tenants: &[TenantId]) -> Vec<UsageRecord> {
    let models = ["small", "medium", "large"];
    (0..RECORDS)
        .map(|i| UsageRecord {
            tenant: tenants[i % TENANTS].clone(),
            agent: format!("agent-{}", i % 20).into(),
            model: models[i % 3].into(),
            feature: if i % 2 == 0 { "chat" } else { "search" }.into(),
            tier: Tier::Interactive,
            initiator: Initiator::Human,
            input_tokens: 500 + (i as u64 % 1000),
            output_tokens: 200 + (i as u64 % 300),
            outcomes: 0,
            price_book_version: 1,
            client_amount: Credits::from_micros(1000),
            at: 1_768_435_200,
            calls: 1,
            agent_instance: "".into(),
            task: "".into(),
            work_units: 0,
            pre_rated: false,
            aggregate: false,
        })
        .collect()
}

fn bench_ingest(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let tenants: Vec<TenantId> = (0..TENANTS)
        .map(|i| TenantId::new(format!("tenant-{i}")).unwrap())
        .collect();
    let ledger = rt.block_on(async {
        let store = Arc::new(
            SqliteStore::open(dir.path().join("bench.db"))
                .await
                .unwrap(),
        );
        let clock = ManualClock::new(1_768_435_200);
        let ledger = Ledger::new(store, Arc::new(clock), AuditSigner::from_seed(&[1; 32]));
        let b = book();
        for t in &tenants {
            ledger
                .create_tenant(t, TenantConfig::default())
                .await
                .unwrap();
            ledger.set_price_book(t, &b).await.unwrap();
            ledger
                .grant(
                    t,
                    GrantSpec::new(
                        GrantKind::Purchased,
                        Credits::from_credits(900_000_000).unwrap(),
                    ),
                )
                .await
                .unwrap();
        }
        ledger
    });
    let recs = records(&tenants);
    let seq = AtomicU64::new(0);
    let make = |n: usize| -> Vec<UsageBatch> {
        (0..n)
            .map(|k| UsageBatch {
                key: BatchKey {
                    sidecar_id: format!("sidecar-{k}"),
                    seq: seq.fetch_add(1, Ordering::Relaxed),
                },
                records: recs.clone(),
                digest: None,
                signature: None,
            })
            .collect()
    };

    let mut g = c.benchmark_group("ingest");
    g.sample_size(20);
    for per_commit in [1usize, 4] {
        g.throughput(Throughput::Elements((RECORDS * per_commit) as u64));
        g.bench_function(
            format!("sqlite_{}x{RECORDS}_records_per_commit", per_commit),
            |b| {
                // Inputs are built and dropped outside the timing: decoding and freeing the
                // records is the transport's cost, not the store's.
                b.iter_batched_ref(
                    || make(per_commit),
                    |batches| {
                        let out = rt.block_on(ledger.post_batches(batches)).unwrap();
                        assert!(!out[0].duplicate);
                        black_box(out)
                    },
                    BatchSize::PerIteration,
                )
            },
        );
    }
    g.throughput(Throughput::Elements(RECORDS as u64));
    let books: std::collections::HashMap<TenantId, Arc<PriceBook>> = tenants
        .iter()
        .map(|t| (t.clone(), Arc::new(book())))
        .collect();
    g.bench_function(format!("rate_only_{RECORDS}_records"), |b| {
        b.iter(|| black_box(tollgate_ledger::rating::rate_records(&recs, &books)))
    });
    g.finish();
}

criterion_group!(benches, bench_ingest);
criterion_main!(benches);
