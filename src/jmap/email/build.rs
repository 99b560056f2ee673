//! A message from a JMAP Email creation object (RFC 8621 4.6, Email/set
//! create), built with mail-builder.
//!
//! Bounded: a bodyStructure is at most `MAX_BODY_DEPTH` levels and
//! `MAX_BODY_PARTS` parts; the blobs it names are fetched by the caller
//! beforehand (`blob_ids`), so building is pure.

use std::borrow::Cow;
use std::collections::HashMap;

use mail_builder::headers::address::Address;
use mail_builder::headers::content_type::ContentType;
use mail_builder::headers::date::Date;
use mail_builder::headers::message_id::MessageId;
use mail_builder::headers::raw::Raw;
use mail_builder::headers::text::Text;
use mail_builder::headers::url::URL;
use mail_builder::mime::{BodyPart, MimePart};
use mail_builder::MessageBuilder;
use serde_json::{Map, Value};

use super::render::{Form, HeaderProp};

pub const MAX_BODY_DEPTH: usize = 16;
pub const MAX_BODY_PARTS: usize = 256;

/// Why an Email cannot be created: a SetError type and a description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildError {
    pub kind: &'static str,
    pub description: String,
    pub properties: Vec<String>,
}

fn invalid(prop: &str, why: &str) -> BuildError {
    BuildError {
        kind: "invalidProperties",
        description: why.to_string(),
        properties: vec![prop.to_string()],
    }
}

/// Properties a creation may not set (server-set).
const SERVER_SET: &[&str] = &[
    "id",
    "blobId",
    "threadId",
    "size",
    "hasAttachment",
    "preview",
];

/// The blobIds a creation object refers to (to be fetched first).
pub fn blob_ids(obj: &Map<String, Value>) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack: Vec<&Value> = Vec::new();
    for k in ["bodyStructure", "textBody", "htmlBody", "attachments"] {
        if let Some(v) = obj.get(k) {
            stack.push(v);
        }
    }
    let mut budget = MAX_BODY_PARTS * 2;
    while let Some(v) = stack.pop() {
        budget = budget.saturating_sub(1);
        if budget == 0 {
            break;
        }
        match v {
            Value::Array(a) => stack.extend(a.iter()),
            Value::Object(o) => {
                if let Some(b) = o.get("blobId").and_then(Value::as_str) {
                    out.push(b.to_string());
                }
                if let Some(s) = o.get("subParts") {
                    stack.push(s);
                }
            }
            _ => {}
        }
    }
    out.sort();
    out.dedup();
    out
}

fn addresses(prop: &str, v: &Value) -> Result<Address<'static>, BuildError> {
    let list = v
        .as_array()
        .ok_or_else(|| invalid(prop, "must be a list of EmailAddress"))?;
    let mut out = Vec::new();
    for a in list {
        let email = a
            .get("email")
            .and_then(Value::as_str)
            .filter(|e| !e.is_empty() && !e.contains(['\r', '\n', '<', '>']))
            .ok_or_else(|| invalid(prop, "an address needs an email"))?;
        let name = a
            .get("name")
            .and_then(Value::as_str)
            .map(|n| n.replace(['\r', '\n'], " "));
        out.push(Address::new_address(name, email.to_string()));
    }
    Ok(Address::new_list(out))
}

fn string_list(prop: &str, v: &Value) -> Result<Vec<String>, BuildError> {
    let list = v
        .as_array()
        .ok_or_else(|| invalid(prop, "must be a list of strings"))?;
    list.iter()
        .map(|s| {
            s.as_str()
                .filter(|s| !s.is_empty() && !s.contains(['\r', '\n', '<', '>', ' ']))
                .map(str::to_string)
                .ok_or_else(|| invalid(prop, "bad message id"))
        })
        .collect()
}

fn no_crlf(prop: &str, v: &Value) -> Result<String, BuildError> {
    v.as_str()
        .map(|s| s.replace(['\r', '\n'], " "))
        .ok_or_else(|| invalid(prop, "must be a string"))
}

/// Builds the message. `blobs` holds the bytes of every blob the object
/// names; `hostname` makes the Message-ID when none is given.
pub fn build(
    obj: &Map<String, Value>,
    blobs: &HashMap<String, Vec<u8>>,
    hostname: &str,
) -> Result<Vec<u8>, BuildError> {
    for k in SERVER_SET {
        if obj.contains_key(*k) {
            return Err(invalid(k, "set by the server"));
        }
    }
    let mut b = MessageBuilder::new();
    let mut has_message_id = false;
    let mut has_date = false;
    for (k, v) in obj {
        if v.is_null() {
            continue;
        }
        b = match k.as_str() {
            "mailboxIds" | "keywords" | "receivedAt" | "bodyValues" | "bodyStructure"
            | "textBody" | "htmlBody" | "attachments" => continue,
            "from" => b.from(addresses(k, v)?),
            "to" => b.to(addresses(k, v)?),
            "cc" => b.cc(addresses(k, v)?),
            "bcc" => b.bcc(addresses(k, v)?),
            "replyTo" => b.reply_to(addresses(k, v)?),
            "sender" => b.sender(addresses(k, v)?),
            "subject" => b.subject(Text::new(no_crlf(k, v)?)),
            "sentAt" => {
                let d = v
                    .as_str()
                    .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                    .ok_or_else(|| invalid(k, "must be a Date"))?;
                has_date = true;
                b.date(Date::new(d.timestamp()))
            }
            "messageId" => {
                has_message_id = true;
                b.message_id(MessageId::new_list(string_list(k, v)?.into_iter()))
            }
            "inReplyTo" => b.in_reply_to(MessageId::new_list(string_list(k, v)?.into_iter())),
            "references" => b.references(MessageId::new_list(string_list(k, v)?.into_iter())),
            "headers" => {
                let list = v.as_array().ok_or_else(|| invalid(k, "must be a list"))?;
                for h in list {
                    let name = h.get("name").and_then(Value::as_str).unwrap_or_default();
                    let value = h.get("value").and_then(Value::as_str).unwrap_or_default();
                    if !valid_field_name(name) || is_content_header(name) {
                        return Err(invalid(k, "bad header"));
                    }
                    b = b.header(name.to_string(), Raw::new(sanitize_raw(value)));
                }
                b
            }
            other => match HeaderProp::parse(other) {
                Some(h) if !h.all && !is_content_header(&h.name) => {
                    if h.name.eq_ignore_ascii_case("Message-ID") {
                        has_message_id = true;
                    }
                    if h.name.eq_ignore_ascii_case("Date") {
                        has_date = true;
                    }
                    let name = h.name.clone();
                    match h.form {
                        Form::Raw => b.header(name, Raw::new(sanitize_raw(&no_crlf(k, v)?))),
                        Form::Text => b.header(name, Text::new(no_crlf(k, v)?)),
                        Form::Addresses => b.header(name, addresses(k, v)?),
                        Form::MessageIds => {
                            b.header(name, MessageId::new_list(string_list(k, v)?.into_iter()))
                        }
                        Form::Date => {
                            let d = v
                                .as_str()
                                .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                                .ok_or_else(|| invalid(k, "must be a Date"))?;
                            b.header(name, Date::new(d.timestamp()))
                        }
                        Form::Urls => b.header(name, URL::new_list(string_list(k, v)?.into_iter())),
                        Form::GroupedAddresses => {
                            return Err(invalid(k, "form not supported in create"))
                        }
                    }
                }
                _ => return Err(invalid(k, "unknown or not settable property")),
            },
        };
    }
    if !has_message_id {
        let id = format!(
            "{:016x}{:016x}@{}",
            rand::random::<u64>(),
            rand::random::<u64>(),
            hostname
        );
        b = b.message_id(MessageId::new(id));
    }
    if !has_date {
        b = b.date(Date::now());
    }
    let values = obj.get("bodyValues").and_then(Value::as_object);
    let empty = Map::new();
    let values = values.unwrap_or(&empty);
    let mut parts = 0;
    let body = if let Some(bs) = obj.get("bodyStructure").filter(|v| !v.is_null()) {
        for k in ["textBody", "htmlBody", "attachments"] {
            if obj.get(k).is_some_and(|v| !v.is_null()) {
                return Err(invalid(k, "not with bodyStructure"));
            }
        }
        part(bs, values, blobs, 0, &mut parts)?
    } else {
        let one = |k: &str, want: &str| -> Result<Option<MimePart<'static>>, BuildError> {
            match obj.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Array(a)) if a.len() == 1 => {
                    let mut n = 0;
                    let p = part(&a[0], values, blobs, MAX_BODY_DEPTH, &mut n)?;
                    let ty = a[0].get("type").and_then(Value::as_str).unwrap_or(want);
                    if !ty.eq_ignore_ascii_case(want) {
                        return Err(invalid(k, "wrong type"));
                    }
                    Ok(Some(p))
                }
                Some(Value::Array(a)) if a.is_empty() => Ok(None),
                _ => Err(invalid(k, "must hold one part")),
            }
        };
        let text = one("textBody", "text/plain")?;
        let html = one("htmlBody", "text/html")?;
        let mut atts = Vec::new();
        if let Some(a) = obj.get("attachments").filter(|v| !v.is_null()) {
            let list = a
                .as_array()
                .ok_or_else(|| invalid("attachments", "must be a list"))?;
            if list.len() > MAX_BODY_PARTS {
                return Err(invalid("attachments", "too many parts"));
            }
            for p in list {
                atts.push(part(p, values, blobs, MAX_BODY_DEPTH, &mut parts)?);
            }
        }
        let main = match (text, html) {
            (Some(t), Some(h)) => Some(MimePart::new("multipart/alternative", vec![t, h])),
            (Some(t), None) => Some(t),
            (None, Some(h)) => Some(h),
            (None, None) => None,
        };
        match (main, atts.is_empty()) {
            (Some(m), true) => m,
            (Some(m), false) => {
                let mut all = vec![m];
                all.extend(atts);
                MimePart::new("multipart/mixed", all)
            }
            (None, false) => MimePart::new("multipart/mixed", atts),
            (None, true) => MimePart::new("text/plain", BodyPart::Text(Cow::Borrowed(""))),
        }
    };
    b = b.body(body);
    b.write_to_vec()
        .map_err(|e| invalid("bodyStructure", &e.to_string()))
}

fn valid_field_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= 128 && n.bytes().all(|c| c.is_ascii_graphic() && c != b':')
}

fn is_content_header(n: &str) -> bool {
    n.to_ascii_lowercase().starts_with("content-") || n.eq_ignore_ascii_case("MIME-Version")
}

/// A raw value as a header may carry it: CR and LF only as folding.
fn sanitize_raw(v: &str) -> String {
    let t = v.trim_start();
    t.replace("\r\n ", "\n ")
        .replace("\r\n\t", "\n\t")
        .replace(['\r', '\n'], " ")
}

/// One EmailBodyPart of a creation.
fn part(
    v: &Value,
    values: &Map<String, Value>,
    blobs: &HashMap<String, Vec<u8>>,
    depth: usize,
    count: &mut usize,
) -> Result<MimePart<'static>, BuildError> {
    *count += 1;
    if *count > MAX_BODY_PARTS || depth > MAX_BODY_DEPTH + 1 {
        return Err(invalid(
            "bodyStructure",
            "too many or too deeply nested parts",
        ));
    }
    let o = v
        .as_object()
        .ok_or_else(|| invalid("bodyStructure", "a part must be an object"))?;
    let ty = o
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("text/plain")
        .to_ascii_lowercase();
    if !ty.contains('/') || ty.contains(['\r', '\n', ';', ' ']) {
        return Err(invalid("bodyStructure", "bad type"));
    }
    let mut ct = ContentType::new(ty.clone());
    if let Some(cs) = o.get("charset").and_then(Value::as_str) {
        if ty.starts_with("text/")
            && cs
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            ct = ct.attribute("charset", cs.to_string());
        }
    }
    let mut mp = if ty.starts_with("multipart/") {
        let subs = o
            .get("subParts")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid("bodyStructure", "a multipart needs subParts"))?;
        if depth >= MAX_BODY_DEPTH {
            return Err(invalid("bodyStructure", "nested too deeply"));
        }
        let mut children = Vec::with_capacity(subs.len());
        for s in subs {
            children.push(part(s, values, blobs, depth + 1, count)?);
        }
        MimePart::new(ct, BodyPart::Multipart(children))
    } else if let Some(pid) = o.get("partId").and_then(Value::as_str) {
        if o.get("blobId").is_some_and(|b| !b.is_null()) {
            return Err(invalid("bodyStructure", "partId and blobId together"));
        }
        if !ty.starts_with("text/") {
            return Err(invalid("bodyStructure", "a partId part must be text/*"));
        }
        let value = values
            .get(pid)
            .and_then(|v| v.get("value"))
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("bodyValues", "partId without a body value"))?;
        if values.get(pid).and_then(|v| v.get("isTruncated")) == Some(&Value::Bool(true)) {
            return Err(invalid("bodyValues", "isTruncated must be false"));
        }
        let mut ct = ct;
        if ct.attributes.is_empty() {
            ct = ct.attribute("charset", "utf-8");
        }
        MimePart::new(ct, BodyPart::Text(Cow::Owned(value.to_string())))
    } else if let Some(bid) = o.get("blobId").and_then(Value::as_str) {
        let bytes = blobs.get(bid).ok_or_else(|| BuildError {
            kind: "blobNotFound",
            description: format!("blob {bid} not found"),
            properties: Vec::new(),
        })?;
        MimePart::new(ct, BodyPart::Binary(Cow::Owned(bytes.clone())))
    } else {
        return Err(invalid(
            "bodyStructure",
            "a leaf part needs partId or blobId",
        ));
    };
    let name = o
        .get("name")
        .and_then(Value::as_str)
        .map(|n| n.replace(['\r', '\n', '"'], " "));
    match o.get("disposition").and_then(Value::as_str) {
        Some(d) if d.eq_ignore_ascii_case("attachment") => {
            mp = mp.attachment(name.unwrap_or_else(|| "attachment".into()));
        }
        Some(d) if d.eq_ignore_ascii_case("inline") => mp = mp.inline(),
        Some(_) => return Err(invalid("bodyStructure", "bad disposition")),
        None => {
            if let Some(n) = name {
                mp = mp.attachment(n);
            }
        }
    }
    if let Some(cid) = o.get("cid").and_then(Value::as_str) {
        mp = mp.cid(cid.trim_matches(['<', '>']).replace(['\r', '\n'], ""));
    }
    if let Some(l) = o.get("location").and_then(Value::as_str) {
        mp = mp.location(l.replace(['\r', '\n'], ""));
    }
    if let Some(langs) = o.get("language").and_then(Value::as_array) {
        let l: Vec<&str> = langs.iter().filter_map(Value::as_str).collect();
        if !l.is_empty() {
            mp = mp.language(l.join(", ").replace(['\r', '\n'], ""));
        }
    }
    Ok(mp)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::jmap::email::render::{BodyOptions, Parsed};

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn rfc8621_4_6_create_from_text_html_and_attachment() {
        let o = obj(json!({
            "mailboxIds": {"F1": true},
            "from": [{"name": "Alice", "email": "alice@example.test"}],
            "to": [{"email": "bob@example.test"}],
            "subject": "Hi\r\nBcc: evil@x",
            "header:X-Custom:asText": "custom",
            "textBody": [{"partId": "t", "type": "text/plain"}],
            "htmlBody": [{"partId": "h", "type": "text/html"}],
            "attachments": [{"blobId": "B1", "type": "application/pdf", "name": "a.pdf"}],
            "bodyValues": {"t": {"value": "plain text"}, "h": {"value": "<p>html</p>"}},
        }));
        let mut blobs = HashMap::new();
        blobs.insert("B1".to_string(), b"%PDF".to_vec());
        assert_eq!(blob_ids(&o), vec!["B1".to_string()]);
        let raw = build(&o, &blobs, "mail.example.test").unwrap();
        let p = Parsed::new(&raw);
        let h = p.header();
        let s = String::from_utf8_lossy(h);
        // A CR LF in a value never makes a second header field.
        assert!(!s.contains("\nBcc:"), "{s}");
        assert!(s.contains("@mail.example.test>"));
        let props: Vec<String> = ["partId", "type", "name"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let blob = |p: &str| p.to_string();
        assert_eq!(p.attachments(&props, &blob)[0]["name"], json!("a.pdf"));
        let bv = p.body_values(&BodyOptions {
            fetch_text: true,
            fetch_html: true,
            ..Default::default()
        });
        let vals: Vec<&str> = bv
            .as_object()
            .unwrap()
            .values()
            .map(|v| v["value"].as_str().unwrap())
            .collect();
        assert!(vals.iter().any(|v| v.starts_with("plain text")));
        assert!(vals.iter().any(|v| v.contains("<p>html</p>")));
    }

    #[test]
    fn rfc8621_4_6_create_refuses_bad_objects() {
        let blobs = HashMap::new();
        let e = build(&obj(json!({"id": "x"})), &blobs, "h").unwrap_err();
        assert_eq!(e.kind, "invalidProperties");
        let e = build(
            &obj(json!({"attachments": [{"blobId": "nope", "type": "a/b"}]})),
            &blobs,
            "h",
        )
        .unwrap_err();
        assert_eq!(e.kind, "blobNotFound");
        let e = build(&obj(json!({"textBody": [{"partId": "x"}]})), &blobs, "h").unwrap_err();
        assert_eq!(e.properties, vec!["bodyValues".to_string()]);
        let e = build(&obj(json!({"header:X:asNope": "v"})), &blobs, "h").unwrap_err();
        assert_eq!(e.kind, "invalidProperties");
        let mut deep = json!({"type": "text/plain", "partId": "a"});
        for _ in 0..40 {
            deep = json!({"type": "multipart/mixed", "subParts": [deep]});
        }
        let e = build(
            &obj(json!({"bodyStructure": deep, "bodyValues": {"a": {"value": "x"}}})),
            &blobs,
            "h",
        )
        .unwrap_err();
        assert_eq!(e.kind, "invalidProperties");
    }

    #[test]
    fn rfc8621_4_6_create_from_body_structure() {
        let o = obj(json!({
            "bodyStructure": {"type": "multipart/mixed", "subParts": [
                {"type": "text/plain", "partId": "1"},
                {"type": "image/png", "blobId": "img", "disposition": "inline", "cid": "c1"},
            ]},
            "bodyValues": {"1": {"value": "see picture"}},
        }));
        let mut blobs = HashMap::new();
        blobs.insert("img".to_string(), vec![0x89, b'P', b'N', b'G']);
        let raw = build(&o, &blobs, "h").unwrap();
        let p = Parsed::new(&raw);
        let props: Vec<String> = ["partId", "type", "cid", "disposition"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let bs = p.body_structure(&props, &|p: &str| p.to_string());
        assert_eq!(bs["subParts"][1]["type"], json!("image/png"));
        assert_eq!(bs["subParts"][1]["cid"], json!("c1"));
        assert_eq!(bs["subParts"][1]["disposition"], json!("inline"));
    }
}
