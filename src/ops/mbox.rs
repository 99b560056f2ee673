//! Reading an mbox file as a stream of messages (`msgd import`).
//!
//! Every message starts with a `From sender date` line (the date, in
//! `asctime` form, is the internal date; the Date header, then now, when it
//! does not parse). Inside messages, lines beginning `From ` were quoted by
//! the writer: mboxrd quotes `>*From ` with one more `>` (undone for any
//! number of `>`), mboxo quotes only `From ` (only `>From ` is undone).
//! mutt's and Dovecot's metadata headers become flags and are dropped from
//! the message: `Status:` (`R` \Seen; `O` only means "not new"),
//! `X-Status:` (`A` \Answered, `F` \Flagged, `D` \Deleted, `T` \Draft) and
//! `X-Keywords:` (keywords).
//!
//! Streaming: one line at a time, memory bounded by the message limit. A
//! line or message over it is consumed without being kept and the message
//! refused; a file that does not start with a `From ` line is not an mbox.

use std::io::BufRead;

use crate::store::Flags;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// `>*From ` lines lose one `>`.
    Mboxrd,
    /// Only `>From ` lines lose their `>`.
    Mboxo,
}

/// One message read from the mbox.
#[derive(Debug)]
pub struct Message {
    /// CRLF line ends, metadata headers removed.
    pub data: Vec<u8>,
    pub flags: Flags,
    pub date: Option<i64>,
    /// 1-based number of the message in the file.
    pub number: u64,
}

/// A message that is not imported, and why.
#[derive(Debug)]
pub struct Refused {
    pub number: u64,
    pub reason: String,
}

pub struct Reader<R> {
    r: R,
    variant: Variant,
    max: usize,
    /// The `From ` line of the next message, once read.
    next_from: Option<Vec<u8>>,
    started: bool,
    count: u64,
    line: Vec<u8>,
}

impl<R: BufRead> Reader<R> {
    pub fn new(r: R, variant: Variant, max_message: usize) -> Reader<R> {
        Reader {
            r,
            variant,
            max: max_message.max(1024),
            next_from: None,
            started: false,
            count: 0,
            line: Vec::new(),
        }
    }

    /// Reads one line, keeping at most `max` bytes of it (the rest is
    /// consumed). Returns (bytes in the line, truncated); 0 at the end.
    fn read_line(&mut self) -> std::io::Result<(usize, bool)> {
        self.line.clear();
        let mut total = 0;
        let mut truncated = false;
        loop {
            let avail = self.r.fill_buf()?;
            if avail.is_empty() {
                break;
            }
            let (take, done) = match avail.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (avail.len(), false),
            };
            let room = self.max.saturating_sub(self.line.len());
            if take > room {
                truncated = true;
            }
            self.line.extend_from_slice(&avail[..take.min(room)]);
            self.r.consume(take);
            total += take;
            if done {
                break;
            }
        }
        Ok((total, truncated))
    }

    /// The next message: `Ok(None)` at the end, `Err` when the file is not
    /// an mbox or cannot be read (fatal), `Ok(Some(Err))` for one refused
    /// message (reading goes on).
    #[allow(clippy::type_complexity)]
    pub fn next_message(&mut self) -> anyhow::Result<Option<Result<Message, Refused>>> {
        if !self.started {
            self.started = true;
            let (n, _) = self.read_line()?;
            if n == 0 {
                return Ok(None);
            }
            if !self.line.starts_with(b"From ") {
                anyhow::bail!("not an mbox: the file does not start with a \"From \" line");
            }
            self.next_from = Some(self.line.clone());
        }
        let Some(from) = self.next_from.take() else {
            return Ok(None);
        };
        self.count += 1;
        let number = self.count;
        let mut body: Vec<u8> = Vec::new();
        let mut too_big = false;
        let mut nul = false;
        loop {
            let (n, truncated) = self.read_line()?;
            if n == 0 {
                break;
            }
            if self.line.starts_with(b"From ") {
                self.next_from = Some(self.line.clone());
                break;
            }
            if too_big {
                continue;
            }
            if truncated || body.len() + self.line.len() > self.max {
                too_big = true;
                body = Vec::new();
                continue;
            }
            nul |= self.line.contains(&0);
            let unquote = match self.variant {
                Variant::Mboxrd => {
                    let q = self.line.iter().take_while(|&&b| b == b'>').count();
                    q > 0 && self.line[q..].starts_with(b"From ")
                }
                Variant::Mboxo => self.line.starts_with(b">From "),
            };
            body.extend_from_slice(if unquote { &self.line[1..] } else { &self.line });
        }
        if too_big {
            return Ok(Some(Err(Refused {
                number,
                reason: format!("larger than the message limit ({} bytes)", self.max),
            })));
        }
        if nul {
            return Ok(Some(Err(Refused {
                number,
                reason: "contains NUL bytes (not a mail message)".into(),
            })));
        }
        // The blank line that separates messages is not part of the last one.
        if body.ends_with(b"\r\n\r\n") {
            body.truncate(body.len() - 2);
        } else if body.ends_with(b"\n\n") {
            body.truncate(body.len() - 1);
        }
        let (data, flags) = metadata_headers(&body);
        let data = super::maildir::to_crlf(&data);
        if data.is_empty() {
            return Ok(Some(Err(Refused {
                number,
                reason: "empty message".into(),
            })));
        }
        let date = from_line_date(&from).or_else(|| header_date(&data));
        Ok(Some(Ok(Message {
            data,
            flags,
            date,
            number,
        })))
    }
}

/// Removes `Status`, `X-Status` and `X-Keywords` (with their continuation
/// lines) from the header section and turns them into flags.
pub fn metadata_headers(msg: &[u8]) -> (Vec<u8>, Flags) {
    let mut flags = Flags::default();
    let mut out = Vec::with_capacity(msg.len());
    let mut in_header = true;
    let mut dropping = false;
    let mut rest = msg;
    while !rest.is_empty() {
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(rest.len(), |i| i + 1);
        let (line, tail) = rest.split_at(end);
        rest = tail;
        if !in_header {
            out.extend_from_slice(line);
            continue;
        }
        if line == b"\n" || line == b"\r\n" {
            in_header = false;
            out.extend_from_slice(line);
            continue;
        }
        if dropping && matches!(line.first(), Some(b' ' | b'\t')) {
            continue;
        }
        dropping = false;
        let text = String::from_utf8_lossy(line);
        let Some((name, value)) = text.split_once(':') else {
            out.extend_from_slice(line);
            continue;
        };
        let name = name.trim();
        let value = value.trim();
        if name.eq_ignore_ascii_case("Status") {
            if value.contains('R') {
                flags.bits |= Flags::SEEN;
            }
            dropping = true;
        } else if name.eq_ignore_ascii_case("X-Status") {
            for (c, bit) in [
                ('A', Flags::ANSWERED),
                ('F', Flags::FLAGGED),
                ('D', Flags::DELETED),
                ('T', Flags::DRAFT),
            ] {
                if value.contains(c) {
                    flags.bits |= bit;
                }
            }
            dropping = true;
        } else if name.eq_ignore_ascii_case("X-Keywords") {
            for k in value.split([' ', ',', '\t']) {
                if super::maildir::valid_keyword(k) {
                    flags.add_name(k);
                }
            }
            dropping = true;
        } else {
            out.extend_from_slice(line);
        }
    }
    (out, flags)
}

/// The date of a `From sender Wed Dec  2 08:19:40 2026` line (UTC).
pub fn from_line_date(line: &[u8]) -> Option<i64> {
    let text = String::from_utf8_lossy(line);
    let words: Vec<&str> = text.split_whitespace().skip(2).collect();
    // weekday month day time year [zone]
    if words.len() < 5 {
        return None;
    }
    let s = words[..5].join(" ");
    chrono::NaiveDateTime::parse_from_str(&s, "%a %b %d %H:%M:%S %Y")
        .ok()
        .map(|d| d.and_utc().timestamp())
}

fn header_date(data: &[u8]) -> Option<i64> {
    let end = data
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(data.len(), |i| i + 4);
    let m = mail_parser::MessageParser::default().parse_headers(&data[..end])?;
    m.date().map(|d| d.to_timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(text: &[u8], v: Variant, max: usize) -> Vec<Result<Message, Refused>> {
        let mut r = Reader::new(std::io::BufReader::new(text), v, max);
        let mut out = Vec::new();
        while let Some(m) = r.next_message().unwrap() {
            out.push(m);
        }
        out
    }

    #[test]
    fn mboxrd_from_lines_are_unquoted_one_level() {
        let t = b"From a@b Wed Dec  2 08:19:40 2026\nSubject: 1\n\n>From here\n>>From there\n\nFrom c@d Thu Dec  3 08:19:40 2026\nSubject: 2\n\nx\n";
        let v = all(t, Variant::Mboxrd, 1 << 20);
        assert_eq!(v.len(), 2);
        let m = v[0].as_ref().unwrap();
        assert_eq!(m.data, b"Subject: 1\r\n\r\nFrom here\r\n>From there\r\n");
        assert_eq!(m.date, Some(1_796_199_580));
        assert_eq!(v[1].as_ref().unwrap().data, b"Subject: 2\r\n\r\nx\r\n");
        let o = all(t, Variant::Mboxo, 1 << 20);
        assert_eq!(
            o[0].as_ref().unwrap().data,
            b"Subject: 1\r\n\r\nFrom here\r\n>>From there\r\n"
        );
    }

    #[test]
    fn mutt_status_headers_become_flags_and_are_removed() {
        let t = b"From x Wed Dec  2 08:19:40 2026\nSubject: s\nStatus: RO\nX-Status: AFT\nX-Keywords: work $Junk\n  more\n\nStatus: body line\n";
        let v = all(t, Variant::Mboxrd, 1 << 20);
        let m = v[0].as_ref().unwrap();
        assert_eq!(m.data, b"Subject: s\r\n\r\nStatus: body line\r\n");
        assert_eq!(
            m.flags,
            Flags::from_names(&[
                "\\Seen",
                "\\Answered",
                "\\Flagged",
                "\\Draft",
                "work",
                "$Junk"
            ])
        );
    }

    #[test]
    fn not_an_mbox_is_a_clear_error() {
        let mut r = Reader::new(
            std::io::BufReader::new(&b"\x7fELF\x00\x01binary"[..]),
            Variant::Mboxrd,
            4096,
        );
        let e = r.next_message().unwrap_err().to_string();
        assert!(e.contains("not an mbox"), "{e}");
        let mut r = Reader::new(std::io::BufReader::new(&b""[..]), Variant::Mboxrd, 4096);
        assert!(r.next_message().unwrap().is_none());
    }

    #[test]
    fn oversized_lines_and_messages_are_refused_and_skipped() {
        let mut t = b"From x Wed Dec  2 08:19:40 2026\nSubject: big\n\n".to_vec();
        t.extend(std::iter::repeat_n(b'a', 10_000));
        t.extend_from_slice(b"\nFrom y Wed Dec  2 08:19:40 2026\nSubject: ok\n\nbody\x00\nFrom z Wed Dec  2 08:19:40 2026\nSubject: fine\n\nz\n");
        let v = all(&t, Variant::Mboxrd, 4096);
        assert_eq!(v.len(), 3);
        assert!(v[0].as_ref().unwrap_err().reason.contains("limit"));
        assert!(v[1].as_ref().unwrap_err().reason.contains("NUL"));
        assert_eq!(v[2].as_ref().unwrap().data, b"Subject: fine\r\n\r\nz\r\n");
    }

    #[test]
    fn from_line_dates_parse_as_utc() {
        assert_eq!(
            from_line_date(b"From MAILER-DAEMON Thu Jan  1 00:00:10 1970\n"),
            Some(10)
        );
        assert_eq!(
            from_line_date(b"From x@y Sat Feb 29 12:00:00 2020 +0100\n"),
            Some(1_582_977_600)
        );
        assert_eq!(from_line_date(b"From x@y garbage\n"), None);
    }
}
