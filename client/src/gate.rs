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

use crate::codes::{LaneKey, decode_limit};
use crate::error::{AttachError, CommitError, Denial, ReserveError};
use crate::holder;
use crate::lane::{
    MAX_LANE_CREDITS, META_NO_MODEL, Owner, ReserveFail, View, credits, pack_tokens,
};
use crate::layout::*;
use crate::mapping::Mem;
use crate::region::{find_tenant, open_and_validate};
use crate::sync::{ACQ, ACQ_REL, AtomicU64, REL, RELAXED, next_id, spin_hint, word};

/// Environment variable agents find the region path in.
pub const REGION_ENV: &str = "TOLLGATE_REGION";

/// Retry hint used when the sidecar has not recorded one (milliseconds).
const DEFAULT_RETRY_MS: u64 = 10;
/// Bounds on the slow path whatever the region says (its words are not trusted).
const MAX_SPIN_ITERS: u64 = 100_000;
const MAX_WAIT: Duration = Duration::from_millis(10);
/// Bound on a retry hint read from the region (one minute).
const MAX_RETRY_MS: u64 = 60_000;

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
    /// Lanes given up by exited threads, for reuse by new threads: `(class, lane)`.
    spare: Mutex<Vec<(usize, usize)>>,
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

/// A per-task budget: reservations made with `.task(&task)` debit it too, and are refused
/// with [`ReserveError::TaskExhausted`] once it is spent (the task is out, not the tenant).
/// Lives in this process (a task does not outlive its process).
#[derive(Debug)]
pub struct Task {
    budget: u64,
    remaining: AtomicU64,
}

impl Task {
    /// A task with `budget`.
    pub fn new(budget: Credits) -> Task {
        Task {
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
        let mut cur = self.remaining.load(RELAXED);
        loop {
            if cur < amount {
                return Err(cur);
            }
            match self
                .remaining
                .compare_exchange_weak(cur, cur - amount, ACQ_REL, RELAXED)
            {
                Ok(_) => return Ok(()),
                Err(now) => cur = now,
            }
        }
    }

    #[inline]
    fn credit(&self, amount: u64) {
        if amount > 0 {
            self.remaining.fetch_add(amount, ACQ_REL);
        }
    }

    /// Takes up to `amount` (an overrun); never below zero.
    fn debit_saturating(&self, amount: u64) {
        if amount == 0 {
            return;
        }
        let mut cur = self.remaining.load(RELAXED);
        loop {
            let new = cur.saturating_sub(amount);
            match self
                .remaining
                .compare_exchange_weak(cur, new, ACQ_REL, RELAXED)
            {
                Ok(_) => return,
                Err(now) => cur = now,
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Price<'a> {
    Model(&'a Model),
    Fixed(Credits),
}

/// One call to reserve for: what it may cost, whose it is, and its priority.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    price: Price<'a>,
    tenant: TenantId,
    tier: Tier,
    initiator: Initiator,
    input_tokens: u64,
    max_output_tokens: Option<u64>,
    task: Option<&'a Task>,
    wait: bool,
}

impl<'a> Call<'a> {
    /// A call to `model`, rated by the region's price book (reserved at its maximum:
    /// input tokens plus the maximum output tokens).
    pub fn model(model: &'a Model) -> Call<'a> {
        Call {
            price: Price::Model(model),
            tenant: TenantId(0),
            tier: Tier::Interactive,
            initiator: Initiator::Human,
            input_tokens: 0,
            max_output_tokens: None,
            task: None,
            wait: true,
        }
    }

    /// A call whose maximum cost is already known (pre-rated, or priced per outcome).
    pub fn fixed(max_cost: Credits) -> Call<'a> {
        Call {
            price: Price::Fixed(max_cost),
            ..Call::model_placeholder()
        }
    }

    fn model_placeholder() -> Call<'a> {
        Call {
            price: Price::Fixed(Credits::ZERO),
            tenant: TenantId(0),
            tier: Tier::Interactive,
            initiator: Initiator::Human,
            input_tokens: 0,
            max_output_tokens: None,
            task: None,
            wait: true,
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
    /// The task whose budget the call also spends.
    pub fn task(mut self, task: &'a Task) -> Self {
        self.task = Some(task);
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
    task: Option<&'a Task>,
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
    /// This thread's lane per class; the owner state is in `gate.owned[lane]`.
    owners: Vec<Option<usize>>,
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
        for (class, lane) in self.owners.iter_mut().enumerate() {
            if let Some(lane) = lane.take() {
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
                    spare.push((class, o.lane));
                }
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

    /// Forgets this thread's lane for `class` after reclaim took it (its claim word
    /// changed): the next reserve claims a fresh one.
    #[cold]
    fn lose(&mut self, class: usize) {
        if let Some(Some(lane)) = self.owners.get(class).copied() {
            self.gate.owned[lane].thread.store(0, RELAXED);
            self.owners[class] = None;
        }
    }

    /// This thread's lane for `class`, claiming one on first use.
    #[inline]
    fn lane(&mut self, class: usize, key: LaneKey) -> Result<usize, ReserveError> {
        match self.owners.get(class) {
            Some(Some(lane)) => Ok(*lane),
            _ => self.claim(class, key),
        }
    }

    /// Claims this thread's lane for `class`. `claim_lane` validates the tenant and the
    /// class first, so the table only grows to a class the region has (a bad `TenantId`
    /// gets a typed error, not a huge table).
    #[cold]
    #[inline(never)]
    fn claim(&mut self, class: usize, key: LaneKey) -> Result<usize, ReserveError> {
        let o = claim_lane(&self.gate, class, key)?;
        let lo = &self.gate.owned[o.lane];
        lo.put(&o);
        lo.thread.store(self.token, RELAXED);
        if self.owners.len() <= class {
            self.owners.resize(class + 1, None);
        }
        self.owners[class] = Some(o.lane);
        Ok(o.lane)
    }
}

/// Claims a lane for `class`: a spare one of this process, or a free one in the region.
fn claim_lane(inner: &GateInner, class: usize, key: LaneKey) -> Result<Owner, ReserveError> {
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
    {
        let mut spare = inner.spare.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(pos) = spare.iter().position(|(c, _)| *c == class) {
            let (_, lane) = spare.swap_remove(pos);
            if let Some(o) = inner.owner_if_ours(lane) {
                return Ok(o);
            }
        }
    }
    // Registered before any claim names it (a fork child, or a process whose holder file
    // was deleted, gets a new holder here).
    let me = holder::holder_for(&inner.holders)
        .map_err(|e| ReserveError::Liveness(format!("{}: {e}", inner.holders.display())))?;
    (0..inner.layout.lanes)
        .find_map(|lane| view.claim(lane, me, key.encode()))
        .ok_or(ReserveError::NoFreeLane)
}

impl Gate {
    /// Attaches to the region at `path`, validating it (see [`AttachError`]).
    pub fn attach(path: impl AsRef<Path>) -> Result<Gate, AttachError> {
        let (mem, layout) = open_and_validate(path.as_ref())?;
        let holders = holder::holders_dir(path.as_ref());
        // Register now, so a folder the agent cannot use fails at attach, not at a call.
        holder::create_holders_dir(path.as_ref())
            .and_then(|_| holder::holder_for(&holders))
            .map_err(|source| AttachError::Holders {
                path: holders.display().to_string(),
                source,
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

    /// Attaches to the region named by `TOLLGATE_REGION`.
    pub fn from_env() -> Result<Gate, AttachError> {
        let path = std::env::var_os(REGION_ENV).ok_or_else(|| AttachError::NotFound {
            path: format!("${REGION_ENV} (not set)"),
        })?;
        Gate::attach(path)
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

    /// Opens a task with its own budget (see [`Task`]).
    pub fn open_task(&self, budget: Credits) -> Task {
        Task::new(budget)
    }

    /// Reserves credits for `call`: all of its limits (and its task budget) or none.
    #[inline(always)]
    pub fn reserve<'a>(&'a self, call: &Call<'a>) -> Result<Reservation<'a>, ReserveError> {
        // The thread-local part returns two words in registers (an error, rarely, through
        // `err`); the handle is built here, in the caller. A large value built in one
        // function and copied out of another stalls on store forwarding, which cost more
        // than the rest of the call.
        let mut err = None;
        let (lane_slot, amount) = self.reserve_words(call, &mut err);
        if lane_slot == 0 {
            return Err(err.unwrap_or(ReserveError::NoFreeLane));
        }
        Ok(Reservation {
            gate: &self.inner,
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
            task: call.task,
            done: false,
        })
    }

    /// The thread-local part of `reserve`: `(lane << 32 | generation << 16 | slot + 1,
    /// amount)`, or `(0, 0)` with the error in `err`.
    #[inline(never)]
    fn reserve_words(&self, call: &Call<'_>, err: &mut Option<ReserveError>) -> (u64, u64) {
        let inner: &GateInner = &self.inner;
        let got = LOCAL.try_with(|cell| {
            let mut local = cell.borrow_mut();
            let gl = local.gate(&self.inner);
            reserve_in(inner, gl, call)
        });
        match got {
            // Lanes and slots are below 2^16 and 64 (validated layout); generations are 15 bits.
            Ok(Ok((lane, slot, amount))) => {
                let generation = holder::generation(inner.owned[lane].claim.load(RELAXED));
                let word =
                    ((lane as u64) << 32) | (u64::from(generation) << 16) | (slot as u64 + 1);
                (word, amount)
            }
            Ok(Err(e)) => {
                *err = Some(e);
                (0, 0)
            }
            Err(_) => (0, 0),
        }
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
            if let Some(f) = &m.fast
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
            let c = match call.max_output_tokens {
                Some(out) => rate_tokens(book, &r, call.input_tokens, out, call.initiator)?,
                None => book.rate_max(&r, call.input_tokens, None, call.initiator)?,
            };
            Ok((c.0, slot_meta(book, &r)))
        }
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
    if let Some(t) = call.task {
        t.debit(amount)
            .map_err(|left| ReserveError::TaskExhausted {
                needed: Credits(amount),
                remaining: Credits(left),
            })?;
    }
    let refund_task = || {
        if let Some(t) = call.task {
            t.credit(amount);
        }
    };
    let class = call.class();
    let key = LaneKey {
        tenant: call.tenant.0,
        tier: call.tier,
        initiator: call.initiator,
    };
    let view = inner.view();
    let tokens = pack_tokens(
        call.input_tokens,
        call.max_output_tokens.unwrap_or_default(),
    );
    // Fast path: this thread's lane has the credits (usually in its local credits).
    let fail = match gl.lane(class, key) {
        Ok(lane) => {
            let lo = &inner.owned[lane];
            let mut o = lo.get(lane);
            if view.still_owns(&o) {
                view.settle_pending(&mut o);
                let r = view.reserve(&mut o, amount, tokens, meta, &mut |_| true);
                lo.put(&o);
                match r {
                    Ok(slot) => return Ok((lane, slot, amount)),
                    Err(f) => Some(f),
                }
            } else {
                // Reclaimed under us: never write to it again; claim a fresh lane.
                gl.lose(class);
                None
            }
        }
        Err(_) => None,
    };
    match reserve_slow(gl, &view, call, class, key, amount, tokens, meta, fail) {
        Ok((lane, slot)) => Ok((lane, slot, amount)),
        Err(e) => {
            refund_task();
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
#[allow(clippy::too_many_arguments)]
fn reserve_slow(
    gl: &mut GateLocal,
    view: &View<'_>,
    call: &Call<'_>,
    class: usize,
    key: LaneKey,
    amount: u64,
    tokens: u64,
    meta: u64,
    mut fail: Option<ReserveFail>,
) -> Result<(usize, usize), ReserveError> {
    let mut asked = false;
    let deadline_state = &mut None::<Instant>;
    let mut spins = 0u64;
    loop {
        let lane = gl.lane(class, key)?;
        let lo = &gl.gate.owned[lane];
        // The owner state is loaded here and saved before anything else can use it.
        let mut o = lo.get(lane);
        if !view.still_owns(&o) {
            gl.lose(class);
            fail = None;
            continue;
        }
        let step = match fail.take() {
            Some(f) => SlowStep::Failed(f),
            None => {
                view.settle_pending(&mut o);
                match view.reserve(&mut o, amount, tokens, meta, &mut |_| true) {
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
                if !wait_for_credits(view, lane, amount, &mut spins, deadline_state) {
                    return Err(ReserveError::Denied(deny(
                        gl, view, lane, call, amount, None,
                    )));
                }
            }
        }
    }
}

/// Spins, then sleeps in short steps, until `lane` has `amount` or the wait is over.
/// Returns `true` when it is worth trying again.
fn wait_for_credits(
    view: &View<'_>,
    lane: usize,
    amount: u64,
    spins: &mut u64,
    deadline: &mut Option<Instant>,
) -> bool {
    let max_spins = view.w[H_SPIN_ITERS].load(RELAXED).min(MAX_SPIN_ITERS);
    let avail = view.lw(lane, L_AVAIL);
    while *spins < max_spins {
        *spins += 1;
        if credits(avail.load(ACQ)) >= amount {
            return true;
        }
        spin_hint();
    }
    let wait = Duration::from_micros(view.w[H_WAIT_MICROS].load(RELAXED)).min(MAX_WAIT);
    let end = *deadline.get_or_insert_with(|| Instant::now() + wait);
    loop {
        let now = Instant::now();
        if now >= end {
            return credits(avail.load(ACQ)) >= amount;
        }
        std::thread::sleep((end - now).min(Duration::from_micros(50)));
        if credits(avail.load(ACQ)) >= amount {
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
    let recorded = view.lw(lane, L_DENY).load(ACQ);
    let limit: Option<LimitKind> = decode_limit(recorded & 0xFFFF_FFFF);
    let hint = match (left_ms, recorded >> 32) {
        (Some(ms), _) => ms.clamp(1, MAX_RETRY_MS),
        (None, 0) => DEFAULT_RETRY_MS,
        (None, ms) => ms.min(MAX_RETRY_MS),
    };
    // Lower tiers wait longer and spread wider, so a crowd does not retry in step and
    // interactive work gets the first chance at a refill.
    let tier = call.tier.as_index() as u64;
    let base = hint << tier;
    let jitter = gl.next_rand() % (base / 2 * (tier + 1) + 1);
    let denials = view.lw(lane, L_DENIALS);
    denials.store(denials.load(RELAXED).wrapping_add(1), REL);
    view.lw(lane, L_LAST_DENY).store(recorded, REL);
    Denial {
        limit,
        horizon: limit.and_then(|l| l.horizon()),
        retry_after: Duration::from_millis(base + jitter),
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
    /// reservation goes back; an overrun is charged and counted. Returns the charge.
    #[inline]
    pub fn commit(mut self, usage: Usage) -> Result<Credits, CommitError> {
        let tokens = pack_tokens(usage.input_tokens, usage.output_tokens);
        match self.finish(Settle::Usage(usage), tokens)? {
            (c, None) => Ok(Credits(c)),
            (_, Some(e)) => Err(CommitError::Rating(e)),
        }
    }

    /// Commits an already-rated actual cost.
    #[inline]
    pub fn commit_credits(mut self, actual: Credits) -> Result<Credits, CommitError> {
        self.finish(Settle::Credits(actual.0), 0)?;
        Ok(actual)
    }

    /// Cancels: everything goes back.
    pub fn cancel(mut self) {
        let _ = self.finish(Settle::Cancel, 0);
    }

    /// The actual cost of `how`. A usage is rated with the model handle's per-token prices
    /// while the price book is the one it was resolved in; otherwise with this thread's
    /// cached book or the gate's shared copy. A rating error charges the whole reservation
    /// and is reported.
    #[inline]
    fn actual(&self, how: Settle) -> (u64, Option<RatingError>) {
        match how {
            Settle::Cancel => (0, None),
            Settle::Credits(c) => (c, None),
            Settle::Usage(usage) => {
                let Some(m) = self.model else {
                    return (self.amount, None);
                };
                if let Some(f) = &m.fast
                    && let Some(c) =
                        f.rate(&self.gate.view(), usage.input_tokens, usage.output_tokens)
                {
                    return (c, None);
                }
                match rate_actual(self.gate, m, usage, self.initiator) {
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
    fn finish(
        &mut self,
        how: Settle,
        tokens: u64,
    ) -> Result<(u64, Option<RatingError>), CommitError> {
        if self.done {
            return Ok((0, None));
        }
        self.done = true;
        let cancel = matches!(how, Settle::Cancel);
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
                if !cancel {
                    view.sw(self.lane, self.slot, S_TOKENS)
                        .store(tokens, RELAXED);
                }
                // `settle` stops only for a test's step hook; ours never does.
                let _ = view.settle(&mut o, self.slot, actual, cancel, &mut |_| true);
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
            cancel,
        ) {
            return Err(CommitError::Reclaimed);
        }
        self.gate.settle_if_spare(self.lane);
        Ok((actual, err))
    }

    /// The task's side of the settle: the unused part back, an overrun taken.
    #[inline]
    fn task_settle(&self, actual: u64) {
        if let Some(t) = self.task {
            let paid = actual.min(self.amount);
            t.credit(self.amount - paid);
            if actual > paid {
                t.debit_saturating(actual - paid);
            }
        }
    }
}

/// How a reservation ends.
#[derive(Clone, Copy)]
enum Settle {
    Usage(Usage),
    Credits(u64),
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
    initiator: Initiator,
) -> Result<Credits, RatingError> {
    let input = RatingInput::new(usage).with_initiator(initiator);
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
            let _ = self.finish(Settle::Cancel, 0);
        }
    }
}
