//! Test messages whose whole content follows from a token: the token is in
//! the Message-ID and the Subject, and the body is generated from a seed
//! derived from it. A fetched message can therefore be checked byte for
//! byte without keeping a copy, and its identity read from any header
//! fetch.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Domain part of every stress Message-ID.
const ID_DOMAIN: &str = "stress.msgd.invalid";

/// A message token: `<run>.<client>.<n>`; run ids are alphanumeric.
pub fn token(run: &str, client: usize, n: u64) -> String {
    format!("{run}.{client}.{n}")
}

fn seed_of(token: &str) -> u64 {
    // FNV-1a: stable across builds and platforms.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in token.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The full RFC 5322 message for a token (CRLF line ends). Sizes are mostly
/// small with an occasional larger one, like a real mailbox.
pub fn build(token: &str) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(seed_of(token));
    let lines = match rng.gen_range(0..100) {
        0..=79 => rng.gen_range(2..40),
        80..=97 => rng.gen_range(40..400),
        _ => rng.gen_range(400..2000),
    };
    let mut m = String::with_capacity(lines * 70 + 400);
    m.push_str("From: Stress Tester <stress@example.test>\r\n");
    m.push_str("To: <shared@example.test>\r\n");
    m.push_str(&format!("Subject: stress {token}\r\n"));
    m.push_str("Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n");
    m.push_str(&format!("Message-ID: <{token}@{ID_DOMAIN}>\r\n"));
    m.push_str("MIME-Version: 1.0\r\n");
    m.push_str("Content-Type: text/plain; charset=us-ascii\r\n");
    m.push_str("\r\n");
    const WORDS: &[&str] = &[
        "alpha",
        "bravo",
        "charlie",
        "delta",
        "echo",
        "foxtrot",
        "golf",
        "hotel",
        "india",
        "juliet",
        "kilo",
        "lima",
        "mike",
        "november",
        "oscar",
        "papa",
        ".",
        "From",
        "{3}",
        "\"quoted\"",
        "(paren",
        "*",
        "+",
    ];
    for i in 0..lines {
        let n = rng.gen_range(1..12);
        let mut line = format!("{i:04}");
        for _ in 0..n {
            line.push(' ');
            line.push_str(WORDS[rng.gen_range(0..WORDS.len())]);
        }
        m.push_str(&line);
        m.push_str("\r\n");
    }
    m.push_str(&format!("-- end of {token}\r\n"));
    m.into_bytes()
}

/// The token from a Message-ID header field found in `data` (a header
/// block or a whole message), if it is one of ours.
pub fn token_of(data: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(data);
    for line in text.split("\r\n").flat_map(|l| l.split('\n')) {
        let Some((name, value)) = line.split_once(':') else {
            if line.is_empty() {
                break; // end of header
            }
            continue;
        };
        if name.trim().eq_ignore_ascii_case("message-id") {
            let v = value.trim();
            let inner = v.strip_prefix('<')?.strip_suffix('>')?;
            let (tok, dom) = inner.rsplit_once('@')?;
            if dom == ID_DOMAIN {
                return Some(tok.to_string());
            }
            return None;
        }
    }
    None
}

/// The run id part of a token.
pub fn run_of(token: &str) -> &str {
    token.split('.').next().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc5322_message_is_deterministic_and_carries_its_token() {
        let t = token("r1x", 3, 42);
        let a = build(&t);
        assert_eq!(a, build(&t));
        assert_ne!(a, build(&token("r1x", 3, 43)));
        assert_eq!(token_of(&a).as_deref(), Some(t.as_str()));
        assert!(a.windows(4).any(|w| w == b"\r\n\r\n"));
        assert!(a.ends_with(b"\r\n"));
        assert!(
            !a.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'),
            "bare LF"
        );
        assert_eq!(run_of(&t), "r1x");
    }

    #[test]
    fn rfc5322_message_id_header_block_parses() {
        assert_eq!(
            token_of(b"Message-ID: <ab.1.2@stress.msgd.invalid>\r\n\r\n").as_deref(),
            Some("ab.1.2")
        );
        assert_eq!(token_of(b"Message-ID: <x@other.example>\r\n\r\n"), None);
        assert_eq!(
            token_of(b"Subject: hi\r\n\r\nMessage-ID: <a@stress.msgd.invalid>\r\n"),
            None
        );
    }
}
