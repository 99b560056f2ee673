//! The POP3 side of the mmp before login: a synchronous state machine over
//! client lines (no I/O). It answers the AUTHORIZATION state itself (RFC
//! 1939 USER/PASS/QUIT, RFC 2449 CAPA, RFC 2595 STLS, RFC 5034 AUTH PLAIN)
//! and asks the driver to log in at the user's store; once that succeeded
//! the store's "+OK" goes to the client and the driver relays bytes.
//!
//! Invariants: one command at a time; passwords leave this module only
//! inside `Action::Login`, whose Debug output hides them.

use std::time::Duration;

use super::{auth_delay, sasl_plain, Action, LoginOutcome, SaslError};

#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub stls_available: bool,
    pub tls_active: bool,
    /// USER/PASS and AUTH PLAIN allowed without TLS.
    pub plaintext_without_tls: bool,
    pub max_bad_commands: u32,
    pub max_auth_failures: u32,
    pub auth_delay: Duration,
    pub max_line: usize,
}

#[derive(Debug)]
enum State {
    Authorization {
        user: Option<String>,
    },
    /// AUTH PLAIN sent "+ " and waits for the response line.
    SaslPlain,
    Pending,
    Proxying,
    Closed,
}

pub struct Session {
    config: SessionConfig,
    state: State,
    buf: Vec<u8>,
    /// Dropping an overlong line until its LF.
    discarding: bool,
    bad_commands: u32,
    auth_failures: u32,
}

impl Session {
    pub fn new(config: SessionConfig) -> Session {
        Session {
            config,
            state: State::Authorization { user: None },
            buf: Vec::new(),
            discarding: false,
            bad_commands: 0,
            auth_failures: 0,
        }
    }

    pub fn greeting(&self) -> Action {
        Action::Reply(b"+OK msgd POP3 proxy ready\r\n".to_vec())
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    pub fn has_buffered(&self) -> bool {
        !self.buf.is_empty()
    }

    pub fn tls_active(&self) -> bool {
        self.config.tls_active
    }

    /// Input after the login command: it belongs to the store.
    pub fn take_rest(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    pub fn next(&mut self) -> Option<Vec<Action>> {
        if matches!(self.state, State::Pending | State::Proxying | State::Closed) {
            return None;
        }
        let line = loop {
            let lf = self.buf.iter().position(|b| *b == b'\n');
            match lf {
                Some(i) if self.discarding => {
                    self.buf.drain(..=i);
                    self.discarding = false;
                }
                Some(i) if i < self.config.max_line => {
                    let mut line: Vec<u8> = self.buf.drain(..=i).collect();
                    line.pop();
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    break line;
                }
                Some(i) => {
                    self.buf.drain(..=i);
                    return Some(self.bad("line too long"));
                }
                None if self.buf.len() > self.config.max_line => {
                    self.buf.clear();
                    if self.discarding {
                        return None;
                    }
                    self.discarding = true;
                    return Some(self.bad("line too long"));
                }
                None => {
                    if self.discarding {
                        self.buf.clear();
                    }
                    return None;
                }
            }
        };
        let line = String::from_utf8_lossy(&line).into_owned();
        let state = std::mem::replace(&mut self.state, State::Pending);
        Some(match state {
            State::SaslPlain => {
                self.state = State::Authorization { user: None };
                self.sasl_response(line.trim())
            }
            State::Authorization { user } => {
                self.state = State::Authorization { user: user.clone() };
                self.command(user, &line)
            }
            other => {
                self.state = other;
                return None;
            }
        })
    }

    fn command(&mut self, user: Option<String>, line: &str) -> Vec<Action> {
        let (cmd, args) = match line.split_once(' ') {
            Some((c, a)) => (c.to_ascii_uppercase(), a),
            None => (line.to_ascii_uppercase(), ""),
        };
        match cmd.as_str() {
            "CAPA" => vec![Action::Reply(self.capabilities().into_bytes())],
            "QUIT" => {
                self.state = State::Closed;
                vec![ok("msgd POP3 proxy signing off"), Action::Close]
            }
            "STLS" => {
                if self.config.tls_active {
                    self.bad("command not permitted when TLS active")
                } else if !self.config.stls_available {
                    self.bad("STLS not available")
                } else {
                    self.state = State::Pending;
                    // RFC 2595 section 4: pipelined plaintext is dropped.
                    self.buf.clear();
                    vec![ok("Begin TLS negotiation"), Action::StartTls]
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
                self.state = State::Authorization {
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
                self.state = State::Pending;
                vec![Action::Login {
                    login,
                    password: args.to_string(),
                    client_id: Vec::new(),
                }]
            }
            "AUTH" => {
                self.state = State::Authorization { user: None };
                let mut parts = args.split_ascii_whitespace();
                let Some(mech) = parts.next() else {
                    return vec![Action::Reply(if self.plaintext_allowed() {
                        b"+OK\r\nPLAIN\r\n.\r\n".to_vec()
                    } else {
                        b"+OK\r\n.\r\n".to_vec()
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
                        vec![Action::Reply(b"+ \r\n".to_vec())]
                    }
                    Some(ir) => self.sasl_response(ir),
                }
            }
            "STAT" | "LIST" | "RETR" | "DELE" | "RSET" | "TOP" | "UIDL" | "NOOP" => {
                self.bad("command not valid in this state")
            }
            _ => self.bad("unknown command"),
        }
    }

    fn sasl_response(&mut self, b64: &str) -> Vec<Action> {
        use base64::Engine;
        if b64 == "*" {
            return vec![err("authentication cancelled")];
        }
        let raw = if b64 == "=" {
            Vec::new()
        } else {
            match base64::engine::general_purpose::STANDARD.decode(b64) {
                Ok(r) => r,
                Err(_) => return self.bad("invalid base64"),
            }
        };
        match sasl_plain(&raw) {
            Ok((login, password)) => {
                self.state = State::Pending;
                vec![Action::Login {
                    login,
                    password,
                    client_id: Vec::new(),
                }]
            }
            Err(SaslError::Malformed) => self.bad("malformed PLAIN response"),
            Err(SaslError::OtherAuthzid) => {
                self.auth_failed("[AUTH] not authorized to act as that user", false)
            }
        }
    }

    /// The driver's report on `Action::Login`. For `Ok`, the text is the
    /// store's "+OK" line, passed on as it is.
    pub fn login_done(&mut self, outcome: LoginOutcome) -> Vec<Action> {
        if !matches!(self.state, State::Pending) {
            return Vec::new();
        }
        self.state = State::Authorization { user: None };
        match outcome {
            LoginOutcome::Ok(line) => {
                self.state = State::Proxying;
                vec![Action::Reply(line.into_bytes()), Action::Proxy]
            }
            LoginOutcome::Failed => self.auth_failed("[AUTH] Authentication failed", true),
            LoginOutcome::Inactive => self.auth_failed("[AUTH] account disabled", false),
            LoginOutcome::RateLimited => {
                self.auth_failed("[SYS/TEMP] too many failed logins; try again later", false)
            }
            LoginOutcome::DirectoryUnavailable => vec![err("[SYS/TEMP] directory unavailable")],
            LoginOutcome::BackendUnavailable => vec![err("[SYS/TEMP] mail store unavailable")],
            LoginOutcome::BackendRefused(code) => {
                let code = code.map(|c| format!("[{c}] ")).unwrap_or_default();
                vec![err(&format!("{code}login refused by the mail store"))]
            }
        }
    }

    pub fn tls_started(&mut self) {
        self.config.tls_active = true;
        self.config.stls_available = false;
        self.state = State::Authorization { user: None };
    }

    fn plaintext_allowed(&self) -> bool {
        self.config.tls_active || self.config.plaintext_without_tls
    }

    /// RFC 2449 CAPA in the AUTHORIZATION state.
    fn capabilities(&self) -> String {
        let mut s = String::from("+OK Capability list follows\r\n");
        if self.plaintext_allowed() {
            s.push_str("USER\r\nSASL PLAIN\r\n");
        }
        if self.config.stls_available && !self.config.tls_active {
            s.push_str("STLS\r\n");
        }
        s.push_str(
            "RESP-CODES\r\nAUTH-RESP-CODE\r\nPIPELINING\r\nIMPLEMENTATION msgd-mmp\r\n.\r\n",
        );
        s
    }

    fn auth_failed(&mut self, text: &str, delay: bool) -> Vec<Action> {
        self.auth_failures += 1;
        let mut v = Vec::new();
        if delay {
            let d = auth_delay(self.config.auth_delay, self.auth_failures);
            if !d.is_zero() {
                v.push(Action::Delay(d));
            }
        }
        v.push(err(text));
        if self.auth_failures >= self.config.max_auth_failures.max(1) {
            self.state = State::Closed;
            v.push(err("[AUTH] too many authentication failures"));
            v.push(Action::Close);
        }
        v
    }

    fn bad(&mut self, text: &str) -> Vec<Action> {
        self.bad_commands += 1;
        let mut v = vec![err(text)];
        if self.bad_commands >= self.config.max_bad_commands.max(1) {
            self.state = State::Closed;
            v.push(err("too many bad commands"));
            v.push(Action::Close);
        }
        v
    }
}

fn ok(text: &str) -> Action {
    Action::Reply(format!("+OK {text}\r\n").into_bytes())
}

fn err(text: &str) -> Action {
    Action::Reply(format!("-ERR {text}\r\n").into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> SessionConfig {
        SessionConfig {
            stls_available: true,
            tls_active: false,
            plaintext_without_tls: true,
            max_bad_commands: 5,
            max_auth_failures: 3,
            auth_delay: Duration::from_secs(1),
            max_line: 512,
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

    fn text(actions: &[Action]) -> String {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Reply(r) => Some(String::from_utf8_lossy(r).into_owned()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn rfc1939_user_pass_split_at_every_byte_keeps_pipelined_rest() {
        let input: &[u8] = b"CAPA\r\nUSER alice\r\nPASS pass with spaces\r\nSTAT\r\n";
        for i in 0..=input.len() {
            let mut s = Session::new(config());
            let mut out = run(&mut s, &input[..i]);
            out.extend(run(&mut s, &input[i..]));
            assert!(text(&out)
                .starts_with("+OK Capability list follows\r\nUSER\r\nSASL PLAIN\r\nSTLS\r\n"));
            assert_eq!(
                out.last(),
                Some(&Action::Login {
                    login: "alice".into(),
                    password: "pass with spaces".into(),
                    client_id: vec![],
                }),
                "split at {i}"
            );
            let out = s.login_done(LoginOutcome::Ok("+OK maildrop has 2 messages\r\n".into()));
            assert_eq!(
                out,
                vec![
                    Action::Reply(b"+OK maildrop has 2 messages\r\n".to_vec()),
                    Action::Proxy
                ]
            );
            assert_eq!(s.take_rest(), b"STAT\r\n");
        }
    }

    #[test]
    fn rfc2595_plaintext_refused_without_tls_and_stls_drops_pipelined_input() {
        let mut c = config();
        c.plaintext_without_tls = false;
        let mut s = Session::new(c);
        let out = run(&mut s, b"CAPA\r\nUSER alice\r\nAUTH PLAIN AGEAYg==\r\n");
        let t = text(&out);
        assert!(!t.contains("USER\r\n"), "{t}");
        assert!(t.ends_with("-ERR [AUTH] TLS required\r\n-ERR [AUTH] TLS required\r\n"));
        let out = run(&mut s, b"STLS\r\nUSER injected\r\n");
        assert_eq!(out.last(), Some(&Action::StartTls));
        assert!(!s.has_buffered());
        s.tls_started();
        let out = run(&mut s, b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n");
        assert!(
            matches!(&out[..], [Action::Login { login, password, .. }] if login == "alice" && password == "secret")
        );
    }

    #[test]
    fn rfc5034_auth_plain_continuation_and_rfc3206_codes() {
        let mut s = Session::new(config());
        assert_eq!(text(&run(&mut s, b"AUTH PLAIN\r\n")), "+ \r\n");
        let out = run(&mut s, b"AGFsaWNlAHNlY3JldA==\r\n");
        assert!(matches!(&out[..], [Action::Login { .. }]));
        let out = s.login_done(LoginOutcome::Failed);
        assert_eq!(out[0], Action::Delay(Duration::from_secs(1)));
        assert_eq!(text(&out), "-ERR [AUTH] Authentication failed\r\n");
        run(&mut s, b"USER a\r\nPASS b\r\n");
        assert_eq!(
            text(&s.login_done(LoginOutcome::DirectoryUnavailable)),
            "-ERR [SYS/TEMP] directory unavailable\r\n"
        );
        run(&mut s, b"USER a\r\nPASS b\r\n");
        assert_eq!(
            text(&s.login_done(LoginOutcome::BackendRefused(Some("IN-USE".into())))),
            "-ERR [IN-USE] login refused by the mail store\r\n"
        );
        run(&mut s, b"USER a\r\nPASS b\r\n");
        assert_eq!(
            text(&s.login_done(LoginOutcome::BackendUnavailable)),
            "-ERR [SYS/TEMP] mail store unavailable\r\n"
        );
        run(&mut s, b"USER a\r\nPASS b\r\n");
        let out = s.login_done(LoginOutcome::Failed);
        assert_eq!(out[0], Action::Delay(Duration::from_secs(2)));
        run(&mut s, b"USER a\r\nPASS b\r\n");
        let out = s.login_done(LoginOutcome::Failed);
        assert!(text(&out).ends_with("-ERR [AUTH] too many authentication failures\r\n"));
        assert_eq!(out.last(), Some(&Action::Close));
    }

    #[test]
    fn rfc1939_other_commands_and_long_lines() {
        let mut s = Session::new(config());
        let mut long = vec![b'x'; 600];
        long.extend_from_slice(b"\r\nQUIT\r\n");
        let out = run(&mut s, &[b"STAT\r\nFROB\r\n".as_slice(), &long].concat());
        assert_eq!(
            text(&out),
            "-ERR command not valid in this state\r\n-ERR unknown command\r\n-ERR line too long\r\n\
             +OK msgd POP3 proxy signing off\r\n"
        );
        assert_eq!(out.last(), Some(&Action::Close));
    }
}
