//! The store side of the mmp: find the store's address (a name goes
//! through the process's resolver, `crate::dns`), connect (with a
//! timeout per address, in order), optionally send a PROXY v2 header, TLS
//! (implicit or STARTTLS/STLS), then log in on the user's behalf and learn
//! what to tell the client (IMAP: the store's capabilities; POP3: its +OK
//! line).
//!
//! Failures come back as `BackendError::Unavailable` (logged here, naming
//! the store) or `Refused(code)`: the store said NO/-ERR to the login; its
//! response code is passed on, its text only logged.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

use super::framer::{Frame, Framer};
use super::{Env, LoginMode, Proto};
use crate::config::TlsMode;
use crate::net::Conn;

/// Longest response line the store may send during login (capabilities
/// can be long).
const MAX_RESPONSE: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendError {
    /// Store unknown, unreachable, not speaking the protocol, TLS failed,
    /// timed out: try again later.
    Unavailable,
    /// The store refused the login; the response code to pass on.
    Refused(Option<String>),
}

/// A logged-in connection to the store.
pub struct Backend {
    pub conn: Conn,
    /// For the client: IMAP capabilities after login (may be empty), or the
    /// POP3 "+OK ..." line with its CRLF.
    pub reply: String,
    /// Bytes the store sent after its login answer; the client gets them
    /// first.
    pub rest: Vec<u8>,
    /// The address connected to, for the session log.
    pub addr: SocketAddr,
    /// The name connected for (TLS checked the store's certificate for
    /// it; kept connections are found by address and name).
    pub host: String,
}

/// Who is logging in, for the store.
pub struct LoginRequest<'a> {
    /// Canonical address from the directory.
    pub user: &'a str,
    pub password: &'a str,
    pub client: SocketAddr,
    pub local: SocketAddr,
    pub session_id: u64,
    /// IMAP ID parameters of the client, passed on.
    pub client_id: &'a [(String, Option<String>)],
}

/// Connects to `mail_host`'s store and logs `req.user` in.
pub async fn open(
    env: &Env,
    proto: Proto,
    mail_host: &str,
    req: &LoginRequest<'_>,
) -> Result<Backend, BackendError> {
    let m = &env.config.mmp;
    let (host, port) = env.backend_address(proto, mail_host);
    let addrs: Vec<SocketAddr> = match tokio::time::timeout(
        Duration::from_secs(m.connect_timeout),
        env.resolver.socket_addrs(&host, port),
    )
    .await
    {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => {
            warn!(store = mail_host, host = %host, error = %e, "cannot resolve the mail store's address");
            return Err(BackendError::Unavailable);
        }
        Err(_) => {
            warn!(store = mail_host, host = %host, "resolving the mail store's address timed out");
            return Err(BackendError::Unavailable);
        }
    };
    if addrs.is_empty() {
        warn!(store = mail_host, host = %host, "the mail store's name has no address");
        return Err(BackendError::Unavailable);
    }
    if proto == Proto::Imap && env.reuses_store_connections() {
        if let Some(b) = reuse(env, (mail_host, &host), &addrs, req).await? {
            return Ok(b);
        }
    }
    let mut tcp = None;
    for addr in &addrs {
        match tokio::time::timeout(
            Duration::from_secs(m.connect_timeout),
            TcpStream::connect(addr),
        )
        .await
        {
            Ok(Ok(s)) => {
                tcp = Some((s, *addr));
                break;
            }
            Ok(Err(e)) => {
                warn!(store = mail_host, %addr, error = %e, "cannot connect to the mail store")
            }
            Err(_) => warn!(store = mail_host, %addr, "connecting to the mail store timed out"),
        }
    }
    let Some((tcp, addr)) = tcp else {
        return Err(BackendError::Unavailable);
    };
    let _ = tcp.set_nodelay(true);
    let dialogue = async {
        let mut conn: Conn = Box::new(tcp);
        if m.backend_proxy_protocol {
            let header = crate::proxyproto::encode_v2(req.client, req.local);
            conn.write_all(&header)
                .await
                .map_err(|e| io_failed(mail_host, addr, "sending the PROXY header", &e))?;
        }
        if m.backend_tls == TlsMode::Implicit {
            conn = tls_connect(env, conn, &host, mail_host, addr).await?;
        }
        let mut io = Io::new(conn, proto);
        let result = match proto {
            Proto::Imap => imap_login(env, &mut io, &host, mail_host, addr, req).await,
            Proto::Pop3 => pop3_login(env, &mut io, &host, mail_host, addr, req).await,
            Proto::Sieve => sieve_login(env, &mut io, &host, mail_host, addr, req).await,
        };
        result.map(|reply| (io, reply))
    };
    let (io, reply) = match tokio::time::timeout(Duration::from_secs(m.backend_timeout), dialogue)
        .await
    {
        Ok(r) => r?,
        Err(_) => {
            warn!(store = mail_host, %addr, "the mail store did not complete the login in time");
            return Err(BackendError::Unavailable);
        }
    };
    let (conn, rest) = io.into_parts();
    Ok(Backend {
        conn,
        reply,
        rest,
        addr,
        host,
    })
}

/// A tag no client behind the mmp can have used on a connection that is
/// kept for another (a client's own command with the tag of the mmp's
/// next one could pass for its answer).
fn unguessable_tag() -> String {
    format!("M{:016x}", rand::random::<u64>())
}

/// How long a login on a kept connection may take before a new
/// connection is tried instead.
const KEPT_LOGIN_TIMEOUT: Duration = Duration::from_secs(5);

/// A login on a kept connection to one of `addrs` (`pool`), if there is
/// one: Ok(None) when there is none or it failed on the way (a new
/// connection is made then); the store's NO is the answer.
async fn reuse(
    env: &Env,
    (mail_host, host): (&str, &str),
    addrs: &[SocketAddr],
    req: &LoginRequest<'_>,
) -> Result<Option<Backend>, BackendError> {
    let pool = &env.shared.store_pool;
    let kept = addrs
        .iter()
        .find_map(|a| pool.take(*a, host).map(|k| (k, *a)));
    let Some((kept, addr)) = kept else {
        return Ok(None);
    };
    let mut io = Io::new(kept.conn, Proto::Imap);
    let tag = unguessable_tag();
    let login = imap_authenticate(env, &mut io, (mail_host, addr), req, kept.caps, &tag);
    let limit = KEPT_LOGIN_TIMEOUT.min(Duration::from_secs(env.config.mmp.backend_timeout));
    match tokio::time::timeout(limit, login).await {
        Ok(Ok(reply)) => {
            let (conn, rest) = io.into_parts();
            Ok(Some(Backend {
                conn,
                reply,
                rest,
                addr,
                host: host.to_string(),
            }))
        }
        Ok(Err(BackendError::Refused(code))) => Err(BackendError::Refused(code)),
        Ok(Err(BackendError::Unavailable)) | Err(_) => {
            debug!(store = mail_host, %addr, "a kept store connection failed; connecting anew");
            Ok(None)
        }
    }
}

fn io_failed(store: &str, addr: SocketAddr, what: &str, e: &std::io::Error) -> BackendError {
    warn!(store, %addr, error = %e, "mail store connection failed while {what}");
    BackendError::Unavailable
}

async fn tls_connect(
    env: &Env,
    conn: Conn,
    host: &str,
    store: &str,
    addr: SocketAddr,
) -> Result<Conn, BackendError> {
    let config = env.shared.client_tls(&env.config).map_err(|e| {
        warn!(store, error = %e, "no TLS configuration for the mail stores");
        BackendError::Unavailable
    })?;
    let name = env
        .config
        .mmp
        .backend_server_name
        .as_ref()
        .map_or(host, |n| n.as_str());
    let Ok(name) = ServerName::try_from(name.to_string()) else {
        warn!(
            store,
            name, "not a valid TLS server name for the mail store"
        );
        return Err(BackendError::Unavailable);
    };
    let connector = tokio_rustls::TlsConnector::from(config);
    match connector.connect(name, conn).await {
        Ok(s) => Ok(Box::new(s)),
        Err(e) => {
            warn!(store, %addr, error = %e, "TLS with the mail store failed");
            Err(BackendError::Unavailable)
        }
    }
}

/// Buffered reading of the store's responses during login.
struct Io {
    conn: Conn,
    /// IMAP: responses with literals; POP3: plain lines.
    framer: Framer,
}

impl Io {
    fn new(conn: Conn, _proto: Proto) -> Io {
        Io {
            conn,
            framer: Framer::responses(MAX_RESPONSE),
        }
    }

    /// The next response (IMAP: with literals; a line for POP3).
    async fn response(&mut self, proto: Proto) -> std::io::Result<Vec<u8>> {
        let mut buf = [0u8; 2048];
        loop {
            let got = match proto {
                Proto::Imap => match self.framer.next() {
                    Some(Frame::Message(m)) => Some(Ok(m)),
                    Some(Frame::TooLong { .. }) => Some(Err(())),
                    Some(Frame::Continue) | None => None,
                },
                Proto::Pop3 | Proto::Sieve => self.framer.next_line(),
            };
            match got {
                Some(Ok(m)) => return Ok(m),
                Some(Err(())) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "response too long",
                    ))
                }
                None => {}
            }
            let n = self.conn.read(&mut buf).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.framer.push(buf.get(..n).unwrap_or_default());
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.conn.write_all(bytes).await?;
        self.conn.flush().await
    }

    /// Swaps the stream for a TLS one (after STARTTLS/STLS); buffered
    /// plaintext is dropped.
    async fn starttls(
        &mut self,
        env: &Env,
        host: &str,
        store: &str,
        addr: SocketAddr,
    ) -> Result<(), BackendError> {
        if self.framer.has_buffered() {
            warn!(store, %addr, "the mail store sent data before the TLS handshake");
            return Err(BackendError::Unavailable);
        }
        // A placeholder while the handshake owns the stream.
        let plain: Conn = std::mem::replace(&mut self.conn, Box::new(tokio::io::duplex(1).0));
        self.conn = tls_connect(env, plain, host, store, addr).await?;
        Ok(())
    }

    fn into_parts(mut self) -> (Conn, Vec<u8>) {
        let rest = self.framer.take_rest();
        (self.conn, rest)
    }
}

/// A parsed IMAP response line: tag ("*", "+" or a tag), status and the
/// bracketed response code, if any.
struct ImapResponse<'a> {
    tag: &'a str,
    /// OK, NO, BAD, BYE, PREAUTH, CAPABILITY, ... (uppercase).
    kind: String,
    /// The text after the kind word.
    rest: &'a str,
}

fn parse_response(bytes: &[u8]) -> Option<ImapResponse<'_>> {
    let line = std::str::from_utf8(bytes).ok()?;
    let line = line.trim_end_matches(['\r', '\n']);
    let (tag, rest) = line.split_once(' ').unwrap_or((line, ""));
    let (kind, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    Some(ImapResponse {
        tag,
        kind: kind.to_ascii_uppercase(),
        rest,
    })
}

/// `[CODE ...] text` -> the whole bracket content.
fn response_code(rest: &str) -> Option<&str> {
    let inner = rest.strip_prefix('[')?;
    let end = inner.find(']')?;
    inner.get(..end)
}

/// `[CAPABILITY a b c]` -> "a b c".
fn capability_code(rest: &str) -> Option<String> {
    let code = response_code(rest)?;
    let (name, caps) = code.split_once(' ')?;
    name.eq_ignore_ascii_case("CAPABILITY")
        .then(|| caps.trim().to_string())
}

/// The response code worth passing to the client after a refused login:
/// its first word, if it is a plain atom.
fn passable_code(rest: &str) -> Option<String> {
    let code = response_code(rest)?;
    let word = code.split(' ').next()?;
    (!word.is_empty()
        && word.len() <= 32
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'/'))
    .then(|| word.to_ascii_uppercase())
}

pub(super) fn has_capability(caps: &str, name: &str) -> bool {
    caps.split_ascii_whitespace()
        .any(|c| c.eq_ignore_ascii_case(name))
}

/// Sends a tagged command and reads up to its tagged response. `on_cont`
/// answers continuation requests ("+ ..."): it returns the bytes to send,
/// or None to cancel. Untagged CAPABILITY responses are collected.
async fn imap_command(
    io: &mut Io,
    tag: &str,
    command: &[u8],
    mut on_cont: impl FnMut() -> Option<Vec<u8>>,
    caps: &mut Option<String>,
) -> std::io::Result<(String, String)> {
    io.send(command).await?;
    loop {
        let resp = io.response(Proto::Imap).await?;
        let Some(r) = parse_response(&resp) else {
            continue;
        };
        if r.tag == "+" {
            let data = on_cont().unwrap_or_else(|| b"*\r\n".to_vec());
            io.send(&data).await?;
            continue;
        }
        if r.tag == "*" {
            if r.kind == "CAPABILITY" {
                *caps = Some(r.rest.to_string());
            } else if r.kind == "BYE" {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    format!("store said BYE {}", r.rest),
                ));
            }
            continue;
        }
        if r.tag == tag {
            return Ok((r.kind, r.rest.to_string()));
        }
    }
}

async fn imap_login(
    env: &Env,
    io: &mut Io,
    host: &str,
    store: &str,
    addr: SocketAddr,
    req: &LoginRequest<'_>,
) -> Result<String, BackendError> {
    let failed = |what: &str, e: std::io::Error| io_failed(store, addr, what, &e);
    let greeting = io
        .response(Proto::Imap)
        .await
        .map_err(|e| failed("reading its greeting", e))?;
    let g = parse_response(&greeting).ok_or(BackendError::Unavailable)?;
    if g.tag != "*" || g.kind != "OK" {
        warn!(store, %addr, greeting = %String::from_utf8_lossy(&greeting).trim_end(), "unexpected IMAP greeting from the mail store");
        return Err(BackendError::Unavailable);
    }
    let mut caps = capability_code(g.rest);
    if env.config.mmp.backend_tls == TlsMode::StartTls {
        let (kind, rest) = imap_command(io, "M1", b"M1 STARTTLS\r\n", || None, &mut caps)
            .await
            .map_err(|e| failed("asking for STARTTLS", e))?;
        if kind != "OK" {
            warn!(store, %addr, answer = %format!("{kind} {rest}"), "the mail store refused STARTTLS");
            return Err(BackendError::Unavailable);
        }
        io.starttls(env, host, store, addr).await?;
        // RFC 9051 section 6.2.1: capabilities from before TLS are void.
        caps = None;
    }
    imap_authenticate(env, io, (store, addr), req, caps, "M").await
}

/// ID and login on a connection past its greeting (and TLS): a new one,
/// or one kept from an earlier login (`pool`). `caps`: the store's
/// capabilities before login, if known. `t`: the tags' prefix. Returns
/// the capabilities after login.
async fn imap_authenticate(
    env: &Env,
    io: &mut Io,
    (store, addr): (&str, SocketAddr),
    req: &LoginRequest<'_>,
    mut caps: Option<String>,
    t: &str,
) -> Result<String, BackendError> {
    let m = &env.config.mmp;
    let failed = |what: &str, e: std::io::Error| io_failed(store, addr, what, &e);
    // The ID command (RFC 2971) is not waited for: it goes in the same
    // write as the login (RFC 9051 5.5: the store runs them in order, so
    // it knows the client's address when it judges the login) and its
    // answer is skipped while the login's is awaited. One round trip per
    // session less.
    let mut lead = Vec::new();
    if m.backend_id {
        let mut id = format!("{t}2 ID (");
        let mut params: Vec<(String, String)> = req
            .client_id
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.clone()?)))
            .collect();
        params.extend([
            ("x-originating-ip".into(), req.client.ip().to_string()),
            ("x-originating-port".into(), req.client.port().to_string()),
            ("x-connected-ip".into(), req.local.ip().to_string()),
            ("x-connected-port".into(), req.local.port().to_string()),
            ("x-session-ext-id".into(), format!("mmp-{}", req.session_id)),
        ]);
        if env.reuses_store_connections() {
            // This mmp answers its clients' UNAUTHENTICATE itself: the
            // store may take the mmp's own (`pool`).
            params.push(("x-unauthenticate".into(), "proxy".into()));
        }
        let mut first = true;
        for (k, v) in params {
            let (Some(k), Some(v)) = (super::imap::quoted(&k), super::imap::quoted(&v)) else {
                continue;
            };
            if !first {
                id.push(' ');
            }
            first = false;
            id.push_str(&k);
            id.push(' ');
            id.push_str(&v);
        }
        id.push_str(")\r\n");
        // Whatever the store answers (an old one says BAD), go on.
        lead = id.into_bytes();
    }
    let mut with_id = |cmd: &[u8]| {
        let mut b = std::mem::take(&mut lead);
        b.extend_from_slice(cmd);
        b
    };
    let (kind, rest) = match env.login_mode() {
        LoginMode::Credentials => {
            // LOGIN with quoted strings, or synchronizing literals for
            // 8-bit or CR/LF-bearing values.
            let mut pieces: Vec<Vec<u8>> = Vec::new();
            let mut current = format!("{t}3 LOGIN").into_bytes();
            for value in [req.user, req.password] {
                current.push(b' ');
                match super::imap::quoted(value) {
                    Some(q) => current.extend_from_slice(q.as_bytes()),
                    None => {
                        current.extend_from_slice(format!("{{{}}}\r\n", value.len()).as_bytes());
                        pieces.push(std::mem::take(&mut current));
                        current.extend_from_slice(value.as_bytes());
                    }
                }
            }
            current.extend_from_slice(b"\r\n");
            pieces.push(current);
            let mut pieces = pieces.into_iter();
            let first = with_id(&pieces.next().unwrap_or_default());
            imap_command(io, &format!("{t}3"), &first, || pieces.next(), &mut caps).await
        }
        LoginMode::ProxyAuth => {
            let response = env.proxyauth_plain(req.user).map_err(|e| {
                warn!(store, error = %e, "cannot read mmp.proxy_password_file");
                BackendError::Unavailable
            })?;
            if caps
                .as_deref()
                .is_some_and(|c| has_capability(c, "SASL-IR"))
            {
                let cmd = format!("{t}3 AUTHENTICATE PLAIN {response}\r\n");
                let cmd = with_id(cmd.as_bytes());
                imap_command(io, &format!("{t}3"), &cmd, || None, &mut caps).await
            } else {
                let mut data = Some(format!("{response}\r\n").into_bytes());
                let cmd = with_id(format!("{t}3 AUTHENTICATE PLAIN\r\n").as_bytes());
                imap_command(io, &format!("{t}3"), &cmd, || data.take(), &mut caps).await
            }
        }
    }
    .map_err(|e| failed("logging in", e))?;
    if kind != "OK" {
        info!(store, %addr, user = req.user, answer = %format!("{kind} {rest}"), "the mail store refused the login");
        if kind == "NO" {
            return Err(BackendError::Refused(passable_code(&rest)));
        }
        return Err(BackendError::Unavailable);
    }
    // Capabilities after login: from the OK's code, else ask.
    let mut after = capability_code(&rest);
    if after.is_none() {
        let mut got = None;
        let ask = format!("{t}4 CAPABILITY\r\n");
        let (kind, _) = imap_command(io, &format!("{t}4"), ask.as_bytes(), || None, &mut got)
            .await
            .map_err(|e| failed("asking for capabilities", e))?;
        after = if kind == "OK" { got } else { None };
    }
    Ok(after.unwrap_or_default())
}

/// Makes a logged-in store connection not authenticated (RFC 8437), for
/// `pool`: its capabilities then, or None if anything but a tagged OK
/// with nothing after it came back.
pub async fn unauthenticate(conn: Conn) -> Option<(Conn, Option<String>)> {
    let mut io = Io::new(conn, Proto::Imap);
    let mut caps = None;
    let tag = unguessable_tag();
    let cmd = format!("{tag} UNAUTHENTICATE\r\n");
    let (kind, rest) = imap_command(&mut io, &tag, cmd.as_bytes(), || None, &mut caps)
        .await
        .ok()?;
    if kind != "OK" || io.framer.has_buffered() {
        return None;
    }
    let caps = capability_code(&rest).or(caps);
    Some((io.conn, caps))
}

/// RFC 2449 extended response code of a POP3 reply (`-ERR [AUTH] ...`).
fn pop3_code(line: &str) -> Option<String> {
    let rest = line.split_once(' ')?.1;
    passable_code(rest)
}

/// Sends one POP3 command and reads its one-line answer.
async fn pop3_ask(
    io: &mut Io,
    cmd: &[u8],
    what: &str,
    store: &str,
    addr: SocketAddr,
) -> Result<String, BackendError> {
    io.send(cmd)
        .await
        .map_err(|e| io_failed(store, addr, what, &e))?;
    let answer = io
        .response(Proto::Pop3)
        .await
        .map_err(|e| io_failed(store, addr, what, &e))?;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

async fn pop3_login(
    env: &Env,
    io: &mut Io,
    host: &str,
    store: &str,
    addr: SocketAddr,
    req: &LoginRequest<'_>,
) -> Result<String, BackendError> {
    let m = &env.config.mmp;
    let failed = |what: &str, e: std::io::Error| io_failed(store, addr, what, &e);
    let line = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    let greeting = line(
        io.response(Proto::Pop3)
            .await
            .map_err(|e| failed("reading its greeting", e))?,
    );
    if !greeting.starts_with("+OK") {
        warn!(store, %addr, %greeting, "unexpected POP3 greeting from the mail store");
        return Err(BackendError::Unavailable);
    }
    if m.backend_tls == TlsMode::StartTls {
        let answer = pop3_ask(io, b"STLS\r\n", "asking for STLS", store, addr).await?;
        if !answer.starts_with("+OK") {
            warn!(store, %addr, %answer, "the mail store refused STLS");
            return Err(BackendError::Unavailable);
        }
        io.starttls(env, host, store, addr).await?;
    }
    let bad_char = |s: &str| s.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0));
    let answer = match env.login_mode() {
        LoginMode::Credentials => {
            if bad_char(req.user) || bad_char(req.password) || req.user.contains(' ') {
                return Err(BackendError::Refused(Some("AUTH".into())));
            }
            let user = format!("USER {}\r\n", req.user);
            let a = pop3_ask(io, user.as_bytes(), "logging in", store, addr).await?;
            if !a.starts_with("+OK") {
                a
            } else {
                let pass = format!("PASS {}\r\n", req.password);
                pop3_ask(io, pass.as_bytes(), "logging in", store, addr).await?
            }
        }
        LoginMode::ProxyAuth => {
            let response = env.proxyauth_plain(req.user).map_err(|e| {
                warn!(store, error = %e, "cannot read mmp.proxy_password_file");
                BackendError::Unavailable
            })?;
            let cmd = format!("AUTH PLAIN {response}\r\n");
            pop3_ask(io, cmd.as_bytes(), "logging in", store, addr).await?
        }
    };
    if answer.starts_with("+OK") {
        return Ok(format!("{answer}\r\n"));
    }
    info!(store, %addr, user = req.user, %answer, "the mail store refused the login");
    if answer.starts_with("-ERR") {
        Err(BackendError::Refused(pop3_code(&answer)))
    } else {
        Err(BackendError::Unavailable)
    }
}

/// ManageSieve: reads capability lines up to the one that ends them
/// (RFC 5804 1.7); Ok(()) for OK, the line for NO/BYE.
async fn sieve_capabilities(io: &mut Io) -> std::io::Result<Result<(), String>> {
    // A bounded number of lines (the store sends fewer than 20).
    for _ in 0..64 {
        let line = io.response(Proto::Sieve).await?;
        let line = String::from_utf8_lossy(&line).into_owned();
        match sieve_status(&line) {
            Some("OK") => return Ok(Ok(())),
            Some(_) => return Ok(Err(line)),
            None => {}
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        "too many capability lines",
    ))
}

/// The status word of a ManageSieve response line (OK, NO, BYE), if it
/// is one.
fn sieve_status(line: &str) -> Option<&'static str> {
    let word = line.split([' ', '\r', '\n']).next()?;
    ["OK", "NO", "BYE"]
        .into_iter()
        .find(|w| word.eq_ignore_ascii_case(w))
}

/// The response code of `NO (CODE ...) "text"` worth passing on: its
/// first word, if a plain atom (RFC 5804 1.3).
fn sieve_code(line: &str) -> Option<String> {
    let rest = line.split_once(' ')?.1.strip_prefix('(')?;
    let code = rest.get(..rest.find(')')?)?;
    passable_code(&format!("[{code}]"))
}

async fn sieve_login(
    env: &Env,
    io: &mut Io,
    host: &str,
    store: &str,
    addr: SocketAddr,
    req: &LoginRequest<'_>,
) -> Result<String, BackendError> {
    use base64::Engine;
    let m = &env.config.mmp;
    let failed = |what: &str, e: std::io::Error| io_failed(store, addr, what, &e);
    if let Err(line) = sieve_capabilities(io)
        .await
        .map_err(|e| failed("reading its greeting", e))?
    {
        warn!(store, %addr, greeting = %line, "unexpected ManageSieve greeting from the mail store");
        return Err(BackendError::Unavailable);
    }
    if m.backend_tls == TlsMode::StartTls {
        io.send(b"STARTTLS\r\n")
            .await
            .map_err(|e| failed("asking for STARTTLS", e))?;
        let answer = io
            .response(Proto::Sieve)
            .await
            .map_err(|e| failed("asking for STARTTLS", e))?;
        let answer = String::from_utf8_lossy(&answer).into_owned();
        if sieve_status(&answer) != Some("OK") {
            warn!(store, %addr, %answer, "the mail store refused STARTTLS");
            return Err(BackendError::Unavailable);
        }
        io.starttls(env, host, store, addr).await?;
        // RFC 5804 2.2: the capabilities again, over TLS.
        if let Err(line) = sieve_capabilities(io)
            .await
            .map_err(|e| failed("reading its capabilities", e))?
        {
            warn!(store, %addr, answer = %line, "the mail store failed after STARTTLS");
            return Err(BackendError::Unavailable);
        }
    }
    let response = match env.login_mode() {
        LoginMode::Credentials => base64::engine::general_purpose::STANDARD
            .encode(format!("\0{}\0{}", req.user, req.password)),
        LoginMode::ProxyAuth => env.proxyauth_plain(req.user).map_err(|e| {
            warn!(store, error = %e, "cannot read mmp.proxy_password_file");
            BackendError::Unavailable
        })?,
    };
    // Base64 needs no quoting in a quoted string.
    let cmd = format!("AUTHENTICATE \"PLAIN\" \"{response}\"\r\n");
    io.send(cmd.as_bytes())
        .await
        .map_err(|e| failed("logging in", e))?;
    let answer = io
        .response(Proto::Sieve)
        .await
        .map_err(|e| failed("logging in", e))?;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    match sieve_status(&answer) {
        Some("OK") => Ok(format!("{answer}\r\n")),
        Some("NO") => {
            info!(store, %addr, user = req.user, %answer, "the mail store refused the login");
            Err(BackendError::Refused(sieve_code(&answer)))
        }
        _ => {
            info!(store, %addr, user = req.user, %answer, "the mail store refused the login");
            Err(BackendError::Unavailable)
        }
    }
}

/// Client TLS for the stores: the CA file, or no verification at all when
/// `backend_tls_insecure` is set.
pub fn client_config(config: &crate::config::Config) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let m = &config.mmp;
    let c = crate::tls::store_client_config(
        config,
        m.backend_tls_insecure,
        &m.backend_ca_file,
        "mmp.backend_ca_file is empty: give the stores' CA (or set backend_tls = \"none\")",
    )?;
    Ok(Arc::new(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_codes_are_read_from_store_answers() {
        assert_eq!(
            capability_code("[CAPABILITY IMAP4rev1 IDLE] Logged in").as_deref(),
            Some("IMAP4rev1 IDLE")
        );
        assert_eq!(capability_code("Logged in"), None);
        assert_eq!(
            passable_code("[AUTHENTICATIONFAILED] Authentication failed").as_deref(),
            Some("AUTHENTICATIONFAILED")
        );
        assert_eq!(
            passable_code("[BADCHARSET (UTF-8)] x").as_deref(),
            Some("BADCHARSET")
        );
        assert_eq!(passable_code("no code"), None);
        assert_eq!(
            pop3_code("-ERR [SYS/TEMP] busy").as_deref(),
            Some("SYS/TEMP")
        );
        assert_eq!(pop3_code("-ERR [IN-USE] locked").as_deref(), Some("IN-USE"));
        assert_eq!(pop3_code("-ERR bad"), None);
        assert!(has_capability("IMAP4rev1 sasl-ir", "SASL-IR"));
    }

    #[test]
    fn rfc5804_status_and_codes_of_store_answers() {
        assert_eq!(sieve_status("OK \"Logged in\""), Some("OK"));
        assert_eq!(sieve_status("ok"), Some("OK"));
        assert_eq!(sieve_status("NO (TRYLATER) \"x\""), Some("NO"));
        assert_eq!(sieve_status("\"SIEVE\" \"fileinto\""), None);
        assert_eq!(sieve_status("OKAY"), None);
        assert_eq!(
            sieve_code("NO (TRYLATER) \"Try again later\"").as_deref(),
            Some("TRYLATER")
        );
        assert_eq!(
            sieve_code("NO (QUOTA/MAXSIZE \"x\") \"y\"").as_deref(),
            Some("QUOTA/MAXSIZE")
        );
        assert_eq!(sieve_code("NO \"Authentication failed\""), None);
    }
}
