//! The tollgate-client side of the benchmark: a region set up as the sidecar sets it up, and
//! an agent's reserve + commit of one call.
//!
//! The call is under 4 limits (the tenant's wallet, its per-minute and per-hour windows, the
//! agent instance's daily limit: the lane is carved from all four pools), a task budget and
//! the interactive tier, rated per token from the region's price book: 1,200 input tokens
//! and at most 800 output reserve 2,800 micro-credits; the commit of 1,180 in / 311 out
//! charges 1,802 and returns the rest.
//!
//! The sidecar's work (topping the lane up, draining the usage ring into the pools) is done
//! by [`Sidecar::serve`] between timed stretches of at most [`SERVE_EVERY`] calls, so every
//! timed call takes the normal path: credits in the lane and room in the ring (65,536
//! records), never the ring-full path.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tollgate_client::{
    AttachError, Call, CommitError, CreateError, Gate, LocalTask, MAX_LANE_CREDITS, Model,
    PoolSpec, Region, RegionConfig, ReserveError, SidecarError, TenantId, TenantSpec, UsageRecord,
};
use tollgate_core::rating::{ModelPrice, PriceBook, PriceBookError, PriceBookSpec, Pricing};
use tollgate_core::{Credits, Horizon, LimitKind, Tier, Usage};

/// Environment variable a child bench process finds the region path in.
pub const REGION_VAR: &str = "TOLLGATE_BENCH_REGION";
/// Model in the bench's price book.
pub const MODEL: &str = "bench-model";
/// Tenant the calls are for.
pub const TENANT: &str = "acme";
/// Prompt tokens and output maximum of the reserved call.
pub const INPUT_TOKENS: u64 = 1_200;
/// The most output tokens the call allows.
pub const MAX_OUTPUT_TOKENS: u64 = 800;
/// What the call actually used.
pub const USAGE: Usage = Usage::new(1_180, 311);
/// Timed calls between two rounds of sidecar work (well under the ring's capacity).
pub const SERVE_EVERY: u64 = 16_384;
/// Records per lane ring.
const RING: u32 = 65_536;
/// One top-up: half of what a lane can hold (hundreds of millions of calls).
const TOP_UP: u64 = MAX_LANE_CREDITS / 2;
/// Lanes are topped up when they fall below this.
const LOW_WATER: u64 = MAX_LANE_CREDITS / 4;

/// Why the bench could not set up or run a call.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The region could not be created.
    #[error("cannot create the bench region: {0}")]
    Create(#[from] CreateError),
    /// The region could not be attached.
    #[error("cannot attach the bench region: {0}")]
    Attach(#[from] AttachError),
    /// A sidecar operation failed.
    #[error("sidecar operation failed: {0}")]
    Sidecar(#[from] SidecarError),
    /// A reservation failed.
    #[error("reserve failed: {0}")]
    Reserve(#[from] ReserveError),
    /// A commit failed.
    #[error("commit failed: {0}")]
    Commit(#[from] CommitError),
    /// The bench price book is invalid.
    #[error("bench price book: {0}")]
    PriceBook(#[from] PriceBookError),
    /// The region directory could not be made.
    #[error("cannot make the region directory: {0}")]
    Io(#[from] std::io::Error),
    /// The lane never got credits.
    #[error("the agent's lane was never topped up")]
    NeverToppedUp,
}

/// The sidecar's side: owns the region (in tmpfs when `/dev/shm` exists) and serves it.
pub struct Sidecar {
    region: Region,
    dir: PathBuf,
    records: Vec<UsageRecord>,
}

impl std::fmt::Debug for Sidecar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sidecar")
            .field("path", &self.region.path())
            .finish_non_exhaustive()
    }
}

impl Sidecar {
    /// Creates and configures the bench region: 4 pools with plenty of credits, tenant
    /// `acme` subject to all four in every class, floors for the lower tiers, a price book.
    pub fn create() -> Result<Sidecar, BenchError> {
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = base.join(format!(
            "tollgate-bench-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        let region = Region::create(
            dir.join("region"),
            RegionConfig {
                pools: 4,
                tenants: 1,
                lanes: 16,
                slots_per_lane: 8,
                ring_capacity: RING,
                price_book_bytes: 4096,
                ..RegionConfig::default()
            },
        )?;
        let limits = [
            LimitKind::TenantWallet,
            LimitKind::TenantWindow(Horizon::Minute),
            LimitKind::TenantWindow(Horizon::Hour),
            LimitKind::Agent(Horizon::Day),
        ];
        let plenty = u64::MAX / 16;
        for (p, limit) in limits.into_iter().enumerate() {
            let floors = [Credits(0), Credits(plenty / 8), Credits(plenty / 4)];
            region.configure_pool(p, &PoolSpec { limit, floors })?;
            region.grant(p, Credits(plenty))?;
        }
        let all = vec![0, 1, 2, 3];
        region.configure_tenant(
            0,
            &TenantSpec {
                name: TENANT.into(),
                classes: std::array::from_fn(|_| [all.clone(), all.clone()]),
            },
        )?;
        let book = PriceBook::new(PriceBookSpec {
            version: 1,
            request_price: Credits::ZERO,
            default_max_output_tokens: 1_000,
            models: vec![ModelPrice {
                name: MODEL.into(),
                pricing: Pricing::PerToken {
                    input_per_million: Credits::from_credits(1).unwrap_or(Credits(1_000_000)),
                    output_per_million: Credits::from_credits(2).unwrap_or(Credits(2_000_000)),
                },
                max_output_tokens: None,
            }],
        })?;
        region.publish_price_book(&book)?;
        Ok(Sidecar {
            region,
            dir,
            records: Vec::new(),
        })
    }

    /// The region file.
    pub fn path(&self) -> &Path {
        self.region.path()
    }

    /// One round of sidecar work: top up lanes that asked or run low, drain every ring.
    /// Returns the number of usage records drained.
    pub fn serve(&mut self) -> Result<u64, BenchError> {
        for (lane, _) in self.region.demands() {
            self.top_up(lane)?;
        }
        for info in self.region.lanes() {
            if !info.reclaiming && info.key.is_some() && info.available.0 < LOW_WATER {
                self.top_up(info.lane)?;
            }
        }
        self.records.clear();
        let st = self.region.drain_all(&mut self.records)?;
        Ok(st.records)
    }

    fn top_up(&self, lane: usize) -> Result<(), BenchError> {
        match self.region.top_up(lane, Credits(TOP_UP)) {
            // Full enough already (local credits count against the lane's maximum).
            Ok(()) | Err(SidecarError::Overflow(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Records lost to a full ring over every lane (should stay 0: the bench drains).
    pub fn lost_records(&self) -> u64 {
        self.region.lanes().iter().map(|l| l.lost_records).sum()
    }

    /// Reclaims the lanes of exited agent processes; returns how many.
    pub fn reclaim_dead(&self) -> Result<usize, BenchError> {
        Ok(self.region.reclaim_dead()?.len())
    }

    /// Checks the conservation equation (for the end of a run).
    pub fn audit(&self) -> Result<(), String> {
        self.region.audit().check()
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        // Best effort: a leftover file in tmpfs changes no figure.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An agent process's handle: an attached gate and the tenant and model resolved once.
/// Each agent thread opens its own [`LocalTask`] (a task is one agent loop's budget).
pub struct Agent {
    gate: Gate,
    tenant: TenantId,
    model: Model,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// Attaches to the region at `path` and resolves names once, as an agent does.
    pub fn attach(path: &Path) -> Result<Agent, BenchError> {
        let gate = Gate::attach(path)?;
        let tenant = gate.tenant(TENANT)?;
        let model = gate.model(MODEL)?;
        Ok(Agent {
            gate,
            tenant,
            model,
        })
    }

    /// A task whose budget never runs out during a bench.
    pub fn open_task(&self) -> LocalTask {
        LocalTask::new(Credits(u64::MAX / 4))
    }

    /// The call: model-rated, 4 limits (through the lane), the task, the interactive tier.
    #[inline]
    pub fn call<'a>(&'a self, task: &'a LocalTask) -> Call<'a> {
        Call::model(&self.model)
            .tenant(self.tenant)
            .input_tokens(INPUT_TOKENS)
            .max_output_tokens(MAX_OUTPUT_TOKENS)
            .tier(Tier::Interactive)
            .local_task(task)
    }

    /// Reserve, then commit the actual usage: what the bench times.
    #[inline]
    pub fn reserve_commit(&self, task: &LocalTask) -> Result<Credits, BenchError> {
        let hold = self.gate.reserve(&self.call(task))?;
        Ok(hold.commit(USAGE)?)
    }

    /// The same with a pre-rated call (no price-book rating on the hot path).
    #[inline]
    pub fn reserve_commit_fixed(&self, task: &LocalTask) -> Result<Credits, BenchError> {
        let call = Call::fixed(Credits(2_800))
            .tenant(self.tenant)
            .tier(Tier::Interactive)
            .local_task(task);
        let hold = self.gate.reserve(&call)?;
        Ok(hold.commit_credits(Credits(1_802))?)
    }

    /// Claims this thread's lane and waits until it has credits: the first reserve finds it
    /// dry and asks the sidecar; `serve` is called between attempts (the sidecar's turn).
    pub fn prime(
        &self,
        task: &LocalTask,
        mut serve: impl FnMut() -> Result<(), BenchError>,
    ) -> Result<(), BenchError> {
        for _ in 0..1_000 {
            match self.reserve_commit(task) {
                Ok(_) => return Ok(()),
                Err(BenchError::Reserve(ReserveError::Denied(_))) => serve()?,
                Err(e) => return Err(e),
            }
        }
        Err(BenchError::NeverToppedUp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_charged_and_recorded_and_the_region_balances() {
        let mut sc = Sidecar::create().unwrap();
        let agent = Agent::attach(sc.path()).unwrap();
        let task = agent.open_task();
        agent.prime(&task, || sc.serve().map(|_| ())).unwrap();
        let mut drained = 0;
        for round in 0..3 {
            for _ in 0..SERVE_EVERY {
                assert_eq!(agent.reserve_commit(&task).unwrap(), Credits(1_802));
            }
            drained += sc.serve().unwrap();
            assert_eq!(sc.lost_records(), 0, "round {round}");
        }
        // Priming made one call too.
        assert_eq!(drained, 3 * SERVE_EVERY + 1);
        sc.audit().unwrap();
    }

    #[test]
    fn threads_in_rounds_lose_no_record() {
        let sc = std::sync::Mutex::new(Sidecar::create().unwrap());
        let path = sc.lock().unwrap().path().to_owned();
        let agent = &Agent::attach(&path).unwrap();
        let serve = || {
            sc.lock().unwrap().serve().unwrap();
        };
        let t = crate::scaling::threads(
            2,
            3,
            2 * SERVE_EVERY,
            |_| {
                let task = agent.open_task();
                agent
                    .prime(&task, || {
                        serve();
                        Ok(())
                    })
                    .unwrap();
                move || {
                    agent.reserve_commit(&task).unwrap();
                }
            },
            serve,
        );
        assert_eq!(t.total_ops(), 12 * SERVE_EVERY);
        let sc = sc.into_inner().unwrap();
        assert_eq!(sc.lost_records(), 0);
        sc.audit().unwrap();
    }
}
