//! Usage ingest on PostgreSQL, records per second, with one and with two store
//! instances (two authority replicas' ledgers, each with its own pool) on one database.
//!
//! ```text
//! TOLLGATE_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test \
//!   cargo run --release -p tollgate-ledger --example pg_ingest [SECONDS] [RECORDS_PER_BATCH] [SIDECARS] [BATCHES_PER_COMMIT]
//! ```
//!
//! Each simulated sidecar posts sequence-numbered batches for its own tenant, one
//! durable transaction per batch (`Ledger::post_batch`: wallet row locked, postings,
//! batch row and audit record written with multi-row statements, commit), or
//! `BATCHES_PER_COMMIT` batches per transaction (`Ledger::post_batches`, group commit). Runs in a
//! fresh schema that is dropped at the end. Prints one line per configuration.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::Connection;
use tollgate_core::{Credits, Initiator, Tier};
use tollgate_ledger::store::postgres::{PostgresOptions, PostgresStore};
use tollgate_ledger::{
    AuditSigner, BatchKey, GrantKind, GrantSpec, Ledger, SystemClock, TenantConfig, TenantId,
    UsageBatch, UsageRecord,
};

fn arg(n: usize, default: u64) -> u64 {
    std::env::args()
        .nth(n)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn batch(t: &TenantId, sidecar: &str, seq: u64, n: u64, now: u64) -> UsageBatch {
    let records = (0..n)
        .map(|i| UsageRecord {
            tenant: t.clone(),
            agent: format!("agent-{}", i % 4).into(),
            model: "gpt".into(),
            feature: "chat".into(),
            tier: Tier::Interactive,
            initiator: Initiator::Human,
            input_tokens: 100,
            output_tokens: 50,
            outcomes: 0,
            price_book_version: 1,
            client_amount: Credits::from_micros(10),
            at: now,
            calls: 1,
            agent_instance: "".into(),
            task: "".into(),
            work_units: 0,
            pre_rated: false,
            aggregate: false,
        })
        .collect();
    UsageBatch {
        key: BatchKey {
            sidecar_id: sidecar.into(),
            seq,
        },
        records,
        digest: None,
        signature: None,
    }
}

async fn run(
    url: &str,
    schema: &str,
    instances: usize,
    sidecars: usize,
    per_batch: u64,
    group: u64,
    secs: u64,
) -> Result<(u64, u64, f64), Box<dyn std::error::Error>> {
    let mut ledgers = Vec::new();
    for _ in 0..instances {
        let store = PostgresStore::connect_with(
            url,
            PostgresOptions {
                max_connections: (sidecars / instances).max(1) as u32 + 1,
                schema: Some(schema.to_string()),
                ..PostgresOptions::default()
            },
        )
        .await?;
        ledgers.push(Arc::new(Ledger::new(
            Arc::new(store),
            Arc::new(SystemClock),
            AuditSigner::from_seed(&[1u8; 32]),
        )));
    }
    let run_id = format!("i{instances}");
    let mut tenants = Vec::new();
    for s in 0..sidecars {
        let t = TenantId::new(format!("{run_id}-t{s}"))?;
        ledgers[0]
            .create_tenant(&t, TenantConfig::default())
            .await?;
        ledgers[0]
            .grant(
                &t,
                GrantSpec::new(
                    GrantKind::Purchased,
                    Credits::from_credits(1_000_000).ok_or("credits")?,
                ),
            )
            .await?;
        tenants.push(t);
    }
    let records = Arc::new(AtomicU64::new(0));
    let batches = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (s, t) in tenants.into_iter().enumerate() {
        let l = ledgers[s % instances].clone();
        let (records, batches, stop) = (records.clone(), batches.clone(), stop.clone());
        let sidecar = format!("{run_id}-sc{s}");
        tasks.push(tokio::spawn(async move {
            let mut seq = 0;
            while !stop.load(Ordering::Relaxed) {
                let group: Vec<UsageBatch> = (0..group)
                    .map(|_| {
                        seq += 1;
                        batch(&t, &sidecar, seq, per_batch, l.now())
                    })
                    .collect();
                let outs = l.post_batches(&group).await?;
                assert!(outs.iter().all(|o| !o.duplicate));
                records.fetch_add(per_batch * group.len() as u64, Ordering::Relaxed);
                batches.fetch_add(group.len() as u64, Ordering::Relaxed);
            }
            Ok::<(), tollgate_ledger::LedgerError>(())
        }));
    }
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await??;
    }
    let elapsed = start.elapsed().as_secs_f64();
    Ok((
        records.load(Ordering::Relaxed),
        batches.load(Ordering::Relaxed),
        elapsed,
    ))
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Ok(url) = std::env::var("TOLLGATE_TEST_POSTGRES_URL") else {
        eprintln!("set TOLLGATE_TEST_POSTGRES_URL (e.g. postgres://postgres@127.0.0.1:5432/test)");
        std::process::exit(2);
    };
    let secs = arg(1, 10);
    let per_batch = arg(2, 1000);
    let sidecars = arg(3, 8) as usize;
    let group = arg(4, 1).max(1);
    let mut b = [0u8; 6];
    getrandom::fill(&mut b).map_err(|e| format!("random: {e}"))?;
    let schema = format!("tg_bench_{}", hex::encode(b));
    let mut results = Vec::new();
    for instances in [1usize, 2] {
        let r = run(&url, &schema, instances, sidecars, per_batch, group, secs).await;
        results.push((instances, r));
    }
    let mut conn = sqlx::PgConnection::connect(&url).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
    )))
    .execute(&mut conn)
    .await?;
    for (instances, r) in results {
        let (records, batches, elapsed) = r?;
        println!(
            "instances={instances} sidecars={sidecars} records/batch={per_batch} batches/commit={group} seconds={elapsed:.1} \
             batches={batches} records={records} records/s={:.0} batches/s={:.0}",
            records as f64 / elapsed,
            batches as f64 / elapsed
        );
    }
    Ok(())
}
