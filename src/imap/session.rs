//! The IMAP session core: a state machine that does no I/O. The driver
//! (`driver`) owns the connection: it feeds the bytes it reads
//! ([`Input`]), writes what the core produced, and performs the effect the
//! core asks for next ([`Next`]: read more, upgrade to TLS, start
//! COMPRESS, close). Waiting is the driver's too: the core says until when
//! and on which store signals ([`Session::wait`]).
//!
//! What the core does itself: framing (`framer`), parsing into the one
//! command type (`request`), running commands against the directory and
//! the store (in-process services: their calls are awaited here, the way
//! a handler awaits a database), and producing responses. A long response
//! (FETCH of many messages, URLFETCH) leaves through a bounded channel
//! while the command runs, so memory stays bounded and the driver applies
//! backpressure; everything else is collected in `out` and written when
//! the core returns.
//!
//! State is one enum, [`State`] (RFC 9051 3: not authenticated,
//! authenticated, selected, logout). Commands arrive grouped by the state
//! they are valid in (`request::Command`), and `execute` only hands a
//! group to its handlers in a state that allows it: a selected-state
//! handler is unreachable without a selected mailbox. IDLE and
//! AUTHENTICATE's continuation are `Pending` sub-states: the next line
//! the client sends completes them.
//!
//! Invariants:
//! - One command at a time; a command's untagged responses, then the
//!   selected mailbox's pending changes (where RFC 9051 7.5.1 allows them),
//!   then its tagged status line.
//! - The selected mailbox view (`Selected`) changes only in `sync` and in
//!   the commands that change it on purpose; every change is announced.
//! - Client data never panics the session: every length is capped by the
//!   framer, every decode failure is a BAD.
//! - What a client enabled (CONDSTORE, QRESYNC, IMAP4rev2, UTF8=ACCEPT)
//!   only grows while it is logged in (UNAUTHENTICATE resets it); the
//!   view mirrors it.
//!
//! The commands live by topic: `mailboxes` (names, LIST, STATUS, ACL,
//! QUOTA), `messages` (STORE, COPY/MOVE, EXPUNGE, SEARCH, SORT, THREAD),
//! `fetch` (FETCH), and one module per extension (see `mod.rs`).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::time::Duration;

use imap_types::command::SelectParameter;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use crate::config::{Config, TlsMode};
use crate::net::ConnInfo;
use crate::services::Services;
use crate::store::{ModSeq, Quota, Store, StoreError, Uid};
use std::sync::Arc;

use super::acl::Rights;
use super::command::{Cmd, SeqSet};
use super::framer::{self, Event, Framer, Refusal};
use super::request::{self, AnyState, Authenticated, Command, NotAuthenticated, Parsed};
use super::selected::Selected;
use super::wire;

/// Largest literal accepted before login (a LOGIN password needs little;
/// a stranger gets no 50 MiB buffers).
const PREAUTH_MAX_LITERAL: u64 = 64 * 1024;

/// Output is handed to the driver while a command runs when this much is
/// buffered (FETCH).
const FLUSH_AT: usize = 256 * 1024;

/// Chunks of output in flight between the core and the driver: with
/// `FLUSH_AT`, at most ~512 KiB per session beside `out`.
pub(crate) const OUTPUT_CHUNKS: usize = 1;

/// The result of a command (RFC 9051 7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Ok,
    No,
    Bad,
}

impl Status {
    /// The result class in the metrics.
    fn class(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::No => "no",
            Status::Bad => "bad",
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::No => "NO",
            Status::Bad => "BAD",
        }
    }
}

/// The tagged status line of a command: status, response code, text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    pub status: Status,
    pub code: Option<String>,
    pub text: String,
}

impl Reply {
    pub fn ok(text: &str) -> Reply {
        Reply {
            status: Status::Ok,
            code: None,
            text: text.into(),
        }
    }
    pub fn ok_code(code: impl Into<String>, text: &str) -> Reply {
        Reply {
            status: Status::Ok,
            code: Some(code.into()),
            text: text.into(),
        }
    }
    pub fn no(code: Option<&str>, text: &str) -> Reply {
        Reply {
            status: Status::No,
            code: code.map(String::from),
            text: text.into(),
        }
    }
    pub fn bad(text: &str) -> Reply {
        Reply {
            status: Status::Bad,
            code: None,
            text: text.into(),
        }
    }
    pub fn no_perm() -> Reply {
        Reply::no(Some("NOPERM"), "Permission denied")
    }

    /// The status line, CRLF included.
    fn line(&self, tag: &str) -> String {
        match &self.code {
            Some(code) => format!("{tag} {} [{code}] {}\r\n", self.status.as_str(), self.text),
            None => format!("{tag} {} {}\r\n", self.status.as_str(), self.text),
        }
    }
}

/// The logged-in user.
pub(crate) struct User {
    /// Store user: the account's canonical address.
    pub name: String,
    pub quota: Quota,
    /// Logged in by a proxy account on the user's behalf (the mmp): the
    /// client behind it never authenticated here, so no UNAUTHENTICATE
    /// (its next login would count against the proxy's address).
    pub proxied: bool,
}

/// What the client turned on (ENABLE, RFC 5161, and implicitly).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Enabled {
    /// RFC 7162 3.1.
    pub condstore: bool,
    /// RFC 7162 3.2.
    pub qresync: bool,
    /// RFC 9051.
    pub rev2: bool,
    /// RFC 6855.
    pub utf8: bool,
}

/// The selected mailbox: the view plus the store's change signal.
pub(crate) struct Open {
    pub view: Selected,
    pub watch: watch::Receiver<ModSeq>,
    /// Store user owning the mailbox (another user's for shared ones).
    pub owner: String,
    /// This user's rights on it (RFC 4314).
    pub rights: Rights,
    /// SEARCH/SORT RETURN (UPDATE) results kept up to date (RFC 5267 4).
    pub contexts: super::esearch::Contexts,
}

/// The session's state (RFC 9051 3).
pub(crate) enum State {
    NotAuthenticated,
    Authenticated {
        user: User,
    },
    Selected {
        user: User,
        open: Box<Open>,
    },
    /// The connection is ending: nothing more is read.
    Logout,
}

impl State {
    pub fn user(&self) -> Option<&User> {
        match self {
            State::Authenticated { user } | State::Selected { user, .. } => Some(user),
            State::NotAuthenticated | State::Logout => None,
        }
    }

    pub fn open(&self) -> Option<&Open> {
        match self {
            State::Selected { open, .. } => Some(open),
            _ => None,
        }
    }

    pub fn open_mut(&mut self) -> Option<&mut Open> {
        match self {
            State::Selected { open, .. } => Some(open),
            _ => None,
        }
    }

    /// Selected -> authenticated; the view that was closed.
    pub fn deselect(&mut self) -> Option<Open> {
        match std::mem::replace(self, State::Logout) {
            State::Selected { user, open } => {
                *self = State::Authenticated { user };
                Some(*open)
            }
            other => {
                *self = other;
                None
            }
        }
    }

    /// Authenticated or selected -> selected with `open`.
    fn select(&mut self, open: Open) {
        *self = match std::mem::replace(self, State::Logout) {
            State::Authenticated { user } | State::Selected { user, .. } => State::Selected {
                user,
                open: Box::new(open),
            },
            other => other,
        };
    }

    /// Back to not authenticated (UNAUTHENTICATE); the user that was.
    pub fn unauthenticate(&mut self) -> Option<User> {
        match std::mem::replace(self, State::NotAuthenticated) {
            State::Authenticated { user } | State::Selected { user, .. } => Some(user),
            other => {
                *self = other;
                None
            }
        }
    }

    fn logged_in(&self) -> bool {
        self.user().is_some()
    }
}

/// A command waiting for a line of the client's (RFC 9051 7.5).
enum Pending {
    /// AUTHENTICATE PLAIN sent `+ `: the next line is the response.
    Authenticate { tag: String },
    /// IDLE (RFC 2177) until DONE, or the idle timer at `until`.
    Idle { tag: String, until: Instant },
}

/// What the driver tells the core.
pub(crate) enum Input<'a> {
    /// Bytes from the client (empty: go on after an effect).
    Data(&'a [u8]),
    /// The client closed the connection.
    Eof,
    /// `wait().until` passed.
    Timeout,
    /// `wait().wake` ended: a store change the core watches.
    Wake,
    /// The server is shutting down.
    Shutdown,
}

/// What the core asks the driver to do next, once the output is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Wait for input (as `wait` says).
    Read,
    /// Run the TLS handshake, then call `tls_started` (or close).
    StartTls,
    /// Compress both directions from now on, then call
    /// `compression_started`.
    Compress,
    /// Close the connection.
    Close,
}

/// How the driver waits for the next input.
pub(crate) struct Wait {
    /// Report `Input::Timeout` at this instant.
    pub until: Instant,
    /// Report `Input::Wake` when this ends.
    pub wake: Pin<Box<dyn Future<Output = ()> + Send>>,
}

const BYE_IDLE: &str = "* BYE Autologout; idle for too long\r\n";
const BYE_TOO_SLOW: &str = "* BYE Command not completed in time\r\n";
const BYE_SHUTDOWN: &str = "* BYE Server shutting down\r\n";
/// The user's mail is being moved to another store (`msgd user move`):
/// nothing more may change here; the client logs in again later and
/// reaches the new store.
const BYE_MOVING: &str =
    "* BYE [UNAVAILABLE] Mailbox is being moved to another server, log in again later\r\n";

pub(crate) struct Session {
    pub info: ConnInfo,
    pub services: Services,
    pub config: Arc<Config>,
    pub framer: Framer,
    /// Responses not yet handed to the driver.
    pub out: Vec<u8>,
    /// Output handed to the driver while a command runs (`flush`).
    sink: mpsc::Sender<Vec<u8>>,
    pub state: State,
    pending: Option<Pending>,
    pub enabled: Enabled,
    /// The last SEARCH ... RETURN (SAVE) result, as UIDs (RFC 5182).
    pub saved: Vec<Uid>,
    /// NOTIFY (RFC 5465) is on.
    pub notify: Option<super::notify::Notify>,
    /// NOTIFY MessageNew fetch attributes: the selected mailbox and the
    /// UIDNEXT up to which new messages were fetched.
    pub notify_seen: Option<(crate::store::MailboxId, Uid)>,
    bad_commands: u32,
    auth_failures: u32,
    /// STARTTLS was accepted: upgrade after the tagged OK is written.
    starttls_pending: bool,
    /// COMPRESS was accepted: compress after the tagged OK is written.
    compress_pending: bool,
    pub compressed: bool,
    /// The real client address an ID "x-originating-ip" named (a proxy in
    /// front of us says who it serves).
    pub originating_ip: Option<String>,
    /// An ID "x-originating-ip" came before login, trusted or not: a front
    /// end (the mmp) speaks for a client. UNAUTHENTICATE is refused then,
    /// so a client behind it cannot retry logins from the front end's
    /// address (RFC 8437 3).
    pub via_front_end: bool,
    /// That front end's ID also said `"x-unauthenticate" "proxy"`: it
    /// answers its clients' UNAUTHENTICATE itself and may send its own to
    /// reuse this connection for its next login (honoured only from
    /// loopback or `imap.login_networks`; see `unauthenticate_allowed`).
    pub front_end_reuse: bool,
    /// The last user logged in, for the closing log line.
    last_user: Option<String>,
    commands: u64,
    /// When the command under way must be complete: set by its first
    /// byte, pushed back by `1 / limits.min_data_rate` s per byte, cleared
    /// when a command has been framed (`limits.command_deadline`; before
    /// login `imap.preauth_timeout`).
    command_deadline: Option<Instant>,
    /// When the client last sent bytes or a command ended: the autologout
    /// counts from here, not from a NOTIFY wake-up.
    last_input: Instant,
}

impl Session {
    /// A session for a connection described by `info`, and the receiving
    /// end of its output channel (see `flush`).
    pub fn new(info: ConnInfo, services: Services) -> (Session, mpsc::Receiver<Vec<u8>>) {
        let config = services.config.clone();
        let mut framer = Framer::new(
            config.limits.max_line.max(framer::MIN_LINE),
            config.imap.max_literal.min(PREAUTH_MAX_LITERAL),
        );
        if !config.imap.literal_plus {
            framer.set_max_nonsync(Some(framer::LITERAL_MINUS_MAX));
        }
        framer.set_budget(Some(services.budget.clone()));
        let (sink, rx) = mpsc::channel(OUTPUT_CHUNKS);
        let session = Session {
            info,
            services,
            config,
            framer,
            out: Vec::new(),
            sink,
            state: State::NotAuthenticated,
            pending: None,
            enabled: Enabled::default(),
            saved: Vec::new(),
            notify: None,
            notify_seen: None,
            bad_commands: 0,
            auth_failures: 0,
            starttls_pending: false,
            compress_pending: false,
            compressed: false,
            originating_ip: None,
            via_front_end: false,
            front_end_reuse: false,
            last_user: None,
            commands: 0,
            command_deadline: None,
            last_input: Instant::now(),
        };
        (session, rx)
    }

    pub fn store(&self) -> &Store {
        self.services.store()
    }

    pub fn user_name(&self) -> String {
        self.state
            .user()
            .map(|u| u.name.clone())
            .unwrap_or_default()
    }

    pub fn write(&mut self, s: &str) {
        self.out.extend_from_slice(s.as_bytes());
    }

    /// What is ready to be written.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Hands the buffered output to the driver now (a long response); an
    /// error when the driver is gone (the client stopped reading).
    pub async fn flush(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::take(&mut self.out);
        self.sink
            .send(chunk)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "connection gone"))
    }

    /// Flushes when a lot is buffered (long FETCH responses).
    pub async fn maybe_flush(&mut self) -> io::Result<()> {
        if self.out.len() >= FLUSH_AT {
            self.flush().await?;
        }
        Ok(())
    }

    fn close(&mut self) -> Next {
        self.state = State::Logout;
        Next::Close
    }

    fn closing(&self) -> bool {
        matches!(self.state, State::Logout)
    }

    /// The greeting (RFC 9051 7.1.1), or BYE when the server is stopping.
    pub fn start(&mut self) -> Next {
        if self.services.shutdown.is_cancelled() {
            self.write(BYE_SHUTDOWN);
            return self.close();
        }
        let greeting = format!(
            "* OK [CAPABILITY {}] {} IMAP4rev2 msgd ready\r\n",
            self.capabilities(),
            self.config.server.hostname
        );
        self.write(&greeting);
        Next::Read
    }

    /// The closing log line.
    pub fn log_closed(&self) {
        info!(
            user = self.last_user.as_deref().unwrap_or("-"),
            client = self.originating_ip.as_deref().unwrap_or("-"),
            commands = self.commands,
            "imap session closed"
        );
    }

    /// Takes one input and runs every command it completes.
    pub async fn input(&mut self, input: Input<'_>) -> Next {
        match input {
            Input::Data(bytes) => {
                if !bytes.is_empty() {
                    self.last_input = Instant::now();
                    if !matches!(self.pending, Some(Pending::Idle { .. })) {
                        self.note_input(bytes.len());
                    }
                    self.framer.push(bytes);
                }
                self.process().await
            }
            Input::Eof => self.close(),
            Input::Timeout => {
                let bye = match &self.pending {
                    Some(Pending::Idle { .. }) => BYE_IDLE,
                    _ if self.too_slow() => BYE_TOO_SLOW,
                    _ => BYE_IDLE,
                };
                self.end_with(bye)
            }
            Input::Shutdown => self.end_with(BYE_SHUTDOWN),
            Input::Wake if self.moving_away() => self.end_with(BYE_MOVING),
            Input::Wake => {
                if matches!(self.pending, Some(Pending::Idle { .. })) {
                    self.idle_wake().await;
                } else if let Err(e) = self.notify_between_commands().await {
                    debug!(error = %e, "NOTIFY output failed");
                    return self.close();
                }
                if self.services.shutdown.is_cancelled() {
                    return self.end_with(BYE_SHUTDOWN);
                }
                Next::Read
            }
        }
    }

    /// Says BYE (and ends a pending command the way RFC 2177 and RFC 9051
    /// 6.2.2 expect) and closes.
    fn end_with(&mut self, bye: &str) -> Next {
        self.write(bye);
        match self.pending.take() {
            Some(Pending::Idle { tag, .. }) => {
                let line = Reply::ok("IDLE terminated").line(&tag);
                self.write(&line);
            }
            Some(Pending::Authenticate { tag }) => {
                let line = Reply::bad("Authentication aborted").line(&tag);
                self.write(&line);
            }
            None => {}
        }
        self.close()
    }

    /// Whether the logged-in user's hold began (`msgd user move`): the
    /// session ends before its next command, or at once when waiting.
    fn moving_away(&self) -> bool {
        match (self.state.user(), self.services.store.as_ref()) {
            (Some(u), Some(store)) => store.moving().deferred(&u.name).is_some(),
            _ => false,
        }
    }

    /// Ends when the logged-in user's hold begins (or has begun).
    fn moving_wake(&self) -> impl std::future::Future<Output = ()> {
        crate::store::Store::until_held(
            self.services.store.clone(),
            self.state.user().map(|u| u.name.clone()),
        )
    }

    /// Runs the framed commands, up to the first that needs the driver.
    async fn process(&mut self) -> Next {
        while let Some(ev) = self.framer.next() {
            let framed = matches!(
                ev,
                Event::Command(_) | Event::Refused { .. } | Event::Line(_)
            );
            if let Err(e) = self.event(ev).await {
                debug!(error = %e, "output failed");
                return self.close();
            }
            if framed {
                // The next command's clock starts with its first byte.
                self.command_deadline = None;
                self.last_input = Instant::now();
            }
            if self.closing() {
                return Next::Close;
            }
            if self.moving_away() {
                return self.end_with(BYE_MOVING);
            }
            if std::mem::take(&mut self.starttls_pending) {
                return Next::StartTls;
            }
            if std::mem::take(&mut self.compress_pending) {
                return Next::Compress;
            }
            if self.services.shutdown.is_cancelled() && self.pending.is_none() {
                self.write(BYE_SHUTDOWN);
                return self.close();
            }
        }
        // Waiting costs no input buffers.
        self.framer.release();
        Next::Read
    }

    /// How to wait for the next input.
    pub fn wait(&self) -> Wait {
        if let Some(Pending::Idle { until, .. }) = &self.pending {
            let selected = self.state.open().map(|o| o.watch.clone());
            let user = self.notify_wake_user();
            let moving = self.moving_wake();
            let wake = async move {
                let changed = async {
                    match selected {
                        Some(mut w) => {
                            if w.changed().await.is_err() {
                                // The store dropped the sender.
                                std::future::pending::<()>().await
                            }
                        }
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = changed => {}
                    _ = user => {}
                    _ = moving => {}
                }
            };
            return Wait {
                until: *until,
                wake: Box::pin(wake),
            };
        }
        let idle = self.last_input + self.timeout();
        let until = match self.command_deadline {
            Some(d) if d < idle => d,
            _ => idle,
        };
        // NOTIFY: only between commands, not inside one.
        let notify = self.notify_wake(self.command_deadline.is_none() && self.pending.is_none());
        let moving = self.moving_wake();
        let wake = async move {
            tokio::select! {
                _ = notify => {}
                _ = moving => {}
            }
        };
        Wait {
            until,
            wake: Box::pin(wake),
        }
    }

    /// The command under way missed its deadline (a trickling client),
    /// rather than the connection being idle.
    fn too_slow(&self) -> bool {
        let idle = self.last_input + self.timeout();
        self.command_deadline.is_some_and(|d| d < idle)
    }

    /// STARTTLS is done (RFC 9051 6.2.1): anything the client sent before
    /// the handshake is discarded.
    pub fn tls_started(&mut self) {
        self.framer.clear();
        self.info.tls_active = true;
        debug!("STARTTLS done");
    }

    /// COMPRESS=DEFLATE (RFC 4978) is on in both directions.
    pub fn compression_started(&mut self) {
        self.compressed = true;
        debug!("COMPRESS=DEFLATE active");
    }

    fn timeout(&self) -> Duration {
        let secs = if self.state.logged_in() {
            self.config.imap.idle_timeout
        } else {
            self.config.imap.preauth_timeout
        };
        Duration::from_secs(secs.max(1))
    }

    /// How long a whole command may take: short before login.
    fn command_limit(&self) -> Duration {
        let secs = if self.state.logged_in() {
            self.config.limits.command_deadline
        } else {
            self.config
                .imap
                .preauth_timeout
                .min(self.config.limits.command_deadline)
        };
        Duration::from_secs(secs.max(1))
    }

    /// Moves the command deadline for `n` bytes just received.
    fn note_input(&mut self, n: usize) {
        let now = Instant::now();
        let limit = self.command_limit();
        let deadline = self.command_deadline.get_or_insert(now + limit);
        let rate = self.config.limits.min_data_rate;
        if rate > 0 {
            *deadline += Duration::from_secs_f64(n as f64 / rate as f64);
        }
    }

    async fn event(&mut self, ev: Event) -> io::Result<()> {
        if let Some(pending) = self.pending.take() {
            self.framer.set_line_mode(false);
            return self.pending_line(pending, ev).await;
        }
        match ev {
            Event::Continue => {
                self.write("+ Ready for literal data\r\n");
                Ok(())
            }
            Event::Refused { tag, reason } => {
                let tag = tag.unwrap_or_else(|| "*".into());
                let line = match reason {
                    Refusal::LineTooLong => format!("{tag} BAD Command line too long\r\n"),
                    Refusal::LiteralTooBig => format!("{tag} NO [TOOBIG] Literal too big\r\n"),
                    Refusal::NonSyncTooBig => format!(
                        "{tag} BAD [TOOBIG] Non-synchronizing literals are limited to 4096 bytes\r\n"
                    ),
                    Refusal::Limit => format!(
                        "{tag} NO [LIMIT] Too much data in flight, try again later\r\n"
                    ),
                    Refusal::Unskippable => {
                        "* BYE Literal length is not a number64, cannot resynchronise\r\n".into()
                    }
                };
                self.write(&line);
                if reason.is_fatal() {
                    self.close();
                    return Ok(());
                }
                // An over-long line is garbage; a too-big literal is a
                // client's honest attempt and does not count.
                if reason == Refusal::LineTooLong {
                    self.count_bad();
                }
                Ok(())
            }
            Event::Line(_) | Event::Response(_) => Ok(()),
            Event::Command(bytes) => self.command(&bytes).await,
        }
    }

    /// The line that completes IDLE or AUTHENTICATE.
    async fn pending_line(&mut self, pending: Pending, ev: Event) -> io::Result<()> {
        match pending {
            Pending::Idle { tag, .. } => {
                let reply = match ev {
                    Event::Line(l) if l.eq_ignore_ascii_case(b"DONE") => {
                        Reply::ok("IDLE terminated")
                    }
                    _ => Reply::bad("Expected DONE"),
                };
                self.finish(&tag, reply, true).await;
            }
            Pending::Authenticate { tag } => {
                let reply = match ev {
                    Event::Line(l) if l == b"*" => Reply::bad("Authentication cancelled"),
                    Event::Line(l) => {
                        use base64::Engine;
                        match base64::engine::general_purpose::STANDARD.decode(&l) {
                            Ok(d) => self.authenticate_plain(&d).await,
                            Err(_) => Reply::bad("Invalid base64 data"),
                        }
                    }
                    _ => Reply::bad("Authentication aborted"),
                };
                self.finish(&tag, reply, true).await;
            }
        }
        Ok(())
    }

    fn count_bad(&mut self) {
        self.bad_commands += 1;
        if self.bad_commands >= self.config.limits.max_bad_commands.max(1) {
            self.write("* BYE Too many invalid commands\r\n");
            self.close();
        }
    }

    async fn command(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.commands += 1;
        let _metrics = crate::metrics::latency(self.info.protocol.name());
        match request::parse(bytes) {
            Parsed::Command { tag, command } => {
                debug!(%tag, command = command.name(), "command");
                // RFC 9051 7.5.1: no EXPUNGE during or right after FETCH,
                // STORE, SEARCH by sequence number.
                let may_sync = !command.by_sequence_number();
                let reply = self.execute(&tag, command).await?;
                if self.pending.is_none() {
                    self.finish(&tag, reply, may_sync).await;
                }
            }
            Parsed::Syntax {
                tag,
                command,
                reason,
            } => {
                debug!(%tag, %reason, "syntax error");
                // RFC 5182 2.1: a failed SEARCH ... SAVE empties `$`.
                if command == "SEARCH" {
                    self.saved.clear();
                }
                let reply = Reply::bad(&format!("Syntax error: {reason}"));
                self.finish(&tag, reply, false).await;
            }
            Parsed::Unparsable { tag } => {
                debug!(%tag, "unparsable command");
                self.write(&format!("{tag} BAD Syntax error in command\r\n"));
                crate::metrics::command(self.info.protocol.name(), "bad");
                self.count_bad();
            }
        }
        Ok(())
    }

    /// Ends a command: the selected mailbox's changes where allowed, NOTIFY
    /// events, the tagged status line.
    async fn finish(&mut self, tag: &str, reply: Reply, may_sync: bool) {
        if may_sync && reply.status != Status::Bad && !self.closing() {
            self.sync(false).await;
        }
        self.notify_after_command(may_sync).await;
        self.write(&reply.line(tag));
        crate::metrics::command(self.info.protocol.name(), reply.status.class());
        if reply.status == Status::Bad {
            self.count_bad();
        }
    }

    /// Runs a command in the state its group allows.
    async fn execute(&mut self, tag: &str, command: Command) -> io::Result<Reply> {
        const BEFORE_LOGIN: &str = "Command not valid before login";
        match command {
            Command::Any(c) => self.any_state(c).await,
            Command::NotAuthenticated(c) => match self.state {
                State::NotAuthenticated => self.not_authenticated(tag, c).await,
                _ => Ok(Reply::bad("Already authenticated")),
            },
            Command::Authenticated(c) => match self.state {
                State::Authenticated { .. } | State::Selected { .. } => {
                    self.authenticated(tag, c).await
                }
                State::NotAuthenticated | State::Logout => Ok(Reply::bad(BEFORE_LOGIN)),
            },
            Command::Selected(c) => match self.state {
                State::Selected { .. } => self.selected(tag, c).await,
                State::Authenticated { .. } => Ok(Reply::bad("No mailbox selected")),
                State::NotAuthenticated | State::Logout => Ok(Reply::bad(BEFORE_LOGIN)),
            },
        }
    }

    /// Any state (RFC 9051 6.1).
    async fn any_state(&mut self, c: AnyState) -> io::Result<Reply> {
        Ok(match c {
            AnyState::Capability => {
                let line = format!("* CAPABILITY {}\r\n", self.capabilities());
                self.write(&line);
                Reply::ok("CAPABILITY completed")
            }
            AnyState::Noop => {
                self.sync(true).await;
                Reply::ok("NOOP completed")
            }
            AnyState::Logout => {
                self.write("* BYE Logging out\r\n");
                self.close();
                Reply::ok("LOGOUT completed")
            }
            AnyState::Id(params) => {
                self.id(&params);
                Reply::ok("ID completed")
            }
        })
    }

    /// Not authenticated (RFC 9051 6.2).
    async fn not_authenticated(&mut self, tag: &str, c: NotAuthenticated) -> io::Result<Reply> {
        Ok(match c {
            NotAuthenticated::StartTls => {
                if !self.starttls_available() {
                    return Ok(Reply::bad("STARTTLS not available"));
                }
                self.starttls_pending = true;
                Reply::ok("Begin TLS negotiation now")
            }
            NotAuthenticated::Login { user, pass } => {
                if !self.plaintext_ok() {
                    return Ok(Reply::no(
                        Some("PRIVACYREQUIRED"),
                        "LOGIN disabled without TLS; use STARTTLS",
                    ));
                }
                return self
                    .login(crate::login::Credentials::password(&user, pass.expose()))
                    .await;
            }
            NotAuthenticated::Authenticate { plain, initial } => {
                if !plain {
                    return Ok(Reply::no(None, "Unsupported authentication mechanism"));
                }
                if !self.plaintext_ok() {
                    return Ok(Reply::no(
                        Some("PRIVACYREQUIRED"),
                        "Plaintext authentication disabled without TLS; use STARTTLS",
                    ));
                }
                match initial {
                    Some(Ok(data)) => self.authenticate_plain(data.expose().as_bytes()).await,
                    Some(Err(_)) => Reply::bad("Invalid PLAIN data"),
                    None => {
                        // RFC 9051 6.2.2: the response comes as a line.
                        self.write("+ \r\n");
                        self.framer.set_line_mode(true);
                        self.pending = Some(Pending::Authenticate { tag: tag.into() });
                        Reply::ok("")
                    }
                }
            }
        })
    }

    /// SASL PLAIN (RFC 4616) data, decoded.
    async fn authenticate_plain(&mut self, data: &[u8]) -> Reply {
        let Some((authz, authc, pass)) = crate::login::parse_plain(data) else {
            return Reply::bad("Invalid PLAIN data");
        };
        match self
            .login(crate::login::Credentials::plain(&authz, &authc, &pass))
            .await
        {
            Ok(r) => r,
            Err(_) => Reply::bad("Authentication aborted"),
        }
    }

    /// Authenticated and selected states (RFC 9051 6.3).
    async fn authenticated(&mut self, tag: &str, c: Authenticated) -> io::Result<Reply> {
        match c {
            Authenticated::Namespace => {
                let other = format!("{}/", super::acl::OTHER_USERS);
                let line = format!(
                    "* NAMESPACE ((\"\" \"/\")) (({} \"/\")) NIL\r\n",
                    wire::string(&other)
                );
                self.write(&line);
                Ok(Reply::ok("NAMESPACE completed"))
            }
            Authenticated::Select {
                mailbox,
                read_only,
                params,
            } => self.select(&mailbox, read_only, &params).await,
            Authenticated::Delete(mailbox) => self.delete(&mailbox).await,
            Authenticated::Rename { from, to } => self.rename(&from, &to).await,
            Authenticated::Subscribe { mailbox, on } => self.subscribe(&mailbox, on).await,
            Authenticated::Lsub { reference, pattern } => self.lsub(&reference, &pattern).await,
            Authenticated::Idle => Ok(self.idle(tag).await),
            Authenticated::Compress => {
                if self.compressed {
                    return Ok(Reply::no(
                        Some("COMPRESSIONACTIVE"),
                        "Compression is already active",
                    ));
                }
                self.compress_pending = true;
                Ok(Reply::ok("DEFLATE active"))
            }
            Authenticated::GetQuotaRoot(mailbox) => self.getquotaroot(&mailbox).await,
            Authenticated::GetQuota(root) => self.getquota(&root).await,
            Authenticated::SetQuota => {
                Ok(Reply::no(Some("NOPERM"), "Quotas are set in the directory"))
            }
            Authenticated::Unsupported => Ok(Reply::bad("Command not supported")),
            Authenticated::Ext(cmd) => {
                let condstore_before = self.state.open().map(|o| o.view.condstore);
                let reply = self.execute_ext_cmd(tag, cmd).await?;
                Ok(self.condstore_enabled_reply(condstore_before, reply))
            }
        }
    }

    /// Selected state (RFC 9051 6.4).
    async fn selected(&mut self, tag: &str, c: request::Selected) -> io::Result<Reply> {
        use request::Selected as S;
        match c {
            S::Check => {
                self.sync(true).await;
                Ok(Reply::ok("CHECK completed"))
            }
            S::Close => {
                let Some(open) = self.state.deselect() else {
                    return Ok(Reply::bad("No mailbox selected"));
                };
                self.saved.clear();
                if !open.view.read_only && open.rights.has('e') {
                    if let Err(e) = self.store().expunge(open.view.id, None).await {
                        return Ok(self.store_error(e, "NONEXISTENT"));
                    }
                }
                Ok(Reply::ok("CLOSE completed"))
            }
            S::Unselect => {
                self.state.deselect();
                self.saved.clear();
                Ok(Reply::ok("UNSELECT completed"))
            }
            S::Expunge => self.expunge(None).await,
            S::Ext(cmd) => {
                let condstore_before = self.state.open().map(|o| o.view.condstore);
                let reply = self.execute_ext_cmd(tag, cmd).await?;
                Ok(self.condstore_enabled_reply(condstore_before, reply))
            }
        }
    }

    /// IDLE (RFC 2177): changes are pushed (`idle_wake`) until DONE, the
    /// idle timeout or shutdown.
    async fn idle(&mut self, tag: &str) -> Reply {
        self.sync(true).await;
        self.write("+ idling\r\n");
        self.framer.set_line_mode(true);
        let until = Instant::now() + Duration::from_secs(self.config.imap.idle_timeout.max(1));
        self.pending = Some(Pending::Idle {
            tag: tag.into(),
            until,
        });
        Reply::ok("")
    }

    /// Something IDLE watches changed: the selected mailbox, or (NOTIFY)
    /// the user's other mailboxes.
    async fn idle_wake(&mut self) {
        let selected = self
            .state
            .open()
            .is_some_and(|o| o.watch.has_changed().unwrap_or(false));
        if selected {
            self.sync(true).await;
            self.notify_fetch_new().await;
        }
        self.notify_poll().await;
    }

    pub fn capabilities(&self) -> String {
        let mut caps: Vec<String> = [
            "IMAP4rev1",
            "IMAP4rev2",
            if self.config.imap.literal_plus {
                "LITERAL+"
            } else {
                "LITERAL-"
            },
            "SASL-IR",
            "ID",
            "ENABLE",
            "IDLE",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if !self.state.logged_in() {
            if self.starttls_available() {
                caps.push("STARTTLS".into());
            }
            if self.plaintext_ok() {
                caps.push("AUTH=PLAIN".into());
            } else {
                caps.push("LOGINDISABLED".into());
            }
            return caps.join(" ");
        }
        caps.extend(
            [
                "NAMESPACE",
                "UIDPLUS",
                "UNSELECT",
                "CHILDREN",
                "SPECIAL-USE",
                "CREATE-SPECIAL-USE",
                "MOVE",
                "CONDSTORE",
                "QRESYNC",
                "ESEARCH",
                "SEARCHRES",
                "LIST-EXTENDED",
                "LIST-STATUS",
                "STATUS=SIZE",
                "QUOTA",
                "QUOTA=RES-STORAGE",
                "QUOTA=RES-MESSAGE",
                "BINARY",
                "UTF8=ACCEPT",
                "SORT",
                "SORT=DISPLAY",
                "ESORT",
                "CONTEXT=SEARCH",
                "CONTEXT=SORT",
                "PARTIAL",
                "THREAD=ORDEREDSUBJECT",
                "THREAD=REFERENCES",
                "OBJECTID",
                "PREVIEW",
                "SAVEDATE",
                "WITHIN",
                "ACL",
                "RIGHTS=kxte",
                "METADATA",
                "CATENATE",
                "URLAUTH",
                "URL-PARTIAL",
                "NOTIFY",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        caps.push("MULTIAPPEND".into());
        caps.push("REPLACE".into());
        if self.unauthenticate_allowed() {
            caps.push("UNAUTHENTICATE".into());
        }
        caps.push(format!("APPENDLIMIT={}", self.append_limit()));
        if !self.compressed {
            caps.push("COMPRESS=DEFLATE".into());
        }
        caps.join(" ")
    }

    /// The largest message APPEND accepts (RFC 7889).
    pub fn append_limit(&self) -> u64 {
        self.config.imap.max_literal
    }

    fn starttls_available(&self) -> bool {
        self.info.tls_mode == TlsMode::StartTls && !self.info.tls_active
    }

    pub(crate) fn plaintext_ok(&self) -> bool {
        self.info.tls_active || self.info.is_loopback() || self.config.imap.allow_plaintext_auth
    }

    /// Applies the selected mailbox's changes and queues their responses.
    /// Without `force`, only when the store signalled a change.
    pub async fn sync(&mut self, force: bool) {
        let store = self.services.store().clone();
        let Some(open) = self.state.open_mut() else {
            return;
        };
        if !force && !open.watch.has_changed().unwrap_or(true) {
            return;
        }
        open.watch.borrow_and_update();
        let changes = match store.changes(open.view.id, open.view.modseq).await {
            Ok(c) => c,
            Err(StoreError::NoSuchMailbox) => {
                debug!("selected mailbox vanished");
                return;
            }
            Err(e) => {
                warn!(error = %e, "reading mailbox changes failed");
                return;
            }
        };
        let recent_from = if !open.view.has_new(&changes) {
            Uid::MAX
        } else if open.view.read_only {
            changes.info.recent_uid
        } else {
            store.claim_recent(open.view.id).await.unwrap_or(Uid::MAX)
        };
        let gone = changes.expunged.clone();
        // RFC 5267 4.3.4: REMOVEFROM before the EXPUNGE responses.
        let removed = open.contexts.before_expunge(&open.view, &gone);
        self.out.extend_from_slice(removed.as_bytes());
        let text = open.view.apply(changes, recent_from);
        self.out.extend_from_slice(text.as_bytes());
        // RFC 5182 2.1: expunged messages leave `$`.
        if !gone.is_empty() {
            self.saved.retain(|u| gone.binary_search(u).is_err());
        }
        self.update_contexts().await;
    }

    /// Turns CONDSTORE on (an enabling command was used, RFC 7162 3.1).
    pub fn enable_condstore(&mut self) {
        self.enabled.condstore = true;
        if let Some(o) = self.state.open_mut() {
            o.view.condstore = true;
        }
    }

    /// Maps a store error to a NO, logging server-side detail.
    pub fn store_error(&self, e: StoreError, missing: &str) -> Reply {
        match e {
            StoreError::NoSuchMailbox => Reply::no(Some(missing), "Mailbox does not exist"),
            StoreError::MailboxExists => Reply::no(Some("ALREADYEXISTS"), "Mailbox already exists"),
            StoreError::BadName => Reply::no(Some("CANNOT"), "Invalid mailbox name"),
            StoreError::NotAllowed(why) => Reply::no(Some("CANNOT"), why),
            StoreError::OverQuota => Reply::no(Some("OVERQUOTA"), "Quota exceeded"),
            StoreError::DiskFull => {
                warn!("store refused: disk full");
                Reply::no(
                    Some("UNAVAILABLE"),
                    "Temporarily unable to store, try again later",
                )
            }
            StoreError::UidValidityChanged => {
                Reply::no(Some("UNAVAILABLE"), "Mailbox changed, try again")
            }
            StoreError::Moving => Reply::no(
                Some("UNAVAILABLE"),
                "Mailbox is being moved to another server, try again later",
            ),
            StoreError::Internal(detail) => {
                error!(%detail, "store error");
                Reply::no(Some("SERVERBUG"), "Internal error, try again later")
            }
        }
    }

    /// RFC 7162 3.1: the first CONDSTORE enabling command on an already
    /// selected mailbox reports its HIGHESTMODSEQ in the tagged OK (in an
    /// untagged OK when the tagged one carries another code).
    fn condstore_enabled_reply(&mut self, before: Option<bool>, mut reply: Reply) -> Reply {
        let Some(open) = self.state.open() else {
            return reply;
        };
        if before != Some(false) || !open.view.condstore || reply.status != Status::Ok {
            return reply;
        }
        let code = format!("HIGHESTMODSEQ {}", open.view.modseq.max(1));
        if reply.code.is_none() {
            reply.code = Some(code);
        } else {
            self.write(&format!("* OK [{code}] Highest\r\n"));
        }
        reply
    }

    async fn execute_ext_cmd(&mut self, tag: &str, cmd: Cmd) -> io::Result<Reply> {
        match cmd {
            Cmd::Fetch {
                uid,
                set,
                items,
                extra,
                changed_since,
                vanished,
            } => {
                self.fetch(&set, items, extra, uid, changed_since, vanished)
                    .await
            }
            Cmd::Store {
                uid,
                set,
                op,
                silent,
                flags,
                unchanged_since,
            } => {
                self.store_cmd(&set, op, &flags, silent, uid, unchanged_since)
                    .await
            }
            Cmd::Copy {
                uid,
                set,
                mailbox,
                moving,
            } => self.copy(&set, &mailbox, uid, moving).await,
            Cmd::UidExpunge { set } => self.expunge(Some(&set)).await,
            Cmd::Search {
                uid,
                ret,
                charset,
                key,
            } => self.search(tag, charset.as_deref(), key, uid, ret).await,
            Cmd::Sort {
                uid,
                ret,
                criteria,
                charset,
                key,
            } => self.sort(tag, &charset, key, &criteria, uid, ret).await,
            Cmd::CancelUpdate { tags } => Ok(self.cancel_update(&tags)),
            Cmd::Thread {
                uid,
                algo,
                charset,
                key,
            } => self.thread(&charset, key, algo, uid).await,
            Cmd::List {
                reference,
                patterns,
                opts,
            } => self.list(&reference, &patterns, &opts).await,
            Cmd::Create { mailbox, uses } => self.create(&mailbox, &uses).await,
            Cmd::Status { mailbox, items } => self.status(&mailbox, &items).await,
            Cmd::Enable { caps } => Ok(self.enable(&caps)),
            Cmd::GetAcl { mailbox } => self.getacl(&mailbox).await,
            Cmd::SetAcl {
                mailbox,
                id,
                rights,
            } => self.setacl(&mailbox, &id, Some(&rights)).await,
            Cmd::DeleteAcl { mailbox, id } => self.setacl(&mailbox, &id, None).await,
            Cmd::ListRights { mailbox, id } => self.listrights(&mailbox, &id).await,
            Cmd::MyRights { mailbox } => self.myrights(&mailbox).await,
            Cmd::GetMetadata {
                mailbox,
                entries,
                maxsize,
                depth,
            } => self.getmetadata(&mailbox, entries, maxsize, depth).await,
            Cmd::SetMetadata { mailbox, items } => self.setmetadata(&mailbox, items).await,
            Cmd::Append { mailbox, messages } => self.append_messages(&mailbox, messages).await,
            Cmd::Replace {
                uid,
                num,
                mailbox,
                message,
            } => self.replace(uid, num, &mailbox, message).await,
            Cmd::Unauthenticate => Ok(self.unauthenticate()),
            Cmd::Catenate {
                mailbox,
                flags,
                date,
                parts,
            } => self.catenate(&mailbox, &flags, date, parts).await,
            Cmd::GenUrlAuth { items } => self.genurlauth(&items).await,
            Cmd::ResetKey { mailbox, mechs } => self.resetkey(mailbox.as_deref(), &mechs).await,
            Cmd::UrlFetch { urls } => self.urlfetch(&urls).await,
            Cmd::Notify(parsed) => self.notify_command(parsed).await,
        }
    }

    /// ENABLE (RFC 5161; CONDSTORE and QRESYNC RFC 7162, IMAP4rev2 RFC
    /// 9051, UTF8=ACCEPT RFC 6855).
    fn enable(&mut self, caps: &[String]) -> Reply {
        if self.state.open().is_some() {
            // RFC 5161 3.1: only valid in the authenticated state.
            return Reply::bad("ENABLE is not allowed with a mailbox selected");
        }
        let mut now = Vec::new();
        for c in caps {
            let e = &mut self.enabled;
            let newly = match c.as_str() {
                "CONDSTORE" => !std::mem::replace(&mut e.condstore, true),
                "QRESYNC" => {
                    e.condstore = true;
                    !std::mem::replace(&mut e.qresync, true)
                }
                "IMAP4REV2" => !std::mem::replace(&mut e.rev2, true),
                "UTF8=ACCEPT" => !std::mem::replace(&mut e.utf8, true),
                _ => false,
            };
            if newly {
                now.push(if c == "IMAP4REV2" {
                    "IMAP4rev2"
                } else {
                    c.as_str()
                });
            }
        }
        let mut line = String::from("* ENABLED");
        for c in now {
            line.push(' ');
            line.push_str(c);
        }
        line.push_str("\r\n");
        self.write(&line);
        Reply::ok("ENABLE completed")
    }

    /// ID (RFC 2971). Before login, a proxy's "x-originating-ip" is kept
    /// for the log.
    fn id(&mut self, params: &[(Vec<u8>, Option<Vec<u8>>)]) {
        if !self.state.logged_in() {
            for (k, v) in params {
                if k.eq_ignore_ascii_case(b"x-originating-ip") {
                    if let Some(v) = v {
                        let ip = String::from_utf8_lossy(v);
                        // Keep it short and printable: it goes to the log.
                        let ip: String = ip
                            .chars()
                            .filter(|c| c.is_ascii_graphic())
                            .take(64)
                            .collect();
                        self.originating_ip = Some(ip);
                        self.via_front_end = true;
                    }
                } else if k.eq_ignore_ascii_case(b"x-unauthenticate") {
                    self.front_end_reuse = v
                        .as_deref()
                        .is_some_and(|v| v.eq_ignore_ascii_case(b"proxy"));
                }
            }
        }
        self.write("* ID (\"name\" \"msgd\" \"version\" \"");
        self.write(env!("CARGO_PKG_VERSION"));
        self.write("\")\r\n");
    }

    /// Checks `login`/`password`; with `authz`, a proxy account logs in on
    /// behalf of that user. The sequence is `crate::login`'s; this turns
    /// its outcome into IMAP replies (RFC 5530 codes).
    async fn login(&mut self, creds: crate::login::Credentials<'_>) -> io::Result<Reply> {
        use crate::login::{AuthzFailure, Outcome, Unavailable};
        let accounts =
            crate::login::Accounts::of(self.services.directory.clone(), &self.config.server.domain);
        let rules = crate::login::Rules {
            protocol: crate::login::Protocol::Imap,
            config: &self.config,
            login_networks: &self.config.imap.login_networks,
            proxy_users: &self.config.imap.proxy_users,
            limiter: &self.services.logins,
            accounts: &accounts,
            serves: crate::login::Serves::Store(Some(self.store())),
        };
        let logged_in = match crate::login::login(&rules, &self.info, creds).await {
            Outcome::Ok(l) => l,
            Outcome::Unavailable(Unavailable::LoginNetworks) => {
                return Ok(Reply::no(
                    Some("UNAVAILABLE"),
                    "Log in through the mail proxy",
                ));
            }
            Outcome::NotAuthorized(AuthzFailure::NotProxy) => {
                return Ok(Reply::no(
                    Some("AUTHORIZATIONFAILED"),
                    "Not allowed to act as another user",
                ));
            }
            Outcome::NotAuthorized(AuthzFailure::UnknownUser | AuthzFailure::InactiveUser) => {
                return Ok(Reply::no(
                    Some("AUTHORIZATIONFAILED"),
                    "No such user to act as",
                ));
            }
            Outcome::Inactive => {
                return Ok(Reply::no(Some("CONTACTADMIN"), "Account disabled"));
            }
            outcome @ (Outcome::Failed | Outcome::RateLimited) => {
                self.auth_failures += 1;
                let refused = matches!(outcome, Outcome::RateLimited);
                info!(
                    login = creds.login,
                    failures = self.auth_failures,
                    refused,
                    "imap login failed"
                );
                if self.auth_failures >= self.config.limits.max_auth_failures.max(1) {
                    self.write("* BYE Too many authentication failures\r\n");
                    self.close();
                }
                // RFC 5530: UNAVAILABLE is temporary; the client may
                // try again later.
                return Ok(if refused {
                    Reply::no(
                        Some("UNAVAILABLE"),
                        "Too many failed logins; try again later",
                    )
                } else {
                    Reply::no(Some("AUTHENTICATIONFAILED"), "Authentication failed")
                });
            }
            Outcome::Unavailable(Unavailable::Directory) => {
                return Ok(Reply::no(
                    Some("UNAVAILABLE"),
                    "Authentication temporarily unavailable",
                ));
            }
            // A store serves its own users only; clients reach the right
            // one through the mmp. RFC 5530 UNAVAILABLE: try again
            // (elsewhere).
            Outcome::WrongStore { .. } => {
                return Ok(Reply::no(
                    Some("UNAVAILABLE"),
                    "Mailbox is on another server",
                ));
            }
            Outcome::Unavailable(Unavailable::Store(e)) => {
                return Ok(self.store_error(e, "UNAVAILABLE"));
            }
            Outcome::Unavailable(Unavailable::NoStore) => {
                return Ok(Reply::no(
                    Some("UNAVAILABLE"),
                    "Authentication temporarily unavailable",
                ));
            }
        };
        let (account, proxy) = (logged_in.account, logged_in.proxy);
        let via = logged_in.authz.unwrap_or_else(|| "-".into());
        // The real client behind a proxy (or a trusted local front end).
        if !(proxy || self.info.is_loopback()) {
            self.originating_ip = None;
        }
        info!(
            user = %account.address,
            via = %via,
            client = self.originating_ip.as_deref().unwrap_or("-"),
            "imap login"
        );
        self.framer.set_max_literal(self.config.imap.max_literal);
        let quota = self.quota_of_account(&account);
        self.last_user = Some(account.address.clone());
        self.state = State::Authenticated {
            user: User {
                name: account.address,
                quota,
                proxied: proxy,
            },
        };
        let caps = self.capabilities();
        Ok(Reply::ok_code(format!("CAPABILITY {caps}"), "Logged in"))
    }

    /// Literal limits as before login (UNAUTHENTICATE, RFC 8437).
    pub(crate) fn reset_preauth_limits(&mut self) {
        self.framer
            .set_max_literal(self.config.imap.max_literal.min(PREAUTH_MAX_LITERAL));
    }

    /// A front end's connection passes to its next client (UNAUTHENTICATE
    /// of a reusing front end): the per-connection counts of bad commands
    /// and failed logins start again, so one client's cannot close the
    /// connection on the next. Returns the commands of the session that
    /// ends, for its log line.
    pub(crate) fn next_front_end_client(&mut self) -> u64 {
        self.bad_commands = 0;
        self.auth_failures = 0;
        std::mem::take(&mut self.commands)
    }

    /// Limits of an account: its directory quota or the store default.
    pub fn quota_of(&self, directory_quota: Option<u64>) -> Quota {
        crate::deliver::quota(directory_quota, &self.config.store)
    }

    /// Limits of a directory account: its bytes and messages quotas
    /// (mailQuota, mailMsgQuota), each else the store default.
    pub fn quota_of_account(&self, a: &crate::directory::Account) -> Quota {
        crate::deliver::account_quota(a.quota, a.msg_quota, &self.config.store)
    }

    /// SELECT / EXAMINE (RFC 9051 6.3.2, 6.3.3), with CONDSTORE and QRESYNC
    /// parameters (RFC 7162 3.1.8, 3.2.5).
    async fn select(
        &mut self,
        raw: &[u8],
        read_only: bool,
        params: &[SelectParameter],
    ) -> io::Result<Reply> {
        let mut qresync = None;
        for p in params {
            match p {
                SelectParameter::CondStore => self.enable_condstore(),
                SelectParameter::QResync {
                    uid_validity,
                    mod_sequence_value,
                    known_uids,
                    ..
                } => {
                    if !self.enabled.qresync {
                        return Ok(Reply::bad("QRESYNC is not enabled"));
                    }
                    qresync = Some((uid_validity.get(), mod_sequence_value.get(), known_uids));
                }
            }
        }
        // The previous mailbox is deselected whatever happens next
        // (RFC 9051 6.3.2), without expunge; QRESYNC and IMAP4rev2 clients
        // are told (RFC 7162 3.2.11).
        if self.state.deselect().is_some() && (self.enabled.qresync || self.enabled.rev2) {
            self.write("* OK [CLOSED] Previous mailbox closed\r\n");
        }
        self.saved.clear();
        let target = match self.target(raw).await {
            Ok(t) => t,
            Err(r) => return Ok(r),
        };
        if !target.rights.has('r') {
            return Ok(Reply::no_perm());
        }
        let examine = read_only;
        let read_only = read_only || !target.rights.writable();
        let store = self.store().clone();
        let snap = match store.snapshot(&target.owner, &target.name).await {
            Ok(s) => s,
            Err(e) => return Ok(self.store_error(e, "NONEXISTENT")),
        };
        let recent_from = if read_only {
            snap.info.recent_uid
        } else {
            match store.claim_recent(snap.info.id).await {
                Ok(u) => u,
                Err(e) => return Ok(self.store_error(e, "NONEXISTENT")),
            }
        };
        let mut watch = store.watch(snap.info.id);
        // A change between the snapshot and this subscription would go
        // unsignalled: look once at the next opportunity.
        watch.mark_changed();
        let mut view = Selected::new(snap, recent_from, read_only);
        view.condstore = self.enabled.condstore;
        view.qresync = self.enabled.qresync;
        view.rev2 = self.enabled.rev2;
        let text = view.select_responses();
        self.write(&text);
        // RFC 9051 6.3.2: IMAP4rev2 SELECT also answers with the mailbox's
        // LIST response (its canonical name).
        if self.enabled.rev2 {
            let line = format!("* LIST () \"/\" {}\r\n", self.mbox_wire(&target.display));
            self.write(&line);
        }
        if let Some((uidvalidity, modseq, known)) = qresync {
            if uidvalidity == view.uidvalidity {
                match store.changes(view.id, modseq).await {
                    Ok(changes) => {
                        let known_set = known.clone();
                        let in_known = |u: Uid| match &known_set {
                            Some(k) => {
                                let max = view.uidnext.saturating_sub(1);
                                k.0.as_ref().iter().any(|s| {
                                    let (a, b) = match s {
                                        imap_types::sequence::Sequence::Single(v) => {
                                            (seq_value(v, max), seq_value(v, max))
                                        }
                                        imap_types::sequence::Sequence::Range(a, b) => {
                                            (seq_value(a, max), seq_value(b, max))
                                        }
                                    };
                                    a.min(b) <= u && u <= a.max(b)
                                })
                            }
                            None => u < view.uidnext,
                        };
                        let vanished: Vec<Uid> = changes
                            .expunged
                            .iter()
                            .copied()
                            .filter(|&u| in_known(u))
                            .collect();
                        if !vanished.is_empty() {
                            let line =
                                format!("* VANISHED (EARLIER) {}\r\n", wire::uid_set(&vanished));
                            self.write(&line);
                        }
                        let mut lines = String::new();
                        for m in &changes.changed {
                            if let Some(i) = view.index_of(m.uid) {
                                lines.push_str(&view.flags_fetch(i, true));
                            }
                        }
                        self.write(&lines);
                    }
                    Err(e) => return Ok(self.store_error(e, "NONEXISTENT")),
                }
            }
        }
        self.state.select(Open {
            view,
            watch,
            owner: target.owner,
            rights: target.rights,
            contexts: Default::default(),
        });
        let verb = if examine {
            "EXAMINE completed"
        } else {
            "SELECT completed"
        };
        Ok(if read_only {
            Reply::ok_code("READ-ONLY", verb)
        } else {
            Reply::ok_code("READ-WRITE", verb)
        })
    }
}

fn seq_value(v: &imap_types::sequence::SeqOrUid, star: u32) -> u32 {
    match v {
        imap_types::sequence::SeqOrUid::Value(n) => n.get(),
        imap_types::sequence::SeqOrUid::Asterisk => star,
    }
}

/// Resolves a sequence set against the view, as UIDs in ascending order.
pub(crate) fn resolve_uids(
    open: &Open,
    set: &SeqSet,
    uid: bool,
    saved: &[Uid],
) -> Result<Vec<Uid>, Reply> {
    let idx = open
        .view
        .resolve(set, uid, saved)
        .map_err(|_| Reply::bad("Invalid message sequence number"))?;
    Ok(idx
        .iter()
        .filter_map(|&i| open.view.msgs.get(i).map(|m| m.meta.uid))
        .collect())
}

/// The COPYUID response code (RFC 4315 3) for (source, destination) pairs
/// sorted by source.
pub(crate) fn copyuid(uidvalidity: u32, pairs: &[(Uid, Uid)]) -> Option<String> {
    if pairs.is_empty() {
        return None;
    }
    let src: Vec<Uid> = pairs.iter().map(|p| p.0).collect();
    let dst: Vec<Uid> = pairs.iter().map(|p| p.1).collect();
    let ascending = dst.windows(2).all(|w| w[0] < w[1]);
    let (s, d) = if ascending {
        (wire::uid_set(&src), wire::uid_set(&dst))
    } else {
        let join = |v: &[Uid]| {
            v.iter()
                .map(|u| u.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        (join(&src), join(&dst))
    };
    Some(format!("COPYUID {uidvalidity} {s} {d}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4315_copyuid_code() {
        assert_eq!(
            copyuid(9, &[(1, 10), (2, 11), (3, 12), (7, 13)]),
            Some("COPYUID 9 1:3,7 10:13".into())
        );
        assert_eq!(copyuid(9, &[]), None);
    }

    /// A command must be complete within `limits.command_deadline` of its
    /// first byte (plus 1/min_data_rate s per byte): a client trickling a
    /// byte at a time is disconnected, though each read is well inside the
    /// idle timer; a slow but whole-command client is not.
    #[tokio::test]
    async fn command_deadline_disconnects_a_trickling_client() {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let dir = tempfile::tempdir().unwrap();
        let services = crate::services::test_services(dir.path(), |c| {
            c.limits.command_deadline = 1;
            c.imap.preauth_timeout = 30;
        });
        let (client, server) = tokio::io::duplex(4096);
        let info = ConnInfo::for_test(crate::config::Protocol::Imap);
        let task = tokio::spawn(crate::imap::serve(Box::new(server), info, services));
        let mut c = BufReader::new(client);
        let mut l = String::new();
        c.read_line(&mut l).await.unwrap();
        // Whole commands, slowly: each one is on time.
        for i in 0..3 {
            tokio::time::sleep(Duration::from_millis(600)).await;
            c.get_mut()
                .write_all(format!("a{i} NOOP\r\n").as_bytes())
                .await
                .unwrap();
            l.clear();
            c.read_line(&mut l).await.unwrap();
            assert!(l.starts_with(&format!("a{i} OK")), "{l}");
        }
        // One byte every 200 ms: the command misses its deadline.
        let started = std::time::Instant::now();
        let bye = crate::net::testing::trickle(&mut c, b"b1 CAPABILITY").await;
        assert_eq!(bye, "* BYE Command not completed in time\r\n");
        assert!(started.elapsed() < Duration::from_secs(10));
        task.await.unwrap();
    }
}
