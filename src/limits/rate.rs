//! A token bucket: `rate` tokens a second, at most `burst` saved up.

use std::time::Instant;

#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate: f64, burst: u64, now: Instant) -> TokenBucket {
        TokenBucket {
            rate,
            burst: burst as f64,
            tokens: burst as f64,
            last: now,
        }
    }

    /// Applies new limits (a runtime override changed) keeping the saved tokens.
    pub fn set_limits(&mut self, rate: f64, burst: u64) {
        self.rate = rate;
        self.burst = burst as f64;
        self.tokens = self.tokens.min(self.burst);
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
    }

    /// Takes `n` tokens if there are enough; otherwise takes none and returns
    /// how long until there would be (`None`: `n` exceeds the burst, never).
    pub fn try_take(&mut self, n: u64, now: Instant) -> Result<(), Option<std::time::Duration>> {
        self.refill(now);
        let n = n as f64;
        if n <= self.tokens {
            self.tokens -= n;
            return Ok(());
        }
        if n > self.burst || self.rate <= 0.0 {
            return Err(None);
        }
        Err(Some(std::time::Duration::from_secs_f64(
            (n - self.tokens) / self.rate,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn refills_at_rate_up_to_burst() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10.0, 20, start);
        assert!(bucket.try_take(20, start).is_ok());
        let wait = bucket.try_take(5, start).expect_err("empty");
        assert_eq!(wait, Some(Duration::from_millis(500)));
        assert!(
            bucket
                .try_take(5, start + Duration::from_millis(500))
                .is_ok()
        );
        // Never more than the burst, however long it waited.
        assert!(bucket.try_take(21, start + Duration::from_secs(100)) == Err(None));
        assert!(
            bucket
                .try_take(20, start + Duration::from_secs(100))
                .is_ok()
        );
    }
}
