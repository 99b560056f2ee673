//! What the stress clients believe, and the rules it must obey.
//!
//! `Ledger` is shared by every client: per (user, mailbox), the
//! UIDVALIDITY and every message whose UID some client learned, with what
//! was done to it (acknowledged by APPENDUID/COPYUID, deletion requested,
//! \Deleted acknowledged, expunge observed). `MailboxModel` is one client's
//! sequence-number -> UID map of its selected mailbox, kept only from the
//! server's untagged responses (RFC 3501 7.3.1, 7.4.1) and compared against
//! fresh listings; its `Keywords` hold the keywords announced by FLAGS, the
//! only ones a FETCH may show (RFC 3501 7.2.6). Every method returns
//! `Err(text)` for a violation; the caller adds the transcript.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// One message as the ledger knows it.
#[derive(Debug, Clone, Default)]
pub struct Entry {
    /// Our token from its Message-ID (None: not one of ours, or not yet read).
    pub token: Option<String>,
    /// A tagged OK carried this UID (APPENDUID, COPYUID) or it was there
    /// when the run started: it must survive unless deletion was requested.
    pub acked: bool,
    /// Some client asked for it to go (+FLAGS \Deleted, MOVE) before
    /// sending the command.
    pub delete_requested: bool,
    /// Some client asked for \Deleted on it (a copy carries the flag of
    /// its source as it was then, RFC 3501 6.4.7: see `copied_from`).
    pub flag_deleted: bool,
    /// The (mailbox, UID) this is a COPY/MOVE of.
    pub copied_from: Option<(String, u32)>,
    /// A STORE that set \Deleted on it completed OK, at this tick of the
    /// run's clock (\Deleted is never cleared by the stress clients, so
    /// FLAGS reported after a later NOOP must include it, and an EXPUNGE
    /// sent afterwards must remove it).
    pub deleted_acked: Option<u64>,
    /// Some client saw its EXPUNGE.
    pub expunged: bool,
}

/// One mailbox of one user.
#[derive(Debug, Default)]
pub struct BoxLedger {
    pub uidvalidity: Option<u32>,
    pub msgs: BTreeMap<u32, Entry>,
    /// Highest UID acknowledged so far: a UID assigned by a command sent
    /// later must be higher (RFC 3501 2.3.1.1, strictly ascending).
    pub max_acked: u32,
    /// Highest HIGHESTMODSEQ a completed SELECT reported (RFC 7162 3.1.2.1:
    /// it never goes down while UIDVALIDITY stays).
    pub max_modseq: u64,
}

#[derive(Debug, Default)]
pub struct Ledger {
    boxes: HashMap<(usize, String), BoxLedger>,
}

pub type Check = Result<(), String>;

impl Ledger {
    pub fn mailbox(&mut self, user: usize, mailbox: &str) -> &mut BoxLedger {
        self.boxes.entry((user, mailbox.to_string())).or_default()
    }

    pub fn get(&self, user: usize, mailbox: &str) -> Option<&BoxLedger> {
        self.boxes.get(&(user, mailbox.to_string()))
    }

    /// May this message be gone: its deletion was asked for, or it is a
    /// copy (of a copy...) of a message that \Deleted was asked for.
    pub fn may_be_gone(&self, user: usize, mailbox: &str, uid: u32) -> bool {
        let Some(e) = self.get(user, mailbox).and_then(|b| b.msgs.get(&uid)) else {
            return false;
        };
        if e.delete_requested || e.flag_deleted {
            return true;
        }
        let mut from = e.copied_from.clone();
        // Copy chains are short; the bound only guards against a cycle.
        for _ in 0..10_000 {
            let Some((mb, u)) = from else {
                return false;
            };
            let Some(src) = self.get(user, &mb).and_then(|b| b.msgs.get(&u)) else {
                return false;
            };
            if src.flag_deleted {
                return true;
            }
            from = src.copied_from.clone();
        }
        false
    }

    pub fn keys(&self) -> Vec<(usize, String)> {
        let mut k: Vec<_> = self.boxes.keys().cloned().collect();
        k.sort();
        k
    }
}

impl BoxLedger {
    /// RFC 3501 2.3.1.1: UIDVALIDITY of a mailbox does not change while its
    /// UIDs are valid (nobody deletes or renames the stress mailboxes).
    pub fn check_uidvalidity(&mut self, v: u32, what: &str) -> Check {
        match self.uidvalidity {
            None => {
                self.uidvalidity = Some(v);
                Ok(())
            }
            Some(old) if old == v => Ok(()),
            Some(old) => Err(format!("UIDVALIDITY changed from {old} to {v} ({what})")),
        }
    }

    /// A UID that a tagged OK acknowledged (APPENDUID, COPYUID destination).
    /// `floor` is `max_acked` when the command was sent.
    pub fn ack_new(&mut self, uid: u32, token: Option<&str>, floor: u32, what: &str) -> Check {
        if uid <= floor {
            return Err(format!(
                "{what} assigned UID {uid}, but UID {floor} was already acknowledged before the command was sent (UIDs must ascend)"
            ));
        }
        let e = self.msgs.entry(uid).or_default();
        if e.acked {
            return Err(format!("{what} assigned UID {uid}, which was already assigned to another message (UID reused)"));
        }
        if let (Some(old), Some(new)) = (&e.token, token) {
            if old != new {
                return Err(format!(
                    "{what}: UID {uid} was seen holding message {old}, but the server acknowledges it for {new}"
                ));
            }
        }
        e.acked = true;
        if e.token.is_none() {
            e.token = token.map(str::to_string);
        }
        self.max_acked = self.max_acked.max(uid);
        Ok(())
    }

    /// A client saw UID `uid` holding the message with `token` (when read).
    pub fn observe(&mut self, uid: u32, token: Option<&str>) -> Check {
        let e = self.msgs.entry(uid).or_default();
        match (&e.token, token) {
            (Some(old), Some(new)) if old != new => Err(format!(
                "UID {uid} holds message {new}, but earlier it held {old} (UID reused or messages mixed up)"
            )),
            (None, Some(new)) => {
                e.token = Some(new.to_string());
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// MOVE (the source goes) or UID EXPUNGE.
    pub fn request_delete(&mut self, uid: u32) {
        self.msgs.entry(uid).or_default().delete_requested = true;
    }

    /// STORE +FLAGS \Deleted (or FLAGS including it).
    pub fn request_flag_deleted(&mut self, uid: u32) {
        let e = self.msgs.entry(uid).or_default();
        e.delete_requested = true;
        e.flag_deleted = true;
    }

    pub fn ack_deleted(&mut self, uid: u32, tick: u64) {
        let e = self.msgs.entry(uid).or_default();
        if e.deleted_acked.is_none() {
            e.deleted_acked = Some(tick);
        }
    }

    /// An EXPUNGE response for `uid`: somebody must have asked for it.
    /// Err for "not as far as this mailbox knows": a copy of a \Deleted
    /// message is judged later with `Ledger::may_be_gone`.
    pub fn expunged(&mut self, uid: u32) -> Check {
        let e = self.msgs.entry(uid).or_default();
        e.expunged = true;
        if !e.delete_requested && !e.flag_deleted {
            return Err(format!(
                "UID {uid} (message {}) was expunged, but no client set \\Deleted on it, moved it or UID EXPUNGEd it",
                e.token.as_deref().unwrap_or("?")
            ));
        }
        Ok(())
    }

    /// FLAGS reported for `uid` by a session whose last NOOP was sent at
    /// tick `synced`: \Deleted, once acknowledged before that, stays.
    /// (Before its next NOOP a session may still report older flags.)
    pub fn check_flags(&self, uid: u32, flags: &[String], synced: u64) -> Check {
        if let Some(e) = self.msgs.get(&uid) {
            if e.deleted_acked.is_some_and(|t| t < synced)
                && !flags.iter().any(|f| f.eq_ignore_ascii_case("\\Deleted"))
            {
                return Err(format!(
                    "UID {uid}: \\Deleted was stored (STORE OK) and nobody clears it, but FLAGS now reports {flags:?}"
                ));
            }
        }
        Ok(())
    }

    pub fn token(&self, uid: u32) -> Option<&str> {
        self.msgs.get(&uid).and_then(|e| e.token.as_deref())
    }
}

/// One slot of the sequence -> UID map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    uid: Option<u32>,
    /// The UID, once learnt, must be above this (the highest UID this
    /// client had seen when the slot appeared: a new message gets a higher
    /// UID than every earlier one).
    floor: u32,
    /// ...and below this (UIDNEXT of the SELECT that announced the slot).
    ceil: Option<u32>,
}

/// A client's view of its selected mailbox.
#[derive(Debug, Default)]
pub struct MailboxModel {
    slots: Vec<Slot>,
    /// Highest UID this client saw in this mailbox (this selection).
    max_seen: u32,
    /// The keywords announced to this client (RFC 3501 7.2.6).
    pub keywords: Keywords,
}

/// The keywords the server announced to one client in this selection, as
/// a strict client tracks them: a FETCH may show a keyword only after an
/// untagged FLAGS listed it (RFC 3501 7.2.6, RFC 9051 7.3.5).
///
/// `wire` keeps a FLAGS response's name, not its list; the list is read
/// from the `[PERMANENTFLAGS (...)]` that msgd (like Dovecot) sends right
/// after every FLAGS, and only counts when a FLAGS came before it. A
/// read-only selection (`PERMANENTFLAGS ()`) lists no keywords: the check
/// is off then.
#[derive(Debug, Default, Clone)]
pub struct Keywords {
    /// Lowercased (keywords compare case-insensitively).
    announced: BTreeSet<String>,
    /// A FLAGS response arrived since the last PERMANENTFLAGS.
    flags_pending: bool,
    /// A usable PERMANENTFLAGS list was seen: the check is on.
    known: bool,
}

impl Keywords {
    /// An untagged `* FLAGS (...)`.
    pub fn flags_response(&mut self) {
        self.flags_pending = true;
    }

    /// An untagged OK whose code wire rendered as `code` (its Debug form,
    /// `PermanentFlags([Flag(Seen), Flag(Keyword(Atom("$x"))), Asterisk])`).
    /// Other codes are ignored.
    pub fn response_code(&mut self, code: &str) -> Check {
        let Some(list) = code.strip_prefix("PermanentFlags(") else {
            return Ok(());
        };
        // Keywords are atoms: the quoted strings of the Debug form.
        let keywords: Vec<String> = list
            .split('"')
            .skip(1)
            .step_by(2)
            .map(str::to_ascii_lowercase)
            .collect();
        if list == "[])" {
            // Read-only: no list to hold FETCH responses against.
            self.known = false;
            self.flags_pending = false;
            return Ok(());
        }
        let new: Vec<&String> = keywords
            .iter()
            .filter(|k| !self.announced.contains(*k))
            .collect();
        if !new.is_empty() && !self.flags_pending {
            return Err(format!(
                "[PERMANENTFLAGS] lists new keywords {new:?} with no untagged FLAGS before it (RFC 3501 7.2.6)"
            ));
        }
        self.announced.extend(keywords);
        self.flags_pending = false;
        self.known = true;
        Ok(())
    }

    /// The FLAGS of a FETCH response: every keyword was announced first.
    pub fn check_fetch(&self, flags: &[String]) -> Check {
        if !self.known {
            return Ok(());
        }
        for f in flags.iter().filter(|f| !f.starts_with('\\')) {
            if !self.announced.contains(&f.to_ascii_lowercase()) {
                return Err(format!(
                    "FETCH FLAGS {flags:?} uses keyword {f} before an untagged FLAGS announced it (RFC 3501 7.2.6, RFC 9051 7.3.5)"
                ));
            }
        }
        Ok(())
    }
}

impl MailboxModel {
    /// The model right after SELECT's `* n EXISTS` and `[UIDNEXT u]`.
    pub fn selected(exists: u32, uidnext: Option<u32>) -> MailboxModel {
        MailboxModel {
            slots: (0..exists)
                .map(|_| Slot {
                    uid: None,
                    floor: 0,
                    ceil: uidnext,
                })
                .collect(),
            max_seen: 0,
            keywords: Keywords::default(),
        }
    }

    /// UIDNEXT of the SELECT: an upper bound for the UIDs not learnt yet.
    pub fn set_ceil(&mut self, uidnext: u32) {
        for s in self.slots.iter_mut().filter(|s| s.uid.is_none()) {
            s.ceil = Some(uidnext);
        }
    }

    pub fn len(&self) -> u32 {
        self.slots.len() as u32
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn uid(&self, seq: u32) -> Option<u32> {
        self.slots
            .get(seq.checked_sub(1)? as usize)
            .and_then(|s| s.uid)
    }

    /// Sequence number of a UID in the model.
    pub fn seq_of(&self, uid: u32) -> Option<u32> {
        self.slots
            .iter()
            .position(|s| s.uid == Some(uid))
            .map(|i| i as u32 + 1)
    }

    /// Sequence numbers whose UID is not known yet.
    pub fn unknown(&self) -> Vec<u32> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.uid.is_none())
            .map(|(i, _)| i as u32 + 1)
            .collect()
    }

    pub fn uids(&self) -> Vec<Option<u32>> {
        self.slots.iter().map(|s| s.uid).collect()
    }

    /// RFC 3501 7.3.1: EXISTS reports the new size; it never shrinks
    /// without EXPUNGE responses.
    pub fn exists(&mut self, n: u32) -> Check {
        let len = self.len();
        if n < len {
            return Err(format!(
                "* {n} EXISTS, but {len} messages are known and no EXPUNGE said any went away"
            ));
        }
        let floor = self
            .max_seen
            .max(self.slots.iter().filter_map(|s| s.uid).max().unwrap_or(0));
        for _ in len..n {
            self.slots.push(Slot {
                uid: None,
                floor,
                ceil: None,
            });
        }
        Ok(())
    }

    /// RFC 3501 7.4.1: `* n EXPUNGE` removes sequence number n and renumbers
    /// the rest. Returns the UID that went, when known.
    pub fn expunge(&mut self, n: u32) -> Result<Option<u32>, String> {
        let len = self.len();
        if n == 0 || n > len {
            return Err(format!("* {n} EXPUNGE, but the mailbox has {len} messages"));
        }
        Ok(self.slots.remove(n as usize - 1).uid)
    }

    /// A FETCH response carrying UID `uid` for `seq`. Ok(true) when the UID
    /// was new to the model.
    pub fn fetch_uid(&mut self, seq: u32, uid: u32) -> Result<bool, String> {
        let len = self.len();
        let idx = match seq.checked_sub(1) {
            Some(i) if i < len => i as usize,
            _ => {
                return Err(format!(
                    "* {seq} FETCH (UID {uid}), but the mailbox has {len} messages"
                ))
            }
        };
        let slot = self.slots[idx];
        if let Some(known) = slot.uid {
            if known != uid {
                return Err(format!(
                    "* {seq} FETCH says UID {uid}, but sequence number {seq} is UID {known} by the EXISTS/EXPUNGE responses received"
                ));
            }
            return Ok(false);
        }
        if uid <= slot.floor {
            return Err(format!(
                "new message {seq} has UID {uid}, not above UID {} seen earlier (UIDs must be assigned in ascending order)",
                slot.floor
            ));
        }
        if let Some(c) = slot.ceil {
            if uid >= c {
                return Err(format!(
                    "message {seq} has UID {uid}, but SELECT said UIDNEXT {c}"
                ));
            }
        }
        let prev = self.slots[..idx].iter().rev().find_map(|s| s.uid);
        let next = self.slots[idx + 1..].iter().find_map(|s| s.uid);
        if prev.is_some_and(|p| p >= uid) || next.is_some_and(|n| n <= uid) {
            return Err(format!(
                "UID {uid} at sequence number {seq} breaks ascending order (neighbours {prev:?}, {next:?})"
            ));
        }
        self.slots[idx].uid = Some(uid);
        self.max_seen = self.max_seen.max(uid);
        Ok(true)
    }

    /// Compares the model with a fresh `UID SEARCH ALL` result; slots whose
    /// UID is not known yet (an EXISTS just before the result) learn it.
    pub fn check_uid_list(&mut self, listed: &[u32]) -> Check {
        let mine: Vec<Option<u32>> = self.uids();
        let theirs: Vec<Option<u32>> = listed.iter().map(|&u| Some(u)).collect();
        let same = mine.len() == theirs.len()
            && mine.iter().zip(&theirs).all(|(m, t)| m.is_none() || m == t);
        if same {
            for (i, &u) in listed.iter().enumerate() {
                if mine[i].is_none() {
                    self.fetch_uid(i as u32 + 1, u)?;
                }
            }
        } else {
            return Err(format!(
                "UID SEARCH ALL returned {} UIDs {}, but the EXISTS/EXPUNGE/FETCH responses received give {} messages {}",
                listed.len(),
                short_list(&theirs),
                mine.len(),
                short_list(&mine)
            ));
        }
        Ok(())
    }
}

fn short_list(v: &[Option<u32>]) -> String {
    let parts: Vec<String> = v
        .iter()
        .map(|u| u.map(|u| u.to_string()).unwrap_or_else(|| "?".into()))
        .collect();
    if parts.len() > 40 {
        format!(
            "[{} ... {}]",
            parts[..20].join(" "),
            parts[parts.len() - 20..].join(" ")
        )
    } else {
        format!("[{}]", parts.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3501_7_2_6_keywords_announced_before_fetch_uses_them() {
        let perm = |list: &str| format!("PermanentFlags([Flag(Seen), {list}Asterisk])");
        let mut k = Keywords::default();
        // Before any list: nothing to hold against.
        assert!(k.check_fetch(&["$x".into()]).is_ok());
        k.flags_response();
        k.response_code(&perm("Flag(Keyword(Atom(\"$Work\"))), "))
            .unwrap();
        assert!(k.check_fetch(&["\\Seen".into(), "$work".into()]).is_ok());
        // A keyword nobody announced: the bug the stress run missed.
        let e = k.check_fetch(&["$Label1".into()]).unwrap_err();
        assert!(e.contains("$Label1") && e.contains("7.2.6"), "{e}");
        // PERMANENTFLAGS alone does not announce a new keyword.
        assert!(k
            .response_code(&perm("Flag(Keyword(Atom(\"$Label1\"))), "))
            .is_err());
        k.flags_response();
        k.response_code(&perm("Flag(Keyword(Atom(\"$Label1\"))), "))
            .unwrap();
        assert!(k.check_fetch(&["$Label1".into()]).is_ok());
        // Other codes are not keyword lists.
        assert!(k.response_code("Alert").is_ok());
        // Read-only: PERMANENTFLAGS () turns the check off.
        k.response_code("PermanentFlags([])").unwrap();
        assert!(k.check_fetch(&["$Other".into()]).is_ok());
    }

    #[test]
    fn rfc3501_7_4_1_expunge_renumbers() {
        let mut m = MailboxModel::selected(3, Some(10));
        for (s, u) in [(1, 2), (2, 5), (3, 7)] {
            assert!(m.fetch_uid(s, u).unwrap());
        }
        assert_eq!(m.expunge(2).unwrap(), Some(5));
        assert_eq!(m.uid(2), Some(7));
        assert!(m.check_uid_list(&[2, 7]).is_ok());
        assert!(m.check_uid_list(&[2, 5, 7]).is_err());
        assert!(m.expunge(3).is_err());
        assert!(m.expunge(0).is_err());
    }

    #[test]
    fn rfc3501_7_3_1_exists_never_shrinks() {
        let mut m = MailboxModel::selected(2, None);
        assert!(m.exists(1).is_err());
        assert!(m.exists(4).is_ok());
        assert_eq!(m.unknown(), vec![1, 2, 3, 4]);
    }

    #[test]
    fn rfc3501_2_3_1_1_new_uids_ascend() {
        let mut m = MailboxModel::selected(1, Some(5));
        m.fetch_uid(1, 4).unwrap();
        assert!(m.fetch_uid(1, 3).is_err(), "seq 1 is already UID 4");
        m.exists(2).unwrap();
        assert!(m.fetch_uid(2, 4).is_err(), "not above 4");
        assert!(m.fetch_uid(2, 9).is_ok());
        // expunge the top one; a later new message may not reuse 9 or less
        m.expunge(2).unwrap();
        m.exists(2).unwrap();
        assert!(m.fetch_uid(2, 8).is_err());
        assert!(m.fetch_uid(2, 10).is_ok());
    }

    #[test]
    fn rfc3501_6_3_1_uids_below_uidnext() {
        let mut m = MailboxModel::selected(1, Some(5));
        assert!(m.fetch_uid(1, 5).is_err());
    }

    #[test]
    fn rfc4315_ledger_rejects_reuse_and_unrequested_expunge() {
        let mut b = BoxLedger::default();
        b.check_uidvalidity(7, "SELECT").unwrap();
        assert!(b.check_uidvalidity(8, "SELECT").is_err());
        b.ack_new(3, Some("t1"), 0, "APPEND").unwrap();
        assert!(b.ack_new(3, Some("t2"), 0, "APPEND").is_err());
        assert!(
            b.ack_new(2, Some("t3"), 3, "APPEND").is_err(),
            "below max acked"
        );
        assert!(b.expunged(3).is_err(), "nobody asked");
        b.ack_new(4, Some("t4"), 3, "APPEND").unwrap();
        b.request_flag_deleted(4);
        assert!(b.expunged(4).is_ok());
        assert!(b.observe(4, Some("t5")).is_err());
        assert!(b.observe(4, Some("t4")).is_ok());
    }

    #[test]
    fn rfc3501_6_4_7_copies_of_deleted_messages_may_go() {
        let mut l = Ledger::default();
        l.mailbox(0, "A")
            .ack_new(1, Some("a"), 0, "APPEND")
            .unwrap();
        l.mailbox(0, "B")
            .ack_new(1, Some("a"), 0, "COPYUID")
            .unwrap();
        l.mailbox(0, "B").msgs.get_mut(&1).unwrap().copied_from = Some(("A".into(), 1));
        l.mailbox(0, "C")
            .ack_new(5, Some("a"), 0, "COPYUID")
            .unwrap();
        l.mailbox(0, "C").msgs.get_mut(&5).unwrap().copied_from = Some(("B".into(), 1));
        assert!(!l.may_be_gone(0, "C", 5));
        // A move of the source does not make the copy deletable...
        l.mailbox(0, "A").request_delete(1);
        assert!(!l.may_be_gone(0, "C", 5));
        // ...\Deleted on it does, down the chain.
        l.mailbox(0, "A").request_flag_deleted(1);
        assert!(l.may_be_gone(0, "C", 5));
        assert!(l.may_be_gone(0, "B", 1));
    }

    #[test]
    fn rfc3501_6_4_6_deleted_flag_sticks() {
        let mut b = BoxLedger::default();
        b.ack_new(1, Some("a"), 0, "APPEND").unwrap();
        b.request_flag_deleted(1);
        b.ack_deleted(1, 5);
        assert!(b.check_flags(1, &["\\Seen".into()], 6).is_err());
        assert!(
            b.check_flags(1, &["\\Seen".into()], 5).is_ok(),
            "not synced since"
        );
        assert!(b.check_flags(1, &["\\Deleted".into()], 6).is_ok());
    }
}
