//! The login sequence, once for every protocol: IMAP LOGIN/AUTHENTICATE
//! and POP3 USER/PASS/AUTH on a store, the mmp's IMAP and POP3 logins,
//! and SMTP AUTH on submission all call [`login`] and turn its one typed
//! [`Outcome`] into their own reply.
//!
//! The steps, in order (each ends the sequence when it refuses):
//! 1. `login_networks`: a store that only accepts logins from its mmps
//!    checks the TCP peer (docs/security.md section 5), before anything
//!    else, so a refused connection spends no password check.
//! 2. Proxy authorization, part one: an authorization identity naming
//!    someone else is only allowed to a login in `proxy_users`
//!    (`NotAuthorized(NotProxy)`, no password check either).
//! 3. The password check under the process's failed-login limits
//!    (`crate::loginlimit`: refusal without a check, counting against
//!    the canonical account, the failure delay, all served here). The
//!    directory answers a recently verified password from its credential
//!    cache (`crate::authcache`); the limits wrap the check either way.
//! 4. Proxy authorization, part two: the authorization identity must be
//!    an active user of the directory; the session is then that user's.
//! 5. Where the caller is a store: the account's `mailHost` must be this
//!    store (`WrongStore`), and the user's mailboxes (INBOX) are created.
//!
//! Invariants:
//! - No reply text lives here: each protocol maps the outcome to its
//!   bytes (RFC 5530 codes for IMAP, RFC 3206 for POP3, RFC 4954 for
//!   SMTP), so replies stay as each protocol's RFC wants them.
//! - Passwords are never logged; refusals are logged here, once, with the
//!   protocol, and successes by the caller (it knows what it opened).
//! - The directory is reached only through [`Accounts`], two closures, so
//!   tests can run the whole sequence against a fake.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tracing::{error, info, warn};

use crate::config::Config;
use crate::directory::{qualify_login, Account, AuthResult, DirError, Directory, Recipient};
use crate::loginlimit::{Checked, LoginLimiter};
use crate::net::ConnInfo;
use crate::store::{Store, StoreError};

/// Checks a login and password (the directory in production, a fake in
/// tests that run without one).
pub(crate) type Authenticator = Arc<
    dyn Fn(String, String) -> Pin<Box<dyn Future<Output = Result<AuthResult, DirError>> + Send>>
        + Send
        + Sync,
>;

/// Resolves an address to a user account (the directory in production).
/// `Ok(None)`: no such user.
pub(crate) type Lookup = Arc<
    dyn Fn(String) -> Pin<Box<dyn Future<Output = Result<Option<Account>, DirError>> + Send>>
        + Send
        + Sync,
>;

/// What the login sequence asks of the directory.
#[derive(Clone)]
pub(crate) struct Accounts {
    pub authenticate: Authenticator,
    /// For an authorization identity (proxy users).
    pub lookup: Lookup,
}

impl Accounts {
    /// The directory, with bare logins qualified by `domain`.
    pub fn of(directory: Arc<Directory>, domain: &str) -> Accounts {
        let lookup_dir = directory.clone();
        let lookup_domain = domain.to_string();
        let domain = domain.to_string();
        Accounts {
            lookup: Arc::new(move |address| {
                let directory = lookup_dir.clone();
                let address = qualify_login(&address, &lookup_domain);
                Box::pin(async move {
                    Ok(match directory.lookup(&address).await? {
                        Some(Recipient::User(a)) => Some(a),
                        _ => None,
                    })
                })
            }),
            authenticate: Arc::new(move |login, password| {
                let directory = directory.clone();
                let domain = domain.clone();
                Box::pin(async move { directory.authenticate(&login, &password, &domain).await })
            }),
        }
    }
}

/// Who is logging in, for the log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Imap,
    Pop3,
    Smtp,
    MmpImap,
    MmpPop3,
    /// The mem's login form.
    Webmail,
    Jmap,
    /// ManageSieve (RFC 5804) on the store.
    ManageSieve,
    /// ManageSieve through the mmp.
    MmpManageSieve,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Imap => "imap",
            Protocol::Pop3 => "pop3",
            Protocol::Smtp => "smtp",
            Protocol::MmpImap => "mmp imap",
            Protocol::MmpPop3 => "mmp pop3",
            Protocol::Webmail => "webmail",
            Protocol::Jmap => "jmap",
            Protocol::ManageSieve => "managesieve",
            Protocol::MmpManageSieve => "mmp managesieve",
        }
    }
}

/// What the caller serves once the user is in.
pub(crate) enum Serves<'a> {
    /// The user's mailboxes here: own-store check, then INBOX creation.
    /// None: this process runs no store role (a misconfiguration).
    Store(Option<&'a Store>),
    /// Nothing local (the mmp, which finds the store itself; SMTP AUTH).
    Nothing,
}

/// The rules of one protocol's login.
pub(crate) struct Rules<'a> {
    pub protocol: Protocol,
    pub config: &'a Config,
    /// Where logins may come from (empty: anywhere), against the TCP peer.
    pub login_networks: &'a [crate::netaddr::Network],
    /// Logins that may act as another user (SASL PLAIN authzid).
    pub proxy_users: &'a [String],
    pub limiter: &'a LoginLimiter,
    pub accounts: &'a Accounts,
    pub serves: Serves<'a>,
}

/// What the client sent.
#[derive(Clone, Copy)]
pub(crate) struct Credentials<'a> {
    /// The authentication identity (LOGIN/USER name, PLAIN authcid).
    pub login: &'a str,
    pub password: &'a str,
    /// An authorization identity naming someone else (`None` when absent,
    /// empty, or the login itself).
    pub authzid: Option<&'a str>,
}

impl<'a> Credentials<'a> {
    /// A login name and password (IMAP LOGIN, POP3 USER/PASS).
    pub fn password(login: &'a str, password: &'a str) -> Credentials<'a> {
        Credentials {
            login,
            password,
            authzid: None,
        }
    }

    /// SASL PLAIN (RFC 4616): an authzid that is empty or names the
    /// authcid itself (any case) is no request to act as someone else.
    pub fn plain(authzid: &'a str, authcid: &'a str, password: &'a str) -> Credentials<'a> {
        let other = !authzid.is_empty() && !authzid.eq_ignore_ascii_case(authcid);
        Credentials {
            login: authcid,
            password,
            authzid: other.then_some(authzid),
        }
    }
}

/// Decodes a SASL PLAIN message (RFC 4616 section 2: authzid NUL authcid
/// NUL passwd, UTF-8) into (authzid, authcid, password). None: not three
/// fields, not UTF-8, or an empty authcid. The IMAP store and the mmp
/// decode with this (the store's POP3 core keeps its lossy decoding).
pub(crate) fn parse_plain(raw: &[u8]) -> Option<(String, String, String)> {
    let mut fields = raw.split(|b| *b == 0);
    let (Some(authz), Some(authc), Some(pass), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return None;
    };
    if authc.is_empty() {
        return None;
    }
    Some((
        String::from_utf8(authz.to_vec()).ok()?,
        String::from_utf8(authc.to_vec()).ok()?,
        String::from_utf8(pass.to_vec()).ok()?,
    ))
}

/// A successful login.
#[derive(Debug, Clone)]
pub(crate) struct LoggedIn {
    /// The account the session is for (the authorization identity's when
    /// a proxy user acted for it).
    pub account: Account,
    /// The proxy login that acted for `account`, as typed; None for a
    /// user's own login.
    pub authz: Option<String>,
    /// The authenticated login is one of `proxy_users` (an mmp): what it
    /// says about the client (IMAP ID x-originating-ip) can be trusted.
    pub proxy: bool,
}

/// Why an authorization identity was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthzFailure {
    /// The login may not act as another user (not in `proxy_users`).
    NotProxy,
    /// No such user.
    UnknownUser,
    /// The user is disabled.
    InactiveUser,
}

/// Why the login cannot be served now (a temporary condition, or this is
/// the wrong door).
#[derive(Debug, Clone)]
pub(crate) enum Unavailable {
    /// Not from `login_networks`: log in through the mmp.
    LoginNetworks,
    /// The directory could not answer.
    Directory,
    /// This process runs no store role.
    NoStore,
    /// The store could not create the user's mailboxes.
    Store(StoreError),
}

/// What came of a login.
#[derive(Debug, Clone)]
// One per login (or process): its size does not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Outcome {
    Ok(LoggedIn),
    /// Wrong login or password (the failure delay was served).
    Failed,
    /// Too many failures from this client or of it for this account:
    /// refused whatever the password (after the longest delay).
    RateLimited,
    /// Right password, disabled account.
    Inactive,
    /// The authorization identity was refused.
    NotAuthorized(AuthzFailure),
    /// The user's mailboxes are on another store (`mailHost`). No reply
    /// names the host today (the client goes through the mmp); it is kept
    /// for a referral (RFC 2221) and for tests.
    #[allow(dead_code)]
    WrongStore {
        host: String,
    },
    Unavailable(Unavailable),
}

fn is_proxy_user(rules: &Rules<'_>, login: &str) -> bool {
    let domain = &rules.config.server.domain;
    let q = qualify_login(login, domain);
    rules
        .proxy_users
        .iter()
        .any(|p| qualify_login(p, domain) == q)
}

/// Runs the login sequence (module doc) for one attempt from `conn`.
pub(crate) async fn login(rules: &Rules<'_>, conn: &ConnInfo, creds: Credentials<'_>) -> Outcome {
    let protocol = rules.protocol.as_str();
    // Client text in the log: bounded, controls replaced.
    let login = &crate::redact::sanitize(creds.login, 320)[..];
    let domain = &rules.config.server.domain;
    if !conn.login_allowed(rules.login_networks) {
        info!(protocol, login, from = %conn.connected_ip(), "login refused: not from login_networks");
        return Outcome::Unavailable(Unavailable::LoginNetworks);
    }
    if creds.authzid.is_some() && !is_proxy_user(rules, creds.login) {
        info!(
            protocol,
            login, "login refused: not allowed to act as another user"
        );
        return Outcome::NotAuthorized(AuthzFailure::NotProxy);
    }
    let typed = qualify_login(creds.login, domain);
    let shown = crate::redact::sanitize(&typed, 320);
    let check = (rules.accounts.authenticate)(creds.login.to_string(), creds.password.to_string());
    let account = match rules.limiter.check(conn.peer.ip(), &typed, check).await {
        Checked::Ok(account) => account,
        Checked::Failed => {
            info!(protocol, login = %shown, "authentication failed");
            crate::metrics::auth_failure(protocol);
            return Outcome::Failed;
        }
        Checked::Refused => {
            warn!(protocol, login = %shown, "login refused: too many recent failures from this address or for this user");
            crate::metrics::limit_hit("login_limiter");
            return Outcome::RateLimited;
        }
        Checked::Inactive => {
            info!(protocol, login = %shown, "login to an inactive account refused");
            return Outcome::Inactive;
        }
        Checked::Unavailable(DirError::Temporary(e)) => {
            warn!(protocol, login = %shown, error = %e, "directory unavailable during login");
            return Outcome::Unavailable(Unavailable::Directory);
        }
    };
    let proxy = is_proxy_user(rules, &account.address);
    let (account, authz) = match creds.authzid {
        None => (account, None),
        Some(target) => {
            let address = qualify_login(target, domain);
            let target = &crate::redact::sanitize(target, 320)[..];
            match (rules.accounts.lookup)(address).await {
                Ok(Some(a)) if a.active => {
                    info!(protocol, proxy = login, user = %a.address, "proxy login");
                    (a, Some(creds.login.to_string()))
                }
                Ok(Some(_)) => {
                    info!(
                        protocol,
                        proxy = login,
                        authzid = target,
                        "proxy login to an inactive account refused"
                    );
                    return Outcome::NotAuthorized(AuthzFailure::InactiveUser);
                }
                Ok(None) => {
                    info!(
                        protocol,
                        proxy = login,
                        authzid = target,
                        "proxy login for an unknown user"
                    );
                    return Outcome::NotAuthorized(AuthzFailure::UnknownUser);
                }
                Err(DirError::Temporary(e)) => {
                    warn!(protocol, authzid = target, error = %e, "directory unavailable during proxy login");
                    return Outcome::Unavailable(Unavailable::Directory);
                }
            }
        }
    };
    if let Serves::Store(store) = rules.serves {
        let Some(store) = store else {
            error!(
                protocol,
                "login to a store, but this process runs no store role"
            );
            return Outcome::Unavailable(Unavailable::NoStore);
        };
        // A user being moved to another store (or just moved, for
        // clients and proxies whose directory cache still says here):
        // try again later (msgd user move).
        if let Some(state) = store.moving().deferred(&account.address) {
            let host = match state {
                crate::store::moving::State::Moving { to, .. }
                | crate::store::moving::State::Moved { to, .. } => to,
            };
            warn!(protocol, user = %account.address, to = %host,
                "login for a user being moved between stores deferred");
            // IMAP NO [UNAVAILABLE], POP -ERR [SYS/TEMP]: try again later.
            return Outcome::WrongStore { host };
        }
        // A store serves its own users only (another store's would get
        // empty mailboxes here); clients reach the right one through the
        // mmp.
        if !crate::config::is_own_store(rules.config, account.mail_host.as_deref()) {
            let host = account.mail_host.clone().unwrap_or_default();
            warn!(protocol, user = %account.address, mail_host = %host,
                "login for a user of another store refused");
            return Outcome::WrongStore { host };
        }
        if let Err(e) = store
            .ensure_user(&account.address, account.partition.as_deref())
            .await
        {
            error!(protocol, user = %account.address, error = %e, "cannot create the user's mailboxes");
            return Outcome::Unavailable(Unavailable::Store(e));
        }
    }
    Outcome::Ok(LoggedIn {
        account,
        authz,
        proxy,
    })
}

#[cfg(test)]
mod tests {
    //! One test per outcome, against a real store in a temp folder and a
    //! fake directory: alice/secret is a user, mmp/proxy pw is the proxy
    //! account, "inactive" is a disabled account's right password, "down"
    //! makes the directory unreachable, anything else is wrong. bob lives
    //! on store2.test; carol's partition does not exist.

    use super::*;
    use crate::config::PartitionConfig;
    use crate::loginlimit::Limits;
    use std::time::Duration;

    const ALICE: &str = "alice@localhost";

    fn account(address: &str) -> Account {
        Account::new(address)
    }

    fn directory_account(address: &str) -> Option<Account> {
        match address {
            ALICE | "mmp@localhost" => Some(account(address)),
            "bob@localhost" => Some(Account {
                mail_host: Some("store2.test".into()),
                ..account(address)
            }),
            "carol@localhost" => Some(Account {
                partition: Some("nosuch".into()),
                ..account(address)
            }),
            "off@localhost" => Some(Account {
                active: false,
                ..account(address)
            }),
            _ => None,
        }
    }

    fn accounts() -> Accounts {
        Accounts {
            authenticate: Arc::new(|login: String, password: String| {
                Box::pin(async move {
                    let login = qualify_login(&login, "localhost");
                    match (password.as_str(), directory_account(&login)) {
                        ("down", _) => Err(DirError::Temporary("test".into())),
                        ("inactive", Some(_)) => Ok(AuthResult::Inactive),
                        ("secret", Some(a)) if login != "mmp@localhost" => Ok(AuthResult::Ok(a)),
                        ("proxy pw", Some(a)) if login == "mmp@localhost" => Ok(AuthResult::Ok(a)),
                        (_, a) => Ok(AuthResult::Failed(a.map(|a| a.address))),
                    }
                })
            }),
            lookup: Arc::new(|address: String| {
                Box::pin(async move {
                    if address == "down@localhost" {
                        return Err(DirError::Temporary("test".into()));
                    }
                    Ok(directory_account(&address))
                })
            }),
        }
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        config: Config,
        store: Store,
        limiter: LoginLimiter,
        accounts: Accounts,
        proxy_users: Vec<String>,
        login_networks: Vec<crate::netaddr::Network>,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.server.data_dir = dir.path().to_path_buf();
        config.server.domain = "localhost".into();
        config.store.min_free_disk = 0;
        config.store.partition.insert(
            "primary".into(),
            PartitionConfig {
                path: "partition/primary".into(),
            },
        );
        let store = Store::open(&config).unwrap();
        Fixture {
            _dir: dir,
            config,
            store,
            limiter: LoginLimiter::new(Limits {
                per_client: 3,
                per_account: 0,
                window: Duration::from_secs(60),
                delay: Duration::ZERO,
            }),
            accounts: accounts(),
            proxy_users: vec!["mmp".into()],
            login_networks: vec![],
        }
    }

    impl Fixture {
        fn rules(&self, serves: Serves<'static>) -> Rules<'_> {
            Rules {
                protocol: Protocol::Imap,
                config: &self.config,
                login_networks: &self.login_networks,
                proxy_users: &self.proxy_users,
                limiter: &self.limiter,
                accounts: &self.accounts,
                serves,
            }
        }

        async fn at_store(&self, creds: Credentials<'_>) -> Outcome {
            let rules = Rules {
                serves: Serves::Store(Some(&self.store)),
                ..self.rules(Serves::Nothing)
            };
            login(&rules, &conn(), creds).await
        }
    }

    fn conn() -> ConnInfo {
        ConnInfo::for_test(crate::config::Protocol::Imap)
    }

    fn pw<'a>(login: &'a str, password: &'a str) -> Credentials<'a> {
        Credentials::password(login, password)
    }

    #[tokio::test]
    async fn ok_creates_the_inbox_of_the_canonical_account() {
        let f = fixture();
        let Outcome::Ok(l) = f.at_store(pw("Alice", "secret")).await else {
            panic!("not logged in");
        };
        assert_eq!(l.account.address, ALICE);
        assert_eq!((l.authz, l.proxy), (None, false));
        f.store
            .snapshot(ALICE, "INBOX")
            .await
            .expect("INBOX created");
    }

    #[tokio::test]
    async fn rfc4616_ok_proxy_user_acts_for_the_authzid() {
        let f = fixture();
        let creds = Credentials::plain("alice", "mmp", "proxy pw");
        let Outcome::Ok(l) = f.at_store(creds).await else {
            panic!("not logged in");
        };
        assert_eq!(l.account.address, ALICE);
        assert_eq!(l.authz.as_deref(), Some("mmp"));
        assert!(l.proxy);
        // The proxy logging in as itself is marked a proxy too.
        let Outcome::Ok(l) = f.at_store(pw("mmp", "proxy pw")).await else {
            panic!("not logged in");
        };
        assert!(l.proxy && l.authz.is_none());
    }

    #[test]
    fn rfc4616_authzid_of_the_login_itself_is_no_proxy_request() {
        assert_eq!(Credentials::plain("", "alice", "pw").authzid, None);
        assert_eq!(Credentials::plain("ALICE", "alice", "pw").authzid, None);
        assert_eq!(
            Credentials::plain("bob", "alice", "pw").authzid,
            Some("bob")
        );
    }

    #[test]
    fn rfc4616_plain_parsing() {
        let owned = |a: &str, b: &str, c: &str| Some((a.into(), b.into(), c.into()));
        assert_eq!(
            parse_plain(b"\0alice\0secret"),
            owned("", "alice", "secret")
        );
        assert_eq!(parse_plain(b"bob\0alice\0pw"), owned("bob", "alice", "pw"));
        assert_eq!(parse_plain(b"alice\0secret"), None);
        assert_eq!(parse_plain(b"\0\0pw"), None);
        assert_eq!(parse_plain(b"\0a\0b\0c"), None);
        assert_eq!(parse_plain(b"\0a\xff\0pw"), None);
    }

    #[tokio::test]
    async fn failed_on_a_wrong_password_or_unknown_user() {
        let f = fixture();
        assert!(matches!(
            f.at_store(pw("alice", "wrong")).await,
            Outcome::Failed
        ));
        assert!(matches!(
            f.at_store(pw("nobody", "secret")).await,
            Outcome::Failed
        ));
    }

    #[tokio::test]
    async fn rate_limited_past_the_client_limit_even_with_the_right_password() {
        let f = fixture();
        for _ in 0..3 {
            assert!(matches!(
                f.at_store(pw("alice", "wrong")).await,
                Outcome::Failed
            ));
        }
        assert!(matches!(
            f.at_store(pw("alice", "secret")).await,
            Outcome::RateLimited
        ));
    }

    #[tokio::test]
    async fn inactive_account() {
        let f = fixture();
        assert!(matches!(
            f.at_store(pw("off", "inactive")).await,
            Outcome::Inactive
        ));
    }

    #[tokio::test]
    async fn rfc4616_not_authorized_unless_a_proxy_user_for_an_active_user() {
        let f = fixture();
        let cases = [
            (("alice", "bob", "secret"), AuthzFailure::NotProxy),
            (("nobody", "mmp", "proxy pw"), AuthzFailure::UnknownUser),
            (("off", "mmp", "proxy pw"), AuthzFailure::InactiveUser),
        ];
        for ((authz, authc, pass), want) in cases {
            match f.at_store(Credentials::plain(authz, authc, pass)).await {
                Outcome::NotAuthorized(got) => assert_eq!(got, want, "{authz}"),
                o => panic!("{authz}: {o:?}"),
            }
        }
        // A non-proxy user is refused before any password check: no
        // failure is counted against it.
        for _ in 0..5 {
            f.at_store(Credentials::plain("alice", "bob", "wrong"))
                .await;
        }
        assert!(matches!(f.at_store(pw("bob", "x")).await, Outcome::Failed));
    }

    #[tokio::test]
    async fn wrong_store_for_another_mail_host_only_at_a_store() {
        let f = fixture();
        match f.at_store(pw("bob", "secret")).await {
            Outcome::WrongStore { host } => assert_eq!(host, "store2.test"),
            o => panic!("{o:?}"),
        }
        // The mmp and SMTP AUTH serve nothing locally: bob is fine there.
        let rules = f.rules(Serves::Nothing);
        assert!(matches!(
            login(&rules, &conn(), pw("bob", "secret")).await,
            Outcome::Ok(_)
        ));
    }

    #[tokio::test]
    async fn unavailable_outside_login_networks_without_a_password_check() {
        let mut f = fixture();
        f.login_networks = vec!["10.0.0.0/8".parse().unwrap()];
        for _ in 0..5 {
            assert!(matches!(
                f.at_store(pw("alice", "secret")).await,
                Outcome::Unavailable(Unavailable::LoginNetworks)
            ));
        }
        assert_eq!(f.limiter.sizes(), (0, 0, 0));
    }

    #[tokio::test]
    async fn unavailable_when_the_directory_is_down() {
        let f = fixture();
        assert!(matches!(
            f.at_store(pw("alice", "down")).await,
            Outcome::Unavailable(Unavailable::Directory)
        ));
        assert!(matches!(
            f.at_store(Credentials::plain("down", "mmp", "proxy pw"))
                .await,
            Outcome::Unavailable(Unavailable::Directory)
        ));
    }

    #[tokio::test]
    async fn unavailable_without_a_store_or_its_mailboxes() {
        let f = fixture();
        let rules = f.rules(Serves::Store(None));
        assert!(matches!(
            login(&rules, &conn(), pw("alice", "secret")).await,
            Outcome::Unavailable(Unavailable::NoStore)
        ));
        assert!(matches!(
            f.at_store(pw("carol", "secret")).await,
            Outcome::Unavailable(Unavailable::Store(_))
        ));
    }
}
