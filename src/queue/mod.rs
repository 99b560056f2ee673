//! The MTA queue: one durable, append-only file per message (see
//! `record.rs`), an in-memory schedule, and a delivery loop. The loop
//! hands each attempt to a `Transport`; the servers' is
//! `deliver::queue::Router`, one delivery transaction per attempt
//! (docs/delivery.md). As a delivery target the queue is written by
//! `write` and made visible to the loop by `schedule` (the transaction's
//! commit) or removed by `discard` (its abort).
//!
//! Invariants:
//! - `enqueue` returns only after the file and its folder entry are fsynced:
//!   only then may the SMTP server answer 250.
//! - A recipient's state change is appended and fsynced right after the
//!   attempt; a recipient recorded as delivered is never tried again, so a
//!   crash can repeat at most the attempt in flight. An attempt that
//!   finishes the entry (all final, no DSN owed, copies only to stores:
//!   LMTP or local, never an SMTP relay or MX) is recorded by removing
//!   the file instead (a crash before the unlink is durable repeats that
//!   attempt: the stores' duplicate suppression answers it).
//! - New files and state records are made durable by group commit
//!   (`commit.rs`): one flush round for all sessions waiting at once.
//! - The file is deleted only when every recipient is delivered or failed
//!   and every DSN a final status owes is queued (`settle`).
//! - A final status is recorded together with the DSN it owes; `notified`
//!   is recorded once that DSN is queued under a name derived from the
//!   entry, so a crash anywhere in between sends it once, never twice
//!   and never not at all.
//! - When the runner starts, every loaded entry settles: an entry killed
//!   between its last record and the removal of its file sends what it
//!   still owes and is removed (it is never left in the queue forever).
//! - Files are recycled: a finished entry's file is renamed to
//!   `<id>.spare` in the same folder (at most `SPARE_FILES`, else
//!   removed), and a new message is written over a spare, made durable
//!   under the spare name, and only then renamed to `<id>.q` (one group
//!   commit round, one folder fsync for both names). No inode is freed
//!   and allocated per message: on ext4 without a journal, allocation
//!   skips every recently freed inode, which made a busy queue's creates
//!   slower the faster it ran. A spare is never loaded as an
//!   entry; a half-rewritten one keeps its spare name.
//! - Each attempt hands the transport the queue id: with the recipient
//!   index it is the delivery id a store uses to refuse a second copy
//!   (duplicate delivery suppression, docs/delivery.md).

pub mod commit;
pub mod control;
pub mod dsn;
pub mod record;

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::QueueConfig;
pub use record::{Envelope, Recipient, StateChange, Status};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The result of trying one recipient: delivery's one outcome type.
pub use crate::deliver::Outcome;

/// Where messages go: LMTP to stores, SMTP to relays or MX hosts. Given a
/// message and the indices of its pending recipients, returns one outcome
/// per index (in any order).
pub trait Transport: Send + Sync + 'static {
    /// `id` is the queue id (with the recipient index it forms the stable
    /// delivery id, the same on every retry).
    fn deliver<'a>(
        &'a self,
        id: &'a str,
        env: &'a Envelope,
        rcpts: Vec<usize>,
        data: Arc<Vec<u8>>,
    ) -> BoxFuture<'a, Vec<(usize, Outcome)>>;
}

#[derive(Debug, Clone)]
struct RcptState {
    status: Status,
    attempts: u32,
    next_attempt: i64,
    last_error: Option<String>,
    warned: bool,
    /// The DSN the final status owes (`delivered`, `relayed`, `failed`).
    dsn: Option<String>,
    /// That DSN is queued.
    notified: bool,
}

struct Entry {
    env: Envelope,
    state: Vec<RcptState>,
    size: u64,
    held: bool,
    /// The message of a file just written, kept for its first attempt so
    /// that attempt does not read the file back (`Queue::cache_bytes`
    /// bounds all of them together). Taken by the first attempt.
    first: Option<Kept>,
}

/// At most this many bytes of messages are kept in memory for their
/// first attempt, all entries together; beyond it (a backlog while the
/// stores are away) a first attempt reads its file like any retry.
pub const FIRST_ATTEMPT_BYTES: u64 = 64 << 20;

/// Message bytes kept for a first attempt, counted in the queue's total
/// while they live.
struct Kept {
    data: Arc<Vec<u8>>,
    total: Arc<AtomicU64>,
}

impl Kept {
    /// Keeps `data` if the total stays within `cap`.
    fn new(data: Arc<Vec<u8>>, total: &Arc<AtomicU64>, cap: u64) -> Option<Kept> {
        let n = data.len() as u64;
        total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                t.checked_add(n).filter(|sum| *sum <= cap)
            })
            .ok()?;
        Some(Kept {
            data,
            total: total.clone(),
        })
    }
}

impl Drop for Kept {
    fn drop(&mut self) {
        self.total
            .fetch_sub(self.data.len() as u64, Ordering::AcqRel);
    }
}

impl RcptState {
    /// A recipient not tried yet.
    fn pending() -> RcptState {
        RcptState {
            status: Status::Pending,
            attempts: 0,
            next_attempt: 0,
            last_error: None,
            warned: false,
            dsn: None,
            notified: false,
        }
    }

    /// Delivered by one attempt (cut-through), no notice owed.
    fn delivered_now() -> RcptState {
        RcptState {
            status: Status::Delivered,
            attempts: 1,
            ..RcptState::pending()
        }
    }

    /// A final status whose DSN is not queued yet.
    fn owes_dsn(&self) -> bool {
        self.status != Status::Pending && self.dsn.is_some() && !self.notified
    }

    fn change(&self, rcpt: usize) -> StateChange {
        StateChange {
            rcpt,
            status: self.status.clone(),
            attempts: self.attempts,
            next_attempt: self.next_attempt,
            last_error: self.last_error.clone(),
            warned: self.warned,
            dsn: self.dsn.clone(),
            notified: self.notified,
        }
    }
}

impl Entry {
    /// Makes every pending recipient due now.
    fn make_due(&mut self) {
        for s in &mut self.state {
            if s.status == Status::Pending {
                s.next_attempt = 0;
            }
        }
    }
}

/// A failure of the store or the way to it rather than of one mailbox
/// (RFC 3463 X.4.X network and routing, X.3.X mail system, 421 closing,
/// disk full): it pauses cut-through (`CUT_THROUGH_PAUSE`). A full or
/// moving mailbox (X.2.X) does not.
fn store_trouble(o: &Outcome) -> bool {
    match o {
        Outcome::DiskFull | Outcome::NoResources => true,
        Outcome::Temporary(t) => {
            t.starts_with("421") || t.get(3..7).is_some_and(|c| c == " 4.4" || c == " 4.3")
        }
        _ => false,
    }
}

/// Finished queue files kept for reuse (module doc: files are recycled).
pub const SPARE_FILES: usize = 128;

/// Longest a cut-through delivery (`Queue::deliver_now`) may hold the
/// client's DATA reply; past it the message is queued.
pub const CUT_THROUGH_DEADLINE: Duration = Duration::from_secs(20);

/// After a cut-through attempt that a store failed as a store
/// (`store_trouble`, or past the deadline), messages are queued first for
/// this long: a hung store must not hold every sender's session for
/// `CUT_THROUGH_DEADLINE`.
pub const CUT_THROUGH_PAUSE: Duration = Duration::from_secs(30);

/// A queued message, for listings.
#[derive(Debug, Clone)]
pub struct QueuedInfo {
    pub id: String,
    pub sender: String,
    pub size: u64,
    pub received: i64,
    pub held: bool,
    /// (address, status, attempts, next attempt, last error)
    pub recipients: Vec<(String, Status, u32, i64, Option<String>)>,
}

pub struct Queue {
    dir: PathBuf,
    config: QueueConfig,
    hostname: String,
    entries: Mutex<BTreeMap<String, Entry>>,
    in_flight: Mutex<HashSet<String>>,
    wake: Notify,
    /// Group commit of new files and state records (`commit.rs`).
    sync: Arc<commit::GroupSync>,
    /// The last part of the queue ids this queue gives (`new_id`), from a
    /// random start.
    seq: AtomicU64,
    /// Bytes of messages kept for their first attempt (`Entry::first`).
    kept_bytes: Arc<AtomicU64>,
    /// The bound of `kept_bytes` (`FIRST_ATTEMPT_BYTES`; tests lower it).
    keep_cap: AtomicU64,
    /// Finished files waiting to be rewritten (`<id>.spare`).
    spares: Mutex<Vec<PathBuf>>,
    /// The runner's transport, set when `run` starts: cut-through
    /// delivery (`deliver_now`) goes the runner's way.
    transport: OnceLock<Arc<dyn Transport>>,
    /// Unix seconds until which cut-through is paused (`CUT_THROUGH_PAUSE`).
    cut_through_paused: std::sync::atomic::AtomicI64,
}

/// Removes a message's queue file and hold marker.
pub fn remove_files(dir: &Path, id: &str) -> std::io::Result<()> {
    remove_if_present(&dir.join(format!("{id}.q")))?;
    remove_if_present(&dir.join(format!("{id}.hold")))
}

/// Removes a file; one already gone is fine.
pub(crate) fn remove_if_present(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// A queue id as the CLI may name it: our own alphabet only, so a
/// command can never point outside the queue folder.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Reads every message of a queue folder directly (for `msgd queue list`
/// and `show`, which work whether or not the server runs).
pub fn scan(dir: &Path) -> Vec<QueuedInfo> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let path = e.path();
        let Some(id) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".q"))
            .map(str::to_string)
        else {
            continue;
        };
        if let Ok(Some(l)) = record::load(&path) {
            let mut state: Vec<(Status, u32, i64, Option<String>)> = l
                .envelope
                .recipients
                .iter()
                .map(|_| (Status::Pending, 0, 0, None))
                .collect();
            for c in l.changes {
                if let Some(s) = state.get_mut(c.rcpt) {
                    *s = (c.status, c.attempts, c.next_attempt, c.last_error);
                }
            }
            out.push(QueuedInfo {
                held: dir.join(format!("{id}.hold")).exists(),
                id,
                sender: l.envelope.sender.clone(),
                size: l.data.len() as u64,
                received: l.envelope.received,
                recipients: l
                    .envelope
                    .recipients
                    .iter()
                    .zip(state)
                    .map(|(r, (st, a, n, e))| (r.address.clone(), st, a, n, e))
                    .collect(),
            });
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Queue {
    /// Opens the queue folder and loads every message in it. Torn files
    /// (never acknowledged) are moved aside into `corrupt/`.
    pub fn open(dir: &Path, config: QueueConfig, hostname: &str) -> anyhow::Result<Arc<Queue>> {
        std::fs::create_dir_all(dir)?;
        let mut entries = BTreeMap::new();
        let mut spares = Vec::new();
        for e in std::fs::read_dir(dir)?.flatten() {
            let path = e.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if name.ends_with(".spare") {
                if spares.len() < SPARE_FILES {
                    spares.push(path);
                } else {
                    let _ = std::fs::remove_file(&path);
                }
                continue;
            }
            let Some(id) = name.strip_suffix(".q") else {
                continue;
            };
            match record::load(&path) {
                Ok(Some(l)) => {
                    if l.torn_tail {
                        warn!(
                            id,
                            "queue file has a torn state record; using the state before it"
                        );
                    }
                    let mut state: Vec<RcptState> = l
                        .envelope
                        .recipients
                        .iter()
                        .map(|_| RcptState::pending())
                        .collect();
                    for c in l.changes {
                        state[c.rcpt] = RcptState {
                            status: c.status,
                            attempts: c.attempts,
                            next_attempt: c.next_attempt,
                            last_error: c.last_error,
                            warned: c.warned,
                            dsn: c.dsn,
                            notified: c.notified,
                        };
                    }
                    entries.insert(
                        id.to_string(),
                        Entry {
                            size: l.data.len() as u64,
                            env: l.envelope,
                            state,
                            held: dir.join(format!("{id}.hold")).exists(),
                            first: None,
                        },
                    );
                }
                Ok(None) => {
                    warn!(
                        id,
                        "queue file torn before it was acknowledged; moving it aside"
                    );
                    let bad = dir.join("corrupt");
                    let _ = std::fs::create_dir_all(&bad);
                    let _ = std::fs::rename(&path, bad.join(name));
                }
                Err(e) => warn!(id, error = %e, "cannot read queue file"),
            }
        }
        info!(messages = entries.len(), dir = %dir.display(), "queue loaded");
        Ok(Arc::new(Queue {
            dir: dir.to_path_buf(),
            config,
            hostname: hostname.to_string(),
            entries: Mutex::new(entries),
            in_flight: Mutex::new(HashSet::new()),
            wake: Notify::new(),
            sync: commit::GroupSync::new(dir.to_path_buf()),
            seq: AtomicU64::new(rand::random()),
            kept_bytes: Arc::new(AtomicU64::new(0)),
            keep_cap: AtomicU64::new(FIRST_ATTEMPT_BYTES),
            spares: Mutex::new(spares),
            transport: OnceLock::new(),
            cut_through_paused: std::sync::atomic::AtomicI64::new(0),
        }))
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.q"))
    }

    /// A new queue id (also for `deliver_now` and then `write_as`).
    pub fn new_id(&self) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        format!(
            "{:012X}{:05X}{:04X}",
            now.as_micros() & 0xFFFF_FFFF_FFFF,
            std::process::id() & 0xFFFFF,
            self.seq.fetch_add(1, Ordering::Relaxed) & 0xFFFF
        )
    }

    /// Stores a message durably and schedules it for immediate delivery.
    /// Returns the queue id once file and folder entry are on disk.
    pub async fn enqueue(
        self: &Arc<Self>,
        env: Envelope,
        data: Arc<Vec<u8>>,
    ) -> std::io::Result<String> {
        let id = self.write(&env, data.clone()).await?;
        self.schedule(&id, env, data);
        Ok(id)
    }

    /// `enqueue` under a given queue id; if a file of that id exists the
    /// message was queued before (and is loaded or delivered): nothing
    /// happens.
    async fn enqueue_named(
        self: &Arc<Self>,
        id: &str,
        env: Envelope,
        data: Arc<Vec<u8>>,
    ) -> std::io::Result<String> {
        let path = self.path(id);
        let e2 = env.clone();
        let bytes = data.clone();
        let file = tokio::task::spawn_blocking(move || {
            match record::create_unsynced(&path, &e2, &data) {
                Ok(f) => Ok(Some(f)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(None),
                Err(e) => {
                    // A torn file must not stand for a sent notice.
                    let _ = std::fs::remove_file(&path);
                    Err(e)
                }
            }
        })
        .await
        .map_err(std::io::Error::other)??;
        let created = file.is_some();
        if let Some(f) = file {
            if let Err(e) = self.sync.durable(f, true).await {
                let _ = std::fs::remove_file(self.path(id));
                return Err(e);
            }
        }
        if created {
            self.schedule(id, env, bytes);
        } else {
            info!(queue_id = id, "notification already queued");
        }
        Ok(id.to_string())
    }

    /// Stores a message durably without scheduling it (a delivery
    /// transaction's `body`): the runner does not see it until
    /// `schedule`; after a crash it is loaded like any other file.
    pub async fn write(&self, env: &Envelope, data: Arc<Vec<u8>>) -> std::io::Result<String> {
        let id = self.new_id();
        self.write_as(&id, env, data).await?;
        Ok(id)
    }

    /// `write` under the queue id `id` (from `new_id`: the id a
    /// cut-through attempt, `deliver_now`, already used).
    pub async fn write_as(
        &self,
        id: &str,
        env: &Envelope,
        data: Arc<Vec<u8>>,
    ) -> std::io::Result<()> {
        let path = self.path(id);
        let e2 = env.clone();
        let spare = self.take_spare();
        let (file, spare) = tokio::task::spawn_blocking(move || {
            if let Some(spare) = spare {
                match record::overwrite_unsynced(&spare, &e2, &data) {
                    Ok(f) => return Ok((f, Some(spare))),
                    Err(e) => {
                        warn!(file = %spare.display(), error = %e, "cannot reuse a spare queue file");
                        let _ = std::fs::remove_file(&spare);
                    }
                }
            }
            record::create_unsynced(&path, &e2, &data).map(|f| (f, None))
        })
        .await
        .map_err(std::io::Error::other)??;
        // Durable together with the files of other sessions (group commit).
        // A file that could not be made durable is not acknowledged: it
        // must not be found and delivered after a restart either.
        let synced = match &spare {
            Some(from) => {
                let to = self.path(id);
                self.sync.durable_renamed(file, from.clone(), to).await
            }
            None => self.sync.durable(file, true).await,
        };
        if let Err(e) = synced {
            if let Some(from) = &spare {
                let _ = std::fs::remove_file(from);
            }
            let _ = std::fs::remove_file(self.path(id));
            return Err(e);
        }
        Ok(())
    }

    /// Cut-through (`queue.cut_through`): delivers every recipient of
    /// `env` now, the runner's way (its transport, the delivery ids of
    /// queue id `id`), within `CUT_THROUGH_DEADLINE`. Returns the indices
    /// delivered, or None when cut-through does not apply (off, the
    /// runner not started, a recipient asked for a success notice, which
    /// the queue sends, or paused: `CUT_THROUGH_PAUSE`). A copy a store took is durable there; what
    /// it did not take is for `write_as` and the runner, under the same
    /// id, so a retry of a copy the store took but did not answer (killed
    /// meanwhile, or past the deadline) is refused by its duplicate
    /// suppression.
    pub async fn deliver_now(
        &self,
        id: &str,
        env: &Envelope,
        data: Arc<Vec<u8>>,
    ) -> Option<Vec<usize>> {
        if !self.config.cut_through || env.recipients.iter().any(|r| r.notify.success) {
            return None;
        }
        if unix_now() < self.cut_through_paused.load(Ordering::Relaxed) {
            return None;
        }
        let transport = self.transport.get()?;
        let all: Vec<usize> = (0..env.recipients.len()).collect();
        let got = tokio::time::timeout(CUT_THROUGH_DEADLINE, transport.deliver(id, env, all, data))
            .await
            .unwrap_or_else(|_| {
                warn!(
                    queue_id = id,
                    "cut-through delivery past its deadline; queueing"
                );
                Vec::new()
            });
        let trouble = got.len() < env.recipients.len() || got.iter().any(|(_, o)| store_trouble(o));
        if trouble {
            let until = unix_now() + CUT_THROUGH_PAUSE.as_secs() as i64;
            if self.cut_through_paused.swap(until, Ordering::Relaxed) < unix_now() {
                warn!(
                    queue_id = id,
                    pause_s = CUT_THROUGH_PAUSE.as_secs(),
                    "a store did not take a cut-through delivery; queueing first for a while"
                );
            }
        }
        let mut delivered: Vec<usize> = got
            .into_iter()
            .filter(|(_, o)| *o == Outcome::Delivered)
            .map(|(i, _)| i)
            .collect();
        delivered.sort_unstable();
        delivered.dedup();
        for &i in &delivered {
            info!(queue_id = id, rcpt = %env.recipients[i].address, "delivered (cut-through)");
        }
        Some(delivered)
    }

    /// The runner has started (`run`).
    pub fn running(&self) -> bool {
        self.transport.get().is_some()
    }

    /// Records `delivered` (indices of `id`'s recipients) as delivered by
    /// the cut-through attempt; durable on return.
    pub async fn record_delivered(&self, id: &str, delivered: &[usize]) -> std::io::Result<()> {
        let changes = delivered
            .iter()
            .map(|&i| RcptState::delivered_now().change(i))
            .collect();
        self.record_changes(id, changes).await
    }

    fn take_spare(&self) -> Option<PathBuf> {
        self.spares.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }

    /// Removes a finished entry's files, keeping its queue file as a spare
    /// while there is room (module doc). A crash before the rename is
    /// durable finds the entry again on load, where it settles as before.
    fn recycle(&self, id: &str, held: bool) -> std::io::Result<()> {
        let path = self.path(id);
        let spare = self.dir.join(format!("{id}.spare"));
        let kept = {
            let mut spares = self.spares.lock().unwrap_or_else(|e| e.into_inner());
            spares.len() < SPARE_FILES && std::fs::rename(&path, &spare).is_ok() && {
                spares.push(spare);
                true
            }
        };
        if !kept {
            return remove_files(&self.dir, id);
        }
        if held {
            remove_if_present(&self.dir.join(format!("{id}.hold")))?;
        }
        Ok(())
    }

    /// Appends state changes to `id`'s file; returns once they are durable.
    async fn record_changes(&self, id: &str, changes: Vec<StateChange>) -> std::io::Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let path = self.path(id);
        let file =
            tokio::task::spawn_blocking(move || record::append_states_unsynced(&path, &changes))
                .await
                .map_err(std::io::Error::other)??;
        self.sync.durable(file, false).await
    }

    /// Bytes of messages kept in memory for their first attempt.
    pub fn kept_bytes(&self) -> u64 {
        self.kept_bytes.load(Ordering::Acquire)
    }

    /// Lowers (or raises) the bound of `kept_bytes` (tests).
    pub fn set_keep_cap(&self, cap: u64) {
        self.keep_cap.store(cap, Ordering::Relaxed);
    }

    /// Group-commit rounds and files flushed so far.
    pub fn sync_stats(&self) -> commit::SyncStats {
        self.sync.stats()
    }

    /// Hands a message stored by `write` to the runner (the transaction
    /// committed). `data` is what was written: the first attempt uses it
    /// instead of reading the file back, within `FIRST_ATTEMPT_BYTES`.
    pub fn schedule(&self, id: &str, env: Envelope, data: Arc<Vec<u8>>) {
        self.schedule_rest(id, env, data, &[]);
    }

    /// `schedule` of a file whose recipients `delivered` were delivered
    /// by cut-through (and recorded: `record_delivered`).
    pub fn schedule_rest(&self, id: &str, env: Envelope, data: Arc<Vec<u8>>, delivered: &[usize]) {
        let size = data.len() as u64;
        let first = Kept::new(
            data,
            &self.kept_bytes,
            self.keep_cap.load(Ordering::Relaxed),
        );
        let state = (0..env.recipients.len())
            .map(|i| match delivered.contains(&i) {
                true => RcptState::delivered_now(),
                false => RcptState::pending(),
            })
            .collect();
        self.lock().insert(
            id.to_string(),
            Entry {
                env,
                state,
                size,
                held: false,
                first,
            },
        );
        self.wake.notify_one();
    }

    /// Removes a message stored by `write` and never scheduled (the
    /// transaction was aborted).
    pub async fn discard(&self, id: &str) -> std::io::Result<()> {
        let dir = self.dir.clone();
        let id = id.to_string();
        tokio::task::spawn_blocking(move || remove_files(&dir, &id))
            .await
            .map_err(std::io::Error::other)?
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Messages in the queue.
    pub fn list(&self) -> Vec<QueuedInfo> {
        self.lock()
            .iter()
            .map(|(id, e)| QueuedInfo {
                id: id.clone(),
                sender: e.env.sender.clone(),
                size: e.size,
                received: e.env.received,
                held: e.held,
                recipients: e
                    .env
                    .recipients
                    .iter()
                    .zip(&e.state)
                    .map(|(r, s)| {
                        (
                            r.address.clone(),
                            s.status.clone(),
                            s.attempts,
                            s.next_attempt,
                            s.last_error.clone(),
                        )
                    })
                    .collect(),
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// When the oldest queued message was received (unix seconds).
    pub fn oldest_received(&self) -> Option<i64> {
        self.lock().values().map(|e| e.env.received).min()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The queue folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Holds a message: no delivery attempt until `release`. The marker
    /// file keeps it held across restarts. False: no such message.
    pub fn hold(&self, id: &str) -> std::io::Result<bool> {
        let mut map = self.lock();
        let Some(e) = map.get_mut(id) else {
            return Ok(false);
        };
        std::fs::write(self.dir.join(format!("{id}.hold")), b"")?;
        e.held = true;
        Ok(true)
    }

    /// Releases a held message and makes it due now.
    pub fn release(&self, id: &str) -> std::io::Result<bool> {
        let found = {
            let mut map = self.lock();
            match map.get_mut(id) {
                Some(e) => {
                    e.held = false;
                    e.make_due();
                    true
                }
                None => false,
            }
        };
        if found {
            remove_if_present(&self.dir.join(format!("{id}.hold")))?;
            self.wake.notify_one();
        }
        Ok(found)
    }

    /// Makes the pending recipients of one message due now.
    pub fn retry(&self, id: &str) -> bool {
        let found = match self.lock().get_mut(id) {
            Some(e) => {
                e.make_due();
                true
            }
            None => false,
        };
        if found {
            self.wake.notify_one();
        }
        found
    }

    /// Deletes a message without notifying anyone (the operator's
    /// decision). An attempt in flight finishes but records nothing.
    pub fn delete(&self, id: &str) -> std::io::Result<bool> {
        if self.lock().remove(id).is_none() {
            return Ok(false);
        }
        remove_files(&self.dir, id)?;
        info!(queue_id = id, "deleted by the operator");
        Ok(true)
    }

    /// Makes every pending recipient due now.
    pub fn flush(&self) {
        for e in self.lock().values_mut() {
            e.make_due();
        }
        self.wake.notify_one();
    }

    fn backoff(&self, attempts: u32) -> i64 {
        let base = self.config.retry_base.max(1) as i64;
        let exp = attempts.saturating_sub(1).min(20);
        (base.saturating_mul(1i64 << exp)).min(self.config.retry_max.max(1) as i64)
    }

    /// Ids with recipients due now, not held and not being tried.
    fn due(&self, now: i64) -> (Vec<String>, Option<i64>) {
        let flying = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        let mut due = Vec::new();
        let mut next: Option<i64> = None;
        for (id, e) in self.lock().iter() {
            if e.held || flying.contains(id) {
                continue;
            }
            for s in &e.state {
                if s.status != Status::Pending {
                    continue;
                }
                if s.next_attempt <= now {
                    due.push(id.clone());
                    break;
                }
                next = Some(next.map_or(s.next_attempt, |n: i64| n.min(s.next_attempt)));
            }
        }
        (due, next)
    }

    /// The delivery loop: runs until shutdown.
    pub async fn run(self: Arc<Self>, transport: Arc<dyn Transport>, shutdown: CancellationToken) {
        let _ = self.transport.set(transport.clone());
        self.settle_loaded().await;
        let slots = Arc::new(Semaphore::new(self.config.concurrency.max(1)));
        loop {
            let now = unix_now();
            let (due, next) = self.due(now);
            for id in due {
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    return;
                };
                self.in_flight
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id.clone());
                let q = self.clone();
                let t = transport.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    q.attempt(&id, t.as_ref()).await;
                    q.in_flight
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&id);
                    q.wake.notify_one();
                });
            }
            let sleep = next
                .map(|n| (n - unix_now()).clamp(1, 60) as u64)
                .unwrap_or(60);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.wake.notified() => {},
                _ = tokio::time::sleep(Duration::from_secs(sleep)) => {},
            }
        }
    }

    /// One delivery attempt for the due recipients of one message.
    async fn attempt(self: &Arc<Self>, id: &str, transport: &dyn Transport) {
        let now = unix_now();
        let (env, rcpts, first) = {
            let mut map = self.lock();
            let Some(e) = map.get_mut(id) else { return };
            // Taken whatever happens next: a retry reads the file.
            let first = e.first.take();
            let rcpts: Vec<usize> = e
                .state
                .iter()
                .enumerate()
                .filter(|(_, s)| s.status == Status::Pending && s.next_attempt <= now)
                .map(|(i, _)| i)
                .collect();
            (e.env.clone(), rcpts, first)
        };
        if rcpts.is_empty() {
            return;
        }
        // The bytes just written when kept, else the file's.
        let data = match first {
            Some(k) => k.data.clone(),
            None => {
                let path = self.path(id);
                match tokio::task::spawn_blocking(move || record::load(&path)).await {
                    Ok(Ok(Some(l))) => Arc::new(l.data),
                    other => {
                        warn!(id, "queued message unreadable: {:?}", other.err());
                        return;
                    }
                }
            }
        };
        let outcomes = transport
            .deliver(id, &env, rcpts.clone(), data.clone())
            .await;
        let expired = now - env.received > self.config.lifetime as i64;
        let mut changes = Vec::new();
        let mut delayed = Vec::new();
        // Every copy of this attempt went to a store (which suppresses a
        // repeat by its delivery id), none to an SMTP relay or MX.
        let mut only_stores = true;
        // The DSN a final status owes is recorded with the status (so a
        // restart still sends it) and sent by `settle`.
        let owed = |notify: bool, action: &str| {
            (notify && !env.sender.is_empty()).then(|| action.to_string())
        };
        {
            let mut map = self.lock();
            let Some(e) = map.get_mut(id) else { return };
            for (i, outcome) in outcomes {
                let Some(s) = e.state.get_mut(i) else {
                    continue;
                };
                if s.status != Status::Pending {
                    continue;
                }
                s.attempts += 1;
                match outcome {
                    Outcome::Delivered => {
                        s.status = Status::Delivered;
                        info!(queue_id = id, rcpt = %env.recipients[i].address, "delivered");
                        s.dsn = owed(env.recipients[i].notify.success, "delivered");
                    }
                    Outcome::Relayed { dsn_passed } => {
                        only_stores = false;
                        s.status = Status::Delivered;
                        info!(queue_id = id, rcpt = %env.recipients[i].address, dsn_passed, "relayed");
                        crate::metrics::messages("delivered", "queue", 1);
                        s.dsn = owed(env.recipients[i].notify.success && !dsn_passed, "relayed");
                    }
                    // Into another queue: the notice request went with it.
                    Outcome::Queued => {
                        only_stores = false;
                        s.status = Status::Delivered;
                        info!(queue_id = id, rcpt = %env.recipients[i].address, "queued again");
                    }
                    o if o.is_permanent() => {
                        let why = o.text();
                        s.status = Status::Failed;
                        info!(queue_id = id, rcpt = %env.recipients[i].address, reason = %why, "failed permanently");
                        crate::metrics::messages("bounced", "queue", 1);
                        s.last_error = Some(why);
                        s.dsn = owed(env.recipients[i].notify.failure, "failed");
                    }
                    o => {
                        let why = o.text();
                        if expired {
                            crate::metrics::messages("bounced", "queue", 1);
                            s.status = Status::Failed;
                            s.last_error = Some(format!(
                                "{why} (gave up after {} hours in the queue)",
                                self.config.lifetime / 3600
                            ));
                            s.dsn = owed(env.recipients[i].notify.failure, "failed");
                        } else {
                            s.next_attempt = now + self.backoff(s.attempts);
                            info!(queue_id = id, rcpt = %env.recipients[i].address, reason = %why, retry_in = s.next_attempt - now, "deferred");
                            crate::metrics::messages("deferred", "queue", 1);
                            s.last_error = Some(why);
                            if !s.warned
                                && now - env.received >= self.config.delay_warning as i64
                                && env.recipients[i].notify.delay
                            {
                                s.warned = true;
                                delayed.push(i);
                            }
                        }
                    }
                }
                changes.push(s.change(i));
            }
        }
        // Record the outcomes durably before anything else happens; an
        // entry that is finished by them (every recipient final, no DSN
        // owed, every copy taken by a store) records that by its removal
        // in `settle` instead: a crash
        // before the unlink is durable repeats the attempt, whose copies
        // the stores' duplicate suppression answers without storing them
        // again (docs/delivery.md). One fdatasync per message less.
        let finished = only_stores
            && delayed.is_empty()
            && self.lock().get(id).is_some_and(|e| {
                e.state
                    .iter()
                    .all(|s| s.status != Status::Pending && !s.owes_dsn())
            });
        let wrote = match finished {
            true => Ok(()),
            false => self.record_changes(id, changes).await,
        };
        if let Err(wrote) = wrote {
            warn!(queue_id = id, "cannot record delivery state: {:?}", wrote);
        }
        self.notify_sender(id, &env, &delayed, "delayed", &data, None)
            .await;
        self.settle(id, &env, &data).await;
    }

    /// After a restart: every loaded entry sends the DSNs it still owes,
    /// and one with nothing left to do is removed (it was killed between
    /// recording its last outcome and removing its file).
    async fn settle_loaded(self: &Arc<Self>) {
        let ids: Vec<(String, Envelope)> = self
            .lock()
            .iter()
            .filter(|(_, e)| {
                e.state.iter().any(RcptState::owes_dsn)
                    || e.state.iter().all(|s| s.status != Status::Pending)
            })
            .map(|(id, e)| (id.clone(), e.env.clone()))
            .collect();
        for (id, env) in ids {
            let path = self.path(&id);
            let data = match tokio::task::spawn_blocking(move || record::load(&path)).await {
                Ok(Ok(Some(l))) => l.data,
                other => {
                    warn!(queue_id = %id, "queued message unreadable: {:?}", other.err());
                    continue;
                }
            };
            info!(queue_id = %id, "finishing an entry loaded with work done");
            self.settle(&id, &env, &data).await;
        }
    }

    /// Sends the DSNs the final statuses of `id` owe (each once: the DSN
    /// has a name derived from the entry, and `notified` is recorded after
    /// it is queued), then removes the entry if nothing is pending.
    async fn settle(self: &Arc<Self>, id: &str, env: &Envelope, data: &[u8]) {
        let groups: Vec<(String, Vec<usize>)> = {
            let map = self.lock();
            let Some(e) = map.get(id) else { return };
            let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
            for (i, s) in e.state.iter().enumerate() {
                if let (true, Some(a)) = (s.owes_dsn(), &s.dsn) {
                    groups.entry(a.clone()).or_default().push(i);
                }
            }
            groups.into_iter().collect()
        };
        for (action, rcpts) in groups {
            let Some(&first) = rcpts.first() else {
                continue;
            };
            let action: &'static str = match action.as_str() {
                "delivered" => "delivered",
                "relayed" => "relayed",
                _ => "failed",
            };
            // One name per (entry, action, first recipient): a repeat after
            // a crash finds the file and does not queue it again.
            let name = format!("{id}N{}{first}", &action[..1].to_uppercase());
            if !self
                .notify_sender(id, env, &rcpts, action, data, Some(&name))
                .await
            {
                continue;
            }
            let changes: Vec<StateChange> = {
                let mut map = self.lock();
                let Some(e) = map.get_mut(id) else { return };
                rcpts
                    .iter()
                    .filter_map(|&i| {
                        let s = e.state.get_mut(i)?;
                        s.notified = true;
                        Some(s.change(i))
                    })
                    .collect()
            };
            if let Err(wrote) = self.record_changes(id, changes).await {
                warn!(
                    queue_id = id,
                    "cannot record a sent notification: {:?}", wrote
                );
            }
        }
        let done = {
            let map = self.lock();
            map.get(id).is_some_and(|e| {
                e.state
                    .iter()
                    .all(|s| s.status != Status::Pending && !s.owes_dsn())
            })
        };
        if done {
            let held = self.lock().remove(id).is_none_or(|e| e.held);
            if let Err(e) = self.recycle(id, held) {
                warn!(queue_id = id, error = %e, "cannot remove finished queue file");
            }
            info!(queue_id = id, "removed from queue");
        }
    }

    /// Queues a DSN to the sender for these recipients (never to the null
    /// sender: bounces do not bounce). With `name` the DSN gets that queue
    /// id, and one already queued under it counts as sent. True: queued
    /// (or nothing to send).
    async fn notify_sender(
        self: &Arc<Self>,
        id: &str,
        env: &Envelope,
        rcpts: &[usize],
        action: &'static str,
        data: &[u8],
        name: Option<&str>,
    ) -> bool {
        if env.sender.is_empty() {
            return true;
        }
        let errors: Vec<String> = {
            let map = self.lock();
            let Some(e) = map.get(id) else { return false };
            rcpts
                .iter()
                .map(|&i| e.state[i].last_error.clone().unwrap_or_default())
                .collect()
        };
        let reports: Vec<dsn::Report<'_>> = rcpts
            .iter()
            .zip(&errors)
            .filter(|(i, _)| action != "failed" || env.recipients[**i].notify.failure)
            .map(|(&i, err)| dsn::Report {
                address: &env.recipients[i].address,
                orcpt: env.recipients[i].orcpt.as_deref(),
                action,
                status: match action {
                    "delivered" | "relayed" => "2.0.0".to_string(),
                    // A final failure after temporary errors (expiry):
                    // the class is permanent now (RFC 3464 2.3.4).
                    "failed" => {
                        let st = dsn::status_of(err, true);
                        match st.strip_prefix("4.") {
                            Some(rest) => format!("5.{rest}"),
                            None => st,
                        }
                    }
                    _ => dsn::status_of(err, false),
                },
                diagnostic: err,
            })
            .collect();
        if reports.is_empty() {
            return true;
        }
        let msg = dsn::build(&self.hostname, env, &reports, data, id);
        let bounce = Envelope {
            sender: String::new(),
            recipients: vec![Recipient {
                address: env.sender.clone(),
                orcpt: None,
                notify: record::Notify {
                    success: false,
                    failure: false,
                    delay: false,
                },
                route: String::new(),
            }],
            received: unix_now(),
            envid: None,
            ret_full: false,
            junk: false,
        };
        let queued = match name {
            Some(n) => self.enqueue_named(n, bounce, Arc::new(msg)).await,
            None => self.enqueue(bounce, Arc::new(msg)).await,
        };
        match queued {
            Ok(bid) => {
                info!(queue_id = id, dsn = %bid, action, "delivery status notification queued");
                true
            }
            Err(e) => {
                warn!(queue_id = id, error = %e, "cannot queue a delivery status notification");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests;
