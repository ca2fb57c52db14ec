//! What the user sees while recording: one live status line on a terminal,
//! a line every few seconds otherwise (CI logs), and each source's first
//! error once, not once per tick.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use bytesize::ByteSize;
use indicatif::{ProgressBar, ProgressStyle};
use leakscope_rundir::{Sample, SAMPLES_FILE};

pub struct Progress {
    bar: Option<ProgressBar>,
    plain_every: Option<Duration>,
    last_plain: Instant,
    failing: BTreeMap<String, String>,
    pub samples: u64,
}

impl Progress {
    pub fn new(quiet: bool, duration: Option<Duration>) -> Self {
        let tty = std::io::stderr().is_terminal();
        let bar = (!quiet && tty).then(|| {
            let bar = match duration {
                Some(d) => ProgressBar::new(d.as_millis() as u64).with_style(
                    ProgressStyle::with_template("{elapsed_precise} [{bar:24}] {msg}")
                        .expect("a valid template")
                        .progress_chars("=> "),
                ),
                None => ProgressBar::new_spinner().with_style(
                    ProgressStyle::with_template("{elapsed_precise} {spinner} {msg}")
                        .expect("a valid template"),
                ),
            };
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Self {
            bar,
            plain_every: (!quiet && !tty).then_some(Duration::from_secs(5)),
            last_plain: Instant::now(),
            failing: BTreeMap::new(),
            samples: 0,
        }
    }

    /// Prints a line without tearing the status line.
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| tell!("{line}")),
            None => tell!("{line}"),
        }
    }

    pub fn tick(&mut self, sample: &Sample) {
        self.samples += 1;
        let mut now_failing = BTreeMap::new();
        for e in &sample.errors {
            now_failing.insert(e.source.clone(), e.message.clone());
        }
        for (source, message) in &now_failing {
            if !self.failing.contains_key(source) {
                self.println(&format!(
                    "warning: {source}: {message} (recording goes on; later errors are in {SAMPLES_FILE})"
                ));
            }
        }
        for source in self.failing.keys() {
            if !now_failing.contains_key(source) {
                self.println(&format!("note: {source} is answering again"));
            }
        }
        self.failing = now_failing;

        let msg = status(self.samples, sample);
        if let Some(bar) = &self.bar {
            bar.set_position(sample.t_ms);
            bar.set_message(msg);
        } else if let Some(every) = self.plain_every {
            if self.last_plain.elapsed() >= every {
                self.last_plain = Instant::now();
                tell!("[{:>6.1}s] {msg}", sample.t_ms as f64 / 1000.0);
            }
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn status(samples: u64, s: &Sample) -> String {
    let mut parts = vec![format!("{samples} samples")];
    if let Some(l) = &s.load {
        parts.push(format!("{} requests", l.requests_total));
        if l.failed > 0 {
            parts.push(format!("{} failed", l.failed));
        }
    }
    if let Some(p) = &s.proc {
        parts.push(format!("RSS {}", ByteSize(p.rss_bytes).display().iec()));
        parts.push(format!("{} fds", p.fds));
    }
    if let Some(h) = s.heap.as_ref().and_then(|h| h.allocated) {
        parts.push(format!("heap {}", ByteSize(h).display().iec()));
    }
    if let Some(c) = &s.tasks {
        parts.push(format!("{} tasks", c.live_tasks));
    }
    parts.join(" · ")
}
