//! End-to-end tests of THREADID (RFC 8474, backed by the store's thread
//! index), METADATA (RFC 5464) and PREVIEW (RFC 8970). Same harness as
//! `tests.rs` and `tests_ext.rs`.

use super::metadata::{MAX_ENTRIES, MAX_VALUE};
use super::tests::{append, harness, tagged, Client};

/// The THREADID of every FETCH response in `r`, in order.
fn thread_ids(r: &str) -> Vec<String> {
    r.split("THREADID ")
        .skip(1)
        .map(|s| {
            s.trim_start_matches('(')
                .split([')', ' '])
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

fn msg(id: &str, subject: &str, extra: &str) -> String {
    format!(
        "From: a@example.com\r\nTo: b@example.com\r\nSubject: {subject}\r\nMessage-ID: <{id}>\r\n{extra}\r\nbody of {id}\r\n"
    )
}

// ------------------------------------------------------------ THREADID

#[tokio::test]
async fn rfc8474_5_2_threadid_follows_replies_and_survives_copy_move() {
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    append(&mut c, "INBOX", "", &msg("a@x", "Lunch", "")).await;
    // A reply by In-Reply-To, a reply of a reply by References only.
    append(
        &mut c,
        "INBOX",
        "",
        &msg("b@x", "Re: Lunch", "In-Reply-To: <a@x>\r\n"),
    )
    .await;
    append(
        &mut c,
        "INBOX",
        "",
        &msg("c@x", "other words", "References: <a@x> <b@x>\r\n"),
    )
    .await;
    // Same subject without reply markers: its own thread.
    append(&mut c, "INBOX", "", &msg("d@x", "Lunch", "")).await;
    // A reply that lost its References joins by base subject.
    append(&mut c, "INBOX", "", &msg("e@x", "Fwd: Re: lunch", "")).await;
    c.cmd("s SELECT INBOX").await;
    let r = c.cmd("f FETCH 1:* (THREADID)").await;
    let t = thread_ids(&r);
    assert_eq!(t.len(), 5, "{r}");
    assert!(t[0].starts_with('T'), "{r}");
    assert_eq!(t[1], t[0], "{r}");
    assert_eq!(t[2], t[0], "{r}");
    assert_ne!(t[3], t[0], "{r}");
    // The latest thread with base subject "lunch" is message 4's.
    assert_eq!(t[4], t[3], "{r}");
    // SEARCH THREADID.
    let r = c.cmd(&format!("g SEARCH THREADID {}", t[0])).await;
    assert!(r.starts_with("* SEARCH 1 2 3\r\n"), "{r}");
    let r = c.cmd("h UID SEARCH THREADID T0000000000000bad").await;
    assert!(r.starts_with("* SEARCH\r\n"), "{r}");
    // COPY and MOVE keep it.
    c.cmd("i COPY 2 Sent").await;
    c.cmd("j MOVE 3 Trash").await;
    c.cmd("k SELECT Sent").await;
    let r = c.cmd("l FETCH 1 (THREADID)").await;
    assert_eq!(thread_ids(&r), vec![t[0].clone()], "{r}");
    c.cmd("m SELECT Trash").await;
    let r = c.cmd("n FETCH 1 (THREADID)").await;
    assert_eq!(thread_ids(&r), vec![t[0].clone()], "{r}");
}

#[tokio::test]
async fn rfc8474_5_2_threadid_reply_before_parent_and_no_merge() {
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    // The reply comes first; the parent then finds the reply's thread.
    append(
        &mut c,
        "INBOX",
        "",
        &msg("r@x", "Re: plan", "In-Reply-To: <p@x>\r\n"),
    )
    .await;
    append(&mut c, "INBOX", "", &msg("p@x", "plan", "")).await;
    // Two independent threads, then a message naming both: it joins the
    // nearest (In-Reply-To) and the threads stay apart.
    append(&mut c, "INBOX", "", &msg("q@x", "other", "")).await;
    append(
        &mut c,
        "INBOX",
        "",
        &msg(
            "z@x",
            "both",
            "In-Reply-To: <q@x>\r\nReferences: <p@x> <q@x>\r\n",
        ),
    )
    .await;
    c.cmd("s SELECT INBOX").await;
    let t = thread_ids(&c.cmd("f FETCH 1:* (THREADID)").await);
    assert_eq!(t[0], t[1]);
    assert_ne!(t[2], t[0]);
    assert_eq!(t[3], t[2]);
}

#[tokio::test]
async fn rfc8474_5_2_threadid_no_message_id_is_its_own_thread() {
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    let bare = "From: a@example.com\r\nSubject: x\r\n\r\nno ids\r\n";
    append(&mut c, "INBOX", "", bare).await;
    append(&mut c, "INBOX", "", bare).await;
    c.cmd("s SELECT INBOX").await;
    let r = c.cmd("f UID FETCH 1:* (THREADID)").await;
    let t = thread_ids(&r);
    assert_eq!(t.len(), 2, "{r}");
    assert_ne!(t[0], t[1], "{r}");
    assert!(tagged(&r).starts_with("f OK"), "{r}");
}

// ------------------------------------------------------------ PREVIEW

#[tokio::test]
async fn rfc8970_3_fetch_preview_and_lazy() {
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    let r = c.cmd("a CAPABILITY").await;
    assert!(r.split_whitespace().any(|w| w == "PREVIEW"), "{r}");
    append(
        &mut c,
        "INBOX",
        "",
        "Subject: one\r\n\r\nHello  \"there\"\r\n  Alice\r\n",
    )
    .await;
    append(
        &mut c,
        "INBOX",
        "",
        "Subject: two\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Gr\u{fc}\u{df}e</p>\r\n",
    )
    .await;
    append(
        &mut c,
        "INBOX",
        "",
        "Subject: three\r\nContent-Type: image/gif\r\n\r\nGIF89a",
    )
    .await;
    c.cmd("s SELECT INBOX").await;
    // LAZY before anything is cached: computed (within the per-command
    // budget) or NIL, never an error.
    let r = c.cmd("b FETCH 1 (PREVIEW (LAZY))").await;
    assert!(r.contains("* 1 FETCH (PREVIEW "), "{r}");
    assert!(tagged(&r).starts_with("b OK"), "{r}");
    let r = c.cmd("c FETCH 1:3 (FLAGS PREVIEW)").await;
    assert!(r.contains("PREVIEW \"Hello \\\"there\\\" Alice\")"), "{r}");
    assert!(r.contains("PREVIEW {7}\r\nGrüße)"), "{r}");
    assert!(
        r.contains("* 3 FETCH (FLAGS (\\Recent) PREVIEW \"\")"),
        "{r}"
    );
    // PREVIEW does not set \Seen.
    assert!(!r.contains("\\Seen"), "{r}");
    // Now cached: LAZY answers every message.
    let r = c.cmd("d UID FETCH 1:3 PREVIEW (LAZY)").await;
    assert_eq!(r.matches("PREVIEW NIL").count(), 0, "{r}");
    assert!(r.contains("PREVIEW \"Hello \\\"there\\\" Alice\""), "{r}");
    // A bare PREVIEW followed by FETCH modifiers still parses.
    let r = c.cmd("e FETCH 1 PREVIEW (CHANGEDSINCE 1)").await;
    assert!(tagged(&r).starts_with("e OK"), "{r}");
    let r = c.cmd("f FETCH 1 (PREVIEW (FAST))").await;
    assert!(tagged(&r).starts_with("f BAD"), "{r}");
}

// ------------------------------------------------------------ METADATA

async fn login_as(h: &super::tests::Harness, user: &str, pass: &str) -> Client {
    let mut c = Client::connect(h).await;
    let r = c.cmd(&format!("L LOGIN {user} {pass}")).await;
    assert!(tagged(&r).starts_with("L OK"), "{r}");
    c
}

#[tokio::test]
async fn rfc5464_4_getmetadata_setmetadata_mailbox_and_server() {
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    let r = c.cmd("a CAPABILITY").await;
    assert!(r.split_whitespace().any(|w| w == "METADATA"), "{r}");
    let r = c
        .cmd("b SETMETADATA INBOX (/private/comment \"mine\" /Shared/Comment {13+}\r\nfor\r\neveryone)")
        .await;
    assert_eq!(r, "b OK SETMETADATA completed\r\n");
    // Entry names are case-insensitive; values come back as stored.
    let r = c
        .cmd("c GETMETADATA INBOX (/shared/comment /PRIVATE/comment /private/none)")
        .await;
    assert_eq!(
        r,
        "* METADATA \"INBOX\" (/shared/comment {13}\r\nfor\r\neveryone /private/comment \"mine\" /private/none NIL)\r\nc OK GETMETADATA completed\r\n"
    );
    // DEPTH (4.2.2) and MAXSIZE (4.2.1).
    c.cmd("d SETMETADATA INBOX (/private/vendor/x/a \"1\" /private/vendor/x/b/c \"22\")")
        .await;
    let r = c
        .cmd("e GETMETADATA (DEPTH 1) INBOX /private/vendor/x")
        .await;
    assert!(
        r.starts_with("* METADATA \"INBOX\" (/private/vendor/x NIL /private/vendor/x/a \"1\")\r\n"),
        "{r}"
    );
    let r = c
        .cmd("f GETMETADATA (DEPTH infinity MAXSIZE 1) INBOX /private")
        .await;
    assert!(r.contains("/private/vendor/x/a \"1\""), "{r}");
    assert!(!r.contains("/private/comment"), "{r}");
    assert!(!r.contains("/private/vendor/x/b/c"), "{r}");
    assert!(
        r.ends_with("f OK [METADATA LONGENTRIES 4] GETMETADATA completed\r\n"),
        "{r}"
    );
    // NIL removes.
    c.cmd("g SETMETADATA INBOX (/private/comment NIL)").await;
    let r = c.cmd("h GETMETADATA INBOX /private/comment").await;
    assert!(
        r.starts_with("* METADATA \"INBOX\" (/private/comment NIL)"),
        "{r}"
    );
    // Server annotations: "" is the server; private ones are the user's,
    // shared ones the administrator's.
    let r = c
        .cmd("i SETMETADATA \"\" (/private/vendor/client/theme \"dark\")")
        .await;
    assert_eq!(r, "i OK SETMETADATA completed\r\n");
    let r = c
        .cmd("j GETMETADATA \"\" /private/vendor/client/theme")
        .await;
    assert!(
        r.starts_with("* METADATA \"\" (/private/vendor/client/theme \"dark\")"),
        "{r}"
    );
    let r = c
        .cmd("k SETMETADATA \"\" (/shared/admin \"mailto:me@example.com\")")
        .await;
    assert!(r.starts_with("k NO [NOPERM]"), "{r}");
    // Bad entry names are BAD (3.2); the session goes on.
    for (t, e) in [
        ("l", "/shared/"),
        ("m", "/other/x"),
        ("n", "/shared//x"),
        ("o", "/shared/a*"),
    ] {
        let r = c.cmd(&format!("{t} SETMETADATA INBOX ({e} \"v\")")).await;
        assert!(r.starts_with(&format!("{t} BAD")), "{r}");
    }
    let r = c.cmd("p GETMETADATA Nowhere /shared/comment").await;
    assert!(r.starts_with("p NO [NONEXISTENT]"), "{r}");
    // No mailbox or server: other users' private entries are not seen.
    let mut carol = login_as(&h, "carol@example.com", "carol-password").await;
    let r = carol
        .cmd("a GETMETADATA \"\" /private/vendor/client/theme")
        .await;
    assert!(r.contains("/private/vendor/client/theme NIL"), "{r}");
}

#[tokio::test]
async fn rfc5464_4_3_limits_maxsize_toomany_all_or_nothing() {
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    let big = "x".repeat(MAX_VALUE + 1);
    let r = c
        .cmd(&format!(
            "a SETMETADATA INBOX (/private/a \"1\" /private/big {{{}+}}\r\n{big})",
            big.len()
        ))
        .await;
    assert!(r.starts_with("a NO [METADATA MAXSIZE 65536]"), "{r}");
    // Nothing of the refused command was stored.
    let r = c.cmd("b GETMETADATA INBOX /private/a").await;
    assert!(r.contains("/private/a NIL"), "{r}");
    // MAX_ENTRIES per user, in commands of 64.
    for k in 0..(MAX_ENTRIES / 64) {
        let items: Vec<String> = (0..64)
            .map(|i| format!("/private/n{k}-{i} \"v\""))
            .collect();
        let r = c
            .cmd(&format!("c{k} SETMETADATA INBOX ({})", items.join(" ")))
            .await;
        assert!(r.starts_with(&format!("c{k} OK")), "{r}");
    }
    let r = c
        .cmd("d SETMETADATA INBOX (/private/one-more \"v\" /private/n0-0 NIL)")
        .await;
    // One removed and one added: the count does not grow.
    assert!(r.starts_with("d OK"), "{r}");
    let r = c.cmd("e SETMETADATA \"\" (/private/extra \"v\")").await;
    assert!(r.starts_with("e NO [METADATA TOOMANY]"), "{r}");
    // Changing an existing value stays possible.
    let r = c.cmd("f SETMETADATA INBOX (/private/one-more \"w\")").await;
    assert!(r.starts_with("f OK"), "{r}");
}

#[tokio::test]
async fn rfc5464_4_1_annotations_follow_rename_and_go_with_delete() {
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    c.cmd("a CREATE Box").await;
    c.cmd("b SETMETADATA Box (/shared/comment \"box\")").await;
    c.cmd("c RENAME Box Crate").await;
    let r = c.cmd("d GETMETADATA Crate /shared/comment").await;
    assert!(r.contains("/shared/comment \"box\""), "{r}");
    c.cmd("e DELETE Crate").await;
    c.cmd("f CREATE Crate").await;
    let r = c.cmd("g GETMETADATA Crate /shared/comment").await;
    assert!(r.contains("/shared/comment NIL"), "{r}");
    // Deleting gives the user's allowance back: fill it on a mailbox,
    // delete that mailbox, and there is room again.
    c.cmd("h CREATE Full").await;
    for k in 0..(MAX_ENTRIES / 64) {
        let items: Vec<String> = (0..64).map(|i| format!("/shared/n{k}-{i} \"v\"")).collect();
        let r = c
            .cmd(&format!("i{k} SETMETADATA Full ({})", items.join(" ")))
            .await;
        assert!(r.starts_with(&format!("i{k} OK")), "{r}");
    }
    let r = c.cmd("j SETMETADATA INBOX (/private/x \"v\")").await;
    assert!(r.starts_with("j NO [METADATA TOOMANY]"), "{r}");
    c.cmd("k DELETE Full").await;
    let r = c.cmd("l SETMETADATA INBOX (/private/x \"v\")").await;
    assert!(r.starts_with("l OK"), "{r}");
}

#[tokio::test]
async fn rfc5464_3_3_rights_with_acl() {
    let h = harness();
    let mut alice = Client::logged_in(&h).await;
    alice.cmd("a CREATE Team").await;
    alice
        .cmd("b SETMETADATA Team (/shared/comment \"team box\")")
        .await;
    alice.cmd("c SETACL Team carol@example.com lr").await;
    let mut carol = login_as(&h, "carol@example.com", "carol-password").await;
    let team = "\"Other Users/alice@example.com/Team\"";
    let r = carol
        .cmd(&format!("a GETMETADATA {team} /shared/comment"))
        .await;
    assert!(r.contains("/shared/comment \"team box\""), "{r}");
    // lr: private entries yes (his own), shared no.
    let r = carol
        .cmd(&format!(
            "b SETMETADATA {team} (/private/comment \"carol's\")"
        ))
        .await;
    assert!(r.starts_with("b OK"), "{r}");
    let r = carol
        .cmd(&format!("c SETMETADATA {team} (/shared/comment \"x\")"))
        .await;
    assert!(r.starts_with("c NO [NOPERM]"), "{r}");
    // Alice does not see Carol's private entry.
    let r = alice.cmd("d GETMETADATA Team /private/comment").await;
    assert!(r.contains("/private/comment NIL"), "{r}");
    // lrw: shared too.
    alice.cmd("e SETACL Team carol@example.com lrw").await;
    let r = carol
        .cmd(&format!("d SETMETADATA {team} (/shared/comment \"x\")"))
        .await;
    assert!(r.starts_with("d OK"), "{r}");
    // l only: nothing.
    alice.cmd("f SETACL Team carol@example.com l").await;
    let r = carol
        .cmd(&format!("e GETMETADATA {team} /shared/comment"))
        .await;
    assert!(r.starts_with("e NO [NOPERM]"), "{r}");
}
