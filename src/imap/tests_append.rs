//! Session tests for MULTIAPPEND (RFC 3502), REPLACE (RFC 8508) and
//! UNAUTHENTICATE (RFC 8437), each named after the RFC section it checks
//! (see docs/imap.md and `append.rs`).

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::tests::{append, harness, harness_with, tagged, Client, MSG1, MSG2, PASS, USER};
use crate::config::Protocol;
use crate::net::ConnInfo;

/// `APPEND mailbox` with each message as a LITERAL+ literal.
fn multiappend(tag: &str, mailbox: &str, msgs: &[&str]) -> String {
    let mut c = format!("{tag} APPEND {mailbox}");
    for m in msgs {
        c.push_str(&format!(" {{{}+}}\r\n{m}", m.len()));
    }
    c
}

/// EXISTS of a mailbox, by STATUS.
async fn messages(c: &mut Client, mailbox: &str) -> u32 {
    let r = c.cmd(&format!("st STATUS {mailbox} (MESSAGES)")).await;
    let at = r.find("(MESSAGES ").unwrap_or_else(|| panic!("{r}")) + 10;
    r[at..].split(')').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn rfc3502_6_3_11_multiappend_stores_all_with_an_appenduid_set() {
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    let r = c.cmd("c CAPABILITY").await;
    assert!(r.contains(" MULTIAPPEND "), "{r}");
    c.cmd("s SELECT INBOX").await;
    let r = c.cmd(&multiappend("a", "INBOX", &[MSG1, MSG2, MSG1])).await;
    // The selected mailbox hears of all three before the tagged OK.
    assert!(r.contains("* 3 EXISTS"), "{r}");
    let t = tagged(&r);
    assert!(t.starts_with("a OK [APPENDUID "), "{r}");
    assert!(t.contains(" 1:3] "), "{r}");
    // Flags and dates per message, synchronizing literals: `+` for each.
    let one = "Subject: one\r\n\r\nx\r\n";
    let two = "Subject: two\r\n\r\ny\r\n";
    c.send(format!("b APPEND INBOX (\\Seen) {{{}}}\r\n", one.len()).as_bytes())
        .await;
    assert!(c.line().await.starts_with("+ "));
    c.send(
        format!(
            "{one} (\\Flagged) \"01-Jan-2001 02:00:00 +0200\" {{{}}}\r\n",
            two.len()
        )
        .as_bytes(),
    )
    .await;
    assert!(c.line().await.starts_with("+ "));
    c.send(format!("{two}\r\n").as_bytes()).await;
    let r = c.until_tagged("b").await;
    assert!(tagged(&r).starts_with("b OK [APPENDUID "), "{r}");
    assert!(tagged(&r).contains(" 4:5] "), "{r}");
    let r = c.cmd("f FETCH 4:5 (FLAGS INTERNALDATE)").await;
    assert!(r.contains("* 4 FETCH (FLAGS (\\Seen"), "{r}");
    assert!(r.contains("* 5 FETCH (FLAGS (\\Flagged"), "{r}");
    assert!(r.contains("01-Jan-2001 02:00:00 +0200"), "{r}");
}

#[tokio::test]
async fn rfc3502_6_3_11_multiappend_is_all_or_nothing() {
    let h = harness_with(|c| c.imap.max_literal = 4096);
    let mut c = Client::logged_in(&h).await;
    append(&mut c, "INBOX", "", MSG1).await;
    // An empty message in the middle: nothing is stored.
    let r = c.cmd(&multiappend("a", "INBOX", &[MSG1, "", MSG2])).await;
    assert!(tagged(&r).starts_with("a NO "), "{r}");
    assert_eq!(messages(&mut c, "INBOX").await, 1);
    // A message over APPENDLIMIT: the framer refuses the command, the
    // literal is skipped, nothing is stored, the session goes on.
    let big = "x".repeat(5000);
    let r = c.cmd(&multiappend("b", "INBOX", &[MSG1, &big])).await;
    assert!(tagged(&r).starts_with("b NO [TOOBIG]"), "{r}");
    assert_eq!(messages(&mut c, "INBOX").await, 1);
    // No such mailbox.
    let r = c.cmd(&multiappend("d", "Nowhere", &[MSG1, MSG2])).await;
    assert!(tagged(&r).starts_with("d NO [TRYCREATE]"), "{r}");
    // More messages than MAX_MESSAGES: NO [LIMIT], nothing stored.
    let many = vec!["x"; super::append::MAX_MESSAGES + 1];
    let r = c.cmd(&multiappend("e", "INBOX", &many)).await;
    assert!(tagged(&r).starts_with("e NO [LIMIT]"), "{r}");
    assert_eq!(messages(&mut c, "INBOX").await, 1);
    let r = c.cmd("n NOOP").await;
    assert!(tagged(&r).starts_with("n OK"), "{r}");
}

#[tokio::test]
async fn rfc3502_6_3_11_rfc9208_multiappend_quota_for_the_whole_batch() {
    let h = harness_with(|c| c.store.default_message_quota = 3);
    let mut c = Client::logged_in(&h).await;
    append(&mut c, "INBOX", "", MSG1).await;
    append(&mut c, "INBOX", "", MSG2).await;
    // Each message alone would fit; the two together do not.
    let r = c.cmd(&multiappend("a", "INBOX", &[MSG1, MSG2])).await;
    assert!(tagged(&r).starts_with("a NO [OVERQUOTA]"), "{r}");
    assert_eq!(messages(&mut c, "INBOX").await, 2);
    let r = c.cmd(&multiappend("b", "INBOX", &[MSG1])).await;
    assert!(tagged(&r).starts_with("b OK [APPENDUID "), "{r}");
}

/// The new message's literal for REPLACE.
fn replace(tag: &str, verb: &str, num: &str, mailbox: &str, msg: &str) -> String {
    format!(
        "{tag} {verb} {num} {mailbox} (\\Seen) {{{}+}}\r\n{msg}",
        msg.len()
    )
}

#[tokio::test]
async fn rfc8508_3_replace_in_the_selected_mailbox() {
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    let r = c.cmd("c CAPABILITY").await;
    assert!(r.contains(" REPLACE "), "{r}");
    append(&mut c, "INBOX", "", MSG1).await;
    append(&mut c, "INBOX", "", MSG2).await;
    c.cmd("s SELECT INBOX").await;
    let r = c.cmd(&replace("a", "REPLACE", "1", "INBOX", MSG2)).await;
    assert!(r.contains("* OK [APPENDUID "), "{r}");
    assert!(r.contains(" 3] "), "{r}");
    assert!(r.contains("* 1 EXPUNGE\r\n"), "{r}");
    assert!(r.contains("* 2 EXISTS\r\n"), "{r}");
    let ok = r.find("* OK [APPENDUID").unwrap();
    assert!(ok < r.find("* 1 EXPUNGE").unwrap(), "{r}");
    assert!(tagged(&r).starts_with("a OK"), "{r}");
    let r = c.cmd("f FETCH 1:* (UID FLAGS)").await;
    assert!(r.contains("* 1 FETCH (UID 2 FLAGS ("), "{r}");
    assert!(r.contains("* 2 FETCH (UID 3 FLAGS (\\Seen"), "{r}");
    // Another session sees the old one go and the new one come.
    let mut d = Client::logged_in(&h).await;
    assert_eq!(messages(&mut d, "INBOX").await, 2);
}

#[tokio::test]
async fn rfc8508_3_uid_replace_into_another_mailbox() {
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    c.cmd("m CREATE Drafts2").await;
    append(&mut c, "INBOX", "", MSG1).await;
    append(&mut c, "INBOX", "", MSG2).await;
    c.cmd("s SELECT INBOX").await;
    let r = c
        .cmd(&replace("a", "UID REPLACE", "2", "Drafts2", MSG1))
        .await;
    assert!(r.contains("* OK [APPENDUID "), "{r}");
    assert!(r.contains("* 2 EXPUNGE\r\n"), "{r}");
    assert!(tagged(&r).starts_with("a OK"), "{r}");
    assert_eq!(messages(&mut c, "Drafts2").await, 1);
    // QRESYNC sessions see VANISHED instead.
    let mut q = Client::logged_in(&h).await;
    q.cmd("e ENABLE QRESYNC").await;
    q.cmd("s SELECT INBOX").await;
    let r = q
        .cmd(&replace("b", "UID REPLACE", "1", "Drafts2", MSG2))
        .await;
    assert!(r.contains("* VANISHED 1\r\n"), "{r}");
    assert!(tagged(&r).starts_with("b OK"), "{r}");
}

#[tokio::test]
async fn rfc8508_3_4_failed_replace_leaves_the_old_message() {
    let h = harness_with(|c| c.store.default_message_quota = 2);
    let mut c = Client::logged_in(&h).await;
    c.cmd("m CREATE Other").await;
    append(&mut c, "INBOX", "", MSG1).await;
    append(&mut c, "INBOX", "", MSG2).await;
    c.cmd("s SELECT INBOX").await;
    // No such target mailbox.
    let r = c.cmd(&replace("a", "REPLACE", "1", "Nowhere", MSG2)).await;
    assert!(tagged(&r).starts_with("a NO [TRYCREATE]"), "{r}");
    // An empty new message.
    let r = c.cmd("b REPLACE 1 INBOX {0+}\r\n").await;
    assert!(tagged(&r).starts_with("b NO "), "{r}");
    // A UID not in the mailbox; a sequence number beyond it.
    let r = c
        .cmd(&replace("d", "UID REPLACE", "99", "INBOX", MSG2))
        .await;
    assert!(tagged(&r).starts_with("d NO "), "{r}");
    let r = c.cmd(&replace("e", "REPLACE", "3", "INBOX", MSG2)).await;
    assert!(tagged(&r).starts_with("e BAD "), "{r}");
    // Replacing within the user frees the old message: at the quota of
    // two messages it still works.
    let r = c.cmd(&replace("g", "REPLACE", "2", "Other", MSG2)).await;
    assert!(tagged(&r).starts_with("g OK"), "{r}");
    let r = c.cmd("n NOOP").await;
    assert!(!r.contains("EXPUNGE"), "{r}");
    let r = c.cmd("f FETCH 1:* (UID)").await;
    assert!(r.contains("* 1 FETCH (UID 1)"), "{r}");
    assert!(!r.contains("* 2 FETCH"), "{r}");
    // Read-only: nothing is replaced.
    c.cmd("x EXAMINE INBOX").await;
    let r = c.cmd(&replace("h", "REPLACE", "1", "INBOX", MSG2)).await;
    assert!(tagged(&r).starts_with("h NO [READ-ONLY]"), "{r}");
    // Without a selected mailbox REPLACE is not valid.
    c.cmd("u UNSELECT").await;
    let r = c.cmd(&replace("i", "REPLACE", "1", "INBOX", MSG2)).await;
    assert!(tagged(&r).starts_with("i BAD "), "{r}");
    assert_eq!(messages(&mut c, "INBOX").await, 1);
}

#[tokio::test]
async fn rfc8437_3_unauthenticate_then_log_in_again() {
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    let r = c.cmd("c CAPABILITY").await;
    assert!(r.contains(" UNAUTHENTICATE"), "{r}");
    append(&mut c, "INBOX", "\\Deleted", MSG1).await;
    c.cmd("e ENABLE CONDSTORE").await;
    c.cmd("s SELECT INBOX").await;
    let r = c.cmd("u UNAUTHENTICATE").await;
    let t = tagged(&r);
    assert!(t.starts_with("u OK [CAPABILITY "), "{r}");
    assert!(t.contains("AUTH=PLAIN"), "{r}");
    assert!(!t.contains("UNAUTHENTICATE"), "{r}");
    // Not authenticated any more: the mailbox is closed, not expunged.
    let r = c.cmd("f FETCH 1 FLAGS").await;
    assert!(tagged(&r).starts_with("f BAD "), "{r}");
    let r = c.cmd("l LIST \"\" *").await;
    assert!(tagged(&r).starts_with("l BAD "), "{r}");
    let r = c.cmd("u2 UNAUTHENTICATE").await;
    assert!(tagged(&r).starts_with("u2 BAD "), "{r}");
    // A wrong password is a counted failure, as for a first login.
    let r = c.cmd(&format!("x LOGIN {USER} wrong")).await;
    assert!(tagged(&r).starts_with("x NO [AUTHENTICATIONFAILED]"), "{r}");
    let r = c.cmd(&format!("L LOGIN {USER} {PASS}")).await;
    assert!(tagged(&r).starts_with("L OK [CAPABILITY "), "{r}");
    // What the first login ENABLEd is gone; the message is still there.
    let r = c.cmd("e ENABLE CONDSTORE").await;
    assert!(r.contains("* ENABLED CONDSTORE"), "{r}");
    let r = c.cmd("s SELECT INBOX").await;
    assert!(r.contains("* 1 EXISTS"), "{r}");
    // Another user on the same connection: nothing of the first user's
    // session survives; no NOTIFY (RFC 5465) events reach the new user.
    c.cmd("c CLOSE").await;
    let r = c
        .cmd("n NOTIFY SET (personal (MessageNew MessageExpunge))")
        .await;
    assert!(tagged(&r).starts_with("n OK"), "{r}");
    c.cmd("u3 UNAUTHENTICATE").await;
    let r = c.cmd("m LOGIN carol@example.com carol-password").await;
    assert!(tagged(&r).starts_with("m OK"), "{r}");
    // Mail for either user: carol never asked for NOTIFY.
    let mut first = Client::logged_in(&h).await;
    append(&mut first, "INBOX", "", MSG1).await;
    let mut carol = Client::connect(&h).await;
    carol.cmd("m LOGIN carol@example.com carol-password").await;
    append(&mut carol, "INBOX", "", MSG1).await;
    let r = c.cmd("p NOOP").await;
    assert!(!r.contains("STATUS"), "{r}");
    // carol's INBOX: only the message just delivered to her.
    let r = c.cmd("s SELECT INBOX").await;
    assert!(r.contains("* 1 EXISTS"), "{r}");
}

#[tokio::test]
async fn rfc8437_3_login_limits_hold_across_unauthenticate() {
    let h = harness_with(|c| c.limits.max_auth_failures = 2);
    let mut c = Client::logged_in(&h).await;
    c.cmd("u UNAUTHENTICATE").await;
    let r = c.cmd(&format!("x LOGIN {USER} wrong")).await;
    assert!(tagged(&r).starts_with("x NO"), "{r}");
    let r = c.cmd(&format!("y LOGIN {USER} wrong")).await;
    assert!(r.contains("* BYE Too many authentication failures"), "{r}");
    // Before login again: a big literal is refused as before the first.
    let mut d = Client::logged_in(&h).await;
    d.cmd("u UNAUTHENTICATE").await;
    let r = d.cmd("a LOGIN {100000}").await;
    assert!(tagged(&r).starts_with("a NO [TOOBIG]"), "{r}");
}

#[tokio::test]
async fn rfc8437_3_no_unauthenticate_under_compress() {
    let h = harness();
    let (a, b) = tokio::io::duplex(1 << 20);
    tokio::spawn(super::serve(
        Box::new(b),
        ConnInfo::for_test(Protocol::Imap),
        h.services.clone(),
    ));
    let mut io = a;
    let mut buf = vec![0u8; 8192];
    let _ = io.read(&mut buf).await.unwrap();
    io.write_all(format!("a LOGIN {USER} {PASS}\r\nb COMPRESS DEFLATE\r\n").as_bytes())
        .await
        .unwrap();
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains("b OK") {
        let n = io.read(&mut buf).await.unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    let mut z = super::compress::Deflated::new(Box::new(io));
    z.write_all(b"c CAPABILITY\r\nd UNAUTHENTICATE\r\n")
        .await
        .unwrap();
    z.flush().await.unwrap();
    let mut out = Vec::new();
    while !String::from_utf8_lossy(&out).contains("d BAD") {
        let n = z.read(&mut buf).await.unwrap();
        assert!(n > 0, "{}", String::from_utf8_lossy(&out));
        out.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&out);
    let caps = text
        .lines()
        .find(|l| l.starts_with("* CAPABILITY"))
        .unwrap();
    assert!(!caps.contains("UNAUTHENTICATE"), "{text}");
    assert!(text.contains("d BAD "), "{text}");
}

#[tokio::test]
async fn rfc8508_3_4_store_append_batch_with_a_gone_message_stores_nothing() {
    use crate::store::{Flags, NewMessage, Quota};
    use std::sync::Arc;
    let h = harness();
    let store = h.services.store();
    let new = |s: &str| NewMessage {
        data: Arc::new(s.as_bytes().to_vec()),
        flags: Flags::default(),
        internal_date: None,
    };
    let first = store
        .append_batch(
            USER,
            "INBOX",
            vec![new(MSG1), new(MSG2)],
            Quota::default(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(first.uids, [1, 2]);
    // The message to replace is gone: neither is the new one stored.
    let r = store
        .append_batch(
            USER,
            "INBOX",
            vec![new(MSG1)],
            Quota::default(),
            Some((first.mailbox, 99)),
        )
        .await;
    assert!(r.is_err(), "{r:?}");
    assert_eq!(store.status(USER, "INBOX").await.unwrap().exists, 2);
    // Usage follows a replace: one message in, one out.
    let before = store.usage(USER).await.unwrap();
    let done = store
        .append_batch(
            USER,
            "INBOX",
            vec![new(MSG1)],
            Quota::default(),
            Some((first.mailbox, 2)),
        )
        .await
        .unwrap();
    assert_eq!(done.uids, [3]);
    let after = store.usage(USER).await.unwrap();
    assert_eq!(after.messages, before.messages);
    assert_eq!(
        after.bytes,
        before.bytes - MSG2.len() as u64 + MSG1.len() as u64
    );
}

#[tokio::test]
async fn rfc8437_3_no_unauthenticate_behind_a_front_end() {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let h = harness_with(|c| c.imap.proxy_users = vec!["mmp@example.com".into()]);
    // A proxy account logged in on the user's behalf.
    let mut c = Client::connect(&h).await;
    let ir = b64(&format!("{USER}\0mmp@example.com\0mmp-password"));
    let r = c.cmd(&format!("a AUTHENTICATE PLAIN {ir}")).await;
    assert!(tagged(&r).starts_with("a OK"), "{r}");
    assert!(!r.contains("UNAUTHENTICATE"), "{r}");
    let r = c.cmd("u UNAUTHENTICATE").await;
    assert!(tagged(&r).starts_with("u BAD "), "{r}");
    // A local front end that named the real client.
    let mut c = Client::connect(&h).await;
    c.cmd("i ID (\"x-originating-ip\" \"198.51.100.7\")").await;
    let r = c.cmd(&format!("L LOGIN {USER} {PASS}")).await;
    assert!(tagged(&r).starts_with("L OK"), "{r}");
    assert!(!r.contains("UNAUTHENTICATE"), "{r}");
    // A store that takes logins only from its mmps.
    let h = harness_with(|c| c.imap.login_networks = vec!["127.0.0.0/8".parse().unwrap()]);
    let mut c = Client::logged_in(&h).await;
    let r = c.cmd("c CAPABILITY").await;
    assert!(!r.contains("UNAUTHENTICATE"), "{r}");
    let r = c.cmd("u UNAUTHENTICATE").await;
    assert!(tagged(&r).starts_with("u BAD "), "{r}");
}

/// A front end on another host that logs in with the user's own
/// credentials (the mmp's "credentials" mode) is not trusted with the
/// client's address, yet its ID "x-originating-ip" still marks the
/// connection as proxied: UNAUTHENTICATE stays refused, so a client cannot
/// retry logins at the store from the front end's address (RFC 8437 3).
#[tokio::test]
async fn rfc8437_3_no_unauthenticate_behind_a_remote_front_end() {
    let h = harness_with(|c| c.imap.allow_plaintext_auth = true);
    let (a, b) = tokio::io::duplex(1 << 16);
    let mut info = ConnInfo::for_test(Protocol::Imap);
    info.peer = "192.0.2.10:40000".parse().unwrap();
    tokio::spawn(super::serve(Box::new(b), info, h.services.clone()));
    let mut io = a;
    let mut buf = vec![0u8; 8192];
    let _ = io.read(&mut buf).await.unwrap();
    io.write_all(
        format!(
            "i ID (\"x-originating-ip\" \"198.51.100.7\")\r\na LOGIN {USER} {PASS}\r\nu UNAUTHENTICATE\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains("\r\nu ") {
        let n = io.read(&mut buf).await.unwrap();
        assert!(n > 0, "{}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let got = String::from_utf8_lossy(&got);
    assert!(got.contains("a OK"), "{got}");
    assert!(got.contains("\r\nu BAD "), "{got}");
}

/// A front end that reuses its store connections (the mmp) says so in
/// its ID before login (`"x-unauthenticate" "proxy"`: it answers its
/// clients' UNAUTHENTICATE itself). From loopback or
/// `imap.login_networks` it may UNAUTHENTICATE, and the next login's ID
/// names the next client; from anywhere else the flag changes nothing,
/// nor does it after login.
#[tokio::test]
async fn rfc8437_3_a_reusing_front_end_may_unauthenticate_on_a_trusted_path() {
    let h = harness();
    let mut c = Client::connect(&h).await;
    c.cmd("i ID (\"x-originating-ip\" \"198.51.100.7\" \"x-unauthenticate\" \"proxy\")")
        .await;
    let r = c.cmd(&format!("a LOGIN {USER} {PASS}")).await;
    assert!(
        tagged(&r).starts_with("a OK") && r.contains(" UNAUTHENTICATE"),
        "{r}"
    );
    let r = c.cmd("s SELECT INBOX").await;
    assert!(tagged(&r).starts_with("s OK"), "{r}");
    let r = c.cmd("u UNAUTHENTICATE").await;
    assert!(tagged(&r).starts_with("u OK"), "{r}");
    let r = c.cmd("n NOOP").await;
    assert!(tagged(&r).starts_with("n OK"), "{r}");
    let r = c.cmd("x SELECT INBOX").await;
    assert!(
        tagged(&r).starts_with("x BAD") || tagged(&r).starts_with("x NO"),
        "{r}"
    );
    // The next front-end login without the flag: no UNAUTHENTICATE, and
    // the flag given after login is nothing.
    c.cmd("j ID (\"x-originating-ip\" \"198.51.100.8\")").await;
    let r = c.cmd(&format!("b LOGIN {USER} {PASS}")).await;
    assert!(
        tagged(&r).starts_with("b OK") && !r.contains("UNAUTHENTICATE"),
        "{r}"
    );
    c.cmd("k ID (\"x-unauthenticate\" \"proxy\")").await;
    let r = c.cmd("v UNAUTHENTICATE").await;
    assert!(tagged(&r).starts_with("v BAD"), "{r}");

    // From elsewhere: a remote front end outside `imap.login_networks`
    // (none set), then one inside them, with and without the flag.
    let h = harness_with(|c| c.imap.allow_plaintext_auth = true);
    let r = front_end_unauthenticate(remote(&h).await, "proxy").await;
    assert!(tagged(&r).starts_with("u BAD "), "{r}");
    let h = harness_with(|c| {
        c.imap.allow_plaintext_auth = true;
        c.imap.login_networks = vec!["192.0.2.0/24".parse().unwrap()];
    });
    let r = front_end_unauthenticate(remote(&h).await, "proxy").await;
    assert!(tagged(&r).starts_with("u OK "), "{r}");
    let r = front_end_unauthenticate(remote(&h).await, "no").await;
    assert!(tagged(&r).starts_with("u BAD "), "{r}");
}

/// A front end's ID (with `flag` as its "x-unauthenticate"), its login,
/// then UNAUTHENTICATE: that answer.
async fn front_end_unauthenticate(mut c: Client, flag: &str) -> String {
    c.cmd(&format!(
        "i ID (\"x-originating-ip\" \"198.51.100.7\" \"x-unauthenticate\" \"{flag}\")"
    ))
    .await;
    let r = c.cmd(&format!("a LOGIN {USER} {PASS}")).await;
    assert!(tagged(&r).starts_with("a OK"), "{r}");
    c.cmd("u UNAUTHENTICATE").await
}

/// A session from a remote address (192.0.2.10).
async fn remote(h: &super::tests::Harness) -> Client {
    let mut info = ConnInfo::for_test(Protocol::Imap);
    info.peer = "192.0.2.10:40000".parse().unwrap();
    Client::connect_info(h, info).await
}

/// A reusing front end's UNAUTHENTICATE starts the connection's counts
/// of bad commands again: one client's cannot close it on the next.
#[tokio::test]
async fn rfc8437_3_a_front_end_client_does_not_inherit_bad_commands() {
    let h = harness();
    let mut c = Client::connect(&h).await;
    for round in 0..2 {
        c.cmd("i ID (\"x-originating-ip\" \"198.51.100.7\" \"x-unauthenticate\" \"proxy\")")
            .await;
        let r = c.cmd(&format!("a LOGIN {USER} {PASS}")).await;
        assert!(tagged(&r).starts_with("a OK"), "round {round}: {r}");
        for i in 0..8 {
            let r = c.cmd(&format!("x{i} FROB")).await;
            assert!(
                tagged(&r).starts_with(&format!("x{i} BAD")),
                "round {round}: {r}"
            );
        }
        let r = c.cmd("u UNAUTHENTICATE").await;
        assert!(tagged(&r).starts_with("u OK"), "round {round}: {r}");
    }
    let r = c.cmd("n NOOP").await;
    assert!(tagged(&r).starts_with("n OK"), "{r}");
}
