//! The POP3 AUTHORIZATION state (RFC 1939 section 4), shared by the store's
//! POP3 session (`super::session`) and the mmp's POP3 front
//! (`crate::mmp`): USER/PASS (RFC 1939 7), AUTH PLAIN (RFC 5034, with the
//! pre-RFC 5034 bare AUTH listing), CAPA (RFC 2449), STLS (RFC 2595) and
//! QUIT, with RFC 2449 / RFC 3206 response codes.
//!
//! A synchronous state machine over client lines ([`Input`] from
//! `codec::LineReader`): it yields [`Step`]s, among them "authenticate
//! these credentials" and "start TLS". What a successful login leads to is
//! the caller's: the store opens the maildrop and answers with its size,
//! the mmp logs in at the user's store and passes the store's "+OK" on.
//! Either way the caller reports back with [`Authorization::logged_in`] or
//! [`Authorization::refused`], or [`Authorization::tls_started`].
//!
//! Invariants and limits:
//! - One command at a time: after `Step::Authenticate` or `Step::StartTls`
//!   lines are ignored until the caller reports back (callers do not feed
//!   them).
//! - USER, PASS and AUTH PLAIN only with TLS or where plaintext is allowed
//!   (a loopback peer or `pop3.allow_plaintext_auth`): otherwise
//!   `-ERR [AUTH] TLS required`, and CAPA lists neither USER nor SASL.
//! - `max_bad_commands` refused commands (in any state: the store's
//!   TRANSACTION counts through [`Authorization::bad`]) and
//!   `max_auth_failures` failed logins end the session; a wrong password
//!   waits `auth_delay`, doubling per failure, capped at 8 s. The
//!   process-wide login limiter (`crate::loginlimit`, through
//!   `crate::login`) is the callers'.
//! - An authorization identity other than the login (AUTH PLAIN) only for
//!   the configured `proxy_users`.
//! - Passwords leave this module only inside `Step::Authenticate`, whose
//!   Debug output hides them.

use std::fmt;
use std::time::Duration;

use super::codec::Input;

/// Cap of the per-connection delay after a failed authentication.
const AUTH_DELAY_MAX: Duration = Duration::from_secs(8);

/// What the AUTHORIZATION state needs to know about its connection and
/// its limits: the store's POP3 session takes exactly this
/// (`pop3::SessionConfig`), the mmp's adds its line limit.
#[derive(Debug, Clone)]
pub struct Connection {
    /// STLS can be offered (a STARTTLS listener, TLS not active yet).
    pub stls_available: bool,
    /// TLS is active (implicit, or after STLS).
    pub tls_active: bool,
    /// USER/PASS and AUTH PLAIN allowed before TLS.
    pub plaintext_without_tls: bool,
    pub max_bad_commands: u32,
    pub max_auth_failures: u32,
    /// First delay after a wrong password (doubles each time, capped).
    pub auth_delay: Duration,
    /// Authentication identities that may log in as another user with AUTH
    /// PLAIN's authorization identity (compared case-insensitively).
    pub proxy_users: Vec<String>,
}

/// The AUTHORIZATION state's configuration: the connection, and who is
/// answering.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub connection: Connection,
    /// Who answers, for QUIT's reply: "server" (the store), "proxy" (mmp).
    pub role: &'static str,
    /// CAPA lines before the login ones (the store's `TOP`, `UIDL`).
    pub capa_extra: &'static [&'static str],
    /// CAPA's IMPLEMENTATION.
    pub implementation: &'static str,
}

/// An output of the AUTHORIZATION state, in order.
#[derive(Clone, PartialEq, Eq)]
pub enum Step {
    /// Bytes for the client, CRLF included.
    Reply(String),
    /// Wait before going on (after a wrong password).
    Delay(Duration),
    /// Check these credentials (`authzid`: then log in as that user, for a
    /// proxy user); report with `logged_in` or `refused`.
    Authenticate {
        login: String,
        password: String,
        authzid: Option<String>,
    },
    /// Flush, drop buffered input (RFC 2595 4), TLS handshake, then
    /// `tls_started` (or close).
    StartTls,
    /// Flush and close.
    Close,
}

impl fmt::Debug for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Reply(s) => f.debug_tuple("Reply").field(s).finish(),
            Step::Delay(d) => f.debug_tuple("Delay").field(d).finish(),
            Step::Authenticate { login, authzid, .. } => f
                .debug_struct("Authenticate")
                .field("login", login)
                .field("password", &"<hidden>")
                .field("authzid", authzid)
                .finish(),
            Step::StartTls => f.write_str("StartTls"),
            Step::Close => f.write_str("Close"),
        }
    }
}

/// Why a login did not succeed, as the caller saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Wrong login or password: counts, waits.
    Failed,
    /// Right password, disabled account: counts.
    Inactive,
    /// Too many failed logins lately (the login limiter): counts.
    RateLimited,
    DirectoryUnavailable,
    /// Something behind the login failed: `-ERR` with this text (response
    /// code included); does not count as a failed login.
    Unavailable(String),
}

#[derive(Debug)]
enum State {
    /// Reading commands; the name given by USER, waiting for PASS.
    Ready {
        user: Option<String>,
    },
    /// AUTH PLAIN sent "+ " and waits for the client's response line.
    SaslPlain,
    /// Waiting for the caller (`logged_in` / `refused` / `tls_started`).
    Pending,
    /// Logged in: AUTHORIZATION is over.
    Done,
    Closed,
}

pub struct Authorization {
    config: AuthConfig,
    state: State,
    bad_commands: u32,
    auth_failures: u32,
}

impl Authorization {
    pub fn new(config: AuthConfig) -> Authorization {
        Authorization {
            config,
            state: State::Ready { user: None },
            bad_commands: 0,
            auth_failures: 0,
        }
    }

    pub fn tls_active(&self) -> bool {
        self.config.connection.tls_active
    }

    /// The session is to be closed (QUIT, too many bad commands or
    /// failures).
    pub fn closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// One line (or over-long line) from the client in AUTHORIZATION.
    pub fn input(&mut self, input: Input) -> Vec<Step> {
        let line = match input {
            Input::Line(l) => l,
            Input::TooLong => {
                if matches!(self.state, State::SaslPlain) {
                    self.state = State::Ready { user: None };
                }
                return self.bad("line too long");
            }
        };
        // Passwords and SASL data may be any bytes; the directory compares
        // strings, so a non-UTF-8 password simply does not match.
        let line = String::from_utf8_lossy(&line).into_owned();
        match std::mem::replace(&mut self.state, State::Pending) {
            State::Ready { user } => self.command(user, &line),
            State::SaslPlain => {
                self.state = State::Ready { user: None };
                self.sasl_plain_response(line.trim())
            }
            s => {
                // Callers never feed lines while waiting or after the end.
                self.state = s;
                Vec::new()
            }
        }
    }

    fn command(&mut self, user: Option<String>, line: &str) -> Vec<Step> {
        let (cmd, args) = split_command(line);
        // Most commands leave a pending USER name in place.
        self.state = State::Ready { user: user.clone() };
        match cmd.as_str() {
            "CAPA" => vec![Step::Reply(self.capabilities(true))],
            "QUIT" => {
                self.state = State::Closed;
                vec![
                    ok(&format!("msgd POP3 {} signing off", self.config.role)),
                    Step::Close,
                ]
            }
            "STLS" => {
                if self.config.connection.tls_active {
                    self.bad("command not permitted when TLS active")
                } else if !self.config.connection.stls_available {
                    self.bad("STLS not available")
                } else {
                    self.state = State::Pending;
                    vec![ok("Begin TLS negotiation"), Step::StartTls]
                }
            }
            "USER" => {
                if !self.plaintext_allowed() {
                    return self.bad("[AUTH] TLS required");
                }
                let name = args.trim();
                if name.is_empty() {
                    return self.bad("USER needs a name");
                }
                self.state = State::Ready {
                    user: Some(name.to_string()),
                };
                vec![ok("send PASS")]
            }
            "PASS" => {
                if !self.plaintext_allowed() {
                    return self.bad("[AUTH] TLS required");
                }
                let Some(login) = user else {
                    return self.bad("USER first");
                };
                // RFC 1939 7: the password may contain spaces; the rest of
                // the line exactly.
                self.state = State::Pending;
                vec![Step::Authenticate {
                    login,
                    password: args.to_string(),
                    authzid: None,
                }]
            }
            "AUTH" => {
                self.state = State::Ready { user: None };
                self.auth(args)
            }
            "STAT" | "LIST" | "RETR" | "DELE" | "RSET" | "TOP" | "UIDL" | "NOOP" => {
                self.bad("command not valid in this state")
            }
            _ => self.bad("unknown command"),
        }
    }

    /// RFC 5034 AUTH (PLAIN only) and the old bare AUTH listing.
    fn auth(&mut self, args: &str) -> Vec<Step> {
        let mut parts = args.split_ascii_whitespace();
        let Some(mech) = parts.next() else {
            // Pre-RFC 5034 clients send a bare AUTH to list mechanisms.
            return vec![Step::Reply(if self.plaintext_allowed() {
                "+OK\r\nPLAIN\r\n.\r\n".into()
            } else {
                "+OK\r\n.\r\n".into()
            })];
        };
        if !mech.eq_ignore_ascii_case("PLAIN") {
            return self.bad("unsupported authentication mechanism");
        }
        if !self.plaintext_allowed() {
            return self.bad("[AUTH] TLS required");
        }
        match parts.next() {
            None => {
                self.state = State::SaslPlain;
                vec![Step::Reply("+ \r\n".into())]
            }
            Some(initial) => self.sasl_plain_response(initial),
        }
    }

    /// The client's PLAIN response (base64 of authzid NUL authcid NUL
    /// password, RFC 4616), from the AUTH line or the continuation line.
    fn sasl_plain_response(&mut self, b64: &str) -> Vec<Step> {
        use base64::Engine;
        if b64 == "*" {
            return vec![err("authentication cancelled")];
        }
        // RFC 5034 section 4: "=" is an empty initial response.
        let raw = if b64 == "=" {
            Vec::new()
        } else {
            match base64::engine::general_purpose::STANDARD.decode(b64) {
                Ok(r) => r,
                Err(_) => return self.bad("invalid base64"),
            }
        };
        let mut fields = raw.split(|b| *b == 0);
        let (Some(authz), Some(authc), Some(pass), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return self.bad("malformed PLAIN response");
        };
        let authz = String::from_utf8_lossy(authz);
        let authc = String::from_utf8_lossy(authc).into_owned();
        if authc.is_empty() {
            return self.bad("malformed PLAIN response");
        }
        let password = String::from_utf8_lossy(pass).into_owned();
        let creds = crate::login::Credentials::plain(&authz, &authc, &password);
        let authzid = creds.authzid.map(str::to_string);
        if authzid.is_some()
            && !self
                .config
                .connection
                .proxy_users
                .iter()
                .any(|p| p.eq_ignore_ascii_case(&authc))
        {
            // Acting as someone else: only for the configured proxy users
            // (an mmp logging its users in with its own credentials).
            return self.auth_failed("[AUTH] not authorized to act as that user", false);
        }
        self.state = State::Pending;
        vec![Step::Authenticate {
            login: authc,
            password,
            authzid,
        }]
    }

    /// The caller's report: logged in; AUTHORIZATION is over.
    pub fn logged_in(&mut self) {
        self.state = State::Done;
    }

    /// The caller's report: the login did not succeed.
    pub fn refused(&mut self, why: Refusal) -> Vec<Step> {
        if !matches!(self.state, State::Pending) {
            return Vec::new();
        }
        self.state = State::Ready { user: None };
        match why {
            Refusal::Failed => self.auth_failed("[AUTH] Authentication failed", true),
            Refusal::Inactive => self.auth_failed("[AUTH] account disabled", false),
            Refusal::RateLimited => {
                self.auth_failed("[SYS/TEMP] too many failed logins; try again later", false)
            }
            Refusal::DirectoryUnavailable => vec![err("[SYS/TEMP] directory unavailable")],
            Refusal::Unavailable(text) => vec![err(&text)],
        }
    }

    /// The caller's report after a successful TLS handshake. RFC 2595
    /// section 4: the session starts over in AUTHORIZATION.
    pub fn tls_started(&mut self) {
        self.config.connection.tls_active = true;
        self.config.connection.stls_available = false;
        self.state = State::Ready { user: None };
    }

    fn auth_failed(&mut self, text: &str, delay: bool) -> Vec<Step> {
        self.auth_failures += 1;
        let mut v = Vec::new();
        if delay {
            let d = delay_after(self.config.connection.auth_delay, self.auth_failures);
            if !d.is_zero() {
                v.push(Step::Delay(d));
            }
        }
        v.push(err(text));
        if self.auth_failures >= self.config.connection.max_auth_failures.max(1) {
            self.state = State::Closed;
            v.push(err("[AUTH] too many authentication failures"));
            v.push(Step::Close);
        }
        v
    }

    /// A syntax error or refused command (in any state); too many of them
    /// end the session.
    pub fn bad(&mut self, text: &str) -> Vec<Step> {
        self.bad_commands += 1;
        let mut v = vec![err(text)];
        if self.bad_commands >= self.config.connection.max_bad_commands.max(1) {
            self.state = State::Closed;
            v.push(err("too many bad commands"));
            v.push(Step::Close);
        }
        v
    }

    fn plaintext_allowed(&self) -> bool {
        self.config.connection.tls_active || self.config.connection.plaintext_without_tls
    }

    /// RFC 2449 CAPA. USER and SASL only where a password may be sent;
    /// STLS only before TLS and only in AUTHORIZATION.
    pub fn capabilities(&self, authorization: bool) -> String {
        let mut s = String::from("+OK Capability list follows\r\n");
        for c in self.config.capa_extra {
            s.push_str(c);
            s.push_str("\r\n");
        }
        if authorization && self.plaintext_allowed() {
            s.push_str("USER\r\nSASL PLAIN\r\n");
        }
        s.push_str("RESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\n");
        if authorization
            && self.config.connection.stls_available
            && !self.config.connection.tls_active
        {
            s.push_str("STLS\r\n");
        }
        s.push_str(&format!(
            "IMPLEMENTATION {}\r\n.\r\n",
            self.config.implementation
        ));
        s
    }
}

/// Delay before answering the `failures`-th wrong password: base, 2x, 4x,
/// capped at 8 s (or at base, if base is larger).
pub fn delay_after(base: Duration, failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    base.saturating_mul(1u32 << exp)
        .min(AUTH_DELAY_MAX.max(base))
}

pub(crate) fn ok(text: &str) -> Step {
    if text.is_empty() {
        Step::Reply("+OK\r\n".into())
    } else {
        Step::Reply(format!("+OK {text}\r\n"))
    }
}

pub(crate) fn err(text: &str) -> Step {
    Step::Reply(format!("-ERR {text}\r\n"))
}

/// Keyword (uppercased) and the rest of the line after one space.
pub(crate) fn split_command(line: &str) -> (String, &str) {
    let (cmd, args) = line.split_once(' ').unwrap_or((line, ""));
    (cmd.to_ascii_uppercase(), args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pop3::codec::LineReader;

    fn config() -> AuthConfig {
        AuthConfig {
            connection: Connection {
                stls_available: true,
                tls_active: false,
                plaintext_without_tls: true,
                max_bad_commands: 5,
                max_auth_failures: 3,
                auth_delay: Duration::from_secs(1),
                proxy_users: vec!["mmp@x".into()],
            },
            role: "server",
            capa_extra: &["TOP", "UIDL"],
            implementation: "msgd",
        }
    }

    /// Feeds `input` split at `at`, every line through a LineReader.
    fn run_split(a: &mut Authorization, input: &[u8], at: usize) -> Vec<Step> {
        let mut r = LineReader::new(64);
        let mut out = Vec::new();
        for part in [&input[..at], &input[at..]] {
            r.push(part);
            while let Some(i) = r.next() {
                out.extend(a.input(i));
            }
        }
        out
    }

    fn text(steps: &[Step]) -> String {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::Reply(r) => Some(r.as_str()),
                _ => None,
            })
            .collect()
    }

    fn auth(login: &str, password: &str, authzid: Option<&str>) -> Step {
        Step::Authenticate {
            login: login.into(),
            password: password.into(),
            authzid: authzid.map(Into::into),
        }
    }

    #[test]
    fn rfc1939_7_user_pass_split_at_every_byte() {
        let input = b"USER alice\r\nPASS pass with spaces\r\n";
        for i in 0..=input.len() {
            let mut a = Authorization::new(config());
            let out = run_split(&mut a, input, i);
            assert_eq!(
                out,
                vec![
                    Step::Reply("+OK send PASS\r\n".into()),
                    auth("alice", "pass with spaces", None)
                ],
                "split at {i}"
            );
            // One command at a time: nothing more until the report.
            assert!(a.input(Input::Line(b"CAPA".to_vec())).is_empty());
            a.logged_in();
            assert!(!a.closed());
        }
    }

    #[test]
    fn rfc5034_auth_plain_split_at_every_byte() {
        // "\0alice\0secret", with and without an initial response.
        for input in [
            b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n".as_slice(),
            b"AUTH PLAIN\r\nAGFsaWNlAHNlY3JldA==\r\n".as_slice(),
        ] {
            for i in 0..=input.len() {
                let mut a = Authorization::new(config());
                let out = run_split(&mut a, input, i);
                assert_eq!(out.last(), Some(&auth("alice", "secret", None)), "{i}");
            }
        }
        let mut a = Authorization::new(config());
        assert_eq!(
            text(&run_split(
                &mut a,
                b"AUTH PLAIN\r\n*\r\nAUTH\r\nAUTH X\r\n",
                0
            )),
            "+ \r\n-ERR authentication cancelled\r\n+OK\r\nPLAIN\r\n.\r\n\
             -ERR unsupported authentication mechanism\r\n"
        );
        // "=": an empty response, malformed.
        assert_eq!(
            text(&run_split(&mut a, b"AUTH PLAIN =\r\n", 0)),
            "-ERR malformed PLAIN response\r\n"
        );
    }

    #[test]
    fn rfc4616_authzid_only_for_proxy_users() {
        use base64::Engine;
        let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
        let mut a = Authorization::new(config());
        let line = format!("AUTH PLAIN {}\r\n", b64(b"bob\0MMP@x\0pw"));
        assert_eq!(
            run_split(&mut a, line.as_bytes(), 3),
            vec![auth("MMP@x", "pw", Some("bob"))]
        );
        a.refused(Refusal::Failed);
        // The same authzid as the login is no authzid.
        let line = format!("AUTH PLAIN {}\r\n", b64(b"ALICE\0alice\0pw"));
        assert_eq!(
            run_split(&mut a, line.as_bytes(), 0),
            vec![auth("alice", "pw", None)]
        );
        a.refused(Refusal::Failed);
        let line = format!("AUTH PLAIN {}\r\n", b64(b"bob\0alice\0pw"));
        let out = run_split(&mut a, line.as_bytes(), 0);
        assert_eq!(
            text(&out),
            "-ERR [AUTH] not authorized to act as that user\r\n\
             -ERR [AUTH] too many authentication failures\r\n"
        );
        assert_eq!(out.last(), Some(&Step::Close));
        assert!(a.closed());
    }

    #[test]
    fn rfc2595_4_plaintext_needs_tls_and_stls_starts_over() {
        let mut c = config();
        c.connection.plaintext_without_tls = false;
        let mut a = Authorization::new(c);
        let out = run_split(&mut a, b"CAPA\r\nUSER a\r\nPASS b\r\nAUTH PLAIN\r\n", 0);
        let t = text(&out);
        assert!(!t.contains("USER\r\n") && !t.contains("SASL"), "{t}");
        assert!(t.ends_with(
            "STLS\r\nIMPLEMENTATION msgd\r\n.\r\n-ERR [AUTH] TLS required\r\n\
             -ERR [AUTH] TLS required\r\n-ERR [AUTH] TLS required\r\n"
        ));
        let out = run_split(&mut a, b"STLS\r\n", 0);
        assert_eq!(
            out,
            vec![
                Step::Reply("+OK Begin TLS negotiation\r\n".into()),
                Step::StartTls
            ]
        );
        a.tls_started();
        let t = text(&run_split(&mut a, b"CAPA\r\nSTLS\r\n", 0));
        assert_eq!(
            t,
            "+OK Capability list follows\r\nTOP\r\nUIDL\r\nUSER\r\nSASL PLAIN\r\n\
             RESP-CODES\r\nPIPELINING\r\nAUTH-RESP-CODE\r\nIMPLEMENTATION msgd\r\n.\r\n\
             -ERR command not permitted when TLS active\r\n"
        );
    }

    #[test]
    fn rfc3206_refusals_codes_delays_and_limits() {
        let mut a = Authorization::new(config());
        let mut delays = Vec::new();
        for (why, expect) in [
            (
                Refusal::DirectoryUnavailable,
                "-ERR [SYS/TEMP] directory unavailable\r\n",
            ),
            (
                Refusal::Unavailable("[SYS/TEMP] maildrop unavailable".into()),
                "-ERR [SYS/TEMP] maildrop unavailable\r\n",
            ),
            (Refusal::Failed, "-ERR [AUTH] Authentication failed\r\n"),
            (Refusal::Inactive, "-ERR [AUTH] account disabled\r\n"),
        ] {
            run_split(&mut a, b"USER a\r\nPASS b\r\n", 0);
            let out = a.refused(why);
            delays.extend(out.iter().filter_map(|s| match s {
                Step::Delay(d) => Some(*d),
                _ => None,
            }));
            assert_eq!(text(&out), expect);
        }
        assert_eq!(delays, vec![Duration::from_secs(1)]);
        run_split(&mut a, b"USER a\r\nPASS b\r\n", 0);
        let out = a.refused(Refusal::RateLimited);
        assert_eq!(
            text(&out),
            "-ERR [SYS/TEMP] too many failed logins; try again later\r\n\
             -ERR [AUTH] too many authentication failures\r\n"
        );
        assert_eq!(out.last(), Some(&Step::Close));
        assert_eq!(delay_after(Duration::from_secs(1), 5), AUTH_DELAY_MAX);
    }

    #[test]
    fn rfc1939_4_other_commands_long_lines_and_bad_command_limit() {
        let mut a = Authorization::new(config());
        let mut input = b"STAT\r\nNOOP\r\nFROB\r\nPASS x\r\n".to_vec();
        input.extend_from_slice(&[b'x'; 100]);
        input.extend_from_slice(b"\r\nQUIT\r\n");
        for i in [0, 3, 30, input.len()] {
            let mut a2 = Authorization::new(config());
            let out = run_split(&mut a2, &input, i);
            assert_eq!(
                text(&out),
                "-ERR command not valid in this state\r\n-ERR command not valid in this state\r\n\
                 -ERR unknown command\r\n-ERR USER first\r\n-ERR line too long\r\n\
                 -ERR too many bad commands\r\n",
                "split at {i}"
            );
            assert_eq!(out.last(), Some(&Step::Close));
        }
        let out = run_split(&mut a, b"QUIT\r\n", 0);
        assert_eq!(
            out,
            vec![
                Step::Reply("+OK msgd POP3 server signing off\r\n".into()),
                Step::Close
            ]
        );
    }

    #[test]
    fn authenticate_password_is_hidden_in_debug() {
        let s = auth("u", "hunter2", Some("z"));
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
