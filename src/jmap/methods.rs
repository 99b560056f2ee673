//! The dispatch table: method name -> the capability it needs in `using`
//! and the function that runs it. Helpers add their methods here (one
//! line in `capability`, one in `dispatch`), plus the argument helpers
//! every standard method shares (RFC 8620 5).

use serde_json::{json, Map, Value};

use super::session::{CONTACTS, CORE, MAIL, SUBMISSION, VACATION};
use super::{Ctx, MethodError};
use crate::store::{ChangesError, JmapKind};

/// The capability a method belongs to; None: no such method.
pub fn capability(name: &str) -> Option<&'static str> {
    let (object, _) = name.split_once('/')?;
    Some(match object {
        "Core" => CORE,
        "Mailbox" | "Thread" | "Email" | "SearchSnippet" => MAIL,
        "Identity" | "EmailSubmission" => SUBMISSION,
        "VacationResponse" => VACATION,
        "AddressBook" | "ContactCard" => CONTACTS,
        "msgd:Directory" => CONTACTS,
        _ => return None,
    })
}

/// Runs one method call.
pub async fn dispatch(
    ctx: &mut Ctx,
    name: &str,
    args: Map<String, Value>,
) -> Result<Value, MethodError> {
    match name {
        "Core/echo" => super::core::echo(ctx, args).await,
        "Mailbox/get" => super::mailbox::get(ctx, args).await,
        "Mailbox/changes" => super::mailbox::changes(ctx, args).await,
        "Mailbox/query" => super::mailbox::query(ctx, args).await,
        "Mailbox/queryChanges" => super::mailbox::query_changes(ctx, args).await,
        "Mailbox/set" => super::mailbox::set(ctx, args).await,
        "Thread/get" => super::thread::get(ctx, args).await,
        "Thread/changes" => super::thread::changes(ctx, args).await,
        "Identity/get" => super::identity::get(ctx, args).await,
        "Identity/set" => super::identity::set(ctx, args).await,
        "Identity/changes" => super::identity::changes(ctx, args).await,
        "EmailSubmission/get" => super::submission::get(ctx, args).await,
        "EmailSubmission/set" => super::submission::set(ctx, args).await,
        "EmailSubmission/query" => super::submission::query(ctx, args).await,
        "EmailSubmission/changes" => super::submission::changes(ctx, args).await,
        "VacationResponse/get" => super::vacation::get(ctx, args).await,
        "VacationResponse/set" => super::vacation::set(ctx, args).await,
        "AddressBook/get" => super::contacts::book_get(ctx, args).await,
        "ContactCard/get" => super::contacts::get(ctx, args).await,
        "ContactCard/changes" => super::contacts::changes(ctx, args).await,
        "ContactCard/query" => super::contacts::query(ctx, args).await,
        "ContactCard/set" => super::contacts::set(ctx, args).await,
        "msgd:Directory/query" => super::contacts::directory_query(ctx, args).await,
        "Email/get" => super::email::get::get(ctx, args).await,
        "Email/changes" => super::email::get::changes(ctx, args).await,
        "Email/query" => super::email::query::query(ctx, args).await,
        "Email/queryChanges" => super::email::query::query_changes(ctx, args).await,
        "Email/set" => super::email::set::set(ctx, args).await,
        "Email/import" => super::email::import::import(ctx, args).await,
        "Email/copy" => super::email::import::copy(ctx, args).await,
        "Email/parse" => super::email::import::parse(ctx, args).await,
        "SearchSnippet/get" => super::email::snippet::get(ctx, args).await,
        _ => Err(MethodError::UnknownMethod),
    }
}

/// The `ids` argument of a `/get`: None for null/absent (all), else the
/// ids, at most `maxObjectsInGet` (RFC 8620 5.1: `requestTooLarge`).
pub fn ids_arg(ctx: &Ctx, args: &Map<String, Value>) -> Result<Option<Vec<String>>, MethodError> {
    match args.get("ids") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => {
            if a.len() > ctx.services.config.http.max_objects_in_get as usize {
                return Err(MethodError::RequestTooLarge);
            }
            let mut out = Vec::with_capacity(a.len());
            for v in a {
                let s = v
                    .as_str()
                    .ok_or_else(|| MethodError::invalid("ids must be strings"))?;
                out.push(ctx.resolve_id(s).unwrap_or_else(|| s.to_string()));
            }
            Ok(Some(out))
        }
        Some(_) => Err(MethodError::invalid("ids must be an array or null")),
    }
}

/// The `properties` argument: None for all, else the names (each must be
/// in `known`: RFC 8620 5.1 `invalidArguments`). `id` is always returned.
pub fn properties_arg(
    args: &Map<String, Value>,
    known: &[&str],
) -> Result<Option<Vec<String>>, MethodError> {
    match args.get("properties") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) => {
            let mut out = Vec::with_capacity(a.len() + 1);
            for v in a {
                let s = v
                    .as_str()
                    .ok_or_else(|| MethodError::invalid("properties must be strings"))?;
                if !known.contains(&s) {
                    return Err(MethodError::invalid(format!("unknown property {s}")));
                }
                out.push(s.to_string());
            }
            if !out.iter().any(|p| p == "id") {
                out.push("id".into());
            }
            Ok(Some(out))
        }
        Some(_) => Err(MethodError::invalid("properties must be an array or null")),
    }
}

/// Keeps only the requested properties of an object.
pub fn select(mut obj: Map<String, Value>, properties: &Option<Vec<String>>) -> Value {
    if let Some(p) = properties {
        obj.retain(|k, _| p.iter().any(|x| x == k));
    }
    Value::Object(obj)
}

/// A journal state as the state string clients see.
pub fn state_string(state: u64) -> String {
    state.to_string()
}

/// Parses a state string of ours; None for anything else.
pub fn parse_state(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Every change of `kind` since `since`, for a `/queryChanges` (RFC 8620
/// 5.6): all of them, or `cannotCalculateChanges`.
pub async fn query_changes_since(
    ctx: &Ctx,
    kind: JmapKind,
    since: u64,
) -> Result<crate::store::JournalChanges, MethodError> {
    match ctx
        .store()
        .jmap_changes(&ctx.user, kind, since, 100_000)
        .await
    {
        Ok(c) if !c.has_more => Ok(c),
        Ok(_) | Err(ChangesError::CannotCalculate) => Err(MethodError::CannotCalculateChanges),
        Err(ChangesError::Store(e)) => Err(e.into()),
    }
}

/// The splice of a `/queryChanges` (RFC 8620 5.6) from the journal's
/// changes and the new results `ids`: every changed id is `removed` and,
/// when still in the results, `added` at its new index. `fmt` turns
/// journal ids into JMAP ids; more than `max_changes` in all is
/// `tooManyChanges`.
pub fn splice(
    c: &crate::store::JournalChanges,
    ids: &[u64],
    fmt: fn(u64) -> String,
    max_changes: Option<usize>,
) -> Result<(Vec<Value>, Vec<Value>), MethodError> {
    let changed: std::collections::HashSet<u64> = c
        .created
        .iter()
        .chain(&c.updated)
        .chain(&c.destroyed)
        .copied()
        .collect();
    let removed: Vec<Value> = c
        .updated
        .iter()
        .chain(&c.destroyed)
        .map(|&i| json!(fmt(i)))
        .collect();
    let added: Vec<Value> = ids
        .iter()
        .enumerate()
        .filter(|(_, id)| changed.contains(id))
        .map(|(i, &id)| json!({"id": fmt(id), "index": i}))
        .collect();
    if max_changes.is_some_and(|m| removed.len() + added.len() > m) {
        return Err(MethodError::TooManyChanges);
    }
    Ok((removed, added))
}

/// A standard `/changes` (RFC 8620 5.2) over the store's journal:
/// `sinceState`, `maxChanges`; `fmt` turns journal ids into JMAP ids.
/// The result has accountId, oldState, newState, hasMoreChanges,
/// created, updated, destroyed; the caller may add fields.
pub async fn changes(
    ctx: &Ctx,
    args: &Map<String, Value>,
    kind: JmapKind,
    fmt: fn(u64) -> String,
) -> Result<(Map<String, Value>, crate::store::JournalChanges), MethodError> {
    let since = args
        .get("sinceState")
        .and_then(Value::as_str)
        .ok_or_else(|| MethodError::invalid("sinceState is required"))?;
    let max = match args.get("maxChanges") {
        None | Some(Value::Null) => 10_000usize,
        Some(v) => match v.as_u64() {
            Some(n) if n > 0 => n.min(100_000) as usize,
            _ => {
                return Err(MethodError::invalid(
                    "maxChanges must be a positive integer",
                ))
            }
        },
    };
    let since = parse_state(since).ok_or(MethodError::CannotCalculateChanges)?;
    let c = match ctx.store().jmap_changes(&ctx.user, kind, since, max).await {
        Ok(c) => c,
        Err(ChangesError::CannotCalculate) => return Err(MethodError::CannotCalculateChanges),
        Err(ChangesError::Store(e)) => return Err(e.into()),
    };
    let ids = |v: &[u64]| Value::Array(v.iter().map(|i| Value::String(fmt(*i))).collect());
    let mut out = Map::new();
    out.insert("accountId".into(), json!(ctx.account_id));
    out.insert("oldState".into(), json!(state_string(c.old_state)));
    out.insert("newState".into(), json!(state_string(c.new_state)));
    out.insert("hasMoreChanges".into(), json!(c.has_more));
    out.insert("created".into(), ids(&c.created));
    out.insert("updated".into(), ids(&c.updated));
    out.insert("destroyed".into(), ids(&c.destroyed));
    Ok((out, c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_has_its_capability() {
        assert_eq!(capability("Core/echo"), Some(CORE));
        assert_eq!(capability("Mailbox/get"), Some(MAIL));
        assert_eq!(capability("EmailSubmission/set"), Some(SUBMISSION));
        assert_eq!(capability("ContactCard/get"), Some(CONTACTS));
        assert_eq!(capability("Nope/get"), None);
        assert_eq!(capability("nonsense"), None);
    }

    #[test]
    fn states_parse_only_when_ours() {
        assert_eq!(parse_state(&state_string(42)), Some(42));
        assert_eq!(parse_state("x1"), None);
        assert_eq!(parse_state(""), None);
        assert_eq!(parse_state("99999999999999999999999"), None);
    }
}
