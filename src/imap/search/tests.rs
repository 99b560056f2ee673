//! SEARCH evaluation tests, named after the RFC behaviour they check. Keys
//! are parsed by msgd's command parser from real SEARCH criteria.

use std::cell::Cell;
use std::sync::Arc;

use super::*;
use crate::imap::mime::tests::{crlf, MIXED};

/// The criteria of `A SEARCH <criteria>` as one key.
fn key(criteria: &str) -> Key {
    crate::imap::command::parse_search_keys(criteria)
        .unwrap_or_else(|e| panic!("bad criteria {criteria}: {e}"))
}

/// 2024-10-01 08:00:00 UTC.
const T0: i64 = 1_727_769_600;

fn view(flags: &Flags) -> MessageView<'_> {
    MessageView {
        seq: 3,
        uid: 30,
        flags,
        recent: false,
        internal_date: T0,
        tz_offset_min: 0,
        size: 1000,
        modseq: 7,
        save_date: T0,
        email_id: "M1",
        thread_id: None,
    }
}

/// Evaluates with `msg` as the message bytes; returns (result, loads).
fn eval_with(criteria: &str, v: &MessageView<'_>, msg: Option<&[u8]>) -> (bool, u32) {
    let loads = Cell::new(0);
    let bytes = msg.map(|m| Arc::new(m.to_vec()));
    let mut load = || {
        loads.set(loads.get() + 1);
        bytes.clone()
    };
    let r = matches_at(&key(criteria), v, 5, 50, T0 + 3600, &mut load);
    (r, loads.get())
}

fn check(criteria: &str, v: &MessageView<'_>, msg: &[u8]) -> bool {
    eval_with(criteria, v, Some(msg)).0
}

#[test]
fn rfc3501_6_4_4_flag_keys() {
    let flags = Flags::from_names(&["\\Seen", "\\Flagged", "$Junk"]);
    let v = view(&flags);
    for (c, want) in [
        ("ALL", true),
        ("SEEN", true),
        ("UNSEEN", false),
        ("FLAGGED", true),
        ("UNFLAGGED", false),
        ("ANSWERED", false),
        ("UNANSWERED", true),
        ("DELETED", false),
        ("UNDELETED", true),
        ("DRAFT", false),
        ("UNDRAFT", true),
        ("KEYWORD $junk", true),
        ("KEYWORD $Other", false),
        ("UNKEYWORD $JUNK", false),
        ("UNKEYWORD $Other", true),
    ] {
        let (r, loads) = eval_with(c, &v, Some(b"Subject: x\r\n\r\n"));
        assert_eq!(r, want, "{c}");
        assert_eq!(loads, 0, "{c} must not load the message");
        assert!(!needs_body(&key(c)), "{c}");
    }
}

#[test]
fn rfc3501_6_4_4_recent_new_old() {
    let unseen = Flags::default();
    let seen = Flags::from_names(&["\\Seen"]);
    let mut v = view(&unseen);
    v.recent = true;
    assert!(check("RECENT", &v, b""));
    assert!(check("NEW", &v, b""));
    assert!(!check("OLD", &v, b""));
    let mut v = view(&seen);
    v.recent = true;
    assert!(!check("NEW", &v, b""));
    v.recent = false;
    assert!(check("OLD", &v, b""));
    assert!(!check("RECENT", &v, b""));
}

#[test]
fn rfc3501_6_4_4_sequence_sets_and_uid_with_star() {
    let f = Flags::default();
    let v = view(&f); // seq 3 of 5, uid 30 of max 50
    for (c, want) in [
        ("3", true),
        ("1,3", true),
        ("1:2", false),
        ("2:4", true),
        ("4:2", true),
        ("*", false),
        ("3:*", true),
        ("UID 30", true),
        ("UID 1:29", false),
        ("UID 31:*", false),
        ("UID 30:*", true),
        ("UID *", false),
        ("UID 60:*", false),
    ] {
        assert_eq!(check(c, &v, b""), want, "{c}");
    }
    // "n:*" with n above the largest value still includes the largest.
    let mut v = view(&f);
    v.seq = 5;
    v.uid = 50;
    assert!(check("*", &v, b""));
    assert!(check("7:*", &v, b""));
    assert!(check("UID 99:*", &v, b""));
}

#[test]
fn rfc3501_6_4_4_larger_smaller() {
    let f = Flags::default();
    let v = view(&f); // size 1000
    assert!(check("LARGER 999", &v, b""));
    assert!(!check("LARGER 1000", &v, b""));
    assert!(check("SMALLER 1001", &v, b""));
    assert!(!check("SMALLER 1000", &v, b""));
}

#[test]
fn rfc3501_6_4_4_before_on_since_use_internal_date_in_its_zone() {
    let f = Flags::default();
    // 2024-10-01 23:30 UTC is 2024-10-02 in +01:00.
    let mut v = view(&f);
    v.internal_date = T0 + 15 * 3600 + 1800;
    assert!(check("ON 1-Oct-2024", &v, b""));
    v.tz_offset_min = 60;
    assert!(check("ON 2-Oct-2024", &v, b""));
    assert!(!check("ON 1-Oct-2024", &v, b""));
    assert!(check("SINCE 2-Oct-2024", &v, b""));
    assert!(!check("SINCE 3-Oct-2024", &v, b""));
    assert!(check("BEFORE 3-Oct-2024", &v, b""));
    assert!(!check("BEFORE 2-Oct-2024", &v, b""));
    v.tz_offset_min = -600;
    assert!(check("ON 1-Oct-2024", &v, b""));
}

const HEADERS: &str = "From: =?ISO-8859-1?Q?Keld_J=F8rn_Simonsen?= <keld@dkuug.dk>
To: A Group:Ed Jones <c@a.test>;
Cc: carol@example.com
Bcc: secret@example.com
Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?= aus
 Berlin
Date: Wed, 02 Oct 2024 23:30:00 -0700
X-Spam-Flag: YES
Content-Type: text/plain; charset=iso-8859-1
Content-Transfer-Encoding: quoted-printable

Sch=F6ne Gr=FC=DFe,
the bl=
ue team
";

#[test]
fn rfc3501_6_4_4_header_keys_match_decoded_values_case_insensitively() {
    let f = Flags::default();
    let v = view(&f);
    let m = crlf(HEADERS);
    for (c, want) in [
        ("FROM \"Jørn\"", true),
        ("FROM keld@DKUUG", true),
        ("FROM carol", false),
        ("TO \"ed jones\"", true),
        ("TO \"a group\"", true),
        ("CC Carol@Example.Com", true),
        ("BCC secret", true),
        ("BCC carol", false),
        ("SUBJECT \"GRÜSSE\"", false),
        ("SUBJECT \"grüße aus berlin\"", true),
        ("SUBJECT Berlin", true),
        ("HEADER X-Spam-Flag yes", true),
        ("HEADER x-spam-flag no", false),
        ("HEADER X-Spam-Flag \"\"", true),
        ("HEADER X-Missing \"\"", false),
    ] {
        assert_eq!(check(c, &v, &m), want, "{c}");
        assert!(needs_body(&key(c)), "{c}");
    }
}

#[test]
fn rfc3501_6_4_4_body_and_text_match_decoded_body() {
    let f = Flags::default();
    let v = view(&f);
    let m = crlf(HEADERS);
    for (c, want) in [
        // quoted-printable + ISO-8859-1 decoded to UTF-8, soft line breaks joined
        ("BODY \"schöne grüße\"", true),
        ("BODY \"blue team\"", true),
        ("BODY \"Sch=F6ne\"", false),
        ("BODY Berlin", false),
        ("TEXT Berlin", true),
        ("TEXT \"blue\"", true),
        ("TEXT x-spam-flag", true),
        ("TEXT nowhere", false),
    ] {
        assert_eq!(check(c, &v, &m), want, "{c}");
    }
    // Multipart: text parts decoded, base64 attachments skipped, HTML as
    // text, an encapsulated message's header and body included.
    let m = crlf(MIXED);
    for (c, want) in [
        ("BODY \"café au lait\"", true),
        ("BODY \"<b>\"", false),
        ("BODY \"inner body line 2\"", true),
        ("BODY carol@example.com", true),
        ("BODY PDF-1.4", false),
        ("BODY preamble", false),
        ("SUBJECT inner", false),
    ] {
        assert_eq!(check(c, &v, &m), want, "{c}");
    }
}

#[test]
fn rfc3501_6_4_4_sent_dates_use_date_header_ignoring_time_and_zone() {
    let f = Flags::default();
    let v = view(&f);
    let m = crlf(HEADERS); // Date: Wed, 02 Oct 2024 23:30:00 -0700 (03 Oct in UTC)
    for (c, want) in [
        ("SENTON 2-Oct-2024", true),
        ("SENTON 3-Oct-2024", false),
        ("SENTSINCE 2-Oct-2024", true),
        ("SENTSINCE 3-Oct-2024", false),
        ("SENTBEFORE 3-Oct-2024", true),
        ("SENTBEFORE 2-Oct-2024", false),
    ] {
        assert_eq!(check(c, &v, &m), want, "{c}");
    }
    // No Date: header: no SENT* key matches.
    let m = crlf("Subject: x\n\nbody\n");
    assert!(!check("SENTBEFORE 1-Jan-2100", &v, &m));
    assert!(!check("SENTSINCE 1-Jan-1970", &v, &m));
}

#[test]
fn rfc3501_6_4_4_not_or_and_lists() {
    let flags = Flags::from_names(&["\\Seen"]);
    let v = view(&flags);
    let m = crlf(HEADERS);
    for (c, want) in [
        ("NOT SEEN", false),
        ("NOT NOT SEEN", true),
        ("OR DELETED SEEN", true),
        ("OR DELETED DRAFT", false),
        ("SEEN LARGER 10", true),
        ("SEEN LARGER 10 DELETED", false),
        ("(SEEN (LARGER 10 SUBJECT berlin))", true),
        ("(SEEN (LARGER 10 SUBJECT paris))", false),
        ("OR (DELETED) (NOT SUBJECT paris)", true),
        ("NOT (FROM keld OR TO nobody CC nobody)", true),
        ("NOT (FROM keld OR TO nobody CC carol)", false),
    ] {
        assert_eq!(check(c, &v, &m), want, "{c}");
    }
}

#[test]
fn loader_is_called_once_and_only_when_needed() {
    let f = Flags::default();
    let v = view(&f);
    let m = crlf(HEADERS);
    let (r, loads) = eval_with("FROM keld SUBJECT berlin BODY blue TEXT team", &v, Some(&m));
    assert!(r);
    assert_eq!(loads, 1);
    // Short-circuit: a flag key that fails first never loads.
    let (r, loads) = eval_with("DELETED FROM keld", &v, Some(&m));
    assert!(!r);
    assert_eq!(loads, 0);
    // Unreadable message: header and body keys do not match.
    let (r, loads) = eval_with("FROM keld", &v, None);
    assert!(!r);
    assert_eq!(loads, 1);
    let (r, _) = eval_with("NOT BODY blue", &v, None);
    assert!(r);
}

#[test]
fn needs_body_sees_through_not_or_and() {
    assert!(!needs_body(&key(
        "SEEN UID 1:* OR NEW (LARGER 5 NOT DELETED)"
    )));
    assert!(needs_body(&key("SEEN OR NEW (LARGER 5 NOT SUBJECT x)")));
    assert!(needs_body(&key("NOT SENTON 1-Jan-2020")));
    assert!(needs_body(&key("TEXT x")));
    assert!(!needs_body(&key("ON 1-Jan-2020 MODSEQ 5 YOUNGER 10")));
}

#[test]
fn rfc7162_3_1_5_modseq() {
    let f = Flags::default();
    let v = view(&f); // modseq 7
    assert!(check("MODSEQ 7", &v, b""));
    assert!(check("MODSEQ 1", &v, b""));
    assert!(!check("MODSEQ 8", &v, b""));
    assert!(check("MODSEQ \"/flags/\\\\seen\" all 7", &v, b""));
}

#[test]
fn rfc5032_younger_older() {
    let f = Flags::default();
    let v = view(&f); // internal date T0, now T0 + 3600
    assert!(check("YOUNGER 3600", &v, b""));
    assert!(!check("YOUNGER 3599", &v, b""));
    assert!(check("OLDER 3599", &v, b""));
    assert!(!check("OLDER 3600", &v, b""));
}

#[test]
fn robustness_search_on_garbage_never_panics() {
    let f = Flags::default();
    let v = view(&f);
    let m = crlf(MIXED);
    for cut in (0..m.len()).step_by(7) {
        let part = m.get(..cut).unwrap_or_default();
        let _ = check("OR TEXT x (BODY y SENTON 1-Jan-2020) HEADER a b", &v, part);
    }
    let garbage = b"Subject: \xff\xfe=?x?q?\x00?=\r\nDate: 99 Foo 99999 99:99\r\n\r\n\xc3\x28 =?";
    assert!(!check("SUBJECT zzz", &v, garbage));
    assert!(!check("SENTON 1-Jan-2020", &v, garbage));
    assert!(check("TEXT subject", &v, garbage));
}

#[test]
fn rfc9051_6_4_4_from_to_cc_bcc_match_the_whole_field_in_any_valid_form() {
    let f = Flags::default();
    let v = view(&f);
    let m = crlf(concat!(
        "From: \"Smith, John \\\"JJ\\\" (Sales)\" <john@example.com>\n",
        "To: Team: a@x.test, \"=?utf-8?q?J=C3=B6rg?=\"   <j@x.test>;, undisclosed:;\n",
        "Cc: zed@example.com\n (Zed  Example)\n",
        "Bcc: =?iso-8859-1?q?J=F8rn?= <jorn@example.net>\n",
        "Subject: x\n\nbody\n"
    ));
    for (c, want) in [
        // Display name as written and as read, quoted-pair unescaped.
        ("FROM \"Smith, John\"", true),
        ("FROM \"John \\\"JJ\\\" (Sales)\"", true),
        ("FROM \"(sales)\"", true),
        ("FROM \"sales)\\\" <john@\"", true),
        ("FROM \"sales) <john@example.com>\"", true),
        ("FROM john@example.com", true),
        ("FROM <john@example.com>", true),
        // Groups and an encoded-word inside a quoted string.
        ("TO \"team:\"", true),
        ("TO \"Jörg <j@x.test>\"", true),
        ("TO undisclosed", true),
        ("TO a@x.test", true),
        // Comments, folded.
        ("CC \"zed example\"", true),
        ("CC \"zed@example.com (zed example)\"", true),
        ("BCC \"jørn <jorn@\"", true),
        ("FROM zed", false),
        ("TO john", false),
    ] {
        assert_eq!(check(c, &v, &m), want, "{c}");
    }
}
