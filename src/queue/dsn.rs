//! Delivery status notifications (RFC 3464) for failed and delayed
//! recipients.
//!
//! A DSN goes to whoever the envelope sender claims to be: a stranger.
//! Its diagnostic is either the remote server's own reply (standard, and
//! quoted) or one of our outcome texts, which are generic by contract
//! (`deliver::client`, `deliver::queue`, `deliver::mx`: causes such as io errors, internal
//! addresses and file paths go to the log only). Here the diagnostic is
//! also made one printable line of bounded length, whatever its source.

use super::record::Envelope;

/// What happened to one recipient, for the report.
pub struct Report<'a> {
    pub address: &'a str,
    pub orcpt: Option<&'a str>,
    /// `failed` or `delayed`.
    pub action: &'static str,
    /// Enhanced status code, e.g. `5.1.1`.
    pub status: String,
    /// The remote reply or our reason.
    pub diagnostic: &'a str,
}

/// Enhanced status code in a reply like `550 5.1.1 no such user`, or a
/// generic one for the class.
pub fn status_of(reply: &str, permanent: bool) -> String {
    let code = reply
        .split_whitespace()
        .nth(1)
        .filter(|w| {
            let p: Vec<&str> = w.split('.').collect();
            p.len() == 3
                && matches!(p[0], "2" | "4" | "5")
                && p.iter()
                    .all(|x| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(str::to_string);
    code.unwrap_or_else(|| {
        if permanent {
            "5.0.0".into()
        } else {
            "4.0.0".into()
        }
    })
}

/// Builds the DSN message to the envelope sender. `original` is the queued
/// message; only its header is returned unless the sender asked RET=FULL.
pub fn build(
    hostname: &str,
    env: &Envelope,
    reports: &[Report<'_>],
    original: &[u8],
    queue_id: &str,
) -> Vec<u8> {
    let now = chrono::Utc::now();
    let boundary = format!("{queue_id}.{}/{hostname}", now.timestamp());
    let delayed = reports.iter().all(|r| r.action == "delayed");
    let success = reports
        .iter()
        .all(|r| r.action == "delivered" || r.action == "relayed");
    let subject = if success {
        "Successful Mail Delivery Report"
    } else if delayed {
        "Delayed Mail (still being retried)"
    } else {
        "Undelivered Mail Returned to Sender"
    };
    let mut m = String::new();
    m.push_str(&format!(
        "From: Mail Delivery System <MAILER-DAEMON@{hostname}>\r\n"
    ));
    m.push_str(&format!("To: <{}>\r\n", env.sender));
    m.push_str(&format!("Subject: {subject}\r\n"));
    m.push_str(&format!("Date: {}\r\n", now.to_rfc2822()));
    m.push_str(&format!(
        "Message-ID: <{queue_id}.dsn.{}@{hostname}>\r\n",
        now.timestamp_micros()
    ));
    m.push_str("Auto-Submitted: auto-replied\r\n");
    m.push_str("MIME-Version: 1.0\r\n");
    m.push_str(&format!(
        "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n\r\n"
    ));
    m.push_str("This is a MIME-encapsulated message.\r\n\r\n");
    m.push_str(&format!("--{boundary}\r\n"));
    m.push_str("Content-Type: text/plain; charset=utf-8\r\n\r\n");
    m.push_str(&format!("This is the mail system at {hostname}.\r\n\r\n"));
    if success {
        m.push_str("Your message was delivered to the recipients below\r\n(or handed to a mail system that does not report further).\r\n\r\n");
    } else if delayed {
        m.push_str("Your message could not be delivered yet to the recipients below.\r\nIt is still being retried; you do not need to send it again.\r\n\r\n");
    } else {
        m.push_str("Your message could not be delivered to the recipients below.\r\n\r\n");
    }
    for r in reports {
        if success {
            m.push_str(&format!("<{}>: {}\r\n", r.address, r.action));
        } else {
            m.push_str(&format!(
                "<{}>: {}\r\n",
                r.address,
                diagnostic_line(r.diagnostic)
            ));
        }
    }
    m.push_str(&format!("\r\n--{boundary}\r\n"));
    m.push_str("Content-Type: message/delivery-status\r\n\r\n");
    m.push_str(&format!("Reporting-MTA: dns; {hostname}\r\n"));
    if let Some(e) = &env.envid {
        m.push_str(&format!("Original-Envelope-Id: {e}\r\n"));
    }
    if let Some(d) = chrono::DateTime::from_timestamp(env.received, 0) {
        m.push_str(&format!("Arrival-Date: {}\r\n", d.to_rfc2822()));
    }
    for r in reports {
        m.push_str("\r\n");
        m.push_str(&format!("Final-Recipient: rfc822; {}\r\n", r.address));
        if let Some(o) = r.orcpt {
            m.push_str(&format!("Original-Recipient: {o}\r\n"));
        }
        m.push_str(&format!("Action: {}\r\n", r.action));
        m.push_str(&format!("Status: {}\r\n", r.status));
        if !r.diagnostic.is_empty() {
            m.push_str(&format!(
                "Diagnostic-Code: smtp; {}\r\n",
                diagnostic_line(r.diagnostic)
            ));
        }
        m.push_str(&format!("Last-Attempt-Date: {}\r\n", now.to_rfc2822()));
    }
    m.push_str(&format!("\r\n--{boundary}\r\n"));
    let mut out = m.into_bytes();
    if env.ret_full {
        out.extend_from_slice(b"Content-Type: message/rfc822\r\n\r\n");
        out.extend_from_slice(original);
        if !original.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
    } else {
        out.extend_from_slice(b"Content-Type: text/rfc822-headers\r\n\r\n");
        let end = find_header_end(original);
        out.extend_from_slice(&original[..end]);
        if !original[..end].ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    out
}

/// Longest diagnostic quoted in a DSN (a remote reply may have up to 200
/// lines; the point is its code and first words).
const MAX_DIAGNOSTIC: usize = 1000;

/// A diagnostic as one printable line of at most `MAX_DIAGNOSTIC` chars.
fn diagnostic_line(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_DIAGNOSTIC)
        .collect();
    if text.chars().count() > MAX_DIAGNOSTIC {
        out.push_str(" ...");
    }
    out
}

fn find_header_end(msg: &[u8]) -> usize {
    msg.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 2)
        .unwrap_or(msg.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::record::{Notify, Recipient};

    #[test]
    fn rfc3464_report_has_per_recipient_fields_and_parses() {
        let env = Envelope {
            sender: "alice@x.test".into(),
            recipients: vec![Recipient {
                address: "bob@y.test".into(),
                orcpt: Some("rfc822;bob@y.test".into()),
                notify: Notify::default(),
                route: String::new(),
            }],
            received: 1_700_000_000,
            envid: Some("ENV1".into()),
            ret_full: false,
            junk: false,
        };
        let dsn = build(
            "mx.x.test",
            &env,
            &[Report {
                address: "bob@y.test",
                orcpt: Some("rfc822;bob@y.test"),
                action: "failed",
                status: status_of("550 5.1.1 no such user", true),
                diagnostic: "550 5.1.1 no such user",
            }],
            b"Subject: hi\r\nFrom: alice@x.test\r\n\r\nbody text\r\n",
            "Q1",
        );
        let text = String::from_utf8(dsn.clone()).unwrap();
        assert!(text.contains("Status: 5.1.1\r\n"));
        assert!(text.contains("Action: failed\r\n"));
        assert!(text.contains("Original-Envelope-Id: ENV1\r\n"));
        assert!(text.contains("Subject: hi\r\n"));
        assert!(!text.contains("body text"), "RET=HDRS returns headers only");
        let parsed = mail_parser::MessageParser::default().parse(&dsn).unwrap();
        assert_eq!(parsed.parts.len(), 4, "multipart + three parts");
    }

    #[test]
    fn diagnostic_is_one_bounded_printable_line() {
        assert_eq!(diagnostic_line("550 5.1.1 a\r\nb\tc"), "550 5.1.1 a  b c");
        let long = "4".repeat(5000);
        let d = diagnostic_line(&long);
        assert!(d.len() <= MAX_DIAGNOSTIC + 4 && d.ends_with(" ..."));
    }

    #[test]
    fn status_code_falls_back_by_class() {
        assert_eq!(status_of("451 4.4.1 timeout", false), "4.4.1");
        assert_eq!(status_of("connection refused", true), "5.0.0");
        assert_eq!(status_of("550 relay denied", true), "5.0.0");
    }
}
