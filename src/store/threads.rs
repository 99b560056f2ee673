//! The thread index behind THREADID (RFC 8474 section 5), per user.
//!
//! Tables: `thread_msgids` ((user, Message-ID) -> thread id) and
//! `thread_subjects` ((user, base subject) -> thread id of the latest
//! message with that base subject). A message gets its thread in the
//! writer's transaction that stores it (append and delivery alike), and
//! keeps it for good: COPY/MOVE carry it along with the EMAILID
//! (`extra::on_copy`).
//!
//! Rules (the Dovecot/Cyrus/Stalwart habit: a reply joins the thread of the
//! message it replies to):
//! 1. The message's own Message-ID, then In-Reply-To, then References from
//!    the nearest ancestor back (at most `header::MAX_REFERENCES` of them,
//!    the cap THREAD uses): the first id the index knows gives the thread.
//!    The own id is looked at first because a reply that arrived before its
//!    parent registered the parent's id (rule 4), and a second copy of the
//!    same message (Sent + delivery) belongs with the first.
//! 2. Failing that, a message whose Subject had reply/forward markers
//!    (`Re:`, `Fwd:`, `[..]`, `(fwd)`; RFC 5256 2.1) joins the latest thread
//!    with the same base subject: clients that drop References still thread.
//!    Two unrelated messages that merely share a subject ("Hello") do not.
//! 3. Otherwise the message starts a thread whose id is its own EMAILID.
//! 4. The message's own id and every id it names are recorded for its
//!    thread unless already known; its base subject points at its thread.
//!
//! Threads never merge: a message naming ids of two threads joins the one
//! rule 1 finds first, and no message already stored changes its THREADID
//! (clients cache it like an EMAILID, and a merge would rewrite an
//! unbounded number of rows in one transaction). Ids and subjects are cut to `MAX_KEY` bytes; each message adds at
//! most `MAX_REFERENCES + 3` rows, so the index grows with the mail stored,
//! never with what a header claims. Rows outlive expunges (like Cyrus's
//! conversations database) so a late reply still finds its thread.
//!
//! Messages stored before this index existed have thread id 0 in
//! `object_ids`; they get their thread lazily, at the first FETCH or SEARCH
//! THREADID that needs it (`Inner::thread_ids`), from their header only.

use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use redb::{ReadableTable, TableDefinition, WriteTransaction};

use super::*;
use crate::header as mime;
use crate::header::{base_subject, msg_ids, MAX_REFERENCES};

/// (user, Message-ID) -> thread id.
const THREAD_IDS: TableDefinition<(&str, &str), u64> = TableDefinition::new("thread_msgids");
/// (user, base subject) -> thread id of the latest message with it.
const THREAD_SUBJECTS: TableDefinition<(&str, &str), u64> = TableDefinition::new("thread_subjects");

/// Longest Message-ID or subject kept as a key, in bytes.
pub(super) const MAX_KEY: usize = 256;
/// Most header bytes read to thread a message stored before the index.
const MAX_HEADER_READ: u64 = 256 * 1024;

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(THREAD_IDS).map_err(ie)?;
    txn.open_table(THREAD_SUBJECTS).map_err(ie)?;
    Ok(())
}

/// Forgets `user`'s thread keys (reconstruct assigns threads anew).
pub(super) fn reset_user(txn: &WriteTransaction, user: &str) -> Result<()> {
    for table in [THREAD_IDS, THREAD_SUBJECTS] {
        let mut t = txn.open_table(table).map_err(ie)?;
        let keys: Vec<String> = t
            .range((user, "")..)
            .map_err(ie)?
            .filter_map(|i| i.ok())
            .take_while(|(k, _)| k.value().0 == user)
            .map(|(k, _)| k.value().1.to_string())
            .collect();
        for k in keys {
            t.remove((user, k.as_str())).map_err(ie)?;
        }
    }
    Ok(())
}

/// What threading looks at in a message's header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ThreadKeys {
    /// Message-ID without brackets; empty when missing.
    pub message_id: String,
    /// In-Reply-To, then References nearest first; capped.
    pub parents: Vec<String>,
    /// Base subject (RFC 5256 2.1), lowercased.
    pub subject: String,
    /// Did the Subject carry reply/forward markers?
    pub is_reply: bool,
}

/// Thread keys of a message (header only). A parser panic (a bug) gives
/// empty keys: the message starts its own thread rather than failing.
pub fn keys(msg: &[u8]) -> ThreadKeys {
    catch_unwind(AssertUnwindSafe(|| keys_inner(msg))).unwrap_or_default()
}

fn keys_inner(msg: &[u8]) -> ThreadKeys {
    let header = msg.get(..mime::header_end(msg)).unwrap_or_default();
    let fields = mime::fields(header);
    let field = |name: &[u8]| mime::first_field(&fields, name);
    let message_id = field(b"Message-ID")
        .and_then(|v| msg_ids(v).into_iter().next())
        .unwrap_or_default();
    let mut parents: Vec<String> = field(b"In-Reply-To")
        .map(msg_ids)
        .unwrap_or_default()
        .into_iter()
        .take(1)
        .collect();
    let mut refs = field(b"References").map(msg_ids).unwrap_or_default();
    refs.drain(..refs.len().saturating_sub(MAX_REFERENCES));
    parents.extend(refs.into_iter().rev());
    let mut seen = std::collections::HashSet::new();
    parents.retain(|p| *p != message_id && seen.insert(p.clone()));
    let raw_subject = field(b"Subject")
        .map(mime::decode_header_value)
        .unwrap_or_default();
    let (subject, is_reply) = base_subject(&raw_subject);
    ThreadKeys {
        message_id: cut(&message_id).to_string(),
        parents: parents.iter().map(|p| cut(p).to_string()).collect(),
        subject: cut(&subject).to_string(),
        is_reply,
    }
}

/// Keys of a stored message from the first bytes of its file.
pub(super) fn keys_of_file(path: &Path, offset: u32, size: u64) -> ThreadKeys {
    let read = || -> std::io::Result<Vec<u8>> {
        let mut f = std::fs::File::open(path)?;
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(u64::from(offset)))?;
        let mut buf = Vec::new();
        f.take(size.min(MAX_HEADER_READ)).read_to_end(&mut buf)?;
        Ok(buf)
    };
    read().map(|b| keys(&b)).unwrap_or_default()
}

/// `s` cut to at most `MAX_KEY` bytes at a character boundary.
fn cut(s: &str) -> &str {
    let mut end = s.len().min(MAX_KEY);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

/// Picks the thread of a new message of `user` (rules 1-3 above) and
/// records its keys (rule 4). `own` is the id a new thread gets.
pub(super) fn assign(txn: &WriteTransaction, user: &str, k: &ThreadKeys, own: u64) -> Result<u64> {
    let mut ids = txn.open_table(THREAD_IDS).map_err(ie)?;
    let mut subjects = txn.open_table(THREAD_SUBJECTS).map_err(ie)?;
    let names: Vec<&str> = std::iter::once(k.message_id.as_str())
        .chain(k.parents.iter().map(String::as_str))
        .filter(|s| !s.is_empty())
        .collect();
    let mut found = None;
    for n in &names {
        if let Some(v) = ids.get((user, *n)).map_err(ie)? {
            found = Some(v.value());
            break;
        }
    }
    if found.is_none() && k.is_reply && !k.subject.is_empty() {
        found = subjects
            .get((user, k.subject.as_str()))
            .map_err(ie)?
            .map(|v| v.value());
    }
    let thread = found.unwrap_or(own);
    for n in &names {
        if ids.get((user, *n)).map_err(ie)?.is_none() {
            ids.insert((user, *n), thread).map_err(ie)?;
        }
    }
    if !k.subject.is_empty() {
        subjects
            .insert((user, k.subject.as_str()), thread)
            .map_err(ie)?;
    }
    Ok(thread)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc8474_5_thread_keys_from_header() {
        let m = b"Message-ID: <c@x>\r\nIn-Reply-To: <b@x>\r\nReferences: <a@x> <b@x>\r\nSubject: Re: [list] Lunch\r\n\r\nbody <z@z>\r\n";
        let k = keys(m);
        assert_eq!(k.message_id, "c@x");
        assert_eq!(k.parents, vec!["b@x".to_string(), "a@x".to_string()]);
        assert_eq!(k.subject, "lunch");
        assert!(k.is_reply);
    }

    #[test]
    fn rfc8474_5_thread_keys_are_capped() {
        let refs: String = (0..10_000).map(|i| format!(" <r{i}@x>")).collect();
        let long = "y".repeat(5000);
        let m = format!("Message-ID: <{long}@x>\r\nReferences:{refs}\r\nSubject: s\r\n\r\n");
        let k = keys(m.as_bytes());
        assert_eq!(k.parents.len(), MAX_REFERENCES);
        assert_eq!(k.parents[0], "r9999@x");
        assert!(k.message_id.len() <= MAX_KEY);
    }
}
