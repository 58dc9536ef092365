//! The injectable clock. Every ledger decision that depends on time (expiry, resets,
//! hold timeouts, burn rate) reads [`Clock::now`] once per operation, so tests drive time
//! with a [`ManualClock`] and production uses [`SystemClock`].
//!
//! Time is unix seconds (`u64`, UTC), as in `tollgate_core::time`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Unix seconds, UTC (the unit `tollgate_core::time` uses).
pub type Timestamp = u64;

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    /// Current unix time in seconds.
    fn now(&self) -> Timestamp;
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}

/// A clock that moves only when told to (tests, simulations). Cloning shares the time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    now: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock showing `start`.
    pub fn new(start: Timestamp) -> ManualClock {
        ManualClock {
            now: Arc::new(AtomicU64::new(start)),
        }
    }

    /// Set the time (it may go backwards; the ledger never relies on monotonic time for
    /// conservation, only for which events are due).
    pub fn set(&self, now: Timestamp) {
        self.now.store(now, Ordering::SeqCst);
    }

    /// Move the time forward by `secs`.
    pub fn advance(&self, secs: u64) {
        self.now.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        self.now.load(Ordering::SeqCst)
    }
}
