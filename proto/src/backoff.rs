//! Exponential backoff with jitter, for every sender that retries: the
//! agent's stream to a collector and the remote-write senders of the agent
//! and the collector.

use std::time::Duration;

/// Exponential backoff with jitter: the n-th wait is drawn uniformly from
/// `[d/2, d]` with `d = min(max, base · 2^n)`.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// From `base`, doubling up to `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max: max.max(base),
            attempt: 0,
        }
    }

    /// The next wait.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        half + half.mul_f64(rand::random::<f64>())
    }

    /// After a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}
