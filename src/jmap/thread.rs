//! Thread/get and Thread/changes (RFC 8621 3): a thread is the store's
//! THREADID (RFC 8474), its emails those of the user with that thread id,
//! in arrival order.

use std::collections::HashSet;

use serde_json::{json, Map, Value};

use super::ids::{email_id, parse_thread_id, thread_id};
use super::methods::{ids_arg, state_string};
use super::{Ctx, MethodError};
use crate::store::JmapKind;

pub async fn get(ctx: &mut Ctx, args: Map<String, Value>) -> Result<Value, MethodError> {
    // Fetching all threads (ids null) is not supported.
    let ids = ids_arg(ctx, &args)?.ok_or(MethodError::RequestTooLarge)?;
    let state = ctx.store().jmap_state(&ctx.user, JmapKind::Thread).await?;
    let mut seen = HashSet::new();
    let ids: Vec<String> = ids.into_iter().filter(|i| seen.insert(i.clone())).collect();
    let nums: Vec<u64> = ids
        .iter()
        .map(|i| parse_thread_id(i).unwrap_or(0))
        .collect();
    let emails = ctx.store().thread_emails(&ctx.user, nums.clone()).await?;
    let mut list = Vec::new();
    let mut not_found = Vec::new();
    for ((id, n), e) in ids.iter().zip(nums).zip(emails) {
        if n == 0 || e.is_empty() {
            not_found.push(json!(id));
        } else {
            let e: Vec<String> = e.into_iter().map(email_id).collect();
            list.push(json!({"id": thread_id(n), "emailIds": e}));
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
    let (out, _) = super::methods::changes(ctx, &args, JmapKind::Thread, thread_id).await?;
    Ok(Value::Object(out))
}
