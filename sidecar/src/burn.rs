//! Recent burn of one pool or lane, in whole micro-credits per second.
//!
//! A sliding window of one-second buckets: integer arithmetic only (no floats near money),
//! constant memory, and a rate that forgets an old spike after `WINDOW_SECS`.

/// Width of the sliding window.
pub const WINDOW_SECS: usize = 10;

/// Credits consumed per second over the last [`WINDOW_SECS`] seconds.
#[derive(Debug, Clone, Default)]
pub struct BurnMeter {
    buckets: [u64; WINDOW_SECS],
    /// The second (on the caller's clock) that `buckets[head]` counts.
    head_sec: u64,
    head: usize,
    started: bool,
}

impl BurnMeter {
    /// An empty meter.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the window forward to `now_sec`, zeroing the buckets it passes.
    fn advance(&mut self, now_sec: u64) {
        if !self.started {
            self.started = true;
            self.head_sec = now_sec;
            return;
        }
        if now_sec <= self.head_sec {
            return; // a clock that does not move forward keeps the current bucket
        }
        let steps = (now_sec - self.head_sec).min(WINDOW_SECS as u64) as usize;
        for _ in 0..steps {
            self.head = (self.head + 1) % WINDOW_SECS;
            self.buckets[self.head] = 0;
        }
        self.head_sec = now_sec;
    }

    /// Records `amount` micro-credits consumed at `now_sec`.
    pub fn record(&mut self, now_sec: u64, amount: u64) {
        self.advance(now_sec);
        self.buckets[self.head] = self.buckets[self.head].saturating_add(amount);
    }

    /// Micro-credits per second, averaged over the window, rounded up so that a small
    /// but steady burn never reads as zero.
    pub fn rate_per_sec(&mut self, now_sec: u64) -> u64 {
        self.advance(now_sec);
        let total: u64 = self.buckets.iter().fold(0u64, |a, b| a.saturating_add(*b));
        total.div_ceil(WINDOW_SECS as u64)
    }

    /// What the last complete second burned (reacts faster than the window average when a
    /// fleet ramps up).
    pub fn last_second(&mut self, now_sec: u64) -> u64 {
        self.advance(now_sec);
        self.buckets[(self.head + WINDOW_SECS - 1) % WINDOW_SECS]
    }

    /// Total in the window (micro-credits).
    pub fn window_total(&mut self, now_sec: u64) -> u64 {
        self.advance(now_sec);
        self.buckets.iter().fold(0u64, |a, b| a.saturating_add(*b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_burn_reads_back() {
        let mut m = BurnMeter::new();
        for s in 0..WINDOW_SECS as u64 {
            m.record(100 + s, 1_000);
        }
        assert_eq!(m.rate_per_sec(100 + WINDOW_SECS as u64 - 1), 1_000);
    }

    #[test]
    fn old_spike_is_forgotten() {
        let mut m = BurnMeter::new();
        m.record(5, 1_000_000);
        assert_eq!(m.rate_per_sec(5), 100_000);
        assert_eq!(m.rate_per_sec(5 + WINDOW_SECS as u64), 0);
        // a long gap does not loop forever and clears everything
        m.record(1_000_000, 10);
        assert_eq!(m.window_total(1_000_000), 10);
    }

    #[test]
    fn last_second_reacts_to_a_ramp() {
        let mut m = BurnMeter::new();
        m.record(10, 5_000);
        m.record(11, 1);
        assert_eq!(m.last_second(11), 5_000);
        assert_eq!(m.rate_per_sec(11), 501);
        assert_eq!(m.last_second(13), 0);
    }

    #[test]
    fn small_burn_rounds_up() {
        let mut m = BurnMeter::new();
        m.record(1, 1);
        assert_eq!(m.rate_per_sec(1), 1);
    }

    #[test]
    fn clock_going_back_does_not_panic() {
        let mut m = BurnMeter::new();
        m.record(10, 5);
        m.record(3, 5);
        assert_eq!(m.window_total(10), 10);
    }
}
