//! Keeping a long recording's samples within a bounded memory.
//!
//! Why: a day at 4 Hz is 345,600 samples, and a parsed [`Sample`] with its
//! maps and path lists takes a few KB: reading them all took 1.26 GB. The
//! analysis bins every series to at most a few thousand points anyway, so
//! the reader keeps an evenly spaced subset of at most [`MAX_SAMPLES`]:
//! every `stride`-th line, the stride doubling (and every other kept
//! sample dropped) whenever the subset would pass the bound. Lines that can
//! are still parsed (a damaged line is an error wherever it is), then
//! dropped. The last sample is always kept: it is where the recording ended.
//!
//! Cumulative figures (requests, CPU time, syscalls) lose nothing by this;
//! a level (RSS, fds) is seen at the kept ticks only, so a spike shorter
//! than the stride can be missed. A run of at most [`MAX_SAMPLES`] ticks
//! (2 h 16 min at 4 Hz) is read whole.

use crate::Sample;

/// The most samples a reader keeps of one run.
pub const MAX_SAMPLES: usize = 32_768;

/// Takes samples in order; keeps an evenly spaced subset.
pub(crate) struct Decimator {
    cap: usize,
    stride: u64,
    /// Samples seen so far (kept or not).
    seen: u64,
    kept: Vec<(u64, Sample)>,
    /// The latest sample not kept: the run's end, if nothing follows.
    last: Option<Sample>,
}

impl Decimator {
    pub(crate) fn new(cap: usize) -> Self {
        // Even, so that halving the kept samples never drops the newest.
        Decimator {
            cap: cap.max(2) & !1,
            stride: 1,
            seen: 0,
            kept: Vec::new(),
            last: None,
        }
    }

    pub(crate) fn push(&mut self, sample: Sample) {
        let i = self.seen;
        self.seen += 1;
        if !i.is_multiple_of(self.stride) {
            self.last = Some(sample);
            return;
        }
        self.kept.push((i, sample));
        self.last = None;
        if self.kept.len() > self.cap {
            self.stride *= 2;
            let stride = self.stride;
            self.kept.retain(|(i, _)| i.is_multiple_of(stride));
        }
    }

    /// Every sample seen so far.
    pub(crate) fn seen(&self) -> u64 {
        self.seen
    }

    /// Every `stride`-th sample was kept.
    pub(crate) fn stride(&self) -> u64 {
        self.stride
    }

    /// The kept samples in order, ending with the last one seen.
    pub(crate) fn finish(self) -> Vec<Sample> {
        let mut samples: Vec<Sample> = self.kept.into_iter().map(|(_, s)| s).collect();
        samples.extend(self.last);
        samples
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(n: u64, cap: usize) -> (Vec<u64>, u64) {
        let mut d = Decimator::new(cap);
        for seq in 0..n {
            d.push(Sample {
                seq,
                ..Sample::default()
            });
        }
        let stride = d.stride();
        (d.finish().iter().map(|s| s.seq).collect(), stride)
    }

    #[test]
    fn a_short_run_is_kept_whole() {
        let (kept, stride) = feed(100, 128);
        assert_eq!(kept, (0..100).collect::<Vec<_>>());
        assert_eq!(stride, 1);
    }

    #[test]
    fn a_long_run_is_evenly_spaced_within_the_bound_with_its_end() {
        for n in [129, 1000, 4097, 100_003] {
            let (kept, stride) = feed(n, 128);
            assert!(kept.len() <= 129 && kept.len() >= 64, "{n}: {}", kept.len());
            let body = &kept[..kept.len() - 1];
            assert!(body.windows(2).all(|w| w[1] - w[0] == stride), "{n}");
            assert_eq!(kept[0], 0);
            assert_eq!(*kept.last().unwrap(), n - 1, "{n}");
        }
    }
}
