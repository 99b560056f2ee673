//! The mboxlist database (redb): tables, read side, and the write jobs.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex};

use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};

#[path = "duplicates.rs"]
pub(super) mod duplicates;
#[path = "expire.rs"]
pub(super) mod expire;
#[path = "extra.rs"]
mod extra;
#[path = "journal.rs"]
pub(super) mod journal;
#[path = "metadata.rs"]
pub(super) mod metadata;
#[path = "reconstruct.rs"]
pub(super) mod reconstruct;
#[path = "restore.rs"]
pub(super) mod restore;
#[path = "sessions.rs"]
pub(super) mod sessions;
#[path = "sieve.rs"]
pub(super) mod sieve;
#[path = "sortorder.rs"]
pub(super) mod sortorder;
#[path = "stats.rs"]
pub(super) mod stats;
#[path = "threads.rs"]
pub(super) mod threads;
#[path = "urlauth.rs"]
pub(super) mod urlauth;

use super::files::{self, Prelude};
use super::writer::{self, Batch, Job};
use super::*;
use crate::config::Config;

/// Mailbox records by id.
const MAILBOXES: TableDefinition<u64, &[u8]> = TableDefinition::new("mailboxes");
/// (user, mailbox name) -> mailbox id.
const NAMES: TableDefinition<(&str, &str), u64> = TableDefinition::new("names");
/// (mailbox id, uid) -> MessageMeta.
const MESSAGES: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("messages");
/// (mailbox id, modseq, uid): which messages changed when (CONDSTORE).
const MODSEQS: TableDefinition<(u64, u64, u32), u8> = TableDefinition::new("modseqs");
/// (mailbox id, modseq, uid): expunged messages (QRESYNC, session sync).
const EXPUNGED: TableDefinition<(u64, u64, u32), u8> = TableDefinition::new("expunged");
/// user -> UserRec.
const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
/// (user, mailbox name) subscribed.
const SUBS: TableDefinition<(&str, &str), u8> = TableDefinition::new("subscriptions");
/// Counters: next mailbox id, last UIDVALIDITY handed out.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

#[derive(Debug, Clone, Serialize, Deserialize)]
struct MailboxRec {
    user: String,
    name: String,
    uidvalidity: u32,
    uidnext: u32,
    highestmodseq: u64,
    special_use: Option<SpecialUse>,
    exists: u32,
    unseen: u32,
    size: u64,
    recent_uid: u32,
}

/// A message file written (not yet durable), not yet in its mailbox: the file,
/// its thread keys, size, flags, internal date and zone.
type StagedFile = (files::TmpFile, threads::ThreadKeys, u64, Flags, i64, i16);

/// What `Db::stage` did.
enum Staged {
    /// The files, in the user's partition.
    Files(PathBuf, Vec<StagedFile>),
    /// The delivery id was taken before: nothing written.
    Repeat,
    /// No such user yet: the messages back.
    NoUser(Vec<NewMessage>),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct UserRec {
    partition: String,
    usage: Usage,
}

/// Cache figures of the mboxlist (the seed's db_stat).
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreStats {
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub cache_bytes: u64,
}

impl StoreStats {
    /// Hit rate in percent (the seed aims for 95-99 %).
    pub fn hit_rate(&self) -> f64 {
        let total = self.cache_hits + self.cache_misses;
        if total == 0 {
            100.0
        } else {
            self.cache_hits as f64 * 100.0 / total as f64
        }
    }
}

pub struct Inner {
    db: Arc<Database>,
    jobs: Mutex<mpsc::Sender<Job>>,
    partitions: HashMap<String, PathBuf>,
    default_partition: String,
    min_free_disk: u64,
    watchers: Arc<Mutex<HashMap<MailboxId, watch::Sender<ModSeq>>>>,
    /// Per-user change counters (NOTIFY, RFC 5465): bumped after a commit
    /// that changed one of the user's mailboxes, names or subscriptions.
    user_watchers: Arc<Mutex<HashMap<String, watch::Sender<u64>>>>,
    /// Bumped after every change of server (mailbox 0) METADATA entries,
    /// once it is committed: a reader that saw no setting at generation g
    /// may rely on that while the generation is still g
    /// (`Store::server_settings_generation`).
    pub(super) server_settings: std::sync::atomic::AtomicU64,
    /// Settings found absent or off, per setting name and user, with the
    /// `server_settings` generation they were read at (bounded).
    pub(super) settings_off: Mutex<HashMap<&'static str, HashMap<String, u64>>>,
    /// Appends staging their files, for the writer's group commit
    /// (`writer::Staging`).
    staging: Arc<writer::Staging>,
}

fn ie(e: impl std::fmt::Display) -> StoreError {
    StoreError::internal(e)
}

fn enc<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    postcard::to_allocvec(v).map_err(ie)
}

fn dec<'a, T: Deserialize<'a>>(b: &'a [u8]) -> Result<T> {
    postcard::from_bytes(b).map_err(ie)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Inner {
    pub fn open(config: &Config) -> anyhow::Result<Arc<Inner>> {
        let dbdir = config.data_path(&config.store.dbdir, "mboxlist");
        std::fs::create_dir_all(&dbdir)?;
        let mut partitions = HashMap::new();
        for name in config.store.partition.keys() {
            let path = config
                .partition_path(name)
                .ok_or_else(|| anyhow::anyhow!("partition {name}"))?;
            std::fs::create_dir_all(path.join("tmp"))?;
            // Leftovers of deliveries that never committed.
            if let Ok(rd) = std::fs::read_dir(path.join("tmp")) {
                for e in rd.flatten() {
                    let _ = std::fs::remove_file(e.path());
                }
            }
            partitions.insert(name.clone(), path);
        }
        let path = dbdir.join("mboxlist.redb");
        let db = redb::Builder::new()
            .set_cache_size(config.store.dbcachesize as usize)
            .create(&path)
            .map_err(|e| anyhow::anyhow!("opening {}: {e}", path.display()))?;
        {
            let txn = db.begin_write()?;
            txn.open_table(MAILBOXES)?;
            txn.open_table(NAMES)?;
            txn.open_table(MESSAGES)?;
            txn.open_table(MODSEQS)?;
            txn.open_table(EXPUNGED)?;
            txn.open_table(USERS)?;
            txn.open_table(SUBS)?;
            txn.open_table(META)?;
            extra::create_tables(&txn)?;
            threads::create_tables(&txn)?;
            metadata::create_tables(&txn)?;
            urlauth::create_tables(&txn)?;
            sessions::create_tables(&txn)?;
            sortorder::create_tables(&txn)?;
            sieve::create_tables(&txn)?;
            duplicates::create_tables(&txn)?;
            journal::create_tables(&txn)?;
            journal::build_index(&txn)?;
            expire::create_tables(&txn)?;
            // Deleted mailboxes whose folders a crash left in place.
            expire::finish_deleted(&txn, now())?;
            txn.commit()?;
        }
        let db = Arc::new(db);
        let (tx, rx) = mpsc::channel();
        let watchers: Arc<Mutex<HashMap<MailboxId, watch::Sender<ModSeq>>>> = Arc::default();
        let w = watchers.clone();
        let user_watchers: Arc<Mutex<HashMap<String, watch::Sender<u64>>>> = Arc::default();
        let uw = user_watchers.clone();
        let wdb = db.clone();
        let keep = config.http.changes_kept.max(1);
        let wparts = Arc::new(partitions.clone());
        let staging = Arc::new(writer::Staging::default());
        let wstaging = (staging.clone(), writer::GATHER_WAIT);
        let syncer = writer::Syncer::new(config.store.sync)?;
        std::thread::Builder::new()
            .name("mboxlist-writer".into())
            .spawn(move || {
                writer::run(wdb, rx, keep, wparts, wstaging, syncer, |changed, users| {
                    let map = w.lock().unwrap_or_else(|e| e.into_inner());
                    for (id, modseq) in changed {
                        if let Some(s) = map.get(id) {
                            s.send_replace(*modseq);
                        }
                    }
                    drop(map);
                    let map = uw.lock().unwrap_or_else(|e| e.into_inner());
                    for user in users {
                        if let Some(s) = map.get(user) {
                            s.send_modify(|n| *n = n.wrapping_add(1));
                        }
                    }
                })
            })?;
        Ok(Arc::new(Inner {
            db,
            jobs: Mutex::new(tx),
            partitions,
            default_partition: config.store.default_partition.clone(),
            min_free_disk: config.store.min_free_disk,
            watchers,
            user_watchers,
            server_settings: std::sync::atomic::AtomicU64::new(0),
            settings_off: Mutex::new(HashMap::new()),
            staging,
        }))
    }

    /// Sends a job to the writer and waits for its answer after the commit.
    async fn submit<T: Send + 'static>(
        &self,
        f: impl FnOnce(&WriteTransaction, &mut Batch) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(writer::job(f, tx))
            .map_err(|_| StoreError::Internal("mboxlist writer stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Internal("mboxlist writer dropped a job".into()))?
    }

    /// Runs a short read-only closure (point lookups, no scans) here, on
    /// the caller's thread: a blocking-pool hop costs more than the lookup
    /// (the pages it needs are almost always in redb's cache).
    fn read_now<T>(&self, f: impl FnOnce(&ReadTransaction) -> Result<T>) -> Result<T> {
        let txn = self.db.begin_read().map_err(ie)?;
        f(&txn)
    }

    /// Runs a read-only closure on a blocking thread.
    async fn read_txn<T: Send + 'static>(
        &self,
        f: impl FnOnce(&ReadTransaction) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_read().map_err(ie)?;
            f(&txn)
        })
        .await
        .map_err(ie)?
    }

    fn partition_path(&self, name: &str) -> Result<PathBuf> {
        self.partitions
            .get(name)
            .cloned()
            .ok_or_else(|| StoreError::Internal(format!("unknown partition '{name}'")))
    }

    fn user_partition_sync(&self, txn: &ReadTransaction, user: &str) -> Result<Option<PathBuf>> {
        let users = txn.open_table(USERS).map_err(ie)?;
        match users.get(user).map_err(ie)? {
            Some(v) => {
                let rec: UserRec = dec(v.value())?;
                Ok(Some(self.partition_path(&rec.partition)?))
            }
            None => Ok(None),
        }
    }

    pub async fn ensure_user(&self, user: &str, partition: Option<&str>) -> Result<()> {
        let exists = self.read_now(|txn| {
            let users = txn.open_table(USERS).map_err(ie)?;
            Ok(users.get(user).map_err(ie)?.is_some())
        })?;
        if exists {
            return Ok(());
        }
        let part = partition.unwrap_or(&self.default_partition).to_string();
        self.partition_path(&part)?;
        let user = user.to_string();
        self.submit(move |txn, batch| create_user(txn, batch, &user, &part).map(|_| ()))
            .await
    }

    /// `append_impl`'s blocking part: see there.
    fn stage(
        &self,
        u: &str,
        m: &str,
        msgs: Vec<NewMessage>,
        once: Option<&duplicates::Once>,
    ) -> Result<Staged> {
        let txn = self.db.begin_read().map_err(ie)?;
        let Some(partition) = self.user_partition_sync(&txn, u)? else {
            return Ok(Staged::NoUser(msgs));
        };
        if let Some(o) = once {
            if duplicates::seen_read(&txn, u, o)? {
                return Ok(Staged::Repeat);
            }
        }
        drop(txn);
        if crate::fsutil::free_space(&partition).map_err(ie)? < self.min_free_disk {
            return Err(StoreError::DiskFull);
        }
        let mut staged = Vec::with_capacity(msgs.len());
        for msg in msgs {
            let (internal_date, tz) = msg.internal_date.unwrap_or((now(), 0));
            let prelude = Prelude {
                u: u.to_string(),
                m: m.to_string(),
                f: msg.flags.names(),
                d: internal_date,
                z: tz,
                c: Some(crc32fast::hash(&msg.data)),
            };
            let tmp = files::write_tmp(&partition, &prelude, &msg.data).map_err(ie)?;
            let keys = threads::keys(&msg.data);
            staged.push((
                tmp,
                keys,
                msg.data.len() as u64,
                msg.flags,
                internal_date,
                tz,
            ));
        }
        Ok(Staged::Files(partition, staged))
    }

    pub async fn append(
        self: &Arc<Self>,
        user: &str,
        mailbox: &str,
        msg: NewMessage,
        quota: Quota,
    ) -> Result<Placed> {
        let done = self
            .append_batch(user, mailbox, vec![msg], quota, None)
            .await?;
        Ok(Placed {
            mailbox: done.mailbox,
            uidvalidity: done.uidvalidity,
            uid: done.uids.first().copied().unwrap_or_default(),
        })
    }

    /// Appends `msgs` in one write job: all of them or none (MULTIAPPEND,
    /// RFC 3502). With `replace`, that message is expunged in the same
    /// job (REPLACE, RFC 8508); it must still exist, else nothing changes.
    /// Quota is checked for the whole batch, less what `replace` frees
    /// for the same user.
    pub async fn append_batch(
        self: &Arc<Self>,
        user: &str,
        mailbox: &str,
        msgs: Vec<NewMessage>,
        quota: Quota,
        replace: Option<(MailboxId, Uid)>,
    ) -> Result<Appended> {
        self.append_impl(user, mailbox, msgs, quota, replace, None)
            .await?
            .ok_or(StoreError::Internal("append without id suppressed".into()))
    }

    /// Appends one message unless `user` has taken delivery `once.id`
    /// within the window: `Ok(None)` then, and nothing is written. The
    /// id is looked up and recorded in the append's own transaction.
    pub async fn append_once(
        self: &Arc<Self>,
        user: &str,
        mailbox: &str,
        msg: NewMessage,
        quota: Quota,
        once: duplicates::Once,
    ) -> Result<Option<Placed>> {
        let done = self
            .append_impl(user, mailbox, vec![msg], quota, None, Some(once))
            .await?;
        Ok(done.map(|done| Placed {
            mailbox: done.mailbox,
            uidvalidity: done.uidvalidity,
            uid: done.uids.first().copied().unwrap_or_default(),
        }))
    }

    /// Delivery ids recorded for `user` (tests, tools).
    pub async fn delivery_ids(&self, user: &str) -> Result<u64> {
        let u = user.to_string();
        self.read_txn(move |txn| duplicates::count(txn, &u)).await
    }

    /// `append_batch`, and with `once` the duplicate check and record
    /// (`Ok(None)`: a duplicate, nothing stored).
    async fn append_impl(
        self: &Arc<Self>,
        user: &str,
        mailbox: &str,
        msgs: Vec<NewMessage>,
        quota: Quota,
        replace: Option<(MailboxId, Uid)>,
        once: Option<duplicates::Once>,
    ) -> Result<Option<Appended>> {
        let name = normalize_name(mailbox)?;
        if msgs.is_empty() {
            return Err(StoreError::NotAllowed("no message to append"));
        }
        let old_owner = match replace {
            Some((id, _)) => Some(self.mailbox_owner(id).await?),
            None => None,
        };
        // One trip to a blocking thread: the user's partition, the
        // duplicate check (a repeat writes no file) and the files, written
        // and fsynced in parallel with other deliveries; only the renames
        // and index entries go through the writer. A user not there yet
        // is created (default partition) and the trip made again. A file
        // not renamed into place is removed on drop.
        let mut msgs = msgs;
        let mut created = false;
        let (partition, staged, staging) = loop {
            // Until the job is sent: the writer may wait for it to share
            // the commit in progress (`writer::Staging`).
            let staging = self.staging.enter();
            let me = self.clone();
            let u = user.to_string();
            let m = name.clone();
            let o = once.clone();
            let step = tokio::task::spawn_blocking(move || me.stage(&u, &m, msgs, o.as_ref()))
                .await
                .map_err(ie)??;
            match step {
                Staged::Files(partition, staged) => break (partition, staged, staging),
                Staged::Repeat => return Ok(None),
                Staged::NoUser(back) if !created => {
                    drop(staging);
                    self.ensure_user(user, None).await?;
                    (msgs, created) = (back, true);
                }
                Staged::NoUser(_) => return Err(StoreError::Internal("user vanished".into())),
            }
        };
        let user = user.to_string();
        drop(staging);
        self.submit(move |txn, batch| {
            if let Some(o) = &once {
                // Authoritative: the writer serialises two deliveries of
                // the same id. The staged file is removed on drop.
                if duplicates::seen_write(txn, &user, o)? {
                    return Ok(None);
                }
            }
            let (id, mut rec) = mailbox_by_name(txn, &user, &name)?;
            // Validate everything before the first write.
            let old = match replace {
                Some((old_box, old_uid)) => {
                    let msgs = txn.open_table(MESSAGES).map_err(ie)?;
                    let m = msgs
                        .get((old_box, old_uid))
                        .map_err(ie)?
                        .ok_or(StoreError::NotAllowed("the message to replace is gone"))?;
                    Some(dec::<MessageMeta>(m.value())?)
                }
                None => None,
            };
            let bytes: u64 = staged.iter().map(|s| s.2).sum();
            let count = staged.len() as u64;
            let same_owner = old_owner.as_ref().is_some_and(|(o, _)| *o == user);
            let (freed_bytes, freed_count) = match (&old, same_owner) {
                (Some(m), true) => (m.size, 1),
                _ => (0, 0),
            };
            check_quota(
                txn,
                &user,
                bytes.saturating_sub(freed_bytes),
                count.saturating_sub(freed_count),
                quota,
            )?;
            let first = rec.uidnext;
            rec.uidnext = u32::try_from(count)
                .ok()
                .and_then(|n| rec.uidnext.checked_add(n))
                .ok_or(StoreError::Internal(
                    "UID space of mailbox exhausted".into(),
                ))?;
            rec.highestmodseq += 1;
            let dir = files::mailbox_dir(&partition, &user, id);
            let mut touched = Vec::new();
            let mut uids = Vec::with_capacity(staged.len());
            for (i, (mut tmp, keys, size, flags, internal_date, tz)) in
                staged.into_iter().enumerate()
            {
                let uid = first + i as u32;
                let meta = MessageMeta {
                    uid,
                    flags,
                    internal_date,
                    tz_offset_min: tz,
                    size,
                    modseq: rec.highestmodseq,
                    offset: tmp.offset,
                    save_date: now(),
                };
                let dest = files::message_file(&dir, uid);
                batch.place(&mut tmp, dest, &mut touched).map_err(ie)?;
                add_message(txn, id, &mut rec, &meta)?;
                let (email, thread) = extra::on_append(txn, id, uid, &user, &keys)?;
                journal::message_added(
                    txn,
                    &mut batch.journal,
                    &user,
                    (id, uid),
                    email,
                    thread,
                    true,
                )?;
                uids.push(uid);
            }
            batch.sync_dirs.extend(touched);
            batch.sync_dirs.insert(dir);
            add_usage(txn, &user, bytes as i64, count as i64)?;
            put_mailbox(txn, id, &rec)?;
            batch.notify.insert(id, rec.highestmodseq);
            if let (Some(m), Some((old_box, _)), Some((old_user, old_part))) =
                (old, replace, old_owner)
            {
                let mut src = get_mailbox(txn, old_box)?;
                src.highestmodseq += 1;
                let smod = src.highestmodseq;
                remove_messages(
                    txn,
                    batch,
                    old_box,
                    &mut src,
                    std::slice::from_ref(&m),
                    smod,
                )?;
                let src_dir = files::mailbox_dir(&old_part, &old_user, old_box);
                batch
                    .unlink_after
                    .push(files::message_file(&src_dir, m.uid));
                add_usage(txn, &old_user, -(m.size as i64), -1)?;
                put_mailbox(txn, old_box, &src)?;
                batch.notify.insert(old_box, smod);
                batch.users.insert(old_user.clone());
            }
            if let Some(o) = &once {
                // Same transaction as the append: one commit makes both
                // durable.
                duplicates::record(txn, &user, o)?;
            }
            batch.users.insert(user.clone());
            Ok(Some(Appended {
                mailbox: id,
                uidvalidity: rec.uidvalidity,
                uids,
            }))
        })
        .await
    }

    pub async fn list(&self, user: &str) -> Result<Vec<MailboxInfo>> {
        let user = user.to_string();
        self.read_txn(move |txn| {
            let names = txn.open_table(NAMES).map_err(ie)?;
            let mboxes = txn.open_table(MAILBOXES).map_err(ie)?;
            let subs = txn.open_table(SUBS).map_err(ie)?;
            let mut out = Vec::new();
            for item in names.range((user.as_str(), "")..).map_err(ie)? {
                let (k, v) = item.map_err(ie)?;
                let (u, name) = k.value();
                if u != user {
                    break;
                }
                let id = v.value();
                if let Some(r) = mboxes.get(id).map_err(ie)? {
                    let rec: MailboxRec = dec(r.value())?;
                    let subscribed = subs.get((u, name)).map_err(ie)?.is_some();
                    out.push(info(id, &rec, subscribed));
                }
            }
            Ok(out)
        })
        .await
    }

    pub async fn status(&self, user: &str, mailbox: &str) -> Result<MailboxInfo> {
        let name = normalize_name(mailbox)?;
        let user = user.to_string();
        self.read_txn(move |txn| {
            let (id, rec) = mailbox_by_name_r(txn, &user, &name)?;
            let subs = txn.open_table(SUBS).map_err(ie)?;
            let subscribed = subs
                .get((user.as_str(), name.as_str()))
                .map_err(ie)?
                .is_some();
            Ok(info(id, &rec, subscribed))
        })
        .await
    }

    pub async fn create_mailbox(
        &self,
        user: &str,
        mailbox: &str,
        special_use: Option<SpecialUse>,
    ) -> Result<MailboxInfo> {
        let name = normalize_name(mailbox)?;
        self.ensure_user(user, None).await?;
        let user = user.to_string();
        self.submit(move |txn, batch| {
            if name_id(txn, &user, &name)?.is_some() {
                return Err(StoreError::MailboxExists);
            }
            batch.users.insert(user.clone());
            // Missing parents are created too, so the hierarchy has no holes.
            let mut prefix = String::new();
            for part in name.split(DELIMITER) {
                if !prefix.is_empty() {
                    prefix.push(DELIMITER);
                }
                prefix.push_str(part);
                if prefix != name && name_id(txn, &user, &prefix)?.is_none() {
                    create_mailbox_rec(txn, batch, &user, &prefix, None)?;
                }
            }
            let (id, rec) = create_mailbox_rec(txn, batch, &user, &name, special_use)?;
            Ok(info(id, &rec, false))
        })
        .await
    }

    pub async fn delete_mailbox(&self, user: &str, mailbox: &str) -> Result<()> {
        let name = normalize_name(mailbox)?;
        if name == "INBOX" {
            return Err(StoreError::NotAllowed("INBOX cannot be deleted"));
        }
        let user = user.to_string();
        let partition = self.user_partition(&user).await?;
        self.submit(move |txn, batch| {
            let (id, rec) = mailbox_by_name(txn, &user, &name)?;
            let uids: Vec<(u32, u64, u64)> = {
                let msgs = txn.open_table(MESSAGES).map_err(ie)?;
                let mut v = Vec::new();
                for item in msgs.range((id, 0u32)..=(id, u32::MAX)).map_err(ie)? {
                    let (k, val) = item.map_err(ie)?;
                    let m: MessageMeta = dec(val.value())?;
                    v.push((k.value().1, m.modseq, m.size));
                }
                v
            };
            {
                let mut msgs = txn.open_table(MESSAGES).map_err(ie)?;
                let mut mods = txn.open_table(MODSEQS).map_err(ie)?;
                for (uid, modseq, _) in &uids {
                    msgs.remove((id, *uid)).map_err(ie)?;
                    mods.remove((id, *modseq, *uid)).map_err(ie)?;
                }
                let mut exp = txn.open_table(EXPUNGED).map_err(ie)?;
                let gone: Vec<(u64, u32)> = exp
                    .range((id, 0u64, 0u32)..=(id, u64::MAX, u32::MAX))
                    .map_err(ie)?
                    .filter_map(|i| i.ok().map(|(k, _)| (k.value().1, k.value().2)))
                    .collect();
                for (m, u) in gone {
                    exp.remove((id, m, u)).map_err(ie)?;
                }
                txn.open_table(MAILBOXES)
                    .map_err(ie)?
                    .remove(id)
                    .map_err(ie)?;
                txn.open_table(NAMES)
                    .map_err(ie)?
                    .remove((user.as_str(), name.as_str()))
                    .map_err(ie)?;
            }
            for (uid, _, _) in &uids {
                let (email, _) = extra::object_ids(txn, id, *uid)?;
                journal::message_removed(txn, &mut batch.journal, &user, (id, *uid), email)?;
            }
            batch
                .journal
                .record(&user, journal::Kind::Mailbox, id, journal::Op::Destroyed);
            extra::on_delete_mailbox(txn, id)?;
            metadata::on_delete_mailbox(txn, id, &user)?;
            let bytes: u64 = uids.iter().map(|x| x.2).sum();
            add_usage(txn, &user, -(bytes as i64), -(uids.len() as i64))?;
            let dir = files::mailbox_dir(&partition, &user, id);
            expire::note_deleted(txn, id, &dir)?;
            batch.aside_dirs_after.push(dir);
            // Sessions that had it selected learn it is gone.
            batch.notify.insert(id, rec.highestmodseq + 1);
            batch.users.insert(user.clone());
            Ok(())
        })
        .await
    }

    pub async fn rename_mailbox(&self, user: &str, from: &str, to: &str) -> Result<()> {
        let from = normalize_name(from)?;
        let to = normalize_name(to)?;
        if from == "INBOX" {
            // RFC 3501 6.3.5: messages move to the new mailbox, INBOX stays.
            self.create_mailbox(user, &to, None).await?;
            let snap = self.snapshot(user, "INBOX").await?;
            let uids = snap.messages.iter().map(|m| m.uid).collect();
            self.copy(snap.info.id, uids, user, &to, true, Quota::default())
                .await?;
            return Ok(());
        }
        if to == "INBOX" {
            return Err(StoreError::MailboxExists);
        }
        if to.starts_with(&format!("{from}{DELIMITER}")) {
            return Err(StoreError::NotAllowed("cannot move a mailbox into itself"));
        }
        let user = user.to_string();
        self.submit(move |txn, batch| {
            mailbox_by_name(txn, &user, &from)?;
            if name_id(txn, &user, &to)?.is_some() {
                return Err(StoreError::MailboxExists);
            }
            let child_prefix = format!("{from}{DELIMITER}");
            let mut moves = Vec::new();
            {
                let names = txn.open_table(NAMES).map_err(ie)?;
                for item in names.range((user.as_str(), "")..).map_err(ie)? {
                    let (k, v) = item.map_err(ie)?;
                    let (u, n) = k.value();
                    if u != user {
                        break;
                    }
                    if n == from || n.starts_with(&child_prefix) {
                        moves.push((n.to_string(), v.value()));
                    }
                }
            }
            for (old, _) in &moves {
                let new = format!("{to}{}", &old[from.len()..]);
                if name_id(txn, &user, &new)?.is_some() {
                    return Err(StoreError::MailboxExists);
                }
            }
            // Parents of the new name.
            let mut prefix = String::new();
            let parts: Vec<&str> = to.split(DELIMITER).collect();
            for part in &parts[..parts.len().saturating_sub(1)] {
                if !prefix.is_empty() {
                    prefix.push(DELIMITER);
                }
                prefix.push_str(part);
                if name_id(txn, &user, &prefix)?.is_none() {
                    create_mailbox_rec(txn, batch, &user, &prefix, None)?;
                }
            }
            let mut names = txn.open_table(NAMES).map_err(ie)?;
            let mut subs = txn.open_table(SUBS).map_err(ie)?;
            for (old, id) in moves {
                let new = format!("{to}{}", &old[from.len()..]);
                names.remove((user.as_str(), old.as_str())).map_err(ie)?;
                names
                    .insert((user.as_str(), new.as_str()), id)
                    .map_err(ie)?;
                if subs
                    .remove((user.as_str(), old.as_str()))
                    .map_err(ie)?
                    .is_some()
                {
                    subs.insert((user.as_str(), new.as_str()), 1).map_err(ie)?;
                }
                drop_names_then_update(txn, batch, id, &new)?;
                batch
                    .journal
                    .record(&user, journal::Kind::Mailbox, id, journal::Op::Updated);
                batch.notify.entry(id).or_insert(0);
            }
            batch.users.insert(user.clone());
            Ok(())
        })
        .await
    }

    pub async fn subscribe(&self, user: &str, mailbox: &str, on: bool) -> Result<()> {
        let name = normalize_name(mailbox)?;
        let user = user.to_string();
        self.submit(move |txn, batch| {
            batch.users.insert(user.clone());
            if let Some(id) = name_id(txn, &user, &name)? {
                batch
                    .journal
                    .record(&user, journal::Kind::Mailbox, id, journal::Op::Updated);
            }
            let mut subs = txn.open_table(SUBS).map_err(ie)?;
            if on {
                subs.insert((user.as_str(), name.as_str()), 1).map_err(ie)?;
            } else {
                subs.remove((user.as_str(), name.as_str())).map_err(ie)?;
            }
            Ok(())
        })
        .await
    }

    pub async fn subscriptions(&self, user: &str) -> Result<Vec<String>> {
        let user = user.to_string();
        self.read_txn(move |txn| {
            let subs = txn.open_table(SUBS).map_err(ie)?;
            let mut out = Vec::new();
            for item in subs.range((user.as_str(), "")..).map_err(ie)? {
                let (k, _) = item.map_err(ie)?;
                let (u, n) = k.value();
                if u != user {
                    break;
                }
                out.push(n.to_string());
            }
            Ok(out)
        })
        .await
    }

    pub async fn snapshot(&self, user: &str, mailbox: &str) -> Result<Snapshot> {
        let name = normalize_name(mailbox)?;
        let user = user.to_string();
        self.read_txn(move |txn| {
            let (id, rec) = mailbox_by_name_r(txn, &user, &name)?;
            let msgs = txn.open_table(MESSAGES).map_err(ie)?;
            let mut messages = Vec::with_capacity(rec.exists as usize);
            for item in msgs.range((id, 0u32)..=(id, u32::MAX)).map_err(ie)? {
                let (_, v) = item.map_err(ie)?;
                messages.push(dec::<MessageMeta>(v.value())?);
            }
            let subs = txn.open_table(SUBS).map_err(ie)?;
            let subscribed = subs
                .get((user.as_str(), name.as_str()))
                .map_err(ie)?
                .is_some();
            Ok(Snapshot {
                info: info(id, &rec, subscribed),
                messages,
            })
        })
        .await
    }

    pub async fn claim_recent(&self, mailbox: MailboxId) -> Result<Uid> {
        // Nothing to claim (every message already claimed by some session:
        // the common SELECT): answered from the record read here, without
        // a write transaction. Equivalent to a claim that changes nothing,
        // at the moment of this read.
        let settled = self.read_now(|txn| {
            let rec = read_mailbox(txn, mailbox)?;
            Ok((rec.recent_uid == rec.uidnext).then_some(rec.recent_uid))
        })?;
        if let Some(first) = settled {
            return Ok(first);
        }
        self.submit(move |txn, _batch| {
            let mut rec = get_mailbox(txn, mailbox)?;
            let first = rec.recent_uid;
            if rec.recent_uid != rec.uidnext {
                rec.recent_uid = rec.uidnext;
                put_mailbox(txn, mailbox, &rec)?;
            }
            Ok(first)
        })
        .await
    }

    pub async fn changes(&self, mailbox: MailboxId, since: ModSeq) -> Result<Changes> {
        // Nothing changed since `since` (the common case: every command
        // asks): the mailbox record says so, read here. Every change
        // (append, flags, expunge) raises HIGHESTMODSEQ, and the expunge
        // floor is never above it.
        let unchanged = self.read_now(|txn| {
            let rec = read_mailbox(txn, mailbox)?;
            Ok((rec.highestmodseq <= since).then(|| Changes {
                info: info(mailbox, &rec, false),
                changed: Vec::new(),
                expunged: Vec::new(),
            }))
        })?;
        if let Some(c) = unchanged {
            return Ok(c);
        }
        self.read_txn(move |txn| {
            let rec = read_mailbox(txn, mailbox)?;
            let mods = txn.open_table(MODSEQS).map_err(ie)?;
            let msgs = txn.open_table(MESSAGES).map_err(ie)?;
            let mut changed = Vec::new();
            for item in mods
                .range((mailbox, since.saturating_add(1), 0u32)..=(mailbox, u64::MAX, u32::MAX))
                .map_err(ie)?
            {
                let (k, _) = item.map_err(ie)?;
                let uid = k.value().2;
                if let Some(v) = msgs.get((mailbox, uid)).map_err(ie)? {
                    changed.push(dec::<MessageMeta>(v.value())?);
                }
            }
            changed.sort_by_key(|m| m.uid);
            let exp = txn.open_table(EXPUNGED).map_err(ie)?;
            let mut expunged = Vec::new();
            for item in exp
                .range((mailbox, since.saturating_add(1), 0u32)..=(mailbox, u64::MAX, u32::MAX))
                .map_err(ie)?
            {
                let (k, _) = item.map_err(ie)?;
                expunged.push(k.value().2);
            }
            expunged.sort_unstable();
            // RFC 7162 3.2.5.2: older than what the table still holds,
            // every UID not present is reported.
            if let Some(all) = expire::vanished_if_trimmed(txn, mailbox, since, &rec)? {
                expunged = all;
            }
            let subscribed = false;
            Ok(Changes {
                info: info(mailbox, &rec, subscribed),
                changed,
                expunged,
            })
        })
        .await
    }

    pub async fn store_flags(
        &self,
        mailbox: MailboxId,
        uids: Vec<Uid>,
        op: FlagOp,
        flags: Flags,
        unchanged_since: Option<ModSeq>,
    ) -> Result<(Vec<MessageMeta>, Vec<Uid>)> {
        self.submit(move |txn, batch| {
            let mut rec = get_mailbox(txn, mailbox)?;
            let modseq = rec.highestmodseq + 1;
            let mut out = Vec::new();
            let mut failed = Vec::new();
            let mut any = false;
            let mut msgs = txn.open_table(MESSAGES).map_err(ie)?;
            let mut mods = txn.open_table(MODSEQS).map_err(ie)?;
            let mut uids = uids;
            uids.sort_unstable();
            uids.dedup();
            for uid in uids {
                let mut meta: MessageMeta = match msgs.get((mailbox, uid)).map_err(ie)? {
                    Some(v) => dec(v.value())?,
                    None => continue,
                };
                if let Some(u) = unchanged_since {
                    if meta.modseq > u {
                        failed.push(uid);
                        continue;
                    }
                }
                let new = match op {
                    FlagOp::Add => meta.flags.union(&flags),
                    FlagOp::Remove => meta.flags.minus(&flags),
                    FlagOp::Replace => flags.clone(),
                };
                if new != meta.flags {
                    let was_seen = meta.flags.has(Flags::SEEN);
                    let seen = new.has(Flags::SEEN);
                    if was_seen && !seen {
                        rec.unseen += 1;
                    } else if !was_seen && seen {
                        rec.unseen = rec.unseen.saturating_sub(1);
                    }
                    mods.remove((mailbox, meta.modseq, uid)).map_err(ie)?;
                    meta.flags = new;
                    meta.modseq = modseq;
                    mods.insert((mailbox, modseq, uid), 1).map_err(ie)?;
                    msgs.insert((mailbox, uid), enc(&meta)?.as_slice())
                        .map_err(ie)?;
                    let (email, _) = extra::object_ids(txn, mailbox, uid)?;
                    journal::flags_changed(&mut batch.journal, &rec.user, mailbox, email);
                    any = true;
                }
                out.push(meta);
            }
            drop(msgs);
            drop(mods);
            if any {
                rec.highestmodseq = modseq;
                put_mailbox(txn, mailbox, &rec)?;
                batch.notify.insert(mailbox, modseq);
                batch.users.insert(rec.user.clone());
            }
            Ok((out, failed))
        })
        .await
    }

    pub async fn expunge(&self, mailbox: MailboxId, uids: Option<Vec<Uid>>) -> Result<Vec<Uid>> {
        let (user, partition) = self.mailbox_owner(mailbox).await?;
        self.submit(move |txn, batch| {
            let mut rec = get_mailbox(txn, mailbox)?;
            let victims: Vec<MessageMeta> = {
                let msgs = txn.open_table(MESSAGES).map_err(ie)?;
                let mut v = Vec::new();
                match &uids {
                    Some(list) => {
                        for uid in list {
                            if let Some(x) = msgs.get((mailbox, *uid)).map_err(ie)? {
                                let m: MessageMeta = dec(x.value())?;
                                if m.flags.has(Flags::DELETED) {
                                    v.push(m);
                                }
                            }
                        }
                    }
                    None => {
                        for item in msgs
                            .range((mailbox, 0u32)..=(mailbox, u32::MAX))
                            .map_err(ie)?
                        {
                            let (_, x) = item.map_err(ie)?;
                            let m: MessageMeta = dec(x.value())?;
                            if m.flags.has(Flags::DELETED) {
                                v.push(m);
                            }
                        }
                    }
                }
                v
            };
            if victims.is_empty() {
                return Ok(Vec::new());
            }
            rec.highestmodseq += 1;
            let modseq = rec.highestmodseq;
            let dir = files::mailbox_dir(&partition, &user, mailbox);
            let mut out = remove_messages(txn, batch, mailbox, &mut rec, &victims, modseq)?;
            for m in &victims {
                batch.unlink_after.push(files::message_file(&dir, m.uid));
            }
            let bytes: u64 = victims.iter().map(|m| m.size).sum();
            add_usage(txn, &user, -(bytes as i64), -(victims.len() as i64))?;
            put_mailbox(txn, mailbox, &rec)?;
            batch.notify.insert(mailbox, modseq);
            batch.users.insert(user.clone());
            out.sort_unstable();
            Ok(out)
        })
        .await
    }

    pub async fn copy(
        &self,
        from: MailboxId,
        uids: Vec<Uid>,
        user: &str,
        to: &str,
        remove_source: bool,
        quota: Quota,
    ) -> Result<(u32, Vec<(Uid, Uid)>)> {
        let to = normalize_name(to)?;
        let (src_user, src_partition) = self.mailbox_owner(from).await?;
        let dst_partition = self.user_partition(user).await?;
        let user = user.to_string();
        self.submit(move |txn, batch| {
            let mut src = get_mailbox(txn, from)?;
            let (dst_id, mut dst) = mailbox_by_name(txn, &user, &to)?;
            if dst_id == from && remove_source {
                return Err(StoreError::NotAllowed(
                    "source and destination are the same",
                ));
            }
            let mut uids = uids;
            uids.sort_unstable();
            uids.dedup();
            let sources: Vec<MessageMeta> = {
                let msgs = txn.open_table(MESSAGES).map_err(ie)?;
                let mut v = Vec::new();
                for uid in &uids {
                    if let Some(x) = msgs.get((from, *uid)).map_err(ie)? {
                        v.push(dec::<MessageMeta>(x.value())?);
                    }
                }
                v
            };
            if sources.is_empty() {
                return Ok((dst.uidvalidity, Vec::new()));
            }
            let bytes: u64 = sources.iter().map(|m| m.size).sum();
            let moving_within_user = remove_source && src_user == user;
            if !moving_within_user {
                check_quota(txn, &user, bytes, sources.len() as u64, quota)?;
            }
            let src_dir = files::mailbox_dir(&src_partition, &src_user, from);
            let dst_dir = files::mailbox_dir(&dst_partition, &user, dst_id);
            let mut touched = Vec::new();
            files::create_dirs(&dst_dir, &mut touched).map_err(ie)?;
            batch.sync_dirs.extend(touched);
            batch.sync_dirs.insert(dst_dir.clone());
            dst.highestmodseq += 1;
            let modseq = dst.highestmodseq;
            let mut pairs = Vec::with_capacity(sources.len());
            for m in &sources {
                let uid = dst.uidnext;
                dst.uidnext = dst
                    .uidnext
                    .checked_add(1)
                    .ok_or(StoreError::Internal("UID space exhausted".into()))?;
                let target = files::message_file(&dst_dir, uid);
                std::fs::hard_link(files::message_file(&src_dir, m.uid), &target).map_err(ie)?;
                batch.created.push(target);
                let meta = MessageMeta {
                    uid,
                    modseq,
                    save_date: now(),
                    ..m.clone()
                };
                add_message(txn, dst_id, &mut dst, &meta)?;
                extra::on_copy(txn, (from, m.uid), (dst_id, uid))?;
                let (email, thread) = extra::object_ids(txn, dst_id, uid)?;
                journal::message_added(
                    txn,
                    &mut batch.journal,
                    &user,
                    (dst_id, uid),
                    email,
                    thread,
                    false,
                )?;
                pairs.push((m.uid, uid));
            }
            if !moving_within_user {
                add_usage(txn, &user, bytes as i64, sources.len() as i64)?;
            }
            put_mailbox(txn, dst_id, &dst)?;
            batch.notify.insert(dst_id, modseq);
            batch.users.insert(user.clone());
            if remove_source {
                src = get_mailbox(txn, from)?;
                src.highestmodseq += 1;
                let smod = src.highestmodseq;
                remove_messages(txn, batch, from, &mut src, &sources, smod)?;
                for m in &sources {
                    batch
                        .unlink_after
                        .push(files::message_file(&src_dir, m.uid));
                }
                if !moving_within_user {
                    add_usage(txn, &src_user, -(bytes as i64), -(sources.len() as i64))?;
                }
                put_mailbox(txn, from, &src)?;
                batch.notify.insert(from, smod);
                batch.users.insert(src_user.clone());
            }
            let _ = src;
            Ok((dst.uidvalidity, pairs))
        })
        .await
    }

    pub async fn read(&self, mailbox: MailboxId, meta: &MessageMeta) -> Result<Vec<u8>> {
        let path = self.message_path_async(mailbox, meta.uid).await?;
        let (offset, size) = (meta.offset, meta.size);
        tokio::task::spawn_blocking(move || files::read_message(&path, offset, size))
            .await
            .map_err(ie)?
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    StoreError::NoSuchMailbox
                } else {
                    ie(e)
                }
            })
    }

    /// Cached summaries of `uids` (ascending, dense: the span from first
    /// to last is at most four times their number) by one range scan of
    /// the summaries table instead of a B-tree descent per message (which
    /// was half of SORT's time on a large mailbox). In the order of `uids`.
    pub async fn summaries_scan(
        &self,
        mailbox: MailboxId,
        uids: Vec<Uid>,
    ) -> Result<Vec<Option<Vec<u8>>>> {
        let (Some(&first), Some(&last)) = (uids.first(), uids.last()) else {
            return Ok(Vec::new());
        };
        self.read_txn(move |txn| {
            let t = txn.open_table(extra::SUMMARIES).map_err(ie)?;
            let mut out: Vec<Option<Vec<u8>>> = vec![None; uids.len()];
            let mut next = 0;
            for item in t.range((mailbox, first)..=(mailbox, last)).map_err(ie)? {
                let (k, v) = item.map_err(ie)?;
                let uid = k.value().1;
                while uids.get(next).is_some_and(|&u| u < uid) {
                    next += 1;
                }
                if uids.get(next) == Some(&uid) {
                    if let Some(slot) = out.get_mut(next) {
                        *slot = Some(v.value().to_vec());
                    }
                    next += 1;
                }
                if next >= uids.len() {
                    break;
                }
            }
            Ok(out)
        })
        .await
    }

    /// Several messages of one mailbox in one blocking-pool task: one
    /// owner lookup and one thread hop for the lot. `None` for a message
    /// that cannot be read (gone, or shorter than its entry).
    pub async fn read_many(
        &self,
        mailbox: MailboxId,
        metas: Vec<(Uid, u32, u64)>,
    ) -> Result<Vec<Option<Vec<u8>>>> {
        let (user, partition) = self.mailbox_owner(mailbox).await?;
        let dir = files::mailbox_dir(&partition, &user, mailbox);
        tokio::task::spawn_blocking(move || {
            metas
                .into_iter()
                .map(|(uid, offset, size)| {
                    files::read_message(&files::message_file(&dir, uid), offset, size).ok()
                })
                .collect()
        })
        .await
        .map_err(ie)
    }

    pub async fn usage(&self, user: &str) -> Result<Usage> {
        let user = user.to_string();
        self.read_txn(move |txn| {
            let users = txn.open_table(USERS).map_err(ie)?;
            Ok(match users.get(user.as_str()).map_err(ie)? {
                Some(v) => dec::<UserRec>(v.value())?.usage,
                None => Usage::default(),
            })
        })
        .await
    }

    pub fn watch(&self, mailbox: MailboxId) -> watch::Receiver<ModSeq> {
        let mut map = self.watchers.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, s| s.receiver_count() > 0);
        map.entry(mailbox)
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// A receiver that changes after every commit touching `user`'s
    /// mailboxes (counters, names, subscriptions). NOTIFY, RFC 5465.
    pub fn watch_user(&self, user: &str) -> watch::Receiver<u64> {
        let mut map = self.user_watchers.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, s| s.receiver_count() > 0);
        map.entry(user.to_string())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    pub fn stats(&self) -> StoreStats {
        let s = self.db.cache_stats();
        StoreStats {
            cache_hits: s.read_hits() + s.write_hits(),
            cache_misses: s.read_misses() + s.write_misses(),
            cache_bytes: s.used_bytes() as u64,
        }
    }

    pub fn message_path(&self, mailbox: MailboxId, uid: Uid) -> Result<PathBuf> {
        let txn = self.db.begin_read().map_err(ie)?;
        let (user, partition) = self.owner_sync(&txn, mailbox)?;
        Ok(files::message_file(
            &files::mailbox_dir(&partition, &user, mailbox),
            uid,
        ))
    }

    async fn message_path_async(&self, mailbox: MailboxId, uid: Uid) -> Result<PathBuf> {
        let (user, partition) = self.mailbox_owner(mailbox).await?;
        Ok(files::message_file(
            &files::mailbox_dir(&partition, &user, mailbox),
            uid,
        ))
    }

    fn owner_sync(&self, txn: &ReadTransaction, mailbox: MailboxId) -> Result<(String, PathBuf)> {
        let mboxes = txn.open_table(MAILBOXES).map_err(ie)?;
        let rec: MailboxRec = match mboxes.get(mailbox).map_err(ie)? {
            Some(v) => dec(v.value())?,
            None => return Err(StoreError::NoSuchMailbox),
        };
        let part = self
            .user_partition_sync(txn, &rec.user)?
            .ok_or(StoreError::NoSuchMailbox)?;
        Ok((rec.user, part))
    }

    /// Owner and partition folder of a mailbox.
    async fn mailbox_owner(&self, mailbox: MailboxId) -> Result<(String, PathBuf)> {
        let db = self.db.clone();
        // Reads are short; a blocking-pool hop costs more than the lookup.
        let txn = db.begin_read().map_err(ie)?;
        self.owner_sync(&txn, mailbox)
    }

    async fn user_partition(&self, user: &str) -> Result<PathBuf> {
        let txn = self.db.begin_read().map_err(ie)?;
        match self.user_partition_sync(&txn, user)? {
            Some(p) => Ok(p),
            None => self.partition_path(&self.default_partition),
        }
    }
}

fn info(id: MailboxId, rec: &MailboxRec, subscribed: bool) -> MailboxInfo {
    MailboxInfo {
        id,
        user: rec.user.clone(),
        name: rec.name.clone(),
        uidvalidity: rec.uidvalidity,
        uidnext: rec.uidnext,
        highestmodseq: rec.highestmodseq,
        special_use: rec.special_use,
        subscribed,
        exists: rec.exists,
        unseen: rec.unseen,
        size: rec.size,
        recent_uid: rec.recent_uid,
    }
}

fn name_id(txn: &WriteTransaction, user: &str, name: &str) -> Result<Option<u64>> {
    let names = txn.open_table(NAMES).map_err(ie)?;
    let id = names.get((user, name)).map_err(ie)?.map(|v| v.value());
    Ok(id)
}

/// A mailbox's record, from the mailboxes table of a read or a write
/// transaction.
fn mailbox_in(
    mboxes: &impl ReadableTable<u64, &'static [u8]>,
    id: MailboxId,
) -> Result<MailboxRec> {
    let v = mboxes
        .get(id)
        .map_err(ie)?
        .ok_or(StoreError::NoSuchMailbox)?;
    dec(v.value())
}

fn read_mailbox(txn: &ReadTransaction, id: MailboxId) -> Result<MailboxRec> {
    mailbox_in(&txn.open_table(MAILBOXES).map_err(ie)?, id)
}

fn get_mailbox(txn: &WriteTransaction, id: MailboxId) -> Result<MailboxRec> {
    mailbox_in(&txn.open_table(MAILBOXES).map_err(ie)?, id)
}

fn put_mailbox(txn: &WriteTransaction, id: MailboxId, rec: &MailboxRec) -> Result<()> {
    let mut mboxes = txn.open_table(MAILBOXES).map_err(ie)?;
    mboxes.insert(id, enc(rec)?.as_slice()).map_err(ie)?;
    Ok(())
}

fn drop_names_then_update(
    txn: &WriteTransaction,
    batch: &mut Batch,
    id: MailboxId,
    new_name: &str,
) -> Result<()> {
    let mut rec = get_mailbox(txn, id)?;
    rec.name = new_name.to_string();
    put_mailbox(txn, id, &rec)?;
    reconstruct::record_mailbox(txn, batch, id, &rec, false)
}

fn mailbox_by_name(txn: &WriteTransaction, user: &str, name: &str) -> Result<(u64, MailboxRec)> {
    let id = name_id(txn, user, name)?.ok_or(StoreError::NoSuchMailbox)?;
    Ok((id, get_mailbox(txn, id)?))
}

fn mailbox_by_name_r(txn: &ReadTransaction, user: &str, name: &str) -> Result<(u64, MailboxRec)> {
    let names = txn.open_table(NAMES).map_err(ie)?;
    let id = names
        .get((user, name))
        .map_err(ie)?
        .ok_or(StoreError::NoSuchMailbox)?
        .value();
    let mboxes = txn.open_table(MAILBOXES).map_err(ie)?;
    let v = mboxes
        .get(id)
        .map_err(ie)?
        .ok_or(StoreError::NoSuchMailbox)?;
    Ok((id, dec(v.value())?))
}

fn create_user(
    txn: &WriteTransaction,
    batch: &mut Batch,
    user: &str,
    partition: &str,
) -> Result<bool> {
    {
        let users = txn.open_table(USERS).map_err(ie)?;
        if users.get(user).map_err(ie)?.is_some() {
            return Ok(false);
        }
    }
    let rec = UserRec {
        partition: partition.to_string(),
        usage: Usage::default(),
    };
    txn.open_table(USERS)
        .map_err(ie)?
        .insert(user, enc(&rec)?.as_slice())
        .map_err(ie)?;
    for (name, su) in DEFAULT_MAILBOXES {
        if name_id(txn, user, name)?.is_none() {
            create_mailbox_rec(txn, batch, user, name, su)?;
        }
        txn.open_table(SUBS)
            .map_err(ie)?
            .insert((user, name), 1)
            .map_err(ie)?;
    }
    Ok(true)
}

fn create_mailbox_rec(
    txn: &WriteTransaction,
    batch: &mut Batch,
    user: &str,
    name: &str,
    special_use: Option<SpecialUse>,
) -> Result<(u64, MailboxRec)> {
    let mut meta = txn.open_table(META).map_err(ie)?;
    let id = meta
        .get("next_mailbox_id")
        .map_err(ie)?
        .map(|v| v.value())
        .unwrap_or(1);
    meta.insert("next_mailbox_id", id + 1).map_err(ie)?;
    // UIDVALIDITY: time-based, and never twice the same value, so a
    // recreated mailbox never reuses an old one.
    let last = meta
        .get("last_uidvalidity")
        .map_err(ie)?
        .map(|v| v.value())
        .unwrap_or(0);
    let uidvalidity = (now() as u64).max(last + 1).min(u32::MAX as u64);
    meta.insert("last_uidvalidity", uidvalidity).map_err(ie)?;
    let rec = MailboxRec {
        user: user.to_string(),
        name: name.to_string(),
        uidvalidity: uidvalidity as u32,
        uidnext: 1,
        highestmodseq: 1,
        special_use,
        exists: 0,
        unseen: 0,
        size: 0,
        recent_uid: 1,
    };
    drop(meta);
    put_mailbox(txn, id, &rec)?;
    reconstruct::record_mailbox(txn, batch, id, &rec, true)?;
    txn.open_table(NAMES)
        .map_err(ie)?
        .insert((user, name), id)
        .map_err(ie)?;
    batch
        .journal
        .record(user, journal::Kind::Mailbox, id, journal::Op::Created);
    Ok((id, rec))
}

fn add_message(
    txn: &WriteTransaction,
    id: MailboxId,
    rec: &mut MailboxRec,
    meta: &MessageMeta,
) -> Result<()> {
    txn.open_table(MESSAGES)
        .map_err(ie)?
        .insert((id, meta.uid), enc(meta)?.as_slice())
        .map_err(ie)?;
    txn.open_table(MODSEQS)
        .map_err(ie)?
        .insert((id, meta.modseq, meta.uid), 1)
        .map_err(ie)?;
    rec.exists += 1;
    rec.size += meta.size;
    if !meta.flags.has(Flags::SEEN) {
        rec.unseen += 1;
    }
    Ok(())
}

/// Removes messages from a mailbox's index, recording them as expunged at
/// `modseq`. Returns their UIDs.
fn remove_messages(
    txn: &WriteTransaction,
    batch: &mut Batch,
    id: MailboxId,
    rec: &mut MailboxRec,
    victims: &[MessageMeta],
    modseq: ModSeq,
) -> Result<Vec<Uid>> {
    let mut msgs = txn.open_table(MESSAGES).map_err(ie)?;
    let mut mods = txn.open_table(MODSEQS).map_err(ie)?;
    let mut exp = txn.open_table(EXPUNGED).map_err(ie)?;
    let mut out = Vec::with_capacity(victims.len());
    for m in victims {
        msgs.remove((id, m.uid)).map_err(ie)?;
        mods.remove((id, m.modseq, m.uid)).map_err(ie)?;
        exp.insert((id, modseq, m.uid), 1).map_err(ie)?;
        let (email, _) = extra::object_ids(txn, id, m.uid)?;
        journal::message_removed(txn, &mut batch.journal, &rec.user, (id, m.uid), email)?;
        extra::on_remove(txn, id, m.uid)?;
        rec.exists = rec.exists.saturating_sub(1);
        rec.size = rec.size.saturating_sub(m.size);
        if !m.flags.has(Flags::SEEN) {
            rec.unseen = rec.unseen.saturating_sub(1);
        }
        out.push(m.uid);
    }
    Ok(out)
}

fn check_quota(
    txn: &WriteTransaction,
    user: &str,
    bytes: u64,
    count: u64,
    quota: Quota,
) -> Result<()> {
    if quota.storage.is_none() && quota.messages.is_none() {
        return Ok(());
    }
    let users = txn.open_table(USERS).map_err(ie)?;
    let usage = match users.get(user).map_err(ie)? {
        Some(v) => dec::<UserRec>(v.value())?.usage,
        None => Usage::default(),
    };
    if let Some(limit) = quota.storage {
        if usage.bytes.saturating_add(bytes) > limit {
            return Err(StoreError::OverQuota);
        }
    }
    if let Some(limit) = quota.messages {
        if usage.messages.saturating_add(count) > limit {
            return Err(StoreError::OverQuota);
        }
    }
    Ok(())
}

fn add_usage(txn: &WriteTransaction, user: &str, bytes: i64, count: i64) -> Result<()> {
    let mut users = txn.open_table(USERS).map_err(ie)?;
    let mut rec: UserRec = match users.get(user).map_err(ie)? {
        Some(v) => dec(v.value())?,
        None => return Ok(()),
    };
    rec.usage.bytes = (rec.usage.bytes as i64).saturating_add(bytes).max(0) as u64;
    rec.usage.messages = (rec.usage.messages as i64).saturating_add(count).max(0) as u64;
    users.insert(user, enc(&rec)?.as_slice()).map_err(ie)?;
    Ok(())
}
