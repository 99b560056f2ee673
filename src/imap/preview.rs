//! PREVIEW (RFC 8970): a short plain-text abstract of a message.
//!
//! The preview is the first `MAX_CHARS` characters of the message's first
//! text part (`text/plain` or `text/html`, not an attachment, not inside an
//! attached message/rfc822), transfer-decoded, converted from its charset
//! to UTF-8, HTML reduced to its text, control characters dropped and
//! whitespace runs collapsed to one space. A message without such a part
//! has the empty preview `""` (RFC 8970 3.1).
//!
//! Bounded work on hostile messages: the part tree is the one `mime` builds
//! under its nesting cap (`mime::MAX_DEPTH`, issue 9), walked with an
//! explicit stack; the chosen part is transfer-decoded once (linear in its
//! size) and only its first `MAX_INPUT` bytes are charset-decoded and
//! stripped of HTML, so a megabyte of HTML costs no more than 64 KiB of it.
//!
//! Pure: bytes in, text out. FETCH caches the result in the store
//! (`Store::previews`), beside the summaries and dropped with them.

use std::num::NonZeroU32;

use imap_types::body::{BodyStructure, SpecificFields};

use super::mime;

/// Longest preview, in characters (RFC 8970 3.1: at most 256).
pub const MAX_CHARS: usize = 256;
/// Most decoded bytes of the text part looked at.
const MAX_INPUT: usize = 64 * 1024;
/// Most parts looked at while searching the first text part.
const MAX_PARTS: usize = 1024;

/// The preview of a message (see the module doc).
pub fn compute(msg: &[u8]) -> String {
    let parsed = mime::ParsedMessage::new(msg);
    let bs = parsed.body_structure(true);
    let Some((path, html, charset)) = first_text_part(&bs) else {
        return String::new();
    };
    let Ok(mut bytes) = parsed.binary_section(&path) else {
        return String::new();
    };
    bytes.truncate(MAX_INPUT);
    let text = match charset
        .as_deref()
        .and_then(|c| mail_parser::decoders::charsets::map::charset_decoder(c.as_bytes()))
    {
        Some(decode) => decode(&bytes),
        None => String::from_utf8_lossy(&bytes).into_owned(),
    };
    let text = if html {
        mail_parser::decoders::html::html_to_text(&text)
    } else {
        text
    };
    collapse(&text)
}

/// Control characters out, whitespace runs to one space, trimmed, cut to
/// `MAX_CHARS` characters.
pub fn collapse(text: &str) -> String {
    let mut out = String::new();
    let mut count = 0;
    let mut space = false;
    for c in text.chars() {
        if c.is_whitespace() {
            space = !out.is_empty();
            continue;
        }
        if c.is_control() {
            continue;
        }
        if space {
            if count + 1 >= MAX_CHARS {
                break;
            }
            out.push(' ');
            count += 1;
            space = false;
        }
        if count >= MAX_CHARS {
            break;
        }
        out.push(c);
        count += 1;
    }
    out
}

/// Section path, is-HTML and charset of the first text part, depth first.
fn first_text_part(bs: &BodyStructure<'_>) -> Option<(Vec<NonZeroU32>, bool, Option<String>)> {
    let one = NonZeroU32::MIN;
    // A single-part message: its body is part 1.
    let mut stack: Vec<(&BodyStructure<'_>, Vec<NonZeroU32>)> = vec![(bs, Vec::new())];
    let mut visited = 0;
    while let Some((node, path)) = stack.pop() {
        visited += 1;
        if visited > MAX_PARTS {
            return None;
        }
        match node {
            BodyStructure::Multi { bodies, .. } => {
                if path.len() >= mime::MAX_DEPTH {
                    continue;
                }
                for (i, child) in bodies.as_ref().iter().enumerate().rev() {
                    let mut p = path.clone();
                    p.push(NonZeroU32::new(i as u32 + 1).unwrap_or(one));
                    stack.push((child, p));
                }
            }
            BodyStructure::Single {
                body,
                extension_data,
            } => {
                let SpecificFields::Text { subtype, .. } = &body.specific else {
                    continue;
                };
                let sub: &[u8] = subtype.as_ref();
                let html = sub.eq_ignore_ascii_case(b"html");
                if !html && !sub.eq_ignore_ascii_case(b"plain") {
                    continue;
                }
                let attachment = extension_data
                    .as_ref()
                    .and_then(|e| e.tail.as_ref())
                    .and_then(|d| d.disposition.as_ref())
                    .is_some_and(|(kind, _)| {
                        let k: &[u8] = kind.as_ref();
                        k.eq_ignore_ascii_case(b"attachment")
                    });
                if attachment {
                    continue;
                }
                let charset = body
                    .basic
                    .parameter_list
                    .iter()
                    .find(|(k, _)| {
                        let k: &[u8] = k.as_ref();
                        k.eq_ignore_ascii_case(b"charset")
                    })
                    .map(|(_, v)| String::from_utf8_lossy(v.as_ref()).into_owned());
                let path = if path.is_empty() { vec![one] } else { path };
                return Some((path, html, charset));
            }
        }
    }
    None
}

/// The `PREVIEW` FETCH item: NIL, a quoted string, or a literal when the
/// text is not plain ASCII (UTF-8 is allowed in a literal, RFC 8970 3.1).
pub fn item(preview: Option<&str>) -> Vec<u8> {
    match preview {
        None => b"PREVIEW NIL".to_vec(),
        Some(p) if p.is_ascii() => {
            let mut out = b"PREVIEW \"".to_vec();
            for b in p.bytes() {
                if b == b'"' || b == b'\\' {
                    out.push(b'\\');
                }
                out.push(b);
            }
            out.push(b'"');
            out
        }
        Some(p) => {
            let mut out = format!("PREVIEW {{{}}}\r\n", p.len()).into_bytes();
            out.extend_from_slice(p.as_bytes());
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc8970_3_1_preview_of_plain_text_collapsed_and_capped() {
        let body = format!(
            "Hello   Alice,\r\n\r\n\tthe plan\x07 is {}",
            "x".repeat(1000)
        );
        let m = format!("Subject: s\r\nContent-Type: text/plain\r\n\r\n{body}");
        let p = compute(m.as_bytes());
        assert!(p.starts_with("Hello Alice, the plan is xxx"), "{p}");
        assert_eq!(p.chars().count(), MAX_CHARS);
    }

    #[test]
    fn rfc8970_3_1_preview_first_text_part_decoded_html_stripped() {
        let m = "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\naGk=\r\n--b\r\nContent-Type: text/html; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n<html><body><p>Gr=FC=DFe <b>aus</b></p>\r\n<p>K=F6ln</p></body></html>\r\n--b\r\nContent-Type: text/plain\r\n\r\nsecond\r\n--b--\r\n";
        assert_eq!(compute(m.as_bytes()), "Grüße aus Köln");
    }

    #[test]
    fn rfc8970_3_1_preview_skips_attachments_and_empty_without_text() {
        let m = "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\nContent-Disposition: attachment; filename=a.txt\r\n\r\nattached\r\n--b\r\nContent-Type: text/plain\r\n\r\nreal text\r\n--b--\r\n";
        assert_eq!(compute(m.as_bytes()), "real text");
        let m = "Content-Type: application/pdf\r\n\r\n%PDF";
        assert_eq!(compute(m.as_bytes()), "");
        assert_eq!(compute(b""), "");
    }

    #[test]
    fn rfc8970_preview_of_hostile_nesting_is_bounded() {
        let mut m = String::new();
        for i in 0..20_000 {
            m.push_str(&format!(
                "Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n"
            ));
        }
        m.push_str("Content-Type: text/plain\r\n\r\ndeep\r\n");
        // Must return (no stack overflow, no long loop); the deep text is
        // beyond the cap.
        let p = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || compute(m.as_bytes()))
            .unwrap()
            .join()
            .unwrap();
        assert!(p.chars().count() <= MAX_CHARS);
    }

    #[test]
    fn rfc8970_3_1_preview_item_forms() {
        assert_eq!(item(None), b"PREVIEW NIL");
        assert_eq!(item(Some("a \"b\"")), b"PREVIEW \"a \\\"b\\\"\"");
        assert_eq!(item(Some("ü")), "PREVIEW {2}\r\nü".as_bytes());
    }
}
