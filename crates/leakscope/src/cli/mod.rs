//! The `leakscope` binary's subcommands over the library.
//!
//! Output goes through [`say!`] and [`tell!`], never `println!`: those
//! panic when the reader has gone (`leakscope report … | head -1`, or a
//! terminal closed under `record`), and a closed pipe is the reader's
//! choice, not a reason to lose the exit status or the run directory.

/// A line on stdout; a closed stdout is ignored (see the module doc).
macro_rules! say {
    ($($arg:tt)*) => { $crate::cli::say_line(format_args!($($arg)*)) };
}

/// A line on stderr that cannot panic: `eprintln!` without the panic.
macro_rules! tell {
    ($($arg:tt)*) => { $crate::cli::tell_line(format_args!($($arg)*)) };
}

pub(crate) use tell;

pub(crate) fn say_line(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    if let Err(e) = writeln!(std::io::stdout(), "{line}") {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            tell_line(format_args!("warning: writing to stdout: {e}"));
        }
    }
}

pub(crate) fn tell_line(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

pub mod args;
pub mod check;
pub mod fleet;
pub mod load;
mod progress;
pub mod record;
pub mod report;
pub mod run;
mod session;
