//! The demo's script: start everything, run the fleet with live progress, stop it cleanly,
//! print the statement and the checks.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use tollgate_core::Tier;
use tollgate_sidecar::cli::Config;

use crate::fleet::{self, FleetStats};
use crate::setup::{Budget, TENANT, cr};

/// What one run does: the checked flags of `tollgate demo` (see `cli::DemoArgs`).
#[derive(Debug, Clone, Copy)]
pub struct Script {
    /// How long the fleet runs.
    pub duration: Duration,
    /// Simulated agents; the last one is the runaway loop.
    pub agents: u32,
    /// Seconds between progress lines.
    pub every: u64,
    /// The authority's HTTP address (admin API and dashboard).
    pub http: std::net::SocketAddr,
    /// Keep the authority and its dashboard serving after the run, until Ctrl-C.
    pub keep: bool,
}

/// Rough burn of one simulated agent, micro-credits per second (sizes the budget so every
/// phase shows up within the run; the real burn is measured and printed).
const BURN_PER_AGENT: u64 = 2_100_000;

/// A sidecar configuration for one demo pod.
pub fn pod_config(dir: &std::path::Path, pod: &str, authority: &str) -> Config {
    let region_dir = dir.join(pod);
    Config {
        region: region_dir.join("region"),
        state_dir: region_dir,
        authority: authority.to_string(),
        sidecar_id: pod.to_string(),
        token: Some(format!("{pod}-token")),
        ca_cert: None,
        tenants: vec![TENANT.to_string()],
        http: "127.0.0.1:0".parse().expect("a literal address"),
        emergency_allowance: 0,
        // Every agent thread has a lane per task it works on: finished tasks' lanes wait
        // for the next reclaim pass before they are free again.
        lanes: 512,
        // Tasks stopped by their budget or calls are not completed: their entries stay
        // until the sidecar closes them idle (5 minutes), so a run opens a few thousand.
        tasks: tollgate_client::layout::MAX_TASKS as u32,
        names: 256,
        tick: Duration::from_millis(5),
        liveness_timeout: Duration::from_secs(1),
        // Scheduler work keeps 10 % of each pool for interactive, background 25 %.
        tier_floor_permille: [0, 100, 250],
        // 1 credit per lane, the sidecar's default (covers the demo's honest overruns).
        lane_overrun_allowance: 1_000_000,
    }
}

/// True once the pod's region exists and serves the demo's tenant and models.
pub fn region_serves(region: &std::path::Path) -> bool {
    tollgate_client::Gate::attach(region)
        .ok()
        .is_some_and(|g| g.tenant(TENANT).is_ok() && g.model("fast-small").is_ok())
}

/// Waits until the pod's region exists and serves the tenant and the models.
fn wait_ready(region: &std::path::Path, timeout: Duration) -> anyhow::Result<()> {
    let end = Instant::now() + timeout;
    loop {
        if region_serves(region) {
            return Ok(());
        }
        if Instant::now() > end {
            anyhow::bail!(
                "the sidecar did not configure {} within {timeout:?}",
                region.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs the demo.
pub async fn run(args: Script) -> anyhow::Result<()> {
    let started = Instant::now();
    // Component logs only on request (TOLLGATE_LOG=info): the demo's own lines are the show.
    if let Ok(filter) = std::env::var("TOLLGATE_LOG") {
        tollgate_sidecar::logging::init(&filter, tollgate_sidecar::logging::LogFormat::Text)?;
    }
    let dir = tempfile::Builder::new()
        .prefix("tollgate-demo-")
        .tempdir()?;
    let agents = args.agents as usize;
    let expected = BURN_PER_AGENT * agents as u64 * args.duration.as_secs().max(1);
    let budget = Budget::for_expected_burn(expected);

    println!(
        "Tollgate demo: {agents} agents on 2 pods for {:?}",
        args.duration
    );
    println!(
        "tenant {TENANT}: trial {} cr (pays first), purchased {} cr (then), overage billed by the plan up to its hard cap of {} cr",
        cr(budget.trial),
        cr(budget.purchased),
        cr(budget.hard_cap)
    );

    let backend = crate::backend::Backend::start(dir.path(), budget, args.http).await?;
    println!(
        "{} (up in {:.1}s)",
        backend.describe(),
        started.elapsed().as_secs_f32()
    );
    if let Some(url) = backend.dashboard_url() {
        println!(
            "dashboard: {url} (sign in with the token {})",
            crate::backend::ADMIN_TOKEN
        );
    }

    let mut pods = Vec::new();
    for pod in ["pod-a", "pod-b"] {
        let cfg = pod_config(dir.path(), pod, &backend.url());
        let region = cfg.region.clone();
        let running = tokio::task::spawn_blocking(move || tollgate_sidecar::run::spawn(cfg))
            .await?
            .with_context(|| format!("starting sidecar {pod}"))?;
        println!(
            "sidecar {pod}: region {} , /metrics on http://{}",
            region.display(),
            running.http_addr
        );
        pods.push((pod, region, running));
    }
    let regions: [PathBuf; 2] = [pods[0].1.clone(), pods[1].1.clone()];
    for r in &regions {
        let r = r.clone();
        tokio::task::spawn_blocking(move || wait_ready(&r, Duration::from_secs(15))).await??;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(FleetStats::default());
    let specs = fleet::plan(agents);
    let handles = fleet::run(
        specs,
        regions.clone(),
        TENANT.to_string(),
        stop.clone(),
        stats.clone(),
    )?;
    println!(
        "fleet started {:.1}s after launch; progress every {}s\n",
        started.elapsed().as_secs_f32(),
        args.every
    );

    let t0 = Instant::now();
    let mut last = (0u64, Instant::now());
    while t0.elapsed() < args.duration {
        let left = args.duration.saturating_sub(t0.elapsed());
        tokio::time::sleep(left.min(Duration::from_secs(args.every))).await;
        let (spent, calls) = stats.totals();
        let dt = last.1.elapsed().as_millis().max(1) as u64;
        let burn = (spent - last.0) * 1000 / dt; // micro-credits per second
        last = (spent, Instant::now());
        let bal = backend.balance().await;
        let depletion = bal
            .spendable
            .checked_div(burn)
            .map_or_else(|| "-".to_string(), |s| format!("{s}s"));
        let mut den: Vec<String> = stats
            .denials()
            .into_iter()
            .map(|((r, t), n)| format!("{r}/{t} {n}"))
            .collect();
        if den.is_empty() {
            den.push("none".into());
        }
        println!(
            "[{:>5.1}s] spendable {:>8} cr | {} | burn {:>6} cr/s | depletion in {:>5} | calls {:>6} | denials: {}",
            t0.elapsed().as_secs_f32(),
            cr(bal.spendable),
            bal.phase,
            cr(burn),
            depletion,
            calls,
            den.join(", ")
        );
    }

    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    println!("\nfleet stopped; stopping the sidecars (usage flushed, unused leases returned)");
    let stops: Vec<_> = pods
        .into_iter()
        .map(|(pod, _region, running)| (pod, tokio::task::spawn_blocking(move || running.stop())))
        .collect();
    for (pod, s) in stops {
        s.await?
            .with_context(|| format!("stopping sidecar {pod}"))?;
    }

    let (spent, calls) = stats.totals();
    let snapshot = stats.snapshot();
    let free: u64 = snapshot.values().map(|(_, a)| a.free_calls).sum();
    println!(
        "\n== Fleet: {calls} paid calls, {} cr committed ({free} agent-initiated calls were free) ==",
        cr(spent)
    );
    for tier in Tier::ALL {
        let (s, c, d): (u64, u64, u64) =
            snapshot
                .values()
                .filter(|(t, _)| *t == tier)
                .fold((0, 0, 0), |(s, c, d), (_, a)| {
                    (
                        s + a.spent,
                        c + a.calls,
                        d + a.denials.values().sum::<u64>(),
                    )
                });
        println!(
            "  {:<12} {:>7} calls {:>9} cr  {:>6} denials",
            tier.as_str(),
            c,
            cr(s),
            d
        );
    }
    println!("  by agent (every instance of a name together; an AWU is a completed task):");
    for (agent, a) in fleet::by_agent(&snapshot) {
        let per_awu = a
            .spent
            .checked_div(a.tasks_done)
            .map_or_else(|| "-".to_string(), |c| format!("{} cr", cr(c)));
        println!(
            "    {agent:<14} {:>6} calls {:>9} cr  {:>4} outcomes  {:>4} AWUs  {per_awu:>10} per AWU  {:>3} tasks stopped",
            a.calls,
            cr(a.spent),
            a.outcomes,
            a.tasks_done,
            a.tasks_stopped
        );
    }
    if let Some((_, a)) = snapshot.get("runaway-loop") {
        match &a.stopped_by {
            Some(by) => println!(
                "  runaway-loop: stopped by {by} after {} calls ({} cr); the tenant was not affected",
                a.calls,
                cr(a.spent)
            ),
            None => println!(
                "  runaway-loop: still running when the fleet stopped ({} calls, {} cr)",
                a.calls,
                cr(a.spent)
            ),
        }
    }
    let errors: u64 = snapshot.values().map(|(_, a)| a.errors).sum();
    if errors > 0 {
        let first = snapshot
            .values()
            .find_map(|(_, a)| a.first_error.clone())
            .unwrap_or_default();
        println!("  errors: {errors} (first: {first})");
    }
    println!("  reserve latency while authority and sidecars run (Instant overhead subtracted;");
    println!(
        "  `first` is each agent's first reserve, which claims its lane and waits for its first allowance):"
    );
    for outcome in fleet::Outcome::ALL {
        match stats.reserve_latency(outcome) {
            Some(l) => println!("    {l}"),
            None => println!("    {:<8} no reserve", format!("{}:", outcome.as_str())),
        }
    }

    println!(
        "sidecars stopped {:.1}s after launch",
        started.elapsed().as_secs_f32()
    );
    println!("\n== Regions after shutdown (what each pod leased, spent and gave back) ==");
    for (pod, region) in ["pod-a", "pod-b"].iter().zip(regions.iter()) {
        match region_totals(region) {
            Ok(t) => println!(
                "  {pod}: leased {} cr, consumed {} cr, returned {} cr, still in the region {} cr, overruns {} cr; conservation {}",
                cr(t.granted),
                cr(t.consumed),
                cr(t.returned),
                cr(t.left),
                cr(t.overrun),
                if t.balanced { "exact" } else { "BROKEN" }
            ),
            Err(e) => println!("  {pod}: cannot audit the region: {e:#}"),
        }
    }

    let t_report = Instant::now();
    // The ledger counts every call, free ones too (each gets a posting of 0).
    let report = backend
        .finish(crate::backend::FleetTotals {
            spent,
            paid_calls: calls,
            free_calls: free,
        })
        .await?;
    tracing::info!(took = ?t_report.elapsed(), "statement and audit check");
    println!("{report}");
    println!("demo finished in {:.1}s", started.elapsed().as_secs_f32());
    if args.keep {
        if let Some(url) = backend.dashboard_url() {
            println!(
                "--keep: the authority keeps serving; dashboard {url} (token {}); Ctrl-C to stop",
                crate::backend::ADMIN_TOKEN
            );
        }
        backend.keep_serving().await?;
    }
    Ok(())
}

/// A region's pool totals after its sidecar stopped.
#[derive(Debug, Clone, Copy, Default)]
pub struct RegionTotals {
    /// Leased into the pools.
    pub granted: u64,
    /// Consumed (including overruns).
    pub consumed: u64,
    /// Given back to the authority.
    pub returned: u64,
    /// Still in pools or lanes.
    pub left: u64,
    /// Overruns (actual past reservation).
    pub overrun: u64,
    /// Every pool and lane balances.
    pub balanced: bool,
}

/// Opens a stopped sidecar's region and sums its pools (`granted + overrun = available +
/// carved + consumed + returned` must hold for each).
pub fn region_totals(path: &std::path::Path) -> anyhow::Result<RegionTotals> {
    let r = tollgate_client::Region::open_owner(path)?;
    let audit = r.audit();
    let mut t = RegionTotals {
        balanced: audit.check().is_ok(),
        ..RegionTotals::default()
    };
    for p in &audit.pools {
        t.granted += p.granted;
        t.consumed += p.consumed;
        t.returned += p.returned;
        t.left += p.available + p.carved;
        t.overrun += p.overrun;
    }
    Ok(t)
}
