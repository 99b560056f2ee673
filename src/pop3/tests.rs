//! End-to-end POP3 sessions over `tokio::io::duplex`, against a real store
//! and TLS in a temp folder. Authentication goes through a fake
//! authenticator (the embedded directory is tested on its own).

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, DuplexStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::driver::{run_session, Env};
use crate::config::{Config, PartitionConfig, Protocol};
use crate::directory::{Account, AuthResult, DirError};
use crate::net::ConnInfo;
use crate::store::{FlagOp, Flags, NewMessage, Quota, Store};
use crate::tls::Tls;

const USER: &str = "alice@localhost";

struct Harness {
    _dir: tempfile::TempDir,
    config: Config,
    store: Store,
    env: Env,
}

fn account(address: &str) -> Account {
    Account::new(address)
}

fn harness_with(edit: impl FnOnce(&mut Config)) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.server.data_dir = dir.path().to_path_buf();
    config.store.min_free_disk = 0;
    config.store.partition.insert(
        "primary".into(),
        PartitionConfig {
            path: "partition/primary".into(),
        },
    );
    edit(&mut config);
    let store = Store::open(&config).unwrap();
    let tls = Arc::new(Tls::from_config(&config).unwrap());
    // alice/secret is a user, "inactive" is disabled, "down" makes the
    // directory unreachable, anything else is a wrong password.
    let authenticate: super::driver::Authenticator = Arc::new(|login: String, password| {
        Box::pin(async move {
            let login = crate::directory::qualify_login(&login, "localhost");
            match (login.as_str(), password.as_str()) {
                (USER, "secret") => Ok(AuthResult::Ok(account(USER))),
                ("mmp@localhost", "proxy pw") => Ok(AuthResult::Ok(account("mmp@localhost"))),
                (_, "inactive") => Ok(AuthResult::Inactive),
                (_, "down") => Err(DirError::Temporary("test".into())),
                _ => Ok(AuthResult::Failed(None)),
            }
        })
    });
    let env = Env {
        logins: Arc::new(crate::loginlimit::LoginLimiter::from_config(&config.limits)),
        config: Arc::new(config.clone()),
        store: Some(store.clone()),
        tls,
        shutdown: CancellationToken::new(),
        authenticate,
        lookup: Arc::new(|address: String| {
            Box::pin(async move {
                match address.as_str() {
                    USER => Ok(Some(account(USER))),
                    "off@localhost" => Ok(Some(Account {
                        active: false,
                        ..account("off@localhost")
                    })),
                    "down@localhost" => Err(DirError::Temporary("test".into())),
                    _ => Ok(None),
                }
            })
        }),
    };
    Harness {
        _dir: dir,
        config,
        store,
        env,
    }
}

fn harness() -> Harness {
    harness_with(|_| {})
}

impl Harness {
    async fn deliver(&self, data: &[u8]) -> u32 {
        self.store
            .append(
                USER,
                "INBOX",
                NewMessage {
                    data: Arc::new(data.to_vec()),
                    flags: Flags::default(),
                    internal_date: None,
                },
                Quota::default(),
            )
            .await
            .unwrap()
            .uid
    }

    async fn inbox_uids(&self) -> Vec<u32> {
        let s = self.store.snapshot(USER, "INBOX").await.unwrap();
        s.messages.iter().map(|m| m.uid).collect()
    }

    fn connect_as(&self, info: ConnInfo) -> (Client<DuplexStream>, JoinHandle<()>) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let task = tokio::spawn(run_session(Box::new(server), info, self.env.clone()));
        (Client::new(client), task)
    }

    fn connect(&self) -> (Client<DuplexStream>, JoinHandle<()>) {
        self.connect_as(ConnInfo::for_test(Protocol::Pop3))
    }
}

struct Client<S> {
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

    /// Reads a multi-line reply body up to and including ".\r\n", as bytes.
    async fn body(&mut self) -> Vec<u8> {
        let mut all = Vec::new();
        loop {
            let mut l = Vec::new();
            self.io.read_until(b'\n', &mut l).await.unwrap();
            assert!(!l.is_empty(), "eof inside multi-line reply");
            all.extend_from_slice(&l);
            if l == b".\r\n" {
                return all;
            }
        }
    }

    async fn send(&mut self, s: &str) {
        self.io.get_mut().write_all(s.as_bytes()).await.unwrap();
    }

    async fn cmd(&mut self, s: &str) -> String {
        self.send(&format!("{s}\r\n")).await;
        self.line().await
    }

    async fn login(&mut self) -> String {
        assert_eq!(self.cmd("USER alice").await, "+OK send PASS\r\n");
        self.cmd("PASS secret").await
    }

    async fn at_eof(&mut self) -> bool {
        let mut rest = Vec::new();
        matches!(
            tokio::time::timeout(Duration::from_secs(20), self.io.read_to_end(&mut rest)).await,
            Ok(Ok(0))
        )
    }
}

#[tokio::test]
async fn rfc1939_session_retr_top_uidl_and_quit_expunges_only_our_deletions() {
    let h = harness();
    let u1 = h.deliver(b"Subject: one\r\n\r\nfirst\r\n").await;
    let u2 = h
        .deliver(b"Subject: two\r\n\r\n.dotted line\r\nsecond\r\n")
        .await;
    let u3 = h.deliver(b"Subject: three\r\n\r\nthird\r\n").await;
    let mbox = h.store.snapshot(USER, "INBOX").await.unwrap();
    let uidv = mbox.info.uidvalidity;
    let sizes: Vec<u64> = mbox.messages.iter().map(|m| m.size).collect();

    let (mut c, task) = h.connect();
    assert_eq!(c.line().await, "+OK msgd POP3 server ready\r\n");
    assert!(c.login().await.starts_with("+OK maildrop has 3 messages"));
    // Another session flags message 3 \Deleted; our QUIT must not expunge it.
    h.store
        .store_flags(
            mbox.info.id,
            vec![u3],
            FlagOp::Add,
            Flags::from_names(&["\\Deleted"]),
            None,
        )
        .await
        .unwrap();
    let total: u64 = sizes.iter().sum();
    assert_eq!(c.cmd("STAT").await, format!("+OK 3 {total}\r\n"));
    assert_eq!(
        c.cmd("LIST").await,
        format!("+OK 3 messages ({total} octets)\r\n")
    );
    let list = String::from_utf8(c.body().await).unwrap();
    assert_eq!(
        list,
        format!(
            "1 {}\r\n2 {}\r\n3 {}\r\n.\r\n",
            sizes[0], sizes[1], sizes[2]
        )
    );
    assert_eq!(c.cmd("UIDL").await, "+OK unique-id listing follows\r\n");
    assert_eq!(
        String::from_utf8(c.body().await).unwrap(),
        format!("1 {uidv}.{u1}\r\n2 {uidv}.{u2}\r\n3 {uidv}.{u3}\r\n.\r\n")
    );
    assert_eq!(
        c.cmd("RETR 2").await,
        format!("+OK {} octets\r\n", sizes[1])
    );
    assert_eq!(
        c.body().await,
        b"Subject: two\r\n\r\n..dotted line\r\nsecond\r\n.\r\n"
    );
    assert_eq!(c.cmd("TOP 2 0").await, "+OK top of message follows\r\n");
    assert_eq!(c.body().await, b"Subject: two\r\n\r\n.\r\n");
    assert_eq!(c.cmd("DELE 1").await, "+OK message 1 deleted\r\n");
    assert_eq!(c.cmd("DELE 2").await, "+OK message 2 deleted\r\n");
    assert_eq!(
        c.cmd("RSET").await,
        "+OK maildrop has 3 messages (".to_string() + &format!("{total} octets)\r\n")
    );
    assert_eq!(c.cmd("DELE 1").await, "+OK message 1 deleted\r\n");
    // Not yet removed: deletions wait for QUIT.
    assert_eq!(h.inbox_uids().await, vec![u1, u2, u3]);
    assert_eq!(c.cmd("QUIT").await, "+OK msgd POP3 server signing off\r\n");
    assert!(c.at_eof().await);
    task.await.unwrap();
    assert_eq!(h.inbox_uids().await, vec![u2, u3]);
}

#[tokio::test]
async fn rfc1939_dropped_connection_deletes_nothing() {
    let h = harness();
    let u1 = h.deliver(b"Subject: a\r\n\r\nx\r\n").await;
    let (mut c, task) = h.connect();
    c.line().await;
    c.login().await;
    assert_eq!(c.cmd("DELE 1").await, "+OK message 1 deleted\r\n");
    drop(c);
    task.await.unwrap();
    assert_eq!(h.inbox_uids().await, vec![u1]);
}

#[tokio::test]
async fn rfc1939_new_user_gets_an_empty_maildrop() {
    let h = harness();
    let (mut c, _task) = h.connect();
    c.line().await;
    assert_eq!(
        c.login().await,
        "+OK maildrop has 0 messages (0 octets)\r\n"
    );
    assert_eq!(c.cmd("STAT").await, "+OK 0 0\r\n");
    assert_eq!(c.cmd("QUIT").await, "+OK msgd POP3 server signing off\r\n");
}

#[tokio::test]
async fn retr_of_a_message_expunged_by_another_session_says_deleted() {
    let h = harness();
    let u1 = h.deliver(b"Subject: a\r\n\r\nx\r\n").await;
    h.deliver(b"Subject: b\r\n\r\ny\r\n").await;
    let (mut c, _task) = h.connect();
    c.line().await;
    c.login().await;
    let id = h.store.snapshot(USER, "INBOX").await.unwrap().info.id;
    h.store
        .store_flags(
            id,
            vec![u1],
            FlagOp::Add,
            Flags::from_names(&["\\Deleted"]),
            None,
        )
        .await
        .unwrap();
    assert_eq!(h.store.expunge(id, None).await.unwrap(), vec![u1]);
    assert_eq!(c.cmd("RETR 1").await, "-ERR message was deleted\r\n");
    assert_eq!(c.cmd("RETR 2").await.split(' ').next(), Some("+OK"));
    c.body().await;
    // DELE of the vanished message and QUIT still succeed.
    assert_eq!(c.cmd("DELE 1").await, "+OK message 1 deleted\r\n");
    assert_eq!(c.cmd("QUIT").await, "+OK msgd POP3 server signing off\r\n");
}

#[tokio::test]
async fn rfc2449_pipelined_commands_answer_in_order() {
    let h = harness();
    h.deliver(b"Subject: a\r\n\r\nx\r\n").await;
    let (mut c, _task) = h.connect();
    c.line().await;
    c.send("USER alice\r\nPASS secret\r\nSTAT\r\nRETR 1\r\nNOOP\r\nQUIT\r\n")
        .await;
    assert_eq!(c.line().await, "+OK send PASS\r\n");
    assert!(c.line().await.starts_with("+OK maildrop has 1 message "));
    assert!(c.line().await.starts_with("+OK 1 "));
    assert!(c.line().await.starts_with("+OK "));
    assert_eq!(c.body().await, b"Subject: a\r\n\r\nx\r\n.\r\n");
    assert_eq!(c.line().await, "+OK\r\n");
    assert_eq!(c.line().await, "+OK msgd POP3 server signing off\r\n");
    assert!(c.at_eof().await);
}

#[tokio::test]
async fn rfc1939_big_message_is_streamed_whole_with_crlf_before_dot() {
    let h = harness();
    let mut msg = b"Subject: big\r\n\r\n".to_vec();
    for i in 0..40_000 {
        msg.extend_from_slice(format!(".line {i} of a big message\r\n").as_bytes());
    }
    msg.extend_from_slice(b"no final newline");
    h.deliver(&msg).await;
    let (mut c, _task) = h.connect();
    c.line().await;
    c.login().await;
    assert!(c.cmd("RETR 1").await.starts_with("+OK "));
    let body = c.body().await;
    // Each of the 40,000 lines gained one dot; the last line a CRLF.
    assert_eq!(body.len(), msg.len() + 40_000 + 2 + 3);
    assert!(body.ends_with(b"no final newline\r\n.\r\n"));
}

/// RFC 1939 section 3 for a message read from its file in several pieces:
/// a CRLF split by the piece boundary, a "." line starting exactly at one,
/// RETR and TOP pipelined, byte for byte.
#[tokio::test]
async fn rfc1939_retr_and_top_stream_across_file_pieces_byte_exact() {
    use super::driver::BODY_PIECE;
    let h = harness();
    let mut msg = b"Subject: pieces\r\n\r\n".to_vec();
    let filler = |msg: &mut Vec<u8>, upto: usize| {
        while msg.len() + 40 < upto {
            msg.extend_from_slice(b".dotted line of filler text, 38 bytes\r\n");
        }
        msg.resize(upto - 2, b'x');
    };
    // The CR of a line end is the last byte of the first piece.
    filler(&mut msg, BODY_PIECE + 1);
    msg.extend_from_slice(b"\r\n");
    assert_eq!(&msg[BODY_PIECE - 1..BODY_PIECE + 1], b"\r\n");
    // A "." line begins the third piece.
    filler(&mut msg, 2 * BODY_PIECE);
    msg.extend_from_slice(b"\r\n");
    msg.extend_from_slice(b".starts the third piece\r\nlast line without CRLF");
    assert_eq!(msg[2 * BODY_PIECE], b'.');
    h.deliver(&msg).await;

    let mut want = Vec::new();
    let mut lines: Vec<&[u8]> = msg.split(|b| *b == b'\n').collect();
    let last = lines.pop().unwrap();
    for l in lines.iter().copied().chain([last]) {
        let l = l.strip_suffix(b"\r").unwrap_or(l);
        if l.starts_with(b".") {
            want.push(b'.');
        }
        want.extend_from_slice(l);
        want.extend_from_slice(b"\r\n");
    }
    want.extend_from_slice(b".\r\n");
    let top2 = b"Subject: pieces\r\n\r\n..dotted line of filler text, 38 bytes\r\n..dotted line of filler text, 38 bytes\r\n.\r\n";

    let (mut c, _task) = h.connect();
    c.line().await;
    c.login().await;
    c.send("RETR 1\r\nTOP 1 2\r\nRETR 1\r\nQUIT\r\n").await;
    assert_eq!(c.line().await, format!("+OK {} octets\r\n", msg.len()));
    assert!(c.body().await == want, "first RETR differs");
    assert!(c.line().await.starts_with("+OK"));
    assert_eq!(c.body().await, top2);
    assert!(c.line().await.starts_with("+OK"));
    assert!(c.body().await == want, "second RETR differs");
    assert_eq!(c.line().await, "+OK msgd POP3 server signing off\r\n");
}

/// A message file shorter than its index entry is refused before any of
/// it is sent (nothing short or padded goes out), and the session goes on.
#[tokio::test]
async fn retr_of_a_truncated_message_file_says_deleted_and_sends_nothing() {
    let h = harness();
    let u1 = h.deliver(b"Subject: a\r\n\r\nsome body text\r\n").await;
    h.deliver(b"Subject: b\r\n\r\ny\r\n").await;
    let id = h.store.snapshot(USER, "INBOX").await.unwrap().info.id;
    let path = h.store.message_path(id, u1).unwrap();
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 5)
        .unwrap();
    let (mut c, _task) = h.connect();
    c.line().await;
    c.login().await;
    assert_eq!(c.cmd("RETR 1").await, "-ERR message was deleted\r\n");
    assert_eq!(c.cmd("TOP 1 0").await, "-ERR message was deleted\r\n");
    assert!(c.cmd("RETR 2").await.starts_with("+OK"));
    assert_eq!(c.body().await, b"Subject: b\r\n\r\ny\r\n.\r\n");
    assert_eq!(c.cmd("QUIT").await, "+OK msgd POP3 server signing off\r\n");
}

#[tokio::test]
async fn rfc3206_auth_failures_have_response_codes() {
    let h = harness();
    let (mut c, task) = h.connect();
    c.line().await;
    c.cmd("USER alice").await;
    assert_eq!(
        c.cmd("PASS down").await,
        "-ERR [SYS/TEMP] directory unavailable\r\n"
    );
    c.cmd("USER alice").await;
    assert_eq!(
        c.cmd("PASS inactive").await,
        "-ERR [AUTH] account disabled\r\n"
    );
    c.cmd("USER alice").await;
    let started = std::time::Instant::now();
    assert_eq!(
        c.cmd("PASS wrong").await,
        "-ERR [AUTH] Authentication failed\r\n"
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
    // Third failure (limits.max_auth_failures = 3): the session ends.
    c.cmd("USER alice").await;
    assert_eq!(
        c.cmd("PASS wrong").await,
        "-ERR [AUTH] Authentication failed\r\n"
    );
    assert_eq!(
        c.line().await,
        "-ERR [AUTH] too many authentication failures\r\n"
    );
    assert!(c.at_eof().await);
    task.await.unwrap();
}

#[tokio::test]
async fn rfc5034_auth_plain_logs_in() {
    let h = harness();
    let (mut c, _task) = h.connect();
    c.line().await;
    assert_eq!(c.cmd("AUTH PLAIN").await, "+ \r\n");
    // base64("\0alice@localhost\0secret")
    let b64 = "AGFsaWNlQGxvY2FsaG9zdABzZWNyZXQ=";
    assert!(c.cmd(b64).await.starts_with("+OK maildrop has 0 messages"));
}

#[tokio::test]
async fn rfc2595_plaintext_refused_from_remote_peer_without_tls() {
    let h = harness();
    let mut info = ConnInfo::for_test(Protocol::Pop3);
    info.peer = "192.0.2.7:40000".parse().unwrap();
    let (mut c, _task) = h.connect_as(info);
    c.line().await;
    assert_eq!(c.cmd("USER alice").await, "-ERR [AUTH] TLS required\r\n");
    assert_eq!(c.cmd("CAPA").await, "+OK Capability list follows\r\n");
    let capa = String::from_utf8(c.body().await).unwrap();
    assert!(
        capa.contains("STLS\r\n") && !capa.contains("USER\r\n"),
        "{capa}"
    );
}

#[tokio::test]
async fn rfc2595_stls_upgrades_and_then_allows_login() {
    let h = harness();
    let mut info = ConnInfo::for_test(Protocol::Pop3);
    info.peer = "192.0.2.7:40000".parse().unwrap();
    let (mut c, _task) = h.connect_as(info);
    c.line().await;
    // Plaintext pipelined behind STLS must be discarded, not executed.
    c.send("STLS\r\nUSER alice\r\n").await;
    assert_eq!(c.line().await, "+OK Begin TLS negotiation\r\n");
    let plain = c.io.into_inner();

    let mut roots = rustls::RootCertStore::empty();
    let cert_path = h.config.server.data_dir.join("tls/cert.pem");
    use rustls::pki_types::pem::PemObject;
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(&cert_path).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let client_config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, plain).await.unwrap();
    let mut c = Client::new(tls);
    // PASS fails: the USER before TLS was forgotten.
    assert_eq!(c.cmd("PASS secret").await, "-ERR USER first\r\n");
    assert_eq!(c.cmd("CAPA").await, "+OK Capability list follows\r\n");
    let capa = String::from_utf8(c.body().await).unwrap();
    assert!(
        capa.contains("USER\r\n") && !capa.contains("STLS"),
        "{capa}"
    );
    assert!(c.login().await.starts_with("+OK maildrop"));
    assert_eq!(
        c.cmd("STLS").await,
        "-ERR command not valid in this state\r\n"
    );
    assert_eq!(c.cmd("QUIT").await, "+OK msgd POP3 server signing off\r\n");
}

#[tokio::test]
async fn shutdown_says_goodbye_and_applies_no_deletions() {
    let h = harness();
    let u1 = h.deliver(b"Subject: a\r\n\r\nx\r\n").await;
    let (mut c, task) = h.connect();
    c.line().await;
    c.login().await;
    c.cmd("DELE 1").await;
    h.env.shutdown.cancel();
    assert_eq!(c.line().await, "-ERR server shutting down\r\n");
    assert!(c.at_eof().await);
    task.await.unwrap();
    assert_eq!(h.inbox_uids().await, vec![u1]);
}

#[tokio::test]
async fn rfc1939_idle_timeout_autologout() {
    let h = harness_with(|c| c.pop3.idle_timeout = 1);
    let (mut c, task) = h.connect();
    c.line().await;
    assert_eq!(c.line().await, "-ERR autologout\r\n");
    assert!(c.at_eof().await);
    task.await.unwrap();
}

#[tokio::test]
async fn too_long_line_gets_error_and_session_continues() {
    let h = harness_with(|c| c.limits.max_line = 512);
    let (mut c, _task) = h.connect();
    c.line().await;
    let long = "X".repeat(5000);
    assert_eq!(c.cmd(&long).await, "-ERR line too long\r\n");
    assert_eq!(c.cmd("CAPA").await, "+OK Capability list follows\r\n");
    c.body().await;
}

/// The store side of the mmp's `proxyauth` login mode: a user listed in
/// `pop3.proxy_users` logs in as another user with AUTH PLAIN and an
/// authorization identity; nobody else may.
#[tokio::test]
async fn rfc4616_proxy_user_logs_in_as_the_authorization_identity() {
    use base64::Engine;
    let e = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let h = harness_with(|c| c.pop3.proxy_users = vec!["mmp@localhost".into()]);
    h.deliver(b"Subject: for alice\r\n\r\nhi\r\n").await;
    let (mut c, _task) = h.connect();
    c.line().await;
    let ok = c
        .cmd(&format!(
            "AUTH PLAIN {}",
            e(b"alice@localhost\0mmp@localhost\0proxy pw")
        ))
        .await;
    assert!(ok.starts_with("+OK maildrop has 1 message"), "{ok}");
    assert_eq!(c.cmd("QUIT").await, "+OK msgd POP3 server signing off\r\n");
    for (authz, pw, expect) in [
        (
            "alice@localhost",
            "wrong",
            "-ERR [AUTH] Authentication failed\r\n",
        ),
        (
            "nobody@localhost",
            "proxy pw",
            "-ERR [AUTH] Authentication failed\r\n",
        ),
        (
            "off@localhost",
            "proxy pw",
            "-ERR [AUTH] account disabled\r\n",
        ),
        (
            "down@localhost",
            "proxy pw",
            "-ERR [SYS/TEMP] directory unavailable\r\n",
        ),
    ] {
        let (mut c, _task) = h.connect();
        c.line().await;
        let raw = format!("{authz}\0mmp@localhost\0{pw}");
        assert_eq!(
            c.cmd(&format!("AUTH PLAIN {}", e(raw.as_bytes()))).await,
            expect,
            "{authz}"
        );
    }
    // alice is no proxy user: she may not act as mmp.
    let (mut c, _task) = h.connect();
    c.line().await;
    assert_eq!(
        c.cmd(&format!(
            "AUTH PLAIN {}",
            e(b"mmp@localhost\0alice@localhost\0secret")
        ))
        .await,
        "-ERR [AUTH] not authorized to act as that user\r\n"
    );
}

/// The public entry point with real `Services`: embedded directory, store
/// and TLS from one temp folder.
#[tokio::test]
async fn serve_with_embedded_directory_logs_in_and_retrieves() {
    use crate::directory::{embedded, Directory};
    let h = harness();
    let config = Arc::new(h.config.clone());
    let path = config.directory_path();
    embedded::edit(&path, |d| {
        embedded::add_user(d, "bob@localhost", "pw of bob", None, true)?;
        embedded::add_user(d, "carol@localhost", "pw", None, false)
    })
    .unwrap();
    let (logins, mmp) = crate::services::Services::shared_parts(&config);
    let services = crate::services::Services {
        logins,
        mmp,
        resolver: Arc::new(crate::dns::Resolver::from_config(&config).unwrap()),
        web: std::sync::Arc::default(),
        hygiene: std::sync::Arc::default(),
        dkim: std::sync::Arc::default(),
        config: config.clone(),
        directory: Directory::open(&config).unwrap(),
        store: Some(h.store.clone()),
        tls: h.env.tls.clone(),
        queue: None,
        shutdown: CancellationToken::new(),
        conns: Default::default(),
        budget: Arc::new(crate::budget::Budget::new(1 << 30)),
    };
    h.store
        .append(
            "bob@localhost",
            "INBOX",
            NewMessage {
                data: Arc::new(b"Subject: hi bob\r\n\r\nhello\r\n".to_vec()),
                flags: Flags::default(),
                internal_date: None,
            },
            Quota::default(),
        )
        .await
        .unwrap();
    let (client, server) = tokio::io::duplex(64 * 1024);
    let task = tokio::spawn(super::serve(
        Box::new(server),
        ConnInfo::for_test(Protocol::Pop3),
        services,
    ));
    let mut c = Client::new(client);
    assert_eq!(c.line().await, "+OK msgd POP3 server ready\r\n");
    c.cmd("USER carol").await;
    assert_eq!(c.cmd("PASS pw").await, "-ERR [AUTH] account disabled\r\n");
    // Bare login name: qualified with server.domain.
    c.cmd("USER bob").await;
    assert_eq!(
        c.cmd("PASS pw of bob").await,
        "+OK maildrop has 1 message (26 octets)\r\n"
    );
    assert_eq!(c.cmd("RETR 1").await, "+OK 26 octets\r\n");
    assert_eq!(c.body().await, b"Subject: hi bob\r\n\r\nhello\r\n.\r\n");
    assert_eq!(c.cmd("DELE 1").await, "+OK message 1 deleted\r\n");
    assert_eq!(c.cmd("QUIT").await, "+OK msgd POP3 server signing off\r\n");
    assert!(c.at_eof().await);
    task.await.unwrap();
    let left = h.store.snapshot("bob@localhost", "INBOX").await.unwrap();
    assert!(left.messages.is_empty());
}

/// A store serves only its own users: a user whose mailHost names another
/// store gets a temporary error, not an empty maildrop here.
#[tokio::test]
async fn login_of_a_user_of_another_store_is_refused() {
    use crate::directory::embedded;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("directory.json");
    embedded::edit(&path, |d| {
        embedded::add_user(d, "dave@localhost", "pw", None, true)?;
        if let Some(u) = d.users.get_mut("dave@localhost") {
            u.account.mail_host = Some("store2.example".into());
        }
        Ok(())
    })
    .unwrap();
    let services =
        crate::services::test_services(dir.path(), |c| c.store.host = "store1.example".into());
    let (client, server) = tokio::io::duplex(4096);
    let task = tokio::spawn(crate::pop3::serve(
        Box::new(server),
        ConnInfo::for_test(Protocol::Pop3),
        services.clone(),
    ));
    let mut c = Client::new(client);
    c.line().await;
    c.cmd("USER dave@localhost").await;
    let r = c.cmd("PASS pw").await;
    assert!(r.starts_with("-ERR [SYS/TEMP]"), "{r}");
    c.cmd("QUIT").await;
    task.await.unwrap();
    assert!(services
        .store()
        .list("dave@localhost")
        .await
        .unwrap()
        .is_empty());
}

/// A store behind mmps accepts logins only from `pop3.login_networks`.
#[tokio::test]
async fn login_only_from_login_networks() {
    use crate::directory::embedded;
    let dir = tempfile::tempdir().unwrap();
    embedded::edit(&dir.path().join("directory.json"), |d| {
        embedded::add_user(d, "erin@localhost", "pw", None, true)
    })
    .unwrap();
    let services = crate::services::test_services(dir.path(), |c| {
        c.pop3.login_networks = vec!["192.0.2.0/24".parse().unwrap()]
    });
    for (via, ok) in [(None, false), (Some("192.0.2.7:5000"), true)] {
        let (client, server) = tokio::io::duplex(4096);
        let mut info = ConnInfo::for_test(Protocol::Pop3);
        info.via = via.map(|v| v.parse().unwrap());
        // Through a balancer, plaintext needs TLS (not a claimed loopback).
        info.tls_active = true;
        let task = tokio::spawn(crate::pop3::serve(Box::new(server), info, services.clone()));
        let mut c = Client::new(client);
        c.line().await;
        c.cmd("USER erin@localhost").await;
        let r = c.cmd("PASS pw").await;
        assert_eq!(r.starts_with("+OK"), ok, "{via:?}: {r}");
        c.cmd("QUIT").await;
        task.await.unwrap();
    }
}

/// Nothing `Debug` prints on the POP3 side shows a password: PASS, AUTH
/// PLAIN (initial response and continuation), APOP, the buffered line and
/// the session's Authenticate actions.
#[test]
fn debug_output_hides_pop3_passwords() {
    use super::codec::LineReader;
    use super::session::Action;
    let mut r = LineReader::new(1000);
    r.push(b"USER alice\r\nPASS hunter2\r\nAUTH PLAIN AGFsaWNlAGh1bnRlcjI=\r\nAGFsaWNlAGh1bnRlcjI=\r\nAPOP alice hunter2\r\nPASS hunt");
    assert!(!format!("{r:?}").contains("hunter2"));
    let mut seen = Vec::new();
    while let Some(i) = r.next() {
        seen.push(format!("{i:?}"));
    }
    assert_eq!(seen.len(), 5, "{seen:?}");
    assert!(seen[0].contains("USER alice"));
    for d in &seen {
        assert!(!d.contains("hunter2") && !d.contains("AGFsaWNl"), "{d}");
    }
    for a in [
        Action::Authenticate {
            login: "alice".into(),
            password: "hunter2".into(),
        },
        Action::AuthenticateAs {
            login: "mmp".into(),
            password: "hunter2".into(),
            authzid: "alice".into(),
        },
    ] {
        assert!(!format!("{a:?}").contains("hunter2"));
    }
}
