//! The `leakscope` binary's subcommands over the library.

pub mod args;
pub mod load;
mod progress;
pub mod record;
pub mod run;
mod session;
