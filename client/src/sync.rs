//! The concurrency shim: the only place atomics are named.
//!
//! Built normally it re-exports `std`; built with `RUSTFLAGS="--cfg loom"` it re-exports
//! loom's checked atomics, so the protocol code in `lane`, `ring`, `pool` and `pricebook`
//! runs unchanged under the model checker and on mapped memory.
//!
//! Orderings are named here too (`ACQ`, `REL`, ...), so a reader sees in one place which
//! orderings the protocol relies on.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::AtomicU64;
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::AtomicU64;

pub(crate) use std::sync::atomic::Ordering;

/// Loads that must see everything published before a matching `REL` store.
pub(crate) const ACQ: Ordering = Ordering::Acquire;
/// Stores and successful read-modify-writes that publish earlier writes.
pub(crate) const REL: Ordering = Ordering::Release;
/// Read-modify-writes that both observe and publish (every CAS on a shared word).
pub(crate) const ACQ_REL: Ordering = Ordering::AcqRel;
/// Counters nobody synchronises through.
pub(crate) const RELAXED: Ordering = Ordering::Relaxed;

/// A spin hint in loops that wait for another party (loom: yield to the scheduler).
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    std::hint::spin_loop();
}

/// A fresh atomic word (loom atomics must be created inside a model).
#[inline]
pub(crate) fn word(v: u64) -> AtomicU64 {
    AtomicU64::new(v)
}

/// A process-wide unique id (gates, threads): a plain counter nobody synchronises through.
#[cfg(not(loom))]
pub(crate) fn next_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
