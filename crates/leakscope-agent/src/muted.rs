//! The subscriber the agent's own threads run under.
//!
//! The agent's threads must not show up in the host's traces (nor in the
//! console), so each sets a subscriber that records nothing as its default.
//! tracing-core's `NoSubscriber` would do that, but it gives no level hint,
//! and the process's maximum level is the highest hint of all live
//! subscribers, "none" counting as TRACE. One muted thread would then make
//! every TRACE callsite in the host ask its subscriber at each hit, and a
//! subscriber that answers yes (an absent layer as `Option::None`, see
//! [`crate::console::optional`]) records a span per tokio task and timer.
//! This one says OFF.

use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber};

/// Records nothing and says so in its level hint.
pub(crate) struct Muted;

impl Subscriber for Muted {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        Interest::never()
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::OFF)
    }

    fn enabled(&self, _: &Metadata<'_>) -> bool {
        false
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        // Never called: `enabled` is false. Ids must be non-zero.
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, _: &Event<'_>) {}

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

/// Makes [`Muted`] this thread's default until the guard drops.
pub(crate) fn mute_this_thread() -> tracing::subscriber::DefaultGuard {
    tracing::subscriber::set_default(Muted)
}
