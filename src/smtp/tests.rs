//! Tests of the SMTP/LMTP session core (fed bytes, split at every
//! boundary) and of the whole server over an in-memory stream.

use super::reply::Reply;
use super::session::*;

/// Drives a `Session` synchronously with scripted effects.
struct Harness {
    s: Session,
    out: Vec<u8>,
    msgs: Vec<Message>,
    closed: bool,
    tls_handshakes: usize,
    resolver: fn(&str) -> Verdict,
    outcomes: fn(&Message) -> Vec<Outcome>,
}

fn params(flavor: Flavor) -> Params {
    Params {
        flavor,
        hostname: "mx.example.test".into(),
        postmaster_domain: "example.test".into(),
        max_message_size: 1000,
        max_recipients: 3,
        max_line: 512,
        max_bad_commands: 5,
        peer: "192.0.2.7".parse().unwrap(),
        tls_active: false,
        starttls: true,
        id_prefix: "T.".into(),
        submission: None,
        hard_error_limit: match flavor {
            Flavor::Smtp => 20,
            Flavor::Lmtp => 0,
        },
        spool: None,
        budget: None,
    }
}

fn submission_params(tls: bool) -> Params {
    let mut p = params(Flavor::Smtp);
    p.tls_active = tls;
    p.submission = Some(SubmissionParams {
        trusted: false,
        plaintext_auth: false,
        check_from_header: true,
        received_shows_client: false,
        max_auth_failures: 3,
    });
    p
}

/// The scripted directory: `unknown*` does not exist, `off*` is
/// disabled, `remote.example` is not ours, everything else is a user.
fn script_resolver(addr: &str) -> Verdict {
    let addr = addr.to_lowercase();
    if addr.starts_with("unknown") {
        Verdict::NoSuchUser
    } else if addr.starts_with("off") {
        Verdict::Disabled
    } else if addr.ends_with("@remote.example") {
        Verdict::RelayDenied
    } else if addr.starts_with("temp") {
        Verdict::Temporary
    } else {
        Verdict::Accept(vec![Target::mailbox(addr)])
    }
}

fn all_delivered(m: &Message) -> Vec<Outcome> {
    vec![Outcome::Delivered; m.targets.len()]
}

impl Harness {
    fn new(p: Params) -> Harness {
        let mut s = Session::new(p);
        s.greet();
        let mut h = Harness {
            s,
            out: Vec::new(),
            msgs: Vec::new(),
            closed: false,
            tls_handshakes: 0,
            resolver: script_resolver,
            outcomes: all_delivered,
        };
        h.pump();
        h
    }

    fn smtp() -> Harness {
        Harness::new(params(Flavor::Smtp))
    }

    fn lmtp() -> Harness {
        Harness::new(params(Flavor::Lmtp))
    }

    /// A submission session; `tls`: already on TLS (465).
    fn submission(tls: bool) -> Harness {
        Harness::new(submission_params(tls))
    }

    fn feed(&mut self, bytes: &[u8]) -> &mut Self {
        self.s.feed(bytes);
        self.pump();
        self
    }

    fn pump(&mut self) {
        loop {
            match self.s.next_event() {
                Event::NeedInput => break,
                Event::Resolve(a) => self.s.resolved((self.resolver)(&a)),
                Event::CheckSender(a) => self.s.sender_checked(
                    a.starts_with("refused")
                        .then(|| Reply::new(554, "5.7.1", "sender on a test list")),
                ),
                Event::Deliver(mut m) => {
                    m.load().expect("body reads back");
                    let o = (self.outcomes)(&m);
                    self.msgs.push(*m);
                    self.s.delivered(&o);
                }
                Event::StartTls => {
                    self.out.extend(self.s.take_output());
                    self.tls_handshakes += 1;
                    self.s.tls_started();
                }
                Event::Authenticate { login, password } => {
                    let v = if password == "secret" {
                        AuthVerdict::Ok {
                            addresses: vec![login.clone(), "alias@example.test".into()],
                            login,
                        }
                    } else if password == "down" {
                        AuthVerdict::Temporary
                    } else {
                        AuthVerdict::Failed
                    };
                    self.s.auth_done(v);
                }
                Event::Close => {
                    self.closed = true;
                    break;
                }
            }
        }
        self.out.extend(self.s.take_output());
    }

    /// Reply lines so far (greeting included), then cleared.
    fn take(&mut self) -> Vec<String> {
        let out = std::mem::take(&mut self.out);
        String::from_utf8(out)
            .unwrap()
            .split("\r\n")
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// Reply codes so far ("250 2.1.5", "354", "250-" for a
    /// continuation line), then cleared.
    fn codes(&mut self) -> Vec<String> {
        self.take()
            .into_iter()
            .map(|l| {
                let code = &l[..3];
                if l.as_bytes().get(3) == Some(&b'-') {
                    return format!("{code}-");
                }
                match l.get(4..).and_then(|r| r.split(' ').next()) {
                    Some(esc) if esc.len() == 5 && esc.as_bytes()[1] == b'.' => {
                        format!("{code} {esc}")
                    }
                    _ => code.to_string(),
                }
            })
            .collect()
    }
}

/// The message without the trace fields we prepend.
fn body_of(m: &Message) -> Vec<u8> {
    let d = &m.data[..];
    let mut i = 0;
    loop {
        let rest = &d[i..];
        let starts_trace = rest.starts_with(b"Return-Path:")
            || rest.starts_with(b"Received:")
            || (i > 0 && rest.starts_with(b"\t"));
        if !starts_trace {
            return rest.to_vec();
        }
        match rest.windows(2).position(|w| w == b"\r\n") {
            Some(p) => i += p + 2,
            None => return Vec::new(),
        }
    }
}

/// Runs `input` through a fresh harness split at `cuts`; returns replies
/// and message bodies.
fn run_split(p: &Params, input: &[u8], cuts: &[usize]) -> (Vec<String>, Vec<Vec<u8>>) {
    let mut h = Harness::new(p.clone());
    let mut start = 0;
    for &c in cuts.iter().chain(std::iter::once(&input.len())) {
        h.feed(&input[start..c]);
        start = c;
    }
    let msgs = h.msgs.iter().map(body_of).collect();
    (h.take(), msgs)
}

/// The same input split at every byte boundary, and byte by byte, gives
/// the same replies and messages.
fn assert_split_invariant(p: &Params, input: &[u8]) -> (Vec<String>, Vec<Vec<u8>>) {
    let whole = run_split(p, input, &[]);
    for cut in 0..=input.len() {
        assert_eq!(run_split(p, input, &[cut]), whole, "split at {cut}");
    }
    let every: Vec<usize> = (1..input.len()).collect();
    assert_eq!(run_split(p, input, &every), whole, "byte by byte");
    whole
}

#[test]
fn a_sender_refused_by_a_check_opens_no_transaction() {
    let mut h = Harness::smtp();
    h.feed(b"EHLO c.example\r\nMAIL FROM:<refused@x.example>\r\nRCPT TO:<bob@example.test>\r\n");
    let codes = h.codes();
    assert_eq!(codes[codes.len() - 2..], ["554 5.7.1", "503 5.5.1"]);
    h.feed(b"MAIL FROM:<alice@x.example>\r\nRCPT TO:<bob@example.test>\r\n");
    assert_eq!(h.codes(), ["250 2.1.0", "250 2.1.5"]);
}

#[test]
fn a_refused_sender_is_split_invariant_when_pipelined() {
    let input = b"EHLO c.example\r\nMAIL FROM:<refused@x.example>\r\nMAIL FROM:<a@x.example>\r\nRCPT TO:<bob@example.test>\r\nQUIT\r\n";
    let (replies, _) = assert_split_invariant(&params(Flavor::Smtp), input);
    assert!(
        replies.iter().any(|l| l.starts_with("554 5.7.1")),
        "{replies:?}"
    );
    assert!(
        replies.iter().any(|l| l.starts_with("250 2.1.5")),
        "{replies:?}"
    );
}

#[test]
fn a_connection_refused_at_connect_serves_only_quit() {
    let mut s = Session::new(params(Flavor::Smtp));
    s.refuse_connection(&Reply::new(554, "5.7.1", "client listed by bl.example"));
    let mut h = Harness {
        s,
        out: Vec::new(),
        msgs: Vec::new(),
        closed: false,
        tls_handshakes: 0,
        resolver: script_resolver,
        outcomes: all_delivered,
    };
    h.pump();
    h.feed(b"EHLO c.example\r\nMAIL FROM:<a@x.example>\r\n");
    let lines = h.take();
    assert_eq!(lines[0], "554 5.7.1 client listed by bl.example");
    assert!(
        lines[1].starts_with("503 5.7.1") && lines[2].starts_with("503 5.7.1"),
        "{lines:?}"
    );
    h.feed(b"QUIT\r\n");
    assert_eq!(h.codes(), ["221 2.0.0"]);
    assert!(h.closed);
}

#[test]
fn a_recipient_refused_by_a_check_gets_the_checks_reply() {
    let mut h = Harness::smtp();
    h.resolver = |a| match a.starts_with("grey") {
        true => Verdict::Refused(Reply::new(451, "4.7.1", "greylisted, try again later")),
        false => script_resolver(a),
    };
    h.feed(b"EHLO c.example\r\nMAIL FROM:<a@x.example>\r\nRCPT TO:<grey@example.test>\r\nRCPT TO:<bob@example.test>\r\n");
    let lines = h.take();
    assert!(
        lines.contains(&"451 4.7.1 greylisted, try again later".to_string()),
        "{lines:?}"
    );
    assert_eq!(lines.last().unwrap(), "250 2.1.5 Recipient ok");
}

const PIPELINED: &[u8] = b"EHLO client.example\r\n\
MAIL FROM:<alice@sender.example> SIZE=100 BODY=8BITMIME\r\n\
RCPT TO:<bob@example.test>\r\n\
RCPT TO:<unknown@example.test>\r\n\
RCPT TO:<carol@example.test>\r\n\
DATA\r\n\
Subject: hi\r\n\
\r\n\
..dot\r\n\
body\r\n\
.\r\n\
QUIT\r\n";

#[test]
fn rfc2920_pipelined_transcript_split_at_every_byte() {
    let (replies, msgs) = assert_split_invariant(&params(Flavor::Smtp), PIPELINED);
    let codes: Vec<&str> = replies.iter().map(|l| &l[..4]).collect();
    assert_eq!(
        codes,
        [
            "220 ", "250-", "250-", "250-", "250-", "250-", "250-", "250-", "250-", "250 ", "250 ",
            "250 ", "550 ", "250 ", "354 ", "250 ", "221 "
        ]
    );
    assert_eq!(replies[0], "220 mx.example.test ESMTP msgd");
    assert!(replies.contains(&"250-SIZE 1000".to_string()));
    assert!(replies.contains(&"250 STARTTLS".to_string()));
    assert!(replies.contains(&"550 5.1.1 No such user here".to_string()));
    assert_eq!(replies[15], "250 2.0.0 Ok: queued as T.1");
    assert_eq!(msgs, vec![b"Subject: hi\r\n\r\n.dot\r\nbody\r\n".to_vec()]);
}

#[test]
fn rfc2033_lmtp_split_at_every_byte_one_reply_per_recipient() {
    let input = b"LHLO mta.example\r\nMAIL FROM:<>\r\nRCPT TO:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\nx\r\n.\r\nQUIT\r\n";
    let (replies, msgs) = assert_split_invariant(&params(Flavor::Lmtp), input);
    assert_eq!(replies[0], "220 mx.example.test LMTP msgd");
    assert_eq!(msgs.len(), 1);
    let tail: Vec<&str> = replies
        .iter()
        .rev()
        .take(4)
        .rev()
        .map(String::as_str)
        .collect();
    assert_eq!(
        tail,
        [
            "354 End data with <CR><LF>.<CR><LF>",
            "250 2.1.5 Delivered",
            "250 2.1.5 Delivered",
            "221 2.0.0 Bye"
        ]
    );
}

#[test]
fn rfc2033_4_2_lmtp_replies_reflect_each_recipient_in_rcpt_order() {
    let mut h = Harness::lmtp();
    h.outcomes = |m| {
        m.targets
            .iter()
            .map(|t| match t.address.as_str() {
                "full@example.test" => Outcome::OverQuota { permanent: false },
                "disk@example.test" => Outcome::DiskFull,
                "err@example.test" => Outcome::Temporary(String::new()),
                _ => Outcome::Delivered,
            })
            .collect()
    };
    h.codes();
    h.feed(b"LHLO x\r\nMAIL FROM:<s@x.example>\r\nRCPT TO:<full@example.test>\r\nRCPT TO:<ok@example.test>\r\nRCPT TO:<unknown@example.test>\r\nRCPT TO:<disk@example.test>\r\n");
    h.codes();
    h.feed(b"DATA\r\nhello\r\n.\r\n");
    assert_eq!(h.codes(), ["354", "452 4.2.2", "250 2.1.5", "452 4.3.1"]);
    h.s.feed(b"");
    h.feed(b"MAIL FROM:<s@x.example>\r\nRCPT TO:<err@example.test>\r\nDATA\r\nx\r\n.\r\n");
    assert_eq!(h.codes(), ["250 2.1.0", "250 2.1.5", "354", "451 4.3.0"]);
}

#[test]
fn rfc2033_lmtp_refuses_helo_and_ehlo() {
    let mut h = Harness::lmtp();
    h.codes();
    h.feed(b"HELO x\r\nEHLO x\r\nMAIL FROM:<>\r\n");
    assert_eq!(h.codes(), ["500 5.5.1", "500 5.5.1", "503 5.5.1"]);
    let mut h = Harness::smtp();
    h.codes();
    h.feed(b"LHLO x\r\n");
    assert_eq!(h.codes(), ["500 5.5.1"]);
}

#[test]
fn smtp_smuggling_bare_lf_dot_is_content_not_end_of_data() {
    for evil in [
        &b"\n.\n"[..],
        b"\r\n.\n",
        b"\n.\r\n",
        b"\r.\r\n",
        b"\r\n.\r\r\n",
    ] {
        let mut input = b"EHLO c\r\nMAIL FROM:<a@s.example>\r\nRCPT TO:<b@example.test>\r\nDATA\r\nSubject: x\r\n\r\nhello".to_vec();
        input.extend_from_slice(evil);
        input.extend_from_slice(
            b"MAIL FROM:<evil@s.example>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\nspoofed\r\n.\r\nQUIT\r\n",
        );
        let (replies, msgs) = assert_split_invariant(&params(Flavor::Smtp), &input);
        assert_eq!(msgs.len(), 1, "{evil:?}");
        let body = String::from_utf8(msgs[0].clone()).unwrap();
        assert!(body.contains("MAIL FROM:<evil@s.example>"), "{body:?}");
        assert!(body.contains("spoofed"));
        // Only CRLF line endings in what is stored.
        assert!(!body.replace("\r\n", "").contains(['\r', '\n']), "{body:?}");
        assert_eq!(replies.last().unwrap(), "221 2.0.0 Bye");
        // One message accepted, and the smuggled commands got no replies.
        assert_eq!(
            replies
                .iter()
                .filter(|r| r.starts_with("250 2.0.0 Ok: queued"))
                .count(),
            1
        );
    }
}

#[test]
fn rfc3030_bdat_chunks_and_last() {
    let input = b"EHLO c\r\nMAIL FROM:<a@s.example>\r\nRCPT TO:<b@example.test>\r\nBDAT 5\r\nab\r\ncBDAT 4 LAST\r\nd\r\n.QUIT\r\n";
    let (replies, msgs) = assert_split_invariant(&params(Flavor::Smtp), input);
    assert_eq!(msgs, vec![b"ab\r\ncd\r\n.".to_vec()]);
    let tail: Vec<&str> = replies
        .iter()
        .rev()
        .take(3)
        .rev()
        .map(String::as_str)
        .collect();
    assert_eq!(
        tail,
        [
            "250 2.0.0 5 octets received",
            "250 2.0.0 Ok: queued as T.1",
            "221 2.0.0 Bye"
        ]
    );
}

#[test]
fn rfc3030_bdat_zero_last_and_refused_chunk_is_consumed() {
    let mut h = Harness::smtp();
    h.codes();
    // No transaction: the 6 bytes are read and dropped, then 503.
    h.feed(b"EHLO c\r\nBDAT 6\r\nQUIT\r\nNOOP\r\n");
    let c = h.codes();
    assert_eq!(c[c.len() - 2..], ["503 5.5.1", "250 2.0.0"]);
    h.feed(b"MAIL FROM:<a@s.example>\r\nRCPT TO:<b@example.test>\r\nBDAT 3\r\nabcBDAT 0 LAST\r\n");
    assert_eq!(
        h.codes(),
        ["250 2.1.0", "250 2.1.5", "250 2.0.0", "250 2.0.0"]
    );
    assert_eq!(body_of(&h.msgs[0]), b"abc");
    // DATA is not allowed once BDAT started; BINARYMIME needs BDAT.
    h.feed(b"MAIL FROM:<a@s.example>\r\nRCPT TO:<b@example.test>\r\nBDAT 1\r\nxDATA\r\nRSET\r\n");
    assert_eq!(
        h.codes(),
        [
            "250 2.1.0",
            "250 2.1.5",
            "250 2.0.0",
            "503 5.5.1",
            "250 2.0.0"
        ]
    );
    h.feed(b"MAIL FROM:<a@s.example> BODY=BINARYMIME\r\nRCPT TO:<b@example.test>\r\nDATA\r\nBDAT 3 LAST\r\na\nb");
    assert_eq!(
        h.codes(),
        ["250 2.1.0", "250 2.1.5", "503 5.6.1", "250 2.0.0"]
    );
    assert_eq!(body_of(&h.msgs[1]), b"a\nb", "binary kept exactly");
}

#[test]
fn rfc5321_4_5_3_1_4_overlong_line_then_resync() {
    let mut p = params(Flavor::Smtp);
    p.max_line = 20;
    let mut input = b"EHLO c\r\nNOOP ".to_vec();
    input.extend(std::iter::repeat_n(b'x', 100));
    input.extend_from_slice(b"\r\nNOOP\r\nQUIT\r\n");
    let (replies, _) = assert_split_invariant(&p, &input);
    let tail: Vec<&str> = replies
        .iter()
        .rev()
        .take(3)
        .rev()
        .map(String::as_str)
        .collect();
    assert_eq!(
        tail,
        ["500 5.5.2 Line too long", "250 2.0.0 Ok", "221 2.0.0 Bye"]
    );
}

#[test]
fn rfc1870_size_declared_too_big_is_refused() {
    let mut h = Harness::smtp();
    h.codes();
    h.feed(b"EHLO c\r\nMAIL FROM:<a@s.example> SIZE=1001\r\nMAIL FROM:<a@s.example> SIZE=1000\r\n");
    assert_eq!(h.codes().last().unwrap(), "250 2.1.0");
    let mut h = Harness::smtp();
    h.feed(b"EHLO c\r\nMAIL FROM:<a@s.example> SIZE=1001\r\n");
    assert_eq!(h.codes().last().unwrap(), "552 5.3.4");
}

#[test]
fn rfc1870_data_over_limit_is_read_to_the_end_then_refused() {
    let mut input =
        b"EHLO c\r\nMAIL FROM:<a@s.example>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n".to_vec();
    for _ in 0..30 {
        input.extend_from_slice(b"0123456789012345678901234567890123456789\r\n");
    }
    input.extend_from_slice(b".\r\nNOOP\r\n");
    let (replies, msgs) = assert_split_invariant(&params(Flavor::Smtp), &input);
    assert!(msgs.is_empty());
    let tail: Vec<&str> = replies
        .iter()
        .rev()
        .take(2)
        .rev()
        .map(String::as_str)
        .collect();
    assert_eq!(
        tail,
        [
            "552 5.3.4 Message size exceeds fixed maximum message size",
            "250 2.0.0 Ok"
        ]
    );
}

#[test]
fn rfc1870_lmtp_over_limit_one_reply_per_recipient_and_bdat() {
    let mut h = Harness::lmtp();
    h.codes();
    let big = vec![b'x'; 1500];
    h.feed(b"LHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nBDAT 1500\r\n");
    h.feed(&big);
    h.feed(b"BDAT 1 LAST\r\nx");
    let codes = h.codes();
    assert_eq!(
        codes[codes.len() - 3..],
        ["552 5.3.4", "552 5.3.4", "552 5.3.4"]
    );
    assert!(h.msgs.is_empty());
}

#[test]
fn rfc3207_starttls_discards_pipelined_plaintext_and_resets() {
    let mut h = Harness::smtp();
    h.codes();
    h.feed(b"EHLO c\r\nMAIL FROM:<a@s.example>\r\nSTARTTLS\r\nMAIL FROM:<evil@s.example>\r\nRCPT TO:<b@example.test>\r\n");
    let codes = h.codes();
    assert_eq!(codes.last().unwrap(), "220 2.0.0");
    assert_eq!(h.tls_handshakes, 1);
    // After TLS: EHLO and the transaction are forgotten.
    h.feed(b"MAIL FROM:<a@s.example>\r\n");
    assert_eq!(h.codes(), ["503 5.5.1"]);
    let lines = {
        h.feed(b"EHLO c\r\n");
        h.take()
    };
    assert!(!lines.iter().any(|l| l.contains("STARTTLS")), "{lines:?}");
    h.feed(
        b"STARTTLS\r\nMAIL FROM:<a@s.example>\r\nRCPT TO:<b@example.test>\r\nDATA\r\nx\r\n.\r\n",
    );
    assert_eq!(
        h.codes(),
        ["503 5.5.1", "250 2.1.0", "250 2.1.5", "354", "250 2.0.0"]
    );
    let received = String::from_utf8_lossy(&h.msgs[0].data).to_string();
    assert!(received.contains("with ESMTPS id"), "{received}");
}

#[test]
fn starttls_not_offered_when_listener_has_no_tls() {
    let mut p = params(Flavor::Smtp);
    p.starttls = false;
    let mut h = Harness::new(p);
    h.feed(b"EHLO c\r\n");
    assert!(!h.take().iter().any(|l| l.contains("STARTTLS")));
    h.feed(b"STARTTLS\r\n");
    assert_eq!(h.codes(), ["502 5.5.1"]);
    assert_eq!(h.tls_handshakes, 0);
}

#[test]
fn too_many_bad_commands_disconnect() {
    let mut h = Harness::smtp();
    h.codes();
    h.feed(b"FOO\r\nBAR\r\nBAZ\r\nQUX\r\nX\r\nY\r\nNOOP\r\n");
    let mut expected = vec!["500 5.5.1"; 6];
    expected.push("421 4.7.0");
    assert_eq!(h.codes(), expected);
    assert!(h.closed);
}

#[test]
fn http_request_as_first_line_closes() {
    let mut h = Harness::smtp();
    h.codes();
    h.feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(h.codes(), ["500 5.5.1"]);
    assert!(h.closed);
    // Not on later lines: then it is only an unknown command.
    let mut h = Harness::smtp();
    h.codes();
    h.feed(b"NOOP\r\nGET / HTTP/1.1\r\n");
    assert_eq!(h.codes(), ["250 2.0.0", "500 5.5.1"]);
    assert!(!h.closed);
}

#[test]
fn rfc5321_3_5_vrfy_and_expn_reveal_nothing() {
    let mut h = Harness::smtp();
    h.codes();
    h.feed(b"VRFY bob\r\nVRFY unknown@example.test\r\nEXPN staff\r\nHELP\r\n");
    assert_eq!(
        h.codes(),
        ["252 2.5.2", "252 2.5.2", "502 5.5.1", "214 2.0.0"]
    );
}

#[test]
fn rfc5321_4_5_1_postmaster_without_domain_and_null_rcpt() {
    let mut h = Harness::smtp();
    h.resolver = |a| {
        assert_eq!(a, "postmaster@example.test");
        script_resolver(a)
    };
    h.codes();
    h.feed(b"HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<Postmaster>\r\nRCPT TO:<>\r\n");
    assert_eq!(h.codes(), ["250", "250 2.1.0", "250 2.1.5", "501 5.1.3"]);
    // <Postmaster> is not a reverse path.
    h.feed(b"RSET\r\nMAIL FROM:<Postmaster>\r\n");
    assert_eq!(h.codes(), ["250 2.0.0", "501 5.1.7"]);
}

#[test]
fn rfc5321_recipient_verdicts() {
    let mut h = Harness::smtp();
    h.codes();
    h.feed(b"EHLO c\r\nRCPT TO:<b@example.test>\r\nMAIL FROM:<a@s.example>\r\nMAIL FROM:<a@s.example>\r\nDATA\r\n");
    let c = h.codes();
    assert_eq!(
        c[c.len() - 4..],
        ["503 5.5.1", "250 2.1.0", "503 5.5.1", "503 5.5.1"]
    );
    h.feed(b"RCPT TO:<x@remote.example>\r\nRCPT TO:<off@example.test>\r\nRCPT TO:<temp@example.test>\r\nDATA\r\n");
    assert_eq!(
        h.codes(),
        ["550 5.7.1", "550 5.2.1", "451 4.4.3", "554 5.5.1"]
    );
}

#[test]
fn rfc5321_4_5_3_1_8_too_many_recipients() {
    let mut h = Harness::smtp();
    h.codes();
    h.feed(b"EHLO c\r\nMAIL FROM:<a@s.example>\r\n");
    h.codes();
    h.feed(b"RCPT TO:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nRCPT TO:<c@example.test>\r\nRCPT TO:<d@example.test>\r\n");
    assert_eq!(
        h.codes(),
        ["250 2.1.5", "250 2.1.5", "250 2.1.5", "452 4.5.3"]
    );
}

#[test]
fn smtp_is_all_or_nothing_per_message() {
    let mut h = Harness::smtp();
    h.outcomes = |m| {
        m.targets
            .iter()
            .map(|t| {
                if t.address.starts_with("full") {
                    Outcome::OverQuota { permanent: false }
                } else {
                    Outcome::Delivered
                }
            })
            .collect()
    };
    h.codes();
    h.feed(b"EHLO c\r\nMAIL FROM:<a@s.example>\r\nRCPT TO:<full@example.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\nx\r\n.\r\n");
    assert_eq!(h.codes().last().unwrap(), "452 4.2.2");
    h.outcomes = |m| {
        m.targets
            .iter()
            .map(|t| {
                if t.address.starts_with("full") {
                    Outcome::OverQuota { permanent: false }
                } else {
                    Outcome::Temporary(String::new())
                }
            })
            .collect()
    };
    h.feed(b"MAIL FROM:<a@s.example>\r\nRCPT TO:<full@example.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\nx\r\n.\r\n");
    assert_eq!(h.codes().last().unwrap(), "451 4.3.0");
}

#[test]
fn duplicate_recipients_are_delivered_once() {
    let mut h = Harness::smtp();
    h.feed(b"EHLO c\r\nMAIL FROM:<a@s.example>\r\nRCPT TO:<b@example.test>\r\nRCPT TO:<B@Example.Test>\r\nDATA\r\nx\r\n.\r\n");
    assert_eq!(h.msgs[0].targets.len(), 1);
    // Two recipients: the Received field does not name either.
    let data = String::from_utf8_lossy(&h.msgs[0].data).to_string();
    assert!(!data.contains("for <"), "{data}");
}

/// The receiving server adds Received; Return-Path is final delivery's
/// (`deliver::local`), so the core adds none and passes what the message
/// carries on unchanged (an mta-in that relays must not add one).
#[test]
fn rfc5321_4_4_receiving_server_adds_received_not_return_path() {
    let mut h = Harness::smtp();
    h.feed(b"EHLO client.example\r\nMAIL FROM:<a@s.example>\r\nRCPT TO:<b@example.test>\r\nDATA\r\nReturn-Path: <forged@x>\r\n\r\nx\r\n.\r\n");
    let data = String::from_utf8_lossy(&h.msgs[0].data).to_string();
    assert!(data.starts_with("Received: from client.example ([192.0.2.7])\r\n\tby mx.example.test (msgd) with ESMTP id T.1\r\n\tfor <b@example.test>;\r\n\t"), "{data}");
    assert_eq!(data.matches("Return-Path:").count(), 1, "{data}");
    assert!(
        data.ends_with("\r\nReturn-Path: <forged@x>\r\n\r\nx\r\n"),
        "{data}"
    );
}

#[test]
fn rfc2033_lmtp_core_adds_received_only() {
    let mut h = Harness::lmtp();
    h.feed(b"LHLO mta\r\nMAIL FROM:<a@s.example>\r\nRCPT TO:<b@example.test>\r\nDATA\r\nReceived: by mta\r\n\r\nx\r\n.\r\n");
    h.feed(b"MAIL FROM:<>\r\nRCPT TO:<b@example.test>\r\nDATA\r\nSubject: y\r\n\r\nx\r\n.\r\n");
    let first = String::from_utf8_lossy(&h.msgs[0].data).to_string();
    assert!(
        first.starts_with(
            "Received: from mta ([192.0.2.7])\r\n\tby mx.example.test (msgd) with LMTP id T.1"
        ),
        "{first}"
    );
    let second = String::from_utf8_lossy(&h.msgs[1].data).to_string();
    assert!(second.starts_with("Received: from mta"), "{second}");
    assert!(!second.contains("Return-Path"), "{second}");
}

#[test]
fn rfc6531_smtputf8_addresses_need_the_parameter() {
    let mut h = Harness::smtp();
    h.codes();
    h.feed("EHLO c\r\nMAIL FROM:<jöran@s.example>\r\nMAIL FROM:<a@s.example>\r\nRCPT TO:<bjørn@example.test>\r\nRSET\r\n".as_bytes());
    let c = h.codes();
    assert_eq!(
        c[c.len() - 4..],
        ["553 5.6.7", "250 2.1.0", "553 5.6.7", "250 2.0.0"]
    );
    h.feed("MAIL FROM:<jöran@s.example> SMTPUTF8\r\nRCPT TO:<bjørn@example.test>\r\nDATA\r\nx\r\n.\r\n".as_bytes());
    assert_eq!(h.codes(), ["250 2.1.0", "250 2.1.5", "354", "250 2.0.0"]);
    let data = String::from_utf8_lossy(&h.msgs[0].data).to_string();
    assert!(data.contains("with UTF8SMTP id"), "{data}");
    assert!(data.starts_with("Received: "), "{data}");
}

#[test]
fn unannounced_parameters_are_refused() {
    let mut h = Harness::smtp();
    h.codes();
    h.feed(b"EHLO c\r\nMAIL FROM:<a@s.example> RET=HDRS\r\nMAIL FROM:<a@s.example> FOO=BAR\r\nMAIL FROM:<a@s.example>\r\nRCPT TO:<b@example.test> NOTIFY=NEVER\r\n");
    let c = h.codes();
    assert_eq!(
        c[c.len() - 4..],
        ["555 5.5.4", "555 5.5.4", "250 2.1.0", "555 5.5.4"]
    );
}

#[test]
fn timeout_and_shutdown_say_421() {
    let mut h = Harness::smtp();
    h.codes();
    h.s.timeout();
    h.pump();
    assert_eq!(h.codes(), ["421 4.4.2"]);
    assert!(h.closed);
    let mut h = Harness::smtp();
    h.codes();
    h.feed(b"EHLO c\r\nMAIL FROM:<a@s.example>\r\n");
    assert!(h.s.in_transaction());
    h.feed(b"RSET\r\n");
    assert!(!h.s.in_transaction());
    h.codes();
    h.s.shutdown();
    h.pump();
    assert_eq!(h.codes(), ["421 4.3.2"]);
    assert!(h.closed);
}

#[test]
fn rfc5321_4_1_4_ehlo_resets_transaction() {
    let mut h = Harness::smtp();
    h.codes();
    h.feed(b"EHLO c\r\nMAIL FROM:<a@s.example>\r\nEHLO c\r\nRCPT TO:<b@example.test>\r\nMAIL FROM:<a@s.example>\r\n");
    let c = h.codes();
    assert_eq!(c[c.len() - 2..], ["503 5.5.1", "250 2.1.0"]);
}

/// Random soups of command fragments, body bytes and garbage: never a
/// panic, and the same replies and messages however the input is split.
#[test]
fn random_input_never_panics_and_is_split_invariant() {
    const PIECES: [&[u8]; 22] = [
        b"EHLO a\r\n",
        b"LHLO a\r\n",
        b"MAIL FROM:<a@b.example>\r\n",
        b"MAIL FROM:<> BODY=BINARYMIME\r\n",
        b"RCPT TO:<x@example.test>\r\n",
        b"RCPT TO:<unknown@example.test>\r\n",
        b"DATA\r\n",
        b"BDAT 3\r\n",
        b"BDAT 2 LAST\r\n",
        b"BDAT 0 LAST\r\n",
        b".\r\n",
        b"\r\n.\r\n",
        b"\n.\n",
        b"..x\r\n",
        b"\r",
        b"\n",
        b"\x00\xff\xfe",
        b"RSET\r\n",
        b"NOOP\r\n",
        b"VRFY x\r\n",
        b"MAIL FROM:<a@b.example> SIZE=99999999999999999999999\r\n",
        b"RCPT TO:<Postmaster>\r\n",
    ];
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for flavor in [Flavor::Smtp, Flavor::Lmtp] {
        let mut p = params(flavor);
        p.max_bad_commands = 1000;
        for _ in 0..12 {
            let mut input = Vec::new();
            while input.len() < 300 {
                input.extend_from_slice(PIECES[(rnd() % PIECES.len() as u64) as usize]);
            }
            assert_split_invariant(&p, &input);
        }
        // Raw bytes biased towards the ones parsers care about.
        const BYTES: &[u8] = b"\r\n.<>:@ =\"\\MAILFROMRCPTTODATABDATLAST0123456789\x00\x80\xff";
        for _ in 0..50 {
            let mut h = Harness::new(p.clone());
            h.feed(b"EHLO a\r\nLHLO a\r\n");
            for _ in 0..2000 {
                let b = BYTES[(rnd() % BYTES.len() as u64) as usize];
                h.feed(&[b]);
            }
            h.take();
        }
    }
}

/// The whole server through `serve`, over `tokio::io::duplex`, with a
/// real store, embedded directory and TLS in a temp folder.
pub(crate) mod e2e {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
    use tokio_util::sync::CancellationToken;

    use crate::config::{Config, PartitionConfig, Protocol, TlsMode};
    use crate::directory::{embedded, Directory};
    use crate::net::ConnInfo;
    use crate::services::Services;
    use crate::store::Store;
    use crate::tls::Tls;

    /// Services as the role runner builds them, all under `dir`:
    /// alice and bob (bob's quota is tiny), carol (inactive), aliases
    /// `team` (alice, bob), `loop1`/`loop2` (a cycle reaching alice),
    /// `ext` (an address elsewhere).
    pub fn test_services(dir: &std::path::Path, edit: impl FnOnce(&mut Config)) -> Services {
        let mut config = Config::default();
        config.server.data_dir = dir.to_path_buf();
        config.server.hostname = "mx.example.test".into();
        config.server.domain = "example.test".into();
        config.store.min_free_disk = 0;
        config.store.partition.insert(
            "primary".into(),
            PartitionConfig {
                path: "partition/primary".into(),
            },
        );
        edit(&mut config);
        embedded::edit(&config.directory_path(), |d| {
            embedded::add_user(d, "alice@example.test", "pw", None, true)?;
            embedded::add_user(d, "bob@example.test", "pw", Some(300), true)?;
            embedded::add_user(d, "carol@example.test", "pw", None, false)?;
            embedded::add_user(d, "postmaster@example.test", "pw", None, true)?;
            let alias = |d: &mut embedded::Data, a: &str, t: &[&str]| {
                d.aliases
                    .insert(a.into(), t.iter().map(|s| s.to_string()).collect());
            };
            alias(
                d,
                "team@example.test",
                &["alice@example.test", "Bob@example.test"],
            );
            alias(d, "loop1@example.test", &["loop2@example.test"]);
            alias(
                d,
                "loop2@example.test",
                &["loop1@example.test", "alice@example.test"],
            );
            alias(d, "ext@example.test", &["someone@elsewhere.example"]);
            // A list whose bounces go to its owner (mgrpErrorsTo).
            alias(
                d,
                "list@example.test",
                &["alice@example.test", "member@elsewhere.example"],
            );
            d.errors_to
                .insert("list@example.test".into(), "list-owner@example.test".into());
            Ok(())
        })
        .unwrap();
        let (logins, mmp) = Services::shared_parts(&config);
        Services {
            logins,
            mmp,
            resolver: Arc::new(crate::dns::Resolver::from_config(&config).unwrap()),
            web: std::sync::Arc::default(),
            hygiene: std::sync::Arc::default(),
            dkim: std::sync::Arc::default(),
            directory: Directory::open(&config).unwrap(),
            store: Some(Store::open(&config).unwrap()),
            tls: Arc::new(Tls::from_config(&config).unwrap()),
            queue: None,
            shutdown: CancellationToken::new(),
            conns: Default::default(),
            budget: Arc::new(crate::budget::Budget::new(
                config.limits.max_bytes_in_flight,
            )),
            config: Arc::new(config),
        }
    }

    struct Client<S> {
        io: BufReader<S>,
    }

    impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
        /// One complete (possibly multi-line) reply.
        async fn reply(&mut self) -> String {
            let mut all = String::new();
            loop {
                let mut line = String::new();
                let n = tokio::time::timeout(Duration::from_secs(10), self.io.read_line(&mut line))
                    .await
                    .expect("reply in time")
                    .unwrap();
                if n == 0 {
                    return all;
                }
                all.push_str(&line);
                if line.as_bytes().get(3) != Some(&b'-') {
                    return all;
                }
            }
        }

        async fn send(&mut self, bytes: &[u8]) {
            self.io.get_mut().write_all(bytes).await.unwrap();
        }

        async fn cmd(&mut self, line: &str) -> String {
            self.send(format!("{line}\r\n").as_bytes()).await;
            self.reply().await
        }
    }

    fn connect(
        services: &Services,
        protocol: Protocol,
    ) -> (Client<tokio::io::DuplexStream>, tokio::task::JoinHandle<()>) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let mut info = ConnInfo::for_test(protocol);
        info.tls_mode = if protocol == Protocol::Smtp {
            TlsMode::StartTls
        } else {
            TlsMode::None
        };
        let task = tokio::spawn(super::super::serve(
            Box::new(server),
            info,
            services.clone(),
        ));
        (
            Client {
                io: BufReader::new(client),
            },
            task,
        )
    }

    pub async fn inbox(services: &Services, user: &str) -> Vec<String> {
        let store = services.store();
        let snap = store.snapshot(user, "INBOX").await.unwrap();
        let mut out = Vec::new();
        for m in &snap.messages {
            let bytes = store.read(snap.info.id, m).await.unwrap();
            out.push(String::from_utf8(bytes).unwrap());
        }
        out
    }

    #[tokio::test]
    async fn rfc5321_smtp_delivers_into_the_store_with_trace_fields() {
        let dir = tempfile::tempdir().unwrap();
        let services = test_services(dir.path(), |_| {});
        let (mut c, task) = connect(&services, Protocol::Smtp);
        assert_eq!(c.reply().await, "220 mx.example.test ESMTP msgd\r\n");
        let ehlo = c.cmd("EHLO client.example").await;
        assert!(ehlo.starts_with("250-mx.example.test\r\n"), "{ehlo}");
        for cap in [
            "PIPELINING",
            "SIZE 52428800",
            "8BITMIME",
            "ENHANCEDSTATUSCODES",
            "SMTPUTF8",
            "CHUNKING",
            "STARTTLS",
        ] {
            assert!(
                ehlo.contains(&format!("250-{cap}\r\n"))
                    || ehlo.contains(&format!("250 {cap}\r\n")),
                "{cap}: {ehlo}"
            );
        }
        // Pipelined: all replies come back in order.
        c.send(b"MAIL FROM:<sender@elsewhere.example>\r\nRCPT TO:<alice@example.test>\r\nRCPT TO:<team@example.test>\r\nRCPT TO:<nobody@example.test>\r\nRCPT TO:<carol@example.test>\r\nRCPT TO:<x@elsewhere.example>\r\nRCPT TO:<ext@example.test>\r\nRCPT TO:<loop1@example.test>\r\nDATA\r\n").await;
        let mut replies = Vec::new();
        for _ in 0..9 {
            replies.push(c.reply().await);
        }
        let codes: Vec<&str> = replies.iter().map(|r| &r[..9]).collect();
        assert_eq!(
            codes,
            [
                "250 2.1.0",
                "250 2.1.5",
                "250 2.1.5",
                "550 5.1.1",
                "550 5.2.1",
                "550 5.7.1",
                "550 5.7.1",
                "250 2.1.5",
                "354 End d"
            ]
        );
        assert!(replies[6].contains("outside this site"), "{}", replies[6]);
        c.send(b"Subject: hello\r\n\r\nline one\r\n..dotted\r\n.\r\n")
            .await;
        let queued = c.reply().await;
        assert!(queued.starts_with("250 2.0.0 Ok: queued as "), "{queued}");
        assert_eq!(c.cmd("QUIT").await, "221 2.0.0 Bye\r\n");
        task.await.unwrap();

        // alice got it once (direct, team and loop1 all reach her), bob once.
        let alice = inbox(&services, "alice@example.test").await;
        assert_eq!(alice.len(), 1, "{alice:?}");
        let m = &alice[0];
        assert!(m.starts_with("Return-Path: <sender@elsewhere.example>\r\nReceived: from client.example ([127.0.0.1])\r\n\tby mx.example.test (msgd) with ESMTP id "), "{m}");
        assert!(
            m.ends_with("\r\nSubject: hello\r\n\r\nline one\r\n.dotted\r\n"),
            "{m}"
        );
        assert!(
            !m.contains("for <"),
            "several recipients: no for clause: {m}"
        );
        assert_eq!(inbox(&services, "bob@example.test").await.len(), 1);
    }

    #[tokio::test]
    async fn rfc3030_bdat_and_over_quota_in_smtp() {
        let dir = tempfile::tempdir().unwrap();
        let services = test_services(dir.path(), |_| {});
        let (mut c, task) = connect(&services, Protocol::Smtp);
        c.reply().await;
        c.cmd("EHLO c").await;
        c.cmd("MAIL FROM:<>").await;
        assert!(c
            .cmd("RCPT TO:<alice@example.test>")
            .await
            .starts_with("250 "));
        c.send(b"BDAT 9\r\nSubject: ").await;
        assert_eq!(c.reply().await, "250 2.0.0 9 octets received\r\n");
        c.send(b"BDAT 9 LAST\r\nx\r\n\r\nhi\r\n").await;
        assert!(c.reply().await.starts_with("250 2.0.0 Ok: queued"));
        let alice = inbox(&services, "alice@example.test").await;
        assert!(
            alice[0].contains("\tfor <alice@example.test>;"),
            "{}",
            alice[0]
        );
        assert!(
            alice[0].ends_with("\r\nSubject: x\r\n\r\nhi\r\n"),
            "{}",
            alice[0]
        );
        // bob's quota is 300 bytes: a bigger message is refused temporarily.
        c.cmd("MAIL FROM:<>").await;
        c.cmd("RCPT TO:<bob@example.test>").await;
        c.cmd("DATA").await;
        let big = format!("Subject: big\r\n\r\n{}\r\n.\r\n", "y".repeat(400));
        c.send(big.as_bytes()).await;
        assert_eq!(c.reply().await, "452 4.2.2 Mailbox full\r\n");
        assert!(c.cmd("QUIT").await.starts_with("221"));
        task.await.unwrap();
    }

    /// `test_services` with a queue, as an mta-in with a store has.
    fn with_queue(dir: &std::path::Path) -> (Services, Arc<crate::queue::Queue>) {
        let mut services = test_services(dir, |_| {});
        let queue = crate::queue::Queue::open(
            &dir.join("queue"),
            services.config.queue.clone(),
            "mx.example.test",
        )
        .unwrap();
        services.queue = Some(queue.clone());
        (services, queue)
    }

    #[tokio::test]
    async fn forward_outside_the_site_is_queued_when_a_queue_exists() {
        let dir = tempfile::tempdir().unwrap();
        let (services, queue) = with_queue(dir.path());
        let (mut c, _task) = connect(&services, Protocol::Smtp);
        assert!(c.reply().await.starts_with("220"));
        c.cmd("EHLO client.example").await;
        c.cmd("MAIL FROM:<sender@else.example>").await;
        let r = c.cmd("RCPT TO:<ext@example.test>").await;
        assert!(r.starts_with("250"), "{r}");
        let r = c.cmd("RCPT TO:<alice@example.test>").await;
        assert!(r.starts_with("250"), "{r}");
        c.cmd("DATA").await;
        let r = c.cmd("Subject: fwd\r\n\r\nbody\r\n.").await;
        assert!(r.starts_with("250"), "{r}");
        // The local mailbox got it directly; the forward waits in the queue.
        assert_eq!(inbox(&services, "alice@example.test").await.len(), 1);
        let q = queue.list();
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].recipients[0].0, "someone@elsewhere.example");
        assert_eq!(q[0].sender, "sender@else.example");
    }

    /// A list's copies carry its errors-to address (the Sun schema's
    /// mgrpErrorsTo) as envelope sender, inside (Return-Path at final
    /// delivery) and outside the site (the queued copy's MAIL FROM), so
    /// bounces reach the list owner (RFC 5321 3.9.2: a list is a new
    /// originator); a direct recipient of the same message keeps the
    /// original sender.
    #[tokio::test]
    async fn rfc5321_3_9_2_list_copies_carry_the_lists_errors_to_sender() {
        let dir = tempfile::tempdir().unwrap();
        let (services, queue) = with_queue(dir.path());
        let (mut c, _task) = connect(&services, Protocol::Smtp);
        assert!(c.reply().await.starts_with("220"));
        c.cmd("EHLO client.example").await;
        c.cmd("MAIL FROM:<sender@else.example>").await;
        let r = c.cmd("RCPT TO:<list@example.test>").await;
        assert!(r.starts_with("250"), "{r}");
        let r = c.cmd("RCPT TO:<bob@example.test>").await;
        assert!(r.starts_with("250"), "{r}");
        c.cmd("DATA").await;
        let r = c.cmd("Subject: to the list\r\n\r\nbody\r\n.").await;
        assert!(r.starts_with("250"), "{r}");
        let alice = inbox(&services, "alice@example.test").await;
        assert_eq!(alice.len(), 1);
        let text = &alice[0];
        assert!(
            text.starts_with("Return-Path: <list-owner@example.test>\r\n"),
            "{text}"
        );
        let bob = inbox(&services, "bob@example.test").await;
        let text = &bob[0];
        assert!(
            text.starts_with("Return-Path: <sender@else.example>\r\n"),
            "{text}"
        );
        let q = queue.list();
        assert_eq!(q.len(), 1, "{q:?}");
        assert_eq!(q[0].recipients[0].0, "member@elsewhere.example");
        assert_eq!(q[0].sender, "list-owner@example.test");
    }

    /// SMTP into the store and LMTP into the store meet the same quota
    /// (directory value, else `store.default_quota`) and the same
    /// `store.over_quota` policy: both go through `deliver::local`.
    #[tokio::test]
    async fn quota_and_over_quota_policy_identical_for_smtp_and_lmtp() {
        for (policy, want) in [
            (crate::config::OverQuota::Temporary, "452 4.2.2"),
            (crate::config::OverQuota::Permanent, "552 5.2.2"),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let services = test_services(dir.path(), |c| {
                c.store.default_quota = 600;
                c.store.over_quota = policy;
            });
            for (protocol, hello) in [(Protocol::Smtp, "EHLO c"), (Protocol::Lmtp, "LHLO c")] {
                let (mut c, _task) = connect(&services, protocol);
                assert!(c.reply().await.starts_with("220"));
                c.cmd(hello).await;
                c.cmd("MAIL FROM:<s@else.example>").await;
                let r = c.cmd("RCPT TO:<alice@example.test>").await;
                assert!(r.starts_with("250"), "{r}");
                c.cmd("DATA").await;
                let big = format!("Subject: big\r\n\r\n{}\r\n.", "y".repeat(700));
                let r = c.cmd(&big).await;
                assert!(r.starts_with(want), "{protocol:?} {policy:?}: {r}");
                // Small enough: delivered, with the store's Return-Path.
                c.cmd("MAIL FROM:<s@else.example>").await;
                c.cmd("RCPT TO:<alice@example.test>").await;
                c.cmd("DATA").await;
                let r = c.cmd("Subject: s\r\n\r\nok\r\n.").await;
                assert!(r.starts_with("250"), "{protocol:?}: {r}");
            }
            let got = inbox(&services, "alice@example.test").await;
            assert_eq!(got.len(), 2);
            for m in got {
                assert!(
                    m.starts_with("Return-Path: <s@else.example>\r\nReceived: "),
                    "{m}"
                );
                assert_eq!(m.matches("Return-Path:").count(), 1);
            }
        }
    }

    /// Duplicate delivery suppression: the store announces
    /// XMSGD-DELIVERY-ID in LHLO; a repeated id (the mta-in crashed before
    /// it recorded our 250) is answered 250 and not stored again. SMTP
    /// does not know the parameter.
    #[tokio::test]
    async fn lmtp_repeated_delivery_id_is_answered_250_and_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let services = test_services(dir.path(), |_| {});
        let (mut c, _task) = connect(&services, Protocol::Lmtp);
        assert!(c.reply().await.starts_with("220"));
        let lhlo = c.cmd("LHLO mta.example.test").await;
        assert!(lhlo.contains("250 XMSGD-DELIVERY-ID\r\n"), "{lhlo}");
        let send = |id: &'static str, rcpt: &'static str| {
            (
                "MAIL FROM:<s@else.example>".to_string(),
                format!("RCPT TO:<{rcpt}> XMSGD-DELIVERY-ID={id}"),
            )
        };
        for (id, rcpt) in [
            ("0123ABC.0@mta1.example.test", "alice@example.test"),
            ("0123ABC.0@mta1.example.test", "alice@example.test"),
            ("0123ABC.1@mta1.example.test", "alice@example.test"),
            ("0123ABC.0@mta1.example.test", "bob@example.test"),
        ] {
            let (mail, rcpt) = send(id, rcpt);
            assert!(c.cmd(&mail).await.starts_with("250"));
            let r = c.cmd(&rcpt).await;
            assert!(r.starts_with("250"), "{r}");
            c.cmd("DATA").await;
            let r = c.cmd("Subject: once\r\n\r\nbody\r\n.").await;
            assert!(r.starts_with("250"), "{r}");
        }
        assert_eq!(inbox(&services, "alice@example.test").await.len(), 2);
        assert_eq!(inbox(&services, "bob@example.test").await.len(), 1);
        // Not our alphabet, twice, or too long: a syntax error.
        c.cmd("MAIL FROM:<s@else.example>").await;
        let long = "x".repeat(crate::store::MAX_DELIVERY_ID_LEN + 1);
        for bad in [
            "RCPT TO:<alice@example.test> XMSGD-DELIVERY-ID=a+2Bb".to_string(),
            "RCPT TO:<alice@example.test> XMSGD-DELIVERY-ID=a XMSGD-DELIVERY-ID=b".to_string(),
            format!("RCPT TO:<alice@example.test> XMSGD-DELIVERY-ID={long}"),
            "RCPT TO:<alice@example.test> XMSGD-DELIVERY-ID=".to_string(),
        ] {
            let r = c.cmd(&bad).await;
            assert!(r.starts_with("501 5.5.4"), "{bad}: {r}");
        }
        // SMTP never takes it (the extension is not announced there).
        let (mut c, _task) = connect(&services, Protocol::Smtp);
        assert!(c.reply().await.starts_with("220"));
        let ehlo = c.cmd("EHLO c").await;
        assert!(!ehlo.contains("XMSGD"), "{ehlo}");
        c.cmd("MAIL FROM:<s@else.example>").await;
        let r = c
            .cmd("RCPT TO:<alice@example.test> XMSGD-DELIVERY-ID=0123ABC.0@mta1")
            .await;
        assert!(r.starts_with("555"), "{r}");
    }

    /// SMTP answers once for all copies: when one fails, the copies that
    /// were made are taken back (the client retries them all), so the
    /// retry does not double them.
    #[tokio::test]
    async fn smtp_partial_failure_aborts_the_copies_already_made() {
        let dir = tempfile::tempdir().unwrap();
        let services = test_services(dir.path(), |_| {});
        let (mut c, _task) = connect(&services, Protocol::Smtp);
        assert!(c.reply().await.starts_with("220"));
        c.cmd("EHLO c").await;
        c.cmd("MAIL FROM:<s@else.example>").await;
        c.cmd("RCPT TO:<alice@example.test>").await;
        c.cmd("RCPT TO:<bob@example.test>").await;
        c.cmd("DATA").await;
        let big = format!("Subject: big\r\n\r\n{}\r\n.", "y".repeat(400));
        let r = c.cmd(&big).await;
        assert!(r.starts_with("452 4.2.2"), "{r}");
        assert!(inbox(&services, "alice@example.test").await.is_empty());
        assert!(inbox(&services, "bob@example.test").await.is_empty());
    }

    #[tokio::test]
    async fn rfc9208_message_count_quota_is_enforced_at_delivery() {
        let dir = tempfile::tempdir().unwrap();
        let services = test_services(dir.path(), |c| c.store.default_message_quota = 1);
        let (mut c, _task) = connect(&services, Protocol::Lmtp);
        assert!(c.reply().await.starts_with("220"));
        c.cmd("LHLO mta.example.test").await;
        for expect in ["250", "452 4.2.2"] {
            c.cmd("MAIL FROM:<s@else.example>").await;
            let r = c.cmd("RCPT TO:<alice@example.test>").await;
            assert!(r.starts_with("250"), "{r}");
            c.cmd("DATA").await;
            let r = c.cmd("Subject: q\r\n\r\nbody\r\n.").await;
            assert!(r.starts_with(expect), "{expect}: {r}");
        }
        assert_eq!(inbox(&services, "alice@example.test").await.len(), 1);
    }

    #[tokio::test]
    async fn lmtp_refuses_a_user_whose_mailhost_is_another_store() {
        let dir = tempfile::tempdir().unwrap();
        let services = test_services(dir.path(), |c| c.store.host = "store1.example.test".into());
        embedded::edit(&services.config.directory_path(), |d| {
            if let Some(u) = d.users.get_mut("bob@example.test") {
                u.account.mail_host = Some("store2.example.test".into());
            }
            if let Some(u) = d.users.get_mut("alice@example.test") {
                u.account.mail_host = Some("STORE1.example.test".into());
            }
            Ok(())
        })
        .unwrap();
        let services = Services {
            directory: Directory::open(&services.config).unwrap(),
            ..services
        };
        let (mut c, _task) = connect(&services, Protocol::Lmtp);
        assert!(c.reply().await.starts_with("220"));
        c.cmd("LHLO mta.example.test").await;
        c.cmd("MAIL FROM:<s@else.example>").await;
        let r = c.cmd("RCPT TO:<bob@example.test>").await;
        assert!(r.starts_with("550 5.1.6"), "{r}");
        let r = c.cmd("RCPT TO:<alice@example.test>").await;
        assert!(r.starts_with("250"), "{r}");
    }

    #[tokio::test]
    async fn rfc2033_lmtp_one_reply_per_recipient_from_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let services = test_services(dir.path(), |_| {});
        let (mut c, task) = connect(&services, Protocol::Lmtp);
        assert_eq!(c.reply().await, "220 mx.example.test LMTP msgd\r\n");
        assert!(c.cmd("EHLO mta").await.starts_with("500 5.5.1"));
        let lhlo = c.cmd("LHLO mta.example.test").await;
        assert!(
            lhlo.contains("CHUNKING") && !lhlo.contains("STARTTLS"),
            "{lhlo}"
        );
        c.send(b"MAIL FROM:<s@elsewhere.example>\r\nRCPT TO:<alice@example.test>\r\nRCPT TO:<team@example.test>\r\nRCPT TO:<carol@example.test>\r\nRCPT TO:<bob@example.test>\r\nRCPT TO:<x@elsewhere.example>\r\nDATA\r\n").await;
        let mut codes = Vec::new();
        for _ in 0..7 {
            codes.push(c.reply().await[..9].to_string());
        }
        assert_eq!(
            codes,
            [
                "250 2.1.0",
                "250 2.1.5",
                "550 5.1.1",
                "550 5.2.1",
                "250 2.1.5",
                "550 5.1.1",
                "354 End d"
            ]
        );
        let body = format!("Subject: lmtp\r\n\r\n{}\r\n.\r\n", "z".repeat(400));
        c.send(body.as_bytes()).await;
        assert_eq!(c.reply().await, "250 2.1.5 Delivered\r\n");
        assert_eq!(c.reply().await, "452 4.2.2 Mailbox full\r\n");
        assert!(c.cmd("QUIT").await.starts_with("221"));
        task.await.unwrap();
        let alice = inbox(&services, "alice@example.test").await;
        assert!(alice[0].starts_with("Return-Path: <s@elsewhere.example>\r\nReceived: from mta.example.test ([127.0.0.1])\r\n\tby mx.example.test (msgd) with LMTP id "), "{}", alice[0]);
        assert!(inbox(&services, "bob@example.test").await.is_empty());
    }

    #[tokio::test]
    async fn rfc3207_starttls_then_deliver() {
        let dir = tempfile::tempdir().unwrap();
        let services = test_services(dir.path(), |_| {});
        let (mut c, task) = connect(&services, Protocol::Smtp);
        c.reply().await;
        c.cmd("EHLO c").await;
        // Plaintext pipelined after STARTTLS is dropped, never executed.
        c.send(b"STARTTLS\r\nMAIL FROM:<evil@x.example>\r\n").await;
        assert_eq!(c.reply().await, "220 2.0.0 Ready to start TLS\r\n");
        let plain = c.io.into_inner();
        let mut roots = rustls::RootCertStore::empty();
        let cert_path = services.config.server.data_dir.join("tls/cert.pem");
        use rustls::pki_types::pem::PemObject;
        for cert in rustls::pki_types::CertificateDer::pem_file_iter(&cert_path).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let client_config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = connector.connect(name, plain).await.unwrap();
        let mut c = Client {
            io: BufReader::new(tls),
        };
        assert!(c
            .cmd("MAIL FROM:<a@x.example>")
            .await
            .starts_with("503 5.5.1"));
        let ehlo = c.cmd("EHLO c").await;
        assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
        assert!(c.cmd("MAIL FROM:<a@x.example>").await.starts_with("250"));
        assert!(c
            .cmd("RCPT TO:<alice@example.test>")
            .await
            .starts_with("250"));
        assert!(c.cmd("DATA").await.starts_with("354"));
        assert!(c
            .cmd("Subject: tls\r\n\r\nx\r\n.")
            .await
            .starts_with("250 2.0.0"));
        assert!(c.cmd("QUIT").await.starts_with("221"));
        task.await.unwrap();
        let alice = inbox(&services, "alice@example.test").await;
        assert!(alice[0].contains(" with ESMTPS id "), "{}", alice[0]);
    }

    /// Sends `bytes` one at a time, `every` apart, until the server says
    /// something; returns it (empty if it never did).
    async fn trickle(
        c: &mut Client<tokio::io::DuplexStream>,
        bytes: &[u8],
        every: Duration,
    ) -> String {
        for b in bytes.iter().cycle().take(200) {
            c.send(std::slice::from_ref(b)).await;
            let mut line = String::new();
            if let Ok(r) = tokio::time::timeout(every, c.io.read_line(&mut line)).await {
                r.unwrap();
                return line;
            }
        }
        String::new()
    }

    #[tokio::test]
    async fn rfc5321_4_5_3_2_deadline_is_for_the_whole_command_not_each_read() {
        let dir = tempfile::tempdir().unwrap();
        // Before EHLO: the short pre-authentication deadline (1 s, where
        // a command may otherwise take 60 s).
        let services = test_services(&dir.path().join("pre"), |c| {
            c.smtp.command_timeout = 60;
            c.smtp.preauth_timeout = 1;
        });
        let (mut c, _task) = connect(&services, Protocol::Smtp);
        c.reply().await;
        let start = tokio::time::Instant::now();
        let r = trickle(&mut c, b"EHLO slow.example", Duration::from_millis(200)).await;
        assert!(r.starts_with("421 4.4.2"), "{r}");
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the preauth deadline applied"
        );
        let services = test_services(dir.path(), |c| {
            c.smtp.command_timeout = 2;
            c.smtp.data_timeout = 2;
            c.smtp.preauth_timeout = 1;
        });
        // A command line trickled after EHLO.
        let (mut c, _task) = connect(&services, Protocol::Smtp);
        c.reply().await;
        c.cmd("EHLO x").await;
        let r = trickle(&mut c, b"NOOP NOOP NOOP", Duration::from_millis(200)).await;
        assert!(r.starts_with("421 4.4.2"), "{r}");
        // A body trickled after 354.
        let (mut c, _task) = connect(&services, Protocol::Smtp);
        c.reply().await;
        c.cmd("EHLO x").await;
        c.cmd("MAIL FROM:<a@b.example>").await;
        c.cmd("RCPT TO:<alice@example.test>").await;
        assert!(c.cmd("DATA").await.starts_with("354"));
        let r = trickle(&mut c, b"body ", Duration::from_millis(200)).await;
        assert!(r.starts_with("421 4.4.2"), "{r}");
        // Steady commands are never cut: each complete line restarts it.
        let (mut c, _task) = connect(&services, Protocol::Smtp);
        c.reply().await;
        c.cmd("EHLO x").await;
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(800)).await;
            assert!(c.cmd("NOOP").await.starts_with("250"));
        }
    }

    #[tokio::test]
    async fn shutdown_between_transactions_says_421() {
        let dir = tempfile::tempdir().unwrap();
        let services = test_services(dir.path(), |_| {});
        let (mut c, task) = connect(&services, Protocol::Smtp);
        c.reply().await;
        c.cmd("EHLO c").await;
        // In a transaction: the shutdown waits for its end.
        c.cmd("MAIL FROM:<>").await;
        c.cmd("RCPT TO:<alice@example.test>").await;
        services.shutdown.cancel();
        assert!(c.cmd("DATA").await.starts_with("354"));
        assert!(c.cmd("x\r\n.").await.starts_with("250 2.0.0"));
        assert_eq!(
            c.reply().await,
            "421 4.3.2 Service shutting down, closing connection\r\n"
        );
        task.await.unwrap();
        assert_eq!(inbox(&services, "alice@example.test").await.len(), 1);
    }

    #[tokio::test]
    async fn command_timeout_says_421() {
        let dir = tempfile::tempdir().unwrap();
        let services = test_services(dir.path(), |c| c.smtp.command_timeout = 1);
        let (mut c, task) = connect(&services, Protocol::Smtp);
        c.reply().await;
        assert_eq!(c.reply().await, "421 4.4.2 Timeout, closing connection\r\n");
        task.await.unwrap();
    }
}

// ---------------------------------------------------------------------
// Submission (RFC 6409, RFC 4954, RFC 3461)

/// base64 of "\0user\0password".
fn plain(user: &str, pw: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pw}"))
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn rfc4954_auth_plain_with_initial_response_then_send() {
    let mut h = Harness::submission(true);
    h.feed(b"EHLO laptop\r\n");
    let ehlo = h.take();
    assert!(
        ehlo.iter().any(|l| l[4..] == *"AUTH PLAIN LOGIN"),
        "{ehlo:?}"
    );
    assert!(ehlo.iter().any(|l| l.ends_with("DSN")), "{ehlo:?}");
    let cmd = format!("AUTH PLAIN {}\r\n", plain("alice@example.test", "secret"));
    h.feed(cmd.as_bytes());
    assert_eq!(h.codes(), vec!["235 2.7.0"]);
    h.feed(b"MAIL FROM:<Alice@Example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\nFrom: alice@example.test\r\nSubject: x\r\n\r\nhi\r\n.\r\n");
    assert_eq!(
        h.codes(),
        vec!["250 2.1.0", "250 2.1.5", "354", "250 2.0.0"]
    );
    let m = &h.msgs[0];
    let text = String::from_utf8_lossy(&m.data);
    assert!(
        !text.contains("Return-Path"),
        "submission is not final delivery"
    );
    assert!(
        text.starts_with("Received: from laptop\r\n"),
        "no client address: {text}"
    );
    assert!(text.contains("with ESMTPSA"), "{text}");
    assert!(text.contains("\r\nDate: "), "Date added: {text}");
    assert!(
        text.contains("\r\nMessage-ID: <T.1@mx.example.test>\r\n"),
        "{text}"
    );
    assert_eq!(m.auth.as_deref(), Some("alice@example.test"));
}

#[test]
fn rfc4954_auth_plain_and_login_with_challenges_split_at_every_byte() {
    let input = format!(
        "EHLO x\r\nAUTH PLAIN\r\n{}\r\nQUIT\r\n",
        plain("alice@example.test", "secret")
    );
    let (replies, _) = assert_split_invariant(&submission_params(true), input.as_bytes());
    assert!(replies.contains(&"334 ".to_string()), "{replies:?}");
    assert!(
        replies.iter().any(|r| r.starts_with("235 2.7.0")),
        "{replies:?}"
    );
    let input = format!(
        "EHLO x\r\nAUTH LOGIN\r\n{}\r\n{}\r\nMAIL FROM:<alias@example.test>\r\n",
        b64("alice@example.test"),
        b64("secret")
    );
    let (replies, _) = assert_split_invariant(&submission_params(true), input.as_bytes());
    assert!(
        replies.contains(&"334 VXNlcm5hbWU6".to_string()),
        "{replies:?}"
    );
    assert!(
        replies.contains(&"334 UGFzc3dvcmQ6".to_string()),
        "{replies:?}"
    );
    assert!(
        replies.iter().any(|r| r.starts_with("235 2.7.0")),
        "{replies:?}"
    );
    assert!(
        replies.iter().any(|r| r.starts_with("250 2.1.0")),
        "alias is owned: {replies:?}"
    );
}

#[test]
fn rfc6409_unauthenticated_mail_is_refused_530() {
    let mut h = Harness::submission(true);
    h.feed(b"EHLO x\r\n");
    h.take();
    h.feed(b"MAIL FROM:<alice@example.test>\r\nRCPT TO:<x@remote.example>\r\n");
    assert_eq!(
        h.take(),
        vec![
            "530 5.7.0 Authentication required",
            "503 5.5.1 Need MAIL command first"
        ]
    );
}

#[test]
fn rfc3207_auth_before_starttls_from_a_remote_client_is_refused() {
    let mut h = Harness::submission(false);
    h.feed(b"EHLO x\r\n");
    let ehlo = h.take();
    assert!(
        !ehlo.iter().any(|l| l.contains("AUTH")),
        "no AUTH before TLS: {ehlo:?}"
    );
    let cmd = format!("AUTH PLAIN {}\r\n", plain("alice@example.test", "secret"));
    h.feed(cmd.as_bytes());
    let r = h.take();
    assert_eq!(r, vec!["530 5.7.0 Must issue a STARTTLS command first"]);
    h.feed(b"STARTTLS\r\n");
    assert_eq!(h.tls_handshakes, 1);
    h.take();
    h.feed(b"EHLO x\r\n");
    assert!(h.take().iter().any(|l| l[4..] == *"AUTH PLAIN LOGIN"));
    h.feed(cmd.as_bytes());
    assert_eq!(h.codes(), vec!["235 2.7.0"]);
}

#[test]
fn rfc4954_failures_535_then_disconnect() {
    let mut h = Harness::submission(true);
    h.feed(b"EHLO x\r\n");
    h.take();
    for i in 0..3 {
        let cmd = format!("AUTH PLAIN {}\r\n", plain("alice@example.test", "wrong"));
        h.feed(cmd.as_bytes());
        let c = h.codes();
        assert_eq!(c[0], "535 5.7.8", "attempt {i}");
        if i == 2 {
            assert_eq!(c[1], "421 4.7.0");
            assert!(h.closed);
        }
    }
    let mut h = Harness::submission(true);
    h.feed(b"EHLO x\r\n");
    h.take();
    let cmd = format!("AUTH PLAIN {}\r\n", plain("alice@example.test", "down"));
    h.feed(cmd.as_bytes());
    assert_eq!(h.codes(), vec!["454 4.7.0"]);
    h.feed(b"AUTH PLAIN\r\n*\r\nAUTH CRAM-MD5\r\nAUTH PLAIN !!!\r\n");
    assert_eq!(
        h.codes(),
        vec!["334", "501 5.0.0", "504 5.5.4", "501 5.5.2"]
    );
}

#[test]
fn rfc6409_sender_and_from_header_must_belong_to_the_user() {
    let mut h = Harness::submission(true);
    let cmd = format!(
        "EHLO x\r\nAUTH PLAIN {}\r\nMAIL FROM:<mallory@example.test>\r\nMAIL FROM:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\nFrom: Boss <boss@example.test>\r\n\r\nx\r\n.\r\n",
        plain("alice@example.test", "secret")
    );
    h.feed(cmd.as_bytes());
    let c = h.codes();
    assert_eq!(
        c[c.len() - 6..].to_vec(),
        vec![
            "235 2.7.0",
            "553 5.7.1",
            "250 2.1.0",
            "250 2.1.5",
            "354",
            "553 5.7.1"
        ]
    );
    assert!(h.msgs.is_empty());
    // The null sender is allowed (MDNs, vacation notices).
    h.feed(b"MAIL FROM:<>\r\n");
    assert_eq!(h.codes(), vec!["250 2.1.0"]);
}

#[test]
fn rfc3461_dsn_parameters_reach_the_message_targets() {
    let mut h = Harness::submission(true);
    let cmd = format!(
        "EHLO x\r\nAUTH PLAIN {}\r\nMAIL FROM:<alice@example.test> RET=HDRS ENVID=QQ314159 AUTH=<>\r\nRCPT TO:<bob@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Bob@Example.test\r\nRCPT TO:<carol@example.test> NOTIFY=NEVER,SUCCESS\r\nRCPT TO:<dave@example.test> NOTIFY=NEVER\r\nDATA\r\nSubject: x\r\n\r\nx\r\n.\r\n",
        plain("alice@example.test", "secret")
    );
    h.feed(cmd.as_bytes());
    let c = h.codes();
    assert_eq!(
        c[c.len() - 6..].to_vec(),
        vec![
            "250 2.1.0",
            "250 2.1.5",
            "501 5.5.4",
            "250 2.1.5",
            "354",
            "250 2.0.0"
        ]
    );
    let m = &h.msgs[0];
    assert_eq!(m.envid.as_deref(), Some("QQ314159"));
    assert!(!m.ret_full);
    let bob = &m.targets[0];
    let n = bob.notify.unwrap();
    assert!(n.success && n.failure && !n.delay);
    assert_eq!(bob.orcpt.as_deref(), Some("rfc822;Bob@Example.test"));
    let dave = &m.targets[1];
    let n = dave.notify.unwrap();
    assert!(!n.success && !n.failure && !n.delay);
}

#[test]
fn rfc3461_dsn_parameters_are_refused_on_inbound_smtp() {
    let mut h = Harness::smtp();
    h.feed(b"EHLO x\r\nMAIL FROM:<a@remote.example> RET=FULL\r\nMAIL FROM:<a@remote.example>\r\nRCPT TO:<bob@example.test> NOTIFY=NEVER\r\n");
    let c = h.codes();
    assert_eq!(
        c[c.len() - 3..].to_vec(),
        vec!["555 5.5.4", "250 2.1.0", "555 5.5.4"]
    );
}

#[test]
fn rfc6409_trusted_network_submits_without_auth() {
    let mut p = submission_params(false);
    if let Some(s) = p.submission.as_mut() {
        s.trusted = true;
    }
    let mut h = Harness::new(p);
    h.feed(b"EHLO webmail\r\nMAIL FROM:<anyone@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\nFrom: x@y\r\n\r\nx\r\n.\r\n");
    let c = h.codes();
    assert_eq!(
        c[c.len() - 4..].to_vec(),
        vec!["250 2.1.0", "250 2.1.5", "354", "250 2.0.0"]
    );
}

/// Submission and the outbound client together over real loopback TCP:
/// STARTTLS, AUTH PLAIN, DSN parameters, and MX delivery to an address
/// literal (no DNS needed).
mod submission_e2e {
    use std::sync::Arc;
    use std::time::Duration;

    use crate::config::{Protocol, TlsMode};
    use crate::deliver::client::{Client, Dialect, MailParams, RcptParams, TlsVerify};
    use crate::deliver::{Envelope as QEnvelope, Outcome as QOutcome, Recipient as QRecipient};
    use crate::net::ConnInfo;
    use crate::queue::Queue;
    use crate::services::Services;

    /// Serves `protocol` on a loopback port with a queue; returns the port.
    async fn listen(services: &Services, protocol: Protocol) -> u16 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let services = services.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, peer)) = l.accept().await else {
                    return;
                };
                let mut info = ConnInfo::for_test(protocol);
                info.peer = peer;
                info.tls_mode = TlsMode::StartTls;
                tokio::spawn(super::super::serve(Box::new(tcp), info, services.clone()));
            }
        });
        port
    }

    fn with_queue(
        dir: &std::path::Path,
        edit: impl FnOnce(&mut crate::config::Config),
    ) -> (Services, Arc<Queue>) {
        let mut services = super::e2e::test_services(dir, edit);
        let queue = Queue::open(
            &dir.join("queue"),
            services.config.queue.clone(),
            "mx.example.test",
        )
        .unwrap();
        services.queue = Some(queue.clone());
        (services, queue)
    }

    #[tokio::test]
    async fn rfc3207_rfc4954_client_starttls_auth_and_dsn_parameters_reach_the_queue() {
        let dir = tempfile::tempdir().unwrap();
        let (services, queue) = with_queue(dir.path(), |_| {});
        let port = listen(&services, Protocol::Submission).await;
        let addr = format!("127.0.0.1:{port}").parse().unwrap();
        let t = Duration::from_secs(10);
        let c = Client::connect_addr(addr, "localhost", None, Dialect::Smtp, "laptop", t)
            .await
            .unwrap();
        assert!(c.has("STARTTLS") && c.has("DSN"));
        let mut c = c.starttls("localhost", &TlsVerify::None).await.unwrap();
        assert!(c.tls && c.has("AUTH"));
        assert!(c.auth_plain("alice@example.test", "wrong").await.is_err());
        c.auth_plain("alice@example.test", "pw").await.unwrap();
        let mail = MailParams {
            sender: "alice@example.test".into(),
            envid: Some("ENV 1".into()),
            ret_full: Some(true),
        };
        let rcpts = vec![
            RcptParams {
                address: "bob@example.test".into(),
                notify: Some(crate::deliver::Notify {
                    success: true,
                    failure: true,
                    delay: false,
                }),
                orcpt: Some("rfc822;Bob+x@example.test".into()),
                delivery_id: None,
            },
            RcptParams::plain("someone@far.example"),
        ];
        let out = c
            .send_with(
                &mail,
                &rcpts,
                b"From: alice@example.test\r\nSubject: x\r\n\r\nhi\r\n",
            )
            .await
            .unwrap();
        assert_eq!(out, vec![QOutcome::Delivered, QOutcome::Delivered]);
        c.quit().await;
        let q = crate::queue::scan(&dir.path().join("queue"));
        assert_eq!(q.len(), 1, "one queue record for both recipients");
        let l = crate::queue::record::load(&dir.path().join(format!("queue/{}.q", q[0].id)))
            .unwrap()
            .unwrap();
        assert_eq!(
            l.envelope.envid.as_deref(),
            Some("ENV 1"),
            "xtext round trip"
        );
        assert!(l.envelope.ret_full);
        let bob = &l.envelope.recipients[0];
        assert!(bob.notify.success && !bob.notify.delay);
        assert_eq!(bob.orcpt.as_deref(), Some("rfc822;Bob+x@example.test"));
        assert_eq!(l.envelope.recipients[1].address, "someone@far.example");
        let text = String::from_utf8_lossy(&l.data);
        assert!(text.contains("with ESMTPSA"), "{text}");
        assert!(!text.contains("127.0.0.1"), "{text}");
        drop(queue);
    }

    /// The "remote MTA" is msgd's own submission server, trusting loopback.
    #[tokio::test]
    async fn rfc5321_mx_delivery_to_an_address_literal_with_starttls() {
        let remote_dir = tempfile::tempdir().unwrap();
        let (remote, remote_queue) = with_queue(remote_dir.path(), |c| {
            c.submission.trusted_networks = vec!["127.0.0.0/8".parse().unwrap()];
        });
        let port = listen(&remote, Protocol::Submission).await;
        let mut cfg = crate::config::Config::default();
        cfg.mta.smtp_port = port;
        cfg.dns.nameservers = vec!["127.0.0.1:9".parse().unwrap()];
        let mx = crate::deliver::mx::MxDelivery::new(Arc::new(cfg)).unwrap();
        let env = QEnvelope {
            sender: "a@here.example".into(),
            recipients: vec![QRecipient {
                address: "x@far.example".into(),
                orcpt: None,
                notify: Default::default(),
                route: String::new(),
            }],
            received: crate::queue::unix_now(),
            envid: None,
            ret_full: false,
            junk: false,
        };
        let rcpts = vec![(0, crate::deliver::mx::rcpt_params(&env, 0))];
        let out = mx
            .deliver("[127.0.0.1]", &env, &rcpts, b"Subject: m\r\n\r\nx\r\n")
            .await;
        assert_eq!(out, vec![(0, QOutcome::Relayed { dsn_passed: true })]);
        // A second message reuses the idle connection (RSET first).
        let out = mx
            .deliver("[127.0.0.1]", &env, &rcpts, b"Subject: m2\r\n\r\nx\r\n")
            .await;
        assert_eq!(out, vec![(0, QOutcome::Relayed { dsn_passed: true })]);
        let listed = remote_queue.list();
        assert_eq!(listed.len(), 2);
        let q = crate::queue::scan(&remote_dir.path().join("queue"));
        let l = crate::queue::record::load(&remote_dir.path().join(format!("queue/{}.q", q[0].id)))
            .unwrap()
            .unwrap();
        let text = String::from_utf8_lossy(&l.data);
        assert!(text.contains("with ESMTPS"), "STARTTLS was used: {text}");
        // A closed port: temporary, the next attempt will try again.
        let mut cfg = crate::config::Config::default();
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        cfg.mta.smtp_port = closed.local_addr().unwrap().port();
        drop(closed);
        cfg.dns.nameservers = vec!["127.0.0.1:9".parse().unwrap()];
        let mx = crate::deliver::mx::MxDelivery::new(Arc::new(cfg)).unwrap();
        let out = mx.deliver("[127.0.0.1]", &env, &rcpts, b"x\r\n").await;
        assert!(matches!(&out[0].1, QOutcome::Temporary(_)), "{out:?}");
    }
}

#[test]
fn hard_error_limit_closes_a_session_guessing_recipients() {
    // Postfix's smtpd_hard_error_limit: the 20th rejected RCPT ends it.
    let mut h = Harness::smtp();
    h.codes();
    h.feed(b"EHLO x\r\nMAIL FROM:<a@b.example>\r\n");
    h.codes();
    for i in 0..19 {
        h.feed(format!("RCPT TO:<unknown{i}@example.test>\r\n").as_bytes());
        assert_eq!(h.codes(), ["550 5.1.1"]);
    }
    assert!(!h.closed);
    h.feed(b"RCPT TO:<unknown19@example.test>\r\nNOOP\r\n");
    assert_eq!(h.codes(), ["550 5.1.1", "421 4.7.0"]);
    assert!(h.closed);
}

#[test]
fn hard_error_limit_is_reset_by_a_delivered_message_and_off_for_lmtp() {
    let mut p = params(Flavor::Smtp);
    p.hard_error_limit = 2;
    let mut h = Harness::new(p);
    h.codes();
    h.feed(b"EHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<unknown1@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\nx\r\n.\r\n");
    h.feed(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<unknown2@example.test>\r\nNOOP\r\n");
    assert!(!h.closed, "one error since the last delivery");
    h.feed(b"RCPT TO:<unknown3@example.test>\r\n");
    assert!(h.closed);
    // LMTP: the client is our own queue; many unknown users are normal.
    let mut h = Harness::lmtp();
    h.codes();
    h.feed(b"LHLO x\r\nMAIL FROM:<a@b.example>\r\n");
    for i in 0..30 {
        h.feed(format!("RCPT TO:<unknown{i}@example.test>\r\n").as_bytes());
    }
    assert!(!h.closed);
}

fn submit(h: &mut Harness, message: &str) -> Vec<String> {
    let cmd = format!(
        "EHLO x\r\nAUTH PLAIN {}\r\nMAIL FROM:<alice@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n{message}.\r\n",
        plain("alice@example.test", "secret")
    );
    h.feed(cmd.as_bytes());
    h.codes()
}

#[test]
fn rfc5322_3_6_more_than_one_from_or_sender_is_refused() {
    for msg in [
        "From: alice@example.test\r\nFrom: boss@example.test\r\n\r\nx\r\n",
        "From: alice@example.test\r\nSubject: s\r\nfrom : boss@example.test\r\n\r\nx\r\n",
        "From: alice@example.test\r\nSender: alice@example.test\r\nSENDER: boss@example.test\r\n\r\nx\r\n",
    ] {
        let mut h = Harness::submission(true);
        let c = submit(&mut h, msg);
        assert_eq!(c.last().unwrap(), "550 5.6.0", "{msg:?}");
        assert!(h.msgs.is_empty());
    }
    // Even from a trusted network without AUTH.
    let mut p = submission_params(true);
    p.submission.as_mut().unwrap().trusted = true;
    let mut h = Harness::new(p);
    h.feed(b"EHLO x\r\nMAIL FROM:<x@y.example>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\nFrom: a@b.example\r\nFrom: c@d.example\r\n\r\nx\r\n.\r\n");
    assert_eq!(h.codes().last().unwrap(), "550 5.6.0");
}

#[test]
fn rfc6409_every_from_and_sender_address_is_checked_groups_included() {
    for (msg, ok) in [
        (
            "From: alice@example.test, boss@example.test\r\n\r\nx\r\n",
            false,
        ),
        (
            "From: team: alice@example.test, boss@example.test;\r\n\r\nx\r\n",
            false,
        ),
        (
            "From: alice@example.test\r\nSender: boss@example.test\r\n\r\nx\r\n",
            false,
        ),
        ("From: undisclosed:;\r\n\r\nx\r\n", false),
        (
            "From: Alice <ALICE@example.test>, alias@example.test\r\n\r\nx\r\n",
            true,
        ),
        (
            "From: team: alice@example.test;\r\nSender: alias@example.test\r\n\r\nx\r\n",
            true,
        ),
        ("Subject: no From at all\r\n\r\nx\r\n", true),
    ] {
        let mut h = Harness::submission(true);
        let c = submit(&mut h, msg);
        let want = if ok { "250 2.0.0" } else { "553 5.7.1" };
        assert_eq!(c.last().unwrap(), want, "{msg:?}");
        assert_eq!(h.msgs.len(), usize::from(ok));
    }
}

fn spool_params(p: &mut Params, dir: &std::path::Path, threshold: usize) {
    p.spool = Some(crate::smtp::spool::SpoolConfig {
        threshold,
        dir: dir.join("spool"),
    });
    p.max_message_size = 1 << 20;
}

#[test]
fn spooled_body_is_delivered_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let mut body = String::from("Subject: big\r\n\r\n");
    for i in 0..2000 {
        body.push_str(&format!("line {i} .. with a dot\r\n..stuffed\r\n"));
    }
    let mut stuffed_input = body.clone();
    stuffed_input.push_str(".\r\n");
    let mut results = Vec::new();
    for spool in [None, Some(64)] {
        let mut p = params(Flavor::Smtp);
        if let Some(t) = spool {
            spool_params(&mut p, tmp.path(), t);
        } else {
            p.max_message_size = 1 << 20;
        }
        let mut h = Harness::new(p);
        h.feed(b"EHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n");
        for chunk in stuffed_input.as_bytes().chunks(777) {
            h.feed(chunk);
        }
        assert_eq!(h.codes().last().unwrap(), "250 2.0.0");
        results.push(body_of(&h.msgs[0]));
    }
    assert_eq!(results[0], results[1]);
    assert!(results[0].len() > 60_000);
    // Nothing is left in the spool folder.
    assert_eq!(
        std::fs::read_dir(tmp.path().join("spool")).unwrap().count(),
        0
    );
}

#[test]
fn spooled_bdat_body_is_delivered_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let mut p = params(Flavor::Smtp);
    spool_params(&mut p, tmp.path(), 10);
    let mut h = Harness::new(p);
    h.feed(b"EHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<bob@example.test>\r\nBDAT 20\r\nSubject: s\r\n\r\n012345BDAT 6 LAST\r\n6789\r\n");
    assert_eq!(h.codes().last().unwrap(), "250 2.0.0");
    assert_eq!(body_of(&h.msgs[0]), b"Subject: s\r\n\r\n0123456789\r\n");
}

#[test]
fn submission_header_section_must_fit_before_the_spool_threshold() {
    // A From: beyond the in-memory part would escape the checks.
    let tmp = tempfile::tempdir().unwrap();
    let mut p = submission_params(true);
    spool_params(&mut p, tmp.path(), 100);
    let mut h = Harness::new(p);
    let msg = format!(
        "From: alice@example.test\r\nX-Pad: {}\r\nFrom: boss@example.test\r\n\r\nx\r\n",
        "p".repeat(200)
    );
    assert_eq!(submit(&mut h, &msg).last().unwrap(), "552 5.3.4");
    assert!(h.msgs.is_empty());
}

#[test]
fn spent_budget_answers_452_4_3_1_at_mail_data_and_bdat() {
    let budget = std::sync::Arc::new(crate::budget::Budget::new(8 << 10));
    let mut p = params(Flavor::Smtp);
    p.budget = Some(budget.clone());
    p.max_message_size = 4 << 10;
    let mut h = Harness::new(p.clone());
    h.codes();
    let hog = budget.try_take(6 << 10).unwrap();
    h.feed(b"EHLO x\r\nMAIL FROM:<a@b.example>\r\n");
    assert_eq!(h.codes().last().unwrap(), "452 4.3.1");
    drop(hog);
    h.feed(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<bob@example.test>\r\n");
    h.codes();
    let hog = budget.try_take(6 << 10).unwrap();
    h.feed(b"DATA\r\n");
    assert_eq!(h.codes(), ["452 4.3.1"]);
    h.feed(b"BDAT 3 LAST\r\nabc");
    assert_eq!(h.codes(), ["452 4.3.1"]);
    assert!(!h.closed);
    drop(hog);
    // The refused last chunk ended the transaction (RFC 3030 2: it failed).
    h.feed(b"BDAT 3 LAST\r\nabc");
    assert_eq!(h.codes(), ["503 5.5.1"]);
    h.feed(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<bob@example.test>\r\nBDAT 3 LAST\r\nabc");
    assert_eq!(h.codes().last().unwrap(), "250 2.0.0");
    // The reception lease is given back once the body is in.
    assert_eq!(budget.available(), 8 << 10);
}

/// A chunk refused for want of memory fails the transaction: a later
/// chunk, even with memory free again, is read and refused too, so no
/// message is ever built without the refused chunk's bytes; LMTP answers
/// the last chunk once per accepted recipient (RFC 2033 4.2), as a client
/// that pipelined the whole transaction counts.
#[test]
fn rfc3030_a_chunk_refused_for_memory_fails_the_whole_transaction() {
    for flavor in [Flavor::Smtp, Flavor::Lmtp] {
        let budget = std::sync::Arc::new(crate::budget::Budget::new(8 << 10));
        let mut p = params(flavor);
        p.budget = Some(budget.clone());
        p.max_message_size = 4 << 10;
        let mut h = Harness::new(p);
        h.codes();
        let hello = match flavor {
            Flavor::Smtp => "EHLO x\r\n",
            Flavor::Lmtp => "LHLO x\r\n",
        };
        h.feed(hello.as_bytes());
        h.feed(
            b"MAIL FROM:<a@b.example>\r\nRCPT TO:<a@example.test>\r\nRCPT TO:<b@example.test>\r\n",
        );
        h.codes();
        let hog = budget.try_take(6 << 10).unwrap();
        h.feed(b"BDAT 3\r\nabc");
        assert_eq!(h.codes(), ["452 4.3.1"], "{flavor:?}");
        drop(hog);
        h.feed(b"BDAT 3 LAST\r\ndef");
        let want: &[&str] = match flavor {
            Flavor::Smtp => &["452 4.3.1"],
            Flavor::Lmtp => &["452 4.3.1", "452 4.3.1"],
        };
        assert_eq!(h.codes(), want, "{flavor:?}");
        assert!(
            h.msgs.is_empty(),
            "{flavor:?}: a message without its first chunk"
        );
        assert!(
            !h.closed,
            "{flavor:?}: a server condition is not the client's error"
        );
        // A fresh transaction goes through.
        h.feed(b"MAIL FROM:<a@b.example>\r\nRCPT TO:<bob@example.test>\r\nBDAT 3 LAST\r\nghi");
        let last = h.codes().last().unwrap().clone();
        assert!(last.starts_with("250 "), "{flavor:?}: {last}");
        assert_eq!(h.msgs.len(), 1, "{flavor:?}");
    }
}

/// The delivery id is cut out of an LMTP RCPT line before smtp-proto
/// parses it; the rest of the line is left as it was.
#[test]
fn lmtp_delivery_id_parameter_is_taken_out_of_rcpt() {
    use super::session::take_delivery_id;
    let (line, id) =
        take_delivery_id(b"RCPT TO:<a@b> NOTIFY=NEVER xmsgd-delivery-id=Q1.0@h-1_x\r\n").unwrap();
    assert_eq!(line.unwrap(), b"RCPT TO:<a@b> NOTIFY=NEVER\r\n");
    assert_eq!(id.unwrap(), "Q1.0@h-1_x");
    assert_eq!(
        take_delivery_id(b"RCPT TO:<a@b>\r\n").unwrap(),
        (None, None)
    );
    assert_eq!(
        take_delivery_id(b"MAIL FROM:<a@b> XMSGD-DELIVERY-ID=x\r\n").unwrap(),
        (None, None)
    );
    assert!(take_delivery_id(b"RCPT TO:<a@b> XMSGD-DELIVERY-ID=a;b\r\n").is_err());
}
