//! POP3 framing: command lines in, dot-stuffed multi-line bodies out.
//!
//! Both halves are pure (no I/O) so they can be fed arbitrary splits of the
//! same bytes in tests.

/// One event from the line reader. `Debug` redacts PASS / AUTH / APOP
/// and SASL response lines (`crate::redact`).
#[derive(Clone, PartialEq, Eq)]
pub enum Input {
    /// A complete line, without its CRLF (a bare LF is accepted too).
    Line(Vec<u8>),
    /// A line longer than the limit; its bytes were discarded up to and
    /// including its LF, so the stream is in step again.
    TooLong,
}

/// Splits the client's byte stream into lines, with a hard cap on length.
///
/// Invariant: the buffer never holds more than one incomplete line of at
/// most `max_line + 1` bytes plus whatever complete lines the last read
/// brought in (the driver drains every complete line before reading again).
impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Input::Line(l) => f
                .debug_tuple("Line")
                .field(&crate::redact::Line(l))
                .finish(),
            Input::TooLong => f.write_str("TooLong"),
        }
    }
}

/// `Debug` shows sizes, not the buffered bytes (a pipelined PASS).
pub struct LineReader {
    buf: Vec<u8>,
    /// Longest line content accepted, in bytes (CRLF not counted).
    max_line: usize,
    /// Inside an over-long line: drop bytes until its LF.
    discarding: bool,
    /// Bytes of `buf` already scanned for a LF (so scanning stays linear).
    scanned: usize,
}

impl std::fmt::Debug for LineReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineReader")
            .field("buffered", &self.buf.len())
            .field("max_line", &self.max_line)
            .field("discarding", &self.discarding)
            .finish()
    }
}

impl LineReader {
    pub fn new(max_line: usize) -> LineReader {
        LineReader {
            buf: Vec::new(),
            max_line,
            discarding: false,
            scanned: 0,
        }
    }

    /// Adds bytes read from the client.
    pub fn push(&mut self, mut data: &[u8]) {
        if self.discarding {
            match data.iter().position(|b| *b == b'\n') {
                Some(i) => {
                    self.discarding = false;
                    data = &data[i + 1..];
                }
                None => return,
            }
        }
        self.buf.extend_from_slice(data);
    }

    /// Drops everything buffered (after STLS: RFC 2595 section 4 wants
    /// plaintext that was pipelined behind the command thrown away).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.scanned = 0;
        self.discarding = false;
    }

    /// Everything buffered, for whoever reads the stream next (the mmp
    /// hands what a client pipelined behind its login to the store).
    pub fn take_rest(&mut self) -> Vec<u8> {
        self.scanned = 0;
        std::mem::take(&mut self.buf)
    }

    /// True when bytes are waiting (a complete line may be among them).
    pub fn has_buffered(&self) -> bool {
        !self.buf.is_empty()
    }

    /// The next complete line or over-long-line event, if any.
    pub fn next(&mut self) -> Option<Input> {
        let unscanned = self.buf.get(self.scanned..).unwrap_or_default();
        match unscanned.iter().position(|b| *b == b'\n') {
            Some(i) => {
                let lf = self.scanned + i;
                let mut line: Vec<u8> = self.buf.drain(..=lf).collect();
                self.scanned = 0;
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if line.len() > self.max_line {
                    return Some(Input::TooLong);
                }
                Some(Input::Line(line))
            }
            None => {
                // Content of max_line bytes plus a CR may still be waiting
                // for its LF; anything longer is too long.
                if self.buf.len() > self.max_line.saturating_add(1) {
                    self.buf.clear();
                    self.scanned = 0;
                    self.discarding = true;
                    return Some(Input::TooLong);
                }
                self.scanned = self.buf.len();
                None
            }
        }
    }
}

/// Turns a stored message into a POP3 multi-line response body (RFC 1939
/// section 3): every line ends with CRLF, lines starting with "." get one
/// more ".", and ".\r\n" ends it. For TOP only the header, the blank line
/// and `n` body lines are sent.
///
/// The message is fed in whatever pieces the file is read in (`push`), and
/// each piece is stuffed in one pass straight into the caller's output
/// buffer: runs between line ends are copied whole, nothing is allocated
/// per line and the message is never held whole. A line may begin, and a
/// CRLF may be split, anywhere across pieces: the state below carries what
/// a piece boundary cuts.
///
/// Bounds: one `push` of n bytes appends at most 2n + 1 bytes (a "." line
/// of a bare LF doubles, a CR held back from the previous piece adds one);
/// `finish` appends at most 6.
#[derive(Debug)]
pub struct DotStuffer {
    /// The next message byte begins a line.
    at_line_start: bool,
    /// The last byte pushed was a CR not yet written: a LF next makes it
    /// the line end, anything else makes it content.
    pending_cr: bool,
    /// The current line has no content so far (the blank line ending the
    /// header is recognised by this at its line end).
    line_empty: bool,
    /// Still in the header (before the end of the first empty line).
    in_header: bool,
    /// TOP: body lines still to send; None: the whole message (RETR).
    body_left: Option<usize>,
    /// The terminating ".\r\n" has been appended.
    done: bool,
}

impl DotStuffer {
    pub fn new(top_lines: Option<usize>) -> DotStuffer {
        DotStuffer {
            at_line_start: true,
            pending_cr: false,
            line_empty: true,
            in_header: true,
            body_left: top_lines,
            done: false,
        }
    }

    /// Stuffs the next bytes of the message onto `out`. Returns true once
    /// the terminating ".\r\n" has been appended (TOP's last line): the
    /// rest of the message need not be read.
    pub fn push(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> bool {
        while !self.done {
            let Some(&first) = input.first() else {
                break;
            };
            if self.pending_cr {
                self.pending_cr = false;
                if first == b'\n' {
                    self.end_line(out);
                    input = &input[1..];
                    continue;
                }
                // A CR not followed by LF is content (kept as it is).
                out.push(b'\r');
                self.line_empty = false;
            }
            if self.at_line_start {
                if !self.in_header {
                    match self.body_left {
                        Some(0) => {
                            self.end(out);
                            break;
                        }
                        Some(n) => self.body_left = Some(n - 1),
                        None => {}
                    }
                }
                if first == b'.' {
                    out.push(b'.');
                }
                self.at_line_start = false;
                self.line_empty = true;
            }
            match memchr::memchr(b'\n', input) {
                Some(lf) => {
                    // CRLF and a bare LF both end the line; a CR before a
                    // CR stays content ("x\r\r\n" is "x\r" then CRLF).
                    let line = &input[..lf];
                    let content = line.strip_suffix(b"\r").unwrap_or(line);
                    self.content(content, out);
                    self.end_line(out);
                    input = &input[lf + 1..];
                }
                None => {
                    // A trailing CR waits for the next piece: its LF may
                    // be there.
                    let content = match input.strip_suffix(b"\r") {
                        Some(c) => {
                            self.pending_cr = true;
                            c
                        }
                        None => input,
                    };
                    self.content(content, out);
                    input = &[];
                }
            }
        }
        self.done
    }

    /// Ends the response after the message's last byte (nothing if TOP
    /// already ended it).
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        if self.pending_cr {
            // The message ended in a lone CR: it is content.
            self.pending_cr = false;
            out.push(b'\r');
        }
        self.end(out);
    }

    fn content(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        if !bytes.is_empty() {
            out.extend_from_slice(bytes);
            self.line_empty = false;
        }
    }

    fn end_line(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"\r\n");
        if self.in_header && self.line_empty {
            // The blank line ends the header; it was sent as part of it.
            self.in_header = false;
        }
        self.at_line_start = true;
    }

    fn end(&mut self, out: &mut Vec<u8>) {
        if !self.at_line_start {
            // The message's last line had no CRLF: end it before the dot.
            out.extend_from_slice(b"\r\n");
            self.at_line_start = true;
        }
        out.extend_from_slice(b".\r\n");
        self.done = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(max: usize, chunks: &[&[u8]]) -> Vec<Input> {
        let mut r = LineReader::new(max);
        let mut out = Vec::new();
        for c in chunks {
            r.push(c);
            while let Some(ev) = r.next() {
                out.push(ev);
            }
        }
        out
    }

    fn line(s: &str) -> Input {
        Input::Line(s.as_bytes().to_vec())
    }

    #[test]
    fn rfc1939_lines_end_with_crlf_and_split_anywhere() {
        let input = b"USER alice\r\nPASS s3cret word\r\nSTAT\nLIST 1\r\n";
        let whole = feed_all(64, &[input]);
        assert_eq!(
            whole,
            vec![
                line("USER alice"),
                line("PASS s3cret word"),
                line("STAT"),
                line("LIST 1")
            ]
        );
        for i in 0..=input.len() {
            let (a, b) = input.split_at(i);
            assert_eq!(feed_all(64, &[a, b]), whole, "split at {i}");
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(feed_all(64, &bytes), whole);
    }

    #[test]
    fn over_long_line_is_reported_once_and_stream_resyncs() {
        let mut input = b"NOOP\r\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 100));
        input.extend_from_slice(b"\r\nSTAT\r\n");
        let whole = feed_all(16, &[&input]);
        assert_eq!(whole, vec![line("NOOP"), Input::TooLong, line("STAT")]);
        for i in 0..=input.len() {
            for j in i..=input.len() {
                let got = feed_all(16, &[&input[..i], &input[i..j], &input[j..]]);
                assert_eq!(got, whole, "split at {i},{j}");
            }
        }
    }

    #[test]
    fn line_of_exactly_max_is_accepted_and_one_more_is_not() {
        let ok = [b"abcd".as_slice(), b"\r\n"].concat();
        assert_eq!(feed_all(4, &[&ok]), vec![line("abcd")]);
        for i in 0..=ok.len() {
            assert_eq!(feed_all(4, &[&ok[..i], &ok[i..]]), vec![line("abcd")]);
        }
        let bad = b"abcde\r\nNOOP\r\n";
        for i in 0..=bad.len() {
            assert_eq!(
                feed_all(4, &[&bad[..i], &bad[i..]]),
                vec![Input::TooLong, line("NOOP")],
                "split at {i}"
            );
        }
    }

    #[test]
    fn rfc2595_clear_discards_pipelined_plaintext() {
        let mut r = LineReader::new(64);
        r.push(b"STLS\r\nUSER evil\r\n");
        assert_eq!(r.next(), Some(line("STLS")));
        r.clear();
        assert_eq!(r.next(), None);
        assert!(!r.has_buffered());
    }

    /// The whole response with the message fed in the pieces `cuts`
    /// (ascending offsets) make, as the driver feeds file reads.
    fn stuff_cut(data: &[u8], top: Option<usize>, cuts: &[usize]) -> Vec<u8> {
        let mut s = DotStuffer::new(top);
        let mut out = Vec::new();
        let mut from = 0;
        for &cut in cuts.iter().chain(std::iter::once(&data.len())) {
            let piece = &data[from..cut];
            let before = out.len();
            let done = s.push(piece, &mut out);
            assert!(
                out.len() - before <= 2 * piece.len() + 3,
                "push grew too much"
            );
            from = cut;
            if done {
                return out;
            }
        }
        s.finish(&mut out);
        assert!(s.done);
        out
    }

    /// Fed `max` bytes at a time.
    fn stuff(data: &[u8], top: Option<usize>, max: usize) -> Vec<u8> {
        let cuts: Vec<usize> = (max..data.len()).step_by(max).collect();
        stuff_cut(data, top, &cuts)
    }

    /// The same response from every split of the message into two and
    /// three pieces and from every piece size.
    fn assert_split_invariant(data: &[u8], top: Option<usize>, want: &[u8]) {
        assert_eq!(stuff_cut(data, top, &[]), want, "whole");
        for i in 0..=data.len() {
            for j in i..=data.len() {
                assert_eq!(stuff_cut(data, top, &[i, j]), want, "cut at {i},{j}");
            }
        }
        for max in 1..=data.len().max(1) {
            assert_eq!(stuff(data, top, max), want, "pieces of {max}");
        }
    }

    /// RFC 1939 section 3 written out line by line, the slow obvious way.
    fn reference(data: &[u8], top: Option<usize>) -> Vec<u8> {
        let mut lines: Vec<&[u8]> = Vec::new();
        let mut rest = data;
        while let Some(lf) = rest.iter().position(|b| *b == b'\n') {
            let line = &rest[..lf];
            lines.push(line.strip_suffix(b"\r").unwrap_or(line));
            rest = &rest[lf + 1..];
        }
        if !rest.is_empty() {
            lines.push(rest);
        }
        let header_end = lines.iter().position(|l| l.is_empty());
        let keep = match (top, header_end) {
            (Some(n), Some(h)) => (h + 1 + n).min(lines.len()),
            _ => lines.len(),
        };
        let mut out = Vec::new();
        for l in &lines[..keep] {
            if l.first() == Some(&b'.') {
                out.push(b'.');
            }
            out.extend_from_slice(l);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        out
    }

    #[test]
    fn rfc1939_byte_stuffs_lines_starting_with_dot_across_every_split() {
        let msg = b"Subject: x\r\n\r\n.hidden\r\n..two\r\nend.\r\n.\r\n";
        let want = b"Subject: x\r\n\r\n..hidden\r\n...two\r\nend.\r\n..\r\n.\r\n";
        assert_split_invariant(msg, None, want);
        // A "." that begins a piece but not a line is not stuffed.
        assert_split_invariant(b"a.b\r\nc.\r\n", None, b"a.b\r\nc.\r\n.\r\n");
    }

    #[test]
    fn last_line_without_crlf_is_terminated_before_the_dot() {
        assert_split_invariant(b"A: b\r\n\r\nbody", None, b"A: b\r\n\r\nbody\r\n.\r\n");
        assert_split_invariant(b"", None, b".\r\n");
        assert_split_invariant(b".", None, b"..\r\n.\r\n");
        // A message ending in a lone CR keeps it as content.
        assert_split_invariant(b"a\r\nz\r", None, b"a\r\nz\r\r\n.\r\n");
        // Bare LF becomes CRLF; a lone CR inside a line stays.
        assert_split_invariant(b"a\nb\rc\n", None, b"a\r\nb\rc\r\n.\r\n");
    }

    #[test]
    fn crlf_split_across_pieces_is_never_cr_cr_lf() {
        let msg = b"x\r\r\ny\r\n\r\r\r\nz";
        assert_split_invariant(msg, None, b"x\r\r\ny\r\n\r\r\r\nz\r\n.\r\n");
        // The CR of the blank line ending the header in one piece, its LF
        // in the next: TOP still counts body lines from there.
        let top = b"A: b\r\n\r\nl1\r\nl2\r\n";
        assert_split_invariant(top, Some(1), b"A: b\r\n\r\nl1\r\n.\r\n");
    }

    #[test]
    fn rfc1939_top_sends_header_blank_line_and_n_body_lines() {
        let msg = b"From: a\r\nSubject: b\r\n\r\nl1\r\n.l2\r\nl3\r\n";
        assert_split_invariant(msg, Some(0), b"From: a\r\nSubject: b\r\n\r\n.\r\n");
        assert_split_invariant(
            msg,
            Some(2),
            b"From: a\r\nSubject: b\r\n\r\nl1\r\n..l2\r\n.\r\n",
        );
        assert_split_invariant(msg, Some(99), &stuff(msg, None, 1000));
        // No blank line at all: the whole thing is header.
        assert_split_invariant(b"A: b\r\nC: d\r\n", Some(0), b"A: b\r\nC: d\r\n.\r\n");
        // A header ended by a bare LF blank line.
        assert_split_invariant(b"A: b\n\nl1\nl2", Some(1), b"A: b\r\n\r\nl1\r\n.\r\n");
    }

    #[test]
    fn rfc1939_top_is_done_before_the_rest_of_the_message_is_read() {
        let mut s = DotStuffer::new(Some(1));
        let mut out = Vec::new();
        assert!(!s.push(b"A: b\r\n\r\nl1\r\n", &mut out));
        assert!(
            s.push(b"l2\r\nl3\r\n", &mut out),
            "the second body line ends TOP 1"
        );
        assert_eq!(out, b"A: b\r\n\r\nl1\r\n.\r\n");
        // Further pieces and finish add nothing.
        assert!(s.push(b"more\r\n", &mut out));
        s.finish(&mut out);
        assert_eq!(out, b"A: b\r\n\r\nl1\r\n.\r\n");
    }

    #[test]
    fn every_short_message_matches_rfc1939_written_out_at_every_split() {
        // Every message of up to 6 bytes over the bytes that matter.
        let alphabet = [b'.', b'\r', b'\n', b'a'];
        for len in 0..=6u32 {
            for n in 0..alphabet.len().pow(len) {
                let mut k = n;
                let msg: Vec<u8> = (0..len)
                    .map(|_| {
                        let b = alphabet[k % alphabet.len()];
                        k /= alphabet.len();
                        b
                    })
                    .collect();
                for top in [None, Some(0), Some(1)] {
                    let want = reference(&msg, top);
                    assert_eq!(stuff_cut(&msg, top, &[]), want, "{msg:?} top {top:?}");
                    for i in 0..=msg.len() {
                        for j in i..=msg.len() {
                            assert_eq!(stuff_cut(&msg, top, &[i, j]), want, "{msg:?} {i},{j}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_huge_single_line_is_streamed_piece_by_piece() {
        let msg = vec![b'a'; 100_000];
        let mut s = DotStuffer::new(None);
        let mut total = 0;
        let mut out = Vec::with_capacity(4096);
        for piece in msg.chunks(4096) {
            out.clear();
            assert!(!s.push(piece, &mut out));
            assert_eq!(out.len(), piece.len());
            total += out.len();
        }
        out.clear();
        s.finish(&mut out);
        total += out.len();
        assert_eq!(total, 100_000 + 2 + 3);
    }
}
