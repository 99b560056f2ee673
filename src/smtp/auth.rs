//! SMTP AUTH for submission (RFC 4954): the SASL PLAIN (RFC 4616) and
//! LOGIN decoders (trusted client networks are typed at load:
//! `submission.trusted_networks`, `crate::netaddr::Network`). Failed attempts are limited
//! by the process's `crate::loginlimit::LoginLimiter` (in `Services`).
//!
//! Passwords and AUTH data are never logged: the decoders return them to
//! the driver, which hands them to the directory and drops them.

use base64::Engine;

/// Decodes a base64 SASL response line. `*` (cancel) and bad base64 give
/// `None`; `=` is the empty initial response (RFC 4954 4).
pub fn decode_b64(line: &str) -> Option<Vec<u8>> {
    let line = line.trim();
    if line == "=" {
        return Some(Vec::new());
    }
    base64::engine::general_purpose::STANDARD.decode(line).ok()
}

/// Splits a PLAIN response `authzid NUL authcid NUL passwd` (RFC 4616 2).
/// An authzid other than the authcid is refused (no proxy logins).
pub fn parse_plain(raw: &[u8]) -> Option<(String, String)> {
    let mut parts = raw.split(|b| *b == 0);
    let authzid = parts.next()?;
    let authcid = parts.next()?;
    let passwd = parts.next()?;
    if parts.next().is_some() || authcid.is_empty() {
        return None;
    }
    let authcid = std::str::from_utf8(authcid).ok()?.to_string();
    let passwd = std::str::from_utf8(passwd).ok()?.to_string();
    if !authzid.is_empty() {
        let z = std::str::from_utf8(authzid).ok()?;
        if !z.eq_ignore_ascii_case(&authcid) {
            return None;
        }
    }
    Some((authcid, passwd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4616_plain_message_forms() {
        assert_eq!(
            parse_plain(b"\0tim\0tanstaaftanstaaf"),
            Some(("tim".into(), "tanstaaftanstaaf".into()))
        );
        assert_eq!(
            parse_plain(b"Tim\0tim\0pw"),
            Some(("tim".into(), "pw".into()))
        );
        // authzid differing from authcid: no proxy authorization.
        assert_eq!(parse_plain(b"other\0tim\0pw"), None);
        assert_eq!(parse_plain(b"\0\0pw"), None);
        assert_eq!(parse_plain(b"tim pw"), None);
        assert_eq!(parse_plain(b"\0a\0b\0c"), None);
    }

    #[test]
    fn rfc4954_4_base64_responses() {
        assert_eq!(decode_b64("="), Some(Vec::new()));
        assert_eq!(
            decode_b64("AHRpbQB0YW5zdGFhZg=="),
            Some(b"\0tim\0tanstaaf".to_vec())
        );
        assert_eq!(decode_b64("*"), None);
        assert_eq!(decode_b64("not base64!"), None);
    }
}
