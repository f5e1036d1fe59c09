//! Exponential backoff with jitter, for polling and retries.

use std::time::Duration;

/// Delays that double from `base` up to `max`; each delay drawn uniformly
/// in [80 %, 100 %] of its nominal value, so that many collectors started
/// together drift apart and none ever waits more than `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    nominal: Duration,
}

impl Backoff {
    /// Starts at `base`, caps at `max`.
    pub fn new(base: Duration, max: Duration) -> Backoff {
        Backoff {
            base,
            max,
            nominal: base,
        }
    }

    /// The next delay; the one after it is twice as long (up to `max`).
    pub fn next_delay(&mut self) -> Duration {
        let nominal = self.nominal;
        self.nominal = (self.nominal * 2).min(self.max);
        nominal.mul_f64(0.8 + 0.2 * fastrand::f64())
    }

    /// The nominal delay the next call starts from.
    pub fn nominal(&self) -> Duration {
        self.nominal
    }

    /// Back to `base` (news arrived, a request succeeded).
    pub fn reset(&mut self) {
        self.nominal = self.base;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_with_bounded_jitter_and_resets() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(16));
        for nominal in [1, 2, 4, 8, 16, 16, 16] {
            let d = backoff.next_delay().as_secs_f64();
            assert!(d >= 0.8 * nominal as f64 && d <= nominal as f64, "{d} vs {nominal}");
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_secs(1));
    }
}
