//! The simulated agent fleet: threads that reserve before every (simulated) LLM call and
//! commit what it actually used, through `tollgate-client`, like a real agent runtime.
//!
//! Agents are spread over the two pods, the three tiers and several models, and are named
//! (`support-bot`, `report-writer`, `indexer`: several instances each, attributed to the
//! name). Each works in named tasks (`support-bot-3/t12`) with a budget and a call limit,
//! registered with the sidecar and leased from the authority; a finished task is completed
//! (one Agentic Work Unit). Support agents report outcomes: a resolved ticket with the
//! call that resolved it, or later on its own, priced per resolution. The last agent is a
//! runaway loop on one task, `ticket-4711`, stopped by that task's budget: the refusal names
//! the task. Every outcome is counted per agent, tier and reason, so the demo can show
//! denials by reason and tier and reconcile the fleet's spend with the authority's
//! statement.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tollgate_client::{Call, Gate, ReserveError, TaskSpec};
use tollgate_core::{Credits, Initiator, Tier, Usage};

/// The runaway loop's task.
pub const RUNAWAY_TASK: &str = "ticket-4711";
/// The per-outcome model support agents report resolutions with.
pub const RESOLUTION_MODEL: &str = "resolution";

/// What an agent does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Tasks of a few calls each, each task within its budget.
    Normal,
    /// One task that loops on large calls until its budget stops it.
    Runaway,
}

/// One simulated agent.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    /// Display name (the agent and its instance number).
    pub name: String,
    /// The agent's name, as its calls carry it (every instance shares it).
    pub agent: &'static str,
    /// What its calls are for.
    pub feature: &'static str,
    /// It reports outcomes (resolved tickets).
    pub outcomes: bool,
    /// Which pod (0 or 1).
    pub pod: usize,
    /// Priority tier.
    pub tier: Tier,
    /// Who starts its calls.
    pub initiator: Initiator,
    /// Model it calls.
    pub model: &'static str,
    /// Per-task budget.
    pub task_budget: Credits,
    /// Calls per task.
    pub calls_per_task: u32,
    /// Behaviour.
    pub behaviour: Behaviour,
    /// Simulated call latency.
    pub latency: Duration,
}

/// The fleet for `n` agents.
pub fn plan(n: usize) -> Vec<AgentSpec> {
    let models = [
        "frontier-large",
        "balanced-medium",
        "fast-small",
        "code-actions",
        "premium-requests",
    ];
    let roles: [(&str, &str, Tier, Initiator); 3] = [
        ("support-bot", "answer", Tier::Interactive, Initiator::Human),
        (
            "report-writer",
            "nightly-report",
            Tier::Scheduler,
            Initiator::Agent,
        ),
        ("indexer", "embed", Tier::Background, Initiator::Agent),
    ];
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let (role, feature, tier, initiator) = roles[i % 3];
        let model = models[(i / 3 + i) % models.len()];
        let runaway = i == n - 1;
        out.push(AgentSpec {
            name: if runaway {
                "runaway-loop".to_string()
            } else {
                format!("{role}-{}", i / 3 + 1)
            },
            agent: if runaway { "runaway-loop" } else { role },
            feature: if runaway { "triage" } else { feature },
            outcomes: !runaway && i % 3 == 0,
            pod: i % 2,
            tier: if runaway { Tier::Background } else { tier },
            initiator,
            model: if runaway { "frontier-large" } else { model },
            // Normal tasks fit their calls (and a support task its resolution); the runaway
            // loop's budget stops it after a few.
            task_budget: if runaway {
                Credits::from_micros(400_000)
            } else {
                Credits::from_micros(2_500_000)
            },
            calls_per_task: if runaway {
                u32::MAX
            } else {
                4 + (i % 5) as u32
            },
            behaviour: if runaway {
                Behaviour::Runaway
            } else {
                Behaviour::Normal
            },
            latency: Duration::from_millis(8 + (i as u64 * 7) % 25),
        });
    }
    out
}

/// Counters of one agent.
#[derive(Debug, Clone, Default)]
pub struct AgentStats {
    /// Committed calls that cost something.
    pub calls: u64,
    /// Committed calls that cost nothing (agent-initiated calls on free per-request prices).
    pub free_calls: u64,
    /// Credits committed (micro).
    pub spent: u64,
    /// Denials by reason.
    pub denials: BTreeMap<String, u64>,
    /// Tasks stopped by their budget or call limit.
    pub tasks_stopped: u64,
    /// Tasks completed: one Agentic Work Unit each.
    pub tasks_done: u64,
    /// Outcomes reported (resolved tickets).
    pub outcomes: u64,
    /// The task refusal that stopped the agent, if one did (the runaway loop): its id and why.
    pub stopped_by: Option<String>,
    /// Other errors (first one kept).
    pub errors: u64,
    /// First error text.
    pub first_error: Option<String>,
}

/// Shared fleet state.
#[derive(Debug, Default)]
pub struct FleetStats {
    /// Per agent (by name), with its tier.
    pub agents: Mutex<BTreeMap<String, (Tier, AgentStats)>>,
    /// `gate.reserve` latency of every agent, in ns with the clock's own cost subtracted,
    /// by [`Outcome`] (granted first); each agent merges its histograms when it ends.
    pub reserve_ns: Mutex<[Option<Histogram<u64>>; Outcome::COUNT]>,
    /// The clock cost subtracted from every sample (median empty `Instant` pair), in ns.
    pub clock_overhead_ns: AtomicU64,
}

/// Highest trackable reserve latency, ns (60 s; anything above is clamped, never dropped).
const RESERVE_HIGH_NS: u64 = 60_000_000_000;

/// A fresh reserve-latency histogram (1 ns .. 60 s, 3 significant digits). Allocated before
/// the agent's loop so recording never allocates.
fn reserve_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, RESERVE_HIGH_NS, 3).expect("static bounds are valid")
}

/// The median cost of an empty `Instant::now()` .. `elapsed()` pair, in ns: what every
/// timed reserve carries on top of the operation itself.
fn clock_overhead_ns() -> u64 {
    let mut v: Vec<u64> = (0..20_001)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(t.elapsed()).as_nanos() as u64
        })
        .collect();
    v.sort_unstable();
    v[v.len() / 2]
}

/// What a timed `gate.reserve` returned. They are timed apart because they take different
/// paths: a granted reserve is the fast path (or a wait for a top-up); an agent's first
/// reserve claims a lane that has no allowance yet, so it always waits for the sidecar's
/// first top-up (start-up, not steady state); a denial is immediate when the sidecar knows
/// no refill is coming, else it follows the client's bounded wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A hold was returned, after the agent's first reserve.
    Granted,
    /// A hold was returned to the agent's first reserve (it claimed its lane).
    FirstGranted,
    /// An error was returned: a denial, a task out of budget, or another error.
    Denied,
}

impl Outcome {
    /// How many outcomes there are.
    pub const COUNT: usize = 3;
    /// Every outcome, in the order they are printed.
    pub const ALL: [Outcome; Outcome::COUNT] =
        [Outcome::Granted, Outcome::FirstGranted, Outcome::Denied];

    fn index(self) -> usize {
        match self {
            Outcome::Granted => 0,
            Outcome::FirstGranted => 1,
            Outcome::Denied => 2,
        }
    }

    /// `granted`, `first` or `denied`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Granted => "granted",
            Outcome::FirstGranted => "first",
            Outcome::Denied => "denied",
        }
    }
}

/// Reserve latency summary of one [`Outcome`], from the histograms merged over every agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReserveLatency {
    /// Which reserves.
    pub outcome: Outcome,
    /// Timed reserve calls.
    pub calls: u64,
    /// Median, ns.
    pub p50_ns: u64,
    /// 99th percentile, ns.
    pub p99_ns: u64,
    /// 99.9th percentile, ns.
    pub p999_ns: u64,
    /// Largest, ns.
    pub max_ns: u64,
}

impl std::fmt::Display for ReserveLatency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<8} p50 {} ns, p99 {} ns, p99.9 {} ns, max {} ns over {} calls",
            format!("{}:", self.outcome.as_str()),
            self.p50_ns,
            self.p99_ns,
            self.p999_ns,
            self.max_ns,
            self.calls
        )
    }
}

impl FleetStats {
    fn update(&self, name: &str, tier: Tier, f: impl FnOnce(&mut AgentStats)) {
        let mut g = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g
            .entry(name.to_string())
            .or_insert_with(|| (tier, AgentStats::default()))
            .1);
    }

    /// A copy of the counters.
    pub fn snapshot(&self) -> BTreeMap<String, (Tier, AgentStats)> {
        self.agents
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Total committed (micro) and calls.
    pub fn totals(&self) -> (u64, u64) {
        self.snapshot()
            .values()
            .fold((0, 0), |(s, c), (_, a)| (s + a.spent, c + a.calls))
    }

    fn merge_reserve(&self, outcome: Outcome, h: &Histogram<u64>) {
        let mut g = self.reserve_ns.lock().unwrap_or_else(|p| p.into_inner());
        match g[outcome.index()].as_mut() {
            // Same bounds on both sides, so adding cannot fail.
            Some(all) => {
                let _ = all.add(h);
            }
            None => g[outcome.index()] = Some(h.clone()),
        }
    }

    /// Latency of the reserves that ended in `outcome`, over every agent that has ended
    /// (`None` before any did, or when none of its reserves ended so).
    pub fn reserve_latency(&self, outcome: Outcome) -> Option<ReserveLatency> {
        let g = self.reserve_ns.lock().unwrap_or_else(|p| p.into_inner());
        g[outcome.index()]
            .as_ref()
            .filter(|h| !h.is_empty())
            .map(|h| ReserveLatency {
                outcome,
                calls: h.len(),
                p50_ns: h.value_at_quantile(0.50),
                p99_ns: h.value_at_quantile(0.99),
                p999_ns: h.value_at_quantile(0.999),
                max_ns: h.max(),
            })
    }

    /// Denials by (reason, tier).
    pub fn denials(&self) -> BTreeMap<(String, Tier), u64> {
        let mut out = BTreeMap::new();
        for (tier, a) in self.snapshot().values() {
            for (r, n) in &a.denials {
                *out.entry((r.clone(), *tier)).or_insert(0) += n;
            }
        }
        out
    }
}

/// The agents' counters summed by agent name (the instances of one name together), from a
/// snapshot keyed by display name.
pub fn by_agent(snapshot: &BTreeMap<String, (Tier, AgentStats)>) -> BTreeMap<String, AgentStats> {
    let mut out: BTreeMap<String, AgentStats> = BTreeMap::new();
    for (name, (_, a)) in snapshot {
        // Display names are the agent's name and an instance number: `support-bot-3`.
        let agent = match name.rsplit_once('-') {
            Some((base, n)) if n.chars().all(|c| c.is_ascii_digit()) => base,
            _ => name.as_str(),
        };
        let e = out.entry(agent.to_string()).or_default();
        e.calls += a.calls;
        e.free_calls += a.free_calls;
        e.spent += a.spent;
        e.tasks_stopped += a.tasks_stopped;
        e.tasks_done += a.tasks_done;
        e.outcomes += a.outcomes;
        e.errors += a.errors;
    }
    out
}

fn reason(e: &ReserveError) -> String {
    match e {
        ReserveError::Denied(d) => match d.limit {
            Some(l) => tollgate_sidecar::owner::reason_label(l),
            None => "allowance".into(),
        },
        ReserveError::TaskExhausted { why, .. } => format!("task_{why:?}").to_lowercase(),
        other => format!("error: {other}"),
    }
}

/// A tiny deterministic generator (no floats near money; this only shapes token counts).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// Runs the fleet until `stop`; `regions[pod]` is each pod's region file.
pub fn run(
    specs: Vec<AgentSpec>,
    regions: [PathBuf; 2],
    tenant: String,
    stop: Arc<AtomicBool>,
    stats: Arc<FleetStats>,
) -> anyhow::Result<Vec<std::thread::JoinHandle<()>>> {
    let gates = [
        Arc::new(Gate::attach(&regions[0])?),
        Arc::new(Gate::attach(&regions[1])?),
    ];
    let overhead = clock_overhead_ns();
    stats.clock_overhead_ns.store(overhead, Ordering::Relaxed);
    let mut handles = Vec::new();
    for (i, spec) in specs.into_iter().enumerate() {
        let gate = gates[spec.pod].clone();
        let stop = stop.clone();
        let stats = stats.clone();
        let tenant = tenant.clone();
        handles.push(
            std::thread::Builder::new()
                .name(spec.name.clone())
                .spawn(move || {
                    let mut lat = Timer {
                        hist: std::array::from_fn(|_| reserve_histogram()),
                        overhead,
                    };
                    agent(
                        gate,
                        spec,
                        tenant,
                        stop,
                        &stats,
                        0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1),
                        &mut lat,
                    );
                    for o in Outcome::ALL {
                        stats.merge_reserve(o, &lat.hist[o.index()]);
                    }
                })?,
        );
    }
    Ok(handles)
}

/// One agent's reserve timings, by [`Outcome`].
struct Timer {
    hist: [Histogram<u64>; Outcome::COUNT],
    /// Clock cost subtracted from each sample, ns.
    overhead: u64,
}

fn agent(
    gate: Arc<Gate>,
    spec: AgentSpec,
    tenant: String,
    stop: Arc<AtomicBool>,
    stats: &FleetStats,
    seed: u64,
    lat: &mut Timer,
) {
    let mut rng = Rng(seed);
    let err = |stats: &FleetStats, e: String| {
        stats.update(&spec.name, spec.tier, |a| {
            a.errors += 1;
            a.first_error.get_or_insert(e);
        })
    };
    let names = (
        gate.tenant(&tenant),
        gate.model(spec.model),
        gate.agent(spec.agent),
        gate.feature(spec.feature),
    );
    let (t, model, me, feature) = match names {
        (Ok(t), Ok(m), Ok(a), Ok(f)) => (t, m, a, f),
        (Err(e), ..) | (_, Err(e), ..) | (_, _, Err(e), _) | (.., Err(e)) => {
            return err(stats, e.to_string());
        }
    };
    let resolution = if spec.outcomes {
        gate.model(RESOLUTION_MODEL).ok()
    } else {
        None
    };
    stats.update(&spec.name, spec.tier, |_| {});
    let mut backoff_until: Option<Instant> = None;
    let mut task_n = 0u32;
    while !stop.load(Ordering::Relaxed) {
        task_n += 1;
        let (id, max_calls) = match spec.behaviour {
            Behaviour::Runaway => (RUNAWAY_TASK.to_string(), 0),
            // Its calls, and a resolution reported on its own.
            Behaviour::Normal => (format!("{}/t{task_n}", spec.name), spec.calls_per_task + 1),
        };
        let open = TaskSpec::new(id)
            .tenant(t)
            .budget(spec.task_budget)
            .max_calls(max_calls)
            .agent(me);
        let task = match gate.open_task(&open) {
            Ok(task) => task,
            Err(e) => {
                err(stats, e.to_string());
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let mut n = 0u32;
        // The first reserve on a task claims a lane of its own and waits for its first
        // allowance: timed apart from the steady state.
        let mut first_on_lane = true;
        while n < spec.calls_per_task && !stop.load(Ordering::Relaxed) {
            if let Some(t) = backoff_until {
                let now = Instant::now();
                if now < t {
                    std::thread::sleep((t - now).min(Duration::from_millis(50)));
                    continue;
                }
                backoff_until = None;
            }
            let input = rng.range(300, 2_500);
            let max_out = 800;
            let call = Call::model(&model)
                .tenant(t)
                .agent(me)
                .feature(feature)
                .input_tokens(input)
                .max_output_tokens(max_out)
                .tier(spec.tier)
                .initiator(spec.initiator)
                .task(&task);
            // Only the reserve is timed; recording happens after (and never allocates).
            let t_reserve = Instant::now();
            let reserved = gate.reserve(&call);
            let took = t_reserve.elapsed().as_nanos() as u64;
            let outcome = match (reserved.is_ok(), first_on_lane) {
                (true, true) => Outcome::FirstGranted,
                (true, false) => Outcome::Granted,
                (false, _) => Outcome::Denied,
            };
            lat.hist[outcome.index()].saturating_record(took.saturating_sub(lat.overhead));
            match reserved {
                Ok(hold) => {
                    first_on_lane = false;
                    std::thread::sleep(spec.latency);
                    let out = rng.range(50, max_out);
                    // A support call resolves the ticket now and then, with its answer.
                    let resolved = u32::from(spec.outcomes && rng.range(0, 9) < 2);
                    match hold.commit_with_outcomes(Usage::new(input, out), resolved) {
                        Ok(c) => stats.update(&spec.name, spec.tier, |a| {
                            a.outcomes += u64::from(resolved);
                            if c.0 == 0 {
                                a.free_calls += 1;
                            } else {
                                a.calls += 1;
                                a.spent += c.0;
                            }
                        }),
                        Err(e) => err(stats, e.to_string()),
                    }
                    n += 1;
                }
                Err(ReserveError::TaskExhausted { task, why, .. }) => {
                    let e = ReserveError::TaskExhausted {
                        task: task.clone(),
                        why,
                        needed: Credits::ZERO,
                        remaining: Credits::ZERO,
                    };
                    stats.update(&spec.name, spec.tier, |a| {
                        *a.denials.entry(reason(&e)).or_insert(0) += 1;
                        a.tasks_stopped += 1;
                        if spec.behaviour == Behaviour::Runaway {
                            a.stopped_by = Some(format!("task {task} ({why})"));
                        }
                    });
                    if spec.behaviour == Behaviour::Runaway {
                        // The runtime stops the runaway loop by its task's id: the task is
                        // out, not the tenant.
                        return;
                    }
                    break;
                }
                Err(ReserveError::Denied(d)) => {
                    let e = ReserveError::Denied(d.clone());
                    stats.update(&spec.name, spec.tier, |a| {
                        *a.denials.entry(reason(&e)).or_insert(0) += 1
                    });
                    backoff_until =
                        Some(Instant::now() + d.retry_after.max(Duration::from_millis(20)));
                }
                Err(e) => {
                    err(stats, e.to_string());
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        if n < spec.calls_per_task {
            continue; // stopped, or out of budget: not completed
        }
        // A ticket resolved after the work, reported on its own at the per-outcome price.
        if let Some(res) = &resolution
            && task_n.is_multiple_of(3)
        {
            let report = Call::model(res)
                .tenant(t)
                .agent(me)
                .feature(feature)
                .tier(spec.tier)
                .initiator(spec.initiator)
                .task(&task);
            match gate.report_outcomes(&report, 1) {
                Ok(c) => stats.update(&spec.name, spec.tier, |a| {
                    a.outcomes += 1;
                    a.calls += 1;
                    a.spent += c.0;
                }),
                Err(e @ (ReserveError::Denied(_) | ReserveError::TaskExhausted { .. })) => stats
                    .update(&spec.name, spec.tier, |a| {
                        *a.denials.entry(reason(&e)).or_insert(0) += 1
                    }),
                Err(e) => err(stats, e.to_string()),
            }
        }
        match task.complete() {
            Ok(()) => stats.update(&spec.name, spec.tier, |a| a.tasks_done += 1),
            Err(e) => err(stats, e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn granted_and_denied_reserves_merge_into_separate_lines() {
        let stats = FleetStats::default();
        assert_eq!(stats.reserve_latency(Outcome::Granted), None);
        assert_eq!(stats.reserve_latency(Outcome::Denied), None);
        // Agent one: two fast grants, no denial.
        let mut a: [Histogram<u64>; Outcome::COUNT] = std::array::from_fn(|_| reserve_histogram());
        a[Outcome::Granted.index()].saturating_record(300);
        a[Outcome::Granted.index()].saturating_record(400);
        // Agent two: one slow grant, two denials after the slow-path wait.
        let mut b: [Histogram<u64>; Outcome::COUNT] = std::array::from_fn(|_| reserve_histogram());
        b[Outcome::Granted.index()].saturating_record(500);
        b[Outcome::Denied.index()].saturating_record(10_000_000);
        b[Outcome::Denied.index()].saturating_record(RESERVE_HIGH_NS * 2); // clamped, counted
        for h in [&a, &b] {
            for o in Outcome::ALL {
                stats.merge_reserve(o, &h[o.index()]);
            }
        }
        let g = stats
            .reserve_latency(Outcome::Granted)
            .expect("grants merged");
        assert_eq!(g.calls, 3);
        assert!(
            g.max_ns < 1_000,
            "no denial leaked into the granted line: {g:?}"
        );
        assert_eq!(g.p50_ns, 400, "{g:?}");
        let d = stats
            .reserve_latency(Outcome::Denied)
            .expect("denials merged");
        assert_eq!(d.calls, 2);
        assert!(d.p50_ns >= 9_990_000, "{d:?}");
        assert!(
            d.max_ns >= RESERVE_HIGH_NS - RESERVE_HIGH_NS / 1000,
            "{d:?}"
        );
        assert_eq!(
            g.to_string(),
            "granted: p50 400 ns, p99 500 ns, p99.9 500 ns, max 500 ns over 3 calls"
        );
        assert!(d.to_string().starts_with("denied:  p50 "), "{d}");
    }

    #[test]
    fn instances_are_summed_by_agent_name() {
        let mut snap = BTreeMap::new();
        let a = |calls, done, outcomes| AgentStats {
            calls,
            tasks_done: done,
            outcomes,
            spent: calls * 10,
            ..AgentStats::default()
        };
        snap.insert("support-bot-1".to_string(), (Tier::Interactive, a(3, 1, 2)));
        snap.insert("support-bot-12".to_string(), (Tier::Interactive, a(4, 2, 1)));
        snap.insert("runaway-loop".to_string(), (Tier::Background, a(5, 0, 0)));
        let by = by_agent(&snap);
        assert_eq!(by.len(), 2);
        let s = &by["support-bot"];
        assert_eq!((s.calls, s.tasks_done, s.outcomes, s.spent), (7, 3, 3, 70));
        assert_eq!(by["runaway-loop"].calls, 5, "a name without an instance number");
    }

    #[test]
    fn the_plan_names_agents_and_gives_the_runaway_loop_its_task() {
        let p = plan(7);
        assert_eq!(p[6].agent, "runaway-loop");
        assert_eq!(p[6].behaviour, Behaviour::Runaway);
        assert!(p[..6].iter().any(|s| s.agent == "support-bot" && s.outcomes));
        assert!(p[..6].iter().all(|s| s.name.starts_with(s.agent)));
    }

    #[test]
    fn an_outcome_no_reserve_had_prints_nothing() {
        let stats = FleetStats::default();
        let mut a: [Histogram<u64>; Outcome::COUNT] = std::array::from_fn(|_| reserve_histogram());
        a[Outcome::Granted.index()].saturating_record(300);
        for o in Outcome::ALL {
            stats.merge_reserve(o, &a[o.index()]);
        }
        assert!(stats.reserve_latency(Outcome::Granted).is_some());
        assert_eq!(stats.reserve_latency(Outcome::Denied), None);
    }
}
