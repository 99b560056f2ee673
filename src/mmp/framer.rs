//! The mmp's view of the one IMAP framer (`crate::imap::framer`): whole
//! client messages before login (a line, or lines with their literals up to
//! the final CRLF), the store's responses during the backend login, and
//! plain lines (SASL responses, POP3). The rules (literals, LITERAL+,
//! limits, skipping refused input) are the shared framer's; this adapter
//! keeps the mmp's names and its single size limit.
//!
//! Unlike imap-codec's `Fragmentizer` the framer keeps the bytes after the
//! current message reachable (`take_rest`): commands a client pipelines
//! behind its LOGIN belong to the store and are handed over untouched.

use crate::imap::framer::{Event, Framer as Imap};

pub use crate::imap::framer::is_tag_char;

/// What the framer found. `Debug` redacts LOGIN / AUTHENTICATE / PASS /
/// AUTH and SASL response lines (`crate::redact`).
#[derive(Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete message: line(s) and literals, final line ending included.
    Message(Vec<u8>),
    /// A synchronizing literal was announced: the peer waits for a
    /// continuation request ("+ ...") before sending it. Reported once per
    /// literal.
    Continue,
    /// The message exceeded the size limit and was dropped (a literal on
    /// its way skipped). `tag` is the first word, if one was seen. If
    /// `fatal`, the peer is sending a literal that cannot be skipped (its
    /// length is not a number64): close the connection.
    TooLong { tag: Option<String>, fatal: bool },
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Frame::Message(m) => f
                .debug_tuple("Message")
                .field(&crate::redact::Line(m))
                .finish(),
            Frame::Continue => f.write_str("Continue"),
            Frame::TooLong { tag, fatal } => f
                .debug_struct("TooLong")
                .field("tag", tag)
                .field("fatal", fatal)
                .finish(),
        }
    }
}

/// `Debug` shows buffer sizes, not the bytes (they may hold a password).
#[derive(Debug)]
pub struct Framer {
    /// Boxed: the pre-login session that holds it stays small.
    inner: Box<Imap>,
}

impl Framer {
    /// Frames client commands. `max`: the largest message accepted, line
    /// endings and literals included; `continuations`: report
    /// synchronizing literals as `Continue`.
    pub fn new(max: usize, continuations: bool) -> Framer {
        let mut inner = Imap::new(line_max(max), max as u64);
        inner.set_continuations(continuations);
        inner.set_max_command(max as u64);
        Framer {
            inner: Box::new(inner),
        }
    }

    /// Frames the store's responses (every literal follows its line).
    pub fn responses(max: usize) -> Framer {
        let mut inner = Imap::responses(line_max(max), max as u64);
        inner.set_max_command(max as u64);
        Framer {
            inner: Box::new(inner),
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.inner.push(bytes);
    }

    /// The next frame, or None until more bytes arrive.
    pub fn next(&mut self) -> Option<Frame> {
        Some(match self.inner.next()? {
            Event::Command(m) | Event::Response(m) | Event::Line(m) => Frame::Message(m),
            Event::Continue => Frame::Continue,
            Event::Refused { tag, reason } => Frame::TooLong {
                tag,
                fatal: reason.is_fatal(),
            },
        })
    }

    /// Reads one plain line (no literals), for AUTHENTICATE responses and
    /// POP3. Returns it without its line ending; Err: it was too long (and
    /// has been dropped).
    pub fn next_line(&mut self) -> Option<Result<Vec<u8>, ()>> {
        self.inner.set_line_mode(true);
        let ev = self.inner.next();
        self.inner.set_line_mode(false);
        match ev? {
            Event::Line(l) => Some(Ok(l)),
            _ => Some(Err(())),
        }
    }

    /// Everything received and not yet framed (pipelined input).
    pub fn take_rest(&mut self) -> Vec<u8> {
        self.inner.take_rest()
    }

    /// Drops buffered input (after STARTTLS, RFC 9051 section 6.2.1).
    pub fn clear(&mut self) {
        self.inner.clear();
    }

    pub fn has_buffered(&self) -> bool {
        self.inner.buffered() > 0
    }
}

/// The longest line content within a message of `max` octets: its CRLF
/// counts.
fn line_max(max: usize) -> usize {
    max.saturating_sub(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(f: &mut Framer, input: &[&[u8]]) -> Vec<Frame> {
        let mut out = Vec::new();
        for chunk in input {
            f.push(chunk);
            while let Some(fr) = f.next() {
                out.push(fr);
            }
        }
        out
    }

    #[test]
    fn rfc9051_literals_frame_the_same_split_at_every_byte() {
        let input: &[u8] =
            b"a1 CAPABILITY\r\na2 LOGIN {5}\r\nalice {3+}\r\npw\n\r\na3 NOOP\r\npartial";
        let whole = frames(&mut Framer::new(1000, false), &[input]);
        assert_eq!(
            whole,
            vec![
                Frame::Message(b"a1 CAPABILITY\r\n".to_vec()),
                Frame::Message(b"a2 LOGIN {5}\r\nalice {3+}\r\npw\n\r\n".to_vec()),
                Frame::Message(b"a3 NOOP\r\n".to_vec()),
            ]
        );
        for i in 0..=input.len() {
            let mut f = Framer::new(1000, true);
            let got = frames(&mut f, &[&input[..i], &input[i..]]);
            let without_continue: Vec<Frame> = got
                .iter()
                .filter(|f| **f != Frame::Continue)
                .cloned()
                .collect();
            assert_eq!(without_continue, whole, "split at {i}");
            // Only the synchronizing {5} asks for a continuation.
            let conts = got.iter().filter(|f| **f == Frame::Continue).count();
            assert_eq!(conts, 1, "split at {i}");
            assert_eq!(f.take_rest(), b"partial");
        }
    }

    #[test]
    fn continuation_is_reported_before_the_literal_arrives() {
        let mut f = Framer::new(1000, true);
        assert_eq!(frames(&mut f, &[b"a LOGIN {5}\r\n"]), vec![Frame::Continue]);
        assert_eq!(
            frames(&mut f, &[b"alice x\r\n"]),
            vec![Frame::Message(b"a LOGIN {5}\r\nalice x\r\n".to_vec())]
        );
        // The response side asks for nothing.
        let mut f = Framer::responses(1000);
        assert_eq!(frames(&mut f, &[b"* ID (\"a\" {2}\r\n"]), vec![]);
        assert_eq!(
            frames(&mut f, &[b"ab)\r\n"]),
            vec![Frame::Message(b"* ID (\"a\" {2}\r\nab)\r\n".to_vec())]
        );
    }

    #[test]
    fn overlong_lines_and_literals_are_dropped_and_the_stream_resyncs() {
        let mut f = Framer::new(64, true);
        let long = [b"t1 LOGIN ".as_slice(), &[b'x'; 100], b"\r\nt2 NOOP\r\n"].concat();
        assert_eq!(
            frames(&mut f, &[&long]),
            vec![
                Frame::TooLong {
                    tag: Some("t1".into()),
                    fatal: false
                },
                Frame::Message(b"t2 NOOP\r\n".to_vec())
            ]
        );
        let mut f = Framer::new(64, true);
        assert_eq!(
            frames(&mut f, &[b"t3 LOGIN {1000}\r\nt4 NOOP\r\n"]),
            vec![
                Frame::TooLong {
                    tag: Some("t3".into()),
                    fatal: false
                },
                Frame::Message(b"t4 NOOP\r\n".to_vec())
            ]
        );
        // A LITERAL+ literal is on its way: skipped, then the stream goes
        // on (its bytes are never read as commands).
        let mut f = Framer::new(64, true);
        let plus = [
            b"t5 LOGIN {100+}\r\n".as_slice(),
            &[b'y'; 100],
            b"\r\nt6 NOOP\r\n",
        ]
        .concat();
        assert_eq!(
            frames(&mut f, &[&plus]),
            vec![
                Frame::TooLong {
                    tag: Some("t5".into()),
                    fatal: false
                },
                Frame::Message(b"t6 NOOP\r\n".to_vec())
            ]
        );
        // One that cannot be skipped is fatal.
        let mut f = Framer::new(64, true);
        assert_eq!(
            frames(&mut f, &[b"t7 LOGIN {99999999999999999999+}\r\n"]),
            vec![Frame::TooLong {
                tag: Some("t7".into()),
                fatal: true
            }]
        );
        // An endless line without LF, fed in pieces, is dropped too.
        let mut f = Framer::new(64, true);
        let got = frames(
            &mut f,
            &[&[b'y'; 50], &[b'y'; 50], &[b'y'; 50], b"\r\nt8 NOOP\r\n"],
        );
        assert_eq!(
            got,
            vec![
                Frame::TooLong {
                    tag: None,
                    fatal: false
                },
                Frame::Message(b"t8 NOOP\r\n".to_vec())
            ]
        );
    }

    #[test]
    fn a_message_of_exactly_max_octets_passes_one_more_does_not() {
        let line = [b"t1 ID ".as_slice(), &[b'x'; 56], b"\r\n"].concat();
        assert_eq!(line.len(), 64);
        let mut f = Framer::new(64, true);
        assert_eq!(frames(&mut f, &[&line]), vec![Frame::Message(line.clone())]);
        let longer = [b"t1 ID ".as_slice(), &[b'x'; 57], b"\r\n"].concat();
        assert!(matches!(
            frames(&mut f, &[&longer])[..],
            [Frame::TooLong { fatal: false, .. }]
        ));
    }

    #[test]
    fn next_line_reads_sasl_responses() {
        let mut f = Framer::new(16, true);
        f.push(b"AGEAYg==\r\n*\r\n");
        assert_eq!(f.next_line(), Some(Ok(b"AGEAYg==".to_vec())));
        assert_eq!(f.next_line(), Some(Ok(b"*".to_vec())));
        assert_eq!(f.next_line(), None);
        f.push(&[b'z'; 80]);
        assert_eq!(f.next_line(), None);
        f.push(b"\r\nok\r\n");
        assert_eq!(f.next_line(), Some(Err(())));
        assert_eq!(f.next_line(), Some(Ok(b"ok".to_vec())));
    }
}
