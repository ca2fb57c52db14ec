//! A sample's `load` section: requests served, and the driver's counts.

use leakscope_load::Counts;
use leakscope_rundir::LoadSample;

use super::poll::Taken;

/// Requests served come from the target's own counter when it has one (it
/// sees every client, not just ours); the driver's otherwise, counting only
/// those that succeeded (an abort is the driver's own choice after the
/// response began): a 404 or a refused connection is not work the service
/// did. Once the target's counter has been read, a tick without it has no
/// figure: the driver's count is smaller, and mixing the two would read as
/// the counter going down.
#[derive(Debug, Default)]
pub struct Served {
    metrics_seen: bool,
}

impl Served {
    /// `driven`: the driver's counts, when it drives the target; `scraped`:
    /// `None` without a metrics source, else the counter if this tick's
    /// scrape had it. The section comes with when its requests figure was
    /// taken.
    pub fn section(
        &mut self,
        driven: Option<(Counts, Taken)>,
        scraped: Option<Option<(u64, Taken)>>,
    ) -> Option<(LoadSample, Taken)> {
        let mut served = driven.map(|(c, at)| (c.done + c.aborted, at));
        if let Some(total) = scraped {
            self.metrics_seen |= total.is_some();
            served = if self.metrics_seen {
                total
            } else {
                total.or(served)
            };
        }
        let (requests_total, at) = served?;
        let c = driven.map(|d| d.0).unwrap_or_default();
        let section = LoadSample {
            requests_total,
            done: c.done,
            failed: c.failed,
            aborted: c.aborted,
            bytes: c.bytes,
            concurrency: c.concurrency,
        };
        Some((section, at))
    }

    /// Whether any scrape had the counter: a misspelt one must not read as
    /// "no load".
    pub fn metrics_seen(&self) -> bool {
        self.metrics_seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn driven(done: u64, aborted: u64, failed: u64) -> Option<(Counts, Taken)> {
        let counts = Counts {
            done,
            aborted,
            failed,
            ..Counts::default()
        };
        Some((counts, Taken::now()))
    }

    fn requests(section: Option<(LoadSample, Taken)>) -> Option<u64> {
        section.map(|s| s.0.requests_total)
    }

    #[test]
    fn the_driver_counts_what_the_service_served() {
        let mut served = Served::default();
        let s = served.section(driven(7, 2, 5), None).unwrap().0;
        assert_eq!(
            (s.requests_total, s.done, s.failed, s.aborted),
            (9, 7, 5, 2)
        );
        assert_eq!(requests(served.section(None, None)), None);
    }

    #[test]
    fn the_targets_counter_wins_and_once_seen_is_never_mixed_with_the_driver() {
        let mut served = Served::default();
        // Before the counter first appears, the driver's figure stands in.
        assert_eq!(
            requests(served.section(driven(3, 0, 0), Some(None))),
            Some(3)
        );
        assert!(!served.metrics_seen());
        assert_eq!(
            requests(served.section(driven(4, 0, 0), Some(Some((40, Taken::now()))))),
            Some(40)
        );
        assert!(served.metrics_seen());
        // A failed scrape after that: no figure rather than a smaller one.
        assert_eq!(requests(served.section(driven(5, 0, 0), Some(None))), None);
        // Without a driver, the counter alone.
        assert_eq!(
            requests(served.section(None, Some(Some((41, Taken::now()))))),
            Some(41)
        );
    }
}
