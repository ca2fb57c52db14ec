//! leakscope's reference download server.
//!
//! A file server written the way a download service should be (as the
//! slow-endpoint, million-downloads and streaming-ZIP articles describe it):
//! files stream from disk with bounded memory, Range and conditional requests
//! follow RFC 9110, directories stream as ZIP archives, nothing outside the
//! root is ever served, and every resource a request takes (fd, buffers,
//! slot, thread) is released when its response ends, however it ends. See
//! ARCHITECTURE.md for the module map.

pub(crate) mod app;
pub(crate) mod body;
pub mod conditional;
pub(crate) mod config;
pub(crate) mod files;
pub(crate) mod limits;
pub(crate) mod metrics;
pub(crate) mod open_files;
pub mod range;
pub(crate) mod representation;
pub(crate) mod response;
pub mod root;
pub mod scenarios;
pub(crate) mod sendfile;
pub(crate) mod server;
pub mod signing;
pub(crate) mod stall;
pub(crate) mod zip_stream;

pub use config::{Config, MAX_TIMEOUT};
pub use server::{Server, ServerError};
