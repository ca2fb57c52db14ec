//! The target's output, bounded everywhere: each line, the lines kept in
//! memory before the target is ready, and `target.log`.
//!
//! Why: a target is any program. One that printed 400 MB without a newline
//! before its ready line took 398 MB of leakscope's memory, and its log
//! grew without end.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use leakscope_rundir::TARGET_LOG;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::mpsc;

/// A longer line is cut here (and marked so in the log).
pub const MAX_LINE: usize = 64 << 10;
/// `target.log` stops here, with a last line saying so.
pub const MAX_LOG: u64 = 64 << 20;
/// Lines kept before the target is ready, for `{addr:PREFIX}`: the first
/// ones, up to this many bytes.
const MAX_KEPT: usize = 1 << 20;
/// Lines kept for error messages: the last ones.
pub const TAIL_LINES: usize = 20;

/// `target.log`, written line by line up to [`MAX_LOG`].
pub struct Log {
    file: BufWriter<File>,
    written: u64,
    capped: bool,
}

impl Log {
    pub fn create(path: &Path) -> std::io::Result<Arc<Mutex<Log>>> {
        Ok(Arc::new(Mutex::new(Log {
            file: BufWriter::new(File::create(path)?),
            written: 0,
            capped: false,
        })))
    }

    fn line(&mut self, line: &[u8], cut: bool) {
        if self.capped {
            return;
        }
        let mark: &[u8] = if cut {
            b" [leakscope: line cut here]\n"
        } else {
            b"\n"
        };
        let len = (line.len() + mark.len()) as u64;
        if self.written + len > MAX_LOG {
            self.capped = true;
            let _ = writeln!(
                self.file,
                "[leakscope: {TARGET_LOG} reached {MAX_LOG} bytes; the target's further output is not kept]"
            );
        } else {
            self.written += len;
            let _ = self.file.write_all(line);
            let _ = self.file.write_all(mark);
        }
        // A line at a time, so the log is readable while the run goes on.
        let _ = self.file.flush();
    }
}

/// Copies one output stream to the log and, as text, to `lines`.
pub async fn pump(
    stream: impl AsyncRead + Unpin,
    log: Arc<Mutex<Log>>,
    lines: mpsc::UnboundedSender<String>,
) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    let mut cut = false;
    loop {
        let (used, ended) = match reader.fill_buf().await {
            Ok([]) | Err(_) => break,
            Ok(chunk) => {
                let (used, ended) = match chunk.iter().position(|&b| b == b'\n') {
                    Some(i) => (i + 1, true),
                    None => (chunk.len(), false),
                };
                let body = &chunk[..used - usize::from(ended)];
                let room = MAX_LINE.saturating_sub(line.len());
                cut |= body.len() > room;
                line.extend_from_slice(&body[..body.len().min(room)]);
                (used, ended)
            }
        };
        reader.consume(used);
        if ended {
            emit(&log, &lines, &line, cut);
            line.clear();
            cut = false;
        }
    }
    if !line.is_empty() || cut {
        emit(&log, &lines, &line, cut);
    }
}

fn emit(log: &Mutex<Log>, lines: &mpsc::UnboundedSender<String>, line: &[u8], cut: bool) {
    if let Ok(mut log) = log.lock() {
        log.line(line, cut);
    }
    // Nobody listens once the target is ready; that is fine.
    let _ = lines.send(String::from_utf8_lossy(line).trim_end().to_string());
}

/// What the target printed before it was ready: the first lines (for
/// placeholders) up to a byte budget, and the last few (for errors).
#[derive(Default)]
pub struct Kept {
    first: Vec<String>,
    bytes: usize,
    tail: VecDeque<String>,
}

impl Kept {
    pub fn push(&mut self, line: String) {
        if self.bytes + line.len() <= MAX_KEPT {
            self.bytes += line.len();
            self.first.push(line.clone());
        }
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line);
    }

    pub fn first(&self) -> &[String] {
        &self.first
    }

    /// The last lines, or "(nothing)".
    pub fn tail(&self) -> String {
        if self.tail.is_empty() {
            return "(nothing)".to_string();
        }
        self.tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}
