//! Frames IMAP input into whole messages: a line, or a line announcing a
//! literal (`{n}` or `{n+}`), the literal's bytes, and the line after, up
//! to the final CRLF (RFC 9051 section 4.3, RFC 7888 LITERAL+). The same
//! framer reads the store's responses during the backend login.
//!
//! Unlike imap-codec's `Fragmentizer` it keeps the bytes after the current
//! message reachable (`take_rest`): commands a client pipelines behind its
//! LOGIN belong to the store and are handed over untouched.

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
    /// The message exceeded the size limit and was dropped. `tag` is the
    /// first word, if one was seen. If `fatal`, the peer is sending a
    /// literal we did not ask for and the stream cannot be resynchronised
    /// cheaply: close the connection.
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
pub struct Framer {
    buf: Vec<u8>,
    /// Bytes of `buf` that belong to the current message and were checked.
    scanned: usize,
    /// Literal bytes of the current message still to arrive.
    literal_left: usize,
    /// The current literal's continuation was reported.
    continued: bool,
    /// Dropping an overlong line until its LF.
    discarding: bool,
    /// `next` found an overlong line before its LF: report it (with this
    /// tag) once the LF shows whether the line announced a literal, so the
    /// report is the same however the bytes arrived.
    overlong: Option<Option<String>>,
    /// The last bytes of the line being dropped (a literal announcement).
    discard_tail: Vec<u8>,
    max: usize,
    /// Report announced literals as `Continue` (server side) or not.
    continuations: bool,
}

impl std::fmt::Debug for Framer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Framer")
            .field("buffered", &self.buf.len())
            .field("scanned", &self.scanned)
            .field("literal_left", &self.literal_left)
            .field("discarding", &self.discarding)
            .finish()
    }
}

impl Framer {
    /// `max`: the largest message accepted, literals included.
    pub fn new(max: usize, continuations: bool) -> Framer {
        Framer {
            buf: Vec::new(),
            scanned: 0,
            literal_left: 0,
            continued: false,
            discarding: false,
            overlong: None,
            discard_tail: Vec::new(),
            max,
            continuations,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next frame, or None until more bytes arrive.
    pub fn next(&mut self) -> Option<Frame> {
        loop {
            if self.discarding {
                let lf = self.buf.iter().position(|b| *b == b'\n');
                let end = lf.map_or(self.buf.len(), |i| i + 1);
                self.discard_tail.extend(self.buf.drain(..end));
                let keep = self.discard_tail.len().saturating_sub(32);
                self.discard_tail.drain(..keep);
                // No LF yet: still inside the dropped line.
                lf?;
                self.discarding = false;
                let tail = std::mem::take(&mut self.discard_tail);
                if let Some(tag) = self.overlong.take() {
                    // A LITERAL+ literal follows the dropped line: its bytes
                    // are on their way and must not be read as commands.
                    let fatal = matches!(literal_announcement(&tail), Some((_, false)));
                    return Some(Frame::TooLong { tag, fatal });
                }
            }
            if self.literal_left > 0 {
                let have = self.buf.len() - self.scanned;
                if have < self.literal_left {
                    if self.continuations && !self.continued {
                        self.continued = true;
                        return Some(Frame::Continue);
                    }
                    return None;
                }
                self.scanned += self.literal_left;
                self.literal_left = 0;
            }
            let rest = self.buf.get(self.scanned..).unwrap_or_default();
            let Some(lf) = rest.iter().position(|b| *b == b'\n') else {
                if self.buf.len() > self.max {
                    self.overlong = Some(self.tag());
                    // Earlier lines and literals of the message go; the
                    // current line is dropped up to its LF below.
                    self.buf.drain(..self.scanned);
                    self.reset_message();
                    self.discard_tail.clear();
                    self.discarding = true;
                    continue;
                }
                return None;
            };
            let line_end = self.scanned + lf + 1;
            let line = self.buf.get(self.scanned..line_end).unwrap_or_default();
            match literal_announcement(line) {
                Some((len, sync)) => {
                    if line_end.saturating_add(len) > self.max {
                        let tag = self.tag();
                        self.buf.drain(..line_end);
                        self.reset_message();
                        // A synchronizing literal is never sent if we do
                        // not ask for it; a LITERAL+ one is on its way.
                        return Some(Frame::TooLong { tag, fatal: !sync });
                    }
                    self.scanned = line_end;
                    self.literal_left = len;
                    self.continued = !sync;
                }
                None => {
                    if line_end > self.max {
                        let tag = self.tag();
                        self.buf.drain(..line_end);
                        self.reset_message();
                        return Some(Frame::TooLong { tag, fatal: false });
                    }
                    let msg: Vec<u8> = self.buf.drain(..line_end).collect();
                    self.reset_message();
                    return Some(Frame::Message(msg));
                }
            }
        }
    }

    /// Reads one plain line (no literals), for AUTHENTICATE responses.
    /// Returns it without its line ending.
    pub fn next_line(&mut self) -> Option<Result<Vec<u8>, ()>> {
        let lf = self.buf.iter().position(|b| *b == b'\n');
        match lf {
            Some(i) if i < self.max => {
                let mut line: Vec<u8> = self.buf.drain(..=i).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                Some(Ok(line))
            }
            Some(i) => {
                self.buf.drain(..=i);
                Some(Err(()))
            }
            None if self.buf.len() > self.max => {
                self.buf.clear();
                self.discard_tail.clear();
                self.discarding = true;
                Some(Err(()))
            }
            None => None,
        }
    }

    /// Everything received and not yet framed (pipelined input).
    pub fn take_rest(&mut self) -> Vec<u8> {
        self.reset_message();
        std::mem::take(&mut self.buf)
    }

    /// Drops buffered input (after STARTTLS, RFC 9051 section 6.2.1).
    pub fn clear(&mut self) {
        self.reset_message();
        self.buf.clear();
        self.discarding = false;
        self.overlong = None;
        self.discard_tail.clear();
    }

    pub fn has_buffered(&self) -> bool {
        !self.buf.is_empty()
    }

    fn reset_message(&mut self) {
        self.scanned = 0;
        self.literal_left = 0;
        self.continued = false;
    }

    fn tag(&self) -> Option<String> {
        let end = self
            .buf
            .iter()
            .position(|b| matches!(b, b' ' | b'\r' | b'\n'))?;
        let t = self.buf.get(..end)?;
        if t.is_empty() || t.len() > 64 || !t.iter().all(|b| is_tag_char(*b)) {
            return None;
        }
        String::from_utf8(t.to_vec()).ok()
    }
}

/// RFC 9051 tag: ASTRING-CHAR except "+".
pub fn is_tag_char(b: u8) -> bool {
    b.is_ascii_graphic() && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b'+')
}

/// `{123}` or `{123+}` at the end of a line (before CRLF or LF).
fn literal_announcement(line: &[u8]) -> Option<(usize, bool)> {
    let line = line.strip_suffix(b"\n")?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line = line.strip_suffix(b"}")?;
    let (line, sync) = match line.strip_suffix(b"+") {
        Some(l) => (l, false),
        None => (line, true),
    };
    let open = line.iter().rposition(|b| *b == b'{')?;
    let digits = line.get(open + 1..)?;
    if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some((usize::try_from(n).ok()?, sync))
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
        let whole = frames(&mut Framer::new(1000, true), &[input]);
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
            // Only the synchronizing {5} asks for a continuation, and only
            // when it was not already all there.
            let conts = got.iter().filter(|f| **f == Frame::Continue).count();
            assert!(conts <= 1, "split at {i}");
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
        let mut f = Framer::new(1000, false);
        assert_eq!(frames(&mut f, &[b"* ID (\"a\" {2}\r\n"]), vec![]);
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
        let mut f = Framer::new(64, true);
        assert_eq!(
            frames(&mut f, &[b"t5 LOGIN {1000+}\r\n"]),
            vec![Frame::TooLong {
                tag: Some("t5".into()),
                fatal: true
            }]
        );
        // An endless line without LF, fed in pieces, is dropped too.
        let mut f = Framer::new(64, true);
        let got = frames(
            &mut f,
            &[&[b'y'; 50], &[b'y'; 50], &[b'y'; 50], b"\r\nt6 NOOP\r\n"],
        );
        assert_eq!(
            got,
            vec![
                Frame::TooLong {
                    tag: None,
                    fatal: false
                },
                Frame::Message(b"t6 NOOP\r\n".to_vec())
            ]
        );
    }

    #[test]
    fn rfc7888_overlong_line_announcing_literal_plus_is_fatal_however_split() {
        // The LITERAL+ bytes are on their way whatever we answer: reading
        // them as commands would let a literal smuggle commands.
        let input = [
            b"t1 LOGIN ".as_slice(),
            &[b'x'; 100],
            b" {9+}\r\nt2 NOOP\r\n",
        ]
        .concat();
        let whole = frames(&mut Framer::new(64, true), &[&input]);
        assert_eq!(
            whole[0],
            Frame::TooLong {
                tag: Some("t1".into()),
                fatal: true
            }
        );
        for cut in 0..=input.len() {
            let got = frames(&mut Framer::new(64, true), &[&input[..cut], &input[cut..]]);
            assert_eq!(got, whole, "split at {cut}");
        }
        // A synchronizing literal is never sent: not fatal.
        let sync = [
            b"t1 LOGIN ".as_slice(),
            &[b'x'; 100],
            b" {9}\r\nt2 NOOP\r\n",
        ]
        .concat();
        for cut in 0..=sync.len() {
            let got = frames(&mut Framer::new(64, true), &[&sync[..cut], &sync[cut..]]);
            assert_eq!(
                got,
                vec![
                    Frame::TooLong {
                        tag: Some("t1".into()),
                        fatal: false
                    },
                    Frame::Message(b"t2 NOOP\r\n".to_vec())
                ],
                "split at {cut}"
            );
        }
    }

    #[test]
    fn not_a_literal_announcement() {
        assert_eq!(literal_announcement(b"a {}\r\n"), None);
        assert_eq!(literal_announcement(b"a {1x}\r\n"), None);
        assert_eq!(literal_announcement(b"a {12} \r\n"), None);
        assert_eq!(literal_announcement(b"a {99999999999}\r\n"), None);
        assert_eq!(literal_announcement(b"a {7}\n"), Some((7, true)));
        assert_eq!(literal_announcement(b"a {0+}\r\n"), Some((0, false)));
    }

    #[test]
    fn next_line_reads_sasl_responses() {
        let mut f = Framer::new(16, true);
        f.push(b"AGEAYg==\r\n*\r\n");
        assert_eq!(f.next_line(), Some(Ok(b"AGEAYg==".to_vec())));
        assert_eq!(f.next_line(), Some(Ok(b"*".to_vec())));
        assert_eq!(f.next_line(), None);
        f.push(&[b'z'; 40]);
        assert_eq!(f.next_line(), Some(Err(())));
    }
}
