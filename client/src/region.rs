//! The sidecar's handle on a region: create it, reopen it after a restart, configure
//! tenants, pools and limits, move credits (grant, top-up, revoke, return), drain usage,
//! find and reclaim dead processes, audit the conservation equation, publish prices.
//!
//! All methods take `&self`; the sidecar-side writes are serialized by an internal mutex
//! (the protocol needs a single sidecar writer), so a `Region` can be shared by the
//! sidecar's tasks. None of this is on the agents' hot path.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tollgate_core::{Credits, LimitKind, PriceBook, Tier};

use crate::audit::{Audit, LaneBalance, PoolBalance, PoolCounters};
use crate::carve::Revoked;
use crate::codes::{LaneKey, TaskRef, decode_limit, encode_limit, pack_pools};
use crate::error::{AttachError, CreateError, SidecarError};
use crate::holder::{self, HolderId, Probe};
use crate::journal::JournalRecovery;
use crate::lane::{View, credits};
use crate::layout::*;
use crate::mapping::{Guard, Mem};
use crate::process::ProcessId;
use crate::reclaim::ReclaimReport;
use crate::ring::{DrainStats, UsageRecord};
use crate::sync::{ACQ, REL, RELAXED};
use crate::tasks::{TaskCalls, TaskEntry, TaskStatus};

/// Default spins before an agent whose lane ran dry starts sleeping.
pub const DEFAULT_SPIN_ITERS: u64 = 200;
/// Default longest wait (microseconds) of an agent whose lane ran dry, before it denies.
pub const DEFAULT_WAIT_MICROS: u64 = 500;

/// What a pool limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSpec {
    /// The limit this pool enforces (named in denials).
    pub limit: LimitKind,
    /// Credits each tier must leave in the pool: a top-up for a lane of tier `t` never
    /// takes the pool's available credits below `floors[t]`. Interactive is usually 0.
    pub floors: [Credits; Tier::COUNT],
}

/// A tenant served by this region and, per (tier, initiator), the pools its lanes are
/// carved from (every limit a call of that class is subject to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantSpec {
    /// Tenant name (at most 48 bytes), as agents name it in calls.
    pub name: String,
    /// `classes[tier][initiator]`: pool indices, at most [`MAX_LIMITS_PER_LANE`];
    /// empty means calls of that class are refused.
    pub classes: [[Vec<usize>; 2]; Tier::COUNT],
}

/// A lane as the sidecar sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaneInfo {
    /// Lane index.
    pub lane: usize,
    /// The owning (or reclaimed-from) agent process.
    pub holder: Option<HolderId>,
    /// `true` while the sidecar is reclaiming it.
    pub reclaiming: bool,
    /// Tenant, tier, initiator (once the agent has written it).
    pub key: Option<LaneKey>,
    /// Credits in `avail`.
    pub available: Credits,
    /// Credits held by outstanding reservations.
    pub held: Credits,
    /// Credits the agent asked for when it ran dry (0 if none pending).
    pub demand: Credits,
    /// Denials the agent reported.
    pub denials: u64,
    /// The limit named in the agent's last denial.
    pub last_denial: Option<LimitKind>,
    /// Records lost to a full ring (detail only; the amounts are in the totals).
    pub lost_records: u64,
    /// Ever topped up.
    pub topped_up: Credits,
    /// Consumed, paid from the lane.
    pub consumed: Credits,
    /// Consumed past reservations.
    pub overrun: Credits,
}

/// How a region was destroyed under its sidecar (see [`Region::damage`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegionDamage {
    /// The file was truncated while mapped.
    #[error("region file truncated to {actual} bytes (expected {expected})")]
    Truncated {
        /// The region's size.
        expected: u64,
        /// The file's size now.
        actual: u64,
    },
    /// The file was removed from its path.
    #[error("region file removed from its path")]
    Removed,
    /// Another file was put at its path.
    #[error("region file replaced by another file at its path")]
    Replaced,
    /// The header no longer validates (magic, version, size or checksum overwritten).
    #[error("region header overwritten: {0}")]
    Header(String),
    /// The file cannot be examined.
    #[error("region file cannot be examined: {0}")]
    Unreadable(String),
}

/// An agent process that has claimed lanes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    /// The process, as its lane claims name it.
    pub holder: HolderId,
    /// The pid it wrote into its holder file, in its own PID namespace (for people: it
    /// may mean nothing in the sidecar's namespace).
    pub pid: Option<u32>,
    /// Whether it is running: it still holds its liveness lock (see [`crate::holder`]).
    pub alive: bool,
    /// Its lanes.
    pub lanes: Vec<usize>,
}

/// The sidecar's handle on a region (see the module docs).
pub struct Region {
    mem: Mem,
    layout: Layout,
    /// The file mapped (kept open to notice a truncation, and to tell it from a file
    /// put in its place).
    file: File,
    path: PathBuf,
    /// Where agents keep their liveness locks.
    holders: PathBuf,
    writer: Mutex<()>,
    recovery: JournalRecovery,
}

fn io_err(e: std::io::Error, path: &Path) -> AttachError {
    if e.kind() == std::io::ErrorKind::NotFound {
        AttachError::NotFound {
            path: path.display().to_string(),
        }
    } else {
        AttachError::Io(e)
    }
}

/// Opens and maps a region file read-write and validates its header (agents' mappings).
pub(crate) fn open_and_validate(path: &Path) -> Result<(Mem, Layout), AttachError> {
    let (mem, layout, _) = open_mapped(path, Guard::None)?;
    Ok((mem, layout))
}

/// Opens, maps (with `guard`) and validates a region file; also returns the open file.
fn open_mapped(path: &Path, guard: Guard) -> Result<(Mem, Layout, File), AttachError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| io_err(e, path))?;
    let len = file.metadata()?.len();
    let header = (HEADER_WORDS * WORD) as u64;
    if len < header {
        // Never map less than a header: nothing past the file end is ever touched.
        return Err(AttachError::Truncated {
            expected: header,
            actual: len,
        });
    }
    let mem = Mem::map_file(&file, guard)?;
    if mem.len_bytes() < header {
        return Err(AttachError::Truncated {
            expected: header,
            actual: mem.len_bytes(),
        });
    }
    let layout = validate_header(mem.words(), len)?;
    Ok((mem, layout, file))
}

impl Region {
    /// Creates a region file at `path`: sized once, every page written (so a full tmpfs
    /// fails here, not with SIGBUS later), initialised, the version word stored last, and
    /// then renamed into place (so agents never see a half-built file at `path`).
    pub fn create(path: impl AsRef<Path>, config: RegionConfig) -> Result<Region, CreateError> {
        let path = path.as_ref();
        let layout = Layout::from_config(&config).map_err(CreateError::Config)?;
        let name = path
            .file_name()
            .ok_or_else(|| CreateError::Config(format!("{} is not a file path", path.display())))?;
        let tmp = path.with_file_name(format!(
            ".{}.creating.{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        let holders = holder::create_holders_dir(path)?;
        let result = Self::build(&tmp, path, layout, holders);
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    fn build(
        tmp: &Path,
        path: &Path,
        layout: Layout,
        holders: PathBuf,
    ) -> Result<Region, CreateError> {
        let _ = std::fs::remove_file(tmp);
        let mut file: File = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o660)
            .open(tmp)?;
        std::fs::set_permissions(tmp, std::fs::Permissions::from_mode(0o660))?;
        let zeros = vec![0u8; 1 << 16];
        let mut left = layout.size_bytes();
        while left > 0 {
            let n = left.min(zeros.len());
            file.write_all(&zeros[..n])?;
            left -= n;
        }
        let mem = Mem::map_file(&file, Guard::Truncation)?;
        let w = mem.words();
        if w.len() != layout.total_words {
            return Err(CreateError::Io(std::io::Error::other(
                "mapped size differs from the written size",
            )));
        }
        write_static_header(w, &layout);
        let me = ProcessId::current()?;
        w[H_OWNER_PID].store(u64::from(me.pid), RELAXED);
        w[H_OWNER_START].store(me.start_ticks, RELAXED);
        w[H_OWNER_EPOCH].store(1, RELAXED);
        w[H_SPIN_ITERS].store(DEFAULT_SPIN_ITERS, RELAXED);
        w[H_WAIT_MICROS].store(DEFAULT_WAIT_MICROS, RELAXED);
        // Last, with Release: the region is complete.
        w[H_VERSION].store(LAYOUT_VERSION, REL);
        std::fs::rename(tmp, path)?;
        Ok(Region {
            mem,
            layout,
            file,
            path: path.to_owned(),
            holders,
            writer: Mutex::new(()),
            recovery: JournalRecovery::Clean,
        })
    }

    /// Reopens an existing region as its owner (a restarted sidecar): validates it,
    /// finishes or rolls back the update the previous owner left in flight (see
    /// [`Region::recovery`]), and records this process as the owner.
    pub fn open_owner(path: impl AsRef<Path>) -> Result<Region, AttachError> {
        let path = path.as_ref();
        let (mem, layout, file) = open_mapped(path, Guard::Truncation)?;
        let holders = holder::create_holders_dir(path)?;
        let view = View {
            w: mem.words(),
            l: &layout,
        };
        let recovery = view.journal_recover().map_err(|_| AttachError::Corrupt {
            what: "sidecar journal",
        })?;
        let me = ProcessId::current()?;
        let w = mem.words();
        w[H_OWNER_PID].store(u64::from(me.pid), RELAXED);
        w[H_OWNER_START].store(me.start_ticks, RELAXED);
        w[H_OWNER_EPOCH].fetch_add(1, REL);
        Ok(Region {
            mem,
            layout,
            file,
            path: path.to_owned(),
            holders,
            writer: Mutex::new(()),
            recovery,
        })
    }

    /// Whether the region was destroyed under the sidecar by a process that maps it: its
    /// file truncated (survived through the truncation guard, see
    /// [`crate::install_truncation_guard`]), removed or replaced at its path, or its header
    /// overwritten. A damaged region's words are not to be trusted any more: the sidecar
    /// should stop draining it, report not ready and create a new one. Cheap (two `stat`s
    /// and a header check): call it every tick.
    pub fn damage(&self) -> Option<RegionDamage> {
        let expected = self.layout.size_bytes() as u64;
        if self.mem.truncation_faults() > 0 {
            let actual = self.file.metadata().map_or(0, |m| m.len());
            return Some(RegionDamage::Truncated { expected, actual });
        }
        match self.file.metadata() {
            Ok(m) if m.len() < expected => {
                return Some(RegionDamage::Truncated {
                    expected,
                    actual: m.len(),
                });
            }
            Ok(_) => {}
            Err(e) => return Some(RegionDamage::Unreadable(e.to_string())),
        }
        let mine = self.file.metadata().map(|m| (m.dev(), m.ino())).ok();
        match std::fs::metadata(&self.path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Some(RegionDamage::Removed);
            }
            Ok(m) if Some((m.dev(), m.ino())) != mine => return Some(RegionDamage::Replaced),
            _ => {}
        }
        match validate_header(self.mem.words(), expected) {
            Ok(l) if l == self.layout => None,
            Ok(_) => Some(RegionDamage::Header(
                "the header describes another layout".into(),
            )),
            Err(e) => Some(RegionDamage::Header(e.to_string())),
        }
    }

    /// What reopening found in the journal (always `Clean` for a new region).
    pub fn recovery(&self) -> JournalRecovery {
        self.recovery
    }

    /// The file this region lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The sizes the region was created with.
    pub fn config(&self) -> RegionConfig {
        let l = &self.layout;
        RegionConfig {
            pools: l.pools as u32,
            tenants: l.tenants as u32,
            lanes: l.lanes as u32,
            slots_per_lane: l.slots as u32,
            ring_capacity: l.ring as u32,
            price_book_bytes: (l.book_words * WORD) as u32,
            names: l.names as u32,
            tasks: l.tasks as u32,
        }
    }

    /// The owner recorded in the header, and how many times the region was reopened.
    pub fn owner(&self) -> (ProcessId, u64) {
        let w = self.mem.words();
        (
            ProcessId {
                pid: w[H_OWNER_PID].load(ACQ) as u32,
                start_ticks: w[H_OWNER_START].load(ACQ),
            },
            w[H_OWNER_EPOCH].load(ACQ),
        )
    }

    pub(crate) fn view(&self) -> View<'_> {
        View {
            w: self.mem.words(),
            l: &self.layout,
        }
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        // A panic while holding the lock leaves the journal to say what happened.
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check(&self, what: &'static str, index: usize, count: usize) -> Result<(), SidecarError> {
        if index < count {
            Ok(())
        } else {
            Err(SidecarError::OutOfRange { what, index, count })
        }
    }

    /// Updates the sidecar heartbeat word (unix milliseconds).
    pub fn heartbeat(&self, unix_millis: u64) {
        self.mem.words()[H_HEARTBEAT].store(unix_millis, REL);
    }

    /// How long an agent whose lane ran dry spins, then sleeps, before it denies (agents
    /// cap these at 100,000 spins and 10 ms whatever the region says).
    pub fn set_slow_path(&self, spin_iters: u64, max_wait: Duration) {
        let w = self.mem.words();
        w[H_SPIN_ITERS].store(spin_iters, REL);
        w[H_WAIT_MICROS].store(max_wait.as_micros().min(u128::from(u64::MAX)) as u64, REL);
    }

    // ---- configuration ----

    /// Sets what pool `pool` limits and its tier floors.
    pub fn configure_pool(&self, pool: usize, spec: &PoolSpec) -> Result<(), SidecarError> {
        self.check("pool", pool, self.layout.pools)?;
        let code = encode_limit(spec.limit)
            .ok_or_else(|| SidecarError::Config(format!("unsupported limit {:?}", spec.limit)))?;
        let _g = self.lock();
        let v = self.view();
        v.pw(pool, P_LIMIT).store(code, REL);
        for (t, f) in spec.floors.iter().enumerate() {
            v.pw(pool, P_FLOOR0 + t).store(f.0, REL);
        }
        Ok(())
    }

    /// Sets tenant `tenant`'s name and lane classes. Lanes already carved keep the pools
    /// they were carved from until they are revoked or reclaimed.
    pub fn configure_tenant(&self, tenant: usize, spec: &TenantSpec) -> Result<(), SidecarError> {
        self.check("tenant", tenant, self.layout.tenants)?;
        let name = spec.name.as_bytes();
        if name.is_empty() || name.len() > MAX_TENANT_NAME {
            return Err(SidecarError::Config(format!(
                "tenant name must be 1..={MAX_TENANT_NAME} bytes: {:?}",
                spec.name
            )));
        }
        let mut classes = [0u64; CLASSES];
        for (t, per_init) in spec.classes.iter().enumerate() {
            for (i, pools) in per_init.iter().enumerate() {
                for &p in pools {
                    self.check("pool", p, self.layout.pools)?;
                }
                classes[t * 2 + i] = if pools.is_empty() {
                    0
                } else {
                    pack_pools(pools).ok_or_else(|| {
                        SidecarError::Config(format!(
                            "a lane class takes at most {MAX_LIMITS_PER_LANE} distinct pools"
                        ))
                    })?
                };
            }
        }
        let _g = self.lock();
        let v = self.view();
        let base = self.layout.tenant(tenant);
        let generation = v.w[base + T_STATE].load(ACQ);
        // Unpublish while rewriting so agents never read a half-written name.
        v.w[base + T_STATE].store(0, REL);
        let mut padded = [0u8; MAX_TENANT_NAME];
        padded[..name.len()].copy_from_slice(name);
        for (i, chunk) in padded.chunks(WORD).enumerate() {
            let mut b = [0u8; WORD];
            b.copy_from_slice(chunk);
            v.w[base + T_NAME + i].store(u64::from_le_bytes(b), REL);
        }
        v.w[base + T_NAME_LEN].store(name.len() as u64, REL);
        for (c, w) in classes.iter().enumerate() {
            v.w[base + T_CLASS0 + c].store(*w, REL);
        }
        v.w[base + T_STATE].store(generation.wrapping_add(1).max(1), REL);
        Ok(())
    }

    /// The index of the tenant named `name`.
    pub fn tenant_index(&self, name: &str) -> Option<usize> {
        find_tenant(&self.view(), name)
    }

    // ---- money ----

    /// Credits leased from the authority arrive in `pool`.
    pub fn grant(&self, pool: usize, amount: Credits) -> Result<(), SidecarError> {
        self.check("pool", pool, self.layout.pools)?;
        let _g = self.lock();
        self.view().grant(pool, amount.0)
    }

    /// Gives up to `amount` uncarved credits of `pool` back (a returned or shrunk lease).
    pub fn give_back(&self, pool: usize, amount: Credits) -> Result<Credits, SidecarError> {
        self.check("pool", pool, self.layout.pools)?;
        let _g = self.lock();
        self.view().give_back(pool, amount.0).map(Credits)
    }

    /// Tops `lane` up by `amount`, carved from every pool its class is subject to (each
    /// kept above the lane tier's floor). On refusal the binding limit is recorded in the
    /// lane, so the agent's denial names it.
    pub fn top_up(&self, lane: usize, amount: Credits) -> Result<(), SidecarError> {
        self.check("lane", lane, self.layout.lanes)?;
        let _g = self.lock();
        let v = self.view();
        v.top_up(lane, amount.0, &mut |_| true)?;
        v.lw(lane, L_DEMAND).store(0, REL);
        v.lw(lane, L_FLUSH_REQ).store(0, REL);
        Ok(())
    }

    /// Takes up to `amount` back from `lane`'s available credits into its pools (an idle
    /// lane, or a lowered cap). Held credits are not touched. Returns what was taken.
    /// If `avail` had less than `amount`, the lane is asked to flush its local credits
    /// back to `avail` at its next reserve (revoke again then); a top-up cancels the ask.
    pub fn revoke(&self, lane: usize, amount: Credits) -> Result<Credits, SidecarError> {
        self.check("lane", lane, self.layout.lanes)?;
        let _g = self.lock();
        let v = self.view();
        if v.lw(lane, L_POOLS).load(ACQ) == 0 {
            return Ok(Credits::ZERO);
        }
        let got = v.revoke(lane, amount.0, Revoked::Revoke, &mut |_| true)?;
        let short = got < amount.0 && v.lw(lane, L_LOCAL).load(ACQ) > 0;
        v.lw(lane, L_FLUSH_REQ).store(u64::from(short), REL);
        Ok(Credits(got))
    }

    /// Records that `lane`'s binding limit cannot be refilled before `until`: until then a
    /// dry lane denies at once (no bounded wait, no demand raised), naming `limit` and the
    /// time left as its retry hint. A later top-up or [`Region::clear_denial`] lifts it.
    pub fn record_denial_until(
        &self,
        lane: usize,
        limit: LimitKind,
        until: std::time::SystemTime,
    ) -> Result<(), SidecarError> {
        let until_ms = until
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis().min(u128::from(u64::MAX)) as u64);
        let left = until
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default();
        self.record_denial(lane, limit, left)?;
        self.view().lw(lane, L_DENY_UNTIL).store(until_ms, REL);
        Ok(())
    }

    /// Lifts an immediate denial (a cap was raised, a lease came): dry lanes wait for a
    /// top-up again.
    pub fn clear_denial(&self, lane: usize) -> Result<(), SidecarError> {
        self.check("lane", lane, self.layout.lanes)?;
        let v = self.view();
        v.lw(lane, L_DENY_UNTIL).store(0, REL);
        // The limit stays named; its time to the deadline is no hint for a refill.
        let recorded = v.lw(lane, L_DENY).load(ACQ);
        v.lw(lane, L_DENY).store(recorded & 0xFFFF_FFFF, REL);
        Ok(())
    }

    /// Fixes the pools `lane` is carved from (its class's, its agent's quotas, its task's
    /// budget), before its first top-up; a lane whose pools are fixed keeps them (an equal
    /// list is accepted, another refused). Without it, the first top-up fixes the pools of
    /// the lane's class in its tenant's record.
    pub fn set_lane_pools(&self, lane: usize, pools: &[usize]) -> Result<(), SidecarError> {
        self.check("lane", lane, self.layout.lanes)?;
        let _g = self.lock();
        let v = self.view();
        if v.lw(lane, L_POOLS).load(ACQ) != 0 {
            let now = v.lane_pools(lane)?;
            return if now == pools {
                Ok(())
            } else {
                Err(SidecarError::Config(format!(
                    "lane {lane} is carved from pools {now:?} already"
                )))
            };
        }
        v.fix_lane_pools(lane, pools)
    }

    /// The name of name-table id `id` (agent and feature names in records and lane keys):
    /// `None` for 0 (unnamed) and for anything that is not a published name. Lossily
    /// decoded: the table is written by agents.
    pub fn name(&self, id: u16) -> Option<String> {
        self.view()
            .name_bytes(id)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    /// `(entries in use, capacity)` of the name table.
    pub fn names_used(&self) -> (usize, usize) {
        self.view().names_used()
    }

    /// Every open task in the task table.
    pub fn tasks(&self) -> Vec<TaskEntry> {
        let v = self.view();
        (0..self.layout.tasks)
            .filter_map(|slot| v.task_entry(slot))
            .collect()
    }

    /// The open task `t` names, if it still does.
    pub fn task(&self, t: TaskRef) -> Option<TaskEntry> {
        self.view()
            .task_entry(usize::from(t.slot))
            .filter(|e| e.task == t)
    }

    /// Records the sidecar's status of task `t` (agents read it when a task lane runs dry).
    pub fn set_task_status(&self, t: TaskRef, status: TaskStatus) {
        self.view().set_task_status(t, status);
    }

    /// Frees task `t`'s entry for reuse (under a new generation). Refused (`false`) while a
    /// lane is keyed by it.
    pub fn free_task(&self, t: TaskRef) -> bool {
        let _g = self.lock();
        let v = self.view();
        let keyed = (0..self.layout.lanes).any(|lane| {
            LaneKey::decode(v.lw(lane, L_KEY).load(ACQ)).and_then(|k| k.task) == Some(t)
        });
        !keyed && v.free_task(t)
    }

    /// Records the pool task `t`'s budget is leased into (agents read what it holds).
    pub fn set_task_pool(&self, t: TaskRef, pool: usize) -> Result<(), SidecarError> {
        self.check("pool", pool, self.layout.pools)?;
        self.view().set_task_pool(t, pool);
        Ok(())
    }

    /// Gives `lane`, a lane of task `t`, `n` more calls (its share of the task's
    /// `max_calls`); agents' reservations on the lane stop when they have made them all.
    pub fn give_calls(&self, lane: usize, t: TaskRef, n: u64) -> Result<(), SidecarError> {
        self.check("lane", lane, self.layout.lanes)?;
        let _g = self.lock();
        self.view().give_calls(lane, t, n)
    }

    /// `(made, given to lanes)` of a lane's calls (a task lane's).
    pub fn lane_calls(&self, lane: usize) -> Result<(u64, u64), SidecarError> {
        self.check("lane", lane, self.layout.lanes)?;
        let v = self.view();
        Ok((
            v.lw(lane, L_CALLS).load(ACQ),
            v.lw(lane, L_CALLS_LIMIT).load(ACQ),
        ))
    }

    /// Task `t`'s calls: given to lanes, made, and their balance.
    pub fn task_calls(&self, t: TaskRef) -> TaskCalls {
        let _g = self.lock();
        self.view().task_calls(t)
    }

    /// Records why `lane` cannot be topped up (the binding limit) and when to retry;
    /// the agent reports it in its next denial.
    pub fn record_denial(
        &self,
        lane: usize,
        limit: LimitKind,
        retry_after: Duration,
    ) -> Result<(), SidecarError> {
        self.check("lane", lane, self.layout.lanes)?;
        let code = encode_limit(limit)
            .ok_or_else(|| SidecarError::Config(format!("unsupported limit {limit:?}")))?;
        let ms = retry_after.as_millis().min(u128::from(u32::MAX)) as u64;
        self.view().lw(lane, L_DENY).store(code | (ms << 32), REL);
        Ok(())
    }

    /// Copies out `lane`'s usage records and moves its consumption into the pools
    /// (harvest). The records are detail; the harvested totals are the money.
    pub fn drain(
        &self,
        lane: usize,
        out: &mut Vec<UsageRecord>,
    ) -> Result<DrainStats, SidecarError> {
        self.check("lane", lane, self.layout.lanes)?;
        let _g = self.lock();
        let v = self.view();
        let st = v.drain_ring(lane, out);
        if v.lw(lane, L_POOLS).load(ACQ) != 0 {
            v.harvest(lane, &mut |_| true)?;
        }
        Ok(st)
    }

    /// Like [`Region::drain`] (copies out `lane`'s records and harvests), but leaves the
    /// records' ring space in use. Also returns the ring position just past the records
    /// (the next record's `seq` is that position + 1): [`Region::release`] frees their space
    /// once they are durably stored elsewhere, so a consumer that dies in between finds them
    /// again; it skips the `seq`s it had already stored.
    pub fn peek(
        &self,
        lane: usize,
        out: &mut Vec<UsageRecord>,
    ) -> Result<(DrainStats, u64), SidecarError> {
        self.check("lane", lane, self.layout.lanes)?;
        let _g = self.lock();
        let v = self.view();
        let (st, end) = v.peek_ring(lane, out);
        if v.lw(lane, L_POOLS).load(ACQ) != 0 {
            v.harvest(lane, &mut |_| true)?;
        }
        Ok((st, end))
    }

    /// Frees `lane`'s ring space up to ring position `upto` (one [`Region::peek`] returned).
    /// Releasing a position already released (or an older one) is a no-op; a position past
    /// the ring's head is refused.
    pub fn release(&self, lane: usize, upto: u64) -> Result<(), SidecarError> {
        self.check("lane", lane, self.layout.lanes)?;
        let _g = self.lock();
        let v = self.view();
        let tail = v.lw(lane, L_RING_TAIL).load(RELAXED);
        // Behind the tail (already released): nothing to do. Positions only grow, so
        // "behind" is a wrapped difference in the upper half.
        if upto.wrapping_sub(tail) > (1u64 << 63) {
            return Ok(());
        }
        if v.release_ring(lane, upto) {
            Ok(())
        } else {
            Err(SidecarError::Config(format!(
                "ring position {upto} of lane {lane} is past its head; release only what a peek returned"
            )))
        }
    }

    /// Drains every lane (see [`Region::drain`]).
    pub fn drain_all(&self, out: &mut Vec<UsageRecord>) -> Result<DrainStats, SidecarError> {
        let mut total = DrainStats::default();
        for lane in 0..self.layout.lanes {
            let v = self.view();
            // Never topped up and nothing in its ring (a lane with only zero-credit records,
            // a task's completion, has some).
            if v.lw(lane, L_TOPPED_UP).load(ACQ) == 0
                && v.lw(lane, L_RING_HEAD).load(ACQ) == v.lw(lane, L_RING_TAIL).load(ACQ)
            {
                continue;
            }
            let st = self.drain(lane, out)?;
            // Counts come from words agents can scribble: saturate, never overflow.
            total.records = total.records.saturating_add(st.records);
            total.skipped = total.skipped.saturating_add(st.skipped);
            total.lost_total = total.lost_total.saturating_add(st.lost_total);
        }
        Ok(total)
    }

    /// One pool's counters with the lanes' side of its equation (one pass over the lane
    /// headers; see [`Audit`] for every pool at once).
    pub fn pool(&self, pool: usize) -> Result<PoolBalance, SidecarError> {
        self.check("pool", pool, self.layout.pools)?;
        Ok(self.view().pool_balance_of(pool))
    }

    /// One pool's own counters: a few words, for reads on every tick (the sidecar's
    /// control loop reads each pool many times a tick).
    pub fn pool_counters(&self, pool: usize) -> Result<PoolCounters, SidecarError> {
        self.check("pool", pool, self.layout.pools)?;
        Ok(self.view().pool_counters(pool))
    }

    /// The pools each lane ever topped up is carved from, by lane: what the sidecar
    /// keeps to attribute credits, read from the lane headers alone.
    pub fn lane_pool_lists(&self) -> Vec<(usize, Vec<usize>)> {
        let v = self.view();
        (0..self.layout.lanes)
            .filter(|&l| v.lw(l, L_TOPPED_UP).load(ACQ) != 0)
            .filter_map(|l| {
                let pools = v.lane_pools(l).unwrap_or_default();
                (!pools.is_empty()).then_some((l, pools))
            })
            .collect()
    }

    /// One lane's side of the equation (its slots included), whether it is in use or not.
    pub fn lane_balance(&self, lane: usize) -> Result<LaneBalance, SidecarError> {
        self.check("lane", lane, self.layout.lanes)?;
        Ok(self.view().lane_balance(lane))
    }

    /// Every counter of the conservation equation, checked by [`Audit::check`].
    pub fn audit(&self) -> Audit {
        let _g = self.lock();
        self.view().audit()
    }

    // ---- lanes and processes ----

    /// Every lane in use (claimed, or being reclaimed).
    pub fn lanes(&self) -> Vec<LaneInfo> {
        (0..self.layout.lanes)
            .filter_map(|lane| self.lane_info(lane))
            .collect()
    }

    /// Lane `lane`, if it is in use (claimed, or being reclaimed); `None` for a free lane
    /// or an index past the region's lanes.
    pub fn lane_info(&self, lane: usize) -> Option<LaneInfo> {
        if lane >= self.layout.lanes {
            return None;
        }
        let v = self.view();
        let claim = v.lw(lane, L_CLAIM).load(ACQ);
        let holder = holder::holder_of(claim)?;
        let b = v.lane_balance(lane);
        let g = |f| v.lw(lane, f).load(ACQ);
        Some(LaneInfo {
            lane,
            holder: Some(holder),
            reclaiming: !holder::is_owned(claim),
            key: LaneKey::decode(g(L_KEY)),
            available: Credits(credits(g(L_AVAIL))),
            held: Credits(b.held),
            demand: Credits(g(L_DEMAND)),
            denials: g(L_DENIALS),
            last_denial: decode_limit(g(L_LAST_DENY) & 0xFFFF_FFFF),
            lost_records: g(L_LOST),
            topped_up: Credits(b.topped_up),
            consumed: Credits(b.consumed),
            overrun: Credits(b.overrun),
        })
    }

    /// Lanes whose agent ran dry and asked for a top-up: `(lane, credits asked for)`.
    pub fn demands(&self) -> Vec<(usize, Credits)> {
        let v = self.view();
        (0..self.layout.lanes)
            .filter_map(|l| {
                let d = v.lw(l, L_DEMAND).load(ACQ);
                (d != 0 && holder::is_owned(v.lw(l, L_CLAIM).load(ACQ))).then_some((l, Credits(d)))
            })
            .collect()
    }

    /// Every agent process holding lanes, and whether it is alive.
    pub fn processes(&self) -> Vec<ProcessInfo> {
        let mut out: Vec<ProcessInfo> = Vec::new();
        let v = self.view();
        for lane in 0..self.layout.lanes {
            let Some(h) = holder::holder_of(v.lw(lane, L_CLAIM).load(ACQ)) else {
                continue;
            };
            match out.iter_mut().find(|x| x.holder == h) {
                Some(x) => x.lanes.push(lane),
                None => out.push(ProcessInfo {
                    holder: h,
                    pid: holder::reported_pid(&self.holders, h),
                    alive: self.is_alive(h),
                    lanes: vec![lane],
                }),
            }
        }
        out
    }

    /// Whether agent process `holder` still runs: it holds its liveness lock. A holder
    /// whose file cannot be tested (permissions) counts as alive: reclaim needs proof.
    pub fn is_alive(&self, holder: HolderId) -> bool {
        holder::probe(&self.holders, holder) != Probe::Dead
    }

    /// The folder where agents keep their liveness locks (`<region>.holders`).
    pub fn holders_dir(&self) -> &Path {
        &self.holders
    }

    /// Reclaims one lane whose owner is dead (or whose reclaim was interrupted).
    pub fn reclaim_lane(&self, lane: usize) -> Result<ReclaimReport, SidecarError> {
        self.check("lane", lane, self.layout.lanes)?;
        let _g = self.lock();
        self.view()
            .reclaim_lane(lane, &|h: HolderId| !self.is_alive(h), &mut |_| true)
    }

    /// Reclaims every lane of every dead process, and every lane a live process handed
    /// back (its `Gate` was dropped: the claim says reclaiming), exactly once each;
    /// returns what was done.
    pub fn reclaim_dead(&self) -> Result<Vec<ReclaimReport>, SidecarError> {
        let mut out = Vec::new();
        for info in self.processes() {
            for lane in info.lanes {
                if info.alive && holder::is_owned(self.view().lw(lane, L_CLAIM).load(ACQ)) {
                    continue;
                }
                match self.reclaim_lane(lane) {
                    Ok(r) => out.push(r),
                    // Reclaimed concurrently, or a recycled pid came back: skip.
                    Err(SidecarError::LaneNotInUse(_) | SidecarError::OwnerAlive(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        // Name and task entries whose writer died mid-write.
        let dead = |h: HolderId| !self.is_alive(h);
        self.view().free_stuck_names(&dead);
        self.view().free_stuck_tasks(&dead);
        // Holder files of processes that are gone and hold no lane any more. The claims are
        // read again (reclaim freed some), without probing each holder's lock a second time.
        let v = self.view();
        let named: Vec<HolderId> = (0..self.layout.lanes)
            .filter_map(|lane| holder::holder_of(v.lw(lane, L_CLAIM).load(ACQ)))
            .collect();
        holder::collect_garbage(&self.holders, &named);
        Ok(out)
    }

    // ---- prices ----

    /// Publishes a price book; agents reload it on their next reserve.
    pub fn publish_price_book(&self, book: &PriceBook) -> Result<(), SidecarError> {
        let bytes = serde_json::to_vec(book)
            .map_err(|e| SidecarError::Config(format!("cannot encode price book: {e}")))?;
        let _g = self.lock();
        if !self.view().publish_blob(book.version(), &bytes) {
            return Err(SidecarError::Config(format!(
                "price book is {} bytes; the region holds {}: raise RegionConfig::price_book_bytes",
                bytes.len(),
                self.layout.book_words * WORD
            )));
        }
        Ok(())
    }
}

/// Finds a configured tenant by name (a scan of the tenant table: slow path only).
pub(crate) fn find_tenant(v: &View<'_>, name: &str) -> Option<usize> {
    let want = name.as_bytes();
    if want.is_empty() || want.len() > MAX_TENANT_NAME {
        return None;
    }
    (0..v.l.tenants).find(|&t| {
        let base = v.l.tenant(t);
        if v.w[base + T_STATE].load(ACQ) == 0 {
            return false;
        }
        let len = v.w[base + T_NAME_LEN].load(ACQ) as usize;
        if len != want.len() {
            return false;
        }
        let mut buf = [0u8; MAX_TENANT_NAME];
        for i in 0..MAX_TENANT_NAME / WORD {
            buf[i * WORD..(i + 1) * WORD]
                .copy_from_slice(&v.w[base + T_NAME + i].load(ACQ).to_le_bytes());
        }
        &buf[..len] == want
    })
}
