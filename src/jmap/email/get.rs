//! Email/get (RFC 8621 4.2).

use serde_json::{json, Map, Value};

use super::index::{Entry, Index};
use super::render::{self, BodyOptions, HeaderProp, Parsed};
use crate::jmap::ids::{blob_id, email_id, mailbox_id, thread_id, Blob};
use crate::jmap::methods::{ids_arg, state_string};
use crate::jmap::{Ctx, MethodError};
use crate::store::JmapKind;

/// The properties returned when `properties` is null (RFC 8621 4.2).
pub const DEFAULT_PROPERTIES: &[&str] = &[
    "id",
    "blobId",
    "threadId",
    "mailboxIds",
    "keywords",
    "size",
    "receivedAt",
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

/// Properties that need no message bytes.
const META_PROPERTIES: &[&str] = &[
    "id",
    "blobId",
    "threadId",
    "mailboxIds",
    "keywords",
    "size",
    "receivedAt",
];

fn valid_property(p: &str) -> bool {
    DEFAULT_PROPERTIES.contains(&p)
        || matches!(p, "bodyStructure" | "headers")
        || HeaderProp::parse(p).is_some()
        || crate::jmap::sanitize::PROPERTIES.contains(&p)
}

/// A UTCDate (RFC 8620 1.4) from Unix seconds.
pub fn utc_date(ts: i64) -> String {
    chrono::DateTime::from_timestamp(ts, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Parses the body options of Email/get (and Email/parse).
pub fn body_options(args: &Map<String, Value>) -> Result<BodyOptions, MethodError> {
    let flag = |k: &str| -> Result<bool, MethodError> {
        match args.get(k) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            _ => Err(MethodError::invalid(format!("{k} must be a boolean"))),
        }
    };
    let properties = match args.get("bodyProperties") {
        None | Some(Value::Null) => None,
        Some(Value::Array(a)) => {
            let mut out = Vec::new();
            for p in a {
                let p = p
                    .as_str()
                    .filter(|p| render::is_body_property(p))
                    .ok_or_else(|| MethodError::invalid("unknown body property"))?;
                out.push(p.to_string());
            }
            Some(out)
        }
        Some(_) => return Err(MethodError::invalid("bodyProperties must be an array")),
    };
    let max_bytes = match args.get("maxBodyValueBytes") {
        None | Some(Value::Null) => 0,
        Some(v) => match v.as_u64() {
            Some(n) if n > 0 => usize::try_from(n).unwrap_or(usize::MAX),
            _ => return Err(MethodError::invalid("maxBodyValueBytes must be > 0")),
        },
    };
    Ok(BodyOptions {
        properties,
        fetch_text: flag("fetchTextBodyValues")?,
        fetch_html: flag("fetchHTMLBodyValues")?,
        fetch_all: flag("fetchAllBodyValues")?,
        max_bytes,
    })
}

/// The requested properties (all defaults when null), `id` always in.
fn properties(args: &Map<String, Value>) -> Result<Vec<String>, MethodError> {
    let mut out: Vec<String> = match args.get("properties") {
        None | Some(Value::Null) => DEFAULT_PROPERTIES.iter().map(|s| s.to_string()).collect(),
        Some(Value::Array(a)) => {
            let mut out = Vec::new();
            for p in a {
                let p = p
                    .as_str()
                    .filter(|p| valid_property(p))
                    .ok_or_else(|| MethodError::invalid(format!("unknown property {p}")))?;
                out.push(p.to_string());
            }
            out
        }
        Some(_) => return Err(MethodError::invalid("properties must be an array")),
    };
    if !out.iter().any(|p| p == "id") {
        out.insert(0, "id".into());
    }
    Ok(out)
}

/// Renders the properties of a parsed message (Email/get and Email/parse):
/// everything but the metadata ones.
pub fn message_properties(
    parsed: &Parsed<'_>,
    props: &[String],
    opts: &BodyOptions,
    preview: &dyn Fn() -> String,
    blob: &dyn Fn(&str) -> String,
    out: &mut Map<String, Value>,
) {
    let default_body: Vec<String> = render::DEFAULT_BODY_PROPERTIES
        .iter()
        .map(|s| s.to_string())
        .collect();
    let body_props = opts.properties.as_ref().unwrap_or(&default_body);
    for p in props {
        let v = match p.as_str() {
            "hasAttachment" => json!(parsed.has_attachment()),
            "preview" => json!(preview()),
            "bodyStructure" => parsed.body_structure(body_props, blob),
            "textBody" => parsed.text_body(body_props, blob),
            "htmlBody" => parsed.html_body(body_props, blob),
            "attachments" => parsed.attachments(body_props, blob),
            "bodyValues" => parsed.body_values(opts),
            "headers" => Value::Array(
                crate::imap::mime::fields(parsed.header())
                    .iter()
                    .map(|f| {
                        json!({
                            "name": String::from_utf8_lossy(f.name),
                            "value": String::from_utf8_lossy(render::strip_line_end(f.value)),
                        })
                    })
                    .collect(),
            ),
            other => {
                let h = render::convenience(other).or_else(|| HeaderProp::parse(other));
                match h {
                    Some(h) => render::header_prop(parsed.header(), &h),
                    None => continue,
                }
            }
        };
        out.insert(p.clone(), v);
    }
    // The webmail's cleaned HTML (msgd:sanitizedHtml & co.).
    let wanted: Vec<&str> = props.iter().map(String::as_str).collect();
    out.extend(crate::jmap::sanitize::email_properties(
        parsed.first_html(),
        &wanted,
    ));
}

/// Renders one email; `None` when it went while the request ran.
async fn render_email(
    ctx: &Ctx,
    index: &Index,
    e: &Entry,
    props: &[String],
    opts: &BodyOptions,
) -> Result<Option<Value>, MethodError> {
    let mut out = Map::new();
    for p in props {
        let v = match p.as_str() {
            "id" => json!(email_id(e.id)),
            "blobId" => json!(blob_id(&Blob::Message(e.id))),
            "threadId" => json!(thread_id(index.thread_of(e))),
            "mailboxIds" => Value::Object(
                e.locs
                    .iter()
                    .map(|l| (mailbox_id(l.mailbox), Value::Bool(true)))
                    .collect(),
            ),
            "keywords" => Value::Object(
                e.keywords()
                    .into_iter()
                    .map(|k| (k, Value::Bool(true)))
                    .collect(),
            ),
            "size" => json!(e.size()),
            "receivedAt" => json!(utc_date(e.received_at())),
            _ => continue,
        };
        out.insert(p.clone(), v);
    }
    if props.iter().any(|p| !META_PROPERTIES.contains(&p.as_str())) {
        let loc = e.first();
        let Some(bytes) = e.bytes(ctx.store(), &ctx.user).await? else {
            return Ok(None);
        };
        let cached = if props.iter().any(|p| p == "preview") {
            ctx.store()
                .previews(loc.mailbox, vec![loc.meta.uid])
                .await
                .ok()
                .and_then(|mut v| v.pop().flatten())
        } else {
            None
        };
        let id = e.id;
        let props = props.to_vec();
        let opts = opts.clone();
        let uid = loc.meta.uid;
        let rendered = tokio::task::spawn_blocking(move || {
            crate::imap::mime::contained("jmap get", uid, || {
                let parsed = Parsed::new(&bytes);
                let mut out = Map::new();
                let computed = std::cell::RefCell::new(None);
                let preview = || match &cached {
                    Some(p) => p.clone(),
                    None => {
                        let p = crate::imap::preview::compute(&bytes);
                        *computed.borrow_mut() = Some(p.clone());
                        p
                    }
                };
                let blob = |path: &str| part_blob(id, path);
                message_properties(&parsed, &props, &opts, &preview, &blob, &mut out);
                let fresh = computed.into_inner();
                (out, fresh)
            })
        })
        .await
        .map_err(|e| MethodError::ServerFail(e.to_string()))?;
        let Some((more, fresh)) = rendered else {
            return Err(MethodError::ServerFail(
                "message could not be rendered".into(),
            ));
        };
        if let Some(p) = fresh {
            let _ = ctx
                .store()
                .put_previews(loc.mailbox, vec![(loc.meta.uid, p)])
                .await;
        }
        out.extend(more);
    }
    Ok(Some(Value::Object(out)))
}

/// The blobId of a part of a stored email, by partId (`1.2`).
pub fn part_blob(email: u64, path: &str) -> String {
    let nums: Vec<u32> = path.split('.').filter_map(|n| n.parse().ok()).collect();
    blob_id(&Blob::Part(email, nums))
}

/// Email/get.
pub async fn get(ctx: &mut Ctx, args: Map<String, Value>) -> Result<Value, MethodError> {
    let ids = ids_arg(ctx, &args)?;
    let props = properties(&args)?;
    let opts = body_options(&args)?;
    let state = ctx.store().jmap_state(&ctx.user, JmapKind::Email).await?;
    let max = ctx.services.config.http.max_objects_in_get as usize;
    let (index, wanted): (Index, Vec<(String, Option<u64>)>) = match ids {
        Some(ids) => {
            let wanted: Vec<(String, Option<u64>)> = ids
                .into_iter()
                .map(|s| {
                    let id = crate::jmap::ids::parse_email_id(&s);
                    (s, id)
                })
                .collect();
            let nums: Vec<u64> = wanted.iter().filter_map(|w| w.1).collect();
            (
                Index::load_ids(ctx.store(), &ctx.user, &nums).await?,
                wanted,
            )
        }
        None => {
            let index = Index::load(ctx.store(), &ctx.user).await?;
            if index.emails.len() > max {
                return Err(MethodError::RequestTooLarge);
            }
            let all = index
                .emails
                .keys()
                .map(|&id| (email_id(id), Some(id)))
                .collect();
            (index, all)
        }
    };
    let mut list = Vec::new();
    let mut not_found = Vec::new();
    for (s, id) in wanted {
        let found = match id.and_then(|id| index.emails.get(&id)) {
            Some(e) => render_email(ctx, &index, e, &props, &opts).await?,
            None => None,
        };
        match found {
            Some(v) => list.push(v),
            None => not_found.push(Value::String(s)),
        }
    }
    Ok(json!({
        "accountId": ctx.account_id,
        "state": state_string(state),
        "list": list,
        "notFound": not_found,
    }))
}

/// Email/changes (RFC 8621 4.3) from the account's journal.
pub async fn changes(ctx: &mut Ctx, args: Map<String, Value>) -> Result<Value, MethodError> {
    let (out, _) = crate::jmap::methods::changes(ctx, &args, JmapKind::Email, email_id).await?;
    Ok(Value::Object(out))
}
