//! loom models of the attribution protocols (run by `.ci/loom.sh` with the others): the
//! name table, the task table, a task's completion and a task lane's calls. Each builds a
//! tiny region on the heap, runs agents and the sidecar on loom threads, and asserts the
//! invariants of `names.rs` and `tasks.rs` plus the credit equations (`Audit::check`).

use loom::sync::Arc;
use loom::thread;

use crate::codes::{LaneKey, TaskRef, done_mark, pack_names, pack_pools};
use crate::holder::{self, HolderId};
use crate::lane::{META_NO_MODEL, META_WORK_UNIT, Request, View};
use crate::layout::*;
use crate::mapping::Mem;
use crate::ring::UsageRecord;
use crate::sync::REL;
use crate::tasks::TaskTerms;
use tollgate_core::{Initiator, Tier};

const GRANT: u64 = 100;

struct Fixture {
    mem: Mem,
    layout: Layout,
}

fn process(n: u64) -> HolderId {
    HolderId::new(4000 + n).unwrap()
}

fn go() -> impl FnMut(u32) -> bool {
    |_| true
}

/// Returns `false` at the first step with id `id`, and ever after.
fn crash_at(id: u32) -> impl FnMut(u32) -> bool {
    let mut dead = false;
    move |s| {
        dead |= s == id;
        !dead
    }
}

impl Fixture {
    /// One tenant whose interactive-human class is subject to pools 0 and 1; pool 2 is a
    /// task's budget. Three name entries (ids 1 and 2 usable), `tasks` task entries,
    /// `lanes` lanes (2 slots, a ring of 4) unclaimed.
    fn new(lanes: u32, tasks: u32) -> Fixture {
        let layout = Layout::from_config(&RegionConfig {
            pools: 3,
            tenants: 1,
            lanes,
            slots_per_lane: 2,
            ring_capacity: 4,
            price_book_bytes: 16,
            names: 3,
            tasks,
        })
        .unwrap();
        let f = Fixture {
            mem: Mem::heap(layout.total_words),
            layout,
        };
        let v = f.view();
        for p in 0..3 {
            v.pw(p, P_LIMIT).store(1, REL);
            v.grant(p, GRANT).unwrap();
        }
        let t = layout.tenant(0);
        let class = key(None).class();
        v.w[t + T_CLASS0 + class].store(pack_pools(&[0, 1]).unwrap(), REL);
        v.w[t + T_STATE].store(1, REL);
        f
    }

    fn view(&self) -> View<'_> {
        View {
            w: self.mem.words(),
            l: &self.layout,
        }
    }

    /// Opens task "t" (budget 10, `max_calls`) as process 9 and claims `lane` for it,
    /// carved from pools 0, 1 and the task's pool 2, topped up with `credits`.
    fn task_lane(&self, lane: usize, max_calls: u32, credits: u64) -> TaskRef {
        let v = self.view();
        let t = v.open_task(&terms(max_calls), process(9)).unwrap();
        claim(&v, lane, process(lane as u64), Some(t));
        v.fix_lane_pools(lane, &[0, 1, 2]).unwrap();
        if credits > 0 {
            v.top_up(lane, credits, &mut go()).unwrap();
        }
        t
    }

    fn check(&self) {
        if let Err(e) = self.view().audit().check() {
            panic!("conservation violated: {e}");
        }
    }
}

fn terms(max_calls: u32) -> TaskTerms<'static> {
    TaskTerms {
        tenant: 0,
        id: b"t",
        budget: 10,
        max_calls,
    }
}

fn key(task: Option<TaskRef>) -> LaneKey {
    LaneKey {
        tenant: 0,
        tier: Tier::Interactive,
        initiator: Initiator::Human,
        agent: 0,
        task,
    }
}

fn claim(v: &View<'_>, lane: usize, by: HolderId, task: Option<TaskRef>) {
    v.lw(lane, L_CLAIM).store(holder::claimed_by(0, by), REL);
    v.lw(lane, L_KEY).store(key(task).encode(), REL);
}

fn records(v: &View<'_>, lanes: usize) -> Vec<UsageRecord> {
    let mut out = Vec::new();
    for lane in 0..lanes {
        v.drain_ring(lane, &mut out);
    }
    out
}

/// Two processes intern one name at once: whatever the interleaving, each gets an id
/// that names it (the same id unless one was preempted mid-write, when the other makes a
/// second entry with the same bytes), and a different name never resolves to it.
#[test]
fn loom_names_interned_by_racing_processes_name_what_they_asked() {
    loom::model(|| {
        let f = Arc::new(Fixture::new(1, 0));
        let f2 = f.clone();
        let other = thread::spawn(move || f2.view().intern(b"support-bot", process(1)));
        let mine = f.view().intern(b"support-bot", process(2));
        let theirs = other.join().unwrap();
        let v = f.view();
        for id in [mine, theirs] {
            let id = id.expect("two entries are free");
            assert_eq!(v.name_bytes(id).as_deref(), Some(&b"support-bot"[..]));
        }
        // Interned again afterwards: an existing entry, never a third one.
        let again = v.intern(b"support-bot", process(3)).unwrap();
        assert!(again == mine.unwrap() || again == theirs.unwrap());
    });
}

/// A writer killed between its claim and its `READY` store leaves a `WRITING` entry: an
/// agent interning meanwhile never uses it, and the sidecar frees it for reuse once the
/// writer is dead, racing that agent.
#[test]
fn loom_a_name_writer_killed_mid_write_is_cleaned_up() {
    loom::model(|| {
        let f = Arc::new(Fixture::new(1, 0));
        // Process 1 died after claiming the entry its name hashes to.
        let v = f.view();
        let start = 1 + (crate::names::hash(b"feature") % 2) as usize;
        let dead = (process(1).get() << 16) | 1;
        v.w[v.l.name(start) + N_STATE].store(dead, REL);
        let f2 = f.clone();
        let sidecar =
            thread::spawn(move || f2.view().free_stuck_names(&|h: HolderId| h == process(1)));
        let got = f.view().intern(b"feature", process(2));
        let freed = sidecar.join().unwrap();
        assert_eq!(freed, 1, "the dead writer's entry is freed");
        let id = got.expect("an entry is free or freed");
        assert_eq!(v.name_bytes(id).as_deref(), Some(&b"feature"[..]));
        let (used, _) = v.names_used();
        assert_eq!(used, 1, "nothing left claimed by the dead writer");
    });
}

/// Two processes open the same task at once: each gets a reference to an open entry of
/// that tenant and id with the first opener's terms; a process joining without a budget
/// finds it or is told there is none.
#[test]
fn loom_tasks_opened_by_racing_processes_are_the_same_task() {
    loom::model(|| {
        let f = Arc::new(Fixture::new(1, 2));
        let f2 = f.clone();
        let other = thread::spawn(move || f2.view().open_task(&terms(5), process(1)));
        let joiner = TaskTerms {
            budget: 0,
            ..terms(0)
        };
        let mine = f.view().open_task(&terms(7), process(2)).unwrap();
        let theirs = other.join().unwrap().unwrap();
        let joined = f.view().open_task(&joiner, process(3)).unwrap();
        let v = f.view();
        for t in [mine, theirs, joined] {
            let e = v.task_entry(usize::from(t.slot)).unwrap();
            assert_eq!((e.task, e.id.as_str(), e.budget), (t, "t", 10));
            assert!(e.max_calls == 5 || e.max_calls == 7);
        }
        assert!(joined == mine || joined == theirs);
    });
}

/// Two processes complete one task at once, each from a lane of its own; the one whose
/// mark wins commits its work-unit reservation, the other cancels. If `winner_dies`, a
/// winner dies right after its mark and reclaim settles its reservation. Either way the
/// pod writes exactly one work-unit record for the task, and every credit balances.
#[test]
fn loom_a_task_is_completed_exactly_once() {
    for winner_dies in [false, true] {
        loom::model(move || {
            let f = Arc::new(Fixture::new(2, 1));
            let t = f.task_lane(0, 0, 0);
            claim(&f.view(), 1, process(1), Some(t));
            f.view().fix_lane_pools(1, &[0, 1, 2]).unwrap();
            let complete = move |f: &Fixture, lane: usize| -> bool {
                let v = f.view();
                let mut o = v.owner_for(lane);
                let r = Request {
                    meta: META_NO_MODEL | META_WORK_UNIT,
                    names: pack_names(0, 0, Some(t)),
                    ..Request::default()
                };
                let slot = v.reserve(&mut o, &r, &mut go()).unwrap();
                let mark = done_mark(lane, holder::generation(o.claim), slot);
                let won = v.mark_task_done(t, mark);
                if won && winner_dies {
                    return true; // killed before its commit
                }
                assert!(v.settle(&mut o, slot, 0, !won, &mut go()));
                won
            };
            let f2 = f.clone();
            let other = thread::spawn(move || complete(&f2, 1));
            let won0 = complete(&f, 0);
            let won1 = other.join().unwrap();
            assert!(won0 ^ won1, "one completion wins");
            let v = f.view();
            if winner_dies {
                let dead = if won0 { 0 } else { 1 };
                v.reclaim_lane(dead, &|_| true, &mut go()).unwrap();
            }
            let work: Vec<_> = records(&v, 2).into_iter().filter(|r| r.work_unit).collect();
            assert_eq!(work.len(), 1, "exactly one work unit");
            assert_eq!(work[0].task, Some(t));
            f.check();
        });
    }
}

/// A counted call (a task with `max_calls`) while the sidecar gives the lane another
/// call; the agent dies after each step of its reserve and commit, then the sidecar
/// reclaims the lane. Calls are never made past what was given, the task's calls balance
/// (`given = live given + done`), a call counts iff its reservation was taken, and every
/// credit balances.
#[test]
fn loom_task_calls_crash_at_every_step_then_reclaim() {
    for k in [1, 2, 3, 13, 11, 12, 31, 33, 35, 0] {
        loom::model(move || {
            let f = Arc::new(Fixture::new(1, 1));
            let t = f.task_lane(0, 3, 6);
            f.view().give_calls(0, t, 1).unwrap();
            let f2 = f.clone();
            let agent = thread::spawn(move || {
                let v = f2.view();
                let mut o = v.owner_for(0);
                let mut step = crash_at(k);
                let r = Request {
                    amount: 4,
                    counts_call: true,
                    names: pack_names(0, 0, Some(t)),
                    ..Request::default()
                };
                if let Ok(slot) = v.reserve(&mut o, &r, &mut step) {
                    let _ = v.settle(&mut o, slot, 3, false, &mut step);
                }
                !step(u32::MAX)
            });
            f.view().give_calls(0, t, 1).unwrap();
            assert_eq!(agent.join().unwrap(), k != 0, "crash point {k} reached");
            let v = f.view();
            let live = v.task_calls(t);
            assert!(live.balanced(), "{live:?}");
            // The reservation was taken iff the crash came after the take (step 11).
            let taken = k == 0 || k == 12 || k >= 31;
            f.check();
            v.reclaim_lane(0, &|_| true, &mut go()).unwrap();
            let c = v.task_calls(t);
            assert!(c.balanced(), "{c:?}");
            assert_eq!(c.made(), u64::from(taken), "crash point {k}");
            assert_eq!(c.given, c.done, "a reclaimed lane's unused calls go back");
            assert_eq!(c.live_given, 0);
            f.check();
        });
    }
}
