//! The one IMAP framer: cuts a byte stream into whole commands (server
//! side: the store's session, the mmp's client side) or whole responses
//! (client side: the mmp reading its store, the stress client), and tracks
//! where responses end without keeping them (the mmp's relay).
//!
//! A message is a line, and when that line ends with a literal
//! announcement (`{n}`, `{n+}`, `~{n}` literal8, `~{n+}`; RFC 9051 4.3,
//! RFC 3516, RFC 7888) the literal's n octets and the line after it, and so
//! on, up to a line that announces nothing. A pure state machine: bytes go
//! in with [`Framer::push`], events come out of [`Framer::next`]; "not
//! enough bytes yet" is `None`. The same bytes give the same events however
//! they are split.
//!
//! Rules:
//! - Lines: a line's content (without CRLF) may be `max_line` octets. IMAP
//!   speakers use at least [`MIN_LINE`] (RFC 7162 4 asks for 8,192; an
//!   RFC 2971 ID with 30 fields of 1,024 octets needs ~32 KiB; Dovecot's
//!   default is 64 KiB). A longer line is skipped to its LF and refused:
//!   the connection goes on.
//! - Literals: at most `max_literal` octets, the whole command at most
//!   `max_command`. Framing commands, a synchronizing literal is answered
//!   with [`Event::Continue`] (the driver sends `+`) or, when refused, never
//!   asked for (the client does not send it); a non-synchronizing one
//!   (LITERAL+) is on its way whatever we say, so a refused one is read and
//!   dropped with the rest of its command, and the stream resynchronises.
//!   Under LITERAL- (RFC 7888 5) non-synchronizing literals above
//!   [`LITERAL_MINUS_MAX`] are refused that way.
//! - Framing responses, every literal follows its line at once (there is
//!   no `+` to wait for) and a continuation request (`+ ...`) is one line.
//! - A literal whose length is not a number64 (more than 19 digits) cannot
//!   be skipped: if it is on its way, the stream is lost
//!   ([`Refusal::Unskippable`]): the one case where the connection closes.
//! - Byte budget (issue 9): a literal over [`LITERAL_MINUS_MAX`] takes its
//!   size from the process-wide budget while its command is assembled and
//!   handled; when spent, the command is refused with [`Refusal::Limit`]
//!   (`NO [LIMIT]`).
//! - Line mode (AUTHENTICATE data, IDLE's DONE, POP3 during the mmp's
//!   login): plain lines, no literals.
//!
//! `Debug` of events and of the framer never shows a password (LOGIN,
//! AUTHENTICATE, SASL lines: `crate::redact`).
//!
//! The mmp (`mmp::framer`) and the stress client (`stress::wire`) keep their
//! own small adapters over this framer; the relay uses [`Tracker`].

use std::sync::Arc;

use crate::budget::{Budget, Lease};

/// The largest non-synchronizing literal under LITERAL- (RFC 7888 5).
pub const LITERAL_MINUS_MAX: u64 = 4096;

/// The shortest line limit an IMAP speaker uses, whatever
/// `limits.max_line` says (see the module doc).
pub const MIN_LINE: usize = 64 * 1024;

/// How many trailing bytes of a line can hold a literal announcement:
/// `~{` 19 digits `+}` CRLF is 25.
pub(crate) const TAIL: usize = 32;

/// Which way the framed bytes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client commands, read by a server.
    Commands,
    /// Server responses, read by a client.
    Responses,
}

/// What the framer found. `Debug` redacts LOGIN / AUTHENTICATE commands
/// and line-mode lines (SASL responses): see `crate::redact`.
#[derive(Clone, PartialEq, Eq)]
pub enum Event {
    /// A complete command: every line and literal as received, ready for
    /// the command decoder.
    Command(Vec<u8>),
    /// A complete response (framing responses), literals included.
    Response(Vec<u8>),
    /// A synchronizing literal was announced and will be accepted: the
    /// driver sends a continuation request (`+ ...`).
    Continue,
    /// The message was refused while framing; its bytes are gone (or, for
    /// a synchronizing literal, will not be sent).
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
            Event::Response(c) => f.debug_tuple("Response").field(&Line(c)).finish(),
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
    /// A literal exceeded `max_literal`, or the whole command
    /// `max_command`.
    LiteralTooBig,
    /// A non-synchronizing literal exceeded the LITERAL- limit (RFC 7888 5).
    NonSyncTooBig,
    /// The process-wide budget of bytes in flight
    /// (`limits.max_bytes_in_flight`) cannot hold the literal now:
    /// `NO [LIMIT]` (RFC 9051 7.1), the client may retry later.
    Limit,
    /// A literal that is on its way announced a length that is not a
    /// number64: it cannot be skipped, every later byte is dropped. The
    /// driver closes the connection.
    Unskippable,
}

impl Refusal {
    /// The stream cannot go on after this refusal.
    pub fn is_fatal(self) -> bool {
        self == Refusal::Unskippable
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a line of the current message into `buf`.
    Line,
    /// Reading `remaining` literal bytes into `buf`.
    Literal { remaining: u64 },
    /// Dropping bytes to the end of the line, then (unless that line
    /// announces another literal on its way) ending the refused message.
    /// `report`: the refusal is still to be emitted.
    Discard { reason: Refusal, report: bool },
    /// Dropping the bytes of a refused literal that is on its way.
    DiscardLiteral {
        remaining: u64,
        reason: Refusal,
        report: bool,
    },
    /// After an unskippable literal: everything is dropped.
    Lost,
}

/// `Debug` shows sizes and state, never the bytes (they may hold a
/// password).
pub struct Framer {
    direction: Direction,
    /// Report accepted synchronizing literals as [`Event::Continue`].
    continuations: bool,
    max_line: usize,
    max_literal: u64,
    /// Cap on a whole message (lines plus literals).
    max_command: u64,
    /// Bytes received; those before `pos` have been looked at.
    input: Vec<u8>,
    pos: usize,
    /// The message being assembled.
    buf: Vec<u8>,
    /// Where the current line starts in `buf`.
    line_start: usize,
    state: State,
    /// The tag of a message being discarded (kept for the error reply).
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

impl std::fmt::Debug for Framer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Framer")
            .field("direction", &self.direction)
            .field("buffered", &self.buffered())
            .field("state", &self.state)
            .field("line_mode", &self.line_mode)
            .finish()
    }
}

enum Step {
    Emit(Event),
    Again,
}

impl Framer {
    /// Frames client commands (with continuations), lines of `max_line`
    /// octets, literals of `max_literal`, commands of `max_literal` plus
    /// four lines.
    pub fn new(max_line: usize, max_literal: u64) -> Framer {
        Framer::with(Direction::Commands, max_line, max_literal)
    }

    /// Frames server responses (a FETCH with literals is one response).
    pub fn responses(max_line: usize, max_literal: u64) -> Framer {
        let mut f = Framer::with(Direction::Responses, max_line, max_literal);
        f.continuations = false;
        f
    }

    fn with(direction: Direction, max_line: usize, max_literal: u64) -> Framer {
        let max_line = max_line.max(64);
        Framer {
            direction,
            continuations: true,
            max_line,
            max_literal,
            max_command: max_literal.saturating_add(max_line as u64 * 4),
            input: Vec::new(),
            pos: 0,
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

    /// Changes the literal cap (smaller before login); the command cap
    /// follows (`max_literal` plus four lines).
    pub fn set_max_literal(&mut self, max_literal: u64) {
        self.max_literal = max_literal;
        self.max_command = max_literal.saturating_add(self.max_line as u64 * 4);
    }

    /// Caps a whole message (lines and literals) at `max` octets.
    pub fn set_max_command(&mut self, max: u64) {
        self.max_command = max;
    }

    /// Whether accepted synchronizing literals give [`Event::Continue`].
    pub fn set_continuations(&mut self, on: bool) {
        self.continuations = on;
    }

    pub fn push(&mut self, data: &[u8]) {
        if self.state == State::Lost {
            return;
        }
        if self.pos > 0 && self.pos >= self.input.len() / 2 {
            self.input.drain(..self.pos);
            self.pos = 0;
        }
        self.input.extend_from_slice(data);
    }

    /// Frees the buffers when nothing is buffered (a connection that waits
    /// holds no memory for input it no longer has). The next `push`
    /// allocates again.
    pub fn release(&mut self) {
        if self.pos >= self.input.len() {
            self.input = Vec::new();
            self.pos = 0;
        }
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            self.buf = Vec::new();
        }
        if self.discard_tail.is_empty() && self.discard_tail.capacity() > 0 {
            self.discard_tail = Vec::new();
        }
    }

    /// Switches between message framing and plain line framing.
    pub fn set_line_mode(&mut self, on: bool) {
        self.line_mode = on;
    }

    /// Bytes received and not yet emitted (a partial message included).
    pub fn buffered(&self) -> usize {
        self.buf.len() + self.input.len() - self.pos
    }

    /// Drops everything buffered (after STARTTLS: RFC 9051 6.2.1 forbids
    /// acting on plaintext sent before the handshake).
    pub fn clear(&mut self) {
        self.input.clear();
        self.pos = 0;
        self.reset_message();
        self.state = State::Line;
        self.lease = None;
        self.held = None;
    }

    /// Everything received and not yet emitted, the partial message
    /// included (input pipelined behind a login belongs to the store).
    pub fn take_rest(&mut self) -> Vec<u8> {
        let mut rest = match self.state {
            State::Line | State::Literal { .. } => std::mem::take(&mut self.buf),
            _ => Vec::new(),
        };
        rest.extend_from_slice(self.input.get(self.pos..).unwrap_or_default());
        self.clear();
        rest
    }

    fn reset_message(&mut self) {
        self.buf.clear();
        self.line_start = 0;
        self.discard_tag = None;
        self.discard_tail.clear();
    }

    /// The next event, or `None` when more bytes are needed.
    pub fn next(&mut self) -> Option<Event> {
        // The previous command has been handled: its literals' budget
        // goes back.
        self.held = None;
        loop {
            if self.pos >= self.input.len() {
                self.input.clear();
                self.pos = 0;
                return None;
            }
            let step = match self.state {
                State::Line => self.step_line(),
                State::Literal { remaining } => {
                    let n = self.take_input(remaining);
                    self.buf
                        .extend_from_slice(&self.input[self.pos - n..self.pos]);
                    let left = remaining - n as u64;
                    self.state = State::Literal { remaining: left };
                    if left == 0 {
                        self.state = State::Line;
                        self.line_start = self.buf.len();
                    }
                    Step::Again
                }
                State::DiscardLiteral {
                    remaining,
                    reason,
                    report,
                } => {
                    let n = self.take_input(remaining);
                    let left = remaining - n as u64;
                    self.state = State::DiscardLiteral {
                        remaining: left,
                        reason,
                        report,
                    };
                    if left == 0 {
                        self.state = State::Discard { reason, report };
                        self.discard_tail.clear();
                    }
                    Step::Again
                }
                State::Discard { reason, report } => self.step_discard(reason, report),
                State::Lost => {
                    self.input.clear();
                    self.pos = 0;
                    return None;
                }
            };
            if let Step::Emit(ev) = step {
                return Some(ev);
            }
        }
    }

    /// Consumes up to `max` input bytes; returns how many.
    fn take_input(&mut self, max: u64) -> usize {
        let n = max.min((self.input.len() - self.pos) as u64) as usize;
        self.pos += n;
        n
    }

    fn step_line(&mut self) -> Step {
        let avail = self.input.get(self.pos..).unwrap_or_default();
        let line_len = self.buf.len() - self.line_start;
        let Some(p) = avail.iter().position(|&b| b == b'\n') else {
            self.buf.extend_from_slice(avail);
            self.pos = self.input.len();
            // Content plus a CR waiting for its LF may reach max_line + 1.
            if line_len + avail.len() > self.max_line + 1 {
                return self.start_discard(Refusal::LineTooLong);
            }
            return Step::Again;
        };
        self.buf.extend_from_slice(&avail[..=p]);
        self.pos += p + 1;
        let line = self.buf.get(self.line_start..).unwrap_or_default();
        let eol = if line.ends_with(b"\r\n") { 2 } else { 1 };
        if line.len() - eol > self.max_line {
            self.discard_tag = self.tag();
            let tail = tail_of(&self.buf).to_vec();
            self.buf.clear();
            self.line_start = 0;
            self.lease = None;
            return self.line_discarded(&tail, Refusal::LineTooLong, true);
        }
        if self.line_mode {
            let mut line = std::mem::take(&mut self.buf);
            line.truncate(line.len() - eol);
            self.line_start = 0;
            return Step::Emit(Event::Line(line));
        }
        let continuation_request =
            self.direction == Direction::Responses && self.buf.first() == Some(&b'+');
        let announced = if continuation_request {
            None
        } else {
            literal_announcement(tail_of(&self.buf))
        };
        match announced {
            Some(a) => self.announced(a),
            None if self.buf.len() as u64 > self.max_command => {
                let tag = self.tag();
                self.reset_message();
                self.lease = None;
                Step::Emit(Event::Refused {
                    tag,
                    reason: Refusal::LiteralTooBig,
                })
            }
            None => {
                self.line_start = 0;
                self.held = self.lease.take();
                let msg = std::mem::take(&mut self.buf);
                Step::Emit(match self.direction {
                    Direction::Commands => Event::Command(msg),
                    Direction::Responses => Event::Response(msg),
                })
            }
        }
    }

    /// The line just read announces a literal.
    fn announced(&mut self, a: Announce) -> Step {
        // In responses every literal follows at once.
        let sync = a.sync && self.direction == Direction::Commands;
        let Some(len) = a.len else {
            let tag = self.tag();
            self.reset_message();
            self.lease = None;
            if sync {
                // Never asked for, never sent.
                return Step::Emit(Event::Refused {
                    tag,
                    reason: Refusal::LiteralTooBig,
                });
            }
            self.state = State::Lost;
            return Step::Emit(Event::Refused {
                tag,
                reason: Refusal::Unskippable,
            });
        };
        let refusal = if !sync
            && self.direction == Direction::Commands
            && self.max_nonsync.is_some_and(|m| len > m)
        {
            Some(Refusal::NonSyncTooBig)
        } else if len > self.max_literal
            || (self.buf.len() as u64).saturating_add(len) > self.max_command
        {
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
                Some(None) => {
                    crate::metrics::limit_hit("budget");
                    Some(Refusal::Limit)
                }
            }
        } else {
            None
        };
        if let Some(reason) = refusal {
            let tag = self.tag();
            self.reset_message();
            self.lease = None;
            if sync {
                // The client waits for "+" that never comes: refuse now,
                // it will not send the bytes.
                return Step::Emit(Event::Refused { tag, reason });
            }
            self.discard_tag = tag;
            return self.skip_literal(len, reason, true);
        }
        if len == 0 {
            self.line_start = self.buf.len();
        } else {
            self.state = State::Literal { remaining: len };
        }
        if sync && self.continuations {
            Step::Emit(Event::Continue)
        } else {
            Step::Again
        }
    }

    /// Starts dropping a refused literal on its way. Framing responses the
    /// refusal is reported at once (the reader stops), framing commands
    /// once the command's bytes are gone (the answer follows them).
    fn skip_literal(&mut self, len: u64, reason: Refusal, report: bool) -> Step {
        let now = report && self.direction == Direction::Responses;
        self.state = State::DiscardLiteral {
            remaining: len,
            reason,
            report: report && !now,
        };
        if now {
            return Step::Emit(Event::Refused {
                tag: self.discard_tag.clone(),
                reason,
            });
        }
        Step::Again
    }

    /// Starts dropping an over-long line whose LF has not come yet.
    fn start_discard(&mut self, reason: Refusal) -> Step {
        self.lease = None;
        self.discard_tag = self.tag();
        self.discard_tail = tail_of(&self.buf).to_vec();
        self.buf.clear();
        self.line_start = 0;
        let now = self.direction == Direction::Responses;
        self.state = State::Discard {
            reason,
            report: !now,
        };
        if now {
            return Step::Emit(Event::Refused {
                tag: self.discard_tag.clone(),
                reason,
            });
        }
        Step::Again
    }

    fn step_discard(&mut self, reason: Refusal, report: bool) -> Step {
        let avail = self.input.get(self.pos..).unwrap_or_default();
        let lf = avail.iter().position(|&b| b == b'\n');
        let end = lf.map_or(avail.len(), |p| p + 1);
        self.discard_tail.extend_from_slice(&avail[..end]);
        self.pos += end;
        let cut = self.discard_tail.len().saturating_sub(TAIL);
        self.discard_tail.drain(..cut);
        if lf.is_none() {
            return Step::Again;
        }
        let tail = std::mem::take(&mut self.discard_tail);
        self.line_discarded(&tail, reason, report)
    }

    /// A dropped line ended: a literal it announces that is on its way is
    /// dropped too (a synchronizing one will not come: we never send `+`).
    fn line_discarded(&mut self, tail: &[u8], reason: Refusal, report: bool) -> Step {
        self.line_start = 0;
        let announced = if self.line_mode {
            None
        } else {
            literal_announcement(tail)
        };
        let on_its_way = announced.filter(|a| !a.sync || self.direction == Direction::Responses);
        match on_its_way {
            Some(Announce { len: Some(len), .. }) => self.skip_literal(len, reason, report),
            Some(Announce { len: None, .. }) => {
                self.state = State::Lost;
                Step::Emit(Event::Refused {
                    tag: self.discard_tag.take(),
                    reason: Refusal::Unskippable,
                })
            }
            None => {
                self.state = State::Line;
                let tag = self.discard_tag.take();
                if report {
                    Step::Emit(Event::Refused { tag, reason })
                } else {
                    Step::Again
                }
            }
        }
    }

    /// The tag of the message in `buf`, if it starts with a valid one.
    fn tag(&self) -> Option<String> {
        if self.line_mode {
            return None;
        }
        parse_tag(&self.buf)
    }
}

/// Follows a stream of responses without keeping it, to tell when it is
/// between two of them (the mmp's relay says BYE only there). Same rules as
/// [`Framer`] framing responses; memory: a few bytes.
#[derive(Debug, Clone)]
pub struct Tracker {
    /// IMAP (literals) or plain lines (POP3).
    literals: bool,
    /// Literal bytes still to come.
    literal_left: u64,
    /// Last bytes of the current line.
    tail: Vec<u8>,
    /// Inside a response (some of it was seen, its end was not).
    in_message: bool,
    /// The current response is a continuation request (one line).
    continuation: bool,
}

impl Tracker {
    /// Tracks IMAP responses (`literals`) or plain lines.
    pub fn new(literals: bool) -> Tracker {
        Tracker {
            literals,
            literal_left: 0,
            tail: Vec::with_capacity(TAIL),
            in_message: false,
            continuation: false,
        }
    }

    pub fn between_messages(&self) -> bool {
        self.literal_left == 0 && !self.in_message
    }

    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.literal_left > 0 {
                let n = self.literal_left.min(data.len() as u64) as usize;
                self.literal_left -= n as u64;
                data = data.get(n..).unwrap_or_default();
                continue;
            }
            if !self.in_message {
                self.in_message = true;
                self.continuation = data.first() == Some(&b'+');
            }
            let lf = data.iter().position(|&b| b == b'\n');
            let end = lf.map_or(data.len(), |p| p + 1);
            self.tail.extend_from_slice(&data[..end]);
            let cut = self.tail.len().saturating_sub(TAIL);
            self.tail.drain(..cut);
            data = data.get(end..).unwrap_or_default();
            if lf.is_none() {
                return;
            }
            let announced = if self.literals && !self.continuation {
                literal_announcement(&self.tail)
            } else {
                None
            };
            self.tail.clear();
            match announced {
                // The response goes on after the literal.
                Some(a) => self.literal_left = a.len.unwrap_or(u64::MAX),
                None => self.in_message = false,
            }
        }
    }
}

/// A command tag at the start of `line` (RFC 9051 9: 1*<any ASTRING-CHAR
/// except "+">).
pub fn parse_tag(line: &[u8]) -> Option<String> {
    let head = line.get(..line.len().min(65))?;
    let end = head.iter().position(|&b| b == b' ')?;
    let tag = head.get(..end)?;
    if tag.is_empty() || !tag.iter().all(|&b| is_tag_char(b)) {
        return None;
    }
    Some(String::from_utf8_lossy(tag).into_owned())
}

/// RFC 9051 tag: ASTRING-CHAR except "+".
pub fn is_tag_char(b: u8) -> bool {
    b.is_ascii_graphic() && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b'+')
}

/// The last `TAIL` bytes of `line`.
fn tail_of(line: &[u8]) -> &[u8] {
    line.get(line.len().saturating_sub(TAIL)..)
        .unwrap_or_default()
}

/// A literal announced at the end of a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Announce {
    /// None: not a number64 (more than 19 digits, or above 2^63 - 1).
    pub len: Option<u64>,
    /// `{n}` rather than `{n+}`.
    pub sync: bool,
}

/// `{n}`, `{n+}`, `~{n}` or `~{n+}` at the end of a line (before CRLF or
/// LF). Only the last `TAIL` bytes count, so the answer is the same for a
/// line kept whole and one being dropped.
pub(crate) fn literal_announcement(line: &[u8]) -> Option<Announce> {
    let l = tail_of(line);
    let l = l.strip_suffix(b"\n")?;
    let l = l.strip_suffix(b"\r").unwrap_or(l);
    let l = l.strip_suffix(b"}")?;
    let (l, sync) = match l.strip_suffix(b"+") {
        Some(x) => (x, false),
        None => (l, true),
    };
    let open = l.iter().rposition(|&b| b == b'{')?;
    let digits = l.get(open + 1..)?;
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let len = std::str::from_utf8(digits)
        .ok()
        .and_then(|d| d.parse::<u64>().ok())
        .filter(|n| *n <= i64::MAX as u64);
    Some(Announce { len, sync })
}

#[cfg(test)]
mod release_tests {
    use super::*;

    /// A waiting connection keeps no input buffer; framing goes on after.
    #[test]
    fn release_frees_consumed_input_and_keeps_a_partial_command() {
        let mut f = Framer::new(MIN_LINE, 1 << 20);
        f.push(b"a NOOP\r\nb NO");
        assert!(matches!(f.next(), Some(Event::Command(_))));
        assert!(f.next().is_none());
        f.release();
        assert_eq!(f.buffered(), 4, "the partial command is kept");
        f.push(b"OP\r\n");
        assert!(matches!(f.next(), Some(Event::Command(c)) if c == b"b NOOP\r\n"));
        assert!(f.next().is_none());
        f.release();
        assert_eq!(f.buffered(), 0);
        assert_eq!(f.input.capacity() + f.buf.capacity(), 0);
    }
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

    /// Feeds `input` whole, split at every byte boundary and byte by byte
    /// to framers made by `make`, checks the events are always the same
    /// and returns them.
    fn splits_with(make: &dyn Fn() -> Framer, input: &[u8]) -> Vec<Event> {
        let whole = run(&mut make(), input);
        for i in 0..=input.len() {
            let mut f = make();
            let mut ev = run(&mut f, &input[..i]);
            ev.extend(run(&mut f, &input[i..]));
            assert_eq!(ev, whole, "split at {i}");
        }
        let mut f = make();
        let mut ev = Vec::new();
        for b in input {
            ev.extend(run(&mut f, std::slice::from_ref(b)));
        }
        assert_eq!(ev, whole, "byte by byte");
        whole
    }

    fn all_splits(max_line: usize, max_literal: u64, input: &[u8]) -> Vec<Event> {
        splits_with(&|| Framer::new(max_line, max_literal), input)
    }

    fn response_splits(max_line: usize, max_literal: u64, input: &[u8]) -> Vec<Event> {
        splits_with(&|| Framer::responses(max_line, max_literal), input)
    }

    fn refused(tag: Option<&str>, reason: Refusal) -> Event {
        Event::Refused {
            tag: tag.map(str::to_string),
            reason,
        }
    }

    fn cmd(c: &[u8]) -> Event {
        Event::Command(c.to_vec())
    }

    #[test]
    fn rfc3501_2_2_commands_are_lines() {
        let ev = all_splits(1000, 1000, b"a1 NOOP\r\na2 CAPABILITY\n");
        assert_eq!(ev, vec![cmd(b"a1 NOOP\r\n"), cmd(b"a2 CAPABILITY\n")]);
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
            vec![refused(Some("a1"), Refusal::Limit)]
        );
        // Non-synchronizing: its bytes are read and dropped, then refused.
        let mut input = b"a2 APPEND INBOX {30000+}\r\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 30000));
        input.extend_from_slice(b"\r\na3 NOOP\r\n");
        assert_eq!(
            run(&mut f, &input),
            vec![refused(Some("a2"), Refusal::Limit), cmd(b"a3 NOOP\r\n")]
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
                cmd(b"a1 LOGIN {5}\r\nalice {6}\r\nsecret\r\n"),
                cmd(b"a2 NOOP\r\n"),
            ]
        );
        // Without continuations (the mmp's backend-style framing): the
        // same commands, no Continue.
        let ev = splits_with(
            &|| {
                let mut f = Framer::new(1000, 1000);
                f.set_continuations(false);
                f
            },
            input,
        );
        assert_eq!(
            ev,
            vec![
                cmd(b"a1 LOGIN {5}\r\nalice {6}\r\nsecret\r\n"),
                cmd(b"a2 NOOP\r\n"),
            ]
        );
    }

    #[test]
    fn rfc7888_non_synchronizing_literal_has_no_continuation() {
        let input = b"a1 APPEND INBOX {11+}\r\nhello\r\nworld\r\n";
        let ev = all_splits(1000, 1000, input);
        assert_eq!(ev, vec![cmd(input)]);
    }

    #[test]
    fn rfc3516_literal8_in_commands() {
        let input = b"a1 APPEND INBOX ~{5}\r\na\0b\r\n\r\na2 APPEND INBOX ~{3+}\r\n\0\0\0\r\n";
        let ev = all_splits(1000, 1000, input);
        assert_eq!(
            ev,
            vec![
                Event::Continue,
                cmd(b"a1 APPEND INBOX ~{5}\r\na\0b\r\n\r\n"),
                cmd(b"a2 APPEND INBOX ~{3+}\r\n\0\0\0\r\n"),
            ]
        );
    }

    #[test]
    fn literal_containing_braces_and_newlines_is_opaque() {
        let input = b"a1 APPEND INBOX {8}\r\n{3}\r\n\r\n\r\n";
        let ev = all_splits(1000, 1000, input);
        assert_eq!(ev, vec![Event::Continue, cmd(input)]);
    }

    #[test]
    fn zero_length_literal() {
        let ev = all_splits(1000, 1000, b"a1 LOGIN {0}\r\n \"\"\r\n");
        assert_eq!(ev, vec![Event::Continue, cmd(b"a1 LOGIN {0}\r\n \"\"\r\n")]);
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
                refused(Some("a1"), Refusal::LineTooLong),
                cmd(b"a2 NOOP\r\n")
            ]
        );
    }

    /// RFC 7162 4: lines of at least 8,192 octets; the limit is on the
    /// content, CRLF not counted; one octet more is refused, the next
    /// command works.
    #[test]
    fn rfc7162_4_line_of_max_line_octets_is_accepted_one_more_is_refused() {
        let max = 8192;
        let line = |n: usize| {
            let mut l = b"a1 ID (\"x\" \"".to_vec();
            l.resize(n - 2, b'v');
            l.extend_from_slice(b"\")");
            assert_eq!(l.len(), n);
            l
        };
        for (n, ok) in [(max, true), (max + 1, false)] {
            let mut input = line(n);
            input.extend_from_slice(b"\r\na2 NOOP\r\n");
            let mut f = Framer::new(max, 1000);
            let ev = run(&mut f, &input);
            let first = if ok {
                Event::Command([line(n), b"\r\n".to_vec()].concat())
            } else {
                refused(Some("a1"), Refusal::LineTooLong)
            };
            assert_eq!(ev, vec![first, cmd(b"a2 NOOP\r\n")], "{n} octets");
        }
        // Every split of a short version of the same boundary.
        let mut input = b"a1 X ".to_vec();
        input.resize(100, b'y');
        input.extend_from_slice(b"\r\na2 X ");
        input.resize(203, b'z');
        input.extend_from_slice(b"\r\na3 NOOP\r\n");
        let ev = all_splits(100, 1000, &input);
        assert_eq!(ev.len(), 3);
        assert!(matches!(ev[0], Event::Command(_)));
        assert_eq!(ev[1], refused(Some("a2"), Refusal::LineTooLong));
    }

    /// RFC 2971: 30 fields with 1,024-octet values in one line fit the
    /// IMAP minimum line length.
    #[test]
    fn rfc2971_id_with_30_fields_of_1024_octets_fits() {
        let mut id = b"a1 ID (".to_vec();
        for i in 0..30 {
            id.extend_from_slice(format!("\"field-{i:02}\" \"").as_bytes());
            id.extend(std::iter::repeat_n(b'v', 1024));
            id.extend_from_slice(b"\" ");
        }
        id.pop();
        id.extend_from_slice(b")\r\n");
        assert!(id.len() > 30_000);
        let mut f = Framer::new(MIN_LINE, 1000);
        assert_eq!(run(&mut f, &id), vec![Event::Command(id.clone())]);
    }

    #[test]
    fn rfc7888_too_big_synchronizing_literal_refused_without_continuation() {
        let ev = all_splits(100, 10, b"a1 APPEND INBOX {11}\r\na2 NOOP\r\n");
        assert_eq!(
            ev,
            vec![
                refused(Some("a1"), Refusal::LiteralTooBig),
                cmd(b"a2 NOOP\r\n")
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
                refused(Some("a1"), Refusal::LiteralTooBig),
                cmd(b"a2 NOOP\r\n")
            ]
        );
    }

    /// An over-long line announcing a LITERAL+ literal: the literal is on
    /// its way and is skipped, never read as commands.
    #[test]
    fn rfc7888_overlong_line_announcing_literal_plus_skips_the_literal() {
        let input = [
            b"t1 LOGIN ".as_slice(),
            &[b'x'; 100],
            b" {9+}\r\nt2 NOOP\r\n\r\nt3 NOOP\r\n",
        ]
        .concat();
        let ev = all_splits(64, 1000, &input);
        assert_eq!(
            ev,
            vec![
                refused(Some("t1"), Refusal::LineTooLong),
                cmd(b"t3 NOOP\r\n")
            ]
        );
        // A synchronizing one is never sent.
        let input = [
            b"t1 LOGIN ".as_slice(),
            &[b'x'; 100],
            b" {9}\r\nt2 NOOP\r\n",
        ]
        .concat();
        let ev = all_splits(64, 1000, &input);
        assert_eq!(
            ev,
            vec![
                refused(Some("t1"), Refusal::LineTooLong),
                cmd(b"t2 NOOP\r\n")
            ]
        );
    }

    #[test]
    fn rfc7888_5_literal_minus_refuses_big_non_synchronizing_literals() {
        let mut input = b"a1 APPEND INBOX {4097+}\r\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 4097));
        input.extend_from_slice(b"\r\na2 LOGIN {3+}\r\nabc x\r\n");
        let minus = || {
            let mut f = Framer::new(100, 100_000);
            f.set_max_nonsync(Some(LITERAL_MINUS_MAX));
            f
        };
        let ev = run(&mut minus(), &input);
        assert_eq!(
            ev,
            vec![
                refused(Some("a1"), Refusal::NonSyncTooBig),
                cmd(b"a2 LOGIN {3+}\r\nabc x\r\n")
            ]
        );
        // A synchronizing literal of the same size is fine.
        assert_eq!(
            run(&mut minus(), b"a1 APPEND INBOX {5000}\r\n"),
            vec![Event::Continue]
        );
    }

    /// A literal length that is not a number64 (RFC 9051 9): a
    /// synchronizing one is simply refused; one on its way cannot be
    /// skipped, the stream is lost.
    #[test]
    fn rfc9051_9_literal_length_beyond_number64() {
        let ev = all_splits(
            100,
            1000,
            b"a1 APPEND INBOX {99999999999999999999}\r\na2 NOOP\r\n",
        );
        assert_eq!(
            ev,
            vec![
                refused(Some("a1"), Refusal::LiteralTooBig),
                cmd(b"a2 NOOP\r\n")
            ]
        );
        let ev = all_splits(
            100,
            1000,
            b"a1 APPEND INBOX {9223372036854775808+}\r\na2 NOOP\r\n",
        );
        assert_eq!(ev, vec![refused(Some("a1"), Refusal::Unskippable)]);
        assert!(Refusal::Unskippable.is_fatal());
        assert!(!Refusal::LineTooLong.is_fatal());
        // The largest number64 is skippable (in principle).
        let mut f = Framer::new(100, 1000);
        assert_eq!(
            run(&mut f, b"a1 APPEND INBOX {9223372036854775807+}\r\nxyz"),
            vec![]
        );
    }

    #[test]
    fn whole_command_cap_counts_every_line_and_literal() {
        // max_command = 100 + 4 * 64: many small literals pass each check
        // but not the total.
        let mut input = b"a1 X".to_vec();
        for _ in 0..100 {
            input.extend_from_slice(b" {3+}\r\nabc");
        }
        input.extend_from_slice(b"\r\na2 NOOP\r\n");
        let ev = all_splits(64, 100, &input);
        assert_eq!(
            ev,
            vec![
                refused(Some("a1"), Refusal::LiteralTooBig),
                cmd(b"a2 NOOP\r\n")
            ]
        );
        // And a final line past the cap.
        let mut f = Framer::new(64, 10);
        f.set_max_command(70);
        let mut input = b"a1 X {3+}\r\nabc".to_vec();
        input.extend(std::iter::repeat_n(b'y', 60));
        input.extend_from_slice(b"\r\n");
        assert_eq!(
            run(&mut f, &input),
            vec![refused(Some("a1"), Refusal::LiteralTooBig)]
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
        let mut long = vec![b'A'; 150];
        long.extend_from_slice(b"\r\nok\r\n");
        assert_eq!(
            run(&mut f, &long),
            vec![
                refused(None, Refusal::LineTooLong),
                Event::Line(b"ok".to_vec())
            ]
        );
    }

    #[test]
    fn take_rest_returns_the_partial_command_and_what_follows() {
        let mut f = Framer::new(100, 100);
        assert_eq!(
            run(&mut f, b"a1 LOGIN u p\r\na2 SELECT {5+}\r\nIN"),
            vec![cmd(b"a1 LOGIN u p\r\n")]
        );
        assert_eq!(f.buffered(), 18);
        assert_eq!(f.take_rest(), b"a2 SELECT {5+}\r\nIN");
        assert_eq!(f.buffered(), 0);
        assert_eq!(f.take_rest(), b"");
    }

    #[test]
    fn rfc3501_9_tag_syntax() {
        assert_eq!(parse_tag(b"a001 NOOP"), Some("a001".into()));
        assert_eq!(parse_tag(b"+ NOOP"), None);
        assert_eq!(parse_tag(b"a*1 NOOP"), None);
        assert_eq!(parse_tag(b"NOOP"), None);
        assert_eq!(parse_tag(b"* OK"), None);
        let long = [vec![b'a'; 65], b" NOOP".to_vec()].concat();
        assert_eq!(parse_tag(&long), None);
    }

    #[test]
    fn not_a_literal_announcement() {
        let a = |l: &[u8]| literal_announcement(l).map(|a| (a.len, a.sync));
        assert_eq!(a(b"a {}\r\n"), None);
        assert_eq!(a(b"a {1x}\r\n"), None);
        assert_eq!(a(b"a {12} \r\n"), None);
        assert_eq!(a(b"a {12}"), None);
        assert_eq!(a(b"a {99999999999}\r\n"), Some((Some(99999999999), true)));
        assert_eq!(a(b"a {99999999999999999999}\r\n"), Some((None, true)));
        assert_eq!(a(b"a {7}\n"), Some((Some(7), true)));
        assert_eq!(a(b"a ~{7}\n"), Some((Some(7), true)));
        assert_eq!(a(b"a {0+}\r\n"), Some((Some(0), false)));
        assert_eq!(a(b"a ~{0+}\r\n"), Some((Some(0), false)));
    }

    // Responses: the client side (mmp backend, stress client, relay).

    /// RFC 9051 4.3 / 7.5.2: a FETCH response with literals (one of them
    /// literal8, one empty) is one response, framed the same at every
    /// split.
    #[test]
    fn rfc9051_4_3_response_literals_framed_at_every_split() {
        let fetch: &[u8] = b"* 1 FETCH (UID 7 BODY[] {12}\r\nab\r\n{3}\r\nxyz BINARY[1] ~{2}\r\n\0\n BODY[2] {0}\r\n UID 9)\r\n";
        let input = [fetch, b"* 2 EXISTS\r\n+ go on {5}\r\nA1 OK done\r\n"].concat();
        let ev = response_splits(1000, 1000, &input);
        assert_eq!(
            ev,
            vec![
                Event::Response(fetch.to_vec()),
                Event::Response(b"* 2 EXISTS\r\n".to_vec()),
                Event::Response(b"+ go on {5}\r\n".to_vec()),
                Event::Response(b"A1 OK done\r\n".to_vec()),
            ]
        );
    }

    /// Responses have no "+" to wait for: a too-big literal is refused at
    /// once and skipped; the reader may go on after it.
    #[test]
    fn response_too_big_literal_is_refused_at_once_and_skipped() {
        let input = b"* 1 FETCH (BODY[] {20}\r\n01234567890123456789)\r\n* 2 EXISTS\r\n";
        let ev = response_splits(100, 10, input);
        assert_eq!(
            ev,
            vec![
                refused(None, Refusal::LiteralTooBig),
                Event::Response(b"* 2 EXISTS\r\n".to_vec())
            ]
        );
        let mut f = Framer::responses(100, 10);
        assert_eq!(
            run(&mut f, b"* 1 FETCH (BODY[] {20}\r\n"),
            vec![refused(None, Refusal::LiteralTooBig)]
        );
        let mut long = b"A1 OK ".to_vec();
        long.extend(std::iter::repeat_n(b'x', 300));
        long.extend_from_slice(b"\r\n* 3 EXISTS\r\n");
        let ev = response_splits(100, 10, &long);
        assert_eq!(
            ev,
            vec![
                refused(Some("A1"), Refusal::LineTooLong),
                Event::Response(b"* 3 EXISTS\r\n".to_vec())
            ]
        );
        let ev = response_splits(100, 10, b"* 1 FETCH (BODY[] {99999999999999999999}\r\n");
        assert_eq!(ev, vec![refused(None, Refusal::Unskippable)]);
    }

    #[test]
    fn tracker_knows_response_boundaries_at_every_split() {
        let parts: [&[u8]; 5] = [
            b"* 1 FETCH (BODY[] {12}\r\nab}\r\n{3}\r\nxyz)\r\n",
            b"a OK done {x}\r\n",
            b"* 2 FETCH (X {0}\r\n)\r\n",
            b"+ send {3}\r\n",
            b"* 3 FETCH (BINARY[] ~{2}\r\n\r\n)\r\n",
        ];
        let input = parts.concat();
        let ends: Vec<usize> = parts
            .iter()
            .scan(0, |acc, p| {
                *acc += p.len();
                Some(*acc)
            })
            .collect();
        // Between responses exactly at the end of each, and at the start.
        let mut t = Tracker::new(true);
        assert!(t.between_messages());
        for (i, b) in input.iter().enumerate() {
            t.feed(std::slice::from_ref(b));
            assert_eq!(t.between_messages(), ends.contains(&(i + 1)), "after {i}");
        }
        for i in 0..=input.len() {
            let mut t = Tracker::new(true);
            t.feed(&input[..i]);
            assert_eq!(
                t.between_messages(),
                i == 0 || ends.contains(&i),
                "prefix {i}"
            );
            t.feed(&input[i..]);
            assert!(t.between_messages(), "split at {i}");
        }
        // The framer agrees on the same bytes.
        let ev = response_splits(1000, 1000, &input);
        let framed: Vec<Event> = parts.iter().map(|p| Event::Response(p.to_vec())).collect();
        assert_eq!(ev, framed);
        // POP3: lines only.
        let mut t = Tracker::new(false);
        t.feed(b"+OK {5}\r\n");
        assert!(t.between_messages());
        t.feed(b"abc");
        assert!(!t.between_messages());
    }

    /// Random programs of both directions: no panic, split-independent,
    /// messages within the caps.
    #[test]
    fn garbage_never_panics_and_never_depends_on_the_split() {
        let mut seed = 12345u64;
        let choices: &[&[u8]] = &[
            b"{",
            b"}",
            b"+",
            b"~",
            b"\r",
            b"\n",
            b"9",
            b"0",
            b"a ",
            b"x",
            b"* ",
            b"{3}\r\n",
            b"{2+}\r\n",
        ];
        for case in 0..300 {
            let mut input = Vec::new();
            for _ in 0..40 {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                input.extend_from_slice(choices[(seed >> 33) as usize % choices.len()]);
            }
            let make: &dyn Fn() -> Framer = if case % 2 == 0 {
                &|| Framer::new(64, 16)
            } else {
                &|| Framer::responses(64, 16)
            };
            for ev in splits_with(make, &input) {
                if let Event::Command(m) | Event::Response(m) = ev {
                    assert!(m.len() as u64 <= 16 + 4 * 64);
                }
            }
        }
    }
}
