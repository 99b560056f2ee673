//! Group commit for queue files: sessions that finish DATA at about the
//! same moment have their queue files made durable by one flush round.
//!
//! A writer creates (or appends to) its file without fsync and hands the
//! open file to [`GroupSync::durable`], which returns once the file's data
//! (and, for a new file, the folder entry) is on disk. The first waiter
//! with no round running starts one on the blocking pool; everyone who
//! arrives while a round runs joins the next one. A round:
//! 1. `sync_file_range(WRITE)` on every file: the writeback of all of them
//!    starts at once (block allocation for all lands in one journal
//!    transaction);
//! 2. `fdatasync` on each file: the first one commits that transaction, the
//!    others find their data written and their metadata committed;
//! 3. the renames asked for (a spare file rewritten under its spare name
//!    takes its queue name only now, its new content being durable);
//! 4. one `fsync` of the queue folder if any file is new.
//!
//! Every waiter learns its own file's result; a folder fsync error fails
//! every new file of the round. Nothing is answered before its round ends,
//! so the SMTP 250 still follows durability (kill -9 at any point loses
//! no acknowledged message: an unsynced file that is torn was never
//! acknowledged and is moved aside on load, a whole one is delivered).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

struct Waiter {
    file: File,
    /// A new file: its folder entry must be durable too.
    new_entry: bool,
    /// Renamed from .0 to .1 after its data is durable (a recycled spare).
    rename: Option<(PathBuf, PathBuf)>,
    done: oneshot::Sender<io::Result<()>>,
}

#[derive(Default)]
struct State {
    waiting: Vec<Waiter>,
    running: bool,
}

/// The queue's committer (one per queue folder).
pub struct GroupSync {
    dir: PathBuf,
    state: Mutex<State>,
    rounds: AtomicU64,
    files: AtomicU64,
}

/// Rounds and files flushed so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncStats {
    pub rounds: u64,
    pub files: u64,
}

/// Clears `running` (and fails whoever still waits) if a round ends
/// without draining the queue: the blocking task never ran (runtime
/// shutting down) or panicked.
struct RoundGuard {
    sync: Arc<GroupSync>,
    /// Cleared when `run` returned normally: it has already cleared
    /// `running` with nobody waiting, and a waiter that came since leads
    /// a round of its own, which this guard must not touch.
    armed: bool,
}

impl RoundGuard {
    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for RoundGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let left = {
            let mut s = self.sync.lock();
            s.running = false;
            std::mem::take(&mut s.waiting)
        };
        for w in left {
            let _ = w
                .done
                .send(Err(io::Error::other("queue committer stopped")));
        }
    }
}

impl GroupSync {
    pub fn new(dir: PathBuf) -> Arc<GroupSync> {
        Arc::new(GroupSync {
            dir,
            state: Mutex::new(State::default()),
            rounds: AtomicU64::new(0),
            files: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn stats(&self) -> SyncStats {
        SyncStats {
            rounds: self.rounds.load(Ordering::Relaxed),
            files: self.files.load(Ordering::Relaxed),
        }
    }

    /// Returns once `file`'s data is durable (`new_entry`: and its name in
    /// the queue folder).
    pub async fn durable(self: &Arc<Self>, file: File, new_entry: bool) -> io::Result<()> {
        self.wait(file, new_entry, None).await
    }

    /// Returns once `file`'s data is durable, then renamed from `from` to
    /// `to`, and that name is durable in the queue folder (both names are
    /// in it).
    pub async fn durable_renamed(
        self: &Arc<Self>,
        file: File,
        from: PathBuf,
        to: PathBuf,
    ) -> io::Result<()> {
        self.wait(file, true, Some((from, to))).await
    }

    async fn wait(
        self: &Arc<Self>,
        file: File,
        new_entry: bool,
        rename: Option<(PathBuf, PathBuf)>,
    ) -> io::Result<()> {
        let (done, rx) = oneshot::channel();
        let lead = {
            let mut s = self.lock();
            s.waiting.push(Waiter {
                file,
                new_entry,
                rename,
                done,
            });
            !std::mem::replace(&mut s.running, true)
        };
        if lead {
            self.start();
        }
        rx.await
            .unwrap_or_else(|_| Err(io::Error::other("queue committer stopped")))
    }

    fn start(self: &Arc<Self>) {
        let mut guard = RoundGuard {
            sync: self.clone(),
            armed: true,
        };
        tokio::task::spawn_blocking(move || {
            guard.sync.run();
            guard.disarm();
        });
    }

    /// Flushes rounds until nobody waits.
    fn run(&self) {
        loop {
            let batch = {
                let mut s = self.lock();
                if s.waiting.is_empty() {
                    s.running = false;
                    return;
                }
                std::mem::take(&mut s.waiting)
            };
            self.flush(batch);
        }
    }

    fn flush(&self, batch: Vec<Waiter>) {
        for w in &batch {
            // SAFETY: a valid open descriptor; the call only starts
            // writeback of its dirty pages. Its result is advisory: the
            // fdatasync below reports errors.
            unsafe {
                libc::sync_file_range(w.file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
            }
        }
        let results: Vec<io::Result<()>> = batch
            .iter()
            .map(|w| {
                w.file.sync_data()?;
                match &w.rename {
                    Some((from, to)) => std::fs::rename(from, to),
                    None => Ok(()),
                }
            })
            .collect();
        let dir = if batch.iter().any(|w| w.new_entry) {
            crate::fsutil::sync_dir(&self.dir).map_err(|e| (e.kind(), e.to_string()))
        } else {
            Ok(())
        };
        self.rounds.fetch_add(1, Ordering::Relaxed);
        self.files.fetch_add(batch.len() as u64, Ordering::Relaxed);
        for (w, r) in batch.into_iter().zip(results) {
            let r = match (&dir, w.new_entry) {
                (Err((kind, msg)), true) => r.and(Err(io::Error::new(*kind, msg.clone()))),
                _ => r,
            };
            let _ = w.done.send(r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// The round ends (its task clears `running`) just after it answers.
    async fn wait_idle(sync: &GroupSync) {
        for _ in 0..500 {
            if !sync.lock().running {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the committer kept running with nobody waiting");
    }

    #[tokio::test]
    async fn group_commit_flushes_files_that_arrive_during_a_round_together() {
        let dir = tempfile::tempdir().unwrap();
        let sync = GroupSync::new(dir.path().to_path_buf());
        // A round is running: everyone who arrives now waits for the next.
        sync.lock().running = true;
        let mut waits = Vec::new();
        for i in 0..8 {
            let mut f = File::create(dir.path().join(format!("{i}.q"))).unwrap();
            f.write_all(b"data").unwrap();
            let s = sync.clone();
            waits.push(tokio::spawn(async move { s.durable(f, true).await }));
        }
        while sync.lock().waiting.len() < 8 {
            tokio::task::yield_now().await;
        }
        // The running round ends: its task finds 8 waiting, one round.
        let s = sync.clone();
        tokio::task::spawn_blocking(move || s.run()).await.unwrap();
        for w in waits {
            w.await.unwrap().unwrap();
        }
        assert_eq!(
            sync.stats(),
            SyncStats {
                rounds: 1,
                files: 8
            }
        );
        wait_idle(&sync).await;
        // Alone, a waiter starts its own round.
        let f = File::create(dir.path().join("x.q")).unwrap();
        sync.durable(f, true).await.unwrap();
        assert_eq!(
            sync.stats(),
            SyncStats {
                rounds: 2,
                files: 9
            }
        );
    }

    #[tokio::test]
    async fn group_commit_reports_a_folder_sync_error_to_new_files() {
        let dir = tempfile::tempdir().unwrap();
        let sync = GroupSync::new(dir.path().join("gone"));
        let f = File::create(dir.path().join("a.q")).unwrap();
        assert!(sync.durable(f, true).await.is_err());
        // An append (no new name) does not depend on the folder.
        let f = File::create(dir.path().join("b.q")).unwrap();
        sync.durable(f, false).await.unwrap();
        wait_idle(&sync).await;
    }

    /// A round that ended normally must not touch the round a newcomer
    /// started meanwhile (it once failed that newcomer with "committer
    /// stopped" and cleared its `running`, leaving an unacknowledged
    /// queue file behind).
    #[tokio::test]
    async fn a_finished_round_leaves_the_next_round_alone() {
        let dir = tempfile::tempdir().unwrap();
        let sync = GroupSync::new(dir.path().to_path_buf());
        // The state just after `run` returned and a newcomer became the
        // lead of the next round.
        let (done, mut rx) = oneshot::channel();
        {
            let mut st = sync.lock();
            st.running = true;
            st.waiting.push(Waiter {
                file: File::create(dir.path().join("n.q")).unwrap(),
                new_entry: true,
                rename: None,
                done,
            });
        }
        let mut old = RoundGuard {
            sync: sync.clone(),
            armed: true,
        };
        old.disarm();
        drop(old);
        assert!(sync.lock().running, "the newcomer's round was cleared");
        assert_eq!(sync.lock().waiting.len(), 1);
        assert!(rx.try_recv().is_err(), "the newcomer was answered");
        // An armed guard (a round that died) fails whoever waits.
        drop(RoundGuard {
            sync: sync.clone(),
            armed: true,
        });
        assert!(rx.await.unwrap().is_err());
        assert!(!sync.lock().running);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn many_concurrent_writers_are_all_made_durable() {
        let dir = tempfile::tempdir().unwrap();
        let sync = GroupSync::new(dir.path().to_path_buf());
        for round in 0..20 {
            let mut waits = Vec::new();
            for i in 0..16 {
                let f = File::create(dir.path().join(format!("{round}-{i}.q"))).unwrap();
                let s = sync.clone();
                waits.push(tokio::spawn(async move { s.durable(f, true).await }));
            }
            for w in waits {
                w.await.unwrap().unwrap();
            }
        }
        wait_idle(&sync).await;
    }
}
