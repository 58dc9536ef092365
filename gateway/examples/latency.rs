//! Added latency of `tollgate gateway`, one run, side by side with calling the upstream
//! directly: `cargo run --release -p tollgate-gateway --example latency [-- REQUESTS]`.
//!
//! In one process: `llm-upstream` (no artificial latency), a region with one funded tenant
//! topped up by a stand-in for the sidecar (a thread serving lane demands, as the client's
//! benches do), and the gateway's router on one worker thread. A keep-alive client sends
//! the same chat completion (16 output tokens, whole and streamed) alternately in blocks
//! to the upstream and through the gateway, one request at a time, and prints the
//! latency percentiles of each and the difference. The gateway's reserve, forward, usage
//! parse and commit are all in the measured path; the authority is not (the sidecar's
//! leases are off the request path by design).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tollgate_client::{Gate, GateOptions, PoolSpec, Region, RegionConfig, TenantSpec};
use tollgate_core::{Credits, LimitKind, PriceBook, PriceBookSpec};
use tollgate_gateway::budget::Budgets;
use tollgate_gateway::config::Config;
use tollgate_gateway::server::Gateway;

const C: u64 = 1_000_000;

const BOOK: &str = r#"
version = 1
default_max_output_tokens = 1000
[[models]]
name = "bench-model"
max_output_tokens = 4096
pricing = { kind = "per_token", input_per_million = 150000, output_per_million = 600000 }
"#;

fn region(path: &std::path::Path) -> Region {
    let r = Region::create(
        path,
        RegionConfig {
            pools: 1,
            tenants: 1,
            lanes: 32,
            ring_capacity: 65_536,
            price_book_bytes: 4096,
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
    r.configure_tenant(
        0,
        &TenantSpec {
            name: "bench".into(),
            classes: std::array::from_fn(|_| [vec![0], vec![0]]),
        },
    )
    .expect("tenant");
    r.grant(0, Credits(1_000_000_000 * C)).expect("grant");
    let spec: PriceBookSpec = toml::from_str(BOOK).expect("book");
    r.publish_price_book(&PriceBook::new(spec).expect("book"))
        .expect("publish");
    r
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn us(ns: u64) -> String {
    format!("{:.1} us", ns as f64 / 1000.0)
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("region");
    let r = region(&path);
    // The sidecar's stand-in: top up every lane that asks, generously.
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let sidecar = std::thread::spawn(move || {
        while !s2.load(Ordering::Relaxed) {
            for (lane, want) in r.demands() {
                let _ = r.top_up(lane, Credits(want.0.max(1_000 * C)));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    });

    // The upstream, on a runtime thread of its own.
    let (up_tx, up_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let running = llm_upstream::start(llm_upstream::Config::default())
                .await
                .expect("upstream");
            up_tx.send(running.addr).expect("send");
            std::future::pending::<()>().await;
        });
    });
    let up: SocketAddr = up_rx.recv().expect("upstream address");

    // The gateway, one worker thread, as `tollgate gateway --threads 1` runs it.
    let cfg = Config::parse(
        &format!(
            "[[upstreams]]\nmodels = [\"*\"]\nbase_url = \"http://{up}\"\n\
             [[keys]]\nkey = \"gk\"\ntenant = \"bench\"\n"
        ),
        &|_| None,
    )
    .expect("config");
    let gate = Gate::attach_with(&path, &GateOptions::new().agent("bench")).expect("attach");
    let gw = Gateway::new(
        gate,
        cfg,
        Arc::new(Budgets::default()),
        Duration::from_secs(2),
    )
    .expect("gateway");
    let (gw_tx, gw_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let gw = Arc::new(gw.worker().expect("worker"));
            let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            gw_tx.send(l.local_addr().expect("addr")).expect("send");
            gw.serve(l, std::future::pending()).await.expect("serve");
        });
    });
    let gwa: SocketAddr = gw_rx.recv().expect("gateway address");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(4)
            .build()
            .expect("client");
        let body = |stream: bool| {
            serde_json::json!({"model": "bench-model", "max_tokens": 16, "stream": stream,
                "messages": [{"role": "user", "content": "one two three four five"}]})
            .to_string()
        };
        let one = |base: SocketAddr, stream: bool| {
            let req = client
                .post(format!("http://{base}/v1/chat/completions"))
                .header("authorization", "Bearer gk")
                .header("content-type", "application/json")
                .body(body(stream));
            async move {
                let t = Instant::now();
                let resp = req.send().await.expect("send");
                assert!(resp.status().is_success(), "{}", resp.status());
                let b = resp.bytes().await.expect("body");
                assert!(!b.is_empty());
                t.elapsed().as_nanos() as u64
            }
        };
        println!(
            "gateway latency bench: {n} requests per row, chat completion of 16 output tokens, \
             one at a time over keep-alive, direct and gateway alternating in blocks of 500"
        );
        for stream in [false, true] {
            // Warm up both paths (connections, lanes, the model handle).
            for _ in 0..500 {
                one(up, stream).await;
                one(gwa, stream).await;
            }
            let (mut direct, mut via) = (Vec::with_capacity(n), Vec::with_capacity(n));
            let t0 = Instant::now();
            let mut d_time = Duration::ZERO;
            let mut g_time = Duration::ZERO;
            while direct.len() < n {
                let t = Instant::now();
                for _ in 0..500.min(n - direct.len()) {
                    direct.push(one(up, stream).await);
                }
                d_time += t.elapsed();
                let t = Instant::now();
                for _ in 0..500.min(n - via.len()) {
                    via.push(one(gwa, stream).await);
                }
                g_time += t.elapsed();
            }
            direct.sort_unstable();
            via.sort_unstable();
            let kind = if stream { "streamed" } else { "whole" };
            for (name, v, time) in [("direct", &direct, d_time), ("gateway", &via, g_time)] {
                println!(
                    "{kind:8} {name:8} p50 {:>9}  p90 {:>9}  p99 {:>9}  p99.9 {:>9}  {:>7.0} req/s",
                    us(percentile(v, 0.5)),
                    us(percentile(v, 0.9)),
                    us(percentile(v, 0.99)),
                    us(percentile(v, 0.999)),
                    v.len() as f64 / time.as_secs_f64()
                );
            }
            println!(
                "{kind:8} added    p50 {:>9}  p99 {:>9}  (gateway minus direct, per percentile; {:.1} s)",
                us(percentile(&via, 0.5).saturating_sub(percentile(&direct, 0.5))),
                us(percentile(&via, 0.99).saturating_sub(percentile(&direct, 0.99))),
                t0.elapsed().as_secs_f64()
            );
        }
    });
    stop.store(true, Ordering::Relaxed);
    let _ = sidecar.join();
}
