//! Measures a sidecar binary's memory, idle and under load, as a separate process (the way it
//! runs in a pod): `cargo run --release -p tollgate-demo --example sidecar_rss -- <sidecar
//! command...>`, e.g. `target/release/tollgate sidecar` or `target/release/tollgate-sidecar`.
//!
//! This process runs the authority (embedded store, loopback) and, during the load phase, the
//! demo's agent fleet against the sidecar's region; the sidecar is the child process given on
//! the command line, with its default flags (128 lanes, 10 ms tick) and one tenant. Memory is
//! read from `/proc/<pid>/status` (VmRSS, VmHWM, RssAnon, RssFile, RssShmem) and
//! `/proc/<pid>/smaps_rollup` (Pss and Private_*): after start-up plus `IDLE_SECS` of idling,
//! every half second while the fleet runs (the largest sample is reported), and once more after
//! the fleet stopped, each also split by mapping (the executable, the region, shared libraries,
//! anonymous memory) from `/proc/<pid>/smaps`. Knobs (environment): `IDLE_SECS` (10),
//! `LOAD_SECS` (20), `AGENTS` (12); the region goes where `TMPDIR` points (use a tmpfs such
//! as /dev/shm, as a pod's in-memory emptyDir is).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tollgate_demo::backend::Backend;
use tollgate_demo::fleet::{self, FleetStats};
use tollgate_demo::setup::{Budget, TENANT};

fn env_u64(name: &str, default: u64) -> anyhow::Result<u64> {
    match std::env::var(name) {
        Ok(v) => v.parse().with_context(|| format!("{name}={v:?}")),
        Err(_) => Ok(default),
    }
}

/// Fields of `/proc/<pid>/status` and `/proc/<pid>/smaps_rollup`, in kB.
fn memory(pid: u32) -> anyhow::Result<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    for (file, keys) in [
        (
            "status",
            &["VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"][..],
        ),
        (
            "smaps_rollup",
            &[
                "Pss",
                "Pss_Anon",
                "Pss_File",
                "Pss_Shmem",
                "Shared_Clean",
                "Private_Clean",
                "Private_Dirty",
            ][..],
        ),
    ] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/{file}"))
            .with_context(|| format!("reading /proc/{pid}/{file}"))?;
        for line in text.lines() {
            let Some((k, v)) = line.split_once(':') else {
                continue;
            };
            if keys.contains(&k) {
                let kb = v.trim().trim_end_matches("kB").trim();
                out.insert(k.to_string(), kb.parse().unwrap_or(0));
            }
        }
    }
    Ok(out)
}

fn show(label: &str, m: &BTreeMap<String, u64>) {
    let fields: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("{label}: {} (kB)", fields.join(" "));
}

/// Resident kB by what is mapped, from `/proc/<pid>/smaps`: the executable, the region file,
/// other files (shared libraries), and anonymous memory (heap, stacks, the rest). Each as
/// `Rss/Pss`.
fn by_mapping(pid: u32, region: &Path) -> anyhow::Result<String> {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))?;
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps"))?;
    let region = region.to_string_lossy().to_string();
    let exe = exe.to_string_lossy().to_string();
    let mut sums: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    let mut kind = "anon";
    for line in text.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            // A mapping header: address range, perms, offset, dev, inode, path.
            let path = line.split_whitespace().nth(5).unwrap_or("");
            kind = if path == exe {
                "binary"
            } else if path == region {
                "region"
            } else if path.starts_with('/') {
                "libs"
            } else {
                "anon"
            };
            continue;
        }
        let kb = |l: &str| {
            l.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        if line.starts_with("Rss:") {
            sums.entry(kind).or_default().0 += kb(line);
        } else if line.starts_with("Pss:") {
            sums.entry(kind).or_default().1 += kb(line);
        }
    }
    Ok(sums
        .iter()
        .map(|(k, (rss, pss))| format!("{k}={rss}/{pss}"))
        .collect::<Vec<_>>()
        .join(" "))
}

fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which is in parentheses): utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    Ok(tick(11) + tick(12))
}

fn wait_ready(region: &Path, child: &mut Child, timeout: Duration) -> anyhow::Result<()> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait()? {
            bail!("the sidecar exited: {st}");
        }
        if tollgate_demo::scenario::region_serves(region) {
            return Ok(());
        }
        if Instant::now() > end {
            bail!("the sidecar did not configure {}", region.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn main() -> anyhow::Result<()> {
    let cmd: Vec<String> = std::env::args().skip(1).collect();
    let Some((program, sub)) = cmd.split_first() else {
        bail!("usage: sidecar_rss <sidecar command...> (e.g. target/release/tollgate-sidecar)");
    };
    let idle = Duration::from_secs(env_u64("IDLE_SECS", 10)?);
    let load = Duration::from_secs(env_u64("LOAD_SECS", 20)?);
    let agents = env_u64("AGENTS", 12)? as usize;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let dir = tempfile::Builder::new().prefix("tollgate-rss-").tempdir()?;
    // Ten times the fleet's burn: the cap is never reached, the load lasts the whole phase.
    let budget = Budget::for_expected_burn(10 * 1_400_000 * agents as u64 * load.as_secs().max(1));
    let backend = rt.block_on(Backend::start(dir.path(), budget, "127.0.0.1:0".parse()?))?;
    let region_dir: PathBuf = dir.path().join("pod-a");
    std::fs::create_dir_all(&region_dir)?;
    let region = region_dir.join("region");
    let token = dir.path().join("pod-a.token");
    std::fs::write(&token, "pod-a-token")?;
    let http = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let mut child = Command::new(program)
        .args(sub)
        .arg("--region")
        .arg(&region)
        .args(["--authority", &backend.url(), "--sidecar-id", "pod-a"])
        .arg("--token-file")
        .arg(&token)
        .args(["--tenants", TENANT, "--http", &http.to_string()])
        .args(["--log", "warn"])
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {program}"))?;
    let pid = child.id();
    let result = (|| -> anyhow::Result<()> {
        wait_ready(&region, &mut child, Duration::from_secs(30))?;
        println!("sidecar: {}", cmd.join(" "));
        std::thread::sleep(idle);
        let t0 = cpu_ticks(pid)?;
        let m = memory(pid)?;
        show(&format!("idle ({}s after ready)", idle.as_secs()), &m);
        println!("  by mapping, Rss/Pss kB: {}", by_mapping(pid, &region)?);
        std::thread::sleep(Duration::from_secs(5));
        println!(
            "idle CPU over 5 s: {} clock ticks (of {} per second)",
            cpu_ticks(pid)? - t0,
            100
        );

        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(FleetStats::default());
        let handles = fleet::run(
            fleet::plan(agents),
            [region.clone(), region.clone()],
            TENANT.to_string(),
            stop.clone(),
            stats.clone(),
        )?;
        let start = Instant::now();
        let mut peak: Option<(BTreeMap<String, u64>, String)> = None;
        while start.elapsed() < load {
            std::thread::sleep(Duration::from_millis(500));
            let m = memory(pid)?;
            let rss = |m: &BTreeMap<String, u64>| m.get("VmRSS").copied().unwrap_or(0);
            if peak.as_ref().is_none_or(|(p, _)| rss(&m) > rss(p)) {
                let maps = by_mapping(pid, &region)?;
                peak = Some((m, maps));
            }
        }
        stop.store(true, Ordering::Relaxed);
        for h in handles {
            let _ = h.join();
        }
        let (spent, calls) = stats.totals();
        println!(
            "load: {agents} agents for {}s, {calls} paid calls, {spent} micro-credits committed",
            load.as_secs()
        );
        if let Some((p, maps)) = &peak {
            show("under load (largest VmRSS sample)", p);
            println!("  by mapping, Rss/Pss kB: {maps}");
        }
        show("after load", &memory(pid)?);
        println!("  by mapping, Rss/Pss kB: {}", by_mapping(pid, &region)?);
        Ok(())
    })();
    // SIGTERM through `kill`, so the sidecar flushes and returns its leases.
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let end = Instant::now() + Duration::from_secs(15);
    while child.try_wait()?.is_none() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    if child.try_wait()?.is_none() {
        child.kill()?;
        child.wait()?;
    }
    drop(backend);
    result
}
