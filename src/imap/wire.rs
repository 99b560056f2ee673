//! Small helpers to write IMAP response text: strings, mailbox names, flag
//! lists, dates and UID sets. Response lines without message data are
//! written as text here; FETCH data goes through imap-codec's encoder.

use std::fmt::Write;

use chrono::{FixedOffset, TimeZone};
use imap_types::core::Atom;
use imap_types::datetime::DateTime;
use imap_types::flag::{Flag, FlagFetch};

use crate::store::{Flags, Uid};

use super::utf7;

/// An IMAP quoted string: `"` and `\` escaped. The caller makes sure the
/// text may be quoted (no CR, LF or NUL).
pub fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Quoted when `quotable`, else a literal.
fn quoted_or_literal(s: &str, quotable: bool) -> String {
    if quotable && s.len() < 1024 {
        quoted(s)
    } else {
        format!("{{{}}}\r\n{}", s.len(), s)
    }
}

/// An IMAP string: quoted when possible, else a literal.
pub fn string(s: &str) -> String {
    quoted_or_literal(
        s,
        s.bytes().all(|b| (0x20..0x7f).contains(&b) || b == b'\t'),
    )
}

/// A mailbox name (UTF-8 in the store) as it goes on the wire.
pub fn mailbox(name: &str) -> String {
    string(&utf7::encode(name))
}

/// A mailbox name for a client that enabled UTF8=ACCEPT or IMAP4rev2
/// (RFC 6855 3, RFC 9051 5.1): UTF-8 in a quoted string when possible.
pub fn mailbox_utf8(name: &str) -> String {
    quoted_or_literal(name, !name.chars().any(|c| c.is_control()))
}

/// A mailbox name from raw command bytes (modified UTF-7 or UTF-8).
pub fn mailbox_from_bytes(raw: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(raw).ok()?;
    if s.eq_ignore_ascii_case("INBOX") {
        return Some("INBOX".into());
    }
    Some(utf7::from_wire(s))
}

/// MAILBOXID (RFC 8474 4): an objectid naming the mailbox.
pub fn mailbox_id(id: u64) -> String {
    format!("F{id:016x}")
}

/// EMAILID (RFC 8474 5.1).
pub fn email_id(id: u64) -> String {
    format!("M{id:016x}")
}

/// SAVEDATE (RFC 8514) as a date-time string.
pub fn save_date(ts: i64) -> String {
    let d = date_time(ts, 0);
    let mut out = String::from("\"");
    out.push_str(&d.as_ref().format("%d-%b-%Y %H:%M:%S %z").to_string());
    out.push('"');
    out
}

/// A set of sorted numbers as a compact sequence set; the same as
/// `uid_set`, for sequence numbers.
pub fn num_set(nums: &[u32]) -> String {
    uid_set(nums)
}

/// `(\Seen \Recent kw)`.
pub fn flag_list(flags: &Flags, recent: bool) -> String {
    let mut out = String::from("(");
    let mut names = flags.names();
    if recent {
        names.push("\\Recent".into());
    }
    out.push_str(&names.join(" "));
    out.push(')');
    out
}

/// Store flags as imap-types flags for a FETCH response.
pub fn flag_fetch(flags: &Flags, recent: bool) -> Vec<FlagFetch<'static>> {
    let mut out = Vec::new();
    for n in flags.names() {
        let f = match n.as_str() {
            "\\Seen" => Some(Flag::Seen),
            "\\Answered" => Some(Flag::Answered),
            "\\Flagged" => Some(Flag::Flagged),
            "\\Deleted" => Some(Flag::Deleted),
            "\\Draft" => Some(Flag::Draft),
            kw => Atom::try_from(kw.to_string()).ok().map(Flag::Keyword),
        };
        if let Some(f) = f {
            out.push(FlagFetch::Flag(f));
        }
    }
    if recent {
        out.push(FlagFetch::Recent);
    }
    out
}

/// INTERNALDATE as imap-types wants it.
pub fn date_time(ts: i64, tz_offset_min: i16) -> DateTime {
    let tz = FixedOffset::east_opt(i32::from(tz_offset_min) * 60)
        .unwrap_or_else(|| FixedOffset::east_opt(0).expect("zero offset is valid"));
    let dt = tz
        .timestamp_opt(ts, 0)
        .single()
        .unwrap_or_else(|| tz.timestamp_opt(0, 0).single().expect("epoch is valid"));
    DateTime::try_from(dt).unwrap_or_else(|_| DateTime::unvalidated(dt))
}

/// UIDs as a compact set: `1:3,7,9:10`.
pub fn uid_set(uids: &[Uid]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while let Some(&start) = uids.get(i) {
        let mut end = start;
        while uids.get(i + 1) == Some(&end.wrapping_add(1)) {
            end += 1;
            i += 1;
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            let _ = write!(out, "{start}");
        } else {
            let _ = write!(out, "{start}:{end}");
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3501_4_3_strings_quote_or_literal() {
        assert_eq!(string("INBOX"), "\"INBOX\"");
        assert_eq!(string("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(string("a\r\nb"), "{4}\r\na\r\nb");
    }

    #[test]
    fn rfc4315_uid_set() {
        assert_eq!(uid_set(&[1, 2, 3, 7, 9, 10]), "1:3,7,9:10");
        assert_eq!(uid_set(&[5]), "5");
        assert_eq!(uid_set(&[]), "");
    }

    #[test]
    fn rfc3501_2_3_2_flag_list() {
        let f = Flags::from_names(&["\\Seen", "$Label1"]);
        assert_eq!(flag_list(&f, true), "(\\Seen $Label1 \\Recent)");
        assert_eq!(flag_list(&Flags::default(), false), "()");
    }

    #[test]
    fn rfc8474_rfc8514_ids_and_savedate() {
        assert_eq!(mailbox_id(255), "F00000000000000ff");
        assert_eq!(email_id(1), "M0000000000000001");
        assert_eq!(save_date(0), "\"01-Jan-1970 00:00:00 +0000\"");
        assert_eq!(mailbox_utf8("Entwürfe"), "\"Entwürfe\"");
        assert_eq!(mailbox_from_bytes(b"inbox"), Some("INBOX".into()));
        assert_eq!(mailbox_from_bytes(b"Entw&APw-rfe"), Some("Entwürfe".into()));
    }

    #[test]
    fn internal_date_keeps_its_zone() {
        let d = date_time(1_700_000_000, 120);
        assert_eq!(d.as_ref().timestamp(), 1_700_000_000);
        assert_eq!(d.as_ref().offset().local_minus_utc(), 7200);
    }
}
