//! The async mmp driver, shared by IMAP and POP3: reads client input into
//! the pre-login session core, performs its actions (TLS, delays, the
//! directory check, the login at the store), then hands both connections
//! to the relay.
//!
//! Invariants:
//! - Actions of one command are performed in order; replies are flushed
//!   before any wait and before the relay starts.
//! - The pre-login read buffer (1 KiB) and the session core are dropped
//!   before relaying, so an idle proxied session holds only the relay's
//!   small buffers (and the TLS state, if any).

use std::collections::VecDeque;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, error, info};

use super::backend::{self, Backend, BackendError, LoginRequest};
use super::relay::{self, Options};
use super::{imap, pool, pop3, sieve, Action, Env, LoginOutcome, Proto};
use crate::config::{LoginMode, TlsMode};
use crate::directory::AuthResult;
use crate::net::{Conn, ConnInfo};

const READ_CHUNK: usize = 1024;

/// The pre-login cores behind one face.
enum Core {
    Imap(imap::Session),
    Pop3(pop3::Session),
    Sieve(sieve::Session),
}

impl Core {
    fn greeting(&self) -> Action {
        match self {
            Core::Imap(s) => s.greeting(),
            Core::Pop3(s) => s.greeting(),
            Core::Sieve(s) => s.greeting(),
        }
    }
    fn push(&mut self, b: &[u8]) {
        match self {
            Core::Imap(s) => s.push(b),
            Core::Pop3(s) => s.push(b),
            Core::Sieve(s) => s.push(b),
        }
    }
    fn next(&mut self) -> Option<Vec<Action>> {
        match self {
            Core::Imap(s) => s.next(),
            Core::Pop3(s) => s.next(),
            Core::Sieve(s) => s.next(),
        }
    }
    fn login_done(&mut self, o: LoginOutcome) -> Vec<Action> {
        match self {
            Core::Imap(s) => s.login_done(o),
            Core::Pop3(s) => s.login_done(o),
            Core::Sieve(s) => s.login_done(o),
        }
    }
    fn tls_started(&mut self) {
        match self {
            Core::Imap(s) => s.tls_started(),
            Core::Pop3(s) => s.tls_started(),
            Core::Sieve(s) => s.tls_started(),
        }
    }
    fn take_rest(&mut self) -> Vec<u8> {
        match self {
            Core::Imap(s) => s.take_rest(),
            Core::Pop3(s) => s.take_rest(),
            Core::Sieve(s) => s.take_rest(),
        }
    }
    fn has_buffered(&self) -> bool {
        match self {
            Core::Imap(s) => s.has_buffered(),
            Core::Pop3(s) => s.has_buffered(),
            Core::Sieve(s) => s.has_buffered(),
        }
    }
    fn tls_active(&self) -> bool {
        match self {
            Core::Imap(s) => s.tls_active(),
            Core::Pop3(s) => s.tls_active(),
            Core::Sieve(s) => s.tls_active(),
        }
    }
}

fn shutdown_line(proto: Proto) -> &'static [u8] {
    match proto {
        Proto::Imap => b"* BYE Server shutting down\r\n",
        Proto::Pop3 => b"-ERR server shutting down\r\n",
        Proto::Sieve => b"BYE \"Server shutting down\"\r\n",
    }
}

/// The command under way missed its deadline (a trickling client).
fn too_slow_line(proto: Proto) -> &'static [u8] {
    match proto {
        Proto::Imap => b"* BYE Command not completed in time\r\n",
        Proto::Pop3 => b"-ERR Command not completed in time\r\n",
        Proto::Sieve => b"BYE \"Command not completed in time\"\r\n",
    }
}

fn timeout_line(proto: Proto) -> &'static [u8] {
    match proto {
        Proto::Imap => b"* BYE Autologout; idle for too long\r\n",
        Proto::Pop3 => b"-ERR autologout\r\n",
        Proto::Sieve => b"BYE \"Idle for too long\"\r\n",
    }
}

/// How the pre-login part ended.
enum PreEnd {
    Proxy(Box<Backend>, Vec<u8>),
    Done(&'static str),
}

struct Driver {
    /// None only while a TLS handshake owns the stream.
    conn: Option<Conn>,
    out: Vec<u8>,
    info: ConnInfo,
    env: Env,
    proto: Proto,
    /// The logged-in user and store, for the summary line.
    user: Option<String>,
    store: Option<String>,
}

pub(crate) async fn run(conn: Conn, info: ConnInfo, env: Env, proto: Proto) {
    let c = &env.config;
    let plaintext = info.is_loopback()
        || match proto {
            Proto::Imap => c.imap.allow_plaintext_auth,
            Proto::Pop3 => c.pop3.allow_plaintext_auth,
            // The store's ManageSieve follows IMAP's rule.
            Proto::Sieve => c.imap.allow_plaintext_auth,
        };
    let starttls = info.tls_mode == TlsMode::StartTls && !info.tls_active;
    let max_bad = c.limits.max_bad_commands.max(1);
    let max_auth = c.limits.max_auth_failures.max(1);
    let max_line = c.limits.max_line.max(512);
    let core = match proto {
        Proto::Imap => Core::Imap(imap::Session::new(imap::SessionConfig {
            starttls_available: starttls,
            tls_active: info.tls_active,
            plaintext_without_tls: plaintext,
            max_bad_commands: max_bad,
            max_auth_failures: max_auth,
            auth_delay: env.auth_delay,
            // IMAP lines of 64 KiB plus CRLF (RFC 7162 4, RFC 2971 ID).
            max_command: max_line.max(crate::imap::framer::MIN_LINE) + 2,
        })),
        Proto::Pop3 => Core::Pop3(pop3::Session::new(pop3::SessionConfig {
            connection: crate::pop3::auth::Connection {
                stls_available: starttls,
                tls_active: info.tls_active,
                plaintext_without_tls: plaintext,
                max_bad_commands: max_bad,
                max_auth_failures: max_auth,
                auth_delay: env.auth_delay,
                proxy_users: Vec::new(),
            },
            max_line,
        })),
        Proto::Sieve => Core::Sieve(sieve::Session::new(sieve::SessionConfig {
            starttls_available: starttls,
            tls_active: info.tls_active,
            plaintext_without_tls: plaintext,
            max_bad_commands: max_bad,
            max_auth_failures: max_auth,
            auth_delay: env.auth_delay,
        })),
    };
    let mut d = Driver {
        conn: Some(conn),
        out: Vec::new(),
        info,
        env,
        proto,
        user: None,
        store: None,
    };
    // Boxed: the pre-login state (login at the store, TLS handshakes) is
    // large and must not stay allocated for the whole proxied session.
    let (end, tls) = Box::pin(d.preauth(core)).await;
    let (backend, pipelined) = match end {
        PreEnd::Done(why) => {
            info!(
                user = d.user.as_deref().unwrap_or("-"),
                end = why,
                "mmp session closed before login"
            );
            return;
        }
        PreEnd::Proxy(b, pipelined) => (b, pipelined),
    };
    let Some(client) = d.conn.take() else {
        return;
    };
    let Backend {
        conn: store,
        rest,
        addr,
        reply,
        host,
    } = *backend;
    let Driver {
        env,
        user,
        store: store_name,
        ..
    } = d;
    let opts = Options {
        idle: Duration::from_secs(env.config.mmp.idle_timeout.max(1)),
        buffers: env.shared.buffers.clone(),
        shutdown: env.shutdown.clone(),
        goodbye: (proto == Proto::Imap).then_some(shutdown_line(Proto::Imap)),
        imap: proto == Proto::Imap,
        // What the store said after its login answer goes to the client,
        // what the client pipelined after its login command to the store.
        pipelined,
        store_rest: rest,
        // The store said it would take the mmp's UNAUTHENTICATE.
        answer_logout: proto == Proto::Imap
            && env.reuses_store_connections()
            && backend::has_capability(&reply, "UNAUTHENTICATE"),
    };
    let pool = env.shared.store_pool.clone();
    let backend_timeout = Duration::from_secs(env.config.mmp.backend_timeout);
    drop(env);
    let (end, counts, kept) = Box::pin(relay::relay(client, store, opts)).await;
    if let Some(conn) = kept {
        pool::give_back(pool, (addr, host), conn, backend_timeout);
    }
    info!(
        user = user.as_deref().unwrap_or("-"),
        store = store_name.as_deref().unwrap_or("-"),
        %addr,
        tls,
        end = end.as_str(),
        to_store = counts.to_store,
        to_client = counts.to_client,
        "mmp session closed"
    );
}

impl Driver {
    /// Runs the pre-login dialogue. Returns how it ended and whether the
    /// client's connection is TLS.
    async fn preauth(&mut self, mut core: Core) -> (PreEnd, bool) {
        if let Action::Reply(g) = core.greeting() {
            self.out.extend_from_slice(&g);
        }
        let preauth = Duration::from_secs(self.env.config.mmp.preauth_timeout.max(1));
        // Before login a whole command (line, literal, SASL exchange) must
        // arrive within the pre-auth time from its first byte, extended by
        // `1 / limits.min_data_rate` s per byte: a trickle cannot hold it.
        let limits = &self.env.config.limits;
        let command_limit = preauth.min(Duration::from_secs(limits.command_deadline.max(1)));
        let rate = limits.min_data_rate;
        let mut command_deadline: Option<tokio::time::Instant> = None;
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            while let Some(actions) = core.next() {
                // The next command's clock starts with its first byte.
                command_deadline = None;
                if self.env.shutdown.is_cancelled() {
                    let end = self.goodbye(shutdown_line(self.proto), "shutdown").await;
                    return (end, core.tls_active());
                }
                match self.perform(&mut core, actions).await {
                    Ok(None) => {}
                    Ok(Some(end)) => return (end, core.tls_active()),
                    Err(_) => return (PreEnd::Done("io error"), core.tls_active()),
                }
            }
            if self.flush().await.is_err() {
                return (PreEnd::Done("io error"), core.tls_active());
            }
            let Some(conn) = self.conn.as_mut() else {
                return (PreEnd::Done("io error"), core.tls_active());
            };
            let idle = tokio::time::Instant::now() + preauth;
            let (until, slow) = match command_deadline {
                Some(d) if d < idle => (d, true),
                _ => (idle, false),
            };
            let read = tokio::select! {
                biased;
                _ = self.env.shutdown.cancelled() => {
                    let end = self.goodbye(shutdown_line(self.proto), "shutdown").await;
                    return (end, core.tls_active());
                }
                r = tokio::time::timeout_at(until, conn.read(&mut buf)) => r,
            };
            match read {
                Err(_) if slow => {
                    let end = self
                        .goodbye(too_slow_line(self.proto), "command deadline")
                        .await;
                    return (end, core.tls_active());
                }
                Err(_) => {
                    let end = self.goodbye(timeout_line(self.proto), "idle timeout").await;
                    return (end, core.tls_active());
                }
                Ok(Ok(0)) => return (PreEnd::Done("eof"), core.tls_active()),
                Ok(Ok(n)) => {
                    let now = tokio::time::Instant::now();
                    let d = command_deadline.get_or_insert(now + command_limit);
                    if rate > 0 {
                        *d += Duration::from_secs_f64(n as f64 / rate as f64);
                    }
                    core.push(buf.get(..n).unwrap_or_default())
                }
                Ok(Err(e)) => {
                    debug!(error = %e, "read failed");
                    return (PreEnd::Done("io error"), core.tls_active());
                }
            }
        }
    }

    /// Performs one command's actions. Ok(Some(end)): pre-login is over.
    async fn perform(
        &mut self,
        core: &mut Core,
        actions: Vec<Action>,
    ) -> std::io::Result<Option<PreEnd>> {
        let mut queue: VecDeque<Action> = actions.into();
        let mut backend: Option<Backend> = None;
        while let Some(action) = queue.pop_front() {
            match action {
                Action::Reply(r) => self.out.extend_from_slice(&r),
                Action::Delay(d) => {
                    self.flush().await?;
                    tokio::select! {
                        _ = tokio::time::sleep(d) => {}
                        _ = self.env.shutdown.cancelled() => {}
                    }
                }
                Action::StartTls => {
                    self.flush().await?;
                    let Some(conn) = self.conn.take() else {
                        return Ok(Some(PreEnd::Done("io error")));
                    };
                    match self.env.tls.accept(conn).await {
                        Ok(tls) => {
                            self.conn = Some(tls);
                            core.tls_started();
                            debug!("STARTTLS: TLS active");
                        }
                        Err(e) => {
                            info!(error = %e, "STARTTLS handshake failed");
                            return Ok(Some(PreEnd::Done("tls handshake failed")));
                        }
                    }
                }
                Action::Login {
                    login,
                    password,
                    client_id,
                } => {
                    let (outcome, b) = self.login(login, password, &client_id).await;
                    backend = b;
                    for a in core.login_done(outcome).into_iter().rev() {
                        queue.push_front(a);
                    }
                }
                Action::Proxy => {
                    self.flush().await?;
                    let Some(b) = backend.take() else {
                        error!("relay without a store connection");
                        return Ok(Some(PreEnd::Done("internal error")));
                    };
                    return Ok(Some(PreEnd::Proxy(Box::new(b), core.take_rest())));
                }
                Action::Close => {
                    self.flush().await?;
                    if let Some(c) = self.conn.as_mut() {
                        let _ = c.shutdown().await;
                    }
                    return Ok(Some(PreEnd::Done("closed")));
                }
            }
        }
        if !core.has_buffered() {
            self.flush().await?;
        }
        Ok(None)
    }

    /// Directory check, then the login at the user's store.
    async fn login(
        &mut self,
        login: String,
        password: String,
        client_id: &[(String, Option<String>)],
    ) -> (LoginOutcome, Option<Backend>) {
        use crate::login::{Outcome, Unavailable};
        let env = self.env.clone();
        // Credentials: the store checks the password again, so the mmp's
        // check may come from its login cache (`Shared::logins`).
        let cached = env.login_mode() == LoginMode::Credentials;
        let authenticate = if cached {
            cached_authenticator(&env)
        } else {
            env.authenticate.clone()
        };
        let accounts = crate::login::Accounts {
            authenticate,
            // The mmp offers no authorization identity (`sasl_plain`).
            lookup: std::sync::Arc::new(|_| Box::pin(async { Ok(None) })),
        };
        let rules = crate::login::Rules {
            protocol: match self.proto {
                Proto::Imap => crate::login::Protocol::MmpImap,
                Proto::Pop3 => crate::login::Protocol::MmpPop3,
                Proto::Sieve => crate::login::Protocol::MmpManageSieve,
            },
            config: &env.config,
            login_networks: &[],
            proxy_users: &[],
            limiter: &env.shared.limiter,
            accounts: &accounts,
            serves: crate::login::Serves::Nothing,
        };
        let creds = crate::login::Credentials::password(&login, &password);
        let account = match crate::login::login(&rules, &self.info, creds).await {
            Outcome::Ok(l) => l.account,
            Outcome::RateLimited => return (LoginOutcome::RateLimited, None),
            Outcome::Failed | Outcome::NotAuthorized(_) => return (LoginOutcome::Failed, None),
            Outcome::Inactive => return (LoginOutcome::Inactive, None),
            Outcome::Unavailable(Unavailable::Directory) => {
                return (LoginOutcome::DirectoryUnavailable, None)
            }
            Outcome::WrongStore { .. } | Outcome::Unavailable(_) => {
                return (LoginOutcome::BackendUnavailable, None)
            }
        };
        let user = account.address.clone();
        self.user = Some(user.clone());
        let m = &env.config.mmp;
        let Some(host) = account
            .mail_host
            .clone()
            .filter(|h| !h.is_empty())
            .or_else(|| (!m.default_backend.is_empty()).then(|| m.default_backend.clone()))
        else {
            error!(%user, "user has no mailHost and mmp.default_backend is empty");
            return (LoginOutcome::BackendUnavailable, None);
        };
        self.store = Some(host.clone());
        let req = LoginRequest {
            user: &user,
            password: &password,
            client: self.info.peer,
            local: self.info.local,
            session_id: self.info.session_id,
            client_id,
        };
        let opened = backend::open(&env, self.proto, &host, &req).await;
        if opened.is_err() {
            // Refused (a changed password, a disabled account) or not
            // there (a moved user): the next login asks the directory.
            env.shared.logins.forget(&login);
        }
        match opened {
            Ok(b) => {
                info!(%user, store = %host, addr = %b.addr, "logged in; relaying");
                let reply = b.reply.clone();
                (LoginOutcome::Ok(reply), Some(b))
            }
            Err(BackendError::Unavailable) => (LoginOutcome::BackendUnavailable, None),
            Err(BackendError::Refused(code)) => (LoginOutcome::BackendRefused(code), None),
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let Some(conn) = self.conn.as_mut() else {
            return Err(std::io::ErrorKind::NotConnected.into());
        };
        let res = tokio::time::timeout(Duration::from_secs(60), async {
            conn.write_all(&self.out).await?;
            conn.flush().await
        })
        .await;
        self.out = Vec::new();
        match res {
            Ok(r) => r,
            Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
        }
    }

    async fn goodbye(&mut self, line: &[u8], why: &'static str) -> PreEnd {
        self.out.extend_from_slice(line);
        let _ = self.flush().await;
        if let Some(c) = self.conn.as_mut() {
            let _ = c.shutdown().await;
        }
        PreEnd::Done(why)
    }
}

/// The directory check of `env`, answered from the login cache when the
/// same name and password were verified within `directory.cache_ttl`;
/// a full check's verdict updates the cache (a failure forgets the name).
fn cached_authenticator(env: &Env) -> super::Authenticator {
    let (shared, inner) = (env.shared.clone(), env.authenticate.clone());
    std::sync::Arc::new(move |login: String, password: String| {
        let (shared, inner) = (shared.clone(), inner.clone());
        Box::pin(async move {
            if let Some(account) = shared.logins.get(&login, "", &password) {
                return Ok(AuthResult::Ok(account));
            }
            let r = inner(login.clone(), password.clone()).await;
            match &r {
                Ok(AuthResult::Ok(a)) => {
                    shared
                        .logins
                        .remember_with(&login, "", &password, a.clone())
                }
                Ok(_) => shared.logins.forget(&login),
                Err(_) => {}
            }
            r
        })
    })
}
