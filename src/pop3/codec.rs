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
/// and `n` body lines are sent. Produces output a chunk at a time so a big
/// message is never copied whole.
#[derive(Debug)]
pub struct DotStuffer<'a> {
    data: &'a [u8],
    pos: usize,
    at_line_start: bool,
    /// Still in the header (before the first empty line).
    in_header: bool,
    /// TOP: body lines still to send; None: the whole message (RETR).
    body_left: Option<usize>,
    done: bool,
}

impl<'a> DotStuffer<'a> {
    pub fn new(data: &'a [u8], top_lines: Option<usize>) -> DotStuffer<'a> {
        DotStuffer {
            data,
            pos: 0,
            at_line_start: true,
            in_header: true,
            body_left: top_lines,
            done: false,
        }
    }

    /// Appends output to `out` until it holds about `max` bytes (a little
    /// more is possible). Returns true once the terminating ".\r\n" has been
    /// appended.
    pub fn fill(&mut self, out: &mut Vec<u8>, max: usize) -> bool {
        while !self.done && out.len() < max {
            if self.pos >= self.data.len() {
                self.finish(out);
                break;
            }
            if self.at_line_start {
                if !self.in_header {
                    match self.body_left {
                        Some(0) => {
                            self.pos = self.data.len();
                            self.finish(out);
                            break;
                        }
                        Some(n) => self.body_left = Some(n - 1),
                        None => {}
                    }
                }
                let rest = &self.data[self.pos..];
                if rest.first() == Some(&b'.') {
                    out.push(b'.');
                }
                if self.in_header && (rest.starts_with(b"\r\n") || rest.starts_with(b"\n")) {
                    // The blank line ends the header; it is sent as part of it.
                    self.in_header = false;
                }
                self.at_line_start = false;
            }
            // At least 2 so a CR can always travel with its LF.
            let room = max.saturating_sub(out.len()).max(2);
            let end = self.data.len().min(self.pos.saturating_add(room));
            let window = &self.data[self.pos..end];
            match window.iter().position(|b| *b == b'\n') {
                Some(i) => {
                    let lf = self.pos + i;
                    let content_end = if lf > self.pos && self.data[lf - 1] == b'\r' {
                        lf - 1
                    } else {
                        lf
                    };
                    out.extend_from_slice(&self.data[self.pos..content_end]);
                    out.extend_from_slice(b"\r\n");
                    self.pos = lf + 1;
                    self.at_line_start = true;
                }
                None => {
                    // Do not split a CR from a LF that may follow it.
                    let mut take = window.len();
                    if end < self.data.len() && window.last() == Some(&b'\r') && take > 1 {
                        take -= 1;
                    }
                    out.extend_from_slice(&window[..take]);
                    self.pos += take;
                }
            }
        }
        self.done
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
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

    fn stuff(data: &[u8], top: Option<usize>, max: usize) -> Vec<u8> {
        let mut s = DotStuffer::new(data, top);
        let mut all = Vec::new();
        let mut rounds = 0;
        loop {
            let mut out = Vec::new();
            let done = s.fill(&mut out, max);
            all.extend_from_slice(&out);
            rounds += 1;
            assert!(rounds < 100_000, "no progress");
            if done {
                return all;
            }
        }
    }

    #[test]
    fn rfc1939_byte_stuffs_lines_starting_with_dot() {
        let msg = b"Subject: x\r\n\r\n.hidden\r\n..two\r\nend.\r\n.\r\n";
        let want = b"Subject: x\r\n\r\n..hidden\r\n...two\r\nend.\r\n..\r\n.\r\n";
        for max in 1..80 {
            assert_eq!(stuff(msg, None, max), want.to_vec(), "max {max}");
        }
    }

    #[test]
    fn last_line_without_crlf_is_terminated_before_the_dot() {
        assert_eq!(
            stuff(b"A: b\r\n\r\nbody", None, 1000),
            b"A: b\r\n\r\nbody\r\n.\r\n"
        );
        assert_eq!(stuff(b"", None, 1000), b".\r\n");
        // Bare LF becomes CRLF; a lone CR inside a line stays.
        assert_eq!(stuff(b"a\nb\rc\n", None, 1000), b"a\r\nb\rc\r\n.\r\n");
    }

    #[test]
    fn crlf_is_never_split_into_cr_cr_lf_whatever_the_chunk_size() {
        let msg = b"x\r\r\ny\r\n\r\r\r\nz";
        let want = stuff(msg, None, 10_000);
        assert_eq!(want, b"x\r\r\ny\r\n\r\r\r\nz\r\n.\r\n");
        for max in 1..20 {
            assert_eq!(stuff(msg, None, max), want, "max {max}");
        }
    }

    #[test]
    fn rfc1939_top_sends_header_blank_line_and_n_body_lines() {
        let msg = b"From: a\r\nSubject: b\r\n\r\nl1\r\n.l2\r\nl3\r\n";
        for max in 1..60 {
            assert_eq!(
                stuff(msg, Some(0), max),
                b"From: a\r\nSubject: b\r\n\r\n.\r\n",
                "max {max}"
            );
            assert_eq!(
                stuff(msg, Some(2), max),
                b"From: a\r\nSubject: b\r\n\r\nl1\r\n..l2\r\n.\r\n"
            );
            assert_eq!(stuff(msg, Some(99), max), stuff(msg, None, max));
        }
        // No blank line at all: the whole thing is header.
        assert_eq!(
            stuff(b"A: b\r\nC: d\r\n", Some(0), 100),
            b"A: b\r\nC: d\r\n.\r\n"
        );
    }

    #[test]
    fn a_huge_single_line_is_streamed_in_bounded_chunks() {
        let msg = vec![b'a'; 100_000];
        let mut s = DotStuffer::new(&msg, None);
        let mut total = 0;
        loop {
            let mut out = Vec::new();
            let done = s.fill(&mut out, 4096);
            assert!(out.len() <= 4096 + 5, "chunk of {}", out.len());
            total += out.len();
            if done {
                break;
            }
        }
        assert_eq!(total, 100_000 + 2 + 3);
    }
}
