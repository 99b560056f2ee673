//! Keeping secrets out of `Debug` output and logs, and client text safe
//! to put in a header field or a log line (`sanitize`).
//!
//! Protocol lines reach `Debug` through the framers' events (IMAP LOGIN /
//! AUTHENTICATE, POP3 PASS / AUTH / APOP, SMTP AUTH, SASL response
//! lines). Their `Debug` impls print `line()` instead of the bytes: a line
//! naming a secret-bearing command shows the command only, a bare token
//! (a SASL response is one base64 token) shows its length only.

use std::fmt;

/// Commands whose arguments carry a secret, as first word (POP3, SMTP) or
/// second word after an IMAP tag.
const SECRET_COMMANDS: &[&str] = &["PASS", "AUTH", "APOP", "LOGIN", "AUTHENTICATE"];
/// Longest part of a harmless line shown.
const SHOWN: usize = 120;

fn is_secret_command(word: &[u8]) -> bool {
    SECRET_COMMANDS
        .iter()
        .any(|c| word.eq_ignore_ascii_case(c.as_bytes()))
}

/// Client-supplied text made safe for a header field or a log line:
/// printable ASCII and UTF-8 kept, controls and the characters that would
/// break the comment or angle-bracket syntax replaced.
pub fn sanitize(s: &str, max: usize) -> String {
    s.chars()
        .take(max)
        .map(|c| match c {
            '(' | ')' | '<' | '>' | '\\' | ';' => '?',
            c if c.is_control() => '?',
            c => c,
        })
        .collect()
}

/// A protocol line (or framed command, literals included) made safe to
/// print.
pub fn line(raw: &[u8]) -> String {
    let text = raw.trim_ascii();
    let mut words = text.splitn(3, |b| *b == b' ');
    let w0 = words.next().unwrap_or_default();
    let Some(w1) = words.next() else {
        return format!("<{} bytes>", raw.len());
    };
    if is_secret_command(w0) {
        return format!(
            "{} <redacted, {} bytes>",
            String::from_utf8_lossy(w0),
            raw.len()
        );
    }
    if is_secret_command(w1) {
        return format!(
            "{} {} <redacted, {} bytes>",
            String::from_utf8_lossy(w0),
            String::from_utf8_lossy(w1),
            raw.len()
        );
    }
    let shown = &raw[..raw.len().min(SHOWN)];
    let mut s = String::from_utf8_lossy(shown).into_owned();
    if raw.len() > SHOWN {
        s.push_str(&format!("… ({} bytes)", raw.len()));
    }
    s
}

/// `Debug` for a byte line: `Redacted(&bytes)` prints `line(bytes)`.
pub struct Line<'a>(pub &'a [u8]);

impl fmt::Debug for Line<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&line(self.0), f)
    }
}

/// A secret in the configuration (the LDAP service password): read from
/// TOML like a string, printed by `Debug` as `<hidden>`.
#[derive(Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Secret {
        Secret(s.to_string())
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Secret {
        Secret(s)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str("<hidden>")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_commands_are_redacted() {
        for (raw, shown) in [
            ("PASS hunter2\r\n", "PASS <redacted"),
            ("pass hunter2", "pass <redacted"),
            ("AUTH PLAIN AGFsaWNlAGh1bnRlcjI=\r\n", "AUTH <redacted"),
            ("APOP alice 0123456789abcdef", "APOP <redacted"),
            ("a LOGIN alice hunter2\r\n", "a LOGIN <redacted"),
            ("a login alice {7}\r\nhunter2\r\n", "a login <redacted"),
            (
                "b AUTHENTICATE PLAIN AGFsaWNlAGh1bnRlcjI=",
                "b AUTHENTICATE <redacted",
            ),
            ("AGFsaWNlAGh1bnRlcjI=\r\n", "<22 bytes>"),
            ("hunter2", "<7 bytes>"),
        ] {
            let out = line(raw.as_bytes());
            assert!(out.starts_with(shown), "{raw:?} -> {out}");
            assert!(
                !out.contains("hunter2") && !out.contains("AGFsaWNl"),
                "{out}"
            );
        }
        assert_eq!(line(b"a SELECT INBOX"), "a SELECT INBOX");
        assert!(line(&[b'x'; 500]).starts_with("<500"));
        assert!(line(format!("a APPEND x {}", "y".repeat(500)).as_bytes()).ends_with("(511 bytes)"));
    }

    #[test]
    fn secret_debug_is_hidden() {
        let s = Secret::from("service-secret");
        assert_eq!(format!("{s:?}"), "<hidden>");
        assert_eq!(s.expose(), "service-secret");
        assert_eq!(format!("{:?}", Secret::default()), "\"\"");
    }

    /// Every protocol type on the SMTP side whose `Debug` could show a
    /// password: the AUTH event and the framed lines.
    #[test]
    fn smtp_auth_events_and_lines_hide_the_password() {
        use crate::smtp::codec::LineReader;
        use crate::smtp::session::Event;
        let e = Event::Authenticate {
            login: "alice".into(),
            password: "hunter2".into(),
        };
        let d = format!("{e:?}");
        assert!(d.contains("alice") && !d.contains("hunter2"), "{d}");
        let mut r = LineReader::new(1000);
        let input = b"AUTH PLAIN AGFsaWNlAGh1bnRlcjI=\r\nAGFsaWNlAGh1bnRlcjI=\r\nAGFs";
        let (n, line) = r.next_line(input);
        let d = format!("{line:?}");
        assert!(d.contains("AUTH") && !d.contains("AGFsaWNl"), "{d}");
        let (_, line) = r.next_line(&input[n..]);
        assert!(!format!("{line:?}").contains("AGFsaWNl"));
        r.next_line(b"AGFsaWNl");
        assert!(!format!("{r:?}").contains("AGFsaWNl"));
    }

    /// IMAP LOGIN and AUTHENTICATE as imap-codec decodes them: the
    /// password and the initial response are `imap_types::secret::Secret`
    /// (checked here at compile time), whose `Debug` redacts in release
    /// builds (what is deployed; imap-types shows the value only with
    /// debug_assertions). msgd never `Debug`-prints a command.
    #[test]
    fn imap_login_commands_hide_the_password() {
        use imap_codec::decode::Decoder;
        use imap_types::command::CommandBody;
        use imap_types::secret::Secret;
        let (_, cmd) = imap_codec::CommandCodec::default()
            .decode(b"a LOGIN alice hunter2\r\n")
            .unwrap();
        let CommandBody::Login { password, .. } = &cmd.body else {
            panic!("{:?}", cmd.body.name());
        };
        let _: &Secret<_> = password;
        let (_, cmd) = imap_codec::CommandCodec::default()
            .decode(b"a AUTHENTICATE PLAIN AGFsaWNlAGh1bnRlcjI=\r\n")
            .unwrap();
        let CommandBody::Authenticate {
            initial_response, ..
        } = &cmd.body
        else {
            panic!("{:?}", cmd.body.name());
        };
        let _: &Option<Secret<_>> = initial_response;
        let d = format!("{cmd:?}");
        if !cfg!(debug_assertions) {
            assert!(!d.contains("AGFsaWNl"), "{d}");
        }
    }

    /// The LDAP service password in the configuration.
    #[test]
    fn config_debug_hides_the_ldap_bind_password() {
        let mut c = crate::config::Config::default();
        c.directory.ldap.bind_password = "service-secret".into();
        let d = format!("{c:?}");
        assert!(!d.contains("service-secret"));
        assert!(d.contains("bind_password: <hidden>"));
    }
}
