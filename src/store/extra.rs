//! Index tables the IMAP extensions need, beside the core mboxlist:
//!
//! - object ids (RFC 8474 OBJECTID): (mailbox id, uid) -> (EMAILID,
//!   THREADID) numbers. An EMAILID is assigned once at append and carried
//!   along by COPY/MOVE, so it names the message content, not its place.
//!   Messages stored before this table existed get an id derived from
//!   their place, written down for good when they are first copied.
//! - message summaries: (mailbox id, uid) -> opaque bytes the IMAP layer
//!   computes once (ENVELOPE, BODYSTRUCTURE, sort keys) instead of parsing
//!   the file on every FETCH. A cache: losing it loses nothing.
//! - previews (RFC 8970): (mailbox id, uid) -> the PREVIEW text, a cache
//!   with the same life as the summaries.
//! - access control lists (RFC 4314): (mailbox id, identifier) -> rights,
//!   and the reverse index (identifier, mailbox id) to find the mailboxes
//!   shared with a user.
//!
//! The hooks (`on_*`) run inside the writer's transaction of the job that
//! adds or removes messages, so these tables never disagree with MESSAGES.

use redb::{ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};

use super::files;
use super::*;

/// (mailbox id, uid) -> (email id, thread id; 0: none).
const OBJECTS: TableDefinition<(u64, u32), (u64, u64)> = TableDefinition::new("object_ids");
/// (mailbox id, uid) -> summary bytes (the IMAP layer's format).
pub(super) const SUMMARIES: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("summaries");
/// (mailbox id, uid) -> PREVIEW text (RFC 8970; the IMAP layer's).
const PREVIEWS: TableDefinition<(u64, u32), &str> = TableDefinition::new("previews");
/// A per-message cache table: (mailbox id, uid) -> a value the IMAP layer
/// computes once (summaries, previews).
type CacheTable<V> = TableDefinition<'static, (u64, u32), V>;

/// The value of a cache table and its owned form (what callers hold).
trait CacheValue: redb::Value + 'static {
    type Owned: Send + 'static;
    fn to_owned(v: Self::SelfType<'_>) -> Self::Owned;
    fn borrow(o: &Self::Owned) -> Self::SelfType<'_>;
}

impl CacheValue for &'static [u8] {
    type Owned = Vec<u8>;
    fn to_owned(v: &[u8]) -> Vec<u8> {
        v.to_vec()
    }
    fn borrow(o: &Vec<u8>) -> &[u8] {
        o
    }
}

impl CacheValue for &'static str {
    type Owned = String;
    fn to_owned(v: &str) -> String {
        v.to_string()
    }
    fn borrow(o: &String) -> &str {
        o
    }
}

/// Rows of a per-message cache table, in the order of `uids` (None: not
/// cached).
fn cached<V: CacheValue>(
    txn: &ReadTransaction,
    table: CacheTable<V>,
    mailbox: MailboxId,
    uids: &[Uid],
) -> Result<Vec<Option<V::Owned>>> {
    let t = txn.open_table(table).map_err(ie)?;
    let mut out = Vec::with_capacity(uids.len());
    for &uid in uids {
        out.push(
            t.get((mailbox, uid))
                .map_err(ie)?
                .map(|v| V::to_owned(v.value())),
        );
    }
    Ok(out)
}

/// Stores rows of a per-message cache table for messages that still exist
/// (one expunged meanwhile gets none: the hooks removed its rows).
fn put_cached<V: CacheValue>(
    txn: &WriteTransaction,
    table: CacheTable<V>,
    mailbox: MailboxId,
    items: Vec<(Uid, V::Owned)>,
) -> Result<()> {
    let msgs = txn.open_table(MESSAGES).map_err(ie)?;
    let mut t = txn.open_table(table).map_err(ie)?;
    for (uid, value) in items {
        if msgs.get((mailbox, uid)).map_err(ie)?.is_some() {
            t.insert((mailbox, uid), V::borrow(&value)).map_err(ie)?;
        }
    }
    Ok(())
}

/// Removes a mailbox's rows from a (mailbox id, uid) table.
fn remove_mailbox_rows<V: redb::Value + 'static>(
    txn: &WriteTransaction,
    table: TableDefinition<'static, (u64, u32), V>,
    mailbox: MailboxId,
) -> Result<()> {
    let mut t = txn.open_table(table).map_err(ie)?;
    let keys: Vec<(u64, u32)> = t
        .range((mailbox, 0u32)..=(mailbox, u32::MAX))
        .map_err(ie)?
        .filter_map(|i| i.ok().map(|(k, _)| k.value()))
        .collect();
    for k in keys {
        t.remove(k).map_err(ie)?;
    }
    Ok(())
}

/// (mailbox id, identifier) -> rights letters.
const ACL: TableDefinition<(u64, &str), &str> = TableDefinition::new("acl");
/// (identifier, mailbox id): the reverse of ACL.
const ACL_BY_ID: TableDefinition<(&str, u64), u8> = TableDefinition::new("acl_by_identifier");

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(OBJECTS).map_err(ie)?;
    txn.open_table(SUMMARIES).map_err(ie)?;
    txn.open_table(PREVIEWS).map_err(ie)?;
    txn.open_table(ACL).map_err(ie)?;
    txn.open_table(ACL_BY_ID).map_err(ie)?;
    Ok(())
}

/// The email id of a message stored before ids were assigned: derived from
/// its place (stable until it is copied; the copy records it).
fn legacy_email_id(mailbox: MailboxId, uid: Uid) -> u64 {
    (1 << 63) | (mailbox << 32) | u64::from(uid)
}

fn next_email_id(txn: &WriteTransaction) -> Result<u64> {
    let mut meta = txn.open_table(META).map_err(ie)?;
    let id = meta
        .get("next_email_id")
        .map_err(ie)?
        .map(|v| v.value())
        .unwrap_or(1);
    meta.insert("next_email_id", id + 1).map_err(ie)?;
    Ok(id)
}

/// A new message of `user`: it gets a fresh email id and its thread
/// (`threads.rs`). Returns them, as `object_ids` would.
pub(super) fn on_append(
    txn: &WriteTransaction,
    mailbox: MailboxId,
    uid: Uid,
    user: &str,
    keys: &super::threads::ThreadKeys,
) -> Result<(u64, u64)> {
    let id = next_email_id(txn)?;
    let thread = super::threads::assign(txn, user, keys, id)?;
    txn.open_table(OBJECTS)
        .map_err(ie)?
        .insert((mailbox, uid), (id, thread))
        .map_err(ie)?;
    Ok((id, thread))
}

/// The (email id, thread id) of a message (thread 0: not assigned yet).
pub(super) fn object_ids(
    txn: &WriteTransaction,
    mailbox: MailboxId,
    uid: Uid,
) -> Result<(u64, u64)> {
    let t = txn.open_table(OBJECTS).map_err(ie)?;
    let v = t.get((mailbox, uid)).map_err(ie)?.map(|v| v.value());
    Ok(v.unwrap_or((legacy_email_id(mailbox, uid), 0)))
}

/// A copy keeps the source's ids.
pub(super) fn on_copy(
    txn: &WriteTransaction,
    from: (MailboxId, Uid),
    to: (MailboxId, Uid),
) -> Result<()> {
    let mut t = txn.open_table(OBJECTS).map_err(ie)?;
    let ids = t
        .get(from)
        .map_err(ie)?
        .map(|v| v.value())
        .unwrap_or((legacy_email_id(from.0, from.1), 0));
    t.insert(to, ids).map_err(ie)?;
    Ok(())
}

/// A message leaves its mailbox (expunge, move).
pub(super) fn on_remove(txn: &WriteTransaction, mailbox: MailboxId, uid: Uid) -> Result<()> {
    txn.open_table(OBJECTS)
        .map_err(ie)?
        .remove((mailbox, uid))
        .map_err(ie)?;
    txn.open_table(SUMMARIES)
        .map_err(ie)?
        .remove((mailbox, uid))
        .map_err(ie)?;
    txn.open_table(PREVIEWS)
        .map_err(ie)?
        .remove((mailbox, uid))
        .map_err(ie)?;
    Ok(())
}

/// A mailbox's messages are re-indexed (reconstruct): their per-message
/// rows go; its ACL stays.
pub(super) fn clear_messages(txn: &WriteTransaction, mailbox: MailboxId) -> Result<()> {
    remove_mailbox_rows(txn, OBJECTS, mailbox)?;
    remove_mailbox_rows(txn, PREVIEWS, mailbox)?;
    remove_mailbox_rows(txn, SUMMARIES, mailbox)
}

/// A mailbox is deleted: its rows go.
pub(super) fn on_delete_mailbox(txn: &WriteTransaction, mailbox: MailboxId) -> Result<()> {
    remove_mailbox_rows(txn, OBJECTS, mailbox)?;
    remove_mailbox_rows(txn, PREVIEWS, mailbox)?;
    remove_mailbox_rows(txn, SUMMARIES, mailbox)?;
    let ids: Vec<String> = {
        let t = txn.open_table(ACL).map_err(ie)?;
        let mut r = Vec::new();
        for item in t.range((mailbox, "")..).map_err(ie)? {
            let (k, _) = item.map_err(ie)?;
            let (m, id) = k.value();
            if m != mailbox {
                break;
            }
            r.push(id.to_string());
        }
        r
    };
    let mut acl = txn.open_table(ACL).map_err(ie)?;
    let mut rev = txn.open_table(ACL_BY_ID).map_err(ie)?;
    for id in ids {
        acl.remove((mailbox, id.as_str())).map_err(ie)?;
        rev.remove((id.as_str(), mailbox)).map_err(ie)?;
    }
    Ok(())
}

fn email_ids_sync(txn: &ReadTransaction, mailbox: MailboxId, uids: &[Uid]) -> Result<Vec<u64>> {
    let t = txn.open_table(OBJECTS).map_err(ie)?;
    let mut out = Vec::with_capacity(uids.len());
    for &uid in uids {
        out.push(match t.get((mailbox, uid)).map_err(ie)? {
            Some(v) => v.value().0,
            None => legacy_email_id(mailbox, uid),
        });
    }
    Ok(out)
}

/// Rights of one identifier on one mailbox, as stored.
fn rights_sync(txn: &ReadTransaction, mailbox: MailboxId, id: &str) -> Result<Option<String>> {
    let t = txn.open_table(ACL).map_err(ie)?;
    let r = t
        .get((mailbox, id))
        .map_err(ie)?
        .map(|v| v.value().to_string());
    Ok(r)
}

impl Inner {
    /// EMAILIDs (RFC 8474) of messages, in the order of `uids`.
    pub async fn email_ids(&self, mailbox: MailboxId, uids: Vec<Uid>) -> Result<Vec<u64>> {
        self.read_txn(move |txn| email_ids_sync(txn, mailbox, &uids))
            .await
    }

    /// THREADIDs (RFC 8474 5.2) of messages, in the order of `uids` (0: the
    /// message is gone). Messages stored before the thread index get their
    /// thread now, from their header, and keep it (`threads.rs`).
    pub async fn thread_ids(&self, mailbox: MailboxId, uids: Vec<Uid>) -> Result<Vec<u64>> {
        // (position, uid, file offset, size) of messages without a thread.
        let (mut out, missing) = self
            .read_txn(move |txn| {
                let t = txn.open_table(OBJECTS).map_err(ie)?;
                let msgs = txn.open_table(MESSAGES).map_err(ie)?;
                let mut out = Vec::with_capacity(uids.len());
                let mut missing = Vec::new();
                for (pos, &uid) in uids.iter().enumerate() {
                    let thread = t
                        .get((mailbox, uid))
                        .map_err(ie)?
                        .map_or(0, |v| v.value().1);
                    if thread == 0 {
                        if let Some(m) = msgs.get((mailbox, uid)).map_err(ie)? {
                            let m: MessageMeta = dec(m.value())?;
                            missing.push((pos, uid, m.offset, m.size));
                        }
                    }
                    out.push(thread);
                }
                Ok((out, missing))
            })
            .await?;
        if missing.is_empty() {
            return Ok(out);
        }
        let (user, partition) = self.mailbox_owner(mailbox).await?;
        for chunk in missing.chunks(256) {
            let chunk = chunk.to_vec();
            let dir = files::mailbox_dir(&partition, &user, mailbox);
            let keyed = tokio::task::spawn_blocking(move || {
                chunk
                    .into_iter()
                    .map(|(pos, uid, offset, size)| {
                        let path = files::message_file(&dir, uid);
                        (pos, uid, super::threads::keys_of_file(&path, offset, size))
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .map_err(ie)?;
            let owner = user.clone();
            let got = self
                .submit(move |txn, _batch| {
                    let mut got = Vec::with_capacity(keyed.len());
                    for (pos, uid, keys) in keyed {
                        let known = {
                            let msgs = txn.open_table(MESSAGES).map_err(ie)?;
                            if msgs.get((mailbox, uid)).map_err(ie)?.is_none() {
                                continue;
                            }
                            let t = txn.open_table(OBJECTS).map_err(ie)?;
                            let v = t.get((mailbox, uid)).map_err(ie)?.map(|v| v.value());
                            v
                        };
                        let (email, thread) = known.unwrap_or((legacy_email_id(mailbox, uid), 0));
                        let thread = if thread != 0 {
                            thread
                        } else {
                            let thread = super::threads::assign(txn, &owner, &keys, email)?;
                            txn.open_table(OBJECTS)
                                .map_err(ie)?
                                .insert((mailbox, uid), (email, thread))
                                .map_err(ie)?;
                            thread
                        };
                        got.push((pos, thread));
                    }
                    Ok(got)
                })
                .await?;
            for (pos, thread) in got {
                if let Some(slot) = out.get_mut(pos) {
                    *slot = thread;
                }
            }
        }
        Ok(out)
    }

    /// Test aid: makes messages look stored before the thread index
    /// (thread id 0), as an old database has them.
    #[cfg(test)]
    pub async fn forget_thread_ids(&self, mailbox: MailboxId) -> Result<()> {
        self.submit(move |txn, _batch| {
            let mut t = txn.open_table(OBJECTS).map_err(ie)?;
            let rows: Vec<((u64, u32), u64)> = t
                .range((mailbox, 0u32)..=(mailbox, u32::MAX))
                .map_err(ie)?
                .filter_map(|i| i.ok().map(|(k, v)| (k.value(), v.value().0)))
                .collect();
            for (k, email) in rows {
                t.insert(k, (email, 0)).map_err(ie)?;
            }
            Ok(())
        })
        .await
    }

    /// Cached summaries, in the order of `uids` (None: not cached yet).
    pub async fn summaries(
        &self,
        mailbox: MailboxId,
        uids: Vec<Uid>,
    ) -> Result<Vec<Option<Vec<u8>>>> {
        self.read_txn(move |txn| cached(txn, SUMMARIES, mailbox, &uids))
            .await
    }

    /// Stores summaries of messages that still exist.
    pub async fn put_summaries(
        &self,
        mailbox: MailboxId,
        items: Vec<(Uid, Vec<u8>)>,
    ) -> Result<()> {
        self.submit(move |txn, _batch| put_cached(txn, SUMMARIES, mailbox, items))
            .await
    }

    /// Cached PREVIEW texts, in the order of `uids` (None: not cached).
    pub async fn previews(
        &self,
        mailbox: MailboxId,
        uids: Vec<Uid>,
    ) -> Result<Vec<Option<String>>> {
        self.read_txn(move |txn| cached(txn, PREVIEWS, mailbox, &uids))
            .await
    }

    /// Stores PREVIEW texts of messages that still exist.
    pub async fn put_previews(&self, mailbox: MailboxId, items: Vec<(Uid, String)>) -> Result<()> {
        self.submit(move |txn, _batch| put_cached(txn, PREVIEWS, mailbox, items))
            .await
    }

    /// A mailbox by id.
    pub async fn mailbox_info(&self, mailbox: MailboxId) -> Result<MailboxInfo> {
        self.read_txn(move |txn| {
            let mboxes = txn.open_table(MAILBOXES).map_err(ie)?;
            let rec: MailboxRec = match mboxes.get(mailbox).map_err(ie)? {
                Some(v) => dec(v.value())?,
                None => return Err(StoreError::NoSuchMailbox),
            };
            Ok(info(mailbox, &rec, false))
        })
        .await
    }

    /// The access control list of a mailbox: (identifier, rights).
    pub async fn acl(&self, mailbox: MailboxId) -> Result<Vec<(String, String)>> {
        self.read_txn(move |txn| {
            let t = txn.open_table(ACL).map_err(ie)?;
            let mut out = Vec::new();
            for item in t.range((mailbox, "")..).map_err(ie)? {
                let (k, v) = item.map_err(ie)?;
                let (m, id) = k.value();
                if m != mailbox {
                    break;
                }
                out.push((id.to_string(), v.value().to_string()));
            }
            Ok(out)
        })
        .await
    }

    /// Stored rights of `identifier` on a mailbox.
    pub async fn rights(&self, mailbox: MailboxId, identifier: &str) -> Result<Option<String>> {
        let id = identifier.to_string();
        self.read_txn(move |txn| rights_sync(txn, mailbox, &id))
            .await
    }

    /// Sets (`Some`) or removes (`None`) the rights of an identifier.
    pub async fn set_acl(
        &self,
        mailbox: MailboxId,
        identifier: &str,
        rights: Option<String>,
    ) -> Result<()> {
        let id = identifier.to_string();
        self.submit(move |txn, batch| {
            get_mailbox(txn, mailbox)?;
            let mut acl = txn.open_table(ACL).map_err(ie)?;
            let mut rev = txn.open_table(ACL_BY_ID).map_err(ie)?;
            match rights.filter(|r| !r.is_empty()) {
                Some(r) => {
                    acl.insert((mailbox, id.as_str()), r.as_str()).map_err(ie)?;
                    rev.insert((id.as_str(), mailbox), 1).map_err(ie)?;
                }
                None => {
                    acl.remove((mailbox, id.as_str())).map_err(ie)?;
                    rev.remove((id.as_str(), mailbox)).map_err(ie)?;
                }
            }
            // Sessions with the mailbox selected look again.
            batch.notify.entry(mailbox).or_insert(0);
            Ok(())
        })
        .await
    }

    /// Mailboxes of other users on which any of `identifiers` has rights:
    /// (mailbox, identifier, rights).
    pub async fn shared_with(
        &self,
        identifiers: Vec<String>,
    ) -> Result<Vec<(MailboxInfo, String, String)>> {
        self.read_txn(move |txn| {
            let rev = txn.open_table(ACL_BY_ID).map_err(ie)?;
            let mboxes = txn.open_table(MAILBOXES).map_err(ie)?;
            let mut out = Vec::new();
            for ident in &identifiers {
                for item in rev.range((ident.as_str(), 0u64)..).map_err(ie)? {
                    let (k, _) = item.map_err(ie)?;
                    let (i, mailbox) = k.value();
                    if i != ident {
                        break;
                    }
                    let Some(v) = mboxes.get(mailbox).map_err(ie)? else {
                        continue;
                    };
                    let rec: MailboxRec = dec(v.value())?;
                    if let Some(r) = rights_sync(txn, mailbox, ident)? {
                        out.push((info(mailbox, &rec, false), ident.clone(), r));
                    }
                }
            }
            Ok(out)
        })
        .await
    }
}
