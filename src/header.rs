//! A message's header as received: the fields (RFC 5322 2.2, unfolding
//! 2.2.3), values decoded (RFC 2047), message ids and the base subject
//! of RFC 5256 2.1. Used by IMAP (FETCH, SEARCH, SORT, THREAD), JMAP and
//! the store's thread index; below the protocols, so the store needs no
//! protocol module for it.
//!
//! Hostile input: every function is linear in its input, none recurses,
//! none panics on any bytes (slices are clamped).

use std::panic::{catch_unwind, AssertUnwindSafe};

/// Most message ids taken from one message's References (RFC 5256 3,
/// REFERENCES step 1): the last ones, which name the nearest ancestors.
/// Bounds the summary record and THREAD's work per message, whatever a
/// sender puts in the header.
pub const MAX_REFERENCES: usize = 64;

/// `raw[start..end]`, both ends clamped to `raw` (never panics).
pub(crate) fn clamp(raw: &[u8], start: usize, end: usize) -> &[u8] {
    let end = end.min(raw.len());
    let start = start.min(end);
    raw.get(start..end).unwrap_or_default()
}

/// One header field as received.
pub(crate) struct Field<'a> {
    /// Field name, without trailing whitespace.
    pub name: &'a [u8],
    /// Everything after the colon, folding and line end included.
    pub value: &'a [u8],
    /// The whole field, line end included.
    pub raw: &'a [u8],
}

/// Splits a header block into fields, stopping at the blank line. Lines
/// without a colon become fields with the whole line as name (they match no
/// real field name).
pub(crate) fn fields(block: &[u8]) -> Vec<Field<'_>> {
    // (start, colon, end) of each field
    let mut spans: Vec<(usize, Option<usize>, usize)> = Vec::new();
    for (pos, line) in lines(block) {
        let end = pos + line.len();
        if blank(line) {
            break;
        }
        if matches!(line.first(), Some(b' ' | b'\t')) {
            if let Some(last) = spans.last_mut() {
                last.2 = end;
            }
        } else {
            let colon = line.iter().position(|&b| b == b':').map(|i| pos + i);
            spans.push((pos, colon, end));
        }
    }
    spans
        .into_iter()
        .map(|(start, colon, end)| {
            let raw = clamp(block, start, end);
            let (name, value) = match colon {
                Some(c) => (clamp(block, start, c), clamp(block, c + 1, end)),
                None => (raw, &[][..]),
            };
            Field {
                name: trim(name),
                value,
                raw,
            }
        })
        .collect()
}

/// Where the header of a message ends: after the first empty line, or at
/// the end if there is none (the same boundary `fields` stops at).
pub(crate) fn header_end(msg: &[u8]) -> usize {
    lines(msg)
        .find(|(_, line)| blank(line) && line.ends_with(b"\n"))
        .map_or(msg.len(), |(pos, line)| pos + line.len())
}

/// The lines of `b` with where each starts, line ends included (the last
/// one may have none).
fn lines(b: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let mut pos = 0;
    std::iter::from_fn(move || {
        let rest = b.get(pos..).filter(|r| !r.is_empty())?;
        let len = rest
            .iter()
            .position(|&c| c == b'\n')
            .map_or(rest.len(), |i| i + 1);
        let start = pos;
        pos += len;
        Some((start, rest.get(..len).unwrap_or_default()))
    })
}

/// A line of nothing but its line end: the end of a header.
fn blank(line: &[u8]) -> bool {
    line.iter().all(|b| matches!(b, b'\r' | b'\n'))
}

pub(crate) fn first_field<'a>(fields: &[Field<'a>], name: &[u8]) -> Option<&'a [u8]> {
    fields
        .iter()
        .find(|f| f.name.eq_ignore_ascii_case(name))
        .map(|f| f.value)
}

/// Header value on one line: line breaks removed, outer whitespace trimmed.
pub(crate) fn unfold(value: &[u8]) -> Vec<u8> {
    let v: Vec<u8> = value
        .iter()
        .copied()
        .filter(|&b| b != b'\r' && b != b'\n')
        .collect();
    trim(&v).to_vec()
}

pub(crate) fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        .map_or(start, |i| i + 1);
    clamp(v, start, end)
}

/// Decodes a header value: unfolds and decodes RFC 2047 encoded-words.
pub(crate) fn decode_header_value(value: &[u8]) -> String {
    if let Some(plain) = plain_header_value(value) {
        return plain;
    }
    mail_parser_header_value(value)
}

/// What mail-parser's unstructured parser makes of an ASCII value without
/// encoded-words (`=?`), without running it: each line trimmed of spaces,
/// tabs and CRs, empty lines dropped, the rest joined by one space. SEARCH
/// decodes every header of every message it reads, so this is on the path
/// of SEARCH TEXT over a large mailbox; a unit test holds it to
/// mail-parser's answer.
fn plain_header_value(value: &[u8]) -> Option<String> {
    if !value.is_ascii() || value.windows(2).any(|w| w == b"=?") {
        return None;
    }
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while !rest.is_empty() {
        let (line, next) = match rest.iter().position(|&b| b == b'\n') {
            Some(i) => (clamp(rest, 0, i), clamp(rest, i + 1, rest.len())),
            None => (rest, &b""[..]),
        };
        // A line end not followed by folding whitespace ends the value.
        rest = if matches!(next.first(), Some(b' ' | b'\t')) {
            next
        } else {
            b""
        };
        let start = line.iter().position(|b| !matches!(b, b' ' | b'\t' | b'\r'));
        let end = line
            .iter()
            .rposition(|b| !matches!(b, b' ' | b'\t' | b'\r'));
        let (Some(start), Some(end)) = (start, end) else {
            continue;
        };
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(std::str::from_utf8(clamp(line, start, end + 1)).ok()?);
    }
    if out.is_empty() {
        // mail-parser found no text: the caller's fallback, as there.
        return Some(String::from_utf8_lossy(&unfold(value)).into_owned());
    }
    Some(out)
}

/// Header value decoding by mail-parser (encoded-words, any bytes).
fn mail_parser_header_value(value: &[u8]) -> String {
    let mut v = value.to_vec();
    v.push(b'\n');
    let mut stream = mail_parser::parsers::MessageStream::new(&v);
    let decoded = catch_unwind(AssertUnwindSafe(move || {
        stream
            .parse_unstructured()
            .into_text()
            .map(|t| t.into_owned())
    }))
    .ok()
    .flatten();
    decoded.unwrap_or_else(|| String::from_utf8_lossy(&unfold(value)).into_owned())
}

/// The `<id>` tokens of a Message-ID/References/In-Reply-To value.
pub(crate) fn msg_ids(v: &[u8]) -> Vec<String> {
    let s = String::from_utf8_lossy(v);
    let mut out = Vec::new();
    let mut rest = s.as_ref();
    while let Some(open) = rest.find('<') {
        let after = rest.get(open + 1..).unwrap_or_default();
        let Some(close) = after.find('>') else {
            break;
        };
        let id: String = after
            .get(..close)
            .unwrap_or_default()
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        if !id.is_empty() {
            out.push(id);
        }
        rest = after.get(close + 1..).unwrap_or_default();
    }
    out
}

/// Base subject extraction (RFC 5256 2.1). Returns the base subject
/// (lowercased for the i;ascii-casemap comparison) and whether reply or
/// forward markers were removed. Works on slices of one normalised copy,
/// so a subject of thousands of `Re:` or `[fwd: ...]` layers costs time in
/// proportion to its length, not its square.
pub fn base_subject(subject: &str) -> (String, bool) {
    // (1) whitespace runs become one space.
    let norm: String = {
        let mut out = String::with_capacity(subject.len());
        let mut space = false;
        // WSP and line breaks only: a no-break space is text.
        for c in subject.chars() {
            if matches!(c, ' ' | '\t' | '\r' | '\n') {
                space = true;
            } else {
                if space && !out.is_empty() {
                    out.push(' ');
                }
                space = false;
                out.push(c);
            }
        }
        out
    };
    let mut s: &str = &norm;
    let mut is_reply = false;
    loop {
        // (2) trailing "(fwd)" and whitespace.
        loop {
            let t = s.trim_end();
            let cut = t.len().saturating_sub(5);
            match t.get(cut..) {
                Some(tail) if t.len() >= 5 && tail.eq_ignore_ascii_case("(fwd)") => {
                    s = t.get(..cut).unwrap_or_default();
                    is_reply = true;
                }
                _ => {
                    s = t;
                    break;
                }
            }
        }
        // (3)-(5) leading subj-leader and subj-blob, repeatedly.
        loop {
            let before = s.len();
            s = s.trim_start();
            if let Some(rest) = strip_leader(s) {
                s = rest;
                is_reply = true;
            }
            // (4) a leading blob, unless it is all that is left.
            if let Some(rest) = strip_blob(s) {
                if !rest.trim().is_empty() {
                    s = rest;
                }
            }
            if s.len() == before {
                break;
            }
        }
        // (6) [fwd: ...]
        if starts_ci(s, "[fwd:") && s.ends_with(']') {
            s = s.get(5..s.len() - 1).unwrap_or_default();
            is_reply = true;
            continue;
        }
        break;
    }
    // SORT's default collation is i;ascii-casemap (RFC 5256 3): only
    // ASCII letters fold.
    (s.trim().to_ascii_lowercase(), is_reply)
}

/// Does `s` start with the ASCII `prefix`, in any case?
fn starts_ci(s: &str, prefix: &str) -> bool {
    s.as_bytes()
        .get(..prefix.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(prefix.as_bytes()))
}

/// subj-blob = "[" *BLOBCHAR "]" *WSP
fn strip_blob(s: &str) -> Option<&str> {
    let rest = s.strip_prefix('[')?;
    // BLOBCHAR excludes "[": the first bracket must close the blob.
    let close = rest.find(['[', ']'])?;
    if rest.as_bytes().get(close) != Some(&b']') {
        return None;
    }
    Some(rest.get(close + 1..)?.trim_start())
}

/// subj-leader = (*subj-blob subj-refwd) / WSP;
/// subj-refwd = ("re" / ("fw" ["d"])) *WSP [subj-blob] ":"
fn strip_leader(s: &str) -> Option<&str> {
    let mut rest = s;
    while let Some(r) = strip_blob(rest) {
        rest = r;
    }
    let n = if starts_ci(rest, "re") {
        2
    } else if starts_ci(rest, "fwd") {
        3
    } else if starts_ci(rest, "fw") {
        2
    } else {
        return None;
    };
    let mut r = rest.get(n..)?.trim_start_matches([' ', '\t']);
    if let Some(x) = strip_blob(r) {
        r = x;
    }
    r.strip_prefix(':')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 5322 2.2.3 unfolding as mail-parser does it, for ASCII values
    /// without encoded-words: the shortcut gives the same text for every
    /// shape of whitespace, folding and line end.
    #[test]
    fn rfc5322_2_2_3_plain_header_value_is_what_mail_parser_decodes() {
        let values = [
            "",
            " ",
            "\r\n",
            " \r\n",
            "x",
            " x\r\n",
            "  a  b  \r\n",
            "a\tb\r\n",
            "a\r\n b\r\n",
            "a\r\n\tb\r\n",
            "a \r\n  \r\n b \r\n",
            "a\r\n \r\n",
            "a\n b\n",
            "a\rb\r\n",
            " \t \r\n x \r\n",
            "Re: [list] (fwd) x\r\n",
            "\"Q, J\" <a@b>, c@d\r\n",
            "x = y ? z\r\n",
            "a=\r\n ?b\r\n",
            "no line end",
            "trailing\r\n ",
            "\r\n x",
            "x\0y\r\n",
            "a\r\n\r\n",
            "a\r\nb\r\n",
            "a\nb",
            "a\r\n b\r\nc\r\n d",
            "\n x",
            "\nx",
        ];
        for v in values {
            let plain = plain_header_value(v.as_bytes());
            if v.contains("=?") {
                assert_eq!(plain, None, "{v:?}");
                continue;
            }
            assert_eq!(
                plain.as_deref(),
                Some(mail_parser_header_value(v.as_bytes()).as_str()),
                "{v:?}"
            );
        }
        for v in ["=?utf-8?q?x?=\r\n", "caf\u{e9}\r\n"] {
            assert_eq!(plain_header_value(v.as_bytes()), None, "{v:?}");
        }
        // Every short value over an alphabet of the bytes that matter.
        let alphabet = b"a ;\t\r\n=?";
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..50_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 10) as usize;
            let v: Vec<u8> = (0..len)
                .map(|i| alphabet[((x >> (4 + 3 * i)) % alphabet.len() as u64) as usize])
                .collect();
            match plain_header_value(&v) {
                Some(p) => assert_eq!(p, mail_parser_header_value(&v), "{v:?}"),
                None => assert!(v.windows(2).any(|w| w == b"=?"), "{v:?}"),
            }
        }
    }
}
