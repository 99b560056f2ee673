//! Session tests of ESORT and search contexts (RFC 5267) and PARTIAL (RFC
//! 9394): the harness of `tests.rs`, two clients where another session's
//! changes must update a context.

use super::tests::{append, harness, tagged, Client, MSG1, MSG2};

/// Five messages: subjects hello, second, hello, second, second (UIDs 1-5).
async fn five(h: &super::tests::Harness) -> Client {
    let mut c = Client::logged_in(h).await;
    for m in [MSG1, MSG2, MSG1, MSG2, MSG2] {
        append(&mut c, "INBOX", "", m).await;
    }
    c
}

#[tokio::test]
async fn rfc5267_capabilities_esort_context_partial() {
    let h = harness();
    let mut c = Client::logged_in(&h).await;
    let r = c.cmd("a CAPABILITY").await;
    for cap in ["ESORT", "CONTEXT=SEARCH", "CONTEXT=SORT", "PARTIAL"] {
        assert!(r.split_whitespace().any(|w| w == cap), "{cap} in {r}");
    }
}

#[tokio::test]
async fn rfc5267_3_esort_min_max_count_all_in_sort_order() {
    let h = harness();
    let mut c = five(&h).await;
    c.cmd("a SELECT INBOX").await;
    let r = c
        .cmd("b SORT RETURN (MIN MAX COUNT ALL) (REVERSE SUBJECT) UTF-8 ALL")
        .await;
    // second: 2 4 5, then hello: 1 3; MIN/MAX are the first/last sorted.
    assert_eq!(
        r,
        "* ESEARCH (TAG \"b\") MIN 2 MAX 3 COUNT 5 ALL 2,4:5,1,3\r\nb OK SORT completed\r\n"
    );
    let r = c.cmd("c UID SORT RETURN () (SUBJECT) UTF-8 ALL").await;
    assert_eq!(
        r,
        "* ESEARCH (TAG \"c\") UID ALL 1,3,2,4:5\r\nc OK SORT completed\r\n"
    );
    let r = c
        .cmd("d SORT RETURN (COUNT) (SUBJECT) UTF-8 SUBJECT nothing")
        .await;
    assert_eq!(
        r,
        "* ESEARCH (TAG \"d\") COUNT 0\r\nd OK SORT completed\r\n"
    );
    // Plain SORT is unchanged.
    let r = c.cmd("e SORT (SUBJECT) UTF-8 ALL").await;
    assert_eq!(r, "* SORT 1 3 2 4 5\r\ne OK SORT completed\r\n");
    // SAVE with MIN saves the first sorted (RFC 5182 with ESORT).
    c.cmd("f SORT RETURN (MIN SAVE) (REVERSE SUBJECT) UTF-8 ALL")
        .await;
    let r = c.cmd("g SEARCH $").await;
    assert!(r.starts_with("* SEARCH 2\r\n"), "{r}");
    assert!(tagged(&c.cmd("h SORT RETURN (BOGUS) (SUBJECT) UTF-8 ALL").await).starts_with("h BAD"));
}

#[tokio::test]
async fn rfc9394_3_1_partial_search_and_sort() {
    let h = harness();
    let mut c = five(&h).await;
    c.cmd("a SELECT INBOX").await;
    let r = c.cmd("b SEARCH RETURN (PARTIAL 1:2) ALL").await;
    assert_eq!(
        r,
        "* ESEARCH (TAG \"b\") PARTIAL (1:2 1:2)\r\nb OK SEARCH completed\r\n"
    );
    let r = c.cmd("c UID SEARCH RETURN (PARTIAL -1:-2) ALL").await;
    assert!(
        r.starts_with("* ESEARCH (TAG \"c\") UID PARTIAL (-1:-2 4:5)\r\n"),
        "{r}"
    );
    let r = c.cmd("d SEARCH RETURN (PARTIAL 10:20) ALL").await;
    assert!(
        r.starts_with("* ESEARCH (TAG \"d\") PARTIAL (10:20 NIL)\r\n"),
        "{r}"
    );
    let r = c
        .cmd("e SEARCH RETURN (COUNT PARTIAL 2:3) SUBJECT second")
        .await;
    assert!(
        r.starts_with("* ESEARCH (TAG \"e\") COUNT 3 PARTIAL (2:3 4:5)\r\n"),
        "{r}"
    );
    // In a SORT the window is over the sorted result, listed in its order.
    let r = c
        .cmd("f SORT RETURN (PARTIAL 2:3) (REVERSE SUBJECT) UTF-8 ALL")
        .await;
    assert!(
        r.starts_with("* ESEARCH (TAG \"f\") PARTIAL (2:3 4:5)\r\n"),
        "{r}"
    );
    // ALL and PARTIAL exclude each other; 0 and mixed signs are bad.
    for (t, ret) in [
        ("g", "ALL PARTIAL 1:2"),
        ("h", "PARTIAL 0:2"),
        ("i", "PARTIAL -1:2"),
        ("j", "PARTIAL 1:2 PARTIAL 3:4"),
    ] {
        let r = c.cmd(&format!("{t} SEARCH RETURN ({ret}) ALL")).await;
        assert!(tagged(&r).starts_with(&format!("{t} BAD")), "{r}");
    }
    // SAVE with PARTIAL saves the messages returned (RFC 9394, RFC 5182 2.1).
    let r = c.cmd("k SEARCH RETURN (PARTIAL -1:-1 SAVE) ALL").await;
    assert!(
        r.starts_with("* ESEARCH (TAG \"k\") PARTIAL (-1:-1 5)\r\n"),
        "{r}"
    );
    let r = c.cmd("l SEARCH $").await;
    assert!(r.starts_with("* SEARCH 5\r\n"), "{r}");
}

#[tokio::test]
async fn rfc5267_4_3_search_context_addto_removefrom() {
    let h = harness();
    let mut c = five(&h).await;
    let mut other = Client::logged_in(&h).await;
    c.cmd("a SELECT INBOX").await;
    other.cmd("a SELECT INBOX").await;
    let r = c.cmd("b UID SEARCH RETURN (COUNT UPDATE) UNSEEN").await;
    assert_eq!(
        r,
        "* ESEARCH (TAG \"b\") UID COUNT 5\r\nb OK SEARCH completed\r\n"
    );
    // By sequence number, UPDATE alone returns the result it amends.
    let r = c.cmd("c SEARCH RETURN (UPDATE) UNSEEN").await;
    assert_eq!(
        r,
        "* ESEARCH (TAG \"c\") ALL 1:5\r\nc OK SEARCH completed\r\n"
    );
    other.cmd("d STORE 2 +FLAGS (\\Seen)").await;
    append(&mut other, "INBOX", "", MSG1).await;
    let r = c.cmd("e NOOP").await;
    let exists = r.find("* 6 EXISTS").expect(&r);
    assert!(
        r.contains("* ESEARCH (TAG \"b\") UID REMOVEFROM (0 2)\r\n"),
        "{r}"
    );
    assert!(
        r.contains("* ESEARCH (TAG \"b\") UID ADDTO (0 6)\r\n"),
        "{r}"
    );
    assert!(
        r.contains("* ESEARCH (TAG \"c\") REMOVEFROM (0 2)\r\n"),
        "{r}"
    );
    let add = r.find("* ESEARCH (TAG \"c\") ADDTO (0 6)\r\n").expect(&r);
    assert!(exists < add, "{r}");
    // An expunge: REMOVEFROM in both contexts before the EXPUNGE (RFC 5267
    // 4.3.4), numbered as before it.
    other.cmd("f STORE 4 +FLAGS (\\Deleted)").await;
    other.cmd("g EXPUNGE").await;
    let r = c.cmd("h NOOP").await;
    let exp = r.find("* 4 EXPUNGE\r\n").expect(&r);
    let rb = r
        .find("* ESEARCH (TAG \"b\") UID REMOVEFROM (0 4)\r\n")
        .expect(&r);
    let rc = r
        .find("* ESEARCH (TAG \"c\") REMOVEFROM (0 4)\r\n")
        .expect(&r);
    assert!(rb < exp && rc < exp, "{r}");
    assert_eq!(r.matches("ESEARCH").count(), 2, "{r}");
    // A change that does not alter the result says nothing.
    other.cmd("i STORE 1 +FLAGS (\\Flagged)").await;
    let r = c.cmd("j NOOP").await;
    assert!(!r.contains("ESEARCH"), "{r}");
    // CANCELUPDATE ends a context; an unknown tag is an error.
    assert_eq!(
        c.cmd("k CANCELUPDATE \"b\" \"c\"").await,
        "k OK CANCELUPDATE completed\r\n"
    );
    other.cmd("l STORE 1 +FLAGS (\\Seen)").await;
    let r = c.cmd("m NOOP").await;
    assert!(!r.contains("ESEARCH"), "{r}");
    assert!(tagged(&c.cmd("n CANCELUPDATE \"b\"").await).starts_with("n BAD"));
}

#[tokio::test]
async fn rfc5267_4_3_sort_context_positions() {
    let h = harness();
    let mut c = five(&h).await;
    let mut other = Client::logged_in(&h).await;
    c.cmd("a SELECT INBOX").await;
    other.cmd("a SELECT INBOX").await;
    let r = c
        .cmd("b UID SORT RETURN (ALL UPDATE) (REVERSE SUBJECT) UTF-8 UNSEEN")
        .await;
    assert_eq!(
        r,
        "* ESEARCH (TAG \"b\") UID ALL 2,4:5,1,3\r\nb OK SORT completed\r\n"
    );
    other.cmd("c STORE 3 +FLAGS (\\Seen)").await;
    append(&mut other, "INBOX", "", MSG2).await;
    let r = c.cmd("d NOOP").await;
    // [2 4 5 1 3] -> remove position 5 -> [2 4 5 1] -> add 6 at 4.
    let rm = r
        .find("* ESEARCH (TAG \"b\") UID REMOVEFROM (5 3)\r\n")
        .expect(&r);
    let add = r
        .find("* ESEARCH (TAG \"b\") UID ADDTO (4 6)\r\n")
        .expect(&r);
    assert!(rm < add, "{r}");
    // Unflag 5 and flag 1: both move; one response each.
    other.cmd("c2 STORE 5 +FLAGS (\\Seen)").await;
    other.cmd("c3 STORE 3 -FLAGS (\\Seen)").await;
    let r = c.cmd("d2 NOOP").await;
    // [2 4 5 6 1] -> [2 4 6 1] -> [2 4 6 1 3].
    assert!(r.contains("UID REMOVEFROM (3 5)\r\n"), "{r}");
    assert!(r.contains("UID ADDTO (5 3)\r\n"), "{r}");
    other.cmd("c4 STORE 3,5 +FLAGS (\\Seen)").await;
    c.cmd("d3 NOOP").await;
    // [2 4 6 1]: expunging 4 removes position 2, before the EXPUNGE.
    other.cmd("c5 STORE 4 +FLAGS (\\Deleted)").await;
    other.cmd("c6 EXPUNGE").await;
    let r = c.cmd("d4 NOOP").await;
    let rm = r
        .find("* ESEARCH (TAG \"b\") UID REMOVEFROM (2 4)\r\n")
        .expect(&r);
    assert!(rm < r.find("* 4 EXPUNGE").expect(&r), "{r}");
    // A sort by sequence number: the positions are in the sorted result.
    let r = c.cmd("e SORT RETURN (UPDATE) (SUBJECT) UTF-8 UNSEEN").await;
    // Unseen UIDs 1 2 6 are messages 1 2 5; hello: 1; second: 2 5.
    assert!(r.starts_with("* ESEARCH (TAG \"e\") ALL 1:2,5\r\n"), "{r}");
    other.cmd("f STORE 3 -FLAGS (\\Seen)").await;
    let r = c.cmd("g NOOP").await;
    assert!(r.contains("* ESEARCH (TAG \"e\") ADDTO (2 3)\r\n"), "{r}");
}

#[tokio::test]
async fn rfc5267_4_1_noupdate_beyond_the_limits() {
    let h = harness();
    let mut c = five(&h).await;
    c.cmd("a SELECT INBOX").await;
    for t in ["b1", "b2", "b3", "b4"] {
        let r = c
            .cmd(&format!("{t} SEARCH RETURN (COUNT UPDATE) ALL"))
            .await;
        assert!(tagged(&r).starts_with(&format!("{t} OK SEARCH")), "{r}");
    }
    let r = c.cmd("b5 SEARCH RETURN (COUNT UPDATE) ALL").await;
    assert!(r.contains("* NO [NOUPDATE \"b5\"]"), "{r}");
    assert!(tagged(&r).starts_with("b5 OK SEARCH"), "{r}");
    assert!(r.contains("COUNT 5"), "{r}");
    // The tag of a live context cannot start another (RFC 5267 4.3).
    let r = c.cmd("b4 SEARCH RETURN (COUNT UPDATE) ALL").await;
    assert_eq!(r, "b4 BAD Search context tag in use\r\n");
    let r = c.cmd("b4 SORT RETURN (UPDATE) (SUBJECT) UTF-8 ALL").await;
    assert!(tagged(&r).starts_with("b4 BAD"), "{r}");
    // Without UPDATE the tag is free to use.
    let r = c.cmd("b4 SEARCH RETURN (COUNT) ALL").await;
    assert!(tagged(&r).starts_with("b4 OK"), "{r}");
    c.cmd("x CANCELUPDATE b1").await;
    // Keys whose answer changes with time alone are refused.
    let r = c.cmd("e SEARCH RETURN (UPDATE) YOUNGER 60").await;
    assert!(r.contains("* NO [NOUPDATE \"e\"]"), "{r}");
    // Selecting again ends every context.
    c.cmd("f SELECT INBOX").await;
    assert!(tagged(&c.cmd("g CANCELUPDATE b2").await).starts_with("g BAD"));
}

#[tokio::test]
async fn rfc5267_4_3_sequence_numbers_and_saved_resolve_when_the_command_runs() {
    let h = harness();
    let mut c = five(&h).await;
    let mut other = Client::logged_in(&h).await;
    c.cmd("a SELECT INBOX").await;
    other.cmd("a SELECT INBOX").await;
    c.cmd("s SEARCH RETURN (SAVE) 4:5").await;
    let r = c.cmd("b UID SEARCH RETURN (UPDATE) 2:3 UNSEEN").await;
    assert!(
        r.starts_with("* ESEARCH (TAG \"b\") UID ALL 2:3\r\n"),
        "{r}"
    );
    let r = c.cmd("d UID SEARCH RETURN (UPDATE) $ UNSEEN").await;
    assert!(
        r.starts_with("* ESEARCH (TAG \"d\") UID ALL 4:5\r\n"),
        "{r}"
    );
    // Message 1 goes: UIDs 3 and 4 are now messages 2 and 3, but the
    // contexts still mean UIDs 2:3 and 4:5; a new message joins neither.
    other.cmd("c STORE 1 +FLAGS (\\Deleted)").await;
    other.cmd("e EXPUNGE").await;
    append(&mut other, "INBOX", "", MSG2).await;
    c.cmd("f SEARCH RETURN (SAVE) 1").await;
    let r = c.cmd("g NOOP").await;
    assert!(!r.contains("ESEARCH"), "{r}");
    other.cmd("h UID STORE 3,5 +FLAGS (\\Seen)").await;
    let r = c.cmd("i NOOP").await;
    assert!(
        r.contains("* ESEARCH (TAG \"b\") UID REMOVEFROM (0 3)\r\n"),
        "{r}"
    );
    assert!(
        r.contains("* ESEARCH (TAG \"d\") UID REMOVEFROM (0 5)\r\n"),
        "{r}"
    );
}
