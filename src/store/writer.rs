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
use std::sync::mpsc;

use redb::{Database, WriteTransaction};

use super::{MailboxId, ModSeq, Result, StoreError};
use crate::fsutil::sync_dir;

const MAX_BATCH: usize = 512;

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
    notify: impl Fn(&HashMap<MailboxId, ModSeq>, &BTreeSet<String>),
) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
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
