//! msgd's own parser for the commands whose extended syntax imap-codec
//! does not know: FETCH/STORE/COPY/MOVE/UID EXPUNGE with `$` (RFC 5182)
//! and CONDSTORE/QRESYNC modifiers (RFC 7162), SEARCH with RETURN (RFC
//! 4731) and the newer keys, SORT/THREAD (RFC 5256), LIST-EXTENDED (RFC
//! 5258, 5819, 6154), CREATE with USE (RFC 6154), STATUS with SIZE,
//! APPENDLIMIT, MAILBOXID, DELETED, HIGHESTMODSEQ, ENABLE (RFC 5161,
//! QRESYNC and IMAP4rev2 included), the ACL commands (RFC 4314),
//! GETMETADATA/SETMETADATA (RFC 5464; imap-codec's `ext_metadata` is left
//! off so both commands stay on this one dispatcher), FETCH PREVIEW
//! (LAZY) (RFC 8970), APPEND CATENATE (RFC 4469) and GENURLAUTH, RESETKEY,
//! URLFETCH (RFC 4467; URLs are astrings here, parsed by `url`), NOTIFY
//! (RFC 5465 6, into `notify::Parsed`; at most `notify::MAX_NAMES`
//! mailbox names and `notify::MAX_FETCH_ATTS` octets of MessageNew fetch
//! attributes, which must parse as FETCH's). URL lists and CATENATE parts
//! hold at most `url::MAX_URLS` items.
//!
//! `parse` decides by the command name alone: a command it does not own
//! returns `None` and goes to imap-codec. A command it owns either parses
//! completely (to the final CRLF) or is a syntax error (BAD).
//!
//! Pure and total: no input panics, every recursion is bounded: search
//! keys nest at most `MAX_DEPTH` (64) levels (deeper is BAD, found before
//! recursing further); section paths, FETCH item lists and sequence sets
//! are loops. A FETCH repeats no item and asks for at most
//! `MAX_FETCH_SECTIONS` (64) distinct message contents. Commands left to
//! imap-codec have no nested grammar of their own except SEARCH keys,
//! which imap-codec caps itself (9 levels) and which msgd parses here.

use std::borrow::Cow;
use std::num::NonZeroU32;

use chrono::NaiveDate;
use imap_types::core::{AString, Vec1};
use imap_types::fetch::{MessageDataItemName, Part, Section};

use super::notify::{Events, Filter, Parsed, Spec};
use super::search::Key;
use crate::store::{FlagOp, MetaDepth};

/// Deepest nesting of search keys (parentheses, NOT, OR). Deeper input
/// is a syntax error (BAD) before any recursion past it.
const MAX_DEPTH: usize = 64;

/// Most distinct content items (BODY[...], BINARY[...], BINARY.SIZE[...],
/// RFC822, RFC822.HEADER, RFC822.TEXT) in one FETCH. Each holds a copy of
/// (part of) the message while its response is built, so this bounds that
/// response at this many times the message. Repeated items are sent once.
pub const MAX_FETCH_SECTIONS: usize = 64;

/// One end of a sequence range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqNum {
    Num(u32),
    /// `*`: the largest number in use.
    Star,
}

/// A sequence set (RFC 9051 9: sequence-set), or `$` (RFC 5182).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeqSet {
    Ranges(Vec<(SeqNum, SeqNum)>),
    /// The result of the last SEARCH ... RETURN (SAVE).
    Saved,
}

impl SeqSet {
    /// Does the set contain `n`, with `*` standing for `star`?
    pub fn contains(&self, n: u32, star: u32) -> bool {
        match self {
            SeqSet::Saved => false,
            SeqSet::Ranges(r) => r.iter().any(|&(a, b)| {
                let (a, b) = (value(a, star), value(b, star));
                a.min(b) <= n && n <= a.max(b)
            }),
        }
    }

    /// The ranges with `*` replaced, sorted and merged: disjoint,
    /// non-adjacent (low, high) pairs in ascending order. However many
    /// overlapping ranges a client sends (`1:*,1:*,...`), expanding these
    /// costs no more than the mailbox (issue 9).
    pub fn merged(&self, star: u32) -> Vec<(u32, u32)> {
        let mut ranges = self.bounds(star);
        ranges.sort_unstable();
        let mut out: Vec<(u32, u32)> = Vec::with_capacity(ranges.len().min(1024));
        for (a, b) in ranges {
            match out.last_mut() {
                Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
                _ => out.push((a, b)),
            }
        }
        out
    }

    /// Is `n` in `merged` (the result of [`SeqSet::merged`])? Binary search.
    pub fn merged_contains(merged: &[(u32, u32)], n: u32) -> bool {
        let i = merged.partition_point(|&(_, b)| b < n);
        merged.get(i).is_some_and(|&(a, _)| a <= n)
    }

    /// The ranges with `*` replaced, each as (low, high).
    pub fn bounds(&self, star: u32) -> Vec<(u32, u32)> {
        match self {
            SeqSet::Saved => Vec::new(),
            SeqSet::Ranges(r) => r
                .iter()
                .map(|&(a, b)| {
                    let (a, b) = (value(a, star), value(b, star));
                    (a.min(b), a.max(b))
                })
                .collect(),
        }
    }
}

/// FETCH items without repeats, in order; refuses more than
/// `MAX_FETCH_SECTIONS` distinct content items. Quadratic only in the
/// number of distinct items kept, which is bounded.
fn dedup_fetch_items(
    items: Vec<MessageDataItemName<'static>>,
) -> R<Vec<MessageDataItemName<'static>>> {
    let mut kept: Vec<MessageDataItemName<'static>> = Vec::new();
    let mut sections = 0;
    for item in items {
        if kept.contains(&item) {
            continue;
        }
        if matches!(
            item,
            MessageDataItemName::BodyExt { .. }
                | MessageDataItemName::Binary { .. }
                | MessageDataItemName::BinarySize { .. }
                | MessageDataItemName::Rfc822
                | MessageDataItemName::Rfc822Header
                | MessageDataItemName::Rfc822Text
        ) {
            sections += 1;
            if sections > MAX_FETCH_SECTIONS {
                return Err("too many body sections in one FETCH");
            }
        }
        kept.push(item);
    }
    Ok(kept)
}

fn value(v: SeqNum, star: u32) -> u32 {
    match v {
        SeqNum::Num(n) => n,
        SeqNum::Star => star,
    }
}

/// SEARCH / SORT RETURN options (RFC 4731, RFC 5182, RFC 5267, RFC 9394).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReturnOpt {
    Min,
    Max,
    All,
    Count,
    Save,
    /// RFC 5267 4: keep the result up to date (ADDTO / REMOVEFROM).
    Update,
    /// RFC 9394: a window of the result, as the client wrote it.
    Partial(PartialRange),
}

/// `PARTIAL n:m` (positions from 1) or `-n:-m` (from the end, -1 the
/// last) (RFC 9394 3.1). Both ends have the same sign; neither is 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartialRange {
    pub first: i64,
    pub last: i64,
}

/// SORT criteria (RFC 5256 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    Arrival,
    Cc,
    Date,
    From,
    Size,
    Subject,
    To,
    /// RFC 5957.
    DisplayFrom,
    DisplayTo,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadAlgo {
    OrderedSubject,
    References,
}

/// STATUS items (RFC 9051 6.3.11 plus extensions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusItem {
    Messages,
    Recent,
    UidNext,
    UidValidity,
    Unseen,
    Deleted,
    /// RFC 8438.
    Size,
    /// RFC 7162.
    HighestModSeq,
    /// RFC 7889.
    AppendLimit,
    /// RFC 8474.
    MailboxId,
    /// RFC 9208 4.2.
    DeletedStorage,
}

/// FETCH items msgd adds to imap-types' list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FetchExtra {
    /// RFC 8474.
    pub email_id: bool,
    pub thread_id: bool,
    /// RFC 8514.
    pub save_date: bool,
    /// RFC 8970: PREVIEW, and whether with the LAZY modifier.
    pub preview: bool,
    pub preview_lazy: bool,
}

/// LIST selection and return options (RFC 5258, 5819, 6154).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListOpts {
    /// The command used the extended syntax (options or several patterns).
    pub extended: bool,
    pub sel_subscribed: bool,
    pub sel_special_use: bool,
    pub recursive_match: bool,
    pub ret_subscribed: bool,
    pub ret_children: bool,
    pub ret_special_use: bool,
    /// RETURN (STATUS (...)) (RFC 5819).
    pub ret_status: Option<Vec<StatusItem>>,
    /// RETURN (MYRIGHTS) (RFC 8440).
    pub ret_myrights: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cmd {
    Fetch {
        uid: bool,
        set: SeqSet,
        items: Vec<MessageDataItemName<'static>>,
        extra: FetchExtra,
        changed_since: Option<u64>,
        vanished: bool,
    },
    Store {
        uid: bool,
        set: SeqSet,
        op: FlagOp,
        silent: bool,
        flags: Vec<String>,
        unchanged_since: Option<u64>,
    },
    Copy {
        uid: bool,
        set: SeqSet,
        mailbox: Vec<u8>,
        moving: bool,
    },
    UidExpunge {
        set: SeqSet,
    },
    Search {
        uid: bool,
        /// None: plain SEARCH; Some: ESEARCH with these options (empty
        /// means ALL).
        ret: Option<Vec<ReturnOpt>>,
        charset: Option<String>,
        key: Key,
    },
    Sort {
        uid: bool,
        /// None: plain SORT; Some: ESORT (RFC 5267 3).
        ret: Option<Vec<ReturnOpt>>,
        criteria: Vec<(bool, SortKey)>,
        charset: String,
        key: Key,
    },
    /// CANCELUPDATE (RFC 5267 4.2): end these search contexts.
    CancelUpdate {
        tags: Vec<String>,
    },
    Thread {
        uid: bool,
        algo: ThreadAlgo,
        charset: String,
        key: Key,
    },
    List {
        reference: Vec<u8>,
        patterns: Vec<Vec<u8>>,
        opts: ListOpts,
    },
    Create {
        mailbox: Vec<u8>,
        uses: Vec<String>,
    },
    Status {
        mailbox: Vec<u8>,
        items: Vec<StatusItem>,
    },
    Enable {
        caps: Vec<String>,
    },
    GetAcl {
        mailbox: Vec<u8>,
    },
    SetAcl {
        mailbox: Vec<u8>,
        id: String,
        rights: String,
    },
    DeleteAcl {
        mailbox: Vec<u8>,
        id: String,
    },
    ListRights {
        mailbox: Vec<u8>,
        id: String,
    },
    MyRights {
        mailbox: Vec<u8>,
    },
    /// RFC 5464 4.2. Entries checked and lowercased (`metadata::entry`).
    GetMetadata {
        mailbox: Vec<u8>,
        entries: Vec<String>,
        maxsize: Option<u32>,
        depth: MetaDepth,
    },
    /// RFC 5464 4.3: (entry, value; None: remove).
    SetMetadata {
        mailbox: Vec<u8>,
        items: Vec<(String, Option<Vec<u8>>)>,
    },
    /// APPEND, one message or several (MULTIAPPEND, RFC 3502).
    Append {
        mailbox: Vec<u8>,
        messages: Vec<AppendMsg>,
    },
    /// REPLACE / UID REPLACE (RFC 8508 6): `num` is a sequence number or
    /// a UID.
    Replace {
        uid: bool,
        num: SeqNum,
        mailbox: Vec<u8>,
        message: AppendMsg,
    },
    /// UNAUTHENTICATE (RFC 8437 3).
    Unauthenticate,
    /// APPEND with CATENATE (RFC 4469 5).
    Catenate {
        mailbox: Vec<u8>,
        flags: Vec<String>,
        date: Option<(i64, i16)>,
        parts: Vec<CatPart>,
    },
    /// GENURLAUTH (RFC 4467 7.1): (URL rump, mechanism uppercased).
    GenUrlAuth {
        items: Vec<(String, String)>,
    },
    /// RESETKEY [mailbox [mechanism ...]] (RFC 4467 7.2).
    ResetKey {
        mailbox: Option<Vec<u8>>,
        mechs: Vec<String>,
    },
    /// URLFETCH url ... (RFC 4467 7.3).
    UrlFetch {
        urls: Vec<String>,
    },
    /// RFC 5465 (parsed in `notify`).
    Notify(super::notify::Parsed),
}

/// One message of an APPEND or REPLACE (RFC 3502 6.3.11 append-message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendMsg {
    pub flags: Vec<String>,
    /// INTERNALDATE: Unix seconds and zone offset in minutes.
    pub date: Option<(i64, i16)>,
    pub data: Vec<u8>,
}

/// One append-message as parsed: a plain message or a CATENATE list.
enum AppendItem {
    Msg(AppendMsg),
    Cat {
        flags: Vec<String>,
        date: Option<(i64, i16)>,
        parts: Vec<CatPart>,
    },
}

/// One part of a CATENATE list (RFC 4469 5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatPart {
    Text(Vec<u8>),
    Url(String),
}

impl Cmd {
    pub fn name(&self) -> &'static str {
        match self {
            Cmd::Fetch { .. } => "FETCH",
            Cmd::Store { .. } => "STORE",
            Cmd::Copy { moving: false, .. } => "COPY",
            Cmd::Copy { moving: true, .. } => "MOVE",
            Cmd::UidExpunge { .. } => "UID EXPUNGE",
            Cmd::Search { .. } => "SEARCH",
            Cmd::Sort { .. } => "SORT",
            Cmd::CancelUpdate { .. } => "CANCELUPDATE",
            Cmd::Thread { .. } => "THREAD",
            Cmd::List { .. } => "LIST",
            Cmd::Create { .. } => "CREATE",
            Cmd::Status { .. } => "STATUS",
            Cmd::Enable { .. } => "ENABLE",
            Cmd::GetAcl { .. } => "GETACL",
            Cmd::SetAcl { .. } => "SETACL",
            Cmd::DeleteAcl { .. } => "DELETEACL",
            Cmd::ListRights { .. } => "LISTRIGHTS",
            Cmd::MyRights { .. } => "MYRIGHTS",
            Cmd::Append { .. } => "APPEND",
            Cmd::Replace { .. } => "REPLACE",
            Cmd::Unauthenticate => "UNAUTHENTICATE",
            Cmd::GetMetadata { .. } => "GETMETADATA",
            Cmd::SetMetadata { .. } => "SETMETADATA",
            Cmd::Catenate { .. } => "APPEND",
            Cmd::GenUrlAuth { .. } => "GENURLAUTH",
            Cmd::ResetKey { .. } => "RESETKEY",
            Cmd::UrlFetch { .. } => "URLFETCH",
            Cmd::Notify(_) => "NOTIFY",
        }
    }

    /// Commands by sequence number, during and after which no EXPUNGE may
    /// be sent (RFC 9051 7.5.1).
    pub fn by_sequence_number(&self) -> bool {
        matches!(
            self,
            Cmd::Fetch { uid: false, .. }
                | Cmd::Store { uid: false, .. }
                | Cmd::Search { uid: false, .. }
                | Cmd::Sort { uid: false, .. }
                | Cmd::Thread { uid: false, .. }
                | Cmd::Copy { uid: false, .. }
        )
    }
}

/// A command this parser owns but could not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub tag: String,
    /// The command name (uppercase, without UID).
    pub command: String,
    pub reason: &'static str,
}

type R<T> = Result<T, &'static str>;

/// Parses a framed command (lines and literals, ending in CRLF). `None`:
/// not one of ours (imap-codec's turn).
pub fn parse(input: &[u8]) -> Option<Result<(String, Cmd), SyntaxError>> {
    let tag = super::framer::parse_tag(input)?;
    let mut p = P {
        b: input,
        i: tag.len() + 1,
    };
    let name = p.atom_upper().ok()?;
    let (uid, name) = if name == "UID" {
        if !p.eat(b' ') {
            return None;
        }
        (true, p.atom_upper().ok()?)
    } else {
        (false, name)
    };
    let known = matches!(
        name.as_str(),
        "FETCH" | "STORE" | "COPY" | "MOVE" | "SEARCH" | "SORT" | "THREAD" | "REPLACE"
    ) || (uid && name == "EXPUNGE")
        || (!uid
            && matches!(
                name.as_str(),
                "LIST"
                    | "APPEND"
                    | "CREATE"
                    | "STATUS"
                    | "ENABLE"
                    | "GETACL"
                    | "SETACL"
                    | "DELETEACL"
                    | "LISTRIGHTS"
                    | "MYRIGHTS"
                    | "GETMETADATA"
                    | "SETMETADATA"
                    | "UNAUTHENTICATE"
                    | "GENURLAUTH"
                    | "RESETKEY"
                    | "URLFETCH"
                    | "CANCELUPDATE"
                    | "NOTIFY"
            ));
    if !known {
        return None;
    }
    let r = p.command(uid, &name).and_then(|c| {
        p.end()?;
        Ok(c)
    });
    Some(match r {
        Ok(c) => Ok((tag, c)),
        Err(reason) => Err(SyntaxError {
            tag,
            command: name,
            reason,
        }),
    })
}

/// Parses the text of a section (`1.2.MIME`, `HEADER.FIELDS (TO)`, as in
/// an IMAP URL's `;SECTION=`): `None` when it is not one.
pub fn parse_section(text: &str) -> Option<Section<'static>> {
    let s = format!("[{text}]");
    let mut p = P {
        b: s.as_bytes(),
        i: 0,
    };
    let sec = p.section().ok()??;
    (p.i == s.len()).then_some(sec)
}

/// Parses a search program on its own (tests, and SEARCH in other
/// commands).
#[cfg(test)]
pub fn parse_search_keys(s: &str) -> R<Key> {
    let line = format!("{s}\r\n");
    let mut p = P {
        b: line.as_bytes(),
        i: 0,
    };
    let k = p.search_program()?;
    p.end()?;
    Ok(k)
}

#[cfg(test)]
pub fn parse_seq_set(s: &str) -> R<SeqSet> {
    let mut p = P {
        b: s.as_bytes(),
        i: 0,
    };
    let set = p.seq_set()?;
    if p.i != s.len() {
        return Err("trailing bytes");
    }
    Ok(set)
}

struct P<'a> {
    b: &'a [u8],
    i: usize,
}

fn is_atom_char(c: u8) -> bool {
    c > 0x20 && c < 0x7f && !matches!(c, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b']')
}

impl<'a> P<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn sp(&mut self) -> R<()> {
        if self.eat(b' ') {
            Ok(())
        } else {
            Err("expected a space")
        }
    }

    fn expect(&mut self, c: u8, what: &'static str) -> R<()> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(what)
        }
    }

    /// Case-insensitive keyword.
    fn keyword(&mut self, kw: &str) -> bool {
        let end = self.i + kw.len();
        match self.b.get(self.i..end) {
            Some(s) if s.eq_ignore_ascii_case(kw.as_bytes()) => {
                // A keyword ends where an atom would.
                if self.b.get(end).is_some_and(|&c| is_atom_char(c)) {
                    return false;
                }
                self.i = end;
                true
            }
            _ => false,
        }
    }

    fn end(&mut self) -> R<()> {
        let rest = self.b.get(self.i..).unwrap_or_default();
        if rest == b"\r\n" || rest == b"\n" {
            self.i = self.b.len();
            Ok(())
        } else {
            Err("unexpected characters at end of command")
        }
    }

    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a [u8] {
        let start = self.i;
        while self.peek().is_some_and(&f) {
            self.i += 1;
        }
        self.b.get(start..self.i).unwrap_or_default()
    }

    fn atom(&mut self) -> R<&'a str> {
        let a = self.take_while(is_atom_char);
        if a.is_empty() {
            return Err("expected an atom");
        }
        std::str::from_utf8(a).map_err(|_| "atom is not ASCII")
    }

    fn atom_upper(&mut self) -> R<String> {
        Ok(self.atom()?.to_ascii_uppercase())
    }

    fn number64(&mut self) -> R<u64> {
        let d = self.take_while(|c| c.is_ascii_digit());
        if d.is_empty() || d.len() > 19 {
            return Err("expected a number");
        }
        std::str::from_utf8(d)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("number out of range")
    }

    fn number(&mut self) -> R<u32> {
        u32::try_from(self.number64()?).map_err(|_| "number out of range")
    }

    fn nz_number(&mut self) -> R<u32> {
        match self.number()? {
            0 => Err("zero is not allowed here"),
            n => Ok(n),
        }
    }

    /// quoted / literal (also literal8 when `allow8`).
    fn string(&mut self) -> R<Cow<'a, [u8]>> {
        match self.peek() {
            Some(b'"') => self.quoted(),
            Some(b'{') => self.literal(),
            Some(b'~') => {
                self.i += 1;
                self.literal()
            }
            _ => Err("expected a string"),
        }
    }

    fn quoted(&mut self) -> R<Cow<'a, [u8]>> {
        self.expect(b'"', "expected a quote")?;
        let start = self.i;
        let mut out: Option<Vec<u8>> = None;
        loop {
            match self.peek() {
                None | Some(b'\r') | Some(b'\n') => return Err("unterminated quoted string"),
                Some(b'"') => {
                    let s = match out {
                        Some(v) => Cow::Owned(v),
                        None => Cow::Borrowed(self.b.get(start..self.i).unwrap_or_default()),
                    };
                    self.i += 1;
                    return Ok(s);
                }
                Some(b'\\') => {
                    let v = out.get_or_insert_with(|| {
                        self.b.get(start..self.i).unwrap_or_default().to_vec()
                    });
                    self.i += 1;
                    match self.peek() {
                        Some(c @ (b'"' | b'\\')) => {
                            v.push(c);
                            self.i += 1;
                        }
                        _ => return Err("bad escape in quoted string"),
                    }
                }
                Some(c) => {
                    if let Some(v) = out.as_mut() {
                        v.push(c);
                    }
                    self.i += 1;
                }
            }
        }
    }

    fn literal(&mut self) -> R<Cow<'a, [u8]>> {
        self.expect(b'{', "expected a literal")?;
        let n = self.number64()?;
        self.eat(b'+');
        self.expect(b'}', "bad literal")?;
        self.eat(b'\r');
        self.expect(b'\n', "bad literal")?;
        let n = usize::try_from(n).map_err(|_| "literal too big")?;
        let end = self.i.checked_add(n).ok_or("literal too big")?;
        let data = self
            .b
            .get(self.i..end)
            .ok_or("literal shorter than announced")?;
        self.i = end;
        Ok(Cow::Borrowed(data))
    }

    /// Does a string (quoted, literal or literal8 `~{`) start here? A `~`
    /// alone is an ATOM-CHAR: `~foo` is an atom (RFC 9051 9), not a
    /// literal8.
    fn at_string(&self) -> bool {
        match self.peek() {
            Some(b'"' | b'{') => true,
            Some(b'~') => self.b.get(self.i + 1) == Some(&b'{'),
            _ => false,
        }
    }

    /// astring = 1*ASTRING-CHAR / string (ASTRING-CHAR includes "]").
    fn astring(&mut self) -> R<Cow<'a, [u8]>> {
        match self.peek() {
            _ if self.at_string() => self.string(),
            _ => {
                let a = self.take_while(|c| is_atom_char(c) || c == b']');
                if a.is_empty() {
                    Err("expected an astring")
                } else {
                    Ok(Cow::Borrowed(a))
                }
            }
        }
    }

    fn astring_utf8(&mut self) -> R<String> {
        String::from_utf8(self.astring()?.into_owned()).map_err(|_| "string is not UTF-8")
    }

    fn mailbox(&mut self) -> R<Vec<u8>> {
        Ok(self.astring()?.into_owned())
    }

    /// list-mailbox = 1*list-char / string.
    fn list_mailbox(&mut self) -> R<Vec<u8>> {
        match self.peek() {
            _ if self.at_string() => Ok(self.string()?.into_owned()),
            _ => {
                let a = self.take_while(|c| is_atom_char(c) || matches!(c, b'%' | b'*' | b']'));
                if a.is_empty() {
                    Err("expected a mailbox pattern")
                } else {
                    Ok(a.to_vec())
                }
            }
        }
    }

    fn seq_num(&mut self) -> R<SeqNum> {
        if self.eat(b'*') {
            Ok(SeqNum::Star)
        } else {
            Ok(SeqNum::Num(self.nz_number()?))
        }
    }

    fn seq_set(&mut self) -> R<SeqSet> {
        if self.eat(b'$') {
            return Ok(SeqSet::Saved);
        }
        let mut out = Vec::new();
        loop {
            let a = self.seq_num()?;
            let b = if self.eat(b':') { self.seq_num()? } else { a };
            out.push((a, b));
            if !self.eat(b',') {
                break;
            }
        }
        Ok(SeqSet::Ranges(out))
    }

    /// A parenthesized list of items read by `f`, possibly empty.
    fn paren_list<T>(&mut self, mut f: impl FnMut(&mut Self) -> R<T>) -> R<Vec<T>> {
        self.expect(b'(', "expected '('")?;
        let mut out = Vec::new();
        if self.eat(b')') {
            return Ok(out);
        }
        loop {
            out.push(f(self)?);
            if self.eat(b')') {
                return Ok(out);
            }
            self.sp()?;
        }
    }

    /// A flag: `\Seen`, `$Keyword`, `keyword`.
    fn flag(&mut self) -> R<String> {
        let bs = self.eat(b'\\');
        let a = self.atom()?;
        Ok(if bs { format!("\\{a}") } else { a.to_string() })
    }

    fn date(&mut self) -> R<NaiveDate> {
        let quoted = self.eat(b'"');
        let day = self.number()?;
        self.expect(b'-', "bad date")?;
        let mon = self.take_while(|c| c.is_ascii_alphabetic());
        let month = MONTHS
            .iter()
            .position(|m| m.as_bytes().eq_ignore_ascii_case(mon))
            .ok_or("bad month")?;
        self.expect(b'-', "bad date")?;
        let year = self.number()?;
        if quoted {
            self.expect(b'"', "bad date")?;
        }
        let year = i32::try_from(year).map_err(|_| "bad year")?;
        NaiveDate::from_ymd_opt(year, month as u32 + 1, day).ok_or("no such date")
    }

    fn command(&mut self, uid: bool, name: &str) -> R<Cmd> {
        match name {
            "FETCH" => {
                self.sp()?;
                self.fetch(uid)
            }
            "STORE" => {
                self.sp()?;
                self.store(uid)
            }
            "COPY" | "MOVE" => {
                self.sp()?;
                let set = self.seq_set()?;
                self.sp()?;
                let mailbox = self.mailbox()?;
                Ok(Cmd::Copy {
                    uid,
                    set,
                    mailbox,
                    moving: name == "MOVE",
                })
            }
            "EXPUNGE" => {
                self.sp()?;
                Ok(Cmd::UidExpunge {
                    set: self.seq_set()?,
                })
            }
            "SEARCH" => {
                self.sp()?;
                self.search(uid)
            }
            "SORT" => {
                self.sp()?;
                let mut ret = None;
                if self.keyword("RETURN") {
                    self.sp()?;
                    ret = Some(self.return_opts()?);
                    self.sp()?;
                }
                let criteria = self.paren_list(|p| {
                    let rev = p.keyword("REVERSE");
                    if rev {
                        p.sp()?;
                    }
                    let k = match p.atom_upper()?.as_str() {
                        "ARRIVAL" => SortKey::Arrival,
                        "CC" => SortKey::Cc,
                        "DATE" => SortKey::Date,
                        "FROM" => SortKey::From,
                        "SIZE" => SortKey::Size,
                        "SUBJECT" => SortKey::Subject,
                        "TO" => SortKey::To,
                        "DISPLAYFROM" => SortKey::DisplayFrom,
                        "DISPLAYTO" => SortKey::DisplayTo,
                        _ => return Err("unknown sort criterion"),
                    };
                    Ok((rev, k))
                })?;
                if criteria.is_empty() {
                    return Err("empty sort criteria");
                }
                self.sp()?;
                let charset = self.astring_utf8()?;
                self.sp()?;
                let key = self.search_program()?;
                Ok(Cmd::Sort {
                    uid,
                    ret,
                    criteria,
                    charset,
                    key,
                })
            }
            "THREAD" => {
                self.sp()?;
                let algo = match self.atom_upper()?.as_str() {
                    "ORDEREDSUBJECT" => ThreadAlgo::OrderedSubject,
                    "REFERENCES" => ThreadAlgo::References,
                    _ => return Err("unknown threading algorithm"),
                };
                self.sp()?;
                let charset = self.astring_utf8()?;
                self.sp()?;
                let key = self.search_program()?;
                Ok(Cmd::Thread {
                    uid,
                    algo,
                    charset,
                    key,
                })
            }
            "LIST" => {
                self.sp()?;
                self.list()
            }
            "CREATE" => {
                self.sp()?;
                let mailbox = self.mailbox()?;
                let mut uses = Vec::new();
                if self.eat(b' ') {
                    // RFC 6154 3: CREATE name (USE (\Drafts ...)).
                    self.expect(b'(', "expected '('")?;
                    if !self.keyword("USE") {
                        return Err("unknown CREATE parameter");
                    }
                    self.sp()?;
                    uses = self.paren_list(|p| p.flag())?;
                    self.expect(b')', "expected ')'")?;
                }
                Ok(Cmd::Create { mailbox, uses })
            }
            "STATUS" => {
                self.sp()?;
                let mailbox = self.mailbox()?;
                self.sp()?;
                let items = self.status_items()?;
                if items.is_empty() {
                    return Err("empty STATUS item list");
                }
                Ok(Cmd::Status { mailbox, items })
            }
            "ENABLE" => {
                let mut caps = Vec::new();
                while self.eat(b' ') {
                    caps.push(self.atom_upper()?);
                }
                if caps.is_empty() {
                    return Err("ENABLE needs a capability");
                }
                Ok(Cmd::Enable { caps })
            }
            "GETACL" | "MYRIGHTS" => {
                self.sp()?;
                let mailbox = self.mailbox()?;
                Ok(if name == "GETACL" {
                    Cmd::GetAcl { mailbox }
                } else {
                    Cmd::MyRights { mailbox }
                })
            }
            "DELETEACL" | "LISTRIGHTS" => {
                self.sp()?;
                let mailbox = self.mailbox()?;
                self.sp()?;
                let id = self.astring_utf8()?;
                Ok(if name == "DELETEACL" {
                    Cmd::DeleteAcl { mailbox, id }
                } else {
                    Cmd::ListRights { mailbox, id }
                })
            }
            "APPEND" => {
                self.sp()?;
                self.append()
            }
            "REPLACE" => {
                self.sp()?;
                let num = self.seq_num()?;
                self.sp()?;
                let mailbox = self.mailbox()?;
                self.sp()?;
                let message = self.append_message()?;
                Ok(Cmd::Replace {
                    uid,
                    num,
                    mailbox,
                    message,
                })
            }
            "UNAUTHENTICATE" => Ok(Cmd::Unauthenticate),
            "GETMETADATA" => {
                self.sp()?;
                self.getmetadata()
            }
            "CANCELUPDATE" => {
                let mut tags = Vec::new();
                while self.peek() == Some(b' ') {
                    self.sp()?;
                    tags.push(self.astring_utf8()?);
                    if tags.len() > 1000 {
                        return Err("too many tags");
                    }
                }
                if tags.is_empty() {
                    return Err("expected a tag");
                }
                Ok(Cmd::CancelUpdate { tags })
            }
            "SETMETADATA" => {
                self.sp()?;
                self.setmetadata()
            }
            "GENURLAUTH" => {
                let mut items = Vec::new();
                while self.eat(b' ') {
                    let url = self.astring_utf8()?;
                    self.sp()?;
                    items.push((url, self.atom_upper()?));
                    if items.len() > super::url::MAX_URLS {
                        return Err("too many URLs");
                    }
                }
                if items.is_empty() {
                    return Err("GENURLAUTH needs a URL");
                }
                Ok(Cmd::GenUrlAuth { items })
            }
            "RESETKEY" => {
                let mut mailbox = None;
                let mut mechs = Vec::new();
                if self.eat(b' ') {
                    mailbox = Some(self.mailbox()?);
                    while self.eat(b' ') {
                        mechs.push(self.atom_upper()?);
                        if mechs.len() > super::url::MAX_URLS {
                            return Err("too many mechanisms");
                        }
                    }
                }
                Ok(Cmd::ResetKey { mailbox, mechs })
            }
            "URLFETCH" => {
                let mut urls = Vec::new();
                while self.eat(b' ') {
                    urls.push(self.astring_utf8()?);
                    if urls.len() > super::url::MAX_URLS {
                        return Err("too many URLs");
                    }
                }
                if urls.is_empty() {
                    return Err("URLFETCH needs a URL");
                }
                Ok(Cmd::UrlFetch { urls })
            }
            "NOTIFY" => {
                self.sp()?;
                Ok(Cmd::Notify(self.notify()?))
            }
            "SETACL" => {
                self.sp()?;
                let mailbox = self.mailbox()?;
                self.sp()?;
                let id = self.astring_utf8()?;
                self.sp()?;
                let rights = self.astring_utf8()?;
                Ok(Cmd::SetAcl {
                    mailbox,
                    id,
                    rights,
                })
            }
            _ => Err("unknown command"),
        }
    }

    /// APPEND mailbox 1*(SP append-message) (RFC 9051 6.3.12, MULTIAPPEND
    /// RFC 3502 6.3.11). A loop: the count is bounded by the framed
    /// command's size (and checked against `append::MAX_MESSAGES` later).
    /// A CATENATE message (RFC 4469 5) is accepted as the only message of
    /// an APPEND; CATENATE inside a MULTIAPPEND is refused with BAD.
    /// NOTIFY's arguments (RFC 5465 6), up to the CRLF:
    /// `NONE` / `SET [STATUS] 1*(SP event-group)`.
    fn notify(&mut self) -> R<Parsed> {
        let at_end = |p: &Self| matches!(p.peek(), None | Some(b'\r' | b'\n'));
        let verb = self.atom_upper()?;
        if verb == "NONE" {
            return if at_end(self) {
                Ok(Parsed::None)
            } else {
                Err("junk after NONE")
            };
        }
        if verb != "SET" {
            return Err("expected SET or NONE");
        }
        self.sp()?;
        let mut spec = Spec {
            status: false,
            groups: Vec::new(),
            fetch: None,
        };
        if self.peek() != Some(b'(') {
            if !self.atom()?.eq_ignore_ascii_case("STATUS") {
                return Err("expected STATUS or an event group");
            }
            spec.status = true;
            self.sp()?;
        }
        let mut names = 0;
        let mut bad_event = false;
        loop {
            self.expect(b'(', "expected an event group")?;
            let filter = match self.atom_upper()?.as_str() {
                "SELECTED" => Filter::Selected { delayed: false },
                "SELECTED-DELAYED" => Filter::Selected { delayed: true },
                "INBOXES" => Filter::Inboxes,
                "PERSONAL" => Filter::Personal,
                "SUBSCRIBED" => Filter::Subscribed,
                "SUBTREE" => {
                    self.sp()?;
                    Filter::Subtree(self.notify_mailboxes(&mut names)?)
                }
                "MAILBOXES" => {
                    self.sp()?;
                    Filter::Mailboxes(self.notify_mailboxes(&mut names)?)
                }
                _ => return Err("unknown filter"),
            };
            let selected = matches!(filter, Filter::Selected { .. });
            if selected && spec.selected().is_some() {
                return Err("SELECTED given twice");
            }
            self.sp()?;
            let mut ev = Events::default();
            if self.eat(b'(') {
                loop {
                    match self.atom_upper()?.as_str() {
                        "MESSAGENEW" => {
                            ev.new = true;
                            if self.peek() == Some(b' ') && self.b.get(self.i + 1) == Some(&b'(') {
                                self.sp()?;
                                let atts = self.notify_fetch_atts()?;
                                // 5.2: fetch attributes only for the
                                // selected mailbox.
                                if !selected {
                                    return Err(
                                        "MessageNew fetch attributes are only for SELECTED",
                                    );
                                }
                                spec.fetch = Some(atts);
                            }
                        }
                        "MESSAGEEXPUNGE" => ev.expunge = true,
                        "FLAGCHANGE" => ev.flags = true,
                        "MAILBOXNAME" => ev.name = true,
                        "SUBSCRIPTIONCHANGE" => ev.subscription = true,
                        "ANNOTATIONCHANGE" | "MAILBOXMETADATACHANGE" | "SERVERMETADATACHANGE" => {
                            bad_event = true
                        }
                        _ => return Err("unknown event"),
                    }
                    if self.eat(b')') {
                        break;
                    }
                    self.sp()?;
                }
                // 5.2, 5.3, 5.4: MessageNew and MessageExpunge go together;
                // FlagChange needs both.
                if ev.new != ev.expunge || (ev.flags && !ev.new) {
                    return Err("MessageNew and MessageExpunge go together; FlagChange needs both");
                }
            } else if !self.atom()?.eq_ignore_ascii_case("NONE") {
                return Err("expected events or NONE");
            }
            self.expect(b')', "expected ) after the events")?;
            spec.groups.push((filter, ev));
            if at_end(self) {
                break;
            }
            self.sp()?;
        }
        if bad_event {
            return Ok(Parsed::BadEvent);
        }
        Ok(Parsed::Set(spec))
    }

    /// one-or-more-mailbox (RFC 5465 6) as store names; at most
    /// `notify::MAX_NAMES` in one command (`count`).
    fn notify_mailboxes(&mut self, count: &mut usize) -> R<Vec<String>> {
        let mut one = |p: &mut Self| -> R<String> {
            *count += 1;
            if *count > super::notify::MAX_NAMES {
                return Err("too many mailbox names");
            }
            let raw = p.mailbox()?;
            let name = super::wire::mailbox_from_bytes(&raw).ok_or("mailbox name is not UTF-8")?;
            // A name the store would refuse names no mailbox; keep it as is.
            Ok(crate::store::normalize_name(&name).unwrap_or(name))
        };
        if self.peek() == Some(b'(') {
            let out = self.paren_list(&mut one)?;
            if out.is_empty() {
                return Err("expected a mailbox");
            }
            Ok(out)
        } else {
            Ok(vec![one(self)?])
        }
    }

    /// MessageNew's fetch attributes: a parenthesised list that parses as
    /// FETCH's, kept as the client wrote it (without the parentheses; no
    /// strings or literals, at most `notify::MAX_FETCH_ATTS` octets).
    fn notify_fetch_atts(&mut self) -> R<String> {
        let start = self.i;
        let mut items = Vec::new();
        let mut extra = FetchExtra::default();
        self.paren_list(|p| p.fetch_att(&mut items, &mut extra))?;
        let text = self.b.get(start + 1..self.i - 1).unwrap_or_default();
        if text.len() > super::notify::MAX_FETCH_ATTS {
            return Err("fetch attributes too long");
        }
        if text
            .iter()
            .any(|c| matches!(c, b'\r' | b'\n' | b'{' | b'"'))
        {
            return Err("unexpected character in fetch attributes");
        }
        if items.is_empty() && extra == FetchExtra::default() {
            return Err("empty FETCH item list");
        }
        dedup_fetch_items(items)?;
        Ok(String::from_utf8_lossy(text).into_owned())
    }

    fn append(&mut self) -> R<Cmd> {
        let mailbox = self.mailbox()?;
        let mut messages = Vec::new();
        let mut catenate = None;
        while self.eat(b' ') {
            match self.append_item()? {
                AppendItem::Msg(m) => messages.push(m),
                AppendItem::Cat { flags, date, parts } => {
                    if catenate.is_some() {
                        return Err("CATENATE within MULTIAPPEND is not supported");
                    }
                    catenate = Some((flags, date, parts));
                }
            }
        }
        match catenate {
            Some(_) if !messages.is_empty() => Err("CATENATE within MULTIAPPEND is not supported"),
            Some((flags, date, parts)) => Ok(Cmd::Catenate {
                mailbox,
                flags,
                date,
                parts,
            }),
            None if messages.is_empty() => Err("expected the message literal"),
            None => Ok(Cmd::Append { mailbox, messages }),
        }
    }

    /// One append-message without CATENATE (REPLACE, RFC 8508 6).
    fn append_message(&mut self) -> R<AppendMsg> {
        match self.append_item()? {
            AppendItem::Msg(m) => Ok(m),
            AppendItem::Cat { .. } => Err("CATENATE is not allowed here"),
        }
    }

    /// append-message = [flag-list SP] [date-time SP] (literal / literal8
    /// / "UTF8" SP "(" literal8 ")" / "CATENATE" SP "(" cat-part ... ")")
    /// (RFC 3502, RFC 3516, RFC 6855 4, RFC 4469 5).
    fn append_item(&mut self) -> R<AppendItem> {
        let mut flags = Vec::new();
        if self.peek() == Some(b'(') {
            flags = self.paren_list(|p| p.flag())?;
            self.sp()?;
        }
        let mut date = None;
        if self.peek() == Some(b'"') {
            date = Some(self.date_time()?);
            self.sp()?;
        }
        if self.keyword("CATENATE") {
            self.sp()?;
            let parts = self.paren_list(|p| {
                let kind = p.atom_upper()?;
                p.sp()?;
                match kind.as_str() {
                    "TEXT" => match p.peek() {
                        Some(b'{') => Ok(CatPart::Text(p.literal()?.into_owned())),
                        Some(b'~') => {
                            p.i += 1;
                            Ok(CatPart::Text(p.literal()?.into_owned()))
                        }
                        _ => Err("TEXT needs a literal"),
                    },
                    "URL" => Ok(CatPart::Url(p.astring_utf8()?)),
                    _ => Err("expected TEXT or URL"),
                }
            })?;
            if parts.is_empty() {
                return Err("empty CATENATE list");
            }
            if parts.len() > super::url::MAX_URLS {
                return Err("too many CATENATE parts");
            }
            return Ok(AppendItem::Cat { flags, date, parts });
        }
        let data = if self.keyword("UTF8") {
            self.sp()?;
            self.expect(b'(', "expected '('")?;
            self.expect(b'~', "expected literal8")?;
            let d = self.literal()?.into_owned();
            self.expect(b')', "expected ')'")?;
            d
        } else {
            match self.peek() {
                Some(b'{') => self.literal()?.into_owned(),
                Some(b'~') => {
                    self.i += 1;
                    self.literal()?.into_owned()
                }
                _ => return Err("expected the message literal"),
            }
        };
        Ok(AppendItem::Msg(AppendMsg { flags, date, data }))
    }

    /// GETMETADATA [SP options] SP mailbox SP entries (RFC 5464 5).
    fn getmetadata(&mut self) -> R<Cmd> {
        let mut maxsize = None;
        let mut depth = MetaDepth::Zero;
        if self.peek() == Some(b'(') {
            self.paren_list(|p| {
                match p.atom_upper()?.as_str() {
                    "MAXSIZE" => {
                        p.sp()?;
                        maxsize = Some(p.number()?);
                    }
                    "DEPTH" => {
                        p.sp()?;
                        depth = match p.atom_upper()?.as_str() {
                            "0" => MetaDepth::Zero,
                            "1" => MetaDepth::One,
                            "INFINITY" => MetaDepth::Infinity,
                            _ => return Err("DEPTH is 0, 1 or infinity"),
                        };
                    }
                    _ => return Err("unknown GETMETADATA option"),
                }
                Ok(())
            })?;
            self.sp()?;
        }
        let mailbox = self.mailbox()?;
        self.sp()?;
        let entries = if self.peek() == Some(b'(') {
            self.paren_list(|p| p.meta_entry())?
        } else {
            vec![self.meta_entry()?]
        };
        if entries.len() > super::metadata::MAX_ENTRIES_PER_COMMAND {
            return Err("too many entries in one command");
        }
        Ok(Cmd::GetMetadata {
            mailbox,
            entries,
            maxsize,
            depth,
        })
    }

    /// SETMETADATA SP mailbox SP "(" entry SP value *(...) ")" (RFC 5464 5).
    fn setmetadata(&mut self) -> R<Cmd> {
        let mailbox = self.mailbox()?;
        self.sp()?;
        let items = self.paren_list(|p| {
            let entry = p.meta_entry()?;
            if !super::metadata::settable(&entry) {
                return Err("entry names /shared/... or /private/...");
            }
            p.sp()?;
            let value = if p.keyword("NIL") {
                None
            } else {
                Some(p.string()?.into_owned())
            };
            Ok((entry, value))
        })?;
        if items.is_empty() || items.len() > super::metadata::MAX_ENTRIES_PER_COMMAND {
            return Err("SETMETADATA needs 1 to 256 entries");
        }
        Ok(Cmd::SetMetadata { mailbox, items })
    }

    fn meta_entry(&mut self) -> R<String> {
        super::metadata::entry(&self.astring()?)
    }

    /// date-time = DQUOTE date-day-fixed "-" date-month "-" date-year SP
    /// time SP zone DQUOTE.
    fn date_time(&mut self) -> R<(i64, i16)> {
        self.expect(b'"', "expected a date-time")?;
        self.eat(b' ');
        let day = self.number()?;
        self.expect(b'-', "bad date-time")?;
        let mon = self.take_while(|c| c.is_ascii_alphabetic());
        let month = MONTHS
            .iter()
            .position(|m| m.as_bytes().eq_ignore_ascii_case(mon))
            .ok_or("bad month")?;
        self.expect(b'-', "bad date-time")?;
        let year = i32::try_from(self.number()?).map_err(|_| "bad year")?;
        self.sp()?;
        let h = self.number()?;
        self.expect(b':', "bad time")?;
        let m = self.number()?;
        self.expect(b':', "bad time")?;
        let sec = self.number()?;
        self.sp()?;
        let sign: i32 = if self.eat(b'+') {
            1
        } else if self.eat(b'-') {
            -1
        } else {
            return Err("bad zone");
        };
        let z = self.take_while(|c| c.is_ascii_digit());
        if z.len() != 4 {
            return Err("bad zone");
        }
        let z: i32 = std::str::from_utf8(z)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("bad zone")?;
        self.expect(b'"', "bad date-time")?;
        let offset_min = sign * ((z / 100) * 60 + z % 100);
        if offset_min.abs() >= 24 * 60 {
            return Err("bad zone");
        }
        let date = NaiveDate::from_ymd_opt(year, month as u32 + 1, day).ok_or("no such date")?;
        let local = date.and_hms_opt(h, m, sec).ok_or("no such time")?;
        let ts = local.and_utc().timestamp() - i64::from(offset_min) * 60;
        Ok((ts, offset_min as i16))
    }

    fn status_items(&mut self) -> R<Vec<StatusItem>> {
        self.paren_list(|p| {
            Ok(match p.atom_upper()?.as_str() {
                "MESSAGES" => StatusItem::Messages,
                "RECENT" => StatusItem::Recent,
                "UIDNEXT" => StatusItem::UidNext,
                "UIDVALIDITY" => StatusItem::UidValidity,
                "UNSEEN" => StatusItem::Unseen,
                "DELETED" => StatusItem::Deleted,
                "SIZE" => StatusItem::Size,
                "HIGHESTMODSEQ" => StatusItem::HighestModSeq,
                "APPENDLIMIT" => StatusItem::AppendLimit,
                "MAILBOXID" => StatusItem::MailboxId,
                "DELETED-STORAGE" => StatusItem::DeletedStorage,
                _ => return Err("unknown STATUS item"),
            })
        })
    }

    fn list(&mut self) -> R<Cmd> {
        let mut opts = ListOpts::default();
        if self.peek() == Some(b'(') {
            opts.extended = true;
            let sel = self.paren_list(|p| p.atom_upper())?;
            for s in sel {
                match s.as_str() {
                    "SUBSCRIBED" => opts.sel_subscribed = true,
                    "SPECIAL-USE" => opts.sel_special_use = true,
                    "RECURSIVEMATCH" => opts.recursive_match = true,
                    // RFC 5258 3.1: all our mailboxes are local.
                    "REMOTE" => {}
                    _ => return Err("unknown LIST selection option"),
                }
            }
            // RECURSIVEMATCH needs a base option (RFC 5258 3.1).
            if opts.recursive_match && !opts.sel_subscribed && !opts.sel_special_use {
                return Err("RECURSIVEMATCH needs another selection option");
            }
            self.sp()?;
        }
        let reference = self.mailbox()?;
        self.sp()?;
        let patterns = if self.peek() == Some(b'(') {
            opts.extended = true;
            let v = self.paren_list(|p| p.list_mailbox())?;
            if v.is_empty() {
                return Err("empty pattern list");
            }
            v
        } else {
            vec![self.list_mailbox()?]
        };
        if self.eat(b' ') {
            opts.extended = true;
            if !self.keyword("RETURN") {
                return Err("expected RETURN");
            }
            self.sp()?;
            self.expect(b'(', "expected '('")?;
            let mut first = true;
            while !self.eat(b')') {
                if !first {
                    self.sp()?;
                }
                first = false;
                match self.atom_upper()?.as_str() {
                    "SUBSCRIBED" => opts.ret_subscribed = true,
                    "CHILDREN" => opts.ret_children = true,
                    "SPECIAL-USE" => opts.ret_special_use = true,
                    "MYRIGHTS" => opts.ret_myrights = true,
                    "STATUS" => {
                        self.sp()?;
                        opts.ret_status = Some(self.status_items()?);
                    }
                    _ => return Err("unknown LIST return option"),
                }
            }
        }
        Ok(Cmd::List {
            reference,
            patterns,
            opts,
        })
    }

    fn store(&mut self, uid: bool) -> R<Cmd> {
        let set = self.seq_set()?;
        self.sp()?;
        let mut unchanged_since = None;
        if self.peek() == Some(b'(') {
            let mods = self.paren_list(|p| {
                if !p.keyword("UNCHANGEDSINCE") {
                    return Err("unknown STORE modifier");
                }
                p.sp()?;
                p.number64()
            })?;
            unchanged_since = mods.last().copied();
            if unchanged_since.is_none() {
                return Err("empty STORE modifier list");
            }
            self.sp()?;
        }
        let op = if self.eat(b'+') {
            FlagOp::Add
        } else if self.eat(b'-') {
            FlagOp::Remove
        } else {
            FlagOp::Replace
        };
        let silent = match self.atom_upper()?.as_str() {
            "FLAGS" => false,
            "FLAGS.SILENT" => true,
            _ => return Err("expected FLAGS"),
        };
        self.sp()?;
        let flags = if self.peek() == Some(b'(') {
            self.paren_list(|p| p.flag())?
        } else {
            let mut v = vec![self.flag()?];
            while self.eat(b' ') {
                v.push(self.flag()?);
            }
            v
        };
        Ok(Cmd::Store {
            uid,
            set,
            op,
            silent,
            flags,
            unchanged_since,
        })
    }

    fn fetch(&mut self, uid: bool) -> R<Cmd> {
        let set = self.seq_set()?;
        self.sp()?;
        let mut items = Vec::new();
        let mut extra = FetchExtra::default();
        if self.peek() == Some(b'(') {
            self.paren_list(|p| p.fetch_att(&mut items, &mut extra))?;
        } else {
            let save = self.i;
            match self.atom_upper()?.as_str() {
                "ALL" => items.extend([
                    MessageDataItemName::Flags,
                    MessageDataItemName::InternalDate,
                    MessageDataItemName::Rfc822Size,
                    MessageDataItemName::Envelope,
                ]),
                "FAST" => items.extend([
                    MessageDataItemName::Flags,
                    MessageDataItemName::InternalDate,
                    MessageDataItemName::Rfc822Size,
                ]),
                "FULL" => items.extend([
                    MessageDataItemName::Flags,
                    MessageDataItemName::InternalDate,
                    MessageDataItemName::Rfc822Size,
                    MessageDataItemName::Envelope,
                    MessageDataItemName::Body,
                ]),
                _ => {
                    self.i = save;
                    self.fetch_att(&mut items, &mut extra)?;
                }
            }
        }
        let mut changed_since = None;
        let mut vanished = false;
        if self.eat(b' ') {
            self.paren_list(|p| {
                match p.atom_upper()?.as_str() {
                    "CHANGEDSINCE" => {
                        p.sp()?;
                        changed_since = Some(p.number64()?);
                    }
                    "VANISHED" => vanished = true,
                    _ => return Err("unknown FETCH modifier"),
                }
                Ok(())
            })?;
        }
        if items.is_empty() && extra == FetchExtra::default() {
            return Err("empty FETCH item list");
        }
        let items = dedup_fetch_items(items)?;
        // RFC 7162 3.2.6: VANISHED only with UID FETCH and CHANGEDSINCE.
        if vanished && (!uid || changed_since.is_none()) {
            return Err("VANISHED needs UID FETCH and CHANGEDSINCE");
        }
        Ok(Cmd::Fetch {
            uid,
            set,
            items,
            extra,
            changed_since,
            vanished,
        })
    }

    fn fetch_att(
        &mut self,
        items: &mut Vec<MessageDataItemName<'static>>,
        extra: &mut FetchExtra,
    ) -> R<()> {
        let name = self
            .take_while(|c| is_atom_char(c) && c != b'[')
            .to_ascii_uppercase();
        let name = std::str::from_utf8(&name).map_err(|_| "bad FETCH item")?;
        let item = match name {
            "ENVELOPE" => MessageDataItemName::Envelope,
            "FLAGS" => MessageDataItemName::Flags,
            "INTERNALDATE" => MessageDataItemName::InternalDate,
            "RFC822" => MessageDataItemName::Rfc822,
            "RFC822.HEADER" => MessageDataItemName::Rfc822Header,
            "RFC822.SIZE" => MessageDataItemName::Rfc822Size,
            "RFC822.TEXT" => MessageDataItemName::Rfc822Text,
            "BODYSTRUCTURE" => MessageDataItemName::BodyStructure,
            "UID" => MessageDataItemName::Uid,
            "MODSEQ" => MessageDataItemName::ModSeq,
            "EMAILID" => {
                extra.email_id = true;
                return Ok(());
            }
            "THREADID" => {
                extra.thread_id = true;
                return Ok(());
            }
            "SAVEDATE" => {
                extra.save_date = true;
                return Ok(());
            }
            "PREVIEW" => {
                extra.preview = true;
                // RFC 8970 5: PREVIEW [SP "(" preview-mod *(SP preview-mod) ")"]
                let rest = self.b.get(self.i..).unwrap_or_default();
                if rest.len() > 6 && rest[..6].eq_ignore_ascii_case(b" (LAZY") {
                    self.sp()?;
                    self.paren_list(|p| match p.atom_upper()?.as_str() {
                        "LAZY" => {
                            extra.preview_lazy = true;
                            Ok(())
                        }
                        _ => Err("unknown PREVIEW modifier"),
                    })?;
                }
                return Ok(());
            }
            "BODY" | "BODY.PEEK" => {
                if self.peek() != Some(b'[') {
                    if name == "BODY" {
                        MessageDataItemName::Body
                    } else {
                        return Err("BODY.PEEK needs a section");
                    }
                } else {
                    let section = self.section()?;
                    let partial = self.partial()?;
                    MessageDataItemName::BodyExt {
                        section,
                        partial,
                        peek: name == "BODY.PEEK",
                    }
                }
            }
            "BINARY" | "BINARY.PEEK" | "BINARY.SIZE" => {
                self.expect(b'[', "expected '['")?;
                let mut section = Vec::new();
                if !self.eat(b']') {
                    loop {
                        section.push(NonZeroU32::new(self.nz_number()?).ok_or("zero part")?);
                        if !self.eat(b'.') {
                            break;
                        }
                    }
                    self.expect(b']', "expected ']'")?;
                }
                if name == "BINARY.SIZE" {
                    MessageDataItemName::BinarySize { section }
                } else {
                    let partial = self.partial()?;
                    MessageDataItemName::Binary {
                        section,
                        partial,
                        peek: name == "BINARY.PEEK",
                    }
                }
            }
            _ => return Err("unknown FETCH item"),
        };
        items.push(item);
        Ok(())
    }

    fn partial(&mut self) -> R<Option<(u32, NonZeroU32)>> {
        if !self.eat(b'<') {
            return Ok(None);
        }
        let origin = self.number()?;
        self.expect(b'.', "expected '.' in partial")?;
        let len = NonZeroU32::new(self.nz_number()?).ok_or("zero length")?;
        self.expect(b'>', "expected '>'")?;
        Ok(Some((origin, len)))
    }

    /// `[section-spec]` (RFC 9051 9: section).
    fn section(&mut self) -> R<Option<Section<'static>>> {
        self.expect(b'[', "expected '['")?;
        if self.eat(b']') {
            return Ok(None);
        }
        let mut parts = Vec::new();
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            parts.push(NonZeroU32::new(self.nz_number()?).ok_or("zero part")?);
            if !self.eat(b'.') {
                break;
            }
        }
        let part = Vec1::try_from(parts).ok().map(Part);
        let text = self
            .take_while(|c| c.is_ascii_alphabetic() || c == b'.')
            .to_ascii_uppercase();
        let section = match (text.as_slice(), part) {
            (b"", Some(p)) => Section::Part(p),
            (b"HEADER", p) => Section::Header(p),
            (b"TEXT", p) => Section::Text(p),
            (b"MIME", Some(p)) => Section::Mime(p),
            (b"HEADER.FIELDS" | b"HEADER.FIELDS.NOT", p) => {
                self.sp()?;
                let names = self.paren_list(|p| {
                    let s = p.astring()?.into_owned();
                    AString::try_from(s).map_err(|_| "bad header field name")
                })?;
                let names = Vec1::try_from(names).map_err(|_| "empty header list")?;
                if text == b"HEADER.FIELDS" {
                    Section::HeaderFields(p, names)
                } else {
                    Section::HeaderFieldsNot(p, names)
                }
            }
            _ => return Err("bad section"),
        };
        self.expect(b']', "expected ']'")?;
        Ok(Some(section))
    }

    fn search(&mut self, uid: bool) -> R<Cmd> {
        let mut ret = None;
        if self.keyword("RETURN") {
            self.sp()?;
            ret = Some(self.return_opts()?);
            self.sp()?;
        }
        let mut charset = None;
        if self.keyword("CHARSET") {
            self.sp()?;
            charset = Some(self.astring_utf8()?);
            self.sp()?;
        }
        let key = self.search_program()?;
        Ok(Cmd::Search {
            uid,
            ret,
            charset,
            key,
        })
    }

    /// `(opt ...)` after RETURN in SEARCH and SORT (RFC 4731, RFC 5182,
    /// RFC 5267, RFC 9394).
    fn return_opts(&mut self) -> R<Vec<ReturnOpt>> {
        let opts = self.paren_list(|p| {
            Ok(match p.atom_upper()?.as_str() {
                "MIN" => ReturnOpt::Min,
                "MAX" => ReturnOpt::Max,
                "ALL" => ReturnOpt::All,
                "COUNT" => ReturnOpt::Count,
                "SAVE" => ReturnOpt::Save,
                "UPDATE" => ReturnOpt::Update,
                "PARTIAL" => {
                    p.sp()?;
                    ReturnOpt::Partial(p.partial_range()?)
                }
                _ => return Err("unknown RETURN option"),
            })
        })?;
        // RFC 9394 3.1: one PARTIAL or one ALL, not both.
        let windows = opts
            .iter()
            .filter(|o| matches!(o, ReturnOpt::All | ReturnOpt::Partial(_)))
            .count();
        if windows > 1 {
            return Err("PARTIAL and ALL are mutually exclusive");
        }
        Ok(opts)
    }

    /// `n:m` or `-n:-m` (RFC 9394 3.1).
    fn partial_range(&mut self) -> R<PartialRange> {
        let neg = self.eat(b'-');
        let first = i64::from(self.nz_number()?);
        self.expect(b':', "expected ':' in PARTIAL range")?;
        if self.eat(b'-') != neg {
            return Err("PARTIAL range ends differ in sign");
        }
        let last = i64::from(self.nz_number()?);
        let sign = if neg { -1 } else { 1 };
        Ok(PartialRange {
            first: sign * first,
            last: sign * last,
        })
    }

    /// One or more keys separated by spaces, ANDed.
    fn search_program(&mut self) -> R<Key> {
        let mut keys = vec![self.search_key(0)?];
        while self.peek() == Some(b' ') {
            self.i += 1;
            keys.push(self.search_key(0)?);
        }
        Ok(if keys.len() == 1 {
            keys.pop().unwrap_or(Key::All)
        } else {
            Key::And(keys)
        })
    }

    fn search_key(&mut self, depth: usize) -> R<Key> {
        if depth > MAX_DEPTH {
            return Err("search keys nested too deeply");
        }
        match self.peek() {
            Some(b'(') => {
                self.i += 1;
                let mut keys = vec![self.search_key(depth + 1)?];
                while self.eat(b' ') {
                    keys.push(self.search_key(depth + 1)?);
                }
                self.expect(b')', "expected ')'")?;
                return Ok(if keys.len() == 1 {
                    keys.pop().unwrap_or(Key::All)
                } else {
                    Key::And(keys)
                });
            }
            Some(c) if c.is_ascii_digit() || c == b'*' || c == b'$' => {
                return Ok(Key::SequenceSet(self.seq_set()?));
            }
            _ => {}
        }
        let name = self.atom_upper()?;
        let k = match name.as_str() {
            "ALL" => Key::All,
            "ANSWERED" => Key::Answered,
            "DELETED" => Key::Deleted,
            "DRAFT" => Key::Draft,
            "FLAGGED" => Key::Flagged,
            "SEEN" => Key::Seen,
            "NEW" => Key::New,
            "OLD" => Key::Old,
            "RECENT" => Key::Recent,
            "UNANSWERED" => Key::Unanswered,
            "UNDELETED" => Key::Undeleted,
            "UNDRAFT" => Key::Undraft,
            "UNFLAGGED" => Key::Unflagged,
            "UNSEEN" => Key::Unseen,
            "SAVEDATESUPPORTED" => Key::SaveDateSupported,
            "KEYWORD" | "UNKEYWORD" => {
                self.sp()?;
                let k = self.atom()?.to_string();
                if name == "KEYWORD" {
                    Key::Keyword(k)
                } else {
                    Key::Unkeyword(k)
                }
            }
            "BCC" | "CC" | "FROM" | "TO" | "SUBJECT" => {
                self.sp()?;
                let v = self.astring()?.into_owned();
                let field = match name.as_str() {
                    "BCC" => "Bcc",
                    "CC" => "Cc",
                    "FROM" => "From",
                    "TO" => "To",
                    _ => "Subject",
                };
                Key::Header(field.as_bytes().to_vec(), v)
            }
            "HEADER" => {
                self.sp()?;
                let f = self.astring()?.into_owned();
                self.sp()?;
                let v = self.astring()?.into_owned();
                Key::Header(f, v)
            }
            "BODY" | "TEXT" => {
                self.sp()?;
                let v = self.astring()?.into_owned();
                if name == "BODY" {
                    Key::Body(v)
                } else {
                    Key::Text(v)
                }
            }
            "BEFORE" | "ON" | "SINCE" | "SENTBEFORE" | "SENTON" | "SENTSINCE" | "SAVEDBEFORE"
            | "SAVEDON" | "SAVEDSINCE" => {
                self.sp()?;
                let d = self.date()?;
                match name.as_str() {
                    "BEFORE" => Key::Before(d),
                    "ON" => Key::On(d),
                    "SINCE" => Key::Since(d),
                    "SENTBEFORE" => Key::SentBefore(d),
                    "SENTON" => Key::SentOn(d),
                    "SENTSINCE" => Key::SentSince(d),
                    "SAVEDBEFORE" => Key::SavedBefore(d),
                    "SAVEDON" => Key::SavedOn(d),
                    _ => Key::SavedSince(d),
                }
            }
            "LARGER" | "SMALLER" => {
                self.sp()?;
                let n = self.number64()?;
                if name == "LARGER" {
                    Key::Larger(n)
                } else {
                    Key::Smaller(n)
                }
            }
            "YOUNGER" | "OLDER" => {
                self.sp()?;
                let n = self.nz_number()?;
                if name == "YOUNGER" {
                    Key::Younger(n)
                } else {
                    Key::Older(n)
                }
            }
            "UID" => {
                self.sp()?;
                Key::Uid(self.seq_set()?)
            }
            "NOT" => {
                self.sp()?;
                Key::Not(Box::new(self.search_key(depth + 1)?))
            }
            "OR" => {
                self.sp()?;
                let a = self.search_key(depth + 1)?;
                self.sp()?;
                let b = self.search_key(depth + 1)?;
                Key::Or(Box::new(a), Box::new(b))
            }
            "MODSEQ" => {
                self.sp()?;
                // RFC 7162 3.1.5: [entry-name SP entry-type-req SP] value.
                if self.peek() == Some(b'"') {
                    self.quoted()?;
                    self.sp()?;
                    match self.atom_upper()?.as_str() {
                        "PRIV" | "SHARED" | "ALL" => {}
                        _ => return Err("bad MODSEQ entry type"),
                    }
                    self.sp()?;
                }
                Key::ModSeq(self.number64()?)
            }
            "EMAILID" | "THREADID" => {
                self.sp()?;
                let id = self.atom()?.to_string();
                if name == "EMAILID" {
                    Key::EmailId(id)
                } else {
                    Key::ThreadId(id)
                }
            }
            _ => return Err("unknown search key"),
        };
        Ok(k)
    }
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(s: &str) -> Cmd {
        match parse(format!("{s}\r\n").as_bytes()) {
            Some(Ok((_, c))) => c,
            other => panic!("{s}: {other:?}"),
        }
    }

    fn bad(s: &str) -> bool {
        matches!(parse(format!("{s}\r\n").as_bytes()), Some(Err(_)))
    }

    #[test]
    fn other_commands_go_to_imap_codec() {
        assert!(parse(b"a NOOP\r\n").is_none());
        assert!(parse(b"a SELECT INBOX\r\n").is_none());
        assert!(parse(b"a UID NOOP\r\n").is_none());
        assert!(parse(b"* FETCH 1 FLAGS\r\n").is_none());
    }

    #[test]
    fn rfc9051_6_4_5_fetch_items_and_sections() {
        match cmd("a FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (From \"To\")]<0.100> BINARY[1.2] BINARY.SIZE[] RFC822.SIZE)") {
            Cmd::Fetch { uid, items, .. } => {
                assert!(!uid);
                assert_eq!(items.len(), 5);
                assert!(matches!(
                    &items[1],
                    MessageDataItemName::BodyExt {
                        section: Some(Section::HeaderFields(None, _)),
                        partial: Some((0, _)),
                        peek: true
                    }
                ));
                assert!(matches!(&items[2], MessageDataItemName::Binary { section, .. } if section.len() == 2));
            }
            c => panic!("{c:?}"),
        }
        assert!(
            matches!(cmd("a FETCH 1 BODY[1.2.MIME]"), Cmd::Fetch { items, .. } if matches!(&items[0], MessageDataItemName::BodyExt { section: Some(Section::Mime(_)), .. }))
        );
        assert!(matches!(cmd("a FETCH 1 ALL"), Cmd::Fetch { items, .. } if items.len() == 4));
        assert!(
            matches!(cmd("a FETCH 1 body[]"), Cmd::Fetch { items, .. } if matches!(&items[0], MessageDataItemName::BodyExt { section: None, .. }))
        );
        assert!(bad("a FETCH 1 (FLAGS"));
        assert!(bad("a FETCH 1 BODY[MIME]"));
        assert!(bad("a FETCH 0 FLAGS"));
        assert!(bad("a FETCH 1 NONSENSE"));
    }

    #[test]
    fn rfc7162_fetch_modifiers_and_rfc8474_items() {
        match cmd("a UID FETCH 1:* (FLAGS EMAILID THREADID SAVEDATE) (CHANGEDSINCE 12345 VANISHED)")
        {
            Cmd::Fetch {
                uid,
                extra,
                changed_since,
                vanished,
                ..
            } => {
                assert!(uid && vanished);
                assert_eq!(changed_since, Some(12345));
                assert!(extra.email_id && extra.thread_id && extra.save_date);
            }
            c => panic!("{c:?}"),
        }
        // VANISHED without UID is a protocol error (RFC 7162 3.2.6).
        assert!(bad("a FETCH 1 FLAGS (CHANGEDSINCE 1 VANISHED)"));
    }

    #[test]
    fn rfc7162_store_unchangedsince() {
        assert_eq!(
            cmd("a UID STORE 1,3:5 (UNCHANGEDSINCE 7) +FLAGS.SILENT (\\Seen $Work)"),
            Cmd::Store {
                uid: true,
                set: SeqSet::Ranges(vec![
                    (SeqNum::Num(1), SeqNum::Num(1)),
                    (SeqNum::Num(3), SeqNum::Num(5))
                ]),
                op: FlagOp::Add,
                silent: true,
                flags: vec!["\\Seen".into(), "$Work".into()],
                unchanged_since: Some(7),
            }
        );
        assert!(matches!(
            cmd("a STORE $ FLAGS \\Deleted"),
            Cmd::Store {
                set: SeqSet::Saved,
                op: FlagOp::Replace,
                ..
            }
        ));
    }

    #[test]
    fn rfc4731_search_return_and_rfc5182_saved() {
        match cmd(
            "a UID SEARCH RETURN (MIN MAX SAVE) CHARSET UTF-8 OR SEEN (FROM \"bob\" UID 1:*) NOT $",
        ) {
            Cmd::Search {
                uid,
                ret,
                charset,
                key,
            } => {
                assert!(uid);
                assert_eq!(
                    ret,
                    Some(vec![ReturnOpt::Min, ReturnOpt::Max, ReturnOpt::Save])
                );
                assert_eq!(charset.as_deref(), Some("UTF-8"));
                assert!(key.uses_saved());
            }
            c => panic!("{c:?}"),
        }
        assert!(
            matches!(cmd("a SEARCH RETURN () ALL"), Cmd::Search { ret: Some(r), .. } if r.is_empty())
        );
        assert!(bad("a SEARCH RETURN (BOGUS) ALL"));
        assert!(bad("a SEARCH"));
    }

    #[test]
    fn rfc8514_rfc8474_rfc5032_search_keys() {
        let k = parse_search_keys("SAVEDBEFORE 1-Feb-2024 SAVEDATESUPPORTED EMAILID M1 THREADID T2 YOUNGER 60 MODSEQ \"/flags/\\\\draft\" all 620162338").unwrap();
        match k {
            Key::And(v) => {
                assert_eq!(v.len(), 6);
                assert_eq!(
                    v[0],
                    Key::SavedBefore(NaiveDate::from_ymd_opt(2024, 2, 1).unwrap())
                );
                assert_eq!(v[5], Key::ModSeq(620162338));
            }
            k => panic!("{k:?}"),
        }
        assert!(parse_search_keys("ON \"31-Feb-2024\"").is_err());
    }

    #[test]
    fn search_depth_is_bounded() {
        let deep = "NOT ".repeat(1000) + "ALL";
        assert!(parse_search_keys(&deep).is_err());
        let parens = "(".repeat(1000) + "ALL" + &")".repeat(1000);
        assert!(parse_search_keys(&parens).is_err());
    }

    #[test]
    fn rfc5258_list_extended() {
        match cmd("a LIST (SUBSCRIBED RECURSIVEMATCH) \"\" (\"INBOX\" %/*) RETURN (CHILDREN STATUS (MESSAGES SIZE))") {
            Cmd::List {
                reference,
                patterns,
                opts,
            } => {
                assert!(reference.is_empty());
                assert_eq!(patterns, vec![b"INBOX".to_vec(), b"%/*".to_vec()]);
                assert!(opts.extended && opts.sel_subscribed && opts.recursive_match);
                assert!(opts.ret_children);
                assert_eq!(opts.ret_status, Some(vec![StatusItem::Messages, StatusItem::Size]));
            }
            c => panic!("{c:?}"),
        }
        assert!(matches!(cmd("a LIST \"\" *"), Cmd::List { opts, .. } if !opts.extended));
        assert!(bad("a LIST (RECURSIVEMATCH) \"\" *"));
    }

    #[test]
    fn rfc9051_9_mailbox_names_as_atoms_with_any_atom_char() {
        // `~` is an ATOM-CHAR; only `~{` starts a literal8.
        match cmd("a LIST \"\" ~foo") {
            Cmd::List { patterns, .. } => assert_eq!(patterns, vec![b"~foo".to_vec()]),
            c => panic!("{c:?}"),
        }
        for name in ["~foo", "a~b", "x!#$&'+,-.:;<=>?@^_`|}~", "[x]y"] {
            match cmd(&format!("a STATUS {name} (MESSAGES)")) {
                Cmd::Status { mailbox, .. } => assert_eq!(mailbox, name.as_bytes()),
                c => panic!("{c:?}"),
            }
            match cmd(&format!("a COPY 1 {name}")) {
                Cmd::Copy { mailbox, .. } => assert_eq!(mailbox, name.as_bytes()),
                c => panic!("{c:?}"),
            }
        }
        match cmd("a CREATE ~{4}\r\n~bar") {
            Cmd::Create { mailbox, .. } => assert_eq!(mailbox, b"~bar"),
            c => panic!("{c:?}"),
        }
        // SELECT, EXAMINE, SUBSCRIBE ... go to imap-codec, which agrees.
        use imap_codec::decode::Decoder;
        for line in [
            &b"a SELECT ~foo\r\n"[..],
            b"a EXAMINE ~foo\r\n",
            b"a SUBSCRIBE ~foo\r\n",
            b"a DELETE ~foo\r\n",
            b"a RENAME ~foo ~bar\r\n",
        ] {
            assert!(parse(line).is_none());
            let r = imap_codec::CommandCodec::default().decode(line);
            assert!(
                matches!(r, Ok((&[], _))),
                "{:?}: {r:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn rfc6154_create_use_and_status_items() {
        assert_eq!(
            cmd("a CREATE Archive/2024 (USE (\\Archive))"),
            Cmd::Create {
                mailbox: b"Archive/2024".to_vec(),
                uses: vec!["\\Archive".into()]
            }
        );
        assert!(
            matches!(cmd("a STATUS INBOX (SIZE APPENDLIMIT MAILBOXID HIGHESTMODSEQ)"), Cmd::Status { items, .. } if items.len() == 4)
        );
        assert!(bad("a STATUS INBOX ()"));
    }

    #[test]
    fn rfc4314_acl_commands() {
        assert_eq!(
            cmd("a SETACL INBOX/shared bob@example.com +lrs"),
            Cmd::SetAcl {
                mailbox: b"INBOX/shared".to_vec(),
                id: "bob@example.com".into(),
                rights: "+lrs".into()
            }
        );
        assert!(matches!(cmd("a MYRIGHTS INBOX"), Cmd::MyRights { .. }));
        assert!(bad("a GETACL"));
    }

    #[test]
    fn rfc9051_6_3_12_append_forms() {
        let c = parse(b"a APPEND INBOX (\\Seen) \" 1-Jan-2001 02:00:00 +0200\" {5+}\r\nhello\r\n")
            .unwrap()
            .unwrap()
            .1;
        assert_eq!(
            c,
            Cmd::Append {
                mailbox: b"INBOX".to_vec(),
                messages: vec![AppendMsg {
                    flags: vec!["\\Seen".into()],
                    date: Some((978_307_200, 120)),
                    data: b"hello".to_vec(),
                }],
            }
        );
        let data = |c: Option<Result<(String, Cmd), SyntaxError>>| match c {
            Some(Ok((_, Cmd::Append { messages, .. }))) => {
                messages.into_iter().map(|m| m.data).collect::<Vec<_>>()
            }
            other => panic!("{other:?}"),
        };
        // RFC 6855 4: UTF8 (literal8); RFC 3516: literal8.
        assert_eq!(
            data(parse(b"a APPEND INBOX UTF8 (~{2}\r\nhi)\r\n")),
            [b"hi"]
        );
        assert_eq!(data(parse(b"a APPEND INBOX ~{2}\r\n\0x\r\n")), [b"\0x"]);
        assert!(bad(
            "a APPEND INBOX \"31-Feb-2001 00:00:00 +0000\" {1}\r\nx"
        ));
        assert!(bad("a APPEND INBOX"));
    }

    #[test]
    fn rfc3502_6_3_11_multiappend_and_rfc8508_6_replace_grammar() {
        let c = parse(
            b"a APPEND INBOX (\\Seen) {1+}\r\nx \" 1-Jan-2001 02:00:00 +0200\" ~{2+}\r\n\0y {1+}\r\nz\r\n",
        )
        .unwrap()
        .unwrap()
        .1;
        let Cmd::Append { messages, .. } = c else {
            panic!("{c:?}")
        };
        assert_eq!(messages.len(), 3);
        assert_eq!(messages[0].flags, ["\\Seen"]);
        assert_eq!(messages[1].date, Some((978_307_200, 120)));
        assert_eq!(messages[1].data, b"\0y");
        assert_eq!(messages[2].data, b"z");
        // A trailing space promises another message.
        assert!(bad("a APPEND INBOX {1+}\r\nx \r\n"));
        let c = parse(b"r UID REPLACE 7 Drafts (\\Draft) {1+}\r\nx\r\n")
            .unwrap()
            .unwrap()
            .1;
        assert!(matches!(
            c,
            Cmd::Replace { uid: true, num: SeqNum::Num(7), ref mailbox, ref message }
                if mailbox == b"Drafts" && message.flags == ["\\Draft"] && message.data == b"x"
        ));
        assert!(matches!(
            parse(b"r REPLACE * INBOX {1+}\r\nx\r\n"),
            Some(Ok((
                _,
                Cmd::Replace {
                    uid: false,
                    num: SeqNum::Star,
                    ..
                }
            )))
        ));
        // One message only; the number is required.
        assert!(bad("r REPLACE 1 INBOX {1+}\r\nx {1+}\r\ny"));
        assert!(bad("r REPLACE INBOX {1+}\r\nx"));
        assert!(bad("r REPLACE 0 INBOX {1+}\r\nx"));
        assert!(matches!(
            parse(b"u UNAUTHENTICATE\r\n"),
            Some(Ok((_, Cmd::Unauthenticate)))
        ));
        assert!(bad("u UNAUTHENTICATE now"));
    }

    #[test]
    fn rfc5465_6_notify_is_one_of_the_parsers_commands() {
        use super::super::notify::{Events, Filter, Parsed};
        assert_eq!(cmd("n NOTIFY NONE"), Cmd::Notify(Parsed::None));
        assert!(matches!(
            parse(b"n notify none\n"),
            Some(Ok((_, Cmd::Notify(Parsed::None))))
        ));
        // Mailbox names are astrings: atoms with "]", quoted, literals.
        let input = "n NOTIFY SET (mailboxes (a]b \"Q q\" {3}\r\nx y) (MailboxName))";
        let full = format!("{input}\r\n");
        for i in 0..full.len() - 1 {
            // Whatever part the framer has given, only the whole parses.
            let r = parse(&full.as_bytes()[..i]);
            assert!(!r.as_ref().is_some_and(|r| r.is_ok()), "{i}");
        }
        let Cmd::Notify(Parsed::Set(spec)) = cmd(input) else {
            panic!("{input}");
        };
        assert_eq!(
            spec.groups,
            vec![(
                Filter::Mailboxes(vec!["a]b".into(), "Q q".into(), "x y".into()]),
                Events {
                    name: true,
                    ..Events::default()
                }
            )]
        );
        for b in [
            "n NOTIFY SET (mailboxes () (MailboxName))",
            "n NOTIFY SET (selected (MessageNew (\"x\") MessageExpunge))",
            "n NOTIFY SET (selected (MessageNew () MessageExpunge))",
            "n NOTIFY SET (personal NONE) ",
        ] {
            assert!(bad(b), "{b}");
        }
    }

    #[test]
    fn literals_inside_commands() {
        let c = parse(b"a UID SEARCH SUBJECT {5}\r\nh\"l o\r\n")
            .unwrap()
            .unwrap()
            .1;
        assert!(matches!(c, Cmd::Search { key: Key::Header(_, v), .. } if v == b"h\"l o"));
        // A literal shorter than announced is a syntax error, not a panic.
        assert!(matches!(
            parse(b"a SEARCH SUBJECT {50}\r\nxx\r\n"),
            Some(Err(_))
        ));
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 7u64;
        let pieces: &[&str] = &[
            "a ",
            "UID ",
            "FETCH ",
            "SEARCH ",
            "LIST ",
            "(",
            ")",
            "[",
            "]",
            "<",
            ">",
            "1",
            ":",
            "*",
            "$",
            " ",
            "\"",
            "{3}\r\n",
            "BODY",
            ".PEEK",
            "HEADER.FIELDS",
            "OR ",
            "NOT ",
            "\\",
        ];
        for _ in 0..3000 {
            let mut s = String::from("a ");
            for _ in 0..12 {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                s.push_str(pieces[(seed >> 33) as usize % pieces.len()]);
            }
            s.push_str("\r\n");
            let _ = parse(s.as_bytes());
        }
    }

    #[test]
    fn rfc5464_5_getmetadata_setmetadata_syntax() {
        match cmd("a GETMETADATA (MAXSIZE 1024 DEPTH infinity) \"\" (/Shared/Comment /private)") {
            Cmd::GetMetadata {
                mailbox,
                entries,
                maxsize,
                depth,
            } => {
                assert!(mailbox.is_empty());
                assert_eq!(entries, vec!["/shared/comment", "/private"]);
                assert_eq!(maxsize, Some(1024));
                assert_eq!(depth, MetaDepth::Infinity);
            }
            c => panic!("{c:?}"),
        }
        assert!(matches!(
            cmd("a GETMETADATA INBOX /shared/comment"),
            Cmd::GetMetadata {
                depth: MetaDepth::Zero,
                maxsize: None,
                ..
            }
        ));
        match cmd("a SETMETADATA INBOX (/shared/a NIL /private/b ~{2}\r\n\0x /private/c \"q\")") {
            Cmd::SetMetadata { items, .. } => assert_eq!(
                items,
                vec![
                    ("/shared/a".to_string(), None),
                    ("/private/b".to_string(), Some(b"\0x".to_vec())),
                    ("/private/c".to_string(), Some(b"q".to_vec())),
                ]
            ),
            c => panic!("{c:?}"),
        }
        assert!(bad("a GETMETADATA (DEPTH 2) INBOX /shared/a"));
        assert!(bad("a GETMETADATA (FOO 1) INBOX /shared/a"));
        assert!(bad("a GETMETADATA INBOX /vendor/a"));
        assert!(bad("a SETMETADATA INBOX ()"));
        assert!(bad("a SETMETADATA INBOX (/shared \"root\")"));
        assert!(bad("a SETMETADATA INBOX (/shared/a)"));
    }

    #[test]
    fn rfc8970_5_fetch_preview_syntax() {
        for (line, lazy) in [
            ("a FETCH 1 (PREVIEW)", false),
            ("a FETCH 1 (FLAGS PREVIEW (LAZY) UID)", true),
            ("a FETCH 1 PREVIEW (lazy)", true),
            ("a UID FETCH 1 PREVIEW (CHANGEDSINCE 5)", false),
        ] {
            match cmd(line) {
                Cmd::Fetch { extra, .. } => {
                    assert!(extra.preview, "{line}");
                    assert_eq!(extra.preview_lazy, lazy, "{line}");
                }
                c => panic!("{c:?}"),
            }
        }
        assert!(bad("a FETCH 1 (PREVIEW (LAZY FOO))"));
        assert!(bad("a FETCH 1 (PREVIEW ())"));
    }
}
