//! The synchronous SMTP/LMTP session core: no sockets, no clocks that
//! matter, no lookups. Bytes go in with `feed`, `next_event` returns what the
//! driver must do (read more, resolve a recipient, deliver a message, start
//! TLS, close) and replies accumulate in an output buffer the driver writes
//! out before it blocks on reading (RFC 2920: replies to a pipelined group
//! may be batched until the server would wait for input).
//!
//! Invariants:
//! - One command at a time: while an effect (recipient lookup, delivery,
//!   TLS handshake) is outstanding, no further input is interpreted, so
//!   replies stay in command order.
//! - Every byte of a DATA body or BDAT chunk is consumed even when the
//!   command is refused or the size limit is passed, so the command stream
//!   never desynchronises; the error is answered at the end.
//! - STARTTLS discards every buffered plaintext byte (RFC 3207 5, the
//!   command-injection defence) and forgets EHLO and the transaction.
//! - A message is acknowledged only from `delivered`, i.e. after the
//!   delivery back end reported every recipient durable.

use std::net::IpAddr;
use std::sync::Arc;

use smtp_proto::{Error as ProtoError, MailFrom, RcptTo, Request};

use super::auth;
use super::codec::{BdatDecoder, Body, DataDecoder, Line, LineReader};
use super::reply::{self, Reply};
use super::spool::SpoolConfig;
use super::trace;
use crate::budget::{Budget, Lease};
use crate::deliver::client::DELIVERY_ID_EXT;
use crate::deliver::Notify;
pub use crate::deliver::{Outcome, Target};

/// SMTP or LMTP flavour of the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    Smtp,
    Lmtp,
}

/// Everything the core needs to know, fixed for the session.
#[derive(Debug, Clone)]
pub struct Params {
    pub flavor: Flavor,
    pub hostname: String,
    /// Domain that a bare `<Postmaster>` recipient belongs to (RFC 5321 4.5.1).
    pub postmaster_domain: String,
    pub max_message_size: u64,
    pub max_recipients: usize,
    pub max_line: usize,
    pub max_bad_commands: u32,
    pub peer: IpAddr,
    /// TLS already active (implicit TLS listener).
    pub tls_active: bool,
    /// The listener allows STARTTLS.
    pub starttls: bool,
    /// Prefix of message ids ("queued as"); unique per session.
    pub id_prefix: String,
    /// Message submission (RFC 6409) rather than relay or delivery.
    pub submission: Option<SubmissionParams>,
    /// Rejected recipients tolerated before the session is closed
    /// (`smtp.hard_error_limit`); 0: no limit (LMTP).
    pub hard_error_limit: u32,
    /// Bodies past this size go to disk; None: kept in memory.
    pub spool: Option<SpoolConfig>,
    /// The process-wide budget of message bytes in memory; None: no limit.
    pub budget: Option<Arc<Budget>>,
}

/// What the core needs to know on a submission listener.
#[derive(Debug, Clone, Default)]
pub struct SubmissionParams {
    /// The client is in a trusted network: it may submit without AUTH.
    pub trusted: bool,
    /// AUTH is allowed before TLS (loopback client or configured).
    pub plaintext_auth: bool,
    /// From: header addresses must belong to the authenticated user.
    pub check_from_header: bool,
    /// The Received field shows the client's address.
    pub received_shows_client: bool,
    /// Failed AUTH attempts before the connection is closed.
    pub max_auth_failures: u32,
}

/// The driver's answer to `Event::Authenticate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthVerdict {
    /// Logged in; the addresses the user may send as (lowercase).
    Ok {
        login: String,
        addresses: Vec<String>,
    },
    /// Wrong login or password (the driver has already waited).
    Failed,
    /// Too many failures from this address or for this login lately.
    Blocked,
    /// The directory could not answer.
    Temporary,
}

/// What the driver found out about a RCPT address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Deliver to these mailboxes (a list may expand to several).
    Accept(Vec<Target>),
    /// The domain is not ours and relaying is not allowed.
    RelayDenied,
    NoSuchUser,
    /// The account exists but is inactive.
    Disabled,
    /// An alias/forward reaches addresses outside our domains.
    OffSite,
    /// The directory could not answer.
    Temporary,
    /// No delivery back end in this process.
    Unavailable,
    /// LMTP: the user's mailHost names another store (RFC 3463 5.1.6).
    WrongStore,
    /// LMTP: the user is being moved between stores (451 4.2.1, retried).
    Moving,
    /// The envelope sender may not post to this list (mgrpAllowedBroadcaster,
    /// mgrpAllowedDomain): 550 5.7.1.
    NotAllowed,
    /// The list or the domain is inactive (inetMailGroupStatus,
    /// inetDomainStatus): 450 4.2.1, retried.
    Suspended,
    /// A hygiene check refused it (rate limit, greylisting): this reply.
    Refused(Reply),
}

/// A complete message to deliver.
#[derive(Debug)]
pub struct Message {
    pub id: String,
    /// Reverse path; empty for the null sender.
    pub sender: String,
    /// Unique mailboxes; `delivered` takes one outcome per target, same order.
    pub targets: Vec<Target>,
    /// Trace fields plus the body, CRLF line endings: empty until `load`
    /// has read the body (which may be spooled on disk) into memory.
    pub data: Arc<Vec<u8>>,
    /// Trace and completion fields we add in front of the body.
    head: Vec<u8>,
    /// The body as received; taken by `load`.
    body: Option<Body>,
    /// Bytes of the whole message.
    size: u64,
    /// RFC 3461 ENVID.
    pub envid: Option<String>,
    /// RFC 3461 RET=FULL.
    pub ret_full: bool,
    /// The authenticated login, if any.
    pub auth: Option<String>,
}

impl Message {
    /// Size of the whole message (trace fields included).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// What `data` is made of, for a reader that runs off the async
    /// threads (reading a spooled body back is blocking file I/O): the
    /// head, then `Body::into_bytes`. None once taken.
    pub fn take_parts(&mut self) -> Option<(Vec<u8>, Body)> {
        let body = self.body.take()?;
        Some((std::mem::take(&mut self.head), body))
    }

    /// Reads the whole message into `data`, blocking (tests).
    pub fn load(&mut self) -> std::io::Result<()> {
        if let Some((head, body)) = self.take_parts() {
            self.data = Arc::new(body.into_bytes(&head)?);
        }
        Ok(())
    }
}

/// What the driver does next. `Debug` hides the password.
pub enum Event {
    /// Write the output, then read and `feed` more bytes.
    NeedInput,
    /// Resolve this RCPT address, then call `resolved`.
    Resolve(String),
    /// Check this envelope sender ("" for `<>`; MAIL FROM was valid),
    /// then call `sender_checked`.
    CheckSender(String),
    /// Deliver, then call `delivered` with one outcome per target.
    Deliver(Box<Message>),
    /// Write the output, run the TLS handshake, then call `tls_started`.
    StartTls,
    /// Check these credentials, then call `auth_done`. Never log them.
    Authenticate { login: String, password: String },
    /// Write the output and close the connection.
    Close,
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::NeedInput => f.write_str("NeedInput"),
            Event::Resolve(a) => f.debug_tuple("Resolve").field(a).finish(),
            Event::CheckSender(a) => f.debug_tuple("CheckSender").field(a).finish(),
            Event::Deliver(m) => f.debug_tuple("Deliver").field(m).finish(),
            Event::StartTls => f.write_str("StartTls"),
            Event::Authenticate { login, .. } => f
                .debug_struct("Authenticate")
                .field("login", login)
                .field("password", &"<hidden>")
                .finish(),
            Event::Close => f.write_str("Close"),
        }
    }
}

#[derive(Debug)]
enum Phase {
    Command,
    Data(DataDecoder),
    /// Reading a BDAT chunk into the transaction's decoder.
    Bdat {
        last: bool,
    },
    /// Reading (and dropping) a refused BDAT chunk; then this reply.
    /// `chunk`: `None` when the command itself was wrong (no MAIL, no
    /// recipient: a bad command); `Some(last)` when the transaction's chunk
    /// is refused by the server (no memory for it): answered like a body
    /// (once per accepted recipient after LMTP's last chunk) and not
    /// counted as the client's error.
    Discard {
        left: u64,
        reply: Reply,
        chunk: Option<bool>,
    },
    /// Waiting for a SASL response line (after a 334).
    AuthResponse(AuthStep),
    AwaitSender,
    AwaitResolve,
    AwaitDelivery,
    AwaitTls,
    AwaitAuth,
    Closed,
}

#[derive(Debug, Clone)]
enum AuthStep {
    Plain,
    LoginUser,
    LoginPass { user: String },
}

/// An authenticated user.
#[derive(Debug, Clone)]
struct Authenticated {
    login: String,
    /// Addresses this user may send as, lowercase.
    addresses: Vec<String>,
}

#[derive(Debug)]
struct Helo {
    name: String,
    /// EHLO or LHLO (extended) rather than HELO.
    extended: bool,
}

#[derive(Debug)]
struct AcceptedRcpt {
    address: String,
    /// Indexes into `Transaction::targets`.
    targets: Vec<usize>,
}

#[derive(Debug, Default)]
struct Transaction {
    sender: String,
    smtputf8: bool,
    binary: bool,
    rcpts: Vec<AcceptedRcpt>,
    /// RCPT commands answered so far (accepted or not).
    rcpt_attempts: usize,
    /// Unique targets across recipients.
    targets: Vec<Target>,
    /// The address being resolved.
    pending_rcpt: Option<String>,
    /// Set by the first BDAT.
    bdat: Option<BdatDecoder>,
    /// A chunk of this transaction was refused (no memory for it): every
    /// later chunk is read and refused the same way until the last one or
    /// RSET (RFC 3030 2), so no message is ever built without it.
    bdat_refused: Option<Reply>,
    /// Message id, set when the body is complete.
    id: String,
    /// Budget taken for the body while it is received.
    body_lease: Option<Lease>,
    /// RFC 3461 ENVID and RET=FULL.
    envid: Option<String>,
    ret_full: bool,
    /// The pending RCPT's DSN parameters.
    pending_dsn: (Option<Notify>, Option<String>),
    /// The pending RCPT's delivery id (LMTP `XMSGD-DELIVERY-ID`).
    pending_id: Option<String>,
}

pub struct Session {
    p: Params,
    /// Bytes received and not yet interpreted, from `pos`.
    input: Vec<u8>,
    pos: usize,
    out: Vec<u8>,
    lines: LineReader,
    phase: Phase,
    helo: Option<Helo>,
    tls: bool,
    txn: Option<Transaction>,
    /// Refused at connect (a blocklist): only QUIT is served, other
    /// commands get 503 (RFC 5321 3.1).
    refused: bool,
    /// Bad commands so far (syntax, sequence, unknown, too long).
    bad: u32,
    /// A command line has been seen (HTTP detection on the first one).
    seen_command: bool,
    /// Messages handed to delivery (for ids and the session summary).
    pub messages: u32,
    auth: Option<Authenticated>,
    /// Failed AUTH attempts on this connection.
    pub auth_failures: u32,
    /// Recipients refused with 5xx since the last delivered message
    /// (`Params::hard_error_limit`).
    rcpt_errors: u32,
    /// Complete commands and bodies so far: the driver restarts its
    /// per-command deadline when this changes.
    pub progress: u64,
}

impl Session {
    pub fn new(p: Params) -> Session {
        Session {
            lines: LineReader::new(p.max_line),
            tls: p.tls_active,
            p,
            input: Vec::new(),
            pos: 0,
            out: Vec::new(),
            phase: Phase::Command,
            helo: None,
            txn: None,
            bad: 0,
            seen_command: false,
            refused: false,
            messages: 0,
            auth: None,
            auth_failures: 0,
            rcpt_errors: 0,
            progress: 0,
        }
    }

    /// The client has said EHLO/HELO/LHLO and, on a submission listener,
    /// authenticated (or is trusted): the short pre-authentication
    /// deadline no longer applies.
    /// SMTP or LMTP.
    pub fn flavor(&self) -> Flavor {
        self.p.flavor
    }

    /// The EHLO/HELO/LHLO name the client gave ("" before one).
    pub fn helo_name(&self) -> &str {
        self.helo.as_ref().map_or("", |h| h.name.as_str())
    }

    pub fn past_preauth(&self) -> bool {
        self.helo.is_some()
            && self
                .p
                .submission
                .as_ref()
                .is_none_or(|s| s.trusted || self.auth.is_some())
    }

    /// Budget for receiving one body: what it may hold in memory.
    fn take_body_lease(&self) -> Result<Option<Lease>, ()> {
        let Some(budget) = &self.p.budget else {
            return Ok(None);
        };
        let in_memory = match &self.p.spool {
            Some(s) => (s.threshold as u64).min(self.p.max_message_size),
            None => self.p.max_message_size,
        };
        budget
            .try_take(in_memory)
            .map(Some)
            .ok_or_else(|| crate::metrics::limit_hit("budget"))
    }

    /// Queues the greeting (RFC 5321 4.3.1 / RFC 2033 4.1).
    pub fn greet(&mut self) {
        let kind = match self.p.flavor {
            Flavor::Smtp => "ESMTP",
            Flavor::Lmtp => "LMTP",
        };
        let line = format!("220 {} {kind} msgd\r\n", self.p.hostname);
        self.out.extend_from_slice(line.as_bytes());
    }

    /// Instead of `greet`: a 554 greeting naming why (RFC 5321 3.1); the
    /// session then answers QUIT and refuses everything else with 503.
    pub fn refuse_connection(&mut self, greeting: &Reply) {
        self.refused = true;
        greeting.write(&mut self.out);
    }

    /// Adds received bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        if matches!(self.phase, Phase::Closed) {
            return;
        }
        if self.pos == self.input.len() {
            self.input.clear();
            self.pos = 0;
        } else if self.pos > 64 * 1024 {
            self.input.drain(..self.pos);
            self.pos = 0;
        }
        self.input.extend_from_slice(bytes);
    }

    /// Replies written since the last call.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Inside a mail transaction (MAIL given, not yet finished or reset):
    /// shutdown waits for its end.
    /// The envelope sender of the transaction in progress ("" for `<>`).
    pub fn sender(&self) -> Option<&str> {
        self.txn.as_ref().map(|t| t.sender.as_str())
    }

    pub fn in_transaction(&self) -> bool {
        self.txn.is_some() || !matches!(self.phase, Phase::Command | Phase::Closed)
    }

    /// Receiving a message body (the driver uses the DATA timeout).
    pub fn receiving_body(&self) -> bool {
        matches!(
            self.phase,
            Phase::Data(_) | Phase::Bdat { .. } | Phase::Discard { .. }
        )
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// The client was silent too long.
    pub fn timeout(&mut self) {
        self.close_with(&reply::TIMEOUT);
    }

    /// The server is shutting down (called between transactions).
    pub fn shutdown(&mut self) {
        self.close_with(&reply::SHUTTING_DOWN);
    }

    fn close_with(&mut self, r: &Reply) {
        if !self.is_closed() {
            r.write(&mut self.out);
            self.phase = Phase::Closed;
        }
    }

    fn reply(&mut self, r: &Reply) {
        r.write(&mut self.out);
    }

    /// Answers a bad command; too many close the session.
    fn bad(&mut self, r: &Reply) {
        self.reply(r);
        self.bad += 1;
        if self.bad > self.p.max_bad_commands {
            self.close_with(&reply::TOO_MANY_ERRORS);
        }
    }

    /// Interprets buffered input until the driver has something to do.
    pub fn next_event(&mut self) -> Event {
        loop {
            match &mut self.phase {
                Phase::Closed => return Event::Close,
                Phase::AwaitSender
                | Phase::AwaitResolve
                | Phase::AwaitDelivery
                | Phase::AwaitTls
                | Phase::AwaitAuth => {
                    // The driver must answer the outstanding effect first.
                    tracing::error!("smtp session polled while an effect is outstanding");
                    self.close_with(&reply::LOCAL_ERROR);
                    return Event::Close;
                }
                Phase::Command => {
                    let avail = &self.input[self.pos..];
                    if avail.is_empty() {
                        return Event::NeedInput;
                    }
                    let (n, line) = self.lines.next_line(avail);
                    self.pos += n;
                    match line {
                        None => return Event::NeedInput,
                        Some(Line::TooLong) => {
                            self.seen_command = true;
                            self.bad(&reply::LINE_TOO_LONG);
                        }
                        Some(Line::Complete(line)) => {
                            self.progress += 1;
                            if let Some(ev) = self.command(&line) {
                                return ev;
                            }
                        }
                    }
                }
                Phase::AuthResponse(_) => {
                    let avail = &self.input[self.pos..];
                    if avail.is_empty() {
                        return Event::NeedInput;
                    }
                    let (n, line) = self.lines.next_line(avail);
                    self.pos += n;
                    match line {
                        None => return Event::NeedInput,
                        Some(Line::TooLong) => {
                            self.phase = Phase::Command;
                            self.bad(&reply::LINE_TOO_LONG);
                        }
                        Some(Line::Complete(line)) => {
                            self.progress += 1;
                            if let Some(ev) = self.auth_response(&line) {
                                return ev;
                            }
                        }
                    }
                }
                Phase::Data(dec) => {
                    let avail = &self.input[self.pos..];
                    if avail.is_empty() {
                        return Event::NeedInput;
                    }
                    let (n, done) = dec.feed(avail);
                    self.pos += n;
                    if done {
                        self.progress += 1;
                        let Phase::Data(dec) = std::mem::replace(&mut self.phase, Phase::Command)
                        else {
                            unreachable!("phase checked above")
                        };
                        if let Some(ev) = self.body_complete(dec.body) {
                            return ev;
                        }
                    }
                }
                Phase::Discard { left, .. } => {
                    if *left > 0 {
                        let avail = &self.input[self.pos..];
                        if avail.is_empty() {
                            return Event::NeedInput;
                        }
                        let n = avail
                            .len()
                            .min(usize::try_from(*left).unwrap_or(usize::MAX));
                        *left -= n as u64;
                        self.pos += n;
                    }
                    if let Phase::Discard { left: 0, .. } = self.phase {
                        self.progress += 1;
                        let Phase::Discard { reply, chunk, .. } =
                            std::mem::replace(&mut self.phase, Phase::Command)
                        else {
                            unreachable!("phase checked above")
                        };
                        match chunk {
                            None => self.bad(&reply),
                            Some(false) => self.reply(&reply),
                            Some(true) => self.refuse_body(&reply),
                        }
                    }
                }
                Phase::Bdat { last } => {
                    let last = *last;
                    let Some(dec) = self.txn.as_mut().and_then(|t| t.bdat.as_mut()) else {
                        self.phase = Phase::Command;
                        continue;
                    };
                    if !dec.chunk_done() {
                        let avail = &self.input[self.pos..];
                        if avail.is_empty() {
                            return Event::NeedInput;
                        }
                        self.pos += dec.feed(avail);
                        continue;
                    }
                    self.phase = Phase::Command;
                    self.progress += 1;
                    if let Some(ev) = self.chunk_complete(last) {
                        return ev;
                    }
                }
            }
        }
    }

    fn command(&mut self, line: &[u8]) -> Option<Event> {
        let first = !self.seen_command;
        self.seen_command = true;
        if first && looks_like_http(line) {
            self.close_with(&reply::NOT_HTTP);
            return Some(Event::Close);
        }
        // LMTP: an msgd mta-in's delivery id (duplicate delivery
        // suppression) is taken out of RCPT before smtp-proto, which
        // refuses parameters it does not know.
        let (stripped, delivery_id) = match self.p.flavor {
            Flavor::Lmtp => match take_delivery_id(line) {
                Ok(v) => v,
                Err(BadDeliveryId) => {
                    self.bad(&reply::SYNTAX_PARAMS);
                    return self.is_closed().then_some(Event::Close);
                }
            },
            Flavor::Smtp => (None, None),
        };
        let line = stripped.as_deref().unwrap_or(line);
        let req = match Request::parse(&mut line.iter()) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "bad command");
                self.bad(&parse_error_reply(&e));
                return None;
            }
        };
        tracing::debug!(command = req.name(), "command");
        let lmtp = self.p.flavor == Flavor::Lmtp;
        if self.refused && !matches!(req, Request::Quit) {
            self.bad(&reply::REFUSED_AT_CONNECT);
            return self.is_closed().then_some(Event::Close);
        }
        match req {
            Request::Ehlo { .. } | Request::Helo { .. } if lmtp => self.bad(&reply::HELO_IN_LMTP),
            Request::Lhlo { .. } if !lmtp => self.bad(&reply::LHLO_IN_SMTP),
            Request::Ehlo { host } | Request::Lhlo { host } => self.hello(&host, true),
            Request::Helo { host } => self.hello(&host, false),
            Request::Mail { from } => return self.mail(from, line),
            Request::Rcpt { to } => return self.rcpt(to, line, delivery_id),
            Request::Data => self.data(),
            Request::Bdat {
                chunk_size,
                is_last,
            } => self.bdat(chunk_size as u64, is_last),
            Request::Rset => {
                self.txn = None;
                self.reply(&reply::RESET_OK);
            }
            Request::Noop { .. } => self.reply(&reply::OK),
            Request::Quit => {
                self.close_with(&reply::BYE);
            }
            Request::Help { .. } => self.reply(&reply::HELP),
            Request::Vrfy { .. } => self.reply(&reply::CANNOT_VRFY),
            Request::Expn { .. } => self.reply(&reply::NO_EXPN),
            Request::StartTls => return self.starttls(),
            Request::Auth {
                mechanism,
                initial_response,
            } if self.p.submission.is_some() => return self.auth(mechanism, &initial_response),
            Request::Auth { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. } => self.bad(&reply::NOT_IMPLEMENTED),
        }
        if self.is_closed() {
            return Some(Event::Close);
        }
        None
    }

    fn hello(&mut self, host: &str, extended: bool) {
        // RFC 5321 4.1.4: EHLO/HELO resets any transaction.
        self.txn = None;
        self.helo = Some(Helo {
            name: host.to_string(),
            extended,
        });
        if !extended {
            let line = format!("250 {}\r\n", self.p.hostname);
            self.out.extend_from_slice(line.as_bytes());
            return;
        }
        let mut lines = vec![
            self.p.hostname.clone(),
            "PIPELINING".to_string(),
            format!("SIZE {}", self.p.max_message_size),
            "8BITMIME".to_string(),
            "BINARYMIME".to_string(),
            "CHUNKING".to_string(),
            "ENHANCEDSTATUSCODES".to_string(),
            "SMTPUTF8".to_string(),
        ];
        if self.p.flavor == Flavor::Lmtp {
            // The LMTP listener serves only `store.lmtp_networks` (and the
            // unix socket): the MTAs of this site.
            lines.push(DELIVERY_ID_EXT.to_string());
        }
        if self.p.starttls && !self.tls {
            lines.push("STARTTLS".to_string());
        }
        if let Some(sub) = &self.p.submission {
            lines.push("DSN".to_string());
            // RFC 4954 4: plaintext mechanisms only where they are safe.
            if self.auth.is_none() && (self.tls || sub.plaintext_auth) {
                lines.push("AUTH PLAIN LOGIN".to_string());
            }
        }
        reply::write_multiline(&mut self.out, 250, &lines);
    }

    fn need_helo(&mut self) -> bool {
        if self.helo.is_some() {
            return false;
        }
        let r = match self.p.flavor {
            Flavor::Smtp => reply::SEND_HELO_FIRST,
            Flavor::Lmtp => reply::SEND_LHLO_FIRST,
        };
        self.bad(&r);
        true
    }

    fn mail(&mut self, from: MailFrom<std::borrow::Cow<'_, str>>, line: &[u8]) -> Option<Event> {
        let closed = |s: &Session| s.is_closed().then_some(Event::Close);
        if self.need_helo() {
            return closed(self);
        }
        if self.txn.is_some() {
            self.bad(&reply::NESTED_MAIL);
            return closed(self);
        }
        // smtp-proto turns `<Postmaster>` into "" like `<>`; as a reverse
        // path it is not valid (no domain).
        if from.address.is_empty() && contains_ci(line, b"<postmaster>") {
            self.bad(&reply::BAD_SENDER);
            return closed(self);
        }
        let submission = self.p.submission.is_some();
        if let Some(sub) = &self.p.submission {
            if self.auth.is_none() && !sub.trusted {
                // RFC 6409 4.3 / RFC 4954 6.
                self.reply(&reply::AUTH_REQUIRED);
                return closed(self);
            }
        }
        const SUPPORTED: u64 = smtp_proto::MAIL_BODY_7BIT
            | smtp_proto::MAIL_BODY_8BITMIME
            | smtp_proto::MAIL_BODY_BINARYMIME
            | smtp_proto::MAIL_SMTPUTF8;
        // Submission announces DSN (RFC 3461) and AUTH (RFC 4954 5).
        let dsn_flags = if submission {
            smtp_proto::MAIL_RET_FULL | smtp_proto::MAIL_RET_HDRS
        } else {
            0
        };
        let unsupported = from.flags & !(SUPPORTED | dsn_flags) != 0
            || from.trans_id.is_some()
            || from.by != 0
            || (from.env_id.is_some() && !submission)
            || from.solicit.is_some()
            || from.mtrk.is_some()
            || (from.auth.is_some() && !submission)
            || from.hold_for != 0
            || from.hold_until != 0
            || from.mt_priority != 0;
        if unsupported {
            // Parameters of extensions we do not announce (RFC 5321 4.1.1.11).
            self.bad(&reply::UNSUPPORTED_PARAM);
            return closed(self);
        }
        let smtputf8 = from.flags & smtp_proto::MAIL_SMTPUTF8 != 0;
        if !smtputf8 && !from.address.is_ascii() {
            self.reply(&reply::NEEDS_UTF8);
            return closed(self);
        }
        if from.size as u64 > self.p.max_message_size {
            // RFC 1870 6.1.
            self.reply(&reply::MESSAGE_TOO_BIG);
            return closed(self);
        }
        if self.take_body_lease().is_err() {
            // The process holds as much message data as it may: come back
            // later (checked again at DATA/BDAT).
            self.reply(&reply::INSUFFICIENT_RESOURCES);
            return closed(self);
        }
        if let Some(a) = &self.auth {
            // An authenticated user sends only as one of their addresses
            // (the null sender stays possible: MDNs, vacation replies).
            let sender = from.address.to_lowercase();
            if !sender.is_empty() && !a.addresses.contains(&sender) {
                tracing::info!(login = %a.login, sender = %trace::sanitize(&sender, 320), "sender address not owned by the user");
                self.reply(&reply::SENDER_NOT_OWNED);
                return closed(self);
            }
        }
        let envid = from
            .env_id
            .as_deref()
            .filter(|e| e.len() <= 100 && e.chars().all(|c| c == ' ' || c.is_ascii_graphic()))
            .map(str::to_string);
        let sender = from.address.into_owned();
        self.txn = Some(Transaction {
            sender: sender.clone(),
            smtputf8,
            binary: from.flags & smtp_proto::MAIL_BODY_BINARYMIME != 0,
            envid,
            ret_full: from.flags & smtp_proto::MAIL_RET_FULL != 0,
            ..Transaction::default()
        });
        self.phase = Phase::AwaitSender;
        Some(Event::CheckSender(sender))
    }

    /// The driver's answer to `Event::CheckSender`: `None` accepts the
    /// sender, a reply refuses it (the transaction is not opened).
    pub fn sender_checked(&mut self, refusal: Option<Reply>) {
        if !matches!(self.phase, Phase::AwaitSender) {
            return;
        }
        self.phase = Phase::Command;
        match refusal {
            None => self.reply(&reply::SENDER_OK),
            Some(r) => {
                self.txn = None;
                self.reply(&r);
            }
        }
    }

    fn rcpt(
        &mut self,
        to: RcptTo<std::borrow::Cow<'_, str>>,
        line: &[u8],
        delivery_id: Option<String>,
    ) -> Option<Event> {
        if self.need_helo() {
            return self.is_closed().then_some(Event::Close);
        }
        let Some(txn) = self.txn.as_ref() else {
            self.bad(&reply::NEED_MAIL);
            return self.is_closed().then_some(Event::Close);
        };
        const NOTIFY: u64 = smtp_proto::RCPT_NOTIFY_SUCCESS
            | smtp_proto::RCPT_NOTIFY_FAILURE
            | smtp_proto::RCPT_NOTIFY_DELAY
            | smtp_proto::RCPT_NOTIFY_NEVER;
        let dsn_ok = self.p.submission.is_some();
        if (to.flags & !NOTIFY != 0)
            || (to.flags != 0 && !dsn_ok)
            || (to.orcpt.is_some() && !dsn_ok)
            || to.rrvs != 0
        {
            // DSN only where announced; RRVS never.
            self.bad(&reply::UNSUPPORTED_PARAM);
            return self.is_closed().then_some(Event::Close);
        }
        if to.flags & smtp_proto::RCPT_NOTIFY_NEVER != 0
            && to.flags & !smtp_proto::RCPT_NOTIFY_NEVER != 0
        {
            // RFC 3461 4.1: NEVER stands alone.
            self.bad(&reply::SYNTAX_PARAMS);
            return self.is_closed().then_some(Event::Close);
        }
        let notify = (to.flags != 0).then_some(Notify {
            success: to.flags & smtp_proto::RCPT_NOTIFY_SUCCESS != 0,
            failure: to.flags & smtp_proto::RCPT_NOTIFY_FAILURE != 0,
            delay: to.flags & smtp_proto::RCPT_NOTIFY_DELAY != 0,
        });
        let orcpt = to
            .orcpt
            .as_deref()
            .filter(|o| o.len() <= 500)
            .map(|o| format!("rfc822;{}", trace::sanitize(o, 500)));
        let address = if to.address.is_empty() {
            if contains_ci(line, b"<postmaster>") {
                // RFC 5321 4.5.1: <Postmaster> without a domain must work.
                format!("postmaster@{}", self.p.postmaster_domain)
            } else {
                self.bad(&reply::BAD_RCPT);
                return self.is_closed().then_some(Event::Close);
            }
        } else {
            to.address.into_owned()
        };
        if !txn.smtputf8 && !address.is_ascii() {
            self.reply(&reply::NEEDS_UTF8);
            return None;
        }
        if txn.rcpts.len() >= self.p.max_recipients {
            self.reply(&reply::TOO_MANY_RCPTS);
            return None;
        }
        if let Some(txn) = self.txn.as_mut() {
            txn.pending_rcpt = Some(address.clone());
            txn.pending_dsn = (notify, orcpt);
            txn.pending_id = delivery_id;
        }
        self.phase = Phase::AwaitResolve;
        Some(Event::Resolve(address))
    }

    /// The driver's answer to `Event::Resolve`.
    pub fn resolved(&mut self, verdict: Verdict) {
        if !matches!(self.phase, Phase::AwaitResolve) {
            return;
        }
        self.phase = Phase::Command;
        let Some(txn) = self.txn.as_mut() else {
            return;
        };
        txn.rcpt_attempts += 1;
        let address = txn.pending_rcpt.take().unwrap_or_default();
        let (notify, orcpt) = std::mem::take(&mut txn.pending_dsn);
        let delivery_id = txn.pending_id.take();
        let r = match verdict {
            Verdict::Accept(targets) if !targets.is_empty() => {
                let mut idx = Vec::with_capacity(targets.len());
                for mut t in targets {
                    match txn.targets.iter().position(|x| x.address == t.address) {
                        Some(i) => idx.push(i),
                        None => {
                            idx.push(txn.targets.len());
                            t.notify = notify;
                            t.orcpt = orcpt.clone();
                            t.delivery_id = delivery_id.clone();
                            txn.targets.push(t);
                        }
                    }
                }
                txn.rcpts.push(AcceptedRcpt {
                    address,
                    targets: idx,
                });
                reply::RCPT_OK
            }
            Verdict::Accept(_) | Verdict::NoSuchUser => reply::NO_SUCH_USER,
            Verdict::RelayDenied => reply::RELAY_DENIED,
            Verdict::Disabled => reply::DISABLED,
            Verdict::OffSite => reply::OFFSITE,
            Verdict::Temporary => reply::DIR_TEMPFAIL,
            Verdict::Unavailable => reply::NO_DELIVERY,
            Verdict::WrongStore => reply::WRONG_STORE,
            Verdict::Moving => reply::MAILBOX_MOVING,
            Verdict::NotAllowed => reply::NOT_ALLOWED_TO_POST,
            Verdict::Suspended => reply::SUSPENDED,
            Verdict::Refused(r) => r,
        };
        self.reply(&r);
        if r.code >= 500 && self.p.hard_error_limit > 0 {
            // A client guessing addresses (Postfix's smtpd_hard_error_limit).
            self.rcpt_errors += 1;
            if self.rcpt_errors >= self.p.hard_error_limit {
                tracing::info!(errors = self.rcpt_errors, "too many rejected recipients");
                self.close_with(&reply::TOO_MANY_ERRORS);
            }
        }
    }

    /// Checks that a body may follow; the refusal if not.
    fn body_refusal(&self) -> Option<Reply> {
        if self.helo.is_none() {
            return Some(match self.p.flavor {
                Flavor::Smtp => reply::SEND_HELO_FIRST,
                Flavor::Lmtp => reply::SEND_LHLO_FIRST,
            });
        }
        let Some(txn) = self.txn.as_ref() else {
            return Some(reply::NEED_MAIL);
        };
        if txn.rcpts.is_empty() {
            return Some(if txn.rcpt_attempts > 0 {
                reply::NO_VALID_RCPTS
            } else {
                reply::NEED_RCPT
            });
        }
        None
    }

    fn data(&mut self) {
        if let Some(r) = self.body_refusal() {
            self.bad(&r);
            return;
        }
        let Some(txn) = self.txn.as_ref() else {
            return;
        };
        if txn.bdat.is_some() {
            self.bad(&reply::DATA_AFTER_BDAT);
            return;
        }
        if txn.binary {
            // RFC 3030 3: BINARYMIME bodies travel only with BDAT.
            self.bad(&reply::BINARY_NEEDS_BDAT);
            return;
        }
        let Ok(lease) = self.take_body_lease() else {
            self.reply(&reply::INSUFFICIENT_RESOURCES);
            return;
        };
        if let Some(txn) = self.txn.as_mut() {
            txn.body_lease = lease;
        }
        self.reply(&reply::START_DATA);
        let mut dec = DataDecoder::new(self.p.max_message_size);
        dec.body.set_spool(self.p.spool.clone());
        self.phase = Phase::Data(dec);
    }

    fn bdat(&mut self, size: u64, last: bool) {
        if let Some(r) = self.body_refusal() {
            // The chunk follows anyway: read it, then refuse (RFC 3030 2).
            self.phase = Phase::Discard {
                left: size,
                reply: r,
                chunk: None,
            };
            return;
        }
        if let Some(r) = self.txn.as_ref().and_then(|t| t.bdat_refused.clone()) {
            self.phase = Phase::Discard {
                left: size,
                reply: r,
                chunk: Some(last),
            };
            return;
        }
        let max = self.p.max_message_size;
        let first = self.txn.as_ref().is_some_and(|t| t.bdat.is_none());
        let lease = if first {
            match self.take_body_lease() {
                Ok(l) => l,
                Err(()) => {
                    if let Some(t) = self.txn.as_mut() {
                        t.bdat_refused = Some(reply::INSUFFICIENT_RESOURCES);
                    }
                    self.phase = Phase::Discard {
                        left: size,
                        reply: reply::INSUFFICIENT_RESOURCES,
                        chunk: Some(last),
                    };
                    return;
                }
            }
        } else {
            None
        };
        let spool = self.p.spool.clone();
        let Some(txn) = self.txn.as_mut() else {
            return;
        };
        if first {
            txn.body_lease = lease;
        }
        let binary = txn.binary;
        txn.bdat
            .get_or_insert_with(|| {
                let mut d = BdatDecoder::new(max, binary);
                d.body.set_spool(spool);
                d
            })
            .start_chunk(size);
        self.phase = Phase::Bdat { last };
    }

    fn chunk_complete(&mut self, last: bool) -> Option<Event> {
        let dec = self.txn.as_mut().and_then(|t| t.bdat.as_mut())?;
        if !last {
            if dec.body.over_limit() {
                // Answered per chunk until LAST or RSET (RFC 3030 4.2).
                self.reply(&reply::MESSAGE_TOO_BIG);
            } else {
                let r = Reply::owned(250, "2.0.0", format!("{} octets received", dec.body.size));
                self.reply(&r);
            }
            return None;
        }
        dec.finish();
        let body = std::mem::take(&mut dec.body);
        self.body_complete(body)
    }

    /// The whole body is in: refuse it (size) or hand it to delivery.
    fn body_complete(&mut self, mut body: Body) -> Option<Event> {
        // The in-memory budget of reception is given back; delivery takes
        // its own for the whole message.
        if let Some(t) = self.txn.as_mut() {
            t.body_lease = None;
        }
        let refusal = if body.over_limit() {
            Some(reply::MESSAGE_TOO_BIG)
        } else if let Some(e) = body.spool_error.take() {
            tracing::error!(error = %e, "cannot spool the message body");
            Some(reply::LOCAL_ERROR)
        } else {
            self.submission_refusal(&body)
        };
        if let Some(r) = refusal {
            self.refuse_body(&r);
            return None;
        }
        let msg = self.build_message(body)?;
        self.phase = Phase::AwaitDelivery;
        Some(Event::Deliver(Box::new(msg)))
    }

    /// Refuses the transaction's complete body: one reply per accepted
    /// recipient in LMTP (RFC 2033 4.2), one in SMTP; the transaction ends.
    fn refuse_body(&mut self, r: &Reply) {
        for _ in 0..self.reply_count() {
            self.reply(r);
        }
        self.txn = None;
    }

    /// Submission's checks of the header section (RFC 6409 8, RFC 5322
    /// 3.6): one From: and at most one Sender:, and with
    /// `check_from_header` every address in them owned by the user.
    fn submission_refusal(&self, body: &Body) -> Option<Reply> {
        let sub = self.p.submission.as_ref()?;
        // The header section must be in memory whole, or a field past the
        // spool threshold would escape the checks.
        if body.is_spooled() && trace::header_section_len(&body.data).is_none() {
            tracing::info!("submitted header section larger than the spool threshold");
            return Some(reply::HEADER_TOO_LARGE);
        }
        let addresses = match trace::originators(&body.data) {
            trace::Originators::Addresses(a) => a,
            trace::Originators::Duplicate => {
                tracing::info!(login = ?self.login(), "more than one From: or Sender: field");
                return Some(reply::DUPLICATE_ORIGINATOR);
            }
            trace::Originators::Unreadable => {
                if !sub.check_from_header || self.auth.is_none() {
                    return None;
                }
                tracing::info!(login = ?self.login(), "unreadable From: or Sender: field");
                return Some(reply::FROM_NOT_OWNED);
            }
        };
        let a = self.auth.as_ref()?;
        if !sub.check_from_header {
            return None;
        }
        let foreign = addresses
            .into_iter()
            .find(|f| !a.addresses.iter().any(|x| x == f))?;
        tracing::info!(login = %a.login, from = %trace::sanitize(&foreign, 320), "From:/Sender: address not owned by the user");
        Some(reply::FROM_NOT_OWNED)
    }

    /// Replies owed at the end of DATA: one (SMTP) or one per accepted
    /// recipient (LMTP, RFC 2033 4.2).
    fn reply_count(&self) -> usize {
        match self.p.flavor {
            Flavor::Smtp => 1,
            Flavor::Lmtp => self.txn.as_ref().map_or(1, |t| t.rcpts.len().max(1)),
        }
    }

    fn build_message(&mut self, body: Body) -> Option<Message> {
        self.messages += 1;
        let id = format!("{}{}", self.p.id_prefix, self.messages);
        let txn = self.txn.as_mut()?;
        txn.id = id.clone();
        let txn = &*txn;
        let helo = self.helo.as_ref();
        let mut data = Vec::with_capacity(512);
        // Return-Path is final delivery's business (deliver::local), not
        // the receiving server's: a relaying mta-in must not add one.
        let with = trace::protocol_name(
            self.p.flavor == Flavor::Lmtp,
            helo.is_some_and(|h| h.extended),
            self.tls,
            self.auth.is_some(),
            txn.smtputf8,
        );
        let date = trace::now_rfc5322();
        let show_peer = self
            .p
            .submission
            .as_ref()
            .is_none_or(|s| s.received_shows_client);
        let received = trace::Received {
            helo: helo.map_or("unknown", |h| h.name.as_str()),
            peer: show_peer.then_some(self.p.peer),
            hostname: &self.p.hostname,
            with,
            id: &id,
            for_rcpt: match txn.rcpts.as_slice() {
                [one] => Some(one.address.as_str()),
                _ => None,
            },
            date: &date,
        };
        data.extend_from_slice(received.render().as_bytes());
        if self.p.submission.is_some() {
            // RFC 6409 8.2, 8.3: complete what the client left out.
            if !trace::has_field(&body.data, "date") {
                data.extend_from_slice(format!("Date: {date}\r\n").as_bytes());
            }
            if !trace::has_field(&body.data, "message-id") {
                data.extend_from_slice(
                    format!(
                        "Message-ID: <{id}@{}>\r\n",
                        trace::sanitize(&self.p.hostname, 255)
                    )
                    .as_bytes(),
                );
            }
        }
        Some(Message {
            id,
            sender: txn.sender.clone(),
            targets: txn.targets.clone(),
            data: Arc::new(Vec::new()),
            size: data.len() as u64 + body.size,
            head: data,
            body: Some(body),
            envid: txn.envid.clone(),
            ret_full: txn.ret_full,
            auth: self.auth.as_ref().map(|a| a.login.clone()),
        })
    }

    /// The driver's answer to `Event::Deliver`: one outcome per target.
    pub fn delivered(&mut self, outcomes: &[Outcome]) {
        if !matches!(self.phase, Phase::AwaitDelivery) {
            return;
        }
        self.phase = Phase::Command;
        let Some(txn) = self.txn.take() else {
            return;
        };
        let outcome_of = |i: usize| {
            outcomes
                .get(i)
                .cloned()
                .unwrap_or(Outcome::Temporary(String::new()))
        };
        match self.p.flavor {
            Flavor::Smtp => {
                // All or nothing: one reply covers every recipient. A
                // temporary failure makes the client retry all of them,
                // so recipients already delivered may get a duplicate.
                let worst = (0..txn.targets.len())
                    .map(outcome_of)
                    .max_by_key(severity)
                    .unwrap_or(Outcome::Temporary(String::new()));
                let r = match worst {
                    o if o.accepted() => {
                        self.rcpt_errors = 0;
                        Reply::owned(250, "2.0.0", format!("Ok: queued as {}", txn.id))
                    }
                    other => outcome_reply(other),
                };
                self.reply(&r);
            }
            Flavor::Lmtp => {
                for rcpt in &txn.rcpts {
                    let worst = rcpt
                        .targets
                        .iter()
                        .map(|&i| outcome_of(i))
                        .max_by_key(severity)
                        .unwrap_or(Outcome::Temporary(String::new()));
                    let r = outcome_reply(worst);
                    self.reply(&r);
                }
            }
        }
    }

    /// `AUTH mechanism [initial-response]` (RFC 4954 4).
    fn auth(&mut self, mechanism: u64, initial: &str) -> Option<Event> {
        let Some(sub) = self.p.submission.clone() else {
            self.bad(&reply::NOT_IMPLEMENTED);
            return self.is_closed().then_some(Event::Close);
        };
        if self.need_helo() {
            return self.is_closed().then_some(Event::Close);
        }
        if self.auth.is_some() {
            self.bad(&reply::ALREADY_AUTHENTICATED);
            return self.is_closed().then_some(Event::Close);
        }
        if self.txn.is_some() {
            self.bad(&reply::AUTH_IN_TRANSACTION);
            return self.is_closed().then_some(Event::Close);
        }
        if !self.tls && !sub.plaintext_auth {
            self.reply(&reply::MUST_STARTTLS);
            return None;
        }
        let initial = (!initial.is_empty()).then_some(initial);
        match mechanism {
            smtp_proto::AUTH_PLAIN => match initial {
                Some(ir) => return self.auth_response_plain(ir),
                None => {
                    self.reply(&reply::AUTH_CONTINUE_EMPTY);
                    self.phase = Phase::AuthResponse(AuthStep::Plain);
                }
            },
            smtp_proto::AUTH_LOGIN => match initial {
                Some(ir) => {
                    self.phase = Phase::AuthResponse(AuthStep::LoginUser);
                    return self.auth_response(ir.as_bytes());
                }
                None => {
                    self.reply(&reply::AUTH_USERNAME);
                    self.phase = Phase::AuthResponse(AuthStep::LoginUser);
                }
            },
            _ => self.bad(&reply::AUTH_MECHANISM),
        }
        self.is_closed().then_some(Event::Close)
    }

    fn auth_response_plain(&mut self, line: &str) -> Option<Event> {
        self.phase = Phase::Command;
        if line.trim() == "*" {
            self.bad(&reply::AUTH_CANCELLED);
            return self.is_closed().then_some(Event::Close);
        }
        let creds = auth::decode_b64(line).and_then(|raw| auth::parse_plain(&raw));
        match creds {
            Some((login, password)) => {
                self.phase = Phase::AwaitAuth;
                Some(Event::Authenticate { login, password })
            }
            None => {
                self.bad(&reply::AUTH_BAD_RESPONSE);
                self.is_closed().then_some(Event::Close)
            }
        }
    }

    /// A line answering a 334 challenge.
    fn auth_response(&mut self, line: &[u8]) -> Option<Event> {
        let Phase::AuthResponse(step) = std::mem::replace(&mut self.phase, Phase::Command) else {
            return None;
        };
        let Ok(text) = std::str::from_utf8(line) else {
            self.bad(&reply::AUTH_BAD_RESPONSE);
            return self.is_closed().then_some(Event::Close);
        };
        if text.trim() == "*" {
            self.bad(&reply::AUTH_CANCELLED);
            return self.is_closed().then_some(Event::Close);
        }
        match step {
            AuthStep::Plain => self.auth_response_plain(text),
            AuthStep::LoginUser => {
                match auth::decode_b64(text).and_then(|u| String::from_utf8(u).ok()) {
                    Some(user) if !user.is_empty() => {
                        self.reply(&reply::AUTH_PASSWORD);
                        self.phase = Phase::AuthResponse(AuthStep::LoginPass { user });
                        None
                    }
                    _ => {
                        self.bad(&reply::AUTH_BAD_RESPONSE);
                        self.is_closed().then_some(Event::Close)
                    }
                }
            }
            AuthStep::LoginPass { user } => {
                match auth::decode_b64(text).and_then(|p| String::from_utf8(p).ok()) {
                    Some(password) => {
                        self.phase = Phase::AwaitAuth;
                        Some(Event::Authenticate {
                            login: user,
                            password,
                        })
                    }
                    None => {
                        self.bad(&reply::AUTH_BAD_RESPONSE);
                        self.is_closed().then_some(Event::Close)
                    }
                }
            }
        }
    }

    /// The driver's answer to `Event::Authenticate`.
    pub fn auth_done(&mut self, verdict: AuthVerdict) {
        if !matches!(self.phase, Phase::AwaitAuth) {
            return;
        }
        self.phase = Phase::Command;
        let max = self
            .p
            .submission
            .as_ref()
            .map_or(3, |s| s.max_auth_failures.max(1));
        match verdict {
            AuthVerdict::Ok { login, addresses } => {
                self.auth = Some(Authenticated { login, addresses });
                self.reply(&reply::AUTH_OK);
            }
            AuthVerdict::Temporary => self.reply(&reply::AUTH_TEMPFAIL),
            AuthVerdict::Failed | AuthVerdict::Blocked => {
                self.auth_failures += 1;
                let r = if verdict == AuthVerdict::Blocked {
                    reply::AUTH_BLOCKED
                } else {
                    reply::AUTH_FAILED
                };
                if self.auth_failures >= max {
                    self.reply(&r);
                    self.close_with(&reply::TOO_MANY_AUTH_FAILURES);
                } else {
                    self.reply(&r);
                }
            }
        }
    }

    /// The authenticated login, for logs.
    pub fn login(&self) -> Option<&str> {
        self.auth.as_ref().map(|a| a.login.as_str())
    }

    fn starttls(&mut self) -> Option<Event> {
        if self.tls {
            self.bad(&reply::TLS_ACTIVE);
            return self.is_closed().then_some(Event::Close);
        }
        if !self.p.starttls {
            self.bad(&reply::NO_TLS);
            return self.is_closed().then_some(Event::Close);
        }
        self.reply(&reply::READY_TLS);
        // Anything pipelined after STARTTLS was sent in plaintext: drop it.
        self.input.clear();
        self.pos = 0;
        self.lines.reset();
        self.phase = Phase::AwaitTls;
        Some(Event::StartTls)
    }

    /// The TLS handshake succeeded: start over (RFC 3207 4.2).
    pub fn tls_started(&mut self) {
        if !matches!(self.phase, Phase::AwaitTls) {
            return;
        }
        self.tls = true;
        self.helo = None;
        self.auth = None;
        self.txn = None;
        self.input.clear();
        self.pos = 0;
        self.lines.reset();
        self.phase = Phase::Command;
    }
}

/// The reply for one outcome. Texts of the target (a remote server's
/// reply) never reach the client: only the class does.
fn outcome_reply(o: Outcome) -> Reply {
    match o {
        Outcome::Delivered | Outcome::Queued | Outcome::Relayed { .. } => reply::DELIVERED,
        Outcome::OverQuota { permanent: false } => reply::OVER_QUOTA,
        Outcome::OverQuota { permanent: true } => reply::OVER_QUOTA_PERMANENT,
        Outcome::DiskFull => reply::DISK_FULL,
        // A check asking to come back later (the content filter's soft
        // reject, or its fail-closed timeout): our own text.
        Outcome::Temporary(t) => match t.strip_prefix("451 4.7.1 ") {
            Some(reason) => Reply::owned(451, "4.7.1", reason.to_string()),
            None => reply::LOCAL_ERROR,
        },
        Outcome::Permanent(t) if t == super::auth_results::DMARC_REJECTED => reply::DMARC_REJECTED,
        // A recipient's Sieve reject (RFC 5429 2.1.1): the reason is the
        // user's own text, made one printable line by `crate::sieve`.
        Outcome::Permanent(t) => match t.strip_prefix("550 5.7.1 ") {
            Some(reason) => Reply::owned(550, "5.7.1", reason.to_string()),
            None => reply::TRANSACTION_FAILED,
        },
        Outcome::NoResources => reply::INSUFFICIENT_RESOURCES,
    }
}

/// Which outcome speaks for a message when one reply covers several
/// copies: accepted < over quota < permanent failures < other temporary
/// failures < disk full < no resources (a temporary failure wins over a
/// permanent one: the retry may still reach the others).
fn severity(o: &Outcome) -> u8 {
    match o {
        Outcome::Delivered | Outcome::Queued | Outcome::Relayed { .. } => 0,
        Outcome::OverQuota { permanent: false } => 1,
        Outcome::OverQuota { permanent: true } | Outcome::Permanent(_) => 2,
        Outcome::Temporary(_) => 3,
        Outcome::DiskFull => 4,
        Outcome::NoResources => 5,
    }
}

fn parse_error_reply(e: &ProtoError) -> Reply {
    match e {
        ProtoError::UnknownCommand => reply::UNKNOWN_COMMAND,
        ProtoError::InvalidSenderAddress => reply::BAD_SENDER,
        ProtoError::InvalidRecipientAddress => reply::BAD_RCPT,
        ProtoError::SyntaxError { syntax } => {
            Reply::owned(501, "5.5.2", format!("Syntax: {syntax}"))
        }
        ProtoError::InvalidParameter { param } => {
            Reply::owned(501, "5.5.4", format!("Invalid {param} parameter"))
        }
        ProtoError::UnsupportedParameter { .. } => reply::UNSUPPORTED_PARAM,
        _ => Reply::new(500, "5.5.2", "Syntax error"),
    }
}

/// The first line of an HTTP request: someone pointed a browser or a
/// cross-protocol attack at us.
/// An `XMSGD-DELIVERY-ID` parameter that is malformed or repeated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadDeliveryId;

/// A `RCPT` line without its `XMSGD-DELIVERY-ID=` parameter, and the id
/// (`(None, None)`: not a RCPT or no such parameter, the line stands).
/// The id is 1 to `store::MAX_DELIVERY_ID_LEN` characters of
/// `[A-Za-z0-9.@_-]` (what msgd's queue sends; xtext needs no decoding
/// then); anything else, or the parameter twice, is a syntax error.
#[allow(clippy::type_complexity)]
pub fn take_delivery_id(line: &[u8]) -> Result<(Option<Vec<u8>>, Option<String>), BadDeliveryId> {
    if line.len() < 5 || !line[..5].eq_ignore_ascii_case(b"RCPT ") {
        return Ok((None, None));
    }
    let prefix = format!("{DELIVERY_ID_EXT}=");
    let is_param = |w: &[u8]| {
        w.len() >= prefix.len() && w[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
    };
    let end = line
        .iter()
        .rposition(|&b| b != b'\r' && b != b'\n')
        .map_or(0, |p| p + 1);
    let body = &line[..end];
    if !body.split(|&b| b == b' ').any(is_param) {
        return Ok((None, None));
    }
    let mut id = None;
    let mut kept: Vec<&[u8]> = Vec::new();
    for w in body.split(|&b| b == b' ') {
        if !is_param(w) {
            kept.push(w);
            continue;
        }
        let v = &w[prefix.len()..];
        let ok = (1..=crate::store::MAX_DELIVERY_ID_LEN).contains(&v.len())
            && v.iter()
                .all(|&b| b.is_ascii_alphanumeric() || b".@_-".contains(&b));
        if !ok || id.is_some() {
            return Err(BadDeliveryId);
        }
        id = Some(String::from_utf8_lossy(v).into_owned());
    }
    let mut out = kept.join(&b' ');
    out.extend_from_slice(&line[body.len()..]);
    Ok((Some(out), id))
}

fn looks_like_http(line: &[u8]) -> bool {
    const METHODS: [&[u8]; 7] = [
        b"GET ",
        b"POST ",
        b"HEAD ",
        b"PUT ",
        b"CONNECT ",
        b"OPTIONS ",
        b"DELETE ",
    ];
    METHODS.iter().any(|m| line.starts_with(m))
}

fn contains_ci(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}
