//! JMAP for Contacts (RFC 9610) over the personal address book in the
//! directory (`directory::pab`, docs/pab.md): `AddressBook/get` (one
//! default book per user), `ContactCard/get|changes|query|set`, and the
//! compose completion source `msgd:Directory/query` (active users of the
//! directory by prefix: name and address only, at most 20).
//!
//! Cards are JSContact (RFC 9553) reduced to what the book keeps: `name`
//! (`full`, `given` and `surname` components), `emails`, `phones`,
//! `organizations`, `notes`. Other JSContact properties sent by a client
//! are not kept (they do not come back from `/get`).

use serde_json::{json, Map, Value};

use super::error::set_error;
use super::identity::{map_or_null, set_args};
use super::methods::{ids_arg, properties_arg, select};
use super::{Ctx, MethodError};
use crate::directory::pab::{self, Contact, PabError};

/// The one address book of every account.
pub const BOOK_ID: &str = "default";

fn method_error(e: PabError) -> MethodError {
    match e {
        PabError::NotConfigured => MethodError::AccountNotSupportedByMethod,
        PabError::Temporary(t) => {
            tracing::warn!(error = %t, "address book unavailable");
            MethodError::ServerUnavailable
        }
        other => MethodError::ServerFail(other.to_string()),
    }
}

fn item_error(e: PabError) -> Result<Value, MethodError> {
    Ok(match e {
        PabError::Invalid(why) => set_error("invalidProperties", why),
        PabError::Full => set_error("overQuota", "the address book is full"),
        PabError::NotFound => set_error("notFound", ""),
        other => return Err(method_error(other)),
    })
}

/// A contact as a JSContact Card with the RFC 9610 properties.
pub fn card(c: &Contact) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("@type".into(), json!("Card"));
    m.insert("version".into(), json!("1.0"));
    m.insert("id".into(), json!(c.id));
    m.insert("uid".into(), json!(format!("urn:msgd:contact:{}", c.id)));
    m.insert("addressBookIds".into(), json!({ BOOK_ID: true }));
    let mut name = Map::new();
    name.insert("@type".into(), json!("Name"));
    if !c.full_name.is_empty() {
        name.insert("full".into(), json!(c.full_name));
    }
    let mut components = Vec::new();
    if !c.given_name.is_empty() {
        components.push(json!({"@type": "NameComponent", "kind": "given", "value": c.given_name}));
    }
    if !c.surname.is_empty() {
        components.push(json!({"@type": "NameComponent", "kind": "surname", "value": c.surname}));
    }
    if !components.is_empty() {
        name.insert("components".into(), Value::Array(components));
    }
    if name.len() > 1 {
        m.insert("name".into(), Value::Object(name));
    }
    let keyed = |prefix: &str, field: &str, ty: &str, values: &[String]| -> Value {
        let mut o = Map::new();
        for (i, v) in values.iter().enumerate() {
            o.insert(format!("{prefix}{}", i + 1), json!({"@type": ty, field: v}));
        }
        Value::Object(o)
    };
    if !c.emails.is_empty() {
        m.insert(
            "emails".into(),
            keyed("e", "address", "EmailAddress", &c.emails),
        );
    }
    if !c.phones.is_empty() {
        m.insert("phones".into(), keyed("p", "number", "Phone", &c.phones));
    }
    if !c.organizations.is_empty() {
        m.insert(
            "organizations".into(),
            keyed("o", "name", "Organization", &c.organizations),
        );
    }
    if !c.notes.is_empty() {
        m.insert(
            "notes".into(),
            json!({"n1": {"@type": "Note", "note": c.notes}}),
        );
    }
    m
}

/// The contact a Card describes (`id` given by the caller); the error
/// names the offending property.
pub fn contact_of(id: &str, card: &Map<String, Value>) -> Result<Contact, String> {
    let mut c = Contact {
        id: id.to_string(),
        ..Default::default()
    };
    if let Some(books) = card.get("addressBookIds") {
        let ok = books
            .as_object()
            .is_some_and(|b| b.len() == 1 && b.get(BOOK_ID) == Some(&Value::Bool(true)));
        if !ok {
            return Err("addressBookIds".into());
        }
    }
    match card.get("name") {
        None | Some(Value::Null) => {}
        Some(Value::Object(n)) => {
            if let Some(f) = n.get("full") {
                c.full_name = f.as_str().ok_or("name/full")?.to_string();
            }
            if let Some(comps) = n.get("components") {
                for comp in comps.as_array().ok_or("name/components")? {
                    let kind = comp.get("kind").and_then(Value::as_str).unwrap_or("");
                    let value = comp
                        .get("value")
                        .and_then(Value::as_str)
                        .ok_or("name/components")?;
                    match kind {
                        "given" => c.given_name = value.to_string(),
                        "surname" => c.surname = value.to_string(),
                        _ => {}
                    }
                }
            }
        }
        Some(_) => return Err("name".into()),
    }
    let values = |prop: &str, field: &str| -> Result<Vec<String>, String> {
        match card.get(prop) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Object(o)) => {
                let mut keyed: Vec<(&String, &Value)> = o.iter().collect();
                keyed.sort_by(|a, b| {
                    let pref =
                        |v: &Value| v.get("pref").and_then(Value::as_u64).unwrap_or(u64::MAX);
                    pref(a.1).cmp(&pref(b.1)).then(a.0.cmp(b.0))
                });
                keyed
                    .into_iter()
                    .map(|(_, v)| {
                        v.get(field)
                            .and_then(Value::as_str)
                            .map(|s| s.trim().to_string())
                            .ok_or_else(|| format!("{prop}/{field}"))
                    })
                    .collect()
            }
            Some(_) => Err(prop.to_string()),
        }
    };
    c.emails = values("emails", "address")?;
    c.phones = values("phones", "number")?;
    c.organizations = values("organizations", "name")?;
    c.notes = values("notes", "note")?.join("\n\n");
    Ok(c)
}

/// RFC 8620 5.3 PatchObject: each key a JSON pointer (`name/full`,
/// `emails/e1`), null removes.
pub fn apply_patch(obj: &mut Map<String, Value>, patch: &Map<String, Value>) -> Result<(), String> {
    for (path, value) in patch {
        let parts: Vec<String> = path
            .split('/')
            .map(|p| p.replace("~1", "/").replace("~0", "~"))
            .collect();
        if parts.iter().any(String::is_empty) || parts.len() > 8 {
            return Err(path.clone());
        }
        let (last, parents) = parts.split_last().ok_or_else(|| path.clone())?;
        let mut cur = &mut *obj;
        for p in parents {
            let next = cur
                .entry(p.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            cur = next.as_object_mut().ok_or_else(|| path.clone())?;
        }
        if value.is_null() {
            cur.remove(last);
        } else {
            cur.insert(last.clone(), value.clone());
        }
    }
    Ok(())
}

/// Does `c` match a FilterCondition (RFC 9610 3.3.1: text, email, name,
/// inAddressBook)? Substring, case-insensitive.
fn matches(c: &Contact, filter: &Map<String, Value>) -> Result<bool, MethodError> {
    let has = |hay: &str, needle: &str| hay.to_lowercase().contains(&needle.to_lowercase());
    for (k, v) in filter {
        let s = v
            .as_str()
            .ok_or_else(|| MethodError::UnsupportedFilter(k.clone()))?;
        let names = [&c.full_name, &c.given_name, &c.surname];
        let ok = match k.as_str() {
            "inAddressBook" => s == BOOK_ID,
            "email" => c.emails.iter().any(|e| has(e, s)),
            "name" => names.iter().any(|n| has(n, s)),
            "name/given" => has(&c.given_name, s),
            "name/surname" => has(&c.surname, s),
            "phone" => c.phones.iter().any(|p| has(p, s)),
            "note" => has(&c.notes, s),
            "text" => {
                names.iter().any(|n| has(n, s))
                    || c.emails.iter().any(|e| has(e, s))
                    || c.phones.iter().any(|p| has(p, s))
                    || c.organizations.iter().any(|o| has(o, s))
                    || has(&c.notes, s)
            }
            _ => return Err(MethodError::UnsupportedFilter(k.clone())),
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A FilterOperator or FilterCondition (RFC 8620 5.5), bounded depth.
fn filter_ok(c: &Contact, f: &Value, depth: usize) -> Result<bool, MethodError> {
    let Some(o) = f.as_object() else {
        return Err(MethodError::invalid("filter must be an object"));
    };
    if depth > 8 {
        return Err(MethodError::UnsupportedFilter("too deep".into()));
    }
    if let Some(op) = o.get("operator").and_then(Value::as_str) {
        let conds = o
            .get("conditions")
            .and_then(Value::as_array)
            .ok_or_else(|| MethodError::invalid("conditions"))?;
        let mut results = Vec::with_capacity(conds.len());
        for x in conds {
            results.push(filter_ok(c, x, depth + 1)?);
        }
        return match op {
            "AND" => Ok(results.iter().all(|r| *r)),
            "OR" => Ok(results.iter().any(|r| *r)),
            "NOT" => Ok(!results.iter().any(|r| *r)),
            _ => Err(MethodError::UnsupportedFilter(op.into())),
        };
    }
    matches(c, o)
}

async fn snapshot(ctx: &Ctx) -> Result<pab::Snapshot, MethodError> {
    ctx.services
        .directory
        .pab_list(&ctx.user)
        .await
        .map_err(method_error)
}

pub async fn book_get(ctx: &mut Ctx, args: Map<String, Value>) -> Result<Value, MethodError> {
    let ids = ids_arg(ctx, &args)?;
    let book = json!({
        "id": BOOK_ID,
        "name": "Personal",
        "description": null,
        "sortOrder": 0,
        "isDefault": true,
        "isSubscribed": true,
        "shareWith": null,
        "myRights": {"mayRead": true, "mayWrite": true, "mayShare": false, "mayDelete": false},
    });
    let (mut list, mut not_found) = (Vec::new(), Vec::new());
    match ids {
        None => list.push(book),
        Some(ids) => {
            for id in ids {
                if id == BOOK_ID {
                    list.push(book.clone());
                } else {
                    not_found.push(json!(id));
                }
            }
        }
    }
    Ok(json!({"accountId": ctx.account_id, "state": "1", "list": list, "notFound": not_found}))
}

const PROPERTIES: &[&str] = &[
    "id",
    "@type",
    "version",
    "uid",
    "addressBookIds",
    "name",
    "emails",
    "phones",
    "organizations",
    "notes",
];

pub async fn get(ctx: &mut Ctx, args: Map<String, Value>) -> Result<Value, MethodError> {
    let ids = ids_arg(ctx, &args)?;
    let props = properties_arg(&args, PROPERTIES)?;
    let snap = snapshot(ctx).await?;
    let (mut list, mut not_found) = (Vec::new(), Vec::new());
    match ids {
        None => {
            let max = ctx.services.config.http.max_objects_in_get as usize;
            if snap.contacts.len() > max {
                return Err(MethodError::RequestTooLarge);
            }
            list = snap
                .contacts
                .iter()
                .map(|c| select(card(c), &props))
                .collect();
        }
        Some(ids) => {
            for id in ids {
                match snap.contacts.iter().find(|c| c.id == id) {
                    Some(c) => list.push(select(card(c), &props)),
                    None => not_found.push(json!(id)),
                }
            }
        }
    }
    Ok(
        json!({"accountId": ctx.account_id, "state": snap.state, "list": list, "notFound": not_found}),
    )
}

pub async fn changes(ctx: &mut Ctx, args: Map<String, Value>) -> Result<Value, MethodError> {
    let since = args
        .get("sinceState")
        .and_then(Value::as_str)
        .ok_or_else(|| MethodError::invalid("sinceState is required"))?;
    let c = ctx
        .services
        .directory
        .pab_changes(&ctx.user, since)
        .await
        .map_err(method_error)?
        .ok_or(MethodError::CannotCalculateChanges)?;
    Ok(json!({
        "accountId": ctx.account_id,
        "oldState": since,
        "newState": c.new_state,
        "hasMoreChanges": false,
        "created": c.created,
        "updated": c.updated,
        "destroyed": c.destroyed,
    }))
}

pub async fn query(ctx: &mut Ctx, args: Map<String, Value>) -> Result<Value, MethodError> {
    let snap = snapshot(ctx).await?;
    let mut hits: Vec<&Contact> = Vec::new();
    for c in &snap.contacts {
        let ok = match args.get("filter") {
            None | Some(Value::Null) => true,
            Some(f) => filter_ok(c, f, 0)?,
        };
        if ok {
            hits.push(c);
        }
    }
    let mut descending = false;
    if let Some(sort) = args.get("sort").and_then(Value::as_array) {
        for s in sort {
            match s.get("property").and_then(Value::as_str) {
                Some("name") | Some("name/full") => {}
                other => return Err(MethodError::UnsupportedSort(other.unwrap_or("").into())),
            }
            descending = s.get("isAscending") == Some(&Value::Bool(false));
        }
    }
    hits.sort_by_cached_key(|c| (c.display_name().to_lowercase(), c.id.clone()));
    if descending {
        hits.reverse();
    }
    let total = hits.len();
    let position = args.get("position").and_then(Value::as_i64).unwrap_or(0);
    let start = if position < 0 {
        total.saturating_sub(position.unsigned_abs() as usize)
    } else {
        (position as usize).min(total)
    };
    let max = ctx.services.config.http.max_objects_in_get as usize;
    let limit = args
        .get("limit")
        .and_then(Value::as_u64)
        .map_or(max, |l| (l as usize).min(max));
    let ids: Vec<Value> = hits[start..]
        .iter()
        .take(limit)
        .map(|c| json!(c.id))
        .collect();
    Ok(json!({
        "accountId": ctx.account_id,
        "queryState": snap.state,
        "canCalculateChanges": false,
        "position": start,
        "total": total,
        "limit": limit,
        "ids": ids,
    }))
}

pub async fn set(ctx: &mut Ctx, args: Map<String, Value>) -> Result<Value, MethodError> {
    let snap = snapshot(ctx).await?;
    let a = set_args(ctx, &args, &snap.state)?;
    let dir = ctx.services.directory.clone();
    let user = ctx.user.clone();
    let (mut created, mut not_created) = (Map::new(), Map::new());
    for (cid, obj) in a.create {
        let id = pab::new_id();
        let c = match contact_of(&id, &obj) {
            Ok(c) => c,
            Err(p) => {
                let mut e = set_error("invalidProperties", "");
                e["properties"] = json!([p]);
                not_created.insert(cid, e);
                continue;
            }
        };
        match dir.pab_put(&user, c.clone(), true).await {
            Ok(()) => {
                ctx.created(&cid, &id);
                let mut m = Map::new();
                m.insert("id".into(), json!(id));
                m.insert("uid".into(), card(&c)["uid"].clone());
                created.insert(cid, Value::Object(m));
            }
            Err(e) => {
                not_created.insert(cid, item_error(e)?);
            }
        }
    }
    let (mut updated, mut not_updated) = (Map::new(), Map::new());
    for (id, patch) in a.update {
        let Some(current) = snap.contacts.iter().find(|c| c.id == id) else {
            not_updated.insert(id, set_error("notFound", ""));
            continue;
        };
        let mut obj = card(current);
        let next = apply_patch(&mut obj, &patch)
            .map_err(|p| vec![p])
            .and_then(|()| contact_of(&id, &obj).map_err(|p| vec![p]));
        let c = match next {
            Ok(c) => c,
            Err(p) => {
                let mut e = set_error("invalidPatch", "");
                e["properties"] = json!(p);
                not_updated.insert(id, e);
                continue;
            }
        };
        match dir.pab_put(&user, c, false).await {
            Ok(()) => {
                updated.insert(id, Value::Null);
            }
            Err(e) => {
                not_updated.insert(id, item_error(e)?);
            }
        }
    }
    let (mut destroyed, mut not_destroyed) = (Vec::new(), Map::new());
    for id in a.destroy {
        match dir.pab_delete(&user, &id).await {
            Ok(()) => destroyed.push(json!(id)),
            Err(e) => {
                not_destroyed.insert(id, item_error(e)?);
            }
        }
    }
    let new_state = snapshot(ctx).await?.state;
    Ok(json!({
        "accountId": ctx.account_id,
        "oldState": snap.state,
        "newState": new_state,
        "created": map_or_null(created),
        "updated": map_or_null(updated),
        "destroyed": if destroyed.is_empty() { Value::Null } else { Value::Array(destroyed) },
        "notCreated": map_or_null(not_created),
        "notUpdated": map_or_null(not_updated),
        "notDestroyed": map_or_null(not_destroyed),
    }))
}

/// `msgd:Directory/query` `{accountId, text}`: active users of the
/// directory whose address (or, in LDAP, name) starts with `text`; at
/// most 20, `{name, email}` only.
pub async fn directory_query(
    ctx: &mut Ctx,
    args: Map<String, Value>,
) -> Result<Value, MethodError> {
    let text = args
        .get("text")
        .and_then(Value::as_str)
        .ok_or_else(|| MethodError::invalid("text is required"))?;
    if text.len() > 256 {
        return Err(MethodError::invalid("text too long"));
    }
    let hits = ctx
        .services
        .directory
        .complete_users(text)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "directory completion failed");
            MethodError::ServerUnavailable
        })?;
    Ok(json!({"accountId": ctx.account_id, "list": hits}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bob() -> Contact {
        Contact {
            id: "c1".into(),
            full_name: "Bob Jones".into(),
            given_name: "Bob".into(),
            surname: "Jones".into(),
            emails: vec!["bob@x.test".into(), "bj@y.test".into()],
            phones: vec!["+1 555 0100".into()],
            organizations: vec!["Example".into()],
            notes: "likes tea".into(),
        }
    }

    #[test]
    fn rfc9553_card_round_trips() {
        let c = bob();
        let card = card(&c);
        assert_eq!(card["@type"], "Card");
        assert_eq!(card["name"]["full"], "Bob Jones");
        assert_eq!(card["emails"]["e1"]["address"], "bob@x.test");
        assert_eq!(card["addressBookIds"][BOOK_ID], true);
        assert_eq!(contact_of("c1", &card).unwrap(), c);
    }

    #[test]
    fn rfc9553_pref_orders_emails_and_bad_types_name_the_property() {
        let card =
            json!({"emails": {"a": {"address": "two@x"}, "b": {"address": "one@x", "pref": 1}}});
        let c = contact_of("c1", card.as_object().unwrap()).unwrap();
        assert_eq!(c.emails, vec!["one@x", "two@x"]);
        let card = json!({"emails": {"a": {"number": "1"}}});
        assert_eq!(
            contact_of("c1", card.as_object().unwrap()),
            Err("emails/address".into())
        );
        let card = json!({"addressBookIds": {"other": true}});
        assert_eq!(
            contact_of("c1", card.as_object().unwrap()),
            Err("addressBookIds".into())
        );
    }

    #[test]
    fn rfc8620_5_3_patch_by_pointer() {
        let mut obj = card(&bob());
        let patch =
            json!({"name/full": "Robert Jones", "emails/e2": null, "phones/p9": {"number": "123"}});
        apply_patch(&mut obj, patch.as_object().unwrap()).unwrap();
        let c = contact_of("c1", &obj).unwrap();
        assert_eq!(c.full_name, "Robert Jones");
        assert_eq!(c.emails, vec!["bob@x.test"]);
        assert_eq!(c.phones.len(), 2);
        let bad = json!({"name/full/x": "y"});
        assert!(apply_patch(&mut obj, bad.as_object().unwrap()).is_err());
    }

    #[test]
    fn rfc9610_3_3_filters_text_email_name_and_operators() {
        let c = bob();
        let f = |v: Value| filter_ok(&c, &v, 0).unwrap();
        assert!(f(json!({"text": "TEA"})));
        assert!(f(json!({"email": "bj@"})));
        assert!(f(json!({"name": "jon"})));
        assert!(!f(json!({"name": "alice"})));
        assert!(f(
            json!({"operator": "OR", "conditions": [{"name": "alice"}, {"email": "bob@"}]})
        ));
        assert!(!f(
            json!({"operator": "NOT", "conditions": [{"email": "bob@"}]})
        ));
        assert!(filter_ok(&c, &json!({"birthday": "x"}), 0).is_err());
    }
}
