//! Modified UTF-7 (RFC 3501 5.1.3): mailbox names on the wire. The store
//! keeps names in UTF-8; every name crossing the wire goes through here.

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

/// UTF-8 -> modified UTF-7.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut pending: Vec<u16> = Vec::new();
    for c in s.chars() {
        if (' '..='~').contains(&c) {
            flush(&mut out, &mut pending);
            if c == '&' {
                out.push_str("&-");
            } else {
                out.push(c);
            }
        } else {
            let mut buf = [0u16; 2];
            pending.extend_from_slice(c.encode_utf16(&mut buf));
        }
    }
    flush(&mut out, &mut pending);
    out
}

fn flush(out: &mut String, pending: &mut Vec<u16>) {
    if pending.is_empty() {
        return;
    }
    let bytes: Vec<u8> = pending.iter().flat_map(|u| u.to_be_bytes()).collect();
    out.push('&');
    for chunk in bytes.chunks(3) {
        let b0 = chunk.first().copied().unwrap_or(0) as u32;
        let b1 = chunk.get(1).copied().unwrap_or(0) as u32;
        let b2 = chunk.get(2).copied().unwrap_or(0) as u32;
        let n = (b0 << 16) | (b1 << 8) | b2;
        let chars = chunk.len() + 1;
        for i in 0..chars {
            let idx = ((n >> (18 - 6 * i)) & 63) as usize;
            out.push(B64[idx] as char);
        }
    }
    out.push('-');
    pending.clear();
}

/// Modified UTF-7 -> UTF-8. `None` when the input is not valid modified
/// UTF-7 (the caller may then treat the name as UTF-8, RFC 6855 style).
pub fn decode(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = *bytes.get(i)?;
        if c == b'&' {
            let end = i + 1 + bytes.get(i + 1..)?.iter().position(|&b| b == b'-')?;
            let chunk = bytes.get(i + 1..end)?;
            if chunk.is_empty() {
                out.push('&');
            } else {
                out.push_str(&decode_chunk(chunk)?);
            }
            i = end + 1;
        } else if (0x20..=0x7e).contains(&c) {
            out.push(c as char);
            i += 1;
        } else {
            return None;
        }
    }
    Some(out)
}

fn decode_chunk(chunk: &[u8]) -> Option<String> {
    let mut bits: u32 = 0;
    let mut nbits = 0;
    let mut bytes = Vec::new();
    for &c in chunk {
        let v = B64.iter().position(|&b| b == c)? as u32;
        bits = (bits << 6) | v;
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            bytes.push(((bits >> nbits) & 0xff) as u8);
        }
    }
    // Leftover bits must be zero padding (fewer than 6 of them).
    if nbits >= 6 || bits & ((1 << nbits) - 1) != 0 || bytes.len() % 2 != 0 {
        return None;
    }
    let units: Vec<u16> = bytes
        .chunks(2)
        .map(|p| u16::from_be_bytes([p[0], p[1]]))
        .collect();
    let s = String::from_utf16(&units).ok()?;
    // A shifted run must not encode printable ASCII (RFC 3501 5.1.3).
    if s.chars().any(|c| (' '..='~').contains(&c)) {
        return None;
    }
    Some(s)
}

/// A wire name (modified UTF-7, or UTF-8 if it does not decode) as UTF-8.
pub fn from_wire(s: &str) -> String {
    decode(s).unwrap_or_else(|| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3501_5_1_3_examples() {
        // The RFC's example: "~peter/mail/台北/日本語".
        assert_eq!(
            encode("~peter/mail/台北/日本語"),
            "~peter/mail/&U,BTFw-/&ZeVnLIqe-"
        );
        assert_eq!(
            decode("~peter/mail/&U,BTFw-/&ZeVnLIqe-").unwrap(),
            "~peter/mail/台北/日本語"
        );
        assert_eq!(encode("a&b"), "a&-b");
        assert_eq!(decode("a&-b").unwrap(), "a&b");
    }

    #[test]
    fn rfc3501_5_1_3_round_trip() {
        for s in [
            "Entwürfe",
            "Gelöschte Elemente",
            "😀 smile",
            "plain",
            "Ünïcödé/ß",
        ] {
            assert_eq!(decode(&encode(s)).unwrap(), s, "{s}");
            assert!(encode(s).is_ascii());
        }
    }

    #[test]
    fn rfc3501_5_1_3_rejects_invalid() {
        assert_eq!(decode("&Jjo"), None); // unterminated
        assert_eq!(decode("&AGE-"), None); // encodes ASCII 'a'
        assert_eq!(decode("&U,B-"), None); // odd bytes
        assert_eq!(from_wire("Entwürfe"), "Entwürfe");
    }
}
