//! Mailbox/get, /changes, /query, /set (RFC 8621 2) over the store's
//! mailboxes: the `/`-separated hierarchy gives `parentId`, special-use
//! attributes give `role`, the journal gives states and changes, so IMAP
//! sees what JMAP does and the other way round.

use std::collections::{HashMap, HashSet};

use serde_json::{json, Map, Value};

use super::error::set_error;
use super::ids::{mailbox_id, parse_mailbox_id};
use super::methods::{ids_arg, properties_arg, select, state_string};
use super::{Ctx, MethodError};
use crate::store::{JmapKind, MailboxInfo, SpecialUse, StoreError, DELIMITER};

const PROPERTIES: &[&str] = &[
    "id",
    "name",
    "parentId",
    "role",
    "sortOrder",
    "totalEmails",
    "unreadEmails",
    "totalThreads",
    "unreadThreads",
    "myRights",
    "isSubscribed",
];

const COUNT_PROPERTIES: &[&str] = &[
    "totalEmails",
    "unreadEmails",
    "totalThreads",
    "unreadThreads",
];

/// The JMAP role of a mailbox (RFC 8621 2, the IANA registry).
pub fn role(m: &MailboxInfo) -> Option<&'static str> {
    if m.name == "INBOX" {
        return Some("inbox");
    }
    Some(match m.special_use? {
        SpecialUse::All => "all",
        SpecialUse::Archive => "archive",
        SpecialUse::Drafts => "drafts",
        SpecialUse::Flagged => "flagged",
        SpecialUse::Junk => "junk",
        SpecialUse::Sent => "sent",
        SpecialUse::Trash => "trash",
    })
}

fn special_use_of_role(r: &str) -> Option<SpecialUse> {
    Some(match r {
        "all" => SpecialUse::All,
        "archive" => SpecialUse::Archive,
        "drafts" => SpecialUse::Drafts,
        "flagged" => SpecialUse::Flagged,
        "junk" => SpecialUse::Junk,
        "sent" => SpecialUse::Sent,
        "trash" => SpecialUse::Trash,
        _ => return None,
    })
}

/// The last level of a full name.
fn leaf(name: &str) -> &str {
    name.rsplit(DELIMITER).next().unwrap_or(name)
}

fn parent_name(name: &str) -> Option<&str> {
    name.rsplit_once(DELIMITER).map(|(p, _)| p)
}

/// The user's mailboxes by full name.
async fn mailboxes(ctx: &Ctx) -> Result<Vec<MailboxInfo>, MethodError> {
    Ok(ctx.store().list(&ctx.user).await?)
}

/// Thread counts of a mailbox: (total, unread) threads.
async fn thread_counts(ctx: &Ctx, m: &MailboxInfo) -> Result<(u64, u64), MethodError> {
    if m.exists == 0 {
        return Ok((0, 0));
    }
    let snap = match ctx.store().snapshot(&ctx.user, &m.name).await {
        Ok(s) => s,
        Err(StoreError::NoSuchMailbox) => return Ok((0, 0)),
        Err(e) => return Err(e.into()),
    };
    let uids: Vec<u32> = snap.messages.iter().map(|x| x.uid).collect();
    let threads = ctx.store().thread_ids(m.id, uids).await?;
    let mut all = HashSet::new();
    let mut unread = HashSet::new();
    for (meta, t) in snap.messages.iter().zip(threads) {
        all.insert(t);
        if !meta.flags.has(crate::store::Flags::SEEN) {
            unread.insert(t);
        }
    }
    Ok((all.len() as u64, unread.len() as u64))
}

fn rights(m: &MailboxInfo) -> Value {
    json!({
        "mayReadItems": true,
        "mayAddItems": true,
        "mayRemoveItems": true,
        "maySetSeen": true,
        "maySetKeywords": true,
        "mayCreateChild": true,
        "mayRename": m.name != "INBOX",
        "mayDelete": m.name != "INBOX",
        "maySubmit": true,
    })
}

/// The default sortOrder (RFC 8621 2: lower first; the inbox first).
fn default_sort_order(m: &MailboxInfo) -> u32 {
    if m.name == "INBOX" {
        1
    } else {
        10
    }
}

/// The sortOrder of each mailbox: the one set, or the default.
async fn sort_orders(ctx: &Ctx, all: &[&MailboxInfo]) -> Result<HashMap<u64, u32>, MethodError> {
    let set = ctx
        .store()
        .sort_orders(all.iter().map(|m| m.id).collect())
        .await?;
    Ok(all
        .iter()
        .map(|m| {
            (
                m.id,
                set.get(&m.id).copied().unwrap_or(default_sort_order(m)),
            )
        })
        .collect())
}

/// A sortOrder value from a client: an UnsignedInt that fits in 32 bits
/// (`Err` for anything else).
fn sort_order_value(v: &Value) -> Result<u32, Value> {
    v.as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| set_error("invalidProperties", "sortOrder").with_props(&["sortOrder"]))
}

async fn to_json(
    ctx: &Ctx,
    m: &MailboxInfo,
    by_name: &HashMap<&str, u64>,
    threads: bool,
) -> Result<Map<String, Value>, MethodError> {
    let mut o = Map::new();
    o.insert("id".into(), json!(mailbox_id(m.id)));
    o.insert("name".into(), json!(leaf(&m.name)));
    let parent = parent_name(&m.name)
        .and_then(|p| by_name.get(p))
        .map(|id| json!(mailbox_id(*id)))
        .unwrap_or(Value::Null);
    o.insert("parentId".into(), parent);
    o.insert("role".into(), json!(role(m)));
    let order = sort_orders(ctx, &[m]).await?;
    o.insert(
        "sortOrder".into(),
        json!(order.get(&m.id).copied().unwrap_or(default_sort_order(m))),
    );
    o.insert("totalEmails".into(), json!(m.exists));
    o.insert("unreadEmails".into(), json!(m.unseen));
    if threads {
        let (t, u) = thread_counts(ctx, m).await?;
        o.insert("totalThreads".into(), json!(t));
        o.insert("unreadThreads".into(), json!(u));
    }
    o.insert("myRights".into(), rights(m));
    o.insert("isSubscribed".into(), json!(m.subscribed));
    Ok(o)
}

pub async fn get(ctx: &mut Ctx, args: Map<String, Value>) -> Result<Value, MethodError> {
    let ids = ids_arg(ctx, &args)?;
    let props = properties_arg(&args, PROPERTIES)?;
    let state = ctx.store().jmap_state(&ctx.user, JmapKind::Mailbox).await?;
    let all = mailboxes(ctx).await?;
    let by_name: HashMap<&str, u64> = all.iter().map(|m| (m.name.as_str(), m.id)).collect();
    let threads = props.as_ref().is_none_or(|p| {
        p.iter()
            .any(|x| x == "totalThreads" || x == "unreadThreads")
    });
    let mut list = Vec::new();
    let mut not_found = Vec::new();
    match ids {
        None => {
            for m in &all {
                list.push(select(to_json(ctx, m, &by_name, threads).await?, &props));
            }
        }
        Some(ids) => {
            let mut seen = HashSet::new();
            for id in ids {
                if !seen.insert(id.clone()) {
                    continue;
                }
                match parse_mailbox_id(&id).and_then(|n| all.iter().find(|m| m.id == n)) {
                    Some(m) => list.push(select(to_json(ctx, m, &by_name, threads).await?, &props)),
                    None => not_found.push(json!(id)),
                }
            }
        }
    }
    Ok(json!({
        "accountId": ctx.account_id,
        "state": state_string(state),
        "list": list,
        "notFound": not_found,
    }))
}

pub async fn changes(ctx: &mut Ctx, args: Map<String, Value>) -> Result<Value, MethodError> {
    let (mut out, c) = super::methods::changes(ctx, &args, JmapKind::Mailbox, mailbox_id).await?;
    let updated_props = if c.counts_only && !c.updated.is_empty() {
        json!(COUNT_PROPERTIES)
    } else {
        Value::Null
    };
    out.insert("updatedProperties".into(), updated_props);
    Ok(Value::Object(out))
}

/// The ids a Mailbox/query's filter and sort give, in order.
async fn results(ctx: &Ctx, args: &Map<String, Value>) -> Result<Vec<u64>, MethodError> {
    let all = mailboxes(ctx).await?;
    let by_name: HashMap<&str, u64> = all.iter().map(|m| (m.name.as_str(), m.id)).collect();
    let filter = match args.get("filter") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(f)) => f.clone(),
        Some(_) => return Err(MethodError::invalid("filter must be an object")),
    };
    for k in filter.keys() {
        if !["parentId", "name", "role", "hasAnyRole", "isSubscribed"].contains(&k.as_str()) {
            return Err(MethodError::UnsupportedFilter(format!(
                "unsupported filter {k}"
            )));
        }
    }
    let mut rows: Vec<&MailboxInfo> = all
        .iter()
        .filter(|m| {
            let parent = parent_name(&m.name)
                .and_then(|p| by_name.get(p))
                .map(|i| mailbox_id(*i));
            filter.iter().all(|(k, v)| match k.as_str() {
                "parentId" => match v {
                    Value::Null => parent.is_none(),
                    Value::String(s) => parent.as_deref() == Some(s.as_str()),
                    _ => false,
                },
                "name" => v
                    .as_str()
                    .is_some_and(|s| leaf(&m.name).to_lowercase().contains(&s.to_lowercase())),
                "role" => match v {
                    Value::Null => role(m).is_none(),
                    Value::String(s) => role(m) == Some(s.as_str()),
                    _ => false,
                },
                "hasAnyRole" => v.as_bool() == Some(role(m).is_some()),
                "isSubscribed" => v.as_bool() == Some(m.subscribed),
                _ => false,
            })
        })
        .collect();
    if let Some(sort) = args.get("sort").and_then(Value::as_array) {
        let orders = sort_orders(ctx, &rows).await?;
        let mut keys = Vec::new();
        for s in sort {
            let prop = s.get("property").and_then(Value::as_str).unwrap_or("");
            let asc = s
                .get("isAscending")
                .and_then(Value::as_bool)
                .unwrap_or(true);
            if !["name", "sortOrder"].contains(&prop) {
                return Err(MethodError::UnsupportedSort(format!(
                    "cannot sort by {prop}"
                )));
            }
            keys.push((prop.to_string(), asc));
        }
        rows.sort_by(|a, b| {
            for (p, asc) in &keys {
                let o = if p == "name" {
                    leaf(&a.name)
                        .to_lowercase()
                        .cmp(&leaf(&b.name).to_lowercase())
                } else {
                    orders.get(&a.id).cmp(&orders.get(&b.id))
                };
                let o = if *asc { o } else { o.reverse() };
                if o != std::cmp::Ordering::Equal {
                    return o;
                }
            }
            std::cmp::Ordering::Equal
        });
    }
    Ok(rows.iter().map(|m| m.id).collect())
}

/// Mailbox/queryChanges (RFC 8620 5.6): every mailbox the journal shows
/// changed since the old state is reported removed, and added again at
/// its index if it is in the results now; the others keep their relative
/// order (the filters and sorts depend only on a mailbox's own
/// properties), so the client's splice gives the new results.
pub async fn query_changes(ctx: &mut Ctx, args: Map<String, Value>) -> Result<Value, MethodError> {
    let since = args
        .get("sinceQueryState")
        .and_then(Value::as_str)
        .ok_or_else(|| MethodError::invalid("sinceQueryState is required"))?;
    let max_changes = match args.get("maxChanges") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(n) if n > 0 => Some(n as usize),
            _ => return Err(MethodError::invalid("maxChanges must be positive")),
        },
    };
    let since = super::methods::parse_state(since).ok_or(MethodError::CannotCalculateChanges)?;
    let c = super::methods::query_changes_since(ctx, JmapKind::Mailbox, since).await?;
    let ids = results(ctx, &args).await?;
    let (removed, added) = super::methods::splice(&c, &ids, mailbox_id, max_changes)?;
    let mut out = json!({
        "accountId": ctx.account_id,
        "oldQueryState": state_string(c.old_state),
        "newQueryState": state_string(c.new_state),
        "removed": removed,
        "added": added,
    });
    if args.get("calculateTotal").and_then(Value::as_bool) == Some(true) {
        out["total"] = json!(ids.len());
    }
    Ok(out)
}

pub async fn query(ctx: &mut Ctx, args: Map<String, Value>) -> Result<Value, MethodError> {
    let state = ctx.store().jmap_state(&ctx.user, JmapKind::Mailbox).await?;
    let ids: Vec<String> = results(ctx, &args)
        .await?
        .into_iter()
        .map(mailbox_id)
        .collect();
    let total = ids.len();
    let mut position = args.get("position").and_then(Value::as_i64).unwrap_or(0);
    if let Some(anchor) = args.get("anchor").and_then(Value::as_str) {
        let i = ids
            .iter()
            .position(|x| x == anchor)
            .ok_or(MethodError::AnchorNotFound)? as i64;
        position = (i + args
            .get("anchorOffset")
            .and_then(Value::as_i64)
            .unwrap_or(0))
        .max(0);
    } else if position < 0 {
        position = (total as i64 + position).max(0);
    }
    let limit = match args.get("limit") {
        None | Some(Value::Null) => usize::MAX,
        Some(v) => v
            .as_u64()
            .ok_or_else(|| MethodError::invalid("limit must be a non-negative integer"))?
            as usize,
    };
    let page: Vec<&String> = ids.iter().skip(position as usize).take(limit).collect();
    let mut out = json!({
        "accountId": ctx.account_id,
        "queryState": state_string(state),
        "canCalculateChanges": true,
        "position": position.min(total as i64),
        "ids": page,
    });
    if args.get("calculateTotal").and_then(Value::as_bool) == Some(true) {
        out["total"] = json!(total);
    }
    Ok(out)
}

/// Checks `ifInState` against the current state.
async fn check_state(
    ctx: &Ctx,
    args: &Map<String, Value>,
    kind: JmapKind,
) -> Result<u64, MethodError> {
    let state = ctx.store().jmap_state(&ctx.user, kind).await?;
    match args.get("ifInState") {
        None | Some(Value::Null) => Ok(state),
        Some(Value::String(s)) if *s == state_string(state) => Ok(state),
        _ => Err(MethodError::StateMismatch),
    }
}

/// The full name of a mailbox named `name` under `parent` (a mailbox id,
/// a creation reference, or null).
fn full_name(ctx: &Ctx, all: &[MailboxInfo], name: &str, parent: &Value) -> Result<String, Value> {
    if name.is_empty()
        || name.contains(DELIMITER)
        || name.chars().any(char::is_control)
        || name.len() > 490
    {
        return Err(set_error(
            "invalidProperties",
            "name is empty, too long or contains '/'",
        )
        .with_props(&["name"]));
    }
    let parent_full = match parent {
        Value::Null => None,
        Value::String(p) => {
            let id = ctx.resolve_id(p).and_then(|x| parse_mailbox_id(&x));
            match id.and_then(|n| all.iter().find(|m| m.id == n)) {
                Some(m) => Some(m.name.clone()),
                None => {
                    return Err(
                        set_error("invalidProperties", "no such parent").with_props(&["parentId"])
                    )
                }
            }
        }
        _ => {
            return Err(
                set_error("invalidProperties", "parentId must be an id or null")
                    .with_props(&["parentId"]),
            )
        }
    };
    let full = match parent_full {
        Some(p) => format!("{p}{DELIMITER}{name}"),
        None if name.eq_ignore_ascii_case("INBOX") => "INBOX".to_string(),
        None => name.to_string(),
    };
    crate::store::normalize_name(&full).map_err(|_| {
        set_error("invalidProperties", "not a valid mailbox name").with_props(&["name"])
    })
}

trait WithProps {
    fn with_props(self, p: &[&str]) -> Value;
}

impl WithProps for Value {
    fn with_props(mut self, p: &[&str]) -> Value {
        self["properties"] = json!(p);
        self
    }
}

fn store_set_error(e: StoreError) -> Result<Value, MethodError> {
    match e {
        StoreError::MailboxExists => Ok(set_error(
            "alreadyExists",
            "a mailbox with that name exists",
        )),
        StoreError::BadName => {
            Ok(set_error("invalidProperties", "not a valid mailbox name").with_props(&["name"]))
        }
        StoreError::NoSuchMailbox => Ok(set_error("notFound", "")),
        StoreError::NotAllowed(d) => Ok(set_error("forbidden", d)),
        StoreError::OverQuota | StoreError::DiskFull => Ok(set_error("overQuota", "")),
        e => Err(e.into()),
    }
}

pub async fn set(ctx: &mut Ctx, args: Map<String, Value>) -> Result<Value, MethodError> {
    let old_state = check_state(ctx, &args, JmapKind::Mailbox).await?;
    let obj = |k: &str| -> Result<Map<String, Value>, MethodError> {
        match args.get(k) {
            None | Some(Value::Null) => Ok(Map::new()),
            Some(Value::Object(o)) => Ok(o.clone()),
            Some(_) => Err(MethodError::invalid(format!("{k} must be an object"))),
        }
    };
    let create = obj("create")?;
    let update = obj("update")?;
    let destroy: Vec<String> = match args.get("destroy") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| MethodError::invalid("destroy must be ids"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(MethodError::invalid("destroy must be an array")),
    };
    let max = ctx.services.config.http.max_objects_in_set as usize;
    if create.len() + update.len() + destroy.len() > max {
        return Err(MethodError::RequestTooLarge);
    }
    let remove_emails = args
        .get("onDestroyRemoveEmails")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let user = ctx.user.clone();
    let mut created = Map::new();
    let mut not_created = Map::new();
    // Creations whose parent is another creation of this request wait for it.
    let mut pending: Vec<(String, Value)> = create.into_iter().collect();
    loop {
        let mut progress = false;
        let mut waiting = Vec::new();
        for (cid, v) in pending {
            let parent = v.get("parentId").cloned().unwrap_or(Value::Null);
            if let Some(p) = parent.as_str().and_then(|p| p.strip_prefix('#')) {
                if !ctx.created_ids.contains_key(p) {
                    waiting.push((cid, v));
                    continue;
                }
            }
            progress = true;
            let all = mailboxes(ctx).await?;
            match create_one(ctx, &all, &v).await? {
                Ok(m) => {
                    let id = mailbox_id(m.id);
                    ctx.created(&cid, &id);
                    let all = mailboxes(ctx).await?;
                    let by_name: HashMap<&str, u64> =
                        all.iter().map(|m| (m.name.as_str(), m.id)).collect();
                    let now = all.iter().find(|x| x.id == m.id).unwrap_or(&m);
                    let mut o = to_json(ctx, now, &by_name, true).await?;
                    for k in ["name", "parentId", "role", "sortOrder", "isSubscribed"] {
                        if v.get(k).is_some() {
                            o.remove(k);
                        }
                    }
                    created.insert(cid, Value::Object(o));
                }
                Err(e) => {
                    not_created.insert(cid, e);
                }
            }
        }
        if waiting.is_empty() || !progress {
            for (cid, _) in waiting {
                not_created.insert(
                    cid,
                    set_error("invalidProperties", "parent not created").with_props(&["parentId"]),
                );
            }
            break;
        }
        pending = waiting;
    }
    let mut updated = Map::new();
    let mut not_updated = Map::new();
    for (id, patch) in update {
        let all = mailboxes(ctx).await?;
        let real = ctx.resolve_id(&id).unwrap_or_default();
        let Some(m) = parse_mailbox_id(&real)
            .and_then(|n| all.iter().find(|m| m.id == n))
            .cloned()
        else {
            not_updated.insert(id, set_error("notFound", ""));
            continue;
        };
        match update_one(ctx, &all, &m, &patch).await? {
            Ok(()) => {
                updated.insert(id, Value::Null);
            }
            Err(e) => {
                not_updated.insert(id, e);
            }
        }
    }
    let mut destroyed = Vec::new();
    let mut not_destroyed = Map::new();
    for id in destroy {
        let all = mailboxes(ctx).await?;
        let real = ctx.resolve_id(&id).unwrap_or_default();
        let Some(m) = parse_mailbox_id(&real)
            .and_then(|n| all.iter().find(|m| m.id == n))
            .cloned()
        else {
            not_destroyed.insert(id, set_error("notFound", ""));
            continue;
        };
        if m.name == "INBOX" {
            not_destroyed.insert(id, set_error("forbidden", "the inbox cannot be destroyed"));
            continue;
        }
        let child = format!("{}{DELIMITER}", m.name);
        if all.iter().any(|x| x.name.starts_with(&child)) {
            not_destroyed.insert(id, set_error("mailboxHasChild", ""));
            continue;
        }
        if m.exists > 0 && !remove_emails {
            not_destroyed.insert(id, set_error("mailboxHasEmail", ""));
            continue;
        }
        match ctx.store().delete_mailbox(&user, &m.name).await {
            Ok(()) => {
                let _ = ctx.store().subscribe(&user, &m.name, false).await;
                destroyed.push(json!(id));
            }
            Err(e) => {
                not_destroyed.insert(id, store_set_error(e)?);
            }
        }
    }
    let new_state = ctx.store().jmap_state(&ctx.user, JmapKind::Mailbox).await?;
    let or_null = |m: Map<String, Value>| {
        if m.is_empty() {
            Value::Null
        } else {
            Value::Object(m)
        }
    };
    Ok(json!({
        "accountId": ctx.account_id,
        "oldState": state_string(old_state),
        "newState": state_string(new_state),
        "created": or_null(created),
        "updated": or_null(updated),
        "destroyed": if destroyed.is_empty() { Value::Null } else { Value::Array(destroyed) },
        "notCreated": or_null(not_created),
        "notUpdated": or_null(not_updated),
        "notDestroyed": or_null(not_destroyed),
    }))
}

const SETTABLE: &[&str] = &["name", "parentId", "role", "sortOrder", "isSubscribed"];

fn unknown_props(v: &Map<String, Value>, m: Option<&MailboxInfo>) -> Vec<String> {
    v.iter()
        .filter(|(k, val)| {
            if SETTABLE.contains(&k.as_str()) {
                return false;
            }
            // Server-set properties may be sent with their current value.
            if let Some(m) = m {
                return !matches!(k.as_str(), "id")
                    || val.as_str() != Some(mailbox_id(m.id).as_str());
            }
            true
        })
        .map(|(k, _)| k.clone())
        .collect()
}

async fn create_one(
    ctx: &Ctx,
    all: &[MailboxInfo],
    v: &Value,
) -> Result<Result<MailboxInfo, Value>, MethodError> {
    let Some(o) = v.as_object() else {
        return Ok(Err(set_error("invalidProperties", "not an object")));
    };
    let bad = unknown_props(o, None);
    if !bad.is_empty() {
        let refs: Vec<&str> = bad.iter().map(String::as_str).collect();
        return Ok(Err(set_error(
            "invalidProperties",
            "unknown or server-set properties",
        )
        .with_props(&refs)));
    }
    let Some(name) = o.get("name").and_then(Value::as_str) else {
        return Ok(Err(
            set_error("invalidProperties", "name is required").with_props(&["name"])
        ));
    };
    let parent = o.get("parentId").cloned().unwrap_or(Value::Null);
    let full = match full_name(ctx, all, name, &parent) {
        Ok(f) => f,
        Err(e) => return Ok(Err(e)),
    };
    let special = match o.get("role") {
        None | Some(Value::Null) => None,
        Some(Value::String(r)) => match special_use_of_role(r) {
            Some(s) if !all.iter().any(|m| m.special_use == Some(s)) => Some(s),
            _ => {
                return Ok(Err(
                    set_error("invalidProperties", "role not available").with_props(&["role"])
                ))
            }
        },
        Some(_) => {
            return Ok(Err(
                set_error("invalidProperties", "role").with_props(&["role"])
            ))
        }
    };
    let order = match o.get("sortOrder") {
        None | Some(Value::Null) => None,
        Some(v) => match sort_order_value(v) {
            Ok(n) => Some(n),
            Err(e) => return Ok(Err(e)),
        },
    };
    let m = match ctx.store().create_mailbox(&ctx.user, &full, special).await {
        Ok(m) => m,
        Err(e) => return Ok(Err(store_set_error(e)?)),
    };
    if o.get("isSubscribed").and_then(Value::as_bool) == Some(true) {
        ctx.store().subscribe(&ctx.user, &full, true).await?;
    }
    if let Some(n) = order {
        ctx.store().set_sort_order(&ctx.user, m.id, Some(n)).await?;
    }
    Ok(Ok(m))
}

async fn update_one(
    ctx: &Ctx,
    all: &[MailboxInfo],
    m: &MailboxInfo,
    patch: &Value,
) -> Result<Result<(), Value>, MethodError> {
    let Some(o) = patch.as_object() else {
        return Ok(Err(set_error("invalidPatch", "not an object")));
    };
    let bad = unknown_props(o, Some(m));
    if !bad.is_empty() {
        let refs: Vec<&str> = bad.iter().map(String::as_str).collect();
        return Ok(Err(set_error(
            "invalidProperties",
            "unknown or server-set properties",
        )
        .with_props(&refs)));
    }
    let order = match o.get("sortOrder") {
        None => None,
        Some(v) => match sort_order_value(v) {
            Ok(n) => Some(n),
            Err(e) => return Ok(Err(e)),
        },
    };
    if let Some(r) = o.get("role") {
        if r.as_str() != role(m) && !(r.is_null() && role(m).is_none()) {
            return Ok(Err(set_error(
                "invalidProperties",
                "the role cannot be changed",
            )
            .with_props(&["role"])));
        }
    }
    if o.contains_key("name") || o.contains_key("parentId") {
        let name = match o.get("name") {
            Some(Value::String(s)) => s.clone(),
            Some(_) => {
                return Ok(Err(
                    set_error("invalidProperties", "name").with_props(&["name"])
                ))
            }
            None => leaf(&m.name).to_string(),
        };
        let parent = match o.get("parentId") {
            Some(p) => p.clone(),
            None => parent_name(&m.name)
                .and_then(|p| all.iter().find(|x| x.name == p))
                .map(|x| json!(mailbox_id(x.id)))
                .unwrap_or(Value::Null),
        };
        let full = match full_name(ctx, all, &name, &parent) {
            Ok(f) => f,
            Err(e) => return Ok(Err(e)),
        };
        if full != m.name {
            if m.name == "INBOX" {
                return Ok(Err(set_error("forbidden", "the inbox cannot be renamed")));
            }
            if let Err(e) = ctx.store().rename_mailbox(&ctx.user, &m.name, &full).await {
                return Ok(Err(store_set_error(e)?));
            }
        }
        if let Some(sub) = o.get("isSubscribed").and_then(Value::as_bool) {
            ctx.store().subscribe(&ctx.user, &full, sub).await?;
        }
        if let Some(n) = order {
            ctx.store().set_sort_order(&ctx.user, m.id, Some(n)).await?;
        }
        return Ok(Ok(()));
    }
    if let Some(sub) = o.get("isSubscribed") {
        let Some(sub) = sub.as_bool() else {
            return Ok(Err(
                set_error("invalidProperties", "isSubscribed").with_props(&["isSubscribed"])
            ));
        };
        ctx.store().subscribe(&ctx.user, &m.name, sub).await?;
    }
    if let Some(n) = order {
        ctx.store().set_sort_order(&ctx.user, m.id, Some(n)).await?;
    }
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jmap::session::{CORE, MAIL};

    async fn call(s: &crate::services::Services, calls: Value) -> Value {
        let req = crate::jmap::request::parse(
            json!({"using": [CORE, MAIL], "methodCalls": calls}),
            crate::jmap::session::CAPABILITIES,
            16,
        )
        .unwrap();
        crate::jmap::run(s.clone(), "u@localhost".into(), req).await
    }

    #[tokio::test]
    async fn rfc8620_5_6_mailbox_query_changes_splice_to_the_new_results() {
        let dir = tempfile::tempdir().unwrap();
        let s = crate::services::test_services(dir.path(), |_| {});
        s.store().ensure_user("u@localhost", None).await.unwrap();
        let q = json!({"sort": [{"property": "name"}]});
        let r = call(&s, json!([["Mailbox/query", q.clone(), "0"]])).await;
        let before = &r["methodResponses"][0][1];
        assert_eq!(before["canCalculateChanges"], true);
        let old_ids: Vec<Value> = before["ids"].as_array().unwrap().clone();
        let state = before["queryState"].as_str().unwrap().to_string();
        let junk = r["methodResponses"][0][1]["ids"][2]
            .as_str()
            .unwrap()
            .to_string();
        let r = call(
            &s,
            json!([["Mailbox/set", {
                "create": {"a": {"name": "Aardvark"}},
                "update": {junk.clone(): {"name": "Zebra"}},
            }, "1"]]),
        )
        .await;
        let created = r["methodResponses"][0][1]["created"]["a"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let mut args = q.as_object().unwrap().clone();
        args.insert("sinceQueryState".into(), json!(state));
        let r = call(
            &s,
            json!([
                ["Mailbox/queryChanges", Value::Object(args), "2"],
                ["Mailbox/query", q, "3"],
            ]),
        )
        .await;
        let ch = &r["methodResponses"][0][1];
        let now: Vec<Value> = r["methodResponses"][1][1]["ids"]
            .as_array()
            .unwrap()
            .clone();
        // the client's splice: drop removed, insert added at their index
        let removed: Vec<Value> = ch["removed"].as_array().unwrap().clone();
        let mut spliced: Vec<Value> = old_ids
            .into_iter()
            .filter(|i| !removed.contains(i))
            .collect();
        let mut added: Vec<(usize, Value)> = ch["added"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| (a["index"].as_u64().unwrap() as usize, a["id"].clone()))
            .collect();
        added.sort_by_key(|a| a.0);
        for (i, id) in added {
            spliced.insert(i, id);
        }
        assert_eq!(spliced, now, "{ch}");
        assert_eq!(now.first(), Some(&json!(created)));
        assert_eq!(now.last(), Some(&json!(junk)));
        // an unknown state cannot be calculated
        let r = call(
            &s,
            json!([["Mailbox/queryChanges", {"sinceQueryState": "bogus"}, "4"]]),
        )
        .await;
        assert_eq!(r["methodResponses"][0][1]["type"], "cannotCalculateChanges");
    }

    #[tokio::test]
    async fn rfc8621_2_sort_order_is_stored_and_reported_as_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let s = crate::services::test_services(dir.path(), |_| {});
        s.store().ensure_user("u@localhost", None).await.unwrap();
        let r = call(&s, json!([["Mailbox/get", {"ids": null}, "0"]])).await;
        let got = &r["methodResponses"][0][1];
        let state0 = got["state"].as_str().unwrap().to_string();
        let list = got["list"].as_array().unwrap();
        let inbox = list.iter().find(|m| m["role"] == "inbox").unwrap();
        assert_eq!(inbox["sortOrder"], 1);
        let trash = list.iter().find(|m| m["role"] == "trash").unwrap();
        assert_eq!(trash["sortOrder"], 10);
        let trash_id = trash["id"].as_str().unwrap().to_string();
        let r = call(
            &s,
            json!([["Mailbox/set", {
                "create": {"a": {"name": "Archive", "sortOrder": 0}},
                "update": {trash_id.clone(): {"sortOrder": 99}},
            }, "1"]]),
        )
        .await;
        let set = &r["methodResponses"][0][1];
        assert_eq!(set["notCreated"], Value::Null, "{set}");
        assert_eq!(set["notUpdated"], Value::Null, "{set}");
        let archive = set["created"]["a"]["id"].as_str().unwrap().to_string();
        // bad values are refused, the old one kept
        let r = call(
            &s,
            json!([["Mailbox/set", {"update": {trash_id.clone(): {"sortOrder": -1}}}, "2"]]),
        )
        .await;
        assert_eq!(
            r["methodResponses"][0][1]["notUpdated"][&trash_id]["type"],
            "invalidProperties"
        );
        let r = call(
            &s,
            json!([
                ["Mailbox/get", {"ids": [trash_id.clone(), archive.clone()], "properties": ["sortOrder"]}, "3"],
                ["Mailbox/changes", {"sinceState": state0}, "4"],
                ["Mailbox/query", {"sort": [{"property": "sortOrder"}, {"property": "name"}]}, "5"],
            ]),
        )
        .await;
        let list = r["methodResponses"][0][1]["list"].as_array().unwrap();
        let order = |id: &str| list.iter().find(|m| m["id"] == id).unwrap()["sortOrder"].clone();
        assert_eq!(order(&trash_id), 99);
        assert_eq!(order(&archive), 0);
        let ch = &r["methodResponses"][1][1];
        assert!(
            ch["updated"].as_array().unwrap().contains(&json!(trash_id)),
            "{ch}"
        );
        let ids = r["methodResponses"][2][1]["ids"]
            .as_array()
            .unwrap()
            .clone();
        assert_eq!(ids.first(), Some(&json!(archive)));
        assert_eq!(ids.last(), Some(&json!(trash_id)));
    }

    #[tokio::test]
    async fn rfc8621_2_mailbox_set_get_changes() {
        let dir = tempfile::tempdir().unwrap();
        let s = crate::services::test_services(dir.path(), |_| {});
        s.store().ensure_user("u@localhost", None).await.unwrap();
        let r = call(&s, json!([["Mailbox/get", {"ids": null}, "0"]])).await;
        let state0 = r["methodResponses"][0][1]["state"]
            .as_str()
            .unwrap()
            .to_string();
        let list = r["methodResponses"][0][1]["list"].as_array().unwrap();
        assert_eq!(list.len(), 5);
        let inbox = list.iter().find(|m| m["role"] == "inbox").unwrap();
        assert_eq!(inbox["parentId"], Value::Null);
        assert_eq!(inbox["myRights"]["mayDelete"], false);
        assert!(list
            .iter()
            .any(|m| m["role"] == "trash" && m["name"] == "Trash"));
        let r = call(
            &s,
            json!([
                ["Mailbox/set", {"create": {"p": {"name": "Projects"}, "c": {"name": "Q1", "parentId": "#p"}}}, "1"],
                ["Mailbox/get", {"#ids": {"resultOf": "1", "name": "Mailbox/set", "path": "/created/c/id"}}, "2"],
            ]),
        )
        .await;
        let set = &r["methodResponses"][0][1];
        assert_eq!(set["notCreated"], Value::Null, "{set}");
        let got = &r["methodResponses"][1][1];
        assert!(got.is_object(), "{r}");
        let names: Vec<String> = s
            .store()
            .list("u@localhost")
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert!(names.contains(&"Projects/Q1".to_string()), "{names:?}");
        let r = call(
            &s,
            json!([["Mailbox/changes", {"sinceState": state0}, "3"]]),
        )
        .await;
        let ch = &r["methodResponses"][0][1];
        assert_eq!(ch["created"].as_array().unwrap().len(), 2, "{ch}");
        // mailboxHasChild, then rename, then destroy.
        let p = set["created"]["p"]["id"].as_str().unwrap().to_string();
        let c = set["created"]["c"]["id"].as_str().unwrap().to_string();
        let r = call(&s, json!([["Mailbox/set", {"destroy": [p.clone()]}, "4"]])).await;
        assert_eq!(
            r["methodResponses"][0][1]["notDestroyed"][&p]["type"],
            "mailboxHasChild"
        );
        let r = call(&s, json!([["Mailbox/set", {"update": {c.clone(): {"name": "Q2", "parentId": null}}}, "5"]])).await;
        assert!(
            r["methodResponses"][0][1]["updated"].get(&c).is_some(),
            "{r}"
        );
        assert!(s.store().status("u@localhost", "Q2").await.is_ok());
        let r = call(
            &s,
            json!([["Mailbox/set", {"destroy": [c.clone(), "F00000000000000ff"]}, "6"]]),
        )
        .await;
        assert_eq!(r["methodResponses"][0][1]["destroyed"], json!([c]));
        assert_eq!(
            r["methodResponses"][0][1]["notDestroyed"]["F00000000000000ff"]["type"],
            "notFound"
        );
        let r = call(
            &s,
            json!([["Mailbox/set", {"ifInState": "999", "destroy": []}, "7"]]),
        )
        .await;
        assert_eq!(r["methodResponses"][0][1]["type"], "stateMismatch");
        let r = call(&s, json!([["Mailbox/changes", {"sinceState": "x"}, "8"]])).await;
        assert_eq!(r["methodResponses"][0][1]["type"], "cannotCalculateChanges");
    }
}
