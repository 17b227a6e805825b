//! Per-user rate limits (`LIMIT_USER_*`): messages and body bytes per
//! second, group changes per minute. Over a limit is `RESOURCE_EXHAUSTED`,
//! reason `rate_limited`, with the wait until the request would pass
//! (client protocol `retry_after_ms`, gRPC `RetryInfo`), counted in
//! `im_rate_limited_total{limit}`.
//!
//! GCRA buckets from `governor`, one per user and limit, kept per process: a
//! user whose sends land on two nodes has each node's allowance. Each limit
//! allows a burst of twice its rate, so a client that reconnects and sends
//! what it queued meanwhile is not refused. Buckets of users who have been
//! quiet long enough to be full again are dropped every minute, so the
//! table holds the recently active users only.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use im_config::LimitsConfig;
use im_core::{ErrorReason, ImError, UserId};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::metrics::LimitLabel;

/// How often buckets of quiet users are dropped.
const CLEANUP_EVERY: Duration = Duration::from_secs(60);

/// The limits a request can run into, as the metric's `limit` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    Messages,
    Bytes,
    GroupChanges,
    Connections,
}

impl Limit {
    pub const ALL: [Limit; 4] = [Limit::Messages, Limit::Bytes, Limit::GroupChanges, Limit::Connections];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Messages => "messages",
            Self::Bytes => "bytes",
            Self::GroupChanges => "group_changes",
            Self::Connections => "connections",
        }
    }
}

/// `im_rate_limited_total{limit}`: every series from the start.
#[derive(Clone, Default)]
pub struct RateLimitMetrics(Family<LimitLabel, Counter>);

impl RateLimitMetrics {
    pub fn register(&self, registry: &mut Registry) {
        for limit in Limit::ALL {
            drop(self.0.get_or_create(&LimitLabel { limit: limit.as_str() }));
        }
        registry.register(
            "rate_limited",
            "Requests refused by a rate limit (LIMIT_USER_*, LIMIT_NEW_CONNECTIONS_PER_IP), by limit",
            self.0.clone(),
        );
    }

    pub fn refused(&self, limit: Limit) {
        self.0.get_or_create(&LimitLabel { limit: limit.as_str() }).inc();
    }

    /// Refusals counted under `limit` so far.
    pub fn count(&self, limit: Limit) -> u64 {
        self.0.get_or_create(&LimitLabel { limit: limit.as_str() }).get()
    }
}

/// A GCRA bucket per key, or nothing when the limit is off (rate 0).
pub struct KeyedLimit<K: std::hash::Hash + Eq + Clone> {
    limiter: Option<DefaultKeyedRateLimiter<K>>,
}

impl<K: std::hash::Hash + Eq + Clone> KeyedLimit<K> {
    /// `rate` per `per`, a burst of twice that; 0 turns the limit off.
    pub fn new(rate: u32, per: Duration) -> Self {
        let limiter = NonZeroU32::new(rate).map(|rate| {
            let period = per / rate.get();
            let burst = rate.saturating_mul(NonZeroU32::new(2).expect("2 is not 0"));
            let quota = Quota::with_period(period.max(Duration::from_nanos(1)))
                .expect("a period of at least 1 ns")
                .allow_burst(burst);
            RateLimiter::keyed(quota)
        });
        Self { limiter }
    }

    /// Takes `n` from `key`'s bucket, or says how long until it could. A
    /// request larger than the whole burst is let through alone when the
    /// bucket is full (it is bounded elsewhere, e.g. by the message size).
    pub fn take(&self, key: &K, n: u32) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else { return Ok(()) };
        let Some(n) = NonZeroU32::new(n) else { return Ok(()) };
        match limiter.check_key_n(key, n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(not_until.wait_time_from(DefaultClock::default().now())),
            Err(_insufficient_capacity) => {
                limiter.check_key(key).map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
            }
        }
    }

    /// Drops the buckets that are full again (their users went quiet).
    pub fn forget_quiet(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

/// The per-user limits of one process.
pub struct UserRateLimits {
    messages: KeyedLimit<UserId>,
    bytes: KeyedLimit<UserId>,
    group_changes: KeyedLimit<UserId>,
    metrics: RateLimitMetrics,
}

impl UserRateLimits {
    pub fn new(limits: &LimitsConfig, metrics: RateLimitMetrics) -> Arc<Self> {
        let second = Duration::from_secs(1);
        let bytes = u32::try_from(limits.user_bytes_per_second).unwrap_or(u32::MAX);
        Arc::new(Self {
            messages: KeyedLimit::new(limits.user_messages_per_second, second),
            bytes: KeyedLimit::new(bytes, second),
            group_changes: KeyedLimit::new(limits.user_group_changes_per_minute, Duration::from_secs(60)),
            metrics,
        })
    }

    /// No limit at all: for tests of everything else.
    pub fn unlimited() -> Arc<Self> {
        let off = || KeyedLimit::new(0, Duration::from_secs(1));
        Arc::new(Self { messages: off(), bytes: off(), group_changes: off(), metrics: RateLimitMetrics::default() })
    }

    /// A send of `body_len` bytes by `user`.
    pub fn check_send(&self, user: UserId, body_len: usize) -> Result<(), ImError> {
        self.check(Limit::Messages, &self.messages, user, 1)?;
        self.check(Limit::Bytes, &self.bytes, user, u32::try_from(body_len).unwrap_or(u32::MAX))
    }

    /// A group created, or a membership or role changed, by `user`.
    pub fn check_group_change(&self, user: UserId) -> Result<(), ImError> {
        self.check(Limit::GroupChanges, &self.group_changes, user, 1)
    }

    fn check(&self, limit: Limit, bucket: &KeyedLimit<UserId>, user: UserId, n: u32) -> Result<(), ImError> {
        bucket.take(&user, n).map_err(|wait| {
            self.metrics.refused(limit);
            rate_limited(limit, wait)
        })
    }

    /// Drops quiet users' buckets every minute until `shutdown`.
    pub fn spawn_cleanup(self: &Arc<Self>, shutdown: CancellationToken) {
        let limits = self.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(CLEANUP_EVERY);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = every.tick() => {
                        limits.messages.forget_quiet();
                        limits.bytes.forget_quiet();
                        limits.group_changes.forget_quiet();
                    }
                }
            }
        });
    }
}

/// The refusal of a request over `limit`, to retry after `wait`.
pub fn rate_limited(limit: Limit, wait: Duration) -> ImError {
    // A whole millisecond at least: 0 reads as "no hint" on the wire.
    let mut refusal = ImError::exhausted("")
        .with_reason(ErrorReason::RateLimited)
        .with_retry_after(wait.max(Duration::from_millis(1)));
    // The text says the same wait as the hint (rounded up).
    let ms = refusal.retry_after_ms().unwrap_or(1);
    refusal.message = format!("rate limit on {} reached: retry in {ms} ms", limit.as_str());
    refusal
}

#[cfg(test)]
mod tests {
    use super::*;
    use im_core::ErrorCode;

    fn limits(messages: u32, bytes: usize, group_changes: u32) -> LimitsConfig {
        LimitsConfig {
            user_messages_per_second: messages,
            user_bytes_per_second: bytes,
            user_group_changes_per_minute: group_changes,
            ..LimitsConfig::default()
        }
    }

    #[test]
    fn a_user_gets_a_burst_of_twice_the_rate_then_a_typed_refusal_with_a_wait() {
        let metrics = RateLimitMetrics::default();
        let limits = UserRateLimits::new(&limits(10, 1 << 20, 60), metrics.clone());
        for _ in 0..20 {
            limits.check_send(UserId(1), 10).unwrap();
        }
        let refused = limits.check_send(UserId(1), 10).unwrap_err();
        assert_eq!(refused.code, ErrorCode::ResourceExhausted);
        assert_eq!(refused.reason, Some(ErrorReason::RateLimited));
        let wait = refused.retry_after.expect("a retry hint");
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(100), "{wait:?}");
        // Another user has a bucket of their own.
        limits.check_send(UserId(2), 10).unwrap();
        assert_eq!(metrics.count(Limit::Messages), 1);
    }

    #[test]
    fn bytes_are_limited_apart_from_messages_and_one_large_body_still_passes_alone() {
        let user_limits = UserRateLimits::new(&limits(1000, 1000, 60), RateLimitMetrics::default());
        user_limits.check_send(UserId(1), 1500).unwrap();
        user_limits.check_send(UserId(1), 500).unwrap();
        let refused = user_limits.check_send(UserId(1), 100).unwrap_err();
        assert!(refused.message.contains("bytes"), "{}", refused.message);
        // Larger than the whole burst (2000): refused only while the bucket
        // is not full.
        let fresh = UserRateLimits::new(&limits(1000, 1000, 60), RateLimitMetrics::default());
        fresh.check_send(UserId(1), 5000).unwrap();
    }

    #[test]
    fn group_changes_are_counted_per_minute() {
        let limits = UserRateLimits::new(&limits(10, 1000, 3), RateLimitMetrics::default());
        for _ in 0..6 {
            limits.check_group_change(UserId(1)).unwrap();
        }
        let wait = limits.check_group_change(UserId(1)).unwrap_err().retry_after.unwrap();
        assert!(wait > Duration::from_secs(10) && wait <= Duration::from_secs(20), "{wait:?}");
    }

    #[test]
    fn zero_turns_a_limit_off() {
        let limits = UserRateLimits::new(&limits(0, 0, 0), RateLimitMetrics::default());
        for _ in 0..10_000 {
            limits.check_send(UserId(1), 1 << 20).unwrap();
            limits.check_group_change(UserId(1)).unwrap();
        }
    }

    #[test]
    fn quiet_users_are_forgotten() {
        let bucket = KeyedLimit::new(1_000_000, Duration::from_secs(1));
        for user in 0..100 {
            bucket.take(&UserId(user), 1).unwrap();
        }
        std::thread::sleep(Duration::from_millis(5));
        bucket.forget_quiet();
        assert_eq!(bucket.limiter.as_ref().unwrap().len(), 0);
    }
}
