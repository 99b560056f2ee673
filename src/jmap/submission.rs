//! `EmailSubmission/get|set|query|changes` (RFC 8621 7): sending an Email
//! through the same path as port 587.
//!
//! - Sender checks as submission's (`smtp::session`, `check_from_header`):
//!   one From: and at most one Sender:, every address in them, and the
//!   envelope's MAIL FROM, owned by the user (primary address or alias);
//!   otherwise `forbiddenFrom`. The identity must be the user's and its
//!   address must be the From: address or the envelope sender.
//! - Envelope: the given one, else MAIL FROM = Sender: or From:, RCPT TO
//!   = every address in To:, Cc: and Bcc: (RFC 8621 7.5). Bcc: is removed
//!   from the copy that is sent.
//! - Recipients resolve as submission's (`smtp::resolve`, `Policy::
//!   submission`): aliases and lists expand, other domains are relayed.
//! - Delivery: with a queue in this process (all-in-one, mta roles) the
//!   message goes through `Delivery::for_submission`, exactly as a port
//!   587 message: every copy in the durable queue, committed only when all
//!   are; the submission is answered after that, never before. Without a
//!   queue (a `store` role alone) it goes by SMTP to `mta.relay` (the
//!   mta-out or smarthost) through the same contract (`Mode::Now`, every
//!   recipient a relayed target), answered once the relay said 250.
//!   Neither: `serverUnavailable`.
//! - Submissions are final at once (`maxDelayedSend` 0, `undoStatus`
//!   "final"); the last `MAX_KEPT` are kept for `/get` with the settings.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::error::set_error;
use super::identity::{self, load, map_or_null, save, set_args, settings_lock};
use super::methods::{ids_arg, properties_arg, select};
use super::{Ctx, MethodError};
use crate::deliver::{Delivery, Envelope, Mode, Outcome, Target};
use crate::services::Services;
use crate::smtp::resolve::{self, Policy};
use crate::smtp::session::Verdict;
use crate::smtp::trace;

/// Submissions remembered for `/get` and `/query`.
pub const MAX_KEPT: usize = 100;
/// Most envelope recipients of one submission.
pub const MAX_RECIPIENTS: usize = 100;

/// Why a message cannot be sent as it is (a SetError of `/set`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// From:/Sender:/MAIL FROM not owned by the user (RFC 8621 7.5).
    ForbiddenFrom,
    /// More than one From: or Sender:, or an unreadable one.
    InvalidEmail(&'static str),
    NoRecipients,
    /// Unknown, disabled or refused recipients.
    InvalidRecipients(Vec<String>),
    TooManyRecipients,
}

impl Refusal {
    pub fn set_error(&self) -> Value {
        match self {
            Refusal::ForbiddenFrom => set_error(
                "forbiddenFrom",
                "the sender address is not one of this account's",
            ),
            Refusal::InvalidEmail(why) => set_error("invalidEmail", *why),
            Refusal::NoRecipients => set_error("noRecipients", "no recipient"),
            Refusal::InvalidRecipients(r) => {
                let mut e = set_error("invalidRecipients", "recipients refused");
                e["invalidRecipients"] = json!(r);
                e
            }
            Refusal::TooManyRecipients => set_error("tooManyRecipients", ""),
        }
    }
}

/// What goes to delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    /// The message without Bcc:.
    pub data: Vec<u8>,
}

/// Checks a message against the addresses the user owns and works out the
/// envelope (`envelope`: the client's `{mailFrom, rcptTo}` or None).
pub fn plan(message: &[u8], owned: &[String], envelope: Option<&Value>) -> Result<Plan, Refusal> {
    let owns = |a: &str| owned.iter().any(|o| o.eq_ignore_ascii_case(a));
    let originators = match trace::originators(message) {
        trace::Originators::Addresses(a) => a,
        trace::Originators::Duplicate => {
            return Err(Refusal::InvalidEmail("more than one From: or Sender:"))
        }
        trace::Originators::Unreadable => return Err(Refusal::ForbiddenFrom),
    };
    if originators.is_empty() {
        return Err(Refusal::InvalidEmail("no From:"));
    }
    if originators.iter().any(|a| !owns(a)) {
        return Err(Refusal::ForbiddenFrom);
    }
    let end = trace::header_section_len(message).unwrap_or(message.len());
    let (mail_from, rcpt_to) = match envelope.filter(|e| !e.is_null()) {
        Some(e) => {
            let from = e
                .pointer("/mailFrom/email")
                .and_then(Value::as_str)
                .ok_or(Refusal::InvalidEmail("envelope.mailFrom.email missing"))?
                .trim()
                .to_lowercase();
            let rcpts = e
                .get("rcptTo")
                .and_then(Value::as_array)
                .ok_or(Refusal::NoRecipients)?
                .iter()
                .map(|r| {
                    r.get("email")
                        .and_then(Value::as_str)
                        .map(|s| s.trim().to_lowercase())
                        .ok_or(Refusal::InvalidEmail("envelope.rcptTo[].email missing"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            (from, rcpts)
        }
        None => {
            let parsed = mail_parser::MessageParser::default().parse_headers(&message[..end]);
            let mut from = None;
            let mut sender = None;
            let mut rcpts = Vec::new();
            if let Some(p) = &parsed {
                for h in p.headers() {
                    let name = h.name.as_str().to_ascii_lowercase();
                    let Some(list) = h.value.as_address() else {
                        continue;
                    };
                    let addrs = list
                        .iter()
                        .filter_map(|a| a.address())
                        .map(|a| a.to_lowercase());
                    match name.as_str() {
                        "from" => from = from.or(addrs.into_iter().next()),
                        "sender" => sender = sender.or(addrs.into_iter().next()),
                        "to" | "cc" | "bcc" => rcpts.extend(addrs),
                        _ => {}
                    }
                }
            }
            let from = sender.or(from).ok_or(Refusal::InvalidEmail("no From:"))?;
            (from, rcpts)
        }
    };
    if !owns(&mail_from) {
        return Err(Refusal::ForbiddenFrom);
    }
    let mut seen = Vec::new();
    for r in rcpt_to {
        let valid = r
            .rsplit_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty() && r.len() <= 254)
            && !r
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>');
        if !valid {
            return Err(Refusal::InvalidRecipients(vec![r]));
        }
        if !seen.contains(&r) {
            seen.push(r);
        }
    }
    if seen.is_empty() {
        return Err(Refusal::NoRecipients);
    }
    if seen.len() > MAX_RECIPIENTS {
        return Err(Refusal::TooManyRecipients);
    }
    Ok(Plan {
        mail_from,
        rcpt_to: seen,
        data: without_bcc(message),
    })
}

/// The message with every Bcc: field (and its continuation lines) removed.
pub fn without_bcc(message: &[u8]) -> Vec<u8> {
    let end = trace::header_section_len(message).unwrap_or(message.len());
    let (head, body) = message.split_at(end);
    let mut out = Vec::with_capacity(message.len());
    let mut skipping = false;
    for line in head.split_inclusive(|&b| b == b'\n') {
        let continuation = line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        if continuation {
            if !skipping {
                out.extend_from_slice(line);
            }
            continue;
        }
        let name = line.split(|&b| b == b':').next().unwrap_or(b"");
        skipping = line.contains(&b':') && name.trim_ascii().eq_ignore_ascii_case(b"bcc");
        if !skipping {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(body);
    out
}

/// Why a planned message was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    Refused(Refusal),
    /// Try again later (directory, queue or relay not answering).
    Temporary(String),
    /// No queue and no relay in this process.
    Unavailable,
}

/// What `send_parts` needs of the process.
pub struct Parts<'a> {
    pub directory: &'a crate::directory::Directory,
    pub config: &'a Arc<crate::config::Config>,
    pub queue: Option<Arc<crate::queue::Queue>>,
    /// The submission delivery of the process (`Delivery::for_submission`);
    /// None: made here.
    pub delivery: Option<Delivery>,
    pub budget: Option<&'a crate::budget::Budget>,
}

/// Hands a planned message to delivery (module docs); Ok once every copy
/// is durable in the queue (or accepted by the relay).
pub async fn send(services: &Services, user: &str, id: &str, p: Plan) -> Result<(), SendError> {
    let parts = Parts {
        directory: &services.directory,
        config: &services.config,
        queue: services.queue.clone(),
        delivery: services
            .queue
            .is_some()
            .then(|| Delivery::for_submission(services)),
        budget: Some(&services.budget),
    };
    send_parts(parts, user, id, p).await
}

pub async fn send_parts(parts: Parts<'_>, user: &str, id: &str, p: Plan) -> Result<(), SendError> {
    let config = parts.config;
    let received = format!(
        "Received: by {} with HTTP (JMAP) id {id}\r\n\tfor <{}>; {}\r\n",
        config.server.hostname,
        user,
        trace::now_rfc5322()
    );
    let mut data = received.into_bytes();
    data.extend_from_slice(&p.data);
    let (delivery, targets) = if let Some(queue) = &parts.queue {
        let policy = Policy {
            flavor: crate::smtp::session::Flavor::Smtp,
            relay_allowed: true,
            forward_offsite: true,
            config: Some(config.clone()),
            store: None,
        };
        let mut targets: Vec<Target> = Vec::new();
        let mut refused = Vec::new();
        for r in &p.rcpt_to {
            match resolve::resolve(parts.directory, &policy, r).await {
                Verdict::Accept(t) => {
                    for t in t {
                        if !targets
                            .iter()
                            .any(|x| x.address == t.address && x.remote == t.remote)
                        {
                            targets.push(t);
                        }
                    }
                }
                Verdict::Temporary | Verdict::Unavailable => {
                    return Err(SendError::Temporary("directory".into()))
                }
                _ => refused.push(r.clone()),
            }
        }
        if !refused.is_empty() {
            return Err(SendError::Refused(Refusal::InvalidRecipients(refused)));
        }
        let d = parts.delivery.unwrap_or_else(|| {
            Delivery::new(Mode::Submission, config.clone(), None, Some(queue.clone()))
        });
        (d, targets)
    } else if config.mta.relay.is_some() {
        let d = Delivery::new(Mode::Now, config.clone(), None, None);
        let t = p
            .rcpt_to
            .iter()
            .map(|r| Target::remote(r.clone()))
            .collect();
        (d, t)
    } else {
        return Err(SendError::Unavailable);
    };
    let _lease = match parts.budget {
        Some(b) => {
            let wait = std::time::Duration::from_secs(30);
            match b.take(data.len() as u64, wait).await {
                Some(l) => Some(l),
                None => return Err(SendError::Temporary("memory budget".into())),
            }
        }
        None => None,
    };
    let mut tx = delivery.start(
        id,
        Envelope {
            sender: p.mail_from.clone(),
            ..Envelope::default()
        },
    );
    for t in targets {
        tx.add_rcpt(t);
    }
    let outcomes = tx.body(Arc::new(data)).await;
    if outcomes.iter().all(Outcome::accepted) {
        tx.commit().await;
        tracing::info!(id, user, from = %p.mail_from, rcpts = outcomes.len(), "JMAP submission accepted");
        Ok(())
    } else {
        tx.abort().await;
        let first = outcomes
            .iter()
            .find(|o| !o.accepted())
            .map(Outcome::text)
            .unwrap_or_default();
        tracing::warn!(id, user, outcome = %first, "JMAP submission not accepted");
        Err(SendError::Temporary(first))
    }
}

/// A submission as `/get` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub identity_id: String,
    pub email_id: String,
    pub thread_id: Option<String>,
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    pub send_at: String,
}

impl Record {
    fn to_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("id".into(), json!(self.id));
        m.insert("identityId".into(), json!(self.identity_id));
        m.insert("emailId".into(), json!(self.email_id));
        m.insert("threadId".into(), json!(self.thread_id));
        m.insert(
            "envelope".into(),
            json!({
                "mailFrom": {"email": self.mail_from, "parameters": null},
                "rcptTo": self.rcpt_to.iter().map(|r| json!({"email": r, "parameters": null})).collect::<Vec<_>>(),
            }),
        );
        m.insert("sendAt".into(), json!(self.send_at));
        m.insert("undoStatus".into(), json!("final"));
        m.insert("deliveryStatus".into(), Value::Null);
        m.insert("dsnBlobIds".into(), json!([]));
        m.insert("mdnBlobIds".into(), json!([]));
        m
    }
}

const PROPERTIES: &[&str] = &[
    "id",
    "identityId",
    "emailId",
    "threadId",
    "envelope",
    "sendAt",
    "undoStatus",
    "deliveryStatus",
    "dsnBlobIds",
    "mdnBlobIds",
];

fn state_of(records: &[Record]) -> String {
    identity::digest_state(&[records.last().map(|r| r.id.as_bytes()).unwrap_or(b"")])
}

pub async fn get(ctx: &mut Ctx, args: Map<String, Value>) -> Result<Value, MethodError> {
    let ids = ids_arg(ctx, &args)?;
    let props = properties_arg(&args, PROPERTIES)?;
    let records: Vec<Record> = load(ctx, "submissions").await?;
    let (mut list, mut not_found) = (Vec::new(), Vec::new());
    match ids {
        None => {
            list = records
                .iter()
                .map(|r| select(r.to_json(), &props))
                .collect()
        }
        Some(ids) => {
            for id in ids {
                match records.iter().find(|r| r.id == id) {
                    Some(r) => list.push(select(r.to_json(), &props)),
                    None => not_found.push(json!(id)),
                }
            }
        }
    }
    Ok(json!({
        "accountId": ctx.account_id,
        "state": state_of(&records),
        "list": list,
        "notFound": not_found,
    }))
}

/// `/query`: every kept submission, newest first (filters: emailIds,
/// identityIds, threadIds; no sort other than sentAt).
pub async fn query(ctx: &mut Ctx, args: Map<String, Value>) -> Result<Value, MethodError> {
    let records: Vec<Record> = load(ctx, "submissions").await?;
    let filter = args.get("filter").and_then(Value::as_object);
    let in_list = |key: &str, v: &str| -> bool {
        match filter.and_then(|f| f.get(key)).and_then(Value::as_array) {
            None => true,
            Some(a) => a.iter().any(|x| x.as_str() == Some(v)),
        }
    };
    if let Some(f) = filter {
        for k in f.keys() {
            if !["emailIds", "identityIds", "threadIds", "undoStatus"].contains(&k.as_str()) {
                return Err(MethodError::UnsupportedFilter(k.clone()));
            }
        }
    }
    let ids: Vec<Value> = records
        .iter()
        .rev()
        .filter(|r| {
            in_list("emailIds", &r.email_id)
                && in_list("identityIds", &r.identity_id)
                && in_list("threadIds", r.thread_id.as_deref().unwrap_or(""))
        })
        .map(|r| json!(r.id))
        .collect();
    Ok(json!({
        "accountId": ctx.account_id,
        "queryState": state_of(&records),
        "canCalculateChanges": false,
        "position": 0,
        "total": ids.len(),
        "ids": ids,
    }))
}

pub async fn changes(ctx: &mut Ctx, args: Map<String, Value>) -> Result<Value, MethodError> {
    let records: Vec<Record> = load(ctx, "submissions").await?;
    let state = state_of(&records);
    match args.get("sinceState").and_then(Value::as_str) {
        Some(s) if s == state => Ok(json!({
            "accountId": ctx.account_id,
            "oldState": state,
            "newState": state,
            "hasMoreChanges": false,
            "created": [], "updated": [], "destroyed": [],
        })),
        Some(_) => Err(MethodError::CannotCalculateChanges),
        None => Err(MethodError::invalid("sinceState is required")),
    }
}

pub async fn set(ctx: &mut Ctx, args: Map<String, Value>) -> Result<Value, MethodError> {
    let records: Vec<Record> = load(ctx, "submissions").await?;
    let old_state = state_of(&records);
    let a = set_args(ctx, &args, &old_state)?;
    let (identities, _) = identity::list(ctx).await?;
    let owned = identity::owned_addresses(ctx).await?;
    let (mut created, mut not_created) = (Map::new(), Map::new());
    let mut new_records = Vec::new();
    // creation id -> email id, for onSuccess*.
    let mut sent_emails: Vec<(String, String)> = Vec::new();
    for (cid, obj) in a.create {
        let identity_id = obj.get("identityId").and_then(Value::as_str).unwrap_or("");
        let identity_id = ctx.resolve_id(identity_id).unwrap_or_default();
        let Some(ident) = identities.iter().find(|i| i.id == identity_id) else {
            let mut e = set_error("invalidProperties", "no such identity");
            e["properties"] = json!(["identityId"]);
            not_created.insert(cid, e);
            continue;
        };
        let email_id = obj.get("emailId").and_then(Value::as_str).unwrap_or("");
        let email_id = ctx.resolve_id(email_id).unwrap_or_default();
        let Some((message, thread)) = read_email(ctx, &email_id).await? else {
            not_created.insert(cid, set_error("emailNotFound", ""));
            continue;
        };
        let plan = match plan(&message, &owned, obj.get("envelope")) {
            Ok(p) => p,
            Err(r) => {
                not_created.insert(cid, r.set_error());
                continue;
            }
        };
        if !plan.mail_from.eq_ignore_ascii_case(&ident.email)
            && !matches!(trace::originators(&message), trace::Originators::Addresses(a) if a.contains(&ident.email))
        {
            not_created.insert(cid, Refusal::ForbiddenFrom.set_error());
            continue;
        }
        let id = format!("S{:016x}", rand::random::<u64>());
        match send(&ctx.services, &ctx.user, &id, plan.clone()).await {
            Ok(()) => {}
            Err(SendError::Refused(r)) => {
                not_created.insert(cid, r.set_error());
                continue;
            }
            Err(SendError::Unavailable) => return Err(MethodError::ServerUnavailable),
            Err(SendError::Temporary(why)) => {
                tracing::warn!(why, "JMAP submission deferred");
                not_created.insert(cid, set_error("serverUnavailable", "try again later"));
                continue;
            }
        }
        ctx.created(&cid, &id);
        let r = Record {
            id: id.clone(),
            identity_id,
            email_id: email_id.clone(),
            thread_id: thread,
            mail_from: plan.mail_from,
            rcpt_to: plan.rcpt_to,
            send_at: chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        };
        created.insert(
            cid.clone(),
            json!({"id": id, "undoStatus": "final", "sendAt": r.send_at, "threadId": r.thread_id}),
        );
        sent_emails.push((cid, email_id));
        new_records.push(r);
    }
    let mut not_updated = Map::new();
    for (id, _) in a.update {
        // Every submission is final at once: nothing to cancel.
        let kind = if records.iter().any(|r| r.id == id) {
            set_error("cannotUnsend", "the message is already sent")
        } else {
            set_error("notFound", "")
        };
        not_updated.insert(id, kind);
    }
    let mut not_destroyed = Map::new();
    let mut destroyed = Vec::new();
    let mut kept = records.clone();
    for id in a.destroy {
        if kept.iter().any(|r| r.id == id) {
            kept.retain(|r| r.id != id);
            destroyed.push(json!(id));
        } else {
            not_destroyed.insert(id, set_error("notFound", ""));
        }
    }
    if !new_records.is_empty() || !destroyed.is_empty() {
        let _lock = settings_lock(ctx).await;
        let mut current: Vec<Record> = load(ctx, "submissions").await?;
        current
            .retain(|r| kept.iter().any(|k| k.id == r.id) || !records.iter().any(|o| o.id == r.id));
        current.extend(new_records);
        if current.len() > MAX_KEPT {
            let extra = current.len() - MAX_KEPT;
            current.drain(..extra);
        }
        save(ctx, "submissions", &current).await?;
        kept = current;
    }
    let response = json!({
        "accountId": ctx.account_id,
        "oldState": old_state,
        "newState": state_of(&kept),
        "created": map_or_null(created),
        "updated": null,
        "destroyed": if destroyed.is_empty() { Value::Null } else { Value::Array(destroyed) },
        "notCreated": map_or_null(not_created),
        "notUpdated": map_or_null(not_updated),
        "notDestroyed": map_or_null(not_destroyed),
    });
    on_success(ctx, &args, &sent_emails).await?;
    Ok(response)
}

/// RFC 8621 7.5: `onSuccessUpdateEmail` / `onSuccessDestroyEmail` become
/// an implicit `Email/set` whose response follows this method's.
async fn on_success(
    ctx: &mut Ctx,
    args: &Map<String, Value>,
    sent: &[(String, String)],
) -> Result<(), MethodError> {
    let email_of = |key: &str| -> Option<String> {
        let cid = key.strip_prefix('#')?;
        sent.iter().find(|(c, _)| c == cid).map(|(_, e)| e.clone())
    };
    let mut update = Map::new();
    if let Some(m) = args.get("onSuccessUpdateEmail").and_then(Value::as_object) {
        for (k, patch) in m {
            if let Some(e) = email_of(k) {
                update.insert(e, patch.clone());
            }
        }
    }
    let mut destroy = Vec::new();
    if let Some(a) = args.get("onSuccessDestroyEmail").and_then(Value::as_array) {
        for k in a.iter().filter_map(Value::as_str) {
            if let Some(e) = email_of(k) {
                destroy.push(json!(e));
            }
        }
    }
    if update.is_empty() && destroy.is_empty() {
        return Ok(());
    }
    let mut set = Map::new();
    set.insert("accountId".into(), json!(ctx.account_id));
    if !update.is_empty() {
        set.insert("update".into(), Value::Object(update));
    }
    if !destroy.is_empty() {
        set.insert("destroy".into(), Value::Array(destroy));
    }
    let r = Box::pin(super::methods::dispatch(ctx, "Email/set", set)).await;
    match r {
        Ok(v) => ctx.extra.push(("Email/set".into(), v)),
        Err(e) => ctx.extra.push(("error".into(), e.to_json())),
    }
    Ok(())
}

/// The raw message of one of the user's emails and its thread id; None
/// when the id is not the user's (or gone).
async fn read_email(
    ctx: &Ctx,
    email_id: &str,
) -> Result<Option<(Vec<u8>, Option<String>)>, MethodError> {
    let Some(id) = super::ids::parse_email_id(email_id) else {
        return Ok(None);
    };
    let places = ctx.store().email_places(&ctx.user, vec![id]).await?;
    let Some(&(_, _, thread)) = places.first().and_then(|p| p.first()) else {
        return Ok(None);
    };
    let Some(bytes) = ctx.store().read_email(&ctx.user, id).await? else {
        return Ok(None);
    };
    Ok(Some((bytes, Some(super::ids::thread_id(thread)))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned() -> Vec<String> {
        vec!["alice@x.test".into(), "al@x.test".into()]
    }

    const MSG: &[u8] = b"From: Alice <alice@x.test>\r\nTo: bob@x.test, Carol <carol@y.test>\r\nCc: bob@x.test\r\nBcc: secret@z.test,\r\n  other@z.test\r\nSubject: hi\r\n\r\nbody\r\nBcc: not a header\r\n";

    #[test]
    fn rfc8621_7_5_envelope_from_headers_and_bcc_removed() {
        let p = plan(MSG, &owned(), None).unwrap();
        assert_eq!(p.mail_from, "alice@x.test");
        assert_eq!(
            p.rcpt_to,
            vec![
                "bob@x.test",
                "carol@y.test",
                "secret@z.test",
                "other@z.test"
            ]
        );
        let s = String::from_utf8(p.data).unwrap();
        assert!(
            !s.contains("secret@z.test") && !s.contains("other@z.test"),
            "{s}"
        );
        assert!(
            s.contains("Subject: hi\r\n\r\nbody\r\nBcc: not a header\r\n"),
            "{s}"
        );
    }

    #[test]
    fn rfc8621_7_5_forbidden_from_for_addresses_not_owned() {
        let m = b"From: boss@x.test\r\nTo: bob@x.test\r\n\r\nx\r\n";
        assert_eq!(plan(m, &owned(), None), Err(Refusal::ForbiddenFrom));
        let m = b"From: alice@x.test\r\nSender: boss@x.test\r\nTo: bob@x.test\r\n\r\nx\r\n";
        assert_eq!(plan(m, &owned(), None), Err(Refusal::ForbiddenFrom));
        // The envelope's sender too.
        let env =
            json!({"mailFrom": {"email": "boss@x.test"}, "rcptTo": [{"email": "bob@x.test"}]});
        assert_eq!(plan(MSG, &owned(), Some(&env)), Err(Refusal::ForbiddenFrom));
        // An alias is owned.
        let m = b"From: AL@x.test\r\nTo: bob@x.test\r\n\r\nx\r\n";
        assert_eq!(plan(m, &owned(), None).unwrap().mail_from, "al@x.test");
        let m = b"From: alice@x.test\r\nFrom: alice@x.test\r\nTo: bob@x.test\r\n\r\nx\r\n";
        assert!(matches!(
            plan(m, &owned(), None),
            Err(Refusal::InvalidEmail(_))
        ));
    }

    #[test]
    fn rfc8621_7_5_given_envelope_is_used_and_checked() {
        let env = json!({"mailFrom": {"email": "al@x.test"}, "rcptTo": [{"email": "Dave@y.test"}, {"email": "dave@y.test"}]});
        let p = plan(MSG, &owned(), Some(&env)).unwrap();
        assert_eq!(
            (p.mail_from.as_str(), p.rcpt_to),
            ("al@x.test", vec!["dave@y.test".to_string()])
        );
        let env = json!({"mailFrom": {"email": "al@x.test"}, "rcptTo": []});
        assert_eq!(plan(MSG, &owned(), Some(&env)), Err(Refusal::NoRecipients));
        let env = json!({"mailFrom": {"email": "al@x.test"}, "rcptTo": [{"email": "a b@y"}]});
        assert!(matches!(
            plan(MSG, &owned(), Some(&env)),
            Err(Refusal::InvalidRecipients(_))
        ));
        let many: Vec<Value> = (0..=MAX_RECIPIENTS)
            .map(|i| json!({"email": format!("r{i}@y.test")}))
            .collect();
        let env = json!({"mailFrom": {"email": "al@x.test"}, "rcptTo": many});
        assert_eq!(
            plan(MSG, &owned(), Some(&env)),
            Err(Refusal::TooManyRecipients)
        );
    }

    #[test]
    fn no_recipients_without_to_cc_bcc() {
        let m = b"From: alice@x.test\r\nSubject: x\r\n\r\nx\r\n";
        assert_eq!(plan(m, &owned(), None), Err(Refusal::NoRecipients));
    }
}
