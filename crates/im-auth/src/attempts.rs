//! [`SignInAttempts`]: sign-in attempts counted per key (a user name in the
//! user directory, a client address at a gateway), a GCRA limit per minute
//! (`governor`), in a table of bounded size (G10).

use std::hash::Hash;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Attempts per key and minute, for at most `max_keys` keys at once.
pub struct SignInAttempts<K: Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
    max_keys: usize,
}

impl<K: Hash + Eq + Clone> SignInAttempts<K> {
    pub fn per_minute(per_minute: NonZeroU32, max_keys: usize) -> Self {
        Self { limiter: RateLimiter::keyed(Quota::per_minute(per_minute)), max_keys }
    }

    /// Counts one attempt of `key`: `Err(wait)` when it is over the limit.
    /// When the table is full of keys tried within the minute (a flood of
    /// made-up names or addresses), keys quiet for a minute are forgotten
    /// first, and while none is, attempts go uncounted (governor cannot tell
    /// a key in the table from a new one without adding it): the table never
    /// grows past `max_keys`, and the other limit (per address for names,
    /// per name for addresses) is what holds such a flood.
    pub fn count(&self, key: &K) -> Result<(), Duration> {
        if self.limiter.len() >= self.max_keys {
            self.limiter.retain_recent();
            if self.limiter.len() >= self.max_keys {
                return Ok(());
            }
        }
        self.limiter.check_key(key).map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Keys in the table.
    pub fn len(&self) -> usize {
        self.limiter.len()
    }

    pub fn is_empty(&self) -> bool {
        self.limiter.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_past_its_attempts_waits_and_others_do_not() {
        let attempts = SignInAttempts::per_minute(NonZeroU32::new(2).unwrap(), 100);
        assert!(attempts.count(&"alice").is_ok());
        assert!(attempts.count(&"alice").is_ok());
        let wait = attempts.count(&"alice").unwrap_err();
        assert!(wait > Duration::from_secs(20) && wait <= Duration::from_secs(30), "{wait:?}");
        assert!(attempts.count(&"bob").is_ok());
    }

    #[test]
    fn a_full_table_does_not_grow_and_attempts_go_uncounted_while_it_is_full() {
        let attempts = SignInAttempts::per_minute(NonZeroU32::new(1).unwrap(), 3);
        attempts.count(&0).unwrap();
        assert!(attempts.count(&0).is_err(), "counted while there is room");
        for key in 1..3 {
            attempts.count(&key).unwrap();
        }
        for _ in 0..5 {
            assert!(attempts.count(&99).is_ok(), "uncounted while the table is full");
        }
        assert_eq!(attempts.len(), 3, "the table did not grow");
    }
}
