//! IMAP URLs (RFC 5092, with RFC 4467 URLAUTH parts): `imap::url::parse`,
//! the section text through `command::parse_section`, and the URL-taking
//! commands (URLFETCH, GENURLAUTH, APPEND CATENATE) through the command
//! parser.

use rand::Rng as _;

use super::gen::{number, pick, word};
use super::{Rng, Target};
use crate::imap::command;
use crate::imap::url;

pub(crate) static IMAP_URL: Target = Target {
    name: "imap_url",
    check: check_url,
    generate: gen_url,
    deep: deep_url,
    cases: 1000,
    dict: &[
        b"imap://",
        b"@",
        b";AUTH=*",
        b";UIDVALIDITY=",
        b"/;UID=",
        b"/;SECTION=",
        b"/;PARTIAL=",
        b";EXPIRE=2030-01-01T00:00:00Z",
        b";URLAUTH=",
        b"submit+",
        b"user+",
        b"anonymous",
        b"authuser",
        b":INTERNAL:",
        b"%",
        b"%C3%A9",
        b"%20",
        b"4294967295",
        b"4294967296",
        b"HEADER.FIELDS%20(TO)",
    ],
};

fn check_url(input: &[u8]) {
    let s = String::from_utf8_lossy(input);
    if let Ok(u) = url::parse(&s) {
        // Output is never larger than input; the numbers hold.
        assert!(s.len() <= url::MAX_URL);
        assert!(u.uid > 0, "UID 0 accepted");
        assert!(u.uidvalidity != Some(0));
        assert!(u.mailbox.len() <= s.len() && !u.mailbox.is_empty());
        assert!(u.section.as_ref().is_none_or(|x| x.len() <= s.len()));
        assert!(u.rump_len <= s.len());
        assert!(u.token.is_none() || u.access.is_some());
        if let Some(sec) = &u.section {
            let _ = command::parse_section(sec);
        }
        // The rump of a signed URL is itself a URL rump with the same
        // parts and no verifier.
        if let Some(rump) = u.rump(&s) {
            let r = url::parse(rump).expect("a rump parses");
            assert!(r.token.is_none());
            assert_eq!(
                (r.uid, &r.mailbox, &r.access),
                (u.uid, &u.mailbox, &u.access)
            );
        }
    }
    // As arguments of the commands that take URLs.
    let q: String = s
        .chars()
        .filter(|c| !matches!(c, '"' | '\\' | '\r' | '\n'))
        .collect();
    for cmd in [
        format!("a URLFETCH \"{q}\"\r\n"),
        format!("a GENURLAUTH \"{q}\" INTERNAL\r\n"),
        format!("a APPEND Drafts CATENATE (URL \"{q}\" TEXT {{2}}\r\nhi)\r\n"),
        format!("a RESETKEY \"{q}\" INTERNAL\r\n"),
    ] {
        let _ = command::parse(cmd.as_bytes());
    }
}

fn gen_url(rng: &mut Rng) -> Vec<u8> {
    let mut s = String::new();
    if rng.gen() {
        s.push_str("imap://");
        if rng.gen() {
            s.push_str(&format!("{}%40example.com", word(rng)));
            if rng.gen_ratio(1, 4) {
                s.push_str(";AUTH=*");
            }
            s.push('@');
        }
        s.push_str("example.com");
        if rng.gen_ratio(1, 4) {
            s.push_str(&format!(":{}", number(rng)));
        }
    }
    s.push('/');
    s.push_str(pick(
        rng,
        &["INBOX", "a/b", "Other%20Users/x/T", "%C3%A9t%C3%A9", ""],
    ));
    if rng.gen() {
        s.push_str(&format!(";UIDVALIDITY={}", number(rng)));
    }
    s.push_str(&format!("/;UID={}", number(rng)));
    if rng.gen() {
        let sec = pick(
            rng,
            &[
                "1",
                "1.2.MIME",
                "TEXT",
                "HEADER",
                "HEADER.FIELDS%20(TO%20CC)",
                "0",
            ],
        );
        s.push_str(&format!("/;SECTION={sec}"));
    }
    if rng.gen() {
        s.push_str(&format!("/;PARTIAL={}", number(rng)));
        if rng.gen() {
            s.push_str(&format!(".{}", number(rng)));
        }
    }
    if rng.gen_ratio(1, 3) {
        s.push_str(pick(
            rng,
            &[
                ";EXPIRE=2030-01-01T00:00:00Z",
                ";EXPIRE=x",
                ";EXPIRE=2001-02-03T04:05:06+01:00",
            ],
        ));
    }
    if rng.gen() {
        let access = pick(
            rng,
            &["anonymous", "authuser", "user+bob", "submit+x%40y", "other"],
        );
        s.push_str(&format!(";URLAUTH={access}"));
        if rng.gen() {
            let n = pick(rng, &[40usize, 32, 31, 0]);
            let hex: String = (0..n).map(|_| pick(rng, &['0', 'a', 'F', '9'])).collect();
            s.push_str(&format!(
                ":{}:{hex}",
                pick(rng, &["INTERNAL", "internal", "", "X.Y"])
            ));
        }
    }
    s.into_bytes()
}

fn deep_url() -> Vec<Vec<u8>> {
    let big = url::MAX_URL;
    vec![
        format!("/{}/;UID=1", "a".repeat(big - 10)).into_bytes(),
        format!("/{}/;UID=1", "%".repeat(1 << 20)).into_bytes(),
        format!("/INBOX/;UID=1{}", "/;SECTION=1".repeat(100_000)).into_bytes(),
        format!("/INBOX/;UID=1/;SECTION={}", "1.".repeat(big / 2)).into_bytes(),
        format!("imap://{}/INBOX/;UID=1", "@".repeat(big)).into_bytes(),
        format!(
            "/INBOX/;UID=1;URLAUTH=anonymous:INTERNAL:{}",
            "a".repeat(big)
        )
        .into_bytes(),
        format!("/INBOX/;UID={}", "9".repeat(1 << 20)).into_bytes(),
        ";".repeat(1 << 20).into_bytes(),
    ]
}
