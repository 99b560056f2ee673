//! The POP3 session core: a synchronous state machine (RFC 1939 states
//! AUTHORIZATION, TRANSACTION, UPDATE) that turns input lines into
//! [`Action`]s. It does no I/O: the driver performs the effects
//! (directory, store, TLS) and reports their outcome back. AUTHORIZATION
//! is the core shared with the mmp (`super::auth`); here a login opens the
//! maildrop, and the bad-command count runs on into TRANSACTION.
//!
//! Invariants:
//! - One command at a time: after an effect-bearing action the driver calls
//!   the matching `*_done` method before feeding the next line.
//! - Deletions are only marks until QUIT; no other path leads to UPDATE.
//! - Passwords never leave this module except inside
//!   `Action::Authenticate`, whose Debug output hides them.

use std::fmt;
use std::time::Duration;

use crate::directory::Account;
use crate::store::{MailboxId, MessageMeta, Snapshot, Uid};

use super::auth::{self, AuthConfig, Authorization, Refusal, Step};
use super::codec::Input;

/// Replies shared with the driver. Response codes are RFC 2449 / RFC 3206.
pub const GREETING: &str = "+OK msgd POP3 server ready\r\n";
pub const ERR_SHUTDOWN: &str = "-ERR server shutting down\r\n";
pub const ERR_AUTOLOGOUT: &str = "-ERR autologout\r\n";
/// RETR/TOP of a message someone else expunged meanwhile.
pub const ERR_MESSAGE_GONE: &str = "-ERR message was deleted\r\n";

/// What the session needs to know about its connection and limits: the
/// AUTHORIZATION core's (`pop3.proxy_users` there are the mmp's proxy
/// logins).
pub type SessionConfig = auth::Connection;

/// An effect or output for the driver, in order.
#[derive(Clone, PartialEq, Eq)]
pub enum Action {
    /// Bytes to send, CRLF included (possibly several lines).
    Reply(String),
    /// Wait before going on (after a failed authentication).
    Delay(Duration),
    /// Check these credentials; report with `Session::auth_done`.
    Authenticate { login: String, password: String },
    /// A proxy user (in `proxy_users`) logs in as `authzid`: check the
    /// proxy's credentials, then open `authzid`'s maildrop; report with
    /// `Session::auth_done`.
    AuthenticateAs {
        login: String,
        password: String,
        authzid: String,
    },
    /// Send message `index` (0-based) after `ok_line`, dot-stuffed; only the
    /// header and `top_lines` body lines for TOP. If the message cannot be
    /// read, send `ERR_MESSAGE_GONE` instead. Nothing to report back.
    SendMessage {
        index: usize,
        top_lines: Option<usize>,
        ok_line: String,
    },
    /// Flush replies, drop buffered input, run the TLS handshake, then call
    /// `Session::tls_started` (or close if it fails).
    StartTls,
    /// QUIT in TRANSACTION: enter UPDATE, remove these UIDs of `mailbox`,
    /// report with `Session::update_done`.
    Update {
        mailbox: MailboxId,
        deletions: Vec<Uid>,
    },
    /// Flush and close the connection.
    Close,
}

impl fmt::Debug for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Reply(s) => f.debug_tuple("Reply").field(s).finish(),
            Action::Delay(d) => f.debug_tuple("Delay").field(d).finish(),
            Action::Authenticate { login, .. } => f
                .debug_struct("Authenticate")
                .field("login", login)
                .field("password", &"<hidden>")
                .finish(),
            Action::AuthenticateAs { login, authzid, .. } => f
                .debug_struct("AuthenticateAs")
                .field("login", login)
                .field("password", &"<hidden>")
                .field("authzid", authzid)
                .finish(),
            Action::SendMessage {
                index,
                top_lines,
                ok_line,
            } => f
                .debug_struct("SendMessage")
                .field("index", index)
                .field("top_lines", top_lines)
                .field("ok_line", ok_line)
                .finish(),
            Action::StartTls => f.write_str("StartTls"),
            Action::Update { mailbox, deletions } => f
                .debug_struct("Update")
                .field("mailbox", mailbox)
                .field("deletions", deletions)
                .finish(),
            Action::Close => f.write_str("Close"),
        }
    }
}

/// The outcome of an `Authenticate` action, as the driver saw it.
#[derive(Debug, Clone)]
// One per login (or process): its size does not matter.
#[allow(clippy::large_enum_variant)]
pub enum AuthOutcome {
    /// Credentials right and the maildrop opened.
    Ok {
        account: Account,
        maildrop: Box<Maildrop>,
    },
    /// Wrong login or password.
    Failed,
    /// Right password, disabled account.
    Inactive,
    /// The directory could not answer.
    DirectoryUnavailable,
    /// Too many failed logins from this client (or of it for this
    /// account) lately: refused unchecked (RFC 3206 SYS/TEMP).
    RateLimited,
    /// The store could not open the maildrop.
    StoreUnavailable,
}

/// The maildrop of a TRANSACTION: the INBOX as it was at login.
#[derive(Debug, Clone)]
pub struct Maildrop {
    pub mailbox: MailboxId,
    pub uidvalidity: u32,
    /// In UID order; message number n is `messages[n - 1]`.
    pub messages: Vec<MessageMeta>,
    /// Marked by DELE, cleared by RSET.
    deleted: Vec<bool>,
}

impl Maildrop {
    pub fn new(mailbox: MailboxId, uidvalidity: u32, mut messages: Vec<MessageMeta>) -> Maildrop {
        messages.sort_by_key(|m| m.uid);
        let deleted = vec![false; messages.len()];
        Maildrop {
            mailbox,
            uidvalidity,
            messages,
            deleted,
        }
    }

    pub fn from_snapshot(s: Snapshot) -> Maildrop {
        Maildrop::new(s.info.id, s.info.uidvalidity, s.messages)
    }

    /// (count, octets) of the messages not marked deleted.
    fn stat(&self) -> (usize, u64) {
        self.live()
            .fold((0, 0), |(n, b), (_, m)| (n + 1, b + m.size))
    }

    /// (message number, meta) of every message not marked deleted.
    fn live(&self) -> impl Iterator<Item = (usize, &MessageMeta)> {
        self.messages
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.deleted.get(*i).copied().unwrap_or(false))
            .map(|(i, m)| (i + 1, m))
    }

    /// UIDs marked deleted, ascending.
    pub fn deletions(&self) -> Vec<Uid> {
        self.messages
            .iter()
            .zip(&self.deleted)
            .filter(|(_, d)| **d)
            .map(|(m, _)| m.uid)
            .collect()
    }

    /// RFC 1939 unique-id: printable, stable across sessions, never reused
    /// (UIDVALIDITY plus UID).
    fn unique_id(&self, m: &MessageMeta) -> String {
        format!("{}.{}", self.uidvalidity, m.uid)
    }

    /// Resolves a message-number argument: Ok(index) of a message that
    /// exists and is not marked deleted, or the error reply.
    fn resolve(&self, arg: &str) -> Result<usize, Reject> {
        let n = parse_number(arg).ok_or(Reject::Syntax("invalid message number"))?;
        if n == 0 || n > self.messages.len() {
            return Err(Reject::User("no such message".into()));
        }
        let i = n - 1;
        if self.deleted.get(i).copied().unwrap_or(false) {
            return Err(Reject::User(format!("message {n} already deleted")));
        }
        Ok(i)
    }
}

/// A refused command: syntax errors count against `max_bad_commands`.
enum Reject {
    Syntax(&'static str),
    User(String),
}

/// RFC 1939 states, the data each one owns inside.
#[derive(Debug)]
enum State {
    /// The shared AUTHORIZATION core (`auth`) reads the commands.
    Authorization,
    Transaction(Box<Maildrop>),
    /// QUIT received; waiting for the driver's `update_done`.
    Update,
    /// The connection is to be closed; nothing more is accepted.
    Closed,
}

pub struct Session {
    state: State,
    /// AUTHORIZATION (shared with the mmp), and the bad-command count of
    /// the whole session.
    auth: Authorization,
    /// The account logged in, for the driver's summary line.
    account: Option<Account>,
}

impl Session {
    pub fn new(config: SessionConfig) -> Session {
        Session {
            state: State::Authorization,
            auth: Authorization::new(AuthConfig {
                connection: config,
                role: "server",
                capa_extra: &["TOP", "UIDL"],
                implementation: "msgd",
            }),
            account: None,
        }
    }

    pub fn greeting(&self) -> Action {
        Action::Reply(GREETING.into())
    }

    /// The maildrop, in TRANSACTION.
    pub fn maildrop(&self) -> Option<&Maildrop> {
        match &self.state {
            State::Transaction(m) => Some(m),
            _ => None,
        }
    }

    pub fn account(&self) -> Option<&Account> {
        self.account.as_ref()
    }

    pub fn tls_active(&self) -> bool {
        self.auth.tls_active()
    }

    /// One line (or over-long line) from the client.
    pub fn input(&mut self, input: Input) -> Vec<Action> {
        match std::mem::replace(&mut self.state, State::Closed) {
            State::Authorization => {
                self.state = State::Authorization;
                let steps = self.auth.input(input);
                self.steps(steps)
            }
            s => {
                self.state = s;
                let line = match input {
                    Input::Line(l) => l,
                    Input::TooLong => return self.bad("line too long"),
                };
                let line = String::from_utf8_lossy(&line).into_owned();
                match std::mem::replace(&mut self.state, State::Closed) {
                    State::Transaction(m) => self.transaction(m, &line),
                    s => {
                        // The driver never feeds lines during UPDATE.
                        self.state = s;
                        Vec::new()
                    }
                }
            }
        }
    }

    /// The AUTHORIZATION core's steps as the driver's actions.
    fn steps(&mut self, steps: Vec<Step>) -> Vec<Action> {
        if self.auth.closed() {
            self.state = State::Closed;
        }
        steps
            .into_iter()
            .map(|s| match s {
                Step::Reply(r) => Action::Reply(r),
                Step::Delay(d) => Action::Delay(d),
                Step::Authenticate {
                    login,
                    password,
                    authzid: None,
                } => Action::Authenticate { login, password },
                Step::Authenticate {
                    login,
                    password,
                    authzid: Some(authzid),
                } => Action::AuthenticateAs {
                    login,
                    password,
                    authzid,
                },
                Step::StartTls => Action::StartTls,
                Step::Close => Action::Close,
            })
            .collect()
    }

    /// The driver's report on an `Authenticate` action.
    pub fn auth_done(&mut self, outcome: AuthOutcome) -> Vec<Action> {
        let why = match outcome {
            AuthOutcome::Ok { account, maildrop } => {
                let (n, octets) = maildrop.stat();
                self.auth.logged_in();
                self.account = Some(account);
                self.state = State::Transaction(maildrop);
                return vec![ok(&format!(
                    "maildrop has {n} message{} ({octets} octets)",
                    if n == 1 { "" } else { "s" }
                ))];
            }
            AuthOutcome::Failed => Refusal::Failed,
            AuthOutcome::Inactive => Refusal::Inactive,
            AuthOutcome::DirectoryUnavailable => Refusal::DirectoryUnavailable,
            AuthOutcome::StoreUnavailable => {
                Refusal::Unavailable("[SYS/TEMP] maildrop unavailable".into())
            }
            AuthOutcome::RateLimited => Refusal::RateLimited,
        };
        let steps = self.auth.refused(why);
        self.steps(steps)
    }

    /// The driver's report after a successful TLS handshake. RFC 2595
    /// section 4: the session starts over in AUTHORIZATION.
    pub fn tls_started(&mut self) {
        self.auth.tls_started();
        self.state = State::Authorization;
    }

    fn transaction(&mut self, mut m: Box<Maildrop>, line: &str) -> Vec<Action> {
        let (cmd, args) = split_command(line);
        let args: Vec<&str> = args.split_ascii_whitespace().collect();
        let result: Result<Vec<Action>, Reject> = match (cmd.as_str(), args.as_slice()) {
            ("STAT", []) => {
                let (n, octets) = m.stat();
                Ok(vec![ok(&format!("{n} {octets}"))])
            }
            ("LIST", []) => {
                let (n, octets) = m.stat();
                let mut s = format!(
                    "+OK {n} message{} ({octets} octets)\r\n",
                    if n == 1 { "" } else { "s" }
                );
                for (num, meta) in m.live() {
                    s.push_str(&format!("{num} {}\r\n", meta.size));
                }
                s.push_str(".\r\n");
                Ok(vec![Action::Reply(s)])
            }
            ("LIST", [n]) => m.resolve(n).map(|i| {
                let size = m.messages.get(i).map(|x| x.size).unwrap_or(0);
                vec![ok(&format!("{} {size}", i + 1))]
            }),
            ("UIDL", []) => {
                let mut s = String::from("+OK unique-id listing follows\r\n");
                for (num, meta) in m.live() {
                    s.push_str(&format!("{num} {}\r\n", m.unique_id(meta)));
                }
                s.push_str(".\r\n");
                Ok(vec![Action::Reply(s)])
            }
            ("UIDL", [n]) => m.resolve(n).map(|i| match m.messages.get(i) {
                Some(meta) => vec![ok(&format!("{} {}", i + 1, m.unique_id(meta)))],
                None => vec![err("no such message")],
            }),
            ("RETR", [n]) => m.resolve(n).map(|i| {
                let size = m.messages.get(i).map(|x| x.size).unwrap_or(0);
                vec![Action::SendMessage {
                    index: i,
                    top_lines: None,
                    ok_line: format!("+OK {size} octets\r\n"),
                }]
            }),
            ("TOP", [n, lines]) => match parse_number(lines) {
                None => Err(Reject::Syntax("invalid number of lines")),
                Some(l) => m.resolve(n).map(|i| {
                    vec![Action::SendMessage {
                        index: i,
                        top_lines: Some(l),
                        ok_line: "+OK top of message follows\r\n".into(),
                    }]
                }),
            },
            ("DELE", [n]) => m.resolve(n).map(|i| {
                if let Some(d) = m.deleted.get_mut(i) {
                    *d = true;
                }
                vec![ok(&format!("message {} deleted", i + 1))]
            }),
            ("NOOP", []) => Ok(vec![ok("")]),
            ("RSET", []) => {
                m.deleted.iter_mut().for_each(|d| *d = false);
                let (n, octets) = m.stat();
                Ok(vec![ok(&format!(
                    "maildrop has {n} message{} ({octets} octets)",
                    if n == 1 { "" } else { "s" }
                ))])
            }
            ("CAPA", []) => Ok(vec![Action::Reply(self.capabilities(false))]),
            ("QUIT", []) => {
                let deletions = m.deletions();
                self.state = State::Update;
                return vec![Action::Update {
                    mailbox: m.mailbox,
                    deletions,
                }];
            }
            (
                "STAT" | "LIST" | "UIDL" | "RETR" | "TOP" | "DELE" | "NOOP" | "RSET" | "CAPA"
                | "QUIT",
                _,
            ) => Err(Reject::Syntax("wrong number of arguments")),
            ("USER" | "PASS" | "AUTH" | "STLS", _) => {
                Err(Reject::Syntax("command not valid in this state"))
            }
            _ => Err(Reject::Syntax("unknown command")),
        };
        self.state = State::Transaction(m);
        match result {
            Ok(actions) => actions,
            Err(Reject::User(text)) => vec![err(&text)],
            Err(Reject::Syntax(text)) => self.bad(text),
        }
    }

    /// The driver's report on UPDATE (RFC 1939 section 6).
    pub fn update_done(&mut self, result: Result<usize, ()>) -> Vec<Action> {
        self.state = State::Closed;
        match result {
            Ok(_) => vec![ok("msgd POP3 server signing off"), Action::Close],
            Err(()) => vec![
                err("[SYS/TEMP] some deleted messages not removed"),
                Action::Close,
            ],
        }
    }

    /// A syntax error or refused command; too many of them end the session.
    fn bad(&mut self, text: &str) -> Vec<Action> {
        let steps = self.auth.bad(text);
        self.steps(steps)
    }

    /// RFC 2449 CAPA (`authorization`: in that state).
    fn capabilities(&self, authorization: bool) -> String {
        self.auth.capabilities(authorization)
    }
}

fn ok(text: &str) -> Action {
    if text.is_empty() {
        Action::Reply("+OK\r\n".into())
    } else {
        Action::Reply(format!("+OK {text}\r\n"))
    }
}

fn err(text: &str) -> Action {
    Action::Reply(format!("-ERR {text}\r\n"))
}

use auth::split_command;

/// A decimal number of at most 9 digits, no sign.
fn parse_number(s: &str) -> Option<usize> {
    if s.is_empty() || s.len() > 9 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pop3::codec::LineReader;
    use crate::store::Flags;

    fn config() -> SessionConfig {
        SessionConfig {
            stls_available: true,
            tls_active: false,
            plaintext_without_tls: true,
            max_bad_commands: 5,
            max_auth_failures: 3,
            auth_delay: Duration::from_secs(1),
            proxy_users: vec!["mmp@localhost".into()],
        }
    }

    fn meta(uid: Uid, size: u64) -> MessageMeta {
        MessageMeta {
            uid,
            flags: Flags::default(),
            internal_date: 0,
            tz_offset_min: 0,
            size,
            modseq: 1,
            offset: 0,
            save_date: 0,
        }
    }

    fn account() -> Account {
        Account::new("alice@example.test")
    }

    fn maildrop() -> Maildrop {
        Maildrop::new(7, 1234, vec![meta(3, 100), meta(5, 200), meta(9, 50)])
    }

    /// A fake driver: answers Authenticate with `outcome` for password
    /// "right", Failed otherwise; collects every reply.
    fn run(session: &mut Session, input: &[&[u8]]) -> Vec<Action> {
        let mut reader = LineReader::new(100);
        let mut out = Vec::new();
        for chunk in input {
            reader.push(chunk);
            while let Some(ev) = reader.next() {
                let mut queue = session.input(ev);
                while !queue.is_empty() {
                    let a = queue.remove(0);
                    match &a {
                        Action::Authenticate { password, .. } => {
                            let outcome = if password == "right pw" {
                                AuthOutcome::Ok {
                                    account: account(),
                                    maildrop: Box::new(maildrop()),
                                }
                            } else {
                                AuthOutcome::Failed
                            };
                            let more = session.auth_done(outcome);
                            queue.splice(0..0, more);
                        }
                        Action::StartTls => {
                            reader.clear();
                            session.tls_started();
                        }
                        Action::Update { deletions, .. } => {
                            let more = session.update_done(Ok(deletions.len()));
                            queue.splice(0..0, more);
                        }
                        _ => {}
                    }
                    out.push(a);
                }
            }
        }
        out
    }

    fn replies(actions: &[Action]) -> String {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Reply(s) => Some(s.as_str()),
                _ => None,
            })
            .collect()
    }

    fn login(s: &mut Session) {
        let a = run(s, &[b"USER alice\r\nPASS right pw\r\n"]);
        assert_eq!(
            replies(&a),
            "+OK send PASS\r\n+OK maildrop has 3 messages (350 octets)\r\n"
        );
    }

    #[test]
    fn rfc1939_full_session_is_the_same_split_at_every_byte() {
        let script: &[u8] = b"CAPA\r\nUSER alice\r\nPASS right pw\r\nSTAT\r\nLIST\r\nLIST 2\r\n\
UIDL\r\nUIDL 3\r\nDELE 1\r\nLIST 1\r\nRETR 1\r\nTOP 2 5\r\nRSET\r\nDELE 3\r\nQUIT\r\n";
        let whole = run(&mut Session::new(config()), &[script]);
        let text = replies(&whole);
        assert!(text.contains("+OK 3 350\r\n"), "{text}");
        assert!(
            text.contains("+OK 3 messages (350 octets)\r\n1 100\r\n2 200\r\n3 50\r\n.\r\n"),
            "{text}"
        );
        assert!(text.contains("+OK 2 200\r\n"));
        assert!(text.contains("1 1234.3\r\n2 1234.5\r\n3 1234.9\r\n.\r\n"));
        assert!(text.contains("+OK 3 1234.9\r\n"));
        assert!(text.contains("+OK message 1 deleted\r\n-ERR message 1 already deleted\r\n"));
        assert!(
            text.ends_with("+OK msgd POP3 server signing off\r\n"),
            "{text}"
        );
        assert!(whole.contains(&Action::Update {
            mailbox: 7,
            deletions: vec![9]
        }));
        assert!(whole.contains(&Action::SendMessage {
            index: 1,
            top_lines: Some(5),
            ok_line: "+OK top of message follows\r\n".into()
        }));
        assert_eq!(whole.last(), Some(&Action::Close));
        for i in 0..=script.len() {
            let (a, b) = script.split_at(i);
            assert_eq!(
                run(&mut Session::new(config()), &[a, b]),
                whole,
                "split {i}"
            );
        }
    }

    #[test]
    fn rfc1939_greeting() {
        let s = Session::new(config());
        assert_eq!(
            s.greeting(),
            Action::Reply("+OK msgd POP3 server ready\r\n".into())
        );
    }

    #[test]
    fn rfc1939_transaction_commands_refused_in_authorization() {
        let mut s = Session::new(config());
        let a = run(&mut s, &[b"STAT\r\nRETR 1\r\nPASS x\r\nFOO\r\n"]);
        assert_eq!(
            replies(&a),
            "-ERR command not valid in this state\r\n-ERR command not valid in this state\r\n\
-ERR USER first\r\n-ERR unknown command\r\n"
        );
    }

    #[test]
    fn rfc1939_pass_keeps_spaces_and_is_hidden_in_debug() {
        let mut s = Session::new(config());
        s.input(Input::Line(b"USER bob".to_vec()));
        let a = s.input(Input::Line(b"pass  two  words ".to_vec()));
        assert_eq!(
            a,
            vec![Action::Authenticate {
                login: "bob".into(),
                password: " two  words ".into()
            }]
        );
        let dbg = format!("{a:?}");
        assert!(!dbg.contains("words"), "{dbg}");
    }

    #[test]
    fn rfc1939_message_numbers_are_checked() {
        let mut s = Session::new(SessionConfig {
            max_bad_commands: 10,
            ..config()
        });
        login(&mut s);
        let a = run(
            &mut s,
            &[b"RETR 0\r\nRETR 4\r\nRETR x\r\nLIST -1\r\nTOP 1\r\nTOP 1 x\r\nDELE 99999999999999\r\n"],
        );
        assert_eq!(
            replies(&a),
            "-ERR no such message\r\n-ERR no such message\r\n-ERR invalid message number\r\n\
-ERR invalid message number\r\n-ERR wrong number of arguments\r\n-ERR invalid number of lines\r\n\
-ERR invalid message number\r\n"
        );
    }

    #[test]
    fn rfc1939_dele_hides_message_and_rset_restores() {
        let mut s = Session::new(config());
        login(&mut s);
        let a = run(
            &mut s,
            &[b"DELE 2\r\nSTAT\r\nLIST\r\nUIDL\r\nRETR 2\r\nDELE 2\r\nRSET\r\nSTAT\r\n"],
        );
        assert_eq!(
            replies(&a),
            "+OK message 2 deleted\r\n+OK 2 150\r\n+OK 2 messages (150 octets)\r\n1 100\r\n3 50\r\n.\r\n\
+OK unique-id listing follows\r\n1 1234.3\r\n3 1234.9\r\n.\r\n\
-ERR message 2 already deleted\r\n-ERR message 2 already deleted\r\n\
+OK maildrop has 3 messages (350 octets)\r\n+OK 3 350\r\n"
        );
        assert_eq!(s.maildrop().map(|m| m.deletions()), Some(vec![]));
    }

    #[test]
    fn rfc1939_quit_in_authorization_does_not_update() {
        let mut s = Session::new(config());
        let a = run(&mut s, &[b"USER a\r\nQUIT\r\n"]);
        assert_eq!(a.last(), Some(&Action::Close));
        assert!(!a.iter().any(|x| matches!(x, Action::Update { .. })));
    }

    #[test]
    fn rfc1939_quit_in_transaction_reports_deletions_in_uid_order() {
        let mut s = Session::new(config());
        login(&mut s);
        let a = s.input(Input::Line(b"DELE 3".to_vec()));
        assert_eq!(replies(&a), "+OK message 3 deleted\r\n");
        s.input(Input::Line(b"DELE 1".to_vec()));
        let a = s.input(Input::Line(b"QUIT".to_vec()));
        assert_eq!(
            a,
            vec![Action::Update {
                mailbox: 7,
                deletions: vec![3, 9]
            }]
        );
        // Nothing more is accepted until the driver reports.
        assert!(s.input(Input::Line(b"NOOP".to_vec())).is_empty());
        let a = s.update_done(Err(()));
        assert_eq!(
            a,
            vec![
                Action::Reply("-ERR [SYS/TEMP] some deleted messages not removed\r\n".into()),
                Action::Close
            ]
        );
    }

    #[test]
    fn rfc2449_capa_lists_capabilities_by_state() {
        let mut s = Session::new(config());
        let a = run(&mut s, &[b"CAPA\r\n"]);
        assert_eq!(
            replies(&a),
            "+OK Capability list follows\r\nTOP\r\nUIDL\r\nUSER\r\nSASL PLAIN\r\nRESP-CODES\r\n\
PIPELINING\r\nAUTH-RESP-CODE\r\nSTLS\r\nIMPLEMENTATION msgd\r\n.\r\n"
        );
        login(&mut s);
        let a = run(&mut s, &[b"CAPA\r\n"]);
        assert_eq!(
            replies(&a),
            "+OK Capability list follows\r\nTOP\r\nUIDL\r\nRESP-CODES\r\n\
PIPELINING\r\nAUTH-RESP-CODE\r\nIMPLEMENTATION msgd\r\n.\r\n"
        );
    }

    #[test]
    fn rfc2595_no_plaintext_auth_without_tls_and_capa_hides_it() {
        let mut s = Session::new(SessionConfig {
            plaintext_without_tls: false,
            ..config()
        });
        let a = run(
            &mut s,
            &[b"CAPA\r\nUSER alice\r\nPASS right pw\r\nAUTH PLAIN AGFsaWNlAHJpZ2h0IHB3\r\n"],
        );
        let text = replies(&a);
        assert!(
            !text.contains("USER\r\n") && !text.contains("SASL"),
            "{text}"
        );
        assert!(text.contains("STLS\r\n"));
        assert_eq!(
            text.matches("-ERR [AUTH] TLS required\r\n").count(),
            3,
            "{text}"
        );
        assert!(!a.iter().any(|x| matches!(x, Action::Authenticate { .. })));
        // After STLS the same session may log in.
        let a = run(&mut s, &[b"STLS\r\n"]);
        assert_eq!(replies(&a), "+OK Begin TLS negotiation\r\n");
        let a = run(&mut s, &[b"USER alice\r\nPASS right pw\r\n"]);
        let text = replies(&a);
        assert!(text.starts_with("+OK send PASS\r\n+OK maildrop"), "{text}");
        assert!(s.tls_active());
    }

    #[test]
    fn rfc2595_stls_discards_pipelined_plaintext_and_resets_state() {
        let mut s = Session::new(config());
        let a = run(&mut s, &[b"USER alice\r\nSTLS\r\nPASS right pw\r\n"]);
        // The PASS after STLS was plaintext pipelined behind it: dropped.
        assert_eq!(
            replies(&a),
            "+OK send PASS\r\n+OK Begin TLS negotiation\r\n"
        );
        assert!(a.contains(&Action::StartTls));
        // USER given before TLS is forgotten.
        let a = run(&mut s, &[b"PASS right pw\r\nSTLS\r\nCAPA\r\n"]);
        let text = replies(&a);
        assert!(
            text.starts_with("-ERR USER first\r\n-ERR command not permitted when TLS active\r\n")
        );
        assert!(!text.contains("STLS\r\n"), "{text}");
    }

    #[test]
    fn rfc2595_stls_not_offered_on_implicit_tls_or_plain_listener() {
        let mut s = Session::new(SessionConfig {
            stls_available: false,
            ..config()
        });
        let a = run(&mut s, &[b"CAPA\r\nSTLS\r\n"]);
        let text = replies(&a);
        assert!(!text.contains("STLS\r\n"));
        assert!(text.ends_with("-ERR STLS not available\r\n"));
    }

    #[test]
    fn rfc5034_auth_plain_with_initial_response() {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(b"\0alice\0right pw");
        let mut s = Session::new(config());
        let a = s.input(Input::Line(format!("AUTH PLAIN {b64}").into_bytes()));
        assert_eq!(
            a,
            vec![Action::Authenticate {
                login: "alice".into(),
                password: "right pw".into()
            }]
        );
    }

    #[test]
    fn rfc5034_auth_plain_after_continuation_and_cancel() {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(b"alice\0alice\0right pw");
        let mut s = Session::new(config());
        let script = format!("AUTH PLAIN\r\n*\r\nauth plain\r\n{b64}\r\nSTAT\r\n");
        let a = run(&mut s, &[script.as_bytes()]);
        assert_eq!(
            replies(&a),
            "+ \r\n-ERR authentication cancelled\r\n+ \r\n+OK maildrop has 3 messages (350 octets)\r\n+OK 3 350\r\n"
        );
    }

    #[test]
    fn rfc5034_auth_plain_rejects_bad_data_and_other_mechanisms() {
        use base64::Engine;
        let e = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let mut s = Session::new(config());
        let script = format!(
            "AUTH CRAM-MD5\r\nAUTH PLAIN !!!\r\nAUTH PLAIN {}\r\nAUTH PLAIN =\r\nAUTH PLAIN {}\r\n",
            e(b"only\0two"),
            e(b"bob\0alice\0right pw"),
        );
        let a = run(&mut s, &[script.as_bytes()]);
        assert_eq!(
            replies(&a),
            "-ERR unsupported authentication mechanism\r\n-ERR invalid base64\r\n\
-ERR malformed PLAIN response\r\n-ERR malformed PLAIN response\r\n\
-ERR [AUTH] not authorized to act as that user\r\n"
        );
        assert!(!a.iter().any(|x| matches!(x, Action::Authenticate { .. })));
    }

    #[test]
    fn rfc4616_authzid_is_honoured_only_for_proxy_users() {
        use base64::Engine;
        let e = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let mut s = Session::new(config());
        let a = s.input(Input::Line(
            format!(
                "AUTH PLAIN {}",
                e(b"alice@localhost\0MMP@localhost\0proxy pw")
            )
            .into_bytes(),
        ));
        assert_eq!(
            a,
            vec![Action::AuthenticateAs {
                login: "MMP@localhost".into(),
                password: "proxy pw".into(),
                authzid: "alice@localhost".into(),
            }]
        );
        assert!(!format!("{a:?}").contains("proxy pw"));
        let mut s = Session::new(config());
        let a = s.input(Input::Line(
            format!("AUTH PLAIN {}", e(b"alice@localhost\0bob@localhost\0pw")).into_bytes(),
        ));
        assert_eq!(
            replies(&a),
            "-ERR [AUTH] not authorized to act as that user\r\n"
        );
    }

    #[test]
    fn rfc3206_auth_failures_delay_grow_and_close() {
        let mut s = Session::new(config());
        let a = run(
            &mut s,
            &[b"USER a\r\nPASS no\r\nUSER a\r\nPASS no\r\nUSER a\r\nPASS no\r\nNOOP\r\n"],
        );
        let delays: Vec<Duration> = a
            .iter()
            .filter_map(|x| match x {
                Action::Delay(d) => Some(*d),
                _ => None,
            })
            .collect();
        assert_eq!(
            delays,
            vec![
                Duration::from_secs(1),
                Duration::from_secs(2),
                Duration::from_secs(4)
            ]
        );
        let text = replies(&a);
        assert_eq!(
            text.matches("-ERR [AUTH] Authentication failed\r\n")
                .count(),
            3
        );
        assert!(text.ends_with("-ERR [AUTH] too many authentication failures\r\n"));
        assert_eq!(a.last(), Some(&Action::Close));
    }

    #[test]
    fn rfc3206_inactive_and_temporary_failures_have_codes() {
        let mut s = Session::new(config());
        s.input(Input::Line(b"USER a".to_vec()));
        s.input(Input::Line(b"PASS x".to_vec()));
        assert_eq!(
            s.auth_done(AuthOutcome::Inactive),
            vec![Action::Reply("-ERR [AUTH] account disabled\r\n".into())]
        );
        s.input(Input::Line(b"USER a".to_vec()));
        s.input(Input::Line(b"PASS x".to_vec()));
        assert_eq!(
            s.auth_done(AuthOutcome::DirectoryUnavailable),
            vec![Action::Reply(
                "-ERR [SYS/TEMP] directory unavailable\r\n".into()
            )]
        );
        // Back in AUTHORIZATION: a new attempt is possible.
        assert_eq!(
            replies(&s.input(Input::Line(b"USER a".to_vec()))),
            "+OK send PASS\r\n"
        );
    }

    #[test]
    fn too_long_lines_and_bad_commands_close_the_session() {
        let mut s = Session::new(config());
        let mut long = vec![b'X'; 300];
        long.extend_from_slice(b"\r\n");
        let a = run(&mut s, &[&long, b"NOOP\r\nBLAH\r\n\r\nLIST\r\nCAPA\r\n"]);
        assert_eq!(
            replies(&a),
            "-ERR line too long\r\n-ERR command not valid in this state\r\n-ERR unknown command\r\n\
-ERR unknown command\r\n-ERR command not valid in this state\r\n-ERR too many bad commands\r\n"
        );
        assert_eq!(a.last(), Some(&Action::Close));
    }

    #[test]
    fn rfc1939_keywords_are_case_insensitive() {
        let mut s = Session::new(config());
        let a = run(
            &mut s,
            &[b"user alice\r\nPaSs right pw\r\nstat\r\nuidl 1\r\n"],
        );
        assert!(replies(&a).ends_with("+OK 3 350\r\n+OK 1 1234.3\r\n"));
    }
}
