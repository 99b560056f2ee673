//! The IMAP side of the mmp before login: a synchronous state machine over
//! framed client input (no I/O). It answers the not-authenticated state
//! itself (RFC 9051 sections 6.1-6.2: CAPABILITY, NOOP, LOGOUT, STARTTLS,
//! LOGIN, AUTHENTICATE PLAIN with SASL-IR (RFC 4959), ID (RFC 2971)) and
//! asks the driver to log in at the user's store; once that succeeded the
//! session is done and the driver relays bytes.
//!
//! Invariants:
//! - One command at a time: after `Action::Login` or `Action::StartTls`
//!   no input is framed until the driver reports back.
//! - Passwords leave this module only inside `Action::Login`, whose Debug
//!   output hides them.

use std::time::Duration;

use imap_codec::decode::Decoder;
use imap_codec::CommandCodec;
use imap_types::auth::AuthMechanism;
use imap_types::command::CommandBody;

use super::framer::{Frame, Framer};
use super::{auth_delay, sasl_plain, Action, LoginOutcome, SaslError};
use crate::imap::framer::{literal_announcement, TAIL};

/// Most ID parameters kept from a client, and their longest value.
const MAX_ID_PARAMS: usize = 30;
const MAX_ID_VALUE: usize = 1024;

#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// STARTTLS can be offered (a STARTTLS listener, TLS not active yet).
    pub starttls_available: bool,
    pub tls_active: bool,
    /// LOGIN / AUTHENTICATE PLAIN allowed without TLS (loopback client or
    /// `imap.allow_plaintext_auth`).
    pub plaintext_without_tls: bool,
    pub max_bad_commands: u32,
    pub max_auth_failures: u32,
    /// First delay after a failed login (doubles each time, capped).
    pub auth_delay: Duration,
    /// Largest command accepted before login, literals included.
    pub max_command: usize,
}

#[derive(Debug)]
enum State {
    NotAuthenticated,
    /// AUTHENTICATE PLAIN sent "+ " and waits for the response line.
    SaslPlain {
        tag: String,
    },
    /// Waiting for the driver (`login_done` / `tls_started`).
    Pending {
        tag: String,
    },
    Proxying,
    Closed,
}

pub struct Session {
    config: SessionConfig,
    state: State,
    framer: Framer,
    bad_commands: u32,
    auth_failures: u32,
    client_id: Vec<(String, Option<String>)>,
}

impl Session {
    pub fn new(config: SessionConfig) -> Session {
        Session {
            framer: Framer::new(config.max_command, true),
            config,
            state: State::NotAuthenticated,
            bad_commands: 0,
            auth_failures: 0,
            client_id: Vec::new(),
        }
    }

    pub fn greeting(&self) -> Action {
        Action::Reply(
            format!(
                "* OK [CAPABILITY {}] msgd IMAP proxy ready\r\n",
                self.capabilities()
            )
            .into_bytes(),
        )
    }

    /// Pre-login capabilities (RFC 9051 section 7.2.2).
    pub fn capabilities(&self) -> String {
        let mut c = String::from("IMAP4rev1");
        if self.config.starttls_available && !self.config.tls_active {
            c.push_str(" STARTTLS");
        }
        if self.plaintext_allowed() {
            c.push_str(" AUTH=PLAIN SASL-IR");
        } else {
            c.push_str(" LOGINDISABLED");
        }
        c.push_str(" ID LITERAL+");
        c
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.framer.push(bytes);
    }

    pub fn has_buffered(&self) -> bool {
        self.framer.has_buffered()
    }

    pub fn tls_active(&self) -> bool {
        self.config.tls_active
    }

    /// Input received after the login command (pipelined by the client):
    /// it belongs to the store.
    pub fn take_rest(&mut self) -> Vec<u8> {
        self.framer.take_rest()
    }

    /// Processes the next complete input, if any. None: more bytes needed
    /// (or the session waits for the driver).
    pub fn next(&mut self) -> Option<Vec<Action>> {
        match &self.state {
            State::NotAuthenticated => {}
            State::SaslPlain { tag } => {
                let tag = tag.clone();
                let line = self.framer.next_line()?;
                return Some(match line {
                    Ok(line) => self.sasl_response(&tag, &line),
                    Err(()) => {
                        self.state = State::NotAuthenticated;
                        self.bad(Some(&tag), "response too long")
                    }
                });
            }
            State::Pending { .. } | State::Proxying | State::Closed => return None,
        }
        Some(match self.framer.next()? {
            Frame::Continue => vec![Action::Reply(b"+ Ready for literal data\r\n".to_vec())],
            Frame::TooLong { tag, fatal } => {
                if fatal {
                    self.state = State::Closed;
                    vec![
                        Action::Reply(b"* BYE Command too long\r\n".to_vec()),
                        Action::Close,
                    ]
                } else {
                    self.bad(tag.as_deref(), "Command too long")
                }
            }
            Frame::Message(bytes) => self.command(&bytes),
        })
    }

    fn command(&mut self, bytes: &[u8]) -> Vec<Action> {
        let cmd = match CommandCodec::new().decode(bytes) {
            Ok((b"", cmd)) => cmd,
            _ => {
                let tag = tag_of(bytes);
                return self.bad(tag.as_deref(), "Syntax error");
            }
        };
        let tag = cmd.tag.inner().to_string();
        match cmd.body {
            CommandBody::Capability => vec![reply(format!(
                "* CAPABILITY {}\r\n{tag} OK CAPABILITY completed\r\n",
                self.capabilities()
            ))],
            CommandBody::Noop => vec![reply(format!("{tag} OK NOOP completed\r\n"))],
            CommandBody::Logout => {
                self.state = State::Closed;
                vec![
                    reply(format!("{LOGOUT_BYE}{tag} OK LOGOUT completed\r\n")),
                    Action::Close,
                ]
            }
            CommandBody::StartTLS => {
                if self.config.tls_active {
                    self.bad(Some(&tag), "TLS is already active")
                } else if !self.config.starttls_available {
                    self.bad(Some(&tag), "STARTTLS is not available here")
                } else {
                    self.state = State::Pending { tag: tag.clone() };
                    // RFC 9051 section 6.2.1: input after STARTTLS and
                    // before the handshake must not be trusted.
                    self.framer.clear();
                    vec![
                        reply(format!("{tag} OK Begin TLS negotiation now\r\n")),
                        Action::StartTls,
                    ]
                }
            }
            CommandBody::Id { parameters } => {
                self.client_id = parameters
                    .unwrap_or_default()
                    .into_iter()
                    .take(MAX_ID_PARAMS)
                    .filter_map(|(k, v)| {
                        let k = String::from_utf8(k.as_ref().to_vec()).ok()?;
                        let v = match v.0 {
                            Some(v) => Some(String::from_utf8(v.as_ref().to_vec()).ok()?),
                            None => None,
                        };
                        // Our own x-* keys are set by us, not the client.
                        if k.len() > 30
                            || k.to_ascii_lowercase().starts_with("x-")
                            || v.as_ref().is_some_and(|v| v.len() > MAX_ID_VALUE)
                        {
                            return None;
                        }
                        Some((k, v))
                    })
                    .collect();
                tracing::debug!(id = ?self.client_id, "client ID");
                vec![reply(format!(
                    "* ID (\"name\" \"msgd\")\r\n{tag} OK ID completed\r\n"
                ))]
            }
            CommandBody::Login { username, password } => {
                if !self.plaintext_allowed() {
                    return self.no_privacy(&tag);
                }
                let (Ok(login), Ok(password)) = (
                    String::from_utf8(username.as_ref().to_vec()),
                    String::from_utf8(password.declassify().as_ref().to_vec()),
                ) else {
                    return self.login_done_for(&tag, LoginOutcome::Failed);
                };
                self.start_login(tag, login, password)
            }
            CommandBody::Authenticate {
                mechanism,
                initial_response,
            } => {
                if mechanism != AuthMechanism::Plain {
                    return vec![reply(format!(
                        "{tag} NO [CANNOT] Unsupported authentication mechanism\r\n"
                    ))];
                }
                if !self.plaintext_allowed() {
                    return self.no_privacy(&tag);
                }
                match initial_response {
                    Some(ir) => self.sasl_plain(&tag, ir.declassify()),
                    None => {
                        self.state = State::SaslPlain { tag };
                        vec![Action::Reply(b"+ \r\n".to_vec())]
                    }
                }
            }
            CommandBody::Enable { .. }
            | CommandBody::Select { .. }
            | CommandBody::Examine { .. }
            | CommandBody::Create { .. }
            | CommandBody::Delete { .. }
            | CommandBody::Rename { .. }
            | CommandBody::Subscribe { .. }
            | CommandBody::Unsubscribe { .. }
            | CommandBody::List { .. }
            | CommandBody::Lsub { .. }
            | CommandBody::Status { .. }
            | CommandBody::Append { .. }
            | CommandBody::Idle
            | CommandBody::Namespace => self.bad(Some(&tag), "Log in first"),
            _ => self.bad(Some(&tag), "Command not valid before login"),
        }
    }

    /// The line answering "+ " after AUTHENTICATE PLAIN (RFC 9051 6.2.2).
    fn sasl_response(&mut self, tag: &str, line: &[u8]) -> Vec<Action> {
        use base64::Engine;
        self.state = State::NotAuthenticated;
        if line == b"*" {
            return self.bad(Some(tag), "AUTHENTICATE cancelled");
        }
        match base64::engine::general_purpose::STANDARD.decode(line) {
            Ok(raw) => self.sasl_plain(tag, &raw),
            Err(_) => self.bad(Some(tag), "Invalid base64"),
        }
    }

    fn sasl_plain(&mut self, tag: &str, raw: &[u8]) -> Vec<Action> {
        match sasl_plain(raw) {
            Ok((login, password)) => self.start_login(tag.to_string(), login, password),
            Err(SaslError::Malformed) => self.bad(Some(tag), "Malformed PLAIN response"),
            Err(SaslError::OtherAuthzid) => vec![reply(format!(
                "{tag} NO [AUTHORIZATIONFAILED] Not authorized to act as that user\r\n"
            ))],
        }
    }

    fn start_login(&mut self, tag: String, login: String, password: String) -> Vec<Action> {
        self.state = State::Pending { tag };
        vec![Action::Login {
            login,
            password,
            client_id: self.client_id.clone(),
        }]
    }

    /// The driver's report on `Action::Login`.
    pub fn login_done(&mut self, outcome: LoginOutcome) -> Vec<Action> {
        let tag = match std::mem::replace(&mut self.state, State::NotAuthenticated) {
            State::Pending { tag } => tag,
            other => {
                self.state = other;
                return Vec::new();
            }
        };
        self.login_done_for(&tag, outcome)
    }

    fn login_done_for(&mut self, tag: &str, outcome: LoginOutcome) -> Vec<Action> {
        match outcome {
            LoginOutcome::Ok(capabilities) => {
                self.state = State::Proxying;
                let code = if capabilities.is_empty() {
                    String::new()
                } else {
                    format!("[CAPABILITY {}] ", strip_unauthenticate(&capabilities))
                };
                vec![
                    reply(format!("{tag} OK {code}Logged in\r\n")),
                    Action::Proxy,
                ]
            }
            LoginOutcome::Failed => {
                self.auth_failed(tag, "[AUTHENTICATIONFAILED] Authentication failed", true)
            }
            LoginOutcome::Inactive => {
                self.auth_failed(tag, "[CONTACTADMIN] Account disabled", false)
            }
            LoginOutcome::RateLimited => self.auth_failed(
                tag,
                "[UNAVAILABLE] Too many failed logins; try again later",
                false,
            ),
            LoginOutcome::DirectoryUnavailable => vec![reply(format!(
                "{tag} NO [UNAVAILABLE] User directory unavailable; try again later\r\n"
            ))],
            LoginOutcome::BackendUnavailable => vec![reply(format!(
                "{tag} NO [UNAVAILABLE] Mail store unavailable; try again later\r\n"
            ))],
            LoginOutcome::BackendRefused(code) => {
                let code = code.map(|c| format!("[{c}] ")).unwrap_or_default();
                vec![reply(format!(
                    "{tag} NO {code}Login refused by the mail store\r\n"
                ))]
            }
        }
    }

    /// The driver's report after a successful TLS handshake: the session
    /// starts over, capabilities change (RFC 9051 section 6.2.1).
    pub fn tls_started(&mut self) {
        self.config.tls_active = true;
        self.config.starttls_available = false;
        self.state = State::NotAuthenticated;
    }

    fn plaintext_allowed(&self) -> bool {
        self.config.tls_active || self.config.plaintext_without_tls
    }

    fn no_privacy(&mut self, tag: &str) -> Vec<Action> {
        self.bad_commands += 1;
        let mut v = vec![reply(format!(
            "{tag} NO [PRIVACYREQUIRED] Use STARTTLS or the IMAPS port first\r\n"
        ))];
        self.too_many_bad(&mut v);
        v
    }

    fn auth_failed(&mut self, tag: &str, text: &str, delay: bool) -> Vec<Action> {
        self.auth_failures += 1;
        let mut v = Vec::new();
        if delay {
            let d = auth_delay(self.config.auth_delay, self.auth_failures);
            if !d.is_zero() {
                v.push(Action::Delay(d));
            }
        }
        v.push(reply(format!("{tag} NO {text}\r\n")));
        if self.auth_failures >= self.config.max_auth_failures.max(1) {
            self.state = State::Closed;
            v.push(reply("* BYE Too many authentication failures\r\n".into()));
            v.push(Action::Close);
        }
        v
    }

    fn bad(&mut self, tag: Option<&str>, text: &str) -> Vec<Action> {
        self.bad_commands += 1;
        let mut v = vec![reply(format!("{} BAD {text}\r\n", tag.unwrap_or("*")))];
        self.too_many_bad(&mut v);
        v
    }

    fn too_many_bad(&mut self, v: &mut Vec<Action>) {
        if self.bad_commands >= self.config.max_bad_commands.max(1) {
            self.state = State::Closed;
            v.push(reply("* BYE Too many bad commands\r\n".into()));
            v.push(Action::Close);
        }
    }
}

/// The mmp's own answer to UNAUTHENTICATE after login (RFC 8437): the
/// client's login lives on the mmp, so the store never sees the command.
const UNAUTH_REFUSED: &str = "BAD UNAUTHENTICATE is not available here";

/// The mmp's untagged answer to LOGOUT (before login, and after it when
/// it keeps the store connection: `RelayFilter::answer_logout`).
const LOGOUT_BYE: &str = "* BYE msgd IMAP proxy logging out\r\n";

/// How much of a line's start is kept to recognise a command or a
/// capability-bearing response: a tag, a command name and its arguments.
const HEAD: usize = 256;

/// Longest capability line rewritten; a longer one passes unchanged.
const MAX_CAPABILITY_LINE: usize = 16 * 1024;

/// The continuation request the mmp sends for a client's synchronizing
/// literal (the store receives it as non-synchronizing).
const CONTINUE: &[u8] = b"+ Ready for literal data\r\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Up {
    /// At the start of a command.
    Head,
    /// Inside a line; `up_buf` holds its last bytes, not yet sent.
    Line,
    Literal(u64),
    /// COMPRESS is active: nothing more can be read.
    Raw,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Down {
    /// At the start of a response.
    Head,
    /// Inside a line; `down_buf` keeps its last bytes (`continuation`:
    /// a `+` line, which announces no literal).
    Line {
        continuation: bool,
    },
    /// A capability line kept whole in `down_buf` to be rewritten.
    Capability,
    Literal(u64),
    Raw,
}

/// After login: what the mmp still reads of the IMAP stream it relays.
/// A synchronous state machine over both directions (no I/O; the relay
/// feeds it and writes what it returns).
///
/// Rules (RFC 8437: a client's UNAUTHENTICATE must not reach the store,
/// whose login is the mmp's):
/// - Client to store: the first line of every command is looked at; a
///   `tag UNAUTHENTICATE` is dropped and answered `tag BAD` by the mmp.
///   Synchronizing literals are sent on as non-synchronizing ones
///   (RFC 7888) and the mmp itself sends `+`: the mmp then always knows
///   which bytes are literal data, without waiting on the store's verdict
///   (a refused literal is skipped by the store and the stream stays in
///   step). A store with LITERAL- refuses such literals over 4096 octets.
/// - Store to client: `UNAUTHENTICATE` is removed from `* CAPABILITY`
///   lines and `[CAPABILITY ...]` codes. The mmp's own replies go out
///   between two store responses.
/// - After a successful COMPRESS (RFC 4978) both directions are deflated
///   and pass unread (the store refuses UNAUTHENTICATE under COMPRESS).
/// - Bounded: at most `HEAD` bytes of a client line and one capability line
///   of `MAX_CAPABILITY_LINE` bytes are held; a literal is never held.
pub struct RelayFilter {
    up: Up,
    up_buf: Vec<u8>,
    down: Down,
    down_buf: Vec<u8>,
    /// The last bytes of the store line being passed (at most `TAIL`).
    down_tail: Vec<u8>,
    /// Replies of the mmp for the client, sent between store responses.
    replies: Vec<u8>,
    /// The tag of a COMPRESS command not answered yet.
    compress_tag: Option<Vec<u8>>,
    /// Commands sent on to the store and not answered yet (counted by
    /// their first lines and the store's tagged responses; a line the
    /// mmp cannot read as a command is not counted, so the count errs
    /// towards "answered" only where the store itself answers untagged).
    pending: u32,
    /// Answer LOGOUT here when nothing is outstanding (the relay keeps
    /// the store connection for the next login).
    answer_logout: bool,
    /// LOGOUT was answered here: what the client sends after it is
    /// dropped, and the store is not told.
    logged_out: bool,
    /// The store sent more after that point (it goes nowhere): its
    /// connection is not between responses and cannot be reused.
    spoiled: bool,
    /// A command whose first line did not fit in `HEAD` bytes could not
    /// be read (its tag or name): LOGOUT is no longer answered here.
    unsure: bool,
}

impl Default for RelayFilter {
    fn default() -> Self {
        RelayFilter::new()
    }
}

impl RelayFilter {
    pub fn new() -> RelayFilter {
        RelayFilter {
            up: Up::Head,
            up_buf: Vec::new(),
            down: Down::Head,
            down_buf: Vec::new(),
            down_tail: Vec::new(),
            replies: Vec::new(),
            compress_tag: None,
            pending: 0,
            answer_logout: false,
            logged_out: false,
            spoiled: false,
            unsure: false,
        }
    }

    /// With LOGOUT answered by the mmp whenever the store has nothing
    /// left to answer and its output is between responses: the client
    /// gets `* BYE` and its tagged OK at once, and the store connection,
    /// still logged in, goes back to the relay's caller (which makes it
    /// not authenticated before using it again).
    pub fn answering_logout(mut self) -> RelayFilter {
        self.answer_logout = true;
        self
    }

    /// LOGOUT was answered here.
    pub fn logged_out(&self) -> bool {
        self.logged_out
    }

    /// LOGOUT was answered here and that answer has gone to the client.
    pub fn logout_answered(&self) -> bool {
        self.logged_out && self.replies.is_empty()
    }

    /// `logout_answered`, and the store has sent nothing since: its
    /// stream is between responses, every command answered.
    pub fn store_reusable(&self) -> bool {
        self.logout_answered() && !self.spoiled
    }

    /// The mmp has replies waiting for the client.
    pub fn has_replies(&self) -> bool {
        !self.replies.is_empty()
    }

    /// Client input: appends what goes on to the store to `to_store`.
    pub fn client_input(&mut self, mut data: &[u8], to_store: &mut Vec<u8>) {
        while !data.is_empty() && !self.logged_out {
            match self.up {
                Up::Raw => {
                    to_store.extend_from_slice(data);
                    return;
                }
                Up::Literal(left) => {
                    let n = left.min(data.len() as u64) as usize;
                    to_store.extend_from_slice(&data[..n]);
                    data = &data[n..];
                    self.up = match left - n as u64 {
                        0 => Up::Line,
                        left => Up::Literal(left),
                    };
                }
                Up::Head => {
                    let room = HEAD.saturating_sub(self.up_buf.len());
                    let (end, lf) = match memchr::memchr(b'\n', &data[..data.len().min(room)]) {
                        Some(p) => (p + 1, true),
                        None => (room.min(data.len()), false),
                    };
                    self.up_buf.extend_from_slice(&data[..end]);
                    data = &data[end..];
                    if lf {
                        let mut line = std::mem::take(&mut self.up_buf);
                        self.client_line(&line, true, to_store);
                        line.clear();
                        self.up_buf = line;
                    } else if self.up_buf.len() >= HEAD {
                        self.long_command();
                        self.up = Up::Line;
                        self.hold_tail(to_store);
                    }
                }
                Up::Line => {
                    let lf = memchr::memchr(b'\n', data);
                    let end = lf.map_or(data.len(), |p| p + 1);
                    self.up_buf.extend_from_slice(&data[..end]);
                    data = &data[end..];
                    if lf.is_some() {
                        let mut line = std::mem::take(&mut self.up_buf);
                        self.client_line(&line, false, to_store);
                        line.clear();
                        self.up_buf = line;
                    } else {
                        self.hold_tail(to_store);
                    }
                }
            }
        }
    }

    /// A command's first line goes past `HEAD` bytes (`up_buf` holds
    /// them): counted as a command; if its tag and name are not among
    /// them, nothing more is judged from the client's side.
    fn long_command(&mut self) {
        match command_words(&self.up_buf) {
            Some((tag, name, _)) => {
                if name.eq_ignore_ascii_case(b"COMPRESS") {
                    self.compress_tag = Some(tag.to_vec());
                }
            }
            None => self.unsure = true,
        }
        self.pending = self.pending.saturating_add(1);
    }

    /// Sends all of a partial line but the bytes that may still become a
    /// literal announcement.
    fn hold_tail(&mut self, to_store: &mut Vec<u8>) {
        let keep = self.up_buf.len().saturating_sub(TAIL);
        to_store.extend(self.up_buf.drain(..keep));
    }

    /// A line (or the rest of one) up to its LF. `first`: the whole first
    /// line of a command.
    fn client_line(&mut self, line: &[u8], first: bool, to_store: &mut Vec<u8>) {
        if first {
            if let Some((tag, name, rest)) = command_words(line) {
                if name.eq_ignore_ascii_case(b"UNAUTHENTICATE") && rest.is_empty() {
                    self.replies.extend_from_slice(tag);
                    self.replies.push(b' ');
                    self.replies.extend_from_slice(UNAUTH_REFUSED.as_bytes());
                    self.replies.extend_from_slice(b"\r\n");
                    self.up = Up::Head;
                    return;
                }
                if name.eq_ignore_ascii_case(b"LOGOUT")
                    && rest.is_empty()
                    && self.answer_logout
                    && !self.unsure
                    && self.pending == 0
                    && self.between_responses()
                {
                    self.replies.extend_from_slice(LOGOUT_BYE.as_bytes());
                    self.replies.extend_from_slice(tag);
                    self.replies.extend_from_slice(b" OK LOGOUT completed\r\n");
                    self.logged_out = true;
                    return;
                }
                if name.eq_ignore_ascii_case(b"COMPRESS") {
                    self.compress_tag = Some(tag.to_vec());
                }
                self.pending = self.pending.saturating_add(1);
            }
        }
        match literal_announcement(line) {
            Some(a) => {
                if a.sync {
                    // `{n}` + CRLF: send `{n+}`, and say "+" ourselves.
                    let close = line.iter().rposition(|&b| b == b'}').unwrap_or(line.len());
                    to_store.extend_from_slice(&line[..close]);
                    to_store.push(b'+');
                    to_store.extend_from_slice(&line[close..]);
                    self.replies.extend_from_slice(CONTINUE);
                } else {
                    to_store.extend_from_slice(line);
                }
                self.up = match a.len {
                    Some(0) => Up::Line,
                    Some(n) => Up::Literal(n),
                    // Not a number64: the store closes the connection.
                    None => Up::Literal(u64::MAX),
                };
            }
            None => {
                to_store.extend_from_slice(line);
                self.up = Up::Head;
            }
        }
    }

    /// Store output: appends what goes on to the client to `to_client`
    /// (with the mmp's own replies, between responses).
    pub fn store_output(&mut self, data: &[u8], to_client: &mut Vec<u8>) {
        if let Some(n) = self.store_output_direct(data, to_client) {
            to_client.extend_from_slice(&data[..n]);
        }
    }

    /// Store output, copied only where it must be: `Some(n)` means "send
    /// `data[..n]` as it is" (`to_client` untouched; the rest of `data`
    /// is held, the start of a line not judged yet), `None` means "send
    /// `to_client`". Lines and literals pass in place; only a capability
    /// line being rewritten, a line start split between two reads, or
    /// the mmp's own replies make it copy.
    pub fn store_output_direct(&mut self, data: &[u8], to_client: &mut Vec<u8>) -> Option<usize> {
        self.flush_replies(to_client);
        if self.logout_answered() {
            // The client has had its LOGOUT answer: nothing more for it.
            self.spoiled |= !data.is_empty();
            return if to_client.is_empty() { Some(0) } else { None };
        }
        let mut sink = Sink {
            data,
            direct: 0,
            copying: !to_client.is_empty(),
            out: to_client,
        };
        let mut i = 0;
        while i < data.len() {
            let rest = &data[i..];
            match self.down {
                Down::Raw => {
                    sink.pass(i, data.len());
                    i = data.len();
                }
                Down::Literal(left) => {
                    let n = left.min(rest.len() as u64) as usize;
                    sink.pass(i, i + n);
                    i += n;
                    self.down = match left - n as u64 {
                        0 => {
                            self.down_tail.clear();
                            Down::Line {
                                continuation: false,
                            }
                        }
                        left => Down::Literal(left),
                    };
                }
                Down::Head if self.down_buf.is_empty() => {
                    // A response starts here: judge it in place.
                    let head = &rest[..rest.len().min(HEAD)];
                    match memchr::memchr(b'\n', head) {
                        Some(p) => {
                            let line = &rest[..=p];
                            self.response_started(line[0]);
                            let continuation = line[0] == b'+';
                            if !continuation && capability_line(line) {
                                sink.push(&strip_unauthenticate_line(line));
                                self.down = Down::Capability;
                            } else {
                                sink.pass(i, i + p + 1);
                                self.down = Down::Line { continuation };
                            }
                            self.line_ended(line, true);
                            i += p + 1;
                        }
                        None if head.len() == HEAD => {
                            self.response_started(head[0]);
                            let continuation = head[0] == b'+';
                            if !continuation && capability_line(head) {
                                self.down_buf.extend_from_slice(head);
                                self.down = Down::Capability;
                            } else {
                                sink.pass(i, i + HEAD);
                                self.remember_tail(head);
                                self.down = Down::Line { continuation };
                            }
                            i += HEAD;
                        }
                        None => {
                            // Too little to judge: held until more comes.
                            self.down_buf.extend_from_slice(rest);
                            i = data.len();
                        }
                    }
                }
                Down::Head => {
                    // The start of a response came in an earlier read.
                    let room = HEAD.saturating_sub(self.down_buf.len());
                    let (end, lf) = match memchr::memchr(b'\n', &rest[..rest.len().min(room)]) {
                        Some(p) => (p + 1, true),
                        None => (room.min(rest.len()), false),
                    };
                    self.down_buf.extend_from_slice(&rest[..end]);
                    i += end;
                    if !lf && self.down_buf.len() < HEAD {
                        continue;
                    }
                    let line = std::mem::take(&mut self.down_buf);
                    self.response_started(line.first().copied().unwrap_or(b'*'));
                    let continuation = line.first() == Some(&b'+');
                    if !continuation && capability_line(&line) {
                        self.down = Down::Capability;
                        if lf {
                            sink.push(&strip_unauthenticate_line(&line));
                            self.line_ended(&line, true);
                        } else {
                            self.down_buf = line;
                            continue;
                        }
                    } else {
                        sink.push(&line);
                        self.down = Down::Line { continuation };
                        if lf {
                            self.line_ended(&line, true);
                        } else {
                            self.remember_tail(&line);
                        }
                    }
                    self.down_buf = line;
                    self.down_buf.clear();
                }
                Down::Line { .. } => match memchr::memchr(b'\n', rest) {
                    Some(p) => {
                        sink.pass(i, i + p + 1);
                        self.remember_tail(&rest[..=p]);
                        let tail = std::mem::take(&mut self.down_tail);
                        self.line_ended(&tail, false);
                        self.down_tail = tail;
                        self.down_tail.clear();
                        i += p + 1;
                    }
                    None => {
                        sink.pass(i, data.len());
                        self.remember_tail(rest);
                        i = data.len();
                    }
                },
                Down::Capability => {
                    let lf = memchr::memchr(b'\n', rest);
                    let end = lf.map_or(rest.len(), |p| p + 1);
                    self.down_buf.extend_from_slice(&rest[..end]);
                    i += end;
                    let line = std::mem::take(&mut self.down_buf);
                    if lf.is_some() {
                        sink.push(&strip_unauthenticate_line(&line));
                        self.line_ended(&line, true);
                    } else if line.len() <= MAX_CAPABILITY_LINE {
                        // Kept whole until its end.
                        self.down_buf = line;
                        continue;
                    } else {
                        // Too long to rewrite: it passes as it is.
                        sink.push(&line);
                        self.remember_tail(&line);
                        self.down = Down::Line {
                            continuation: false,
                        };
                    }
                    self.down_buf = line;
                    self.down_buf.clear();
                }
            }
        }
        let direct = (!sink.copying).then_some(sink.direct);
        if self.has_replies() && self.between_responses() {
            sink.spill();
            self.flush_replies(sink.out);
            return None;
        }
        direct
    }

    /// A store response starts with `first`: a tagged one answers a
    /// command.
    fn response_started(&mut self, first: u8) {
        if first != b'*' && first != b'+' {
            self.pending = self.pending.saturating_sub(1);
        }
    }

    /// Keeps the last `TAIL` bytes of the line being passed (a literal
    /// announcement is judged from them at its end).
    fn remember_tail(&mut self, bytes: &[u8]) {
        if bytes.len() >= TAIL {
            self.down_tail.clear();
            self.down_tail
                .extend_from_slice(&bytes[bytes.len() - TAIL..]);
        } else {
            let cut = (self.down_tail.len() + bytes.len()).saturating_sub(TAIL);
            self.down_tail.drain(..cut);
            self.down_tail.extend_from_slice(bytes);
        }
    }

    /// A store line ended (`end`: its last bytes, at least the last
    /// `TAIL` ones, or all of it when `whole`: the whole first line of a
    /// response). Sets what comes next: a literal, or a new response.
    fn line_ended(&mut self, end: &[u8], whole: bool) {
        let announced = match self.down {
            Down::Line { continuation: true } => None,
            _ => literal_announcement(end),
        };
        self.down = match announced {
            Some(a) => match a.len {
                Some(0) => Down::Line {
                    continuation: false,
                },
                Some(n) => Down::Literal(n),
                None => Down::Literal(u64::MAX),
            },
            None => Down::Head,
        };
        self.down_tail.clear();
        if let Some(tag) = self.compress_tag.as_ref().filter(|_| whole) {
            // The answer to COMPRESS: deflate starts after its line.
            if let Some((t, status, _)) = command_words(end) {
                if t == tag.as_slice() {
                    if status.eq_ignore_ascii_case(b"OK") {
                        self.down = Down::Raw;
                        self.up = Up::Raw;
                    }
                    self.compress_tag = None;
                }
            }
        }
    }

    /// The store's output is between two responses (the place for the
    /// mmp's replies and its goodbye); always after COMPRESS, where the
    /// mmp can no longer tell.
    pub fn between_responses(&self) -> bool {
        (self.down == Down::Head && self.down_buf.is_empty()) || self.down == Down::Raw
    }

    /// Sends the mmp's replies if the store's output is between responses.
    pub fn flush_replies(&mut self, to_client: &mut Vec<u8>) {
        if self.down == Down::Head && self.down_buf.is_empty() && !self.replies.is_empty() {
            to_client.append(&mut self.replies);
        }
    }
}

/// Where the filter's output goes: bytes of the input passed in place
/// for as long as they are one run from its start (`direct`), then, once
/// anything else must go in between, all copied into `out`.
struct Sink<'a> {
    data: &'a [u8],
    out: &'a mut Vec<u8>,
    /// `data[..direct]` goes on as it is (while not `copying`).
    direct: usize,
    copying: bool,
}

impl Sink<'_> {
    /// `data[from..to]` goes on unchanged.
    fn pass(&mut self, from: usize, to: usize) {
        if !self.copying && from == self.direct {
            self.direct = to;
        } else {
            self.spill();
            self.out.extend_from_slice(&self.data[from..to]);
        }
    }

    /// Bytes other than the input's go on.
    fn push(&mut self, bytes: &[u8]) {
        self.spill();
        self.out.extend_from_slice(bytes);
    }

    /// From here on everything is copied into `out`.
    fn spill(&mut self) {
        if !self.copying {
            self.copying = true;
            self.out.extend_from_slice(&self.data[..self.direct]);
        }
    }
}

/// `tag SP name [SP rest]` of a line (CRLF or LF removed): tag chars as
/// RFC 9051 defines them, name an atom.
fn command_words(line: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let sp = line.iter().position(|&b| b == b' ')?;
    let (tag, rest) = line.split_at(sp);
    if tag.is_empty() || !tag.iter().all(|&b| super::framer::is_tag_char(b)) {
        return None;
    }
    let rest = &rest[1..];
    let (name, rest) = match rest.iter().position(|&b| b == b' ') {
        Some(p) => (&rest[..p], &rest[p + 1..]),
        None => (rest, &rest[rest.len()..]),
    };
    Some((tag, name, rest))
}

/// A response that carries capabilities: `* CAPABILITY ...` or a status
/// response with a `[CAPABILITY ...]` code (judged from its start).
fn capability_line(head: &[u8]) -> bool {
    let mut words = head.splitn(3, |&b| b == b' ');
    let (Some(tag), Some(second)) = (words.next(), words.next()) else {
        return false;
    };
    let third = words.next().unwrap_or_default();
    let starts = |s: &[u8], p: &[u8]| s.len() >= p.len() && s[..p.len()].eq_ignore_ascii_case(p);
    if tag == b"*" && second.eq_ignore_ascii_case(b"CAPABILITY") {
        return true;
    }
    ["OK", "NO", "BAD", "PREAUTH", "BYE"]
        .iter()
        .any(|s| second.eq_ignore_ascii_case(s.as_bytes()))
        && starts(third, b"[CAPABILITY ")
}

/// A capability line without `UNAUTHENTICATE`.
fn strip_unauthenticate_line(line: &[u8]) -> Vec<u8> {
    let Ok(text) = std::str::from_utf8(line) else {
        return line.to_vec();
    };
    let body = text.trim_end_matches(['\r', '\n']);
    let eol = &text[body.len()..];
    let upper = body.to_ascii_uppercase();
    // The list: after the word CAPABILITY to the end of the code or line.
    let (start, end) = if let Some(p) = upper.find("[CAPABILITY ") {
        let from = p + "[CAPABILITY".len();
        let to = upper[from..].find(']').map_or(body.len(), |e| from + e);
        (from, to)
    } else {
        match upper.find(" CAPABILITY ") {
            Some(p) => (p + " CAPABILITY".len(), body.len()),
            None => return line.to_vec(),
        }
    };
    let caps: String = body[start..end]
        .split(' ')
        .filter(|c| !c.is_empty() && !c.eq_ignore_ascii_case("UNAUTHENTICATE"))
        .flat_map(|c| [" ", c])
        .collect();
    format!("{}{caps}{}{eol}", &body[..start], &body[end..]).into_bytes()
}

/// A capability list without `UNAUTHENTICATE` (RFC 8437): the mmp does
/// not relay it.
pub fn strip_unauthenticate(caps: &str) -> String {
    caps.split(' ')
        .filter(|c| !c.eq_ignore_ascii_case("UNAUTHENTICATE"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn reply(s: String) -> Action {
    Action::Reply(s.into_bytes())
}

/// The tag of a command that did not parse, if it has a plausible one.
fn tag_of(bytes: &[u8]) -> Option<String> {
    let end = bytes
        .iter()
        .position(|b| matches!(b, b' ' | b'\r' | b'\n'))?;
    let t = bytes.get(..end)?;
    if t.is_empty() || t.len() > 64 || !t.iter().all(|b| super::framer::is_tag_char(*b)) {
        return None;
    }
    String::from_utf8(t.to_vec()).ok()
}

/// Writes `s` as an IMAP astring: an atom when it can be, a quoted string
/// when it has no CR/LF/NUL and is ASCII, else None (use a literal).
pub fn quoted(s: &str) -> Option<String> {
    if s.bytes()
        .any(|b| !b.is_ascii() || matches!(b, b'\r' | b'\n' | 0))
    {
        return None;
    }
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    Some(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> SessionConfig {
        SessionConfig {
            starttls_available: true,
            tls_active: false,
            plaintext_without_tls: false,
            max_bad_commands: 5,
            max_auth_failures: 3,
            auth_delay: Duration::from_secs(1),
            max_command: 8192,
        }
    }

    fn run(s: &mut Session, input: &[u8]) -> Vec<Action> {
        s.push(input);
        let mut out = Vec::new();
        while let Some(a) = s.next() {
            out.extend(a);
        }
        out
    }

    fn text(actions: &[Action]) -> String {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Reply(r) => Some(String::from_utf8_lossy(r).into_owned()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn rfc9051_logindisabled_before_tls_on_remote_connections() {
        let mut s = Session::new(config());
        let greeting = text(&[s.greeting()]);
        assert!(greeting.contains("STARTTLS LOGINDISABLED"), "{greeting}");
        assert!(!greeting.contains("AUTH=PLAIN"));
        let out = run(
            &mut s,
            b"a LOGIN alice secret\r\nb AUTHENTICATE PLAIN AGEAYg==\r\n",
        );
        assert_eq!(
            text(&out),
            "a NO [PRIVACYREQUIRED] Use STARTTLS or the IMAPS port first\r\n\
             b NO [PRIVACYREQUIRED] Use STARTTLS or the IMAPS port first\r\n"
        );
        assert!(!out.iter().any(|a| matches!(a, Action::Login { .. })));
    }

    #[test]
    fn rfc9051_starttls_discards_pipelined_input_and_changes_capabilities() {
        let mut s = Session::new(config());
        let out = run(&mut s, b"t STARTTLS\r\nx LOGIN injected pw\r\n");
        assert_eq!(
            out,
            vec![
                Action::Reply(b"t OK Begin TLS negotiation now\r\n".to_vec()),
                Action::StartTls
            ]
        );
        assert!(!s.has_buffered());
        s.tls_started();
        let out = run(&mut s, b"c CAPABILITY\r\n");
        assert_eq!(
            text(&out),
            "* CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR ID LITERAL+\r\nc OK CAPABILITY completed\r\n"
        );
        let out = run(&mut s, b"d STARTTLS\r\n");
        assert_eq!(text(&out), "d BAD TLS is already active\r\n");
    }

    #[test]
    fn rfc9051_login_with_quoted_strings_and_literals_split_at_every_byte() {
        let input: &[u8] = b"a1 ID (\"name\" \"test\" \"x-originating-ip\" \"1.2.3.4\")\r\na2 LOGIN {5}\r\nalice \"p w\\\"x\"\r\nb SELECT INBOX\r\n";
        for i in 0..=input.len() {
            let mut c = config();
            c.tls_active = true;
            let mut s = Session::new(c);
            let mut out = run(&mut s, &input[..i]);
            out.extend(run(&mut s, &input[i..]));
            let login = out
                .iter()
                .find(|a| matches!(a, Action::Login { .. }))
                .cloned();
            assert_eq!(
                login,
                Some(Action::Login {
                    login: "alice".into(),
                    password: "p w\"x".into(),
                    // The client may not set our x- keys.
                    client_id: vec![("name".into(), Some("test".into()))],
                }),
                "split at {i}"
            );
            assert!(text(&out).starts_with("* ID (\"name\" \"msgd\")\r\na1 OK ID completed\r\n"));
            // After LOGIN the session waits; the SELECT is for the store.
            let out = s.login_done(LoginOutcome::Ok("IMAP4rev2 IDLE".into()));
            assert_eq!(
                out,
                vec![
                    Action::Reply(b"a2 OK [CAPABILITY IMAP4rev2 IDLE] Logged in\r\n".to_vec()),
                    Action::Proxy
                ]
            );
            assert_eq!(s.take_rest(), b"b SELECT INBOX\r\n", "split at {i}");
        }
    }

    #[test]
    fn rfc4959_authenticate_plain_with_and_without_initial_response() {
        let mut c = config();
        c.plaintext_without_tls = true;
        let mut s = Session::new(c.clone());
        // "\0alice\0secret"
        let out = run(&mut s, b"a AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==\r\n");
        assert!(
            matches!(&out[..], [Action::Login { login, password, .. }] if login == "alice" && password == "secret")
        );
        let mut s = Session::new(c.clone());
        let out = run(&mut s, b"a AUTHENTICATE PLAIN\r\n");
        assert_eq!(text(&out), "+ \r\n");
        let out = run(&mut s, b"AGFsaWNlAHNlY3JldA==\r\n");
        assert!(matches!(&out[..], [Action::Login { login, .. }] if login == "alice"));
        // Cancel, and acting as someone else.
        let mut s = Session::new(c.clone());
        run(&mut s, b"a AUTHENTICATE PLAIN\r\n");
        assert_eq!(
            text(&run(&mut s, b"*\r\n")),
            "a BAD AUTHENTICATE cancelled\r\n"
        );
        // "bob\0alice\0secret"
        let out = run(&mut s, b"b AUTHENTICATE PLAIN Ym9iAGFsaWNlAHNlY3JldA==\r\n");
        assert_eq!(
            text(&out),
            "b NO [AUTHORIZATIONFAILED] Not authorized to act as that user\r\n"
        );
        let out = run(&mut s, b"c AUTHENTICATE CRAM-MD5\r\n");
        assert_eq!(
            text(&out),
            "c NO [CANNOT] Unsupported authentication mechanism\r\n"
        );
    }

    #[test]
    fn rfc5530_login_failures_have_response_codes_and_growing_delays() {
        let mut c = config();
        c.tls_active = true;
        let mut s = Session::new(c);
        let mut delays = Vec::new();
        for (i, (outcome, expect)) in [
            (
                LoginOutcome::DirectoryUnavailable,
                "NO [UNAVAILABLE] User directory unavailable; try again later",
            ),
            (
                LoginOutcome::BackendUnavailable,
                "NO [UNAVAILABLE] Mail store unavailable; try again later",
            ),
            (
                LoginOutcome::BackendRefused(Some("AUTHENTICATIONFAILED".into())),
                "NO [AUTHENTICATIONFAILED] Login refused by the mail store",
            ),
            (
                LoginOutcome::Failed,
                "NO [AUTHENTICATIONFAILED] Authentication failed",
            ),
            (
                LoginOutcome::Failed,
                "NO [AUTHENTICATIONFAILED] Authentication failed",
            ),
        ]
        .into_iter()
        .enumerate()
        {
            let out = run(&mut s, format!("t{i} LOGIN u p\r\n").as_bytes());
            assert!(matches!(out[..], [Action::Login { .. }]));
            let out = s.login_done(outcome);
            delays.extend(out.iter().filter_map(|a| match a {
                Action::Delay(d) => Some(*d),
                _ => None,
            }));
            assert_eq!(text(&out), format!("t{i} {expect}\r\n"));
        }
        assert_eq!(delays, vec![Duration::from_secs(1), Duration::from_secs(2)]);
        run(&mut s, b"t9 LOGIN u p\r\n");
        let out = s.login_done(LoginOutcome::Failed);
        assert!(text(&out).ends_with("* BYE Too many authentication failures\r\n"));
        assert_eq!(out.last(), Some(&Action::Close));
        assert_eq!(s.next(), None);
    }

    #[test]
    fn rfc9051_bad_commands_and_state() {
        let mut s = Session::new(config());
        let out = run(
            &mut s,
            b"a SELECT INBOX\r\nb FROB\r\n\r\nc NOOP\r\nd LOGOUT\r\ne NOOP\r\n",
        );
        assert_eq!(
            text(&out),
            "a BAD Log in first\r\nb BAD Syntax error\r\n* BAD Syntax error\r\nc OK NOOP completed\r\n\
             * BYE msgd IMAP proxy logging out\r\nd OK LOGOUT completed\r\n"
        );
        assert_eq!(out.last(), Some(&Action::Close));
        let mut c = config();
        c.max_bad_commands = 2;
        let mut s = Session::new(c);
        let out = run(&mut s, b"a FROB\r\nb FROB\r\nc NOOP\r\n");
        assert_eq!(
            text(&out),
            "a BAD Syntax error\r\nb BAD Syntax error\r\n* BYE Too many bad commands\r\n"
        );
    }

    #[test]
    fn login_password_is_hidden_in_debug() {
        let a = Action::Login {
            login: "u".into(),
            password: "hunter2".into(),
            client_id: vec![],
        };
        assert!(!format!("{a:?}").contains("hunter2"));
    }

    /// Runs client input and store output through a filter, each split at
    /// `i` and `j`: (bytes to the store, bytes to the client).
    fn filtered(client: &[u8], store: &[u8], i: usize, j: usize) -> (Vec<u8>, Vec<u8>) {
        let mut f = RelayFilter::new();
        let (mut up, mut down) = (Vec::new(), Vec::new());
        f.client_input(&client[..i], &mut up);
        f.client_input(&client[i..], &mut up);
        f.store_output(&store[..j], &mut down);
        f.store_output(&store[j..], &mut down);
        f.flush_replies(&mut down);
        (up, down)
    }

    /// Client and store turns in order, each split at every byte; returns
    /// what reached the store and the client, and whether LOGOUT was
    /// answered by the mmp.
    fn turns(turns: &[(bool, &[u8])], answer_logout: bool) -> Vec<(Vec<u8>, Vec<u8>, bool)> {
        let longest = turns.iter().map(|(_, t)| t.len()).max().unwrap_or(0);
        (0..=longest)
            .map(|i| {
                let mut f = RelayFilter::new();
                if answer_logout {
                    f = f.answering_logout();
                }
                let (mut up, mut down) = (Vec::new(), Vec::new());
                for (from_client, t) in turns {
                    let cut = i.min(t.len());
                    for part in [&t[..cut], &t[cut..]] {
                        if *from_client {
                            f.client_input(part, &mut up);
                        } else {
                            f.store_output(part, &mut down);
                        }
                    }
                    f.flush_replies(&mut down);
                }
                (up, down, f.logged_out())
            })
            .collect()
    }

    #[test]
    fn rfc9051_logout_is_answered_by_the_mmp_only_when_nothing_is_outstanding() {
        const BYE: &[u8] = b"* BYE msgd IMAP proxy logging out\r\n";
        let script: [(bool, &[u8]); 10] = [
            // Pipelined behind a command: the store answers both.
            (true, b"a NOOP\r\nl1 LOGOUT\r\n"),
            (false, b"* 3 EXISTS\r\na OK done\r\n"),
            (false, b"* BYE bye\r\nl1 OK LOGOUT completed\r\n"),
            // IDLE's DONE is no command; an untagged response is no answer.
            (true, b"b IDLE\r\n"),
            (false, b"+ idling\r\n"),
            (true, b"DONE\r\n"),
            (false, b"b OK done\r\n"),
            // A literal holding "LOGOUT" is data.
            (true, b"c APPEND INBOX {10+}\r\nz LOGOUT\r\n\r\n"),
            (
                false,
                b"* 1 FETCH (BODY[] {9}\r\nz LOGOUT\r\n)\r\nc OK done\r\n",
            ),
            // Now nothing is outstanding: answered here, the rest dropped.
            (true, b"d LOGOUT\r\ne NOOP\r\n"),
        ];
        for (i, (up, down, out)) in turns(&script, true).into_iter().enumerate() {
            let up = String::from_utf8_lossy(&up);
            assert_eq!(
                up,
                "a NOOP\r\nl1 LOGOUT\r\nb IDLE\r\nDONE\r\nc APPEND INBOX {10+}\r\nz LOGOUT\r\n\r\n",
                "split at {i}"
            );
            assert!(out, "split at {i}");
            let mut want = script
                .iter()
                .filter(|(c, _)| !c)
                .flat_map(|(_, t)| t.to_vec())
                .collect::<Vec<u8>>();
            want.extend_from_slice(BYE);
            want.extend_from_slice(b"d OK LOGOUT completed\r\n");
            assert_eq!(
                String::from_utf8_lossy(&down),
                String::from_utf8_lossy(&want),
                "split at {i}"
            );
        }
        // Not asked to: every LOGOUT goes to the store.
        for (up, _, out) in turns(&script, false) {
            assert!(!out);
            assert!(String::from_utf8_lossy(&up).ends_with("\r\nd LOGOUT\r\ne NOOP\r\n"));
        }
        // A store response under way (a literal not yet complete): sent on.
        let busy: [(bool, &[u8]); 2] = [
            (false, b"* 1 FETCH (BODY[] {9}\r\nz LO"),
            (true, b"d LOGOUT\r\n"),
        ];
        for (up, _, out) in turns(&busy, true) {
            assert!(!out);
            assert_eq!(up, b"d LOGOUT\r\n");
        }
    }

    /// Commands whose first line is longer than what the filter reads of
    /// it are still owed an answer: a LOGOUT behind one goes to the store.
    /// One whose tag is not even in those bytes ends local LOGOUTs. Store
    /// output after the mmp's LOGOUT answer reaches nobody and makes the
    /// store connection unusable.
    #[test]
    fn rfc9051_logout_behind_long_lines_and_store_output_after_it() {
        let long_set = vec!["1"; 200].join(",");
        let long = format!("a UID STORE {long_set} +FLAGS (\\Seen)\r\n");
        let script: Vec<(bool, &[u8])> = vec![(true, long.as_bytes()), (true, b"b LOGOUT\r\n")];
        for (up, _, out) in turns(&script, true) {
            assert!(!out);
            assert!(up.ends_with(b"\r\nb LOGOUT\r\n"));
        }
        let answered = b"a OK done\r\n";
        let script: Vec<(bool, &[u8])> = vec![
            (true, long.as_bytes()),
            (false, answered),
            (true, b"b LOGOUT\r\n"),
        ];
        for (up, _, out) in turns(&script, true) {
            assert!(out, "answered once the long command was");
            assert_eq!(up, long.as_bytes());
        }
        let long_tag = format!("{} NOOP\r\n", "t".repeat(300));
        let long_tag_answer = format!("{} OK done\r\n", "t".repeat(300));
        let script: Vec<(bool, &[u8])> = vec![
            (true, long_tag.as_bytes()),
            (false, long_tag_answer.as_bytes()),
            (true, b"b LOGOUT\r\n"),
        ];
        for (up, _, out) in turns(&script, true) {
            assert!(!out);
            assert!(up.ends_with(b"\r\nb LOGOUT\r\n"));
        }
        let mut f = RelayFilter::new().answering_logout();
        let (mut up, mut down) = (Vec::new(), Vec::new());
        f.client_input(b"b LOGOUT\r\n", &mut up);
        f.store_output(b"* 4 EXISTS\r\n", &mut down);
        assert!(up.is_empty() && f.logged_out() && !f.store_reusable());
        assert_eq!(
            down,
            b"* BYE msgd IMAP proxy logging out\r\nb OK LOGOUT completed\r\n"
        );
        let mut later = Vec::new();
        assert_eq!(
            f.store_output_direct(b"* 5 EXISTS\r\n", &mut later),
            Some(0)
        );
        assert!(later.is_empty());
        let mut f = RelayFilter::new().answering_logout();
        f.client_input(b"b LOGOUT\r\n", &mut up);
        assert!(!f.store_reusable(), "its answer is not out yet");
        f.flush_replies(&mut down);
        assert!(f.store_reusable());
    }

    #[test]
    fn rfc8437_unauthenticate_is_answered_by_the_mmp_split_at_every_byte() {
        let client: &[u8] =
            b"a NOOP\r\nb unauthenticate\r\nc APPEND INBOX {28+}\r\nd UNAUTHENTICATE\r\nxxxxxxxxxx\r\ne UNAUTHENTICATE now\r\n";
        let store: &[u8] =
            b"a OK NOOP completed\r\n* 1 FETCH (BODY[] {19}\r\nb UNAUTHENTICATE\r\n)\r\n";
        for i in 0..=client.len() {
            for j in [0, 5, store.len() - 3, store.len()] {
                let (up, down) = filtered(client, store, i, j);
                assert_eq!(
                    String::from_utf8_lossy(&up),
                    // Inside a literal it is data; with arguments it is the
                    // store's to refuse.
                    "a NOOP\r\nc APPEND INBOX {28+}\r\nd UNAUTHENTICATE\r\nxxxxxxxxxx\r\ne UNAUTHENTICATE now\r\n",
                    "split at {i}/{j}"
                );
                // The store's own bytes pass unchanged, literal included;
                // the mmp's answer comes between two responses.
                let down = String::from_utf8_lossy(&down).into_owned();
                assert_eq!(
                    down.replace("b BAD UNAUTHENTICATE is not available here\r\n", ""),
                    String::from_utf8_lossy(store),
                    "split at {i}/{j}"
                );
                assert_eq!(down.matches("b BAD UNAUTHENTICATE").count(), 1);
                assert!(
                    down.starts_with("b BAD")
                        || down.contains("\r\nb BAD")
                            && !down.contains("{19}\r\nb BAD")
                            && !down.contains("b UNAUTHENTICATE\r\nb BAD"),
                    "{down}"
                );
            }
        }
    }

    #[test]
    fn rfc8437_synchronizing_literals_become_non_synchronizing_split_at_every_byte() {
        // The mmp says "+" itself, so it always knows where literal data is:
        // a refused literal cannot smuggle a command past it.
        let client: &[u8] =
            b"a APPEND INBOX {20}\r\nb UNAUTHENTICATE\r\nxx\r\nc LOGIN ~{3}\r\nabc {0}\r\n\r\nd UNAUTHENTICATE\r\n";
        for i in 0..=client.len() {
            let (up, down) = filtered(client, b"", i, 0);
            assert_eq!(
                String::from_utf8_lossy(&up),
                "a APPEND INBOX {20+}\r\nb UNAUTHENTICATE\r\nxx\r\nc LOGIN ~{3+}\r\nabc {0+}\r\n\r\n",
                "split at {i}"
            );
            assert_eq!(
                String::from_utf8_lossy(&down),
                "+ Ready for literal data\r\n+ Ready for literal data\r\n+ Ready for literal data\r\n\
                 d BAD UNAUTHENTICATE is not available here\r\n"
            );
        }
    }

    #[test]
    fn rfc8437_capabilities_relayed_without_unauthenticate_split_at_every_byte() {
        let store: &[u8] = b"* CAPABILITY IMAP4rev2 UNAUTHENTICATE IDLE\r\n\
            a OK [CAPABILITY IMAP4rev2 IDLE UNAUTHENTICATE] done\r\n\
            * OK [CAPABILITY UNAUTHENTICATE] x\r\n\
            * 1 FETCH (BODY[] {40}\r\n* CAPABILITY UNAUTHENTICATE IMAP4rev2\r\n)\r\n\
            + UNAUTHENTICATE\r\n\
            b ok [capability imap4rev2 unauthenticate]\r\n";
        for j in 0..=store.len() {
            let (_, down) = filtered(b"", store, 0, j);
            assert_eq!(
                String::from_utf8_lossy(&down),
                "* CAPABILITY IMAP4rev2 IDLE\r\n\
                 a OK [CAPABILITY IMAP4rev2 IDLE] done\r\n\
                 * OK [CAPABILITY] x\r\n\
                 * 1 FETCH (BODY[] {40}\r\n* CAPABILITY UNAUTHENTICATE IMAP4rev2\r\n)\r\n\
                 + UNAUTHENTICATE\r\n\
                 b ok [capability imap4rev2]\r\n",
                "split at {j}"
            );
        }
        assert_eq!(
            strip_unauthenticate("IMAP4rev2 UNAUTHENTICATE ID"),
            "IMAP4rev2 ID"
        );
    }

    #[test]
    fn rfc4978_after_compress_both_directions_pass_unread() {
        let mut f = RelayFilter::new();
        let (mut up, mut down) = (Vec::new(), Vec::new());
        f.client_input(b"z COMPRESS DEFLATE\r\n", &mut up);
        f.store_output(
            b"z OK DEFLATE active\r\n\x01* CAPABILITY UNAUTHENTICATE\r\n",
            &mut down,
        );
        f.client_input(b"q UNAUTHENTICATE\r\n{5}\r\n", &mut up);
        assert_eq!(up, b"z COMPRESS DEFLATE\r\nq UNAUTHENTICATE\r\n{5}\r\n");
        assert_eq!(
            down,
            b"z OK DEFLATE active\r\n\x01* CAPABILITY UNAUTHENTICATE\r\n"
        );
        // A refused COMPRESS changes nothing.
        let mut f = RelayFilter::new();
        let (mut up, mut down) = (Vec::new(), Vec::new());
        f.client_input(b"z COMPRESS DEFLATE\r\n", &mut up);
        f.store_output(b"z NO [COMPRESSIONACTIVE] no\r\n", &mut down);
        f.client_input(b"q UNAUTHENTICATE\r\n", &mut up);
        f.flush_replies(&mut down);
        assert_eq!(up, b"z COMPRESS DEFLATE\r\n");
        assert!(down.ends_with(b"q BAD UNAUTHENTICATE is not available here\r\n"));
    }

    #[test]
    fn relay_filter_holds_little_of_long_lines() {
        let mut f = RelayFilter::new();
        let mut up = Vec::new();
        let long = vec![b'x'; 100_000];
        f.client_input(b"a SEARCH TEXT ", &mut up);
        f.client_input(&long, &mut up);
        assert!(up.len() >= 100_000 + 14 - TAIL, "{}", up.len());
        let mut down = Vec::new();
        f.store_output(b"* 1 FETCH (X ", &mut down);
        f.store_output(&long, &mut down);
        assert!(down.len() >= 100_000 + 13 - TAIL);
        // A capability line beyond the limit passes as it is.
        let mut f = RelayFilter::new();
        let mut down = Vec::new();
        f.store_output(b"* CAPABILITY UNAUTHENTICATE ", &mut down);
        f.store_output(&long, &mut down);
        f.store_output(b"\r\n", &mut down);
        assert_eq!(down.len(), 28 + 100_000 + 2);
    }

    #[test]
    fn relay_filter_passes_store_output_in_place_and_copies_only_what_it_must() {
        let mut f = RelayFilter::new();
        let mut out = Vec::new();
        // Whole responses, literals included: sent as read, nothing copied.
        let chunk: &[u8] =
            b"* 1 FETCH (BODY[] {5}\r\nabcde)\r\n* 2 FETCH (FLAGS ())\r\na OK done\r\n";
        assert_eq!(f.store_output_direct(chunk, &mut out), Some(chunk.len()));
        assert!(out.is_empty());
        // A literal split between reads: still in place.
        assert_eq!(
            f.store_output_direct(b"* 3 FETCH (BODY[] {6}\r\nabc", &mut out),
            Some(26)
        );
        assert_eq!(f.store_output_direct(b"def)\r\n", &mut out), Some(6));
        // A long line split between reads: in place, its literal found.
        let long = [b"* 4 FETCH (X ".as_slice(), &[b'x'; 300], b" BODY[] {2}"].concat();
        assert_eq!(f.store_output_direct(&long, &mut out), Some(long.len()));
        assert_eq!(f.store_output_direct(b"\r\nyz)\r\n", &mut out), Some(7));
        assert!(f.between_responses());
        assert!(out.is_empty());
        // The start of a response at the end of a read is held (it may be
        // a capability line), then sent with the rest, copied.
        let chunk: &[u8] = b"b OK x\r\n* 5 FE";
        assert_eq!(f.store_output_direct(chunk, &mut out), Some(8));
        assert!(!f.between_responses());
        assert_eq!(f.store_output_direct(b"TCH (FLAGS ())\r\n", &mut out), None);
        assert_eq!(out, b"* 5 FETCH (FLAGS ())\r\n");
        out.clear();
        // A capability line is rewritten: copied.
        let caps: &[u8] = b"* OK x\r\n* CAPABILITY IMAP4rev2 UNAUTHENTICATE\r\n";
        assert_eq!(f.store_output_direct(caps, &mut out), None);
        assert_eq!(out, b"* OK x\r\n* CAPABILITY IMAP4rev2\r\n");
    }

    #[test]
    fn quoting_for_the_backend() {
        assert_eq!(quoted("a\"b\\c").as_deref(), Some("\"a\\\"b\\\\c\""));
        assert_eq!(quoted("é"), None);
        assert_eq!(quoted("a\r\nb"), None);
    }
}
