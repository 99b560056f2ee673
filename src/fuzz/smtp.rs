//! SMTP/LMTP: command-line, DATA and BDAT framing (`smtp::codec`) and the
//! whole session core (`smtp::session`) fed through a scripted driver.

use rand::Rng as _;

use super::gen::{bytes, number, pick, word};
use super::{pieces, splits, Rng, Target};
use crate::smtp::codec::{BdatDecoder, DataDecoder, Line, LineReader};
use crate::smtp::session::{
    AuthVerdict, Event, Flavor, Outcome, Params, Session, SubmissionParams, Target as Rcpt, Verdict,
};

const MAX_LINE: usize = 512;
const MAX_SIZE: u64 = 4000;

const DICT: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"\r",
    b"\r\n.\r\n",
    b"\n.\n",
    b".\r\n",
    b"..",
    b"EHLO x\r\n",
    b"LHLO x\r\n",
    b"MAIL FROM:<a@b.example>\r\n",
    b"RCPT TO:<x@example.test>\r\n",
    b"DATA\r\n",
    b"BDAT 10\r\n",
    b"BDAT 0 LAST\r\n",
    b"BDAT 18446744073709551615 LAST\r\n",
    b"AUTH PLAIN\r\n",
    b"AUTH LOGIN\r\n",
    b"AHVzZXIAc2VjcmV0\r\n",
    b"*\r\n",
    b" SIZE=99999999999999999999\r\n",
    b" BODY=BINARYMIME",
    b" SMTPUTF8",
    b" NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;x@y",
    b" RET=FULL ENVID=abc",
    b"STARTTLS\r\n",
    b"GET / HTTP/1.1\r\n",
];

// ---------------------------------------------------------------------------
// codec
// ---------------------------------------------------------------------------

pub(crate) static CODEC: Target = Target {
    name: "smtp_codec",
    check: check_codec,
    generate: gen_stream,
    deep: deep_codec,
    cases: 600,
    dict: DICT,
};

fn lines_of(chunks: &[&[u8]]) -> Vec<Line> {
    let mut r = LineReader::new(MAX_LINE);
    let mut out = Vec::new();
    for chunk in super::reads(chunks) {
        let mut rest = chunk;
        while !rest.is_empty() {
            let (n, line) = r.next_line(rest);
            assert!(
                n > 0 && n <= rest.len(),
                "next_line consumed {n} of {}",
                rest.len()
            );
            rest = &rest[n..];
            if let Some(l) = line {
                if let Line::Complete(b) = &l {
                    assert!(b.len() <= MAX_LINE + 2, "line of {} bytes passed", b.len());
                }
                out.push(l);
            }
        }
    }
    out
}

fn data_of(chunks: &[&[u8]]) -> (usize, bool, Vec<u8>, u64) {
    let mut d = DataDecoder::new(MAX_SIZE);
    let mut used = 0;
    for chunk in super::reads(chunks) {
        let (n, done) = d.feed(chunk);
        assert!(n <= chunk.len());
        used += n;
        if done {
            return (used, true, d.body.data, d.body.size);
        }
    }
    (used, false, d.body.data, d.body.size)
}

fn bdat_of(input: &[u8], chunk_sizes: &[usize], binary: bool) -> Vec<u8> {
    let mut d = BdatDecoder::new(MAX_SIZE, binary);
    let mut rest = input;
    for &size in chunk_sizes {
        let size = size.min(rest.len());
        d.start_chunk(size as u64);
        let (chunk, tail) = rest.split_at(size);
        // Feed the chunk in two pieces: the decoder must not care.
        let half = size / 2;
        let a = d.feed(&chunk[..half]);
        let b = d.feed(&chunk[half..]);
        assert_eq!(a + b, size);
        assert!(d.chunk_done());
        rest = tail;
    }
    d.start_chunk(rest.len() as u64);
    assert_eq!(d.feed(rest), rest.len());
    d.finish();
    assert!(d.body.data.len() as u64 <= MAX_SIZE);
    d.body.data
}

fn check_codec(input: &[u8]) {
    let cuts = splits(input);
    let parts = pieces(input, &cuts);
    // Lines: the same whatever the split.
    assert_eq!(
        lines_of(&[input]),
        lines_of(&parts),
        "line framing depends on the split"
    );
    // DATA: same end, same body; the body never exceeds the cap and at
    // most doubles (bare LF -> CRLF).
    let whole = data_of(&[input]);
    assert_eq!(whole, data_of(&parts), "DATA decoding depends on the split");
    assert!(whole.2.len() as u64 <= MAX_SIZE);
    assert!(whole.3 <= 2 * input.len() as u64 + 2);
    // BDAT: chunk boundaries never change the normalised body.
    let mut prev = 0;
    let sizes: Vec<usize> = cuts
        .iter()
        .map(|&c| {
            let size = c - prev;
            prev = c;
            size
        })
        .collect();
    for binary in [false, true] {
        assert_eq!(
            bdat_of(input, &[], binary),
            bdat_of(input, &sizes, binary),
            "BDAT body depends on chunking (binary {binary})"
        );
    }
}

fn deep_codec() -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    // 1 MB lines: with and without an end, with CRLF split oddly.
    let mut big = vec![b'A'; 1 << 20];
    big.extend_from_slice(b"\r\nNOOP\r\n");
    v.push(big);
    v.push(vec![b'\r'; 1 << 20]);
    v.push(vec![b'\n'; 1 << 20]);
    v.push(b".\r\n".repeat(100_000));
    v.push(b"\r\n..\r\n".repeat(100_000));
    v.push([vec![b'x'; MAX_LINE], b"\r\n".to_vec()].concat());
    v.push([vec![b'x'; MAX_LINE + 1], b"\r\n".to_vec()].concat());
    v
}

// ---------------------------------------------------------------------------
// session
// ---------------------------------------------------------------------------

pub(crate) static SESSION: Target = Target {
    name: "smtp_session",
    check: check_session,
    generate: gen_stream,
    deep: deep_session,
    cases: 400,
    dict: DICT,
};

fn params(kind: u64) -> Params {
    let flavor = if kind % 3 == 1 {
        Flavor::Lmtp
    } else {
        Flavor::Smtp
    };
    Params {
        flavor,
        hostname: "mx.example.test".into(),
        postmaster_domain: "example.test".into(),
        max_message_size: MAX_SIZE,
        max_recipients: 5,
        max_line: MAX_LINE,
        max_bad_commands: 20,
        peer: "192.0.2.7".parse().unwrap(),
        tls_active: kind.is_multiple_of(2),
        // STARTTLS throws away pipelined input, which depends on how the
        // bytes arrived; without it replies must not depend on the split.
        starttls: false,
        id_prefix: "F.".into(),
        submission: (kind % 3 == 2).then(|| SubmissionParams {
            trusted: kind.is_multiple_of(4),
            plaintext_auth: true,
            check_from_header: true,
            received_shows_client: false,
            max_auth_failures: 3,
        }),
        hard_error_limit: if flavor == Flavor::Lmtp { 0 } else { 20 },
        // Some sessions spool bodies past a tiny threshold, so the spool
        // path is fuzzed as well (anonymous files: nothing is left behind).
        spool: kind
            .is_multiple_of(5)
            .then(|| crate::smtp::spool::SpoolConfig {
                threshold: 64,
                dir: std::env::temp_dir().join("msgd-fuzz-spool"),
            }),
        budget: None,
    }
}

fn resolve(addr: &str) -> Verdict {
    let a = addr.to_lowercase();
    match a.chars().next() {
        Some('u') => Verdict::NoSuchUser,
        Some('t') => Verdict::Temporary,
        Some('r') => Verdict::RelayDenied,
        Some('w') => Verdict::WrongStore,
        _ => Verdict::Accept(vec![
            Rcpt::remote(a.clone()),
            Rcpt {
                remote: false,
                ..Rcpt::remote(format!("copy.{a}"))
            },
        ]),
    }
}

/// Runs a session over the pieces; replies and delivered messages.
fn session_run(p: &Params, parts: &[&[u8]]) -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut s = Session::new(p.clone());
    s.greet();
    let mut out = Vec::new();
    let mut msgs = Vec::new();
    let mut closed = false;
    for part in super::reads(parts) {
        if closed {
            break;
        }
        s.feed(part);
        loop {
            match s.next_event() {
                Event::NeedInput => break,
                Event::Resolve(a) => s.resolved(resolve(&a)),
                // A sender a check refuses, to cover that path too.
                Event::CheckSender(a) => {
                    s.sender_checked(a.starts_with('r').then(|| {
                        crate::smtp::reply::Reply::new(550, "5.7.1", "refused by a check")
                    }))
                }
                Event::Deliver(m) => {
                    assert!(
                        m.data.len() as u64 <= MAX_SIZE + 4096,
                        "message of {}",
                        m.data.len()
                    );
                    let o = if m.sender.starts_with('t') {
                        vec![Outcome::Temporary(String::new()); m.targets.len()]
                    } else {
                        vec![Outcome::Delivered; m.targets.len()]
                    };
                    msgs.push(m.data.to_vec());
                    s.delivered(&o);
                }
                Event::StartTls => s.tls_started(),
                Event::Authenticate { login, password } => s.auth_done(if password == "secret" {
                    AuthVerdict::Ok {
                        addresses: vec![login.to_lowercase()],
                        login,
                    }
                } else {
                    AuthVerdict::Failed
                }),
                Event::Close => {
                    closed = true;
                    break;
                }
            }
        }
        out.extend(s.take_output());
    }
    (out, msgs)
}

fn check_session(input: &[u8]) {
    let p = params(super::fnv(input));
    let whole = session_run(&p, &[input]);
    let cuts = splits(input);
    let split = session_run(&p, &pieces(input, &cuts));
    assert!(
        whole == split,
        "SMTP session replies depend on the input split at {cuts:?}"
    );
}

fn deep_session() -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    let mut big = b"EHLO a\r\nMAIL FROM:<".to_vec();
    big.extend(vec![b'a'; 1 << 20]);
    big.extend_from_slice(b">\r\nNOOP\r\n");
    v.push(big);
    let mut rcpts = b"EHLO a\r\nMAIL FROM:<a@b.example>\r\n".to_vec();
    for i in 0..20_000 {
        rcpts.extend_from_slice(format!("RCPT TO:<x{i}@example.test>\r\n").as_bytes());
    }
    rcpts.extend_from_slice(b"DATA\r\n");
    rcpts.extend(b"Subject: x\r\n\r\n".iter());
    rcpts.extend(b"..\r\n".repeat(100_000));
    rcpts.extend_from_slice(b".\r\nQUIT\r\n");
    v.push(rcpts);
    v.push(b"EHLO a\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<x@example.test>\r\nBDAT 9223372036854775808 LAST\r\nxx".to_vec());
    v.push(b"EHLO a\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<x@example.test>\r\nBDAT 18446744073709551615\r\nxx".to_vec());
    v.push(
        b"EHLO a\r\nAUTH PLAIN\r\n"
            .iter()
            .copied()
            .chain(vec![b'A'; 1 << 20])
            .collect(),
    );
    v.push(b"EHLO a\r\n".repeat(50_000));
    v
}

/// A plausible SMTP/LMTP client conversation with hostile variations.
fn gen_stream(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    let n = rng.gen_range(1..20);
    for _ in 0..n {
        let eol: &[u8] = pick(rng, &[b"\r\n" as &[u8], b"\r\n", b"\r\n", b"\n", b"\r"]);
        let addr = |rng: &mut Rng| match rng.gen_range(0..6) {
            0 => String::new(),
            1 => "Postmaster".to_string(),
            2 => format!("\"{} x\"@{}.example", word(rng), word(rng)),
            3 => format!("{}@[{}.0.0.1]", word(rng), number(rng)),
            _ => format!(
                "{}{}@{}",
                pick(rng, &["", "u", "t", "r", "w"]),
                word(rng),
                pick(rng, &["example.test", "b.example", "remote.example"])
            ),
        };
        match rng.gen_range(0..16) {
            0 => out.extend(
                format!(
                    "{} {}",
                    pick(rng, &["EHLO", "HELO", "LHLO", "ehlo"]),
                    word(rng)
                )
                .bytes(),
            ),
            1 => {
                out.extend(format!("MAIL FROM:<{}>", addr(rng)).bytes());
                for _ in 0..rng.gen_range(0..3) {
                    let param = pick(
                        rng,
                        &[
                            "SIZE=",
                            "BODY=8BITMIME",
                            "BODY=BINARYMIME",
                            "SMTPUTF8",
                            "RET=FULL",
                            "ENVID=",
                            "AUTH=<>",
                            "X=",
                        ],
                    );
                    out.extend(format!(" {param}").bytes());
                    if param.ends_with('=') {
                        out.extend(number(rng).bytes());
                    }
                }
            }
            2 | 3 => {
                out.extend(format!("RCPT TO:<{}>", addr(rng)).bytes());
                if rng.gen_ratio(1, 4) {
                    out.extend(b" NOTIFY=SUCCESS,DELAY ORCPT=rfc822;a@b");
                }
            }
            4 => {
                out.extend_from_slice(b"DATA");
                out.extend_from_slice(eol);
                out.extend(
                    format!(
                        "From: <{}>\r\nFrom: <{}>\r\nSubject: x\r\n\r\n",
                        addr(rng),
                        addr(rng)
                    )
                    .bytes(),
                );
                out.extend(bytes(rng, 300));
                out.extend_from_slice(pick(
                    rng,
                    &[b"\r\n.\r\n" as &[u8], b"\n.\n", b"\r\n.\n", b"\r\n.\r\n"],
                ));
                continue;
            }
            5 => {
                let body = bytes(rng, 50);
                let claimed = if rng.gen_ratio(1, 5) {
                    number(rng)
                } else {
                    body.len().to_string()
                };
                out.extend(
                    format!("BDAT {claimed}{}", if rng.gen() { " LAST" } else { "" }).bytes(),
                );
                out.extend_from_slice(b"\r\n");
                out.extend(body);
                continue;
            }
            6 => {
                out.extend(
                    format!(
                        "AUTH {}",
                        pick(
                            rng,
                            &[
                                "PLAIN",
                                "LOGIN",
                                "PLAIN AHVzZXIAc2VjcmV0",
                                "PLAIN =",
                                "CRAM-MD5",
                                "PLAIN ****"
                            ]
                        )
                    )
                    .bytes(),
                );
                if rng.gen() {
                    out.extend_from_slice(eol);
                    out.extend(
                        pick(
                            rng,
                            &["AHVzZXIAc2VjcmV0", "dXNlcg==", "*", "c2VjcmV0", "%%%"],
                        )
                        .bytes(),
                    );
                }
            }
            7 => out.extend(
                pick(
                    rng,
                    &[
                        "RSET", "NOOP", "QUIT", "VRFY x", "EXPN x", "HELP", "STARTTLS", "TURN",
                    ],
                )
                .bytes(),
            ),
            8 => out.extend(bytes(rng, 80)),
            _ => {
                out.extend(format!("RCPT TO:<{}>", addr(rng)).bytes());
            }
        }
        out.extend_from_slice(eol);
    }
    out
}
