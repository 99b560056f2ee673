//! Small helpers to write IMAP response text: strings, mailbox names, flag
//! lists, dates and UID sets. Response lines without message data are
//! written as text here; FETCH data goes through imap-codec's encoder.

use std::fmt::Write;

use chrono::{FixedOffset, TimeZone};
use imap_types::core::{AString, Atom};
use imap_types::datetime::DateTime;
use imap_types::flag::{Flag, FlagFetch};

use crate::store::{Flags, Uid};

use super::utf7;

/// An IMAP string: quoted when possible, else a literal.
pub fn string(s: &str) -> String {
    let quotable = s.len() < 1024 && s.bytes().all(|b| (0x20..0x7f).contains(&b) || b == b'\t');
    if quotable {
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
    } else {
        format!("{{{}}}\r\n{}", s.len(), s)
    }
}

/// A mailbox name (UTF-8 in the store) as it goes on the wire.
pub fn mailbox(name: &str) -> String {
    string(&utf7::encode(name))
}

/// A mailbox name from the wire (modified UTF-7 or UTF-8) as the store
/// spells it.
pub fn mailbox_from_wire(m: &imap_types::mailbox::Mailbox<'_>) -> Option<String> {
    match m {
        imap_types::mailbox::Mailbox::Inbox => Some("INBOX".to_string()),
        imap_types::mailbox::Mailbox::Other(o) => {
            let raw = std::str::from_utf8(o.as_ref()).ok()?;
            Some(utf7::from_wire(raw))
        }
    }
}

/// The bytes of an astring (LOGIN arguments).
pub fn astring_bytes<'a>(a: &'a AString<'_>) -> &'a [u8] {
    a.as_ref()
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

/// A client's flag as the store names it.
pub fn flag_name(f: &Flag<'_>) -> String {
    f.to_string()
}

pub fn flags_from_wire(flags: &[Flag<'_>]) -> Flags {
    let names: Vec<String> = flags.iter().map(flag_name).collect();
    Flags::from_names(&names)
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

/// An APPEND date as (seconds since epoch, offset in minutes).
pub fn date_from_wire(d: &DateTime) -> (i64, i16) {
    let dt = d.as_ref();
    let off = dt.offset().local_minus_utc() / 60;
    (dt.timestamp(), off as i16)
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
    fn internal_date_round_trip() {
        let d = date_time(1_700_000_000, 120);
        assert_eq!(date_from_wire(&d), (1_700_000_000, 120));
    }
}
