//! The single writer thread (group commit).
//!
//! Jobs arrive on a channel; the thread takes the first and then every job
//! already waiting (up to `MAX_BATCH`), applies them in order inside one
//! redb write transaction, fsyncs the folders whose entries the batch
//! changed, commits once, and only then answers every job. While one batch
//! commits, the next one gathers: under load many messages share one sync.
//!
//! A job validates before it writes, so a job that answers with a user
//! error (no such mailbox, over quota) has changed nothing. A storage error
//! in the middle of a job poisons the batch: the transaction is aborted,
//! files the batch created are removed, and every job gets the error.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use redb::{Database, WriteTransaction};

use super::{MailboxId, ModSeq, Result, StoreError};
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
        let outcome = commit(txn, &batch);
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

fn commit(txn: WriteTransaction, batch: &Batch) -> std::result::Result<(), StoreError> {
    if let Some(e) = &batch.poisoned {
        let _ = txn.abort();
        return Err(StoreError::Internal(e.clone()));
    }
    for d in &batch.sync_dirs {
        if let Err(e) = sync_dir(d) {
            let _ = txn.abort();
            return Err(StoreError::internal(format!("fsync {}: {e}", d.display())));
        }
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
