//! POP3: the line reader and dot-stuffer (`pop3::codec`) and the session
//! core (`pop3::session`) behind a scripted driver.

use std::time::Duration;

use rand::Rng as _;

use super::gen::{bytes, number, pick, word};
use super::{pieces, splits, Rng, Target};
use crate::directory::Account;
use crate::pop3::codec::{DotStuffer, Input, LineReader};
use crate::pop3::session::{Action, AuthOutcome, Maildrop, Session, SessionConfig};
use crate::store::{Flags, MessageMeta};

const MAX_LINE: usize = 255;

pub(crate) static POP3: Target = Target {
    name: "pop3",
    check: check_pop3,
    generate: gen_pop3,
    deep: deep_pop3,
    cases: 500,
    dict: &[
        b"\r\n",
        b"\n",
        b"USER a\r\n",
        b"PASS right pw\r\n",
        b"AUTH PLAIN\r\n",
        b"AUTH PLAIN AGFsaWNlAHJpZ2h0IHB3\r\n",
        b"RETR 1\r\n",
        b"TOP 1 18446744073709551615\r\n",
        b"DELE 4294967296\r\n",
        b"UIDL\r\n",
        b"QUIT\r\n",
        b"*\r\n",
    ],
};

fn config(h: u64) -> SessionConfig {
    SessionConfig {
        stls_available: false,
        tls_active: h.is_multiple_of(2),
        plaintext_without_tls: !h.is_multiple_of(3),
        max_bad_commands: 30,
        max_auth_failures: 5,
        auth_delay: Duration::from_millis(1),
        proxy_users: vec!["mmp@localhost".into()],
    }
}

fn account(name: &str) -> Account {
    Account::new(name)
}

fn maildrop() -> Maildrop {
    let meta = |uid, size| MessageMeta {
        uid,
        flags: Flags::default(),
        internal_date: 0,
        tz_offset_min: 0,
        size,
        modseq: 1,
        offset: 0,
        save_date: 0,
    };
    Maildrop::new(
        7,
        1234,
        vec![
            meta(3, 100),
            meta(5, 200),
            meta(9, 50),
            meta(u32::MAX, u64::from(u32::MAX)),
        ],
    )
}

/// Lines, then the session's actions (Debug text), for these pieces.
fn run(h: u64, parts: &[&[u8]]) -> (Vec<Input>, Vec<String>) {
    let mut reader = LineReader::new(MAX_LINE);
    let mut session = Session::new(config(h));
    let mut inputs = Vec::new();
    let mut actions = vec![format!("{:?}", session.greeting())];
    let mut closed = false;
    for part in super::reads(parts) {
        reader.push(part);
        while let Some(ev) = reader.next() {
            if let Input::Line(l) = &ev {
                assert!(l.len() <= MAX_LINE);
            }
            inputs.push(ev.clone());
            if closed {
                continue;
            }
            let mut queue = session.input(ev);
            while !queue.is_empty() {
                let a = queue.remove(0);
                let more = match &a {
                    Action::Authenticate { password, login } => {
                        Some(session.auth_done(outcome(password, login)))
                    }
                    Action::AuthenticateAs {
                        password, authzid, ..
                    } => Some(session.auth_done(outcome(password, authzid))),
                    Action::Update { deletions, .. } => {
                        Some(session.update_done(Ok(deletions.len())))
                    }
                    Action::SendMessage {
                        index, top_lines, ..
                    } => {
                        assert!(*index < 4, "message index {index} out of range");
                        let data = b"Subject: x\r\n\r\n.line\r\nlast";
                        let out = stuff(data, *top_lines, 7);
                        assert!(out.ends_with(b".\r\n"));
                        None
                    }
                    Action::Close => {
                        closed = true;
                        None
                    }
                    _ => None,
                };
                actions.push(format!("{a:?}"));
                if let Some(more) = more {
                    queue.splice(0..0, more);
                }
            }
        }
    }
    (inputs, actions)
}

fn outcome(password: &str, login: &str) -> AuthOutcome {
    match password {
        "right pw" => AuthOutcome::Ok {
            account: account(login),
            maildrop: Box::new(maildrop()),
        },
        "inactive" => AuthOutcome::Inactive,
        "down" => AuthOutcome::DirectoryUnavailable,
        _ => AuthOutcome::Failed,
    }
}

fn check_pop3(input: &[u8]) {
    let h = super::fnv(input);
    let whole = run(h, &[input]);
    let cuts = splits(input);
    let split = run(h, &pieces(input, &cuts));
    assert_eq!(
        whole, split,
        "POP3 lines or replies depend on the split at {cuts:?}"
    );
    // The dot-stuffer: any message, any chunk size, ends in exactly one
    // terminator and never grows more than 2x + 5.
    let top = h.is_multiple_of(5).then_some((h >> 8) as usize % 4);
    let out = stuff(input, top, 1 + (h >> 16) as usize % 64);
    assert!(out.ends_with(b".\r\n"));
    assert!(out.len() <= 2 * input.len() + 5);
    assert_eq!(
        out,
        stuff(input, top, input.len().max(1)),
        "the stuffed message depends on the pieces it was read in"
    );
}

/// The whole dot-stuffed output, the message fed `max` bytes at a time as
/// the driver feeds file reads.
fn stuff(data: &[u8], top: Option<usize>, max: usize) -> Vec<u8> {
    let mut d = DotStuffer::new(top);
    let mut all = Vec::new();
    for piece in data.chunks(max) {
        if d.push(piece, &mut all) {
            return all;
        }
    }
    d.finish(&mut all);
    all
}

fn deep_pop3() -> Vec<Vec<u8>> {
    let mut big = b"USER ".to_vec();
    big.extend(vec![b'a'; 1 << 20]);
    big.extend_from_slice(b"\r\nUSER a\r\nPASS right pw\r\nLIST\r\n");
    vec![
        big,
        vec![b'\n'; 1 << 20],
        b"USER a\r\nPASS right pw\r\n"
            .iter()
            .copied()
            .chain(b"RETR 1\r\nTOP 2 99999999999999999999\r\nDELE 4\r\n".repeat(20_000))
            .collect(),
        b"AUTH PLAIN\r\n"
            .iter()
            .copied()
            .chain(vec![b'A'; 1 << 20])
            .collect(),
    ]
}

fn gen_pop3(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    if rng.gen_ratio(2, 3) {
        out.extend_from_slice(pick(
            rng,
            &[
                b"USER alice\r\nPASS right pw\r\n" as &[u8],
                b"AUTH PLAIN AGFsaWNlAHJpZ2h0IHB3\r\n",
                b"AUTH PLAIN\r\nbW1wQGxvY2FsaG9zdABtbXBAbG9jYWxob3N0AHJpZ2h0IHB3\r\n",
            ],
        ));
    }
    for _ in 0..rng.gen_range(1..15) {
        let line = match rng.gen_range(0..12) {
            0 => format!(
                "{} {}",
                pick(rng, &["RETR", "DELE", "LIST", "UIDL"]),
                number(rng)
            ),
            1 => format!("TOP {} {}", number(rng), number(rng)),
            2 => pick(
                rng,
                &[
                    "STAT", "LIST", "UIDL", "NOOP", "RSET", "QUIT", "CAPA", "STLS", "APOP a b",
                ],
            )
            .to_string(),
            3 => format!("USER {}", word(rng)),
            4 => format!(
                "PASS {}",
                pick(rng, &["right pw", "wrong", "inactive", "down", ""])
            ),
            5 => format!(
                "AUTH {}",
                pick(rng, &["PLAIN", "PLAIN =", "PLAIN ***", "LOGIN", "X", ""])
            ),
            6 => String::from_utf8_lossy(&bytes(rng, 40)).into_owned(),
            _ => format!(
                "{} {}",
                pick(rng, &["RETR", "TOP", "DELE"]),
                rng.gen_range(0..6)
            ),
        };
        out.extend(line.bytes());
        out.extend_from_slice(pick(rng, &[b"\r\n" as &[u8], b"\r\n", b"\n"]));
    }
    out
}
