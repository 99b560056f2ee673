//! Progress of a long command, shared by the code doing the work and the
//! code showing it (the admin socket's writer, or the CLI's bar).
//!
//! The worker only bumps counters; whoever shows them samples a snapshot
//! at its own pace, so progress costs the work nothing.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// What is being done now ("copying alice@example.com", "scanning").
    pub stage: String,
    pub done: u64,
    /// Known total of the stage, if any.
    pub total: Option<u64>,
    /// What `done` counts ("messages", "bytes", "users").
    pub unit: String,
}

#[derive(Clone, Default)]
pub struct Progress {
    state: Arc<Mutex<Snapshot>>,
}

impl Progress {
    pub fn new() -> Progress {
        Progress::default()
    }

    /// Starts a stage: counter back to zero.
    pub fn stage(&self, stage: impl Into<String>, total: Option<u64>, unit: &str) {
        let mut s = self.state.lock().unwrap();
        *s = Snapshot {
            stage: stage.into(),
            done: 0,
            total,
            unit: unit.to_string(),
        };
    }

    pub fn inc(&self, n: u64) {
        self.state.lock().unwrap().done += n;
    }

    pub fn set_total(&self, total: Option<u64>) {
        self.state.lock().unwrap().total = total;
    }

    pub fn snapshot(&self) -> Snapshot {
        self.state.lock().unwrap().clone()
    }
}

/// Shows snapshots on the operator's terminal: a bar (indicatif) when
/// standard error is a terminal, otherwise a line every `every`.
pub struct Display {
    bar: Option<indicatif::ProgressBar>,
    last_line: std::time::Instant,
    every: std::time::Duration,
    last: Snapshot,
}

impl Display {
    pub fn new(command: &str) -> Display {
        use std::io::IsTerminal;
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new(0);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{prefix} {msg} [{bar:30}] {pos}/{len} ({per_sec}, {eta})",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b.set_prefix(command.to_string());
            b
        });
        Display {
            bar,
            last_line: std::time::Instant::now(),
            // MSGDCTL_PROGRESS_MS: the interval of progress lines when
            // not on a terminal (tests shorten it; default 5 s).
            every: std::env::var("MSGDCTL_PROGRESS_MS")
                .ok()
                .and_then(|v| v.parse().ok())
                .map_or(
                    std::time::Duration::from_secs(5),
                    std::time::Duration::from_millis,
                ),
            last: Snapshot::default(),
        }
    }

    pub fn show(&mut self, s: &Snapshot) {
        if let Some(b) = &self.bar {
            if s.stage != self.last.stage {
                b.set_message(s.stage.clone());
            }
            b.set_length(s.total.unwrap_or(s.done));
            b.set_position(s.done);
        } else if s != &self.last && self.last_line.elapsed() >= self.every {
            self.last_line = std::time::Instant::now();
            match s.total {
                Some(t) => eprintln!("msgd: {}: {}/{} {}", s.stage, s.done, t, s.unit),
                None => eprintln!("msgd: {}: {} {}", s.stage, s.done, s.unit),
            }
        }
        self.last = s.clone();
    }

    pub fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}
