//! End-to-end tests of the IMAP extensions, one or more per capability,
//! named after the RFC behaviour they check. Same harness as `tests.rs`:
//! a real store and the embedded directory in a temporary folder, a
//! session over an in-memory duplex.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::tests::{append, harness, harness_with, tagged, Client, MSG1, MSG2, PASS, USER};
use crate::config::Protocol;
use crate::net::ConnInfo;
use crate::store::{Flags, NewMessage, Quota};

/// A logged-in client for another user of the harness.
async fn login_as(h: &super::tests::Harness, user: &str, pass: &str) -> Client {
    let mut c = Client::connect(h).await;
    let r = c.cmd(&format!("L LOGIN {user} {pass}")).await;
    assert!(tagged(&r).starts_with("L OK"), "{r}");
    c
}

/// The value after `key ` in a response (e.g. the HIGHESTMODSEQ number).
fn number_after(text: &str, key: &str) -> u64 {
    let i = text.find(key).unwrap_or_else(|| panic!("{key} in {text}")) + key.len();
    text[i..]
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap()
}

// ------------------------------------------------------------ capabilities

#[tokio::test]
async fn rfc9051_capabilities_after_login() {
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    let r = c.cmd("a CAPABILITY").await;
    for cap in [
        "IMAP4rev1",
        "IMAP4rev2",
        "LITERAL+",
        "ENABLE",
        "CONDSTORE",
        "QRESYNC",
        "ESEARCH",
        "SEARCHRES",
        "LIST-EXTENDED",
        "LIST-STATUS",
        "STATUS=SIZE",
        "QUOTA",
        "QUOTA=RES-STORAGE",
        "QUOTA=RES-MESSAGE",
        "APPENDLIMIT=52428800",
        "BINARY",
        "UTF8=ACCEPT",
        "SORT",
        "THREAD=REFERENCES",
        "THREAD=ORDEREDSUBJECT",
        "OBJECTID",
        "SAVEDATE",
        "WITHIN",
        "ACL",
        "RIGHTS=kxte",
        "COMPRESS=DEFLATE",
        "CREATE-SPECIAL-USE",
        "UNSELECT",
        "UIDPLUS",
        "MOVE",
        "ID",
        "NAMESPACE",
    ] {
        assert!(
            r.split_whitespace().any(|w| w == cap),
            "{cap} missing in {r}"
        );
    }
}

// ------------------------------------------------------------ ENABLE, CONDSTORE, QRESYNC

#[tokio::test]
async fn rfc5161_enable_lists_only_what_it_enabled() {
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    let r = c.cmd("a ENABLE CONDSTORE X-UNKNOWN").await;
    assert_eq!(r, "* ENABLED CONDSTORE\r\na OK ENABLE completed\r\n");
    // Already on: not listed again.
    let r = c.cmd("b ENABLE CONDSTORE").await;
    assert_eq!(r, "* ENABLED\r\nb OK ENABLE completed\r\n");
    c.cmd("c SELECT INBOX").await;
    // RFC 5161 3.1: only in the authenticated state.
    assert!(tagged(&c.cmd("d ENABLE QRESYNC").await).starts_with("d BAD"));
    let mut c = Client::connect(&h).await;
    assert!(tagged(&c.cmd("e ENABLE CONDSTORE").await).starts_with("e BAD"));
}

#[tokio::test]
async fn rfc7162_3_1_condstore_modseq_changedsince_unchangedsince() {
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    for m in [MSG1, MSG2, MSG1] {
        append(&mut c, "INBOX", "", m).await;
    }
    let r = c.cmd("a SELECT INBOX (CONDSTORE)").await;
    let hms = number_after(&r, "[HIGHESTMODSEQ");
    assert!(r.contains("a OK [READ-WRITE]"), "{r}");
    let r = c.cmd("b FETCH 1:3 (FLAGS MODSEQ)").await;
    assert!(r.contains("* 1 FETCH (FLAGS (\\Recent) MODSEQ ("), "{r}");
    // A STORE now reports UID and MODSEQ (RFC 7162 3.2).
    let r = c.cmd("c STORE 2 +FLAGS (\\Flagged)").await;
    let m2 = number_after(&r, "MODSEQ (");
    assert!(m2 > hms, "{r}");
    assert!(
        r.starts_with("* 2 FETCH (FLAGS (\\Flagged \\Recent) UID 2 MODSEQ ("),
        "{r}"
    );
    // CHANGEDSINCE: only message 2 changed.
    let r = c
        .cmd(&format!("d UID FETCH 1:* (FLAGS) (CHANGEDSINCE {hms})"))
        .await;
    assert_eq!(r.matches("FETCH (").count(), 1, "{r}");
    assert!(r.contains("UID 2") && r.contains("MODSEQ ("), "{r}");
    // UNCHANGEDSINCE older than message 2's modseq: 2 is not changed.
    let r = c
        .cmd(&format!(
            "e UID STORE 1:3 (UNCHANGEDSINCE {hms}) +FLAGS.SILENT (\\Seen)"
        ))
        .await;
    assert!(tagged(&r).starts_with("e OK [MODIFIED 2]"), "{r}");
    // .SILENT still reports the new MODSEQ of those that changed.
    assert!(r.contains("* 1 FETCH (UID 1 MODSEQ ("), "{r}");
    assert!(!r.contains("* 2 FETCH"), "{r}");
    let r = c.cmd("f FETCH 2 FLAGS").await;
    assert!(!r.contains("\\Seen"), "{r}");
    // SEARCH MODSEQ reports the highest mod-sequence (RFC 7162 3.1.5).
    let r = c.cmd(&format!("g SEARCH MODSEQ {}", m2)).await;
    assert!(r.starts_with("* SEARCH 1 2 3 (MODSEQ "), "{r}");
    let r = c.cmd("h STATUS Sent (HIGHESTMODSEQ)").await;
    assert!(r.starts_with("* STATUS \"Sent\" (HIGHESTMODSEQ "), "{r}");
}

#[tokio::test]
async fn rfc7162_3_2_qresync_select_vanished_and_closed() {
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    for m in [MSG1, MSG2, MSG1, MSG2] {
        append(&mut c, "INBOX", "", m).await;
    }
    let r = c.cmd("a SELECT INBOX").await;
    let uv = number_after(&r, "[UIDVALIDITY");
    let hms = number_after(&r, "[HIGHESTMODSEQ");
    // Meanwhile: 2 flagged, 3 expunged.
    c.cmd("b STORE 2 +FLAGS (\\Flagged)").await;
    c.cmd("c STORE 3 +FLAGS (\\Deleted)").await;
    c.cmd("d EXPUNGE").await;
    c.cmd("e LOGOUT").await;

    let mut c = Client::logged_in(&h).await;
    assert!(c
        .cmd("a SELECT INBOX (QRESYNC (1 1))")
        .await
        .starts_with("a BAD"));
    let r = c.cmd("b ENABLE QRESYNC").await;
    assert!(r.starts_with("* ENABLED QRESYNC"), "{r}");
    let r = c
        .cmd(&format!("c SELECT INBOX (QRESYNC ({uv} {hms} 1:4))"))
        .await;
    assert!(r.contains("* VANISHED (EARLIER) 3\r\n"), "{r}");
    assert!(
        r.contains("* 2 FETCH (FLAGS (\\Flagged) UID 2 MODSEQ ("),
        "{r}"
    );
    assert!(!r.contains("* 1 FETCH"), "{r}");
    // The same with UID FETCH ... VANISHED.
    let r = c
        .cmd(&format!(
            "d UID FETCH 1:* (FLAGS) (CHANGEDSINCE {hms} VANISHED)"
        ))
        .await;
    assert!(r.starts_with("* VANISHED (EARLIER) 3\r\n"), "{r}");
    // Under QRESYNC expunges are announced as VANISHED.
    let mut other = Client::logged_in(&h).await;
    other.cmd("a SELECT INBOX").await;
    other.cmd("b STORE 1 +FLAGS (\\Deleted)").await;
    other.cmd("c EXPUNGE").await;
    let r = c.cmd("e NOOP").await;
    assert!(r.contains("* VANISHED 1\r\n"), "{r}");
    assert!(!r.contains("EXPUNGE\r\n"), "{r}");
    // Selecting again closes the previous mailbox visibly (3.2.11).
    let r = c.cmd("f EXAMINE Sent").await;
    assert!(r.starts_with("* OK [CLOSED]"), "{r}");
    // A wrong UIDVALIDITY: a plain SELECT, no VANISHED.
    let r = c
        .cmd(&format!("g SELECT INBOX (QRESYNC ({} {hms}))", uv + 1))
        .await;
    assert!(!r.contains("VANISHED"), "{r}");
}

// ------------------------------------------------------------ IMAP4rev2

#[tokio::test]
async fn rfc9051_enable_imap4rev2_no_recent_esearch_utf8_names() {
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    append(&mut c, "INBOX", "", MSG1).await;
    c.cmd("a CREATE Entw&APw-rfe").await;
    let r = c.cmd("b ENABLE IMAP4rev2").await;
    assert!(r.starts_with("* ENABLED IMAP4rev2\r\n"), "{r}");
    let r = c.cmd("c SELECT inbox").await;
    assert!(!r.contains("RECENT") && !r.contains("UNSEEN"), "{r}");
    assert!(r.contains("* LIST () \"/\" \"INBOX\"\r\n"), "{r}");
    assert!(r.contains("* 1 EXISTS"), "{r}");
    let r = c.cmd("d FETCH 1 FLAGS").await;
    assert!(r.starts_with("* 1 FETCH (FLAGS ())"), "{r}");
    // SEARCH answers with ESEARCH (RFC 9051 6.4.4).
    let r = c.cmd("e SEARCH ALL").await;
    assert!(r.starts_with("* ESEARCH (TAG \"e\") ALL 1\r\n"), "{r}");
    let r = c.cmd("f LIST \"\" Entw*").await;
    assert!(r.contains("\"Entwürfe\""), "{r}");
    // Selecting again reports CLOSED.
    assert!(c.cmd("g SELECT INBOX").await.starts_with("* OK [CLOSED]"));
}

// ------------------------------------------------------------ ESEARCH, SEARCHRES

#[tokio::test]
async fn rfc4731_esearch_min_max_count_all() {
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    for m in [MSG1, MSG2, MSG1, MSG2, MSG2] {
        append(&mut c, "INBOX", "", m).await;
    }
    c.cmd("a SELECT INBOX").await;
    let r = c
        .cmd("b SEARCH RETURN (MIN MAX COUNT) SUBJECT second")
        .await;
    assert_eq!(
        r,
        "* ESEARCH (TAG \"b\") MIN 2 MAX 5 COUNT 3\r\nb OK SEARCH completed\r\n"
    );
    let r = c.cmd("c UID SEARCH RETURN () SUBJECT second").await;
    assert!(
        r.starts_with("* ESEARCH (TAG \"c\") UID ALL 2,4:5\r\n"),
        "{r}"
    );
    let r = c.cmd("d SEARCH RETURN (COUNT ALL) SUBJECT nothing").await;
    assert!(r.starts_with("* ESEARCH (TAG \"d\") COUNT 0\r\n"), "{r}");
}

#[tokio::test]
async fn rfc5182_searchres_save_and_use() {
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    for m in [MSG1, MSG2, MSG1, MSG2] {
        append(&mut c, "INBOX", "", m).await;
    }
    c.cmd("a SELECT INBOX").await;
    // SAVE alone: no ESEARCH response.
    let r = c.cmd("b SEARCH RETURN (SAVE) SUBJECT second").await;
    assert_eq!(r, "b OK SEARCH completed\r\n");
    let r = c.cmd("c FETCH $ (UID)").await;
    assert!(
        r.contains("* 2 FETCH (UID 2)") && r.contains("* 4 FETCH (UID 4)"),
        "{r}"
    );
    assert_eq!(r.matches("FETCH (").count(), 2, "{r}");
    let r = c.cmd("d UID STORE $ +FLAGS (\\Flagged)").await;
    assert_eq!(r.matches("\\Flagged").count(), 2, "{r}");
    let r = c.cmd("e SEARCH NOT $").await;
    assert!(r.starts_with("* SEARCH 1 3\r\n"), "{r}");
    // MIN with SAVE saves just the minimum.
    c.cmd("f SEARCH RETURN (MIN SAVE) ALL").await;
    let r = c.cmd("g UID SEARCH UID $").await;
    assert!(r.starts_with("* SEARCH 1\r\n"), "{r}");
    // A failing SEARCH ... SAVE empties `$`.
    c.cmd("h SEARCH RETURN (SAVE) CHARSET KOI8-R ALL").await;
    let r = c.cmd("i SEARCH $").await;
    assert!(r.starts_with("* SEARCH\r\n"), "{r}");
}

// ------------------------------------------------------------ LIST-EXTENDED, LIST-STATUS

#[tokio::test]
async fn rfc5258_list_extended_selection_and_return_options() {
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    c.cmd("a CREATE Work/Reports").await;
    c.cmd("b SUBSCRIBE Work/Reports").await;
    c.cmd("c SUBSCRIBE Gone").await;
    let r = c.cmd("d LIST (SUBSCRIBED) \"\" *").await;
    assert!(
        r.contains("* LIST (\\HasNoChildren \\Subscribed) \"/\" \"Work/Reports\""),
        "{r}"
    );
    assert!(
        r.contains("* LIST (\\NonExistent \\Subscribed) \"/\" \"Gone\""),
        "{r}"
    );
    assert!(!r.contains("\"Work\"\r\n"), "{r}");
    let r = c.cmd("e LIST (SUBSCRIBED RECURSIVEMATCH) \"\" %").await;
    assert!(
        r.contains("\"Work\" (\"CHILDINFO\" (\"SUBSCRIBED\"))"),
        "{r}"
    );
    // Several patterns, RETURN (SUBSCRIBED CHILDREN).
    let r = c
        .cmd("f LIST \"\" (INBOX Work) RETURN (SUBSCRIBED CHILDREN)")
        .await;
    assert!(
        r.contains("* LIST (\\HasNoChildren \\Subscribed) \"/\" \"INBOX\""),
        "{r}"
    );
    assert!(r.contains("* LIST (\\HasChildren) \"/\" \"Work\""), "{r}");
    // RFC 6154 2: the SPECIAL-USE selection.
    let r = c.cmd("g LIST (SPECIAL-USE) \"\" *").await;
    assert_eq!(r.matches("* LIST").count(), 4, "{r}");
    assert!(!r.contains("INBOX"), "{r}");
}

#[tokio::test]
async fn rfc5819_list_status() {
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    append(&mut c, "Drafts", "\\Seen", MSG1).await;
    let r = c
        .cmd("a LIST \"\" \"Dr%\" RETURN (STATUS (MESSAGES UNSEEN SIZE))")
        .await;
    let size = MSG1.len();
    assert!(
        r.starts_with(&format!(
            "* LIST (\\HasNoChildren \\Drafts) \"/\" \"Drafts\"\r\n* STATUS \"Drafts\" (MESSAGES 1 UNSEEN 0 SIZE {size})\r\n"
        )),
        "{r}"
    );
}

// ------------------------------------------------------------ STATUS=SIZE, APPENDLIMIT, QUOTA

#[tokio::test]
async fn rfc8438_status_size_and_rfc7889_appendlimit() {
    let h = harness_with(|c| c.imap.max_literal = 1000);
    let mut c = Client::logged_in(&h).await;
    append(&mut c, "INBOX", "", MSG1).await;
    append(&mut c, "INBOX", "\\Deleted", MSG2).await;
    let r = c
        .cmd("a STATUS INBOX (SIZE APPENDLIMIT DELETED MAILBOXID)")
        .await;
    assert!(
        r.starts_with(&format!(
            "* STATUS \"INBOX\" (SIZE {} APPENDLIMIT 1000 DELETED 1 MAILBOXID (F",
            MSG1.len() + MSG2.len()
        )),
        "{r}"
    );
    let cap = c.cmd("b CAPABILITY").await;
    assert!(cap.contains(" APPENDLIMIT=1000 "), "{cap}");
    // Bigger than the limit: refused before the bytes are sent.
    c.send(b"c APPEND INBOX {1001}\r\n").await;
    let r = c.until_tagged("c").await;
    assert!(r.starts_with("c NO [TOOBIG]"), "{r}");
}

#[tokio::test]
async fn rfc9208_quota_reported_and_enforced() {
    let h = harness_with(|c| {
        c.store.default_quota = 4096;
        c.store.default_message_quota = 2;
    });
    let mut c = Client::logged_in(&h).await;
    append(&mut c, "INBOX", "", MSG1).await;
    let r = c.cmd("a GETQUOTAROOT INBOX").await;
    assert_eq!(
        r,
        "* QUOTAROOT \"INBOX\" \"\"\r\n* QUOTA \"\" (STORAGE 1 4 MESSAGE 1 2)\r\na OK GETQUOTAROOT completed\r\n"
    );
    let r = c.cmd("b GETQUOTA \"\"").await;
    assert!(
        r.starts_with("* QUOTA \"\" (STORAGE 1 4 MESSAGE 1 2)"),
        "{r}"
    );
    assert!(c.cmd("c GETQUOTA other").await.starts_with("c NO"));
    assert!(c
        .cmd("d SETQUOTA \"\" (STORAGE 10)")
        .await
        .starts_with("d NO [NOPERM]"));
    append(&mut c, "INBOX", "", MSG2).await;
    // The third message is over the MESSAGE limit: APPEND and COPY refuse.
    let r = c
        .cmd(&format!("e APPEND INBOX {{{}+}}\r\n{MSG1}", MSG1.len()))
        .await;
    assert!(r.starts_with("e NO [OVERQUOTA]"), "{r}");
    c.cmd("f SELECT INBOX").await;
    assert!(c.cmd("g COPY 1 Sent").await.starts_with("g NO [OVERQUOTA]"));
    // MOVE within the user does not grow the usage.
    assert!(tagged(&c.cmd("h MOVE 1 Sent").await).starts_with("h OK"));
    // DELETED-STORAGE in 1024-octet units (RFC 9208 4.2.2).
    c.cmd("i STORE 1 +FLAGS (\\Deleted)").await;
    let r = c.cmd("j STATUS INBOX (DELETED-STORAGE)").await;
    assert!(
        r.starts_with("* STATUS \"INBOX\" (DELETED-STORAGE 1)"),
        "{r}"
    );
}

// ------------------------------------------------------------ UNSELECT, LITERAL-

#[tokio::test]
async fn rfc3691_unselect_keeps_deleted_messages() {
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    append(&mut c, "INBOX", "\\Deleted", MSG1).await;
    assert!(c.cmd("a UNSELECT").await.starts_with("a BAD"));
    c.cmd("b SELECT INBOX").await;
    assert_eq!(c.cmd("c UNSELECT").await, "c OK UNSELECT completed\r\n");
    let r = c.cmd("d STATUS INBOX (MESSAGES)").await;
    assert!(r.starts_with("* STATUS \"INBOX\" (MESSAGES 1)"), "{r}");
}

#[tokio::test]
async fn rfc7888_5_literal_minus() {
    let h = harness_with(|c| c.imap.literal_plus = false);
    let mut c = Client::logged_in(&h).await;
    let r = c.cmd("a CAPABILITY").await;
    assert!(r.contains(" LITERAL- ") && !r.contains("LITERAL+"), "{r}");
    // Up to 4096 bytes: fine without waiting.
    append(&mut c, "INBOX", "", MSG1).await;
    let big = "x".repeat(5000);
    let r = c
        .cmd(&format!("b APPEND INBOX {{{}+}}\r\n{big}", big.len()))
        .await;
    assert!(r.starts_with("b BAD [TOOBIG]"), "{r}");
    // The stream is still in sync.
    assert_eq!(c.cmd("c NOOP").await, "c OK NOOP completed\r\n");
}

// ------------------------------------------------------------ BINARY

const MIME: &str = "From: a@example.net\r\nSubject: bin\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\naGVsbG8Ad29ybGQ=\r\n--b\r\nContent-Type: application/x-odd\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nbegin\r\n--b--\r\n";

#[tokio::test]
async fn rfc3516_binary_fetch_size_and_unknown_cte() {
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    append(&mut c, "INBOX", "", MIME).await;
    c.cmd("a SELECT INBOX").await;
    // Decoded, with a NUL: a literal8.
    let r = c.cmd("b FETCH 1 (BINARY.PEEK[1] BINARY.SIZE[1])").await;
    assert!(
        r.starts_with("* 1 FETCH (BINARY[1] ~{11}\r\nhello\0world BINARY.SIZE[1] 11)\r\n"),
        "{r:?}"
    );
    let r = c.cmd("c FETCH 1 (BINARY.PEEK[1]<6.5>)").await;
    assert!(r.contains("BINARY[1]<6> {5}\r\nworld"), "{r:?}");
    let r = c.cmd("d FETCH 1 (BINARY.PEEK[2])").await;
    assert!(tagged(&r).starts_with("d NO [UNKNOWN-CTE]"), "{r}");
    // BINARY (not PEEK) sets \Seen.
    let r = c.cmd("e FETCH 1 (BINARY[1])").await;
    assert!(r.contains("\\Seen"), "{r}");
}

// ------------------------------------------------------------ SORT, THREAD

#[tokio::test]
async fn rfc5256_sort_and_thread_on_the_wire() {
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    let m = |subject: &str, id: &str, refs: &str, date: &str| {
        format!(
            "From: x@example.net\r\nSubject: {subject}\r\nMessage-ID: <{id}>\r\n{refs}Date: {date}\r\n\r\nbody\r\n"
        )
    };
    append(
        &mut c,
        "INBOX",
        "",
        &m("beta", "1@x", "", "Tue, 14 Nov 2023 10:00:00 +0000"),
    )
    .await;
    append(
        &mut c,
        "INBOX",
        "",
        &m(
            "Re: alpha",
            "2@x",
            "References: <3@x>\r\n",
            "Tue, 14 Nov 2023 12:00:00 +0000",
        ),
    )
    .await;
    append(
        &mut c,
        "INBOX",
        "",
        &m("alpha", "3@x", "", "Tue, 14 Nov 2023 11:00:00 +0000"),
    )
    .await;
    c.cmd("a SELECT INBOX").await;
    assert!(c
        .cmd("b SORT (SUBJECT) UTF-8 ALL")
        .await
        .starts_with("* SORT 2 3 1\r\n"));
    assert!(c
        .cmd("c SORT (REVERSE DATE) UTF-8 ALL")
        .await
        .starts_with("* SORT 2 3 1\r\n"));
    assert!(c
        .cmd("d UID SORT (DATE) US-ASCII SUBJECT alpha")
        .await
        .starts_with("* SORT 3 2\r\n"));
    assert!(c
        .cmd("e THREAD REFERENCES UTF-8 ALL")
        .await
        .starts_with("* THREAD (1)(3 2)\r\n"));
    assert!(c
        .cmd("f THREAD ORDEREDSUBJECT UTF-8 ALL")
        .await
        .starts_with("* THREAD (1)(3 2)\r\n"));
    assert!(c
        .cmd("g SORT (SUBJECT) KOI8-R ALL")
        .await
        .starts_with("g NO [BADCHARSET"));
}

// ------------------------------------------------------------ OBJECTID, SAVEDATE, WITHIN

#[tokio::test]
async fn rfc8474_objectid_mailboxid_emailid_threadid() {
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    append(&mut c, "INBOX", "", MSG1).await;
    append(&mut c, "INBOX", "", MSG2).await;
    let r = c.cmd("a SELECT INBOX").await;
    assert!(r.contains("* OK [MAILBOXID (F"), "{r}");
    let r = c.cmd("b FETCH 1:2 (EMAILID THREADID)").await;
    let id1 = r
        .split("EMAILID (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap()
        .to_string();
    // Two unrelated messages: two threads (tests_meta has the rules).
    assert_eq!(r.matches("THREADID (T").count(), 2, "{r}");
    assert_eq!(r.matches("EMAILID (M").count(), 2, "{r}");
    // EMAILID survives COPY and MOVE (it names the content).
    let r = c.cmd("c COPY 1 Sent").await;
    assert!(tagged(&r).starts_with("c OK"), "{r}");
    c.cmd("d SELECT Sent").await;
    let r = c.cmd("e FETCH 1 (EMAILID)").await;
    assert!(r.contains(&format!("EMAILID ({id1})")), "{r}");
    let r = c.cmd(&format!("f SEARCH EMAILID {id1}")).await;
    assert!(r.starts_with("* SEARCH 1\r\n"), "{r}");
    c.cmd("g MOVE 1 Trash").await;
    c.cmd("h SELECT Trash").await;
    let r = c.cmd("i FETCH 1 (EMAILID)").await;
    assert!(r.contains(&format!("EMAILID ({id1})")), "{r}");
    // CREATE and STATUS report MAILBOXID.
    let r = c.cmd("j CREATE Box").await;
    let created = r
        .split("MAILBOXID (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap()
        .to_string();
    let r = c.cmd("k STATUS Box (MAILBOXID)").await;
    assert!(r.contains(&format!("MAILBOXID ({created})")), "{r}");
}

#[tokio::test]
async fn rfc8514_savedate_fetch_and_search() {
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    // An old INTERNALDATE; the save date is today.
    let r = c
        .cmd(&format!(
            "a APPEND INBOX \"01-Jan-2001 00:00:00 +0000\" {{{}+}}\r\n{MSG1}",
            MSG1.len()
        ))
        .await;
    assert!(tagged(&r).starts_with("a OK"), "{r}");
    c.cmd("b SELECT INBOX").await;
    let r = c.cmd("c FETCH 1 (SAVEDATE INTERNALDATE)").await;
    let year = chrono::Utc::now().format("%Y").to_string();
    assert!(r.contains("SAVEDATE \"") && r.contains(&year), "{r}");
    assert!(r.contains("INTERNALDATE \"01-Jan-2001"), "{r}");
    let today = chrono::Utc::now().format("%d-%b-%Y").to_string();
    assert!(c
        .cmd(&format!("d SEARCH SAVEDON {today} SAVEDATESUPPORTED"))
        .await
        .starts_with("* SEARCH 1\r\n"));
    assert!(c
        .cmd("e SEARCH SAVEDBEFORE 1-Jan-2002")
        .await
        .starts_with("* SEARCH\r\n"));
    assert!(c
        .cmd("f SEARCH BEFORE 1-Jan-2002")
        .await
        .starts_with("* SEARCH 1\r\n"));
}

#[tokio::test]
async fn rfc5032_within_younger_older() {
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    c.cmd(&format!(
        "a APPEND INBOX \"01-Jan-2001 00:00:00 +0000\" {{{}+}}\r\n{MSG1}",
        MSG1.len()
    ))
    .await;
    append(&mut c, "INBOX", "", MSG2).await;
    c.cmd("b SELECT INBOX").await;
    assert!(c
        .cmd("c SEARCH YOUNGER 3600")
        .await
        .starts_with("* SEARCH 2\r\n"));
    assert!(c
        .cmd("d SEARCH OLDER 3600")
        .await
        .starts_with("* SEARCH 1\r\n"));
}

// ------------------------------------------------------------ COMPRESS

/// Reads plain responses up to the tagged OK of `tag`.
async fn read_until(io: &mut tokio::io::DuplexStream, tag: &str) -> String {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let n = io.read(&mut buf).await.unwrap();
        assert!(n > 0);
        out.extend_from_slice(&buf[..n]);
        if String::from_utf8_lossy(&out).contains(&format!("{tag} OK")) {
            return String::from_utf8_lossy(&out).into_owned();
        }
    }
}

#[tokio::test]
async fn rfc4978_compress_deflate() {
    let h = harness();
    let (a, b) = tokio::io::duplex(1 << 20);
    tokio::spawn(super::serve(
        Box::new(b),
        ConnInfo::for_test(Protocol::Imap),
        h.services.clone(),
    ));
    let mut io = a;
    let mut greeting = vec![0u8; 4096];
    let _ = io.read(&mut greeting).await.unwrap();
    io.write_all(format!("a LOGIN {USER} {PASS}\r\n").as_bytes())
        .await
        .unwrap();
    let r = read_until(&mut io, "a").await;
    assert!(r.contains("COMPRESS=DEFLATE"), "{r}");
    io.write_all(b"b COMPRESS DEFLATE\r\n").await.unwrap();
    let r = read_until(&mut io, "b").await;
    assert_eq!(r, "b OK DEFLATE active\r\n");
    // From here on both directions are compressed.
    let mut z = super::compress::Deflated::new(Box::new(io));
    z.write_all(b"c SELECT INBOX\r\nd COMPRESS DEFLATE\r\n")
        .await
        .unwrap();
    z.flush().await.unwrap();
    let mut out = Vec::new();
    let mut chunk = vec![0u8; 4096];
    while !String::from_utf8_lossy(&out).contains("d NO") {
        let n = z.read(&mut chunk).await.unwrap();
        assert!(n > 0, "{}", String::from_utf8_lossy(&out));
        out.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.contains("c OK [READ-WRITE] SELECT completed"),
        "{text}"
    );
    assert!(text.contains("d NO [COMPRESSIONACTIVE]"), "{text}");
}

// ------------------------------------------------------------ UTF8=ACCEPT, CREATE-SPECIAL-USE

#[tokio::test]
async fn rfc6855_utf8_accept_mailbox_names() {
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    // Without UTF8=ACCEPT names go out in modified UTF-7.
    c.cmd("a CREATE \"Entwürfe\"").await;
    let r = c.cmd("b LIST \"\" Entw*").await;
    assert!(r.contains("\"Entw&APw-rfe\""), "{r}");
    let r = c.cmd("c ENABLE UTF8=ACCEPT").await;
    assert!(r.starts_with("* ENABLED UTF8=ACCEPT"), "{r}");
    let r = c.cmd("d LIST \"\" Entw*").await;
    assert!(r.contains("\"Entwürfe\""), "{r}");
    let r = c.cmd("e STATUS \"Entwürfe\" (MESSAGES)").await;
    assert!(r.starts_with("* STATUS \"Entwürfe\" (MESSAGES 0)"), "{r}");
    // A message with UTF-8 headers, as the UTF8 APPEND data extension.
    let msg = "From: jürgen@example.net\r\nSubject: grüße\r\n\r\nhallo\r\n";
    let r = c
        .cmd(&format!(
            "f APPEND INBOX UTF8 (~{{{}+}}\r\n{msg})",
            msg.len()
        ))
        .await;
    assert!(tagged(&r).starts_with("f OK [APPENDUID"), "{r}");
    c.cmd("g SELECT INBOX").await;
    let r = c.cmd("h SEARCH SUBJECT \"grüße\"").await;
    assert!(r.starts_with("* SEARCH 1\r\n"), "{r}");
}

#[tokio::test]
async fn rfc6154_3_create_special_use() {
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    let r = c.cmd("a CREATE Old (USE (\\Archive))").await;
    assert!(tagged(&r).starts_with("a OK"), "{r}");
    let r = c.cmd("b LIST \"\" Old").await;
    assert!(
        r.contains("* LIST (\\HasNoChildren \\Archive) \"/\" \"Old\""),
        "{r}"
    );
    let r = c.cmd("c CREATE Odd (USE (\\Nonsense))").await;
    assert!(r.starts_with("c NO [USEATTR]"), "{r}");
    let r = c.cmd("d CREATE Two (USE (\\Archive \\Junk))").await;
    assert!(r.starts_with("d NO [USEATTR]"), "{r}");
}

// ------------------------------------------------------------ ACL

#[tokio::test]
async fn rfc4314_acl_shared_mailbox_between_users() {
    let h = harness();
    let mut alice = Client::logged_in(&h).await;
    alice.cmd("a CREATE Team").await;
    append(&mut alice, "Team", "", MSG1).await;
    let r = alice.cmd("b SETACL Team carol lr").await;
    assert_eq!(r, "b OK SETACL completed\r\n");
    let r = alice.cmd("c GETACL Team").await;
    assert!(
        r.starts_with(
            "* ACL \"Team\" \"alice@example.com\" lrswipkxtea \"carol@example.com\" \"lr\"\r\n"
        ),
        "{r}"
    );
    let r = alice.cmd("d LISTRIGHTS Team carol@example.com").await;
    assert!(
        r.starts_with("* LISTRIGHTS \"Team\" \"carol@example.com\" \"\" l r s"),
        "{r}"
    );
    assert!(alice
        .cmd("e SETACL Team carol +q")
        .await
        .starts_with("e BAD"));

    let mut carol = login_as(&h, "carol@example.com", "carol-password").await;
    let r = carol.cmd("a LIST \"\" \"Other Users/*\"").await;
    assert!(r.contains("\"Other Users/alice@example.com/Team\""), "{r}");
    assert!(!r.contains("INBOX"), "{r}");
    let shared = "\"Other Users/alice@example.com/Team\"";
    let r = carol.cmd(&format!("b MYRIGHTS {shared}")).await;
    assert!(r.starts_with(&format!("* MYRIGHTS {shared} lr\r\n")), "{r}");
    // lr: read-only, no APPEND, no ACL changes, no GETACL.
    let r = carol.cmd(&format!("c SELECT {shared}")).await;
    assert!(r.contains("c OK [READ-ONLY]"), "{r}");
    assert!(carol
        .cmd("d FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        .await
        .contains("hello"));
    assert!(carol
        .cmd("e STORE 1 +FLAGS (\\Seen)")
        .await
        .starts_with("e NO"));
    let r = carol
        .cmd(&format!("f APPEND {shared} {{{}+}}\r\n{MSG2}", MSG2.len()))
        .await;
    assert!(r.starts_with("f NO [NOPERM]"), "{r}");
    assert!(carol
        .cmd(&format!("g GETACL {shared}"))
        .await
        .starts_with("g NO [NOPERM]"));
    // Other mailboxes of alice stay invisible.
    let r = carol
        .cmd("h SELECT \"Other Users/alice@example.com/INBOX\"")
        .await;
    assert!(tagged(&r).starts_with("h NO [NONEXISTENT]"), "{r}");
    // More rights: carol may now append and set \Seen.
    alice.cmd("f SETACL Team carol +isw").await;
    let r = carol
        .cmd(&format!("i APPEND {shared} {{{}+}}\r\n{MSG2}", MSG2.len()))
        .await;
    assert!(tagged(&r).starts_with("i OK [APPENDUID"), "{r}");
    let r = carol.cmd(&format!("j SELECT {shared}")).await;
    assert!(r.contains("j OK [READ-WRITE]"), "{r}");
    assert!(r.contains("* 2 EXISTS"), "{r}");
    let r = carol.cmd("k STORE 1 +FLAGS (\\Seen \\Deleted)").await;
    // No `t` right: \Deleted is not set, \Seen is.
    assert!(r.contains("\\Seen") && !r.contains("\\Deleted"), "{r}");
    assert!(carol.cmd("l EXPUNGE").await.starts_with("l NO [NOPERM]"));
    // Removed again: the mailbox is gone for carol.
    alice.cmd("g DELETEACL Team carol").await;
    carol.cmd("m UNSELECT").await;
    let r = carol.cmd(&format!("n STATUS {shared} (MESSAGES)")).await;
    assert!(r.starts_with("n NO [NONEXISTENT]"), "{r}");
}

// ------------------------------------------------------------ proxy authentication

#[tokio::test]
async fn proxy_user_authenticates_for_another_user() {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let h = harness_with(|c| c.imap.proxy_users = vec!["mmp@example.com".into()]);
    // Alice marks her account so we can recognise it.
    let mut alice = Client::logged_in(&h).await;
    alice.cmd("a CREATE AliceOnly").await;

    let mut c = Client::connect(&h).await;
    let r = c
        .cmd("a ID (\"name\" \"mmp\" \"x-originating-ip\" \"198.51.100.7\")")
        .await;
    assert!(tagged(&r).starts_with("a OK"), "{r}");
    let ir = b64(&format!("{USER}\0mmp@example.com\0mmp-password"));
    let r = c.cmd(&format!("b AUTHENTICATE PLAIN {ir}")).await;
    assert!(tagged(&r).starts_with("b OK"), "{r}");
    let r = c.cmd("c LIST \"\" AliceOnly").await;
    assert!(r.contains("\"AliceOnly\""), "{r}");

    // A proxy with a wrong password is refused.
    let mut c = Client::connect(&h).await;
    let ir = b64(&format!("{USER}\0mmp@example.com\0wrong"));
    let r = c.cmd(&format!("a AUTHENTICATE PLAIN {ir}")).await;
    assert!(r.starts_with("a NO [AUTHENTICATIONFAILED]"), "{r}");
    // An ordinary user may not act for another.
    let ir = b64(&format!("{USER}\0carol@example.com\0carol-password"));
    let r = c.cmd(&format!("b AUTHENTICATE PLAIN {ir}")).await;
    assert!(r.starts_with("b NO [AUTHORIZATIONFAILED]"), "{r}");
    // Nor can the proxy act for someone who does not exist.
    let ir = b64("nobody@example.com\0mmp@example.com\0mmp-password");
    let r = c.cmd(&format!("c AUTHENTICATE PLAIN {ir}")).await;
    assert!(r.starts_with("c NO [AUTHORIZATIONFAILED]"), "{r}");
}

// ------------------------------------------------------------ large mailboxes, caches

#[tokio::test]
async fn large_mailbox_select_and_flags_need_no_message_files() {
    let h = harness();
    let store = h.services.store().clone();
    store.ensure_user(USER, None).await.unwrap();
    let n = 2000u32;
    let mut tasks = Vec::new();
    for i in 0..n {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let data = format!("Subject: m{i}\r\n\r\nbody {i}\r\n").into_bytes();
            store
                .append(
                    USER,
                    "INBOX",
                    NewMessage {
                        data: Arc::new(data),
                        flags: if i % 2 == 0 {
                            Flags::from_names(&["\\Seen"])
                        } else {
                            Flags::default()
                        },
                        internal_date: None,
                    },
                    Quota::default(),
                )
                .await
                .unwrap()
        }));
    }
    let mut mailbox = 0;
    for t in tasks {
        mailbox = t.await.unwrap().mailbox;
    }
    // Remove every message file: SELECT and FLAGS must not need them.
    for uid in 1..=n {
        std::fs::remove_file(store.message_path(mailbox, uid).unwrap()).unwrap();
    }
    let mut c = Client::logged_in(&h).await;
    let r = c.cmd("a SELECT INBOX").await;
    assert!(r.contains(&format!("* {n} EXISTS")), "{r}");
    let r = c.cmd("b UID FETCH 1:* (FLAGS)").await;
    assert_eq!(r.matches(" FETCH (").count(), n as usize);
    assert!(tagged(&r).starts_with("b OK"), "{r}");
    let r = c.cmd("c SEARCH UNSEEN").await;
    assert_eq!(
        r.lines().next().unwrap().split(' ').count(),
        2 + n as usize / 2
    );
}

/// FETCH reads message bytes ahead a run at a time (`ReadAhead`): over
/// more messages than one run holds, every message comes back in order
/// with its own bytes, and a message whose file is gone is left out with
/// NO [EXPUNGEISSUED] while the others are still sent (RFC 2180 4.1.2).
#[tokio::test]
async fn fetch_reads_ahead_in_runs_and_leaves_out_an_unreadable_message() {
    let h = harness();
    let store = h.services.store().clone();
    store.ensure_user(USER, None).await.unwrap();
    let n = 300u32;
    let mut mailbox = 0;
    for i in 1..=n {
        let data = format!("Subject: m{i}\r\n\r\nbody number {i}\r\n").into_bytes();
        let new = NewMessage {
            data: Arc::new(data),
            flags: Flags::default(),
            internal_date: None,
        };
        mailbox = store
            .append(USER, "INBOX", new, Quota::default())
            .await
            .unwrap()
            .mailbox;
    }
    let mut c = Client::logged_in(&h).await;
    assert!(c.cmd("a SELECT INBOX").await.contains("300 EXISTS"));
    let r = c.cmd("b FETCH 1:* (UID BODY.PEEK[])").await;
    assert!(tagged(&r).starts_with("b OK"), "{r}");
    let bodies: Vec<&str> = r.matches("body number ").collect();
    assert_eq!(bodies.len(), n as usize);
    for i in [1u32, 128, 129, 256, 257, 300] {
        let want = format!("* {i} FETCH (UID {i} BODY[] {{");
        let at = r.find(&want).unwrap_or_else(|| panic!("no {want}"));
        let own = &r[at..];
        let own = &own[..own[1..].find("\r\n* ").map_or(own.len(), |e| e + 1)];
        assert!(own.contains(&format!("body number {i}\r\n")), "{own}");
    }
    std::fs::remove_file(store.message_path(mailbox, 200).unwrap()).unwrap();
    let r = c.cmd("c FETCH 190:210 BODY.PEEK[]").await;
    assert!(tagged(&r).starts_with("c NO [EXPUNGEISSUED]"), "{r}");
    assert_eq!(r.matches(" FETCH (").count(), 20, "{r}");
    assert!(!r.contains("* 200 FETCH"), "{r}");
    assert!(
        r.contains("* 201 FETCH") && r.contains("body number 201"),
        "{r}"
    );
}

#[tokio::test]
async fn envelope_and_bodystructure_come_from_the_cache() {
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    append(&mut c, "INBOX", "", MSG1).await;
    let r = c.cmd("a SELECT INBOX").await;
    assert!(r.contains("1 EXISTS"));
    let first = c.cmd("b FETCH 1 (ENVELOPE BODYSTRUCTURE)").await;
    assert!(first.contains("\"hello\""), "{first}");
    let store = h.services.store().clone();
    let info = store.status(USER, "INBOX").await.unwrap();
    let cached = store.summaries(info.id, vec![1]).await.unwrap();
    assert!(cached[0].is_some());
    // Change the file behind the cache's back (same size): ENVELOPE is not
    // parsed again, BODY[] is read from the file.
    let path = store.message_path(info.id, 1).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let changed = String::from_utf8(bytes).unwrap().replace("hello", "HOWDY");
    std::fs::write(&path, changed).unwrap();
    let again = c.cmd("c FETCH 1 (ENVELOPE BODYSTRUCTURE)").await;
    assert_eq!(again.replace("c OK", "b OK"), first);
    assert!(c
        .cmd("d FETCH 1 BODY.PEEK[HEADER.FIELDS (SUBJECT)]")
        .await
        .contains("HOWDY"));
    // Expunge drops the cache entry.
    c.cmd("e STORE 1 +FLAGS (\\Deleted)").await;
    c.cmd("f EXPUNGE").await;
    assert!(store.summaries(info.id, vec![1]).await.unwrap()[0].is_none());
}

// ------------------------------------------------------------ semantics clients rely on

#[tokio::test]
async fn rfc9051_7_5_1_no_expunge_during_fetch_store_search_by_sequence_number() {
    let h = harness();
    let mut a = Client::logged_in(&h).await;
    for m in [MSG1, MSG2, MSG1] {
        append(&mut a, "INBOX", "", m).await;
    }
    a.cmd("a SELECT INBOX").await;
    let mut b = Client::logged_in(&h).await;
    b.cmd("a SELECT INBOX").await;
    b.cmd("b STORE 1 +FLAGS (\\Deleted)").await;
    b.cmd("c EXPUNGE").await;
    for cmd in [
        "b FETCH 1:* FLAGS",
        "c STORE 3 +FLAGS (\\Seen)",
        "d SEARCH ALL",
    ] {
        let r = a.cmd(cmd).await;
        assert!(!r.contains("EXPUNGE"), "{cmd}: {r}");
    }
    // UID commands and NOOP may announce it, with the right number.
    let r = a.cmd("e UID SEARCH ALL").await;
    assert!(r.contains("* 1 EXPUNGE\r\n"), "{r}");
    let r = a.cmd("f FETCH 1:* (UID)").await;
    assert!(
        r.contains("* 1 FETCH (UID 2)") && r.contains("* 2 FETCH (UID 3)"),
        "{r}"
    );
    // UIDs never come back.
    append(&mut a, "INBOX", "", MSG1).await;
    let r = a.cmd("g UID SEARCH ALL").await;
    assert!(
        r.starts_with("* 3 EXISTS") || r.contains("* SEARCH 2 3 4"),
        "{r}"
    );
}

#[tokio::test]
async fn rfc3501_2_3_2_recent_belongs_to_one_session() {
    let h = harness();
    let mut a = Client::logged_in(&h).await;
    append(&mut a, "INBOX", "", MSG1).await;
    let r = a.cmd("a SELECT INBOX").await;
    assert!(r.contains("* 1 RECENT"), "{r}");
    let mut b = Client::logged_in(&h).await;
    let r = b.cmd("a SELECT INBOX").await;
    assert!(r.contains("* 0 RECENT"), "{r}");
    // A new message is \Recent for the first session that sees it only.
    append(&mut b, "INBOX", "", MSG2).await;
    let r = a.cmd("b NOOP").await;
    let rb = b.cmd("b FETCH 2 FLAGS").await;
    assert_eq!(
        r.contains("* 2 RECENT") as u8 + rb.contains("\\Recent") as u8,
        1,
        "{r} / {rb}"
    );
}

#[tokio::test]
async fn extreme_but_valid_arguments_get_answers_not_panics() {
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    append(&mut c, "INBOX", "", MIME).await;
    c.cmd("a SELECT INBOX").await;
    for (i, cmd) in [
        "UID FETCH 4294967295:* (FLAGS MODSEQ EMAILID THREADID SAVEDATE)",
        "FETCH 1 (BODY.PEEK[1.2.3.4.5.6]<4294967295.4294967295> BINARY.PEEK[9.9]<0.1>)",
        "FETCH 1 (BODY.PEEK[1.MIME] BODY.PEEK[2.HEADER] BINARY.SIZE[])",
        "SEARCH UID 1:4294967295 LARGER 1844674407370955161 SMALLER 0",
        "SORT (SIZE REVERSE ARRIVAL) UTF-8 $",
        "THREAD REFERENCES UTF-8 NOT $",
        "STORE 1 (UNCHANGEDSINCE 0) FLAGS ()",
        "UID STORE 1:* (UNCHANGEDSINCE 18446744073709551) -FLAGS ($x)",
        "UID EXPUNGE $",
        "UID FETCH 1 (FLAGS) (CHANGEDSINCE 1)",
        "SEARCH RETURN (MIN MAX COUNT ALL SAVE) OR OR SEEN UNSEEN NOT ALL",
        "LIST (SPECIAL-USE) \"\" (\"*\" \"%\" \"Other Users/*\") RETURN (STATUS (MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN DELETED SIZE HIGHESTMODSEQ APPENDLIMIT MAILBOXID DELETED-STORAGE))",
        "STATUS \"Other Users/nobody@example.com/INBOX\" (MESSAGES)",
        "GETACL \"Other Users\"",
        "MYRIGHTS \"Other Users/alice@example.com/INBOX\"",
        "SETACL INBOX anyone \"\"",
        "GETQUOTAROOT \"Other Users/x/y\"",
    ]
    .iter()
    .enumerate()
    {
        let tag = format!("t{i}");
        let r = c.cmd(&format!("{tag} {cmd}")).await;
        let last = tagged(&r);
        assert!(
            last.starts_with(&format!("{tag} OK"))
                || last.starts_with(&format!("{tag} NO"))
                || last.starts_with(&format!("{tag} BAD")),
            "{cmd}: {r}"
        );
    }
    assert_eq!(
        c.cmd("z NOOP").await.lines().last(),
        Some("z OK NOOP completed")
    );
}

// ------------------------------------------------------------ issue 9: hostile input

/// FETCH, SEARCH, SORT and THREAD over messages nested 50,000 levels deep
/// (message/rfc822, multipart, and an encoded message/rfc822 holding a
/// deep message): sensible answers, and the server still serves another
/// client. Before the nesting cap, the first FETCH overflowed the stack and
/// aborted the process.
#[tokio::test]
async fn issue9_deeply_nested_messages_are_served_opaque() {
    use crate::imap::mime::tests::{encoded_rfc822, nested_multipart, nested_rfc822};
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    for m in [
        nested_rfc822(50_000),
        nested_multipart(50_000),
        encoded_rfc822(&nested_rfc822(20_000)),
    ] {
        append(&mut c, "INBOX", "", &String::from_utf8(m).unwrap()).await;
    }
    c.cmd("s SELECT INBOX").await;
    let r = c
        .cmd("f FETCH 1:* (ENVELOPE BODY BODYSTRUCTURE BODY.PEEK[1.1.1.1] BINARY.PEEK[1] BINARY.SIZE[1])")
        .await;
    assert!(
        tagged(&r).starts_with("f OK"),
        "{}",
        &r[r.len().saturating_sub(300)..]
    );
    assert_eq!(r.matches("FETCH (").count(), 3);
    // All three are nested beyond the cap: each is one opaque part.
    assert_eq!(
        r.matches("BODYSTRUCTURE (\"APPLICATION\" \"OCTET-STREAM\"")
            .count(),
        3
    );
    let deep_path = vec!["1"; 3000].join(".");
    let r = c.cmd(&format!("p FETCH 1 (BODY.PEEK[{deep_path}])")).await;
    assert!(tagged(&r).starts_with("p OK"), "{}", tagged(&r));
    for (tag, cmd) in [
        ("a", "SEARCH TEXT inner"),
        ("b", "SEARCH BODY deep"),
        ("c", "SORT (SUBJECT DATE) UTF-8 ALL"),
        ("d", "THREAD REFERENCES UTF-8 ALL"),
        ("e", "THREAD ORDEREDSUBJECT UTF-8 ALL"),
    ] {
        let r = c.cmd(&format!("{tag} {cmd}")).await;
        assert!(tagged(&r).starts_with(&format!("{tag} OK")), "{cmd}: {r}");
    }
    let mut other = Client::logged_in(&h).await;
    let r = other.cmd("o SELECT INBOX").await;
    assert!(r.contains("* 3 EXISTS"), "{r}");
}

/// RFC 5256 3: a References header of 50,000 ids and a reference loop.
#[tokio::test]
async fn issue9_thread_with_huge_references_and_loops() {
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    let refs: String = (0..50_000).map(|i| format!(" <r{i}@x>")).collect();
    let big = format!("Subject: big\r\nMessage-ID: <big@x>\r\nReferences:{refs}\r\n\r\nx\r\n");
    append(&mut c, "INBOX", "", &big).await;
    let looped =
        "Subject: Re: big\r\nMessage-ID: <l@x>\r\nReferences: <l@x> <big@x> <l@x>\r\n\r\ny\r\n";
    append(&mut c, "INBOX", "", looped).await;
    c.cmd("s SELECT INBOX").await;
    let r = c.cmd("t THREAD REFERENCES UTF-8 ALL").await;
    assert!(r.contains("* THREAD ("), "{r}");
    assert!(tagged(&r).starts_with("t OK"), "{r}");
    let r = c.cmd("u UID THREAD ORDEREDSUBJECT UTF-8 ALL").await;
    assert!(tagged(&r).starts_with("u OK"), "{r}");
}

/// Over-deep search keys are a syntax error (BAD), and the session goes on.
#[tokio::test]
async fn issue9_deeply_nested_search_keys_are_bad_and_the_session_continues() {
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    append(&mut c, "INBOX", "", MSG1).await;
    c.cmd("s SELECT INBOX").await;
    let n = 1500;
    for (tag, keys) in [
        ("a", format!("{}ALL", "NOT ".repeat(n))),
        ("b", format!("{}ALL{}", "(".repeat(n), ")".repeat(n))),
        (
            "c",
            format!("{}{}", "OR ".repeat(n), "ALL ".repeat(n + 1).trim_end()),
        ),
        ("d", format!("{}ALL", "NOT (".repeat(n / 2))),
    ] {
        let r = c.cmd(&format!("{tag} UID SEARCH {keys}")).await;
        assert!(tagged(&r).starts_with(&format!("{tag} BAD")), "{r}");
        let r = c.cmd(&format!("{tag}2 SORT (DATE) UTF-8 {keys}")).await;
        assert!(tagged(&r).starts_with(&format!("{tag}2 BAD")), "{r}");
    }
    // 64 levels are still fine.
    let r = c
        .cmd(&format!("e SEARCH {}ALL", "NOT NOT ".repeat(32)))
        .await;
    assert_eq!(r, "* SEARCH 1\r\ne OK SEARCH completed\r\n");
    assert_eq!(c.cmd("z NOOP").await, "z OK NOOP completed\r\n");
}

/// Thousands of overlapping ranges cost the mailbox once; each message is
/// answered once, in order (RFC 9051 6.4.5, 9).
#[tokio::test]
async fn issue9_overlapping_sequence_sets_answer_each_message_once() {
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    for _ in 0..30 {
        append(&mut c, "INBOX", "", MSG1).await;
    }
    c.cmd("s SELECT INBOX").await;
    let many = vec!["1:*"; 1500].join(",");
    let r = c.cmd(&format!("f FETCH {many} (FLAGS)")).await;
    assert!(tagged(&r).starts_with("f OK"), "{r}");
    let seqs: Vec<u32> = r
        .lines()
        .filter_map(|l| l.strip_prefix("* ")?.split(' ').next()?.parse().ok())
        .collect();
    assert_eq!(seqs, (1..=30).collect::<Vec<_>>());
    let r = c
        .cmd(&format!("u UID FETCH 4294967295:1,{many} (UID)"))
        .await;
    assert_eq!(r.matches(" FETCH (").count(), 30, "{r}");
    let ones = vec!["1"; 2000].join(",");
    let r = c.cmd(&format!("t STORE {ones} +FLAGS (\\Seen)")).await;
    assert_eq!(r.matches(" FETCH (").count(), 1, "{r}");
    let r = c.cmd(&format!("k SEARCH {many}")).await;
    assert!(
        r.starts_with(&format!(
            "* SEARCH {}",
            (1..=30)
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        )),
        "{r}"
    );
    let r = c.cmd(&format!("m COPY {many} INBOX")).await;
    assert!(tagged(&r).starts_with("m OK"), "{r}");
    assert!(r.contains("1:30 31:60]"), "{r}");
}

/// Repeated FETCH items are answered once; more than MAX_FETCH_SECTIONS
/// distinct content items is BAD.
#[tokio::test]
async fn issue9_fetch_items_are_deduplicated_and_sections_capped() {
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    append(&mut c, "INBOX", "", MSG1).await;
    c.cmd("s SELECT INBOX").await;
    let same = vec!["BODY.PEEK[]"; 600].join(" ");
    let r = c.cmd(&format!("a FETCH 1 ({same})")).await;
    assert!(tagged(&r).starts_with("a OK"), "{r}");
    assert_eq!(r.matches("BODY[]").count(), 1, "{r}");
    let distinct: Vec<String> = (0..=crate::imap::command::MAX_FETCH_SECTIONS)
        .map(|i| format!("BODY.PEEK[]<{i}.100000>"))
        .collect();
    let r = c.cmd(&format!("b FETCH 1 ({})", distinct.join(" "))).await;
    assert!(tagged(&r).starts_with("b BAD"), "{r}");
    let r = c
        .cmd(&format!("c FETCH 1 ({})", distinct[1..].join(" ")))
        .await;
    assert!(tagged(&r).starts_with("c OK"), "{}", tagged(&r));
}

/// LIST with thousands of wildcards answers at once (no backtracking).
#[tokio::test]
async fn issue9_list_patterns_with_many_wildcards() {
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    c.cmd("c CREATE a/b/c/d").await;
    let r = c
        .cmd(&format!("l LIST \"\" \"{}d\"", "*%".repeat(1500)))
        .await;
    assert!(r.contains("a/b/c/d"), "{r}");
    assert!(tagged(&r).starts_with("l OK"), "{r}");
    let r = c
        .cmd(&format!("m LIST \"\" \"{}x\"", "%".repeat(3000)))
        .await;
    assert!(tagged(&r).starts_with("m OK"), "{r}");
}

/// A panic while parsing a stored message (a bug, simulated in test builds)
/// ends no more than the command: FETCH answers NO [SERVERBUG], SEARCH and
/// SORT leave the message out, the session and other sessions go on.
#[tokio::test]
async fn issue9_a_parser_panic_ends_only_the_command() {
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    append(&mut c, "INBOX", "", MSG1).await;
    let bad = format!(
        "{}Subject: boom\r\n\r\nbody\r\n",
        std::str::from_utf8(crate::imap::mime::TEST_PANIC).unwrap()
    );
    append(&mut c, "INBOX", "", &bad).await;
    c.cmd("s SELECT INBOX").await;
    let r = c.cmd("f FETCH 1:* (BODYSTRUCTURE)").await;
    assert!(tagged(&r).starts_with("f NO [SERVERBUG]"), "{r}");
    assert!(r.starts_with("* 1 FETCH (BODYSTRUCTURE"), "{r}");
    let r = c.cmd("b FETCH 2 (BODY.PEEK[1])").await;
    assert!(tagged(&r).starts_with("b NO [SERVERBUG]"), "{r}");
    let r = c.cmd("t SEARCH BODY body").await;
    assert!(tagged(&r).starts_with("t OK"), "{r}");
    let r = c.cmd("o SORT (SUBJECT) UTF-8 ALL").await;
    assert!(tagged(&r).starts_with("o OK"), "{r}");
    assert_eq!(c.cmd("z NOOP").await, "z OK NOOP completed\r\n");
    let mut other = Client::logged_in(&h).await;
    let r = other.cmd("x SELECT INBOX").await;
    assert!(r.contains("* 2 EXISTS"), "{r}");
}
