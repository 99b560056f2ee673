//! JMAP ids (RFC 8620 1.2: 1-255 characters of `[A-Za-z0-9_-]`).
//!
//! - accountId: `a` + the user name in unpadded base64url (stable, and
//!   nothing to look up);
//! - mailboxId `F%016x`, emailId `M%016x`, threadId `T%016x`: the same
//!   strings IMAP shows as MAILBOXID/EMAILID/THREADID (RFC 8474), so the
//!   two protocols agree;
//! - blobId: `G%016x` a whole message (by email id), `G%016x_1_2` one MIME
//!   part (its part path, 1-based like IMAP section numbers), `U` + 32 hex
//!   an uploaded blob.
//!
//! Every parse function returns None for anything else; callers answer
//! `notFound` for ids that parse but are not the account's.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

pub fn account_id(user: &str) -> String {
    format!("a{}", URL_SAFE_NO_PAD.encode(user))
}

pub fn parse_account_id(id: &str) -> Option<String> {
    let rest = id.strip_prefix('a')?;
    if rest.is_empty() || rest.len() > 400 {
        return None;
    }
    String::from_utf8(URL_SAFE_NO_PAD.decode(rest).ok()?).ok()
}

fn hex_id(prefix: char, id: u64) -> String {
    format!("{prefix}{id:016x}")
}

fn parse_hex(prefix: char, s: &str) -> Option<u64> {
    let rest = s.strip_prefix(prefix)?;
    if rest.len() != 16
        || !rest
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    u64::from_str_radix(rest, 16).ok()
}

pub fn mailbox_id(id: u64) -> String {
    hex_id('F', id)
}

pub fn parse_mailbox_id(s: &str) -> Option<u64> {
    parse_hex('F', s).filter(|v| *v != 0)
}

/// The EMAILID of RFC 8474 (`crate::imap::wire::email_id` is the same).
pub fn email_id(id: u64) -> String {
    hex_id('M', id)
}

pub fn parse_email_id(s: &str) -> Option<u64> {
    parse_hex('M', s).filter(|v| *v != 0)
}

pub fn thread_id(id: u64) -> String {
    hex_id('T', id)
}

pub fn parse_thread_id(s: &str) -> Option<u64> {
    parse_hex('T', s).filter(|v| *v != 0)
}

/// What a blob id names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blob {
    /// A whole message, by email id.
    Message(u64),
    /// One MIME part of a message: part numbers, 1-based (IMAP sections).
    Part(u64, Vec<u32>),
    /// An uploaded blob: 16 random bytes.
    Upload([u8; 16]),
}

pub fn blob_id(b: &Blob) -> String {
    match b {
        Blob::Message(e) => hex_id('G', *e),
        Blob::Part(e, path) => {
            let mut s = hex_id('G', *e);
            for p in path {
                s.push('_');
                s.push_str(&p.to_string());
            }
            s
        }
        Blob::Upload(r) => {
            let mut s = String::from("U");
            for b in r {
                s.push_str(&format!("{b:02x}"));
            }
            s
        }
    }
}

pub fn parse_blob_id(s: &str) -> Option<Blob> {
    if let Some(rest) = s.strip_prefix('U') {
        if rest.len() != 32
            || !rest
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return None;
        }
        let mut out = [0u8; 16];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&rest[2 * i..2 * i + 2], 16).ok()?;
        }
        return Some(Blob::Upload(out));
    }
    if !s.starts_with('G') || s.len() > 255 {
        return None;
    }
    let mut parts = s.split('_');
    let email = parse_hex('G', parts.next()?).filter(|v| *v != 0)?;
    let mut path = Vec::new();
    for p in parts {
        if p.is_empty()
            || p.len() > 5
            || !p.bytes().all(|b| b.is_ascii_digit())
            || p.starts_with('0')
        {
            return None;
        }
        path.push(p.parse().ok()?);
    }
    if path.len() > 32 {
        return None;
    }
    Some(if path.is_empty() {
        Blob::Message(email)
    } else {
        Blob::Part(email, path)
    })
}

/// A JMAP `Id` as RFC 8620 1.2 allows it (for creation ids too).
pub fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc8474_ids_equal_imaps() {
        assert_eq!(email_id(1), crate::imap::wire::email_id(1));
        assert_eq!(mailbox_id(7), crate::imap::wire::mailbox_id(7));
        assert_eq!(thread_id(9), "T0000000000000009");
    }

    #[test]
    fn ids_round_trip_and_others_do_not_parse() {
        let a = account_id("alice@example.com");
        assert!(valid_id(&a));
        assert_eq!(parse_account_id(&a).as_deref(), Some("alice@example.com"));
        assert_eq!(parse_email_id(&email_id(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_mailbox_id(&mailbox_id(3)), Some(3));
        assert_eq!(parse_thread_id(&thread_id(3)), Some(3));
        for b in [
            Blob::Message(5),
            Blob::Part(5, vec![1, 2]),
            Blob::Upload([0xab; 16]),
        ] {
            let s = blob_id(&b);
            assert!(valid_id(&s), "{s}");
            assert_eq!(parse_blob_id(&s), Some(b));
        }
        for bad in [
            "",
            "M1",
            "MXXXXXXXXXXXXXXXX",
            "M000000000000000A",
            "F0000000000000000",
            "G0000000000000001_",
            "G0000000000000001_01",
            "G0000000000000001_x",
            "U00",
            "T00000000000000011",
            "../etc",
            "M0000000000000001/x",
        ] {
            assert_eq!(parse_email_id(bad), None, "{bad}");
            assert_eq!(parse_mailbox_id(bad), None, "{bad}");
            assert_eq!(parse_thread_id(bad), None, "{bad}");
            assert_eq!(parse_blob_id(bad), None, "{bad}");
        }
        assert_eq!(parse_email_id(&thread_id(1)), None);
    }
}
