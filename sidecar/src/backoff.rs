//! Reconnect delays: exponential with jitter (from `backon`), reset after a session that
//! stayed up, so a fleet of sidecars does not reconnect in step after an authority restart.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// Delays between connection attempts.
#[derive(Debug)]
pub struct Reconnect {
    builder: ExponentialBuilder,
    current: backon::ExponentialBackoff,
}

impl Reconnect {
    /// Delays from `min` doubling up to `max`, each with random jitter, forever.
    pub fn new(min: Duration, max: Duration) -> Self {
        let builder = ExponentialBuilder::default()
            .with_min_delay(min)
            .with_max_delay(max)
            .with_jitter()
            .without_max_times();
        Self {
            current: builder.build(),
            builder,
        }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        // without_max_times: the iterator never ends; fall back to the cap to be safe.
        self.current.next().unwrap_or(Duration::from_secs(5))
    }

    /// Starts over from the minimum (after a session that worked).
    pub fn reset(&mut self) {
        self.current = self.builder.build();
    }
}

impl Default for Reconnect {
    fn default() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(5))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_and_resets() {
        let mut r = Reconnect::new(Duration::from_millis(100), Duration::from_secs(2));
        let first = r.next_delay();
        // jitter adds at most one more min delay
        assert!(
            first >= Duration::from_millis(100) && first <= Duration::from_millis(200),
            "{first:?}"
        );
        let mut last = first;
        for _ in 0..20 {
            last = r.next_delay();
        }
        assert!(
            last >= Duration::from_secs(2) && last <= Duration::from_secs(4),
            "{last:?}"
        );
        r.reset();
        assert!(r.next_delay() <= Duration::from_millis(200));
    }
}
