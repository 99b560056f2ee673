//! The single writer thread (group commit).
//!
//! Jobs arrive on a channel; the thread takes the first and then every job
//! already waiting (up to `MAX_BATCH`), applies them in order inside one
//! redb write transaction, makes the message files it placed and the
//! folders whose entries it changed durable (`Syncer`), commits once, and
//! only then answers every job. While one batch commits, the next one
//! gathers: under load many messages share one sync.
//!
//! A job validates before it writes, so a job that answers with a user
//! error (no such mailbox, over quota) has changed nothing. A storage error
//! in the middle of a job poisons the batch: the transaction is aborted,
//! files the batch created are removed, and every job gets the error.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use redb::{Database, WriteTransaction};

use super::{MailboxId, ModSeq, Result, StoreError};
use crate::config::SyncMode;
use crate::fsutil::sync_dir;

const MAX_BATCH: usize = 512;

/// How long the writer waits, at most, for appends still staging their
/// files before it commits a batch (`Staging`).
pub const GATHER_WAIT: Duration = Duration::from_millis(1);

/// How often the writer looks again at the staging count while it waits
/// (an append that ends without a job, a repeat or an error, sends
/// nothing).
const GATHER_SLICE: Duration = Duration::from_micros(100);

/// Appends between the start of their staging (file written and synced
/// on a blocking thread) and the sending of their job. When the first job
/// of a batch arrives while appends that began before it are still
/// staging, the writer waits for them (up to `GATHER_WAIT`) so that they
/// share its commit: they would otherwise wait for this commit to finish
/// and then pay for one of their own. PostgreSQL's `commit_delay` with
/// `commit_siblings` is the same idea; here the siblings are known, not
/// guessed, and a lone delivery never waits.
#[derive(Default)]
pub struct Staging {
    begun: AtomicU64,
    ended: AtomicU64,
}

impl Staging {
    /// Marks one append as staging until the guard is dropped (just
    /// before its job is sent, or when it ends without one).
    pub fn enter(&self) -> StagingGuard<'_> {
        self.begun.fetch_add(1, Ordering::AcqRel);
        StagingGuard(self)
    }
}

pub struct StagingGuard<'a>(&'a Staging);

impl Drop for StagingGuard<'_> {
    fn drop(&mut self) {
        self.0.ended.fetch_add(1, Ordering::AcqRel);
    }
}

/// Takes every job already waiting, then, while appends that began
/// staging before now are still at it, waits for their jobs up to `wait`.
fn gather(rx: &mpsc::Receiver<Job>, jobs: &mut Vec<Job>, staging: &Staging, wait: Duration) {
    let drain = |jobs: &mut Vec<Job>| {
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
    };
    drain(jobs);
    let begun = staging.begun.load(Ordering::Acquire);
    let deadline = Instant::now() + wait;
    while jobs.len() < MAX_BATCH && staging.ended.load(Ordering::Acquire) < begun {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match rx.recv_timeout(left.min(GATHER_SLICE)) {
            Ok(j) => {
                jobs.push(j);
                drain(jobs);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
}

/// File system effects of one batch, applied around the commit.
#[derive(Default)]
pub struct Batch {
    /// Files created by the batch (renamed or linked into place); removed
    /// again if the batch fails.
    pub created: Vec<PathBuf>,
    /// Folders whose entries changed: fsynced before the commit.
    pub sync_dirs: BTreeSet<PathBuf>,
    /// Message files the batch placed, whose bytes are not durable yet
    /// (`files::write_tmp` only started writing them out): synced with
    /// `sync_dirs` before the commit.
    pub sync_files: Vec<PathBuf>,
    /// Expunged message files: once the commit is durable they are moved
    /// aside to `<partition>/expunged/<day>/` and purged after the grace
    /// period (`store.expire.purge_after`, `expire.rs`).
    pub unlink_after: Vec<PathBuf>,
    /// Folders of deleted mailboxes: once the commit is durable they are
    /// moved whole to `<partition>/expunged/<day>/` (`files::set_aside_mailbox`)
    /// and purged with the expunged files after the grace period. The job
    /// also recorded each one as pending in the index (`expire::note_deleted`),
    /// so a crash before the move is finished at the next open or expire.
    pub aside_dirs_after: Vec<PathBuf>,
    /// Mailboxes changed, with their new HIGHESTMODSEQ, for the watchers.
    pub notify: HashMap<MailboxId, ModSeq>,
    /// Users whose mailboxes changed (counters, names, subscriptions), for
    /// the per-user watchers (NOTIFY, RFC 5465).
    pub users: BTreeSet<String>,
    /// JMAP journal entries of the batch (`journal.rs`), written just
    /// before the commit.
    pub journal: super::db::journal::Pending,
    /// Set when a job hit a storage error after it may have written.
    pub poisoned: Option<String>,
    /// Partition folders by name (for jobs that write beside the index:
    /// the mailbox record files of `reconstruct.rs`).
    pub partitions: std::sync::Arc<HashMap<String, PathBuf>>,
}

impl Batch {
    /// Renames a staged message file to `dest` (`TmpFile::place`; folders
    /// it had to create go to `touched`) and records it as created by the
    /// batch (removed if the batch fails) and to be synced before the
    /// commit.
    pub fn place(
        &mut self,
        tmp: &mut super::files::TmpFile,
        dest: PathBuf,
        touched: &mut Vec<PathBuf>,
    ) -> io::Result<()> {
        tmp.place(&dest, touched)?;
        self.sync_files.push(dest.clone());
        self.created.push(dest);
        Ok(())
    }
}

/// Sync threads of `Syncer` in `files` mode: the files of a batch are
/// synced together, so the first sync's journal commit carries the others
/// and their cache flushes overlap.
const SYNC_THREADS: usize = 8;

type SyncTask = Box<dyn FnOnce() -> io::Result<()> + Send>;

/// Makes a batch's new message files and changed folders durable before
/// its commit, as `store.sync` says.
pub struct Syncer {
    mode: SyncMode,
    tasks: mpsc::Sender<(SyncTask, mpsc::Sender<io::Result<()>>)>,
}

impl Syncer {
    pub fn new(mode: SyncMode) -> io::Result<Syncer> {
        let (tasks, rx) = mpsc::channel::<(SyncTask, mpsc::Sender<io::Result<()>>)>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..SYNC_THREADS {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("mboxlist-sync-{i}"))
                .spawn(move || loop {
                    // The lock is released at the end of this statement:
                    // one idle thread waits on the channel, the others on
                    // the lock.
                    let next = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    let Ok((task, done)) = next else {
                        return;
                    };
                    let _ = done.send(task());
                })?;
        }
        Ok(Syncer { mode, tasks })
    }

    /// Syncs the data of `files` and the entries of `dirs`; the first
    /// error if any.
    pub fn sync(&self, files: Vec<PathBuf>, dirs: &BTreeSet<PathBuf>) -> io::Result<()> {
        if files.is_empty() && dirs.is_empty() {
            return Ok(());
        }
        #[cfg(target_os = "linux")]
        if self.mode == SyncMode::Filesystem {
            return syncfs_each(&files, dirs);
        }
        let mut tasks: Vec<SyncTask> = Vec::with_capacity(files.len() + dirs.len());
        for f in files {
            tasks.push(Box::new(move || fs::File::open(&f)?.sync_data()));
        }
        for d in dirs {
            let d = d.clone();
            tasks.push(Box::new(move || sync_dir(&d)));
        }
        match tasks.len() {
            1 => tasks.pop().map_or(Ok(()), |t| t()),
            _ => self.run_all(tasks),
        }
    }

    /// Runs `tasks` on the sync threads, several at once, and waits for
    /// all of them.
    fn run_all(&self, tasks: Vec<SyncTask>) -> io::Result<()> {
        let (done, results) = mpsc::channel();
        let n = tasks.len();
        for t in tasks {
            self.tasks
                .send((t, done.clone()))
                .map_err(|_| io::Error::other("the sync threads are gone"))?;
        }
        drop(done);
        let mut outcome = Ok(());
        for _ in 0..n {
            match results.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    if outcome.is_ok() {
                        outcome = Err(e);
                    }
                }
                Err(_) => return Err(io::Error::other("a sync thread ended")),
            }
        }
        outcome
    }
}

/// One syncfs(2) per filesystem holding one of `files` or `dirs`: it
/// writes and waits for every dirty file of that filesystem and commits
/// its journal (Linux 5.8 and later report write errors from it). Each
/// folder (the files' own, and `dirs`) is opened once to find its
/// filesystem; a missing file is still an error, as in `files` mode.
#[cfg(target_os = "linux")]
fn syncfs_each(files: &[PathBuf], dirs: &BTreeSet<PathBuf>) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    for f in files {
        fs::symlink_metadata(f)?;
    }
    let folders: BTreeSet<&std::path::Path> = files
        .iter()
        .filter_map(|f| f.parent())
        .chain(dirs.iter().map(PathBuf::as_path))
        .collect();
    let mut done = BTreeSet::new();
    for p in folders {
        let f = fs::File::open(p)?;
        if done.insert(f.metadata()?.dev()) {
            // SAFETY: the descriptor is open for the call's duration.
            if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// Called with the outcome of the commit.
pub type Finish = Box<dyn FnOnce(std::result::Result<(), StoreError>) + Send>;
pub type Job = Box<dyn FnOnce(&WriteTransaction, &mut Batch) -> Finish + Send>;

/// Wraps a job body into a `Job` that answers on `reply` after the commit.
pub fn job<T: Send + 'static>(
    f: impl FnOnce(&WriteTransaction, &mut Batch) -> Result<T> + Send + 'static,
    reply: tokio::sync::oneshot::Sender<Result<T>>,
) -> Job {
    Box::new(move |txn, batch| {
        let r = f(txn, batch);
        if let Err(StoreError::Internal(e)) = &r {
            batch.poisoned.get_or_insert_with(|| e.clone());
        }
        Box::new(move |commit| {
            let _ = reply.send(match commit {
                Ok(()) => r,
                Err(e) => Err(e),
            });
        })
    })
}

/// Runs until every sender is dropped. `notify` is called after each
/// successful commit with the changed mailboxes and their users.
pub fn run(
    db: std::sync::Arc<Database>,
    rx: mpsc::Receiver<Job>,
    keep: u64,
    partitions: std::sync::Arc<HashMap<String, PathBuf>>,
    staging: (std::sync::Arc<Staging>, Duration),
    syncer: Syncer,
    notify: impl Fn(&HashMap<MailboxId, ModSeq>, &BTreeSet<String>),
) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        gather(&rx, &mut jobs, &staging.0, staging.1);
        let txn = match db.begin_write() {
            Ok(t) => t,
            Err(e) => {
                // Dropping the jobs drops their reply channels: each caller
                // sees an internal error, and their temporary files go.
                tracing::error!(error = %e, "mboxlist: cannot begin a write transaction");
                drop(jobs);
                continue;
            }
        };
        let mut batch = Batch {
            partitions: partitions.clone(),
            ..Batch::default()
        };
        let mut finishes = Vec::with_capacity(jobs.len());
        for j in jobs {
            finishes.push(j(&txn, &mut batch));
        }
        if batch.poisoned.is_none() {
            if let Err(e) = super::db::journal::flush(&txn, &mut batch.journal, keep) {
                batch.poisoned = Some(e.to_string());
            }
        }
        let outcome = commit(txn, &mut batch, &syncer);
        match &outcome {
            Ok(()) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64);
                for p in &batch.unlink_after {
                    if let Err(e) = super::files::set_aside(p, now) {
                        if e.kind() != std::io::ErrorKind::NotFound {
                            tracing::warn!(path = %p.display(), error = %e, "cannot set aside expunged message file");
                        }
                    }
                }
                for d in &batch.aside_dirs_after {
                    if let Err(e) = super::files::set_aside_mailbox(d, now) {
                        if e.kind() != std::io::ErrorKind::NotFound {
                            tracing::warn!(path = %d.display(), error = %e, "cannot set aside a deleted mailbox's folder; the next expire does");
                        }
                    }
                }
                notify(&batch.notify, &batch.users);
            }
            Err(e) => {
                tracing::error!(error = %e, "mboxlist: batch failed; nothing in it was acknowledged");
                cleanup_failed(&batch);
            }
        }
        for f in finishes {
            f(outcome.clone());
        }
    }
}

fn commit(
    txn: WriteTransaction,
    batch: &mut Batch,
    syncer: &Syncer,
) -> std::result::Result<(), StoreError> {
    if let Some(e) = &batch.poisoned {
        let _ = txn.abort();
        return Err(StoreError::Internal(e.clone()));
    }
    if let Err(e) = syncer.sync(std::mem::take(&mut batch.sync_files), &batch.sync_dirs) {
        let _ = txn.abort();
        return Err(StoreError::internal(format!(
            "making the batch's files durable: {e}"
        )));
    }
    txn.commit().map_err(StoreError::internal)
}

fn cleanup_failed(batch: &Batch) {
    for p in &batch.created {
        let _ = fs::remove_file(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    /// A writer whose gather wait is an hour: a batch that waits for an
    /// append would hang the test instead of passing by timing.
    fn writer() -> (
        mpsc::Sender<Job>,
        Arc<Staging>,
        Arc<AtomicUsize>,
        tempfile::TempDir,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::create(dir.path().join("t.redb")).unwrap());
        let (tx, rx) = mpsc::channel();
        let staging = Arc::new(Staging::default());
        let commits = Arc::new(AtomicUsize::new(0));
        let (s, c) = (staging.clone(), commits.clone());
        std::thread::spawn(move || {
            run(
                db,
                rx,
                1,
                Arc::default(),
                (s, Duration::from_secs(3600)),
                Syncer::new(SyncMode::Files).unwrap(),
                |_, _| {
                    c.fetch_add(1, Ordering::SeqCst);
                },
            )
        });
        (tx, staging, commits, dir)
    }

    fn send(tx: &mpsc::Sender<Job>) -> tokio::sync::oneshot::Receiver<Result<()>> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        tx.send(job(|_, _| Ok(()), reply)).unwrap();
        rx
    }

    /// Files of `dir` written without a sync.
    fn written(dir: &std::path::Path, n: usize) -> Vec<PathBuf> {
        (0..n)
            .map(|i| {
                let p = dir.join(format!("{i}.msg"));
                fs::write(&p, format!("message {i}")).unwrap();
                p
            })
            .collect()
    }

    #[test]
    fn both_sync_modes_sync_a_batch_and_report_a_missing_folder() {
        for mode in [SyncMode::Files, SyncMode::Filesystem] {
            let d = tempfile::tempdir().unwrap();
            let syncer = Syncer::new(mode).unwrap();
            let dirs: BTreeSet<PathBuf> = [d.path().to_path_buf()].into();
            // Nothing, one file, one folder, and more tasks than threads.
            syncer.sync(Vec::new(), &BTreeSet::new()).unwrap();
            syncer.sync(written(d.path(), 1), &BTreeSet::new()).unwrap();
            syncer.sync(Vec::new(), &dirs).unwrap();
            syncer
                .sync(written(d.path(), 3 * SYNC_THREADS), &dirs)
                .unwrap();
            assert_eq!(
                fs::read_to_string(d.path().join("5.msg")).unwrap(),
                "message 5"
            );
            // A folder that is gone is an error, whatever else succeeds:
            // the batch is not committed.
            let gone: BTreeSet<PathBuf> = [d.path().to_path_buf(), d.path().join("gone")].into();
            let e = syncer.sync(written(d.path(), 4), &gone).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::NotFound, "{mode:?}: {e}");
            // So is a file that is gone.
            let mut files = written(d.path(), 2);
            files.push(d.path().join("gone.msg"));
            let e = syncer.sync(files, &dirs).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::NotFound, "{mode:?}: {e}");
        }
    }

    #[test]
    fn a_batch_whose_folder_cannot_be_synced_is_not_committed() {
        let (tx, _staging, commits, dir) = writer();
        let gone = dir.path().join("no-such-folder");
        let (reply, rx) = tokio::sync::oneshot::channel();
        tx.send(job(
            move |_, batch| {
                batch.sync_dirs.insert(gone);
                Ok(())
            },
            reply,
        ))
        .unwrap();
        let e = rx.blocking_recv().unwrap().unwrap_err();
        assert!(matches!(e, StoreError::Internal(_)), "{e:?}");
        assert_eq!(commits.load(Ordering::SeqCst), 0);
        // The writer goes on with the next batch.
        send(&tx).blocking_recv().unwrap().unwrap();
        assert_eq!(commits.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_job_with_no_append_staging_commits_without_waiting() {
        let (tx, _staging, commits, _dir) = writer();
        send(&tx).blocking_recv().unwrap().unwrap();
        send(&tx).blocking_recv().unwrap().unwrap();
        assert_eq!(commits.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn an_append_still_staging_shares_the_commit_of_the_job_before_it() {
        let (tx, staging, commits, _dir) = writer();
        let guard = staging.enter();
        let mut first = send(&tx);
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            first.try_recv().is_err(),
            "committed while an append that began before it was staging"
        );
        assert_eq!(commits.load(Ordering::SeqCst), 0);
        drop(guard);
        let second = send(&tx);
        first.blocking_recv().unwrap().unwrap();
        second.blocking_recv().unwrap().unwrap();
        // The second job either joined the first batch or came after it;
        // what matters is that the first waited for the append (above)
        // and that nothing waits once it has ended.
        assert!(commits.load(Ordering::SeqCst) >= 1);
    }

    #[test]
    fn both_jobs_share_one_commit_when_the_second_is_sent_before_staging_ends() {
        let (tx, staging, commits, _dir) = writer();
        let guard = staging.enter();
        let first = send(&tx);
        let second = send(&tx);
        drop(guard);
        first.blocking_recv().unwrap().unwrap();
        second.blocking_recv().unwrap().unwrap();
        assert_eq!(commits.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn an_append_that_ends_without_a_job_releases_the_wait() {
        let (tx, staging, commits, _dir) = writer();
        let guard = staging.enter();
        let first = send(&tx);
        drop(guard);
        first.blocking_recv().unwrap().unwrap();
        assert_eq!(commits.load(Ordering::SeqCst), 1);
    }
}
