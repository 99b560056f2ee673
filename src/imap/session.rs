//! The IMAP session driver: reads commands through the framer, parses them
//! (`command` for the extended syntax, imap-codec for the rest), runs them
//! against the directory and the store, and writes responses.
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
//!   only grows during a session; the view mirrors it.
//!
//! The commands live by topic: `mailboxes` (names, LIST, STATUS, ACL,
//! QUOTA), `messages` (STORE, COPY/MOVE, EXPUNGE, SEARCH, SORT, THREAD),
//! `fetch` (FETCH).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use imap_codec::decode::Decoder;
use imap_codec::CommandCodec;
use imap_types::auth::AuthMechanism;
use imap_types::command::{CommandBody, SelectParameter};
use imap_types::core::{IString, NString};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use crate::config::{Config, TlsMode};
use crate::net::{Conn, ConnInfo};
use crate::services::Services;
use crate::store::{ModSeq, Quota, Store, StoreError, Uid};

use super::acl::Rights;
use super::command::{self, Cmd, SeqSet};
use super::framer::{self, Event, Framer, Refusal};
use super::selected::Selected;
use super::wire;

/// Largest literal accepted before login (a LOGIN password needs little;
/// a stranger gets no 50 MiB buffers).
const PREAUTH_MAX_LITERAL: u64 = 64 * 1024;

/// Output is flushed to the client when this much is buffered (FETCH).
const FLUSH_AT: usize = 256 * 1024;

/// The tagged status line of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    pub status: &'static str,
    pub code: Option<String>,
    pub text: String,
}

impl Reply {
    pub fn ok(text: &str) -> Reply {
        Reply {
            status: "OK",
            code: None,
            text: text.into(),
        }
    }
    pub fn ok_code(code: impl Into<String>, text: &str) -> Reply {
        Reply {
            status: "OK",
            code: Some(code.into()),
            text: text.into(),
        }
    }
    pub fn no(code: Option<&str>, text: &str) -> Reply {
        Reply {
            status: "NO",
            code: code.map(String::from),
            text: text.into(),
        }
    }
    pub fn bad(text: &str) -> Reply {
        Reply {
            status: "BAD",
            code: None,
            text: text.into(),
        }
    }
    pub fn no_perm() -> Reply {
        Reply::no(Some("NOPERM"), "Permission denied")
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

/// What ended a wait for client input.
enum Input {
    Data,
    Eof,
    Timeout,
    /// NOTIFY: a watched change happened while the client was between
    /// commands.
    Notify,
    /// The command under way missed its deadline (a trickling client).
    TooSlow,
    Shutdown,
}

const BYE_IDLE: &str = "* BYE Autologout; idle for too long\r\n";
const BYE_TOO_SLOW: &str = "* BYE Command not completed in time\r\n";

pub(crate) struct Session {
    pub conn: Conn,
    pub info: ConnInfo,
    pub services: Services,
    pub config: Arc<Config>,
    pub framer: Framer,
    /// Responses not yet written.
    pub out: Vec<u8>,
    pub user: Option<User>,
    pub sel: Option<Open>,
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
    /// Close after writing what is buffered.
    closing: bool,
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
    commands: u64,
    /// Size of the next read: small while the client is quiet (an idle
    /// connection then holds 4 KiB, not 64), doubled while reads fill it
    /// (APPEND literals).
    read_size: usize,
    /// When the command under way must be complete: set by its first
    /// byte, pushed back by `1 / limits.min_data_rate` s per byte, cleared
    /// when a command has been framed (`limits.command_deadline`; before
    /// login `imap.preauth_timeout`).
    command_deadline: Option<tokio::time::Instant>,
    /// When the client last sent bytes or a command ended: the autologout
    /// counts from here, not from a NOTIFY wake-up.
    last_input: tokio::time::Instant,
}

const READ_MIN: usize = 4 * 1024;
const READ_MAX: usize = 64 * 1024;

impl Session {
    pub fn new(conn: Conn, info: ConnInfo, services: Services) -> Session {
        let config = services.config.clone();
        let mut framer = Framer::new(
            config.limits.max_line.max(framer::MIN_LINE),
            config.imap.max_literal.min(PREAUTH_MAX_LITERAL),
        );
        if !config.imap.literal_plus {
            framer.set_max_nonsync(Some(framer::LITERAL_MINUS_MAX));
        }
        framer.set_budget(Some(services.budget.clone()));
        Session {
            conn,
            info,
            services,
            config,
            framer,
            out: Vec::new(),
            user: None,
            sel: None,
            enabled: Enabled::default(),
            saved: Vec::new(),
            notify: None,
            notify_seen: None,
            bad_commands: 0,
            auth_failures: 0,
            closing: false,
            starttls_pending: false,
            compress_pending: false,
            compressed: false,
            originating_ip: None,
            via_front_end: false,
            commands: 0,
            read_size: READ_MIN,
            command_deadline: None,
            last_input: tokio::time::Instant::now(),
        }
    }

    pub fn store(&self) -> &Store {
        self.services.store()
    }

    pub fn user_name(&self) -> String {
        self.user
            .as_ref()
            .map(|u| u.name.clone())
            .unwrap_or_default()
    }

    pub fn write(&mut self, s: &str) {
        self.out.extend_from_slice(s.as_bytes());
    }

    pub async fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            self.conn.write_all(&self.out).await?;
            self.out.clear();
        }
        self.conn.flush().await
    }

    /// Flushes when a lot is buffered (long FETCH responses).
    pub async fn maybe_flush(&mut self) -> io::Result<()> {
        if self.out.len() >= FLUSH_AT {
            self.flush().await?;
        }
        Ok(())
    }

    /// Runs the session to its end.
    pub async fn run(mut self) {
        let r = self.run_inner().await;
        match r {
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                info!(error = %e, "closing: limits.write_timeout passed");
            }
            Err(e) => debug!(error = %e, "connection ended"),
            Ok(()) => {}
        }
        // TLS: send close_notify (RFC 8446 6.1) so the peer (an mmp, a
        // client) sees a clean end rather than a truncated stream.
        let _ = tokio::time::timeout(Duration::from_secs(5), self.conn.shutdown()).await;
        info!(
            user = self.user.as_ref().map(|u| u.name.as_str()).unwrap_or("-"),
            client = self.originating_ip.as_deref().unwrap_or("-"),
            commands = self.commands,
            "imap session closed"
        );
    }

    async fn run_inner(&mut self) -> io::Result<()> {
        if self.services.shutdown.is_cancelled() {
            self.write("* BYE Server shutting down\r\n");
            return self.flush().await;
        }
        let greeting = format!(
            "* OK [CAPABILITY {}] {} IMAP4rev2 msgd ready\r\n",
            self.capabilities(),
            self.config.server.hostname
        );
        self.write(&greeting);
        self.flush().await?;
        loop {
            while let Some(ev) = self.framer.next() {
                let framed = matches!(ev, Event::Command(_) | Event::Refused { .. });
                self.event(ev).await?;
                if framed {
                    // The next command's clock starts with its first byte.
                    self.command_deadline = None;
                    self.last_input = tokio::time::Instant::now();
                }
                if self.closing {
                    return self.flush().await;
                }
                if self.starttls_pending {
                    self.starttls_pending = false;
                    self.flush().await?;
                    self.upgrade_tls().await?;
                    continue;
                }
                if self.compress_pending {
                    self.compress_pending = false;
                    self.flush().await?;
                    self.start_compression();
                    continue;
                }
                if self.services.shutdown.is_cancelled() {
                    self.write("* BYE Server shutting down\r\n");
                    return self.flush().await;
                }
            }
            self.flush().await?;
            match self.fill().await? {
                Input::Data => {}
                Input::Notify => self.notify_between_commands().await?,
                Input::Eof => return Ok(()),
                Input::Timeout => {
                    self.write(BYE_IDLE);
                    return self.flush().await;
                }
                Input::TooSlow => {
                    self.write(BYE_TOO_SLOW);
                    return self.flush().await;
                }
                Input::Shutdown => {
                    self.write("* BYE Server shutting down\r\n");
                    return self.flush().await;
                }
            }
        }
    }

    fn timeout(&self) -> Duration {
        let secs = if self.user.is_some() {
            self.config.imap.idle_timeout
        } else {
            self.config.imap.preauth_timeout
        };
        Duration::from_secs(secs.max(1))
    }

    /// How long a whole command may take: short before login.
    fn command_limit(&self) -> Duration {
        let secs = if self.user.is_some() {
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
        let now = tokio::time::Instant::now();
        let limit = self.command_limit();
        let deadline = self.command_deadline.get_or_insert(now + limit);
        let rate = self.config.limits.min_data_rate;
        if rate > 0 {
            *deadline += Duration::from_secs_f64(n as f64 / rate as f64);
        }
    }

    /// Reads more client bytes into the framer.
    async fn fill(&mut self) -> io::Result<Input> {
        let mut buf = vec![0u8; self.read_size];
        let idle = self.last_input + self.timeout();
        let (until, slow) = match self.command_deadline {
            Some(d) if d < idle => (d, true),
            _ => (idle, false),
        };
        let shutdown = self.services.shutdown.clone();
        // NOTIFY: only between commands, not inside one.
        let wake = self.notify_wake(self.command_deadline.is_none());
        tokio::select! {
            _ = wake => Ok(Input::Notify),
            r = tokio::time::timeout_at(until, self.conn.read(&mut buf)) => match r {
                Err(_) if slow => Ok(Input::TooSlow),
                Err(_) => Ok(Input::Timeout),
                Ok(Ok(0)) => Ok(Input::Eof),
                Ok(Ok(n)) => {
                    self.last_input = tokio::time::Instant::now();
                    self.note_input(n);
                    self.framer.push(buf.get(..n).unwrap_or_default());
                    self.read_size = if n == buf.len() {
                        (self.read_size * 2).min(READ_MAX)
                    } else {
                        READ_MIN
                    };
                    Ok(Input::Data)
                }
                Ok(Err(e)) => Err(e),
            },
            _ = shutdown.cancelled() => Ok(Input::Shutdown),
        }
    }

    /// Reads one line in line mode (AUTHENTICATE data). `None`: the
    /// connection ended, timed out or the line was too long (a BAD/BYE has
    /// been queued as needed).
    async fn read_line(&mut self) -> io::Result<Option<Vec<u8>>> {
        self.framer.set_line_mode(true);
        let r = loop {
            match self.framer.next() {
                Some(Event::Line(l)) => break Some(l),
                Some(_) => break None,
                None => {}
            }
            self.flush().await?;
            match self.fill().await? {
                Input::Data | Input::Notify => {}
                Input::Eof => {
                    self.closing = true;
                    break None;
                }
                Input::Timeout => {
                    self.write(BYE_IDLE);
                    self.closing = true;
                    break None;
                }
                Input::TooSlow => {
                    self.write(BYE_TOO_SLOW);
                    self.closing = true;
                    break None;
                }
                Input::Shutdown => {
                    self.write("* BYE Server shutting down\r\n");
                    self.closing = true;
                    break None;
                }
            }
        };
        self.framer.set_line_mode(false);
        Ok(r)
    }

    async fn event(&mut self, ev: Event) -> io::Result<()> {
        match ev {
            Event::Continue => {
                self.write("+ Ready for literal data\r\n");
                self.flush().await
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
                    self.closing = true;
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

    fn count_bad(&mut self) {
        self.bad_commands += 1;
        if self.bad_commands >= self.config.limits.max_bad_commands.max(1) {
            self.write("* BYE Too many invalid commands\r\n");
            self.closing = true;
        }
    }

    async fn command(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.commands += 1;
        let (tag, reply, may_sync) = match command::parse(bytes) {
            Some(Ok((tag, cmd))) => {
                debug!(%tag, command = cmd.name(), "command");
                // RFC 9051 7.5.1: no EXPUNGE during or right after FETCH,
                // STORE, SEARCH by sequence number.
                let may_sync = !cmd.by_sequence_number();
                let reply = self.execute_ext(&tag, cmd).await?;
                (tag, reply, may_sync)
            }
            Some(Err(e)) => {
                debug!(tag = %e.tag, reason = e.reason, "syntax error");
                // RFC 5182 2.1: a failed SEARCH ... SAVE empties `$`.
                if e.command == "SEARCH" {
                    self.saved.clear();
                }
                (
                    e.tag,
                    Reply::bad(&format!("Syntax error: {}", e.reason)),
                    false,
                )
            }
            None => {
                let cmd = match CommandCodec::default().decode(bytes) {
                    Ok((&[], cmd)) => cmd,
                    _ => {
                        let tag = framer::parse_tag(bytes).unwrap_or_else(|| "*".into());
                        debug!(%tag, "unparsable command");
                        self.write(&format!("{tag} BAD Syntax error in command\r\n"));
                        self.count_bad();
                        return Ok(());
                    }
                };
                let tag = cmd.tag.inner().to_string();
                debug!(%tag, command = cmd.body.name(), "command");
                let reply = self.execute(&tag, cmd.body).await?;
                (tag, reply, true)
            }
        };
        if may_sync && reply.status != "BAD" && !self.closing {
            self.sync(false).await;
        }
        self.notify_after_command(may_sync).await;
        let mut line = format!("{tag} {}", reply.status);
        if let Some(code) = &reply.code {
            line.push_str(&format!(" [{code}]"));
        }
        line.push(' ');
        line.push_str(&reply.text);
        line.push_str("\r\n");
        self.write(&line);
        if reply.status == "BAD" {
            self.count_bad();
        }
        Ok(())
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
        if self.user.is_none() {
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

    async fn upgrade_tls(&mut self) -> io::Result<()> {
        let (placeholder, _) = tokio::io::duplex(1);
        let plain = std::mem::replace(&mut self.conn, Box::new(placeholder));
        // RFC 3501 6.2.1: anything the client sent before the handshake is
        // discarded.
        self.framer.clear();
        match self.services.tls.accept(plain).await {
            Ok(tls) => {
                self.conn = tls;
                self.info.tls_active = true;
                debug!("STARTTLS done");
                Ok(())
            }
            Err(e) => {
                info!(error = %e, "STARTTLS handshake failed");
                self.closing = true;
                Err(e)
            }
        }
    }

    /// COMPRESS=DEFLATE (RFC 4978): from now on both directions are
    /// compressed.
    fn start_compression(&mut self) {
        let (placeholder, _) = tokio::io::duplex(1);
        let plain = std::mem::replace(&mut self.conn, Box::new(placeholder));
        self.conn = Box::new(super::compress::Deflated::new(plain));
        self.compressed = true;
        debug!("COMPRESS=DEFLATE active");
    }

    /// Applies the selected mailbox's changes and queues their responses.
    /// Without `force`, only when the store signalled a change.
    pub async fn sync(&mut self, force: bool) {
        let store = self.services.store().clone();
        let Some(open) = self.sel.as_mut() else {
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
        if let Some(o) = self.sel.as_mut() {
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
            StoreError::Internal(detail) => {
                error!(%detail, "store error");
                Reply::no(Some("SERVERBUG"), "Internal error, try again later")
            }
        }
    }

    /// Commands of msgd's own parser.
    async fn execute_ext(&mut self, tag: &str, cmd: Cmd) -> io::Result<Reply> {
        if self.user.is_none() {
            return Ok(Reply::bad("Command not valid before login"));
        }
        let needs_selected = matches!(
            cmd,
            Cmd::Fetch { .. }
                | Cmd::Store { .. }
                | Cmd::Copy { .. }
                | Cmd::UidExpunge { .. }
                | Cmd::Search { .. }
                | Cmd::Sort { .. }
                | Cmd::Thread { .. }
                | Cmd::Replace { .. }
                | Cmd::CancelUpdate { .. }
        );
        if needs_selected && self.sel.is_none() {
            return Ok(Reply::bad("No mailbox selected"));
        }
        let condstore_before = self.sel.as_ref().map(|o| o.view.condstore);
        let reply = self.execute_ext_cmd(tag, cmd).await?;
        Ok(self.condstore_enabled_reply(condstore_before, reply))
    }

    /// RFC 7162 3.1: the first CONDSTORE enabling command on an already
    /// selected mailbox reports its HIGHESTMODSEQ in the tagged OK (in an
    /// untagged OK when the tagged one carries another code).
    fn condstore_enabled_reply(&mut self, before: Option<bool>, mut reply: Reply) -> Reply {
        let Some(open) = self.sel.as_ref() else {
            return reply;
        };
        if before != Some(false) || !open.view.condstore || reply.status != "OK" {
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
        if self.sel.is_some() {
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

    async fn execute(&mut self, tag: &str, body: CommandBody<'_>) -> io::Result<Reply> {
        // Any state.
        match body {
            CommandBody::Capability => {
                let line = format!("* CAPABILITY {}\r\n", self.capabilities());
                self.write(&line);
                return Ok(Reply::ok("CAPABILITY completed"));
            }
            CommandBody::Noop => {
                self.sync(true).await;
                return Ok(Reply::ok("NOOP completed"));
            }
            CommandBody::Logout => {
                self.write("* BYE Logging out\r\n");
                self.closing = true;
                return Ok(Reply::ok("LOGOUT completed"));
            }
            CommandBody::Id { parameters } => {
                self.id(parameters.as_deref());
                return Ok(Reply::ok("ID completed"));
            }
            _ => {}
        }
        if self.user.is_none() {
            return self.not_authenticated(tag, body).await;
        }
        self.authenticated(tag, body).await
    }

    /// ID (RFC 2971). Before login, a proxy's "x-originating-ip" is kept
    /// for the log.
    fn id(&mut self, params: Option<&[(IString<'_>, NString<'_>)]>) {
        if self.user.is_none() {
            for (k, v) in params.unwrap_or_default() {
                if k.as_ref().eq_ignore_ascii_case(b"x-originating-ip") {
                    if let Some(v) = v.0.as_ref() {
                        let ip = String::from_utf8_lossy(v.as_ref());
                        // Keep it short and printable: it goes to the log.
                        let ip: String = ip
                            .chars()
                            .filter(|c| c.is_ascii_graphic())
                            .take(64)
                            .collect();
                        self.originating_ip = Some(ip);
                        self.via_front_end = true;
                    }
                }
            }
        }
        self.write("* ID (\"name\" \"msgd\" \"version\" \"");
        self.write(env!("CARGO_PKG_VERSION"));
        self.write("\")\r\n");
    }

    async fn not_authenticated(&mut self, _tag: &str, body: CommandBody<'_>) -> io::Result<Reply> {
        match body {
            CommandBody::StartTLS => {
                if !self.starttls_available() {
                    return Ok(Reply::bad("STARTTLS not available"));
                }
                self.starttls_pending = true;
                Ok(Reply::ok("Begin TLS negotiation now"))
            }
            CommandBody::Login { username, password } => {
                if !self.plaintext_ok() {
                    return Ok(Reply::no(
                        Some("PRIVACYREQUIRED"),
                        "LOGIN disabled without TLS; use STARTTLS",
                    ));
                }
                let user = String::from_utf8_lossy(wire::astring_bytes(&username)).into_owned();
                let pass = String::from_utf8_lossy(wire::astring_bytes(password.declassify()))
                    .into_owned();
                self.login(crate::login::Credentials::password(&user, &pass))
                    .await
            }
            CommandBody::Authenticate {
                mechanism,
                initial_response,
            } => {
                if mechanism != AuthMechanism::Plain {
                    return Ok(Reply::no(None, "Unsupported authentication mechanism"));
                }
                if !self.plaintext_ok() {
                    return Ok(Reply::no(
                        Some("PRIVACYREQUIRED"),
                        "Plaintext authentication disabled without TLS; use STARTTLS",
                    ));
                }
                let data = match initial_response {
                    Some(d) => d.declassify().to_vec(),
                    None => {
                        self.write("+ \r\n");
                        self.flush().await?;
                        let Some(line) = self.read_line().await? else {
                            return Ok(Reply::bad("Authentication aborted"));
                        };
                        if line == b"*" {
                            return Ok(Reply::bad("Authentication cancelled"));
                        }
                        use base64::Engine;
                        match base64::engine::general_purpose::STANDARD.decode(&line) {
                            Ok(d) => d,
                            Err(_) => return Ok(Reply::bad("Invalid base64 data")),
                        }
                    }
                };
                let Some((authz, authc, pass)) = crate::login::parse_plain(&data) else {
                    return Ok(Reply::bad("Invalid PLAIN data"));
                };
                self.login(crate::login::Credentials::plain(&authz, &authc, &pass))
                    .await
            }
            _ => Ok(Reply::bad("Command not valid before login")),
        }
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
                    self.closing = true;
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
        let quota = self.quota_of(account.quota);
        self.user = Some(User {
            name: account.address,
            quota,
            proxied: proxy,
        });
        let caps = self.capabilities();
        Ok(Reply::ok_code(format!("CAPABILITY {caps}"), "Logged in"))
    }

    /// Literal limits as before login (UNAUTHENTICATE, RFC 8437).
    pub(crate) fn reset_preauth_limits(&mut self) {
        self.framer
            .set_max_literal(self.config.imap.max_literal.min(PREAUTH_MAX_LITERAL));
    }

    /// Limits of an account: its directory quota or the store default.
    pub fn quota_of(&self, directory_quota: Option<u64>) -> Quota {
        let nonzero = |q: u64| (q > 0).then_some(q);
        Quota {
            storage: directory_quota.or(nonzero(self.config.store.default_quota)),
            messages: nonzero(self.config.store.default_message_quota),
        }
    }

    async fn authenticated(&mut self, _tag: &str, body: CommandBody<'_>) -> io::Result<Reply> {
        match body {
            CommandBody::StartTLS
            | CommandBody::Login { .. }
            | CommandBody::Authenticate { .. } => Ok(Reply::bad("Already authenticated")),
            CommandBody::Namespace => {
                let other = format!("{}/", super::acl::OTHER_USERS);
                let line = format!(
                    "* NAMESPACE ((\"\" \"/\")) (({} \"/\")) NIL\r\n",
                    wire::string(&other)
                );
                self.write(&line);
                Ok(Reply::ok("NAMESPACE completed"))
            }
            CommandBody::Select {
                mailbox,
                parameters,
            } => {
                self.select(&mailbox_bytes(&mailbox), false, &parameters)
                    .await
            }
            CommandBody::Examine {
                mailbox,
                parameters,
            } => {
                self.select(&mailbox_bytes(&mailbox), true, &parameters)
                    .await
            }
            CommandBody::Create { mailbox } => self.create(&mailbox_bytes(&mailbox), &[]).await,
            CommandBody::Delete { mailbox } => self.delete(&mailbox_bytes(&mailbox)).await,
            CommandBody::Rename { from, to } => {
                self.rename(&mailbox_bytes(&from), &mailbox_bytes(&to))
                    .await
            }
            CommandBody::Subscribe { mailbox } => {
                self.subscribe(&mailbox_bytes(&mailbox), true).await
            }
            CommandBody::Unsubscribe { mailbox } => {
                self.subscribe(&mailbox_bytes(&mailbox), false).await
            }
            CommandBody::Lsub {
                reference,
                mailbox_wildcard,
            } => {
                let pattern = match &mailbox_wildcard {
                    imap_types::mailbox::ListMailbox::Token(t) => t.as_ref().to_vec(),
                    imap_types::mailbox::ListMailbox::String(s) => s.as_ref().to_vec(),
                };
                self.lsub(&mailbox_bytes(&reference), &pattern).await
            }
            CommandBody::Idle => self.idle().await,
            CommandBody::Compress { .. } => {
                if self.compressed {
                    return Ok(Reply::no(
                        Some("COMPRESSIONACTIVE"),
                        "Compression is already active",
                    ));
                }
                self.compress_pending = true;
                Ok(Reply::ok("DEFLATE active"))
            }
            CommandBody::GetQuotaRoot { mailbox } => {
                self.getquotaroot(&mailbox_bytes(&mailbox)).await
            }
            CommandBody::GetQuota { root } => self.getquota(root.as_ref()).await,
            CommandBody::SetQuota { .. } => {
                Ok(Reply::no(Some("NOPERM"), "Quotas are set in the directory"))
            }
            CommandBody::Check => {
                if self.sel.is_none() {
                    return Ok(Reply::bad("No mailbox selected"));
                }
                self.sync(true).await;
                Ok(Reply::ok("CHECK completed"))
            }
            CommandBody::Close => {
                let Some(open) = self.sel.take() else {
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
            CommandBody::Unselect => {
                if self.sel.take().is_none() {
                    return Ok(Reply::bad("No mailbox selected"));
                }
                self.saved.clear();
                Ok(Reply::ok("UNSELECT completed"))
            }
            CommandBody::Expunge => {
                if self.sel.is_none() {
                    return Ok(Reply::bad("No mailbox selected"));
                }
                self.expunge(None).await
            }
            _ => Ok(Reply::bad("Command not supported")),
        }
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
        if self.sel.take().is_some() && (self.enabled.qresync || self.enabled.rev2) {
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
        self.sel = Some(Open {
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

    /// IDLE (RFC 2177): push changes until DONE, the idle timeout or
    /// shutdown.
    async fn idle(&mut self) -> io::Result<Reply> {
        self.sync(true).await;
        self.write("+ idling\r\n");
        self.flush().await?;
        self.framer.set_line_mode(true);
        let mut watch = self.sel.as_ref().map(|o| o.watch.clone());
        let timeout = tokio::time::sleep(Duration::from_secs(self.config.imap.idle_timeout.max(1)));
        tokio::pin!(timeout);
        let shutdown = self.services.shutdown.clone();
        let mut buf = vec![0u8; 4096];
        let reply = loop {
            match self.framer.next() {
                Some(Event::Line(l)) => {
                    break if l.eq_ignore_ascii_case(b"DONE") {
                        Reply::ok("IDLE terminated")
                    } else {
                        Reply::bad("Expected DONE")
                    };
                }
                Some(_) => break Reply::bad("Expected DONE"),
                None => {}
            }
            let changed = async {
                match watch.as_mut() {
                    Some(w) => w.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            let notified = self.notify_wake_user();
            tokio::select! {
                _ = notified => {
                    self.notify_poll().await;
                    self.flush().await?;
                }
                r = self.conn.read(&mut buf) => match r {
                    Ok(0) | Err(_) => {
                        self.closing = true;
                        break Reply::bad("Connection closed");
                    }
                    Ok(n) => self.framer.push(buf.get(..n).unwrap_or_default()),
                },
                ok = changed => {
                    if !ok {
                        // The store dropped the sender: stop watching.
                        watch = None;
                    }
                    self.sync(true).await;
                    self.notify_fetch_new().await;
                    self.flush().await?;
                }
                _ = &mut timeout => {
                    self.write("* BYE Autologout; idle for too long\r\n");
                    self.closing = true;
                    break Reply::ok("IDLE terminated");
                }
                _ = shutdown.cancelled() => {
                    self.write("* BYE Server shutting down\r\n");
                    self.closing = true;
                    break Reply::ok("IDLE terminated");
                }
            }
        };
        self.framer.set_line_mode(false);
        Ok(reply)
    }
}

fn seq_value(v: &imap_types::sequence::SeqOrUid, star: u32) -> u32 {
    match v {
        imap_types::sequence::SeqOrUid::Value(n) => n.get(),
        imap_types::sequence::SeqOrUid::Asterisk => star,
    }
}

/// The raw bytes of a mailbox argument parsed by imap-codec.
fn mailbox_bytes(m: &imap_types::mailbox::Mailbox<'_>) -> Vec<u8> {
    match m {
        imap_types::mailbox::Mailbox::Inbox => b"INBOX".to_vec(),
        imap_types::mailbox::Mailbox::Other(o) => o.as_ref().to_vec(),
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
