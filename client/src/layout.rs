//! Region layout: where every word lives, and validation of a header read from a file.
//!
//! The region is an array of 64-bit atomic words (no pointers, no padding games): the
//! header (one 4 KiB page), then the pools, the tenants, the sidecar journal, the name
//! table, the task table, the price book, then the lanes. Offsets are in words from the
//! start of the region. Every record starts on a 128-byte boundary (a pair of cache lines,
//! so the adjacent-line prefetcher does not couple neighbours); words one party writes sit
//! apart from words the other party writes.
//!
//! ```text
//! word  header (static part, checksummed)           | dynamic part
//!  0    MAGIC  "TOLLGATE"                            | 24 owner pid
//!  1    layout VERSION (written last, Release)       | 25 owner start time (clock ticks)
//!  2    size in bytes                                | 26 owner epoch (bumped by open_owner)
//!  3    checksum of words 4..20 (FNV-1a)             | 27 sidecar heartbeat (unix ms)
//!  4..  pools, tenants, lanes, slots per lane,       | 28..31 price book seqlock
//!       ring capacity, price-book words, names,      | 32..   slow-path tuning
//!       tasks, offsets                               |
//! ```
//!
//! A pool (16 words): granted, available, carved, consumed, returned, overrun, limit code,
//! three tier floors, tenant, reclaimed. A tenant (16 words): state, name (48 bytes), and
//! for each (tier, initiator) the pools a lane of that class is subject to. A name (16
//! words): a state word and up to 64 bytes (see `names.rs`). A task (48 words): the
//! agents' registration (tenant, id, budget, max calls, completion mark) and the sidecar's
//! status line (see `tasks.rs`). A lane: a 48-word header (agent line, sidecar line,
//! report line), `slots_per_lane` reservation slots of 16 words, and a usage ring of
//! `ring_capacity` 8-word records. See [`crate::protocol`] for what each word means to
//! the protocol.

use crate::error::AttachError;
use crate::sync::AtomicU64;

/// "TOLLGATE" in ASCII, little-endian.
pub const MAGIC: u64 = u64::from_le_bytes(*b"TOLLGATE");
/// The layout this crate reads and writes. Bump on any incompatible change.
// 2: claim words name holders (liveness locks), not pids.
// 3: the name and task tables, lane keys with agent and task, 48-word lane headers, slots
//    and ring records with names and outcomes, pool lists of 16-bit indices.
// 4: the owner's commit settles with its ring record as the intent (slot state
//    `SETTLING_REC`, record word `R_CONS_BEFORE`): a layout-3 sidecar reclaiming a lane
//    whose agent died inside such a settle would not finish it.
pub const LAYOUT_VERSION: u64 = 4;
/// Bytes per word.
pub const WORD: usize = 8;
/// Words in the header page (smaller under loom, where every word is a modelled atomic).
pub const HEADER_WORDS: usize = if cfg!(loom) { 64 } else { 512 };
/// Words per 128-byte record unit.
pub const UNIT: usize = 16;

// Header: static part.
pub(crate) const H_MAGIC: usize = 0;
pub(crate) const H_VERSION: usize = 1;
pub(crate) const H_SIZE: usize = 2;
pub(crate) const H_CHECKSUM: usize = 3;
pub(crate) const H_POOLS: usize = 4;
pub(crate) const H_TENANTS: usize = 5;
pub(crate) const H_LANES: usize = 6;
pub(crate) const H_SLOTS: usize = 7;
pub(crate) const H_RING: usize = 8;
pub(crate) const H_BOOK_WORDS: usize = 9;
pub(crate) const H_POOLS_OFF: usize = 10;
pub(crate) const H_TENANTS_OFF: usize = 11;
pub(crate) const H_LANES_OFF: usize = 12;
pub(crate) const H_BOOK_OFF: usize = 13;
pub(crate) const H_LANE_WORDS: usize = 14;
pub(crate) const H_JOURNAL_OFF: usize = 15;
pub(crate) const H_NAMES: usize = 16;
pub(crate) const H_NAMES_OFF: usize = 17;
pub(crate) const H_TASKS: usize = 18;
pub(crate) const H_TASKS_OFF: usize = 19;
pub(crate) const STATIC_START: usize = 4;
pub(crate) const STATIC_END: usize = 20;
// Header: dynamic part.
pub(crate) const H_OWNER_PID: usize = 24;
pub(crate) const H_OWNER_START: usize = 25;
pub(crate) const H_OWNER_EPOCH: usize = 26;
pub(crate) const H_HEARTBEAT: usize = 27;
pub(crate) const H_BOOK_SEQ: usize = 28;
pub(crate) const H_BOOK_LEN: usize = 29;
pub(crate) const H_BOOK_VERSION: usize = 30;
pub(crate) const H_SPIN_ITERS: usize = 32;
pub(crate) const H_WAIT_MICROS: usize = 33;

// Pool record.
pub(crate) const POOL_WORDS: usize = 16;
pub(crate) const P_GRANTED: usize = 0;
pub(crate) const P_AVAILABLE: usize = 1;
pub(crate) const P_CARVED: usize = 2;
pub(crate) const P_CONSUMED: usize = 3;
pub(crate) const P_RETURNED: usize = 4;
pub(crate) const P_OVERRUN: usize = 5;
pub(crate) const P_LIMIT: usize = 6;
pub(crate) const P_FLOOR0: usize = 7; // 7, 8, 9: one floor per tier
pub(crate) const P_RECLAIMED: usize = 11;

// Tenant record.
pub(crate) const TENANT_WORDS: usize = 16;
pub(crate) const T_STATE: usize = 0; // 0 unused, else configuration generation
pub(crate) const T_NAME: usize = 1; // 6 words of name bytes
pub(crate) const T_NAME_LEN: usize = 7;
pub(crate) const T_CLASS0: usize = 8; // 6 words: tier * 2 + initiator -> packed pool list
/// Longest tenant name, in bytes.
pub const MAX_TENANT_NAME: usize = 48;
/// Most limits (pools) one lane class of a tenant record can list.
pub const MAX_LIMITS_PER_LANE: usize = 8;
/// Most pools one lane can be carved from: its class's pools, its agent's quotas and its
/// task's budget.
pub const MAX_POOLS_PER_LANE: usize = 12;
/// Pools a tenant record's class lists can name (8-bit entries, 0xFF = empty).
pub const MAX_CLASS_POOL: usize = 254;
/// Lane classes per tenant: 3 tiers x 2 initiators.
pub(crate) const CLASSES: usize = 6;

// Sidecar journal.
pub(crate) const JOURNAL_WORDS: usize = 128;

// Name table entry (see `names.rs`).
pub(crate) const NAME_WORDS: usize = 16;
pub(crate) const N_STATE: usize = 0;
pub(crate) const N_BYTES: usize = 1; // 8 words
/// Longest agent or feature name, in bytes.
pub const MAX_NAME: usize = 64;

// Task table entry (see `tasks.rs`). Agent lines (registration, completion mark):
pub(crate) const TASK_WORDS: usize = 48;
pub(crate) const K_STATE: usize = 0;
pub(crate) const K_TENANT: usize = 1;
pub(crate) const K_LEN: usize = 2;
pub(crate) const K_BUDGET: usize = 3;
pub(crate) const K_MAX_CALLS: usize = 4;
pub(crate) const K_HASH: usize = 5;
pub(crate) const K_DONE: usize = 6;
pub(crate) const K_ID: usize = 8; // 16 words
// Sidecar line.
pub(crate) const KS_STATUS: usize = 32;
/// The pool the task's budget is leased into, + 1 (0: none yet).
pub(crate) const KS_POOL: usize = 33;
/// Calls given to the task's lanes (`L_CALLS_LIMIT`), net of the unused calls of lanes
/// reclaimed since: at most the task's `max_calls`.
pub(crate) const KS_CALLS_GIVEN: usize = 34;
/// Calls made by lanes of the task that were reclaimed (their `L_CALLS` at reclaim).
pub(crate) const KS_CALLS_DONE: usize = 35;
/// Longest task id, in bytes.
pub const MAX_TASK_ID: usize = 128;

// Lane header.
pub(crate) const LANE_HDR_WORDS: usize = 48;
// Agent line (written by the owning agent thread; avail shared with the sidecar).
pub(crate) const L_CLAIM: usize = 0;
pub(crate) const L_KEY: usize = 1;
pub(crate) const L_AVAIL: usize = 2;
pub(crate) const L_CONSUMED: usize = 3;
pub(crate) const L_OVERRUN: usize = 4;
pub(crate) const L_RING_HEAD: usize = 5;
pub(crate) const L_LOST: usize = 6;
pub(crate) const L_PENDING: usize = 7;
// Second line of the agent pair: the owner's local credits and its transfer intent.
pub(crate) const L_LOCAL: usize = 8;
pub(crate) const L_XFER_STATE: usize = 9;
pub(crate) const L_XFER_AMOUNT: usize = 10;
pub(crate) const L_XFER_LOCAL_BEFORE: usize = 11;
/// Sidecar-written: "flush your local credits back to `avail`" (a revoke wants them).
pub(crate) const L_FLUSH_REQ: usize = 12;
/// Owner-only: reservations made on this lane (a task lane's calls; see `L_CALLS_LIMIT`).
pub(crate) const L_CALLS: usize = 13;
// Sidecar line.
pub(crate) const L_TOPPED_UP: usize = 16;
pub(crate) const L_REVOKED: usize = 17;
pub(crate) const L_RECLAIMED: usize = 18;
pub(crate) const L_RING_TAIL: usize = 19;
pub(crate) const L_DENY: usize = 20;
pub(crate) const L_HARVEST_CONSUMED: usize = 21;
pub(crate) const L_HARVEST_OVERRUN: usize = 22;
/// The pools the lane is carved from: three words of four 16-bit pool indices (0xFFFF =
/// empty); 0 in the first word means "not fixed yet" (fixed at the first top-up).
pub(crate) const L_POOLS: usize = 23; // 23, 24, 25
pub(crate) const POOL_LIST_WORDS: usize = 3;
/// Sidecar-written: the calls a task lane may make in all (its share of the task's
/// `max_calls`); reservations stop when `L_CALLS` reaches it. Unused on other lanes.
pub(crate) const L_CALLS_LIMIT: usize = 26;
/// Sidecar-written: until this unix time (ms), a dry lane is denied at once, without the
/// bounded wait: the binding limit cannot be refilled before then (a hard cap reached, a
/// window spent until it rolls, a dry wallet). 0: a refill is plausible, wait for it.
pub(crate) const L_DENY_UNTIL: usize = 27;
// Report line (agent-written, rarely).
pub(crate) const L_DEMAND: usize = 32;
pub(crate) const L_DENIALS: usize = 33;
pub(crate) const L_LAST_DENY: usize = 34;
pub(crate) const L_DEMAND_SEEN: usize = 35;

// Reservation slot.
pub(crate) const SLOT_WORDS: usize = 16;
pub(crate) const S_STATE: usize = 0;
pub(crate) const S_RESERVED: usize = 1;
pub(crate) const S_ACTUAL: usize = 2;
pub(crate) const S_CONS_BEFORE: usize = 3;
pub(crate) const S_OVER_BEFORE: usize = 4;
pub(crate) const S_HEAD_BEFORE: usize = 5;
pub(crate) const S_TOKENS: usize = 6;
pub(crate) const S_META: usize = 7;
pub(crate) const S_LOCAL_BEFORE: usize = 8;
pub(crate) const S_LOST_BEFORE: usize = 9;
/// The call's names: `[agent:16 | feature:16 | task ref:25]` (see `codes::pack_names`).
pub(crate) const S_NAMES: usize = 10;
/// Written at commit: `[flags:32 | outcomes:32]` (see `lane::OUT_PRE_RATED`).
pub(crate) const S_OUTCOMES: usize = 11;
/// The lane's `L_CALLS` before this reservation counted itself (task lanes).
pub(crate) const S_CALLS_BEFORE: usize = 12;

// Usage record in a ring.
pub(crate) const REC_WORDS: usize = 8;
pub(crate) const R_RESERVED: usize = 0;
pub(crate) const R_ACTUAL: usize = 1;
pub(crate) const R_TOKENS: usize = 2;
pub(crate) const R_META: usize = 3;
pub(crate) const R_SEQ: usize = 4;
pub(crate) const R_NAMES: usize = 5;
pub(crate) const R_OUTCOMES: usize = 6;
/// The lane's `consumed` before the record's commit: written only by the owner's commit
/// settle ([`crate::lane::View::commit_owned`]), whose intent the record is; the drain
/// ignores it.
pub(crate) const R_CONS_BEFORE: usize = 7;

/// Most slots a lane may have (the pending-commit mask is one word).
pub const MAX_SLOTS: usize = 64;
/// Hard caps on configured counts, so a corrupt header cannot ask for absurd sizes.
/// Pools: a lane's pool list holds 16-bit indices (0xFFFF = empty).
pub const MAX_POOLS: usize = 4096;
/// Most tenants a region can hold.
pub const MAX_TENANTS: usize = 1024;
/// Most lanes a region can hold.
pub const MAX_LANES: usize = 65_536;
/// Largest ring, in records.
pub const MAX_RING: usize = 1 << 16;
/// Largest price-book area, in words (8 MiB).
pub const MAX_BOOK_WORDS: usize = 1 << 20;
/// Most entries of the name table (ids are 16 bits; id 0 is "unnamed").
pub const MAX_NAMES: usize = 1 << 16;
/// Most entries of the task table (a task reference in a lane key has 12 bits).
pub const MAX_TASKS: usize = 4095;

/// Sizes a sidecar chooses when it creates a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionConfig {
    /// Pools (one per limit served), at most [`MAX_POOLS`].
    pub pools: u32,
    /// Tenants, at most [`MAX_TENANTS`].
    pub tenants: u32,
    /// Lanes (agent thread x tenant x tier x initiator), at most [`MAX_LANES`].
    pub lanes: u32,
    /// Outstanding reservations per lane, 1..=[`MAX_SLOTS`].
    pub slots_per_lane: u32,
    /// Usage records per lane ring, a power of two, at most [`MAX_RING`].
    pub ring_capacity: u32,
    /// Bytes reserved for the serialized price book.
    pub price_book_bytes: u32,
    /// Entries of the name table (agent and feature names, interned once per name), at
    /// most [`MAX_NAMES`]; entry 0 stands for "unnamed", so at least 2.
    pub names: u32,
    /// Tasks open at once in the pod, at most [`MAX_TASKS`] (0: no named tasks).
    pub tasks: u32,
}

impl Default for RegionConfig {
    fn default() -> Self {
        RegionConfig {
            pools: 32,
            tenants: 8,
            lanes: 256,
            slots_per_lane: 32,
            ring_capacity: 256,
            price_book_bytes: 256 * 1024,
            names: 1024,
            tasks: 256,
        }
    }
}

/// Word offsets of every section, derived from a [`RegionConfig`] or a validated header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    pub pools: usize,
    pub tenants: usize,
    pub lanes: usize,
    pub slots: usize,
    pub ring: usize,
    pub book_words: usize,
    pub names: usize,
    pub tasks: usize,
    pub pools_off: usize,
    pub tenants_off: usize,
    pub journal_off: usize,
    pub names_off: usize,
    pub tasks_off: usize,
    pub book_off: usize,
    pub lanes_off: usize,
    pub lane_words: usize,
    pub total_words: usize,
}

fn round_unit(w: usize) -> usize {
    w.div_ceil(UNIT) * UNIT
}

impl Layout {
    /// The layout for a configuration, or what is wrong with the configuration.
    pub(crate) fn from_config(c: &RegionConfig) -> Result<Layout, String> {
        let (pools, tenants, lanes) = (c.pools as usize, c.tenants as usize, c.lanes as usize);
        let (slots, ring) = (c.slots_per_lane as usize, c.ring_capacity as usize);
        let book_words = (c.price_book_bytes as usize).div_ceil(WORD);
        if pools == 0 || pools > MAX_POOLS {
            return Err(format!("pools must be 1..={MAX_POOLS}, got {pools}"));
        }
        if tenants == 0 || tenants > MAX_TENANTS {
            return Err(format!("tenants must be 1..={MAX_TENANTS}, got {tenants}"));
        }
        if lanes == 0 || lanes > MAX_LANES {
            return Err(format!("lanes must be 1..={MAX_LANES}, got {lanes}"));
        }
        if slots == 0 || slots > MAX_SLOTS {
            return Err(format!(
                "slots_per_lane must be 1..={MAX_SLOTS}, got {slots}"
            ));
        }
        if ring == 0 || ring > MAX_RING || !ring.is_power_of_two() {
            return Err(format!(
                "ring_capacity must be a power of two in 1..={MAX_RING}, got {ring}"
            ));
        }
        let (names, tasks) = (c.names as usize, c.tasks as usize);
        if !(2..=MAX_NAMES).contains(&names) {
            return Err(format!("names must be 2..={MAX_NAMES}, got {names}"));
        }
        if tasks > MAX_TASKS {
            return Err(format!("tasks must be at most {MAX_TASKS}, got {tasks}"));
        }
        if book_words > MAX_BOOK_WORDS {
            return Err(format!(
                "price_book_bytes must be at most {}, got {}",
                MAX_BOOK_WORDS * WORD,
                c.price_book_bytes
            ));
        }
        let pools_off = HEADER_WORDS;
        let tenants_off = pools_off + pools * POOL_WORDS;
        let journal_off = tenants_off + tenants * TENANT_WORDS;
        let names_off = journal_off + JOURNAL_WORDS;
        let tasks_off = names_off + names * NAME_WORDS;
        let book_off = tasks_off + tasks * TASK_WORDS;
        let lanes_off = round_unit(book_off + book_words);
        let lane_words = round_unit(LANE_HDR_WORDS + slots * SLOT_WORDS + ring * REC_WORDS);
        let total_words = lanes_off + lanes * lane_words;
        // Round the file to whole 4 KiB pages (not under loom: no file there).
        let total_words = if cfg!(loom) {
            total_words
        } else {
            total_words.div_ceil(512) * 512
        };
        Ok(Layout {
            pools,
            tenants,
            lanes,
            slots,
            ring,
            book_words,
            names,
            tasks,
            pools_off,
            tenants_off,
            journal_off,
            names_off,
            tasks_off,
            book_off,
            lanes_off,
            lane_words,
            total_words,
        })
    }

    /// The static header words this layout is described by (indices `STATIC_START..STATIC_END`).
    pub(crate) fn static_words(&self) -> [u64; STATIC_END - STATIC_START] {
        let mut w = [0u64; STATIC_END - STATIC_START];
        let mut put = |i: usize, v: usize| w[i - STATIC_START] = v as u64;
        put(H_POOLS, self.pools);
        put(H_TENANTS, self.tenants);
        put(H_LANES, self.lanes);
        put(H_SLOTS, self.slots);
        put(H_RING, self.ring);
        put(H_BOOK_WORDS, self.book_words);
        put(H_POOLS_OFF, self.pools_off);
        put(H_TENANTS_OFF, self.tenants_off);
        put(H_LANES_OFF, self.lanes_off);
        put(H_BOOK_OFF, self.book_off);
        put(H_LANE_WORDS, self.lane_words);
        put(H_JOURNAL_OFF, self.journal_off);
        put(H_NAMES, self.names);
        put(H_NAMES_OFF, self.names_off);
        put(H_TASKS, self.tasks);
        put(H_TASKS_OFF, self.tasks_off);
        w
    }

    /// Rebuilds the layout from static header words and checks that it is exactly the
    /// layout this crate would produce for those counts (so every offset is in bounds).
    pub(crate) fn from_static(w: &[u64; STATIC_END - STATIC_START]) -> Result<Layout, AttachError> {
        let get = |i: usize| w[i - STATIC_START];
        let small = |i: usize, what: &'static str| -> Result<u32, AttachError> {
            u32::try_from(get(i)).map_err(|_| AttachError::Corrupt { what })
        };
        let book_words = small(H_BOOK_WORDS, "price book size")?;
        let config = RegionConfig {
            pools: small(H_POOLS, "pool count")?,
            tenants: small(H_TENANTS, "tenant count")?,
            lanes: small(H_LANES, "lane count")?,
            slots_per_lane: small(H_SLOTS, "slots per lane")?,
            ring_capacity: small(H_RING, "ring capacity")?,
            price_book_bytes: book_words
                .checked_mul(WORD as u32)
                .ok_or(AttachError::Corrupt {
                    what: "price book size",
                })?,
            names: small(H_NAMES, "name table size")?,
            tasks: small(H_TASKS, "task table size")?,
        };
        let layout = Layout::from_config(&config).map_err(|_| AttachError::Corrupt {
            what: "region counts out of range",
        })?;
        if layout.static_words() != *w {
            return Err(AttachError::Corrupt {
                what: "section offsets",
            });
        }
        Ok(layout)
    }

    /// Size of the region in bytes.
    pub(crate) fn size_bytes(&self) -> usize {
        self.total_words * WORD
    }

    #[inline]
    pub(crate) fn pool(&self, p: usize) -> usize {
        self.pools_off + p * POOL_WORDS
    }
    #[inline]
    pub(crate) fn tenant(&self, t: usize) -> usize {
        self.tenants_off + t * TENANT_WORDS
    }
    #[inline]
    pub(crate) fn name(&self, n: usize) -> usize {
        self.names_off + n * NAME_WORDS
    }
    #[inline]
    pub(crate) fn task(&self, t: usize) -> usize {
        self.tasks_off + t * TASK_WORDS
    }
    #[inline]
    pub(crate) fn lane(&self, l: usize) -> usize {
        self.lanes_off + l * self.lane_words
    }
    #[inline]
    pub(crate) fn slot(&self, l: usize, s: usize) -> usize {
        self.lane(l) + LANE_HDR_WORDS + s * SLOT_WORDS
    }
    #[inline]
    pub(crate) fn record(&self, l: usize, i: u64) -> usize {
        let idx = (i as usize) & (self.ring - 1);
        self.lane(l) + LANE_HDR_WORDS + self.slots * SLOT_WORDS + idx * REC_WORDS
    }
}

/// FNV-1a over the static header words: cheap, and enough to tell a torn or scribbled
/// header from a good one (it is not a defence against a deliberate forger).
pub(crate) fn checksum(words: &[u64]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for w in words {
        for b in w.to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// Writes a fresh header's static part and checksum (not the version: the creator
/// stores that last, with Release).
pub(crate) fn write_static_header(w: &[AtomicU64], layout: &Layout) {
    use crate::sync::RELAXED;
    let st = layout.static_words();
    w[H_MAGIC].store(MAGIC, RELAXED);
    w[H_SIZE].store(layout.size_bytes() as u64, RELAXED);
    for (i, v) in st.iter().enumerate() {
        w[STATIC_START + i].store(*v, RELAXED);
    }
    w[H_CHECKSUM].store(checksum(&st), RELAXED);
}

/// Validates the header of a mapped region of `len_bytes` bytes. Reads only the header
/// page, which the caller has checked is inside the mapping.
pub(crate) fn validate_header(w: &[AtomicU64], len_bytes: u64) -> Result<Layout, AttachError> {
    use crate::sync::{ACQ, RELAXED};
    if w.len() < HEADER_WORDS {
        return Err(AttachError::Truncated {
            expected: (HEADER_WORDS * WORD) as u64,
            actual: len_bytes,
        });
    }
    let magic = w[H_MAGIC].load(RELAXED);
    let version = w[H_VERSION].load(ACQ);
    // The creator stores the version last: zero means it has not finished. An all-zero
    // file (sized, nothing written yet) is unfinished too, not foreign.
    if version == 0 && (magic == MAGIC || magic == 0) {
        return Err(AttachError::Unfinished);
    }
    if magic != MAGIC {
        return Err(AttachError::ForeignMagic { found: magic });
    }
    if version != LAYOUT_VERSION {
        return Err(AttachError::VersionMismatch {
            found: version,
            supported: LAYOUT_VERSION,
        });
    }
    let size = w[H_SIZE].load(RELAXED);
    if size > len_bytes {
        return Err(AttachError::Truncated {
            expected: size,
            actual: len_bytes,
        });
    }
    if size != len_bytes {
        return Err(AttachError::Corrupt {
            what: "size field does not match the file size",
        });
    }
    let mut st = [0u64; STATIC_END - STATIC_START];
    for (i, v) in st.iter_mut().enumerate() {
        *v = w[STATIC_START + i].load(RELAXED);
    }
    if checksum(&st) != w[H_CHECKSUM].load(RELAXED) {
        return Err(AttachError::Corrupt {
            what: "header checksum",
        });
    }
    let layout = Layout::from_static(&st)?;
    if layout.size_bytes() as u64 != size {
        return Err(AttachError::Corrupt {
            what: "size field does not match the layout",
        });
    }
    Ok(layout)
}
