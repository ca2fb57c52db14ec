//! The `leakscope` binary's subcommands over the library.

pub mod args;
mod progress;
pub mod record;
pub mod run;
mod session;
