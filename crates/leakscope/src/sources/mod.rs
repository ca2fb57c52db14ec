//! Where samples come from. Each source turns one look at the target into
//! its section of a [`leakscope_rundir::Sample`].

pub mod agent;
pub mod console;
pub mod fdpattern;
pub mod http;
pub mod metrics;
pub mod procfs;
pub mod sockdiag;
pub mod sockets;
