//! The `leakscope` binary's subcommands over the library.

pub mod args;
pub mod check;
pub mod load;
mod progress;
pub mod record;
pub mod report;
pub mod run;
mod session;
