//! Session tests for NOTIFY (RFC 5465), each named after the section it
//! checks (see docs/imap.md). Two sessions of the same user: `a` sets
//! NOTIFY, `b` changes things; `a` reads the events as they come, between
//! commands or during IDLE (no timing: each read waits for its line).

use super::tests::{append, harness, tagged, Client, MSG1, MSG2};

fn status_prefix(line: &str, mailbox: &str) -> bool {
    line.starts_with(&format!("* STATUS \"{mailbox}\" ("))
}

#[tokio::test]
async fn rfc5465_3_1_notify_set_status_sends_status_at_once_and_is_advertised() {
    let h = harness();
    let mut a = Client::logged_in(&h).await;
    let r = a.cmd("c CAPABILITY").await;
    assert!(r.contains(" NOTIFY"), "{r}");
    a.cmd("c CREATE Work").await;
    append(&mut a, "Work", "", MSG1).await;
    let r = a
        .cmd("n NOTIFY SET STATUS (personal (MessageNew MessageExpunge))")
        .await;
    assert!(
        r.contains("* STATUS \"Work\" (MESSAGES 1 UIDNEXT 2 UIDVALIDITY "),
        "{r}"
    );
    assert!(
        r.contains("* STATUS \"INBOX\" (MESSAGES 0 UIDNEXT 1 "),
        "{r}"
    );
    assert!(tagged(&r).starts_with("n OK"), "{r}");
    // Without STATUS nothing is sent at once.
    let r = a
        .cmd("m NOTIFY SET (personal (MessageNew MessageExpunge))")
        .await;
    assert_eq!(r, "m OK NOTIFY completed\r\n");
}

#[tokio::test]
async fn rfc5465_5_2_5_3_5_4_message_events_of_other_mailboxes_are_status_responses() {
    let h = harness();
    let mut a = Client::logged_in(&h).await;
    a.cmd("c CREATE Work").await;
    let r = a
        .cmd("n NOTIFY SET (personal (MessageNew MessageExpunge FlagChange))")
        .await;
    assert_eq!(r, "n OK NOTIFY completed\r\n");
    let mut b = Client::logged_in(&h).await;
    append(&mut b, "Work", "", MSG1).await;
    // Between commands, unasked.
    let l = a.line().await;
    assert!(
        l.starts_with("* STATUS \"Work\" (MESSAGES 1 UIDNEXT 2 "),
        "{l}"
    );
    b.cmd("s SELECT Work").await;
    b.cmd("f STORE 1 +FLAGS (\\Seen)").await;
    let l = a.line().await;
    assert!(
        l.starts_with("* STATUS \"Work\" (MESSAGES 1 UIDNEXT 2 "),
        "{l}"
    );
    assert!(l.contains("UNSEEN 0"), "{l}");
    b.cmd("d STORE 1 +FLAGS (\\Deleted)").await;
    let l = a.line().await;
    assert!(status_prefix(&l, "Work"), "{l}");
    b.cmd("e EXPUNGE").await;
    let l = a.line().await;
    assert!(
        l.starts_with("* STATUS \"Work\" (MESSAGES 0 UIDNEXT 2 "),
        "{l}"
    );
    // The session's own changes are reported too, after its command.
    let r = append(&mut a, "Work", "", MSG2).await;
    assert!(
        r.contains("* STATUS \"Work\" (MESSAGES 1 UIDNEXT 3 "),
        "{r}"
    );
}

#[tokio::test]
async fn rfc5465_5_4_5_5_mailbox_name_and_subscription_change_are_list_responses() {
    let h = harness();
    let mut a = Client::logged_in(&h).await;
    let r = a
        .cmd("n NOTIFY SET (personal (MailboxName SubscriptionChange))")
        .await;
    assert_eq!(r, "n OK NOTIFY completed\r\n");
    let mut b = Client::logged_in(&h).await;
    b.cmd("c CREATE X").await;
    assert_eq!(a.line().await, "* LIST () \"/\" \"X\"\r\n");
    b.cmd("r RENAME X Y").await;
    assert_eq!(
        a.line().await,
        "* LIST () \"/\" \"Y\" (\"OLDNAME\" (\"X\"))\r\n"
    );
    b.cmd("s SUBSCRIBE Y").await;
    assert_eq!(a.line().await, "* LIST (\\Subscribed) \"/\" \"Y\"\r\n");
    b.cmd("u UNSUBSCRIBE Y").await;
    assert_eq!(a.line().await, "* LIST () \"/\" \"Y\"\r\n");
    b.cmd("d DELETE Y").await;
    assert_eq!(a.line().await, "* LIST (\\NonExistent) \"/\" \"Y\"\r\n");
    // Filters: only the named mailboxes.
    a.cmd("m NOTIFY SET (mailboxes (Z) (MailboxName))").await;
    b.cmd("c CREATE Other").await;
    b.cmd("c CREATE Z").await;
    assert_eq!(a.line().await, "* LIST () \"/\" \"Z\"\r\n");
}

#[tokio::test]
async fn rfc5465_5_2_selected_message_new_with_fetch_attributes() {
    let h = harness();
    let mut a = Client::logged_in(&h).await;
    a.cmd("s SELECT INBOX").await;
    let r = a
        .cmd("n NOTIFY SET (selected (MessageNew (UID FLAGS) MessageExpunge)) (personal (MessageNew MessageExpunge))")
        .await;
    assert!(tagged(&r).starts_with("n OK"), "{r}");
    let mut b = Client::logged_in(&h).await;
    append(&mut b, "INBOX", "$Label1", MSG1).await;
    let mut got = String::new();
    while !got.contains(" FETCH ") {
        got.push_str(&a.line().await);
    }
    assert!(got.contains("* 1 EXISTS\r\n"), "{got}");
    assert!(got.contains("* 1 FETCH (UID 1 FLAGS ("), "{got}");
    // The new keyword is announced before the FETCH that uses it.
    let flags = got.find("* FLAGS (").expect("FLAGS announced");
    assert!(flags < got.find(" FETCH ").unwrap(), "{got}");
    // The selected mailbox gets no STATUS.
    assert!(!got.contains("* STATUS \"INBOX\""), "{got}");
    let r = a.cmd("x NOOP").await;
    assert!(!r.contains("STATUS \"INBOX\""), "{r}");
}

#[tokio::test]
async fn rfc5465_5_1_selected_sends_expunge_between_commands_selected_delayed_waits() {
    for delayed in [false, true] {
        let h = harness();
        let mut a = Client::logged_in(&h).await;
        append(&mut a, "INBOX", "\\Deleted", MSG1).await;
        append(&mut a, "INBOX", "", MSG2).await;
        a.cmd("s SELECT INBOX").await;
        let filter = if delayed {
            "selected-delayed"
        } else {
            "selected"
        };
        let r = a
            .cmd(&format!(
                "n NOTIFY SET ({filter} (MessageNew MessageExpunge)) (personal (MailboxName))"
            ))
            .await;
        assert!(tagged(&r).starts_with("n OK"), "{r}");
        let mut b = Client::logged_in(&h).await;
        b.cmd("s SELECT INBOX").await;
        b.cmd("e EXPUNGE").await;
        b.cmd("c CREATE Z").await;
        if delayed {
            // No EXPUNGE while no command is in progress; it comes with
            // the next command.
            assert_eq!(a.line().await, "* LIST () \"/\" \"Z\"\r\n");
            let r = a.cmd("x NOOP").await;
            assert!(r.starts_with("* 1 EXPUNGE\r\n"), "{r}");
        } else {
            let mut got = String::new();
            while !got.contains("* LIST") {
                got.push_str(&a.line().await);
            }
            assert!(got.starts_with("* 1 EXPUNGE\r\n"), "{got}");
            assert!(got.ends_with("* LIST () \"/\" \"Z\"\r\n"), "{got}");
        }
    }
}

#[tokio::test]
async fn rfc5465_5_idle_delivers_events_of_selected_and_other_mailboxes() {
    let h = harness();
    let mut a = Client::logged_in(&h).await;
    a.cmd("c CREATE Work").await;
    a.cmd("s SELECT INBOX").await;
    a.cmd("n NOTIFY SET (selected (MessageNew MessageExpunge)) (personal (MessageNew MessageExpunge))")
        .await;
    a.send(b"i IDLE\r\n").await;
    assert_eq!(a.line().await, "+ idling\r\n");
    let mut b = Client::logged_in(&h).await;
    append(&mut b, "Work", "", MSG1).await;
    let l = a.line().await;
    assert!(
        l.starts_with("* STATUS \"Work\" (MESSAGES 1 UIDNEXT 2 "),
        "{l}"
    );
    append(&mut b, "INBOX", "", MSG2).await;
    assert_eq!(a.line().await, "* 1 EXISTS\r\n");
    a.send(b"DONE\r\n").await;
    let r = a.until_tagged("i").await;
    assert!(r.ends_with("i OK IDLE terminated\r\n"), "{r}");
}

#[tokio::test]
async fn rfc5465_5_9_badevent_bad_syntax_and_notify_none() {
    let h = harness();
    let mut a = Client::logged_in(&h).await;
    let r = a
        .cmd("n NOTIFY SET (personal (MailboxName AnnotationChange))")
        .await;
    assert_eq!(
        r,
        "n NO [BADEVENT (MessageNew MessageExpunge FlagChange MailboxName SubscriptionChange)] Event not supported\r\n"
    );
    for bad in [
        "b NOTIFY SET (personal (MessageNew))",
        "b NOTIFY SET (personal (FlagChange))",
        "b NOTIFY SET (personal (MessageNew (UID) MessageExpunge))",
        "b NOTIFY SET (selected (MessageNew (NOSUCHATT) MessageExpunge))",
        "b NOTIFY SET (nosuchfilter NONE)",
        "b NOTIFY",
    ] {
        let r = a.cmd(bad).await;
        assert!(tagged(&r).starts_with("b BAD"), "{bad}: {r}");
    }
    a.cmd("n NOTIFY SET (personal (MailboxName))").await;
    let r = a.cmd("o NOTIFY NONE").await;
    assert_eq!(r, "o OK NOTIFY completed\r\n");
    let mut b = Client::logged_in(&h).await;
    b.cmd("c CREATE Quiet").await;
    let r = a.cmd("x NOOP").await;
    assert_eq!(r, "x OK NOOP completed\r\n");
    // Not before login.
    let mut c = Client::connect(&h).await;
    let r = c.cmd("n NOTIFY NONE").await;
    assert!(tagged(&r).starts_with("n BAD"), "{r}");
}

#[tokio::test]
async fn rfc5465_5_8_too_many_events_overflow_and_turn_notify_off() {
    let h = harness();
    let mut b = Client::logged_in(&h).await;
    // One commit (a RENAME of a parent) makes more events than a wake-up
    // may carry.
    let n = super::notify::MAX_EVENTS + 1;
    let mut batch = String::new();
    for i in 0..n {
        batch.push_str(&format!("c{i} CREATE P/c{i}\r\n"));
    }
    b.send(batch.as_bytes()).await;
    let r = b.until_tagged(&format!("c{}", n - 1)).await;
    assert!(!r.contains(" NO ") && !r.contains(" BAD "), "{r}");
    let mut a = Client::logged_in(&h).await;
    a.cmd("n NOTIFY SET (personal (MailboxName))").await;
    b.cmd("r RENAME P Q").await;
    assert_eq!(
        a.line().await,
        "* OK [NOTIFICATIONOVERFLOW] Too many events; NOTIFY is off\r\n"
    );
    // NOTIFY is off now.
    b.cmd("c CREATE After").await;
    let r = a.cmd("x NOOP").await;
    assert_eq!(r, "x OK NOOP completed\r\n");
}

#[tokio::test]
async fn rfc9051_5_4_notify_events_do_not_hold_off_the_autologout() {
    let h = super::tests::harness_with(|c| c.imap.idle_timeout = 1);
    let mut a = Client::logged_in(&h).await;
    a.cmd("n NOTIFY SET (personal (MailboxName))").await;
    let mut b = Client::logged_in(&h).await;
    // Events keep coming while `a` says nothing: it is still logged out
    // (the bound only stops a broken server from looping forever).
    for i in 0..10_000 {
        let r = b.cmd(&format!("c CREATE M{i}")).await;
        assert!(tagged(&r).starts_with("c OK"), "{r}");
        let l = a.line().await;
        if l.starts_with("* BYE Autologout") {
            return;
        }
        assert_eq!(l, format!("* LIST () \"/\" \"M{i}\"\r\n"));
    }
    panic!("no autologout while NOTIFY events kept coming");
}
