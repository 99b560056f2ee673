//! The session core without a driver: bytes in, output and the next
//! effect out. Every script is fed split at every byte (as the SMTP core's
//! tests do) and must give the same responses as when fed whole, in each
//! state of RFC 9051 3.

use tokio::sync::mpsc;

use crate::config::Protocol;
use crate::net::ConnInfo;

use super::session::{Input, Next, Session};
use super::tests::{harness, Harness, PASS, USER};

/// A core and the receiving end of its output channel.
struct Core {
    s: Session,
    rx: mpsc::Receiver<Vec<u8>>,
}

impl Core {
    fn new(h: &Harness) -> Core {
        let (mut s, rx) = Session::new(ConnInfo::for_test(Protocol::Imap), h.services.clone());
        assert_eq!(s.start(), Next::Read);
        let greeting = String::from_utf8(s.take_output()).unwrap();
        assert!(
            greeting.starts_with("* OK [CAPABILITY IMAP4rev1"),
            "{greeting}"
        );
        Core { s, rx }
    }

    async fn logged_in(h: &Harness) -> Core {
        let mut c = Core::new(h);
        let (next, out) = c
            .feed(format!("l LOGIN {USER} {PASS}\r\n").as_bytes())
            .await;
        assert_eq!(next, Next::Read);
        assert!(out.contains("l OK [CAPABILITY"), "{out}");
        c
    }

    /// One input; what the core wrote (channel chunks, then `out`).
    async fn input(&mut self, input: Input<'_>) -> (Next, String) {
        let mut out = Vec::new();
        let next = {
            let step = self.s.input(input);
            tokio::pin!(step);
            loop {
                tokio::select! {
                    biased;
                    next = &mut step => break next,
                    Some(chunk) = self.rx.recv() => out.extend_from_slice(&chunk),
                }
            }
        };
        while let Ok(chunk) = self.rx.try_recv() {
            out.extend_from_slice(&chunk);
        }
        out.extend_from_slice(&self.s.take_output());
        (next, String::from_utf8_lossy(&out).into_owned())
    }

    async fn feed(&mut self, bytes: &[u8]) -> (Next, String) {
        self.input(Input::Data(bytes)).await
    }

    /// `script` in two pieces split at `at`; all output, the last effect.
    async fn feed_split(&mut self, script: &[u8], at: usize) -> (Next, String) {
        let (a, b) = script.split_at(at);
        let (first, mut out) = self.feed(a).await;
        if first != Next::Read {
            // The driver feeds nothing more after an effect like Close.
            return (first, out);
        }
        let (next, rest) = self.feed(b).await;
        out.push_str(&rest);
        (next, out)
    }
}

/// Feeds `script` to a fresh core per split point (`setup` makes it) and
/// checks the output against the whole-script run with `check`.
async fn every_split<F, Fut>(script: &str, setup: F, check: impl Fn(&str, Next))
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Core>,
{
    let bytes = script.as_bytes();
    let mut whole = setup().await;
    let (next, reference) = whole.feed(bytes).await;
    check(&reference, next);
    for at in 1..bytes.len() {
        let mut c = setup().await;
        let (n, out) = c.feed_split(bytes, at).await;
        assert_eq!(n, next, "split at {at}");
        assert_eq!(out, reference, "split at {at}");
    }
}

/// RFC 9051 6.1 and 6.2 (not authenticated): CAPABILITY, a selected-state
/// command refused, LOGIN with synchronizing and non-synchronizing
/// literals, whatever the byte boundaries.
#[tokio::test]
async fn rfc9051_6_2_not_authenticated_split_at_every_byte() {
    let h = harness();
    let script = format!(
        "a CAPABILITY\r\nb FETCH 1 FLAGS\r\nc SELECT INBOX\r\nd LOGIN {{{}+}}\r\n{USER} {{{}}}\r\n{PASS}\r\ne NOOP\r\n",
        USER.len(),
        PASS.len()
    );
    every_split(
        &script,
        || async { Core::new(&h) },
        |out, next| {
            assert_eq!(next, Next::Read);
            assert!(out.contains("* CAPABILITY IMAP4rev1 IMAP4rev2"), "{out}");
            assert!(out.contains("a OK CAPABILITY completed"), "{out}");
            assert!(
                out.contains("b BAD Command not valid before login"),
                "{out}"
            );
            assert!(
                out.contains("c BAD Command not valid before login"),
                "{out}"
            );
            // The synchronizing literal got its continuation request.
            assert!(out.contains("+ Ready for literal data\r\n"), "{out}");
            assert!(out.contains("d OK [CAPABILITY IMAP4rev1"), "{out}");
            assert!(out.ends_with("e OK NOOP completed\r\n"), "{out}");
        },
    )
    .await;
}

/// RFC 9051 6.2.2 with RFC 4616: AUTHENTICATE PLAIN without an initial
/// response waits for the client's line (a Pending state), split anywhere.
#[tokio::test]
async fn rfc9051_6_2_2_authenticate_continuation_split_at_every_byte() {
    use base64::Engine;
    let h = harness();
    let resp = base64::engine::general_purpose::STANDARD.encode(format!("\0{USER}\0{PASS}"));
    let script = format!("a AUTHENTICATE PLAIN\r\n{resp}\r\nb NAMESPACE\r\n");
    every_split(
        &script,
        || async { Core::new(&h) },
        |out, next| {
            assert_eq!(next, Next::Read);
            assert!(out.starts_with("+ \r\na OK [CAPABILITY"), "{out}");
            assert!(out.contains("* NAMESPACE"), "{out}");
            assert!(out.ends_with("b OK NAMESPACE completed\r\n"), "{out}");
        },
    )
    .await;
    // `*` cancels (RFC 9051 6.2.2), and the session goes on.
    let mut c = Core::new(&h);
    let (_, out) = c
        .feed(b"a AUTHENTICATE PLAIN\r\n*\r\nb CAPABILITY\r\n")
        .await;
    assert!(out.contains("a BAD Authentication cancelled"), "{out}");
    assert!(out.contains("b OK CAPABILITY completed"), "{out}");
}

/// RFC 9051 6.3 (authenticated): LIST, STATUS, ENABLE, a selected-state
/// command refused, then SELECT and UNSELECT back; the same session is
/// reused for every split, the script leaves it as it found it.
#[tokio::test]
async fn rfc9051_6_3_authenticated_split_at_every_byte() {
    let h = harness();
    let mut c = Core::logged_in(&h).await;
    // A selected-state command is refused (once: BADs add up to a BYE).
    let (_, out) = c.feed(b"s3 FETCH 1 FLAGS\r\n").await;
    assert_eq!(out, "s3 BAD No mailbox selected\r\n");
    let script = "s1 LIST \"\" *\r\ns2 STATUS INBOX (MESSAGES UIDNEXT)\r\ns4 SELECT INBOX\r\ns5 UNSELECT\r\ns6 ENABLE CONDSTORE\r\n";
    let (next, reference) = c.feed(script.as_bytes()).await;
    assert_eq!(next, Next::Read);
    assert!(
        reference.contains("* LIST (") && reference.contains("INBOX"),
        "{reference}"
    );
    assert!(
        reference.contains("* STATUS \"INBOX\" (MESSAGES 0 UIDNEXT 1)"),
        "{reference}"
    );
    assert!(
        reference.contains("s4 OK [READ-WRITE] SELECT completed"),
        "{reference}"
    );
    assert!(
        reference.contains("s5 OK UNSELECT completed"),
        "{reference}"
    );
    assert!(
        reference.contains("* ENABLED CONDSTORE\r\ns6 OK"),
        "{reference}"
    );
    // ENABLE is idempotent: the same answer but an empty ENABLED.
    let reference = reference.replace("* ENABLED CONDSTORE", "* ENABLED");
    for at in 1..script.len() {
        let (n, out) = c.feed_split(script.as_bytes(), at).await;
        assert_eq!(n, Next::Read);
        // CONDSTORE is on from the first run: SELECT says HIGHESTMODSEQ.
        let out: String = out
            .lines()
            .filter(|l| !l.contains("HIGHESTMODSEQ"))
            .map(|l| format!("{l}\r\n"))
            .collect();
        let reference: String = reference
            .lines()
            .filter(|l| !l.contains("HIGHESTMODSEQ"))
            .map(|l| format!("{l}\r\n"))
            .collect();
        assert_eq!(out, reference, "split at {at}");
    }
}

/// RFC 9051 6.4 (selected) with RFC 2177: FETCH, STORE, SEARCH, an APPEND
/// literal and IDLE ... DONE, split at every byte.
#[tokio::test]
async fn rfc9051_6_4_selected_split_at_every_byte() {
    let h = harness();
    let mut c = Core::logged_in(&h).await;
    let msg = "Subject: hi\r\n\r\nbody\r\n";
    let (_, out) = c
        .feed(format!("a APPEND INBOX {{{}}}\r\n{msg}\r\n", msg.len()).as_bytes())
        .await;
    assert!(out.contains("a OK [APPENDUID"), "{out}");
    let (_, out) = c.feed(b"s SELECT INBOX\r\n").await;
    assert!(out.contains("* 1 EXISTS"), "{out}");
    let script = "f1 FETCH 1 (FLAGS UID RFC822.SIZE)\r\nf2 STORE 1 +FLAGS (\\Flagged)\r\nf3 UID SEARCH FLAGGED\r\nf4 IDLE\r\nDONE\r\nf5 NOOP\r\nf6 STORE 1 -FLAGS.SILENT (\\Flagged)\r\n";
    let (next, reference) = c.feed(script.as_bytes()).await;
    assert_eq!(next, Next::Read);
    let size = msg.len();
    assert!(
        reference.contains(&format!(
            "* 1 FETCH (FLAGS (\\Recent) UID 1 RFC822.SIZE {size})"
        )),
        "{reference}"
    );
    assert!(reference.contains("f3 OK"), "{reference}");
    assert!(reference.contains("* SEARCH 1\r\n"), "{reference}");
    assert!(
        reference.contains("+ idling\r\nf4 OK IDLE terminated\r\n"),
        "{reference}"
    );
    assert!(
        reference.contains("f5 OK NOOP completed\r\n"),
        "{reference}"
    );
    assert!(
        reference.ends_with("f6 OK STORE completed\r\n"),
        "{reference}"
    );
    for at in 1..script.len() {
        let (n, out) = c.feed_split(script.as_bytes(), at).await;
        assert_eq!(n, Next::Read);
        assert_eq!(out, reference, "split at {at}");
    }
}

/// RFC 2177: an IDLE waits for the driver's input; a change in the
/// mailbox wakes it (Input::Wake) and is pushed at once; the idle timer
/// ends it with BYE and the tagged OK.
#[tokio::test]
async fn rfc2177_idle_is_a_pending_state_woken_by_the_store() {
    let h = harness();
    let mut c = Core::logged_in(&h).await;
    let (_, out) = c.feed(b"s SELECT INBOX\r\ni IDLE\r\n").await;
    assert!(out.ends_with("+ idling\r\n"), "{out}");
    let wait = c.s.wait();
    let msg = crate::store::NewMessage {
        data: std::sync::Arc::new(b"Subject: new\r\n\r\nx\r\n".to_vec()),
        flags: Default::default(),
        internal_date: None,
    };
    h.services
        .store()
        .append(USER, "INBOX", msg, Default::default())
        .await
        .unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), wait.wake)
        .await
        .expect("the store's change wakes the idling core");
    let (next, out) = c.input(Input::Wake).await;
    assert_eq!(next, Next::Read);
    assert!(out.contains("* 1 EXISTS"), "{out}");
    let (next, out) = c.input(Input::Timeout).await;
    assert_eq!(next, Next::Close);
    assert_eq!(
        out,
        "* BYE Autologout; idle for too long\r\ni OK IDLE terminated\r\n"
    );
}

/// RFC 9051 3 (logout state) and 6.1.3: LOGOUT answers BYE then OK and
/// asks the driver to close, wherever the bytes are split.
#[tokio::test]
async fn rfc9051_6_1_3_logout_split_at_every_byte() {
    let h = harness();
    every_split(
        "z LOGOUT\r\nafter NOOP\r\n",
        || async { Core::new(&h) },
        |out, next| {
            assert_eq!(next, Next::Close);
            // Nothing after LOGOUT is run.
            assert_eq!(out, "* BYE Logging out\r\nz OK LOGOUT completed\r\n");
        },
    )
    .await;
}

/// STARTTLS and COMPRESS are effects for the driver: the tagged OK comes
/// first, then `Next` asks for the upgrade; input pipelined behind
/// STARTTLS is discarded (RFC 9051 6.2.1).
#[tokio::test]
async fn rfc9051_6_2_1_starttls_is_an_effect_and_drops_pipelined_input() {
    let h = harness();
    let mut info = ConnInfo::for_test(Protocol::Imap);
    info.tls_mode = crate::config::TlsMode::StartTls;
    let (mut s, rx) = Session::new(info, h.services.clone());
    s.start();
    s.take_output();
    let mut c = Core { s, rx };
    let (next, out) = c.feed(b"t STARTTLS\r\nx LOGIN a b\r\n").await;
    assert_eq!(next, Next::StartTls);
    assert_eq!(out, "t OK Begin TLS negotiation now\r\n");
    c.s.tls_started();
    let (next, out) = c.feed(b"").await;
    assert_eq!(next, Next::Read);
    assert_eq!(out, "", "the pipelined LOGIN was discarded");
    let (_, out) = c.feed(b"c CAPABILITY\r\n").await;
    assert!(!out.contains("STARTTLS"), "{out}");
}

/// Output with every word that holds a digit replaced: UIDs, modseqs,
/// ids and dates move between runs of the same script; the responses'
/// shape must not.
fn shape(out: &str) -> String {
    let mut s = String::with_capacity(out.len());
    let mut word = String::new();
    let flush = |word: &mut String, s: &mut String| {
        if word.chars().any(|c| c.is_ascii_digit()) {
            s.push('N');
        } else {
            s.push_str(word);
        }
        word.clear();
    };
    for ch in out.chars() {
        if ch.is_ascii_alphanumeric() {
            word.push(ch);
        } else {
            flush(&mut word, &mut s);
            s.push(ch);
        }
    }
    flush(&mut word, &mut s);
    s
}

/// Every command of the selected and authenticated states, each in a
/// script that leaves the mailbox as it found it, split at every byte:
/// the same responses (up to numbers) as when the script comes whole.
#[tokio::test]
async fn rfc9051_every_command_split_at_every_byte() {
    let h = harness();
    let mut c = Core::logged_in(&h).await;
    let msg = "From: a@example.com\r\nSubject: core\r\nMessage-ID: <1@x>\r\n\r\nbody word\r\n";
    let n = msg.len();
    let (_, out) = c
        .feed(format!("a APPEND INBOX {{{n}+}}\r\n{msg} {{{n}+}}\r\n{msg}\r\n").as_bytes())
        .await;
    assert!(out.contains("a OK [APPENDUID"), "{out}");
    let (_, out) = c.feed(b"s SELECT INBOX\r\n").await;
    assert!(out.contains("* 2 EXISTS"), "{out}");
    let scripts: Vec<String> = vec![
        "x1 EXAMINE INBOX\r\nx2 SELECT INBOX\r\n".into(),
        "c1 CREATE Tmp\r\nc2 RENAME Tmp Tmp2\r\nc3 DELETE Tmp2\r\n".into(),
        "b1 SUBSCRIBE INBOX\r\nb2 LSUB \"\" *\r\nb3 UNSUBSCRIBE INBOX\r\n".into(),
        "l1 LIST (SUBSCRIBED) \"\" * RETURN (CHILDREN STATUS (MESSAGES))\r\n".into(),
        "q1 GETQUOTAROOT INBOX\r\nq2 GETQUOTA \"\"\r\nq3 SETQUOTA \"\" (STORAGE 1)\r\n".into(),
        "r1 GETACL INBOX\r\nr2 MYRIGHTS INBOX\r\nr3 LISTRIGHTS INBOX carol@example.com\r\n".into(),
        "r4 SETACL INBOX carol@example.com lr\r\nr5 DELETEACL INBOX carol@example.com\r\n".into(),
        "m1 SETMETADATA INBOX (/private/comment \"hi\")\r\nm2 GETMETADATA INBOX (/private/comment)\r\nm3 SETMETADATA INBOX (/private/comment NIL)\r\n".into(),
        "i1 ID (\"name\" \"test\")\r\ni2 NAMESPACE\r\ni3 CAPABILITY\r\ni4 NOOP\r\ni5 CHECK\r\n".into(),
        "f1 FETCH 1:* (UID FLAGS ENVELOPE BODYSTRUCTURE INTERNALDATE)\r\nf2 UID FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)] BINARY.PEEK[1] PREVIEW)\r\n".into(),
        "f3 FETCH 1 (MODSEQ EMAILID THREADID)\r\n".into(),
        "t1 STORE 1:2 +FLAGS ($Label1)\r\nt2 UID STORE 1:* -FLAGS.SILENT ($Label1)\r\n".into(),
        "e1 SEARCH RETURN (MIN MAX COUNT) TEXT word\r\ne2 UID SEARCH OR FROM a@example.com SUBJECT core\r\n".into(),
        "o1 SORT (SUBJECT DATE) UTF-8 ALL\r\no2 UID SORT RETURN (COUNT) (REVERSE ARRIVAL) UTF-8 ALL\r\no3 THREAD REFERENCES UTF-8 ALL\r\n".into(),
        "u1 SEARCH RETURN (UPDATE) SUBJECT core\r\nu2 CANCELUPDATE \"u1\"\r\n".into(),
        "p1 COPY 1 INBOX\r\np2 UID EXPUNGE 1000000\r\np3 STORE 3 +FLAGS.SILENT (\\Deleted)\r\np4 EXPUNGE\r\n".into(),
        "v1 UID MOVE 1:* Junk\r\nv2 SELECT Junk\r\nv3 MOVE 1:* INBOX\r\nv4 SELECT INBOX\r\n".into(),
        "n1 NOTIFY SET (selected (MessageNew MessageExpunge)) (personal (MailboxName))\r\nn2 NOTIFY NONE\r\n".into(),
        "g1 GENURLAUTH \"imap://alice%40example.com@localhost/INBOX/;UIDVALIDITY=1/;UID=1;URLAUTH=user+alice%40example.com\" INTERNAL\r\ng2 RESETKEY INBOX\r\ng3 URLFETCH \"imap://localhost/INBOX/;UID=1\"\r\n".into(),
        format!("h1 APPEND Drafts (\\Draft) {{{n}+}}\r\n{msg}\r\nh2 SELECT Drafts\r\nh3 REPLACE 1 Drafts {{{n}+}}\r\n{msg}\r\nh4 STORE 1 +FLAGS.SILENT (\\Deleted)\r\nh5 CLOSE\r\nh6 SELECT INBOX\r\n"),
        "k1 APPEND Drafts CATENATE (TEXT {4+}\r\nab\r\n)\r\nk2 SELECT Drafts\r\nk3 STORE 1:* +FLAGS.SILENT (\\Deleted)\r\nk4 UNSELECT\r\nk5 SELECT Drafts\r\nk6 EXPUNGE\r\nk7 SELECT INBOX\r\n".into(),
    ];
    for script in &scripts {
        let bytes = script.as_bytes();
        // Twice whole: the second run is the steady state.
        c.feed(bytes).await;
        let (next, reference) = c.feed(bytes).await;
        assert_eq!(next, Next::Read, "{script}");
        assert!(!reference.contains(" BAD "), "{script}\n{reference}");
        for at in 1..bytes.len() {
            let (n, out) = c.feed_split(bytes, at).await;
            assert_eq!(n, Next::Read, "{script} split at {at}");
            assert_eq!(shape(&out), shape(&reference), "{script} split at {at}");
        }
    }
}

/// RFC 4978 (COMPRESS is an effect after the tagged OK) and RFC 8437
/// (UNAUTHENTICATE takes the session back to not authenticated: selected
/// commands are refused as before login, LOGIN works again).
#[tokio::test]
async fn rfc4978_compress_effect_and_rfc8437_unauthenticate_state() {
    let h = harness();
    let mut c = Core::logged_in(&h).await;
    let (next, out) = c
        .feed(b"s SELECT INBOX\r\nu UNAUTHENTICATE\r\nf FETCH 1 FLAGS\r\n")
        .await;
    assert_eq!(next, Next::Read);
    assert!(out.contains("u OK [CAPABILITY"), "{out}");
    assert!(
        out.ends_with("f BAD Command not valid before login\r\n"),
        "{out}"
    );
    let (_, out) = c
        .feed(format!("l LOGIN {USER} {PASS}\r\n").as_bytes())
        .await;
    assert!(out.contains("l OK"), "{out}");
    let (next, out) = c.feed(b"z COMPRESS DEFLATE\r\n").await;
    assert_eq!(next, Next::Compress);
    assert_eq!(out, "z OK DEFLATE active\r\n");
    c.s.compression_started();
    let (_, out) = c.feed(b"y COMPRESS DEFLATE\r\n").await;
    assert_eq!(
        out,
        "y NO [COMPRESSIONACTIVE] Compression is already active\r\n"
    );
}

/// An idle connection's task holds the driver loop, the core and its
/// buffers, not the futures of every command handler (the driver boxes
/// each step): issue 12 wants a waiting IMAP connection to cost little.
#[test]
fn a_waiting_connection_task_is_small() {
    let h = harness();
    let (a, _b) = tokio::io::duplex(16);
    let serve = super::driver::serve(
        Box::new(a),
        ConnInfo::for_test(Protocol::Imap),
        h.services.clone(),
    );
    let size = std::mem::size_of_val(&serve);
    assert!(size < 8 * 1024, "the connection task is {size} bytes");
}
