//! Usage ingest through gRPC, acknowledged only when durable (SQLite, WAL,
//! synchronous=FULL): several concurrent sidecar clients on loopback send signed batches
//! and the figure is records acknowledged per second.
//!
//! `cargo bench -p tollgate-authority --bench ingest` (harness = false; prints a table).
//! Knobs (environment): TOLLGATE_BENCH_SIDECARS (4), TOLLGATE_BENCH_BATCH (4096 records),
//! TOLLGATE_BENCH_BATCHES (batches per sidecar, 60), TOLLGATE_BENCH_WINDOW (in-flight
//! batches per sidecar, 16), TOLLGATE_BENCH_PAUSE_MS (wait before the timed phase, for a
//! profiler to attach), TOLLGATE_BENCH_DIR (where the database goes; default a temp
//! dir under the target directory's filesystem), TOLLGATE_BENCH_STORE (a `postgres://`
//! URL: run on PostgreSQL, in a fresh schema `tgbench_<pid>`), TOLLGATE_BENCH_REPLICAS
//! (authority servers on that one database, each with its own pool; sidecar i talks to
//! server i mod replicas; default 1; more than 1 needs PostgreSQL), TOLLGATE_BENCH_TENANTS
//! (sidecar i sends usage of tenant `t<i mod tenants>`; default 1: every batch locks the
//! same wallet row), TOLLGATE_BENCH_PLAIN (1: records without attribution, as before it
//! reached the ledger: no agent name, no task, no completions).
//!
//! Records carry the attribution fields, dictionary-coded in the batch: each sidecar has
//! 16 lanes (instances) of 4 agent names, 3 models and 4 features; each lane works on a
//! task for 100 of its calls, then writes the task's completion record (an Agentic Work
//! Unit) and moves to the next; every tenth call reports an outcome.
//!
//! Clients and server share this machine's cores, as a sidecar fleet on loopback would.

use std::time::{Duration, Instant};

use ed25519_dalek::{Signer, SigningKey};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tollgate_authority::config::Config;
use tollgate_authority::server::{ServeOptions, start};
use tollgate_proto::BatchBuilder;
use tollgate_proto::batch::RecordInput;
use tollgate_proto::v1::admin_service_client::AdminServiceClient;
use tollgate_proto::v1::sidecar_service_client::SidecarServiceClient;
use tollgate_proto::v1::{self as pb, session_down, session_up};

const ADMIN: &str = "bench-admin";
const TOKEN: &str = "bench-sidecar";

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn req<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

fn key(i: usize) -> SigningKey {
    SigningKey::from_bytes(&[i as u8 + 1; 32])
}

fn batches(
    sid: &str,
    tenant: &str,
    key: &SigningKey,
    n: usize,
    size: usize,
) -> Vec<pb::UsageBatch> {
    let plain = std::env::var("TOLLGATE_BENCH_PLAIN").as_deref() == Ok("1");
    let names = ["support-bot", "billing-bot", "triage-bot", "research-bot"];
    let instances: Vec<String> = (0..16).map(|i| format!("{sid}/pid{i}/lane0")).collect();
    let models = ["gpt-small", "gpt-large", "claude-mid"];
    let features = ["chat", "search", "summarize", "triage"];
    let mut calls = [0u64; 16];
    (1..=n as u64)
        .map(|seq| {
            let mut b = BatchBuilder::new(seq, 1_800_000_000_000);
            for i in 0..size {
                let lane = i % instances.len();
                calls[lane] += 1;
                let task = format!("{sid}-{lane}-{}", calls[lane] / 100);
                let done = calls[lane] % 100 == 99;
                let (agent, task) = if plain {
                    ("", "")
                } else {
                    (names[lane % names.len()], task.as_str())
                };
                let call = RecordInput {
                    tenant,
                    agent,
                    agent_instance: &instances[lane],
                    model: models[i % models.len()],
                    feature: features[i % features.len()],
                    task,
                    input_tokens: 500 + (i as u64 % 100),
                    output_tokens: 200,
                    outcomes: u64::from(!plain && i % 10 == 0),
                    client_rated_micro: 900,
                    calls: 1,
                    at_unix_ms: 1_800_000_000_000,
                    ..Default::default()
                };
                // The task's completion record carries no usage of its own.
                b.push(&if done && !plain {
                    RecordInput {
                        work_units: 1,
                        input_tokens: 0,
                        output_tokens: 0,
                        outcomes: 0,
                        client_rated_micro: 0,
                        ..call
                    }
                } else {
                    call
                });
            }
            let mut batch = b.finish();
            let msg = tollgate_proto::signing::batch_signing_bytes(sid, &batch);
            batch.signature = key.sign(&msg).to_bytes().to_vec();
            batch
        })
        .collect()
}

async fn run() {
    let sidecars = env("TOLLGATE_BENCH_SIDECARS", 4);
    let size = env("TOLLGATE_BENCH_BATCH", 4096);
    let per = env("TOLLGATE_BENCH_BATCHES", 60);
    let window = env("TOLLGATE_BENCH_WINDOW", 16);
    let dir = match std::env::var("TOLLGATE_BENCH_DIR") {
        Ok(d) => tempfile::tempdir_in(d).unwrap(),
        Err(_) => tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap(),
    };
    let mut sidecar_toml = String::new();
    sidecar_toml.push_str(&format!(
        "admin_token = \"{ADMIN}\"\n[[sidecars]]\nname = \"bench\"\ntoken = \"{TOKEN}\"\ntenants = [\"*\"]\n[leases]\nrelearn_grace_secs = 0\n"
    ));
    let replicas = env("TOLLGATE_BENCH_REPLICAS", 1).max(1);
    let store = match std::env::var("TOLLGATE_BENCH_STORE") {
        Ok(pg) if pg.starts_with("postgres") => {
            let sep = if pg.contains('?') { '&' } else { '?' };
            format!("{pg}{sep}schema=tgbench_{}", std::process::id())
        }
        _ => {
            assert_eq!(
                replicas, 1,
                "several replicas need TOLLGATE_BENCH_STORE=postgres://…"
            );
            format!("sqlite://{}", dir.path().join("bench.db").display())
        }
    };
    let mut servers = Vec::new();
    for _ in 0..replicas {
        servers.push(
            start(ServeOptions {
                store: store.clone(),
                listen: "127.0.0.1:0".parse().unwrap(),
                http: None,
                config: Config::parse(&sidecar_toml).unwrap(),
                signer_seed_hex: "02".repeat(32),
            })
            .await
            .unwrap(),
        );
    }
    let urls: Vec<String> = servers
        .iter()
        .map(|r| format!("http://{}", r.grpc_addr))
        .collect();
    let url = urls[0].clone();
    let mut a = AdminServiceClient::connect(url.clone()).await.unwrap();
    let tenants: Vec<String> = (0..env("TOLLGATE_BENCH_TENANTS", 1).max(1))
        .map(|t| format!("t{t}"))
        .collect();
    for tenant in &tenants {
        a.create_tenant(req(
            pb::CreateTenantRequest {
                tenant: tenant.clone(),
                ..Default::default()
            },
            ADMIN,
        ))
        .await
        .unwrap();
        a.add_grant(req(
            pb::AddGrantRequest {
                grant: Some(pb::Grant {
                    tenant: tenant.clone(),
                    kind: pb::GrantKind::Purchased as i32,
                    amount_micro: 1_000_000_000_000_000,
                    ..Default::default()
                }),
            },
            ADMIN,
        ))
        .await
        .unwrap();
        let models = ["gpt-small", "gpt-large", "claude-mid"]
            .iter()
            .map(|m| pb::ModelPrice {
                model: (*m).into(),
                pricing: Some(pb::model_price::Pricing::Tokens(pb::TokenPrice {
                    input_per_mtok_micro: 1_000_000,
                    output_per_mtok_micro: 2_000_000,
                })),
                max_output_tokens: 0,
            })
            .collect();
        a.set_price_book(req(
            pb::SetPriceBookRequest {
                price_book: Some(pb::PriceBook {
                    tenant: tenant.clone(),
                    models,
                    default_max_output_tokens: 1000,
                    ..Default::default()
                }),
            },
            ADMIN,
        ))
        .await
        .unwrap();
    }

    // Prepare (not timed): register, open sessions, build and sign batches.
    let mut clients = Vec::new();
    for i in 0..sidecars {
        let sid = format!("bench-{i}");
        let k = key(i);
        let mut c = SidecarServiceClient::connect(urls[i % replicas].clone())
            .await
            .unwrap();
        c.register(req(
            pb::RegisterRequest {
                sidecar_id: sid.clone(),
                tenants: vec![tenants[i % tenants.len()].clone()],
                public_key: k.verifying_key().to_bytes().to_vec(),
                ..Default::default()
            },
            TOKEN,
        ))
        .await
        .unwrap();
        let (tx, rx) = mpsc::channel(window * 2);
        let mut r = req(ReceiverStream::new(rx), TOKEN);
        r.metadata_mut()
            .insert(tollgate_proto::SIDECAR_ID_HEADER, sid.parse().unwrap());
        let down = c.session(r).await.unwrap().into_inner();
        let bs = batches(&sid, &tenants[i % tenants.len()], &k, per, size);
        clients.push((tx, down, bs));
    }

    // For profiling only the timed phase: `TOLLGATE_BENCH_PAUSE_MS=2000` prints the pid and
    // waits before sending, so a profiler can attach.
    let pause = env("TOLLGATE_BENCH_PAUSE_MS", 0);
    if pause > 0 {
        eprintln!("prepared; pid {}", std::process::id());
        tokio::time::sleep(Duration::from_millis(pause as u64)).await;
    }
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let start_t = Instant::now();
    let mut tasks = Vec::new();
    for (tx, mut down, bs) in clients {
        tasks.push(tokio::spawn(async move {
            let n = bs.len();
            let mut it = bs.into_iter();
            let mut sent = 0usize;
            for b in it.by_ref().take(window) {
                tx.send(pb::SessionUp {
                    msg: Some(session_up::Msg::Batch(b)),
                })
                .await
                .unwrap();
                sent += 1;
            }
            let mut acked = 0usize;
            let mut records = 0u64;
            while acked < n {
                let m = tokio::time::timeout(Duration::from_secs(120), down.message())
                    .await
                    .expect("ack within 120 s")
                    .unwrap()
                    .unwrap();
                if let Some(session_down::Msg::Ack(a)) = m.msg {
                    assert_eq!(a.status, pb::AckStatus::Accepted as i32, "{a:?}");
                    acked += 1;
                    records += a.records;
                    if let Some(b) = it.next() {
                        tx.send(pb::SessionUp {
                            msg: Some(session_up::Msg::Batch(b)),
                        })
                        .await
                        .unwrap();
                        sent += 1;
                    }
                }
            }
            assert_eq!(sent, n);
            records
        }));
    }
    let mut total = 0u64;
    for t in tasks {
        total += t.await.unwrap();
    }
    let elapsed = start_t.elapsed();
    let rate = total as f64 / elapsed.as_secs_f64();
    let date = std::process::Command::new("date")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    println!("ingest benchmark ({date})");
    let store_desc = if store.starts_with("postgres") {
        format!(
            "PostgreSQL ({}), synchronous_commit=on, {replicas} authority replica(s)",
            tollgate_ledger::store::postgres::redact_url(&store)
        )
    } else {
        format!("SQLite WAL synchronous=FULL in {}", dir.path().display())
    };
    println!(
        "  machine: {} cores; store: {store_desc}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    println!(
        "  sidecars {sidecars}, tenants {}, batch {size} records, {per} batches each, window {window} in flight per sidecar",
        tenants.len()
    );
    println!(
        "  records: {}",
        if std::env::var("TOLLGATE_BENCH_PLAIN").as_deref() == Ok("1") {
            "plain (instance, model, feature)"
        } else {
            "attributed (agent name, instance, model, feature, task; outcomes; a completion record per 100 calls of a lane)"
        }
    );
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "  load average before / after (other work on the machine): {} / {}",
        load_before.trim(),
        load.trim()
    );
    println!(
        "  records acknowledged durably: {total} in {:.3} s",
        elapsed.as_secs_f64()
    );
    println!("  throughput: {:.0} records/s", rate);
    let (mut counted, mut awu) = (0, 0);
    for tenant in &tenants {
        let s = a
            .get_statement(req(
                pb::GetStatementRequest {
                    tenant: tenant.clone(),
                    ..Default::default()
                },
                ADMIN,
            ))
            .await
            .unwrap()
            .into_inner();
        counted += s.calls;
        awu += s.work_units;
    }
    // Completion records are not calls: every acknowledged record is a call or an AWU.
    assert_eq!(
        counted + awu,
        total,
        "every acknowledged record is in the ledger"
    );
    println!("  check: statements count {counted} calls and {awu} agentic work units");
    for r in servers {
        r.shutdown().await.unwrap();
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: run small then.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}
