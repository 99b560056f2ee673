//! What FETCH, SORT and THREAD need from a message, computed once from its
//! bytes and cached in the store (`Store::summaries`): the encoded ENVELOPE,
//! BODY and BODYSTRUCTURE items, and the sort and thread keys of RFC 5256.
//! A FETCH ENVELOPE over a large mailbox then reads the index, not every
//! message file, from the second time on.
//!
//! Pure: bytes in, bytes out. The cached form starts with a version byte;
//! a record of another version is recomputed.

use std::num::NonZeroU32;

use imap_codec::encode::Encoder;
use imap_codec::ResponseCodec;
use imap_types::core::{NString, Vec1};
use imap_types::envelope::Address;
use imap_types::fetch::MessageDataItem;
use imap_types::response::{Data, Response};
use serde::{Deserialize, Serialize};

use super::mime;
pub use crate::header::MAX_REFERENCES;
pub(crate) use crate::header::{base_subject, msg_ids};

const VERSION: u8 = 2;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// `ENVELOPE (...)` as it goes on the wire.
    #[serde(with = "bytes")]
    pub envelope: Vec<u8>,
    /// `BODY (...)`.
    #[serde(with = "bytes")]
    pub body: Vec<u8>,
    /// `BODYSTRUCTURE (...)`.
    #[serde(with = "bytes")]
    pub bodystructure: Vec<u8>,
    /// Date: header in Unix seconds (UTC), if it parses.
    pub sent: Option<i64>,
    /// Base subject (RFC 5256 2.1).
    pub subject: String,
    /// addr-mailbox of the first From/To/Cc address, lowercase (RFC 5256 3).
    pub from: String,
    pub to: String,
    pub cc: String,
    /// Display names (RFC 5957): the decoded name, else the address.
    pub display_from: String,
    pub display_to: String,
    /// Message-ID, without angle brackets; empty when missing.
    pub message_id: String,
    /// References (or In-Reply-To), oldest first, without brackets.
    pub references: Vec<String>,
    /// Did the Subject look like a reply or forward (RFC 5256 2.1)?
    pub is_reply: bool,
}

impl Summary {
    pub fn compute(msg: &[u8]) -> Summary {
        let (env, bs) = mime::envelope_and_structure(msg);
        let body = mime::without_extensions(bs.clone());
        let header = msg.get(..mime::header_end(msg)).unwrap_or_default();
        let fields = mime::fields(header);
        let field = |name: &[u8]| mime::first_field(&fields, name);
        let sent = field(b"Date")
            .map(|d| String::from_utf8_lossy(d).trim().to_string())
            .and_then(|d| mail_parser::DateTime::parse_rfc822(&d))
            .filter(|d| d.is_valid())
            .map(|d| d.to_timestamp());
        let raw_subject = field(b"Subject")
            .map(mime::decode_header_value)
            .unwrap_or_default();
        let (subject, is_reply) = base_subject(&raw_subject);
        let message_id = field(b"Message-ID")
            .map(|v| msg_ids(v).into_iter().next().unwrap_or_default())
            .unwrap_or_default();
        let mut references = field(b"References").map(msg_ids).unwrap_or_default();
        references.drain(..references.len().saturating_sub(MAX_REFERENCES));
        if references.is_empty() {
            references = field(b"In-Reply-To")
                .map(msg_ids)
                .unwrap_or_default()
                .into_iter()
                .take(1)
                .collect();
        }
        Summary {
            from: first_mailbox(&env.from),
            to: first_mailbox(&env.to),
            cc: first_mailbox(&env.cc),
            display_from: display(&env.from),
            display_to: display(&env.to),
            envelope: item_text(MessageDataItem::Envelope(env)),
            body: item_text(MessageDataItem::Body(body)),
            bodystructure: item_text(MessageDataItem::BodyStructure(bs)),
            sent,
            subject,
            message_id,
            references,
            is_reply,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        if let Ok(b) = postcard::to_allocvec(self) {
            out.extend(b);
        }
        out
    }

    pub fn from_bytes(b: &[u8]) -> Option<Summary> {
        match b.split_first() {
            Some((&VERSION, rest)) => postcard::from_bytes(rest).ok(),
            _ => None,
        }
    }

    /// A cached record's sort and thread keys (RFC 5256) only: the FETCH
    /// items (`envelope`, `body`, `bodystructure`) are left empty, skipped
    /// in place rather than copied. SORT and THREAD over a large mailbox
    /// decode one record per message and never send those items.
    pub fn keys_from_bytes(b: &[u8]) -> Option<Summary> {
        #[derive(Deserialize)]
        struct Keys<'a> {
            #[serde(borrow)]
            _envelope: &'a [u8],
            #[serde(borrow)]
            _body: &'a [u8],
            #[serde(borrow)]
            _bodystructure: &'a [u8],
            sent: Option<i64>,
            subject: String,
            from: String,
            to: String,
            cc: String,
            display_from: String,
            display_to: String,
            message_id: String,
            references: Vec<String>,
            is_reply: bool,
        }
        let (&VERSION, rest) = b.split_first()? else {
            return None;
        };
        let k: Keys<'_> = postcard::from_bytes(rest).ok()?;
        Some(Summary {
            envelope: Vec::new(),
            body: Vec::new(),
            bodystructure: Vec::new(),
            sent: k.sent,
            subject: k.subject,
            from: k.from,
            to: k.to,
            cc: k.cc,
            display_from: k.display_from,
            display_to: k.display_to,
            message_id: k.message_id,
            references: k.references,
            is_reply: k.is_reply,
        })
    }
}

/// The byte fields as one byte string rather than a sequence of `u8`.
/// postcard writes both the same way (length, then the bytes), so records
/// cached before keep reading; decoding is one copy instead of a visitor
/// call per byte, which made SORT and THREAD over a large mailbox spend
/// most of their time decoding ENVELOPE and BODYSTRUCTURE texts they do
/// not use.
mod bytes {
    use serde::de::{Deserializer, Error, SeqAccess, Visitor};
    use serde::Serializer;

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct Bytes;
        impl<'de> Visitor<'de> for Bytes {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = seq.next_element()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        d.deserialize_byte_buf(Bytes)
    }
}

/// One FETCH data item as its wire text (`NAME value`).
fn item_text(item: MessageDataItem<'static>) -> Vec<u8> {
    let Some(one) = NonZeroU32::new(1) else {
        return Vec::new();
    };
    let resp = Response::Data(Data::Fetch {
        seq: one,
        items: Vec1::from(item),
    });
    let bytes = ResponseCodec::default().encode(&resp).dump();
    let prefix = b"* 1 FETCH (";
    let suffix = b")\r\n";
    match bytes
        .strip_prefix(prefix)
        .and_then(|b| b.strip_suffix(suffix))
    {
        Some(b) => b.to_vec(),
        None => Vec::new(),
    }
}

fn nstr(n: &NString<'_>) -> Option<String> {
    n.0.as_ref()
        .map(|s| String::from_utf8_lossy(s.as_ref()).into_owned())
}

fn first_mailbox(addrs: &[Address<'_>]) -> String {
    addrs
        .first()
        .and_then(|a| nstr(&a.mailbox))
        .map(|m| m.to_lowercase())
        .unwrap_or_default()
}

/// RFC 5957 2: the display name (decoded), else the addr-spec.
fn display(addrs: &[Address<'_>]) -> String {
    let Some(a) = addrs.first() else {
        return String::new();
    };
    if let Some(name) = nstr(&a.name).filter(|n| !n.trim().is_empty()) {
        return mime::decode_header_value(name.as_bytes())
            .trim()
            .to_lowercase();
    }
    let mailbox = nstr(&a.mailbox).unwrap_or_default();
    let host = nstr(&a.host).unwrap_or_default();
    format!("{mailbox}@{host}").to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc5256_2_1_base_subject() {
        assert_eq!(base_subject("Re: hello").0, "hello");
        assert_eq!(base_subject("RE: Re: re: hello").0, "hello");
        assert_eq!(
            base_subject("Fwd: [list] Re: Hello  World (fwd)").0,
            "hello world"
        );
        assert_eq!(base_subject("[fwd: Re: x]").0, "x");
        assert_eq!(base_subject("Re [2]: y").0, "y");
        assert_eq!(base_subject("[list] only").0, "only");
        assert_eq!(base_subject("[blob]").0, "[blob]");
        assert_eq!(base_subject("Reply to all").0, "reply to all");
        assert_eq!(base_subject("").0, "");
        assert!(base_subject("Re: a").1);
        assert!(!base_subject("a").1);
    }

    #[test]
    fn summary_has_items_and_keys() {
        let m = b"From: \"Bob B\" <Bob@Example.net>\r\nTo: alice@example.com\r\nSubject: Re: Lunch\r\nDate: Tue, 14 Nov 2023 10:00:00 +0100\r\nMessage-ID: <a@b>\r\nReferences: <x@y> <z@w>\r\n\r\nhi\r\n";
        let s = Summary::compute(m);
        assert!(
            s.envelope.starts_with(b"ENVELOPE ("),
            "{:?}",
            String::from_utf8_lossy(&s.envelope)
        );
        assert!(s.body.starts_with(b"BODY ("));
        assert!(s.bodystructure.starts_with(b"BODYSTRUCTURE ("));
        assert_eq!(s.sent, Some(1_699_952_400));
        assert_eq!(s.subject, "lunch");
        assert_eq!(s.from, "bob");
        assert_eq!(s.to, "alice");
        assert_eq!(s.display_from, "bob b");
        assert_eq!(s.message_id, "a@b");
        assert_eq!(s.references, vec!["x@y", "z@w"]);
        assert_eq!(Summary::from_bytes(&s.to_bytes()), Some(s.clone()));
        assert_eq!(Summary::from_bytes(b"\x09junk"), None);
        let keys = Summary {
            envelope: Vec::new(),
            body: Vec::new(),
            bodystructure: Vec::new(),
            ..s.clone()
        };
        assert_eq!(Summary::keys_from_bytes(&s.to_bytes()), Some(keys));
        assert_eq!(Summary::keys_from_bytes(b"\x09junk"), None);
        assert_eq!(Summary::keys_from_bytes(&s.to_bytes()[..20]), None);
    }

    /// The byte fields are written as byte strings; a record written when
    /// they were sequences of `u8` (same postcard bytes) still reads.
    #[test]
    fn summary_record_format_is_unchanged_by_byte_string_fields() {
        #[derive(Serialize)]
        struct Old {
            envelope: Vec<u8>,
            body: Vec<u8>,
            bodystructure: Vec<u8>,
            sent: Option<i64>,
            subject: String,
            from: String,
            to: String,
            cc: String,
            display_from: String,
            display_to: String,
            message_id: String,
            references: Vec<String>,
            is_reply: bool,
        }
        let m = b"From: a@b\r\nSubject: Re: x\r\nMessage-ID: <i@d>\r\nReferences: <p@d>\r\n\r\nbody\r\n";
        let s = Summary::compute(m);
        let old = Old {
            envelope: s.envelope.clone(),
            body: s.body.clone(),
            bodystructure: s.bodystructure.clone(),
            sent: s.sent,
            subject: s.subject.clone(),
            from: s.from.clone(),
            to: s.to.clone(),
            cc: s.cc.clone(),
            display_from: s.display_from.clone(),
            display_to: s.display_to.clone(),
            message_id: s.message_id.clone(),
            references: s.references.clone(),
            is_reply: s.is_reply,
        };
        let mut old_bytes = vec![VERSION];
        old_bytes.extend(postcard::to_allocvec(&old).unwrap_or_default());
        assert_eq!(s.to_bytes(), old_bytes);
        assert_eq!(Summary::from_bytes(&old_bytes), Some(s));
    }

    #[test]
    fn rfc5256_3_references_keeps_the_last_max_references_ids() {
        let refs: String = (0..50_000).map(|i| format!(" <r{i}@x>")).collect();
        let m = format!("Subject: s\r\nMessage-ID: <me@x>\r\nReferences:{refs}\r\n\r\nx\r\n");
        let s = Summary::compute(m.as_bytes());
        assert_eq!(s.references.len(), MAX_REFERENCES);
        assert_eq!(s.references.last().map(String::as_str), Some("r49999@x"));
        assert_eq!(s.references.first().map(String::as_str), Some("r49936@x"));
    }

    #[test]
    fn rfc5256_2_1_base_subject_of_hostile_subjects_is_linear() {
        // Each of these is quadratic if every step copies the rest.
        let n = 100_000;
        assert_eq!(base_subject(&"Re: ".repeat(n)).0, "");
        assert_eq!(base_subject(&format!("{}x", "[a] Re: ".repeat(n))).0, "x");
        assert_eq!(base_subject(&format!("x{}", " (fwd)".repeat(n))).0, "x");
        let nested = format!("{}x{}", "[fwd: ".repeat(n), "]".repeat(n));
        assert_eq!(base_subject(&nested).0, "x");
        assert_eq!(base_subject(&"[".repeat(n)).0, "[".repeat(n));
    }
}
