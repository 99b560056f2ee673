//! The mmp role: an IMAP and POP3 proxy in front of the stores. It answers
//! the part of each protocol before login itself, checks the password
//! against the directory, finds the user's store from `mailHost`, logs in
//! there on the user's behalf, and from then on relays bytes both ways
//! (IMAP through a small filter: UNAUTHENTICATE stays with the mmp,
//! RFC 8437).
//!
//! Layers: `framer` (IMAP lines + literals: an adapter over the one IMAP
//! framer, `crate::imap::framer`) -> `imap` / `pop3` (synchronous
//! pre-login session cores, no I/O; POP3's AUTHORIZATION is the store's
//! own core, `crate::pop3::auth`) -> `driver` (async: reads, writes,
//! directory, TLS, `backend` login) -> `relay` (byte pump; IMAP through
//! `imap::RelayFilter`).
//!
//! Invariants:
//! - No state survives a connection except the failed-login counters
//!   (`crate::loginlimit`, shared with the process's other login paths),
//!   which only slow guessing down, and store connections kept, not
//!   authenticated, for the next login (`pool`): any number of mmps can
//!   run behind a load balancer.
//! - The client's address (from the PROXY header if the listener has one)
//!   reaches the store: IMAP `ID` with x-originating-ip (Dovecot's
//!   convention) and/or a PROXY v2 header to the store.
//! - Passwords are never logged; they travel only inside `Action::Login`
//!   and the login at the store.

mod backend;
mod driver;
pub(crate) mod framer;
mod imap;
mod pool;
mod pop3;
mod relay;
mod sieve;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::authcache::CredentialCache;
use crate::config::{Config, TlsMode};
use crate::directory::{Account, AuthResult, DirError};
use crate::net::{Conn, ConnInfo};
use crate::services::Services;
use crate::tls::Tls;

use crate::loginlimit::LoginLimiter;

/// Serves one IMAP/IMAPS client connection of the mmp role.
pub async fn serve_imap(conn: Conn, info: ConnInfo, services: Services) {
    driver::run(conn, info, Env::from_services(&services), Proto::Imap).await
}

/// Serves one POP3/POP3S client connection of the mmp role.
pub async fn serve_pop3(conn: Conn, info: ConnInfo, services: Services) {
    driver::run(conn, info, Env::from_services(&services), Proto::Pop3).await
}

/// Serves one ManageSieve client connection of the mmp role (RFC 5804;
/// `sieve` before login, then relayed to the store's ManageSieve).
pub async fn serve_managesieve(conn: Conn, info: ConnInfo, services: Services) {
    driver::run(conn, info, Env::from_services(&services), Proto::Sieve).await
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proto {
    Imap,
    Pop3,
    /// ManageSieve (RFC 5804).
    Sieve,
}

/// How the mmp logs in at the store (`mmp.login_mode`, typed at load).
pub(crate) use crate::config::LoginMode;

/// An effect or output of a pre-login session core, in order.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Bytes for the client.
    Reply(Vec<u8>),
    /// Wait (after a failed login) before going on.
    Delay(Duration),
    /// Flush, TLS handshake with the client, then `tls_started` (or close).
    StartTls,
    /// Check the password with the directory and log in at the user's
    /// store; report with `login_done`. `client_id`: IMAP ID parameters of
    /// the client, passed on to the store.
    Login {
        login: String,
        password: String,
        client_id: Vec<(String, Option<String>)>,
    },
    /// The login answer went out: relay from now on (pipelined input is in
    /// `take_rest`).
    Proxy,
    /// Flush and close.
    Close,
}

impl fmt::Debug for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Reply(r) => f
                .debug_tuple("Reply")
                .field(&String::from_utf8_lossy(r))
                .finish(),
            Action::Delay(d) => f.debug_tuple("Delay").field(d).finish(),
            Action::StartTls => f.write_str("StartTls"),
            Action::Login {
                login, client_id, ..
            } => f
                .debug_struct("Login")
                .field("login", login)
                .field("password", &"<hidden>")
                .field("client_id", client_id)
                .finish(),
            Action::Proxy => f.write_str("Proxy"),
            Action::Close => f.write_str("Close"),
        }
    }
}

/// What came of an `Action::Login`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LoginOutcome {
    /// Logged in at the store. IMAP: the store's capabilities (may be
    /// empty); POP3: the store's "+OK" line with CRLF.
    Ok(String),
    /// Wrong login or password.
    Failed,
    /// Right password, disabled account.
    Inactive,
    /// Too many failures from this address or for this user lately.
    RateLimited,
    DirectoryUnavailable,
    /// The store is unknown, down, or misbehaved.
    BackendUnavailable,
    /// The store refused the login, with this response code.
    BackendRefused(Option<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SaslError {
    Malformed,
    /// An authorization identity other than the login: not offered.
    OtherAuthzid,
}

/// Decodes a SASL PLAIN message (RFC 4616: authzid NUL authcid NUL passwd)
/// into login and password.
pub(crate) fn sasl_plain(raw: &[u8]) -> Result<(String, String), SaslError> {
    let (authz, authc, pass) = crate::login::parse_plain(raw).ok_or(SaslError::Malformed)?;
    if crate::login::Credentials::plain(&authz, &authc, &pass)
        .authzid
        .is_some()
    {
        return Err(SaslError::OtherAuthzid);
    }
    Ok((authc, pass))
}

/// Delay before answering the `failures`-th failed login: base, 2x, 4x,
/// capped at 8 s (or at base, if base is larger).
pub(crate) fn auth_delay(base: Duration, failures: u32) -> Duration {
    crate::pop3::auth::delay_after(base, failures)
}

/// Checks a login and password: the directory in production, a fake in
/// tests (which can make it fail temporarily).
pub(crate) type Authenticator = Arc<
    dyn Fn(String, String) -> Pin<Box<dyn Future<Output = Result<AuthResult, DirError>> + Send>>
        + Send
        + Sync,
>;

/// What lives as long as the process: the failed-login limiter (the
/// process's one, from `Services`), the login cache and the TLS client
/// setup for the stores.
/// Idle burst buffers the mmp keeps (64 KiB each: 2 MiB at most).
const BURST_BUFFERS_KEPT: usize = 32;

pub struct Shared {
    pub(crate) limiter: Arc<LoginLimiter>,
    /// `login_mode = "credentials"` only: logins this mmp verified in the
    /// last `directory.cache_ttl` seconds, by the name as typed, with the
    /// account found (its mailHost). The store checks the password again
    /// against a fresh read of the entry at every login, so a changed
    /// password or a disabled account is refused at once; what the cache
    /// may hold for up to the TTL is where the user's mail lives, like
    /// every directory lookup of the process. An entry goes at the first
    /// failed check and when its store refuses the login or cannot be
    /// reached (a moved user is found again at the next login). Only an
    /// HMAC of the password is kept (`authcache`).
    pub(crate) logins: CredentialCache<Account>,
    /// The relay's burst buffers, reused across sessions
    /// (`relay::BurstBuffers`): at most `BURST_BUFFERS_KEPT` wait idle.
    pub(crate) buffers: Arc<relay::BurstBuffers>,
    /// IMAP store connections kept between logins (`pool`).
    pub(crate) store_pool: Arc<pool::StorePool>,
    client_tls: OnceLock<Result<Arc<rustls::ClientConfig>, String>>,
}

impl Shared {
    /// With a limiter of its own (tests).
    #[cfg(test)]
    pub(crate) fn new(config: &Config) -> Shared {
        Shared::from_config(config, Arc::new(LoginLimiter::from_config(&config.limits)))
    }

    pub fn from_config(config: &Config, limiter: Arc<LoginLimiter>) -> Shared {
        Shared {
            limiter,
            logins: CredentialCache::new(
                Duration::from_secs(config.directory.cache_ttl),
                config.auth.cache_size,
                Arc::new(std::time::Instant::now),
            ),
            buffers: Arc::new(relay::BurstBuffers::new(BURST_BUFFERS_KEPT)),
            store_pool: Arc::new(pool::StorePool::new(
                config.mmp.backend_reuse,
                Duration::from_secs(config.mmp.backend_reuse_idle),
            )),
            client_tls: OnceLock::new(),
        }
    }

    /// A reloaded `directory.cache_ttl` (SIGHUP).
    pub fn set_cache_ttl(&self, ttl: Duration) {
        self.logins.set_ttl(ttl);
    }

    fn client_tls(&self, config: &Config) -> Result<Arc<rustls::ClientConfig>, String> {
        self.client_tls
            .get_or_init(|| backend::client_config(config).map_err(|e| format!("{e:#}")))
            .clone()
    }
}

/// What a session uses of the shared services.
#[derive(Clone)]
pub(crate) struct Env {
    pub config: Arc<Config>,
    pub tls: Arc<Tls>,
    pub shutdown: CancellationToken,
    pub authenticate: Authenticator,
    pub shared: Arc<Shared>,
    /// First delay after a failed login (doubles each time).
    pub auth_delay: Duration,
    /// The process's resolver: backends given by name (`crate::dns`).
    pub resolver: Arc<crate::dns::Resolver>,
}

impl Env {
    fn from_services(services: &Services) -> Env {
        let directory = services.directory.clone();
        let domain = services.config.server.domain.clone();
        Env {
            shared: services.mmp.clone(),
            config: services.config.clone(),
            tls: services.tls.clone(),
            shutdown: services.shutdown.clone(),
            authenticate: Arc::new(move |login, password| {
                let directory = directory.clone();
                let domain = domain.clone();
                Box::pin(async move { directory.authenticate(&login, &password, &domain).await })
            }),
            // The growing delay comes from the process-wide limiter
            // (driver::login), not from a per-connection count.
            auth_delay: Duration::ZERO,
            resolver: services.resolver.clone(),
        }
    }

    pub(crate) fn login_mode(&self) -> LoginMode {
        self.config.mmp.login_mode
    }

    /// IMAP store connections are kept for the next login (`pool`):
    /// `backend_reuse`, with the ID that tells the store so and no PROXY
    /// header (which would name one client for the connection's life).
    pub(crate) fn reuses_store_connections(&self) -> bool {
        let m = &self.config.mmp;
        self.shared.store_pool.enabled() && m.backend_id && !m.backend_proxy_protocol
    }

    /// The base64 SASL PLAIN response logging in as `user` with the mmp's
    /// proxy credentials.
    pub(crate) fn proxyauth_plain(&self, user: &str) -> std::io::Result<String> {
        use base64::Engine;
        let m = &self.config.mmp;
        let path = self.config.data_path(&m.proxy_password_file, "");
        let text = std::fs::read_to_string(path)?;
        let password = text.lines().next().unwrap_or("").trim_end();
        let raw = format!("{user}\0{}\0{password}", m.proxy_user);
        Ok(base64::engine::general_purpose::STANDARD.encode(raw))
    }

    /// The host and port of `mail_host`'s store for `proto`.
    pub(crate) fn backend_address(&self, proto: Proto, mail_host: &str) -> (String, u16) {
        let m = &self.config.mmp;
        let implicit = m.backend_tls == TlsMode::Implicit;
        let (map, port) = match proto {
            Proto::Imap => (
                &m.imap_backends,
                match m.imap_port {
                    0 if implicit => 993,
                    0 => 143,
                    p => p,
                },
            ),
            Proto::Pop3 => (
                &m.pop3_backends,
                match m.pop3_port {
                    0 if implicit => 995,
                    0 => 110,
                    p => p,
                },
            ),
            // No implicit-TLS port for ManageSieve: the one port.
            Proto::Sieve => (
                &m.sieve_backends,
                match m.sieve_backend_port {
                    0 => 4190,
                    p => p,
                },
            ),
        };
        fn find<'a, V>(map: &'a BTreeMap<String, V>, mail_host: &str) -> Option<&'a V> {
            map.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(mail_host))
                .map(|(_, v)| v)
        }
        if let Some(hp) = find(map, mail_host) {
            return (hp.host.to_string(), hp.port.unwrap_or(port));
        }
        if let Some(host) = find(&m.backends, mail_host) {
            return (host.to_string(), port);
        }
        (mail_host.to_string(), port)
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn rfc4616_plain_fields() {
        assert_eq!(
            sasl_plain(b"\0alice\0pw"),
            Ok(("alice".into(), "pw".into()))
        );
        assert_eq!(
            sasl_plain(b"Alice\0alice\0pw"),
            Ok(("alice".into(), "pw".into()))
        );
        assert_eq!(sasl_plain(b"bob\0alice\0pw"), Err(SaslError::OtherAuthzid));
        assert_eq!(sasl_plain(b"\0\0pw"), Err(SaslError::Malformed));
        assert_eq!(sasl_plain(b"alice\0pw"), Err(SaslError::Malformed));
        assert_eq!(sasl_plain(b"\0a\0b\0c"), Err(SaslError::Malformed));
    }

    #[test]
    fn auth_delay_grows_and_caps() {
        let s = Duration::from_secs(1);
        let d: Vec<u64> = (1..=6).map(|n| auth_delay(s, n).as_secs()).collect();
        assert_eq!(d, vec![1, 2, 4, 8, 8, 8]);
        assert_eq!(auth_delay(Duration::ZERO, 3), Duration::ZERO);
    }

    #[test]
    fn backend_address_from_maps_ports_and_names() {
        let mut c = Config::default();
        c.mmp
            .backends
            .insert("Store1.example.com".into(), "10.0.0.5".parse().unwrap());
        c.mmp.imap_backends.insert(
            "store2.example.com".into(),
            "10.0.0.6:1143".parse().unwrap(),
        );
        c.mmp.sieve_backends.insert(
            "store3.example.com".into(),
            "10.0.0.7:14190".parse().unwrap(),
        );
        let env = Env {
            shared: Arc::new(Shared::new(&c)),
            config: Arc::new(c.clone()),
            tls: Arc::new(
                Tls::from_config(&{
                    let mut t = c.clone();
                    t.server.data_dir = tempfile::tempdir().unwrap().keep();
                    t
                })
                .unwrap(),
            ),
            shutdown: CancellationToken::new(),
            authenticate: Arc::new(|_, _| Box::pin(async { Ok(AuthResult::Failed(None)) })),
            auth_delay: Duration::ZERO,
            resolver: Arc::new(crate::dns::Resolver::from_config(&c).unwrap()),
        };
        assert_eq!(
            env.backend_address(Proto::Imap, "store1.example.com"),
            ("10.0.0.5".into(), 143)
        );
        assert_eq!(
            env.backend_address(Proto::Pop3, "store1.example.com"),
            ("10.0.0.5".into(), 110)
        );
        assert_eq!(
            env.backend_address(Proto::Imap, "store2.example.com"),
            ("10.0.0.6".into(), 1143)
        );
        assert_eq!(
            env.backend_address(Proto::Pop3, "store2.example.com"),
            ("store2.example.com".into(), 110)
        );
        // ManageSieve: its own map, else `backends` / the name, at 4190.
        assert_eq!(
            env.backend_address(Proto::Sieve, "store1.example.com"),
            ("10.0.0.5".into(), 4190)
        );
        assert_eq!(
            env.backend_address(Proto::Sieve, "store3.example.com"),
            ("10.0.0.7".into(), 14190)
        );
        assert_eq!(
            env.backend_address(Proto::Sieve, "store2.example.com"),
            ("store2.example.com".into(), 4190)
        );
    }
}
