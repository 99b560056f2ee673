//! SMTP replies (RFC 5321 4.2) with enhanced status codes (RFC 3463 /
//! RFC 2034). Texts are fixed strings: client-supplied data is never
//! echoed into a reply.

use std::borrow::Cow;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// Enhanced status code, e.g. "2.1.5".
    pub esc: &'static str,
    pub text: Cow<'static, str>,
}

impl Reply {
    pub const fn new(code: u16, esc: &'static str, text: &'static str) -> Reply {
        Reply {
            code,
            esc,
            text: Cow::Borrowed(text),
        }
    }

    pub fn owned(code: u16, esc: &'static str, text: String) -> Reply {
        Reply {
            code,
            esc,
            text: Cow::Owned(text),
        }
    }

    /// Appends the wire form (one line, CRLF) to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.code.to_string().as_bytes());
        out.push(b' ');
        if !self.esc.is_empty() {
            out.extend_from_slice(self.esc.as_bytes());
            out.push(b' ');
        }
        for &b in self.text.as_bytes() {
            // Replies are one line: never let a CR/LF through.
            out.push(if b == b'\r' || b == b'\n' { b' ' } else { b });
        }
        out.extend_from_slice(b"\r\n");
    }

    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    pub fn is_temporary(&self) -> bool {
        (400..500).contains(&self.code)
    }
}

/// Writes a multi-line reply (EHLO): `code-line` ... `code line`.
pub fn write_multiline(out: &mut Vec<u8>, code: u16, lines: &[String]) {
    for (i, line) in lines.iter().enumerate() {
        out.extend_from_slice(code.to_string().as_bytes());
        out.push(if i + 1 == lines.len() { b' ' } else { b'-' });
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

// 2xx (RFC 5321 4.2.2)
pub const OK: Reply = Reply::new(250, "2.0.0", "Ok");
pub const SENDER_OK: Reply = Reply::new(250, "2.1.0", "Sender ok");
pub const RCPT_OK: Reply = Reply::new(250, "2.1.5", "Recipient ok");
/// LMTP per-recipient success after DATA (RFC 2033 4.2).
pub const DELIVERED: Reply = Reply::new(250, "2.1.5", "Delivered");
pub const RESET_OK: Reply = Reply::new(250, "2.0.0", "Reset ok");
pub const BYE: Reply = Reply::new(221, "2.0.0", "Bye");
pub const HELP: Reply = Reply::new(
    214,
    "2.0.0",
    "Commands: EHLO HELO LHLO MAIL RCPT DATA BDAT RSET NOOP QUIT HELP VRFY STARTTLS",
);
/// VRFY is answered without revealing whether a user exists (RFC 5321 3.5.3).
pub const CANNOT_VRFY: Reply = Reply::new(
    252,
    "2.5.2",
    "Cannot VRFY user, but will accept message and attempt delivery",
);
/// RFC 4954 6.
pub const AUTH_OK: Reply = Reply::new(235, "2.7.0", "Authentication successful");
/// RFC 4954 4: an empty challenge, and the LOGIN prompts (base64 of
/// "Username:" and "Password:"). No enhanced code inside a 334.
pub const AUTH_CONTINUE_EMPTY: Reply = Reply::new(334, "", "");
pub const AUTH_USERNAME: Reply = Reply::new(334, "", "VXNlcm5hbWU6");
pub const AUTH_PASSWORD: Reply = Reply::new(334, "", "UGFzc3dvcmQ6");
pub const READY_TLS: Reply = Reply::new(220, "2.0.0", "Ready to start TLS");
pub const START_DATA: Reply = Reply::new(354, "", "End data with <CR><LF>.<CR><LF>");

// 4xx
pub const SHUTTING_DOWN: Reply =
    Reply::new(421, "4.3.2", "Service shutting down, closing connection");
pub const TOO_MANY_ERRORS: Reply = Reply::new(421, "4.7.0", "Too many errors, closing connection");
pub const TIMEOUT: Reply = Reply::new(421, "4.4.2", "Timeout, closing connection");
/// Directory unreachable: never a bounce (ARCHITECTURE.md).
pub const DIR_TEMPFAIL: Reply = Reply::new(
    451,
    "4.4.3",
    "Directory temporarily unavailable, try again later",
);
/// LMTP: the mailbox is being moved to another store (msgd user move).
pub const MAILBOX_MOVING: Reply = Reply::new(
    451,
    "4.2.1",
    "Mailbox is being moved to another store, try again later",
);
pub const LOCAL_ERROR: Reply =
    Reply::new(451, "4.3.0", "Local error in processing, try again later");
pub const NO_DELIVERY: Reply = Reply::new(
    451,
    "4.3.2",
    "Delivery temporarily unavailable, try again later",
);
pub const OVER_QUOTA: Reply = Reply::new(452, "4.2.2", "Mailbox full");
/// RFC 3463: mailbox full, as a permanent failure (store.over_quota = "permanent").
pub const OVER_QUOTA_PERMANENT: Reply = Reply::new(552, "5.2.2", "Mailbox full");
/// RFC 3463 5.1.6: the mailbox lives on another store.
pub const WRONG_STORE: Reply = Reply::new(550, "5.1.6", "Mailbox is not on this store");
/// RFC 5321 4.2.5: the message cannot be delivered (a permanent failure
/// of the target other than quota).
pub const TRANSACTION_FAILED: Reply = Reply::new(554, "5.3.0", "Delivery failed");
/// RFC 7489 10.3 / RFC 3463 5.7.1: the From domain's DMARC policy is
/// reject and the message failed it (issue 16, `smtp::auth_results`).
pub const DMARC_REJECTED: Reply = Reply::new(
    550,
    "5.7.1",
    "Rejected by the DMARC policy of the From domain",
);
pub const DISK_FULL: Reply = Reply::new(452, "4.3.1", "Insufficient system storage");
/// The process-wide budget of message bytes in memory is spent
/// (`limits.max_bytes_in_flight`): try again later.
pub const INSUFFICIENT_RESOURCES: Reply = Reply::new(
    452,
    "4.3.1",
    "Insufficient system resources, try again later",
);
/// RFC 4954 6.
pub const AUTH_TEMPFAIL: Reply = Reply::new(454, "4.7.0", "Temporary authentication failure");
pub const AUTH_BLOCKED: Reply = Reply::new(
    454,
    "4.7.0",
    "Too many authentication failures, try again later",
);
pub const TOO_MANY_AUTH_FAILURES: Reply = Reply::new(
    421,
    "4.7.0",
    "Too many authentication failures, closing connection",
);
/// RFC 5321 4.5.3.1.10: the client should retry the rest later.
pub const TOO_MANY_RCPTS: Reply = Reply::new(452, "4.5.3", "Too many recipients");

// 5xx
pub const UNKNOWN_COMMAND: Reply = Reply::new(500, "5.5.1", "Command unrecognized");
pub const LINE_TOO_LONG: Reply = Reply::new(500, "5.5.2", "Line too long");
pub const NOT_HTTP: Reply = Reply::new(500, "5.5.1", "This is a mail server, not a web server");
pub const HELO_IN_LMTP: Reply = Reply::new(500, "5.5.1", "This is an LMTP server: use LHLO");
pub const LHLO_IN_SMTP: Reply = Reply::new(500, "5.5.1", "This is an SMTP server: use EHLO");
pub const NOT_IMPLEMENTED: Reply = Reply::new(502, "5.5.1", "Command not implemented");
pub const NO_EXPN: Reply = Reply::new(502, "5.5.1", "EXPN not available");
pub const SEND_HELO_FIRST: Reply = Reply::new(503, "5.5.1", "Send EHLO first");
pub const SEND_LHLO_FIRST: Reply = Reply::new(503, "5.5.1", "Send LHLO first");
pub const NESTED_MAIL: Reply = Reply::new(503, "5.5.1", "Sender already specified");
/// After a 554 greeting (RFC 5321 3.1): only QUIT.
pub const REFUSED_AT_CONNECT: Reply =
    Reply::new(503, "5.7.1", "Service refused at connect; send QUIT");
pub const NEED_MAIL: Reply = Reply::new(503, "5.5.1", "Need MAIL command first");
pub const NEED_RCPT: Reply = Reply::new(503, "5.5.1", "Need RCPT command first");
pub const TLS_ACTIVE: Reply = Reply::new(503, "5.5.1", "TLS already active");
pub const NO_TLS: Reply = Reply::new(502, "5.5.1", "STARTTLS not available");
pub const DATA_AFTER_BDAT: Reply =
    Reply::new(503, "5.5.1", "DATA not allowed in a BDAT transaction");
pub const BINARY_NEEDS_BDAT: Reply = Reply::new(503, "5.6.1", "BODY=BINARYMIME requires BDAT");
pub const NO_VALID_RCPTS: Reply = Reply::new(554, "5.5.1", "No valid recipients");
pub const SYNTAX_PARAMS: Reply = Reply::new(501, "5.5.4", "Syntax error in parameters");
pub const BAD_SENDER: Reply = Reply::new(501, "5.1.7", "Bad sender address syntax");
pub const BAD_RCPT: Reply = Reply::new(501, "5.1.3", "Bad recipient address syntax");
pub const NEEDS_UTF8: Reply = Reply::new(553, "5.6.7", "Address requires SMTPUTF8");
pub const UNSUPPORTED_PARAM: Reply = Reply::new(555, "5.5.4", "Unsupported parameter");
pub const MESSAGE_TOO_BIG: Reply = Reply::new(
    552,
    "5.3.4",
    "Message size exceeds fixed maximum message size",
);
/// RFC 4954 6 / RFC 6409 4.3.
pub const AUTH_REQUIRED: Reply = Reply::new(530, "5.7.0", "Authentication required");
/// RFC 3207 4 / RFC 4954 4: plaintext AUTH needs TLS first.
pub const MUST_STARTTLS: Reply = Reply::new(530, "5.7.0", "Must issue a STARTTLS command first");
pub const AUTH_FAILED: Reply = Reply::new(535, "5.7.8", "Authentication credentials invalid");
pub const AUTH_MECHANISM: Reply = Reply::new(504, "5.5.4", "Unrecognized authentication type");
pub const AUTH_CANCELLED: Reply = Reply::new(501, "5.0.0", "Authentication cancelled");
pub const AUTH_BAD_RESPONSE: Reply =
    Reply::new(501, "5.5.2", "Cannot decode the authentication response");
pub const ALREADY_AUTHENTICATED: Reply = Reply::new(503, "5.5.1", "Already authenticated");
pub const AUTH_IN_TRANSACTION: Reply =
    Reply::new(503, "5.5.1", "AUTH not allowed during a mail transaction");
/// RFC 6409 6.1: the sender must be one of the user's addresses.
pub const SENDER_NOT_OWNED: Reply = Reply::new(
    553,
    "5.7.1",
    "Sender address rejected: not owned by the authenticated user",
);
pub const FROM_NOT_OWNED: Reply = Reply::new(
    553,
    "5.7.1",
    "From: header address rejected: not owned by the authenticated user",
);
/// RFC 5322 3.6: at most one From: and one Sender: field. Several would
/// let the user show one address to our check and another to the reader.
pub const DUPLICATE_ORIGINATOR: Reply = Reply::new(
    550,
    "5.6.0",
    "Message must not have more than one From: or Sender: field (RFC 5322 3.6)",
);
/// Submission: the header section must fit in `limits.spool_threshold`.
pub const HEADER_TOO_LARGE: Reply = Reply::new(552, "5.3.4", "Message header section too large");
pub const RELAY_DENIED: Reply = Reply::new(550, "5.7.1", "Relaying denied");
pub const NO_SUCH_USER: Reply = Reply::new(550, "5.1.1", "No such user here");
pub const DISABLED: Reply = Reply::new(550, "5.2.1", "Mailbox disabled");
/// RFC 3463 3.8 (X.7.1): the list takes mail only from some senders
/// (mgrpAllowedBroadcaster / mgrpAllowedDomain).
pub const NOT_ALLOWED_TO_POST: Reply =
    Reply::new(550, "5.7.1", "Sender not allowed to post to this list");
/// RFC 3463 3.3 (X.2.1): the list or the domain is inactive for now.
pub const SUSPENDED: Reply = Reply::new(
    450,
    "4.2.1",
    "Mailbox temporarily unavailable, try again later",
);
/// A list or forward reaches addresses outside our domains: there is no
/// outbound queue yet, so such recipients are refused rather than lost.
pub const OFFSITE: Reply = Reply::new(
    550,
    "5.7.1",
    "Forwarding to addresses outside this site is not configured",
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc5321_4_2_reply_wire_form() {
        let mut out = Vec::new();
        RCPT_OK.write(&mut out);
        START_DATA.write(&mut out);
        Reply::owned(250, "2.0.0", "a\r\nb".into()).write(&mut out);
        assert_eq!(
            out,
            b"250 2.1.5 Recipient ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 a  b\r\n"
        );
    }

    #[test]
    fn rfc5321_4_2_1_multiline() {
        let mut out = Vec::new();
        write_multiline(&mut out, 250, &["a".into(), "B".into(), "C 1".into()]);
        assert_eq!(out, b"250-a\r\n250-B\r\n250 C 1\r\n");
    }
}
