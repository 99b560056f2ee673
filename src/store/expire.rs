//! Expire (issue 14): retention rules applied to the index, the trimming
//! of the expunged table, and its floor.
//!
//! The EXPUNGED table answers QRESYNC (RFC 7162) and session sync: which
//! UIDs left a mailbox after a modseq. It would grow without end, so
//! `trim_expunged` keeps the newest `store.expire.expunged_keep` records
//! per mailbox and records the highest modseq it removed as the mailbox's
//! floor (EXPUNGE_FLOOR; reconstruct sets it too). A client asking for
//! changes since a modseq below the floor cannot be told exactly what
//! vanished, so it is told that every UID below UIDNEXT that is not
//! present vanished (RFC 7162 3.2.5.2 allows this full answer): never
//! "nothing was expunged" when the records are gone.
//!
//! Expunged message files are moved aside by the writer after the commit
//! (`files::set_aside`, `<partition>/expunged/<day>/`) and removed by
//! `files::purge_expunged` once `store.expire.purge_after` has passed.

use std::collections::BTreeMap;
use std::path::PathBuf;

use redb::{ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};

use super::*;
use crate::config::ExpireRule;

/// mailbox id -> highest modseq whose expunge records may be gone.
const EXPUNGE_FLOOR: TableDefinition<u64, u64> = TableDefinition::new("expunged_floor");

/// Most records removed by one writer job (keeps the writer responsive).
const TRIM_CHUNK: usize = 5000;

/// Deleted mailboxes whose folder may still be in its place: mailbox id ->
/// the folder's path (bytes). Written in the transaction that deletes the
/// mailbox; the writer moves the folder aside after the commit; the row
/// goes at the next `finish_deleted` (store open, expire), which first
/// moves aside a folder a crash left in place. So a kill -9 at any step
/// loses nothing (the folder is in place or aside) and leaks nothing for
/// good (a folder left in place is set aside and later purged).
const DELETED_PENDING: TableDefinition<u64, &[u8]> = TableDefinition::new("deleted_pending");

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(EXPUNGE_FLOOR).map_err(ie)?;
    txn.open_table(DELETED_PENDING).map_err(ie)?;
    Ok(())
}

/// Records, in the deleting transaction, that `dir` is to be set aside.
pub(super) fn note_deleted(
    txn: &WriteTransaction,
    mailbox: MailboxId,
    dir: &std::path::Path,
) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    txn.open_table(DELETED_PENDING)
        .map_err(ie)?
        .insert(mailbox, dir.as_os_str().as_bytes())
        .map_err(ie)?;
    Ok(())
}

/// Finishes the pending deletions: a folder still in place (the process
/// died between the commit and the move) is set aside now, unless the
/// index knows the mailbox again (a reconstruct brought it back); then
/// the record goes. Returns how many folders it set aside.
pub(super) fn finish_deleted(txn: &WriteTransaction, now: i64) -> Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let rows: Vec<(u64, Vec<u8>)> = txn
        .open_table(DELETED_PENDING)
        .map_err(ie)?
        .iter()
        .map_err(ie)?
        .filter_map(|i| i.ok().map(|(k, v)| (k.value(), v.value().to_vec())))
        .collect();
    if rows.is_empty() {
        return Ok(0);
    }
    let mboxes = txn.open_table(MAILBOXES).map_err(ie)?;
    let mut pending = txn.open_table(DELETED_PENDING).map_err(ie)?;
    let mut n = 0;
    for (id, raw) in rows {
        let dir = PathBuf::from(std::ffi::OsStr::from_bytes(&raw));
        if mboxes.get(id).map_err(ie)?.is_none() {
            match files::set_aside_mailbox(&dir, now) {
                Ok(to) => {
                    tracing::info!(from = %dir.display(), to = %to.display(), "deleted mailbox's folder set aside");
                    n += 1;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    // Kept: tried again at the next expire.
                    tracing::warn!(path = %dir.display(), error = %e, "cannot set aside a deleted mailbox's folder");
                    continue;
                }
            }
        }
        pending.remove(id).map_err(ie)?;
    }
    Ok(n)
}

/// Raises a mailbox's floor to `floor`.
pub(super) fn set_floor(txn: &WriteTransaction, mailbox: MailboxId, floor: ModSeq) -> Result<()> {
    let mut t = txn.open_table(EXPUNGE_FLOOR).map_err(ie)?;
    let old = t.get(mailbox).map_err(ie)?.map_or(0, |v| v.value());
    if floor > old {
        t.insert(mailbox, floor).map_err(ie)?;
    }
    Ok(())
}

/// For a client at `since` below the floor: every UID below UIDNEXT not
/// present (the full answer of RFC 7162 3.2.5.2). None when the records
/// are complete from `since` on.
pub(super) fn vanished_if_trimmed(
    txn: &ReadTransaction,
    mailbox: MailboxId,
    since: ModSeq,
    rec: &MailboxRec,
) -> Result<Option<Vec<Uid>>> {
    let floor = txn
        .open_table(EXPUNGE_FLOOR)
        .map_err(ie)?
        .get(mailbox)
        .map_err(ie)?
        .map_or(0, |v| v.value());
    if since >= floor {
        return Ok(None);
    }
    let msgs = txn.open_table(MESSAGES).map_err(ie)?;
    let mut out = Vec::new();
    let mut next: Uid = 1;
    for item in msgs
        .range((mailbox, 0u32)..=(mailbox, u32::MAX))
        .map_err(ie)?
    {
        let uid = item.map_err(ie)?.0.value().1;
        out.extend(next..uid);
        next = uid.saturating_add(1);
    }
    out.extend(next..rec.uidnext.max(next));
    Ok(Some(out))
}

/// `*` any run of characters, `?` one; otherwise exact (ASCII case folded
/// for the `INBOX` part of mailbox names, as IMAP does).
pub fn glob(pattern: &str, s: &str) -> bool {
    fn go(p: &[char], s: &[char]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some(('*', rest)) => (0..=s.len()).any(|i| go(rest, &s[i..])),
            Some(('?', rest)) => !s.is_empty() && go(rest, &s[1..]),
            Some((c, rest)) => s.first() == Some(c) && go(rest, &s[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = s.chars().collect();
    go(&p, &s)
}

fn mailbox_matches(pattern: &str, name: &str) -> bool {
    let p = normalize_name(pattern).unwrap_or_else(|_| pattern.to_string());
    glob(&p, name)
}

/// Does a message meet every condition of `rule` at `now`?
pub fn rule_applies(rule: &ExpireRule, meta: &MessageMeta, now: i64) -> bool {
    if !rule.has_condition() {
        return false;
    }
    if let Some(days) = rule.max_age_days {
        let age = now.saturating_sub(meta.save_date);
        if age < 0 || (age as u64) < days.saturating_mul(86400) {
            return false;
        }
    }
    if let Some(max) = rule.max_size {
        if meta.size <= max {
            return false;
        }
    }
    rule.flags.iter().all(|f| {
        let bit = match f.trim_start_matches('\\').to_ascii_lowercase().as_str() {
            "seen" => Some(Flags::SEEN),
            "answered" => Some(Flags::ANSWERED),
            "flagged" => Some(Flags::FLAGGED),
            "deleted" => Some(Flags::DELETED),
            "draft" => Some(Flags::DRAFT),
            _ => None,
        };
        match bit {
            Some(b) => meta.flags.has(b),
            None => meta.flags.has_keyword(f),
        }
    })
}

/// Messages of one mailbox that rules remove.
#[derive(Debug, Clone, Default)]
pub struct Expiring {
    pub mailbox: MailboxId,
    pub name: String,
    /// (uid, size, index of the first rule that applies).
    pub messages: Vec<(Uid, u64, usize)>,
}

impl Inner {
    /// Partitions: (name, folder), by name.
    pub fn partition_folders(&self) -> Vec<(String, PathBuf)> {
        let mut v: Vec<(String, PathBuf)> = self
            .partitions
            .iter()
            .map(|(n, p)| (n.clone(), p.clone()))
            .collect();
        v.sort();
        v
    }

    /// Users of the index by partition name.
    pub async fn users_by_partition(&self) -> Result<BTreeMap<String, Vec<String>>> {
        self.read_txn(|txn| {
            let users = txn.open_table(USERS).map_err(ie)?;
            let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for item in users.iter().map_err(ie)? {
                let (k, v) = item.map_err(ie)?;
                let rec: UserRec = dec(v.value())?;
                out.entry(rec.partition)
                    .or_default()
                    .push(k.value().to_string());
            }
            Ok(out)
        })
        .await
    }

    /// What `rules` remove from `user`'s mailboxes at `now` (read only).
    pub async fn expire_candidates(
        &self,
        user: &str,
        rules: Vec<ExpireRule>,
        now: i64,
    ) -> Result<Vec<Expiring>> {
        let user = user.to_string();
        self.read_txn(move |txn| {
            let rules: Vec<(usize, &ExpireRule)> = rules
                .iter()
                .enumerate()
                .filter(|(_, r)| r.user.as_deref().is_none_or(|p| glob(p, &user)))
                .collect();
            if rules.is_empty() {
                return Ok(Vec::new());
            }
            let names = txn.open_table(NAMES).map_err(ie)?;
            let msgs = txn.open_table(MESSAGES).map_err(ie)?;
            let mut out = Vec::new();
            for item in names.range((user.as_str(), "")..).map_err(ie)? {
                let (k, v) = item.map_err(ie)?;
                let (u, name) = k.value();
                if u != user {
                    break;
                }
                let here: Vec<&(usize, &ExpireRule)> = rules
                    .iter()
                    .filter(|(_, r)| mailbox_matches(&r.mailbox, name))
                    .collect();
                if here.is_empty() {
                    continue;
                }
                let id = v.value();
                let mut e = Expiring {
                    mailbox: id,
                    name: name.to_string(),
                    messages: Vec::new(),
                };
                for m in msgs.range((id, 0u32)..=(id, u32::MAX)).map_err(ie)? {
                    let meta: MessageMeta = dec(m.map_err(ie)?.1.value())?;
                    if let Some((i, _)) = here.iter().find(|(_, r)| rule_applies(r, &meta, now)) {
                        e.messages.push((meta.uid, meta.size, *i));
                    }
                }
                if !e.messages.is_empty() {
                    out.push(e);
                }
            }
            Ok(out)
        })
        .await
    }

    /// Removes messages whatever their flags (expire), like an EXPUNGE:
    /// clients see them vanish, files are set aside. Returns (count,
    /// bytes) removed; UIDs gone meanwhile are skipped.
    pub async fn expire_remove(&self, mailbox: MailboxId, uids: Vec<Uid>) -> Result<(u64, u64)> {
        let (user, partition) = self.mailbox_owner(mailbox).await?;
        self.submit(move |txn, batch| {
            let mut rec = get_mailbox(txn, mailbox)?;
            let victims: Vec<MessageMeta> = {
                let msgs = txn.open_table(MESSAGES).map_err(ie)?;
                let mut v = Vec::new();
                for uid in &uids {
                    if let Some(x) = msgs.get((mailbox, *uid)).map_err(ie)? {
                        v.push(dec::<MessageMeta>(x.value())?);
                    }
                }
                v
            };
            if victims.is_empty() {
                return Ok((0, 0));
            }
            rec.highestmodseq += 1;
            let modseq = rec.highestmodseq;
            let dir = files::mailbox_dir(&partition, &user, mailbox);
            remove_messages(txn, batch, mailbox, &mut rec, &victims, modseq)?;
            for m in &victims {
                batch.unlink_after.push(files::message_file(&dir, m.uid));
            }
            let bytes: u64 = victims.iter().map(|m| m.size).sum();
            add_usage(txn, &user, -(bytes as i64), -(victims.len() as i64))?;
            put_mailbox(txn, mailbox, &rec)?;
            batch.notify.insert(mailbox, modseq);
            batch.users.insert(user.clone());
            Ok((victims.len() as u64, bytes))
        })
        .await
    }

    /// Mailboxes of `users` with more than `keep` expunge records:
    /// (mailbox, records).
    pub async fn expunged_counts(
        &self,
        users: Vec<String>,
        keep: u64,
    ) -> Result<Vec<(MailboxId, u64)>> {
        self.read_txn(move |txn| {
            let names = txn.open_table(NAMES).map_err(ie)?;
            let exp = txn.open_table(EXPUNGED).map_err(ie)?;
            let mut out = Vec::new();
            for user in &users {
                for item in names.range((user.as_str(), "")..).map_err(ie)? {
                    let (k, v) = item.map_err(ie)?;
                    if k.value().0 != user {
                        break;
                    }
                    let id = v.value();
                    let n = exp
                        .range((id, 0u64, 0u32)..=(id, u64::MAX, u32::MAX))
                        .map_err(ie)?
                        .count() as u64;
                    if n > keep {
                        out.push((id, n));
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    /// Removes the oldest expunge records of a mailbox beyond the newest
    /// `keep` (at most `TRIM_CHUNK` per call) and raises its floor.
    /// Returns how many were removed.
    pub async fn trim_expunged(&self, mailbox: MailboxId, keep: u64) -> Result<u64> {
        self.submit(move |txn, _batch| {
            let mut exp = txn.open_table(EXPUNGED).map_err(ie)?;
            let total = exp
                .range((mailbox, 0u64, 0u32)..=(mailbox, u64::MAX, u32::MAX))
                .map_err(ie)?
                .count() as u64;
            let excess = total.saturating_sub(keep).min(TRIM_CHUNK as u64) as usize;
            if excess == 0 {
                return Ok(0);
            }
            let old: Vec<(u64, u32)> = exp
                .range((mailbox, 0u64, 0u32)..=(mailbox, u64::MAX, u32::MAX))
                .map_err(ie)?
                .take(excess)
                .filter_map(|i| i.ok().map(|(k, _)| (k.value().1, k.value().2)))
                .collect();
            let floor = old.iter().map(|x| x.0).max().unwrap_or(0);
            for (m, u) in &old {
                exp.remove((mailbox, *m, *u)).map_err(ie)?;
            }
            drop(exp);
            set_floor(txn, mailbox, floor)?;
            Ok(old.len() as u64)
        })
        .await
    }

    /// Purges a partition's set-aside expunged files older than `grace`
    /// and records in each mailbox's record file the highest UID purged.
    pub async fn purge_expunged(
        &self,
        partition: &str,
        now: i64,
        grace: u64,
    ) -> Result<(u64, u64)> {
        let folder = self.partition_path(partition)?;
        // Deleted mailboxes' folders a crash left in place go aside first.
        self.submit(move |txn, _batch| finish_deleted(txn, now))
            .await?;
        let f = folder.clone();
        let purged = tokio::task::spawn_blocking(move || files::purge_expunged(&f, now, grace))
            .await
            .map_err(ie)?
            .map_err(ie)?;
        let (n, bytes) = (purged.files, purged.bytes);
        if purged.max_uids.is_empty() {
            return Ok((n, bytes));
        }
        // Through the writer: the record files are also written there
        // (create, rename), never by two hands at once.
        self.submit(move |_txn, batch| {
            for (rel, uid) in purged.max_uids {
                let dir = folder.join(rel);
                let Some(mut rec) = files::read_mailbox_file(&dir) else {
                    continue;
                };
                if rec.uidnext <= uid {
                    rec.uidnext = uid.saturating_add(1);
                    files::write_mailbox_file(&dir, &rec).map_err(ie)?;
                    batch.sync_dirs.insert(dir);
                }
            }
            Ok(())
        })
        .await?;
        Ok((n, bytes))
    }

    /// The expunge floor of a mailbox (tests, tools).
    pub async fn expunge_floor(&self, mailbox: MailboxId) -> Result<ModSeq> {
        self.read_txn(move |txn| {
            Ok(txn
                .open_table(EXPUNGE_FLOOR)
                .map_err(ie)?
                .get(mailbox)
                .map_err(ie)?
                .map_or(0, |v| v.value()))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::test_config;
    use crate::store::Store;
    use std::sync::Arc;

    fn msg(n: u32, flags: &[&str]) -> NewMessage {
        NewMessage {
            data: Arc::new(
                format!("Subject: {n}\r\n\r\n{}\r\n", "x".repeat(n as usize)).into_bytes(),
            ),
            flags: Flags::from_names(flags),
            internal_date: None,
        }
    }

    fn rule(mailbox: &str) -> ExpireRule {
        ExpireRule {
            mailbox: mailbox.into(),
            ..Default::default()
        }
    }

    #[test]
    fn glob_patterns() {
        assert!(glob("*", "anything/at all"));
        assert!(glob("Trash", "Trash"));
        assert!(!glob("Trash", "Trash/x"));
        assert!(glob("Archive/*", "Archive/2020"));
        assert!(glob("*@example.com", "a@example.com"));
        assert!(!glob("*@example.com", "a@example.org"));
        assert!(glob("J?nk", "Junk"));
        assert!(mailbox_matches("inbox", "INBOX"));
    }

    #[test]
    fn a_rule_removes_only_what_meets_all_its_conditions() {
        let now = 100 * 86400;
        let m = |size, days_ago: i64, flags: &[&str]| MessageMeta {
            uid: 1,
            flags: Flags::from_names(flags),
            internal_date: 0,
            tz_offset_min: 0,
            size,
            modseq: 1,
            offset: 0,
            save_date: now - days_ago * 86400,
        };
        let mut r = rule("*");
        assert!(
            !rule_applies(&r, &m(1, 1000, &[]), now),
            "no condition: nothing"
        );
        r.max_age_days = Some(30);
        assert!(rule_applies(&r, &m(1, 31, &[]), now));
        assert!(!rule_applies(&r, &m(1, 29, &[]), now));
        r.flags = vec!["seen".into()];
        assert!(!rule_applies(&r, &m(1, 31, &[]), now));
        assert!(rule_applies(&r, &m(1, 31, &["\\Seen"]), now));
        let mut big = rule("*");
        big.max_size = Some(100);
        assert!(rule_applies(&big, &m(101, 0, &[]), now));
        assert!(!rule_applies(&big, &m(100, 0, &[]), now));
        let mut kw = rule("*");
        kw.flags = vec!["$Junk".into(), "deleted".into()];
        assert!(rule_applies(&kw, &m(1, 0, &["$junk", "\\Deleted"]), now));
        assert!(!rule_applies(&kw, &m(1, 0, &["$junk"]), now));
    }

    /// Expire removes by rule, per mailbox pattern, whatever \Deleted says;
    /// other mailboxes and messages stay; usage follows.
    #[tokio::test]
    async fn expire_removes_by_rule_and_leaves_others() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&test_config(d.path())).unwrap();
        let q = Quota::default();
        let inbox = s.append("a@x", "INBOX", msg(500, &[]), q).await.unwrap();
        s.append("a@x", "INBOX", msg(5, &[]), q).await.unwrap();
        s.append("a@x", "Trash", msg(5, &["\\Seen"]), q)
            .await
            .unwrap();
        s.append("a@x", "Trash", msg(5, &[]), q).await.unwrap();
        let mut big = rule("INBOX");
        big.max_size = Some(400);
        let mut seen = rule("Trash");
        seen.flags = vec!["seen".into()];
        let c = s
            .expire_candidates("a@x", vec![big, seen], now())
            .await
            .unwrap();
        let got: Vec<(String, Vec<Uid>)> = c
            .iter()
            .map(|e| (e.name.clone(), e.messages.iter().map(|m| m.0).collect()))
            .collect();
        assert_eq!(
            got,
            vec![("INBOX".into(), vec![1]), ("Trash".into(), vec![1])]
        );
        for e in &c {
            let uids = e.messages.iter().map(|m| m.0).collect();
            assert_eq!(s.expire_remove(e.mailbox, uids).await.unwrap().0, 1);
        }
        assert_eq!(s.usage("a@x").await.unwrap().messages, 2);
        // Sessions learn it as an expunge.
        let ch = s.changes(inbox.mailbox, 1).await.unwrap();
        assert_eq!(ch.expunged, vec![1]);
    }

    /// RFC 7162 3.2.5.2 after trimming: a client within the kept window
    /// gets the exact VANISHED set, an older one every missing UID.
    #[tokio::test]
    async fn trimmed_expunge_records_keep_qresync_exact_within_the_window() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&test_config(d.path())).unwrap();
        let q = Quota::default();
        let mut id = 0;
        for i in 0..6 {
            id = s
                .append("a@x", "INBOX", msg(i, &[]), q)
                .await
                .unwrap()
                .mailbox;
        }
        let mut marks = Vec::new();
        for uid in 1..=4 {
            marks.push(s.mailbox_info(id).await.unwrap().highestmodseq);
            s.store_flags(
                id,
                vec![uid],
                FlagOp::Add,
                Flags::from_names(&["\\Deleted"]),
                None,
            )
            .await
            .unwrap();
            s.expunge(id, None).await.unwrap();
        }
        assert_eq!(
            s.expunged_counts(vec!["a@x".into()], 2)
                .await
                .unwrap()
                .len(),
            1
        );
        assert_eq!(s.trim_expunged(id, 2).await.unwrap(), 2);
        assert_eq!(s.trim_expunged(id, 2).await.unwrap(), 0);
        let floor = s.expunge_floor(id).await.unwrap();
        assert!(floor > 0);
        // Within the window (after the second expunge): exact.
        let c = s.changes(id, marks[2]).await.unwrap();
        assert_eq!(c.expunged, vec![3, 4]);
        let c = s.changes(id, floor).await.unwrap();
        assert_eq!(c.expunged, vec![3, 4]);
        // Before the trimmed point: every UID not present.
        let c = s.changes(id, marks[0]).await.unwrap();
        assert_eq!(c.expunged, vec![1, 2, 3, 4]);
        let c = s.changes(id, 1).await.unwrap();
        assert_eq!(c.expunged, vec![1, 2, 3, 4]);
    }

    fn reopen(cfg: &crate::config::Config) -> Store {
        // The old writer thread lets go of the database shortly after its
        // Store is dropped.
        for _ in 0..100 {
            if let Ok(s) = Store::open(cfg) {
                return s;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Store::open(cfg).unwrap()
    }

    #[tokio::test]
    async fn a_deleted_mailbox_is_set_aside_whole_and_purged_after_the_grace() {
        let d = tempfile::tempdir().unwrap();
        let cfg = test_config(d.path());
        let s = Store::open(&cfg).unwrap();
        let q = Quota::default();
        s.create_mailbox("a@x", "Work", None).await.unwrap();
        let mut work = 0;
        for i in 0..3 {
            work = s
                .append("a@x", "Work", msg(i, &[]), q)
                .await
                .unwrap()
                .mailbox;
        }
        let file = s.message_path(work, 1).unwrap();
        let folder = file.parent().unwrap().to_path_buf();
        let (_, partition) = s.partition_folders().into_iter().next().unwrap();
        s.delete_mailbox("a@x", "Work").await.unwrap();
        // Gone from the user's folder, kept whole aside: record file and
        // every message, as they were (an operator can move it back and
        // reconstruct).
        assert!(!folder.exists());
        let aside = files::list_deleted(&partition).unwrap();
        assert_eq!(aside.len(), 1);
        let (kept, _) = &aside[0];
        assert!(kept.join("1.msg").is_file() && kept.join("3.msg").is_file());
        let rec = files::read_mailbox_file(kept).unwrap();
        assert_eq!((rec.user.as_str(), rec.name.as_str()), ("a@x", "Work"));

        // A kill -9 between the commit and the move: the folder is still in
        // its place. The pending record makes the next open set it aside.
        std::fs::rename(kept, &folder).unwrap();
        drop(s);
        let s = reopen(&cfg);
        assert!(!folder.exists(), "set aside at open");
        assert_eq!(files::list_deleted(&partition).unwrap().len(), 1);
        // Within the grace, expire leaves it.
        let now = chrono::Utc::now().timestamp();
        s.purge_expunged("primary", now, 3600).await.unwrap();
        assert_eq!(
            files::list_deleted(&partition).unwrap().len(),
            1,
            "within the grace"
        );

        // After the grace, expire's purge removes it.
        let (n, bytes) = s.purge_expunged("primary", now + 3601, 3600).await.unwrap();
        assert_eq!(n, 3);
        assert!(bytes > 0);
        assert!(files::list_deleted(&partition).unwrap().is_empty());
        // The mailbox can be made again, with a new folder.
        s.create_mailbox("a@x", "Work", None).await.unwrap();
        s.append("a@x", "Work", msg(9, &[]), q).await.unwrap();
    }

    #[tokio::test]
    async fn a_pending_deletion_never_moves_a_mailbox_the_index_knows_again() {
        let d = tempfile::tempdir().unwrap();
        let cfg = test_config(d.path());
        let s = Store::open(&cfg).unwrap();
        let q = Quota::default();
        let inbox = s
            .append("a@x", "INBOX", msg(1, &[]), q)
            .await
            .unwrap()
            .mailbox;
        let folder = s
            .message_path(inbox, 1)
            .unwrap()
            .parent()
            .unwrap()
            .to_path_buf();
        // A stale pending record naming a live mailbox (e.g. one a
        // reconstruct brought back): dropped, the folder stays.
        let dir = folder.clone();
        s.inner
            .submit(move |txn, _| note_deleted(txn, inbox, &dir))
            .await
            .unwrap();
        s.purge_expunged("primary", chrono::Utc::now().timestamp(), 0)
            .await
            .unwrap();
        assert!(folder.join("1.msg").is_file());
        drop(s);
        let s = reopen(&cfg);
        assert_eq!(s.snapshot("a@x", "INBOX").await.unwrap().messages.len(), 1);
    }
}
