//! The process clocks as the sidecar and the authority read them, with a seam for the
//! deterministic fleet simulation.
//!
//! Production code reads [`now`] (monotonic) and [`unix_ms`] (wall clock) instead of
//! `Instant::now()` / `SystemTime::now()`. By default they are exactly those. A simulation
//! installs a [`SimClock`] on the thread that runs the simulated parties
//! ([`install_sim_clock`]); from then on that thread, and only that thread, sees time move
//! only when the simulation advances it. Other threads (parallel tests) are unaffected.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A clock that moves only when told to. Cloning shares the time.
#[derive(Debug, Clone)]
pub struct SimClock {
    /// The monotonic instant the simulation started at; simulated instants are this plus
    /// the elapsed time, so only differences between them carry meaning (as with any
    /// `Instant`).
    base: Instant,
    /// Unix milliseconds at the start.
    base_unix_ms: u64,
    /// Simulated microseconds since the start.
    elapsed_micros: Arc<AtomicU64>,
}

impl SimClock {
    /// A clock showing `start_unix_ms` on the wall clock.
    pub fn new(start_unix_ms: u64) -> SimClock {
        SimClock {
            base: Instant::now(),
            base_unix_ms: start_unix_ms,
            elapsed_micros: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Moves time forward by `by`.
    pub fn advance(&self, by: Duration) {
        let micros = u64::try_from(by.as_micros()).unwrap_or(u64::MAX);
        self.elapsed_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Simulated time since the start.
    pub fn elapsed(&self) -> Duration {
        Duration::from_micros(self.elapsed_micros.load(Ordering::Relaxed))
    }

    /// The simulated monotonic instant.
    pub fn now(&self) -> Instant {
        self.base + self.elapsed()
    }

    /// The simulated wall clock, unix milliseconds.
    pub fn unix_ms(&self) -> u64 {
        self.base_unix_ms
            .saturating_add(self.elapsed_micros.load(Ordering::Relaxed) / 1_000)
    }
}

thread_local! {
    static SIM: RefCell<Option<SimClock>> = const { RefCell::new(None) };
}

/// From now on this thread reads `clock` through [`now`] and [`unix_ms`].
pub fn install_sim_clock(clock: SimClock) {
    SIM.with(|c| *c.borrow_mut() = Some(clock));
}

/// This thread reads the operating system's clocks again.
pub fn remove_sim_clock() {
    SIM.with(|c| *c.borrow_mut() = None);
}

fn sim() -> Option<SimClock> {
    SIM.try_with(|c| c.borrow().clone()).ok().flatten()
}

/// The monotonic clock: `Instant::now()` unless a simulation drives this thread.
pub fn now() -> Instant {
    match sim() {
        Some(c) => c.now(),
        None => Instant::now(),
    }
}

/// Milliseconds since the Unix epoch: the wall clock unless a simulation drives this thread.
pub fn unix_ms() -> u64 {
    match sim() {
        Some(c) => c.unix_ms(),
        None => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sim_clock_moves_only_when_advanced_and_only_on_its_thread() {
        let clock = SimClock::new(1_000_000);
        install_sim_clock(clock.clone());
        let t0 = now();
        assert_eq!(unix_ms(), 1_000_000);
        clock.advance(Duration::from_millis(1_500));
        assert_eq!(now() - t0, Duration::from_millis(1_500));
        assert_eq!(unix_ms(), 1_001_500);
        let other = std::thread::spawn(unix_ms).join().expect("thread");
        assert!(
            other > 1_600_000_000_000,
            "another thread reads the real clock"
        );
        remove_sim_clock();
        assert!(unix_ms() > 1_600_000_000_000);
    }
}
