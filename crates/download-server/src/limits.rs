//! Admission control: a global in-flight cap (503) and a per-IP token bucket
//! (429), the two limits seed 003 puts in front of a download endpoint.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
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

/// Per-client-IP token bucket (GCRA, via governor).
pub struct PerIpRate {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
}

impl PerIpRate {
    /// `per_second` requests per second sustained, with a burst of the same size.
    pub fn new(per_second: NonZeroU32) -> Self {
        Self {
            limiter: RateLimiter::keyed(Quota::per_second(per_second)),
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

    pub fn tracked_clients(&self) -> usize {
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

    #[test]
    fn rate_limits_per_ip_and_prunes() {
        let rate = PerIpRate::new(NonZeroU32::new(3).unwrap());
        let ip: IpAddr = "127.0.0.9".parse().unwrap();
        let other: IpAddr = "127.0.0.10".parse().unwrap();
        assert!((0..3).all(|_| rate.check(ip).is_ok()));
        let wait = rate.check(ip).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1));
        assert!(rate.check(other).is_ok());
        assert_eq!(rate.tracked_clients(), 2);
    }
}
