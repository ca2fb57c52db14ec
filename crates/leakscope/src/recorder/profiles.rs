//! Heap profiles: when to take one ([`ProfileSchedule`]) and taking it
//! ([`Profiles`]).
//!
//! The first profile is the baseline of every diff and the last one the
//! other half, so both are waited for; the ones between are a dump plus
//! symbolization in the target, up to seconds for a large binary, so they
//! run beside the ticks, never in one, and the series keeps its pace.

use std::time::{Duration, Instant};

use leakscope_rundir::{ProfileKind, RunWriter, Sample};

use super::books::{Books, AGENT_HEAP};
use crate::sources::agent::AgentSource;

/// What a tick does about heap profiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileStep {
    Skip,
    /// The first profile, taken in this tick however long it takes.
    Baseline,
    /// One of every `heap_profile_every`, fetched beside the ticks.
    Periodic,
    /// The end profile, taken in this last tick after the one in flight.
    End,
}

/// How a tick stands, as far as profiles care.
#[derive(Debug, Clone, Copy)]
pub struct ProfileTick {
    /// The target lives and its agent answered this tick: a silent agent
    /// would hold the tick for the profile's whole deadline.
    pub reachable: bool,
    /// The recording ends after this tick.
    pub last: bool,
    /// A periodic profile is still being fetched.
    pub in_flight: bool,
}

/// When heap profiles are taken: a baseline in the first tick the agent
/// answers (before any load starts, if it answers at once), one every
/// `every` after it, and one at the end.
///
/// Why the period stretches: at a profile every 10 s, a day is 8,640
/// profiles of ~8 KB, 70 MB of a run directory. The gap is at least
/// `every`, and at least the time recorded so far over
/// [`PROFILES_PER_ELAPSED`]: the first hour keeps its 360 profiles, a day
/// ends with about 1,500 (360 + 360·ln 24), and the recent past is always
/// dense.
#[derive(Debug, Clone)]
pub struct ProfileSchedule {
    every: Option<Duration>,
    first: Option<Instant>,
    last: Option<Instant>,
}

/// The gap between periodic profiles is at least the time since the
/// baseline over this.
pub const PROFILES_PER_ELAPSED: u32 = 360;

impl ProfileSchedule {
    /// `every: None` takes only the baseline and the end profile.
    pub fn new(every: Option<Duration>) -> Self {
        ProfileSchedule {
            every,
            first: None,
            last: None,
        }
    }

    /// The gap before the next periodic profile, as of `now`.
    fn gap(&self, every: Duration, now: Instant) -> Duration {
        let elapsed = self
            .first
            .map_or(Duration::ZERO, |f| now.saturating_duration_since(f));
        every.max(elapsed / PROFILES_PER_ELAPSED)
    }

    pub fn step(&self, now: Instant, tick: ProfileTick) -> ProfileStep {
        if !tick.reachable {
            return ProfileStep::Skip;
        }
        if tick.last {
            return ProfileStep::End;
        }
        let Some(last) = self.last else {
            return ProfileStep::Baseline;
        };
        let due = self
            .every
            .is_some_and(|every| now.saturating_duration_since(last) >= self.gap(every, now));
        if due && !tick.in_flight {
            ProfileStep::Periodic
        } else {
            ProfileStep::Skip
        }
    }

    /// The next periodic profile is due `every` after `at`: the baseline's
    /// end (it is waited for) or a periodic one's start.
    pub fn taken(&mut self, at: Instant) {
        self.first.get_or_insert(at);
        self.last = Some(at);
    }
}

/// A heap profile being fetched and written on its own task.
struct PendingProfile {
    name: String,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

impl PendingProfile {
    fn start(agent: &AgentSource, writer: &RunWriter, seq: u64) -> Self {
        let (path, name) = writer.profile_path(ProfileKind::Heap, seq);
        let agent = agent.clone();
        let task = tokio::spawn(async move {
            let bytes = agent
                .heap_profile()
                .await
                .map_err(|e| format!("heap profile: {e}"))?;
            tokio::fs::write(&path, &bytes)
                .await
                .map_err(|e| format!("writing {}: {e}", path.display()))
        });
        PendingProfile { name, task }
    }

    /// Waits for it; the sample names its file, or the agent's errors say
    /// why there is none.
    async fn finish(self, sample: &mut Sample, books: &mut Books) {
        match self.task.await {
            Ok(Ok(())) => sample.heap_profile = Some(self.name),
            Ok(Err(e)) => books.error(AGENT_HEAP.source, e),
            Err(e) => books.error(AGENT_HEAP.source, format!("heap profile task: {e}")),
        }
    }
}

/// The agent's profiles: the schedule and the periodic one in flight, if
/// any.
pub struct Profiles {
    agent: AgentSource,
    schedule: ProfileSchedule,
    pending: Option<PendingProfile>,
}

impl Profiles {
    pub fn new(agent: &AgentSource, every: Option<Duration>) -> Self {
        Profiles {
            agent: agent.clone(),
            schedule: ProfileSchedule::new(every),
            pending: None,
        }
    }

    /// This tick's part: a periodic profile that finished is named in this
    /// sample (its file is named for the tick that asked), then whatever
    /// the schedule says is started or taken.
    pub async fn tick(
        &mut self,
        writer: &RunWriter,
        seq: u64,
        reachable: bool,
        last: bool,
        sample: &mut Sample,
        books: &mut Books,
    ) {
        if self.pending.as_ref().is_some_and(|p| p.task.is_finished()) {
            let p = self.pending.take().expect("checked");
            p.finish(sample, books).await;
        }
        let now = Instant::now();
        let tick = ProfileTick {
            reachable,
            last,
            in_flight: self.pending.is_some(),
        };
        match self.schedule.step(now, tick) {
            ProfileStep::Skip => {}
            ProfileStep::End => {
                // The one in flight is waited for (its file stays; this
                // sample names the end one).
                if let Some(p) = self.pending.take() {
                    p.finish(sample, books).await;
                }
                PendingProfile::start(&self.agent, writer, seq)
                    .finish(sample, books)
                    .await;
            }
            ProfileStep::Baseline => {
                PendingProfile::start(&self.agent, writer, seq)
                    .finish(sample, books)
                    .await;
                self.schedule.taken(Instant::now());
            }
            ProfileStep::Periodic => {
                self.pending = Some(PendingProfile::start(&self.agent, writer, seq));
                self.schedule.taken(now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVERY: Duration = Duration::from_secs(10);

    fn tick(reachable: bool, last: bool, in_flight: bool) -> ProfileTick {
        ProfileTick {
            reachable,
            last,
            in_flight,
        }
    }

    #[test]
    fn the_baseline_waits_for_the_agent_then_profiles_come_every_period() {
        let t0 = Instant::now();
        let mut s = ProfileSchedule::new(Some(EVERY));
        // An agent that has not answered yet gets no profile.
        assert_eq!(s.step(t0, tick(false, false, false)), ProfileStep::Skip);
        assert_eq!(s.step(t0, tick(true, false, false)), ProfileStep::Baseline);
        s.taken(t0);
        assert_eq!(
            s.step(t0 + EVERY / 2, tick(true, false, false)),
            ProfileStep::Skip
        );
        assert_eq!(
            s.step(t0 + EVERY, tick(true, false, false)),
            ProfileStep::Periodic
        );
        s.taken(t0 + EVERY);
        // Counted from the last one taken, not from the baseline.
        assert_eq!(
            s.step(t0 + EVERY * 3 / 2, tick(true, false, false)),
            ProfileStep::Skip
        );
        assert_eq!(
            s.step(t0 + EVERY * 2, tick(true, false, false)),
            ProfileStep::Periodic
        );
    }

    #[test]
    fn a_day_of_profiles_is_bounded_and_the_recent_past_dense() {
        let t0 = Instant::now();
        let mut s = ProfileSchedule::new(Some(EVERY));
        s.taken(t0);
        let (mut taken, mut gaps) = (0u32, Vec::new());
        let mut last = t0;
        // A 250 ms tick for 24 hours.
        for i in 1..=(24 * 3600 * 4u32) {
            let now = t0 + Duration::from_millis(250) * i;
            if s.step(now, tick(true, false, false)) == ProfileStep::Periodic {
                s.taken(now);
                gaps.push(now - last);
                last = now;
                taken += 1;
            }
        }
        // 360 in the first hour, then 360 per e-fold of time: 360 ln 24.
        let expected = 360.0 + 360.0 * 24f64.ln();
        assert!(
            (taken as f64 - expected).abs() < 0.05 * expected,
            "{taken} vs {expected:.0}"
        );
        assert_eq!(gaps[0], EVERY);
        // The last gap is the day over 360: 4 minutes.
        let end = gaps.last().unwrap().as_secs_f64();
        assert!((end - 240.0).abs() < 2.0, "{end}");
    }

    #[test]
    fn one_periodic_profile_at_a_time_and_none_from_a_silent_agent() {
        let t0 = Instant::now();
        let mut s = ProfileSchedule::new(Some(EVERY));
        s.taken(t0);
        let late = t0 + EVERY * 5;
        assert_eq!(s.step(late, tick(true, false, true)), ProfileStep::Skip);
        assert_eq!(s.step(late, tick(false, false, false)), ProfileStep::Skip);
        assert_eq!(
            s.step(late, tick(true, false, false)),
            ProfileStep::Periodic
        );
    }

    #[test]
    fn the_last_tick_takes_the_end_profile_if_the_agent_answers() {
        let t0 = Instant::now();
        let mut s = ProfileSchedule::new(Some(EVERY));
        // Even before any baseline, and with one in flight (it is waited for).
        assert_eq!(s.step(t0, tick(true, true, false)), ProfileStep::End);
        s.taken(t0);
        assert_eq!(s.step(t0, tick(true, true, true)), ProfileStep::End);
        // A dead target or a silent agent: none.
        assert_eq!(s.step(t0, tick(false, true, false)), ProfileStep::Skip);
    }

    #[test]
    fn without_a_period_only_the_baseline_and_the_end() {
        let t0 = Instant::now();
        let mut s = ProfileSchedule::new(None);
        assert_eq!(s.step(t0, tick(true, false, false)), ProfileStep::Baseline);
        s.taken(t0);
        let much_later = t0 + Duration::from_secs(3600);
        assert_eq!(
            s.step(much_later, tick(true, false, false)),
            ProfileStep::Skip
        );
        assert_eq!(
            s.step(much_later, tick(true, true, false)),
            ProfileStep::End
        );
    }
}
