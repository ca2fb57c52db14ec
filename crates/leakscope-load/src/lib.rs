//! A bounded HTTP load driver for leak hunting.
//!
//! Throughput tools (wrk, oha) measure how fast a server answers; leaks need
//! something else: clients that behave the way the leaking code paths need
//! (give up half way, read slowly, ask for ranges or archives) and counts a
//! recorder can read while the load runs, so every sample knows how many
//! requests the process had served. Every load is bounded in time and,
//! optionally, in requests, so a test or a profile run always ends.
//!
//! ```no_run
//! # async fn demo() -> Result<(), leakscope_load::PlanError> {
//! use std::time::Duration;
//! use leakscope_load::{Load, Plan};
//! let load = Load::start(Plan {
//!     urls: vec!["http://127.0.0.1:8080/s/fd-leak/big.bin".parse().unwrap()],
//!     pattern: "abort:64KiB".parse().unwrap(),
//!     concurrency: "8".parse().unwrap(),
//!     duration: Duration::from_secs(10),
//!     max_requests: Some(1_000),
//!     request_timeout: Duration::from_secs(30),
//!     rate: None,
//! })?;
//! let live = load.counters(); // read `live.counts()` while it runs
//! let summary = load.finish().await;
//! println!("{} aborted, {:.0} req/s", summary.counts.aborted, summary.requests_per_sec());
//! # Ok(()) }
//! ```

mod driver;

pub use driver::{Counters, Counts, Latency, Load, Plan, PlanError, Summary};
/// The patterns and their spellings live in their own crate, so a
/// scenario table can name its load without depending on the driver.
pub use leakscope_loadspec::{ByteRange, Concurrency, Pattern, SpecError};
