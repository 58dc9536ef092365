//! The memory a region lives in: a shared file mapping, or (for tests and loom models)
//! a heap array. The only module with `unsafe`.
//!
//! Everything else sees the region as `&[AtomicU64]` and indexes it with bounds checks,
//! so after [`crate::layout::validate_header`] has checked the header against the file
//! size, no access can leave the mapping.
//!
//! **Truncation guard.** Any process that maps the region can truncate its file; the
//! kernel then raises SIGBUS on the next access to a page past the new end, which would
//! kill the sidecar with whatever it had not yet sent. A mapping made with
//! [`Guard::Truncation`] is registered with a SIGBUS handler ([`install_truncation_guard`],
//! installed once by the sidecar): a fault inside a registered mapping replaces the
//! faulting page with a private zero page and returns, so the access completes (reading
//! zeros; writes go nowhere any agent sees) and the mapping is marked damaged. The sidecar
//! sees that through `Region::damage` and replaces the region. A SIGBUS anywhere else
//! gets the default action, as if no handler were installed.

#![allow(unsafe_code)]

use crate::sync::AtomicU64;

/// Memory holding a region's words.
pub(crate) struct Mem {
    backing: Backing,
    /// The truncation-guard slot of this mapping, if it is guarded.
    #[cfg(not(loom))]
    guard_slot: Option<usize>,
}

/// Whether a file mapping is protected from truncation by other processes.
#[cfg(not(loom))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Guard {
    /// An agent's mapping: a truncated region kills it as it would any process.
    None,
    /// The sidecar's mapping: a truncated region is survived and reported.
    Truncation,
}

enum Backing {
    #[cfg(loom)]
    Heap(Box<[AtomicU64]>),
    #[cfg(not(loom))]
    Map {
        // Keeps the mapping alive as long as `ptr` is used.
        map: memmap2::MmapRaw,
        len_words: usize,
    },
}

impl Mem {
    #[cfg(loom)]
    /// Zeroed words on the heap (unit tests, loom models, the shared-counter baseline).
    pub(crate) fn heap(words: usize) -> Mem {
        Mem {
            backing: Backing::Heap((0..words).map(|_| crate::sync::word(0)).collect()),
        }
    }

    /// Maps `file` shared and read-write. The caller validates the header against
    /// `len_bytes` before reading anything past the first page.
    #[cfg(not(loom))]
    pub(crate) fn map_file(file: &std::fs::File, guard: Guard) -> std::io::Result<Mem> {
        let map = memmap2::MmapOptions::new().map_raw(file)?;
        let len_words = map.len() / crate::layout::WORD;
        let guard_slot = match guard {
            Guard::None => None,
            Guard::Truncation => Some(guarded::register(map.as_ptr() as usize, map.len())?),
        };
        Ok(Mem {
            backing: Backing::Map { map, len_words },
            guard_slot,
        })
    }

    /// Whether a page of this mapping faulted past the end of a truncated file (guarded
    /// mappings only; see the module docs).
    #[cfg(not(loom))]
    pub(crate) fn truncation_faults(&self) -> u64 {
        self.guard_slot.map_or(0, guarded::faults)
    }

    /// The region as atomic words.
    #[inline]
    pub(crate) fn words(&self) -> &[AtomicU64] {
        match &self.backing {
            #[cfg(loom)]
            Backing::Heap(b) => b,
            #[cfg(not(loom))]
            Backing::Map { map, len_words } => {
                let ptr = map.as_ptr().cast::<AtomicU64>();
                // SAFETY: the mapping is page-aligned (so 8-byte aligned), `len_words * 8`
                // bytes long (rounded down), readable and writable, and lives as long as
                // `self` (the returned slice borrows `self`). `AtomicU64` has the size and
                // alignment of `u64` and every bit pattern is valid, so any file contents
                // are a valid `[AtomicU64]`. Other processes mutate the memory only
                // through atomic operations on the same words (our protocol), so creating
                // a shared reference is sound. A file truncated underneath the mapping by
                // another process can still raise SIGBUS; the region file is created and
                // sized only by the sidecar, and its mode is 0660.
                unsafe { std::slice::from_raw_parts(ptr, *len_words) }
            }
        }
    }

    /// Length of the memory in bytes.
    pub(crate) fn len_bytes(&self) -> u64 {
        (self.words().len() * crate::layout::WORD) as u64
    }
}

#[cfg(not(loom))]
impl Drop for Mem {
    fn drop(&mut self) {
        // Unregistered before the mapping goes (the field drops after this body).
        if let Some(slot) = self.guard_slot {
            guarded::unregister(slot);
        }
    }
}

/// Installs the SIGBUS handler that protects guarded mappings (the sidecar calls it once
/// at start; calling it again does nothing).
#[cfg(not(loom))]
pub fn install_truncation_guard() -> std::io::Result<()> {
    guarded::install()
}

#[cfg(not(loom))]
mod guarded {
    use std::sync::Once;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    /// Guarded mappings at once (a sidecar has one region, two while it replaces one).
    const SLOTS: usize = 16;

    struct Slot {
        start: AtomicUsize,
        len: AtomicUsize,
        faults: AtomicU64,
    }

    #[allow(clippy::declare_interior_mutable_const)]
    const EMPTY: Slot = Slot {
        start: AtomicUsize::new(0),
        len: AtomicUsize::new(0),
        faults: AtomicU64::new(0),
    };
    static SLOT: [Slot; SLOTS] = [EMPTY; SLOTS];
    static PAGE: AtomicUsize = AtomicUsize::new(4096);
    static INSTALL: Once = Once::new();
    static INSTALLED: AtomicU64 = AtomicU64::new(0);

    pub(super) fn register(start: usize, len: usize) -> std::io::Result<usize> {
        for (i, s) in SLOT.iter().enumerate() {
            if s.start
                .compare_exchange(0, start, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                s.faults.store(0, Ordering::Relaxed);
                s.len.store(len, Ordering::Release);
                return Ok(i);
            }
        }
        Err(std::io::Error::other("too many guarded region mappings"))
    }

    pub(super) fn unregister(slot: usize) {
        SLOT[slot].len.store(0, Ordering::Release);
        SLOT[slot].start.store(0, Ordering::Release);
    }

    pub(super) fn faults(slot: usize) -> u64 {
        SLOT[slot].faults.load(Ordering::Acquire)
    }

    pub(super) fn install() -> std::io::Result<()> {
        let mut result = Ok(());
        INSTALL.call_once(|| {
            // SAFETY: sysconf has no preconditions.
            let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
            if page > 0 {
                PAGE.store(page as usize, Ordering::Relaxed);
            }
            // SAFETY: a zeroed sigaction is a valid starting value; we set the handler,
            // flags and an empty mask before passing it to the kernel.
            let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
            action.sa_sigaction = on_sigbus as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_NODEFER;
            // SAFETY: `action.sa_mask` is a valid sigset_t to initialise.
            unsafe { libc::sigemptyset(&mut action.sa_mask) };
            // SAFETY: installs a handler that only does async-signal-safe work (atomics,
            // mmap, sigaction).
            if unsafe { libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut()) } != 0 {
                result = Err(std::io::Error::last_os_error());
            } else {
                INSTALLED.store(1, Ordering::Release);
            }
        });
        result
    }

    /// A SIGBUS: inside a guarded mapping, swap in a zero page and count the fault;
    /// elsewhere, restore the default action so the fault, retried, ends the process.
    extern "C" fn on_sigbus(
        _sig: libc::c_int,
        info: *mut libc::siginfo_t,
        _ctx: *mut libc::c_void,
    ) {
        // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers.
        let addr = unsafe { (*info).si_addr() } as usize;
        let page = PAGE.load(Ordering::Relaxed);
        for s in &SLOT {
            let start = s.start.load(Ordering::Acquire);
            let len = s.len.load(Ordering::Acquire);
            if start == 0 || addr < start || addr >= start + len {
                continue;
            }
            let at = addr & !(page - 1);
            // SAFETY: `at..at + page` lies inside a live mapping of ours (registered until
            // just before it is unmapped); MAP_FIXED replaces that page only.
            let r = unsafe {
                libc::mmap(
                    at as *mut libc::c_void,
                    page,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                    -1,
                    0,
                )
            };
            if r != libc::MAP_FAILED {
                s.faults.fetch_add(1, Ordering::AcqRel);
                return;
            }
            break;
        }
        // SAFETY: restoring the default disposition is always allowed; the retried access
        // then faults again and the process ends with SIGBUS, as without this handler.
        unsafe { libc::signal(libc::SIGBUS, libc::SIG_DFL) };
    }
}
