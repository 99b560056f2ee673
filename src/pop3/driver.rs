//! The async POP3 driver: reads lines, feeds the session core, performs its
//! effects (directory, store, TLS) and writes replies.
//!
//! Invariants:
//! - Pipelined commands (RFC 2449 PIPELINING) are executed strictly in
//!   order; replies are buffered and flushed when no complete command is
//!   left in the input buffer, before any wait, and before a message body.
//! - Shutdown and the idle timer are only honoured between commands, and
//!   never enter UPDATE: a connection that ends without QUIT deletes
//!   nothing (RFC 1939 section 6).
//! - A message body (RETR / TOP) is streamed from its file a piece at a
//!   time and never held whole: per session one read piece
//!   (`BODY_PIECE`) and about that much stuffed output, whatever the
//!   message size; a session waiting for its client keeps at most
//!   `OUT_KEEP` of reply buffer.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, error, info};

use crate::config::{Config, TlsMode};
use crate::loginlimit::LoginLimiter;
use crate::net::{Conn, ConnInfo};
use crate::services::Services;
use crate::store::{FlagOp, Flags, MailboxId, MessageBody, Store, Uid};
use crate::tls::Tls;
use tokio_util::sync::CancellationToken;

use super::codec::{DotStuffer, LineReader};
use super::session::{
    Action, AuthOutcome, Maildrop, Session, SessionConfig, ERR_AUTOLOGOUT, ERR_MESSAGE_GONE,
    ERR_SHUTDOWN,
};

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 16 * 1024;
/// Bytes of a message read from its file at a time (RETR / TOP); each
/// piece goes out in one write.
pub(super) const BODY_PIECE: usize = 128 * 1024;
/// Replies are written out before more is added once they reach this.
const WRITE_CHUNK: usize = 64 * 1024;
/// Capacity of the reply buffer kept while waiting for the client (a RETR
/// grows it to about 2 x `BODY_PIECE`; an idle session gives that back).
const OUT_KEEP: usize = 16 * 1024;

pub(crate) use crate::login::{Authenticator, Lookup};

/// What a session uses of the shared services.
#[derive(Clone)]
pub(crate) struct Env {
    pub config: Arc<Config>,
    pub store: Option<Store>,
    pub tls: Arc<Tls>,
    pub shutdown: CancellationToken,
    pub authenticate: Authenticator,
    /// For AUTH PLAIN with an authorization identity (proxy users).
    pub lookup: Lookup,
    /// The process's failed-login limits.
    pub logins: Arc<LoginLimiter>,
}

impl Env {
    fn from_services(services: Services) -> Env {
        let accounts =
            crate::login::Accounts::of(services.directory.clone(), &services.config.server.domain);
        Env {
            lookup: accounts.lookup,
            authenticate: accounts.authenticate,
            config: services.config,
            store: services.store,
            tls: services.tls,
            shutdown: services.shutdown,
            logins: services.logins,
        }
    }
}

/// Serves one POP3 or POP3S connection until QUIT, error, timeout or
/// shutdown.
pub async fn serve(conn: Conn, info: ConnInfo, services: Services) {
    run_session(conn, info, Env::from_services(services)).await
}

pub(crate) async fn run_session(conn: Conn, info: ConnInfo, env: Env) {
    let config = &env.config;
    let tls_active = info.tls_active;
    let session = Session::new(SessionConfig {
        stls_available: info.tls_mode == TlsMode::StartTls && !tls_active,
        tls_active,
        plaintext_without_tls: info.is_loopback() || config.pop3.allow_plaintext_auth,
        max_bad_commands: config.limits.max_bad_commands.max(1),
        max_auth_failures: config.limits.max_auth_failures.max(1),
        // The growing delay after a failure comes from the process-wide
        // login limiter (`authenticate`), not from a per-connection count.
        auth_delay: Duration::ZERO,
        proxy_users: config.pop3.proxy_users.clone(),
    });
    let mut driver = Driver {
        conn: Some(conn),
        reader: LineReader::new(config.limits.max_line.max(512)),
        out: Vec::new(),
        // RFC 1939 section 3: the autologout timer is at least 10 minutes;
        // the config default says so, but a zero would close at once.
        idle: Duration::from_secs(config.pop3.idle_timeout.max(1)),
        // Never longer than the idle timer.
        preauth: Duration::from_secs(
            config
                .pop3
                .preauth_timeout
                .min(config.pop3.idle_timeout)
                .max(1),
        ),
        command_deadline: None,
        session,
        env: env.clone(),
        stats: Stats::default(),
        info: info.clone(),
    };
    let end = driver.run().await;
    let s = &driver.stats;
    info!(
        user = driver
            .session
            .account()
            .map(|a| a.address.as_str())
            .unwrap_or("-"),
        tls = driver.session.tls_active(),
        commands = s.commands,
        retrieved = s.retrieved,
        deleted = s.deleted,
        end = end.as_str(),
        "pop3 session closed"
    );
}

#[derive(Default)]
struct Stats {
    commands: u64,
    retrieved: u64,
    deleted: usize,
}

/// Why a session ended, for the summary line.
#[derive(Debug, Clone, Copy)]
enum End {
    Closed,
    /// The user's hold began (`msgd user move`): closed without UPDATE.
    Moving,
    Eof,
    Io,
    Timeout,
    TooSlow,
    Shutdown,
    TlsFailed,
}

/// The command under way missed its deadline (a trickling client).
const ERR_TOO_SLOW: &str = "-ERR Command not completed in time\r\n";
/// The user's mail is being moved to another store: the session ends
/// without UPDATE (no deletion is applied on the old store).
const ERR_MOVING: &str =
    "-ERR [SYS/TEMP] Mailbox is being moved to another server, log in again later\r\n";

impl End {
    fn as_str(self) -> &'static str {
        match self {
            End::Closed => "closed",
            End::Moving => "user being moved",
            End::Eof => "eof",
            End::Io => "io error",
            End::Timeout => "idle timeout",
            End::TooSlow => "command deadline",
            End::Shutdown => "shutdown",
            End::TlsFailed => "tls handshake failed",
        }
    }
}

struct Driver {
    /// None only while the TLS handshake owns the stream.
    conn: Option<Conn>,
    reader: LineReader,
    /// Replies not yet written.
    out: Vec<u8>,
    idle: Duration,
    /// Idle timer and command deadline before login (`pop3.preauth_timeout`).
    preauth: Duration,
    /// When the command under way must be complete: set by its first byte,
    /// pushed back by `1 / limits.min_data_rate` s per byte, cleared when a
    /// line has been read (`limits.command_deadline`).
    command_deadline: Option<tokio::time::Instant>,
    session: Session,
    env: Env,
    stats: Stats,
    /// The client and the TCP peer, for the login sequence
    /// (`pop3.login_networks`, failed-login limits).
    info: ConnInfo,
}

impl Driver {
    async fn run(&mut self) -> End {
        if let Action::Reply(g) = self.session.greeting() {
            self.out.extend_from_slice(g.as_bytes());
        }
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            while let Some(input) = self.reader.next() {
                if self.env.shutdown.is_cancelled() {
                    return self.goodbye(ERR_SHUTDOWN, End::Shutdown).await;
                }
                if self.moving_away() {
                    return self.goodbye(ERR_MOVING, End::Moving).await;
                }
                self.stats.commands += 1;
                let _metrics = crate::metrics::latency(self.info.protocol.name());
                // The next command's clock starts with its first byte.
                self.command_deadline = None;
                let actions = self.session.input(input);
                match self.perform(actions).await {
                    Ok(None) => {}
                    Ok(Some(end)) => return end,
                    Err(_) => return End::Io,
                }
            }
            if self.flush().await.is_err() {
                return End::Io;
            }
            if self.out.capacity() > OUT_KEEP {
                self.out = Vec::new();
            }
            let moving = self.moving_wake();
            let Some(conn) = self.conn.as_mut() else {
                return End::Io;
            };
            let logged_in = self.session.account().is_some();
            let now = tokio::time::Instant::now();
            let idle = now + if logged_in { self.idle } else { self.preauth };
            let (until, slow) = match self.command_deadline {
                Some(d) if d < idle => (d, true),
                _ => (idle, false),
            };
            let read = tokio::select! {
                biased;
                _ = self.env.shutdown.cancelled() => {
                    return self.goodbye(ERR_SHUTDOWN, End::Shutdown).await;
                }
                _ = moving => {
                    return self.goodbye(ERR_MOVING, End::Moving).await;
                }
                r = tokio::time::timeout_at(until, conn.read(&mut buf)) => r,
            };
            match read {
                Err(_) if slow => return self.goodbye(ERR_TOO_SLOW, End::TooSlow).await,
                Err(_) => return self.goodbye(ERR_AUTOLOGOUT, End::Timeout).await,
                Ok(Ok(0)) => return End::Eof,
                Ok(Ok(n)) => {
                    self.note_input(n, logged_in);
                    self.reader.push(buf.get(..n).unwrap_or_default())
                }
                Ok(Err(e)) => {
                    debug!(error = %e, "read failed");
                    return End::Io;
                }
            }
        }
    }

    /// Moves the command deadline for `n` bytes just received.
    fn note_input(&mut self, n: usize, logged_in: bool) {
        let limits = &self.env.config.limits;
        let mut limit = Duration::from_secs(limits.command_deadline.max(1));
        if !logged_in {
            limit = limit.min(self.preauth);
        }
        let deadline = self
            .command_deadline
            .get_or_insert(tokio::time::Instant::now() + limit);
        if limits.min_data_rate > 0 {
            *deadline += Duration::from_secs_f64(n as f64 / limits.min_data_rate as f64);
        }
    }

    /// Performs the actions of one command in order. Ok(Some(end)): the
    /// session is over.
    async fn perform(&mut self, actions: Vec<Action>) -> std::io::Result<Option<End>> {
        let mut queue: VecDeque<Action> = actions.into();
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Reply(s) => {
                    crate::metrics::pop3_reply(self.info.protocol.name(), &s);
                    self.out.extend_from_slice(s.as_bytes())
                }
                Action::Delay(d) => {
                    self.flush().await?;
                    tokio::select! {
                        _ = tokio::time::sleep(d) => {}
                        _ = self.env.shutdown.cancelled() => {}
                    }
                }
                Action::Authenticate { login, password } => {
                    let outcome = self.authenticate(&login, &password, None).await;
                    prepend(&mut queue, self.session.auth_done(outcome));
                }
                Action::AuthenticateAs {
                    login,
                    password,
                    authzid,
                } => {
                    let outcome = self.authenticate(&login, &password, Some(&authzid)).await;
                    prepend(&mut queue, self.session.auth_done(outcome));
                }
                Action::SendMessage {
                    index,
                    top_lines,
                    ok_line,
                } => self.send_message(index, top_lines, &ok_line).await?,
                Action::StartTls => {
                    self.flush().await?;
                    // RFC 2595 section 4: plaintext pipelined after STLS
                    // is not to be trusted; throw it away.
                    self.reader.clear();
                    let Some(conn) = self.conn.take() else {
                        return Ok(Some(End::Io));
                    };
                    match self.env.tls.accept(conn).await {
                        Ok(tls) => {
                            self.conn = Some(tls);
                            self.session.tls_started();
                            debug!("STLS: TLS active");
                        }
                        Err(e) => {
                            info!(error = %e, "STLS handshake failed");
                            return Ok(Some(End::TlsFailed));
                        }
                    }
                }
                Action::Update { mailbox, deletions } => {
                    let result = self.update(mailbox, deletions).await;
                    prepend(&mut queue, self.session.update_done(result));
                }
                Action::Close => {
                    self.flush().await?;
                    if let Some(c) = self.conn.as_mut() {
                        let _ = c.shutdown().await;
                    }
                    return Ok(Some(End::Closed));
                }
            }
        }
        // Flush when no further complete command is waiting (pipelining
        // batches replies, an interactive client sees each at once).
        if !self.reader.has_buffered() {
            self.flush().await?;
        }
        Ok(None)
    }

    /// Checks credentials, then opens the maildrop (INBOX snapshot): the
    /// login's own, or `authzid`'s when a proxy user logs in for it.
    async fn authenticate(
        &mut self,
        login: &str,
        password: &str,
        authzid: Option<&str>,
    ) -> AuthOutcome {
        use crate::login::{AuthzFailure, Outcome, Unavailable};
        let config = &self.env.config;
        let accounts = crate::login::Accounts {
            authenticate: self.env.authenticate.clone(),
            lookup: self.env.lookup.clone(),
        };
        let rules = crate::login::Rules {
            protocol: crate::login::Protocol::Pop3,
            config,
            login_networks: &config.pop3.login_networks,
            proxy_users: &config.pop3.proxy_users,
            limiter: &self.env.logins,
            accounts: &accounts,
            serves: crate::login::Serves::Store(self.env.store.as_ref()),
        };
        let creds = match authzid {
            Some(authzid) => crate::login::Credentials::plain(authzid, login, password),
            None => crate::login::Credentials::password(login, password),
        };
        let account = match crate::login::login(&rules, &self.info, creds).await {
            Outcome::Ok(l) => l.account,
            Outcome::Failed | Outcome::NotAuthorized(AuthzFailure::UnknownUser) => {
                return AuthOutcome::Failed
            }
            // The session core lets only proxy users ask (`proxy_users`).
            Outcome::NotAuthorized(AuthzFailure::NotProxy) => return AuthOutcome::Failed,
            Outcome::RateLimited => return AuthOutcome::RateLimited,
            Outcome::Inactive | Outcome::NotAuthorized(AuthzFailure::InactiveUser) => {
                return AuthOutcome::Inactive
            }
            Outcome::Unavailable(Unavailable::Directory) => {
                return AuthOutcome::DirectoryUnavailable
            }
            Outcome::WrongStore { .. }
            | Outcome::Unavailable(
                Unavailable::LoginNetworks | Unavailable::NoStore | Unavailable::Store(_),
            ) => return AuthOutcome::StoreUnavailable,
        };
        let Some(store) = self.env.store.as_ref() else {
            return AuthOutcome::StoreUnavailable;
        };
        let user = account.address.as_str();
        match store.snapshot(user, "INBOX").await {
            Ok(snapshot) => {
                let maildrop = Box::new(Maildrop::from_snapshot(snapshot));
                info!(user, messages = maildrop.messages.len(), "pop3 login");
                AuthOutcome::Ok { account, maildrop }
            }
            Err(e) => {
                error!(user, error = %e, "cannot open INBOX");
                AuthOutcome::StoreUnavailable
            }
        }
    }

    /// RETR / TOP: status line, then the message streamed from its file.
    ///
    /// The file is read `BODY_PIECE` bytes at a time into one buffer (on
    /// the blocking pool); each piece is dot-stuffed in one pass straight
    /// into `out` and written while the next piece is read. The message is
    /// never held whole: a session holds at most one piece and about twice
    /// that in `out`, whatever the message size.
    async fn send_message(
        &mut self,
        index: usize,
        top_lines: Option<usize>,
        ok_line: &str,
    ) -> std::io::Result<()> {
        let Some(store) = self.env.store.clone() else {
            self.out.extend_from_slice(ERR_MESSAGE_GONE.as_bytes());
            return Ok(());
        };
        let Some((mailbox, uid, offset, size)) = self.session.maildrop().and_then(|m| {
            m.messages
                .get(index)
                .map(|meta| (m.mailbox, meta.uid, meta.offset, meta.size))
        }) else {
            self.out.extend_from_slice(ERR_MESSAGE_GONE.as_bytes());
            return Ok(());
        };
        // Open and read the first piece before answering, so a message
        // expunged by another session since login is still an -ERR.
        let first = usize::try_from(size).unwrap_or(usize::MAX).min(BODY_PIECE);
        let opened = match store.message_path(mailbox, uid) {
            Ok(path) => tokio::task::spawn_blocking(move || {
                let mut body = MessageBody::open(&path, offset, size)?;
                let mut buf = vec![0u8; first];
                let n = body.read_piece(&mut buf)?;
                Ok((body, buf, n))
            })
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e))),
            Err(e) => Err(std::io::Error::other(e)),
        };
        let (mut body, mut buf, mut n) = match opened {
            Ok(opened) => opened,
            Err(e) => {
                debug!(uid, error = %e, "message unreadable");
                self.out.extend_from_slice(ERR_MESSAGE_GONE.as_bytes());
                return Ok(());
            }
        };
        if top_lines.is_none() {
            self.stats.retrieved += 1;
        }
        // Replies of pipelined commands are batched, but not without bound.
        if self.out.len() >= WRITE_CHUNK {
            self.flush().await?;
        }
        // Stuffing adds a little (a dot per "." line, a CR per bare LF);
        // the worst case, 2n + 3, grows the buffer once. Under glibc's
        // fixed mmap threshold (128 KiB, main.rs) a message below ~120 KiB
        // stays out of mmap.
        self.out.reserve(ok_line.len() + n + n / 16 + 16);
        crate::metrics::pop3_reply(self.info.protocol.name(), ok_line);
        self.out.extend_from_slice(ok_line.as_bytes());
        let mut stuffer = DotStuffer::new(top_lines);
        loop {
            let piece = buf.get(..n).unwrap_or_default();
            if stuffer.push(piece, &mut self.out) || body.remaining() == 0 {
                break;
            }
            // The piece is in `out`: read the next one into the same
            // buffer while `out` is written.
            let read = tokio::task::spawn_blocking(move || {
                let r = body.read_piece(&mut buf);
                (body, buf, r)
            });
            let (written, read) = tokio::join!(self.flush(), read);
            written?;
            let (b, bf, r) = read.map_err(std::io::Error::other)?;
            (body, buf) = (b, bf);
            n = match r {
                Ok(n) => n,
                Err(e) => {
                    // Part of the message is sent: only closing is honest.
                    error!(uid, error = %e, "message file unreadable during RETR");
                    return Err(e);
                }
            };
        }
        stuffer.finish(&mut self.out);
        Ok(())
    }

    /// UPDATE: mark our deletions \Deleted and expunge exactly those UIDs,
    /// so messages other sessions flagged stay.
    async fn update(&mut self, mailbox: MailboxId, deletions: Vec<Uid>) -> Result<usize, ()> {
        if deletions.is_empty() {
            return Ok(0);
        }
        let Some(store) = self.env.store.clone() else {
            return Err(());
        };
        let flags = Flags {
            bits: Flags::DELETED,
            keywords: Vec::new(),
        };
        let result = async {
            store
                .store_flags(mailbox, deletions.clone(), FlagOp::Add, flags, None)
                .await?;
            store.expunge(mailbox, Some(deletions.clone())).await
        }
        .await;
        match result {
            Ok(expunged) => {
                self.stats.deleted = expunged.len();
                Ok(expunged.len())
            }
            Err(e) => {
                error!(mailbox, error = %e, "POP3 UPDATE failed");
                Err(())
            }
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(std::io::ErrorKind::NotConnected.into());
        };
        // A client that stops reading must not hold the session forever.
        let res = tokio::time::timeout(self.idle, async {
            conn.write_all(&self.out).await?;
            conn.flush().await
        })
        .await;
        self.out.clear();
        match res {
            Ok(r) => r,
            Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
        }
    }

    /// Whether the logged-in user's hold began (`store::moving`).
    fn moving_away(&self) -> bool {
        match (self.session.account(), self.env.store.as_ref()) {
            (Some(a), Some(store)) => store.moving().deferred(&a.address).is_some(),
            _ => false,
        }
    }

    /// Ends when the logged-in user's hold begins (or has begun).
    fn moving_wake(&self) -> impl std::future::Future<Output = ()> {
        crate::store::Store::until_held(
            self.env.store.clone(),
            self.session.account().map(|a| a.address.clone()),
        )
    }

    /// Says a last line and closes (no UPDATE).
    async fn goodbye(&mut self, line: &str, end: End) -> End {
        self.out.extend_from_slice(line.as_bytes());
        let _ = self.flush().await;
        if let Some(c) = self.conn.as_mut() {
            let _ = c.shutdown().await;
        }
        end
    }
}

fn prepend(queue: &mut VecDeque<Action>, actions: Vec<Action>) {
    for a in actions.into_iter().rev() {
        queue.push_front(a);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;
    use tokio::io::{AsyncBufReadExt, BufReader};

    use crate::config::Protocol;
    use crate::net::ConnInfo;

    /// Before login the POP3 idle timer is `pop3.preauth_timeout`, and a
    /// command must be complete within its deadline: a trickling client is
    /// disconnected though each byte arrives well inside the idle timer.
    #[tokio::test]
    async fn preauth_command_deadline_disconnects_a_trickling_client() {
        let dir = tempfile::tempdir().unwrap();
        let services = crate::services::test_services(dir.path(), |c| {
            c.pop3.preauth_timeout = 1;
        });
        let (client, server) = tokio::io::duplex(4096);
        let info = ConnInfo::for_test(Protocol::Pop3);
        let task = tokio::spawn(super::serve(Box::new(server), info, services));
        let mut c = BufReader::new(client);
        let mut l = String::new();
        c.read_line(&mut l).await.unwrap();
        assert!(l.starts_with("+OK"), "{l}");
        let started = std::time::Instant::now();
        let bye = crate::net::testing::trickle(&mut c, b"CAPA").await;
        assert_eq!(bye, "-ERR Command not completed in time\r\n");
        assert!(started.elapsed() < Duration::from_secs(10));
        task.await.unwrap();
    }
}
