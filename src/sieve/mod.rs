//! Sieve (RFC 5228) at final delivery, with the sieve-rs interpreter
//! (library `sieve`), and the script checks of ManageSieve.
//!
//! Layers: [`compile`] checks a script (upload and delivery); [`evaluate`]
//! is a pure function from (the user's scripts and mailbox names, the
//! envelope, the message) to a [`Plan`] — which mailboxes get a copy with
//! which flags, a rejection, messages to send — so every Sieve behaviour
//! is testable without a store; `deliver::local` carries the plan out and
//! [`Filter::send`] hands outgoing messages (redirect, vacation) to the
//! queue of this process (else `mta.relay`) like the JMAP vacation reply.
//!
//! Invariants:
//! - A script that fails (compile error since upload, runtime error, a
//!   limit reached) gives the implicit keep: the message goes to INBOX and
//!   the error is logged (RFC 5228 2.10.6).
//! - Every loop of the interpreter is bounded: instructions
//!   (`CPU_LIMIT`), includes (`MAX_INCLUDES`), redirects
//!   (`MAX_REDIRECTS`), messages created (`MAX_OUT_MESSAGES`).
//! - Vacation (RFC 5230): the library refuses replies to the null sender,
//!   MAILER-DAEMON, owner-/-request addresses, list messages (List-*),
//!   Auto-Submitted other than "no" and Precedence bulk; [`Plan`] drops
//!   Precedence list/junk too; the `:days` rate limit is the store's
//!   durable `sieve_vacation` table, checked when the reply is sent.

pub mod managesieve;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

#[cfg(feature = "sieve")]
use sieve::runtime::RuntimeError;
#[cfg(feature = "sieve")]
use sieve::{Compiler, Envelope, Event, Input, Recipient, Runtime, Script, Sieve};

use crate::store::Store;

/// Instructions one delivery may run.
pub const CPU_LIMIT: usize = 100_000;
/// Nested includes (RFC 6609) one script may reach.
pub const MAX_INCLUDES: usize = 3;
/// Redirects one delivery may make.
pub const MAX_REDIRECTS: usize = 3;
/// Messages (vacation replies, redirects) one delivery may create.
pub const MAX_OUT_MESSAGES: usize = 3;
/// Longest rejection reason given on the wire.
#[cfg(feature = "sieve")]
const MAX_REASON: usize = 200;

/// The compiler with msgd's bounds.
#[cfg(feature = "sieve")]
fn compiler() -> Compiler {
    Compiler::new()
        .with_max_script_size(crate::store::SieveLimits::default().max_size)
        .with_max_includes(MAX_INCLUDES)
        .with_max_nested_blocks(15)
        .with_max_nested_tests(15)
        .with_max_string_size(4096)
}

/// What ManageSieve answers to PUTSCRIPT and CHECKSCRIPT in a build
/// without the `sieve` feature (docs/licensing.md).
pub const NOT_BUILT: &str = "Sieve support not built in";

/// Checks a script (ManageSieve PUTSCRIPT, CHECKSCRIPT): the compiler's
/// error naming line and column; without the `sieve` feature no script
/// can be checked, so none passes (`NOT_BUILT`).
pub fn check(text: &[u8]) -> Result<(), String> {
    #[cfg(feature = "sieve")]
    {
        compile(text).map(|_| ())
    }
    #[cfg(not(feature = "sieve"))]
    {
        let _ = text;
        Err(NOT_BUILT.into())
    }
}

/// Compiles a script; the error text names line and column.
#[cfg(feature = "sieve")]
pub fn compile(text: &[u8]) -> Result<Arc<Sieve>, String> {
    if std::str::from_utf8(text).is_err() {
        return Err("script is not UTF-8".into());
    }
    compiler()
        .compile(text)
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

/// The runtime with msgd's limits.
#[cfg(feature = "sieve")]
pub fn runtime(hostname: &str) -> Runtime {
    Runtime::new()
        .with_cpu_limit(CPU_LIMIT)
        .with_max_nested_includes(MAX_INCLUDES)
        .with_max_redirects(MAX_REDIRECTS)
        .with_max_out_messages(MAX_OUT_MESSAGES)
        .with_local_hostname(hostname.to_string())
        .with_vacation_default_subject("Automated reply")
}

/// What a user's scripts see of the user: read before the run, so the
/// interpreter needs no I/O.
#[derive(Debug, Clone, Default)]
pub struct UserSieve {
    /// Name of the active script.
    pub active: String,
    /// Every script by name (the active one and those it may include).
    pub scripts: HashMap<String, Vec<u8>>,
    /// The user's mailbox names (`mailboxexists`, fileinto without :create).
    pub mailboxes: HashSet<String>,
    /// The process's compiled scripts (the store's); None: compile each
    /// time (tests of `evaluate`).
    pub compiled: Option<Arc<crate::store::CompiledScripts>>,
}

#[cfg(feature = "sieve")]
impl UserSieve {
    /// Script `name` (text `text`) of user `address`, compiled: from the
    /// process's cache when it was compiled from the same text before.
    fn script(&self, address: &str, name: &str, text: &[u8]) -> Result<Arc<Sieve>, String> {
        let Some(cache) = &self.compiled else {
            return compile(text);
        };
        let digest = crate::store::CompiledScripts::digest(text);
        if let Some(s) = cache
            .get(address, name, &digest)
            .and_then(|v| v.downcast::<Sieve>().ok())
        {
            return Ok(s);
        }
        let s = compile(text)?;
        cache.insert(address, name, digest, s.clone());
        Ok(s)
    }
}

/// A copy for a mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    pub mailbox: String,
    pub flags: Vec<String>,
    /// `fileinto :create` (RFC 5490 3.2).
    pub create: bool,
}

/// A message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub to: String,
    /// None: the original message (redirect, with the original envelope
    /// sender); Some: a message the script made (vacation: null sender).
    pub message: Option<Vec<u8>>,
    /// Vacation: (response id, period in seconds) for the rate limit.
    pub vacation: Option<(String, u64)>,
}

/// What the script decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Copies to store (INBOX for keep); empty: discarded.
    pub copies: Vec<Copy>,
    /// reject / ereject (RFC 5429): refuse with this reason.
    pub reject: Option<String>,
    pub outgoing: Vec<Outgoing>,
}

impl Plan {
    /// The implicit keep.
    pub fn keep() -> Plan {
        Plan {
            copies: vec![Copy {
                mailbox: "INBOX".into(),
                flags: Vec::new(),
                create: false,
            }],
            ..Plan::default()
        }
    }
}

/// Runs the user's active script over a message. Never fails: an error is
/// logged and gives the implicit keep.
#[cfg(feature = "sieve")]
pub fn evaluate(
    runtime: &Runtime,
    user: &UserSieve,
    address: &str,
    sender: &str,
    rcpt: &str,
    data: &[u8],
) -> Plan {
    match run(runtime, user, address, sender, rcpt, data) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(user = address, script = %user.active, error = %e, "Sieve script failed; implicit keep");
            Plan::keep()
        }
    }
}

#[cfg(feature = "sieve")]
fn run(
    runtime: &Runtime,
    user: &UserSieve,
    address: &str,
    sender: &str,
    rcpt: &str,
    data: &[u8],
) -> Result<Plan, String> {
    let text = user
        .scripts
        .get(&user.active)
        .ok_or("active script missing")?;
    let script = user.script(address, &user.active, text)?;
    let mut ctx = runtime
        .filter(data)
        .with_envelope(Envelope::From, sender)
        .with_envelope(Envelope::To, rcpt)
        .with_user_address(address);
    let mut input = Input::script(user.active.clone(), script);
    let mut plan = Plan::default();
    let mut created: HashMap<usize, Vec<u8>> = HashMap::new();
    // The vacation test's response id, waiting for its message.
    let mut vacation: Option<(String, u64)> = None;
    let mut vacation_by_msg: HashMap<usize, (String, u64)> = HashMap::new();
    let mut includes = 0usize;
    while let Some(r) = ctx.run(input) {
        input = Input::True;
        let ev = match r {
            Ok(ev) => ev,
            Err(e) => return Err(runtime_error(&e)),
        };
        match ev {
            Event::IncludeScript { name, optional } => {
                includes += 1;
                if includes > MAX_INCLUDES * 4 {
                    return Err("too many includes".into());
                }
                let n = match &name {
                    Script::Personal(n) => Some(n),
                    Script::Global(_) => None,
                };
                match n.and_then(|n| user.scripts.get(n).map(|t| (n, t))) {
                    Some((n, text)) => {
                        input = Input::script(name.clone(), user.script(address, n, text)?)
                    }
                    None if optional => input = Input::False,
                    None => return Err(format!("included script {name:?} missing")),
                }
            }
            Event::MailboxExists { mailboxes, .. } => {
                let all = mailboxes.iter().all(|m| match m {
                    sieve::Mailbox::Name(n) => user.mailboxes.contains(n),
                    sieve::Mailbox::Id(_) => false,
                });
                input = all.into();
            }
            Event::ListContains { .. } => input = Input::False,
            Event::DuplicateId { id, expiry, .. } => {
                // Answered "not seen" here; the store's durable record
                // decides when the reply would go out (`Filter::send`).
                vacation = Some((id, expiry));
                input = Input::False;
            }
            Event::SetEnvelope { .. } | Event::Notify { .. } => {}
            Event::Function { .. } => input = Input::False,
            Event::Keep { flags, message_id } => {
                if message_id == 0 {
                    add_copy(&mut plan, "INBOX", flags, false);
                }
            }
            Event::Discard => {}
            Event::Reject { reason, .. } => plan.reject = Some(reason_line(&reason)),
            Event::FileInto {
                folder,
                flags,
                create,
                message_id,
                ..
            } => {
                if message_id == 0 {
                    add_copy(&mut plan, &folder, flags, create);
                }
            }
            Event::CreatedMessage {
                message_id,
                message,
            } => {
                if let Some(v) = vacation.take() {
                    vacation_by_msg.insert(message_id, v);
                }
                created.insert(message_id, message);
            }
            Event::SendMessage {
                recipient,
                message_id,
                ..
            } => {
                let to: Vec<String> = match recipient {
                    Recipient::Address(a) => vec![a],
                    Recipient::Group(g) => g,
                    Recipient::List(_) => Vec::new(),
                };
                for to in to.into_iter().take(MAX_OUT_MESSAGES) {
                    let message = match message_id {
                        0 => None,
                        id => match created.get(&id) {
                            Some(m) => Some(m.clone()),
                            None => continue,
                        },
                    };
                    plan.outgoing.push(Outgoing {
                        to,
                        message,
                        vacation: vacation_by_msg.get(&message_id).cloned(),
                    });
                }
            }
        }
    }
    if plan.reject.is_some() {
        // RFC 5429 2.1: reject cancels the implicit keep; a copy filed
        // before is kept only with an explicit keep/fileinto, and a
        // refused message is not stored at all here.
        plan.copies.clear();
    }
    plan.outgoing
        .retain(|o| o.vacation.is_none() || !list_like(data));
    plan.outgoing.truncate(MAX_OUT_MESSAGES);
    Ok(plan)
}

#[cfg(feature = "sieve")]
fn add_copy(plan: &mut Plan, mailbox: &str, flags: Vec<String>, create: bool) {
    // Two actions filing into one mailbox store one copy (RFC 5228 2.10.3).
    if let Some(c) = plan.copies.iter_mut().find(|c| c.mailbox == mailbox) {
        c.create |= create;
        return;
    }
    plan.copies.push(Copy {
        mailbox: mailbox.to_string(),
        flags,
        create,
    });
}

#[cfg(feature = "sieve")]
fn runtime_error(e: &RuntimeError) -> String {
    format!("{e:?}")
}

/// One line of printable ASCII for a 550 reply.
#[cfg(feature = "sieve")]
fn reason_line(reason: &str) -> String {
    let mut s: String = reason
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                ' '
            }
        })
        .collect();
    s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.len() > MAX_REASON {
        s.truncate(MAX_REASON);
    }
    if s.is_empty() {
        s = "message refused by the recipient's filter".into();
    }
    s
}

/// Precedence list/junk/bulk, List-Id, List-Unsubscribe or Auto-Submitted
/// other than "no" in the header section (RFC 5230 4.5, RFC 3834 2: no
/// automatic replies to lists or to automatic mail).
#[cfg(feature = "sieve")]
fn list_like(data: &[u8]) -> bool {
    let end = crate::smtp::trace::header_section_len(data).unwrap_or(data.len());
    let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
    head.split('\n').any(|l| {
        let l = l.trim_end();
        l.starts_with("list-id:")
            || l.starts_with("list-unsubscribe:")
            || (l.starts_with("auto-submitted:") && l["auto-submitted:".len()..].trim() != "no")
            || (l.starts_with("precedence:")
                && ["list", "junk", "bulk"]
                    .iter()
                    .any(|w| l["precedence:".len()..].trim() == *w))
    })
}

/// Sieve at delivery for the processes with a store: reads the user's
/// scripts, evaluates, sends what the script sends.
pub struct Filter {
    #[cfg(feature = "sieve")]
    runtime: Runtime,
    directory: Arc<crate::directory::Directory>,
    /// Weak: the queue's runner holds a `Delivery` that holds this.
    queue: Option<std::sync::Weak<crate::queue::Queue>>,
    config: Arc<crate::config::Config>,
}

impl Filter {
    pub fn for_services(services: &crate::services::Services) -> Option<Arc<Filter>> {
        services.store.as_ref()?;
        Some(Arc::new(Filter {
            #[cfg(feature = "sieve")]
            runtime: runtime(&services.config.server.hostname),
            directory: services.directory.clone(),
            queue: services.queue.as_ref().map(Arc::downgrade),
            config: services.config.clone(),
        }))
    }

    /// The plan for one recipient's copy; `None`: the user has no active
    /// script (plain delivery to INBOX). Store errors are the caller's
    /// (a temporary failure: the message is retried).
    ///
    /// Without the `sieve` feature no script runs: always `None`, the
    /// implicit keep.
    pub async fn plan(
        &self,
        store: &Store,
        user: &str,
        sender: &str,
        rcpt: &str,
        data: &[u8],
    ) -> crate::store::Result<Option<Plan>> {
        let active = store.sieve_active(user).await?.map(|(name, _)| name);
        self.plan_for(store, active, user, sender, rcpt, data).await
    }

    /// `plan` with the user's active script name already read (final
    /// delivery reads it with the user: `Store::delivery_user`).
    #[cfg(not(feature = "sieve"))]
    pub async fn plan_for(
        &self,
        _store: &Store,
        _active: Option<String>,
        _user: &str,
        _sender: &str,
        _rcpt: &str,
        _data: &[u8],
    ) -> crate::store::Result<Option<Plan>> {
        Ok(None)
    }

    #[cfg(feature = "sieve")]
    pub async fn plan_for(
        &self,
        store: &Store,
        active: Option<String>,
        user: &str,
        sender: &str,
        rcpt: &str,
        data: &[u8],
    ) -> crate::store::Result<Option<Plan>> {
        let Some(active) = active else {
            return Ok(None);
        };
        let mut u = UserSieve {
            active,
            compiled: Some(store.compiled_sieve()),
            ..UserSieve::default()
        };
        for (name, _) in store.sieve_list(user).await? {
            if let Some(t) = store.sieve_get(user, &name).await? {
                u.scripts.insert(name, t);
            }
        }
        u.mailboxes = store
            .list(user)
            .await?
            .into_iter()
            .map(|m| m.name)
            .collect();
        Ok(Some(evaluate(&self.runtime, &u, user, sender, rcpt, data)))
    }

    /// Sends the plan's messages in a task of its own (delivery does not
    /// wait): a redirect with the original envelope sender, a vacation
    /// reply with the null sender once per its period (the store's record).
    pub fn send(
        self: &Arc<Self>,
        store: &Store,
        user: &str,
        sender: &str,
        data: Arc<Vec<u8>>,
        outgoing: Vec<Outgoing>,
    ) {
        if outgoing.is_empty() {
            return;
        }
        let (me, store, user, sender) = (
            self.clone(),
            store.clone(),
            user.to_string(),
            sender.to_string(),
        );
        tokio::spawn(async move {
            for o in outgoing {
                if let Err(e) = me.send_one(&store, &user, &sender, &data, o).await {
                    tracing::warn!(user, error = %e, "Sieve message not sent");
                }
            }
        });
    }

    async fn send_one(
        &self,
        store: &Store,
        user: &str,
        sender: &str,
        data: &Arc<Vec<u8>>,
        o: Outgoing,
    ) -> Result<(), String> {
        let to = o.to.to_lowercase();
        let (mail_from, body) = match (&o.vacation, o.message) {
            (Some((id, period)), Some(m)) => {
                if sender.is_empty() {
                    return Ok(());
                }
                let now = crate::queue::unix_now();
                let seen = store
                    .sieve_vacation_seen(user, id, (*period).min(i64::MAX as u64) as i64, now)
                    .await
                    .map_err(|e| e.to_string())?;
                if seen {
                    tracing::debug!(user, "vacation: replied within the period");
                    return Ok(());
                }
                (String::new(), m)
            }
            (None, Some(m)) => (String::new(), m),
            (_, None) => (sender.to_string(), data.to_vec()),
        };
        let id = format!("S{:016x}", rand::random::<u64>());
        let plan = crate::jmap::submission::Plan {
            mail_from,
            rcpt_to: vec![to.clone()],
            data: body,
        };
        let parts = crate::jmap::submission::Parts {
            directory: &self.directory,
            config: &self.config,
            queue: self.queue.as_ref().and_then(std::sync::Weak::upgrade),
            delivery: None,
            budget: None,
        };
        crate::jmap::submission::send_parts(parts, user, &id, plan)
            .await
            .map_err(|e| format!("{e:?}"))?;
        tracing::info!(user, to = %crate::smtp::trace::sanitize(&to, 320), vacation = o.vacation.is_some(), "Sieve message sent");
        Ok(())
    }
}

#[cfg(all(test, feature = "sieve"))]
mod tests;
