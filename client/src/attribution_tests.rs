//! Unit tests of attribution on real mapped regions: agent and feature names, outcomes,
//! pre-rated costs, named tasks and their completion, retry hints.

use std::time::{Duration, SystemTime};

use tollgate_core::rating::{ModelPrice, PriceBook, PriceBookSpec, Pricing};
use tollgate_core::{Credits, Initiator, LimitKind, Tier, Usage};

use super::*;
use crate::layout::MAX_NAME;
use crate::tests::{C, setup};

/// A book with "m" priced per token (1 credit per million input tokens, 2 per million
/// output) and "resolution" priced per outcome (0.99 credits).
fn book() -> PriceBook {
    PriceBook::new(PriceBookSpec {
        version: 3,
        request_price: Credits::ZERO,
        default_max_output_tokens: 1_000,
        models: vec![
            ModelPrice {
                name: "m".into(),
                pricing: Pricing::PerToken {
                    input_per_million: Credits(C),
                    output_per_million: Credits(2 * C),
                },
                max_output_tokens: None,
            },
            ModelPrice {
                name: "resolution".into(),
                pricing: Pricing::PerOutcome {
                    price_per_outcome: Credits(990_000),
                },
                max_output_tokens: None,
            },
        ],
    })
    .unwrap()
}

/// Region with credits carved into the interactive lane `gate` claims for the base class.
fn ready(dir: &tempfile::TempDir) -> (Region, Gate) {
    let (r, path) = setup(dir, 1000 * C);
    r.publish_price_book(&book()).unwrap();
    let gate = Gate::attach_with(&path, &GateOptions::new().agent("support-bot")).unwrap();
    (r, gate)
}

/// Reserves `call` until the lane it lands on is topped up (the test plays the sidecar).
fn reserve_fed<'a>(r: &Region, gate: &'a Gate, call: &Call<'a>) -> Reservation<'a> {
    for _ in 0..3 {
        match gate.reserve(call) {
            Ok(h) => return h,
            Err(ReserveError::Denied(_)) => {
                for (lane, _) in r.demands() {
                    r.top_up(lane, Credits(100 * C)).unwrap();
                }
            }
            Err(e) => panic!("reserve: {e}"),
        }
    }
    panic!("no credits after top-ups");
}

fn drain(r: &Region) -> Vec<UsageRecord> {
    let mut out = Vec::new();
    r.drain_all(&mut out).unwrap();
    out
}

#[test]
fn agent_and_feature_names_reach_the_records() {
    let dir = tempfile::tempdir().unwrap();
    let (r, gate) = ready(&dir);
    assert_eq!(gate.agent_name(), "support-bot");
    let acme = gate.tenant("acme").unwrap();
    let triage = gate.agent("triage-bot").unwrap();
    let summarize = gate.feature("summarize").unwrap();
    // As the process's agent, then as another agent (its own lane: quotas are per agent).
    let base = Call::fixed(Credits(C)).tenant(acme).feature(summarize);
    reserve_fed(&r, &gate, &base)
        .commit_credits(Credits(C))
        .unwrap();
    reserve_fed(&r, &gate, &base.agent(triage))
        .commit_credits(Credits(C))
        .unwrap();
    let recs = drain(&r);
    assert_eq!(recs.len(), 2);
    let names: Vec<_> = recs
        .iter()
        .map(|x| (r.name(x.agent), r.name(x.feature)))
        .collect();
    assert!(names.contains(&(Some("support-bot".into()), Some("summarize".into()))));
    assert!(names.contains(&(Some("triage-bot".into()), Some("summarize".into()))));
    let lanes = r.lanes();
    assert_eq!(lanes.len(), 2, "one lane per agent name");
    let agents: Vec<_> = lanes.iter().map(|l| r.name(l.key.unwrap().agent)).collect();
    assert!(agents.contains(&Some("triage-bot".into())));
    r.audit().check().unwrap();
}

#[test]
fn names_are_interned_once_and_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let (r, path) = setup(&dir, 1000 * C);
    let gate = Gate::attach(&path).unwrap();
    let other = Gate::attach(&path).unwrap();
    let a = gate.agent("a").unwrap();
    assert_eq!(gate.agent("a").unwrap(), a, "same name, same id");
    assert_eq!(
        other.feature("a").unwrap().id(),
        a.id(),
        "one table for every kind"
    );
    assert_ne!(gate.feature("b").unwrap().id(), a.id());
    assert_eq!(gate.agent("").unwrap().id(), 0, "unnamed");
    assert!(matches!(
        gate.agent(&"x".repeat(MAX_NAME + 1)),
        Err(ReserveError::InvalidName { .. })
    ));
    // The test region has 63 usable entries: the 64th distinct name is refused, typed.
    let mut n = 0;
    let full = loop {
        match gate.feature(&format!("f{n}")) {
            Ok(_) => n += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(full, ReserveError::NameTableFull { capacity: 63 });
    assert_eq!(n, 61, "63 entries minus 'a' and 'b'");
    assert_eq!(r.names_used(), (63, 63));
    // A name interned before the table filled still resolves.
    assert_eq!(gate.agent("a").unwrap(), a);
    let path2 = dir.path().join("region");
    assert!(matches!(
        Gate::attach_with(&path2, &GateOptions::new().agent("new-agent")),
        Err(AttachError::AgentName { .. })
    ));
}

#[test]
fn the_agent_name_comes_from_the_option_then_the_environment() {
    let set = GateOptions::new().agent("opt-bot");
    assert_eq!(set.resolve_agent(Some("env-bot".into())), "opt-bot");
    assert_eq!(
        GateOptions::new().resolve_agent(Some("env-bot".into())),
        "env-bot"
    );
    assert_eq!(GateOptions::new().resolve_agent(None), "");
    let dir = tempfile::tempdir().unwrap();
    let (r, path) = setup(&dir, 1000 * C);
    let gate = Gate::attach_with(&path, &set).unwrap();
    assert_eq!(gate.agent_name(), "opt-bot");
    let id = gate.agent("opt-bot").unwrap().id();
    assert_eq!(r.name(id).as_deref(), Some("opt-bot"));
}

#[test]
fn outcomes_and_pre_rated_costs_reach_the_records() {
    let dir = tempfile::tempdir().unwrap();
    let (r, gate) = ready(&dir);
    let m = gate.model("m").unwrap();
    let resolution = gate.model("resolution").unwrap();
    let call = Call::model(&m).input_tokens(1_000).max_output_tokens(1_000);
    // Usage with outcomes: per-token model, so the tokens are charged; outcomes carried.
    let got = reserve_fed(&r, &gate, &call)
        .commit_with_outcomes(Usage::new(500, 250), 2)
        .unwrap();
    assert_eq!(got, Credits(1_000));
    // The defect: a model call committed in credits wrote 0 tokens and was re-rated to 0.
    // Its record now says the cost was stated, and carries it.
    let got = reserve_fed(&r, &gate, &call)
        .commit_credits(Credits(2_345))
        .unwrap();
    assert_eq!(got, Credits(2_345));
    // A fixed-price call is pre-rated too, committed with usage or not.
    reserve_fed(&r, &gate, &Call::fixed(Credits(700)))
        .commit(Usage::new(10, 10))
        .unwrap();
    // An outcome on its own, by the per-outcome model's price.
    let charged = gate.report_outcomes(&Call::model(&resolution), 3).unwrap();
    assert_eq!(charged, Credits(3 * 990_000));
    let recs = drain(&r);
    let view: Vec<_> = recs
        .iter()
        .map(|x| {
            (
                x.actual.0,
                x.outcomes,
                x.pre_rated,
                x.input_tokens,
                x.model_index,
            )
        })
        .collect();
    assert_eq!(
        view,
        vec![
            (1_000, 2, false, 500, Some(0)),
            (2_345, 0, true, 0, Some(0)),
            (700, 0, true, 10, None),
            (2_970_000, 3, false, 0, Some(1)),
        ]
    );
    r.audit().check().unwrap();
}

#[test]
fn a_commit_on_another_thread_carries_outcomes() {
    let dir = tempfile::tempdir().unwrap();
    let (r, gate) = ready(&dir);
    let m = gate.model("m").unwrap();
    let call = Call::model(&m).input_tokens(1_000).max_output_tokens(1_000);
    let hold = reserve_fed(&r, &gate, &call);
    std::thread::scope(|s| {
        s.spawn(move || hold.commit_with_outcomes(Usage::new(100, 100), 5).unwrap());
    });
    // The owner settles the remote commit at its next reserve.
    reserve_fed(&r, &gate, &call).cancel();
    let recs = drain(&r);
    assert_eq!(recs.len(), 1);
    assert_eq!((recs[0].outcomes, recs[0].pre_rated), (5, false));
}

/// The test's sidecar for task lanes: a lane of task `t` is carved from the class's
/// pools 0-3 and the task's pool 4, gets one call at a time while `max_calls` allow, and
/// `credits` when its pools can pay.
fn serve_task_lanes(r: &Region, t: TaskRef, max_calls: u64, credits: u64) {
    for (lane, _) in r.demands() {
        let info = r.lanes().into_iter().find(|l| l.lane == lane).unwrap();
        if info.key.and_then(|k| k.task) != Some(t) {
            r.top_up(lane, Credits(credits)).unwrap();
            continue;
        }
        r.set_lane_pools(lane, &[0, 1, 2, 3, 4]).unwrap();
        let (made, given) = r.lane_calls(lane).unwrap();
        if made == given && r.task_calls(t).given < max_calls {
            r.give_calls(lane, t, 1).unwrap();
        }
        let _ = r.top_up(lane, Credits(credits));
    }
}

/// Reserves on a task, serving its lanes between tries.
fn reserve_task<'a>(
    r: &Region,
    gate: &'a Gate,
    t: TaskRef,
    call: &Call<'a>,
) -> Result<Reservation<'a>, ReserveError> {
    for _ in 0..4 {
        match gate.reserve(call) {
            Err(ReserveError::Denied(_)) => serve_task_lanes(r, t, 3, 5 * C),
            other => return other,
        }
    }
    gate.reserve(call)
}

#[test]
fn a_named_task_is_shared_limited_and_completed_once() {
    let dir = tempfile::tempdir().unwrap();
    let (r, gate) = ready(&dir);
    let acme = gate.tenant("acme").unwrap();
    let spec = TaskSpec::new("ticket-4711")
        .wait(Duration::ZERO)
        .tenant(acme)
        .budget(Credits(10 * C))
        .max_calls(3);
    let task = gate.open_task(&spec).unwrap();
    assert_eq!(task.id(), "ticket-4711");
    let t = task.task_ref();
    // Another process of the pod opening the same id joins the same task, with its terms.
    let other = Gate::attach(r.path()).unwrap();
    let joined = other
        .open_task(
            &TaskSpec::new("ticket-4711")
                .wait(Duration::ZERO)
                .tenant(acme),
        )
        .unwrap();
    assert_eq!(joined.task_ref(), t);
    assert_eq!((joined.budget(), joined.max_calls()), (Credits(10 * C), 3));
    assert!(matches!(
        gate.open_task(&TaskSpec::new("ticket-9").wait(Duration::ZERO)),
        Err(ReserveError::InvalidName { .. })
    ));
    let entries = r.tasks();
    let e = entries.iter().find(|e| e.task == t).unwrap();
    assert_eq!(
        (e.id.as_str(), e.budget, e.max_calls),
        ("ticket-4711", 10 * C, 3)
    );
    assert_eq!(e.status, TaskStatus::New);
    // The sidecar registers it: its budget is leased into pool 4.
    r.configure_pool(
        4,
        &PoolSpec {
            limit: LimitKind::Task,
            floors: [Credits::ZERO; 3],
        },
    )
    .unwrap();
    r.grant(4, Credits(6 * C)).unwrap();
    r.set_task_pool(t, 4).unwrap();
    r.set_task_status(t, TaskStatus::Open);
    assert_eq!(task.remaining(), Credits(6 * C));
    // Calls on the task are made on a lane of their own, carved from the task's pool too.
    let call = Call::fixed(Credits(2 * C)).tenant(acme).task(&task);
    reserve_task(&r, &gate, t, &call)
        .unwrap()
        .commit_credits(Credits(C))
        .unwrap();
    let task_lane = r
        .lanes()
        .into_iter()
        .find(|l| l.key.and_then(|k| k.task) == Some(t))
        .unwrap();
    assert_eq!(
        r.audit()
            .lanes
            .iter()
            .find(|l| l.lane == task_lane.lane)
            .unwrap()
            .pools,
        vec![0, 1, 2, 3, 4]
    );
    reserve_task(&r, &gate, t, &call)
        .unwrap()
        .commit_credits(Credits(C))
        .unwrap();
    // The lane has 3 credits and one call left; the task's pool has 1 credit: 5 is more
    // than the task can pay, and the sidecar, refused more of it, says it is spent.
    match reserve_task(&r, &gate, t, &Call::fixed(Credits(5 * C)).task(&task)) {
        Err(ReserveError::Denied(d)) => assert_eq!(d.limit, Some(LimitKind::Task)),
        other => panic!("expected the task's pool to bind, got {other:?}"),
    }
    r.set_task_status(t, TaskStatus::Spent);
    assert_eq!(
        task.remaining(),
        Credits(4 * C),
        "the lane's 3 and the pool's 1"
    );
    match gate.reserve(&Call::fixed(Credits(5 * C)).task(&task)) {
        Err(ReserveError::TaskExhausted { task: id, why, .. }) => {
            assert_eq!((id.as_str(), why), ("ticket-4711", TaskLimit::Budget));
        }
        other => panic!("expected the budget to refuse, got {other:?}"),
    }
    r.set_task_status(t, TaskStatus::Open);
    // The third and last call; a fourth is refused once the sidecar has no call to give.
    reserve_task(&r, &gate, t, &call).unwrap().cancel();
    match reserve_task(&r, &gate, t, &call) {
        Err(ReserveError::Denied(_)) => {}
        other => panic!("no call left on the lane, got {other:?}"),
    }
    assert_eq!(r.task_calls(t).made(), 3);
    r.set_task_status(t, TaskStatus::OutOfCalls);
    match gate.reserve(&call) {
        Err(ReserveError::TaskExhausted { why, .. }) => assert_eq!(why, TaskLimit::MaxCalls),
        other => panic!("expected max calls to refuse, got {other:?}"),
    }
    assert!(r.task_calls(t).balanced());
    task.complete().unwrap();
    assert!(task.is_completed() && joined.is_completed());
    match joined.complete() {
        Err(ReserveError::TaskExhausted { why, .. }) => assert_eq!(why, TaskLimit::Completed),
        other => panic!("a task completes once, got {other:?}"),
    }
    match gate.reserve(&Call::fixed(Credits(C)).task(&joined)) {
        Err(ReserveError::TaskExhausted { why, .. }) => assert_eq!(why, TaskLimit::Completed),
        other => panic!("a completed task refuses calls, got {other:?}"),
    }
    let recs = drain(&r);
    let work: Vec<_> = recs.iter().filter(|x| x.work_unit).collect();
    assert_eq!(work.len(), 1, "one work unit: {recs:?}");
    assert_eq!(work[0].task, Some(t));
    assert_eq!(work[0].actual, Credits::ZERO);
    assert_eq!(r.name(work[0].agent).as_deref(), Some("support-bot"));
    assert!(recs.iter().all(|x| x.task == Some(t)));
    assert!(r.tasks().iter().any(|e| e.task == t && e.completed));
    // The completing thread handed its lanes of the task back: the sidecar frees them, then
    // the entry (a lane of `joined`'s process was never claimed).
    assert!(!r.free_task(t), "a lane is still keyed by the task");
    r.reclaim_dead().unwrap();
    let calls = r.task_calls(t);
    assert!(calls.balanced(), "{calls:?}");
    assert_eq!(calls.made(), 3);
    assert!(r.free_task(t));
    match gate.reserve(&call) {
        Err(ReserveError::TaskExhausted { why, .. }) => assert_eq!(why, TaskLimit::Closed),
        other => panic!("a freed task refuses calls, got {other:?}"),
    }
    // The same id opens the same slot again: a new task, with none of the old one's calls.
    let again = gate.open_task(&spec).unwrap();
    let t2 = again.task_ref();
    assert_eq!(t2.slot, t.slot, "the slot was reused");
    assert_ne!(t2.generation, t.generation);
    assert_eq!(
        r.task_calls(t2),
        TaskCalls::default(),
        "no calls carried over"
    );
    assert_eq!(r.task(t2).map(|e| e.status), Some(TaskStatus::New));
    drop(again);
    r.audit().check().unwrap();
}

/// A process that dies between winning a task's completion mark and committing its
/// work-unit reservation: reclaim writes the work unit (once); one that dies before the
/// mark leaves none.
#[test]
fn a_completion_cut_short_by_death_is_recorded_by_reclaim() {
    use crate::codes::pack_names;
    use crate::lane::{META_NO_MODEL, META_WORK_UNIT, Request, View};
    use crate::layout::{L_CLAIM, L_KEY};
    use crate::sync::REL;
    for marked in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let (r, path) = setup(&dir, 100 * C);
        let gate = Gate::attach(&path).unwrap();
        let _ = &r;
        let task = gate
            .open_task(&TaskSpec::new("t").wait(Duration::ZERO).budget(Credits(C)))
            .unwrap();
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
        v.lw(5, L_CLAIM)
            .store(crate::holder::claimed_by(0, ghost), REL);
        v.lw(5, L_KEY).store(key.encode(), REL);
        let mut o = v.owner_for(5);
        let req = Request {
            meta: META_NO_MODEL | META_WORK_UNIT,
            names: pack_names(0, 0, Some(task.task_ref())),
            ..Default::default()
        };
        let slot = v.reserve(&mut o, &req, &mut |_| true).unwrap();
        let generation = crate::holder::generation(o.claim);
        if marked {
            assert!(v.mark_task_done(
                task.task_ref(),
                crate::codes::done_mark(5, generation, slot)
            ));
        }
        // The process dies here.
        let reports = r.reclaim_dead().unwrap();
        assert_eq!(reports.len(), 1);
        let recs = drain(&r);
        assert_eq!(
            recs.iter().filter(|x| x.work_unit).count(),
            usize::from(marked)
        );
        assert_eq!(task.is_completed(), marked);
        r.audit().check().unwrap();
    }
}

#[test]
fn retry_hints_keep_deadlines_and_spread_by_tier() {
    // Pure rule first: bands per tier, never before the deadline.
    let month = 20 * 86_400_000u64;
    for rand in [0, 1, 12_345, u64::MAX] {
        for (t, tier) in Tier::ALL.iter().enumerate() {
            let t = t as u64;
            let d = crate::gate::retry_delay(crate::gate::Hint::Until(month), *tier, rand);
            assert!(
                (month + t * 5_000..=month + (t + 1) * 5_000).contains(&d),
                "{d}"
            );
            let d = crate::gate::retry_delay(crate::gate::Hint::Refill(10), *tier, rand);
            let base = 10 << t;
            assert!((base..=base + base / 2 * (t + 1)).contains(&d), "{d}");
        }
    }
    // Through the gate: a lane of each tier denied until a month-long deadline.
    let dir = tempfile::tempdir().unwrap();
    let (r, path) = setup(&dir, 1000 * C);
    let gate = Gate::attach(&path).unwrap();
    let until = SystemTime::now() + Duration::from_millis(month);
    for tier in Tier::ALL {
        let call = Call::fixed(Credits(C)).tier(tier);
        assert!(gate.reserve(&call).is_err(), "claims a dry lane");
        let lane = r
            .lanes()
            .into_iter()
            .find(|l| l.key.map(|k| k.tier) == Some(tier))
            .unwrap()
            .lane;
        r.record_denial_until(
            lane,
            LimitKind::TenantWindow(tollgate_core::Horizon::Month),
            until,
        )
        .unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let Err(ReserveError::Denied(d)) = gate.reserve(&call) else {
                panic!("denied at once");
            };
            assert_eq!(d.horizon, Some(tollgate_core::Horizon::Month));
            let ms = d.retry_after.as_millis() as u64;
            let t = tier.as_index() as u64;
            // The deadline read back (time passes; the coarse clock runs up to a tick
            // behind), then the tier's band.
            let lo = month - 1_000 + t * 5_000;
            let hi = month + 50 + (t + 1) * 5_000;
            assert!((lo..=hi).contains(&ms), "{tier}: {ms}");
            seen.insert(ms);
        }
        assert!(
            seen.len() > 100,
            "jittered, not in step: {} distinct",
            seen.len()
        );
    }
}

/// Whatever a process writes into the name and task tables, the sidecar's readers return
/// a name or nothing, and never panic.
#[test]
fn scribbled_name_and_task_tables_are_survivable() {
    let dir = tempfile::tempdir().unwrap();
    let (r, path) = setup(&dir, 1000 * C);
    let gate = Gate::attach(&path).unwrap();
    let id = gate.feature("ok").unwrap().id();
    let (mem, layout) = crate::region::open_and_validate(&path).unwrap();
    let words = mem.words();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for round in 0..200 {
        for w in &words[layout.names_off..layout.book_off] {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if x.is_multiple_of(3) {
                w.store(
                    if round % 2 == 0 {
                        x
                    } else {
                        x & 0xFFFF_FFFF_0000_FF02
                    },
                    crate::sync::REL,
                );
            }
        }
        for n in 0..=u16::try_from(layout.names).unwrap() {
            let _ = r.name(n);
        }
        let _ = r.tasks();
        let _ = gate.feature("ok");
        let _ = gate.open_task(&TaskSpec::new("t").wait(Duration::ZERO));
        r.reclaim_dead().unwrap();
    }
    let _ = id;
}
