//! Message analysis for IMAP FETCH: ENVELOPE, BODY / BODYSTRUCTURE and
//! BODY[section] / BINARY[section] extraction (RFC 3501 6.4.5, 7.4.2;
//! RFC 9051; RFC 3516).
//!
//! Pure and synchronous: bytes in, imap-types values out; no I/O.
//!
//! mail-parser finds the MIME structure (the part tree, where each part's
//! header and body start and end, encapsulated messages, content decoding).
//! Header *values* shown to IMAP clients are read from the raw bytes here,
//! because IMAP wants them as received: ENVELOPE strings keep their RFC 2047
//! encoded-words, BODYSTRUCTURE keeps the case of types and parameters and
//! does not decode RFC 2231 parameters (mail-parser lowercases and decodes).
//!
//! # Nesting cap (issue 9)
//!
//! `MAX_DEPTH` = 64 levels of multipart and message/rfc822 nesting
//! (encoded message/rfc822 parts included). Before mail-parser sees a
//! stored message, [`nesting::exceeds`] measures the nesting mail-parser
//! would build, with an iterative replay of its parse loop. A message
//! nested deeper than `MAX_DEPTH` is never given to mail-parser: it is
//! shown as one opaque part (BODYSTRUCTURE `APPLICATION/OCTET-STREAM`
//! with the top header's encoding and size; `BODY[1]` / `BINARY[1]` is its
//! whole body, deeper section numbers are empty; SEARCH BODY/TEXT matches
//! its raw body). Within the cap, our own walks over the part tree stop at
//! `MAX_DEPTH` as well (deeper parts become opaque leaves).
//!
//! # Why this cannot crash the process
//!
//! A stack overflow cannot be caught in Rust: it aborts the whole process,
//! every user's session with it. The guarantee is therefore structural:
//! nothing on the path from stored bytes to the wire recurses more than
//! `MAX_DEPTH` levels. mail-parser's parser is iterative except for
//! encoded nested messages (3 levels); the values it builds (and their
//! `Drop`), our `structure` / `without_extensions` / `body_text` walks,
//! imap-types' encoding of a BODYSTRUCTURE and its `Drop` all recurse once
//! per nesting level, and the nesting is capped before any of them runs.
//! Section paths are resolved iteratively; header, address and comment
//! parsing are loops. The tests `issue9_*` in `mime/tests.rs` run 50,000
//! levels of each kind through every FETCH item, SEARCH and the summary
//! cache on a thread with a tokio worker's 2 MiB stack. A *panic* (a bug,
//! not an overflow) is contained: mail-parser runs under `catch_unwind`;
//! FETCH, SEARCH, SORT and THREAD run the work on each stored message
//! under [`contained`] and answer `NO [SERVERBUG]` (or leave the message
//! out) while the session goes on; and a panic anywhere else in a session
//! ends only that session's task (tokio catches it, the connection
//! closes, the per-client counters are released by guards).
//!
//! Invariants:
//! - No function panics on any input: every slice is clamped, recursion over
//!   the part tree stops at `MAX_DEPTH`, and mail-parser itself runs under
//!   `catch_unwind` as a last line of defence.
//! - Every result owns its data (`'static`), so `envelope` and the extended
//!   `body_structure` can be computed once per message and cached;
//!   `without_extensions` derives the BODY form from a cached BODYSTRUCTURE.

use std::borrow::Cow;
use std::num::NonZeroU32;
use std::panic::{catch_unwind, AssertUnwindSafe};

use imap_types::body::{
    BasicFields, Body, BodyStructure, Disposition, Language, Location, MultiPartExtensionData,
    SinglePartExtensionData, SpecificFields,
};
use imap_types::core::{AString, IString, NString, Quoted, Vec1};
use imap_types::envelope::{Address, Envelope};
use imap_types::fetch::Section;
use mail_parser::{Encoding, Message, MessageParser, MessagePart, PartType};

pub(crate) use crate::header::{
    clamp, decode_header_value, fields, first_field, header_end, trim, unfold, Field,
};

mod nesting;

/// Deepest MIME nesting we describe (see the module doc): deeper parts are
/// shown as opaque APPLICATION/OCTET-STREAM leaves, and a message that
/// mail-parser would nest deeper is not given to it at all. Keeps every
/// recursion on stored data, and the client's BODYSTRUCTURE parser, bounded.
pub(crate) const MAX_DEPTH: usize = 64;

/// A message starting with this makes the parser panic, in test builds
/// only: the tests of panic containment use it.
#[cfg(test)]
pub(crate) const TEST_PANIC: &[u8] = b"X-Msgd-Test: panic\r\n";

/// Runs `f`, work on one stored message (`uid`); a panic in it (a bug:
/// nothing on this path should panic) is logged and becomes `None`, so
/// that the command answers `NO [SERVERBUG]` for that message while the
/// session, and every other session, goes on. Only sound for work that
/// leaves no shared state half-changed: the parsers here are pure.
pub(crate) fn contained<T>(what: &str, uid: u32, f: impl FnOnce() -> T) -> Option<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => Some(v),
        Err(_) => {
            tracing::error!(uid, what, "parsing a stored message panicked");
            None
        }
    }
}

/// Host and mailbox placeholders for addresses that lack them (as Dovecot
/// does): a NIL host would mean RFC 2822 group syntax to the client.
const MISSING_DOMAIN: &[u8] = b"MISSING_DOMAIN";
const MISSING_MAILBOX: &[u8] = b"MISSING_MAILBOX";

// ---------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------

/// ENVELOPE of a message (RFC 3501 7.4.2): raw header values, NIL for absent
/// fields, Sender and Reply-To defaulting to From. Reads only the header.
pub fn envelope(msg: &[u8]) -> Envelope<'static> {
    envelope_of(clamp(msg, 0, header_end(msg)))
}

/// BODY (`extended == false`) or BODYSTRUCTURE (`extended == true`) of a
/// message (RFC 3501 7.4.2).
pub fn body_structure(msg: &[u8], extended: bool) -> BodyStructure<'static> {
    ParsedMessage::new(msg).body_structure(extended)
}

/// Envelope and BODYSTRUCTURE from one parse, for callers that cache both
/// (BODY is `without_extensions` of the second).
pub fn envelope_and_structure(msg: &[u8]) -> (Envelope<'static>, BodyStructure<'static>) {
    (envelope(msg), body_structure(msg, true))
}

/// BODY form of a BODYSTRUCTURE: the same tree without extension data.
pub fn without_extensions(bs: BodyStructure<'static>) -> BodyStructure<'static> {
    match bs {
        BodyStructure::Single { body, .. } => BodyStructure::Single {
            body: Body {
                basic: body.basic,
                specific: match body.specific {
                    SpecificFields::Message {
                        envelope,
                        body_structure,
                        number_of_lines,
                    } => SpecificFields::Message {
                        envelope,
                        body_structure: Box::new(without_extensions(*body_structure)),
                        number_of_lines,
                    },
                    other => other,
                },
            },
            extension_data: None,
        },
        BodyStructure::Multi {
            bodies, subtype, ..
        } => {
            let children: Vec<_> = bodies.into_iter().map(without_extensions).collect();
            BodyStructure::Multi {
                bodies: vec1_or_empty_text(children, false),
                subtype,
                extension_data: None,
            }
        }
    }
}

/// Content of BODY[section] (RFC 3501 6.4.5): `None` is the whole message.
/// A part that does not exist yields an empty result. Sections of the top
/// header (HEADER, HEADER.FIELDS, TEXT) do not need a MIME parse.
pub fn section(msg: &[u8], section: Option<&Section<'_>>) -> Vec<u8> {
    match section {
        None => msg.to_vec(),
        Some(Section::Header(None)) => clamp(msg, 0, header_end(msg)).to_vec(),
        Some(Section::Text(None)) => clamp(msg, header_end(msg), msg.len()).to_vec(),
        Some(Section::HeaderFields(None, names)) => {
            header_fields(clamp(msg, 0, header_end(msg)), names.as_ref(), true)
        }
        Some(Section::HeaderFieldsNot(None, names)) => {
            header_fields(clamp(msg, 0, header_end(msg)), names.as_ref(), false)
        }
        Some(s) => ParsedMessage::new(msg).section(Some(s)),
    }
}

/// The `<origin.len>` partial of a fetched section (RFC 3501 6.4.5): empty
/// when `origin` is past the end, truncated at the end.
pub fn partial(data: &[u8], origin: u32, len: u32) -> &[u8] {
    let start = usize::try_from(origin)
        .unwrap_or(usize::MAX)
        .min(data.len());
    let end = start
        .saturating_add(usize::try_from(len).unwrap_or(usize::MAX))
        .min(data.len());
    data.get(start..end).unwrap_or_default()
}

/// Why BINARY[section] could not be served (RFC 3516).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BinaryError {
    /// The part's Content-Transfer-Encoding is not one we can decode:
    /// answer `NO [UNKNOWN-CTE]`.
    UnknownCte,
}

/// Content of BINARY[part] (RFC 3516): the part body with its
/// Content-Transfer-Encoding removed. An empty `part` is the whole message;
/// multipart and message/rfc822 parts are returned as they are (RFC 3516
/// only defines decoding for leaf parts). A nonexistent part yields an empty
/// result.
pub fn binary_section(msg: &[u8], part: &[NonZeroU32]) -> Result<Vec<u8>, BinaryError> {
    if part.is_empty() {
        return Ok(msg.to_vec());
    }
    ParsedMessage::new(msg).binary_section(part)
}

/// A message parsed once, for a FETCH that asks several things of it.
pub struct ParsedMessage<'a> {
    msg: Message<'a>,
    /// Nested deeper than `MAX_DEPTH`: one opaque part (see `parse`).
    opaque: bool,
}

impl<'a> ParsedMessage<'a> {
    pub fn new(raw: &'a [u8]) -> Self {
        let (msg, opaque) = parse(raw);
        ParsedMessage { msg, opaque }
    }

    fn top(&self) -> Level<'_, 'a> {
        Level::top(&self.msg)
    }

    /// See [`envelope`].
    pub fn envelope(&self) -> Envelope<'static> {
        envelope(self.msg.raw_message.as_ref())
    }

    /// See [`body_structure`].
    pub fn body_structure(&self, extended: bool) -> BodyStructure<'static> {
        // An opaque message starts at the depth where containers are no
        // longer opened.
        let depth = if self.opaque { MAX_DEPTH } else { 0 };
        structure(self.top().root(), extended, depth)
    }

    /// See [`section`].
    pub fn section(&self, section: Option<&Section<'_>>) -> Vec<u8> {
        let raw = self.msg.raw_message.as_ref();
        let Some(section) = section else {
            return raw.to_vec();
        };
        let top = self.top();
        // The message whose HEADER/TEXT is asked for: the top one, or the
        // message/rfc822 part the numbers lead to.
        let message_at = |part: &Option<imap_types::fetch::Part>| match part {
            None => Some(top),
            Some(p) => resolve(top, p.0.as_ref()).and_then(|n| n.inner()),
        };
        let out = match section {
            Section::Part(p) => resolve(top, p.0.as_ref()).map(|n| n.body().to_vec()),
            Section::Mime(p) => resolve(top, p.0.as_ref()).map(|n| n.header().to_vec()),
            Section::Header(p) => message_at(p).map(|l| l.header().to_vec()),
            Section::Text(p) => message_at(p).map(|l| l.text().to_vec()),
            Section::HeaderFields(p, names) => {
                message_at(p).map(|l| header_fields(l.header(), names.as_ref(), true))
            }
            Section::HeaderFieldsNot(p, names) => {
                message_at(p).map(|l| header_fields(l.header(), names.as_ref(), false))
            }
        };
        out.unwrap_or_default()
    }

    /// See [`binary_section`].
    pub fn binary_section(&self, part: &[NonZeroU32]) -> Result<Vec<u8>, BinaryError> {
        if part.is_empty() {
            return Ok(self.msg.raw_message.to_vec());
        }
        let Some(node) = resolve(self.top(), part) else {
            return Ok(Vec::new());
        };
        let body = node.body();
        let is_leaf = node
            .part()
            .is_some_and(|p| !matches!(p.body, PartType::Multipart(_) | PartType::Message(_)));
        if !is_leaf {
            return Ok(body.to_vec());
        }
        let fields = fields(node.header());
        let cte = first_field(&fields, b"Content-Transfer-Encoding")
            .map(|v| cte_token(&unfold(v)))
            .unwrap_or_default();
        decode_cte(&cte, body)
    }
}

// ---------------------------------------------------------------------------
// The part tree (over mail-parser's flat part list)
// ---------------------------------------------------------------------------

/// Parses with mail-parser; always returns a message with at least a root
/// part (a message without any header is all body). A message nested
/// deeper than `MAX_DEPTH` is not parsed: it becomes one opaque part
/// (`true`), its header the top header, its body the rest.
pub(crate) fn parse(raw: &[u8]) -> (Message<'_>, bool) {
    // Tests prove that a panic here ends no more than the command.
    #[cfg(test)]
    if raw.starts_with(TEST_PANIC) {
        panic!("test: a stored message that panics the parser");
    }
    let single = |body: PartType<'static>, offset_body: usize| Message {
        parts: vec![MessagePart {
            headers: Vec::new(),
            is_encoding_problem: true,
            body,
            encoding: Encoding::None,
            offset_header: 0,
            offset_body: u32::try_from(offset_body).unwrap_or(u32::MAX),
            offset_end: u32::try_from(raw.len()).unwrap_or(u32::MAX),
        }],
        raw_message: Cow::Borrowed(raw),
        ..Default::default()
    };
    if nesting::exceeds(raw, MAX_DEPTH) {
        let body = PartType::Binary(Cow::Owned(Vec::new()));
        return (single(body, header_end(raw)), true);
    }
    let parsed = catch_unwind(AssertUnwindSafe(|| MessageParser::default().parse(raw)))
        .ok()
        .flatten();
    match parsed {
        Some(m) if !m.parts.is_empty() => (m, false),
        _ => (single(PartType::Text(Cow::Borrowed("")), 0), false),
    }
}

/// One message (the top-level one or an encapsulated message/rfc822): the
/// parts mail-parser found in it, and where its bytes end in `msg.raw_message`
/// (mail-parser's offsets are relative to that buffer, which for an
/// unencoded encapsulated message is the outer message's buffer).
#[derive(Clone, Copy)]
struct Level<'m, 'x> {
    msg: &'m Message<'x>,
    end: usize,
}

impl<'m, 'x> Level<'m, 'x> {
    fn top(msg: &'m Message<'x>) -> Self {
        Level {
            msg,
            end: msg.raw_message.len(),
        }
    }

    fn root(self) -> Node<'m, 'x> {
        Node { level: self, id: 0 }
    }

    /// Header of the message, including the blank line if present.
    fn header(self) -> &'m [u8] {
        self.root().header()
    }

    /// Body of the message (RFC 3501 TEXT).
    fn text(self) -> &'m [u8] {
        self.root().body()
    }

    /// Parts numbered 1.. at this level (RFC 3501 6.4.5): the parts of a
    /// multipart message, or the body itself of a non-multipart one.
    fn parts(self) -> Vec<Node<'m, 'x>> {
        let root = self.root();
        root.children().unwrap_or_else(|| vec![root])
    }
}

/// One MIME part: an index into its level's part list.
#[derive(Clone, Copy)]
struct Node<'m, 'x> {
    level: Level<'m, 'x>,
    id: usize,
}

impl<'m, 'x> Node<'m, 'x> {
    fn part(self) -> Option<&'m MessagePart<'x>> {
        self.level.msg.parts.get(self.id)
    }

    fn raw(self) -> &'m [u8] {
        self.level.msg.raw_message.as_ref()
    }

    fn end(self) -> usize {
        match self.part() {
            // The root part ends where its message ends.
            Some(_) if self.id == 0 => self.level.end,
            Some(p) => (p.offset_end as usize).min(self.level.end),
            None => 0,
        }
    }

    /// MIME header of the part, including the blank line if present.
    fn header(self) -> &'m [u8] {
        match self.part() {
            Some(p) => clamp(self.raw(), p.offset_header as usize, p.offset_body as usize),
            None => &[],
        }
    }

    /// Body of the part in its transfer encoding.
    fn body(self) -> &'m [u8] {
        match self.part() {
            Some(p) => clamp(self.raw(), p.offset_body as usize, self.end()),
            None => &[],
        }
    }

    /// Sub-parts if this is a multipart.
    fn children(self) -> Option<Vec<Node<'m, 'x>>> {
        match &self.part()?.body {
            PartType::Multipart(ids) => Some(
                ids.iter()
                    .map(|&i| i as usize)
                    // Sub-parts always follow their parent in the list; this
                    // also rules out cycles in a corrupt tree.
                    .filter(|&i| i > self.id && i < self.level.msg.parts.len())
                    .map(|id| Node {
                        level: self.level,
                        id,
                    })
                    .collect(),
            ),
            _ => None,
        }
    }

    /// The encapsulated message if this is a message/rfc822 part.
    fn inner(self) -> Option<Level<'m, 'x>> {
        let p = self.part()?;
        match &p.body {
            PartType::Message(m) if !m.parts.is_empty() => {
                let end = if p.encoding == Encoding::None {
                    // Parsed in place: same buffer as ours.
                    self.end().min(m.raw_message.len())
                } else {
                    // Parsed from the decoded body: its own buffer.
                    m.raw_message.len()
                };
                Some(Level { msg: m, end })
            }
            _ => None,
        }
    }
}

/// The part a section number path names (RFC 3501 6.4.5).
fn resolve<'m, 'x>(top: Level<'m, 'x>, path: &[NonZeroU32]) -> Option<Node<'m, 'x>> {
    let mut node: Option<Node<'m, 'x>> = None;
    for n in path {
        let candidates = match node {
            None => top.parts(),
            Some(nd) => match nd.children() {
                Some(children) => children,
                None => nd.inner()?.parts(),
            },
        };
        let index = usize::try_from(n.get() - 1).ok()?;
        node = Some(*candidates.get(index)?);
    }
    node
}

/// HEADER.FIELDS (keep = true) / HEADER.FIELDS.NOT (keep = false): the
/// selected fields in message order, then the blank line.
fn header_fields(block: &[u8], names: &[AString<'_>], keep: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for f in fields(block) {
        let hit = names
            .iter()
            .any(|n| AsRef::<[u8]>::as_ref(n).eq_ignore_ascii_case(f.name));
        if hit == keep {
            out.extend_from_slice(f.raw);
            if !f.raw.ends_with(b"\n") {
                out.extend_from_slice(b"\r\n");
            }
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

// ---------------------------------------------------------------------------
// imap-types string helpers
// ---------------------------------------------------------------------------

/// An IMAP string holding `bytes` (quoted if it can be, else a literal);
/// NUL, which no IMAP string may hold, is dropped.
fn istring(bytes: &[u8]) -> IString<'static> {
    let v: Vec<u8> = bytes.iter().copied().filter(|&b| b != 0).collect();
    IString::try_from(v).unwrap_or_else(|_| IString::from(Quoted::unvalidated("")))
}

fn nstring(bytes: &[u8]) -> NString<'static> {
    NString(Some(istring(bytes)))
}

fn nil() -> NString<'static> {
    NString(None)
}

// ---------------------------------------------------------------------------
// ENVELOPE
// ---------------------------------------------------------------------------

fn envelope_of(header: &[u8]) -> Envelope<'static> {
    let fields = fields(header);
    let raw = |name: &str| first_field(&fields, name.as_bytes()).map(unfold);
    let text = |name: &str| raw(name).map_or_else(nil, |v| nstring(&v));
    let addresses = |name: &str| raw(name).map(|v| address_list(&v)).unwrap_or_default();
    let from = addresses("From");
    let or_from = |list: Vec<Address<'static>>| if list.is_empty() { from.clone() } else { list };
    Envelope {
        date: text("Date"),
        subject: text("Subject"),
        sender: or_from(addresses("Sender")),
        reply_to: or_from(addresses("Reply-To")),
        to: addresses("To"),
        cc: addresses("Cc"),
        bcc: addresses("Bcc"),
        in_reply_to: text("In-Reply-To"),
        message_id: text("Message-ID"),
        from,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokKind {
    /// Atom, or a domain literal `[...]` kept with its brackets.
    Atom,
    /// Quoted string, quotes and backslash escapes removed.
    Quoted,
    /// One of `< > @ , ; : .`
    Special,
    /// Comment text without the parentheses.
    Comment,
}

#[derive(Debug, Clone)]
struct Tok {
    kind: TokKind,
    text: Vec<u8>,
    /// Whitespace (or a comment) came before this token.
    space: bool,
}

impl Tok {
    fn is(&self, special: u8) -> bool {
        self.kind == TokKind::Special && self.text.first() == Some(&special)
    }
}

/// Byte cursor that cannot index out of bounds.
struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let b = self.peek();
        if b.is_some() {
            self.i += 1;
        }
        b
    }

    /// Quoted string after its opening quote; returns its unescaped content.
    fn quoted(&mut self) -> Vec<u8> {
        let mut text = Vec::new();
        while let Some(b) = self.bump() {
            match b {
                b'"' => break,
                b'\\' => text.extend(self.bump()),
                _ => text.push(b),
            }
        }
        text
    }

    /// Comment after its opening parenthesis (nested comments allowed).
    fn comment(&mut self) -> Vec<u8> {
        let mut text = Vec::new();
        let mut depth = 1usize;
        while let Some(b) = self.bump() {
            match b {
                b'\\' => text.extend(self.bump()),
                b'(' => {
                    depth += 1;
                    text.push(b);
                }
                b')' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                    text.push(b);
                }
                _ => text.push(b),
            }
        }
        text
    }

    /// Skips whitespace and comments.
    fn skip_cfws(&mut self) {
        while let Some(b) = self.peek() {
            match b {
                b' ' | b'\t' | b'\r' | b'\n' => {
                    self.i += 1;
                }
                b'(' => {
                    self.i += 1;
                    self.comment();
                }
                _ => break,
            }
        }
    }
}

/// RFC 5322 lexical tokens of an address header.
fn tokenize(v: &[u8]) -> Vec<Tok> {
    let mut c = Cursor { s: v, i: 0 };
    let mut out = Vec::new();
    let mut space = false;
    while let Some(b) = c.peek() {
        let (kind, text) = match b {
            b' ' | b'\t' | b'\r' | b'\n' => {
                c.i += 1;
                space = true;
                continue;
            }
            b'"' => {
                c.i += 1;
                (TokKind::Quoted, c.quoted())
            }
            b'(' => {
                c.i += 1;
                (TokKind::Comment, c.comment())
            }
            b'[' => {
                let mut text = Vec::new();
                while let Some(b) = c.bump() {
                    text.push(b);
                    if b == b']' {
                        break;
                    }
                }
                (TokKind::Atom, text)
            }
            b'<' | b'>' | b'@' | b',' | b';' | b':' | b'.' => {
                c.i += 1;
                (TokKind::Special, vec![b])
            }
            _ => {
                let mut text = Vec::new();
                while let Some(b) = c.peek() {
                    if matches!(
                        b,
                        b' ' | b'\t'
                            | b'\r'
                            | b'\n'
                            | b'"'
                            | b'('
                            | b'['
                            | b'<'
                            | b'>'
                            | b'@'
                            | b','
                            | b';'
                            | b':'
                            | b'.'
                    ) {
                        break;
                    }
                    text.push(b);
                    c.i += 1;
                }
                (TokKind::Atom, text)
            }
        };
        let is_comment = kind == TokKind::Comment;
        out.push(Tok { kind, text, space });
        // A comment separates words like whitespace does.
        space = is_comment;
    }
    out
}

/// A display name: words joined as written (one space where there was
/// whitespace), comments left out, encoded-words left encoded.
fn phrase(toks: &[&Tok]) -> Vec<u8> {
    let mut out = Vec::new();
    for t in toks.iter().filter(|t| t.kind != TokKind::Comment) {
        if !out.is_empty() && t.space {
            out.push(b' ');
        }
        out.extend_from_slice(&t.text);
    }
    out
}

/// Tokens concatenated without whitespace (local parts, domains, routes).
fn concat(toks: &[&Tok]) -> Vec<u8> {
    toks.iter()
        .filter(|t| t.kind != TokKind::Comment)
        .flat_map(|t| t.text.iter().copied())
        .collect()
}

/// Mailbox and host of an addr-spec.
fn addr_spec(toks: &[&Tok]) -> (Vec<u8>, Vec<u8>) {
    let toks: Vec<&Tok> = toks
        .iter()
        .copied()
        .filter(|t| t.kind != TokKind::Comment)
        .collect();
    if toks.is_empty() {
        return (Vec::new(), Vec::new());
    }
    match toks.iter().position(|t| t.is(b'@')) {
        Some(at) => {
            let local = concat(toks.get(..at).unwrap_or_default());
            let domain = concat(toks.get(at + 1..).unwrap_or_default());
            (
                if local.is_empty() {
                    MISSING_MAILBOX.to_vec()
                } else {
                    local
                },
                if domain.is_empty() {
                    MISSING_DOMAIN.to_vec()
                } else {
                    domain
                },
            )
        }
        None => (concat(&toks), MISSING_DOMAIN.to_vec()),
    }
}

fn group_start(name: &[u8]) -> Address<'static> {
    Address {
        name: nil(),
        adl: nil(),
        mailbox: nstring(name),
        host: nil(),
    }
}

fn group_end() -> Address<'static> {
    Address {
        name: nil(),
        adl: nil(),
        mailbox: nil(),
        host: nil(),
    }
}

/// Parses an address-list header value into ENVELOPE addresses (RFC 3501
/// 7.4.2): groups become a start marker (NIL NIL "name" NIL), their members,
/// and an end marker (NIL NIL NIL NIL). Tolerant of broken syntax.
fn address_list(v: &[u8]) -> Vec<Address<'static>> {
    let toks = tokenize(v);
    let mut out = Vec::new();
    // Tokens of the current mailbox outside angle brackets.
    let mut seg: Vec<&Tok> = Vec::new();
    // Tokens inside <...> once seen.
    let mut angle: Option<Vec<&Tok>> = None;
    let mut in_angle = false;
    let mut in_group = false;
    for t in &toks {
        if in_angle {
            if t.is(b'>') {
                in_angle = false;
            } else if let Some(a) = angle.as_mut() {
                a.push(t);
            }
            continue;
        }
        if t.is(b'<') {
            in_angle = true;
            angle = Some(Vec::new());
        } else if t.is(b',') {
            finish_mailbox(&mut out, &mut seg, &mut angle);
        } else if t.is(b':') && !in_group && angle.is_none() {
            out.push(group_start(&phrase(&seg)));
            seg.clear();
            in_group = true;
        } else if t.is(b';') {
            finish_mailbox(&mut out, &mut seg, &mut angle);
            if in_group {
                out.push(group_end());
                in_group = false;
            }
        } else if angle.is_none() || t.kind == TokKind::Comment {
            seg.push(t);
        }
    }
    finish_mailbox(&mut out, &mut seg, &mut angle);
    if in_group {
        out.push(group_end());
    }
    out
}

fn finish_mailbox<'t>(
    out: &mut Vec<Address<'static>>,
    seg: &mut Vec<&'t Tok>,
    angle: &mut Option<Vec<&'t Tok>>,
) {
    let comment = seg
        .iter()
        .find(|t| t.kind == TokKind::Comment)
        .map(|t| trim(&t.text).to_vec())
        .filter(|c| !c.is_empty());
    if let Some(a) = angle.take() {
        let name = phrase(seg);
        let name = if name.is_empty() { comment } else { Some(name) };
        let (adl, spec) = match a.iter().rposition(|t| t.is(b':')) {
            Some(colon) => (
                Some(concat(a.get(..colon).unwrap_or_default())),
                a.get(colon + 1..).unwrap_or_default(),
            ),
            None => (None, &a[..]),
        };
        let (mailbox, host) = addr_spec(spec);
        out.push(Address {
            name: name.map_or_else(nil, |n| nstring(&n)),
            adl: adl
                .filter(|r| !r.is_empty())
                .map_or_else(nil, |r| nstring(&r)),
            mailbox: nstring(&mailbox),
            host: nstring(&host),
        });
    } else if seg.iter().any(|t| t.kind != TokKind::Comment) {
        let (mailbox, host) = addr_spec(seg);
        out.push(Address {
            name: comment.map_or_else(nil, |c| nstring(&c)),
            adl: nil(),
            mailbox: nstring(&mailbox),
            host: nstring(&host),
        });
    }
    seg.clear();
}

// ---------------------------------------------------------------------------
// BODY / BODYSTRUCTURE
// ---------------------------------------------------------------------------

/// A parsed Content-Type or Content-Disposition value, as received.
#[derive(Debug, Default, PartialEq)]
struct MimeValue {
    kind: Vec<u8>,
    subtype: Vec<u8>,
    params: Vec<(Vec<u8>, Vec<u8>)>,
}

fn is_token_byte(b: u8) -> bool {
    b > b' '
        && b != 0x7f
        && !matches!(
            b,
            b'(' | b')'
                | b'<'
                | b'>'
                | b'@'
                | b','
                | b';'
                | b':'
                | b'\\'
                | b'"'
                | b'/'
                | b'['
                | b']'
                | b'?'
                | b'='
        )
}

fn token(c: &mut Cursor<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(b) = c.peek() {
        if !is_token_byte(b) {
            break;
        }
        out.push(b);
        c.i += 1;
    }
    out
}

/// Parses `type/subtype *(; name=value)` (`with_subtype`) or
/// `value *(; name=value)` (RFC 2045 5.1, RFC 2183). None when the leading
/// type is missing or malformed; junk between parameters is skipped.
fn parse_mime_value(v: &[u8], with_subtype: bool) -> Option<MimeValue> {
    let mut c = Cursor { s: v, i: 0 };
    c.skip_cfws();
    let kind = token(&mut c);
    if kind.is_empty() {
        return None;
    }
    let mut subtype = Vec::new();
    if with_subtype {
        c.skip_cfws();
        if c.bump() != Some(b'/') {
            return None;
        }
        c.skip_cfws();
        subtype = token(&mut c);
        if subtype.is_empty() {
            return None;
        }
    }
    let mut params = Vec::new();
    loop {
        c.skip_cfws();
        match c.bump() {
            None => break,
            Some(b';') => {}
            Some(b'"') => {
                c.quoted();
                continue;
            }
            Some(_) => continue,
        }
        c.skip_cfws();
        let name = token(&mut c);
        if name.is_empty() {
            continue;
        }
        c.skip_cfws();
        if c.peek() != Some(b'=') {
            continue;
        }
        c.i += 1;
        c.skip_cfws();
        let value = if c.peek() == Some(b'"') {
            c.i += 1;
            c.quoted()
        } else {
            token(&mut c)
        };
        params.push((name, value));
    }
    Some(MimeValue {
        kind,
        subtype,
        params,
    })
}

fn param_list(params: &[(Vec<u8>, Vec<u8>)]) -> Vec<(IString<'static>, IString<'static>)> {
    params
        .iter()
        .map(|(k, v)| (istring(k), istring(v)))
        .collect()
}

/// Lines of a body: line ends, plus a last line without one.
fn count_lines(body: &[u8]) -> u32 {
    let newlines = body.iter().filter(|&&b| b == b'\n').count();
    let partial = usize::from(!body.is_empty() && !body.ends_with(b"\n"));
    u32::try_from(newlines + partial).unwrap_or(u32::MAX)
}

/// The first token of a Content-Transfer-Encoding value.
fn cte_token(v: &[u8]) -> Vec<u8> {
    let mut c = Cursor { s: v, i: 0 };
    c.skip_cfws();
    token(&mut c)
}

fn empty_text_part(extended: bool) -> BodyStructure<'static> {
    BodyStructure::Single {
        body: Body {
            basic: BasicFields {
                parameter_list: param_list(&[(b"charset".to_vec(), b"us-ascii".to_vec())]),
                id: nil(),
                description: nil(),
                content_transfer_encoding: istring(b"7BIT"),
                size: 0,
            },
            specific: SpecificFields::Text {
                subtype: istring(b"PLAIN"),
                number_of_lines: 0,
            },
        },
        extension_data: extended.then(|| SinglePartExtensionData {
            md5: nil(),
            tail: None,
        }),
    }
}

/// A multipart needs at least one body; an empty one gets an empty
/// TEXT/PLAIN part (as Dovecot does).
fn vec1_or_empty_text(
    children: Vec<BodyStructure<'static>>,
    extended: bool,
) -> Vec1<BodyStructure<'static>> {
    Vec1::try_from(children).unwrap_or_else(|_| Vec1::from(empty_text_part(extended)))
}

/// Disposition, language and location extension fields of a part.
fn disposition_tail(fields: &[Field<'_>]) -> Disposition<'static> {
    let disposition = first_field(fields, b"Content-Disposition")
        .and_then(|v| parse_mime_value(&unfold(v), false))
        .map(|d| (istring(&d.kind), param_list(&d.params)));
    let language = first_field(fields, b"Content-Language")
        .map(|v| {
            let mut c = Cursor { s: v, i: 0 };
            let mut tags = Vec::new();
            loop {
                c.skip_cfws();
                let tag = token(&mut c);
                if !tag.is_empty() {
                    tags.push(istring(&tag));
                }
                if c.bump().is_none() {
                    break;
                }
            }
            tags
        })
        .unwrap_or_default();
    let location = first_field(fields, b"Content-Location")
        .map(unfold)
        .map_or_else(nil, |v| nstring(&v));
    Disposition {
        disposition,
        tail: Some(Language {
            language,
            tail: Some(Location {
                location,
                extensions: Vec::new(),
            }),
        }),
    }
}

fn structure(node: Node<'_, '_>, extended: bool, depth: usize) -> BodyStructure<'static> {
    let Some(part) = node.part() else {
        return empty_text_part(extended);
    };
    let fields = fields(node.header());
    let ct = first_field(&fields, b"Content-Type").and_then(|v| parse_mime_value(&unfold(v), true));
    let type_is = |t: &[u8]| {
        ct.as_ref()
            .is_some_and(|ct| ct.kind.eq_ignore_ascii_case(t))
    };
    let too_deep = depth >= MAX_DEPTH;

    if let (PartType::Multipart(_), false) = (&part.body, too_deep) {
        let children: Vec<_> = node
            .children()
            .unwrap_or_default()
            .into_iter()
            .map(|c| structure(c, extended, depth + 1))
            .collect();
        let (subtype, params) = match &ct {
            Some(ct) if type_is(b"multipart") => (ct.subtype.as_slice(), ct.params.as_slice()),
            _ => (&b"mixed"[..], &[][..]),
        };
        return BodyStructure::Multi {
            bodies: vec1_or_empty_text(children, extended),
            subtype: istring(subtype),
            extension_data: extended.then(|| MultiPartExtensionData {
                parameter_list: param_list(params),
                tail: Some(disposition_tail(&fields)),
            }),
        };
    }

    let body = node.body();
    let field = |name: &str| first_field(&fields, name.as_bytes()).map(unfold);
    let cte = field("Content-Transfer-Encoding")
        .map(|v| cte_token(&v))
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| b"7BIT".to_vec());
    let mut params = ct.as_ref().map(|ct| ct.params.clone()).unwrap_or_default();
    let inner = if too_deep { None } else { node.inner() };

    let specific = if let Some(inner) = inner {
        SpecificFields::Message {
            envelope: Box::new(envelope_of(inner.header())),
            body_structure: Box::new(structure(inner.root(), extended, depth + 1)),
            number_of_lines: count_lines(body),
        }
    } else {
        match &ct {
            // No (valid) Content-Type: RFC 2045 5.2 default.
            None => SpecificFields::Text {
                subtype: istring(b"PLAIN"),
                number_of_lines: count_lines(body),
            },
            Some(ct) if type_is(b"text") => SpecificFields::Text {
                subtype: istring(&ct.subtype),
                number_of_lines: count_lines(body),
            },
            // mail-parser read it as text: a multipart without its boundary.
            Some(_) if type_is(b"multipart") && !too_deep => SpecificFields::Text {
                subtype: istring(b"PLAIN"),
                number_of_lines: count_lines(body),
            },
            // Claims to be a message or multipart but could not be shown as
            // one: opaque, so that the client's parser gets what it expects.
            Some(ct)
                if type_is(b"multipart")
                    || (type_is(b"message")
                        && (ct.subtype.eq_ignore_ascii_case(b"rfc822")
                            || ct.subtype.eq_ignore_ascii_case(b"global"))) =>
            {
                SpecificFields::Basic {
                    r#type: istring(b"APPLICATION"),
                    subtype: istring(b"OCTET-STREAM"),
                }
            }
            Some(ct) => SpecificFields::Basic {
                r#type: istring(&ct.kind),
                subtype: istring(&ct.subtype),
            },
        }
    };
    if matches!(specific, SpecificFields::Text { .. }) && params.is_empty() {
        params.push((b"charset".to_vec(), b"us-ascii".to_vec()));
    }

    BodyStructure::Single {
        body: Body {
            basic: BasicFields {
                parameter_list: param_list(&params),
                id: field("Content-ID").map_or_else(nil, |v| nstring(&v)),
                description: field("Content-Description").map_or_else(nil, |v| nstring(&v)),
                content_transfer_encoding: istring(&cte),
                size: u32::try_from(body.len()).unwrap_or(u32::MAX),
            },
            specific,
        },
        extension_data: extended.then(|| SinglePartExtensionData {
            md5: field("Content-MD5").map_or_else(nil, |v| nstring(&v)),
            tail: Some(disposition_tail(&fields)),
        }),
    }
}

// ---------------------------------------------------------------------------
// BINARY decoding
// ---------------------------------------------------------------------------

fn decode_cte(cte: &[u8], body: &[u8]) -> Result<Vec<u8>, BinaryError> {
    let cte = cte.to_ascii_lowercase();
    match cte.as_slice() {
        b"" | b"7bit" | b"8bit" | b"binary" => Ok(body.to_vec()),
        b"base64" => {
            let mut stream = mail_parser::parsers::MessageStream::new(body);
            Ok(stream.decode_base64_mime(b"").1.into_owned())
        }
        b"quoted-printable" => {
            let mut stream = mail_parser::parsers::MessageStream::new(body);
            Ok(stream.decode_quoted_printable_mime(b"").1.into_owned())
        }
        _ => Err(BinaryError::UnknownCte),
    }
}

// ---------------------------------------------------------------------------
// Helpers for SEARCH (crate::imap::search)
// ---------------------------------------------------------------------------

/// What SEARCH needs from a message, decoded: header fields (RFC 2047
/// decoded values), the text of the body (transfer-decoded, converted to
/// UTF-8; encapsulated messages' headers included) and the Date: header.
pub(crate) struct Decoded {
    /// (field name as received, decoded value)
    pub headers: Vec<(Vec<u8>, String)>,
    /// Body text, parts separated by newlines; empty unless asked for.
    pub body: String,
    /// Date: header, parsed.
    pub date: Option<mail_parser::DateTime>,
}

/// Everything SEARCH matches against; the body text only if `with_body`.
pub(crate) fn decode_for_search(msg: &[u8], with_body: bool) -> Decoded {
    let header_fields = fields(clamp(msg, 0, header_end(msg)));
    let headers = header_fields
        .iter()
        .map(|f| (f.name.to_vec(), decode_header_value(f.value)))
        .collect();
    let date = first_field(&header_fields, b"Date")
        .map(unfold)
        .and_then(|d| mail_parser::DateTime::parse_rfc822(&String::from_utf8_lossy(&d)))
        .filter(|d| d.is_valid());
    let body = if with_body {
        plain_ascii_body(msg, &header_fields).unwrap_or_else(|| decoded_body(msg))
    } else {
        String::new()
    };
    Decoded {
        headers,
        body,
        date,
    }
}

/// The body text of any message, through mail-parser.
fn decoded_body(msg: &[u8]) -> String {
    let mut body = String::new();
    match parse(msg) {
        (m, false) => body_text(&m, &mut body, 0),
        // Too deep to take apart: the raw body, as it is.
        (_, true) => {
            body = String::from_utf8_lossy(clamp(msg, header_end(msg), msg.len())).into_owned()
        }
    }
    body
}

/// The body text of a message that MIME decoding would leave as it is:
/// one `text/plain` part (no Content-Type, or `text/plain` with at most an
/// ASCII-compatible charset parameter), no transfer encoding but 7bit,
/// 8bit or binary, no Content-Disposition, every header field well formed
/// and every byte of the message ASCII. Its decoded text is the stored
/// body byte for byte, so SEARCH BODY/TEXT reads it without taking the
/// message apart (most of SEARCH TEXT's time over a large mailbox went to
/// mail-parser building part trees). Any other message, or any doubt:
/// None, and the full decoding runs.
fn plain_ascii_body(msg: &[u8], fields: &[Field<'_>]) -> Option<String> {
    #[cfg(test)]
    if msg.starts_with(TEST_PANIC) {
        return None;
    }
    if !msg.is_ascii() || msg.contains(&0) {
        return None;
    }
    let (mut content_type, mut encoding) = (None, None);
    for f in fields {
        let colon = f.raw.iter().position(|&b| b == b':')?;
        let name = f.raw.get(..colon)?;
        if name.is_empty() || !name.iter().all(|b| (0x21..=0x7e).contains(b)) {
            return None;
        }
        let slot = if name.eq_ignore_ascii_case(b"Content-Type") {
            &mut content_type
        } else if name.eq_ignore_ascii_case(b"Content-Transfer-Encoding") {
            &mut encoding
        } else if name.eq_ignore_ascii_case(b"Content-Disposition") {
            return None;
        } else {
            continue;
        };
        if slot.replace(f.value).is_some() {
            return None; // the same field twice
        }
    }
    if let Some(v) = encoding {
        let v = unfold(v).to_ascii_lowercase();
        if !matches!(v.as_slice(), b"7bit" | b"8bit" | b"binary") {
            return None;
        }
    }
    if let Some(v) = content_type {
        if !plain_text_type(&unfold(v).to_ascii_lowercase()) {
            return None;
        }
    }
    let body = clamp(msg, header_end(msg), msg.len());
    String::from_utf8(body.to_vec()).ok()
}

/// `text/plain`, optionally `; charset=X` (X quoted or not, one of a few
/// charsets that map ASCII to itself), nothing else. Lowercase input.
fn plain_text_type(v: &[u8]) -> bool {
    let Some(rest) = v.strip_prefix(b"text/plain") else {
        return false;
    };
    let rest = trim(rest);
    if rest.is_empty() {
        return true;
    }
    let Some(rest) = rest.strip_prefix(b";") else {
        return false;
    };
    let rest = trim(rest);
    let Some(rest) = rest.strip_prefix(b"charset") else {
        return false;
    };
    let Some(rest) = trim(rest).strip_prefix(b"=") else {
        return false;
    };
    let mut value = trim(rest);
    if let Some(v) = value.strip_suffix(b";") {
        value = trim(v);
    }
    if let Some(v) = value
        .strip_prefix(b"\"")
        .and_then(|v| v.strip_suffix(b"\""))
    {
        value = v;
    }
    matches!(
        value,
        b"us-ascii" | b"utf-8" | b"iso-8859-1" | b"iso-8859-15" | b"windows-1252"
    )
}

fn body_text(msg: &Message<'_>, out: &mut String, depth: usize) {
    if depth > MAX_DEPTH {
        return;
    }
    for part in &msg.parts {
        match &part.body {
            PartType::Text(t) => push_line(out, t),
            PartType::Html(h) => push_line(out, &mail_parser::decoders::html::html_to_text(h)),
            PartType::Message(inner) => {
                let top = Level::top(inner);
                for f in fields(top.header()) {
                    push_line(out, &String::from_utf8_lossy(f.name));
                    out.push_str(": ");
                    out.push_str(&decode_header_value(f.value));
                }
                body_text(inner, out, depth + 1);
            }
            PartType::Binary(_) | PartType::InlineBinary(_) | PartType::Multipart(_) => {}
        }
    }
}

fn push_line(out: &mut String, s: &str) {
    if !out.is_empty() {
        out.push('\n');
    }
    out.push_str(s);
}

#[cfg(test)]
pub(crate) mod tests;
