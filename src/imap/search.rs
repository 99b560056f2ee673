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
//! converted body text (mail-parser does the decoding).

use std::sync::Arc;

use chrono::NaiveDate;
use imap_types::core::AString;
use imap_types::search::SearchKey;
use imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};

use crate::imap::mime::{decode_for_search, Decoded};
use crate::store::Flags;

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
}

/// Loads the message bytes (None if they cannot be read: header and body
/// keys then do not match).
pub type Loader<'l> = dyn FnMut() -> Option<Arc<Vec<u8>>> + 'l;

/// Whether evaluating `key` may need the message bytes (headers or body).
pub fn needs_body(key: &SearchKey<'_>) -> bool {
    match key {
        SearchKey::And(keys) => keys.as_ref().iter().any(needs_body),
        SearchKey::Not(k) => needs_body(k),
        SearchKey::Or(a, b) => needs_body(a) || needs_body(b),
        SearchKey::Bcc(_)
        | SearchKey::Body(_)
        | SearchKey::Cc(_)
        | SearchKey::From(_)
        | SearchKey::Header(..)
        | SearchKey::SentBefore(_)
        | SearchKey::SentOn(_)
        | SearchKey::SentSince(_)
        | SearchKey::Subject(_)
        | SearchKey::Text(_)
        | SearchKey::To(_) => true,
        _ => false,
    }
}

/// Whether `key` needs the body text (not only the header).
fn needs_text(key: &SearchKey<'_>) -> bool {
    match key {
        SearchKey::And(keys) => keys.as_ref().iter().any(needs_text),
        SearchKey::Not(k) => needs_text(k),
        SearchKey::Or(a, b) => needs_text(a) || needs_text(b),
        SearchKey::Body(_) | SearchKey::Text(_) => true,
        _ => false,
    }
}

/// Whether the message matches `key`. `max_seq` and `max_uid` are what `*`
/// stands for in sequence sets (the mailbox's message count and highest
/// UID). YOUNGER/OLDER are relative to the current time.
pub fn matches(
    key: &SearchKey<'_>,
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
    key: &SearchKey<'_>,
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
                .map(|(n, v)| (n, v.to_lowercase()))
                .collect(),
            body: d.body.to_lowercase(),
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

    fn header_contains(&mut self, name: &[u8], needle: &AString<'_>) -> bool {
        let needle = lower(needle);
        self.doc().is_some_and(|d| {
            d.headers
                .iter()
                .any(|(n, v)| n.eq_ignore_ascii_case(name) && v.contains(&needle))
        })
    }

    fn eval(&mut self, key: &SearchKey<'_>) -> bool {
        let v = self.view;
        match key {
            SearchKey::And(keys) => keys.as_ref().iter().all(|k| self.eval(k)),
            SearchKey::Not(k) => !self.eval(k),
            SearchKey::Or(a, b) => self.eval(a) || self.eval(b),
            SearchKey::SequenceSet(set) => in_set(set, v.seq, self.max_seq),
            SearchKey::Uid(set) => in_set(set, v.uid, self.max_uid),
            SearchKey::All => true,

            SearchKey::Answered => self.flag(Flags::ANSWERED),
            SearchKey::Deleted => self.flag(Flags::DELETED),
            SearchKey::Draft => self.flag(Flags::DRAFT),
            SearchKey::Flagged => self.flag(Flags::FLAGGED),
            SearchKey::Seen => self.flag(Flags::SEEN),
            SearchKey::Unanswered => !self.flag(Flags::ANSWERED),
            SearchKey::Undeleted => !self.flag(Flags::DELETED),
            SearchKey::Undraft => !self.flag(Flags::DRAFT),
            SearchKey::Unflagged => !self.flag(Flags::FLAGGED),
            SearchKey::Unseen => !self.flag(Flags::SEEN),
            SearchKey::Keyword(k) => self.keyword(k.inner()),
            SearchKey::Unkeyword(k) => !self.keyword(k.inner()),
            SearchKey::Recent => v.recent,
            SearchKey::New => v.recent && !self.flag(Flags::SEEN),
            SearchKey::Old => !v.recent,

            SearchKey::Larger(n) => v.size > u64::from(*n),
            SearchKey::Smaller(n) => v.size < u64::from(*n),

            SearchKey::Before(d) => self.internal_day().is_some_and(|x| x < *d.as_ref()),
            SearchKey::On(d) => self.internal_day().is_some_and(|x| x == *d.as_ref()),
            SearchKey::Since(d) => self.internal_day().is_some_and(|x| x >= *d.as_ref()),
            SearchKey::Younger(secs) => {
                self.now.saturating_sub(v.internal_date) <= i64::from(secs.get())
            }
            SearchKey::Older(secs) => {
                self.now.saturating_sub(v.internal_date) > i64::from(secs.get())
            }
            SearchKey::ModSequence { modseq, .. } => v.modseq >= *modseq,

            SearchKey::SentBefore(d) => self.sent_day().is_some_and(|x| x < *d.as_ref()),
            SearchKey::SentOn(d) => self.sent_day().is_some_and(|x| x == *d.as_ref()),
            SearchKey::SentSince(d) => self.sent_day().is_some_and(|x| x >= *d.as_ref()),

            SearchKey::Bcc(s) => self.header_contains(b"Bcc", s),
            SearchKey::Cc(s) => self.header_contains(b"Cc", s),
            SearchKey::From(s) => self.header_contains(b"From", s),
            SearchKey::To(s) => self.header_contains(b"To", s),
            SearchKey::Subject(s) => self.header_contains(b"Subject", s),
            SearchKey::Header(name, s) => self.header_contains(name.as_ref(), s),
            SearchKey::Body(s) => {
                let needle = lower(s);
                self.doc().is_some_and(|d| d.body.contains(&needle))
            }
            SearchKey::Text(s) => {
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

fn lower(s: &AString<'_>) -> String {
    String::from_utf8_lossy(s.as_ref()).to_lowercase()
}

fn in_set(set: &SequenceSet, n: u32, max: u32) -> bool {
    let value = |v: &SeqOrUid| match v {
        SeqOrUid::Value(x) => x.get(),
        SeqOrUid::Asterisk => max,
    };
    set.0.as_ref().iter().any(|s| match s {
        Sequence::Single(x) => value(x) == n,
        Sequence::Range(a, b) => {
            let (a, b) = (value(a), value(b));
            a.min(b) <= n && n <= a.max(b)
        }
    })
}

#[cfg(test)]
mod tests;
