//! End-to-end mmp sessions: a client over `tokio::io::duplex`, the mmp
//! driver, and stores on loopback TCP: scripted fake IMAP stores (until the
//! IMAP store server lands) and the real POP3 store server of this crate.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, DuplexStream};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{driver, Env, Proto, Shared};
use crate::config::{Config, Protocol};
use crate::directory::{Account, AuthResult, DirError};
use crate::net::ConnInfo;
use crate::tls::Tls;

fn account(address: &str, mail_host: Option<&str>) -> Account {
    Account {
        mail_host: mail_host.map(String::from),
        ..Account::new(address)
    }
}

/// The directory of these tests: password "secret" for everyone below;
/// alice lives on store1, bob on store2, dave on store1 but store1 refuses
/// him, erin on a store that is down, frank has no mailHost; "inactive"
/// and "down" (as passwords) make the directory say so.
fn authenticator() -> super::Authenticator {
    Arc::new(|login: String, password: String| {
        Box::pin(async move {
            let login = crate::directory::qualify_login(&login, "localhost");
            if password == "down" {
                return Err(DirError::Temporary("test".into()));
            }
            if password == "inactive" {
                return Ok(AuthResult::Inactive);
            }
            let host = match login.as_str() {
                "alice@localhost" | "dave@localhost" => Some("store1.example"),
                "bob@localhost" => Some("store2.example"),
                "erin@localhost" => Some("down.example"),
                "frank@localhost" => None,
                _ => return Ok(AuthResult::Failed(None)),
            };
            if password != "secret" {
                return Ok(AuthResult::Failed(None));
            }
            Ok(AuthResult::Ok(account(&login, host)))
        })
    })
}

struct Harness {
    _dir: tempfile::TempDir,
    env: Env,
}

fn harness(edit: impl FnOnce(&mut Config)) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Config::default();
    c.server.data_dir = dir.path().to_path_buf();
    c.mmp.backend_tls = "none".parse().unwrap();
    c.mmp.connect_timeout = 2;
    c.mmp.backend_timeout = 5;
    c.limits.login_failure_delay_ms = 0;
    edit(&mut c);
    let env = Env {
        resolver: Arc::new(crate::dns::Resolver::from_config(&c).unwrap()),
        shared: Arc::new(Shared::new(&c)),
        tls: Arc::new(Tls::from_config(&c).unwrap()),
        config: Arc::new(c),
        shutdown: CancellationToken::new(),
        authenticate: authenticator(),
        auth_delay: Duration::ZERO,
    };
    Harness { _dir: dir, env }
}

impl Harness {
    fn connect_as(&self, info: ConnInfo, proto: Proto) -> (Client, JoinHandle<()>) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let task = tokio::spawn(driver::run(Box::new(server), info, self.env.clone(), proto));
        (Client::new(client), task)
    }

    fn imap(&self) -> (Client, JoinHandle<()>) {
        self.connect_as(ConnInfo::for_test(Protocol::Imap), Proto::Imap)
    }

    fn pop3(&self) -> (Client, JoinHandle<()>) {
        self.connect_as(ConnInfo::for_test(Protocol::Pop3), Proto::Pop3)
    }

    fn sieve(&self) -> (Client, JoinHandle<()>) {
        self.connect_as(ConnInfo::for_test(Protocol::Managesieve), Proto::Sieve)
    }
}

struct Client<S = DuplexStream> {
    io: BufReader<S>,
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> Client<S> {
    fn new(s: S) -> Client<S> {
        Client {
            io: BufReader::new(s),
        }
    }

    async fn line(&mut self) -> String {
        let mut l = String::new();
        tokio::time::timeout(Duration::from_secs(20), self.io.read_line(&mut l))
            .await
            .expect("reply in time")
            .unwrap();
        l
    }

    async fn send(&mut self, s: &str) {
        self.io.get_mut().write_all(s.as_bytes()).await.unwrap();
    }

    /// Sends a command line; returns all lines up to the one starting with
    /// `upto` (a tag, or "+OK"/"-ERR" for POP3), joined.
    async fn cmd(&mut self, s: &str, upto: &str) -> String {
        self.send(&format!("{s}\r\n")).await;
        self.until(upto).await
    }

    async fn until(&mut self, upto: &str) -> String {
        let mut all = String::new();
        loop {
            let l = self.line().await;
            assert!(!l.is_empty(), "eof; got so far: {all}");
            all.push_str(&l);
            if l.starts_with(upto) {
                return all;
            }
        }
    }

    async fn at_eof(&mut self) -> bool {
        let mut rest = Vec::new();
        matches!(
            tokio::time::timeout(Duration::from_secs(20), self.io.read_to_end(&mut rest)).await,
            Ok(Ok(_))
        ) && rest.is_empty()
    }
}

/// A scripted IMAP store on loopback. It logs what it receives.
#[derive(Clone)]
struct FakeImap {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

#[derive(Clone, Copy, Default)]
struct FakeOpts {
    /// LOGIN's OK carries no [CAPABILITY]: the mmp must ask.
    no_caps_in_ok: bool,
    /// Expect a PROXY header first.
    proxy_header: bool,
}

impl FakeImap {
    async fn start(name: &'static str, opts: FakeOpts) -> FakeImap {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let l2 = log.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(fake_imap_session(tcp, name, opts, l2.clone()));
            }
        });
        FakeImap { addr, log }
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

/// Splits `"a b" c "d\"e"` into its strings.
fn imap_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c == ' ' {
            chars.next();
        } else if c == '"' {
            chars.next();
            let mut w = String::new();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => w.extend(chars.next()),
                    '"' => break,
                    c => w.push(c),
                }
            }
            out.push(w);
        } else {
            let mut w = String::new();
            while let Some(&c) = chars.peek() {
                if c == ' ' {
                    break;
                }
                w.push(c);
                chars.next();
            }
            out.push(w);
        }
    }
    out
}

async fn fake_imap_session(
    mut tcp: tokio::net::TcpStream,
    name: &'static str,
    opts: FakeOpts,
    log: Arc<Mutex<Vec<String>>>,
) {
    use base64::Engine;
    let push = |s: String| log.lock().unwrap().push(s);
    if opts.proxy_header {
        match crate::proxyproto::read_header(&mut tcp).await {
            Ok((h, rest)) => {
                assert!(rest.is_empty());
                push(format!("PROXY {:?}", h.source));
            }
            Err(e) => {
                push(format!("PROXY error {e}"));
                return;
            }
        }
    }
    let (r, mut w) = tcp.into_split();
    let mut r = BufReader::new(r);
    let caps = format!("IMAP4rev1 IDLE X-{name}");
    w.write_all(
        format!("* OK [CAPABILITY IMAP4rev1 SASL-IR ID AUTH=PLAIN] {name} ready\r\n").as_bytes(),
    )
    .await
    .unwrap();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let line = line.trim_end().to_string();
        let (tag, rest) = line.split_once(' ').unwrap_or((&line, ""));
        let (cmd, args) = rest.split_once(' ').unwrap_or((rest, ""));
        let reply = match cmd.to_ascii_uppercase().as_str() {
            "ID" => {
                push(format!("ID {args}"));
                if !r.buffer().is_empty() {
                    // The next command came in the same write.
                    push("PIPELINED after the ID".into());
                }
                format!("* ID (\"name\" \"{name}\")\r\n{tag} OK ID completed\r\n")
            }
            "LOGIN" => {
                let w = imap_words(args);
                push(format!("LOGIN {}", w.join(" ")));
                if w.get(1).map(String::as_str) == Some("secret")
                    && w.first().map(String::as_str) != Some("dave@localhost")
                {
                    if opts.no_caps_in_ok {
                        format!("{tag} OK Logged in\r\n")
                    } else {
                        format!("{tag} OK [CAPABILITY {caps}] Logged in\r\n")
                    }
                } else {
                    format!("{tag} NO [AUTHENTICATIONFAILED] store says no to {args}\r\n")
                }
            }
            "AUTHENTICATE" => {
                let ir = args.split(' ').nth(1).unwrap_or("");
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(ir)
                    .unwrap_or_default();
                let fields: Vec<String> = raw
                    .split(|b| *b == 0)
                    .map(|f| String::from_utf8_lossy(f).into_owned())
                    .collect();
                push(format!("AUTH {}", fields.join("|")));
                if fields.get(1).map(String::as_str) == Some("mmp@localhost")
                    && fields.get(2).map(String::as_str) == Some("proxy pw")
                {
                    format!("{tag} OK [CAPABILITY {caps}] Logged in\r\n")
                } else {
                    format!("{tag} NO [AUTHENTICATIONFAILED] no\r\n")
                }
            }
            "CAPABILITY" => {
                push("CAPABILITY".into());
                format!("* CAPABILITY {caps}\r\n{tag} OK done\r\n")
            }
            "CLOSE-NOW" => {
                push("CLOSE-NOW".into());
                return;
            }
            "LOGOUT" => {
                let _ = w
                    .write_all(format!("* BYE\r\n{tag} OK done\r\n").as_bytes())
                    .await;
                return;
            }
            other => {
                push(format!("{other} {args}"));
                format!("{tag} OK {other} done at {name}\r\n")
            }
        };
        if w.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// A loopback address on which nothing listens.
async fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

async fn two_stores(opts2: FakeOpts) -> (FakeImap, FakeImap, Harness) {
    let s1 = FakeImap::start("STORE1", FakeOpts::default()).await;
    let s2 = FakeImap::start("STORE2", opts2).await;
    let dead = dead_addr().await;
    let h = harness(|c| {
        c.mmp.imap_backends.insert(
            "store1.example".into(),
            s1.addr.to_string().parse().unwrap(),
        );
        c.mmp.imap_backends.insert(
            "STORE2.example".into(),
            s2.addr.to_string().parse().unwrap(),
        );
        c.mmp
            .imap_backends
            .insert("down.example".into(), dead.to_string().parse().unwrap());
    });
    (s1, s2, h)
}

#[tokio::test]
async fn imap_login_reaches_the_store_named_by_mailhost() {
    let (s1, s2, h) = two_stores(FakeOpts::default()).await;
    let (mut c, task) = h.imap();
    let g = c.line().await;
    assert!(
        g.starts_with("* OK [CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN SASL-IR ID LITERAL+]"),
        "{g}"
    );
    assert_eq!(
        c.cmd("a1 LOGIN alice secret", "a1 ").await,
        "a1 OK [CAPABILITY IMAP4rev1 IDLE X-STORE1] Logged in\r\n"
    );
    assert_eq!(
        c.cmd("a2 SELECT INBOX", "a2 ").await,
        "a2 OK SELECT done at STORE1\r\n"
    );
    assert_eq!(c.cmd("a3 LOGOUT", "a3 ").await, "* BYE\r\na3 OK done\r\n");
    assert!(c.at_eof().await);
    task.await.unwrap();
    // The store saw the canonical address and the user's password.
    assert!(
        s1.log()
            .contains(&"LOGIN alice@localhost secret".to_string()),
        "{:?}",
        s1.log()
    );

    // bob lives on store2 (the map's key is matched case-insensitively).
    let (mut c, _task) = h.imap();
    c.line().await;
    let r = c.cmd("b1 AUTHENTICATE PLAIN AGJvYgBzZWNyZXQ=", "b1 ").await;
    assert_eq!(
        r,
        "b1 OK [CAPABILITY IMAP4rev1 IDLE X-STORE2] Logged in\r\n"
    );
    assert_eq!(
        c.cmd("b2 NOOP", "b2 ").await,
        "b2 OK NOOP done at STORE2\r\n"
    );
    assert!(s2.log().contains(&"LOGIN bob@localhost secret".to_string()));
    assert!(!s1.log().iter().any(|l| l.contains("bob")));
}

#[tokio::test]
async fn imap_id_tells_the_store_the_client_address() {
    let (s1, _s2, h) = two_stores(FakeOpts::default()).await;
    let mut info = ConnInfo::for_test(Protocol::Imap);
    info.peer = "192.0.2.7:4444".parse().unwrap();
    info.local = "198.51.100.1:993".parse().unwrap();
    info.tls_active = true;
    info.session_id = 77;
    let (mut c, _task) = h.connect_as(info, Proto::Imap);
    c.line().await;
    c.cmd(
        "a0 ID (\"name\" \"TestClient\" \"x-originating-ip\" \"6.6.6.6\")",
        "a0 ",
    )
    .await;
    let r = c.cmd("a1 LOGIN alice secret", "a1 ").await;
    assert!(r.starts_with("a1 OK"), "{r}");
    let id = s1.log().into_iter().find(|l| l.starts_with("ID ")).unwrap();
    assert_eq!(
        id,
        "ID (\"name\" \"TestClient\" \"x-originating-ip\" \"192.0.2.7\" \"x-originating-port\" \"4444\" \
         \"x-connected-ip\" \"198.51.100.1\" \"x-connected-port\" \"993\" \"x-session-ext-id\" \"mmp-77\" \"x-unauthenticate\" \"proxy\")"
    );
    // ID comes before the login, in the same write (no round trip of
    // its own).
    let log = s1.log();
    let id_at = log.iter().position(|l| l.starts_with("ID ")).unwrap();
    let login_at = log.iter().position(|l| l.starts_with("LOGIN ")).unwrap();
    assert!(id_at < login_at);
    assert_eq!(log[id_at + 1], "PIPELINED after the ID", "{log:?}");
}

#[tokio::test]
async fn imap_capabilities_are_asked_for_when_the_login_ok_has_none() {
    let (_s1, s2, h) = two_stores(FakeOpts {
        no_caps_in_ok: true,
        ..FakeOpts::default()
    })
    .await;
    let (mut c, _task) = h.imap();
    c.line().await;
    assert_eq!(
        c.cmd("a LOGIN bob secret", "a ").await,
        "a OK [CAPABILITY IMAP4rev1 IDLE X-STORE2] Logged in\r\n"
    );
    assert!(s2.log().contains(&"CAPABILITY".to_string()));
}

#[tokio::test]
async fn imap_failures_are_clear() {
    let (s1, _s2, h) = two_stores(FakeOpts::default()).await;
    let (mut c, _task) = h.imap();
    c.line().await;
    for (cmd, expect) in [
        (
            "a LOGIN alice wrong",
            "a NO [AUTHENTICATIONFAILED] Authentication failed\r\n",
        ),
        (
            "b LOGIN nobody secret",
            "b NO [AUTHENTICATIONFAILED] Authentication failed\r\n",
        ),
        (
            "c LOGIN alice down",
            "c NO [UNAVAILABLE] User directory unavailable; try again later\r\n",
        ),
        (
            "d LOGIN erin secret",
            "d NO [UNAVAILABLE] Mail store unavailable; try again later\r\n",
        ),
        (
            "e LOGIN frank secret",
            "e NO [UNAVAILABLE] Mail store unavailable; try again later\r\n",
        ),
        (
            // The store's NO: its code passes, its text does not.
            "f LOGIN dave secret",
            "f NO [AUTHENTICATIONFAILED] Login refused by the mail store\r\n",
        ),
    ] {
        let tag = &cmd[..2];
        assert_eq!(c.cmd(cmd, tag).await, expect, "{cmd}");
    }
    assert!(s1
        .log()
        .contains(&"LOGIN dave@localhost secret".to_string()));
    // The connection is still usable after all that.
    let r = c.cmd("g LOGIN alice secret", "g ").await;
    assert!(r.starts_with("g OK [CAPABILITY"), "{r}");
}

#[tokio::test]
async fn imap_store_closing_mid_session_closes_the_client() {
    let (_s1, _s2, h) = two_stores(FakeOpts::default()).await;
    let (mut c, task) = h.imap();
    c.line().await;
    c.cmd("a LOGIN alice secret", "a ").await;
    c.send("b CLOSE-NOW\r\n").await;
    assert!(c.at_eof().await);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("session ends")
        .unwrap();
}

#[tokio::test]
async fn imap_commands_pipelined_after_login_reach_the_store() {
    let (s1, _s2, h) = two_stores(FakeOpts::default()).await;
    let (mut c, _task) = h.imap();
    c.line().await;
    c.send("a LOGIN {5+}\r\nalice {6+}\r\nsecret\r\nb SELECT INBOX\r\nc NOOP\r\n")
        .await;
    let r = c.until("c ").await;
    assert_eq!(
        r,
        "a OK [CAPABILITY IMAP4rev1 IDLE X-STORE1] Logged in\r\nb OK SELECT done at STORE1\r\nc OK NOOP done at STORE1\r\n"
    );
    assert!(s1.log().contains(&"SELECT INBOX".to_string()));
}

/// An mmp logging in to `s1` (store1.example) as `mmp@localhost` with
/// the proxy password "proxy pw" (kept in the returned folder).
fn proxyauth_harness(s1: &FakeImap) -> (Harness, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let pwfile = dir.path().join("proxy.pw");
    std::fs::write(&pwfile, "proxy pw\n").unwrap();
    let h = harness(|c| {
        c.mmp.imap_backends.insert(
            "store1.example".into(),
            s1.addr.to_string().parse().unwrap(),
        );
        c.mmp.login_mode = "proxyauth".parse().unwrap();
        c.mmp.proxy_user = "mmp@localhost".into();
        c.mmp.proxy_password_file = pwfile.display().to_string();
    });
    (h, dir)
}

#[tokio::test]
async fn imap_proxyauth_logs_in_with_the_proxy_credentials() {
    let s1 = FakeImap::start("STORE1", FakeOpts::default()).await;
    let (h, _dir) = proxyauth_harness(&s1);
    let (mut c, _task) = h.imap();
    c.line().await;
    assert_eq!(
        c.cmd("a LOGIN alice secret", "a ").await,
        "a OK [CAPABILITY IMAP4rev1 IDLE X-STORE1] Logged in\r\n"
    );
    let log = s1.log();
    assert!(
        log.contains(&"AUTH alice@localhost|mmp@localhost|proxy pw".to_string()),
        "{log:?}"
    );
    // The ID went in the same write as the AUTHENTICATE.
    let id_at = log.iter().position(|l| l.starts_with("ID ")).unwrap();
    assert_eq!(log[id_at + 1], "PIPELINED after the ID", "{log:?}");
    assert!(log[id_at + 2].starts_with("AUTH "), "{log:?}");
    // The user's own password never reached the store.
    assert!(!log.iter().any(|l| l.contains("secret")));
}

/// `authenticator()`, counting the directory checks.
fn counting(calls: Arc<std::sync::atomic::AtomicUsize>) -> super::Authenticator {
    let inner = authenticator();
    Arc::new(move |login: String, password: String| {
        calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        inner(login, password)
    })
}

/// One session: greeting, LOGIN, the answer.
async fn login_once(h: &Harness, user: &str, password: &str) -> String {
    let (mut c, _task) = h.imap();
    c.line().await;
    c.cmd(&format!("a LOGIN {user} {password}"), "a ").await
}

/// Credentials mode: a login verified in the last `directory.cache_ttl`
/// is answered from the mmp's cache (the store still checks the
/// password every time); a wrong password, a store's refusal and an
/// unreachable store send the next login to the directory again; with
/// proxyauth (the store trusts the mmp's check) nothing is cached.
#[tokio::test]
async fn credentials_logins_are_cached_and_forgotten_when_the_store_refuses() {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    let (s1, _s2, mut h) = two_stores(FakeOpts::default()).await;
    let calls = Arc::new(AtomicUsize::new(0));
    h.env.authenticate = counting(calls.clone());
    for _ in 0..2 {
        let r = login_once(&h, "alice", "secret").await;
        assert!(r.starts_with("a OK [CAPABILITY"), "{r}");
    }
    assert_eq!(calls.load(SeqCst), 1, "the second login was a cache hit");
    let at_store = s1
        .log()
        .iter()
        .filter(|l| *l == "LOGIN alice@localhost secret")
        .count();
    assert_eq!(at_store, 2, "the store checked both logins");
    // Another password is not the cached one: the directory decides and
    // its "no" forgets the entry.
    assert!(login_once(&h, "alice", "wrong").await.starts_with("a NO"));
    assert_eq!(calls.load(SeqCst), 2);
    assert!(login_once(&h, "alice", "secret").await.starts_with("a OK"));
    assert_eq!(calls.load(SeqCst), 3, "the failure forgot the entry");
    // The store refuses dave, is down for erin: asked again each time.
    for user in ["dave", "erin"] {
        let before = calls.load(SeqCst);
        for _ in 0..2 {
            assert!(login_once(&h, user, "secret").await.starts_with("a NO"));
        }
        assert_eq!(calls.load(SeqCst), before + 2, "{user}");
    }

    let (mut h, _dir) = proxyauth_harness(&s1);
    let calls = Arc::new(AtomicUsize::new(0));
    h.env.authenticate = counting(calls.clone());
    for _ in 0..2 {
        assert!(login_once(&h, "alice", "secret").await.starts_with("a OK"));
    }
    assert_eq!(
        calls.load(SeqCst),
        2,
        "proxyauth: the mmp's check is the only one"
    );
}

#[tokio::test]
async fn imap_proxy_protocol_v2_to_the_store_names_the_client() {
    let s1 = FakeImap::start(
        "STORE1",
        FakeOpts {
            proxy_header: true,
            ..FakeOpts::default()
        },
    )
    .await;
    let h = harness(|c| {
        c.mmp.imap_backends.insert(
            "store1.example".into(),
            s1.addr.to_string().parse().unwrap(),
        );
        c.mmp.backend_proxy_protocol = true;
        c.mmp.backend_id = false;
    });
    let mut info = ConnInfo::for_test(Protocol::Imap);
    info.peer = "[2001:db8::7]:4444".parse().unwrap();
    info.tls_active = true;
    let (mut c, _task) = h.connect_as(info, Proto::Imap);
    c.line().await;
    let r = c.cmd("a LOGIN alice secret", "a ").await;
    assert!(r.starts_with("a OK"), "{r}");
    let log = s1.log();
    assert_eq!(log[0], "PROXY Some([2001:db8::7]:4444)");
    assert!(!log.iter().any(|l| l.starts_with("ID")));
}

#[tokio::test]
async fn imap_login_failures_are_rate_limited_per_user() {
    let (_s1, _s2, h) = {
        let s1 = FakeImap::start("STORE1", FakeOpts::default()).await;
        let s2 = FakeImap::start("STORE2", FakeOpts::default()).await;
        let h = harness(|c| {
            c.mmp.imap_backends.insert(
                "store1.example".into(),
                s1.addr.to_string().parse().unwrap(),
            );
            c.limits.max_login_failures_per_account = 2;
            c.limits.max_auth_failures = 10;
        });
        (s1, s2, h)
    };
    let (mut c, _task) = h.imap();
    c.line().await;
    c.cmd("a LOGIN alice x", "a ").await;
    c.cmd("b LOGIN alice y", "b ").await;
    // Right password, but too many failures lately: refused unchecked.
    assert_eq!(
        c.cmd("c LOGIN alice secret", "c ").await,
        "c NO [UNAVAILABLE] Too many failed logins; try again later\r\n"
    );
    // Other users are not affected.
    let (mut c, _task) = h.imap();
    c.line().await;
    let r = c.cmd("d LOGIN dave secret", "d ").await;
    assert!(r.contains("Login refused by the mail store"), "{r}");
    // The owner, from an address that never failed, still logs in: a
    // stranger's guessing does not lock the account.
    let mut info = ConnInfo::for_test(Protocol::Imap);
    info.peer = "127.0.0.2:4000".parse().unwrap();
    let (mut c, _task) = h.connect_as(info, Proto::Imap);
    c.line().await;
    let r = c.cmd("e LOGIN alice secret", "e ").await;
    assert!(r.starts_with("e OK"), "{r}");
}

#[tokio::test]
async fn imap_too_many_failures_disconnect() {
    let (_s1, _s2, h) = two_stores(FakeOpts::default()).await;
    let (mut c, task) = h.imap();
    c.line().await;
    c.cmd("a LOGIN alice x", "a ").await;
    c.cmd("b LOGIN alice y", "b ").await;
    assert_eq!(
        c.cmd("c LOGIN alice z", "* BYE").await,
        "c NO [AUTHENTICATIONFAILED] Authentication failed\r\n* BYE Too many authentication failures\r\n"
    );
    assert!(c.at_eof().await);
    task.await.unwrap();
}

/// RFC 7162 4 / RFC 2971: the mmp accepts a 30-field ID with 1,024-octet
/// values (one 32 KiB line) before login; a line past the IMAP minimum
/// gets BAD and the session goes on.
#[tokio::test]
async fn rfc7162_4_mmp_accepts_long_id_lines_and_refuses_overlong_ones() {
    let (_s1, _s2, h) = two_stores(FakeOpts::default()).await;
    let (mut c, _task) = h.imap();
    c.line().await;
    let mut id = String::from("i ID (");
    for i in 0..30 {
        id.push_str(&format!("\"field-{i:02}\" \"{}\" ", "v".repeat(1024)));
    }
    id.pop();
    id.push(')');
    let r = c.cmd(&id, "i ").await;
    assert!(r.ends_with("i OK ID completed\r\n"), "{r}");
    let long = format!("t NOOP {}", "x".repeat(crate::imap::framer::MIN_LINE + 1));
    assert_eq!(c.cmd(&long, "t ").await, "t BAD Command too long\r\n");
    assert_eq!(c.cmd("n NOOP", "n ").await, "n OK NOOP completed\r\n");
}

#[tokio::test]
async fn imap_shutdown_before_login_says_bye() {
    let (_s1, _s2, h) = two_stores(FakeOpts::default()).await;
    let (mut c, task) = h.imap();
    c.line().await;
    h.env.shutdown.cancel();
    assert_eq!(c.line().await, "* BYE Server shutting down\r\n");
    assert!(c.at_eof().await);
    task.await.unwrap();
}

#[tokio::test]
async fn rfc9051_starttls_then_login_from_a_remote_client() {
    let (_s1, _s2, h) = two_stores(FakeOpts::default()).await;
    let mut info = ConnInfo::for_test(Protocol::Imap);
    info.peer = "192.0.2.7:4444".parse().unwrap();
    let (mut c, _task) = h.connect_as(info, Proto::Imap);
    let g = c.line().await;
    assert!(g.contains("STARTTLS LOGINDISABLED"), "{g}");
    assert_eq!(
        c.cmd("a LOGIN alice secret", "a ").await,
        "a NO [PRIVACYREQUIRED] Use STARTTLS or the IMAPS port first\r\n"
    );
    assert_eq!(
        c.cmd("b STARTTLS", "b ").await,
        "b OK Begin TLS negotiation now\r\n"
    );
    let mut insecure = Config::default();
    insecure.mmp.backend_tls_insecure = true;
    let connector =
        tokio_rustls::TlsConnector::from(super::backend::client_config(&insecure).unwrap());
    let tls = connector
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            c.io.into_inner(),
        )
        .await
        .unwrap();
    let mut c = Client::new(tls);
    assert_eq!(
        c.cmd("c CAPABILITY", "c ").await,
        "* CAPABILITY IMAP4rev1 AUTH=PLAIN SASL-IR ID LITERAL+\r\nc OK CAPABILITY completed\r\n"
    );
    assert_eq!(
        c.cmd("d LOGIN alice secret", "d ").await,
        "d OK [CAPABILITY IMAP4rev1 IDLE X-STORE1] Logged in\r\n"
    );
    assert_eq!(c.cmd("e NOOP", "e ").await, "e OK NOOP done at STORE1\r\n");
}

#[tokio::test]
async fn imap_preauth_timeout_says_autologout() {
    let h = harness(|c| c.mmp.preauth_timeout = 1);
    let (mut c, task) = h.imap();
    c.line().await;
    assert_eq!(c.line().await, "* BYE Autologout; idle for too long\r\n");
    assert!(c.at_eof().await);
    task.await.unwrap();
}

// ---- POP3 against the real POP3 store server ----

struct RealStore {
    _dir: tempfile::TempDir,
    addr: SocketAddr,
    cert: std::path::PathBuf,
}

/// Runs `crate::pop3::serve` on loopback with an embedded directory that
/// knows alice@localhost/secret and the proxy user mmp@localhost.
async fn pop3_store(edit: impl FnOnce(&mut Config)) -> RealStore {
    real_store(Protocol::Pop3, crate::config::TlsMode::StartTls, edit).await
}

/// The real store server of this crate for `protocol` (POP3 or IMAP), with
/// one message in alice's INBOX.
async fn real_store(
    protocol: Protocol,
    tls_mode: crate::config::TlsMode,
    edit: impl FnOnce(&mut Config),
) -> RealStore {
    use crate::directory::embedded;
    let dir = tempfile::tempdir().unwrap();
    let services = crate::services::test_services(dir.path(), edit);
    embedded::edit(&services.config.directory_path(), |d| {
        embedded::add_user(d, "alice@localhost", "secret", None, true)?;
        embedded::add_user(d, "mmp@localhost", "proxy pw", None, true)
    })
    .unwrap();
    // Re-open so the directory sees the users at once.
    let services = crate::services::Services {
        directory: crate::directory::Directory::open(&services.config).unwrap(),
        ..services
    };
    services
        .store()
        .append(
            "alice@localhost",
            "INBOX",
            crate::store::NewMessage {
                data: Arc::new(b"Subject: hi\r\n\r\nhello\r\n".to_vec()),
                flags: crate::store::Flags::default(),
                internal_date: None,
            },
            crate::store::Quota::default(),
        )
        .await
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cert = dir.path().join("tls/cert.pem");
    let handler: fn(_, _, _) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> =
        match protocol {
            Protocol::Pop3 | Protocol::Pop3s => |c, i, s| Box::pin(crate::pop3::serve(c, i, s)),
            _ => |c, i, s| Box::pin(crate::imap::serve(c, i, s)),
        };
    tokio::spawn(crate::net::serve(
        listener,
        crate::net::Listen::new(protocol, tls_mode),
        services.clone(),
        tokio_util::task::TaskTracker::new(),
        handler,
    ));
    RealStore {
        _dir: dir,
        addr,
        cert,
    }
}

#[tokio::test]
async fn pop3_login_through_the_proxy_reaches_the_real_store() {
    let store = pop3_store(|_| {}).await;
    let h = harness(|c| {
        c.mmp.pop3_backends.insert(
            "store1.example".into(),
            store.addr.to_string().parse().unwrap(),
        );
    });
    let (mut c, task) = h.pop3();
    assert_eq!(c.line().await, "+OK msgd POP3 proxy ready\r\n");
    let capa = c.cmd("CAPA", ".").await;
    assert!(
        capa.contains("SASL PLAIN\r\n") && capa.contains("STLS\r\n"),
        "{capa}"
    );
    assert_eq!(c.cmd("USER alice", "+OK").await, "+OK send PASS\r\n");
    assert_eq!(
        c.cmd("PASS secret", "+OK").await,
        "+OK maildrop has 1 message (22 octets)\r\n"
    );
    assert_eq!(c.cmd("STAT", "+OK").await, "+OK 1 22\r\n");
    let body = c.cmd("RETR 1", ".").await;
    assert_eq!(body, "+OK 22 octets\r\nSubject: hi\r\n\r\nhello\r\n.\r\n");
    assert_eq!(
        c.cmd("QUIT", "+OK").await,
        "+OK msgd POP3 server signing off\r\n"
    );
    assert!(c.at_eof().await);
    task.await.unwrap();
}

#[tokio::test]
async fn pop3_failures_are_clear() {
    let store = pop3_store(|_| {}).await;
    let dead = dead_addr().await;
    let h = harness(|c| {
        c.mmp.pop3_backends.insert(
            "store1.example".into(),
            store.addr.to_string().parse().unwrap(),
        );
        c.mmp
            .pop3_backends
            .insert("down.example".into(), dead.to_string().parse().unwrap());
        c.limits.max_auth_failures = 10;
    });
    let (mut c, _task) = h.pop3();
    c.line().await;
    for (user, pass, expect) in [
        ("alice", "wrong", "-ERR [AUTH] Authentication failed\r\n"),
        ("nobody", "secret", "-ERR [AUTH] Authentication failed\r\n"),
        ("alice", "down", "-ERR [SYS/TEMP] directory unavailable\r\n"),
        ("alice", "inactive", "-ERR [AUTH] account disabled\r\n"),
        (
            "erin",
            "secret",
            "-ERR [SYS/TEMP] mail store unavailable\r\n",
        ),
        // In our directory but not in the store's: the store's -ERR [AUTH].
        (
            "dave",
            "secret",
            "-ERR [AUTH] login refused by the mail store\r\n",
        ),
    ] {
        c.cmd(&format!("USER {user}"), "+OK").await;
        assert_eq!(
            c.cmd(&format!("PASS {pass}"), "-ERR").await,
            expect,
            "{user}/{pass}"
        );
    }
}

#[tokio::test]
async fn pop3_proxyauth_and_starttls_to_the_real_store() {
    let store = pop3_store(|c| c.pop3.proxy_users = vec!["mmp@localhost".into()]).await;
    let dir = tempfile::tempdir().unwrap();
    let pwfile = dir.path().join("proxy.pw");
    std::fs::write(&pwfile, "proxy pw\n").unwrap();
    let h = harness(|c| {
        c.mmp.pop3_backends.insert(
            "store1.example".into(),
            store.addr.to_string().parse().unwrap(),
        );
        c.mmp.login_mode = "proxyauth".parse().unwrap();
        c.mmp.proxy_user = "mmp@localhost".into();
        c.mmp.proxy_password_file = pwfile.display().to_string();
        // STLS to the store, its self-signed certificate as the CA.
        c.mmp.backend_tls = "starttls".parse().unwrap();
        c.mmp.backend_ca_file = store.cert.display().to_string();
    });
    let (mut c, _task) = h.pop3();
    c.line().await;
    c.cmd("USER alice", "+OK").await;
    assert_eq!(
        c.cmd("PASS secret", "+OK").await,
        "+OK maildrop has 1 message (22 octets)\r\n"
    );
    assert_eq!(c.cmd("STAT", "+OK").await, "+OK 1 22\r\n");
}

#[tokio::test]
async fn pop3_implicit_tls_to_the_real_store() {
    let store = real_store(Protocol::Pop3s, crate::config::TlsMode::Implicit, |_| {}).await;
    let h = harness(|c| {
        c.mmp.pop3_backends.insert(
            "store1.example".into(),
            store.addr.to_string().parse().unwrap(),
        );
        c.mmp.backend_tls = "implicit".parse().unwrap();
        c.mmp.backend_ca_file = store.cert.display().to_string();
    });
    let (mut c, _task) = h.pop3();
    c.line().await;
    c.cmd("USER alice", "+OK").await;
    assert_eq!(
        c.cmd("PASS secret", "+OK").await,
        "+OK maildrop has 1 message (22 octets)\r\n"
    );
    assert_eq!(c.cmd("STAT", "+OK").await, "+OK 1 22\r\n");
}

#[tokio::test]
async fn pop3_store_tls_with_an_unknown_certificate_is_unavailable() {
    let store = pop3_store(|_| {}).await;
    let other = tempfile::tempdir().unwrap();
    // A certificate of another server: verification must fail.
    let mut oc = Config::default();
    oc.server.data_dir = other.path().to_path_buf();
    Tls::from_config(&oc).unwrap();
    let h = harness(|c| {
        c.mmp.pop3_backends.insert(
            "store1.example".into(),
            store.addr.to_string().parse().unwrap(),
        );
        c.mmp.backend_tls = "starttls".parse().unwrap();
        c.mmp.backend_ca_file = other.path().join("tls/cert.pem").display().to_string();
    });
    let (mut c, _task) = h.pop3();
    c.line().await;
    c.cmd("USER alice", "+OK").await;
    assert_eq!(
        c.cmd("PASS secret", "-ERR").await,
        "-ERR [SYS/TEMP] mail store unavailable\r\n"
    );
}

#[tokio::test]
async fn imap_through_the_proxy_to_the_real_imap_store_with_starttls() {
    let store = real_store(Protocol::Imap, crate::config::TlsMode::StartTls, |_| {}).await;
    let h = harness(|c| {
        c.mmp.imap_backends.insert(
            "store1.example".into(),
            store.addr.to_string().parse().unwrap(),
        );
        c.mmp.backend_tls = "starttls".parse().unwrap();
        c.mmp.backend_ca_file = store.cert.display().to_string();
    });
    let (mut c, task) = h.imap();
    c.line().await;
    let r = c.cmd("a LOGIN alice secret", "a ").await;
    // The store's own post-login capabilities reach the client.
    assert!(
        r.starts_with("a OK [CAPABILITY IMAP4rev1 ")
            && r.contains(" IDLE ")
            && !r.contains("AUTH="),
        "{r}"
    );
    let r = c.cmd("b SELECT INBOX", "b ").await;
    assert!(r.contains("* 1 EXISTS\r\n") && r.contains("b OK"), "{r}");
    let r = c.cmd("c FETCH 1 BODY.PEEK[]", "c ").await;
    assert!(r.contains("Subject: hi\r\n\r\nhello\r\n"), "{r}");
    let r = c.cmd("d LOGOUT", "d ").await;
    assert!(r.starts_with("* BYE") && r.contains("d OK"), "{r}");
    assert!(c.at_eof().await);
    task.await.unwrap();
}

/// A loopback address that forwards exactly one connection to `to`, then
/// takes no more.
async fn one_connection_to(to: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut inbound, _) = listener.accept().await.unwrap();
        drop(listener);
        let mut outbound = tokio::net::TcpStream::connect(to).await.unwrap();
        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
    });
    addr
}

/// After a LOGOUT the mmp answers itself, the store connection (TLS
/// here) is made not authenticated and kept; the next login at that store
/// uses it (the store's address takes one connection only), and a kept
/// connection is not used by two logins at once.
#[tokio::test]
async fn imap_logout_keeps_the_store_connection_for_the_next_login() {
    let store = real_store(Protocol::Imap, crate::config::TlsMode::StartTls, |_| {}).await;
    let once = one_connection_to(store.addr).await;
    let h = harness(|c| {
        c.mmp
            .imap_backends
            .insert("store1.example".into(), once.to_string().parse().unwrap());
        c.mmp.backend_tls = "starttls".parse().unwrap();
        c.mmp.backend_ca_file = store.cert.display().to_string();
        c.mmp.backend_server_name = Some("localhost".parse().unwrap());
    });
    let pool = h.env.shared.store_pool.clone();
    for round in 0..3 {
        let (mut c, task) = h.imap();
        c.line().await;
        let r = c.cmd("a LOGIN alice secret", "a ").await;
        assert!(
            r.starts_with("a OK") && !r.contains("UNAUTHENTICATE"),
            "round {round}: {r}"
        );
        assert_eq!(pool.kept(once), 0, "round {round}: in use");
        let r = c.cmd("b SELECT INBOX", "b ").await;
        assert!(
            r.contains("* 1 EXISTS\r\n") && r.contains("b OK"),
            "round {round}: {r}"
        );
        let r = c.cmd("c FETCH 1 BODY.PEEK[]", "c ").await;
        assert!(
            r.contains("Subject: hi\r\n\r\nhello\r\n"),
            "round {round}: {r}"
        );
        let r = c.cmd("d LOGOUT", "d ").await;
        assert_eq!(
            r, "* BYE msgd IMAP proxy logging out\r\nd OK LOGOUT completed\r\n",
            "round {round}"
        );
        assert!(c.at_eof().await);
        task.await.unwrap();
        let t0 = std::time::Instant::now();
        while pool.kept(once) == 0 {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "round {round}: not kept"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    // Two at once: the second needs a connection of its own, and the one
    // address takes no more: it is told to come back later.
    let (mut c1, _t1) = h.imap();
    c1.line().await;
    assert!(c1
        .cmd("a LOGIN alice secret", "a ")
        .await
        .starts_with("a OK"));
    let (mut c2, _t2) = h.imap();
    c2.line().await;
    let r = c2.cmd("a LOGIN alice secret", "a ").await;
    assert!(r.starts_with("a NO [UNAVAILABLE]"), "{r}");
}

/// Hostile clients cannot get a store connection kept while something
/// is still owed on it: a LOGOUT pipelined behind a command whose tag is
/// longer than the filter reads, or behind a command with a long first
/// line, goes to the store, which answers everything and closes; the mmp
/// keeps nothing. A client's own UNAUTHENTICATE never reaches the store.
#[tokio::test]
async fn imap_hostile_pipelining_never_leaves_a_busy_store_connection_kept() {
    let store = real_store(Protocol::Imap, crate::config::TlsMode::None, |c| {
        c.imap.allow_plaintext_auth = true;
    })
    .await;
    let h = harness(|c| {
        c.mmp.imap_backends.insert(
            "store1.example".into(),
            store.addr.to_string().parse().unwrap(),
        );
    });
    let pool = h.env.shared.store_pool.clone();
    let long_tag = "t".repeat(300);
    let long_set = vec!["1"; 200].join(",");
    let scripts = [
        format!("{long_tag} NOOP\r\nb LOGOUT"),
        format!("s SELECT INBOX\r\nc UID FETCH {long_set} (FLAGS)\r\nb LOGOUT"),
    ];
    for script in &scripts {
        let (mut c, task) = h.imap();
        c.line().await;
        assert!(c
            .cmd("a LOGIN alice secret", "a ")
            .await
            .starts_with("a OK"));
        let r = c.cmd(script, "b ").await;
        assert!(r.contains("\r\nb OK"), "{r}");
        for (tag, _) in script.split("\r\n").filter_map(|l| l.split_once(' ')) {
            assert!(
                r.contains(&format!("\n{tag} ")) || r.starts_with(&format!("{tag} ")),
                "{tag}: {r}"
            );
        }
        assert!(c.at_eof().await);
        task.await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(pool.kept(store.addr), 0, "{script}: {r}");
    }
    // The client's UNAUTHENTICATE was the mmp's to answer.
    let (mut c, _task) = h.imap();
    c.line().await;
    assert!(c
        .cmd("a LOGIN alice secret", "a ")
        .await
        .starts_with("a OK"));
    let r = c.cmd("u UNAUTHENTICATE", "u ").await;
    assert!(r.starts_with("u BAD"), "{r}");
    // Nothing is owed for it: logging out then leaves the connection kept.
    let r = c.cmd("b LOGOUT", "b ").await;
    assert!(r.starts_with("* BYE msgd IMAP proxy"), "{r}");
    let t0 = std::time::Instant::now();
    while pool.kept(store.addr) == 0 {
        assert!(t0.elapsed() < Duration::from_secs(10), "not kept");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---- PROXY protocol on a listener ----

#[tokio::test]
async fn proxy_protocol_listener_gives_the_real_client_and_limits_by_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut services = crate::services::test_services(dir.path(), |c| {
        c.limits.max_connections_per_ip = 1;
    });
    services.store = None;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = services.shutdown.clone();
    tokio::spawn(crate::net::serve(
        listener,
        crate::net::Listen {
            proxy_networks: Some(vec!["127.0.0.0/8".parse().unwrap()]),
            ..crate::net::Listen::new(Protocol::Imap, crate::config::TlsMode::StartTls)
        },
        services,
        tokio_util::task::TaskTracker::new(),
        |mut conn, info, _s| async move {
            let _ = conn
                .write_all(format!("peer={} via={:?}\r\n", info.peer, info.via).as_bytes())
                .await;
            // Hold the connection until the client goes.
            let mut b = [0u8; 16];
            let _ = conn.read(&mut b).await;
        },
    ));
    let connect = |header: Vec<u8>| async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(&header).await.unwrap();
        let mut r = BufReader::new(s);
        let mut l = String::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), r.read_line(&mut l)).await;
        (l, r)
    };
    let v1 = b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 143\r\n".to_vec();
    let (l, _keep1) = connect(v1.clone()).await;
    assert!(
        l.starts_with("peer=192.0.2.7:56324 via=Some(127.0.0.1:"),
        "{l}"
    );
    // A second connection of the same client (through the same balancer)
    // is over the per-address limit of 1, and told so ...
    let (l, _keep2) = connect(v1).await;
    assert_eq!(l, "* BYE Too many connections\r\n");
    // ... but another client is not.
    let v2 = crate::proxyproto::encode_v2(
        "[2001:db8::9]:1000".parse().unwrap(),
        "[2001:db8::1]:143".parse().unwrap(),
    );
    let (l, _keep3) = connect(v2).await;
    assert!(l.starts_with("peer=[2001:db8::9]:1000 via=Some("), "{l}");
    // No header: refused.
    let (l, _keep4) = connect(b"a1 CAPABILITY\r\n".to_vec()).await;
    assert_eq!(l, "");
    shutdown.cancel();
}

/// Before login a command must arrive within `mmp.preauth_timeout` of its
/// first byte: a client trickling a LOGIN is disconnected, for IMAP and POP3.
#[tokio::test]
async fn preauth_command_deadline_disconnects_a_trickling_client() {
    let h = harness(|c| c.mmp.preauth_timeout = 1);
    for (proto, bye) in [
        (Proto::Imap, "* BYE Command not completed in time\r\n"),
        (Proto::Pop3, "-ERR Command not completed in time\r\n"),
        (Proto::Sieve, "BYE \"Command not completed in time\"\r\n"),
    ] {
        let (mut c, task) = match proto {
            Proto::Imap => h.imap(),
            Proto::Pop3 => h.pop3(),
            Proto::Sieve => h.sieve(),
        };
        // The greeting (ManageSieve: capability lines up to OK).
        c.until(if proto == Proto::Sieve { "OK" } else { "" }).await;
        let started = std::time::Instant::now();
        let mut got = String::new();
        for b in b"a LOGIN alice secret".iter().cycle().take(100) {
            c.send(std::str::from_utf8(&[*b]).unwrap()).await;
            let mut l = String::new();
            if let Ok(r) =
                tokio::time::timeout(Duration::from_millis(200), c.io.read_line(&mut l)).await
            {
                r.unwrap();
                got = l;
                break;
            }
        }
        assert_eq!(got, bye);
        assert!(started.elapsed() < Duration::from_secs(10));
        task.await.unwrap();
    }
}

/// The mmp's framed client messages (LOGIN, AUTHENTICATE data, PASS) and
/// its Login action do not show the password in `Debug`.
#[test]
fn debug_output_hides_mmp_passwords() {
    use super::framer::Framer;
    let mut f = Framer::new(65536, true);
    f.push(b"a LOGIN alice hunter2\r\nAGFsaWNlAGh1bnRlcjI=\r\nPASS hunter2\r\nPASS hun");
    assert!(!format!("{f:?}").contains("hun"));
    let mut n = 0;
    while let Some(m) = f.next() {
        let d = format!("{m:?}");
        assert!(!d.contains("hunter2") && !d.contains("AGFsaWNl"), "{d}");
        n += 1;
    }
    assert_eq!(n, 3);
    let a = super::Action::Login {
        login: "alice".into(),
        password: "hunter2".into(),
        client_id: vec![],
    };
    assert!(!format!("{a:?}").contains("hunter2"));
}

/// A scripted ManageSieve store: capabilities, AUTHENTICATE "PLAIN" with
/// an initial response (alice@localhost / secret only), then it answers
/// every line with `OK "NAME saw LINE"`. It logs what it receives.
async fn fake_sieve_store(name: &'static str) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let l2 = log.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let log = l2.clone();
            tokio::spawn(async move {
                use base64::Engine;
                let mut io = BufReader::new(tcp);
                let caps = "\"IMPLEMENTATION\" \"fake\"\r\n\"SASL\" \"PLAIN\"\r\nOK \"hi\"\r\n";
                io.get_mut().write_all(caps.as_bytes()).await.unwrap();
                let mut logged_in = false;
                loop {
                    let mut l = String::new();
                    if io.read_line(&mut l).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let l = l.trim_end().to_string();
                    let answer = if logged_in {
                        format!("OK \"{name} saw {l}\"\r\n")
                    } else {
                        let words = imap_words(&l);
                        let raw = base64::engine::general_purpose::STANDARD
                            .decode(words.get(2).cloned().unwrap_or_default())
                            .unwrap_or_default();
                        let raw = String::from_utf8_lossy(&raw).replace('\0', "|");
                        log.lock().unwrap().push(format!("{} {raw}", words[0]));
                        logged_in = raw == "|alice@localhost|secret";
                        if logged_in {
                            "OK \"Logged in\"\r\n".to_string()
                        } else {
                            "NO (TRYLATER) \"no\"\r\n".to_string()
                        }
                    };
                    io.get_mut().write_all(answer.as_bytes()).await.unwrap();
                }
            });
        }
    });
    (addr, log)
}

/// ManageSieve through the mmp: the user's store by mailHost (from
/// `sieve_backends`), the store's OK passed on, pipelined input relayed;
/// a wrong password never reaches a store; a store's refusal keeps its
/// response code (RFC 5804 1.3).
#[tokio::test]
async fn rfc5804_managesieve_is_proxied_to_the_users_store() {
    use base64::Engine;
    let (s1, log1) = fake_sieve_store("store1").await;
    let (s2, log2) = fake_sieve_store("store2").await;
    let h = harness(|c| {
        c.mmp
            .sieve_backends
            .insert("store1.example".into(), s1.to_string().parse().unwrap());
        c.mmp
            .sieve_backends
            .insert("store2.example".into(), s2.to_string().parse().unwrap());
    });
    let plain =
        |u: &str, p: &str| base64::engine::general_purpose::STANDARD.encode(format!("\0{u}\0{p}"));
    let (mut c, task) = h.sieve();
    let caps = c.until("OK").await;
    assert!(caps.contains("\"SASL\" \"PLAIN\""), "{caps}");
    // A wrong password: refused by the mmp; no store hears of it.
    let l = c
        .cmd(
            &format!("AUTHENTICATE \"PLAIN\" \"{}\"", plain("alice", "bad")),
            "NO",
        )
        .await;
    assert_eq!(l, "NO \"Authentication failed\"\r\n");
    // The login and a pipelined command in one write.
    c.send(&format!(
        "AUTHENTICATE \"PLAIN\" \"{}\"\r\nLISTSCRIPTS\r\n",
        plain("alice", "secret")
    ))
    .await;
    assert_eq!(c.line().await, "OK \"Logged in\"\r\n");
    assert_eq!(c.line().await, "OK \"store1 saw LISTSCRIPTS\"\r\n");
    assert_eq!(
        c.cmd("HAVESPACE x 10", "OK").await,
        "OK \"store1 saw HAVESPACE x 10\"\r\n"
    );
    drop(c);
    task.await.unwrap();
    assert_eq!(
        log1.lock().unwrap().clone(),
        vec!["AUTHENTICATE |alice@localhost|secret".to_string()]
    );
    // bob lives on store2, which refuses him: its code comes back.
    let (mut c, task) = h.sieve();
    c.until("OK").await;
    let l = c
        .cmd(
            &format!("AUTHENTICATE \"PLAIN\" \"{}\"", plain("bob", "secret")),
            "NO",
        )
        .await;
    assert_eq!(l, "NO (TRYLATER) \"Login refused by the mail store\"\r\n");
    assert_eq!(c.cmd("LOGOUT", "OK").await, "OK \"Bye\"\r\n");
    task.await.unwrap();
    assert_eq!(
        log2.lock().unwrap().clone(),
        vec!["AUTHENTICATE |bob@localhost|secret".to_string()]
    );
}
