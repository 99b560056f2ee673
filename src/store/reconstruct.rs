//! Reconstruct and verify (issue 14): the mboxlist rebuilt from the
//! message files, and the index checked against them.
//!
//! What the files record (see `files.rs`):
//! - the path: partition, owner (hashed folder), mailbox id, UID;
//! - the prelude of each message: owner, mailbox name, flags and date at
//!   delivery, and (since issue 14) a CRC-32 of the message bytes;
//! - `<mailbox dir>/mailbox` (since issue 14): owner, name, UIDVALIDITY,
//!   special use and creation time, written and fsynced by the writer when
//!   the mailbox is created or renamed (`record_mailbox`).
//!
//! Flag changes after delivery are not recorded in the files: that would
//! cost a file write per STORE on the hot path (issue 12's benchmarks), so
//! a reconstruct gives the flags at delivery, unless the index it replaces
//! still has the message (one user on a running server): then its flags.
//! To keep CONDSTORE/QRESYNC clients honest, every reconstructed message gets a modseq above any the
//! mailbox can have handed out before: the old HIGHESTMODSEQ + 1 when the
//! index still knows the mailbox, else a bound from its age (one mailbox
//! cannot commit more than 2^31 changes a second), and the mailbox's
//! expunge floor (`expire.rs`) is set there, so a client with an older
//! modseq gets flags of every message and VANISHED for every missing UID.
//! A mailbox without a record file (made before issue 14) gets a new
//! UIDVALIDITY: its clients resynchronise from scratch.
//!
//! Verify checks, per index entry: the file exists, its prelude parses
//! (and ends at the entry's offset), its length is prelude + RFC822.SIZE, the message's CRC
//! matches the prelude's (when recorded) and it starts with an RFC 5322
//! header field; per file: an index entry exists (else an orphan).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use redb::{ReadTransaction, ReadableTable, WriteTransaction};
use serde::Serialize;

use super::files::{self, MailboxFile, MAILBOX_FILE};
use super::*;

/// Progress of a long store operation, reported to whoever runs it.
pub trait Tick: Send + Sync {
    /// The number of items the current user has (files).
    fn total(&self, n: u64);
    fn inc(&self, n: u64);
}

/// A no-op `Tick`.
pub struct NoTick;
impl Tick for NoTick {
    fn total(&self, _: u64) {}
    fn inc(&self, _: u64) {}
}

/// Something found wrong (or repaired) by reconstruct or verify.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// `missing`, `size`, `checksum`, `prelude`, `header`, `orphan`,
    /// `orphan_mailbox`, `unreadable`.
    pub kind: String,
    pub mailbox: Option<MailboxId>,
    pub uid: Option<Uid>,
    pub path: String,
    pub detail: String,
    /// What `--repair` did: `reindexed`, `expunged`, `lost+found`.
    pub repaired: Option<String>,
}

impl Problem {
    fn new(kind: &str, mailbox: Option<MailboxId>, uid: Option<Uid>, path: &Path) -> Problem {
        Problem {
            kind: kind.into(),
            mailbox,
            uid,
            path: path.display().to_string(),
            detail: String::new(),
            repaired: None,
        }
    }

    fn detail(mut self, d: impl std::fmt::Display) -> Problem {
        self.detail = d.to_string();
        self
    }
}

/// What a reconstruct of one user did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReconstructReport {
    pub user: String,
    pub partition: String,
    pub mailboxes: Vec<ReconstructedMailbox>,
    pub messages: u64,
    pub bytes: u64,
    /// Files that could not be indexed (left in place).
    pub problems: Vec<Problem>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReconstructedMailbox {
    pub id: MailboxId,
    pub name: String,
    pub uidvalidity: u32,
    /// False: the folder had no record file and a new UIDVALIDITY was given.
    pub uidvalidity_kept: bool,
    pub messages: u64,
    pub uidnext: Uid,
}

/// What a verify of one user found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    pub user: String,
    pub entries: u64,
    pub files: u64,
    pub problems: Vec<Problem>,
}

struct ScannedMsg {
    uid: Uid,
    prelude: files::Prelude,
    offset: u32,
    size: u64,
    mtime: i64,
    keys: threads::ThreadKeys,
}

struct ScannedBox {
    id: MailboxId,
    file: Option<MailboxFile>,
    msgs: Vec<ScannedMsg>,
    /// Highest UID among the mailbox's expunged files still set aside.
    aside_uid: Uid,
}

/// Seconds after which a file above UIDNEXT is no delivery in flight.
const IN_FLIGHT_GRACE: i64 = 600;

/// Records a mailbox in its folder's `mailbox` file (created or renamed),
/// fsynced with the batch. `new`: the file is removed if the batch fails.
pub(super) fn record_mailbox(
    txn: &WriteTransaction,
    batch: &mut Batch,
    id: MailboxId,
    rec: &MailboxRec,
    new: bool,
) -> Result<()> {
    let partition = {
        let users = txn.open_table(USERS).map_err(ie)?;
        let Some(v) = users.get(rec.user.as_str()).map_err(ie)? else {
            return Ok(());
        };
        dec::<UserRec>(v.value())?.partition
    };
    let Some(part) = batch.partitions.get(&partition).cloned() else {
        return Ok(());
    };
    let dir = files::mailbox_dir(&part, &rec.user, id);
    let mut touched = Vec::new();
    files::create_dirs(&dir, &mut touched).map_err(ie)?;
    batch.sync_dirs.extend(touched);
    let (created, uidnext) = if new {
        (now(), 0)
    } else {
        files::read_mailbox_file(&dir).map_or((0, 0), |f| (f.created, f.uidnext))
    };
    let file = MailboxFile {
        user: rec.user.clone(),
        name: rec.name.clone(),
        uidvalidity: rec.uidvalidity,
        special_use: rec.special_use,
        created,
        uidnext,
    };
    files::write_mailbox_file(&dir, &file).map_err(ie)?;
    batch.sync_dirs.insert(dir.clone());
    if new {
        batch.created.push(dir.join(MAILBOX_FILE));
    }
    Ok(())
}

/// The first modseq above any a mailbox created at `created` can have
/// handed out by `now`: at most 2^31 changes a second.
pub(super) fn modseq_bound(created: i64, now: i64) -> ModSeq {
    let secs = now.saturating_sub(created).max(0) as u64 + 1;
    secs.saturating_mul(1 << 31).min(1 << 62)
}

/// Does a message start with an RFC 5322 header field (`name:`)?
pub(super) fn has_header(msg: &[u8]) -> bool {
    let name_len = msg
        .iter()
        .take_while(|&&b| (33..=126).contains(&b) && b != b':')
        .count();
    name_len > 0 && msg.get(name_len) == Some(&b':')
}

fn mtime(meta: &std::fs::Metadata) -> i64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs() as i64)
}

/// `<uid>.msg` -> uid.
fn uid_of(name: &str) -> Option<Uid> {
    let n = name.strip_suffix(".msg")?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok().filter(|&u| u > 0)
}

/// Mailbox folders of a user folder: (id, path), ascending.
fn mailbox_dirs(user_dir: &Path) -> std::io::Result<Vec<(MailboxId, PathBuf)>> {
    let mut out = Vec::new();
    let rd = match std::fs::read_dir(user_dir) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(id) = name
            .to_str()
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.push((id, e.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Message files of a mailbox folder: (uid, path), ascending.
fn message_files(dir: &Path) -> std::io::Result<Vec<(Uid, PathBuf)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)?.flatten() {
        // Regular files only: a symbolic link is not a message of ours.
        if !e.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        if let Some(uid) = e.file_name().to_str().and_then(uid_of) {
            out.push((uid, e.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Reads every message file of a user folder (prelude, size, thread
/// keys). Files that cannot be used are reported, not indexed.
fn scan_user(
    partition: &Path,
    user: &str,
    tick: &dyn Tick,
) -> std::io::Result<(Vec<ScannedBox>, Vec<Problem>)> {
    let user_dir = files::user_dir(partition, user);
    let mut aside: BTreeMap<MailboxId, Uid> = BTreeMap::new();
    for (_, a) in files::list_aside(partition)? {
        if partition.join(&a.mailbox_dir).parent() == Some(user_dir.as_path()) {
            let m = aside.entry(a.mailbox).or_insert(0);
            *m = (*m).max(a.uid);
        }
    }
    let dirs = mailbox_dirs(&user_dir)?;
    let mut listed = Vec::with_capacity(dirs.len());
    let mut total = 0;
    for (id, dir) in dirs {
        let msgs = message_files(&dir)?;
        total += msgs.len() as u64;
        listed.push((id, dir, msgs));
    }
    tick.total(total);
    let mut boxes = Vec::new();
    let mut problems = Vec::new();
    for (id, dir, msgs) in listed {
        let aside_uid = aside.get(&id).copied().unwrap_or(0);
        if let Some(b) = scan_mailbox(id, &dir, msgs, user, aside_uid, tick, &mut problems) {
            boxes.push(b);
        }
    }
    Ok((boxes, problems))
}

/// Reads the given message files of one mailbox folder.
fn scan_mailbox(
    id: MailboxId,
    dir: &Path,
    msgs: Vec<(Uid, PathBuf)>,
    user: &str,
    aside_uid: Uid,
    tick: &dyn Tick,
    problems: &mut Vec<Problem>,
) -> Option<ScannedBox> {
    let file = files::read_mailbox_file(dir).filter(|f| f.user == user);
    let mut scanned = Vec::with_capacity(msgs.len());
    for (uid, path) in msgs {
        tick.inc(1);
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) => {
                problems.push(Problem::new("unreadable", Some(id), Some(uid), &path).detail(e));
                continue;
            }
        };
        let (prelude, offset) = match files::read_prelude(&path) {
            Ok(p) => p,
            Err(e) => {
                problems.push(Problem::new("prelude", Some(id), Some(uid), &path).detail(e));
                continue;
            }
        };
        // The path names the owner; the prelude names whoever it was
        // delivered to (a copy from a shared mailbox is a hard link).
        let size = meta.len().saturating_sub(u64::from(offset));
        let keys = threads::keys_of_file(&path, offset, size);
        scanned.push(ScannedMsg {
            uid,
            prelude,
            offset,
            size,
            mtime: mtime(&meta),
            keys,
        });
    }
    if file.is_none() && scanned.is_empty() {
        return None;
    }
    Some(ScannedBox {
        id,
        file,
        msgs: scanned,
        aside_uid,
    })
}

/// Inside the writer, just before the rebuild: what changed on disk since
/// the scan (a delivery, a new mailbox on a running server) is read too,
/// so the rebuild loses nothing that was committed meanwhile. Files and
/// folders that an earlier job of the same batch expunged or deleted are
/// still in place (they go aside after the commit): `batch` names them,
/// and they are not brought back.
fn catch_up(
    partition: &Path,
    user: &str,
    batch: &Batch,
    boxes: &mut Vec<ScannedBox>,
    problems: &mut Vec<Problem>,
) -> std::io::Result<()> {
    let user_dir = files::user_dir(partition, user);
    let gone: HashSet<&Path> = batch.unlink_after.iter().map(PathBuf::as_path).collect();
    let mut dirs = mailbox_dirs(&user_dir)?;
    dirs.retain(|(_, d)| !batch.aside_dirs_after.contains(d));
    // Deleted since the scan.
    boxes.retain(|b| dirs.iter().any(|(id, _)| *id == b.id));
    for (id, dir) in dirs {
        let mut files_now = message_files(&dir)?;
        files_now.retain(|(_, p)| !gone.contains(p.as_path()));
        match boxes.iter_mut().find(|b| b.id == id) {
            Some(b) => {
                // Expunged since the scan (its file set aside).
                let present: HashSet<Uid> = files_now.iter().map(|f| f.0).collect();
                b.msgs.retain(|m| present.contains(&m.uid));
                let known: HashSet<Uid> = b.msgs.iter().map(|m| m.uid).collect();
                let new: Vec<(Uid, PathBuf)> = files_now
                    .into_iter()
                    .filter(|(u, _)| !known.contains(u))
                    .collect();
                if !new.is_empty() {
                    if let Some(extra) = scan_mailbox(id, &dir, new, user, 0, &NoTick, problems) {
                        b.msgs.extend(extra.msgs);
                        b.msgs.sort_by_key(|m| m.uid);
                    }
                }
            }
            None => {
                if let Some(b) = scan_mailbox(id, &dir, files_now, user, 0, &NoTick, problems) {
                    boxes.push(b);
                }
            }
        }
    }
    boxes.sort_by_key(|b| b.id);
    Ok(())
}

/// The user's mailbox ids and records in the index.
fn user_mailboxes_w(txn: &WriteTransaction, user: &str) -> Result<Vec<(String, MailboxId)>> {
    let names = txn.open_table(NAMES).map_err(ie)?;
    let mut out = Vec::new();
    for item in names.range((user, "")..).map_err(ie)? {
        let (k, v) = item.map_err(ie)?;
        let (u, n) = k.value();
        if u != user {
            break;
        }
        out.push((n.to_string(), v.value()));
    }
    Ok(out)
}

fn user_mailboxes_r(txn: &ReadTransaction, user: &str) -> Result<Vec<(MailboxId, MailboxRec)>> {
    let names = txn.open_table(NAMES).map_err(ie)?;
    let boxes = txn.open_table(MAILBOXES).map_err(ie)?;
    let mut out = Vec::new();
    for item in names.range((user, "")..).map_err(ie)? {
        let (k, v) = item.map_err(ie)?;
        if k.value().0 != user {
            break;
        }
        if let Some(r) = boxes.get(v.value()).map_err(ie)? {
            out.push((v.value(), dec::<MailboxRec>(r.value())?));
        }
    }
    Ok(out)
}

/// Removes a mailbox's message rows (index, modseqs, expunged, caches).
fn clear_mailbox_messages(txn: &WriteTransaction, id: MailboxId) -> Result<()> {
    let rows: Vec<(u32, u64)> = {
        let msgs = txn.open_table(MESSAGES).map_err(ie)?;
        let mut v = Vec::new();
        for item in msgs.range((id, 0u32)..=(id, u32::MAX)).map_err(ie)? {
            let (k, val) = item.map_err(ie)?;
            v.push((k.value().1, dec::<MessageMeta>(val.value())?.modseq));
        }
        v
    };
    let mut msgs = txn.open_table(MESSAGES).map_err(ie)?;
    let mut mods = txn.open_table(MODSEQS).map_err(ie)?;
    for (uid, modseq) in rows {
        msgs.remove((id, uid)).map_err(ie)?;
        mods.remove((id, modseq, uid)).map_err(ie)?;
    }
    drop((msgs, mods));
    let mut exp = txn.open_table(EXPUNGED).map_err(ie)?;
    let gone: Vec<(u64, u32)> = exp
        .range((id, 0u64, 0u32)..=(id, u64::MAX, u32::MAX))
        .map_err(ie)?
        .filter_map(|i| i.ok().map(|(k, _)| (k.value().1, k.value().2)))
        .collect();
    for (m, u) in gone {
        exp.remove((id, m, u)).map_err(ie)?;
    }
    drop(exp);
    extra::clear_messages(txn, id)
}

/// Replaces `user`'s index by what `boxes` hold (one writer job).
fn rebuild_user(
    txn: &WriteTransaction,
    batch: &mut Batch,
    user: &str,
    partition: &str,
    boxes: Vec<ScannedBox>,
) -> Result<ReconstructReport> {
    let t = now();
    // Refuse folders whose id another user owns in the index.
    let mut foreign = Vec::new();
    {
        let mboxes = txn.open_table(MAILBOXES).map_err(ie)?;
        for b in &boxes {
            if let Some(v) = mboxes.get(b.id).map_err(ie)? {
                let r: MailboxRec = dec(v.value())?;
                if r.user != user {
                    foreign.push(b.id);
                }
            }
        }
    }
    let old: Vec<(String, MailboxId)> = user_mailboxes_w(txn, user)?;
    let mut old_recs: BTreeMap<MailboxId, MailboxRec> = BTreeMap::new();
    for (_, id) in &old {
        if let Ok(r) = get_mailbox(txn, *id) {
            old_recs.insert(*id, r);
        }
    }
    let keep: HashSet<MailboxId> = boxes.iter().map(|b| b.id).collect();
    // Flags the index still has (a reconstruct of a readable index, on a
    // running server) are newer than the files' flags at delivery.
    let mut old_flags: std::collections::HashMap<(MailboxId, Uid), Flags> = Default::default();
    {
        let msgs = txn.open_table(MESSAGES).map_err(ie)?;
        for (_, id) in &old {
            if !keep.contains(id) {
                continue;
            }
            for item in msgs.range((*id, 0u32)..=(*id, u32::MAX)).map_err(ie)? {
                let (k, v) = item.map_err(ie)?;
                if let Ok(m) = dec::<MessageMeta>(v.value()) {
                    old_flags.insert((*id, k.value().1), m.flags);
                }
            }
        }
    }
    // The old index of the user goes.
    for (name, id) in &old {
        clear_mailbox_messages(txn, *id)?;
        txn.open_table(NAMES)
            .map_err(ie)?
            .remove((user, name.as_str()))
            .map_err(ie)?;
        if !keep.contains(id) {
            txn.open_table(MAILBOXES)
                .map_err(ie)?
                .remove(*id)
                .map_err(ie)?;
            extra::on_delete_mailbox(txn, *id)?;
            metadata::on_delete_mailbox(txn, *id, user)?;
            let gone = old_recs.get(id).map_or(1, |r| r.highestmodseq + 1);
            batch.notify.insert(*id, gone);
        }
    }
    journal::reset_user(txn, user)?;
    threads::reset_user(txn, user)?;
    let had_subs = {
        let subs = txn.open_table(SUBS).map_err(ie)?;
        let mut r = subs.range((user, "")..).map_err(ie)?;
        r.next()
            .is_some_and(|i| i.is_ok_and(|(k, _)| k.value().0 == user))
    };
    let mut report = ReconstructReport {
        user: user.to_string(),
        partition: partition.to_string(),
        ..Default::default()
    };
    let mut usage = Usage::default();
    let mut taken: HashSet<String> = HashSet::new();
    let mut pending = journal::Pending::default();
    for b in boxes {
        if foreign.contains(&b.id) {
            report.problems.push(
                Problem::new("orphan_mailbox", Some(b.id), None, Path::new(""))
                    .detail("mailbox id belongs to another user in the index; not indexed"),
            );
            continue;
        }
        let old = old_recs.get(&b.id);
        let newest_prelude = b
            .msgs
            .iter()
            .max_by_key(|m| (m.mtime, m.uid))
            .map(|m| m.prelude.m.clone());
        let wanted = b
            .file
            .as_ref()
            .map(|f| f.name.clone())
            .or_else(|| old.map(|o| o.name.clone()))
            .or(newest_prelude)
            .unwrap_or_else(|| format!("Recovered/{}", b.id));
        let mut name = normalize_name(&wanted).unwrap_or_else(|_| format!("Recovered/{}", b.id));
        if taken.contains(&name) {
            name = format!("{name}-recovered-{}", b.id);
        }
        taken.insert(name.clone());
        let mut meta = txn.open_table(META).map_err(ie)?;
        let next_id = meta
            .get("next_mailbox_id")
            .map_err(ie)?
            .map_or(1, |v| v.value());
        if b.id >= next_id {
            meta.insert("next_mailbox_id", b.id + 1).map_err(ie)?;
        }
        let last_uv = meta
            .get("last_uidvalidity")
            .map_err(ie)?
            .map_or(0, |v| v.value());
        let (uidvalidity, kept, floor) = match (&b.file, old) {
            (Some(f), Some(o)) if f.uidvalidity == o.uidvalidity => {
                (f.uidvalidity, true, o.highestmodseq + 1)
            }
            (Some(f), _) => (f.uidvalidity, true, modseq_bound(f.created, t)),
            (None, Some(o)) => (o.uidvalidity, true, o.highestmodseq + 1),
            (None, None) => {
                let uv = (t as u64).max(last_uv + 1).min(u32::MAX as u64) as u32;
                (uv, false, 1)
            }
        };
        if u64::from(uidvalidity) > last_uv {
            meta.insert("last_uidvalidity", u64::from(uidvalidity))
                .map_err(ie)?;
        }
        drop(meta);
        let special_use = match &b.file {
            Some(f) => f.special_use,
            None => old.and_then(|o| o.special_use).or_else(|| {
                DEFAULT_MAILBOXES
                    .iter()
                    .find(|(n, _)| *n == name)
                    .and_then(|(_, s)| *s)
            }),
        };
        let max_uid = b.msgs.iter().map(|m| m.uid).max().unwrap_or(0);
        // Above every UID found, set aside or purged (record file).
        let uidnext = (max_uid.max(b.aside_uid) + 1)
            .max(old.map_or(1, |o| o.uidnext))
            .max(b.file.as_ref().map_or(1, |f| f.uidnext));
        let mut rec = MailboxRec {
            user: user.to_string(),
            name: name.clone(),
            uidvalidity,
            uidnext,
            highestmodseq: floor,
            special_use,
            exists: 0,
            unseen: 0,
            size: 0,
            recent_uid: uidnext,
        };
        let count = b.msgs.len() as u64;
        for m in b.msgs {
            let meta = MessageMeta {
                uid: m.uid,
                flags: old_flags
                    .remove(&(b.id, m.uid))
                    .unwrap_or_else(|| Flags::from_names(&m.prelude.f)),
                internal_date: m.prelude.d,
                tz_offset_min: m.prelude.z,
                size: m.size,
                modseq: floor,
                offset: m.offset,
                save_date: m.mtime,
            };
            add_message(txn, b.id, &mut rec, &meta)?;
            let (email, thread) = extra::on_append(txn, b.id, m.uid, user, &m.keys)?;
            journal::message_added(txn, &mut pending, user, (b.id, m.uid), email, thread, false)?;
            usage.bytes += m.size;
            usage.messages += 1;
            report.bytes += m.size;
        }
        report.messages += count;
        put_mailbox(txn, b.id, &rec)?;
        txn.open_table(NAMES)
            .map_err(ie)?
            .insert((user, name.as_str()), b.id)
            .map_err(ie)?;
        expire::set_floor(txn, b.id, floor)?;
        if !had_subs {
            txn.open_table(SUBS)
                .map_err(ie)?
                .insert((user, name.as_str()), 1)
                .map_err(ie)?;
        }
        if b.file.as_ref().map(|f| (&f.name, f.uidvalidity)) != Some((&name, uidvalidity)) {
            // The folder's record now says what the index says.
            batch_record(txn, batch, user, partition, b.id, &rec)?;
        }
        batch.notify.insert(b.id, floor);
        report.mailboxes.push(ReconstructedMailbox {
            id: b.id,
            name,
            uidvalidity,
            uidvalidity_kept: kept,
            messages: count,
            uidnext,
        });
    }
    // The user record: partition and usage recomputed.
    let rec = UserRec {
        partition: partition.to_string(),
        usage,
    };
    txn.open_table(USERS)
        .map_err(ie)?
        .insert(user, enc(&rec)?.as_slice())
        .map_err(ie)?;
    // Missing default mailboxes come back empty (new UIDVALIDITY).
    for (n, su) in DEFAULT_MAILBOXES {
        if !taken.contains(n) {
            let (id, r) = create_mailbox_rec(txn, batch, user, n, su)?;
            if !had_subs {
                txn.open_table(SUBS)
                    .map_err(ie)?
                    .insert((user, n), 1)
                    .map_err(ie)?;
            }
            report.mailboxes.push(ReconstructedMailbox {
                id,
                name: n.to_string(),
                uidvalidity: r.uidvalidity,
                uidvalidity_kept: false,
                messages: 0,
                uidnext: 1,
            });
        }
    }
    // Created entries of the rebuild are not changes clients must fetch
    // one by one: the reset state above makes them resynchronise.
    drop(pending);
    batch.users.insert(user.to_string());
    Ok(report)
}

/// Writes a mailbox record for a mailbox whose user record may not be in
/// the table yet (reconstruct on an empty index).
fn batch_record(
    txn: &WriteTransaction,
    batch: &mut Batch,
    user: &str,
    partition: &str,
    id: MailboxId,
    rec: &MailboxRec,
) -> Result<()> {
    let known = txn
        .open_table(USERS)
        .map_err(ie)?
        .get(user)
        .map_err(ie)?
        .is_some();
    if !known {
        let u = UserRec {
            partition: partition.to_string(),
            usage: Usage::default(),
        };
        txn.open_table(USERS)
            .map_err(ie)?
            .insert(user, enc(&u)?.as_slice())
            .map_err(ie)?;
    }
    record_mailbox(txn, batch, id, rec, false)
}

impl Inner {
    /// Partition names in a stable order.
    fn partition_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.partitions.keys().cloned().collect();
        v.sort();
        v
    }

    /// Every user with a folder in a partition: (user, partition name).
    /// The owner is read from the folder's records and must hash to that
    /// folder (anything else is not ours to index).
    pub async fn users_on_disk(&self) -> Result<Vec<(String, String)>> {
        let parts: Vec<(String, PathBuf)> = self
            .partition_names()
            .into_iter()
            .filter_map(|n| self.partitions.get(&n).map(|p| (n, p.clone())))
            .collect();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            let mut seen = HashSet::new();
            for (pname, part) in parts {
                let Ok(rd) = std::fs::read_dir(&part) else {
                    continue;
                };
                let mut hashes: Vec<PathBuf> = rd
                    .flatten()
                    .filter(|e| {
                        e.file_name().to_str().is_some_and(|n| {
                            n.len() == 2 && n.bytes().all(|b| b.is_ascii_hexdigit())
                        })
                    })
                    .map(|e| e.path())
                    .collect();
                hashes.sort();
                for h in hashes {
                    let Ok(rd) = std::fs::read_dir(&h) else {
                        continue;
                    };
                    let mut udirs: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
                    udirs.sort();
                    for udir in udirs {
                        if let Some(user) = owner_of(&part, &udir) {
                            if seen.insert(user.clone()) {
                                out.push((user, pname.clone()));
                            }
                        }
                    }
                }
            }
            out
        })
        .await
        .map_err(ie)
    }

    /// Where `user`'s folder is: the index's partition, else the first
    /// partition holding a folder for them.
    async fn find_user(&self, user: &str) -> Result<Option<(String, PathBuf)>> {
        let u = user.to_string();
        let indexed = self
            .read_txn(move |txn| {
                let users = txn.open_table(USERS).map_err(ie)?;
                Ok(match users.get(u.as_str()).map_err(ie)? {
                    Some(v) => Some(dec::<UserRec>(v.value())?.partition),
                    None => None,
                })
            })
            .await?;
        if let Some(p) = indexed {
            if let Some(path) = self.partitions.get(&p) {
                if files::user_dir(path, user).is_dir() {
                    return Ok(Some((p, path.clone())));
                }
            }
        }
        for n in self.partition_names() {
            if let Some(path) = self.partitions.get(&n) {
                if files::user_dir(path, user).is_dir() {
                    return Ok(Some((n, path.clone())));
                }
            }
        }
        Ok(None)
    }

    /// Rebuilds `user`'s index from their files, replacing what the index
    /// had (sessions see the new state; JMAP clients resynchronise).
    pub async fn reconstruct_user(
        &self,
        user: &str,
        tick: std::sync::Arc<dyn Tick>,
    ) -> Result<ReconstructReport> {
        let Some((pname, part)) = self.find_user(user).await? else {
            return Err(StoreError::Internal(format!(
                "no folder for {user} in any partition"
            )));
        };
        let u = user.to_string();
        let (boxes, problems) =
            tokio::task::spawn_blocking(move || scan_user(&part, &u, tick.as_ref()))
                .await
                .map_err(ie)?
                .map_err(ie)?;
        let u = user.to_string();
        let mut report = self
            .submit(move |txn, batch| {
                let mut boxes = boxes;
                let mut late = Vec::new();
                if let Some(part) = batch.partitions.get(&pname).cloned() {
                    catch_up(&part, &u, batch, &mut boxes, &mut late).map_err(ie)?;
                }
                let mut r = rebuild_user(txn, batch, &u, &pname, boxes)?;
                r.problems.extend(late);
                Ok(r)
            })
            .await?;
        report.problems.extend(problems);
        Ok(report)
    }

    /// Users in the index.
    pub async fn indexed_users(&self) -> Result<Vec<String>> {
        self.read_txn(|txn| {
            let users = txn.open_table(USERS).map_err(ie)?;
            let mut out = Vec::new();
            for item in users.iter().map_err(ie)? {
                out.push(item.map_err(ie)?.0.value().to_string());
            }
            Ok(out)
        })
        .await
    }

    /// Checks `user`'s index entries against their files (see the module
    /// doc); with `repair`, entries without a usable file are expunged
    /// (their file, if any, moved to `<partition>/lost+found/`) and
    /// orphan files and folders are moved to lost+found.
    pub async fn verify_user(
        &self,
        user: &str,
        repair: bool,
        tick: std::sync::Arc<dyn Tick>,
    ) -> Result<VerifyReport> {
        let u = user.to_string();
        let (boxes, partition) = {
            let me_parts = self.partitions.clone();
            self.read_txn(move |txn| {
                let users = txn.open_table(USERS).map_err(ie)?;
                let part = match users.get(u.as_str()).map_err(ie)? {
                    Some(v) => dec::<UserRec>(v.value())?.partition,
                    None => return Err(StoreError::Internal(format!("{u} is not in the index"))),
                };
                let path = me_parts
                    .get(&part)
                    .cloned()
                    .ok_or_else(|| StoreError::Internal(format!("unknown partition {part}")))?;
                let msgs = txn.open_table(MESSAGES).map_err(ie)?;
                let mut out = Vec::new();
                for (id, rec) in user_mailboxes_r(txn, &u)? {
                    let mut metas = Vec::new();
                    for item in msgs.range((id, 0u32)..=(id, u32::MAX)).map_err(ie)? {
                        metas.push(dec::<MessageMeta>(item.map_err(ie)?.1.value())?);
                    }
                    out.push((id, rec, metas));
                }
                Ok((out, path))
            })
            .await?
        };
        let u = user.to_string();
        let part = partition.clone();
        let (mut report, bad, orphans, orphan_boxes) =
            tokio::task::spawn_blocking(move || check_files(&part, &u, &boxes, tick.as_ref()))
                .await
                .map_err(ie)?
                .map_err(ie)?;
        // An entry expunged since the snapshot is no problem.
        let still: Vec<(MailboxId, Uid)> = bad.iter().map(|(id, m, _)| (*id, m.uid)).collect();
        let present = self
            .read_txn(move |txn| {
                let msgs = txn.open_table(MESSAGES).map_err(ie)?;
                let mut v = Vec::with_capacity(still.len());
                for k in still {
                    v.push(msgs.get(k).map_err(ie)?.is_some());
                }
                Ok(v)
            })
            .await?;
        let bad: Vec<(MailboxId, MessageMeta, Problem)> = bad
            .into_iter()
            .zip(present)
            .filter_map(|(b, p)| p.then_some(b))
            .collect();
        if !repair {
            report.problems.extend(bad.into_iter().map(|b| b.2));
            report.problems.extend(orphans.into_iter().map(|o| o.3));
            report
                .problems
                .extend(orphan_boxes.into_iter().map(|o| o.1));
            return Ok(report);
        }
        let lost = partition.join("lost+found");
        let u = user.to_string();
        let fixed = self
            .submit(move |txn, batch| {
                repair_user(txn, batch, &u, &lost, bad, orphans, orphan_boxes)
            })
            .await?;
        report.problems.extend(fixed);
        Ok(report)
    }
}

/// The owner named by a user folder's records (a mailbox file, else the
/// prelude of a message).
fn owner_of(partition: &Path, udir: &Path) -> Option<String> {
    // A message copied from another user's (shared) mailbox is a hard
    // link whose prelude names that user: only a name that hashes to
    // this folder counts.
    let fits = |u: &str| files::user_dir(partition, u) == udir;
    let dirs = mailbox_dirs(udir).ok()?;
    for (_, dir) in &dirs {
        if let Some(f) = files::read_mailbox_file(dir).filter(|f| fits(&f.user)) {
            return Some(f.user);
        }
    }
    for (_, dir) in &dirs {
        for (_, p) in message_files(dir).ok()?.into_iter().take(16) {
            if let Ok((pre, _)) = files::read_prelude(&p) {
                if fits(&pre.u) {
                    return Some(pre.u);
                }
            }
        }
    }
    None
}

type Bad = (MailboxId, MessageMeta, Problem);
type Orphan = (MailboxId, Uid, PathBuf, Problem);

/// One message file against its entry: None when it is fine.
pub(super) fn check_message(path: &Path, meta: &MessageMeta) -> Option<(String, String)> {
    let flen = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Some(("missing".into(), "no file".into()))
        }
        Err(e) => return Some(("unreadable".into(), e.to_string())),
    };
    let (pre, offset) = match files::read_prelude(path) {
        Ok(p) => p,
        Err(e) => return Some(("prelude".into(), e.to_string())),
    };
    // `pre.u` may name another user: a copy from a shared mailbox is a
    // hard link of their file.
    if offset != meta.offset {
        return Some((
            "prelude".into(),
            format!("prelude ends at {offset}, index says {}", meta.offset),
        ));
    }
    let want = u64::from(offset) + meta.size;
    if flen != want {
        return Some((
            "size".into(),
            format!("file has {flen} bytes, index says {want}"),
        ));
    }
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => return Some(("unreadable".into(), e.to_string())),
    };
    use std::io::{Read, Seek};
    if let Err(e) = f.seek(std::io::SeekFrom::Start(u64::from(offset))) {
        return Some(("unreadable".into(), e.to_string()));
    }
    let mut h = crc32fast::Hasher::new();
    let mut head = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let piece = &buf[..n];
                if head.len() < 1024 {
                    head.extend_from_slice(&piece[..n.min(1024 - head.len())]);
                }
                h.update(piece);
            }
            Err(e) => return Some(("unreadable".into(), e.to_string())),
        }
    }
    if let Some(c) = pre.c {
        let got = h.finalize();
        if got != c {
            return Some((
                "checksum".into(),
                format!("CRC-32 {got:08x}, prelude says {c:08x}"),
            ));
        }
    }
    if !has_header(&head) {
        return Some(("header".into(), "does not start with a header field".into()));
    }
    None
}

#[allow(clippy::type_complexity)]
fn check_files(
    partition: &Path,
    user: &str,
    boxes: &[(MailboxId, MailboxRec, Vec<MessageMeta>)],
    tick: &dyn Tick,
) -> std::io::Result<(VerifyReport, Vec<Bad>, Vec<Orphan>, Vec<(PathBuf, Problem)>)> {
    let udir = files::user_dir(partition, user);
    let mut report = VerifyReport {
        user: user.to_string(),
        ..Default::default()
    };
    tick.total(boxes.iter().map(|b| b.2.len() as u64).sum());
    let mut bad = Vec::new();
    let mut orphans = Vec::new();
    let known: HashSet<MailboxId> = boxes.iter().map(|b| b.0).collect();
    for (id, rec, metas) in boxes {
        let dir = files::mailbox_dir(partition, user, *id);
        let indexed: HashSet<Uid> = metas.iter().map(|m| m.uid).collect();
        for m in metas {
            tick.inc(1);
            report.entries += 1;
            let path = files::message_file(&dir, m.uid);
            if let Some((kind, detail)) = check_message(&path, m) {
                bad.push((
                    *id,
                    m.clone(),
                    Problem::new(&kind, Some(*id), Some(m.uid), &path).detail(detail),
                ));
            }
        }
        let on_disk = match message_files(&dir) {
            Ok(v) => v,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        for (uid, path) in on_disk {
            report.files += 1;
            if indexed.contains(&uid) {
                continue;
            }
            // At or above the snapshot's UIDNEXT: a delivery in flight,
            // unless old (a batch that never committed: not acknowledged).
            let detail = if uid < rec.uidnext {
                "file without index entry"
            } else if std::fs::metadata(&path)
                .map(|m| now().saturating_sub(mtime(&m)) > IN_FLIGHT_GRACE)
                .unwrap_or(false)
            {
                "file above UIDNEXT that was never committed"
            } else {
                continue;
            };
            orphans.push((
                *id,
                uid,
                path.clone(),
                Problem::new("orphan", Some(*id), Some(uid), &path).detail(detail),
            ));
        }
    }
    let mut orphan_boxes = Vec::new();
    for (id, dir) in mailbox_dirs(&udir)? {
        if !known.contains(&id) {
            let n = message_files(&dir).map(|v| v.len()).unwrap_or(0);
            orphan_boxes.push((
                dir.clone(),
                Problem::new("orphan_mailbox", Some(id), None, &dir).detail(format!(
                    "mailbox folder unknown to the index ({n} messages)"
                )),
            ));
        }
    }
    Ok((report, bad, orphans, orphan_boxes))
}

/// Moves a file or folder into `lost` (created), under a name unique by
/// its origin. Returns the new path.
fn to_lost_found(lost: &Path, user: &str, path: &Path) -> std::io::Result<PathBuf> {
    crate::fsutil::create_private_dir_all(lost)?;
    let tail: Vec<String> = path
        .components()
        .rev()
        .take(2)
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let mut name = format!(
        "{}.{}",
        files::encode_user(user),
        tail.into_iter().rev().collect::<Vec<_>>().join(".")
    );
    let mut n = 0;
    while lost.join(&name).exists() {
        n += 1;
        name = format!("{name}.{n}");
    }
    let dest = lost.join(name);
    std::fs::rename(path, &dest)?;
    Ok(dest)
}

fn repair_user(
    txn: &WriteTransaction,
    batch: &mut Batch,
    user: &str,
    lost: &Path,
    bad: Vec<Bad>,
    orphans: Vec<Orphan>,
    orphan_boxes: Vec<(PathBuf, Problem)>,
) -> Result<Vec<Problem>> {
    let mut out = Vec::new();
    // Entries without a usable file: expunged, the file set aside.
    let mut by_box: BTreeMap<MailboxId, Vec<(MessageMeta, Problem)>> = BTreeMap::new();
    for (id, m, p) in bad {
        by_box.entry(id).or_default().push((m, p));
    }
    for (id, items) in by_box {
        let mut rec = match get_mailbox(txn, id) {
            Ok(r) => r,
            Err(_) => continue,
        };
        let victims: Vec<MessageMeta> = {
            let msgs = txn.open_table(MESSAGES).map_err(ie)?;
            let mut v = Vec::new();
            for (m, _) in &items {
                if let Some(x) = msgs.get((id, m.uid)).map_err(ie)? {
                    v.push(dec::<MessageMeta>(x.value())?);
                }
            }
            v
        };
        rec.highestmodseq += 1;
        let modseq = rec.highestmodseq;
        remove_messages(txn, batch, id, &mut rec, &victims, modseq)?;
        let bytes: u64 = victims.iter().map(|m| m.size).sum();
        add_usage(txn, user, -(bytes as i64), -(victims.len() as i64))?;
        put_mailbox(txn, id, &rec)?;
        batch.notify.insert(id, modseq);
        for (_, mut p) in items {
            let path = PathBuf::from(&p.path);
            p.repaired = Some(if path.exists() {
                match to_lost_found(lost, user, &path) {
                    Ok(d) => format!("expunged; file moved to {}", d.display()),
                    Err(e) => format!("expunged; file left in place: {e}"),
                }
            } else {
                "expunged".into()
            });
            out.push(p);
        }
    }
    // Orphan files: set aside (a UID below UIDNEXT cannot come back; one
    // above was never acknowledged, and its sender retried). Unless the
    // index has it by now.
    for (id, uid, path, mut p) in orphans {
        let indexed = txn
            .open_table(MESSAGES)
            .map_err(ie)?
            .get((id, uid))
            .map_err(ie)?
            .is_some();
        if indexed {
            continue;
        }
        p.repaired = Some(match to_lost_found(lost, user, &path) {
            Ok(d) => format!("moved to {}", d.display()),
            Err(e) => return Err(ie(format!("moving {} to lost+found: {e}", path.display()))),
        });
        out.push(p);
    }
    for (dir, mut p) in orphan_boxes {
        p.repaired = Some(match to_lost_found(lost, user, &dir) {
            Ok(d) => format!("moved to {}", d.display()),
            Err(e) => return Err(ie(format!("moving {} to lost+found: {e}", dir.display()))),
        });
        out.push(p);
    }
    batch.users.insert(user.to_string());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::test_config;
    use crate::store::{NoTick, Store};
    use std::sync::Arc;

    fn msg(subject: &str, flags: &[&str], date: i64) -> NewMessage {
        NewMessage {
            data: Arc::new(
                format!(
                    "Subject: {subject}\r\nMessage-ID: <{subject}@x>\r\n\r\nbody {subject}\r\n"
                )
                .into_bytes(),
            ),
            flags: Flags::from_names(flags),
            internal_date: Some((date, 120)),
        }
    }

    fn reopen(cfg: &crate::config::Config) -> Store {
        for _ in 0..100 {
            match Store::open(cfg) {
                Ok(s) => return s,
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
            }
        }
        panic!("store did not reopen");
    }

    fn tick() -> Arc<dyn Tick> {
        Arc::new(NoTick)
    }

    /// Issue 14: reconstruct after losing the mboxlist restores every
    /// message with its UID, flags and date at delivery, the mailbox names
    /// (after a rename), UIDVALIDITY and special use; UIDNEXT stays above
    /// every UID; usage is recomputed.
    #[tokio::test]
    async fn reconstruct_after_losing_the_mboxlist_keeps_uids_names_flags_uidvalidity() {
        let d = tempfile::tempdir().unwrap();
        let cfg = test_config(d.path());
        let (before, work_uid);
        {
            let s = Store::open(&cfg).unwrap();
            let q = Quota::default();
            s.append("a@x", "INBOX", msg("one", &["\\Seen"], 1_600_000_000), q)
                .await
                .unwrap();
            let p2 = s
                .append("a@x", "INBOX", msg("two", &["$Label"], 1_600_000_100), q)
                .await
                .unwrap();
            s.append("a@x", "INBOX", msg("three", &[], 1_600_000_200), q)
                .await
                .unwrap();
            // Expunge two: UIDNEXT must stay 4.
            s.store_flags(
                p2.mailbox,
                vec![2, 3],
                FlagOp::Add,
                Flags::from_names(&["\\Deleted"]),
                None,
            )
            .await
            .unwrap();
            s.expunge(p2.mailbox, Some(vec![3])).await.unwrap();
            s.create_mailbox("a@x", "Work/Projects", None)
                .await
                .unwrap();
            work_uid = s
                .append(
                    "a@x",
                    "Work/Projects",
                    msg("w", &["\\Flagged"], 1_600_000_300),
                    q,
                )
                .await
                .unwrap();
            s.rename_mailbox("a@x", "Work", "Jobs").await.unwrap();
            before = s.list("a@x").await.unwrap();
        }
        std::fs::remove_file(d.path().join("mboxlist/mboxlist.redb")).unwrap();
        let s = reopen(&cfg);
        assert!(s.list("a@x").await.unwrap().is_empty());
        let on_disk = s.users_on_disk().await.unwrap();
        assert_eq!(on_disk, vec![("a@x".to_string(), "primary".to_string())]);
        let r = s.reconstruct_user("a@x", tick()).await.unwrap();
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(r.messages, 3);
        let after = s.list("a@x").await.unwrap();
        let names = |l: &[MailboxInfo]| l.iter().map(|m| m.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&after), names(&before));
        for (a, b) in after.iter().zip(&before) {
            assert_eq!(
                (a.id, a.uidvalidity, a.special_use),
                (b.id, b.uidvalidity, b.special_use),
                "{}",
                a.name
            );
            assert!(a.uidnext >= b.uidnext, "{}", a.name);
            assert!(a.highestmodseq > b.highestmodseq, "{}", a.name);
        }
        let inbox = s.snapshot("a@x", "INBOX").await.unwrap();
        // Above the highest UID found, including the expunged file set
        // aside (UID 3): an expunged UID is never reused.
        assert_eq!(inbox.info.uidnext, 4);
        let got: Vec<(Uid, Vec<String>, i64, i16)> = inbox
            .messages
            .iter()
            .map(|m| (m.uid, m.flags.names(), m.internal_date, m.tz_offset_min))
            .collect();
        // Flags at delivery: \Deleted set later is not recorded.
        assert_eq!(
            got,
            vec![
                (1, vec!["\\Seen".to_string()], 1_600_000_000, 120),
                (2, vec!["$Label".to_string()], 1_600_000_100, 120),
            ]
        );
        let body = s.read(inbox.info.id, &inbox.messages[1]).await.unwrap();
        assert!(body.starts_with(b"Subject: two\r\n"));
        let jobs = s.snapshot("a@x", "Jobs/Projects").await.unwrap();
        assert_eq!(jobs.messages[0].uid, work_uid.uid);
        let usage = s.usage("a@x").await.unwrap();
        assert_eq!(usage.messages, 3);
        // New mail after the rebuild gets the next UID, and a new mailbox
        // an id above the rebuilt ones.
        let p = s
            .append("a@x", "INBOX", msg("four", &[], 0), Quota::default())
            .await
            .unwrap();
        assert_eq!(p.uid, 4);
        let n = s.create_mailbox("a@x", "New", None).await.unwrap();
        assert!(after.iter().all(|m| m.id < n.id));
        assert!(after.iter().all(|m| m.uidvalidity != n.uidvalidity));
    }

    /// RFC 7162 3.2.5.2: after a reconstruct (or a trim) a client whose
    /// modseq predates the floor is told every missing UID vanished, and
    /// sees every message as changed; one after the floor sees exact
    /// changes.
    #[tokio::test]
    async fn qresync_before_the_floor_gets_every_missing_uid() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&test_config(d.path())).unwrap();
        let q = Quota::default();
        let mut last = None;
        for i in 0..5 {
            last = Some(
                s.append("a@x", "INBOX", msg(&format!("m{i}"), &[], 0), q)
                    .await
                    .unwrap(),
            );
        }
        let id = last.unwrap().mailbox;
        s.store_flags(
            id,
            vec![2, 4],
            FlagOp::Add,
            Flags::from_names(&["\\Deleted"]),
            None,
        )
        .await
        .unwrap();
        s.expunge(id, None).await.unwrap();
        let old = s.mailbox_info(id).await.unwrap().highestmodseq;
        let jmap_before = s
            .jmap_state("a@x", crate::store::JmapKind::Email)
            .await
            .unwrap();
        let r = s.reconstruct_user("a@x", tick()).await.unwrap();
        // The JMAP journal is reset: an older state cannot be caught up.
        let jmap_after = s
            .jmap_state("a@x", crate::store::JmapKind::Email)
            .await
            .unwrap();
        assert!(jmap_after > jmap_before);
        assert!(matches!(
            s.jmap_changes("a@x", crate::store::JmapKind::Email, jmap_before, 100)
                .await,
            Err(crate::store::ChangesError::CannotCalculate)
        ));
        assert_eq!(s.all_email_places("a@x").await.unwrap().len(), 3);
        assert_eq!(r.messages, 3);
        let info = s.mailbox_info(id).await.unwrap();
        assert_eq!(info.highestmodseq, old + 1);
        let c = s.changes(id, old).await.unwrap();
        assert_eq!(c.expunged, vec![2, 4]);
        assert_eq!(c.changed.len(), 3);
        let c = s.changes(id, info.highestmodseq).await.unwrap();
        assert!(c.expunged.is_empty() && c.changed.is_empty());
        // An expunge after the floor is reported exactly.
        s.store_flags(
            id,
            vec![5],
            FlagOp::Add,
            Flags::from_names(&["\\Deleted"]),
            None,
        )
        .await
        .unwrap();
        s.expunge(id, None).await.unwrap();
        let c = s.changes(id, info.highestmodseq).await.unwrap();
        assert_eq!(c.expunged, vec![5]);
    }

    /// Verify finds a missing file, a corrupted one (same size, other
    /// bytes: the prelude's CRC-32) and an orphan; `--repair` expunges the
    /// entries, moves the bad files to lost+found, and a second verify is
    /// clean.
    #[tokio::test]
    async fn verify_finds_missing_corrupted_and_orphan_files_and_repairs_them() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&test_config(d.path())).unwrap();
        let q = Quota::default();
        let mut ps = Vec::new();
        for i in 0..4 {
            ps.push(
                s.append("a@x", "INBOX", msg(&format!("m{i}"), &[], 0), q)
                    .await
                    .unwrap(),
            );
        }
        let id = ps[0].mailbox;
        let clean = s.verify_user("a@x", false, tick()).await.unwrap();
        assert!(clean.problems.is_empty(), "{:?}", clean.problems);
        assert_eq!((clean.entries, clean.files), (4, 4));
        std::fs::remove_file(s.message_path(id, 1).unwrap()).unwrap();
        let p2 = s.message_path(id, 2).unwrap();
        let mut bytes = std::fs::read(&p2).unwrap();
        let n = bytes.len();
        bytes[n - 3] ^= 0x20;
        std::fs::write(&p2, &bytes).unwrap();
        // An orphan below UIDNEXT: a copy of message 3 as UID 3's twin.
        s.store_flags(
            id,
            vec![4],
            FlagOp::Add,
            Flags::from_names(&["\\Deleted"]),
            None,
        )
        .await
        .unwrap();
        let p4 = s.message_path(id, 4).unwrap();
        let keep = std::fs::read(&p4).unwrap();
        s.expunge(id, None).await.unwrap();
        std::fs::write(&p4, &keep).unwrap();
        let r = s.verify_user("a@x", false, tick()).await.unwrap();
        let kinds: Vec<(&str, Option<Uid>)> = r
            .problems
            .iter()
            .map(|p| (p.kind.as_str(), p.uid))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("missing", Some(1)),
                ("checksum", Some(2)),
                ("orphan", Some(4))
            ]
        );
        let r = s.verify_user("a@x", true, tick()).await.unwrap();
        assert!(
            r.problems.iter().all(|p| p.repaired.is_some()),
            "{:?}",
            r.problems
        );
        let r = s.verify_user("a@x", false, tick()).await.unwrap();
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        let snap = s.snapshot("a@x", "INBOX").await.unwrap();
        assert_eq!(
            snap.messages.iter().map(|m| m.uid).collect::<Vec<_>>(),
            vec![3]
        );
        let lost = d.path().join("partition/primary/lost+found");
        assert_eq!(std::fs::read_dir(lost).unwrap().count(), 2);
        assert_eq!(s.usage("a@x").await.unwrap().messages, 1);
    }

    /// A purged expunged file leaves its UID in the mailbox's record file:
    /// a reconstruct after the purge does not reuse it either.
    #[tokio::test]
    async fn reconstruct_never_reuses_purged_uids() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&test_config(d.path())).unwrap();
        let q = Quota::default();
        s.append("a@x", "INBOX", msg("a", &[], 0), q).await.unwrap();
        let p = s
            .append("a@x", "INBOX", msg("b", &["\\Deleted"], 0), q)
            .await
            .unwrap();
        s.expunge(p.mailbox, None).await.unwrap();
        let t = now() + 10;
        assert_eq!(s.purge_expunged("primary", t, 0).await.unwrap().0, 1);
        let r = s.reconstruct_user("a@x", tick()).await.unwrap();
        assert_eq!(r.messages, 1);
        assert_eq!(s.status("a@x", "INBOX").await.unwrap().uidnext, 3);
    }

    /// A message copied from another user's mailbox is a hard link whose
    /// prelude names that user: the path says whose it is.
    #[tokio::test]
    async fn copies_across_users_are_reconstructed_and_verified_by_their_path() {
        let d = tempfile::tempdir().unwrap();
        let cfg = test_config(d.path());
        {
            let s = Store::open(&cfg).unwrap();
            let p = s
                .append("a@x", "INBOX", msg("shared", &[], 0), Quota::default())
                .await
                .unwrap();
            s.ensure_user("b@x", None).await.unwrap();
            s.copy(p.mailbox, vec![1], "b@x", "INBOX", false, Quota::default())
                .await
                .unwrap();
            let v = s.verify_user("b@x", false, tick()).await.unwrap();
            assert!(v.problems.is_empty(), "{:?}", v.problems);
        }
        std::fs::remove_file(d.path().join("mboxlist/mboxlist.redb")).unwrap();
        let s = reopen(&cfg);
        let mut users = s.users_on_disk().await.unwrap();
        users.sort();
        assert_eq!(users.len(), 2, "{users:?}");
        for (u, _) in users {
            let r = s.reconstruct_user(&u, tick()).await.unwrap();
            assert_eq!((r.messages, r.problems.len()), (1, 0), "{u}");
        }
        let snap = s.snapshot("b@x", "INBOX").await.unwrap();
        let body = s.read(snap.info.id, &snap.messages[0]).await.unwrap();
        assert!(body.starts_with(b"Subject: shared"));
    }

    /// Reconstruct on a running server: deliveries and expunges that
    /// commit while it scans are neither lost nor brought back.
    #[tokio::test]
    async fn reconstruct_during_deliveries_loses_nothing() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&test_config(d.path())).unwrap();
        let q = Quota::default();
        for i in 0..20 {
            s.append("a@x", "INBOX", msg(&format!("pre{i}"), &[], 0), q)
                .await
                .unwrap();
        }
        let writer = {
            let s = s.clone();
            tokio::spawn(async move {
                for i in 0..40 {
                    s.append("a@x", "INBOX", msg(&format!("m{i}"), &[], 0), q)
                        .await
                        .unwrap();
                    if i % 10 == 0 {
                        let id = s.status("a@x", "INBOX").await.unwrap().id;
                        s.store_flags(
                            id,
                            vec![i + 1],
                            FlagOp::Add,
                            Flags::from_names(&["\\Deleted"]),
                            None,
                        )
                        .await
                        .unwrap();
                        s.expunge(id, None).await.unwrap();
                    }
                }
            })
        };
        for _ in 0..3 {
            s.reconstruct_user("a@x", tick()).await.unwrap();
        }
        writer.await.unwrap();
        let snap = s.snapshot("a@x", "INBOX").await.unwrap();
        assert_eq!(snap.messages.len(), 56);
        assert_eq!(s.usage("a@x").await.unwrap().messages, 56);
        let v = s.verify_user("a@x", false, tick()).await.unwrap();
        assert!(v.problems.is_empty(), "{:?}", v.problems);
    }

    /// A reconstruct in the same writer batch as an expunge or a mailbox
    /// deletion (the files go aside only after the commit) does not bring
    /// the expunged message or the deleted mailbox back.
    #[tokio::test]
    async fn catch_up_skips_what_the_same_batch_expunged_or_deleted() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&test_config(d.path())).unwrap();
        let q = Quota::default();
        let mut inbox = 0;
        for i in 0..3 {
            inbox = s
                .append("a@x", "INBOX", msg(&format!("m{i}"), &[], 0), q)
                .await
                .unwrap()
                .mailbox;
        }
        s.create_mailbox("a@x", "Old", None).await.unwrap();
        let old = s
            .append("a@x", "Old", msg("old", &[], 0), q)
            .await
            .unwrap()
            .mailbox;
        let first = s.message_path(inbox, 1).unwrap();
        // <partition>/<hash>/<user>/<mailbox>/1.msg
        let part = first.ancestors().nth(4).unwrap().to_path_buf();
        let (mut boxes, _) = scan_user(&part, "a@x", &NoTick).unwrap();
        assert!(boxes.iter().any(|b| b.id == old));
        let mut batch = Batch::default();
        let inbox_dir = files::mailbox_dir(&part, "a@x", inbox);
        batch.unlink_after.push(files::message_file(&inbox_dir, 2));
        batch
            .aside_dirs_after
            .push(files::mailbox_dir(&part, "a@x", old));
        let mut problems = Vec::new();
        catch_up(&part, "a@x", &batch, &mut boxes, &mut problems).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        assert!(!boxes.iter().any(|b| b.id == old));
        let b = boxes.iter().find(|b| b.id == inbox).unwrap();
        let uids: Vec<Uid> = b.msgs.iter().map(|m| m.uid).collect();
        assert_eq!(uids, vec![1, 3]);
    }

    /// A file above UIDNEXT is a delivery in flight for verify until it
    /// is old (then an orphan, never acknowledged); reconstruct indexes it.
    #[tokio::test]
    async fn an_orphan_above_uidnext_is_in_flight_then_reported_and_reconstruct_indexes_it() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&test_config(d.path())).unwrap();
        let p = s
            .append("a@x", "INBOX", msg("m", &["\\Seen"], 5), Quota::default())
            .await
            .unwrap();
        let src = s.message_path(p.mailbox, 1).unwrap();
        let dst = src.with_file_name("7.msg");
        std::fs::copy(&src, &dst).unwrap();
        // Not reported while it may be a delivery in flight (>= UIDNEXT)...
        let r = s.verify_user("a@x", false, tick()).await.unwrap();
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(&dst)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let r = s.verify_user("a@x", false, tick()).await.unwrap();
        assert_eq!(r.problems.len(), 1);
        assert_eq!(
            (r.problems[0].kind.as_str(), r.problems[0].uid),
            ("orphan", Some(7))
        );
        // ...and reconstruct picks it up, UIDNEXT above it.
        let r = s.reconstruct_user("a@x", tick()).await.unwrap();
        assert_eq!(r.messages, 2);
        let info = s.status("a@x", "INBOX").await.unwrap();
        assert_eq!(info.uidnext, 8);
    }

    #[test]
    fn modseq_bound_exceeds_any_rate_of_changes_and_stays_an_imap_modseq() {
        // RFC 7162: a mod-sequence-value is below 2^63.
        assert!(modseq_bound(0, 4_000_000_000) < 1 << 63);
        assert_eq!(modseq_bound(100, 100), 1 << 31);
        assert!(modseq_bound(100, 101) > modseq_bound(100, 100));
        // A clock going backwards still gives a positive bound.
        assert_eq!(modseq_bound(200, 100), 1 << 31);
    }

    #[test]
    fn rfc5322_header_presence() {
        assert!(has_header(b"From: a@b\r\n\r\nx"));
        assert!(has_header(b"X-Y:z"));
        assert!(!has_header(b""));
        assert!(!has_header(b"\r\nbody"));
        assert!(!has_header(b"not a header\r\n"));
        assert!(!has_header(b": empty name"));
    }

    #[test]
    fn message_file_names_give_uids() {
        assert_eq!(uid_of("12.msg"), Some(12));
        assert_eq!(uid_of("0.msg"), None);
        assert_eq!(uid_of("+1.msg"), None);
        assert_eq!(uid_of("1.msg.tmp"), None);
        assert_eq!(uid_of("mailbox"), None);
        assert_eq!(uid_of("99999999999.msg"), None);
    }
}
