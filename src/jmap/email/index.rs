//! The account's emails as JMAP sees them: an email (one EMAILID, RFC 8474)
//! may have copies in several mailboxes; its `mailboxIds` are the mailboxes
//! holding a copy, its keywords the IMAP flags of those copies.
//!
//! Built from the store's own tables (snapshot, email ids, thread ids) for
//! one request; the store is the only truth, so IMAP and JMAP agree.

use std::collections::{BTreeMap, HashMap};

use crate::store::{Flags, MailboxId, MailboxInfo, MessageMeta, Store, StoreError};

/// One copy of an email.
#[derive(Debug, Clone)]
pub struct Loc {
    pub mailbox: MailboxId,
    pub meta: MessageMeta,
}

/// One email: its id, thread and copies (at least one).
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: u64,
    pub thread: u64,
    pub locs: Vec<Loc>,
}

impl Entry {
    /// The copy whose bytes and dates stand for the email (they are the
    /// same message: a COPY is a hard link).
    pub fn first(&self) -> &Loc {
        &self.locs[0]
    }

    /// The union of the copies' flags.
    pub fn flags(&self) -> Flags {
        let mut f = self.first().meta.flags.clone();
        for l in &self.locs[1..] {
            f = f.union(&l.meta.flags);
        }
        f
    }

    pub fn keywords(&self) -> Vec<String> {
        keywords(&self.flags())
    }

    pub fn has_keyword(&self, k: &str) -> bool {
        has_keyword(&self.flags(), k)
    }

    pub fn in_mailbox(&self, m: MailboxId) -> bool {
        self.locs.iter().any(|l| l.mailbox == m)
    }

    pub fn received_at(&self) -> i64 {
        self.first().meta.internal_date
    }

    pub fn size(&self) -> u64 {
        self.first().meta.size
    }

    /// The email's bytes. A copy can go between the index's snapshot and
    /// the read (another session moved or expunged it): the other copies
    /// are tried, then wherever the email is now. `None` when it is gone.
    pub async fn bytes(&self, store: &Store, user: &str) -> Result<Option<Vec<u8>>, StoreError> {
        for l in &self.locs {
            match store.read(l.mailbox, &l.meta).await {
                Ok(b) => return Ok(Some(b)),
                Err(StoreError::NoSuchMailbox) => continue,
                Err(e) => return Err(e),
            }
        }
        store.read_email(user, self.id).await
    }
}

/// IMAP system flags and their JMAP keywords (RFC 8621 4.1.1).
const SYSTEM: [(u8, &str); 4] = [
    (Flags::SEEN, "$seen"),
    (Flags::FLAGGED, "$flagged"),
    (Flags::ANSWERED, "$answered"),
    (Flags::DRAFT, "$draft"),
];

/// JMAP keywords of IMAP flags: system flags as `$seen` & co., other
/// keywords lowercased (JMAP keywords are case-insensitive). `\Deleted`
/// has no keyword.
pub fn keywords(f: &Flags) -> Vec<String> {
    let mut out: Vec<String> = SYSTEM
        .iter()
        .filter(|(b, _)| f.has(*b))
        .map(|(_, k)| k.to_string())
        .collect();
    for k in &f.keywords {
        let l = k.to_ascii_lowercase();
        if !out.contains(&l) {
            out.push(l);
        }
    }
    out.sort();
    out
}

pub fn has_keyword(f: &Flags, k: &str) -> bool {
    match SYSTEM.iter().find(|(_, n)| n.eq_ignore_ascii_case(k)) {
        Some((b, _)) => f.has(*b),
        None => f.has_keyword(k),
    }
}

/// IMAP flags for JMAP keywords (the inverse of `keywords`).
pub fn flags_of(keywords: &[String]) -> Flags {
    let mut f = Flags::default();
    for k in keywords {
        match SYSTEM.iter().find(|(_, n)| n.eq_ignore_ascii_case(k)) {
            Some((b, _)) => f.bits |= b,
            None => f.add_name(&k.to_ascii_lowercase()),
        }
    }
    f
}

/// Is `k` a valid keyword (RFC 8621 4.1.1: 1-255 chars of IMAP atom
/// characters, none of `( ) { ] % * " \`)?
pub fn valid_keyword(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 255
        && k.bytes().all(|b| {
            (0x21..0x7f).contains(&b)
                && !matches!(b, b'(' | b')' | b'{' | b']' | b'%' | b'*' | b'"' | b'\\')
        })
}

/// Every email of one user.
pub struct Index {
    pub mailboxes: Vec<MailboxInfo>,
    pub emails: BTreeMap<u64, Entry>,
}

impl Index {
    /// Reads the user's mailboxes and their messages' ids.
    pub async fn load(store: &Store, user: &str) -> Result<Index, StoreError> {
        let mailboxes = store.list(user).await?;
        let mut emails: BTreeMap<u64, Entry> = BTreeMap::new();
        for mb in &mailboxes {
            let snap = match store.snapshot(user, &mb.name).await {
                Ok(s) => s,
                // Deleted meanwhile.
                Err(StoreError::NoSuchMailbox) => continue,
                Err(e) => return Err(e),
            };
            if snap.messages.is_empty() {
                continue;
            }
            let uids: Vec<u32> = snap.messages.iter().map(|m| m.uid).collect();
            let ids = store.email_ids(mb.id, uids.clone()).await?;
            let threads = store.thread_ids(mb.id, uids).await?;
            for (i, meta) in snap.messages.into_iter().enumerate() {
                let Some(&id) = ids.get(i) else { continue };
                let thread = threads.get(i).copied().unwrap_or(0);
                let e = emails.entry(id).or_insert_with(|| Entry {
                    id,
                    thread,
                    locs: Vec::new(),
                });
                if e.thread == 0 {
                    e.thread = thread;
                }
                e.locs.push(Loc {
                    mailbox: mb.id,
                    meta,
                });
            }
        }
        Ok(Index { mailboxes, emails })
    }

    /// The user's mailboxes and the emails `ids` only (those that are
    /// the user's): one read of the store's email index, for methods that
    /// name their emails (get, set, copy, snippets).
    pub async fn load_ids(store: &Store, user: &str, ids: &[u64]) -> Result<Index, StoreError> {
        let mailboxes = store.list(user).await?;
        let mut want: Vec<u64> = ids.to_vec();
        want.sort_unstable();
        want.dedup();
        let entries = store.email_entries(user, want.clone()).await?;
        let mut emails = BTreeMap::new();
        for (id, locs) in want.into_iter().zip(entries) {
            let Some(thread) = locs.first().map(|l| l.2) else {
                continue;
            };
            let locs = locs
                .into_iter()
                .map(|(mailbox, meta, _)| Loc { mailbox, meta })
                .collect();
            emails.insert(id, Entry { id, thread, locs });
        }
        Ok(Index { mailboxes, emails })
    }

    /// Emails per thread, oldest first (receivedAt, then id).
    pub fn threads(&self) -> HashMap<u64, Vec<u64>> {
        let mut t: HashMap<u64, Vec<u64>> = HashMap::new();
        for e in self.emails.values() {
            t.entry(self.thread_of(e)).or_default().push(e.id);
        }
        for v in t.values_mut() {
            v.sort_by_key(|id| (self.emails[id].received_at(), *id));
        }
        t
    }

    /// A thread id for every email: an email the thread index has not
    /// placed is its own thread (named after the email).
    pub fn thread_of(&self, e: &Entry) -> u64 {
        if e.thread != 0 {
            e.thread
        } else {
            e.id
        }
    }

    pub fn mailbox(&self, id: MailboxId) -> Option<&MailboxInfo> {
        self.mailboxes.iter().find(|m| m.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc8621_4_1_1_keywords_map_imap_flags() {
        let f = Flags::from_names(&["\\Seen", "\\Flagged", "$Forwarded", "\\Deleted"]);
        assert_eq!(keywords(&f), vec!["$flagged", "$forwarded", "$seen"]);
        assert!(has_keyword(&f, "$SEEN"));
        assert!(has_keyword(&f, "$forwarded"));
        assert!(!has_keyword(&f, "$draft"));
        let back = flags_of(&["$seen".into(), "$draft".into(), "Custom".into()]);
        assert!(back.has(Flags::SEEN) && back.has(Flags::DRAFT));
        assert!(back.has_keyword("custom"));
        assert!(valid_keyword("$seen"));
        assert!(!valid_keyword("a b"));
        assert!(!valid_keyword("a(b"));
        assert!(!valid_keyword(""));
    }

    /// The webmail's Delete raced a list refresh: the refresh's index
    /// still had the message in INBOX when the move unlinked that file,
    /// and Email/get answered serverFail.
    #[tokio::test]
    async fn an_email_moved_after_the_index_was_read_is_read_where_it_went() {
        use crate::store::{FlagOp, NewMessage, Quota};
        let dir = tempfile::tempdir().unwrap();
        let s = crate::services::test_services(dir.path(), |_| {});
        let st = s.store().clone();
        let u = "u@x";
        st.ensure_user(u, None).await.unwrap();
        let data = b"From: a@b\r\nSubject: s\r\n\r\nbody\r\n".to_vec();
        let new = NewMessage {
            data: std::sync::Arc::new(data.clone()),
            flags: Flags::default(),
            internal_date: None,
        };
        let p = st.append(u, "INBOX", new, Quota::default()).await.unwrap();
        let index = Index::load(&st, u).await.unwrap();
        let e = index.emails.values().next().unwrap().clone();
        assert_eq!(e.bytes(&st, u).await.unwrap().as_deref(), Some(&data[..]));
        let (_, pairs) = st
            .copy(p.mailbox, vec![p.uid], u, "Trash", true, Quota::default())
            .await
            .unwrap();
        // The stale entry still names INBOX.
        assert_eq!(e.first().mailbox, p.mailbox);
        assert_eq!(e.bytes(&st, u).await.unwrap().as_deref(), Some(&data[..]));
        let trash = st.list(u).await.unwrap();
        let trash = trash.iter().find(|m| m.name == "Trash").unwrap().id;
        let deleted = Flags {
            bits: Flags::DELETED,
            keywords: Vec::new(),
        };
        let uid = pairs[0].1;
        st.store_flags(trash, vec![uid], FlagOp::Add, deleted, None)
            .await
            .unwrap();
        assert_eq!(st.expunge(trash, Some(vec![uid])).await.unwrap(), vec![uid]);
        assert_eq!(e.bytes(&st, u).await.unwrap(), None);
    }
}
