//! Trace header fields added at delivery (RFC 5321 4.4): `Return-Path`
//! and `Received`, with the protocol names of RFC 3848 / RFC 6531.

use crate::deliver::client::quote_address;
use std::net::IpAddr;

/// The `with` protocol of a Received field.
pub fn protocol_name(lmtp: bool, ehlo: bool, tls: bool, auth: bool, utf8: bool) -> &'static str {
    match (lmtp, ehlo, utf8, tls, auth) {
        (false, false, _, _, _) => "SMTP",
        (false, true, false, false, false) => "ESMTP",
        (false, true, false, true, false) => "ESMTPS",
        (false, true, false, false, true) => "ESMTPA",
        (false, true, false, true, true) => "ESMTPSA",
        (false, true, true, false, false) => "UTF8SMTP",
        (false, true, true, true, false) => "UTF8SMTPS",
        (false, true, true, false, true) => "UTF8SMTPA",
        (false, true, true, true, true) => "UTF8SMTPSA",
        (true, _, false, false, false) => "LMTP",
        (true, _, false, true, false) => "LMTPS",
        (true, _, false, false, true) => "LMTPA",
        (true, _, false, true, true) => "LMTPSA",
        (true, _, true, false, false) => "UTF8LMTP",
        (true, _, true, true, false) => "UTF8LMTPS",
        (true, _, true, false, true) => "UTF8LMTPA",
        (true, _, true, true, true) => "UTF8LMTPSA",
    }
}

pub use crate::redact::sanitize;

/// What goes into a Received field.
pub struct Received<'a> {
    /// The EHLO/HELO/LHLO argument.
    pub helo: &'a str,
    /// The client's address; None keeps it out of the field (submission:
    /// the user's location stays private).
    pub peer: Option<IpAddr>,
    pub hostname: &'a str,
    /// From `protocol_name`.
    pub with: &'a str,
    pub id: &'a str,
    /// Only when the message has exactly one recipient (RFC 5321 7.2: do
    /// not disclose the other recipients).
    pub for_rcpt: Option<&'a str>,
    /// RFC 5322 date-time.
    pub date: &'a str,
}

impl Received<'_> {
    /// The folded header field, CRLF-terminated (RFC 5321 4.4 syntax; no
    /// reverse DNS is done, so the TCP-info is the address literal only).
    pub fn render(&self) -> String {
        let ip = match self.peer {
            Some(IpAddr::V4(v4)) => format!(" ([{v4}])"),
            Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => format!(" ([{v4}])"),
                None => format!(" ([IPv6:{v6}])"),
            },
            None => String::new(),
        };
        let mut h = format!(
            "Received: from {}{ip}\r\n\tby {} (msgd) with {} id {}",
            sanitize(self.helo, 255),
            sanitize(self.hostname, 255),
            self.with,
            sanitize(self.id, 64),
        );
        if let Some(rcpt) = self.for_rcpt {
            h.push_str(&format!(
                "\r\n\tfor <{}>",
                quote_address(&sanitize(rcpt, 320))
            ));
        }
        h.push_str(&format!(";\r\n\t{}\r\n", self.date));
        h
    }
}

/// The current time as an RFC 5322 date-time.
pub fn now_rfc5322() -> String {
    chrono::Local::now()
        .format("%a, %d %b %Y %H:%M:%S %z")
        .to_string()
}

/// The originator fields of a submitted message (RFC 5322 3.6.2).
#[derive(Debug, PartialEq, Eq)]
pub enum Originators {
    /// Every address in every From: and Sender: field, lowercase (empty
    /// when the message has neither).
    Addresses(Vec<String>),
    /// More than one From: or more than one Sender: field (RFC 5322 3.6
    /// allows one each): which one a reader shows is anybody's guess.
    Duplicate,
    /// A From:/Sender: field whose addresses cannot all be read (or that
    /// names no mailbox at all).
    Unreadable,
}

/// Length of the header section including the empty line that ends it;
/// None when `message` does not contain its end.
pub fn header_section_len(message: &[u8]) -> Option<usize> {
    if message.starts_with(b"\r\n") {
        return Some(2);
    }
    message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
}

/// Counts the fields named `name` (lowercase) in a header section, the
/// obsolete `Name WSP* :` form included (RFC 5322 4.5.3).
fn count_fields(header: &[u8], name: &str) -> usize {
    header
        .split(|&b| b == b'\n')
        .filter(|line| !line.first().is_some_and(|b| *b == b' ' || *b == b'\t'))
        .filter_map(|line| {
            let colon = line.iter().position(|&b| b == b':')?;
            let field = line[..colon].trim_ascii_end();
            Some(field.eq_ignore_ascii_case(name.as_bytes()))
        })
        .filter(|m| *m)
        .count()
}

/// Reads the From: and Sender: fields of `message` (its header section
/// must be complete in `message`).
pub fn originators(message: &[u8]) -> Originators {
    let end = header_section_len(message).unwrap_or(message.len());
    let header = &message[..end];
    if count_fields(header, "from") > 1 || count_fields(header, "sender") > 1 {
        return Originators::Duplicate;
    }
    let Some(parsed) = mail_parser::MessageParser::default().parse_headers(header) else {
        return Originators::Addresses(Vec::new());
    };
    let mut out = Vec::new();
    let mut seen = [0usize; 2];
    for h in parsed.headers() {
        let slot = match h.name {
            mail_parser::HeaderName::From => 0,
            mail_parser::HeaderName::Sender => 1,
            _ => continue,
        };
        seen[slot] += 1;
        if seen[slot] > 1 {
            return Originators::Duplicate;
        }
        let Some(list) = h.value.as_address() else {
            return Originators::Unreadable;
        };
        let before = out.len();
        for a in list.iter() {
            match a.address() {
                Some(addr) if addr.contains('@') => out.push(addr.to_lowercase()),
                _ => return Originators::Unreadable,
            }
        }
        if out.len() == before {
            return Originators::Unreadable;
        }
    }
    Originators::Addresses(out)
}

/// Does the header section of `message` contain a field of this name
/// (lowercase, without the colon)?
pub fn has_field(message: &[u8], name: &str) -> bool {
    let want = format!("{name}:");
    let want = want.as_bytes();
    let mut at_line_start = true;
    let mut i = 0;
    while i < message.len() {
        if at_line_start {
            let rest = &message[i..];
            if rest.starts_with(b"\r\n") || rest.starts_with(b"\n") {
                return false; // end of the header section
            }
            if rest.len() >= want.len() && rest[..want.len()].eq_ignore_ascii_case(want) {
                return true;
            }
        }
        at_line_start = message[i] == b'\n';
        i += 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc5321_4_4_received_field() {
        let r = Received {
            helo: "client.example",
            peer: Some("192.0.2.1".parse().unwrap()),
            hostname: "mx.example.test",
            with: protocol_name(false, true, true, false, false),
            id: "abc.1.1",
            for_rcpt: Some("bob@example.test"),
            date: "Mon, 1 Jan 2024 00:00:00 +0000",
        };
        assert_eq!(
            r.render(),
            "Received: from client.example ([192.0.2.1])\r\n\tby mx.example.test (msgd) with ESMTPS id abc.1.1\r\n\tfor <bob@example.test>;\r\n\tMon, 1 Jan 2024 00:00:00 +0000\r\n"
        );
    }

    #[test]
    fn received_sanitizes_helo_and_ipv6_literal() {
        let r = Received {
            helo: "evil)\r\nX-Injected: 1",
            peer: Some("2001:db8::1".parse().unwrap()),
            hostname: "h",
            with: "LMTP",
            id: "1",
            for_rcpt: None,
            date: "d",
        };
        let h = r.render();
        assert!(
            h.contains("from evil???X-Injected: 1 ([IPv6:2001:db8::1])"),
            "{h}"
        );
        assert!(!h.contains("for <"));
    }

    #[test]
    fn rfc3848_rfc6531_protocol_names() {
        assert_eq!(protocol_name(false, false, false, false, false), "SMTP");
        assert_eq!(protocol_name(false, true, false, false, false), "ESMTP");
        assert_eq!(protocol_name(false, true, true, true, true), "UTF8SMTPSA");
        assert_eq!(protocol_name(true, true, false, false, false), "LMTP");
        assert_eq!(protocol_name(true, true, false, false, true), "UTF8LMTP");
        assert_eq!(protocol_name(true, true, true, false, false), "LMTPS");
    }

    #[test]
    fn rfc6409_received_without_client_address() {
        let r = Received {
            helo: "laptop",
            peer: None,
            hostname: "smtp.example.test",
            with: protocol_name(false, true, true, true, false),
            id: "1",
            for_rcpt: None,
            date: "d",
        };
        assert_eq!(
            r.render(),
            "Received: from laptop\r\n\tby smtp.example.test (msgd) with ESMTPSA id 1;\r\n\td\r\n"
        );
    }

    #[test]
    fn rfc5322_3_6_2_originator_addresses() {
        // A From: in the body is not a field.
        assert_eq!(
            originators(
                b"Subject: x\r\nFrom: Alice <Alice@Example.TEST>, b@x\r\n\r\nFrom: c@d\r\n"
            ),
            Originators::Addresses(vec!["alice@example.test".to_string(), "b@x".to_string()])
        );
        assert_eq!(
            originators(b"Subject: x\r\n\r\n"),
            Originators::Addresses(Vec::new())
        );
        assert_eq!(
            originators(b"From: g: a@x, b@y;\r\nSender: s@z\r\n\r\n"),
            Originators::Addresses(vec!["a@x".into(), "b@y".into(), "s@z".into()])
        );
        assert_eq!(
            originators(b"From: a@x\r\nfrom\t: b@y\r\n\r\n"),
            Originators::Duplicate
        );
        // A folded line starting with "From:" is a continuation, not a field.
        assert_eq!(
            originators(b"Subject: x\r\n From: y\r\nFrom: a@x\r\n\r\n"),
            Originators::Addresses(vec!["a@x".into()])
        );
        assert_eq!(
            originators(b"From: nobody\r\n\r\n"),
            Originators::Unreadable
        );
        assert!(has_field(b"Message-Id: <a@b>\r\n\r\n", "message-id"));
        assert!(!has_field(b"X-Message-Id: <a@b>\r\n\r\n", "message-id"));
    }
}
