//! Byte-level framing of an SMTP/LMTP session: command lines, DATA bodies
//! and BDAT chunks. Pure state machines; every one accepts its input split
//! at any byte boundary and gives the same result.
//!
//! Command lines are framed here (not by smtp-proto's `RequestReceiver`,
//! whose limit is fixed at 4096 and which resynchronises in the middle of a
//! line); each complete line is then parsed by `smtp_proto::Request::parse`.
//!
//! The DATA decoder is ours too, because its end-of-data rule is the
//! defence against SMTP smuggling: the message ends ONLY at
//! `<CRLF>.<CRLF>` (or `.<CRLF>` right after the 354). Bare LF and bare CR
//! never start or end a line for that purpose (`\n.\n`, `\r\n.\n`,
//! `\n.\r\n`, `\r.\r\n`, `\r\n.\r\r\n` are all message content).
//!
//! Line endings: a bare LF or a bare CR in message content is stored as
//! CRLF (the store serves messages with CRLF line endings), so nothing that
//! looked like a line break to one parser is hidden from another. BDAT
//! chunks of a `BODY=BINARYMIME` message are stored byte for byte.

/// What `LineReader::next_line` found. `Debug` redacts AUTH and SASL
/// response lines (`crate::redact`).
#[derive(PartialEq, Eq)]
pub enum Line {
    /// A complete line, terminator (LF or CRLF) included.
    Complete(Vec<u8>),
    /// A line longer than the limit ended; its bytes were discarded.
    TooLong,
}

/// Frames command lines out of a byte buffer, with a hard length cap. An
/// over-long line is discarded as it arrives (never buffered whole) and
/// reported once, when its end is seen, so the next line starts clean.
impl std::fmt::Debug for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Line::Complete(l) => f
                .debug_tuple("Complete")
                .field(&crate::redact::Line(l))
                .finish(),
            Line::TooLong => f.write_str("TooLong"),
        }
    }
}

/// `Debug` shows sizes, not the partial line (it may be AUTH data).
pub struct LineReader {
    /// Longest accepted line, terminator excluded.
    max_line: usize,
    /// Bytes of the current line seen so far (unless discarding).
    partial: Vec<u8>,
    /// The current line already exceeded the limit; skip to its LF.
    discarding: bool,
}

impl std::fmt::Debug for LineReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineReader")
            .field("max_line", &self.max_line)
            .field("partial", &self.partial.len())
            .field("discarding", &self.discarding)
            .finish()
    }
}

impl LineReader {
    pub fn new(max_line: usize) -> LineReader {
        LineReader {
            max_line,
            partial: Vec::new(),
            discarding: false,
        }
    }

    /// Takes bytes from the front of `input` until one line is complete.
    /// Returns the number of bytes consumed and the line, if one ended.
    pub fn next_line(&mut self, input: &[u8]) -> (usize, Option<Line>) {
        match input.iter().position(|&b| b == b'\n') {
            Some(lf) => {
                let consumed = lf + 1;
                if self.discarding {
                    self.discarding = false;
                    return (consumed, Some(Line::TooLong));
                }
                self.partial.extend_from_slice(&input[..consumed]);
                let line = std::mem::take(&mut self.partial);
                let content = line.len() - if line.ends_with(b"\r\n") { 2 } else { 1 };
                if content > self.max_line {
                    (consumed, Some(Line::TooLong))
                } else {
                    (consumed, Some(Line::Complete(line)))
                }
            }
            None => {
                if !self.discarding {
                    self.partial.extend_from_slice(input);
                    // Content plus a trailing CR may still be acceptable.
                    if self.partial.len() > self.max_line + 1 {
                        self.partial = Vec::new();
                        self.discarding = true;
                    }
                }
                (input.len(), None)
            }
        }
    }

    /// True when part of a line is buffered.
    pub fn has_partial(&self) -> bool {
        !self.partial.is_empty() || self.discarding
    }

    /// Forgets any partial line (STARTTLS: plaintext before the handshake
    /// must not leak into the TLS session).
    pub fn reset(&mut self) {
        self.partial.clear();
        self.discarding = false;
    }
}

/// Collects message bytes with a size cap: over the cap, bytes are counted
/// but no longer kept, so the sender can be read to the end and answered.
/// With a spool, only the first `threshold` bytes stay in memory and the
/// rest goes to an anonymous file (see `spool`).
#[derive(Debug, Default)]
pub struct Body {
    /// The content, or its first `threshold` bytes when spooled.
    pub data: Vec<u8>,
    /// Bytes of content seen (kept or not).
    pub size: u64,
    pub max: u64,
    /// Where bytes past the threshold go; None: all in memory.
    spool: Option<SpoolConfig>,
    file: Option<SpoolFile>,
    /// Spooling failed (disk full, permissions): the message must be
    /// refused temporarily; the cause is for the log only.
    pub spool_error: Option<std::io::Error>,
}

impl Body {
    pub fn new(max: u64) -> Body {
        Body {
            data: Vec::new(),
            size: 0,
            max,
            ..Body::default()
        }
    }

    /// Spools bytes past `cfg.threshold` to disk.
    pub fn set_spool(&mut self, cfg: Option<SpoolConfig>) {
        self.spool = cfg;
    }

    pub fn over_limit(&self) -> bool {
        self.size > self.max
    }

    /// Part of the content is on disk.
    pub fn is_spooled(&self) -> bool {
        self.file.is_some()
    }

    /// The whole content after `head`, read back from disk if spooled.
    pub fn into_bytes(mut self, head: &[u8]) -> std::io::Result<Vec<u8>> {
        if let Some(e) = self.spool_error.take() {
            return Err(e);
        }
        // Room for the Return-Path final delivery puts in front, so it
        // moves the message instead of copying it (deliver::local).
        let mut out = Vec::with_capacity(
            crate::deliver::local::RETURN_PATH_ROOM
                + head.len()
                + usize::try_from(self.size).unwrap_or(0),
        );
        out.extend_from_slice(head);
        out.extend_from_slice(&self.data);
        self.data = Vec::new();
        if let Some(f) = self.file.take() {
            f.read_into(&mut out)?;
        }
        Ok(out)
    }

    /// Room for `n` more bytes about to be pushed (at most what will be
    /// kept in memory): one allocation per read instead of many small
    /// doublings. Follows the bytes received, never a size the client
    /// announced.
    fn reserve(&mut self, n: usize) {
        if self.file.is_some() || self.spool_error.is_some() || self.over_limit() {
            return;
        }
        let kept = usize::try_from(self.max)
            .unwrap_or(usize::MAX)
            .min(self.spool.as_ref().map_or(usize::MAX, |c| c.threshold));
        let n = n.min(kept.saturating_sub(self.data.len()));
        self.data.reserve(n);
    }

    fn push(&mut self, bytes: &[u8]) {
        self.size = self.size.saturating_add(bytes.len() as u64);
        if self.size > self.max {
            if !self.data.is_empty() || self.file.is_some() {
                // Over the limit: free the memory now, the message is refused.
                self.data = Vec::new();
                self.file = None;
            }
            return;
        }
        if self.spool_error.is_some() {
            return;
        }
        let Some(cfg) = &self.spool else {
            self.data.extend_from_slice(bytes);
            return;
        };
        let mut rest = bytes;
        if self.file.is_none() {
            let room = cfg
                .threshold
                .saturating_sub(self.data.len())
                .min(rest.len());
            self.data.extend_from_slice(&rest[..room]);
            rest = &rest[room..];
            if rest.is_empty() {
                return;
            }
            match SpoolFile::create(&cfg.dir) {
                Ok(f) => self.file = Some(f),
                Err(e) => {
                    self.spool_error = Some(e);
                    self.data = Vec::new();
                    return;
                }
            }
        }
        if let Some(f) = self.file.as_mut() {
            if let Err(e) = f.write(rest) {
                self.spool_error = Some(e);
                self.file = None;
                self.data = Vec::new();
            }
        }
    }
}

use super::spool::{SpoolConfig, SpoolFile};

/// Where the DATA decoder stands relative to lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataState {
    /// After a real CRLF (or at the start): a '.' here is special.
    LineStart,
    /// Inside a line (also after a bare LF).
    Mid,
    /// A CR inside a line, waiting to see whether LF follows.
    Cr,
    /// A '.' at line start.
    Dot,
    /// ".\r" at line start: LF next ends the message.
    DotCr,
}

/// Decodes a DATA body: dot-unstuffing (RFC 5321 4.5.2), end only at
/// `<CRLF>.<CRLF>`, bare CR/LF stored as CRLF.
#[derive(Debug)]
pub struct DataDecoder {
    state: DataState,
    pub body: Body,
}

impl DataDecoder {
    pub fn new(max_size: u64) -> DataDecoder {
        DataDecoder {
            state: DataState::LineStart,
            body: Body::new(max_size),
        }
    }

    /// Consumes bytes from `input`; returns how many and whether the end
    /// of data was reached (the bytes after it belong to the next command).
    pub fn feed(&mut self, input: &[u8]) -> (usize, bool) {
        self.body.reserve(input.len());
        // Runs of ordinary bytes are copied in one go.
        let mut run_start = 0;
        let mut i = 0;
        while i < input.len() {
            if self.state == DataState::Mid {
                // Inside a line only CR and LF matter: skip to the next one.
                match memchr::memchr2(b'\r', b'\n', &input[i..]) {
                    Some(at) => i += at,
                    None => break,
                }
            }
            let b = input[i];
            self.body.push(&input[run_start..i]);
            run_start = i + 1;
            i += 1;
            match (self.state, b) {
                (DataState::LineStart, b'.') => self.state = DataState::Dot,
                (DataState::LineStart | DataState::Mid, b'\r') => self.state = DataState::Cr,
                (DataState::LineStart | DataState::Mid, b'\n') => {
                    // Bare LF: content, stored as CRLF; not a line start.
                    self.body.push(b"\r\n");
                    self.state = DataState::Mid;
                }
                (DataState::LineStart | DataState::Mid, _) => {
                    self.body.push(&[b]);
                    self.state = DataState::Mid;
                }
                (DataState::Cr, b'\n') => {
                    self.body.push(b"\r\n");
                    self.state = DataState::LineStart;
                }
                (DataState::Cr, b'\r') => {
                    // Bare CR, and another CR pending.
                    self.body.push(b"\r\n");
                }
                (DataState::Cr, _) => {
                    self.body.push(b"\r\n");
                    self.body.push(&[b]);
                    self.state = DataState::Mid;
                }
                (DataState::Dot, b'\r') => self.state = DataState::DotCr,
                (DataState::Dot, b'\n') => {
                    // ".\n": not an end of data; the dot stays content.
                    self.body.push(b".\r\n");
                    self.state = DataState::Mid;
                }
                (DataState::Dot, _) => {
                    // Stuffed dot removed (RFC 5321 4.5.2).
                    self.body.push(&[b]);
                    self.state = DataState::Mid;
                }
                (DataState::DotCr, b'\n') => return (i, true),
                (DataState::DotCr, b'\r') => {
                    // ".\r\r": the first CR was bare.
                    self.body.push(b"\r\n");
                    self.state = DataState::Cr;
                }
                (DataState::DotCr, _) => {
                    self.body.push(b"\r\n");
                    self.body.push(&[b]);
                    self.state = DataState::Mid;
                }
            }
        }
        self.body.push(&input[run_start..]);
        (input.len(), false)
    }
}

/// Reads BDAT chunks (RFC 3030): exactly `size` bytes each, no stuffing.
/// Bare CR/LF are normalised to CRLF unless the body is BINARYMIME; a CR
/// at the end of one chunk is matched with a LF at the start of the next.
#[derive(Debug)]
pub struct BdatDecoder {
    pub body: Body,
    /// BODY=BINARYMIME: keep bytes exactly.
    binary: bool,
    /// A CR ended the previous bytes.
    cr_pending: bool,
    /// Bytes left in the current chunk.
    left: u64,
}

impl BdatDecoder {
    pub fn new(max_size: u64, binary: bool) -> BdatDecoder {
        BdatDecoder {
            body: Body::new(max_size),
            binary,
            cr_pending: false,
            left: 0,
        }
    }

    /// Starts the next chunk of `size` bytes.
    pub fn start_chunk(&mut self, size: u64) {
        self.left = size;
    }

    pub fn chunk_done(&self) -> bool {
        self.left == 0
    }

    /// Consumes up to the rest of the current chunk; returns bytes taken.
    pub fn feed(&mut self, input: &[u8]) -> usize {
        let n = input
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let chunk = &input[..n];
        self.left -= n as u64;
        self.body.reserve(n);
        if self.binary {
            self.body.push(chunk);
            return n;
        }
        let mut run_start = 0;
        for (i, &b) in chunk.iter().enumerate() {
            match b {
                b'\r' | b'\n' => {
                    self.body.push(&chunk[run_start..i]);
                    run_start = i + 1;
                    if b == b'\n' {
                        // CRLF, or a bare LF stored as CRLF.
                        self.body.push(b"\r\n");
                        self.cr_pending = false;
                    } else {
                        if self.cr_pending {
                            self.body.push(b"\r\n");
                        }
                        self.cr_pending = true;
                    }
                }
                _ if self.cr_pending => {
                    self.body.push(b"\r\n");
                    self.cr_pending = false;
                    run_start = i;
                }
                _ => {}
            }
        }
        self.body.push(&chunk[run_start..]);
        n
    }

    /// Ends the body (after BDAT LAST): a final bare CR becomes CRLF.
    pub fn finish(&mut self) {
        if self.cr_pending {
            self.body.push(b"\r\n");
            self.cr_pending = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_memory_follows_the_bytes_kept_not_the_bytes_sent() {
        // One read, one allocation of about its size.
        let mut d = DataDecoder::new(1 << 20);
        let msg = [
            b"Subject: x\r\n\r\n".as_slice(),
            &[b'a'; 4000],
            b"\r\n.\r\n",
        ]
        .concat();
        assert_eq!(d.feed(&msg), (msg.len(), true));
        assert!(
            d.body.data.capacity() < 2 * msg.len(),
            "{}",
            d.body.data.capacity()
        );
        // Over the limit: nothing is reserved for bytes that are dropped.
        let mut d = DataDecoder::new(1000);
        d.feed(&[b'a'; 1500]);
        d.feed(&[b'a'; 60_000]);
        assert!(d.body.over_limit());
        assert!(d.body.data.capacity() < 4096, "{}", d.body.data.capacity());
        let mut b = BdatDecoder::new(1000, true);
        b.start_chunk(100_000);
        b.feed(&[b'a'; 50_000]);
        assert!(b.body.data.capacity() < 4096, "{}", b.body.data.capacity());
    }

    /// Feeds `input` to a fresh decoder in pieces of the given split
    /// points; returns (message, bytes consumed) when the end is found.
    fn decode_split(input: &[u8], split: usize) -> Option<(Vec<u8>, usize)> {
        let mut d = DataDecoder::new(1 << 20);
        let mut offset = 0;
        for part in [&input[..split], &input[split..]] {
            let mut p = part;
            while !p.is_empty() {
                let (n, done) = d.feed(p);
                offset += n;
                if done {
                    return Some((d.body.data, offset));
                }
                p = &p[n..];
            }
        }
        None
    }

    fn decode(input: &[u8]) -> Option<(Vec<u8>, usize)> {
        let whole = decode_split(input, input.len());
        for split in 0..=input.len() {
            assert_eq!(decode_split(input, split), whole, "split at {split}");
        }
        // Byte by byte too.
        let mut d = DataDecoder::new(1 << 20);
        let mut bytewise = None;
        for (i, b) in input.iter().enumerate() {
            let (n, done) = d.feed(std::slice::from_ref(b));
            assert_eq!(n, 1);
            if done {
                bytewise = Some((std::mem::take(&mut d.body.data), i + 1));
                break;
            }
        }
        assert_eq!(bytewise, whole);
        whole
    }

    /// The DATA rules one byte at a time, as plainly as they can be
    /// written: what `DataDecoder::feed` (which skips through lines with
    /// memchr) must agree with.
    fn decode_by_the_rules(input: &[u8]) -> Option<(Vec<u8>, usize)> {
        let (mut out, mut line_start, mut i) = (Vec::new(), true, 0);
        let crlf = |out: &mut Vec<u8>| out.extend_from_slice(b"\r\n");
        while i < input.len() {
            let b = input[i];
            let next = input.get(i + 1).copied();
            if line_start && b == b'.' {
                match (next, input.get(i + 2).copied()) {
                    (Some(b'\r'), Some(b'\n')) => return Some((out, i + 3)),
                    // ".\n": the dot is content.
                    (Some(b'\n'), _) => out.push(b'.'),
                    // Undecided yet (".", ".\r" at the end): needs more.
                    (None, _) | (Some(b'\r'), None) => return None,
                    // Stuffed dot (or ".\r" + other: a bare CR follows).
                    _ => {}
                }
                line_start = false;
                i += 1;
                continue;
            }
            match (b, next) {
                (b'\r', Some(b'\n')) => {
                    crlf(&mut out);
                    line_start = true;
                    i += 2;
                    continue;
                }
                (b'\r', None) => return None,
                (b'\r', _) | (b'\n', _) => crlf(&mut out),
                _ => out.push(b),
            }
            line_start = false;
            i += 1;
        }
        None
    }

    #[test]
    fn feed_agrees_with_the_byte_at_a_time_rules_on_random_input() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..3000 {
            let len = (next() % 40) as usize;
            let input: Vec<u8> = (0..len)
                .map(|_| [b'a', b'.', b'\r', b'\n', b'x'][(next() % 5) as usize])
                .collect();
            let expected = decode_by_the_rules(&input);
            // `decode` also checks every split point and byte-by-byte.
            assert_eq!(
                decode(&input),
                expected,
                "{:?}",
                String::from_utf8_lossy(&input)
            );
        }
    }

    #[test]
    fn rfc5321_4_5_2_dot_unstuffing() {
        let (msg, n) = decode(b"a\r\n..b\r\n.c\r\n..\r\n.\r\nNEXT").unwrap();
        assert_eq!(msg, b"a\r\n.b\r\nc\r\n.\r\n");
        assert_eq!(n, 19);
    }

    #[test]
    fn rfc5321_empty_message_ends_at_first_dot_line() {
        assert_eq!(decode(b".\r\nQUIT\r\n").unwrap(), (Vec::new(), 3));
    }

    #[test]
    fn smuggling_bare_lf_dot_never_ends_data() {
        for evil in [
            &b"x\n.\nMAIL FROM:<a@b>\r\n"[..],
            b"x\r\n.\nMAIL FROM:<a@b>\r\n",
            b"x\n.\r\nMAIL FROM:<a@b>\r\n",
            b"x\r.\r\nMAIL FROM:<a@b>\r\n",
            b"x\r\n.\r\r\nMAIL FROM:<a@b>\r\n",
            b"x\r\n.\rMAIL FROM:<a@b>\r\n",
        ] {
            assert_eq!(decode(evil), None, "{:?}", String::from_utf8_lossy(evil));
            let mut all = evil.to_vec();
            all.extend_from_slice(b"\r\n.\r\n");
            let (msg, n) = decode(&all).unwrap();
            assert_eq!(n, all.len());
            // The smuggled command is content, with CRLF line endings only.
            assert!(msg.windows(9).any(|w| w == b"MAIL FROM"));
            for (i, &b) in msg.iter().enumerate() {
                if b == b'\n' {
                    assert_eq!(msg.get(i.wrapping_sub(1)), Some(&b'\r'));
                }
                if b == b'\r' {
                    assert_eq!(msg.get(i + 1), Some(&b'\n'));
                }
            }
        }
    }

    #[test]
    fn bare_lf_and_cr_are_stored_as_crlf() {
        let (msg, _) = decode(b"a\nb\rc\r\r\nd\r\n.\r\n").unwrap();
        assert_eq!(msg, b"a\r\nb\r\nc\r\n\r\nd\r\n");
    }

    #[test]
    fn size_limit_counts_but_stops_keeping() {
        let mut d = DataDecoder::new(10);
        let (n, done) = d.feed(b"0123456789abcdef\r\n.\r\n");
        assert!(done);
        assert_eq!(n, 21);
        assert!(d.body.over_limit());
        assert!(d.body.data.is_empty());
        assert_eq!(d.body.size, 18);
    }

    #[test]
    fn line_reader_frames_and_caps() {
        let input = b"EHLO a\r\nNOOP\nxxxxxxxxxxxxxxxxxxxxxxxx\r\nQUIT\r\n";
        let mut expected = Vec::new();
        {
            let mut r = LineReader::new(10);
            let mut p = &input[..];
            while !p.is_empty() {
                let (n, l) = r.next_line(p);
                p = &p[n..];
                expected.extend(l);
            }
        }
        assert_eq!(
            expected,
            vec![
                Line::Complete(b"EHLO a\r\n".to_vec()),
                Line::Complete(b"NOOP\n".to_vec()),
                Line::TooLong,
                Line::Complete(b"QUIT\r\n".to_vec()),
            ]
        );
        // Byte by byte, same lines.
        let mut r = LineReader::new(10);
        let mut got = Vec::new();
        for b in input {
            let (n, l) = r.next_line(std::slice::from_ref(b));
            assert_eq!(n, 1);
            got.extend(l);
        }
        assert_eq!(got, expected);
    }

    #[test]
    fn line_reader_accepts_exactly_max() {
        let mut r = LineReader::new(4);
        let mut got = Vec::new();
        for b in b"ABCD\r\nABCDE\r\n" {
            got.extend(r.next_line(std::slice::from_ref(b)).1);
        }
        assert_eq!(
            got,
            vec![Line::Complete(b"ABCD\r\n".to_vec()), Line::TooLong]
        );
    }

    #[test]
    fn rfc3030_bdat_normalises_across_chunks() {
        let mut d = BdatDecoder::new(100, false);
        d.start_chunk(3);
        assert_eq!(d.feed(b"a\rXYZ"), 3);
        assert!(d.chunk_done());
        d.start_chunk(4);
        assert_eq!(d.feed(b"\nb\nc"), 4);
        d.start_chunk(1);
        assert_eq!(d.feed(b"\r"), 1);
        d.finish();
        // The CR before X was bare; the final CR is completed by finish().
        assert_eq!(d.body.data, b"a\r\nX\r\nb\r\nc\r\n".as_slice());
    }

    #[test]
    fn rfc3030_binarymime_is_kept_exactly() {
        let mut d = BdatDecoder::new(100, true);
        d.start_chunk(5);
        assert_eq!(d.feed(b"a\rb\nc--"), 5);
        d.finish();
        assert_eq!(d.body.data, b"a\rb\nc".as_slice());
    }
}
