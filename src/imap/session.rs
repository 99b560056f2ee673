//! The IMAP session driver: reads commands through the framer, decodes them
//! with imap-codec, runs them against the directory and the store, and
//! writes responses.
//!
//! Invariants:
//! - One command at a time; a command's untagged responses, then the
//!   selected mailbox's pending changes (where RFC 3501 7.4.1 allows them),
//!   then its tagged status line.
//! - The selected mailbox view (`Selected`) changes only in `sync` and in
//!   the commands that change it on purpose; every change is announced.
//! - Client data never panics the session: every length is capped by the
//!   framer, every decode failure is a BAD.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use imap_codec::decode::Decoder;
use imap_codec::CommandCodec;
use imap_types::auth::AuthMechanism;
use imap_types::command::CommandBody;
use imap_types::core::Charset;
use imap_types::flag::{StoreResponse, StoreType};
use imap_types::mailbox::ListMailbox;
use imap_types::search::SearchKey;
use imap_types::sequence::SequenceSet;
use imap_types::status::StatusDataItemName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use crate::config::{Config, TlsMode};
use crate::directory::{AuthResult, DirError};
use crate::net::{Conn, ConnInfo};
use crate::services::Services;
use crate::store::{FlagOp, Flags, ModSeq, NewMessage, Quota, Store, StoreError, Uid};

use super::framer::{self, Event, Framer, Refusal};
use super::selected::Selected;
use super::{list, search, wire};

/// Unit of the growing delay after a failed login (1, 2, 4 units).
#[cfg(not(test))]
const AUTH_DELAY: Duration = Duration::from_secs(1);
#[cfg(test)]
const AUTH_DELAY: Duration = Duration::from_millis(10);

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
}

/// The logged-in user.
pub(crate) struct User {
    /// Store user: the account's canonical address.
    pub name: String,
    pub quota: Quota,
}

/// The selected mailbox: the view plus the store's change signal.
pub(crate) struct Open {
    pub view: Selected,
    pub watch: watch::Receiver<ModSeq>,
}

/// What ended a wait for client input.
enum Input {
    Data,
    Eof,
    Timeout,
    Shutdown,
}

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
    bad_commands: u32,
    auth_failures: u32,
    /// Close after writing what is buffered.
    closing: bool,
    /// STARTTLS was accepted: upgrade after the tagged OK is written.
    starttls_pending: bool,
    commands: u64,
}

impl Session {
    pub fn new(conn: Conn, info: ConnInfo, services: Services) -> Session {
        let config = services.config.clone();
        let framer = Framer::new(
            config.limits.max_line,
            config.imap.max_literal.min(PREAUTH_MAX_LITERAL),
        );
        Session {
            conn,
            info,
            services,
            config,
            framer,
            out: Vec::new(),
            user: None,
            sel: None,
            bad_commands: 0,
            auth_failures: 0,
            closing: false,
            starttls_pending: false,
            commands: 0,
        }
    }

    pub fn store(&self) -> &Store {
        self.services.store()
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
        if let Err(e) = r {
            debug!(error = %e, "connection ended");
        }
        info!(
            user = self.user.as_ref().map(|u| u.name.as_str()).unwrap_or("-"),
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
            "* OK [CAPABILITY {}] {} IMAP4rev1 msgd ready\r\n",
            self.capabilities(),
            self.config.server.hostname
        );
        self.write(&greeting);
        self.flush().await?;
        loop {
            while let Some(ev) = self.framer.next() {
                self.event(ev).await?;
                if self.closing {
                    return self.flush().await;
                }
                if self.starttls_pending {
                    self.starttls_pending = false;
                    self.flush().await?;
                    self.upgrade_tls().await?;
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
                Input::Eof => return Ok(()),
                Input::Timeout => {
                    self.write("* BYE Autologout; idle for too long\r\n");
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

    /// Reads more client bytes into the framer.
    async fn fill(&mut self) -> io::Result<Input> {
        let mut buf = vec![0u8; 64 * 1024];
        let timeout = self.timeout();
        let shutdown = self.services.shutdown.clone();
        tokio::select! {
            r = tokio::time::timeout(timeout, self.conn.read(&mut buf)) => match r {
                Err(_) => Ok(Input::Timeout),
                Ok(Ok(0)) => Ok(Input::Eof),
                Ok(Ok(n)) => {
                    self.framer.push(buf.get(..n).unwrap_or_default());
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
                Input::Data => {}
                Input::Eof => {
                    self.closing = true;
                    break None;
                }
                Input::Timeout => {
                    self.write("* BYE Autologout; idle for too long\r\n");
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
                };
                self.write(&line);
                // An over-long line is garbage; a too-big literal is a
                // client's honest attempt and does not count.
                if reason == Refusal::LineTooLong {
                    self.count_bad();
                }
                Ok(())
            }
            Event::Line(_) => Ok(()),
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
        let name = cmd.body.name();
        debug!(%tag, command = name, "command");
        // RFC 3501 7.4.1: no EXPUNGE during or right after FETCH, STORE,
        // SEARCH by sequence number.
        let may_sync = !matches!(
            cmd.body,
            CommandBody::Fetch { uid: false, .. }
                | CommandBody::Store { uid: false, .. }
                | CommandBody::Search { uid: false, .. }
        );
        let reply = self.execute(&tag, cmd.body).await?;
        if may_sync && reply.status != "BAD" && !self.closing {
            self.sync(false).await;
        }
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
        let mut caps = vec![
            "IMAP4rev1",
            "LITERAL+",
            "SASL-IR",
            "ID",
            "IDLE",
            "NAMESPACE",
            "UIDPLUS",
            "UNSELECT",
            "CHILDREN",
            "SPECIAL-USE",
            "MOVE",
        ];
        if self.user.is_none() {
            if self.starttls_available() {
                caps.push("STARTTLS");
            }
            if self.plaintext_ok() {
                caps.push("AUTH=PLAIN");
            } else {
                caps.push("LOGINDISABLED");
            }
        }
        caps.join(" ")
    }

    fn starttls_available(&self) -> bool {
        self.info.tls_mode == TlsMode::StartTls && !self.info.tls_active
    }

    fn plaintext_ok(&self) -> bool {
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
        let text = open.view.apply(changes, recent_from);
        self.out.extend_from_slice(text.as_bytes());
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

    /// A mailbox name from the wire, canonical for the store.
    fn mailbox_name(&self, m: &imap_types::mailbox::Mailbox<'_>) -> Result<String, Reply> {
        let raw =
            wire::mailbox_from_wire(m).ok_or_else(|| Reply::bad("Mailbox name is not UTF-8"))?;
        crate::store::normalize_name(&raw)
            .map_err(|_| Reply::no(Some("CANNOT"), "Invalid mailbox name"))
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
            CommandBody::Id { .. } => {
                self.write("* ID (\"name\" \"msgd\" \"version\" \"");
                self.write(env!("CARGO_PKG_VERSION"));
                self.write("\")\r\n");
                return Ok(Reply::ok("ID completed"));
            }
            _ => {}
        }
        if self.user.is_none() {
            return self.not_authenticated(tag, body).await;
        }
        self.authenticated(tag, body).await
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
                self.login(&user, &pass).await
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
                let Some((authz, authc, pass)) = parse_plain(&data) else {
                    return Ok(Reply::bad("Invalid PLAIN data"));
                };
                if !authz.is_empty() && authz != authc {
                    return Ok(Reply::no(
                        Some("AUTHORIZATIONFAILED"),
                        "Not allowed to act as another user",
                    ));
                }
                self.login(&authc, &pass).await
            }
            _ => Ok(Reply::bad("Command not valid before login")),
        }
    }

    async fn login(&mut self, login: &str, password: &str) -> io::Result<Reply> {
        let dir = self.services.directory.clone();
        let domain = self.config.server.domain.clone();
        match dir.authenticate(login, password, &domain).await {
            Ok(AuthResult::Ok(account)) => {
                if let Err(e) = self
                    .store()
                    .ensure_user(&account.address, account.partition.as_deref())
                    .await
                {
                    return Ok(self.store_error(e, "UNAVAILABLE"));
                }
                let storage = account.quota.or(match self.config.store.default_quota {
                    0 => None,
                    q => Some(q),
                });
                info!(user = %account.address, "imap login");
                self.framer.set_max_literal(self.config.imap.max_literal);
                self.user = Some(User {
                    name: account.address,
                    quota: Quota {
                        storage,
                        messages: None,
                    },
                });
                let caps = self.capabilities();
                Ok(Reply::ok_code(format!("CAPABILITY {caps}"), "Logged in"))
            }
            Ok(AuthResult::Inactive) => {
                info!(login, "imap login refused: account inactive");
                Ok(Reply::no(Some("CONTACTADMIN"), "Account disabled"))
            }
            Ok(AuthResult::Failed) => {
                self.auth_failures += 1;
                info!(login, failures = self.auth_failures, "imap login failed");
                let shift = (self.auth_failures - 1).min(2);
                tokio::time::sleep(AUTH_DELAY * (1u32 << shift)).await;
                if self.auth_failures >= self.config.limits.max_auth_failures.max(1) {
                    self.write("* BYE Too many authentication failures\r\n");
                    self.closing = true;
                }
                Ok(Reply::no(
                    Some("AUTHENTICATIONFAILED"),
                    "Authentication failed",
                ))
            }
            Err(DirError::Temporary(e)) => {
                warn!(error = %e, "directory unavailable for login");
                Ok(Reply::no(
                    Some("UNAVAILABLE"),
                    "Authentication temporarily unavailable",
                ))
            }
        }
    }

    async fn authenticated(&mut self, _tag: &str, body: CommandBody<'_>) -> io::Result<Reply> {
        let user = self
            .user
            .as_ref()
            .map(|u| u.name.clone())
            .unwrap_or_default();
        match body {
            CommandBody::StartTLS
            | CommandBody::Login { .. }
            | CommandBody::Authenticate { .. } => Ok(Reply::bad("Already authenticated")),
            CommandBody::Namespace => {
                self.write("* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n");
                Ok(Reply::ok("NAMESPACE completed"))
            }
            CommandBody::Select { mailbox, .. } => self.select(&user, &mailbox, false).await,
            CommandBody::Examine { mailbox, .. } => self.select(&user, &mailbox, true).await,
            CommandBody::Create { mailbox } => {
                let name = match self.mailbox_name(&mailbox) {
                    Ok(n) => n,
                    Err(r) => {
                        // "foo/" asks for a parent level: create "foo".
                        let raw = wire::mailbox_from_wire(&mailbox).unwrap_or_default();
                        match crate::store::normalize_name(raw.trim_end_matches('/')) {
                            Ok(n) if raw.ends_with('/') => n,
                            _ => return Ok(r),
                        }
                    }
                };
                if name == "INBOX" {
                    return Ok(Reply::no(Some("ALREADYEXISTS"), "INBOX always exists"));
                }
                // Superior levels are created as needed (RFC 3501 6.3.3).
                for (i, c) in name.char_indices() {
                    if c == crate::store::DELIMITER {
                        let parent = name.get(..i).unwrap_or_default();
                        match self.store().create_mailbox(&user, parent, None).await {
                            Ok(_) | Err(StoreError::MailboxExists) => {}
                            Err(e) => return Ok(self.store_error(e, "NONEXISTENT")),
                        }
                    }
                }
                match self.store().create_mailbox(&user, &name, None).await {
                    Ok(_) => Ok(Reply::ok("CREATE completed")),
                    Err(e) => Ok(self.store_error(e, "NONEXISTENT")),
                }
            }
            CommandBody::Delete { mailbox } => {
                let name = match self.mailbox_name(&mailbox) {
                    Ok(n) => n,
                    Err(r) => return Ok(r),
                };
                if name == "INBOX" {
                    return Ok(Reply::no(Some("CANNOT"), "INBOX cannot be deleted"));
                }
                match self.store().delete_mailbox(&user, &name).await {
                    Ok(()) => {
                        if self.sel.as_ref().is_some_and(|o| o.view.name == name) {
                            self.sel = None;
                        }
                        Ok(Reply::ok("DELETE completed"))
                    }
                    Err(e) => Ok(self.store_error(e, "NONEXISTENT")),
                }
            }
            CommandBody::Rename { from, to } => {
                let (from, to) = match (self.mailbox_name(&from), self.mailbox_name(&to)) {
                    (Ok(f), Ok(t)) => (f, t),
                    (Err(r), _) | (_, Err(r)) => return Ok(r),
                };
                match self.store().rename_mailbox(&user, &from, &to).await {
                    Ok(()) => Ok(Reply::ok("RENAME completed")),
                    Err(e) => Ok(self.store_error(e, "NONEXISTENT")),
                }
            }
            CommandBody::Subscribe { mailbox } => self.subscribe(&user, &mailbox, true).await,
            CommandBody::Unsubscribe { mailbox } => self.subscribe(&user, &mailbox, false).await,
            CommandBody::List {
                reference,
                mailbox_wildcard,
            } => self.list(&user, &reference, &mailbox_wildcard, false).await,
            CommandBody::Lsub {
                reference,
                mailbox_wildcard,
            } => self.list(&user, &reference, &mailbox_wildcard, true).await,
            CommandBody::Status {
                mailbox,
                item_names,
            } => self.status(&user, &mailbox, &item_names).await,
            CommandBody::Append {
                mailbox,
                flags,
                date,
                message,
            } => {
                let name = match self.mailbox_name(&mailbox) {
                    Ok(n) => n,
                    Err(r) => return Ok(r),
                };
                let data = match message {
                    imap_types::extensions::binary::LiteralOrLiteral8::Literal(l) => {
                        l.into_inner().into_owned()
                    }
                    imap_types::extensions::binary::LiteralOrLiteral8::Literal8(l) => {
                        l.data.into_owned()
                    }
                };
                if data.is_empty() {
                    return Ok(Reply::no(None, "Cannot append an empty message"));
                }
                let msg = NewMessage {
                    data: Arc::new(data),
                    flags: wire::flags_from_wire(&flags),
                    internal_date: date.as_ref().map(wire::date_from_wire),
                };
                let quota = self.user.as_ref().map(|u| u.quota).unwrap_or_default();
                match self.store().append(&user, &name, msg, quota).await {
                    Ok(placed) => {
                        if self.sel.as_ref().is_some_and(|o| o.view.name == name) {
                            self.sync(true).await;
                        }
                        Ok(Reply::ok_code(
                            format!("APPENDUID {} {}", placed.uidvalidity, placed.uid),
                            "APPEND completed",
                        ))
                    }
                    Err(e) => Ok(self.store_error(e, "TRYCREATE")),
                }
            }
            CommandBody::Idle => self.idle().await,
            body @ (CommandBody::Check
            | CommandBody::Close
            | CommandBody::Unselect
            | CommandBody::Expunge
            | CommandBody::ExpungeUid { .. }
            | CommandBody::Search { .. }
            | CommandBody::Fetch { .. }
            | CommandBody::Store { .. }
            | CommandBody::Copy { .. }
            | CommandBody::Move { .. }) => {
                if self.sel.is_none() {
                    return Ok(Reply::bad("No mailbox selected"));
                }
                self.selected(&user, body).await
            }
            _ => Ok(Reply::bad("Command not supported")),
        }
    }

    async fn subscribe(
        &mut self,
        user: &str,
        mailbox: &imap_types::mailbox::Mailbox<'_>,
        on: bool,
    ) -> io::Result<Reply> {
        let name = match self.mailbox_name(mailbox) {
            Ok(n) => n,
            Err(r) => return Ok(r),
        };
        match self.store().subscribe(user, &name, on).await {
            Ok(()) => Ok(Reply::ok(if on {
                "SUBSCRIBE completed"
            } else {
                "UNSUBSCRIBE completed"
            })),
            Err(e) => Ok(self.store_error(e, "NONEXISTENT")),
        }
    }

    async fn select(
        &mut self,
        user: &str,
        mailbox: &imap_types::mailbox::Mailbox<'_>,
        read_only: bool,
    ) -> io::Result<Reply> {
        // The previous mailbox is deselected whatever happens next
        // (RFC 3501 6.3.1), without expunge.
        self.sel = None;
        let name = match self.mailbox_name(mailbox) {
            Ok(n) => n,
            Err(r) => return Ok(r),
        };
        let store = self.store().clone();
        let snap = match store.snapshot(user, &name).await {
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
        let view = Selected::new(snap, recent_from, read_only);
        let text = view.select_responses();
        self.write(&text);
        self.sel = Some(Open { view, watch });
        Ok(if read_only {
            Reply::ok_code("READ-ONLY", "EXAMINE completed")
        } else {
            Reply::ok_code("READ-WRITE", "SELECT completed")
        })
    }

    async fn list(
        &mut self,
        user: &str,
        reference: &imap_types::mailbox::Mailbox<'_>,
        pattern: &ListMailbox<'_>,
        lsub: bool,
    ) -> io::Result<Reply> {
        let reference = match reference {
            imap_types::mailbox::Mailbox::Inbox => "INBOX".to_string(),
            other => wire::mailbox_from_wire(other).unwrap_or_default(),
        };
        let pattern_raw = match pattern {
            ListMailbox::Token(t) => String::from_utf8_lossy(t.as_ref()).into_owned(),
            ListMailbox::String(s) => String::from_utf8_lossy(s.as_ref()).into_owned(),
        };
        let pattern = super::utf7::from_wire(&pattern_raw);
        let verb = if lsub { "LSUB" } else { "LIST" };
        if pattern.is_empty() && !lsub {
            // RFC 3501 6.3.8: the delimiter and the root of the reference.
            self.write("* LIST (\\Noselect) \"/\" \"\"\r\n");
            return Ok(Reply::ok("LIST completed"));
        }
        let full = list::full_pattern(&reference, &pattern);
        let entries = if lsub {
            match self.store().subscriptions(user).await {
                Ok(s) => list::lsub(&s, &full),
                Err(e) => return Ok(self.store_error(e, "NONEXISTENT")),
            }
        } else {
            match self.store().list(user).await {
                Ok(m) => list::list(&m, &full),
                Err(e) => return Ok(self.store_error(e, "NONEXISTENT")),
            }
        };
        for e in entries {
            let line = format!(
                "* {verb} ({}) \"/\" {}\r\n",
                e.attributes.join(" "),
                wire::mailbox(&e.name)
            );
            self.write(&line);
        }
        Ok(Reply::ok(if lsub {
            "LSUB completed"
        } else {
            "LIST completed"
        }))
    }

    async fn status(
        &mut self,
        user: &str,
        mailbox: &imap_types::mailbox::Mailbox<'_>,
        items: &[StatusDataItemName],
    ) -> io::Result<Reply> {
        let name = match self.mailbox_name(mailbox) {
            Ok(n) => n,
            Err(r) => return Ok(r),
        };
        let store = self.store().clone();
        let info = match store.status(user, &name).await {
            Ok(i) => i,
            Err(e) => return Ok(self.store_error(e, "NONEXISTENT")),
        };
        // RECENT and DELETED need the messages themselves (metas only).
        let needs_msgs = items
            .iter()
            .any(|i| matches!(i, StatusDataItemName::Recent | StatusDataItemName::Deleted));
        let (recent, deleted) = if needs_msgs {
            match store.snapshot(user, &name).await {
                Ok(s) => (
                    s.messages
                        .iter()
                        .filter(|m| m.uid >= s.info.recent_uid)
                        .count(),
                    s.messages
                        .iter()
                        .filter(|m| m.flags.has(Flags::DELETED))
                        .count(),
                ),
                Err(e) => return Ok(self.store_error(e, "NONEXISTENT")),
            }
        } else {
            (0, 0)
        };
        let mut parts = Vec::new();
        for item in items {
            match item {
                StatusDataItemName::Messages => parts.push(format!("MESSAGES {}", info.exists)),
                StatusDataItemName::Recent => parts.push(format!("RECENT {recent}")),
                StatusDataItemName::UidNext => parts.push(format!("UIDNEXT {}", info.uidnext)),
                StatusDataItemName::UidValidity => {
                    parts.push(format!("UIDVALIDITY {}", info.uidvalidity))
                }
                StatusDataItemName::Unseen => parts.push(format!("UNSEEN {}", info.unseen)),
                StatusDataItemName::Deleted => parts.push(format!("DELETED {deleted}")),
                StatusDataItemName::Size => parts.push(format!("SIZE {}", info.size)),
                StatusDataItemName::HighestModSeq => {
                    parts.push(format!("HIGHESTMODSEQ {}", info.highestmodseq.max(1)))
                }
                StatusDataItemName::DeletedStorage => {
                    return Ok(Reply::bad("STATUS item not supported"))
                }
            }
        }
        let line = format!(
            "* STATUS {} ({})\r\n",
            wire::mailbox(&name),
            parts.join(" ")
        );
        self.write(&line);
        Ok(Reply::ok("STATUS completed"))
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
            tokio::select! {
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

    async fn selected(&mut self, user: &str, body: CommandBody<'_>) -> io::Result<Reply> {
        match body {
            CommandBody::Check => {
                self.sync(true).await;
                Ok(Reply::ok("CHECK completed"))
            }
            CommandBody::Close => {
                if let Some(open) = self.sel.take() {
                    if !open.view.read_only {
                        if let Err(e) = self.store().expunge(open.view.id, None).await {
                            return Ok(self.store_error(e, "NONEXISTENT"));
                        }
                    }
                }
                Ok(Reply::ok("CLOSE completed"))
            }
            CommandBody::Unselect => {
                self.sel = None;
                Ok(Reply::ok("UNSELECT completed"))
            }
            CommandBody::Expunge => self.expunge(None).await,
            CommandBody::ExpungeUid { sequence_set } => self.expunge(Some(&sequence_set)).await,
            CommandBody::Search {
                charset,
                criteria,
                uid,
            } => {
                let key = if criteria.as_ref().len() == 1 {
                    criteria.into_inner().into_iter().next()
                } else {
                    Some(SearchKey::And(criteria))
                };
                match key {
                    Some(k) => self.search(charset.as_ref(), &k, uid).await,
                    None => Ok(Reply::bad("Empty search")),
                }
            }
            CommandBody::Fetch {
                sequence_set,
                macro_or_item_names,
                uid,
                ..
            } => self.fetch(&sequence_set, macro_or_item_names, uid).await,
            CommandBody::Store {
                sequence_set,
                kind,
                response,
                flags,
                uid,
                ..
            } => {
                let op = match kind {
                    StoreType::Add => FlagOp::Add,
                    StoreType::Remove => FlagOp::Remove,
                    StoreType::Replace => FlagOp::Replace,
                };
                let silent = response == StoreResponse::Silent;
                self.store_cmd(
                    &sequence_set,
                    op,
                    wire::flags_from_wire(&flags),
                    silent,
                    uid,
                )
                .await
            }
            CommandBody::Copy {
                sequence_set,
                mailbox,
                uid,
            } => self.copy(user, &sequence_set, &mailbox, uid, false).await,
            CommandBody::Move {
                sequence_set,
                mailbox,
                uid,
            } => self.copy(user, &sequence_set, &mailbox, uid, true).await,
            _ => Ok(Reply::bad("Command not supported")),
        }
    }

    async fn expunge(&mut self, set: Option<&SequenceSet>) -> io::Result<Reply> {
        let Some(open) = self.sel.as_ref() else {
            return Ok(Reply::bad("No mailbox selected"));
        };
        if open.view.read_only {
            return Ok(Reply::no(Some("READ-ONLY"), "Mailbox is read-only"));
        }
        let uids = match set {
            None => None,
            Some(s) => match open.view.resolve(s, true) {
                Ok(idx) => Some(
                    idx.iter()
                        .filter_map(|&i| open.view.msgs.get(i).map(|m| m.meta.uid))
                        .collect(),
                ),
                Err(_) => return Ok(Reply::bad("Invalid UID set")),
            },
        };
        let id = open.view.id;
        if let Err(e) = self.store().expunge(id, uids).await {
            return Ok(self.store_error(e, "NONEXISTENT"));
        }
        self.sync(true).await;
        Ok(Reply::ok("EXPUNGE completed"))
    }

    async fn store_cmd(
        &mut self,
        set: &SequenceSet,
        op: FlagOp,
        flags: Flags,
        silent: bool,
        uid: bool,
    ) -> io::Result<Reply> {
        let store = self.store().clone();
        let Some(open) = self.sel.as_mut() else {
            return Ok(Reply::bad("No mailbox selected"));
        };
        if open.view.read_only {
            return Ok(Reply::no(Some("READ-ONLY"), "Mailbox is read-only"));
        }
        let idx = match open.view.resolve(set, uid) {
            Ok(i) => i,
            Err(_) => return Ok(Reply::bad("Invalid message sequence number")),
        };
        let uids: Vec<Uid> = idx
            .iter()
            .filter_map(|&i| open.view.msgs.get(i).map(|m| m.meta.uid))
            .collect();
        if uids.is_empty() {
            return Ok(Reply::ok("STORE completed"));
        }
        let (metas, _) = match store.store_flags(open.view.id, uids, op, flags, None).await {
            Ok(r) => r,
            Err(e) => return Ok(self.store_error(e, "NONEXISTENT")),
        };
        let mut out = String::new();
        for meta in metas {
            let uid_n = meta.uid;
            if let Some(i) = open.view.update_meta(meta) {
                if !silent {
                    if let Some(m) = open.view.msgs.get(i) {
                        let flags = wire::flag_list(&m.meta.flags, m.recent);
                        if uid {
                            out.push_str(&format!(
                                "* {} FETCH (FLAGS {flags} UID {uid_n})\r\n",
                                i + 1
                            ));
                        } else {
                            out.push_str(&format!("* {} FETCH (FLAGS {flags})\r\n", i + 1));
                        }
                    }
                }
            }
        }
        self.write(&out);
        Ok(Reply::ok("STORE completed"))
    }

    async fn copy(
        &mut self,
        user: &str,
        set: &SequenceSet,
        mailbox: &imap_types::mailbox::Mailbox<'_>,
        uid: bool,
        remove: bool,
    ) -> io::Result<Reply> {
        let name = match self.mailbox_name(mailbox) {
            Ok(n) => n,
            Err(r) => return Ok(r),
        };
        let store = self.store().clone();
        let quota = self.user.as_ref().map(|u| u.quota).unwrap_or_default();
        let Some(open) = self.sel.as_ref() else {
            return Ok(Reply::bad("No mailbox selected"));
        };
        if remove && open.view.read_only {
            return Ok(Reply::no(Some("READ-ONLY"), "Mailbox is read-only"));
        }
        let idx = match open.view.resolve(set, uid) {
            Ok(i) => i,
            Err(_) => return Ok(Reply::bad("Invalid message sequence number")),
        };
        let uids: Vec<Uid> = idx
            .iter()
            .filter_map(|&i| open.view.msgs.get(i).map(|m| m.meta.uid))
            .collect();
        let verb = if remove { "MOVE" } else { "COPY" };
        if uids.is_empty() {
            // Still check the destination exists.
            return Ok(match store.status(user, &name).await {
                Ok(_) => Reply::ok(&format!("{verb} completed")),
                Err(e) => self.store_error(e, "TRYCREATE"),
            });
        }
        let (uidvalidity, mut pairs) = match store
            .copy(open.view.id, uids, user, &name, remove, quota)
            .await
        {
            Ok(r) => r,
            Err(e) => return Ok(self.store_error(e, "TRYCREATE")),
        };
        pairs.sort_unstable();
        let code = copyuid(uidvalidity, &pairs);
        if remove {
            // RFC 6851 4.3: COPYUID in an untagged OK before the expunges.
            if let Some(code) = &code {
                self.write(&format!("* OK [{code}] Moved\r\n"));
            }
            self.sync(true).await;
            return Ok(Reply::ok("MOVE completed"));
        }
        Ok(match code {
            Some(c) => Reply::ok_code(c, "COPY completed"),
            None => Reply::ok("COPY completed"),
        })
    }

    async fn search(
        &mut self,
        charset: Option<&Charset<'_>>,
        key: &SearchKey<'_>,
        uid: bool,
    ) -> io::Result<Reply> {
        if let Some(cs) = charset {
            let name = match cs {
                Charset::Atom(a) => a.inner().to_string(),
                Charset::Quoted(q) => q.inner().to_string(),
            };
            if !name.eq_ignore_ascii_case("UTF-8") && !name.eq_ignore_ascii_case("US-ASCII") {
                return Ok(Reply::no(
                    Some("BADCHARSET (UTF-8 US-ASCII)"),
                    "Charset not supported",
                ));
            }
        }
        let store = self.store().clone();
        let Some(open) = self.sel.as_ref() else {
            return Ok(Reply::bad("No mailbox selected"));
        };
        let needs_body = search::needs_body(key);
        let max_seq = open.view.exists();
        let max_uid = open.view.max_uid();
        let id = open.view.id;
        let msgs = open.view.msgs.clone();
        let mut hits = Vec::new();
        for (i, m) in msgs.iter().enumerate() {
            // The loader is synchronous: read the file first when a key
            // needs headers or body (one message at a time).
            let mut data: Option<Arc<Vec<u8>>> = if needs_body {
                store.read(id, &m.meta).await.ok().map(Arc::new)
            } else {
                None
            };
            let view = search::MessageView {
                seq: i as u32 + 1,
                uid: m.meta.uid,
                flags: &m.meta.flags,
                recent: m.recent,
                internal_date: m.meta.internal_date,
                tz_offset_min: m.meta.tz_offset_min,
                size: m.meta.size,
                modseq: m.meta.modseq,
            };
            let mut loader = || data.take();
            if search::matches(key, &view, max_seq, max_uid, &mut loader) {
                hits.push(if uid { m.meta.uid } else { i as u32 + 1 });
            }
        }
        let mut line = String::from("* SEARCH");
        for h in hits {
            line.push_str(&format!(" {h}"));
        }
        line.push_str("\r\n");
        self.write(&line);
        Ok(Reply::ok("SEARCH completed"))
    }
}

/// The COPYUID response code (RFC 4315 3) for (source, destination) pairs
/// sorted by source.
fn copyuid(uidvalidity: u32, pairs: &[(Uid, Uid)]) -> Option<String> {
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

/// SASL PLAIN (RFC 4616): authzid NUL authcid NUL passwd.
fn parse_plain(data: &[u8]) -> Option<(String, String, String)> {
    let mut parts = data.split(|&b| b == 0);
    let authz = parts.next()?;
    let authc = parts.next()?;
    let pass = parts.next()?;
    if parts.next().is_some() || authc.is_empty() {
        return None;
    }
    Some((
        String::from_utf8(authz.to_vec()).ok()?,
        String::from_utf8(authc.to_vec()).ok()?,
        String::from_utf8(pass.to_vec()).ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4616_plain_parsing() {
        assert_eq!(
            parse_plain(b"\0alice\0secret"),
            Some(("".into(), "alice".into(), "secret".into()))
        );
        assert_eq!(
            parse_plain(b"bob\0alice\0pw"),
            Some(("bob".into(), "alice".into(), "pw".into()))
        );
        assert_eq!(parse_plain(b"alice\0secret"), None);
        assert_eq!(parse_plain(b"\0\0pw"), None);
    }

    #[test]
    fn rfc4315_copyuid_code() {
        assert_eq!(
            copyuid(9, &[(1, 10), (2, 11), (3, 12), (7, 13)]),
            Some("COPYUID 9 1:3,7 10:13".into())
        );
        assert_eq!(copyuid(9, &[]), None);
    }
}
