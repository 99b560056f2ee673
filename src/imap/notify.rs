//! NOTIFY (RFC 5465): which changes of which of the user's mailboxes this
//! session is told about unasked, and when.
//!
//! The command's grammar (RFC 5465 6) is parsed by `command.rs`, the one
//! command parser, into [`Parsed`]; this module holds what it means.
//!
//! How changes reach a session: the store bumps a per-user counter
//! (`Store::watch_user`) after every commit that changed one of the user's
//! mailboxes (counters, names, subscriptions); the selected mailbox keeps
//! its own watch (`Open::watch`). A session with NOTIFY on keeps `known`,
//! its last copy of the user's mailbox list; on a bump it lists the
//! mailboxes again and `diff` turns old and new list into events, which
//! the session writes as untagged STATUS and LIST responses (5.2 to 5.6).
//! Nothing is queued between wake-ups: the events of one wake-up are
//! computed, written and forgotten.
//!
//! When events go out: after each command (with the selected mailbox's
//! changes), while the client is idle between commands (the session waits
//! for input and for these watches together), and during IDLE.
//!
//! Invariants and limits:
//! - Memory is proportional to the user's mailbox count (`known`) and to
//!   the NOTIFY command (at most `MAX_NAMES` mailbox names), never to how
//!   fast the client reads: output is written before the next wake-up is
//!   looked at, and a wake-up with more than `MAX_EVENTS` events sends
//!   `* OK [NOTIFICATIONOVERFLOW]` instead and turns NOTIFY off (5.8).
//! - The selected mailbox gets EXISTS/EXPUNGE/FETCH (its view's `sync`),
//!   never STATUS (5.1). With SELECTED-DELAYED an expunge waits for the
//!   next command (no EXPUNGE between commands); with SELECTED it may go
//!   out between commands. Never during FETCH/STORE/SEARCH by sequence
//!   number (the session's existing rule).
//! - Supported events: MessageNew (with fetch attributes for the selected
//!   mailbox), MessageExpunge, FlagChange, MailboxName, SubscriptionChange.
//!   AnnotationChange, MailboxMetadataChange and ServerMetadataChange are
//!   answered `NO [BADEVENT ...]`: the store does not track per-message
//!   annotations and does not tell which metadata entry changed.
//! - Only the user's own mailboxes (the personal namespace); shared
//!   mailboxes of other users are not watched. INBOXES is INBOX (delivery
//!   only files into INBOX). Subscriptions to names without a mailbox are
//!   not reported.

use std::collections::HashMap;
use std::future::Future;
use std::io;

use tokio::sync::watch;
use tracing::{debug, warn};

use crate::store::{MailboxId, MailboxInfo};

use super::command::{self, Cmd};
use super::session::{Reply, Session};

/// Events per wake-up before NOTIFICATIONOVERFLOW (RFC 5465 5.8).
pub(crate) const MAX_EVENTS: usize = 256;
/// Mailbox names one NOTIFY command may name.
pub(crate) const MAX_NAMES: usize = 1000;
/// Length of a MessageNew fetch-attribute list.
pub(crate) const MAX_FETCH_ATTS: usize = 4096;

/// The events asked for in one event group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Events {
    pub new: bool,
    pub expunge: bool,
    pub flags: bool,
    pub name: bool,
    pub subscription: bool,
}

impl Events {
    fn message(&self) -> bool {
        self.new || self.expunge || self.flags
    }
}

/// filter-mailboxes (RFC 5465 6). Names are store names (UTF-8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Filter {
    Selected { delayed: bool },
    Inboxes,
    Personal,
    Subscribed,
    Subtree(Vec<String>),
    Mailboxes(Vec<String>),
}

impl Filter {
    /// Does the filter cover this mailbox (other than as the selected
    /// one)?
    fn covers(&self, name: &str, subscribed: bool) -> bool {
        match self {
            Filter::Selected { .. } => false,
            Filter::Inboxes => name == "INBOX",
            Filter::Personal => true,
            Filter::Subscribed => subscribed,
            Filter::Subtree(names) => names.iter().any(|n| {
                name == n
                    || (name.len() > n.len()
                        && name.starts_with(n.as_str())
                        && name.as_bytes().get(n.len()) == Some(&b'/'))
            }),
            Filter::Mailboxes(names) => names.iter().any(|n| n == name),
        }
    }
}

/// A parsed `NOTIFY SET`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Spec {
    /// `STATUS`: send the current STATUS of every watched mailbox now.
    pub status: bool,
    pub groups: Vec<(Filter, Events)>,
    /// MessageNew's fetch attributes for the selected mailbox, as the
    /// client wrote them (checked to parse as a FETCH).
    pub fetch: Option<String>,
}

impl Spec {
    /// Events for the selected mailbox, and whether expunges wait.
    pub fn selected(&self) -> Option<(Events, bool)> {
        self.groups.iter().find_map(|(f, e)| match f {
            Filter::Selected { delayed } => Some((*e, *delayed)),
            _ => None,
        })
    }

    /// Events for a mailbox that is not selected: the first group that
    /// covers it (5.1: the order of the groups decides).
    pub fn events_for(&self, name: &str, subscribed: bool) -> Events {
        self.groups
            .iter()
            .find(|(f, _)| f.covers(name, subscribed))
            .map(|(_, e)| *e)
            .unwrap_or_default()
    }
}

/// NOTIFY's arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Parsed {
    None,
    Set(Spec),
    /// An event this server does not report (5.9: `NO [BADEVENT (...)]`).
    BadEvent,
}

/// The events this server reports, for `[BADEVENT (...)]`.
pub(crate) const SUPPORTED: &str =
    "MessageNew MessageExpunge FlagChange MailboxName SubscriptionChange";

/// What the session remembers of one of the user's mailboxes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Known {
    pub name: String,
    pub subscribed: bool,
    pub uidvalidity: u32,
    pub uidnext: u32,
    pub exists: u32,
    pub unseen: u32,
    pub highestmodseq: u64,
}

impl Known {
    fn of(i: &MailboxInfo) -> Known {
        Known {
            name: i.name.clone(),
            subscribed: i.subscribed,
            uidvalidity: i.uidvalidity,
            uidnext: i.uidnext,
            exists: i.exists,
            unseen: i.unseen,
            highestmodseq: i.highestmodseq,
        }
    }
}

/// One untagged response NOTIFY owes the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    /// 5.4 MailboxName: a new mailbox (`LIST ()`).
    Created(String),
    /// 5.4: a deleted one (`LIST (\NonExistent)`).
    Deleted(String),
    /// 5.4: renamed (`LIST () new ("OLDNAME" (old))`).
    Renamed { old: String, new: String },
    /// 5.5 SubscriptionChange.
    Subscription { name: String, on: bool },
    /// 5.2/5.3/5.4 for a mailbox that is not selected: its STATUS.
    Status(MailboxId),
}

/// A session's NOTIFY state.
pub(crate) struct Notify {
    pub spec: Spec,
    pub user_watch: watch::Receiver<u64>,
    pub known: HashMap<MailboxId, Known>,
    /// SELECTED-DELAYED saw an expunge between commands: the selected
    /// mailbox waits for the next command.
    pub hold_selected: bool,
    pub max_events: usize,
}

impl Notify {
    pub fn new(spec: Spec, user_watch: watch::Receiver<u64>, list: &[MailboxInfo]) -> Notify {
        Notify {
            spec,
            user_watch,
            known: list.iter().map(|i| (i.id, Known::of(i))).collect(),
            hold_selected: false,
            max_events: MAX_EVENTS,
        }
    }

    /// Replaces `known` with `list` and says what changed that the client
    /// asked for. `selected`: the selected mailbox (never a STATUS).
    pub fn diff(&mut self, list: &[MailboxInfo], selected: Option<MailboxId>) -> Vec<Change> {
        let mut out = Vec::new();
        let spec = &self.spec;
        let mut seen = Vec::with_capacity(list.len());
        for info in list {
            seen.push(info.id);
            let now = Known::of(info);
            let ev = spec.events_for(&now.name, now.subscribed);
            let Some(was) = self.known.get(&info.id) else {
                if ev.name {
                    out.push(Change::Created(now.name.clone()));
                }
                continue;
            };
            let ev_old = spec.events_for(&was.name, was.subscribed);
            if was.name != now.name && (ev.name || ev_old.name) {
                out.push(Change::Renamed {
                    old: was.name.clone(),
                    new: now.name.clone(),
                });
            }
            if was.subscribed != now.subscribed && (ev.subscription || ev_old.subscription) {
                out.push(Change::Subscription {
                    name: now.name.clone(),
                    on: now.subscribed,
                });
            }
            if Some(info.id) != selected
                && ((ev.new && (was.uidnext != now.uidnext || was.uidvalidity != now.uidvalidity))
                    || (ev.expunge && was.exists != now.exists)
                    || (ev.flags
                        && (was.unseen != now.unseen || was.highestmodseq != now.highestmodseq)))
            {
                out.push(Change::Status(info.id));
            }
        }
        seen.sort_unstable();
        let mut gone: Vec<&Known> = self
            .known
            .iter()
            .filter(|(id, _)| seen.binary_search(id).is_err())
            .map(|(_, k)| k)
            .collect();
        gone.sort_by(|a, b| a.name.cmp(&b.name));
        for k in gone {
            if spec.events_for(&k.name, k.subscribed).name {
                out.push(Change::Deleted(k.name.clone()));
            }
        }
        self.known = list.iter().map(|i| (i.id, Known::of(i))).collect();
        out
    }

    /// Mailboxes whose STATUS `NOTIFY SET STATUS` sends at once (3.1):
    /// those with message events, the selected one excepted.
    pub fn initial_status<'a>(
        &self,
        list: &'a [MailboxInfo],
        selected: Option<MailboxId>,
    ) -> Vec<&'a MailboxInfo> {
        list.iter()
            .filter(|i| Some(i.id) != selected)
            .filter(|i| self.spec.events_for(&i.name, i.subscribed).message())
            .collect()
    }
}

/// The session's side: the NOTIFY command and the moments events go out.
impl Session {
    /// NOTIFY SET / NOTIFY NONE (RFC 5465 3).
    pub(crate) async fn notify_command(&mut self, parsed: Parsed) -> io::Result<Reply> {
        let spec = match parsed {
            Parsed::None => {
                self.notify = None;
                return Ok(Reply::ok("NOTIFY completed"));
            }
            Parsed::BadEvent => {
                return Ok(Reply::no(
                    Some(&format!("BADEVENT ({SUPPORTED})")),
                    "Event not supported",
                ))
            }
            Parsed::Set(spec) => spec,
        };
        let user = self.user_name();
        // Watch first, then list: no change falls between the two.
        let mut user_watch = self.store().watch_user(&user);
        user_watch.borrow_and_update();
        let list = match self.store().list(&user).await {
            Ok(l) => l,
            Err(e) => return Ok(self.store_error(e, "NONEXISTENT")),
        };
        let n = Notify::new(spec, user_watch, &list);
        if n.spec.status {
            let selected = self.state.open().map(|o| o.view.id);
            for info in n.initial_status(&list, selected) {
                let line = self.notify_status_line(info);
                self.write(&line);
                self.maybe_flush().await?;
            }
        }
        self.notify = Some(n);
        self.notify_seen = None;
        self.notify_fetch_new().await;
        Ok(Reply::ok("NOTIFY completed"))
    }

    fn notify_status_line(&self, info: &MailboxInfo) -> String {
        let mut items = format!(
            "MESSAGES {} UIDNEXT {} UIDVALIDITY {} UNSEEN {}",
            info.exists, info.uidnext, info.uidvalidity, info.unseen
        );
        if self.enabled.condstore {
            items.push_str(&format!(" HIGHESTMODSEQ {}", info.highestmodseq.max(1)));
        }
        format!("* STATUS {} ({items})\r\n", self.mbox_wire(&info.name))
    }

    /// A future that ends when something NOTIFY watches changed; never,
    /// without NOTIFY or when `between_commands` is false. The selected
    /// mailbox counts when the client asked for its events (and no
    /// SELECTED-DELAYED expunge is held back).
    pub(crate) fn notify_wake(&self, between_commands: bool) -> impl Future<Output = ()> {
        let mut user = None;
        let mut selected = None;
        if let (Some(n), true) = (self.notify.as_ref(), between_commands) {
            user = Some(n.user_watch.clone());
            if let Some(open) = self.state.open() {
                let events = self.notify_selected_events();
                if events.is_some_and(|(e, _)| e.message()) && !n.hold_selected {
                    selected = Some(open.watch.clone());
                }
            }
        }
        async move {
            let u = async {
                match user.as_mut() {
                    Some(w) => {
                        if w.changed().await.is_err() {
                            std::future::pending::<()>().await
                        }
                    }
                    None => std::future::pending().await,
                }
            };
            let s = async {
                match selected.as_mut() {
                    Some(w) => {
                        if w.changed().await.is_err() {
                            std::future::pending::<()>().await
                        }
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = u => {}
                _ = s => {}
            }
        }
    }

    /// During IDLE: the user's other mailboxes (IDLE watches the selected
    /// one itself).
    pub(crate) fn notify_wake_user(&self) -> impl Future<Output = ()> {
        let mut user = self.notify.as_ref().map(|n| n.user_watch.clone());
        async move {
            match user.as_mut() {
                Some(w) => {
                    if w.changed().await.is_err() {
                        std::future::pending::<()>().await
                    }
                }
                None => std::future::pending().await,
            }
        }
    }

    /// Events for the selected mailbox: the SELECTED group's, else those
    /// of the first group covering it; and whether expunges wait.
    fn notify_selected_events(&self) -> Option<(Events, bool)> {
        let n = self.notify.as_ref()?;
        let open = self.state.open()?;
        if let Some(e) = n.spec.selected() {
            return Some(e);
        }
        let subscribed = n.known.get(&open.view.id).is_some_and(|k| k.subscribed);
        Some((n.spec.events_for(&open.view.name, subscribed), true))
    }

    /// A watched change between commands: the selected mailbox's changes
    /// (5.1), then the other mailboxes' events.
    pub(crate) async fn notify_between_commands(&mut self) -> io::Result<()> {
        if self.notify.is_none() {
            return Ok(());
        }
        let selected_changed = self
            .state
            .open()
            .is_some_and(|o| o.watch.has_changed().unwrap_or(false));
        if let (true, Some((events, delayed))) = (selected_changed, self.notify_selected_events()) {
            let held = self.notify.as_ref().is_some_and(|n| n.hold_selected);
            if events.message() && !held {
                let mut hold = false;
                if delayed {
                    // SELECTED-DELAYED (5.1): no EXPUNGE between commands;
                    // everything waits for the next command.
                    if let Some(open) = self.state.open() {
                        let (id, modseq) = (open.view.id, open.view.modseq);
                        hold = match self.store().changes(id, modseq).await {
                            Ok(c) => !c.expunged.is_empty(),
                            Err(_) => true,
                        };
                    }
                }
                if hold {
                    if let Some(n) = self.notify.as_mut() {
                        n.hold_selected = true;
                    }
                } else {
                    self.sync(false).await;
                    self.notify_fetch_new().await;
                }
            }
        }
        self.notify_poll().await;
        Ok(())
    }

    /// After a command: release a held SELECTED-DELAYED mailbox, send the
    /// MessageNew fetch attributes of new messages and the other
    /// mailboxes' events.
    pub(crate) async fn notify_after_command(&mut self, synced: bool) {
        let Some(n) = self.notify.as_mut() else {
            return;
        };
        if synced {
            n.hold_selected = false;
            self.notify_fetch_new().await;
        }
        self.notify_poll().await;
    }

    /// MessageNew with fetch attributes (5.2): a FETCH of the messages the
    /// view gained since the last call.
    pub(crate) async fn notify_fetch_new(&mut self) {
        let Some(open) = self.state.open() else {
            self.notify_seen = None;
            return;
        };
        let (id, uidnext) = (open.view.id, open.view.uidnext);
        let Some(atts) = self.notify.as_ref().and_then(|n| n.spec.fetch.clone()) else {
            return;
        };
        let from = match self.notify_seen {
            Some((sid, u)) if sid == id => u,
            _ => {
                self.notify_seen = Some((id, uidnext));
                return;
            }
        };
        self.notify_seen = Some((id, uidnext));
        if uidnext <= from {
            return;
        }
        let line = format!("x UID FETCH {}:{} ({atts})\r\n", from, uidnext - 1);
        if let Some(Ok((
            _,
            Cmd::Fetch {
                uid,
                set,
                items,
                extra,
                changed_since,
                vanished,
            },
        ))) = command::parse(line.as_bytes())
        {
            if let Err(e) = self
                .fetch(&set, items, extra, uid, changed_since, vanished)
                .await
            {
                debug!(error = %e, "NOTIFY fetch failed");
            }
        }
    }

    /// The other mailboxes: list them again if the store said they
    /// changed and write the events (5.2 to 5.6), or the overflow (5.8).
    pub(crate) async fn notify_poll(&mut self) {
        let Some(n) = self.notify.as_mut() else {
            return;
        };
        if !n.user_watch.has_changed().unwrap_or(false) {
            return;
        }
        n.user_watch.borrow_and_update();
        let user = self.user_name();
        let list = match self.store().list(&user).await {
            Ok(l) => l,
            Err(e) => {
                warn!(error = %e, "NOTIFY: listing mailboxes failed");
                return;
            }
        };
        let selected = self.state.open().map(|o| o.view.id);
        let Some(n) = self.notify.as_mut() else {
            return;
        };
        let changes = n.diff(&list, selected);
        if changes.len() > n.max_events {
            // 5.8: the client cannot know what it missed; NOTIFY is off.
            self.notify = None;
            self.write("* OK [NOTIFICATIONOVERFLOW] Too many events; NOTIFY is off\r\n");
            return;
        }
        for c in changes {
            let line = match c {
                Change::Created(name) => format!("* LIST () \"/\" {}\r\n", self.mbox_wire(&name)),
                Change::Deleted(name) => {
                    format!("* LIST (\\NonExistent) \"/\" {}\r\n", self.mbox_wire(&name))
                }
                Change::Renamed { old, new } => format!(
                    "* LIST () \"/\" {} (\"OLDNAME\" ({}))\r\n",
                    self.mbox_wire(&new),
                    self.mbox_wire(&old)
                ),
                Change::Subscription { name, on } => format!(
                    "* LIST ({}) \"/\" {}\r\n",
                    if on { "\\Subscribed" } else { "" },
                    self.mbox_wire(&name)
                ),
                Change::Status(id) => match list.iter().find(|i| i.id == id) {
                    Some(info) => self.notify_status_line(info),
                    None => continue,
                },
            };
            self.write(&line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// NOTIFY's arguments through the one command parser.
    fn parse(args: &[u8]) -> Result<Parsed, &'static str> {
        let mut line = b"t NOTIFY ".to_vec();
        line.extend_from_slice(args.strip_suffix(b"\r\n").unwrap_or(args));
        line.extend_from_slice(b"\r\n");
        match command::parse(&line) {
            Some(Ok((_, Cmd::Notify(p)))) => Ok(p),
            Some(Ok((_, other))) => panic!("{other:?}"),
            Some(Err(e)) => Err(e.reason),
            None => Err("not parsed"),
        }
    }

    fn set(s: &str) -> Spec {
        match parse(s.as_bytes()) {
            Ok(Parsed::Set(spec)) => spec,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn rfc5465_6_notify_syntax() {
        assert_eq!(parse(b"NONE\r\n"), Ok(Parsed::None));
        let s = set("SET STATUS (selected (MessageNew (uid body.peek[header.fields (from to subject)]) MessageExpunge FlagChange)) (subtree (INBOX \"Lists\") (MessageNew MessageExpunge)) (personal (MailboxName SubscriptionChange))");
        assert!(s.status);
        assert_eq!(s.groups.len(), 3);
        assert_eq!(
            s.fetch.as_deref(),
            Some("uid body.peek[header.fields (from to subject)]")
        );
        assert_eq!(
            s.groups[1].0,
            Filter::Subtree(vec!["INBOX".into(), "Lists".into()])
        );
        let s =
            set("SET (mailboxes {5}\r\nabc d (MessageNew MessageExpunge)) (selected-delayed NONE)");
        assert_eq!(s.groups[0].0, Filter::Mailboxes(vec!["abc d".into()]));
        assert_eq!(s.selected(), Some((Events::default(), true)));
        for bad in [
            "SET",
            "SET (personal (MessageNew))",
            "SET (personal (MessageExpunge FlagChange))",
            "SET (personal (FlagChange))",
            "SET (personal (MessageNew (uid) MessageExpunge))",
            "SET (selected (MessageNew (nonsense) MessageExpunge))",
            "SET (selected NONE) (selected-delayed NONE)",
            "SET (bogus NONE)",
            "SET (personal (Bogus))",
            "FOO",
            "NONE junk",
        ] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad}");
        }
        assert_eq!(
            parse(b"SET (personal (MailboxName AnnotationChange))"),
            Ok(Parsed::BadEvent)
        );
        assert_eq!(
            parse(b"SET (selected (MessageNew MessageExpunge MailboxMetadataChange))"),
            Ok(Parsed::BadEvent)
        );
        // Names are bounded.
        let many = format!(
            "SET (mailboxes ({}) (MailboxName))",
            vec!["a"; MAX_NAMES + 1].join(" ")
        );
        assert!(parse(many.as_bytes()).is_err());
    }

    #[test]
    fn rfc5465_5_filters_and_first_group_wins() {
        let s = set("SET (mailboxes Work (MailboxName)) (subtree Lists (MessageNew MessageExpunge)) (inboxes (MessageNew MessageExpunge FlagChange)) (subscribed (SubscriptionChange)) (personal NONE)");
        assert!(s.events_for("Work", true).name);
        assert!(!s.events_for("Work", true).subscription);
        assert!(s.events_for("Lists", false).new);
        assert!(s.events_for("Lists/a", false).new);
        assert!(!s.events_for("Listsx", false).new);
        assert!(s.events_for("INBOX", false).flags);
        assert!(s.events_for("Other", true).subscription);
        assert_eq!(s.events_for("Other", false), Events::default());
    }

    fn info(id: u64, name: &str, sub: bool, uidnext: u32, exists: u32) -> MailboxInfo {
        MailboxInfo {
            id,
            user: "u".into(),
            name: name.into(),
            uidvalidity: 1,
            uidnext,
            highestmodseq: uidnext as u64,
            special_use: None,
            subscribed: sub,
            exists,
            unseen: exists,
            size: 0,
            recent_uid: 1,
        }
    }

    #[test]
    fn rfc5465_5_diff_names_subscriptions_and_status() {
        let spec = set("SET (personal (MessageNew MessageExpunge MailboxName SubscriptionChange))");
        let (_tx, rx) = watch::channel(0);
        let old = vec![
            info(1, "INBOX", true, 1, 0),
            info(2, "A", false, 1, 0),
            info(3, "B", false, 1, 0),
        ];
        let mut n = Notify::new(spec, rx, &old);
        assert_eq!(n.initial_status(&old, Some(1)).len(), 2);
        let new = vec![
            info(1, "INBOX", true, 2, 1),
            info(2, "A2", true, 1, 0),
            info(4, "C", false, 1, 0),
        ];
        let ch = n.diff(&new, None);
        assert_eq!(
            ch,
            vec![
                Change::Status(1),
                Change::Renamed {
                    old: "A".into(),
                    new: "A2".into()
                },
                Change::Subscription {
                    name: "A2".into(),
                    on: true
                },
                Change::Created("C".into()),
                Change::Deleted("B".into()),
            ]
        );
        // The selected mailbox gets no STATUS.
        let newer = vec![info(1, "INBOX", true, 3, 2)];
        let ch = n.diff(&newer, Some(1));
        assert_eq!(
            ch,
            vec![Change::Deleted("A2".into()), Change::Deleted("C".into())]
        );
        assert!(n.diff(&newer, Some(1)).is_empty());
    }
}
