//! ManageSieve (RFC 5804) on the store: the user's scripts in the store
//! (`store/sieve.rs`), checked with the Sieve compiler at upload.
//!
//! Layers: [`Parser`] frames one command (atoms, quoted strings, literals
//! `{n+}` / `{n}`) from bytes with hard caps, no I/O; the driver reads
//! with deadlines, performs commands and writes replies.
//!
//! Invariants:
//! - A literal larger than `MAX_LITERAL` is never held: its bytes are read
//!   and thrown away (the stream stays in step) and the command answers NO.
//! - AUTHENTICATE PLAIN is offered only over TLS, from loopback, or with
//!   `imap.allow_plaintext_auth` (as IMAP); STARTTLS throws away anything
//!   pipelined after it (RFC 5804 2.2) and re-sends the capabilities.
//! - Passwords and SASL data are never logged.

use std::time::Duration;

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{info, warn};

use crate::config::TlsMode;
use crate::net::{Conn, ConnInfo};
use crate::services::Services;
use crate::store::{SieveLimits, SieveRefusal, Store};

/// Longest command line (without literals).
const MAX_LINE: usize = 8 * 1024;
/// Largest literal accepted (a script plus room).
const MAX_LITERAL: usize = 64 * 1024 + 1024;
/// Most arguments of one command.
const MAX_ARGS: usize = 4;
/// Bad commands before the connection is closed.
const MAX_BAD: u32 = 10;
/// Failed logins before the connection is closed.
const MAX_AUTH_FAILURES: u32 = 3;
/// Sieve extensions offered (the issue's list; RFC 5804 1.7 SIEVE); the
/// mmp's pre-login capabilities repeat them (`mmp::sieve`).
#[cfg(feature = "sieve")]
pub(crate) const EXTENSIONS: &str = "fileinto reject ereject envelope imap4flags vacation copy body variables date relational subaddress mailbox include comparator-i;ascii-numeric";
/// Without the `sieve` feature no script runs: the SIEVE capability is
/// empty (docs/licensing.md).
#[cfg(not(feature = "sieve"))]
pub(crate) const EXTENSIONS: &str = "";

/// One argument of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    Atom(String),
    Str(Vec<u8>),
    /// A literal over `MAX_LITERAL`, discarded.
    TooBig,
}

impl Arg {
    fn text(&self) -> Option<String> {
        match self {
            Arg::Atom(a) => Some(a.clone()),
            Arg::Str(s) => String::from_utf8(s.clone()).ok(),
            Arg::TooBig => None,
        }
    }
}

/// What the parser needs next.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A complete command: its name (upper case) and arguments.
    Command(String, Vec<Arg>),
    /// More bytes are needed.
    Incomplete,
    /// A syntax error; the rest of the line was dropped.
    Bad(&'static str),
}

/// Frames commands out of a byte buffer.
pub struct Parser {
    buf: Vec<u8>,
    /// Bytes of an oversized literal still to throw away.
    skip: usize,
    /// The command under construction.
    words: Vec<Arg>,
    /// Largest literal kept (larger ones become `Arg::TooBig`).
    max_literal: usize,
}

impl Default for Parser {
    fn default() -> Parser {
        Parser::with_max_literal(MAX_LITERAL)
    }
}

impl Parser {
    /// A parser keeping literals of at most `max` bytes (the mmp's, before
    /// login, holds only SASL responses).
    pub fn with_max_literal(max: usize) -> Parser {
        Parser {
            buf: Vec::new(),
            skip: 0,
            words: Vec::new(),
            max_literal: max.min(MAX_LITERAL),
        }
    }

    /// The unparsed input (after the last command), taken out.
    pub fn take_rest(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    pub fn feed(&mut self, data: &[u8]) {
        let mut data = data;
        if self.skip > 0 {
            let n = self.skip.min(data.len());
            self.skip -= n;
            data = &data[n..];
        }
        self.buf.extend_from_slice(data);
    }

    /// Bytes buffered (bounded by the caller's reads and `MAX_LINE`).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    pub fn clear(&mut self) {
        self.buf.clear();
        self.words.clear();
        self.skip = 0;
    }

    pub fn next_command(&mut self) -> Parsed {
        loop {
            if self.skip > 0 {
                let n = self.skip.min(self.buf.len());
                self.buf.drain(..n);
                self.skip -= n;
                if self.skip > 0 {
                    return Parsed::Incomplete;
                }
            }
            let Some(nl) = self.buf.iter().position(|&b| b == b'\n') else {
                if self.buf.len() > MAX_LINE {
                    self.buf.clear();
                    self.words.clear();
                    return Parsed::Bad("line too long");
                }
                return Parsed::Incomplete;
            };
            let line: Vec<u8> = self.buf.drain(..=nl).collect();
            let line = line.strip_suffix(b"\n").unwrap_or(&line);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.len() > MAX_LINE {
                self.words.clear();
                return Parsed::Bad("line too long");
            }
            // Words of this line start here (earlier lines of the command
            // ended in literals).
            let mark = self.words.len();
            match tokens(line, &mut self.words) {
                Err(why) => {
                    self.words.clear();
                    return Parsed::Bad(why);
                }
                Ok(None) => {}
                Ok(Some(n)) => {
                    // A literal of n bytes follows, then the line goes on.
                    if n > self.max_literal {
                        self.words.push(Arg::TooBig);
                        self.skip = n;
                        continue;
                    }
                    if self.buf.len() < n {
                        // Put the line back; wait for the whole literal.
                        let mut back = line.to_vec();
                        back.extend_from_slice(b"\r\n");
                        back.extend_from_slice(&self.buf);
                        self.buf = back;
                        // Undo this line's words (the earlier lines'
                        // stay: their bytes are gone from `buf`).
                        self.words.truncate(mark);
                        return Parsed::Incomplete;
                    }
                    let lit: Vec<u8> = self.buf.drain(..n).collect();
                    self.words.push(Arg::Str(lit));
                    continue;
                }
            }
            let mut words = std::mem::take(&mut self.words);
            if words.is_empty() {
                return Parsed::Bad("empty command");
            }
            // A line that starts with a string is a SASL continuation:
            // no command name.
            let name = match words.remove(0) {
                Arg::Atom(a) => a.to_ascii_uppercase(),
                s => {
                    words.insert(0, s);
                    String::new()
                }
            };
            if words.len() > MAX_ARGS {
                return Parsed::Bad("too many arguments");
            }
            return Parsed::Command(name, words);
        }
    }
}

/// Splits one line into words; `Some(n)`: it ends with a literal of n bytes.
fn tokens(line: &[u8], out: &mut Vec<Arg>) -> Result<Option<usize>, &'static str> {
    let mut i = 0;
    while i < line.len() {
        match line[i] {
            b' ' => i += 1,
            b'"' => {
                let mut s = Vec::new();
                i += 1;
                loop {
                    match line.get(i) {
                        None => return Err("unterminated string"),
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(b'\\') => {
                            match line.get(i + 1) {
                                Some(&c @ (b'"' | b'\\')) => s.push(c),
                                _ => return Err("bad escape"),
                            }
                            i += 2;
                        }
                        Some(&c) => {
                            s.push(c);
                            i += 1;
                        }
                    }
                }
                out.push(Arg::Str(s));
            }
            b'{' => {
                let end = line[i..]
                    .iter()
                    .position(|&b| b == b'}')
                    .ok_or("bad literal")?;
                if i + end + 1 != line.len() {
                    return Err("literal must end the line");
                }
                let inner = &line[i + 1..i + end];
                let inner = inner.strip_suffix(b"+").unwrap_or(inner);
                let n: usize = std::str::from_utf8(inner)
                    .ok()
                    .filter(|s| {
                        !s.is_empty() && s.len() <= 10 && s.bytes().all(|b| b.is_ascii_digit())
                    })
                    .and_then(|s| s.parse().ok())
                    .ok_or("bad literal size")?;
                return Ok(Some(n));
            }
            _ => {
                let start = i;
                while i < line.len() && line[i] != b' ' {
                    i += 1;
                }
                let atom = std::str::from_utf8(&line[start..i]).map_err(|_| "bad atom")?;
                out.push(Arg::Atom(atom.to_string()));
            }
        }
        if out.len() > MAX_ARGS + 1 {
            return Err("too many arguments");
        }
    }
    Ok(None)
}

/// A quoted string (RFC 5804 4), or a literal when it cannot be quoted.
fn quoted(s: &str) -> String {
    if s.contains(['\r', '\n']) || s.len() > 1024 {
        return format!("{{{}}}\r\n{s}", s.len());
    }
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Serves one ManageSieve connection.
pub async fn serve(conn: Conn, info: ConnInfo, services: Services) {
    let mut s = Session {
        conn: Some(conn),
        parser: Parser::default(),
        tls_active: info.tls_active,
        user: None,
        bad: 0,
        failures: 0,
        services,
        info,
    };
    let end = s.run().await;
    info!(
        user = s.user.as_deref().unwrap_or("-"),
        end, "managesieve session closed"
    );
}

struct Session {
    conn: Option<Conn>,
    parser: Parser,
    tls_active: bool,
    /// The logged-in user.
    user: Option<String>,
    bad: u32,
    failures: u32,
    services: Services,
    info: ConnInfo,
}

enum Step {
    Go,
    End(&'static str),
}

impl Session {
    fn store(&self) -> Option<&Store> {
        self.services.store.as_ref()
    }

    fn plaintext_ok(&self) -> bool {
        self.tls_active || self.info.is_loopback() || self.services.config.imap.allow_plaintext_auth
    }

    fn capabilities(&self) -> String {
        let mut c = String::new();
        c.push_str("\"IMPLEMENTATION\" \"msgd\"\r\n");
        let sasl = if self.user.is_none() && self.plaintext_ok() {
            "PLAIN"
        } else {
            ""
        };
        c.push_str(&format!("\"SASL\" \"{sasl}\"\r\n"));
        c.push_str(&format!("\"SIEVE\" \"{EXTENSIONS}\"\r\n"));
        if !self.tls_active && self.info.tls_mode == TlsMode::StartTls && self.user.is_none() {
            c.push_str("\"STARTTLS\"\r\n");
        }
        c.push_str(&format!(
            "\"MAXREDIRECTS\" \"{}\"\r\n",
            super::MAX_REDIRECTS
        ));
        if let Some(u) = &self.user {
            c.push_str(&format!("\"OWNER\" {}\r\n", quoted(u)));
        }
        c.push_str("\"VERSION\" \"1.0\"\r\n");
        c.push_str("OK \"ManageSieve ready\"\r\n");
        c
    }

    async fn write(&mut self, s: &str) -> std::io::Result<()> {
        let Some(c) = self.conn.as_mut() else {
            return Err(std::io::ErrorKind::NotConnected.into());
        };
        tokio::time::timeout(Duration::from_secs(60), async {
            c.write_all(s.as_bytes()).await?;
            c.flush().await
        })
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
    }

    /// The next command, reading with the session's deadline.
    async fn command(&mut self) -> Result<Parsed, &'static str> {
        let timeout = if self.user.is_some() {
            Duration::from_secs(self.services.config.imap.idle_timeout.max(60))
        } else {
            Duration::from_secs(self.services.config.imap.preauth_timeout.max(10))
        };
        loop {
            match self.parser.next_command() {
                Parsed::Incomplete => {}
                p => return Ok(p),
            }
            let mut chunk = [0u8; 16 * 1024];
            let Some(c) = self.conn.as_mut() else {
                return Err("io");
            };
            let shutdown = self.services.shutdown.clone();
            let n = tokio::select! {
                r = tokio::time::timeout(timeout, c.read(&mut chunk)) => match r {
                    Err(_) => return Err("timeout"),
                    Ok(Err(_)) | Ok(Ok(0)) => return Err("closed"),
                    Ok(Ok(n)) => n,
                },
                _ = shutdown.cancelled() => return Err("shutdown"),
            };
            self.parser.feed(&chunk[..n]);
            if self.parser.buffered() > MAX_LINE + MAX_LITERAL + 16 * 1024 {
                return Err("input too large");
            }
        }
    }

    async fn run(&mut self) -> &'static str {
        let caps = self.capabilities();
        if self.write(&caps).await.is_err() {
            return "io";
        }
        loop {
            let p = match self.command().await {
                Ok(p) => p,
                Err(why) => {
                    if why == "timeout" || why == "shutdown" {
                        let _ = self.write("BYE \"Disconnecting\"\r\n").await;
                    }
                    return why;
                }
            };
            let step = match p {
                Parsed::Incomplete => continue,
                Parsed::Bad(why) => {
                    self.bad += 1;
                    let r = format!("NO {}\r\n", quoted(why));
                    if self.write(&r).await.is_err() {
                        return "io";
                    }
                    if self.bad >= MAX_BAD {
                        let _ = self.write("BYE \"Too many errors\"\r\n").await;
                        return "errors";
                    }
                    continue;
                }
                Parsed::Command(name, args) => self.execute(&name, args).await,
            };
            match step {
                Ok(Step::Go) => {}
                Ok(Step::End(why)) => return why,
                Err(_) => return "io",
            }
        }
    }

    async fn execute(&mut self, name: &str, args: Vec<Arg>) -> std::io::Result<Step> {
        let texts: Vec<Option<String>> = args.iter().map(Arg::text).collect();
        let arg = |i: usize| texts.get(i).cloned().flatten();
        match (name, self.user.clone()) {
            ("CAPABILITY", _) => {
                let c = self.capabilities();
                self.write(&c).await?;
            }
            // RFC 5804 2.13: a tag comes back in the TAG response code.
            ("NOOP", _) => {
                let r = match arg(0) {
                    Some(tag) => format!("OK (TAG {}) \"Done\"\r\n", quoted(&tag)),
                    None => "OK \"Done\"\r\n".to_string(),
                };
                self.write(&r).await?;
            }
            ("LOGOUT", _) => {
                self.write("OK \"Bye\"\r\n").await?;
                return Ok(Step::End("logout"));
            }
            ("STARTTLS", None) if !self.tls_active && self.info.tls_mode == TlsMode::StartTls => {
                self.write("OK \"Begin TLS negotiation\"\r\n").await?;
                self.parser.clear();
                let Some(conn) = self.conn.take() else {
                    return Ok(Step::End("io"));
                };
                match self.services.tls.accept(conn).await {
                    Ok(tls) => {
                        self.conn = Some(tls);
                        self.tls_active = true;
                        let c = self.capabilities();
                        self.write(&c).await?;
                    }
                    Err(e) => {
                        info!(error = %e, "STARTTLS handshake failed");
                        return Ok(Step::End("tls"));
                    }
                }
            }
            ("AUTHENTICATE", None) => return self.authenticate(&args).await,
            (_, None) => {
                self.bad += 1;
                self.write("NO \"Authenticate first\"\r\n").await?;
            }
            (_, Some(user)) => {
                let Some(store) = self.store().cloned() else {
                    self.write("NO (TRYLATER) \"No store\"\r\n").await?;
                    return Ok(Step::Go);
                };
                let reply = match script_command(&store, &user, name, &args, &arg).await {
                    Ok(r) => r,
                    Err(e) => {
                        warn!(user, error = %e, "managesieve: store error");
                        "NO (TRYLATER) \"Server error, try again later\"\r\n".to_string()
                    }
                };
                self.write(&reply).await?;
            }
        }
        Ok(Step::Go)
    }

    async fn authenticate(&mut self, args: &[Arg]) -> std::io::Result<Step> {
        let mech = args.first().and_then(Arg::text).unwrap_or_default();
        if !mech.eq_ignore_ascii_case("PLAIN") {
            self.write("NO \"Unsupported mechanism\"\r\n").await?;
            return Ok(Step::Go);
        }
        if !self.plaintext_ok() {
            self.write("NO (ENCRYPT-NEEDED) \"Use STARTTLS first\"\r\n")
                .await?;
            return Ok(Step::Go);
        }
        let response = match args.get(1) {
            Some(a) => a.text(),
            None => {
                self.write("\"\"\r\n").await?;
                match self.command_line().await {
                    Some(r) => Some(r),
                    None => return Ok(Step::End("closed")),
                }
            }
        };
        let Some(response) = response else {
            self.write("NO \"Bad SASL response\"\r\n").await?;
            return Ok(Step::Go);
        };
        if response == "*" {
            self.write("NO \"Authentication cancelled\"\r\n").await?;
            return Ok(Step::Go);
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(response.trim())
            .ok();
        let Some((authz, authc, pass)) = raw.as_deref().and_then(crate::login::parse_plain) else {
            self.write("NO \"Bad SASL response\"\r\n").await?;
            return Ok(Step::Go);
        };
        let config = self.services.config.clone();
        let accounts =
            crate::login::Accounts::of(self.services.directory.clone(), &config.server.domain);
        let rules = crate::login::Rules {
            protocol: crate::login::Protocol::ManageSieve,
            config: &config,
            login_networks: &config.imap.login_networks,
            proxy_users: &config.imap.proxy_users,
            limiter: &self.services.logins,
            accounts: &accounts,
            serves: crate::login::Serves::Store(self.services.store.as_ref()),
        };
        let creds = crate::login::Credentials::plain(&authz, &authc, &pass);
        match crate::login::login(&rules, &self.info, creds).await {
            crate::login::Outcome::Ok(l) => {
                info!(user = %l.account.address, "managesieve login");
                self.user = Some(l.account.address);
                self.write("OK \"Logged in\"\r\n").await?;
            }
            crate::login::Outcome::Unavailable(_) => {
                self.write("NO (TRYLATER) \"Try again later\"\r\n").await?;
            }
            _ => {
                self.failures += 1;
                self.write("NO \"Authentication failed\"\r\n").await?;
                if self.failures >= MAX_AUTH_FAILURES {
                    self.write("BYE \"Too many failures\"\r\n").await?;
                    return Ok(Step::End("auth failures"));
                }
            }
        }
        Ok(Step::Go)
    }

    /// The SASL continuation: one string on its own line.
    async fn command_line(&mut self) -> Option<String> {
        // Framed as a command without a name: a quoted string or a literal.
        match self.command().await.ok()? {
            Parsed::Command(name, args) if name.is_empty() => args.first().and_then(Arg::text),
            Parsed::Command(name, _) => Some(name),
            _ => Some(String::new()),
        }
    }
}

/// The commands on a logged-in user's scripts; the reply text.
async fn script_command(
    store: &Store,
    user: &str,
    name: &str,
    args: &[Arg],
    arg: &(dyn Fn(usize) -> Option<String> + Sync),
) -> crate::store::Result<String> {
    let limits = SieveLimits::default();
    let refusal = |r: SieveRefusal| -> String {
        match r {
            SieveRefusal::NoSuchScript => "NO (NONEXISTENT) \"No such script\"\r\n".into(),
            SieveRefusal::Exists => {
                "NO (ALREADYEXISTS) \"A script of that name exists\"\r\n".into()
            }
            SieveRefusal::Active => {
                "NO (ACTIVE) \"The active script cannot be deleted\"\r\n".into()
            }
            SieveRefusal::TooMany => "NO (QUOTA/MAXSCRIPTS) \"Too many scripts\"\r\n".into(),
            SieveRefusal::TooBig => "NO (QUOTA/MAXSIZE) \"Script too large\"\r\n".into(),
            SieveRefusal::BadName => "NO \"Bad script name\"\r\n".into(),
        }
    };
    let too_big = args.contains(&Arg::TooBig);
    if too_big {
        return Ok("NO (QUOTA/MAXSIZE) \"Script too large\"\r\n".into());
    }
    let raw = |i: usize| match args.get(i) {
        Some(Arg::Str(s)) => Some(s.clone()),
        Some(Arg::Atom(a)) => Some(a.clone().into_bytes()),
        _ => None,
    };
    let bad = || Ok("NO \"Bad arguments\"\r\n".to_string());
    let done = |r: std::result::Result<(), SieveRefusal>| match r {
        Ok(()) => "OK \"Done\"\r\n".to_string(),
        Err(r) => refusal(r),
    };
    Ok(match name {
        "LISTSCRIPTS" => {
            let mut out = String::new();
            for (n, active) in store.sieve_list(user).await? {
                out.push_str(&quoted(&n));
                if active {
                    out.push_str(" ACTIVE");
                }
                out.push_str("\r\n");
            }
            out.push_str("OK \"Listscripts completed\"\r\n");
            out
        }
        "GETSCRIPT" => {
            let Some(n) = arg(0) else { return bad() };
            match store.sieve_get(user, &n).await? {
                Some(t) => {
                    let t = String::from_utf8_lossy(&t);
                    format!("{{{}}}\r\n{t}\r\nOK \"Getscript completed\"\r\n", t.len())
                }
                None => refusal(SieveRefusal::NoSuchScript),
            }
        }
        "PUTSCRIPT" | "CHECKSCRIPT" => {
            let (n, script) = if name == "PUTSCRIPT" {
                match (arg(0), raw(1)) {
                    (Some(n), Some(s)) => (Some(n), s),
                    _ => return bad(),
                }
            } else {
                match raw(0) {
                    Some(s) => (None, s),
                    None => return bad(),
                }
            };
            if script.len() > limits.max_size {
                return Ok(refusal(SieveRefusal::TooBig));
            }
            if let Err(e) = super::check(&script) {
                return Ok(format!("NO {}\r\n", quoted(&e)));
            }
            match n {
                Some(n) => done(store.sieve_put(user, &n, script, limits).await?),
                None => "OK \"Script is valid\"\r\n".into(),
            }
        }
        "SETACTIVE" => {
            let Some(n) = arg(0) else { return bad() };
            let n = (!n.is_empty()).then_some(n);
            done(store.sieve_set_active(user, n.as_deref()).await?)
        }
        "DELETESCRIPT" => {
            let Some(n) = arg(0) else { return bad() };
            done(store.sieve_delete(user, &n).await?)
        }
        "RENAMESCRIPT" => {
            let (Some(a), Some(b)) = (arg(0), arg(1)) else {
                return bad();
            };
            done(store.sieve_rename(user, &a, &b).await?)
        }
        "HAVESPACE" => {
            let (Some(n), Some(size)) = (arg(0), arg(1)) else {
                return bad();
            };
            let Ok(size) = size.parse::<u64>() else {
                return bad();
            };
            let list = store.sieve_list(user).await?;
            if size > limits.max_size as u64 {
                refusal(SieveRefusal::TooBig)
            } else if !list.iter().any(|(x, _)| *x == n) && list.len() >= limits.max_scripts {
                refusal(SieveRefusal::TooMany)
            } else {
                "OK \"Putscript would succeed\"\r\n".into()
            }
        }
        _ => "NO \"Unknown command\"\r\n".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &[u8]) -> Vec<Parsed> {
        let mut p = Parser::default();
        p.feed(input);
        let mut out = Vec::new();
        loop {
            match p.next_command() {
                Parsed::Incomplete => return out,
                x => out.push(x),
            }
        }
    }

    #[test]
    fn rfc5804_4_strings_and_literals_split_at_every_byte() {
        let input = b"PUTSCRIPT \"my \\\"s\\\"\" {9+}\r\nkeep;\r\n\r\n\r\nLISTSCRIPTS\r\n";
        let want = vec![
            Parsed::Command(
                "PUTSCRIPT".into(),
                vec![
                    Arg::Str(b"my \"s\"".to_vec()),
                    Arg::Str(b"keep;\r\n\r\n".to_vec()),
                ],
            ),
            Parsed::Command("LISTSCRIPTS".into(), vec![]),
        ];
        assert_eq!(all(input), want);
        assert_same_at_every_cut(input, &want);
    }

    /// `input` fed in two parts, cut at every byte, parses to `want`.
    fn assert_same_at_every_cut(input: &[u8], want: &[Parsed]) {
        for cut in 0..input.len() {
            let mut p = Parser::default();
            let mut got = Vec::new();
            for part in [&input[..cut], &input[cut..]] {
                p.feed(part);
                loop {
                    match p.next_command() {
                        Parsed::Incomplete => break,
                        x => got.push(x),
                    }
                }
            }
            assert_eq!(got, want, "cut at {cut}");
        }
    }

    #[test]
    fn two_literals_in_one_command_split_at_every_byte() {
        let input = b"RENAMESCRIPT {1+}\r\na {2+}\r\nbc\r\nNOOP\r\n";
        let want = vec![
            Parsed::Command(
                "RENAMESCRIPT".into(),
                vec![Arg::Str(b"a".to_vec()), Arg::Str(b"bc".to_vec())],
            ),
            Parsed::Command("NOOP".into(), vec![]),
        ];
        assert_same_at_every_cut(input, &want);
    }

    #[test]
    fn an_oversized_literal_is_discarded_and_the_stream_stays_in_step() {
        let mut input = format!("PUTSCRIPT \"a\" {{{}+}}\r\n", MAX_LITERAL + 10).into_bytes();
        input.extend(std::iter::repeat_n(b'x', MAX_LITERAL + 10));
        input.extend_from_slice(b"\r\nNOOP\r\n");
        let got = all(&input);
        assert_eq!(
            got,
            vec![
                Parsed::Command(
                    "PUTSCRIPT".into(),
                    vec![Arg::Str(b"a".to_vec()), Arg::TooBig]
                ),
                Parsed::Command("NOOP".into(), vec![]),
            ]
        );
    }

    #[test]
    fn bad_lines_are_refused() {
        assert_eq!(
            all(b"\"unterminated\r\n"),
            vec![Parsed::Bad("unterminated string")]
        );
        assert_eq!(all(b"X {abc}\r\n"), vec![Parsed::Bad("bad literal size")]);
        let long = vec![b'a'; MAX_LINE + 10];
        assert_eq!(all(&long), vec![Parsed::Bad("line too long")]);
    }
}
