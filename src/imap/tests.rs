//! Session tests over an in-memory duplex with a real store and the
//! embedded directory in a temporary folder. Named after the RFC behaviour
//! they check.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use crate::config::{Config, Protocol, TlsMode};
use crate::directory::embedded;
use crate::net::ConnInfo;
use crate::services::Services;
use rustls::pki_types::pem::PemObject;

pub const USER: &str = "alice@example.com";
pub const PASS: &str = "alice-password";

pub struct Harness {
    _dir: tempfile::TempDir,
    pub services: Services,
}

pub fn harness() -> Harness {
    harness_with(|_| {})
}

pub fn harness_with(tweak: impl FnOnce(&mut Config)) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    // Users first: the directory reads its file when it opens.
    embedded::edit(&dir.path().join("directory.json"), |d| {
        embedded::add_user(d, USER, PASS, None, true)?;
        embedded::add_user(d, "bob@example.com", "bob-password", None, false)?;
        // Active users for shared mailboxes and proxy logins.
        embedded::add_user(d, "carol@example.com", "carol-password", None, true)?;
        embedded::add_user(d, "mmp@example.com", "mmp-password", None, true)
    })
    .unwrap();
    let services = crate::services::test_services(dir.path(), |c| {
        c.server.domain = "example.com".into();
        c.store.dbcachesize = 4 << 20;
        tweak(c);
    });
    Harness {
        _dir: dir,
        services,
    }
}

/// A test client speaking raw IMAP over a duplex to a session task.
pub struct Client {
    io: DuplexStream,
    buf: Vec<u8>,
}

impl Client {
    pub async fn connect(h: &Harness) -> Client {
        Self::connect_info(h, ConnInfo::for_test(Protocol::Imap)).await
    }

    pub async fn connect_info(h: &Harness, info: ConnInfo) -> Client {
        let (a, b) = tokio::io::duplex(1 << 20);
        tokio::spawn(super::serve(Box::new(b), info, h.services.clone()));
        let mut c = Client {
            io: a,
            buf: Vec::new(),
        };
        let greeting = c.line().await;
        assert!(greeting.starts_with("* OK"), "{greeting}");
        c
    }

    pub async fn logged_in(h: &Harness) -> Client {
        let mut c = Self::connect(h).await;
        let r = c.cmd(&format!("L LOGIN {USER} {PASS}")).await;
        assert!(
            tagged(&r).starts_with("L OK [CAPABILITY IMAP4rev1 IMAP4rev2 "),
            "{r}"
        );
        c
    }

    pub async fn send(&mut self, data: &[u8]) {
        self.io.write_all(data).await.unwrap();
    }

    /// One response line (with CRLF); a literal is read with its line.
    /// Empty string on EOF.
    pub async fn line(&mut self) -> String {
        loop {
            if let Some(p) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=p).collect();
                let mut s = String::from_utf8_lossy(&line).into_owned();
                // A literal announcement: append the literal and the rest.
                if let Some(n) = literal_len(&s) {
                    while self.buf.len() < n {
                        self.fill().await;
                    }
                    let lit: Vec<u8> = self.buf.drain(..n).collect();
                    s.push_str(&String::from_utf8_lossy(&lit));
                    s.push_str(&Box::pin(self.line()).await);
                }
                return s;
            }
            if !self.fill().await {
                return String::from_utf8_lossy(&std::mem::take(&mut self.buf)).into_owned();
            }
        }
    }

    async fn fill(&mut self) -> bool {
        let mut b = vec![0u8; 65536];
        let n = tokio::time::timeout(Duration::from_secs(20), self.io.read(&mut b))
            .await
            .expect("server answer timed out")
            .unwrap_or(0);
        self.buf.extend_from_slice(&b[..n]);
        n > 0
    }

    /// Everything up to and including the tagged response of `tag`.
    pub async fn until_tagged(&mut self, tag: &str) -> String {
        let mut out = String::new();
        loop {
            let l = self.line().await;
            if l.is_empty() {
                return out;
            }
            out.push_str(&l);
            if l.starts_with(&format!("{tag} ")) {
                return out;
            }
        }
    }

    /// Sends `cmd` (tag first) and reads to its tagged response.
    pub async fn cmd(&mut self, cmd: &str) -> String {
        let tag = cmd.split(' ').next().unwrap().to_string();
        self.send(format!("{cmd}\r\n").as_bytes()).await;
        self.until_tagged(&tag).await
    }
}

fn literal_len(line: &str) -> Option<usize> {
    let l = line.strip_suffix("\r\n")?.strip_suffix('}')?;
    let open = l.rfind('{')?;
    l[open + 1..].parse().ok()
}

pub(super) fn tagged(resp: &str) -> &str {
    resp.trim_end().rsplit("\r\n").next().unwrap_or("")
}

pub(super) const MSG1: &str = "From: Bob <bob@example.net>\r\nTo: alice@example.com\r\nSubject: hello\r\nDate: Tue, 14 Nov 2023 10:00:00 +0000\r\nMessage-ID: <1@example.net>\r\n\r\nHi Alice,\r\nfirst message.\r\n";
pub(super) const MSG2: &str = "From: Carol <carol@example.org>\r\nTo: alice@example.com\r\nSubject: second\r\n\r\nSecond body zanzibar.\r\n";

pub(super) async fn append(c: &mut Client, mailbox: &str, flags: &str, msg: &str) -> String {
    let r = c
        .cmd(&format!(
            "AP APPEND {mailbox} ({flags}) {{{}+}}\r\n{msg}",
            msg.len()
        ))
        .await;
    assert!(tagged(&r).starts_with("AP OK [APPENDUID "), "{r}");
    r
}

// ---------------------------------------------------------------- not authenticated

#[tokio::test]
async fn rfc3501_7_1_greeting_and_capability() {
    let h = harness();
    let mut c = Client::connect(&h).await;
    let r = c.cmd("a CAPABILITY").await;
    assert!(r.starts_with("* CAPABILITY IMAP4rev1 "), "{r}");
    // Loopback without TLS on a STARTTLS listener: STARTTLS offered,
    // plaintext login allowed from loopback.
    assert!(r.contains(" STARTTLS"), "{r}");
    assert!(r.contains(" AUTH=PLAIN"), "{r}");
    assert!(!r.contains("LOGINDISABLED"), "{r}");
    assert!(r.ends_with("a OK CAPABILITY completed\r\n"));
}

#[tokio::test]
async fn rfc3501_6_2_3_logindisabled_without_tls_from_remote() {
    let h = harness();
    let mut info = ConnInfo::for_test(Protocol::Imap);
    info.peer = "192.0.2.7:40000".parse().unwrap();
    info.tls_mode = TlsMode::StartTls;
    let mut c = Client::connect_info(&h, info).await;
    let r = c.cmd("a CAPABILITY").await;
    assert!(r.contains("LOGINDISABLED") && r.contains("STARTTLS"), "{r}");
    assert!(!r.contains("AUTH=PLAIN"), "{r}");
    let r = c.cmd(&format!("b LOGIN {USER} {PASS}")).await;
    assert!(r.starts_with("b NO [PRIVACYREQUIRED]"), "{r}");
    let r = c.cmd("c AUTHENTICATE PLAIN AGFsaWNlAHB3").await;
    assert!(r.starts_with("c NO [PRIVACYREQUIRED]"), "{r}");
}

#[tokio::test]
async fn rfc3501_6_2_3_login_and_bare_local_part() {
    let h = harness();
    let mut c = Client::connect(&h).await;
    let r = c.cmd(&format!("a LOGIN alice \"{PASS}\"")).await;
    assert!(r.starts_with("a OK [CAPABILITY IMAP4rev1"), "{r}");
    let r = c.cmd("b LOGIN alice x").await;
    assert!(r.starts_with("b BAD"), "{r}");
}

#[tokio::test]
async fn rfc5530_login_failures_then_bye() {
    let h = harness();
    let mut c = Client::connect(&h).await;
    let r = c.cmd(&format!("a LOGIN {USER} wrong")).await;
    assert_eq!(r, "a NO [AUTHENTICATIONFAILED] Authentication failed\r\n");
    let r = c.cmd("b LOGIN nobody@example.com wrong").await;
    assert!(r.starts_with("b NO [AUTHENTICATIONFAILED]"), "{r}");
    // Inactive account with the right password.
    let r = c.cmd("c LOGIN bob@example.com bob-password").await;
    assert!(r.starts_with("c NO [CONTACTADMIN]"), "{r}");
    let r = c.cmd(&format!("d LOGIN {USER} wrong")).await;
    assert!(r.starts_with("* BYE"), "{r}");
    assert!(r.contains("d NO [AUTHENTICATIONFAILED]"), "{r}");
    assert_eq!(c.line().await, "");
}

#[tokio::test]
async fn rfc4959_authenticate_plain_with_initial_response() {
    use base64::Engine;
    let h = harness();
    let mut c = Client::connect(&h).await;
    let ir = base64::engine::general_purpose::STANDARD.encode(format!("\0{USER}\0{PASS}"));
    let r = c.cmd(&format!("a AUTHENTICATE PLAIN {ir}")).await;
    assert!(r.starts_with("a OK [CAPABILITY"), "{r}");
}

#[tokio::test]
async fn rfc3501_6_2_2_authenticate_plain_with_continuation() {
    use base64::Engine;
    let h = harness();
    let mut c = Client::connect(&h).await;
    c.send(b"a AUTHENTICATE PLAIN\r\n").await;
    assert_eq!(c.line().await, "+ \r\n");
    c.send(b"*\r\n").await;
    assert!(c.line().await.starts_with("a BAD"));
    c.send(b"b AUTHENTICATE PLAIN\r\n").await;
    assert_eq!(c.line().await, "+ \r\n");
    let data = base64::engine::general_purpose::STANDARD.encode(format!("\0{USER}\0{PASS}"));
    c.send(format!("{data}\r\n").as_bytes()).await;
    let r = c.until_tagged("b").await;
    assert!(r.starts_with("b OK"), "{r}");
}

#[tokio::test]
async fn rfc3501_6_1_3_logout() {
    let h = harness();
    let mut c = Client::connect(&h).await;
    let r = c.cmd("a LOGOUT").await;
    assert_eq!(r, "* BYE Logging out\r\na OK LOGOUT completed\r\n");
    assert_eq!(c.line().await, "");
}

#[tokio::test]
async fn garbage_first_command_gets_bad_and_session_survives() {
    let h = harness();
    let mut c = Client::connect(&h).await;
    c.send(b"hello world this is not imap\r\n").await;
    assert_eq!(c.line().await, "hello BAD Syntax error in command\r\n");
    c.send(b"\x16\x03\x01\x00\r\n").await;
    assert!(c.line().await.starts_with("* BAD"));
    let r = c.cmd("n NOOP").await;
    assert_eq!(r, "n OK NOOP completed\r\n");
    let r = c.cmd("s SELECT INBOX").await;
    assert!(r.starts_with("s BAD"), "{r}");
}

#[tokio::test]
async fn too_many_bad_commands_disconnect() {
    let h = harness_with(|c| c.limits.max_bad_commands = 3);
    let mut c = Client::connect(&h).await;
    for i in 0..2 {
        let r = c.cmd(&format!("b{i} XYZZY")).await;
        assert!(r.starts_with(&format!("b{i} BAD")), "{r}");
    }
    c.send(b"b2 XYZZY\r\n").await;
    assert!(c.line().await.starts_with("b2 BAD"));
    assert!(c.line().await.starts_with("* BYE"));
    assert_eq!(c.line().await, "");
}

#[tokio::test]
async fn overlong_line_gets_bad_and_stream_resyncs() {
    let h = harness_with(|c| c.limits.max_line = 1000);
    let mut c = Client::connect(&h).await;
    let mut big = b"A1 LOGIN ".to_vec();
    big.extend(std::iter::repeat_n(b'x', 100_000));
    big.extend_from_slice(b" y\r\nA2 NOOP\r\n");
    c.send(&big).await;
    assert_eq!(c.line().await, "A1 BAD Command line too long\r\n");
    assert_eq!(c.line().await, "A2 OK NOOP completed\r\n");
}

/// RFC 7162 4 and RFC 2971 3.3: an ID of 30 fields with 1,024-octet values
/// (a 32 KiB line) is accepted before and after login, whatever
/// `limits.max_line` says below the IMAP minimum; a line past that minimum
/// gets BAD and the next command works.
#[tokio::test]
async fn rfc7162_4_long_command_lines_are_accepted_rfc2971_id_30_fields() {
    let h = harness();
    let mut id = String::from("I1 ID (");
    for i in 0..30 {
        id.push_str(&format!("\"field-{i:02}\" \"{}\" ", "v".repeat(1024)));
    }
    id.pop();
    id.push(')');
    assert!(id.len() > 8192 * 3);
    let mut c = Client::connect(&h).await;
    let r = c.cmd(&id).await;
    assert!(tagged(&r).starts_with("I1 OK"), "{r}");
    let r = c.cmd(&format!("L LOGIN {USER} {PASS}")).await;
    assert!(tagged(&r).starts_with("L OK"), "{r}");
    let r = c.cmd(&id.replace("I1 ", "I2 ")).await;
    assert!(tagged(&r).starts_with("I2 OK"), "{r}");
    let mut big = b"A1 NOOP ".to_vec();
    big.extend(std::iter::repeat_n(b'x', super::framer::MIN_LINE + 1));
    big.extend_from_slice(b"\r\nA2 NOOP\r\n");
    c.send(&big).await;
    assert_eq!(c.line().await, "A1 BAD Command line too long\r\n");
    assert_eq!(c.line().await, "A2 OK NOOP completed\r\n");
}

/// RFC 9051 4.3 / RFC 7888: a LITERAL+ literal that cannot be skipped (its
/// length is not a number64) is the one refusal that ends the connection;
/// a too-big one that can be skipped is refused and the session goes on.
#[tokio::test]
async fn rfc7888_unskippable_literal_closes_skippable_one_does_not() {
    let h = harness_with(|c| c.imap.max_literal = 100);
    let mut c = Client::logged_in(&h).await;
    let mut input = b"A1 APPEND INBOX {200+}\r\n".to_vec();
    input.extend(std::iter::repeat_n(b'x', 200));
    input.extend_from_slice(b"\r\nA2 NOOP\r\n");
    c.send(&input).await;
    assert!(c.line().await.starts_with("A1 NO [TOOBIG]"));
    assert_eq!(c.line().await, "A2 OK NOOP completed\r\n");
    c.send(b"A3 APPEND INBOX {99999999999999999999+}\r\nxyz\r\n")
        .await;
    assert!(c.line().await.starts_with("* BYE"));
    assert_eq!(c.line().await, "");
}

#[tokio::test]
async fn preauth_timeout_autologout() {
    let h = harness_with(|c| c.imap.preauth_timeout = 1);
    let mut c = Client::connect(&h).await;
    assert!(c.line().await.starts_with("* BYE Autologout"));
    assert_eq!(c.line().await, "");
}

#[tokio::test]
async fn shutdown_says_bye() {
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    h.services.shutdown.cancel();
    assert!(c.line().await.starts_with("* BYE"));
    assert_eq!(c.line().await, "");
}

#[tokio::test]
async fn rfc3501_6_2_1_starttls_upgrades_in_place() {
    let h = harness();
    let mut info = ConnInfo::for_test(Protocol::Imap);
    info.tls_mode = TlsMode::StartTls;
    let mut c = Client::connect_info(&h, info).await;
    // Pipelined plaintext after STARTTLS must not be executed (RFC 3501
    // 6.2.1 / RFC 2595 3.1).
    c.send(b"a STARTTLS\r\nx LOGOUT\r\n").await;
    assert_eq!(c.line().await, "a OK Begin TLS negotiation now\r\n");
    let cert = std::fs::read(h.services.config.server.data_dir.join("tls/cert.pem")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(&cert) {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, c.io).await.unwrap();
    tls.write_all(b"b CAPABILITY\r\n").await.unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 4096];
    while !got.ends_with(b"b OK CAPABILITY completed\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(!text.contains("STARTTLS"), "{text}");
    assert!(text.contains("AUTH=PLAIN"), "{text}");
    assert!(!text.contains("BYE"), "{text}");
}

// ---------------------------------------------------------------- authenticated

#[tokio::test]
async fn rfc3501_6_3_8_list_special_use_and_children() {
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    let r = c.cmd("a LIST \"\" *").await;
    assert!(
        r.contains("* LIST (\\HasNoChildren) \"/\" \"INBOX\"\r\n"),
        "{r}"
    );
    assert!(
        r.contains("* LIST (\\HasNoChildren \\Sent) \"/\" \"Sent\"\r\n"),
        "{r}"
    );
    assert!(r.contains("\\Trash) \"/\" \"Trash\""), "{r}");
    assert!(r.contains("\\Drafts) \"/\" \"Drafts\""), "{r}");
    assert!(r.contains("\\Junk) \"/\" \"Junk\""), "{r}");
    let r = c.cmd("b LIST \"\" \"\"").await;
    assert_eq!(
        r,
        "* LIST (\\Noselect) \"/\" \"\"\r\nb OK LIST completed\r\n"
    );
    let r = c.cmd("c CREATE Work/Projects/2024").await;
    assert!(
        r.starts_with("c OK [MAILBOXID (") && r.ends_with("CREATE completed\r\n"),
        "{r}"
    );
    let r = c.cmd("d LIST \"\" %").await;
    assert!(
        r.contains("* LIST (\\HasChildren) \"/\" \"Work\"\r\n"),
        "{r}"
    );
    assert!(!r.contains("Projects"), "{r}");
    let r = c.cmd("e LIST Work/ %").await;
    assert!(
        r.contains("* LIST (\\HasChildren) \"/\" \"Work/Projects\"\r\n"),
        "{r}"
    );
    let r = c.cmd("f LIST \"\" inbox").await;
    assert!(r.contains("\"INBOX\""), "{r}");
}

#[tokio::test]
async fn rfc3501_5_1_3_mailbox_names_in_modified_utf7() {
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    let r = c.cmd("a CREATE \"Entw&APw-rfe\"").await;
    assert!(
        r.starts_with("a OK [MAILBOXID (") && r.ends_with("CREATE completed\r\n"),
        "{r}"
    );
    let r = c.cmd("b LIST \"\" Entw*").await;
    assert!(r.contains("\"Entw&APw-rfe\"\r\n"), "{r}");
    let list = h.services.store().list(USER).await.unwrap();
    assert!(list.iter().any(|m| m.name == "Entwürfe"));
    let r = c.cmd("c STATUS \"Entw&APw-rfe\" (MESSAGES)").await;
    assert!(
        r.starts_with("* STATUS \"Entw&APw-rfe\" (MESSAGES 0)\r\n"),
        "{r}"
    );
}

#[tokio::test]
async fn rfc3501_6_3_create_rename_delete() {
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    assert!(c
        .cmd("a CREATE Projects")
        .await
        .starts_with("a OK [MAILBOXID ("));
    assert!(c
        .cmd("b CREATE Projects")
        .await
        .starts_with("b NO [ALREADYEXISTS]"));
    assert!(c
        .cmd("b2 CREATE inbox")
        .await
        .starts_with("b2 NO [ALREADYEXISTS]"));
    append(&mut c, "Projects", "", MSG1).await;
    assert_eq!(
        c.cmd("c RENAME Projects Clients").await,
        "c OK RENAME completed\r\n"
    );
    let r = c.cmd("d STATUS Clients (MESSAGES UIDNEXT UNSEEN)").await;
    assert!(
        r.starts_with("* STATUS \"Clients\" (MESSAGES 1 UIDNEXT 2 UNSEEN 1)"),
        "{r}"
    );
    assert!(c
        .cmd("e SELECT Projects")
        .await
        .starts_with("e NO [NONEXISTENT]"));
    assert_eq!(c.cmd("f DELETE Clients").await, "f OK DELETE completed\r\n");
    assert!(c
        .cmd("g DELETE Clients")
        .await
        .starts_with("g NO [NONEXISTENT]"));
    assert!(c.cmd("h DELETE INBOX").await.starts_with("h NO"));
}

#[tokio::test]
async fn rfc3501_6_3_6_subscribe_and_lsub() {
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    c.cmd("a CREATE news/comp").await;
    assert_eq!(
        c.cmd("b SUBSCRIBE news/comp").await,
        "b OK SUBSCRIBE completed\r\n"
    );
    let r = c.cmd("c LSUB \"\" *").await;
    assert!(r.contains("* LSUB () \"/\" \"news/comp\"\r\n"), "{r}");
    let r = c.cmd("d LSUB \"\" %").await;
    assert!(r.contains("* LSUB (\\Noselect) \"/\" \"news\"\r\n"), "{r}");
    assert_eq!(
        c.cmd("e UNSUBSCRIBE news/comp").await,
        "e OK UNSUBSCRIBE completed\r\n"
    );
    let r = c.cmd("f LSUB \"\" news*").await;
    assert_eq!(r, "f OK LSUB completed\r\n");
}

#[tokio::test]
async fn rfc3501_6_3_11_append_with_flags_date_and_trycreate() {
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    c.send(
        format!(
            "a APPEND INBOX (\\Seen $Work) \"14-Nov-2023 10:00:00 +0100\" {{{}}}\r\n",
            MSG1.len()
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(c.line().await, "+ Ready for literal data\r\n");
    c.send(format!("{MSG1}\r\n").as_bytes()).await;
    let r = c.until_tagged("a").await;
    assert!(r.starts_with("a OK [APPENDUID "), "{r}");
    let r = c.cmd("b APPEND Nowhere {3+}\r\nabc").await;
    assert!(r.starts_with("b NO [TRYCREATE]"), "{r}");
    c.cmd("s SELECT INBOX").await;
    let r = c.cmd("f FETCH 1 (FLAGS INTERNALDATE RFC822.SIZE)").await;
    assert!(
        r.starts_with(&format!(
            "* 1 FETCH (FLAGS (\\Seen $Work \\Recent) INTERNALDATE \"14-Nov-2023 10:00:00 +0100\" RFC822.SIZE {})",
            MSG1.len()
        )),
        "{r}"
    );
}

#[tokio::test]
async fn rfc7888_append_too_big_literal() {
    let h = harness_with(|c| c.imap.max_literal = 100);
    let mut c = Client::logged_in(&h).await;
    let r = c.cmd("a APPEND INBOX {200}").await;
    assert_eq!(r, "a NO [TOOBIG] Literal too big\r\n");
    let body = "x".repeat(200);
    let r = c.cmd(&format!("b APPEND INBOX {{200+}}\r\n{body}")).await;
    assert_eq!(r, "b NO [TOOBIG] Literal too big\r\n");
    assert_eq!(c.cmd("c NOOP").await, "c OK NOOP completed\r\n");
}

#[tokio::test]
async fn rfc3501_6_3_1_select_and_examine() {
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    append(&mut c, "INBOX", "\\Seen", MSG1).await;
    append(&mut c, "INBOX", "", MSG2).await;
    let r = c.cmd("a SELECT INBOX").await;
    assert!(r.contains("* 2 EXISTS\r\n"), "{r}");
    assert!(r.contains("* 2 RECENT\r\n"), "{r}");
    assert!(r.contains("* OK [UNSEEN 2]"), "{r}");
    assert!(r.contains("* OK [UIDVALIDITY "), "{r}");
    assert!(r.contains("* OK [UIDNEXT 3]"), "{r}");
    assert!(
        r.contains("* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)]"),
        "{r}"
    );
    assert!(r.ends_with("a OK [READ-WRITE] SELECT completed\r\n"), "{r}");
    // \Recent belongs to the first session only.
    let mut d = Client::logged_in(&h).await;
    let r = d.cmd("b EXAMINE INBOX").await;
    assert!(r.contains("* 0 RECENT\r\n"), "{r}");
    assert!(r.contains("[PERMANENTFLAGS ()]"), "{r}");
    assert!(r.ends_with("b OK [READ-ONLY] EXAMINE completed\r\n"), "{r}");
    let r = d.cmd("c STORE 1 +FLAGS (\\Deleted)").await;
    assert!(r.starts_with("c NO"), "{r}");
    let r = d.cmd("d SELECT Nope").await;
    assert!(r.starts_with("d NO [NONEXISTENT]"), "{r}");
    // A failed SELECT leaves no mailbox selected.
    assert!(d.cmd("e FETCH 1 FLAGS").await.starts_with("e BAD"));
}

#[tokio::test]
async fn rfc3501_6_4_5_fetch_metadata_and_bodies() {
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    append(&mut c, "INBOX", "", MSG1).await;
    c.cmd("s SELECT INBOX").await;
    let r = c.cmd("a FETCH 1 (UID RFC822.SIZE)").await;
    assert_eq!(
        r,
        format!(
            "* 1 FETCH (UID 1 RFC822.SIZE {})\r\na OK FETCH completed\r\n",
            MSG1.len()
        )
    );
    let r = c.cmd("b FETCH 1 BODY.PEEK[]<0.4>").await;
    assert_eq!(
        r,
        "* 1 FETCH (BODY[]<0> {4}\r\nFrom)\r\nb OK FETCH completed\r\n"
    );
    let r = c.cmd("c FETCH 1 FLAGS").await;
    assert!(r.starts_with("* 1 FETCH (FLAGS (\\Recent))"), "{r}");
    // Non-peek body fetch sets \Seen and reports it.
    let r = c.cmd("d FETCH 1 RFC822").await;
    assert!(
        r.starts_with(&format!(
            "* 1 FETCH (RFC822 {{{}}}\r\n{MSG1} FLAGS (\\Seen \\Recent))",
            MSG1.len()
        )),
        "{r}"
    );
    let r = c.cmd("e UID FETCH 1:* FLAGS").await;
    assert_eq!(
        r,
        "* 1 FETCH (FLAGS (\\Seen \\Recent) UID 1)\r\ne OK FETCH completed\r\n"
    );
    assert!(c.cmd("f FETCH 2 FLAGS").await.starts_with("f BAD"));
    assert!(c.cmd("g FETCH 1 (BOGUS[1])").await.starts_with("g BAD"));
}

#[tokio::test]
async fn rfc3501_6_4_6_store_flags() {
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    append(&mut c, "INBOX", "", MSG1).await;
    append(&mut c, "INBOX", "", MSG2).await;
    c.cmd("s SELECT INBOX").await;
    let r = c.cmd("a STORE 1:2 +FLAGS (\\Flagged $Work)").await;
    assert_eq!(
        r,
        // A new keyword is announced first (RFC 3501 7.2.6).
        "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Work)\r\n* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft $Work \\*)] Flags permitted\r\n* 1 FETCH (FLAGS (\\Flagged $Work \\Recent))\r\n* 2 FETCH (FLAGS (\\Flagged $Work \\Recent))\r\na OK STORE completed\r\n"
    );
    let r = c.cmd("b STORE 1 -FLAGS.SILENT (\\Flagged)").await;
    assert_eq!(r, "b OK STORE completed\r\n");
    let r = c.cmd("c UID STORE 2 FLAGS (\\Answered)").await;
    assert_eq!(
        r,
        "* 2 FETCH (FLAGS (\\Answered \\Recent) UID 2)\r\nc OK STORE completed\r\n"
    );
    let r = c.cmd("d FETCH 1:2 FLAGS").await;
    assert!(r.contains("* 1 FETCH (FLAGS ($Work \\Recent))"), "{r}");
}

#[tokio::test]
async fn rfc3501_6_4_3_expunge_and_rfc4315_uid_expunge() {
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    for _ in 0..4 {
        append(&mut c, "INBOX", "\\Deleted", MSG2).await;
    }
    c.cmd("s SELECT INBOX").await;
    let r = c.cmd("a UID EXPUNGE 2:3").await;
    assert_eq!(
        r,
        "* 3 EXPUNGE\r\n* 2 EXPUNGE\r\n* 2 EXISTS\r\n* 2 RECENT\r\na OK EXPUNGE completed\r\n"
    );
    let r = c.cmd("b EXPUNGE").await;
    assert!(r.starts_with("* 2 EXPUNGE\r\n* 1 EXPUNGE\r\n"), "{r}");
    let r = c.cmd("c FETCH 1:* FLAGS").await;
    assert_eq!(r, "c OK FETCH completed\r\n");
}

#[tokio::test]
async fn rfc3501_6_4_2_close_expunges_silently_unselect_does_not() {
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    append(&mut c, "INBOX", "\\Deleted", MSG1).await;
    append(&mut c, "INBOX", "", MSG2).await;
    c.cmd("s SELECT INBOX").await;
    assert_eq!(c.cmd("a UNSELECT").await, "a OK UNSELECT completed\r\n");
    c.cmd("s SELECT INBOX").await;
    assert_eq!(c.cmd("b CLOSE").await, "b OK CLOSE completed\r\n");
    let r = c.cmd("c STATUS INBOX (MESSAGES)").await;
    assert!(r.starts_with("* STATUS \"INBOX\" (MESSAGES 1)"), "{r}");
    assert!(c.cmd("d EXPUNGE").await.starts_with("d BAD"));
}

#[tokio::test]
async fn rfc4315_copy_and_rfc6851_move() {
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    append(&mut c, "INBOX", "", MSG1).await;
    append(&mut c, "INBOX", "", MSG2).await;
    c.cmd("x CREATE Archive").await;
    c.cmd("s SELECT INBOX").await;
    let r = c.cmd("a COPY 1:2 Archive").await;
    assert!(r.starts_with("a OK [COPYUID "), "{r}");
    assert!(r.contains(" 1:2 1:2] "), "{r}");
    let r = c.cmd("b COPY 1 Nowhere").await;
    assert!(r.starts_with("b NO [TRYCREATE]"), "{r}");
    let r = c.cmd("c UID MOVE 1 Archive").await;
    assert!(r.starts_with("* OK [COPYUID "), "{r}");
    assert!(r.contains("* 1 EXPUNGE\r\n"), "{r}");
    assert!(r.ends_with("c OK MOVE completed\r\n"), "{r}");
    let r = c.cmd("d STATUS Archive (MESSAGES)").await;
    assert!(r.starts_with("* STATUS \"Archive\" (MESSAGES 3)"), "{r}");
}

#[tokio::test]
async fn rfc3501_6_3_10_status_items() {
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    append(&mut c, "INBOX", "\\Seen", MSG1).await;
    append(&mut c, "INBOX", "", MSG2).await;
    let r = c
        .cmd("a STATUS INBOX (MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN)")
        .await;
    assert!(
        r.starts_with("* STATUS \"INBOX\" (MESSAGES 2 RECENT 2 UIDNEXT 3 UIDVALIDITY "),
        "{r}"
    );
    assert!(r.contains(" UNSEEN 1)\r\n"), "{r}");
}

#[tokio::test]
async fn rfc3501_7_4_1_two_sessions_see_flags_and_expunges() {
    let h = harness();
    let mut a = Client::logged_in(&h).await;
    for _ in 0..3 {
        append(&mut a, "INBOX", "", MSG2).await;
    }
    let mut b = Client::logged_in(&h).await;
    a.cmd("s SELECT INBOX").await;
    b.cmd("s SELECT INBOX").await;
    a.cmd("a STORE 1 +FLAGS (\\Seen \\Flagged)").await;
    a.cmd("b STORE 2 +FLAGS (\\Deleted)").await;
    let r = a.cmd("c EXPUNGE").await;
    assert!(r.starts_with("* 2 EXPUNGE\r\n"), "{r}");
    // B learns on NOOP, with FETCH by sequence number not showing the
    // expunge first.
    let r = b.cmd("d FETCH 1 UID").await;
    assert_eq!(r, "* 1 FETCH (UID 1)\r\nd OK FETCH completed\r\n");
    // RFC 2180 4.1.2: the expunged message's data is gone.
    let r = b.cmd("d2 FETCH 2 BODY.PEEK[]").await;
    assert_eq!(
        r,
        "d2 NO [EXPUNGEISSUED] Some messages could not be read; they may have been expunged\r\n"
    );
    let r = b.cmd("e NOOP").await;
    assert!(r.contains("* 2 EXPUNGE\r\n"), "{r}");
    assert!(
        r.contains("* 1 FETCH (FLAGS (\\Flagged \\Seen) UID 1)\r\n"),
        "{r}"
    );
    let r = b.cmd("f FETCH 1:* UID").await;
    assert_eq!(
        r,
        "* 1 FETCH (UID 1)\r\n* 2 FETCH (UID 3)\r\nf OK FETCH completed\r\n"
    );
}

#[tokio::test]
async fn rfc2177_idle_wakes_on_new_message() {
    let h = harness();
    let mut a = Client::logged_in(&h).await;
    a.cmd("s SELECT INBOX").await;
    a.send(b"i IDLE\r\n").await;
    assert_eq!(a.line().await, "+ idling\r\n");
    let mut b = Client::logged_in(&h).await;
    append(&mut b, "INBOX", "", MSG1).await;
    assert_eq!(a.line().await, "* 1 EXISTS\r\n");
    assert_eq!(a.line().await, "* 1 RECENT\r\n");
    a.send(b"DONE\r\n").await;
    assert_eq!(a.line().await, "i OK IDLE terminated\r\n");
    assert_eq!(a.cmd("n NOOP").await, "n OK NOOP completed\r\n");
}

#[tokio::test]
async fn rfc3501_6_4_4_search_basic() {
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    append(&mut c, "INBOX", "\\Seen", MSG1).await;
    append(&mut c, "INBOX", "", MSG2).await;
    c.cmd("s SELECT INBOX").await;
    assert_eq!(
        c.cmd("a SEARCH ALL").await,
        "* SEARCH 1 2\r\na OK SEARCH completed\r\n"
    );
    assert_eq!(
        c.cmd("b SEARCH UNSEEN").await,
        "* SEARCH 2\r\nb OK SEARCH completed\r\n"
    );
    assert_eq!(
        c.cmd("c UID SEARCH SEEN").await,
        "* SEARCH 1\r\nc OK SEARCH completed\r\n"
    );
    assert_eq!(
        c.cmd("d SEARCH CHARSET UTF-8 BODY zanzibar").await,
        "* SEARCH 2\r\nd OK SEARCH completed\r\n"
    );
    assert!(c
        .cmd("e SEARCH CHARSET KOI8-R ALL")
        .await
        .starts_with("e NO [BADCHARSET"));
}

#[tokio::test]
async fn rfc2342_namespace_and_rfc2971_id() {
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    assert_eq!(
        c.cmd("a NAMESPACE").await,
        "* NAMESPACE ((\"\" \"/\")) ((\"Other Users/\" \"/\")) NIL\r\na OK NAMESPACE completed\r\n"
    );
    let r = c.cmd("b ID NIL").await;
    assert!(r.starts_with("* ID (\"name\" \"msgd\""), "{r}");
}

/// The same session script with the client's bytes split at every
/// boundary gives the same responses.
#[tokio::test]
async fn literal_split_at_every_byte_boundary() {
    let h = harness();
    let script = format!(
        "a LOGIN {{{}+}}\r\n{USER} \"{PASS}\"\r\nb APPEND INBOX {{{}+}}\r\n{MSG2}\r\nc NOOP\r\n",
        USER.len(),
        MSG2.len()
    );
    let bytes = script.as_bytes();
    let mut first: Option<String> = None;
    for split in 0..=bytes.len() {
        let mut c = Client::connect(&h).await;
        c.send(&bytes[..split]).await;
        tokio::task::yield_now().await;
        c.send(&bytes[split..]).await;
        let mut out = c.until_tagged("c").await;
        // UIDs differ between runs; compare the shape.
        out = out
            .split("\r\n")
            .map(|l| {
                if l.starts_with("b OK [APPENDUID") {
                    "b OK [APPENDUID]"
                } else {
                    l
                }
            })
            .collect::<Vec<_>>()
            .join("\r\n");
        match &first {
            None => first = Some(out),
            Some(f) => assert_eq!(&out, f, "split at {split}"),
        }
    }
    assert!(first.unwrap().contains("c OK NOOP completed"));
}

const MULTI: &str = "From: Bob <bob@example.net>\r\nTo: alice@example.com\r\nSubject: parts\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"XX\"\r\n\r\npreamble\r\n--XX\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nplain part\r\n--XX\r\nContent-Type: text/html\r\n\r\n<p>html</p>\r\n--XX--\r\n";

#[tokio::test]
async fn rfc3501_6_4_5_envelope_bodystructure_and_sections() {
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    append(&mut c, "INBOX", "", MULTI).await;
    c.cmd("s EXAMINE INBOX").await;
    let r = c.cmd("a FETCH 1 (ENVELOPE)").await;
    assert!(
        r.starts_with("* 1 FETCH (ENVELOPE (NIL \"parts\" ((\"Bob\" NIL \"bob\" \"example.net\"))"),
        "{r}"
    );
    let r = c.cmd("b FETCH 1 BODYSTRUCTURE").await.to_ascii_lowercase();
    assert!(
        r.starts_with("* 1 fetch (bodystructure ((\"text\" \"plain\""),
        "{r}"
    );
    assert!(r.contains("\"mixed\" (\"boundary\" \"xx\")"), "{r}");
    let r = c.cmd("c FETCH 1 (BODY[1] BODY[2]<0.3>)").await;
    assert!(
        r.starts_with("* 1 FETCH (BODY[1] {10}\r\nplain part BODY[2]<0> {3}\r\n<p>)\r\n"),
        "{r}"
    );
    // EXAMINE: read-only, so a non-peek fetch does not set \Seen.
    assert!(!r.contains("\\Seen"), "{r}");
    let r = c.cmd("d FETCH 1 BODY.PEEK[HEADER.FIELDS (SUBJECT)]").await;
    assert!(
        r.starts_with("* 1 FETCH (BODY[HEADER.FIELDS (SUBJECT)] {18}\r\nSubject: parts\r\n\r\n)"),
        "{r}"
    );
    let r = c.cmd("e FETCH 1 FULL").await;
    assert!(r.contains("ENVELOPE (") && r.contains(" BODY ((\""), "{r}");
    assert!(r.ends_with("e OK FETCH completed\r\n"), "{r}");
    let r = c.cmd("f FETCH 1 (RFC822.HEADER RFC822.TEXT)").await;
    assert!(r.contains("RFC822.HEADER {"), "{r}");
    assert!(r.contains("RFC822.TEXT {"), "{r}");
}

#[tokio::test]
async fn rfc7888_literal_cap_is_small_before_login() {
    let h = harness();
    let mut c = Client::connect(&h).await;
    let r = c.cmd("a LOGIN {100000}").await;
    assert_eq!(r, "a NO [TOOBIG] Literal too big\r\n");
}

#[tokio::test]
async fn rfc2177_idle_reports_flags_and_expunge_from_other_session() {
    let h = harness();
    let mut a = Client::logged_in(&h).await;
    append(&mut a, "INBOX", "", MSG1).await;
    append(&mut a, "INBOX", "", MSG2).await;
    a.cmd("s SELECT INBOX").await;
    let mut b = Client::logged_in(&h).await;
    b.cmd("s SELECT INBOX").await;
    a.send(b"i IDLE\r\n").await;
    assert_eq!(a.line().await, "+ idling\r\n");
    b.cmd("x STORE 2 +FLAGS (\\Flagged)").await;
    assert_eq!(
        a.line().await,
        "* 2 FETCH (FLAGS (\\Flagged \\Recent) UID 2)\r\n"
    );
    b.cmd("y STORE 1 +FLAGS.SILENT (\\Deleted)").await;
    assert_eq!(
        a.line().await,
        "* 1 FETCH (FLAGS (\\Deleted \\Recent) UID 1)\r\n"
    );
    b.cmd("z EXPUNGE").await;
    assert_eq!(a.line().await, "* 1 EXPUNGE\r\n");
    assert_eq!(a.line().await, "* 1 EXISTS\r\n");
    assert_eq!(a.line().await, "* 1 RECENT\r\n");
    a.send(b"DONE\r\n").await;
    assert_eq!(a.line().await, "i OK IDLE terminated\r\n");
}

#[tokio::test]
async fn rfc3501_6_3_5_rename_inbox_moves_messages() {
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    append(&mut c, "INBOX", "", MSG1).await;
    assert_eq!(
        c.cmd("a RENAME INBOX Old").await,
        "a OK RENAME completed\r\n"
    );
    let r = c.cmd("b STATUS INBOX (MESSAGES)").await;
    assert!(r.starts_with("* STATUS \"INBOX\" (MESSAGES 0)"), "{r}");
    let r = c.cmd("c STATUS Old (MESSAGES)").await;
    assert!(r.starts_with("* STATUS \"Old\" (MESSAGES 1)"), "{r}");
}

#[tokio::test]
async fn rfc3501_6_3_4_delete_parent_keeps_children() {
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    c.cmd("a CREATE p/q").await;
    assert_eq!(c.cmd("b DELETE p").await, "b OK DELETE completed\r\n");
    let r = c.cmd("c LIST \"\" p*").await;
    assert!(r.contains("\"p/q\""), "{r}");
    let r = c.cmd("d LIST \"\" %").await;
    assert!(
        r.contains("* LIST (\\HasChildren \\Noselect) \"/\" \"p\"\r\n"),
        "{r}"
    );
    assert!(c.cmd("e DELETE p").await.starts_with("e NO"));
}

/// A store serves only its own users: one whose mailHost names another
/// store is refused with UNAVAILABLE and gets no mailboxes here.
#[tokio::test]
async fn login_of_a_user_of_another_store_is_refused() {
    let h = harness_with(|c| c.store.host = "store1.example.com".into());
    embedded::edit(&h.services.config.directory_path(), |d| {
        if let Some(u) = d.users.get_mut("carol@example.com") {
            u.account.mail_host = Some("store2.example.com".into());
        }
        Ok(())
    })
    .unwrap();
    // The embedded directory notices the edit within its recheck interval.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut c = Client::connect(&h).await;
    let r = c.cmd("L LOGIN carol@example.com carol-password").await;
    assert!(tagged(&r).starts_with("L NO [UNAVAILABLE]"), "{r}");
    assert!(h
        .services
        .store()
        .list("carol@example.com")
        .await
        .unwrap()
        .is_empty());
    let r = c.cmd(&format!("M LOGIN {USER} {PASS}")).await;
    assert!(tagged(&r).starts_with("M OK"), "{r}");
}

/// A store behind mmps accepts logins only from `imap.login_networks`.
#[tokio::test]
async fn login_only_from_login_networks() {
    let h = harness_with(|c| c.imap.login_networks = vec!["10.1.0.0/16".parse().unwrap()]);
    let mut c = Client::connect(&h).await;
    let r = c.cmd(&format!("L LOGIN {USER} {PASS}")).await;
    assert!(tagged(&r).starts_with("L NO [UNAVAILABLE]"), "{r}");
    let mut info = ConnInfo::for_test(Protocol::Imap);
    info.via = Some("10.1.2.3:40000".parse().unwrap());
    // Through a balancer the password crosses a network: TLS (from the
    // balancer) is what allows a plaintext LOGIN, not a claimed loopback.
    info.tls_active = true;
    let mut c = Client::connect_info(&h, info).await;
    let r = c.cmd(&format!("L LOGIN {USER} {PASS}")).await;
    assert!(tagged(&r).starts_with("L OK"), "{r}");
}

/// The IMAP framer's events for LOGIN (with a literal password) and
/// AUTHENTICATE data lines do not show the password in `Debug`.
#[test]
fn debug_output_hides_imap_passwords() {
    use super::framer::Framer;
    let mut f = Framer::new(8192, 1 << 20);
    f.push(b"a LOGIN alice {7+}\r\nhunter2\r\nb SELECT INBOX\r\n");
    let e = f.next().unwrap();
    let d = format!("{e:?}");
    assert!(d.contains("LOGIN") && !d.contains("hunter2"), "{d}");
    assert!(format!("{:?}", f.next().unwrap()).contains("SELECT INBOX"));
    f.set_line_mode(true);
    f.push(b"AGFsaWNlAGh1bnRlcjI=\r\n");
    let d = format!("{:?}", f.next().unwrap());
    assert!(!d.contains("AGFsaWNl"), "{d}");
}
