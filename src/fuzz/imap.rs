//! IMAP: the server's framer (`imap::framer`), the mmp's framer
//! (`mmp::framer`), the stress client's response framer and decoder
//! (`stress::wire`), command parsing (`imap::command`, then imap-codec for
//! the rest), sequence sets, SEARCH keys and modified UTF-7.

use std::sync::Arc;

use imap_codec::decode::Decoder;
use imap_codec::CommandCodec;
use rand::Rng as _;

use super::gen::{bytes, number, pick, word};
use super::{pieces, splits, Rng, Target};
use crate::imap::command::{self, SeqSet};
use crate::imap::framer::{Event, Framer};
use crate::imap::search::{self, MessageView};
use crate::imap::utf7;
use crate::mmp::framer::{Frame, Framer as MmpFramer};
use crate::store::Flags;
use crate::stress::wire;

const MAX_LINE: usize = 1024;
const MAX_LITERAL: u64 = 8192;

const DICT: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"{0}\r\n",
    b"{5}\r\n",
    b"{5+}\r\n",
    b"{9223372036854775808}\r\n",
    b"{18446744073709551615+}\r\n",
    b"{4294967296}\r\n",
    b"~{3}\r\n",
    b"A1 ",
    b"UID ",
    b"FETCH ",
    b"SEARCH ",
    b"NOT ",
    b"OR ",
    b"(",
    b")",
    b"1:*",
    b"$",
    b"*",
    b"\"",
    b"\\",
    b"BODY[1.2.HEADER.FIELDS (From)]<0.10>",
    b"BINARY[1]",
    b"&AOk-",
    b"&-",
    b"CHARSET UTF-8 ",
];

// ---------------------------------------------------------------------------
// Framers
// ---------------------------------------------------------------------------

pub(crate) static FRAMER: Target = Target {
    name: "imap_framer",
    check: check_framer,
    generate: gen_commands,
    deep: deep_framing,
    cases: 600,
    dict: DICT,
};

fn frame(parts: &[&[u8]], line_mode_at: Option<usize>, minus: bool) -> Vec<Event> {
    let mut f = Framer::new(MAX_LINE, MAX_LITERAL);
    if minus {
        f.set_max_nonsync(Some(crate::imap::framer::LITERAL_MINUS_MAX));
    }
    let mut out = Vec::new();
    for part in super::reads(parts) {
        f.push(part);
        while let Some(ev) = f.next() {
            match &ev {
                Event::Command(c) => {
                    assert!(
                        c.len() as u64 <= MAX_LITERAL + 4 * MAX_LINE as u64,
                        "command of {} bytes passed the framer",
                        c.len()
                    );
                }
                Event::Line(l) => assert!(l.len() <= MAX_LINE, "line of {}", l.len()),
                _ => {}
            }
            // The driver switches to line mode (AUTHENTICATE, IDLE) after a
            // whole command; driven by events, so split-independent.
            let whole_command = matches!(ev, Event::Command(_));
            out.push(ev);
            if whole_command && line_mode_at == Some(out.len()) {
                f.set_line_mode(true);
            }
        }
    }
    out
}

fn check_framer(input: &[u8]) {
    let h = super::fnv(input);
    let line_mode_at = h.is_multiple_of(4).then_some((h >> 8) as usize % 4);
    let minus = h & 0x100 != 0;
    let whole = frame(&[input], line_mode_at, minus);
    let cuts = splits(input);
    let split = frame(&pieces(input, &cuts), line_mode_at, minus);
    assert_eq!(
        whole, split,
        "IMAP framing depends on the split at {cuts:?}"
    );
    // Every framed command goes through the command parsers unharmed.
    for ev in whole.iter().take(50) {
        if let Event::Command(c) = ev {
            parse_command(c);
        }
    }
    check_framers_agree(input);
}

/// The mmp relays what its framer cuts out to a store that frames with
/// `imap::framer`: within both limits they must cut the same commands, or
/// a literal the mmp passed as data would be a command at the store.
fn check_framers_agree(input: &[u8]) {
    let big = 1 << 20;
    let mut store = Framer::new(big, big as u64);
    store.push(input);
    let mut commands = Vec::new();
    while let Some(ev) = store.next() {
        match ev {
            Event::Command(c) => commands.push(c),
            Event::Continue => {}
            // A refusal: the two may legitimately differ from here on.
            _ => return,
        }
    }
    let mut mmp = MmpFramer::new(4 * big, false);
    mmp.push(input);
    let mut messages = Vec::new();
    while let Some(fr) = mmp.next() {
        match fr {
            Frame::Message(m) => messages.push(m),
            _ => return,
        }
    }
    let n = commands.len().min(messages.len());
    assert_eq!(
        commands[..n],
        messages[..n],
        "the mmp and the store frame commands differently"
    );
}

pub(crate) static MMP_FRAMER: Target = Target {
    name: "mmp_framer",
    check: check_mmp_framer,
    generate: gen_commands,
    deep: deep_framing,
    cases: 500,
    dict: DICT,
};

fn mmp_frames(parts: &[&[u8]], continuations: bool) -> (Vec<Frame>, Vec<u8>) {
    let max = 4096;
    let mut f = MmpFramer::new(max, continuations);
    let mut out = Vec::new();
    for part in super::reads(parts) {
        f.push(part);
        while let Some(fr) = f.next() {
            if let Frame::Message(m) = &fr {
                assert!(m.len() <= max, "message of {} bytes passed", m.len());
            }
            out.push(fr);
        }
    }
    (out, f.take_rest())
}

fn check_mmp_framer(input: &[u8]) {
    let cuts = splits(input);
    let (whole, rest) = mmp_frames(&[input], false);
    let (split, split_rest) = mmp_frames(&pieces(input, &cuts), false);
    assert_eq!(whole, split, "mmp framing depends on the split at {cuts:?}");
    assert_eq!(rest, split_rest);
    // With continuations the frames are the same, plus Continue events.
    let (cont, _) = mmp_frames(&pieces(input, &cuts), true);
    let cont: Vec<Frame> = cont.into_iter().filter(|f| *f != Frame::Continue).collect();
    assert_eq!(whole, cont, "continuations change the frames");
    // next_line on the same bytes never panics.
    let mut f = MmpFramer::new(512, true);
    f.push(input);
    while let Some(l) = f.next_line() {
        if let Ok(l) = l {
            assert!(l.len() < 512);
        }
    }
}

pub(crate) static STRESS_WIRE: Target = Target {
    name: "stress_wire",
    check: check_stress_wire,
    generate: gen_responses,
    deep: deep_framing,
    cases: 400,
    dict: DICT,
};

fn responses(parts: &[&[u8]]) -> Result<Vec<Vec<u8>>, wire::FrameError> {
    let mut f = wire::Framer::default();
    let mut out = Vec::new();
    for part in super::reads(parts) {
        f.push(part);
        while let Some(r) = f.next()? {
            out.push(r);
        }
    }
    Ok(out)
}

fn check_stress_wire(input: &[u8]) {
    let cuts = splits(input);
    let whole = responses(&[input]);
    let split = responses(&pieces(input, &cuts));
    if let (Ok(a), Ok(b)) = (&whole, &split) {
        assert_eq!(a, b, "response framing depends on the split at {cuts:?}");
        let framed = a.concat();
        assert!(
            input.starts_with(&framed),
            "responses are not the input's prefix"
        );
        for r in a.iter().take(50) {
            let _ = wire::decode(r);
            let _ = wire::decode_greeting(r);
            let _ = wire::show(r);
        }
    }
}

fn deep_framing() -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    // 1 MB lines.
    let mut big = b"A1 NOOP ".to_vec();
    big.extend(vec![b'x'; 1 << 20]);
    big.extend_from_slice(b"\r\nA2 NOOP\r\n");
    v.push(big);
    v.push(vec![b'{'; 1 << 20]);
    // Literals claiming 2^63 bytes and more.
    for lit in [
        "{9223372036854775808}",
        "{9223372036854775808+}",
        "{18446744073709551615}",
        "{18446744073709551615+}",
        "{99999999999999999999}",
        "{4294967295+}",
        "{8192}",
        "{8193+}",
    ] {
        v.push(format!("A1 APPEND INBOX {lit}\r\nhello\r\nA2 NOOP\r\n").into_bytes());
        v.push(format!("* 1 FETCH (BODY[] {lit}\r\nhello)\r\n").into_bytes());
    }
    // Many small literals in one command.
    let mut many = b"A1 LOGIN".to_vec();
    for _ in 0..20_000 {
        many.extend_from_slice(b" {1+}\r\nx");
    }
    many.extend_from_slice(b"\r\n");
    v.push(many);
    v.push(b"A1 NOOP\r\n".repeat(100_000));
    v
}

// ---------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------

pub(crate) static COMMAND: Target = Target {
    name: "imap_command",
    check: check_command,
    generate: gen_one_command,
    deep: deep_command,
    cases: 800,
    dict: DICT,
};

/// What the session does with a framed command: our parser, else imap-codec.
fn parse_command(c: &[u8]) {
    match command::parse(c) {
        Some(Ok((tag, cmd))) => {
            assert!(!tag.is_empty());
            let _ = cmd.name();
            let _ = cmd.by_sequence_number();
        }
        Some(Err(e)) => assert!(!e.reason.is_empty()),
        None => {
            let _ = CommandCodec::default().decode(c);
        }
    }
}

fn check_command(input: &[u8]) {
    parse_command(input);
    // The mmp decodes the commands it relays with imap-codec too.
    let _ = CommandCodec::new().decode(input);
}

fn deep_command() -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    let nest = 100_000;
    v.push(format!("A1 SEARCH {}ALL{}\r\n", "(".repeat(nest), ")".repeat(nest)).into_bytes());
    v.push(format!("A1 SEARCH {}ALL\r\n", "NOT ".repeat(nest)).into_bytes());
    v.push(format!("A1 SEARCH {}ALL ALL\r\n", "OR ".repeat(nest)).into_bytes());
    v.push(format!("A1 UID SORT (DATE) UTF-8 {}ALL\r\n", "NOT (".repeat(nest)).into_bytes());
    v.push(format!("A1 THREAD REFERENCES UTF-8 {}\r\n", "(".repeat(nest)).into_bytes());
    // Nesting in commands imap-codec parses.
    v.push(format!("A1 STATUS INBOX {}\r\n", "(".repeat(nest)).into_bytes());
    v.push(format!("A1 ID {}\r\n", "(".repeat(nest)).into_bytes());
    v.push(format!("A1 STORE 1 +FLAGS {}\r\n", "(".repeat(nest)).into_bytes());
    v.push(format!("A1 FETCH 1 {}BODY[]\r\n", "(".repeat(nest)).into_bytes());
    v.push(format!("A1 FETCH 1 BODY[{}1]\r\n", "1.".repeat(nest)).into_bytes());
    v.push(format!("A1 APPEND INBOX {}\r\n", "(".repeat(nest)).into_bytes());
    v.push(format!("A1 SELECT INBOX (QRESYNC (1 2 {}))\r\n", "(".repeat(nest)).into_bytes());
    // Sequence sets with 100,000 ranges.
    let ranges: Vec<String> = (0..100_000)
        .map(|i| format!("{}:{}", i + 1, 4_000_000_000u32 - i))
        .collect();
    let set = ranges.join(",");
    v.push(format!("A1 FETCH {set} (FLAGS)\r\n").into_bytes());
    v.push(format!("A1 UID STORE {set} +FLAGS (\\Seen)\r\n").into_bytes());
    v.push(format!("A1 SEARCH {set} UID {set}\r\n").into_bytes());
    v.push(format!("A1 COPY {set} INBOX\r\n").into_bytes());
    // Literals claiming 2^63 bytes, and a 1 MB quoted string.
    v.push(b"A1 LOGIN {9223372036854775808}\r\nx y\r\n".to_vec());
    v.push(b"A1 APPEND INBOX {18446744073709551615+}\r\nx\r\n".to_vec());
    v.push(format!("A1 SEARCH TEXT \"{}\"\r\n", "x".repeat(1 << 20)).into_bytes());
    v.push(format!("A1 FETCH 1 BODY[]<{}.{}>\r\n", u64::MAX, u64::MAX).into_bytes());
    v
}

/// One command, often one msgd parses itself, with hostile arguments.
fn gen_one_command(rng: &mut Rng) -> Vec<u8> {
    let tag = if rng.gen_ratio(1, 20) {
        "+".to_string()
    } else {
        word(rng)
    };
    let uid = if rng.gen_ratio(1, 3) { "UID " } else { "" };
    let body = match rng.gen_range(0..16) {
        0 => format!("{uid}FETCH {} {}", gen_seq_set(rng), gen_fetch_atts(rng)),
        1 => format!(
            "{uid}STORE {} {}FLAGS{} ({})",
            gen_seq_set(rng),
            pick(rng, &["+", "-", ""]),
            pick(rng, &["", ".SILENT"]),
            pick(rng, &["\\Seen", "\\Deleted $Junk", "", "\\Recent", "(x)"])
        ),
        2 | 3 => format!("{uid}SEARCH {}", gen_search(rng, 0)),
        4 => format!(
            "{uid}SORT ({}) UTF-8 {}",
            pick(
                rng,
                &[
                    "DATE",
                    "REVERSE ARRIVAL SUBJECT",
                    "DISPLAYFROM",
                    "REVERSE",
                    "SIZE CC TO FROM"
                ]
            ),
            gen_search(rng, 0)
        ),
        5 => format!(
            "{uid}THREAD {} {} {}",
            pick(rng, &["REFERENCES", "ORDEREDSUBJECT", "X"]),
            pick(rng, &["UTF-8", "US-ASCII", "\"x\""]),
            gen_search(rng, 0)
        ),
        6 => format!(
            "{uid}{} {} {}",
            pick(rng, &["COPY", "MOVE"]),
            gen_seq_set(rng),
            gen_mailbox(rng)
        ),
        7 => format!("{uid}EXPUNGE {}", gen_seq_set(rng)),
        8 => format!(
            "LIST {} {} {}",
            pick(
                rng,
                &["", "(SUBSCRIBED)", "(SPECIAL-USE RECURSIVEMATCH)", "()"]
            ),
            gen_mailbox(rng),
            pick(
                rng,
                &[
                    "*",
                    "%",
                    "\"\"",
                    "(INBOX \"a\")",
                    "RETURN (CHILDREN STATUS (MESSAGES))"
                ]
            )
        ),
        9 => {
            let data = bytes(rng, 40);
            let claim = if rng.gen_ratio(1, 4) {
                number(rng)
            } else {
                data.len().to_string()
            };
            let mut c = format!(
                "APPEND {} {} {} {{{claim}{}}}\r\n",
                gen_mailbox(rng),
                pick(rng, &["(\\Seen)", "()", ""]),
                pick(
                    rng,
                    &[
                        "\"01-Jan-2020 00:00:00 +0000\"",
                        "\"99-Xyz-9999 99:99:99 +9999\"",
                        ""
                    ]
                ),
                pick(rng, &["", "+"])
            )
            .into_bytes();
            c.extend(data);
            return [tag.into_bytes(), b" ".to_vec(), c, b"\r\n".to_vec()].concat();
        }
        10 => format!(
            "STATUS {} ({})",
            gen_mailbox(rng),
            pick(
                rng,
                &[
                    "MESSAGES UIDNEXT",
                    "SIZE DELETED",
                    "HIGHESTMODSEQ MAILBOXID",
                    "X",
                    ""
                ]
            )
        ),
        11 => format!(
            "{} {}",
            pick(
                rng,
                &[
                    "CREATE",
                    "SELECT",
                    "EXAMINE",
                    "DELETE",
                    "RENAME",
                    "SUBSCRIBE"
                ]
            ),
            gen_mailbox(rng)
        ),
        12 => format!(
            "ENABLE {}",
            pick(rng, &["QRESYNC", "CONDSTORE IMAP4rev2", "UTF8=ACCEPT", ""])
        ),
        13 => format!(
            "{} {} {}",
            pick(
                rng,
                &["GETACL", "SETACL", "DELETEACL", "LISTRIGHTS", "MYRIGHTS"]
            ),
            gen_mailbox(rng),
            pick(rng, &["anyone", "bob lrswi", "\"a b\" -x", ""])
        ),
        14 => format!(
            "{} {}",
            pick(
                rng,
                &[
                    "LOGIN",
                    "AUTHENTICATE",
                    "ID",
                    "NOOP",
                    "IDLE",
                    "NAMESPACE",
                    "CAPABILITY",
                    "CHECK"
                ]
            ),
            String::from_utf8_lossy(&bytes(rng, 30))
        ),
        _ => String::from_utf8_lossy(&bytes(rng, 60)).into_owned(),
    };
    format!("{tag} {body}\r\n").into_bytes()
}

fn gen_mailbox(rng: &mut Rng) -> String {
    match rng.gen_range(0..5) {
        0 => "INBOX".into(),
        1 => format!("\"{}/{}\"", word(rng), word(rng)),
        2 => "&AOk-t&AOk-".into(),
        3 => "{3}\r\nabc".into(),
        _ => word(rng),
    }
}

fn gen_fetch_atts(rng: &mut Rng) -> String {
    let atts = [
        "FLAGS",
        "UID",
        "ENVELOPE",
        "BODYSTRUCTURE",
        "BODY",
        "RFC822.SIZE",
        "INTERNALDATE",
        "BODY.PEEK[HEADER.FIELDS (From To)]",
        "BODY[1.2.MIME]",
        "BODY[TEXT]<0.100>",
        "BINARY[1]",
        "BINARY.SIZE[2]",
        "BODY[4294967295]",
        "BODY[0]",
        "MODSEQ",
        "EMAILID",
        "SAVEDATE",
        "ALL",
        "FAST",
        "FULL",
    ];
    let n = rng.gen_range(0..5);
    let list: Vec<&str> = (0..n).map(|_| pick(rng, &atts)).collect();
    let modifier = pick(
        rng,
        &[
            "",
            " (CHANGEDSINCE 5)",
            " (CHANGEDSINCE 5 VANISHED)",
            " (X)",
        ],
    );
    format!("({}){modifier}", list.join(" "))
}

fn gen_seq_set(rng: &mut Rng) -> String {
    if rng.gen_ratio(1, 10) {
        return "$".into();
    }
    let n = match rng.gen_range(0..10) {
        0 => rng.gen_range(100..3000),
        _ => rng.gen_range(1..6),
    };
    let num = |rng: &mut Rng| match rng.gen_range(0..6) {
        0 => "*".to_string(),
        1 => number(rng),
        _ => rng.gen_range(1..50u32).to_string(),
    };
    (0..n)
        .map(|_| {
            if rng.gen() {
                format!("{}:{}", num(rng), num(rng))
            } else {
                num(rng)
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn gen_search(rng: &mut Rng, depth: usize) -> String {
    let simple = [
        "ALL", "SEEN", "UNSEEN", "NEW", "OLD", "RECENT", "DELETED", "ANSWERED", "DRAFT", "FLAGGED",
    ];
    if depth > 6 {
        return pick(rng, &simple).to_string();
    }
    match rng.gen_range(0..16) {
        0 => format!("NOT {}", gen_search(rng, depth + 1)),
        1 => format!(
            "OR {} {}",
            gen_search(rng, depth + 1),
            gen_search(rng, depth + 1)
        ),
        2 => format!(
            "({} {})",
            gen_search(rng, depth + 1),
            gen_search(rng, depth + 1)
        ),
        3 => gen_seq_set(rng),
        4 => format!("UID {}", gen_seq_set(rng)),
        5 => format!(
            "{} {}",
            pick(
                rng,
                &[
                    "BEFORE",
                    "ON",
                    "SINCE",
                    "SENTBEFORE",
                    "SENTON",
                    "SENTSINCE",
                    "SAVEDBEFORE"
                ]
            ),
            pick(
                rng,
                &[
                    "1-Jan-2020",
                    "31-Feb-2020",
                    "99-Xyz-99999",
                    "\"1-Jan-2020\"",
                    "x"
                ]
            )
        ),
        6 => format!(
            "{} {}",
            pick(rng, &["LARGER", "SMALLER", "YOUNGER", "OLDER", "MODSEQ"]),
            number(rng)
        ),
        7 => format!(
            "{} \"{}\"",
            pick(rng, &["SUBJECT", "FROM", "TO", "CC", "BCC", "BODY", "TEXT"]),
            word(rng)
        ),
        8 => format!(
            "HEADER {} {}",
            word(rng),
            pick(rng, &["\"\"", "x", "{3}\r\nabc"])
        ),
        9 => format!("{} {}", pick(rng, &["KEYWORD", "UNKEYWORD"]), word(rng)),
        10 => format!("EMAILID {} THREADID {}", word(rng), word(rng)),
        11 => "MODSEQ \"/flags/\\\\seen\" all 5".into(),
        12 => "$".into(),
        _ => pick(rng, &simple).to_string(),
    }
}

// ---------------------------------------------------------------------------
// Sequence sets
// ---------------------------------------------------------------------------

pub(crate) static SEQUENCE_SET: Target = Target {
    name: "sequence_set",
    check: check_seq_set,
    generate: gen_seq_set_bytes,
    deep: deep_seq_set,
    cases: 600,
    dict: &[
        b":",
        b",",
        b"*",
        b"$",
        b"0",
        b"4294967295",
        b"4294967296",
        b"1:*",
    ],
};

fn gen_seq_set_bytes(rng: &mut Rng) -> Vec<u8> {
    gen_seq_set(rng).into_bytes()
}

fn check_seq_set(input: &[u8]) {
    let s = String::from_utf8_lossy(input);
    let Ok(set) = command::parse_seq_set(&s) else {
        return;
    };
    let n_ranges = match &set {
        SeqSet::Ranges(r) => r.len(),
        SeqSet::Saved => 0,
    };
    assert!(
        n_ranges <= input.len(),
        "{n_ranges} ranges from {} bytes",
        input.len()
    );
    for star in [0, 1, 7, u32::MAX] {
        let b = set.bounds(star);
        // Memory in proportion to the ranges given, never to what they span.
        assert_eq!(b.len(), n_ranges);
        for &(lo, hi) in b.iter().take(1000) {
            assert!(lo <= hi);
            assert!(set.contains(lo, star) && set.contains(hi, star));
        }
        let _ = set.contains(0, star);
        let _ = set.contains(u32::MAX, star);
    }
    // The same set inside commands.
    for c in [
        format!("A1 UID FETCH {s} (FLAGS)\r\n"),
        format!("A1 SEARCH {s} UID {s}\r\n"),
    ] {
        parse_command(c.as_bytes());
    }
}

fn deep_seq_set() -> Vec<Vec<u8>> {
    let ranges: Vec<String> = (0..100_000u32)
        .map(|i| format!("{}:*", i.wrapping_mul(2_654_435_761) | 1))
        .collect();
    vec![
        ranges.join(",").into_bytes(),
        "1:4294967295,".repeat(100_000).into_bytes(),
        "*:*,".repeat(100_000).into_bytes(),
        "1".repeat(1 << 20).into_bytes(),
        "1:1:1:1:1".into(),
        ",".repeat(100_000).into_bytes(),
    ]
}

// ---------------------------------------------------------------------------
// SEARCH keys
// ---------------------------------------------------------------------------

pub(crate) static SEARCH: Target = Target {
    name: "search_keys",
    check: check_search,
    generate: gen_search_bytes,
    deep: deep_search,
    cases: 600,
    dict: DICT,
};

fn gen_search_bytes(rng: &mut Rng) -> Vec<u8> {
    let n = rng.gen_range(1..4);
    (0..n)
        .map(|_| gen_search(rng, 0))
        .collect::<Vec<_>>()
        .join(" ")
        .into_bytes()
}

const SAMPLE: &[u8] = b"From: Alice <a@example.test>\r\nTo: b@example.test\r\nSubject: =?utf-8?q?h=C3=A9llo?=\r\n\
Date: Mon, 1 Jan 2024 10:00:00 +0000\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\naMOpbGxv\r\n--x--\r\n";

fn check_search(input: &[u8]) {
    let s = String::from_utf8_lossy(input);
    if let Ok(mut key) = command::parse_search_keys(&s) {
        let _ = key.uses_modseq();
        let _ = key.uses_saved();
        key.resolve_saved(&[1, 5, 9]);
        let _ = search::needs_body(&key);
        let flags = Flags::default();
        let view = MessageView {
            seq: 3,
            uid: 9,
            flags: &flags,
            recent: true,
            internal_date: 1_700_000_000,
            tz_offset_min: 60,
            size: SAMPLE.len() as u64,
            modseq: 4,
            save_date: 1_700_000_000,
            email_id: "M1",
            thread_id: Some("T1"),
        };
        let data = Arc::new(SAMPLE.to_vec());
        let mut load = || Some(data.clone());
        let _ = search::matches_at(&key, &view, 10, 20, 1_700_000_100, &mut load);
    }
    parse_command(format!("A1 UID SEARCH RETURN (MIN MAX SAVE) CHARSET UTF-8 {s}\r\n").as_bytes());
}

fn deep_search() -> Vec<Vec<u8>> {
    let nest = 100_000;
    vec![
        format!("{}ALL{}", "(".repeat(nest), ")".repeat(nest)).into_bytes(),
        format!("{}ALL", "NOT ".repeat(nest)).into_bytes(),
        format!("{}ALL", "OR ALL ".repeat(nest)).into_bytes(),
        format!("{}SEEN ALL", "OR ".repeat(nest)).into_bytes(),
        format!("{}ALL", "(NOT ".repeat(nest)).into_bytes(),
        "ALL ".repeat(nest).into_bytes(),
        format!("SUBJECT {{{}}}\r\nx", u64::MAX).into_bytes(),
        format!("HEADER {} x", "a".repeat(1 << 20)).into_bytes(),
        format!("LARGER {}", "9".repeat(100)).into_bytes(),
    ]
}

// ---------------------------------------------------------------------------
// Modified UTF-7
// ---------------------------------------------------------------------------

pub(crate) static UTF7: Target = Target {
    name: "utf7",
    check: check_utf7,
    generate: gen_utf7,
    deep: deep_utf7,
    cases: 1000,
    dict: &[
        b"&",
        b"-",
        b"&-",
        b"&AOk-",
        b"&2D3eAA-",
        b",",
        b"+",
        b"\xc3\xa9",
        b"\xf0\x9f\x98\x80",
    ],
};

fn gen_utf7(rng: &mut Rng) -> Vec<u8> {
    let n = rng.gen_range(0..20);
    let mut s = String::new();
    for _ in 0..n {
        match rng.gen_range(0..6) {
            0 => s.push(char::from_u32(rng.gen_range(0x80..0x11_0000)).unwrap_or('\u{e9}')),
            1 => s.push('&'),
            2 => s.push_str(pick(
                rng,
                &["&AOk-", "&2D3eAA-", "&-", "&Jjo-", "&AGE-", "&AOkA6Q-"],
            )),
            3 => s.push('\u{1F600}'),
            _ => s.push_str(&word(rng)),
        }
    }
    s.into_bytes()
}

fn check_utf7(input: &[u8]) {
    let s = String::from_utf8_lossy(input);
    // Any UTF-8 name survives the wire and comes back unchanged.
    let wire_form = utf7::encode(&s);
    assert!(wire_form.is_ascii());
    assert_eq!(
        utf7::decode(&wire_form).as_deref(),
        Some(&*s),
        "round trip of {s:?} via {wire_form:?}"
    );
    // Anything from a client decodes or is refused, and a decoded name
    // encodes to a form that decodes to it again.
    if let Some(d) = utf7::decode(&s) {
        assert_eq!(utf7::decode(&utf7::encode(&d)).as_deref(), Some(d.as_str()));
    }
    let _ = utf7::from_wire(&s);
}

fn deep_utf7() -> Vec<Vec<u8>> {
    vec![
        "\u{e9}".repeat(500_000).into_bytes(),
        "&".repeat(1 << 20).into_bytes(),
        format!("&{}-", "A".repeat(1 << 20)).into_bytes(),
        format!("&{}", "AOk".repeat(100_000)).into_bytes(),
        "\u{1F600}".repeat(200_000).into_bytes(),
    ]
}

// ---------------------------------------------------------------------------
// Server responses (stress client)
// ---------------------------------------------------------------------------

fn gen_responses(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..rng.gen_range(1..8) {
        let r = match rng.gen_range(0..8) {
            0 => "* OK [CAPABILITY IMAP4rev1 LITERAL+] ready".to_string(),
            1 => format!("* {} EXISTS", number(rng)),
            2 => {
                let data = bytes(rng, 30);
                let claim = if rng.gen_ratio(1, 4) {
                    number(rng)
                } else {
                    data.len().to_string()
                };
                let mut r =
                    format!("* 1 FETCH (UID 5 FLAGS (\\Seen) BODY[] {{{claim}}}\r\n").into_bytes();
                r.extend(data);
                r.extend_from_slice(b")\r\n");
                out.extend(r);
                continue;
            }
            3 => format!(
                "A{} OK [APPENDUID 1 {}] done",
                number(rng),
                gen_seq_set(rng)
            ),
            4 => format!(
                "A1 OK [COPYUID 7 {} {}] done",
                gen_seq_set(rng),
                gen_seq_set(rng)
            ),
            5 => format!(
                "* SEARCH {}",
                (0..rng.gen_range(0..20))
                    .map(|_| number(rng))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            6 => "* BYE [ALERT] bye".to_string(),
            _ => String::from_utf8_lossy(&bytes(rng, 40)).into_owned(),
        };
        out.extend(r.bytes());
        out.extend_from_slice(pick(rng, &[b"\r\n" as &[u8], b"\n", b"\r\n"]));
    }
    out
}

/// A program of commands for the framers.
fn gen_commands(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..rng.gen_range(1..8) {
        out.extend(gen_one_command(rng));
        if rng.gen_ratio(1, 8) {
            out.extend(bytes(rng, 40));
        }
    }
    out
}
