//! `Identity/get|set` (RFC 8621 6), and the per-user settings store that
//! identities, the vacation response and submission records share.
//!
//! Identities: one per address the user owns in the directory (the
//! primary address and every alias), id `I` + 16 hex digits of the
//! address's SHA-256, `mayDelete: false`; their name, replyTo, bcc and
//! signatures can be updated. More identities may be created, only for an
//! owned address (else `forbiddenFrom`), and destroyed. An identity whose
//! address the user no longer owns is not shown and cannot send.
//!
//! Settings live in the store as private server METADATA of the user
//! (`/private/vendor/msgd/...`, RFC 5464 entries of mailbox 0), so they
//! are kept with the mailbox, under the METADATA caps (docs/security.md).
//! Writes of settings are serialized by one process-wide lock (they are
//! rare; a read-modify-write must not lose a concurrent one).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::error::set_error;
use super::methods::{ids_arg, properties_arg, select};
use super::{Ctx, MethodError};
use crate::directory::Recipient;
use crate::store::{MetaDepth, MetaLimits, MetaRefusal};

/// The caps of the IMAP METADATA extension (one user's entries).
const LIMITS: MetaLimits = MetaLimits {
    max_value: 64 * 1024,
    max_entries: 256,
    max_bytes: 1024 * 1024,
};

/// Identities one user may create beyond the directory's.
pub const MAX_CREATED: usize = 50;
/// Longest name, in bytes.
const MAX_NAME: usize = 256;
/// Longest signature, in bytes.
const MAX_SIGNATURE: usize = 8 * 1024;
/// Most replyTo / bcc addresses.
const MAX_ADDRESSES: usize = 20;

/// Serializes read-modify-write cycles of settings (`Shared::settings`).
pub(super) async fn settings_lock(ctx: &Ctx) -> tokio::sync::OwnedMutexGuard<()> {
    ctx.services.web.jmap.settings.clone().lock_owned().await
}

fn entry(name: &str) -> String {
    format!("/private/vendor/msgd/{name}")
}

/// One settings value of `user`; the default when absent or unreadable
/// (e.g. written over IMAP SETMETADATA by hand: logged, not fatal).
pub(super) async fn load<T: DeserializeOwned + Default>(
    ctx: &Ctx,
    name: &str,
) -> Result<T, MethodError> {
    Ok(load_raw(ctx.store(), &ctx.user, name).await?)
}

/// `load` without a method context (delivery's vacation responder).
pub(super) async fn load_raw<T: DeserializeOwned + Default>(
    store: &crate::store::Store,
    user: &str,
    name: &str,
) -> Result<T, crate::store::StoreError> {
    let got = store
        .get_metadata(0, user, vec![entry(name)], MetaDepth::Zero)
        .await?;
    let Some((_, Some(bytes))) = got.into_iter().next() else {
        return Ok(T::default());
    };
    Ok(serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        tracing::warn!(user, entry = name, error = %e, "unreadable JMAP setting; using the default");
        T::default()
    }))
}

pub(super) async fn save<T: Serialize>(ctx: &Ctx, name: &str, v: &T) -> Result<(), MethodError> {
    match save_raw(ctx.store(), &ctx.user, name, v).await? {
        Ok(()) => Ok(()),
        Err(MetaRefusal::MaxSize(_)) | Err(MetaRefusal::TooMany) => Err(MethodError::Other(
            "overQuota",
            "the account's settings are full".into(),
        )),
    }
}

/// `save` without a method context.
pub(super) async fn save_raw<T: Serialize>(
    store: &crate::store::Store,
    user: &str,
    name: &str,
    v: &T,
) -> Result<Result<(), MetaRefusal>, crate::store::StoreError> {
    let bytes = serde_json::to_vec(v).unwrap_or_default();
    store
        .set_metadata(0, user, user, vec![(entry(name), Some(bytes))], LIMITS)
        .await
}

/// A short state string: 16 hex digits of a SHA-256 over `parts`.
pub(super) fn digest_state(parts: &[&[u8]]) -> String {
    let mut c = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        c.update(&(p.len() as u64).to_be_bytes());
        c.update(p);
    }
    c.finish().as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The addresses `ctx.user` owns: the primary first, then the aliases.
pub(super) async fn owned_addresses(ctx: &Ctx) -> Result<Vec<String>, MethodError> {
    match ctx.services.directory.lookup(&ctx.user).await {
        Ok(Some(Recipient::User(a))) => {
            let mut out = vec![a.address.to_lowercase()];
            for x in a.aliases {
                let x = x.to_lowercase();
                if !out.contains(&x) {
                    out.push(x);
                }
            }
            Ok(out)
        }
        Ok(_) => Ok(vec![ctx.user.to_lowercase()]),
        Err(e) => {
            tracing::warn!(error = %e, "directory lookup failed");
            Err(MethodError::ServerUnavailable)
        }
    }
}

/// The id of the identity of an owned address.
pub fn default_id(address: &str) -> String {
    format!("I{}", digest_state(&[address.to_lowercase().as_bytes()]))
}

/// What is stored per identity (defaults: only the fields set).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    pub id: String,
    pub email: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub reply_to: Value,
    #[serde(default)]
    pub bcc: Value,
    #[serde(default)]
    pub text_signature: String,
    #[serde(default)]
    pub html_signature: String,
    /// Made by Identity/set (may be destroyed).
    #[serde(default)]
    pub created: bool,
}

impl Stored {
    fn to_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("id".into(), json!(self.id));
        m.insert("name".into(), json!(self.name));
        m.insert("email".into(), json!(self.email));
        m.insert("replyTo".into(), self.reply_to.clone());
        m.insert("bcc".into(), self.bcc.clone());
        m.insert("textSignature".into(), json!(self.text_signature));
        m.insert("htmlSignature".into(), json!(self.html_signature));
        m.insert("mayDelete".into(), json!(self.created));
        m
    }

    /// Applies a create or update object; the error is the SetError.
    fn apply(&mut self, obj: &Map<String, Value>, creating: bool) -> Result<(), Value> {
        let bad = |p: &str, why: &str| {
            let mut e = set_error("invalidProperties", why);
            e["properties"] = json!([p]);
            e
        };
        for (k, v) in obj {
            match k.as_str() {
                "name" => {
                    let s = v.as_str().ok_or_else(|| bad("name", "must be a string"))?;
                    if s.len() > MAX_NAME || s.chars().any(char::is_control) {
                        return Err(bad("name", "too long or control characters"));
                    }
                    self.name = s.to_string();
                }
                "email" if creating => {}
                "email" => {
                    if v.as_str().map(str::to_lowercase) != Some(self.email.clone()) {
                        return Err(bad("email", "immutable"));
                    }
                }
                "replyTo" | "bcc" => {
                    check_addresses(v).map_err(|why| bad(k, why))?;
                    if k == "replyTo" {
                        self.reply_to = v.clone();
                    } else {
                        self.bcc = v.clone();
                    }
                }
                "textSignature" | "htmlSignature" => {
                    let s = v.as_str().ok_or_else(|| bad(k, "must be a string"))?;
                    if s.len() > MAX_SIGNATURE {
                        return Err(bad(k, "too long"));
                    }
                    if k == "textSignature" {
                        self.text_signature = s.to_string();
                    } else {
                        self.html_signature = s.to_string();
                    }
                }
                "id" | "mayDelete" => return Err(bad(k, "server-set")),
                _ => return Err(bad(k, "unknown property")),
            }
        }
        Ok(())
    }
}

/// `EmailAddress[]|null` (RFC 8621 4.1.2.3), bounded.
fn check_addresses(v: &Value) -> Result<(), &'static str> {
    match v {
        Value::Null => Ok(()),
        Value::Array(a) if a.len() <= MAX_ADDRESSES => {
            for x in a {
                let ok = x.as_object().is_some_and(|o| {
                    o.keys().all(|k| k == "name" || k == "email")
                        && o.get("email").and_then(Value::as_str).is_some_and(|e| {
                            e.len() <= 254 && e.contains('@') && !e.chars().any(char::is_whitespace)
                        })
                        && o.get("name").is_none_or(|n| {
                            n.is_null() || n.as_str().is_some_and(|s| s.len() <= MAX_NAME)
                        })
                });
                if !ok {
                    return Err("not an EmailAddress");
                }
            }
            Ok(())
        }
        _ => Err("must be null or at most 20 EmailAddress objects"),
    }
}

/// The user's identities: one per owned address (stored values applied),
/// then the created ones whose address is still owned.
pub async fn list(ctx: &Ctx) -> Result<(Vec<Stored>, String), MethodError> {
    let owned = owned_addresses(ctx).await?;
    let stored: Vec<Stored> = load(ctx, "identities").await?;
    Ok(merge(&owned, stored))
}

fn merge(owned: &[String], stored: Vec<Stored>) -> (Vec<Stored>, String) {
    let raw = serde_json::to_vec(&stored).unwrap_or_default();
    let state = digest_state(&[owned.join("\n").as_bytes(), &raw]);
    let mut out = Vec::new();
    for a in owned {
        let id = default_id(a);
        let s = stored
            .iter()
            .find(|s| s.id == id && !s.created)
            .cloned()
            .unwrap_or_else(|| Stored {
                id,
                email: a.clone(),
                ..Default::default()
            });
        out.push(Stored {
            email: a.clone(),
            created: false,
            ..s
        });
    }
    out.extend(
        stored
            .into_iter()
            .filter(|s| s.created && owned.contains(&s.email)),
    );
    (out, state)
}

const PROPERTIES: &[&str] = &[
    "id",
    "name",
    "email",
    "replyTo",
    "bcc",
    "textSignature",
    "htmlSignature",
    "mayDelete",
];

/// `Identity/changes`: identities keep no history; an unchanged state is
/// answered, any other is `cannotCalculateChanges` (clients reload).
pub async fn changes(ctx: &mut Ctx, args: Map<String, Value>) -> Result<Value, MethodError> {
    let since = args
        .get("sinceState")
        .and_then(Value::as_str)
        .ok_or_else(|| MethodError::invalid("sinceState is required"))?;
    let (_, state) = list(ctx).await?;
    if since != state {
        return Err(MethodError::CannotCalculateChanges);
    }
    Ok(json!({
        "accountId": ctx.account_id,
        "oldState": state,
        "newState": state,
        "hasMoreChanges": false,
        "created": [], "updated": [], "destroyed": [],
    }))
}

pub async fn get(ctx: &mut Ctx, args: Map<String, Value>) -> Result<Value, MethodError> {
    let ids = ids_arg(ctx, &args)?;
    let props = properties_arg(&args, PROPERTIES)?;
    let (all, state) = list(ctx).await?;
    let mut found = Vec::new();
    let mut not_found = Vec::new();
    match ids {
        None => found = all.iter().map(|s| select(s.to_json(), &props)).collect(),
        Some(ids) => {
            for id in ids {
                match all.iter().find(|s| s.id == id) {
                    Some(s) => found.push(select(s.to_json(), &props)),
                    None => not_found.push(json!(id)),
                }
            }
        }
    }
    Ok(json!({
        "accountId": ctx.account_id,
        "state": state,
        "list": found,
        "notFound": not_found,
    }))
}

/// The `create`/`update`/`destroy` arguments of a `/set` (RFC 8620 5.3),
/// with `ifInState` checked against `state`.
pub(super) struct SetArgs {
    pub create: Objects,
    pub update: Objects,
    pub destroy: Vec<String>,
}

/// (id, object) pairs of a `/set` argument.
pub(super) type Objects = Vec<(String, Map<String, Value>)>;

pub(super) fn set_args(
    ctx: &Ctx,
    args: &Map<String, Value>,
    state: &str,
) -> Result<SetArgs, MethodError> {
    if let Some(s) = args.get("ifInState").and_then(Value::as_str) {
        if s != state {
            return Err(MethodError::StateMismatch);
        }
    }
    let objects = |k: &str| -> Result<Objects, MethodError> {
        match args.get(k) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Object(m)) => m
                .iter()
                .map(|(id, v)| match v {
                    Value::Object(o) => Ok((id.clone(), o.clone())),
                    _ => Err(MethodError::invalid(format!("{k}: objects expected"))),
                })
                .collect(),
            Some(_) => Err(MethodError::invalid(format!("{k} must be an object"))),
        }
    };
    let create = objects("create")?;
    let update: Objects = objects("update")?
        .into_iter()
        .map(|(id, o)| (ctx.resolve_id(&id).unwrap_or(id), o))
        .collect();
    let destroy = match args.get("destroy") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(|s| ctx.resolve_id(s).unwrap_or_else(|| s.to_string()))
                    .ok_or_else(|| MethodError::invalid("destroy: ids expected"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => Err(MethodError::invalid("destroy must be an array"))?,
    };
    let max = ctx.services.config.http.max_objects_in_set as usize;
    if create.len() + update.len() + destroy.len() > max {
        return Err(MethodError::RequestTooLarge);
    }
    Ok(SetArgs {
        create,
        update,
        destroy,
    })
}

/// `{}` -> `null` for the created/updated/... maps of a `/set` answer.
pub(super) fn map_or_null(m: Map<String, Value>) -> Value {
    if m.is_empty() {
        Value::Null
    } else {
        Value::Object(m)
    }
}

pub async fn set(ctx: &mut Ctx, args: Map<String, Value>) -> Result<Value, MethodError> {
    let _lock = settings_lock(ctx).await;
    let owned = owned_addresses(ctx).await?;
    let mut stored: Vec<Stored> = load(ctx, "identities").await?;
    let (_, old_state) = merge(&owned, stored.clone());
    let a = set_args(ctx, &args, &old_state)?;
    let (mut created, mut not_created) = (Map::new(), Map::new());
    let (mut updated, mut not_updated) = (Map::new(), Map::new());
    let (mut destroyed, mut not_destroyed) = (Vec::new(), Map::new());
    for (cid, obj) in a.create {
        let email = obj
            .get("email")
            .and_then(Value::as_str)
            .map(|e| e.trim().to_lowercase());
        let Some(email) = email else {
            let mut e = set_error("invalidProperties", "email is required");
            e["properties"] = json!(["email"]);
            not_created.insert(cid, e);
            continue;
        };
        if !owned.contains(&email) {
            not_created.insert(
                cid,
                set_error("forbiddenFrom", "that address is not one of this account's"),
            );
            continue;
        }
        if stored.iter().filter(|s| s.created).count() >= MAX_CREATED {
            not_created.insert(cid, set_error("overQuota", "too many identities"));
            continue;
        }
        let mut s = Stored {
            id: format!("I{:016x}", rand::random::<u64>()),
            email,
            created: true,
            ..Default::default()
        };
        if let Err(e) = s.apply(&obj, true) {
            not_created.insert(cid, e);
            continue;
        }
        ctx.created(&cid, &s.id);
        created.insert(cid, json!({"id": s.id, "mayDelete": true}));
        stored.push(s);
    }
    for (id, patch) in a.update {
        let (current, _) = merge(&owned, stored.clone());
        let Some(mut s) = current.into_iter().find(|s| s.id == id) else {
            not_updated.insert(id, set_error("notFound", ""));
            continue;
        };
        if let Err(e) = s.apply(&patch, false) {
            not_updated.insert(id, e);
            continue;
        }
        stored.retain(|x| x.id != id);
        stored.push(s);
        updated.insert(id, Value::Null);
    }
    for id in a.destroy {
        let (current, _) = merge(&owned, stored.clone());
        match current.iter().find(|s| s.id == id) {
            None => {
                not_destroyed.insert(id, set_error("notFound", ""));
            }
            Some(s) if !s.created => {
                not_destroyed.insert(
                    id,
                    set_error(
                        "forbidden",
                        "the identity of a directory address cannot be destroyed",
                    ),
                );
            }
            Some(_) => {
                stored.retain(|x| x.id != id);
                destroyed.push(json!(id));
            }
        }
    }
    if !(created.is_empty() && updated.is_empty() && destroyed.is_empty()) {
        save(ctx, "identities", &stored).await?;
    }
    let (_, new_state) = merge(&owned, stored);
    Ok(json!({
        "accountId": ctx.account_id,
        "oldState": old_state,
        "newState": new_state,
        "created": map_or_null(created),
        "updated": map_or_null(updated),
        "destroyed": if destroyed.is_empty() { Value::Null } else { Value::Array(destroyed) },
        "notCreated": map_or_null(not_created),
        "notUpdated": map_or_null(not_updated),
        "notDestroyed": map_or_null(not_destroyed),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc8621_6_every_owned_address_is_an_identity_and_stale_ones_vanish() {
        let owned = vec!["a@x.test".to_string(), "alias@x.test".to_string()];
        let custom = Stored {
            id: "I1".into(),
            email: "gone@x.test".into(),
            created: true,
            ..Default::default()
        };
        let named = Stored {
            id: default_id("a@x.test"),
            email: "a@x.test".into(),
            name: "Alice".into(),
            ..Default::default()
        };
        let (list, s1) = merge(&owned, vec![named, custom]);
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].name, "Alice");
        assert_eq!(list[1].email, "alias@x.test");
        assert!(!list[0].created && !list[1].created);
        let (_, s2) = merge(&owned[..1], vec![]);
        assert_ne!(s1, s2);
    }

    #[test]
    fn rfc8621_6_email_is_immutable_and_properties_are_checked() {
        let mut s = Stored {
            id: "I1".into(),
            email: "a@x.test".into(),
            ..Default::default()
        };
        let patch = |v: Value| v.as_object().unwrap().clone();
        assert!(s
            .apply(&patch(json!({"email": "b@x.test"})), false)
            .is_err());
        assert!(s.apply(&patch(json!({"email": "A@x.test"})), false).is_ok());
        assert!(s
            .apply(&patch(json!({"replyTo": [{"email": "no at"}]})), false)
            .is_err());
        assert!(s.apply(&patch(json!({"mayDelete": true})), false).is_err());
        assert!(s
            .apply(
                &patch(json!({"textSignature": "x".repeat(MAX_SIGNATURE + 1)})),
                false
            )
            .is_err());
        s.apply(
            &patch(
                json!({"name": "A", "replyTo": [{"name": "R", "email": "r@y.test"}], "bcc": null}),
            ),
            false,
        )
        .unwrap();
        assert_eq!(s.name, "A");
        assert_eq!(s.to_json()["replyTo"][0]["email"], "r@y.test");
    }
}
