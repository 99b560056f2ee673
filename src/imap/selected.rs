//! The selected mailbox as this session sees it (RFC 3501 2.3.1, 5.2, 7.4.1).
//!
//! Invariants:
//! - `msgs` is in UID order; message sequence number n is `msgs[n-1]`.
//! - The view changes only when the session applies a batch of store
//!   changes at a moment the RFC allows, and every change is announced in
//!   the same breath (EXPUNGE, EXISTS, RECENT, FETCH FLAGS), so the client's
//!   idea of the sequence numbers is always ours.
//! - A keyword reaches a FETCH only after the untagged FLAGS and
//!   `OK [PERMANENTFLAGS]` that announce it (RFC 3501 7.2.6, RFC 9051
//!   7.3.5): `apply` puts them before its FETCH responses, `update_meta`
//!   hands them to the caller to write first.
//! - Pure data: no I/O. The session fetches `Changes` and hands them here.

use std::collections::BTreeSet;

use crate::store::{Changes, Flags, MailboxId, MessageMeta, ModSeq, Snapshot, Uid};

use super::command::SeqSet;
use super::wire;

#[derive(Debug, Clone)]
pub struct Msg {
    pub meta: MessageMeta,
    /// \Recent for this session.
    pub recent: bool,
}

#[derive(Debug)]
pub struct Selected {
    pub id: MailboxId,
    /// Store name (UTF-8).
    pub name: String,
    pub read_only: bool,
    pub uidvalidity: u32,
    pub uidnext: Uid,
    /// The highest modseq whose changes this view includes.
    pub modseq: ModSeq,
    pub msgs: Vec<Msg>,
    /// Keywords announced in the last FLAGS response.
    keywords: BTreeSet<String>,
    /// CONDSTORE is enabled: flag changes carry MODSEQ (RFC 7162 3.2).
    pub condstore: bool,
    /// QRESYNC is enabled: expunges are announced as VANISHED (RFC 7162
    /// 3.2.10).
    pub qresync: bool,
    /// IMAP4rev2 is enabled: no \Recent, no RECENT (RFC 9051).
    pub rev2: bool,
}

/// Why a sequence set could not be resolved.
#[derive(Debug, PartialEq, Eq)]
pub struct BadSequence;

impl Selected {
    /// A fresh view. Messages with UID >= `recent_from` are \Recent here.
    pub fn new(snap: Snapshot, recent_from: Uid, read_only: bool) -> Selected {
        let msgs: Vec<Msg> = snap
            .messages
            .into_iter()
            .map(|meta| Msg {
                recent: meta.uid >= recent_from,
                meta,
            })
            .collect();
        let mut keywords = BTreeSet::new();
        // One copy per distinct keyword, not one per message carrying it.
        for k in msgs.iter().flat_map(|m| &m.meta.flags.keywords) {
            if !keywords.contains(k) {
                keywords.insert(k.clone());
            }
        }
        Selected {
            id: snap.info.id,
            name: snap.info.name,
            read_only,
            uidvalidity: snap.info.uidvalidity,
            uidnext: snap.info.uidnext,
            modseq: snap.info.highestmodseq,
            msgs,
            keywords,
            condstore: false,
            qresync: false,
            rev2: false,
        }
    }

    /// \Recent as this session shows it (never under IMAP4rev2).
    pub fn shows_recent(&self, m: &Msg) -> bool {
        m.recent && !self.rev2
    }

    /// An unsolicited or STORE-caused FETCH of flags (RFC 9051 7.5.2, with
    /// UID and MODSEQ once CONDSTORE is on, RFC 7162 3.2).
    pub fn flags_fetch(&self, i: usize, with_uid: bool) -> String {
        let Some(m) = self.msgs.get(i) else {
            return String::new();
        };
        let mut s = format!(
            "* {} FETCH (FLAGS {}",
            i + 1,
            wire::flag_list(&m.meta.flags, self.shows_recent(m))
        );
        if with_uid || self.condstore {
            s.push_str(&format!(" UID {}", m.meta.uid));
        }
        if self.condstore {
            s.push_str(&format!(" MODSEQ ({})", m.meta.modseq.max(1)));
        }
        s.push_str(")\r\n");
        s
    }

    pub fn exists(&self) -> u32 {
        self.msgs.len() as u32
    }

    pub fn recent(&self) -> u32 {
        self.msgs.iter().filter(|m| m.recent).count() as u32
    }

    pub fn max_uid(&self) -> Uid {
        self.msgs.last().map(|m| m.meta.uid).unwrap_or(0)
    }

    /// Index of a UID in `msgs`.
    pub fn index_of(&self, uid: Uid) -> Option<usize> {
        self.msgs.binary_search_by_key(&uid, |m| m.meta.uid).ok()
    }

    fn flags_line(&self) -> String {
        let mut s = String::from("* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft");
        for k in &self.keywords {
            s.push(' ');
            s.push_str(k);
        }
        s.push_str(")\r\n");
        s
    }

    fn permanent_flags_line(&self) -> String {
        if self.read_only {
            return "* OK [PERMANENTFLAGS ()] No permanent flags permitted\r\n".into();
        }
        let mut p = String::from("\\Answered \\Flagged \\Deleted \\Seen \\Draft");
        for k in &self.keywords {
            p.push(' ');
            p.push_str(k);
        }
        format!("* OK [PERMANENTFLAGS ({p} \\*)] Flags permitted\r\n")
    }

    /// Learns the keywords of `flags`. When one is new to this view, returns
    /// the untagged FLAGS and OK [PERMANENTFLAGS] that must reach the client
    /// before any FETCH shows it (RFC 3501 7.2.6, RFC 9051 7.3.5);
    /// otherwise an empty string.
    pub fn announce_keywords(&mut self, flags: &Flags) -> String {
        let mut new = false;
        for k in &flags.keywords {
            new |= self.keywords.insert(k.clone());
        }
        if new {
            let mut s = self.flags_line();
            s.push_str(&self.permanent_flags_line());
            s
        } else {
            String::new()
        }
    }

    /// The untagged responses of SELECT/EXAMINE (RFC 3501 6.3.1).
    pub fn select_responses(&self) -> String {
        let mut s = self.flags_line();
        s.push_str(&format!("* {} EXISTS\r\n", self.exists()));
        if !self.rev2 {
            s.push_str(&format!("* {} RECENT\r\n", self.recent()));
        }
        // The UNSEEN code is gone from IMAP4rev2 (RFC 9051 E.3).
        if let Some(i) = self
            .msgs
            .iter()
            .position(|m| !m.meta.flags.has(Flags::SEEN))
            .filter(|_| !self.rev2)
        {
            s.push_str(&format!("* OK [UNSEEN {}] First unseen message\r\n", i + 1));
        }
        s.push_str(&self.permanent_flags_line());
        s.push_str(&format!(
            "* OK [UIDVALIDITY {}] UIDs valid\r\n",
            self.uidvalidity
        ));
        s.push_str(&format!(
            "* OK [UIDNEXT {}] Predicted next UID\r\n",
            self.uidnext
        ));
        s.push_str(&format!(
            "* OK [HIGHESTMODSEQ {}] Highest\r\n",
            self.modseq.max(1)
        ));
        s.push_str(&format!(
            "* OK [MAILBOXID ({})] Ok\r\n",
            wire::mailbox_id(self.id)
        ));
        s
    }

    /// UIDs of messages that are new in `changes` (not yet in the view).
    pub fn has_new(&self, changes: &Changes) -> bool {
        let max = self.max_uid();
        changes.changed.iter().any(|m| m.uid > max)
    }

    /// Applies a batch of changes and returns the untagged responses that
    /// announce them. New messages with UID >= `recent_from` become \Recent.
    /// With `with_uid`, unsolicited FETCH responses carry the UID too.
    pub fn apply(&mut self, changes: Changes, recent_from: Uid) -> String {
        let mut out = String::new();
        // Expunges, highest sequence number first so each number is right
        // at the moment it is sent (RFC 3501 7.4.1).
        let mut gone: Vec<usize> = changes
            .expunged
            .iter()
            .filter_map(|u| self.index_of(*u))
            .collect();
        gone.sort_unstable();
        gone.dedup();
        if self.qresync && !gone.is_empty() {
            let uids: Vec<Uid> = gone
                .iter()
                .filter_map(|&i| self.msgs.get(i).map(|m| m.meta.uid))
                .collect();
            out.push_str(&format!("* VANISHED {}\r\n", wire::uid_set(&uids)));
        }
        for &i in gone.iter().rev() {
            if !self.qresync {
                out.push_str(&format!("* {} EXPUNGE\r\n", i + 1));
            }
            self.msgs.remove(i);
        }
        // New messages, then flag changes of known ones.
        let max = self.max_uid();
        let before = self.msgs.len();
        let mut flag_updates = Vec::new();
        // Every new keyword is announced before the FETCH responses below.
        let mut announce = String::new();
        for meta in changes.changed {
            let a = self.announce_keywords(&meta.flags);
            if !a.is_empty() {
                announce = a;
            }
            if meta.uid > max {
                if changes.expunged.binary_search(&meta.uid).is_ok() {
                    continue;
                }
                let recent = meta.uid >= recent_from;
                // Keep UID order even if the batch is not sorted.
                let pos = self.msgs.partition_point(|m| m.meta.uid < meta.uid);
                if self.msgs.get(pos).map(|m| m.meta.uid) == Some(meta.uid) {
                    continue;
                }
                self.msgs.insert(pos, Msg { meta, recent });
            } else if let Some(i) = self.index_of(meta.uid) {
                if let Some(m) = self.msgs.get_mut(i) {
                    if m.meta.flags != meta.flags {
                        flag_updates.push(i);
                    }
                    m.meta = meta;
                }
            }
        }
        out.push_str(&announce);
        if self.msgs.len() != before || !gone.is_empty() {
            out.push_str(&format!("* {} EXISTS\r\n", self.exists()));
            if !self.rev2 {
                out.push_str(&format!("* {} RECENT\r\n", self.recent()));
            }
        }
        flag_updates.sort_unstable();
        flag_updates.dedup();
        for i in flag_updates {
            out.push_str(&self.flags_fetch(i, true));
        }
        self.uidnext = self.uidnext.max(changes.info.uidnext);
        self.modseq = self.modseq.max(changes.info.highestmodseq);
        out
    }

    /// Records flags this session stored itself (the FETCH responses are
    /// written by the caller). The store hands back the message's whole
    /// flag set, which may hold a keyword another session just added: the
    /// FLAGS / PERMANENTFLAGS announcing it go to `out` first, so they
    /// precede the caller's FETCH (RFC 3501 7.2.6, RFC 9051 7.3.5).
    pub fn update_meta(&mut self, meta: MessageMeta, out: &mut String) -> Option<usize> {
        let i = self.index_of(meta.uid)?;
        out.push_str(&self.announce_keywords(&meta.flags));
        if let Some(m) = self.msgs.get_mut(i) {
            m.meta = meta;
        }
        Some(i)
    }

    /// Message indexes (0-based, ascending, unique) named by a sequence set
    /// of sequence numbers (`uid == false`) or UIDs. `$` names the saved
    /// search result (`saved`, UIDs) either way (RFC 5182).
    pub fn resolve(
        &self,
        set: &SeqSet,
        uid: bool,
        saved: &[Uid],
    ) -> Result<Vec<usize>, BadSequence> {
        let mut out = Vec::new();
        match set {
            SeqSet::Saved => {
                out.extend(saved.iter().filter_map(|&u| self.index_of(u)));
                out.sort_unstable();
                out.dedup();
            }
            // Ranges are merged before they are expanded: `1:*,1:*,...`
            // costs the mailbox once, not once per range, and the result
            // is ascending and unique by construction.
            SeqSet::Ranges(_) if uid => {
                for (a, b) in set.merged(self.max_uid()) {
                    let lo = self.msgs.partition_point(|m| m.meta.uid < a);
                    let hi = self.msgs.partition_point(|m| m.meta.uid <= b);
                    out.extend(lo..hi);
                }
            }
            SeqSet::Ranges(ranges) => {
                let n = self.exists();
                for (&(x, y), (a, b)) in ranges.iter().zip(set.bounds(n)) {
                    if n == 0 || b > n || a == 0 {
                        // RFC 9051 9: a sequence number beyond the mailbox
                        // is an error; "*" in an empty mailbox names
                        // nothing.
                        let star =
                            x == super::command::SeqNum::Star || y == super::command::SeqNum::Star;
                        if star && n == 0 {
                            continue;
                        }
                        return Err(BadSequence);
                    }
                }
                if n > 0 {
                    for (a, b) in set.merged(n) {
                        out.extend((a as usize - 1)..(b as usize));
                    }
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MailboxInfo;

    fn meta(uid: Uid, flags: &[&str]) -> MessageMeta {
        MessageMeta {
            uid,
            flags: Flags::from_names(flags),
            internal_date: 0,
            tz_offset_min: 0,
            size: 10,
            modseq: 1,
            offset: 0,
            save_date: 0,
        }
    }

    fn info(uidnext: Uid, modseq: ModSeq) -> MailboxInfo {
        MailboxInfo {
            id: 1,
            user: "u".into(),
            name: "INBOX".into(),
            uidvalidity: 7,
            uidnext,
            highestmodseq: modseq,
            special_use: None,
            subscribed: true,
            exists: 0,
            unseen: 0,
            size: 0,
            recent_uid: 0,
        }
    }

    fn view(uids: &[Uid]) -> Selected {
        let snap = Snapshot {
            info: info(uids.last().map(|u| u + 1).unwrap_or(1), 5),
            messages: uids.iter().map(|&u| meta(u, &[])).collect(),
        };
        Selected::new(snap, Uid::MAX, false)
    }

    fn set(s: &str) -> SeqSet {
        super::super::command::parse_seq_set(s).unwrap()
    }

    #[test]
    fn rfc3501_6_3_1_select_responses() {
        let snap = Snapshot {
            info: info(5, 9),
            messages: vec![meta(1, &["\\Seen"]), meta(3, &["$Work"]), meta(4, &[])],
        };
        let s = Selected::new(snap, 4, false);
        let r = s.select_responses();
        assert!(r.starts_with("* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Work)\r\n"));
        assert!(r.contains("* 3 EXISTS\r\n"));
        assert!(r.contains("* 1 RECENT\r\n"));
        assert!(r.contains("* OK [UNSEEN 2]"));
        assert!(r.contains(
            "[PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Work \\*)]"
        ));
        assert!(r.contains("* OK [UIDVALIDITY 7]"));
        assert!(r.contains("* OK [UIDNEXT 5]"));
    }

    #[test]
    fn rfc3501_7_4_1_expunge_numbers_stay_right() {
        let mut s = view(&[10, 11, 12, 13, 14]);
        let out = s.apply(
            Changes {
                info: info(15, 6),
                changed: vec![],
                expunged: vec![11, 13],
            },
            Uid::MAX,
        );
        // 13 is message 4, then 11 is message 2.
        assert!(out.starts_with("* 4 EXPUNGE\r\n* 2 EXPUNGE\r\n"), "{out}");
        assert_eq!(
            s.msgs.iter().map(|m| m.meta.uid).collect::<Vec<_>>(),
            vec![10, 12, 14]
        );
        assert_eq!(s.modseq, 6);
    }

    #[test]
    fn rfc3501_7_3_1_exists_recent_and_flag_updates() {
        let mut s = view(&[1, 2]);
        let out = s.apply(
            Changes {
                info: info(5, 8),
                changed: vec![meta(2, &["\\Seen"]), meta(3, &[]), meta(4, &["$New"])],
                expunged: vec![],
            },
            4,
        );
        assert!(out.contains("* 4 EXISTS\r\n"));
        assert!(out.contains("* 1 RECENT\r\n"));
        assert!(out.contains("* 2 FETCH (FLAGS (\\Seen) UID 2)\r\n"));
        assert!(out.contains("* FLAGS ("));
        assert!(s.msgs.get(3).unwrap().recent);
        // Same flags again: nothing to say.
        let again = s.apply(
            Changes {
                info: info(5, 8),
                changed: vec![meta(2, &["\\Seen"])],
                expunged: vec![],
            },
            Uid::MAX,
        );
        assert_eq!(again, "");
    }

    #[test]
    fn rfc3501_7_2_6_rfc9051_7_3_5_new_keyword_announced_before_fetch() {
        // Another session added $Label1: FLAGS and PERMANENTFLAGS come
        // before the FETCH that shows it.
        let mut s = view(&[1, 2]);
        let out = s.apply(
            Changes {
                info: info(3, 8),
                changed: vec![meta(2, &["$Label1"])],
                expunged: vec![],
            },
            Uid::MAX,
        );
        let flags = out.find("* FLAGS (").expect("FLAGS announced");
        let perm = out.find("$Label1 \\*)]").expect("PERMANENTFLAGS announced");
        let fetch = out.find("* 2 FETCH (FLAGS ($Label1)").expect("FETCH");
        assert!(flags < fetch && perm < fetch, "{out}");
        // The store hands back a keyword this view has not seen (added by
        // another session just before our STORE): announced first too.
        let mut ann = String::new();
        let i = s.update_meta(meta(1, &["\\Seen", "$Label2"]), &mut ann);
        assert_eq!(i, Some(0));
        assert!(ann.starts_with("* FLAGS ("), "{ann}");
        assert!(ann.contains("$Label1 $Label2)"), "{ann}");
        assert!(ann.contains("[PERMANENTFLAGS ("), "{ann}");
        // A known keyword is not announced again.
        let mut again = String::new();
        s.update_meta(meta(2, &["$Label2"]), &mut again);
        assert_eq!(again, "");
        // Read-only: PERMANENTFLAGS () still follows the FLAGS.
        let mut ro = view(&[1]);
        ro.read_only = true;
        let mut a = String::new();
        ro.update_meta(meta(1, &["$X"]), &mut a);
        assert!(a.contains("* OK [PERMANENTFLAGS ()]"), "{a}");
    }

    #[test]
    fn rfc3501_9_sequence_sets() {
        let s = view(&[3, 5, 9, 20]);
        assert_eq!(
            s.resolve(&set("1:*"), false, &[]).unwrap(),
            vec![0, 1, 2, 3]
        );
        assert_eq!(
            s.resolve(&set("4,2,2:3"), false, &[]).unwrap(),
            vec![1, 2, 3]
        );
        assert_eq!(s.resolve(&set("5"), false, &[]), Err(BadSequence));
        // UIDs: ranges may cover gaps; "*" is the highest UID; n:* with n
        // above it still names the last message (RFC 3501 6.4.8).
        assert_eq!(s.resolve(&set("4:9"), true, &[]).unwrap(), vec![1, 2]);
        assert_eq!(s.resolve(&set("100:*"), true, &[]).unwrap(), vec![3]);
        assert_eq!(
            s.resolve(&set("21:30"), true, &[]).unwrap(),
            Vec::<usize>::new()
        );
        let empty = view(&[]);
        assert_eq!(
            empty.resolve(&set("1:*"), false, &[]).unwrap(),
            Vec::<usize>::new()
        );
        assert_eq!(empty.resolve(&set("1"), false, &[]), Err(BadSequence));
    }

    #[test]
    fn rfc9051_9_overlapping_ranges_are_merged_before_expanding() {
        let uids: Vec<Uid> = (1..=3000).map(|u| u * 2).collect();
        let s = view(&uids);
        let all: Vec<usize> = (0..3000).collect();
        let many = |item: &str, n: usize| set(&vec![item; n].join(","));
        // 20,000 copies of 1:* name every message once, in order.
        let big = many("1:*", 20_000);
        assert_eq!(big.merged(3000), vec![(1, 3000)]);
        assert_eq!(s.resolve(&big, false, &[]).unwrap(), all);
        assert_eq!(s.resolve(&big, true, &[]).unwrap(), all);
        assert_eq!(s.resolve(&many("1", 20_000), false, &[]).unwrap(), vec![0]);
        assert_eq!(
            s.resolve(&set("4294967295:1"), true, &[]).unwrap(),
            all,
            "reversed range with the largest UID"
        );
        assert_eq!(
            s.resolve(&set("3000:1,2:2999,1500"), false, &[]).unwrap(),
            all
        );
        // Adjacent and overlapping ranges merge; disjoint ones stay apart.
        assert_eq!(
            set("5:7,1:2,3:4,10:12,11:20,30").merged(100),
            vec![(1, 7), (10, 20), (30, 30)]
        );
        assert!(SeqSet::merged_contains(&[(1, 7), (10, 20)], 10));
        assert!(!SeqSet::merged_contains(&[(1, 7), (10, 20)], 8));
        assert!(!SeqSet::merged_contains(&[], 1));
        // One number beyond the mailbox still makes the whole set invalid.
        assert_eq!(s.resolve(&set("1:*,3001"), false, &[]), Err(BadSequence));
    }
}
