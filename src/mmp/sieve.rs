//! The ManageSieve (RFC 5804) side of the mmp before login: greeting with
//! capabilities, CAPABILITY, NOOP, LOGOUT, STARTTLS and AUTHENTICATE
//! "PLAIN" (initial response or one continuation), framed by the store's
//! own ManageSieve parser (`crate::sieve::managesieve::Parser`) with a
//! small literal cap. No I/O: the driver performs the actions. A
//! successful login here means: log in at the user's store's ManageSieve
//! listener (`Action::Login`); once that succeeded the store's "OK" goes
//! to the client and the driver relays bytes.
//!
//! Invariants: one command at a time; anything but the commands above is
//! answered NO before login; passwords leave this module only inside
//! `Action::Login`, whose Debug output hides them. RFC 5804 2.1: PLAIN
//! negotiates no security layer, so no capabilities follow the OK.

use std::collections::VecDeque;
use std::time::Duration;

use base64::Engine as _;

use super::{auth_delay, sasl_plain, Action, LoginOutcome};
use crate::sieve::managesieve::{Arg, Parsed, Parser, EXTENSIONS};

/// Largest literal before login: a SASL PLAIN response in base64 (login,
/// authorization identity and password of up to ~1 KiB each).
pub const MAX_SASL_LITERAL: usize = 4096;

#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub starttls_available: bool,
    pub tls_active: bool,
    /// AUTHENTICATE allowed without TLS (loopback, or
    /// `imap.allow_plaintext_auth`: the store's rule).
    pub plaintext_without_tls: bool,
    pub max_bad_commands: u32,
    pub max_auth_failures: u32,
    /// First delay after a failed login (doubles each time).
    pub auth_delay: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Ready,
    /// `""` went out after AUTHENTICATE "PLAIN": the next string is the
    /// SASL response.
    SaslResponse,
    /// Waiting for the driver (`login_done` / `tls_started`).
    Pending,
    Proxying,
    Closed,
}

pub struct Session {
    config: SessionConfig,
    state: State,
    parser: Parser,
    /// Actions owed before the next command (capabilities after TLS).
    queued: VecDeque<Action>,
    bad_commands: u32,
    auth_failures: u32,
}

fn reply(s: impl Into<String>) -> Action {
    Action::Reply(s.into().into_bytes())
}

/// A ManageSieve quoted string (RFC 5804 4) for short texts without CR/LF.
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

impl Session {
    pub fn new(config: SessionConfig) -> Session {
        Session {
            config,
            state: State::Ready,
            parser: Parser::with_max_literal(MAX_SASL_LITERAL),
            queued: VecDeque::new(),
            bad_commands: 0,
            auth_failures: 0,
        }
    }

    fn plaintext_allowed(&self) -> bool {
        self.config.tls_active || self.config.plaintext_without_tls
    }

    /// The capability listing and its OK (RFC 5804 1.7): the store's
    /// Sieve extensions, PLAIN only where a password may travel.
    fn capabilities(&self) -> String {
        let mut c = String::from("\"IMPLEMENTATION\" \"msgd-mmp\"\r\n");
        let sasl = if self.plaintext_allowed() {
            "PLAIN"
        } else {
            ""
        };
        c.push_str(&format!("\"SASL\" \"{sasl}\"\r\n"));
        c.push_str(&format!("\"SIEVE\" \"{EXTENSIONS}\"\r\n"));
        if self.config.starttls_available && !self.config.tls_active {
            c.push_str("\"STARTTLS\"\r\n");
        }
        c.push_str(&format!(
            "\"MAXREDIRECTS\" \"{}\"\r\n",
            crate::sieve::MAX_REDIRECTS
        ));
        c.push_str("\"VERSION\" \"1.0\"\r\n");
        c.push_str("OK \"ManageSieve proxy ready\"\r\n");
        c
    }

    pub fn greeting(&self) -> Action {
        reply(self.capabilities())
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.parser.feed(bytes);
    }

    pub fn has_buffered(&self) -> bool {
        self.parser.buffered() > 0 || !self.queued.is_empty()
    }

    pub fn tls_active(&self) -> bool {
        self.config.tls_active
    }

    /// Input after the AUTHENTICATE command: it belongs to the store.
    pub fn take_rest(&mut self) -> Vec<u8> {
        self.parser.take_rest()
    }

    pub fn next(&mut self) -> Option<Vec<Action>> {
        if !self.queued.is_empty() {
            return Some(self.queued.drain(..).collect());
        }
        if !matches!(self.state, State::Ready | State::SaslResponse) {
            return None;
        }
        match self.parser.next_command() {
            Parsed::Incomplete => None,
            Parsed::Bad(why) => {
                if self.state == State::SaslResponse {
                    self.state = State::Ready;
                }
                Some(self.bad(why))
            }
            Parsed::Command(name, args) => Some(if self.state == State::SaslResponse {
                self.state = State::Ready;
                // The response is a string on its own line (a command
                // with no name); an atom there is not one.
                let response = if name.is_empty() { args.first() } else { None };
                self.sasl_response(response)
            } else {
                self.command(&name, &args)
            }),
        }
    }

    fn bad(&mut self, why: &str) -> Vec<Action> {
        self.bad_commands += 1;
        let mut v = vec![reply(format!("NO {}\r\n", quoted(why)))];
        if self.bad_commands >= self.config.max_bad_commands {
            self.state = State::Closed;
            v.push(reply("BYE \"Too many errors\"\r\n"));
            v.push(Action::Close);
        }
        v
    }

    fn command(&mut self, name: &str, args: &[Arg]) -> Vec<Action> {
        match name {
            "CAPABILITY" => vec![reply(self.capabilities())],
            // RFC 5804 2.13: a tag comes back in the TAG response code.
            "NOOP" => match args.first().and_then(text) {
                Some(tag) => vec![reply(format!("OK (TAG {}) \"Done\"\r\n", quoted(&tag)))],
                None => vec![reply("OK \"Done\"\r\n")],
            },
            "LOGOUT" => {
                self.state = State::Closed;
                vec![reply("OK \"Bye\"\r\n"), Action::Close]
            }
            "STARTTLS" if self.config.starttls_available && !self.config.tls_active => {
                self.state = State::Pending;
                // RFC 5804 2.2: anything pipelined after STARTTLS is void.
                self.parser.clear();
                vec![reply("OK \"Begin TLS negotiation\"\r\n"), Action::StartTls]
            }
            "AUTHENTICATE" => self.authenticate(args),
            _ => self.bad("Authenticate first"),
        }
    }

    fn authenticate(&mut self, args: &[Arg]) -> Vec<Action> {
        let mech = args.first().and_then(text).unwrap_or_default();
        if !mech.eq_ignore_ascii_case("PLAIN") {
            return vec![reply("NO \"Unsupported mechanism\"\r\n")];
        }
        if !self.plaintext_allowed() {
            return vec![reply("NO (ENCRYPT-NEEDED) \"Use STARTTLS first\"\r\n")];
        }
        match args.get(1) {
            Some(a) => self.sasl_response(Some(a)),
            None => {
                self.state = State::SaslResponse;
                vec![reply("\"\"\r\n")]
            }
        }
    }

    fn sasl_response(&mut self, response: Option<&Arg>) -> Vec<Action> {
        let Some(response) = response.and_then(text) else {
            return vec![reply("NO \"Bad SASL response\"\r\n")];
        };
        if response == "*" {
            return vec![reply("NO \"Authentication cancelled\"\r\n")];
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(response.trim())
            .ok();
        match decoded.as_deref().map(sasl_plain) {
            Some(Ok((login, password))) => {
                self.state = State::Pending;
                vec![Action::Login {
                    login,
                    password,
                    client_id: Vec::new(),
                }]
            }
            Some(Err(super::SaslError::OtherAuthzid)) => {
                vec![reply("NO \"Authorization identity not allowed\"\r\n")]
            }
            _ => vec![reply("NO \"Bad SASL response\"\r\n")],
        }
    }

    /// The driver's report on `Action::Login`. For `Ok`, the text is the
    /// store's "OK" line, passed on as it is.
    pub fn login_done(&mut self, outcome: LoginOutcome) -> Vec<Action> {
        if self.state != State::Pending {
            return Vec::new();
        }
        self.state = State::Ready;
        match outcome {
            LoginOutcome::Ok(line) => {
                self.state = State::Proxying;
                vec![Action::Reply(line.into_bytes()), Action::Proxy]
            }
            LoginOutcome::Failed => self.auth_failed("NO \"Authentication failed\"\r\n", true),
            LoginOutcome::Inactive => self.auth_failed("NO \"Account disabled\"\r\n", false),
            LoginOutcome::RateLimited => self.auth_failed(
                "NO (TRYLATER) \"Too many failed logins; try again later\"\r\n",
                false,
            ),
            LoginOutcome::DirectoryUnavailable => vec![reply(
                "NO (TRYLATER) \"User directory unavailable; try again later\"\r\n",
            )],
            LoginOutcome::BackendUnavailable => vec![reply(
                "NO (TRYLATER) \"Mail store unavailable; try again later\"\r\n",
            )],
            LoginOutcome::BackendRefused(code) => {
                let code = code.map(|c| format!("({c}) ")).unwrap_or_default();
                vec![reply(format!(
                    "NO {code}\"Login refused by the mail store\"\r\n"
                ))]
            }
        }
    }

    fn auth_failed(&mut self, line: &str, delay: bool) -> Vec<Action> {
        self.auth_failures += 1;
        let mut v = Vec::new();
        let d = auth_delay(self.config.auth_delay, self.auth_failures);
        if delay && !d.is_zero() {
            v.push(Action::Delay(d));
        }
        v.push(reply(line));
        if self.auth_failures >= self.config.max_auth_failures {
            self.state = State::Closed;
            v.push(reply("BYE \"Too many failures\"\r\n"));
            v.push(Action::Close);
        }
        v
    }

    /// The driver's report after a successful TLS handshake: capabilities
    /// again (RFC 5804 2.2), now with PLAIN and without STARTTLS.
    pub fn tls_started(&mut self) {
        self.config.tls_active = true;
        self.config.starttls_available = false;
        self.state = State::Ready;
        self.queued.push_back(reply(self.capabilities()));
    }
}

fn text(a: &Arg) -> Option<String> {
    match a {
        Arg::Atom(s) => Some(s.clone()),
        Arg::Str(b) => String::from_utf8(b.clone()).ok(),
        Arg::TooBig => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> SessionConfig {
        SessionConfig {
            starttls_available: true,
            tls_active: false,
            plaintext_without_tls: true,
            max_bad_commands: 5,
            max_auth_failures: 3,
            auth_delay: Duration::from_secs(1),
        }
    }

    fn run(s: &mut Session, input: &[u8]) -> Vec<Action> {
        s.push(input);
        let mut out = Vec::new();
        while let Some(a) = s.next() {
            out.extend(a);
        }
        out
    }

    fn text_of(actions: &[Action]) -> String {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Reply(r) => Some(String::from_utf8_lossy(r).into_owned()),
                _ => None,
            })
            .collect()
    }

    fn plain(authz: &str, user: &str, pass: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(format!("{authz}\0{user}\0{pass}"))
    }

    fn login(user: &str, pass: &str) -> Action {
        Action::Login {
            login: user.into(),
            password: pass.into(),
            client_id: vec![],
        }
    }

    #[test]
    fn rfc5804_greeting_lists_the_stores_extensions_plain_and_starttls() {
        let s = Session::new(config());
        let g = text_of(&[s.greeting()]);
        assert!(g.starts_with("\"IMPLEMENTATION\" \"msgd-mmp\"\r\n"), "{g}");
        assert!(g.contains("\"SASL\" \"PLAIN\"\r\n"));
        assert!(g.contains(&format!("\"SIEVE\" \"{EXTENSIONS}\"\r\n")));
        assert!(g.contains("\"STARTTLS\"\r\n"));
        assert!(g.contains("\"VERSION\" \"1.0\"\r\n"));
        assert!(g.ends_with("OK \"ManageSieve proxy ready\"\r\n"));
        let mut c = config();
        c.plaintext_without_tls = false;
        let g = text_of(&[Session::new(c).greeting()]);
        assert!(g.contains("\"SASL\" \"\"\r\n"), "{g}");
    }

    #[test]
    fn rfc5804_2_1_authenticate_split_at_every_byte_keeps_pipelined_rest() {
        // A literal SASL response, a quoted one after a continuation, and
        // an initial response as a quoted string: each split anywhere.
        let b64 = plain("", "alice@example.test", "pass \"word\"");
        let inputs = [
            format!(
                "CAPABILITY\r\nNOOP \"t1\"\r\nAUTHENTICATE \"PLAIN\" {{{}+}}\r\n{b64}\r\nLISTSCRIPTS\r\n",
                b64.len()
            ),
            format!("NOOP\r\nAUTHENTICATE \"PLAIN\"\r\n\"{b64}\"\r\nLISTSCRIPTS\r\n"),
            format!("AUTHENTICATE \"plain\" \"{b64}\"\r\nLISTSCRIPTS\r\n"),
        ];
        for input in &inputs {
            let input = input.as_bytes();
            for i in 0..=input.len() {
                let mut s = Session::new(config());
                let mut out = run(&mut s, &input[..i]);
                out.extend(run(&mut s, &input[i..]));
                assert_eq!(
                    out.last(),
                    Some(&login("alice@example.test", "pass \"word\"")),
                    "split at {i}: {out:?}"
                );
                let t = text_of(&out);
                assert!(!t.contains("NO"), "split at {i}: {t}");
                let out = s.login_done(LoginOutcome::Ok("OK \"Logged in\"\r\n".into()));
                assert_eq!(
                    out,
                    vec![
                        Action::Reply(b"OK \"Logged in\"\r\n".to_vec()),
                        Action::Proxy
                    ]
                );
                assert_eq!(s.take_rest(), b"LISTSCRIPTS\r\n", "split at {i}");
            }
        }
    }

    #[test]
    fn an_oversized_sasl_literal_is_refused_and_the_stream_stays_in_step() {
        let mut s = Session::new(config());
        let n = MAX_SASL_LITERAL + 1;
        let mut input = format!("AUTHENTICATE \"PLAIN\" {{{n}+}}\r\n").into_bytes();
        input.extend(std::iter::repeat_n(b'A', n));
        input.extend_from_slice(b"\r\nNOOP \"t2\"\r\n");
        // Fed in small pieces: never more than a chunk is held.
        let mut out = Vec::new();
        for chunk in input.chunks(100) {
            out.extend(run(&mut s, chunk));
        }
        assert_eq!(
            text_of(&out),
            "NO \"Bad SASL response\"\r\nOK (TAG \"t2\") \"Done\"\r\n"
        );
    }

    #[test]
    fn rfc5804_commands_before_login_are_refused_and_errors_close() {
        let mut s = Session::new(config());
        let out = run(
            &mut s,
            b"LISTSCRIPTS\r\nAUTHENTICATE \"DIGEST-MD5\"\r\n\"unterminated\r\n",
        );
        assert_eq!(
            text_of(&out),
            "NO \"Authenticate first\"\r\nNO \"Unsupported mechanism\"\r\nNO \"unterminated string\"\r\n"
        );
        let out = run(&mut s, b"PUTSCRIPT \"a\" {5+}\r\nkeep;\r\nX\r\nY\r\n");
        assert!(text_of(&out).ends_with("BYE \"Too many errors\"\r\n"));
        assert_eq!(out.last(), Some(&Action::Close));
        assert!(run(&mut s, b"NOOP\r\n").is_empty());
    }

    #[test]
    fn rfc5804_2_2_starttls_drops_pipelined_input_and_resends_capabilities() {
        let mut c = config();
        c.plaintext_without_tls = false;
        let mut s = Session::new(c);
        let b64 = plain("", "a", "b");
        let out = run(
            &mut s,
            format!("AUTHENTICATE \"PLAIN\" \"{b64}\"\r\n").as_bytes(),
        );
        assert_eq!(
            text_of(&out),
            "NO (ENCRYPT-NEEDED) \"Use STARTTLS first\"\r\n"
        );
        let out = run(&mut s, b"STARTTLS\r\nAUTHENTICATE \"PLAIN\" \"x\"\r\n");
        assert_eq!(out.last(), Some(&Action::StartTls));
        assert!(!s.has_buffered());
        s.tls_started();
        let out = run(&mut s, b"");
        let t = text_of(&out);
        assert!(
            t.contains("\"SASL\" \"PLAIN\"") && !t.contains("STARTTLS"),
            "{t}"
        );
        let out = run(
            &mut s,
            format!("AUTHENTICATE \"PLAIN\" \"{b64}\"\r\n").as_bytes(),
        );
        assert_eq!(out, vec![login("a", "b")]);
    }

    #[test]
    fn failed_logins_are_delayed_refused_and_finally_close() {
        let mut s = Session::new(config());
        let auth = format!("AUTHENTICATE \"PLAIN\" \"{}\"\r\n", plain("", "a", "b"));
        run(&mut s, auth.as_bytes());
        let out = s.login_done(LoginOutcome::Failed);
        assert_eq!(out[0], Action::Delay(Duration::from_secs(1)));
        assert_eq!(text_of(&out), "NO \"Authentication failed\"\r\n");
        run(&mut s, auth.as_bytes());
        assert_eq!(
            text_of(&s.login_done(LoginOutcome::BackendRefused(Some("TRYLATER".into())))),
            "NO (TRYLATER) \"Login refused by the mail store\"\r\n"
        );
        run(&mut s, auth.as_bytes());
        assert!(
            text_of(&s.login_done(LoginOutcome::BackendUnavailable)).starts_with("NO (TRYLATER)")
        );
        // Another authorization identity: refused here, no login.
        let other = format!("AUTHENTICATE \"PLAIN\" \"{}\"\r\n", plain("b", "a", "p"));
        assert_eq!(
            text_of(&run(&mut s, other.as_bytes())),
            "NO \"Authorization identity not allowed\"\r\n"
        );
        // A cancelled continuation.
        let out = run(&mut s, b"AUTHENTICATE \"PLAIN\"\r\n\"*\"\r\n");
        assert_eq!(text_of(&out), "\"\"\r\nNO \"Authentication cancelled\"\r\n");
        for _ in 0..2 {
            run(&mut s, auth.as_bytes());
            let out = s.login_done(LoginOutcome::Failed);
            if out.last() == Some(&Action::Close) {
                assert!(text_of(&out).ends_with("BYE \"Too many failures\"\r\n"));
                return;
            }
        }
        panic!("the third failure must close the connection");
    }
}
