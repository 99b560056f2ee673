//! Tests of IMAP URLs (RFC 5092), CATENATE (RFC 4469) and URLAUTH (RFC
//! 4467): the URL parser on its own, then end to end with the harness of
//! `tests.rs`.

use super::tests::{append, harness, harness_with, tagged, Client, MSG1, MSG2};
use super::url::{self, Access};

const ALICE_URL: &str = "imap://alice%40example.com@example.com";

/// A logged-in client for another user of the harness.
async fn login_as(h: &super::tests::Harness, user: &str, pass: &str) -> Client {
    let mut c = Client::connect(h).await;
    let r = c.cmd(&format!("L LOGIN {user} {pass}")).await;
    assert!(tagged(&r).starts_with("L OK"), "{r}");
    c
}

fn uidvalidity(c_status: &str) -> u32 {
    let i = c_status.find("UIDVALIDITY ").unwrap() + 12;
    c_status[i..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap()
}

/// The signed URL of a `* GENURLAUTH "..."` response.
fn signed(r: &str) -> String {
    let i = r.find("* GENURLAUTH \"").unwrap_or_else(|| panic!("{r}")) + 14;
    r[i..].split('"').next().unwrap().to_string()
}

// ------------------------------------------------------------ parser

#[test]
fn rfc5092_6_message_part_urls_parse() {
    let u = url::parse("/INBOX;UIDVALIDITY=785799047/;UID=113330/;SECTION=1.5.9").unwrap();
    assert!(!u.absolute);
    assert_eq!(u.mailbox, "INBOX");
    assert_eq!(u.uidvalidity, Some(785799047));
    assert_eq!(u.uid, 113330);
    assert_eq!(u.section.as_deref(), Some("1.5.9"));
    let u = url::parse("/Drafts/;UID=20/;PARTIAL=0.1024").unwrap();
    assert_eq!((u.mailbox.as_str(), u.uid), ("Drafts", 20));
    assert_eq!(u.partial, Some((0, Some(1024))));
    // Hierarchy, %-escapes (UTF-8, RFC 5092 3.1), SECTION then PARTIAL.
    let u = url::parse(
        "imap://fred%40x.org;AUTH=*@mail.example.com:143/a/b%C3%A9;UIDVALIDITY=1/;UID=7/;SECTION=HEADER.FIELDS%20(TO)/;PARTIAL=5",
    )
    .unwrap();
    assert!(u.absolute);
    assert_eq!(u.user.as_deref(), Some("fred@x.org"));
    assert_eq!(u.auth.as_deref(), Some("*"));
    assert_eq!(u.host.as_deref(), Some("mail.example.com"));
    assert_eq!(u.port, Some(143));
    assert_eq!(u.mailbox, "a/bé");
    assert_eq!(u.section.as_deref(), Some("HEADER.FIELDS (TO)"));
    assert_eq!(u.partial, Some((5, None)));
    assert!(super::command::parse_section("HEADER.FIELDS (TO)").is_some());
}

#[test]
fn rfc4467_2_urlauth_rump_access_and_verifier_parse() {
    let raw = "imap://joe@example.com/INBOX/;uid=20/;section=1.2;urlauth=submit+fred";
    let u = url::parse(raw).unwrap();
    assert_eq!(u.access, Some(Access::Submit("fred".into())));
    assert_eq!(u.rump(raw), Some(raw));
    assert!(u.token.is_none());
    let full = format!("{raw}:internal:91354a473744909de610943775f92038");
    let u = url::parse(&full).unwrap();
    assert_eq!(u.rump(&full), Some(raw));
    assert_eq!(u.mech.as_deref(), Some("INTERNAL"));
    assert_eq!(u.token.as_deref(), Some("91354a473744909de610943775f92038"));
    let u = url::parse(
        "imap://joe@example.com/INBOX/;UID=20;EXPIRE=2030-01-01T00:00:00Z;URLAUTH=anonymous",
    )
    .unwrap();
    assert_eq!(u.expire, Some(1893456000));
    assert_eq!(u.access, Some(Access::Anonymous));
    for a in ["user+bob", "authuser"] {
        let r = format!("imap://joe@h/INBOX/;UID=1;URLAUTH={a}");
        assert!(url::parse(&r).is_ok(), "{r}");
    }
}

#[test]
fn rfc5092_url_hostile_and_wrong_forms_are_refused() {
    for bad in [
        "",
        "/",
        "INBOX/;UID=1",
        "/INBOX",
        "/INBOX/;UID=0",
        "/INBOX/;UID=99999999999",
        "/INBOX;UIDVALIDITY=0/;UID=1",
        "/INBOX/;UID=1/",
        "/INBOX/;UID=1/;SECTION=",
        "/INBOX/;UID=1/;PARTIAL=1.0",
        "/IN BOX/;UID=1",
        "/IN%ZZ/;UID=1",
        "/IN%C3/;UID=1",
        "/INBOX/;UID=1;EXPIRE=2030-01-01T00:00:00Z",
        "/INBOX/;UID=1;URLAUTH=nobody",
        "/INBOX/;UID=1;URLAUTH=anonymous:INTERNAL:1234",
        "/INBOX/;UID=1;URLAUTH=anonymous:INTERNAL",
        "imap:///INBOX/;UID=1",
        "imap://h:99999/INBOX/;UID=1",
        "/INBOX/;UID=1;junk",
    ] {
        assert!(url::parse(bad).is_err(), "{bad:?}");
    }
    let long = format!("/{}/;UID=1", "a".repeat(url::MAX_URL));
    assert!(url::parse(&long).is_err());
}

// ------------------------------------------------------------ CATENATE

#[tokio::test]
async fn rfc4469_5_catenate_text_and_url_parts() {
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    let caps = c.cmd("c CAPABILITY").await;
    assert!(
        caps.contains(" CATENATE ") && caps.contains(" URLAUTH "),
        "{caps}"
    );
    append(&mut c, "INBOX", "", MSG1).await;
    let st = c.cmd("s STATUS INBOX (UIDVALIDITY)").await;
    let v = uidvalidity(&st);
    let head = "From: a@example.com\r\nSubject: cat\r\n\r\n";
    let r = c
        .cmd(&format!(
            "a APPEND Drafts (\\Draft) CATENATE (TEXT {{{}+}}\r\n{head} URL \"/INBOX;UIDVALIDITY={v}/;UID=1/;SECTION=TEXT\" URL /INBOX/;UID=1/;SECTION=TEXT/;PARTIAL=0.2 TEXT {{5+}}\r\n-end-)",
            head.len()
        ))
        .await;
    assert!(tagged(&r).starts_with("a OK [APPENDUID "), "{r}");
    c.cmd("b SELECT Drafts").await;
    let r = c.cmd("f FETCH 1 (BODY.PEEK[] FLAGS)").await;
    let want = format!("{head}Hi Alice,\r\nfirst message.\r\nHi-end-");
    assert!(r.contains(&want), "{r}");
    assert!(r.contains("\\Draft"), "{r}");
}

#[tokio::test]
async fn rfc4469_6_badurl_fails_the_whole_append() {
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    append(&mut c, "INBOX", "", MSG1).await;
    for (tag, u) in [
        ("a", "/INBOX/;UID=9"),
        ("b", "/INBOX;UIDVALIDITY=1/;UID=1"),
        ("c", "/Nowhere/;UID=1"),
        ("d", "not-a-url"),
        ("e", "imap://bob%40example.com@example.com/INBOX/;UID=1"),
    ] {
        let r = c
            .cmd(&format!(
                "{tag} APPEND Drafts CATENATE (TEXT {{2+}}\r\nhi URL \"{u}\")"
            ))
            .await;
        assert_eq!(
            tagged(&r),
            format!("{tag} NO [BADURL {u}] CATENATE URL gives no data"),
            "{r}"
        );
    }
    let r = c.cmd("s STATUS Drafts (MESSAGES)").await;
    assert!(r.contains("(MESSAGES 0)"), "{r}");
}

#[tokio::test]
async fn rfc4469_5_toobig_past_the_append_limit() {
    let h = harness_with(|c| c.imap.max_literal = 64);
    let mut c = Client::logged_in(&h).await;
    append(&mut c, "INBOX", "", "Subject: x\r\n\r\nshort\r\n").await;
    let r = c
        .cmd(
            "a APPEND Drafts CATENATE (URL /INBOX/;UID=1 URL /INBOX/;UID=1 URL /INBOX/;UID=1 URL /INBOX/;UID=1)",
        )
        .await;
    assert_eq!(tagged(&r), "a NO [TOOBIG] Message too big", "{r}");
}

#[tokio::test]
async fn rfc4469_5_url_to_a_shared_mailbox_needs_the_read_right() {
    let h = harness();
    let mut alice = Client::logged_in(&h).await;
    alice.cmd("a CREATE Team").await;
    append(&mut alice, "Team", "", MSG2).await;
    let mut carol = login_as(&h, "carol@example.com", "carol-password").await;
    let u = "/Other%20Users/alice%40example.com/Team/;UID=1";
    let cmd = format!("a APPEND INBOX CATENATE (URL \"{u}\")");
    let r = carol.cmd(&cmd).await;
    assert!(tagged(&r).starts_with("a NO [BADURL "), "{r}");
    alice.cmd("b SETACL Team carol lr").await;
    let r = carol.cmd(&cmd).await;
    assert!(tagged(&r).starts_with("a OK [APPENDUID "), "{r}");
    carol.cmd("s SELECT INBOX").await;
    let r = carol.cmd("f FETCH 1 BODY.PEEK[]").await;
    assert!(r.contains("Second body zanzibar."), "{r}");
}

// ------------------------------------------------------------ URLAUTH

#[tokio::test]
async fn rfc4467_7_1_genurlauth_then_7_3_urlfetch() {
    let h = harness();
    let mut alice = Client::logged_in(&h).await;
    append(&mut alice, "INBOX", "", MSG1).await;
    let rump = format!("{ALICE_URL}/INBOX/;UID=1/;SECTION=TEXT;URLAUTH=user+carol%40example.com");
    let r = alice
        .cmd(&format!("g GENURLAUTH \"{rump}\" INTERNAL"))
        .await;
    assert!(tagged(&r).starts_with("g OK"), "{r}");
    let full = signed(&r);
    assert!(full.starts_with(&format!("{rump}:INTERNAL:")), "{full}");
    assert_eq!(full.len(), rump.len() + 10 + 40, "{full}");
    // The named user fetches it; alice herself is not carol.
    let mut carol = login_as(&h, "carol@example.com", "carol-password").await;
    let r = carol.cmd(&format!("u URLFETCH \"{full}\"")).await;
    assert!(
        r.starts_with(&format!(
            "* URLFETCH \"{full}\" {{27}}\r\nHi Alice,\r\nfirst message.\r\n"
        )),
        "{r}"
    );
    let r = alice.cmd(&format!("u URLFETCH \"{full}\"")).await;
    assert!(r.starts_with(&format!("* URLFETCH \"{full}\" NIL")), "{r}");
    // A changed verifier, or a plain URL, gives NIL.
    let forged = format!("{}0", &full[..full.len() - 1]);
    let forged = if forged == full {
        format!("{}1", &full[..full.len() - 1])
    } else {
        forged
    };
    let r = carol
        .cmd(&format!("v URLFETCH \"{forged}\" /INBOX/;UID=1"))
        .await;
    assert!(
        r.contains(" NIL\r\n* URLFETCH \"/INBOX/;UID=1\" NIL\r\n"),
        "{r}"
    );
    assert!(tagged(&r).starts_with("v OK"), "{r}");
    // A URLAUTH URL of alice works in carol's CATENATE too.
    let r = carol
        .cmd(&format!("c APPEND INBOX CATENATE (URL \"{full}\")"))
        .await;
    assert!(tagged(&r).starts_with("c OK [APPENDUID "), "{r}");
}

#[tokio::test]
async fn rfc4467_7_1_genurlauth_refuses_other_users_and_mechanisms() {
    let h = harness();
    let mut alice = Client::logged_in(&h).await;
    append(&mut alice, "INBOX", "", MSG1).await;
    let r = alice
        .cmd("a GENURLAUTH \"imap://carol%40example.com@example.com/INBOX/;UID=1;URLAUTH=anonymous\" INTERNAL")
        .await;
    assert!(tagged(&r).starts_with("a NO"), "{r}");
    assert!(!r.contains("* GENURLAUTH"), "{r}");
    let r = alice
        .cmd(&format!(
            "b GENURLAUTH \"{ALICE_URL}/INBOX/;UID=1;URLAUTH=anonymous\" XSHA"
        ))
        .await;
    assert!(tagged(&r).starts_with("b NO"), "{r}");
    // Not a rump: no URLAUTH, or already signed.
    let r = alice
        .cmd(&format!(
            "c GENURLAUTH \"{ALICE_URL}/INBOX/;UID=1\" INTERNAL"
        ))
        .await;
    assert!(tagged(&r).starts_with("c BAD"), "{r}");
}

#[tokio::test]
async fn rfc4467_7_2_resetkey_invalidates_urls() {
    let h = harness();
    let mut alice = Client::logged_in(&h).await;
    append(&mut alice, "INBOX", "", MSG1).await;
    let gen = format!("g GENURLAUTH \"{ALICE_URL}/INBOX/;UID=1;URLAUTH=authuser\" INTERNAL");
    let full = signed(&alice.cmd(&gen).await);
    // Stable until reset.
    assert_eq!(signed(&alice.cmd(&gen).await), full);
    let fetch = format!("f URLFETCH \"{full}\"");
    assert!(!alice.cmd(&fetch).await.contains("NIL"));
    let r = alice.cmd("r RESETKEY INBOX INTERNAL").await;
    assert_eq!(r, "r OK RESETKEY completed\r\n");
    assert!(alice.cmd(&fetch).await.contains(" NIL\r\n"));
    let full2 = signed(&alice.cmd(&gen).await);
    assert_ne!(full2, full);
    let r = alice.cmd("r RESETKEY").await;
    assert_eq!(r, "r OK RESETKEY completed\r\n");
    assert!(alice
        .cmd(&format!("f URLFETCH \"{full2}\""))
        .await
        .contains(" NIL\r\n"));
    let r = alice.cmd("r RESETKEY INBOX XSHA").await;
    assert!(tagged(&r).starts_with("r NO"), "{r}");
}

#[tokio::test]
async fn rfc4467_3_expire_and_anonymous_access() {
    let h = harness();
    let mut alice = Client::logged_in(&h).await;
    alice.cmd("a CREATE Team").await;
    append(&mut alice, "Team", "", MSG1).await;
    let past = format!("{ALICE_URL}/Team/;UID=1;EXPIRE=2001-01-01T00:00:00Z;URLAUTH=anonymous");
    let full = signed(
        &alice
            .cmd(&format!("g GENURLAUTH \"{past}\" INTERNAL"))
            .await,
    );
    let r = alice.cmd(&format!("f URLFETCH \"{full}\"")).await;
    assert!(r.contains(" NIL\r\n"), "{r}");
    let later = format!("{ALICE_URL}/Team/;UID=1;EXPIRE=2099-01-01T00:00:00Z;URLAUTH=anonymous");
    let full = signed(
        &alice
            .cmd(&format!("g GENURLAUTH \"{later}\" INTERNAL"))
            .await,
    );
    let r = alice.cmd(&format!("f URLFETCH \"{full}\"")).await;
    assert!(r.contains("{"), "{r}");
    // Access anonymous: any session.
    let mut carol = login_as(&h, "carol@example.com", "carol-password").await;
    let r = carol.cmd(&format!("f URLFETCH \"{full}\"")).await;
    assert!(r.contains("first message."), "{r}");
}

#[tokio::test]
async fn rfc4469_5_catenate_respects_the_byte_budget() {
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    append(&mut c, "INBOX", "", MSG1).await;
    // Another holder has taken the whole budget.
    let all = h.services.budget.available();
    let hog = h.services.budget.try_take(all).unwrap();
    let r = c.cmd("a APPEND Drafts CATENATE (URL /INBOX/;UID=1)").await;
    assert_eq!(
        tagged(&r),
        "a NO [LIMIT] Too much data in flight, try later",
        "{r}"
    );
    drop(hog);
    let r = c.cmd("b APPEND Drafts CATENATE (URL /INBOX/;UID=1)").await;
    assert!(tagged(&r).starts_with("b OK [APPENDUID "), "{r}");
}

#[tokio::test]
async fn rfc4467_3_url_stops_working_when_its_user_loses_the_read_right() {
    let h = harness();
    let mut alice = Client::logged_in(&h).await;
    alice.cmd("a CREATE Team").await;
    append(&mut alice, "Team", "", MSG2).await;
    alice.cmd("b SETACL Team carol lr").await;
    let mut carol = login_as(&h, "carol@example.com", "carol-password").await;
    let rump = "imap://carol%40example.com@example.com/Other%20Users/alice%40example.com/Team/;UID=1;URLAUTH=submit+carol%40example.com";
    let r = carol
        .cmd(&format!("g GENURLAUTH \"{rump}\" INTERNAL"))
        .await;
    let full = signed(&r);
    let fetch = format!("f URLFETCH \"{full}\"");
    assert!(carol.cmd(&fetch).await.contains("zanzibar"));
    // submit+carol: alice's session may not use it.
    assert!(alice.cmd(&fetch).await.contains(" NIL\r\n"));
    alice.cmd("c DELETEACL Team carol").await;
    assert!(carol.cmd(&fetch).await.contains(" NIL\r\n"));
}

#[test]
fn rfc4469_5_catenate_and_rfc4467_7_command_syntax() {
    use super::command::{parse, CatPart, Cmd};
    let r =
        parse(b"a APPEND Drafts (\\Seen) CATENATE (TEXT ~{3}\r\na\0b URL \"/INBOX/;UID=1\")\r\n");
    let Some(Ok((_, Cmd::Catenate { flags, parts, .. }))) = r else {
        panic!("{r:?}")
    };
    assert_eq!(flags, ["\\Seen"]);
    assert_eq!(
        parts,
        [
            CatPart::Text(b"a\0b".to_vec()),
            CatPart::Url("/INBOX/;UID=1".into())
        ]
    );
    let many = " URL /INBOX/;UID=1".repeat(url::MAX_URLS + 1);
    let cmd = format!("a APPEND Drafts CATENATE ({})\r\n", many.trim_start());
    assert!(matches!(parse(cmd.as_bytes()), Some(Err(_))));
    for bad in [
        "a APPEND Drafts CATENATE ()\r\n",
        "a APPEND Drafts CATENATE (TEXT \"quoted\")\r\n",
        "a APPEND Drafts CATENATE (FILE x)\r\n",
        // CATENATE is accepted only as the sole message of an APPEND
        // (not inside a MULTIAPPEND, RFC 3502), nor in REPLACE.
        "a APPEND Drafts {1+}\r\nx CATENATE (URL \"/INBOX/;UID=1\")\r\n",
        "a APPEND Drafts CATENATE (URL \"/INBOX/;UID=1\") {1+}\r\nx\r\n",
        "a REPLACE 1 Drafts CATENATE (URL \"/INBOX/;UID=1\")\r\n",
        "a URLFETCH\r\n",
        "a GENURLAUTH \"imap://a@b/INBOX/;UID=1;URLAUTH=anonymous\"\r\n",
    ] {
        assert!(matches!(parse(bad.as_bytes()), Some(Err(_))), "{bad:?}");
    }
    assert!(matches!(
        parse(b"a RESETKEY\r\n"),
        Some(Ok((_, Cmd::ResetKey { mailbox: None, .. })))
    ));
    assert!(matches!(
        parse(b"a RESETKEY INBOX INTERNAL\r\n"),
        Some(Ok((
            _,
            Cmd::ResetKey {
                mailbox: Some(_),
                ..
            }
        )))
    ));
    assert!(matches!(
        parse(b"a URLFETCH /a/;UID=1 \"/b/;UID=2\"\r\n"),
        Some(Ok((_, Cmd::UrlFetch { urls }))) if urls.len() == 2
    ));
}
