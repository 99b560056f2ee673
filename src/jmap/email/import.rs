//! Email/import (RFC 8621 4.8), Email/copy (4.7, within the account) and
//! Email/parse (4.9).

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use super::get::{body_options, message_properties};
use super::index::Index;
use super::render::{HeaderProp, Parsed};
use super::set::{keyword_set, mailbox_set, quota, store_new, store_set_error};
use crate::jmap::error::set_error;
use crate::jmap::ids::{blob_id, parse_blob_id, parse_email_id, Blob};
use crate::jmap::methods::{parse_state, state_string};
use crate::jmap::{Ctx, MethodError};
use crate::store::JmapKind;

fn obj_arg(args: &Map<String, Value>, k: &str) -> Result<Map<String, Value>, MethodError> {
    match args.get(k) {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(o)) => Ok(o.clone()),
        _ => Err(MethodError::invalid(format!("{k} must be an object"))),
    }
}

async fn check_state(ctx: &Ctx, v: Option<&Value>) -> Result<u64, MethodError> {
    let old = ctx.store().jmap_state(&ctx.user, JmapKind::Email).await?;
    if let Some(s) = v.filter(|v| !v.is_null()) {
        if s.as_str().and_then(parse_state) != Some(old) {
            return Err(MethodError::StateMismatch);
        }
    }
    Ok(old)
}

/// mailboxIds, keywords and receivedAt of an import or copy.
pub(super) type Placement = (BTreeSet<u64>, BTreeSet<String>, Option<i64>);

pub(super) fn placement(index: &Index, o: &Map<String, Value>) -> Result<Placement, Value> {
    let mbs = mailbox_set(index, o.get("mailboxIds").unwrap_or(&Value::Null))?;
    let kws = match o.get("keywords") {
        None | Some(Value::Null) => BTreeSet::new(),
        Some(v) => keyword_set(v)?,
    };
    let received = match o.get("receivedAt") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_str()
                .and_then(super::query::parse_utc_date)
                .ok_or_else(
                    || json!({"type": "invalidProperties", "properties": ["receivedAt"]}),
                )?,
        ),
    };
    Ok((mbs, kws, received))
}

fn opt(m: Map<String, Value>) -> Value {
    if m.is_empty() {
        Value::Null
    } else {
        Value::Object(m)
    }
}

/// Email/import: blobs (uploaded messages, or any message blob) become
/// emails in the given mailboxes.
pub async fn import(ctx: &mut Ctx, args: Map<String, Value>) -> Result<Value, MethodError> {
    let old = check_state(ctx, args.get("ifInState")).await?;
    let emails = obj_arg(&args, "emails")?;
    if emails.len() > ctx.services.config.http.max_objects_in_set as usize {
        return Err(MethodError::RequestTooLarge);
    }
    let q = quota(ctx).await?;
    let index = Index::load_ids(ctx.store(), &ctx.user, &[]).await?;
    let limit = ctx.services.config.smtp.max_message_size;
    let mut created = Map::new();
    let mut not_created = Map::new();
    for (cid, o) in &emails {
        let r = async {
            let o = o
                .as_object()
                .ok_or_else(|| set_error("invalidProperties", ""))?;
            let (mbs, kws, received) = placement(&index, o)?;
            let bid = o
                .get("blobId")
                .and_then(Value::as_str)
                .ok_or_else(|| json!({"type": "invalidProperties", "properties": ["blobId"]}))?;
            let bid = ctx.resolve_id(bid).unwrap_or_else(|| bid.to_string());
            let data = crate::jmap::blob::read(ctx, &bid)
                .await
                .map_err(|_| set_error("serverFail", ""))?
                .ok_or_else(|| json!({"type": "blobNotFound", "notFound": [bid]}))?;
            if data.len() as u64 > limit {
                return Err(set_error("tooLarge", "the message is too large"));
            }
            if !looks_like_message(&data) {
                return Err(set_error("invalidEmail", "the blob is not a message"));
            }
            store_new(ctx, &index, crlf(data), &mbs, &kws, received, q)
                .await
                .map_err(|e| store_set_error(&e))
        }
        .await;
        match r {
            Ok(v) => {
                if let Some(id) = v["id"].as_str() {
                    ctx.created(cid, id);
                }
                created.insert(cid.clone(), v);
            }
            Err(e) => {
                not_created.insert(cid.clone(), e);
            }
        }
    }
    let new = ctx.store().jmap_state(&ctx.user, JmapKind::Email).await?;
    Ok(json!({
        "accountId": ctx.account_id,
        "oldState": state_string(old),
        "newState": state_string(new),
        "created": opt(created),
        "notCreated": opt(not_created),
    }))
}

/// Bare LF line ends become CRLF (the store keeps messages as served).
fn crlf(data: Vec<u8>) -> Vec<u8> {
    if !data
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || data[i - 1] != b'\r'))
    {
        return data;
    }
    let mut out = Vec::with_capacity(data.len() + data.len() / 32);
    let mut prev = 0u8;
    for &b in &data {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}

/// Email/copy within the account (`fromAccountId` must be this account):
/// each created email is a new email with the original's bytes; with
/// `onSuccessDestroyOriginal` the originals copied are destroyed by an
/// implicit Email/set, answered after this response.
pub async fn copy(ctx: &mut Ctx, args: Map<String, Value>) -> Result<Value, MethodError> {
    match args.get("fromAccountId").and_then(Value::as_str) {
        Some(a) if a == ctx.account_id => {}
        _ => return Err(MethodError::FromAccountNotFound),
    }
    let old = check_state(ctx, args.get("ifInState")).await?;
    check_state(ctx, args.get("ifFromInState")).await?;
    let create = obj_arg(&args, "create")?;
    if create.len() > ctx.services.config.http.max_objects_in_set as usize {
        return Err(MethodError::RequestTooLarge);
    }
    let destroy_original = matches!(
        args.get("onSuccessDestroyOriginal"),
        Some(Value::Bool(true))
    );
    let q = quota(ctx).await?;
    let named: Vec<u64> = create
        .values()
        .filter_map(|o| o.get("id").and_then(Value::as_str).and_then(parse_email_id))
        .collect();
    let index = Index::load_ids(ctx.store(), &ctx.user, &named).await?;
    let mut created = Map::new();
    let mut not_created = Map::new();
    let mut originals = Vec::new();
    for (cid, o) in &create {
        let r = async {
            let o = o
                .as_object()
                .ok_or_else(|| set_error("invalidProperties", ""))?;
            let id = o
                .get("id")
                .and_then(Value::as_str)
                .ok_or_else(|| json!({"type": "invalidProperties", "properties": ["id"]}))?;
            let e = parse_email_id(id)
                .and_then(|i| index.emails.get(&i))
                .ok_or_else(|| set_error("notFound", ""))?;
            let (mbs, kws, received) = placement(&index, o)?;
            let kws = if o.contains_key("keywords") {
                kws
            } else {
                e.keywords().into_iter().collect()
            };
            let received = received.or(Some(e.received_at()));
            let loc = e.first();
            let data = ctx
                .store()
                .read(loc.mailbox, &loc.meta)
                .await
                .map_err(|e| store_set_error(&e))?;
            let v = store_new(ctx, &index, data, &mbs, &kws, received, q)
                .await
                .map_err(|e| store_set_error(&e))?;
            Ok::<_, Value>((v, id.to_string()))
        }
        .await;
        match r {
            Ok((v, orig)) => {
                if let Some(id) = v["id"].as_str() {
                    ctx.created(cid, id);
                }
                created.insert(cid.clone(), v);
                originals.push(Value::String(orig));
            }
            Err(e) => {
                not_created.insert(cid.clone(), e);
            }
        }
    }
    let new = ctx.store().jmap_state(&ctx.user, JmapKind::Email).await?;
    let out = json!({
        "fromAccountId": ctx.account_id,
        "accountId": ctx.account_id,
        "oldState": state_string(old),
        "newState": state_string(new),
        "created": opt(created),
        "notCreated": opt(not_created),
    });
    if destroy_original && !originals.is_empty() {
        let mut set_args = Map::new();
        set_args.insert("accountId".into(), json!(ctx.account_id));
        set_args.insert("destroy".into(), Value::Array(originals));
        if let Some(s) = args.get("destroyFromIfInState").filter(|v| !v.is_null()) {
            set_args.insert("ifInState".into(), s.clone());
        }
        let r = match super::set::set(ctx, set_args).await {
            Ok(v) => ("Email/set".to_string(), v),
            Err(e) => ("error".to_string(), e.to_json()),
        };
        ctx.extra.push(r);
    }
    Ok(out)
}

/// The properties Email/parse returns when `properties` is null.
const PARSE_PROPERTIES: &[&str] = &[
    "messageId",
    "inReplyTo",
    "references",
    "sender",
    "from",
    "to",
    "cc",
    "bcc",
    "replyTo",
    "subject",
    "sentAt",
    "hasAttachment",
    "preview",
    "bodyValues",
    "textBody",
    "htmlBody",
    "attachments",
];

/// Email/parse: a message blob (an upload, a stored message, or an
/// attached message/rfc822 part) rendered as an Email without id,
/// mailboxIds, keywords or receivedAt (RFC 8621 4.9).
pub async fn parse(ctx: &mut Ctx, args: Map<String, Value>) -> Result<Value, MethodError> {
    let ids: Vec<String> = match args.get("blobIds") {
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| MethodError::invalid("blobIds must be ids"))?,
        _ => return Err(MethodError::invalid("blobIds is required")),
    };
    if ids.len() > ctx.services.config.http.max_objects_in_get as usize {
        return Err(MethodError::RequestTooLarge);
    }
    let props: Vec<String> = match args.get("properties") {
        None | Some(Value::Null) => PARSE_PROPERTIES.iter().map(|s| s.to_string()).collect(),
        Some(Value::Array(a)) => {
            let mut out = Vec::new();
            for p in a {
                let p = p
                    .as_str()
                    .filter(|p| {
                        PARSE_PROPERTIES.contains(p)
                            || matches!(*p, "bodyStructure" | "headers" | "blobId" | "size")
                            || HeaderProp::parse(p).is_some()
                    })
                    .ok_or_else(|| MethodError::invalid("unknown property"))?;
                out.push(p.to_string());
            }
            out
        }
        Some(_) => return Err(MethodError::invalid("properties must be an array")),
    };
    let opts = body_options(&args)?;
    let mut parsed = Map::new();
    let mut not_parsable = Vec::new();
    let mut not_found = Vec::new();
    for id in ids {
        let Some(data) = crate::jmap::blob::read(ctx, &id).await? else {
            not_found.push(Value::String(id));
            continue;
        };
        if !looks_like_message(&data) {
            not_parsable.push(Value::String(id));
            continue;
        }
        // Parts of a stored message's blob are addressable (`G..._2_1`);
        // parts of an upload are not.
        let base = match parse_blob_id(&id) {
            Some(Blob::Message(e)) => Some((e, Vec::new())),
            Some(Blob::Part(e, p)) => Some((e, p)),
            _ => None,
        };
        let props = props.clone();
        let opts = opts.clone();
        let id2 = id.clone();
        let r = tokio::task::spawn_blocking(move || {
            crate::imap::mime::contained("jmap parse", 0, || {
                let p = Parsed::new(&data);
                let mut out = Map::new();
                let blob = |path: &str| match &base {
                    Some((e, prefix)) => {
                        let mut nums = prefix.clone();
                        nums.extend(path.split('.').filter_map(|n| n.parse::<u32>().ok()));
                        blob_id(&Blob::Part(*e, nums))
                    }
                    None => String::new(),
                };
                let preview = || crate::imap::preview::compute(&data);
                message_properties(&p, &props, &opts, &preview, &blob, &mut out);
                if props.iter().any(|p| p == "blobId") {
                    out.insert("blobId".into(), json!(id2));
                }
                if props.iter().any(|p| p == "size") {
                    out.insert("size".into(), json!(data.len()));
                }
                // Parts of an upload have no blob of their own.
                if base.is_none() {
                    null_blob_ids(&mut out);
                }
                out
            })
        })
        .await
        .map_err(|e| MethodError::ServerFail(e.to_string()))?;
        match r {
            Some(o) => {
                parsed.insert(id, Value::Object(o));
            }
            None => not_parsable.push(Value::String(id)),
        }
    }
    Ok(json!({
        "accountId": ctx.account_id,
        "parsed": opt(parsed),
        "notParsable": not_parsable,
        "notFound": not_found,
    }))
}

/// Replaces the (empty) blobIds of body parts by null, iteratively.
fn null_blob_ids(o: &mut Map<String, Value>) {
    let mut stack: Vec<&mut Value> = o
        .iter_mut()
        .filter(|(k, _)| {
            matches!(
                k.as_str(),
                "bodyStructure" | "textBody" | "htmlBody" | "attachments"
            )
        })
        .map(|(_, v)| v)
        .collect();
    while let Some(v) = stack.pop() {
        match v {
            Value::Array(a) => stack.extend(a.iter_mut()),
            Value::Object(m) => {
                if m.get("blobId") == Some(&Value::String(String::new())) {
                    m.insert("blobId".into(), Value::Null);
                }
                if let Some(s) = m.get_mut("subParts") {
                    stack.push(s);
                }
            }
            _ => {}
        }
    }
}

/// Does `data` start with a header field (`Name:`)? Anything else is not
/// a message (`invalidEmail`, `notParsable`).
pub fn looks_like_message(data: &[u8]) -> bool {
    let line = data.split(|&b| b == b'\n').next().unwrap_or_default();
    match line.iter().position(|&b| b == b':') {
        Some(i) if i > 0 => line[..i].iter().all(|b| b.is_ascii_graphic()),
        _ => false,
    }
}
