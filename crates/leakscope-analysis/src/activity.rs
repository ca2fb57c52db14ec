//! Where an activity counter (read/write syscalls, CPU time) shows the
//! target working: the split of a recording into idle, work and idle.
//!
//! A recording of a service under someone else's load has that shape: a
//! baseline before the load, the load, and a tail after it. Each part has
//! its own level, and none of them need be flat or zero:
//! - the work's rate changes as it goes (a service slowed to half its pace
//!   by its own leak is still working);
//! - the tail's idle level can sit well above the baseline's (ten thousand
//!   leaked timers wake the runtime, and each wake is a write).
//!
//! So neither a split of the rates by one threshold nor a split by ratio
//! is right: each fails on one of those (both happened on the leak zoo).
//! The split here is the least-squares fit of three constant levels to the
//! rates' logarithms, over every pair of boundaries, with the middle level
//! required to stand above each outer one by more than the counter can
//! resolve. Logarithms, because work and idle differ by orders of magnitude
//! while work varies by factors: on a linear scale one fast stretch
//! outweighs a long slow one.

use leakscope_rundir::Sample;

/// Two readings of a tick counter are each off by up to one tick, so their
/// difference by up to two: a working level must stand more than that above
/// the idle one to be told from it.
pub const MIN_SEPARATION_QUANTA: f64 = 3.0;

/// Longest series split exactly; longer ones are split on bins of ticks
/// (the search is quadratic), which moves a boundary by under a bin.
const MAX_POINTS: usize = 4096;

pub enum Activity {
    /// Samples `first..=last`: the work ran through the ticks ending at
    /// them.
    Part(usize, usize),
    Throughout,
    None,
}

/// One tick's rate of the counter (per second) and its length.
type Tick = Option<(f64, f64)>;

/// Splits the ticks of `counter` into idle, work and idle (see the module
/// doc). A work stretch of a single tick is not work: the sidecar's own
/// heap-profile dump or a scrape costs one tick of work in the target.
/// `None` when fewer than two ticks carry the counter.
pub fn working_ticks(
    samples: &[Sample],
    counter: impl Fn(&Sample) -> Option<f64>,
    quantum: f64,
) -> Option<Activity> {
    let ticks: Vec<Tick> = (1..samples.len())
        .map(|i| {
            let (a, b) = (counter(&samples[i - 1])?, counter(&samples[i])?);
            let dt = (samples[i].t_ms.saturating_sub(samples[i - 1].t_ms)) as f64 / 1000.0;
            (dt > 0.0).then(|| ((b - a).max(0.0) / dt, dt))
        })
        .collect();
    // Only ticks that carry the counter take part; `at` maps back.
    let at: Vec<usize> = (0..ticks.len()).filter(|&i| ticks[i].is_some()).collect();
    let rates: Vec<f64> = at.iter().filter_map(|&i| ticks[i]).map(|t| t.0).collect();
    if rates.len() < 2 {
        return None;
    }
    let mut dts: Vec<f64> = ticks.iter().flatten().map(|t| t.1).collect();
    let dt = crate::median(&mut dts).unwrap_or(1.0);
    let resolvable = MIN_SEPARATION_QUANTA * quantum / dt;
    let Some((a, b)) = split(&rates, quantum / dt, resolvable) else {
        let level = crate::median(&mut rates.clone()).unwrap_or(0.0);
        return Some(if level >= resolvable {
            Activity::Throughout
        } else {
            Activity::None
        });
    };
    // Work in known ticks a..b; tick i ends at sample i + 1.
    Some(Activity::Part(at[a] + 1, at[b - 1] + 1))
}

/// Prefix sums of a series and its squares, for any stretch's sum of
/// squared deviations from its mean in O(1).
struct Prefix {
    sum: Vec<f64>,
    sq: Vec<f64>,
}

impl Prefix {
    fn new(v: &[f64]) -> Self {
        let mut sum = vec![0.0; v.len() + 1];
        let mut sq = vec![0.0; v.len() + 1];
        for (i, x) in v.iter().enumerate() {
            sum[i + 1] = sum[i] + x;
            sq[i + 1] = sq[i] + x * x;
        }
        Self { sum, sq }
    }

    fn mean(&self, a: usize, b: usize) -> Option<f64> {
        (b > a).then(|| (self.sum[b] - self.sum[a]) / (b - a) as f64)
    }

    fn sse(&self, a: usize, b: usize) -> f64 {
        match self.mean(a, b) {
            Some(m) => (self.sq[b] - self.sq[a]) - m * (self.sum[b] - self.sum[a]),
            None => 0.0,
        }
    }
}

/// The boundaries `(a, b)` of the work among `rates` (ticks `a..b`), or
/// `None` when no stretch of two or more ticks, starting and ending on a
/// busy one, stands above what surrounds it by `resolvable`. Rates under `least` (one quantum per tick) are
/// indistinguishable from zero and count as `least`.
fn split(rates: &[f64], least: f64, resolvable: f64) -> Option<(usize, usize)> {
    let bin = rates.len().div_ceil(MAX_POINTS).max(1);
    let binned: Vec<f64> = rates
        .chunks(bin)
        .map(|c| c.iter().sum::<f64>() / c.len() as f64)
        .collect();
    let logs: Vec<f64> = binned.iter().map(|r| r.max(least).ln()).collect();
    let (log, lin) = (Prefix::new(&logs), Prefix::new(&binned));
    let n = binned.len();
    // The work, and each of its first and last ticks, stand above both
    // idle levels: a stretch cannot reach out to swallow a lone busy tick.
    let stands_above = |level: f64, a: usize, b: usize| {
        lin.mean(0, a).is_none_or(|idle| level - idle >= resolvable)
            && lin.mean(b, n).is_none_or(|idle| level - idle >= resolvable)
    };
    let mut best: Option<(f64, usize, usize)> = None;
    for a in 0..n {
        for b in a + 2..=n {
            let Some(inner) = lin.mean(a, b) else {
                continue;
            };
            if (a == 0 && b == n)
                || ![inner, binned[a], binned[b - 1]]
                    .iter()
                    .all(|&level| stands_above(level, a, b))
            {
                continue;
            }
            let cost = log.sse(0, a) + log.sse(a, b) + log.sse(b, n);
            if best.is_none_or(|(c, _, _)| cost < c) {
                best = Some((cost, a, b));
            }
        }
    }
    best.map(|(_, a, b)| (a * bin, (b * bin).min(rates.len())))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rates per tick of 0.1 s, as the split sees them.
    fn rates(parts: &[(f64, usize)]) -> Vec<f64> {
        parts
            .iter()
            .flat_map(|&(r, n)| std::iter::repeat_n(r * 10.0, n))
            .collect()
    }

    fn split_of(parts: &[(f64, usize)]) -> Option<(usize, usize)> {
        split(&rates(parts), 10.0, 30.0)
    }

    /// The leak zoo's task-channel burst: a fast start, then half the pace
    /// as the leak slows it down, then idle.
    #[test]
    fn slow_work_after_fast_work_is_work() {
        let got = split_of(&[(5.0, 6), (2200.0, 3), (1000.0, 17), (5.0, 20)]);
        assert_eq!(got, Some((6, 26)));
    }

    /// The leak zoo's task-timer, paced: ten thousand leaked timers keep
    /// the tail at a third of the working rate.
    #[test]
    fn a_busy_tail_after_the_work_is_not_work() {
        let got = split_of(&[(4.0, 6), (350.0, 40), (117.0, 20)]);
        assert_eq!(got, Some((6, 46)));
    }

    /// Attached while the load ran: work from the first tick, then idle.
    #[test]
    fn work_from_the_start_has_no_baseline() {
        let got = split_of(&[(2200.0, 3), (1000.0, 17), (5.0, 20)]);
        assert_eq!(got, Some((0, 20)));
    }

    /// Idle with one busy tick (a heap-profile dump), or at one level
    /// throughout: no stretch of work.
    #[test]
    fn lone_ticks_and_flat_series_have_no_work() {
        assert_eq!(split_of(&[(5.0, 10), (900.0, 1), (5.0, 10)]), None);
        assert_eq!(split_of(&[(700.0, 30)]), None);
        // Levels closer than three quanta per tick are one level.
        assert_eq!(split_of(&[(1.0, 10), (3.0, 10), (1.0, 10)]), None);
    }

    /// A long recording is split on bins, to within a bin.
    #[test]
    fn long_series_are_split_to_within_a_bin() {
        let got = split_of(&[(5.0, 5000), (800.0, 7000), (5.0, 3000)]).unwrap();
        assert!(
            got.0.abs_diff(5000) <= 4 && got.1.abs_diff(12000) <= 4,
            "{got:?}"
        );
    }
}
