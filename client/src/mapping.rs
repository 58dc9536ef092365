//! The memory a region lives in: a shared file mapping, or (for tests and loom models)
//! a heap array. The only module with `unsafe`.
//!
//! Everything else sees the region as `&[AtomicU64]` and indexes it with bounds checks,
//! so after [`crate::layout::validate_header`] has checked the header against the file
//! size, no access can leave the mapping.

#![allow(unsafe_code)]

use crate::sync::AtomicU64;

/// Memory holding a region's words.
pub(crate) struct Mem {
    backing: Backing,
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
    pub(crate) fn map_file(file: &std::fs::File) -> std::io::Result<Mem> {
        let map = memmap2::MmapOptions::new().map_raw(file)?;
        let len_words = map.len() / crate::layout::WORD;
        Ok(Mem {
            backing: Backing::Map { map, len_words },
        })
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
