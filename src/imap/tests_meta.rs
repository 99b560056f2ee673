//! End-to-end tests of THREADID (RFC 8474, backed by the store's thread
//! index), METADATA (RFC 5464) and PREVIEW (RFC 8970). Same harness as
//! `tests.rs` and `tests_ext.rs`.

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
