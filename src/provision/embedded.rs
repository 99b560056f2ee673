//! Provisioning on the embedded directory file (src/directory/embedded.rs):
//! every change under its lock, replaced atomically, seen by running
//! servers within a second.
//!
//! Mapping (docs/admin.md):
//! - a user is an entry of `users`; the file keeps one list of other
//!   addresses (`account.aliases`), so alternate and equivalent addresses
//!   both land there and are reported as `aliases` (`equivalents` is
//!   always empty here);
//! - a group is an entry of `aliases` (its members), `errors_to` and
//!   `groups` (GroupInfo: name, status, who may post, other addresses);
//!   member DNs are LDAP only;
//! - a domain is an entry of `domains` and `domain_info`;
//! - an address is used once: by a user, a user's alias, a group or a
//!   group's alias.
//!
//! A user added in a domain the file does not have yet adds the domain
//! (as `msgd user add` always did): only a site actor gets this far, a
//! domain administrator's domains exist by definition.

use std::collections::HashSet;
use std::path::PathBuf;

use super::*;
use crate::config::Config;
use crate::directory::embedded::{self as file, Data, DomainInfo, GroupInfo};
use crate::directory::{canonical_address, domain_of, password, Account};

pub struct EmbeddedProv {
    path: PathBuf,
    /// `[auth]` hashing parameters for new passwords (as `msgd user add`).
    argon2: password::Argon2Params,
}

/// One new user for a batch: the entry and its hash, made before the
/// file is locked.
pub struct Prepared {
    pub user: User,
    pub hash: String,
}

impl EmbeddedProv {
    pub fn open(config: &Config) -> anyhow::Result<EmbeddedProv> {
        Ok(EmbeddedProv {
            path: config.directory_path(),
            argon2: config.auth.argon2(),
        })
    }

    /// Hashes a password with the `[auth]` parameters, off the runtime.
    pub async fn hash(&self, password: &Secret) -> Result<String> {
        hash_password(self.argon2, password.clone()).await
    }

    /// The `[auth]` hashing parameters (for hashing in parallel).
    pub fn argon2(&self) -> password::Argon2Params {
        self.argon2
    }

    /// Reads the file (no lock: the file is replaced atomically).
    async fn read(&self) -> Result<Data> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || file::load(&path))
            .await
            .map_err(|e| ProvError::Other(anyhow::anyhow!("reading: {e}")))?
            .map_err(ProvError::Other)
    }

    /// Runs `f` on the file under its lock; the file is written only if
    /// `f` succeeds.
    async fn edit<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Data) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let path = self.path.clone();
        let r = tokio::task::spawn_blocking(move || {
            file::edit(&path, |d| f(d).map_err(anyhow::Error::from))
        })
        .await
        .map_err(|e| ProvError::Other(anyhow::anyhow!("editing: {e}")))?;
        r.map_err(|e| match e.downcast::<ProvError>() {
            Ok(p) => p,
            Err(e) => ProvError::Other(e),
        })
    }

    pub async fn admin_identity(
        &self,
        login: &str,
        password: Option<&Secret>,
    ) -> Result<AdminIdentity> {
        let login = canonical_address(login);
        let d = self.read().await?;
        if let Some(pw) = password {
            let stored = d.users.get(&login).map(|u| u.password.clone());
            let pw = pw.expose().to_string();
            let ok = tokio::task::spawn_blocking(move || match stored {
                Some(s) => password::verify(&pw, &s),
                None => {
                    // The same time as a real check.
                    let _ = password::verify(&pw, &password::hash("x").unwrap_or_default());
                    false
                }
            })
            .await
            .unwrap_or(false);
            if !ok {
                return Err(ProvError::Denied("wrong login or password".into()));
            }
            if d.users.get(&login).is_some_and(|u| !u.account.active) {
                return Err(ProvError::Denied(format!("{login} is not active")));
            }
        }
        Ok(AdminIdentity {
            site: d.site_admins.iter().any(|a| canonical_address(a) == login),
            domains: d
                .domain_info
                .iter()
                .filter(|(_, i)| i.admins.iter().any(|a| canonical_address(a) == login))
                .map(|(n, _)| n.clone())
                .collect(),
            names: vec![login.clone()],
            id: login,
        })
    }

    pub async fn user_get(&self, address: &str) -> Result<Option<User>> {
        let a = canonical_address(address);
        Ok(self.read().await?.users.get(&a).map(user_of))
    }

    pub async fn user_list(&self, q: &Query) -> Result<Page<User>> {
        let d = self.read().await?;
        let all = d.users.values().map(user_of).filter(|u| {
            matches(q, &u.address, u.name.as_deref(), u.status)
                || (q.text.is_some()
                    && q.domain
                        .as_deref()
                        .is_none_or(|x| domain_of(&u.address) == Some(x))
                    && q.status.is_none_or(|s| s == u.status)
                    && u.aliases.iter().any(|a| contains_text(q, a)))
        });
        Ok(page(all, q))
    }

    /// Creates the entry with the password hashed.
    pub async fn user_add(&self, user: &User, password: &Secret) -> Result<User> {
        let hash = self.hash(password).await?;
        let mut made = self
            .users_add(vec![Prepared {
                user: user.clone(),
                hash,
            }])
            .await?;
        made.pop()
            .unwrap_or_else(|| Err(ProvError::Other(anyhow::anyhow!("nothing added"))))
    }

    /// Adds many users in one edit of the file (bulk import): one result
    /// per user, in order; a refused user does not stop the others.
    pub async fn users_add(&self, users: Vec<Prepared>) -> Result<Vec<Result<User>>> {
        self.edit(move |d| {
            let mut used = used_addresses(d);
            Ok(users
                .into_iter()
                .map(|p| insert_user(d, &mut used, p.user, p.hash))
                .collect())
        })
        .await
    }

    pub async fn user_modify(&self, address: &str, change: &UserChange) -> Result<User> {
        let a = canonical_address(address);
        let hash = match &change.password {
            Some(p) => Some(self.hash(p).await?),
            None => None,
        };
        let change = change.clone();
        self.edit(move |d| modify_user(d, &a, &change, hash)).await
    }

    /// Status deleted, `deleted_at = at`.
    pub async fn user_mark_deleted(&self, address: &str, at: i64) -> Result<User> {
        let a = canonical_address(address);
        self.edit(move |d| {
            let u = d
                .users
                .get_mut(&a)
                .ok_or_else(|| ProvError::NotFound(a.clone()))?;
            if !u.account.deleted {
                u.account.deleted = true;
                u.account.active = false;
                u.deleted_at = Some(at);
            }
            Ok(user_of(u))
        })
        .await
    }

    /// Removes the entry for good.
    pub async fn user_remove(&self, address: &str) -> Result<()> {
        let a = canonical_address(address);
        self.edit(move |d| {
            d.users
                .remove(&a)
                .map(|_| ())
                .ok_or_else(|| ProvError::NotFound(a.clone()))?;
            d.site_admins.retain(|x| canonical_address(x) != a);
            for i in d.domain_info.values_mut() {
                i.admins.retain(|x| canonical_address(x) != a);
            }
            Ok(())
        })
        .await
    }

    /// Users marked deleted before `before`.
    pub async fn deleted_users(&self, before: i64) -> Result<Vec<User>> {
        Ok(self
            .read()
            .await?
            .users
            .values()
            .filter(|u| u.account.deleted && u.deleted_at.unwrap_or(0) <= before)
            .map(user_of)
            .collect())
    }

    pub async fn group_get(&self, address: &str) -> Result<Option<Group>> {
        let a = canonical_address(address);
        Ok(group_of(&self.read().await?, &a))
    }

    pub async fn group_list(&self, q: &Query) -> Result<Page<Group>> {
        let d = self.read().await?;
        let all = d
            .aliases
            .keys()
            .filter_map(|a| group_of(&d, a))
            .filter(|g| matches(q, &g.address, g.name.as_deref(), g.status));
        Ok(page(all, q))
    }

    pub async fn group_add(&self, group: &Group) -> Result<Group> {
        let g = group.clone();
        self.edit(move |d| {
            let a = checked_address(&g.address, "group address")?;
            let members = checked_list(&g.members, "member")?;
            need_domain(d, &a)?;
            if let Some(t) = taken(d, &a) {
                return Err(ProvError::Exists(format!("{a} ({t})")));
            }
            if g.members.is_empty() {
                return Err(ProvError::Invalid(format!(
                    "group {a}: give at least one member"
                )));
            }
            if !g.member_dns.is_empty() {
                return Err(ProvError::Invalid(
                    "member DNs: the embedded directory has members by address only".into(),
                ));
            }
            let mut info = GroupInfo {
                name: g.name.clone(),
                status: g.status,
                allowed_broadcasters: checked_list(&g.allowed_broadcasters, "allowed broadcaster")?,
                allowed_domains: checked_domains(&g.allowed_domains)?,
                aliases: Vec::new(),
            };
            for x in &g.aliases {
                let x = checked_address(x, "group alias")?;
                need_domain(d, &x)?;
                if x == a || info.aliases.contains(&x) {
                    continue;
                }
                if let Some(t) = taken(d, &x) {
                    return Err(ProvError::Exists(format!("{x} ({t})")));
                }
                info.aliases.push(x);
            }
            d.aliases.insert(a.clone(), members);
            match &g.errors_to {
                Some(e) => {
                    d.errors_to
                        .insert(a.clone(), checked_address(e, "errors-to")?);
                }
                None => {
                    d.errors_to.remove(&a);
                }
            }
            if info == GroupInfo::default() {
                d.groups.remove(&a);
            } else {
                d.groups.insert(a.clone(), info);
            }
            group_of(d, &a).ok_or_else(|| ProvError::NotFound(a.clone()))
        })
        .await
    }

    pub async fn group_modify(&self, address: &str, change: &GroupChange) -> Result<Group> {
        let a = canonical_address(address);
        let c = change.clone();
        self.edit(move |d| {
            if !d.aliases.contains_key(&a) {
                return Err(ProvError::NotFound(a.clone()));
            }
            let mut info = d.groups.get(&a).cloned().unwrap_or_default();
            let mut members = d.aliases.get(&a).cloned().unwrap_or_default();
            for m in checked_list(&c.remove_members, "member")? {
                members.retain(|x| *x != m);
            }
            for m in checked_list(&c.add_members, "member")? {
                if !members.contains(&m) {
                    members.push(m);
                }
            }
            if members.is_empty() {
                return Err(ProvError::Invalid(format!(
                    "group {a}: the last member cannot be removed (delete the group)"
                )));
            }
            for x in checked_list(&c.remove_aliases, "group alias")? {
                info.aliases.retain(|y| *y != x);
            }
            for x in checked_list(&c.add_aliases, "group alias")? {
                if x == a || info.aliases.contains(&x) {
                    continue;
                }
                need_domain(d, &x)?;
                if let Some(t) = taken(d, &x) {
                    return Err(ProvError::Exists(format!("{x} ({t})")));
                }
                info.aliases.push(x);
            }
            if let Some(n) = &c.name {
                info.name = n.clone();
            }
            if let Some(s) = c.status {
                info.status = s;
            }
            if let Some(b) = &c.allowed_broadcasters {
                info.allowed_broadcasters = checked_list(b, "allowed broadcaster")?;
            }
            if let Some(x) = &c.allowed_domains {
                info.allowed_domains = checked_domains(x)?;
            }
            match &c.errors_to {
                Some(Some(e)) => {
                    d.errors_to
                        .insert(a.clone(), checked_address(e, "errors-to")?);
                }
                Some(None) => {
                    d.errors_to.remove(&a);
                }
                None => {}
            }
            d.aliases.insert(a.clone(), members);
            if info == GroupInfo::default() {
                d.groups.remove(&a);
            } else {
                d.groups.insert(a.clone(), info);
            }
            group_of(d, &a).ok_or_else(|| ProvError::NotFound(a.clone()))
        })
        .await
    }

    pub async fn group_delete(&self, address: &str) -> Result<()> {
        let a = canonical_address(address);
        self.edit(move |d| {
            d.aliases
                .remove(&a)
                .ok_or_else(|| ProvError::NotFound(a.clone()))?;
            d.errors_to.remove(&a);
            d.groups.remove(&a);
            Ok(())
        })
        .await
    }

    pub async fn domain_get(&self, name: &str) -> Result<Option<Domain>> {
        let n = name.trim().to_lowercase();
        Ok(domain_of_data(&self.read().await?, &n))
    }

    pub async fn domain_list(&self, q: &Query) -> Result<Page<Domain>> {
        let d = self.read().await?;
        let mut names = d.domains.clone();
        names.sort();
        names.dedup();
        let all = names
            .iter()
            .filter_map(|n| domain_of_data(&d, n))
            .filter(|x| {
                q.domain.as_deref().is_none_or(|w| w == x.name)
                    && q.status.is_none_or(|s| s == x.status)
                    && contains_text(q, &x.name)
            });
        Ok(page(all, q))
    }

    pub async fn domain_add(&self, domain: &Domain) -> Result<Domain> {
        let dom = domain.clone();
        self.edit(move |d| {
            let n = checked_domain(&dom.name)?;
            if d.domains.contains(&n) {
                return Err(ProvError::Exists(format!("domain {n}")));
            }
            let info = DomainInfo {
                status: dom.status,
                default_quota: dom.default_quota,
                default_msg_quota: dom.default_msg_quota,
                default_mail_host: dom.default_mail_host.clone(),
                admins: checked_list(&dom.admins, "administrator")?,
                max_users: dom.max_users,
                max_quota: dom.max_quota,
            };
            d.domains.push(n.clone());
            d.domains.sort();
            if info != DomainInfo::default() {
                d.domain_info.insert(n.clone(), info);
            }
            domain_of_data(d, &n).ok_or_else(|| ProvError::NotFound(n.clone()))
        })
        .await
    }

    pub async fn domain_modify(&self, name: &str, change: &DomainChange) -> Result<Domain> {
        let n = name.trim().to_lowercase();
        let c = change.clone();
        self.edit(move |d| {
            if !d.domains.contains(&n) {
                return Err(ProvError::NotFound(format!("domain {n}")));
            }
            let mut i = d.domain_info.get(&n).cloned().unwrap_or_default();
            if let Some(s) = c.status {
                i.status = s;
            }
            if let Some(v) = c.default_quota {
                i.default_quota = v;
            }
            if let Some(v) = c.default_msg_quota {
                i.default_msg_quota = v;
            }
            if let Some(v) = &c.default_mail_host {
                i.default_mail_host = v.clone();
            }
            for x in checked_list(&c.remove_admins, "administrator")? {
                i.admins.retain(|y| *y != x);
            }
            for x in checked_list(&c.add_admins, "administrator")? {
                if !i.admins.contains(&x) {
                    i.admins.push(x);
                }
            }
            if let Some(v) = c.max_users {
                i.max_users = v;
            }
            if let Some(v) = c.max_quota {
                i.max_quota = v;
            }
            if i == DomainInfo::default() {
                d.domain_info.remove(&n);
            } else {
                d.domain_info.insert(n.clone(), i);
            }
            domain_of_data(d, &n).ok_or_else(|| ProvError::NotFound(n.clone()))
        })
        .await
    }

    /// Refused while the domain has users or groups.
    pub async fn domain_delete(&self, name: &str) -> Result<()> {
        let n = name.trim().to_lowercase();
        self.edit(move |d| {
            if !d.domains.contains(&n) {
                return Err(ProvError::NotFound(format!("domain {n}")));
            }
            let in_it = |a: &String| domain_of(a) == Some(n.as_str());
            let users = d.users.keys().filter(|a| in_it(a)).count();
            let groups = d.aliases.keys().filter(|a| in_it(a)).count();
            if users + groups > 0 {
                return Err(ProvError::Invalid(format!(
                    "domain {n} still has {users} user(s) and {groups} group(s): delete them first"
                )));
            }
            d.domains.retain(|x| *x != n);
            d.domain_info.remove(&n);
            Ok(())
        })
        .await
    }

    /// (users, quota bytes given to them) of a domain: users not marked
    /// deleted; a user without quota counts the domain's default quota.
    pub async fn domain_usage(&self, name: &str) -> Result<(u64, u64)> {
        let n = name.trim().to_lowercase();
        Ok(usage(&self.read().await?, &n))
    }
}

/// Hashes a password with `params` on the blocking pool.
pub async fn hash_password(params: password::Argon2Params, pw: Secret) -> Result<String> {
    if pw.is_empty() {
        return Err(ProvError::Invalid("password: empty".into()));
    }
    tokio::task::spawn_blocking(move || password::hash_with(pw.expose(), &params))
        .await
        .map_err(|e| ProvError::Other(anyhow::anyhow!("hashing: {e}")))?
        .map_err(ProvError::Other)
}

pub(crate) fn usage(d: &Data, domain: &str) -> (u64, u64) {
    let default = d.domain_info.get(domain).and_then(|i| i.default_quota);
    d.users
        .values()
        .filter(|u| !u.account.deleted && domain_of(&u.account.address) == Some(domain))
        .fold((0, 0), |(n, q), u| {
            (
                n + 1,
                q.saturating_add(u.account.quota.or(default).unwrap_or(0)),
            )
        })
}

fn contains_text(q: &Query, s: &str) -> bool {
    match &q.text {
        None => true,
        Some(t) => s.to_lowercase().contains(&t.to_lowercase()),
    }
}

/// The query's domain, status and text (address or name) match.
fn matches(q: &Query, address: &str, name: Option<&str>, status: EntryStatus) -> bool {
    q.domain
        .as_deref()
        .is_none_or(|x| domain_of(address) == Some(x))
        && q.status.is_none_or(|s| s == status)
        && (contains_text(q, address)
            || name.is_some_and(|n| q.text.is_some() && contains_text(q, n)))
}

/// One page of an already sorted listing.
fn page<T>(all: impl Iterator<Item = T>, q: &Query) -> Page<T> {
    let limit = q.limit.clamp(1, MAX_PAGE);
    let mut total = 0;
    let mut items = Vec::new();
    for x in all {
        if total >= q.offset && items.len() < limit {
            items.push(x);
        }
        total += 1;
    }
    Page { items, total }
}

fn user_of(u: &file::User) -> User {
    let a = &u.account;
    User {
        address: a.address.clone(),
        name: u.name.clone(),
        aliases: a.aliases.clone(),
        equivalents: Vec::new(),
        mail_host: a.mail_host.clone(),
        partition: a.partition.clone(),
        quota: a.quota,
        msg_quota: a.msg_quota,
        status: if a.deleted {
            EntryStatus::Deleted
        } else if a.active {
            EntryStatus::Active
        } else {
            EntryStatus::Inactive
        },
        keep_mailbox: a.keep_mailbox,
        forward: a.forward.clone(),
        class: u.class.clone(),
        deleted_at: u.deleted_at,
    }
}

fn group_of(d: &Data, a: &str) -> Option<Group> {
    let members = d.aliases.get(a)?;
    let info = d.groups.get(a).cloned().unwrap_or_default();
    Some(Group {
        address: a.to_string(),
        name: info.name,
        aliases: info.aliases,
        members: members.clone(),
        member_dns: Vec::new(),
        errors_to: d.errors_to.get(a).cloned(),
        allowed_broadcasters: info.allowed_broadcasters,
        allowed_domains: info.allowed_domains,
        status: info.status,
    })
}

fn domain_of_data(d: &Data, n: &str) -> Option<Domain> {
    if !d.domains.iter().any(|x| x == n) {
        return None;
    }
    let i = d.domain_info.get(n).cloned().unwrap_or_default();
    Some(Domain {
        name: n.to_string(),
        status: i.status,
        default_quota: i.default_quota,
        default_msg_quota: i.default_msg_quota,
        default_mail_host: i.default_mail_host,
        admins: i.admins,
        max_users: i.max_users,
        max_quota: i.max_quota,
    })
}

/// What already uses an address, if anything.
fn taken(d: &Data, a: &str) -> Option<String> {
    if d.users.contains_key(a) {
        return Some("a user".into());
    }
    if let Some(u) = d
        .users
        .values()
        .find(|u| u.account.aliases.iter().any(|x| x == a))
    {
        return Some(format!("an alias of {}", u.account.address));
    }
    if d.aliases.contains_key(a) {
        return Some("a group".into());
    }
    if let Some((g, _)) = d
        .groups
        .iter()
        .find(|(_, i)| i.aliases.iter().any(|x| x == a))
    {
        return Some(format!("an alias of group {g}"));
    }
    None
}

fn checked_address(a: &str, what: &str) -> Result<String> {
    let a = canonical_address(a);
    crate::directory::names::check_address(&a)
        .map_err(|e| ProvError::Invalid(format!("{what}: {e}")))?;
    if domain_of(&a).is_none() {
        return Err(ProvError::Invalid(format!(
            "{what}: '{a}' is not an address (user@domain)"
        )));
    }
    Ok(a)
}

fn checked_list(l: &[String], what: &str) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::with_capacity(l.len());
    for x in l {
        let x = checked_address(x, what)?;
        if !out.contains(&x) {
            out.push(x);
        }
    }
    Ok(out)
}

fn checked_domain(n: &str) -> Result<String> {
    let n = n.trim().to_lowercase();
    crate::directory::names::check_domain(&n)
        .map_err(|e| ProvError::Invalid(format!("domain: {e}")))?;
    Ok(n)
}

fn checked_domains(l: &[String]) -> Result<Vec<String>> {
    let mut out = Vec::with_capacity(l.len());
    for x in l {
        out.push(checked_domain(x)?);
    }
    Ok(out)
}

/// An address of a group or an alias must be in a local domain.
fn need_domain(d: &Data, a: &str) -> Result<()> {
    let dom = domain_of(a).unwrap_or_default();
    if d.domains.iter().any(|x| x == dom) {
        Ok(())
    } else {
        Err(ProvError::Invalid(format!(
            "{a}: {dom} is not a local domain (add the domain first: msgd domain add {dom})"
        )))
    }
}

/// Every address in use (users, their aliases, groups, their aliases).
fn used_addresses(d: &Data) -> HashSet<String> {
    let mut s = HashSet::new();
    for u in d.users.values() {
        s.insert(u.account.address.clone());
        s.extend(u.account.aliases.iter().cloned());
    }
    s.extend(d.aliases.keys().cloned());
    for i in d.groups.values() {
        s.extend(i.aliases.iter().cloned());
    }
    s
}

/// `taken` through the set of used addresses (fast for bulk adds).
fn taken_in(d: &Data, used: &HashSet<String>, a: &str) -> Option<String> {
    if used.contains(a) {
        Some(taken(d, a).unwrap_or_else(|| "in use".into()))
    } else {
        None
    }
}

fn insert_user(d: &mut Data, used: &mut HashSet<String>, u: User, hash: String) -> Result<User> {
    let a = checked_address(&u.address, "address")?;
    let dom = domain_of(&a).unwrap_or_default().to_string();
    if let Some(t) = taken_in(d, used, &a) {
        return Err(ProvError::Exists(format!("{a} ({t})")));
    }
    // A site actor's first user of a domain adds it (see the top).
    if !d.domains.contains(&dom) {
        d.domains.push(dom.clone());
        d.domains.sort();
    }
    let mut aliases = Vec::new();
    for x in u.aliases.iter().chain(&u.equivalents) {
        let x = checked_address(x, "alias")?;
        if x == a || aliases.contains(&x) {
            continue;
        }
        need_domain(d, &x)?;
        if let Some(t) = taken_in(d, used, &x) {
            return Err(ProvError::Exists(format!("{x} ({t})")));
        }
        aliases.push(x);
    }
    let forward = checked_list(&u.forward, "forwarding address")?;
    let (active, deleted) = status_flags(u.status);
    let entry = file::User {
        password: hash,
        account: Account {
            aliases,
            active,
            deleted,
            quota: u.quota,
            msg_quota: u.msg_quota,
            mail_host: u.mail_host.clone(),
            partition: u.partition.clone(),
            forward,
            keep_mailbox: u.keep_mailbox,
            ..Account::new(a.clone())
        },
        name: u.name.clone(),
        class: u.class.clone(),
        deleted_at: deleted.then(now),
    };
    let out = user_of(&entry);
    used.insert(a.clone());
    used.extend(entry.account.aliases.iter().cloned());
    d.users.insert(a, entry);
    Ok(out)
}

fn status_flags(s: EntryStatus) -> (bool, bool) {
    match s {
        EntryStatus::Active => (true, false),
        EntryStatus::Inactive => (false, false),
        EntryStatus::Deleted => (false, true),
    }
}

fn modify_user(d: &mut Data, a: &str, c: &UserChange, hash: Option<String>) -> Result<User> {
    let Some(mut u) = d.users.get(a).cloned() else {
        return Err(ProvError::NotFound(a.to_string()));
    };
    for x in checked_list(&c.remove_aliases, "alias")?
        .into_iter()
        .chain(checked_list(&c.remove_equivalents, "alias")?)
    {
        u.account.aliases.retain(|y| *y != x);
    }
    for x in checked_list(&c.add_aliases, "alias")?
        .into_iter()
        .chain(checked_list(&c.add_equivalents, "alias")?)
    {
        if x == a || u.account.aliases.contains(&x) {
            continue;
        }
        need_domain(d, &x)?;
        if let Some(t) = taken(d, &x) {
            return Err(ProvError::Exists(format!("{x} ({t})")));
        }
        u.account.aliases.push(x);
    }
    if let Some(h) = hash {
        u.password = h;
    }
    if let Some(n) = &c.name {
        u.name = n.clone();
    }
    if let Some(h) = &c.mail_host {
        if *h != u.account.mail_host {
            return Err(ProvError::Invalid(
                "mailHost: changing it moves the mail; use `msgd user move`".into(),
            ));
        }
    }
    if let Some(p) = &c.partition {
        if *p != u.account.partition {
            return Err(ProvError::Invalid(
                "partition: changing it moves the mail; use `msgd user move`".into(),
            ));
        }
    }
    if let Some(q) = c.quota {
        u.account.quota = q;
    }
    if let Some(q) = c.msg_quota {
        u.account.msg_quota = q;
    }
    if let Some(s) = c.status {
        let (active, deleted) = status_flags(s);
        if deleted && !u.account.deleted {
            u.deleted_at = Some(now());
        }
        if !deleted {
            u.deleted_at = None;
        }
        u.account.active = active;
        u.account.deleted = deleted;
    }
    if let Some(k) = c.keep_mailbox {
        u.account.keep_mailbox = k;
    }
    if let Some(f) = &c.forward {
        u.account.forward = checked_list(f, "forwarding address")?;
    }
    let out = user_of(&u);
    d.users.insert(a.to_string(), u);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prov(dir: &std::path::Path) -> EmbeddedProv {
        EmbeddedProv {
            path: dir.join("directory.json"),
            argon2: password::Argon2Params::default(),
        }
    }

    #[tokio::test]
    async fn users_groups_domains_round_trip() {
        let t = tempfile::tempdir().unwrap();
        let p = prov(t.path());
        p.domain_add(&Domain {
            name: "X.test".into(),
            max_users: Some(3),
            ..Default::default()
        })
        .await
        .unwrap();
        let u = p
            .user_add(
                &User {
                    address: "A@x.test".into(),
                    aliases: vec!["al@x.test".into()],
                    quota: Some(10),
                    ..Default::default()
                },
                &Secret::from("pw"),
            )
            .await
            .unwrap();
        assert_eq!(u.address, "a@x.test");
        assert_eq!(u.aliases, vec!["al@x.test".to_string()]);
        // Addresses are used once.
        let e = p
            .group_add(&Group {
                address: "al@x.test".into(),
                members: vec!["a@x.test".into()],
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert!(matches!(e, ProvError::Exists(_)), "{e}");
        // An alias in a foreign domain is refused.
        let e = p
            .user_modify(
                "a@x.test",
                &UserChange {
                    add_aliases: vec!["b@y.test".into()],
                    ..Default::default()
                },
            )
            .await
            .unwrap_err();
        assert!(e.to_string().contains("add the domain first"), "{e}");
        p.group_add(&Group {
            address: "team@x.test".into(),
            members: vec!["a@x.test".into()],
            ..Default::default()
        })
        .await
        .unwrap();
        let e = p.domain_delete("x.test").await.unwrap_err();
        assert!(matches!(e, ProvError::Invalid(_)), "{e}");
        let del = p.user_mark_deleted("a@x.test", 100).await.unwrap();
        assert_eq!(del.status, EntryStatus::Deleted);
        assert_eq!(p.deleted_users(99).await.unwrap().len(), 0);
        assert_eq!(p.deleted_users(100).await.unwrap().len(), 1);
        assert_eq!(p.domain_usage("x.test").await.unwrap(), (0, 0));
        p.user_remove("a@x.test").await.unwrap();
        p.group_delete("team@x.test").await.unwrap();
        p.domain_delete("x.test").await.unwrap();
        assert!(p.domain_get("x.test").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn listing_filters_sorts_and_pages() {
        let t = tempfile::tempdir().unwrap();
        let p = prov(t.path());
        let mut batch = Vec::new();
        for i in (0..30).rev() {
            batch.push(Prepared {
                user: User {
                    address: format!("u{i:02}@{}.test", if i % 2 == 0 { "e" } else { "o" }),
                    ..Default::default()
                },
                hash: "x".into(),
            });
        }
        let r = p.users_add(batch).await.unwrap();
        assert!(r.iter().all(|x| x.is_ok()));
        let q = Query {
            domain: Some("e.test".into()),
            offset: 5,
            limit: 3,
            ..Default::default()
        };
        let pg = p.user_list(&q).await.unwrap();
        assert_eq!(pg.total, 15);
        let got: Vec<_> = pg.items.iter().map(|u| u.address.as_str()).collect();
        assert_eq!(got, ["u10@e.test", "u12@e.test", "u14@e.test"]);
        let q = Query {
            text: Some("U2".into()),
            ..Default::default()
        };
        assert_eq!(p.user_list(&q).await.unwrap().total, 10);
    }

    #[tokio::test]
    async fn admin_identity_checks_the_password_and_reads_rights() {
        let t = tempfile::tempdir().unwrap();
        let p = prov(t.path());
        p.user_add(
            &User {
                address: "boss@x.test".into(),
                ..Default::default()
            },
            &Secret::from("pw"),
        )
        .await
        .unwrap();
        p.domain_modify(
            "x.test",
            &DomainChange {
                add_admins: vec!["boss@x.test".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let who = p
            .admin_identity("Boss@x.test", Some(&Secret::from("pw")))
            .await
            .unwrap();
        assert_eq!(who.domains, vec!["x.test".to_string()]);
        assert!(!who.site);
        assert!(p
            .admin_identity("boss@x.test", Some(&Secret::from("nope")))
            .await
            .is_err());
    }
}
