//! Email/set (RFC 8621 4.6): create drafts from JMAP structure, update
//! keywords and mailboxIds (full values or patches), destroy. Everything
//! goes through the same store calls IMAP uses (APPEND, STORE, COPY,
//! MOVE, EXPUNGE), so IMAP sees JMAP's changes and the journal records
//! them; a mailbox change that takes a copy out of one mailbox and puts it
//! in another is an IMAP MOVE (one transaction, the email id kept).

use std::collections::{BTreeSet, HashMap};

use serde_json::{json, Map, Value};

use super::build::{self, BuildError};
use super::index::{flags_of, valid_keyword, Entry, Index};
use crate::jmap::error::set_error;
use crate::jmap::ids::{blob_id, email_id, parse_email_id, parse_mailbox_id, thread_id, Blob};
use crate::jmap::methods::{parse_state, state_string};
use crate::jmap::{Ctx, MethodError};
use crate::store::{FlagOp, Flags, JmapKind, MailboxId, NewMessage, Quota, StoreError};

/// The user's quota (directory, else the store's default).
pub async fn quota(ctx: &Ctx) -> Result<Quota, MethodError> {
    use crate::directory::Recipient;
    let q = match ctx.services.directory.lookup(&ctx.user).await {
        Ok(Some(Recipient::User(a))) => (a.quota, a.msg_quota),
        Ok(_) => (None, None),
        Err(_) => return Err(MethodError::ServerUnavailable),
    };
    Ok(crate::deliver::account_quota(
        q.0,
        q.1,
        &ctx.services.config.store,
    ))
}

/// A SetError for a store refusal.
pub fn store_set_error(e: &StoreError) -> Value {
    match e {
        StoreError::OverQuota | StoreError::DiskFull => set_error("overQuota", e.to_string()),
        StoreError::NoSuchMailbox => set_error("invalidProperties", "no such mailbox"),
        StoreError::Moving => set_error("serverUnavailable", e.to_string()),
        _ => set_error("serverFail", ""),
    }
}

/// The `mailboxIds` of a creation or full update: the store's ids, each
/// one a mailbox of the account.
pub fn mailbox_set(index: &Index, v: &Value) -> Result<BTreeSet<MailboxId>, Value> {
    let bad = || {
        json!({"type": "invalidProperties", "properties": ["mailboxIds"],
               "description": "mailboxIds must name at least one mailbox of the account"})
    };
    let o = v.as_object().ok_or_else(bad)?;
    let mut out = BTreeSet::new();
    for (k, v) in o {
        if v != &Value::Bool(true) {
            return Err(bad());
        }
        let id = parse_mailbox_id(k)
            .filter(|id| index.mailbox(*id).is_some())
            .ok_or_else(bad)?;
        out.insert(id);
    }
    if out.is_empty() {
        return Err(bad());
    }
    Ok(out)
}

/// The `keywords` of a creation or full update.
pub fn keyword_set(v: &Value) -> Result<BTreeSet<String>, Value> {
    let bad = || json!({"type": "invalidProperties", "properties": ["keywords"]});
    let o = v.as_object().ok_or_else(bad)?;
    let mut out = BTreeSet::new();
    for (k, v) in o {
        if v != &Value::Bool(true) || !valid_keyword(k) {
            return Err(bad());
        }
        out.insert(k.to_ascii_lowercase());
    }
    Ok(out)
}

/// Unescapes one JSON pointer segment (RFC 6901).
fn unescape(s: &str) -> String {
    s.replace("~1", "/").replace("~0", "~")
}

/// Applies an update object to an email's (keywords, mailboxes).
fn apply_patch(
    index: &Index,
    e: &Entry,
    patch: &Map<String, Value>,
) -> Result<(BTreeSet<String>, BTreeSet<MailboxId>), Value> {
    let mut kws: BTreeSet<String> = e.keywords().into_iter().collect();
    let mut mbs: BTreeSet<MailboxId> = e.locs.iter().map(|l| l.mailbox).collect();
    let invalid = |p: &str| json!({"type": "invalidProperties", "properties": [p]});
    // Full values first, then patches (a full value and a patch of the
    // same property together is invalidPatch).
    for (k, v) in patch {
        match k.as_str() {
            "keywords" => kws = keyword_set(v)?,
            "mailboxIds" => mbs = mailbox_set(index, v)?,
            _ => {}
        }
    }
    for (k, v) in patch {
        let Some((prop, rest)) = k.split_once('/') else {
            if k != "keywords" && k != "mailboxIds" {
                return Err(invalid(k));
            }
            continue;
        };
        if patch.contains_key(prop) || rest.contains('/') {
            return Err(json!({"type": "invalidPatch", "properties": [k]}));
        }
        let on = match v {
            Value::Bool(true) => true,
            Value::Null => false,
            _ => return Err(invalid(k)),
        };
        let item = unescape(rest);
        match prop {
            "keywords" => {
                if !valid_keyword(&item) {
                    return Err(invalid(k));
                }
                let item = item.to_ascii_lowercase();
                if on {
                    kws.insert(item);
                } else {
                    kws.remove(&item);
                }
            }
            "mailboxIds" => {
                let id = parse_mailbox_id(&item)
                    .filter(|id| index.mailbox(*id).is_some())
                    .ok_or_else(|| invalid("mailboxIds"))?;
                if on {
                    mbs.insert(id);
                } else {
                    mbs.remove(&id);
                }
            }
            _ => return Err(invalid(k)),
        }
    }
    if mbs.is_empty() {
        return Err(invalid("mailboxIds"));
    }
    Ok((kws, mbs))
}

/// Sets an email's keywords on every copy (\Deleted kept as it is).
async fn set_keywords(ctx: &Ctx, e: &Entry, kws: &BTreeSet<String>) -> Result<(), StoreError> {
    let list: Vec<String> = kws.iter().cloned().collect();
    let want = flags_of(&list);
    for l in &e.locs {
        let mut f = want.clone();
        f.bits |= l.meta.flags.bits & Flags::DELETED;
        if super::index::keywords(&l.meta.flags) == list {
            continue;
        }
        ctx.store()
            .store_flags(l.mailbox, vec![l.meta.uid], FlagOp::Replace, f, None)
            .await?;
    }
    Ok(())
}

/// Removes one copy (\Deleted, then EXPUNGE of that UID only).
async fn remove_copy(ctx: &Ctx, mailbox: MailboxId, uid: u32) -> Result<(), StoreError> {
    let deleted = Flags {
        bits: Flags::DELETED,
        keywords: Vec::new(),
    };
    ctx.store()
        .store_flags(mailbox, vec![uid], FlagOp::Add, deleted, None)
        .await?;
    ctx.store().expunge(mailbox, Some(vec![uid])).await?;
    Ok(())
}

/// Puts an email in exactly the mailboxes `mbs`: copies, moves, removals.
pub async fn set_mailboxes(
    ctx: &Ctx,
    index: &Index,
    e: &Entry,
    mbs: &BTreeSet<MailboxId>,
    quota: Quota,
) -> Result<(), StoreError> {
    let old: BTreeSet<MailboxId> = e.locs.iter().map(|l| l.mailbox).collect();
    let added: Vec<MailboxId> = mbs.difference(&old).copied().collect();
    let removed: Vec<MailboxId> = old.difference(mbs).copied().collect();
    let name = |m: MailboxId| {
        index
            .mailbox(m)
            .map(|i| i.name.clone())
            .ok_or(StoreError::NoSuchMailbox)
    };
    let loc_in = |m: MailboxId| e.locs.iter().find(|l| l.mailbox == m);
    let moves = added.len().min(removed.len());
    // Extra copies first, from a copy that stays where it is.
    let src = e
        .locs
        .iter()
        .find(|l| mbs.contains(&l.mailbox))
        .unwrap_or(e.first());
    for &to in &added[moves..] {
        ctx.store()
            .copy(
                src.mailbox,
                vec![src.meta.uid],
                &ctx.user,
                &name(to)?,
                false,
                quota,
            )
            .await?;
    }
    for i in 0..moves {
        let from = loc_in(removed[i]).ok_or(StoreError::NoSuchMailbox)?;
        ctx.store()
            .copy(
                from.mailbox,
                vec![from.meta.uid],
                &ctx.user,
                &name(added[i])?,
                true,
                quota,
            )
            .await?;
    }
    for &m in &removed[moves..] {
        if let Some(l) = loc_in(m) {
            remove_copy(ctx, l.mailbox, l.meta.uid).await?;
        }
    }
    Ok(())
}

/// Destroys an email: every copy expunged.
pub async fn destroy_email(ctx: &Ctx, e: &Entry) -> Result<(), StoreError> {
    for l in &e.locs {
        remove_copy(ctx, l.mailbox, l.meta.uid).await?;
    }
    Ok(())
}

/// Appends a message to the mailboxes of a creation (the first by APPEND,
/// the others by COPY, so all copies share one email id). Returns the
/// created object's server-set properties.
pub async fn store_new(
    ctx: &Ctx,
    index: &Index,
    data: Vec<u8>,
    mbs: &BTreeSet<MailboxId>,
    kws: &BTreeSet<String>,
    received_at: Option<i64>,
    quota: Quota,
) -> Result<Value, StoreError> {
    let list: Vec<String> = kws.iter().cloned().collect();
    let flags = flags_of(&list);
    let size = data.len();
    let mut ids = mbs.iter();
    let first = *ids.next().ok_or(StoreError::NoSuchMailbox)?;
    let first_name = index
        .mailbox(first)
        .map(|m| m.name.clone())
        .ok_or(StoreError::NoSuchMailbox)?;
    let placed = ctx
        .store()
        .append(
            &ctx.user,
            &first_name,
            NewMessage {
                data: std::sync::Arc::new(data),
                flags,
                internal_date: received_at.map(|t| (t, 0)),
            },
            quota,
        )
        .await?;
    for &m in ids {
        let name = index
            .mailbox(m)
            .map(|m| m.name.clone())
            .ok_or(StoreError::NoSuchMailbox)?;
        ctx.store()
            .copy(
                placed.mailbox,
                vec![placed.uid],
                &ctx.user,
                &name,
                false,
                quota,
            )
            .await?;
    }
    let eid = ctx
        .store()
        .email_ids(placed.mailbox, vec![placed.uid])
        .await?
        .first()
        .copied()
        .unwrap_or(0);
    let tid = ctx
        .store()
        .thread_ids(placed.mailbox, vec![placed.uid])
        .await?
        .first()
        .copied()
        .filter(|t| *t != 0)
        .unwrap_or(eid);
    Ok(json!({
        "id": email_id(eid),
        "blobId": blob_id(&Blob::Message(eid)),
        "threadId": thread_id(tid),
        "size": size,
    }))
}

fn build_error(e: BuildError) -> Value {
    let mut v = set_error(e.kind, e.description);
    if !e.properties.is_empty() {
        v["properties"] = json!(e.properties);
    }
    v
}

/// Creates one email from a creation object.
async fn create_one(
    ctx: &Ctx,
    index: &Index,
    obj: &Map<String, Value>,
    quota: Quota,
) -> Result<Value, Value> {
    let (mbs, kws, received_at) = super::import::placement(index, obj)?;
    let mut blobs = HashMap::new();
    let mut missing = Vec::new();
    for id in build::blob_ids(obj) {
        match crate::jmap::blob::read(ctx, &id).await {
            Ok(Some(b)) => {
                blobs.insert(id, b);
            }
            Ok(None) => missing.push(id),
            Err(_) => return Err(set_error("serverFail", "")),
        }
    }
    if !missing.is_empty() {
        return Err(json!({"type": "blobNotFound", "notFound": missing}));
    }
    let limit = ctx.services.config.smtp.max_message_size;
    if blobs.values().map(|b| b.len() as u64).sum::<u64>() > limit {
        return Err(set_error("tooLarge", "the message would be too large"));
    }
    let hostname = ctx.services.config.server.hostname.clone();
    let obj2 = obj.clone();
    let data = tokio::task::spawn_blocking(move || build::build(&obj2, &blobs, &hostname))
        .await
        .map_err(|_| set_error("serverFail", ""))?
        .map_err(build_error)?;
    if data.len() as u64 > limit {
        return Err(set_error("tooLarge", "the message would be too large"));
    }
    store_new(ctx, index, data, &mbs, &kws, received_at, quota)
        .await
        .map_err(|e| store_set_error(&e))
}

/// Email/set.
pub async fn set(ctx: &mut Ctx, args: Map<String, Value>) -> Result<Value, MethodError> {
    let old = ctx.store().jmap_state(&ctx.user, JmapKind::Email).await?;
    if let Some(s) = args.get("ifInState").filter(|v| !v.is_null()) {
        if s.as_str().and_then(parse_state) != Some(old) {
            return Err(MethodError::StateMismatch);
        }
    }
    let obj_arg = |k: &str| -> Result<Option<Map<String, Value>>, MethodError> {
        match args.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(o)) => Ok(Some(o.clone())),
            _ => Err(MethodError::invalid(format!("{k} must be an object"))),
        }
    };
    let create = obj_arg("create")?.unwrap_or_default();
    let update = obj_arg("update")?.unwrap_or_default();
    let destroy: Vec<String> = match args.get("destroy") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(|s| ctx.resolve_id(s).unwrap_or_else(|| s.to_string()))
            })
            .collect::<Option<_>>()
            .ok_or_else(|| MethodError::invalid("destroy must be ids"))?,
        Some(_) => return Err(MethodError::invalid("destroy must be an array")),
    };
    let max = ctx.services.config.http.max_objects_in_set as usize;
    if create.len() + update.len() + destroy.len() > max {
        return Err(MethodError::RequestTooLarge);
    }
    let q = quota(ctx).await?;
    let named: Vec<u64> = update
        .keys()
        .map(|id| ctx.resolve_id(id).unwrap_or_else(|| id.clone()))
        .chain(destroy.iter().cloned())
        .filter_map(|s| parse_email_id(&s))
        .collect();
    let mut index = load(ctx, named.clone()).await?;

    let mut created = Map::new();
    let mut not_created = Map::new();
    for (cid, obj) in &create {
        let Some(obj) = obj.as_object() else {
            not_created.insert(cid.clone(), set_error("invalidProperties", "not an object"));
            continue;
        };
        match create_one(ctx, &index, obj, q).await {
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

    let mut updated = Map::new();
    let mut not_updated = Map::new();
    if !update.is_empty() && !created.is_empty() {
        index = load(ctx, named.clone()).await?;
    }
    for (id, patch) in &update {
        let real = ctx.resolve_id(id).unwrap_or_else(|| id.clone());
        let Some(e) = parse_email_id(&real).and_then(|i| index.emails.get(&i)) else {
            not_updated.insert(id.clone(), set_error("notFound", ""));
            continue;
        };
        // Answered under the real id, also when named as `#k`.
        let id = &real;
        let Some(patch) = patch.as_object() else {
            not_updated.insert(id.clone(), set_error("invalidPatch", "not an object"));
            continue;
        };
        let (kws, mbs) = match apply_patch(&index, e, patch) {
            Ok(x) => x,
            Err(err) => {
                not_updated.insert(id.clone(), err);
                continue;
            }
        };
        let r = async {
            set_keywords(ctx, e, &kws).await?;
            let e2 = if kws.iter().cloned().collect::<Vec<_>>() != e.keywords() {
                // Copies carry the new flags.
                let fresh = Index::load_ids(ctx.store(), &ctx.user, &[e.id]).await?;
                fresh
                    .emails
                    .get(&e.id)
                    .cloned()
                    .unwrap_or_else(|| e.clone())
            } else {
                e.clone()
            };
            set_mailboxes(ctx, &index, &e2, &mbs, q).await
        }
        .await;
        match r {
            Ok(()) => {
                updated.insert(id.clone(), Value::Null);
            }
            Err(err) => {
                not_updated.insert(id.clone(), store_set_error(&err));
            }
        }
    }

    let mut destroyed = Vec::new();
    let mut not_destroyed = Map::new();
    if !destroy.is_empty() && (!created.is_empty() || !updated.is_empty()) {
        index = load(ctx, named.clone()).await?;
    }
    for id in &destroy {
        let Some(e) = parse_email_id(id).and_then(|i| index.emails.get(&i)) else {
            not_destroyed.insert(id.clone(), set_error("notFound", ""));
            continue;
        };
        match destroy_email(ctx, e).await {
            Ok(()) => destroyed.push(json!(id)),
            Err(err) => {
                not_destroyed.insert(id.clone(), store_set_error(&err));
            }
        }
    }
    let new = ctx.store().jmap_state(&ctx.user, JmapKind::Email).await?;
    let opt = |m: Map<String, Value>| {
        if m.is_empty() {
            Value::Null
        } else {
            Value::Object(m)
        }
    };
    Ok(json!({
        "accountId": ctx.account_id,
        "oldState": state_string(old),
        "newState": state_string(new),
        "created": opt(created),
        "updated": opt(updated),
        "destroyed": if destroyed.is_empty() { Value::Null } else { Value::Array(destroyed) },
        "notCreated": opt(not_created),
        "notUpdated": opt(not_updated),
        "notDestroyed": opt(not_destroyed),
    }))
}

/// The emails `named`, and those created so far in this request (an
/// update or destroy may name them as `#k`).
async fn load(ctx: &Ctx, mut named: Vec<u64>) -> Result<Index, StoreError> {
    named.extend(ctx.created_ids.values().filter_map(|s| parse_email_id(s)));
    Index::load_ids(ctx.store(), &ctx.user, &named).await
}
