//! Backup and restore primitives of the store (issue 14, "Data safety";
//! also what `msgd user move` builds on).
//!
//! Read side:
//! - [`Inner::user_index`]: every mailbox of a user with its counters
//!   (UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ, special use, subscription),
//!   every message's index entry and the user's subscriptions, all from
//!   ONE read transaction: a consistent picture while deliveries go on.
//!   The files it names are immutable until expunged; a reader that finds
//!   one gone was racing an expunge and skips it.
//! - [`Inner::users`]: every user of the store.
//!
//! Write side: [`Inner::restore_mailbox`] puts messages back at the UIDs
//! they had, with their flags and internal dates, into a mailbox with the
//! UIDVALIDITY it had:
//! - the mailbox is created with the given UIDVALIDITY if absent (missing
//!   parents are created with fresh ones, like CREATE); an existing empty
//!   mailbox that never held a message (UIDNEXT 1, e.g. the default
//!   mailboxes of a user created by a delivery after a wipe) adopts it;
//!   an existing mailbox that was used with another UIDVALIDITY is refused
//!   with `UidValidityChanged` (the caller then appends with new UIDs);
//! - each message goes in at its UID if that UID is free: at or above
//!   UIDNEXT, or in a gap below it (a message expunged since, or never
//!   there); an occupied UID is never overwritten: the message is reported
//!   `present` and nothing is written for it;
//! - UIDNEXT becomes at least the given one (so UIDs a client once saw are
//!   never handed out again) and above every restored UID; HIGHESTMODSEQ
//!   becomes above both the current and the given one, and the restored
//!   messages carry that new modseq, so CONDSTORE/QRESYNC clients see them
//!   as changes; the JMAP journal records them (not as new deliveries);
//! - files are written under `tmp/` before the writer job, renamed into
//!   place inside it, and synced with their folders before the commit
//!   (group commit, like any append). Quota is not checked: an
//!   operator restores what the user had.
//!
//! Signatures here are kept stable for the move helper (branch `move`).

use std::path::PathBuf;
use std::sync::Arc;

use redb::{ReadableTable, WriteTransaction};

use super::*;

/// The mailbox a restore puts messages into, as the backup recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreMailbox {
    /// Target name (any prefix already applied).
    pub name: String,
    /// UIDVALIDITY to keep (non-zero).
    pub uidvalidity: u32,
    /// UIDNEXT at backup time: the restored mailbox's is at least this.
    pub uidnext: Uid,
    /// HIGHESTMODSEQ at backup time: the restored mailbox's ends above it.
    pub highestmodseq: ModSeq,
    /// Special use, applied when the mailbox is created.
    pub special_use: Option<SpecialUse>,
}

/// One message to put back at its UID.
#[derive(Debug, Clone)]
pub struct RestoreMessage {
    pub uid: Uid,
    pub flags: Flags,
    /// INTERNALDATE (unix seconds) and the zone offset in minutes.
    pub internal_date: i64,
    pub tz_offset_min: i16,
    /// The message bytes exactly as they are to be served.
    pub data: Arc<Vec<u8>>,
}

/// What a restore call did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restored {
    pub mailbox: MailboxId,
    pub uidvalidity: u32,
    /// The mailbox was created (or adopted the UIDVALIDITY) by this call.
    pub created: bool,
    /// UIDs written, ascending.
    pub inserted: Vec<Uid>,
    /// UIDs skipped because the mailbox already had a message there.
    pub present: Vec<Uid>,
}

/// One mailbox of a user's index (see [`UserIndex`]).
#[derive(Debug, Clone)]
pub struct MailboxIndex {
    pub info: MailboxInfo,
    /// Every message's index entry, UID order.
    pub messages: Vec<MessageMeta>,
    dir: PathBuf,
}

impl MailboxIndex {
    /// The file holding message `uid` (prelude, then the message at the
    /// entry's offset). Gone if the message was expunged since.
    pub fn message_file(&self, uid: Uid) -> PathBuf {
        files::message_file(&self.dir, uid)
    }
}

/// A user's mailboxes and messages from one read transaction.
#[derive(Debug, Clone)]
pub struct UserIndex {
    pub user: String,
    /// Partition name of the user.
    pub partition: String,
    /// Mailboxes sorted by name (parents before children).
    pub mailboxes: Vec<MailboxIndex>,
    /// Subscribed names (may name mailboxes that no longer exist).
    pub subscriptions: Vec<String>,
}

impl Inner {
    /// Every user of the store, sorted.
    pub async fn users(&self) -> Result<Vec<String>> {
        self.read_txn(|txn| {
            let users = txn.open_table(USERS).map_err(ie)?;
            let mut out = Vec::new();
            for item in users.iter().map_err(ie)? {
                let (k, _) = item.map_err(ie)?;
                out.push(k.value().to_string());
            }
            Ok(out)
        })
        .await
    }

    /// The whole index of `user` from one read transaction; None for a
    /// user the store does not know.
    pub async fn user_index(&self, user: &str) -> Result<Option<UserIndex>> {
        let user = user.to_string();
        let partitions = self.partitions.clone();
        self.read_txn(move |txn| {
            let users = txn.open_table(USERS).map_err(ie)?;
            let urec: UserRec = match users.get(user.as_str()).map_err(ie)? {
                Some(v) => dec(v.value())?,
                None => return Ok(None),
            };
            let part_path = partitions
                .get(&urec.partition)
                .cloned()
                .ok_or_else(|| ie(format!("unknown partition '{}'", urec.partition)))?;
            let names = txn.open_table(NAMES).map_err(ie)?;
            let mboxes = txn.open_table(MAILBOXES).map_err(ie)?;
            let subs = txn.open_table(SUBS).map_err(ie)?;
            let msgs = txn.open_table(MESSAGES).map_err(ie)?;
            let mut mailboxes = Vec::new();
            for item in names.range((user.as_str(), "")..).map_err(ie)? {
                let (k, v) = item.map_err(ie)?;
                let (u, name) = k.value();
                if u != user {
                    break;
                }
                let id = v.value();
                let Some(r) = mboxes.get(id).map_err(ie)? else {
                    continue;
                };
                let rec: MailboxRec = dec(r.value())?;
                let subscribed = subs.get((u, name)).map_err(ie)?.is_some();
                let mut messages = Vec::with_capacity(rec.exists as usize);
                for m in msgs.range((id, 0u32)..=(id, u32::MAX)).map_err(ie)? {
                    let (_, mv) = m.map_err(ie)?;
                    messages.push(dec::<MessageMeta>(mv.value())?);
                }
                mailboxes.push(MailboxIndex {
                    info: info(id, &rec, subscribed),
                    messages,
                    dir: files::mailbox_dir(&part_path, &user, id),
                });
            }
            let mut subscriptions = Vec::new();
            for item in subs.range((user.as_str(), "")..).map_err(ie)? {
                let (k, _) = item.map_err(ie)?;
                let (u, n) = k.value();
                if u != user {
                    break;
                }
                subscriptions.push(n.to_string());
            }
            Ok(Some(UserIndex {
                user,
                partition: urec.partition,
                mailboxes,
                subscriptions,
            }))
        })
        .await
    }

    /// Puts messages back at their UIDs (see the module doc). All of the
    /// call's messages or none are committed; callers send big mailboxes
    /// in chunks (each call holds its messages in memory).
    pub async fn restore_mailbox(
        self: &Arc<Self>,
        user: &str,
        mailbox: RestoreMailbox,
        messages: Vec<RestoreMessage>,
    ) -> Result<Restored> {
        let name = normalize_name(&mailbox.name)?;
        if mailbox.uidvalidity == 0 {
            return Err(StoreError::NotAllowed("UIDVALIDITY 0"));
        }
        if messages.iter().any(|m| m.uid == 0 || m.uid == u32::MAX) {
            return Err(StoreError::NotAllowed("UID out of range"));
        }
        self.ensure_user(user, None).await?;
        let me = self.clone();
        let u = user.to_string();
        let m = name.clone();
        let uv = mailbox.uidvalidity;
        // Stage the files of messages whose UID is free now (the writer
        // checks again); a restore run twice writes nothing the second time.
        let (partition, staged, mut present) = tokio::task::spawn_blocking(move || -> Result<_> {
            let txn = me.db.begin_read().map_err(ie)?;
            let partition = me
                .user_partition_sync(&txn, &u)?
                .ok_or(StoreError::Internal("user vanished".into()))?;
            let existing = match mailbox_by_name_r(&txn, &u, &m) {
                Ok((id, rec)) if rec.uidvalidity == uv => Some(id),
                _ => None,
            };
            let msgs = txn.open_table(MESSAGES).map_err(ie)?;
            let mut todo = Vec::with_capacity(messages.len());
            let mut present = Vec::new();
            for msg in messages {
                match existing {
                    Some(id) if msgs.get((id, msg.uid)).map_err(ie)?.is_some() => {
                        present.push(msg.uid)
                    }
                    _ => todo.push(msg),
                }
            }
            drop(msgs);
            drop(txn);
            if !todo.is_empty()
                && crate::fsutil::free_space(&partition).map_err(ie)? < me.min_free_disk
            {
                return Err(StoreError::DiskFull);
            }
            let mut staged = Vec::with_capacity(todo.len());
            for msg in todo {
                let prelude = Prelude {
                    u: u.clone(),
                    m: m.clone(),
                    f: msg.flags.names(),
                    d: msg.internal_date,
                    z: msg.tz_offset_min,
                    c: Some(crc32fast::hash(&msg.data)),
                };
                let tmp = files::write_tmp(&partition, &prelude, &msg.data).map_err(ie)?;
                let keys = threads::keys(&msg.data);
                staged.push((tmp, keys, msg));
            }
            Ok((partition, staged, present))
        })
        .await
        .map_err(ie)??;
        let user = user.to_string();
        let mut out = self
            .submit(move |txn, batch| {
                restore_job(txn, batch, &partition, &user, &name, &mailbox, staged)
            })
            .await?;
        present.append(&mut out.present);
        present.sort_unstable();
        out.present = present;
        Ok(out)
    }
}

type Staged = (files::TmpFile, threads::ThreadKeys, RestoreMessage);

fn restore_job(
    txn: &WriteTransaction,
    batch: &mut Batch,
    partition: &std::path::Path,
    user: &str,
    name: &str,
    want: &RestoreMailbox,
    mut staged: Vec<Staged>,
) -> Result<Restored> {
    // Validate before the first write: a refusal changes nothing.
    let existing = match name_id(txn, user, name)? {
        Some(id) => Some((id, get_mailbox(txn, id)?)),
        None => None,
    };
    if let Some((_, rec)) = &existing {
        if rec.uidvalidity != want.uidvalidity && (rec.exists > 0 || rec.uidnext > 1) {
            return Err(StoreError::UidValidityChanged);
        }
    }
    let (id, mut rec, created) = match existing {
        Some((id, mut rec)) => {
            let adopt = rec.uidvalidity != want.uidvalidity;
            if adopt {
                rec.uidvalidity = want.uidvalidity;
                batch
                    .journal
                    .record(user, journal::Kind::Mailbox, id, journal::Op::Updated);
            }
            (id, rec, adopt)
        }
        None => {
            // Missing parents get fresh UIDVALIDITYs, like CREATE.
            let mut prefix = String::new();
            for part in name.split(DELIMITER) {
                if !prefix.is_empty() {
                    prefix.push(DELIMITER);
                }
                prefix.push_str(part);
                if prefix != name && name_id(txn, user, &prefix)?.is_none() {
                    create_mailbox_rec(txn, batch, user, &prefix, None)?;
                }
            }
            let (id, mut rec) = create_mailbox_rec(txn, batch, user, name, want.special_use)?;
            rec.uidvalidity = want.uidvalidity;
            (id, rec, true)
        }
    };
    if created {
        // The mailbox's record file (reconstruct) names the restored
        // UIDVALIDITY, not the one the creation drew.
        super::reconstruct::record_mailbox(txn, batch, id, &rec, false)?;
        // A UIDVALIDITY handed out later must still never repeat one.
        let mut meta = txn.open_table(META).map_err(ie)?;
        let last = meta
            .get("last_uidvalidity")
            .map_err(ie)?
            .map(|v| v.value())
            .unwrap_or(0);
        meta.insert("last_uidvalidity", last.max(u64::from(want.uidvalidity)))
            .map_err(ie)?;
    }
    staged.sort_by_key(|s| s.2.uid);
    staged.dedup_by_key(|s| s.2.uid);
    let mut free = Vec::with_capacity(staged.len());
    let mut present = Vec::new();
    {
        let msgs = txn.open_table(MESSAGES).map_err(ie)?;
        for s in staged {
            if msgs.get((id, s.2.uid)).map_err(ie)?.is_some() {
                present.push(s.2.uid);
            } else {
                free.push(s);
            }
        }
    }
    let top = free.last().map(|s| s.2.uid.saturating_add(1)).unwrap_or(1);
    let uidnext = rec.uidnext.max(want.uidnext).max(top);
    let changed = created || !free.is_empty() || uidnext != rec.uidnext;
    rec.uidnext = uidnext;
    if changed {
        rec.highestmodseq = rec.highestmodseq.max(want.highestmodseq) + 1;
    }
    let modseq = rec.highestmodseq;
    let mut inserted = Vec::with_capacity(free.len());
    if !free.is_empty() {
        let dir = files::mailbox_dir(partition, user, id);
        let mut touched = Vec::new();
        files::create_dirs(&dir, &mut touched).map_err(ie)?;
        batch.sync_dirs.insert(dir.clone());
        let mut bytes = 0u64;
        for (mut tmp, keys, msg) in free {
            let meta = MessageMeta {
                uid: msg.uid,
                flags: msg.flags,
                internal_date: msg.internal_date,
                tz_offset_min: msg.tz_offset_min,
                size: msg.data.len() as u64,
                modseq,
                offset: tmp.offset,
                save_date: now(),
            };
            let dest = files::message_file(&dir, msg.uid);
            batch.place(&mut tmp, dest, &mut touched).map_err(ie)?;
            add_message(txn, id, &mut rec, &meta)?;
            let (email, thread) = extra::on_append(txn, id, msg.uid, user, &keys)?;
            journal::message_added(
                txn,
                &mut batch.journal,
                user,
                (id, msg.uid),
                email,
                thread,
                false,
            )?;
            bytes += meta.size;
            inserted.push(msg.uid);
        }
        batch.sync_dirs.extend(touched);
        add_usage(txn, user, bytes as i64, inserted.len() as i64)?;
    }
    if changed {
        put_mailbox(txn, id, &rec)?;
        batch.notify.insert(id, modseq);
        batch.users.insert(user.to_string());
    }
    Ok(Restored {
        mailbox: id,
        uidvalidity: rec.uidvalidity,
        created,
        inserted,
        present,
    })
}

#[cfg(test)]
mod tests {
    use crate::store::tests::test_config;
    use crate::store::*;

    fn rmsg(uid: Uid, body: &str, flags: &[&str]) -> RestoreMessage {
        RestoreMessage {
            uid,
            flags: Flags::from_names(flags),
            internal_date: 1_600_000_000 + i64::from(uid),
            tz_offset_min: 120,
            data: Arc::new(format!("Subject: r{uid}\r\n\r\n{body}\r\n").into_bytes()),
        }
    }

    fn rbox(name: &str, uidvalidity: u32, uidnext: Uid) -> RestoreMailbox {
        RestoreMailbox {
            name: name.into(),
            uidvalidity,
            uidnext,
            highestmodseq: 40,
            special_use: None,
        }
    }

    #[tokio::test]
    async fn restore_keeps_uids_uidvalidity_flags_dates_and_bytes() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&test_config(d.path())).unwrap();
        let msgs = vec![
            rmsg(3, "three", &["\\Seen"]),
            rmsg(7, "seven", &["\\Flagged", "$Work"]),
        ];
        let r = s
            .restore_mailbox("a@x", rbox("Archive/2020", 12345, 10), msgs.clone())
            .await
            .unwrap();
        assert!(r.created);
        assert_eq!(r.inserted, vec![3, 7]);
        assert!(r.present.is_empty());
        let snap = s.snapshot("a@x", "Archive/2020").await.unwrap();
        assert_eq!(snap.info.uidvalidity, 12345);
        assert_eq!(snap.info.uidnext, 10);
        assert!(snap.info.highestmodseq > 40);
        assert_eq!(snap.info.exists, 2);
        assert_eq!(snap.info.unseen, 1);
        for (m, want) in snap.messages.iter().zip(&msgs) {
            assert_eq!(m.uid, want.uid);
            assert_eq!(m.flags, want.flags);
            assert_eq!(m.internal_date, want.internal_date);
            assert_eq!(m.tz_offset_min, 120);
            assert_eq!(s.read(snap.info.id, m).await.unwrap(), *want.data);
        }
        // The parent exists (created like CREATE does).
        assert!(s.status("a@x", "Archive").await.is_ok());
        assert_eq!(s.usage("a@x").await.unwrap().messages, 2);
        // Survives a reopen (durable) and the next UID follows UIDNEXT.
        drop(s);
        // The old writer thread holds the database until it has exited.
        let mut tries = 0;
        let s = loop {
            match Store::open(&test_config(d.path())) {
                Ok(s) => break s,
                Err(_) if tries < 100 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => panic!("{e}"),
            }
        };
        let p = s
            .append(
                "a@x",
                "Archive/2020",
                NewMessage {
                    data: Arc::new(b"Subject: n\r\n\r\nx\r\n".to_vec()),
                    flags: Flags::default(),
                    internal_date: None,
                },
                Quota::default(),
            )
            .await
            .unwrap();
        assert_eq!((p.uidvalidity, p.uid), (12345, 10));
    }

    #[tokio::test]
    async fn restore_never_overwrites_and_twice_inserts_nothing() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&test_config(d.path())).unwrap();
        let msgs = vec![rmsg(1, "one", &[]), rmsg(2, "two", &[])];
        s.restore_mailbox("a@x", rbox("Box", 777, 3), msgs.clone())
            .await
            .unwrap();
        let snap1 = s.snapshot("a@x", "Box").await.unwrap();
        let r = s
            .restore_mailbox("a@x", rbox("Box", 777, 3), msgs)
            .await
            .unwrap();
        assert!(!r.created);
        assert!(r.inserted.is_empty());
        assert_eq!(r.present, vec![1, 2]);
        let snap2 = s.snapshot("a@x", "Box").await.unwrap();
        assert_eq!(snap2.info.exists, 2);
        assert_eq!(snap2.info.highestmodseq, snap1.info.highestmodseq);
        // Different bytes at an occupied UID: kept as it was.
        let r = s
            .restore_mailbox("a@x", rbox("Box", 777, 3), vec![rmsg(2, "other", &[])])
            .await
            .unwrap();
        assert_eq!(r.present, vec![2]);
        let m = &s.snapshot("a@x", "Box").await.unwrap().messages[1];
        let id = snap2.info.id;
        assert!(String::from_utf8(s.read(id, m).await.unwrap())
            .unwrap()
            .contains("two"));
        assert_eq!(s.usage("a@x").await.unwrap().messages, 2);
    }

    #[tokio::test]
    async fn restore_fills_gaps_and_raises_uidnext_and_modseq_for_watchers() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&test_config(d.path())).unwrap();
        s.restore_mailbox("a@x", rbox("Box", 9, 6), vec![rmsg(5, "five", &[])])
            .await
            .unwrap();
        let before = s.snapshot("a@x", "Box").await.unwrap().info;
        let w = s.watch(before.id);
        let r = s
            .restore_mailbox(
                "a@x",
                rbox("Box", 9, 6),
                vec![rmsg(2, "gap", &[]), rmsg(8, "above", &[])],
            )
            .await
            .unwrap();
        assert_eq!(r.inserted, vec![2, 8]);
        let snap = s.snapshot("a@x", "Box").await.unwrap();
        assert_eq!(snap.info.uidnext, 9);
        assert!(snap.info.highestmodseq > before.highestmodseq);
        let ch = s.changes(before.id, before.highestmodseq).await.unwrap();
        let uids: Vec<_> = ch.changed.iter().map(|m| m.uid).collect();
        assert_eq!(uids, vec![2, 8]);
        assert!(w.has_changed().unwrap());
        // The JMAP journal moved too.
        assert!(s.jmap_state("a@x", JmapKind::Email).await.unwrap() > 0);
    }

    #[tokio::test]
    async fn restore_adopts_the_uidvalidity_of_an_unused_mailbox_and_refuses_a_used_one() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&test_config(d.path())).unwrap();
        s.ensure_user("a@x", None).await.unwrap();
        // INBOX exists (default mailboxes) but never held a message.
        let r = s
            .restore_mailbox("a@x", rbox("INBOX", 4242, 2), vec![rmsg(1, "x", &[])])
            .await
            .unwrap();
        assert!(r.created);
        assert_eq!(s.status("a@x", "INBOX").await.unwrap().uidvalidity, 4242);
        // Sent was used (a message came and went): refused, nothing changed.
        let p = s
            .append(
                "a@x",
                "Sent",
                NewMessage {
                    data: Arc::new(b"Subject: s\r\n\r\ns\r\n".to_vec()),
                    flags: Flags::default(),
                    internal_date: None,
                },
                Quota::default(),
            )
            .await
            .unwrap();
        let e = s
            .restore_mailbox("a@x", rbox("Sent", 1, 2), vec![rmsg(1, "y", &[])])
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::UidValidityChanged));
        let st = s.status("a@x", "Sent").await.unwrap();
        assert_eq!((st.uidvalidity, st.exists), (p.uidvalidity, 1));
        // A mailbox created later never gets a restored UIDVALIDITY again.
        let big = s
            .restore_mailbox("a@x", rbox("Far", u32::MAX - 5, 1), vec![])
            .await
            .unwrap();
        assert_eq!(big.uidvalidity, u32::MAX - 5);
        let n = s.create_mailbox("a@x", "New", None).await.unwrap();
        assert_ne!(n.uidvalidity, u32::MAX - 5);
        assert!(n.uidvalidity > u32::MAX - 5);
    }

    #[tokio::test]
    async fn restore_refuses_bad_uids_and_uidvalidity_zero() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&test_config(d.path())).unwrap();
        for (uv, uid) in [(0, 1), (5, 0), (5, u32::MAX)] {
            assert!(s
                .restore_mailbox("a@x", rbox("B", uv, 1), vec![rmsg(uid, "z", &[])])
                .await
                .is_err());
        }
        assert!(s.status("a@x", "B").await.is_err());
    }

    #[tokio::test]
    async fn user_index_is_one_consistent_picture_with_file_paths() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&test_config(d.path())).unwrap();
        s.restore_mailbox("a@x", rbox("Box", 31, 4), vec![rmsg(3, "b", &["\\Seen"])])
            .await
            .unwrap();
        s.subscribe("a@x", "Box", true).await.unwrap();
        assert_eq!(s.users().await.unwrap(), vec!["a@x".to_string()]);
        assert!(s.user_index("nobody@x").await.unwrap().is_none());
        let idx = s.user_index("a@x").await.unwrap().unwrap();
        assert_eq!(idx.partition, "primary");
        assert!(idx.subscriptions.contains(&"Box".to_string()));
        let b = idx.mailboxes.iter().find(|m| m.info.name == "Box").unwrap();
        assert!(b.info.subscribed);
        assert_eq!((b.info.uidvalidity, b.info.uidnext), (31, 4));
        assert_eq!(b.messages.len(), 1);
        let f = b.message_file(3);
        assert_eq!(f, s.message_path(b.info.id, 3).unwrap());
        let raw = std::fs::read(&f).unwrap();
        let m = &b.messages[0];
        assert_eq!(
            &raw[m.offset as usize..],
            b"Subject: r3\r\n\r\nb\r\n".as_slice()
        );
    }
}
