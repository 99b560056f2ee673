//! The one IMAP command type: every command a client can send, grouped by
//! the state it is valid in (RFC 9051 6.1 to 6.4).
//!
//! Two grammars feed it. imap-codec (`CommandCodec`) parses what it covers
//! (the RFC 9051 base commands and the extensions it implements: STARTTLS,
//! ID, NAMESPACE, COMPRESS, QUOTA, CONDSTORE/QRESYNC SELECT parameters).
//! msgd's own parser (`command`) parses the extended forms imap-codec lacks
//! or gets wrong for us (FETCH/SEARCH/SORT/THREAD with RETURN options and
//! modifiers, LIST-EXTENDED, STATUS=SIZE, ACL, METADATA, MULTIAPPEND,
//! CATENATE, REPLACE, URLAUTH, NOTIFY, UNAUTHENTICATE); it is tried first
//! and declines commands it does not know. `parse` turns either result into
//! one [`Command`], so the session dispatches on one type: the group a
//! command is in decides the states it may run in, and the handlers of a
//! group are only reached from the state that allows them.
//!
//! Invariants:
//! - Parsing borrows nothing: a `Command` owns its arguments, so the input
//!   buffer can be reused while the command runs.
//! - A password never appears in Debug output (`Secret`).

use imap_codec::decode::Decoder;
use imap_codec::CommandCodec;
use imap_types::auth::AuthMechanism;
use imap_types::command::{CommandBody, SelectParameter};
use imap_types::mailbox::{ListMailbox, Mailbox};

use super::command::{self, Cmd};
use super::framer;
use crate::redact::Secret;

/// Commands valid in every state (RFC 9051 6.1).
#[derive(Debug)]
pub(crate) enum AnyState {
    Capability,
    Noop,
    Logout,
    /// ID (RFC 2971): the client's fields, raw.
    Id(Vec<(Vec<u8>, Option<Vec<u8>>)>),
}

/// SASL data that is not UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NotUtf8;

/// Commands valid only before login (RFC 9051 6.2).
#[derive(Debug)]
pub(crate) enum NotAuthenticated {
    StartTls,
    Login {
        user: String,
        pass: Secret,
    },
    Authenticate {
        /// PLAIN is the one mechanism served.
        plain: bool,
        /// SASL-IR (RFC 4959), already base64-decoded; `Err` when it is
        /// not UTF-8 (RFC 4616 PLAIN data must be).
        initial: Option<Result<Secret, NotUtf8>>,
    },
}

/// Commands valid once logged in, with or without a selected mailbox
/// (RFC 9051 6.3, and the extensions of that state).
#[derive(Debug)]
pub(crate) enum Authenticated {
    Namespace,
    Select {
        mailbox: Vec<u8>,
        read_only: bool,
        params: Vec<SelectParameter>,
    },
    Delete(Vec<u8>),
    Rename {
        from: Vec<u8>,
        to: Vec<u8>,
    },
    Subscribe {
        mailbox: Vec<u8>,
        on: bool,
    },
    Lsub {
        reference: Vec<u8>,
        pattern: Vec<u8>,
    },
    Idle,
    Compress,
    GetQuotaRoot(Vec<u8>),
    GetQuota(Vec<u8>),
    SetQuota,
    /// A command imap-codec parsed that msgd does not serve.
    Unsupported,
    /// msgd's parser: LIST, CREATE, STATUS, ENABLE, ACL, METADATA, APPEND,
    /// UNAUTHENTICATE, CATENATE, GENURLAUTH, RESETKEY, URLFETCH, NOTIFY.
    /// Never one of the selected-state `Cmd`s (`parse` sorts them).
    Ext(Cmd),
}

/// Commands valid only with a mailbox selected (RFC 9051 6.4).
#[derive(Debug)]
pub(crate) enum Selected {
    Check,
    Close,
    Unselect,
    Expunge,
    /// msgd's parser: FETCH, STORE, COPY/MOVE, UID EXPUNGE, SEARCH, SORT,
    /// THREAD, REPLACE, CANCELUPDATE (`needs_selected`).
    Ext(Cmd),
}

/// A parsed command, by the state it needs.
#[derive(Debug)]
pub(crate) enum Command {
    Any(AnyState),
    NotAuthenticated(NotAuthenticated),
    Authenticated(Authenticated),
    Selected(Selected),
}

impl Command {
    /// For the log.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Any(c) => match c {
                AnyState::Capability => "CAPABILITY",
                AnyState::Noop => "NOOP",
                AnyState::Logout => "LOGOUT",
                AnyState::Id(_) => "ID",
            },
            Command::NotAuthenticated(c) => match c {
                NotAuthenticated::StartTls => "STARTTLS",
                NotAuthenticated::Login { .. } => "LOGIN",
                NotAuthenticated::Authenticate { .. } => "AUTHENTICATE",
            },
            Command::Authenticated(c) => match c {
                Authenticated::Namespace => "NAMESPACE",
                Authenticated::Select {
                    read_only: false, ..
                } => "SELECT",
                Authenticated::Select { .. } => "EXAMINE",
                Authenticated::Delete(_) => "DELETE",
                Authenticated::Rename { .. } => "RENAME",
                Authenticated::Subscribe { on: true, .. } => "SUBSCRIBE",
                Authenticated::Subscribe { .. } => "UNSUBSCRIBE",
                Authenticated::Lsub { .. } => "LSUB",
                Authenticated::Idle => "IDLE",
                Authenticated::Compress => "COMPRESS",
                Authenticated::GetQuotaRoot(_) => "GETQUOTAROOT",
                Authenticated::GetQuota(_) => "GETQUOTA",
                Authenticated::SetQuota => "SETQUOTA",
                Authenticated::Unsupported => "unsupported",
                Authenticated::Ext(c) => c.name(),
            },
            Command::Selected(c) => match c {
                Selected::Check => "CHECK",
                Selected::Close => "CLOSE",
                Selected::Unselect => "UNSELECT",
                Selected::Expunge => "EXPUNGE",
                Selected::Ext(c) => c.name(),
            },
        }
    }

    /// RFC 9051 7.5.1: no EXPUNGE response during or right after a command
    /// that uses message sequence numbers (FETCH, STORE, SEARCH).
    pub fn by_sequence_number(&self) -> bool {
        match self {
            Command::Selected(Selected::Ext(c)) | Command::Authenticated(Authenticated::Ext(c)) => {
                c.by_sequence_number()
            }
            _ => false,
        }
    }
}

/// What `parse` made of one framed command.
#[derive(Debug)]
pub(crate) enum Parsed {
    Command {
        tag: String,
        command: Command,
    },
    /// msgd's parser recognised the command but not its arguments.
    Syntax {
        tag: String,
        /// The command's name (`SEARCH` empties `$` on failure, RFC 5182).
        command: String,
        reason: String,
    },
    /// Neither grammar knows it.
    Unparsable {
        tag: String,
    },
}

/// Parses one framed command (line and literals, as the framer gave it).
pub(crate) fn parse(bytes: &[u8]) -> Parsed {
    match command::parse(bytes) {
        Some(Ok((tag, cmd))) => {
            let command = if needs_selected(&cmd) {
                Command::Selected(Selected::Ext(cmd))
            } else {
                Command::Authenticated(Authenticated::Ext(cmd))
            };
            return Parsed::Command { tag, command };
        }
        Some(Err(e)) => {
            return Parsed::Syntax {
                tag: e.tag,
                command: e.command,
                reason: e.reason.to_string(),
            }
        }
        None => {}
    }
    match CommandCodec::default().decode(bytes) {
        Ok((&[], cmd)) => Parsed::Command {
            tag: cmd.tag.inner().to_string(),
            command: from_codec(cmd.body),
        },
        _ => Parsed::Unparsable {
            tag: framer::parse_tag(bytes).unwrap_or_else(|| "*".into()),
        },
    }
}

/// msgd's commands that are valid only with a mailbox selected.
fn needs_selected(cmd: &Cmd) -> bool {
    matches!(
        cmd,
        Cmd::Fetch { .. }
            | Cmd::Store { .. }
            | Cmd::Copy { .. }
            | Cmd::UidExpunge { .. }
            | Cmd::Search { .. }
            | Cmd::Sort { .. }
            | Cmd::Thread { .. }
            | Cmd::Replace { .. }
            | Cmd::CancelUpdate { .. }
    )
}

/// The raw bytes of a mailbox argument parsed by imap-codec.
fn mailbox_bytes(m: &Mailbox<'_>) -> Vec<u8> {
    match m {
        Mailbox::Inbox => b"INBOX".to_vec(),
        Mailbox::Other(o) => o.as_ref().to_vec(),
    }
}

fn from_codec(body: CommandBody<'_>) -> Command {
    use Authenticated as A;
    match body {
        CommandBody::Capability => Command::Any(AnyState::Capability),
        CommandBody::Noop => Command::Any(AnyState::Noop),
        CommandBody::Logout => Command::Any(AnyState::Logout),
        CommandBody::Id { parameters } => Command::Any(AnyState::Id(
            parameters
                .unwrap_or_default()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_ref().to_vec(),
                        v.0.as_ref().map(|v| v.as_ref().to_vec()),
                    )
                })
                .collect(),
        )),
        CommandBody::StartTLS => Command::NotAuthenticated(NotAuthenticated::StartTls),
        CommandBody::Login { username, password } => {
            Command::NotAuthenticated(NotAuthenticated::Login {
                user: String::from_utf8_lossy(username.as_ref()).into_owned(),
                pass: Secret::from(
                    String::from_utf8_lossy(password.declassify().as_ref()).into_owned(),
                ),
            })
        }
        CommandBody::Authenticate {
            mechanism,
            initial_response,
        } => Command::NotAuthenticated(NotAuthenticated::Authenticate {
            plain: mechanism == AuthMechanism::Plain,
            initial: initial_response.map(|d| {
                String::from_utf8(d.declassify().to_vec())
                    .map(Secret::from)
                    .map_err(|_| NotUtf8)
            }),
        }),
        CommandBody::Namespace => Command::Authenticated(A::Namespace),
        CommandBody::Select {
            mailbox,
            parameters,
        } => Command::Authenticated(A::Select {
            mailbox: mailbox_bytes(&mailbox),
            read_only: false,
            params: parameters,
        }),
        CommandBody::Examine {
            mailbox,
            parameters,
        } => Command::Authenticated(A::Select {
            mailbox: mailbox_bytes(&mailbox),
            read_only: true,
            params: parameters,
        }),
        CommandBody::Delete { mailbox } => {
            Command::Authenticated(A::Delete(mailbox_bytes(&mailbox)))
        }
        CommandBody::Rename { from, to } => Command::Authenticated(A::Rename {
            from: mailbox_bytes(&from),
            to: mailbox_bytes(&to),
        }),
        CommandBody::Subscribe { mailbox } => Command::Authenticated(A::Subscribe {
            mailbox: mailbox_bytes(&mailbox),
            on: true,
        }),
        CommandBody::Unsubscribe { mailbox } => Command::Authenticated(A::Subscribe {
            mailbox: mailbox_bytes(&mailbox),
            on: false,
        }),
        CommandBody::Lsub {
            reference,
            mailbox_wildcard,
        } => Command::Authenticated(A::Lsub {
            reference: mailbox_bytes(&reference),
            pattern: match &mailbox_wildcard {
                ListMailbox::Token(t) => t.as_ref().to_vec(),
                ListMailbox::String(s) => s.as_ref().to_vec(),
            },
        }),
        CommandBody::Idle => Command::Authenticated(A::Idle),
        CommandBody::Compress { .. } => Command::Authenticated(A::Compress),
        CommandBody::GetQuotaRoot { mailbox } => {
            Command::Authenticated(A::GetQuotaRoot(mailbox_bytes(&mailbox)))
        }
        CommandBody::GetQuota { root } => {
            Command::Authenticated(A::GetQuota(root.as_ref().to_vec()))
        }
        CommandBody::SetQuota { .. } => Command::Authenticated(A::SetQuota),
        CommandBody::Check => Command::Selected(Selected::Check),
        CommandBody::Close => Command::Selected(Selected::Close),
        CommandBody::Unselect => Command::Selected(Selected::Unselect),
        CommandBody::Expunge => Command::Selected(Selected::Expunge),
        _ => Command::Authenticated(A::Unsupported),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(line: &str) -> Command {
        match parse(line.as_bytes()) {
            Parsed::Command { command, .. } => command,
            other => panic!("{line}: {other:?}"),
        }
    }

    /// RFC 9051 6.1 to 6.4: every command lands in the group of the state
    /// it is valid in, whichever grammar parsed it.
    #[test]
    fn rfc9051_6_commands_are_grouped_by_state() {
        for l in [
            "a CAPABILITY\r\n",
            "a NOOP\r\n",
            "a LOGOUT\r\n",
            "a ID NIL\r\n",
        ] {
            assert!(matches!(cmd(l), Command::Any(_)), "{l}");
        }
        for l in [
            "a STARTTLS\r\n",
            "a LOGIN u p\r\n",
            "a AUTHENTICATE PLAIN\r\n",
        ] {
            assert!(matches!(cmd(l), Command::NotAuthenticated(_)), "{l}");
        }
        for l in [
            "a SELECT INBOX\r\n",
            "a EXAMINE INBOX\r\n",
            "a LIST \"\" *\r\n",
            "a STATUS INBOX (MESSAGES)\r\n",
            "a IDLE\r\n",
            "a ENABLE CONDSTORE\r\n",
            "a UNAUTHENTICATE\r\n",
            "a NAMESPACE\r\n",
        ] {
            assert!(matches!(cmd(l), Command::Authenticated(_)), "{l}");
        }
        for l in [
            "a FETCH 1 FLAGS\r\n",
            "a UID STORE 1 +FLAGS (\\Seen)\r\n",
            "a SEARCH ALL\r\n",
            "a UID MOVE 1 Trash\r\n",
            "a CHECK\r\n",
            "a CLOSE\r\n",
            "a UNSELECT\r\n",
            "a EXPUNGE\r\n",
            "a UID EXPUNGE 1\r\n",
        ] {
            assert!(matches!(cmd(l), Command::Selected(_)), "{l}");
        }
    }

    #[test]
    fn login_password_is_not_in_debug_output() {
        let c = cmd("a LOGIN alice s3cret-pw\r\n");
        assert!(!format!("{c:?}").contains("s3cret-pw"));
    }

    #[test]
    fn unknown_and_malformed_commands() {
        assert!(matches!(
            parse(b"t1 FROBNICATE\r\n"),
            Parsed::Unparsable { tag } if tag == "t1"
        ));
        assert!(matches!(
            parse(b"t2 SEARCH (((\r\n"),
            Parsed::Syntax { tag, command, .. } if tag == "t2" && command == "SEARCH"
        ));
    }
}
