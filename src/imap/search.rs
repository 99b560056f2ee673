//! SEARCH key evaluation against one message (RFC 3501 6.4.4; CONDSTORE
//! MODSEQ, RFC 7162 3.1.5; WITHIN YOUNGER/OLDER, RFC 5032).
//!
//! Pure and synchronous. The session hands in what it knows about the
//! message (`MessageView`: flags, dates, size) and a loader for its bytes;
//! the loader is called at most once per message and only when a key needs
//! headers or body (`needs_body` tells the session in advance).
//!
//! String keys match case-insensitively as substrings of the *decoded*
//! values: RFC 2047 decoded header values and transfer-decoded, UTF-8
//! converted body text (mail-parser does the decoding). Address fields
//! (FROM, TO, CC, BCC) match the field as written or as a person reads it
//! (`address_text`: quotes dropped, quoted-pairs unescaped), so display
//! names, comments and groups match in any valid form.
//!
//! Cost (issue 12): the session reads the messages a key needs in runs
//! (`messages::READ_BATCH`); a plain ASCII `text/plain` body is searched as
//! stored (`mime::decode_for_search` skips mail-parser for it: the decoded
//! text is the same bytes), any other body is decoded first.
//!
//! Bounded (issue 9): the key tree is at most `command::MAX_DEPTH` (64)
//! levels deep, as the parser refuses deeper input with BAD, so every
//! recursive walk here is too; sequence and UID sets are merged into
//! sorted ranges once per command (`Key::resolve_sets`) and tested by
//! bisection; message decoding goes through `mime`, whose nesting cap
//! bounds the work on each stored message.

use std::sync::Arc;

use chrono::NaiveDate;

use crate::imap::mime::{decode_for_search, Decoded};
use crate::store::Flags;

use super::command::SeqSet;

/// A search key (RFC 3501 6.4.4, RFC 9051 6.4.4) with the extensions
/// msgd supports: MODSEQ (RFC 7162), YOUNGER/OLDER (RFC 5032),
/// SAVEDBEFORE/SAVEDON/SAVEDSINCE/SAVEDATESUPPORTED (RFC 8514),
/// EMAILID/THREADID (RFC 8474) and `$` (RFC 5182, resolved by the session
/// into `UidIn` before evaluation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    All,
    And(Vec<Key>),
    Or(Box<Key>, Box<Key>),
    Not(Box<Key>),
    SequenceSet(SeqSet),
    Uid(SeqSet),
    /// Messages whose UID is in this sorted list (a resolved `$`).
    UidIn(Vec<u32>),
    /// A sequence set resolved for evaluation (`resolve_sets`): merged,
    /// ascending ranges, searched by bisection.
    SeqRanges(Vec<(u32, u32)>),
    /// The same for a UID set.
    UidRanges(Vec<(u32, u32)>),
    Answered,
    Deleted,
    Draft,
    Flagged,
    Seen,
    Unanswered,
    Undeleted,
    Undraft,
    Unflagged,
    Unseen,
    Keyword(String),
    Unkeyword(String),
    Recent,
    New,
    Old,
    Larger(u64),
    Smaller(u64),
    Before(NaiveDate),
    On(NaiveDate),
    Since(NaiveDate),
    SentBefore(NaiveDate),
    SentOn(NaiveDate),
    SentSince(NaiveDate),
    SavedBefore(NaiveDate),
    SavedOn(NaiveDate),
    SavedSince(NaiveDate),
    SaveDateSupported,
    Younger(u32),
    Older(u32),
    ModSeq(u64),
    /// Header field (name as given) contains the value.
    Header(Vec<u8>, Vec<u8>),
    Body(Vec<u8>),
    Text(Vec<u8>),
    EmailId(String),
    ThreadId(String),
}

impl Key {
    /// Does the key use MODSEQ (its result then reports the highest
    /// mod-sequence, RFC 7162 3.1.5)?
    pub fn uses_modseq(&self) -> bool {
        match self {
            Key::ModSeq(_) => true,
            Key::And(v) => v.iter().any(Key::uses_modseq),
            Key::Or(a, b) => a.uses_modseq() || b.uses_modseq(),
            Key::Not(k) => k.uses_modseq(),
            _ => false,
        }
    }

    /// Does any key in the tree satisfy `f`?
    pub fn any(&self, f: &dyn Fn(&Key) -> bool) -> bool {
        if f(self) {
            return true;
        }
        match self {
            Key::And(v) => v.iter().any(|k| k.any(f)),
            Key::Or(a, b) => a.any(f) || b.any(f),
            Key::Not(k) => k.any(f),
            _ => false,
        }
    }

    /// Does the key use `$` (RFC 5182)?
    pub fn uses_saved(&self) -> bool {
        match self {
            Key::SequenceSet(SeqSet::Saved) | Key::Uid(SeqSet::Saved) => true,
            Key::And(v) => v.iter().any(Key::uses_saved),
            Key::Or(a, b) => a.uses_saved() || b.uses_saved(),
            Key::Not(k) => k.uses_saved(),
            _ => false,
        }
    }

    /// Replaces every sequence and UID set by its merged ranges, so that a
    /// set of thousands of ranges costs a bisection per message, not a scan
    /// (call after `resolve_saved`). The tree is at most
    /// `command::MAX_DEPTH` deep, as parsed.
    pub fn resolve_sets(&mut self, max_seq: u32, max_uid: u32) {
        match self {
            Key::SequenceSet(set @ SeqSet::Ranges(_)) => {
                *self = Key::SeqRanges(set.merged(max_seq))
            }
            Key::Uid(set @ SeqSet::Ranges(_)) => *self = Key::UidRanges(set.merged(max_uid)),
            Key::And(v) => v.iter_mut().for_each(|k| k.resolve_sets(max_seq, max_uid)),
            Key::Or(a, b) => {
                a.resolve_sets(max_seq, max_uid);
                b.resolve_sets(max_seq, max_uid);
            }
            Key::Not(k) => k.resolve_sets(max_seq, max_uid),
            _ => {}
        }
    }

    /// Replaces every `$` by the saved UIDs (sorted).
    pub fn resolve_saved(&mut self, saved: &[u32]) {
        match self {
            Key::SequenceSet(SeqSet::Saved) | Key::Uid(SeqSet::Saved) => {
                *self = Key::UidIn(saved.to_vec())
            }
            Key::And(v) => v.iter_mut().for_each(|k| k.resolve_saved(saved)),
            Key::Or(a, b) => {
                a.resolve_saved(saved);
                b.resolve_saved(saved);
            }
            Key::Not(k) => k.resolve_saved(saved),
            _ => {}
        }
    }
}

/// What the session knows about a message without reading it.
#[derive(Debug, Clone, Copy)]
pub struct MessageView<'a> {
    pub seq: u32,
    pub uid: u32,
    pub flags: &'a Flags,
    /// \Recent in this session.
    pub recent: bool,
    /// INTERNALDATE, seconds since the Unix epoch.
    pub internal_date: i64,
    /// The time zone the INTERNALDATE was given in, minutes east of UTC;
    /// BEFORE/ON/SINCE compare the calendar date in that zone.
    pub tz_offset_min: i16,
    /// RFC822.SIZE.
    pub size: u64,
    pub modseq: u64,
    /// SAVEDATE, seconds since the Unix epoch (RFC 8514).
    pub save_date: i64,
    /// EMAILID and THREADID (RFC 8474), as the client sees them.
    pub email_id: &'a str,
    pub thread_id: Option<&'a str>,
}

/// Loads the message bytes (None if they cannot be read: header and body
/// keys then do not match).
pub type Loader<'l> = dyn FnMut() -> Option<Arc<Vec<u8>>> + 'l;

/// Whether evaluating `key` may need the message bytes (headers or body).
pub fn needs_body(key: &Key) -> bool {
    match key {
        Key::And(keys) => keys.iter().any(needs_body),
        Key::Not(k) => needs_body(k),
        Key::Or(a, b) => needs_body(a) || needs_body(b),
        Key::Body(_)
        | Key::Header(..)
        | Key::SentBefore(_)
        | Key::SentOn(_)
        | Key::SentSince(_)
        | Key::Text(_) => true,
        _ => false,
    }
}

/// Whether `key` needs the body text (not only the header).
fn needs_text(key: &Key) -> bool {
    match key {
        Key::And(keys) => keys.iter().any(needs_text),
        Key::Not(k) => needs_text(k),
        Key::Or(a, b) => needs_text(a) || needs_text(b),
        Key::Body(_) | Key::Text(_) => true,
        _ => false,
    }
}

/// Whether the message matches `key`. `max_seq` and `max_uid` are what `*`
/// stands for in sequence sets (the mailbox's message count and highest
/// UID). YOUNGER/OLDER are relative to the current time.
pub fn matches(
    key: &Key,
    view: &MessageView<'_>,
    max_seq: u32,
    max_uid: u32,
    load: &mut Loader<'_>,
) -> bool {
    let now = chrono::Utc::now().timestamp();
    matches_at(key, view, max_seq, max_uid, now, load)
}

/// `matches` with an explicit current time (Unix seconds), so one SEARCH
/// uses one instant for every message.
pub fn matches_at(
    key: &Key,
    view: &MessageView<'_>,
    max_seq: u32,
    max_uid: u32,
    now: i64,
    load: &mut Loader<'_>,
) -> bool {
    let mut ev = Eval {
        view,
        max_seq,
        max_uid,
        now,
        with_body: needs_text(key),
        load,
        doc: Doc::NotLoaded,
    };
    ev.eval(key)
}

enum Doc {
    NotLoaded,
    Unavailable,
    Loaded(Box<SearchDoc>),
}

/// The decoded message, lowercased for case-insensitive matching.
struct SearchDoc {
    /// (field name as received, lowercased decoded value)
    headers: Vec<(Vec<u8>, String)>,
    /// Lowercased body text.
    body: String,
    /// Date: header's calendar date, as written (time and zone ignored).
    sent: Option<NaiveDate>,
}

impl SearchDoc {
    fn new(d: Decoded) -> SearchDoc {
        SearchDoc {
            headers: d
                .headers
                .into_iter()
                .map(|(n, v)| {
                    let mut v = v.to_lowercase();
                    if is_address_field(&n) {
                        let plain = address_text(&v);
                        if plain != v {
                            v.push('\n');
                            v.push_str(&plain);
                        }
                    }
                    (n, v)
                })
                .collect(),
            body: lowercase(d.body),
            sent: d.date.and_then(|d| {
                NaiveDate::from_ymd_opt(i32::from(d.year), u32::from(d.month), u32::from(d.day))
            }),
        }
    }
}

struct Eval<'e, 'l> {
    view: &'e MessageView<'e>,
    max_seq: u32,
    max_uid: u32,
    now: i64,
    with_body: bool,
    load: &'e mut Loader<'l>,
    doc: Doc,
}

impl Eval<'_, '_> {
    fn doc(&mut self) -> Option<&SearchDoc> {
        if let Doc::NotLoaded = self.doc {
            self.doc = match (self.load)() {
                Some(bytes) => Doc::Loaded(Box::new(SearchDoc::new(decode_for_search(
                    &bytes,
                    self.with_body,
                )))),
                None => Doc::Unavailable,
            };
        }
        match &self.doc {
            Doc::Loaded(d) => Some(d),
            _ => None,
        }
    }

    fn flag(&self, bit: u8) -> bool {
        self.view.flags.has(bit)
    }

    fn keyword(&self, name: &str) -> bool {
        self.view
            .flags
            .keywords
            .iter()
            .any(|k| k.eq_ignore_ascii_case(name))
    }

    /// INTERNALDATE's calendar date in the message's time zone.
    fn internal_day(&self) -> Option<NaiveDate> {
        let local = self
            .view
            .internal_date
            .checked_add(i64::from(self.view.tz_offset_min) * 60)?;
        chrono::DateTime::from_timestamp(local, 0).map(|d| d.date_naive())
    }

    fn header_contains(&mut self, name: &[u8], needle: &[u8]) -> bool {
        let needle = lower(needle);
        self.doc().is_some_and(|d| {
            d.headers
                .iter()
                .any(|(n, v)| n.eq_ignore_ascii_case(name) && v.contains(&needle))
        })
    }

    /// SAVEDATE's calendar date (UTC).
    fn save_day(&self) -> Option<NaiveDate> {
        chrono::DateTime::from_timestamp(self.view.save_date, 0).map(|d| d.date_naive())
    }

    fn eval(&mut self, key: &Key) -> bool {
        let v = self.view;
        match key {
            Key::And(keys) => keys.iter().all(|k| self.eval(k)),
            Key::Not(k) => !self.eval(k),
            Key::Or(a, b) => self.eval(a) || self.eval(b),
            Key::SequenceSet(set) => set.contains(v.seq, self.max_seq),
            Key::Uid(set) => set.contains(v.uid, self.max_uid),
            Key::UidIn(uids) => uids.binary_search(&v.uid).is_ok(),
            Key::SeqRanges(r) => SeqSet::merged_contains(r, v.seq),
            Key::UidRanges(r) => SeqSet::merged_contains(r, v.uid),
            Key::All => true,

            Key::Answered => self.flag(Flags::ANSWERED),
            Key::Deleted => self.flag(Flags::DELETED),
            Key::Draft => self.flag(Flags::DRAFT),
            Key::Flagged => self.flag(Flags::FLAGGED),
            Key::Seen => self.flag(Flags::SEEN),
            Key::Unanswered => !self.flag(Flags::ANSWERED),
            Key::Undeleted => !self.flag(Flags::DELETED),
            Key::Undraft => !self.flag(Flags::DRAFT),
            Key::Unflagged => !self.flag(Flags::FLAGGED),
            Key::Unseen => !self.flag(Flags::SEEN),
            Key::Keyword(k) => self.keyword(k),
            Key::Unkeyword(k) => !self.keyword(k),
            Key::Recent => v.recent,
            Key::New => v.recent && !self.flag(Flags::SEEN),
            Key::Old => !v.recent,

            Key::Larger(n) => v.size > *n,
            Key::Smaller(n) => v.size < *n,

            Key::Before(d) => self.internal_day().is_some_and(|x| x < *d),
            Key::On(d) => self.internal_day().is_some_and(|x| x == *d),
            Key::Since(d) => self.internal_day().is_some_and(|x| x >= *d),
            Key::SavedBefore(d) => self.save_day().is_some_and(|x| x < *d),
            Key::SavedOn(d) => self.save_day().is_some_and(|x| x == *d),
            Key::SavedSince(d) => self.save_day().is_some_and(|x| x >= *d),
            Key::SaveDateSupported => true,
            Key::Younger(secs) => self.now.saturating_sub(v.internal_date) <= i64::from(*secs),
            Key::Older(secs) => self.now.saturating_sub(v.internal_date) > i64::from(*secs),
            Key::ModSeq(modseq) => v.modseq >= *modseq,
            Key::EmailId(id) => v.email_id == id,
            Key::ThreadId(id) => v.thread_id == Some(id.as_str()),

            Key::SentBefore(d) => self.sent_day().is_some_and(|x| x < *d),
            Key::SentOn(d) => self.sent_day().is_some_and(|x| x == *d),
            Key::SentSince(d) => self.sent_day().is_some_and(|x| x >= *d),

            Key::Header(name, s) => self.header_contains(name, s),
            Key::Body(s) => {
                let needle = lower(s);
                self.doc().is_some_and(|d| d.body.contains(&needle))
            }
            Key::Text(s) => {
                let needle = lower(s);
                self.doc().is_some_and(|d| {
                    d.body.contains(&needle)
                        || d.headers.iter().any(|(n, v)| {
                            v.contains(&needle)
                                || String::from_utf8_lossy(n).to_lowercase().contains(&needle)
                        })
                })
            }
        }
    }

    fn sent_day(&mut self) -> Option<NaiveDate> {
        self.doc().and_then(|d| d.sent)
    }
}

/// Fields whose value is an address list (RFC 5322 3.6.2, 3.6.3).
fn is_address_field(name: &[u8]) -> bool {
    [&b"from"[..], b"to", b"cc", b"bcc", b"sender", b"reply-to"]
        .iter()
        .any(|f| name.eq_ignore_ascii_case(f))
}

/// An address list as a person reads it: quoted strings without their
/// quotes and quoted-pairs unescaped (`"Smith, J. \"JJ\"" <j@x>` reads
/// `Smith, J. "JJ" <j@x>`), whitespace runs as one space. FROM/TO/CC/BCC
/// match a substring of the field (RFC 9051 6.4.4) in this form or as
/// written, so display names, comments and groups match however the
/// sender quoted them. Linear in the value, no recursion.
fn address_text(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    let mut in_quote = false;
    let mut space = false;
    let push = |out: &mut String, c: char, space: &mut bool| {
        if c.is_whitespace() {
            *space = true;
        } else {
            if *space && !out.is_empty() {
                out.push(' ');
            }
            *space = false;
            out.push(c);
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '\\' if in_quote => {
                if let Some(n) = chars.next() {
                    push(&mut out, n, &mut space);
                }
            }
            '"' => {
                in_quote = !in_quote;
                // Decoded encoded-words leave spaces inside the quotes.
                if in_quote {
                    while chars.clone().next().is_some_and(char::is_whitespace) {
                        chars.next();
                    }
                } else {
                    space = false;
                }
            }
            c => push(&mut out, c, &mut space),
        }
    }
    out
}

/// Lowercases in place when the text is ASCII (the usual body: no second
/// copy), else as Unicode does.
fn lowercase(mut s: String) -> String {
    if s.is_ascii() {
        s.make_ascii_lowercase();
        s
    } else {
        s.to_lowercase()
    }
}

fn lower(s: &[u8]) -> String {
    String::from_utf8_lossy(s).to_lowercase()
}

#[cfg(test)]
mod tests;
