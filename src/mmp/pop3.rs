//! The POP3 side of the mmp before login: the shared POP3 AUTHORIZATION
//! core (`crate::pop3::auth`: USER/PASS, AUTH PLAIN, CAPA, STLS, QUIT,
//! RFC 2449 / RFC 3206 codes, the same limits as the store) over the
//! store's line reader, no I/O. A successful login here means: log in at
//! the user's store (`Action::Login`); once that succeeded the store's
//! "+OK" goes to the client and the driver relays bytes.
//!
//! Invariants: one command at a time; passwords leave this module only
//! inside `Action::Login`, whose Debug output hides them.

use super::{Action, LoginOutcome};
use crate::pop3::auth::{AuthConfig, Authorization, Connection, Refusal, Step};
use crate::pop3::codec::LineReader;

#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The AUTHORIZATION core's (no `proxy_users`: the mmp offers no
    /// authorization identity).
    pub connection: Connection,
    pub max_line: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Authorization,
    /// Waiting for the driver (`login_done` / `tls_started`).
    Pending,
    Proxying,
    Closed,
}

pub struct Session {
    auth: Authorization,
    state: State,
    lines: LineReader,
}

impl Session {
    pub fn new(config: SessionConfig) -> Session {
        Session {
            auth: Authorization::new(AuthConfig {
                connection: Connection {
                    // The mmp offers no authorization identity.
                    proxy_users: Vec::new(),
                    ..config.connection
                },
                role: "proxy",
                capa_extra: &[],
                implementation: "msgd-mmp",
            }),
            state: State::Authorization,
            lines: LineReader::new(config.max_line),
        }
    }

    pub fn greeting(&self) -> Action {
        Action::Reply(b"+OK msgd POP3 proxy ready\r\n".to_vec())
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.lines.push(bytes);
    }

    pub fn has_buffered(&self) -> bool {
        self.lines.has_buffered()
    }

    pub fn tls_active(&self) -> bool {
        self.auth.tls_active()
    }

    /// Input after the login command: it belongs to the store.
    pub fn take_rest(&mut self) -> Vec<u8> {
        self.lines.take_rest()
    }

    pub fn next(&mut self) -> Option<Vec<Action>> {
        if self.state != State::Authorization {
            return None;
        }
        let input = self.lines.next()?;
        let steps = self.auth.input(input);
        Some(self.steps(steps))
    }

    /// The core's steps as the driver's actions.
    fn steps(&mut self, steps: Vec<Step>) -> Vec<Action> {
        let mut out = Vec::with_capacity(steps.len());
        for s in steps {
            out.push(match s {
                Step::Reply(r) => Action::Reply(r.into_bytes()),
                Step::Delay(d) => Action::Delay(d),
                Step::Authenticate {
                    login, password, ..
                } => {
                    self.state = State::Pending;
                    Action::Login {
                        login,
                        password,
                        client_id: Vec::new(),
                    }
                }
                Step::StartTls => {
                    self.state = State::Pending;
                    // RFC 2595 section 4: pipelined plaintext is dropped.
                    self.lines.clear();
                    Action::StartTls
                }
                Step::Close => {
                    self.state = State::Closed;
                    Action::Close
                }
            });
        }
        out
    }

    /// The driver's report on `Action::Login`. For `Ok`, the text is the
    /// store's "+OK" line, passed on as it is.
    pub fn login_done(&mut self, outcome: LoginOutcome) -> Vec<Action> {
        if self.state != State::Pending {
            return Vec::new();
        }
        self.state = State::Authorization;
        let why = match outcome {
            LoginOutcome::Ok(line) => {
                self.auth.logged_in();
                self.state = State::Proxying;
                return vec![Action::Reply(line.into_bytes()), Action::Proxy];
            }
            LoginOutcome::Failed => Refusal::Failed,
            LoginOutcome::Inactive => Refusal::Inactive,
            LoginOutcome::RateLimited => Refusal::RateLimited,
            LoginOutcome::DirectoryUnavailable => Refusal::DirectoryUnavailable,
            LoginOutcome::BackendUnavailable => {
                Refusal::Unavailable("[SYS/TEMP] mail store unavailable".into())
            }
            LoginOutcome::BackendRefused(code) => {
                let code = code.map(|c| format!("[{c}] ")).unwrap_or_default();
                Refusal::Unavailable(format!("{code}login refused by the mail store"))
            }
        };
        let steps = self.auth.refused(why);
        self.steps(steps)
    }

    pub fn tls_started(&mut self) {
        self.auth.tls_started();
        self.state = State::Authorization;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn config() -> SessionConfig {
        SessionConfig {
            connection: Connection {
                stls_available: true,
                tls_active: false,
                plaintext_without_tls: true,
                max_bad_commands: 5,
                max_auth_failures: 3,
                auth_delay: Duration::from_secs(1),
                proxy_users: Vec::new(),
            },
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
            // One CAPA list with the store's (the shared core's order).
            assert!(text(&out).starts_with(
                "+OK Capability list follows\r\nUSER\r\nSASL PLAIN\r\nRESP-CODES\r\n\
                 PIPELINING\r\nAUTH-RESP-CODE\r\nSTLS\r\nIMPLEMENTATION msgd-mmp\r\n.\r\n"
            ));
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
        c.connection.plaintext_without_tls = false;
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
