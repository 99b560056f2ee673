//! Commands about mailboxes as a whole: name resolution (own and shared),
//! CREATE (with USE, RFC 6154), DELETE, RENAME, SUBSCRIBE, LIST (with
//! LIST-EXTENDED RFC 5258 and LIST-STATUS RFC 5819), LSUB, STATUS (with
//! SIZE RFC 8438, APPENDLIMIT RFC 7889, MAILBOXID RFC 8474, HIGHESTMODSEQ
//! RFC 7162), APPEND, QUOTA (RFC 9208) and ACL (RFC 4314).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::Arc;

use crate::directory::{DirError, Recipient};
use crate::store::{Flags, MailboxId, MailboxInfo, NewMessage, Quota, SpecialUse, StoreError};

use super::acl::{self, Rights};
use super::command::{ListOpts, StatusItem};
use super::session::{Reply, Session};
use super::{list, utf7, wire};

/// A mailbox named by the client, resolved.
pub(crate) struct Target {
    /// Store user owning it.
    pub owner: String,
    /// Its name in the owner's store.
    pub name: String,
    /// Its name as the client sees it.
    pub display: String,
    /// This user's rights on it.
    pub rights: Rights,
}

impl Session {
    /// A mailbox name as it goes to this client: UTF-8 once the client
    /// enabled UTF8=ACCEPT or IMAP4rev2, else modified UTF-7.
    pub(crate) fn mbox_wire(&self, display: &str) -> String {
        if self.enabled.utf8 || self.enabled.rev2 {
            wire::mailbox_utf8(display)
        } else {
            wire::mailbox(display)
        }
    }

    /// Rights of this user on another user's mailbox: what the ACL grants
    /// to the user's address and to `anyone`.
    pub(crate) async fn rights_on(&mut self, mailbox: MailboxId) -> Result<Rights, StoreError> {
        let user = self.user_name();
        let mut r = Rights::default();
        for id in [user.as_str(), "anyone"] {
            if let Some(s) = self.store().rights(mailbox, id).await? {
                r = r.union(Rights::parse(&s).unwrap_or_default());
            }
        }
        Ok(r)
    }

    /// Resolves a mailbox argument: one of the user's own, or another
    /// user's shared one under "Other Users/<owner>/".
    pub(crate) async fn target(&mut self, raw: &[u8]) -> Result<Target, Reply> {
        let name =
            wire::mailbox_from_bytes(raw).ok_or_else(|| Reply::bad("Mailbox name is not UTF-8"))?;
        let user = self.user_name();
        if acl::in_shared_namespace(&name) {
            let Some((owner, mname)) = acl::split_shared(&name) else {
                return Err(Reply::no(Some("NONEXISTENT"), "Mailbox does not exist"));
            };
            let owner = owner.to_lowercase();
            let mname = crate::store::normalize_name(mname)
                .map_err(|_| Reply::no(Some("CANNOT"), "Invalid mailbox name"))?;
            let info = match self.store().status(&owner, &mname).await {
                Ok(i) => i,
                Err(e) => return Err(self.store_error(e, "NONEXISTENT")),
            };
            let rights = if owner == user {
                Rights::all()
            } else {
                self.rights_on(info.id)
                    .await
                    .map_err(|e| self.store_error(e, "NONEXISTENT"))?
            };
            // RFC 4314 4: without any right the mailbox does not exist.
            if rights.is_empty() {
                return Err(Reply::no(Some("NONEXISTENT"), "Mailbox does not exist"));
            }
            return Ok(Target {
                display: acl::shared_name(&owner, &mname),
                owner,
                name: mname,
                rights,
            });
        }
        let name = crate::store::normalize_name(&name)
            .map_err(|_| Reply::no(Some("CANNOT"), "Invalid mailbox name"))?;
        Ok(Target {
            owner: user,
            display: name.clone(),
            name,
            rights: Rights::all(),
        })
    }

    /// Limits of a mailbox owner (the user's own, or another user's from
    /// the directory).
    pub(crate) async fn quota_for(&mut self, owner: &str) -> Result<Quota, Reply> {
        if let Some(u) = self.state.user().filter(|u| u.name == owner) {
            return Ok(u.quota);
        }
        match self.services.directory.lookup(owner).await {
            Ok(Some(Recipient::User(a))) => Ok(self.quota_of_account(&a)),
            Ok(_) => Ok(self.quota_of(None)),
            Err(DirError::Temporary(e)) => {
                tracing::warn!(error = %e, "directory unavailable for quota");
                Err(Reply::no(Some("UNAVAILABLE"), "Try again later"))
            }
        }
    }

    /// CREATE (RFC 9051 6.3.4) with USE (RFC 6154 3).
    pub(crate) async fn create(&mut self, raw: &[u8], uses: &[String]) -> io::Result<Reply> {
        let mut special = None;
        for u in uses {
            match SpecialUse::from_attribute(u) {
                Some(s) if special.is_none() => special = Some(s),
                Some(_) => {
                    return Ok(Reply::no(
                        Some("USEATTR"),
                        "Only one special-use attribute per mailbox",
                    ))
                }
                None => return Ok(Reply::no(Some("USEATTR"), "Unknown special-use attribute")),
            }
        }
        // "foo/" asks for a parent level: create "foo" (RFC 9051 6.3.4).
        let trimmed = raw.strip_suffix(b"/").unwrap_or(raw);
        let target = match self.target(trimmed).await {
            Ok(t) => t,
            Err(r) => return Ok(r),
        };
        if target.owner != self.user_name() {
            // RFC 4314: creating under another user's mailbox needs `k` on
            // the parent.
            let parent = target
                .name
                .rsplit_once(crate::store::DELIMITER)
                .map(|(p, _)| p.to_string());
            let allowed = match parent {
                Some(p) => {
                    let raw_parent = acl::shared_name(&target.owner, &p);
                    match self.target(raw_parent.as_bytes()).await {
                        Ok(t) => t.rights.has('k'),
                        Err(_) => false,
                    }
                }
                None => false,
            };
            if !allowed {
                return Ok(Reply::no_perm());
            }
        } else if acl::in_shared_namespace(&target.name) {
            return Ok(Reply::no(Some("CANNOT"), "That name is reserved"));
        }
        if target.name == "INBOX" {
            return Ok(Reply::no(Some("ALREADYEXISTS"), "INBOX always exists"));
        }
        // Superior levels are created as needed (RFC 9051 6.3.4).
        for (i, c) in target.name.char_indices() {
            if c == crate::store::DELIMITER {
                let parent = target.name.get(..i).unwrap_or_default();
                match self
                    .store()
                    .create_mailbox(&target.owner, parent, None)
                    .await
                {
                    Ok(_) | Err(StoreError::MailboxExists) => {}
                    Err(e) => return Ok(self.store_error(e, "NONEXISTENT")),
                }
            }
        }
        match self
            .store()
            .create_mailbox(&target.owner, &target.name, special)
            .await
        {
            Ok(info) => Ok(Reply::ok_code(
                format!("MAILBOXID ({})", wire::mailbox_id(info.id)),
                "CREATE completed",
            )),
            Err(e) => Ok(self.store_error(e, "NONEXISTENT")),
        }
    }

    pub(crate) async fn delete(&mut self, raw: &[u8]) -> io::Result<Reply> {
        let target = match self.target(raw).await {
            Ok(t) => t,
            Err(r) => return Ok(r),
        };
        if !target.rights.has('x') {
            return Ok(Reply::no_perm());
        }
        if target.name == "INBOX" {
            return Ok(Reply::no(Some("CANNOT"), "INBOX cannot be deleted"));
        }
        match self
            .store()
            .delete_mailbox(&target.owner, &target.name)
            .await
        {
            Ok(()) => {
                if self
                    .state
                    .open()
                    .is_some_and(|o| o.view.name == target.name && o.owner == target.owner)
                {
                    self.state.deselect();
                }
                Ok(Reply::ok("DELETE completed"))
            }
            Err(e) => Ok(self.store_error(e, "NONEXISTENT")),
        }
    }

    pub(crate) async fn rename(&mut self, from: &[u8], to: &[u8]) -> io::Result<Reply> {
        let (from, to) = match (self.target(from).await, self.target(to).await) {
            (Ok(f), Ok(t)) => (f, t),
            (Err(r), _) | (_, Err(r)) => return Ok(r),
        };
        let user = self.user_name();
        if from.owner != user || to.owner != user {
            return Ok(Reply::no_perm());
        }
        if acl::in_shared_namespace(&to.name) {
            return Ok(Reply::no(Some("CANNOT"), "That name is reserved"));
        }
        match self
            .store()
            .rename_mailbox(&user, &from.name, &to.name)
            .await
        {
            Ok(()) => Ok(Reply::ok("RENAME completed")),
            Err(e) => Ok(self.store_error(e, "NONEXISTENT")),
        }
    }

    pub(crate) async fn subscribe(&mut self, raw: &[u8], on: bool) -> io::Result<Reply> {
        let Some(name) = wire::mailbox_from_bytes(raw) else {
            return Ok(Reply::bad("Mailbox name is not UTF-8"));
        };
        let name = match crate::store::normalize_name(&name) {
            Ok(n) => n,
            Err(_) => return Ok(Reply::no(Some("CANNOT"), "Invalid mailbox name")),
        };
        let user = self.user_name();
        match self.store().subscribe(&user, &name, on).await {
            Ok(()) => Ok(Reply::ok(if on {
                "SUBSCRIBE completed"
            } else {
                "UNSUBSCRIBE completed"
            })),
            Err(e) => Ok(self.store_error(e, "NONEXISTENT")),
        }
    }

    /// The user's mailboxes plus the shared ones they may see (with
    /// client-visible names), and this user's rights on each.
    async fn visible_mailboxes(&mut self) -> Result<Vec<(MailboxInfo, Rights)>, StoreError> {
        let user = self.user_name();
        let mut out: Vec<(MailboxInfo, Rights)> = self
            .store()
            .list(&user)
            .await?
            .into_iter()
            .map(|m| (m, Rights::all()))
            .collect();
        let shared = self
            .store()
            .shared_with(vec![user.clone(), "anyone".into()])
            .await?;
        let mut by_id: BTreeMap<MailboxId, (MailboxInfo, Rights)> = BTreeMap::new();
        for (info, _, rights) in shared {
            if info.user == user {
                continue;
            }
            let r = Rights::parse(&rights).unwrap_or_default();
            by_id
                .entry(info.id)
                .and_modify(|e| e.1 = e.1.union(r))
                .or_insert((info, r));
        }
        for (_, (mut info, r)) in by_id {
            if r.has('l') {
                info.name = acl::shared_name(&info.user, &info.name);
                out.push((info, r));
            }
        }
        Ok(out)
    }

    /// LIST (RFC 9051 6.3.9) with LIST-EXTENDED (RFC 5258) and LIST-STATUS
    /// (RFC 5819).
    pub(crate) async fn list(
        &mut self,
        reference: &[u8],
        patterns: &[Vec<u8>],
        opts: &ListOpts,
    ) -> io::Result<Reply> {
        let reference = if reference.eq_ignore_ascii_case(b"INBOX") {
            "INBOX".to_string()
        } else {
            utf7::from_wire(&String::from_utf8_lossy(reference))
        };
        let patterns: Vec<String> = patterns
            .iter()
            .map(|p| utf7::from_wire(&String::from_utf8_lossy(p)))
            .collect();
        if !opts.extended && patterns.iter().all(|p| p.is_empty()) {
            // RFC 9051 6.3.9: the delimiter and the root of the reference.
            self.write("* LIST (\\Noselect) \"/\" \"\"\r\n");
            return Ok(Reply::ok("LIST completed"));
        }
        let user = self.user_name();
        let boxes = match self.visible_mailboxes().await {
            Ok(b) => b,
            Err(e) => return Ok(self.store_error(e, "NONEXISTENT")),
        };
        let want_subs = opts.sel_subscribed || opts.ret_subscribed;
        let subs: BTreeSet<String> = if want_subs {
            match self.store().subscriptions(&user).await {
                Ok(s) => s.into_iter().collect(),
                Err(e) => return Ok(self.store_error(e, "NONEXISTENT")),
            }
        } else {
            BTreeSet::new()
        };
        let infos: Vec<MailboxInfo> = boxes.iter().map(|(m, _)| m.clone()).collect();
        let exists: BTreeSet<&str> = infos.iter().map(|m| m.name.as_str()).collect();
        // name -> (attributes, extended data)
        let mut entries: BTreeMap<String, (Vec<&'static str>, Option<&'static str>)> =
            BTreeMap::new();
        for p in &patterns {
            if p.is_empty() {
                continue;
            }
            let full = list::full_pattern(&reference, p);
            if opts.sel_subscribed {
                // A name's attributes as LIST gives them, or \NonExistent
                // (LIST's answer computed once per pattern).
                let listed: BTreeMap<String, Vec<&'static str>> = list::list(&infos, &full)
                    .into_iter()
                    .map(|e| (e.name, e.attributes))
                    .collect();
                let attrs_of = |name: &str| match listed.get(name) {
                    Some(a) => a.clone(),
                    None if exists.contains(name) => vec![],
                    None => vec!["\\NonExistent"],
                };
                for name in &subs {
                    if list::matches(&full, name) {
                        let mut attrs = attrs_of(name);
                        attrs.push("\\Subscribed");
                        entries.entry(name.clone()).or_insert((attrs, None));
                    }
                }
                if opts.recursive_match {
                    // RFC 5258 3.5 and section 5 example 9: a name matching
                    // the pattern whose subscribed descendant does not match
                    // it carries CHILDINFO, subscribed itself or not,
                    // existing or not.
                    for name in &subs {
                        if list::matches(&full, name) {
                            continue;
                        }
                        for (i, c) in name.char_indices() {
                            if c != crate::store::DELIMITER {
                                continue;
                            }
                            let parent = name.get(..i).unwrap_or_default();
                            if !list::matches(&full, parent) {
                                continue;
                            }
                            let e = entries
                                .entry(parent.to_string())
                                .or_insert_with(|| (attrs_of(parent), None));
                            e.1 = Some("(\"CHILDINFO\" (\"SUBSCRIBED\"))");
                        }
                    }
                }
            } else {
                for e in list::list(&infos, &full) {
                    if opts.sel_special_use && !e.attributes.iter().any(|a| is_special_use(a)) {
                        continue;
                    }
                    let mut attrs = e.attributes;
                    if opts.ret_subscribed && subs.contains(&e.name) {
                        attrs.push("\\Subscribed");
                    }
                    entries.insert(e.name, (attrs, None));
                }
            }
        }
        if opts.ret_children {
            // RFC 5258 4: every entry says whether it has children (existing
            // mailboxes below it), \NonExistent ones included.
            // An entry with CHILDINFO has a subscribed child, existing or
            // not: never \HasNoChildren next to it.
            for (name, (attrs, ext)) in entries.iter_mut() {
                if !attrs
                    .iter()
                    .any(|a| *a == "\\HasChildren" || *a == "\\HasNoChildren")
                {
                    let prefix = format!("{name}{}", crate::store::DELIMITER);
                    let children =
                        ext.is_some() || infos.iter().any(|m| m.name.starts_with(&prefix));
                    attrs.push(if children {
                        "\\HasChildren"
                    } else {
                        "\\HasNoChildren"
                    });
                }
            }
        }
        for (name, (attrs, ext)) in &entries {
            let mut line = format!(
                "* LIST ({}) \"/\" {}",
                attrs.join(" "),
                self.mbox_wire(name)
            );
            if let Some(x) = ext {
                line.push(' ');
                line.push_str(x);
            }
            line.push_str("\r\n");
            self.write(&line);
            if let Some(items) = &opts.ret_status {
                let selectable = !attrs
                    .iter()
                    .any(|a| *a == "\\Noselect" || *a == "\\NonExistent");
                if selectable {
                    if let Some((info, rights)) = boxes.iter().find(|(m, _)| &m.name == name) {
                        if rights.has('r') {
                            match self.status_line(info, name, items).await {
                                Ok(l) => self.write(&l),
                                Err(e) => {
                                    tracing::debug!(error = %e, "LIST-STATUS skipped a mailbox")
                                }
                            }
                        }
                    }
                }
            }
        }
        if opts
            .ret_status
            .as_ref()
            .is_some_and(|i| i.contains(&StatusItem::HighestModSeq))
        {
            self.enable_condstore();
        }
        Ok(Reply::ok("LIST completed"))
    }

    pub(crate) async fn lsub(&mut self, reference: &[u8], pattern: &[u8]) -> io::Result<Reply> {
        let reference = if reference.eq_ignore_ascii_case(b"INBOX") {
            "INBOX".to_string()
        } else {
            utf7::from_wire(&String::from_utf8_lossy(reference))
        };
        let pattern = utf7::from_wire(&String::from_utf8_lossy(pattern));
        let full = list::full_pattern(&reference, &pattern);
        let user = self.user_name();
        let entries = match self.store().subscriptions(&user).await {
            Ok(s) => list::lsub(&s, &full),
            Err(e) => return Ok(self.store_error(e, "NONEXISTENT")),
        };
        for e in entries {
            let line = format!(
                "* LSUB ({}) \"/\" {}\r\n",
                e.attributes.join(" "),
                self.mbox_wire(&e.name)
            );
            self.write(&line);
        }
        Ok(Reply::ok("LSUB completed"))
    }

    /// One `* STATUS` line.
    async fn status_line(
        &mut self,
        info: &MailboxInfo,
        display: &str,
        items: &[StatusItem],
    ) -> Result<String, StoreError> {
        // RECENT and DELETED need the messages' metadata.
        let needs_msgs = items.iter().any(|i| {
            matches!(
                i,
                StatusItem::Recent | StatusItem::Deleted | StatusItem::DeletedStorage
            )
        });
        let (mut recent, mut deleted, mut deleted_bytes) = (0, 0, 0u64);
        let mut info = info.clone();
        if needs_msgs {
            let owner = info.user.clone();
            let name = if acl::in_shared_namespace(&info.name) {
                acl::split_shared(&info.name)
                    .map(|(_, n)| n.to_string())
                    .unwrap_or_default()
            } else {
                info.name.clone()
            };
            let s = self.store().snapshot(&owner, &name).await?;
            recent = s
                .messages
                .iter()
                .filter(|m| m.uid >= s.info.recent_uid)
                .count();
            for m in s.messages.iter().filter(|m| m.flags.has(Flags::DELETED)) {
                deleted += 1;
                deleted_bytes += m.size;
            }
            // The snapshot's counters are at least as new.
            info.exists = s.info.exists;
            info.uidnext = s.info.uidnext;
            info.unseen = s.info.unseen;
            info.size = s.info.size;
            info.highestmodseq = s.info.highestmodseq;
        }
        let mut parts = Vec::new();
        for item in items {
            parts.push(match item {
                StatusItem::Messages => format!("MESSAGES {}", info.exists),
                StatusItem::Recent => format!("RECENT {recent}"),
                StatusItem::UidNext => format!("UIDNEXT {}", info.uidnext),
                StatusItem::UidValidity => format!("UIDVALIDITY {}", info.uidvalidity),
                StatusItem::Unseen => format!("UNSEEN {}", info.unseen),
                StatusItem::Deleted => format!("DELETED {deleted}"),
                StatusItem::Size => format!("SIZE {}", info.size),
                StatusItem::HighestModSeq => {
                    format!("HIGHESTMODSEQ {}", info.highestmodseq.max(1))
                }
                StatusItem::AppendLimit => format!("APPENDLIMIT {}", self.append_limit()),
                StatusItem::MailboxId => format!("MAILBOXID ({})", wire::mailbox_id(info.id)),
                // RFC 9208 4.2.2: in units of 1024 octets.
                StatusItem::DeletedStorage => {
                    format!("DELETED-STORAGE {}", deleted_bytes.div_ceil(1024))
                }
            });
        }
        Ok(format!(
            "* STATUS {} ({})\r\n",
            self.mbox_wire(display),
            parts.join(" ")
        ))
    }

    pub(crate) async fn status(&mut self, raw: &[u8], items: &[StatusItem]) -> io::Result<Reply> {
        let target = match self.target(raw).await {
            Ok(t) => t,
            Err(r) => return Ok(r),
        };
        if !target.rights.has('r') {
            return Ok(Reply::no_perm());
        }
        let info = match self.store().status(&target.owner, &target.name).await {
            Ok(i) => i,
            Err(e) => return Ok(self.store_error(e, "NONEXISTENT")),
        };
        let mut info = info;
        info.name = target.display.clone();
        match self.status_line(&info, &target.display, items).await {
            Ok(l) => self.write(&l),
            Err(e) => return Ok(self.store_error(e, "NONEXISTENT")),
        }
        if items.contains(&StatusItem::HighestModSeq) {
            self.enable_condstore();
        }
        Ok(Reply::ok("STATUS completed"))
    }

    /// Flags a user may set with these rights (RFC 4314 4: `s` for \Seen,
    /// `t` for \Deleted, `w` for the others).
    pub(crate) fn permitted_flags(flags: Flags, rights: Rights) -> Flags {
        let mut bits = 0;
        if rights.has('s') {
            bits |= Flags::SEEN;
        }
        if rights.has('t') {
            bits |= Flags::DELETED;
        }
        if rights.has('w') {
            bits |= Flags::ANSWERED | Flags::FLAGGED | Flags::DRAFT;
        }
        Flags {
            bits: flags.bits & bits,
            keywords: if rights.has('w') {
                flags.keywords
            } else {
                Vec::new()
            },
        }
    }

    /// APPEND (RFC 9051 6.3.12; APPENDLIMIT RFC 7889; QUOTA RFC 9208).
    pub(crate) async fn append(
        &mut self,
        raw: &[u8],
        flags: &[String],
        date: Option<(i64, i16)>,
        data: Vec<u8>,
    ) -> io::Result<Reply> {
        let target = match self.target(raw).await {
            Ok(t) => t,
            Err(mut r) => {
                if r.code.as_deref() == Some("NONEXISTENT") {
                    r.code = Some("TRYCREATE".into());
                }
                return Ok(r);
            }
        };
        if !target.rights.has('i') {
            return Ok(Reply::no_perm());
        }
        if data.is_empty() {
            return Ok(Reply::no(None, "Cannot append an empty message"));
        }
        if data.len() as u64 > self.append_limit() {
            return Ok(Reply::no(Some("TOOBIG"), "Message too big"));
        }
        let quota = match self.quota_for(&target.owner).await {
            Ok(q) => q,
            Err(r) => return Ok(r),
        };
        let msg = NewMessage {
            data: Arc::new(data),
            flags: Self::permitted_flags(Flags::from_names(flags), target.rights),
            internal_date: date,
        };
        match self
            .store()
            .append(&target.owner, &target.name, msg, quota)
            .await
        {
            Ok(placed) => {
                if self
                    .state
                    .open()
                    .is_some_and(|o| o.view.id == placed.mailbox)
                {
                    self.sync(true).await;
                }
                Ok(Reply::ok_code(
                    format!("APPENDUID {} {}", placed.uidvalidity, placed.uid),
                    "APPEND completed",
                ))
            }
            Err(e) => Ok(self.store_error(e, "TRYCREATE")),
        }
    }

    /// `* QUOTA root (...)` for an owner (RFC 9208 5.1).
    async fn quota_line(&mut self, root: &str, owner: &str) -> Result<String, Reply> {
        let quota = self.quota_for(owner).await?;
        let usage = self
            .store()
            .usage(owner)
            .await
            .map_err(|e| self.store_error(e, "NONEXISTENT"))?;
        let mut res = Vec::new();
        if let Some(limit) = quota.storage {
            res.push(format!(
                "STORAGE {} {}",
                usage.bytes.div_ceil(1024),
                limit / 1024
            ));
        }
        if let Some(limit) = quota.messages {
            res.push(format!("MESSAGE {} {limit}", usage.messages));
        }
        Ok(format!(
            "* QUOTA {} ({})\r\n",
            wire::string(root),
            res.join(" ")
        ))
    }

    /// GETQUOTAROOT (RFC 9208 4.3): every mailbox of a user shares one
    /// root, named "" for the user's own and after the owner otherwise.
    pub(crate) async fn getquotaroot(&mut self, raw: &[u8]) -> io::Result<Reply> {
        let target = match self.target(raw).await {
            Ok(t) => t,
            Err(r) => return Ok(r),
        };
        let root = if target.owner == self.user_name() {
            String::new()
        } else {
            target.owner.clone()
        };
        let line = match self.quota_line(&root, &target.owner).await {
            Ok(l) => l,
            Err(r) => return Ok(r),
        };
        let head = format!(
            "* QUOTAROOT {} {}\r\n",
            self.mbox_wire(&target.display),
            wire::string(&root)
        );
        self.write(&head);
        self.write(&line);
        Ok(Reply::ok("GETQUOTAROOT completed"))
    }

    /// GETQUOTA (RFC 9208 4.2).
    pub(crate) async fn getquota(&mut self, root: &[u8]) -> io::Result<Reply> {
        if !root.is_empty() {
            return Ok(Reply::no(Some("NONEXISTENT"), "No such quota root"));
        }
        let user = self.user_name();
        match self.quota_line("", &user).await {
            Ok(l) => {
                self.write(&l);
                Ok(Reply::ok("GETQUOTA completed"))
            }
            Err(r) => Ok(r),
        }
    }

    /// The mailbox id of a resolved target.
    async fn target_id(&mut self, t: &Target) -> Result<MailboxId, Reply> {
        self.store()
            .status(&t.owner, &t.name)
            .await
            .map(|i| i.id)
            .map_err(|e| self.store_error(e, "NONEXISTENT"))
    }

    /// GETACL (RFC 4314 3.3).
    pub(crate) async fn getacl(&mut self, raw: &[u8]) -> io::Result<Reply> {
        let target = match self.target(raw).await {
            Ok(t) => t,
            Err(r) => return Ok(r),
        };
        if !target.rights.has('a') {
            return Ok(Reply::no_perm());
        }
        let id = match self.target_id(&target).await {
            Ok(i) => i,
            Err(r) => return Ok(r),
        };
        let acl = match self.store().acl(id).await {
            Ok(a) => a,
            Err(e) => return Ok(self.store_error(e, "NONEXISTENT")),
        };
        let mut line = format!(
            "* ACL {} {} {}",
            self.mbox_wire(&target.display),
            wire::string(&target.owner),
            acl::OWNER_RIGHTS
        );
        for (ident, rights) in acl {
            line.push_str(&format!(
                " {} {}",
                wire::string(&ident),
                wire::string(&rights)
            ));
        }
        line.push_str("\r\n");
        self.write(&line);
        Ok(Reply::ok("GETACL completed"))
    }

    /// SETACL (`Some(rights)`) and DELETEACL (`None`) (RFC 4314 3.1, 3.2).
    pub(crate) async fn setacl(
        &mut self,
        raw: &[u8],
        identifier: &str,
        rights: Option<&str>,
    ) -> io::Result<Reply> {
        let target = match self.target(raw).await {
            Ok(t) => t,
            Err(r) => return Ok(r),
        };
        if !target.rights.has('a') {
            return Ok(Reply::no_perm());
        }
        if identifier.starts_with('-') {
            return Ok(Reply::no(
                Some("CANNOT"),
                "Negative rights are not supported",
            ));
        }
        let ident = if identifier.eq_ignore_ascii_case("anyone") {
            "anyone".to_string()
        } else {
            crate::directory::qualify_login(identifier, &self.config.server.domain)
        };
        if ident == target.owner {
            return Ok(Reply::no(
                Some("CANNOT"),
                "The owner's rights cannot be changed",
            ));
        }
        let id = match self.target_id(&target).await {
            Ok(i) => i,
            Err(r) => return Ok(r),
        };
        let new = match rights {
            None => None,
            Some(arg) => {
                let current = match self.store().rights(id, &ident).await {
                    Ok(r) => r.and_then(|s| Rights::parse(&s)).unwrap_or_default(),
                    Err(e) => return Ok(self.store_error(e, "NONEXISTENT")),
                };
                match acl::modify(current, arg) {
                    Some(r) => Some(r.to_string()),
                    None => return Ok(Reply::bad("Unknown right in rights list")),
                }
            }
        };
        match self.store().set_acl(id, &ident, new).await {
            Ok(()) => Ok(Reply::ok(if rights.is_some() {
                "SETACL completed"
            } else {
                "DELETEACL completed"
            })),
            Err(e) => Ok(self.store_error(e, "NONEXISTENT")),
        }
    }

    /// LISTRIGHTS (RFC 4314 3.4).
    pub(crate) async fn listrights(&mut self, raw: &[u8], identifier: &str) -> io::Result<Reply> {
        let target = match self.target(raw).await {
            Ok(t) => t,
            Err(r) => return Ok(r),
        };
        if !target.rights.has('a') {
            return Ok(Reply::no_perm());
        }
        let ident = if identifier.eq_ignore_ascii_case("anyone") {
            "anyone".to_string()
        } else {
            crate::directory::qualify_login(identifier, &self.config.server.domain)
        };
        let rest = if ident == target.owner {
            acl::OWNER_RIGHTS.to_string()
        } else {
            format!("\"\" {}", acl::listrights_groups())
        };
        let line = format!(
            "* LISTRIGHTS {} {} {rest}\r\n",
            self.mbox_wire(&target.display),
            wire::string(identifier)
        );
        self.write(&line);
        Ok(Reply::ok("LISTRIGHTS completed"))
    }

    /// MYRIGHTS (RFC 4314 3.5).
    pub(crate) async fn myrights(&mut self, raw: &[u8]) -> io::Result<Reply> {
        let target = match self.target(raw).await {
            Ok(t) => t,
            Err(r) => return Ok(r),
        };
        if target.owner == self.user_name() {
            if let Err(r) = self.target_id(&target).await {
                return Ok(r);
            }
        }
        let line = format!(
            "* MYRIGHTS {} {}\r\n",
            self.mbox_wire(&target.display),
            target.rights
        );
        self.write(&line);
        Ok(Reply::ok("MYRIGHTS completed"))
    }
}

fn is_special_use(attr: &str) -> bool {
    SpecialUse::from_attribute(attr).is_some()
}
