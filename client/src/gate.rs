//! The agent's side: attach to the region, name tenants and models once, then
//! `reserve` / `commit` on the hot path.
//!
//! Hot path (no syscall, lock, allocation or hashing). Reserve: one thread-local lookup
//! of this thread's lane for the call's (tenant, tier, initiator), rating (a model priced
//! per token with the prices in its [`Model`] handle, after one load of the price-book
//! sequence), one CAS on the task budget, and the lane protocol (stores to the slot; a CAS
//! on the lane's `avail` word only when local credits run short). Commit on the reserving
//! thread: no thread-local table lookup (a const thread-local token, and the owner state
//! in the gate's per-lane block), rating as above, one add on the task budget, and the
//! settle's stores. Each agent thread has its own lanes, so two threads touch no common
//! cache line.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tollgate_core::credits::MICROS_PER_CREDIT;
use tollgate_core::rating::Pricing;
use tollgate_core::{
    Credits, Initiator, LimitKind, ModelRef, PriceBook, RatingError, RatingInput, Tier, Usage,
};

use crate::codes::{LaneKey, TaskRef, decode_limit, done_mark, pack_names};
use crate::error::{AttachError, CommitError, Denial, ReserveError, TaskLimit};
use crate::holder;
use crate::lane::{
    MAX_LANE_CREDITS, META_NO_MODEL, META_WORK_UNIT, Owner, Request, ReserveFail, View, credits,
    pack_outcomes, pack_tokens,
};
use crate::layout::*;
use crate::mapping::Mem;
use crate::names::NameError;
use crate::region::{find_tenant, open_and_validate};
use crate::sync::{ACQ, ACQ_REL, AtomicU64, REL, RELAXED, next_id, spin_hint, word};
use crate::tasks::{OpenError, TaskStatus, TaskTerms};

/// Environment variable agents find the region path in.
pub const REGION_ENV: &str = "TOLLGATE_REGION";
/// Environment variable naming the agent (when [`GateOptions::agent`] does not).
pub const AGENT_ENV: &str = "TOLLGATE_AGENT";

/// How a process attaches: its agent name (set once per process; a call may name
/// another with [`Call::agent`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GateOptions {
    agent: Option<String>,
}

impl GateOptions {
    /// Defaults: the agent is named by `TOLLGATE_AGENT`, else unnamed.
    pub fn new() -> GateOptions {
        GateOptions::default()
    }

    /// The agent's name (at most 64 bytes), e.g. `"support-bot"`; overrides
    /// `TOLLGATE_AGENT`.
    pub fn agent(mut self, name: impl Into<String>) -> GateOptions {
        self.agent = Some(name.into());
        self
    }

    /// The name this process's calls are made as: the option, else `env` (the value of
    /// `TOLLGATE_AGENT`), else "" (unnamed).
    pub(crate) fn resolve_agent(&self, env: Option<String>) -> String {
        self.agent.clone().or(env).unwrap_or_default()
    }
}

/// Retry hint used when the sidecar has not recorded one (milliseconds).
const DEFAULT_RETRY_MS: u64 = 10;
/// Bounds on the slow path whatever the region says (its words are not trusted).
const MAX_SPIN_ITERS: u64 = 100_000;
const MAX_WAIT: Duration = Duration::from_millis(10);
/// Bound on a refill hint read from the region (one minute).
const MAX_RETRY_MS: u64 = 60_000;
/// Bound on a deadline read from the region: a monthly window rolls within 31 days.
const MAX_DEADLINE_MS: u64 = 32 * 86_400_000;
/// Widest jitter band of a deadline hint (milliseconds).
const MAX_DEADLINE_SPREAD_MS: u64 = 5_000;

/// What a denial's retry hint is measured from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hint {
    /// A refill may come any moment (a lease in flight): retry after about this long.
    Refill(u64),
    /// Nothing can be refilled before this much time has passed (a window rolls, a month
    /// resets, a refusal ends).
    Until(u64),
}

/// The retry delay (ms) of a denial of a call of `tier`, with `rand` a random word.
///
/// Lower tiers wait longer and spread wider, so a crowd of agents does not retry in step
/// and interactive work gets the first chance. A refill hint `h` gives tier `t` (0 =
/// interactive) a delay in `[h·2^t, h·2^t·(1 + (t+1)/2)]`. A deadline `d` is kept as is
/// (a spent monthly quota says when the month resets): tier `t` retries in
/// `[d + t·s, d + (t+1)·s]` with `s = clamp(d/20, 1 ms, 5 s)`, so the tiers' bands follow
/// one another and none retries before the deadline.
pub(crate) fn retry_delay(hint: Hint, tier: Tier, rand: u64) -> u64 {
    let t = tier.as_index() as u64;
    match hint {
        Hint::Refill(ms) => {
            let base = ms.clamp(1, MAX_RETRY_MS) << t;
            base + rand % (base / 2 * (t + 1) + 1)
        }
        Hint::Until(ms) => {
            let d = ms.clamp(1, MAX_DEADLINE_MS);
            let spread = (d / 20).clamp(1, MAX_DEADLINE_SPREAD_MS);
            d + t * spread + rand % (spread + 1)
        }
    }
}

/// An agent process's handle on the region. Cheap to share (`&Gate` is `Sync`); one per
/// process is typical.
pub struct Gate {
    inner: Arc<GateInner>,
}

/// Region mappings held by this process's gates (a `Gate` and the per-thread state that
/// references it); see [`Gate::live_mappings`].
static LIVE_MAPPINGS: AtomicUsize = AtomicUsize::new(0);

pub(crate) struct GateInner {
    id: u64,
    /// Set (under `spare`) when the `Gate` is dropped: threads then hand their lanes back
    /// instead of keeping or parking them.
    closed: AtomicBool,
    mem: Mem,
    layout: Layout,
    /// The region's holders folder (see [`crate::holder`]): this process's lock file lives
    /// there, and each claim names it.
    holders: PathBuf,
    /// Lanes given up by exited threads, for reuse by new threads: `(key word, lane)`.
    spare: Mutex<Vec<(u64, usize)>>,
    /// The agent name this process's calls are made as unless a call names another: its
    /// id in the region's name table, and the name.
    agent: u16,
    agent_name: String,
    /// The last price book parsed (shared by threads, so each parses it once per change).
    book: Mutex<Option<(u64, Arc<PriceBook>)>>,
    /// Per lane of the region: the owner thread's state of the lanes this process's threads
    /// own (see [`LaneOwner`]).
    owned: Box<[LaneOwner]>,
}

/// What the owner thread of a lane knows about it ([`Owner`]), kept in process memory
/// rather than in the thread-local table so that a commit on the owner thread reaches it
/// from the [`Reservation`] without a thread-local lookup. Only the thread named by
/// `thread` reads or writes the other words, so relaxed loads and stores (plain moves)
/// suffice; `thread` itself is written by that thread when it takes the lane (after
/// claiming it, or taking it from the spare list under the spare lock) and cleared when it
/// lets the lane go (under the spare lock). One 128-byte block per lane, so two threads'
/// lanes share no cache line.
#[repr(align(128))]
struct LaneOwner {
    /// The owner thread's token ([`thread_token`]), 0 when no thread of this process owns it.
    thread: AtomicU64,
    /// The claim word this process wrote when it claimed the lane: the lane is ours while
    /// the region's claim word still equals it.
    claim: AtomicU64,
    otag: AtomicU64,
    free: AtomicU64,
    local: AtomicU64,
}

impl LaneOwner {
    fn new() -> LaneOwner {
        LaneOwner {
            thread: word(0),
            claim: word(0),
            otag: word(0),
            free: word(0),
            local: word(0),
        }
    }

    /// The owner state of `lane` (owner thread only).
    #[inline]
    fn get(&self, lane: usize) -> Owner {
        Owner {
            lane,
            claim: self.claim.load(RELAXED),
            otag: self.otag.load(RELAXED) as u16,
            free: self.free.load(RELAXED),
            local: self.local.load(RELAXED),
        }
    }

    /// Saves the owner state after an operation (owner thread only).
    #[inline]
    fn put(&self, o: &Owner) {
        self.claim.store(o.claim, RELAXED);
        self.otag.store(u64::from(o.otag), RELAXED);
        self.free.store(o.free, RELAXED);
        self.local.store(o.local, RELAXED);
    }
}

impl Drop for GateInner {
    fn drop(&mut self) {
        LIVE_MAPPINGS.fetch_sub(1, Ordering::Relaxed);
    }
}

impl GateInner {
    /// Hands a lane back to the sidecar: settles commits made by other threads, moves the
    /// local credits back to `avail` (the FLUSH step), then turns the claim from owned to
    /// reclaiming. From then on the sidecar is the lane's only writer and its next
    /// `reclaim_dead` returns the lane's credits to the pools and frees the lane, exactly
    /// as for a dead process (held slots, if a reservation was leaked, go back as cancels).
    fn hand_back(&self, o: &mut Owner) {
        let view = self.view();
        if !view.still_owns(o) {
            return; // reclaimed already: nothing of it is ours to settle or flush
        }
        view.settle_pending(o);
        let local = o.local;
        view.flush(o, local, &mut |_| true);
        let _ = view.lw(o.lane, L_CLAIM).compare_exchange(
            o.claim,
            holder::reclaiming(o.claim),
            ACQ_REL,
            RELAXED,
        );
    }

    /// The owner state of a lane this process claimed and still holds (a parked lane, or
    /// one whose thread exited); `None` if reclaim took it meanwhile.
    fn owner_if_ours(&self, lane: usize) -> Option<Owner> {
        let o = self.view().owner_for(lane);
        (o.claim == self.owned[lane].claim.load(RELAXED)).then_some(o)
    }

    /// After a commit from another thread: if the lane's owner thread has exited (the
    /// lane is spare), nobody would settle the commit, so settle it here. Exiting owners
    /// settle and park their lanes under the same lock, so no commit falls between.
    fn settle_if_spare(&self, lane: usize) {
        let spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        if spare.iter().any(|(_, l)| *l == lane)
            && let Some(mut o) = self.owner_if_ours(lane)
        {
            let view = self.view();
            view.settle_pending(&mut o);
            view.flush(&mut o, u64::MAX, &mut |_| true);
        }
    }

    fn view(&self) -> View<'_> {
        View {
            w: self.mem.words(),
            l: &self.layout,
        }
    }

    /// This process's liveness holder (registered on first use, again after a fork).
    fn holder(&self) -> Result<holder::HolderId, ReserveError> {
        holder::holder_for(&self.holders)
            .map_err(|e| ReserveError::Liveness(format!("{}: {e}", self.holders.display())))
    }

    /// Interns `name` in the region's name table.
    fn intern(&self, name: &str) -> Result<u16, ReserveError> {
        let me = self.holder()?;
        self.view()
            .intern(name.as_bytes(), me)
            .map_err(|e| match e {
                NameError::TooLong => ReserveError::InvalidName {
                    name: name.to_owned(),
                    why: format!("longer than {MAX_NAME} bytes"),
                },
                NameError::Full => ReserveError::NameTableFull {
                    capacity: self.layout.names - 1,
                },
            })
    }

    /// The price book for sequence `seq` (parsed once per change, shared), with the
    /// sequence it was read at (later than `seq` if the sidecar published meanwhile).
    fn load_book(&self, seq: u64) -> Result<(u64, Arc<PriceBook>), ReserveError> {
        let mut cached = self.book.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((s, b)) = cached.as_ref()
            && *s == seq
        {
            return Ok((seq, b.clone()));
        }
        for _ in 0..1000 {
            if let Some((s, _version, bytes)) = self.view().read_blob() {
                let book: PriceBook = serde_json::from_slice(&bytes)
                    .map_err(|e| ReserveError::PriceBook(format!("unreadable: {e}")))?;
                let book = Arc::new(book);
                *cached = Some((s, book.clone()));
                return Ok((s, book));
            }
            if self.view().book_seq() == 0 {
                return Err(ReserveError::PriceBook(
                    "the sidecar has not published one yet".into(),
                ));
            }
            std::thread::yield_now();
        }
        Err(ReserveError::PriceBook("it keeps changing; retry".into()))
    }
}

/// A tenant, resolved once by name with [`Gate::tenant`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TenantId(pub u16);

/// A model, resolved once by name with [`Gate::model`]. If the sidecar publishes a new
/// price book, the handle still works (it is re-resolved by name, more slowly); resolve
/// it again to get back on the fast path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    name: String,
    r: ModelRef,
    /// For a model priced per token: its prices in the book it was resolved in, so
    /// reserve and commit rate it without the price-book lookup while that book is current.
    fast: Option<FastRate>,
}

/// A per-token model's prices in the price book of sequence `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FastRate {
    /// The book's sequence: the prices hold while the region's book sequence equals it
    /// (a publish changes the sequence).
    seq: u64,
    /// Micro-credits per million input tokens.
    input: u64,
    /// Micro-credits per million output tokens.
    output: u64,
    /// The slot and record meta word for the model in that book.
    meta: u64,
}

impl FastRate {
    /// The cost of `input` and `output` tokens if the book is still the one the prices
    /// come from and the products fit; `None` sends the caller to the book.
    #[inline]
    fn rate(&self, view: &View<'_>, input: u64, output: u64) -> Option<u64> {
        if view.book_seq() != self.seq {
            return None;
        }
        rate_per_token((self.input, self.output), input, output)
    }
}

/// The slot and record meta word for model `r` of `book`.
fn slot_meta(book: &PriceBook, r: &ModelRef) -> u64 {
    u64::from(r.index().min(0xFFFE)) | ((book.version() & 0xFFFF_FFFF) << 32)
}

impl Model {
    /// The model's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// An agent name, resolved once with [`Gate::agent`]: a call made
/// `.agent(name)` is attributed to it (and limited by its quotas) instead of the process's
/// own name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct AgentName(u16);

impl AgentName {
    /// The name's id in the region's name table (0: unnamed).
    pub fn id(self) -> u16 {
        self.0
    }
}

/// A feature name (what the call is for, e.g. `"summarize"`), resolved once with
/// [`Gate::feature`]: statements break spend down by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Feature(u16);

impl Feature {
    /// The name's id in the region's name table (0: none).
    pub fn id(self) -> u16 {
        self.0
    }
}

/// A process-local budget: reservations made with `.local_task(&task)` debit it too, and
/// are refused with [`ReserveError::TaskExhausted`] once it is spent. It lives in this
/// process only and is not reported; a budget shared by processes and pods, reported on
/// the statement, is a named [`Task`] ([`Gate::open_task`]).
#[derive(Debug)]
pub struct LocalTask {
    budget: u64,
    remaining: AtomicU64,
}

impl LocalTask {
    /// A task with `budget`.
    pub fn new(budget: Credits) -> LocalTask {
        LocalTask {
            budget: budget.0,
            remaining: word(budget.0),
        }
    }

    /// The budget it was opened with.
    pub fn budget(&self) -> Credits {
        Credits(self.budget)
    }

    /// What is left (reservations in flight count as spent until committed).
    pub fn remaining(&self) -> Credits {
        Credits(self.remaining.load(ACQ))
    }

    #[inline]
    fn debit(&self, amount: u64) -> Result<(), u64> {
        debit_word(&self.remaining, amount)
    }

    #[inline]
    fn credit(&self, amount: u64) {
        if amount > 0 {
            self.remaining.fetch_add(amount, ACQ_REL);
        }
    }

    /// Takes up to `amount` (an overrun); never below zero.
    fn debit_saturating(&self, amount: u64) {
        debit_saturating_word(&self.remaining, amount);
    }
}

#[inline]
fn debit_word(w: &AtomicU64, amount: u64) -> Result<(), u64> {
    let mut cur = w.load(RELAXED);
    loop {
        if cur < amount {
            return Err(cur);
        }
        match w.compare_exchange_weak(cur, cur - amount, ACQ_REL, RELAXED) {
            Ok(_) => return Ok(()),
            Err(now) => cur = now,
        }
    }
}

fn debit_saturating_word(w: &AtomicU64, amount: u64) {
    if amount == 0 {
        return;
    }
    let mut cur = w.load(RELAXED);
    loop {
        let new = cur.saturating_sub(amount);
        match w.compare_exchange_weak(cur, new, ACQ_REL, RELAXED) {
            Ok(_) => return,
            Err(now) => cur = now,
        }
    }
}

/// What a named task is opened with: its id (shared by every process and pod of the
/// tenant that opens the same id), tenant, budget and most calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSpec {
    id: String,
    tenant: TenantId,
    budget: Credits,
    max_calls: u32,
    agent: Option<AgentName>,
    wait: Duration,
}

/// How long [`Gate::open_task`] waits by default for the sidecar to register a new task.
pub const TASK_OPEN_WAIT: Duration = Duration::from_secs(2);

impl TaskSpec {
    /// A task named `id` (1 to 128 bytes), for the region's first tenant, with no budget
    /// and no limit on calls until set.
    pub fn new(id: impl Into<String>) -> TaskSpec {
        TaskSpec {
            id: id.into(),
            tenant: TenantId(0),
            budget: Credits::ZERO,
            max_calls: 0,
            agent: None,
            wait: TASK_OPEN_WAIT,
        }
    }
    /// The tenant whose task it is.
    pub fn tenant(mut self, tenant: TenantId) -> TaskSpec {
        self.tenant = tenant;
        self
    }
    /// The task's whole budget (every process and pod working on it share it).
    pub fn budget(mut self, budget: Credits) -> TaskSpec {
        self.budget = budget;
        self
    }
    /// Most calls the task may make in all (0: no limit).
    pub fn max_calls(mut self, n: u32) -> TaskSpec {
        self.max_calls = n;
        self
    }
    /// The agent its completion ([`Task::complete`], one work unit) is credited to
    /// (default: the process's agent name).
    pub fn agent(mut self, agent: AgentName) -> TaskSpec {
        self.agent = Some(agent);
        self
    }
    /// How long [`Gate::open_task`] waits, at most, for the sidecar to register the task
    /// and lease its first budget, so its first call finds budget (default 2 s; zero: do
    /// not wait).
    pub fn wait(mut self, wait: Duration) -> TaskSpec {
        self.wait = wait;
        self
    }
    /// The task id.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// A named task, opened with [`Gate::open_task`]: a budget and a call limit shared by
/// every process of the pod (and every pod) working on the same id, registered with the
/// sidecar and leased from the authority like any limit. Reservations made with
/// `.task(&task)` spend it; past it they are refused with [`ReserveError::TaskExhausted`],
/// which names the task, so the runtime can stop a runaway loop. [`Task::complete`]
/// records one Agentic Work Unit and refuses later reservations.
///
/// A call on a task is made on a lane of its own (per thread, agent and task), carved from
/// the task's budget together with every other limit of the call, so the budget is exact
/// under crashes like every other limit. Its calls are counted on the lane against a share
/// of `max_calls` the sidecar gives it.
#[derive(Debug)]
pub struct Task {
    gate: Arc<GateInner>,
    id: String,
    r: TaskRef,
    tenant: TenantId,
    agent: u16,
    budget: u64,
    max_calls: u32,
}

impl Task {
    /// The task id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Its place in the region's task table (what records and lane keys carry).
    pub fn task_ref(&self) -> TaskRef {
        self.r
    }

    /// Its budget (the terms of its first opening in the pod).
    pub fn budget(&self) -> Credits {
        Credits(self.budget)
    }

    /// Most calls it may make (0: no limit).
    pub fn max_calls(&self) -> u32 {
        self.max_calls
    }

    /// What the pod holds of its budget now: leased to the pod and not yet spent
    /// (reservations in flight count as spent until committed). What other pods hold is
    /// not counted.
    pub fn remaining(&self) -> Credits {
        Credits(self.gate.view().task_remaining(self.r))
    }

    /// The sidecar's view of the task (registered, spent, out of calls, closed).
    pub fn status(&self) -> TaskStatus {
        self.gate.view().task_status(self.r)
    }

    /// Whether it was completed (by any process of the pod).
    pub fn is_completed(&self) -> bool {
        self.gate.view().task_done(self.r) != 0
    }

    /// Completes the task: one Agentic Work Unit, credited to its agent, goes to the
    /// statement, and later reservations on the task are refused. Exactly one completion
    /// per task counts: completing a task already completed (by this or another process
    /// of the pod) is refused with [`TaskLimit::Completed`]. This thread's lanes of the
    /// task go back to the sidecar.
    pub fn complete(&self) -> Result<(), ReserveError> {
        let call = Call {
            agent: Some(AgentName(self.agent)),
            work_unit: true,
            ..Call::fixed(Credits::ZERO).tenant(self.tenant).task(self)
        };
        let mut hold = reserve_on(&self.gate, &call)?;
        let mark = done_mark(hold.lane, hold.generation, hold.slot);
        let won = self.gate.view().mark_task_done(self.r, mark);
        if won {
            // A zero-credit commit: its record is the work unit. Were it refused (the
            // lane reclaimed under this process), reclaim has written the record, seeing
            // the mark.
            let _ = hold.finish(Settle::Work);
        } else {
            hold.cancel();
        }
        self.release_lanes();
        if won {
            Ok(())
        } else {
            Err(self.exhausted(TaskLimit::Completed, 0))
        }
    }

    /// Hands this thread's lanes of the task back to the sidecar.
    fn release_lanes(&self) {
        let _ = LOCAL.try_with(|cell| {
            if let Ok(mut local) = cell.try_borrow_mut()
                && let Some(gl) = local.gates.iter_mut().find(|g| g.id == self.gate.id)
            {
                gl.release_where(|k| k.task == Some(self.r));
            }
        });
    }

    fn exhausted(&self, why: TaskLimit, needed: u64) -> ReserveError {
        ReserveError::TaskExhausted {
            task: self.id.clone(),
            why,
            needed: Credits(needed),
            remaining: self.remaining(),
        }
    }

    /// Refuses a call on a task that is over (completed, or closed by the sidecar).
    #[inline]
    fn check_open(&self, view: &View<'_>, amount: u64) -> Result<(), ReserveError> {
        if !view.task_is(self.r) {
            return Err(self.exhausted(TaskLimit::Closed, amount));
        }
        if view.task_done(self.r) != 0 {
            return Err(self.exhausted(TaskLimit::Completed, amount));
        }
        Ok(())
    }

    /// Why the task refuses a call of `amount`, if the sidecar says it does: its budget is
    /// spent (the authority has no more of it, and what the pod still holds of it cannot
    /// pay the call: held in this pod, it can still pay calls it covers), its calls are
    /// all made, or it was closed.
    fn refusal(&self, view: &View<'_>, amount: u64) -> Option<TaskLimit> {
        match view.task_status(self.r) {
            TaskStatus::Spent if view.task_remaining(self.r) >= amount.max(1) => None,
            TaskStatus::Spent => Some(TaskLimit::Budget),
            TaskStatus::OutOfCalls => Some(TaskLimit::MaxCalls),
            TaskStatus::Closed if view.task_done(self.r) != 0 => Some(TaskLimit::Completed),
            TaskStatus::Closed => Some(TaskLimit::Closed),
            TaskStatus::New | TaskStatus::Pending | TaskStatus::Open => None,
        }
    }
}

impl Drop for Task {
    /// This thread's lanes of the task go back to the sidecar (other threads' at their
    /// next claim of a lane, or when they exit).
    fn drop(&mut self) {
        self.release_lanes();
    }
}

#[derive(Debug, Clone, Copy)]
enum Price<'a> {
    Model(&'a Model),
    Fixed(Credits),
}

/// One call to reserve for: what it may cost, whose it is (tenant, agent, feature, task),
/// and its priority.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    price: Price<'a>,
    tenant: TenantId,
    tier: Tier,
    initiator: Initiator,
    input_tokens: u64,
    max_output_tokens: Option<u64>,
    agent: Option<AgentName>,
    feature: Feature,
    task: Option<&'a Task>,
    wait: bool,
    local_task: Option<&'a LocalTask>,
    /// Outcomes the call may produce ([`Call::outcomes`], [`Gate::report_outcomes`]): its
    /// reservation covers them.
    outcomes: u32,
    /// The zero-credit reservation that records a task's completion.
    work_unit: bool,
}

impl<'a> Call<'a> {
    /// A call to `model`, rated by the region's price book (reserved at its maximum:
    /// input tokens plus the maximum output tokens).
    pub fn model(model: &'a Model) -> Call<'a> {
        Call {
            price: Price::Model(model),
            ..Call::fixed(Credits::ZERO)
        }
    }

    /// A call whose maximum cost is already known (pre-rated): its records say the cost
    /// was stated in credits, which the authority charges as stated.
    pub fn fixed(max_cost: Credits) -> Call<'a> {
        Call {
            price: Price::Fixed(max_cost),
            tenant: TenantId(0),
            tier: Tier::Interactive,
            initiator: Initiator::Human,
            input_tokens: 0,
            max_output_tokens: None,
            agent: None,
            feature: Feature(0),
            task: None,
            wait: true,
            local_task: None,
            outcomes: 0,
            work_unit: false,
        }
    }

    /// The tenant the call is for (default: the region's first tenant).
    pub fn tenant(mut self, tenant: TenantId) -> Self {
        self.tenant = tenant;
        self
    }
    /// Prompt tokens.
    pub fn input_tokens(mut self, n: u64) -> Self {
        self.input_tokens = n;
        self
    }
    /// The most output tokens the call allows (default: the model's or book's maximum).
    pub fn max_output_tokens(mut self, n: u64) -> Self {
        self.max_output_tokens = Some(n);
        self
    }
    /// Priority tier (default interactive).
    pub fn tier(mut self, tier: Tier) -> Self {
        self.tier = tier;
        self
    }
    /// Who started the call (default human).
    pub fn initiator(mut self, initiator: Initiator) -> Self {
        self.initiator = initiator;
        self
    }
    /// The agent the call is made as (default: the process's agent name, see
    /// [`GateOptions::agent`]); its quotas apply.
    pub fn agent(mut self, agent: AgentName) -> Self {
        self.agent = Some(agent);
        self
    }
    /// The feature the call is for.
    pub fn feature(mut self, feature: Feature) -> Self {
        self.feature = feature;
        self
    }
    /// The named task whose budget the call also spends.
    pub fn task(mut self, task: &'a Task) -> Self {
        self.task = Some(task);
        self
    }
    /// The call may produce up to `n` outcomes (e.g. a resolved ticket) that its commit
    /// reports ([`Reservation::commit_with_outcomes`]): the reservation covers them as well
    /// as the tokens. Outcomes committed beyond what was reserved are an overrun, bounded
    /// like any (the sidecar drops what a lane reports past its allowance).
    pub fn outcomes(mut self, n: u32) -> Self {
        self.outcomes = n;
        self
    }

    /// Whether a dry lane may wait (a bounded time) for the sidecar's top-up (default
    /// yes). With `false` the reserve never blocks: where it would wait, it asks the
    /// sidecar for the top-up and returns [`ReserveError::WouldWait`] (not a denial), so
    /// a caller that must not block (an event loop, a thread holding a lock others need)
    /// can do the waiting reserve elsewhere.
    pub fn wait(mut self, wait: bool) -> Self {
        self.wait = wait;
        self
    }
    /// A process-local budget the call also spends (see [`LocalTask`]).
    pub fn local_task(mut self, task: &'a LocalTask) -> Self {
        self.local_task = Some(task);
        self
    }

    fn class(&self) -> usize {
        usize::from(self.tenant.0) * CLASSES + self.tier.as_index() * 2 + self.initiator.as_index()
    }
}

/// Credits held for one call. Commit it with the actual usage, cancel it, or drop it
/// (= cancel). It may be committed on another thread than the one that reserved it.
#[must_use = "dropping a reservation cancels it"]
#[derive(Debug)]
pub struct Reservation<'a> {
    gate: &'a GateInner,
    lane: usize,
    slot: usize,
    /// The claim generation the slot was reserved under (its state's tag).
    generation: u16,
    thread: u64,
    amount: u64,
    model: Option<&'a Model>,
    initiator: Initiator,
    local_task: Option<&'a LocalTask>,
    done: bool,
}

impl std::fmt::Debug for GateInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate").field("id", &self.id).finish()
    }
}

struct GateLocal {
    /// `gate.id`, copied so finding this entry does not touch the gate's cache line.
    id: u64,
    gate: Arc<GateInner>,
    /// This thread's token ([`thread_token`]).
    token: u64,
    /// This thread's lane per class for calls made as the process's agent on no task (the
    /// common case: one index); the owner state is in `gate.owned[lane]`.
    owners: Vec<Option<usize>>,
    /// This thread's other lanes (another agent name, a task): `(key word, lane)`.
    extra: Vec<(u64, usize)>,
    book_seq: u64,
    book: Option<Arc<PriceBook>>,
    rng: u64,
}

struct Local {
    token: u64,
    /// The process this table was made in. A fork child's thread inherits its parent's
    /// table, whose lanes belong to the parent: the child forgets it (see `forget_if_forked`).
    pid: u32,
    gates: Vec<GateLocal>,
}

impl Drop for Local {
    fn drop(&mut self) {
        self.forget_if_forked();
        // Thread exit: settle what other threads committed, flush local credits, and park
        // the lanes for the next thread of this process (their held slots stay valid),
        // all under the spare lock (see `settle_if_spare`).
        // A closed gate (its `Gate` dropped) gets its lanes handed back instead.
        for gl in &mut self.gates {
            gl.release();
        }
    }
}

thread_local! {
    static LOCAL: RefCell<Local> = {
        let token = next_id();
        TOKEN.set(token);
        RefCell::new(Local { token, pid: std::process::id(), gates: Vec::new() })
    };
    /// This thread's token (nonzero once the thread has used a gate): a const thread-local
    /// without a destructor, so reading it is one load and works at any time.
    static TOKEN: Cell<u64> = const { Cell::new(0) };
}

/// The calling thread's token, 0 if it never used a gate.
#[inline]
fn thread_token() -> u64 {
    TOKEN.try_with(Cell::get).unwrap_or(0)
}

impl Local {
    /// In a fork child, drops the inherited entries without releasing them: their lanes,
    /// owner states and spare lists are the parent's, which keeps using them (releasing
    /// them here would flush the parent's local credits a second time). Their mappings are
    /// leaked. Called on the slow paths only (thread exit, first use of a gate).
    #[cold]
    fn forget_if_forked(&mut self) {
        let me = std::process::id();
        if self.pid != me {
            self.pid = me;
            for gl in self.gates.drain(..) {
                std::mem::forget(gl);
            }
        }
    }

    fn gate(&mut self, inner: &Arc<GateInner>) -> &mut GateLocal {
        let pos = match self.gates.iter().position(|g| g.id == inner.id) {
            Some(p) => p,
            None => {
                self.forget_if_forked();
                // First use of a gate on this thread (the slow path): first let go of the
                // gates dropped since, so their lanes and mappings are not kept alive.
                self.gates.retain_mut(|g| {
                    if g.gate.closed.load(Ordering::Acquire) {
                        g.release();
                        false
                    } else {
                        true
                    }
                });
                self.gates.push(GateLocal {
                    id: inner.id,
                    gate: inner.clone(),
                    token: self.token,
                    owners: Vec::new(),
                    extra: Vec::new(),
                    book_seq: 0,
                    book: None,
                    rng: self.token.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
                });
                self.gates.len() - 1
            }
        };
        &mut self.gates[pos]
    }
}

impl GateLocal {
    /// Lets go of this thread's lanes of the gate: parks them for the process's next
    /// thread, or, once the gate is closed, hands them back to the sidecar. Both under
    /// the spare lock, so a lane is never parked on a gate that is closing (see
    /// `Gate::drop`) and no remote commit falls between (see `settle_if_spare`).
    fn release(&mut self) {
        let gate = &self.gate;
        let view = gate.view();
        let mut spare = gate.spare.lock().unwrap_or_else(|e| e.into_inner());
        let closed = gate.closed.load(Ordering::Acquire);
        let base = self.owners.iter_mut().filter_map(Option::take);
        let lanes: Vec<usize> = base.chain(self.extra.drain(..).map(|(_, l)| l)).collect();
        for lane in lanes {
            let lo = &gate.owned[lane];
            let mut o = lo.get(lane);
            // From here a commit on this thread takes the remote path.
            lo.thread.store(0, RELAXED);
            if !view.still_owns(&o) {
                continue; // reclaimed: not ours to park or hand back
            }
            if closed {
                gate.hand_back(&mut o);
            } else {
                view.settle_pending(&mut o);
                let local = o.local;
                view.flush(&mut o, local, &mut |_| true);
                spare.push((view.lw(lane, L_KEY).load(RELAXED), o.lane));
            }
        }
    }

    /// Hands back to the sidecar this thread's lanes whose key matches `which` (a task's
    /// lanes when it is done with).
    fn release_where(&mut self, which: impl Fn(LaneKey) -> bool) {
        let gate = self.gate.clone();
        let view = gate.view();
        let mut i = 0;
        while i < self.extra.len() {
            let (word, lane) = self.extra[i];
            if !LaneKey::decode(word).is_some_and(&which) {
                i += 1;
                continue;
            }
            self.extra.swap_remove(i);
            let lo = &gate.owned[lane];
            let mut o = lo.get(lane);
            lo.thread.store(0, RELAXED);
            if view.still_owns(&o) {
                gate.hand_back(&mut o);
            }
        }
    }

    /// The current price book (reloaded when the sidecar published a new one).
    #[inline]
    fn book(&mut self) -> Result<&PriceBook, ReserveError> {
        let seq = self.gate.view().book_seq();
        if seq != self.book_seq || self.book.is_none() {
            let (seq, book) = self.gate.load_book(seq)?;
            self.book = Some(book);
            self.book_seq = seq;
        }
        // Just set above when it was None.
        self.book
            .as_deref()
            .ok_or_else(|| ReserveError::PriceBook("not loaded".into()))
    }

    fn next_rand(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    /// Forgets this thread's lane `at` after reclaim took it (its claim word changed): the
    /// next reserve claims a fresh one.
    #[cold]
    fn lose(&mut self, at: LaneAt) {
        let lane = match at {
            LaneAt::Base(class) => self.owners.get_mut(class).and_then(Option::take),
            LaneAt::Extra(key) => {
                let pos = self.extra.iter().position(|(k, _)| *k == key);
                pos.map(|p| self.extra.swap_remove(p).1)
            }
        };
        if let Some(lane) = lane {
            self.gate.owned[lane].thread.store(0, RELAXED);
        }
    }

    /// This thread's lane `at`, claiming one for `key` on first use.
    #[inline]
    fn lane(&mut self, at: LaneAt, key: LaneKey) -> Result<usize, ReserveError> {
        let found = match at {
            LaneAt::Base(class) => self.owners.get(class).copied().flatten(),
            LaneAt::Extra(k) => self.extra.iter().find(|(x, _)| *x == k).map(|(_, l)| *l),
        };
        match found {
            Some(lane) => Ok(lane),
            None => self.claim(at, key),
        }
    }

    /// Claims this thread's lane `at`. `claim_lane` validates the tenant and the class
    /// first, so the table only grows to a class the region has (a bad `TenantId` gets a
    /// typed error, not a huge table).
    #[cold]
    #[inline(never)]
    fn claim(&mut self, at: LaneAt, key: LaneKey) -> Result<usize, ReserveError> {
        if matches!(at, LaneAt::Extra(_)) {
            // Lanes of tasks that are over go back before this thread takes another.
            let gate = self.gate.clone();
            let view = gate.view();
            self.release_where(|k| {
                k.task
                    .is_some_and(|t| !view.task_is(t) || view.task_done(t) != 0)
            });
        }
        let o = claim_lane(&self.gate, key)?;
        let lo = &self.gate.owned[o.lane];
        lo.put(&o);
        lo.thread.store(self.token, RELAXED);
        match at {
            LaneAt::Base(class) => {
                if self.owners.len() <= class {
                    self.owners.resize(class + 1, None);
                }
                self.owners[class] = Some(o.lane);
            }
            LaneAt::Extra(k) => self.extra.push((k, o.lane)),
        }
        Ok(o.lane)
    }
}

/// Where a thread keeps a lane: by class for calls made as the process's agent on no task,
/// else by the lane key word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LaneAt {
    Base(usize),
    Extra(u64),
}

/// Claims a lane for `key`: a spare one of this process, or a free one in the region.
fn claim_lane(inner: &GateInner, key: LaneKey) -> Result<Owner, ReserveError> {
    let view = inner.view();
    if usize::from(key.tenant) >= inner.layout.tenants {
        return Err(ReserveError::UnknownTenant(format!("#{}", key.tenant)));
    }
    if view.class_pools(key).is_err() {
        let base = inner.layout.tenant(usize::from(key.tenant));
        if view.w[base + T_STATE].load(ACQ) == 0 {
            return Err(ReserveError::UnknownTenant(format!("#{}", key.tenant)));
        }
        return Err(ReserveError::NoClass {
            tier: key.tier,
            initiator: key.initiator,
        });
    }
    let word = key.encode();
    {
        let mut spare = inner.spare.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(pos) = spare.iter().position(|(k, _)| *k == word) {
            let (_, lane) = spare.swap_remove(pos);
            if let Some(o) = inner.owner_if_ours(lane) {
                return Ok(o);
            }
        }
    }
    // Registered before any claim names it (a fork child, or a process whose holder file
    // was deleted, gets a new holder here).
    let me = inner.holder()?;
    (0..inner.layout.lanes)
        .find_map(|lane| view.claim(lane, me, word))
        .ok_or(ReserveError::NoFreeLane)
}

impl Gate {
    /// Attaches to the region at `path`, validating it (see [`AttachError`]). The agent is
    /// named by `TOLLGATE_AGENT` (unnamed if unset); see [`Gate::attach_with`].
    pub fn attach(path: impl AsRef<Path>) -> Result<Gate, AttachError> {
        Gate::attach_with(path, &GateOptions::new())
    }

    /// Attaches to the region at `path` with `options` (the agent's name).
    pub fn attach_with(path: impl AsRef<Path>, options: &GateOptions) -> Result<Gate, AttachError> {
        let (mem, layout) = open_and_validate(path.as_ref())?;
        let holders = holder::holders_dir(path.as_ref());
        // Register now, so a folder the agent cannot use fails at attach, not at a call.
        let me = holder::create_holders_dir(path.as_ref())
            .and_then(|_| holder::holder_for(&holders))
            .map_err(|source| AttachError::Holders {
                path: holders.display().to_string(),
                source,
            })?;
        let agent_name = options.resolve_agent(std::env::var(AGENT_ENV).ok());
        let view = View {
            w: mem.words(),
            l: &layout,
        };
        let agent = view
            .intern(agent_name.as_bytes(), me)
            .map_err(|e| AttachError::AgentName {
                name: agent_name.clone(),
                why: match e {
                    NameError::TooLong => format!("longer than {MAX_NAME} bytes"),
                    NameError::Full => "the region's name table is full".into(),
                },
            })?;
        LIVE_MAPPINGS.fetch_add(1, Ordering::Relaxed);
        Ok(Gate {
            inner: Arc::new(GateInner {
                id: next_id(),
                closed: AtomicBool::new(false),
                mem,
                layout,
                holders,
                spare: Mutex::new(Vec::new()),
                agent,
                agent_name,
                book: Mutex::new(None),
                owned: (0..layout.lanes).map(|_| LaneOwner::new()).collect(),
            }),
        })
    }

    /// Region mappings this process's gates still hold: a dropped `Gate`'s mapping lives on
    /// until every thread that used it has let go of it (the dropping thread at once,
    /// others at their next first use of a gate, or when they exit). For tests and
    /// diagnostics.
    pub fn live_mappings() -> usize {
        LIVE_MAPPINGS.load(Ordering::Relaxed)
    }

    /// Lanes the calling thread holds on this gate (one per tenant, tier and initiator
    /// it has reserved for). For tests and diagnostics.
    pub fn thread_lanes(&self) -> usize {
        self.with_thread(|gl| gl.owners.iter().flatten().count())
    }

    /// The length of the calling thread's lane table for this gate (bounded by the
    /// region's tenants times the classes per tenant). For tests and diagnostics.
    pub fn thread_lane_table_len(&self) -> usize {
        self.with_thread(|gl| gl.owners.len())
    }

    fn with_thread(&self, f: impl FnOnce(&GateLocal) -> usize) -> usize {
        LOCAL
            .try_with(|cell| {
                let local = cell.try_borrow().ok()?;
                local.gates.iter().find(|g| g.id == self.inner.id).map(f)
            })
            .ok()
            .flatten()
            .unwrap_or(0)
    }

    /// Attaches to the region named by `TOLLGATE_REGION`, as the agent named by
    /// `TOLLGATE_AGENT` (unnamed if unset).
    pub fn from_env() -> Result<Gate, AttachError> {
        let path = std::env::var_os(REGION_ENV).ok_or_else(|| AttachError::NotFound {
            path: format!("${REGION_ENV} (not set)"),
        })?;
        Gate::attach(path)
    }

    /// The name this process's calls are made as ("" if unnamed).
    pub fn agent_name(&self) -> &str {
        &self.inner.agent_name
    }

    /// Resolves a tenant name (do it once; it scans the tenant table).
    pub fn tenant(&self, name: &str) -> Result<TenantId, ReserveError> {
        find_tenant(&self.inner.view(), name)
            .map(|t| TenantId(t as u16))
            .ok_or_else(|| ReserveError::UnknownTenant(name.to_owned()))
    }

    /// Resolves a model name in the current price book (do it once per model).
    pub fn model(&self, name: &str) -> Result<Model, ReserveError> {
        let seq = self.inner.view().book_seq();
        let (seq, book) = self.inner.load_book(seq)?;
        let r = book
            .model(name)
            .ok_or_else(|| RatingError::UnknownModel(name.to_owned()))?;
        let fast = per_token_prices(&book, &r).map(|(input, output)| FastRate {
            seq,
            input,
            output,
            meta: slot_meta(&book, &r),
        });
        Ok(Model {
            name: name.to_owned(),
            r,
            fast,
        })
    }

    /// Resolves an agent name (at most 64 bytes) into a handle for [`Call::agent`]: calls
    /// made with it are attributed to that agent and limited by its quotas. Do it once per
    /// name: it interns the name in the region's bounded name table (a full table is
    /// [`ReserveError::NameTableFull`]).
    pub fn agent(&self, name: &str) -> Result<AgentName, ReserveError> {
        self.inner.intern(name).map(AgentName)
    }

    /// Resolves a feature name (at most 64 bytes) into a handle for [`Call::feature`]
    /// (interned once, like [`Gate::agent`]).
    pub fn feature(&self, name: &str) -> Result<Feature, ReserveError> {
        self.inner.intern(name).map(Feature)
    }

    /// Opens the named task of `spec`, or joins it if a process of the pod opened it
    /// already (then its first terms hold), then waits up to [`TaskSpec::wait`] for the
    /// sidecar to register it and lease its first budget. See [`Task`].
    pub fn open_task(&self, spec: &TaskSpec) -> Result<Task, ReserveError> {
        let inner = &self.inner;
        let id = spec.id.as_bytes();
        if id.is_empty() || id.len() > MAX_TASK_ID {
            return Err(ReserveError::InvalidName {
                name: spec.id.clone(),
                why: format!("a task id has 1 to {MAX_TASK_ID} bytes"),
            });
        }
        if usize::from(spec.tenant.0) >= inner.layout.tenants
            || inner.view().w[inner.layout.tenant(usize::from(spec.tenant.0)) + T_STATE].load(ACQ)
                == 0
        {
            return Err(ReserveError::UnknownTenant(format!("#{}", spec.tenant.0)));
        }
        let terms = TaskTerms {
            tenant: spec.tenant.0,
            id,
            budget: spec.budget.0,
            max_calls: spec.max_calls,
        };
        let me = inner.holder()?;
        let r = match inner.view().open_task(&terms, me) {
            Ok(r) => r,
            Err(OpenError::Full) => {
                return Err(ReserveError::TaskTableFull {
                    capacity: inner.layout.tasks,
                });
            }
            Err(OpenError::NoBudget) => {
                return Err(ReserveError::InvalidName {
                    name: spec.id.clone(),
                    why: "a task is opened with a budget (TaskSpec::budget); without one it \
                          can only join a task a process of the pod has open"
                        .into(),
                });
            }
        };
        // A task a process of the pod opened first keeps its terms.
        let (budget, max_calls) = inner.view().task_terms(r);
        // A new task is registered by the sidecar, which leases its budget from the
        // authority: wait for that (bounded), so the first call finds budget.
        let end = Instant::now() + spec.wait.min(Duration::from_secs(60));
        while matches!(
            inner.view().task_status(r),
            TaskStatus::New | TaskStatus::Pending
        ) && Instant::now() < end
        {
            std::thread::sleep(Duration::from_micros(500));
        }
        Ok(Task {
            gate: inner.clone(),
            id: spec.id.clone(),
            r,
            tenant: spec.tenant,
            agent: spec.agent.map_or(inner.agent, |a| a.0),
            budget,
            max_calls,
        })
    }

    /// Reports `outcomes` on their own (e.g. a ticket resolved after the call): rated by
    /// the call's model's per-outcome price (or at a fixed call's cost), reserved and
    /// committed at once, with the call's tenant, agent, feature and task. Denied like any
    /// call; returns the charge.
    pub fn report_outcomes(&self, call: &Call<'_>, outcomes: u32) -> Result<Credits, ReserveError> {
        let call = Call {
            outcomes,
            input_tokens: 0,
            max_output_tokens: Some(0),
            ..*call
        };
        let hold = self.reserve(&call)?;
        let usage = Usage {
            input_tokens: 0,
            output_tokens: 0,
        };
        match hold.commit_with_outcomes(usage, outcomes) {
            Ok(c) => Ok(c),
            Err(CommitError::Rating(e)) => Err(ReserveError::Rating(e)),
            // The lane was reclaimed under this process: nothing was charged.
            Err(CommitError::Reclaimed) => Err(ReserveError::NoFreeLane),
        }
    }

    /// Reserves credits for `call`: all of its limits (and its task budget) or none.
    #[inline(always)]
    pub fn reserve<'a>(&'a self, call: &Call<'a>) -> Result<Reservation<'a>, ReserveError> {
        reserve_on(&self.inner, call)
    }
}

/// `Gate::reserve` on the gate's shared state (also used by `Task::complete`).
#[inline(always)]
fn reserve_on<'a>(
    inner: &'a Arc<GateInner>,
    call: &Call<'a>,
) -> Result<Reservation<'a>, ReserveError> {
    // The thread-local part returns two words in registers (an error, rarely, through
    // `err`); the handle is built here, in the caller. A large value built in one
    // function and copied out of another stalls on store forwarding, which cost more
    // than the rest of the call.
    let mut err = None;
    let (lane_slot, amount) = reserve_words(inner, call, &mut err);
    if lane_slot == 0 {
        return Err(err.unwrap_or(ReserveError::NoFreeLane));
    }
    Ok(Reservation {
        gate: inner,
        lane: (lane_slot >> 32) as usize,
        slot: (lane_slot & 0xFFFF) as usize - 1,
        generation: (lane_slot >> 16) as u16,
        thread: thread_token(),
        amount,
        model: match call.price {
            Price::Model(m) => Some(m),
            Price::Fixed(_) => None,
        },
        initiator: call.initiator,
        local_task: call.local_task,
        done: false,
    })
}

/// The thread-local part of `reserve`: `(lane << 32 | generation << 16 | slot + 1,
/// amount)`, or `(0, 0)` with the error in `err`.
#[inline(never)]
fn reserve_words(
    inner: &Arc<GateInner>,
    call: &Call<'_>,
    err: &mut Option<ReserveError>,
) -> (u64, u64) {
    let got = LOCAL.try_with(|cell| {
        let mut local = cell.borrow_mut();
        let gl = local.gate(inner);
        reserve_in(inner, gl, call)
    });
    match got {
        // Lanes and slots are below 2^16 and 64 (validated layout); generations are 15 bits.
        Ok(Ok((lane, slot, amount))) => {
            let generation = holder::generation(inner.owned[lane].claim.load(RELAXED));
            let word = ((lane as u64) << 32) | (u64::from(generation) << 16) | (slot as u64 + 1);
            (word, amount)
        }
        Ok(Err(e)) => {
            *err = Some(e);
            (0, 0)
        }
        Err(_) => (0, 0),
    }
}

impl Drop for Gate {
    /// Closes the gate: this thread's lanes and the lanes parked by exited threads are
    /// handed back to the sidecar now (settled and flushed first), other threads' lanes at
    /// their next first use of a gate or when they exit; the mapping goes with the last
    /// reference. No reservation can be outstanding (each borrows the `Gate`).
    fn drop(&mut self) {
        let inner = &self.inner;
        {
            let mut spare = inner.spare.lock().unwrap_or_else(|e| e.into_inner());
            inner.closed.store(true, Ordering::Release);
            for (_, lane) in spare.drain(..) {
                if let Some(mut o) = inner.owner_if_ours(lane) {
                    inner.hand_back(&mut o);
                }
            }
        }
        let mine = LOCAL
            .try_with(|cell| {
                let mut local = cell.try_borrow_mut().ok()?;
                let pos = local.gates.iter().position(|g| g.id == inner.id)?;
                Some(local.gates.swap_remove(pos))
            })
            .ok()
            .flatten();
        if let Some(mut gl) = mine {
            gl.release();
        }
    }
}

#[inline]
fn rate_max(gl: &mut GateLocal, call: &Call<'_>) -> Result<(u64, u64), ReserveError> {
    match call.price {
        Price::Fixed(c) => Ok((c.0, META_NO_MODEL)),
        Price::Model(m) => {
            if call.outcomes == 0
                && let Some(f) = &m.fast
                && let Some(out) = call.max_output_tokens
                && let Some(c) = f.rate(&gl.gate.view(), call.input_tokens, out)
            {
                return Ok((c, f.meta));
            }
            let book = gl.book()?;
            let r = if m.r.book_version() == book.version() {
                m.r
            } else {
                book.model(&m.name)
                    .ok_or_else(|| RatingError::UnknownModel(m.name.clone()))?
            };
            let c = if call.outcomes > 0 {
                // Tokens and outcomes together: the most the call can cost whichever way
                // its model is priced.
                book.rate_max_with_outcomes(
                    &r,
                    call.input_tokens,
                    call.max_output_tokens,
                    call.initiator,
                    u64::from(call.outcomes),
                )?
            } else {
                match call.max_output_tokens {
                    Some(out) => rate_tokens(book, &r, call.input_tokens, out, call.initiator)?,
                    None => book.rate_max(&r, call.input_tokens, None, call.initiator)?,
                }
            };
            Ok((c.0, slot_meta(book, &r)))
        }
    }
}

/// Refuses a call whose named task is over, then takes the call's share of its local
/// task (before the lane: it is cheaper to refuse there); undone by [`refund_tasks`] if the
/// lane refuses.
#[inline]
fn debit_tasks(view: &View<'_>, call: &Call<'_>, amount: u64) -> Result<(), ReserveError> {
    if let Some(t) = call.task
        && !call.work_unit
    {
        t.check_open(view, amount)?;
    }
    if let Some(t) = call.local_task
        && let Err(left) = t.debit(amount)
    {
        return Err(ReserveError::TaskExhausted {
            task: String::new(),
            why: TaskLimit::Budget,
            needed: Credits(amount),
            remaining: Credits(left),
        });
    }
    Ok(())
}

fn refund_tasks(call: &Call<'_>, amount: u64) {
    if let Some(t) = call.local_task {
        t.credit(amount);
    }
}

/// Reserves for `call` on this thread's lane: the lane, the slot and the amount held.
#[inline]
fn reserve_in(
    inner: &GateInner,
    gl: &mut GateLocal,
    call: &Call<'_>,
) -> Result<(usize, usize, u64), ReserveError> {
    let (amount, meta) = rate_max(gl, call)?;
    if amount > MAX_LANE_CREDITS {
        return Err(ReserveError::TooLarge(Credits(amount)));
    }
    let view = inner.view();
    debit_tasks(&view, call, amount)?;
    let agent = call.agent.map_or(inner.agent, |a| a.0);
    let task = call.task.map(|t| t.r);
    let key = LaneKey {
        tenant: call.tenant.0,
        tier: call.tier,
        initiator: call.initiator,
        agent,
        task,
    };
    let at = if agent == inner.agent && key.task.is_none() {
        LaneAt::Base(call.class())
    } else {
        LaneAt::Extra(key.encode())
    };
    let req = Request {
        amount,
        tokens: pack_tokens(
            call.input_tokens,
            call.max_output_tokens.unwrap_or_default(),
        ),
        meta: if call.work_unit {
            meta | META_WORK_UNIT
        } else {
            meta
        },
        names: pack_names(agent, call.feature.0, task),
        counts_call: call.task.is_some_and(|t| t.max_calls > 0) && !call.work_unit,
    };
    // Fast path: this thread's lane has the credits (usually in its local credits).
    let fail = match gl.lane(at, key) {
        Ok(lane) => {
            let lo = &inner.owned[lane];
            let mut o = lo.get(lane);
            if view.still_owns(&o) {
                view.settle_pending(&mut o);
                let r = view.reserve(&mut o, &req, &mut |_| true);
                lo.put(&o);
                match r {
                    Ok(slot) => return Ok((lane, slot, amount)),
                    Err(f) => Some(f),
                }
            } else {
                // Reclaimed under us: never write to it again; claim a fresh lane.
                gl.lose(at);
                None
            }
        }
        Err(_) => None,
    };
    match reserve_slow(gl, &view, call, (at, key), &req, fail) {
        Ok((lane, slot)) => Ok((lane, slot, amount)),
        Err(e) => {
            refund_tasks(call, amount);
            Err(e)
        }
    }
}

/// What one turn of the slow path decided.
enum SlowStep {
    Reserved(usize),
    Failed(ReserveFail),
    Deny(ReserveError),
    Again,
}

/// The slow path: claim a lane, settle a full lane's pending commits, or wait a bounded
/// time for a top-up and then deny with the limit the sidecar recorded.
#[cold]
#[inline(never)]
fn reserve_slow(
    gl: &mut GateLocal,
    view: &View<'_>,
    call: &Call<'_>,
    (at, key): (LaneAt, LaneKey),
    req: &Request,
    mut fail: Option<ReserveFail>,
) -> Result<(usize, usize), ReserveError> {
    let amount = req.amount;
    let mut asked = false;
    let deadline_state = &mut None::<Instant>;
    let mut spins = 0u64;
    loop {
        let lane = gl.lane(at, key)?;
        let lo = &gl.gate.owned[lane];
        // The owner state is loaded here and saved before anything else can use it.
        let mut o = lo.get(lane);
        if !view.still_owns(&o) {
            gl.lose(at);
            fail = None;
            continue;
        }
        let step = match fail.take() {
            Some(f) => SlowStep::Failed(f),
            None => {
                view.settle_pending(&mut o);
                match view.reserve(&mut o, req, &mut |_| true) {
                    Ok(slot) => SlowStep::Reserved(slot),
                    Err(f) => SlowStep::Failed(f),
                }
            }
        };
        let step = match step {
            SlowStep::Failed(ReserveFail::NoSlot) => {
                view.settle_pending(&mut o);
                if o.free == 0 {
                    SlowStep::Deny(ReserveError::TooManyOutstanding)
                } else {
                    SlowStep::Again
                }
            }
            // Only a test's step hook stops an operation; ours never does.
            SlowStep::Failed(ReserveFail::Stopped) => SlowStep::Deny(ReserveError::NoFreeLane),
            // A task the sidecar says is over: refused now, naming it.
            SlowStep::Failed(f) => match task_over(call, view, amount) {
                Some(e) => SlowStep::Deny(e),
                None => SlowStep::Failed(f),
            },
            other => other,
        };
        lo.put(&o);
        match step {
            SlowStep::Reserved(slot) => return Ok((lane, slot)),
            SlowStep::Deny(e) => return Err(e),
            SlowStep::Again => {}
            SlowStep::Failed(_) => {
                // Dry (the other failures were decided above). A limit the sidecar knows
                // cannot be refilled soon is denied now: no wait, no demand.
                if let Some(left) = denied_until(view, lane) {
                    return Err(ReserveError::Denied(deny(
                        gl,
                        view,
                        lane,
                        call,
                        amount,
                        Some(left),
                    )));
                }
                if !asked {
                    // Ask the sidecar for a top-up, then wait a bounded time.
                    view.lw(lane, L_DEMAND).store(amount.max(1), REL);
                    asked = true;
                }
                if !call.wait {
                    return Err(ReserveError::WouldWait);
                }
                let calls = matches!(step, SlowStep::Failed(ReserveFail::NoCalls));
                if !wait_for_credits(view, lane, amount, calls, &mut spins, deadline_state) {
                    if let Some(e) = task_over(call, view, amount) {
                        return Err(e);
                    }
                    return Err(ReserveError::Denied(deny(
                        gl, view, lane, call, amount, None,
                    )));
                }
            }
        }
    }
}

/// The refusal of a call whose task the sidecar says is over (spent, out of calls, closed).
fn task_over(call: &Call<'_>, view: &View<'_>, amount: u64) -> Option<ReserveError> {
    let t = call.task?;
    t.refusal(view, amount).map(|why| t.exhausted(why, amount))
}

/// Spins, then sleeps in short steps, until `lane` has `amount` (or, with `calls`, a call
/// to make) or the wait is over. Returns `true` when it is worth trying again.
fn wait_for_credits(
    view: &View<'_>,
    lane: usize,
    amount: u64,
    calls: bool,
    spins: &mut u64,
    deadline: &mut Option<Instant>,
) -> bool {
    let max_spins = view.w[H_SPIN_ITERS].load(RELAXED).min(MAX_SPIN_ITERS);
    let avail = view.lw(lane, L_AVAIL);
    let ready = || {
        if calls {
            view.lw(lane, L_CALLS_LIMIT).load(ACQ) > view.lw(lane, L_CALLS).load(RELAXED)
        } else {
            credits(avail.load(ACQ)) >= amount
        }
    };
    while *spins < max_spins {
        *spins += 1;
        if ready() {
            return true;
        }
        spin_hint();
    }
    let wait = Duration::from_micros(view.w[H_WAIT_MICROS].load(RELAXED)).min(MAX_WAIT);
    let end = *deadline.get_or_insert_with(|| Instant::now() + wait);
    loop {
        let now = Instant::now();
        if now >= end {
            return ready();
        }
        std::thread::sleep((end - now).min(Duration::from_micros(50)));
        if ready() {
            return true;
        }
    }
}

/// How long `lane` is still to be denied at once (see `L_DENY_UNTIL`), if it is.
#[inline]
fn denied_until(view: &View<'_>, lane: usize) -> Option<u64> {
    let until = view.lw(lane, L_DENY_UNTIL).load(ACQ);
    if until == 0 {
        return None;
    }
    let now = coarse_unix_ms();
    (now < until).then(|| until - now)
}

/// Unix time in ms from the kernel's coarse real-time clock: updated once per scheduler
/// tick (1–4 ms behind at most), and about a fifth of the cost of the precise clock on the
/// immediate-denial path, where a mark is kept in whole milliseconds anyway. A denial may
/// therefore outlast its mark by up to one tick.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[inline]
fn coarse_unix_ms() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::RealtimeCoarse);
    let secs = u64::try_from(t.tv_sec).unwrap_or(0);
    let ms = u64::try_from(t.tv_nsec).unwrap_or(0) / 1_000_000;
    secs.saturating_mul(1000).saturating_add(ms)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
#[inline]
fn coarse_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(u64::MAX, |d| d.as_millis() as u64)
}

/// Builds the denial from what the sidecar recorded for the lane (or `left_ms`, the time
/// an immediate denial has left), and reports it.
fn deny(
    gl: &mut GateLocal,
    view: &View<'_>,
    lane: usize,
    call: &Call<'_>,
    amount: u64,
    left_ms: Option<u64>,
) -> Denial {
    // The sidecar may have marked the limit final while this call waited for a top-up.
    let left_ms = left_ms.or_else(|| denied_until(view, lane));
    let recorded = view.lw(lane, L_DENY).load(ACQ);
    let limit: Option<LimitKind> = decode_limit(recorded & 0xFFFF_FFFF);
    let hint = match (left_ms, recorded >> 32) {
        (Some(ms), _) => Hint::Until(ms),
        (None, 0) => Hint::Refill(DEFAULT_RETRY_MS),
        (None, ms) => Hint::Refill(ms),
    };
    let delay = retry_delay(hint, call.tier, gl.next_rand());
    let denials = view.lw(lane, L_DENIALS);
    denials.store(denials.load(RELAXED).wrapping_add(1), REL);
    view.lw(lane, L_LAST_DENY).store(recorded, REL);
    Denial {
        limit,
        horizon: limit.and_then(|l| l.horizon()),
        retry_after: Duration::from_millis(delay),
        tier: call.tier,
        needed: Credits(amount),
    }
}

impl Reservation<'_> {
    /// Credits held.
    pub fn amount(&self) -> Credits {
        Credits(self.amount)
    }

    /// Commits the call's actual usage, rated with the price book: the rest of the
    /// reservation goes back; an overrun is charged and counted. Returns the charge. A
    /// fixed-price call ([`Call::fixed`]) is charged its reserved cost.
    #[inline]
    pub fn commit(mut self, usage: Usage) -> Result<Credits, CommitError> {
        self.commit_usage(usage, 0)
    }

    /// Commits the call's actual usage and the `outcomes` it produced (e.g. a resolved
    /// ticket), rated together: a model priced per outcome charges them (and its
    /// consumption floor is the plan's), one priced per token charges the tokens. The
    /// outcomes go to the statement either way.
    #[inline]
    pub fn commit_with_outcomes(
        mut self,
        usage: Usage,
        outcomes: u32,
    ) -> Result<Credits, CommitError> {
        self.commit_usage(usage, outcomes)
    }

    #[inline]
    fn commit_usage(&mut self, usage: Usage, outcomes: u32) -> Result<Credits, CommitError> {
        match self.finish(Settle::Usage(usage, outcomes))? {
            (c, None) => Ok(Credits(c)),
            (_, Some(e)) => Err(CommitError::Rating(e)),
        }
    }

    /// Commits a cost the agent states in credits (it rated the call itself): charged as
    /// stated, the record says so (`pre_rated`), and the authority bills that amount.
    #[inline]
    pub fn commit_credits(mut self, actual: Credits) -> Result<Credits, CommitError> {
        self.finish(Settle::Credits(actual.0))?;
        Ok(actual)
    }

    /// Cancels: everything goes back.
    pub fn cancel(mut self) {
        let _ = self.finish(Settle::Cancel);
    }

    /// The actual cost of `how`. A usage is rated with the model handle's per-token prices
    /// while the price book is the one it was resolved in; otherwise with this thread's
    /// cached book or the gate's shared copy. A rating error charges the whole reservation
    /// and is reported.
    #[inline]
    fn actual(&self, how: Settle) -> (u64, Option<RatingError>) {
        match how {
            Settle::Cancel | Settle::Work => (0, None),
            Settle::Credits(c) => (c, None),
            Settle::Usage(usage, outcomes) => {
                let Some(m) = self.model else {
                    return (self.amount, None);
                };
                if outcomes == 0
                    && let Some(f) = &m.fast
                    && let Some(c) =
                        f.rate(&self.gate.view(), usage.input_tokens, usage.output_tokens)
                {
                    return (c, None);
                }
                match rate_actual(self.gate, m, usage, outcomes, self.initiator) {
                    Ok(c) => (c.0, None),
                    Err(e) => (self.amount, Some(e)),
                }
            }
        }
    }

    /// Settles the reservation: on the owner thread directly (recognised by the thread
    /// token, with the owner state from the gate's per-lane block: no thread-local table
    /// lookup); on another thread by the remote-commit path. Returns the actual cost and a
    /// rating error, if any.
    #[inline]
    fn finish(&mut self, how: Settle) -> Result<(u64, Option<RatingError>), CommitError> {
        if self.done {
            return Ok((0, None));
        }
        self.done = true;
        let cancel = matches!(how, Settle::Cancel);
        let (tokens, outcomes) = match how {
            Settle::Usage(u, n) => (
                pack_tokens(u.input_tokens, u.output_tokens),
                // A fixed-price call's cost was stated, not rated from the usage.
                pack_outcomes(n, self.model.is_none()),
            ),
            Settle::Credits(_) => (0, pack_outcomes(0, true)),
            Settle::Work | Settle::Cancel => (0, 0),
        };
        let (actual, err) = self.actual(how);
        self.task_settle(actual);
        let view = self.gate.view();
        // The reserving thread owns the lane until it lets it go (at its exit, or at its
        // next use of a gate after this one was dropped, which no reservation outlives),
        // and it clears `thread` then; only it writes its token there.
        if self.thread == thread_token() {
            let lo = &self.gate.owned[self.lane];
            if lo.thread.load(RELAXED) == self.thread {
                let mut o = lo.get(self.lane);
                // Never settle into a lane reclaim took (and settled) meanwhile.
                if !view.still_owns(&o) || !view.slot_is_held(self.lane, self.slot, self.generation)
                {
                    return Err(CommitError::Reclaimed);
                }
                // A commit within the reservation with room in the ring: the record is the
                // settle's intent. Anything else (a cancel, an overrun, a full ring): the
                // slot holds the intent. Neither stops but for a test's step hook.
                let fast = !cancel
                    && view
                        .commit_owned(&mut o, self.slot, actual, tokens, outcomes, &mut |_| true)
                        .is_some();
                if !fast {
                    if !cancel {
                        view.sw(self.lane, self.slot, S_TOKENS)
                            .store(tokens, RELAXED);
                        view.sw(self.lane, self.slot, S_OUTCOMES)
                            .store(outcomes, RELAXED);
                    }
                    let _ = view.settle(&mut o, self.slot, actual, cancel, &mut |_| true);
                }
                lo.put(&o);
                return Ok((actual, err));
            }
        }
        if !view.finish_remote(
            self.lane,
            self.slot,
            self.generation,
            actual,
            tokens,
            outcomes,
            cancel,
        ) {
            return Err(CommitError::Reclaimed);
        }
        self.gate.settle_if_spare(self.lane);
        Ok((actual, err))
    }

    /// The local task's side of the settle: the unused part back, an overrun taken. (A
    /// named task's budget is in the lane's pools: settled with the lane.)
    #[inline]
    fn task_settle(&self, actual: u64) {
        if let Some(t) = self.local_task {
            let paid = actual.min(self.amount);
            t.credit(self.amount - paid);
            t.debit_saturating(actual - paid);
        }
    }
}

/// How a reservation ends.
#[derive(Clone, Copy)]
enum Settle {
    /// Usage and outcomes, rated.
    Usage(Usage, u32),
    /// A cost stated in credits.
    Credits(u64),
    /// A task's completion (zero credits, the record is the work unit).
    Work,
    Cancel,
}

/// Rates `input` tokens in and `output` out with the model `r` of `book`: the same
/// result as `book.rate`, with per-token prices computed in 64-bit arithmetic when the
/// products fit (a division by the constant one million compiles to a multiply; the
/// book's 128-bit division is a library call), and by the book otherwise.
#[inline]
pub(crate) fn rate_tokens(
    book: &PriceBook,
    r: &ModelRef,
    input: u64,
    output: u64,
    initiator: Initiator,
) -> Result<Credits, RatingError> {
    if let Ok(entry) = book.entry(r)
        && let Pricing::PerToken {
            input_per_million,
            output_per_million,
        } = entry.pricing
        && let Some(a) = input.checked_mul(input_per_million.micros())
        && let Some(b) = output.checked_mul(output_per_million.micros())
        && let Some(total) = a.checked_add(b)
    {
        return Ok(Credits::from_micros(total.div_ceil(MICROS_PER_CREDIT)));
    }
    let usage = Usage {
        input_tokens: input,
        output_tokens: output,
    };
    book.rate(r, &RatingInput::new(usage).with_initiator(initiator))
}

/// The per-token prices (micro-credits per million input and output tokens) of model `r`
/// in `book`, if it prices per token.
#[inline]
pub(crate) fn per_token_prices(book: &PriceBook, r: &ModelRef) -> Option<(u64, u64)> {
    match book.entry(r).ok()?.pricing {
        Pricing::PerToken {
            input_per_million,
            output_per_million,
        } => Some((input_per_million.micros(), output_per_million.micros())),
        _ => None,
    }
}

/// `input` and `output` tokens at per-token prices `p`, in micro-credits: exactly
/// [`rate_tokens`]' 64-bit path, `None` when a product does not fit.
#[inline]
pub(crate) fn rate_per_token(p: (u64, u64), input: u64, output: u64) -> Option<u64> {
    let a = input.checked_mul(p.0)?;
    let b = output.checked_mul(p.1)?;
    let total = a.checked_add(b)?;
    Some(Credits::from_micros(total.div_ceil(MICROS_PER_CREDIT)).0)
}

fn rate_with(book: &PriceBook, m: &Model, input: &RatingInput) -> Result<Credits, RatingError> {
    if m.r.book_version() == book.version() {
        if input.outcomes == 0 {
            return rate_tokens(
                book,
                &m.r,
                input.input_tokens,
                input.output_tokens,
                input.initiator,
            );
        }
        book.rate(&m.r, input)
    } else {
        book.rate_by_name(&m.name, input)
    }
}

/// Rates the actual usage with this thread's cached price book (no lock); a thread that
/// never reserved on this gate falls back to the gate's shared copy.
fn rate_actual(
    inner: &GateInner,
    m: &Model,
    usage: Usage,
    outcomes: u32,
    initiator: Initiator,
) -> Result<Credits, RatingError> {
    let mut input = RatingInput::new(usage).with_initiator(initiator);
    input.outcomes = u64::from(outcomes);
    let fast = LOCAL
        .try_with(|cell| {
            let mut local = cell.try_borrow_mut().ok()?;
            let gl = local.gates.iter_mut().find(|g| g.id == inner.id)?;
            let book = gl.book().ok()?;
            Some(rate_with(book, m, &input))
        })
        .ok()
        .flatten();
    if let Some(r) = fast {
        return r;
    }
    let seq = inner.view().book_seq();
    let (_, book) = inner
        .load_book(seq)
        .map_err(|_| RatingError::UnknownModel(m.name.clone()))?;
    rate_with(&book, m, &input)
}

impl Drop for Reservation<'_> {
    #[inline]
    fn drop(&mut self) {
        if !self.done {
            let _ = self.finish(Settle::Cancel);
        }
    }
}
