//! How deep mail-parser would nest a message, measured without building it.
//!
//! mail-parser 0.11.9 parses multiparts with an explicit stack, but every
//! unencoded message/rfc822 part becomes a `Message` value inside its
//! parent's part list, and base64 / quoted-printable message parts are
//! decoded and parsed by a recursive call (three levels at most). A message
//! with tens of thousands of nested message/rfc822 parts therefore yields a
//! value as deep, whose `Drop` (and `into_owned` for encoded parts) recurses
//! once per level and overflows the stack.
//!
//! [`exceeds`] replays mail-parser's own parse loop (`parsers/message.rs`,
//! `MessageParser::parse_`) with the same public stream primitives
//! (`parse_headers`, `seek_next_part`, `mime_part`, the transfer decoders,
//! `seek_part_end`, `is_multipart_end`), keeping only the stack of open
//! multiparts and messages. Because it follows the same code path over the
//! same bytes, it sees exactly the nesting mail-parser would build, and it
//! stops as soon as the limit is passed: the scan is one pass over the
//! message, allocates nothing per level but one stack entry, and its only
//! recursion is mail-parser's own, into encoded parts (at most
//! `MAX_NESTED_ENCODED` = 3 levels, as in mail-parser).
//!
//! If mail-parser is upgraded, re-read its `parse_` against this file (the
//! deep-nesting tests in `mime/tests.rs` fail loudly if the two diverge
//! far enough to matter).

use mail_parser::parsers::MessageStream;
use mail_parser::{ContentType, GetHeader, HeaderName, HeaderValue, MessageParser};

/// mail-parser's `MAX_NESTED_ENCODED`: encoded message/rfc822 parts are
/// parsed this many levels deep, deeper ones are kept as binary.
const MAX_NESTED_ENCODED: usize = 3;

/// What the replay needs of mail-parser's `MimeType`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// message/rfc822 or message/global (and the top level).
    Message,
    /// multipart/digest: parts without Content-Type are messages.
    Digest,
    /// text/plain (mail-parser keeps it as TextPlain on encoding problems).
    TextPlain,
    /// Anything else.
    Other,
}

/// One entry of mail-parser's `MessageParserState` as far as nesting goes.
struct State {
    kind: Kind,
    boundary: Option<Vec<u8>>,
}

/// Does `raw`, parsed by mail-parser, nest multiparts and messages more
/// than `limit` levels deep (encoded nested messages included)?
pub(crate) fn exceeds(raw: &[u8], limit: usize) -> bool {
    deepest(raw, 0, MAX_NESTED_ENCODED, limit) > limit
}

/// mail-parser's `mime_type`: (is multipart, kind).
fn classify(ct: Option<&ContentType<'_>>, parent: Kind) -> (bool, Kind) {
    match ct {
        Some(ct) => match ct.ctype() {
            "multipart" => (
                true,
                if ct.subtype() == Some("digest") {
                    Kind::Digest
                } else {
                    Kind::Other
                },
            ),
            "text" if ct.subtype() == Some("plain") => (false, Kind::TextPlain),
            "message" if matches!(ct.subtype(), Some("rfc822") | Some("global")) => {
                (false, Kind::Message)
            }
            _ => (false, Kind::Other),
        },
        None if parent == Kind::Digest => (false, Kind::Message),
        None => (false, Kind::TextPlain),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Cte {
    None,
    Base64,
    QuotedPrintable,
}

/// The deepest level reached, starting at `base`; returns early (with a
/// value above `limit`) once past `limit`.
fn deepest(raw: &[u8], base: usize, encoded_left: usize, limit: usize) -> usize {
    let parser = MessageParser::default();
    let mut stream = MessageStream::new(raw);
    let mut state = State {
        kind: Kind::Message,
        boundary: None,
    };
    // (state, pushed for a nested message)
    let mut stack: Vec<(State, bool)> = Vec::new();
    let mut headers = Vec::new();
    let mut deepest = base;

    'outer: loop {
        headers.clear();
        if !stream.parse_headers(&parser, &mut headers) {
            break;
        }
        let ct = headers
            .header_value(&HeaderName::ContentType)
            .and_then(|c| c.as_content_type());
        let (is_multipart, mut kind) = classify(ct, state.kind);

        if is_multipart {
            if let Some(boundary) = ct.and_then(|c| c.attribute("boundary")) {
                if stream.seek_next_part(boundary.as_bytes()) {
                    let new_state = State {
                        kind,
                        boundary: Some(boundary.as_bytes().to_vec()),
                    };
                    stack.push((std::mem::replace(&mut state, new_state), false));
                    deepest = deepest.max(base + stack.len());
                    if deepest > limit {
                        return deepest;
                    }
                    stream.skip_crlf();
                    continue;
                }
                kind = Kind::Other;
            }
        }

        let cte = match headers.header_value(&HeaderName::ContentTransferEncoding) {
            Some(HeaderValue::Text(e)) if e.eq_ignore_ascii_case("base64") => Cte::Base64,
            Some(HeaderValue::Text(e)) if e.eq_ignore_ascii_case("quoted-printable") => {
                Cte::QuotedPrintable
            }
            _ => Cte::None,
        };

        if kind == Kind::Message && cte == Cte::None {
            let new_state = State {
                kind: Kind::Message,
                boundary: state.boundary.take(),
            };
            stack.push((std::mem::replace(&mut state, new_state), true));
            deepest = deepest.max(base + stack.len());
            if deepest > limit {
                return deepest;
            }
            continue;
        }

        let boundary = state.boundary.clone().unwrap_or_default();
        let (offset_end, bytes) = match cte {
            Cte::Base64 => stream.decode_base64_mime(&boundary),
            Cte::QuotedPrintable => stream.decode_quoted_printable_mime(&boundary),
            Cte::None => stream.mime_part(&boundary),
        };
        if offset_end == usize::MAX {
            // mail-parser's recovery of an invalid part: it becomes text.
            let (_, found) = stream.seek_part_end(state.boundary.as_deref());
            if !found {
                state.boundary = None;
            }
        } else if kind == Kind::Message && encoded_left != 0 {
            // An encoded message: mail-parser parses the decoded bytes with
            // a recursive call, one level deeper.
            let inner = self::deepest(&bytes, base + stack.len() + 1, encoded_left - 1, limit);
            deepest = deepest.max(inner);
            if deepest > limit {
                return deepest;
            }
        }
        drop(bytes);

        if state.boundary.is_some() {
            'inner: loop {
                if state.kind == Kind::Message {
                    // The nested message ended with its only part.
                    match stack.pop() {
                        Some((mut prev, true)) => {
                            prev.boundary = state.boundary.take();
                            state = prev;
                        }
                        _ => break 'outer,
                    }
                }
                if stream.is_multipart_end() {
                    if let Some((prev, _)) = stack.pop() {
                        state = prev;
                        if let Some(b) = state.boundary.as_deref() {
                            if stream.seek_next_part_offset(b).is_some() {
                                continue 'inner;
                            }
                        }
                    }
                    break 'outer;
                }
                break 'inner;
            }
        } else if stream.offset() >= raw.len() {
            break 'outer;
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imap::mime::tests::{
        crlf, encoded_rfc822, nested_mixed, nested_multipart, nested_rfc822,
    };

    /// How deep mail-parser's value really is: message levels only (the
    /// multipart levels are flat in its part list). Recursive: call it on
    /// shallow messages only.
    fn message_depth(m: &mail_parser::Message<'_>) -> usize {
        m.parts
            .iter()
            .map(|p| match &p.body {
                mail_parser::PartType::Message(inner) => 1 + message_depth(inner),
                _ => 0,
            })
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn nesting_counts_what_mail_parser_builds() {
        for depth in [0, 1, 2, 5, 20] {
            let m = nested_rfc822(depth);
            let parsed = MessageParser::default().parse(&m[..]).expect("parses");
            assert_eq!(message_depth(&parsed), depth);
            assert!(!exceeds(&m, depth), "{depth}");
            if depth > 0 {
                assert!(exceeds(&m, depth - 1), "{depth}");
            }
            let m = nested_multipart(depth);
            assert!(!exceeds(&m, depth) && (depth == 0 || exceeds(&m, depth - 1)));
        }
        // Alternating: every level counts.
        let m = nested_mixed(10);
        assert!(!exceeds(&m, 10) && exceeds(&m, 9));
        // An encoded message/rfc822 is one level, plus what it holds.
        let m = encoded_rfc822(&nested_rfc822(5));
        assert!(!exceeds(&m, 7) && exceeds(&m, 6));
    }

    #[test]
    fn nesting_of_ordinary_messages_is_small() {
        let m = crlf(
            "Subject: x\nContent-Type: multipart/mixed; boundary=a\n\n--a\nContent-Type: text/plain\n\nhi\n--a\nContent-Type: message/rfc822\n\nSubject: y\n\nz\n--a--\n",
        );
        assert!(!exceeds(&m, 2));
        assert!(exceeds(&m, 1));
        assert!(!exceeds(b"", 0));
        assert!(!exceeds(b"no header", 0));
    }

    #[test]
    fn nesting_scan_stops_at_the_limit() {
        assert!(exceeds(&nested_rfc822(100_000), 64));
        assert!(exceeds(&nested_multipart(100_000), 64));
    }
}
