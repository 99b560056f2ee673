//! The stress client's side of the IMAP wire: the shared IMAP framer
//! (`crate::imap::framer`) cutting the server's byte stream into whole
//! responses (a line, plus any literals it announces and the rest of the
//! line after each), and a decoder that runs
//! each response through imap-codec's strict parser and keeps only what the
//! checks need, as owned values.
//!
//! A response imap-codec cannot parse is itself a finding (the server sent
//! something outside RFC 3501's grammar), so `decode` returns an error with
//! the raw text rather than guessing.

use imap_codec::decode::Decoder;
use imap_codec::{GreetingCodec, ResponseCodec};
use imap_types::core::NString;
use imap_types::extensions::uidplus::{UidElement, UidSet};
use imap_types::fetch::{MessageDataItem, Section};
use imap_types::flag::FlagFetch;
use imap_types::response::{Code, Data, GreetingKind, Response, Status, StatusKind};

/// Hard cap on one response (line + literals): a server bug must not make
/// the stress client allocate without bound.
pub const MAX_RESPONSE: usize = 64 << 20;

/// Cuts a byte stream into complete responses: the one IMAP framer
/// (`crate::imap::framer`) framing responses, with the stress client's cap.
pub struct Framer {
    inner: crate::imap::framer::Framer,
}

impl Default for Framer {
    fn default() -> Framer {
        let mut inner = crate::imap::framer::Framer::responses(MAX_RESPONSE, MAX_RESPONSE as u64);
        inner.set_max_command(MAX_RESPONSE as u64);
        Framer { inner }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum FrameError {
    /// A response (or a literal in it) beyond `MAX_RESPONSE`, or a literal
    /// length that is not a number64.
    TooLong(usize),
}

impl Framer {
    pub fn push(&mut self, data: &[u8]) {
        self.inner.push(data);
    }

    /// Bytes received but not yet returned as a response.
    pub fn pending(&self) -> usize {
        self.inner.buffered()
    }

    /// The next complete response (with its CRLF), if the buffer holds one.
    pub fn next(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        use crate::imap::framer::Event;
        loop {
            match self.inner.next() {
                None => return Ok(None),
                Some(Event::Response(r)) => return Ok(Some(r)),
                Some(Event::Refused { .. }) => return Err(FrameError::TooLong(MAX_RESPONSE)),
                // Not produced when framing responses.
                Some(Event::Command(_) | Event::Continue | Event::Line(_)) => {}
            }
        }
    }
}

/// A response code, reduced to what the checks use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RespCode {
    UidValidity(u32),
    UidNext(u32),
    HighestModSeq(u64),
    AppendUid {
        validity: u32,
        uid: u32,
    },
    CopyUid {
        validity: u32,
        src: Vec<u32>,
        dst: Vec<u32>,
    },
    Capability(Vec<String>),
    Other(String),
}

/// A status response (tagged or untagged OK/NO/BAD).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusLine {
    pub kind: Kind,
    pub code: Option<RespCode>,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ok,
    No,
    Bad,
}

/// One FETCH response's items that the checks look at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchData {
    pub seq: u32,
    pub uid: Option<u32>,
    pub flags: Option<Vec<String>>,
    pub size: Option<u32>,
    /// `BODY[]` (the whole message).
    pub body: Option<Vec<u8>>,
    /// `BODY[HEADER.FIELDS (...)]` or `BODY[HEADER]`.
    pub header: Option<Vec<u8>>,
}

/// A server response, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resp {
    Tagged {
        tag: String,
        status: StatusLine,
    },
    Untagged(StatusLine),
    Bye(String),
    Continue,
    Exists(u32),
    Recent(u32),
    Expunge(u32),
    Fetch(FetchData),
    Search(Vec<u32>),
    Capability(Vec<String>),
    /// FLAGS, LIST, STATUS, ID, NAMESPACE...: valid, not checked.
    Other(&'static str),
}

/// Decodes the greeting: Ok(capabilities, if the greeting carried them).
pub fn decode_greeting(raw: &[u8]) -> Result<(Kind, Option<Vec<String>>), String> {
    match GreetingCodec::default().decode(raw) {
        Ok((&[], g)) => {
            let kind = match g.kind {
                GreetingKind::Ok | GreetingKind::PreAuth => Kind::Ok,
                GreetingKind::Bye => Kind::No,
            };
            let caps = match g.code {
                Some(Code::Capability(c)) => {
                    Some(c.as_ref().iter().map(|c| c.to_string()).collect())
                }
                _ => None,
            };
            Ok((kind, caps))
        }
        _ => Err(format!("unparsable greeting: {}", show(raw))),
    }
}

/// Decodes one framed response. Err carries a printable form of the
/// response that did not parse.
pub fn decode(raw: &[u8]) -> Result<Resp, String> {
    let resp = match ResponseCodec::default().decode(raw) {
        Ok((&[], r)) => r,
        Ok((rest, _)) => {
            return Err(format!(
                "{} bytes left over after the response: {}",
                rest.len(),
                show(raw)
            ))
        }
        Err(e) => return Err(format!("unparsable response ({e:?}): {}", show(raw))),
    };
    Ok(match resp {
        Response::CommandContinuationRequest(_) => Resp::Continue,
        Response::Status(Status::Tagged(t)) => Resp::Tagged {
            tag: t.tag.as_ref().to_string(),
            status: status_line(t.body.kind, t.body.code, t.body.text.to_string()),
        },
        Response::Status(Status::Untagged(b)) => {
            Resp::Untagged(status_line(b.kind, b.code, b.text.to_string()))
        }
        Response::Status(Status::Bye(b)) => Resp::Bye(b.text.to_string()),
        Response::Data(d) => match d {
            Data::Exists(n) => Resp::Exists(n),
            Data::Recent(n) => Resp::Recent(n),
            Data::Expunge(n) => Resp::Expunge(n.get()),
            Data::Search(v, _) => Resp::Search(v.iter().map(|n| n.get()).collect()),
            Data::Capability(c) => {
                Resp::Capability(c.as_ref().iter().map(|c| c.to_string()).collect())
            }
            Data::Fetch { seq, items } => {
                let mut f = FetchData {
                    seq: seq.get(),
                    ..FetchData::default()
                };
                for item in items.into_iter() {
                    match item {
                        MessageDataItem::Uid(u) => f.uid = Some(u.get()),
                        MessageDataItem::Flags(fl) => {
                            f.flags = Some(
                                fl.iter()
                                    .map(|x| match x {
                                        FlagFetch::Flag(f) => f.to_string(),
                                        FlagFetch::Recent => "\\Recent".to_string(),
                                    })
                                    .collect(),
                            )
                        }
                        MessageDataItem::Rfc822Size(n) => f.size = Some(n),
                        MessageDataItem::BodyExt {
                            section,
                            origin: None,
                            data,
                        } => match section {
                            None => f.body = nstring(data),
                            Some(Section::Header(None)) | Some(Section::HeaderFields(None, _)) => {
                                f.header = nstring(data)
                            }
                            Some(_) => {}
                        },
                        MessageDataItem::Rfc822(data) => f.body = nstring(data),
                        _ => {}
                    }
                }
                Resp::Fetch(f)
            }
            Data::Flags(_) => Resp::Other("FLAGS"),
            Data::List { .. } => Resp::Other("LIST"),
            Data::Lsub { .. } => Resp::Other("LSUB"),
            Data::Status { .. } => Resp::Other("STATUS"),
            _ => Resp::Other("data"),
        },
    })
}

fn nstring(n: NString<'_>) -> Option<Vec<u8>> {
    n.0.map(|s| s.as_ref().to_vec())
}

fn status_line(kind: StatusKind, code: Option<Code<'_>>, text: String) -> StatusLine {
    StatusLine {
        kind: match kind {
            StatusKind::Ok => Kind::Ok,
            StatusKind::No => Kind::No,
            StatusKind::Bad => Kind::Bad,
        },
        code: code.map(resp_code),
        text,
    }
}

fn resp_code(c: Code<'_>) -> RespCode {
    match c {
        Code::UidValidity(v) => RespCode::UidValidity(v.get()),
        Code::UidNext(v) => RespCode::UidNext(v.get()),
        Code::HighestModSeq(v) => RespCode::HighestModSeq(v.get()),
        Code::AppendUid { uid_validity, uid } => RespCode::AppendUid {
            validity: uid_validity.get(),
            uid: uid.get(),
        },
        Code::CopyUid {
            uid_validity,
            source,
            destination,
        } => RespCode::CopyUid {
            validity: uid_validity.get(),
            src: expand(&source),
            dst: expand(&destination),
        },
        Code::Capability(c) => {
            RespCode::Capability(c.as_ref().iter().map(|c| c.to_string()).collect())
        }
        other => RespCode::Other(format!("{other:?}")),
    }
}

/// A uid-set in its written order, ranges ascending (RFC 4315 3: the
/// source and destination sets of COPYUID pair up in order).
pub fn expand(set: &UidSet) -> Vec<u32> {
    let mut out = Vec::new();
    for e in set.0.as_ref() {
        match *e {
            UidElement::Single(u) => out.push(u.get()),
            UidElement::Range(a, b) => {
                let (lo, hi) = (a.min(b).get(), a.max(b).get());
                // A hostile range must not blow up memory.
                if hi - lo > 1_000_000 {
                    out.push(lo);
                    out.push(hi);
                } else {
                    out.extend(lo..=hi);
                }
            }
        }
    }
    out
}

/// A printable, bounded form of a response for transcripts.
pub fn show(raw: &[u8]) -> String {
    const MAX: usize = 300;
    let mut s = String::new();
    for &b in raw.iter().take(MAX) {
        match b {
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    if raw.len() > MAX {
        s.push_str(&format!("...({} bytes)", raw.len()));
    }
    s
}

/// A sequence set for a command: "3", "3:7", "1,4,9:10" from sorted numbers.
pub fn seq_set(nums: &[u32]) -> String {
    let mut v: Vec<u32> = nums.to_vec();
    v.sort_unstable();
    v.dedup();
    let mut out = String::new();
    let mut i = 0;
    while let Some(&start) = v.get(i) {
        let mut end = start;
        while v.get(i + 1) == Some(&(end + 1)) {
            end += 1;
            i += 1;
        }
        if !out.is_empty() {
            out.push(',');
        }
        if end == start {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}:{end}"));
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_all(input: &[u8], split: usize) -> Vec<Vec<u8>> {
        let mut f = Framer::default();
        let mut out = Vec::new();
        let (a, b) = input.split_at(split);
        for part in [a, b] {
            f.push(part);
            while let Some(r) = f.next().unwrap() {
                out.push(r);
            }
        }
        assert_eq!(f.pending(), 0, "bytes left in the framer");
        out
    }

    #[test]
    fn rfc3501_4_3_literal_in_fetch_response_framed_at_every_split() {
        let input: &[u8] = b"* 1 FETCH (UID 7 BODY[] {12}\r\nab\r\n{3}\r\nxyz UID 9)\r\n* 2 EXISTS\r\nA1 OK done\r\n";
        for split in 0..=input.len() {
            let frames = frame_all(input, split);
            assert_eq!(frames.len(), 3, "split at {split}: {frames:?}");
            assert_eq!(
                frames[0],
                b"* 1 FETCH (UID 7 BODY[] {12}\r\nab\r\n{3}\r\nxyz UID 9)\r\n".to_vec()
            );
            assert_eq!(frames[2], b"A1 OK done\r\n".to_vec());
        }
    }

    #[test]
    fn rfc3501_7_4_2_fetch_decoded_with_uid_flags_body() {
        let raw = b"* 3 FETCH (UID 17 FLAGS (\\Seen $Kw) RFC822.SIZE 5 BODY[] {5}\r\nhello)\r\n";
        let Resp::Fetch(f) = decode(raw).unwrap() else {
            panic!("not a fetch");
        };
        assert_eq!(f.seq, 3);
        assert_eq!(f.uid, Some(17));
        assert_eq!(f.flags, Some(vec!["\\Seen".into(), "$Kw".into()]));
        assert_eq!(f.size, Some(5));
        assert_eq!(f.body.as_deref(), Some(&b"hello"[..]));
    }

    #[test]
    fn rfc3501_7_4_2_header_fields_section_is_the_header() {
        let raw = b"* 1 FETCH (UID 2 BODY[HEADER.FIELDS (MESSAGE-ID)] {21}\r\nMessage-ID: <a@b>\r\n\r\n)\r\n";
        let Resp::Fetch(f) = decode(raw).unwrap() else {
            panic!("not a fetch");
        };
        assert_eq!(f.header.as_deref(), Some(&b"Message-ID: <a@b>\r\n\r\n"[..]));
        assert_eq!(f.body, None);
    }

    #[test]
    fn rfc4315_appenduid_and_copyuid_codes() {
        let Resp::Tagged { tag, status } =
            decode(b"A2 OK [APPENDUID 38505 3955] APPEND completed\r\n").unwrap()
        else {
            panic!()
        };
        assert_eq!(tag, "A2");
        assert_eq!(
            status.code,
            Some(RespCode::AppendUid {
                validity: 38505,
                uid: 3955
            })
        );
        let Resp::Untagged(s) =
            decode(b"* OK [COPYUID 38505 304,319:320 3956:3958] Done\r\n").unwrap()
        else {
            panic!()
        };
        assert_eq!(
            s.code,
            Some(RespCode::CopyUid {
                validity: 38505,
                src: vec![304, 319, 320],
                dst: vec![3956, 3957, 3958]
            })
        );
    }

    #[test]
    fn rfc7162_highestmodseq_code() {
        let Resp::Untagged(s) = decode(b"* OK [HIGHESTMODSEQ 715194045007] Highest\r\n").unwrap()
        else {
            panic!()
        };
        assert_eq!(s.code, Some(RespCode::HighestModSeq(715194045007)));
    }

    #[test]
    fn rfc3501_7_3_exists_expunge_search_and_bye() {
        assert_eq!(decode(b"* 23 EXISTS\r\n").unwrap(), Resp::Exists(23));
        assert_eq!(decode(b"* 4 EXPUNGE\r\n").unwrap(), Resp::Expunge(4));
        assert_eq!(
            decode(b"* SEARCH 2 3 6\r\n").unwrap(),
            Resp::Search(vec![2, 3, 6])
        );
        assert_eq!(decode(b"* SEARCH\r\n").unwrap(), Resp::Search(vec![]));
        assert_eq!(decode(b"+ idling\r\n").unwrap(), Resp::Continue);
        assert!(matches!(decode(b"* BYE going\r\n").unwrap(), Resp::Bye(_)));
        assert!(
            decode(b"* 0 EXPUNGE\r\n").is_err(),
            "EXPUNGE 0 is not valid"
        );
        assert!(decode(b"* FOO bar\r\n").is_err());
    }

    #[test]
    fn rfc3501_7_1_greeting_capabilities() {
        let (k, caps) =
            decode_greeting(b"* OK [CAPABILITY IMAP4rev1 IDLE MOVE] ready\r\n").unwrap();
        assert_eq!(k, Kind::Ok);
        assert_eq!(caps.unwrap(), vec!["IMAP4REV1", "IDLE", "MOVE"]);
    }

    #[test]
    fn rfc3501_9_sequence_sets_compress_runs() {
        assert_eq!(seq_set(&[5, 1, 2, 3, 9, 10, 12]), "1:3,5,9:10,12");
        assert_eq!(seq_set(&[4]), "4");
        assert_eq!(seq_set(&[]), "");
    }

    #[test]
    fn framed_responses_do_not_keep_the_buffer_capacity() {
        let mut f = Framer::default();
        f.push(&b"* 1 EXISTS\r\n".repeat(10_000));
        let first = f.next().unwrap().unwrap();
        assert_eq!(first, b"* 1 EXISTS\r\n");
        assert!(first.capacity() < 1024, "{}", first.capacity());
        let mut n = 1;
        while let Some(r) = f.next().unwrap() {
            assert!(r.capacity() < 1024);
            n += 1;
        }
        assert_eq!(n, 10_000);
    }

    #[test]
    fn framer_rejects_oversized_literal() {
        let mut f = Framer::default();
        f.push(format!("* 1 FETCH (BODY[] {{{}}}\r\n", MAX_RESPONSE + 1).as_bytes());
        assert!(f.next().is_err());
    }
}
