//! `VacationResponse/get|set` (RFC 8621 8): one object per account, id
//! `singleton`, stored with the user's settings (`identity::load/save`).
//!
//! The reply rules (RFC 3834, RFC 5230 4.5/4.6) are here as pure
//! functions (`should_reply`, `reply_message`); see docs/jmap.md for where
//! delivery applies them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::error::set_error;
use super::identity::{digest_state, load, map_or_null, save, set_args, settings_lock};
use super::methods::{ids_arg, properties_arg, select};
use super::{Ctx, MethodError};

pub const SINGLETON: &str = "singleton";
/// Longest subject, in bytes.
const MAX_SUBJECT: usize = 998;
/// Longest body (each of text and HTML), in bytes.
const MAX_BODY: usize = 32 * 1024;
/// One reply per sender per this many seconds (RFC 5230 4.6 default 7 days).
pub const REPLY_INTERVAL: i64 = 7 * 24 * 3600;
/// Senders remembered (older entries expire first).
pub const MAX_REPLIED: usize = 1000;

/// The stored response (RFC 8621 8.1).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vacation {
    #[serde(default)]
    pub is_enabled: bool,
    #[serde(default)]
    pub from_date: Option<String>,
    #[serde(default)]
    pub to_date: Option<String>,
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub text_body: Option<String>,
    #[serde(default)]
    pub html_body: Option<String>,
}

impl Vacation {
    fn to_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("id".into(), json!(SINGLETON));
        m.insert("isEnabled".into(), json!(self.is_enabled));
        m.insert("fromDate".into(), json!(self.from_date));
        m.insert("toDate".into(), json!(self.to_date));
        m.insert("subject".into(), json!(self.subject));
        m.insert("textBody".into(), json!(self.text_body));
        m.insert("htmlBody".into(), json!(self.html_body));
        m
    }

    fn apply(&mut self, patch: &Map<String, Value>) -> Result<(), Value> {
        let bad = |p: &str, why: &str| {
            let mut e = set_error("invalidProperties", why);
            e["properties"] = json!([p]);
            e
        };
        let opt_str = |k: &str, v: &Value, max: usize| -> Result<Option<String>, Value> {
            match v {
                Value::Null => Ok(None),
                Value::String(s) if s.len() <= max => Ok(Some(s.clone())),
                _ => Err(bad(k, "must be null or a string, not too long")),
            }
        };
        for (k, v) in patch {
            match k.as_str() {
                "isEnabled" => {
                    self.is_enabled = v.as_bool().ok_or_else(|| bad(k, "must be a boolean"))?
                }
                "fromDate" | "toDate" => {
                    let d = opt_str(k, v, 64)?;
                    if let Some(d) = &d {
                        if parse_utc(d).is_none() {
                            return Err(bad(k, "must be a UTCDate"));
                        }
                    }
                    if k == "fromDate" {
                        self.from_date = d;
                    } else {
                        self.to_date = d;
                    }
                }
                "subject" => {
                    let s = opt_str(k, v, MAX_SUBJECT)?;
                    if s.as_deref()
                        .is_some_and(|s| s.chars().any(char::is_control))
                    {
                        return Err(bad(k, "control characters"));
                    }
                    self.subject = s;
                }
                "textBody" => self.text_body = opt_str(k, v, MAX_BODY)?,
                "htmlBody" => self.html_body = opt_str(k, v, MAX_BODY)?,
                "id" => {
                    if v.as_str() != Some(SINGLETON) {
                        return Err(bad(k, "immutable"));
                    }
                }
                _ => return Err(bad(k, "unknown property")),
            }
        }
        Ok(())
    }

    /// Is the response active at `now` (enabled, within the dates)?
    pub fn active_at(&self, now: DateTime<Utc>) -> bool {
        let after = |d: &Option<String>| d.as_deref().and_then(parse_utc);
        self.is_enabled
            && after(&self.from_date).is_none_or(|f| now >= f)
            && after(&self.to_date).is_none_or(|t| now < t)
    }
}

/// RFC 8620 1.4 UTCDate (`2026-12-01T08:00:00Z`).
fn parse_utc(s: &str) -> Option<DateTime<Utc>> {
    if !s.ends_with('Z') {
        return None;
    }
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

fn state_of(v: &Vacation) -> String {
    digest_state(&[&serde_json::to_vec(v).unwrap_or_default()])
}

const PROPERTIES: &[&str] = &[
    "id",
    "isEnabled",
    "fromDate",
    "toDate",
    "subject",
    "textBody",
    "htmlBody",
];

pub async fn get(ctx: &mut Ctx, args: Map<String, Value>) -> Result<Value, MethodError> {
    let ids = ids_arg(ctx, &args)?;
    let props = properties_arg(&args, PROPERTIES)?;
    let v: Vacation = load(ctx, "vacation").await?;
    let (mut list, mut not_found) = (Vec::new(), Vec::new());
    match ids {
        None => list.push(select(v.to_json(), &props)),
        Some(ids) => {
            for id in ids {
                if id == SINGLETON {
                    list.push(select(v.to_json(), &props));
                } else {
                    not_found.push(json!(id));
                }
            }
        }
    }
    Ok(json!({
        "accountId": ctx.account_id,
        "state": state_of(&v),
        "list": list,
        "notFound": not_found,
    }))
}

pub async fn set(ctx: &mut Ctx, args: Map<String, Value>) -> Result<Value, MethodError> {
    let _lock = settings_lock(ctx).await;
    let mut v: Vacation = load(ctx, "vacation").await?;
    let old_state = state_of(&v);
    let a = set_args(ctx, &args, &old_state)?;
    let mut not_created = Map::new();
    for (cid, _) in a.create {
        not_created.insert(cid, set_error("singleton", "the vacation response exists"));
    }
    let mut not_destroyed = Map::new();
    for id in a.destroy {
        not_destroyed.insert(
            id,
            set_error("singleton", "the vacation response cannot be destroyed"),
        );
    }
    let (mut updated, mut not_updated) = (Map::new(), Map::new());
    for (id, patch) in a.update {
        if id != SINGLETON {
            not_updated.insert(id, set_error("notFound", ""));
            continue;
        }
        let mut next = v.clone();
        match next.apply(&patch) {
            Ok(()) => {
                v = next;
                updated.insert(id, Value::Null);
            }
            Err(e) => {
                not_updated.insert(id, e);
            }
        }
    }
    if !updated.is_empty() {
        save(ctx, "vacation", &v).await?;
    }
    Ok(json!({
        "accountId": ctx.account_id,
        "oldState": old_state,
        "newState": state_of(&v),
        "created": null,
        "updated": map_or_null(updated),
        "destroyed": null,
        "notCreated": map_or_null(not_created),
        "notUpdated": map_or_null(not_updated),
        "notDestroyed": map_or_null(not_destroyed),
    }))
}

/// Why an incoming message gets no vacation reply (RFC 3834 2, RFC 5230 4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoReply {
    Inactive,
    /// `MAIL FROM:<>` or a sender like MAILER-DAEMON / owner-* / *-request.
    NullOrDaemonSender,
    /// Auto-Submitted other than `no`.
    AutoSubmitted,
    /// List-Id / List-* or Precedence bulk, list or junk.
    ListOrBulk,
    /// None of the user's addresses in To: or Cc:.
    NotAddressed,
    /// Replied to this sender within `REPLY_INTERVAL`.
    RecentlyReplied,
    /// The sender is the user (RFC 5230 4.5: never reply to oneself).
    FromSelf,
}

/// Should `sender` get the vacation reply for a message with `headers`
/// (its header section) sent to a user owning `owned`? `replied` holds
/// (sender, unix time of our last reply).
pub fn should_reply(
    v: &Vacation,
    now: DateTime<Utc>,
    sender: &str,
    headers: &[u8],
    owned: &[String],
    replied: &[(String, i64)],
) -> Result<(), NoReply> {
    if !v.active_at(now) {
        return Err(NoReply::Inactive);
    }
    let sender = sender.trim().to_lowercase();
    let local = sender.split('@').next().unwrap_or("");
    if sender.is_empty()
        || !sender.contains('@')
        || local == "mailer-daemon"
        || local == "postmaster"
        || local.starts_with("owner-")
        || local.ends_with("-request")
        || local.starts_with("bounce")
        || local == "noreply"
        || local == "no-reply"
    {
        return Err(NoReply::NullOrDaemonSender);
    }
    if owned.iter().any(|o| o.eq_ignore_ascii_case(&sender)) {
        return Err(NoReply::FromSelf);
    }
    let Some(parsed) = mail_parser::MessageParser::default().parse_headers(headers) else {
        return Err(NoReply::NotAddressed);
    };
    let mut addressed = false;
    for h in parsed.headers() {
        let name = h.name.as_str().to_ascii_lowercase();
        let text = || h.value.as_text().unwrap_or("").trim().to_ascii_lowercase();
        match name.as_str() {
            "auto-submitted" if text() != "no" => return Err(NoReply::AutoSubmitted),
            "precedence" if ["bulk", "list", "junk"].contains(&text().as_str()) => {
                return Err(NoReply::ListOrBulk)
            }
            "list-id" | "list-unsubscribe" | "list-post" | "list-help" => {
                return Err(NoReply::ListOrBulk)
            }
            "x-auto-response-suppress" => return Err(NoReply::AutoSubmitted),
            "to" | "cc" => {
                if let Some(list) = h.value.as_address() {
                    for a in list.iter() {
                        if let Some(addr) = a.address() {
                            if owned.iter().any(|o| o.eq_ignore_ascii_case(addr)) {
                                addressed = true;
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
    if !addressed {
        return Err(NoReply::NotAddressed);
    }
    let now_s = now.timestamp();
    if replied
        .iter()
        .any(|(s, t)| *s == sender && now_s - *t < REPLY_INTERVAL)
    {
        return Err(NoReply::RecentlyReplied);
    }
    Ok(())
}

/// Records a reply to `sender` at `now`, forgetting expired and, beyond
/// `MAX_REPLIED`, the oldest entries.
pub fn record_reply(replied: &mut Vec<(String, i64)>, sender: &str, now: i64) {
    let sender = sender.trim().to_lowercase();
    replied.retain(|(s, t)| *s != sender && now - *t < REPLY_INTERVAL);
    replied.push((sender, now));
    if replied.len() > MAX_REPLIED {
        replied.sort_by_key(|(_, t)| *t);
        let extra = replied.len() - MAX_REPLIED;
        replied.drain(..extra);
    }
}

/// The reply (RFC 3834 3): From the user, To the sender, `Auto-Submitted:
/// auto-replied`, In-Reply-To/References of the original, the subject
/// given or `Auto: ` + the original's.
pub fn reply_message(
    v: &Vacation,
    from: &str,
    to: &str,
    original_headers: &[u8],
    date: &str,
    message_id: &str,
) -> Vec<u8> {
    let parsed = mail_parser::MessageParser::default().parse_headers(original_headers);
    let orig_subject = parsed
        .as_ref()
        .and_then(|m| m.subject())
        .unwrap_or("")
        .to_string();
    let orig_id = parsed
        .as_ref()
        .and_then(|m| m.message_id())
        .map(|s| s.to_string());
    let clean = |s: &str| {
        s.chars()
            .filter(|c| !c.is_control())
            .take(900)
            .collect::<String>()
    };
    let subject = match &v.subject {
        Some(s) if !s.is_empty() => clean(s),
        _ => format!("Auto: {}", clean(&orig_subject)),
    };
    let mut m = String::new();
    m.push_str(&format!("From: <{from}>\r\nTo: <{to}>\r\n"));
    m.push_str(&format!("Subject: {}\r\n", encode_header(&subject)));
    m.push_str(&format!("Date: {date}\r\nMessage-ID: <{message_id}>\r\n"));
    if let Some(id) = orig_id {
        let id = clean(&id);
        m.push_str(&format!("In-Reply-To: <{id}>\r\nReferences: <{id}>\r\n"));
    }
    m.push_str("Auto-Submitted: auto-replied\r\nPrecedence: bulk\r\nMIME-Version: 1.0\r\n");
    m.push_str(
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n",
    );
    let body = v.text_body.clone().unwrap_or_else(|| {
        v.html_body
            .as_deref()
            .map(strip_tags)
            .unwrap_or_else(|| "I am away.".into())
    });
    for line in body.lines() {
        m.push_str(line);
        m.push_str("\r\n");
    }
    m.into_bytes()
}

/// RFC 2047 encoded-word for a non-ASCII header value.
fn encode_header(s: &str) -> String {
    if s.is_ascii() {
        return s.to_string();
    }
    use base64::Engine;
    format!(
        "=?utf-8?B?{}?=",
        base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
    )
}

/// A plain rendering of an HTML body (tags dropped).
fn strip_tags(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

/// The vacation response at delivery (`deliver::AfterLocal`): for each
/// committed local copy, in a task of its own (delivery never waits for
/// it), reads the user's response, applies `should_reply` with the
/// durable record of senders answered (`vacation-replied` in the user's
/// settings, `MAX_REPLIED` entries, `REPLY_INTERVAL`), and sends the reply
/// with the null envelope sender through `submission::send_parts` (the
/// queue of this process, else `mta.relay`).
#[derive(Clone)]
pub struct Responder {
    directory: std::sync::Arc<crate::directory::Directory>,
    store: crate::store::Store,
    /// Weak: the queue's runner holds a `Delivery` that holds this.
    queue: Option<std::sync::Weak<crate::queue::Queue>>,
    config: std::sync::Arc<crate::config::Config>,
    /// JMAP's settings lock (`jmap::Shared::settings`).
    settings: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl Responder {
    /// The responder of a process with a store (None without one).
    pub fn for_services(
        services: &crate::services::Services,
    ) -> Option<std::sync::Arc<dyn crate::deliver::AfterLocal>> {
        let store = services.store.clone()?;
        Some(std::sync::Arc::new(Responder {
            directory: services.directory.clone(),
            store,
            queue: services.queue.as_ref().map(std::sync::Arc::downgrade),
            config: services.config.clone(),
            settings: services.web.jmap.settings.clone(),
        }))
    }

    async fn respond(
        self,
        queue: Option<std::sync::Arc<crate::queue::Queue>>,
        user: String,
        sender: String,
        headers: std::sync::Arc<Vec<u8>>,
    ) -> Result<(), String> {
        let Responder {
            directory,
            store,
            config,
            settings,
            ..
        } = self;
        let generation = store.server_settings_generation();
        let v: Vacation = super::identity::load_raw(&store, &user, "vacation")
            .await
            .map_err(|e| e.to_string())?;
        if !v.is_enabled {
            // Not read again for each message until a setting changes.
            store.note_setting_off(&user, "vacation", generation);
            return Ok(());
        }
        let now = Utc::now();
        if !v.active_at(now) {
            return Ok(());
        }
        let owned = match directory.lookup(&user).await {
            Ok(Some(crate::directory::Recipient::User(a))) => {
                let mut o = vec![a.address];
                o.extend(a.aliases);
                o
            }
            Ok(_) => vec![user.clone()],
            Err(e) => return Err(e.to_string()),
        };
        {
            let _lock = settings.lock().await;
            let mut replied: Vec<(String, i64)> =
                super::identity::load_raw(&store, &user, "vacation-replied")
                    .await
                    .map_err(|e| e.to_string())?;
            if let Err(why) = should_reply(&v, now, &sender, &headers, &owned, &replied) {
                tracing::debug!(user, ?why, "no vacation reply");
                return Ok(());
            }
            record_reply(&mut replied, &sender, now.timestamp());
            super::identity::save_raw(&store, &user, "vacation-replied", &replied)
                .await
                .map_err(|e| e.to_string())?
                .map_err(|r| format!("settings full: {r:?}"))?;
        }
        let id = format!("V{:016x}", rand::random::<u64>());
        let message_id = format!("{id}@{}", config.server.hostname);
        let data = reply_message(
            &v,
            &user,
            &sender.to_lowercase(),
            &headers,
            &crate::smtp::trace::now_rfc5322(),
            &message_id,
        );
        let plan = super::submission::Plan {
            mail_from: String::new(),
            rcpt_to: vec![sender.to_lowercase()],
            data,
        };
        let parts = super::submission::Parts {
            directory: &directory,
            config: &config,
            queue,
            delivery: None,
            budget: None,
        };
        super::submission::send_parts(parts, &user, &id, plan)
            .await
            .map_err(|e| format!("{e:?}"))?;
        tracing::info!(user, to = %crate::smtp::trace::sanitize(&sender, 320), "vacation reply sent");
        Ok(())
    }
}

impl crate::deliver::AfterLocal for Responder {
    fn delivered(&self, user: &str, sender: &str, headers: std::sync::Arc<Vec<u8>>) {
        // Cheap exits first: the null sender never gets a reply.
        if sender.is_empty() || self.store.setting_known_off(user, "vacation") {
            return;
        }
        let this = self.clone();
        let queue = self.queue.as_ref().and_then(std::sync::Weak::upgrade);
        let (user, sender) = (user.to_string(), sender.to_string());
        tokio::spawn(async move {
            let u = user.clone();
            if let Err(e) = this.respond(queue, user, sender, headers).await {
                tracing::warn!(user = %u, error = %e, "vacation reply not sent");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on() -> Vacation {
        Vacation {
            is_enabled: true,
            subject: Some("Away".into()),
            text_body: Some("Back Monday.".into()),
            ..Default::default()
        }
    }

    fn now() -> DateTime<Utc> {
        parse_utc("2026-12-02T10:00:00Z").unwrap()
    }

    const OWNED: &[&str] = &["bob@x.test", "robert@x.test"];

    fn owned() -> Vec<String> {
        OWNED.iter().map(|s| s.to_string()).collect()
    }

    fn check(headers: &str, sender: &str) -> Result<(), NoReply> {
        should_reply(&on(), now(), sender, headers.as_bytes(), &owned(), &[])
    }

    #[test]
    fn rfc5230_4_5_replies_only_to_mail_addressed_to_the_user() {
        assert_eq!(
            check("From: a@y.test\r\nTo: Bob <bob@x.test>\r\n\r\n", "a@y.test"),
            Ok(())
        );
        assert_eq!(
            check("From: a@y.test\r\nCc: robert@x.test\r\n\r\n", "a@y.test"),
            Ok(())
        );
        assert_eq!(
            check("From: a@y.test\r\nTo: other@x.test\r\n\r\n", "a@y.test"),
            Err(NoReply::NotAddressed)
        );
    }

    #[test]
    fn rfc3834_2_no_reply_to_null_sender_lists_or_auto_submitted() {
        let to = "To: bob@x.test\r\n";
        assert_eq!(
            check(&format!("{to}\r\n"), ""),
            Err(NoReply::NullOrDaemonSender)
        );
        assert_eq!(
            check(&format!("{to}\r\n"), "MAILER-DAEMON@y.test"),
            Err(NoReply::NullOrDaemonSender)
        );
        assert_eq!(
            check(&format!("{to}\r\n"), "owner-list@y.test"),
            Err(NoReply::NullOrDaemonSender)
        );
        assert_eq!(
            check(&format!("{to}\r\n"), "Robert@x.test"),
            Err(NoReply::FromSelf)
        );
        assert_eq!(
            check(
                &format!("{to}Auto-Submitted: auto-replied\r\n\r\n"),
                "a@y.test"
            ),
            Err(NoReply::AutoSubmitted)
        );
        assert_eq!(
            check(&format!("{to}Auto-Submitted: no\r\n\r\n"), "a@y.test"),
            Ok(())
        );
        assert_eq!(
            check(&format!("{to}List-Id: <l.y.test>\r\n\r\n"), "a@y.test"),
            Err(NoReply::ListOrBulk)
        );
        assert_eq!(
            check(&format!("{to}Precedence: Bulk\r\n\r\n"), "a@y.test"),
            Err(NoReply::ListOrBulk)
        );
    }

    #[test]
    fn rfc5230_4_6_one_reply_per_sender_per_seven_days() {
        let h = b"To: bob@x.test\r\n\r\n";
        let mut replied = Vec::new();
        record_reply(&mut replied, "A@y.test", now().timestamp());
        let r = should_reply(&on(), now(), "a@y.test", h, &owned(), &replied);
        assert_eq!(r, Err(NoReply::RecentlyReplied));
        let later = now() + chrono::Duration::seconds(REPLY_INTERVAL + 1);
        assert_eq!(
            should_reply(&on(), later, "a@y.test", h, &owned(), &replied),
            Ok(())
        );
        // The record is bounded.
        for i in 0..MAX_REPLIED + 10 {
            record_reply(
                &mut replied,
                &format!("s{i}@y.test"),
                now().timestamp() + i as i64,
            );
        }
        assert_eq!(replied.len(), MAX_REPLIED);
    }

    #[test]
    fn rfc8621_8_dates_bound_the_response() {
        let h = b"To: bob@x.test\r\n\r\n";
        let mut v = on();
        v.from_date = Some("2026-12-03T00:00:00Z".into());
        assert_eq!(
            should_reply(&v, now(), "a@y.test", h, &owned(), &[]),
            Err(NoReply::Inactive)
        );
        v.from_date = Some("2026-12-01T00:00:00Z".into());
        v.to_date = Some("2026-12-02T09:00:00Z".into());
        assert!(!v.active_at(now()));
        v.to_date = None;
        assert!(v.active_at(now()));
        v.is_enabled = false;
        assert!(!v.active_at(now()));
    }

    #[test]
    fn rfc8621_8_set_checks_properties() {
        let mut v = Vacation::default();
        let p = |x: Value| x.as_object().unwrap().clone();
        assert!(v.apply(&p(json!({"fromDate": "yesterday"}))).is_err());
        assert!(v
            .apply(&p(json!({"fromDate": "2026-12-01T00:00:00+01:00"})))
            .is_err());
        assert!(v.apply(&p(json!({"isEnabled": "yes"}))).is_err());
        assert!(v.apply(&p(json!({"id": "other"}))).is_err());
        assert!(v
            .apply(&p(json!({"textBody": "x".repeat(MAX_BODY + 1)})))
            .is_err());
        v.apply(&p(
            json!({"isEnabled": true, "fromDate": "2026-12-01T00:00:00Z", "subject": "Away"}),
        ))
        .unwrap();
        assert!(v.is_enabled);
    }

    #[test]
    fn rfc3834_3_reply_is_marked_auto_replied_and_threads() {
        let orig = b"Subject: Lunch?\r\nMessage-ID: <m1@y.test>\r\nTo: bob@x.test\r\n\r\n";
        let mut v = on();
        v.subject = None;
        let r = String::from_utf8(reply_message(
            &v,
            "bob@x.test",
            "a@y.test",
            orig,
            "Wed, 2 Dec 2026 10:00:00 +0000",
            "r1@x.test",
        ))
        .unwrap();
        assert!(r.contains("Auto-Submitted: auto-replied\r\n"), "{r}");
        assert!(r.contains("Subject: Auto: Lunch?\r\n"), "{r}");
        assert!(r.contains("In-Reply-To: <m1@y.test>\r\n"), "{r}");
        assert!(r.contains("To: <a@y.test>\r\n"), "{r}");
        assert!(r.ends_with("Back Monday.\r\n"), "{r}");
    }

    #[tokio::test]
    async fn a_user_without_a_vacation_response_is_read_once_until_a_setting_changes() {
        let dir = tempfile::tempdir().unwrap();
        let s = crate::services::test_services(dir.path(), |_| {});
        let store = s.store().clone();
        let user = "bob@example.com";
        store.ensure_user(user, None).await.unwrap();
        let responder = Responder::for_services(&s).unwrap();
        assert!(!store.setting_known_off(user, "vacation"));
        let headers = std::sync::Arc::new(b"Subject: hi\r\nTo: bob@example.com\r\n\r\n".to_vec());
        responder.delivered(user, "a@y.test", headers);
        let mut known = false;
        for _ in 0..200 {
            known = store.setting_known_off(user, "vacation");
            if known {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(known, "the responder found no response and remembered it");
        assert!(!store.setting_known_off("carol@example.com", "vacation"));
        // Turning the response on (any server METADATA change) forgets it.
        super::super::identity::save_raw(&store, user, "vacation", &on())
            .await
            .unwrap()
            .unwrap();
        assert!(!store.setting_known_off(user, "vacation"));
        // A read that began before a change does not count as current.
        let before = store.server_settings_generation();
        super::super::identity::save_raw(&store, user, "vacation", &Vacation::default())
            .await
            .unwrap()
            .unwrap();
        store.note_setting_off(user, "vacation", before);
        assert!(!store.setting_known_off(user, "vacation"));
    }
}
