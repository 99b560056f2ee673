//! An Email's header and body properties from its stored bytes (RFC 8621
//! 4.1.2-4.1.4): header forms, the body structure, textBody / htmlBody /
//! attachments and body values.
//!
//! Pure and synchronous: bytes in, JSON out. The bytes are hostile: the
//! message goes through `imap::mime::parse`, which refuses (makes one
//! opaque part of) anything nested deeper than `mime::MAX_DEPTH`, and the
//! walk over the part tree here stops at the same depth; nested
//! message/rfc822 parts are leaves (RFC 8621 4.1.4), never opened.
//! Header values are read from the raw bytes (`mime::fields`), so `asRaw`
//! is exactly what was received.

use std::collections::HashMap;

use mail_parser::parsers::MessageStream;
use mail_parser::{Address, HeaderValue, Message, MessagePart, MimeHeaders, PartType};
use serde_json::{json, Map, Value};

use crate::imap::mime;

/// A parsed header property name: `header:{name}[:as{Form}][:all]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderProp {
    pub name: String,
    pub form: Form,
    pub all: bool,
}

/// The parsed forms of a header value (RFC 8621 4.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Raw,
    Text,
    Addresses,
    GroupedAddresses,
    MessageIds,
    Date,
    Urls,
}

impl HeaderProp {
    /// Parses `header:...`; None if it is not a valid header property or
    /// the form may not be used with that field (RFC 8621 4.1.2: e.g.
    /// `asDate` on `Subject`), which is `invalidArguments`.
    pub fn parse(prop: &str) -> Option<HeaderProp> {
        let rest = prop.strip_prefix("header:")?;
        let mut parts = rest.split(':');
        let name = parts.next()?;
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
            return None;
        }
        let mut form = Form::Raw;
        let mut all = false;
        for (i, p) in parts.enumerate() {
            match p {
                "all" if !all => all = true,
                _ if i == 0 && !all => {
                    form = match p {
                        "asRaw" => Form::Raw,
                        "asText" => Form::Text,
                        "asAddresses" => Form::Addresses,
                        "asGroupedAddresses" => Form::GroupedAddresses,
                        "asMessageIds" => Form::MessageIds,
                        "asDate" => Form::Date,
                        "asURLs" => Form::Urls,
                        _ => return None,
                    }
                }
                _ => return None,
            }
        }
        if !form_allowed(name, form) {
            return None;
        }
        Some(HeaderProp {
            name: name.to_string(),
            form,
            all,
        })
    }
}

/// Which forms a known field may be asked in (RFC 8621 4.1.2.x); unknown
/// fields take any form.
fn form_allowed(name: &str, form: Form) -> bool {
    let n = name.to_ascii_lowercase();
    let text = ["subject", "comments", "keywords", "list-id"];
    let addrs = [
        "from",
        "sender",
        "reply-to",
        "to",
        "cc",
        "bcc",
        "resent-from",
        "resent-sender",
        "resent-reply-to",
        "resent-to",
        "resent-cc",
        "resent-bcc",
    ];
    let ids = [
        "message-id",
        "in-reply-to",
        "references",
        "resent-message-id",
    ];
    let dates = ["date", "resent-date"];
    let urls = [
        "list-help",
        "list-unsubscribe",
        "list-subscribe",
        "list-post",
        "list-owner",
        "list-archive",
    ];
    let class = |l: &[&str]| l.contains(&n.as_str());
    let known = class(&text) || class(&addrs) || class(&ids) || class(&dates) || class(&urls);
    match form {
        Form::Raw => true,
        _ if !known => true,
        Form::Text => class(&text),
        Form::Addresses | Form::GroupedAddresses => class(&addrs),
        Form::MessageIds => class(&ids),
        Form::Date => class(&dates),
        Form::Urls => class(&urls),
    }
}

/// Raw values (after the colon, line end cut) of the fields named `name`
/// in a header block, in order.
pub fn raw_values<'a>(block: &'a [u8], name: &str) -> Vec<&'a [u8]> {
    mime::fields(block)
        .into_iter()
        .filter(|f| f.name.eq_ignore_ascii_case(name.as_bytes()))
        .map(|f| strip_line_end(f.value))
        .collect()
}

/// A raw header value without its line end.
pub fn strip_line_end(v: &[u8]) -> &[u8] {
    let v = v.strip_suffix(b"\n").unwrap_or(v);
    v.strip_suffix(b"\r").unwrap_or(v)
}

/// One raw value in the given form; Null where it does not parse.
pub fn form_value(raw: &[u8], form: Form) -> Value {
    let stream_input = || {
        let mut v = raw.to_vec();
        v.extend_from_slice(b"\r\n");
        v
    };
    match form {
        Form::Raw => Value::String(String::from_utf8_lossy(raw).into_owned()),
        Form::Text => Value::String(mime::decode_header_value(raw)),
        Form::Addresses | Form::GroupedAddresses => {
            let input = stream_input();
            let parsed = std::panic::catch_unwind(|| MessageStream::new(&input).parse_address())
                .unwrap_or(HeaderValue::Empty);
            let addr = match parsed {
                HeaderValue::Address(a) => Some(a),
                _ => None,
            };
            if form == Form::Addresses {
                Value::Array(addr.map(|a| addresses(&a)).unwrap_or_default())
            } else {
                Value::Array(addr.map(|a| grouped(&a)).unwrap_or_default())
            }
        }
        Form::MessageIds => {
            let input = stream_input();
            let ids = std::panic::catch_unwind(|| match MessageStream::new(&input).parse_id() {
                HeaderValue::Text(t) => vec![t.into_owned()],
                HeaderValue::TextList(l) => l.into_iter().map(|t| t.into_owned()).collect(),
                _ => Vec::new(),
            })
            .unwrap_or_default();
            if ids.is_empty() {
                Value::Null
            } else {
                json!(ids)
            }
        }
        Form::Date => {
            let input = stream_input();
            match std::panic::catch_unwind(|| MessageStream::new(&input).parse_date()) {
                Ok(HeaderValue::DateTime(d)) if d.is_valid() => Value::String(d.to_rfc3339()),
                _ => Value::Null,
            }
        }
        Form::Urls => {
            // RFC 2369: a list of <URL>s, optionally with comments.
            let text = String::from_utf8_lossy(raw);
            let mut urls = Vec::new();
            let mut rest = text.as_ref();
            while let Some(start) = rest.find('<') {
                let after = &rest[start + 1..];
                let Some(end) = after.find('>') else { break };
                let url: String = after[..end]
                    .chars()
                    .filter(|c| !c.is_whitespace())
                    .collect();
                urls.push(Value::String(url));
                rest = &after[end + 1..];
            }
            if urls.is_empty() {
                Value::Null
            } else {
                Value::Array(urls)
            }
        }
    }
}

fn addr_json(a: &mail_parser::Addr<'_>) -> Value {
    json!({
        "name": a.name.as_deref().filter(|n| !n.is_empty()),
        "email": a.address.as_deref().unwrap_or_default(),
    })
}

fn addresses(a: &Address<'_>) -> Vec<Value> {
    match a {
        Address::List(l) => l.iter().map(addr_json).collect(),
        Address::Group(g) => g
            .iter()
            .flat_map(|g| g.addresses.iter().map(addr_json))
            .collect(),
    }
}

fn grouped(a: &Address<'_>) -> Vec<Value> {
    match a {
        Address::List(l) => {
            vec![json!({"name": null, "addresses": l.iter().map(addr_json).collect::<Vec<_>>()})]
        }
        Address::Group(g) => g
            .iter()
            .map(|g| {
                json!({
                    "name": g.name.as_deref(),
                    "addresses": g.addresses.iter().map(addr_json).collect::<Vec<_>>(),
                })
            })
            .collect(),
    }
}

/// The value of a header property over a header block: the last field's
/// value (Null when absent), or with `:all` every field's (RFC 8621 4.1.3).
pub fn header_prop(block: &[u8], prop: &HeaderProp) -> Value {
    let raws = raw_values(block, &prop.name);
    if prop.all {
        Value::Array(raws.iter().map(|r| form_value(r, prop.form)).collect())
    } else {
        raws.last()
            .map(|r| form_value(r, prop.form))
            .unwrap_or(Value::Null)
    }
}

/// The convenience header properties of an Email (RFC 8621 4.1.3) as
/// header properties.
pub fn convenience(prop: &str) -> Option<HeaderProp> {
    let (name, form) = match prop {
        "messageId" => ("Message-ID", Form::MessageIds),
        "inReplyTo" => ("In-Reply-To", Form::MessageIds),
        "references" => ("References", Form::MessageIds),
        "sender" => ("Sender", Form::Addresses),
        "from" => ("From", Form::Addresses),
        "to" => ("To", Form::Addresses),
        "cc" => ("Cc", Form::Addresses),
        "bcc" => ("Bcc", Form::Addresses),
        "replyTo" => ("Reply-To", Form::Addresses),
        "subject" => ("Subject", Form::Text),
        "sentAt" => ("Date", Form::Date),
        _ => return None,
    };
    Some(HeaderProp {
        name: name.into(),
        form,
        all: false,
    })
}

/// What the caller wants of the body (Email/get arguments).
#[derive(Debug, Clone, Default)]
pub struct BodyOptions {
    /// bodyProperties (None: the RFC's default list).
    pub properties: Option<Vec<String>>,
    pub fetch_text: bool,
    pub fetch_html: bool,
    pub fetch_all: bool,
    /// 0: no limit.
    pub max_bytes: usize,
}

/// The default bodyProperties (RFC 8621 4.2).
pub const DEFAULT_BODY_PROPERTIES: [&str; 10] = [
    "partId",
    "blobId",
    "size",
    "name",
    "type",
    "charset",
    "disposition",
    "cid",
    "language",
    "location",
];

/// Is `p` a valid body part property?
pub fn is_body_property(p: &str) -> bool {
    DEFAULT_BODY_PROPERTIES.contains(&p)
        || matches!(p, "headers" | "subParts")
        || HeaderProp::parse(p).is_some()
}

/// A message parsed for rendering: the part tree with IMAP section paths
/// as partIds (`1`, `1.2`, ...; the same numbers IMAP FETCH BODY[...]
/// uses, so a part's blob is the IMAP section's decoded content).
pub struct Parsed<'a> {
    raw: &'a [u8],
    msg: Message<'a>,
    /// Part index in `msg.parts` -> section path.
    paths: HashMap<u32, String>,
}

impl<'a> Parsed<'a> {
    pub fn new(raw: &'a [u8]) -> Parsed<'a> {
        let (msg, _opaque) = mime::parse(raw);
        let mut paths = HashMap::new();
        // Iterative walk: (part index, path, depth).
        let mut stack: Vec<(u32, String, usize)> = vec![(0, String::new(), 0)];
        while let Some((i, path, depth)) = stack.pop() {
            let Some(part) = msg.parts.get(i as usize) else {
                continue;
            };
            match &part.body {
                PartType::Multipart(children) if depth < mime::MAX_DEPTH => {
                    for (n, &c) in children.iter().enumerate().rev() {
                        let p = if path.is_empty() {
                            (n + 1).to_string()
                        } else {
                            format!("{path}.{}", n + 1)
                        };
                        stack.push((c, p, depth + 1));
                    }
                    paths.insert(i, path);
                }
                _ => {
                    let p = if path.is_empty() { "1".into() } else { path };
                    paths.insert(i, p);
                }
            }
        }
        Parsed { raw, msg, paths }
    }

    /// The top-level header block.
    pub fn header(&self) -> &'a [u8] {
        &self.raw[..mime::header_end(self.raw)]
    }

    fn part_header(&self, part: &MessagePart<'_>) -> &[u8] {
        let start = (part.offset_header as usize).min(self.raw.len());
        let end = (part.offset_body as usize).clamp(start, self.raw.len());
        &self.raw[start..end]
    }

    /// Is `i` a leaf (not a multipart that was opened)?
    fn is_leaf(&self, i: u32) -> bool {
        let path = self.paths.get(&i);
        match self.msg.parts.get(i as usize).map(|p| &p.body) {
            Some(PartType::Multipart(c)) => {
                // Opened only if its children got paths.
                !c.iter().any(|c| self.paths.contains_key(c)) && path.is_some()
            }
            _ => true,
        }
    }

    fn part_type(part: &MessagePart<'_>) -> String {
        match part.content_type() {
            Some(ct) => match &ct.c_subtype {
                Some(s) => format!("{}/{}", ct.c_type, s).to_ascii_lowercase(),
                None => ct.c_type.to_ascii_lowercase(),
            },
            None => match part.body {
                PartType::Message(_) => "message/rfc822".into(),
                PartType::Multipart(_) => "multipart/mixed".into(),
                _ => "text/plain".into(),
            },
        }
    }

    fn part_size(&self, part: &MessagePart<'_>) -> usize {
        match &part.body {
            PartType::Text(t) | PartType::Html(t) => t.len(),
            PartType::Binary(b) | PartType::InlineBinary(b) => b.len(),
            _ => (part.offset_end.saturating_sub(part.offset_body)) as usize,
        }
    }

    /// One EmailBodyPart (RFC 8621 4.1.4) with the asked properties;
    /// `subParts` only for bodyStructure. `blob` makes a part's blobId from
    /// its partId.
    fn body_part(
        &self,
        i: u32,
        props: &[String],
        blob: &dyn Fn(&str) -> String,
        with_sub: bool,
        depth: usize,
    ) -> Value {
        let Some(part) = self.msg.parts.get(i as usize) else {
            return Value::Null;
        };
        let leaf = self.is_leaf(i);
        let path = self.paths.get(&i).cloned().unwrap_or_default();
        let ty = Self::part_type(part);
        let mut out = Map::new();
        for p in props {
            let v = match p.as_str() {
                "partId" => {
                    if leaf {
                        Value::String(path.clone())
                    } else {
                        Value::Null
                    }
                }
                "blobId" => {
                    if leaf {
                        Value::String(blob(&path))
                    } else {
                        Value::Null
                    }
                }
                "size" => json!(if leaf { self.part_size(part) } else { 0 }),
                "headers" => Value::Array(
                    mime::fields(self.part_header(part))
                        .iter()
                        .map(|f| {
                            json!({
                                "name": String::from_utf8_lossy(f.name),
                                "value": String::from_utf8_lossy(strip_line_end(f.value)),
                            })
                        })
                        .collect(),
                ),
                "name" => json!(part.attachment_name()),
                "type" => Value::String(ty.clone()),
                "charset" => {
                    if ty.starts_with("text/") {
                        let cs = part
                            .content_type()
                            .and_then(|ct| ct.attribute("charset"))
                            .unwrap_or("us-ascii");
                        Value::String(cs.to_string())
                    } else {
                        Value::Null
                    }
                }
                "disposition" => json!(part
                    .content_disposition()
                    .map(|d| d.c_type.to_ascii_lowercase())),
                "cid" => json!(part.content_id()),
                "language" => match part.content_language() {
                    HeaderValue::Text(t) => json!([t]),
                    HeaderValue::TextList(l) => json!(l),
                    _ => Value::Null,
                },
                "location" => json!(part.content_location()),
                "subParts" => {
                    if !with_sub {
                        continue;
                    }
                    match &part.body {
                        PartType::Multipart(children) if !leaf && depth < mime::MAX_DEPTH => {
                            Value::Array(
                                children
                                    .iter()
                                    .map(|&c| self.body_part(c, props, blob, true, depth + 1))
                                    .collect(),
                            )
                        }
                        _ => Value::Null,
                    }
                }
                other => match HeaderProp::parse(other) {
                    Some(h) => header_prop(self.part_header(part), &h),
                    None => continue,
                },
            };
            out.insert(p.clone(), v);
        }
        Value::Object(out)
    }

    /// bodyStructure.
    pub fn body_structure(&self, props: &[String], blob: &dyn Fn(&str) -> String) -> Value {
        let mut props = props.to_vec();
        if !props.iter().any(|p| p == "subParts") {
            props.push("subParts".into());
        }
        self.body_part(0, &props, blob, true, 0)
    }

    fn list(&self, ids: &[u32], props: &[String], blob: &dyn Fn(&str) -> String) -> Value {
        Value::Array(
            ids.iter()
                .filter(|i| self.paths.contains_key(i))
                .map(|&i| self.body_part(i, props, blob, false, 0))
                .collect(),
        )
    }

    pub fn text_body(&self, props: &[String], blob: &dyn Fn(&str) -> String) -> Value {
        self.list(&self.msg.text_body, props, blob)
    }

    pub fn html_body(&self, props: &[String], blob: &dyn Fn(&str) -> String) -> Value {
        self.list(&self.msg.html_body, props, blob)
    }

    pub fn attachments(&self, props: &[String], blob: &dyn Fn(&str) -> String) -> Value {
        self.list(&self.msg.attachments, props, blob)
    }

    pub fn has_attachment(&self) -> bool {
        self.msg.attachments.iter().any(|&i| {
            self.msg.parts.get(i as usize).is_some_and(|p| {
                !(p.content_disposition()
                    .is_some_and(|d| d.c_type.eq_ignore_ascii_case("inline"))
                    && p.content_id().is_some())
            })
        })
    }

    /// The text of a text/* leaf part (None for other parts).
    fn text_of(&self, i: u32) -> Option<(&str, bool)> {
        let part = self.msg.parts.get(i as usize)?;
        match &part.body {
            PartType::Text(t) | PartType::Html(t) => Some((t.as_ref(), part.is_encoding_problem)),
            _ => None,
        }
    }

    /// The first text/html body part's text, for the webmail's
    /// `msgd:sanitizedHtml` (`crate::jmap::sanitize`); None without one.
    pub fn first_html(&self) -> Option<&str> {
        self.msg
            .html_body
            .iter()
            .find_map(|&i| match &self.msg.parts.get(i as usize)?.body {
                PartType::Html(h) => Some(h.as_ref()),
                _ => None,
            })
    }

    /// bodyValues for the parts `opts` asks for (RFC 8621 4.2).
    pub fn body_values(&self, opts: &BodyOptions) -> Value {
        let mut ids: Vec<u32> = Vec::new();
        if opts.fetch_all {
            ids.extend(self.paths.keys().copied());
            ids.sort_unstable();
        } else {
            if opts.fetch_text {
                ids.extend(&self.msg.text_body);
            }
            if opts.fetch_html {
                ids.extend(&self.msg.html_body);
            }
        }
        let mut out = Map::new();
        for i in ids {
            let Some(path) = self.paths.get(&i) else {
                continue;
            };
            if out.contains_key(path) {
                continue;
            }
            let Some((text, problem)) = self.text_of(i) else {
                continue;
            };
            let (value, truncated) = truncate(text, opts.max_bytes);
            out.insert(
                path.clone(),
                json!({"value": value, "isEncodingProblem": problem, "isTruncated": truncated}),
            );
        }
        Value::Object(out)
    }

    /// All body text (the text parts, else the HTML ones as text), for
    /// previews and snippets, at most `max` bytes.
    pub fn plain_text(&self, max: usize) -> String {
        let mut out = String::new();
        let ids = if self.msg.text_body.is_empty() {
            &self.msg.html_body
        } else {
            &self.msg.text_body
        };
        for &i in ids {
            if let Some(part) = self.msg.parts.get(i as usize) {
                match &part.body {
                    PartType::Text(t) => out.push_str(t),
                    PartType::Html(h) => {
                        out.push_str(&mail_parser::decoders::html::html_to_text(h))
                    }
                    _ => {}
                }
                out.push('\n');
            }
            if out.len() >= max {
                break;
            }
        }
        truncate(&out, max).0.to_string()
    }
}

/// `s` cut to at most `max` bytes on a character boundary (0: no limit).
pub fn truncate(s: &str, max: usize) -> (&str, bool) {
    if max == 0 || s.len() <= max {
        return (s, false);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    (&s[..end], true)
}

#[cfg(test)]
mod tests;
