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
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    now: Snapshot,
    /// The last snapshot of each stage that ended since the last
    /// `updates()`, so a stage shorter than the sampling interval is
    /// still reported with its final count (at most `MAX_ENDED` kept).
    ended: Vec<Snapshot>,
}

const MAX_ENDED: usize = 16;

impl Progress {
    pub fn new() -> Progress {
        Progress::default()
    }

    /// Starts a stage: counter back to zero.
    pub fn stage(&self, stage: impl Into<String>, total: Option<u64>, unit: &str) {
        let mut st = self.state.lock().unwrap();
        if !st.now.stage.is_empty() && st.ended.len() < MAX_ENDED {
            let last = st.now.clone();
            st.ended.push(last);
        }
        st.now = Snapshot {
            stage: stage.into(),
            done: 0,
            total,
            unit: unit.to_string(),
        };
    }

    pub fn inc(&self, n: u64) {
        self.state.lock().unwrap().now.done += n;
    }

    pub fn set_total(&self, total: Option<u64>) {
        self.state.lock().unwrap().now.total = total;
    }

    pub fn snapshot(&self) -> Snapshot {
        self.state.lock().unwrap().now.clone()
    }

    /// The final snapshots of the stages that ended since the last call,
    /// then the current one: what a reporter shows at each tick.
    pub fn updates(&self) -> Vec<Snapshot> {
        let mut st = self.state.lock().unwrap();
        let mut v = std::mem::take(&mut st.ended);
        v.push(st.now.clone());
        v
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_shorter_than_a_tick_is_still_reported_with_its_final_count() {
        let p = Progress::new();
        p.stage("copying", Some(3), "messages");
        p.inc(3);
        p.stage("writing the manifest", None, "files");
        let u = p.updates();
        assert_eq!(u.len(), 2);
        assert_eq!((u[0].stage.as_str(), u[0].done), ("copying", 3));
        assert_eq!(u[1].stage, "writing the manifest");
        // Reported once: the next tick sees only the current stage.
        assert_eq!(p.updates().len(), 1);
    }
}
