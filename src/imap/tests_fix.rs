//! Session tests for the behaviours of issue 10 that clients saw wrong,
//! each named after the RFC section it checks (see docs/imap.md).

use super::tests::{append, harness, tagged, Client, MSG1, MSG2};

/// A multipart message: an empty text part, a binary part with a NUL, and
/// a part with no body at all.
const EMPTY_AND_BINARY: &str = "From: a@example.net\r\nSubject: parts\r\nContent-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n--XX\r\nContent-Type: text/plain\r\n\r\n\r\n--XX\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\n\r\nab\0cd\r\n--XX\r\nContent-Type: text/plain\r\n--XX--\r\n";

#[tokio::test]
async fn rfc3516_4_3_rfc9051_6_4_5_empty_parts_and_literal8_appends_fetch_as_literals() {
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    let m = EMPTY_AND_BINARY;
    let r = c
        .cmd(&format!("AP APPEND INBOX ~{{{}+}}\r\n{m}", m.len()))
        .await;
    assert!(tagged(&r).starts_with("AP OK [APPENDUID "), "{r:?}");
    c.cmd("s SELECT INBOX").await;
    for (item, want) in [
        // An empty part is an empty literal, BODY and BINARY alike.
        ("BODY.PEEK[1]", "BODY[1] {0}\r\n)"),
        ("BINARY.PEEK[1]", "BINARY[1] {0}\r\n)"),
        ("BINARY.SIZE[1]", "BINARY.SIZE[1] 0)"),
        ("BODY.PEEK[3]", "BODY[3] {0}\r\n)"),
        ("BINARY.PEEK[3]", "BINARY[3] {0}\r\n)"),
        // NUL cannot travel in a literal: literal8, BODY too.
        ("BODY.PEEK[2]", "BODY[2] ~{5}\r\nab\0cd)"),
        ("BINARY.PEEK[2]", "BINARY[2] ~{5}\r\nab\0cd)"),
        ("BODY.PEEK[2]<1.3>", "BODY[2]<1> ~{3}\r\nb\0c)"),
        ("BINARY.SIZE[2]", "BINARY.SIZE[2] 5)"),
    ] {
        let r = c.cmd(&format!("f FETCH 1 ({item})")).await;
        assert!(
            r.starts_with(&format!("* 1 FETCH ({want}\r\n")),
            "{item}: {r:?}"
        );
        assert!(tagged(&r).starts_with("f OK"), "{item}: {r:?}");
    }
    let r = c.cmd("g FETCH 1 (BODY.PEEK[] RFC822.SIZE)").await;
    assert!(
        r.contains(&format!("BODY[] ~{{{}}}\r\n{m}", m.len())),
        "{r:?}"
    );
    assert!(tagged(&r).starts_with("g OK"), "{r:?}");
    let r = c.cmd("h FETCH 1 (RFC822.TEXT)").await;
    assert!(r.contains("RFC822.TEXT ~{"), "{r:?}");
}

#[tokio::test]
async fn rfc7162_3_1_condstore_enabled_on_selected_mailbox_reports_highestmodseq() {
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    append(&mut c, "INBOX", "", MSG1).await;
    append(&mut c, "INBOX", "", MSG2).await;
    c.cmd("s SELECT INBOX").await;
    let r = c.cmd("a FETCH 1 (MODSEQ)").await;
    let t = tagged(&r);
    assert!(t.starts_with("a OK [HIGHESTMODSEQ "), "{r}");
    // Only the first enabling command says it.
    let r = c.cmd("b FETCH 1 (MODSEQ)").await;
    assert!(tagged(&r).starts_with("b OK FETCH"), "{r}");
    // A STORE UNCHANGEDSINCE as the enabling command keeps its own code
    // and reports HIGHESTMODSEQ untagged.
    let mut d = Client::logged_in(&h).await;
    d.cmd("s SELECT INBOX").await;
    let r = d
        .cmd("c STORE 1:2 (UNCHANGEDSINCE 1) +FLAGS.SILENT (\\Seen)")
        .await;
    assert!(r.contains("* OK [HIGHESTMODSEQ "), "{r}");
    assert!(tagged(&r).starts_with("c OK [MODIFIED "), "{r}");
    // SEARCH RETURN (MIN) MODSEQ: the mod-sequence of the MIN message.
    let mut e = Client::logged_in(&h).await;
    e.cmd("s SELECT INBOX").await;
    e.cmd("t STORE 2 +FLAGS (\\Flagged)").await;
    let r = e.cmd("u FETCH 1:2 (MODSEQ)").await;
    let m1: u64 = modseq_of(&r, "* 1 FETCH");
    let m2: u64 = modseq_of(&r, "* 2 FETCH");
    assert!(m2 > m1, "{r}");
    let r = e.cmd("v SEARCH RETURN (MIN) MODSEQ 1").await;
    assert!(r.contains(&format!("MIN 1 MODSEQ {m1}\r\n")), "{r}");
    let r = e.cmd("w SEARCH RETURN (MAX) MODSEQ 1").await;
    assert!(r.contains(&format!("MAX 2 MODSEQ {m2}\r\n")), "{r}");
}

fn modseq_of(r: &str, prefix: &str) -> u64 {
    let line = r
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_default();
    let at = line.find("MODSEQ (").map(|i| i + 8).unwrap_or(0);
    line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or(0)
}

#[tokio::test]
async fn rfc3501_7_2_6_keyword_from_other_session_is_announced_before_fetch() {
    let h = harness();
    let mut a = Client::logged_in(&h).await;
    append(&mut a, "INBOX", "", MSG1).await;
    append(&mut a, "INBOX", "", MSG2).await;
    let r = a.cmd("s SELECT INBOX").await;
    assert!(!r.contains("$Label1"), "{r}");
    let mut b = Client::logged_in(&h).await;
    b.cmd("s SELECT INBOX").await;
    b.cmd("k STORE 1 +FLAGS ($Label1)").await;
    // Our STORE hands back the whole flag set, $Label1 included: FLAGS
    // and PERMANENTFLAGS come first.
    let r = a.cmd("t STORE 1 +FLAGS (\\Flagged)").await;
    let flags = r.find("* FLAGS (").expect(&r);
    let perm = r.find("[PERMANENTFLAGS (").expect(&r);
    let fetch = r.find("FETCH (FLAGS (").expect(&r);
    assert!(flags < fetch && perm < fetch, "{r}");
    assert!(r[flags..perm].contains("$Label1"), "{r}");
    // The implicit \Seen of FETCH BODY[] the same way.
    b.cmd("k2 STORE 2 +FLAGS ($Label2)").await;
    let r = a.cmd("f FETCH 2 (BODY[TEXT])").await;
    let flags = r.find("* FLAGS (").expect(&r);
    let fetch = r.find("* 2 FETCH").expect(&r);
    assert!(flags < fetch && r[flags..fetch].contains("$Label2"), "{r}");
}

#[tokio::test]
async fn rfc9051_9_mailbox_names_as_atoms_on_the_wire() {
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    let r = c.cmd("a CREATE ~foo").await;
    assert!(tagged(&r).starts_with("a OK"), "{r}");
    let r = c.cmd("b LIST \"\" ~foo").await;
    assert!(
        r.contains("* LIST (\\HasNoChildren) \"/\" \"~foo\"\r\n"),
        "{r}"
    );
    let r = c.cmd("c SELECT ~foo").await;
    assert!(tagged(&r).starts_with("c OK [READ-WRITE]"), "{r}");
    let r = c.cmd("d STATUS ~foo (MESSAGES)").await;
    assert!(r.contains("* STATUS \"~foo\" (MESSAGES 0)"), "{r}");
    let r = c.cmd("e NOOP").await;
    assert!(tagged(&r).starts_with("e OK"), "{r}");
}

#[tokio::test]
async fn rfc6851_3_1_move_to_the_selected_mailbox_is_copy_then_expunge() {
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    append(&mut c, "INBOX", "$Work", MSG1).await;
    append(&mut c, "INBOX", "", MSG2).await;
    c.cmd("s SELECT INBOX").await;
    let r = c.cmd("m MOVE 1 INBOX").await;
    assert!(r.starts_with("* OK [COPYUID "), "{r}");
    assert!(r.contains(" 1 3] "), "{r}");
    assert!(r.contains("* 1 EXPUNGE\r\n"), "{r}");
    assert!(r.contains("* 2 EXISTS\r\n"), "{r}");
    assert!(tagged(&r).starts_with("m OK"), "{r}");
    let r = c.cmd("u UID MOVE 2 inbox").await;
    assert!(r.contains(" 2 4] "), "{r}");
    assert!(tagged(&r).starts_with("u OK"), "{r}");
    let r = c.cmd("f UID FETCH 1:* (FLAGS)").await;
    assert!(r.contains("UID 3") && r.contains("UID 4"), "{r}");
    assert!(!r.contains("UID 1)") && !r.contains("\\Deleted"), "{r}");
    assert!(r.contains("$Work"), "{r}");
}

#[tokio::test]
async fn rfc5258_5_subscribed_recursivematch_return_children_and_childinfo() {
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    for n in [
        "Fruit",
        "Fruit/Apple",
        "Fruit/Banana",
        "Tofu",
        "Tofu/Soy",
        "Vegetable",
        "Vegetable/Corn",
    ] {
        c.cmd(&format!("c CREATE {n}")).await;
    }
    for n in [
        "Fruit/Banana",
        "Tofu",
        "Tofu/Soy",
        "Vegetable",
        "Gone",
        "Ghost/Child",
    ] {
        c.cmd(&format!("s SUBSCRIBE {n}")).await;
    }
    let r = c
        .cmd("l LIST (SUBSCRIBED RECURSIVEMATCH) \"\" % RETURN (CHILDREN)")
        .await;
    let line = |name: &str| {
        r.lines()
            .find(|l| {
                l.ends_with(&format!("\"/\" \"{name}\""))
                    || l.contains(&format!("\"/\" \"{name}\" ("))
            })
            .unwrap_or_else(|| panic!("{name} missing: {r}"))
            .to_string()
    };
    // Not subscribed, a subscribed child: listed with CHILDINFO only.
    let fruit = line("Fruit");
    assert!(
        fruit.contains("\\HasChildren") && !fruit.contains("\\Subscribed"),
        "{r}"
    );
    assert!(fruit.ends_with("(\"CHILDINFO\" (\"SUBSCRIBED\"))"), "{r}");
    // Subscribed with a subscribed child: both.
    let tofu = line("Tofu");
    assert!(
        tofu.contains("\\Subscribed") && tofu.contains("\\HasChildren"),
        "{r}"
    );
    assert!(tofu.ends_with("(\"CHILDINFO\" (\"SUBSCRIBED\"))"), "{r}");
    // Subscribed, children not subscribed: no CHILDINFO.
    let veg = line("Vegetable");
    assert!(
        veg.contains("\\Subscribed \\HasChildren") || veg.contains("\\HasChildren"),
        "{r}"
    );
    assert!(!veg.contains("CHILDINFO"), "{r}");
    // Subscribed but gone: \NonExistent, and still child information.
    let gone = line("Gone");
    assert!(
        gone.contains("\\NonExistent") && gone.contains("\\HasNoChildren"),
        "{r}"
    );
    let ghost = line("Ghost");
    assert!(ghost.contains("\\NonExistent \\HasChildren"), "{r}");
    assert!(ghost.contains("CHILDINFO"), "{r}");
    assert!(!ghost.contains("\\Subscribed"), "{r}");
    // Every entry carries \HasChildren or \HasNoChildren.
    for l in r.lines().filter(|l| l.starts_with("* LIST")) {
        assert!(l.contains("Children"), "{l}");
    }
    // With "*" every subscribed name matches itself: no CHILDINFO.
    let r = c
        .cmd("m LIST (SUBSCRIBED RECURSIVEMATCH) \"\" * RETURN (CHILDREN)")
        .await;
    assert!(!r.contains("CHILDINFO"), "{r}");
    assert!(r.contains("\"/\" \"Fruit/Banana\""), "{r}");
}
