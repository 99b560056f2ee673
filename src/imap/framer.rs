//! Framing of client input: command lines and their literals (RFC 3501
//! 4.3, RFC 7888 LITERAL+), with hard caps on line and literal sizes.
//!
//! A pure state machine: bytes go in with [`Framer::push`], events come out
//! of [`Framer::next`]. "Not enough bytes yet" is `None`. A refused line or
//! literal is discarded so the stream stays in sync: an over-long line is
//! skipped to its end; a too-big synchronizing literal is never asked for
//! (no `+`), a too-big non-synchronizing one is read and dropped together
//! with the rest of its command.

/// What the framer found. `Debug` redacts LOGIN / AUTHENTICATE commands
/// and line-mode lines (SASL responses): see `crate::redact`.
#[derive(Clone, PartialEq, Eq)]
pub enum Event {
    /// A complete command: every line and literal as received, ready for
    /// the command decoder.
    Command(Vec<u8>),
    /// A synchronizing literal was announced and will be accepted: the
    /// driver sends a continuation request (`+ ...`).
    Continue,
    /// The command was refused while framing; it has been discarded.
    Refused {
        tag: Option<String>,
        reason: Refusal,
    },
    /// In line mode (AUTHENTICATE data, IDLE's DONE): one line without its
    /// line ending.
    Line(Vec<u8>),
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::redact::Line;
        match self {
            Event::Command(c) => f.debug_tuple("Command").field(&Line(c)).finish(),
            Event::Continue => f.write_str("Continue"),
            Event::Refused { tag, reason } => f
                .debug_struct("Refused")
                .field("tag", tag)
                .field("reason", reason)
                .finish(),
            Event::Line(l) => f.debug_tuple("Line").field(&Line(l)).finish(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A line exceeded `max_line`.
    LineTooLong,
    /// A literal (or the whole command) exceeded `max_literal`.
    LiteralTooBig,
    /// A non-synchronizing literal exceeded the LITERAL- limit (RFC 7888 5).
    NonSyncTooBig,
    /// The process-wide budget of bytes in flight
    /// (`limits.max_bytes_in_flight`) cannot hold the literal now:
    /// `NO [LIMIT]` (RFC 9051 7.1), the client may retry later.
    Limit,
}

use std::sync::Arc;

use crate::budget::{Budget, Lease};

/// The largest non-synchronizing literal under LITERAL- (RFC 7888 5).
pub const LITERAL_MINUS_MAX: u64 = 4096;

enum Step {
    Emit(Event),
    More,
    Again,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Reading a line of the current command into `buf`.
    Line,
    /// Reading `remaining` literal bytes into `buf`.
    Literal { remaining: u64 },
    /// Dropping bytes to the end of the line, then (unless that line
    /// announces another literal) refusing the command.
    Discard { reason: Refusal },
    /// Dropping the bytes of a refused non-synchronizing literal.
    DiscardLiteral { remaining: u64, reason: Refusal },
}

pub struct Framer {
    max_line: usize,
    max_literal: u64,
    /// Cap on a whole command (lines plus literals).
    max_command: u64,
    /// Bytes received and not yet looked at.
    input: Vec<u8>,
    /// The command being assembled.
    buf: Vec<u8>,
    /// Where the current line starts in `buf`.
    line_start: usize,
    state: State,
    /// The tag of a command being discarded (kept for the error reply).
    discard_tag: Option<String>,
    /// Last bytes of a line being discarded, to spot a literal announcement.
    discard_tail: Vec<u8>,
    /// Line mode: frames plain lines, no literals.
    line_mode: bool,
    /// LITERAL-: the cap on non-synchronizing literals (None: LITERAL+).
    max_nonsync: Option<u64>,
    /// Process-wide budget that literals larger than `LITERAL_MINUS_MAX`
    /// (APPEND, in practice) take from; None: no budget.
    budget: Option<Arc<Budget>>,
    /// Budget taken by the literals of the command being assembled.
    lease: Option<Lease>,
    /// Budget of the last command emitted: held while the driver works on
    /// it (it asks for the next event only after), given back then.
    held: Option<Lease>,
}

impl Framer {
    pub fn new(max_line: usize, max_literal: u64) -> Framer {
        Framer {
            max_line: max_line.max(64),
            max_literal,
            max_command: max_literal.saturating_add(max_line as u64 * 4),
            input: Vec::new(),
            buf: Vec::new(),
            line_start: 0,
            state: State::Line,
            discard_tag: None,
            discard_tail: Vec::new(),
            line_mode: false,
            max_nonsync: None,
            budget: None,
            lease: None,
            held: None,
        }
    }

    /// Literals larger than `LITERAL_MINUS_MAX` take their size from
    /// `budget` while they are held; refused with `Refusal::Limit` when
    /// it is spent.
    pub fn set_budget(&mut self, budget: Option<Arc<Budget>>) {
        self.budget = budget;
    }

    /// LITERAL- (RFC 7888 5): non-synchronizing literals above `max` are
    /// refused. None: LITERAL+, no such limit.
    pub fn set_max_nonsync(&mut self, max: Option<u64>) {
        self.max_nonsync = max;
    }

    /// Changes the literal cap (smaller before login).
    pub fn set_max_literal(&mut self, max_literal: u64) {
        self.max_literal = max_literal;
        self.max_command = max_literal.saturating_add(self.max_line as u64 * 4);
    }

    pub fn push(&mut self, data: &[u8]) {
        self.input.extend_from_slice(data);
    }

    /// Switches between command framing and plain line framing.
    pub fn set_line_mode(&mut self, on: bool) {
        self.line_mode = on;
    }

    /// Drops everything buffered (after STARTTLS: RFC 3501 6.2.1 forbids
    /// acting on plaintext sent before the handshake).
    pub fn clear(&mut self) {
        self.input.clear();
        self.buf.clear();
        self.line_start = 0;
        self.state = State::Line;
        self.discard_tag = None;
        self.discard_tail.clear();
        self.lease = None;
        self.held = None;
    }

    /// The next event, or `None` when more bytes are needed.
    pub fn next(&mut self) -> Option<Event> {
        // The previous command has been handled: its literals' budget
        // goes back.
        self.held = None;
        loop {
            if self.input.is_empty() {
                return None;
            }
            match self.state.clone() {
                State::Line => match self.step_line() {
                    Step::Emit(ev) => return Some(ev),
                    Step::More => return None,
                    Step::Again => {}
                },
                State::Literal { remaining } => {
                    let n = (remaining.min(self.input.len() as u64)) as usize;
                    self.buf.extend(self.input.drain(..n));
                    let left = remaining - n as u64;
                    if left == 0 {
                        self.state = State::Line;
                        self.line_start = self.buf.len();
                    } else {
                        self.state = State::Literal { remaining: left };
                        return None;
                    }
                }
                State::DiscardLiteral { remaining, reason } => {
                    let n = (remaining.min(self.input.len() as u64)) as usize;
                    self.input.drain(..n);
                    let left = remaining - n as u64;
                    if left == 0 {
                        self.state = State::Discard { reason };
                        self.discard_tail.clear();
                    } else {
                        self.state = State::DiscardLiteral {
                            remaining: left,
                            reason,
                        };
                        return None;
                    }
                }
                State::Discard { reason } => {
                    if let Some(ev) = self.step_discard(reason) {
                        return Some(ev);
                    }
                }
            }
        }
    }

    fn step_line(&mut self) -> Step {
        let line_len = self.buf.len() - self.line_start;
        match self.input.iter().position(|&b| b == b'\n') {
            None => {
                if line_len + self.input.len() > self.max_line {
                    self.buf.append(&mut self.input);
                    self.start_discard(Refusal::LineTooLong);
                    return Step::Again;
                }
                self.buf.append(&mut self.input);
                Step::More
            }
            Some(p) => {
                if line_len + p + 1 > self.max_line {
                    self.buf.extend(self.input.drain(..=p));
                    let tag = self.tag();
                    let tail = self.buf.split_off(self.buf.len().saturating_sub(32));
                    self.buf.clear();
                    self.discard_tag = tag;
                    // The over-long line may itself announce a literal.
                    return match self.line_done_discarding(&tail, Refusal::LineTooLong) {
                        Some(ev) => Step::Emit(ev),
                        None => Step::Again,
                    };
                }
                self.buf.extend(self.input.drain(..=p));
                if self.line_mode {
                    let mut line = std::mem::take(&mut self.buf);
                    strip_eol(&mut line);
                    self.line_start = 0;
                    return Step::Emit(Event::Line(line));
                }
                let line = self.buf.get(self.line_start..).unwrap_or_default();
                match literal_announcement(line) {
                    None => {
                        self.line_start = 0;
                        self.held = self.lease.take();
                        Step::Emit(Event::Command(std::mem::take(&mut self.buf)))
                    }
                    Some((len, sync)) => {
                        let total = self.buf.len() as u64 + len;
                        let nonsync_too_big = !sync && self.max_nonsync.is_some_and(|m| len > m);
                        if nonsync_too_big {
                            let tag = self.tag();
                            self.buf.clear();
                            self.line_start = 0;
                            self.discard_tag = tag;
                            self.state = State::DiscardLiteral {
                                remaining: len,
                                reason: Refusal::NonSyncTooBig,
                            };
                            return Step::Again;
                        }
                        let refusal = if len > self.max_literal || total > self.max_command {
                            Some(Refusal::LiteralTooBig)
                        } else if len > LITERAL_MINUS_MAX {
                            match self.budget.as_ref().map(|b| b.try_take(len)) {
                                None => None,
                                Some(Some(l)) => {
                                    match self.lease.as_mut() {
                                        Some(mine) => mine.merge(l),
                                        None => self.lease = Some(l),
                                    }
                                    None
                                }
                                Some(None) => Some(Refusal::Limit),
                            }
                        } else {
                            None
                        };
                        if let Some(reason) = refusal {
                            let tag = self.tag();
                            self.buf.clear();
                            self.line_start = 0;
                            self.lease = None;
                            if sync {
                                // The client waits for "+" that never comes:
                                // refuse now, it will not send the bytes.
                                return Step::Emit(Event::Refused { tag, reason });
                            }
                            self.discard_tag = tag;
                            self.state = State::DiscardLiteral {
                                remaining: len,
                                reason,
                            };
                            return Step::Again;
                        }
                        self.state = State::Literal { remaining: len };
                        if len == 0 {
                            // Zero-length literal: nothing to read.
                            self.state = State::Line;
                            self.line_start = self.buf.len();
                        }
                        if sync {
                            Step::Emit(Event::Continue)
                        } else {
                            Step::Again
                        }
                    }
                }
            }
        }
    }

    fn start_discard(&mut self, reason: Refusal) {
        self.lease = None;
        self.discard_tag = self.tag();
        self.discard_tail = self.buf.split_off(self.buf.len().saturating_sub(32));
        self.buf.clear();
        self.line_start = 0;
        self.state = State::Discard { reason };
    }

    fn step_discard(&mut self, reason: Refusal) -> Option<Event> {
        match self.input.iter().position(|&b| b == b'\n') {
            None => {
                self.discard_tail.append(&mut self.input);
                let cut = self.discard_tail.len().saturating_sub(32);
                self.discard_tail.drain(..cut);
                None
            }
            Some(p) => {
                self.discard_tail.extend(self.input.drain(..=p));
                let cut = self.discard_tail.len().saturating_sub(32);
                self.discard_tail.drain(..cut);
                let tail = std::mem::take(&mut self.discard_tail);
                self.line_done_discarding(&tail, reason)
            }
        }
    }

    /// A discarded line ended: a literal it announces is skipped too (a
    /// synchronizing one will not come: we never send `+`).
    fn line_done_discarding(&mut self, tail: &[u8], reason: Refusal) -> Option<Event> {
        self.line_start = 0;
        match literal_announcement(tail) {
            Some((len, false)) if !self.line_mode => {
                self.state = State::DiscardLiteral {
                    remaining: len,
                    reason,
                };
                None
            }
            _ => {
                self.state = State::Line;
                Some(Event::Refused {
                    tag: self.discard_tag.take(),
                    reason,
                })
            }
        }
    }

    /// The tag of the command in `buf`, if it starts with a valid one.
    fn tag(&self) -> Option<String> {
        if self.line_mode {
            return None;
        }
        parse_tag(&self.buf)
    }
}

/// A command tag at the start of `line` (RFC 3501 9: 1*<any ASTRING-CHAR
/// except "+">).
pub fn parse_tag(line: &[u8]) -> Option<String> {
    let end = line.iter().position(|&b| b == b' ')?;
    let tag = line.get(..end)?;
    if tag.is_empty() || tag.len() > 64 {
        return None;
    }
    let ok = tag.iter().all(|&b| {
        b > 0x20 && b < 0x7f && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b'+')
    });
    ok.then(|| String::from_utf8_lossy(tag).into_owned())
}

fn strip_eol(line: &mut Vec<u8>) {
    if line.last() == Some(&b'\n') {
        line.pop();
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
}

/// `{N}` or `{N+}` at the end of a line (before CRLF): (length, synchronizing).
fn literal_announcement(line: &[u8]) -> Option<(u64, bool)> {
    let mut l = line;
    if let Some(x) = l.strip_suffix(b"\n") {
        l = x;
    }
    if let Some(x) = l.strip_suffix(b"\r") {
        l = x;
    }
    let l = l.strip_suffix(b"}")?;
    let (l, sync) = match l.strip_suffix(b"+") {
        Some(x) => (x, false),
        None => (l, true),
    };
    let open = l.iter().rposition(|&b| b == b'{')?;
    let digits = l.get(open + 1..)?;
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some((n, sync))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(f: &mut Framer, input: &[u8]) -> Vec<Event> {
        f.push(input);
        let mut out = Vec::new();
        while let Some(e) = f.next() {
            out.push(e);
        }
        out
    }

    /// Feeds `input` split at every byte boundary (and byte by byte) and
    /// checks the events are always the same.
    fn all_splits(max_line: usize, max_literal: u64, input: &[u8]) -> Vec<Event> {
        let whole = run(&mut Framer::new(max_line, max_literal), input);
        for i in 0..=input.len() {
            let mut f = Framer::new(max_line, max_literal);
            let mut ev = run(&mut f, &input[..i]);
            ev.extend(run(&mut f, &input[i..]));
            assert_eq!(ev, whole, "split at {i}");
        }
        let mut f = Framer::new(max_line, max_literal);
        let mut ev = Vec::new();
        for b in input {
            ev.extend(run(&mut f, std::slice::from_ref(b)));
        }
        assert_eq!(ev, whole, "byte by byte");
        whole
    }

    #[test]
    fn rfc3501_2_2_commands_are_lines() {
        let ev = all_splits(1000, 1000, b"a1 NOOP\r\na2 CAPABILITY\n");
        assert_eq!(
            ev,
            vec![
                Event::Command(b"a1 NOOP\r\n".to_vec()),
                Event::Command(b"a2 CAPABILITY\n".to_vec())
            ]
        );
    }

    #[test]
    fn rfc9051_limit_when_the_byte_budget_is_spent() {
        let budget = Arc::new(Budget::new(64 * 1024));
        let mut f = Framer::new(1000, 1 << 20);
        f.set_budget(Some(budget.clone()));
        let hog = budget.try_take(40 * 1024).unwrap();
        // Synchronizing: refused at once, no "+".
        assert_eq!(
            run(&mut f, b"a1 APPEND INBOX {30000}\r\n"),
            vec![Event::Refused {
                tag: Some("a1".into()),
                reason: Refusal::Limit
            }]
        );
        // Non-synchronizing: its bytes are read and dropped, then refused.
        let mut input = b"a2 APPEND INBOX {30000+}\r\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 30000));
        input.extend_from_slice(b"\r\na3 NOOP\r\n");
        assert_eq!(
            run(&mut f, &input),
            vec![
                Event::Refused {
                    tag: Some("a2".into()),
                    reason: Refusal::Limit
                },
                Event::Command(b"a3 NOOP\r\n".to_vec())
            ]
        );
        // Small literals (logins) never take from the budget.
        assert_eq!(run(&mut f, b"a4 LOGIN {5}\r\n").len(), 1);
        drop(hog);
        let mut input = b"a5 APPEND INBOX {30000+}\r\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 30000));
        input.extend_from_slice(b"\r\n");
        f.clear();
        f.push(&input);
        assert!(matches!(f.next(), Some(Event::Command(_))));
        // Held while the command is handled, given back on the next call.
        assert!(budget.available() < 64 * 1024 - 29 * 1024);
        assert_eq!(f.next(), None);
        assert_eq!(budget.available(), 64 * 1024);
    }

    #[test]
    fn rfc3501_4_3_synchronizing_literal_gets_continuation() {
        let input = b"a1 LOGIN {5}\r\nalice {6}\r\nsecret\r\na2 NOOP\r\n";
        let ev = all_splits(1000, 1000, input);
        assert_eq!(
            ev,
            vec![
                Event::Continue,
                Event::Continue,
                Event::Command(b"a1 LOGIN {5}\r\nalice {6}\r\nsecret\r\n".to_vec()),
                Event::Command(b"a2 NOOP\r\n".to_vec()),
            ]
        );
    }

    #[test]
    fn rfc7888_non_synchronizing_literal_has_no_continuation() {
        let input = b"a1 APPEND INBOX {11+}\r\nhello\r\nworld\r\n";
        let ev = all_splits(1000, 1000, input);
        assert_eq!(ev, vec![Event::Command(input.to_vec())]);
    }

    #[test]
    fn literal_containing_braces_and_newlines_is_opaque() {
        let input = b"a1 APPEND INBOX {8}\r\n{3}\r\n\r\n\r\n";
        let ev = all_splits(1000, 1000, input);
        assert_eq!(ev, vec![Event::Continue, Event::Command(input.to_vec())]);
    }

    #[test]
    fn zero_length_literal() {
        let ev = all_splits(1000, 1000, b"a1 LOGIN {0}\r\n \"\"\r\n");
        assert_eq!(
            ev,
            vec![
                Event::Continue,
                Event::Command(b"a1 LOGIN {0}\r\n \"\"\r\n".to_vec())
            ]
        );
    }

    #[test]
    fn overlong_line_is_refused_and_stream_resyncs() {
        let mut input = b"a1 NOOP ".to_vec();
        input.extend(std::iter::repeat_n(b'x', 200));
        input.extend_from_slice(b"\r\na2 NOOP\r\n");
        let ev = all_splits(100, 1000, &input);
        assert_eq!(
            ev,
            vec![
                Event::Refused {
                    tag: Some("a1".into()),
                    reason: Refusal::LineTooLong
                },
                Event::Command(b"a2 NOOP\r\n".to_vec())
            ]
        );
    }

    #[test]
    fn rfc7888_too_big_synchronizing_literal_refused_without_continuation() {
        let ev = all_splits(100, 10, b"a1 APPEND INBOX {11}\r\na2 NOOP\r\n");
        assert_eq!(
            ev,
            vec![
                Event::Refused {
                    tag: Some("a1".into()),
                    reason: Refusal::LiteralTooBig
                },
                Event::Command(b"a2 NOOP\r\n".to_vec())
            ]
        );
    }

    #[test]
    fn rfc7888_too_big_non_synchronizing_literal_is_skipped() {
        let ev = all_splits(
            100,
            10,
            b"a1 APPEND INBOX {11+}\r\nhello\r\nworld {3+}\r\nabc\r\na2 NOOP\r\n",
        );
        assert_eq!(
            ev,
            vec![
                Event::Refused {
                    tag: Some("a1".into()),
                    reason: Refusal::LiteralTooBig
                },
                Event::Command(b"a2 NOOP\r\n".to_vec())
            ]
        );
    }

    #[test]
    fn rfc7888_5_literal_minus_refuses_big_non_synchronizing_literals() {
        let mut input = b"a1 APPEND INBOX {4097+}\r\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 4097));
        input.extend_from_slice(b"\r\na2 LOGIN {3+}\r\nabc x\r\n");
        let mut f = Framer::new(100, 100_000);
        f.set_max_nonsync(Some(LITERAL_MINUS_MAX));
        let ev = run(&mut f, &input);
        assert_eq!(
            ev,
            vec![
                Event::Refused {
                    tag: Some("a1".into()),
                    reason: Refusal::NonSyncTooBig
                },
                Event::Command(b"a2 LOGIN {3+}\r\nabc x\r\n".to_vec())
            ]
        );
        // A synchronizing literal of the same size is fine.
        let mut f = Framer::new(100, 100_000);
        f.set_max_nonsync(Some(LITERAL_MINUS_MAX));
        assert_eq!(
            run(&mut f, b"a1 APPEND INBOX {5000}\r\n"),
            vec![Event::Continue]
        );
    }

    #[test]
    fn line_mode_frames_plain_lines() {
        let mut f = Framer::new(100, 100);
        f.set_line_mode(true);
        assert_eq!(
            run(&mut f, b"DONE {5}\r\nabc\n"),
            vec![
                Event::Line(b"DONE {5}".to_vec()),
                Event::Line(b"abc".to_vec())
            ]
        );
    }

    #[test]
    fn rfc3501_9_tag_syntax() {
        assert_eq!(parse_tag(b"a001 NOOP"), Some("a001".into()));
        assert_eq!(parse_tag(b"+ NOOP"), None);
        assert_eq!(parse_tag(b"a*1 NOOP"), None);
        assert_eq!(parse_tag(b"NOOP"), None);
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 12345u64;
        for _ in 0..300 {
            let mut f = Framer::new(64, 16);
            for _ in 0..50 {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let choices: &[&[u8]] = &[b"{", b"}", b"+", b"\r", b"\n", b"9", b"a ", b"x"];
                let pick = choices[(seed >> 33) as usize % choices.len()];
                f.push(pick);
                while f.next().is_some() {}
            }
        }
    }
}
