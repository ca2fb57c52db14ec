//! Admission control: a global in-flight cap (503) and a per-IP token bucket
//! (429), the two limits the
//! million-downloads article puts in front of a download endpoint.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use prometheus_client::metrics::gauge::Gauge;

/// Counts requests whose response is still being produced *or streamed*.
#[derive(Debug)]
pub struct Inflight {
    current: AtomicUsize,
    max: usize,
    gauge: Gauge,
}

impl Inflight {
    pub fn new(max: usize, gauge: Gauge) -> Arc<Self> {
        Arc::new(Self {
            current: AtomicUsize::new(0),
            max,
            gauge,
        })
    }

    /// A slot, or `None` when `max` are taken.
    pub fn try_acquire(self: &Arc<Self>) -> Option<InflightGuard> {
        self.current
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()?;
        self.gauge.inc();
        Some(InflightGuard(Arc::clone(self)))
    }

    pub fn current(&self) -> usize {
        self.current.load(Ordering::Acquire)
    }
}

/// Releases its slot on drop, wherever the response ends (sent, failed, or
/// the client went away).
#[derive(Debug)]
pub struct InflightGuard(Arc<Inflight>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.current.fetch_sub(1, Ordering::AcqRel);
        self.0.gauge.dec();
    }
}

/// Per-client-IP token bucket (GCRA, via governor). The clock is a
/// parameter only so that unit tests can drive it (governor's
/// `FakeRelativeClock`) instead of depending on how fast they run.
pub struct PerIpRate<C: Clock = DefaultClock> {
    limiter: RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, C, NoOpMiddleware<C::Instant>>,
}

impl PerIpRate {
    /// `per_second` requests per second sustained, with a burst of the same size.
    pub fn new(per_second: NonZeroU32) -> Self {
        Self::with_clock(per_second, DefaultClock::default())
    }
}

impl<C: Clock> PerIpRate<C> {
    /// As [`PerIpRate::new`], on `clock`.
    pub fn with_clock(per_second: NonZeroU32, clock: C) -> Self {
        Self {
            limiter: RateLimiter::new(
                Quota::per_second(per_second),
                DefaultKeyedStateStore::default(),
                clock,
            ),
        }
    }

    /// `Err(wait)` when the client must back off for `wait`.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        self.limiter
            .check_key(&ip)
            .map_err(|not_until| not_until.wait_time_from(self.limiter.clock().now()))
    }

    /// Forgets clients whose buckets are full again. Without this the keyed
    /// state grows by one entry per client IP forever: the unbounded-map leak
    /// this project exists to catch.
    pub fn prune(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Clients with a bucket (the tests' view of the pruning).
    #[cfg(test)]
    fn tracked_clients(&self) -> usize {
        self.limiter.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inflight_caps_and_releases() {
        let inflight = Inflight::new(2, Gauge::default());
        let a = inflight.try_acquire().unwrap();
        let _b = inflight.try_acquire().unwrap();
        assert!(inflight.try_acquire().is_none());
        drop(a);
        assert!(inflight.try_acquire().is_some());
    }

    /// On a fake clock: a wall-clock version failed whenever the thread was
    /// preempted for more than a third of a second between checks (a token
    /// refilled and the fourth check passed).
    #[test]
    fn rate_limits_per_ip_and_prunes() {
        use governor::clock::FakeRelativeClock;
        let clock = FakeRelativeClock::default();
        let rate = PerIpRate::with_clock(NonZeroU32::new(3).unwrap(), clock.clone());
        let ip: IpAddr = "127.0.0.9".parse().unwrap();
        let other: IpAddr = "127.0.0.10".parse().unwrap();
        assert!((0..3).all(|_| rate.check(ip).is_ok()));
        // The burst is spent: the next token is a third of a second away.
        let wait = rate.check(ip).unwrap_err();
        assert_eq!(wait, Duration::from_nanos(333_333_333));
        assert!(rate.check(other).is_ok());
        assert_eq!(rate.tracked_clients(), 2);
        // Nothing is pruned while its bucket is still refilling.
        rate.prune();
        assert_eq!(rate.tracked_clients(), 2);
        // Not a moment before the wait is over; then exactly one token.
        clock.advance(wait - Duration::from_nanos(1));
        assert!(rate.check(ip).is_err());
        clock.advance(Duration::from_nanos(1));
        assert!(rate.check(ip).is_ok());
        assert!(rate.check(ip).is_err());
        // Everyone is forgotten once all buckets are long full again
        // (governor keeps a key one emission interval past full).
        clock.advance(Duration::from_secs(2));
        rate.prune();
        assert_eq!(rate.tracked_clients(), 0);
    }

    /// The bound tests/limits.rs checks on the real clock, exactly: a burst
    /// of `per_second`, then one request per 1/`per_second` s.
    #[test]
    fn a_burst_then_the_sustained_rate() {
        use governor::clock::FakeRelativeClock;
        let clock = FakeRelativeClock::default();
        let rate = PerIpRate::with_clock(NonZeroU32::new(5).unwrap(), clock.clone());
        let ip: IpAddr = "127.0.0.9".parse().unwrap();
        let ok = (0..20).filter(|_| rate.check(ip).is_ok()).count();
        assert_eq!(ok, 5);
        // Over the next second, every 200 ms one more passes.
        let mut ok = 0;
        for _ in 0..50 {
            clock.advance(Duration::from_millis(20));
            ok += (0..3).filter(|_| rate.check(ip).is_ok()).count();
        }
        assert_eq!(ok, 5);
    }
}
