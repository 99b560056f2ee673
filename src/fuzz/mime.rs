//! Stored messages: the MIME summary (ENVELOPE, BODY, BODYSTRUCTURE and the
//! SORT/THREAD keys, `imap::summary`), BODY[section] and BINARY[section]
//! extraction (`imap::mime`), and THREAD/SORT over many messages
//! (`imap::thread`).

use std::num::NonZeroU32;

use imap_types::core::{AString, Vec1};
use imap_types::fetch::{Part, Section};
use rand::Rng as _;

use super::gen::{bytes, pick, word};
use super::{Rng, Target};
use crate::imap::command::{SortKey, ThreadAlgo};
use crate::imap::mime::{self, ParsedMessage};
use crate::imap::summary::Summary;
use crate::imap::thread::{self, Item};

const DICT: &[&[u8]] = &[
    b"\r\n",
    b"\r\n\r\n",
    b"--b\r\n",
    b"--b--\r\n",
    b"Content-Type: multipart/mixed; boundary=b\r\n",
    b"Content-Type: message/rfc822\r\n",
    b"Content-Type: text/plain; charset=\"utf-8\"; name*0*=utf-8''%C3%A9\r\n",
    b"Content-Transfer-Encoding: base64\r\n",
    b"Content-Transfer-Encoding: quoted-printable\r\n",
    b"From: \"A\" <a@b>, g: c@d, (x) e@f;\r\n",
    b"References: <a@b> <c@d>\r\n",
    b"=?utf-8?B?w6k=?=",
    b"=?x?q?=ZZ?=",
    b"(((",
    b"\"\\",
    b"<",
    b">",
    b"@",
];

// ---------------------------------------------------------------------------
// MIME summary and sections
// ---------------------------------------------------------------------------

pub(crate) static MIME_SUMMARY: Target = Target {
    name: "mime_summary",
    check: check_mime,
    generate: gen_message,
    deep: deep_mime,
    cases: 150,
    dict: DICT,
};

/// Output may be k times the input (an address of 2 bytes becomes a
/// 40-byte ENVELOPE entry, shown as From, Sender and Reply-To), never more.
const K: usize = 128;

fn check_mime(input: &[u8]) {
    let bound = K * input.len() + 4096;
    let s = Summary::compute(input);
    for (what, len) in [
        ("ENVELOPE", s.envelope.len()),
        ("BODY", s.body.len()),
        ("BODYSTRUCTURE", s.bodystructure.len()),
        ("subject", s.subject.len()),
        ("references", s.references.iter().map(String::len).sum()),
    ] {
        assert!(
            len <= bound,
            "{what} of {len} bytes from {} bytes",
            input.len()
        );
    }
    assert!(s.references.len() <= input.len());
    // The cached form reads back.
    assert_eq!(Summary::from_bytes(&s.to_bytes()).as_ref(), Some(&s));

    let h = super::fnv(input);
    let p = ParsedMessage::new(input);
    let _ = p.envelope();
    let _ = p.body_structure(h.is_multiple_of(2));
    // A few BODY[section]s and BINARY[part]s: slices of the message.
    let mut rng = <Rng as rand::SeedableRng>::seed_from_u64(h);
    for _ in 0..4 {
        let path = gen_part_path(&mut rng);
        let section = gen_section(&mut rng, path.clone());
        let out = p.section(section.as_ref());
        // HEADER.FIELDS ends every field and the block with CRLF.
        let max = 2 * input.len() + 4;
        assert!(
            out.len() <= max,
            "section of {} from {}",
            out.len(),
            input.len()
        );
        let free = mime::section(input, section.as_ref());
        assert!(free.len() <= max);
        if let Ok(b) = p.binary_section(&path) {
            assert!(
                b.len() <= input.len(),
                "binary of {} from {}",
                b.len(),
                input.len()
            );
        }
        let _ = mime::partial(&out, rng.gen(), rng.gen());
    }
}

fn gen_part_path(rng: &mut Rng) -> Vec<NonZeroU32> {
    let n = rng.gen_range(0..4);
    (0..n)
        .map(|_| {
            let v = if rng.gen_ratio(1, 10) {
                u32::MAX
            } else {
                rng.gen_range(1..4)
            };
            NonZeroU32::new(v).unwrap_or(NonZeroU32::MIN)
        })
        .collect()
}

fn gen_section(rng: &mut Rng, path: Vec<NonZeroU32>) -> Option<Section<'static>> {
    let part = Vec1::try_from(path).ok().map(Part);
    let names = || {
        Vec1::try_from(vec![
            AString::try_from("From").unwrap_or_else(|_| unreachable!()),
            AString::try_from("subject").unwrap_or_else(|_| unreachable!()),
        ])
        .unwrap_or_else(|_| unreachable!())
    };
    Some(match rng.gen_range(0..7) {
        0 => return None,
        1 => Section::Header(part),
        2 => Section::Text(part),
        3 => Section::HeaderFields(part, names()),
        4 => Section::HeaderFieldsNot(part, names()),
        5 => match part {
            Some(p) => Section::Mime(p),
            None => Section::Text(None),
        },
        _ => match part {
            Some(p) => Section::Part(p),
            None => Section::Header(None),
        },
    })
}

fn address(rng: &mut Rng) -> String {
    match rng.gen_range(0..8) {
        0 => format!(
            "\"{} {}\" <{}@{}>",
            word(rng),
            word(rng),
            word(rng),
            word(rng)
        ),
        1 => format!("=?utf-8?q?{}?= <{}@x>", word(rng), word(rng)),
        2 => format!("group: {}@a, {}@b;", word(rng), word(rng)),
        3 => format!(
            "({}) {}@{} ({})",
            word(rng),
            word(rng),
            word(rng),
            word(rng)
        ),
        4 => "<>".into(),
        5 => "undisclosed-recipients:;".into(),
        6 => word(rng).to_string(),
        _ => format!("{}@{}", word(rng), word(rng)),
    }
}

fn header(rng: &mut Rng, out: &mut String) {
    for _ in 0..rng.gen_range(0..6) {
        let name = pick(
            rng,
            &[
                "From",
                "To",
                "Cc",
                "Bcc",
                "Sender",
                "Reply-To",
                "Subject",
                "Date",
                "Message-ID",
                "In-Reply-To",
                "References",
                "X-Y",
            ],
        );
        let value = match name {
            "Subject" => format!(
                "{}{}",
                pick(rng, &["Re: ", "Fwd: ", "[x] Re: ", "", "=?utf-8?b?w6k=?= "]),
                word(rng)
            ),
            "Date" => pick(
                rng,
                &[
                    "Mon, 1 Jan 2024 10:00:00 +0000",
                    "32 Foo 99999 99:99:99 +9999",
                    "",
                    "Tue, 2 Jan 2024 10:00:00 -1259",
                ],
            )
            .to_string(),
            "Message-ID" | "In-Reply-To" | "References" => (0..rng.gen_range(0..4))
                .map(|_| format!("<{}@{}>", word(rng), word(rng)))
                .collect::<Vec<_>>()
                .join(" "),
            _ => (0..rng.gen_range(1..4))
                .map(|_| address(rng))
                .collect::<Vec<_>>()
                .join(", "),
        };
        out.push_str(&format!("{name}: {value}\r\n"));
        if rng.gen_ratio(1, 10) {
            out.push_str(" folded continuation\r\n");
        }
    }
}

/// A MIME tree: multiparts, message/rfc822, encoded leaves.
fn entity(rng: &mut Rng, depth: usize, out: &mut String) {
    header(rng, out);
    let kind = if depth > 4 { 3 } else { rng.gen_range(0..5) };
    match kind {
        0 | 1 => {
            let b = format!("b{depth}{}", word(rng));
            out.push_str(&format!(
                "Content-Type: multipart/{}; boundary=\"{b}\"\r\n\r\npreamble\r\n",
                pick(rng, &["mixed", "alternative", "digest", "related"])
            ));
            for _ in 0..rng.gen_range(0..4) {
                out.push_str(&format!("--{b}\r\n"));
                entity(rng, depth + 1, out);
                out.push_str("\r\n");
            }
            if rng.gen_ratio(4, 5) {
                out.push_str(&format!("--{b}--\r\n"));
            }
        }
        2 => {
            out.push_str("Content-Type: message/rfc822\r\n\r\n");
            entity(rng, depth + 1, out);
        }
        _ => {
            let cte = pick(
                rng,
                &[
                    "7bit",
                    "base64",
                    "quoted-printable",
                    "8bit",
                    "binary",
                    "x-uuencode",
                    "BASE64",
                ],
            );
            out.push_str(&format!(
                "Content-Type: {}; charset={}; name*0*=utf-8''%C3%A9; name*1=\"x\"\r\nContent-Transfer-Encoding: {cte}\r\n\
                 Content-Disposition: attachment; filename=\"a.txt\"\r\nContent-Language: en, fr\r\n\r\n",
                pick(rng, &["text/plain", "text/html", "application/octet-stream", "image/png", "TEXT", "/", "a/b/c"]),
                pick(rng, &["utf-8", "iso-8859-1", "x-unknown", "\"\""])
            ));
            let body = match cte {
                "base64" | "BASE64" => pick(
                    rng,
                    &["aGVsbG8=\r\n", "a===\r\n", "!!!!\r\n", "aGVsbG8\r\n"],
                )
                .to_string(),
                "quoted-printable" => {
                    pick(rng, &["h=C3=A9llo=\r\n", "=ZZ=\r\n", "=\r\n=3"]).to_string()
                }
                _ => String::from_utf8_lossy(&bytes(rng, 60)).into_owned(),
            };
            out.push_str(&body);
        }
    }
}

fn gen_message(rng: &mut Rng) -> Vec<u8> {
    let mut out = String::new();
    entity(rng, 0, &mut out);
    if rng.gen_ratio(1, 5) {
        out = out.replace("\r\n", "\n");
    }
    out.into_bytes()
}

/// Nested multiparts and message/rfc822 parts, `depth` levels.
fn nested(depth: usize) -> Vec<Vec<u8>> {
    let mut multi = String::new();
    for i in 0..depth {
        multi.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n"
        ));
    }
    multi.push_str("Content-Type: text/plain\r\n\r\ndeep\r\n");
    for i in (0..depth).rev() {
        multi.push_str(&format!("--b{i}--\r\n"));
    }
    let mut rfc822 = "Subject: top\r\n".to_string();
    for _ in 0..depth {
        rfc822.push_str("Content-Type: message/rfc822\r\n\r\n");
    }
    rfc822.push_str("Subject: core\r\n\r\nx\r\n");
    let mut mixed = String::new();
    for i in 0..depth {
        mixed.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=m{i}\r\n\r\n--m{i}\r\nContent-Type: message/rfc822\r\n\r\n"
        ));
    }
    mixed.push_str("Subject: core\r\n\r\nx\r\n");
    vec![multi.into_bytes(), rfc822.into_bytes(), mixed.into_bytes()]
}

fn deep_mime() -> Vec<Vec<u8>> {
    // 40,000 levels of message/rfc822 overflowed a 2 MiB stack before the
    // nesting scan of src/imap/mime/nesting.rs.
    let depths: &[usize] = &[10_000, 50_000];
    let mut v: Vec<Vec<u8>> = depths.iter().flat_map(|&d| nested(d)).collect();
    // Huge counts (not nesting) are safe already.
    let mut many_parts = "Content-Type: multipart/mixed; boundary=z\r\n\r\n".to_string();
    for _ in 0..10_000 {
        many_parts.push_str("--z\r\n\r\nx\r\n");
    }
    v.push(many_parts.into_bytes());
    let mut many_fields = String::new();
    for i in 0..20_000 {
        many_fields.push_str(&format!("X-F{i}: v\r\n"));
    }
    v.push(many_fields.into_bytes());
    v.push(format!("From: {}\r\n\r\n", "a,".repeat(20_000)).into_bytes());
    v.push(format!("To: {}\r\n\r\n", "(".repeat(100_000)).into_bytes());
    // Stripping reply markers was quadratic (~90 s for this in debug).
    let leaders = 50_000;
    v.push(format!("Subject: {}x\r\n\r\n", "Re: [a] ".repeat(leaders)).into_bytes());
    v.push(format!("Subject: x{}\r\n\r\n", " (fwd)".repeat(leaders)).into_bytes());
    v.push(format!("Subject: {}\r\n\r\n", "=?utf-8?q?a?= ".repeat(50_000)).into_bytes());
    v.push(
        format!(
            "Content-Type: text/plain; {}\r\n\r\n",
            "a*0*=x; ".repeat(50_000)
        )
        .into_bytes(),
    );
    v.push(format!("Subject: {}\r\n\r\n", "x".repeat(1 << 20)).into_bytes());
    v.push(format!("References: {}\r\n\r\n", "<a@b> ".repeat(50_000)).into_bytes());
    v
}

// ---------------------------------------------------------------------------
// THREAD and SORT
// ---------------------------------------------------------------------------

pub(crate) static THREAD_SORT: Target = Target {
    name: "thread_sort",
    check: check_thread,
    generate: gen_mailbox,
    deep: deep_thread,
    cases: 200,
    dict: &[
        b"\0",
        b"References: ",
        b"In-Reply-To: ",
        b"Message-ID: ",
        b"<a@b>",
        b"<b@c>",
        b"Subject: Re: x\r\n",
    ],
};

/// Messages (headers) separated by NUL bytes.
fn messages(input: &[u8]) -> Vec<&[u8]> {
    input.split(|&b| b == 0).take(5000).collect()
}

fn check_thread(input: &[u8]) {
    let summaries: Vec<Summary> = messages(input).into_iter().map(Summary::compute).collect();
    let h = super::fnv(input);
    let items = || -> Vec<Item<'_>> {
        summaries
            .iter()
            .enumerate()
            .map(|(i, s)| Item {
                seq: i as u32 + 1,
                out: 100 + i as u32,
                internal_date: ((h >> (i % 32)) & 0xff) as i64,
                size: (i as u64 * 7) % 5,
                summary: s,
            })
            .collect()
    };
    let want: Vec<u32> = (0..summaries.len() as u32).map(|i| 100 + i).collect();
    for algo in [ThreadAlgo::References, ThreadAlgo::OrderedSubject] {
        let t = thread::thread(&items(), algo);
        // Every message exactly once, parentheses balanced.
        let mut seen: Vec<u32> = t
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().expect("number"))
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, want, "{algo:?} lost or repeated messages: {t}");
        let mut depth: i64 = 0;
        for c in t.chars() {
            depth += match c {
                '(' => 1,
                ')' => -1,
                _ => 0,
            };
            assert!(depth >= 0, "unbalanced: {t}");
        }
        assert_eq!(depth, 0, "unbalanced: {t}");
    }
    let keys = [
        SortKey::Arrival,
        SortKey::Cc,
        SortKey::Date,
        SortKey::From,
        SortKey::Size,
        SortKey::Subject,
        SortKey::To,
        SortKey::DisplayFrom,
        SortKey::DisplayTo,
    ];
    let criteria: Vec<(bool, SortKey)> = (0..3)
        .map(|i| {
            (
                (h >> i) & 1 == 1,
                keys[((h >> (4 * i + 8)) % keys.len() as u64) as usize],
            )
        })
        .collect();
    let mut sorted = thread::sort(&mut items(), &criteria);
    sorted.sort_unstable();
    assert_eq!(sorted, want, "SORT is not a permutation");
}

fn gen_mailbox(rng: &mut Rng) -> Vec<u8> {
    let ids = ["a@x", "b@x", "c@x", "d@x", "e@x", "f@x"];
    let n = rng.gen_range(1..30);
    let mut out = Vec::new();
    for i in 0..n {
        if i > 0 {
            out.push(0);
        }
        let mut m = String::new();
        if rng.gen_ratio(4, 5) {
            m.push_str(&format!("Message-ID: <{}>\r\n", pick(rng, &ids)));
        }
        if rng.gen() {
            let refs: Vec<String> = (0..rng.gen_range(0..6))
                .map(|_| format!("<{}>", pick(rng, &ids)))
                .collect();
            m.push_str(&format!("References: {}\r\n", refs.join(" ")));
        }
        if rng.gen_ratio(1, 3) {
            m.push_str(&format!("In-Reply-To: <{}>\r\n", pick(rng, &ids)));
        }
        m.push_str(&format!(
            "Subject: {}{}\r\nDate: {}\r\nFrom: {}\r\n\r\n",
            pick(rng, &["", "Re: ", "Fwd: ", "re: [list] "]),
            pick(rng, &["hello", "other", "", "Re:"]),
            pick(
                rng,
                &[
                    "Mon, 1 Jan 2024 10:00:00 +0000",
                    "Mon, 1 Jan 2024 09:00:00 +0000",
                    "bad"
                ]
            ),
            address(rng)
        ));
        out.extend(m.into_bytes());
    }
    out
}

fn deep_thread() -> Vec<Vec<u8>> {
    // Long chains overflowed the stack before thread.rs walked iteratively.
    let n = 50_000;
    let mut v = Vec::new();
    // One message whose References lists n ids: a chain of n dummies.
    let refs: Vec<String> = (0..n).map(|i| format!("<r{i}@x>")).collect();
    v.push(
        format!(
            "Message-ID: <last@x>\r\nReferences: {}\r\n\r\n",
            refs.join(" ")
        )
        .into_bytes(),
    );
    // n messages each replying to the previous: a chain of n messages.
    let mut chain = Vec::new();
    for i in 0..n {
        if i > 0 {
            chain.push(0);
        }
        chain.extend(
            format!(
                "Message-ID: <m{i}@x>\r\nIn-Reply-To: <m{}@x>\r\nSubject: Re: x\r\n\r\n",
                i.max(1) - 1
            )
            .into_bytes(),
        );
    }
    v.push(chain);
    // Many messages with the same id, and a reference loop.
    let mut dups = Vec::new();
    for i in 0..3000 {
        if i > 0 {
            dups.push(0);
        }
        dups.extend(
            format!(
                "Message-ID: <same@x>\r\nReferences: <l{}@x> <l{}@x>\r\n\r\n",
                i % 7,
                (i + 1) % 7
            )
            .into_bytes(),
        );
    }
    v.push(dups);
    v
}
